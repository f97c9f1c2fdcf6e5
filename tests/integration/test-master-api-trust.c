/* meseta-master-api under issue 12 ("Trust"): idle subscriptions cost no thread each
 * (point 2) and are bounded per principal, enum values the proto does not define are
 * refused naming the field (point 6), an error relayed from the allocator says which
 * hop failed (point 8), and a lost task is not live (point 9); under issue 14, reads
 * are served off the CQ thread and bounded. Real allocator and
 * master-api processes, simulated agents and frameworks; waits are hang guards. */
#include <dirent.h>
#include <fcntl.h>
#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/rpc.h"
#include "meseta/time.h"
#include "meseta/v1/operator.pb-c.h"
#include "meseta/v1/scheduler.pb-c.h"

#include "cluster.h"
#include "etcd-harness.h"
#include "proc.h"
#include "raw-grpc.h"
#include "sim.h"
#include "testlib.h"

#define WAIT_MS 30000

static ms_test_etcd *etcd;
static char *dir;

/* A master-api in front of `alloc`; `extra` more flags (NULL-terminated, or NULL). */
static ms_test_proc *mapi_start(const char *name, const char *alloc, const char *const *extra, bool wait) {
  const char *flags[32] = {"--allocator", alloc, "--max-backoff", "200ms"};
  size_t n = 4;
  for (size_t i = 0; extra && extra[i] && n < MS_ARRAY_SIZE(flags) - 1; i++)
    flags[n++] = extra[i];
  return ms_test_mapi_start(dir, name, flags, wait);
}

