/* meseta-agent's core (agent_core): one node's tasks, supervised through meseta-runtime, and
 * the AgentLink stream to the allocator.
 *
 * Threads. The agent's state belongs to the thread that runs its ms_loop (the owner). The
 * link has one thread of its own (agent-link.c) that opens the stream, receives and posts
 * every message to the owner; the owner sends. Containers are started by posix_spawn of
 * meseta-runtime (never fork: gRPC threads) and reaped on SIGCHLD through the loop's
 * signalfd (SIGCHLD must be blocked in every thread, see ms_signals_block).
 *
 * Files under the work dir:
 *   meta/agent.json                       agent id, boot id and the AgentInfo registered
 *   meta/tasks/<container>.pb             a TaskCheckpoint per task (agent_state.proto)
 *   sandboxes/<framework>/<task>/         the task's sandbox (stdout, stderr)
 *   containers/<container>/               spec.json, status.json, runtime.out, runtime.log
 *
 * Ownership: an agent owns its config's copies, its tasks and their queued updates;
 * agent_free() releases everything. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "meseta/error.h"
#include "meseta/loop.h"
#include "meseta/resources.h"
#include "meseta/rpc.h"
#include "meseta/v1/agent_link.pb-c.h"

typedef struct agent agent;
typedef struct agent_link agent_link;

typedef struct agent_config {
  const char *work_dir;   /* absolute */
  const char *volume_dir; /* persistent volumes' root; NULL: <work_dir>/volumes */
  const char *allocator;  /* for logs: the configured address(es) or the registry */
  /* Where the leader is: allocator addresses tried in turn (a standby refuses), and/or
   * a registry whose WatchLeader names the leader (preferred when it knows one). */
  const char *const *allocators;
  size_t n_allocators;
  const char *registry;    /* NULL: none */
  int64_t link_timeout_ms; /* a leader silent this long is left; 0: 3 heartbeat intervals */
  const char *hostname;    /* NULL: gethostname() */
  const char *resources;   /* text form; NULL: detected (agent_detect_resources) */
  const char *attributes;  /* "rack:r1;zone:a" (TEXT, or SCALAR when numeric); NULL: none */
  const char *runtime;     /* meseta-runtime's path */
  const char *seccomp_dir;
  const char *seccomp_default;
  const char *cgroup_parent;    /* relative; where the runtime puts containers' cgroups */
  bool switch_user;             /* run tasks as their CommandInfo / FrameworkInfo user */
  int64_t max_kill_grace_ms;    /* caps KillPolicy.grace_period */
  int64_t status_retry_ms;      /* first resend of an unacknowledged update; doubles */
  int64_t status_retry_max_ms;  /* cap of that backoff */
  int64_t reconnect_backoff_ms; /* first wait once every address failed; doubles */
  int64_t reconnect_max_ms;     /* cap */
  int64_t shutdown_grace_ms;    /* at exit: how long containers get to end after SIGTERM */
  int64_t reserve_mem_mb;       /* detection: memory left to the host */
  const char *ready_file;       /* written (the agent id, one line) once registered; NULL: none */
  /* "equal" (default) or "additive": what a restart with a known id may change (resources
   * and attributes may only grow with additive; anything else is refused). */
  const char *reconfiguration_policy;
  bool kill_on_exit;         /* SIGTERM/SIGINT end the containers too (else they keep running) */
  const char *region, *zone; /* fault domain; NULL: none */
  /* Optional isolators, comma-separated (agent_new refuses unknown ones): "linux/seccomp"
   * (the default profile; without it tasks are unconfined unless they name a profile),
   * "cgroups/pids" (pids_limit per container), "network/none" (a network namespace with
   * only loopback). pid, mount, ipc, uts and cgroup namespaces and cpu/memory cgroups are
   * always on. */
  const char *isolation;
  int64_t pids_limit; /* with cgroups/pids */
  /* Sandboxes and container directories of tasks the agent no longer holds are removed
   * once untouched for gc_delay_ms, by a sweep every gc_interval_ms (0: never). */
  int64_t gc_delay_ms, gc_interval_ms;
  /* TLS to the allocator: ca verifies it; cert+key are the agent's identity (mutual TLS).
   * NULL ca: plaintext. */
  const char *tls_ca, *tls_cert, *tls_key, *tls_server_name;
} agent_config;

/* ---- agent-core.c ---- */

/* Builds the agent (work dir layout, resources, persisted id). Runs nothing yet. */
agent *agent_new(const agent_config *cfg, ms_loop *loop, ms_error **err);
/* Starts the link thread. */
int agent_start(agent *a, ms_error **err);
/* Stops the agent. With kill_containers, asks every container to end (SIGTERM through the
 * runtime) and stops the loop once none is left or the shutdown grace passed; without,
 * stops the loop at once and leaves the containers running, checkpointed for the next
 * start to re-attach. Owner thread. */
