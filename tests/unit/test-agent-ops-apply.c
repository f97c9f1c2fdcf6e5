/* The agent's operation state machine (services/agent/agent-operations.c) on a bare agent
 * (no link: statuses are recorded, not sent): an operation uuid is applied once and a
 * repeat gets the recorded status; a foreign resource_version is DROPPED; unsupported
 * types and refused operations are FAILED with their reason; an acknowledgement of another
 * status uuid does not count; a restart (recover) finds resources and statuses as they were.
 * Real directories in a temporary work dir. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "meseta/alloc.h"
#include "meseta/fs.h"
#include "meseta/resources-io.h"

#include "agent-internal.h"
#include "testlib.h"

static char *work;

static agent *bare_agent(void) {
  agent *a = ms_xcalloc(1, sizeof(*a));
  a->work_dir = ms_xstrdup(work);
  a->resources_text = ms_xstrdup("cpus:2;mem:1024;disk:1000");
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_resources_parse_text(a->resources_text, NULL, &a->total, &err), &err);
  _cleanup_free_ char *meta = ms_xasprintf("%s/meta", work);
  MS_ASSERT_OK(ms_mkdirs(meta, &err), &err);
  MS_ASSERT_OK(agent_ops_recover(a, &err), &err);
  return a;
}

static void bare_free(agent *a) {
  agent_ops_free(a);
  ms_resources_free(a->total);
  free(a->resources_text);
  free(a->work_dir);
  free(a);
}

#define DYN "\"reservations\":[{\"type\":\"DYNAMIC\",\"role\":\"db\"}]"
#define CPUS "{\"name\":\"cpus\",\"type\":\"SCALAR\",\"scalar\":{\"value\":1}," DYN "}"
#define DISK "{\"name\":\"disk\",\"type\":\"SCALAR\",\"scalar\":{\"value\":100}," DYN "}"
#define VOL                                                                                                  \
  "{\"name\":\"disk\",\"type\":\"SCALAR\",\"scalar\":{\"value\":64}," DYN                                    \
  ",\"disk\":{\"persistence\":{\"id\":\"v1\"},\"volume\":{\"container_path\":\"data\"}}}"

/* Applies one operation of `type` over `json` with uuid bytes all `tag`. */
static void apply(agent *a, uint8_t tag, Meseta__V1__Operation__Type type, const char *json,
                  const uint8_t *version) {
  ms_resources *set = NULL;
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_resources_from_json(json, strlen(json), &set, &err), &err);
  Meseta__V1__Resources *r = ms_resources_to_proto(set);
  ms_resources_free(set);
  Meseta__V1__Operation op = MESETA__V1__OPERATION__INIT;
  op.type = type;
  Meseta__V1__Operation__Reserve rs = MESETA__V1__OPERATION__RESERVE__INIT;
  Meseta__V1__Operation__Create cr = MESETA__V1__OPERATION__CREATE__INIT;
  Meseta__V1__Operation__GrowVolume gv = MESETA__V1__OPERATION__GROW_VOLUME__INIT;
  if (type == MESETA__V1__OPERATION__TYPE__RESERVE) {
    rs.resources = r->resources;
    rs.n_resources = r->n_resources;
    op.reserve = &rs;
  } else if (type == MESETA__V1__OPERATION__TYPE__CREATE) {
    cr.volumes = r->resources;
    cr.n_volumes = r->n_resources;
    op.create = &cr;
  } else {
    gv.volume = r->resources[0];
    op.grow_volume = &gv;
  }
  uint8_t uuid[16];
  memset(uuid, tag, 16);
  char id[8];
  snprintf(id, sizeof(id), "op-%u", tag);
  Meseta__V1__OperationID oid = MESETA__V1__OPERATION_ID__INIT;
  oid.value = id;
  Meseta__V1__ResourceVersion rv = MESETA__V1__RESOURCE_VERSION__INIT;
  Meseta__V1__AllocatorMessage__ApplyOperation ap = MESETA__V1__ALLOCATOR_MESSAGE__APPLY_OPERATION__INIT;
  ap.operation = &op;
  ap.operation_id = &oid;
  ap.operation_uuid.data = uuid;
  ap.operation_uuid.len = 16;
  if (version) {
    rv.uuid.data = (uint8_t *)version;
    rv.uuid.len = 16;
    ap.resource_version = &rv;
  }
  agent_ops_apply(a, &ap);
  ms_resources_proto_free(r);
}

static agent_op *find(agent *a, uint8_t tag) {
  for (agent_op *o = a->ops; o; o = o->next)
    if (o->uuid[0] == tag)
      return o;
  return NULL;
}

static size_t count_ops(agent *a) {
  size_t n = 0;
  for (agent_op *o = a->ops; o; o = o->next)
    n++;
  return n;
}