static size_t thread_count(pid_t pid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
  DIR *d = opendir(path);
  if (!d)
    return 0;
  size_t n = 0;
  for (struct dirent *e; (e = readdir(d));)
    n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

/* Opens Scheduler.Subscribe on ch as a framework of `role`; the stream once SUBSCRIBED
 * came, else NULL with *ret_code and *ret_msg (the caller frees) the status. */
static ms_rpc_stream *subscribe_as(ms_rpc_channel *ch, const char *role, const char *token,
                                   ms_status *ret_code, char **ret_msg) {
  char *roles[] = {(char *)role};
  Meseta__V1__FrameworkInfo info = MESETA__V1__FRAMEWORK_INFO__INIT;
  info.name = "idle";
  info.user = "test";
  info.roles = roles;
  info.n_roles = 1;
  Meseta__V1__SubscribeRequest sub = MESETA__V1__SUBSCRIBE_REQUEST__INIT;
  sub.framework_info = &info;
  _cleanup_free_ char *hdr = token ? ms_xasprintf("Bearer %s", token) : NULL;
  const char *md[] = {"authorization", hdr, NULL};
  ms_rpc_call_options so = {.timeout_ms = 600000, .metadata = token ? md : NULL};
  ms_error *err = NULL;
  ms_rpc_stream *st = ms_rpc_stream_open(ch, "/meseta.v1.Scheduler/Subscribe", &sub.base, &so, &err);
  ProtobufCMessage *m = NULL;
  if (st && ms_rpc_stream_recv(st, &meseta__v1__event__descriptor, &m, &err) > 0) {
    bool ok = ((Meseta__V1__Event *)m)->event_case == MESETA__V1__EVENT__EVENT_SUBSCRIBED;
    protobuf_c_message_free_unpacked(m, NULL);
    if (ok)
      return st;
    ms_error_set(&err, MS_UNKNOWN, "the first event is not SUBSCRIBED");
  }
  if (!err)
    ms_error_set(&err, MS_OK, "the stream ended");
  if (ret_code)
    *ret_code = err->code;
  if (ret_msg)
    *ret_msg = ms_xstrdup(err->msg);
  ms_error_free(err);
  ms_rpc_stream_free(st);
  return NULL;
}

static ms_rpc_stream *subscribe(ms_rpc_channel *ch, const char *role, ms_status *ret_code, char **ret_msg) {
  return subscribe_as(ch, role, NULL, ret_code, ret_msg);
}

/* ---- point 2: idle subscriptions ---- */

#define IDLE 200
#define THREAD_BOUND 40

/* 200 idle Scheduler subscriptions: master-api's thread count stays bounded (it
 * was one thread per subscription: 223 threads), and a 201st framework still gets
 * offers and runs a task. The agent's resources are reserved to the 201st's role, so
 * the idle frameworks (another role) hold none of them. */
static void test_trust_2_idle_subscribers(void) {
  ms_test_allocator al = ms_test_allocator_run(dir, "alloc-idle", NULL);
  /* The env twin, not the flag: the same test runs against a master-api without it. */
  setenv("MESETA_MAX_SUBSCRIPTIONS_PER_PRINCIPAL", "1000", 1);
  ms_test_proc *mp = mapi_start("mapi-idle", al.addr, (const char *[]){"--log-level", "info", NULL}, true);
  unsetenv("MESETA_MAX_SUBSCRIPTIONS_PER_PRINCIPAL");
  const char *mapi = ms_test_proc_address(mp);
  size_t before = thread_count(ms_test_proc_pid(mp));

  ms_rpc_channel *chs[4];
  for (size_t i = 0; i < 4; i++)
    chs[i] = ms_rpc_channel_new(mapi, NULL, NULL);
  ms_rpc_stream *idle[IDLE] = {0};
  size_t opened = 0;
  for (size_t i = 0; i < IDLE; i++) {
    char *msg = NULL;
    idle[i] = subscribe(chs[i % 4], "idle", NULL, &msg);
    if (!idle[i])
      fprintf(stderr, "subscription %zu: %s\n", i, msg);
    free(msg);
    opened += idle[i] != NULL;
  }
  CU_ASSERT_EQUAL(opened, IDLE);
  size_t with_idle = thread_count(ms_test_proc_pid(mp));
  printf("\n  master-api threads: %zu before, %zu with %d idle subscriptions (bound asserted: < %d)\n",
         before, with_idle, IDLE, THREAD_BOUND);
  CU_ASSERT(with_idle < THREAD_BOUND);

  /* The 201st: offers of its role's agent, a task launched and finished. */
  ms_error *err = NULL;
  ms_sim_agent_options ao = {.hostname = "node-busy", .resources = "cpus(busy):2;mem(busy):1024"};
  ms_sim_agent *a = ms_sim_agent_start(al.addr, &ao, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  ms_sim_framework_options fo = {.name = "busy",
                                 .role = "busy",
                                 .mode = MS_SIM_ACCEPT,
                                 .task_resources = "cpus(busy):0.5;mem(busy):64",
                                 .max_tasks = 2,
                                 .public_api = true};
  ms_sim_framework *f = ms_sim_framework_start(mapi, &fo, &err);
  if (!f)
    fprintf(stderr, "framework 201: %s\n", err->msg);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  CU_ASSERT(ms_sim_framework_wait_stat(f, offsetof(ms_sim_framework_stats, finished), 1, WAIT_MS));
  printf("  framework %d: %llu offers, %llu tasks finished\n", IDLE + 1,
         (unsigned long long)MS_SIM_FW_STAT(f, offers), (unsigned long long)MS_SIM_FW_STAT(f, finished));
  CU_ASSERT(thread_count(ms_test_proc_pid(mp)) < THREAD_BOUND);

  ms_sim_framework_free(f);
  for (size_t i = 0; i < IDLE; i++)
    ms_rpc_stream_free(idle[i]);
  for (size_t i = 0; i < 4; i++)
    ms_rpc_channel_free(chs[i]);
  ms_sim_agent_free(a);
  CU_ASSERT_EQUAL(ms_test_proc_stop(mp, SIGTERM), 0);
  ms_test_proc_free(mp);
  ms_test_allocator_stop(&al);
}

typedef struct resub {
  ms_rpc_channel *ch;
  ms_rpc_stream *st;
} resub;

static bool subscribed_again(void *ctx) {
  resub *r = ctx;
  r->st = subscribe(r->ch, "*", NULL, NULL);
  return r->st != NULL;
}

#define ALICE "alice-token-0123456789abcdef"

/* Past --max-subscriptions-per-principal, Subscribe is RESOURCE_EXHAUSTED naming the
 * limit and the principal (anonymous callers: per peer host); another principal has
 * its own budget; a stream ending makes room again. */
static void test_trust_2_subscriptions_per_principal(void) {
  ms_test_allocator al = ms_test_allocator_run(dir, "alloc-limit", NULL);
  _cleanup_free_ char *tokens = ms_xasprintf("%s/limit-tokens.json", dir);
  FILE *tf = fopen(tokens, "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(tf);
  fputs("{\"tokens\":[{\"token\":\"" ALICE "\",\"principal\":\"alice\"}]}", tf);
  fclose(tf);
  ms_test_proc *mp = mapi_start(
      "mapi-limit", al.addr,
      (const char *[]){"--max-subscriptions-per-principal", "2", "--tokens-file", tokens, NULL}, true);
  ms_rpc_channel *ch = ms_rpc_channel_new(ms_test_proc_address(mp), NULL, NULL);
  ms_rpc_stream *s1 = subscribe(ch, "*", NULL, NULL), *s2 = subscribe(ch, "*", NULL, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s2);
  ms_status code = MS_OK;
  char *msg = NULL;
  ms_rpc_stream *s3 = subscribe(ch, "*", &code, &msg);
  CU_ASSERT_PTR_NULL(s3);
  CU_ASSERT_EQUAL(code, MS_RESOURCE_EXHAUSTED);
  printf("\n  third subscription: %s\n", msg);
  CU_ASSERT(msg && strstr(msg, "--max-subscriptions-per-principal 2"));
  CU_ASSERT(msg && strstr(msg, "anonymous@127.0.0.1"));
  free(TAKE_PTR(msg));
  ms_rpc_stream_free(s3);
  /* alice, from the same host, is another principal: two more, then refused by name. */
  ms_rpc_stream *a1 = subscribe_as(ch, "*", ALICE, NULL, NULL),
                *a2 = subscribe_as(ch, "*", ALICE, NULL, NULL);
  CU_ASSERT_PTR_NOT_NULL(a1);
  CU_ASSERT_PTR_NOT_NULL(a2);
  code = MS_OK;
  ms_rpc_stream *a3 = subscribe_as(ch, "*", ALICE, &code, &msg);
  CU_ASSERT_PTR_NULL(a3);
  CU_ASSERT_EQUAL(code, MS_RESOURCE_EXHAUSTED);
  CU_ASSERT(msg && strstr(msg, "principal `alice`"));
  free(msg);
  ms_rpc_stream_free(a3);
  ms_rpc_stream_free(a1);
  ms_rpc_stream_free(a2);
  /* One ends: room for another. */
  ms_rpc_stream_free(s1);
  resub r = {.ch = ch};
  CU_ASSERT(ms_sim_wait(subscribed_again, &r, WAIT_MS));
  ms_rpc_stream_free(r.st);
  ms_rpc_stream_free(s2);
  ms_rpc_channel_free(ch);
  CU_ASSERT_EQUAL(ms_test_proc_stop(mp, SIGTERM), 0);
  ms_test_proc_free(mp);
  ms_test_allocator_stop(&al);
}

/* ---- the relay's slow-scheduler cut, kept across its rewrite ---- */

static size_t frameworks_listed(const char *mapi, bool include_completed) {
  Meseta__V1__GetFrameworksRequest req = MESETA__V1__GET_FRAMEWORKS_REQUEST__INIT;
  req.include_completed = include_completed;
  ProtobufCMessage *resp = NULL;
  if (ms_test_call(mapi, NULL, NULL, "/meseta.v1.Operator/GetFrameworks", &req.base,
                   &meseta__v1__get_frameworks_response__descriptor, 10000, &resp, NULL) != MS_OK)
    return SIZE_MAX;
  size_t n = ((Meseta__V1__GetFrameworksResponse *)resp)->n_frameworks;
  protobuf_c_message_free_unpacked(resp, NULL);
  return n;
}
/* Subscribed at some point: listed live, or completed once the cut removed it (the cut
 * can come before a poll sees it live). */
static bool one_framework_ever(void *ctx) {
  return frameworks_listed(ctx, true) == 1;
}
static bool no_live_framework(void *ctx) {
  return frameworks_listed(ctx, false) == 0;
}

/* A scheduler that stops reading (raw gRPC, a small receive window) while the
 * allocator sends a HEARTBEAT every millisecond: past --stream-queue its stream ends
 * RESOURCE_EXHAUSTED and the relay cancels upstream (the framework goes). */
static void test_relay_slow_scheduler_cut(void) {
  const char *aextra[] = {"--heartbeat-interval", "1ms", NULL};
  ms_test_allocator al = ms_test_allocator_run(dir, "alloc-slow", aextra);
  ms_test_proc *mp = mapi_start("mapi-slow", al.addr, (const char *[]){"--stream-queue", "8", NULL}, true);
  const char *mapi = ms_test_proc_address(mp);
  grpc_arg args[2] = {
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_HTTP2_BDP_PROBE, .value.integer = 0},
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, .value.integer = 1024},
  };
  grpc_channel_args ca = {.num_args = 2, .args = args};
  grpc_channel_credentials *cr = grpc_insecure_credentials_create();
  grpc_channel *ch = grpc_channel_create(mapi, cr, &ca);
  grpc_channel_credentials_release(cr);
  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(120, GPR_TIMESPAN));
  grpc_slice method = grpc_slice_from_static_string("/meseta.v1.Scheduler/Subscribe");
  grpc_call *call =
      grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL, deadline, NULL);
  char *roles[] = {"*"};
  Meseta__V1__FrameworkInfo info = MESETA__V1__FRAMEWORK_INFO__INIT;
  info.name = "slow";
  info.user = "test";
  info.roles = roles;
  info.n_roles = 1;
  Meseta__V1__SubscribeRequest sub = MESETA__V1__SUBSCRIBE_REQUEST__INIT;
  sub.framework_info = &info;
  size_t len = protobuf_c_message_get_packed_size(&sub.base);
  uint8_t *buf = ms_xmalloc(len);
  protobuf_c_message_pack(&sub.base, buf);
  grpc_slice sl = grpc_slice_from_copied_buffer((const char *)buf, len);
  free(buf);
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
  grpc_slice_unref(sl);
  grpc_metadata_array md, trailers;
  grpc_metadata_array_init(&md);
  grpc_metadata_array_init(&trailers);
  grpc_status_code status = GRPC_STATUS_OK;
  grpc_slice details = grpc_empty_slice();
  grpc_op ops[5];
  memset(ops, 0, sizeof(ops));
  ms_raw_request_ops(ops, bb, &md);
  CU_ASSERT_EQUAL_FATAL(grpc_call_start_batch(call, ops, 4, (void *)1, NULL), GRPC_CALL_OK);
  CU_ASSERT_FATAL(grpc_completion_queue_pluck(cq, (void *)1, deadline, NULL).success);
  grpc_byte_buffer_destroy(bb);
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[0].data.recv_status_on_client.trailing_metadata = &trailers;
  ops[0].data.recv_status_on_client.status = &status;
  ops[0].data.recv_status_on_client.status_details = &details;
  CU_ASSERT_EQUAL_FATAL(grpc_call_start_batch(call, ops, 1, (void *)2, NULL), GRPC_CALL_OK);

  /* Subscribed (the framework shows), then cut while it does not read. */
  CU_ASSERT_FATAL(ms_sim_wait(one_framework_ever, (void *)mapi, WAIT_MS));
  CU_ASSERT(ms_sim_wait(no_live_framework, (void *)mapi, 60000));
  /* What was queued, then the status. */
  size_t read = 0;
  for (;;) {
    grpc_byte_buffer *in = NULL;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &in;
    CU_ASSERT_EQUAL_FATAL(grpc_call_start_batch(call, &op, 1, (void *)3, NULL), GRPC_CALL_OK);
    grpc_completion_queue_pluck(cq, (void *)3, deadline, NULL);
    if (!in)
      break;
    grpc_byte_buffer_destroy(in);
    read++;
  }
  CU_ASSERT(grpc_completion_queue_pluck(cq, (void *)2, deadline, NULL).type == GRPC_OP_COMPLETE);
  char *msg = grpc_slice_to_c_string(details);
  printf("\n  slow scheduler: %zu events read after the cut; %d: %s\n", read, (int)status, msg);
  CU_ASSERT_EQUAL(status, GRPC_STATUS_RESOURCE_EXHAUSTED);
  gpr_free(msg);
  grpc_call_unref(call);
  grpc_metadata_array_destroy(&md);
  grpc_metadata_array_destroy(&trailers);
  grpc_slice_unref(details);
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
  grpc_channel_destroy(ch);
  CU_ASSERT_EQUAL(ms_test_proc_stop(mp, SIGTERM), 0);
  ms_test_proc_free(mp);
  ms_test_allocator_stop(&al);
}

