/* The model: lifecycle, roles and their levels, accounting, agents and frameworks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/roles.h"

#include "alloc-internal.h"

/* ---- slots ---- */

void alloc_freelist_push(alloc_freelist *l, uint32_t i) {
  if (l->n == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 16;
    l->v = ms_xrealloc(l->v, (size_t)l->cap * sizeof(*l->v));
  }
  l->v[l->n++] = i;
}

uint32_t alloc_slot_take(alloc_freelist *l, void **arr, uint32_t *n, uint32_t *cap, size_t elem) {
  uint32_t i;
  if (l->n) {
    i = l->v[--l->n];
  } else {
    if (*n == *cap) {
      *cap = *cap ? *cap * 2 : 16;
      *arr = ms_xrealloc(*arr, (size_t)*cap * elem);
    }
    i = (*n)++;
  }
  memset((char *)*arr + (size_t)i * elem, 0, elem);
  return i;
}

/* ---- keys and levels ---- */

static double share(const alloc_model *m, const ms_quantities *q) {
  return alloc_drf_share(q, &m->total_q, &m->excluded);
}

double alloc_role_key(const alloc_model *m, const alloc_role *r) {
  return share(m, &r->alloc_q) / r->weight;
}

static double self_key(const alloc_model *m, const alloc_role *r) {
  return share(m, &r->self_alloc_q) / r->weight;
}

/* A framework that let an offer expire and has not answered since ranks after every
 * framework of the role that answers (shares stay far below the offset). */
#define EXPIRED_KEY 1e6

static double fw_key(const alloc_model *m, uint32_t fw, const alloc_fwrole *fr) {
  double k = share(m, &fr->alloc_q);
  return m->fws[fw].expiries ? k + EXPIRED_KEY : k;
}

void alloc_fw_rekey(alloc_model *m, uint32_t fw) { /* never in a cycle */
  alloc_framework *f = &m->fws[fw];
  for (uint32_t j = 0; j < f->nroles; j++) {
    alloc_fwrole *fr = &f->roles[j];
    double k = fw_key(m, fw, fr);
    if (fr->in_level && !m->totals_dirty)
      alloc_level_update(&m->roles[fr->role].fws, fw, fr->key, k);
    fr->key = k;
  }
}

alloc_fwrole *alloc_fwrole_find(alloc_framework *f, uint32_t role) {
  for (uint32_t i = 0; i < f->nroles; i++)
    if (f->roles[i].role == role)
      return &f->roles[i];
  return NULL;
}

uint32_t alloc_role_get(alloc_model *m, const char *name, bool create, ms_error **err) {
  uint32_t i = alloc_map_get(&m->role_ids, name);
  if (i != ALLOC_NONE || !create)
    return i;
  if (ms_role_validate(name, err) < 0)
    return ALLOC_NONE;
  /* Parents first, so a parent's index is always below its children's. */
  uint32_t parent = ALLOC_ROOT;
  const char *slash = strrchr(name, '/');
  if (slash) {
    _cleanup_free_ char *p = ms_xstrndup(name, (size_t)(slash - name));
    parent = alloc_role_get(m, p, true, err);
  }
  if (m->nroles == m->caproles) {
    m->caproles *= 2;
    m->roles = ms_xrealloc(m->roles, (size_t)m->caproles * sizeof(*m->roles));
  }
  i = m->nroles++;
  alloc_role *r = &m->roles[i];
  *r = (alloc_role){.name = ms_xstrdup(name), .parent = parent, .weight = 1.0};
  r->bounded = m->roles[parent].bounded;
  alloc_map_put(&m->role_ids, r->name, i);
  return i;
}

/* Frameworks wanting offers changed under role: a role sits in its parent's level (and
 * its self slot in its own) only while someone below wants offers, so idle subtrees
 * cost the cycle nothing. */
