/* The configuration the allocator leader keeps and persists: role weights, quota and
 * the maintenance schedule, their checks (all or nothing, INVALID_ARGUMENT naming the
 * field) and the registry batch that makes them durable. Loaded on election, applied
 * to the engine after the registry accepted them. Owner thread only. */
#include "alloc-svc-config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/pb.h"
#include "meseta/resources-io.h"
#include "meseta/roles.h"
#include "meseta/time.h"
#include "meseta/values.h"

#include "alloc-svc-core.h"
typedef Meseta__V1__OperatorCallRequest op_req;

/* ---- the configuration the leader keeps ---- */

void svc_config_weight(alloc_service *s, const char *role, double w) {
  svc_weight *x = svc_table_get(&s->weights, role);
  if (w == 1.0) {
    if (x) {
      svc_table_del(&s->weights, &x->e);
      free(x->e.key);
      free(x);
    }
    return;
  }
  if (!x) {
    x = ms_xcalloc(1, sizeof(*x));
    x->e.key = ms_xstrdup(role);
    svc_table_put(&s->weights, &x->e);
  }
  x->weight = w;
}

static bool quota_empty(const Meseta__V1__QuotaConfig *q) {
  return q->n_guarantees == 0 && q->n_limits == 0;
}

static void quota_cache(alloc_service *s, const Meseta__V1__QuotaConfig *q) {
  svc_quota *x = svc_table_get(&s->quotas, q->role);
  if (x) {
    protobuf_c_message_free_unpacked(&x->config->base, NULL);
    if (quota_empty(q)) {
      svc_table_del(&s->quotas, &x->e);
      free(x->e.key);
      free(x);
      return;
    }
  } else if (quota_empty(q)) {
    return;
  } else {
    x = ms_xcalloc(1, sizeof(*x));
    x->e.key = ms_xstrdup(q->role);
    svc_table_put(&s->quotas, &x->e);
  }
  x->config = (Meseta__V1__QuotaConfig *)ms_pb_dup(&q->base);
}

/* Sets a limit, keeping a zero (a limit of nothing), which ms_quantities_set drops. */
static void limit_set(ms_quantities *l, ms_name name, ms_scalar v) {
  uint32_t i = 0;
  while (i < l->n && l->v[i].name < name)
    i++;
  if (i < l->n && l->v[i].name == name) {
    l->v[i].value = v;
    return;
  }
  if (l->n == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 8;
    l->v = ms_xrealloc(l->v, (size_t)l->cap * sizeof(*l->v));
  }
  memmove(&l->v[i + 1], &l->v[i], (l->n - i) * sizeof(*l->v));
  l->v[i] = (ms_quantity){name, v};
  l->n++;
}

static const ms_quantity *limit_of(const ms_quantities *l, ms_name name) {
  for (uint32_t i = 0; i < l->n; i++)
    if (l->v[i].name == name)
      return &l->v[i];
  return NULL;
}

/* Whether quota may name the resource: a well-known scalar, or a scalar some agent
 * offers now (custom resources). Looked up, never interned: a client's made-up names
 * must not fill the process-wide name table. */
static bool quota_name_known(alloc_service *s, const char *key, ms_name *ret) {
  ms_name n;
  if (!ms_name_lookup(key, &n) || n == MS_NAME_PORTS)
    return false;
  *ret = n;
  if (n == MS_NAME_CPUS || n == MS_NAME_MEM || n == MS_NAME_DISK || n == MS_NAME_GPUS)
    return true;
  ms_quantities total = {0};
  alloc_model_total(s->model, &total);
  bool offered = ms_quantities_get(&total, n) > 0;
  ms_quantities_release(&total);
  return offered;
}

/* The config as the engine's quantities (limits may hold zeros); `field` names it in
 * errors. With s, resource names must be ones quota applies to (a request); without,
 * any valid name (a record loaded from the registry, checked when it was written). */
