/* Pieces shared by the etcd client's files; not part of libmeseta's API. */
#pragma once

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

#include "meseta/buf.h"
#include "meseta/etcd.h"

/* One pooled libcurl handle: one keep-alive connection, with buffers reused from one
 * request to the next so a request allocates nothing of ours. */
typedef struct ms_etcd__conn {
  CURL *h;
  ms_buf req;  /* the JSON body being built */
  ms_buf resp; /* the answer */
  struct curl_slist *hdrs;
  unsigned hdr_gen; /* the auth token generation hdrs carries */
  bool too_big;     /* the answer passed max_response_bytes */
  char url[512];
  char errbuf[CURL_ERROR_SIZE];
  struct ms_etcd__conn *next;
} ms_etcd__conn;

typedef struct ms_etcd_stream ms_etcd_stream;

typedef struct ms_etcd__endpoint {
  char *url; /* without trailing slash */
} ms_etcd__endpoint;

struct ms_etcd {
  ms_etcd__endpoint *eps;
  size_t n_eps;
  atomic_size_t current;
  int64_t request_timeout_ms;
  int64_t connect_timeout_ms;
  char *ca_file, *cert_file, *key_file;
  char *username, *password;
  size_t max_request_bytes;
  size_t max_response_bytes;
  unsigned max_idle;

  pthread_mutex_t pool_mu;
  ms_etcd__conn *idle;
  unsigned n_idle;

  /* Auth: token_mu guards token and gen; auth_mu serializes authentications. */
  pthread_mutex_t token_mu;
  pthread_mutex_t auth_mu;
  char *token;
  unsigned gen; /* bumped on every new token; starts at 1 */
};

struct ms_etcd_cancel {
  pthread_mutex_t mu;
  bool cancelled;
  CURLM *active; /* the multi handle of the call using it, to wake it */
};

/* Request flags. */
enum {
  MS_ETCD__IDEMPOTENT = 1 << 0, /* safe to resend to another endpoint after a broken answer */
  MS_ETCD__NO_AUTH = 1 << 1,    /* the authenticate call itself */
};

/* Extra controls for a call; NULL means the defaults. */
typedef struct ms_etcd__call_opts {
  int64_t timeout_ms;     /* 0: the client's request timeout; < 0: none */
  ms_etcd_cancel *cancel; /* run through a multi handle that cancel can wake */
} ms_etcd__call_opts;

/* ---- etcd.c ---- */

ms_etcd__conn *ms_etcd__conn_get(ms_etcd *e);
void ms_etcd__conn_put(ms_etcd *e, ms_etcd__conn *c);
/* A handle set up with the client's constant options (TLS, timeouts, TCP); for streams. */
CURL *ms_etcd__easy_new(ms_etcd *e);

/* POSTs c->req to `path` ("/v3/kv/put"), failing over between endpoints, and parses
 * the answer into *ret (the caller json_decref()s it). Maps etcd's error answers to
 * codes; messages name the endpoint and the path. */
int ms_etcd__call(ms_etcd *e, ms_etcd__conn *c, const char *path, unsigned flags, const ms_etcd__call_opts *o,
                  json_t **ret, ms_error **err);

/* The current token (a copy the caller frees, NULL without auth) and its generation;
 * authenticates first if auth is configured and no token is held yet. */
int ms_etcd__token(ms_etcd *e, char **ret_token, unsigned *ret_gen, ms_error **err);
/* Drops the token of generation `gen` (etcd called it invalid) so the next use
 * authenticates again. */
void ms_etcd__token_invalidate(ms_etcd *e, unsigned gen);
/* Builds "Content-Type", "Expect:" and "Authorization" headers. */
struct curl_slist *ms_etcd__headers(const char *token);

/* Turns an error answer {"error","message","code"} (or the stream form) into an error. */
int ms_etcd__answer_error(const char *ep, const char *path, long http, json_t *j, ms_error **err);

/* ---- etcd-json.c ---- */

/* Appends standard base64 (with padding) of p[0..n). */
int ms_etcd__b64_append(ms_buf *b, const void *p, size_t n, ms_error **err);
/* Decodes standard base64 into a new buffer with one NUL byte after the data. */
int ms_etcd__b64_decode(const char *s, size_t len, char **ret, size_t *ret_len, ms_error **err);
/* Appends `"name":"<base64>"`. */
int ms_etcd__append_bytes(ms_buf *b, const char *name, const void *p, size_t n, ms_error **err);
/* Appends a JSON string literal (quotes and escapes included) of a text string. */
int ms_etcd__append_jstr(ms_buf *b, const char *s, ms_error **err);
/* The range end for a prefix: key with its last byte below 0xff incremented and the
 * rest cut off; "\0" (all keys from key on) when there is none. Writes into a new
 * buffer. */
char *ms_etcd__prefix_end(const void *key, size_t len, size_t *ret_len);
/* An int64 field that the gateway sends as a string (or a number); 0 if absent. */
int64_t ms_etcd__jint(json_t *o, const char *name);
/* A base64 field decoded into a new NUL-terminated buffer (empty if absent). */
int ms_etcd__jbytes(json_t *o, const char *name, char **ret, size_t *ret_len, ms_error **err);
/* header.revision of an answer. */
int64_t ms_etcd__jrevision(json_t *o);
/* Fills a kv from {"key","value","create_revision",...}. */
int ms_etcd__kv_from_json(json_t *o, ms_etcd_kv *ret, ms_error **err);
/* Fills a range result from a RangeResponse. */
int ms_etcd__range_from_json(json_t *o, ms_etcd_range_result *ret, ms_error **err);
/* Appends the RangeRequest fields (without braces) for key + opts. */
int ms_etcd__append_range_req(ms_buf *b, const void *key, size_t key_len, const ms_etcd_range_opts *o,
                              ms_error **err);
/* A printable, bounded rendering of a key for messages (\xNN for other bytes). */
const char *ms_etcd__quote(const void *key, size_t len, char *out, size_t size);
#define MS_ETCD__QUOTE_MAX 160