void agent_begin_shutdown(agent *a, bool kill_containers);
/* Stops the link thread and frees (containers still running are left alone). NULL is fine. */
void agent_free(agent *a);
/* The TCP port AgentOperator listens on, advertised in AgentInfo.port (0: none). Before
 * agent_start. */
void agent_set_operator_port(agent *a, int port);
/* HOST:PORT clients dial for AgentOperator, advertised in AgentInfo.address (copied;
 * NULL: none). Before agent_start. */
void agent_set_operator_address(agent *a, const char *address);
/* The agent's id, NULL before REGISTERED. Owner thread. */
const char *agent_id(const agent *a);

/* ---- agent-resources.c ---- */

/* Detects cpus (sysconf), mem (MemTotal minus reserve_mb, in MiB), disk (work dir's
 * filesystem, MiB) and ports [31000-32000] as the text form. The caller frees. */
char *agent_detect_resources(const char *work_dir, int64_t reserve_mb, ms_error **err);

/* ---- agent-link.c ---- */

typedef struct agent_link_events {
  /* A new stream is open: send REGISTER / REREGISTER. `gen` names the stream. */
  void (*on_open)(agent *a, uint64_t gen);
  /* A message; the callee owns msg (protobuf_c_message_free_unpacked). */
  void (*on_message)(agent *a, uint64_t gen, Meseta__V1__AllocatorMessage *msg);
  /* The stream ended (reason: one line); a new one follows (see agent-link.c). */
  void (*on_closed)(agent *a, uint64_t gen, const char *reason);
} agent_link_events;

typedef struct agent_link_options {
  const char *const *targets; /* allocator addresses, tried in turn */
  size_t n_targets;
  const char *registry;   /* NULL: none; else its WatchLeader names the leader */
  const ms_rpc_tls *tls;  /* to the allocators; NULL: plaintext */
  int64_t backoff_ms;     /* first wait once every address failed in a row; 0: 100 ms */
  int64_t max_backoff_ms; /* cap; doubling in between */
  int64_t silence_ms;     /* leave a stream silent this long; 0: 3 heartbeat intervals */
} agent_link_options;

/* Everything in o is copied. Fails (INVALID_ARGUMENT) without an address or registry, or
 * on a malformed one. The watchdog timer goes on `loop` at agent_link_start (owner
 * thread). */
agent_link *agent_link_new(const agent_link_options *o, ms_loop *loop, agent *a, const agent_link_events *ev,
                           ms_error **err);
/* Starts the link thread (and the registry's); owner thread. */
int agent_link_start(agent_link *l, ms_error **err);
/* Sends on stream `gen` if it is still the current one (any thread; blocks while gRPC
 * takes the message). Fails with UNAVAILABLE otherwise. */
int agent_link_send(agent_link *l, uint64_t gen, const Meseta__V1__AgentMessage *m, ms_error **err);
/* After a registration: the backoff starts over, and the silence limit follows the
 * allocator's heartbeat interval (ms; 0: unknown). */
void agent_link_registered(agent_link *l, int64_t heartbeat_ms);
/* Cancels the stream, joins the thread, frees. NULL is fine. */
void agent_link_free(agent_link *l);

/* ---- agent-tasks.c ---- */

typedef struct agent_task agent_task;

/* RUN_TASK: sandbox, spec, spawn; TASK_STARTING / RUNNING, or TASK_FAILED / ERROR. */
void agent_task_run(agent *a, const Meseta__V1__AllocatorMessage__RunTask *rt);
/* KILL_TASK: SIGTERM to the runtime (it forwards, SIGKILL after the grace: grace_ms,
 * capped by --max-kill-grace-period, when >= 0 — a KillPolicy in the kill — else the
 * task's own). */
void agent_task_kill(agent *a, const char *framework_id, const char *task_id, int64_t grace_ms);
/* UPDATE_FRAMEWORK: the framework's tasks keep (and checkpoint) the new FrameworkInfo. */
void agent_task_update_framework(agent *a, const Meseta__V1__FrameworkInfo *info);
/* SHUTDOWN_FRAMEWORK (framework_id) or every task (NULL). */
void agent_task_kill_all(agent *a, const char *framework_id);
/* Containers still running. */
size_t agent_task_live(const agent *a);

/* ---- agent-status.c ---- */

/* Queues a status update for the task (uuid, timestamp, agent id filled in) and sends it
 * when it is the oldest unacknowledged one of its task. */
void agent_status_push(agent *a, agent_task *t, Meseta__V1__TaskStatus *st);
/* ACKNOWLEDGE_STATUS: drops the update, sends the task's next one. */
void agent_status_ack(agent *a, const char *framework_id, const char *task_id, const uint8_t *uuid,
                      size_t len);
/* After (re)registration: resend the head of every task's queue. */
void agent_status_resend_all(agent *a);
