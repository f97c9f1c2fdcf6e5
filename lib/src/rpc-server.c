/* The server half of the gRPC layer.
 *
 * One thread drives the completion queue. Every registered method keeps one
 * request armed; a catch-all request answers unknown methods with UNIMPLEMENTED
 * at once. A call's sends go through a bounded queue, one SEND batch in flight.
 * A client stream has one RECV in flight at most, and none while the handler holds
 * max_held of its messages: gRPC's HTTP/2 window then stops the client.
 * When a unary handler answers inside on_start, its reply, status and the
 * close-on-server wait go out as one batch: the common case costs what a
 * hand-written gRPC core loop costs. */
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"

#include "rpc-internal.h"

typedef enum tag_kind {
  TAG_SLOT,
  TAG_UNKNOWN,
  TAG_RECV,
  TAG_SEND,
  TAG_CLOSE,
  TAG_SHUTDOWN,
  TAG_REJECT
} tag_kind;

typedef struct tag {
  tag_kind kind;
  void *ptr;
} tag;

typedef struct method_entry {
  ms_rpc_method h;
  ms_call_kind kind;
  const ProtobufCMessageDescriptor *input;
  void *userdata;
  char *path;
  void *registered; /* grpc_server_register_method handle */
} method_entry;

/* One armed request for a registered method (or, with m == NULL, for any other). */
typedef struct slot {
  tag t;
  method_entry *m;
  grpc_call *call;
  gpr_timespec deadline;
  grpc_metadata_array md;
  grpc_byte_buffer *payload;
  grpc_call_details details; /* unregistered only */
} slot;

/* A call answered UNIMPLEMENTED (or refused) without a handler. */
typedef struct reject {
  tag t;
  grpc_call *call;
  grpc_slice details;
  int cancelled;
} reject;

struct ms_rpc_call {
  ms_rpc_server *srv;
  grpc_call *call;
  method_entry *m;
  gpr_timespec deadline;
  grpc_metadata_array md; /* as received; values copied out on demand */
  char **md_copies;
  size_t n_md_copies;
  char *peer, *identity;
  bool identity_loaded;
  void *data;

  pthread_mutex_t mu;
  size_t max_queued;
  int64_t max_msg;
  int refs;    /* the layer's (until close) + ms_rpc_call_ref's */
  int batches; /* in flight */
  bool in_start, done, cancelled, done_notified, close_started, recv_stopped;
  /* Flow control on the client's stream: messages handed on (ms_rpc_call_hold) and not
   * consumed yet; at max_held the next RECV waits (recv_paused) for a consume. */
  size_t held, max_held;
  bool recv_paused;
  int close_cancelled;

  grpc_byte_buffer **q; /* pending sends, a ring; starts in q_inline */
  grpc_byte_buffer *q_inline[4];
  size_t qhead, qlen, qcap;
  bool sending, initial_md_sent, finishing, status_sent, close_in_send;
  ms_status fin_code;
  grpc_slice fin_details;
  grpc_byte_buffer *in_flight;

  grpc_byte_buffer *recv_bb;
  tag t_recv, t_send, t_close;
};

typedef struct service_entry {
  const ProtobufCServiceDescriptor *desc;
} service_entry;

struct ms_rpc_server {
  grpc_server *server;
  grpc_completion_queue *cq;
  pthread_t thread;
  bool started, joined;
  ms_descdb *db;
  char **addrs;
  size_t n_addrs;
  service_entry *services;
  size_t n_services;
  method_entry **methods;
  size_t n_methods;
  slot *slots; /* n_methods + 1 (the catch-all last) */
  size_t max_queued;
  size_t max_held;
  int64_t max_msg;
  struct ms_rpc_health *health;

  pthread_mutex_t mu;
  pthread_cond_t cond;
  bool shutting_down, shutdown_done, thread_done;
  size_t live_calls;   /* grpc calls not yet released */
  size_t call_structs; /* ms_rpc_call structs not yet freed (user references) */
  size_t armed;        /* requests armed */
  tag t_shutdown;
};

/* ---- small helpers ---------------------------------------------------------- */

struct ms_rpc_health **ms_rpc__server_health_slot(ms_rpc_server *srv) {
  return &srv->health;
}
size_t ms_rpc__server_service_count(const ms_rpc_server *srv) {
  return srv->n_services;
}
const char *ms_rpc__server_service_name(const ms_rpc_server *srv, size_t i) {
  return i < srv->n_services ? srv->services[i].desc->name : NULL;
}
const ms_descdb *ms_rpc_server_descdb(const ms_rpc_server *srv) {
  return srv->db;
}
const char *ms_rpc_server_address(const ms_rpc_server *srv, size_t i) {
  return i < srv->n_addrs ? srv->addrs[i] : NULL;
}

