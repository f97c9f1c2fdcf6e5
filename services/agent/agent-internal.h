/* Private to agent_core: the agent's and its tasks' structures (owner thread only). */
#pragma once

#include "agent.h"

/* One status update waiting for its acknowledgement. */
typedef struct agent_update {
  struct agent_update *next;
  Meseta__V1__AgentMessage__StatusUpdate *msg; /* heap (protobuf_c_message_free_unpacked) */
} agent_update;

/* One resource operation the agent answered (agent-operations.c): its record and whether
 * its status was acknowledged. */
typedef struct agent_op {
  struct agent_op *next;
  uint8_t uuid[16];                  /* ApplyOperation.operation_uuid */
  Meseta__V1__TrackedOperation *rec; /* heap: framework_id, info.id, latest_status */
  bool acked;                        /* latest_status acknowledged: not resent */
} agent_op;

struct agent_task {
  agent_task *next;
  agent *owner;
  char *framework_id, *task_id;
  char *container_id;                   /* names the container's cgroups and its directory */
  char *sandbox;                        /* <work>/sandboxes/<framework>/<task> */
  char *cdir;                           /* <work>/containers/<container> */
  char *log_id;                         /* "task=<framework>/<task>" for log lines */
  Meseta__V1__TaskInfo *info;           /* a copy of what RUN_TASK carried */
  Meseta__V1__FrameworkInfo *framework; /* a copy; may be NULL */
  pid_t pid;                            /* the runtime's; 0 when not running */
  uint64_t start_time;                  /* the runtime's, /proc/<pid>/stat field 22 */
  int pidfd;                            /* watches the runtime on the loop; -1: none */
  bool child;                           /* spawned by this process: waitpid gives its status */
  bool launched;                        /* spawn attempted (checkpointed before it) */
  bool kill_requested;                  /* KILL_TASK / shutdown: report TASK_KILLED */
  bool terminal;                        /* a terminal update is queued: no more after it */
  Meseta__V1__TaskState state;          /* the latest state reported */
  agent_update *head, *tail;            /* unacknowledged updates, oldest first */
  int64_t retry_ms;
  uint64_t retry_timer;
};

struct agent {
  agent_config cfg; /* strings below are copies */
  char *work_dir, *allocator, *runtime, *seccomp_dir, *seccomp_default, *cgroup_parent, *attributes;
  char *hostname, *resources_text, *boot_id;
  ms_resources *total; /* resources_text parsed once: what every launch is checked against */
  char *id;            /* NULL until REGISTERED (or read from meta/agent.json) */
  bool known_id;       /* the id came from a previous run: REREGISTER */
  ms_loop *loop;
  agent_link *link;
  uint64_t gen;    /* the stream we are registered on, 0: none */
  uint64_t opened; /* the last stream opened */
  agent_task *tasks;
  bool shutting_down;
  uint64_t shutdown_timer;
  char *tasks_dir;                          /* <work>/meta/tasks: the checkpoints */
  bool iso_seccomp, iso_pids, iso_net_none; /* from cfg.isolation */
  int operator_port;                        /* AgentInfo.port; 0: none */
  char *operator_address;                   /* AgentInfo.address, owned; NULL: none */
  uint64_t gc_timer;                        /* the sweep's (agent-gc.c) */
  /* agent-operations.c: dynamic reservations and persistent volumes of this node, their
   * version, and the operations answered (newest first), all in meta/resources.pb. */
  char *volume_dir;
  ms_resources *ckpt_res;
  uint8_t res_version[16];
  agent_op *ops;
  uint64_t ops_timer; /* resends unacknowledged operation statuses */
};

/* agent-core.c: sends on the registered stream (dropped, with a debug line, when there is
 * none: updates are resent after the next registration). */
void agent_send(agent *a, const Meseta__V1__AgentMessage *m);
/* Unlinks and frees a task (its updates too). */
void agent_task_forget(agent *a, agent_task *t);
agent_task *agent_task_find(agent *a, const char *framework_id, const char *task_id);
void agent_task_free(agent_task *t);
/* Stops the loop if shutting down and no container is left. */
void agent_maybe_done(agent *a);

/* agent-resources.c: AgentInfo for (RE)REGISTER: hostname, id, resources, attributes (a
 * heap message, protobuf_c_message_free_unpacked). */
Meseta__V1__AgentInfo *agent_info_new(const agent *a, ms_error **err);

/* agent-resources.c: atomic write (tmp + rename; fsync'ed when `sync`);
 * whole-file read. */
int agent_write_bytes(const char *path, const void *data, size_t len, bool sync, ms_error **err);
int agent_write_file(const char *path, const char *text, ms_error **err); /* synced */
/* NULL with *err (NOT_FOUND when absent); the caller frees. */
char *agent_read_file(const char *path, size_t max, ms_error **err);

/* agent-tasks.c: a new task (not yet in a->tasks); recovery builds tasks with it too. */
agent_task *agent_task_new(agent *a, const char *framework_id, const char *task_id);
/* agent-tasks.c: watch the runtime t->pid through a pidfd (t->pid stays 0 on failure,
 * which the caller reports). */
