/* The etcd client's core: options, the pool of libcurl handles, one request with
 * failover between endpoints, error answers, authentication and cancellation. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"

#include "etcd-internal.h"

#define DEFAULT_REQUEST_TIMEOUT_MS 5000
#define DEFAULT_CONNECT_TIMEOUT_MS 2000
#define DEFAULT_MAX_RESPONSE (256u << 20)
#define DEFAULT_MAX_IDLE 8
#define MAX_ENDPOINT_LEN 400

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- client ---------------------------------------------------------------- */

static int add_endpoint(ms_etcd *e, const char *url, ms_error **err) {
  if (!url || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0))
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "etcd endpoint `%s`: want http://host:port or https://host:port", url ? url : "");
  size_t len = strlen(url);
  while (len > 0 && url[len - 1] == '/')
    len--;
  if (len > MAX_ENDPOINT_LEN || len <= 8)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "etcd endpoint `%s`: bad length", url);
  e->eps[e->n_eps++].url = ms_xstrndup(url, len);
  return 0;
}

static char *dup_opt(const char *s) {
  return s && *s ? ms_xstrdup(s) : NULL;
}

ms_etcd *ms_etcd_new(const ms_etcd_options *o, ms_error **err) {
  if (!o || o->n_endpoints == 0 || !o->endpoints) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "etcd client: no endpoint given");
    return NULL;
  }
  if ((o->cert_file && *o->cert_file) != (o->key_file && *o->key_file)) {
    ms_error_set(err, MS_INVALID_ARGUMENT,
                 "etcd client: a client certificate needs both cert_file and key_file");
    return NULL;
  }
  if (o->password && !o->username) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "etcd client: a password without a username");
    return NULL;
  }
  pthread_once(&curl_once, curl_init_once);
  ms_etcd *e = ms_xcalloc(1, sizeof(*e));
  pthread_mutex_init(&e->pool_mu, NULL);
  pthread_mutex_init(&e->token_mu, NULL);
  pthread_mutex_init(&e->auth_mu, NULL);
  e->gen = 1;
  e->eps = ms_xcalloc(o->n_endpoints, sizeof(*e->eps));
  for (size_t i = 0; i < o->n_endpoints; i++) {
    if (add_endpoint(e, o->endpoints[i], err) < 0) {
      ms_etcd_free(e);
      return NULL;
    }
  }
  e->request_timeout_ms = o->request_timeout_ms > 0 ? o->request_timeout_ms : DEFAULT_REQUEST_TIMEOUT_MS;
  e->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
  e->ca_file = dup_opt(o->ca_file);
  e->cert_file = dup_opt(o->cert_file);
  e->key_file = dup_opt(o->key_file);
  e->username = dup_opt(o->username);
  e->password = ms_xstrdup(o->password ? o->password : "");
  e->max_request_bytes = o->max_request_bytes ? o->max_request_bytes : MS_ETCD_DEFAULT_MAX_REQUEST;
  e->max_response_bytes = o->max_response_bytes ? o->max_response_bytes : DEFAULT_MAX_RESPONSE;
  e->max_idle = o->max_idle_connections ? o->max_idle_connections : DEFAULT_MAX_IDLE;
  return e;
}

static void conn_free(ms_etcd__conn *c) {
  if (!c)
    return;
  curl_easy_cleanup(c->h);
  curl_slist_free_all(c->hdrs);
  ms_buf_release(&c->req);
  ms_buf_release(&c->resp);
  free(c);
}

void ms_etcd_free(ms_etcd *e) {
  if (!e)
    return;
  while (e->idle) {
    ms_etcd__conn *c = e->idle;
    e->idle = c->next;
    conn_free(c);
  }
  for (size_t i = 0; i < e->n_eps; i++)
    free(e->eps[i].url);
  free(e->eps);
  free(e->ca_file);
  free(e->cert_file);
  free(e->key_file);
  free(e->username);
  free(e->password);
  free(e->token);
  pthread_mutex_destroy(&e->pool_mu);
  pthread_mutex_destroy(&e->token_mu);
  pthread_mutex_destroy(&e->auth_mu);
  free(e);
}

