/* Resource operations on the real agent (issue 15): a framework (tests/lib/sim.h) in role
 * `ops` reserves, creates persistent volumes, destroys and unreserves them through a real
 * meseta-allocator and meseta-agent. Each operation's feedback reaches the framework
 * (OPERATION_FINISHED / FAILED), volume directories appear and go under the agent's
 * --volume-dir, a kill -9 between "applied" and "acknowledged" resends the status once
 * applied, and path-escaping persistence ids are refused without a trace on disk. The
 * agent's checkpoint (meta/resources.pb) is read back with agent_ops_decode. Waits are
 * bounded hang guards. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/resources-io.h"

#include "agent-internal.h"
#include "cluster.h"
#include "proc.h"
#include "sim.h"
#include "testlib.h"

#define WAIT_MS 30000
#define ROLE "ops"

static char *dir, *work, *volumes;
static ms_test_proc *alloc_proc, *agent_proc;
static ms_sim_framework *fw;

static ms_test_proc *start_agent(const char *name) {
  _cleanup_free_ char *bin = ms_test_binary("services/agent/meseta-agent");
  _cleanup_free_ char *rt = ms_test_binary("services/agent/runtime/meseta-runtime");
  const char *argv[] = {bin,
                        "--allocator",
                        ms_test_proc_address(alloc_proc),
                        "--work-dir",
                        work,
                        "--volume-dir",
                        volumes,
                        "--resources",
                        "cpus:2;mem:1024;disk:1000;ports:[31000-32000]",
                        "--runtime",
                        rt,
                        "--no-switch-user",
                        "--listen",
                        "",
                        "--status-update-retry",
                        "1s",
                        "--log-level",
                        "debug",
                        NULL};
  ms_error *err = NULL;
  ms_test_proc *p = ms_test_proc_start(name, dir, argv, &err);
  if (!p)
    fprintf(stderr, "%s: %s\n", name, err->msg);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  return p;
}

static void up(void) {
  if (fw)
    return;
  /* An agent down this long is removed: its return then rebuilds it from REREGISTER. */
  static const char *const extra[] = {"--agent-reconnect-timeout", "8s", NULL};
  alloc_proc = ms_test_allocator_start(dir, "allocator", extra);
  agent_proc = start_agent("agent");
  ms_error *err = NULL;
  ms_sim_framework_options fo = {.name = "ops-test", .role = ROLE, .mode = MS_SIM_HOLD};
  fw = ms_sim_framework_start(ms_test_proc_address(alloc_proc), &fo, &err);
  if (!fw)
    fprintf(stderr, "framework: %s\n", err->msg);
  CU_ASSERT_PTR_NOT_NULL_FATAL(fw);
}

/* ---- resources in JSON, allocated to the role ---- */

#define DYN "{\"type\":\"DYNAMIC\",\"role\":\"" ROLE "\"}"
#define DISK(mb, extra)                                                                                      \
  "{\"name\":\"disk\",\"type\":\"SCALAR\",\"scalar\":{\"value\":" mb "},\"reservations\":[" DYN "]" extra "}"
#define VOLUME(id) ",\"disk\":{\"persistence\":{\"id\":\"" id "\"},\"volume\":{\"container_path\":\"data\"}}"

/* allocated: to ROLE (a framework's operation) or not (an operator's). */
static Meseta__V1__Resources *res_as(const char *json, bool allocated) {
  ms_resources *set = NULL;
  ms_error *err = NULL;
  if (ms_resources_from_json(json, strlen(json), &set, &err) < 0)
    fprintf(stderr, "%s: %s\n", json, err->msg);
  CU_ASSERT_PTR_NOT_NULL_FATAL(set);
  if (allocated)
    ms_resources_allocate(set, ROLE, NULL);
  Meseta__V1__Resources *m = ms_resources_to_proto(set);
  ms_resources_free(set);
  return m;
}

static Meseta__V1__Resources *res(const char *json) {
  return res_as(json, true);
}

/* ---- offers ---- */

typedef struct offer_ctx {
  bool (*want)(const Meseta__V1__Offer *o, const void *arg);
  const void *arg;
  Meseta__V1__Offer *offer;
} offer_ctx;

static bool any_offer(const Meseta__V1__Offer *o, const void *arg) {
  (void)o;
  (void)arg;
  return true;
}

