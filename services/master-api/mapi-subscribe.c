/* Scheduler.Subscribe relayed to Allocator.SubscribeFramework, event-driven: every
 * relay lives on one loop thread (s->relay_loop, the owner of their state), their
 * upstream streams complete on one queue thread (s->aq, rpc-astream.h) whose
 * callbacks post each message and each end to the loop. Two threads for any number
 * of subscriptions.
 *
 * The scheduler's stream outlives the allocator's: when the allocator's stream ends
 * UNAVAILABLE (the leader died, or master-api moved to a new leader), the relay tells
 * the scheduler its offers are void (RESCIND for each offer relayed and neither used,
 * declined nor rescinded since), sends HEARTBEATs, and re-opens upstream with backoff
 * as the same framework with `resume_stream_id` = the stream id the scheduler holds;
 * the new SUBSCRIBED is not relayed. Status updates need nothing here: agents resend
 * what was not acknowledged to the new leader, which relays it.
 *
 * The relay ends, finishing the scheduler's call with the allocator's status and
 * message, when the allocator ends the stream on purpose (OK after a teardown,
 * FAILED_PRECONDITION when another stream took over, NOT_FOUND, PERMISSION_DENIED...)
 * or fails before the first SUBSCRIBED; the scheduler cancelling cancels the
 * allocator's stream; a scheduler too slow for its stream (the layer's
 * RESOURCE_EXHAUSTED) has its upstream cancelled.
 *
 * Subscriptions are bounded per principal (--max-subscriptions-per-principal):
 * an authenticated caller by its name, anonymous callers by their peer's host. */
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
  ms_rpc_call *call;                      /* referenced until the relay ends */
  Meseta__V1__FrameworkSubscription *sub; /* owned */
  char *who;                              /* the principal it counts against */
  atomic_int refs;                        /* the loop's and the call's data slot */
  /* Owned by the loop thread. */
  ms_rpc_astream *up; /* open upstream, until its end is handled */
  mapi_chan *up_chan; /* the channel `up` is open on (a reference) */
  uint64_t up_gen;    /* s->leader_gen when `up` opened */
  bool cancelled;     /* the scheduler left, or shutdown */
  bool moved;         /* `up` cancelled for a new leader */
  bool gone;          /* sending to the scheduler failed: end with `gone_err` */
  bool ended;         /* finished and unlinked */
  ms_error *gone_err;
  char *stream_id; /* the scheduler's, from the first SUBSCRIBED */
  bool subscribed; /* the current upstream gave its SUBSCRIBED */
  int64_t heartbeat_ms;
  int64_t last_sent; /* monotonic ms of the last event sent to the scheduler */
  int64_t backoff;
  uint64_t retry_timer, hb_timer;
  char *framework_id; /* once SUBSCRIBED */
  char **offers;      /* relayed and outstanding */
  size_t noffers, capoffers;
  mapi_relay *prev, *next; /* s->relays, under s->mu */
};

static void relay_unref(mapi_relay *r) {
  if (atomic_fetch_sub(&r->refs, 1) == 1) {
    for (size_t i = 0; i < r->noffers; i++)
      free(r->offers[i]);
    free(r->offers);
    free(r->framework_id);
    free(r->stream_id);
    free(r->who);
    ms_error_free(r->gone_err);
    if (r->sub)
      protobuf_c_message_free_unpacked(&r->sub->base, NULL);
    free(r);
  }
}

/* ---- offers relayed (the loop thread) ---- */

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

/* Offers a forwarder saw used or declined, handed to the loop (the offers' owner). */
typedef struct offers_gone {
  mapi_service *s;
  char *framework_id;
  char **ids;
  size_t n;
} offers_gone;

static void offers_gone_run(void *arg) {
  offers_gone *g = arg;
  mapi_service *s = g->s;
  pthread_mutex_lock(&s->mu); /* the list; the loop alone changes a relay's offers */
  for (mapi_relay *r = s->relays; r; r = r->next)
    if (r->framework_id && strcmp(r->framework_id, g->framework_id) == 0)
      for (size_t i = 0; i < g->n; i++)
        offer_del(r, g->ids[i]);
  pthread_mutex_unlock(&s->mu);
  for (size_t i = 0; i < g->n; i++)
    free(g->ids[i]);
  free(g->ids);
  free(g->framework_id);
  free(g);
}

