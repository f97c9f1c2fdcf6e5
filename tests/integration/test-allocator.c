/* meseta-allocator as a process, with simulated agents and frameworks (tests/lib/sim.h):
 * offers, launches, DRF sharing, declines and revive, offer timeout, refused calls, an
 * agent that goes away. Waits are bounded hang guards, never timing assertions. */
#include <signal.h>
#include <stddef.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/resources-io.h"
#include "meseta/rpc.h"
#include "meseta/time.h"

#include "cluster.h"
#include "proc.h"
#include "sim.h"
#include "testlib.h"

#define WAIT_MS 15000

static char *dir;

static ms_sim_agent *agent(const ms_test_allocator *al, const char *res, int64_t task_ms) {
  return ms_test_sim_agent(al->addr, &(ms_sim_agent_options){.resources = res, .task_ms = task_ms});
}

static ms_sim_framework *framework(const ms_test_allocator *al, const ms_sim_framework_options *o) {
  return ms_test_sim_framework(al->addr, o);
}

#define WAIT_FW(fw, fieldname, count) MS_TEST_WAIT_FW(fw, fieldname, count, WAIT_MS)
#define FW_STAT(fw, fieldname) MS_SIM_FW_STAT(fw, fieldname)

static Meseta__V1__Offer *wait_offer(ms_sim_framework *f) {
  return ms_test_wait_offer(f, WAIT_MS);
}

static double offer_scalar(const Meseta__V1__Offer *o, const char *name) {
  ms_resources *r = NULL;
  if (ms_resources_from_proto(o->resources, o->n_resources, &r, NULL) < 0)
    return -1;
  double v = (double)ms_resources_scalar(r, name) / 1000.0;
  ms_resources_free(r);
  return v;
}

static void free_offer(Meseta__V1__Offer *o) {
  if (o)
    protobuf_c_message_free_unpacked(&o->base, NULL);
}

/* ---- tests ---- */

static void test_offers_flow(void) {
  ms_test_allocator al = ms_test_allocator_run(dir, "offers", NULL);
  ms_sim_agent *a = agent(&al, "cpus:4;mem:4096", 0);
  ms_sim_framework_options fo = {.name = "hold", .mode = MS_SIM_HOLD};
  ms_sim_framework *f = framework(&al, &fo);
  Meseta__V1__Offer *o = wait_offer(f);
  CU_ASSERT_STRING_EQUAL(o->agent_id->value, ms_sim_agent_id(a));
  CU_ASSERT_STRING_EQUAL(o->framework_id->value, ms_sim_framework_id(f));
  CU_ASSERT_EQUAL(offer_scalar(o, "cpus"), 4.0);
  CU_ASSERT_EQUAL(offer_scalar(o, "mem"), 4096.0);
  CU_ASSERT_PTR_NOT_NULL(o->allocation_info);
  free_offer(o);
  ms_sim_framework_free(f);
  ms_sim_agent_free(a);
  ms_test_allocator_stop(&al);
}

static void test_launch_and_recover(void) {
  ms_test_allocator al = ms_test_allocator_run(dir, "launch", NULL);
  ms_sim_agent *a = agent(&al, "cpus:4;mem:4096", 100);
  ms_sim_framework_options fo = {.name = "hold", .mode = MS_SIM_HOLD, .refuse_ms = 0};
  ms_sim_framework *f = framework(&al, &fo);
  Meseta__V1__Offer *o = wait_offer(f);
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_sim_framework_launch(f, o, "t1", "cpus:1;mem:128", &err), &err);
  free_offer(o);
  WAIT_FW(f, running, 1);
  WAIT_FW(f, finished, 1);
  ms_sim_agent_stats as;
  ms_sim_agent_stats_get(a, &as);
  CU_ASSERT_EQUAL(as.run_tasks, 1);
  /* The task's resources come back: an offer of the whole agent again. */
  bool whole = false;
  for (int i = 0; i < 50 && !whole; i++) {
    o = wait_offer(f);
    whole = offer_scalar(o, "cpus") == 4.0;
    if (!whole) /* the remainder offered while the task ran */
      ms_sim_framework_decline(f, o->id->value, 0, NULL);
    free_offer(o);
  }
  CU_ASSERT(whole);
  ms_sim_framework_free(f);
  ms_sim_agent_free(a);
  ms_test_allocator_stop(&al);
}

