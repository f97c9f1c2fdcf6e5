/* Frameworks, roles (weights, quota), allocations, suppression, and the read side. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/roles.h"

#include "alloc-internal.h"

static uint32_t fw_find(const alloc_model *m, const char *id, ms_error **err) {
  uint32_t i = id ? alloc_map_get(&m->fw_ids, id) : ALLOC_NONE;
  if (i == ALLOC_NONE)
    ms_error_set(err, MS_NOT_FOUND, "framework `%s` is not known", id ? id : "");
  return i;
}

static bool has_role(const alloc_framework_spec *s, const char *role) {
  for (uint32_t i = 0; i < s->nroles; i++)
    if (strcmp(s->roles[i], role) == 0)
      return true;
  return s->nroles == 0 && strcmp(role, "*") == 0;
}

/* Checks everything before anything changes. */
static int fw_spec_check(const alloc_framework_spec *s, ms_error **err) {
  if (!s->id || !*s->id)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "framework: an id is required");
  for (uint32_t i = 0; i < s->nroles; i++) {
    if (ms_role_validate(s->roles[i], err) < 0)
      return ms_error_prefix(err, "framework `%s`", s->id);
    for (uint32_t j = 0; j < i; j++)
      if (strcmp(s->roles[i], s->roles[j]) == 0)
        return ms_error_set(err, MS_INVALID_ARGUMENT, "framework `%s`: role `%s` is listed twice", s->id,
                            s->roles[i]);
  }
  for (uint32_t i = 0; i < s->nmin_allocatable; i++) {
    const alloc_min_override *o = &s->min_allocatable[i];
    if (!o->role || !has_role(s, o->role))
      return ms_error_set(err, MS_INVALID_ARGUMENT,
                          "framework `%s`: minimum allocatable for role `%s`, which it does not have", s->id,
                          o->role ? o->role : "");
    alloc_minalloc tmp = {0};
    if (alloc_minalloc_parse(o->spec ? o->spec : "", &tmp, err) < 0)
      return ms_error_prefix(err, "framework `%s` role `%s`", s->id, o->role);
    alloc_minalloc_release(&tmp);
  }
  for (uint32_t i = 0; i < s->nsuppressed; i++)
    if (!has_role(s, s->suppressed_roles[i]))
      return ms_error_set(err, MS_INVALID_ARGUMENT,
                          "framework `%s`: suppressed role `%s`, which it does not have", s->id,
                          s->suppressed_roles[i]);
  return 0;
}

static bool listed(const char *const *v, uint32_t n, const char *s) {
  for (uint32_t i = 0; i < n; i++)
    if (strcmp(v[i], s) == 0)
      return true;
  return false;
}

/* Brings the framework's memberships in line with the spec (already checked). */
static void fw_apply(alloc_model *m, uint32_t fi, const alloc_framework_spec *s) {
  static const char *const star[] = {"*"};
  const char *const *roles = s->nroles ? s->roles : star;
  uint32_t nroles = s->nroles ? s->nroles : 1;
  m->fws[fi].caps = s->capabilities;
  m->fws[fi].failover_timeout_s = s->failover_timeout_s;
  for (uint32_t i = 0; i < nroles; i++) {
    uint32_t role = alloc_role_get(m, roles[i], true, NULL);
    alloc_framework *f = &m->fws[fi];
    alloc_fwrole *fr = alloc_fwrole_find(f, role);
    if (!fr) {
      if (f->nroles == f->caproles) {
        f->caproles = f->caproles ? f->caproles * 2 : 2;
        f->roles = ms_xrealloc(f->roles, (size_t)f->caproles * sizeof(*f->roles));
      }
      fr = &f->roles[f->nroles++];
      *fr = (alloc_fwrole){.role = role, .gen = ++m->gen_seq};
    }
    fr->subscribed = true;
    fr->suppressed = listed(s->suppressed_roles, s->nsuppressed, roles[i]);
    alloc_minalloc_release(&fr->min);
    fr->has_min = false;
    for (uint32_t k = 0; k < s->nmin_allocatable; k++)
      if (strcmp(s->min_allocatable[k].role, roles[i]) == 0) {
        alloc_minalloc_parse(s->min_allocatable[k].spec ? s->min_allocatable[k].spec : "", &fr->min, NULL);
        fr->has_min = true;
      }
  }
  alloc_framework *f = &m->fws[fi];
  for (uint32_t j = 0; j < f->nroles; j++) {
    alloc_fwrole *fr = &f->roles[j];
    if (fr->subscribed && !listed(roles, nroles, m->roles[fr->role].name)) {
      fr->subscribed = false; /* what runs there stays accounted until recovered */
      alloc_rescind_where(m, ALLOC_NONE, fi, fr->role);
    }
    alloc_fwrole_sync(m, fi, fr);
  }
}