void mapi_relays_offers_gone(mapi_service *s, const char *framework_id, Meseta__V1__OfferID *const *ids,
                             size_t n) {
  if (!framework_id || !n)
    return;
  offers_gone *g = ms_xcalloc(1, sizeof(*g));
  g->s = s;
  g->framework_id = ms_xstrdup(framework_id);
  g->ids = ms_xcalloc(n, sizeof(*g->ids));
  for (size_t i = 0; i < n; i++)
    if (ids[i] && ids[i]->value)
      g->ids[g->n++] = ms_xstrdup(ids[i]->value);
  ms_loop_post(s->relay_loop, offers_gone_run, g);
}

/* ---- to the scheduler ---- */

static int send_event(mapi_relay *r, const ProtobufCMessage *ev, ms_error **err) {
  if (ms_rpc_call_send(r->call, ev, err) < 0)
    return MS_ERR;
  r->last_sent = ms_time_mono_ms();
  return 0;
}

static int send_heartbeat(mapi_relay *r, ms_error **err) {
  Meseta__V1__Event__Heartbeat hb = MESETA__V1__EVENT__HEARTBEAT__INIT;
  Meseta__V1__Event ev = MESETA__V1__EVENT__INIT;
  ev.event_case = MESETA__V1__EVENT__EVENT_HEARTBEAT;
  ev.heartbeat = &hb;
  return send_event(r, &ev.base, err);
}

/* RESCIND for every offer relayed and still outstanding: the leader they came from
 * is gone, or the stream they were on is. */
static int rescind_all(mapi_relay *r, ms_error **err) {
  char **offers = TAKE_PTR(r->offers);
  size_t n = r->noffers;
  r->noffers = r->capoffers = 0;
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    Meseta__V1__OfferID oid = MESETA__V1__OFFER_ID__INIT;
    oid.value = offers[i];
    Meseta__V1__Event__Rescind rs = MESETA__V1__EVENT__RESCIND__INIT;
    rs.offer_id = &oid;
    Meseta__V1__Event ev = MESETA__V1__EVENT__INIT;
    ev.event_case = MESETA__V1__EVENT__EVENT_RESCIND;
    ev.rescind = &rs;
    if (rc == 0 && send_event(r, &ev.base, err) < 0)
      rc = MS_ERR;
    free(offers[i]);
  }
  free(offers);
  return rc;
}

/* ---- the relay's life, on the loop thread ---- */

static void relay_open(mapi_relay *r);

static void timers_stop(mapi_relay *r) {
  if (r->retry_timer)
    ms_loop_cancel_timer(r->s->relay_loop, r->retry_timer);
  if (r->hb_timer)
    ms_loop_cancel_timer(r->s->relay_loop, r->hb_timer);
  r->retry_timer = r->hb_timer = 0;
}

/* Finishes the scheduler's call with err (NULL: OK) and lets the relay go. */
static void relay_end(mapi_relay *r, ms_error *err) {
  mapi_service *s = r->s;
  if (r->ended) {
    ms_error_free(err);
    return;
  }
  r->ended = true;
  timers_stop(r);
  if (atomic_load(&s->stopping) && !ms_rpc_call_is_done(r->call)) {
    ms_error_free(TAKE_PTR(err));
    ms_error_set(&err, MS_UNAVAILABLE, "master-api is shutting down: subscribe again (another replica)");
  }
  if (err)
    ms_log_debug(r->framework_id, "Subscribe relay: %s", err->msg);
  ms_rpc_call_finish_error(r->call, err); /* OK when err is NULL; after on_done: harmless */
  ms_error_free(err);
  ms_rpc_call_unref(TAKE_PTR(r->call));
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
  relay_unref(r); /* the loop's */
}

static void heartbeat_tick(ms_loop *loop, uint64_t id, void *arg) {
  (void)loop, (void)id;
  mapi_relay *r = arg;
  ms_error *err = NULL;
  if (r->ended || r->subscribed)
    return;
  if (ms_time_mono_ms() - r->last_sent >= r->heartbeat_ms - 50 && send_heartbeat(r, &err) < 0) {
    r->gone = true;
    ms_error_free(r->gone_err);
    r->gone_err = err;
    if (r->up)
      ms_rpc_astream_cancel(r->up); /* its end ends the relay */
    else
      relay_end(r, TAKE_PTR(r->gone_err));
  }
}

