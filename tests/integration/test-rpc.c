/* The gRPC layer end to end, in one process: a real server on real sockets and
 * our client, through the Echo test service. */
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/test/v1/echo.pb-c.h"

#include "echo-service.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "raw-grpc.h"
#include "testlib.h"

typedef Meseta__Test__V1__EchoRequest req_t;
typedef Meseta__Test__V1__EchoReply reply_t;
#define REQ_INIT MESETA__TEST__V1__ECHO_REQUEST__INIT
#define REPLY_DESC (&meseta__test__v1__echo_reply__descriptor)
#define ECHO(m) "/meseta.test.v1.Echo/" m

typedef struct fixture {
  ms_rpc_server *srv;
  ms_rpc_channel *ch;
} fixture;

static fixture start(const char *listen, int64_t max_msg, bool gzip) {
  ms_error *err = NULL;
  const char *addrs[] = {listen};
  ms_rpc_server_options o = {.listen = addrs, .n_listen = 1, .max_message_bytes = max_msg};
  fixture f = {0};
  f.srv = ms_rpc_server_new(&o, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f.srv);
  MS_ASSERT_OK(echo_service_add(f.srv, &err), &err);
  MS_ASSERT_OK(ms_rpc_server_start(f.srv, &err), &err);
  ms_rpc_channel_options co = {.gzip = gzip, .max_message_bytes = 8 << 20};
  f.ch = ms_rpc_channel_new(ms_rpc_server_address(f.srv, 0), &co, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f.ch);
  return f;
}

static void stop(fixture *f) {
  ms_rpc_channel_free(f->ch);
  ms_rpc_server_shutdown(f->srv, 1000);
  ms_rpc_server_free(f->srv);
}

static reply_t *call_unary(ms_rpc_channel *ch, const char *method, const req_t *req, int64_t timeout_ms,
                           ms_error **err) {
  ProtobufCMessage *resp = NULL;
  ms_rpc_call_options o = {.timeout_ms = timeout_ms};
  if (ms_rpc_unary(ch, method, &req->base, REPLY_DESC, &o, &resp, err) < 0)
    return NULL;
  return (reply_t *)resp;
}

static void free_msg(void *m) {
  protobuf_c_message_free_unpacked(m, NULL);
}

/* Waits (bounded, generously) until f() reaches want; no timing is asserted. */
static bool eventually(unsigned long (*f)(void), unsigned long want) {
  for (int i = 0; i < 6000 && f() < want; i++)
    usleep(5000);
  return f() >= want;
}

static void test_unary(void) {
  fixture f = start("127.0.0.1:0", 0, false);
  ms_error *err = NULL;
  req_t req = REQ_INIT;
  req.text = "hello";
  req.payload = (ProtobufCBinaryData){.len = 3, .data = (uint8_t *)"abc"};
  reply_t *r = call_unary(f.ch, ECHO("Unary"), &req, 5000, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r);
  CU_ASSERT_STRING_EQUAL(r->text, "hello");
  CU_ASSERT_EQUAL(r->payload.len, 3);
  free_msg(r);
  stop(&f);
}

static void test_metadata(void) {
  fixture f = start("127.0.0.1:0", 0, false);
  ms_error *err = NULL;
  const char *md[] = {"authorization", "Bearer s3cret", "x-meseta-trace", "t-1", NULL};
  ms_rpc_call_options o = {.timeout_ms = 5000, .metadata = md};
  req_t req = REQ_INIT;
  req.metadata_key = "authorization";
  ProtobufCMessage *m = NULL;
  MS_ASSERT_OK(ms_rpc_unary(f.ch, ECHO("Unary"), &req.base, REPLY_DESC, &o, &m, &err), &err);
  CU_ASSERT_TRUE(((reply_t *)m)->metadata_present);
  CU_ASSERT_STRING_EQUAL(((reply_t *)m)->metadata_value, "Bearer s3cret");
  free_msg(m);
  req.metadata_key = "x-absent";
  MS_ASSERT_OK(ms_rpc_unary(f.ch, ECHO("Unary"), &req.base, REPLY_DESC, &o, &m, &err), &err);
  CU_ASSERT_FALSE(((reply_t *)m)->metadata_present);
  free_msg(m);
  stop(&f);
}