int alloc_model_add_framework(alloc_model *m, const alloc_framework_spec *s, ms_error **err) {
  if (fw_spec_check(s, err) < 0)
    return MS_ERR;
  if (alloc_map_get(&m->fw_ids, s->id) != ALLOC_NONE)
    return ms_error_set(err, MS_ALREADY_EXISTS, "framework `%s` is already known", s->id);
  uint32_t i = alloc_slot_take(&m->free_fws, (void **)&m->fws, &m->nfws, &m->capfws, sizeof(*m->fws));
  m->fws[i].id = ms_xstrdup(s->id);
  m->fws[i].live = m->fws[i].active = true;
  alloc_map_put(&m->fw_ids, m->fws[i].id, i);
  fw_apply(m, i, s);
  alloc_fw_offers_changed(m, i); /* silent until it answers: it may have to wait a slot */
  m->trigger = true;
  return 0;
}

int alloc_model_update_framework(alloc_model *m, const alloc_framework_spec *s, ms_error **err) {
  if (fw_spec_check(s, err) < 0)
    return MS_ERR;
  uint32_t i = fw_find(m, s->id, err);
  if (i == ALLOC_NONE)
    return MS_ERR;
  fw_apply(m, i, s);
  alloc_fw_answered(m, i); /* a re-subscribing scheduler is not silent */
  m->trigger = true;
  return 0;
}

int alloc_model_remove_framework(alloc_model *m, const char *id, ms_error **err) {
  uint32_t fi = fw_find(m, id, err);
  if (fi == ALLOC_NONE)
    return MS_ERR;
  alloc_rescind_where(m, ALLOC_NONE, fi, ALLOC_NONE);
  for (uint32_t ai = 0; ai < m->nagents; ai++) {
    alloc_agent *a = &m->agents[ai];
    for (uint32_t u = 0; a->live && u < a->nuses;) {
      if (a->uses[u].fw != fi) {
        u++;
        continue;
      }
      alloc_account(m, fi, a->uses[u].role, a->uses[u].res, -1);
      ms_resources_add(a->available, a->uses[u].res, NULL);
      alloc_agent_changed(m, ai);
      ms_resources_free(a->uses[u].res);
      a->uses[u] = a->uses[--a->nuses];
    }
  }
  alloc_framework *f = &m->fws[fi];
  f->live = false;
  for (uint32_t j = 0; j < f->nroles; j++)
    alloc_fwrole_sync(m, fi, &f->roles[j]);
  alloc_flush(m); /* before the slot dies: touches name it */
  alloc_map_del(&m->fw_ids, f->id);
  for (uint32_t j = 0; j < f->nroles; j++)
    alloc_fwrole_release(&f->roles[j]);
  free(f->roles);
  free(f->id);
  memset(f, 0, sizeof(*f));
  alloc_freelist_push(&m->free_fws, fi);
  m->trigger = true;
  return 0;
}

int alloc_model_set_framework_active(alloc_model *m, const char *id, bool active, ms_error **err) {
  uint32_t fi = fw_find(m, id, err);
  if (fi == ALLOC_NONE)
    return MS_ERR;
  m->fws[fi].active = active;
  if (!active)
    alloc_rescind_where(m, ALLOC_NONE, fi, ALLOC_NONE);
  for (uint32_t j = 0; j < m->fws[fi].nroles; j++)
    alloc_fwrole_sync(m, fi, &m->fws[fi].roles[j]);
  alloc_flush(m);
  return 0;
}

/* ---- roles ---- */

static uint32_t role_known(const alloc_model *m, const char *role, ms_error **err) {
  uint32_t i = role ? alloc_map_get(&m->role_ids, role) : ALLOC_NONE;
  if (i == ALLOC_NONE)
    ms_error_set(err, MS_NOT_FOUND, "role `%s` is not known", role ? role : "");
  return i;
}

int alloc_model_set_weight(alloc_model *m, const char *role, double weight, ms_error **err) {
  if (!(weight > 0) || !isfinite(weight))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "role `%s`: weight %g is not a positive number", role,
                        weight);
  uint32_t i = alloc_role_get(m, role, true, err);
  if (i == ALLOC_NONE)
    return MS_ERR;
  m->roles[i].weight = weight;
  alloc_role_rekey(m, i);
  return 0;
}

