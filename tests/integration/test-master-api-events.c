/* Operator.Subscribe on meseta-master-api, over a real etcd, registry and allocator
 * with simulated agents and frameworks: SUBSCRIBED carries the state; an agent, a
 * framework and its task, weights and quota come as events with growing revisions;
 * heartbeats come; a framework filter leaves other frameworks out; a subscriber that
 * never reads is cut with RESOURCE_EXHAUSTED while the others keep receiving; bad
 * requests name the field. Waits are bounded hang guards, never timing assertions. */
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/pb.h"
#include "meseta/rpc.h"
#include "meseta/v1/operator.pb-c.h"

#include "cluster.h"
#include "etcd-harness.h"
#include "proc.h"
#include "raw-grpc.h"
#include "sim.h"
#include "testlib.h"

#define WAIT_MS 30000
#define SUBSCRIBE "/meseta.v1.Operator/Subscribe"

static ms_test_etcd *etcd;
static char *dir;

typedef Meseta__V1__OperatorEvent opev;

static ms_status call(const char *addr, const char *method, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp, char **msg) {
  return ms_test_call(addr, NULL, NULL, method, req, rd, 10000, resp, msg);
}

static bool state_has_one_agent(void *ctx) {
  Meseta__V1__GetStateRequest sreq = MESETA__V1__GET_STATE_REQUEST__INIT;
  ProtobufCMessage *m = NULL;
  if (call(ctx, "/meseta.v1.Operator/GetState", &sreq.base, &meseta__v1__get_state_response__descriptor, &m,
           NULL) != MS_OK)
    return false;
  size_t n = ((Meseta__V1__GetStateResponse *)m)->state->n_agents;
  protobuf_c_message_free_unpacked(m, NULL);
  return n == 1;
}

/* ---- a subscriber that reads ---- */

typedef struct subscriber {
  ms_rpc_channel *ch;
  ms_rpc_stream *st;
  int64_t last_change_rev; /* revisions of change events never go down */
  int64_t state_rev;       /* and are above SUBSCRIBED's */
  size_t changes;
  bool order_ok;
} subscriber;

static const char *const no_ids[] = {NULL};

static void sub_open(subscriber *s, const char *mapi, const char *const *framework_ids, int64_t hb_ms) {
  *s = (subscriber){.order_ok = true};
  s->ch = ms_rpc_channel_new(mapi, NULL, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s->ch);
  size_t n = 0;
  while (framework_ids[n])
    n++;
  Meseta__V1__FrameworkID ids[4], *idp[4];
  CU_ASSERT_FATAL(n <= 4);
  for (size_t i = 0; i < n; i++) {
    meseta__v1__framework_id__init(&ids[i]);
    ids[i].value = (char *)framework_ids[i];
    idp[i] = &ids[i];
  }
  Google__Protobuf__Duration hb = GOOGLE__PROTOBUF__DURATION__INIT;
  hb.seconds = hb_ms / 1000;
  Meseta__V1__SubscribeOperatorRequest req = MESETA__V1__SUBSCRIBE_OPERATOR_REQUEST__INIT;
  req.framework_ids = idp;
  req.n_framework_ids = n;
  if (hb_ms)
    req.heartbeat_interval = &hb;
  ms_rpc_call_options co = {.timeout_ms = 120000}; /* the hang guard of every read below */
  ms_error *err = NULL;
  s->st = ms_rpc_stream_open(s->ch, SUBSCRIBE, &req.base, &co, &err);
  if (!s->st)
    fprintf(stderr, "subscribe: %s\n", err->msg);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s->st);
}

static void sub_close(subscriber *s) {
  ms_rpc_stream_free(s->st);
  ms_rpc_channel_free(s->ch);
}

/* The next event (the caller frees), or NULL when the stream ended (*err set). */
static opev *sub_next(subscriber *s, ms_error **err) {
  ProtobufCMessage *m = NULL;
  if (ms_rpc_stream_recv(s->st, &meseta__v1__operator_event__descriptor, &m, err) <= 0)
    return NULL;
  opev *ev = (opev *)m;
  if (ev->event_case != MESETA__V1__OPERATOR_EVENT__EVENT_HEARTBEAT &&
      ev->event_case != MESETA__V1__OPERATOR_EVENT__EVENT_SUBSCRIBED &&
      ev->event_case != MESETA__V1__OPERATOR_EVENT__EVENT_STATE_CHUNK) {
    if (ev->revision < s->last_change_rev || ev->revision <= s->state_rev)
      s->order_ok = false;
    s->last_change_rev = ev->revision;
    s->changes++;
  }
  return ev;
}