static int quota_quantities(alloc_service *s, const Meseta__V1__QuotaConfig *q, const char *field,
                            ms_quantities *g, ms_quantities *l, ms_error **err) {
  for (int pass = 0; pass < 2; pass++) {
    size_t n = pass ? q->n_limits : q->n_guarantees;
    const char *what = pass ? "limits" : "guarantees";
    for (size_t i = 0; i < n; i++) {
      const char *key = pass ? q->limits[i]->key : q->guarantees[i]->key;
      const Meseta__V1__Value__Scalar *v = pass ? q->limits[i]->value : q->guarantees[i]->value;
      double d = v ? v->value : 0;
      ms_name name;
      ms_scalar sc;
      if (!key || !*key)
        return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.%s`: a resource name is empty", field, what);
      if (s && !quota_name_known(s, key, &name))
        return ms_error_set(err, MS_INVALID_ARGUMENT,
                            "`%s.%s[%s]`: quota applies to scalar resources only: cpus, mem, disk, gpus or a "
                            "scalar an agent offers",
                            field, what, key);
      if (!isfinite(d) || d < 0)
        return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.%s[%s]`: %g is not a non-negative number", field,
                            what, key, d);
      if ((!s && ms_name_intern(key, strlen(key), &name, err) < 0) ||
          ms_scalar_from_double(d, what, &sc, err) < 0)
        return ms_error_prefix(err, "`%s.%s[%s]`", field, what, key);
      if (pass)
        limit_set(l, name, sc);
      else
        ms_quantities_set(g, name, sc);
    }
  }
  for (uint32_t i = 0; i < g->n; i++) {
    const ms_quantity *lim = limit_of(l, g->v[i].name);
    if (lim && g->v[i].value > lim->value)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.guarantees[%s]`: the guarantee exceeds its limit",
                          field, ms_name_str(g->v[i].name));
  }
  return 0;
}

int svc_config_quota_apply(alloc_service *s, const Meseta__V1__QuotaConfig *q, ms_error **err) {
  ms_quantities g = {0}, l = {0};
  int rc = quota_quantities(NULL, q, "quota", &g, &l, err);
  if (rc == 0)
    rc = alloc_model_set_quota(s->model, q->role, &g, q->n_limits ? &l : NULL, err);
  ms_quantities_release(&g);
  ms_quantities_release(&l);
  if (rc == 0)
    quota_cache(s, q);
  return rc;
}

void svc_operator_load(alloc_service *s, const Meseta__V1__Record *r) {
  ms_error *err = NULL;
  int rc = 0;
  if (r->body_case == MESETA__V1__RECORD__BODY_WEIGHT && r->weight->weight) {
    rc = alloc_model_set_weight(s->model, r->weight->weight->role, r->weight->weight->weight, &err);
    if (rc == 0)
      svc_config_weight(s, r->weight->weight->role, r->weight->weight->weight);
  } else if (r->body_case == MESETA__V1__RECORD__BODY_QUOTA && r->quota->config) {
    rc = svc_config_quota_apply(s, r->quota->config, &err);
  } else if (r->body_case == MESETA__V1__RECORD__BODY_MAINTENANCE && r->maintenance->schedule) {
    if (s->schedule)
      protobuf_c_message_free_unpacked(&s->schedule->base, NULL);
    s->schedule = (Meseta__V1__MaintenanceSchedule *)ms_pb_dup(&r->maintenance->schedule->base);
    if (s->down)
      protobuf_c_message_free_unpacked(&s->down->base, NULL);
    s->down = NULL;
    if (r->maintenance->n_down_machines) {
      s->down = ms_pb_new(&meseta__v1__down_machines__descriptor);
      s->down->n_machines = r->maintenance->n_down_machines;
      s->down->machines = ms_xcalloc(s->down->n_machines, sizeof(*s->down->machines));
      for (size_t i = 0; i < s->down->n_machines; i++)
        s->down->machines[i] = (Meseta__V1__MachineID *)ms_pb_dup(&r->maintenance->down_machines[i]->base);
    }
  }
  if (rc < 0) {
    ms_log_warn(r->id, "registry record not loaded: %s", err->msg);
    ms_error_free(err);
  }
}

void svc_operator_reset(alloc_service *s) {
  for (uint32_t i = 0; i < s->weights.n; i++) {
    free(s->weights.v[i]->key);
    free(s->weights.v[i]);
  }
  svc_table_release(&s->weights);
  for (uint32_t i = 0; i < s->quotas.n; i++) {
    svc_quota *q = (svc_quota *)s->quotas.v[i];
    protobuf_c_message_free_unpacked(&q->config->base, NULL);
    free(q->e.key);
    free(q);
  }
  svc_table_release(&s->quotas);
  if (s->schedule)
    protobuf_c_message_free_unpacked(&s->schedule->base, NULL);
  s->schedule = NULL;
  if (s->down)
    protobuf_c_message_free_unpacked(&s->down->base, NULL);
  s->down = NULL;
}

/* ---- quota: capacity and hierarchy (alloc-svc-config.c) ----
 *
 * The quota every role would have after the request (what the leader keeps, with the
 * request's configs over it), as a forest: each role's parent is its nearest ancestor
 * with quota. Checks, as Mesos 1.10's: a limit not below what the role consumes now; a
 * child's limit not above its parent's; the children's guarantees together within the
 * parent's guarantee (when it has one) and limit; the top-most guarantees together
 * within the cluster's capacity. Each is skipped with `force`. */

typedef struct qnode {
  const char *role; /* borrowed from the request or the kept config */
  ms_quantities g, l;
  ms_quantities kids_g; /* the guarantees of its children, summed */
  uint32_t parent;      /* ALLOC_NONE: none */
  int req;              /* index in the request; -1: kept as it is */
} qnode;

typedef struct qforest {
  qnode *v;
  uint32_t n;
  alloc_map by_role;
} qforest;

static void forest_release(qforest *f) {
  for (uint32_t i = 0; i < f->n; i++) {
    ms_quantities_release(&f->v[i].g);
    ms_quantities_release(&f->v[i].l);
    ms_quantities_release(&f->v[i].kids_g);
  }
  free(f->v);
  alloc_map_release(&f->by_role);
}

static void forest_add(qforest *f, const Meseta__V1__QuotaConfig *q, int req, const ms_quantities *g,
                       const ms_quantities *l) {
  qnode *x = &f->v[f->n];
  *x = (qnode){.role = q->role, .parent = ALLOC_NONE, .req = req};
  ms_quantities_add(&x->g, g);
  for (uint32_t i = 0; i < l->n; i++)
    limit_set(&x->l, l->v[i].name, l->v[i].value);
  alloc_map_put(&f->by_role, x->role, f->n++);
}

static uint32_t nearest_ancestor(const qforest *f, const char *role) {
  _cleanup_free_ char *p = ms_xstrdup(role);
  for (char *slash = strrchr(p, '/'); slash; slash = strrchr(p, '/')) {
    *slash = '\0';
    uint32_t i = alloc_map_get(&f->by_role, p);
    if (i != ALLOC_NONE)
      return i;
  }
  return ALLOC_NONE;
}

/* The field to blame for a conflict between a and b (one of them is in the request). */
static int blame(const qnode *a, const qnode *b) {
  return a->req >= 0 ? a->req : b->req;
}

static int fail_pre(ms_error **err, int req, const char *what, ms_name n, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int fail_pre(ms_error **err, int req, const char *what, ms_name n, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  return ms_error_set(err, MS_FAILED_PRECONDITION,
                      "`update_quota.configs[%d].%s[%s]`: %s (`force` skips this check)", req, what,
                      ms_name_str(n), msg);
}

static int check_consumption(alloc_service *s, const qnode *x, ms_error **err) {
  ms_quantities cons = {0};
  int rc = 0;
  if (alloc_model_role_consumption(s->model, x->role, &cons, NULL) == 0)
    for (uint32_t i = 0; i < x->l.n && rc == 0; i++) {
      ms_scalar used = ms_quantities_get(&cons, x->l.v[i].name);
      if (used > x->l.v[i].value) {
        char b1[MS_SCALAR_BUFSZ], b2[MS_SCALAR_BUFSZ];
        rc = fail_pre(err, x->req, "limits", x->l.v[i].name,
                      "role `%s` already consumes %s, above the limit %s", x->role,
                      ms_scalar_format(used, b1), ms_scalar_format(x->l.v[i].value, b2));
      }
    }
  ms_quantities_release(&cons);
  return rc;
}

static int check_child(const qnode *c, const qnode *p, ms_error **err) {
  for (uint32_t i = 0; i < c->l.n; i++) {
    const ms_quantity *pl = limit_of(&p->l, c->l.v[i].name);
    if (pl && c->l.v[i].value > pl->value) {
      char b1[MS_SCALAR_BUFSZ], b2[MS_SCALAR_BUFSZ];
      return fail_pre(err, blame(c, p), "limits", c->l.v[i].name,
                      "role `%s`'s limit %s is above its parent `%s`'s %s", c->role,
                      ms_scalar_format(c->l.v[i].value, b1), p->role, ms_scalar_format(pl->value, b2));
    }
  }
  return 0;
}

/* A request config guaranteeing `n` among p's children (or p itself), to blame. */
static int kid_blame(const qforest *f, uint32_t pi, ms_name n) {
  if (f->v[pi].req >= 0)
    return f->v[pi].req;
  for (uint32_t i = 0; i < f->n; i++)
    if (f->v[i].parent == pi && f->v[i].req >= 0 && ms_quantities_get(&f->v[i].g, n) > 0)
      return f->v[i].req;
  return -1;
}

static int check_kids(const qforest *f, uint32_t pi, ms_error **err) {
  const qnode *p = &f->v[pi];
  for (uint32_t i = 0; i < p->kids_g.n; i++) {
    ms_name n = p->kids_g.v[i].name;
    ms_scalar sum = p->kids_g.v[i].value;
    const ms_quantity *pl = limit_of(&p->l, n);
    ms_scalar cap = p->g.n ? ms_quantities_get(&p->g, n) : (pl ? pl->value : sum);
    if (pl && pl->value < cap)
      cap = pl->value;
    int req = kid_blame(f, pi, n);
    if (sum > cap && req >= 0) {
      char b1[MS_SCALAR_BUFSZ], b2[MS_SCALAR_BUFSZ];
      return fail_pre(err, req, "guarantees", n,
                      "the guarantees of `%s`'s sub-roles add up to %s, above its %s of %s", p->role,
                      ms_scalar_format(sum, b1), p->g.n ? "guarantee" : "limit", ms_scalar_format(cap, b2));
    }
  }
  return 0;
}

static int check_capacity(alloc_service *s, const qforest *f, ms_error **err) {
  ms_quantities sum = {0}, total = {0};
  for (uint32_t i = 0; i < f->n; i++) {
    bool top = true;
    for (uint32_t a = f->v[i].parent; a != ALLOC_NONE && top; a = f->v[a].parent)
      top = f->v[a].g.n == 0;
    if (top)
      ms_quantities_add(&sum, &f->v[i].g);
  }
  alloc_model_total(s->model, &total);
  int rc = 0;
  for (uint32_t k = 0; k < sum.n && rc == 0; k++) {
    ms_name n = sum.v[k].name;
    if (sum.v[k].value <= ms_quantities_get(&total, n))
      continue;
    for (uint32_t i = 0; i < f->n && rc == 0; i++)
      if (f->v[i].req >= 0 && ms_quantities_get(&f->v[i].g, n) > 0) {
        char b1[MS_SCALAR_BUFSZ], b2[MS_SCALAR_BUFSZ];
        rc = fail_pre(
            err, f->v[i].req, "guarantees", n, "guarantees would add up to %s, above the cluster's %s",
            ms_scalar_format(sum.v[k].value, b1), ms_scalar_format(ms_quantities_get(&total, n), b2));
      }
  }
  ms_quantities_release(&sum);
  ms_quantities_release(&total);
  return rc;
}

static int check_forest(alloc_service *s, const Meseta__V1__UpdateQuotaRequest *r, ms_error **err) {
  qforest f = {.v = ms_xcalloc(s->quotas.n + r->n_configs + 1, sizeof(qnode))};
  int rc = 0;
  for (size_t i = 0; i < r->n_configs && rc == 0; i++) {
    ms_quantities g = {0}, l = {0};
    rc = quota_quantities(NULL, r->configs[i], "quota", &g, &l, err);
    if (rc == 0 && (g.n || r->configs[i]->n_limits)) /* else a removal: out of the forest */
      forest_add(&f, r->configs[i], (int)i, &g, &l);
    ms_quantities_release(&g);
    ms_quantities_release(&l);
  }
  for (uint32_t i = 0; i < s->quotas.n && rc == 0; i++) {
    const Meseta__V1__QuotaConfig *q = ((svc_quota *)s->quotas.v[i])->config;
    bool in_request = false;
    for (size_t k = 0; k < r->n_configs && !in_request; k++)
      in_request = strcmp(r->configs[k]->role, q->role) == 0;
    if (in_request)
      continue;
    ms_quantities g = {0}, l = {0};
    rc = quota_quantities(NULL, q, "quota", &g, &l, err);
    if (rc == 0)
      forest_add(&f, q, -1, &g, &l);
    ms_quantities_release(&g);
    ms_quantities_release(&l);
  }
  for (uint32_t i = 0; i < f.n && rc == 0; i++) {
    qnode *x = &f.v[i];
    x->parent = nearest_ancestor(&f, x->role);
    if (x->req >= 0)
      rc = check_consumption(s, x, err);
    if (rc == 0 && x->parent != ALLOC_NONE) {
      qnode *p = &f.v[x->parent];
      if (x->req >= 0 || p->req >= 0)
        rc = check_child(x, p, err);
      ms_quantities_add(&p->kids_g, &x->g);
    }
  }
  for (uint32_t i = 0; i < f.n && rc == 0; i++)
    rc = check_kids(&f, i, err);
  if (rc == 0)
    rc = check_capacity(s, &f, err);
  forest_release(&f);
  return rc;
}

int svc_config_check_quota(alloc_service *s, const Meseta__V1__UpdateQuotaRequest *r, ms_error **err) {
  for (size_t i = 0; i < r->n_configs; i++) {
    const Meseta__V1__QuotaConfig *q = r->configs[i];
    char field[64];
    snprintf(field, sizeof(field), "update_quota.configs[%zu]", i);
    ms_quantities g = {0}, l = {0};
    int rc = quota_quantities(s, q, field, &g, &l, err);
    ms_quantities_release(&g);
    ms_quantities_release(&l);
    if (rc < 0)
      return rc;
  }
  return r->force ? 0 : check_forest(s, r, err);
}

/* ---- persisting ---- */

static Meseta__V1__Write *write_new(void) {
  Meseta__V1__Write *w = ms_pb_new(&meseta__v1__write__descriptor);
  w->expect = ms_pb_new(&meseta__v1__expect__descriptor);
  w->expect->expect_case = MESETA__V1__EXPECT__EXPECT_ANY;
  w->expect->any = true; /* the leader is the only writer of these records */
  return w;
}

static void batch_put(Meseta__V1__BatchRequest *b, Meseta__V1__Record *rec) {
  Meseta__V1__Write *w = write_new();
  w->op_case = MESETA__V1__WRITE__OP_PUT;
  w->put = rec;
  b->writes = ms_xrealloc(b->writes, (b->n_writes + 1) * sizeof(*b->writes));
  b->writes[b->n_writes++] = w;
}

static void batch_delete(Meseta__V1__BatchRequest *b, Meseta__V1__RecordKind kind, const char *id) {
  Meseta__V1__Write *w = write_new();
  w->op_case = MESETA__V1__WRITE__OP_DELETE;
  w->delete_ = ms_pb_new(&meseta__v1__record_ref__descriptor);
  w->delete_->kind = kind;
  w->delete_->id = ms_xstrdup(id);
  b->writes = ms_xrealloc(b->writes, (b->n_writes + 1) * sizeof(*b->writes));
  b->writes[b->n_writes++] = w;
}

static Meseta__V1__Record *record_new(const char *id) {
  Meseta__V1__Record *rec = ms_pb_new(&meseta__v1__record__descriptor);
  rec->id = ms_xstrdup(id);
  return rec;
}

static Meseta__V1__BatchRequest *batch_or_null(Meseta__V1__BatchRequest *b) {
  if (b->n_writes == 0) {
    protobuf_c_message_free_unpacked(&b->base, NULL);
    return NULL;
  }
  return b;
}

Meseta__V1__BatchRequest *svc_config_weights_batch(alloc_service *s,
                                                   const Meseta__V1__UpdateWeightsRequest *u) {
  Meseta__V1__BatchRequest *b = ms_pb_new(&meseta__v1__batch_request__descriptor);
  for (size_t i = 0; i < u->n_weight_infos; i++) {
    const Meseta__V1__WeightInfo *w = u->weight_infos[i];
    if (w->weight == 1.0) { /* the default: no record */
      if (svc_table_get(&s->weights, w->role))
        batch_delete(b, MESETA__V1__RECORD_KIND__WEIGHT, w->role);
      continue;
    }
    Meseta__V1__Record *rec = record_new(w->role);
    rec->body_case = MESETA__V1__RECORD__BODY_WEIGHT;
    rec->weight = ms_pb_new(&meseta__v1__weight_record__descriptor);
    rec->weight->weight = (Meseta__V1__WeightInfo *)ms_pb_dup(&w->base);
    batch_put(b, rec);
  }
  return batch_or_null(b);
}

Meseta__V1__BatchRequest *svc_config_quota_batch(alloc_service *s, const Meseta__V1__UpdateQuotaRequest *u) {
  Meseta__V1__BatchRequest *b = ms_pb_new(&meseta__v1__batch_request__descriptor);
  for (size_t i = 0; i < u->n_configs; i++) {
    const Meseta__V1__QuotaConfig *q = u->configs[i];
    if (quota_empty(q)) { /* removes the role's quota */
      if (svc_table_get(&s->quotas, q->role))
        batch_delete(b, MESETA__V1__RECORD_KIND__QUOTA, q->role);
      continue;
    }
    Meseta__V1__Record *rec = record_new(q->role);
    rec->body_case = MESETA__V1__RECORD__BODY_QUOTA;
    rec->quota = ms_pb_new(&meseta__v1__quota_record__descriptor);
    rec->quota->config = (Meseta__V1__QuotaConfig *)ms_pb_dup(&q->base);
    batch_put(b, rec);
  }
  return batch_or_null(b);
}

Meseta__V1__BatchRequest *svc_config_maint_batch(Meseta__V1__MaintenanceRecord *mr) {
  Meseta__V1__BatchRequest *b = ms_pb_new(&meseta__v1__batch_request__descriptor);
  Meseta__V1__Record *rec = record_new("schedule");
  rec->body_case = MESETA__V1__RECORD__BODY_MAINTENANCE;
  rec->maintenance = mr;
  batch_put(b, rec);
  return b;
}