const char *ms_etcd_current_endpoint(ms_etcd *e) {
  return e->eps[atomic_load(&e->current) % e->n_eps].url;
}

/* ---- handles and the pool ----------------------------------------------------- */

CURL *ms_etcd__easy_new(ms_etcd *e) {
  CURL *h = curl_easy_init();
  if (!h) {
    fputs("meseta: curl_easy_init failed (out of memory)\n", stderr);
    abort();
  }
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 10L);
  curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 5L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)e->connect_timeout_ms);
  /* etcd serves gRPC on HTTP/2 and the gateway on HTTP/1.1 on the same port. */
  curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  curl_easy_setopt(h, CURLOPT_POST, 1L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  if (e->ca_file)
    curl_easy_setopt(h, CURLOPT_CAINFO, e->ca_file);
  if (e->cert_file) {
    curl_easy_setopt(h, CURLOPT_SSLCERT, e->cert_file);
    curl_easy_setopt(h, CURLOPT_SSLKEY, e->key_file);
  }
  return h;
}

struct curl_slist *ms_etcd__headers(const char *token) {
  struct curl_slist *l = curl_slist_append(NULL, "Content-Type: application/json");
  l = curl_slist_append(l, "Expect:"); /* no 100-continue round trip for larger bodies */
  if (token && *token) {
    _cleanup_free_ char *h = ms_xasprintf("Authorization: %s", token);
    l = curl_slist_append(l, h);
  }
  if (!l) {
    fputs("meseta: curl_slist_append failed (out of memory)\n", stderr);
    abort();
  }
  return l;
}

static size_t conn_write(char *p, size_t size, size_t n, void *arg) {
  ms_etcd__conn *c = arg;
  if (ms_buf_append(&c->resp, p, size * n, NULL) < 0) {
    c->too_big = true;
    return 0;
  }
  return size * n;
}

ms_etcd__conn *ms_etcd__conn_get(ms_etcd *e) {
  pthread_mutex_lock(&e->pool_mu);
  ms_etcd__conn *c = e->idle;
  if (c) {
    e->idle = c->next;
    e->n_idle--;
  }
  pthread_mutex_unlock(&e->pool_mu);
  if (c) {
    c->next = NULL;
    return c;
  }
  c = ms_xcalloc(1, sizeof(*c));
  c->h = ms_etcd__easy_new(e);
  /* Every key and value goes out as base64 (4/3) inside a little JSON. */
  ms_buf_init(&c->req, e->max_request_bytes / 3 * 4 * 2 + 64 * 1024);
  ms_buf_init(&c->resp, e->max_response_bytes);
  c->hdrs = ms_etcd__headers(NULL);
  c->hdr_gen = 0;
  curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, conn_write);
  curl_easy_setopt(c->h, CURLOPT_WRITEDATA, c);
  curl_easy_setopt(c->h, CURLOPT_ERRORBUFFER, c->errbuf);
  curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, c->hdrs);
  return c;
}

void ms_etcd__conn_put(ms_etcd *e, ms_etcd__conn *c) {
  if (!c)
    return;
  /* Do not keep a huge answer's memory around in an idle handle. */
  if (c->resp.cap > 1u << 20)
    ms_buf_release(&c->resp);
  if (c->req.cap > 1u << 20)
    ms_buf_release(&c->req);
  pthread_mutex_lock(&e->pool_mu);
  if (e->n_idle < e->max_idle) {
    c->next = e->idle;
    e->idle = c;
    e->n_idle++;
    c = NULL;
  }
  pthread_mutex_unlock(&e->pool_mu);
  conn_free(c);
}

/* ---- cancellation ----------------------------------------------------------------- */