/* SUBSCRIBED (and its chunks): the number of agents, and the revision. */
static size_t sub_state(subscriber *s, int64_t *ret_rev, int64_t *ret_hb_ms, size_t *ret_roles,
                        uint32_t *ret_parts) {
  ms_error *err = NULL;
  opev *ev = sub_next(s, &err);
  if (!ev)
    fprintf(stderr, "first event: %s\n", err ? err->msg : "end");
  CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
  CU_ASSERT_EQUAL_FATAL(ev->event_case, MESETA__V1__OPERATOR_EVENT__EVENT_SUBSCRIBED);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ev->subscribed->state);
  size_t agents = ev->subscribed->state->n_agents, roles = ev->subscribed->state->n_roles;
  uint32_t more = ev->subscribed->chunks_following;
  *ret_rev = s->state_rev = ev->revision;
  const Google__Protobuf__Duration *hb = ev->subscribed->heartbeat_interval;
  *ret_hb_ms = hb ? hb->seconds * 1000 + hb->nanos / 1000000 : 0;
  protobuf_c_message_free_unpacked(&ev->base, NULL);
  for (uint32_t i = 0; i < more; i++) {
    ev = sub_next(s, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    CU_ASSERT_EQUAL_FATAL(ev->event_case, MESETA__V1__OPERATOR_EVENT__EVENT_STATE_CHUNK);
    CU_ASSERT_EQUAL(ev->revision, *ret_rev);
    agents += ev->state_chunk->state->n_agents;
    roles += ev->state_chunk->state->n_roles;
    protobuf_c_message_free_unpacked(&ev->base, NULL);
  }
  if (ret_roles)
    *ret_roles = roles;
  if (ret_parts)
    *ret_parts = more + 1;
  return agents;
}

typedef bool (*ev_pred)(const opev *ev, void *ctx);

/* Reads until pred holds (true) or the stream ends (false); every event read is
 * also given to `seen` (may be NULL). */
static bool sub_until(subscriber *s, ev_pred pred, void *ctx, void (*seen)(const opev *, void *),
                      void *sctx) {
  for (;;) {
    ms_error *err = NULL;
    opev *ev = sub_next(s, &err);
    if (!ev) {
      fprintf(stderr, "subscriber: stream ended: %s\n", err ? err->msg : "OK");
      ms_error_free(err);
      return false;
    }
    if (seen)
      seen(ev, sctx);
    bool done = pred(ev, ctx);
    protobuf_c_message_free_unpacked(&ev->base, NULL);
    if (done)
      return true;
  }
}

static bool is_agent_added(const opev *ev, void *ctx) {
  return ev->event_case == MESETA__V1__OPERATOR_EVENT__EVENT_AGENT_ADDED && ev->agent_added->agent &&
         ev->agent_added->agent->agent_info && ev->agent_added->agent->agent_info->id &&
         strcmp(ev->agent_added->agent->agent_info->id->value, ctx) == 0;
}

static bool is_deactivated(const opev *ev, void *ctx) {
  if (ev->event_case != MESETA__V1__OPERATOR_EVENT__EVENT_AGENT_UPDATED)
    return false;
  const Meseta__V1__Agent *a = ev->agent_updated->agent;
  return a && a->agent_info && a->agent_info->id && !strcmp(a->agent_info->id->value, ctx) &&
         a->state == MESETA__V1__AGENT__STATE__DEACTIVATED;
}

static bool is_heartbeat(const opev *ev, void *ctx) {
  (void)ctx;
  return ev->event_case == MESETA__V1__OPERATOR_EVENT__EVENT_HEARTBEAT;
}

/* What the main subscriber saw of one framework and its task. */
typedef struct fw_seen {
  const char *fw;
  bool added, task_added, running, finished;
  int64_t added_rev, task_rev;
  bool order_ok; /* TASK_ADDED after FRAMEWORK_ADDED, FINISHED after TASK_ADDED */
} fw_seen;

