/* meseta-master-api over a real etcd, meseta-registry and meseta-allocator, with
 * simulated agents: its view (GetAgents, GetState, pagination, min_revision), a
 * framework subscribing through the public Scheduler API and declining its offers,
 * an operator mutation relayed to the allocator, GetVersion of both components,
 * errors kept intact, and health
 * following the allocator. Waits are bounded hang guards, never timing assertions. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/rpc.h"
#include "meseta/v1/operator.pb-c.h"
#include "meseta/v1/scheduler.pb-c.h"
#include "meseta/version.h"

#include "cluster.h"
#include "etcd-harness.h"
#include "proc.h"
#include "sim.h"
#include "testlib.h"

#define WAIT_MS 30000

static ms_test_etcd *etcd;
static char *dir;

/* One unary call; the status code, *resp on OK (the caller frees), *msg the error's
 * message (the caller frees). */
static ms_status call(const char *addr, const char *method, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *rd, int64_t timeout_ms, ProtobufCMessage **resp,
                      char **msg) {
  return ms_test_call(addr, NULL, NULL, method, req, rd, timeout_ms, resp, msg);
}

static Meseta__V1__GetAgentsResponse *get_agents(const char *mapi, uint32_t page_size, const char *token,
                                                 int64_t min_revision) {
  Meseta__V1__GetAgentsRequest req = MESETA__V1__GET_AGENTS_REQUEST__INIT;
  req.page_size = page_size;
  req.page_token = (char *)(token ? token : "");
  req.min_revision = min_revision;
  ProtobufCMessage *resp = NULL;
  char *msg = NULL;
  ms_status code = call(mapi, "/meseta.v1.Operator/GetAgents", &req.base,
                        &meseta__v1__get_agents_response__descriptor, 10000, &resp, &msg);
  if (code != MS_OK)
    fprintf(stderr, "GetAgents: %s\n", msg);
  free(msg);
  return (Meseta__V1__GetAgentsResponse *)resp;
}

typedef struct agents_wait {
  const char *mapi;
  size_t want;
} agents_wait;

static bool agents_seen(void *ctx) {
  agents_wait *w = ctx;
  Meseta__V1__GetAgentsResponse *r = get_agents(w->mapi, 0, NULL, 0);
  bool ok = r && r->n_agents == w->want;
  if (r)
    protobuf_c_message_free_unpacked(&r->base, NULL);
  return ok;
}

static bool not_serving(void *ctx) {
  return ms_test_health(ctx) == 0;
}

static size_t frameworks_listed(const char *mapi) {
  Meseta__V1__GetFrameworksRequest req = MESETA__V1__GET_FRAMEWORKS_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  if (call(mapi, "/meseta.v1.Operator/GetFrameworks", &req.base,
           &meseta__v1__get_frameworks_response__descriptor, 10000, &resp, NULL) != MS_OK)
    return SIZE_MAX;
  size_t n = ((Meseta__V1__GetFrameworksResponse *)resp)->n_frameworks;
  protobuf_c_message_free_unpacked(resp, NULL);
  return n;
}

static bool no_framework(void *ctx) {
  return frameworks_listed(ctx) == 0;
}

static ms_status decline(const char *mapi, const char *fw, const char *stream, Meseta__V1__OfferID **ids,
                         size_t n, char **msg) {
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = (char *)fw;
  Meseta__V1__DeclineRequest d = MESETA__V1__DECLINE_REQUEST__INIT;
  d.framework_id = &fid;
  d.stream_id = (char *)stream;
  d.offer_ids = ids;
  d.n_offer_ids = n;
  return call(mapi, "/meseta.v1.Scheduler/Decline", &d.base, &meseta__v1__decline_response__descriptor, 10000,
              NULL, msg);
}