/* ---- point 6: enum values the proto does not define ---- */

static void test_trust_6_undefined_enum_values(void) {
  ms_test_allocator al = ms_test_allocator_run(dir, "alloc-enum", NULL);
  ms_test_proc *mp = mapi_start("mapi-enum", al.addr, NULL, true);
  const char *mapi = ms_test_proc_address(mp);
  char *msg = NULL;
  Meseta__V1__TaskState states[] = {MESETA__V1__TASK_STATE__TASK_RUNNING, (Meseta__V1__TaskState)999};
  Meseta__V1__GetTasksRequest gt = MESETA__V1__GET_TASKS_REQUEST__INIT;
  gt.states = states;
  gt.n_states = 2;
  ms_status code = ms_test_call(mapi, NULL, NULL, "/meseta.v1.Operator/GetTasks", &gt.base,
                                &meseta__v1__get_tasks_response__descriptor, 10000, NULL, &msg);
  printf("\n  GetTasks states:[RUNNING, 999]: %s: %s\n", ms_status_name(code), msg ? msg : "");
  CU_ASSERT_EQUAL(code, MS_INVALID_ARGUMENT);
  CU_ASSERT(msg && strstr(msg, "states[1]") && strstr(msg, "999"));
  free(TAKE_PTR(msg));
  /* Defined values still pass. */
  gt.n_states = 1;
  CU_ASSERT_EQUAL(ms_test_call(mapi, NULL, NULL, "/meseta.v1.Operator/GetTasks", &gt.base,
                               &meseta__v1__get_tasks_response__descriptor, 10000, NULL, NULL),
                  MS_OK);
  /* GetAgents' states, and a forwarded call's nested enum (GetFlags' component). */
  Meseta__V1__Agent__State ast[] = {(Meseta__V1__Agent__State)-3};
  Meseta__V1__GetAgentsRequest ga = MESETA__V1__GET_AGENTS_REQUEST__INIT;
  ga.states = ast;
  ga.n_states = 1;
  CU_ASSERT_EQUAL(ms_test_call(mapi, NULL, NULL, "/meseta.v1.Operator/GetAgents", &ga.base,
                               &meseta__v1__get_agents_response__descriptor, 10000, NULL, &msg),
                  MS_INVALID_ARGUMENT);
  CU_ASSERT(msg && strstr(msg, "states[0]"));
  free(TAKE_PTR(msg));
  Meseta__V1__GetFlagsRequest gf = MESETA__V1__GET_FLAGS_REQUEST__INIT;
  gf.component = (Meseta__V1__Component)77;
  CU_ASSERT_EQUAL(ms_test_call(mapi, NULL, NULL, "/meseta.v1.Operator/GetFlags", &gf.base,
                               &meseta__v1__get_flags_response__descriptor, 10000, NULL, &msg),
                  MS_INVALID_ARGUMENT);
  CU_ASSERT(msg && strstr(msg, "component"));
  free(TAKE_PTR(msg));
  CU_ASSERT_EQUAL(ms_test_proc_stop(mp, SIGTERM), 0);
  ms_test_proc_free(mp);
  ms_test_allocator_stop(&al);
}

