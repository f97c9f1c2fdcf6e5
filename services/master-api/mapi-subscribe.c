/* Scheduler.Subscribe relayed to Allocator.SubscribeFramework: one thread per
 * subscription reads the allocator's stream and sends each event to the scheduler.
 *
 * The scheduler's stream outlives the allocator's: when the allocator's stream ends
 * UNAVAILABLE (the leader died, or master-api moved to a new leader), the relay tells
 * the scheduler its offers are void (RESCIND for each offer relayed and neither used,
 * declined nor rescinded since), keeps sending HEARTBEATs, and re-opens upstream with
 * backoff as the same framework with `resume_stream_id` = the stream id the
 * scheduler holds; the new SUBSCRIBED is not relayed. Status updates need nothing
 * here: agents resend what was not acknowledged to the new leader, which relays it.
 *
 * The relay ends, finishing the scheduler's call with the allocator's status and
 * message, when the allocator ends the stream on purpose (OK after a teardown,
 * FAILED_PRECONDITION when another stream took over, NOT_FOUND, PERMISSION_DENIED...)
 * or fails before the first SUBSCRIBED; the scheduler cancelling cancels the
 * allocator's stream; a scheduler too slow for its stream (the layer's
 * RESOURCE_EXHAUSTED) has its upstream cancelled. */
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/pb.h"
#include "meseta/time.h"
#include "meseta/v1/scheduler.pb-c.h"

#include "mapi-internal.h"

#define SUBSCRIBE_PATH "/meseta.v1.Allocator/SubscribeFramework"
/* Offers tracked per stream for RESCIND after a failover; past it the oldest are
 * forgotten (a scheduler that neither uses nor declines offers through this replica). */
#define MAX_TRACKED_OFFERS 10000
#define DEFAULT_HEARTBEAT_MS 5000

struct mapi_relay {
  mapi_service *s;
  ms_rpc_call *call;                      /* referenced until the thread ends */
  Meseta__V1__FrameworkSubscription *sub; /* owned by the thread */
  ms_rpc_stream *up;                      /* under s->mu while open */
  const mapi_chan *up_chan;               /* the channel `up` is open on (under s->mu) */
  bool cancelled;                         /* the scheduler left or shutdown (under s->mu) */
  bool moved;                             /* `up` cancelled for a new leader (under s->mu) */
  char *framework_id;                     /* once SUBSCRIBED (under s->mu) */
  char **offers;                          /* relayed and outstanding (under s->mu) */
  size_t noffers, capoffers;
  atomic_int refs;         /* the thread and the call's data slot */
  mapi_relay *prev, *next; /* s->relays, under s->mu */
};

/* What the thread keeps across upstream streams. */
typedef struct relay_run {
  char *stream_id; /* the scheduler's, from the first SUBSCRIBED */
  int64_t heartbeat_ms;
  int64_t last_sent; /* monotonic ms of the last event sent to the scheduler */
  bool subscribed;   /* the current upstream gave its SUBSCRIBED */
} relay_run;

static void relay_unref(mapi_relay *r) {
  if (atomic_fetch_sub(&r->refs, 1) == 1) {
    for (size_t i = 0; i < r->noffers; i++)
      free(r->offers[i]);
    free(r->offers);
    free(r->framework_id);
    free(r);
  }
}

/* ---- offers relayed (s->mu held) ---- */

static void offer_add(mapi_relay *r, const char *id) {
  if (r->noffers == MAX_TRACKED_OFFERS) {
    free(r->offers[0]);
    memmove(&r->offers[0], &r->offers[1], (r->noffers - 1) * sizeof(*r->offers));
    r->noffers--;
  }
  if (r->noffers == r->capoffers) {
    r->capoffers = r->capoffers ? 2 * r->capoffers : 16;
    r->offers = ms_xrealloc(r->offers, r->capoffers * sizeof(*r->offers));
  }
  r->offers[r->noffers++] = ms_xstrdup(id);
}

