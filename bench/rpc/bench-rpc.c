/* bench-rpc: the gRPC layer against a minimal hand-written gRPC core loop, in the
 * same run, over TCP and unix sockets.
 *
 *   bench-rpc [--threads N] [--calls N] [--messages N] [--rounds N]
 *
 * Unary: N client threads make sequential Echo.Unary calls (a small message).
 * Streaming: one Echo.ServerStream call of --messages replies.
 * "raw" is a hand-written loop on gRPC core at both ends doing the same protobuf
 * work (parse each request, serialize each reply); "layer" is ms_rpc at both ends.
 * The ratio is the layer's own cost: dispatch, queues, locks, call bookkeeping. Each figure is the median of
 * --rounds runs, raw and layer alternating. Nothing is asserted. */
#include <getopt.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/test/v1/echo.pb-c.h"

#include "../../tests/integration/echo-service.h"
#include "raw-grpc.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static gpr_timespec inf(void) {
  return gpr_inf_future(GPR_CLOCK_REALTIME);
}

/* ---- the raw server: one thread, one completion queue ----------------------------- */

typedef enum { RAW_REQ_UNARY, RAW_REQ_STREAM, RAW_CALL_DONE, RAW_STREAM_SENT, RAW_SHUTDOWN } raw_kind;

typedef struct raw_tag {
  raw_kind kind;
  void *p;
} raw_tag;

typedef struct raw_server {
  grpc_server *server;
  grpc_completion_queue *cq;
  void *m_unary, *m_stream;
  char addr[256];
  pthread_t thread;
  /* armed requests */
  grpc_call *u_call, *s_call;
  gpr_timespec u_deadline, s_deadline;
  grpc_metadata_array u_md, s_md;
  grpc_byte_buffer *u_payload, *s_payload;
  raw_tag t_unary, t_stream, t_shutdown;
} raw_server;

typedef struct raw_call {
  raw_tag t;
  grpc_call *call;
  grpc_byte_buffer *reply;
  int cancelled;
  /* streaming */
  uint32_t left, index;
  char *text;
  grpc_byte_buffer *msg;
  raw_tag t_sent;
  bool md_sent;
} raw_call;

static void raw_arm_unary(raw_server *r) {
  grpc_metadata_array_init(&r->u_md);
  grpc_server_request_registered_call(r->server, r->m_unary, &r->u_call, &r->u_deadline, &r->u_md,
                                      &r->u_payload, r->cq, r->cq, &r->t_unary);
}

static void raw_arm_stream(raw_server *r) {
  grpc_metadata_array_init(&r->s_md);
  grpc_server_request_registered_call(r->server, r->m_stream, &r->s_call, &r->s_deadline, &r->s_md,
                                      &r->s_payload, r->cq, r->cq, &r->t_stream);
}

static grpc_byte_buffer *pack_reply(const Meseta__Test__V1__EchoReply *rep) {
  size_t len = meseta__test__v1__echo_reply__get_packed_size(rep);
  grpc_slice out = grpc_slice_malloc(len);
  meseta__test__v1__echo_reply__pack(rep, GRPC_SLICE_START_PTR(out));
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&out, 1);
  grpc_slice_unref(out);
  return bb;
}

static Meseta__Test__V1__EchoRequest *unpack_request(grpc_byte_buffer *bb) {
  grpc_byte_buffer_reader rd;
  grpc_byte_buffer_reader_init(&rd, bb);
  grpc_slice s = grpc_byte_buffer_reader_readall(&rd);
  grpc_byte_buffer_reader_destroy(&rd);
  Meseta__Test__V1__EchoRequest *req =
      meseta__test__v1__echo_request__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
  grpc_slice_unref(s);
  return req;
}

static Meseta__Test__V1__EchoReply *unpack_reply(grpc_byte_buffer *bb) {
  grpc_byte_buffer_reader rd;
  grpc_byte_buffer_reader_init(&rd, bb);
  grpc_slice s = grpc_byte_buffer_reader_readall(&rd);
  grpc_byte_buffer_reader_destroy(&rd);
  Meseta__Test__V1__EchoReply *rep =
      meseta__test__v1__echo_reply__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
  grpc_slice_unref(s);
  return rep;
}

