/* master-api's service: setup, the watch thread, health, shutdown. */
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/time.h"
#include "meseta/v1/operator.pb-c.h"
#include "meseta/v1/registry.pb-c.h"
#include "meseta/v1/scheduler.pb-c.h"

#include "mapi-internal.h"

static mapi_chan *chan_new(const mapi_service *s, const char *addr, ms_error **err) {
  ms_rpc_channel_options co = {.tls = s->cfg.allocator_tls,
                               .max_message_bytes = s->cfg.max_message_bytes,
                               .max_backoff_ms = s->cfg.max_backoff_ms};
  ms_rpc_channel *ch = ms_rpc_channel_new(addr, &co, err);
  if (!ch)
    return NULL;
  ms_rpc_achannel *ach = ms_rpc_achannel_new(addr, &co, err);
  if (!ach) {
    ms_rpc_channel_free(ch);
    return NULL;
  }
  mapi_chan *c = ms_xcalloc(1, sizeof(*c));
  c->ch = ch;
  c->ach = ach;
  c->addr = ms_xstrdup(addr);
  atomic_init(&c->refs, 1);
  return c;
}

void mapi_alloc_put(mapi_chan *c) {
  if (c && atomic_fetch_sub(&c->refs, 1) == 1) {
    ms_rpc_channel_free(c->ch);
    ms_rpc_achannel_free(c->ach);
    free(c->addr);
    free(c);
  }
}

mapi_chan *mapi_alloc_get(mapi_service *s, ms_error **err) {
  pthread_mutex_lock(&s->mu);
  mapi_chan *c = s->leader_absent ? NULL : s->alloc;
  if (c)
    atomic_fetch_add(&c->refs, 1);
  pthread_mutex_unlock(&s->mu);
  if (!c)
    ms_error_set(err, MS_UNAVAILABLE, "no allocator leader is known yet (registry `%s`); try again",
                 s->cfg.registry);
  return c;
}

mapi_service *mapi_service_new(const mapi_config *cfg, ms_error **err) {
  bool fixed = cfg->allocator && *cfg->allocator, follow = cfg->registry && *cfg->registry;
  if (fixed == follow) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "flags `--allocator` and `--registry`: exactly one is required");
    return NULL;
  }
  mapi_service *s = ms_xcalloc(1, sizeof(*s));
  s->cfg = *cfg;
  s->cfg.allocator = fixed ? ms_xstrdup(cfg->allocator) : NULL;
  s->cfg.registry = follow ? ms_xstrdup(cfg->registry) : NULL;
  s->cfg.name = ms_xstrdup(cfg->name ? cfg->name : "master-api");
  if (cfg->allocator_tls) { /* kept: every new leader's channel uses it */
    ms_rpc_tls *t = ms_xcalloc(1, sizeof(*t));
    t->cert_file = cfg->allocator_tls->cert_file ? ms_xstrdup(cfg->allocator_tls->cert_file) : NULL;
    t->key_file = cfg->allocator_tls->key_file ? ms_xstrdup(cfg->allocator_tls->key_file) : NULL;
    t->ca_file = cfg->allocator_tls->ca_file ? ms_xstrdup(cfg->allocator_tls->ca_file) : NULL;
    t->server_name = cfg->allocator_tls->server_name ? ms_xstrdup(cfg->allocator_tls->server_name) : NULL;
    s->cfg.allocator_tls = t;
  }
  if (s->cfg.forwarders < 1)
    s->cfg.forwarders = 1;
  pthread_mutex_init(&s->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&s->cond, &ca);
  pthread_condattr_destroy(&ca);
  s->view = mapi_view_new();
  s->events = mapi_events_new(s->view, &(mapi_events_config){.queue_bytes = cfg->subscriber_queue_bytes,
                                                             .chunk_bytes = cfg->max_chunk_bytes});
  if (mapi_reads_init(s, err) < 0 || mapi_relays_init(s, err) < 0) {
    mapi_service_free(s);
    return NULL;
  }
  if (fixed && !(s->alloc = chan_new(s, s->cfg.allocator, err))) {
    ms_error_prefix(err, "allocator `%s`", s->cfg.allocator);
    mapi_service_free(s);
    return NULL;
  }
  if (follow && !(s->reg = ms_rpc_channel_new(s->cfg.registry, NULL, err))) {
    ms_error_prefix(err, "registry `%s`", s->cfg.registry);
    mapi_service_free(s);
    return NULL;
  }
  if (!(s->fwd = ms_workq_new(s->cfg.forwarders, 0, err))) {
    mapi_service_free(s);
    return NULL;
  }
  return s;
}

