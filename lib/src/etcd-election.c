/* Elections through etcd's v3election service: campaign, leader, proclaim, resign.
 * Observing lives with the other streams in etcd-watch.c. */
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"

#include "etcd-internal.h"

static const char *quote(const void *p, size_t n, char *buf, size_t size) {
  return ms_etcd__quote(p, n, buf, size);
}

static int append_leader_key(ms_buf *b, const ms_etcd_leader_key *k, ms_error **err) {
  if (ms_buf_appends(b, "\"leader\":{", err) < 0 ||
      ms_etcd__append_bytes(b, "name", k->name, k->name_len, err) < 0 || ms_buf_putc(b, ',', err) < 0 ||
      ms_etcd__append_bytes(b, "key", k->key, k->key_len, err) < 0 ||
      ms_buf_appendf(b, err, ",\"rev\":\"%lld\",\"lease\":\"%lld\"}", (long long)k->rev,
                     (long long)k->lease) < 0)
    return MS_ERR;
  return 0;
}

void ms_etcd_leader_key_release(ms_etcd_leader_key *k) {
  if (!k)
    return;
  free(k->name);
  free(k->key);
  *k = (ms_etcd_leader_key){0};
}

int ms_etcd_campaign(ms_etcd *e, const void *name, size_t name_len, int64_t lease, const void *value,
                     size_t value_len, int64_t timeout_ms, ms_etcd_cancel *cancel, ms_etcd_leader_key *ret,
                     ms_error **err) {
  ms_etcd__conn *c = ms_etcd__conn_get(e);
  json_t *j = NULL;
  int rc = MS_ERR;
  ms_buf *b = &c->req;
  ms_buf_reset(b);
  if (ms_buf_putc(b, '{', err) < 0 || ms_etcd__append_bytes(b, "name", name, name_len, err) < 0 ||
      ms_buf_putc(b, ',', err) < 0 || ms_etcd__append_bytes(b, "value", value, value_len, err) < 0 ||
      ms_buf_appendf(b, err, ",\"lease\":\"%lld\"}", (long long)lease) < 0)
    goto out;
  ms_etcd__call_opts o = {.timeout_ms = timeout_ms > 0 ? timeout_ms : -1, .cancel = cancel};
  if (ms_etcd__call(e, c, "/v3/election/campaign", 0, &o, &j, err) < 0)
    goto out;
  json_t *l = json_object_get(j, "leader");
  ms_etcd_leader_key k = {.rev = ms_etcd__jint(l, "rev"), .lease = ms_etcd__jint(l, "lease")};
  if (ms_etcd__jbytes(l, "name", &k.name, &k.name_len, err) < 0)
    goto out;
  if (ms_etcd__jbytes(l, "key", &k.key, &k.key_len, err) < 0) {
    ms_etcd_leader_key_release(&k);
    goto out;
  }
  *ret = k;
  rc = 0;
out:
  if (rc < 0) {
    char q[MS_ETCD__QUOTE_MAX];
    ms_error_prefix(err, "campaign in election `%s` with lease `%lld`", quote(name, name_len, q, sizeof(q)),
                    (long long)lease);
  }
  json_decref(j);
  ms_etcd__conn_put(e, c);
  return rc;
}

int ms_etcd_leader(ms_etcd *e, const void *name, size_t name_len, ms_etcd_kv *ret, ms_error **err) {
  ms_etcd__conn *c = ms_etcd__conn_get(e);
  json_t *j = NULL;
  int rc = MS_ERR;
  char q[MS_ETCD__QUOTE_MAX];
  ms_buf *b = &c->req;
  ms_buf_reset(b);
  if (ms_buf_putc(b, '{', err) < 0 || ms_etcd__append_bytes(b, "name", name, name_len, err) < 0 ||
      ms_buf_putc(b, '}', err) < 0)
    goto out;
  if (ms_etcd__call(e, c, "/v3/election/leader", MS_ETCD__IDEMPOTENT, NULL, &j, err) < 0)
    goto out;
  json_t *kv = json_object_get(j, "kv");
  if (!json_is_object(kv)) {
    ms_error_set(err, MS_NOT_FOUND, "election `%s` has no leader", quote(name, name_len, q, sizeof(q)));
    goto out;
  }
  rc = ms_etcd__kv_from_json(kv, ret, err);
out:
  if (rc < 0 && err && *err && !strstr((*err)->msg, "has no leader"))
    ms_error_prefix(err, "leader of election `%s`", quote(name, name_len, q, sizeof(q)));
  json_decref(j);
  ms_etcd__conn_put(e, c);
  return rc;
}

static int leader_call(ms_etcd *e, const char *path, const ms_etcd_leader_key *leader, const void *value,
                       size_t value_len, bool with_value, ms_error **err) {
  ms_etcd__conn *c = ms_etcd__conn_get(e);
  json_t *j = NULL;
  ms_buf *b = &c->req;
  ms_buf_reset(b);
  int rc = 0;
  if (ms_buf_putc(b, '{', err) < 0 || append_leader_key(b, leader, err) < 0)
    rc = MS_ERR;
  if (rc == 0 && with_value &&
      (ms_buf_putc(b, ',', err) < 0 || ms_etcd__append_bytes(b, "value", value, value_len, err) < 0))
    rc = MS_ERR;
  if (rc == 0 && ms_buf_putc(b, '}', err) < 0)
    rc = MS_ERR;
  if (rc == 0)
    rc = ms_etcd__call(e, c, path, 0, NULL, &j, err);
  json_decref(j);
  ms_etcd__conn_put(e, c);
  return rc;
}

int ms_etcd_proclaim(ms_etcd *e, const ms_etcd_leader_key *leader, const void *value, size_t value_len,
                     ms_error **err) {
  if (leader_call(e, "/v3/election/proclaim", leader, value, value_len, true, err) < 0) {
    char q[MS_ETCD__QUOTE_MAX];
    return ms_error_prefix(err, "proclaim in election `%s`",
                           quote(leader->name, leader->name_len, q, sizeof(q)));
  }
  return 0;
}

int ms_etcd_resign(ms_etcd *e, const ms_etcd_leader_key *leader, ms_error **err) {
  if (leader_call(e, "/v3/election/resign", leader, NULL, 0, false, err) < 0) {
    char q[MS_ETCD__QUOTE_MAX];
    return ms_error_prefix(err, "resign from election `%s`",
                           quote(leader->name, leader->name_len, q, sizeof(q)));
  }
  return 0;
}
