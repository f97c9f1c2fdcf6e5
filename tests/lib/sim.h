/* Simulated agents and frameworks against a meseta-allocator, for integration tests
 * and benchmarks.
 *
 * A simulated agent opens AgentLink.Connect, registers with the given resources and
 * answers the allocator: RUN_TASK / RUN_TASK_GROUP get TASK_RUNNING, then
 * TASK_FINISHED after `task_ms` (0: at once; negative: never, the task runs until
 * killed); KILL_TASK gets TASK_KILLED; PING gets HEARTBEAT. Each agent has a receiving
 * thread and a ticker thread (timed finishes).
 *
 * A simulated framework subscribes through Allocator.SubscribeFramework (or, with
 * public_api, through a master-api's Scheduler.Subscribe) and reacts to its events
 * on its own thread: offers are held (HOLD: for the test to use), accepted
 * (ACCEPT: one task of `task_resources` per offer that holds it, the rest declined
 * with `refuse_ms`) or declined (DECLINE); updates with a uuid are acknowledged;
 * everything is counted.
 *
 * Failover. Given more_targets (other allocators), an agent or framework whose stream
 * fails or is refused (a standby answers UNAVAILABLE) tries the next address with
 * backoff, then re-registers (same agent id, its running tasks, its status updates not
 * yet acknowledged resent) or re-subscribes (same framework id; offers of the old
 * leader are dropped). Agents keep every status update until it is acknowledged and
 * resend it every second. Without more_targets a broken stream stays broken.
 *
 * A ledger (optional, shared by agents and frameworks) checks that no resource is
 * offered twice: per agent, the offers frameworks hold plus the tasks the agent runs
 * never exceed its total (checked at every offer and launch).
 *
 * Threads: every function may be called from the test's thread while the simulators
 * run; stats are snapshots. Ownership: strings returned belong to the handle; offers
 * returned by ms_sim_framework_take_offer are the caller's
 * (protobuf_c_message_free_unpacked). Errors carry the RPC's status. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "meseta/error.h"
#include "meseta/v1/allocator.pb-c.h"

/* ---- the ledger ---- */

typedef struct ms_sim_ledger ms_sim_ledger;
ms_sim_ledger *ms_sim_ledger_new(void);
void ms_sim_ledger_free(ms_sim_ledger *l); /* after every agent and framework using it */
/* How often held offers plus running tasks exceeded an agent's total (each logged to
 * stderr), and how many checks were made. */
uint64_t ms_sim_ledger_violations(ms_sim_ledger *l, uint64_t *checks);

/* ---- agents ---- */

typedef struct ms_sim_agent ms_sim_agent;

typedef struct ms_sim_agent_options {
  const char *hostname;            /* NULL: "sim-agent" */
  const char *resources;           /* text form: "cpus:4;mem:4096" */
  int64_t task_ms;                 /* see above */
  const char *const *more_targets; /* NULL-terminated; see Failover */
  ms_sim_ledger *ledger;           /* NULL: none */
} ms_sim_agent_options;

typedef struct ms_sim_agent_stats {
  uint64_t run_tasks; /* tasks launched here (groups count each task) */
  uint64_t kills, acks, pings;
  uint64_t running;          /* tasks running now */
  uint64_t reregistrations;  /* REREGISTERED answers */
  uint64_t unacked;          /* status updates not acknowledged yet */
  bool connected;            /* registered on a live stream now */
  uint64_t apply_operations; /* APPLY_OPERATION received (each answered with a status) */
  uint64_t op_acks;          /* ACKNOWLEDGE_OPERATION_STATUS received */
  uint64_t op_unacked;       /* operation statuses not acknowledged yet (resent every second) */
  /* SHUTDOWN_EXECUTOR, FRAMEWORK_TO_EXECUTOR and UPDATE_FRAMEWORK received; the last
   * message's data (NUL-terminated, cut to fit) and the last updated framework's name. */
  uint64_t executor_shutdowns, framework_messages, framework_updates;
  char last_message[64], last_framework_name[64];
} ms_sim_agent_stats;

/* Connects and registers; returns once REGISTERED came (at most 10 s). */
ms_sim_agent *ms_sim_agent_start(const char *target, const ms_sim_agent_options *o, ms_error **err);
const char *ms_sim_agent_id(const ms_sim_agent *a);
void ms_sim_agent_stats_get(ms_sim_agent *a, ms_sim_agent_stats *ret);
/* The next APPLY_OPERATION is answered OPERATION_FAILED with this message (the others
 * OPERATION_FINISHED). */