static void watch_fw(const opev *ev, void *ctx) {
  fw_seen *w = ctx;
  switch (ev->event_case) {
  case MESETA__V1__OPERATOR_EVENT__EVENT_FRAMEWORK_ADDED: {
    const Meseta__V1__Framework *f = ev->framework_added->framework;
    if (f && f->framework_info && f->framework_info->id && !strcmp(f->framework_info->id->value, w->fw)) {
      w->added = true;
      w->added_rev = ev->revision;
    }
    break;
  }
  case MESETA__V1__OPERATOR_EVENT__EVENT_TASK_ADDED: {
    const Meseta__V1__Task *t = ev->task_added->task;
    if (t && t->framework_id && !strcmp(t->framework_id->value, w->fw)) {
      if (!w->added)
        w->order_ok = false;
      w->task_added = true;
      w->task_rev = ev->revision;
      w->running |= t->state == MESETA__V1__TASK_STATE__TASK_RUNNING;
    }
    break;
  }
  case MESETA__V1__OPERATOR_EVENT__EVENT_TASK_UPDATED: {
    const Meseta__V1__OperatorEvent__TaskUpdated *u = ev->task_updated;
    if (u->framework_id && !strcmp(u->framework_id->value, w->fw)) {
      if (!w->task_added || !u->task || !u->status || u->status->state != u->state)
        w->order_ok = false;
      w->running |= u->state == MESETA__V1__TASK_STATE__TASK_RUNNING;
      w->finished |= u->state == MESETA__V1__TASK_STATE__TASK_FINISHED;
    }
    break;
  }
  default:
    break;
  }
}

static bool fw_done(const opev *ev, void *ctx) {
  (void)ev;
  fw_seen *w = ctx;
  return w->added && w->task_added && w->running && w->finished;
}

/* Any framework or task event (the filtered subscriber must see none). */
static void count_fw_events(const opev *ev, void *ctx) {
  if (ev->event_case == MESETA__V1__OPERATOR_EVENT__EVENT_FRAMEWORK_ADDED ||
      ev->event_case == MESETA__V1__OPERATOR_EVENT__EVENT_FRAMEWORK_UPDATED ||
      ev->event_case == MESETA__V1__OPERATOR_EVENT__EVENT_TASK_ADDED ||
      ev->event_case == MESETA__V1__OPERATOR_EVENT__EVENT_TASK_UPDATED)
    (*(size_t *)ctx)++;
}

typedef struct weight_want {
  const char *role;
  double weight;
  int64_t min_rev;
} weight_want;

static bool is_weights(const opev *ev, void *ctx) {
  weight_want *w = ctx;
  if (ev->event_case != MESETA__V1__OPERATOR_EVENT__EVENT_WEIGHTS_UPDATED || ev->revision < w->min_rev)
    return false;
  for (size_t i = 0; i < ev->weights_updated->n_weights; i++)
    if (!strcmp(ev->weights_updated->weights[i]->role, w->role) &&
        ev->weights_updated->weights[i]->weight == w->weight)
      return true;
  return false;
}

static bool is_role_weight(const opev *ev, void *ctx) {
  weight_want *w = ctx;
  return ev->event_case == MESETA__V1__OPERATOR_EVENT__EVENT_ROLE_UPDATED && ev->role_updated->role &&
         !strcmp(ev->role_updated->role->name, w->role) && ev->role_updated->role->weight == w->weight;
}

static bool is_quota(const opev *ev, void *ctx) {
  if (ev->event_case != MESETA__V1__OPERATOR_EVENT__EVENT_QUOTA_UPDATED)
    return false;
  for (size_t i = 0; i < ev->quota_updated->n_configs; i++)
    if (!strcmp(ev->quota_updated->configs[i]->role, ctx))
      return true;
  return false;
}