void alloc_role_wanting(alloc_model *m, uint32_t role, int delta) {
  alloc_role *r = &m->roles[role];
  uint32_t before = r->wanting_self;
  r->wanting_self = (uint32_t)((int)r->wanting_self + delta);
  if (!before && r->wanting_self) {
    r->self_key = self_key(m, r);
    alloc_level_insert(&r->children, role, r->self_key);
    r->self_in = true;
  } else if (before && !r->wanting_self) {
    alloc_level_remove(&r->children, role, r->self_key);
    r->self_in = false;
  }
  for (uint32_t x = role; x != ALLOC_ROOT; x = m->roles[x].parent) {
    alloc_role *X = &m->roles[x];
    alloc_role *P = &m->roles[X->parent];
    before = X->wanting;
    X->wanting = (uint32_t)((int)X->wanting + delta);
    if (!before && X->wanting) {
      X->key = alloc_role_key(m, X);
      alloc_level_insert(&P->children, x, X->key);
      X->in_parent = true;
    } else if (before && !X->wanting) {
      alloc_level_remove(&P->children, x, X->key);
      X->in_parent = false;
    }
  }
  m->roles[ALLOC_ROOT].wanting = (uint32_t)((int)m->roles[ALLOC_ROOT].wanting + delta);
}

void alloc_fwrole_sync(alloc_model *m, uint32_t fw, alloc_fwrole *fr) {
  const alloc_framework *f = &m->fws[fw];
  bool want = f->live && f->active && !f->capped && !f->held && fr->subscribed && !fr->suppressed;
  if (want == fr->in_level)
    return;
  alloc_role *r = &m->roles[fr->role];
  if (want) {
    fr->key = fw_key(m, fw, fr);
    alloc_level_insert(&r->fws, fw, fr->key);
  } else {
    alloc_level_remove(&r->fws, fw, fr->key);
  }
  fr->in_level = want;
  alloc_role_wanting(m, fr->role, want ? 1 : -1);
}

/* Recomputes a role's keys after its weight changed. */
void alloc_role_rekey(alloc_model *m, uint32_t role) {
  alloc_role *r = &m->roles[role];
  double k = alloc_role_key(m, r), sk = self_key(m, r);
  if (r->in_parent)
    alloc_level_update(&m->roles[r->parent].children, role, r->key, k);
  if (r->self_in)
    alloc_level_update(&r->children, role, r->self_key, sk);
  r->key = k;
  r->self_key = sk;
}

void alloc_flush(alloc_model *m) {
  if (m->totals_dirty) {
    m->ntouched = 0; /* the next cycle re-sorts everything */
    return;
  }
  for (uint32_t t = 0; t < m->ntouched; t++) {
    uint32_t fw = m->touched[t].fw, role = m->touched[t].role;
    alloc_role *r = &m->roles[role];
    alloc_fwrole *fr = m->fws[fw].live ? alloc_fwrole_find(&m->fws[fw], role) : NULL;
    if (fr) {
      double k = fw_key(m, fw, fr);
      if (fr->in_level)
        alloc_level_update(&r->fws, fw, fr->key, k);
      fr->key = k;
    }
    double sk = self_key(m, r);
    if (r->self_in)
      alloc_level_update(&r->children, role, r->self_key, sk);
    r->self_key = sk;
    for (uint32_t x = role; x != ALLOC_ROOT; x = m->roles[x].parent) {
      alloc_role *X = &m->roles[x];
      double k = alloc_role_key(m, X);
      if (X->in_parent)
        alloc_level_update(&m->roles[X->parent].children, x, X->key, k);
      if (X->in_s1) {
        alloc_level_update(&m->s1, x, X->s1_key, k);
        X->s1_key = k;
      }
      X->key = k;
    }
  }
  m->ntouched = 0;
}

void alloc_resort(alloc_model *m) {
  for (uint32_t i = 1; i < m->nroles; i++) {
    m->roles[i].key = alloc_role_key(m, &m->roles[i]);
    m->roles[i].self_key = self_key(m, &m->roles[i]);
    m->roles[i].s1_key = m->roles[i].key;
  }
  for (uint32_t i = 0; i < m->nfws; i++)
    for (uint32_t j = 0; m->fws[i].live && j < m->fws[i].nroles; j++)
      m->fws[i].roles[j].key = fw_key(m, i, &m->fws[i].roles[j]);
  for (uint32_t i = 0; i < m->nroles; i++) {
    alloc_role *r = &m->roles[i];
    for (uint32_t j = 0; j < r->children.n; j++) {
      uint32_t id = r->children.v[j].id;
      r->children.v[j].key = id == i ? r->self_key : m->roles[id].key;
    }
    alloc_level_sort(&r->children);
    for (uint32_t j = 0; j < r->fws.n; j++)
      r->fws.v[j].key = alloc_fwrole_find(&m->fws[r->fws.v[j].id], i)->key;
    alloc_level_sort(&r->fws);
  }
  for (uint32_t j = 0; j < m->s1.n; j++)
    m->s1.v[j].key = m->roles[m->s1.v[j].id].s1_key;
  alloc_level_sort(&m->s1);
  m->totals_dirty = false;
  m->ntouched = 0;
}

