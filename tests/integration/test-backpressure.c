/* Issue 14, backpressure: a client that floods calls, never reads or streams without
 * pause meets flow control or RESOURCE_EXHAUSTED, and the services' memory stays
 * flat (VmRSS read from /proc, figures printed); resource names from a framework
 * cannot fill the allocator's name table. Real etcd, registry and allocator
 * processes; the stream case runs an in-process server. Waits are hang guards on
 * conditions, never timing assertions. */
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/resources-io.h"
#include "meseta/rpc.h"
#include "meseta/test/v1/echo.pb-c.h"
#include "meseta/time.h"
#include "meseta/v1/agent_link.pb-c.h"
#include "meseta/v1/registry.pb-c.h"

#include "cluster.h"
#include "raw-grpc.h"
#include "sim.h"
#include "testlib.h"

#define WAIT_MS 30000
#define RSS_BOUND_KIB (96 * 1024) /* under ASan a flood alone costs ~+50-70 MiB (allocator caches, gRPC) */

static char *dir;
static ms_test_etcd *etcd;

extern const unsigned char ms_test_descriptor_set[]; /* the Echo test service's */
extern const size_t ms_test_descriptor_set_len;

static long rss_kib(pid_t pid) {
  char path[64], line[256];
  snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  long kib = -1;
  while (f && fgets(line, sizeof(line), f))
    if (strncmp(line, "VmRSS:", 6) == 0)
      kib = strtol(line + 6, NULL, 10);
  if (f)
    fclose(f);
  return kib;
}

static int env_int(const char *name, int def) {
  const char *v = getenv(name);
  return v && *v ? (int)strtol(v, NULL, 10) : def;
}

static void check_rss(const char *what, long before, long after) {
  printf("  %s: VmRSS %ld KiB before, %ld KiB after (%+ld KiB; bound +%d KiB)\n", what, before, after,
         after - before, RSS_BOUND_KIB);
  CU_ASSERT_TRUE(before > 0 && after > 0);
  CU_ASSERT_TRUE(after - before < RSS_BOUND_KIB);
}

/* ---- a unary flood: `total` calls, `window` in flight, each given up after deadline_ms ---- */

typedef struct flood_result {
  unsigned long by_code[17];
  char *first[17]; /* the first message per code */
} flood_result;

typedef struct flood_call {
  grpc_call *call;
  grpc_metadata_array md, trailing;
  grpc_status_code st;
  grpc_slice details;
} flood_call;

/* Fire-and-forget as a hostile client does: a call the server queued stays queued
 * there after the client's deadline, so only the server's own bound limits it. */
static void flood(const char *target, const char *method, const ProtobufCMessage *req, int total, int window,
                  int64_t deadline_ms, flood_result *ret) {
  memset(ret, 0, sizeof(*ret));
  grpc_init();
  grpc_channel_credentials *creds = grpc_insecure_credentials_create();
  grpc_channel *ch = grpc_channel_create(target, creds, NULL);
  grpc_channel_credentials_release(creds);
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  grpc_slice m = grpc_slice_from_copied_string(method);
  size_t len = protobuf_c_message_get_packed_size(req);
  uint8_t *bytes = ms_xmalloc(len);
  protobuf_c_message_pack(req, bytes);
  grpc_slice payload = grpc_slice_from_copied_buffer((const char *)bytes, len);
  free(bytes);
  int started = 0, ended = 0;
  while (ended < total) {
    while (started < total && started - ended < window) {
      flood_call *fc = ms_xcalloc(1, sizeof(*fc));
      gpr_timespec dl =
          gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(deadline_ms, GPR_TIMESPAN));
      fc->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL, dl, NULL);
      grpc_metadata_array_init(&fc->md);
      grpc_metadata_array_init(&fc->trailing);
      grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&payload, 1);
      grpc_op ops[5];
      memset(ops, 0, sizeof(ops));
      ms_raw_request_ops(ops, bb, &fc->md);
      ops[4].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
      ops[4].data.recv_status_on_client.status = &fc->st;
      ops[4].data.recv_status_on_client.status_details = &fc->details;
      ops[4].data.recv_status_on_client.trailing_metadata = &fc->trailing;
      CU_ASSERT_EQUAL_FATAL(grpc_call_start_batch(fc->call, ops, 5, fc, NULL), GRPC_CALL_OK);
      grpc_byte_buffer_destroy(bb);
      started++;
    }
    grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    CU_ASSERT_EQUAL_FATAL(ev.type, GRPC_OP_COMPLETE);
    flood_call *fc = ev.tag;
    unsigned code = (unsigned)fc->st < 17 ? fc->st : GRPC_STATUS_UNKNOWN;
    if (!ret->by_code[code]++)
      ret->first[code] =
          ms_xstrndup((const char *)GRPC_SLICE_START_PTR(fc->details), GRPC_SLICE_LENGTH(fc->details));
    grpc_slice_unref(fc->details);
    grpc_metadata_array_destroy(&fc->md);
    grpc_metadata_array_destroy(&fc->trailing);
    grpc_call_unref(fc->call);
    free(fc);
    ended++;
  }
  grpc_slice_unref(payload);
  grpc_slice_unref(m);
  grpc_channel_destroy(ch);
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
  grpc_shutdown();
}