static void arm(ms_rpc_server *srv, slot *s) {
  grpc_metadata_array_init(&s->md);
  s->call = NULL;
  s->payload = NULL;
  grpc_call_error e;
  if (s->m) {
    e = grpc_server_request_registered_call(srv->server, s->m->registered, &s->call, &s->deadline, &s->md,
                                            s->m->kind & MS_CALL_CLIENT_STREAM ? NULL : &s->payload, srv->cq,
                                            srv->cq, &s->t);
  } else {
    grpc_call_details_init(&s->details);
    e = grpc_server_request_call(srv->server, &s->call, &s->details, &s->md, srv->cq, srv->cq, &s->t);
  }
  if (e == GRPC_CALL_OK) {
    pthread_mutex_lock(&srv->mu);
    srv->armed++;
    pthread_mutex_unlock(&srv->mu);
  } else {
    grpc_metadata_array_destroy(&s->md);
    if (!s->m)
      grpc_call_details_destroy(&s->details);
  }
}

static void call_released(ms_rpc_server *srv) {
  pthread_mutex_lock(&srv->mu);
  if (--srv->live_calls == 0 && srv->shutting_down)
    pthread_cond_broadcast(&srv->cond);
  pthread_mutex_unlock(&srv->mu);
}

/* ---- rejecting calls without a handler --------------------------------------- */

static void reject_call(ms_rpc_server *srv, grpc_call *call, ms_status code, const char *msg) {
  reject *r = ms_xcalloc(1, sizeof(*r));
  r->t = (tag){TAG_REJECT, r};
  r->call = call;
  r->details = grpc_slice_from_copied_string(msg);
  grpc_op ops[3];
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[1].data.send_status_from_server.status = (grpc_status_code)code;
  ops[1].data.send_status_from_server.status_details = &r->details;
  ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[2].data.recv_close_on_server.cancelled = &r->cancelled;
  pthread_mutex_lock(&srv->mu);
  srv->live_calls++;
  pthread_mutex_unlock(&srv->mu);
  if (grpc_call_start_batch(call, ops, 3, &r->t, NULL) != GRPC_CALL_OK) {
    grpc_call_unref(call);
    grpc_slice_unref(r->details);
    free(r);
    call_released(srv);
  }
}

static void reject_done(ms_rpc_server *srv, reject *r) {
  grpc_call_unref(r->call);
  grpc_slice_unref(r->details);
  free(r);
  call_released(srv);
}

/* ---- calls ------------------------------------------------------------------ */

static void call_free(ms_rpc_call *c) {
  ms_rpc_server *srv = c->srv;
  for (size_t i = 0; i < c->qlen; i++)
    grpc_byte_buffer_destroy(c->q[(c->qhead + i) % c->qcap]);
  if (c->q != c->q_inline)
    free(c->q);
  if (c->finishing)
    grpc_slice_unref(c->fin_details);
  grpc_metadata_array_destroy(&c->md);
  for (size_t i = 0; i < c->n_md_copies; i++)
    free(c->md_copies[i]);
  free(c->md_copies);
  free(c->peer);
  free(c->identity);
  pthread_mutex_destroy(&c->mu);
  free(c);
  pthread_mutex_lock(&srv->mu);
  if (--srv->call_structs == 0)
    pthread_cond_broadcast(&srv->cond);
  pthread_mutex_unlock(&srv->mu);
}

/* Releases the grpc call once nothing is in flight and the call is over, and frees
 * our struct once nobody holds it. Called with c->mu held; unlocks it. */
static void settle_unlock(ms_rpc_call *c) {
  bool release = c->call && c->done && c->batches == 0;
  grpc_call *gc = release ? c->call : NULL;
  if (release)
    c->call = NULL;
  bool free_it = c->refs == 0 && c->batches == 0 && !c->call;
  ms_rpc_server *srv = c->srv;
  pthread_mutex_unlock(&c->mu);
  if (gc) {
    grpc_call_unref(gc);
    call_released(srv);
  }
  if (free_it)
    call_free(c);
}

static void drop_queue_locked(ms_rpc_call *c) {
  for (size_t i = 0; i < c->qlen; i++)
    grpc_byte_buffer_destroy(c->q[(c->qhead + i) % c->qcap]);
  c->qlen = 0;
}

static void start_close_locked(ms_rpc_call *c);