/* ---- accounting ---- */

void alloc_scalars(const ms_resources *set, bool reserved, ms_quantities *ret) {
  ret->n = 0;
  for (uint32_t i = 0; i < set->n; i++) {
    const ms_resource *r = &set->v[i];
    if (r->type != MS_VALUE_SCALAR || (r->meta != NULL && ms_resource_is_reserved(r)) != reserved)
      continue;
    ms_scalar v = r->v.scalar;
    if (r->unit && !ms_resource_is_shared(r))
      v *= (ms_scalar)r->count;
    ms_quantities_set(ret, r->name, ms_quantities_get(ret, r->name) + v);
  }
}

void alloc_role_consumption(const alloc_role *r, ms_quantities *ret) {
  ret->n = 0;
  ms_quantities_add(ret, &r->reserved_q);
  ms_quantities_add(ret, &r->alloc_unres_q);
}

static void qadd(ms_quantities *a, const ms_quantities *b, int sign) {
  if (sign > 0)
    ms_quantities_add(a, b);
  else
    ms_quantities_subtract(a, b);
}

void alloc_account(alloc_model *m, uint32_t fw, uint32_t role, const ms_resources *res, int sign) {
  ms_quantities_of(&m->tmp_q, res);
  alloc_scalars(res, false, &m->tmp_qu);
  alloc_fwrole *fr = alloc_fwrole_find(&m->fws[fw], role);
  if (fr)
    qadd(&fr->alloc_q, &m->tmp_q, sign);
  qadd(&m->roles[role].self_alloc_q, &m->tmp_q, sign);
  alloc_role_changed(m, role);
  for (uint32_t x = role; x != ALLOC_ROOT; x = m->roles[x].parent) {
    qadd(&m->roles[x].alloc_q, &m->tmp_q, sign);
    qadd(&m->roles[x].alloc_unres_q, &m->tmp_qu, sign);
  }
  if (m->ntouched == m->captouched) {
    m->captouched = m->captouched ? m->captouched * 2 : 16;
    m->touched = ms_xrealloc(m->touched, (size_t)m->captouched * sizeof(*m->touched));
  }
  m->touched[m->ntouched++] = (alloc_touch){fw, role};
}

/* Adds (sign 1) or removes an agent's total: the cluster total and what each role has
 * reserved. */
static void agent_account(alloc_model *m, alloc_agent *a, int sign) {
  ms_quantities_of(&m->tmp_q, a->total);
  qadd(&m->total_q, &m->tmp_q, sign);
  m->totals_dirty = true;
  a->has_reserved = false;
  for (uint32_t i = 0; i < a->total->n; i++) {
    const ms_resource *r = &a->total->v[i];
    if (!r->meta || !ms_resource_is_reserved(r))
      continue;
    a->has_reserved = true;
    if (r->type != MS_VALUE_SCALAR)
      continue;
    ms_scalar v = r->v.scalar * ((r->unit && !ms_resource_is_shared(r)) ? (ms_scalar)r->count : 1);
    uint32_t role = alloc_role_get(m, ms_resource_role(r), true, NULL);
    if (role != ALLOC_NONE)
      alloc_role_changed(m, role);
    for (uint32_t x = role; x != ALLOC_NONE && x != ALLOC_ROOT; x = m->roles[x].parent) {
      ms_quantities *q = &m->roles[x].reserved_q;
      ms_quantities_set(q, r->name, ms_quantities_get(q, r->name) + sign * v);
    }
  }
}

void alloc_agent_retotal(alloc_model *m, alloc_agent *a, ms_resources *new_total) {
  agent_account(m, a, -1);
  ms_resources_swap(a->total, new_total);
  agent_account(m, a, 1);
  alloc_agent_changed(m, (uint32_t)(a - m->agents));
}

static void note_change(alloc_model *m) {
  if (m->on_change && m->nchanged_agents + m->nchanged_roles == 1)
    m->on_change(m->change_ctx);
}

