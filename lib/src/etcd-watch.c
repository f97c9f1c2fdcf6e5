/* Long-lived streams: watches and election observers.
 *
 * Each stream is one thread with its own libcurl handle driven through a multi handle,
 * so that ms_etcd_watch_stop() can wake it (curl_multi_wakeup) and cut the connection
 * at once. The gateway answers one JSON object per line; lines are parsed as they
 * arrive and handed to the callbacks. A dropped connection is retried with backoff
 * on the next endpoints; a watch resumes at the revision after the last one it
 * delivered, so nothing is lost or repeated. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/time.h"

#include "etcd-internal.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

typedef enum stream_kind { STREAM_WATCH, STREAM_OBSERVE } stream_kind;

struct ms_etcd_stream {
  ms_etcd *e;
  stream_kind kind;
  char *key; /* watch key or election name */
  size_t key_len;
  char *range_end; /* watch prefix end, or NULL */
  size_t range_end_len;
  _Atomic int64_t next_rev; /* watch: resume here; 0 until known */
  ms_etcd_watch_cb wcb;
  ms_etcd_observe_cb ocb;
  void *arg;

  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv; /* on CLOCK_MONOTONIC: backoff sleeps */
  atomic_bool stop;
  CURLM *multi;
  CURL *h;
  char url[512];
  char errbuf[CURL_ERROR_SIZE];
  ms_buf body;
  ms_buf line;
  /* Per connection. */
  ms_error *fatal; /* the stream must end (compaction, cancelled by etcd) */
  ms_error *drop;  /* reconnect (etcd sent an error) */
  bool up;         /* etcd accepted the stream on this connection */
  bool reauth;     /* etcd rejected the token */
  ms_etcd_event *evs;
  size_t evs_cap;
};

static void notify_connection(ms_etcd_stream *s, bool up, const ms_error *why) {
  void (*fn)(void *, bool, const ms_error *) =
      s->kind == STREAM_WATCH ? s->wcb.on_connection : s->ocb.on_connection;
  if (fn)
    fn(s->arg, up, why);
}

static void mark_up(ms_etcd_stream *s) {
  if (!s->up) {
    s->up = true;
    notify_connection(s, true, NULL);
  }
}

static const char *quote_key(ms_etcd_stream *s, char *buf, size_t size) {
  return ms_etcd__quote(s->key, s->key_len, buf, size);
}

/* ---- watch answers ---------------------------------------------------------------- */

static void watch_cancelled(ms_etcd_stream *s, json_t *r) {
  char q[MS_ETCD__QUOTE_MAX];
  int64_t compacted = ms_etcd__jint(r, "compact_revision");
  if (compacted > 0) {
    ms_error_set(&s->fatal, MS_OUT_OF_RANGE,
                 "watch `%s` from revision %lld: etcd compacted its history up to revision %lld; read the "
                 "current state again and watch from there",
                 quote_key(s, q, sizeof(q)), (long long)atomic_load(&s->next_rev), (long long)compacted);
    return;
  }
  const char *reason = json_string_value(json_object_get(r, "cancel_reason"));
  if (!reason)
    reason = "no reason given";
  if (strstr(reason, "auth token") || strstr(reason, "user name is empty")) {
    s->reauth = strstr(reason, "auth token") != NULL;
    ms_error_set(&s->drop, MS_UNAUTHENTICATED, "watch `%s`: etcd cancelled it: %s",
                 quote_key(s, q, sizeof(q)), reason);
    return;
  }
  ms_status st = strstr(reason, "permission denied") ? MS_PERMISSION_DENIED : MS_FAILED_PRECONDITION;
  ms_error_set(&s->fatal, st, "watch `%s`: etcd cancelled it: %s", quote_key(s, q, sizeof(q)), reason);
}

static void watch_events(ms_etcd_stream *s, json_t *events) {
  size_t n = json_array_size(events);
  if (n > s->evs_cap) {
    s->evs = ms_xrealloc(s->evs, n * sizeof(*s->evs));
    s->evs_cap = n;
  }
  int64_t next = atomic_load(&s->next_rev);
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    json_t *ev = json_array_get(events, i);
    ms_etcd_event *out = &s->evs[k];
    const char *type = json_string_value(json_object_get(ev, "type"));
    out->type = type && strcmp(type, "DELETE") == 0 ? MS_ETCD_EVENT_DELETE : MS_ETCD_EVENT_PUT;
    if (ms_etcd__kv_from_json(json_object_get(ev, "kv"), &out->kv, &s->drop) < 0)
      break;
    if (out->kv.mod_revision < next) { /* already delivered before a reconnection */
      ms_etcd_kv_release(&out->kv);
      continue;
    }
    k++;
  }
  if (k > 0 && !s->drop) {
    s->wcb.on_events(s->arg, s->evs, k);
    /* Events of one revision always come in one answer. */
    atomic_store(&s->next_rev, s->evs[k - 1].kv.mod_revision + 1);
  }
  for (size_t i = 0; i < k; i++)
    ms_etcd_kv_release(&s->evs[i].kv);
}

