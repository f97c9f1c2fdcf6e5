/* JSON and base64 for the etcd gateway: requests are written straight into the
 * connection's buffer (no JSON tree, no copies); answers are read with jansson. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"

#include "etcd-internal.h"

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int ms_etcd__b64_append(ms_buf *b, const void *p, size_t n, ms_error **err) {
  const unsigned char *s = p;
  char chunk[1024]; /* a multiple of 4 */
  size_t k = 0;
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];
    chunk[k++] = b64_alphabet[v >> 18];
    chunk[k++] = b64_alphabet[(v >> 12) & 63];
    chunk[k++] = b64_alphabet[(v >> 6) & 63];
    chunk[k++] = b64_alphabet[v & 63];
    if (k == sizeof(chunk)) {
      if (ms_buf_append(b, chunk, k, err) < 0)
        return MS_ERR;
      k = 0;
    }
  }
  if (i < n) {
    unsigned v = (unsigned)s[i] << 16;
    if (i + 1 < n)
      v |= (unsigned)s[i + 1] << 8;
    chunk[k++] = b64_alphabet[v >> 18];
    chunk[k++] = b64_alphabet[(v >> 12) & 63];
    chunk[k++] = i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=';
    chunk[k++] = '=';
  }
  return ms_buf_append(b, chunk, k, err);
}

static int b64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '+' || c == '-')
    return 62;
  if (c == '/' || c == '_')
    return 63;
  return -1;
}

/* Decodes into out (room for len / 4 * 3 + 3 bytes), NUL-terminated. */
static int b64_decode_into(const char *s, size_t len, char *out, size_t *ret_len, ms_error **err) {
  while (len > 0 && s[len - 1] == '=')
    len--;
  size_t o = 0;
  unsigned acc = 0;
  int bits = 0;
  for (size_t i = 0; i < len; i++) {
    int v = b64_value((unsigned char)s[i]);
    if (v < 0)
      return ms_error_set(err, MS_INTERNAL, "etcd answer: invalid base64 at byte %zu", i);
    acc = (acc << 6) | (unsigned)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (char)((acc >> bits) & 0xff);
    }
  }
  out[o] = '\0';
  *ret_len = o;
  return 0;
}

int ms_etcd__b64_decode(const char *s, size_t len, char **ret, size_t *ret_len, ms_error **err) {
  char *out = ms_xmalloc(len / 4 * 3 + 3);
  if (b64_decode_into(s, len, out, ret_len, err) < 0) {
    free(out);
    return MS_ERR;
  }
  *ret = out;
  return 0;
}

int ms_etcd__append_bytes(ms_buf *b, const char *name, const void *p, size_t n, ms_error **err) {
  if (ms_buf_appendf(b, err, "\"%s\":\"", name) < 0 || ms_etcd__b64_append(b, p, n, err) < 0 ||
      ms_buf_putc(b, '"', err) < 0)
    return MS_ERR;
  return 0;
}

int ms_etcd__append_jstr(ms_buf *b, const char *s, ms_error **err) {
  if (ms_buf_putc(b, '"', err) < 0)
    return MS_ERR;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    int rc;
    if (*p == '"' || *p == '\\')
      rc = ms_buf_appendf(b, err, "\\%c", *p);
    else if (*p < 0x20)
      rc = ms_buf_appendf(b, err, "\\u%04x", *p);
    else
      rc = ms_buf_putc(b, (char)*p, err);
    if (rc < 0)
      return MS_ERR;
  }
  return ms_buf_putc(b, '"', err);
}

char *ms_etcd__prefix_end(const void *key, size_t len, size_t *ret_len) {
  const unsigned char *k = key;
  size_t n = len;
  while (n > 0 && k[n - 1] == 0xff)
    n--;
  if (n == 0) {
    *ret_len = 1;
    return ms_xcalloc(1, 2);
  }
  char *end = ms_xmalloc(n + 1);
  memcpy(end, key, n);
  end[n - 1] = (char)(k[n - 1] + 1);
  end[n] = '\0';
  *ret_len = n;
  return end;
}

int64_t ms_etcd__jint(json_t *o, const char *name) {
  json_t *v = json_object_get(o, name);
  if (json_is_integer(v))
    return (int64_t)json_integer_value(v);
  if (json_is_string(v)) {
    errno = 0;
    char *end = NULL;
    long long x = strtoll(json_string_value(v), &end, 10);
    if (errno == 0 && end && *end == '\0')
      return (int64_t)x;
  }
  return 0;
}

int ms_etcd__jbytes(json_t *o, const char *name, char **ret, size_t *ret_len, ms_error **err) {
  json_t *v = json_object_get(o, name);
  if (!json_is_string(v))
    return ms_etcd__b64_decode("", 0, ret, ret_len, err);
  return ms_etcd__b64_decode(json_string_value(v), json_string_length(v), ret, ret_len, err);
}

int64_t ms_etcd__jrevision(json_t *o) {
  return ms_etcd__jint(json_object_get(o, "header"), "revision");
}

