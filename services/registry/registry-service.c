/* Registry handlers: each unary call becomes a job on the worker pool, which does
 * its etcd transaction and answers. Writes are transactions guarded by the
 * expectation the caller named; a failed guard reads what is there instead, so
 * the refusal can say what was found. */
#include "registry-service.h"

#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/pb.h"
#include "meseta/workq.h"

#include "registry-internal.h"
#include "registry-records.h"

#define LIST_DEFAULT 500
#define LIST_MAX 5000
#define BATCH_MAX 64 /* two compares or ops per write; etcd allows 128 per txn */

struct reg_service {
  reg_config cfg;
  ms_etcd *etcd;
  ms_workq *pool;
};

const reg_config *reg_service_config(const reg_service *svc) {
  return &svc->cfg;
}
ms_etcd *reg_service_etcd(const reg_service *svc) {
  return svc->etcd;
}
ms_workq *reg_service_pool(const reg_service *svc) {
  return svc->pool;
}

/* ---- decoding stored records ------------------------------------------------------ */

reg_record *reg_decode(const reg_service *svc, const ms_etcd_kv *kv, ms_error **err) {
  reg_record *r = meseta__v1__record__unpack(NULL, kv->value_len, (const uint8_t *)kv->value);
  if (!r) {
    ms_error_set(err, MS_DATA_LOSS, "record at `%.*s` in etcd is not a valid meseta.v1.Record",
                 (int)kv->key_len, kv->key);
    return NULL;
  }
  r->revision = kv->mod_revision;
  return r;
}

/* The bytes stored for a record: the record with revision 0. */
static uint8_t *encode(const reg_record *r, size_t *ret_len) {
  reg_record copy = *r;
  copy.revision = 0;
  return ms_pb_pack(&copy.base, ret_len);
}

/* ---- the offload ------------------------------------------------------------------ */

typedef int (*work_fn)(reg_service *svc, ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err);

typedef struct job {
  reg_service *svc;
  ms_rpc_call *call;
  ProtobufCMessage *req;
  work_fn fn;
} job;

static void run_job(void *arg) {
  job *j = arg;
  ms_error *err = NULL;
  if (j->fn(j->svc, j->call, j->req, &err) < 0) {
    ms_log_debug(NULL, "%s: %s %s", ms_rpc_call_method(j->call), ms_status_name(err->code), err->msg);
    ms_rpc_call_finish_error(j->call, err);
    ms_error_free(err);
  }
  protobuf_c_message_free_unpacked(j->req, NULL);
  ms_rpc_call_unref(j->call);
  free(j);
}

static int offload(ms_rpc_call *call, const ProtobufCMessage *req, work_fn fn, ms_error **err) {
  reg_service *svc = ms_rpc_call_userdata(call);
  job *j = ms_xcalloc(1, sizeof(*j));
  *j = (job){.svc = svc, .call = call, .req = ms_pb_dup(req), .fn = fn};
  ms_rpc_call_ref(call);
  if (ms_workq_push(svc->pool, run_job, j, err) < 0) {
    protobuf_c_message_free_unpacked(j->req, NULL);
    ms_rpc_call_unref(call);
    free(j);
    return MS_ERR;
  }
  return 0;
}

/* ---- expectations -------------------------------------------------------------------- */

/* Adds the compare an expectation asks for (none for `any`). */
static int expect_compare(const Meseta__V1__Expect *e, bool deleting, const char *key, ms_etcd_compare *cmp,
                          size_t *n, const char *field, ms_error **err) {
  if (!e || e->expect_case == MESETA__V1__EXPECT__EXPECT__NOT_SET)
    return ms_error_set(
        err, MS_INVALID_ARGUMENT,
        "field `%s` is required: absent, a revision, or any (every write is a compare-and-swap)", field);
  ms_etcd_compare c = {.key = key, .key_len = strlen(key), .result = MS_ETCD_EQUAL};
  switch (e->expect_case) {
  case MESETA__V1__EXPECT__EXPECT_ABSENT:
    if (deleting)
      return ms_error_set(err, MS_INVALID_ARGUMENT,
                          "field `%s`: a delete cannot expect the record to be absent", field);
    c.target = MS_ETCD_TARGET_CREATE;
    c.number = 0;
    break;
  case MESETA__V1__EXPECT__EXPECT_REVISION:
    if (e->revision <= 0)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "field `%s.revision`: %lld is not a revision", field,
                          (long long)e->revision);
    c.target = MS_ETCD_TARGET_MOD;
    c.number = e->revision;
    break;
  default: /* any: a delete still needs something to delete */
    if (!deleting)
      return 0;
    c.target = MS_ETCD_TARGET_VERSION;
    c.result = MS_ETCD_GREATER;
    c.number = 0;
    break;
  }
  cmp[(*n)++] = c;
  return 0;
}

