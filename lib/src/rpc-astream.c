/* Asynchronous client streams on one completion queue (rpc-astream.h).
 *
 * Each stream has three operations that complete on the queue: the send (initial
 * metadata, the request, close), one read at a time, and the status. The status is
 * handed over only when neither the send nor a read is pending, so on_end is last. */
#include "meseta/rpc-astream.h"

#include <grpc/compression.h>
#include <grpc/support/alloc.h>
#include <pthread.h>
#include <string.h>

#include "meseta/alloc.h"

#include "rpc-internal.h"

struct ms_rpc_aqueue {
  grpc_completion_queue *cq;
  pthread_t thread;
};

struct ms_rpc_achannel {
  grpc_channel *ch;
  char *target;
};

typedef enum { OP_SEND, OP_RECV, OP_STATUS } op_kind;

/* A tag: which operation of which stream completed. */
typedef struct aop {
  ms_rpc_astream *st;
  op_kind kind;
} aop;

struct ms_rpc_astream {
  grpc_call *call;
  char *method, *target;
  const ProtobufCMessageDescriptor *desc;
  ms_rpc_astream_handlers h;
  void *arg;
  aop op_send, op_recv, op_status;
  pthread_mutex_t mu; /* the flags below, between the owner and the queue's thread */
  bool send_pending, recv_pending, status_got, eos, cancelled, ended;
  grpc_byte_buffer *send_bb, *recv_bb;
  grpc_metadata_array initial_md, trailing_md;
  grpc_status_code status;
  grpc_slice details;
  const char *error_string;
  ms_error *local; /* a message that could not be parsed: the call was cancelled for it */
};

/* ---- the queue's thread ---- */

static ms_error *end_error(ms_rpc_astream *st) {
  ms_error *err = NULL;
  if (st->local)
    return TAKE_PTR(st->local);
  if (st->status == GRPC_STATUS_OK)
    return NULL;
  size_t len = GRPC_SLICE_LENGTH(st->details);
  if (len)
    ms_error_set(&err, (ms_status)st->status, "%.*s", (int)len,
                 (const char *)GRPC_SLICE_START_PTR(st->details));
  else
    ms_error_set(&err, (ms_status)st->status, "%s from `%s`%s%s", ms_status_name((ms_status)st->status),
                 st->target, st->error_string ? ": " : "", st->error_string ? st->error_string : "");
  return err;
}

static void on_event(aop *op, bool ok) {
  ms_rpc_astream *st = op->st;
  grpc_byte_buffer *bb = NULL;
  pthread_mutex_lock(&st->mu);
  switch (op->kind) {
  case OP_SEND:
    st->send_pending = false;
    grpc_byte_buffer_destroy(TAKE_PTR(st->send_bb));
    break;
  case OP_RECV:
    st->recv_pending = false;
    bb = TAKE_PTR(st->recv_bb);
    if (!ok || !bb) {
      st->eos = true;
      if (bb)
        grpc_byte_buffer_destroy(TAKE_PTR(bb));
    }
    break;
  case OP_STATUS:
    st->status_got = true;
    break;
  }
  bool end = !bb && st->status_got && !st->send_pending && !st->recv_pending && !st->ended;
  if (end)
    st->ended = true;
  pthread_mutex_unlock(&st->mu);
  if (bb) {
    ms_error *err = NULL;
    ProtobufCMessage *m = ms_rpc__unpack(st->desc, bb, &err);
    grpc_byte_buffer_destroy(bb);
    if (m) {
      st->h.on_message(st, m, st->arg);
      return;
    }
    ms_error_prefix(&err, "stream `%s` from `%s`", st->method, st->target);
    pthread_mutex_lock(&st->mu);
    st->eos = true;
    if (!st->local)
      st->local = TAKE_PTR(err);
    end = st->status_got && !st->send_pending && !st->recv_pending && !st->ended; /* it came already */
    if (end)
      st->ended = true;
    pthread_mutex_unlock(&st->mu);
    ms_error_free(err);
    grpc_call_cancel(st->call, NULL); /* else the status comes next */
  }
  if (end)
    st->h.on_end(st, end_error(st), st->arg); /* st may be freed once this returns */
}

static void *aqueue_main(void *arg) {
  ms_rpc_aqueue *q = arg;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(q->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN)
      break;
    if (ev.type == GRPC_OP_COMPLETE)
      on_event(ev.tag, ev.success);
  }
  return NULL;
}

ms_rpc_aqueue *ms_rpc_aqueue_new(ms_error **err) {
  ms_rpc__init();
  ms_rpc_aqueue *q = ms_xcalloc(1, sizeof(*q));
  q->cq = grpc_completion_queue_create_for_next(NULL);
  int e = pthread_create(&q->thread, NULL, aqueue_main, q);
  if (e != 0) {
    grpc_completion_queue_shutdown(q->cq);
    grpc_completion_queue_destroy(q->cq);
    free(q);
    ms_rpc__shutdown();
    ms_error_set_errno(err, e, "starting a completion queue's thread");
    return NULL;
  }
  return q;
}

void ms_rpc_aqueue_free(ms_rpc_aqueue *q) {
  if (!q)
    return;
  grpc_completion_queue_shutdown(q->cq);
  pthread_join(q->thread, NULL);
  grpc_completion_queue_destroy(q->cq);
  free(q);
  ms_rpc__shutdown();
}

/* ---- channels ---- */

