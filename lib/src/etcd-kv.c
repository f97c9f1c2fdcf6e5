/* Key-value calls: range, put, delete, txn, compaction. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"

#include "etcd-internal.h"

/* A proto field's overhead, generous: tag + length varint. */
#define FIELD_OVERHEAD 16
/* The InternalRaftRequest header etcd wraps every request in. */
#define REQUEST_OVERHEAD 64

static int too_large(ms_etcd *e, const char *what, const void *key, size_t key_len, size_t size,
                     ms_error **err) {
  char q[MS_ETCD__QUOTE_MAX];
  return ms_error_set(err, MS_INVALID_ARGUMENT,
                      "%s `%s`: %zu bytes is more than etcd's request limit of %zu bytes (max_request_bytes)",
                      what, ms_etcd__quote(key, key_len, q, sizeof(q)), size, e->max_request_bytes);
}

static int prefix_key(ms_error **err, const char *what, const void *key, size_t key_len) {
  char q[MS_ETCD__QUOTE_MAX];
  return ms_error_prefix(err, "%s `%s`", what, ms_etcd__quote(key, key_len, q, sizeof(q)));
}

int ms_etcd_range(ms_etcd *e, const void *key, size_t key_len, const ms_etcd_range_opts *o,
                  ms_etcd_range_result *ret, ms_error **err) {
  ms_etcd__conn *c = ms_etcd__conn_get(e);
  json_t *j = NULL;
  int rc = MS_ERR;
  ms_buf_reset(&c->req);
  if (ms_buf_putc(&c->req, '{', err) < 0 || ms_etcd__append_range_req(&c->req, key, key_len, o, err) < 0 ||
      ms_buf_putc(&c->req, '}', err) < 0)
    goto out;
  if (ms_etcd__call(e, c, "/v3/kv/range", MS_ETCD__IDEMPOTENT, NULL, &j, err) < 0)
    goto out;
  rc = ms_etcd__range_from_json(j, ret, err);
out:
  if (rc < 0)
    prefix_key(err, "range", key, key_len);
  json_decref(j);
  ms_etcd__conn_put(e, c);
  return rc;
}

int ms_etcd_put(ms_etcd *e, const void *key, size_t key_len, const void *value, size_t value_len,
                int64_t lease, int64_t *ret_revision, ms_error **err) {
  size_t size = key_len + value_len + 2 * FIELD_OVERHEAD + REQUEST_OVERHEAD;
  if (size > e->max_request_bytes)
    return too_large(e, "put", key, key_len, key_len + value_len, err);
  ms_etcd__conn *c = ms_etcd__conn_get(e);
  json_t *j = NULL;
  int rc = MS_ERR;
  ms_buf_reset(&c->req);
  if (ms_buf_putc(&c->req, '{', err) < 0 || ms_etcd__append_bytes(&c->req, "key", key, key_len, err) < 0 ||
      ms_buf_putc(&c->req, ',', err) < 0 ||
      ms_etcd__append_bytes(&c->req, "value", value, value_len, err) < 0)
    goto out;
  if (lease && ms_buf_appendf(&c->req, err, ",\"lease\":\"%lld\"", (long long)lease) < 0)
    goto out;
  if (ms_buf_putc(&c->req, '}', err) < 0)
    goto out;
  if (ms_etcd__call(e, c, "/v3/kv/put", 0, NULL, &j, err) < 0)
    goto out;
  if (ret_revision)
    *ret_revision = ms_etcd__jrevision(j);
  rc = 0;
out:
  if (rc < 0) {
    char q[MS_ETCD__QUOTE_MAX];
    ms_error_prefix(err, "put `%s` (%zu bytes)", ms_etcd__quote(key, key_len, q, sizeof(q)),
                    key_len + value_len);
  }
  json_decref(j);
  ms_etcd__conn_put(e, c);
  return rc;
}

static int append_delete_req(ms_buf *b, const void *key, size_t key_len, bool prefix, ms_error **err) {
  if (ms_etcd__append_bytes(b, "key", key, key_len, err) < 0)
    return MS_ERR;
  if (prefix) {
    size_t n = 0;
    _cleanup_free_ char *end = ms_etcd__prefix_end(key, key_len, &n);
    if (ms_buf_putc(b, ',', err) < 0 || ms_etcd__append_bytes(b, "range_end", end, n, err) < 0)
      return MS_ERR;
  }
  return 0;
}

