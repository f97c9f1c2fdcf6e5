/* Every Operator mutation round-trips through a real meseta-master-api (over etcd,
 * meseta-registry, one meseta-allocator and simulated agents): each mutation answers
 * a revision, and the read that follows asks for it (min_revision: read-your-writes)
 * and sees the change. Weights, quota (all or nothing), reservations (moved to another
 * role with their volume), volumes created, grown, shrunk and destroyed, the
 * maintenance schedule, machines taken DOWN and back UP, agents deactivated,
 * reactivated, drained and marked gone, and a framework torn down. Then Message,
 * Shutdown and UpdateFramework through the public Scheduler API (a framework on
 * master-api), and DOWN machines surviving an allocator failover (SIGKILL). Waits are
 * bounded hang guards, never timing assertions. */
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "meseta/alloc.h"
#include "meseta/resources-io.h"
#include "meseta/rpc.h"
#include "meseta/time.h"
#include "meseta/v1/allocator.pb-c.h"
#include "meseta/v1/operator.pb-c.h"
#include "meseta/v1/registry.pb-c.h"

#include "cluster.h"
#include "etcd-harness.h"
#include "proc.h"
#include "sim.h"
#include "testlib.h"

#define WAIT_MS 30000

static ms_test_etcd *etcd;
static char *dir;
static const char *mapi, *alloc_addr;

#define MEMBER(msg, off, type) (*(type *)((char *)(msg) + (off)))

/* ---- calls ---- */

/* One unary call to master-api; *resp on OK (the caller frees), *msg the error's
 * message (the caller frees). */
static ms_status call(const char *method, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rd,
                      ProtobufCMessage **resp, char **msg) {
  return ms_test_call(mapi, NULL, NULL, method, req, rd, 15000, resp, msg);
}

/* A mutation that must succeed: the revision it answers (field 1 of every answer). */
static int64_t mutate(const char *method, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rd) {
  ProtobufCMessage *resp = NULL;
  char *msg = NULL;
  ms_status code = call(method, req, rd, &resp, &msg);
  if (code != MS_OK)
    fprintf(stderr, "%s: %s: %s\n", method, ms_status_name(code), msg);
  free(msg);
  CU_ASSERT_EQUAL_FATAL(code, MS_OK);
  int64_t rev = MEMBER(resp, protobuf_c_message_descriptor_get_field(rd, 1)->offset, int64_t);
  protobuf_c_message_free_unpacked(resp, NULL);
  CU_ASSERT(rev > 0);
  return rev;
}

/* A mutation that must be refused with `want`, its message naming `needle`. */
static void refused(const char *method, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rd,
                    ms_status want, const char *needle) {
  char *msg = NULL;
  ms_status code = call(method, req, rd, NULL, &msg);
  if (code != want || !msg || !strstr(msg, needle))
    fprintf(stderr, "%s: got %s `%s`, want %s `...%s...`\n", method, ms_status_name(code), msg ? msg : "",
            ms_status_name(want), needle);
  CU_ASSERT_EQUAL(code, want);
  CU_ASSERT(msg && strstr(msg, needle));
  free(msg);
}

/* A read at least at `rev` (min_revision is field 1 of every read); the answer's
 * revision is checked. The caller frees. */
static ProtobufCMessage *read_at(const char *method, ProtobufCMessage *req,
                                 const ProtobufCMessageDescriptor *rd, int64_t rev) {
  MEMBER(req, protobuf_c_message_descriptor_get_field(req->descriptor, 1)->offset, int64_t) = rev;
  ProtobufCMessage *resp = NULL;
  char *msg = NULL;
  ms_status code = call(method, req, rd, &resp, &msg);
  if (code != MS_OK)
    fprintf(stderr, "%s: %s: %s\n", method, ms_status_name(code), msg);
  free(msg);
  CU_ASSERT_EQUAL_FATAL(code, MS_OK);
  CU_ASSERT(MEMBER(resp, protobuf_c_message_descriptor_get_field(rd, 1)->offset, int64_t) >= rev);
  return resp;
}

/* ---- resources ---- */

#define DYN(role) "{\"type\":\"DYNAMIC\",\"role\":\"" role "\"}"
#define SCALAR(name, v, role, extra)                                                                         \
  "{\"name\":\"" name "\",\"type\":\"SCALAR\",\"scalar\":{\"value\":" v                                      \
  "},\"reservations\":[" DYN(role) "]" extra "}"
#define VOLUME(id) ",\"disk\":{\"persistence\":{\"id\":\"" id "\"},\"volume\":{\"container_path\":\"data\"}}"

/* The JSON form as messages; free with ms_resources_proto_free. */
static Meseta__V1__Resources *res(const char *json) {
  ms_resources *set = NULL;
  ms_error *err = NULL;
  if (ms_resources_from_json(json, strlen(json), &set, &err) < 0)
    fprintf(stderr, "%s: %s\n", json, err->msg);
  CU_ASSERT_PTR_NOT_NULL_FATAL(set);
  Meseta__V1__Resources *m = ms_resources_to_proto(set);
  ms_resources_free(set);
  return m;
}

/* How much of `name` the agent's total holds with that top reservation role (NULL:
 * unreserved) and persistent volume id (NULL: none). */
static double amount(const Meseta__V1__Agent *a, const char *name, const char *role, const char *volume) {
  double sum = 0;
  for (size_t i = 0; i < a->n_total_resources; i++) {
    const Meseta__V1__Resource *r = a->total_resources[i];
    if (strcmp(r->name, name) != 0 || !r->scalar)
      continue;
    const char *top = r->n_reservations ? r->reservations[r->n_reservations - 1]->role : NULL;
    if (!!top != !!role || (role && strcmp(top, role) != 0))
      continue;
    const char *vid = r->disk && r->disk->persistence ? r->disk->persistence->id : NULL;
    if (!!vid != !!volume || (volume && strcmp(vid, volume) != 0))
      continue;
    sum += r->scalar->value;
  }
  return sum;
}

static Meseta__V1__GetAgentsResponse *agents_at(const char *agent_id, int64_t rev) {
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = (char *)agent_id;
  Meseta__V1__AgentID *ids[] = {&aid};
  Meseta__V1__GetAgentsRequest req = MESETA__V1__GET_AGENTS_REQUEST__INIT;
  if (agent_id) {
    req.agent_ids = ids;
    req.n_agent_ids = 1;
  }
  return (Meseta__V1__GetAgentsResponse *)read_at("/meseta.v1.Operator/GetAgents", &req.base,
                                                  &meseta__v1__get_agents_response__descriptor, rev);
}

/* The agent as the view shows it at `rev` or later; *keep is the answer to free. */
static const Meseta__V1__Agent *agent_at(const char *agent_id, int64_t rev,
                                         Meseta__V1__GetAgentsResponse **keep) {
  *keep = agents_at(agent_id, rev);
  CU_ASSERT_EQUAL_FATAL((*keep)->n_agents, 1);
  return (*keep)->agents[0];
}

static double agent_amount(const char *agent_id, int64_t rev, const char *name, const char *role,
                           const char *volume) {
  Meseta__V1__GetAgentsResponse *keep;
  double v = amount(agent_at(agent_id, rev, &keep), name, role, volume);
  protobuf_c_message_free_unpacked(&keep->base, NULL);
  return v;
}

/* ---- the steps ---- */