int alloc_model_set_quota(alloc_model *m, const char *role, const ms_quantities *guarantees,
                          const ms_quantities *limits, ms_error **err) {
  if (ms_role_validate(role, err) < 0)
    return MS_ERR;
  for (uint32_t k = 0; guarantees && limits && k < guarantees->n; k++) {
    ms_name n = guarantees->v[k].name;
    bool limited = false;
    for (uint32_t l = 0; l < limits->n; l++)
      limited |= limits->v[l].name == n;
    if (limited && ms_quantities_get(limits, n) < guarantees->v[k].value) {
      char g[MS_SCALAR_BUFSZ], l[MS_SCALAR_BUFSZ];
      return ms_error_set(err, MS_INVALID_ARGUMENT, "role `%s`: guarantee %s %s is above its limit %s", role,
                          ms_name_str(n), ms_scalar_format(guarantees->v[k].value, g),
                          ms_scalar_format(ms_quantities_get(limits, n), l));
    }
  }
  uint32_t i = alloc_role_get(m, role, true, err);
  if (i == ALLOC_NONE)
    return MS_ERR;
  alloc_role *r = &m->roles[i];
  r->guarantee.n = 0;
  if (guarantees)
    ms_quantities_add(&r->guarantee, guarantees);
  r->has_guarantee = r->guarantee.n > 0;
  free(r->limits);
  r->limits = NULL;
  r->nlimits = limits ? limits->n : 0;
  if (r->nlimits) {
    r->limits = ms_xmalloc(r->nlimits * sizeof(*r->limits));
    memcpy(r->limits, limits->v, r->nlimits * sizeof(*r->limits));
  }
  r->has_limit = r->nlimits > 0;
  /* Parents come before children in the array: one pass settles `bounded`. */
  m->nquota = 0;
  for (uint32_t x = 1; x < m->nroles; x++) {
    alloc_role *X = &m->roles[x];
    X->bounded = X->has_limit || m->roles[X->parent].bounded;
    if (X->has_guarantee || X->has_limit) {
      if (m->nquota == m->capquota) {
        m->capquota = m->capquota ? m->capquota * 2 : 16;
        m->quota_roles = ms_xrealloc(m->quota_roles, (size_t)m->capquota * sizeof(*m->quota_roles));
      }
      m->quota_roles[m->nquota++] = x;
    }
  }
  m->trigger = true;
  return 0;
}

/* ---- allocations ---- */

/* Finds framework, agent and membership for an allocation call. */
static int alloc_target(alloc_model *m, const char *fw_id, const char *agent_id, const char *role,
                        uint32_t *fi, uint32_t *ai, uint32_t *ri, ms_error **err) {
  if ((*fi = fw_find(m, fw_id, err)) == ALLOC_NONE)
    return MS_ERR;
  uint32_t a = agent_id ? alloc_map_get(&m->agent_ids, agent_id) : ALLOC_NONE;
  if (a == ALLOC_NONE)
    return ms_error_set(err, MS_NOT_FOUND, "agent `%s` is not known", agent_id ? agent_id : "");
  *ai = a;
  *ri = role ? alloc_map_get(&m->role_ids, role) : ALLOC_NONE;
  if (*ri == ALLOC_NONE || !alloc_fwrole_find(&m->fws[*fi], *ri))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "framework `%s` has no role `%s`", fw_id, role ? role : "");
  return 0;
}

static alloc_use *use_find(alloc_agent *a, uint32_t fw, uint32_t role) {
  for (uint32_t u = 0; u < a->nuses; u++)
    if (a->uses[u].fw == fw && a->uses[u].role == role)
      return &a->uses[u];
  return NULL;
}

void alloc_use_add(alloc_model *m, alloc_agent *a, uint32_t fw, uint32_t role, const ms_resources *res) {
  alloc_use *u = use_find(a, fw, role);
  if (!u) {
    if (a->nuses == a->capuses) {
      a->capuses = a->capuses ? a->capuses * 2 : 4;
      a->uses = ms_xrealloc(a->uses, (size_t)a->capuses * sizeof(*a->uses));
    }
    u = &a->uses[a->nuses++];
    *u = (alloc_use){fw, role, ms_resources_new()};
  }
  ms_resources_add(u->res, res, NULL);
  alloc_account(m, fw, role, res, 1);
  alloc_agent_changed(m, (uint32_t)(a - m->agents));
}

int alloc_model_allocate(alloc_model *m, const char *framework_id, const char *agent_id, const char *role,
                         const ms_resources *resources, ms_error **err) {
  uint32_t fi, ai, ri;
  if (alloc_target(m, framework_id, agent_id, role, &fi, &ai, &ri, err) < 0)
    return MS_ERR;
  alloc_agent *a = &m->agents[ai];
  if (ms_resources_subtract(a->available, resources, err) < 0)
    return ms_error_prefix(err, "framework `%s` on agent `%s`", framework_id, agent_id);
  alloc_use_add(m, a, fi, ri, resources);
  alloc_flush(m);
  return 0;
}