ms_etcd_cancel *ms_etcd_cancel_new(void) {
  ms_etcd_cancel *c = ms_xcalloc(1, sizeof(*c));
  pthread_mutex_init(&c->mu, NULL);
  return c;
}

void ms_etcd_cancel_trigger(ms_etcd_cancel *c) {
  pthread_mutex_lock(&c->mu);
  c->cancelled = true;
  if (c->active)
    curl_multi_wakeup(c->active);
  pthread_mutex_unlock(&c->mu);
}

void ms_etcd_cancel_free(ms_etcd_cancel *c) {
  if (!c)
    return;
  pthread_mutex_destroy(&c->mu);
  free(c);
}

/* Runs a transfer through a multi handle so that `cancel` can interrupt it at once. */
static CURLcode perform_cancellable(CURL *h, ms_etcd_cancel *cancel) {
  CURLM *m = curl_multi_init();
  if (!m)
    return CURLE_OUT_OF_MEMORY;
  curl_multi_add_handle(m, h);
  CURLcode rc = CURLE_OK;
  pthread_mutex_lock(&cancel->mu);
  bool cancelled = cancel->cancelled;
  cancel->active = cancelled ? NULL : m;
  pthread_mutex_unlock(&cancel->mu);
  int running = 1;
  while (!cancelled) {
    if (curl_multi_perform(m, &running) != CURLM_OK)
      break;
    if (!running)
      break;
    curl_multi_poll(m, NULL, 0, 1000, NULL);
    pthread_mutex_lock(&cancel->mu);
    cancelled = cancel->cancelled;
    pthread_mutex_unlock(&cancel->mu);
  }
  if (cancelled) {
    rc = CURLE_ABORTED_BY_CALLBACK;
  } else {
    int q = 0;
    CURLMsg *msg;
    while ((msg = curl_multi_info_read(m, &q)))
      if (msg->msg == CURLMSG_DONE)
        rc = msg->data.result;
  }
  pthread_mutex_lock(&cancel->mu);
  cancel->active = NULL;
  pthread_mutex_unlock(&cancel->mu);
  curl_multi_remove_handle(m, h);
  curl_multi_cleanup(m);
  return rc;
}

/* ---- authentication ------------------------------------------------------------- */

void ms_etcd__token_invalidate(ms_etcd *e, unsigned gen) {
  pthread_mutex_lock(&e->token_mu);
  if (e->gen == gen && e->token) {
    free(e->token);
    e->token = NULL;
  }
  pthread_mutex_unlock(&e->token_mu);
}

/* Gets a new token from etcd unless another thread got one meanwhile. */
static int authenticate(ms_etcd *e, ms_error **err) {
  pthread_mutex_lock(&e->auth_mu);
  pthread_mutex_lock(&e->token_mu);
  bool have = e->token != NULL;
  pthread_mutex_unlock(&e->token_mu);
  int rc = 0;
  if (!have) {
    ms_etcd__conn *c = ms_etcd__conn_get(e);
    json_t *j = NULL;
    if (c->hdr_gen != 0) { /* no stale token on the authenticate call */
      curl_slist_free_all(c->hdrs);
      c->hdrs = ms_etcd__headers(NULL);
      c->hdr_gen = 0;
      curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, c->hdrs);
    }
    ms_buf_reset(&c->req);
    if (ms_buf_appends(&c->req, "{\"name\":", err) < 0 ||
        ms_etcd__append_jstr(&c->req, e->username, err) < 0 ||
        ms_buf_appends(&c->req, ",\"password\":", err) < 0 ||
        ms_etcd__append_jstr(&c->req, e->password, err) < 0 || ms_buf_putc(&c->req, '}', err) < 0) {
      rc = MS_ERR;
    } else if (ms_etcd__call(e, c, "/v3/auth/authenticate", MS_ETCD__NO_AUTH | MS_ETCD__IDEMPOTENT, NULL, &j,
                             err) < 0) {
      /* etcd without auth enabled: carry on without a token. */
      if (err && *err && strstr((*err)->msg, "authentication is not enabled")) {
        ms_error_free(*err);
        *err = NULL;
        j = json_object();
      } else {
        rc = ms_error_prefix(err, "authenticate as `%s`", e->username);
      }
    }
    if (rc == 0) {
      const char *t = json_string_value(json_object_get(j, "token"));
      pthread_mutex_lock(&e->token_mu);
      free(e->token);
      e->token = ms_xstrdup(t ? t : "");
      e->gen++;
      pthread_mutex_unlock(&e->token_mu);
      ms_log_debug(NULL, "etcd: authenticated as `%s`", e->username);
    }
    json_decref(j);
    ms_etcd__conn_put(e, c);
  }
  pthread_mutex_unlock(&e->auth_mu);
  return rc;
}