static void print_flood(const char *what, const flood_result *r) {
  printf("  %s:", what);
  for (int i = 0; i < 17; i++)
    if (r->by_code[i])
      printf(" %s %lu", ms_status_name((ms_status)i), r->by_code[i]);
  printf("\n");
  for (int i = 0; i < 17; i++)
    if (r->first[i]) {
      printf("    first %s: %.200s\n", ms_status_name((ms_status)i), r->first[i]);
      free(r->first[i]);
    }
}

/* ---- flow control on a client stream (in-process server) ---- */

#define HELD_MAX 16
#define STREAM_MSGS 20000

static struct {
  pthread_mutex_t mu;
  ms_rpc_call *call; /* referenced while messages are held */
  int held, max_held, received;
} fc_state = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int fc_start(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err) {
  (void)req;
  (void)err;
  pthread_mutex_lock(&fc_state.mu);
  ms_rpc_call_ref(call);
  fc_state.call = call;
  pthread_mutex_unlock(&fc_state.mu);
  return 0;
}

/* Holds every message, as a service that posts it to its owner thread does. */
static int fc_message(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  (void)msg;
  (void)err;
  ms_rpc_call_hold(call);
  pthread_mutex_lock(&fc_state.mu);
  fc_state.received++;
  if (++fc_state.held > fc_state.max_held)
    fc_state.max_held = fc_state.held;
  pthread_mutex_unlock(&fc_state.mu);
  return 0;
}

static int fc_half_close(ms_rpc_call *call, ms_error **err) {
  (void)err;
  ms_rpc_call_finish(call, MS_OK, NULL);
  return 0;
}

static int fc_get(int *field) {
  pthread_mutex_lock(&fc_state.mu);
  int v = *field;
  pthread_mutex_unlock(&fc_state.mu);
  return v;
}

static void fc_consume_all(void) {
  pthread_mutex_lock(&fc_state.mu);
  int n = fc_state.held;
  fc_state.held = 0;
  ms_rpc_call *call = fc_state.call;
  pthread_mutex_unlock(&fc_state.mu);
  for (int i = 0; i < n; i++)
    ms_rpc_call_consumed(call);
}

typedef struct sender {
  ms_rpc_stream *s;
  atomic_int sent;
} sender;

static void *send_all(void *arg) {
  sender *sd = arg;
  Meseta__Test__V1__EchoRequest req = MESETA__TEST__V1__ECHO_REQUEST__INIT;
  static uint8_t pad[1024];
  req.payload.data = pad;
  req.payload.len = sizeof(pad);
  ms_error *err = NULL;
  for (int i = 0; i < STREAM_MSGS; i++) {
    if (ms_rpc_stream_send(sd->s, &req.base, &err) < 0)
      break;
    atomic_fetch_add(&sd->sent, 1);
  }
  if (!err)
    ms_rpc_stream_close_send(sd->s, &err);
  ms_error_free(err);
  return NULL;
}