/* Why an expectation failed, from what the failure branch read. */
static int refusal(reg_kind kind, const char *id, const Meseta__V1__Expect *e,
                   const ms_etcd_range_result *found, ms_error **err) {
  const char *k = reg_kind_name(kind);
  if (found->n_kvs == 0) {
    if (e->expect_case == MESETA__V1__EXPECT__EXPECT_REVISION)
      return ms_error_set(err, MS_ABORTED, "%s record `%s` no longer exists (expected revision %lld)", k, id,
                          (long long)e->revision);
    return ms_error_set(err, MS_NOT_FOUND, "%s record `%s` does not exist", k, id);
  }
  long long now = (long long)found->kvs[0].mod_revision;
  if (e->expect_case == MESETA__V1__EXPECT__EXPECT_ABSENT)
    return ms_error_set(err, MS_ABORTED, "%s record `%s` already exists (revision %lld)", k, id, now);
  return ms_error_set(err, MS_ABORTED, "%s record `%s` is at revision %lld, not %lld: read it again", k, id,
                      now, (long long)e->revision);
}

/* ---- writes -------------------------------------------------------------------------- */

typedef struct plan {
  reg_kind kind;
  const char *id;
  char *key;
  uint8_t *value; /* NULL for a delete */
  size_t value_len;
  const Meseta__V1__Expect *expect;
} plan;

static void plan_release(plan *p) {
  free(p->key);
  free(p->value);
}

static int plan_put(const reg_service *svc, const reg_record *r, const Meseta__V1__Expect *e,
                    const char *field, plan *ret, ms_error **err) {
  if (!r)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `%s` is required", field);
  if (reg_validate(r, err) < 0)
    return MS_ERR;
  reg_kind kind = reg_record_kind(r);
  *ret = (plan){.kind = kind, .id = r->id, .key = reg_key(svc->cfg.prefix, kind, r->id), .expect = e};
  ret->value = encode(r, &ret->value_len);
  return 0;
}

static int plan_delete(const reg_service *svc, const Meseta__V1__RecordRef *ref, const Meseta__V1__Expect *e,
                       const char *field, plan *ret, ms_error **err) {
  if (!ref)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `%s` is required", field);
  if (reg_check_ref(ref->kind, ref->id, field, err) < 0)
    return MS_ERR;
  *ret = (plan){
      .kind = ref->kind, .id = ref->id, .key = reg_key(svc->cfg.prefix, ref->kind, ref->id), .expect = e};
  return 0;
}

/* Runs writes as one transaction. On a failed expectation, names the first write
 * whose expectation does not hold. */