/* Starts the next SEND batch if none is in flight. Called with c->mu held. */
static void pump_locked(ms_rpc_call *c) {
  if (c->sending || c->in_start || c->status_sent || !c->call || c->cancelled)
    return;
  if (c->qlen == 0 && !c->finishing)
    return;
  grpc_op ops[4];
  size_t n = 0;
  memset(ops, 0, sizeof(ops));
  if (!c->initial_md_sent) {
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    c->initial_md_sent = true;
  }
  if (c->qlen) {
    c->in_flight = c->q[c->qhead];
    c->qhead = (c->qhead + 1) % c->qcap;
    c->qlen--;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->in_flight;
  }
  if (c->finishing && c->qlen == 0) {
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)c->fin_code;
    ops[n++].data.send_status_from_server.status_details = &c->fin_details;
    c->status_sent = true;
    if (!c->close_started) {
      /* Unary fast path: the close wait rides along with the reply. */
      ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
      ops[n++].data.recv_close_on_server.cancelled = &c->close_cancelled;
      c->close_started = true;
      c->close_in_send = true;
    }
  }
  c->sending = true;
  c->batches++;
  if (grpc_call_start_batch(c->call, ops, n, &c->t_send, NULL) != GRPC_CALL_OK) {
    /* Only a programming error gets here; fail the call rather than hang it, and
     * still wait for its close so that it ends (and is freed) like any other. */
    c->sending = false;
    c->batches--;
    if (c->in_flight) {
      grpc_byte_buffer_destroy(c->in_flight);
      c->in_flight = NULL;
    }
    grpc_call_cancel(c->call, NULL);
    if (c->close_in_send) {
      c->close_in_send = false;
      c->close_started = false;
      start_close_locked(c);
    }
  }
}

static void start_close_locked(ms_rpc_call *c) {
  if (c->close_started || !c->call)
    return;
  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  op.data.recv_close_on_server.cancelled = &c->close_cancelled;
  c->close_started = true;
  c->batches++;
  if (grpc_call_start_batch(c->call, &op, 1, &c->t_close, NULL) != GRPC_CALL_OK)
    c->batches--;
}

static void start_recv_locked(ms_rpc_call *c) {
  if (c->recv_stopped || c->done || !c->call)
    return;
  if (c->held >= c->max_held) {
    c->recv_paused = true; /* ms_rpc_call_consumed arms it */
    return;
  }
  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &c->recv_bb;
  c->batches++;
  if (grpc_call_start_batch(c->call, &op, 1, &c->t_recv, NULL) != GRPC_CALL_OK) {
    c->batches--;
    c->recv_stopped = true;
  }
}

/* Whether c can queue one more message of `size` bytes (mu held; NULL msg: the size
 * is known), making room in the ring for it. */
static int send_room_locked(ms_rpc_call *c, const ProtobufCMessage *msg, size_t *size, ms_error **err) {
  if (c->done || c->finishing)
    return ms_error_set(err, MS_CANCELLED, "call `%s` is over", c->m ? c->m->path : "?");
  if (c->qlen >= c->max_queued)
    return ms_error_set(err, MS_RESOURCE_EXHAUSTED, "call `%s`: %zu messages already wait to be sent",
                        c->m->path, c->qlen);
  if (msg)
    *size = protobuf_c_message_get_packed_size(msg);
  if ((int64_t)*size > c->max_msg)
    return ms_error_set(err, MS_RESOURCE_EXHAUSTED,
                        "call `%s`: a %zu-byte message is over the %lld-byte limit", c->m->path, *size,
                        (long long)c->max_msg);
  if (c->qlen == c->qcap) {
    size_t ncap = c->qcap ? c->qcap * 2 : 8;
    grpc_byte_buffer **nq = ms_xmalloc(ncap * sizeof(*nq));
    for (size_t i = 0; i < c->qlen; i++)
      nq[i] = c->q[(c->qhead + i) % c->qcap];
    if (c->q != c->q_inline)
      free(c->q);
    c->q = nq;
    c->qcap = ncap;
    c->qhead = 0;
  }
  return 0;
}

int ms_rpc_call_send(ms_rpc_call *c, const ProtobufCMessage *msg, ms_error **err) {
  pthread_mutex_lock(&c->mu);
  size_t size;
  if (send_room_locked(c, msg, &size, err) < 0) {
    pthread_mutex_unlock(&c->mu);
    return MS_ERR;
  }
  c->q[(c->qhead + c->qlen) % c->qcap] = ms_rpc__pack_sized(msg, size);
  c->qlen++;
  pump_locked(c);
  pthread_mutex_unlock(&c->mu);
  return 0;
}

int ms_rpc_call_send_bytes(ms_rpc_call *c, const uint8_t *head, size_t head_len, const uint8_t *data,
                           size_t len, void (*release)(void *arg), void *arg, ms_error **err) {
  grpc_slice parts[2] = {grpc_slice_from_copied_buffer((const char *)head, head_len),
                         grpc_slice_new_with_user_data((void *)data, len, release, arg)};
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(parts, 2); /* takes its own references */
  grpc_slice_unref(parts[0]);
  grpc_slice_unref(parts[1]);
  pthread_mutex_lock(&c->mu);
  size_t size = head_len + len;
  if (send_room_locked(c, NULL, &size, err) < 0) {
    pthread_mutex_unlock(&c->mu);
    grpc_byte_buffer_destroy(bb); /* releases data */
    return MS_ERR;
  }
  c->q[(c->qhead + c->qlen) % c->qcap] = bb;
  c->qlen++;
  pump_locked(c);
  pthread_mutex_unlock(&c->mu);
  return 0;
}