/* The same protobuf work the layer does: read the request, write a reply. */
static grpc_byte_buffer *echo_reply_of(grpc_byte_buffer *in) {
  Meseta__Test__V1__EchoRequest *req = unpack_request(in);
  Meseta__Test__V1__EchoReply rep = MESETA__TEST__V1__ECHO_REPLY__INIT;
  if (req) {
    rep.text = req->text;
    rep.payload = req->payload;
  }
  grpc_byte_buffer *bb = pack_reply(&rep);
  if (req)
    meseta__test__v1__echo_request__free_unpacked(req, NULL);
  return bb;
}

static void raw_stream_next(raw_call *c) {
  grpc_op ops[3];
  memset(ops, 0, sizeof(ops));
  size_t n = 0;
  if (!c->md_sent) {
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    c->md_sent = true;
  }
  if (c->left) {
    /* Each message serialized as it goes, as a real stream's would be. */
    Meseta__Test__V1__EchoReply rep = MESETA__TEST__V1__ECHO_REPLY__INIT;
    rep.text = c->text;
    rep.index = c->index++;
    if (c->msg)
      grpc_byte_buffer_destroy(c->msg);
    c->msg = pack_reply(&rep);
    c->left--;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->msg;
    grpc_call_start_batch(c->call, ops, n, &c->t_sent, NULL);
  } else {
    static grpc_slice empty;
    empty = grpc_empty_slice();
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = GRPC_STATUS_OK;
    ops[n++].data.send_status_from_server.status_details = &empty;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
    grpc_call_start_batch(c->call, ops, n, &c->t, NULL);
  }
}

static void *raw_main(void *arg) {
  raw_server *r = arg;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(r->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN)
      break;
    raw_tag *t = ev.tag;
    switch (t->kind) {
    case RAW_REQ_UNARY: {
      if (!ev.success)
        break;
      raw_call *c = ms_xcalloc(1, sizeof(*c));
      c->t = (raw_tag){RAW_CALL_DONE, c};
      c->call = r->u_call;
      c->reply = echo_reply_of(r->u_payload);
      grpc_byte_buffer_destroy(r->u_payload);
      grpc_metadata_array_destroy(&r->u_md);
      raw_arm_unary(r);
      static grpc_slice empty;
      empty = grpc_empty_slice();
      grpc_op ops[4];
      memset(ops, 0, sizeof(ops));
      ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
      ops[1].op = GRPC_OP_SEND_MESSAGE;
      ops[1].data.send_message.send_message = c->reply;
      ops[2].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
      ops[2].data.send_status_from_server.status = GRPC_STATUS_OK;
      ops[2].data.send_status_from_server.status_details = &empty;
      ops[3].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
      ops[3].data.recv_close_on_server.cancelled = &c->cancelled;
      grpc_call_start_batch(c->call, ops, 4, &c->t, NULL);
      break;
    }
    case RAW_REQ_STREAM: {
      if (!ev.success)
        break;
      raw_call *c = ms_xcalloc(1, sizeof(*c));
      c->t = (raw_tag){RAW_CALL_DONE, c};
      c->t_sent = (raw_tag){RAW_STREAM_SENT, c};
      c->call = r->s_call;
      Meseta__Test__V1__EchoRequest *req = unpack_request(r->s_payload);
      c->left = req ? req->count : 0;
      c->text = ms_xstrdup(req ? req->text : "");
      if (req)
        meseta__test__v1__echo_request__free_unpacked(req, NULL);
      grpc_byte_buffer_destroy(r->s_payload);
      grpc_metadata_array_destroy(&r->s_md);
      raw_arm_stream(r);
      raw_stream_next(c);
      break;
    }
    case RAW_STREAM_SENT:
      raw_stream_next(t->p);
      break;
    case RAW_CALL_DONE: {
      raw_call *c = t->p;
      if (c->reply)
        grpc_byte_buffer_destroy(c->reply);
      if (c->msg)
        grpc_byte_buffer_destroy(c->msg);
      free(c->text);
      grpc_call_unref(c->call);
      free(c);
      break;
    }
    case RAW_SHUTDOWN:
      grpc_completion_queue_shutdown(r->cq);
      break;
    }
  }
  return NULL;
}

