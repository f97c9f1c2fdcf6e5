#include "registry-commit.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"

/* etcd refuses a txn with more than 128 compares, success or failure ops
 * (--max-txn-ops), or over 1.5 MiB. */
#define GROUP_OPS 120
#define GROUP_BYTES (1024 * 1024)

struct reg_committer {
  ms_etcd *etcd;
  pthread_mutex_t mu;
  pthread_cond_t cond;
  reg_op *head, *tail;
  size_t queued, queued_bytes; /* ops between head and tail, their keys and values */
  bool stopping;
  pthread_t *threads;
  size_t n_threads;
};

void reg_plan_release(reg_plan *p) {
  free(p->id);
  free(p->key);
  free(p->value);
}

/* ---- the queue ----------------------------------------------------------------------- */

static size_t op_bytes(const reg_op *op) {
  size_t n = 0;
  for (size_t j = 0; j < op->n_plans; j++)
    n += op->plans[j].value_len + strlen(op->plans[j].key);
  return n;
}

int reg_committer_submit(reg_committer *c, reg_op *op, ms_error **err) {
  op->next = NULL;
  size_t bytes = op_bytes(op);
  pthread_mutex_lock(&c->mu);
  if (c->queued >= REG_MAX_QUEUED || c->queued_bytes + bytes > REG_MAX_QUEUED_BYTES) {
    size_t n = c->queued, b = c->queued_bytes;
    pthread_mutex_unlock(&c->mu);
    return ms_error_set(err, MS_RESOURCE_EXHAUSTED, "registry busy: %zu requests (%zu KiB) already queued", n,
                        b / 1024);
  }
  c->queued++;
  c->queued_bytes += bytes;
  if (c->tail)
    c->tail->next = op;
  else
    c->head = op;
  c->tail = op;
  pthread_cond_signal(&c->cond);
  pthread_mutex_unlock(&c->mu);
  return 0;
}

/* Puts writes whose expectations held back at the front, in order. */
static void requeue_front(reg_committer *c, reg_op **ops, size_t n) {
  if (n == 0)
    return;
  pthread_mutex_lock(&c->mu);
  c->queued += n; /* back where they were: not refused for the bound */
  for (size_t i = n; i-- > 0;) {
    c->queued_bytes += op_bytes(ops[i]);
    ops[i]->next = c->head;
    c->head = ops[i];
    if (!c->tail)
      c->tail = ops[i];
  }
  pthread_cond_signal(&c->cond);
  pthread_mutex_unlock(&c->mu);
}

static bool key_taken(reg_op **group, size_t n, const reg_plan *p) {
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < group[i]->n_plans; j++)
      if (strcmp(group[i]->plans[j].key, p->key) == 0)
        return true;
  return false;
}

/* Takes the longest run of ops from the front that fits one transaction: all reads
 * or all writes, within etcd's limits, no key written twice. */
static size_t take_group(reg_committer *c, reg_op **group) {
  pthread_mutex_lock(&c->mu);
  while (!c->head && !c->stopping)
    pthread_cond_wait(&c->cond, &c->mu);
  size_t n = 0, ops = 0, bytes = 0;
  while (c->head) {
    reg_op *op = c->head;
    if (n && op->read != group[0]->read)
      break;
    size_t ob = op_bytes(op);
    bool clash = false;
    for (size_t j = 0; j < op->n_plans; j++)
      clash |= !op->read && key_taken(group, n, &op->plans[j]);
    if (n && (clash || ops + op->n_plans > GROUP_OPS || bytes + ob > GROUP_BYTES))
      break;
    c->head = op->next;
    if (!c->head)
      c->tail = NULL;
    c->queued--;
    c->queued_bytes -= ob;
    group[n++] = op;
    ops += op->n_plans;
    bytes += ob;
  }
  pthread_mutex_unlock(&c->mu);
  return n;
}

/* ---- writes --------------------------------------------------------------------------- */

static bool holds(const reg_plan *p, const ms_etcd_range_result *found) {
  bool exists = found->n_kvs > 0;
  switch (p->expect) {
  case MESETA__V1__EXPECT__EXPECT_ABSENT:
    return !exists;
  case MESETA__V1__EXPECT__EXPECT_REVISION:
    return exists && found->kvs[0].mod_revision == p->expect_revision;
  default: /* any: a delete needs something to delete */
    return p->value ? true : exists;
  }
}

