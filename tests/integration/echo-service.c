#include "echo-service.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/test/v1/echo.pb-c.h"

extern const unsigned char ms_test_descriptor_set[];
extern const size_t ms_test_descriptor_set_len;

typedef Meseta__Test__V1__EchoRequest req_t;
typedef Meseta__Test__V1__EchoReply reply_t;
#define REPLY_INIT MESETA__TEST__V1__ECHO_REPLY__INIT

static atomic_ulong completed, cancelled;

unsigned long echo_calls_completed(void) {
  return atomic_load(&completed);
}
unsigned long echo_calls_cancelled(void) {
  return atomic_load(&cancelled);
}

/* Per-call state of the streaming handlers. */
typedef struct stream_state {
  uint32_t next, count;
  char *text;
  uint64_t received, received_bytes;
} stream_state;

static void count_done(ms_rpc_call *call, bool was_cancelled) {
  atomic_fetch_add(was_cancelled ? &cancelled : &completed, 1);
  stream_state *st = ms_rpc_call_data(call);
  if (st) {
    free(st->text);
    free(st);
  }
}

static int unary(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  const req_t *req = (const req_t *)msg;
  reply_t r = REPLY_INIT;
  r.text = req->text;
  r.payload = req->payload;
  if (*req->metadata_key) {
    const char *v = ms_rpc_call_metadata(call, req->metadata_key);
    r.metadata_present = v != NULL;
    r.metadata_value = (char *)(v ? v : "");
  }
  return ms_rpc_call_reply(call, &r.base, err);
}

/* Server stream without delay: sends in chunks as the queue drains. */
static void stream_more(ms_rpc_call *call) {
  stream_state *st = ms_rpc_call_data(call);
  if (!st)
    return; /* a slow stream: its thread sends */
  for (int i = 0; i < 64 && st->next < st->count; i++) {
    reply_t r = REPLY_INIT;
    r.text = st->text;
    r.index = st->next++;
    if (ms_rpc_call_send(call, &r.base, NULL) < 0)
      return;
  }
  if (st->next == st->count)
    ms_rpc_call_finish(call, MS_OK, NULL);
}

/* Work done on a thread of its own: the thread owns this (not the call). */
typedef struct job {
  ms_rpc_call *call;
  uint32_t count, delay_ms;
  char *text;
  int64_t deadline_ms;
} job;

static void job_end(job *j) {
  ms_rpc_call_unref(j->call);
  free(j->text);
  free(j);
}

/* Server stream with a delay between messages. */
static void *slow_stream(void *arg) {
  job *j = arg;
  for (uint32_t i = 0; i < j->count && !ms_rpc_call_is_done(j->call); i++) {
    reply_t r = REPLY_INIT;
    r.text = j->text;
    r.index = i;
    if (ms_rpc_call_send(j->call, &r.base, NULL) < 0)
      break;
    usleep(j->delay_ms * 1000);
  }
  ms_rpc_call_finish(j->call, MS_OK, NULL);
  job_end(j);
  return NULL;
}

static int spawn(void *(*fn)(void *), ms_rpc_call *call, const req_t *req, ms_error **err) {
  job *j = ms_xcalloc(1, sizeof(*j));
  j->call = call;
  j->count = req->count;
  j->delay_ms = req->delay_ms;
  j->text = ms_xstrdup(req->text);
  int64_t left = ms_rpc_call_deadline_ms(call);
  j->deadline_ms = left == INT64_MAX ? -1 : left;
  ms_rpc_call_ref(call);
  pthread_t t;
  if (pthread_create(&t, NULL, fn, j) != 0) {
    job_end(j);
    return ms_error_set(err, MS_RESOURCE_EXHAUSTED, "no thread for `%s`", ms_rpc_call_method(call));
  }
  pthread_detach(t);
  return 0;
}

static int server_stream(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  const req_t *req = (const req_t *)msg;
  if (req->delay_ms)
    return spawn(slow_stream, call, req, err);
  stream_state *st = ms_xcalloc(1, sizeof(*st));
  st->count = req->count;
  st->text = ms_xstrdup(req->text);
  ms_rpc_call_set_data(call, st);
  stream_more(call);
  return 0;
}

static int client_stream_start(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  ms_rpc_call_set_data(call, ms_xcalloc(1, sizeof(stream_state)));
  return 0;
}

