/* meseta-master-api's identity and its bad-input suite, over a real etcd, registry and
 * allocator with a simulated agent.
 *
 * Identity: a tokens file validated at start (errors name the entry, never the
 * token); a valid bearer token subscribes a framework whose principal then shows in
 * GetFrameworks; an unknown token and a malformed `authorization` are UNAUTHENTICATED
 * (the token not echoed); with --require-auth an anonymous caller is UNAUTHENTICATED;
 * another principal cannot call for, subscribe as, or re-subscribe to alice's
 * framework (PERMISSION_DENIED, nothing changed); SIGHUP reloads the tokens, and a
 * bad file keeps the old ones.
 *
 * Bad input, through the public API: missing ids, stale and unknown offers, malformed
 * resources in a LAUNCH, a message above the server's limit, a garbage body. Each
 * gets its status and a message naming the field; after each, a barrier write
 * (UpdateWeights) lands exactly its own revisions after the state read before the bad
 * call, and the agents, frameworks (with their offers), tasks, executors and
 * operations are byte for byte the same; master-api and the allocator still serve.
 * Waits are bounded hang guards, never timing assertions. */
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/pb.h"
#include "meseta/rpc.h"
#include "meseta/v1/operator.pb-c.h"
#include "meseta/v1/scheduler.pb-c.h"

#include "cluster.h"
#include "etcd-harness.h"
#include "proc.h"
#include "raw-grpc.h"
#include "sim.h"
#include "testlib.h"

#define WAIT_MS 30000
#define ALICE "alice-token-0123456789abcdef"
#define BOB "bob-token-0123456789abcdef"
#define CAROL "carol-token-0123456789abcdef"
#define STRANGER "stranger-token-0123456789"

static ms_test_etcd *etcd;
static char *dir;
/* The client's TLS (CA and certificate) while the mTLS case runs; NULL: plaintext. */
static const ms_rpc_channel_options *client_tls;

/* ---- calls ---- */

/* One unary call with an optional bearer token; the status, *resp on OK and *msg the
 * error's message (both the caller's). */
static ms_status call_as(const char *addr, const char *token, const char *method, const ProtobufCMessage *req,
                         const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp, char **msg) {
  _cleanup_free_ char *hdr = token ? ms_xasprintf("Bearer %s", token) : NULL;
  const char *md[] = {"authorization", hdr, NULL};
  return ms_test_call(addr, client_tls, token ? md : NULL, method, req, rd, 10000, resp, msg);
}

/* The same with a raw `authorization` value. */
static ms_status call_raw_auth(const char *addr, const char *auth, const char *method,
                               const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rd,
                               char **msg) {
  const char *md[] = {"authorization", auth, NULL};
  return ms_test_call(addr, client_tls, md, method, req, rd, 10000, NULL, msg);
}

/* Asserts a refusal: its code, and that its message holds `needle`. */
#define EXPECT(expr, want, needle)                                                                           \
  do {                                                                                                       \
    char *m_ = NULL;                                                                                         \
    ms_status c_ = (expr);                                                                                   \
    if (c_ != (want) || !m_ || !strstr(m_, (needle)))                                                        \
      fprintf(stderr, "%s:%d: got %s `%s`, want %s with `%s`\n", __FILE__, __LINE__, ms_status_name(c_),     \
              m_ ? m_ : "", ms_status_name(want), (needle));                                                 \
    CU_ASSERT_EQUAL(c_, (want));                                                                             \
    CU_ASSERT(m_ &&strstr(m_, (needle)));                                                                    \
    free(m_);                                                                                                \
  } while (0)
/* EXPECT's calls write their message to `&m_`. */
#define MSG (&m_)

/* ---- the state, and "nothing changed" ---- */

typedef struct fingerprint {
  int64_t revision;
  uint8_t *bytes; /* agents, frameworks, tasks, executors, operations, packed */
  size_t len;
} fingerprint;

static void fingerprint_take(const char *mapi, int64_t min_revision, fingerprint *ret) {
  Meseta__V1__GetStateRequest req = MESETA__V1__GET_STATE_REQUEST__INIT;
  req.min_revision = min_revision;
  ProtobufCMessage *m = NULL;
  CU_ASSERT_EQUAL_FATAL(call_as(mapi, ALICE, "/meseta.v1.Operator/GetState", &req.base,
                                &meseta__v1__get_state_response__descriptor, &m, NULL),
                        MS_OK);
  Meseta__V1__GetStateResponse *r = (Meseta__V1__GetStateResponse *)m;
  CU_ASSERT_PTR_NOT_NULL_FATAL(r->state);
  Meseta__V1__State st = MESETA__V1__STATE__INIT; /* roles left out: the barrier's weight is there */
  st.agents = r->state->agents;
  st.n_agents = r->state->n_agents;
  st.frameworks = r->state->frameworks;
  st.n_frameworks = r->state->n_frameworks;
  st.tasks = r->state->tasks;
  st.n_tasks = r->state->n_tasks;
  st.executors = r->state->executors;
  st.n_executors = r->state->n_executors;
  st.operations = r->state->operations;
  st.n_operations = r->state->n_operations;
  free(ret->bytes);
  ret->bytes = ms_pb_pack(&st.base, &ret->len);
  ret->revision = r->revision;
  protobuf_c_message_free_unpacked(m, NULL);
}

/* A write that orders after everything before it: its revision. */
static int64_t barrier(const char *mapi) {
  static int k;
  Meseta__V1__WeightInfo wi = MESETA__V1__WEIGHT_INFO__INIT;
  wi.role = "barrier";
  wi.weight = 2.0 + (++k % 2); /* 2 and 3: never the default 1, which costs a revision less */
  Meseta__V1__WeightInfo *wis[] = {&wi};
  Meseta__V1__UpdateWeightsRequest uw = MESETA__V1__UPDATE_WEIGHTS_REQUEST__INIT;
  uw.weight_infos = wis;
  uw.n_weight_infos = 1;
  ProtobufCMessage *m = NULL;
  CU_ASSERT_EQUAL_FATAL(call_as(mapi, ALICE, "/meseta.v1.Operator/UpdateWeights", &uw.base,
                                &meseta__v1__update_weights_response__descriptor, &m, NULL),
                        MS_OK);
  int64_t rev = ((Meseta__V1__UpdateWeightsResponse *)m)->revision;
  protobuf_c_message_free_unpacked(m, NULL);
  return rev;
}

/* How many revisions a barrier takes (its weight, its role, the flushed updates),
 * measured once while nothing else happens. */
static int64_t barrier_cost;

/* Nothing changed since *fp: the barrier's revision is its own cost after it, and the
 * state at the barrier is the same. *fp moves to the barrier. */
static void no_change(const char *mapi, fingerprint *fp, int line) {
  int64_t before = fp->revision;
  _cleanup_free_ uint8_t *old = TAKE_PTR(fp->bytes);
  size_t oldlen = fp->len;
  int64_t b = barrier(mapi);
  fingerprint_take(mapi, b, fp);
  if (b != before + barrier_cost || fp->revision != b || fp->len != oldlen ||
      memcmp(fp->bytes, old, oldlen) != 0)
    fprintf(stderr, "line %d: the state changed: revision %lld, barrier %lld, view %lld, %zu vs %zu bytes\n",
            line, (long long)before, (long long)b, (long long)fp->revision, oldlen, fp->len);
  CU_ASSERT_EQUAL(b, before + barrier_cost);
  CU_ASSERT_EQUAL(fp->revision, b);
  CU_ASSERT(fp->len == oldlen && memcmp(fp->bytes, old, oldlen) == 0);
}
#define NO_CHANGE(fp) no_change(mapi, fp, __LINE__)