/* ---- point 8: which hop failed ---- */

/* A loopback port nothing listens on (bound, then closed). */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(sa);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  close(fd);
  return ntohs(sa.sin_port);
}

static ms_status update_weights(const char *mapi, double weight, char **msg) {
  Meseta__V1__WeightInfo wi = MESETA__V1__WEIGHT_INFO__INIT;
  wi.role = "hop";
  wi.weight = weight;
  Meseta__V1__WeightInfo *wis[] = {&wi};
  Meseta__V1__UpdateWeightsRequest uw = MESETA__V1__UPDATE_WEIGHTS_REQUEST__INIT;
  uw.weight_infos = wis;
  uw.n_weight_infos = 1;
  return ms_test_call(mapi, NULL, NULL, "/meseta.v1.Operator/UpdateWeights", &uw.base,
                      &meseta__v1__update_weights_response__descriptor, 10000, NULL, msg);
}

static void test_trust_8_which_hop_failed(void) {
  /* The allocator hop down: UNAVAILABLE naming it. */
  int port = free_port();
  CU_ASSERT_FATAL(port > 0);
  char down[64];
  snprintf(down, sizeof(down), "127.0.0.1:%d", port);
  ms_test_proc *mp = mapi_start("mapi-hop-down", down, NULL, false);
  char *msg = NULL;
  ms_status code = update_weights(ms_test_proc_address(mp), 2.0, &msg);
  printf("\n  allocator down: %s: %s\n", ms_status_name(code), msg ? msg : "");
  CU_ASSERT_EQUAL(code, MS_UNAVAILABLE);
  _cleanup_free_ char *named = ms_xasprintf("allocator `%s`", down);
  _cleanup_free_ char *quoted = ms_xasprintf("allocator: `%s`", down); /* the transport named it */
  CU_ASSERT(msg && (strstr(msg, named) || strstr(msg, quoted)));
  free(TAKE_PTR(msg));
  /* A Subscribe through it fails the same way. */
  ms_rpc_channel *ch = ms_rpc_channel_new(ms_test_proc_address(mp), NULL, NULL);
  code = MS_OK;
  ms_rpc_stream *st = subscribe(ch, "*", &code, &msg);
  printf("  subscribe with the allocator down: %s: %s\n", ms_status_name(code), msg ? msg : "");
  CU_ASSERT_PTR_NULL(st);
  CU_ASSERT_EQUAL(code, MS_UNAVAILABLE);
  CU_ASSERT(msg && (strstr(msg, named) || strstr(msg, quoted)));
  free(TAKE_PTR(msg));
  ms_rpc_channel_free(ch);
  CU_ASSERT_EQUAL(ms_test_proc_stop(mp, SIGTERM), 0);
  ms_test_proc_free(mp);

  /* The allocator's own verdict keeps its code and message. */
  ms_test_allocator al = ms_test_allocator_run(dir, "alloc-hop", NULL);
  mp = mapi_start("mapi-hop", al.addr, NULL, true);
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = "no-such-framework";
  Meseta__V1__ReviveRequest rv = MESETA__V1__REVIVE_REQUEST__INIT;
  rv.framework_id = &fid;
  rv.stream_id = "no-such-stream";
  code = ms_test_call(ms_test_proc_address(mp), NULL, NULL, "/meseta.v1.Scheduler/Revive", &rv.base,
                      &meseta__v1__revive_response__descriptor, 10000, NULL, &msg);
  printf("  the allocator's verdict: %s: %s\n", ms_status_name(code), msg ? msg : "");
  CU_ASSERT(code != MS_OK && code != MS_UNAVAILABLE);
  CU_ASSERT(msg && !strstr(msg, "allocator `"));
  char *direct = NULL;
  Meseta__V1__SchedulerCallRequest sc = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  sc.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_REVIVE;
  sc.revive = &rv;
  ms_status dcode = ms_test_call(al.addr, NULL, NULL, "/meseta.v1.Allocator/SchedulerCall", &sc.base,
                                 &meseta__v1__scheduler_call_response__descriptor, 10000, NULL, &direct);
  CU_ASSERT_EQUAL(code, dcode);
  CU_ASSERT(msg && direct && strcmp(msg, direct) == 0);
  free(direct);
  free(msg);
  CU_ASSERT_EQUAL(ms_test_proc_stop(mp, SIGTERM), 0);
  ms_test_proc_free(mp);
  ms_test_allocator_stop(&al);
}

