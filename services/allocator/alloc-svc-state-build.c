/* The view's objects as WatchState shows them (Agent, Framework, Task, Role, quota and
 * weight lists), built from the service's tables and the engine. Owner thread only;
 * every message returned is a heap tree the caller frees with
 * protobuf_c_message_free_unpacked. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "meseta/alloc.h"
#include "meseta/pb.h"
#include "meseta/resources-io.h"
#include "meseta/task-state.h"
#include "meseta/values.h"

#include "alloc-svc-core.h"
#include "alloc-svc-state-internal.h"
#include "alloc-svc-state.h"

void *svc_st_dup(const void *m) {
  return m ? ms_pb_dup((const ProtobufCMessage *)m) : NULL;
}

int64_t svc_st_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

Google__Protobuf__Timestamp *svc_st_ts(int64_t ms) {
  Google__Protobuf__Timestamp *t = NEW(Google__Protobuf__Timestamp, google__protobuf__timestamp);
  t->seconds = ms / 1000;
  t->nanos = (int32_t)(ms % 1000) * 1000000;
  return t;
}

/* Moves the set's proto form into a repeated Resource field. */
static void set_res(Meseta__V1__Resource ***v, size_t *n, const ms_resources *r) {
  Meseta__V1__Resources *p = ms_resources_to_proto(r);
  *v = p->resources;
  *n = p->n_resources;
  p->resources = NULL;
  p->n_resources = 0;
  ms_resources_proto_free(p);
}

char *svc_st_str(const char *p) {
  return ms_xstrdup(p ? p : "");
}

/* ---- building the view's objects ---- */

static Meseta__V1__Agent__State agent_state(alloc_agent_state st) {
  switch (st) {
  case ALLOC_AGENT_DEACTIVATED:
    return MESETA__V1__AGENT__STATE__DEACTIVATED;
  case ALLOC_AGENT_DRAINING:
    return MESETA__V1__AGENT__STATE__DRAINING;
  default:
    return MESETA__V1__AGENT__STATE__ACTIVE;
  }
}

static void add_reserved(Meseta__V1__Agent *m, const ms_resources *total) {
  ms_resources *res = ms_resources_reserved(total, NULL);
  for (uint32_t i = 0; i < ms_resources_size(res); i++) {
    const char *role = ms_resource_role(ms_resources_at(res, i));
    bool seen = false;
    for (size_t k = 0; k < m->n_reserved_resources && !seen; k++)
      seen = strcmp(m->reserved_resources[k]->key, role) == 0;
    if (seen)
      continue;
    ms_resources *mine = ms_resources_reserved(total, role);
    Meseta__V1__Agent__ReservedResourcesEntry *e =
        NEW(Meseta__V1__Agent__ReservedResourcesEntry, meseta__v1__agent__reserved_resources_entry);
    e->key = svc_st_str(role);
    e->value = ms_resources_to_proto(mine);
    ms_resources_free(mine);
    m->reserved_resources =
        ms_xrealloc(m->reserved_resources, (m->n_reserved_resources + 1) * sizeof(*m->reserved_resources));
    m->reserved_resources[m->n_reserved_resources++] = e;
  }
  ms_resources_free(res);
}

Meseta__V1__Agent *svc_st_agent(alloc_service *s, const svc_agent *a) {
  Meseta__V1__Agent *m = NEW(Meseta__V1__Agent, meseta__v1__agent);
  m->agent_info = svc_st_dup(a->info);
  alloc_agent_view v;
  if (alloc_model_agent(s->model, a->e.key, &v, NULL) == 0) {
    m->state = agent_state(v.state);
    set_res(&m->total_resources, &m->n_total_resources, v.total);
    set_res(&m->offered_resources, &m->n_offered_resources, v.offered);
    set_res(&m->available_resources, &m->n_available_resources, v.available);
    ms_resources *used = ms_resources_clone(v.total);
    (void)ms_resources_subtract(used, v.available, NULL);
    (void)ms_resources_subtract(used, v.offered, NULL);
    set_res(&m->allocated_resources, &m->n_allocated_resources, used);
    ms_resources_free(used);
    add_reserved(m, v.total);
  }
  svc_agent_rec *r = svc_table_get(&s->agent_recs, a->e.key);
  if (r)
    m->drain_state = r->drain_state;
  const Meseta__V1__Unavailability *u = NULL;
  int64_t st, du;
  if (svc_agent_window(s, a->info, &st, &du, &u) && u)
    m->unavailability = svc_st_dup(u);
  return m;
}

Meseta__V1__Framework *svc_st_framework(alloc_service *s, const svc_framework *fw) {
  Meseta__V1__Framework *m = NEW(Meseta__V1__Framework, meseta__v1__framework);
  m->framework_info = svc_st_dup(fw->info);
  m->active = true;
  m->connected = fw->stream != NULL;
  m->recovered = fw->recovered;
  size_t nroles = fw->info->n_roles ? fw->info->n_roles : 1;
  m->suppressed_roles = ms_xcalloc(nroles, sizeof(*m->suppressed_roles));
  for (size_t i = 0; i < nroles; i++) {
    const char *role = fw->info->n_roles ? fw->info->roles[i] : "*";
    if (alloc_model_suppressed(s->model, fw->e.key, role))
      m->suppressed_roles[m->n_suppressed_roles++] = svc_st_str(role);
  }
  return m;
}