/* ---- a scheduler through master-api ---- */

typedef struct sched {
  ms_rpc_channel *ch;
  ms_rpc_stream *st;
  char *hdr;
  char *fw, *stream_id;
  Meseta__V1__Offer *offer; /* the first offer, held */
} sched;

/* Subscribes as `token` (NULL: anonymous) declaring `principal` (NULL: none), for
 * framework `fw_id` (NULL: new). Returns the stream's first status: OK once
 * SUBSCRIBED came (and an offer, with want_offer). */
static ms_status sched_open(sched *s, const char *mapi, const char *token, const char *principal,
                            const char *fw_id, bool want_offer, char **msg) {
  memset(s, 0, sizeof(*s));
  s->ch = ms_rpc_channel_new(mapi, client_tls, NULL);
  s->hdr = token ? ms_xasprintf("Bearer %s", token) : NULL;
  const char *md[] = {"authorization", s->hdr, NULL};
  ms_rpc_call_options so = {.timeout_ms = 120000, .metadata = token ? md : NULL};
  char *roles[] = {"*"};
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = (char *)fw_id;
  Meseta__V1__FrameworkInfo info = MESETA__V1__FRAMEWORK_INFO__INIT;
  info.name = "input-test";
  info.user = "test";
  info.roles = roles;
  info.n_roles = 1;
  info.principal = (char *)(principal ? principal : "");
  info.id = fw_id ? &fid : NULL;
  Google__Protobuf__Duration fo = GOOGLE__PROTOBUF__DURATION__INIT;
  fo.seconds = 600; /* a refused re-subscription must not end alice's framework */
  info.failover_timeout = &fo;
  Meseta__V1__SubscribeRequest sub = MESETA__V1__SUBSCRIBE_REQUEST__INIT;
  sub.framework_info = &info;
  ms_error *err = NULL;
  s->st = ms_rpc_stream_open(s->ch, "/meseta.v1.Scheduler/Subscribe", &sub.base, &so, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s->st);
  while (!s->fw || (want_offer && !s->offer)) { /* bounded by the stream's deadline */
    ProtobufCMessage *em = NULL;
    int r = ms_rpc_stream_recv(s->st, &meseta__v1__event__descriptor, &em, &err);
    if (r <= 0) {
      ms_status code = err ? err->code : MS_UNKNOWN;
      if (msg)
        *msg = ms_xstrdup(err ? err->msg : "the stream ended");
      ms_error_free(err);
      return code;
    }
    Meseta__V1__Event *ev = (Meseta__V1__Event *)em;
    if (ev->event_case == MESETA__V1__EVENT__EVENT_SUBSCRIBED) {
      s->fw = ms_xstrdup(ev->subscribed->framework_id->value);
      s->stream_id = ms_xstrdup(ev->subscribed->stream_id);
    } else if (ev->event_case == MESETA__V1__EVENT__EVENT_OFFERS && ev->offers->n_offers && !s->offer) {
      s->offer = (Meseta__V1__Offer *)ms_pb_dup(&ev->offers->offers[0]->base);
    }
    protobuf_c_message_free_unpacked(em, NULL);
  }
  return MS_OK;
}

static void sched_close(sched *s) {
  ms_rpc_stream_free(s->st);
  ms_rpc_channel_free(s->ch);
  if (s->offer)
    protobuf_c_message_free_unpacked(&s->offer->base, NULL);
  free(s->hdr);
  free(s->fw);
  free(s->stream_id);
  memset(s, 0, sizeof(*s));
}

/* ---- requests ---- */

static ms_status decline(const char *mapi, const char *token, const char *fw, const char *stream,
                         const char *offer, char **msg) {
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = (char *)fw;
  Meseta__V1__OfferID oid = MESETA__V1__OFFER_ID__INIT;
  oid.value = (char *)offer;
  Meseta__V1__OfferID *ids[] = {&oid};
  Google__Protobuf__Duration refuse = GOOGLE__PROTOBUF__DURATION__INIT;
  refuse.seconds = 3600; /* not offered again during the test */
  Meseta__V1__Filters filters = MESETA__V1__FILTERS__INIT;
  filters.refuse_duration = &refuse;
  Meseta__V1__DeclineRequest d = MESETA__V1__DECLINE_REQUEST__INIT;
  d.framework_id = fw ? &fid : NULL;
  d.stream_id = (char *)(stream ? stream : "");
  d.offer_ids = offer ? ids : NULL;
  d.n_offer_ids = offer ? 1 : 0;
  d.filters = &filters;
  return call_as(mapi, token, "/meseta.v1.Scheduler/Decline", &d.base,
                 &meseta__v1__decline_response__descriptor, NULL, msg);
}

/* Accept, as alice, with one LAUNCH of one task whose one resource is `res` (NULL:
 * none). */
static ms_status accept_launch(const char *mapi, const sched *s, const char *fw, const char *stream,
                               const char *offer, const char *task_id, Meseta__V1__Resource *res,
                               char **msg) {
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = (char *)fw;
  Meseta__V1__OfferID oid = MESETA__V1__OFFER_ID__INIT;
  oid.value = (char *)offer;
  Meseta__V1__OfferID *ids[] = {&oid};
  Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
  tid.value = (char *)task_id;
  Meseta__V1__CommandInfo cmd = MESETA__V1__COMMAND_INFO__INIT;
  cmd.value = "true";
  Meseta__V1__Resource *resv[] = {res};
  Meseta__V1__TaskInfo ti = MESETA__V1__TASK_INFO__INIT;
  ti.name = "t";
  ti.task_id = task_id ? &tid : NULL;
  ti.command = &cmd;
  ti.resources = res ? resv : NULL;
  ti.n_resources = res ? 1 : 0;
  Meseta__V1__TaskInfo *tis[] = {&ti};
  Meseta__V1__Offer__Operation__Launch launch = MESETA__V1__OFFER__OPERATION__LAUNCH__INIT;
  launch.task_infos = tis;
  launch.n_task_infos = 1;
  Meseta__V1__Offer__Operation op = MESETA__V1__OFFER__OPERATION__INIT;
  op.operation_case = MESETA__V1__OFFER__OPERATION__OPERATION_LAUNCH;
  op.launch = &launch;
  Meseta__V1__Offer__Operation *ops[] = {&op};
  Meseta__V1__AcceptRequest a = MESETA__V1__ACCEPT_REQUEST__INIT;
  a.framework_id = fw ? &fid : NULL;
  a.stream_id = (char *)(stream ? stream : "");
  a.offer_ids = offer ? ids : NULL;
  a.n_offer_ids = offer ? 1 : 0;
  a.operations = ops;
  a.n_operations = 1;
  (void)s;
  return call_as(mapi, ALICE, "/meseta.v1.Scheduler/Accept", &a.base,
                 &meseta__v1__accept_response__descriptor, NULL, msg);
}

static ms_status kill_task(const char *mapi, const sched *s, const char *task_id, char **msg) {
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = s->fw;
  Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
  tid.value = (char *)task_id;
  Meseta__V1__KillRequest k = MESETA__V1__KILL_REQUEST__INIT;
  k.framework_id = &fid;
  k.stream_id = s->stream_id;
  k.task_id = task_id ? &tid : NULL;
  return call_as(mapi, ALICE, "/meseta.v1.Scheduler/Kill", &k.base, &meseta__v1__kill_response__descriptor,
                 NULL, msg);
}