static void test_drf_two_frameworks(void) {
  ms_test_allocator al = ms_test_allocator_run(dir, "drf", NULL);
  ms_sim_framework_options fa = {
      .name = "a", .mode = MS_SIM_ACCEPT, .task_resources = "cpus:1;mem:256", .refuse_ms = 0};
  ms_sim_framework_options fb = fa;
  fb.name = "b";
  /* Both are subscribed (framework() returns on SUBSCRIBED) before any agent comes:
   * otherwise the first, alone, may fill every agent (its tasks never end) before the
   * second subscribes, and nothing is left to share. */
  ms_sim_framework *f1 = framework(&al, &fa), *f2 = framework(&al, &fb);
  ms_sim_agent *ags[4];
  for (int i = 0; i < 4; i++)
    ags[i] = agent(&al, "cpus:2;mem:2048", -1);
  /* 8 cpus, tasks of one: DRF lets both frameworks launch. */
  WAIT_FW(f1, running, 2);
  WAIT_FW(f2, running, 2);
  CU_ASSERT(FW_STAT(f1, offers) > 0);
  CU_ASSERT(FW_STAT(f2, offers) > 0);
  CU_ASSERT(FW_STAT(f1, call_failures) == 0);
  CU_ASSERT(FW_STAT(f2, call_failures) == 0);
  ms_sim_framework_free(f1);
  ms_sim_framework_free(f2);
  for (int i = 0; i < 4; i++)
    ms_sim_agent_free(ags[i]);
  ms_test_allocator_stop(&al);
}

static void test_decline_and_revive(void) {
  ms_test_allocator al = ms_test_allocator_run(dir, "decline", NULL);
  ms_sim_agent *a = agent(&al, "cpus:2;mem:1024", 0);
  ms_sim_framework_options fa = {.name = "decliner", .mode = MS_SIM_DECLINE, .refuse_ms = 3600 * 1000};
  ms_sim_framework *f1 = framework(&al, &fa);
  WAIT_FW(f1, declined, 1);
  ms_sim_framework_set_mode(f1, MS_SIM_HOLD);
  uint64_t f1_offers = FW_STAT(f1, offers);
  /* The agent is held away from f1; another framework gets it. */
  ms_sim_framework_options fb = {.name = "other", .mode = MS_SIM_HOLD};
  ms_sim_framework *f2 = framework(&al, &fb);
  Meseta__V1__Offer *o = wait_offer(f2);
  CU_ASSERT_STRING_EQUAL(o->agent_id->value, ms_sim_agent_id(a));
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_sim_framework_decline(f2, o->id->value, 3600 * 1000, &err), &err);
  free_offer(o);
  CU_ASSERT_EQUAL(FW_STAT(f1, offers), f1_offers);
  /* Revive clears f1's filter: the agent comes back to it. */
  MS_ASSERT_OK(ms_sim_framework_revive(f1, &err), &err);
  o = wait_offer(f1);
  CU_ASSERT_STRING_EQUAL(o->agent_id->value, ms_sim_agent_id(a));
  free_offer(o);
  ms_sim_framework_free(f1);
  ms_sim_framework_free(f2);
  ms_sim_agent_free(a);
  ms_test_allocator_stop(&al);
}

static void test_offer_timeout(void) {
  const char *extra[] = {"--offer-timeout", "300ms", NULL};
  ms_test_allocator al = ms_test_allocator_run(dir, "timeout", extra);
  ms_sim_agent *a = agent(&al, "cpus:1;mem:512", 0);
  ms_sim_framework_options fo = {.name = "slow", .mode = MS_SIM_HOLD};
  ms_sim_framework *f = framework(&al, &fo);
  WAIT_FW(f, offers, 1);
  WAIT_FW(f, rescinds, 1);
  WAIT_FW(f, offers, 2); /* the rescinded resources are offered again */
  ms_sim_framework_free(f);
  ms_sim_agent_free(a);
  ms_test_allocator_stop(&al);
}