static void test_master_api(void) {
  ms_test_cluster c;
  ms_test_cluster_start(&c, etcd, dir, "mapi", 1, "5s");
  CU_ASSERT_FATAL(ms_test_cluster_wait_leader(&c, WAIT_MS) == 0);
  const char *alloc = c.addr[0];
  ms_error *err = NULL;

  _cleanup_free_ char *bin = ms_test_binary("services/master-api/meseta-master-api");
  const char *argv[] = {bin,         "--listen",      "127.0.0.1:0", "--allocator", alloc,   "--name",
                        "mapi-test", "--max-backoff", "200ms",       "--log-level", "debug", NULL};
  ms_test_proc *mp = ms_test_start("master-api", dir, argv);
  const char *mapi = ms_test_proc_address(mp);
  CU_ASSERT_FATAL(ms_sim_wait(ms_test_serving, (void *)mapi, WAIT_MS));

  /* Two agents appear in the view, with a revision. */
  ms_sim_agent_options ao = {.hostname = "node-a", .resources = "cpus:2;mem:1024"};
  ms_sim_agent *a1 = ms_sim_agent_start(alloc, &ao, &err);
  ao.hostname = "node-b";
  ms_sim_agent *a2 = ms_sim_agent_start(alloc, &ao, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a2);
  agents_wait aw = {mapi, 2};
  CU_ASSERT_FATAL(ms_sim_wait(agents_seen, &aw, WAIT_MS));

  Meseta__V1__GetStateRequest sreq = MESETA__V1__GET_STATE_REQUEST__INIT;
  ProtobufCMessage *m = NULL;
  CU_ASSERT_EQUAL_FATAL(call(mapi, "/meseta.v1.Operator/GetState", &sreq.base,
                             &meseta__v1__get_state_response__descriptor, 10000, &m, NULL),
                        MS_OK);
  Meseta__V1__GetStateResponse *gs = (Meseta__V1__GetStateResponse *)m;
  CU_ASSERT(gs->revision > 0);
  CU_ASSERT_FATAL(gs->state != NULL);
  CU_ASSERT_EQUAL(gs->state->n_agents, 2);
  int64_t rev0 = gs->revision;
  protobuf_c_message_free_unpacked(m, NULL);

  /* Pages of one, in id order, each agent once. */
  Meseta__V1__GetAgentsResponse *p1 = get_agents(mapi, 1, NULL, 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p1);
  CU_ASSERT_EQUAL(p1->n_agents, 1);
  CU_ASSERT(p1->revision >= rev0);
  CU_ASSERT_FATAL(p1->next_page_token && *p1->next_page_token);
  Meseta__V1__GetAgentsResponse *p2 = get_agents(mapi, 1, p1->next_page_token, 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p2);
  CU_ASSERT_EQUAL_FATAL(p2->n_agents, 1);
  CU_ASSERT(strcmp(p1->agents[0]->agent_info->id->value, p2->agents[0]->agent_info->id->value) < 0);
  CU_ASSERT(!p2->next_page_token || !*p2->next_page_token);
  protobuf_c_message_free_unpacked(&p1->base, NULL);
  protobuf_c_message_free_unpacked(&p2->base, NULL);

  /* A bad page size or token is the caller's mistake, named. */
  char *msg = NULL;
  Meseta__V1__GetAgentsRequest bad = MESETA__V1__GET_AGENTS_REQUEST__INIT;
  bad.page_size = 6000;
  CU_ASSERT_EQUAL(call(mapi, "/meseta.v1.Operator/GetAgents", &bad.base,
                       &meseta__v1__get_agents_response__descriptor, 10000, NULL, &msg),
                  MS_INVALID_ARGUMENT);
  CU_ASSERT(msg && strstr(msg, "page_size"));
  free(TAKE_PTR(msg));
  bad.page_size = 0;
  bad.page_token = "nonsense";
  CU_ASSERT_EQUAL(call(mapi, "/meseta.v1.Operator/GetAgents", &bad.base,
                       &meseta__v1__get_agents_response__descriptor, 10000, NULL, &msg),
                  MS_INVALID_ARGUMENT);
  CU_ASSERT(msg && strstr(msg, "page_token"));
  free(TAKE_PTR(msg));
  /* A revision the view will not reach in time: DEADLINE_EXCEEDED. */
  bad.page_token = "";
  bad.min_revision = INT64_MAX / 2;
  ms_status code = call(mapi, "/meseta.v1.Operator/GetAgents", &bad.base,
                        &meseta__v1__get_agents_response__descriptor, 300, NULL, &msg);
  CU_ASSERT_EQUAL(code, MS_DEADLINE_EXCEEDED);
  free(TAKE_PTR(msg));

  /* A framework subscribes through master-api and declines its offers. */
  _cleanup_free_ char *roles0 = ms_xstrdup("*");
  char *roles[] = {roles0};
  Meseta__V1__FrameworkInfo info = MESETA__V1__FRAMEWORK_INFO__INIT;
  info.name = "through-mapi";
  info.user = "test";
  info.roles = roles;
  info.n_roles = 1;
  Meseta__V1__SubscribeRequest sub = MESETA__V1__SUBSCRIBE_REQUEST__INIT;
  sub.framework_info = &info;
  ms_rpc_channel *sch = ms_rpc_channel_new(mapi, NULL, NULL);
  ms_rpc_call_options so = {.timeout_ms = 120000};
  ms_rpc_stream *st = ms_rpc_stream_open(sch, "/meseta.v1.Scheduler/Subscribe", &sub.base, &so, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  _cleanup_free_ char *fw = NULL, *stream_id = NULL;
  size_t declined = 0;
  while (declined < 2) { /* bounded by the stream's deadline */
    ProtobufCMessage *em = NULL;
    if (ms_rpc_stream_recv(st, &meseta__v1__event__descriptor, &em, &err) <= 0) {
      fprintf(stderr, "subscribe: %s\n", err ? err->msg : "ended");
      CU_FAIL_FATAL("the stream through master-api ended");
    }
    Meseta__V1__Event *ev = (Meseta__V1__Event *)em;
    if (ev->event_case == MESETA__V1__EVENT__EVENT_SUBSCRIBED) {
      CU_ASSERT_PTR_NULL(fw); /* first, and once */
      fw = ms_xstrdup(ev->subscribed->framework_id->value);
      stream_id = ms_xstrdup(ev->subscribed->stream_id);
    } else if (ev->event_case == MESETA__V1__EVENT__EVENT_OFFERS) {
      CU_ASSERT_PTR_NOT_NULL_FATAL(fw);
      Meseta__V1__OfferID **ids = ms_xcalloc(ev->offers->n_offers, sizeof(*ids));
      for (size_t i = 0; i < ev->offers->n_offers; i++)
        ids[i] = ev->offers->offers[i]->id;
      CU_ASSERT_EQUAL(decline(mapi, fw, stream_id, ids, ev->offers->n_offers, NULL), MS_OK);
      declined += ev->offers->n_offers;
      free(ids);
    }
    protobuf_c_message_free_unpacked(em, NULL);
  }
  /* The allocator's verdicts come back intact; master-api's own checks name the field. */
  CU_ASSERT_EQUAL(decline(mapi, fw, "not-the-stream", NULL, 0, &msg), MS_FAILED_PRECONDITION);
  free(TAKE_PTR(msg));
  CU_ASSERT_EQUAL(decline(mapi, fw, "", NULL, 0, &msg), MS_INVALID_ARGUMENT);
  CU_ASSERT(msg && strstr(msg, "stream_id"));
  free(TAKE_PTR(msg));
  CU_ASSERT_EQUAL(frameworks_listed(mapi), 1);

  /* UpdateWeights through master-api reaches the allocator; the next read asks for its
   * revision and sees it. */
  Meseta__V1__WeightInfo wi = MESETA__V1__WEIGHT_INFO__INIT;
  wi.role = "heavy";
  wi.weight = 3.0;
  Meseta__V1__WeightInfo *wis[] = {&wi};
  Meseta__V1__UpdateWeightsRequest uw = MESETA__V1__UPDATE_WEIGHTS_REQUEST__INIT;
  uw.weight_infos = wis;
  uw.n_weight_infos = 1;
  m = NULL;
  CU_ASSERT_EQUAL_FATAL(call(mapi, "/meseta.v1.Operator/UpdateWeights", &uw.base,
                             &meseta__v1__update_weights_response__descriptor, 10000, &m, &msg),
                        MS_OK);
  int64_t wrev = ((Meseta__V1__UpdateWeightsResponse *)m)->revision;
  protobuf_c_message_free_unpacked(m, NULL);
  CU_ASSERT(wrev > rev0);
  Meseta__V1__GetWeightsRequest gw = MESETA__V1__GET_WEIGHTS_REQUEST__INIT;
  gw.min_revision = wrev;
  m = NULL;
  CU_ASSERT_EQUAL_FATAL(call(mapi, "/meseta.v1.Operator/GetWeights", &gw.base,
                             &meseta__v1__get_weights_response__descriptor, 10000, &m, NULL),
                        MS_OK);
  Meseta__V1__GetWeightsResponse *gwr = (Meseta__V1__GetWeightsResponse *)m;
  CU_ASSERT(gwr->revision >= wrev);
  CU_ASSERT_EQUAL_FATAL(gwr->n_weight_infos, 1);
  CU_ASSERT_STRING_EQUAL(gwr->weight_infos[0]->role, "heavy");
  CU_ASSERT_EQUAL(gwr->weight_infos[0]->weight, 3.0);
  protobuf_c_message_free_unpacked(m, NULL);
  wi.weight = -1;
  CU_ASSERT_EQUAL(call(mapi, "/meseta.v1.Operator/UpdateWeights", &uw.base,
                       &meseta__v1__update_weights_response__descriptor, 10000, NULL, &msg),
                  MS_INVALID_ARGUMENT);
  CU_ASSERT(msg && strstr(msg, "weight_infos[0].weight"));
  free(TAKE_PTR(msg));

  /* GetVersion: each component answers its own (the allocator's through its
   * operator-call table); a per-process call the allocator does not serve is refused
   * naming it. */
  static const Meseta__V1__Component comps[] = {MESETA__V1__COMPONENT__COMPONENT_UNSPECIFIED,
                                                MESETA__V1__COMPONENT__COMPONENT_MASTER_API,
                                                MESETA__V1__COMPONENT__COMPONENT_ALLOCATOR};
  for (size_t i = 0; i < MS_ARRAY_SIZE(comps); i++) {
    Meseta__V1__GetVersionRequest gv = MESETA__V1__GET_VERSION_REQUEST__INIT;
    gv.component = comps[i];
    m = NULL;
    CU_ASSERT_EQUAL_FATAL(call(mapi, "/meseta.v1.Operator/GetVersion", &gv.base,
                               &meseta__v1__get_version_response__descriptor, 10000, &m, NULL),
                          MS_OK);
    Meseta__V1__GetVersionResponse *vr = (Meseta__V1__GetVersionResponse *)m;
    CU_ASSERT_FATAL(vr->version_info != NULL);
    CU_ASSERT_STRING_EQUAL(vr->version_info->version, ms_version());
    protobuf_c_message_free_unpacked(m, NULL);
  }
  Meseta__V1__GetFlagsRequest gf = MESETA__V1__GET_FLAGS_REQUEST__INIT;
  gf.component = MESETA__V1__COMPONENT__COMPONENT_ALLOCATOR;
  CU_ASSERT_EQUAL(call(mapi, "/meseta.v1.Operator/GetFlags", &gf.base,
                       &meseta__v1__get_flags_response__descriptor, 10000, NULL, &msg),
                  MS_UNIMPLEMENTED);
  CU_ASSERT(msg && strstr(msg, "get_flags"));
  free(TAKE_PTR(msg));

  /* The scheduler leaving ends its stream on the allocator: the framework goes. */
  ms_rpc_stream_free(st);
  ms_rpc_channel_free(sch);
  CU_ASSERT(ms_sim_wait(no_framework, (void *)mapi, WAIT_MS));

  /* Without the allocator, master-api does not serve. */
  ms_sim_agent_free(a1);
  ms_sim_agent_free(a2);
  ms_test_cluster_stop(&c);
  CU_ASSERT(ms_sim_wait(not_serving, (void *)mapi, WAIT_MS));
  CU_ASSERT_EQUAL(ms_test_proc_stop(mp, SIGTERM), 0);
  ms_test_proc_free(mp);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"view_subscribe_relay_operator", test_master_api},
      {NULL, NULL},
  };
  return ms_test_main_etcd(argc, argv, "master-api", cases, &dir, &etcd);
}