static ms_status acknowledge(const char *mapi, const sched *s, const char *agent, const char *task,
                             size_t uuid_len, char **msg) {
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = s->fw;
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = (char *)agent;
  Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
  tid.value = (char *)task;
  uint8_t uuid[16] = {1, 2, 3};
  Meseta__V1__AcknowledgeRequest a = MESETA__V1__ACKNOWLEDGE_REQUEST__INIT;
  a.framework_id = &fid;
  a.stream_id = s->stream_id;
  a.agent_id = agent ? &aid : NULL;
  a.task_id = task ? &tid : NULL;
  a.uuid.data = uuid;
  a.uuid.len = uuid_len;
  return call_as(mapi, ALICE, "/meseta.v1.Scheduler/Acknowledge", &a.base,
                 &meseta__v1__acknowledge_response__descriptor, NULL, msg);
}

static Meseta__V1__Framework *framework_listed(const char *mapi, const char *fw, ProtobufCMessage **hold) {
  Meseta__V1__GetFrameworksRequest req = MESETA__V1__GET_FRAMEWORKS_REQUEST__INIT;
  *hold = NULL;
  if (call_as(mapi, ALICE, "/meseta.v1.Operator/GetFrameworks", &req.base,
              &meseta__v1__get_frameworks_response__descriptor, hold, NULL) != MS_OK)
    return NULL;
  Meseta__V1__GetFrameworksResponse *r = (Meseta__V1__GetFrameworksResponse *)*hold;
  for (size_t i = 0; i < r->n_frameworks; i++) {
    Meseta__V1__FrameworkInfo *fi = r->frameworks[i]->framework_info;
    if (fi && fi->id && strcmp(fi->id->value, fw) == 0)
      return r->frameworks[i];
  }
  return NULL;
}

typedef struct fw_wait {
  const char *mapi, *fw;
} fw_wait;

static bool framework_seen(void *ctx) {
  fw_wait *w = ctx;
  ProtobufCMessage *hold;
  bool ok = framework_listed(w->mapi, w->fw, &hold) != NULL;
  if (hold)
    protobuf_c_message_free_unpacked(hold, NULL);
  return ok;
}

/* The log says a reload was refused. */
static bool reload_refused(void *ctx) {
  FILE *f = fopen(ctx, "r");
  char line[1024];
  bool found = false;
  while (f && !found && fgets(line, sizeof(line), f))
    found = strstr(line, "the tokens loaded before stay in use") != NULL;
  if (f)
    fclose(f);
  return found;
}

/* ---- processes ---- */

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fputs(text, f);
  fclose(f);
}

static ms_test_proc *mapi_start(const char *name, const char *alloc, const char *tokens, bool require,
                                ms_error **err) {
  _cleanup_free_ char *bin = ms_test_binary("services/master-api/meseta-master-api");
  const char *argv[] = {bin,    "--listen",      "127.0.0.1:0", "--allocator",
                        alloc,  "--name",        name,          "--tokens-file",
                        tokens, "--max-backoff", "200ms",       "--max-message-bytes",
                        "1MiB", "--log-level",   "debug",       require ? "--require-auth" : NULL,
                        NULL};
  return ms_test_proc_start(name, dir, argv, err);
}

/* ---- the tests ---- */

static const char *tokens_json =
    "{\"tokens\":["
    "{\"token\":\"" ALICE "\",\"principal\":\"alice\",\"claims\":{\"roles\":\"a,b\"}},"
    "{\"token\":\"" BOB "\",\"principal\":\"bob\"}]}";

static void test_tokens_file_checked(void) {
  _cleanup_free_ char *bad = ms_xasprintf("%s/bad-tokens.json", dir);
  write_file(bad, "{\"tokens\":[{\"token\":\"" ALICE "\",\"principal\":\"alice\"},"
                  "{\"token\":\"" BOB "\"}]}");
  ms_error *err = NULL;
  ms_test_proc *p = mapi_start("mapi-bad-tokens", "127.0.0.1:1", bad, false, &err);
  CU_ASSERT_PTR_NULL(p);
  CU_ASSERT_FATAL(err != NULL);
  CU_ASSERT(strstr(err->msg, "tokens[1].principal") != NULL);
  CU_ASSERT(strstr(err->msg, BOB) == NULL); /* never the secret */
  ms_error_free(TAKE_PTR(err));
  write_file(bad, "{\"tokens\":[{\"token\":\"" ALICE "\",\"principal\":\"a\"},"
                  "{\"token\":\"" ALICE "\",\"principal\":\"b\"}]}");
  p = mapi_start("mapi-dup-tokens", "127.0.0.1:1", bad, false, &err);
  CU_ASSERT_PTR_NULL(p);
  CU_ASSERT_FATAL(err != NULL);
  CU_ASSERT(strstr(err->msg, "tokens[1].token: the same token as tokens[0]") != NULL);
  CU_ASSERT(strstr(err->msg, ALICE) == NULL);
  ms_error_free(err);
  ms_test_proc_free(p);
}