int ms_etcd__token(ms_etcd *e, char **ret_token, unsigned *ret_gen, ms_error **err) {
  if (!e->username) {
    *ret_token = NULL;
    *ret_gen = 0;
    return 0;
  }
  for (;;) {
    pthread_mutex_lock(&e->token_mu);
    if (e->token) {
      *ret_token = ms_xstrdup(e->token);
      *ret_gen = e->gen;
      pthread_mutex_unlock(&e->token_mu);
      return 0;
    }
    pthread_mutex_unlock(&e->token_mu);
    if (authenticate(e, err) < 0)
      return MS_ERR;
  }
}

/* Makes c's headers carry the current token, authenticating first if needed. Costs
 * nothing when the headers are already current. */
static int ensure_headers(ms_etcd *e, ms_etcd__conn *c, unsigned *ret_gen, ms_error **err) {
  *ret_gen = 0;
  if (!e->username)
    return 0;
  for (;;) {
    pthread_mutex_lock(&e->token_mu);
    if (e->token) {
      *ret_gen = e->gen;
      if (c->hdr_gen != e->gen) {
        curl_slist_free_all(c->hdrs);
        c->hdrs = ms_etcd__headers(e->token);
        c->hdr_gen = e->gen;
        curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, c->hdrs);
      }
      pthread_mutex_unlock(&e->token_mu);
      return 0;
    }
    pthread_mutex_unlock(&e->token_mu);
    if (authenticate(e, err) < 0)
      return MS_ERR;
  }
}

/* ---- error answers --------------------------------------------------------------- */

int ms_etcd__answer_error(const char *ep, const char *path, long http, json_t *j, ms_error **err) {
  json_t *ej = json_object_get(j, "error");
  const char *msg = NULL;
  long long code = 0;
  if (json_is_object(ej)) { /* the streaming form: {"error":{"grpc_code":14,"message":...}} */
    msg = json_string_value(json_object_get(ej, "message"));
    code = ms_etcd__jint(ej, "grpc_code");
  } else {
    msg = json_string_value(json_object_get(j, "message"));
    if (!msg)
      msg = json_string_value(ej);
    code = ms_etcd__jint(j, "code");
  }
  if (!msg)
    msg = "no message";
  ms_status st = code > 0 && code <= MS_UNAUTHENTICATED ? (ms_status)code : MS_UNKNOWN;
  const char *hint = "";
  if (strstr(msg, "request is too large")) {
    st = MS_INVALID_ARGUMENT;
    hint = " (over etcd's --max-request-bytes)";
  } else if (strstr(msg, "election: no leader")) {
    st = MS_NOT_FOUND;
  } else if (strstr(msg, "authentication failed") || strstr(msg, "invalid auth token")) {
    st = MS_UNAUTHENTICATED;
  } else if (strstr(msg, "user name is empty")) {
    st = MS_UNAUTHENTICATED;
    hint = " (etcd has auth enabled: configure a username and password)";
  } else if (st == MS_UNKNOWN && http >= 500) {
    st = MS_UNAVAILABLE;
  }
  return ms_error_set(err, st, "etcd `%s`: %s: %s%s", ep, path, msg, hint);
}

