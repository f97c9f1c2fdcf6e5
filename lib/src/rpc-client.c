/* The client half of the gRPC layer: channels, unary calls and streams.
 *
 * Calls block their caller on a pluck completion queue. Unary calls borrow one
 * from a small per-channel pool; a stream owns one, so one thread may send while
 * another receives. Method paths are registered with the channel once. */
#include <grpc/compression.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <string.h>

#include "meseta/alloc.h"

#include "rpc-internal.h"

#define CQ_POOL_MAX 16

typedef struct registered {
  char *path;
  void *handle;
} registered;

struct ms_rpc_channel {
  grpc_channel *ch;
  char *target;
  pthread_mutex_t mu;
  grpc_completion_queue *pool[CQ_POOL_MAX];
  size_t n_pool;
  registered *reg;
  size_t n_reg;
};

struct ms_rpc_stream {
  ms_rpc_channel *ch;
  grpc_call *call;
  grpc_completion_queue *cq;
  char *method;
  pthread_mutex_t mu; /* guards status fields */
  grpc_metadata_array initial_md, trailing_md;
  bool got_initial, status_done;
  grpc_status_code status;
  grpc_slice details;
  const char *error_string;
  char send_tag, recv_tag, status_tag; /* distinct addresses */
};

/* ---- channels ----------------------------------------------------------------- */

ms_rpc_channel *ms_rpc_channel_new(const char *target, const ms_rpc_channel_options *opts, ms_error **err) {
  grpc_channel *gch = ms_rpc__channel_create(target, opts, err); /* rpc-common.c */
  if (!gch)
    return NULL;
  ms_rpc_channel *ch = ms_xcalloc(1, sizeof(*ch));
  ch->ch = gch;
  ch->target = ms_xstrdup(target);
  pthread_mutex_init(&ch->mu, NULL);
  return ch;
}

static void cq_destroy(grpc_completion_queue *cq) {
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
}

void ms_rpc_channel_free(ms_rpc_channel *ch) {
  if (!ch)
    return;
  for (size_t i = 0; i < ch->n_pool; i++)
    cq_destroy(ch->pool[i]);
  for (size_t i = 0; i < ch->n_reg; i++)
    free(ch->reg[i].path);
  free(ch->reg);
  grpc_channel_destroy(ch->ch);
  free(ch->target);
  pthread_mutex_destroy(&ch->mu);
  free(ch);
  ms_rpc__shutdown();
}

const char *ms_rpc_channel_target(const ms_rpc_channel *ch) {
  return ch->target;
}

int ms_rpc_channel_wait_ready(ms_rpc_channel *ch, int64_t timeout_ms, ms_error **err) {
  gpr_timespec deadline = ms_rpc__deadline_after_ms(timeout_ms);
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  int rc = 0;
  for (;;) {
    grpc_connectivity_state st = grpc_channel_check_connectivity_state(ch->ch, 1);
    if (st == GRPC_CHANNEL_READY)
      break;
    if (st == GRPC_CHANNEL_SHUTDOWN) {
      rc = ms_error_set(err, MS_UNAVAILABLE, "channel to `%s` is shut down", ch->target);
      break;
    }
    grpc_channel_watch_connectivity_state(ch->ch, st, deadline, cq, NULL);
    grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (!ev.success) { /* the deadline passed before the state changed */
      rc = ms_error_set(err, MS_UNAVAILABLE, "`%s` did not become reachable within %lld ms", ch->target,
                        (long long)timeout_ms);
      break;
    }
  }
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
  return rc;
}

static grpc_completion_queue *take_cq(ms_rpc_channel *ch) {
  pthread_mutex_lock(&ch->mu);
  grpc_completion_queue *cq = ch->n_pool ? ch->pool[--ch->n_pool] : NULL;
  pthread_mutex_unlock(&ch->mu);
  return cq ? cq : grpc_completion_queue_create_for_pluck(NULL);
}

static void give_cq(ms_rpc_channel *ch, grpc_completion_queue *cq) {
  pthread_mutex_lock(&ch->mu);
  if (ch->n_pool < CQ_POOL_MAX) {
    ch->pool[ch->n_pool++] = cq;
    cq = NULL;
  }
  pthread_mutex_unlock(&ch->mu);
  if (cq)
    cq_destroy(cq);
}

