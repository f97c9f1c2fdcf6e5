/* Authentication of master-api's callers: bearer tokens (a tokens file) and mutual
 * TLS. See mapi-auth.h and docs/master-api.md ("Identity").
 *
 * Tokens are kept in fixed-size, zero-padded slots and every lookup compares the
 * presented token with every slot, byte for byte over the whole slot, without an
 * early exit: how long a lookup takes says nothing about how much of a token
 * matched, nor which entry did. */
#include "mapi-auth.h"

#include <ctype.h>
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/pb.h"

#include "mapi-internal.h"

#define TOKEN_MIN 16
#define TOKEN_MAX 1024 /* a slot; longer tokens are refused in the file and unknown on a call */
#define PRINCIPAL_MAX 256
#define CLAIMS_MAX 64

typedef struct token_entry {
  uint8_t slot[TOKEN_MAX]; /* the token, zero-padded */
  size_t len;
  char *principal;
  char **keys, **values; /* claims */
  size_t nclaims;
} token_entry;

typedef struct token_table {
  token_entry *v;
  size_t n;
} token_table;

struct mapi_auth {
  char *path; /* NULL: no tokens */
  bool require;
  pthread_rwlock_t lock; /* guards t */
  token_table t;
};

static void table_release(token_table *t) {
  for (size_t i = 0; i < t->n; i++) {
    token_entry *e = &t->v[i];
    explicit_bzero(e->slot, sizeof(e->slot));
    free(e->principal);
    for (size_t k = 0; k < e->nclaims; k++) {
      free(e->keys[k]);
      free(e->values[k]);
    }
    free(e->keys);
    free(e->values);
  }
  free(t->v);
  *t = (token_table){0};
}

/* Printable, no spaces: what fits in an `authorization` header unchanged. */
static bool token_chars_ok(const char *s) {
  for (const unsigned char *c = (const unsigned char *)s; *c; c++)
    if (*c <= 0x20 || *c >= 0x7f)
      return false;
  return true;
}

static bool text_ok(const char *s) {
  for (const unsigned char *c = (const unsigned char *)s; *c; c++)
    if (*c < 0x20 || *c == 0x7f)
      return false;
  return true;
}

/* A claim's value: a string, or an array of strings joined with ",". */
static int claim_value(json_t *v, const char *where, const char *key, char **ret, ms_error **err) {
  if (json_is_string(v)) {
    *ret = ms_xstrdup(json_string_value(v));
    return 0;
  }
  if (!json_is_array(v))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s.claims.%s: must be a string or an array of strings",
                        where, key);
  size_t len = 0, i;
  json_t *it;
  json_array_foreach(v, i, it) {
    if (!json_is_string(it))
      return ms_error_set(err, MS_INVALID_ARGUMENT, "%s.claims.%s[%zu]: must be a string", where, key, i);
    len += strlen(json_string_value(it)) + 1;
  }
  char *out = ms_xcalloc(1, len + 1), *at = out;
  json_array_foreach(v, i, it) {
    size_t n = strlen(json_string_value(it));
    if (i)
      *at++ = ',';
    memcpy(at, json_string_value(it), n);
    at += n;
  }
  *ret = out;
  return 0;
}

static int entry_from(json_t *o, size_t idx, token_table *t, ms_error **err) {
  char where[32];
  snprintf(where, sizeof(where), "tokens[%zu]", idx);
  if (!json_is_object(o))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: must be an object", where);
  const char *k;
  json_t *v;
  json_object_foreach(o, k, v) {
    if (strcmp(k, "token") != 0 && strcmp(k, "principal") != 0 && strcmp(k, "claims") != 0)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: unknown key `%s` (token, principal, claims)", where,
                          k);
  }
  json_t *tok = json_object_get(o, "token"), *pr = json_object_get(o, "principal"),
         *cl = json_object_get(o, "claims");
  /* The token itself never appears in a message: it is a secret. */
  if (!json_is_string(tok) || !*json_string_value(tok))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s.token: required (a string)", where);
  const char *ts = json_string_value(tok);
  size_t tlen = strlen(ts);
  if (tlen < TOKEN_MIN || tlen > TOKEN_MAX)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s.token: %zu characters, must be %d to %d", where, tlen,
                        TOKEN_MIN, TOKEN_MAX);
  if (!token_chars_ok(ts))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s.token: only printable ASCII without spaces", where);
  if (!json_is_string(pr) || !*json_string_value(pr))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s.principal: required (a non-empty string)", where);
  const char *ps = json_string_value(pr);
  if (strlen(ps) > PRINCIPAL_MAX || !text_ok(ps))
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "%s.principal: at most %d bytes of text without control characters", where,
                        PRINCIPAL_MAX);
  if (cl && !json_is_object(cl))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s.claims: must be an object of strings", where);
  if (cl && json_object_size(cl) > CLAIMS_MAX)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s.claims: more than %d", where, CLAIMS_MAX);
  for (size_t j = 0; j < t->n; j++)
    if (t->v[j].len == tlen && memcmp(t->v[j].slot, ts, tlen) == 0)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "%s.token: the same token as tokens[%zu]", where, j);
  token_entry *e = &t->v[t->n++];
  memset(e, 0, sizeof(*e));
  memcpy(e->slot, ts, tlen);
  e->len = tlen;
  e->principal = ms_xstrdup(ps);
  if (cl) {
    e->keys = ms_xcalloc(json_object_size(cl) + 1, sizeof(char *));
    e->values = ms_xcalloc(json_object_size(cl) + 1, sizeof(char *));
    json_object_foreach(cl, k, v) {
      char *val = NULL;
      if (!*k)
        return ms_error_set(err, MS_INVALID_ARGUMENT, "%s.claims: a claim's name is empty", where);
      if (claim_value(v, where, k, &val, err) < 0)
        return MS_ERR;
      e->keys[e->nclaims] = ms_xstrdup(k);
      e->values[e->nclaims++] = val;
    }
  }
  return 0;
}

