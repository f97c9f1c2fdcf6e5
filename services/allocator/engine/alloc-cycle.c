/* The allocation cycle: quota stage, then fair-share stage, agent by agent. */
#include "alloc-cycle.h"

#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/roles.h"

#include "alloc-internal.h"

void alloc_offer_list_release(alloc_offer_list *l) {
  free(l->v);
  *l = (alloc_offer_list){0};
}

/* A per-name upper bound on unreserved scalars; 0 is a bound too. */
typedef struct bounds {
  ms_quantity v[16];
  uint32_t n;
} bounds;

static void bound_min(bounds *b, ms_name name, ms_scalar value) {
  if (value < 0)
    value = 0;
  for (uint32_t i = 0; i < b->n; i++)
    if (b->v[i].name == name) {
      if (value < b->v[i].value)
        b->v[i].value = value;
      return;
    }
  if (b->n < MS_ARRAY_SIZE(b->v))
    b->v[b->n++] = (ms_quantity){name, value};
}

static ms_scalar *bound_of(bounds *b, ms_name name) {
  for (uint32_t i = 0; i < b->n; i++)
    if (b->v[i].name == name)
      return &b->v[i].value;
  return NULL;
}

typedef struct cycle {
  alloc_model *m;
  int64_t now;
  alloc_offer_list *out;
  alloc_cycle_stats *st;
  uint32_t agent;
  bool quota;       /* some role has a guarantee or a limit */
  ms_quantities U;  /* unreserved, unallocated on agents that can take work */
  ms_quantities H;  /* the headroom still-unmet guarantees need */
  ms_quantities q1; /* scratch */
  ms_quantities q2;
  uint32_t *pass; /* offers made on the current agent */
  uint32_t npass, cappass;
  uint32_t *sat; /* roles out of the walk for the rest of the cycle: at their limits */
  uint32_t nsat, capsat;
  uint32_t *stack; /* orders for the random sorter, nested per level */
  uint32_t nstack, capstack;
  alloc_slot *keys;
  double *weights;
  uint32_t capkeys;
} cycle;

static uint32_t top_guaranteed(const alloc_model *m, uint32_t role) {
  uint32_t top = ALLOC_NONE;
  for (uint32_t x = role; x != ALLOC_ROOT; x = m->roles[x].parent)
    if (m->roles[x].has_guarantee)
      top = x;
  return top;
}

/* guarantee - consumption, stopping at zero. */
static void unmet(const alloc_role *r, ms_quantities *ret, ms_quantities *scratch) {
  ret->n = 0;
  ms_quantities_add(ret, &r->guarantee);
  alloc_role_consumption(r, scratch);
  ms_quantities_subtract(ret, scratch);
}

static void limit_bounds(cycle *c, uint32_t role, bounds *b) {
  const alloc_model *m = c->m;
  if (!m->roles[role].bounded)
    return;
  for (uint32_t x = role; x != ALLOC_ROOT; x = m->roles[x].parent) {
    const alloc_role *X = &m->roles[x];
    if (!X->has_limit)
      continue;
    alloc_role_consumption(X, &c->q1);
    for (uint32_t l = 0; l < X->nlimits; l++)
      bound_min(b, X->limits[l].name, X->limits[l].value - ms_quantities_get(&c->q1, X->limits[l].name));
  }
}

/* What the fair-share stage may give role out of unreserved resources. */
static void stage2_bounds(cycle *c, uint32_t role, bounds *b) {
  limit_bounds(c, role, b);
  if (!c->H.n)
    return;
  uint32_t top = top_guaranteed(c->m, role);
  if (top != ALLOC_NONE)
    unmet(&c->m->roles[top], &c->q2, &c->q1);
  else
    c->q2.n = 0;
  for (uint32_t i = 0; i < c->H.n; i++) {
    ms_name n = c->H.v[i].name;
    bound_min(b, n, ms_quantities_get(&c->U, n) - c->H.v[i].value + ms_quantities_get(&c->q2, n));
  }
}

/* The quota stage: up to what is missing from the guarantee; other names only out of
 * spare headroom. */