ms_rpc_achannel *ms_rpc_achannel_new(const char *target, const ms_rpc_channel_options *opts, ms_error **err) {
  grpc_channel *gch = ms_rpc__channel_create(target, opts, err); /* rpc-common.c */
  if (!gch)
    return NULL;
  ms_rpc_achannel *ch = ms_xcalloc(1, sizeof(*ch));
  ch->ch = gch;
  ch->target = ms_xstrdup(target);
  return ch;
}

void ms_rpc_achannel_free(ms_rpc_achannel *ch) {
  if (!ch)
    return;
  grpc_channel_destroy(ch->ch);
  free(ch->target);
  free(ch);
  ms_rpc__shutdown();
}

/* ---- streams ---- */

/* Starts one batch; on a refusal the call is cancelled and the op is not pending. */
static void start(ms_rpc_astream *st, const grpc_op *ops, size_t n, aop *tag, bool *pending) {
  *pending = true;
  if (grpc_call_start_batch(st->call, ops, n, tag, NULL) != GRPC_CALL_OK) {
    *pending = false;
    grpc_call_cancel(st->call, NULL);
  }
}

ms_rpc_astream *ms_rpc_astream_open(ms_rpc_aqueue *q, ms_rpc_achannel *ch, const char *method,
                                    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                                    const ms_rpc_call_options *opts, const ms_rpc_astream_handlers *h,
                                    void *arg, ms_error **err) {
  grpc_slice m = grpc_slice_from_copied_string(method);
  grpc_call *call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, q->cq, m, NULL,
                                             ms_rpc__deadline_after_ms(opts ? opts->timeout_ms : 0), NULL);
  grpc_slice_unref(m);
  if (!call) {
    ms_error_set(err, MS_INTERNAL, "stream `%s` to `%s` could not be created", method, ch->target);
    return NULL;
  }
  ms_rpc_astream *st = ms_xcalloc(1, sizeof(*st));
  st->call = call;
  st->method = ms_xstrdup(method);
  st->target = ms_xstrdup(ch->target);
  st->desc = resp_desc;
  st->h = *h;
  st->arg = arg;
  st->op_send = (aop){st, OP_SEND};
  st->op_recv = (aop){st, OP_RECV};
  st->op_status = (aop){st, OP_STATUS};
  st->details = grpc_empty_slice();
  st->status = GRPC_STATUS_UNKNOWN;
  pthread_mutex_init(&st->mu, NULL);
  grpc_metadata_array_init(&st->initial_md);
  grpc_metadata_array_init(&st->trailing_md);

  grpc_op so;
  memset(&so, 0, sizeof(so));
  so.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  so.data.recv_status_on_client.trailing_metadata = &st->trailing_md;
  so.data.recv_status_on_client.status = &st->status;
  so.data.recv_status_on_client.status_details = &st->details;
  so.data.recv_status_on_client.error_string = &st->error_string;
  if (grpc_call_start_batch(call, &so, 1, &st->op_status, NULL) != GRPC_CALL_OK) {
    ms_error_set(err, MS_INTERNAL, "stream `%s` to `%s` could not start", method, ch->target);
    st->ended = true;
    ms_rpc_astream_free(st);
    return NULL;
  }
  grpc_metadata md[16];
  size_t nmd = 0;
  for (const char *const *p = opts ? opts->metadata : NULL; p && p[0] && p[1] && nmd < 16; p += 2, nmd++) {
    memset(&md[nmd], 0, sizeof(md[nmd]));
    md[nmd].key = grpc_slice_from_static_string(p[0]);
    md[nmd].value = grpc_slice_from_static_string(p[1]);
  }
  st->send_bb = ms_rpc__pack(req);
  grpc_op ops[4];
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = nmd;
  ops[0].data.send_initial_metadata.metadata = md;
  ops[0].flags = opts && opts->wait_for_ready ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = st->send_bb;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &st->initial_md;
  pthread_mutex_lock(&st->mu);
  start(st, ops, 4, &st->op_send, &st->send_pending);
  pthread_mutex_unlock(&st->mu);
  ms_rpc_astream_read(st);
  return st;
}

void ms_rpc_astream_read(ms_rpc_astream *st) {
  pthread_mutex_lock(&st->mu);
  if (!st->ended && !st->eos && !st->cancelled && !st->recv_pending) {
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &st->recv_bb;
    start(st, &op, 1, &st->op_recv, &st->recv_pending);
  }
  pthread_mutex_unlock(&st->mu);
}

void ms_rpc_astream_cancel(ms_rpc_astream *st) {
  pthread_mutex_lock(&st->mu);
  st->cancelled = true;
  /* The status may have come while the owner held the last message, with no read
   * pending since: nothing else would end the stream. */
  bool end = st->status_got && !st->send_pending && !st->recv_pending && !st->ended;
  if (end)
    st->ended = true;
  pthread_mutex_unlock(&st->mu);
  grpc_call_cancel(st->call, NULL);
  if (end)
    st->h.on_end(st, end_error(st), st->arg);
}

void ms_rpc_astream_free(ms_rpc_astream *st) {
  if (!st)
    return;
  grpc_call_unref(st->call);
  if (st->send_bb)
    grpc_byte_buffer_destroy(st->send_bb);
  if (st->recv_bb)
    grpc_byte_buffer_destroy(st->recv_bb);
  grpc_metadata_array_destroy(&st->initial_md);
  grpc_metadata_array_destroy(&st->trailing_md);
  grpc_slice_unref(st->details);
  gpr_free((void *)st->error_string);
  ms_error_free(st->local);
  pthread_mutex_destroy(&st->mu);
  free(st->method);
  free(st->target);
  free(st);
}