static void watch_line(ms_etcd_stream *s, json_t *r) {
  if (json_is_true(json_object_get(r, "canceled"))) {
    watch_cancelled(s, r);
    return;
  }
  json_t *events = json_object_get(r, "events");
  if (json_is_true(json_object_get(r, "created"))) {
    mark_up(s);
  } else if (json_is_array(events) && json_array_size(events) > 0) {
    mark_up(s);
    watch_events(s, events);
  } else {
    /* A progress notification: every event up to header.revision has been sent. */
    int64_t rev = ms_etcd__jrevision(r);
    if (rev + 1 > atomic_load(&s->next_rev))
      atomic_store(&s->next_rev, rev + 1);
  }
}

static void observe_line(ms_etcd_stream *s, json_t *r) {
  json_t *kvj = json_object_get(r, "kv");
  if (!json_is_object(kvj))
    return;
  ms_etcd_kv kv;
  if (ms_etcd__kv_from_json(kvj, &kv, &s->drop) < 0)
    return;
  mark_up(s);
  if (s->ocb.on_leader)
    s->ocb.on_leader(s->arg, &kv);
  ms_etcd_kv_release(&kv);
}

static void stream_line(ms_etcd_stream *s, const char *p, size_t len) {
  json_error_t jerr;
  json_t *j = json_loadb(p, len, 0, &jerr);
  if (!json_is_object(j)) {
    ms_error_set(&s->drop, MS_INTERNAL, "etcd stream `%s`: unreadable line: %s", s->url, jerr.text);
  } else if (json_object_get(j, "error")) {
    ms_etcd__answer_error(s->url, s->kind == STREAM_WATCH ? "/v3/watch" : "/v3/election/observe", 200, j,
                          &s->drop);
    s->reauth = s->drop->code == MS_UNAUTHENTICATED;
  } else {
    json_t *r = json_object_get(j, "result");
    if (s->kind == STREAM_WATCH)
      watch_line(s, r ? r : j);
    else
      observe_line(s, r ? r : j);
  }
  json_decref(j);
}

static size_t stream_write(char *p, size_t size, size_t n, void *arg) {
  ms_etcd_stream *s = arg;
  size_t len = size * n;
  if (atomic_load(&s->stop))
    return 0;
  if (ms_buf_append(&s->line, p, len, NULL) < 0) {
    ms_error_set(&s->drop, MS_RESOURCE_EXHAUSTED, "etcd stream `%s`: a line longer than %zu bytes", s->url,
                 s->line.max);
    return 0;
  }
  size_t start = 0;
  for (size_t i = s->line.len - len; i < s->line.len; i++) {
    if (s->line.data[i] != '\n')
      continue;
    if (i > start)
      stream_line(s, s->line.data + start, i - start);
    start = i + 1;
    if (s->fatal || s->drop || atomic_load(&s->stop))
      return 0;
  }
  if (start > 0) {
    memmove(s->line.data, s->line.data + start, s->line.len - start);
    ms_buf_truncate(&s->line, s->line.len - start, NULL);
  }
  return len;
}

/* ---- the thread ------------------------------------------------------------------- */

static bool stream_wait(ms_etcd_stream *s, int64_t ms) {
  struct timespec ts = ms_time_mono_after(ms);
  pthread_mutex_lock(&s->mu);
  while (!atomic_load(&s->stop))
    if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT)
      break;
  pthread_mutex_unlock(&s->mu);
  return atomic_load(&s->stop);
}

static int build_body(ms_etcd_stream *s, ms_error **err) {
  ms_buf *b = &s->body;
  ms_buf_reset(b);
  if (s->kind == STREAM_OBSERVE)
    return ms_buf_putc(b, '{', err) < 0 || ms_etcd__append_bytes(b, "name", s->key, s->key_len, err) < 0 ||
                   ms_buf_putc(b, '}', err) < 0
               ? MS_ERR
               : 0;
  if (ms_buf_appends(b, "{\"create_request\":{", err) < 0 ||
      ms_etcd__append_bytes(b, "key", s->key, s->key_len, err) < 0)
    return MS_ERR;
  if (s->range_end && (ms_buf_putc(b, ',', err) < 0 ||
                       ms_etcd__append_bytes(b, "range_end", s->range_end, s->range_end_len, err) < 0))
    return MS_ERR;
  return ms_buf_appendf(b, err, ",\"start_revision\":\"%lld\",\"progress_notify\":true}}",
                        (long long)atomic_load(&s->next_rev));
}