static int apply(reg_service *svc, plan *plans, size_t n, const char *field, int64_t *ret_revision,
                 ms_error **err) {
  _cleanup_free_ ms_etcd_compare *cmp = ms_xcalloc(n, sizeof(*cmp));
  _cleanup_free_ ms_etcd_op *ops = ms_xcalloc(n, sizeof(*ops));
  _cleanup_free_ ms_etcd_op *reads = ms_xcalloc(n, sizeof(*reads));
  size_t n_cmp = 0;
  ms_etcd_range_opts keys_only = {.keys_only = true};
  for (size_t i = 0; i < n; i++) {
    plan *p = &plans[i];
    _cleanup_free_ char *f = n > 1 ? ms_xasprintf("%s[%zu].expect", field, i) : ms_xasprintf("%s", field);
    if (expect_compare(p->expect, !p->value, p->key, cmp, &n_cmp, f, err) < 0)
      return MS_ERR;
    for (size_t j = 0; j < i; j++)
      if (strcmp(plans[j].key, p->key) == 0)
        return ms_error_set(err, MS_INVALID_ARGUMENT,
                            "field `%s[%zu]`: %s record `%s` is written twice in one batch", field, i,
                            reg_kind_name(p->kind), p->id);
    ops[i] = (ms_etcd_op){.type = p->value ? MS_ETCD_OP_PUT : MS_ETCD_OP_DELETE,
                          .key = p->key,
                          .key_len = strlen(p->key),
                          .value = p->value,
                          .value_len = p->value_len};
    reads[i] =
        (ms_etcd_op){.type = MS_ETCD_OP_RANGE, .key = p->key, .key_len = strlen(p->key), .range = &keys_only};
  }
  ms_etcd_txn_result res = {0};
  if (ms_etcd_txn(svc->etcd, cmp, n_cmp, ops, n, reads, n, &res, err) < 0)
    return n == 1 ? ms_error_prefix(err, "%s record `%s`", reg_kind_name(plans[0].kind), plans[0].id)
                  : MS_ERR;
  int rc = 0;
  if (res.succeeded) {
    *ret_revision = res.revision;
  } else {
    /* Find the write whose expectation failed. */
    rc = ms_error_set(err, MS_ABORTED, "the batch's expectations no longer hold: read again");
    for (size_t i = 0; i < n && i < res.n_responses; i++) {
      const ms_etcd_range_result *found = &res.responses[i].range;
      const Meseta__V1__Expect *e = plans[i].expect;
      bool exists = found->n_kvs > 0;
      bool holds = e->expect_case == MESETA__V1__EXPECT__EXPECT_ABSENT ? !exists
                   : e->expect_case == MESETA__V1__EXPECT__EXPECT_REVISION
                       ? exists && found->kvs[0].mod_revision == e->revision
                   : plans[i].value ? true
                                    : exists;
      if (!holds) {
        refusal(plans[i].kind, plans[i].id, e, found, err);
        if (n > 1)
          ms_error_prefix(err, "field `%s[%zu]`", field, i);
        break;
      }
    }
  }
  ms_etcd_txn_result_release(&res);
  return rc;
}

static int do_put(reg_service *svc, ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  const Meseta__V1__PutRequest *req = (const void *)msg;
  plan p = {0};
  if (plan_put(svc, req->record, req->expect, "record", &p, err) < 0)
    return MS_ERR;
  int64_t rev = 0;
  int rc = apply(svc, &p, 1, "expect", &rev, err);
  plan_release(&p);
  if (rc < 0)
    return MS_ERR;
  Meseta__V1__PutResponse resp = MESETA__V1__PUT_RESPONSE__INIT;
  resp.revision = rev;
  return ms_rpc_call_reply(call, &resp.base, err);
}

static int do_delete(reg_service *svc, ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  const Meseta__V1__DeleteRequest *req = (const void *)msg;
  plan p = {0};
  if (plan_delete(svc, req->ref, req->expect, "ref", &p, err) < 0)
    return MS_ERR;
  int64_t rev = 0;
  int rc = apply(svc, &p, 1, "expect", &rev, err);
  plan_release(&p);
  if (rc < 0)
    return MS_ERR;
  Meseta__V1__DeleteResponse resp = MESETA__V1__DELETE_RESPONSE__INIT;
  resp.revision = rev;
  return ms_rpc_call_reply(call, &resp.base, err);
}

