/* The configuration the allocator leader keeps and persists: role weights, quota and
 * the maintenance schedule, their checks (all or nothing, INVALID_ARGUMENT naming the
 * field) and the registry batch that makes them durable. Loaded on election, applied
 * to the engine after the registry accepted them. Owner thread only. */
#include <math.h>
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

#include "alloc-svc-internal.h"
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

/* The config as the engine's quantities; `field` names it in errors. */
static int quota_quantities(const Meseta__V1__QuotaConfig *q, const char *field, ms_quantities *g,
                            ms_quantities *l, ms_error **err) {
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
      if (!isfinite(d) || d < 0)
        return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.%s[%s]`: %g is not a non-negative number", field,
                            what, key, d);
      if (ms_name_intern(key, strlen(key), &name, err) < 0 || ms_scalar_from_double(d, what, &sc, err) < 0)
        return ms_error_prefix(err, "`%s.%s[%s]`", field, what, key);
      ms_quantities_set(pass ? l : g, name, sc);
    }
  }
  for (uint32_t i = 0; i < g->n; i++) {
    bool limited = false;
    for (uint32_t k = 0; k < l->n; k++)
      limited = limited || l->v[k].name == g->v[i].name;
    if (limited && g->v[i].value > ms_quantities_get(l, g->v[i].name))
      return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.guarantees[%s]`: the guarantee exceeds its limit",
                          field, ms_name_str(g->v[i].name));
  }
  return 0;
}

int svc_config_quota_apply(alloc_service *s, const Meseta__V1__QuotaConfig *q, ms_error **err) {
  ms_quantities g = {0}, l = {0};
  int rc = quota_quantities(q, "quota", &g, &l, err);
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

/* ---- maintenance windows ---- */

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool svc_agent_window(alloc_service *s, const Meseta__V1__AgentInfo *info, int64_t *start_ms,
                      int64_t *duration_ms, const Meseta__V1__Unavailability **ret) {
  *start_ms = *duration_ms = 0;
  if (!s->schedule || !info || !info->hostname || !*info->hostname)
    return false;
  for (size_t i = 0; i < s->schedule->n_windows; i++) {
    const Meseta__V1__MaintenanceWindow *w = s->schedule->windows[i];
    for (size_t k = 0; k < w->n_machine_ids; k++) {
      const Meseta__V1__MachineID *m = w->machine_ids[k];
      bool match = (m->hostname && strcmp(m->hostname, info->hostname) == 0) ||
                   (m->ip && *m->ip && strcmp(m->ip, info->hostname) == 0);
      if (!match || !w->unavailability || !w->unavailability->start)
        continue;
      const Google__Protobuf__Timestamp *t = w->unavailability->start;
      int64_t start_wall = t->seconds * 1000 + t->nanos / 1000000;
      *start_ms = start_wall - wall_ms() + svc_now_ms();
      const Google__Protobuf__Duration *d = w->unavailability->duration;
      *duration_ms = d ? d->seconds * 1000 + d->nanos / 1000000 : -1;
      if (*duration_ms == 0)
        *duration_ms = 1;
      if (ret)
        *ret = w->unavailability;
      return true;
    }
  }
  return false;
}

int svc_config_check_weights(const Meseta__V1__UpdateWeightsRequest *r, ms_error **err) {
  for (size_t i = 0; i < r->n_weight_infos; i++) {
    const Meseta__V1__WeightInfo *w = r->weight_infos[i];
    if (ms_role_validate(w->role, err) < 0)
      return ms_error_prefix(err, "`update_weights.weight_infos[%zu].role`", i);
    if (!isfinite(w->weight) || w->weight <= 0)
      return ms_error_set(err, MS_INVALID_ARGUMENT,
                          "`update_weights.weight_infos[%zu].weight`: %g is not above 0", i, w->weight);
    for (size_t k = 0; k < i; k++)
      if (strcmp(r->weight_infos[k]->role, w->role) == 0)
        return ms_error_set(err, MS_INVALID_ARGUMENT,
                            "`update_weights.weight_infos[%zu].role`: `%s` is listed twice", i, w->role);
  }
  return 0;
}

int svc_config_check_quota(const Meseta__V1__UpdateQuotaRequest *r, ms_error **err) {
  for (size_t i = 0; i < r->n_configs; i++) {
    const Meseta__V1__QuotaConfig *q = r->configs[i];
    char field[64];
    snprintf(field, sizeof(field), "quota[%zu]", i);
    if (ms_role_validate(q->role, err) < 0)
      return ms_error_prefix(err, "`%s.role`", field);
    if (strcmp(q->role, "*") == 0)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.role`: role `*` cannot have quota", field);
    for (size_t k = 0; k < i; k++)
      if (strcmp(r->configs[k]->role, q->role) == 0)
        return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.role`: `%s` is listed twice", field, q->role);
    ms_quantities g = {0}, l = {0};
    int rc = quota_quantities(q, field, &g, &l, err);
    ms_quantities_release(&g);
    ms_quantities_release(&l);
    if (rc < 0)
      return rc;
  }
  return 0;
}

int svc_config_check_schedule(const Meseta__V1__UpdateMaintenanceScheduleRequest *r, ms_error **err) {
  if (!r->schedule)
    return 0;
  const Meseta__V1__MaintenanceSchedule *sc = r->schedule;
  for (size_t i = 0; i < sc->n_windows; i++) {
    const Meseta__V1__MaintenanceWindow *w = sc->windows[i];
    if (!w->unavailability || !w->unavailability->start)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "`schedule.windows[%zu].unavailability.start` is missing",
                          i);
    for (size_t k = 0; k < w->n_machine_ids; k++) {
      const Meseta__V1__MachineID *m = w->machine_ids[k];
      if ((!m->hostname || !*m->hostname) && (!m->ip || !*m->ip))
        return ms_error_set(err, MS_INVALID_ARGUMENT,
                            "`schedule.windows[%zu].machine_ids[%zu]` has neither hostname nor ip", i, k);
      for (size_t j = 0; j <= i; j++)
        for (size_t h = 0; h < (j == i ? k : sc->windows[j]->n_machine_ids); h++) {
          const Meseta__V1__MachineID *o = sc->windows[j]->machine_ids[h];
          if (strcmp(o->hostname ? o->hostname : "", m->hostname ? m->hostname : "") == 0 &&
              strcmp(o->ip ? o->ip : "", m->ip ? m->ip : "") == 0)
            return ms_error_set(
                err, MS_INVALID_ARGUMENT,
                "`schedule.windows[%zu].machine_ids[%zu]`: the machine is already in a window", i, k);
        }
    }
  }
  return 0;
}