static int table_load(const char *path, token_table *ret, ms_error **err) {
  json_error_t je;
  json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
  if (!root)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "tokens file `%s`: line %d: %s", path, je.line, je.text);
  token_table t = {0};
  int rc = 0;
  json_t *arr = json_is_object(root) ? json_object_get(root, "tokens") : NULL;
  const char *k;
  json_t *v;
  if (!json_is_array(arr)) {
    rc = ms_error_set(err, MS_INVALID_ARGUMENT, "tokens: required (an array of {token, principal, claims})");
  } else {
    json_object_foreach(root, k, v) {
      if (strcmp(k, "tokens") != 0 && rc == 0)
        rc = ms_error_set(err, MS_INVALID_ARGUMENT, "unknown key `%s` (only `tokens`)", k);
    }
    t.v = ms_xcalloc(json_array_size(arr) + 1, sizeof(*t.v));
    for (size_t i = 0; rc == 0 && i < json_array_size(arr); i++)
      rc = entry_from(json_array_get(arr, i), i, &t, err);
  }
  json_decref(root);
  if (rc < 0) {
    table_release(&t);
    return ms_error_prefix(err, "tokens file `%s`", path);
  }
  *ret = t;
  return 0;
}

mapi_auth *mapi_auth_new(const char *tokens_file, bool require_auth, ms_error **err) {
  mapi_auth *a = ms_xcalloc(1, sizeof(*a));
  a->require = require_auth;
  pthread_rwlock_init(&a->lock, NULL);
  if (tokens_file && *tokens_file) {
    a->path = ms_xstrdup(tokens_file);
    if (table_load(a->path, &a->t, err) < 0) {
      mapi_auth_free(a);
      return NULL;
    }
    struct stat st;
    if (stat(a->path, &st) == 0 && (st.st_mode & S_IROTH))
      ms_log_warn(NULL, "tokens file `%s` is readable by every user: chmod o-r", a->path);
  }
  return a;
}

void mapi_auth_free(mapi_auth *a) {
  if (!a)
    return;
  table_release(&a->t);
  pthread_rwlock_destroy(&a->lock);
  free(a->path);
  free(a);
}

int mapi_auth_reload(mapi_auth *a, ms_error **err) {
  if (!a || !a->path)
    return 0;
  token_table t;
  if (table_load(a->path, &t, err) < 0)
    return MS_ERR;
  pthread_rwlock_wrlock(&a->lock);
  token_table old = a->t;
  a->t = t;
  pthread_rwlock_unlock(&a->lock);
  table_release(&old);
  return 0;
}

size_t mapi_auth_count(mapi_auth *a) {
  if (!a)
    return 0;
  pthread_rwlock_rdlock(&a->lock);
  size_t n = a->t.n;
  pthread_rwlock_unlock(&a->lock);
  return n;
}

bool mapi_auth_required(const mapi_auth *a) {
  return a && a->require;
}

/* 1 when the slot holds exactly `given`, in time that depends on neither. */
static int slot_equal(const uint8_t *given, size_t glen, const token_entry *e) {
  volatile uint8_t d = 0;
  for (size_t i = 0; i < TOKEN_MAX; i++)
    d |= given[i] ^ e->slot[i];
  size_t ld = glen ^ e->len;
  for (size_t i = 0; i < sizeof(ld); i++)
    d |= (uint8_t)(ld >> (8 * i));
  return (int)((((unsigned)d - 1u) >> 8) & 1u); /* d == 0 -> 1; 1..255 -> 0 */
}