/* Scalar amount of `name` in the offer reserved to ROLE (reserved) or not, with volume id
 * `vol` (NULL: not a volume). */
static double amount(const Meseta__V1__Offer *o, const char *name, bool reserved, const char *vol) {
  double sum = 0;
  for (size_t i = 0; i < o->n_resources; i++) {
    const Meseta__V1__Resource *r = o->resources[i];
    if (strcmp(r->name, name) != 0 || !r->scalar)
      continue;
    bool rsv = r->n_reservations && strcmp(r->reservations[r->n_reservations - 1]->role, ROLE) == 0;
    const char *id = r->disk && r->disk->persistence ? r->disk->persistence->id : NULL;
    if (rsv != reserved || !!id != !!vol || (vol && strcmp(id, vol) != 0))
      continue;
    sum += r->scalar->value;
  }
  return sum;
}

static bool has_volume(const Meseta__V1__Offer *o, const void *arg) {
  return amount(o, "disk", true, arg) > 0;
}

static bool no_reserved(const Meseta__V1__Offer *o, const void *arg) {
  (void)arg;
  for (size_t i = 0; i < o->n_resources; i++)
    if (o->resources[i]->n_reservations)
      return false;
  return true;
}

static bool took(void *ctx) {
  offer_ctx *c = ctx;
  Meseta__V1__Offer *o = ms_sim_framework_take_offer(fw);
  if (!o)
    return false;
  if (c->want(o, c->arg)) {
    c->offer = o;
    return true;
  }
  ms_sim_framework_decline(fw, o->id->value, 0, NULL); /* stale: it comes back as it is now */
  protobuf_c_message_free_unpacked(&o->base, NULL);
  return false;
}

/* The next offer for which want() says yes (the caller frees it). */
static Meseta__V1__Offer *next_offer(bool (*want)(const Meseta__V1__Offer *, const void *), const void *arg) {
  offer_ctx c = {want, arg, NULL};
  CU_ASSERT_FATAL(ms_sim_wait(took, &c, WAIT_MS));
  return c.offer;
}

static void free_offer(Meseta__V1__Offer *o) {
  protobuf_c_message_free_unpacked(&o->base, NULL);
}

/* ---- operations ---- */

/* Accepts the next offer with one operation `op` (its id set to op_id). */
static int accept_op(Meseta__V1__Offer__Operation *op, const char *op_id, ms_error **err) {
  Meseta__V1__Offer *o = next_offer(any_offer, NULL);
  Meseta__V1__OperationID oid = MESETA__V1__OPERATION_ID__INIT;
  oid.value = (char *)op_id;
  op->id = &oid;
  int rc = ms_sim_framework_accept(fw, o, op, 0, err);
  if (rc < 0)
    ms_sim_framework_decline(fw, o->id->value, 0, NULL);
  free_offer(o);
  return rc;
}

static void create(const char *op_id, const char *json) {
  Meseta__V1__Resources *v = res(json);
  Meseta__V1__Operation__Create c = MESETA__V1__OPERATION__CREATE__INIT;
  c.n_volumes = v->n_resources;
  c.volumes = v->resources;
  Meseta__V1__Offer__Operation op = MESETA__V1__OFFER__OPERATION__INIT;
  op.operation_case = MESETA__V1__OFFER__OPERATION__OPERATION_CREATE;
  op.create = &c;
  ms_error *err = NULL;
  MS_ASSERT_OK(accept_op(&op, op_id, &err), &err);
  ms_resources_proto_free(v);
}

static void reserve(const char *op_id, const char *text) {
  Meseta__V1__Offer *o = next_offer(any_offer, NULL);
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_sim_framework_reserve(fw, o, op_id, text, &err), &err);
  free_offer(o);
}

typedef struct op_ctx {
  const char *id;
  Meseta__V1__OperationState state;
  Meseta__V1__OperationStatus *st;
} op_ctx;

static bool op_reached(void *ctx) {
  op_ctx *c = ctx;
  if (c->st)
    protobuf_c_message_free_unpacked(&c->st->base, NULL);
  c->st = ms_sim_framework_op_status(fw, c->id);
  return c->st && c->st->state == c->state;
}