static void retry_tick(ms_loop *loop, uint64_t id, void *arg) {
  (void)loop, (void)id;
  mapi_relay *r = arg;
  r->retry_timer = 0;
  if (!r->ended)
    relay_open(r);
}

/* The upstream stream is gone but the scheduler's stays: RESCINDs, HEARTBEATs, and
 * another attempt after the backoff (at once when the leader moved). */
static void relay_gap(mapi_relay *r, ms_error *err, bool moved) {
  mapi_service *s = r->s;
  int64_t max_backoff = s->cfg.max_backoff_ms > 0 ? s->cfg.max_backoff_ms : 10000;
  bool lost = r->subscribed; /* this stream had been up: a loss, not one more failed try */
  /* A new leader starts a new series: tries against the dead one must not make the
   * relay wait seconds while the new leader only finishes loading (it answers
   * "recovering" for about a second). */
  if (lost || moved)
    r->backoff = 100;
  r->subscribed = false;
  int64_t delay = moved ? 0 : r->backoff;
  ms_log(lost ? MS_LOG_INFO : MS_LOG_DEBUG, r->framework_id,
         "scheduler stream `%s`: allocator stream %s (%s); re-opening in %lld ms", r->stream_id,
         lost ? "lost" : "not re-opened yet", err ? err->msg : "ended", (long long)delay);
  ms_error_free(err);
  err = NULL;
  if (rescind_all(r, &err) < 0) {
    relay_end(r, err);
    return;
  }
  if (!r->hb_timer)
    r->hb_timer = ms_loop_add_timer(s->relay_loop, r->heartbeat_ms, r->heartbeat_ms, heartbeat_tick, r);
  r->retry_timer = ms_loop_add_timer(s->relay_loop, delay, 0, retry_tick, r);
  if (!moved)
    r->backoff = r->backoff * 2 > max_backoff ? max_backoff : r->backoff * 2;
}

/* An attempt failed before a stream was open: another one if the scheduler has its
 * stream id, else the scheduler hears why. */
static void relay_failed(mapi_relay *r, ms_error *err) {
  if (r->stream_id && !r->cancelled && !atomic_load(&r->s->stopping))
    relay_gap(r, err, false);
  else
    relay_end(r, err);
}

/* One event from upstream to the scheduler. */
static int relay_event(mapi_relay *r, Meseta__V1__Event *ev, ms_error **err) {
  mapi_service *s = r->s;
  if (ev->event_case == MESETA__V1__EVENT__EVENT_SUBSCRIBED && ev->subscribed) {
    const char *sid = ev->subscribed->stream_id ? ev->subscribed->stream_id : "";
    r->subscribed = true;
    if (r->hb_timer)
      ms_loop_cancel_timer(s->relay_loop, r->hb_timer);
    r->hb_timer = 0;
    if (r->stream_id && strcmp(r->stream_id, sid) == 0) {
      ms_log_info(r->framework_id, "scheduler stream `%s` resumed on a new allocator stream", sid);
      return 0; /* the scheduler has it already */
    }
    free(r->stream_id);
    r->stream_id = ms_xstrdup(sid);
    const Google__Protobuf__Duration *hb = ev->subscribed->heartbeat_interval;
    int64_t hb_ms = hb ? hb->seconds * 1000 + hb->nanos / 1000000 : 0;
    r->heartbeat_ms = hb_ms > 0 ? hb_ms : DEFAULT_HEARTBEAT_MS;
    free(r->framework_id);
    r->framework_id = ev->subscribed->framework_id && ev->subscribed->framework_id->value
                          ? ms_xstrdup(ev->subscribed->framework_id->value)
                          : NULL;
  } else if (ev->event_case == MESETA__V1__EVENT__EVENT_OFFERS && ev->offers) {
    for (size_t i = 0; i < ev->offers->n_offers; i++)
      if (ev->offers->offers[i]->id && ev->offers->offers[i]->id->value)
        offer_add(r, ev->offers->offers[i]->id->value);
  } else if (ev->event_case == MESETA__V1__EVENT__EVENT_RESCIND && ev->rescind && ev->rescind->offer_id &&
             ev->rescind->offer_id->value) {
    offer_del(r, ev->rescind->offer_id->value);
  }
  return send_event(r, &ev->base, err);
}

