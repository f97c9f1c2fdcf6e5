/* Offers over time: filters, suppress / revive, timeouts, bad calls that must change
 * nothing, the random sorter's weighting, and random-sequence invariants. */
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/resources-io.h"

#include "alloc-cycle.h"
#include "alloc-model.h"
#include "testlib.h"

static ms_resources *R(const char *text) {
  ms_error *err = NULL;
  ms_resources *r = NULL;
  MS_ASSERT_OK(ms_resources_parse_text(text, NULL, &r, &err), &err);
  return r;
}

static uint32_t rescinded;
static void on_rescind(void *ctx, const alloc_offer_view *o) {
  (void)ctx;
  (void)o;
  rescinded++;
}

static alloc_model *model_with(alloc_sorter_kind roles, int64_t timeout_ms, uint64_t seed) {
  alloc_config cfg = {
      .role_sorter = roles, .seed = seed, .offer_timeout_ms = timeout_ms, .on_rescind = on_rescind};
  alloc_model *m = NULL;
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_new(&cfg, &m, &err), &err);
  return m;
}

static void agent(alloc_model *m, const char *id, const char *res) {
  ms_resources *r = R(res);
  alloc_agent_spec s = {.id = id, .hostname = id, .total = r};
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_add_agent(m, &s, &err), &err);
  ms_resources_free(r);
}

static void framework(alloc_model *m, const char *id, const char *role) {
  const char *roles[] = {role};
  alloc_framework_spec s = {.id = id, .roles = roles, .nroles = 1};
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_add_framework(m, &s, &err), &err);
}

static alloc_offer_list cycle(alloc_model *m, int64_t now) {
  alloc_offer_list l = {0};
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_cycle_run(m, now, &l, NULL, &err), &err);
  return l;
}

/* Declines one offer (the only one expected) and returns nothing. */
static void decline_only(alloc_model *m, int64_t now, int64_t refuse_ms) {
  alloc_offer_list l = cycle(m, now);
  CU_ASSERT_EQUAL_FATAL(l.n, 1);
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_decline(m, l.v[0].framework_id, l.v[0].id, refuse_ms, now, &err), &err);
  alloc_offer_list_release(&l);
}

static uint32_t offers_at(alloc_model *m, int64_t now) {
  alloc_offer_list l = cycle(m, now);
  uint32_t n = l.n;
  alloc_offer_list_release(&l);
  return n;
}

static void test_filters(void) {
  alloc_model *m = model_with(ALLOC_SORTER_DRF, 0, 1);
  agent(m, "a0", "cpus:2;mem:100");
  framework(m, "f", "r");
  decline_only(m, 0, 10000);
  CU_ASSERT_EQUAL(offers_at(m, 9999), 0);
  ms_error *err = NULL;
  alloc_offer_list l = cycle(m, 10000);
  CU_ASSERT_EQUAL_FATAL(l.n, 1);
  /* Default refusal: 5 s. */
  MS_ASSERT_OK(alloc_model_decline(m, "f", l.v[0].id, -1, 10000, &err), &err);
  alloc_offer_list_release(&l);
  CU_ASSERT_EQUAL(offers_at(m, 14999), 0);
  l = cycle(m, 15000);
  CU_ASSERT_EQUAL_FATAL(l.n, 1);
  /* Ten years is capped at one. */
  MS_ASSERT_OK(alloc_model_decline(m, "f", l.v[0].id, 10LL * 365 * 86400 * 1000, 15000, &err), &err);
  alloc_offer_list_release(&l);
  CU_ASSERT_EQUAL(offers_at(m, 15000 + 364LL * 86400 * 1000), 0);
  CU_ASSERT_EQUAL(offers_at(m, 15000 + 365LL * 86400 * 1000), 1);
  alloc_model_free(m);
}

