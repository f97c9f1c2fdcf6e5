#include "meseta/leader-follow.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/time.h"

#define FIRST_BACKOFF_MS 100

struct ms_leader_follow {
  ms_rpc_channel *ch;
  char *who;
  int64_t max_backoff_ms;
  ms_leader_fn fn;
  void *arg;
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv; /* CLOCK_MONOTONIC; stop */
  bool stop;         /* under mu */
  ms_rpc_stream *st; /* the open stream, under mu (for cancelling) */
};

/* Sleeps ms unless stopped; false when stopped. */
static bool nap(ms_leader_follow *f, int64_t ms) {
  struct timespec ts = ms_time_mono_after(ms);
  pthread_mutex_lock(&f->mu);
  while (!f->stop)
    if (pthread_cond_timedwait(&f->cv, &f->mu, &ts) != 0)
      break;
  bool go_on = !f->stop;
  pthread_mutex_unlock(&f->mu);
  return go_on;
}

/* One stream until it ends; the error (the caller's), and whether a message came. */
static bool follow_once(ms_leader_follow *f, ms_error **err) {
  Meseta__V1__WatchLeaderRequest req = MESETA__V1__WATCH_LEADER_REQUEST__INIT;
  ms_rpc_stream *st = ms_rpc_stream_open(f->ch, "/meseta.v1.Registry/WatchLeader", &req.base, NULL, err);
  if (!st)
    return false;
  pthread_mutex_lock(&f->mu);
  f->st = st;
  if (f->stop)
    ms_rpc_stream_cancel(st);
  pthread_mutex_unlock(&f->mu);
  bool got = false;
  for (;;) {
    ProtobufCMessage *m = NULL;
    int r = ms_rpc_stream_recv(st, &meseta__v1__leader_info__descriptor, &m, err);
    if (r <= 0) {
      if (r == 0)
        ms_error_set(err, MS_UNAVAILABLE, "the registry ended the stream");
      break;
    }
    f->fn(f->arg, (const Meseta__V1__LeaderInfo *)m);
    protobuf_c_message_free_unpacked(m, NULL);
    got = true;
  }
  pthread_mutex_lock(&f->mu);
  f->st = NULL;
  pthread_mutex_unlock(&f->mu);
  ms_rpc_stream_free(st);
  return got;
}

static void *follow_main(void *arg) {
  ms_leader_follow *f = arg;
  int64_t backoff = FIRST_BACKOFF_MS;
  for (;;) {
    ms_error *err = NULL;
    if (follow_once(f, &err))
      backoff = FIRST_BACKOFF_MS;
    pthread_mutex_lock(&f->mu);
    bool stop = f->stop;
    pthread_mutex_unlock(&f->mu);
    if (!stop)
      ms_log_warn(NULL, "WatchLeader on %s: %s; again in %lld ms", f->who, err ? err->msg : "ended",
                  (long long)backoff);
    ms_error_free(err);
    if (stop || !nap(f, backoff))
      break;
    backoff = backoff * 2 > f->max_backoff_ms ? f->max_backoff_ms : backoff * 2;
  }
  return NULL;
}

ms_leader_follow *ms_leader_follow_start(ms_rpc_channel *registry, const char *who, int64_t max_backoff_ms,
                                         ms_leader_fn on_leader, void *arg, ms_error **err) {
  ms_leader_follow *f = ms_xcalloc(1, sizeof(*f));
  *f = (ms_leader_follow){.ch = registry,
                          .who = ms_xstrdup(who),
                          .max_backoff_ms =
                              max_backoff_ms > FIRST_BACKOFF_MS ? max_backoff_ms : FIRST_BACKOFF_MS,
                          .fn = on_leader,
                          .arg = arg};
  pthread_mutex_init(&f->mu, NULL);
  ms_cond_init_mono(&f->cv);
  int e = pthread_create(&f->th, NULL, follow_main, f);
  if (e) {
    ms_error_set_errno(err, e, "starting the thread following %s", who);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f->who);
    free(f);
    return NULL;
  }
  return f;
}

void ms_leader_follow_stop(ms_leader_follow *f) {
  if (!f)
    return;
  pthread_mutex_lock(&f->mu);
  f->stop = true;
  if (f->st)
    ms_rpc_stream_cancel(f->st);
  pthread_cond_broadcast(&f->cv);
  pthread_mutex_unlock(&f->mu);
  pthread_join(f->th, NULL);
  pthread_mutex_destroy(&f->mu);
  pthread_cond_destroy(&f->cv);
  free(f->who);
  free(f);
}