static void test_identity_and_bad_input(void) {
  ms_test_cluster c;
  ms_test_cluster_start(&c, etcd, dir, "mapi-input", 1, "5s");
  CU_ASSERT_FATAL(ms_test_cluster_wait_leader(&c, WAIT_MS) == 0);
  const char *alloc = c.addr[0];
  ms_error *err = NULL;
  _cleanup_free_ char *tokens = ms_xasprintf("%s/tokens.json", dir);
  write_file(tokens, tokens_json);
  ms_test_proc *mp = mapi_start("mapi-open", alloc, tokens, false, &err);
  ms_test_proc *mr = mp ? mapi_start("mapi-strict", alloc, tokens, true, &err) : NULL;
  if (!mr)
    fprintf(stderr, "%s\n", err->msg);
  CU_ASSERT_PTR_NOT_NULL_FATAL(mr);
  const char *mapi = ms_test_proc_address(mp), *strict = ms_test_proc_address(mr);
  CU_ASSERT_FATAL(ms_sim_wait(ms_test_serving, (void *)mapi, WAIT_MS));
  CU_ASSERT_FATAL(ms_sim_wait(ms_test_serving, (void *)strict, WAIT_MS));
  ms_sim_agent_options ao = {.hostname = "node-a", .resources = "cpus:4;mem:4096"};
  ms_sim_agent *agent = ms_sim_agent_start(alloc, &ao, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(agent);

  Meseta__V1__GetStateRequest gs = MESETA__V1__GET_STATE_REQUEST__INIT;
  const ProtobufCMessageDescriptor *gsd = &meseta__v1__get_state_response__descriptor;
  /* Unknown and malformed credentials: UNAUTHENTICATED, the token not echoed. */
  EXPECT(call_as(mapi, STRANGER, "/meseta.v1.Operator/GetState", &gs.base, gsd, NULL, MSG),
         MS_UNAUTHENTICATED, "unknown bearer token");
  {
    char *m = NULL;
    call_as(mapi, STRANGER, "/meseta.v1.Operator/GetState", &gs.base, gsd, NULL, &m);
    CU_ASSERT(m && !strstr(m, STRANGER));
    free(m);
  }
  EXPECT(call_raw_auth(mapi, "Basic YWxpY2U6cHc=", "/meseta.v1.Operator/GetState", &gs.base, gsd, MSG),
         MS_UNAUTHENTICATED, "Bearer");
  EXPECT(call_raw_auth(mapi, "Bearer ", "/meseta.v1.Operator/GetState", &gs.base, gsd, MSG),
         MS_UNAUTHENTICATED, "empty");
  /* --require-auth: anonymous refused for reads, calls and subscriptions; a token works. */
  EXPECT(call_as(strict, NULL, "/meseta.v1.Operator/GetState", &gs.base, gsd, NULL, MSG), MS_UNAUTHENTICATED,
         "authentication required");
  CU_ASSERT_EQUAL(call_as(strict, BOB, "/meseta.v1.Operator/GetState", &gs.base, gsd, NULL, NULL), MS_OK);
  EXPECT(decline(strict, NULL, "some-framework", "some-stream", "some-offer", MSG), MS_UNAUTHENTICATED,
         "authentication required");
  sched anon;
  EXPECT(sched_open(&anon, strict, NULL, NULL, NULL, false, MSG), MS_UNAUTHENTICATED,
         "authentication required");
  sched_close(&anon);

  /* Alice subscribes with her token; her framework's principal is recorded. */
  sched a;
  CU_ASSERT_EQUAL_FATAL(sched_open(&a, mapi, ALICE, NULL, NULL, true, NULL), MS_OK);
  fw_wait fwait = {mapi, a.fw};
  CU_ASSERT_FATAL(ms_sim_wait(framework_seen, &fwait, WAIT_MS));
  ProtobufCMessage *hold = NULL;
  Meseta__V1__Framework *f = framework_listed(mapi, a.fw, &hold);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  CU_ASSERT_STRING_EQUAL(f->framework_info->principal, "alice");
  protobuf_c_message_free_unpacked(hold, NULL);
  const char *offer = a.offer->id->value;
  const char *agent_id = ms_sim_agent_id(agent);

  fingerprint fp = {0};
  /* Two barriers first: the first creates the barrier's role; the second costs what every
   * later one does, which no_change then expects. */
  barrier(mapi);
  int64_t b0 = barrier(mapi);
  fingerprint_take(mapi, b0, &fp);
  barrier_cost = barrier(mapi) - b0;
  CU_ASSERT(barrier_cost >= 1 && barrier_cost <= 4);
  fingerprint_take(mapi, b0 + barrier_cost, &fp);
  /* The barrier's cost, while nothing else happens; then twice more the same (the
   * state holds still by itself). */
  NO_CHANGE(&fp);
  NO_CHANGE(&fp);
  NO_CHANGE(&fp);

  /* Bob cannot act for, subscribe as, or take over alice's framework. */
  EXPECT(decline(mapi, BOB, a.fw, a.stream_id, offer, MSG), MS_PERMISSION_DENIED,
         "belongs to principal `alice`, not `bob`");
  NO_CHANGE(&fp);
  EXPECT(decline(strict, BOB, a.fw, a.stream_id, offer, MSG), MS_PERMISSION_DENIED, "alice");
  NO_CHANGE(&fp);
  sched b;
  EXPECT(sched_open(&b, mapi, BOB, "alice", NULL, false, MSG), MS_PERMISSION_DENIED,
         "framework_info.principal");
  sched_close(&b);
  NO_CHANGE(&fp);
  EXPECT(sched_open(&b, mapi, BOB, NULL, a.fw, false, MSG), MS_PERMISSION_DENIED,
         "belongs to principal `alice`, not `bob`");
  sched_close(&b);
  NO_CHANGE(&fp);

  /* ---- bad input, with alice's own credentials ---- */
  EXPECT(decline(mapi, ALICE, NULL, a.stream_id, offer, MSG), MS_INVALID_ARGUMENT, "framework_id");
  NO_CHANGE(&fp);
  EXPECT(decline(mapi, ALICE, a.fw, NULL, offer, MSG), MS_INVALID_ARGUMENT, "stream_id");
  NO_CHANGE(&fp);
  EXPECT(decline(mapi, ALICE, a.fw, a.stream_id, NULL, MSG), MS_INVALID_ARGUMENT, "offer_ids");
  NO_CHANGE(&fp);
  EXPECT(decline(mapi, ALICE, a.fw, a.stream_id, "", MSG), MS_INVALID_ARGUMENT, "offer_ids[0]");
  NO_CHANGE(&fp);
  EXPECT(decline(mapi, ALICE, a.fw, a.stream_id, "no-such-offer", MSG), MS_NOT_FOUND, "offer_ids[0]");
  NO_CHANGE(&fp);
  EXPECT(decline(mapi, ALICE, "no-such-framework", a.stream_id, offer, MSG), MS_NOT_FOUND,
         "no-such-framework");
  NO_CHANGE(&fp);
  EXPECT(accept_launch(mapi, &a, NULL, a.stream_id, offer, "t1", NULL, MSG), MS_INVALID_ARGUMENT,
         "framework_id");
  EXPECT(accept_launch(mapi, &a, a.fw, NULL, offer, "t1", NULL, MSG), MS_INVALID_ARGUMENT, "stream_id");
  EXPECT(accept_launch(mapi, &a, a.fw, a.stream_id, NULL, "t1", NULL, MSG), MS_INVALID_ARGUMENT, "offer_ids");
  EXPECT(accept_launch(mapi, &a, a.fw, a.stream_id, "no-such-offer", "t1", NULL, MSG), MS_NOT_FOUND,
         "offer_ids[0]");
  NO_CHANGE(&fp);
  EXPECT(kill_task(mapi, &a, NULL, MSG), MS_INVALID_ARGUMENT, "task_id");
  NO_CHANGE(&fp);
  EXPECT(acknowledge(mapi, &a, NULL, "t1", 16, MSG), MS_INVALID_ARGUMENT, "agent_id");
  EXPECT(acknowledge(mapi, &a, agent_id, NULL, 16, MSG), MS_INVALID_ARGUMENT, "task_id");
  EXPECT(acknowledge(mapi, &a, agent_id, "t1", 3, MSG), MS_INVALID_ARGUMENT, "uuid");
  NO_CHANGE(&fp);

  /* Malformed resources in a LAUNCH: the field named, the offer still held. */
  Meseta__V1__Value__Scalar sc = MESETA__V1__VALUE__SCALAR__INIT;
  Meseta__V1__Resource r = MESETA__V1__RESOURCE__INIT;
  r.name = "cpus";
  r.type = MESETA__V1__VALUE__TYPE__SCALAR;
  r.scalar = &sc;
  sc.value = -1;
  EXPECT(accept_launch(mapi, &a, a.fw, a.stream_id, offer, "t1", &r, MSG), MS_INVALID_ARGUMENT,
         "accept.operations[0].launch.task_infos[0]`: resources[0]");
  NO_CHANGE(&fp);
  sc.value = NAN;
  EXPECT(accept_launch(mapi, &a, a.fw, a.stream_id, offer, "t1", &r, MSG), MS_INVALID_ARGUMENT,
         "resources[0]");
  NO_CHANGE(&fp);
  sc.value = 1e300;
  EXPECT(accept_launch(mapi, &a, a.fw, a.stream_id, offer, "t1", &r, MSG), MS_INVALID_ARGUMENT,
         "resources[0]");
  NO_CHANGE(&fp);
  r.type = MESETA__V1__VALUE__TYPE__TEXT;
  r.scalar = NULL;
  EXPECT(accept_launch(mapi, &a, a.fw, a.stream_id, offer, "t1", &r, MSG), MS_INVALID_ARGUMENT,
         "resources[0]");
  NO_CHANGE(&fp);
  r.type = MESETA__V1__VALUE__TYPE__SCALAR;
  r.scalar = &sc;
  r.name = "";
  sc.value = 1;
  EXPECT(accept_launch(mapi, &a, a.fw, a.stream_id, offer, "t1", &r, MSG), MS_INVALID_ARGUMENT,
         "resources[0]");
  NO_CHANGE(&fp);
  r.name = "cpus";
  sc.value = 64; /* more than the offer holds */
  EXPECT(accept_launch(mapi, &a, a.fw, a.stream_id, offer, "t1", &r, MSG), MS_INVALID_ARGUMENT, "accept");
  NO_CHANGE(&fp);
  sc.value = 1;
  EXPECT(accept_launch(mapi, &a, a.fw, a.stream_id, offer, NULL, &r, MSG), MS_INVALID_ARGUMENT, "task_id");
  NO_CHANGE(&fp);

  /* A message above master-api's limit (1 MiB here), and garbage bodies. */
  {
    char *big = ms_xmalloc(2 * 1024 * 1024 + 1);
    memset(big, 'x', 2 * 1024 * 1024);
    big[2 * 1024 * 1024] = '\0';
    char *m = NULL;
    ms_status code = decline(mapi, ALICE, a.fw, a.stream_id, big, &m);
    CU_ASSERT_EQUAL(code, MS_RESOURCE_EXHAUSTED);
    if (code != MS_RESOURCE_EXHAUSTED)
      fprintf(stderr, "huge message: %s %.200s\n", ms_status_name(code), m ? m : "");
    free(m);
    free(big);
  }
  NO_CHANGE(&fp);
  grpc_channel_credentials *creds = grpc_insecure_credentials_create();
  grpc_channel *gch = grpc_channel_create(mapi, creds, NULL);
  grpc_channel_credentials_release(creds);
  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  static const char garbage[] = "\xff\xff\xff\xff\x0f not a protobuf message";
  const char *paths[] = {"/meseta.v1.Scheduler/Accept", "/meseta.v1.Scheduler/Subscribe",
                         "/meseta.v1.Operator/UpdateWeights", "/meseta.v1.Operator/GetState"};
  const char *types[] = {"meseta.v1.AcceptRequest", "meseta.v1.SubscribeRequest",
                         "meseta.v1.UpdateWeightsRequest", "meseta.v1.GetStateRequest"};
  for (size_t i = 0; i < MS_ARRAY_SIZE(paths); i++) {
    grpc_slice sl = grpc_slice_from_copied_buffer(garbage, sizeof(garbage) - 1);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    char *details = NULL;
    grpc_status_code st = ms_raw_unary(gch, cq, NULL, paths[i], bb, 10000, NULL, &details);
    grpc_byte_buffer_destroy(bb);
    CU_ASSERT_EQUAL(st, GRPC_STATUS_INVALID_ARGUMENT);
    CU_ASSERT(details && strstr(details, types[i]));
    if (st != GRPC_STATUS_INVALID_ARGUMENT || !details || !strstr(details, types[i]))
      fprintf(stderr, "garbage to %s: %d `%s`\n", paths[i], (int)st, details ? details : "");
    free(details);
  }
  ms_raw_cq_destroy(cq);
  grpc_channel_destroy(gch);
  NO_CHANGE(&fp);

  /* A stale offer: declined (OK, with alice's token), then accepted or declined again. */
  CU_ASSERT_EQUAL(decline(mapi, ALICE, a.fw, a.stream_id, offer, NULL), MS_OK);
  fingerprint_take(mapi, barrier(mapi), &fp);
  sc.value = 1;
  EXPECT(accept_launch(mapi, &a, a.fw, a.stream_id, offer, "t1", &r, MSG), MS_NOT_FOUND, "offer_ids[0]");
  NO_CHANGE(&fp);
  EXPECT(decline(mapi, ALICE, a.fw, a.stream_id, offer, MSG), MS_NOT_FOUND, "offer_ids[0]");
  NO_CHANGE(&fp);

  /* SIGHUP: carol's token is taken once the file has it; a broken file keeps hers. */
  EXPECT(call_as(mapi, CAROL, "/meseta.v1.Operator/GetState", &gs.base, gsd, NULL, MSG), MS_UNAUTHENTICATED,
         "unknown bearer token");
  write_file(tokens, "{\"tokens\":[{\"token\":\"" ALICE "\",\"principal\":\"alice\"},"
                     "{\"token\":\"" CAROL "\",\"principal\":\"carol\"}]}");
  CU_ASSERT_EQUAL(kill(ms_test_proc_pid(mp), SIGHUP), 0);
  ms_status code = MS_UNAUTHENTICATED;
  for (int i = 0; i < 3000 && code != MS_OK; i++) { /* a hang guard: the reload is asynchronous */
    code = call_as(mapi, CAROL, "/meseta.v1.Operator/GetState", &gs.base, gsd, NULL, NULL);
    if (code != MS_OK)
      usleep(10000);
  }
  CU_ASSERT_EQUAL(code, MS_OK);
  write_file(tokens, "{\"tokens\": [ broken");
  CU_ASSERT_EQUAL(kill(ms_test_proc_pid(mp), SIGHUP), 0);
  CU_ASSERT(ms_sim_wait(reload_refused, (void *)ms_test_proc_log(mp), WAIT_MS));
  CU_ASSERT_EQUAL(call_as(mapi, CAROL, "/meseta.v1.Operator/GetState", &gs.base, gsd, NULL, NULL), MS_OK);

  /* Everyone is still up and serving. */
  CU_ASSERT_EQUAL(ms_test_health(mapi), 1);
  CU_ASSERT_EQUAL(ms_test_health(strict), 1);
  CU_ASSERT_EQUAL(ms_test_health(alloc), 1);
  CU_ASSERT_EQUAL(kill(ms_test_proc_pid(mp), 0), 0);

  free(fp.bytes);
  sched_close(&a);
  ms_sim_agent_free(agent);
  CU_ASSERT_EQUAL(ms_test_proc_stop(mp, SIGTERM), 0);
  CU_ASSERT_EQUAL(ms_test_proc_stop(mr, SIGTERM), 0);
  ms_test_proc_free(mp);
  ms_test_proc_free(mr);
  ms_test_cluster_stop(&c);
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  _cleanup_free_ char *cmd = NULL;
  CU_ASSERT_FATAL(vasprintf(&cmd, fmt, ap) >= 0);
  va_end(ap);
  _cleanup_free_ char *full = ms_xasprintf("cd %s && (%s) >/dev/null 2>&1", dir, cmd);
  CU_ASSERT_FATAL(system(full) == 0);
}

/* <name>.pem / <name>.key signed by the test's CA, with common name `cn`. */
static void make_cert(const char *name, const char *cn, const char *san) {
  sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout %s.key -out %s.csr "
     "-subj /CN=%s",
     name, name, cn);
  sh("printf 'subjectAltName=%s\\n' > %s.ext && openssl x509 -req -days 2 -in %s.csr -CA ca.pem -CAkey "
     "ca.key "
     "-CAcreateserial -out %s.pem -extfile %s.ext",
     san, name, name, name, name);
}