/* A filter holds back the refused resources or less, not more. */
static void test_filter_grows(void) {
  alloc_model *m = model_with(ALLOC_SORTER_DRF, 0, 1);
  agent(m, "a0", "cpus:2;mem:100");
  framework(m, "f", "r");
  framework(m, "g", "r");
  ms_error *err = NULL;
  ms_resources *half = R("cpus:1;mem:50");
  MS_ASSERT_OK(alloc_model_allocate(m, "g", "a0", "r", half, &err), &err);
  MS_ASSERT_OK(alloc_model_suppress(m, "g", NULL, &err), &err);
  decline_only(m, 0, 60000); /* f refuses cpus:1;mem:50 */
  CU_ASSERT_EQUAL(offers_at(m, 1000), 0);
  MS_ASSERT_OK(alloc_model_recover(m, "g", "a0", "r", half, &err), &err);
  CU_ASSERT_EQUAL(offers_at(m, 2000), 1); /* now cpus:2;mem:100, more than refused */
  ms_resources_free(half);
  alloc_model_free(m);
}

static void test_suppress_revive(void) {
  alloc_model *m = model_with(ALLOC_SORTER_DRF, 0, 1);
  agent(m, "a0", "cpus:2;mem:100");
  const char *roles[] = {"x", "y"};
  alloc_framework_spec s = {.id = "f", .roles = roles, .nroles = 2};
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_add_framework(m, &s, &err), &err);
  MS_ASSERT_OK(alloc_model_suppress(m, "f", NULL, &err), &err);
  CU_ASSERT_EQUAL(offers_at(m, 0), 0);
  MS_ASSERT_OK(alloc_model_revive(m, "f", "y", &err), &err);
  CU_ASSERT_TRUE(alloc_model_take_trigger(m));
  alloc_offer_list l = cycle(m, 0);
  CU_ASSERT_EQUAL_FATAL(l.n, 1);
  CU_ASSERT_STRING_EQUAL(l.v[0].role, "y");
  MS_ASSERT_OK(alloc_model_decline(m, "f", l.v[0].id, 3600000, 0, &err), &err);
  alloc_offer_list_release(&l);
  CU_ASSERT_EQUAL(offers_at(m, 1000), 0);
  MS_ASSERT_OK(alloc_model_revive(m, "f", NULL, &err), &err); /* clears the filter too */
  CU_ASSERT_EQUAL(offers_at(m, 2000), 1);
  CU_ASSERT_EQUAL(alloc_model_suppress(m, "f", "z", &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
  ms_error_free(err);
  alloc_model_free(m);
}

static void test_timeout_and_rescind(void) {
  alloc_model *m = model_with(ALLOC_SORTER_DRF, 30000, 1);
  agent(m, "a0", "cpus:2;mem:100");
  agent(m, "a1", "cpus:2;mem:100");
  framework(m, "f", "r");
  rescinded = 0;
  CU_ASSERT_EQUAL(offers_at(m, 0), 2);
  CU_ASSERT_EQUAL(alloc_model_expire_offers(m, 29999), 0);
  CU_ASSERT_EQUAL(alloc_model_expire_offers(m, 30000), 2);
  CU_ASSERT_EQUAL(rescinded, 2);
  CU_ASSERT_EQUAL(alloc_model_offer_count(m), 0);
  /* An expired offer holds the framework back for 5 s (the sweep ends the hold). */
  CU_ASSERT_EQUAL(offers_at(m, 30000), 0);
  CU_ASSERT_EQUAL(alloc_model_expire_offers(m, 35000), 0);
  CU_ASSERT_EQUAL(offers_at(m, 35000), 2);
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_remove_agent(m, "a1", &err), &err);
  CU_ASSERT_EQUAL(rescinded, 3);
  MS_ASSERT_OK(alloc_model_remove_framework(m, "f", &err), &err);
  CU_ASSERT_EQUAL(alloc_model_offer_count(m), 0);
  alloc_agent_view v;
  MS_ASSERT_OK(alloc_model_agent(m, "a0", &v, &err), &err);
  CU_ASSERT_TRUE(ms_resources_equal(v.available, v.total));
  alloc_model_free(m);
}

static void expect(int rc, ms_error **err, ms_status code, const char *needle) {
  CU_ASSERT_EQUAL(rc, MS_ERR);
  CU_ASSERT_PTR_NOT_NULL_FATAL(*err);
  CU_ASSERT_EQUAL((*err)->code, code);
  if (!strstr((*err)->msg, needle))
    fprintf(stderr, "message `%s` lacks `%s`\n", (*err)->msg, needle);
  CU_ASSERT_PTR_NOT_NULL(strstr((*err)->msg, needle));
  ms_error_free(*err);
  *err = NULL;
}