/* A client streams without pause while the handler consumes nothing: the layer stops
 * reading at HELD_MAX held messages (the client's sends then block on HTTP/2 flow
 * control); each time the handler consumes, reading resumes, until all arrived. */
static void test_backpressure_stream_flow_control(void) {
  static const ms_rpc_method methods[] = {
      {.name = "Bidi", .on_start = fc_start, .on_message = fc_message, .on_half_close = fc_half_close},
  };
  ms_error *err = NULL;
  const char *addrs[] = {"127.0.0.1:0"};
  ms_rpc_server_options o = {.listen = addrs, .n_listen = 1, .max_held_messages = HELD_MAX};
  ms_rpc_server *srv = ms_rpc_server_new(&o, &err);
  MS_ASSERT_OK(srv ? 0 : -1, &err);
  MS_ASSERT_OK(ms_rpc_server_add_descriptors(srv, ms_test_descriptor_set, ms_test_descriptor_set_len, &err),
               &err);
  MS_ASSERT_OK(ms_rpc_server_add_service(srv, &meseta__test__v1__echo__descriptor, methods, 1, NULL, &err),
               &err);
  MS_ASSERT_OK(ms_rpc_server_start(srv, &err), &err);
  ms_rpc_channel *ch = ms_rpc_channel_new(ms_rpc_server_address(srv, 0), NULL, &err);
  MS_ASSERT_OK(ch ? 0 : -1, &err);
  ms_rpc_call_options co = {.timeout_ms = 120000};
  sender sd = {.s = ms_rpc_stream_open(ch, "/meseta.test.v1.Echo/Bidi", NULL, &co, &err)};
  MS_ASSERT_OK(sd.s ? 0 : -1, &err);
  pthread_t th;
  CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, send_all, &sd), 0);

  /* Nothing consumed: exactly HELD_MAX arrive, then the stream stops. */
  int64_t until = ms_time_mono_ms() + WAIT_MS;
  while (fc_get(&fc_state.received) < HELD_MAX && ms_time_mono_ms() < until)
    usleep(1000);
  CU_ASSERT_EQUAL(fc_get(&fc_state.received), HELD_MAX);
  usleep(300 * 1000); /* room for a wrong extra message to show */
  int sent = atomic_load(&sd.sent);
  printf("  held %d of %d; the client had sent %d (the rest waits on flow control)\n",
         fc_get(&fc_state.received), STREAM_MSGS, sent);
  CU_ASSERT_EQUAL(fc_get(&fc_state.received), HELD_MAX);
  CU_ASSERT_TRUE(sent < STREAM_MSGS);

  /* Consuming resumes reading, at most HELD_MAX at a time, until everything came. */
  until = ms_time_mono_ms() + 4 * WAIT_MS;
  while (fc_get(&fc_state.received) < STREAM_MSGS && ms_time_mono_ms() < until) {
    fc_consume_all();
    usleep(200);
  }
  fc_consume_all();
  pthread_join(th, NULL);
  CU_ASSERT_EQUAL(fc_get(&fc_state.received), STREAM_MSGS);
  CU_ASSERT_TRUE(fc_get(&fc_state.max_held) <= HELD_MAX);
  printf("  at most %d messages held at once (bound %d)\n", fc_get(&fc_state.max_held), HELD_MAX);
  ProtobufCMessage *m = NULL;
  while (ms_rpc_stream_recv(sd.s, &meseta__test__v1__echo_reply__descriptor, &m, &err) == 1)
    protobuf_c_message_free_unpacked(m, NULL);
  ms_error_free(TAKE_PTR(err));
  ms_rpc_stream_free(sd.s);
  ms_rpc_channel_free(ch);
  ms_rpc_call_unref(fc_state.call);
  ms_rpc_server_shutdown(srv, 1000);
  ms_rpc_server_free(srv);
}