static int64_t update_weights(const char *mapi, const char *const *roles, size_t n, double weight) {
  Meseta__V1__WeightInfo *wi = ms_xcalloc(n, sizeof(*wi));
  Meseta__V1__WeightInfo **wp = ms_xcalloc(n, sizeof(*wp));
  for (size_t i = 0; i < n; i++) {
    meseta__v1__weight_info__init(&wi[i]);
    wi[i].role = (char *)roles[i];
    wi[i].weight = weight;
    wp[i] = &wi[i];
  }
  Meseta__V1__UpdateWeightsRequest uw = MESETA__V1__UPDATE_WEIGHTS_REQUEST__INIT;
  uw.weight_infos = wp;
  uw.n_weight_infos = n;
  ProtobufCMessage *m = NULL;
  char *msg = NULL;
  ms_status code = call(mapi, "/meseta.v1.Operator/UpdateWeights", &uw.base,
                        &meseta__v1__update_weights_response__descriptor, &m, &msg);
  if (code != MS_OK)
    fprintf(stderr, "UpdateWeights: %s\n", msg);
  free(msg);
  free(wi);
  free(wp);
  CU_ASSERT_EQUAL_FATAL(code, MS_OK);
  int64_t rev = ((Meseta__V1__UpdateWeightsResponse *)m)->revision;
  protobuf_c_message_free_unpacked(m, NULL);
  return rev;
}

/* ---- a subscriber that never reads (raw gRPC: a small receive window) ---- */

typedef struct slow {
  grpc_channel *ch;
  grpc_completion_queue *cq;
  grpc_call *call;
  grpc_metadata_array md, trailers;
  grpc_status_code status;
  grpc_slice details;
  bool status_armed;
} slow;

static void slow_open(slow *s, const char *mapi) {
  memset(s, 0, sizeof(*s));
  grpc_arg args[2] = {
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_HTTP2_BDP_PROBE, .value.integer = 0},
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, .value.integer = 1024},
  };
  grpc_channel_args ca = {.num_args = 2, .args = args};
  grpc_channel_credentials *cr = grpc_insecure_credentials_create();
  s->ch = grpc_channel_create(mapi, cr, &ca);
  grpc_channel_credentials_release(cr);
  s->cq = grpc_completion_queue_create_for_pluck(NULL);
  gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(120, GPR_TIMESPAN));
  grpc_slice method = grpc_slice_from_static_string(SUBSCRIBE);
  s->call =
      grpc_channel_create_call(s->ch, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq, method, NULL, deadline, NULL);
  Meseta__V1__SubscribeOperatorRequest req = MESETA__V1__SUBSCRIBE_OPERATOR_REQUEST__INIT;
  size_t len;
  uint8_t *buf = ms_pb_pack(&req.base, &len);
  grpc_slice sl = grpc_slice_from_copied_buffer((const char *)buf, len);
  free(buf);
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
  grpc_slice_unref(sl);
  grpc_metadata_array_init(&s->md);
  grpc_metadata_array_init(&s->trailers);
  grpc_op ops[4];
  ms_raw_request_ops(ops, bb, &s->md);
  CU_ASSERT_EQUAL_FATAL(grpc_call_start_batch(s->call, ops, 4, (void *)1, NULL), GRPC_CALL_OK);
  grpc_event e = grpc_completion_queue_pluck(s->cq, (void *)1, deadline, NULL);
  CU_ASSERT_FATAL(e.type == GRPC_OP_COMPLETE && e.success);
  grpc_byte_buffer_destroy(bb);
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[0].data.recv_status_on_client.trailing_metadata = &s->trailers;
  ops[0].data.recv_status_on_client.status = &s->status;
  ops[0].data.recv_status_on_client.status_details = &s->details;
  CU_ASSERT_EQUAL_FATAL(grpc_call_start_batch(s->call, ops, 1, (void *)2, NULL), GRPC_CALL_OK);
  s->status_armed = true;
}