/* Unknown framework, a used offer, resources not in the offer, another's offer, and a
 * reservation over quota: each refused with a clear error, nothing changed. */
static void test_bad_calls(void) {
  alloc_model *m = model_with(ALLOC_SORTER_DRF, 0, 1);
  agent(m, "a0", "cpus:4;mem:100");
  framework(m, "f", "r");
  framework(m, "g", "s");
  {
    ms_error *e0 = NULL;
    MS_ASSERT_OK(alloc_model_suppress(m, "g", NULL, &e0), &e0);
  }
  alloc_offer_list l = cycle(m, 0);
  CU_ASSERT_EQUAL_FATAL(l.n, 1);
  char *id = ms_xstrdup(l.v[0].id);
  alloc_offer_list_release(&l);
  const char *ids[] = {id};
  ms_error *err = NULL;
  expect(alloc_model_decline(m, "nobody", id, 0, 0, &err), &err, MS_NOT_FOUND, "framework `nobody`");
  expect(alloc_model_decline(m, "g", id, 0, 0, &err), &err, MS_INVALID_ARGUMENT, "was made to framework `f`");
  ms_resources *too_much = R("cpus:5"), *task = R("cpus:1;mem:10");
  alloc_accept_op launch = {.kind = ALLOC_OP_LAUNCH, .launch = too_much};
  expect(alloc_model_accept(m, "f", ids, 1, &launch, 1, 0, 0, &err), &err, MS_FAILED_PRECONDITION,
         "operation 0 (LAUNCH)");
  ms_operation op = {.type = MS_OP_RESERVE,
                     .resources = R("[{\"name\":\"cpus\",\"type\":\"SCALAR\",\"scalar\":"
                                    "{\"value\":9},\"reservations\":[{\"type\":"
                                    "\"DYNAMIC\",\"role\":\"r\"}]}]")};
  alloc_accept_op ops[] = {{.kind = ALLOC_OP_LAUNCH, .launch = task},
                           {.kind = ALLOC_OP_RESOURCES, .op = &op}};
  expect(alloc_model_accept(m, "f", ids, 1, ops, 2, 0, 0, &err), &err, MS_FAILED_PRECONDITION,
         "operation 1 (RESERVE)");
  /* Still outstanding, untouched. */
  alloc_offer_view v;
  MS_ASSERT_OK(alloc_model_offer(m, id, &v, &err), &err);
  CU_ASSERT_EQUAL(ms_resources_scalar(v.resources, "cpus"), 4 * MS_SCALAR_UNIT);
  alloc_agent_view av;
  MS_ASSERT_OK(alloc_model_agent(m, "a0", &av, &err), &err);
  CU_ASSERT_TRUE(ms_resources_is_empty(av.available));
  MS_ASSERT_OK(alloc_model_accept(m, "f", ids, 1, ops, 1, 0, 0, &err), &err);
  expect(alloc_model_accept(m, "f", ids, 1, ops, 1, 0, 0, &err), &err, MS_NOT_FOUND, "not outstanding");
  expect(alloc_model_recover(m, "f", "a0", "r", too_much, &err), &err, MS_FAILED_PRECONDITION,
         "does not use");
  expect(alloc_model_allocate(m, "f", "nowhere", "r", task, &err), &err, MS_NOT_FOUND, "agent `nowhere`");

  /* Quota: r may hold 2 cpus; 1 is in use, so reserving 2 more is refused. */
  ms_quantities lim = {0};
  ms_quantities_set(&lim, MS_NAME_CPUS, 2 * MS_SCALAR_UNIT);
  MS_ASSERT_OK(alloc_model_set_quota(m, "r", NULL, &lim, &err), &err);
  ms_operation res2 = {.type = MS_OP_RESERVE,
                       .resources = R("[{\"name\":\"cpus\",\"type\":\"SCALAR\",\"scalar\":"
                                      "{\"value\":2},\"reservations\":[{\"type\":"
                                      "\"DYNAMIC\",\"role\":\"r\"}]}]")};
  MS_ASSERT_OK(alloc_model_agent(m, "a0", &av, &err), &err);
  ms_resources *before = ms_resources_clone(av.total);
  expect(alloc_model_apply_operator(m, "a0", &res2, &err), &err, MS_RESOURCE_EXHAUSTED,
         "over its quota limit");
  MS_ASSERT_OK(alloc_model_agent(m, "a0", &av, &err), &err);
  CU_ASSERT_TRUE(ms_resources_equal(before, av.total));
  ms_quantities_set(&lim, MS_NAME_CPUS, 3 * MS_SCALAR_UNIT);
  MS_ASSERT_OK(alloc_model_set_quota(m, "r", NULL, &lim, &err), &err);
  MS_ASSERT_OK(alloc_model_apply_operator(m, "a0", &res2, &err), &err);
  ms_quantities q = {0};
  MS_ASSERT_OK(alloc_model_role_consumption(m, "r", &q, &err), &err);
  CU_ASSERT_EQUAL(ms_quantities_get(&q, MS_NAME_CPUS), 3 * MS_SCALAR_UNIT);
  ms_quantities_release(&q);
  ms_quantities_release(&lim);
  ms_operation_release(&res2);
  ms_operation_release(&op);
  ms_resources_free(before);
  ms_resources_free(too_much);
  ms_resources_free(task);
  free(id);
  alloc_model_free(m);
}