static void offer_del(mapi_relay *r, const char *id) {
  for (size_t i = r->noffers; i-- > 0;)
    if (strcmp(r->offers[i], id) == 0) {
      free(r->offers[i]);
      memmove(&r->offers[i], &r->offers[i + 1], (r->noffers - i - 1) * sizeof(*r->offers));
      r->noffers--;
      return;
    }
}

void mapi_relays_offers_gone(mapi_service *s, const char *framework_id, Meseta__V1__OfferID *const *ids,
                             size_t n) {
  if (!framework_id)
    return;
  pthread_mutex_lock(&s->mu);
  for (mapi_relay *r = s->relays; r; r = r->next)
    if (r->framework_id && strcmp(r->framework_id, framework_id) == 0)
      for (size_t i = 0; i < n; i++)
        if (ids[i] && ids[i]->value)
          offer_del(r, ids[i]->value);
  pthread_mutex_unlock(&s->mu);
}

void mapi_relays_move(mapi_service *s, const mapi_chan *now) {
  for (mapi_relay *r = s->relays; r; r = r->next)
    if (r->up && r->up_chan != now) {
      r->moved = true;
      ms_rpc_stream_cancel(r->up);
    }
}

/* ---- to the scheduler ---- */

static int send_event(mapi_relay *r, relay_run *run, const ProtobufCMessage *ev, ms_error **err) {
  if (ms_rpc_call_send(r->call, ev, err) < 0)
    return MS_ERR;
  run->last_sent = ms_time_mono_ms();
  return 0;
}

static int send_heartbeat(mapi_relay *r, relay_run *run, ms_error **err) {
  Meseta__V1__Event__Heartbeat hb = MESETA__V1__EVENT__HEARTBEAT__INIT;
  Meseta__V1__Event ev = MESETA__V1__EVENT__INIT;
  ev.event_case = MESETA__V1__EVENT__EVENT_HEARTBEAT;
  ev.heartbeat = &hb;
  return send_event(r, run, &ev.base, err);
}

/* RESCIND for every offer relayed and still outstanding: the leader they came from
 * is gone, or the stream they were on is. */
static int rescind_all(mapi_relay *r, relay_run *run, ms_error **err) {
  mapi_service *s = r->s;
  pthread_mutex_lock(&s->mu);
  char **offers = TAKE_PTR(r->offers);
  size_t n = r->noffers;
  r->noffers = r->capoffers = 0;
  pthread_mutex_unlock(&s->mu);
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    Meseta__V1__OfferID oid = MESETA__V1__OFFER_ID__INIT;
    oid.value = offers[i];
    Meseta__V1__Event__Rescind rs = MESETA__V1__EVENT__RESCIND__INIT;
    rs.offer_id = &oid;
    Meseta__V1__Event ev = MESETA__V1__EVENT__INIT;
    ev.event_case = MESETA__V1__EVENT__EVENT_RESCIND;
    ev.rescind = &rs;
    if (rc == 0 && send_event(r, run, &ev.base, err) < 0)
      rc = MS_ERR;
    free(offers[i]);
  }
  free(offers);
  return rc;
}

/* Waits ms before the next attempt, sending HEARTBEATs meanwhile; returns early
 * when the leader moves. False when the relay must end (scheduler gone, shutdown). */
static bool relay_wait(mapi_relay *r, relay_run *run, int64_t ms, uint64_t gen, ms_error **err) {
  mapi_service *s = r->s;
  int64_t until = ms_time_mono_ms() + ms;
  for (;;) {
    int64_t now = ms_time_mono_ms();
    if (now - run->last_sent >= run->heartbeat_ms && send_heartbeat(r, run, err) < 0)
      return false;
    if (now >= until)
      return true;
    int64_t next = run->last_sent + run->heartbeat_ms;
    int64_t wake = next < until ? next : until;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t d = wake - now;
    ts.tv_sec += d / 1000;
    ts.tv_nsec += (d % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&s->mu);
    if (!r->cancelled && !atomic_load(&s->stopping) && s->leader_gen == gen)
      pthread_cond_timedwait(&s->cond, &s->mu, &ts);
    bool end = r->cancelled || atomic_load(&s->stopping);
    bool moved = s->leader_gen != gen;
    pthread_mutex_unlock(&s->mu);
    if (end || ms_rpc_call_is_done(r->call))
      return false;
    if (moved)
      return true;
  }
}