Meseta__V1__Task *svc_st_task(const svc_task *t) {
  Meseta__V1__Task *m = NEW(Meseta__V1__Task, meseta__v1__task);
  m->name = svc_st_str(t->task_id);
  m->task_id = NEW(Meseta__V1__TaskID, meseta__v1__task_id);
  m->task_id->value = svc_st_str(t->task_id);
  m->framework_id = NEW(Meseta__V1__FrameworkID, meseta__v1__framework_id);
  m->framework_id->value = svc_st_str(t->framework_id);
  m->agent_id = NEW(Meseta__V1__AgentID, meseta__v1__agent_id);
  m->agent_id->value = svc_st_str(t->agent_id);
  if (t->executor) {
    const char *x = strrchr(t->executor->e.key, '\x1f');
    m->executor_id = NEW(Meseta__V1__ExecutorID, meseta__v1__executor_id);
    m->executor_id->value = svc_st_str(x ? x + 1 : t->executor->e.key);
  }
  m->state = t->state;
  ms_resources *r = ms_resources_clone(t->res);
  (void)ms_resources_allocate(r, t->role, NULL);
  set_res(&m->resources, &m->n_resources, r);
  ms_resources_free(r);
  return m;
}

Meseta__V1__Task *svc_state_build_task(const svc_task *t) {
  return svc_st_task(t);
}

Meseta__V1__Role *svc_st_role(alloc_service *s, const char *name) {
  Meseta__V1__Role *m = NEW(Meseta__V1__Role, meseta__v1__role);
  m->name = svc_st_str(name);
  svc_weight *w = svc_table_get(&s->weights, name);
  m->weight = w ? w->weight : 1.0;
  svc_quota *q = svc_table_get(&s->quotas, name);
  if (q)
    m->quota = svc_st_dup(q->config);
  ms_quantities c = {0};
  if (alloc_model_role_consumption(s->model, name, &c, NULL) == 0) {
    m->quota_consumed = ms_xcalloc(c.n ? c.n : 1, sizeof(*m->quota_consumed));
    for (uint32_t i = 0; i < c.n; i++) {
      Meseta__V1__Role__QuotaConsumedEntry *e =
          NEW(Meseta__V1__Role__QuotaConsumedEntry, meseta__v1__role__quota_consumed_entry);
      e->key = svc_st_str(ms_name_str(c.v[i].name));
      e->value = NEW(Meseta__V1__Value__Scalar, meseta__v1__value__scalar);
      e->value->value = ms_scalar_to_double(c.v[i].value);
      m->quota_consumed[m->n_quota_consumed++] = e;
    }
  }
  ms_quantities_release(&c);
  for (uint32_t i = 0; i < s->frameworks.n; i++) {
    const svc_framework *fw = (const svc_framework *)s->frameworks.v[i];
    bool in = fw->info->n_roles == 0 && strcmp(name, "*") == 0;
    for (size_t k = 0; k < fw->info->n_roles && !in; k++)
      in = strcmp(fw->info->roles[k], name) == 0;
    if (!in)
      continue;
    m->frameworks = ms_xrealloc(m->frameworks, (m->n_frameworks + 1) * sizeof(*m->frameworks));
    Meseta__V1__FrameworkID *id = NEW(Meseta__V1__FrameworkID, meseta__v1__framework_id);
    id->value = svc_st_str(fw->e.key);
    m->frameworks[m->n_frameworks++] = id;
  }
  return m;
}

/* Every role the view shows: with a weight, quota, or a framework. The caller frees
 * the array (the names are borrowed). */
const char **svc_st_role_names(alloc_service *s, uint32_t *n) {
  uint32_t cap = s->weights.n + s->quotas.n + 1;
  for (uint32_t i = 0; i < s->frameworks.n; i++)
    cap += (uint32_t)((svc_framework *)s->frameworks.v[i])->info->n_roles + 1;
  const char **v = ms_xcalloc(cap, sizeof(*v));
  *n = 0;
#define ADD(name)                                                                                            \
  do {                                                                                                       \
    bool seen_ = false;                                                                                      \
    for (uint32_t k_ = 0; k_ < *n && !seen_; k_++)                                                           \
      seen_ = strcmp(v[k_], (name)) == 0;                                                                    \
    if (!seen_)                                                                                              \
      v[(*n)++] = (name);                                                                                    \
  } while (0)
  for (uint32_t i = 0; i < s->weights.n; i++)
    ADD(s->weights.v[i]->key);
  for (uint32_t i = 0; i < s->quotas.n; i++)
    ADD(s->quotas.v[i]->key);
  for (uint32_t i = 0; i < s->frameworks.n; i++) {
    const Meseta__V1__FrameworkInfo *info = ((svc_framework *)s->frameworks.v[i])->info;
    if (info->n_roles == 0)
      ADD("*");
    for (size_t k = 0; k < info->n_roles; k++)
      ADD(info->roles[k]);
  }
#undef ADD
  return v;
}

Meseta__V1__QuotaConfig **svc_st_quotas(alloc_service *s, size_t *n) {
  Meseta__V1__QuotaConfig **v = ms_xcalloc(s->quotas.n + 1, sizeof(*v));
  for (uint32_t i = 0; i < s->quotas.n; i++)
    v[i] = svc_st_dup(((svc_quota *)s->quotas.v[i])->config);
  *n = s->quotas.n;
  return v;
}

Meseta__V1__WeightInfo **svc_st_weights(alloc_service *s, size_t *n) {
  Meseta__V1__WeightInfo **v = ms_xcalloc(s->weights.n + 1, sizeof(*v));
  for (uint32_t i = 0; i < s->weights.n; i++) {
    const svc_weight *w = (const svc_weight *)s->weights.v[i];
    v[i] = NEW(Meseta__V1__WeightInfo, meseta__v1__weight_info);
    v[i]->role = svc_st_str(w->e.key);
    v[i]->weight = w->weight;
  }
  *n = s->weights.n;
  return v;
}