/* For a watch "from now": the revision to start at, read once so that a reconnection
 * resumes from the same point. */
static int watch_origin(ms_etcd_stream *s, ms_error **err) {
  ms_etcd_range_opts o = {.count_only = true, .serializable = false};
  ms_etcd_range_result r = {0};
  if (ms_etcd_range(s->e, s->key, s->key_len, &o, &r, err) < 0)
    return MS_ERR;
  atomic_store(&s->next_rev, r.revision + 1);
  ms_etcd_range_result_release(&r);
  return 0;
}

/* One connection: runs until it ends, fails or the stream is stopped. Returns the curl
 * result. */
static CURLcode stream_connect(ms_etcd_stream *s, size_t ep, const char *token) {
  const char *path = s->kind == STREAM_WATCH ? "/v3/watch" : "/v3/election/observe";
  snprintf(s->url, sizeof(s->url), "%s%s", s->e->eps[ep].url, path);
  struct curl_slist *hdrs = ms_etcd__headers(token);
  curl_easy_setopt(s->h, CURLOPT_URL, s->url);
  curl_easy_setopt(s->h, CURLOPT_POSTFIELDS, s->body.data);
  curl_easy_setopt(s->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)s->body.len);
  curl_easy_setopt(s->h, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(s->h, CURLOPT_TIMEOUT_MS, 0L);
  ms_buf_reset(&s->line);
  s->errbuf[0] = '\0';
  CURLcode rc = CURLE_OK;
  curl_multi_add_handle(s->multi, s->h);
  int running = 1;
  while (running && !atomic_load(&s->stop)) {
    if (curl_multi_perform(s->multi, &running) != CURLM_OK || !running)
      break;
    curl_multi_poll(s->multi, NULL, 0, 1000, NULL);
  }
  int q = 0;
  CURLMsg *msg;
  while ((msg = curl_multi_info_read(s->multi, &q)))
    if (msg->msg == CURLMSG_DONE)
      rc = msg->data.result;
  curl_multi_remove_handle(s->multi, s->h);
  curl_easy_setopt(s->h, CURLOPT_HTTPHEADER, NULL);
  curl_slist_free_all(hdrs);
  return rc;
}

static void *stream_main(void *arg) {
  ms_etcd_stream *s = arg;
  ms_etcd *e = s->e;
  size_t ep = atomic_load(&e->current) % e->n_eps;
  int64_t backoff = BACKOFF_MIN_MS;
  while (!atomic_load(&s->stop)) {
    ms_error *why = NULL;
    char *token = NULL;
    unsigned gen = 0;
    s->up = false;
    s->reauth = false;
    if (s->kind == STREAM_WATCH && atomic_load(&s->next_rev) == 0 && watch_origin(s, &why) < 0)
      goto retry;
    if (build_body(s, &why) < 0 || ms_etcd__token(e, &token, &gen, &why) < 0)
      goto retry;
    CURLcode rc = stream_connect(s, ep, token);
    free(token);
    if (atomic_load(&s->stop))
      break;
    if (s->fatal) {
      if (s->kind == STREAM_WATCH ? s->wcb.on_error : s->ocb.on_error)
        (s->kind == STREAM_WATCH ? s->wcb.on_error : s->ocb.on_error)(s->arg, s->fatal);
      break;
    }
    if (s->drop) {
      why = TAKE_PTR(s->drop);
      if (s->reauth)
        ms_etcd__token_invalidate(e, gen);
    } else if (rc != CURLE_OK) {
      long oserr = 0;
      curl_easy_getinfo(s->h, CURLINFO_OS_ERRNO, &oserr);
      char buf[128];
      ms_error_set(&why, MS_UNAVAILABLE, "etcd `%s`: %s", s->url,
                   rc == CURLE_COULDNT_CONNECT && oserr ? strerror_r((int)oserr, buf, sizeof(buf))
                   : s->errbuf[0]                       ? s->errbuf
                                                        : curl_easy_strerror(rc));
    } else {
      long http = 0;
      curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &http);
      ms_error_set(&why, MS_UNAVAILABLE, "etcd `%s`: stream ended (HTTP %ld)", s->url, http);
    }
  retry:
    if (s->up)
      backoff = BACKOFF_MIN_MS; /* it worked a while: come back fast */
    else
      ep = (ep + 1) % e->n_eps; /* this endpoint did not take it: try the next */
    ms_log_debug(NULL, "etcd: stream dropped, retrying in %lld ms: %s", (long long)backoff,
                 why ? why->msg : "no reason");
    notify_connection(s, false, why);
    ms_error_free(why);
    if (stream_wait(s, backoff))
      break;
    backoff = backoff * 2 < BACKOFF_MAX_MS ? backoff * 2 : BACKOFF_MAX_MS;
  }
  return NULL;
}

