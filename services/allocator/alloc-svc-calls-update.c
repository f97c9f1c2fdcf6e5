/* UpdateFramework, the one scheduler call that answers itself: with a registry the
 * framework's record gets the new info (and suppressed roles) before the live framework
 * does, and the call is answered then. The table that dispatches it is in
 * alloc-svc-calls.c. */
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/buf.h"
#include "meseta/log.h"
#include "meseta/pb.h"
#include "meseta/roles.h"

#include "alloc-svc-calls-internal.h"
#include "alloc-svc-core.h"
#include "alloc-svc-frameworks.h"
#include "alloc-svc-registry.h"
#include "alloc-svc-state.h"

static const char *str0(const char *x) {
  return x ? x : "";
}

/* A role's OfferFilters as the engine's minimum text ("cpus:1,mem:32|disk:64"; "" for
 * no minimum), checked. The caller frees. */
static char *min_spec(const Meseta__V1__OfferFilters *f, const char *role, ms_error **err) {
  const Meseta__V1__OfferFilters__MinAllocatableResources *m = f->min_allocatable_resources;
  ms_buf b = MS_BUF_INIT(64 * 1024);
  for (size_t i = 0; m && i < m->n_quantities; i++) {
    const Meseta__V1__OfferFilters__ResourceQuantities *q = m->quantities[i];
    if (i && ms_buf_appends(&b, "|", NULL) < 0)
      break;
    for (size_t k = 0; k < q->n_quantities; k++) {
      const char *name = str0(q->quantities[k]->key);
      double v = q->quantities[k]->value ? q->quantities[k]->value->value : 0;
      if (!*name || strpbrk(name, ",|:")) {
        ms_buf_release(&b);
        ms_error_set(err, MS_INVALID_ARGUMENT,
                     "`update_framework.framework_info.offer_filters[%s]`: resource name `%s` is not valid",
                     role, name);
        return NULL;
      }
      if (ms_buf_appendf(&b, NULL, "%s%s:%.3f", k ? "," : "", name, v) < 0) {
        ms_buf_release(&b);
        ms_error_set(err, MS_INVALID_ARGUMENT,
                     "`update_framework.framework_info.offer_filters[%s]`: above 64 KiB as text", role);
        return NULL;
      }
    }
  }
  char *text = ms_buf_steal(&b, NULL);
  alloc_minalloc ma;
  if (alloc_minalloc_parse(text, &ma, err) < 0) {
    free(text);
    ms_error_prefix(err, "`update_framework.framework_info.offer_filters[%s]`", role);
    return NULL;
  }
  alloc_minalloc_release(&ma);
  return text;
}

static bool has_str(char *const *v, size_t n, const char *x) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(v[i], x) == 0)
      return true;
  return false;
}

/* Agents running something of the framework get its new info. */
static void send_info_to_agents(alloc_service *s, svc_framework *fw) {
  Meseta__V1__AllocatorMessage__UpdateFramework u = MESETA__V1__ALLOCATOR_MESSAGE__UPDATE_FRAMEWORK__INIT;
  u.framework_info = fw->info;
  Meseta__V1__AllocatorMessage m = MESETA__V1__ALLOCATOR_MESSAGE__INIT;
  m.message_case = MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_UPDATE_FRAMEWORK;
  m.update_framework = &u;
  for (uint32_t i = 0; i < s->agents.n; i++) {
    svc_agent *a = (svc_agent *)s->agents.v[i];
    bool runs = false;
    for (uint32_t k = 0; k < s->tasks.n && !runs; k++) {
      const svc_task *t = (const svc_task *)s->tasks.v[k];
      runs = strcmp(t->framework_id, fw->e.key) == 0 && strcmp(t->agent_id, a->e.key) == 0;
    }
    if (runs)
      svc_send_agent(s, a, &m);
  }
}

/* The framework's new info: the request's, with the framework's id and (when the
 * request leaves it empty) its principal. The caller frees. */
