/* The agent's operations checkpoint (services/agent/agent-operations.c): the format round
 * trip (resources, version, operations and whether each waits for its acknowledgement),
 * corrupt input refused with DATA_LOSS, and volume paths that cannot escape their root. */
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/pb.h"
#include "meseta/resources-io.h"

#include "agent-internal.h"
#include "testlib.h"

static agent_op *op_new(uint8_t tag, const char *op_id, Meseta__V1__OperationState state, bool acked) {
  agent_op *o = ms_xcalloc(1, sizeof(*o));
  memset(o->uuid, tag, 16);
  o->acked = acked;
  Meseta__V1__TrackedOperation *r = ms_pb_new(&meseta__v1__tracked_operation__descriptor);
  r->uuid.data = ms_xmalloc(16);
  r->uuid.len = 16;
  memset(r->uuid.data, tag, 16);
  r->info = ms_pb_new(&meseta__v1__offer__operation__descriptor);
  r->info->id = ms_pb_new(&meseta__v1__operation_id__descriptor);
  r->info->id->value = ms_xstrdup(op_id);
  r->latest_status = ms_pb_new(&meseta__v1__operation_status__descriptor);
  r->latest_status->state = state;
  r->latest_status->message = ms_xstrdup(state == MESETA__V1__OPERATION_STATE__OPERATION_FAILED ? "no" : "");
  r->latest_status->uuid.data = ms_xmalloc(16);
  r->latest_status->uuid.len = 16;
  memset(r->latest_status->uuid.data, tag + 1, 16);
  o->rec = r;
  return o;
}

static void test_ops_checkpoint_round_trip(void) {
  ms_resources *res = NULL;
  ms_error *err = NULL;
  const char *json = "[{\"name\":\"cpus\",\"type\":\"SCALAR\",\"scalar\":{\"value\":1},"
                     "\"reservations\":[{\"type\":\"DYNAMIC\",\"role\":\"db\"}]},"
                     "{\"name\":\"disk\",\"type\":\"SCALAR\",\"scalar\":{\"value\":64},"
                     "\"reservations\":[{\"type\":\"DYNAMIC\",\"role\":\"db\"}],"
                     "\"disk\":{\"persistence\":{\"id\":\"v1\"},\"volume\":{\"container_path\":\"data\"}}}]";
  MS_ASSERT_OK(ms_resources_from_json(json, strlen(json), &res, &err), &err);
  uint8_t version[16];
  memset(version, 7, 16);
  agent_op *ops = op_new(1, "create-1", MESETA__V1__OPERATION_STATE__OPERATION_FINISHED, false);
  ops->next = op_new(3, "grow-1", MESETA__V1__OPERATION_STATE__OPERATION_FAILED, true);

  size_t len = 0;
  uint8_t *buf = agent_ops_encode(res, version, ops, &len);
  CU_ASSERT(len > 0);
  CU_ASSERT_EQUAL(ops->rec->n_statuses, 0); /* encode leaves the records as they were */

  ms_resources *res2 = NULL;
  agent_op *ops2 = NULL;
  uint8_t version2[16] = {0};
  MS_ASSERT_OK(agent_ops_decode(buf, len, &res2, version2, &ops2, &err), &err);
  CU_ASSERT(ms_resources_equal(res, res2));
  CU_ASSERT_EQUAL(memcmp(version, version2, 16), 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ops2);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ops2->next);
  CU_ASSERT_PTR_NULL(ops2->next->next);
  CU_ASSERT_STRING_EQUAL(ops2->rec->info->id->value, "create-1");
  CU_ASSERT_FALSE(ops2->acked);
  CU_ASSERT_EQUAL(ops2->uuid[0], 1);
  CU_ASSERT_EQUAL(ops2->rec->latest_status->uuid.data[0], 2);
  CU_ASSERT_STRING_EQUAL(ops2->next->rec->info->id->value, "grow-1");
  CU_ASSERT_TRUE(ops2->next->acked);
  CU_ASSERT_EQUAL(ops2->next->rec->latest_status->state, MESETA__V1__OPERATION_STATE__OPERATION_FAILED);
  CU_ASSERT_STRING_EQUAL(ops2->next->rec->latest_status->message, "no");

  /* Corrupt or truncated: DATA_LOSS, nothing returned. */
  ms_resources *res3 = NULL;
  agent_op *ops3 = NULL;
  CU_ASSERT(agent_ops_decode(buf, len / 2, &res3, version2, &ops3, &err) < 0);
  CU_ASSERT_EQUAL(err->code, MS_DATA_LOSS);
  ms_error_free(err);
  err = NULL;
  CU_ASSERT_PTR_NULL(res3);
  CU_ASSERT_PTR_NULL(ops3);
  /* Empty: no version, refused too (a real checkpoint always has one). */
  CU_ASSERT(agent_ops_decode((const uint8_t *)"", 0, &res3, version2, &ops3, &err) < 0);
  ms_error_free(err);

  free(buf);
  ms_resources_free(res);
  ms_resources_free(res2);
  agent_ops_list_free(ops);
  agent_ops_list_free(ops2);
}

static void test_ops_volume_path(void) {
  ms_error *err = NULL;
  char *p = agent_volume_path("/v", "db", "vol-1", "f", &err);
  CU_ASSERT_STRING_EQUAL(p, "/v/db/vol-1");
  free(p);
  p = agent_volume_path("/v", "eng/web", "x", "f", &err); /* hierarchical role: one component */
  CU_ASSERT_STRING_EQUAL(p, "/v/eng web/x");
  free(p);
  static const char *const bad_ids[] = {"", ".", "..", "a/b", "../x", "/abs", "a\nb"};
  for (size_t i = 0; i < MS_ARRAY_SIZE(bad_ids); i++) {
    CU_ASSERT_PTR_NULL(
        agent_volume_path("/v", "db", bad_ids[i], "operation.create.volumes[0].disk.persistence.id", &err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "operation.create.volumes[0].disk.persistence.id"));
    ms_error_free(err);
    err = NULL;
  }
  static const char *const bad_roles[] = {"", "*", "..", "../x", ".hidden"};
  for (size_t i = 0; i < MS_ARRAY_SIZE(bad_roles); i++) {
    CU_ASSERT_PTR_NULL(agent_volume_path("/v", bad_roles[i], "x", "f", &err));
    ms_error_free(err);
    err = NULL;
  }
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"ops_checkpoint_round_trip", test_ops_checkpoint_round_trip},
      {"ops_volume_path", test_ops_volume_path},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "agent-ops-checkpoint", cases);
}