/* ---- the registry: a write flood faster than etcd commits ---- */

static void test_backpressure_registry_flood_rss(void) {
  ms_test_cluster c;
  ms_test_cluster_start(&c, etcd, dir, "bp-reg", 0, "10s");
  const char *reg = ms_test_proc_address(c.registry);
  pid_t pid = ms_test_proc_pid(c.registry);
  /* One framework record of ~8 KiB written again and again as "create": etcd commits
   * each alone (same key) and refuses all but the first; the registry queues faster. */
  static char name[8 * 1024];
  memset(name, 'x', sizeof(name) - 1);
  Meseta__V1__FrameworkInfo info = MESETA__V1__FRAMEWORK_INFO__INIT;
  Meseta__V1__FrameworkID ffid = MESETA__V1__FRAMEWORK_ID__INIT;
  ffid.value = "flood-framework";
  info.id = &ffid;
  info.name = name;
  info.user = "flood";
  Meseta__V1__FrameworkRecord fr = MESETA__V1__FRAMEWORK_RECORD__INIT;
  fr.info = &info;
  Meseta__V1__Record rec = MESETA__V1__RECORD__INIT;
  rec.id = "flood-framework";
  rec.body_case = MESETA__V1__RECORD__BODY_FRAMEWORK;
  rec.framework = &fr;
  Meseta__V1__Expect ex = MESETA__V1__EXPECT__INIT;
  ex.expect_case = MESETA__V1__EXPECT__EXPECT_ABSENT;
  ex.absent = true;
  Meseta__V1__PutRequest put = MESETA__V1__PUT_REQUEST__INIT;
  put.record = &rec;
  put.expect = &ex;

  long before = rss_kib(pid);
  flood_result r;
  int64_t t0 = ms_time_mono_ms();
  int calls = env_int("MESETA_BP_CALLS", 40000), window = env_int("MESETA_BP_WINDOW", 100);
  int deadline = env_int("MESETA_BP_DEADLINE_MS", 200);
  flood(reg, "/meseta.v1.Registry/Put", &put.base, calls, window, deadline, &r);
  int64_t ms = ms_time_mono_ms() - t0;
  long after = rss_kib(pid);
  printf("\n  registry Put flood, %d calls, %d in flight, %d ms deadline\n", calls, window, deadline);
  print_flood("answers", &r);
  printf("  %lld ms, %.0f calls/s\n", (long long)ms, calls * 1000.0 / (double)(ms ? ms : 1));
  check_rss("registry", before, after);
  /* Still serving afterwards. */
  CU_ASSERT_EQUAL(ms_test_health(reg), 1);
  ms_test_cluster_stop(&c);
}

/* ---- the allocator: unary flood, a stream never read, a stream without pause ---- */

typedef struct link_flood {
  const char *target;
  int messages;
  int sent;
  char *why;
} link_flood;