static void expect_status(int rc, ms_error **err, ms_status code, const char *needle) {
  CU_ASSERT_EQUAL(rc, MS_ERR);
  CU_ASSERT_PTR_NOT_NULL_FATAL(*err);
  if ((*err)->code != code)
    fprintf(stderr, "expected %s, got %s: %s\n", ms_status_name(code), ms_status_name((*err)->code),
            (*err)->msg);
  CU_ASSERT_EQUAL((*err)->code, code);
  if (needle && !strstr((*err)->msg, needle))
    fprintf(stderr, "`%s` not in `%s`\n", needle, (*err)->msg);
  CU_ASSERT(!needle || strstr((*err)->msg, needle) != NULL);
  ms_error_free(*err);
  *err = NULL;
}

static void test_bad_calls(void) {
  ms_test_allocator al = ms_test_allocator_run(dir, "bad", NULL);
  ms_sim_agent *a = agent(&al, "cpus:2;mem:1024", -1);
  ms_sim_framework_options fo = {.name = "bad", .mode = MS_SIM_HOLD};
  ms_sim_framework *f = framework(&al, &fo);
  Meseta__V1__Offer *o = wait_offer(f);
  ms_error *err = NULL;

  /* Unknown framework. */
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = "no-such-framework";
  Meseta__V1__ReviveRequest rv = MESETA__V1__REVIVE_REQUEST__INIT;
  rv.framework_id = &fid;
  rv.stream_id = (char *)ms_sim_framework_stream_id(f);
  Meseta__V1__SchedulerCallRequest c = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  c.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_REVIVE;
  c.revive = &rv;
  expect_status(ms_sim_framework_call(f, &c, &err), &err, MS_NOT_FOUND, "no-such-framework");

  /* Stale stream id. */
  fid.value = (char *)ms_sim_framework_id(f);
  rv.stream_id = "stale-stream";
  expect_status(ms_sim_framework_call(f, &c, &err), &err, MS_FAILED_PRECONDITION, "stream_id");

  /* Missing framework id names the field. */
  rv.framework_id = NULL;
  expect_status(ms_sim_framework_call(f, &c, &err), &err, MS_INVALID_ARGUMENT, "revive.framework_id");

  /* Launching what the offer does not hold: refused, and the offer stays usable. */
  expect_status(ms_sim_framework_launch(f, o, "big", "cpus:8;mem:128", &err), &err, MS_INVALID_ARGUMENT,
                "not in the offer");
  MS_ASSERT_OK(ms_sim_framework_launch(f, o, "ok", "cpus:1;mem:128", &err), &err);
  /* The offer is used up now. */
  expect_status(ms_sim_framework_launch(f, o, "again", "cpus:1;mem:128", &err), &err, MS_NOT_FOUND,
                o->id->value);
  WAIT_FW(f, running, 1);
  ms_sim_agent_stats as;
  ms_sim_agent_stats_get(a, &as);
  CU_ASSERT_EQUAL(as.run_tasks, 1);
  free_offer(o);
  ms_sim_framework_free(f);
  ms_sim_agent_free(a);
  ms_test_allocator_stop(&al);
}

static void test_agent_gone_rescinds(void) {
  ms_test_allocator al = ms_test_allocator_run(dir, "agent-gone", NULL);
  ms_sim_agent *a = agent(&al, "cpus:2;mem:1024", 0);
  ms_sim_framework_options fo = {.name = "watcher", .mode = MS_SIM_HOLD};
  ms_sim_framework *f = framework(&al, &fo);
  WAIT_FW(f, offers, 1);
  ms_sim_agent_disconnect(a);
  WAIT_FW(f, rescinds, 1);
  ms_sim_framework_free(f);
  ms_sim_agent_free(a);
  ms_test_allocator_stop(&al);
}

/* ---- resource operations with feedback ---- */

#define WAIT_AG(ag, fieldname, count)                                                                        \
  CU_ASSERT_FATAL(ms_sim_agent_wait_stat((ag), offsetof(ms_sim_agent_stats, fieldname), (count), WAIT_MS))