static Meseta__V1__FrameworkInfo *new_info(const svc_framework *fw, const Meseta__V1__FrameworkInfo *info) {
  Meseta__V1__FrameworkInfo *ni = (Meseta__V1__FrameworkInfo *)ms_pb_dup(&info->base);
  if (ni->id)
    protobuf_c_message_free_unpacked(&ni->id->base, NULL);
  ni->id = (Meseta__V1__FrameworkID *)ms_pb_dup(&fw->info->id->base);
  if (!*str0(ni->principal) && *str0(fw->info->principal)) {
    if (ni->principal != protobuf_c_empty_string)
      free(ni->principal);
    ni->principal = ms_xstrdup(fw->info->principal);
  }
  return ni;
}

/* Checks an UpdateFramework (everything the engine would refuse included) and, when
 * `apply`, applies it to the live framework. */
static int update_framework(alloc_service *s, const call_req *c, bool apply, ms_error **err) {
  const Meseta__V1__UpdateFrameworkRequest *r = c->update_framework;
  svc_framework *fw = svc_framework_check(s, "update_framework", r->framework_id, r->stream_id, err);
  if (!fw)
    return MS_ERR;
  const Meseta__V1__FrameworkInfo *info = r->framework_info;
  if (!info)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`update_framework.framework_info` is missing");
  if (info->id && *str0(info->id->value) && strcmp(info->id->value, fw->e.key) != 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "`update_framework.framework_info.id`: `%s` is not this framework (`%s`)",
                        info->id->value, fw->e.key);
  if (strcmp(str0(info->user), str0(fw->info->user)) != 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "`update_framework.framework_info.user`: cannot change (`%s`, was `%s`)",
                        str0(info->user), str0(fw->info->user));
  if (*str0(info->principal) && strcmp(info->principal, str0(fw->info->principal)) != 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "`update_framework.framework_info.principal`: cannot change (`%s`, was `%s`)",
                        info->principal, str0(fw->info->principal));
  if (info->checkpoint != fw->info->checkpoint)
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "`update_framework.framework_info.checkpoint`: cannot change");
  size_t nroles = info->n_roles ? info->n_roles : 1;
  char *star = "*";
  char *const *roles = info->n_roles ? info->roles : &star;
  for (size_t i = 0; i < info->n_roles; i++) {
    if (ms_role_validate(info->roles[i], err) < 0)
      return ms_error_prefix(err, "`update_framework.framework_info.roles[%zu]`", i);
    if (has_str(info->roles, i, info->roles[i]))
      return ms_error_set(err, MS_INVALID_ARGUMENT,
                          "`update_framework.framework_info.roles[%zu]`: `%s` is listed twice", i,
                          info->roles[i]);
  }
  for (size_t i = 0; i < r->n_suppressed_roles; i++)
    if (!has_str(roles, nroles, r->suppressed_roles[i]))
      return ms_error_set(
          err, MS_INVALID_ARGUMENT,
          "`update_framework.suppressed_roles[%zu]`: `%s` is not one of the framework's roles", i,
          r->suppressed_roles[i]);
  uint32_t caps = svc_framework_caps(info);
  alloc_min_override *mins = ms_xcalloc(info->n_offer_filters + 1, sizeof(*mins));
  uint32_t nmins = 0;
  int rc = 0;
  for (size_t i = 0; i < info->n_offer_filters && rc == 0; i++) {
    const char *role = str0(info->offer_filters[i]->key);
    if (!has_str(roles, nroles, role)) {
      rc = ms_error_set(
          err, MS_INVALID_ARGUMENT,
          "`update_framework.framework_info.offer_filters[%s]`: not one of the framework's roles", role);
      break;
    }
    if (!info->offer_filters[i]->value || !info->offer_filters[i]->value->min_allocatable_resources)
      continue; /* no override: the cluster's minimum */
    char *spec = min_spec(info->offer_filters[i]->value, role, err);
    if (!spec)
      rc = MS_ERR;
    else
      mins[nmins++] = (alloc_min_override){.role = role, .spec = spec};
  }
  if (rc == 0) {
    const Google__Protobuf__Duration *ft = info->failover_timeout;
    alloc_framework_spec spec = {.id = fw->e.key,
                                 .roles = (const char *const *)roles,
                                 .nroles = (uint32_t)nroles,
                                 .capabilities = caps,
                                 .min_allocatable = mins,
                                 .nmin_allocatable = nmins,
                                 .suppressed_roles = (const char *const *)r->suppressed_roles,
                                 .nsuppressed = (uint32_t)r->n_suppressed_roles,
                                 .failover_timeout_s = ft ? ft->seconds + ft->nanos / 1e9 : 0};
    if (apply)
      rc = alloc_model_update_framework(s->model, &spec, err);
    if (rc < 0)
      ms_error_prefix(err, "update_framework");
  }
  for (uint32_t i = 0; i < nmins; i++)
    free((char *)mins[i].spec);
  free(mins);
  if (rc < 0 || !apply)
    return rc;
  Meseta__V1__FrameworkInfo *ni = new_info(fw, info);
  protobuf_c_message_free_unpacked(&fw->info->base, NULL);
  fw->info = ni;
  send_info_to_agents(s, fw);
  svc_state_emit_framework(s, fw->e.key, SVC_UPDATED);
  ms_log_info(fw->e.key, "framework updated: %zu roles, %zu suppressed", nroles, r->n_suppressed_roles);
  svc_want_cycle(s);
  return 0;
}