void alloc_agent_record(alloc_model *m, uint32_t agent) {
  alloc_agent *a = &m->agents[agent];
  a->changed = true;
  if (m->nchanged_agents == m->capchanged_agents) {
    m->capchanged_agents = m->capchanged_agents ? 2 * m->capchanged_agents : 16;
    m->changed_agents =
        ms_xrealloc(m->changed_agents, (size_t)m->capchanged_agents * sizeof(*m->changed_agents));
  }
  m->changed_agents[m->nchanged_agents++] = agent;
  note_change(m);
}

void alloc_role_record(alloc_model *m, uint32_t role) {
  alloc_role *r = &m->roles[role];
  r->changed = true;
  if (m->nchanged_roles == m->capchanged_roles) {
    m->capchanged_roles = m->capchanged_roles ? 2 * m->capchanged_roles : 16;
    m->changed_roles = ms_xrealloc(m->changed_roles, (size_t)m->capchanged_roles * sizeof(*m->changed_roles));
  }
  m->changed_roles[m->nchanged_roles++] = role;
  note_change(m);
}

void alloc_model_take_changes(alloc_model *m, alloc_changed_fn agent_fn, alloc_changed_fn role_fn,
                              void *ctx) {
  /* Entries of agents removed since (or of a reused slot already taken) have changed == false. */
  for (uint32_t i = 0; i < m->nchanged_agents; i++) {
    alloc_agent *a = &m->agents[m->changed_agents[i]];
    if (!a->changed)
      continue;
    a->changed = false;
    if (a->live && agent_fn)
      agent_fn(ctx, a->id);
  }
  m->nchanged_agents = 0;
  for (uint32_t i = 0; i < m->nchanged_roles; i++) {
    alloc_role *r = &m->roles[m->changed_roles[i]];
    r->changed = false;
    if (role_fn)
      role_fn(ctx, r->name);
  }
  m->nchanged_roles = 0;
}

bool alloc_agent_in_maintenance(const alloc_agent *a, int64_t now_ms) {
  if (a->unavail_duration_ms == 0 || now_ms < a->unavail_start_ms)
    return false;
  return a->unavail_duration_ms < 0 || now_ms - a->unavail_start_ms < a->unavail_duration_ms;
}

/* ---- lifecycle ---- */

int alloc_model_new(const alloc_config *cfg, alloc_model **ret, ms_error **err) {
  alloc_model *m = ms_xcalloc(1, sizeof(*m));
  m->role_sorter = cfg->role_sorter;
  m->fw_sorter = cfg->framework_sorter;
  m->offer_timeout_ms = cfg->offer_timeout_ms;
  m->max_offers = cfg->max_offers_per_framework;
  m->max_silent = cfg->max_silent_frameworks;
  m->on_rescind = cfg->on_rescind;
  m->rescind_ctx = cfg->rescind_ctx;
  m->on_change = cfg->on_change;
  m->change_ctx = cfg->change_ctx;
  m->rng.s = cfg->seed;
  m->caproles = 16;
  m->roles = ms_xcalloc(m->caproles, sizeof(*m->roles));
  m->roles[0] = (alloc_role){.name = ms_xstrdup(""), .parent = ALLOC_NONE, .weight = 1.0};
  m->nroles = 1;
  if (cfg->local_region && *cfg->local_region)
    m->local_region = ms_xstrdup(cfg->local_region);
  if (alloc_names_parse(cfg->fair_share_excluded, &m->excluded, err) < 0 ||
      alloc_minalloc_parse(cfg->min_allocatable ? cfg->min_allocatable : ALLOC_DEFAULT_MIN_ALLOCATABLE,
                           &m->min_global, err) < 0) {
    alloc_model_free(m);
    return MS_ERR;
  }
  *ret = m;
  return 0;
}

static void agent_release(alloc_agent *a) {
  free(a->id);
  free(a->hostname);
  free(a->region);
  free(a->zone);
  for (uint32_t i = 0; i < a->nattrs; i++) {
    free((char *)a->attrs[i].name);
    free((char *)a->attrs[i].value);
  }
  free(a->attrs);
  ms_resources_free(a->total);
  ms_resources_free(a->available);
  ms_resources_free(a->offered);
  for (uint32_t i = 0; i < a->nuses; i++)
    ms_resources_free(a->uses[i].res);
  free(a->uses);
  for (uint32_t i = 0; i < a->nfilters; i++)
    ms_resources_free(a->filters[i].refused);
  free(a->filters);
  memset(a, 0, sizeof(*a));
}