static void stage1_bounds(cycle *c, uint32_t role, bounds *b) {
  limit_bounds(c, role, b);
  const alloc_role *r = &c->m->roles[role];
  unmet(r, &c->q2, &c->q1);
  for (uint32_t i = 0; i < r->guarantee.n; i++)
    bound_min(b, r->guarantee.v[i].name, ms_quantities_get(&c->q2, r->guarantee.v[i].name));
  for (uint32_t i = 0; i < c->H.n; i++) {
    ms_name n = c->H.v[i].name;
    if (!bound_of(b, n) || ms_quantities_get(&r->guarantee, n) == 0)
      bound_min(b, n, ms_quantities_get(&c->U, n) - c->H.v[i].value);
  }
}

/* Copies src into out, unreserved scalars cut to the bounds (which are used up). */
static void chop(const ms_resources *src, bounds *b, ms_resources *out) {
  for (uint32_t i = 0; i < src->n; i++) {
    const ms_resource *r = &src->v[i];
    ms_resource_spec spec;
    ms_resource_spec_of(r, &spec);
    ms_scalar *bound =
        r->type == MS_VALUE_SCALAR && !(r->meta && ms_resource_is_reserved(r)) ? bound_of(b, r->name) : NULL;
    uint32_t copies = r->unit ? r->count : 1;
    if (bound) {
      if (r->unit) {
        while (copies && r->v.scalar > *bound)
          copies--;
        *bound -= r->v.scalar * copies;
      } else {
        spec.scalar = r->v.scalar < *bound ? r->v.scalar : *bound;
        *bound -= spec.scalar;
      }
    }
    for (uint32_t k = 0; k < copies && (r->type != MS_VALUE_SCALAR || spec.scalar > 0); k++)
      ms_resources_add_spec(out, &spec, NULL);
  }
}

static void list_push(alloc_offer_list *l, const alloc_offer_view *v) {
  if (l->n == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 64;
    l->v = ms_xrealloc(l->v, (size_t)l->cap * sizeof(*l->v));
  }
  l->v[l->n++] = *v;
}

/* Gives res (taken) to (fw, role) on the current agent, and keeps the quota books. */
static void grant(cycle *c, uint32_t fw, uint32_t role, ms_resources *res, int stage) {
  alloc_model *m = c->m;
  alloc_agent *a = &m->agents[c->agent];
  uint32_t top = c->quota ? top_guaranteed(m, role) : ALLOC_NONE;
  if (c->quota) {
    alloc_scalars(res, false, &c->q2);
    ms_quantities_subtract(&c->U, &c->q2);
    if (top != ALLOC_NONE) { /* H -= unmet(top) before, += after */
      unmet(&m->roles[top], &c->q2, &c->q1);
      ms_quantities_subtract(&c->H, &c->q2);
    }
  }
  uint32_t o = ALLOC_NONE;
  for (uint32_t i = 0; i < c->npass; i++)
    if (m->offers[c->pass[i]].fw == fw && m->offers[c->pass[i]].role == role)
      o = c->pass[i];
  if (o != ALLOC_NONE) {
    ms_resources_add(m->offers[o].res, res, NULL);
    ms_resources_add(a->offered, res, NULL);
    alloc_agent_changed(m, c->agent);
    alloc_account(m, fw, role, res, 1);
    ms_resources_free(res);
  } else {
    o = alloc_offer_new(m, fw, c->agent, role, res, c->now);
    if (c->npass == c->cappass) {
      c->cappass = c->cappass ? c->cappass * 2 : 8;
      c->pass = ms_xrealloc(c->pass, (size_t)c->cappass * sizeof(*c->pass));
    }
    c->pass[c->npass++] = o;
    alloc_offer_view v;
    alloc_offer_view_of(m, o, &v);
    list_push(c->out, &v);
    if (c->st) {
      c->st->offers++;
      c->st->quota_offers += stage == 1;
    }
  }
  if (top != ALLOC_NONE) {
    unmet(&m->roles[top], &c->q2, &c->q1);
    ms_quantities_add(&c->H, &c->q2);
  }
  /* A role whose guarantee is now met leaves the quota stage. */
  for (uint32_t x = role; c->quota && x != ALLOC_ROOT; x = m->roles[x].parent) {
    alloc_role *X = &m->roles[x];
    if (!X->in_s1)
      continue;
    alloc_role_consumption(X, &c->q1);
    if (ms_quantities_contains(&c->q1, &X->guarantee)) {
      alloc_level_remove(&m->s1, x, X->s1_key);
      X->in_s1 = false;
    }
  }
}