typedef struct tls_client {
  char *ca, *cert, *key;
  ms_rpc_tls tls;
  ms_rpc_channel_options o;
} tls_client;

static void tls_client_init(tls_client *t, const char *name) {
  t->ca = ms_xasprintf("%s/ca.pem", dir);
  t->cert = ms_xasprintf("%s/%s.pem", dir, name);
  t->key = ms_xasprintf("%s/%s.key", dir, name);
  t->tls =
      (ms_rpc_tls){.ca_file = t->ca, .cert_file = t->cert, .key_file = t->key, .server_name = "localhost"};
  t->o = (ms_rpc_channel_options){.tls = &t->tls};
}

static void tls_client_release(tls_client *t) {
  free(t->ca);
  free(t->cert);
  free(t->key);
}

static bool view_ready(void *ctx) {
  Meseta__V1__GetStateRequest gs = MESETA__V1__GET_STATE_REQUEST__INIT;
  return call_as(ctx, NULL, "/meseta.v1.Operator/GetState", &gs.base,
                 &meseta__v1__get_state_response__descriptor, NULL, NULL) == MS_OK;
}

/* Mutual TLS: the certificate's name is the principal; a token of another principal
 * beside it is refused; a framework subscribed by certificate answers to it only. */
static void test_mtls(void) {
  if (system("openssl version >/dev/null 2>&1") != 0) {
    fprintf(stderr, "test-master-api-input: openssl is missing: the mTLS case is skipped\n");
    return;
  }
  sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -keyout ca.key -out "
     "ca.pem -subj /CN=test-ca");
  make_cert("server", "localhost", "DNS:localhost,IP:127.0.0.1");
  make_cert("client-alice", "alice", "DNS:alice");
  make_cert("client-bob", "bob", "DNS:bob");
  ms_test_cluster c;
  ms_test_cluster_start(&c, etcd, dir, "mapi-mtls", 1, "5s");
  CU_ASSERT_FATAL(ms_test_cluster_wait_leader(&c, WAIT_MS) == 0);
  _cleanup_free_ char *tokens = ms_xasprintf("%s/tokens-mtls.json", dir);
  write_file(tokens, tokens_json);
  _cleanup_free_ char *bin = ms_test_binary("services/master-api/meseta-master-api");
  _cleanup_free_ char *cert = ms_xasprintf("%s/server.pem", dir), *key = ms_xasprintf("%s/server.key", dir),
                      *ca = ms_xasprintf("%s/ca.pem", dir);
  const char *argv[] = {
      bin,         "--listen",      "127.0.0.1:0", "--allocator",    c.addr[0],     "--name",
      "mapi-mtls", "--tls-cert",    cert,          "--tls-key",      key,           "--tls-ca",
      ca,          "--tokens-file", tokens,        "--require-auth", "--log-level", "debug",
      NULL};
  ms_error *err = NULL;
  ms_test_proc *mp = ms_test_start("mapi-mtls", dir, argv);
  const char *mapi = ms_test_proc_address(mp);
  tls_client alice, bob;
  tls_client_init(&alice, "client-alice");
  tls_client_init(&bob, "client-bob");
  ms_sim_agent_options ao = {.hostname = "node-m", .resources = "cpus:2;mem:1024"};
  ms_sim_agent *agent = ms_sim_agent_start(c.addr[0], &ao, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(agent);

  client_tls = &alice.o;
  CU_ASSERT_FATAL(ms_sim_wait(view_ready, (void *)mapi, WAIT_MS)); /* by certificate alone */
  Meseta__V1__GetStateRequest gs = MESETA__V1__GET_STATE_REQUEST__INIT;
  const ProtobufCMessageDescriptor *gsd = &meseta__v1__get_state_response__descriptor;
  CU_ASSERT_EQUAL(call_as(mapi, ALICE, "/meseta.v1.Operator/GetState", &gs.base, gsd, NULL, NULL), MS_OK);
  EXPECT(call_as(mapi, BOB, "/meseta.v1.Operator/GetState", &gs.base, gsd, NULL, MSG), MS_UNAUTHENTICATED,
         "the bearer token is principal `bob` but the client certificate is `alice`");
  sched a;
  CU_ASSERT_EQUAL_FATAL(sched_open(&a, mapi, NULL, NULL, NULL, true, NULL), MS_OK);
  fw_wait fwait = {mapi, a.fw};
  CU_ASSERT_FATAL(ms_sim_wait(framework_seen, &fwait, WAIT_MS));
  ProtobufCMessage *hold = NULL;
  Meseta__V1__Framework *f = framework_listed(mapi, a.fw, &hold);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  CU_ASSERT_STRING_EQUAL(f->framework_info->principal, "alice");
  protobuf_c_message_free_unpacked(hold, NULL);
  /* Bob's certificate, with or without his token: not alice's framework. */
  client_tls = &bob.o;
  EXPECT(decline(mapi, NULL, a.fw, a.stream_id, a.offer->id->value, MSG), MS_PERMISSION_DENIED,
         "belongs to principal `alice`, not `bob`");
  EXPECT(decline(mapi, BOB, a.fw, a.stream_id, a.offer->id->value, MSG), MS_PERMISSION_DENIED,
         "belongs to principal `alice`, not `bob`");
  client_tls = &alice.o;
  CU_ASSERT_EQUAL(decline(mapi, NULL, a.fw, a.stream_id, a.offer->id->value, NULL), MS_OK);
  sched_close(&a);
  client_tls = NULL;

  ms_sim_agent_free(agent);
  CU_ASSERT_EQUAL(ms_test_proc_stop(mp, SIGTERM), 0);
  ms_test_proc_free(mp);
  ms_test_cluster_stop(&c);
  tls_client_release(&alice);
  tls_client_release(&bob);
}