int mapi_service_add(mapi_service *s, ms_rpc_server *srv, ms_error **err) {
  s->srv = srv;
  size_t n = mapi_n_operator_reads + mapi_operator_writes(NULL);
  _cleanup_free_ ms_rpc_method *ops = ms_xmalloc(n * sizeof(*ops));
  memcpy(ops, mapi_operator_reads, mapi_n_operator_reads * sizeof(*ops));
  mapi_operator_writes(ops + mapi_n_operator_reads);
  size_t n_sched = mapi_n_scheduler_calls + 1;
  _cleanup_free_ ms_rpc_method *sched = ms_xmalloc(n_sched * sizeof(*sched));
  memcpy(sched, mapi_scheduler_calls, mapi_n_scheduler_calls * sizeof(*sched));
  sched[n_sched - 1] =
      (ms_rpc_method){.name = "Subscribe", .on_start = mapi_subscribe_start, .on_done = mapi_subscribe_done};
  if (ms_rpc_server_add_service(srv, &meseta__v1__operator__descriptor, ops, n, s, err) < 0 ||
      ms_rpc_server_add_service(srv, &meseta__v1__scheduler__descriptor, sched, n_sched, s, err) < 0)
    return MS_ERR;
  mapi_set_health(s, false); /* until the first snapshot */
  return 0;
}

void mapi_set_health(mapi_service *s, bool serving) {
  if (!s->srv)
    return;
  ms_rpc_server_set_health(s->srv, "", serving);
  ms_rpc_server_set_health(s->srv, "meseta.v1.Operator", serving);
  ms_rpc_server_set_health(s->srv, "meseta.v1.Scheduler", serving);
}

static void on_leader(void *arg, const Meseta__V1__LeaderInfo *li);

int mapi_service_start(mapi_service *s, ms_error **err) {
  mapi_set_health(s, false); /* until the first snapshot */
  int e;
  if (s->reg) {
    _cleanup_free_ char *who = ms_xasprintf("`%s`", s->cfg.registry);
    int64_t max_backoff = s->cfg.max_backoff_ms > 0 ? s->cfg.max_backoff_ms : 10000;
    if (!(s->leader = ms_leader_follow_start(s->reg, who, max_backoff, on_leader, s, err)))
      return MS_ERR;
  }
  if ((e = pthread_create(&s->watch_thread, NULL, mapi_watch_main, s)) != 0)
    return ms_error_set_errno(err, e, "starting the watch thread");
  s->watch_started = true;
  if (mapi_reads_start(s, err) < 0)
    return MS_ERR;
  return mapi_relays_start(s, err);
}

void mapi_service_close(mapi_service *s) {
  if (!s)
    return;
  pthread_mutex_lock(&s->mu);
  atomic_store(&s->stopping, true);
  if (s->watch)
    ms_rpc_stream_cancel(s->watch);
  pthread_cond_broadcast(&s->cond);
  pthread_mutex_unlock(&s->mu);
  ms_leader_follow_stop(TAKE_PTR(s->leader));
  if (s->watch_started)
    pthread_join(s->watch_thread, NULL);
  s->watch_started = false;
  mapi_reads_close(s); /* answers what was handed over and what is parked */
  mapi_relays_close(s);
  mapi_events_close(s->events);    /* every Operator.Subscribe ends: UNAVAILABLE */
  ms_workq_free(TAKE_PTR(s->fwd)); /* runs the forwards queued: each answers its call */
}

void mapi_service_free(mapi_service *s) {
  if (!s)
    return;
  mapi_service_close(s);
  mapi_relays_free(s);
  mapi_reads_free(s);
  mapi_alloc_put(s->alloc);
  ms_rpc_channel_free(s->reg);
  mapi_events_free(s->events);
  mapi_view_free(s->view);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cond);
  if (s->cfg.allocator_tls) {
    ms_rpc_tls *t = (ms_rpc_tls *)s->cfg.allocator_tls;
    free((char *)t->cert_file);
    free((char *)t->key_file);
    free((char *)t->ca_file);
    free((char *)t->server_name);
    free(t);
  }
  free((char *)s->cfg.allocator);
  free((char *)s->cfg.registry);
  free((char *)s->cfg.name);
  free(s);
}

bool mapi_nap(mapi_service *s, int64_t ms, uint64_t gen) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (ms % 1000) * 1000000;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  pthread_mutex_lock(&s->mu);
  while (!atomic_load(&s->stopping) && atomic_load(&s->leader_gen) == gen)
    if (pthread_cond_timedwait(&s->cond, &s->mu, &ts) != 0)
      break;
  bool go_on = !atomic_load(&s->stopping);
  pthread_mutex_unlock(&s->mu);
  return go_on;
}

/* ---- following the leader (--registry) ---- */

/* The registry says who leads: streams open on another channel move there. An
 * absent leader makes calls answer UNAVAILABLE at once but leaves the channel and
 * open streams alone (they end by themselves if their allocator is gone; the same
 * leader coming back keeps them). */
