/* A meseta control plane for integration tests: a registry and allocators that
 * campaign in one election, on a real etcd the test started, each a real process
 * (tests/lib/proc.h). Keys and the election are the test's own (`tag`).
 * Failures to start are fatal CUnit assertions. Not thread-safe. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "meseta/rpc.h"
#include "meseta/v1/allocator.pb-c.h"

#include "etcd-harness.h"
#include "proc.h"
#include "sim.h"
#include "testlib.h"

#define MS_TEST_MAX_ALLOCATORS 3

typedef struct ms_test_cluster {
  ms_test_proc *registry;
  ms_test_proc *alloc[MS_TEST_MAX_ALLOCATORS];
  const char *addr[MS_TEST_MAX_ALLOCATORS]; /* NULL once an allocator is gone */
  int n;
} ms_test_cluster;

/* ms_test_proc_start, or the test fails (fatal) after printing why. */
ms_test_proc *ms_test_start(const char *name, const char *dir, const char *const *argv);

/* Starts the registry and n allocators (100 ms cycles, 2 s leader lease, the given
 * recovery timeout, e.g. "10s"); logs go to dir. */
void ms_test_cluster_start(ms_test_cluster *c, ms_test_etcd *etcd, const char *dir, const char *tag, int n,
                           const char *recovery_timeout);
/* SIGTERM to everything still running (an allocator killed earlier is skipped); a
 * clean exit is asserted. */
void ms_test_cluster_stop(ms_test_cluster *c);

/* A meseta-allocator without etcd (it leads at once; durable only if `extra` names a
 * registry) on a free port, allocating every 100 ms, logging at debug into <dir>/<name>.log;
 * `extra`: more flags, NULL-terminated (NULL: none). A failure to start fails the test
 * (fatal). Stop it with ms_test_proc_stop. */
ms_test_proc *ms_test_allocator_start(const char *dir, const char *name, const char *const *extra);

/* A meseta-master-api on a free port named `name`, logging at debug into <dir>/<name>.log;
 * `flags`: where it finds the allocator (`--registry ADDR` or `--allocator ADDR`) and more,
 * NULL-terminated. Waits (30 s at most) until it serves when `wait`. A failure to start
 * fails the test (fatal). Stop it with ms_test_proc_stop. */
ms_test_proc *ms_test_mapi_start(const char *dir, const char *name, const char *const *flags, bool wait);

/* The same with its address at hand; ms_test_allocator_stop sends SIGTERM, asserts a clean
 * exit (0: leak-free under ASan) and frees it. */
typedef struct ms_test_allocator {
  ms_test_proc *proc;
  const char *addr; /* the proc's */
} ms_test_allocator;
ms_test_allocator ms_test_allocator_run(const char *dir, const char *name, const char *const *extra);
void ms_test_allocator_stop(ms_test_allocator *a);

/* The main() of a test that needs a real etcd: makes *dir (`test-<name>` under the temp
 * dir; dir NULL: none), starts *etcd, runs the cases as suite `name`, stops etcd, and
 * removes the directory when every case passed, or keeps it and says where when one
 * failed or MESETA_KEEP_TEST_DIR is set. The process's exit code. */
int ms_test_main_etcd(int argc, char **argv, const char *name, const ms_test_case *cases, char **dir,
                      ms_test_etcd **etcd);

/* grpc.health.v1 of a server as a whole: 1 SERVING, 0 not, -1 no answer. */
int ms_test_health(const char *addr);

/* One unary call on a fresh channel to addr: `co` its options (NULL: plaintext), `md` the
 * request metadata (key, value, ..., NULL; NULL: none). Returns the status; on OK *resp
 * gets the answer (resp NULL: it is freed), else *msg the error's message (msg NULL:
 * dropped); both are the caller's. */
ms_status ms_test_call(const char *addr, const ms_rpc_channel_options *co, const char *const *md,
                       const char *method, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rd,
                       int64_t timeout_ms, ProtobufCMessage **resp, char **msg);

/* Allocator.OperatorCall on `addr`, retried while it answers UNAVAILABLE (standing by or
 * recovering; 30 s at most). The status; *msg (msg may be NULL) the last error's message,
 * the caller's to free. */
ms_status ms_test_operator_call(const char *addr, const Meseta__V1__OperatorCallRequest *req, char **msg);

/* The index of the one allocator that serves while every other live one does not;
 * -1 while that is not so. */
int ms_test_cluster_leader(ms_test_cluster *c);
/* Polls ms_test_cluster_leader until there is one (a hang guard of timeout_ms):
 * its index, or -1. */
int ms_test_cluster_wait_leader(ms_test_cluster *c, int64_t timeout_ms);

/* Simulated agents and frameworks (sim.h) on `addr`, or a fatal failure naming why. */
ms_sim_agent *ms_test_sim_agent(const char *addr, const ms_sim_agent_options *o);
ms_sim_framework *ms_test_sim_framework(const char *addr, const ms_sim_framework_options *o);
/* The next offer a HOLD framework got within timeout_ms (the caller frees it), or a
 * fatal failure. */
Meseta__V1__Offer *ms_test_wait_offer(ms_sim_framework *f, int64_t timeout_ms);
/* Waits (a hang guard) for a framework's stat to reach n, or fails fatally. */
#define MS_TEST_WAIT_FW(fw, field, n, timeout_ms)                                                            \
  CU_ASSERT_FATAL(                                                                                           \
      ms_sim_framework_wait_stat((fw), offsetof(ms_sim_framework_stats, field), (n), (timeout_ms)))

/* ms_sim_wait predicates: grpc.health.v1 at `ctx` (an address) says SERVING; master-api
 * at w->mapi lists exactly w->want agents (GetAgents; false on any error). */
bool ms_test_serving(void *ctx);
typedef struct ms_test_agents_wait {
  const char *mapi;
  size_t want;
} ms_test_agents_wait;
bool ms_test_agents_listed(void *ctx);
