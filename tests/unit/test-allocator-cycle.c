/* The allocation cycle against hand-computed expectations: DRF (the paper's example),
 * weights, nested roles, guarantees with headroom, limits, reservations, minimum
 * allocatable sizes, region awareness and agent states. */
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

static alloc_model *model(const char *min_alloc, const char *region) {
  alloc_config cfg = {.min_allocatable = min_alloc, .local_region = region, .seed = 42};
  alloc_model *m = NULL;
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_new(&cfg, &m, &err), &err);
  return m;
}

static void agent_full(alloc_model *m, const char *id, const char *res, const char *region,
                       alloc_agent_state state) {
  ms_resources *r = R(res);
  alloc_agent_spec s = {.id = id, .hostname = id, .total = r, .region = region, .state = state};
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_add_agent(m, &s, &err), &err);
  ms_resources_free(r);
}

static void agent(alloc_model *m, const char *id, const char *res) {
  agent_full(m, id, res, NULL, ALLOC_AGENT_ACTIVE);
}

static void framework(alloc_model *m, const char *id, const char *role, uint32_t caps) {
  const char *roles[] = {role};
  alloc_framework_spec s = {.id = id, .roles = roles, .nroles = 1, .capabilities = caps};
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_add_framework(m, &s, &err), &err);
}

static alloc_offer_list cycle(alloc_model *m, int64_t now) {
  alloc_offer_list l = {0};
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_cycle_run(m, now, &l, NULL, &err), &err);
  return l;
}

static uint32_t count_for(const alloc_offer_list *l, const char *fw) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < l->n; i++)
    n += strcmp(l->v[i].framework_id, fw) == 0;
  return n;
}

static double scalar(const ms_resources *r, const char *name) {
  return ms_scalar_to_double(ms_resources_scalar(r, name));
}

static void quantities(ms_quantities *q, const char *name, double v) {
  ms_name id;
  ms_name_intern(name, strlen(name), &id, NULL);
  ms_scalar s;
  ms_scalar_from_double(v, name, &s, NULL);
  ms_quantities_set(q, id, s);
}

/* The DRF paper: 9 CPUs, 18 GB; A's tasks <1 CPU, 4 GB>, B's <3 CPUs, 1 GB>. Each
 * framework launches one task per offer and returns the rest unfiltered. */
static void test_drf_paper(void) {
  alloc_model *m = model("cpus:0.01", NULL);
  agent(m, "a1", "cpus:9;mem:18");
  framework(m, "A", "users", 0);
  framework(m, "B", "users", 0);
  ms_resources *ta = R("cpus:1;mem:4"), *tb = R("cpus:3;mem:1");
  int tasks_a = 0, tasks_b = 0;
  for (int round = 0; round < 20; round++) {
    alloc_offer_list l = cycle(m, round * 1000);
    if (l.n == 0) {
      alloc_offer_list_release(&l);
      break;
    }
    CU_ASSERT_EQUAL(l.n, 1);
    const alloc_offer_view *o = &l.v[0];
    bool is_a = strcmp(o->framework_id, "A") == 0;
    ms_resources *task = is_a ? ta : tb;
    ms_error *err = NULL;
    const char *id = o->id;
    if (ms_resources_contains(o->resources, task)) {
      alloc_accept_op op = {.kind = ALLOC_OP_LAUNCH, .launch = task};
      MS_ASSERT_OK(alloc_model_accept(m, o->framework_id, &id, 1, &op, 1, 0, round * 1000, &err), &err);
      *(is_a ? &tasks_a : &tasks_b) += 1;
    } else {
      MS_ASSERT_OK(alloc_model_decline(m, o->framework_id, id, 0, round * 1000, &err), &err);
      alloc_offer_list_release(&l);
      break;
    }
    alloc_offer_list_release(&l);
  }
  CU_ASSERT_EQUAL(tasks_a, 3);
  CU_ASSERT_EQUAL(tasks_b, 2);
  ms_resources_free(ta);
  ms_resources_free(tb);
  alloc_model_free(m);
}