/* Roles a (weight 3) and b (weight 1) under the random sorter, one agent: a comes first
 * about 75% of the time. 4000 draws: the standard error is 0.7%, the margin 3%. */
static void test_random_sorter_weights(void) {
  alloc_model *m = model_with(ALLOC_SORTER_RANDOM, 0, 7);
  agent(m, "a0", "cpus:1;mem:100");
  framework(m, "fa", "a");
  framework(m, "fb", "b");
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_set_weight(m, "a", 3, &err), &err);
  int wins = 0, n = 4000;
  for (int i = 0; i < n; i++) {
    alloc_offer_list l = cycle(m, i);
    CU_ASSERT_EQUAL_FATAL(l.n, 1);
    wins += strcmp(l.v[0].framework_id, "fa") == 0;
    MS_ASSERT_OK(alloc_model_rescind(m, l.v[0].id, &err), &err);
    alloc_offer_list_release(&l);
  }
  double p = (double)wins / n;
  CU_ASSERT(p > 0.72 && p < 0.78);
  /* The bare order: weights 1, 2, 7 come first 10%, 20%, 70% of the time. */
  alloc_rng rng = {99};
  uint32_t ids[] = {0, 1, 2}, out[3], first[3] = {0};
  double w[] = {1, 2, 7};
  alloc_slot keys[3];
  for (int i = 0; i < 20000; i++) {
    alloc_random_order(ids, w, 3, &rng, keys, out);
    first[out[0]]++;
  }
  CU_ASSERT(first[0] > 1700 && first[0] < 2300);
  CU_ASSERT(first[1] > 3600 && first[1] < 4400);
  CU_ASSERT(first[2] > 13400 && first[2] < 14600);
  alloc_model_free(m);
}

/* Random agents, roles, quotas and reservations; random accepts, declines, recovers and
 * removals over many cycles. After each cycle: offers never exceed an agent's total,
 * offered + available fit in the total, each agent's offers add up to its offered,
 * and no offer id is handed out twice. */
typedef struct seen {
  char **ids;
  uint32_t n, cap;
} seen;

static void sum_offers(void *ctx, const alloc_offer_view *o) {
  ms_resources **sums = ctx;
  int idx = (int)strtol(o->agent_id + 1, NULL, 10);
  ms_resources_add(sums[idx], o->resources, NULL);
}