static int do_batch(reg_service *svc, ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  const Meseta__V1__BatchRequest *req = (const void *)msg;
  if (req->n_writes == 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `writes` is empty");
  if (req->n_writes > BATCH_MAX)
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "field `writes`: %zu writes is over the limit of %d per batch", req->n_writes,
                        BATCH_MAX);
  plan *plans = ms_xcalloc(req->n_writes, sizeof(*plans));
  int rc = 0;
  for (size_t i = 0; i < req->n_writes && rc == 0; i++) {
    const Meseta__V1__Write *w = req->writes[i];
    _cleanup_free_ char *f = ms_xasprintf("writes[%zu]", i);
    if (w->op_case == MESETA__V1__WRITE__OP_PUT)
      rc = plan_put(svc, w->put, w->expect, f, &plans[i], err);
    else if (w->op_case == MESETA__V1__WRITE__OP_DELETE)
      rc = plan_delete(svc, w->delete_, w->expect, f, &plans[i], err);
    else
      rc = ms_error_set(err, MS_INVALID_ARGUMENT, "field `%s.op` is empty: put or delete", f);
  }
  int64_t rev = 0;
  if (rc == 0)
    rc = apply(svc, plans, req->n_writes, "writes", &rev, err);
  for (size_t i = 0; i < req->n_writes; i++)
    plan_release(&plans[i]);
  free(plans);
  if (rc < 0)
    return MS_ERR;
  Meseta__V1__BatchResponse resp = MESETA__V1__BATCH_RESPONSE__INIT;
  resp.revision = rev;
  return ms_rpc_call_reply(call, &resp.base, err);
}

/* ---- reads ----------------------------------------------------------------------------- */

static int do_get(reg_service *svc, ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  const Meseta__V1__GetRequest *req = (const void *)msg;
  if (reg_check_ref(req->kind, req->id, "request", err) < 0)
    return MS_ERR;
  _cleanup_free_ char *key = reg_key(svc->cfg.prefix, req->kind, req->id);
  ms_etcd_range_result res = {0};
  if (ms_etcd_range(svc->etcd, key, strlen(key), NULL, &res, err) < 0)
    return ms_error_prefix(err, "%s record `%s`", reg_kind_name(req->kind), req->id);
  int rc;
  if (res.n_kvs == 0) {
    rc = ms_error_set(err, MS_NOT_FOUND, "%s record `%s` does not exist", reg_kind_name(req->kind), req->id);
  } else {
    reg_record *r = reg_decode(svc, &res.kvs[0], err);
    rc = r ? ms_rpc_call_reply(call, &r->base, err) : MS_ERR;
    if (r)
      meseta__v1__record__free_unpacked(r, NULL);
  }
  ms_etcd_range_result_release(&res);
  return rc;
}

static int do_list(reg_service *svc, ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  const Meseta__V1__ListRequest *req = (const void *)msg;
  if (!reg_kind_segment(req->kind))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `kind`: %d is not a record kind", (int)req->kind);
  if (req->page_size > LIST_MAX)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `page_size`: %u is over the limit of %d",
                        req->page_size, LIST_MAX);
  uint32_t size = req->page_size ? req->page_size : LIST_DEFAULT;
  _cleanup_free_ char *prefix = reg_kind_prefix(svc->cfg.prefix, req->kind);
  _cleanup_free_ char *start = NULL;
  size_t start_len = strlen(prefix);
  long long revision = 0;
  if (req->page_token && *req->page_token) {
    if (reg_page_token_decode(req->page_token, &revision, &start, &start_len, err) < 0)
      return MS_ERR;
    if (start_len < strlen(prefix) || memcmp(start, prefix, strlen(prefix)) != 0)
      return ms_error_set(err, MS_INVALID_ARGUMENT,
                          "field `page_token` belongs to a listing of another kind");
  } else {
    start = ms_xstrdup(prefix);
  }
  /* The range ends where the prefix does: its last byte plus one. */
  _cleanup_free_ char *end = ms_xstrdup(prefix);
  end[strlen(end) - 1]++;
  ms_etcd_range_opts o = {
      .range_end = end, .range_end_len = strlen(end), .limit = size, .revision = revision};
  ms_etcd_range_result res = {0};
  if (ms_etcd_range(svc->etcd, start, start_len, &o, &res, err) < 0) {
    if ((*err)->code == MS_OUT_OF_RANGE)
      return ms_error_prefix(err, "field `page_token`: the listing's revision %lld is gone; list again",
                             revision);
    return MS_ERR;
  }
  Meseta__V1__ListResponse resp = MESETA__V1__LIST_RESPONSE__INIT;
  resp.revision = res.revision;
  resp.records = ms_xcalloc(res.n_kvs ? res.n_kvs : 1, sizeof(*resp.records));
  int rc = 0;
  for (size_t i = 0; i < res.n_kvs && rc == 0; i++) {
    reg_record *r = reg_decode(svc, &res.kvs[i], err);
    if (!r)
      rc = MS_ERR;
    else
      resp.records[resp.n_records++] = r;
  }
  _cleanup_free_ char *token = NULL;
  if (rc == 0 && res.more && res.n_kvs) {
    /* The next page starts just past the last key: the key with a NUL appended. */
    const ms_etcd_kv *last = &res.kvs[res.n_kvs - 1];
    _cleanup_free_ char *next = ms_xmalloc(last->key_len + 1);
    memcpy(next, last->key, last->key_len);
    next[last->key_len] = '\0';
    token = reg_page_token_encode((long long)res.revision, next, last->key_len + 1);
    resp.next_page_token = token;
  }
  if (rc == 0)
    rc = ms_rpc_call_reply(call, &resp.base, err);
  for (size_t i = 0; i < resp.n_records; i++)
    meseta__v1__record__free_unpacked(resp.records[i], NULL);
  free(resp.records);
  ms_etcd_range_result_release(&res);
  return rc;
}