/* Six equal agents, roles a (weight 2) and b (weight 1): a gets 4, b 2. */
static void test_weights(void) {
  alloc_model *m = model(NULL, NULL);
  for (int i = 0; i < 6; i++) {
    char id[8];
    snprintf(id, sizeof(id), "a%d", i);
    agent(m, id, "cpus:1;mem:100");
  }
  framework(m, "fa", "a", 0);
  framework(m, "fb", "b", 0);
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_set_weight(m, "a", 2.0, &err), &err);
  alloc_offer_list l = cycle(m, 0);
  CU_ASSERT_EQUAL(count_for(&l, "fa"), 4);
  CU_ASSERT_EQUAL(count_for(&l, "fb"), 2);
  alloc_offer_list_release(&l);
  CU_ASSERT_EQUAL(alloc_model_set_weight(m, "a", 0, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
  ms_error_free(err);
  alloc_model_free(m);
}

/* eng/web (two frameworks), eng/api, ops; four equal agents. The tree splits first
 * between eng and ops (2 each), then eng's two between web and api. */
static void test_nested_roles(void) {
  alloc_model *m = model(NULL, NULL);
  for (int i = 0; i < 4; i++) {
    char id[8];
    snprintf(id, sizeof(id), "a%d", i);
    agent(m, id, "cpus:1;mem:100");
  }
  framework(m, "web1", "eng/web", 0);
  framework(m, "web2", "eng/web", 0);
  framework(m, "api", "eng/api", 0);
  framework(m, "ops", "ops", 0);
  alloc_offer_list l = cycle(m, 0);
  CU_ASSERT_EQUAL(count_for(&l, "web1") + count_for(&l, "web2"), 1);
  CU_ASSERT_EQUAL(count_for(&l, "api"), 1);
  CU_ASSERT_EQUAL(count_for(&l, "ops"), 2);
  ms_quantities q = {0};
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_role_allocation(m, "eng", &q, &err), &err);
  CU_ASSERT_EQUAL(ms_quantities_get(&q, MS_NAME_CPUS), 2 * MS_SCALAR_UNIT);
  ms_quantities_release(&q);
  alloc_offer_list_release(&l);
  alloc_model_free(m);
}

/* Role g is guaranteed 2 cpus but its framework is suppressed: the fair-share stage
 * leaves 2 cpus of headroom unoffered. Once g revives, the quota stage gives them. */
static void test_guarantee_headroom(void) {
  alloc_model *m = model("cpus:0.01", NULL);
  for (int i = 0; i < 4; i++) {
    char id[8];
    snprintf(id, sizeof(id), "a%d", i);
    agent(m, id, "cpus:1;mem:100");
  }
  framework(m, "fg", "g", 0);
  framework(m, "fo", "o", 0);
  ms_quantities g = {0};
  quantities(&g, "cpus", 2);
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_set_quota(m, "g", &g, NULL, &err), &err);
  MS_ASSERT_OK(alloc_model_suppress(m, "fg", NULL, &err), &err);
  alloc_offer_list l = cycle(m, 0);
  CU_ASSERT_EQUAL(count_for(&l, "fo"), 2);
  CU_ASSERT_EQUAL(l.n, 2);
  alloc_offer_list_release(&l);
  MS_ASSERT_OK(alloc_model_revive(m, "fg", NULL, &err), &err);
  alloc_cycle_stats st;
  l = (alloc_offer_list){0};
  MS_ASSERT_OK(alloc_cycle_run(m, 1000, &l, &st, &err), &err);
  CU_ASSERT_EQUAL(count_for(&l, "fg"), 2);
  CU_ASSERT_EQUAL(st.quota_offers, 2);
  alloc_offer_list_release(&l);
  /* A guarantee above its limit is refused. */
  ms_quantities lim = {0};
  quantities(&lim, "cpus", 1);
  CU_ASSERT_EQUAL(alloc_model_set_quota(m, "g", &g, &lim, &err), MS_ERR);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "above its limit"));
  ms_error_free(err);
  ms_quantities_release(&g);
  ms_quantities_release(&lim);
  alloc_model_free(m);
}