static void test_invariants(void) {
  enum { NA = 24, NF = 12, ROUNDS = 60 };
  alloc_model *m = model_with(ALLOC_SORTER_DRF, 0, 3);
  srand(12345);
  static const char *roles[] = {"a", "a/x", "a/y", "b", "c/d/e"};
  char name[16];
  for (int i = 0; i < NA; i++) {
    snprintf(name, sizeof(name), "a%d", i);
    char text[160];
    snprintf(text, sizeof(text), "cpus:%d;mem:%d;disk:%d;cpus(%s):%d;ports:[31000-31010]", 1 + rand() % 8,
             64 + rand() % 4096, rand() % 1000, roles[rand() % 5], 1 + rand() % 2);
    agent(m, name, text);
  }
  for (int i = 0; i < NF; i++) {
    snprintf(name, sizeof(name), "f%d", i);
    framework(m, name, roles[rand() % 5]);
  }
  ms_quantities g = {0}, l = {0};
  ms_quantities_set(&g, MS_NAME_CPUS, 6 * MS_SCALAR_UNIT);
  ms_quantities_set(&l, MS_NAME_CPUS, 12 * MS_SCALAR_UNIT);
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_set_quota(m, "a", &g, &l, &err), &err);
  MS_ASSERT_OK(alloc_model_set_quota(m, "b", &g, NULL, &err), &err);
  seen s = {0};
  for (int round = 0; round < ROUNDS; round++) {
    int64_t now = round * 1000;
    alloc_offer_list ol = cycle(m, now);
    for (uint32_t i = 0; i < ol.n; i++) {
      for (uint32_t k = 0; k < s.n; k++)
        CU_ASSERT(strcmp(s.ids[k], ol.v[i].id) != 0);
      if (s.n == s.cap) {
        s.cap = s.cap ? s.cap * 2 : 64;
        s.ids = realloc(s.ids, s.cap * sizeof(*s.ids));
      }
      s.ids[s.n++] = ms_xstrdup(ol.v[i].id);
    }
    ms_resources *sums[NA];
    for (int i = 0; i < NA; i++)
      sums[i] = ms_resources_new();
    alloc_model_each_offer(m, sum_offers, sums);
    for (int i = 0; i < NA; i++) {
      snprintf(name, sizeof(name), "a%d", i);
      alloc_agent_view v;
      MS_ASSERT_OK(alloc_model_agent(m, name, &v, &err), &err);
      CU_ASSERT_TRUE(ms_resources_equal(sums[i], v.offered));
      ms_resources *both = ms_resources_clone(v.available);
      ms_resources_add(both, v.offered, NULL);
      CU_ASSERT_TRUE(ms_resources_contains(v.total, both));
      ms_resources_free(both);
      ms_resources_free(sums[i]);
    }
    /* Act on this round's offers. */
    for (uint32_t i = 0; i < ol.n; i++) {
      const char *id = ol.v[i].id;
      int what = rand() % 3;
      if (what == 0) {
        MS_ASSERT_OK(alloc_model_decline(m, ol.v[i].framework_id, id, rand() % 4000, now, &err), &err);
      } else if (what == 1) {
        ms_resources *task = ms_resources_unreserved(ol.v[i].resources);
        ms_resources *cpus = ms_resources_named(task, "cpus");
        alloc_accept_op op = {.kind = ALLOC_OP_LAUNCH, .launch = cpus};
        MS_ASSERT_OK(alloc_model_accept(m, ol.v[i].framework_id, &id, 1, &op, 1, 0, now, &err), &err);
        ms_resources_free(task);
        ms_resources_free(cpus);
      }
    }
    alloc_offer_list_release(&ol);
    if (round % 7 == 6) { /* every framework's tasks end */
      for (int i = 0; i < NF; i++) {
        snprintf(name, sizeof(name), "f%d", i);
        MS_ASSERT_OK(alloc_model_remove_framework(m, name, &err), &err);
        framework(m, name, roles[rand() % 5]);
      }
    }
  }
  for (uint32_t k = 0; k < s.n; k++)
    free(s.ids[k]);
  free(s.ids);
  ms_quantities_release(&g);
  ms_quantities_release(&l);
  alloc_model_free(m);
}

/* Issue 12 point 2: an offer nobody answers expires as a decline, so the resources go
 * to the framework that is not silent; and a framework holding its bound of offers gets
 * no more until it answers. */