void ms_rpc_call_finish(ms_rpc_call *c, ms_status code, const char *message) {
  pthread_mutex_lock(&c->mu);
  if (!c->finishing && !c->done) {
    c->finishing = true;
    c->fin_code = code;
    c->fin_details = message && *message ? grpc_slice_from_copied_string(message) : grpc_empty_slice();
    c->recv_stopped = true;
    pump_locked(c);
  }
  pthread_mutex_unlock(&c->mu);
}

void ms_rpc_call_finish_error(ms_rpc_call *c, const ms_error *err) {
  if (!err)
    ms_rpc_call_finish(c, MS_OK, NULL);
  else
    ms_rpc_call_finish(c, err->code, err->msg);
}

int ms_rpc_call_reply(ms_rpc_call *c, const ProtobufCMessage *resp, ms_error **err) {
  if (ms_rpc_call_send(c, resp, err) < 0)
    return MS_ERR;
  ms_rpc_call_finish(c, MS_OK, NULL);
  return 0;
}

void ms_rpc_call_hold(ms_rpc_call *c) {
  pthread_mutex_lock(&c->mu);
  c->held++;
  pthread_mutex_unlock(&c->mu);
}

void ms_rpc_call_consumed(ms_rpc_call *c) {
  pthread_mutex_lock(&c->mu);
  if (c->held)
    c->held--;
  if (c->recv_paused && c->held < c->max_held) {
    c->recv_paused = false;
    start_recv_locked(c);
  }
  pthread_mutex_unlock(&c->mu);
}

void ms_rpc_call_ref(ms_rpc_call *c) {
  pthread_mutex_lock(&c->mu);
  c->refs++;
  pthread_mutex_unlock(&c->mu);
}

void ms_rpc_call_unref(ms_rpc_call *c) {
  if (!c)
    return;
  pthread_mutex_lock(&c->mu);
  c->refs--;
  settle_unlock(c);
}

void *ms_rpc_call_userdata(const ms_rpc_call *c) {
  return c->m ? c->m->userdata : NULL;
}
void *ms_rpc_call_data(const ms_rpc_call *c) {
  return c->data;
}
void ms_rpc_call_set_data(ms_rpc_call *c, void *data) {
  c->data = data;
}
const char *ms_rpc_call_method(const ms_rpc_call *c) {
  return c->m->path;
}
const void *ms_rpc_call_method_arg(const ms_rpc_call *c) {
  return c->m ? c->m->h.arg : NULL;
}
int64_t ms_rpc_call_deadline_ms(const ms_rpc_call *c) {
  return ms_rpc__ms_until(c->deadline);
}

bool ms_rpc_call_is_done(const ms_rpc_call *c) {
  pthread_mutex_lock((pthread_mutex_t *)&c->mu);
  bool d = c->done || c->finishing;
  pthread_mutex_unlock((pthread_mutex_t *)&c->mu);
  return d;
}

const char *ms_rpc_call_metadata(ms_rpc_call *c, const char *key) {
  size_t klen = strlen(key);
  for (size_t i = 0; i < c->md.count; i++) {
    grpc_slice k = c->md.metadata[i].key;
    if (GRPC_SLICE_LENGTH(k) == klen && memcmp(GRPC_SLICE_START_PTR(k), key, klen) == 0) {
      char *v = ms_rpc__slice_strdup(c->md.metadata[i].value);
      pthread_mutex_lock(&c->mu);
      c->md_copies = ms_xrealloc(c->md_copies, (c->n_md_copies + 1) * sizeof(char *));
      c->md_copies[c->n_md_copies++] = v;
      pthread_mutex_unlock(&c->mu);
      return v;
    }
  }
  return NULL;
}

const char *ms_rpc_call_peer(ms_rpc_call *c) {
  pthread_mutex_lock(&c->mu);
  if (!c->peer && c->call) {
    char *p = grpc_call_get_peer(c->call);
    c->peer = ms_xstrdup(p);
    gpr_free(p);
  }
  pthread_mutex_unlock(&c->mu);
  return c->peer ? c->peer : "";
}

static char *identity_of(grpc_call *call) {
  grpc_auth_context *ctx = grpc_call_auth_context(call);
  if (!ctx)
    return NULL;
  char *found = NULL;
  /* Prefer the common name; fall back to whatever the context calls the identity. */
  grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_CN_PROPERTY_NAME);
  const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
  if (!p) {
    it = grpc_auth_context_peer_identity(ctx);
    p = grpc_auth_property_iterator_next(&it);
  }
  if (p && grpc_auth_context_peer_is_authenticated(ctx))
    found = ms_xstrndup(p->value, p->value_length);
  grpc_auth_context_release(ctx);
  return found;
}