static grpc_call *create_call(ms_rpc_channel *ch, const char *method, grpc_completion_queue *cq,
                              const ms_rpc_call_options *opts) {
  void *handle = NULL;
  pthread_mutex_lock(&ch->mu);
  for (size_t i = 0; i < ch->n_reg && !handle; i++)
    if (strcmp(ch->reg[i].path, method) == 0)
      handle = ch->reg[i].handle;
  if (!handle && ch->n_reg < 256) {
    handle = grpc_channel_register_call(ch->ch, method, NULL, NULL);
    ch->reg = ms_xrealloc(ch->reg, (ch->n_reg + 1) * sizeof(*ch->reg));
    ch->reg[ch->n_reg++] = (registered){.path = ms_xstrdup(method), .handle = handle};
  }
  pthread_mutex_unlock(&ch->mu);
  gpr_timespec deadline = ms_rpc__deadline_after_ms(opts ? opts->timeout_ms : 0);
  if (handle)
    return grpc_channel_create_registered_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, handle, deadline,
                                               NULL);
  grpc_slice m = grpc_slice_from_copied_string(method);
  grpc_call *c = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL, deadline, NULL);
  grpc_slice_unref(m);
  return c;
}

/* Fills the metadata array of a SEND_INITIAL_METADATA op; returns the count. */
static size_t fill_metadata(const ms_rpc_call_options *opts, grpc_metadata *md, size_t cap) {
  size_t n = 0;
  for (const char *const *p = opts ? opts->metadata : NULL; p && p[0] && p[1] && n < cap; p += 2, n++) {
    memset(&md[n], 0, sizeof(md[n]));
    md[n].key = grpc_slice_from_static_string(p[0]);
    md[n].value = grpc_slice_from_static_string(p[1]);
  }
  return n;
}

/* Whether the far server sent this status itself. gRPC core says so in the error
 * string ("Error received from peer ..."), unless what answered was not gRPC at all
 * (an HTTP status turned into a gRPC one on this side). */
static bool from_server(grpc_slice details, const char *error_string) {
  static const char http[] = "Received http2 header with status";
  if (!error_string || !strstr(error_string, "Error received from peer"))
    return false;
  return !(GRPC_SLICE_LENGTH(details) >= sizeof(http) - 1 &&
           memcmp(GRPC_SLICE_START_PTR(details), http, sizeof(http) - 1) == 0);
}

/* A non-OK status as an error. The far server's message is kept as it is (it names
 * its subject); a failure of this hop (no connection, no answer before the
 * deadline, the connection lost) names the target it tried, so an error relayed
 * through several services still says which hop failed. */
static int status_error(grpc_status_code st, grpc_slice details, const char *error_string, const char *target,
                        const char *method, ms_error **err) {
  if (st == GRPC_STATUS_OK)
    return 0;
  int len = (int)GRPC_SLICE_LENGTH(details);
  const char *text = (const char *)GRPC_SLICE_START_PTR(details);
  if (from_server(details, error_string))
    return len ? ms_error_set(err, (ms_status)st, "%.*s", len, text)
               : ms_error_set(err, (ms_status)st, "%s from `%s` (`%s`)", ms_status_name((ms_status)st),
                              target, method);
  if (st == GRPC_STATUS_DEADLINE_EXCEEDED)
    return ms_error_set(err, MS_DEADLINE_EXCEEDED, "`%s`: no answer to `%s` before the deadline", target,
                        method);
  return ms_error_set(err, (ms_status)st, "`%s`: %.*s (`%s`)", target, len ? len : (int)strlen("no status"),
                      len ? text : "no status", method);
}

/* ---- unary --------------------------------------------------------------------- */