static void test_trust_2_idle_framework_offers(void) {
  alloc_model *m = model_with(ALLOC_SORTER_DRF, 30000, 1);
  agent(m, "a0", "cpus:2;mem:100");
  framework(m, "idle", "r");
  CU_ASSERT_EQUAL(offers_at(m, 0), 1);
  framework(m, "busy", "r");
  CU_ASSERT_EQUAL(offers_at(m, 1000), 0); /* the idle one holds the agent */
  CU_ASSERT_EQUAL(alloc_model_expire_offers(m, 30000), 1);
  alloc_offer_list l = cycle(m, 30000);
  CU_ASSERT_EQUAL_FATAL(l.n, 1);
  CU_ASSERT_STRING_EQUAL(l.v[0].framework_id, "busy");
  alloc_offer_list_release(&l);
  alloc_model_free(m);

  alloc_config cfg = {.seed = 1, .max_offers_per_framework = 2};
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_new(&cfg, &m, &err), &err);
  for (int i = 0; i < 4; i++) {
    char id[8];
    snprintf(id, sizeof(id), "a%d", i);
    agent(m, id, "cpus:2;mem:100");
  }
  framework(m, "idle", "r");
  l = cycle(m, 0);
  CU_ASSERT_EQUAL_FATAL(l.n, 2); /* its bound */
  char *held = ms_xstrdup(l.v[0].id);
  alloc_offer_list_release(&l);
  framework(m, "busy", "r");
  l = cycle(m, 1000);
  CU_ASSERT_EQUAL_FATAL(l.n, 2);
  CU_ASSERT_STRING_EQUAL(l.v[0].framework_id, "busy");
  CU_ASSERT_STRING_EQUAL(l.v[1].framework_id, "busy");
  alloc_offer_list_release(&l);
  /* Answering one gives room for one more. */
  MS_ASSERT_OK(alloc_model_decline(m, "idle", held, 0, 2000, &err), &err);
  free(held);
  l = cycle(m, 2000);
  CU_ASSERT_EQUAL_FATAL(l.n, 1);
  CU_ASSERT_STRING_EQUAL(l.v[0].framework_id, "idle");
  alloc_offer_list_release(&l);
  CU_ASSERT_EQUAL(offers_at(m, 3000), 0);
  alloc_model_free(m);
}

/* The service's expiry timer then a cycle, at `now`: how many offers were made. */
static uint32_t tick(alloc_model *m, int64_t now) {
  alloc_model_expire_offers(m, now);
  return offers_at(m, now);
}

/* Issue 12 point 2: a framework that lets its offers expire is held back from every
 * agent for 5 s, then 10 s, 20 s ... capped at 5 min; any answer resets the run. */
static void test_trust_2_expiry_backoff(void) {
  alloc_model *m = model_with(ALLOC_SORTER_DRF, 30000, 1);
  agent(m, "a0", "cpus:2;mem:100");
  framework(m, "idle", "r");
  CU_ASSERT_EQUAL(tick(m, 0), 1);
  int64_t t = 0, hold = 5000;
  for (int i = 0; i < 9; i++) { /* 5, 10, 20, 40, 80, 160, 300, 300, 300 s */
    t += 30000;
    CU_ASSERT_EQUAL(alloc_model_expire_offers(m, t), 1);
    CU_ASSERT_EQUAL(tick(m, t + hold - 1), 0);
    t += hold;
    CU_ASSERT_EQUAL_FATAL(tick(m, t), 1);
    hold = hold * 2 > 300000 ? 300000 : hold * 2;
  }
  /* A decline, even of an offer that is gone, ends the run: the next expiry costs 5 s. */
  alloc_offer_list l = cycle(m, t); /* nothing new: it holds the agent */
  CU_ASSERT_EQUAL(l.n, 0);
  alloc_offer_list_release(&l);
  ms_error *err = NULL;
  CU_ASSERT_EQUAL(alloc_model_decline(m, "idle", "o-0", 0, t, &err), MS_ERR); /* not its offer */
  ms_error_free(err);
  err = NULL;
  t += 30000;
  CU_ASSERT_EQUAL(alloc_model_expire_offers(m, t), 1);
  CU_ASSERT_EQUAL(tick(m, t + 4999), 0);
  CU_ASSERT_EQUAL(tick(m, t + 5000), 1);
  alloc_model_free(m);
}

