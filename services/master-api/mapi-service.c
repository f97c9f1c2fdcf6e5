/* master-api's service: setup, the watch thread, health, shutdown. */
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/time.h"
#include "meseta/v1/operator.pb-c.h"
#include "meseta/v1/scheduler.pb-c.h"

#include "mapi-internal.h"

mapi_service *mapi_service_new(const mapi_config *cfg, ms_error **err) {
  if (!cfg->allocator || !*cfg->allocator) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "flag `--allocator`: required");
    return NULL;
  }
  mapi_service *s = ms_xcalloc(1, sizeof(*s));
  s->cfg = *cfg;
  s->cfg.allocator = ms_xstrdup(cfg->allocator);
  s->cfg.name = ms_xstrdup(cfg->name ? cfg->name : "master-api");
  s->cfg.allocator_tls = NULL; /* only for the channel, below */
  if (s->cfg.forwarders < 1)
    s->cfg.forwarders = 1;
  pthread_mutex_init(&s->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&s->cond, &ca);
  pthread_condattr_destroy(&ca);
  s->view = mapi_view_new();
  ms_rpc_channel_options co = {.tls = cfg->allocator_tls,
                               .max_message_bytes = cfg->max_message_bytes,
                               .max_backoff_ms = cfg->max_backoff_ms};
  if (!(s->alloc = ms_rpc_channel_new(s->cfg.allocator, &co, err)) ||
      !(s->fwd = ms_workq_new(s->cfg.forwarders, 0, err))) {
    ms_error_prefix(err, "allocator `%s`", s->cfg.allocator);
    mapi_service_free(s);
    return NULL;
  }
  return s;
}

int mapi_service_add(mapi_service *s, ms_rpc_server *srv, ms_error **err) {
  s->srv = srv;
  size_t n = mapi_n_operator_reads + mapi_n_operator_writes;
  _cleanup_free_ ms_rpc_method *ops = ms_xmalloc(n * sizeof(*ops));
  memcpy(ops, mapi_operator_reads, mapi_n_operator_reads * sizeof(*ops));
  memcpy(ops + mapi_n_operator_reads, mapi_operator_writes, mapi_n_operator_writes * sizeof(*ops));
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

int mapi_service_start(mapi_service *s, ms_error **err) {
  mapi_set_health(s, false); /* until the first snapshot */
  int e;
  if ((e = pthread_create(&s->watch_thread, NULL, mapi_watch_main, s)) != 0)
    return ms_error_set_errno(err, e, "starting the watch thread");
  s->watch_started = true;
  if ((e = pthread_create(&s->park_thread, NULL, mapi_park_main, s)) != 0)
    return ms_error_set_errno(err, e, "starting the reads thread");
  s->park_started = true;
  return 0;
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
  if (s->watch_started)
    pthread_join(s->watch_thread, NULL);
  s->watch_started = false;
  if (s->park_started)
    pthread_join(s->park_thread, NULL); /* answers what is parked */
  s->park_started = false;
  mapi_relays_close(s);
  ms_workq_free(TAKE_PTR(s->fwd)); /* runs the forwards queued: each answers its call */
}

void mapi_service_free(mapi_service *s) {
  if (!s)
    return;
  mapi_service_close(s);
  ms_rpc_channel_free(s->alloc);
  mapi_view_free(s->view);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cond);
  free((char *)s->cfg.allocator);
  free((char *)s->cfg.name);
  free(s);
}

/* ---- the watch thread ---- */

/* Sleeps ms unless stopping; returns false when stopping. */
static bool nap(mapi_service *s, int64_t ms) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (ms % 1000) * 1000000;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  pthread_mutex_lock(&s->mu);
  while (!atomic_load(&s->stopping))
    if (pthread_cond_timedwait(&s->cond, &s->mu, &ts) != 0)
      break;
  bool go_on = !atomic_load(&s->stopping);
  pthread_mutex_unlock(&s->mu);
  return go_on;
}

/* One WatchState stream, until it ends. Returns true when a snapshot completed. */
static bool watch_once(mapi_service *s, ms_error **err) {
  Meseta__V1__WatchStateRequest req = MESETA__V1__WATCH_STATE_REQUEST__INIT;
  req.watcher = (char *)s->cfg.name;
  req.max_chunk_bytes = s->cfg.max_chunk_bytes;
  ms_rpc_stream *st = ms_rpc_stream_open(s->alloc, "/meseta.v1.Allocator/WatchState", &req.base, NULL, err);
  if (!st)
    return false;
  pthread_mutex_lock(&s->mu);
  s->watch = st;
  if (atomic_load(&s->stopping))
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
  pthread_mutex_unlock(&s->mu);
  ms_rpc_stream_free(st);
  return had_snapshot;
}

void *mapi_watch_main(void *arg) {
  mapi_service *s = arg;
  int64_t backoff = 100, max_backoff = s->cfg.max_backoff_ms > 0 ? s->cfg.max_backoff_ms : 10000;
  while (!atomic_load(&s->stopping)) {
    ms_error *err = NULL;
    bool had = watch_once(s, &err);
    mapi_view_stream_lost(s->view);
    mapi_set_health(s, false);
    if (atomic_load(&s->stopping)) {
      ms_error_free(err);
      break;
    }
    if (had)
      backoff = 100;
    ms_log_warn(NULL, "WatchState on %s: %s; again in %lld ms (view at revision %lld, not serving)",
                s->cfg.allocator, err ? err->msg : "ended", (long long)backoff,
                (long long)mapi_view_revision(s->view));
    ms_error_free(err);
    if (!nap(s, backoff))
      break;
    backoff = backoff * 2 > max_backoff ? max_backoff : backoff * 2;
  }
  return NULL;
}