/* An agent whose stream breaks keeps its tasks while it is away: it reconnects, and the
 * framework never hears of a lost task; offers on it resume. */
static void test_agent_away_keeps_tasks(void) {
  const char *extra[] = {"--agent-reconnect-timeout", "1h", NULL};
  ms_test_allocator al = ms_test_allocator_run(dir, "agent-away", extra);
  ms_sim_agent *a = agent(&al, "cpus:2;mem:1024", 3600 * 1000);
  ms_sim_framework_options fo = {
      .name = "keeper", .mode = MS_SIM_ACCEPT, .task_resources = "cpus:1;mem:128", .max_tasks = 1};
  ms_sim_framework *f = framework(&al, &fo);
  WAIT_FW(f, running, 1);
  uint64_t offers = FW_STAT(f, offer_events);
  ms_sim_agent_cut(a); /* it re-registers by itself */
  WAIT_AG(a, reregistrations, 1);
  WAIT_FW(f, offer_events, offers + 1); /* offered again once back */
  CU_ASSERT_EQUAL(FW_STAT(f, lost), 0);
  ms_sim_agent_stats as;
  ms_sim_agent_stats_get(a, &as);
  CU_ASSERT_EQUAL(as.running, 1);
  ms_sim_framework_free(f);
  ms_sim_agent_free(a);
  ms_test_allocator_stop(&al);
}

/* A framework that fails over (re-subscribes with its id on a new stream) gets the
 * resources its old stream held in offers: those offers are rescinded, not left to expire. */
static void test_failover_rescinds_old_offers(void) {
  ms_test_allocator al = ms_test_allocator_run(dir, "fw-failover-offers", NULL);
  ms_sim_agent *a = agent(&al, "cpus:2;mem:1024", 0);
  ms_sim_framework_options fo = {.name = "holder", .mode = MS_SIM_HOLD};
  ms_sim_framework *f = framework(&al, &fo);
  WAIT_FW(f, offers, 1); /* held: never answered */
  ms_sim_framework_options fo2 = {
      .name = "holder", .mode = MS_SIM_HOLD, .framework_id = ms_sim_framework_id(f)};
  ms_sim_framework *f2 = framework(&al, &fo2);
  WAIT_FW(f2, offers, 1); /* the agent's only resources, offered again on the new stream */
  ms_sim_framework_free(f2);
  ms_sim_framework_free(f);
  ms_sim_agent_free(a);
  ms_test_allocator_stop(&al);
}

/* ... but one that stays away past --agent-reconnect-timeout has its tasks lost. */
static void test_agent_away_too_long_loses_tasks(void) {
  const char *extra[] = {"--agent-reconnect-timeout", "300ms", NULL};
  ms_test_allocator al = ms_test_allocator_run(dir, "agent-away-long", extra);
  ms_sim_agent *a = agent(&al, "cpus:2;mem:1024", 3600 * 1000);
  ms_sim_framework_options fo = {
      .name = "loser", .mode = MS_SIM_ACCEPT, .task_resources = "cpus:1;mem:128", .max_tasks = 1};
  ms_sim_framework *f = framework(&al, &fo);
  WAIT_FW(f, running, 1);
  ms_sim_agent_free(a); /* gone for good */
  WAIT_FW(f, lost, 1);
  ms_sim_framework_free(f);
  ms_test_allocator_stop(&al);
}

/* cpus in an offer: unreserved and reserved. */
static void offer_cpus(const Meseta__V1__Offer *o, double *unres, double *res) {
  *unres = *res = 0;
  for (size_t i = 0; i < o->n_resources; i++) {
    const Meseta__V1__Resource *r = o->resources[i];
    if (strcmp(r->name, "cpus") == 0 && r->scalar)
      *(r->n_reservations ? res : unres) += r->scalar->value;
  }
}

typedef struct cpus_wait {
  ms_sim_framework *f;
  double unres, res;       /* wanted */
  Meseta__V1__Offer *kept; /* the matching offer (the caller's) */
} cpus_wait;