typedef struct update_wait {
  ms_rpc_call *call; /* referenced */
  call_req *req;     /* a copy */
} update_wait;

/* The new info is durable: now the live framework takes it, then the caller hears. */
static void update_persisted(alloc_service *s, void *ctx, const ms_error *err, bool current) {
  update_wait *w = ctx;
  ms_error *e2 = NULL;
  if (!current)
    ms_rpc_call_finish(w->call, MS_UNAVAILABLE, "this allocator is no longer the leader");
  else if (err)
    ms_rpc_call_finish(w->call, err->code == MS_CANCELLED ? MS_UNAVAILABLE : err->code, err->msg);
  else if (ms_rpc_call_is_done(w->call))
    ; /* the caller left: it will see the framework as recorded */
  else if (update_framework(s, w->req, true, &e2) < 0)
    ms_rpc_call_finish_error(w->call, e2); /* changed meanwhile (a newer stream, removed) */
  else
    svc_calls_reply_ok(s, w->call, w->req);
  ms_error_free(e2);
  ms_rpc_call_unref(w->call);
  protobuf_c_message_free_unpacked(&w->req->base, NULL);
  free(w);
}

/* Persist first, then apply: with a registry the framework's record gets the new info
 * before the live framework does, and the call is answered then. */
int svc_calls_update_framework(alloc_service *s, ms_rpc_call *call, const call_req *c, ms_error **err) {
  if (!svc_durable(s)) {
    if (update_framework(s, c, true, err) < 0)
      return MS_ERR;
    svc_calls_reply_ok(s, call, c);
    return 0;
  }
  if (update_framework(s, c, false, err) < 0)
    return MS_ERR;
  svc_framework *fw = svc_table_get(&s->frameworks, c->update_framework->framework_id->value);
  Meseta__V1__FrameworkInfo *ni = new_info(fw, c->update_framework->framework_info);
  update_wait *w = ms_xmalloc(sizeof(*w));
  w->call = call;
  ms_rpc_call_ref(call);
  w->req = (call_req *)ms_pb_dup(&c->base);
  const Meseta__V1__UpdateFrameworkRequest *u = c->update_framework;
  svc_reg_update_framework(s, ni, (const char *const *)u->suppressed_roles, u->n_suppressed_roles,
                           update_persisted, w); /* copies */
  protobuf_c_message_free_unpacked(&ni->base, NULL);
  return 0;
}
