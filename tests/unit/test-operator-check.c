/* ms_operator_check: the stateless checks master-api and the allocator share. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/operator-check.h"
#include "meseta/v1/operator.pb-c.h"

#include "google/protobuf/timestamp.pb-c.h"
#include "testlib.h"

static void expect(const ProtobufCMessage *req, const char *needle) {
  ms_error *err = NULL;
  int rc = ms_operator_check(req, &err);
  if (!needle) {
    if (rc < 0)
      fprintf(stderr, "%s: unexpected: %s\n", req->descriptor->name, err->msg);
    CU_ASSERT_EQUAL(rc, 0);
    ms_error_free(err);
    return;
  }
  CU_ASSERT_EQUAL(rc, MS_ERR);
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
  if (!strstr(err->msg, needle))
    fprintf(stderr, "got \"%s\", want \"...%s...\"\n", err->msg, needle);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, needle));
  ms_error_free(err);
}

static void test_weights(void) {
  Meseta__V1__UpdateWeightsRequest r = MESETA__V1__UPDATE_WEIGHTS_REQUEST__INIT;
  expect(&r.base, "`update_weights.weight_infos`: at least one is required");
  Meseta__V1__WeightInfo a = MESETA__V1__WEIGHT_INFO__INIT, b = MESETA__V1__WEIGHT_INFO__INIT;
  Meseta__V1__WeightInfo *v[] = {&a, &b};
  r.weight_infos = v;
  r.n_weight_infos = 2;
  a.role = "eng", a.weight = 2;
  b.role = "ops", b.weight = 1;
  expect(&r.base, NULL);
  b.weight = 0;
  expect(&r.base, "`update_weights.weight_infos[1].weight`: 0 is not in (0, 1e+06]");
  b.weight = NAN;
  expect(&r.base, "`update_weights.weight_infos[1].weight`");
  b.weight = MS_MAX_WEIGHT * 2;
  expect(&r.base, "`update_weights.weight_infos[1].weight`");
  b.weight = 1, b.role = "eng";
  expect(&r.base, "`update_weights.weight_infos[1].role`: `eng` is listed twice");
  b.role = "/bad";
  expect(&r.base, "`update_weights.weight_infos[1].role`");
}

static void test_quota(void) {
  Meseta__V1__UpdateQuotaRequest r = MESETA__V1__UPDATE_QUOTA_REQUEST__INIT;
  expect(&r.base, "`update_quota.configs`: at least one is required");
  Meseta__V1__QuotaConfig q = MESETA__V1__QUOTA_CONFIG__INIT;
  Meseta__V1__QuotaConfig *v[] = {&q};
  r.configs = v;
  r.n_configs = 1;
  q.role = "*";
  expect(&r.base, "`update_quota.configs[0].role`: role `*` cannot have quota");
  q.role = "eng";
  expect(&r.base, NULL);
}

static void test_agent_ids(void) {
  Meseta__V1__DrainAgentRequest d = MESETA__V1__DRAIN_AGENT_REQUEST__INIT;
  expect(&d.base, "`drain_agent.agent_id` is missing");
  Meseta__V1__AgentID id = MESETA__V1__AGENT_ID__INIT;
  id.value = "";
  d.agent_id = &id;
  expect(&d.base, "`drain_agent.agent_id` is missing");
  id.value = "a1";
  expect(&d.base, NULL);
  Meseta__V1__GrowVolumeRequest g = MESETA__V1__GROW_VOLUME_REQUEST__INIT;
  g.agent_id = &id;
  expect(&g.base, "`grow_volume.volume` is missing");
  Meseta__V1__TeardownFrameworkRequest t = MESETA__V1__TEARDOWN_FRAMEWORK_REQUEST__INIT;
  expect(&t.base, "`teardown.framework_id` is missing");
}

static void test_maintenance(void) {
  Meseta__V1__StartMaintenanceRequest st = MESETA__V1__START_MAINTENANCE_REQUEST__INIT;
  expect(&st.base, "`start_maintenance.machines` is empty");
  Meseta__V1__MachineID m = MESETA__V1__MACHINE_ID__INIT, m2 = MESETA__V1__MACHINE_ID__INIT;
  Meseta__V1__MachineID *ms[] = {&m, &m2};
  st.machines = ms;
  st.n_machines = 1;
  expect(&st.base, "`start_maintenance.machines[0]` has neither hostname nor ip");
  m.hostname = "h1";
  expect(&st.base, NULL);
  Meseta__V1__MaintenanceWindow w = MESETA__V1__MAINTENANCE_WINDOW__INIT;
  Meseta__V1__MaintenanceWindow *ws[] = {&w};
  Meseta__V1__MaintenanceSchedule sc = MESETA__V1__MAINTENANCE_SCHEDULE__INIT;
  sc.windows = ws;
  sc.n_windows = 1;
  Meseta__V1__UpdateMaintenanceScheduleRequest u = MESETA__V1__UPDATE_MAINTENANCE_SCHEDULE_REQUEST__INIT;
  u.schedule = &sc;
  expect(&u.base, "`update_maintenance_schedule.schedule.windows[0].unavailability.start` is missing");
  Meseta__V1__Unavailability un = MESETA__V1__UNAVAILABILITY__INIT;
  Google__Protobuf__Timestamp start = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
  un.start = &start;
  w.unavailability = &un;
  m2.hostname = "h1";
  w.machine_ids = ms;
  w.n_machine_ids = 2;
  expect(&u.base, "`update_maintenance_schedule.schedule.windows[0].machine_ids[1]`: the machine is already");
  m2.hostname = "h2";
  expect(&u.base, NULL);
}

static void test_members(void) {
  CU_ASSERT_STRING_EQUAL(ms_operator_call_member(&meseta__v1__get_version_request__descriptor)->name,
                         "get_version");
  CU_ASSERT_PTR_NULL(ms_operator_call_member(&meseta__v1__get_state_request__descriptor));
  Meseta__V1__GetStateRequest gs = MESETA__V1__GET_STATE_REQUEST__INIT;
  expect(&gs.base, NULL); /* no checks: passes */
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"weights", test_weights},         {"quota", test_quota},     {"agent_ids", test_agent_ids},
      {"maintenance", test_maintenance}, {"members", test_members}, {NULL, NULL},
  };
  return ms_test_main(argc, argv, "operator-check", cases);
}