/* ---- from the allocator ---- */

typedef enum { RELAY_END, RELAY_RESUME } relay_next;

/* One event from upstream to the scheduler. */
static int relay_event(mapi_relay *r, relay_run *run, Meseta__V1__Event *ev, ms_error **err) {
  mapi_service *s = r->s;
  if (ev->event_case == MESETA__V1__EVENT__EVENT_SUBSCRIBED && ev->subscribed) {
    const char *sid = ev->subscribed->stream_id ? ev->subscribed->stream_id : "";
    run->subscribed = true;
    if (run->stream_id && strcmp(run->stream_id, sid) == 0) {
      ms_log_info(r->framework_id, "scheduler stream `%s` resumed on a new allocator stream", sid);
      return 0; /* the scheduler has it already */
    }
    free(run->stream_id);
    run->stream_id = ms_xstrdup(sid);
    const Google__Protobuf__Duration *hb = ev->subscribed->heartbeat_interval;
    int64_t hb_ms = hb ? hb->seconds * 1000 + hb->nanos / 1000000 : 0;
    run->heartbeat_ms = hb_ms > 0 ? hb_ms : DEFAULT_HEARTBEAT_MS;
    pthread_mutex_lock(&s->mu);
    free(r->framework_id);
    r->framework_id = ev->subscribed->framework_id && ev->subscribed->framework_id->value
                          ? ms_xstrdup(ev->subscribed->framework_id->value)
                          : NULL;
    pthread_mutex_unlock(&s->mu);
  } else if (ev->event_case == MESETA__V1__EVENT__EVENT_OFFERS && ev->offers) {
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < ev->offers->n_offers; i++)
      if (ev->offers->offers[i]->id && ev->offers->offers[i]->id->value)
        offer_add(r, ev->offers->offers[i]->id->value);
    pthread_mutex_unlock(&s->mu);
  } else if (ev->event_case == MESETA__V1__EVENT__EVENT_RESCIND && ev->rescind && ev->rescind->offer_id &&
             ev->rescind->offer_id->value) {
    pthread_mutex_lock(&s->mu);
    offer_del(r, ev->rescind->offer_id->value);
    pthread_mutex_unlock(&s->mu);
  }
  return send_event(r, run, &ev->base, err);
}

/* One upstream stream, until it ends: whether to end the relay (with *err, NULL for
 * OK) or to re-open upstream. */