int agent_task_watch(agent *a, agent_task *t, ms_error **err);
/* agent-tasks.c: the runtime of t ended: report from its status file (ws: its wait status
 * when known, else -1). */
void agent_task_ended(agent *a, agent_task *t, int ws);
/* agent-tasks.c: what a RUN_TASK must pass before anything is made (else TASK_ERROR with
 * the message): no field the cluster refuses (meseta/pb-check.h) and at least the
 * minimum cpus and mem (meseta/task-check.h), paths from `task`. */
int agent_task_check(const Meseta__V1__TaskInfo *ti, ms_error **err);
/* agent-tasks.c: a task the agent's restart interrupted before it is known to have run
 * or ended: TASK_LOST (TASK_GONE to a PARTITION_AWARE framework), REASON_AGENT_RESTARTED,
 * so the framework may launch it again. */
void agent_task_lost(agent *a, agent_task *t, const char *msg);
/* agent-tasks.c: start time (/proc/<pid>/stat field 22) of a process; 0 if it is gone. */
uint64_t agent_proc_start_time(pid_t pid);

/* agent-gc.c: one sweep of <work_dir>: container directories and sandboxes for which
 * live() says no (it gets the container id, or the framework and task ids) and untouched
 * (mtime) for delay_ms before now_s are removed, without following links or crossing
 * filesystems. */
typedef bool (*agent_gc_live_fn)(void *ctx, const char *framework_id, const char *task_id,
                                 const char *container_id);
typedef struct agent_gc_stats {
  uint64_t sandboxes, containers, bytes;
} agent_gc_stats;
int agent_gc_sweep(const char *work_dir, int64_t delay_ms, int64_t now_s, agent_gc_live_fn live, void *ctx,
                   agent_gc_stats *ret);
/* agent-gc.c: the periodic sweep on the agent's loop (cfg.gc_interval_ms). */
void agent_gc_start(agent *a);

/* agent-checkpoint.c: writes t's checkpoint (logs on failure: the task goes on). */
void agent_checkpoint_task(agent *a, agent_task *t);
/* agent-checkpoint.c: removes t's checkpoint (its terminal update was acknowledged). */
void agent_checkpoint_remove(agent *a, agent_task *t);
/* agent-checkpoint.c: reads every checkpoint into a->tasks and re-attaches to the
 * runtimes still running; tasks whose container ended meanwhile get their terminal
 * update queued. Drops the checkpoints when the agent is new (no id or a reboot). */
int agent_recover(agent *a, ms_error **err);
/* agent-checkpoint.c: checks the AgentInfo checkpointed in meta/agent.json against the
 * current one under the reconfiguration policy; FAILED_PRECONDITION naming what changed. */
int agent_check_reconfiguration(agent *a, const char *old_resources, const char *old_attributes,
                                const char *old_hostname, ms_error **err);

/* ---- agent-operations.c: resource operations (APPLY_OPERATION and its feedback) ---- */

/* Reads meta/resources.pb (absent: nothing checkpointed yet, a fresh version) and makes
 * the volume root. */
int agent_ops_recover(agent *a, ms_error **err);
/* APPLY_OPERATION: applied once per operation uuid, checkpointed, answered with an
 * OPERATION_STATUS_UPDATE resent until acknowledged. */
void agent_ops_apply(agent *a, const Meseta__V1__AllocatorMessage__ApplyOperation *ap);
void agent_ops_ack(agent *a, const Meseta__V1__AllocatorMessage__AcknowledgeOperationStatus *k);
void agent_ops_reconcile(agent *a, const Meseta__V1__AllocatorMessage__ReconcileOperations *r);
/* After (re)registration: every unacknowledged status again, and the resend timer. */
void agent_ops_resend_all(agent *a);
/* For REGISTER / REREGISTER: the checkpointed resources (heap, ms_resources_proto_free)
 * and the unacknowledged operations (a heap array of borrowed records; free() it). */
Meseta__V1__Resources *agent_ops_checkpointed(const agent *a);
Meseta__V1__TrackedOperation **agent_ops_unacked(const agent *a, size_t *ret_n);
void agent_ops_free(agent *a);

/* The checkpoint's format (a ResourceProviderState without info: total_resources are the
 * checkpointed resources, operations keep `statuses` = [latest_status] while it waits for
 * its acknowledgement, empty once acknowledged). encode returns a heap buffer; decode
 * fills *ret_res (caller frees), ret_version and *ret_ops (free with agent_ops_list_free). */
uint8_t *agent_ops_encode(const ms_resources *res, const uint8_t version[16], const agent_op *ops,
                          size_t *ret_len);
int agent_ops_decode(const uint8_t *buf, size_t len, ms_resources **ret_res, uint8_t ret_version[16],
                     agent_op **ret_ops, ms_error **err);
void agent_ops_list_free(agent_op *ops);
/* The directory of a persistent volume: <root>/<role, `/` as ` `>/<persistence id>; NULL
 * with INVALID_ARGUMENT naming `field` when the id could escape (empty, `.`, `..`, `/`,
 * control characters, too long). Caller frees. */
char *agent_volume_path(const char *root, const char *role, const char *persistence_id, const char *field,
                        ms_error **err);