void alloc_fwrole_release(alloc_fwrole *fr) {
  ms_quantities_release(&fr->alloc_q);
  alloc_minalloc_release(&fr->min);
}

static void framework_release(alloc_framework *f) {
  free(f->id);
  for (uint32_t i = 0; i < f->nroles; i++)
    alloc_fwrole_release(&f->roles[i]);
  free(f->roles);
  memset(f, 0, sizeof(*f));
}

void alloc_model_free(alloc_model *m) {
  if (!m)
    return;
  for (uint32_t i = 0; i < m->nagents; i++)
    agent_release(&m->agents[i]);
  for (uint32_t i = 0; i < m->nfws; i++)
    framework_release(&m->fws[i]);
  for (uint32_t i = 0; i < m->noffers; i++) {
    free(m->offers[i].id);
    ms_resources_free(m->offers[i].res);
  }
  for (uint32_t i = 0; i < m->nroles; i++) {
    alloc_role *r = &m->roles[i];
    free(r->name);
    alloc_level_release(&r->children);
    alloc_level_release(&r->fws);
    ms_quantities_release(&r->alloc_q);
    ms_quantities_release(&r->self_alloc_q);
    ms_quantities_release(&r->reserved_q);
    ms_quantities_release(&r->alloc_unres_q);
    ms_quantities_release(&r->guarantee);
    free(r->limits);
  }
  free(m->agents);
  free(m->fws);
  free(m->roles);
  free(m->offers);
  alloc_map_release(&m->agent_ids);
  alloc_map_release(&m->fw_ids);
  alloc_map_release(&m->role_ids);
  alloc_map_release(&m->offer_ids);
  free(m->free_agents.v);
  free(m->free_fws.v);
  free(m->free_offers.v);
  free(m->quota_roles);
  free(m->touched);
  free(m->changed_agents);
  free(m->changed_roles);
  alloc_level_release(&m->s1);
  alloc_names_release(&m->excluded);
  alloc_minalloc_release(&m->min_global);
  free(m->local_region);
  ms_quantities_release(&m->total_q);
  ms_quantities_release(&m->tmp_q);
  ms_quantities_release(&m->tmp_qu);
  free(m);
}

bool alloc_model_take_trigger(alloc_model *m) {
  bool t = m->trigger;
  m->trigger = false;
  return t;
}

/* ---- agents ---- */

static uint32_t agent_find(const alloc_model *m, const char *id, ms_error **err) {
  uint32_t i = id ? alloc_map_get(&m->agent_ids, id) : ALLOC_NONE;
  if (i == ALLOC_NONE)
    ms_error_set(err, MS_NOT_FOUND, "agent `%s` is not known", id ? id : "");
  return i;
}

static int agent_spec_check(const alloc_agent_spec *s, ms_error **err) {
  if (!s->id || !*s->id)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "agent: an id is required");
  if (!s->total)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "agent `%s`: total resources are required", s->id);
  if (s->state > ALLOC_AGENT_DRAINING)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "agent `%s`: unknown state %d", s->id, (int)s->state);
  return 0;
}

/* Everything of the spec but the id and the resources. */
static void agent_describe(alloc_model *m, alloc_agent *a, const alloc_agent_spec *s) {
  free(a->hostname);
  free(a->region);
  free(a->zone);
  for (uint32_t i = 0; i < a->nattrs; i++) {
    free((char *)a->attrs[i].name);
    free((char *)a->attrs[i].value);
  }
  free(a->attrs);
  a->hostname = ms_xstrdup(s->hostname ? s->hostname : "");
  a->region = s->region && *s->region ? ms_xstrdup(s->region) : NULL;
  a->zone = s->zone && *s->zone ? ms_xstrdup(s->zone) : NULL;
  a->attrs = s->nattributes ? ms_xcalloc(s->nattributes, sizeof(*a->attrs)) : NULL;
  a->nattrs = s->nattributes;
  for (uint32_t i = 0; i < s->nattributes; i++) {
    a->attrs[i].name = ms_xstrdup(s->attributes[i].name ? s->attributes[i].name : "");
    a->attrs[i].value = ms_xstrdup(s->attributes[i].value ? s->attributes[i].value : "");
  }
  a->state = s->state;
  a->unavail_start_ms = s->unavailable_start_ms;
  a->unavail_duration_ms = s->unavailable_duration_ms;
  /* An agent without a region is taken as local, as Mesos does. */
  a->remote = m->local_region && a->region && strcmp(a->region, m->local_region) != 0;
}