/* Waits for op_id's status to be `state`; returns it (the caller frees). */
static Meseta__V1__OperationStatus *wait_op(const char *op_id, Meseta__V1__OperationState state) {
  op_ctx c = {op_id, state, NULL};
  bool ok = ms_sim_wait(op_reached, &c, WAIT_MS);
  if (!ok)
    fprintf(stderr, "operation %s: state %d (%s), wanted %d\n", op_id, c.st ? (int)c.st->state : -1,
            c.st && c.st->message ? c.st->message : "no status", (int)state);
  CU_ASSERT_FATAL(ok);
  return c.st;
}

static void expect_op(const char *op_id, Meseta__V1__OperationState state) {
  Meseta__V1__OperationStatus *st = wait_op(op_id, state);
  protobuf_c_message_free_unpacked(&st->base, NULL);
}

/* ---- the agent's checkpoint ---- */

typedef struct ckpt {
  ms_resources *res;
  agent_op *ops;
} ckpt;

static ckpt read_ckpt(void) {
  _cleanup_free_ char *path = ms_xasprintf("%s/meta/resources.pb", work);
  ckpt c = {NULL, NULL};
  FILE *f = fopen(path, "rbe");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  static uint8_t buf[1 << 20];
  size_t n = fread(buf, 1, sizeof(buf), f);
  fclose(f);
  uint8_t version[16];
  ms_error *err = NULL;
  MS_ASSERT_OK(agent_ops_decode(buf, n, &c.res, version, &c.ops, &err), &err);
  return c;
}

static void free_ckpt(ckpt *c) {
  ms_resources_free(c->res);
  agent_ops_list_free(c->ops);
}

static const agent_op *ckpt_op(const ckpt *c, const char *op_id) {
  for (const agent_op *o = c->ops; o; o = o->next)
    if (o->rec->info && o->rec->info->id && strcmp(o->rec->info->id->value, op_id) == 0)
      return o;
  return NULL;
}

static bool acked_in_ckpt(void *ctx) {
  ckpt c = read_ckpt();
  const agent_op *o = ckpt_op(&c, ctx);
  bool yes = o && o->acked;
  free_ckpt(&c);
  return yes;
}

static char *volume_dir(const char *id) {
  return ms_xasprintf("%s/%s/%s", volumes, ROLE, id);
}

static bool exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* ---- cases ---- */

/* The first step: RESERVE then CREATE of a 64 MiB volume, each FINISHED on the
 * framework's stream and acknowledged; the directory exists; the next offer has both. */
static void test_ops_reserve_create_finishes(void) {
  up();
  reserve("r1", "cpus:1;disk:300");
  expect_op("r1", MESETA__V1__OPERATION_STATE__OPERATION_FINISHED);
  create("c1", "[" DISK("64", VOLUME("vol1")) "]");
  expect_op("c1", MESETA__V1__OPERATION_STATE__OPERATION_FINISHED);
  CU_ASSERT(ms_sim_framework_wait_stat(fw, offsetof(ms_sim_framework_stats, op_acks), 2, WAIT_MS));
  _cleanup_free_ char *vd = volume_dir("vol1");
  CU_ASSERT(exists(vd));

  Meseta__V1__Offer *o = next_offer(has_volume, "vol1");
  CU_ASSERT_DOUBLE_EQUAL(amount(o, "disk", true, "vol1"), 64, 0.001);
  CU_ASSERT_DOUBLE_EQUAL(amount(o, "cpus", true, NULL), 1, 0.001);
  CU_ASSERT_DOUBLE_EQUAL(amount(o, "disk", true, NULL), 236, 0.001);
  ms_sim_framework_decline(fw, o->id->value, 0, NULL);
  free_offer(o);

  /* The agent's own record: both applied, both acknowledged by the framework's acks. */
  CU_ASSERT(ms_sim_wait(acked_in_ckpt, "r1", WAIT_MS));
  CU_ASSERT(ms_sim_wait(acked_in_ckpt, "c1", WAIT_MS));
  ckpt c = read_ckpt();
  ms_resources *vols = ms_resources_persistent_volumes(c.res);
  CU_ASSERT_EQUAL(ms_resources_size(vols), 1);
  ms_resources_free(vols);
  free_ckpt(&c);
}

static size_t log_count(const char *log, const char *needle) {
  _cleanup_free_ char *path = ms_xstrdup(log);
  FILE *f = fopen(path, "re");
  if (!f)
    return 0;
  char line[4096];
  size_t n = 0;
  while (fgets(line, sizeof(line), f))
    n += strstr(line, needle) != NULL;
  fclose(f);
  return n;
}

