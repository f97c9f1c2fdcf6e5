/* The allocator's leader election against a real etcd: one leader at a time, a
 * standby takes over when the leader stops or loses its lease. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "meseta/time.h"

#include "alloc-leader.h"
#include "cluster.h"
#include "etcd-harness.h"
#include "testlib.h"

static ms_test_etcd *etcd;

typedef struct candidate {
  atomic_int leading, elections, stepdowns;
} candidate;

static void on_change(void *arg, bool leading) {
  candidate *c = arg;
  atomic_store(&c->leading, leading);
  atomic_fetch_add(leading ? &c->elections : &c->stepdowns, 1);
}

/* Bounded wait (a hang guard, not a timing). */
static bool until(atomic_int *v, int want) {
  for (int i = 0; i < 1500 && atomic_load(v) != want; i++)
    usleep(10000);
  return atomic_load(v) == want;
}

static ms_etcd *client_with(int64_t timeout_ms) {
  const char *ep[] = {ms_test_etcd_endpoint(etcd)};
  ms_etcd_options o = {.endpoints = ep, .n_endpoints = 1, .request_timeout_ms = timeout_ms};
  ms_error *err = NULL;
  ms_etcd *e = ms_etcd_new(&o, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(e);
  return e;
}

static ms_etcd *client(void) {
  return client_with(0);
}

static void test_one_leader_then_handover(void) {
  ms_etcd *e = client();
  ms_error *err = NULL;
  candidate a = {0}, b = {0};
  alloc_leader *la = alloc_leader_start(e, "t-handover", "10.0.0.1:5053", 5, on_change, &a, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(la);
  CU_ASSERT_TRUE(until(&a.leading, 1));
  alloc_leader *lb = alloc_leader_start(e, "t-handover", "10.0.0.2:5053", 5, on_change, &b, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(lb);
  usleep(300000); /* give b every chance to (wrongly) win */
  CU_ASSERT_EQUAL(atomic_load(&b.leading), 0);
  ms_etcd_kv kv = {0};
  MS_ASSERT_OK(ms_etcd_leader(e, "t-handover", 10, &kv, &err), &err);
  CU_ASSERT_STRING_EQUAL(kv.value, "10.0.0.1:5053");
  ms_etcd_kv_release(&kv);

  alloc_leader_stop(la); /* resigns: b takes over without waiting for the TTL */
  CU_ASSERT_TRUE(until(&b.leading, 1));
  MS_ASSERT_OK(ms_etcd_leader(e, "t-handover", 10, &kv, &err), &err);
  CU_ASSERT_STRING_EQUAL(kv.value, "10.0.0.2:5053");
  ms_etcd_kv_release(&kv);
  CU_ASSERT_TRUE(alloc_leader_is_leading(lb));
  alloc_leader_stop(lb);
  CU_ASSERT_EQUAL(ms_etcd_leader(e, "t-handover", 10, &kv, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_NOT_FOUND);
  ms_error_free(err);
  ms_etcd_free(e);
}

/* The leader's lease vanishes (as if etcd expired it): it steps down, the standby
 * leads, and the old leader campaigns again as a standby. */
static void test_lost_lease_steps_down(void) {
  ms_etcd *e = client();
  ms_error *err = NULL;
  candidate a = {0}, b = {0};
  alloc_leader *la = alloc_leader_start(e, "t-lost", "10.0.0.1:5053", 3, on_change, &a, &err);
  CU_ASSERT_TRUE(until(&a.leading, 1));
  alloc_leader *lb = alloc_leader_start(e, "t-lost", "10.0.0.2:5053", 3, on_change, &b, &err);
  ms_etcd_kv kv = {0};
  MS_ASSERT_OK(ms_etcd_leader(e, "t-lost", 6, &kv, &err), &err);
  MS_ASSERT_OK(ms_etcd_lease_revoke(e, kv.lease, &err), &err);
  ms_etcd_kv_release(&kv);
  CU_ASSERT_TRUE(until(&a.stepdowns, 1));
  CU_ASSERT_TRUE(until(&b.leading, 1));
  CU_ASSERT_EQUAL(atomic_load(&a.leading), 0);
  /* Never two leaders at once in the callbacks' view. */
  CU_ASSERT_FALSE(alloc_leader_is_leading(la) && alloc_leader_is_leading(lb));
  alloc_leader_stop(lb);
  CU_ASSERT_TRUE(until(&a.leading, 1)); /* a was campaigning again */
  CU_ASSERT_EQUAL(atomic_load(&a.elections), 2);
  alloc_leader_stop(la);
  ms_etcd_free(e);
}

/* Issue 12 point 4, fencing: a leader cut off from etcd (here: etcd frozen, and every
 * etcd request waits 60 s, so neither etcd nor the lease keeper can say anything) stops
 * being valid once its local lease deadline passes, and steps down by itself. */
static void test_trust_4_fenced_by_local_deadline(void) {
  ms_etcd *e = client_with(60000);
  ms_error *err = NULL;
  candidate a = {0};
  alloc_leader *la = alloc_leader_start(e, "t-fence", "10.0.0.1:5053", 2, on_change, &a, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(la);
  CU_ASSERT_TRUE_FATAL(until(&a.leading, 1));
  CU_ASSERT_TRUE(alloc_leader_valid(la));
  pid_t pid = ms_test_etcd_pid(etcd);
  int64_t t0 = ms_time_mono_ms();
  CU_ASSERT_EQUAL_FATAL(kill(pid, SIGSTOP), 0);
  bool down = until(&a.stepdowns, 1); /* hang guard 15 s, far below the 60 s request timeout */
  int64_t took = ms_time_mono_ms() - t0;
  bool valid = alloc_leader_valid(la);
  CU_ASSERT_EQUAL(kill(pid, SIGCONT), 0);
  CU_ASSERT_TRUE(down);
  CU_ASSERT_FALSE(valid);
  CU_ASSERT_FALSE(alloc_leader_is_leading(la));
  fprintf(stderr, "trust_4 fencing: stepped down %lld ms after etcd froze (lease TTL 2 s)\n",
          (long long)took);
  CU_ASSERT_TRUE(until(&a.leading, 1)); /* etcd back: it campaigns and leads again */
  alloc_leader_stop(la);
  ms_etcd_free(e);
}

static void test_bad_arguments(void) {
  ms_etcd *e = client();
  ms_error *err = NULL;
  candidate a = {0};
  CU_ASSERT_PTR_NULL(alloc_leader_start(e, "", "x:1", 5, on_change, &a, &err));
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
  ms_error_free(err);
  ms_etcd_free(e);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"one_leader_then_handover", test_one_leader_then_handover},
      {"lost_lease_steps_down", test_lost_lease_steps_down},
      {"bad_arguments", test_bad_arguments},
      {"trust_4_fenced_by_local_deadline", test_trust_4_fenced_by_local_deadline},
      {NULL, NULL},
  };
  return ms_test_main_etcd(argc, argv, "alloc-leader", cases, NULL, &etcd);
}