static bool cpus_seen(void *ctx) {
  cpus_wait *w = ctx;
  Meseta__V1__Offer *o;
  while (!w->kept && (o = ms_sim_framework_take_offer(w->f))) {
    double u, r;
    offer_cpus(o, &u, &r);
    if (u == w->unres && r == w->res)
      w->kept = o;
    else
      free_offer(o);
  }
  return w->kept != NULL;
}

/* The next offer with exactly these cpus (older ones are dropped). */
static Meseta__V1__Offer *wait_cpus(ms_sim_framework *f, double unres, double res) {
  cpus_wait w = {f, unres, res, NULL};
  CU_ASSERT_FATAL(ms_sim_wait(cpus_seen, &w, WAIT_MS));
  return w.kept;
}

static int reserve_ok(ms_sim_framework *f, const Meseta__V1__Offer *o, const char *id) {
  ms_error *err = NULL;
  int rc = ms_sim_framework_reserve(f, o, id, "cpus:1", &err);
  if (rc < 0) {
    fprintf(stderr, "reserve: %s\n", err->msg);
    ms_error_free(err);
  }
  return rc;
}

static void test_operation_finished(void) {
  ms_test_allocator al = ms_test_allocator_run(dir, "op-finished", NULL);
  ms_sim_agent *a = agent(&al, "cpus:4;mem:4096", 0);
  ms_sim_framework_options fo = {.name = "ops", .role = "ops", .mode = MS_SIM_HOLD};
  ms_sim_framework *f = framework(&al, &fo);
  Meseta__V1__Offer *o = wait_offer(f);
  ms_error *err = NULL;
  CU_ASSERT_EQUAL_FATAL(reserve_ok(f, o, "op-1"), 0);
  free_offer(o);
  WAIT_FW(f, op_finished, 1);
  Meseta__V1__OperationStatus *st = ms_sim_framework_op_status(f, "op-1");
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  CU_ASSERT_EQUAL(st->state, MESETA__V1__OPERATION_STATE__OPERATION_FINISHED);
  CU_ASSERT_EQUAL(st->uuid.len, 16);
  CU_ASSERT_PTR_NOT_NULL(st->agent_id);
  protobuf_c_message_free_unpacked(&st->base, NULL);
  WAIT_FW(f, op_acks, 1);
  WAIT_AG(a, op_acks, 1);
  ms_sim_agent_stats as;
  ms_sim_agent_stats_get(a, &as);
  CU_ASSERT_EQUAL(as.apply_operations, 1);
  /* The reservation is offered to the role. */
  free_offer(wait_cpus(f, 3, 1));
  /* Acknowledged: the id is free again, and the allocator forgot it. */
  CU_ASSERT_EQUAL(ms_sim_framework_reconcile_operations(f, (const char *[]){"op-1"}, 1, &err), 0);
  WAIT_FW(f, op_unknown, 1);
  ms_sim_framework_free(f);
  ms_sim_agent_free(a);
  ms_test_allocator_stop(&al);
}