static void weights_and_quota(void) {
  Meseta__V1__WeightInfo wi = MESETA__V1__WEIGHT_INFO__INIT;
  wi.role = "eng";
  wi.weight = 2.5;
  Meseta__V1__WeightInfo *wis[] = {&wi};
  Meseta__V1__UpdateWeightsRequest uw = MESETA__V1__UPDATE_WEIGHTS_REQUEST__INIT;
  uw.weight_infos = wis;
  uw.n_weight_infos = 1;
  int64_t rev =
      mutate("/meseta.v1.Operator/UpdateWeights", &uw.base, &meseta__v1__update_weights_response__descriptor);
  Meseta__V1__GetWeightsRequest gw = MESETA__V1__GET_WEIGHTS_REQUEST__INIT;
  Meseta__V1__GetWeightsResponse *w = (Meseta__V1__GetWeightsResponse *)read_at(
      "/meseta.v1.Operator/GetWeights", &gw.base, &meseta__v1__get_weights_response__descriptor, rev);
  CU_ASSERT_EQUAL_FATAL(w->n_weight_infos, 1);
  CU_ASSERT_STRING_EQUAL(w->weight_infos[0]->role, "eng");
  CU_ASSERT_EQUAL(w->weight_infos[0]->weight, 2.5);
  protobuf_c_message_free_unpacked(&w->base, NULL);

  /* Guarantees and limits. */
  Meseta__V1__Value__Scalar one = MESETA__V1__VALUE__SCALAR__INIT, three = MESETA__V1__VALUE__SCALAR__INIT,
                            five = MESETA__V1__VALUE__SCALAR__INIT;
  one.value = 1;
  three.value = 3;
  five.value = 5;
  Meseta__V1__QuotaConfig__GuaranteesEntry g1 = MESETA__V1__QUOTA_CONFIG__GUARANTEES_ENTRY__INIT;
  g1.key = "cpus";
  g1.value = &one;
  Meseta__V1__QuotaConfig__LimitsEntry l3 = MESETA__V1__QUOTA_CONFIG__LIMITS_ENTRY__INIT;
  l3.key = "cpus";
  l3.value = &three;
  Meseta__V1__QuotaConfig__GuaranteesEntry *gs[] = {&g1};
  Meseta__V1__QuotaConfig__LimitsEntry *ls[] = {&l3};
  Meseta__V1__QuotaConfig q = MESETA__V1__QUOTA_CONFIG__INIT;
  q.role = "eng";
  q.guarantees = gs;
  q.n_guarantees = 1;
  q.limits = ls;
  q.n_limits = 1;
  Meseta__V1__QuotaConfig *qs[] = {&q};
  Meseta__V1__UpdateQuotaRequest uq = MESETA__V1__UPDATE_QUOTA_REQUEST__INIT;
  uq.configs = qs;
  uq.n_configs = 1;
  rev = mutate("/meseta.v1.Operator/UpdateQuota", &uq.base, &meseta__v1__update_quota_response__descriptor);

  /* All or nothing: a valid config for `ops` and an invalid one (guarantee above its
   * limit) for `eng`: refused naming the second; neither applies. */
  Meseta__V1__QuotaConfig__GuaranteesEntry g5 = MESETA__V1__QUOTA_CONFIG__GUARANTEES_ENTRY__INIT;
  g5.key = "cpus";
  g5.value = &five;
  Meseta__V1__QuotaConfig__GuaranteesEntry *gs5[] = {&g5};
  Meseta__V1__QuotaConfig bad = q;
  bad.guarantees = gs5;
  Meseta__V1__QuotaConfig ops = MESETA__V1__QUOTA_CONFIG__INIT;
  ops.role = "ops";
  ops.guarantees = gs;
  ops.n_guarantees = 1;
  Meseta__V1__QuotaConfig *qbad[] = {&ops, &bad};
  uq.configs = qbad;
  uq.n_configs = 2;
  refused("/meseta.v1.Operator/UpdateQuota", &uq.base, &meseta__v1__update_quota_response__descriptor,
          MS_INVALID_ARGUMENT, "update_quota.configs[1].guarantees[cpus]");

  /* Issue 12 point 6 through master-api: a made-up resource, a guarantee past the
   * cluster's capacity, a weight past 1e6 (the field named; nothing applies). */
  Meseta__V1__QuotaConfig__GuaranteesEntry gb = MESETA__V1__QUOTA_CONFIG__GUARANTEES_ENTRY__INIT;
  gb.key = "bogus";
  gb.value = &one;
  Meseta__V1__QuotaConfig__GuaranteesEntry *gsb[] = {&gb};
  Meseta__V1__QuotaConfig qb = MESETA__V1__QUOTA_CONFIG__INIT;
  qb.role = "ops";
  qb.guarantees = gsb;
  qb.n_guarantees = 1;
  Meseta__V1__QuotaConfig *qbs[] = {&qb};
  uq.configs = qbs;
  uq.n_configs = 1;
  refused("/meseta.v1.Operator/UpdateQuota", &uq.base, &meseta__v1__update_quota_response__descriptor,
          MS_INVALID_ARGUMENT, "update_quota.configs[0].guarantees[bogus]");
  Meseta__V1__Value__Scalar huge = MESETA__V1__VALUE__SCALAR__INIT;
  huge.value = 100000;
  gb.key = "cpus";
  gb.value = &huge;
  refused("/meseta.v1.Operator/UpdateQuota", &uq.base, &meseta__v1__update_quota_response__descriptor,
          MS_FAILED_PRECONDITION, "update_quota.configs[0].guarantees[cpus]");
  wi.weight = 1e308;
  refused("/meseta.v1.Operator/UpdateWeights", &uw.base, &meseta__v1__update_weights_response__descriptor,
          MS_INVALID_ARGUMENT, "update_weights.weight_infos[0].weight");

  Meseta__V1__GetQuotaRequest gq = MESETA__V1__GET_QUOTA_REQUEST__INIT;
  Meseta__V1__GetQuotaResponse *qr = (Meseta__V1__GetQuotaResponse *)read_at(
      "/meseta.v1.Operator/GetQuota", &gq.base, &meseta__v1__get_quota_response__descriptor, rev);
  CU_ASSERT_EQUAL_FATAL(qr->n_configs, 1); /* not `ops` */
  const Meseta__V1__QuotaConfig *got = qr->configs[0];
  CU_ASSERT_STRING_EQUAL(got->role, "eng");
  CU_ASSERT_EQUAL_FATAL(got->n_guarantees, 1);
  CU_ASSERT_EQUAL_FATAL(got->n_limits, 1);
  CU_ASSERT_STRING_EQUAL(got->guarantees[0]->key, "cpus");
  CU_ASSERT_EQUAL(got->guarantees[0]->value->value, 1); /* not 5 */
  CU_ASSERT_STRING_EQUAL(got->limits[0]->key, "cpus");
  CU_ASSERT_EQUAL(got->limits[0]->value->value, 3);
  protobuf_c_message_free_unpacked(&qr->base, NULL);
}

/* ReserveResources (with `source`: moving existing reservations). */
static int64_t reserve(const char *agent, const char *source, const char *resources) {
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = (char *)agent;
  Meseta__V1__Resources *src = source ? res(source) : NULL, *dst = res(resources);
  Meseta__V1__ReserveResourcesRequest r = MESETA__V1__RESERVE_RESOURCES_REQUEST__INIT;
  r.agent_id = &aid;
  if (src) {
    r.source = src->resources;
    r.n_source = src->n_resources;
  }
  r.resources = dst->resources;
  r.n_resources = dst->n_resources;
  int64_t rev = mutate("/meseta.v1.Operator/ReserveResources", &r.base,
                       &meseta__v1__reserve_resources_response__descriptor);
  if (src)
    ms_resources_proto_free(src);
  ms_resources_proto_free(dst);
  return rev;
}