/* A limit of 1.5 cpus cuts an agent's 4 cpus to 1.5; nothing more in later cycles. */
static void test_limits(void) {
  alloc_model *m = model("cpus:0.01", NULL);
  agent(m, "a0", "cpus:4;mem:100");
  agent(m, "a1", "cpus:4;mem:100");
  framework(m, "f", "l", 0);
  ms_quantities lim = {0};
  quantities(&lim, "cpus", 1.5);
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_set_quota(m, "l", NULL, &lim, &err), &err);
  alloc_offer_list l = cycle(m, 0);
  CU_ASSERT_EQUAL_FATAL(l.n, 1);
  CU_ASSERT_DOUBLE_EQUAL(scalar(l.v[0].resources, "cpus"), 1.5, 1e-9);
  CU_ASSERT_DOUBLE_EQUAL(scalar(l.v[0].resources, "mem"), 100, 1e-9);
  alloc_offer_list_release(&l);
  l = cycle(m, 1000);
  CU_ASSERT_EQUAL(l.n, 0);
  alloc_offer_list_release(&l);
  ms_quantities_release(&lim);
  alloc_model_free(m);
}

/* Reservations go only to their role and its sub-roles, and count toward quota
 * whether allocated or not: with a 2 cpu limit and 2 reserved cpus, the role gets
 * its reservation and no unreserved cpus. */
static void test_reservations_count_toward_quota(void) {
  alloc_model *m = model("cpus:0.01", NULL);
  agent(m, "r0", "cpus(eng):2;mem(eng):64;cpus:4;mem:256");
  framework(m, "ops", "ops", 0);
  framework(m, "web", "eng/web", 0);
  ms_quantities lim = {0};
  quantities(&lim, "cpus", 2);
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_set_quota(m, "eng", NULL, &lim, &err), &err);
  ms_quantities q = {0};
  MS_ASSERT_OK(alloc_model_role_consumption(m, "eng", &q, &err), &err);
  CU_ASSERT_EQUAL(ms_quantities_get(&q, MS_NAME_CPUS), 2 * MS_SCALAR_UNIT);
  alloc_offer_list l = cycle(m, 0);
  CU_ASSERT_EQUAL_FATAL(l.n, 2);
  for (uint32_t i = 0; i < l.n; i++) {
    ms_resources *reserved = ms_resources_reserved(l.v[i].resources, NULL);
    if (strcmp(l.v[i].framework_id, "web") == 0) {
      CU_ASSERT_DOUBLE_EQUAL(scalar(l.v[i].resources, "cpus"), 2, 1e-9); /* the reservation only */
      CU_ASSERT_DOUBLE_EQUAL(scalar(reserved, "cpus"), 2, 1e-9);
    } else {
      CU_ASSERT_DOUBLE_EQUAL(scalar(reserved, "cpus"), 0, 1e-9);
      CU_ASSERT_DOUBLE_EQUAL(scalar(l.v[i].resources, "cpus"), 4, 1e-9);
    }
    ms_resources_free(reserved);
  }
  MS_ASSERT_OK(alloc_model_role_consumption(m, "eng", &q, &err), &err);
  CU_ASSERT_EQUAL(ms_quantities_get(&q, MS_NAME_CPUS), 2 * MS_SCALAR_UNIT);
  ms_quantities_release(&q);
  ms_quantities_release(&lim);
  alloc_offer_list_release(&l);
  alloc_model_free(m);
}

/* A role that reaches its limit on one agent leaves the cycle's walk, yet still gets
 * what is reserved for it on a later agent. */
static void test_limit_then_reserved(void) {
  alloc_model *m = model("cpus:0.01", NULL);
  agent(m, "a0", "cpus:4;mem:100");
  agent(m, "a1", "cpus(eng):2;mem(eng):64");
  framework(m, "web", "eng/web", 0);
  ms_quantities lim = {0};
  quantities(&lim, "cpus", 3);
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_set_quota(m, "eng", NULL, &lim, &err), &err);
  alloc_offer_list l = cycle(m, 0);
  CU_ASSERT_EQUAL_FATAL(l.n, 2);
  CU_ASSERT_DOUBLE_EQUAL(scalar(l.v[0].resources, "cpus"), 1, 1e-9); /* 3 - 2 reserved */
  CU_ASSERT_STRING_EQUAL(l.v[1].agent_id, "a1");
  CU_ASSERT_DOUBLE_EQUAL(scalar(l.v[1].resources, "cpus"), 2, 1e-9);
  alloc_offer_list_release(&l);
  ms_quantities_release(&lim);
  alloc_model_free(m);
}

