/* The chaos suite's shared parts (tests/chaos/README.md, docs/chaos.md).
 *
 * chaos-cluster.c: a whole meseta cluster of real processes on loopback: one etcd, two
 *   registries, two allocators (leader + standby in one election), two master-api
 *   replicas following the leader through the registries, three real agents running
 *   real containers. Faults: kill -9, SIGSTOP / SIGCONT, restart.
 * chaos-framework.c: a batch framework on the public Scheduler API that runs N real
 *   tasks, each appending "<task id> <agent id>" to a ledger file in its sandbox; it
 *   follows Mesos' rules (re-subscribe with its id on another master-api, reconcile,
 *   relaunch what the cluster says is unknown / lost / dropped).
 * chaos-verify.c: the three views (ledger, framework, Operator GetTasks) compared,
 *   sanitizer reports in the services' logs, RSS and thread counts from /proc.
 * chaos-load.c: the call flood and the idle subscribers.
 *
 * Failures are CUnit assertions; every failed check prints one line that says what was
 * seen. Not thread-safe unless said. Strings returned belong to their handle. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "etcd-harness.h"
#include "proc.h"

#define CHAOS_REGISTRIES 2
#define CHAOS_ALLOCATORS 2
#define CHAOS_MAPIS 2
#define CHAOS_AGENTS 3

/* ---- the cluster ---- */

typedef struct chaos_svc {
  char name[32];      /* "allocator-0": its log is <dir>/<name>.log */
  ms_test_proc *proc; /* NULL once killed (until restarted) */
  char *addr;         /* its first address, kept after a kill */
  bool frozen;        /* SIGSTOPped */
  bool killed;        /* killed on purpose at least once (its end is not checked) */
  long rss_start_kib;
} chaos_svc;

typedef struct chaos_cluster {
  char *dir; /* logs and work dirs; owned */
  char *tag; /* unique per run: keys, election, cgroup parents */
  ms_test_etcd *etcd;
  chaos_svc reg[CHAOS_REGISTRIES], alloc[CHAOS_ALLOCATORS], mapi[CHAOS_MAPIS], agent[CHAOS_AGENTS];
  char *registry_target; /* both registries as one gRPC target (pick_first) */
  char *agent_id[CHAOS_AGENTS];
  char *work_dir[CHAOS_AGENTS];
  char *cgroup_parent[CHAOS_AGENTS];
  bool agent_follows_registry; /* the agent binary has --registry */
} chaos_cluster;

/* Starts everything (allocator-0 leads) and waits until both master-api replicas list
 * the three agents. Fatal on failure. */
void chaos_cluster_start(chaos_cluster *c, const char *dir);
/* With check: every service must be alive unless killed on purpose and have no
 * sanitizer report in its log; SIGTERM to all (SIGCONT first to a frozen one), each
 * must exit 0 (leaks are reported at exit under ASan). Non-fatal assertions. Without
 * check (outside a test case): SIGKILL to all, nothing asserted. Then etcd and the
 * cgroups left go. */
void chaos_cluster_stop(chaos_cluster *c, bool check);

/* kill -9 (recorded as on purpose) and reap. */
void chaos_kill(chaos_svc *s);
void chaos_freeze(chaos_svc *s); /* SIGSTOP */
void chaos_thaw(chaos_svc *s);   /* SIGCONT */
/* Starts agent i again with the same flags and work dir (fatal on failure). */
void chaos_agent_restart(chaos_cluster *c, int i);
pid_t chaos_pid(const chaos_svc *s); /* 0 when not running */
/* Whether the process runs (a zombie does not). */
bool chaos_alive(pid_t pid);

/* The index of the one allocator that says SERVING while no other unfrozen one does
 * (frozen and killed ones are not asked); -1 otherwise. */
int chaos_leader(chaos_cluster *c);
/* Polls until an allocator other than `not` (-1: any) leads; its index, or -1 after
 * timeout_ms. */
int chaos_wait_leader(chaos_cluster *c, int not, int64_t timeout_ms);
/* How many agents master-api `mapi` lists as ACTIVE; -1: no answer. */
int chaos_active_agents(chaos_cluster *c, int mapi);
/* The leader's id (MasterInfo.id, new at every leadership change) as master-api `mapi`
 * sees it; NULL if none. The caller frees. */
char *chaos_master_id(chaos_cluster *c, int mapi);

/* ---- the batch framework ---- */

typedef struct chaos_fw chaos_fw;