typedef struct log_ctx {
  const char *log, *needle;
} log_ctx;

static bool logged(void *ctx) {
  log_ctx *c = ctx;
  return log_count(c->log, c->needle) > 0;
}

/* kill -9 after the agent applied CREATE but before the acknowledgement: the restarted
 * agent sends the status again (it was checkpointed unacknowledged), applied once, the
 * volume intact, and the reservation still offered after REREGISTER. */
static void test_ops_kill9_before_ack(void) {
  up();
  ms_sim_framework_set_operation_acks(fw, false);
  create("c2", "[" DISK("64", VOLUME("vol2")) "]");
  Meseta__V1__OperationStatus *first = wait_op("c2", MESETA__V1__OPERATION_STATE__OPERATION_FINISHED);
  _cleanup_free_ char *vd = volume_dir("vol2");
  _cleanup_free_ char *file = ms_xasprintf("%s/data.txt", vd);
  FILE *f = fopen(file, "we");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fputs("kept\n", f);
  fclose(f);
  ckpt c = read_ckpt();
  CU_ASSERT(ckpt_op(&c, "c2") && !ckpt_op(&c, "c2")->acked);
  free_ckpt(&c);

  CU_ASSERT_EQUAL(ms_test_proc_stop(agent_proc, SIGKILL), 128 + SIGKILL);
  ms_test_proc_free(agent_proc);
  agent_proc = start_agent("agent-after-kill9");
  log_ctx lc = {ms_test_proc_log(agent_proc), "sending the status of operation `c2`"};
  CU_ASSERT(ms_sim_wait(logged, &lc, WAIT_MS)); /* resent after REREGISTER */
  CU_ASSERT_EQUAL(log_count(ms_test_proc_log(agent_proc), "operation `c2` CREATE"),
                  0); /* not applied again */
  CU_ASSERT(exists(file));

  ms_sim_framework_set_operation_acks(fw, true);
  /* The framework acknowledges late (the status it got before the kill): the allocator
   * passes it on to the restarted agent, which stops resending. */
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = (char *)ms_sim_framework_id(fw);
  Meseta__V1__AcknowledgeOperationStatusRequest r = MESETA__V1__ACKNOWLEDGE_OPERATION_STATUS_REQUEST__INIT;
  r.framework_id = &fid;
  r.stream_id = (char *)ms_sim_framework_stream_id(fw);
  r.agent_id = first->agent_id;
  r.operation_id = first->operation_id;
  r.uuid = first->uuid;
  Meseta__V1__SchedulerCallRequest call = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  call.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_ACKNOWLEDGE_OPERATION_STATUS;
  call.acknowledge_operation_status = &r;
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_sim_framework_call(fw, &call, &err), &err);
  protobuf_c_message_free_unpacked(&first->base, NULL);
  CU_ASSERT(ms_sim_wait(acked_in_ckpt, "c2", WAIT_MS));

  Meseta__V1__Offer *o = next_offer(has_volume, "vol2");
  CU_ASSERT_DOUBLE_EQUAL(amount(o, "disk", true, "vol1"), 64, 0.001);
  CU_ASSERT_DOUBLE_EQUAL(amount(o, "cpus", true, NULL), 1, 0.001);
  ms_sim_framework_decline(fw, o->id->value, 0, NULL);
  free_offer(o);
}

static bool agent_removed(void *ctx) {
  (void)ctx;
  return log_count(ms_test_proc_log(alloc_proc), "agent removed:") > 0;
}

/* The allocator forgets the agent (down past --agent-reconnect-timeout); when it comes
 * back, REREGISTER's checkpointed resources give the reservation and both volumes back to
 * the role. */