/* An agent that registers, then sends executor messages without pause. */
static void *link_flood_main(void *arg) {
  link_flood *lf = arg;
  ms_error *err = NULL;
  ms_rpc_channel *ch = ms_rpc_channel_new(lf->target, NULL, &err);
  ms_rpc_call_options co = {.timeout_ms = 300000};
  ms_rpc_stream *s = ch ? ms_rpc_stream_open(ch, "/meseta.v1.AgentLink/Connect", NULL, &co, &err) : NULL;
  ms_resources *res = NULL;
  Meseta__V1__Resources *rp = NULL;
  if (s && ms_resources_parse_text("cpus:1;mem:64", NULL, &res, &err) == 0)
    rp = ms_resources_to_proto(res);
  if (rp) {
    Meseta__V1__AgentInfo info = MESETA__V1__AGENT_INFO__INIT;
    info.hostname = "flood-agent";
    info.resources = rp->resources;
    info.n_resources = rp->n_resources;
    Meseta__V1__AgentMessage__Register reg = MESETA__V1__AGENT_MESSAGE__REGISTER__INIT;
    reg.agent_info = &info;
    reg.version = "flood";
    Meseta__V1__AgentMessage m = MESETA__V1__AGENT_MESSAGE__INIT;
    m.message_case = MESETA__V1__AGENT_MESSAGE__MESSAGE_REGISTER;
    m.register_ = &reg;
    if (ms_rpc_stream_send(s, &m.base, &err) == 0) {
      static uint8_t data[16 * 1024];
      Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
      fid.value = "no-such-framework";
      Meseta__V1__ExecutorID eid = MESETA__V1__EXECUTOR_ID__INIT;
      eid.value = "flood";
      Meseta__V1__AgentMessage__ExecutorToFramework x =
          MESETA__V1__AGENT_MESSAGE__EXECUTOR_TO_FRAMEWORK__INIT;
      x.framework_id = &fid;
      x.executor_id = &eid;
      x.data.data = data;
      x.data.len = sizeof(data);
      Meseta__V1__AgentMessage xm = MESETA__V1__AGENT_MESSAGE__INIT;
      xm.message_case = MESETA__V1__AGENT_MESSAGE__MESSAGE_EXECUTOR_TO_FRAMEWORK;
      xm.executor_to_framework = &x;
      while (lf->sent < lf->messages && ms_rpc_stream_send(s, &xm.base, &err) == 0)
        lf->sent++;
    }
  }
  if (err)
    lf->why = ms_xstrdup(err->msg);
  ms_error_free(err);
  if (rp)
    ms_resources_proto_free(rp);
  ms_resources_free(res);
  ms_rpc_stream_free(s);
  ms_rpc_channel_free(ch);
  return NULL;
}

static void test_backpressure_allocator_rss(void) {
  ms_test_allocator al = ms_test_allocator_run(dir, "bp-alloc", NULL);
  pid_t pid = ms_test_proc_pid(al.proc);
  ms_error *err = NULL;
  /* A real agent and framework, so that streams carry events. */
  ms_sim_agent_options ao = {.resources = "cpus:4;mem:4096", .task_ms = -1};
  ms_sim_agent *a = ms_sim_agent_start(al.addr, &ao, &err);
  MS_ASSERT_OK(a ? 0 : -1, &err);
  long before = rss_kib(pid);

  /* (b) a subscription never read. */
  Meseta__V1__FrameworkInfo fi = MESETA__V1__FRAMEWORK_INFO__INIT;
  fi.name = "never-reads";
  fi.user = "flood";
  Meseta__V1__SubscribeRequest sr = MESETA__V1__SUBSCRIBE_REQUEST__INIT;
  sr.framework_info = &fi;
  Meseta__V1__FrameworkSubscription sub = MESETA__V1__FRAMEWORK_SUBSCRIPTION__INIT;
  sub.request = &sr;
  ms_rpc_channel *ch = ms_rpc_channel_new(al.addr, NULL, &err);
  MS_ASSERT_OK(ch ? 0 : -1, &err);
  ms_rpc_call_options co = {.timeout_ms = 300000};
  ms_rpc_stream *unread =
      ms_rpc_stream_open(ch, "/meseta.v1.Allocator/SubscribeFramework", &sub.base, &co, &err);
  MS_ASSERT_OK(unread ? 0 : -1, &err);

  /* (c) a stream without pause, beside (a) a unary flood. */
  link_flood lf = {.target = al.addr, .messages = 20000};
  pthread_t th;
  CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, link_flood_main, &lf), 0);
  static uint8_t data[8 * 1024];
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = "no-such-framework";
  Meseta__V1__ExecutorID eid = MESETA__V1__EXECUTOR_ID__INIT;
  eid.value = "e";
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = "a";
  Meseta__V1__MessageRequest msg = MESETA__V1__MESSAGE_REQUEST__INIT;
  msg.framework_id = &fid;
  msg.stream_id = "no-such-stream";
  msg.executor_id = &eid;
  msg.agent_id = &aid;
  msg.data.data = data;
  msg.data.len = sizeof(data);
  Meseta__V1__SchedulerCallRequest req = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  req.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_MESSAGE;
  req.message = &msg;
  flood_result r;
  int64_t t0 = ms_time_mono_ms();
  int calls = env_int("MESETA_BP_CALLS", 40000), window = env_int("MESETA_BP_WINDOW", 100);
  int deadline = env_int("MESETA_BP_ALLOC_DEADLINE_MS", 2000);
  flood(al.addr, "/meseta.v1.Allocator/SchedulerCall", &req.base, calls, window, deadline, &r);
  int64_t ms = ms_time_mono_ms() - t0;
  pthread_join(th, NULL);
  long after = rss_kib(pid);
  printf("\n  allocator SchedulerCall flood, %d calls, %d in flight, %d ms deadline\n", calls, window,
         deadline);
  print_flood("answers", &r);
  printf("  %lld ms, %.0f calls/s; agent-link stream: %d of %d messages sent%s%s\n", (long long)ms,
         calls * 1000.0 / (double)(ms ? ms : 1), lf.sent, lf.messages, lf.why ? ": " : "",
         lf.why ? lf.why : "");
  free(lf.why);
  check_rss("allocator", before, after);
  CU_ASSERT_EQUAL(ms_test_health(al.addr), 1);
  ms_rpc_stream_free(unread);
  ms_rpc_channel_free(ch);
  ms_sim_agent_free(a);
  ms_test_allocator_stop(&al);
}