static relay_next relay_once(mapi_relay *r, relay_run *run, ms_error **err) {
  mapi_service *s = r->s;
  run->subscribed = false;
  mapi_chan *c = mapi_alloc_get(s, err);
  if (!c)
    return run->stream_id ? RELAY_RESUME : RELAY_END;
  /* A resumed stream: the same framework, the stream id the scheduler holds. */
  Meseta__V1__FrameworkSubscription sub = *r->sub;
  Meseta__V1__SubscribeRequest req;
  Meseta__V1__FrameworkInfo info;
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  pthread_mutex_lock(&s->mu);
  _cleanup_free_ char *id = r->framework_id ? ms_xstrdup(r->framework_id) : NULL;
  pthread_mutex_unlock(&s->mu);
  if (run->stream_id && id && r->sub->request && r->sub->request->framework_info) {
    req = *r->sub->request;
    info = *req.framework_info;
    fid.value = id;
    info.id = &fid;
    req.framework_info = &info;
    sub.request = &req;
    sub.resume_stream_id = run->stream_id;
  }
  /* Resuming: a leader that does not answer (no route, nothing listening) is waited
   * for a bounded time, so the scheduler's HEARTBEATs go on between attempts. */
  if (run->stream_id &&
      ms_rpc_channel_wait_ready(c->ch, run->heartbeat_ms < 500 ? run->heartbeat_ms : 500, err) < 0) {
    mapi_alloc_put(c);
    return RELAY_RESUME;
  }
  ms_rpc_stream *up = ms_rpc_stream_open(c->ch, SUBSCRIBE_PATH, &sub.base, NULL, err);
  if (!up) {
    mapi_alloc_put(c);
    return run->stream_id ? RELAY_RESUME : RELAY_END;
  }
  pthread_mutex_lock(&s->mu);
  r->up = up;
  r->up_chan = c;
  r->moved = false;
  if (r->cancelled || atomic_load(&s->stopping))
    ms_rpc_stream_cancel(up);
  else if (s->alloc != c) { /* the leader moved while this stream opened */
    r->moved = true;
    ms_rpc_stream_cancel(up);
  }
  pthread_mutex_unlock(&s->mu);
  relay_next next = RELAY_END;
  bool scheduler_gone = false;
  for (;;) {
    ProtobufCMessage *m = NULL;
    int rc = ms_rpc_stream_recv(up, &meseta__v1__event__descriptor, &m, err);
    if (rc <= 0)
      break; /* 0: the allocator ended the stream OK; err is NULL */
    int sent = relay_event(r, run, (Meseta__V1__Event *)m, err);
    protobuf_c_message_free_unpacked(m, NULL);
    if (sent < 0) {
      /* The scheduler left, or is too slow for its stream (RESOURCE_EXHAUSTED). */
      ms_rpc_stream_cancel(up);
      scheduler_gone = true;
      break;
    }
  }
  pthread_mutex_lock(&s->mu);
  bool moved = r->moved, ended = r->cancelled || atomic_load(&s->stopping);
  r->up = NULL;
  r->up_chan = NULL;
  pthread_mutex_unlock(&s->mu);
  ms_rpc_stream_free(up);
  mapi_alloc_put(c);
  /* Worth another stream: the scheduler is still there and has its stream id, and
   * the allocator went away rather than refused (a standby or a loading leader
   * answers UNAVAILABLE too). */
  if (!scheduler_gone && !ended && run->stream_id && *err &&
      ((*err)->code == MS_UNAVAILABLE || ((*err)->code == MS_CANCELLED && moved)))
    next = RELAY_RESUME;
  return next;
}

static void *relay_main(void *arg) {
  mapi_relay *r = arg;
  mapi_service *s = r->s;
  ms_error *err = NULL;
  relay_run run = {.heartbeat_ms = DEFAULT_HEARTBEAT_MS, .last_sent = ms_time_mono_ms()};
  int64_t backoff = 100, max_backoff = s->cfg.max_backoff_ms > 0 ? s->cfg.max_backoff_ms : 10000;
  for (;;) {
    pthread_mutex_lock(&s->mu);
    uint64_t gen = s->leader_gen;
    pthread_mutex_unlock(&s->mu);
    if (relay_once(r, &run, &err) == RELAY_END)
      break;
    bool first = run.subscribed; /* this stream had been up: a loss, not one more failed try */
    if (first)
      backoff = 100;
    ms_log(first ? MS_LOG_INFO : MS_LOG_DEBUG, r->framework_id,
           "scheduler stream `%s`: allocator stream %s (%s); re-opening in %lld ms", run.stream_id,
           first ? "lost" : "not re-opened yet", err->msg, (long long)backoff);
    ms_error_free(TAKE_PTR(err));
    if (rescind_all(r, &run, &err) < 0 || !relay_wait(r, &run, backoff, gen, &err))
      break;
    backoff = backoff * 2 > max_backoff ? max_backoff : backoff * 2;
  }
  if (atomic_load(&s->stopping) && !ms_rpc_call_is_done(r->call)) {
    ms_error_free(TAKE_PTR(err));
    ms_error_set(&err, MS_UNAVAILABLE, "master-api is shutting down: subscribe again (another replica)");
  }
  if (err)
    ms_log_debug(r->framework_id, "Subscribe relay: %s", err->msg);
  ms_rpc_call_finish_error(r->call, err); /* OK when err is NULL; after on_done: harmless */
  ms_error_free(err);
  free(run.stream_id);
  protobuf_c_message_free_unpacked(&TAKE_PTR(r->sub)->base, NULL);
  ms_rpc_call_unref(r->call);
  pthread_mutex_lock(&s->mu);
  if (r->prev)
    r->prev->next = r->next;
  else
    s->relays = r->next;
  if (r->next)
    r->next->prev = r->prev;
  s->n_relays--;
  pthread_cond_broadcast(&s->cond);
  pthread_mutex_unlock(&s->mu);
  relay_unref(r);
  return NULL;
}