static void test_ops_checkpointed_resources_rebuild(void) {
  up();
  CU_ASSERT_EQUAL(ms_test_proc_stop(agent_proc, SIGKILL), 128 + SIGKILL);
  ms_test_proc_free(agent_proc);
  agent_proc = NULL;
  CU_ASSERT_FATAL(ms_sim_wait(agent_removed, NULL, WAIT_MS));
  agent_proc = start_agent("agent-after-removal");
  Meseta__V1__Offer *o = next_offer(has_volume, "vol2");
  CU_ASSERT_DOUBLE_EQUAL(amount(o, "disk", true, "vol1"), 64, 0.001);
  CU_ASSERT_DOUBLE_EQUAL(amount(o, "disk", true, "vol2"), 64, 0.001);
  CU_ASSERT_DOUBLE_EQUAL(amount(o, "disk", true, NULL), 172, 0.001);
  CU_ASSERT_DOUBLE_EQUAL(amount(o, "cpus", true, NULL), 1, 0.001);
  CU_ASSERT_DOUBLE_EQUAL(amount(o, "cpus", false, NULL), 1, 0.001);
  ms_sim_framework_decline(fw, o->id->value, 0, NULL);
  free_offer(o);
}

/* Operator ReserveResources with `source`: the volume's reservation moves from role `from`
 * to role `to`; OK once the agent applied it. */
static void move_volume(const char *from_json, const char *to_json) {
  Meseta__V1__Resources *src = res_as(from_json, false), *dst = res_as(to_json, false);
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = (char *)ms_test_proc_address(agent_proc); /* the ready file holds the id */
  Meseta__V1__ReserveResourcesRequest rr = MESETA__V1__RESERVE_RESOURCES_REQUEST__INIT;
  rr.agent_id = &aid;
  rr.source = src->resources;
  rr.n_source = src->n_resources;
  rr.resources = dst->resources;
  rr.n_resources = dst->n_resources;
  Meseta__V1__OperatorCallRequest req = MESETA__V1__OPERATOR_CALL_REQUEST__INIT;
  req.call_case = MESETA__V1__OPERATOR_CALL_REQUEST__CALL_RESERVE_RESOURCES;
  req.reserve_resources = &rr;
  char *msg = NULL;
  ms_status code = ms_test_operator_call(ms_test_proc_address(alloc_proc), &req, &msg);
  if (code != MS_OK)
    fprintf(stderr, "reserve with source: %s\n", msg);
  CU_ASSERT_EQUAL(code, MS_OK);
  free(msg);
  ms_resources_proto_free(src);
  ms_resources_proto_free(dst);
}

static bool file_at(void *path) {
  return exists(path);
}

static bool in_role_ops2(void *ctx) {
  (void)ctx;
  ckpt c = read_ckpt();
  ms_resources *in_ops2 = ms_resources_reserved(c.res, "ops2");
  bool yes = ms_resources_size(in_ops2) == 1;
  ms_resources_free(in_ops2);
  free_ckpt(&c);
  return yes;
}

/* Reservation update (Mesos 1.10): vol2 moves to role `ops2` and back; its directory
 * follows, the data in it intact. */
static void test_ops_reservation_update_moves_volume(void) {
  up();
#define VOL2(role)                                                                                           \
  "[{\"name\":\"disk\",\"type\":\"SCALAR\",\"scalar\":{\"value\":64},\"reservations\":[{\"type\":"           \
  "\"DYNAMIC\",\"role\":\"" role "\"}]" VOLUME("vol2") "}]"
  move_volume(VOL2(ROLE), VOL2("ops2"));
  _cleanup_free_ char *moved = ms_xasprintf("%s/ops2/vol2/data.txt", volumes);
  _cleanup_free_ char *home = ms_xasprintf("%s/%s/vol2/data.txt", volumes, ROLE);
  CU_ASSERT_FATAL(ms_sim_wait(file_at, moved, WAIT_MS));
  CU_ASSERT(!exists(home));
  CU_ASSERT(ms_sim_wait(in_role_ops2, NULL, WAIT_MS)); /* checkpointed right after the move */

  move_volume(VOL2("ops2"), VOL2(ROLE));
  CU_ASSERT_FATAL(ms_sim_wait(file_at, home, WAIT_MS));
  CU_ASSERT(!exists(moved));
  char line[16] = "";
  FILE *f = fopen(home, "re");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  CU_ASSERT_PTR_NOT_NULL(fgets(line, sizeof(line), f));
  fclose(f);
  CU_ASSERT_STRING_EQUAL(line, "kept\n");
  Meseta__V1__Offer *o = next_offer(has_volume, "vol2");
  CU_ASSERT_DOUBLE_EQUAL(amount(o, "disk", true, "vol2"), 64, 0.001);
  ms_sim_framework_decline(fw, o->id->value, 0, NULL);
  free_offer(o);
#undef VOL2
}