/* ---- the table ------------------------------------------------------------------------- */

static int on_get(ms_rpc_call *c, const ProtobufCMessage *m, ms_error **err) {
  return offload(c, m, do_get, err);
}
static int on_list(ms_rpc_call *c, const ProtobufCMessage *m, ms_error **err) {
  return offload(c, m, do_list, err);
}
static int on_put(ms_rpc_call *c, const ProtobufCMessage *m, ms_error **err) {
  return offload(c, m, do_put, err);
}
static int on_delete(ms_rpc_call *c, const ProtobufCMessage *m, ms_error **err) {
  return offload(c, m, do_delete, err);
}
static int on_batch(ms_rpc_call *c, const ProtobufCMessage *m, ms_error **err) {
  return offload(c, m, do_batch, err);
}

int reg_service_add(reg_service *svc, ms_rpc_server *srv, ms_error **err) {
  static const ms_rpc_method methods[] = {
      {.name = "Get", .on_start = on_get},
      {.name = "List", .on_start = on_list},
      {.name = "Put", .on_start = on_put},
      {.name = "Delete", .on_start = on_delete},
      {.name = "Batch", .on_start = on_batch},
      {.name = "Watch", .on_start = reg_watch_start, .on_done = reg_watch_done},
      {.name = "WatchLeader", .on_start = reg_leader_start, .on_done = reg_watch_done},
  };
  return ms_rpc_server_add_service(srv, &meseta__v1__registry__descriptor, methods, MS_ARRAY_SIZE(methods),
                                   svc, err);
}

reg_service *reg_service_new(const reg_config *cfg, ms_etcd *etcd, ms_error **err) {
  reg_service *svc = ms_xcalloc(1, sizeof(*svc));
  svc->cfg = *cfg;
  svc->cfg.prefix = ms_xstrdup(cfg->prefix ? cfg->prefix : "/meseta");
  svc->cfg.election = ms_xstrdup(cfg->election && *cfg->election ? cfg->election : "meseta-allocator");
  svc->etcd = etcd;
  svc->pool = ms_workq_new(cfg->workers ? cfg->workers : 8, 0, err);
  if (!svc->pool) {
    reg_service_free(svc);
    return NULL;
  }
  return svc;
}

void reg_service_free(reg_service *svc) {
  if (!svc)
    return;
  ms_workq_free(svc->pool);
  free((char *)svc->cfg.prefix);
  free((char *)svc->cfg.election);
  free(svc);
}

int reg_etcd_check(reg_service *svc, ms_error **err) {
  _cleanup_free_ char *key = ms_xasprintf("%s/v1/", svc->cfg.prefix);
  ms_etcd_range_opts o = {.prefix = true, .count_only = true, .serializable = true};
  ms_etcd_range_result res = {0};
  if (ms_etcd_range(svc->etcd, key, strlen(key), &o, &res, err) < 0)
    return MS_ERR;
  ms_etcd_range_result_release(&res);
  return 0;
}