static int64_t unreserve(const char *agent, const char *resources) {
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = (char *)agent;
  Meseta__V1__Resources *rs = res(resources);
  Meseta__V1__UnreserveResourcesRequest r = MESETA__V1__UNRESERVE_RESOURCES_REQUEST__INIT;
  r.agent_id = &aid;
  r.resources = rs->resources;
  r.n_resources = rs->n_resources;
  int64_t rev = mutate("/meseta.v1.Operator/UnreserveResources", &r.base,
                       &meseta__v1__unreserve_resources_response__descriptor);
  ms_resources_proto_free(rs);
  return rev;
}

/* CreateVolumes / DestroyVolumes. */
static int64_t volumes(const char *agent, const char *vols, bool create) {
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = (char *)agent;
  Meseta__V1__Resources *rs = res(vols);
  Meseta__V1__CreateVolumesRequest c = MESETA__V1__CREATE_VOLUMES_REQUEST__INIT;
  Meseta__V1__DestroyVolumesRequest d = MESETA__V1__DESTROY_VOLUMES_REQUEST__INIT;
  c.agent_id = d.agent_id = &aid;
  c.volumes = d.volumes = rs->resources;
  c.n_volumes = d.n_volumes = rs->n_resources;
  int64_t rev = create ? mutate("/meseta.v1.Operator/CreateVolumes", &c.base,
                                &meseta__v1__create_volumes_response__descriptor)
                       : mutate("/meseta.v1.Operator/DestroyVolumes", &d.base,
                                &meseta__v1__destroy_volumes_response__descriptor);
  ms_resources_proto_free(rs);
  return rev;
}

static void reservations_and_volumes(const char *a) {
  /* Reserve disk and cpus to `eng`. */
  int64_t rev = reserve(a, NULL, "[" SCALAR("disk", "100", "eng", "") "," SCALAR("cpus", "1", "eng", "") "]");
  Meseta__V1__GetAgentsResponse *keep;
  const Meseta__V1__Agent *ag = agent_at(a, rev, &keep);
  CU_ASSERT_EQUAL(amount(ag, "disk", "eng", NULL), 100);
  CU_ASSERT_EQUAL(amount(ag, "cpus", "eng", NULL), 1);
  CU_ASSERT_EQUAL(amount(ag, "disk", NULL, NULL), 900);
  bool listed = false; /* Agent.reserved_resources, by role */
  for (size_t i = 0; i < ag->n_reserved_resources; i++)
    listed |= strcmp(ag->reserved_resources[i]->key, "eng") == 0;
  CU_ASSERT(listed);
  protobuf_c_message_free_unpacked(&keep->base, NULL);

  /* A volume on it; grown; shrunk. */
  rev = volumes(a, "[" SCALAR("disk", "50", "eng", VOLUME("v1")) "]", true);
  CU_ASSERT_EQUAL(agent_amount(a, rev, "disk", "eng", "v1"), 50);
  CU_ASSERT_EQUAL(agent_amount(a, rev, "disk", "eng", NULL), 50);

  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = (char *)a;
  Meseta__V1__Resources *vol = res("[" SCALAR("disk", "50", "eng", VOLUME("v1")) "]");
  Meseta__V1__Resources *add = res("[" SCALAR("disk", "20", "eng", "") "]");
  Meseta__V1__GrowVolumeRequest gv = MESETA__V1__GROW_VOLUME_REQUEST__INIT;
  gv.agent_id = &aid;
  gv.volume = vol->resources[0];
  gv.addition = add->resources[0];
  rev = mutate("/meseta.v1.Operator/GrowVolume", &gv.base, &meseta__v1__grow_volume_response__descriptor);
  CU_ASSERT_EQUAL(agent_amount(a, rev, "disk", "eng", "v1"), 70);
  CU_ASSERT_EQUAL(agent_amount(a, rev, "disk", "eng", NULL), 30);
  /* Growing what is not there: refused, naming the call. */
  refused("/meseta.v1.Operator/GrowVolume", &gv.base, &meseta__v1__grow_volume_response__descriptor,
          MS_FAILED_PRECONDITION, "grow_volume");
  ms_resources_proto_free(vol);
  ms_resources_proto_free(add);

  vol = res("[" SCALAR("disk", "70", "eng", VOLUME("v1")) "]");
  Meseta__V1__Value__Scalar sub = MESETA__V1__VALUE__SCALAR__INIT;
  sub.value = 30;
  Meseta__V1__ShrinkVolumeRequest sv = MESETA__V1__SHRINK_VOLUME_REQUEST__INIT;
  sv.agent_id = &aid;
  sv.volume = vol->resources[0];
  sv.subtract = &sub;
  rev = mutate("/meseta.v1.Operator/ShrinkVolume", &sv.base, &meseta__v1__shrink_volume_response__descriptor);
  CU_ASSERT_EQUAL(agent_amount(a, rev, "disk", "eng", "v1"), 40);
  CU_ASSERT_EQUAL(agent_amount(a, rev, "disk", "eng", NULL), 60);
  sv.subtract = NULL;
  refused("/meseta.v1.Operator/ShrinkVolume", &sv.base, &meseta__v1__shrink_volume_response__descriptor,
          MS_INVALID_ARGUMENT, "shrink_volume.subtract");
  ms_resources_proto_free(vol);

  /* The volume's reservation moves to `ops`: the volume stays, with its size. */
  rev = reserve(a, "[" SCALAR("disk", "40", "eng", VOLUME("v1")) "]",
                "[" SCALAR("disk", "40", "ops", VOLUME("v1")) "]");
  CU_ASSERT_EQUAL(agent_amount(a, rev, "disk", "ops", "v1"), 40);
  CU_ASSERT_EQUAL(agent_amount(a, rev, "disk", "eng", "v1"), 0);

  /* Destroyed: the reserved disk is left; then everything is unreserved. */
  rev = volumes(a, "[" SCALAR("disk", "40", "ops", VOLUME("v1")) "]", false);
  CU_ASSERT_EQUAL(agent_amount(a, rev, "disk", "ops", "v1"), 0);
  CU_ASSERT_EQUAL(agent_amount(a, rev, "disk", "ops", NULL), 40);
  rev = unreserve(a, "[" SCALAR("disk", "40", "ops", "") "," SCALAR("disk", "60", "eng", "") "," SCALAR(
                         "cpus", "1", "eng", "") "]");
  ag = agent_at(a, rev, &keep);
  CU_ASSERT_EQUAL(amount(ag, "disk", NULL, NULL), 1000);
  CU_ASSERT_EQUAL(amount(ag, "cpus", NULL, NULL), 4);
  CU_ASSERT_EQUAL(ag->n_reserved_resources, 0);
  protobuf_c_message_free_unpacked(&keep->base, NULL);
}

static Meseta__V1__GetMaintenanceStatusResponse *status_at(int64_t rev) {
  Meseta__V1__GetMaintenanceStatusRequest r = MESETA__V1__GET_MAINTENANCE_STATUS_REQUEST__INIT;
  return (Meseta__V1__GetMaintenanceStatusResponse *)read_at(
      "/meseta.v1.Operator/GetMaintenanceStatus", &r.base,
      &meseta__v1__get_maintenance_status_response__descriptor, rev);
}