/* DESTROY removes the directories (and data); UNRESERVE gives the resources back. */
static void test_ops_destroy_unreserve(void) {
  up();
  Meseta__V1__Resources *v = res("[" DISK("64", VOLUME("vol1")) "," DISK("64", VOLUME("vol2")) "]");
  Meseta__V1__Operation__Destroy d = MESETA__V1__OPERATION__DESTROY__INIT;
  d.n_volumes = v->n_resources;
  d.volumes = v->resources;
  Meseta__V1__Offer__Operation op = MESETA__V1__OFFER__OPERATION__INIT;
  op.operation_case = MESETA__V1__OFFER__OPERATION__OPERATION_DESTROY;
  op.destroy = &d;
  ms_error *err = NULL;
  MS_ASSERT_OK(accept_op(&op, "d1", &err), &err);
  ms_resources_proto_free(v);
  expect_op("d1", MESETA__V1__OPERATION_STATE__OPERATION_FINISHED);
  _cleanup_free_ char *v1 = volume_dir("vol1"), *v2 = volume_dir("vol2");
  CU_ASSERT(!exists(v1));
  CU_ASSERT(!exists(v2));

  Meseta__V1__Resources *u = res("[{\"name\":\"cpus\",\"type\":\"SCALAR\",\"scalar\":{\"value\":1},"
                                 "\"reservations\":[" DYN "]}," DISK("300", "") "]");
  Meseta__V1__Operation__Unreserve un = MESETA__V1__OPERATION__UNRESERVE__INIT;
  un.n_resources = u->n_resources;
  un.resources = u->resources;
  Meseta__V1__Offer__Operation op2 = MESETA__V1__OFFER__OPERATION__INIT;
  op2.operation_case = MESETA__V1__OFFER__OPERATION__OPERATION_UNRESERVE;
  op2.unreserve = &un;
  MS_ASSERT_OK(accept_op(&op2, "u1", &err), &err);
  ms_resources_proto_free(u);
  expect_op("u1", MESETA__V1__OPERATION_STATE__OPERATION_FINISHED);

  Meseta__V1__Offer *o = next_offer(no_reserved, NULL);
  CU_ASSERT_DOUBLE_EQUAL(amount(o, "cpus", false, NULL), 2, 0.001);
  CU_ASSERT_DOUBLE_EQUAL(amount(o, "disk", false, NULL), 1000, 0.001);
  ms_sim_framework_decline(fw, o->id->value, 0, NULL);
  free_offer(o);
  ckpt c = read_ckpt();
  CU_ASSERT(ms_resources_is_empty(c.res));
  free_ckpt(&c);
}

/* A persistence id that would escape the volume root: refused (where it enters, or by the
 * agent), naming the field, and nothing made on disk. The library's parser refuses such
 * ids, so the message is edited after conversion. */
static void test_ops_persistence_id_escape(void) {
  up();
  reserve("r2", "disk:40");
  expect_op("r2", MESETA__V1__OPERATION_STATE__OPERATION_FINISHED);
  static const char *const bad[][2] = {{"c-dotdot", ".."}, {"c-slash", "../escaped"}, {"c-abs", "/tmp"}};
  for (size_t i = 0; i < MS_ARRAY_SIZE(bad); i++) {
    Meseta__V1__Resources *v = res("[" DISK("10", VOLUME("placeholder")) "]");
    char *keep = v->resources[0]->disk->persistence->id;
    v->resources[0]->disk->persistence->id = (char *)bad[i][1];
    Meseta__V1__Operation__Create c = MESETA__V1__OPERATION__CREATE__INIT;
    c.n_volumes = v->n_resources;
    c.volumes = v->resources;
    Meseta__V1__Offer__Operation op = MESETA__V1__OFFER__OPERATION__INIT;
    op.operation_case = MESETA__V1__OFFER__OPERATION__OPERATION_CREATE;
    op.create = &c;
    ms_error *err = NULL;
    if (accept_op(&op, bad[i][0], &err) < 0) { /* refused where it enters */
      fprintf(stderr, "%s: refused at accept: %s\n", bad[i][0], err->msg);
      CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
      CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "persistence id"));
      ms_error_free(err);
    } else {
      Meseta__V1__OperationStatus *st = wait_op(bad[i][0], MESETA__V1__OPERATION_STATE__OPERATION_FAILED);
      fprintf(stderr, "%s: %s\n", bad[i][0], st->message);
      CU_ASSERT_PTR_NOT_NULL(strstr(st->message, "persistence.id"));
      protobuf_c_message_free_unpacked(&st->base, NULL);
    }
    v->resources[0]->disk->persistence->id = keep;
    ms_resources_proto_free(v);
  }
  _cleanup_free_ char *escaped = ms_xasprintf("%s/escaped", volumes);
  _cleanup_free_ char *escaped2 = ms_xasprintf("%s/escaped", dir);
  CU_ASSERT(!exists(escaped));
  CU_ASSERT(!exists(escaped2));
  _cleanup_free_ char *role_dir = ms_xasprintf("%s/%s", volumes, ROLE);
  int entries = 0;
  DIR *d = opendir(role_dir);
  for (struct dirent *e; d && (e = readdir(d));)
    entries += e->d_name[0] != '.';
  if (d)
    closedir(d);
  CU_ASSERT_EQUAL(entries, 0); /* vol1 and vol2 were destroyed; nothing new */
}