static void set_leader(mapi_service *s, const Meseta__V1__LeaderInfo *li) {
  const char *addr = li->present && li->address && *li->address ? li->address : NULL;
  pthread_mutex_lock(&s->mu);
  bool same = addr && s->alloc && strcmp(s->alloc->addr, addr) == 0;
  if (!addr || same) {
    bool changed = s->leader_absent != !addr;
    s->leader_absent = !addr;
    if (changed) {
      atomic_fetch_add(&s->leader_gen, 1);
      pthread_cond_broadcast(&s->cond);
    }
    pthread_mutex_unlock(&s->mu);
    if (changed && !addr)
      ms_log_warn(NULL, "no allocator leader: calls answer UNAVAILABLE until one is elected");
    else if (changed)
      ms_log_info(NULL, "allocator leader: %s again (term %lld)", addr, (long long)li->revision);
    return;
  }
  pthread_mutex_unlock(&s->mu);
  mapi_chan *c = NULL;
  ms_error *err = NULL;
  if (addr && !(c = chan_new(s, addr, &err))) {
    ms_log_warn(NULL, "allocator leader `%s`: %s", addr, err->msg);
    ms_error_free(err);
  }
  pthread_mutex_lock(&s->mu);
  mapi_chan *old = s->alloc;
  s->alloc = c;
  s->leader_absent = !c;
  atomic_fetch_add(&s->leader_gen, 1);
  if (c) {
    if (s->watch && s->watch_chan != c)
      ms_rpc_stream_cancel(s->watch);
    mapi_relays_move(s, c);
  }
  pthread_cond_broadcast(&s->cond);
  pthread_mutex_unlock(&s->mu);
  mapi_alloc_put(old);
  ms_log_info(NULL, "allocator leader: %s (term %lld)", addr, (long long)li->revision);
}

static void on_leader(void *arg, const Meseta__V1__LeaderInfo *li) {
  set_leader(arg, li);
}

/* ---- the watch thread ---- */

/* One WatchState stream, until it ends. Returns true when a snapshot completed. */
static bool watch_once(mapi_service *s, ms_error **err) {
  mapi_chan *c = mapi_alloc_get(s, err);
  if (!c)
    return false;
  Meseta__V1__WatchStateRequest req = MESETA__V1__WATCH_STATE_REQUEST__INIT;
  req.watcher = (char *)s->cfg.name;
  req.max_chunk_bytes = s->cfg.max_chunk_bytes;
  ms_rpc_stream *st = ms_rpc_stream_open(c->ch, "/meseta.v1.Allocator/WatchState", &req.base, NULL, err);
  if (!st) {
    mapi_alloc_put(c);
    return false;
  }
  pthread_mutex_lock(&s->mu);
  s->watch = st;
  s->watch_chan = c;
  /* Stopping, or the leader moved while this stream opened. */
  if (atomic_load(&s->stopping) || (s->alloc && s->alloc != c))
    ms_rpc_stream_cancel(st);
  pthread_mutex_unlock(&s->mu);
  bool had_snapshot = false;
  for (;;) {
    ProtobufCMessage *m = NULL;
    int r = ms_rpc_stream_recv(st, &meseta__v1__state_event__descriptor, &m, err);
    if (r < 0)
      break;
    if (r == 0) {
      ms_error_set(err, MS_UNAVAILABLE, "the allocator ended the stream");
      break;
    }
    Meseta__V1__StateEvent *ev = (Meseta__V1__StateEvent *)m;
    bool end = ev->event_case == MESETA__V1__STATE_EVENT__EVENT_SNAPSHOT_END;
    bool advanced = mapi_view_apply(s->view, ev); /* takes ev */
    if (end && !had_snapshot) {
      had_snapshot = true;
      mapi_set_health(s, true);
    }
    if (advanced)
      mapi_reads_kick(s);
  }
  pthread_mutex_lock(&s->mu);
  s->watch = NULL;
  s->watch_chan = NULL;
  pthread_mutex_unlock(&s->mu);
  ms_rpc_stream_free(st);
  mapi_alloc_put(c);
  return had_snapshot;
}

void *mapi_watch_main(void *arg) {
  mapi_service *s = arg;
  int64_t backoff = 100, max_backoff = s->cfg.max_backoff_ms > 0 ? s->cfg.max_backoff_ms : 10000;
  bool failing = false; /* the last attempt failed too: say it at debug level */
  uint64_t seen = 0;    /* the leader generation the backoff was grown against */
  while (!atomic_load(&s->stopping)) {
    ms_error *err = NULL;
    uint64_t gen = atomic_load(&s->leader_gen);
    if (gen != seen) /* a new leader (perhaps while napping): its backoff starts over */
      backoff = 100;
    seen = gen;
    bool had = watch_once(s, &err);
    mapi_view_stream_lost(s->view);
    mapi_set_health(s, false);
    if (atomic_load(&s->stopping)) {
      ms_error_free(err);
      break;
    }
    bool moved = atomic_load(&s->leader_gen) != gen;
    if (had || moved)
      backoff = moved ? 0 : 100; /* a new leader: at once */
    ms_log(failing && !had ? MS_LOG_DEBUG : MS_LOG_WARN, NULL,
           "WatchState: %s; again in %lld ms (view at revision %lld, not serving)", err ? err->msg : "ended",
           (long long)backoff, (long long)mapi_view_revision(s->view));
    failing = !had;
    ms_error_free(err);
    if (backoff && !mapi_nap(s, backoff, gen))
      break;
    backoff = backoff * 2 > max_backoff ? max_backoff : backoff < 100 ? 100 : backoff * 2;
  }
  return NULL;
}