static int64_t maintenance_call(const char *method, const char *host, const ProtobufCMessageDescriptor *rd) {
  Meseta__V1__MachineID m = MESETA__V1__MACHINE_ID__INIT;
  m.hostname = (char *)host;
  Meseta__V1__MachineID *ms[] = {&m};
  Meseta__V1__StartMaintenanceRequest r = MESETA__V1__START_MAINTENANCE_REQUEST__INIT; /* Stop's shape too */
  r.machines = ms;
  r.n_machines = 1;
  return mutate(method, &r.base, rd);
}

static void maintenance(const char *b_id) {
  /* node-b and node-c scheduled from now, for an hour. */
  Meseta__V1__MachineID mb = MESETA__V1__MACHINE_ID__INIT, mc = MESETA__V1__MACHINE_ID__INIT;
  mb.hostname = "node-b";
  mc.hostname = "node-c";
  Meseta__V1__MachineID *ms[] = {&mb, &mc};
  Google__Protobuf__Timestamp start = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
  start.seconds = time(NULL);
  Google__Protobuf__Duration hour = GOOGLE__PROTOBUF__DURATION__INIT;
  hour.seconds = 3600;
  Meseta__V1__Unavailability un = MESETA__V1__UNAVAILABILITY__INIT;
  un.start = &start;
  un.duration = &hour;
  Meseta__V1__MaintenanceWindow w = MESETA__V1__MAINTENANCE_WINDOW__INIT;
  w.machine_ids = ms;
  w.n_machine_ids = 2;
  w.unavailability = &un;
  Meseta__V1__MaintenanceWindow *ws[] = {&w};
  Meseta__V1__MaintenanceSchedule sc = MESETA__V1__MAINTENANCE_SCHEDULE__INIT;
  sc.windows = ws;
  sc.n_windows = 1;
  Meseta__V1__UpdateMaintenanceScheduleRequest us = MESETA__V1__UPDATE_MAINTENANCE_SCHEDULE_REQUEST__INIT;
  us.schedule = &sc;
  int64_t rev = mutate("/meseta.v1.Operator/UpdateMaintenanceSchedule", &us.base,
                       &meseta__v1__update_maintenance_schedule_response__descriptor);
  Meseta__V1__GetMaintenanceScheduleRequest gs = MESETA__V1__GET_MAINTENANCE_SCHEDULE_REQUEST__INIT;
  Meseta__V1__GetMaintenanceScheduleResponse *sr = (Meseta__V1__GetMaintenanceScheduleResponse *)read_at(
      "/meseta.v1.Operator/GetMaintenanceSchedule", &gs.base,
      &meseta__v1__get_maintenance_schedule_response__descriptor, rev);
  CU_ASSERT_FATAL(sr->schedule && sr->schedule->n_windows == 1);
  CU_ASSERT_EQUAL(sr->schedule->windows[0]->n_machine_ids, 2);
  CU_ASSERT_EQUAL(sr->schedule->windows[0]->unavailability->duration->seconds, 3600);
  protobuf_c_message_free_unpacked(&sr->base, NULL);
  /* The agent on node-b carries its unavailability. */
  Meseta__V1__GetAgentsResponse *keep;
  const Meseta__V1__Agent *ag = agent_at(b_id, rev, &keep);
  CU_ASSERT(ag->unavailability && ag->unavailability->start &&
            ag->unavailability->start->seconds == start.seconds);
  protobuf_c_message_free_unpacked(&keep->base, NULL);

  /* Both draining (node-b with its agent), none down. */
  Meseta__V1__GetMaintenanceStatusResponse *st = status_at(rev);
  CU_ASSERT_EQUAL_FATAL(st->n_draining_machines, 2);
  CU_ASSERT_EQUAL(st->n_down_machines, 0);
  for (size_t i = 0; i < st->n_draining_machines; i++) {
    const Meseta__V1__GetMaintenanceStatusResponse__DrainingMachine *d = st->draining_machines[i];
    CU_ASSERT_EQUAL_FATAL(d->n_agent_ids, 1);
    if (strcmp(d->id->hostname, "node-b") == 0)
      CU_ASSERT_STRING_EQUAL(d->agent_ids[0]->value, b_id);
  }
  protobuf_c_message_free_unpacked(&st->base, NULL);

  /* Only scheduled machines go DOWN. */
  Meseta__V1__MachineID ma = MESETA__V1__MACHINE_ID__INIT;
  ma.hostname = "node-a";
  Meseta__V1__MachineID *mas[] = {&ma};
  Meseta__V1__StartMaintenanceRequest sa = MESETA__V1__START_MAINTENANCE_REQUEST__INIT;
  sa.machines = mas;
  sa.n_machines = 1;
  refused("/meseta.v1.Operator/StartMaintenance", &sa.base,
          &meseta__v1__start_maintenance_response__descriptor, MS_FAILED_PRECONDITION,
          "start_maintenance.machines[0]");
  sa.n_machines = 0;
  refused("/meseta.v1.Operator/StartMaintenance", &sa.base,
          &meseta__v1__start_maintenance_response__descriptor, MS_INVALID_ARGUMENT,
          "start_maintenance.machines");

  /* node-c DOWN: its agent is shut down and leaves the view; it cannot register. */
  rev = maintenance_call("/meseta.v1.Operator/StartMaintenance", "node-c",
                         &meseta__v1__start_maintenance_response__descriptor);
  st = status_at(rev);
  CU_ASSERT_EQUAL_FATAL(st->n_down_machines, 1);
  CU_ASSERT_STRING_EQUAL(st->down_machines[0]->hostname, "node-c");
  CU_ASSERT_EQUAL_FATAL(st->n_draining_machines, 1);
  CU_ASSERT_STRING_EQUAL(st->draining_machines[0]->id->hostname, "node-b");
  protobuf_c_message_free_unpacked(&st->base, NULL);
  Meseta__V1__GetAgentsResponse *all = agents_at(NULL, rev);
  for (size_t i = 0; i < all->n_agents; i++)
    CU_ASSERT_STRING_NOT_EQUAL(all->agents[i]->agent_info->hostname, "node-c");
  protobuf_c_message_free_unpacked(&all->base, NULL);

  ms_error *err = NULL;
  ms_sim_agent_options ao = {.hostname = "node-c", .resources = "cpus:1;mem:512"};
  ms_sim_agent *again = ms_sim_agent_start(alloc_addr, &ao, &err);
  CU_ASSERT_PTR_NULL(again); /* refused while DOWN */
  ms_sim_agent_free(again);
  ms_error_free(TAKE_PTR(err));

  /* A DOWN machine stays in the schedule. */
  w.n_machine_ids = 1; /* node-b only */
  refused("/meseta.v1.Operator/UpdateMaintenanceSchedule", &us.base,
          &meseta__v1__update_maintenance_schedule_response__descriptor, MS_FAILED_PRECONDITION, "node-c");

  /* Back UP: out of the schedule and the DOWN list; an agent registers there again. */
  rev = maintenance_call("/meseta.v1.Operator/StopMaintenance", "node-c",
                         &meseta__v1__stop_maintenance_response__descriptor);
  st = status_at(rev);
  CU_ASSERT_EQUAL(st->n_down_machines, 0);
  CU_ASSERT_EQUAL(st->n_draining_machines, 1);
  protobuf_c_message_free_unpacked(&st->base, NULL);
  sr = (Meseta__V1__GetMaintenanceScheduleResponse *)read_at(
      "/meseta.v1.Operator/GetMaintenanceSchedule", &gs.base,
      &meseta__v1__get_maintenance_schedule_response__descriptor, rev);
  CU_ASSERT_FATAL(sr->schedule && sr->schedule->n_windows == 1);
  CU_ASSERT_EQUAL_FATAL(sr->schedule->windows[0]->n_machine_ids, 1);
  CU_ASSERT_STRING_EQUAL(sr->schedule->windows[0]->machine_ids[0]->hostname, "node-b");
  protobuf_c_message_free_unpacked(&sr->base, NULL);
  refused("/meseta.v1.Operator/StopMaintenance", &sa.base, &meseta__v1__stop_maintenance_response__descriptor,
          MS_INVALID_ARGUMENT, "stop_maintenance.machines");
  again = ms_sim_agent_start(alloc_addr, &ao, &err);
  CU_ASSERT_PTR_NOT_NULL(again);
  ms_sim_agent_free(again);
  ms_error_free(err);
}