int ms_rpc_unary(ms_rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *resp_desc, const ms_rpc_call_options *opts,
                 ProtobufCMessage **ret_resp, ms_error **err) {
  grpc_completion_queue *cq = take_cq(ch);
  grpc_call *call = create_call(ch, method, cq, opts);
  grpc_byte_buffer *out = ms_rpc__pack(req), *in = NULL;
  grpc_metadata md[16];
  grpc_metadata_array initial, trailing;
  grpc_metadata_array_init(&initial);
  grpc_metadata_array_init(&trailing);
  grpc_status_code st = GRPC_STATUS_UNKNOWN;
  grpc_slice details = grpc_empty_slice();
  const char *error_string = NULL;

  grpc_op ops[6];
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = fill_metadata(opts, md, MS_ARRAY_SIZE(md));
  ops[0].data.send_initial_metadata.metadata = md;
  ops[0].flags = opts && opts->wait_for_ready ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = out;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &in;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
  ops[5].data.recv_status_on_client.status = &st;
  ops[5].data.recv_status_on_client.status_details = &details;
  ops[5].data.recv_status_on_client.error_string = &error_string;

  int rc = 0;
  if (grpc_call_start_batch(call, ops, 6, call, NULL) != GRPC_CALL_OK) {
    rc = ms_error_set(err, MS_INTERNAL, "call `%s` could not start", method);
  } else {
    grpc_completion_queue_pluck(cq, call, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    rc = status_error(st, details, error_string, ch->target, method, err);
    if (rc == 0 && !in)
      rc = ms_error_set(err, MS_INTERNAL, "`%s` answered OK without a response message", method);
    if (rc == 0) {
      ProtobufCMessage *m = ms_rpc__unpack(resp_desc, in, err);
      if (!m)
        rc = ms_error_prefix(err, "response from `%s`", method);
      else
        *ret_resp = m;
    }
  }
  if (in)
    grpc_byte_buffer_destroy(in);
  grpc_byte_buffer_destroy(out);
  grpc_metadata_array_destroy(&initial);
  grpc_metadata_array_destroy(&trailing);
  grpc_slice_unref(details);
  gpr_free((void *)error_string);
  grpc_call_unref(call);
  give_cq(ch, cq);
  return rc;
}

/* ---- streams --------------------------------------------------------------------- */

static bool run_batch(ms_rpc_stream *s, const grpc_op *ops, size_t n, void *tag) {
  if (grpc_call_start_batch(s->call, ops, n, tag, NULL) != GRPC_CALL_OK)
    return false;
  return grpc_completion_queue_pluck(s->cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).success;
}

/* Waits for the call's status (once) and returns it as an error, or 0. */
static int stream_status(ms_rpc_stream *s, ms_error **err) {
  pthread_mutex_lock(&s->mu);
  if (!s->status_done) {
    grpc_completion_queue_pluck(s->cq, &s->status_tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    s->status_done = true;
  }
  int rc = status_error(s->status, s->details, s->error_string, s->ch->target, s->method, err);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

/* After a failed send: the call's status if it has arrived, without waiting. gRPC
 * core hands the status over only once every message the server sent has been
 * read, and the thread sending may be the one that would read them: waiting here
 * could wait forever. Without the status, the stream is reported closed and the
 * status comes with the next read. */
static int stream_closed(ms_rpc_stream *s, ms_error **err) {
  pthread_mutex_lock(&s->mu);
  if (!s->status_done &&
      grpc_completion_queue_pluck(s->cq, &s->status_tag, gpr_now(GPR_CLOCK_MONOTONIC), NULL).type ==
          GRPC_OP_COMPLETE)
    s->status_done = true;
  int rc;
  if (!s->status_done)
    rc = ms_error_set(err, MS_UNAVAILABLE,
                      "stream `%s` to `%s` was ended by the server; read it for the status", s->method,
                      s->ch->target);
  else if ((rc = status_error(s->status, s->details, s->error_string, s->ch->target, s->method, err)) == 0)
    rc = ms_error_set(err, MS_FAILED_PRECONDITION, "stream `%s` is already closed", s->method);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

ms_rpc_stream *ms_rpc_stream_open(ms_rpc_channel *ch, const char *method, const ProtobufCMessage *first,
                                  const ms_rpc_call_options *opts, ms_error **err) {
  ms_rpc_stream *s = ms_xcalloc(1, sizeof(*s));
  s->ch = ch;
  s->method = ms_xstrdup(method);
  s->cq = grpc_completion_queue_create_for_pluck(NULL);
  s->call = create_call(ch, method, s->cq, opts);
  s->details = grpc_empty_slice();
  s->status = GRPC_STATUS_UNKNOWN;
  pthread_mutex_init(&s->mu, NULL);
  grpc_metadata_array_init(&s->initial_md);
  grpc_metadata_array_init(&s->trailing_md);

  grpc_op st;
  memset(&st, 0, sizeof(st));
  st.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  st.data.recv_status_on_client.trailing_metadata = &s->trailing_md;
  st.data.recv_status_on_client.status = &s->status;
  st.data.recv_status_on_client.status_details = &s->details;
  st.data.recv_status_on_client.error_string = &s->error_string;
  if (grpc_call_start_batch(s->call, &st, 1, &s->status_tag, NULL) != GRPC_CALL_OK) {
    s->status_done = true;
    ms_error_set(err, MS_INTERNAL, "stream `%s` could not start", method);
    ms_rpc_stream_free(s);
    return NULL;
  }

  grpc_metadata md[16];
  grpc_byte_buffer *bb = first ? ms_rpc__pack(first) : NULL;
  grpc_op ops[3];
  memset(ops, 0, sizeof(ops));
  size_t n = 0;
  ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[n].data.send_initial_metadata.count = fill_metadata(opts, md, MS_ARRAY_SIZE(md));
  ops[n].data.send_initial_metadata.metadata = md;
  ops[n++].flags = opts && opts->wait_for_ready ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0;
  if (bb) {
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = bb;
    ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  }
  bool ok = run_batch(s, ops, n, &s->send_tag);
  if (bb)
    grpc_byte_buffer_destroy(bb);
  if (!ok) {
    stream_closed(s, err);
    ms_error_prefix(err, "stream `%s` to `%s` could not start", method, ch->target);
    ms_rpc_stream_free(s);
    return NULL;
  }
  return s;
}

int ms_rpc_stream_send(ms_rpc_stream *s, const ProtobufCMessage *msg, ms_error **err) {
  grpc_byte_buffer *bb = ms_rpc__pack(msg);
  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_SEND_MESSAGE;
  op.data.send_message.send_message = bb;
  bool ok = run_batch(s, &op, 1, &s->send_tag);
  grpc_byte_buffer_destroy(bb);
  return ok ? 0 : stream_closed(s, err);
}

int ms_rpc_stream_close_send(ms_rpc_stream *s, ms_error **err) {
  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  return run_batch(s, &op, 1, &s->send_tag) ? 0 : stream_closed(s, err);
}

int ms_rpc_stream_recv(ms_rpc_stream *s, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **ret_msg,
                       ms_error **err) {
  grpc_byte_buffer *bb = NULL;
  grpc_op ops[2];
  memset(ops, 0, sizeof(ops));
  size_t n = 0;
  if (!s->got_initial) {
    ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[n++].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
    s->got_initial = true;
  }
  ops[n].op = GRPC_OP_RECV_MESSAGE;
  ops[n++].data.recv_message.recv_message = &bb;
  bool ok = run_batch(s, ops, n, &s->recv_tag);
  if (!ok || !bb) {
    if (bb)
      grpc_byte_buffer_destroy(bb);
    return stream_status(s, err) < 0 ? MS_ERR : 0;
  }
  ProtobufCMessage *m = ms_rpc__unpack(desc, bb, err);
  grpc_byte_buffer_destroy(bb);
  if (!m) {
    ms_rpc_stream_cancel(s);
    return ms_error_prefix(err, "stream `%s`", s->method);
  }
  *ret_msg = m;
  return 1;
}

int ms_rpc_stream_finish(ms_rpc_stream *s, ms_error **err) {
  return stream_status(s, err);
}

void ms_rpc_stream_cancel(ms_rpc_stream *s) {
  grpc_call_cancel(s->call, NULL);
}

void ms_rpc_stream_free(ms_rpc_stream *s) {
  if (!s)
    return;
  if (!s->status_done) {
    grpc_call_cancel(s->call, NULL);
    stream_status(s, NULL);
  }
  grpc_call_unref(s->call);
  cq_destroy(s->cq);
  grpc_metadata_array_destroy(&s->initial_md);
  grpc_metadata_array_destroy(&s->trailing_md);
  grpc_slice_unref(s->details);
  gpr_free((void *)s->error_string);
  pthread_mutex_destroy(&s->mu);
  free(s->method);
  free(s);
}