static void refuse(reg_op *op, size_t i, const ms_etcd_range_result *found) {
  const reg_plan *p = &op->plans[i];
  const char *k = reg_kind_name(p->kind);
  if (found->n_kvs == 0) {
    if (p->expect == MESETA__V1__EXPECT__EXPECT_REVISION)
      ms_error_set(&op->err, MS_ABORTED, "%s record `%s` no longer exists (expected revision %lld)", k, p->id,
                   (long long)p->expect_revision);
    else
      ms_error_set(&op->err, MS_NOT_FOUND, "%s record `%s` does not exist", k, p->id);
  } else if (p->expect == MESETA__V1__EXPECT__EXPECT_ABSENT) {
    ms_error_set(&op->err, MS_ABORTED, "%s record `%s` already exists (revision %lld)", k, p->id,
                 (long long)found->kvs[0].mod_revision);
  } else {
    ms_error_set(&op->err, MS_ABORTED, "%s record `%s` is at revision %lld, not %lld: read it again", k,
                 p->id, (long long)found->kvs[0].mod_revision, (long long)p->expect_revision);
  }
  if (op->n_plans > 1)
    ms_error_prefix(&op->err, "field `%s[%zu]`", op->field, i);
}

static void compare_for(const reg_plan *p, ms_etcd_compare *cmp, size_t *n) {
  ms_etcd_compare c = {.key = p->key, .key_len = strlen(p->key), .result = MS_ETCD_EQUAL};
  if (p->expect == MESETA__V1__EXPECT__EXPECT_ABSENT) {
    c.target = MS_ETCD_TARGET_CREATE;
  } else if (p->expect == MESETA__V1__EXPECT__EXPECT_REVISION) {
    c.target = MS_ETCD_TARGET_MOD;
    c.number = p->expect_revision;
  } else if (!p->value) {
    c.target = MS_ETCD_TARGET_VERSION; /* any, deleting: it must exist */
    c.result = MS_ETCD_GREATER;
  } else {
    return; /* any, putting: no compare */
  }
  cmp[(*n)++] = c;
}

static void fail_all(reg_op **group, size_t n, const ms_error *err) {
  for (size_t i = 0; i < n; i++) {
    ms_error_set(&group[i]->err, err->code, "%s", err->msg);
    if (group[i]->n_plans == 1)
      ms_error_prefix(&group[i]->err, "%s record `%s`", reg_kind_name(group[i]->plans[0].kind),
                      group[i]->plans[0].id);
  }
}

static void commit_writes(reg_committer *c, reg_op **group, size_t n) {
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += group[i]->n_plans;
  ms_etcd_compare *cmp = ms_xcalloc(total, sizeof(*cmp));
  ms_etcd_op *ops = ms_xcalloc(total, sizeof(*ops)), *reads = ms_xcalloc(total, sizeof(*reads));
  ms_etcd_range_opts keys_only = {.keys_only = true};
  size_t n_cmp = 0, k = 0;
  for (size_t i = 0; i < n; i++) {
    for (size_t j = 0; j < group[i]->n_plans; j++, k++) {
      const reg_plan *p = &group[i]->plans[j];
      compare_for(p, cmp, &n_cmp);
      ops[k] = (ms_etcd_op){.type = p->value ? MS_ETCD_OP_PUT : MS_ETCD_OP_DELETE,
                            .key = p->key,
                            .key_len = strlen(p->key),
                            .value = p->value,
                            .value_len = p->value_len};
      reads[k] = (ms_etcd_op){
          .type = MS_ETCD_OP_RANGE, .key = p->key, .key_len = strlen(p->key), .range = &keys_only};
    }
  }
  ms_etcd_txn_result res = {0}, found = {0};
  ms_error *err = NULL;
  reg_op **retry = ms_xcalloc(n, sizeof(*retry));
  size_t n_retry = 0;
  /* No failure branch: it is rarely needed and etcd would parse it every time.
   * After a failed compare the keys are read on their own. */
  if (ms_etcd_txn(c->etcd, cmp, n_cmp, ops, total, NULL, 0, &res, &err) < 0 ||
      (!res.succeeded && ms_etcd_txn(c->etcd, NULL, 0, reads, total, NULL, 0, &found, &err) < 0)) {
    fail_all(group, n, err);
    ms_error_free(err);
  } else if (res.succeeded) {
    for (size_t i = 0; i < n; i++)
      group[i]->revision = res.revision;
  } else {
    /* Someone's expectation failed: find whose, refuse them, retry the others (if
     * their keys changed meanwhile, the retry's own compares catch it). */
    k = 0;
    for (size_t i = 0; i < n; i++) {
      bool ok = true;
      for (size_t j = 0; j < group[i]->n_plans; j++, k++) {
        if (ok && k < found.n_responses && !holds(&group[i]->plans[j], &found.responses[k].range)) {
          refuse(group[i], j, &found.responses[k].range);
          ok = false;
        }
      }
      if (ok)
        retry[n_retry++] = group[i];
    }
  }
  ms_etcd_txn_result_release(&found);
  ms_etcd_txn_result_release(&res);
  free(cmp);
  free(ops);
  free(reads);
  requeue_front(c, retry, n_retry);
  for (size_t i = 0; i < n; i++) {
    bool again = false;
    for (size_t j = 0; j < n_retry; j++)
      again |= retry[j] == group[i];
    if (!again)
      group[i]->done(group[i]);
  }
  free(retry);
}