/* A revive, a suppress and an accept each lift the hold at once; a held framework is
 * out of every agent, not only the one whose offer expired. */
static void test_trust_2_expiry_backoff_answers(void) {
  alloc_model *m = model_with(ALLOC_SORTER_DRF, 30000, 1);
  agent(m, "a0", "cpus:2;mem:100");
  framework(m, "idle", "r"); /* first: DRF ties go to it */
  framework(m, "busy", "r");
  alloc_offer_list l = cycle(m, 0);
  CU_ASSERT_EQUAL_FATAL(l.n, 1);
  CU_ASSERT_STRING_EQUAL(l.v[0].framework_id, "idle");
  alloc_offer_list_release(&l);
  CU_ASSERT_EQUAL(alloc_model_expire_offers(m, 30000), 1);
  /* A second agent comes: the held framework (share 0, first) does not get it. */
  agent(m, "a1", "cpus:2;mem:100");
  l = cycle(m, 30000);
  CU_ASSERT_EQUAL_FATAL(l.n, 2);
  CU_ASSERT_STRING_EQUAL(l.v[0].framework_id, "busy");
  CU_ASSERT_STRING_EQUAL(l.v[1].framework_id, "busy");
  ms_error *err = NULL;
  for (uint32_t i = 0; i < l.n; i++)
    MS_ASSERT_OK(alloc_model_decline(m, "busy", l.v[i].id, ALLOC_MAX_REFUSE_MS, 30000, &err), &err);
  alloc_offer_list_release(&l);
  CU_ASSERT_EQUAL(offers_at(m, 31000), 0); /* idle held, busy filtered */
  MS_ASSERT_OK(alloc_model_revive(m, "idle", NULL, &err), &err);
  l = cycle(m, 31000);
  CU_ASSERT_EQUAL_FATAL(l.n, 2);
  CU_ASSERT_STRING_EQUAL(l.v[0].framework_id, "idle");
  /* Accepting (launching part of) one offer is an answer too. */
  ms_resources *use = R("cpus:1;mem:10");
  alloc_accept_op op = {.kind = ALLOC_OP_LAUNCH, .launch = use};
  const char *ids[1];
  alloc_offer_list_release(&l);
  CU_ASSERT_EQUAL(alloc_model_expire_offers(m, 61000), 2); /* a run of one (one sweep) */
  CU_ASSERT_EQUAL(tick(m, 65999), 0);
  CU_ASSERT_EQUAL(tick(m, 66000), 2);
  CU_ASSERT_EQUAL(alloc_model_expire_offers(m, 96000), 2); /* second: 10 s */
  CU_ASSERT_EQUAL(tick(m, 96000), 0);
  MS_ASSERT_OK(alloc_model_suppress(m, "idle", NULL, &err), &err);
  MS_ASSERT_OK(alloc_model_revive(m, "idle", NULL, &err), &err);
  l = cycle(m, 97000);
  CU_ASSERT_EQUAL_FATAL(l.n, 2);
  char *gone = ms_xstrdup(l.v[0].id);
  alloc_offer_list_release(&l);
  CU_ASSERT_EQUAL(alloc_model_expire_offers(m, 127000), 2);
  /* The expired offer cannot be accepted, but the late answer ends the run. */
  ids[0] = gone;
  CU_ASSERT_EQUAL(alloc_model_accept(m, "idle", ids, 1, &op, 1, -1, 127500, &err), MS_ERR);
  ms_error_free(err);
  err = NULL;
  free(gone);
  l = cycle(m, 127500);
  CU_ASSERT_EQUAL_FATAL(l.n, 2);
  ids[0] = l.v[0].id;
  MS_ASSERT_OK(alloc_model_accept(m, "idle", ids, 1, &op, 1, 0, 128000, &err), &err);
  alloc_offer_list_release(&l);
  CU_ASSERT_EQUAL(alloc_model_expire_offers(m, 157500), 1); /* the run starts again: 5 s */
  CU_ASSERT_EQUAL(tick(m, 162499), 0);
  CU_ASSERT_EQUAL(tick(m, 162500), 2); /* what the task left on a0, and a1 */
  ms_resources_free(use);
  alloc_model_free(m);
}