#define STACK(role2)                                                                                         \
  "[{\"name\":\"cpus\",\"type\":\"SCALAR\",\"scalar\":{\"value\":1},\"reservations\":[{\"type\":\"STATIC\"," \
  "\"role\":\"eng\"}" role2 "]}]"

/* A framework in eng/web refines part of eng's reservation to eng/web: the agent's
 * total changes, the refined cpu counts for eng/web, and only eng/web sees it. */
static void test_refinement(void) {
  alloc_model *m = model("cpus:0.01", NULL);
  agent(m, "r0", "cpus(eng):2;mem(eng):64");
  framework(m, "web", "eng/web", ALLOC_CAP_RESERVATION_REFINEMENT);
  framework(m, "api", "eng/api", 0);
  alloc_offer_list l = cycle(m, 0);
  CU_ASSERT_EQUAL_FATAL(l.n, 1);
  CU_ASSERT_STRING_EQUAL(l.v[0].framework_id, "web");
  ms_operation op = {.type = MS_OP_RESERVE,
                     .resources = R(STACK(",{\"type\":\"DYNAMIC\",\"role\":\"eng/web\"}"))};
  alloc_accept_op aop = {.kind = ALLOC_OP_RESOURCES, .op = &op};
  const char *id = l.v[0].id;
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_accept(m, "web", &id, 1, &aop, 1, 0, 0, &err), &err);
  alloc_offer_list_release(&l);
  ms_quantities q = {0};
  MS_ASSERT_OK(alloc_model_role_consumption(m, "eng/web", &q, &err), &err);
  CU_ASSERT_EQUAL(ms_quantities_get(&q, MS_NAME_CPUS), MS_SCALAR_UNIT);
  MS_ASSERT_OK(alloc_model_role_consumption(m, "eng", &q, &err), &err);
  CU_ASSERT_EQUAL(ms_quantities_get(&q, MS_NAME_CPUS), 2 * MS_SCALAR_UNIT);
  alloc_agent_view v;
  MS_ASSERT_OK(alloc_model_agent(m, "r0", &v, &err), &err);
  ms_resources *refined = ms_resources_reserved(v.total, "eng/web");
  CU_ASSERT_DOUBLE_EQUAL(scalar(refined, "cpus"), 1, 1e-9);
  ms_resources_free(refined);
  /* api (eng/api) may use eng's remaining cpu but never eng/web's. */
  MS_ASSERT_OK(alloc_model_suppress(m, "web", NULL, &err), &err);
  l = cycle(m, 1000);
  CU_ASSERT_EQUAL_FATAL(l.n, 1);
  CU_ASSERT_STRING_EQUAL(l.v[0].framework_id, "api");
  CU_ASSERT_DOUBLE_EQUAL(scalar(l.v[0].resources, "cpus"), 1, 1e-9);
  alloc_offer_list_release(&l);
  ms_operation_release(&op);
  ms_quantities_release(&q);
  alloc_model_free(m);
}