/* What the queue's thread hands the loop: a message (msg), or the end (end, err). */
typedef struct up_event {
  mapi_relay *r;
  ms_rpc_astream *st;
  ProtobufCMessage *msg;
  ms_error *err;
  bool end;
} up_event;

static void up_event_run(void *arg) {
  up_event *e = arg;
  mapi_relay *r = e->r;
  if (!e->end) {
    ms_error *err = NULL;
    if (!r->gone && !r->cancelled && !r->ended) {
      if (relay_event(r, (Meseta__V1__Event *)e->msg, &err) < 0) {
        /* The scheduler left, or is too slow for its stream (RESOURCE_EXHAUSTED). */
        r->gone = true;
        r->gone_err = err;
        ms_rpc_astream_cancel(e->st);
      } else {
        ms_rpc_astream_read(e->st);
      }
    }
    protobuf_c_message_free_unpacked(e->msg, NULL);
    free(e);
    return;
  }
  /* The upstream stream ended. */
  ms_error *err = e->err;
  free(e);
  mapi_hop_error(&err, r->up_chan->addr);
  ms_rpc_astream_free(TAKE_PTR(r->up));
  mapi_alloc_put(TAKE_PTR(r->up_chan));
  mapi_service *s = r->s;
  bool leader_moved = atomic_load(&s->leader_gen) != r->up_gen;
  bool moved = r->moved;
  r->moved = false;
  if (r->gone) {
    ms_error_free(err);
    relay_end(r, TAKE_PTR(r->gone_err));
  } else if (r->cancelled || atomic_load(&s->stopping) || !r->stream_id || !err) {
    relay_end(r, err);
  } else if (err->code == MS_UNAVAILABLE || (err->code == MS_CANCELLED && moved)) {
    /* Worth another stream: the allocator went away rather than refused (a standby
     * or a loading leader answers UNAVAILABLE too). */
    relay_gap(r, err, moved || leader_moved);
  } else {
    relay_end(r, err);
  }
  relay_unref(r); /* the stream's */
}

static void up_on_message(ms_rpc_astream *st, ProtobufCMessage *msg, void *arg) {
  up_event *e = ms_xcalloc(1, sizeof(*e));
  *e = (up_event){.r = arg, .st = st, .msg = msg};
  mapi_relay *r = arg;
  ms_loop_post(r->s->relay_loop, up_event_run, e);
}

static void up_on_end(ms_rpc_astream *st, ms_error *err, void *arg) {
  up_event *e = ms_xcalloc(1, sizeof(*e));
  *e = (up_event){.r = arg, .st = st, .err = err, .end = true};
  mapi_relay *r = arg;
  ms_loop_post(r->s->relay_loop, up_event_run, e);
}

/* Opens the upstream stream (a resumed one when the scheduler has its stream id). */
static void relay_open(mapi_relay *r) {
  mapi_service *s = r->s;
  ms_error *err = NULL;
  if (r->cancelled || atomic_load(&s->stopping)) {
    relay_end(r, NULL);
    return;
  }
  r->subscribed = false;
  uint64_t gen = atomic_load(&s->leader_gen);
  mapi_chan *c = mapi_alloc_get(s, &err);
  if (!c) {
    relay_failed(r, err);
    return;
  }
  /* A resumed stream: the same framework, the stream id the scheduler holds. */
  Meseta__V1__FrameworkSubscription sub = *r->sub;
  Meseta__V1__SubscribeRequest req;
  Meseta__V1__FrameworkInfo info;
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  const char *id = r->framework_id;
  if (r->stream_id && id && r->sub->request && r->sub->request->framework_info) {
    req = *r->sub->request;
    info = *req.framework_info;
    fid.value = (char *)id;
    info.id = &fid;
    req.framework_info = &info;
    sub.request = &req;
    sub.resume_stream_id = r->stream_id;
  }
  static const ms_rpc_astream_handlers h = {.on_message = up_on_message, .on_end = up_on_end};
  atomic_fetch_add(&r->refs, 1); /* the stream's, dropped when its end is handled */
  ms_rpc_astream *up = ms_rpc_astream_open(s->aq, c->ach, SUBSCRIBE_PATH, &sub.base,
                                           &meseta__v1__event__descriptor, NULL, &h, r, &err);
  if (!up) {
    atomic_fetch_sub(&r->refs, 1);
    mapi_alloc_put(c);
    relay_failed(r, err);
    return;
  }
  r->up = up;
  r->up_chan = c;
  r->up_gen = gen;
  r->moved = false;
  pthread_mutex_lock(&s->mu);
  if (s->alloc != c) { /* the leader moved while this stream opened */
    r->moved = true;
    ms_rpc_astream_cancel(up);
  }
  pthread_mutex_unlock(&s->mu);
}

