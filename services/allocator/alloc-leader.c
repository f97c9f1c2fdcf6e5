#include "alloc-leader.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/time.h"

struct alloc_leader {
  ms_etcd *etcd;
  char *election, *address;
  int64_t ttl_s;
  alloc_leader_fn on_change;
  void *arg;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cond;
  bool stopping, lost, leading;
  ms_etcd_cancel *cancel;       /* the campaign in progress */
  ms_etcd_lease_keeper *keeper; /* the candidacy's, under mu */
  int64_t granted_ms, ttl_ms;   /* the grant's send time and its TTL, under mu */
};

/* The local lease deadline (see the header). Called with mu held. */
static int64_t deadline_locked(alloc_leader *l) {
  int64_t renewed = l->keeper ? ms_etcd_lease_keeper_renewed_ms(l->keeper) : 0;
  int64_t from = renewed > l->granted_ms ? renewed : l->granted_ms;
  int64_t margin = l->ttl_ms / 10 > 100 ? l->ttl_ms / 10 : 100;
  return from + l->ttl_ms - margin;
}

/* Ends the candidacy when its deadline passed. Called with mu held. */
static bool check_deadline_locked(alloc_leader *l) {
  if (!l->leading || l->lost)
    return !l->lost;
  if (ms_time_mono_ms() < deadline_locked(l))
    return true;
  l->lost = true;
  pthread_cond_broadcast(&l->cond);
  return false;
}

static void on_lost(void *arg, int64_t id, const ms_error *why) {
  alloc_leader *l = arg;
  ms_log_debug(NULL, "election `%s`: lease %lld lost: %s", l->election, (long long)id, why ? why->msg : "");
  pthread_mutex_lock(&l->mu);
  l->lost = true;
  if (l->cancel)
    ms_etcd_cancel_trigger(l->cancel);
  pthread_cond_broadcast(&l->cond);
  pthread_mutex_unlock(&l->mu);
}

/* Waits until stopping or lost (while leading, also until the local deadline passes),
 * or, with ms >= 0, until ms pass. Called with mu held; cond is on CLOCK_MONOTONIC. */
static void wait_locked(alloc_leader *l, int64_t ms) {
  int64_t until = ms >= 0 ? ms_time_mono_ms() + ms : INT64_MAX;
  while (!l->stopping && !l->lost) {
    int64_t now = ms_time_mono_ms();
    if (now >= until || !check_deadline_locked(l))
      break;
    int64_t wake = until;
    if (l->leading) {
      int64_t d = deadline_locked(l);
      wake = d < wake ? d : wake;
    }
    if (wake == INT64_MAX) {
      pthread_cond_wait(&l->cond, &l->mu);
      continue;
    }
    struct timespec ts = ms_time_mono_after(wake - now);
    pthread_cond_timedwait(&l->cond, &l->mu, &ts);
  }
}