/* ---- point 5: a first subscription that meets no leader is tried again ---- */

/* meseta-batch started while master-api's allocator is not there yet: its first Subscribe
 * ends UNAVAILABLE (as it does through a replica whose allocator just lost the lead). It
 * subscribes again with backoff and runs its tasks once the allocator comes; it exited
 * with "the event stream broke" before, having launched nothing. */
static void test_trust_5_first_subscription_retried(void) {
  int port = free_port();
  CU_ASSERT_FATAL(port > 0);
  char later[64];
  snprintf(later, sizeof(later), "127.0.0.1:%d", port);
  ms_test_proc *mp = mapi_start("mapi-first", later, NULL, false);
  _cleanup_free_ char *bin = ms_test_binary("examples/c/meseta-batch");
  _cleanup_free_ char *log = ms_xasprintf("%s/meseta-batch-first.log", dir);
  const char *argv[] = {
      bin,     "--master", ms_test_proc_address(mp), "--tasks", "3", "--cmd", "true", "--cpus", "0.1",
      "--mem", "32",       "--failover-timeout",     "2m",      NULL};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid;
  CU_ASSERT_EQUAL_FATAL(posix_spawn(&pid, bin, &fa, NULL, (char *const *)argv, environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  ms_time_sleep_ms(1500); /* a few refused subscriptions */
  int status = 0;
  bool exited_early = waitpid(pid, &status, WNOHANG) == pid;
  ms_test_allocator al = {0};
  ms_sim_agent *ag = NULL;
  if (!exited_early) {
    const char *extra[] = {"--listen", later, NULL};
    al = ms_test_allocator_run(dir, "alloc-first", extra);
    ms_sim_agent_options ao = {.resources = "cpus:2;mem:1024", .task_ms = 10};
    ms_error *err = NULL;
    ag = ms_sim_agent_start(al.addr, &ao, &err);
    CU_ASSERT_PTR_NOT_NULL(ag);
    ms_error_free(err);
    int64_t waited = 0;
    for (; waitpid(pid, &status, WNOHANG) != pid && waited < 60000; waited += 100)
      ms_time_sleep_ms(100);
    if (waited >= 60000) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    }
  }
  _cleanup_free_ char *out = NULL;
  FILE *f = fopen(log, "r");
  if (f) {
    size_t cap = 1 << 16;
    out = ms_xcalloc(1, cap + 1);
    size_t n = fread(out, 1, cap, f);
    out[n] = '\0';
    fclose(f);
  }
  const char *summary = out ? strstr(out, "summary:") : NULL;
  printf("\n  meseta-batch %s: exit %d; %.*s\n", exited_early ? "exited before the allocator came" : "ran",
         WIFEXITED(status) ? WEXITSTATUS(status) : -1, summary ? (int)strcspn(summary, "\n") : 0,
         summary ? summary : "");
  CU_ASSERT_FALSE(exited_early);
  CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CU_ASSERT(summary && strstr(summary, "finished=3"));
  ms_sim_agent_free(ag);
  CU_ASSERT_EQUAL(ms_test_proc_stop(mp, SIGTERM), 0);
  ms_test_proc_free(mp);
  if (al.proc)
    ms_test_allocator_stop(&al);
}

/* ---- point 9: a lost task is not live ---- */

typedef struct tasks_wait {
  const char *mapi;
  bool include_completed;
  Meseta__V1__TaskState state; /* the one task's */
} tasks_wait;

static Meseta__V1__GetTasksResponse *get_tasks(const char *mapi, bool include_completed) {
  Meseta__V1__GetTasksRequest req = MESETA__V1__GET_TASKS_REQUEST__INIT;
  req.include_completed = include_completed;
  ProtobufCMessage *resp = NULL;
  if (ms_test_call(mapi, NULL, NULL, "/meseta.v1.Operator/GetTasks", &req.base,
                   &meseta__v1__get_tasks_response__descriptor, 10000, &resp, NULL) != MS_OK)
    return NULL;
  return (Meseta__V1__GetTasksResponse *)resp;
}

static bool task_in_state(void *ctx) {
  tasks_wait *w = ctx;
  Meseta__V1__GetTasksResponse *r = get_tasks(w->mapi, w->include_completed);
  bool ok = r && r->n_tasks == 1 && r->tasks[0]->state == w->state;
  if (r)
    protobuf_c_message_free_unpacked(&r->base, NULL);
  return ok;
}

static void test_trust_9_lost_task_not_live(void) {
  const char *extra[] = {"--agent-reconnect-timeout", "60s", NULL};
  ms_test_allocator al = ms_test_allocator_run(dir, "alloc-lost", extra);
  ms_test_proc *mp = mapi_start("mapi-lost", al.addr, NULL, true);
  const char *mapi = ms_test_proc_address(mp);
  ms_error *err = NULL;
  ms_sim_agent_options ao = {.hostname = "node-lost", .resources = "cpus:2;mem:1024", .task_ms = -1};
  ms_sim_agent *a = ms_sim_agent_start(al.addr, &ao, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  ms_sim_framework_options fo = {.name = "loser", .mode = MS_SIM_HOLD, .failover_timeout_ms = 3600 * 1000};
  ms_sim_framework *f = ms_sim_framework_start(al.addr, &fo, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  /* A launch the agent never hears of: it stays STAGING. */
  ms_sim_agent_next_launch(a, MS_SIM_LAUNCH_SILENT);
  Meseta__V1__Offer *o = ms_sim_framework_wait_offer(f, WAIT_MS);
  CU_ASSERT_PTR_NOT_NULL_FATAL(o);
  CU_ASSERT_EQUAL_FATAL(ms_sim_framework_launch(f, o, "t-lost", "cpus:1;mem:128", &err), 0);
  protobuf_c_message_free_unpacked(&o->base, NULL);
  tasks_wait w = {mapi, false, MESETA__V1__TASK_STATE__TASK_STAGING};
  CU_ASSERT_FATAL(ms_sim_wait(task_in_state, &w, WAIT_MS));
  /* The agent re-registers without it: TASK_LOST. */
  ms_sim_agent_cut(a);
  w = (tasks_wait){mapi, true, MESETA__V1__TASK_STATE__TASK_LOST};
  CU_ASSERT_FATAL(ms_sim_wait(task_in_state, &w, WAIT_MS));

  /* Not listed as live... */
  Meseta__V1__GetTasksResponse *live = get_tasks(mapi, false);
  CU_ASSERT_PTR_NOT_NULL_FATAL(live);
  printf("\n  live tasks after TASK_LOST: %zu\n", live->n_tasks);
  CU_ASSERT_EQUAL(live->n_tasks, 0);
  protobuf_c_message_free_unpacked(&live->base, NULL);

  /* ...nor counted as running on a draining machine. */
  Meseta__V1__MachineID m = MESETA__V1__MACHINE_ID__INIT;
  m.hostname = "node-lost";
  Meseta__V1__MachineID *ms[] = {&m};
  Google__Protobuf__Timestamp start = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
  start.seconds = time(NULL);
  Meseta__V1__Unavailability un = MESETA__V1__UNAVAILABILITY__INIT;
  un.start = &start;
  Meseta__V1__MaintenanceWindow win = MESETA__V1__MAINTENANCE_WINDOW__INIT;
  win.machine_ids = ms;
  win.n_machine_ids = 1;
  win.unavailability = &un;
  Meseta__V1__MaintenanceWindow *ws[] = {&win};
  Meseta__V1__MaintenanceSchedule sc = MESETA__V1__MAINTENANCE_SCHEDULE__INIT;
  sc.windows = ws;
  sc.n_windows = 1;
  Meseta__V1__UpdateMaintenanceScheduleRequest us = MESETA__V1__UPDATE_MAINTENANCE_SCHEDULE_REQUEST__INIT;
  us.schedule = &sc;
  ProtobufCMessage *resp = NULL;
  char *msg = NULL;
  ms_status code =
      ms_test_call(mapi, NULL, NULL, "/meseta.v1.Operator/UpdateMaintenanceSchedule", &us.base,
                   &meseta__v1__update_maintenance_schedule_response__descriptor, 10000, &resp, &msg);
  if (code != MS_OK)
    fprintf(stderr, "UpdateMaintenanceSchedule: %s\n", msg);
  free(msg);
  CU_ASSERT_EQUAL_FATAL(code, MS_OK);
  Meseta__V1__GetMaintenanceStatusRequest gs = MESETA__V1__GET_MAINTENANCE_STATUS_REQUEST__INIT;
  gs.min_revision = ((Meseta__V1__UpdateMaintenanceScheduleResponse *)resp)->revision;
  protobuf_c_message_free_unpacked(resp, NULL);
  resp = NULL;
  CU_ASSERT_EQUAL_FATAL(ms_test_call(mapi, NULL, NULL, "/meseta.v1.Operator/GetMaintenanceStatus", &gs.base,
                                     &meseta__v1__get_maintenance_status_response__descriptor, 10000, &resp,
                                     NULL),
                        MS_OK);
  Meseta__V1__GetMaintenanceStatusResponse *st = (Meseta__V1__GetMaintenanceStatusResponse *)resp;
  CU_ASSERT_EQUAL_FATAL(st->n_draining_machines, 1);
  CU_ASSERT_EQUAL(st->draining_machines[0]->n_agent_ids, 1);
  printf("  running tasks on the draining machine: %u\n", (unsigned)st->draining_machines[0]->running_tasks);
  CU_ASSERT_EQUAL(st->draining_machines[0]->running_tasks, 0);
  protobuf_c_message_free_unpacked(resp, NULL);

  ms_sim_framework_free(f);
  ms_sim_agent_free(a);
  CU_ASSERT_EQUAL(ms_test_proc_stop(mp, SIGTERM), 0);
  ms_test_proc_free(mp);
  ms_test_allocator_stop(&al);
}

/* ---- issue 14: reads off the CQ thread, bounded ---- */

#define BIG_AGENTS 100
#define READERS 6
#define READ_BOUND 8

typedef struct reader {
  pthread_t th;
  const char *mapi;
  int64_t min_revision; /* 0: GetState in a loop until `stop`; else one parked GetTasks */
  atomic_bool *stop;
  atomic_int *outstanding;
  uint64_t ok, busy;
  size_t bytes;
  ms_status last;
} reader;

static void *reader_main(void *arg) {
  reader *r = arg;
  if (r->min_revision) {
    Meseta__V1__GetTasksRequest gt = MESETA__V1__GET_TASKS_REQUEST__INIT;
    gt.min_revision = r->min_revision;
    /* Again while refused busy: the prober's read may hold a slot for a moment. */
    for (;;) {
      atomic_fetch_add(r->outstanding, 1);
      r->last = ms_test_call(r->mapi, NULL, NULL, "/meseta.v1.Operator/GetTasks", &gt.base,
                             &meseta__v1__get_tasks_response__descriptor, 120000, NULL, NULL);
      atomic_fetch_sub(r->outstanding, 1);
      if (r->last != MS_RESOURCE_EXHAUSTED)
        break;
      r->busy++;
      usleep(10000);
    }
    return NULL;
  }
  while (!atomic_load(r->stop)) {
    Meseta__V1__GetStateRequest gs = MESETA__V1__GET_STATE_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    atomic_fetch_add(r->outstanding, 1);
    r->last = ms_test_call(r->mapi, NULL, NULL, "/meseta.v1.Operator/GetState", &gs.base,
                           &meseta__v1__get_state_response__descriptor, 60000, &resp, NULL);
    atomic_fetch_sub(r->outstanding, 1);
    if (r->last == MS_OK) {
      r->ok++;
      r->bytes = protobuf_c_message_get_packed_size(resp);
    }
    r->busy += r->last == MS_RESOURCE_EXHAUSTED;
    if (resp)
      protobuf_c_message_free_unpacked(resp, NULL);
  }
  return NULL;
}

static ms_status get_health(const char *mapi, char **msg) {
  Meseta__V1__GetHealthRequest gh = MESETA__V1__GET_HEALTH_REQUEST__INIT;
  return ms_test_call(mapi, NULL, NULL, "/meseta.v1.Operator/GetHealth", &gh.base,
                      &meseta__v1__get_health_response__descriptor, 30000, NULL, msg);
}

typedef struct busy_probe {
  const char *mapi;
  char *msg;
} busy_probe;

/* A GetState refused as busy (the parked reads hold every slot). */
static bool refused_busy(void *ctx) {
  busy_probe *b = ctx;
  Meseta__V1__GetStateRequest gs = MESETA__V1__GET_STATE_REQUEST__INIT;
  free(TAKE_PTR(b->msg));
  return ms_test_call(b->mapi, NULL, NULL, "/meseta.v1.Operator/GetState", &gs.base,
                      &meseta__v1__get_state_response__descriptor, 30000, NULL,
                      &b->msg) == MS_RESOURCE_EXHAUSTED;
}

/* Reads are served off the CQ thread: while large GetState reads are in flight, and
 * while reads are parked on a revision the view never reaches, GetHealth (answered on
 * the CQ thread) still answers; past --max-queued-reads a read gets RESOURCE_EXHAUSTED
 * naming the bound; the parked reads end with the replica. */
static void test_structure_reads_off_cq_thread(void) {
  ms_test_allocator al = ms_test_allocator_run(dir, "alloc-reads", NULL);
  _cleanup_free_ char *bound = ms_xasprintf("%d", READ_BOUND);
  ms_test_proc *mp =
      mapi_start("mapi-reads", al.addr, (const char *[]){"--max-queued-reads", bound, NULL}, true);
  const char *mapi = ms_test_proc_address(mp);

  /* A big state: agents with many resources each. */
  char res[4096];
  size_t used = (size_t)snprintf(res, sizeof(res), "cpus:4;mem:4096");
  for (int i = 0; i < 60 && used < sizeof(res) - 32; i++)
    used += (size_t)snprintf(res + used, sizeof(res) - used, ";device-class-%02d:%d", i, i + 1);
  ms_sim_agent *agents[BIG_AGENTS] = {0};
  for (int i = 0; i < BIG_AGENTS; i++) {
    char host[32];
    snprintf(host, sizeof(host), "node-big-%03d", i);
    ms_error *err = NULL;
    agents[i] =
        ms_sim_agent_start(al.addr, &(ms_sim_agent_options){.hostname = host, .resources = res}, &err);
    if (!agents[i])
      fprintf(stderr, "agent %d: %s\n", i, err->msg);
    ms_error_free(err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(agents[i]);
  }

  /* Large GetState reads in flight, GetHealth beside them. */
  atomic_bool stop = false;
  atomic_int outstanding = 0;
  reader rd[READERS];
  for (int i = 0; i < READERS; i++) {
    rd[i] = (reader){.mapi = mapi, .stop = &stop, .outstanding = &outstanding};
    CU_ASSERT_EQUAL_FATAL(pthread_create(&rd[i].th, NULL, reader_main, &rd[i]), 0);
  }
  int health_ok = 0, health_beside = 0;
  int64_t worst = 0;
  for (int i = 0; i < 20; i++) {
    int64_t t0 = ms_time_mono_ms();
    bool beside = atomic_load(&outstanding) > 0;
    ms_status code = get_health(mapi, NULL);
    int64_t took = ms_time_mono_ms() - t0;
    worst = took > worst ? took : worst;
    health_ok += code == MS_OK;
    health_beside += code == MS_OK && beside && atomic_load(&outstanding) > 0;
  }
  atomic_store(&stop, true);
  uint64_t states = 0, busy = 0;
  size_t bytes = 0;
  for (int i = 0; i < READERS; i++) {
    pthread_join(rd[i].th, NULL);
    states += rd[i].ok;
    busy += rd[i].busy;
    bytes = rd[i].bytes > bytes ? rd[i].bytes : bytes;
  }
  printf("\n  %d GetHealth answered beside %d GetState readers (%d with reads outstanding before and "
         "after; slowest %lld ms); %llu GetState of %zu bytes answered, %llu refused busy\n",
         health_ok, READERS, health_beside, (long long)worst, (unsigned long long)states, bytes,
         (unsigned long long)busy);
  CU_ASSERT_EQUAL(health_ok, 20);
  CU_ASSERT(states > 0);

  /* Reads parked on a revision never reached hold every slot: GetHealth answers while
   * they are outstanding, and one more read is refused, naming the bound. */
  reader pk[READ_BOUND];
  for (int i = 0; i < READ_BOUND; i++) {
    pk[i] = (reader){.mapi = mapi, .min_revision = INT64_MAX, .outstanding = &outstanding};
    CU_ASSERT_EQUAL_FATAL(pthread_create(&pk[i].th, NULL, reader_main, &pk[i]), 0);
  }
  /* One prober: refused once the parked reads hold every slot (its own read, while in
   * flight, may make a parking reader retry). Not fatal: the stop below ends them. */
  busy_probe b = {.mapi = mapi};
  CU_ASSERT(ms_sim_wait(refused_busy, &b, WAIT_MS));
  printf("  with %d reads parked: %s\n", READ_BOUND, b.msg ? b.msg : "");
  char want[64];
  snprintf(want, sizeof(want), "master-api busy: %d reads queued", READ_BOUND);
  CU_ASSERT(b.msg && strstr(b.msg, want) && strstr(b.msg, "--max-queued-reads"));
  free(TAKE_PTR(b.msg));
  CU_ASSERT_EQUAL(get_health(mapi, NULL), MS_OK);
  CU_ASSERT_EQUAL(atomic_load(&outstanding), READ_BOUND); /* still parked, all of them */

  /* The replica stops: its parked reads are answered (UNAVAILABLE), none left hanging. */
  CU_ASSERT_EQUAL(ms_test_proc_stop(mp, SIGTERM), 0);
  ms_test_proc_free(mp);
  for (int i = 0; i < READ_BOUND; i++) {
    pthread_join(pk[i].th, NULL);
    CU_ASSERT_NOT_EQUAL(pk[i].last, MS_OK);
  }
  printf("  parked reads at shutdown: %s\n", ms_status_name(pk[0].last));
  for (int i = 0; i < BIG_AGENTS; i++)
    ms_sim_agent_free(agents[i]);
  ms_test_allocator_stop(&al);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"trust_2_idle_subscribers", test_trust_2_idle_subscribers},
      {"trust_2_subscriptions_per_principal", test_trust_2_subscriptions_per_principal},
      {"relay_slow_scheduler_cut", test_relay_slow_scheduler_cut},
      {"trust_6_undefined_enum_values", test_trust_6_undefined_enum_values},
      {"trust_8_which_hop_failed", test_trust_8_which_hop_failed},
      {"trust_5_first_subscription_retried", test_trust_5_first_subscription_retried},
      {"trust_9_lost_task_not_live", test_trust_9_lost_task_not_live},
      {"structure_reads_off_cq_thread", test_structure_reads_off_cq_thread},
      {NULL, NULL},
  };
  return ms_test_main_etcd(argc, argv, "master-api-trust", cases, &dir, &etcd);
}
