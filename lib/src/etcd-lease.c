/* Leases: grant, keepalive, revoke, and a keeper thread that renews one. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/time.h"

#include "etcd-internal.h"

int ms_etcd_lease_grant(ms_etcd *e, int64_t ttl_s, int64_t id, int64_t *ret_id, int64_t *ret_ttl,
                        ms_error **err) {
  if (ttl_s <= 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "lease grant: TTL %lld s is not positive",
                        (long long)ttl_s);
  ms_etcd__conn *c = ms_etcd__conn_get(e);
  json_t *j = NULL;
  ms_buf_reset(&c->req);
  int rc =
      ms_buf_appendf(&c->req, err, "{\"TTL\":\"%lld\",\"ID\":\"%lld\"}", (long long)ttl_s, (long long)id);
  if (rc == 0)
    rc = ms_etcd__call(e, c, "/v3/lease/grant", 0, NULL, &j, err);
  if (rc == 0) {
    if (ret_id)
      *ret_id = ms_etcd__jint(j, "ID");
    if (ret_ttl)
      *ret_ttl = ms_etcd__jint(j, "TTL");
  } else {
    ms_error_prefix(err, "lease grant (TTL %lld s)", (long long)ttl_s);
  }
  json_decref(j);
  ms_etcd__conn_put(e, c);
  return rc;
}

int ms_etcd_lease_keepalive(ms_etcd *e, int64_t id, int64_t *ret_ttl, ms_error **err) {
  ms_etcd__conn *c = ms_etcd__conn_get(e);
  json_t *j = NULL;
  ms_buf_reset(&c->req);
  int rc = ms_buf_appendf(&c->req, err, "{\"ID\":\"%lld\"}", (long long)id);
  if (rc == 0)
    rc = ms_etcd__call(e, c, "/v3/lease/keepalive", MS_ETCD__IDEMPOTENT, NULL, &j, err);
  if (rc == 0) {
    /* A stream answer: {"result":{"ID":..,"TTL":..}}; no TTL means etcd has no such lease. */
    json_t *r = json_object_get(j, "result");
    int64_t ttl = ms_etcd__jint(r ? r : j, "TTL");
    if (ttl <= 0)
      rc = ms_error_set(err, MS_NOT_FOUND, "lease `%lld` expired or unknown", (long long)id);
    else if (ret_ttl)
      *ret_ttl = ttl;
  } else {
    ms_error_prefix(err, "lease `%lld` keepalive", (long long)id);
  }
  json_decref(j);
  ms_etcd__conn_put(e, c);
  return rc;
}

int ms_etcd_lease_revoke(ms_etcd *e, int64_t id, ms_error **err) {
  ms_etcd__conn *c = ms_etcd__conn_get(e);
  json_t *j = NULL;
  ms_buf_reset(&c->req);
  int rc = ms_buf_appendf(&c->req, err, "{\"ID\":\"%lld\"}", (long long)id);
  if (rc == 0)
    rc = ms_etcd__call(e, c, "/v3/lease/revoke", MS_ETCD__IDEMPOTENT, NULL, &j, err);
  if (rc < 0) {
    if (err && *err && (*err)->code == MS_NOT_FOUND)
      ms_error_set(err, MS_NOT_FOUND, "lease `%lld` expired or unknown", (long long)id);
    else
      ms_error_prefix(err, "lease `%lld` revoke", (long long)id);
  }
  json_decref(j);
  ms_etcd__conn_put(e, c);
  return rc;
}

/* ---- the keeper ------------------------------------------------------------------ */

struct ms_etcd_lease_keeper {
  ms_etcd *e;
  int64_t id;
  int64_t ttl_ms;
  ms_etcd_lease_lost_fn on_lost;
  void *arg;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv; /* on CLOCK_MONOTONIC */
  bool stop;
  _Atomic int64_t renewed_ms; /* when the last successful renewal was sent; 0: none yet */
};

/* Waits up to ms or until stopped; returns true when stopped. */
static bool keeper_wait(ms_etcd_lease_keeper *k, int64_t ms) {
  struct timespec ts = ms_time_mono_after(ms);
  pthread_mutex_lock(&k->mu);
  while (!k->stop) {
    if (pthread_cond_timedwait(&k->cv, &k->mu, &ts) == ETIMEDOUT)
      break;
  }
  bool stop = k->stop;
  pthread_mutex_unlock(&k->mu);
  return stop;
}

static void *keeper_main(void *arg) {
  ms_etcd_lease_keeper *k = arg;
  int64_t last_ok = ms_time_mono_ms();
  int64_t interval = k->ttl_ms / 3 > 0 ? k->ttl_ms / 3 : 1;
  int64_t wait = interval;
  while (!keeper_wait(k, wait)) {
    ms_error *err = NULL;
    int64_t ttl = 0;
    /* etcd renews when the request arrives, after it was sent: the send time is the
     * safe lower bound of the new expiry. */
    int64_t sent = ms_time_mono_ms();
    if (ms_etcd_lease_keepalive(k->e, k->id, &ttl, &err) == 0) {
      last_ok = sent;
      atomic_store(&k->renewed_ms, sent);
      wait = interval;
      continue;
    }
    bool lost = err->code == MS_NOT_FOUND || ms_time_mono_ms() - last_ok >= k->ttl_ms;
    ms_log_debug(NULL, "etcd: lease `%lld` renewal failed%s: %s", (long long)k->id, lost ? " (lost)" : "",
                 err->msg);
    if (lost) {
      if (k->on_lost)
        k->on_lost(k->arg, k->id, err);
      ms_error_free(err);
      break;
    }
    ms_error_free(err);
    /* Retry soon, but leave room for a few tries inside the TTL. */
    wait = interval / 4 > 100 ? interval / 4 : 100;
  }
  return NULL;
}

ms_etcd_lease_keeper *ms_etcd_lease_keeper_start(ms_etcd *e, int64_t id, int64_t ttl_s,
                                                 ms_etcd_lease_lost_fn on_lost, void *arg, ms_error **err) {
  if (ttl_s <= 0) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "lease `%lld` keeper: TTL %lld s is not positive", (long long)id,
                 (long long)ttl_s);
    return NULL;
  }
  ms_etcd_lease_keeper *k = ms_xcalloc(1, sizeof(*k));
  *k = (ms_etcd_lease_keeper){.e = e, .id = id, .ttl_ms = ttl_s * 1000, .on_lost = on_lost, .arg = arg};
  pthread_mutex_init(&k->mu, NULL);
  ms_cond_init_mono(&k->cv);
  int rc = pthread_create(&k->thread, NULL, keeper_main, k);
  if (rc != 0) {
    ms_error_set_errno(err, rc, "lease `%lld` keeper: start thread", (long long)id);
    pthread_cond_destroy(&k->cv);
    pthread_mutex_destroy(&k->mu);
    free(k);
    return NULL;
  }
  return k;
}

int64_t ms_etcd_lease_keeper_renewed_ms(ms_etcd_lease_keeper *k) {
  return atomic_load(&k->renewed_ms);
}

void ms_etcd_lease_keeper_stop(ms_etcd_lease_keeper *k) {
  if (!k)
    return;
  pthread_mutex_lock(&k->mu);
  k->stop = true;
  pthread_cond_signal(&k->cv);
  pthread_mutex_unlock(&k->mu);
  pthread_join(k->thread, NULL);
  pthread_cond_destroy(&k->cv);
  pthread_mutex_destroy(&k->mu);
  free(k);
}