void ms_sim_agent_fail_next_operation(ms_sim_agent *a, const char *message);
/* How the agent answers the next task it is to run: TASK_ERROR (it never runs), or not
 * at all (it stays STAGING, unknown to the agent); the others get TASK_RUNNING. */
typedef enum ms_sim_launch_answer {
  MS_SIM_LAUNCH_RUN = 0,
  MS_SIM_LAUNCH_ERROR,
  MS_SIM_LAUNCH_SILENT
} ms_sim_launch_answer;
void ms_sim_agent_next_launch(ms_sim_agent *a, ms_sim_launch_answer how);
/* Ends the agent's stream (as a crash would); the handle stays until freed. */
void ms_sim_agent_disconnect(ms_sim_agent *a);
/* Ends the agent's stream as a network cut would: it reconnects and re-registers. */
void ms_sim_agent_cut(ms_sim_agent *a);
void ms_sim_agent_free(ms_sim_agent *a); /* NULL is fine */

/* ---- frameworks ---- */

typedef struct ms_sim_framework ms_sim_framework;

typedef enum ms_sim_mode { MS_SIM_HOLD = 0, MS_SIM_ACCEPT, MS_SIM_DECLINE } ms_sim_mode;

typedef struct ms_sim_framework_options {
  const char *name; /* also the prefix of task ids */
  const char *role; /* NULL: "*" */
  ms_sim_mode mode;
  const char *task_resources;      /* ACCEPT: one task's resources, text form */
  uint32_t max_tasks;              /* ACCEPT: launches in all (0: no limit); past it, offers are declined */
  int64_t refuse_ms;               /* declines and accept remainders; negative: the default */
  const char *const *more_targets; /* NULL-terminated; see Failover */
  ms_sim_ledger *ledger;           /* NULL: none */
  const char *framework_id;        /* subscribe as this framework (a failover); NULL: a new one */
  bool no_operation_acks;          /* do not acknowledge operation statuses */
  bool no_status_acks;             /* do not acknowledge task status updates */
  /* Targets are master-api replicas: the public meseta.v1.Scheduler API (Subscribe
   * and the unary calls) instead of Allocator.SubscribeFramework / SchedulerCall. A
   * stream that breaks is subscribed again on the next target with the framework's
   * id (a framework failover). */
  bool public_api;
  int64_t failover_timeout_ms; /* framework_info.failover_timeout; 0: removed as soon as its stream ends */
} ms_sim_framework_options;

typedef struct ms_sim_framework_stats {
  uint64_t offer_events, offers, rescinds, launched, declined;
  uint64_t running, finished, killed, lost, updates, errors, heartbeats;
  uint64_t call_failures;   /* its own accepts / declines / acks refused */
  uint64_t resubscriptions; /* SUBSCRIBED answers after the first */
  bool connected;           /* subscribed on a live stream now */
  /* UPDATE_OPERATION_STATUS events (resends and reconciliation answers included), by
   * state, and the acknowledgements sent for them. */
  uint64_t op_updates, op_finished, op_failed, op_unknown, op_pending, op_acks;
} ms_sim_framework_stats;

/* The fate of the tasks an ACCEPT-mode framework launched, by task id. Terminal
 * updates are counted once per uuid (an agent resends until acknowledged). */
typedef struct ms_sim_task_summary {
  uint64_t accepted;       /* accept answered OK */
  uint64_t uncertain;      /* the accept failed (e.g. the leader died): maybe launched */
  uint64_t terminal;       /* accepted or uncertain tasks with a terminal state */
  uint64_t open;           /* accepted tasks without one yet */
  uint64_t duplicated;     /* tasks with two different terminal updates */
  uint64_t finished_later; /* FINISHED after a re-subscription that came after the launch */
} ms_sim_task_summary;
void ms_sim_framework_tasks(ms_sim_framework *f, ms_sim_task_summary *ret);

/* Subscribes; returns once SUBSCRIBED came (at most 10 s). */
ms_sim_framework *ms_sim_framework_start(const char *target, const ms_sim_framework_options *o,
                                         ms_error **err);