/* The next event, or NULL at the end of the stream. */
static opev *slow_next(slow *s) {
  grpc_byte_buffer *bb = NULL;
  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &bb;
  CU_ASSERT_EQUAL_FATAL(grpc_call_start_batch(s->call, &op, 1, (void *)3, NULL), GRPC_CALL_OK);
  grpc_event e = grpc_completion_queue_pluck(s->cq, (void *)3, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  CU_ASSERT_FATAL(e.type == GRPC_OP_COMPLETE);
  if (!bb)
    return NULL;
  grpc_byte_buffer_reader r;
  CU_ASSERT_FATAL(grpc_byte_buffer_reader_init(&r, bb));
  grpc_slice all = grpc_byte_buffer_reader_readall(&r);
  grpc_byte_buffer_reader_destroy(&r);
  grpc_byte_buffer_destroy(bb);
  opev *ev = meseta__v1__operator_event__unpack(NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
  grpc_slice_unref(all);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
  return ev;
}

/* The status (after the stream ended); *msg the details (the caller frees). */
static grpc_status_code slow_status(slow *s, char **msg) {
  grpc_event e = grpc_completion_queue_pluck(s->cq, (void *)2, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  CU_ASSERT_FATAL(e.type == GRPC_OP_COMPLETE);
  s->status_armed = false;
  *msg = grpc_slice_to_c_string(s->details);
  return s->status;
}

static void slow_close(slow *s) {
  if (s->status_armed) {
    grpc_call_cancel(s->call, NULL);
    grpc_completion_queue_pluck(s->cq, (void *)2, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  }
  grpc_call_unref(s->call);
  grpc_metadata_array_destroy(&s->md);
  grpc_metadata_array_destroy(&s->trailers);
  grpc_slice_unref(s->details);
  ms_raw_cq_destroy(s->cq);
  grpc_channel_destroy(s->ch);
}

/* ---- the test ---- */

/* An allocator like the cluster's first, listening on `addr`. */
static ms_test_proc *restart_allocator(ms_test_cluster *c, const char *addr) {
  _cleanup_free_ char *bin = ms_test_binary("services/allocator/meseta-allocator");
  const char *argv[] = {bin,
                        "--listen",
                        addr,
                        "--allocation-interval",
                        "100ms",
                        "--heartbeat-interval",
                        "1s",
                        "--etcd-endpoints",
                        ms_test_etcd_endpoint(etcd),
                        "--election",
                        "alloc-mapiev",
                        "--leader-lease",
                        "2s",
                        "--registry",
                        ms_test_proc_address(c->registry),
                        "--recovery-timeout",
                        "5s",
                        "--log-level",
                        "debug",
                        NULL};
  ms_test_proc *p = ms_test_start("allocator-again", dir, argv);
  return p;
}

typedef struct agent_change {
  const char *id;
  int64_t after;
} agent_change;

/* AGENT_UPDATED or AGENT_REMOVED of one agent, above a revision. */
static bool is_agent_change(const opev *ev, void *ctx) {
  agent_change *a = ctx;
  if (ev->revision <= a->after)
    return false;
  if (ev->event_case == MESETA__V1__OPERATOR_EVENT__EVENT_AGENT_REMOVED)
    return ev->agent_removed->agent_id && !strcmp(ev->agent_removed->agent_id->value, a->id);
  if (ev->event_case != MESETA__V1__OPERATOR_EVENT__EVENT_AGENT_UPDATED)
    return false;
  const Meseta__V1__Agent *ag = ev->agent_updated->agent;
  return ag && ag->agent_info && ag->agent_info->id && !strcmp(ag->agent_info->id->value, a->id);
}

static void bad_requests(const char *mapi) {
  Google__Protobuf__Duration hb = GOOGLE__PROTOBUF__DURATION__INIT;
  hb.nanos = 1000; /* far below a second */
  Meseta__V1__SubscribeOperatorRequest req = MESETA__V1__SUBSCRIBE_OPERATOR_REQUEST__INIT;
  req.heartbeat_interval = &hb;
  ms_rpc_channel *ch = ms_rpc_channel_new(mapi, NULL, NULL);
  ms_rpc_call_options co = {.timeout_ms = 10000};
  ms_error *err = NULL;
  ms_rpc_stream *st = ms_rpc_stream_open(ch, SUBSCRIBE, &req.base, &co, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  ProtobufCMessage *m = NULL;
  CU_ASSERT(ms_rpc_stream_recv(st, &meseta__v1__operator_event__descriptor, &m, &err) < 0);
  CU_ASSERT(err && err->code == MS_INVALID_ARGUMENT && strstr(err->msg, "heartbeat_interval"));
  ms_error_free(TAKE_PTR(err));
  ms_rpc_stream_free(st);
  char *roles[] = {"a//b"};
  req.heartbeat_interval = NULL;
  req.roles = roles;
  req.n_roles = 1;
  st = ms_rpc_stream_open(ch, SUBSCRIBE, &req.base, &co, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  CU_ASSERT(ms_rpc_stream_recv(st, &meseta__v1__operator_event__descriptor, &m, &err) < 0);
  CU_ASSERT(err && err->code == MS_INVALID_ARGUMENT && strstr(err->msg, "roles[0]"));
  ms_error_free(TAKE_PTR(err));
  ms_rpc_stream_free(st);
  ms_rpc_channel_free(ch);
}

static void test_events(void) {
  ms_test_cluster c;
  ms_test_cluster_start(&c, etcd, dir, "mapiev", 1, "5s");
  CU_ASSERT_FATAL(ms_test_cluster_wait_leader(&c, WAIT_MS) == 0);
  const char *alloc = c.addr[0];
  ms_error *err = NULL;

  _cleanup_free_ char *bin = ms_test_binary("services/master-api/meseta-master-api");
  const char *argv[] = {bin,           "--listen",
                        "127.0.0.1:0", "--allocator",
                        alloc,         "--name",
                        "mapi-events", "--max-backoff",
                        "200ms",       "--log-level",
                        "debug",       "--state-chunk-bytes",
                        "64KiB",       "--subscriber-queue-bytes",
                        "16KiB",       NULL};
  ms_test_proc *mp = ms_test_start("master-api", dir, argv);
  const char *mapi = ms_test_proc_address(mp);
  CU_ASSERT_FATAL(ms_sim_wait(ms_test_serving, (void *)mapi, WAIT_MS));

  ms_sim_agent_options ao = {.hostname = "ev-a", .resources = "cpus:2;mem:1024", .task_ms = 300};
  ms_sim_agent *a1 = ms_sim_agent_start(alloc, &ao, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a1);
  bad_requests(mapi);

  /* SUBSCRIBED: the state, with the agent (the view may not have it yet: GetState
   * with the agent in it first, then subscribe). */
  CU_ASSERT_FATAL(ms_sim_wait(state_has_one_agent, (void *)mapi, WAIT_MS));
  subscriber s, f;
  sub_open(&s, mapi, no_ids, 1000);
  int64_t rev0 = 0, hb_ms = 0;
  CU_ASSERT_EQUAL(sub_state(&s, &rev0, &hb_ms, NULL, NULL), 1);
  CU_ASSERT(rev0 > 0);
  CU_ASSERT_EQUAL(hb_ms, 1000);
  const char *only[] = {"no-such-framework", NULL};
  sub_open(&f, mapi, only, 0);
  int64_t frev = 0, fhb = 0;
  CU_ASSERT_EQUAL(sub_state(&f, &frev, &fhb, NULL, NULL), 1);
  CU_ASSERT_EQUAL(fhb, 15000); /* the default */
  slow sl;
  slow_open(&sl, mapi);

  /* An agent joins: AGENT_ADDED (on both: agents are not framework-scoped). */
  ao.hostname = "ev-b";
  ms_sim_agent *a2 = ms_sim_agent_start(alloc, &ao, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a2);
  CU_ASSERT_FATAL(sub_until(&s, is_agent_added, (void *)ms_sim_agent_id(a2), NULL, NULL));
  size_t fw_events = 0;
  CU_ASSERT_FATAL(sub_until(&f, is_agent_added, (void *)ms_sim_agent_id(a2), count_fw_events, &fw_events));

  /* A framework launches a task that runs and finishes. */
  ms_sim_framework_options fo = {
      .name = "ev-fw", .mode = MS_SIM_ACCEPT, .task_resources = "cpus:0.5;mem:64", .max_tasks = 1};
  ms_sim_framework *fw = ms_sim_framework_start(alloc, &fo, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(fw);
  fw_seen w = {.fw = ms_sim_framework_id(fw), .order_ok = true};
  CU_ASSERT_FATAL(sub_until(&s, fw_done, &w, watch_fw, &w));
  CU_ASSERT(w.order_ok);
  CU_ASSERT(w.added_rev > rev0 && w.task_rev > w.added_rev);

  /* Weights and quota: their events, at or below the mutation's revision. */
  const char *heavy[] = {"ev-heavy"};
  int64_t wrev = update_weights(mapi, heavy, 1, 2.5);
  weight_want ww = {.role = "ev-heavy", .weight = 2.5, .min_rev = w.task_rev};
  CU_ASSERT_FATAL(sub_until(&s, is_weights, &ww, NULL, NULL));
  CU_ASSERT(s.last_change_rev <= wrev);
  CU_ASSERT_FATAL(sub_until(&s, is_role_weight, &ww, NULL, NULL));
  Meseta__V1__Value__Scalar lim = MESETA__V1__VALUE__SCALAR__INIT;
  lim.value = 100;
  Meseta__V1__QuotaConfig__LimitsEntry le = MESETA__V1__QUOTA_CONFIG__LIMITS_ENTRY__INIT;
  le.key = "cpus";
  le.value = &lim;
  Meseta__V1__QuotaConfig__LimitsEntry *lep[] = {&le};
  Meseta__V1__QuotaConfig qc = MESETA__V1__QUOTA_CONFIG__INIT;
  qc.role = "ev-heavy";
  qc.limits = lep;
  qc.n_limits = 1;
  Meseta__V1__QuotaConfig *qcp[] = {&qc};
  Meseta__V1__UpdateQuotaRequest uq = MESETA__V1__UPDATE_QUOTA_REQUEST__INIT;
  uq.configs = qcp;
  uq.n_configs = 1;
  char *msg = NULL;
  CU_ASSERT_EQUAL(call(mapi, "/meseta.v1.Operator/UpdateQuota", &uq.base,
                       &meseta__v1__update_quota_response__descriptor, NULL, &msg),
                  MS_OK);
  free(TAKE_PTR(msg));
  CU_ASSERT_FATAL(sub_until(&s, is_quota, (void *)"ev-heavy", NULL, NULL));
  CU_ASSERT_FATAL(sub_until(&s, is_heartbeat, NULL, NULL, NULL));

  /* An agent deactivated: AGENT_UPDATED with its state. */
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = (char *)ms_sim_agent_id(a2);
  Meseta__V1__DeactivateAgentRequest da = MESETA__V1__DEACTIVATE_AGENT_REQUEST__INIT;
  da.agent_id = &aid;
  CU_ASSERT_EQUAL(call(mapi, "/meseta.v1.Operator/DeactivateAgent", &da.base,
                       &meseta__v1__deactivate_agent_response__descriptor, NULL, &msg),
                  MS_OK);
  free(TAKE_PTR(msg));
  CU_ASSERT_FATAL(sub_until(&s, is_deactivated, (void *)ms_sim_agent_id(a2), NULL, NULL));

  /* The filtered subscriber saw none of the framework's events. */
  CU_ASSERT_FATAL(sub_until(&f, is_weights, &ww, count_fw_events, &fw_events));
  CU_ASSERT_EQUAL(fw_events, 0);

  sub_close(&f);

  /* A flood of weights (each event carries all of them): far more than the slow
   * subscriber's 16 KiB queue and its transport's window. The reading subscriber
   * keeps up with each round and gets all of it. */
  char names[600][160];
  const char *np[20];
  int64_t last = 0;
  for (int round = 0; round < 30; round++) {
    for (int i = 0; i < 20; i++) {
      snprintf(names[round * 20 + i], sizeof(names[0]), "flood-%03d-%s", round * 20 + i,
               "padding-padding-padding-padding-padding-padding-"
               "more-padding-more-padding-more-padding-more-padding");
      np[i] = names[round * 20 + i];
    }
    int64_t rev = update_weights(mapi, np, 20, 1.5);
    CU_ASSERT(rev > last);
    last = rev;
    weight_want rw = {.role = np[19], .weight = 1.5, .min_rev = 0};
    CU_ASSERT_FATAL(sub_until(&s, is_role_weight, &rw, NULL, NULL));
  }
  const char *marker[] = {"ev-marker"};
  int64_t mrev = update_weights(mapi, marker, 1, 4.0);
  CU_ASSERT(mrev > last);
  weight_want mw = {.role = "ev-marker", .weight = 4.0, .min_rev = 0};
  CU_ASSERT_FATAL(sub_until(&s, is_weights, &mw, NULL, NULL));
  CU_ASSERT(s.order_ok);
  CU_ASSERT(f.order_ok);
  fprintf(stderr, "main subscriber: %zu change events, last revision %lld\n", s.changes,
          (long long)s.last_change_rev);

  /* A state above --state-chunk-bytes (64 KiB) comes in parts: every role is there. */
  subscriber big;
  sub_open(&big, mapi, no_ids, 0);
  int64_t brev = 0, bhb = 0;
  size_t broles = 0;
  uint32_t bparts = 0;
  CU_ASSERT_EQUAL(sub_state(&big, &brev, &bhb, &broles, &bparts), 2);
  CU_ASSERT(brev >= mrev);
  CU_ASSERT(bparts > 1);
  CU_ASSERT(broles >= 602); /* 600 flooded, ev-heavy, ev-marker (and "*") */
  fprintf(stderr, "big state: %zu roles in %u parts\n", broles, bparts);
  sub_close(&big);

  /* The slow one: what its transport held, then RESOURCE_EXHAUSTED, and never the
   * marker. */
  size_t got = 0;
  bool marker_seen = false;
  for (opev *ev; (ev = slow_next(&sl)) != NULL;) {
    got++;
    weight_want any = mw;
    if (is_weights(ev, &any))
      marker_seen = true;
    protobuf_c_message_free_unpacked(&ev->base, NULL);
    if (marker_seen)
      break;
  }
  CU_ASSERT(!marker_seen);
  char *details = NULL;
  grpc_status_code code = marker_seen ? GRPC_STATUS_OK : slow_status(&sl, &details);
  fprintf(stderr, "slow subscriber: %zu events, then %d: %s\n", got, (int)code, details ? details : "");
  CU_ASSERT_EQUAL(code, GRPC_STATUS_RESOURCE_EXHAUSTED);
  CU_ASSERT(details && strstr(details, "fell behind at revision") && strstr(details, "re-subscribe"));
  gpr_free(details);
  slow_close(&sl);

  /* The allocator restarts on the same address: master-api's view is re-synchronised
   * from the new leader's snapshot, and the subscriber gets the differences (the
   * agents it knew, no longer registered) as events on the same stream. */
  _cleanup_free_ char *aaddr = ms_xstrdup(alloc);
  CU_ASSERT_EQUAL(ms_test_proc_stop(c.alloc[0], SIGTERM), 0);
  ms_test_proc_free(c.alloc[0]);
  c.alloc[0] = restart_allocator(&c, aaddr);
  c.addr[0] = ms_test_proc_address(c.alloc[0]);
  agent_change ac = {.id = ms_sim_agent_id(a1), .after = s.last_change_rev};
  CU_ASSERT_FATAL(sub_until(&s, is_agent_change, &ac, NULL, NULL));
  CU_ASSERT(s.order_ok);

  /* Shutdown ends the streams cleanly: UNAVAILABLE, and master-api exits 0 (ASan). */
  ms_sim_framework_free(fw);
  ms_sim_agent_free(a1);
  ms_sim_agent_free(a2);
  /* Read the end of the stream while master-api is stopping, not after it exited: a
   * socket closed with unread data is reset, and the reset may drop what was in flight. */
  kill(ms_test_proc_pid(mp), SIGTERM);
  ms_error *e2 = NULL;
  for (;;) {
    opev *ev = sub_next(&s, &e2);
    if (!ev)
      break;
    protobuf_c_message_free_unpacked(&ev->base, NULL);
  }
  CU_ASSERT_EQUAL(ms_test_proc_stop(mp, SIGTERM), 0);
  CU_ASSERT(e2 && e2->code == MS_UNAVAILABLE && strstr(e2->msg, "shutting down"));
  if (e2)
    fprintf(stderr, "at shutdown: %s\n", e2->msg);
  ms_error_free(e2);
  sub_close(&s);
  ms_test_proc_free(mp);
  ms_test_cluster_stop(&c);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"operator_subscribe", test_events},
      {NULL, NULL},
  };
  return ms_test_main_etcd(argc, argv, "master-api-events", cases, &dir, &etcd);
}