/* ---- issue 12 point 6: bad input refused where it enters ---- */

/* Opens a Subscribe with `sub` as alice and waits for its first event: OK once
 * SUBSCRIBED came, else the stream's status and *msg its message. */
static ms_status subscribe_once(const char *mapi, const Meseta__V1__SubscribeRequest *sub, char **msg) {
  ms_rpc_channel *ch = ms_rpc_channel_new(mapi, client_tls, NULL);
  _cleanup_free_ char *hdr = ms_xasprintf("Bearer %s", ALICE);
  const char *md[] = {"authorization", hdr, NULL};
  ms_rpc_call_options so = {.timeout_ms = 30000, .metadata = md};
  ms_error *err = NULL;
  ms_status code = MS_OK;
  ms_rpc_stream *st = ms_rpc_stream_open(ch, "/meseta.v1.Scheduler/Subscribe", &sub->base, &so, &err);
  ProtobufCMessage *em = NULL;
  if (!st || ms_rpc_stream_recv(st, &meseta__v1__event__descriptor, &em, &err) <= 0) {
    code = err ? err->code : MS_UNKNOWN;
    if (msg)
      *msg = ms_xstrdup(err ? err->msg : "the stream ended");
  } else if (((Meseta__V1__Event *)em)->event_case != MESETA__V1__EVENT__EVENT_SUBSCRIBED) {
    code = MS_UNKNOWN;
  }
  if (em)
    protobuf_c_message_free_unpacked(em, NULL);
  ms_error_free(err);
  ms_rpc_stream_free(st);
  ms_rpc_channel_free(ch);
  return code;
}