const char *ms_rpc_call_peer_identity(ms_rpc_call *c) {
  pthread_mutex_lock(&c->mu);
  if (!c->identity_loaded && c->call) {
    c->identity = identity_of(c->call);
    c->identity_loaded = true;
  }
  pthread_mutex_unlock(&c->mu);
  return c->identity;
}

static void fail_call(ms_rpc_call *c, ms_error *err) {
  ms_log_debug(NULL, "call `%s` failed: %s %s", c->m->path, ms_status_name(err->code), err->msg);
  ms_rpc_call_finish_error(c, err);
  ms_error_free(err);
}

/* A registered method's request arrived: build the call and run on_start. */
static void call_arrived(ms_rpc_server *srv, slot *s) {
  ms_rpc_call *c = ms_xcalloc(1, sizeof(*c));
  pthread_mutex_init(&c->mu, NULL);
  c->srv = srv;
  c->call = s->call;
  c->m = s->m;
  c->deadline = s->deadline;
  c->refs = 1;
  c->q = c->q_inline;
  c->qcap = MS_ARRAY_SIZE(c->q_inline);
  c->max_queued = srv->max_queued;
  c->max_held = srv->max_held;
  c->max_msg = srv->max_msg;
  c->t_recv = (tag){TAG_RECV, c};
  c->t_send = (tag){TAG_SEND, c};
  c->t_close = (tag){TAG_CLOSE, c};
  c->md = s->md; /* moved: the slot's array is initialised again when re-armed */
  grpc_byte_buffer *payload = s->payload;
  s->payload = NULL;
  pthread_mutex_lock(&srv->mu);
  srv->live_calls++;
  srv->call_structs++;
  bool rearm = !srv->shutting_down;
  pthread_mutex_unlock(&srv->mu);
  if (rearm)
    arm(srv, s);

  method_entry *m = c->m;
  ms_error *err = NULL;
  c->in_start = true;
  if (m->kind & MS_CALL_CLIENT_STREAM) {
    if (m->h.on_start && m->h.on_start(c, NULL, &err) < 0)
      fail_call(c, TAKE_PTR(err));
  } else if (!payload) {
    ms_rpc_call_finish(c, MS_INVALID_ARGUMENT, "the request message is missing");
  } else {
    ProtobufCMessage *req = ms_rpc__unpack_request(m->input, payload, &err);
    if (!req) {
      ms_error_prefix(&err, "request to `%s`", m->path);
      fail_call(c, TAKE_PTR(err));
    } else {
      if (m->h.on_start(c, req, &err) < 0)
        fail_call(c, TAKE_PTR(err));
      protobuf_c_message_free_unpacked(req, NULL);
    }
  }
  if (payload)
    grpc_byte_buffer_destroy(payload);
  pthread_mutex_lock(&c->mu);
  c->in_start = false;
  pump_locked(c); /* may carry the close wait along (unary fast path) */
  start_close_locked(c);
  if (m->kind & MS_CALL_CLIENT_STREAM)
    start_recv_locked(c);
  pthread_mutex_unlock(&c->mu);
}

static void notify_done(ms_rpc_call *c) {
  /* Called with c->mu held; unlocks and relocks around the callback, during which
   * the layer's own reference (dropped only after it) keeps c alive. */
  if (c->done_notified)
    return;
  c->done_notified = true;
  bool cancelled = c->cancelled;
  pthread_mutex_unlock(&c->mu);
  if (c->m->h.on_done)
    c->m->h.on_done(c, cancelled);
  pthread_mutex_lock(&c->mu);
  c->refs--; /* the layer's own reference */
}

static void close_arrived_locked(ms_rpc_call *c) {
  c->done = true;
  c->cancelled = c->close_cancelled != 0 || !c->status_sent;
  if (c->cancelled)
    drop_queue_locked(c);
  notify_done(c);
}

static void send_done(ms_rpc_call *c, bool ok) {
  pthread_mutex_lock(&c->mu);
  c->batches--;
  c->sending = false;
  if (c->in_flight) {
    grpc_byte_buffer_destroy(c->in_flight);
    c->in_flight = NULL;
  }
  if (!ok) {
    drop_queue_locked(c); /* the client is gone; close will tell */
    c->status_sent = true;
  }
  if (c->close_in_send) {
    c->close_in_send = false;
    close_arrived_locked(c);
    settle_unlock(c);
    return;
  }
  pump_locked(c);
  bool drained = ok && !c->sending && c->qlen == 0 && !c->finishing && !c->done;
  if (drained && c->m->h.on_drain) {
    c->refs++; /* c must outlive the callback, whatever other threads drop meanwhile */
    pthread_mutex_unlock(&c->mu);
    c->m->h.on_drain(c);
    pthread_mutex_lock(&c->mu);
    c->refs--;
  }
  settle_unlock(c);
}