static Meseta__V1__Agent__State agent_state(const char *id, int64_t rev) {
  Meseta__V1__GetAgentsResponse *keep;
  Meseta__V1__Agent__State s = agent_at(id, rev, &keep)->state;
  protobuf_c_message_free_unpacked(&keep->base, NULL);
  return s;
}

static void agent_lifecycle(const char *b) {
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = (char *)b;
  Meseta__V1__DeactivateAgentRequest d = MESETA__V1__DEACTIVATE_AGENT_REQUEST__INIT;
  d.agent_id = &aid;
  int64_t rev = mutate("/meseta.v1.Operator/DeactivateAgent", &d.base,
                       &meseta__v1__deactivate_agent_response__descriptor);
  CU_ASSERT_EQUAL(agent_state(b, rev), MESETA__V1__AGENT__STATE__DEACTIVATED);
  Meseta__V1__ReactivateAgentRequest r = MESETA__V1__REACTIVATE_AGENT_REQUEST__INIT;
  r.agent_id = &aid;
  rev = mutate("/meseta.v1.Operator/ReactivateAgent", &r.base,
               &meseta__v1__reactivate_agent_response__descriptor);
  CU_ASSERT_EQUAL(agent_state(b, rev), MESETA__V1__AGENT__STATE__ACTIVE);
  Meseta__V1__DrainAgentRequest dr = MESETA__V1__DRAIN_AGENT_REQUEST__INIT;
  dr.agent_id = &aid;
  rev = mutate("/meseta.v1.Operator/DrainAgent", &dr.base, &meseta__v1__drain_agent_response__descriptor);
  Meseta__V1__GetAgentsResponse *keep;
  const Meseta__V1__Agent *ag = agent_at(b, rev, &keep);
  CU_ASSERT_EQUAL(ag->state, MESETA__V1__AGENT__STATE__DRAINING);
  CU_ASSERT_EQUAL(ag->drain_state, MESETA__V1__DRAIN_STATE__DRAINING);
  protobuf_c_message_free_unpacked(&keep->base, NULL);

  Meseta__V1__AgentID nobody = MESETA__V1__AGENT_ID__INIT;
  nobody.value = "no-such-agent";
  d.agent_id = &nobody;
  refused("/meseta.v1.Operator/DeactivateAgent", &d.base, &meseta__v1__deactivate_agent_response__descriptor,
          MS_NOT_FOUND, "no-such-agent");

  Meseta__V1__MarkAgentGoneRequest g = MESETA__V1__MARK_AGENT_GONE_REQUEST__INIT;
  g.agent_id = &aid;
  rev =
      mutate("/meseta.v1.Operator/MarkAgentGone", &g.base, &meseta__v1__mark_agent_gone_response__descriptor);
  Meseta__V1__GetAgentsResponse *gone = agents_at(b, rev);
  CU_ASSERT_EQUAL(gone->n_agents, 0);
  protobuf_c_message_free_unpacked(&gone->base, NULL);
  /* Irreversible: it cannot be reactivated. */
  r.agent_id = &aid;
  refused("/meseta.v1.Operator/ReactivateAgent", &r.base, &meseta__v1__reactivate_agent_response__descriptor,
          MS_NOT_FOUND, b);
}

static bool stream_ended(void *ctx) {
  ms_sim_framework_stats st;
  ms_sim_framework_stats_get(ctx, &st);
  return !st.connected;
}

static void teardown(ms_sim_framework *f) {
  const char *id = ms_sim_framework_id(f);
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = (char *)id;
  Meseta__V1__FrameworkID *ids[] = {&fid};
  Meseta__V1__GetFrameworksRequest gf = MESETA__V1__GET_FRAMEWORKS_REQUEST__INIT;
  gf.framework_ids = ids;
  gf.n_framework_ids = 1;
  Meseta__V1__GetFrameworksResponse *fr = (Meseta__V1__GetFrameworksResponse *)read_at(
      "/meseta.v1.Operator/GetFrameworks", &gf.base, &meseta__v1__get_frameworks_response__descriptor, 0);
  CU_ASSERT_EQUAL(fr->n_frameworks, 1);
  protobuf_c_message_free_unpacked(&fr->base, NULL);

  Meseta__V1__TeardownFrameworkRequest t = MESETA__V1__TEARDOWN_FRAMEWORK_REQUEST__INIT;
  t.framework_id = &fid;
  int64_t rev =
      mutate("/meseta.v1.Operator/Teardown", &t.base, &meseta__v1__teardown_framework_response__descriptor);
  fr = (Meseta__V1__GetFrameworksResponse *)read_at("/meseta.v1.Operator/GetFrameworks", &gf.base,
                                                    &meseta__v1__get_frameworks_response__descriptor, rev);
  CU_ASSERT_EQUAL(fr->n_frameworks, 0); /* completed: no longer listed as active */
  protobuf_c_message_free_unpacked(&fr->base, NULL);
  CU_ASSERT(ms_sim_wait(stream_ended, f, WAIT_MS)); /* its stream was ended */
  refused("/meseta.v1.Operator/Teardown", &t.base, &meseta__v1__teardown_framework_response__descriptor,
          MS_NOT_FOUND, id);
}

/* ---- the test ---- */

typedef struct agents_wait {
  size_t want;
} agents_wait;

static bool agents_seen(void *ctx) {
  agents_wait *w = ctx;
  Meseta__V1__GetAgentsRequest req = MESETA__V1__GET_AGENTS_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  if (call("/meseta.v1.Operator/GetAgents", &req.base, &meseta__v1__get_agents_response__descriptor, &resp,
           NULL) != MS_OK)
    return false;
  bool ok = ((Meseta__V1__GetAgentsResponse *)resp)->n_agents == w->want;
  protobuf_c_message_free_unpacked(resp, NULL);
  return ok;
}