/* Why a transfer failed, in words: the OS's reason when there is one. */
static const char *transfer_why(ms_etcd__conn *c, CURLcode rc, char *buf, size_t size) {
  long oserr = 0;
  curl_easy_getinfo(c->h, CURLINFO_OS_ERRNO, &oserr);
  if (rc == CURLE_COULDNT_CONNECT && oserr)
    return strerror_r((int)oserr, buf, size);
  if (c->errbuf[0])
    return c->errbuf;
  return curl_easy_strerror(rc);
}

/* ---- one request with failover ------------------------------------------------------- */

typedef enum outcome {
  OUT_ANSWER,   /* etcd answered (maybe with an error) */
  OUT_NOT_SENT, /* could not reach the endpoint: try the next */
  OUT_BROKEN,   /* broke after sending: may have been applied */
  OUT_FINAL,    /* an error no other endpoint changes (timeout, cancel, too big) */
} outcome;

static outcome perform(ms_etcd *e, ms_etcd__conn *c, size_t ep, const char *path, const ms_etcd__call_opts *o,
                       long *ret_http, ms_error **err) {
  const char *url = e->eps[ep].url;
  snprintf(c->url, sizeof(c->url), "%s%s", url, path);
  int64_t timeout = o && o->timeout_ms ? o->timeout_ms : e->request_timeout_ms;
  curl_easy_setopt(c->h, CURLOPT_URL, c->url);
  curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, c->req.data ? c->req.data : "{}");
  curl_easy_setopt(c->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(c->req.data ? c->req.len : 2));
  curl_easy_setopt(c->h, CURLOPT_TIMEOUT_MS, timeout > 0 ? (long)timeout : 0L);
  ms_buf_reset(&c->resp);
  c->too_big = false;
  c->errbuf[0] = '\0';
  CURLcode rc = o && o->cancel ? perform_cancellable(c->h, o->cancel) : curl_easy_perform(c->h);
  if (rc == CURLE_OK) {
    curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, ret_http);
    return OUT_ANSWER;
  }
  char why[256];
  switch (rc) {
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_COULDNT_CONNECT:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
    ms_error_set(err, MS_UNAVAILABLE, "etcd `%s`: %s: %s", url, path, transfer_why(c, rc, why, sizeof(why)));
    return OUT_NOT_SENT;
  case CURLE_OPERATION_TIMEDOUT: {
    /* Nothing sent yet means the connect timed out: safe to try elsewhere. (The
     * connect time cannot tell: it is 0 on a reused connection.) */
    long sent = 0;
    curl_easy_getinfo(c->h, CURLINFO_REQUEST_SIZE, &sent);
    if (sent == 0) {
      ms_error_set(err, MS_UNAVAILABLE, "etcd `%s`: %s: no connection within %lld ms", url, path,
                   (long long)e->connect_timeout_ms);
      return OUT_NOT_SENT;
    }
    ms_error_set(err, MS_DEADLINE_EXCEEDED, "etcd `%s`: %s: no answer within %lld ms", url, path,
                 (long long)timeout);
    return OUT_FINAL;
  }
  case CURLE_ABORTED_BY_CALLBACK:
    ms_error_set(err, MS_CANCELLED, "etcd `%s`: %s: cancelled", url, path);
    return OUT_FINAL;
  case CURLE_WRITE_ERROR:
    if (c->too_big) {
      ms_error_set(err, MS_RESOURCE_EXHAUSTED,
                   "etcd `%s`: %s: answer larger than %zu bytes (max_response_bytes)", url, path,
                   e->max_response_bytes);
      return OUT_FINAL;
    }
    break;
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
    ms_error_set(err, MS_UNAVAILABLE, "etcd `%s`: %s: connection lost: %s", url, path,
                 transfer_why(c, rc, why, sizeof(why)));
    return OUT_BROKEN;
  default:
    break;
  }
  ms_error_set(err, MS_INTERNAL, "etcd `%s`: %s: %s", url, path, transfer_why(c, rc, why, sizeof(why)));
  return OUT_FINAL;
}