/* ---- from other threads, posted to the loop ---- */

static void start_run(void *arg) {
  relay_open(arg);
}

/* The scheduler's call is over (on_done). */
static void left_run(void *arg) {
  mapi_relay *r = arg;
  r->cancelled = true;
  if (r->up)
    ms_rpc_astream_cancel(r->up); /* its end ends the relay */
  else
    relay_end(r, NULL);
  relay_unref(r); /* the call's data slot */
}

/* Relays referenced, to act on them outside s->mu. */
static mapi_relay **relays_taken(mapi_service *s, size_t *ret_n) {
  pthread_mutex_lock(&s->mu);
  mapi_relay **v = ms_xcalloc(s->n_relays + 1, sizeof(*v));
  size_t n = 0;
  for (mapi_relay *r = s->relays; r; r = r->next) {
    atomic_fetch_add(&r->refs, 1);
    v[n++] = r;
  }
  pthread_mutex_unlock(&s->mu);
  *ret_n = n;
  return v;
}

/* The leader moved: upstreams open elsewhere re-open on it, waiting relays try now. */
static void moved_run(void *arg) {
  mapi_service *s = arg;
  size_t n = 0;
  mapi_relay **v = relays_taken(s, &n);
  pthread_mutex_lock(&s->mu);
  const mapi_chan *now = s->alloc;
  pthread_mutex_unlock(&s->mu);
  for (size_t i = 0; i < n; i++) {
    mapi_relay *r = v[i];
    if (r->up && r->up_chan != now) {
      r->moved = true;
      ms_rpc_astream_cancel(r->up);
    } else if (!r->up && r->retry_timer && now) {
      ms_loop_cancel_timer(s->relay_loop, r->retry_timer);
      r->retry_timer = ms_loop_add_timer(s->relay_loop, 0, 0, retry_tick, r);
      r->backoff = 100; /* a new series for the new leader (see relay_gap) */
    }
    relay_unref(r);
  }
  free(v);
}

static void close_run(void *arg) {
  mapi_service *s = arg;
  size_t n = 0;
  mapi_relay **v = relays_taken(s, &n);
  for (size_t i = 0; i < n; i++) {
    mapi_relay *r = v[i];
    r->cancelled = true;
    if (r->up)
      ms_rpc_astream_cancel(r->up);
    else
      relay_end(r, NULL);
    relay_unref(r);
  }
  free(v);
}

void mapi_relays_move(mapi_service *s, const mapi_chan *now) {
  (void)now;
  ms_loop_post(s->relay_loop, moved_run, s);
}

static void *relay_loop_main(void *arg) {
  mapi_service *s = arg;
  ms_error *err = NULL;
  if (ms_loop_run(s->relay_loop, &err) < 0) {
    ms_log_error(NULL, "Subscribe relays: %s", err->msg);
    ms_error_free(err);
  }
  return NULL;
}

int mapi_relays_init(mapi_service *s, ms_error **err) {
  if (!(s->relay_loop = ms_loop_new(err)) || !(s->aq = ms_rpc_aqueue_new(err)))
    return ms_error_prefix(err, "Subscribe relays");
  return 0;
}

int mapi_relays_start(mapi_service *s, ms_error **err) {
  int e = pthread_create(&s->relay_thread, NULL, relay_loop_main, s);
  if (e != 0)
    return ms_error_set_errno(err, e, "starting the Subscribe relays' thread");
  s->relay_started = true;
  return 0;
}

void mapi_relays_close(mapi_service *s) {
  if (!s->relay_started)
    return;
  ms_loop_post(s->relay_loop, close_run, s);
  pthread_mutex_lock(&s->mu);
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
  }
  size_t left = s->n_relays;
  pthread_mutex_unlock(&s->mu);
  if (left)
    ms_log_warn(NULL, "%zu Subscribe relays still running at shutdown", left);
}

static void stop_run(void *arg) {
  mapi_service *s = arg;
  ms_loop_stop(s->relay_loop);
}

