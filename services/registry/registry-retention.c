/* Retention: the registry keeps gone and unreachable agents and completed
 * frameworks only up to a count and an age, so etcd does not grow forever with
 * machines long decommissioned (Mesos' registry_max_agent_age / _count). */
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"

#include "registry-internal.h"

typedef struct aged {
  char *key;
  size_t key_len;
  int64_t revision;
  int64_t when_ms;
} aged;

typedef struct aged_list {
  aged *v;
  size_t n;
} aged_list;

static int64_t ts_ms(const Google__Protobuf__Timestamp *t) {
  return t ? t->seconds * 1000 + t->nanos / 1000000 : 0;
}

static void push(aged_list *l, const ms_etcd_kv *kv, int64_t when_ms) {
  l->v = ms_xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
  l->v[l->n++] = (aged){.key = ms_xstrndup(kv->key, kv->key_len),
                        .key_len = kv->key_len,
                        .revision = kv->mod_revision,
                        .when_ms = when_ms};
}

static int newest_first(const void *a, const void *b) {
  int64_t x = ((const aged *)a)->when_ms, y = ((const aged *)b)->when_ms;
  return x < y ? 1 : x > y ? -1 : 0;
}

/* Deletes, oldest first, what is past `max` (0: no limit) or older than ttl_ms (0: no
 * limit). Each delete holds only if the record is unchanged since it was read. */
static int prune(reg_service *svc, aged_list *l, int64_t max, int64_t ttl_ms, int64_t now_ms, size_t *pruned,
                 ms_error **err) {
  if (l->n == 0)
    return 0; /* qsort may not be given NULL, even for nothing */
  qsort(l->v, l->n, sizeof(*l->v), newest_first);
  for (size_t i = 0; i < l->n; i++) {
    bool over = max > 0 && (int64_t)i >= max;
    bool old = ttl_ms > 0 && now_ms - l->v[i].when_ms > ttl_ms;
    if (!over && !old)
      continue;
    ms_etcd_compare c = {.key = l->v[i].key,
                         .key_len = l->v[i].key_len,
                         .target = MS_ETCD_TARGET_MOD,
                         .result = MS_ETCD_EQUAL,
                         .number = l->v[i].revision};
    ms_etcd_op del = {.type = MS_ETCD_OP_DELETE, .key = l->v[i].key, .key_len = l->v[i].key_len};
    ms_etcd_txn_result res = {0};
    if (ms_etcd_txn(reg_service_etcd(svc), &c, 1, &del, 1, NULL, 0, &res, err) < 0)
      return MS_ERR;
    if (res.succeeded) {
      (*pruned)++;
      ms_log_debug(NULL, "retention: pruned `%s`", l->v[i].key);
    }
    ms_etcd_txn_result_release(&res);
  }
  return 0;
}

static void release(aged_list *l) {
  for (size_t i = 0; i < l->n; i++)
    free(l->v[i].key);
  free(l->v);
}

/* Reads every record of a kind (in pages, at one revision) into the lists. */
static int scan(reg_service *svc, reg_kind kind, aged_list *a, aged_list *b, ms_error **err) {
  const reg_config *cfg = reg_service_config(svc);
  _cleanup_free_ char *prefix = reg_kind_prefix(cfg->prefix, kind);
  _cleanup_free_ char *end = ms_xstrdup(prefix);
  end[strlen(end) - 1]++;
  _cleanup_free_ char *start = ms_xstrdup(prefix);
  size_t start_len = strlen(start);
  int64_t revision = 0;
  for (;;) {
    ms_etcd_range_opts o = {
        .range_end = end, .range_end_len = strlen(end), .limit = 1000, .revision = revision};
    ms_etcd_range_result res = {0};
    if (ms_etcd_range(reg_service_etcd(svc), start, start_len, &o, &res, err) < 0)
      return MS_ERR;
    revision = res.revision;
    for (size_t i = 0; i < res.n_kvs; i++) {
      ms_error *bad = NULL;
      reg_record *r = reg_decode(svc, &res.kvs[i], &bad);
      if (!r) { /* not ours to delete: say so and leave it */
        ms_log_debug(NULL, "retention: %s", bad->msg);
        ms_error_free(bad);
        continue;
      }
      if (kind == MESETA__V1__RECORD_KIND__AGENT && r->agent) {
        if (r->agent->state == MESETA__V1__AGENT_RECORD__STATE__GONE)
          push(a, &res.kvs[i], ts_ms(r->agent->gone_time));
        else if (r->agent->state == MESETA__V1__AGENT_RECORD__STATE__UNREACHABLE)
          push(b, &res.kvs[i], ts_ms(r->agent->unreachable_time));
      } else if (kind == MESETA__V1__RECORD_KIND__FRAMEWORK && r->framework && r->framework->completed_time) {
        push(a, &res.kvs[i], ts_ms(r->framework->completed_time));
      }
      meseta__v1__record__free_unpacked(r, NULL);
    }
    bool more = res.more && res.n_kvs;
    if (more) {
      const ms_etcd_kv *last = &res.kvs[res.n_kvs - 1];
      free(start);
      start = ms_xmalloc(last->key_len + 1);
      memcpy(start, last->key, last->key_len);
      start[last->key_len] = '\0'; /* just past the last key */
      start_len = last->key_len + 1;
    }
    ms_etcd_range_result_release(&res);
    if (!more)
      return 0;
  }
}

int reg_retention_run(reg_service *svc, int64_t now_ms, size_t *ret_pruned, ms_error **err) {
  const reg_config *cfg = reg_service_config(svc);
  aged_list gone = {0}, unreachable = {0}, completed = {0};
  size_t pruned = 0;
  int rc = scan(svc, MESETA__V1__RECORD_KIND__AGENT, &gone, &unreachable, err);
  if (rc == 0)
    rc = scan(svc, MESETA__V1__RECORD_KIND__FRAMEWORK, &completed, NULL, err);
  if (rc == 0)
    rc = prune(svc, &gone, cfg->max_gone_agents, cfg->gone_agent_ttl_ms, now_ms, &pruned, err);
  if (rc == 0)
    rc = prune(svc, &unreachable, cfg->max_unreachable_agents, cfg->unreachable_agent_ttl_ms, now_ms, &pruned,
               err);
  if (rc == 0)
    rc = prune(svc, &completed, cfg->max_completed_frameworks, 0, now_ms, &pruned, err);
  release(&gone);
  release(&unreachable);
  release(&completed);
  if (ret_pruned)
    *ret_pruned = pruned;
  return rc < 0 ? ms_error_prefix(err, "retention") : 0;
}