/* The "why" part of "etcd `url`: path: why". */
static const char *reason_of(const char *msg, const char *url, const char *path) {
  const char *p = msg;
  if (strncmp(p, "etcd `", 6) != 0)
    return msg;
  p += 6;
  size_t n = strlen(url);
  if (strncmp(p, url, n) != 0 || strncmp(p + n, "`: ", 3) != 0)
    return msg;
  p += n + 3;
  n = strlen(path);
  if (strncmp(p, path, n) != 0 || strncmp(p + n, ": ", 2) != 0)
    return msg;
  return p + n + 2;
}

int ms_etcd__call(ms_etcd *e, ms_etcd__conn *c, const char *path, unsigned flags, const ms_etcd__call_opts *o,
                  json_t **ret, ms_error **err) {
  size_t n = e->n_eps;
  size_t start = atomic_load(&e->current) % n;
  bool reauthed = false;
  ms_error *last = NULL;
  _cleanup_(ms_buf_releasep) ms_buf tried = MS_BUF_INIT(4096);
  for (size_t i = 0; i < n; i++) {
    size_t ep = (start + i) % n;
    const char *url = e->eps[ep].url;
    unsigned gen = 0;
  again:
    if (!(flags & MS_ETCD__NO_AUTH) && ensure_headers(e, c, &gen, err) < 0) {
      ms_error_free(last);
      return MS_ERR;
    }
    long http = 0;
    outcome out = perform(e, c, ep, path, o, &http, &last);
    if (out == OUT_ANSWER) {
      json_error_t jerr;
      json_t *j = c->resp.len ? json_loadb(c->resp.data, c->resp.len, 0, &jerr) : NULL;
      if (http == 200 && json_is_object(j) && !json_object_get(j, "error")) {
        if (i > 0)
          ms_log_debug(NULL, "etcd: failed over to `%s`", url);
        atomic_store(&e->current, ep);
        ms_error_free(last);
        *ret = j;
        return 0;
      }
      if (!json_is_object(j)) {
        ms_status st = http == 404 ? MS_UNIMPLEMENTED : http >= 500 ? MS_UNAVAILABLE : MS_INTERNAL;
        ms_error_set(&last, st, "etcd `%s`: %s: HTTP %ld with %s", url, path, http,
                     http == 404 ? "not found (not an etcd v3 JSON gateway?)" : "an unreadable answer");
        json_decref(j);
        if (st == MS_UNAVAILABLE && (flags & MS_ETCD__IDEMPOTENT))
          goto next;
        break;
      }
      ms_etcd__answer_error(url, path, http, j, &last);
      json_decref(j);
      if (last->code == MS_UNAUTHENTICATED && e->username && !reauthed && !(flags & MS_ETCD__NO_AUTH) &&
          !strstr(last->msg, "authentication failed")) {
        reauthed = true;
        ms_etcd__token_invalidate(e, gen);
        goto again;
      }
      if (last->code == MS_UNAVAILABLE && (flags & MS_ETCD__IDEMPOTENT))
        goto next;
      break;
    }
    if (out == OUT_FINAL || (out == OUT_BROKEN && !(flags & MS_ETCD__IDEMPOTENT)))
      break;
  next:
    if (n > 1)
      ms_buf_appendf(&tried, NULL, "%s`%s`: %s", tried.len ? "; " : "", url, reason_of(last->msg, url, path));
    if (i + 1 == n && n > 1) {
      ms_error_set(err, MS_UNAVAILABLE, "etcd: %s: no endpoint answered: %s", path, tried.data);
      ms_error_free(last);
      return MS_ERR;
    }
  }
  if (err) {
    ms_error_free(*err);
    *err = last;
  } else {
    ms_error_free(last);
  }
  return MS_ERR;
}