static raw_server *raw_start(const char *listen) {
  raw_server *r = ms_xcalloc(1, sizeof(*r));
  r->t_unary = (raw_tag){RAW_REQ_UNARY, r};
  r->t_stream = (raw_tag){RAW_REQ_STREAM, r};
  r->t_shutdown = (raw_tag){RAW_SHUTDOWN, r};
  r->server = grpc_server_create(NULL, NULL);
  r->cq = grpc_completion_queue_create_for_next(NULL);
  grpc_server_register_completion_queue(r->server, r->cq, NULL);
  r->m_unary = grpc_server_register_method(r->server, "/meseta.test.v1.Echo/Unary", NULL,
                                           GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
  r->m_stream = grpc_server_register_method(r->server, "/meseta.test.v1.Echo/ServerStream", NULL,
                                            GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
  grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
  int port = grpc_server_add_http2_port(r->server, listen, creds);
  grpc_server_credentials_release(creds);
  if (strncmp(listen, "unix:", 5) == 0)
    snprintf(r->addr, sizeof(r->addr), "%s", listen);
  else
    snprintf(r->addr, sizeof(r->addr), "127.0.0.1:%d", port);
  grpc_server_start(r->server);
  raw_arm_unary(r);
  raw_arm_stream(r);
  pthread_create(&r->thread, NULL, raw_main, r);
  return r;
}

static void raw_stop(raw_server *r) {
  grpc_server_shutdown_and_notify(r->server, r->cq, &r->t_shutdown);
  grpc_server_cancel_all_calls(r->server);
  pthread_join(r->thread, NULL);
  grpc_server_destroy(r->server);
  grpc_completion_queue_destroy(r->cq);
  free(r);
}

/* ---- the raw client -------------------------------------------------------------- */

static int raw_unary(grpc_channel *ch, void *method, grpc_completion_queue *cq, grpc_byte_buffer *req) {
  grpc_byte_buffer *in = NULL;
  grpc_status_code st = ms_raw_unary(ch, cq, method, NULL, req, 0, &in, NULL);
  if (in) { /* parse the reply, as the layer's client does */
    Meseta__Test__V1__EchoReply *rep = unpack_reply(in);
    if (rep)
      meseta__test__v1__echo_reply__free_unpacked(rep, NULL);
    grpc_byte_buffer_destroy(in);
  }
  return st == GRPC_STATUS_OK ? 0 : -1;
}

static grpc_byte_buffer *packed_request(uint32_t count) {
  Meseta__Test__V1__EchoRequest req = MESETA__TEST__V1__ECHO_REQUEST__INIT;
  req.text = "benchmark";
  req.count = count;
  size_t n = meseta__test__v1__echo_request__get_packed_size(&req);
  grpc_slice s = grpc_slice_malloc(n);
  meseta__test__v1__echo_request__pack(&req, GRPC_SLICE_START_PTR(s));
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  return bb;
}

static grpc_channel *raw_channel(const char *target) {
  grpc_channel_credentials *creds = grpc_insecure_credentials_create();
  grpc_channel *ch = grpc_channel_create(target, creds, NULL);
  grpc_channel_credentials_release(creds);
  return ch;
}

/* ---- workloads ---------------------------------------------------------------- */

typedef struct worker {
  const char *target;
  bool layer;
  long calls;
  grpc_channel *raw_ch;
  ms_rpc_channel *ch;
  int failures;
} worker;

static void *unary_worker(void *arg) {
  worker *w = arg;
  if (w->layer) {
    Meseta__Test__V1__EchoRequest req = MESETA__TEST__V1__ECHO_REQUEST__INIT;
    req.text = "benchmark";
    for (long i = 0; i < w->calls; i++) {
      ProtobufCMessage *resp = NULL;
      if (ms_rpc_unary(w->ch, "/meseta.test.v1.Echo/Unary", &req.base,
                       &meseta__test__v1__echo_reply__descriptor, NULL, &resp, NULL) < 0)
        w->failures++;
      else
        protobuf_c_message_free_unpacked(resp, NULL);
    }
  } else {
    void *m = grpc_channel_register_call(w->raw_ch, "/meseta.test.v1.Echo/Unary", NULL, NULL);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    for (long i = 0; i < w->calls; i++) {
      grpc_byte_buffer *req = packed_request(0);
      w->failures += raw_unary(w->raw_ch, m, cq, req) < 0;
      grpc_byte_buffer_destroy(req);
    }
    ms_raw_cq_destroy(cq);
  }
  return NULL;
}

/* Calls per second over `threads` threads, each on its own channel (connection). */
static double run_unary(const char *target, bool layer, int threads, long calls) {
  worker w[64];
  pthread_t t[64];
  for (int i = 0; i < threads; i++) {
    w[i] = (worker){.target = target, .layer = layer, .calls = calls};
    if (layer)
      w[i].ch = ms_rpc_channel_new(target, NULL, NULL);
    else
      w[i].raw_ch = raw_channel(target);
  }
  /* Warm the connections before timing. */
  for (int i = 0; i < threads; i++) {
    worker warm = w[i];
    warm.calls = 20;
    unary_worker(&warm);
  }
  double t0 = now_s();
  for (int i = 0; i < threads; i++)
    pthread_create(&t[i], NULL, unary_worker, &w[i]);
  int failures = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(t[i], NULL);
    failures += w[i].failures;
  }
  double dt = now_s() - t0;
  for (int i = 0; i < threads; i++) {
    if (layer)
      ms_rpc_channel_free(w[i].ch);
    else
      grpc_channel_destroy(w[i].raw_ch);
  }
  if (failures)
    fprintf(stderr, "bench-rpc: %d unary calls failed\n", failures);
  return (double)threads * (double)calls / dt;
}

/* Messages per second of one server stream. */
static double run_stream(const char *target, bool layer, uint32_t messages) {
  Meseta__Test__V1__EchoRequest req = MESETA__TEST__V1__ECHO_REQUEST__INIT;
  req.text = "benchmark";
  req.count = messages;
  uint32_t got = 0;
  double t0, dt;
  if (layer) {
    ms_rpc_channel *ch = ms_rpc_channel_new(target, NULL, NULL);
    ms_rpc_channel_wait_ready(ch, 5000, NULL);
    t0 = now_s();
    ms_rpc_stream *s = ms_rpc_stream_open(ch, "/meseta.test.v1.Echo/ServerStream", &req.base, NULL, NULL);
    ProtobufCMessage *m = NULL;
    while (s && ms_rpc_stream_recv(s, &meseta__test__v1__echo_reply__descriptor, &m, NULL) == 1) {
      protobuf_c_message_free_unpacked(m, NULL);
      got++;
    }
    dt = now_s() - t0;
    ms_rpc_stream_free(s);
    ms_rpc_channel_free(ch);
  } else {
    grpc_channel *ch = raw_channel(target);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_channel_check_connectivity_state(ch, 1);
    t0 = now_s();
    grpc_slice m = grpc_slice_from_static_string("/meseta.test.v1.Echo/ServerStream");
    grpc_call *call = grpc_channel_create_call(ch, NULL, 0, cq, m, NULL, inf(), NULL);
    grpc_byte_buffer *bb = packed_request(messages);
    grpc_metadata_array md, trailing;
    grpc_metadata_array_init(&md);
    grpc_metadata_array_init(&trailing);
    grpc_status_code st;
    grpc_slice details;
    grpc_op ops[4];
    ms_raw_request_ops(ops, bb, &md);
    grpc_call_start_batch(call, ops, 4, &ops, NULL);
    grpc_completion_queue_pluck(cq, &ops, inf(), NULL);
    for (;;) {
      grpc_byte_buffer *in = NULL;
      grpc_op op;
      memset(&op, 0, sizeof(op));
      op.op = GRPC_OP_RECV_MESSAGE;
      op.data.recv_message.recv_message = &in;
      grpc_call_start_batch(call, &op, 1, &op, NULL);
      grpc_completion_queue_pluck(cq, &op, inf(), NULL);
      if (!in)
        break;
      /* Parse as a real client would. */
      grpc_byte_buffer_reader rd;
      grpc_byte_buffer_reader_init(&rd, in);
      grpc_slice s = grpc_byte_buffer_reader_readall(&rd);
      grpc_byte_buffer_reader_destroy(&rd);
      Meseta__Test__V1__EchoReply *rep =
          meseta__test__v1__echo_reply__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
      if (rep)
        meseta__test__v1__echo_reply__free_unpacked(rep, NULL);
      grpc_slice_unref(s);
      grpc_byte_buffer_destroy(in);
      got++;
    }
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.status = &st;
    ops[0].data.recv_status_on_client.status_details = &details;
    ops[0].data.recv_status_on_client.trailing_metadata = &trailing;
    grpc_call_start_batch(call, ops, 1, &ops, NULL);
    grpc_completion_queue_pluck(cq, &ops, inf(), NULL);
    dt = now_s() - t0;
    grpc_slice_unref(details);
    grpc_slice_unref(m);
    grpc_byte_buffer_destroy(bb);
    grpc_metadata_array_destroy(&md);
    grpc_metadata_array_destroy(&trailing);
    grpc_call_unref(call);
    ms_raw_cq_destroy(cq);
    grpc_channel_destroy(ch);
  }
  if (got != messages)
    fprintf(stderr, "bench-rpc: stream delivered %u of %u messages\n", got, messages);
  return (double)got / dt;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(double), cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv) {
  int threads = 2, rounds = 3;
  long calls = 5000;
  uint32_t messages = 200000;
  static const struct option longopts[] = {{"threads", required_argument, NULL, 't'},
                                           {"calls", required_argument, NULL, 'c'},
                                           {"messages", required_argument, NULL, 'm'},
                                           {"rounds", required_argument, NULL, 'r'},
                                           {NULL, 0, NULL, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    long v = strtol(optarg, NULL, 10);
    if (v <= 0) {
      fprintf(stderr, "bench-rpc: `%s` is not a positive number\n", optarg);
      return 2;
    }
    if (o == 't')
      threads = (int)(v > 64 ? 64 : v);
    else if (o == 'c')
      calls = v;
    else if (o == 'm')
      messages = (uint32_t)v;
    else if (o == 'r')
      rounds = (int)(v > 15 ? 15 : v);
    else
      return 2;
  }
  grpc_init();
  char dir[] = "/tmp/bench-rpc-XXXXXX";
  if (!mkdtemp(dir))
    return 1;
  printf("bench-rpc: %d client threads x %ld unary calls, one stream of %u messages, median of %d rounds\n",
         threads, calls, messages, rounds);
  printf("%-6s %-22s %14s %14s %8s\n", "net", "workload", "raw core", "meseta layer", "ratio");
  const char *nets[] = {"tcp", "unix"};
  for (int n = 0; n < 2; n++) {
    _cleanup_free_ char *raw_listen = n ? ms_xasprintf("unix:%s/raw.sock", dir) : ms_xstrdup("127.0.0.1:0");
    _cleanup_free_ char *layer_listen =
        n ? ms_xasprintf("unix:%s/layer.sock", dir) : ms_xstrdup("127.0.0.1:0");
    raw_server *raw = raw_start(raw_listen);
    const char *addrs[] = {layer_listen};
    ms_rpc_server_options opts = {.listen = addrs, .n_listen = 1};
    ms_error *err = NULL;
    ms_rpc_server *srv = ms_rpc_server_new(&opts, &err);
    if (!srv || echo_service_add(srv, &err) < 0 || ms_rpc_server_start(srv, &err) < 0) {
      fprintf(stderr, "bench-rpc: %s\n", err->msg);
      return 1;
    }
    const char *layer_addr = ms_rpc_server_address(srv, 0);
    double ru[15], lu[15], rs[15], ls[15];
    for (int r = 0; r < rounds; r++) {
      ru[r] = run_unary(raw->addr, false, threads, calls);
      lu[r] = run_unary(layer_addr, true, threads, calls);
      rs[r] = run_stream(raw->addr, false, messages);
      ls[r] = run_stream(layer_addr, true, messages);
    }
    double a = median(ru, rounds), b = median(lu, rounds);
    printf("%-6s %-22s %12.0f/s %12.0f/s %8.2f\n", nets[n], "unary calls", a, b, b / a);
    a = median(rs, rounds), b = median(ls, rounds);
    printf("%-6s %-22s %12.0f/s %12.0f/s %8.2f\n", nets[n], "streamed messages", a, b, b / a);
    fflush(stdout);
    raw_stop(raw);
    ms_rpc_server_free(srv);
  }
  rmdir(dir);
  grpc_shutdown();
  return 0;
}