/* ---- the name table ---- */

#define BOGUS_NAMES 70000

/* 70,000 launches, each with a resource name no agent has: each is refused naming the
 * name (a framework cannot fill the allocator's name table, which past 65,536 names
 * refused everyone), and a real launch works afterwards. */
static void test_backpressure_bogus_resource_names(void) {
  static const char *const extra[] = {"--offer-timeout", "30m", NULL}; /* the flood takes a while */
  ms_test_allocator al = ms_test_allocator_run(dir, "bp-names", extra);
  ms_error *err = NULL;
  ms_sim_agent_options ao = {.resources = "cpus:4;mem:4096", .task_ms = -1};
  ms_sim_agent *a = ms_sim_agent_start(al.addr, &ao, &err);
  MS_ASSERT_OK(a ? 0 : -1, &err);
  ms_sim_framework_options fo = {.name = "names", .mode = MS_SIM_HOLD, .refuse_ms = 0};
  ms_sim_framework *f = ms_sim_framework_start(al.addr, &fo, &err);
  MS_ASSERT_OK(f ? 0 : -1, &err);
  Meseta__V1__Offer *offer = ms_sim_framework_wait_offer(f, WAIT_MS);
  CU_ASSERT_PTR_NOT_NULL_FATAL(offer);

  /* Built by hand: parsing text here would intern the names in this process. */
  Meseta__V1__Value__Scalar one = MESETA__V1__VALUE__SCALAR__INIT, mem = MESETA__V1__VALUE__SCALAR__INIT;
  one.value = 1;
  mem.value = 64;
  Meseta__V1__Resource rs[3] = {MESETA__V1__RESOURCE__INIT, MESETA__V1__RESOURCE__INIT,
                                MESETA__V1__RESOURCE__INIT};
  rs[0].name = "cpus";
  rs[0].type = MESETA__V1__VALUE__TYPE__SCALAR;
  rs[0].scalar = &one;
  rs[1].name = "mem";
  rs[1].type = MESETA__V1__VALUE__TYPE__SCALAR;
  rs[1].scalar = &mem;
  char name[64];
  rs[2].name = name;
  rs[2].type = MESETA__V1__VALUE__TYPE__SCALAR;
  rs[2].scalar = &one;
  Meseta__V1__Resource *rp[] = {&rs[0], &rs[1], &rs[2]};
  char task[64];
  Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
  tid.value = task;
  Meseta__V1__TaskInfo ti = MESETA__V1__TASK_INFO__INIT;
  ti.name = "bogus";
  ti.task_id = &tid;
  ti.agent_id = offer->agent_id;
  ti.resources = rp;
  ti.n_resources = 3;
  Meseta__V1__TaskInfo *tis[] = {&ti};
  Meseta__V1__Offer__Operation__Launch l = MESETA__V1__OFFER__OPERATION__LAUNCH__INIT;
  l.task_infos = tis;
  l.n_task_infos = 1;
  Meseta__V1__Offer__Operation op = MESETA__V1__OFFER__OPERATION__INIT;
  op.operation_case = MESETA__V1__OFFER__OPERATION__OPERATION_LAUNCH;
  op.launch = &l;
  Meseta__V1__Offer__Operation *ops[] = {&op};
  Meseta__V1__OfferID *oids[] = {offer->id};
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = (char *)ms_sim_framework_id(f);
  Meseta__V1__AcceptRequest acc = MESETA__V1__ACCEPT_REQUEST__INIT;
  acc.framework_id = &fid;
  acc.stream_id = (char *)ms_sim_framework_stream_id(f);
  acc.offer_ids = oids;
  acc.n_offer_ids = 1;
  acc.operations = ops;
  acc.n_operations = 1;
  Meseta__V1__SchedulerCallRequest req = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  req.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_ACCEPT;
  req.accept = &acc;

  int named = 0;
  int64_t t0 = ms_time_mono_ms();
  for (int i = 0; i < BOGUS_NAMES; i++) {
    snprintf(name, sizeof(name), "bogus-%d", i);
    snprintf(task, sizeof(task), "bogus-task-%d", i);
    int rc = ms_sim_framework_call(f, &req, &err);
    bool ok =
        rc < 0 && err->code == MS_INVALID_ARGUMENT && strstr(err->msg, name) && strstr(err->msg, "resources");
    if (!ok) {
      fprintf(stderr, "  launch with `%s`: %s %s\n", name, err ? ms_status_name(err->code) : "OK",
              err ? err->msg : "");
      CU_FAIL("a launch with an unknown resource name was not refused naming it");
      ms_error_free(TAKE_PTR(err));
      break;
    }
    if (i == 0)
      printf("  refused: %s\n", err->msg);
    named++;
    ms_error_free(TAKE_PTR(err));
  }
  printf("  %d of %d launches refused naming their resource name, in %lld ms\n", named, BOGUS_NAMES,
         (long long)(ms_time_mono_ms() - t0));
  CU_ASSERT_EQUAL(named, BOGUS_NAMES);

  /* A real framework still works. */
  MS_ASSERT_OK(ms_sim_framework_launch(f, offer, "real-task", "cpus:1;mem:128", &err), &err);
  CU_ASSERT_FATAL(ms_sim_agent_wait_stat(a, offsetof(ms_sim_agent_stats, run_tasks), 1, WAIT_MS));
  protobuf_c_message_free_unpacked(&offer->base, NULL);
  ms_sim_framework_free(f);
  ms_sim_agent_free(a);
  ms_test_allocator_stop(&al);
}

int main(int argc, char **argv) {
  /* ASan holds freed memory in a quarantine (256 MiB by default), which would read as
   * growth; the services started here keep a small one so VmRSS shows what they hold. */
  const char *asan = getenv("ASAN_OPTIONS");
  char *opts = ms_xasprintf("%s%squarantine_size_mb=8", asan ? asan : "", asan && *asan ? ":" : "");
  setenv("ASAN_OPTIONS", opts, 1);
  free(opts);
  static const ms_test_case cases[] = {
      {"backpressure_stream_flow_control", test_backpressure_stream_flow_control},
      {"backpressure_registry_flood_rss", test_backpressure_registry_flood_rss},
      {"backpressure_allocator_rss", test_backpressure_allocator_rss},
      {"backpressure_bogus_resource_names", test_backpressure_bogus_resource_names},
      {NULL, NULL},
  };
  return ms_test_main_etcd(argc, argv, "backpressure", cases, &dir, &etcd);
}