static int client_stream_msg(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  const req_t *req = (const req_t *)msg;
  stream_state *st = ms_rpc_call_data(call);
  st->received++;
  st->received_bytes += req->payload.len;
  free(st->text);
  st->text = ms_xstrdup(req->text);
  return 0;
}

static int client_stream_end(ms_rpc_call *call, ms_error **err) {
  stream_state *st = ms_rpc_call_data(call);
  reply_t r = REPLY_INIT;
  r.received = st->received;
  r.received_bytes = st->received_bytes;
  r.text = st->text ? st->text : "";
  return ms_rpc_call_reply(call, &r.base, err);
}

static int bidi_msg(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  const req_t *req = (const req_t *)msg;
  stream_state *st = ms_rpc_call_data(call);
  reply_t r = REPLY_INIT;
  r.text = req->text;
  r.payload = req->payload;
  r.index = (uint32_t)st->received++;
  return ms_rpc_call_send(call, &r.base, err);
}

static int early_start(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  reply_t r = REPLY_INIT;
  r.text = "early";
  if (ms_rpc_call_send(call, &r.base, err) < 0)
    return MS_ERR;
  ms_rpc_call_finish(call, MS_ABORTED, "ended early");
  return 0;
}

static int bidi_end(ms_rpc_call *call, ms_error **err) {
  ms_rpc_call_finish(call, MS_OK, NULL);
  return 0;
}

static void *sleeper(void *arg) {
  job *j = arg;
  for (uint32_t waited = 0; waited < j->delay_ms && !ms_rpc_call_is_done(j->call); waited += 5)
    usleep(5000);
  reply_t r = REPLY_INIT;
  r.deadline_ms = j->deadline_ms;
  ms_rpc_call_reply(j->call, &r.base, NULL); /* fails harmlessly if the call is over */
  job_end(j);
  return NULL;
}

static int sleep_start(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  return spawn(sleeper, call, (const req_t *)msg, err);
}

static int fail(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  const req_t *req = (const req_t *)msg;
  if (req->code == 0 || req->code > 16)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `code`: %u is not a gRPC error code (1..16)",
                        req->code);
  return ms_error_set(err, (ms_status)req->code, "%s", req->message);
}

static int identity(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  reply_t r = REPLY_INIT;
  const char *id = ms_rpc_call_peer_identity(call);
  r.peer_identity = (char *)(id ? id : "");
  return ms_rpc_call_reply(call, &r.base, err);
}

static int stats(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  reply_t r = REPLY_INIT;
  r.received = echo_calls_completed();
  r.received_bytes = echo_calls_cancelled();
  return ms_rpc_call_reply(call, &r.base, err);
}

static int set_health(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  const req_t *req = (const req_t *)msg;
  if (req->code != 1 && req->code != 2)
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "field `code`: %u is neither 1 (SERVING) nor 2 (NOT_SERVING)", req->code);
  ms_rpc_server_set_health(ms_rpc_call_userdata(call), req->text, req->code == 1);
  reply_t r = REPLY_INIT;
  return ms_rpc_call_reply(call, &r.base, err);
}

int echo_service_add(ms_rpc_server *srv, ms_error **err) {
  static const ms_rpc_method methods[] = {
      {.name = "Unary", .on_start = unary, .on_done = count_done},
      {.name = "ServerStream", .on_start = server_stream, .on_drain = stream_more, .on_done = count_done},
      {.name = "ClientStream",
       .on_start = client_stream_start,
       .on_message = client_stream_msg,
       .on_half_close = client_stream_end,
       .on_done = count_done},
      {.name = "Bidi",
       .on_start = client_stream_start,
       .on_message = bidi_msg,
       .on_half_close = bidi_end,
       .on_done = count_done},
      {.name = "Early", .on_start = early_start, .on_done = count_done},
      {.name = "Sleep", .on_start = sleep_start, .on_done = count_done},
      {.name = "Fail", .on_start = fail, .on_done = count_done},
      {.name = "Identity", .on_start = identity, .on_done = count_done},
      {.name = "Stats", .on_start = stats},
      {.name = "SetHealth", .on_start = set_health},
  };
  if (ms_rpc_server_add_descriptors(srv, ms_test_descriptor_set, ms_test_descriptor_set_len, err) < 0)
    return MS_ERR;
  return ms_rpc_server_add_service(srv, &meseta__test__v1__echo__descriptor, methods, MS_ARRAY_SIZE(methods),
                                   srv, err);
}