static void test_operation_failed(void) {
  ms_test_allocator al = ms_test_allocator_run(dir, "op-failed", NULL);
  ms_sim_agent *a = agent(&al, "cpus:4;mem:4096", 0);
  ms_sim_agent_fail_next_operation(a, "disk on fire");
  ms_sim_framework_options fo = {
      .name = "ops", .role = "ops", .mode = MS_SIM_HOLD, .no_operation_acks = true};
  ms_sim_framework *f = framework(&al, &fo);
  Meseta__V1__Offer *o = wait_offer(f);
  ms_error *err = NULL;
  CU_ASSERT_EQUAL_FATAL(reserve_ok(f, o, "op-f"), 0);
  free_offer(o);
  WAIT_FW(f, op_failed, 1);
  Meseta__V1__OperationStatus *st = ms_sim_framework_op_status(f, "op-f");
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  CU_ASSERT_EQUAL(st->state, MESETA__V1__OPERATION_STATE__OPERATION_FAILED);
  CU_ASSERT_STRING_EQUAL(st->message, "disk on fire");
  protobuf_c_message_free_unpacked(&st->base, NULL);
  /* Undone: the cpus come back unreserved. */
  o = wait_cpus(f, 4, 0);
  /* Not acknowledged: the id is still taken. */
  expect_status(ms_sim_framework_reserve(f, o, "op-f", "cpus:1", &err), &err, MS_INVALID_ARGUMENT,
                "operations[0].id");
  free_offer(o);
  /* Explicit reconciliation: the known one and an unknown one; then implicit. */
  uint64_t failed = FW_STAT(f, op_failed);
  CU_ASSERT_EQUAL(ms_sim_framework_reconcile_operations(f, (const char *[]){"op-f", "op-nope"}, 2, &err), 0);
  WAIT_FW(f, op_unknown, 1);
  WAIT_FW(f, op_failed, failed + 1);
  CU_ASSERT_EQUAL(ms_sim_framework_reconcile_operations(f, NULL, 0, &err), 0);
  WAIT_FW(f, op_failed, failed + 2);
  CU_ASSERT_EQUAL(FW_STAT(f, op_unknown), 1);
  ms_sim_agent_stats as;
  ms_sim_agent_stats_get(a, &as);
  CU_ASSERT_EQUAL(as.op_acks, 0);
  /* The framework fails over: the new subscription gets the status again and acknowledges it. */
  ms_sim_framework_options fo2 = {
      .name = "ops", .role = "ops", .mode = MS_SIM_HOLD, .framework_id = ms_sim_framework_id(f)};
  ms_sim_framework *f2 = framework(&al, &fo2);
  WAIT_FW(f2, op_failed, 1);
  WAIT_FW(f2, op_acks, 1);
  WAIT_AG(a, op_acks, 1);
  CU_ASSERT_EQUAL(ms_sim_framework_reconcile_operations(f2, (const char *[]){"op-f"}, 1, &err), 0);
  WAIT_FW(f2, op_unknown, 1);
  ms_sim_framework_free(f2);
  ms_sim_framework_free(f);
  ms_sim_agent_free(a);
  ms_test_allocator_stop(&al);
}

/* ---- issue 12 ---- */

/* Point 2: a framework that holds offers and never answers does not starve a busy one on
 * the same agents, with the default flags (offers expire as declines). */
static void test_trust_2_idle_framework_default_expiry(void) {
  ms_test_allocator al = ms_test_allocator_run(dir, "idle-expiry", NULL);
  ms_sim_agent *ags[2];
  for (int i = 0; i < 2; i++)
    ags[i] = agent(&al, "cpus:2;mem:1024", -1);
  ms_sim_framework_options fi = {.name = "idle", .mode = MS_SIM_HOLD};
  ms_sim_framework *idle = framework(&al, &fi);
  WAIT_FW(idle, offers, 2); /* it holds both agents */
  ms_sim_framework_options fb = {
      .name = "busy", .mode = MS_SIM_ACCEPT, .task_resources = "cpus:1;mem:128", .refuse_ms = 0};
  int64_t t0 = ms_time_mono_ms();
  ms_sim_framework *busy = framework(&al, &fb);
  bool ran = ms_sim_framework_wait_stat(busy, offsetof(ms_sim_framework_stats, running), 2, 120000);
  printf("\n  busy framework: %llu tasks running %.1f s after subscribing (idle one: %llu offers, %llu "
         "rescinded)\n",
         (unsigned long long)FW_STAT(busy, running), (double)(ms_time_mono_ms() - t0) / 1000.0,
         (unsigned long long)FW_STAT(idle, offers), (unsigned long long)FW_STAT(idle, rescinds));
  CU_ASSERT(ran);
  CU_ASSERT(FW_STAT(idle, rescinds) >= 1);
  ms_sim_framework_free(busy);
  ms_sim_framework_free(idle);
  for (int i = 0; i < 2; i++)
    ms_sim_agent_free(ags[i]);
  ms_test_allocator_stop(&al);
}

/* Point 2: past --max-offers-per-framework a silent framework gets no more offers; the
 * other agents go to the busy one at once. */