int mapi_subscribe_start(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err) {
  mapi_service *s = ms_rpc_call_userdata(call);
  const Meseta__V1__SubscribeRequest *sr = (const Meseta__V1__SubscribeRequest *)req;
  if (!sr->framework_info)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "framework_info: required");
  if (atomic_load(&s->stopping))
    return ms_error_set(err, MS_UNAVAILABLE, "master-api is shutting down");
  mapi_relay *r = ms_xcalloc(1, sizeof(*r));
  r->s = s;
  r->call = call;
  r->sub = ms_pb_new(&meseta__v1__framework_subscription__descriptor);
  if (mapi_principal(s, call, &r->sub->principal, err) < 0) { /* refused before anything started */
    protobuf_c_message_free_unpacked(&r->sub->base, NULL);
    free(r);
    return MS_ERR;
  }
  r->sub->request = (Meseta__V1__SubscribeRequest *)ms_pb_dup(req);
  atomic_init(&r->refs, 2);
  ms_rpc_call_ref(call);
  pthread_mutex_lock(&s->mu);
  r->next = s->relays;
  if (s->relays)
    s->relays->prev = r;
  s->relays = r;
  s->n_relays++;
  pthread_mutex_unlock(&s->mu);
  ms_rpc_call_set_data(call, r);
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int e = pthread_create(&t, &attr, relay_main, r);
  pthread_attr_destroy(&attr);
  if (e != 0) {
    ms_rpc_call_set_data(call, NULL);
    pthread_mutex_lock(&s->mu);
    if (r->prev)
      r->prev->next = r->next;
    else
      s->relays = r->next;
    if (r->next)
      r->next->prev = r->prev;
    s->n_relays--;
    pthread_mutex_unlock(&s->mu);
    protobuf_c_message_free_unpacked(&r->sub->base, NULL);
    free(r);
    ms_rpc_call_unref(call);
    return ms_error_set_errno(err, e, "starting the relay thread");
  }
  return 0;
}

void mapi_subscribe_done(ms_rpc_call *call, bool cancelled) {
  (void)cancelled;
  mapi_relay *r = ms_rpc_call_data(call);
  if (!r)
    return;
  ms_rpc_call_set_data(call, NULL);
  mapi_service *s = r->s;
  pthread_mutex_lock(&s->mu);
  r->cancelled = true;
  if (r->up)
    ms_rpc_stream_cancel(r->up);
  pthread_cond_broadcast(&s->cond); /* a relay waiting to re-open ends */
  pthread_mutex_unlock(&s->mu);
  relay_unref(r);
}

void mapi_relays_close(mapi_service *s) {
  pthread_mutex_lock(&s->mu);
  for (mapi_relay *r = s->relays; r; r = r->next) {
    r->cancelled = true;
    if (r->up)
      ms_rpc_stream_cancel(r->up);
  }
  /* A relay still opening its stream sees `cancelled` once it has it. */
  int64_t until = ms_time_mono_ms() + 10000;
  while (s->n_relays && ms_time_mono_ms() < until) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += 50 * 1000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&s->cond, &s->mu, &ts);
    for (mapi_relay *r = s->relays; r; r = r->next)
      if (r->up)
        ms_rpc_stream_cancel(r->up);
  }
  if (s->n_relays)
    ms_log_warn(NULL, "%zu Subscribe relays still running at shutdown", s->n_relays);
  pthread_mutex_unlock(&s->mu);
}