/* With --max-silent-frameworks 1, frameworks that have not answered take turns: a crowd
 * of them cannot take the agents from one that answers, ranked first by DRF (share 0)
 * as they are; a turn ends at the framework's first answer or when its offers expire. */
static void test_trust_2_expiry_backoff_silent_slots(void) {
  alloc_config cfg = {.seed = 1, .offer_timeout_ms = 30000, .max_silent_frameworks = 1};
  alloc_model *m = NULL;
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_new(&cfg, &m, &err), &err);
  for (int i = 0; i < 3; i++) {
    char id[8];
    snprintf(id, sizeof(id), "a%d", i);
    agent(m, id, "cpus:2;mem:100");
  }
  framework(m, "batch", "r");
  alloc_offer_list l = cycle(m, 0);
  CU_ASSERT_EQUAL_FATAL(l.n, 3);
  for (uint32_t i = 0; i < l.n; i++)
    MS_ASSERT_OK(alloc_model_decline(m, "batch", l.v[i].id, ALLOC_MAX_REFUSE_MS, 0, &err), &err);
  alloc_offer_list_release(&l);
  for (int i = 0; i < 5; i++) {
    char id[8];
    snprintf(id, sizeof(id), "idle%d", i);
    framework(m, id, "r");
  }
  l = cycle(m, 1000); /* the batch filtered: the first silent one's turn, alone */
  CU_ASSERT_EQUAL_FATAL(l.n, 3);
  for (uint32_t i = 0; i < l.n; i++)
    CU_ASSERT_STRING_EQUAL(l.v[i].framework_id, "idle0");
  alloc_offer_list_release(&l);
  MS_ASSERT_OK(alloc_model_revive(m, "batch", NULL, &err), &err);
  CU_ASSERT_EQUAL(alloc_model_expire_offers(m, 31000), 3);
  l = cycle(m, 31000); /* idle0 held; the next turn is idle1's; the batch gets the rest */
  CU_ASSERT_EQUAL_FATAL(l.n, 3);
  const char *idle_offer = NULL;
  uint32_t to_batch = 0;
  for (uint32_t i = 0; i < l.n; i++) {
    if (strcmp(l.v[i].framework_id, "batch") == 0) {
      to_batch++;
      continue;
    }
    CU_ASSERT_STRING_EQUAL(l.v[i].framework_id, "idle1");
    idle_offer = l.v[i].id;
  }
  CU_ASSERT_EQUAL(to_batch, 2);
  CU_ASSERT_PTR_NOT_NULL_FATAL(idle_offer);
  /* idle1 answers: its turn ends, idle2's begins. */
  MS_ASSERT_OK(alloc_model_decline(m, "idle1", idle_offer, ALLOC_MAX_REFUSE_MS, 32000, &err), &err);
  alloc_offer_list_release(&l);
  l = cycle(m, 32000);
  CU_ASSERT_EQUAL_FATAL(l.n, 1);
  CU_ASSERT_STRING_EQUAL(l.v[0].framework_id, "idle2");
  alloc_offer_list_release(&l);
  alloc_model_free(m);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"filters", test_filters},
      {"filter_grows", test_filter_grows},
      {"suppress_revive", test_suppress_revive},
      {"timeout_and_rescind", test_timeout_and_rescind},
      {"bad_calls", test_bad_calls},
      {"random_sorter_weights", test_random_sorter_weights},
      {"invariants", test_invariants},
      {"trust_2_idle_framework_offers", test_trust_2_idle_framework_offers},
      {"trust_2_expiry_backoff", test_trust_2_expiry_backoff},
      {"trust_2_expiry_backoff_answers", test_trust_2_expiry_backoff_answers},
      {"trust_2_expiry_backoff_silent_slots", test_trust_2_expiry_backoff_silent_slots},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "allocator-offers", cases);
}
