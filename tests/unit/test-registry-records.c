#include <string.h>

#include "meseta/alloc.h"

#include "registry-records.h"
#include "testlib.h"

#define KIND(x) MESETA__V1__RECORD_KIND__##x

static void expect_invalid(const reg_record *r, const char *needle) {
  ms_error *err = NULL;
  CU_ASSERT_EQUAL(reg_validate(r, &err), MS_ERR);
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
  if (!strstr(err->msg, needle))
    fprintf(stderr, "message `%s` lacks `%s`\n", err->msg, needle);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, needle));
  ms_error_free(err);
}

static void test_agent_rules(void) {
  Meseta__V1__AgentID id = MESETA__V1__AGENT_ID__INIT;
  id.value = "a-1";
  Meseta__V1__AgentInfo info = MESETA__V1__AGENT_INFO__INIT;
  info.id = &id;
  info.hostname = "node1";
  info.port = 5051;
  Meseta__V1__AgentRecord a = MESETA__V1__AGENT_RECORD__INIT;
  a.info = &info;
  a.state = MESETA__V1__AGENT_RECORD__STATE__ADMITTED;
  reg_record r = MESETA__V1__RECORD__INIT;
  r.id = "a-1";
  r.body_case = MESETA__V1__RECORD__BODY_AGENT;
  r.agent = &a;
  ms_error *err = NULL;
  MS_ASSERT_OK(reg_validate(&r, &err), &err);
  CU_ASSERT_EQUAL(reg_record_kind(&r), KIND(AGENT));

  r.id = "a-2";
  expect_invalid(&r, "agent.info.id");
  r.id = "a-1";
  a.state = MESETA__V1__AGENT_RECORD__STATE__UNREACHABLE;
  expect_invalid(&r, "agent.unreachable_time");
  a.state = MESETA__V1__AGENT_RECORD__STATE__STATE_UNKNOWN;
  expect_invalid(&r, "agent.state");
  a.state = MESETA__V1__AGENT_RECORD__STATE__ADMITTED;
  info.hostname = "";
  expect_invalid(&r, "agent.info.hostname");
  info.hostname = "node1";
  a.info = NULL;
  expect_invalid(&r, "agent.info");
}

static void test_quota_and_weight_rules(void) {
  Meseta__V1__Value__Scalar two = MESETA__V1__VALUE__SCALAR__INIT, one = MESETA__V1__VALUE__SCALAR__INIT;
  two.value = 2;
  one.value = 1;
  Meseta__V1__QuotaConfig__GuaranteesEntry g = MESETA__V1__QUOTA_CONFIG__GUARANTEES_ENTRY__INIT;
  g.key = "cpus";
  g.value = &two;
  Meseta__V1__QuotaConfig__LimitsEntry l = MESETA__V1__QUOTA_CONFIG__LIMITS_ENTRY__INIT;
  l.key = "cpus";
  l.value = &one;
  Meseta__V1__QuotaConfig__GuaranteesEntry *gs[] = {&g};
  Meseta__V1__QuotaConfig__LimitsEntry *ls[] = {&l};
  Meseta__V1__QuotaConfig q = MESETA__V1__QUOTA_CONFIG__INIT;
  q.role = "eng/web";
  q.n_guarantees = 1;
  q.guarantees = gs;
  Meseta__V1__QuotaRecord qr = MESETA__V1__QUOTA_RECORD__INIT;
  qr.config = &q;
  reg_record r = MESETA__V1__RECORD__INIT;
  r.id = "eng/web"; /* role ids may hold '/' */
  r.body_case = MESETA__V1__RECORD__BODY_QUOTA;
  r.quota = &qr;
  ms_error *err = NULL;
  MS_ASSERT_OK(reg_validate(&r, &err), &err);
  q.n_limits = 1;
  q.limits = ls;
  expect_invalid(&r, "above its limit");
  one.value = -1;
  expect_invalid(&r, "quota.config.limits[cpus]");
  q.n_limits = 0;
  r.id = "eng//web";
  expect_invalid(&r, "record.id");

  Meseta__V1__WeightInfo w = MESETA__V1__WEIGHT_INFO__INIT;
  w.role = "eng";
  w.weight = 0;
  Meseta__V1__WeightRecord wr = MESETA__V1__WEIGHT_RECORD__INIT;
  wr.weight = &w;
  reg_record rw = MESETA__V1__RECORD__INIT;
  rw.id = "eng";
  rw.body_case = MESETA__V1__RECORD__BODY_WEIGHT;
  rw.weight = &wr;
  expect_invalid(&rw, "positive");
  w.weight = 2.5;
  MS_ASSERT_OK(reg_validate(&rw, &err), &err);
}