int ms_etcd__kv_from_json(json_t *o, ms_etcd_kv *ret, ms_error **err) {
  json_t *k = json_object_get(o, "key");
  json_t *v = json_object_get(o, "value");
  size_t klen = json_is_string(k) ? json_string_length(k) : 0;
  size_t vlen = json_is_string(v) ? json_string_length(v) : 0;
  /* One allocation for both: key, NUL, value, NUL. */
  char *block = ms_xmalloc(klen / 4 * 3 + 3 + vlen / 4 * 3 + 3);
  size_t kn = 0, vn = 0;
  if (b64_decode_into(klen ? json_string_value(k) : "", klen, block, &kn, err) < 0 ||
      b64_decode_into(vlen ? json_string_value(v) : "", vlen, block + kn + 1, &vn, err) < 0) {
    free(block);
    return MS_ERR;
  }
  *ret = (ms_etcd_kv){
      .key = block,
      .key_len = kn,
      .value = block + kn + 1,
      .value_len = vn,
      .create_revision = ms_etcd__jint(o, "create_revision"),
      .mod_revision = ms_etcd__jint(o, "mod_revision"),
      .version = ms_etcd__jint(o, "version"),
      .lease = ms_etcd__jint(o, "lease"),
  };
  return 0;
}

void ms_etcd_kv_release(ms_etcd_kv *kv) {
  if (!kv)
    return;
  free(kv->key); /* the value lives in the same block */
  *kv = (ms_etcd_kv){0};
}

int ms_etcd__range_from_json(json_t *o, ms_etcd_range_result *ret, ms_error **err) {
  json_t *kvs = json_object_get(o, "kvs");
  size_t n = json_is_array(kvs) ? json_array_size(kvs) : 0;
  ms_etcd_range_result r = {
      .kvs = n ? ms_xcalloc(n, sizeof(ms_etcd_kv)) : NULL,
      .count = ms_etcd__jint(o, "count"),
      .more = json_is_true(json_object_get(o, "more")),
      .revision = ms_etcd__jrevision(o),
  };
  for (size_t i = 0; i < n; i++) {
    if (ms_etcd__kv_from_json(json_array_get(kvs, i), &r.kvs[i], err) < 0) {
      ms_etcd_range_result_release(&r);
      return MS_ERR;
    }
    r.n_kvs++;
  }
  *ret = r;
  return 0;
}

void ms_etcd_range_result_release(ms_etcd_range_result *r) {
  if (!r)
    return;
  for (size_t i = 0; i < r->n_kvs; i++)
    ms_etcd_kv_release(&r->kvs[i]);
  free(r->kvs);
  *r = (ms_etcd_range_result){0};
}

int ms_etcd__append_range_req(ms_buf *b, const void *key, size_t key_len, const ms_etcd_range_opts *o,
                              ms_error **err) {
  static const ms_etcd_range_opts none = {0};
  if (!o)
    o = &none;
  if (ms_etcd__append_bytes(b, "key", key, key_len, err) < 0)
    return MS_ERR;
  if (o->prefix) {
    size_t n = 0;
    _cleanup_free_ char *end = ms_etcd__prefix_end(key, key_len, &n);
    if (ms_buf_putc(b, ',', err) < 0 || ms_etcd__append_bytes(b, "range_end", end, n, err) < 0)
      return MS_ERR;
  } else if (o->range_end && o->range_end_len) {
    if (ms_buf_putc(b, ',', err) < 0 ||
        ms_etcd__append_bytes(b, "range_end", o->range_end, o->range_end_len, err) < 0)
      return MS_ERR;
  }
  if (o->limit > 0 && ms_buf_appendf(b, err, ",\"limit\":\"%lld\"", (long long)o->limit) < 0)
    return MS_ERR;
  if (o->revision > 0 && ms_buf_appendf(b, err, ",\"revision\":\"%lld\"", (long long)o->revision) < 0)
    return MS_ERR;
  if (o->serializable && ms_buf_appends(b, ",\"serializable\":true", err) < 0)
    return MS_ERR;
  if (o->keys_only && ms_buf_appends(b, ",\"keys_only\":true", err) < 0)
    return MS_ERR;
  if (o->count_only && ms_buf_appends(b, ",\"count_only\":true", err) < 0)
    return MS_ERR;
  return 0;
}

const char *ms_etcd__quote(const void *key, size_t len, char *out, size_t size) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *k = key;
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    if (o + 8 >= size) { /* room for "\xNN", "..." and the NUL */
      memcpy(out + o, "...", 3);
      o += 3;
      break;
    }
    if (k[i] >= 0x20 && k[i] < 0x7f && k[i] != '\\' && k[i] != '`') {
      out[o++] = (char)k[i];
    } else {
      out[o++] = '\\';
      out[o++] = 'x';
      out[o++] = hex[k[i] >> 4];
      out[o++] = hex[k[i] & 15];
    }
  }
  out[o] = '\0';
  return out;
}