/* A command task `task_id` with cpus and mem (MiB) as its resources (0: left out). */
typedef struct task_msg {
  Meseta__V1__TaskInfo ti;
  Meseta__V1__TaskID tid;
  Meseta__V1__CommandInfo cmd;
  Meseta__V1__Value__Scalar sc[2];
  Meseta__V1__Resource r[2], *rp[2];
} task_msg;

static void task_init(task_msg *t, const char *task_id, double cpus, double mem) {
  memset(t, 0, sizeof(*t));
  meseta__v1__task_info__init(&t->ti);
  meseta__v1__task_id__init(&t->tid);
  meseta__v1__command_info__init(&t->cmd);
  t->tid.value = (char *)task_id;
  t->cmd.value = "true";
  t->ti.name = "t";
  t->ti.task_id = &t->tid;
  t->ti.command = &t->cmd;
  t->ti.resources = t->rp;
  const char *names[] = {"cpus", "mem"};
  double values[] = {cpus, mem};
  for (size_t i = 0; i < 2; i++) {
    if (values[i] == 0)
      continue;
    meseta__v1__value__scalar__init(&t->sc[i]);
    meseta__v1__resource__init(&t->r[i]);
    t->sc[i].value = values[i];
    t->r[i].name = (char *)names[i];
    t->r[i].type = MESETA__V1__VALUE__TYPE__SCALAR;
    t->r[i].scalar = &t->sc[i];
    t->rp[t->ti.n_resources++] = &t->r[i];
  }
}

/* Accept, as alice, of `offer` with one LAUNCH of `ti`, or with `group` a LAUNCH_GROUP. */
static ms_status accept_task(const char *mapi, const sched *s, const char *offer, Meseta__V1__TaskInfo *ti,
                             bool group, char **msg) {
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = s->fw;
  Meseta__V1__OfferID oid = MESETA__V1__OFFER_ID__INIT;
  oid.value = (char *)offer;
  Meseta__V1__OfferID *ids[] = {&oid};
  Meseta__V1__TaskInfo *tis[] = {ti};
  Meseta__V1__Offer__Operation__Launch launch = MESETA__V1__OFFER__OPERATION__LAUNCH__INIT;
  launch.task_infos = tis;
  launch.n_task_infos = 1;
  Meseta__V1__ExecutorID xid = MESETA__V1__EXECUTOR_ID__INIT;
  xid.value = "x";
  Meseta__V1__ExecutorInfo x = MESETA__V1__EXECUTOR_INFO__INIT;
  x.executor_id = &xid;
  Meseta__V1__TaskGroupInfo tg = MESETA__V1__TASK_GROUP_INFO__INIT;
  tg.tasks = tis;
  tg.n_tasks = 1;
  Meseta__V1__Offer__Operation__LaunchGroup lg = MESETA__V1__OFFER__OPERATION__LAUNCH_GROUP__INIT;
  lg.executor = &x;
  lg.task_group = &tg;
  Meseta__V1__Offer__Operation op = MESETA__V1__OFFER__OPERATION__INIT;
  op.operation_case = group ? MESETA__V1__OFFER__OPERATION__OPERATION_LAUNCH_GROUP
                            : MESETA__V1__OFFER__OPERATION__OPERATION_LAUNCH;
  if (group)
    op.launch_group = &lg;
  else
    op.launch = &launch;
  Meseta__V1__Offer__Operation *ops[] = {&op};
  Meseta__V1__AcceptRequest a = MESETA__V1__ACCEPT_REQUEST__INIT;
  a.framework_id = &fid;
  a.stream_id = s->stream_id;
  a.offer_ids = ids;
  a.n_offer_ids = 1;
  a.operations = ops;
  a.n_operations = 1;
  return call_as(mapi, ALICE, "/meseta.v1.Scheduler/Accept", &a.base,
                 &meseta__v1__accept_response__descriptor, NULL, msg);
}

/* grpcio decodes GetFrameworks and GetState (it refuses a response with a string that
 * is not UTF-8: "Exception deserializing response!"). 0: decoded; 77: no grpcio here. */
static const char *decode_py =
    "import os, sys\n"
    "src, addr, token = sys.argv[1:4]\n"
    "try:\n"
    "    import grpc, grpc_tools\n"
    "except ImportError:\n"
    "    sys.exit(77)\n"
    "sys.path.insert(0, os.path.join(src, 'examples', 'python'))\n"
    "import framework\n"
    "pb = framework.load_protos(os.path.join(src, 'proto'),\n"
    "                           framework.SCHEDULER_PROTOS + ('meseta/v1/operator.proto',))\n"
    "op = pb.operator_pb2_grpc.OperatorStub(grpc.insecure_channel(addr))\n"
    "md = [('authorization', 'Bearer ' + token)]\n"
    "fws = op.GetFrameworks(pb.operator_pb2.GetFrameworksRequest(), metadata=md, timeout=30)\n"
    "st = op.GetState(pb.operator_pb2.GetStateRequest(), metadata=md, timeout=30)\n"
    "print('python decoded %d frameworks, %d in the state' % (len(fws.frameworks), "
    "len(st.state.frameworks)))\n";

