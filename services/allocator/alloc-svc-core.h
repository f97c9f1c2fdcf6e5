/* The allocator service's core layer: the one struct of the service's state, its
 * tables and entities, posting from the server thread, sending on streams, time and
 * ids, the coalesced cycle request, and the hook lists.
 *
 * Layers (docs/allocator.md), top to bottom. A file calls only into its own layer
 * (through that module's header) or the layers below it, never up:
 *
 *   service   alloc-service.c, main.c: lifecycle, leadership, timers, the cycle;
 *             registers every hook at setup (alloc_service_new)
 *   rpc       allocator-rpc.c: the gRPC method tables and server-thread shims
 *   features  alloc-svc-{agents,frameworks+calls,tasks,operations,operator,config,
 *             completed,ended-fws,history,recovery}.c, one header each declaring what
 *             others may call
 *   state     alloc-svc-state.c: WatchState, the emission of every change
 *   registry  alloc-svc-registry.c: the registry client (its worker thread)
 *   core      alloc-svc-core.c: this header
 *   engine    engine/: the pure model and cycle (meseta-alloc-engine), which includes
 *             nothing of the service
 *
 * A module that must react to another's event (an agent or framework removed, a task
 * ended, the registry loaded, the lead lost) registers a hook below; the module where
 * the event happens runs the list and names no one. Lower layers reach up only through
 * hooks (the cycle, the timers, a task shown terminal). An agent's maintenance window
 * is computed here (svc_agent_window), from the schedule this struct holds, so the state
 * emission needs nothing above it.
 *
 * Threads: everything here runs on the owner thread except svc_post (any thread) and
 * the gRPC shims, which only copy, reference and post.
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
#include "meseta/v1/registry.pb-c.h"

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
  uint32_t pending; /* registry writes in flight for this link (admission) */
  bool closed;      /* the stream ended while a write was pending: freed by the last one */
} svc_link;

typedef struct svc_agent {
  svc_entry e; /* the agent id */
  svc_link *link;
  Meseta__V1__AgentInfo *info; /* a copy, id set */
  uint64_t ping_seq;
  struct alloc_service *svc; /* for the reconnect timer */
  uint64_t reconnect_timer;  /* set while its stream is gone: removal when it fires */
} svc_agent;