/* Offers the current agent to (fw, role) if it may and wants; true if it did. */
static bool try_fw(cycle *c, uint32_t fw, uint32_t role, int stage) {
  alloc_model *m = c->m;
  alloc_agent *a = &m->agents[c->agent];
  const alloc_framework *f = &m->fws[fw];
  const alloc_fwrole *fr = alloc_fwrole_find((alloc_framework *)f, role);
  if (!fr || !fr->in_level || f->capped || (a->remote && !(f->caps & ALLOC_CAP_REGION_AWARE)))
    return false;
  ms_resources *own = NULL;
  const ms_resources *cand = a->available;
  if (a->has_reserved)
    cand = own = ms_resources_allocatable_to(a->available, m->roles[role].name);
  bounds b = {.n = 0};
  if (c->quota) {
    if (stage == 1)
      stage1_bounds(c, role, &b);
    else
      stage2_bounds(c, role, &b);
  }
  if (b.n) {
    ms_resources *cut = ms_resources_new();
    chop(cand, &b, cut);
    ms_resources_free(own);
    cand = own = cut;
  }
  bool ok = !ms_resources_is_empty(cand) && alloc_minalloc_ok(fr->has_min ? &fr->min : &m->min_global, cand);
  if (ok && a->nfilters && alloc_filtered(m, a, fw, role, cand, c->now)) {
    ok = false;
    if (c->st)
      c->st->filtered++;
  }
  if (!ok) {
    ms_resources_free(own);
    return false;
  }
  if (!own) { /* everything available: move it rather than copy */
    own = ms_resources_new();
    ms_resources_swap(own, a->available);
  } else {
    ms_resources_subtract(a->available, own, NULL);
  }
  grant(c, fw, role, own, stage);
  return true;
}

/* The order of a level's ids for this agent: the DRF array itself, or a fresh random
 * draw on c->stack (returned as an offset there; *ret_ids is NULL then). */
static uint32_t level_order(cycle *c, const alloc_level *l, bool random, bool roles,
                            const alloc_slot **ret_slots) {
  *ret_slots = l->v;
  if (!random || l->n < 2)
    return ALLOC_NONE;
  if (l->n > c->capkeys) {
    c->capkeys = l->n;
    c->keys = ms_xrealloc(c->keys, (size_t)c->capkeys * sizeof(*c->keys));
    c->weights = ms_xrealloc(c->weights, (size_t)c->capkeys * sizeof(*c->weights));
  }
  if (c->nstack + 2 * l->n > c->capstack) {
    c->capstack = (c->nstack + 2 * l->n) * 2;
    c->stack = ms_xrealloc(c->stack, (size_t)c->capstack * sizeof(*c->stack));
  }
  uint32_t at = c->nstack;
  for (uint32_t i = 0; i < l->n; i++) {
    c->stack[at + l->n + i] = l->v[i].id;
    c->weights[i] = roles ? c->m->roles[l->v[i].id].weight : 1.0;
  }
  alloc_random_order(&c->stack[at + l->n], c->weights, l->n, &c->m->rng, c->keys, &c->stack[at]);
  c->nstack += l->n;
  *ret_slots = NULL;
  return at;
}

#define ORDER_ID(c, slots, at, i) ((slots) ? (slots)[i].id : (c)->stack[(at) + (i)])

static bool drained(const cycle *c) {
  return ms_resources_is_empty(c->m->agents[c->agent].available);
}

/* Whether the role's limits leave it nothing any minimum allocatable size would accept.
 * Consumption only grows within a cycle, so it stays that way until the cycle ends;
 * a framework with its own minimum keeps the role in (it may accept less). */