static int python_decodes(const char *mapi) {
  _cleanup_free_ char *script = ms_xasprintf("%s/decode-state.py", dir);
  write_file(script, decode_py);
  const char *src = getenv("MESETA_SOURCE_DIR");
  CU_ASSERT_PTR_NOT_NULL_FATAL(src);
  _cleanup_free_ char *cmd = ms_xasprintf("/usr/bin/python3 %s %s %s %s", script, src, mapi, ALICE);
  int rc = system(cmd);
  return rc >= 0 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* Point 6 through master-api, over the real allocator: a Subscribe whose name is not
 * UTF-8, or with offer constraints (not implemented), a request carrying a field its
 * type does not define, Accepts with a volume, a LAUNCH_GROUP, a task without cpus or
 * memory, a task name that is not UTF-8: each refused naming the field, and nothing
 * changed (the offer is still there: a good launch on it then works). grpcio still
 * decodes GetFrameworks and GetState. */
static void test_trust_6_refused_at_entry(void) {
  ms_test_cluster c;
  ms_test_cluster_start(&c, etcd, dir, "mapi-trust6", 1, "5s");
  CU_ASSERT_FATAL(ms_test_cluster_wait_leader(&c, WAIT_MS) == 0);
  ms_error *err = NULL;
  _cleanup_free_ char *tokens = ms_xasprintf("%s/tokens6.json", dir);
  write_file(tokens, tokens_json);
  ms_test_proc *mp = mapi_start("mapi-trust6", c.addr[0], tokens, false, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(mp);
  const char *mapi = ms_test_proc_address(mp);
  CU_ASSERT_FATAL(ms_sim_wait(ms_test_serving, (void *)mapi, WAIT_MS));
  ms_sim_agent_options ao = {.hostname = "node-6", .resources = "cpus:4;mem:4096"};
  ms_sim_agent *agent = ms_sim_agent_start(c.addr[0], &ao, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(agent);
  sched a;
  CU_ASSERT_EQUAL_FATAL(sched_open(&a, mapi, ALICE, NULL, NULL, true, NULL), MS_OK);
  const char *offer = a.offer->id->value;
  fingerprint fp = {0};
  barrier(mapi);
  int64_t b0 = barrier(mapi);
  barrier_cost = barrier(mapi) - b0;
  fingerprint_take(mapi, b0 + barrier_cost, &fp);

  /* Strings that are not UTF-8, refused by the rpc layer of the first server. */
  char *roles[] = {"*"};
  Meseta__V1__FrameworkInfo info = MESETA__V1__FRAMEWORK_INFO__INIT;
  info.name = "bad\xC3\x28name";
  info.user = "test";
  info.roles = roles;
  info.n_roles = 1;
  Google__Protobuf__Duration keep = GOOGLE__PROTOBUF__DURATION__INIT;
  keep.seconds = 600; /* were it accepted, it would stay listed after its stream ends */
  info.failover_timeout = &keep;
  Meseta__V1__SubscribeRequest sub = MESETA__V1__SUBSCRIBE_REQUEST__INIT;
  sub.framework_info = &info;
  EXPECT(subscribe_once(mapi, &sub, MSG), MS_INVALID_ARGUMENT,
         "`framework_info.name`: not valid UTF-8 (byte 3)");
  NO_CHANGE(&fp);
  info.name = "ok";
  char *bad_role[] = {"*", "eng\xED\xA0\x80"};
  info.roles = bad_role;
  info.n_roles = 2;
  EXPECT(subscribe_once(mapi, &sub, MSG), MS_INVALID_ARGUMENT, "`framework_info.roles[1]`: not valid UTF-8");
  NO_CHANGE(&fp);
  info.roles = roles;
  info.n_roles = 1;
  /* A field the cluster does not implement (the allocator's table). */
  Meseta__V1__OfferConstraints oc = MESETA__V1__OFFER_CONSTRAINTS__INIT;
  sub.offer_constraints = &oc;
  EXPECT(subscribe_once(mapi, &sub, MSG), MS_INVALID_ARGUMENT,
         "`request.offer_constraints`: offer constraints are not implemented yet");
  NO_CHANGE(&fp);
  sub.offer_constraints = NULL;
  Meseta__V1__OfferFilters ofl = MESETA__V1__OFFER_FILTERS__INIT;
  Meseta__V1__FrameworkInfo__OfferFiltersEntry ofe = MESETA__V1__FRAMEWORK_INFO__OFFER_FILTERS_ENTRY__INIT;
  Meseta__V1__FrameworkInfo__OfferFiltersEntry *ofes[] = {&ofe};
  ofe.key = "*";
  ofe.value = &ofl;
  info.offer_filters = ofes;
  info.n_offer_filters = 1;
  EXPECT(
      subscribe_once(mapi, &sub, MSG), MS_INVALID_ARGUMENT,
      "`request.framework_info.offer_filters`: per-role offer filters are not implemented yet at Subscribe");
  NO_CHANGE(&fp);
  info.n_offer_filters = 0;
  /* A field number the type does not define (field 0: protobuf-c kept it, then could
   * not read its own copy back). */
  {
    static const char bytes[] = "\x0a\x03\x12\x01x\x80\x00\x00";
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *gch = grpc_channel_create(mapi, creds, NULL);
    grpc_channel_credentials_release(creds);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_slice sl = grpc_slice_from_copied_buffer(bytes, sizeof(bytes) - 1);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    char *details = NULL;
    grpc_status_code st =
        ms_raw_unary(gch, cq, NULL, "/meseta.v1.Scheduler/Subscribe", bb, 10000, NULL, &details);
    grpc_byte_buffer_destroy(bb);
    if (st != GRPC_STATUS_INVALID_ARGUMENT || !details || !strstr(details, "field number 0"))
      fprintf(stderr, "field 0: %d `%s`\n", (int)st, details ? details : "");
    CU_ASSERT_EQUAL(st, GRPC_STATUS_INVALID_ARGUMENT);
    CU_ASSERT(details && strstr(details, "field number 0 is not part of `meseta.v1.SubscribeRequest`"));
    free(details);
    ms_raw_cq_destroy(cq);
    grpc_channel_destroy(gch);
  }
  CU_ASSERT_EQUAL(ms_test_health(mapi), 1);
  NO_CHANGE(&fp);

  /* Accepts: the first refused field, with its path; the offer stays. */
  task_msg t;
  task_init(&t, "t6", 0.1, 32);
  t.ti.name = "caf\xC3";
  EXPECT(
      accept_task(mapi, &a, offer, &t.ti, false, MSG), MS_INVALID_ARGUMENT,
      "request to `/meseta.v1.Scheduler/Accept`: `operations[0].launch.task_infos[0].name`: not valid UTF-8 "
      "(byte 3)");
  NO_CHANGE(&fp);
  t.ti.name = "t";
  Meseta__V1__Volume vol = MESETA__V1__VOLUME__INIT, *vols[] = {&vol};
  vol.container_path = "data";
  vol.host_path = "/tmp";
  Meseta__V1__ContainerInfo ci = MESETA__V1__CONTAINER_INFO__INIT;
  ci.volumes = vols;
  ci.n_volumes = 1;
  t.ti.container = &ci;
  EXPECT(accept_task(mapi, &a, offer, &t.ti, false, MSG), MS_INVALID_ARGUMENT,
         "`accept.operations[0].launch.task_infos[0].container.volumes`: volumes (host, sandbox, secret and "
         "CSI) "
         "are not implemented yet");
  NO_CHANGE(&fp);
  t.ti.container = NULL;
  EXPECT(accept_task(mapi, &a, offer, &t.ti, true, MSG), MS_INVALID_ARGUMENT,
         "`accept.operations[0].launch_group`: LAUNCH_GROUP");
  NO_CHANGE(&fp);
  /* Tasks without cpus or memory. */
  const double sizes[][2] = {{0, 0}, {1, 0}, {0, 64}, {0.001, 64}, {0.1, 16}};
  for (size_t i = 0; i < MS_ARRAY_SIZE(sizes); i++) {
    task_init(&t, "t6", sizes[i][0], sizes[i][1]);
    EXPECT(
        accept_task(mapi, &a, offer, &t.ti, false, MSG), MS_INVALID_ARGUMENT,
        "`accept.operations[0].launch.task_infos[0].resources`: a task needs cpus >= 0.01 and mem >= 32 MiB");
    NO_CHANGE(&fp);
  }

  /* grpcio reads what the cluster serves. */
  int py = python_decodes(mapi);
  if (py == 77)
    fprintf(stderr, "grpcio or grpc_tools missing: the Python decode was skipped\n");
  else
    CU_ASSERT_EQUAL(py, 0);

  /* Nothing was lost: the offer still launches a task at the minimums. */
  task_init(&t, "t6", 0.01, 32);
  CU_ASSERT_EQUAL(accept_task(mapi, &a, offer, &t.ti, false, NULL), MS_OK);
  CU_ASSERT_EQUAL(ms_test_health(mapi), 1);
  CU_ASSERT_EQUAL(ms_test_health(c.addr[0]), 1);

  free(fp.bytes);
  sched_close(&a);
  ms_sim_agent_free(agent);
  CU_ASSERT_EQUAL(ms_test_proc_stop(mp, SIGTERM), 0);
  ms_test_proc_free(mp);
  ms_test_cluster_stop(&c);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"tokens_file_checked", test_tokens_file_checked},
      {"identity_and_bad_input", test_identity_and_bad_input},
      {"mtls", test_mtls},
      {"trust_6_refused_at_entry", test_trust_6_refused_at_entry},
      {NULL, NULL},
  };
  return ms_test_main_etcd(argc, argv, "master-api-input", cases, &dir, &etcd);
}
