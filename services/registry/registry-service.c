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

#include "registry-commit.h"
#include "registry-internal.h"
#include "registry-records.h"

#define LIST_DEFAULT 500
#define LIST_MAX 5000
#define BATCH_MAX 64

struct reg_service {
  reg_config cfg;
  ms_etcd *etcd;
  ms_workq *pool;           /* listings and watch starts / stops */
  reg_committer *committer; /* gets and writes, grouped */
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

size_t reg_response_budget(const reg_service *svc) {
  /* Room for everything around the records in one message. */
  int64_t max = svc->cfg.max_message_bytes > 0 ? svc->cfg.max_message_bytes : MS_RPC_DEFAULT_MAX_MESSAGE;
  return (size_t)(max > 128 * 1024 ? max - 64 * 1024 : max / 2);
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

/* ---- writes and gets: through the group committer --------------------------------------- */

typedef enum call_kind { CALL_GET, CALL_PUT, CALL_DELETE, CALL_BATCH } call_kind;

typedef struct call_op {
  reg_op op;
  ms_rpc_call *call;
  call_kind kind;
  reg_service *svc;
} call_op;

static void call_op_free(call_op *co) {
  for (size_t i = 0; i < co->op.n_plans; i++)
    reg_plan_release(&co->op.plans[i]);
  free(co->op.plans);
  free(co->op.value);
  ms_error_free(co->op.err);
  ms_rpc_call_unref(co->call);
  free(co);
}

/* Answers the call once the committer is done with its op (a committer thread). */
static void answer(reg_op *op) {
  call_op *co = (call_op *)op;
  ms_error *err = NULL;
  if (op->err) {
    ms_log_debug(NULL, "%s: %s %s", ms_rpc_call_method(co->call), ms_status_name(op->err->code),
                 op->err->msg);
    ms_rpc_call_finish_error(co->call, op->err);
  } else if (co->kind == CALL_GET) {
    const reg_plan *p = &op->plans[0];
    if (!op->found) {
      ms_error_set(&err, MS_NOT_FOUND, "%s record `%s` does not exist", reg_kind_name(p->kind), p->id);
    } else {
      ms_etcd_kv kv = {.key = p->key,
                       .key_len = strlen(p->key),
                       .value = (char *)op->value,
                       .value_len = op->value_len,
                       .mod_revision = op->mod_revision};
      reg_record *r = reg_decode(co->svc, &kv, &err);
      if (r) {
        ms_rpc_call_reply(co->call, &r->base, &err);
        meseta__v1__record__free_unpacked(r, NULL);
      }
    }
  } else {
    /* Put, Delete and Batch answers are one revision field each. */
    Meseta__V1__PutResponse put = MESETA__V1__PUT_RESPONSE__INIT;
    Meseta__V1__DeleteResponse del = MESETA__V1__DELETE_RESPONSE__INIT;
    Meseta__V1__BatchResponse batch = MESETA__V1__BATCH_RESPONSE__INIT;
    put.revision = del.revision = batch.revision = op->revision;
    const ProtobufCMessage *resp = co->kind == CALL_PUT      ? &put.base
                                   : co->kind == CALL_DELETE ? &del.base
                                                             : &batch.base;
    ms_rpc_call_reply(co->call, resp, &err);
  }
  if (err) {
    ms_rpc_call_finish_error(co->call, err);
    ms_error_free(err);
  }
  call_op_free(co);
}

static int check_expect(const Meseta__V1__Expect *e, bool deleting, const char *field, reg_plan *p,
                        ms_error **err) {
  if (!e || e->expect_case == MESETA__V1__EXPECT__EXPECT__NOT_SET)
    return ms_error_set(
        err, MS_INVALID_ARGUMENT,
        "field `%s` is required: absent, a revision, or any (every write is a compare-and-swap)", field);
  if (e->expect_case == MESETA__V1__EXPECT__EXPECT_ABSENT && deleting)
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "field `%s`: a delete cannot expect the record to be absent", field);
  if (e->expect_case == MESETA__V1__EXPECT__EXPECT_REVISION && e->revision <= 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `%s.revision`: %lld is not a revision", field,
                        (long long)e->revision);
  p->expect = e->expect_case;
  p->expect_revision = e->revision;
  return 0;
}

static int plan_put(const reg_service *svc, const reg_record *r, const Meseta__V1__Expect *e,
                    const char *field, const char *expect_field, reg_plan *ret, ms_error **err) {
  if (!r)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `%s` is required", field);
  if (reg_validate(r, err) < 0 || check_expect(e, false, expect_field, ret, err) < 0)
    return MS_ERR;
  ret->kind = reg_record_kind(r);
  ret->id = ms_xstrdup(r->id);
  ret->key = reg_key(svc->cfg.prefix, ret->kind, r->id);
  ret->value = encode(r, &ret->value_len);
  return 0;
}

static int plan_ref(const reg_service *svc, reg_kind kind, const char *id, const Meseta__V1__Expect *e,
                    bool deleting, const char *field, const char *expect_field, reg_plan *ret,
                    ms_error **err) {
  if (reg_check_ref(kind, id, field, err) < 0)
    return MS_ERR;
  if (deleting && check_expect(e, true, expect_field, ret, err) < 0)
    return MS_ERR;
  ret->kind = kind;
  ret->id = ms_xstrdup(id);
  ret->key = reg_key(svc->cfg.prefix, kind, id);
  return 0;
}

static call_op *call_op_new(ms_rpc_call *call, call_kind kind, size_t n_plans) {
  call_op *co = ms_xcalloc(1, sizeof(*co));
  co->call = call;
  co->kind = kind;
  co->svc = ms_rpc_call_userdata(call);
  co->op.plans = ms_xcalloc(n_plans, sizeof(reg_plan));
  co->op.n_plans = n_plans;
  co->op.read = kind == CALL_GET;
  co->op.field = kind == CALL_BATCH ? "writes" : "expect";
  co->op.done = answer;
  ms_rpc_call_ref(call);
  return co;
}

static int submit_or_free(call_op *co, int rc, ms_error **err) {
  if (rc < 0 || reg_committer_submit(co->svc->committer, &co->op, err) < 0) {
    call_op_free(co);
    return MS_ERR;
  }
  return 0;
}

/* ---- reads ----------------------------------------------------------------------------- */

static int on_get(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  const Meseta__V1__GetRequest *req = (const void *)msg;
  call_op *co = call_op_new(call, CALL_GET, 1);
  return submit_or_free(
      co, plan_ref(co->svc, req->kind, req->id, NULL, false, "request", NULL, &co->op.plans[0], err), err);
}

static int on_put(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  const Meseta__V1__PutRequest *req = (const void *)msg;
  call_op *co = call_op_new(call, CALL_PUT, 1);
  return submit_or_free(
      co, plan_put(co->svc, req->record, req->expect, "record", "expect", &co->op.plans[0], err), err);
}

static int on_delete(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  const Meseta__V1__DeleteRequest *req = (const void *)msg;
  if (!req->ref)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `ref` is required");
  call_op *co = call_op_new(call, CALL_DELETE, 1);
  return submit_or_free(co,
                        plan_ref(co->svc, req->ref->kind, req->ref->id, req->expect, true, "ref", "expect",
                                 &co->op.plans[0], err),
                        err);
}

static int on_batch(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  const Meseta__V1__BatchRequest *req = (const void *)msg;
  if (req->n_writes == 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `writes` is empty");
  if (req->n_writes > BATCH_MAX)
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "field `writes`: %zu writes is over the limit of %d per batch", req->n_writes,
                        BATCH_MAX);
  call_op *co = call_op_new(call, CALL_BATCH, req->n_writes);
  int rc = 0;
  for (size_t i = 0; i < req->n_writes && rc == 0; i++) {
    const Meseta__V1__Write *w = req->writes[i];
    _cleanup_free_ char *f = ms_xasprintf("writes[%zu]", i);
    _cleanup_free_ char *fe = ms_xasprintf("writes[%zu].expect", i);
    if (w->op_case == MESETA__V1__WRITE__OP_PUT)
      rc = plan_put(co->svc, w->put, w->expect, f, fe, &co->op.plans[i], err);
    else if (w->op_case == MESETA__V1__WRITE__OP_DELETE && w->delete_)
      rc = plan_ref(co->svc, w->delete_->kind, w->delete_->id, w->expect, true, f, fe, &co->op.plans[i], err);
    else
      rc = ms_error_set(err, MS_INVALID_ARGUMENT, "field `%s.op` is empty: put or delete", f);
    for (size_t j = 0; rc == 0 && j < i; j++)
      if (strcmp(co->op.plans[j].key, co->op.plans[i].key) == 0)
        rc =
            ms_error_set(err, MS_INVALID_ARGUMENT, "field `%s`: %s record `%s` is written twice in one batch",
                         f, reg_kind_name(co->op.plans[i].kind), co->op.plans[i].id);
  }
  return submit_or_free(co, rc, err);
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
  /* A page also ends before it would outgrow a gRPC message (big records). */
  size_t bytes = 0, budget = reg_response_budget(svc);
  const ms_etcd_kv *next = NULL;
  for (size_t i = 0; i < res.n_kvs && rc == 0; i++) {
    size_t rec_bytes = res.kvs[i].value_len + res.kvs[i].key_len + 16;
    if (resp.n_records && bytes + rec_bytes > budget) {
      next = &res.kvs[i];
      break;
    }
    reg_record *r = reg_decode(svc, &res.kvs[i], err);
    if (!r)
      rc = MS_ERR;
    else
      resp.records[resp.n_records++] = r;
    bytes += rec_bytes;
  }
  _cleanup_free_ char *token = NULL;
  if (rc == 0 && next) {
    /* The next page starts at the first record left out. */
    token = reg_page_token_encode((long long)res.revision, next->key, next->key_len);
    resp.next_page_token = token;
  } else if (rc == 0 && res.more && res.n_kvs) {
    /* The next page starts just past the last key: the key with a NUL appended. */
    const ms_etcd_kv *last = &res.kvs[res.n_kvs - 1];
    _cleanup_free_ char *after = ms_xmalloc(last->key_len + 1);
    memcpy(after, last->key, last->key_len);
    after[last->key_len] = '\0';
    token = reg_page_token_encode((long long)res.revision, after, last->key_len + 1);
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

static int on_list(ms_rpc_call *c, const ProtobufCMessage *m, ms_error **err) {
  return offload(c, m, do_list, err);
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
  if (svc->pool)
    svc->committer = reg_committer_new(etcd, cfg->committers ? cfg->committers : 2, err);
  if (!svc->pool || !svc->committer) {
    reg_service_free(svc);
    return NULL;
  }
  return svc;
}

void reg_service_free(reg_service *svc) {
  if (!svc)
    return;
  reg_committer_free(svc->committer);
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