static void recv_done(ms_rpc_call *c, bool ok) {
  pthread_mutex_lock(&c->mu);
  c->batches--;
  grpc_byte_buffer *bb = c->recv_bb;
  c->recv_bb = NULL;
  bool live = ok && !c->done && !c->finishing;
  if (!live) {
    if (bb)
      grpc_byte_buffer_destroy(bb);
    c->recv_stopped = true;
    settle_unlock(c);
    return;
  }
  c->refs++; /* c must outlive the callbacks, whatever other threads drop meanwhile */
  pthread_mutex_unlock(&c->mu);

  ms_error *err = NULL;
  if (bb) {
    ProtobufCMessage *msg = ms_rpc__unpack_request(c->m->input, bb, &err);
    if (!msg) {
      ms_error_prefix(&err, "message to `%s`", c->m->path);
      fail_call(c, TAKE_PTR(err));
    } else {
      if (c->m->h.on_message && c->m->h.on_message(c, msg, &err) < 0)
        fail_call(c, TAKE_PTR(err));
      protobuf_c_message_free_unpacked(msg, NULL);
    }
  } else {
    if (c->m->h.on_half_close && c->m->h.on_half_close(c, &err) < 0)
      fail_call(c, TAKE_PTR(err));
  }
  if (bb)
    grpc_byte_buffer_destroy(bb);
  pthread_mutex_lock(&c->mu);
  c->refs--;
  if (!bb)
    c->recv_stopped = true;
  start_recv_locked(c);
  settle_unlock(c);
}

static void close_done(ms_rpc_call *c) {
  pthread_mutex_lock(&c->mu);
  c->batches--;
  close_arrived_locked(c);
  settle_unlock(c);
}

/* ---- the server thread --------------------------------------------------------- */

static bool finished(ms_rpc_server *srv) {
  pthread_mutex_lock(&srv->mu);
  bool f = srv->shutdown_done && srv->live_calls == 0 && srv->armed == 0;
  pthread_mutex_unlock(&srv->mu);
  return f;
}

static void *server_main(void *arg) {
  ms_rpc_server *srv = arg;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN)
      break;
    if (ev.type != GRPC_OP_COMPLETE)
      continue;
    tag *t = ev.tag;
    switch (t->kind) {
    case TAG_SLOT:
    case TAG_UNKNOWN: {
      slot *s = t->ptr;
      pthread_mutex_lock(&srv->mu);
      srv->armed--;
      pthread_mutex_unlock(&srv->mu);
      if (!ev.success) {
        grpc_metadata_array_destroy(&s->md);
        if (!s->m)
          grpc_call_details_destroy(&s->details);
        if (s->payload)
          grpc_byte_buffer_destroy(s->payload);
        break;
      }
      if (s->m) {
        call_arrived(srv, s);
      } else {
        _cleanup_free_ char *path = ms_rpc__slice_strdup(s->details.method);
        _cleanup_free_ char *msg = ms_xasprintf("method `%s` is not served here", path);
        grpc_call *call = s->call;
        grpc_metadata_array_destroy(&s->md);
        grpc_call_details_destroy(&s->details);
        pthread_mutex_lock(&srv->mu);
        bool rearm = !srv->shutting_down;
        pthread_mutex_unlock(&srv->mu);
        if (rearm)
          arm(srv, s);
        reject_call(srv, call, MS_UNIMPLEMENTED, msg);
      }
      break;
    }
    case TAG_REJECT:
      reject_done(srv, t->ptr);
      break;
    case TAG_RECV:
      recv_done(t->ptr, ev.success);
      break;
    case TAG_SEND:
      send_done(t->ptr, ev.success);
      break;
    case TAG_CLOSE:
      close_done(t->ptr);
      break;
    case TAG_SHUTDOWN:
      pthread_mutex_lock(&srv->mu);
      srv->shutdown_done = true;
      pthread_cond_broadcast(&srv->cond);
      pthread_mutex_unlock(&srv->mu);
      break;
    }
    if (finished(srv)) {
      grpc_completion_queue_shutdown(srv->cq);
    }
  }
  pthread_mutex_lock(&srv->mu);
  srv->thread_done = true;
  pthread_cond_broadcast(&srv->cond);
  pthread_mutex_unlock(&srv->mu);
  return NULL;
}

/* ---- construction ---------------------------------------------------------------- */