static bool at_limits(cycle *c, uint32_t role) {
  alloc_model *m = c->m;
  const alloc_role *r = &m->roles[role];
  for (uint32_t i = 0; i < r->fws.n; i++)
    if (alloc_fwrole_find(&m->fws[r->fws.v[i].id], role)->has_min)
      return false;
  const alloc_minalloc *mn = &m->min_global;
  if (!mn->nalts)
    return false;
  bounds b = {.n = 0};
  limit_bounds(c, role, &b);
  uint32_t start = 0;
  for (uint32_t a = 0; a < mn->nalts; a++) {
    bool ok = true;
    for (uint32_t t = start; t < mn->alt_end[a] && ok; t++) {
      ms_scalar *bound = bound_of(&b, mn->terms[t].name);
      ok = !bound || *bound >= mn->terms[t].value;
    }
    if (ok)
      return false;
    start = mn->alt_end[a];
  }
  return true;
}

/* Takes a role at its limits out of the walk: agents with nothing reserved for it
 * then never visit it again this cycle. */
static void saturate(cycle *c, uint32_t role) {
  alloc_role *r = &c->m->roles[role];
  if (c->nsat == c->capsat) {
    c->capsat = c->capsat ? c->capsat * 2 : 16;
    c->sat = ms_xrealloc(c->sat, (size_t)c->capsat * sizeof(*c->sat));
  }
  c->sat[c->nsat++] = role;
  r->sat_wanting = r->wanting_self;
  alloc_role_wanting(c->m, role, -(int)r->sat_wanting);
}

static void offer_role_fws(cycle *c, uint32_t role, int stage) {
  const alloc_level *l = &c->m->roles[role].fws;
  const alloc_slot *slots;
  uint32_t mark = c->nstack, n = l->n;
  uint32_t at = level_order(c, l, c->m->fw_sorter == ALLOC_SORTER_RANDOM, false, &slots);
  for (uint32_t i = 0; i < n && !drained(c); i++)
    try_fw(c, ORDER_ID(c, slots, at, i), role, stage);
  c->nstack = mark;
  if (stage == 2 && c->m->roles[role].bounded && !c->m->roles[role].sat_wanting && at_limits(c, role))
    saturate(c, role);
}

/* Roles at their limits may still take what is reserved for them on this agent. */
static void offer_reserved_to_saturated(cycle *c) {
  const ms_resources *av = c->m->agents[c->agent].available;
  for (uint32_t s = 0; s < c->nsat && !drained(c); s++) {
    const char *name = c->m->roles[c->sat[s]].name;
    bool has = false;
    for (uint32_t i = 0; i < av->n && !has; i++)
      has = av->v[i].meta && ms_resource_is_reserved(&av->v[i]) &&
            ms_role_is_self_or_ancestor(ms_resource_role(&av->v[i]), name);
    if (has)
      offer_role_fws(c, c->sat[s], 2);
  }
}

static void visit(cycle *c, uint32_t node) {
  const alloc_level *l = &c->m->roles[node].children;
  const alloc_slot *slots;
  uint32_t mark = c->nstack, n = l->n;
  uint32_t at = level_order(c, l, c->m->role_sorter == ALLOC_SORTER_RANDOM, true, &slots);
  for (uint32_t i = 0; i < n && !drained(c); i++) {
    uint32_t id = ORDER_ID(c, slots, at, i);
    if (id == node)
      offer_role_fws(c, node, 2);
    else
      visit(c, id);
  }
  c->nstack = mark;
}