static void test_mutations(void) {
  ms_test_cluster c;
  ms_test_cluster_start(&c, etcd, dir, "mut", 1, "5s");
  CU_ASSERT_FATAL(ms_test_cluster_wait_leader(&c, WAIT_MS) == 0);
  alloc_addr = c.addr[0];
  ms_error *err = NULL;
  _cleanup_free_ char *bin = ms_test_binary("services/master-api/meseta-master-api");
  const char *argv[] = {bin,        "--listen",      "127.0.0.1:0", "--allocator", alloc_addr, "--name",
                        "mapi-mut", "--max-backoff", "200ms",       "--log-level", "debug",    NULL};
  ms_test_proc *mp = ms_test_start("master-api", dir, argv);
  mapi = ms_test_proc_address(mp);
  CU_ASSERT_FATAL(ms_sim_wait(ms_test_serving, (void *)mapi, WAIT_MS));

  ms_sim_agent_options ao = {.hostname = "node-a", .resources = "cpus:4;mem:2048;disk:1000"};
  ms_sim_agent *a = ms_sim_agent_start(alloc_addr, &ao, &err);
  ao.hostname = "node-b";
  ao.resources = "cpus:2;mem:1024";
  ms_sim_agent *b = ms_sim_agent_start(alloc_addr, &ao, &err);
  ao.hostname = "node-c";
  ms_sim_agent *cc = ms_sim_agent_start(alloc_addr, &ao, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  CU_ASSERT_PTR_NOT_NULL_FATAL(cc);
  agents_wait aw = {3};
  CU_ASSERT_FATAL(ms_sim_wait(agents_seen, &aw, WAIT_MS));
  ms_sim_framework_options fo = {.name = "doomed", .mode = MS_SIM_DECLINE, .refuse_ms = 60000};
  ms_sim_framework *f = ms_sim_framework_start(alloc_addr, &fo, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);

  weights_and_quota();
  reservations_and_volumes(ms_sim_agent_id(a));
  maintenance(ms_sim_agent_id(b));
  agent_lifecycle(ms_sim_agent_id(b));
  teardown(f);

  ms_sim_framework_free(f);
  ms_sim_agent_free(a);
  ms_sim_agent_free(b);
  ms_sim_agent_free(cc);
  CU_ASSERT_EQUAL(ms_test_proc_stop(mp, SIGTERM), 0);
  ms_test_proc_free(mp);
  ms_test_cluster_stop(&c);
}

/* ---- scheduler calls through master-api: Message, Shutdown, UpdateFramework ---- */

typedef struct agent_wait {
  ms_sim_agent *a;
  size_t field; /* offsetof in ms_sim_agent_stats */
} agent_wait;

static bool agent_counted(void *ctx) {
  agent_wait *w = ctx;
  ms_sim_agent_stats st;
  ms_sim_agent_stats_get(w->a, &st);
  return *(uint64_t *)((char *)&st + w->field) > 0;
}
#define WAIT_AGENT(agent, fieldname)                                                                         \
  do {                                                                                                       \
    agent_wait _w = {(agent), offsetof(ms_sim_agent_stats, fieldname)};                                      \
    CU_ASSERT_FATAL(ms_sim_wait(agent_counted, &_w, WAIT_MS));                                               \
  } while (0)

typedef struct offer_wait {
  ms_sim_framework *f;
  const char *role; /* NULL: any */
  Meseta__V1__Offer *offer;
} offer_wait;

static const char *offer_role(const Meseta__V1__Offer *o) {
  for (size_t i = 0; i < o->n_resources; i++)
    if (o->resources[i]->allocation_info && o->resources[i]->allocation_info->role)
      return o->resources[i]->allocation_info->role;
  return "";
}

static bool offer_came(void *ctx) {
  offer_wait *w = ctx;
  Meseta__V1__Offer *o;
  while ((o = ms_sim_framework_take_offer(w->f))) {
    if (!w->role || strcmp(offer_role(o), w->role) == 0) {
      w->offer = o;
      return true;
    }
    protobuf_c_message_free_unpacked(&o->base, NULL);
  }
  return false;
}

static Meseta__V1__Offer *wait_offer(ms_sim_framework *f, const char *role) {
  offer_wait w = {f, role, NULL};
  CU_ASSERT_FATAL(ms_sim_wait(offer_came, &w, WAIT_MS));
  return w.offer;
}

/* A scheduler call through master-api, expected to end with `want` (MS_OK, or an
 * error whose message names `needle`). */
static void sched_call(ms_sim_framework *f, Meseta__V1__SchedulerCallRequest *req, ms_status want,
                       const char *needle) {
  ms_error *err = NULL;
  int rc = ms_sim_framework_call(f, req, &err);
  ms_status got = rc < 0 ? err->code : MS_OK;
  if (got != want || (rc < 0 && needle && !strstr(err->msg, needle)))
    fprintf(stderr, "scheduler call: got %s `%s`, want %s `...%s...`\n", ms_status_name(got),
            err ? err->msg : "", ms_status_name(want), needle ? needle : "");
  CU_ASSERT_EQUAL(got, want);
  if (rc < 0 && needle)
    CU_ASSERT(strstr(err->msg, needle) != NULL);
  ms_error_free(err);
}

typedef struct fw_view_wait {
  const char *id, *name;
} fw_view_wait;

/* master-api's view shows the framework with that name and roles ["eng"]. */
static bool fw_view_updated(void *ctx) {
  fw_view_wait *w = ctx;
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = (char *)w->id;
  Meseta__V1__FrameworkID *ids[] = {&fid};
  Meseta__V1__GetFrameworksRequest gf = MESETA__V1__GET_FRAMEWORKS_REQUEST__INIT;
  gf.framework_ids = ids;
  gf.n_framework_ids = 1;
  ProtobufCMessage *resp = NULL;
  if (call("/meseta.v1.Operator/GetFrameworks", &gf.base, &meseta__v1__get_frameworks_response__descriptor,
           &resp, NULL) != MS_OK)
    return false;
  Meseta__V1__GetFrameworksResponse *r = (Meseta__V1__GetFrameworksResponse *)resp;
  const Meseta__V1__FrameworkInfo *fi = r->n_frameworks == 1 ? r->frameworks[0]->framework_info : NULL;
  bool ok = fi && strcmp(fi->name, w->name) == 0 && fi->n_roles == 1 && strcmp(fi->roles[0], "eng") == 0;
  protobuf_c_message_free_unpacked(resp, NULL);
  return ok;
}

/* The framework's registry record (its info). */
static char *recorded_name(const char *registry, const char *id) {
  Meseta__V1__GetRequest g = MESETA__V1__GET_REQUEST__INIT;
  g.kind = MESETA__V1__RECORD_KIND__FRAMEWORK;
  g.id = (char *)id;
  ms_rpc_channel *ch = ms_rpc_channel_new(registry, NULL, NULL);
  ms_rpc_call_options co = {.timeout_ms = 10000};
  ProtobufCMessage *r = NULL;
  ms_error *err = NULL;
  char *name = NULL;
  if (ms_rpc_unary(ch, "/meseta.v1.Registry/Get", &g.base, &meseta__v1__record__descriptor, &co, &r, &err) ==
      0) {
    Meseta__V1__Record *rec = (Meseta__V1__Record *)r;
    if (rec->framework && rec->framework->info)
      name = ms_xstrdup(rec->framework->info->name);
    protobuf_c_message_free_unpacked(r, NULL);
  }
  ms_error_free(err);
  ms_rpc_channel_free(ch);
  return name;
}

typedef struct rec_wait {
  const char *registry, *id, *name;
} rec_wait;

static bool record_updated(void *ctx) {
  rec_wait *w = ctx;
  _cleanup_free_ char *n = recorded_name(w->registry, w->id);
  return n && strcmp(n, w->name) == 0;
}

static void test_scheduler_calls(void) {
  ms_test_cluster c;
  ms_test_cluster_start(&c, etcd, dir, "sched", 1, "5s");
  CU_ASSERT_FATAL(ms_test_cluster_wait_leader(&c, WAIT_MS) == 0);
  alloc_addr = c.addr[0];
  ms_error *err = NULL;
  _cleanup_free_ char *bin = ms_test_binary("services/master-api/meseta-master-api");
  const char *argv[] = {bin,          "--listen",      "127.0.0.1:0", "--allocator", alloc_addr, "--name",
                        "mapi-sched", "--max-backoff", "200ms",       "--log-level", "debug",    NULL};
  ms_test_proc *mp = ms_test_start("master-api-sched", dir, argv);
  mapi = ms_test_proc_address(mp);
  CU_ASSERT_FATAL(ms_sim_wait(ms_test_serving, (void *)mapi, WAIT_MS));
  ms_sim_agent_options ao = {.hostname = "node-s", .resources = "cpus:4;mem:4096", .task_ms = -1};
  ms_sim_agent *a = ms_sim_agent_start(alloc_addr, &ao, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  ms_sim_framework_options fo = {.name = "sched", .mode = MS_SIM_HOLD, .refuse_ms = 0, .public_api = true};
  ms_sim_framework *f = ms_sim_framework_start(mapi, &fo, &err);
  if (!f)
    fprintf(stderr, "framework: %s\n", err->msg);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  Meseta__V1__Offer *o = wait_offer(f, NULL);
  if (ms_sim_framework_launch(f, o, "t1", "cpus:1;mem:128", &err) < 0)
    fprintf(stderr, "launch: %s\n", err->msg);
  protobuf_c_message_free_unpacked(&o->base, NULL);
  WAIT_AGENT(a, run_tasks);

  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = (char *)ms_sim_framework_id(f);
  char *stream = (char *)ms_sim_framework_stream_id(f);
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT, nobody = MESETA__V1__AGENT_ID__INIT;
  aid.value = (char *)ms_sim_agent_id(a);
  nobody.value = "no-such-agent";
  Meseta__V1__ExecutorID eid = MESETA__V1__EXECUTOR_ID__INIT, nope = MESETA__V1__EXECUTOR_ID__INIT;
  eid.value = "t1"; /* a command task's executor has the task's id */
  nope.value = "no-such-executor";

  /* Message: to the executor on its agent; unknown ones are NOT_FOUND, named. */
  Meseta__V1__MessageRequest msg = MESETA__V1__MESSAGE_REQUEST__INIT;
  msg.framework_id = &fid;
  msg.stream_id = stream;
  msg.agent_id = &aid;
  msg.executor_id = &eid;
  msg.data.data = (uint8_t *)"hello";
  msg.data.len = 5;
  Meseta__V1__SchedulerCallRequest req = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  req.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_MESSAGE;
  req.message = &msg;
  sched_call(f, &req, MS_OK, NULL);
  WAIT_AGENT(a, framework_messages);
  ms_sim_agent_stats ast;
  ms_sim_agent_stats_get(a, &ast);
  CU_ASSERT_STRING_EQUAL(ast.last_message, "hello");
  msg.executor_id = &nope;
  sched_call(f, &req, MS_NOT_FOUND, "no-such-executor");
  msg.executor_id = &eid;
  msg.agent_id = &nobody;
  sched_call(f, &req, MS_NOT_FOUND, "no-such-agent");

  /* UpdateFramework: new name, roles ["eng"], a capability and a minimum offer size
   * for eng, without re-subscribing. Wrong changes are refused, naming the field. */
  char *eng[] = {"eng"}, *ops[] = {"ops"};
  Meseta__V1__FrameworkInfo__Capability cap = MESETA__V1__FRAMEWORK_INFO__CAPABILITY__INIT;
  cap.type = MESETA__V1__FRAMEWORK_INFO__CAPABILITY__TYPE__REGION_AWARE;
  Meseta__V1__FrameworkInfo__Capability *caps[] = {&cap};
  Meseta__V1__Value__Scalar half = MESETA__V1__VALUE__SCALAR__INIT;
  half.value = 0.5;
  Meseta__V1__OfferFilters__ResourceQuantities__QuantitiesEntry qe =
      MESETA__V1__OFFER_FILTERS__RESOURCE_QUANTITIES__QUANTITIES_ENTRY__INIT;
  qe.key = "cpus";
  qe.value = &half;
  Meseta__V1__OfferFilters__ResourceQuantities__QuantitiesEntry *qes[] = {&qe};
  Meseta__V1__OfferFilters__ResourceQuantities rq = MESETA__V1__OFFER_FILTERS__RESOURCE_QUANTITIES__INIT;
  rq.quantities = qes;
  rq.n_quantities = 1;
  Meseta__V1__OfferFilters__ResourceQuantities *rqs[] = {&rq};
  Meseta__V1__OfferFilters__MinAllocatableResources mar =
      MESETA__V1__OFFER_FILTERS__MIN_ALLOCATABLE_RESOURCES__INIT;
  mar.quantities = rqs;
  mar.n_quantities = 1;
  Meseta__V1__OfferFilters ofl = MESETA__V1__OFFER_FILTERS__INIT;
  ofl.min_allocatable_resources = &mar;
  Meseta__V1__FrameworkInfo__OfferFiltersEntry ofe = MESETA__V1__FRAMEWORK_INFO__OFFER_FILTERS_ENTRY__INIT;
  ofe.key = "eng";
  ofe.value = &ofl;
  Meseta__V1__FrameworkInfo__OfferFiltersEntry *ofes[] = {&ofe};
  Meseta__V1__FrameworkInfo info = MESETA__V1__FRAMEWORK_INFO__INIT;
  info.name = "sched-renamed";
  info.user = "sim";
  info.id = &fid;
  info.roles = eng;
  info.n_roles = 1;
  info.capabilities = caps;
  info.n_capabilities = 1;
  info.offer_filters = ofes;
  info.n_offer_filters = 1;
  Meseta__V1__UpdateFrameworkRequest uf = MESETA__V1__UPDATE_FRAMEWORK_REQUEST__INIT;
  uf.framework_id = &fid;
  uf.stream_id = stream;
  uf.framework_info = &info;
  req.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_UPDATE_FRAMEWORK;
  req.update_framework = &uf;

  info.user = "someone-else";
  sched_call(f, &req, MS_INVALID_ARGUMENT, "framework_info.user");
  info.user = "sim";
  uf.suppressed_roles = ops;
  uf.n_suppressed_roles = 1;
  sched_call(f, &req, MS_INVALID_ARGUMENT, "suppressed_roles[0]");
  uf.n_suppressed_roles = 0;
  ofe.key = "ops";
  sched_call(f, &req, MS_INVALID_ARGUMENT, "offer_filters[ops]");
  ofe.key = "eng";
  half.value = -1;
  sched_call(f, &req, MS_INVALID_ARGUMENT, "offer_filters[eng]");
  half.value = 0.5;

  sched_call(f, &req, MS_OK, NULL);
  /* Offers now come for eng; the agent running t1 has the new info; the view and the
   * registry record show it; the stream is the same one. */
  o = wait_offer(f, "eng");
  protobuf_c_message_free_unpacked(&o->base, NULL);
  WAIT_AGENT(a, framework_updates);
  ms_sim_agent_stats_get(a, &ast);
  CU_ASSERT_STRING_EQUAL(ast.last_framework_name, "sched-renamed");
  fw_view_wait vw = {ms_sim_framework_id(f), "sched-renamed"};
  CU_ASSERT(ms_sim_wait(fw_view_updated, &vw, WAIT_MS));
  rec_wait rw = {ms_test_proc_address(c.registry), ms_sim_framework_id(f), "sched-renamed"};
  CU_ASSERT(ms_sim_wait(record_updated, &rw, WAIT_MS));
  ms_sim_framework_stats fst;
  ms_sim_framework_stats_get(f, &fst);
  CU_ASSERT(fst.connected);
  CU_ASSERT_EQUAL(fst.resubscriptions, 0);

  /* Shutdown: the executor's agent is told; unknown executors are NOT_FOUND. */
  Meseta__V1__ShutdownRequest sd = MESETA__V1__SHUTDOWN_REQUEST__INIT;
  sd.framework_id = &fid;
  sd.stream_id = stream;
  sd.agent_id = &aid;
  sd.executor_id = &nope;
  req.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_SHUTDOWN;
  req.shutdown = &sd;
  sched_call(f, &req, MS_NOT_FOUND, "no-such-executor");
  sd.executor_id = &eid;
  sched_call(f, &req, MS_OK, NULL);
  WAIT_AGENT(a, executor_shutdowns);

  ms_sim_framework_free(f);
  ms_sim_agent_free(a);
  CU_ASSERT_EQUAL(ms_test_proc_stop(mp, SIGTERM), 0);
  ms_test_proc_free(mp);
  ms_test_cluster_stop(&c);
}

/* ---- DOWN machines survive a failover ---- */

static ms_status op_call(const char *addr, const Meseta__V1__OperatorCallRequest *req, char **msg) {
  return ms_test_operator_call(addr, req, msg);
}

/* Start- or StopMaintenance of one machine (`host`) through the allocator. */
static ms_status maint_op(const char *addr, const char *host, bool start, char **msg) {
  Meseta__V1__MachineID m = MESETA__V1__MACHINE_ID__INIT;
  m.hostname = (char *)host;
  Meseta__V1__MachineID *ms[] = {&m};
  Meseta__V1__StartMaintenanceRequest sr = MESETA__V1__START_MAINTENANCE_REQUEST__INIT;
  Meseta__V1__StopMaintenanceRequest tr = MESETA__V1__STOP_MAINTENANCE_REQUEST__INIT;
  sr.machines = tr.machines = ms;
  sr.n_machines = tr.n_machines = 1;
  Meseta__V1__OperatorCallRequest req = MESETA__V1__OPERATOR_CALL_REQUEST__INIT;
  if (start) {
    req.call_case = MESETA__V1__OPERATOR_CALL_REQUEST__CALL_START_MAINTENANCE;
    req.start_maintenance = &sr;
  } else {
    req.call_case = MESETA__V1__OPERATOR_CALL_REQUEST__CALL_STOP_MAINTENANCE;
    req.stop_maintenance = &tr;
  }
  return op_call(addr, &req, msg);
}

static Meseta__V1__Record *reg_get(const char *registry, Meseta__V1__RecordKind kind, const char *id) {
  Meseta__V1__GetRequest g = MESETA__V1__GET_REQUEST__INIT;
  g.kind = kind;
  g.id = (char *)id;
  ms_rpc_channel *ch = ms_rpc_channel_new(registry, NULL, NULL);
  ms_rpc_call_options co = {.timeout_ms = 10000};
  ProtobufCMessage *r = NULL;
  ms_error *err = NULL;
  if (ms_rpc_unary(ch, "/meseta.v1.Registry/Get", &g.base, &meseta__v1__record__descriptor, &co, &r, &err) <
      0)
    fprintf(stderr, "registry get `%s`: %s\n", id, err->msg);
  ms_error_free(err);
  ms_rpc_channel_free(ch);
  return (Meseta__V1__Record *)r;
}

static void test_down_survives_failover(void) {
  ms_test_cluster c;
  ms_test_cluster_start(&c, etcd, dir, "down", 2, "2s");
  int leader = ms_test_cluster_wait_leader(&c, WAIT_MS);
  CU_ASSERT_FATAL(leader >= 0);
  const char *addr = c.addr[leader], *next = c.addr[1 - leader];
  ms_error *err = NULL;
  ms_sim_agent_options ao = {.hostname = "node-d", .resources = "cpus:1;mem:256"};
  ms_sim_agent *a = ms_sim_agent_start(addr, &ao, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);

  Meseta__V1__MachineID md = MESETA__V1__MACHINE_ID__INIT;
  md.hostname = "node-d";
  Meseta__V1__MachineID *ms[] = {&md};
  Google__Protobuf__Timestamp start = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
  start.seconds = time(NULL);
  Meseta__V1__Unavailability un = MESETA__V1__UNAVAILABILITY__INIT;
  un.start = &start;
  Meseta__V1__MaintenanceWindow w = MESETA__V1__MAINTENANCE_WINDOW__INIT;
  w.machine_ids = ms;
  w.n_machine_ids = 1;
  w.unavailability = &un;
  Meseta__V1__MaintenanceWindow *ws[] = {&w};
  Meseta__V1__MaintenanceSchedule sc = MESETA__V1__MAINTENANCE_SCHEDULE__INIT;
  sc.windows = ws;
  sc.n_windows = 1;
  Meseta__V1__UpdateMaintenanceScheduleRequest us = MESETA__V1__UPDATE_MAINTENANCE_SCHEDULE_REQUEST__INIT;
  us.schedule = &sc;
  Meseta__V1__OperatorCallRequest req = MESETA__V1__OPERATOR_CALL_REQUEST__INIT;
  req.call_case = MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UPDATE_MAINTENANCE_SCHEDULE;
  req.update_maintenance_schedule = &us;
  CU_ASSERT_EQUAL_FATAL(op_call(addr, &req, NULL), MS_OK);
  CU_ASSERT_EQUAL_FATAL(maint_op(addr, "node-d", true, NULL), MS_OK);
  /* Durable before the answer: the record holds the DOWN machine with the schedule. */
  Meseta__V1__Record *rec =
      reg_get(ms_test_proc_address(c.registry), MESETA__V1__RECORD_KIND__MAINTENANCE, "schedule");
  CU_ASSERT_FATAL(rec && rec->maintenance);
  CU_ASSERT_EQUAL_FATAL(rec->maintenance->n_down_machines, 1);
  CU_ASSERT_STRING_EQUAL(rec->maintenance->down_machines[0]->hostname, "node-d");
  CU_ASSERT(rec->maintenance->schedule && rec->maintenance->schedule->n_windows == 1);
  protobuf_c_message_free_unpacked(&rec->base, NULL);

  ms_test_proc_stop(c.alloc[leader], SIGKILL);
  ms_test_proc_free(c.alloc[leader]);
  c.alloc[leader] = NULL;
  /* The new leader serves once it loaded the registry: a machine that is not DOWN
   * cannot be stopped, node-d's agent is refused, node-d comes back UP. */
  char *msg = NULL;
  CU_ASSERT_EQUAL(maint_op(next, "node-x", false, &msg), MS_FAILED_PRECONDITION);
  CU_ASSERT(msg && strstr(msg, "stop_maintenance.machines[0]"));
  free(TAKE_PTR(msg));
  ms_sim_agent *again = ms_sim_agent_start(next, &ao, &err);
  CU_ASSERT_PTR_NULL(again);
  ms_sim_agent_free(again);
  ms_error_free(TAKE_PTR(err));
  CU_ASSERT_EQUAL(maint_op(next, "node-d", false, &msg), MS_OK);
  free(TAKE_PTR(msg));
  again = ms_sim_agent_start(next, &ao, &err);
  CU_ASSERT_PTR_NOT_NULL(again);
  ms_error_free(err);
  ms_sim_agent_free(again);
  ms_sim_agent_free(a);
  ms_test_cluster_stop(&c);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"every_operator_mutation_round_trips", test_mutations},
      {"scheduler_message_shutdown_update_framework", test_scheduler_calls},
      {"down_machines_survive_failover", test_down_survives_failover},
      {NULL, NULL},
  };
  return ms_test_main_etcd(argc, argv, "master-api-mutations", cases, &dir, &etcd);
}