/* ---- reads ---------------------------------------------------------------------------- */

static void commit_reads(reg_committer *c, reg_op **group, size_t n) {
  ms_etcd_op *reads = ms_xcalloc(n, sizeof(*reads));
  for (size_t i = 0; i < n; i++)
    reads[i] = (ms_etcd_op){
        .type = MS_ETCD_OP_RANGE, .key = group[i]->plans[0].key, .key_len = strlen(group[i]->plans[0].key)};
  ms_etcd_txn_result res = {0};
  ms_error *err = NULL;
  if (ms_etcd_txn(c->etcd, NULL, 0, reads, n, NULL, 0, &res, &err) < 0) {
    fail_all(group, n, err);
    ms_error_free(err);
  } else {
    for (size_t i = 0; i < n && i < res.n_responses; i++) {
      const ms_etcd_range_result *r = &res.responses[i].range;
      group[i]->found = r->n_kvs > 0;
      if (group[i]->found) {
        group[i]->value = ms_xmalloc(r->kvs[0].value_len + 1);
        memcpy(group[i]->value, r->kvs[0].value, r->kvs[0].value_len);
        group[i]->value_len = r->kvs[0].value_len;
        group[i]->mod_revision = r->kvs[0].mod_revision;
      }
    }
  }
  ms_etcd_txn_result_release(&res);
  free(reads);
  for (size_t i = 0; i < n; i++)
    group[i]->done(group[i]);
}

static void *committer_main(void *arg) {
  reg_committer *c = arg;
  reg_op *group[GROUP_OPS];
  for (;;) {
    size_t n = take_group(c, group);
    if (n == 0)
      return NULL; /* stopping and drained */
    if (group[0]->read)
      commit_reads(c, group, n);
    else
      commit_writes(c, group, n);
  }
}

reg_committer *reg_committer_new(ms_etcd *etcd, size_t threads, ms_error **err) {
  reg_committer *c = ms_xcalloc(1, sizeof(*c));
  c->etcd = etcd;
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cond, NULL);
  c->threads = ms_xcalloc(threads ? threads : 1, sizeof(pthread_t));
  for (size_t i = 0; i < (threads ? threads : 1); i++) {
    int e = pthread_create(&c->threads[i], NULL, committer_main, c);
    if (e != 0) {
      ms_error_set_errno(err, e, "start committer thread %zu", i);
      reg_committer_free(c);
      return NULL;
    }
    c->n_threads++;
  }
  return c;
}

void reg_committer_free(reg_committer *c) {
  if (!c)
    return;
  pthread_mutex_lock(&c->mu);
  c->stopping = true;
  pthread_cond_broadcast(&c->cond);
  pthread_mutex_unlock(&c->mu);
  for (size_t i = 0; i < c->n_threads; i++)
    pthread_join(c->threads[i], NULL);
  free(c->threads);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cond);
  free(c);
}
