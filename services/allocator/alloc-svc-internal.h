/* Private to the allocator service's files (alloc-service.c, alloc-svc-*.c): the
 * service's state and the helpers they share. Everything here runs on the owner
 * thread except svc_post (any thread) and the gRPC callbacks, which only copy,
 * reference and post.
 *
 * Ownership: the service owns every entity, string, message copy and set below.
 * Entities are heap objects found through a svc_table (stable pointers); a table
 * borrows the key each entity carries first. A stream call held here (an agent's
 * link, a framework's event stream) carries one ms_rpc_call_ref, dropped when the
 * entity lets go of it. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "meseta/resources.h"
#include "meseta/rpc.h"
#include "meseta/v1/agent_link.pb-c.h"
#include "meseta/v1/allocator.pb-c.h"

#include "alloc-cycle.h"
#include "alloc-map.h"
#include "alloc-model.h"
#include "alloc-service.h"

/* ---- tables: key -> entity, with the entity's key first ---- */

typedef struct svc_entry {
  char *key;
} svc_entry;

typedef struct svc_table {
  svc_entry **v;
  uint32_t n, cap;
  alloc_map map;
} svc_table;

void *svc_table_get(const svc_table *t, const char *key);
void svc_table_put(svc_table *t, svc_entry *e); /* key must be new */
void svc_table_del(svc_table *t, svc_entry *e); /* does not free e */
void svc_table_release(svc_table *t);           /* the array and map only */

/* ---- entities ---- */

/* One AgentLink.Connect stream. */
typedef struct svc_link {
  ms_rpc_call *call;       /* referenced */
  struct svc_agent *agent; /* NULL until registered */
  struct svc_link *prev, *next;
} svc_link;

typedef struct svc_agent {
  svc_entry e; /* the agent id */
  svc_link *link;
  Meseta__V1__AgentInfo *info; /* a copy, id set */
  uint64_t ping_seq;
} svc_agent;

typedef struct svc_framework {
  svc_entry e;                     /* the framework id */
  struct alloc_service *svc;       /* for the failover timer */
  Meseta__V1__FrameworkInfo *info; /* a copy, id set */
  ms_rpc_call *stream;             /* referenced; NULL while disconnected */
  char *stream_id;
  uint64_t failover_timer;
} svc_framework;

/* Executors launched through LAUNCH with an executor, or LAUNCH_GROUP: their resources
 * come back when their last task ends. */
typedef struct svc_executor {
  svc_entry e; /* agent \x1f framework \x1f executor id */
  char *framework_id, *agent_id, *role;
  ms_resources *res; /* without allocation role */
  uint32_t ntasks;
} svc_executor;

typedef struct svc_task {
  svc_entry e; /* framework \x1f task id */
  char *framework_id, *task_id, *agent_id, *role;
  ms_resources *res;      /* without allocation role; recovered when terminal */
  svc_executor *executor; /* NULL: a command task */
  Meseta__V1__TaskState state;
} svc_task;

struct alloc_service {
  alloc_service_config cfg; /* strings owned */
  ms_loop *loop;
  ms_rpc_server *srv;
  alloc_model *model;
  char id[40];
  uint64_t next_agent, next_framework, next_op;
  bool leading, closing;
  svc_table agents, frameworks, tasks, executors, torn_down;
  svc_link *links; /* every open AgentLink stream */
  uint64_t cycle_timer, soon_timer, expire_timer, heartbeat_timer;
};

/* ---- posting from the server thread ---- */

typedef void (*svc_fn)(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg);
/* Takes a reference on call (may be NULL) and runs fn(s, call, data, msg) on the owner
 * thread; then frees msg (a copy the closure owns) and drops the reference. */
void svc_post(alloc_service *s, svc_fn fn, ms_rpc_call *call, void *data, ProtobufCMessage *msg);

/* ---- shared helpers (owner thread) ---- */

int64_t svc_now_ms(void);
/* A random 128-bit id formatted as a UUID into buf (>= 37 bytes). */
void svc_uuid(char *buf);
void svc_uuid_bytes(uint8_t out[16]);
/* "a\x1fb" or "a\x1fb\x1fc" keys; the caller frees. */
char *svc_key2(const char *a, const char *b);
char *svc_key3(const char *a, const char *b, const char *c);
/* Run a cycle soon (coalesced). */
void svc_want_cycle(alloc_service *s);
/* Checks the model's trigger and asks for a cycle if it is set. */
void svc_check_trigger(alloc_service *s);

/* Sends to a framework's stream (no-op while disconnected); a failed send ends the
 * stream with the error. */
void svc_send_event(alloc_service *s, svc_framework *fw, const Meseta__V1__Event *ev);
/* Sends to an agent's link (no-op without one). */
void svc_send_agent(alloc_service *s, svc_agent *a, const Meseta__V1__AllocatorMessage *m);
/* An UPDATE event for a framework with the status (borrowed). */
void svc_send_update(alloc_service *s, svc_framework *fw, const Meseta__V1__TaskStatus *st);

/* ---- agents (alloc-svc-agents.c) ---- */

int svc_agents_add(alloc_service *s, ms_rpc_server *srv, ms_error **err);
/* Forgets an agent: its tasks become TASK_LOST, its offers are rescinded. */
void svc_agent_remove(alloc_service *s, svc_agent *a, const char *why);
void svc_agents_ping(alloc_service *s);
void svc_agents_close(alloc_service *s);

/* ---- frameworks and scheduler calls (alloc-svc-frameworks.c, alloc-svc-calls.c) ---- */

int svc_frameworks_add(alloc_service *s, ms_rpc_server *srv, ms_error **err);
void svc_framework_free(svc_framework *fw);
/* Removes a framework: kills its tasks, rescinds offers, ends its stream with ERROR. */
void svc_framework_remove(alloc_service *s, svc_framework *fw, const char *why);
void svc_frameworks_heartbeat(alloc_service *s);
void svc_frameworks_close(alloc_service *s);
/* Validates framework_id and stream_id of a call (`what` names the request). */
svc_framework *svc_framework_check(alloc_service *s, const char *what, const Meseta__V1__FrameworkID *id,
                                   const char *stream_id, ms_error **err);
void svc_scheduler_call(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg);

/* ---- tasks (alloc-svc-tasks.c) ---- */

svc_task *svc_task_get(alloc_service *s, const char *framework_id, const char *task_id);
/* Records a launched task (STAGING) and its executor (new: its resources were part of
 * the launch). res and exec_res are copied. */
svc_task *svc_task_add(alloc_service *s, const char *framework_id, const char *task_id, const char *agent_id,
                       const char *role, const ms_resources *res, const char *executor_id,
                       const ms_resources *exec_res);
/* The task ended: recovers its resources (and its executor's if it was the last) and
 * forgets it. */
void svc_task_end(alloc_service *s, svc_task *t);
/* A status update from the agent: forwards it, ends the task when terminal. */
void svc_task_status(alloc_service *s, svc_agent *a, const Meseta__V1__AgentMessage__StatusUpdate *u);
bool svc_task_state_terminal(Meseta__V1__TaskState st);
/* Whether the executor is already known on that agent. */
bool svc_executor_known(alloc_service *s, const char *agent_id, const char *framework_id,
                        const char *executor_id);
void svc_tasks_free_all(alloc_service *s);