static void test_ids_and_body(void) {
  ms_error *err = NULL;
  reg_record r = MESETA__V1__RECORD__INIT;
  r.id = "x";
  expect_invalid(&r, "record.body");
  CU_ASSERT_EQUAL(reg_check_ref(KIND(AGENT), "a/b", "ref", &err), MS_ERR);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "`ref.id`"));
  ms_error_free(TAKE_PTR(err));
  CU_ASSERT_EQUAL(reg_check_ref(KIND(AGENT), "..", "ref", &err), MS_ERR);
  ms_error_free(TAKE_PTR(err));
  CU_ASSERT_EQUAL(reg_check_ref((reg_kind)42, "a", "ref", &err), MS_ERR);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "`ref.kind`"));
  ms_error_free(TAKE_PTR(err));
  CU_ASSERT_EQUAL(reg_check_ref(KIND(FRAMEWORK), "", "ref", &err), MS_ERR);
  ms_error_free(TAKE_PTR(err));
  char long_id[300];
  memset(long_id, 'x', sizeof(long_id) - 1);
  long_id[sizeof(long_id) - 1] = '\0';
  CU_ASSERT_EQUAL(reg_check_ref(KIND(OPERATION), long_id, "ref", &err), MS_ERR);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "limit"));
  ms_error_free(err);
}

static void test_keys(void) {
  _cleanup_free_ char *k = reg_key("/meseta", KIND(QUOTA), "eng/web");
  CU_ASSERT_STRING_EQUAL(k, "/meseta/v1/quota/eng/web");
  reg_kind kind;
  const char *id;
  size_t n;
  CU_ASSERT_TRUE(reg_parse_key("/meseta", k, strlen(k), &kind, &id, &n));
  CU_ASSERT_EQUAL(kind, KIND(QUOTA));
  CU_ASSERT_EQUAL(n, 7);
  CU_ASSERT_EQUAL(memcmp(id, "eng/web", n), 0);
  CU_ASSERT_FALSE(reg_parse_key("/meseta", "/meseta/v1/nope/x", 17, &kind, &id, &n));
  CU_ASSERT_FALSE(reg_parse_key("/other", k, strlen(k), &kind, &id, &n));
  CU_ASSERT_FALSE(reg_parse_key("/meseta", "/meseta/v1/agents/", 18, &kind, &id, &n));
  _cleanup_free_ char *p = reg_kind_prefix("/m", KIND(AGENT));
  CU_ASSERT_STRING_EQUAL(p, "/m/v1/agents/");
}

static void test_page_tokens(void) {
  const char key[] = "/meseta/v1/agents/a\x01z";
  _cleanup_free_ char *t = reg_page_token_encode(42, key, sizeof(key) - 1);
  long long rev;
  char *back = NULL;
  size_t len;
  ms_error *err = NULL;
  MS_ASSERT_OK(reg_page_token_decode(t, &rev, &back, &len, &err), &err);
  CU_ASSERT_EQUAL(rev, 42);
  CU_ASSERT_EQUAL(len, sizeof(key) - 1);
  CU_ASSERT_EQUAL(memcmp(back, key, len), 0);
  free(back);
  const char *bad[] = {"", "42", "42.", "x.00", "-1.00", "42.0", "42.zz"};
  for (size_t i = 0; i < MS_ARRAY_SIZE(bad); i++) {
    CU_ASSERT_EQUAL(reg_page_token_decode(bad[i], &rev, &back, &len, &err), MS_ERR);
    CU_ASSERT_TRUE(err && strstr(err->msg, "page_token"));
    ms_error_free(TAKE_PTR(err));
  }
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"agent_rules", test_agent_rules},   {"quota_and_weight_rules", test_quota_and_weight_rules},
      {"ids_and_body", test_ids_and_body}, {"keys", test_keys},
      {"page_tokens", test_page_tokens},   {NULL, NULL},
  };
  return ms_test_main(argc, argv, "registry-records", cases);
}