static void test_trust_2_idle_framework_offer_bound(void) {
  const char *extra[] = {"--max-offers-per-framework", "1", NULL};
  ms_test_allocator al = ms_test_allocator_run(dir, "idle-bound", extra);
  ms_sim_agent *ags[3];
  for (int i = 0; i < 3; i++)
    ags[i] = agent(&al, "cpus:2;mem:1024", -1);
  ms_sim_framework_options fi = {.name = "idle", .mode = MS_SIM_HOLD};
  ms_sim_framework *idle = framework(&al, &fi);
  WAIT_FW(idle, offers, 1);
  ms_sim_framework_options fb = {
      .name = "busy", .mode = MS_SIM_ACCEPT, .task_resources = "cpus:2;mem:1024", .refuse_ms = 0};
  ms_sim_framework *busy = framework(&al, &fb);
  WAIT_FW(busy, running, 2); /* the two agents the idle one could not take */
  CU_ASSERT_EQUAL(FW_STAT(idle, offers), 1);
  ms_sim_framework_free(busy);
  ms_sim_framework_free(idle);
  for (int i = 0; i < 3; i++)
    ms_sim_agent_free(ags[i]);
  ms_test_allocator_stop(&al);
}

typedef struct rec_wait {
  ms_sim_framework *f;
  const char *task;
} rec_wait;

static bool reconciled_pred(void *ctx) {
  rec_wait *w = ctx;
  Meseta__V1__TaskStatus *st = ms_sim_framework_reconciled(w->f, w->task);
  if (st)
    protobuf_c_message_free_unpacked(&st->base, NULL);
  return st != NULL;
}

/* The reconciliation answer for task (waited for); its state, -1 if none came. */
static int reconciled(ms_sim_framework *f, const char *task, const char *want_agent) {
  rec_wait w = {f, task};
  if (!ms_sim_wait(reconciled_pred, &w, WAIT_MS))
    return -1;
  Meseta__V1__TaskStatus *st = ms_sim_framework_reconciled(f, task);
  int state = (int)st->state;
  if (want_agent)
    CU_ASSERT(st->agent_id && strcmp(st->agent_id->value, want_agent) == 0);
  CU_ASSERT_EQUAL(st->uuid.len, 0); /* nothing to acknowledge */
  protobuf_c_message_free_unpacked(&st->base, NULL);
  return state;
}

static bool acked_pred(void *ctx) {
  return MS_SIM_AGENT_STAT((ms_sim_agent *)ctx, unacked) == 0;
}

/* Point 3: reconciliation answers a task's last known state: a task that finished but
 * whose update is not acknowledged yet is FINISHED (explicitly and implicitly), and so is
 * a completed (acknowledged) task the allocator remembers; only an unknown one is
 * TASK_UNKNOWN. */
/* A 0 is what the operator asked for: refused where it cannot be honoured (it silently
 * meant the default before: --recovery-timeout 0 waited 30 s), kept where it means "none". */
static void test_zero_flags_not_replaced(void) {
  static const char *const refused[][2] = {{"--max-completed-tasks", "0"},
                                           {"--max-completed-tasks-per-framework", "0"},
                                           {"--max-completed-frameworks", "0"}};
  _cleanup_free_ char *bin = ms_test_binary("services/allocator/meseta-allocator");
  for (size_t i = 0; i < MS_ARRAY_SIZE(refused); i++) {
    const char *argv[] = {bin, "--listen", "127.0.0.1:0", refused[i][0], refused[i][1], NULL};
    ms_error *err = NULL;
    ms_test_proc *p = ms_test_proc_start("alloc-zero", dir, argv, &err);
    CU_ASSERT_PTR_NULL(p);
    _cleanup_free_ char *want = ms_xasprintf("flag `%s`: must be at least 1", refused[i][0]);
    CU_ASSERT(err && strstr(err->msg, want));
    if (err && !strstr(err->msg, want))
      fprintf(stderr, "%s 0: %s\n", refused[i][0], err->msg);
    ms_error_free(err);
    ms_test_proc_free(p);
  }
  ms_test_allocator al = ms_test_allocator_run(
      dir, "alloc-zero-ok",
      (const char *[]){"--recovery-timeout", "0", "--agent-reconnect-timeout", "0", NULL});
  ms_test_allocator_stop(&al);
}