ms_rpc_server *ms_rpc_server_new(const ms_rpc_server_options *opts, ms_error **err) {
  if (!opts || opts->n_listen == 0) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "a server needs at least one listen address");
    return NULL;
  }
  ms_rpc__init();
  ms_rpc_server *srv = ms_xcalloc(1, sizeof(*srv));
  pthread_mutex_init(&srv->mu, NULL);
  pthread_cond_init(&srv->cond, NULL);
  srv->t_shutdown = (tag){TAG_SHUTDOWN, srv};
  srv->max_queued = opts->max_queued_sends ? opts->max_queued_sends : 1024;
  srv->max_held = opts->max_held_messages ? opts->max_held_messages : MS_RPC_DEFAULT_MAX_HELD;
  srv->max_msg = opts->max_message_bytes > 0 ? opts->max_message_bytes : MS_RPC_DEFAULT_MAX_MESSAGE;
  srv->db = ms_descdb_new();
  if (ms_descdb_add_set(srv->db, ms_descriptor_set, ms_descriptor_set_len, err) < 0)
    goto fail;

  grpc_arg args[] = {
      {.type = GRPC_ARG_INTEGER,
       .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
       .value.integer = (int)srv->max_msg},
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, .value.integer = (int)srv->max_msg},
      /* Our clients ping every 30 s to keep long streams honest: allow it. */
      {.type = GRPC_ARG_INTEGER,
       .key = GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
       .value.integer = 10000},
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, .value.integer = 1},
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_TIME_MS, .value.integer = 60000},
      /* gRPC core sets SO_REUSEPORT unless told not to: a second server on the same
       * port would bind silently and take half the connections. */
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ALLOW_REUSEPORT, .value.integer = opts->reuse_port ? 1 : 0},
  };
  grpc_channel_args cargs = {.num_args = MS_ARRAY_SIZE(args), .args = args};
  srv->server = grpc_server_create(&cargs, NULL);
  srv->cq = grpc_completion_queue_create_for_next(NULL);
  grpc_server_register_completion_queue(srv->server, srv->cq, NULL);

  srv->addrs = ms_xcalloc(opts->n_listen, sizeof(char *));
  for (size_t i = 0; i < opts->n_listen; i++) {
    const char *a = opts->listen[i];
    /* gRPC core replaces a unix socket's file even while a server answers on it. */
    if (strncmp(a, "unix:", 5) == 0 && !opts->reuse_port && ms_rpc__unix_in_use(a)) {
      ms_rpc__listen_error(a, err);
      goto fail;
    }
    grpc_server_credentials *creds = ms_rpc__server_creds(opts->tls, err);
    if (!creds)
      goto fail;
    int port = grpc_server_add_http2_port(srv->server, a, creds);
    grpc_server_credentials_release(creds);
    if (port <= 0) {
      ms_rpc__listen_error(a, err);
      goto fail;
    }
    if (strncmp(a, "unix:", 5) == 0) {
      srv->addrs[i] = ms_xstrdup(a);
    } else {
      const char *colon = strrchr(a, ':');
      size_t hostlen = colon ? (size_t)(colon - a) : strlen(a);
      srv->addrs[i] = ms_xasprintf("%.*s:%d", (int)hostlen, a, port);
    }
    srv->n_addrs++;
  }
  return srv;
fail:
  ms_rpc_server_free(srv);
  return NULL;
}

int ms_rpc_server_add_descriptors(ms_rpc_server *srv, const uint8_t *set, size_t len, ms_error **err) {
  if (srv->started)
    return ms_error_set(err, MS_FAILED_PRECONDITION, "descriptors must be added before the server starts");
  return ms_descdb_add_set(srv->db, set, len, err);
}

int ms_rpc_server_add_service(ms_rpc_server *srv, const ProtobufCServiceDescriptor *desc,
                              const ms_rpc_method *methods, size_t n, void *userdata, ms_error **err) {
  if (srv->started)
    return ms_error_set(err, MS_FAILED_PRECONDITION, "service `%s` must be added before the server starts",
                        desc->name);
  for (size_t i = 0; i < srv->n_services; i++)
    if (strcmp(srv->services[i].desc->name, desc->name) == 0)
      return ms_error_set(err, MS_ALREADY_EXISTS, "service `%s` is already hosted", desc->name);
  for (size_t i = 0; i < n; i++) {
    const ProtobufCMethodDescriptor *md = NULL;
    for (unsigned j = 0; j < desc->n_methods; j++)
      if (strcmp(desc->methods[j].name, methods[i].name) == 0)
        md = &desc->methods[j];
    if (!md)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "service `%s` has no method `%s`", desc->name,
                          methods[i].name);
    ms_call_kind kind;
    if (ms_descdb_method_kind(srv->db, desc->name, md->name, &kind, err) < 0)
      return ms_error_prefix(err, "service `%s` (add its descriptor set first)", desc->name);
    bool streaming_in = kind & MS_CALL_CLIENT_STREAM;
    if (!methods[i].on_start && !streaming_in)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "method `%s.%s` needs on_start", desc->name, md->name);
    method_entry *m = ms_xcalloc(1, sizeof(*m));
    m->h = methods[i];
    m->kind = kind;
    m->input = md->input;
    m->userdata = userdata;
    m->path = ms_rpc_method_path(desc, md->name);
    m->registered = grpc_server_register_method(
        srv->server, m->path, NULL,
        streaming_in ? GRPC_SRM_PAYLOAD_NONE : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    srv->methods = ms_xrealloc(srv->methods, (srv->n_methods + 1) * sizeof(*srv->methods));
    srv->methods[srv->n_methods++] = m;
  }
  srv->services = ms_xrealloc(srv->services, (srv->n_services + 1) * sizeof(*srv->services));
  srv->services[srv->n_services++] = (service_entry){.desc = desc};
  ms_rpc__health_set(srv, desc->name, true);
  return 0;
}