static void test_unix_socket(void) {
  _cleanup_free_ char *dir = ms_test_tmpdir("meseta-rpc");
  _cleanup_free_ char *addr = ms_xasprintf("unix:%s/echo.sock", dir);
  fixture f = start(addr, 0, false);
  CU_ASSERT_STRING_EQUAL(ms_rpc_server_address(f.srv, 0), addr);
  ms_error *err = NULL;
  req_t req = REQ_INIT;
  req.text = "over unix";
  reply_t *r = call_unary(f.ch, ECHO("Unary"), &req, 5000, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r);
  CU_ASSERT_STRING_EQUAL(r->text, "over unix");
  free_msg(r);
  stop(&f);
  ms_test_rmtree(dir);
}

static void test_server_stream(void) {
  fixture f = start("127.0.0.1:0", 0, false);
  ms_error *err = NULL;
  req_t req = REQ_INIT;
  req.text = "s";
  req.count = 5000; /* far past the per-call send queue: needs on_drain flow control */
  ms_rpc_stream *s = ms_rpc_stream_open(f.ch, ECHO("ServerStream"), &req.base, NULL, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  uint32_t n = 0;
  ProtobufCMessage *m = NULL;
  int rc;
  while ((rc = ms_rpc_stream_recv(s, REPLY_DESC, &m, &err)) == 1) {
    CU_ASSERT_EQUAL(((reply_t *)m)->index, n);
    n++;
    free_msg(m);
  }
  CU_ASSERT_EQUAL(rc, 0);
  CU_ASSERT_EQUAL(n, 5000);
  MS_ASSERT_OK(ms_rpc_stream_finish(s, &err), &err);
  ms_rpc_stream_free(s);
  stop(&f);
}

static void test_client_stream(void) {
  fixture f = start("127.0.0.1:0", 0, false);
  ms_error *err = NULL;
  ms_rpc_stream *s = ms_rpc_stream_open(f.ch, ECHO("ClientStream"), NULL, NULL, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  uint8_t payload[100] = {0};
  for (int i = 0; i < 200; i++) {
    req_t req = REQ_INIT;
    req.text = i == 199 ? "last" : "x";
    req.payload = (ProtobufCBinaryData){.len = sizeof(payload), .data = payload};
    MS_ASSERT_OK(ms_rpc_stream_send(s, &req.base, &err), &err);
  }
  MS_ASSERT_OK(ms_rpc_stream_close_send(s, &err), &err);
  ProtobufCMessage *m = NULL;
  CU_ASSERT_EQUAL_FATAL(ms_rpc_stream_recv(s, REPLY_DESC, &m, &err), 1);
  reply_t *r = (reply_t *)m;
  CU_ASSERT_EQUAL(r->received, 200);
  CU_ASSERT_EQUAL(r->received_bytes, 200 * sizeof(payload));
  CU_ASSERT_STRING_EQUAL(r->text, "last");
  free_msg(m);
  CU_ASSERT_EQUAL(ms_rpc_stream_recv(s, REPLY_DESC, &m, &err), 0);
  MS_ASSERT_OK(ms_rpc_stream_finish(s, &err), &err);
  ms_rpc_stream_free(s);
  stop(&f);
}

static void test_bidi(void) {
  fixture f = start("127.0.0.1:0", 0, false);
  ms_error *err = NULL;
  ms_rpc_stream *s = ms_rpc_stream_open(f.ch, ECHO("Bidi"), NULL, NULL, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  for (uint32_t i = 0; i < 100; i++) {
    _cleanup_free_ char *text = ms_xasprintf("ping %u", i);
    req_t req = REQ_INIT;
    req.text = text;
    MS_ASSERT_OK(ms_rpc_stream_send(s, &req.base, &err), &err);
    ProtobufCMessage *m = NULL;
    CU_ASSERT_EQUAL_FATAL(ms_rpc_stream_recv(s, REPLY_DESC, &m, &err), 1);
    CU_ASSERT_STRING_EQUAL(((reply_t *)m)->text, text);
    CU_ASSERT_EQUAL(((reply_t *)m)->index, i);
    free_msg(m);
  }
  MS_ASSERT_OK(ms_rpc_stream_close_send(s, &err), &err);
  ProtobufCMessage *m = NULL;
  CU_ASSERT_EQUAL(ms_rpc_stream_recv(s, REPLY_DESC, &m, &err), 0);
  MS_ASSERT_OK(ms_rpc_stream_finish(s, &err), &err);
  ms_rpc_stream_free(s);
  stop(&f);
}

/* The server replies and ends the call before reading: sending must fail at once
 * (not wait for a status held back behind the unread reply), then the reply and the
 * status are read as usual. */
static void test_send_after_server_ended(void) {
  fixture f = start("127.0.0.1:0", 0, false);
  ms_error *err = NULL;
  ms_rpc_stream *s = ms_rpc_stream_open(f.ch, ECHO("Early"), NULL, NULL, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  req_t req = REQ_INIT;
  req.payload = (ProtobufCBinaryData){.len = 32 * 1024, .data = ms_xcalloc(1, 32 * 1024)};
  int rc = 0;
  for (int i = 0; i < 1000 && rc == 0; i++) /* until the end of the call reaches us */
    rc = ms_rpc_stream_send(s, &req.base, &err);
  free(req.payload.data);
  CU_ASSERT_EQUAL(rc, MS_ERR);
  ms_error_free(TAKE_PTR(err));
  ProtobufCMessage *m = NULL;
  CU_ASSERT_EQUAL_FATAL(ms_rpc_stream_recv(s, REPLY_DESC, &m, &err), 1);
  CU_ASSERT_STRING_EQUAL(((reply_t *)m)->text, "early");
  free_msg(m);
  CU_ASSERT_EQUAL(ms_rpc_stream_recv(s, REPLY_DESC, &m, &err), MS_ERR);
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_EQUAL(err->code, MS_ABORTED);
  CU_ASSERT_STRING_EQUAL(err->msg, "ended early");
  ms_error_free(err);
  ms_rpc_stream_free(s);
  stop(&f);
}

static void test_status_and_message(void) {
  fixture f = start("127.0.0.1:0", 0, false);
  ms_error *err = NULL;
  req_t req = REQ_INIT;
  req.code = MS_FAILED_PRECONDITION;
  req.message = "agent `a-1` is draining: no new tasks (é)";
  CU_ASSERT_PTR_NULL(call_unary(f.ch, ECHO("Fail"), &req, 5000, &err));
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_EQUAL(err->code, MS_FAILED_PRECONDITION);
  CU_ASSERT_STRING_EQUAL(err->msg, req.message);
  ms_error_free(TAKE_PTR(err));
  req.code = 99; /* the handler's own validation names the field */
  CU_ASSERT_PTR_NULL(call_unary(f.ch, ECHO("Fail"), &req, 5000, &err));
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "`code`"));
  ms_error_free(err);
  stop(&f);
}

static void test_deadline_exceeded(void) {
  fixture f = start("127.0.0.1:0", 0, false);
  ms_error *err = NULL;
  unsigned long cancelled = echo_calls_cancelled();
  req_t req = REQ_INIT;
  req.delay_ms = 10000;
  CU_ASSERT_PTR_NULL(call_unary(f.ch, ECHO("Sleep"), &req, 100, &err));
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_EQUAL(err->code, MS_DEADLINE_EXCEEDED);
  ms_error_free(TAKE_PTR(err));
  /* The handler saw the call end as cancelled. */
  CU_ASSERT_TRUE(eventually(echo_calls_cancelled, cancelled + 1));
  /* A deadline is visible to the handler. */
  req.delay_ms = 0;
  reply_t *r = call_unary(f.ch, ECHO("Sleep"), &req, 60000, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r);
  /* grpc-timeout travels with coarse units that round up: allow for that. */
  CU_ASSERT_TRUE(r->deadline_ms > 0 && r->deadline_ms <= 61000);
  free_msg(r);
  r = call_unary(f.ch, ECHO("Sleep"), &req, 0, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r);
  CU_ASSERT_EQUAL(r->deadline_ms, -1);
  free_msg(r);
  stop(&f);
}

static void test_cancel_mid_stream(void) {
  fixture f = start("127.0.0.1:0", 0, false);
  ms_error *err = NULL;
  unsigned long cancelled = echo_calls_cancelled();
  req_t req = REQ_INIT;
  req.count = 1000000;
  ms_rpc_stream *s = ms_rpc_stream_open(f.ch, ECHO("ServerStream"), &req.base, NULL, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  for (int i = 0; i < 10; i++) {
    ProtobufCMessage *m = NULL;
    CU_ASSERT_EQUAL_FATAL(ms_rpc_stream_recv(s, REPLY_DESC, &m, &err), 1);
    free_msg(m);
  }
  ms_rpc_stream_cancel(s);
  CU_ASSERT_EQUAL(ms_rpc_stream_finish(s, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_CANCELLED);
  ms_error_free(TAKE_PTR(err));
  ms_rpc_stream_free(s);
  /* A server sending flat out was seen to notice the cancel only ~5 s later on a
   * loaded machine: wait generously. */
  CU_ASSERT_TRUE(eventually(echo_calls_cancelled, cancelled + 1));
  /* The server still answers. */
  req_t u = REQ_INIT;
  u.text = "still here";
  reply_t *r = call_unary(f.ch, ECHO("Unary"), &u, 5000, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r);
  free_msg(r);
  stop(&f);
}

static void test_gzip_request(void) {
  fixture f = start("127.0.0.1:0", 0, true);
  ms_error *err = NULL;
  size_t n = 1 << 20;
  uint8_t *big = ms_xmalloc(n);
  memset(big, 'z', n);
  req_t req = REQ_INIT;
  req.payload = (ProtobufCBinaryData){.len = n, .data = big};
  reply_t *r = call_unary(f.ch, ECHO("Unary"), &req, 10000, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r);
  CU_ASSERT_EQUAL(r->payload.len, n);
  CU_ASSERT_EQUAL(memcmp(r->payload.data, big, n), 0);
  free_msg(r);
  free(big);
  stop(&f);
}

static void test_message_over_limit(void) {
  fixture f = start("127.0.0.1:0", 64 * 1024, false);
  ms_error *err = NULL;
  uint8_t *big = ms_xcalloc(1, 100 * 1024);
  req_t req = REQ_INIT;
  req.payload = (ProtobufCBinaryData){.len = 100 * 1024, .data = big};
  CU_ASSERT_PTR_NULL(call_unary(f.ch, ECHO("Unary"), &req, 5000, &err));
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_EQUAL(err->code, MS_RESOURCE_EXHAUSTED);
  ms_error_free(TAKE_PTR(err));
  /* Small messages still pass. */
  req.payload.len = 1000;
  reply_t *r = call_unary(f.ch, ECHO("Unary"), &req, 5000, &err);
  CU_ASSERT_PTR_NOT_NULL(r);
  free_msg(r);
  free(big);
  stop(&f);
}

static void test_unknown_method(void) {
  fixture f = start("127.0.0.1:0", 0, false);
  ms_error *err = NULL;
  req_t req = REQ_INIT;
  /* A long deadline: UNIMPLEMENTED must come at once, not DEADLINE_EXCEEDED later. */
  CU_ASSERT_PTR_NULL(call_unary(f.ch, ECHO("Nope"), &req, 60000, &err));
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_EQUAL(err->code, MS_UNIMPLEMENTED);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "/meseta.test.v1.Echo/Nope"));
  ms_error_free(TAKE_PTR(err));
  CU_ASSERT_PTR_NULL(call_unary(f.ch, "/no.Such/Service", &req, 60000, &err));
  CU_ASSERT_EQUAL(err->code, MS_UNIMPLEMENTED);
  ms_error_free(err);
  stop(&f);
}

/* Sends raw bytes with gRPC core directly: our client only sends valid messages. */
static grpc_status_code raw_call(const char *target, const char *method, const void *bytes, size_t n,
                                 char **ret_details) {
  grpc_channel_credentials *creds = grpc_insecure_credentials_create();
  grpc_channel *ch = grpc_channel_create(target, creds, NULL);
  grpc_channel_credentials_release(creds);
  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  grpc_slice payload = grpc_slice_from_copied_buffer(bytes, n);
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&payload, 1);
  grpc_status_code st = ms_raw_unary(ch, cq, NULL, method, bb, 10000, NULL, ret_details);
  grpc_byte_buffer_destroy(bb);
  grpc_slice_unref(payload);
  ms_raw_cq_destroy(cq);
  grpc_channel_destroy(ch);
  return st;
}

static void test_garbage_payload(void) {
  fixture f = start("127.0.0.1:0", 0, false);
  static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
  char *details = NULL;
  grpc_status_code st =
      raw_call(ms_rpc_server_address(f.srv, 0), ECHO("Unary"), garbage, sizeof(garbage), &details);
  CU_ASSERT_EQUAL(st, GRPC_STATUS_INVALID_ARGUMENT);
  CU_ASSERT_PTR_NOT_NULL(strstr(details, "meseta.test.v1.EchoRequest"));
  free(details);
  /* Garbage inside a client stream ends that stream the same way. */
  st = raw_call(ms_rpc_server_address(f.srv, 0), ECHO("ClientStream"), garbage, sizeof(garbage), &details);
  CU_ASSERT_EQUAL(st, GRPC_STATUS_INVALID_ARGUMENT);
  free(details);
  stop(&f);
}

static void test_health(void) {
  fixture f = start("127.0.0.1:0", 0, false);
  ms_error *err = NULL;
  Grpc__Health__V1__HealthCheckRequest hreq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  hreq.service = "meseta.test.v1.Echo";
  ProtobufCMessage *m = NULL;
  MS_ASSERT_OK(ms_rpc_unary(f.ch, "/grpc.health.v1.Health/Check", &hreq.base,
                            &grpc__health__v1__health_check_response__descriptor, NULL, &m, &err),
               &err);
  CU_ASSERT_EQUAL(((Grpc__Health__V1__HealthCheckResponse *)m)->status,
                  GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
  free_msg(m);
  hreq.service = "no.such.Service";
  CU_ASSERT_EQUAL(ms_rpc_unary(f.ch, "/grpc.health.v1.Health/Check", &hreq.base,
                               &grpc__health__v1__health_check_response__descriptor, NULL, &m, &err),
                  MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_NOT_FOUND);
  ms_error_free(TAKE_PTR(err));

  /* Watch hears SERVING, then the flip, then the way back. */
  hreq.service = "meseta.test.v1.Echo";
  ms_rpc_stream *s = ms_rpc_stream_open(f.ch, "/grpc.health.v1.Health/Watch", &hreq.base, NULL, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  int want[] = {1, 2, 1};
  for (int i = 0; i < 3; i++) {
    CU_ASSERT_EQUAL_FATAL(
        ms_rpc_stream_recv(s, &grpc__health__v1__health_check_response__descriptor, &m, &err), 1);
    CU_ASSERT_EQUAL((int)((Grpc__Health__V1__HealthCheckResponse *)m)->status, want[i]);
    free_msg(m);
    if (i < 2)
      ms_rpc_server_set_health(f.srv, "meseta.test.v1.Echo", i == 1);
  }
  /* Shutdown ends watches at once instead of holding the grace period. */
  ms_rpc_channel *ch = f.ch;
  ms_rpc_server_shutdown(f.srv, 30000);
  CU_ASSERT_EQUAL(ms_rpc_stream_recv(s, &grpc__health__v1__health_check_response__descriptor, &m, &err), 1);
  CU_ASSERT_EQUAL(((Grpc__Health__V1__HealthCheckResponse *)m)->status, 2);
  free_msg(m);
  CU_ASSERT_EQUAL(ms_rpc_stream_recv(s, &grpc__health__v1__health_check_response__descriptor, &m, &err),
                  MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_UNAVAILABLE);
  ms_error_free(err);
  ms_rpc_stream_free(s);
  ms_rpc_channel_free(ch);
  ms_rpc_server_free(f.srv);
}

static Grpc__Reflection__V1alpha__ServerReflectionResponse *
reflect(ms_rpc_stream *s, Grpc__Reflection__V1alpha__ServerReflectionRequest *r) {
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_rpc_stream_send(s, &r->base, &err), &err);
  ProtobufCMessage *m = NULL;
  CU_ASSERT_EQUAL_FATAL(
      ms_rpc_stream_recv(s, &grpc__reflection__v1alpha__server_reflection_response__descriptor, &m, &err), 1);
  return (Grpc__Reflection__V1alpha__ServerReflectionResponse *)m;
}

static void test_reflection(void) {
  fixture f = start("127.0.0.1:0", 0, false);
  ms_error *err = NULL;
  ms_rpc_stream *s = ms_rpc_stream_open(
      f.ch, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", NULL, NULL, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  Grpc__Reflection__V1alpha__ServerReflectionRequest r =
      GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
  r.message_request_case =
      GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
  r.list_services = "";
  Grpc__Reflection__V1alpha__ServerReflectionResponse *resp = reflect(s, &r);
  CU_ASSERT_PTR_NOT_NULL_FATAL(resp->list_services_response);
  bool echo = false, health = false, v1 = false;
  for (size_t i = 0; i < resp->list_services_response->n_service; i++) {
    const char *n = resp->list_services_response->service[i]->name;
    echo |= strcmp(n, "meseta.test.v1.Echo") == 0;
    health |= strcmp(n, "grpc.health.v1.Health") == 0;
    v1 |= strcmp(n, "grpc.reflection.v1.ServerReflection") == 0;
  }
  CU_ASSERT_TRUE(echo && health && v1);
  free_msg(resp);

  r.message_request_case =
      GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
  r.file_containing_symbol = "meseta.test.v1.Echo.Bidi";
  resp = reflect(s, &r);
  CU_ASSERT_PTR_NOT_NULL_FATAL(resp->file_descriptor_response);
  CU_ASSERT_TRUE(resp->file_descriptor_response->n_file_descriptor_proto >= 1);
  free_msg(resp);

  r.file_containing_symbol = "grpc.health.v1.HealthCheckResponse.ServingStatus";
  resp = reflect(s, &r);
  CU_ASSERT_PTR_NOT_NULL(resp->file_descriptor_response);
  free_msg(resp);

  r.file_containing_symbol = "no.such.Symbol";
  resp = reflect(s, &r);
  CU_ASSERT_PTR_NOT_NULL_FATAL(resp->error_response);
  CU_ASSERT_EQUAL(resp->error_response->error_code, MS_NOT_FOUND);
  free_msg(resp);
  MS_ASSERT_OK(ms_rpc_stream_close_send(s, &err), &err);
  ProtobufCMessage *m = NULL;
  CU_ASSERT_EQUAL(
      ms_rpc_stream_recv(s, &grpc__reflection__v1alpha__server_reflection_response__descriptor, &m, &err), 0);
  ms_rpc_stream_free(s);
  stop(&f);
}

typedef struct sleeper {
  ms_rpc_channel *ch;
  uint32_t delay_ms;
  ms_status code;
} sleeper;

static void *sleep_call(void *arg) {
  sleeper *sl = arg;
  ms_error *err = NULL;
  req_t req = REQ_INIT;
  req.delay_ms = sl->delay_ms;
  reply_t *r = call_unary(sl->ch, ECHO("Sleep"), &req, 30000, &err);
  sl->code = r ? MS_OK : err->code;
  if (r)
    free_msg(r);
  ms_error_free(err);
  return NULL;
}

static void test_shutdown_with_calls_in_flight(void) {
  fixture f = start("127.0.0.1:0", 0, false);
  ms_error *err = NULL;
  unsigned long done_before = echo_calls_completed() + echo_calls_cancelled();
  sleeper quick[4], slow = {.ch = f.ch, .delay_ms = 20000};
  pthread_t t[5];
  for (int i = 0; i < 4; i++) {
    quick[i] = (sleeper){.ch = f.ch, .delay_ms = 200};
    pthread_create(&t[i], NULL, sleep_call, &quick[i]);
  }
  pthread_create(&t[4], NULL, sleep_call, &slow);
  /* An open bidi stream, too. */
  ms_rpc_stream *s = ms_rpc_stream_open(f.ch, ECHO("Bidi"), NULL, NULL, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  req_t req = REQ_INIT;
  MS_ASSERT_OK(ms_rpc_stream_send(s, &req.base, &err), &err);
  ProtobufCMessage *m = NULL;
  CU_ASSERT_EQUAL_FATAL(ms_rpc_stream_recv(s, REPLY_DESC, &m, &err), 1);
  free_msg(m);
  CU_ASSERT_TRUE(eventually(echo_calls_completed, 0)); /* let the sleepers arrive */
  usleep(50000);

  ms_rpc_server_shutdown(f.srv, 1500);
  for (int i = 0; i < 5; i++)
    pthread_join(t[i], NULL);
  /* Calls that fit in the grace period finished; the rest were cut. */
  for (int i = 0; i < 4; i++)
    CU_ASSERT_EQUAL(quick[i].code, MS_OK);
  CU_ASSERT_NOT_EQUAL(slow.code, MS_OK);
  CU_ASSERT_EQUAL(ms_rpc_stream_recv(s, REPLY_DESC, &m, &err), MS_ERR);
  ms_error_free(err);
  ms_rpc_stream_free(s);
  CU_ASSERT_TRUE(echo_calls_completed() + echo_calls_cancelled() >= done_before + 6);
  /* New calls are refused once the server is down. */
  req_t u = REQ_INIT;
  err = NULL;
  CU_ASSERT_PTR_NULL(call_unary(f.ch, ECHO("Unary"), &u, 2000, &err));
  CU_ASSERT_PTR_NOT_NULL(err);
  ms_error_free(err);
  ms_rpc_channel_free(f.ch);
  ms_rpc_server_free(f.srv);
}

/* A channel outlives its server: the same channel reaches a new server on the
 * same address once it is back, by itself. */
static void test_reconnect(void) {
  fixture f = start("127.0.0.1:0", 0, false);
  _cleanup_free_ char *addr = ms_xstrdup(ms_rpc_server_address(f.srv, 0));
  ms_error *err = NULL;
  req_t req = REQ_INIT;
  req.text = "before";
  reply_t *r = call_unary(f.ch, ECHO("Unary"), &req, 5000, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r);
  free_msg(r);
  ms_rpc_server_free(f.srv);

  CU_ASSERT_PTR_NULL(call_unary(f.ch, ECHO("Unary"), &req, 1000, &err));
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_EQUAL(err->code, MS_UNAVAILABLE);
  ms_error_free(TAKE_PTR(err));

  const char *addrs[] = {addr};
  ms_rpc_server_options o = {.listen = addrs, .n_listen = 1};
  ms_rpc_server *again = ms_rpc_server_new(&o, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(again);
  MS_ASSERT_OK(echo_service_add(again, &err), &err);
  MS_ASSERT_OK(ms_rpc_server_start(again, &err), &err);
  /* wait_for_ready: the call waits for the reconnection instead of failing fast. */
  ms_rpc_call_options co = {.timeout_ms = 30000, .wait_for_ready = true};
  ProtobufCMessage *m = NULL;
  req.text = "after";
  MS_ASSERT_OK(ms_rpc_unary(f.ch, ECHO("Unary"), &req.base, REPLY_DESC, &co, &m, &err), &err);
  CU_ASSERT_STRING_EQUAL(((reply_t *)m)->text, "after");
  free_msg(m);
  ms_rpc_channel_free(f.ch);
  ms_rpc_server_free(again);
}

static void test_unreachable(void) {
  ms_error *err = NULL;
  ms_rpc_channel *ch = ms_rpc_channel_new("127.0.0.1:1", NULL, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
  req_t req = REQ_INIT;
  CU_ASSERT_PTR_NULL(call_unary(ch, ECHO("Unary"), &req, 2000, &err));
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_EQUAL(err->code, MS_UNAVAILABLE);
  ms_error_free(TAKE_PTR(err));
  CU_ASSERT_EQUAL(ms_rpc_channel_wait_ready(ch, 300, &err), MS_ERR);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "127.0.0.1:1"));
  ms_error_free(err);
  ms_rpc_channel_free(ch);
}

static void test_bad_server_options(void) {
  ms_error *err = NULL;
  const char *addrs[] = {"not an address"};
  ms_rpc_server_options o = {.listen = addrs, .n_listen = 1};
  CU_ASSERT_PTR_NULL(ms_rpc_server_new(&o, &err));
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "not an address"));
  ms_error_free(TAKE_PTR(err));
  ms_rpc_tls tls = {.cert_file = "/nonexistent.pem", .key_file = "/nonexistent.key"};
  const char *ok[] = {"127.0.0.1:0"};
  o = (ms_rpc_server_options){.listen = ok, .n_listen = 1, .tls = &tls};
  CU_ASSERT_PTR_NULL(ms_rpc_server_new(&o, &err));
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_EQUAL(err->code, MS_NOT_FOUND);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "/nonexistent.pem"));
  ms_error_free(err);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"unary", test_unary},
      {"metadata", test_metadata},
      {"unix_socket", test_unix_socket},
      {"server_stream", test_server_stream},
      {"client_stream", test_client_stream},
      {"bidi", test_bidi},
      {"send_after_server_ended", test_send_after_server_ended},
      {"status_and_message", test_status_and_message},
      {"deadline_exceeded", test_deadline_exceeded},
      {"cancel_mid_stream", test_cancel_mid_stream},
      {"gzip_request", test_gzip_request},
      {"message_over_limit", test_message_over_limit},
      {"unknown_method", test_unknown_method},
      {"garbage_payload", test_garbage_payload},
      {"health", test_health},
      {"reflection", test_reflection},
      {"shutdown_with_calls_in_flight", test_shutdown_with_calls_in_flight},
      {"reconnect", test_reconnect},
      {"unreachable", test_unreachable},
      {"bad_server_options", test_bad_server_options},
      {NULL, NULL},
  };
  grpc_init(); /* for the raw-core test client */
  int rc = ms_test_main(argc, argv, "rpc", cases);
  grpc_shutdown();
  return rc;
}