typedef struct svc_framework {
  svc_entry e;                     /* the framework id */
  struct alloc_service *svc;       /* for the failover timer */
  Meseta__V1__FrameworkInfo *info; /* a copy, id set */
  ms_rpc_call *stream;             /* referenced; NULL while disconnected */
  char *stream_id;
  uint64_t failover_timer;
  bool recovered; /* created from its registry record; not re-subscribed yet */
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

/* What the registry says of an agent, as this leader last read or wrote it (only the
 * leader writes agent records, so while leading this is the truth). */
typedef struct svc_agent_rec {
  svc_entry e; /* the agent id */
  Meseta__V1__AgentRecord__State state;
  /* Operator state (DrainAgent, DeactivateAgent), kept here in both modes so an agent
   * that re-registers (or a new leader's) gets it back. */
  Meseta__V1__DrainState drain_state;
  bool deactivated;
  bool mark_gone; /* DrainConfig.mark_gone */
} svc_agent_rec;

/* A role's weight or quota as persisted (the leader's copy of the registry's). */
typedef struct svc_weight {
  svc_entry e; /* the role */
  double weight;
} svc_weight;

typedef struct svc_quota {
  svc_entry e;                     /* the role */
  Meseta__V1__QuotaConfig *config; /* owned */
} svc_quota;

/* A WatchState stream (alloc-svc-state.c). */
typedef struct svc_watcher {
  ms_rpc_call *call; /* referenced */
  char *name;
  uint32_t queued;       /* sends since its queue was last seen empty (on_drain) */
  int64_t full_since_ms; /* holding changes back since (svc_now_ms); 0: not */
  struct svc_watcher *next;
} svc_watcher;

/* ---- hooks: how a module reacts to another's event without calling it ----
 *
 * The service layer registers each feature's reaction at setup (alloc_service_new);
 * the module where the event happens runs the list, in registration order. */

#define SVC_MAX_HOOKS 16
typedef void (*svc_hook_fn)(alloc_service *s);
/* An agent is being removed (before its tasks end); gone: by the operator. */
typedef void (*svc_agent_hook)(alloc_service *s, const char *agent_id, bool gone, const char *why);
/* A framework is being removed (after its tasks ended, before its stream ends). */
typedef void (*svc_framework_hook)(alloc_service *s, const char *framework_id);
/* A task leaves the live table (before its resources go back to the model). */
typedef void (*svc_task_hook)(alloc_service *s, const struct svc_task *t);
/* The registry's load answered (alloc-svc-registry.h: svc_reg_load); err: it failed;
 * current: the same term and not closing. */
struct svc_reg_loaded;
typedef void (*svc_loaded_hook)(alloc_service *s, const struct svc_reg_loaded *l, const ms_error *err,
                                bool current);

typedef struct alloc_hooks {
  svc_hook_fn run_cycle;    /* the allocation cycle (svc_want_cycle's timer runs it) */
  svc_hook_fn start_timers; /* the periodic timers of a leader whose registry is loaded */
  /* The state emission showed a task terminal: msg (taken) is what it showed. */
  void (*task_shown)(alloc_service *s, const struct svc_task *t, Meseta__V1__Task *msg);
  /* A task with the key (framework \x1f task id) was added again. */
  void (*task_replaced)(alloc_service *s, const char *key);
  svc_hook_fn forget_all[SVC_MAX_HOOKS]; /* the lead is lost or the service closes */
  svc_agent_hook agent_removed[SVC_MAX_HOOKS];
  svc_framework_hook framework_removed[SVC_MAX_HOOKS];
  svc_task_hook task_ended[SVC_MAX_HOOKS];
  svc_loaded_hook registry_loaded[SVC_MAX_HOOKS];
  uint32_t nforget_all, nagent_removed, nframework_removed, ntask_ended, nregistry_loaded;
} alloc_hooks;

struct svc_reg;

struct alloc_service {
  alloc_service_config cfg; /* strings owned */
  alloc_hooks hooks;        /* set up by alloc_service_new */
  ms_loop *loop;
  ms_rpc_server *srv;
  alloc_model *model;
  char id[40];
  uint64_t next_agent, next_framework, next_op;
  bool leading, closing;
  bool loading;    /* leading, reading the registry: calls answer UNAVAILABLE */
  bool recovering; /* leading, loaded, waiting for agents: no offers */
  /* Quota updates one at a time (alloc-svc-operator.c): each is checked against the
   * quota the one before it made, not against a model it has not reached yet. */
  bool quota_busy;
  struct op_wait **quota_waiting;
  uint32_t nquota_waiting;
  uint64_t term; /* bumped on every change of leadership: older registry results are stale */
  svc_table agents, frameworks, tasks, executors;
  /* Completed frameworks (alloc-svc-ended-fws.c), the one that ended first at the head. */
  svc_table ended_fws;
  struct svc_ended_fw *ended_head, *ended_tail;
  svc_table operations; /* svc_operation: framework operations with an id (launches too) */
  svc_table agent_recs; /* svc_agent_rec, while durable */
  svc_table expected;   /* ADMITTED agents not re-registered yet (recovery) */
  uint32_t nexpected;   /* how many were expected when recovery began */
  svc_link *links;      /* every open AgentLink stream */
  uint64_t cycle_timer, soon_timer, expire_timer, heartbeat_timer, recovery_timer, load_timer;
  struct svc_reg *reg; /* NULL: no registry */
  /* Operator configuration (alloc-svc-operator.c): loaded on election, kept while
   * leading. */
  svc_table weights, quotas;
  Meseta__V1__MaintenanceSchedule *schedule; /* NULL: none */
  Meseta__V1__DownMachines *down;            /* machines DOWN (StartMaintenance); NULL: none */
  /* WatchState (alloc-svc-state.c). */
  int64_t revision;   /* of the last change; starts above the previous leader's */
  int64_t elected_ms; /* wall clock, ms */
  svc_watcher *watchers;
  /* What WatchState last showed of each agent and role (svc_shown), and agents whose
   * resources changed and are not shown yet (svc_entry). */
  svc_table shown_agents, shown_roles, pending_agents;
  bool flush_posted;    /* a svc_state_flush is queued on the loop */
  uint64_t stall_timer; /* checks watchers that hold agent changes back */
  bool roles_stale;     /* frameworks, weights or quota changed: check every role */
  /* Completed tasks (alloc-svc-completed.c), oldest first. */
  svc_table done_tasks, done_fws;
  struct svc_done_task *done_head, *done_tail;
  uint32_t ndone;        /* in the lists */
  struct svc_hist *hist; /* completed tasks in the registry (alloc-svc-history.c); NULL: none */
  /* Tasks whose terminal status is not acknowledged yet (alloc-svc-completed.c). */
  svc_table unacked;
  struct svc_unacked *unacked_head, *unacked_tail;
};

/* ---- entities the state emission reads (their modules own them) ---- */

/* A tracked operation (alloc-svc-operations.c). */
typedef struct svc_operation {
  svc_entry e; /* framework \x1f operation id */
  char *framework_id, *agent_id, *op_id;
  uint8_t uuid[16];
  Meseta__V1__Offer__Operation *info;  /* a copy */
  Meseta__V1__Operation *op;           /* a copy: what the agent was sent */
  Meseta__V1__OperationStatus *latest; /* owned; the last status from the agent, NULL: none */
  Meseta__V1__OperationState state;
  ms_operation undo; /* the inverse, on unallocated resources; MS_OP_UNKNOWN: none */
  bool undone;
  /* A LAUNCH / LAUNCH_GROUP (op NULL, no undo, nothing sent to the agent for it): the
   * allocator settles it from its tasks' first statuses. */
  bool launch;
  char **tasks;  /* its task ids, owned */
  bool *started; /* per task: reported launched */
  size_t ntasks, nwaiting;
} svc_operation;

/* A completed task and its framework's list (alloc-svc-completed.c), and the registry
 * record holding it (alloc-svc-history.c). */
typedef struct svc_done_task {
  svc_entry e;             /* framework \x1f task id */
  Meseta__V1__Task *msg;   /* owned */
  struct svc_chunk *chunk; /* the registry record holding it; NULL: none (yet) */
  uint32_t pending_at;     /* its slot in the history's pending list, while pending */
  bool pending;
  struct svc_done_fw *fw;
  struct svc_done_task *prev, *next;   /* all, oldest first */
  struct svc_done_task *fprev, *fnext; /* its framework's */
} svc_done_task;

typedef struct svc_done_fw {
  svc_entry e; /* the framework id */
  svc_done_task *head, *tail;
  uint32_t n;
} svc_done_fw;

typedef struct svc_chunk {
  svc_entry e; /* the record id */
  uint32_t live, total;
  bool written; /* the registry has it (loaded, or its write answered OK) */
} svc_chunk;

/* A completed framework (alloc-svc-ended-fws.c). */
typedef struct svc_ended_fw {
  svc_entry e;                /* the framework id */
  Meseta__V1__Framework *msg; /* owned: as shown (active false, unregistered_time set) */
  int64_t ended_ms;           /* wall clock */
  struct svc_ended_fw *prev, *next;
} svc_ended_fw;

/* ---- posting from the server thread ---- */

typedef void (*svc_fn)(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg);
/* Takes a reference on call (may be NULL) and runs fn(s, call, data, msg) on the owner
 * thread; then frees msg (a copy the closure owns) and drops the reference. */
void svc_post(alloc_service *s, svc_fn fn, ms_rpc_call *call, void *data, ProtobufCMessage *msg);
/* Calls an untrusted client starts share a bound: past SVC_MAX_QUEUED_CALLS waiting for
 * the owner thread, svc_try_post posts nothing, frees msg and fails with
 * RESOURCE_EXHAUSTED ("allocator busy: 4096 calls already queued"). svc_post is for
 * what must not be dropped (call ends, completions). */
#define SVC_MAX_QUEUED_CALLS 4096
int svc_try_post(alloc_service *s, svc_fn fn, ms_rpc_call *call, void *data, ProtobufCMessage *msg,
                 ms_error **err);
/* A client-stream message (call not NULL): held (ms_rpc_call_hold) until fn has run,
 * so the rpc layer stops reading a stream whose messages pile up. */
void svc_post_held(alloc_service *s, svc_fn fn, ms_rpc_call *call, void *data, ProtobufCMessage *msg);

/* ---- shared helpers (owner thread) ---- */

/* Whether calls are served now (leading and the registry loaded); else *why says why. */
bool svc_serving(const alloc_service *s, const char **why);
/* A call's first step: finishes it UNAVAILABLE, saying why, unless calls are served;
 * true when it did. */
bool svc_refuse_unless_serving(const alloc_service *s, ms_rpc_call *call);
void svc_set_health(alloc_service *s, bool serving);
/* Starts the periodic timers of a leader whose registry is loaded (hooks.start_timers). */
void svc_start_timers(alloc_service *s);

int64_t svc_now_ms(void);
/* The maintenance window of s->schedule covering the agent's machine (its hostname, or
 * an ip equal to it; start in svc_now_ms's clock, duration -1 for none); false when
 * none. *ret (may be NULL) borrows the window's Unavailability. */
bool svc_agent_window(alloc_service *s, const Meseta__V1__AgentInfo *info, int64_t *start_ms,
                      int64_t *duration_ms, const Meseta__V1__Unavailability **ret);
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
/* Sends an ACKNOWLEDGE_STATUS of the task's update (uuid) to its agent. */
void svc_send_ack(alloc_service *s, svc_agent *a, const char *framework_id, const char *task_id,
                  const ProtobufCBinaryData *uuid);
/* An UPDATE event for a framework with the status (borrowed). */
void svc_send_update(alloc_service *s, svc_framework *fw, const Meseta__V1__TaskStatus *st);

/* Adding to a list past SVC_MAX_HOOKS aborts (a setup bug). Running one calls every
 * function of the list in the order they were added. */
void svc_hook_forget_all(alloc_service *s, svc_hook_fn fn);
void svc_hook_agent_removed(alloc_service *s, svc_agent_hook fn);
void svc_hook_framework_removed(alloc_service *s, svc_framework_hook fn);
void svc_hook_task_ended(alloc_service *s, svc_task_hook fn);
void svc_hook_registry_loaded(alloc_service *s, svc_loaded_hook fn);
void svc_run_forget_all(alloc_service *s);
void svc_run_agent_removed(alloc_service *s, const char *agent_id, bool gone, const char *why);
void svc_run_framework_removed(alloc_service *s, const char *framework_id);
void svc_run_task_ended(alloc_service *s, const svc_task *t);
void svc_run_registry_loaded(alloc_service *s, const struct svc_reg_loaded *l, const ms_error *err,
                             bool current);
