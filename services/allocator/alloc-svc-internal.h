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

struct svc_reg;

struct alloc_service {
  alloc_service_config cfg; /* strings owned */
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

/* What WatchState last showed of something: its encoding (alloc-svc-state.c). */
typedef struct svc_shown {
  svc_entry e;
  uint8_t *bytes;
  size_t len;
} svc_shown;

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
void svc_set_health(alloc_service *s, bool serving);
/* Starts the periodic timers of a leader whose registry is loaded. */
void svc_start_timers(alloc_service *s);

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
/* Sends an ACKNOWLEDGE_STATUS of the task's update (uuid) to its agent. */
void svc_send_ack(alloc_service *s, svc_agent *a, const char *framework_id, const char *task_id,
                  const ProtobufCBinaryData *uuid);
/* An UPDATE event for a framework with the status (borrowed). */
void svc_send_update(alloc_service *s, svc_framework *fw, const Meseta__V1__TaskStatus *st);

/* ---- the registry (alloc-svc-registry.c) ----
 *
 * One worker thread (meseta/workq.h) makes every registry call, in the order they were
 * asked for, each with the --registry-timeout deadline; the owner thread never waits
 * on the network. Results come back to the owner thread through ms_loop_post. Agent
 * state changes read the record and write it back with Expect revision (the worker's
 * compare-and-swap), so the owner never has to know revisions. */

bool svc_durable(const alloc_service *s);
int svc_reg_open(alloc_service *s, ms_error **err); /* no-op without cfg.registry */
/* Cancels what is queued and joins the worker (results are posted, not run). */
void svc_reg_stop(alloc_service *s);

/* A write's outcome on the owner thread; err NULL on success. `current`: the same
 * term and not closing (else only clean up ctx). */
typedef void (*svc_reg_done)(alloc_service *s, void *ctx, const ms_error *err, bool current);

/* Creates the agent's ADMITTED record (Expect absent). info is copied, its id set. */
void svc_reg_admit(alloc_service *s, const Meseta__V1__AgentInfo *info, svc_reg_done done, void *ctx);
/* Moves an agent's record to `state` (read, then write at the read revision; created
 * when missing). Refused (FAILED_PRECONDITION) for a GONE agent. info may be NULL
 * (the stored one is kept). done may be NULL. */
void svc_reg_agent_state(alloc_service *s, const char *id, const Meseta__V1__AgentInfo *info,
                         Meseta__V1__AgentRecord__State state, svc_reg_done done, void *ctx);
/* Creates a framework's record (Expect absent; one already there is fine). */
void svc_reg_add_framework(alloc_service *s, const Meseta__V1__FrameworkInfo *info, svc_reg_done done,
                           void *ctx);
/* Marks a framework's record completed (completed_time). done may be NULL. */
void svc_reg_complete_framework(alloc_service *s, const Meseta__V1__FrameworkInfo *info, svc_reg_done done,
                                void *ctx);
/* Replaces the info in a framework's record (read, then write at the read revision;
 * created when missing). done may be NULL. */
void svc_reg_update_framework(alloc_service *s, const Meseta__V1__FrameworkInfo *info, svc_reg_done done,
                              void *ctx);
/* The owner's view of an agent's record: STATE_UNKNOWN when there is none. */
Meseta__V1__AgentRecord__State svc_agent_rec_state(alloc_service *s, const char *id);
void svc_agent_rec_set(alloc_service *s, const char *id, Meseta__V1__AgentRecord__State state);
void svc_agent_recs_clear(alloc_service *s);

/* Every record of the kinds a leader loads (agents, frameworks, weights, quota), as
 * the pages the registry answered. */
typedef struct svc_reg_loaded {
  Meseta__V1__ListResponse **pages;
  size_t npages;
} svc_reg_loaded;
/* Lists them on the worker; the result goes to svc_recovery_loaded. */
void svc_reg_load(alloc_service *s);

/* ---- recovery (alloc-svc-recovery.c) ---- */

/* Leading with a registry: load it (retrying while it does not answer), then recover. */
void svc_recovery_start(alloc_service *s);
/* The load's result (err: retry soon). */
void svc_recovery_loaded(alloc_service *s, const svc_reg_loaded *l, const ms_error *err, bool current);
/* An agent re-registered: counts toward the agents expected back. */
void svc_recovery_agent_back(alloc_service *s, const char *id);
/* Forgets the recovery's state (lost lead, shutdown). */
void svc_recovery_reset(alloc_service *s);

/* ---- agents (alloc-svc-agents.c) ---- */

int svc_agents_add(alloc_service *s, ms_rpc_server *srv, ms_error **err);
/* Forgets an agent: its tasks become TASK_LOST, its offers are rescinded. */
void svc_agent_remove(alloc_service *s, svc_agent *a, const char *why);
void svc_agents_ping(alloc_service *s);
void svc_agents_close(alloc_service *s);

/* ---- frameworks and scheduler calls (alloc-svc-frameworks.c, alloc-svc-calls.c) ---- */

int svc_frameworks_add(alloc_service *s, ms_rpc_server *srv, ms_error **err);
void svc_framework_free(svc_framework *fw);
/* A framework known from its registry record: in the engine, inactive, no stream, so
 * its tasks re-registering agents report are accounted to it. */
int svc_framework_restore(alloc_service *s, const Meseta__V1__FrameworkInfo *info, ms_error **err);
/* Recovery ended: frameworks that did not re-subscribe get their failover timeout
 * (at least the recovery timeout, so a relay replaying subscriptions has time). */
void svc_frameworks_recovered(alloc_service *s);
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
/* A task an agent reports ended that this leader does not know (the last leader died
 * before its terminal update, or before that update's record was written): kept as
 * completed, as if its update had come here, so GetTasks and reconciliation know it.
 * Nothing when its framework is not known (yet), or it is live or completed already. */
void svc_task_adopt_ended(alloc_service *s, const char *agent_id, const char *fid, const char *tid,
                          Meseta__V1__TaskState state);
void svc_task_end(alloc_service *s, svc_task *t);
/* A status update from the agent: forwards it, ends the task when terminal. */
void svc_task_status(alloc_service *s, svc_agent *a, const Meseta__V1__AgentMessage__StatusUpdate *u);
bool svc_task_state_terminal(Meseta__V1__TaskState st);
/* Whether the executor is already known on that agent. */
bool svc_executor_known(alloc_service *s, const char *agent_id, const char *framework_id,
                        const char *executor_id);
void svc_tasks_free_all(alloc_service *s);

/* ---- operations with feedback (alloc-svc-operations.c) ----
 *
 * An accepted resource operation with Offer.Operation.id is tracked from the accept
 * (OPERATION_PENDING; the model already holds its result) until the framework
 * acknowledges a terminal status. With a registry its OperationRecord (record id: the
 * operation's uuid) is written before APPLY_OPERATION leaves, updated on each status,
 * and deleted on the acknowledgement. A FAILED / ERROR / DROPPED status undoes the
 * operation in the model (its inverse on the agent's unallocated resources). A LAUNCH /
 * LAUNCH_GROUP with an id is tracked the same way, its record written before its
 * RUN_TASK(s) leave; its statuses are the allocator's own (from its tasks' statuses). */

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

/* Messages for one agent, held until the accept's operation records are durable. */
typedef struct svc_outbox {
  Meseta__V1__AllocatorMessage **v; /* owned copies */
  size_t n;
} svc_outbox;
void svc_outbox_add(svc_outbox *o, const Meseta__V1__AllocatorMessage *m);
/* Sends the messages to the agent, after writing the records of the tracked operations
 * among them when durable. Takes o's contents. */
void svc_outbox_flush(alloc_service *s, const char *agent_id, svc_outbox *o);

/* The ids of an accept's operations (launches too): each set one must be new to the
 * framework (no other non-acknowledged operation) and appear once. */
int svc_ops_check_ids(alloc_service *s, const char *framework_id, const Meseta__V1__AcceptRequest *r,
                      ms_error **err);
/* Starts tracking an accepted operation (PENDING). op and mop are copied. */
svc_operation *svc_op_track(alloc_service *s, const char *framework_id, const char *agent_id,
                            const Meseta__V1__Offer__Operation *info, const Meseta__V1__Operation *op,
                            const ms_operation *mop, const uint8_t uuid[16]);
/* Starts tracking an accepted LAUNCH / LAUNCH_GROUP with an id (PENDING), after its
 * tasks were added. info is copied. */
svc_operation *svc_op_track_launch(alloc_service *s, const char *framework_id, const char *agent_id,
                                   const Meseta__V1__Offer__Operation *info);
/* A task's status from its agent (svc_task_status): settles the launch operation that
 * waits for it, if any. */
void svc_ops_task_status(alloc_service *s, const char *agent_id, const char *framework_id,
                         const Meseta__V1__TaskStatus *st);
/* The agent is being removed: its operations not settled yet become
 * OPERATION_GONE_BY_OPERATOR (gone) or OPERATION_UNREACHABLE. */
void svc_ops_agent_removed(alloc_service *s, const char *agent_id, bool gone, const char *why);
/* An agent's OPERATION_STATUS_UPDATE. */
void svc_op_status(alloc_service *s, svc_agent *a, const Meseta__V1__AgentMessage__OperationStatusUpdate *u);
/* The framework (re-)subscribed: statuses waiting for its acknowledgement again. */
void svc_ops_resend(alloc_service *s, svc_framework *fw);
/* The framework is removed: its operations are forgotten (records deleted). */
void svc_ops_forget_framework(alloc_service *s, const char *framework_id);
int svc_op_acknowledge(alloc_service *s, const Meseta__V1__AcknowledgeOperationStatusRequest *r,
                       ms_error **err);
int svc_op_reconcile(alloc_service *s, const Meseta__V1__ReconcileOperationsRequest *r, ms_error **err);
void svc_ops_free_all(alloc_service *s);
/* Rescinds the agent's outstanding offers (alloc-svc-operator.c). */
void svc_rescind_agent_offers(alloc_service *s, const char *agent);

/* ---- operator writes (alloc-svc-registry.c) ---- */

/* Applies every write or none (the registry's Batch). Takes b. */
void svc_reg_batch(alloc_service *s, Meseta__V1__BatchRequest *b, svc_reg_done done, void *ctx);

typedef enum svc_agent_patch {
  SVC_PATCH_DRAIN,      /* drain_state DRAINING, drain_config set */
  SVC_PATCH_DEACTIVATE, /* deactivated */
  SVC_PATCH_REACTIVATE, /* neither deactivated nor draining */
  SVC_PATCH_GONE,       /* GONE, gone_time */
} svc_agent_patch;
/* Reads the agent's record and writes it back changed (at the read revision). NOT_FOUND
 * without a record; FAILED_PRECONDITION for a GONE agent (except GONE again). cfg may
 * be NULL; it is copied. */
void svc_reg_agent_patch(alloc_service *s, const char *id, svc_agent_patch what,
                         const Meseta__V1__DrainConfig *cfg, svc_reg_done done, void *ctx);
/* The owner's record of an agent, created (STATE_UNKNOWN) when missing. */
svc_agent_rec *svc_agent_rec_get(alloc_service *s, const char *id);

/* ---- agents' operator state (alloc-svc-agents.c) ---- */

/* The state the engine should hold for agent id, from its record's operator state. */
alloc_agent_state svc_agent_wanted_state(alloc_service *s, const char *id);
/* Re-specs the agent in the engine: state from its record, maintenance window from the
 * schedule (its offers are rescinded). */
int svc_agent_respec(alloc_service *s, svc_agent *a, ms_error **err);
/* The maintenance window covering the agent's machine (start in svc_now_ms's clock);
 * false when none. */
bool svc_agent_window(alloc_service *s, const Meseta__V1__AgentInfo *info, int64_t *start_ms,
                      int64_t *duration_ms, const Meseta__V1__Unavailability **ret);

/* ---- operator calls (alloc-svc-operator.c) ---- */

void svc_operator_call(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg);
/* A loaded registry record of operator configuration (weight, quota, maintenance). */
void svc_operator_load(alloc_service *s, const Meseta__V1__Record *r);
/* Forgets weights, quota and the schedule (lost lead, shutdown). */
void svc_operator_reset(alloc_service *s);
/* Ends the quota updates waiting their turn (UNAVAILABLE): the lead is lost or closing. */
void svc_operator_quota_drop(alloc_service *s);

/* Maintenance (alloc-svc-operator.c). The registry record an UpdateMaintenanceSchedule,
 * StartMaintenance or StopMaintenance writes (schedule and DOWN machines as they will
 * be), NULL when the call is refused. The caller frees. */
Meseta__V1__MaintenanceRecord *svc_maint_record(alloc_service *s, const Meseta__V1__OperatorCallRequest *r);
/* An agent registering from a DOWN machine: SHUTDOWN_AGENT, the link ends
 * FAILED_PRECONDITION; true when refused. */
bool svc_maint_refuse(alloc_service *s, ms_rpc_call *link, const Meseta__V1__AgentInfo *info);

/* alloc-svc-config.c: weights, quota and the maintenance schedule. Weights are in
 * (0, SVC_MAX_WEIGHT]. */
#define SVC_MAX_WEIGHT 1e6
void svc_config_weight(alloc_service *s, const char *role, double w);
int svc_config_quota_apply(alloc_service *s, const Meseta__V1__QuotaConfig *q, ms_error **err);
int svc_config_check_weights(const Meseta__V1__UpdateWeightsRequest *r, ms_error **err);
/* Syntax, resource names, and unless r->force the capacity and hierarchy checks
 * (FAILED_PRECONDITION naming the config). */
int svc_config_check_quota(alloc_service *s, const Meseta__V1__UpdateQuotaRequest *r, ms_error **err);
int svc_config_check_schedule(const Meseta__V1__UpdateMaintenanceScheduleRequest *r, ms_error **err);
Meseta__V1__BatchRequest *svc_config_batch(alloc_service *s, const Meseta__V1__OperatorCallRequest *r);

/* ---- WatchState (alloc-svc-state.c) ----
 *
 * Every change to what a master-api view holds is numbered: s->revision grows by one
 * per change and never goes back, also across leaders (a leader starts at its election
 * time in microseconds, above any predecessor's count in practice). Each emit sends one
 * StateChange (last_of_revision) to every watcher and returns its revision; a watcher
 * whose send queue is full is cut off with RESOURCE_EXHAUSTED. */

void svc_state_watch(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg);
void svc_state_watch_done(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg);
/* The watcher's send queue emptied (the server's thread): agent changes held back for
 * it may go (posted to the owner). */
void svc_state_watch_drained(ms_rpc_call *call);
/* A new term begins (leading): the revision moves above every earlier one. */
void svc_state_begin_term(alloc_service *s);
/* Ends every watcher's stream. */
void svc_state_close(alloc_service *s, ms_status code, const char *why);

typedef enum svc_change { SVC_ADDED, SVC_UPDATED, SVC_REMOVED } svc_change;
int64_t svc_state_emit_agent(alloc_service *s, const char *agent_id, svc_change what);
int64_t svc_state_emit_framework(alloc_service *s, const char *framework_id, svc_change what);
/* A framework ended: shown as msg (a completed framework; copied), as framework_updated. */
int64_t svc_state_emit_framework_ended(alloc_service *s, const Meseta__V1__Framework *msg);
int64_t svc_state_emit_task(alloc_service *s, const svc_task *t, svc_change what);
int64_t svc_state_emit_role(alloc_service *s, const char *role);
int64_t svc_state_emit_quota(alloc_service *s);
int64_t svc_state_emit_weights(alloc_service *s);
int64_t svc_state_emit_maintenance(alloc_service *s);
int64_t svc_state_emit_down(alloc_service *s); /* the DOWN machines changed */
/* A tracked operation added or updated (SVC_ADDED / SVC_UPDATED) or removed. */
int64_t svc_state_emit_operation(alloc_service *s, const svc_operation *op, svc_change what);
int64_t svc_state_emit_task_removed(alloc_service *s, const char *framework_id, const char *task_id);

/* The engine's on_change: schedules svc_state_flush on the loop (once). */
void svc_state_changed(void *ctx);
/* Emits an agent update for every agent whose resources changed since the last flush
 * (tasks, offers: the engine's record), and a role update (or removal) for every role
 * whose Role differs from the one last shown; unchanged ones are not sent. Agent
 * updates wait while a watcher has many sends queued (a cycle may touch every agent),
 * and go on when its queue drains. Runs before every snapshot; a snapshot shows agents
 * as last shown, so at revision R it holds what the changes up to R built. */
void svc_state_flush(alloc_service *s);
void svc_state_reset(alloc_service *s); /* forgets what was shown (lost lead, shutdown) */

/* ---- completed tasks (alloc-svc-completed.c) ----
 *
 * A task that ended is kept, as WatchState last showed it (terminal), so a snapshot
 * holds what a view that saw it end holds: at most cfg.max_completed_tasks_per_framework
 * per framework and cfg.max_completed_tasks in all, the oldest evicted first with a
 * task_removed change. A task that leaves without a terminal state (its framework
 * removed) is removed at once; a framework's removal removes its completed tasks. */
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

/* svc_state_emit_task showed the task terminal: msg (taken) is what it showed. */
void svc_completed_shown(alloc_service *s, const svc_task *t, Meseta__V1__Task *msg);
/* The task leaves the live table (svc_task_end): kept as completed, or removed. */
void svc_completed_add(alloc_service *s, const svc_task *t);
/* A task with the key (framework \x1f task id) is added again: the completed one is
 * forgotten silently (the view's TASK_ADDED replaces it). */
void svc_completed_replaced(alloc_service *s, const char *key);
/* A completed task loaded from the registry (msg taken; framework and task ids set),
 * held by chunk. Replaces an older copy; the bounds apply. */
void svc_completed_restore(alloc_service *s, Meseta__V1__Task *msg, struct svc_chunk *chunk);
/* At close: frees every completed task. */
void svc_completed_free_all(alloc_service *s);
/* The completed task with the key (framework \x1f task id), NULL if none. Borrowed. */
const Meseta__V1__Task *svc_completed_get(alloc_service *s, const char *key);

/* ---- completed frameworks (alloc-svc-ended-fws.c) ---- */
typedef struct svc_ended_fw {
  svc_entry e;                /* the framework id */
  Meseta__V1__Framework *msg; /* owned: as shown (active false, unregistered_time set) */
  int64_t ended_ms;           /* wall clock */
  struct svc_ended_fw *prev, *next;
} svc_ended_fw;

/* The framework ended at ended_ms (wall clock, ms): kept (info copied) and shown as
 * completed; past cfg.max_completed_frameworks the one that ended first is forgotten
 * (framework_removed). Known already: nothing happens. */
void svc_ended_fw_add(alloc_service *s, const Meseta__V1__FrameworkInfo *info, int64_t ended_ms);
bool svc_ended_fw_has(alloc_service *s, const char *id);
void svc_ended_fw_free_all(alloc_service *s); /* lost lead, close */

/* Terminal statuses not acknowledged yet, so reconciliation answers them (as Mesos'
 * master keeps such tasks until the acknowledgement) rather than TASK_UNKNOWN, which
 * would make a framework launch the task again. At most SVC_MAX_UNACKED, the oldest
 * forgotten first. */
#define SVC_MAX_UNACKED 100000u
typedef struct svc_unacked {
  svc_entry e; /* framework \x1f task id */
  char *framework_id, *task_id, *agent_id;
  Meseta__V1__TaskState state;
  uint8_t uuid[16];
  struct svc_unacked *prev, *next; /* oldest first */
} svc_unacked;
/* A terminal status with a uuid went to the framework (the task may be unknown here:
 * an agent resending after a failover). */
void svc_unacked_terminal(alloc_service *s, const char *framework_id, const char *agent_id,
                          const Meseta__V1__TaskStatus *st);
/* The framework acknowledged (framework, task, uuid): forgotten if it is the terminal one. */
void svc_unacked_ack(alloc_service *s, const char *framework_id, const char *task_id,
                     const ProtobufCBinaryData *uuid);
svc_unacked *svc_unacked_get(alloc_service *s, const char *framework_id, const char *task_id);
/* The task id is launched again: the old terminal status is forgotten. */
void svc_unacked_forget(alloc_service *s, const char *key);
void svc_unacked_forget_framework(alloc_service *s, const char *framework_id);
void svc_unacked_free_all(alloc_service *s);

/* A Task built from a live task (alloc-svc-state.c); the caller frees. */
Meseta__V1__Task *svc_state_build_task(const svc_task *t);

/* ---- completed tasks in the registry (alloc-svc-history.c) ----
 *
 * With a registry, completed tasks are written as COMPLETED_TASKS records, in groups (at
 * most SVC_HIST_GROUP tasks or SVC_HIST_BYTES, SVC_HIST_DELAY_MS after the first one
 * waits), so a new leader lists them again: one write per group, not per task. A record
 * is deleted when none of its tasks is kept any more, and rewritten (its kept tasks in
 * the next group, then the record deleted) when fewer than half are: what the registry
 * holds stays within about twice what is kept (the --max-completed-tasks* bounds). */
#define SVC_HIST_GROUP 500u
#define SVC_HIST_BYTES (512u * 1024u)
#define SVC_HIST_DELAY_MS 250
typedef struct svc_chunk {
  svc_entry e; /* the record id */
  uint32_t live, total;
  bool written; /* the registry has it (loaded, or its write answered OK) */
} svc_chunk;
/* A framework's acknowledgement of a completed task's terminal update is held from the
 * agent until the record holding the task is written: until then the agent keeps the
 * task and would bring it to a new leader. True: held (sent later, or dropped with the
 * lead); false: send it now. */
bool svc_history_hold_ack(alloc_service *s, const char *agent_id, const char *framework_id,
                          const char *task_id, const ProtobufCBinaryData *uuid);
/* d was kept as completed: written with the next group. */
void svc_history_added(alloc_service *s, svc_done_task *d);
/* d was loaded from chunk's record. */
void svc_history_restored(alloc_service *s, svc_done_task *d, svc_chunk *chunk);
/* d is forgotten (evicted, replaced): its record may go. */
void svc_history_forget(alloc_service *s, svc_done_task *d);
/* The leader's load: every COMPLETED_TASKS record becomes completed tasks again. */
void svc_history_loaded(alloc_service *s, const svc_reg_loaded *l);
/* Forgets the history's state (lost lead, shutdown); what waits is not written. */
void svc_history_reset(alloc_service *s);
