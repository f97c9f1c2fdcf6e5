/* The whole meseta stack as real processes, for end-to-end tests and benchmarks: etcd
 * (tests/lib/etcd-harness), meseta-registry, meseta-allocator, meseta-master-api and N
 * meseta-agent processes running real containers through meseta-runtime; and the
 * example batch framework (examples/c, meseta-batch) run against it.
 *
 * The services run in the caller's network namespace (etcd and registry on loopback,
 * the allocator on `alloc_listen`, master-api on loopback). Each agent may run in a
 * network namespace of its own (`agent_netns[i]`, a name under /run/netns, entered with
 * nsenter so that the agent keeps the host's /sys and cgroups); it then reaches the
 * allocator at the address `alloc_listen` names. Agents put containers under their own
 * cgroup parent `meseta-e2e-<tag>-<i>`, so what is left behind is easy to see.
 *
 * Binaries come from $MESETA_BINARY_DIR (tests/lib/proc.h). Not thread-safe. Strings
 * returned belong to the stack. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "meseta/error.h"

#include "batch-run.h"
#include "etcd-harness.h"
#include "proc.h"

#define MS_E2E_MAX_AGENTS 8

typedef struct ms_e2e_options {
  const char *dir;                 /* logs and agents' work dirs go here */
  const char *tag;                 /* unique per run: keys, election, cgroup parents */
  int n_agents;                    /* 1 .. MS_E2E_MAX_AGENTS */
  const char *agent_resources;     /* e.g. "cpus:2;mem:2048" */
  const char *alloc_listen;        /* e.g. "10.213.7.1:0"; NULL: "127.0.0.1:0" */
  const char *const *agent_netns;  /* n_agents namespace names, or NULL: the caller's */
  const char *log_level;           /* the services' --log-level; NULL: info */
  const char *allocation_interval; /* NULL: 100ms */
} ms_e2e_options;

typedef struct ms_e2e_stack {
  ms_test_etcd *etcd;
  ms_test_proc *registry, *allocator, *mapi;
  ms_test_proc *agents[MS_E2E_MAX_AGENTS];
  int n_agents;
  char *tag;
} ms_e2e_stack;

/* Starts everything and waits (bounded) until master-api serves and lists every agent.
 * On failure what started is left in `s` for ms_e2e_stop. */
int ms_e2e_start(ms_e2e_stack *s, const ms_e2e_options *o, ms_error **err);

/* master-api's address ("127.0.0.1:P"). */
const char *ms_e2e_mapi(const ms_e2e_stack *s);
/* Agent i's id (its ready file holds it). */
const char *ms_e2e_agent_id(const ms_e2e_stack *s, int i);
/* Agent i's cgroup parent name (under each hierarchy); the caller frees. */
char *ms_e2e_cgroup_parent(const ms_e2e_stack *s, int i);

/* SIGTERM to every process, agents first; true when every one exited 0. The agents'
 * cgroup parents are removed where empty; etcd is stopped and its data removed. Safe on
 * a partly started stack, and twice. */
bool ms_e2e_stop(ms_e2e_stack *s);

typedef ms_test_batch ms_e2e_batch; /* what meseta-batch printed */

/* Runs `meseta-batch --master <mapi> --tasks N --cmd true --cpus C --mem M` plus
 * `extra` (NULL-terminated, may be NULL) with its output in `log`, and waits at most
 * timeout_ms (then SIGTERM, and SIGKILL 10 s later). Fails when it could not start or
 * printed no summary line. */
int ms_e2e_run_batch(const ms_e2e_stack *s, int64_t tasks, double cpus, double mem, const char *const *extra,
                     const char *log, int64_t timeout_ms, ms_e2e_batch *ret, ms_error **err);