static size_t discard_header(char *p, size_t size, size_t n, void *arg) {
  (void)p, (void)arg;
  return size * n;
}

static ms_etcd_stream *stream_start(ms_etcd *e, stream_kind kind, const void *key, size_t key_len,
                                    ms_error **err) {
  ms_etcd_stream *s = ms_xcalloc(1, sizeof(*s));
  s->e = e;
  s->kind = kind;
  s->key = ms_xmalloc(key_len + 1);
  memcpy(s->key, key, key_len);
  s->key[key_len] = '\0';
  s->key_len = key_len;
  pthread_mutex_init(&s->mu, NULL);
  ms_cond_init_mono(&s->cv);
  ms_buf_init(&s->body, 64 * 1024 + key_len * 4);
  ms_buf_init(&s->line, e->max_response_bytes);
  s->h = ms_etcd__easy_new(e);
  s->multi = curl_multi_init();
  if (!s->multi) {
    fputs("meseta: curl_multi_init failed (out of memory)\n", stderr);
    abort();
  }
  curl_easy_setopt(s->h, CURLOPT_WRITEFUNCTION, stream_write);
  curl_easy_setopt(s->h, CURLOPT_WRITEDATA, s);
  curl_easy_setopt(s->h, CURLOPT_HEADERFUNCTION, discard_header);
  curl_easy_setopt(s->h, CURLOPT_ERRORBUFFER, s->errbuf);
  (void)err;
  return s;
}

static int stream_run(ms_etcd_stream *s, ms_error **err) {
  int rc = pthread_create(&s->thread, NULL, stream_main, s);
  if (rc != 0)
    return ms_error_set_errno(err, rc, "etcd stream: start thread");
  return 0;
}

static void stream_free(ms_etcd_stream *s) {
  curl_multi_cleanup(s->multi);
  curl_easy_cleanup(s->h);
  ms_buf_release(&s->body);
  ms_buf_release(&s->line);
  ms_error_free(s->fatal);
  ms_error_free(s->drop);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
  free(s->evs);
  free(s->key);
  free(s->range_end);
  free(s);
}

static void stream_stop(ms_etcd_stream *s) {
  if (!s)
    return;
  pthread_mutex_lock(&s->mu);
  atomic_store(&s->stop, true);
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
  curl_multi_wakeup(s->multi);
  pthread_join(s->thread, NULL);
  stream_free(s);
}

/* ---- public ------------------------------------------------------------------------- */

ms_etcd_watch *ms_etcd_watch_start(ms_etcd *e, const void *key, size_t key_len, bool prefix,
                                   int64_t start_revision, const ms_etcd_watch_cb *cb, void *arg,
                                   ms_error **err) {
  char q[MS_ETCD__QUOTE_MAX];
  if (!cb || !cb->on_events) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "watch `%s`: no on_events callback",
                 ms_etcd__quote(key, key_len, q, sizeof(q)));
    return NULL;
  }
  if (start_revision < 0) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "watch `%s`: negative start revision %lld",
                 ms_etcd__quote(key, key_len, q, sizeof(q)), (long long)start_revision);
    return NULL;
  }
  ms_etcd_stream *s = stream_start(e, STREAM_WATCH, key, key_len, err);
  if (prefix)
    s->range_end = ms_etcd__prefix_end(key, key_len, &s->range_end_len);
  atomic_store(&s->next_rev, start_revision);
  s->wcb = *cb;
  s->arg = arg;
  if (stream_run(s, err) < 0) {
    stream_free(s);
    return NULL;
  }
  return s;
}

int64_t ms_etcd_watch_next_revision(ms_etcd_watch *w) {
  return atomic_load(&w->next_rev);
}

void ms_etcd_watch_stop(ms_etcd_watch *w) {
  stream_stop(w);
}

ms_etcd_observe *ms_etcd_observe_start(ms_etcd *e, const void *name, size_t name_len,
                                       const ms_etcd_observe_cb *cb, void *arg, ms_error **err) {
  if (!cb || !cb->on_leader) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "observe: no on_leader callback");
    return NULL;
  }
  ms_etcd_stream *s = stream_start(e, STREAM_OBSERVE, name, name_len, err);
  s->ocb = *cb;
  s->arg = arg;
  if (stream_run(s, err) < 0) {
    stream_free(s);
    return NULL;
  }
  return s;
}

void ms_etcd_observe_stop(ms_etcd_observe *o) {
  stream_stop(o);
}