/* Global minimum cpus:1; B's own minimum for its role is mem:32. */
static void test_min_allocatable(void) {
  alloc_model *m = model("cpus:1", NULL);
  agent(m, "a0", "cpus:0.5;mem:64");
  framework(m, "A", "r", 0);
  alloc_offer_list l = cycle(m, 0);
  CU_ASSERT_EQUAL(l.n, 0);
  alloc_offer_list_release(&l);
  const char *roles[] = {"r"};
  alloc_min_override ov = {"r", "mem:32"};
  alloc_framework_spec s = {
      .id = "B", .roles = roles, .nroles = 1, .min_allocatable = &ov, .nmin_allocatable = 1};
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_add_framework(m, &s, &err), &err);
  l = cycle(m, 1000);
  CU_ASSERT_EQUAL(l.n, 1);
  CU_ASSERT_EQUAL(count_for(&l, "B"), 1);
  alloc_offer_list_release(&l);

  alloc_minalloc mn = {0};
  MS_ASSERT_OK(alloc_minalloc_parse("cpus:0.01,mem:32|disk:64", &mn, &err), &err);
  CU_ASSERT_EQUAL(mn.nalts, 2);
  ms_resources *r1 = R("cpus:0.01;mem:31"), *r2 = R("disk:64"), *r3 = R("cpus:1;mem:32");
  CU_ASSERT_FALSE(alloc_minalloc_ok(&mn, r1));
  CU_ASSERT_TRUE(alloc_minalloc_ok(&mn, r2));
  CU_ASSERT_TRUE(alloc_minalloc_ok(&mn, r3));
  alloc_minalloc_release(&mn);
  ms_resources_free(r1);
  ms_resources_free(r2);
  ms_resources_free(r3);
  const char *bad[] = {"cpus", "cpus:x", "cpus:1|", "cpus:1,,mem:2", ":3"};
  for (size_t i = 0; i < MS_ARRAY_SIZE(bad); i++) {
    CU_ASSERT_EQUAL(alloc_minalloc_parse(bad[i], &mn, &err), MS_ERR);
    CU_ASSERT(err && strstr(err->msg, "minimum allocatable"));
    ms_error_free(err);
    err = NULL;
  }
  alloc_model_free(m);
}

/* Agents outside the local region go only to region-aware frameworks. */
static void test_region_awareness(void) {
  alloc_model *m = model(NULL, "us-east");
  agent_full(m, "far", "cpus:1;mem:100", "eu-west", ALLOC_AGENT_ACTIVE);
  framework(m, "plain", "r", 0);
  alloc_offer_list l = cycle(m, 0);
  CU_ASSERT_EQUAL(l.n, 0);
  alloc_offer_list_release(&l);
  framework(m, "aware", "r", ALLOC_CAP_REGION_AWARE);
  agent_full(m, "near", "cpus:1;mem:100", "us-east", ALLOC_AGENT_ACTIVE);
  l = cycle(m, 0);
  CU_ASSERT_EQUAL(l.n, 2);
  for (uint32_t i = 0; i < l.n; i++)
    if (strcmp(l.v[i].agent_id, "far") == 0)
      CU_ASSERT_STRING_EQUAL(l.v[i].framework_id, "aware");
  alloc_offer_list_release(&l);
  alloc_model_free(m);
}

/* Deactivated, draining and in-maintenance agents get nothing new. */
static void test_agent_states(void) {
  alloc_model *m = model(NULL, NULL);
  agent_full(m, "off", "cpus:1;mem:100", NULL, ALLOC_AGENT_DEACTIVATED);
  agent_full(m, "drain", "cpus:1;mem:100", NULL, ALLOC_AGENT_DRAINING);
  ms_resources *r = R("cpus:1;mem:100");
  alloc_agent_spec s = {
      .id = "maint", .total = r, .unavailable_start_ms = 1000, .unavailable_duration_ms = 1000};
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_add_agent(m, &s, &err), &err);
  framework(m, "f", "r", 0);
  alloc_offer_list l = cycle(m, 1500);
  CU_ASSERT_EQUAL(l.n, 0);
  alloc_offer_list_release(&l);
  l = cycle(m, 2000);
  CU_ASSERT_EQUAL(l.n, 1);
  CU_ASSERT_STRING_EQUAL(l.v[0].agent_id, "maint");
  alloc_offer_list_release(&l);
  s.id = "drain";
  s.state = ALLOC_AGENT_ACTIVE;
  MS_ASSERT_OK(alloc_model_update_agent(m, &s, &err), &err);
  l = cycle(m, 1500); /* its new window holds it back too */
  CU_ASSERT_EQUAL(l.n, 0);
  alloc_offer_list_release(&l);
  ms_resources_free(r);
  alloc_model_free(m);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"drf_paper", test_drf_paper},
      {"weights", test_weights},
      {"nested_roles", test_nested_roles},
      {"guarantee_headroom", test_guarantee_headroom},
      {"limits", test_limits},
      {"reservations_count_toward_quota", test_reservations_count_toward_quota},
      {"limit_then_reserved", test_limit_then_reserved},
      {"refinement", test_refinement},
      {"min_allocatable", test_min_allocatable},
      {"region_awareness", test_region_awareness},
      {"agent_states", test_agent_states},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "allocator-cycle", cases);
}