int ms_rpc_server_start(ms_rpc_server *srv, ms_error **err) {
  if (srv->started)
    return ms_error_set(err, MS_FAILED_PRECONDITION, "the server is already started");
  if (ms_rpc__health_register(srv, err) < 0 || ms_rpc__reflection_register(srv, err) < 0)
    return MS_ERR;
  ms_rpc__health_set(srv, "", true);
  grpc_server_start(srv->server);
  srv->slots = ms_xcalloc(srv->n_methods + 1, sizeof(slot));
  for (size_t i = 0; i <= srv->n_methods; i++) {
    slot *s = &srv->slots[i];
    s->m = i < srv->n_methods ? srv->methods[i] : NULL;
    s->t = (tag){s->m ? TAG_SLOT : TAG_UNKNOWN, s};
    arm(srv, s);
  }
  srv->started = true;
  int e = pthread_create(&srv->thread, NULL, server_main, srv);
  if (e != 0) {
    srv->started = false;
    return ms_error_set_errno(err, e, "start the server thread");
  }
  return 0;
}

void ms_rpc_server_set_health(ms_rpc_server *srv, const char *service, bool serving) {
  ms_rpc__health_set(srv, service, serving);
}

void ms_rpc_server_shutdown(ms_rpc_server *srv, int64_t grace_ms) {
  pthread_mutex_lock(&srv->mu);
  bool first = srv->started && !srv->shutting_down;
  srv->shutting_down = true;
  pthread_mutex_unlock(&srv->mu);
  if (first) {
    ms_rpc__health_shutdown(srv);
    grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->t_shutdown);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    int64_t ns = until.tv_nsec + (grace_ms > 0 ? grace_ms : 0) % 1000 * 1000000;
    until.tv_sec += (grace_ms > 0 ? grace_ms : 0) / 1000 + ns / 1000000000;
    until.tv_nsec = ns % 1000000000;
    /* gRPC core's shutdown also waits (up to ~5 s) for clients to hang up idle
     * connections, which grpcio does not do. Once no call is in flight there is
     * nothing left to finish: cut them. */
    pthread_mutex_lock(&srv->mu);
    while (!srv->shutdown_done && srv->live_calls > 0 &&
           pthread_cond_timedwait(&srv->cond, &srv->mu, &until) == 0) {
    }
    bool cut = !srv->shutdown_done;
    pthread_mutex_unlock(&srv->mu);
    if (cut)
      grpc_server_cancel_all_calls(srv->server);
  }
  pthread_mutex_lock(&srv->mu);
  bool join = srv->started && !srv->joined;
  srv->joined = true;
  pthread_mutex_unlock(&srv->mu);
  if (join)
    pthread_join(srv->thread, NULL);
}

void ms_rpc_server_free(ms_rpc_server *srv) {
  if (!srv)
    return;
  if (srv->started) {
    ms_rpc_server_shutdown(srv, 0);
    /* Calls that other threads still reference point into the server. */
    pthread_mutex_lock(&srv->mu);
    while (srv->call_structs > 0)
      pthread_cond_wait(&srv->cond, &srv->mu);
    pthread_mutex_unlock(&srv->mu);
  } else if (srv->server) {
    /* Never started: nothing is in flight. */
    grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->t_shutdown);
    grpc_server_cancel_all_calls(srv->server);
    grpc_completion_queue_shutdown(srv->cq);
    while (grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
  }
  if (srv->server)
    grpc_server_destroy(srv->server);
  if (srv->cq)
    grpc_completion_queue_destroy(srv->cq);
  ms_rpc__health_free(srv);
  for (size_t i = 0; i < srv->n_methods; i++) {
    free(srv->methods[i]->path);
    free(srv->methods[i]);
  }
  free(srv->methods);
  free(srv->slots);
  free(srv->services);
  for (size_t i = 0; i < srv->n_addrs; i++)
    free(srv->addrs[i]);
  free(srv->addrs);
  ms_descdb_free(srv->db);
  pthread_mutex_destroy(&srv->mu);
  pthread_cond_destroy(&srv->cond);
  free(srv);
  ms_rpc__shutdown();
}