static void test_trust_3_reconcile_last_known_state(void) {
  ms_test_allocator al = ms_test_allocator_run(dir, "reconcile", NULL);
  const char *targets[] = {al.addr, NULL}; /* so it resends what is not acknowledged */
  ms_sim_agent_options ao = {.resources = "cpus:2;mem:1024", .task_ms = 0, .more_targets = targets};
  ms_error *err = NULL;
  ms_sim_agent *a = ms_sim_agent_start(al.addr, &ao, &err);
  MS_ASSERT_OK(a ? 0 : -1, &err);
  ms_sim_framework_options fo = {.name = "rec", .mode = MS_SIM_HOLD, .refuse_ms = 0, .no_status_acks = true};
  ms_sim_framework *f = framework(&al, &fo);
  Meseta__V1__Offer *o = wait_offer(f);
  MS_ASSERT_OK(ms_sim_framework_launch(f, o, "t1", "cpus:1;mem:128", &err), &err);
  free_offer(o);
  WAIT_FW(f, finished, 1);
  const char *aid = ms_sim_agent_id(a);

  const char *one[] = {"t1"};
  MS_ASSERT_OK(ms_sim_framework_reconcile(f, one, 1, &err), &err);
  CU_ASSERT_EQUAL(reconciled(f, "t1", aid), MESETA__V1__TASK_STATE__TASK_FINISHED);
  ms_sim_framework_forget_reconciled(f);
  MS_ASSERT_OK(ms_sim_framework_reconcile(f, NULL, 0, &err), &err);
  CU_ASSERT_EQUAL(reconciled(f, "t1", aid), MESETA__V1__TASK_STATE__TASK_FINISHED);

  /* Acknowledged (the agent resends until then): completed, still answered. */
  ms_sim_framework_set_status_acks(f, true);
  CU_ASSERT_FATAL(ms_sim_wait(acked_pred, a, WAIT_MS));
  ms_sim_framework_forget_reconciled(f);
  const char *two[] = {"t1", "never-launched"};
  MS_ASSERT_OK(ms_sim_framework_reconcile(f, two, 2, &err), &err);
  CU_ASSERT_EQUAL(reconciled(f, "t1", aid), MESETA__V1__TASK_STATE__TASK_FINISHED);
  CU_ASSERT_EQUAL(reconciled(f, "never-launched", NULL), MESETA__V1__TASK_STATE__TASK_UNKNOWN);
  ms_sim_framework_free(f);
  ms_sim_agent_free(a);
  ms_test_allocator_stop(&al);
}

int main(int argc, char **argv) {
  dir = ms_test_tmpdir("test-allocator");
  static const ms_test_case cases[] = {
      {"offers_flow", test_offers_flow},
      {"zero_flags_not_replaced", test_zero_flags_not_replaced},
      {"launch_and_recover", test_launch_and_recover},
      {"drf_two_frameworks", test_drf_two_frameworks},
      {"decline_and_revive", test_decline_and_revive},
      {"offer_timeout", test_offer_timeout},
      {"bad_calls", test_bad_calls},
      {"agent_gone_rescinds", test_agent_gone_rescinds},
      {"agent_away_keeps_tasks", test_agent_away_keeps_tasks},
      {"failover_rescinds_old_offers", test_failover_rescinds_old_offers},
      {"agent_away_too_long_loses_tasks", test_agent_away_too_long_loses_tasks},
      {"operation_finished", test_operation_finished},
      {"operation_failed", test_operation_failed},
      {"trust_2_idle_framework_default_expiry", test_trust_2_idle_framework_default_expiry},
      {"trust_2_idle_framework_offer_bound", test_trust_2_idle_framework_offer_bound},
      {"trust_3_reconcile_last_known_state", test_trust_3_reconcile_last_known_state},
      {NULL, NULL},
  };
  int rc = ms_test_main(argc, argv, "allocator", cases);
  if (rc == 0)
    ms_test_rmtree(dir);
  free(dir);
  return rc;
}