int ms_etcd_delete(ms_etcd *e, const void *key, size_t key_len, bool prefix, int64_t *ret_deleted,
                   int64_t *ret_revision, ms_error **err) {
  ms_etcd__conn *c = ms_etcd__conn_get(e);
  json_t *j = NULL;
  int rc = MS_ERR;
  ms_buf_reset(&c->req);
  if (ms_buf_putc(&c->req, '{', err) < 0 || append_delete_req(&c->req, key, key_len, prefix, err) < 0 ||
      ms_buf_putc(&c->req, '}', err) < 0)
    goto out;
  if (ms_etcd__call(e, c, "/v3/kv/deleterange", 0, NULL, &j, err) < 0)
    goto out;
  if (ret_deleted)
    *ret_deleted = ms_etcd__jint(j, "deleted");
  if (ret_revision)
    *ret_revision = ms_etcd__jrevision(j);
  rc = 0;
out:
  if (rc < 0)
    prefix_key(err, prefix ? "delete prefix" : "delete", key, key_len);
  json_decref(j);
  ms_etcd__conn_put(e, c);
  return rc;
}

int ms_etcd_compact(ms_etcd *e, int64_t revision, bool physical, ms_error **err) {
  ms_etcd__conn *c = ms_etcd__conn_get(e);
  json_t *j = NULL;
  ms_buf_reset(&c->req);
  int rc = ms_buf_appendf(&c->req, err, "{\"revision\":\"%lld\"%s}", (long long)revision,
                          physical ? ",\"physical\":true" : "");
  if (rc == 0)
    rc = ms_etcd__call(e, c, "/v3/kv/compaction", MS_ETCD__IDEMPOTENT, NULL, &j, err);
  if (rc < 0)
    ms_error_prefix(err, "compact to revision %lld", (long long)revision);
  json_decref(j);
  ms_etcd__conn_put(e, c);
  return rc;
}

/* ---- transactions ---------------------------------------------------------------- */

static const char *const target_names[] = {"VERSION", "CREATE", "MOD", "VALUE", "LEASE"};
static const char *const target_fields[] = {"version", "create_revision", "mod_revision", "value", "lease"};
static const char *const result_names[] = {"EQUAL", "GREATER", "LESS", "NOT_EQUAL"};

static int append_compare(ms_buf *b, const ms_etcd_compare *k, ms_error **err) {
  if ((unsigned)k->target >= MS_ARRAY_SIZE(target_names) ||
      (unsigned)k->result >= MS_ARRAY_SIZE(result_names))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "txn compare: target %d or result %d unknown",
                        (int)k->target, (int)k->result);
  if (ms_buf_putc(b, '{', err) < 0 || append_delete_req(b, k->key, k->key_len, k->prefix, err) < 0 ||
      ms_buf_appendf(b, err, ",\"target\":\"%s\",\"result\":\"%s\",", target_names[k->target],
                     result_names[k->result]) < 0)
    return MS_ERR;
  if (k->target == MS_ETCD_TARGET_VALUE) {
    if (ms_etcd__append_bytes(b, "value", k->value, k->value_len, err) < 0)
      return MS_ERR;
  } else if (ms_buf_appendf(b, err, "\"%s\":\"%lld\"", target_fields[k->target], (long long)k->number) < 0) {
    return MS_ERR;
  }
  return ms_buf_putc(b, '}', err);
}

static int append_op(ms_buf *b, const ms_etcd_op *op, ms_error **err) {
  switch (op->type) {
  case MS_ETCD_OP_RANGE:
    if (ms_buf_appends(b, "{\"request_range\":{", err) < 0 ||
        ms_etcd__append_range_req(b, op->key, op->key_len, op->range, err) < 0)
      return MS_ERR;
    break;
  case MS_ETCD_OP_PUT:
    if (ms_buf_appends(b, "{\"request_put\":{", err) < 0 ||
        ms_etcd__append_bytes(b, "key", op->key, op->key_len, err) < 0 || ms_buf_putc(b, ',', err) < 0 ||
        ms_etcd__append_bytes(b, "value", op->value, op->value_len, err) < 0)
      return MS_ERR;
    if (op->lease && ms_buf_appendf(b, err, ",\"lease\":\"%lld\"", (long long)op->lease) < 0)
      return MS_ERR;
    break;
  case MS_ETCD_OP_DELETE:
    if (ms_buf_appends(b, "{\"request_delete_range\":{", err) < 0 ||
        append_delete_req(b, op->key, op->key_len, op->prefix, err) < 0)
      return MS_ERR;
    break;
  default:
    return ms_error_set(err, MS_INVALID_ARGUMENT, "txn op: type %d unknown", (int)op->type);
  }
  return ms_buf_appends(b, "}}", err);
}

static int append_ops(ms_buf *b, const char *name, const ms_etcd_op *ops, size_t n, ms_error **err) {
  if (ms_buf_appendf(b, err, ",\"%s\":[", name) < 0)
    return MS_ERR;
  for (size_t i = 0; i < n; i++)
    if ((i && ms_buf_putc(b, ',', err) < 0) || append_op(b, &ops[i], err) < 0)
      return MS_ERR;
  return ms_buf_putc(b, ']', err);
}