const char *ms_sim_framework_id(const ms_sim_framework *f);
const char *ms_sim_framework_stream_id(const ms_sim_framework *f);
void ms_sim_framework_stats_get(ms_sim_framework *f, ms_sim_framework_stats *ret);
void ms_sim_framework_set_mode(ms_sim_framework *f, ms_sim_mode mode);
/* The oldest offer held (HOLD mode) and not rescinded; NULL if none. The caller's. */
Meseta__V1__Offer *ms_sim_framework_take_offer(ms_sim_framework *f);
/* Unary SchedulerCall on the framework's behalf (ids are the caller's to fill). */
int ms_sim_framework_call(ms_sim_framework *f, const Meseta__V1__SchedulerCallRequest *req, ms_error **err);
/* Accepts one offer with one operation; refuse_ms < 0: no filter on what is left,
 * 0: it is offered again at once. The offer is forgotten (ledger) either way. */
int ms_sim_framework_accept(ms_sim_framework *f, const Meseta__V1__Offer *offer,
                            Meseta__V1__Offer__Operation *op, int64_t refuse_ms, ms_error **err);
/* Conveniences with the framework's own ids. */
int ms_sim_framework_revive(ms_sim_framework *f, ms_error **err);
int ms_sim_framework_decline(ms_sim_framework *f, const char *offer_id, int64_t refuse_ms, ms_error **err);
/* Accepts one offer with one task (`resources` in text form, allocated to the offer's
 * role). */
int ms_sim_framework_launch(ms_sim_framework *f, const Meseta__V1__Offer *offer, const char *task_id,
                            const char *resources, ms_error **err);
/* Accepts one offer with a RESERVE (DYNAMIC, to the offer's role) of `resources` with
 * operation id op_id (NULL: none). */
int ms_sim_framework_reserve(ms_sim_framework *f, const Meseta__V1__Offer *offer, const char *op_id,
                             const char *resources, ms_error **err);
/* The last operation status received for op_id (a copy, the caller's); NULL if none. */
Meseta__V1__OperationStatus *ms_sim_framework_op_status(ms_sim_framework *f, const char *op_id);
void ms_sim_framework_set_operation_acks(ms_sim_framework *f, bool ack);
/* The last status received for task_id (a copy, the caller's); NULL if none. */
Meseta__V1__TaskStatus *ms_sim_framework_task_status(ms_sim_framework *f, const char *task_id);
/* ReconcileOperations for these ids (n 0: implicit). */
int ms_sim_framework_reconcile_operations(ms_sim_framework *f, const char *const *op_ids, size_t n,
                                          ms_error **err);
/* Reconcile for these task ids (n 0: implicit). Answers come as updates; the last one
 * per task (reason RECONCILIATION) is kept: ms_sim_framework_reconciled returns a copy
 * (the caller's; NULL if none), ms_sim_framework_forget_reconciled clears them. */
int ms_sim_framework_reconcile(ms_sim_framework *f, const char *const *task_ids, size_t n, ms_error **err);
Meseta__V1__TaskStatus *ms_sim_framework_reconciled(ms_sim_framework *f, const char *task_id);
void ms_sim_framework_forget_reconciled(ms_sim_framework *f);
void ms_sim_framework_set_status_acks(ms_sim_framework *f, bool ack);
/* Ends the stream (unsubscribes by disconnecting). */
void ms_sim_framework_disconnect(ms_sim_framework *f);
void ms_sim_framework_free(ms_sim_framework *f); /* NULL is fine */

/* ---- waiting ---- */

/* Polls pred(ctx) every 10 ms until true or timeout_ms passed (a hang guard, not a
 * timing assertion). */
bool ms_sim_wait(bool (*pred)(void *ctx), void *ctx, int64_t timeout_ms);

/* A counter of the stats (a uint64_t at `offset`: offsetof(ms_sim_framework_stats, x) or
 * offsetof(ms_sim_agent_stats, x)), and waits (ms_sim_wait) for it to reach n. */
uint64_t ms_sim_framework_stat(ms_sim_framework *f, size_t offset);
uint64_t ms_sim_agent_stat(ms_sim_agent *a, size_t offset);
bool ms_sim_framework_wait_stat(ms_sim_framework *f, size_t offset, uint64_t n, int64_t timeout_ms);
bool ms_sim_agent_wait_stat(ms_sim_agent *a, size_t offset, uint64_t n, int64_t timeout_ms);
#define MS_SIM_FW_STAT(f, field) ms_sim_framework_stat((f), offsetof(ms_sim_framework_stats, field))
#define MS_SIM_AGENT_STAT(a, field) ms_sim_agent_stat((a), offsetof(ms_sim_agent_stats, field))
/* The next offer a HOLD framework got (the caller frees it), waiting at most timeout_ms;
 * NULL if none came. */
Meseta__V1__Offer *ms_sim_framework_wait_offer(ms_sim_framework *f, int64_t timeout_ms);