/* One candidacy: a lease, a campaign, and leadership until the lease is lost. */
static void candidacy(alloc_leader *l, int64_t *backoff_ms) {
  ms_error *err = NULL;
  int64_t lease = 0;
  ms_etcd_lease_keeper *keeper = NULL;
  ms_etcd_leader_key key = {0};
  bool elected = false;
  int64_t granted = ms_time_mono_ms(), ttl = 0;
  if (ms_etcd_lease_grant(l->etcd, l->ttl_s, 0, &lease, &ttl, &err) < 0)
    goto out;
  if (ttl <= 0)
    ttl = l->ttl_s;
  if (!(keeper = ms_etcd_lease_keeper_start(l->etcd, lease, ttl, on_lost, l, &err)))
    goto out;
  pthread_mutex_lock(&l->mu);
  l->keeper = keeper;
  l->granted_ms = granted;
  l->ttl_ms = ttl * 1000;
  pthread_mutex_unlock(&l->mu);
  ms_etcd_cancel *cancel = ms_etcd_cancel_new();
  pthread_mutex_lock(&l->mu);
  l->cancel = cancel;
  if (l->stopping || l->lost)
    ms_etcd_cancel_trigger(cancel);
  pthread_mutex_unlock(&l->mu);
  int rc = ms_etcd_campaign(l->etcd, l->election, strlen(l->election), lease, l->address, strlen(l->address),
                            0, cancel, &key, &err);
  pthread_mutex_lock(&l->mu);
  l->cancel = NULL;
  pthread_mutex_unlock(&l->mu);
  ms_etcd_cancel_free(cancel);
  if (rc < 0)
    goto out;
  elected = true;
  *backoff_ms = 0;
  pthread_mutex_lock(&l->mu);
  bool stay = !l->stopping && !l->lost;
  l->leading = stay;
  stay = stay && check_deadline_locked(l); /* the campaign may have outlasted the lease */
  pthread_mutex_unlock(&l->mu);
  if (stay) {
    ms_log_debug(NULL, "election `%s`: leading as `%s`", l->election, l->address);
    l->on_change(l->arg, true);
  }
  pthread_mutex_lock(&l->mu);
  wait_locked(l, -1);
  bool lost = l->lost;
  l->leading = false;
  pthread_mutex_unlock(&l->mu);
  if (stay && lost)
    l->on_change(l->arg, false);
out:
  pthread_mutex_lock(&l->mu);
  l->keeper = NULL;
  pthread_mutex_unlock(&l->mu);
  if (err) {
    if (err->code != MS_CANCELLED)
      ms_log_debug(NULL, "election `%s`: %s", l->election, err->msg);
    ms_error_free(err);
    err = NULL;
  }
  ms_etcd_lease_keeper_stop(keeper);
  if (elected)
    ms_etcd_resign(l->etcd, &key, NULL); /* let a standby in now, not after the TTL */
  ms_etcd_leader_key_release(&key);
  if (lease)
    ms_etcd_lease_revoke(l->etcd, lease, NULL);
  if (!elected)
    *backoff_ms = *backoff_ms ? (*backoff_ms * 2 > 5000 ? 5000 : *backoff_ms * 2) : 100;
}

static void *leader_main(void *arg) {
  alloc_leader *l = arg;
  int64_t backoff = 0;
  for (;;) {
    pthread_mutex_lock(&l->mu);
    if (backoff)
      wait_locked(l, backoff);
    l->lost = false;
    bool stop = l->stopping;
    pthread_mutex_unlock(&l->mu);
    if (stop)
      return NULL;
    candidacy(l, &backoff);
  }
}

alloc_leader *alloc_leader_start(ms_etcd *etcd, const char *election, const char *address, int64_t ttl_s,
                                 alloc_leader_fn on_change, void *arg, ms_error **err) {
  if (!election || !*election || !address || !*address) {
    ms_error_set(err, MS_INVALID_ARGUMENT,
                 "leader election needs an election name and this allocator's address");
    return NULL;
  }
  alloc_leader *l = ms_xcalloc(1, sizeof(*l));
  l->etcd = etcd;
  l->election = ms_xstrdup(election);
  l->address = ms_xstrdup(address);
  l->ttl_s = ttl_s > 0 ? ttl_s : 2;
  l->on_change = on_change;
  l->arg = arg;
  pthread_mutex_init(&l->mu, NULL);
  ms_cond_init_mono(&l->cond);
  int e = pthread_create(&l->thread, NULL, leader_main, l);
  if (e != 0) {
    ms_error_set_errno(err, e, "election `%s`: start its thread", election);
    free(l->election);
    free(l->address);
    free(l);
    return NULL;
  }
  return l;
}

bool alloc_leader_is_leading(alloc_leader *l) {
  pthread_mutex_lock(&l->mu);
  bool leading = l->leading;
  pthread_mutex_unlock(&l->mu);
  return leading;
}

bool alloc_leader_valid(alloc_leader *l) {
  if (!l)
    return false;
  pthread_mutex_lock(&l->mu);
  bool valid = l->leading && check_deadline_locked(l);
  pthread_mutex_unlock(&l->mu);
  return valid;
}

void alloc_leader_stop(alloc_leader *l) {
  if (!l)
    return;
  pthread_mutex_lock(&l->mu);
  l->stopping = true;
  if (l->cancel)
    ms_etcd_cancel_trigger(l->cancel);
  pthread_cond_broadcast(&l->cond);
  pthread_mutex_unlock(&l->mu);
  pthread_join(l->thread, NULL);
  free(l->election);
  free(l->address);
  pthread_mutex_destroy(&l->mu);
  pthread_cond_destroy(&l->cond);
  free(l);
}