static void stage1(cycle *c) {
  alloc_model *m = c->m;
  /* Roles leave m->s1 as their guarantee is met: walk a copy. */
  uint32_t n = m->s1.n, mark = c->nstack;
  if (c->nstack + 2 * n > c->capstack) {
    c->capstack = (c->nstack + 2 * n) * 2;
    c->stack = ms_xrealloc(c->stack, (size_t)c->capstack * sizeof(*c->stack));
  }
  uint32_t at = ALLOC_NONE;
  const alloc_slot *slots;
  if (m->role_sorter == ALLOC_SORTER_RANDOM)
    at = level_order(c, &m->s1, true, true, &slots);
  if (at == ALLOC_NONE) {
    at = c->nstack;
    for (uint32_t i = 0; i < n; i++)
      c->stack[at + i] = m->s1.v[i].id;
    c->nstack += n;
  }
  for (uint32_t i = 0; i < n && !drained(c); i++) {
    uint32_t role = c->stack[at + i];
    if (m->roles[role].in_s1 && m->roles[role].wanting_self)
      offer_role_fws(c, role, 1);
  }
  c->nstack = mark;
}

static void cycle_setup(cycle *c) {
  alloc_model *m = c->m;
  for (uint32_t i = 0; i < m->s1.n; i++)
    m->roles[m->s1.v[i].id].in_s1 = false;
  m->s1.n = 0;
  if (!c->quota)
    return;
  for (uint32_t i = 0; i < m->nagents; i++) {
    const alloc_agent *a = &m->agents[i];
    if (a->live && a->state == ALLOC_AGENT_ACTIVE && !alloc_agent_in_maintenance(a, c->now)) {
      alloc_scalars(a->available, false, &c->q2);
      ms_quantities_add(&c->U, &c->q2);
    }
  }
  for (uint32_t q = 0; q < m->nquota; q++) {
    uint32_t x = m->quota_roles[q];
    alloc_role *X = &m->roles[x];
    if (!X->has_guarantee)
      continue;
    unmet(X, &c->q2, &c->q1);
    if (!c->q2.n)
      continue;
    if (top_guaranteed(m, x) == x)
      ms_quantities_add(&c->H, &c->q2);
    X->s1_key = alloc_role_key(m, X);
    alloc_level_insert(&m->s1, x, X->s1_key);
    X->in_s1 = true;
  }
}

int alloc_cycle_run(alloc_model *m, int64_t now_ms, alloc_offer_list *ret, alloc_cycle_stats *stats,
                    ms_error **err) {
  (void)err;
  if (stats)
    *stats = (alloc_cycle_stats){0};
  if (m->totals_dirty)
    alloc_resort(m);
  alloc_flush(m);
  cycle c = {.m = m, .now = now_ms, .out = ret, .st = stats, .quota = m->nquota > 0};
  cycle_setup(&c);
  m->in_cycle = true;
  for (uint32_t i = 0; i < m->nagents && (m->roles[ALLOC_ROOT].wanting || c.nsat); i++) {
    const alloc_agent *a = &m->agents[i];
    if (!a->live || a->state != ALLOC_AGENT_ACTIVE || ms_resources_is_empty(a->available) ||
        alloc_agent_in_maintenance(a, now_ms))
      continue;
    c.agent = i;
    c.npass = 0;
    if (stats)
      stats->agents_visited++;
    if (m->s1.n)
      stage1(&c);
    if (!drained(&c))
      visit(&c, ALLOC_ROOT);
    if (c.nsat && m->agents[i].has_reserved)
      offer_reserved_to_saturated(&c);
    alloc_flush(m); /* shares move between agents, not within one */
  }
  m->in_cycle = false;
  for (uint32_t s = 0; s < c.nsat; s++) {
    alloc_role *r = &m->roles[c.sat[s]];
    uint32_t w = r->sat_wanting;
    r->sat_wanting = 0;
    alloc_role_wanting(m, c.sat[s], (int)w);
  }
  if (m->cap_dirty) { /* frameworks that reached their bound leave the levels now */
    m->cap_dirty = false;
    for (uint32_t fi = 0; fi < m->nfws; fi++)
      for (uint32_t j = 0; m->fws[fi].live && j < m->fws[fi].nroles; j++)
        alloc_fwrole_sync(m, fi, &m->fws[fi].roles[j]);
  }
  free(c.sat);
  ms_quantities_release(&c.U);
  ms_quantities_release(&c.H);
  ms_quantities_release(&c.q1);
  ms_quantities_release(&c.q2);
  free(c.pass);
  free(c.stack);
  free(c.keys);
  free(c.weights);
  return 0;
}