/* The resource operation a request asks for, as the engine takes it. */
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

/* The registry writes a call needs; NULL when nothing is durable. */
Meseta__V1__BatchRequest *svc_config_batch(alloc_service *s, const op_req *r) {
  Meseta__V1__BatchRequest *b = ms_pb_new(&meseta__v1__batch_request__descriptor);
  if (r->call_case == MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UPDATE_WEIGHTS) {
    for (size_t i = 0; i < r->update_weights->n_weight_infos; i++) {
      const Meseta__V1__WeightInfo *w = r->update_weights->weight_infos[i];
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
  } else if (r->call_case == MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UPDATE_QUOTA) {
    for (size_t i = 0; i < r->update_quota->n_configs; i++) {
      const Meseta__V1__QuotaConfig *q = r->update_quota->configs[i];
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
  } else if (r->call_case == MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UPDATE_MAINTENANCE_SCHEDULE ||
             r->call_case == MESETA__V1__OPERATOR_CALL_REQUEST__CALL_START_MAINTENANCE ||
             r->call_case == MESETA__V1__OPERATOR_CALL_REQUEST__CALL_STOP_MAINTENANCE) {
    /* The schedule and the DOWN machines as they will be, in one record. */
    Meseta__V1__MaintenanceRecord *mr = svc_maint_record(s, r);
    if (mr) {
      Meseta__V1__Record *rec = record_new("schedule");
      rec->body_case = MESETA__V1__RECORD__BODY_MAINTENANCE;
      rec->maintenance = mr;
      batch_put(b, rec);
    }
  }
  if (b->n_writes == 0) {
    protobuf_c_message_free_unpacked(&b->base, NULL);
    return NULL;
  }
  return b;
}