static void test_ops_apply_once_and_states(void) {
  agent *a = bare_agent();
  _cleanup_free_ char *vdir = ms_xasprintf("%s/volumes/db/v1", work);

  apply(a, 1, MESETA__V1__OPERATION__TYPE__RESERVE, "[" CPUS "," DISK "]", NULL);
  CU_ASSERT_EQUAL(find(a, 1)->rec->latest_status->state, MESETA__V1__OPERATION_STATE__OPERATION_FINISHED);
  uint8_t status_uuid[16];
  memcpy(status_uuid, find(a, 1)->rec->latest_status->uuid.data, 16);
  /* The same uuid again: not applied twice (1 reserved cpu, not 2), the same status. */
  apply(a, 1, MESETA__V1__OPERATION__TYPE__RESERVE, "[" CPUS "," DISK "]", NULL);
  CU_ASSERT_EQUAL(count_ops(a), 1);
  CU_ASSERT_EQUAL(memcmp(find(a, 1)->rec->latest_status->uuid.data, status_uuid, 16), 0);
  ms_resources *cpus = ms_resources_named(a->ckpt_res, "cpus");
  CU_ASSERT_EQUAL(ms_resources_scalar(cpus, "cpus"), 1000); /* milli-units */
  ms_resources_free(cpus);

  apply(a, 2, MESETA__V1__OPERATION__TYPE__CREATE, "[" VOL "]", NULL);
  CU_ASSERT_EQUAL(find(a, 2)->rec->latest_status->state, MESETA__V1__OPERATION_STATE__OPERATION_FINISHED);
  struct stat st;
  CU_ASSERT_EQUAL(stat(vdir, &st), 0);
  /* A second CREATE of the same id (another uuid): FAILED, naming the id. */
  apply(a, 3, MESETA__V1__OPERATION__TYPE__CREATE, "[" VOL "]", NULL);
  CU_ASSERT_EQUAL(find(a, 3)->rec->latest_status->state, MESETA__V1__OPERATION_STATE__OPERATION_FAILED);
  CU_ASSERT_PTR_NOT_NULL(strstr(find(a, 3)->rec->latest_status->message, "v1"));

  /* A version the agent does not have: DROPPED. */
  uint8_t other[16];
  memset(other, 0xee, 16);
  apply(a, 4, MESETA__V1__OPERATION__TYPE__RESERVE, "[" CPUS "]", other);
  CU_ASSERT_EQUAL(find(a, 4)->rec->latest_status->state, MESETA__V1__OPERATION_STATE__OPERATION_DROPPED);
  CU_ASSERT_PTR_NOT_NULL(strstr(find(a, 4)->rec->latest_status->message, "resource_version"));
  /* Its own version: applied. */
  uint8_t mine[16];
  memcpy(mine, a->res_version, 16);
  apply(a, 5, MESETA__V1__OPERATION__TYPE__RESERVE, "[" CPUS "]", mine);
  CU_ASSERT_EQUAL(find(a, 5)->rec->latest_status->state, MESETA__V1__OPERATION_STATE__OPERATION_FINISHED);
  CU_ASSERT_NOT_EQUAL(memcmp(mine, a->res_version, 16), 0); /* a change: a new version */

  apply(a, 6, MESETA__V1__OPERATION__TYPE__GROW_VOLUME, "[" VOL "]", NULL);
  CU_ASSERT_EQUAL(find(a, 6)->rec->latest_status->state, MESETA__V1__OPERATION_STATE__OPERATION_FAILED);
  CU_ASSERT_PTR_NOT_NULL(strstr(find(a, 6)->rec->latest_status->message, "GROW_VOLUME"));

  /* Acknowledgements: another status uuid does not count; the right one does. */
  Meseta__V1__AllocatorMessage__AcknowledgeOperationStatus k =
      MESETA__V1__ALLOCATOR_MESSAGE__ACKNOWLEDGE_OPERATION_STATUS__INIT;
  uint8_t op_uuid[16];
  memset(op_uuid, 2, 16);
  k.operation_uuid.data = op_uuid;
  k.operation_uuid.len = 16;
  k.status_uuid.data = other;
  k.status_uuid.len = 16;
  agent_ops_ack(a, &k);
  CU_ASSERT_FALSE(find(a, 2)->acked);
  k.status_uuid = find(a, 2)->rec->latest_status->uuid;
  agent_ops_ack(a, &k);
  CU_ASSERT_TRUE(find(a, 2)->acked);

  /* A restart finds the same resources, version and statuses. */
  ms_resources *before = ms_resources_clone(a->ckpt_res);
  uint8_t version[16];
  memcpy(version, a->res_version, 16);
  bare_free(a);
  a = bare_agent();
  CU_ASSERT(ms_resources_equal(before, a->ckpt_res));
  CU_ASSERT_EQUAL(memcmp(version, a->res_version, 16), 0);
  CU_ASSERT_EQUAL(count_ops(a), 6);
  CU_ASSERT_TRUE(find(a, 2)->acked);
  CU_ASSERT_FALSE(find(a, 1)->acked);
  size_t n = 0;
  Meseta__V1__TrackedOperation **unacked = agent_ops_unacked(a, &n);
  CU_ASSERT_EQUAL(n, 5);
  for (size_t i = 0; i < n; i++)
    CU_ASSERT_NOT_EQUAL(unacked[i]->uuid.data[0], 2);
  free(unacked);
  ms_resources_free(before);
  bare_free(a);
}

int main(int argc, char **argv) {
  work = ms_test_tmpdir("test-agent-ops-apply");
  static const ms_test_case cases[] = {
      {"ops_apply_once_and_states", test_ops_apply_once_and_states},
      {NULL, NULL},
  };
  int rc = ms_test_main(argc, argv, "agent-ops-apply", cases);
  if (rc == 0)
    ms_test_rmtree(work);
  free(work);
  return rc;
}