int alloc_model_recover(alloc_model *m, const char *framework_id, const char *agent_id, const char *role,
                        const ms_resources *resources, ms_error **err) {
  uint32_t fi, ai, ri;
  if (alloc_target(m, framework_id, agent_id, role, &fi, &ai, &ri, err) < 0)
    return MS_ERR;
  alloc_agent *a = &m->agents[ai];
  alloc_use *u = use_find(a, fi, ri);
  if (!u || ms_resources_subtract(u->res, resources, err) < 0)
    return ms_error_set(err, MS_FAILED_PRECONDITION,
                        "framework `%s` does not use those resources on agent `%s`", framework_id, agent_id);
  ms_resources_add(a->available, resources, NULL);
  alloc_agent_changed(m, ai);
  alloc_account(m, fi, ri, resources, -1);
  if (ms_resources_is_empty(u->res)) {
    ms_resources_free(u->res);
    *u = a->uses[--a->nuses];
  }
  alloc_flush(m);
  m->trigger = true;
  return 0;
}

/* ---- suppress / revive ---- */

static int each_membership(alloc_model *m, const char *framework_id, const char *role, bool revive,
                           ms_error **err) {
  uint32_t fi = fw_find(m, framework_id, err);
  if (fi == ALLOC_NONE)
    return MS_ERR;
  uint32_t ri = role ? alloc_map_get(&m->role_ids, role) : ALLOC_NONE;
  alloc_framework *f = &m->fws[fi];
  if (role && (ri == ALLOC_NONE || !alloc_fwrole_find(f, ri) || !alloc_fwrole_find(f, ri)->subscribed))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "framework `%s` has no role `%s`", framework_id, role);
  alloc_fw_answered(m, fi); /* lifts a hold for expired offers (syncs every role) */
  for (uint32_t j = 0; j < f->nroles; j++) {
    alloc_fwrole *fr = &f->roles[j];
    if (role && fr->role != ri)
      continue;
    fr->suppressed = !revive;
    if (revive)
      fr->gen = ++m->gen_seq; /* every filter made before is stale */
    alloc_fwrole_sync(m, fi, fr);
  }
  if (revive)
    m->trigger = true;
  return 0;
}

int alloc_model_suppress(alloc_model *m, const char *framework_id, const char *role, ms_error **err) {
  return each_membership(m, framework_id, role, false, err);
}

int alloc_model_revive(alloc_model *m, const char *framework_id, const char *role, ms_error **err) {
  return each_membership(m, framework_id, role, true, err);
}

/* ---- reading ---- */

bool alloc_model_suppressed(const alloc_model *m, const char *framework_id, const char *role) {
  uint32_t fi = alloc_map_get(&m->fw_ids, framework_id);
  uint32_t ri = alloc_map_get(&m->role_ids, role);
  if (fi == ALLOC_NONE || ri == ALLOC_NONE)
    return false;
  const alloc_fwrole *fr = alloc_fwrole_find((alloc_framework *)&m->fws[fi], ri);
  return fr && fr->subscribed && fr->suppressed;
}

int alloc_model_role_consumption(const alloc_model *m, const char *role, ms_quantities *ret, ms_error **err) {
  uint32_t i = role_known(m, role, err);
  if (i == ALLOC_NONE)
    return MS_ERR;
  alloc_role_consumption(&m->roles[i], ret);
  return 0;
}

void alloc_model_total(const alloc_model *m, ms_quantities *ret) {
  ret->n = 0;
  ms_quantities_add(ret, &m->total_q);
}

int alloc_model_role_allocation(const alloc_model *m, const char *role, ms_quantities *ret, ms_error **err) {
  uint32_t i = role_known(m, role, err);
  if (i == ALLOC_NONE)
    return MS_ERR;
  ret->n = 0;
  ms_quantities_add(ret, &m->roles[i].alloc_q);
  return 0;
}

int alloc_model_framework_allocation(const alloc_model *m, const char *framework_id, const char *role,
                                     ms_quantities *ret, ms_error **err) {
  uint32_t fi = fw_find(m, framework_id, err);
  if (fi == ALLOC_NONE)
    return MS_ERR;
  uint32_t ri = role_known(m, role, err);
  if (ri == ALLOC_NONE)
    return MS_ERR;
  alloc_fwrole *fr = alloc_fwrole_find(&m->fws[fi], ri);
  if (!fr)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "framework `%s` has no role `%s`", framework_id, role);
  ret->n = 0;
  ms_quantities_add(ret, &fr->alloc_q);
  return 0;
}