typedef struct chaos_fw_options {
  int tasks;         /* logical tasks, ids "<name>-<i>.<attempt>" */
  int max_running;   /* launched and not ended at once */
  const char *sleep; /* each task's `sleep` after writing the ledger, e.g. "1" */
  const char *name;
  bool paused; /* subscribe, decline every offer (1 h filter) until chaos_fw_resume */
} chaos_fw_options;

/* Subscribes through targets[0] (the others are where it fails over to, in order);
 * fatal if no SUBSCRIBED comes. The batch starts at once. */
chaos_fw *chaos_fw_start(const char *const *targets, int n_targets, const chaos_fw_options *o);
/* Starts launching (Revive: the filters of the paused time go). */
void chaos_fw_resume(chaos_fw *f);
const char *chaos_fw_id(chaos_fw *f);
int chaos_fw_tasks(chaos_fw *f);
/* Logical tasks that have a FINISHED attempt / that ended (any terminal state that is
 * not relaunched). */
int chaos_fw_finished(chaos_fw *f);
int chaos_fw_done(chaos_fw *f);
/* Tasks running now on agent `agent_id` (by the last update). */
int chaos_fw_running_on(chaos_fw *f, const char *agent_id);
/* The first accepted launch / FINISHED update at or after t_ms (ms_time_mono_ms);
 * -1 if none yet. */
int64_t chaos_fw_first_launch_after(chaos_fw *f, int64_t t_ms);
int64_t chaos_fw_first_finish_after(chaos_fw *f, int64_t t_ms);
/* The index of the master-api target in use now. */
int chaos_fw_target(chaos_fw *f);
/* Prints the counters on one line. */
void chaos_fw_print(chaos_fw *f);
/* Unsubscribes (the framework stays registered for its failover timeout, so its
 * tasks stay in GetTasks) and frees. */
void chaos_fw_free(chaos_fw *f);

/* What the framework knows of one attempt (for chaos-verify.c). */
typedef struct chaos_attempt {
  char *id;           /* "<name>-<i>.<k>" */
  int task;           /* i */
  char *agent_id;     /* the offer's agent */
  int last_state;     /* Meseta__V1__TaskState, 0 before any update */
  int terminal_state; /* the first terminal update's state (0: none) */
  int terminal_count; /* terminal updates with distinct uuids, or a different state */
  bool unknown;       /* answered TASK_UNKNOWN before any terminal update */
  bool accept_ok;     /* the Accept call returned OK */
  bool relaunched;    /* a new attempt replaced it */
  uint8_t uuid[16];   /* of the first terminal update */
  char reconcile[32]; /* the last reconciliation answer's state name, "" if none */
} chaos_attempt;
/* A snapshot of every attempt; the caller frees with chaos_attempts_free. */
chaos_attempt *chaos_fw_attempts(chaos_fw *f, size_t *ret_n, int *ret_tasks);
void chaos_attempts_free(chaos_attempt *a, size_t n);

/* ---- verification ---- */

/* Waits for the batch to end (until deadline_ms, ms_time_mono_ms), then compares the
 * ledger, the framework's view and GetTasks from master-api `mapi`; asserts every task
 * FINISHED exactly once in all three, none lost, none duplicated, none run twice. */
void chaos_verify(chaos_cluster *c, chaos_fw *f, int mapi, int64_t deadline_ms);

/* Resident set (KiB) / threads of a process from /proc; -1 if gone. */
long chaos_rss_kib(pid_t pid);
int chaos_threads(pid_t pid);
/* Whether the log has a sanitizer report (ASan, LSan, UBSan); prints its first line. */
bool chaos_log_has_report(const char *log);

/* ---- load ---- */

typedef struct chaos_flood_stats {
  uint64_t calls, ok, errors, by_code[17];
} chaos_flood_stats;
/* 16 threads of reads and bogus Accept / Decline / Reconcile calls (random ids, no
 * credentials) against both master-api replicas and both allocators for `ms`. */
void chaos_flood(chaos_cluster *c, int threads, int64_t ms, chaos_flood_stats *ret);

typedef struct chaos_idle chaos_idle;
/* Opens n Scheduler subscriptions on master-api `mapi` that never answer offers;
 * counts SUBSCRIBED, RESOURCE_EXHAUSTED (refused: a limit, not a failure) and other
 * answers. */
chaos_idle *chaos_idle_start(chaos_cluster *c, int mapi, int n);
void chaos_idle_counts(chaos_idle *s, int *subscribed, int *refused, int *failed);
void chaos_idle_free(chaos_idle *s);