int alloc_model_add_agent(alloc_model *m, const alloc_agent_spec *s, ms_error **err) {
  if (agent_spec_check(s, err) < 0)
    return MS_ERR;
  if (alloc_map_get(&m->agent_ids, s->id) != ALLOC_NONE)
    return ms_error_set(err, MS_ALREADY_EXISTS, "agent `%s` is already known", s->id);
  uint32_t i =
      alloc_slot_take(&m->free_agents, (void **)&m->agents, &m->nagents, &m->capagents, sizeof(*m->agents));
  alloc_agent *a = &m->agents[i];
  a->id = ms_xstrdup(s->id);
  a->live = true;
  a->total = ms_resources_clone(s->total);
  a->available = ms_resources_clone(s->total);
  a->offered = ms_resources_new();
  agent_describe(m, a, s);
  agent_account(m, a, 1);
  alloc_map_put(&m->agent_ids, a->id, i);
  m->live_agents++;
  m->trigger = true;
  return 0;
}

void alloc_rescind_where(alloc_model *m, uint32_t agent, uint32_t fw, uint32_t role) {
  for (uint32_t o = 0; o < m->noffers; o++) {
    const alloc_offer *of = &m->offers[o];
    if (of->live && (agent == ALLOC_NONE || of->agent == agent) && (fw == ALLOC_NONE || of->fw == fw) &&
        (role == ALLOC_NONE || of->role == role))
      alloc_offer_drop(m, o, true);
  }
}

int alloc_model_update_agent(alloc_model *m, const alloc_agent_spec *s, ms_error **err) {
  if (agent_spec_check(s, err) < 0)
    return MS_ERR;
  uint32_t i = agent_find(m, s->id, err);
  if (i == ALLOC_NONE)
    return MS_ERR;
  alloc_agent *a = &m->agents[i];
  ms_resources *used = ms_resources_new();
  for (uint32_t u = 0; u < a->nuses; u++)
    ms_resources_add(used, a->uses[u].res, NULL);
  if (!ms_resources_contains(s->total, used)) {
    _cleanup_free_ char *d = ms_resources_describe(used);
    ms_resources_free(used);
    return ms_error_set(err, MS_FAILED_PRECONDITION, "agent `%s`: the new total lacks what tasks use (%s)",
                        s->id, d);
  }
  alloc_rescind_where(m, i, ALLOC_NONE, ALLOC_NONE);
  ms_resources *total = ms_resources_clone(s->total);
  alloc_agent_retotal(m, a, total);
  ms_resources_free(total);
  ms_resources_clear(a->available);
  ms_resources_add(a->available, a->total, NULL);
  ms_resources_subtract(a->available, used, NULL);
  ms_resources_free(used);
  agent_describe(m, a, s);
  alloc_agent_changed(m, i);
  m->trigger = true;
  return 0;
}

int alloc_model_remove_agent(alloc_model *m, const char *id, ms_error **err) {
  uint32_t i = agent_find(m, id, err);
  if (i == ALLOC_NONE)
    return MS_ERR;
  alloc_rescind_where(m, i, ALLOC_NONE, ALLOC_NONE);
  alloc_agent *a = &m->agents[i];
  for (uint32_t u = 0; u < a->nuses; u++)
    alloc_account(m, a->uses[u].fw, a->uses[u].role, a->uses[u].res, -1);
  agent_account(m, a, -1);
  alloc_map_del(&m->agent_ids, a->id);
  agent_release(a);
  alloc_freelist_push(&m->free_agents, i);
  m->live_agents--;
  alloc_flush(m);
  return 0;
}

int alloc_model_agent(const alloc_model *m, const char *agent_id, alloc_agent_view *ret, ms_error **err) {
  uint32_t i = agent_find(m, agent_id, err);
  if (i == ALLOC_NONE)
    return MS_ERR;
  const alloc_agent *a = &m->agents[i];
  *ret = (alloc_agent_view){a->total, a->available, a->offered, a->state, a->region, a->zone, a->hostname};
  return 0;
}