static Meseta__V1__Principal *principal_new(const char *name, Meseta__V1__Principal__Method method) {
  Meseta__V1__Principal *p = ms_pb_new(&meseta__v1__principal__descriptor);
  p->name = ms_xstrdup(name ? name : "");
  p->method = method;
  return p;
}

/* The token's principal and claims, or NULL when no entry holds it. */
static Meseta__V1__Principal *lookup(mapi_auth *a, const char *token) {
  size_t len = strlen(token);
  if (len > TOKEN_MAX || !a)
    return NULL;
  uint8_t given[TOKEN_MAX] = {0};
  memcpy(given, token, len);
  Meseta__V1__Principal *p = NULL;
  pthread_rwlock_rdlock(&a->lock);
  size_t found = 0, at = 0;
  for (size_t i = 0; i < a->t.n; i++) {
    size_t m = (size_t)slot_equal(given, len, &a->t.v[i]);
    size_t mask = (size_t)0 - m;
    at = (at & ~mask) | (i & mask);
    found |= m;
  }
  if (found) {
    const token_entry *e = &a->t.v[at];
    p = principal_new(e->principal, MESETA__V1__PRINCIPAL__METHOD__BEARER_TOKEN);
    if (e->nclaims) {
      p->claims = ms_xcalloc(e->nclaims, sizeof(*p->claims));
      for (size_t k = 0; k < e->nclaims; k++) {
        Meseta__V1__Principal__ClaimsEntry *c = ms_pb_new(&meseta__v1__principal__claims_entry__descriptor);
        c->key = ms_xstrdup(e->keys[k]);
        c->value = ms_xstrdup(e->values[k]);
        p->claims[p->n_claims++] = c;
      }
    }
  }
  pthread_rwlock_unlock(&a->lock);
  explicit_bzero(given, sizeof(given));
  return p;
}

/* The token of an `authorization: Bearer <token>` value (inside v), or an error. */
static int bearer_of(const char *v, const char **ret, ms_error **err) {
  while (*v == ' ')
    v++;
  if (strncasecmp(v, "bearer", 6) != 0 || (v[6] != ' ' && v[6] != '\0'))
    return ms_error_set(err, MS_UNAUTHENTICATED,
                        "`authorization` metadata: only the Bearer scheme is accepted (`Bearer <token>`)");
  v += 6;
  while (*v == ' ')
    v++;
  if (!*v)
    return ms_error_set(err, MS_UNAUTHENTICATED, "`authorization` metadata: the bearer token is empty");
  *ret = v;
  return 0;
}

int mapi_auth_call(mapi_auth *a, ms_rpc_call *call, Meseta__V1__Principal **ret, ms_error **err) {
  if (!call) { /* made on nobody's behalf */
    *ret = principal_new("", MESETA__V1__PRINCIPAL__METHOD__ANONYMOUS);
    return 0;
  }
  const char *hdr = ms_rpc_call_metadata(call, "authorization");
  const char *cert = ms_rpc_call_peer_identity(call); /* verified by the TLS layer, or NULL */
  Meseta__V1__Principal *p = NULL;
  if (hdr) {
    const char *token = NULL;
    if (bearer_of(hdr, &token, err) < 0)
      goto refused;
    if (!(p = lookup(a, token))) {
      ms_error_set(err, MS_UNAUTHENTICATED, "unknown bearer token%s",
                   a && a->path ? "" : " (this master-api has no --tokens-file)");
      goto refused;
    }
    if (cert && strcmp(cert, p->name) != 0) {
      ms_error_set(err, MS_UNAUTHENTICATED,
                   "the bearer token is principal `%s` but the client certificate is `%s`: send one, or "
                   "credentials of the same principal",
                   p->name, cert);
      protobuf_c_message_free_unpacked(&p->base, NULL);
      goto refused;
    }
  } else if (cert) {
    p = principal_new(cert, MESETA__V1__PRINCIPAL__METHOD__MTLS);
  } else if (a && a->require) {
    ms_error_set(err, MS_UNAUTHENTICATED,
                 "authentication required: send `authorization: Bearer <token>` metadata or a client "
                 "certificate");
    goto refused;
  } else {
    p = principal_new("", MESETA__V1__PRINCIPAL__METHOD__ANONYMOUS);
  }
  *ret = p;
  return 0;
refused:
  ms_log_info(NULL, "call `%s` from %s refused: %s", ms_rpc_call_method(call), ms_rpc_call_peer(call),
              err && *err ? (*err)->msg : "unauthenticated");
  return MS_ERR;
}

int mapi_read_auth(mapi_service *s, ms_rpc_call *call, ms_error **err) {
  Meseta__V1__Principal *p = NULL;
  if (mapi_principal(s, call, &p, err) < 0)
    return MS_ERR;
  protobuf_c_message_free_unpacked(&p->base, NULL);
  return 0;
}