/* GROW_VOLUME is not supported by this agent yet: FAILED, naming it. */
static void test_ops_grow_volume_fails(void) {
  up();
  create("c3", "[" DISK("20", VOLUME("vol3")) "]");
  expect_op("c3", MESETA__V1__OPERATION_STATE__OPERATION_FINISHED);
  Meseta__V1__Resources *v = res("[" DISK("20", VOLUME("vol3")) "," DISK("10", "") "]");
  Meseta__V1__Operation__GrowVolume g = MESETA__V1__OPERATION__GROW_VOLUME__INIT;
  bool first_is_volume = v->resources[0]->disk && v->resources[0]->disk->persistence;
  g.volume = v->resources[first_is_volume ? 0 : 1];
  g.addition = v->resources[first_is_volume ? 1 : 0];
  Meseta__V1__Offer__Operation op = MESETA__V1__OFFER__OPERATION__INIT;
  op.operation_case = MESETA__V1__OFFER__OPERATION__OPERATION_GROW_VOLUME;
  op.grow_volume = &g;
  ms_error *err = NULL;
  MS_ASSERT_OK(accept_op(&op, "g1", &err), &err);
  ms_resources_proto_free(v);
  Meseta__V1__OperationStatus *st = wait_op("g1", MESETA__V1__OPERATION_STATE__OPERATION_FAILED);
  fprintf(stderr, "g1: %s\n", st->message);
  CU_ASSERT_PTR_NOT_NULL(strstr(st->message, "GROW_VOLUME"));
  protobuf_c_message_free_unpacked(&st->base, NULL);
}

int main(int argc, char **argv) {
  dir = ms_test_tmpdir("test-agent-operations");
  work = ms_xasprintf("%s/work", dir);
  volumes = ms_xasprintf("%s/volumes", dir);
  static const ms_test_case cases[] = {
      {"ops_reserve_create_finishes", test_ops_reserve_create_finishes},
      {"ops_kill9_before_ack", test_ops_kill9_before_ack},
      {"ops_checkpointed_resources_rebuild", test_ops_checkpointed_resources_rebuild},
      {"ops_reservation_update_moves_volume", test_ops_reservation_update_moves_volume},
      {"ops_destroy_unreserve", test_ops_destroy_unreserve},
      {"ops_persistence_id_escape", test_ops_persistence_id_escape},
      {"ops_grow_volume_fails", test_ops_grow_volume_fails},
      {NULL, NULL},
  };
  int rc = ms_test_main(argc, argv, "agent-operations", cases);
  ms_sim_framework_free(fw);
  if (agent_proc) {
    if (ms_test_proc_stop(agent_proc, SIGTERM) != 0)
      rc = 1;
    ms_test_proc_free(agent_proc);
  }
  if (alloc_proc) {
    if (ms_test_proc_stop(alloc_proc, SIGTERM) != 0)
      rc = 1;
    ms_test_proc_free(alloc_proc);
  }
  if (rc == 0 && !getenv("MESETA_KEEP_TEST_DIR"))
    ms_test_rmtree(dir);
  else
    fprintf(stderr, "logs kept in %s\n", dir);
  free(work);
  free(volumes);
  free(dir);
  return rc;
}