void mapi_relays_free(mapi_service *s) {
  mapi_relays_close(s);
  if (s->relay_started) {
    /* Last in the loop's queue: the calls' on_done (the server is freed by now) ran
     * before it and dropped their relays. */
    ms_loop_post(s->relay_loop, stop_run, s);
    pthread_join(s->relay_thread, NULL);
    s->relay_started = false;
  }
  ms_rpc_aqueue_free(TAKE_PTR(s->aq)); /* after every stream ended */
  ms_loop_free(TAKE_PTR(s->relay_loop));
}

/* ---- the server's handlers ---- */

/* Who a subscription counts against: the principal's name, or for anonymous
 * callers `anonymous@<host>` of their peer address (the port dropped). */
static char *principal_key(ms_rpc_call *call, const Meseta__V1__Principal *p) {
  if (p->method != MESETA__V1__PRINCIPAL__METHOD__ANONYMOUS && p->name && *p->name)
    return ms_xstrdup(p->name);
  const char *peer = ms_rpc_call_peer(call);
  const char *colon = strchr(peer, ':'); /* "ipv4:127.0.0.1:5000", "ipv6:[::1]:5000", "unix:/x" */
  const char *host = colon ? colon + 1 : peer;
  const char *port = strrchr(host, ':');
  size_t n = strncmp(peer, "unix:", 5) != 0 && port && port > host ? (size_t)(port - host) : strlen(host);
  return ms_xasprintf("anonymous@%.*s", (int)n, host);
}

int mapi_subscribe_start(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err) {
  mapi_service *s = ms_rpc_call_userdata(call);
  const Meseta__V1__SubscribeRequest *sr = (const Meseta__V1__SubscribeRequest *)req;
  if (!sr->framework_info)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "framework_info: required");
  if (mapi_check_request(req, err) < 0)
    return MS_ERR;
  if (atomic_load(&s->stopping))
    return ms_error_set(err, MS_UNAVAILABLE, "master-api is shutting down");
  Meseta__V1__Principal *who = NULL;
  if (mapi_principal(s, call, &who, err) < 0) /* refused before anything started */
    return MS_ERR;
  mapi_relay *r = ms_xcalloc(1, sizeof(*r));
  r->s = s;
  r->sub = ms_pb_new(&meseta__v1__framework_subscription__descriptor);
  r->sub->principal = who;
  r->who = principal_key(call, who);
  r->heartbeat_ms = DEFAULT_HEARTBEAT_MS;
  r->last_sent = ms_time_mono_ms();
  r->backoff = 100;
  atomic_init(&r->refs, 2);
  size_t limit = s->cfg.max_subscriptions_per_principal, held = 0;
  pthread_mutex_lock(&s->mu);
  for (mapi_relay *o = s->relays; o && limit; o = o->next)
    held += strcmp(o->who, r->who) == 0;
  bool full = limit && held >= limit;
  bool stopping = atomic_load(&s->stopping); /* under mu: mapi_relays_close counts what is listed */
  if (!full && !stopping) {
    r->next = s->relays;
    if (s->relays)
      s->relays->prev = r;
    s->relays = r;
    s->n_relays++;
  }
  pthread_mutex_unlock(&s->mu);
  if (full || stopping) {
    if (stopping)
      ms_error_set(err, MS_UNAVAILABLE, "master-api is shutting down");
    else
      ms_error_set(err, MS_RESOURCE_EXHAUSTED,
                   "principal `%s` has %zu subscriptions on this replica, the limit "
                   "(--max-subscriptions-per-principal %zu): end one first",
                   r->who, held, limit);
    atomic_store(&r->refs, 1);
    relay_unref(r);
    return MS_ERR;
  }
  r->sub->request = (Meseta__V1__SubscribeRequest *)ms_pb_dup(req);
  ms_rpc_call_ref(call);
  r->call = call;
  ms_rpc_call_set_data(call, r);
  ms_loop_post(s->relay_loop, start_run, r);
  return 0;
}

void mapi_subscribe_done(ms_rpc_call *call, bool cancelled) {
  (void)cancelled;
  mapi_relay *r = ms_rpc_call_data(call);
  if (!r)
    return;
  ms_rpc_call_set_data(call, NULL);
  ms_loop_post(r->s->relay_loop, left_run, r); /* hands over the data slot's reference */
}