/* Refuses a txn etcd would refuse for its size, naming its biggest key. */
static int check_txn_size(ms_etcd *e, const ms_etcd_compare *cmp, size_t n_cmp, const ms_etcd_op *s,
                          size_t n_s, const ms_etcd_op *f, size_t n_f, ms_error **err) {
  size_t total = REQUEST_OVERHEAD;
  const void *big = NULL;
  size_t big_len = 0, big_size = 0;
  for (size_t i = 0; i < n_cmp; i++)
    total += cmp[i].key_len * 2 + cmp[i].value_len + 3 * FIELD_OVERHEAD;
  const ms_etcd_op *branches[] = {s, f};
  size_t counts[] = {n_s, n_f};
  for (size_t b = 0; b < 2; b++) {
    for (size_t i = 0; i < counts[b]; i++) {
      const ms_etcd_op *op = &branches[b][i];
      size_t size = op->key_len * 2 + (op->type == MS_ETCD_OP_PUT ? op->value_len : 0) + 4 * FIELD_OVERHEAD;
      total += size;
      if (size > big_size) {
        big_size = size;
        big = op->key;
        big_len = op->key_len;
      }
    }
  }
  if (total <= e->max_request_bytes)
    return 0;
  char q[MS_ETCD__QUOTE_MAX];
  return ms_error_set(
      err, MS_INVALID_ARGUMENT,
      "txn of about %zu bytes (biggest op: `%s`, %zu bytes) is more than etcd's request limit of "
      "%zu bytes (max_request_bytes)",
      total, ms_etcd__quote(big, big_len, q, sizeof(q)), big_size, e->max_request_bytes);
}

static int txn_from_json(json_t *j, ms_etcd_txn_result *ret, ms_error **err) {
  json_t *rs = json_object_get(j, "responses");
  size_t n = json_is_array(rs) ? json_array_size(rs) : 0;
  ms_etcd_txn_result r = {
      .succeeded = json_is_true(json_object_get(j, "succeeded")),
      .revision = ms_etcd__jrevision(j),
      .responses = n ? ms_xcalloc(n, sizeof(ms_etcd_op_result)) : NULL,
  };
  for (size_t i = 0; i < n; i++) {
    json_t *one = json_array_get(rs, i);
    json_t *x;
    ms_etcd_op_result *o = &r.responses[i];
    if ((x = json_object_get(one, "response_range"))) {
      o->type = MS_ETCD_OP_RANGE;
      if (ms_etcd__range_from_json(x, &o->range, err) < 0) {
        ms_etcd_txn_result_release(&r);
        return MS_ERR;
      }
      o->range.revision = r.revision;
    } else if ((x = json_object_get(one, "response_delete_range"))) {
      o->type = MS_ETCD_OP_DELETE;
      o->deleted = ms_etcd__jint(x, "deleted");
    } else {
      o->type = MS_ETCD_OP_PUT;
    }
    r.n_responses++;
  }
  *ret = r;
  return 0;
}

void ms_etcd_txn_result_release(ms_etcd_txn_result *r) {
  if (!r)
    return;
  for (size_t i = 0; i < r->n_responses; i++)
    ms_etcd_range_result_release(&r->responses[i].range);
  free(r->responses);
  *r = (ms_etcd_txn_result){0};
}

int ms_etcd_txn(ms_etcd *e, const ms_etcd_compare *cmp, size_t n_cmp, const ms_etcd_op *success,
                size_t n_success, const ms_etcd_op *failure, size_t n_failure, ms_etcd_txn_result *ret,
                ms_error **err) {
  if (check_txn_size(e, cmp, n_cmp, success, n_success, failure, n_failure, err) < 0)
    return MS_ERR;
  ms_etcd__conn *c = ms_etcd__conn_get(e);
  json_t *j = NULL;
  int rc = MS_ERR;
  ms_buf *b = &c->req;
  ms_buf_reset(b);
  if (ms_buf_appends(b, "{\"compare\":[", err) < 0)
    goto out;
  for (size_t i = 0; i < n_cmp; i++)
    if ((i && ms_buf_putc(b, ',', err) < 0) || append_compare(b, &cmp[i], err) < 0)
      goto out;
  if (ms_buf_putc(b, ']', err) < 0 || append_ops(b, "success", success, n_success, err) < 0 ||
      append_ops(b, "failure", failure, n_failure, err) < 0 || ms_buf_putc(b, '}', err) < 0)
    goto out;
  if (ms_etcd__call(e, c, "/v3/kv/txn", 0, NULL, &j, err) < 0)
    goto out;
  rc = txn_from_json(j, ret, err);
out:
  if (rc < 0)
    ms_error_prefix(err, "txn (%zu compares, %zu + %zu ops)", n_cmp, n_success, n_failure);
  json_decref(j);
  ms_etcd__conn_put(e, c);
  return rc;
}
