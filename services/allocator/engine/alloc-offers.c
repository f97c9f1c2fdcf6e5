/* Offers: making, declining, accepting, rescinding and timing out; filters; operator
 * operations on unallocated resources; minimum allocatable sizes. */
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/roles.h"

#include "alloc-internal.h"

/* ---- offers ---- */

uint32_t alloc_offer_new(alloc_model *m, uint32_t fw, uint32_t agent, uint32_t role, ms_resources *res,
                         int64_t now_ms) {
  uint32_t o =
      alloc_slot_take(&m->free_offers, (void **)&m->offers, &m->noffers, &m->capoffers, sizeof(*m->offers));
  alloc_offer *of = &m->offers[o];
  of->id = ms_xasprintf("o-%llu", (unsigned long long)++m->offer_seq);
  of->live = true;
  of->fw = fw;
  of->agent = agent;
  of->role = role;
  of->res = res;
  of->created_ms = now_ms;
  alloc_map_put(&m->offer_ids, of->id, o);
  m->live_offers++;
  m->fws[fw].noffers++;
  alloc_fw_offers_changed(m, fw);
  ms_resources_add(m->agents[agent].offered, res, NULL);
  alloc_agent_changed(m, agent);
  alloc_account(m, fw, role, res, 1);
  return o;
}

void alloc_offer_view_of(const alloc_model *m, uint32_t o, alloc_offer_view *ret) {
  const alloc_offer *of = &m->offers[o];
  *ret = (alloc_offer_view){of->id,  m->fws[of->fw].id, m->agents[of->agent].id, m->roles[of->role].name,
                            of->res, of->created_ms};
}

/* Takes the offer out of the books: the agent's offered, the framework's and role's
 * allocation; the resources are the caller's to place (returned: the offer's set). */
static ms_resources *offer_unlink(alloc_model *m, uint32_t o, bool rescind) {
  alloc_offer *of = &m->offers[o];
  if (rescind && m->on_rescind) {
    alloc_offer_view v;
    alloc_offer_view_of(m, o, &v);
    m->on_rescind(m->rescind_ctx, &v);
  }
  ms_resources_subtract(m->agents[of->agent].offered, of->res, NULL);
  alloc_agent_changed(m, of->agent);
  alloc_account(m, of->fw, of->role, of->res, -1);
  alloc_map_del(&m->offer_ids, of->id);
  free(of->id);
  ms_resources *res = of->res;
  uint32_t fw = of->fw;
  memset(of, 0, sizeof(*of));
  alloc_freelist_push(&m->free_offers, o);
  m->live_offers--;
  m->fws[fw].noffers--;
  alloc_fw_offers_changed(m, fw);
  return res;
}

static void fw_recap(alloc_model *m, uint32_t fw) {
  alloc_framework *f = &m->fws[fw];
  bool capped = (m->max_offers && f->noffers >= m->max_offers) ||
                (m->max_silent && !f->answered && !f->noffers && m->silent_holding >= m->max_silent);
  if (capped == f->capped)
    return;
  f->capped = capped;
  if (m->in_cycle) { /* the cycle walks the levels: no change under it */
    m->cap_dirty = true;
    return;
  }
  for (uint32_t j = 0; j < f->nroles; j++)
    alloc_fwrole_sync(m, fw, &f->roles[j]);
  if (!capped)
    m->trigger = true;
}

void alloc_fw_offers_changed(alloc_model *m, uint32_t fw) {
  alloc_framework *f = &m->fws[fw];
  bool slot = m->max_silent && f->live && !f->answered && f->noffers > 0;
  if (slot != f->silent_slot) {
    bool full = m->silent_holding >= m->max_silent;
    f->silent_slot = slot;
    m->silent_holding = slot ? m->silent_holding + 1 : m->silent_holding - 1;
    if (full != (m->silent_holding >= m->max_silent)) { /* every waiting silent one changes */
      for (uint32_t fi = 0; fi < m->nfws; fi++)
        if (fi != fw && m->fws[fi].live && !m->fws[fi].answered)
          fw_recap(m, fi);
    }
  }
  fw_recap(m, fw);
}

void alloc_offer_drop(alloc_model *m, uint32_t o, bool rescind) {
  uint32_t agent = m->offers[o].agent;
  ms_resources *res = offer_unlink(m, o, rescind);
  ms_resources_add(m->agents[agent].available, res, NULL);
  ms_resources_free(res);
  if (!m->in_cycle)
    alloc_flush(m);
}

static uint32_t offer_find(const alloc_model *m, const char *id, ms_error **err) {
  uint32_t o = id ? alloc_map_get(&m->offer_ids, id) : ALLOC_NONE;
  if (o == ALLOC_NONE)
    ms_error_set(err, MS_NOT_FOUND,
                 "offer `%s` is not outstanding (already accepted, declined or rescinded, or never made)",
                 id ? id : "");
  return o;
}

/* The framework's own outstanding offer. */
static uint32_t offer_of(const alloc_model *m, uint32_t fi, const char *fw_id, const char *id,
                         ms_error **err) {
  uint32_t o = offer_find(m, id, err);
  if (o != ALLOC_NONE && m->offers[o].fw != fi) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "offer `%s` was made to framework `%s`, not `%s`", id,
                 m->fws[m->offers[o].fw].id, fw_id);
    return ALLOC_NONE;
  }
  return o;
}

int alloc_model_offer(const alloc_model *m, const char *offer_id, alloc_offer_view *ret, ms_error **err) {
  uint32_t o = offer_find(m, offer_id, err);
  if (o == ALLOC_NONE)
    return MS_ERR;
  alloc_offer_view_of(m, o, ret);
  return 0;
}

uint32_t alloc_model_offer_count(const alloc_model *m) {
  return m->live_offers;
}

void alloc_model_each_offer(const alloc_model *m, void (*fn)(void *ctx, const alloc_offer_view *o),
                            void *ctx) {
  for (uint32_t o = 0; o < m->noffers; o++)
    if (m->offers[o].live) {
      alloc_offer_view v;
      alloc_offer_view_of(m, o, &v);
      fn(ctx, &v);
    }
}

int alloc_model_rescind(alloc_model *m, const char *offer_id, ms_error **err) {
  uint32_t o = offer_find(m, offer_id, err);
  if (o == ALLOC_NONE)
    return MS_ERR;
  alloc_offer_drop(m, o, true);
  return 0;
}

/* ---- expiry and holds ---- */

static void fw_set_held(alloc_model *m, uint32_t fw, bool held) {
  alloc_framework *f = &m->fws[fw];
  f->held = held;
  if (!held)
    f->held_until_ms = 0;
  for (uint32_t j = 0; j < f->nroles; j++)
    alloc_fwrole_sync(m, fw, &f->roles[j]);
  if (!held)
    m->trigger = true;
}

void alloc_fw_answered(alloc_model *m, uint32_t fw) {
  alloc_framework *f = &m->fws[fw];
  if (f->expiries) {
    f->expiries = 0;
    alloc_fw_rekey(m, fw);
  }
  if (!f->answered) {
    f->answered = true;
    alloc_fw_offers_changed(m, fw); /* frees its silent slot */
  }
  if (f->held)
    fw_set_held(m, fw, false);
}

/* One more expiry in the framework's run (several offers in one sweep count once): it
 * leaves every level for 5 s, 10 s, 20 s ... up to the cap. A hold replaces a filter:
 * it covers every agent, whatever the size of what is free there, at no cycle cost. */
static void fw_expired(alloc_model *m, uint32_t fw, int64_t now_ms) {
  alloc_framework *f = &m->fws[fw];
  if (f->expiries && f->last_expiry_ms == now_ms)
    return;
  f->expiries++; /* ranked last from now (it leaves the levels for the hold first) */
  f->last_expiry_ms = now_ms;
  int64_t hold = ALLOC_EXPIRY_HOLD_MS;
  for (uint32_t i = 1; i < f->expiries && hold < ALLOC_EXPIRY_HOLD_MAX_MS; i++)
    hold *= 2;
  f->held_until_ms = now_ms + (hold > ALLOC_EXPIRY_HOLD_MAX_MS ? ALLOC_EXPIRY_HOLD_MAX_MS : hold);
  if (!f->held)
    fw_set_held(m, fw, true);
  if (f->answered) { /* silent again: it needs a slot to hold offers */
    f->answered = false;
    alloc_fw_offers_changed(m, fw);
  }
}

uint32_t alloc_model_expire_offers(alloc_model *m, int64_t now_ms) {
  uint32_t n = 0;
  for (uint32_t o = 0; m->offer_timeout_ms > 0 && o < m->noffers; o++)
    if (m->offers[o].live && now_ms - m->offers[o].created_ms >= m->offer_timeout_ms) {
      uint32_t ai = m->offers[o].agent, fw = m->offers[o].fw;
      ms_resources *res = offer_unlink(m, o, true);
      ms_resources_add(m->agents[ai].available, res, NULL);
      ms_resources_free(res);
      fw_expired(m, fw, now_ms);
      n++;
    }
  for (uint32_t fi = 0; fi < m->nfws; fi++)
    if (m->fws[fi].live && m->fws[fi].held && m->fws[fi].held_until_ms <= now_ms)
      fw_set_held(m, fi, false); /* the run goes on: the next expiry holds it longer */
  if (n) {
    alloc_flush(m);
    m->trigger = true;
  }
  return n;
}

/* ---- filters ---- */

static int64_t refuse_for(int64_t refuse_ms) {
  if (refuse_ms < 0)
    return ALLOC_DEFAULT_REFUSE_MS;
  return refuse_ms > ALLOC_MAX_REFUSE_MS ? ALLOC_MAX_REFUSE_MS : refuse_ms;
}

static void filter_add(alloc_model *m, uint32_t ai, uint32_t fw, uint32_t role, const ms_resources *refused,
                       int64_t until_ms) {
  alloc_agent *a = &m->agents[ai];
  if (a->nfilters == a->capfilters) {
    a->capfilters = a->capfilters ? a->capfilters * 2 : 4;
    a->filters = ms_xrealloc(a->filters, (size_t)a->capfilters * sizeof(*a->filters));
  }
  alloc_fwrole *fr = alloc_fwrole_find(&m->fws[fw], role);
  a->filters[a->nfilters++] =
      (alloc_filter){fw, role, fr ? fr->gen : 0, until_ms, ms_resources_clone(refused)};
}

bool alloc_filtered(alloc_model *m, alloc_agent *a, uint32_t fw, uint32_t role, const ms_resources *cand,
                    int64_t now_ms) {
  bool hit = false;
  for (uint32_t i = 0; i < a->nfilters;) {
    alloc_filter *f = &a->filters[i];
    const alloc_framework *fwp = &m->fws[f->fw];
    const alloc_fwrole *fr = fwp->live ? alloc_fwrole_find((alloc_framework *)fwp, f->role) : NULL;
    if (f->expires_ms <= now_ms || !fr || fr->gen != f->gen) {
      ms_resources_free(f->refused); /* expired, revived, or its framework left */
      *f = a->filters[--a->nfilters];
      continue;
    }
    /* As in Mesos: refusing resources also refuses any part of them, not more. */
    if (f->fw == fw && f->role == role && ms_resources_contains(f->refused, cand))
      hit = true;
    i++;
  }
  return hit;
}

int alloc_model_decline(alloc_model *m, const char *framework_id, const char *offer_id, int64_t refuse_ms,
                        int64_t now_ms, ms_error **err) {
  uint32_t fi = alloc_map_get(&m->fw_ids, framework_id ? framework_id : "");
  if (fi == ALLOC_NONE)
    return ms_error_set(err, MS_NOT_FOUND, "framework `%s` is not known", framework_id ? framework_id : "");
  alloc_fw_answered(m, fi); /* even late (the offer gone): it is not silent */
  uint32_t o = offer_of(m, fi, framework_id, offer_id, err);
  if (o == ALLOC_NONE)
    return MS_ERR;
  uint32_t ai = m->offers[o].agent, role = m->offers[o].role;
  ms_resources *res = offer_unlink(m, o, false);
  int64_t refuse = refuse_for(refuse_ms);
  if (refuse > 0)
    filter_add(m, ai, fi, role, res, now_ms + refuse);
  ms_resources_add(m->agents[ai].available, res, NULL);
  ms_resources_free(res);
  alloc_flush(m);
  return 0;
}

/* ---- accept ---- */

/* A RESERVE or UNRESERVE from a framework may only touch its offer's role. */
static int check_op_role(const ms_operation *op, const char *role, uint32_t k, ms_error **err) {
  if (op->type != MS_OP_RESERVE && op->type != MS_OP_UNRESERVE)
    return 0;
  for (uint32_t i = 0; op->resources && i < op->resources->n; i++) {
    const char *r = ms_resource_role(&op->resources->v[i]);
    if (strcmp(r, role) != 0)
      return ms_error_set(err, MS_INVALID_ARGUMENT,
                          "operation %u (%s): reservation role `%s` is not the offer's `%s`", k,
                          ms_operation_type_name(op->type), r, role);
  }
  return 0;
}

int alloc_model_accept(alloc_model *m, const char *framework_id, const char *const *offer_ids,
                       uint32_t noffers, const alloc_accept_op *ops, uint32_t nops, int64_t refuse_ms,
                       int64_t now_ms, ms_error **err) {
  uint32_t fi = alloc_map_get(&m->fw_ids, framework_id ? framework_id : "");
  if (fi == ALLOC_NONE)
    return ms_error_set(err, MS_NOT_FOUND, "framework `%s` is not known", framework_id ? framework_id : "");
  alloc_fw_answered(m, fi); /* even late or malformed: it is not silent */
  if (noffers == 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "framework `%s`: accept names no offer", framework_id);
  _cleanup_free_ uint32_t *os = ms_xcalloc(noffers, sizeof(*os));
  for (uint32_t i = 0; i < noffers; i++) {
    if ((os[i] = offer_of(m, fi, framework_id, offer_ids[i], err)) == ALLOC_NONE)
      return MS_ERR;
    for (uint32_t j = 0; j < i; j++)
      if (os[j] == os[i])
        return ms_error_set(err, MS_INVALID_ARGUMENT, "offer `%s` is named twice", offer_ids[i]);
    if (m->offers[os[i]].agent != m->offers[os[0]].agent || m->offers[os[i]].role != m->offers[os[0]].role)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "offers `%s` and `%s` are on different agents or roles",
                          offer_ids[0], offer_ids[i]);
  }
  uint32_t ai = m->offers[os[0]].agent, role = m->offers[os[0]].role;
  const char *role_name = m->roles[role].name;
  ms_resources *orig = ms_resources_new(), *work, *used = ms_resources_new();
  for (uint32_t i = 0; i < noffers; i++)
    ms_resources_add(orig, m->offers[os[i]].res, NULL);
  work = ms_resources_clone(orig);
  int rc = 0;
  for (uint32_t k = 0; k < nops && rc == 0; k++) {
    const alloc_accept_op *op = &ops[k];
    if (op->kind == ALLOC_OP_LAUNCH) {
      if (!op->launch)
        rc = ms_error_set(err, MS_INVALID_ARGUMENT, "operation %u (LAUNCH) names no resources", k);
      else if (ms_resources_subtract(work, op->launch, err) < 0)
        rc = ms_error_prefix(err, "operation %u (LAUNCH) uses resources not in the offer", k);
      else
        ms_resources_add(used, op->launch, NULL);
    } else if (op->kind == ALLOC_OP_RESOURCES && op->op) {
      if (check_op_role(op->op, role_name, k, err) < 0 || ms_resources_apply(work, op->op, err) < 0)
        rc = ms_error_prefix(err, "operation %u (%s)", k, ms_operation_type_name(op->op->type));
    } else {
      rc = ms_error_set(err, MS_INVALID_ARGUMENT, "operation %u: unknown kind %d", k, (int)op->kind);
    }
  }
  if (rc < 0) {
    ms_resources_free(orig);
    ms_resources_free(work);
    ms_resources_free(used);
    return ms_error_prefix(err, "framework `%s` accepting `%s`", framework_id, offer_ids[0]);
  }
  /* Nothing can fail from here. Operations change the agent's total in place. */
  alloc_agent *a = &m->agents[ai];
  ms_resources *after = ms_resources_clone(work);
  ms_resources_add(after, used, NULL);
  if (!ms_resources_equal(after, orig)) {
    ms_resources *total = ms_resources_clone(a->total);
    ms_resources_subtract(total, orig, NULL);
    ms_resources_add(total, after, NULL);
    alloc_agent_retotal(m, a, total);
    ms_resources_free(total);
  }
  for (uint32_t i = 0; i < noffers; i++)
    ms_resources_free(offer_unlink(m, os[i], false));
  a = &m->agents[ai];
  if (!ms_resources_is_empty(used))
    alloc_use_add(m, a, fi, role, used);
  ms_resources_add(a->available, work, NULL);
  int64_t refuse = refuse_for(refuse_ms);
  if (refuse > 0 && !ms_resources_is_empty(work))
    filter_add(m, ai, fi, role, work, now_ms + refuse);
  ms_resources_free(orig);
  ms_resources_free(work);
  ms_resources_free(used);
  ms_resources_free(after);
  alloc_flush(m);
  return 0;
}

/* ---- operator operations ---- */

/* Adds sign * (reserved scalars of set) under each reserving role of `role`'s quota
 * ancestors: delta[q] for quota role index q. */
static void reserved_delta(const alloc_model *m, const ms_resources *set, int sign, ms_quantities *delta) {
  for (uint32_t i = 0; i < set->n; i++) {
    const ms_resource *r = &set->v[i];
    if (r->type != MS_VALUE_SCALAR || !r->meta || !ms_resource_is_reserved(r))
      continue;
    ms_scalar v = r->v.scalar * ((r->unit && !ms_resource_is_shared(r)) ? (ms_scalar)r->count : 1);
    const char *role = ms_resource_role(r);
    for (uint32_t q = 0; q < m->nquota; q++) {
      const alloc_role *X = &m->roles[m->quota_roles[q]];
      if (X->has_limit && ms_role_is_self_or_ancestor(X->name, role)) {
        /* Values here may go negative: keep them in a signed shadow via two sets. */
        ms_quantities *d = &delta[2 * q + (sign > 0 ? 0 : 1)];
        ms_quantities_set(d, r->name, ms_quantities_get(d, r->name) + v);
      }
    }
  }
}

int alloc_model_apply_operator(alloc_model *m, const char *agent_id, const ms_operation *op, ms_error **err) {
  uint32_t ai = agent_id ? alloc_map_get(&m->agent_ids, agent_id) : ALLOC_NONE;
  if (ai == ALLOC_NONE)
    return ms_error_set(err, MS_NOT_FOUND, "agent `%s` is not known", agent_id ? agent_id : "");
  alloc_agent *a = &m->agents[ai];
  ms_resources *avail = ms_resources_clone(a->available);
  if (ms_resources_apply(avail, op, err) < 0) {
    ms_resources_free(avail);
    return ms_error_prefix(err, "agent `%s`: %s on unallocated resources", agent_id,
                           ms_operation_type_name(op->type));
  }
  /* Reservations count toward quota: refuse one that would take a role past a limit. */
  ms_quantities *delta = ms_xcalloc(2 * (size_t)m->nquota + 1, sizeof(*delta));
  reserved_delta(m, avail, 1, delta);
  reserved_delta(m, a->available, -1, delta);
  int rc = 0;
  ms_quantities cons = {0};
  for (uint32_t q = 0; q < m->nquota && rc == 0; q++) {
    const alloc_role *X = &m->roles[m->quota_roles[q]];
    if (!X->has_limit)
      continue;
    alloc_role_consumption(X, &cons);
    for (uint32_t l = 0; l < X->nlimits && rc == 0; l++) {
      ms_name n = X->limits[l].name;
      ms_scalar after = ms_quantities_get(&cons, n) + ms_quantities_get(&delta[2 * q], n) -
                        ms_quantities_get(&delta[2 * q + 1], n);
      if (after > ms_quantities_get(&cons, n) && after > X->limits[l].value) {
        char b1[MS_SCALAR_BUFSZ], b2[MS_SCALAR_BUFSZ];
        rc = ms_error_set(err, MS_RESOURCE_EXHAUSTED,
                          "agent `%s`: %s would take role `%s` to %s %s, over its quota limit of %s",
                          agent_id, ms_operation_type_name(op->type), X->name, ms_scalar_format(after, b1),
                          ms_name_str(n), ms_scalar_format(X->limits[l].value, b2));
      }
    }
  }
  ms_quantities_release(&cons);
  for (uint32_t q = 0; q < 2 * m->nquota + 1; q++)
    ms_quantities_release(&delta[q]);
  free(delta);
  if (rc < 0) {
    ms_resources_free(avail);
    return MS_ERR;
  }
  ms_resources *total = ms_resources_clone(a->total);
  ms_resources_subtract(total, a->available, NULL);
  ms_resources_add(total, avail, NULL);
  alloc_agent_retotal(m, a, total);
  ms_resources_free(total);
  ms_resources_swap(a->available, avail);
  ms_resources_free(avail);
  m->trigger = true;
  return 0;
}

/* ---- minimum allocatable ---- */

void alloc_minalloc_release(alloc_minalloc *m) {
  free(m->terms);
  free(m->alt_end);
  *m = (alloc_minalloc){0};
}

static const char *trim(const char *s, const char *end, size_t *len) {
  while (s < end && (*s == ' ' || *s == '\t'))
    s++;
  while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
    end--;
  *len = (size_t)(end - s);
  return s;
}

int alloc_minalloc_parse(const char *text, alloc_minalloc *ret, ms_error **err) {
  alloc_minalloc out = {0};
  size_t len;
  const char *all = trim(text, text + strlen(text), &len);
  for (const char *p = all, *end = all + len; len && p <= end;) {
    const char *bar = memchr(p, '|', (size_t)(end - p));
    const char *alt_end = bar ? bar : end;
    size_t nterms_before = out.nterms;
    for (const char *t = p; t <= alt_end;) {
      const char *comma = memchr(t, ',', (size_t)(alt_end - t));
      const char *term_end = comma ? comma : alt_end;
      size_t tl;
      const char *term = trim(t, term_end, &tl);
      const char *colon = memchr(term, ':', tl);
      ms_name name;
      ms_scalar v;
      size_t nl, vl;
      const char *ns = colon ? trim(term, colon, &nl) : NULL;
      const char *vs = colon ? trim(colon + 1, term + tl, &vl) : NULL;
      if (!colon || nl == 0 || vl == 0 || ms_name_intern(ns, nl, &name, err) < 0 ||
          ms_scalar_parse(vs, vl, "minimum", &v, err) < 0) {
        if (!colon || nl == 0 || vl == 0)
          ms_error_set(err, MS_INVALID_ARGUMENT, "term `%.*s` is not `name:value`", (int)tl, term);
        alloc_minalloc_release(&out);
        return ms_error_prefix(err, "minimum allocatable `%s`", text);
      }
      out.terms = ms_xrealloc(out.terms, (out.nterms + 1) * sizeof(*out.terms));
      out.terms[out.nterms++] = (ms_quantity){name, v};
      t = term_end + 1;
    }
    if (out.nterms == nterms_before) {
      alloc_minalloc_release(&out);
      return ms_error_set(err, MS_INVALID_ARGUMENT, "minimum allocatable `%s`: an empty alternative", text);
    }
    out.alt_end = ms_xrealloc(out.alt_end, (out.nalts + 1) * sizeof(*out.alt_end));
    out.alt_end[out.nalts++] = out.nterms;
    p = alt_end + 1;
  }
  *ret = out;
  return 0;
}

static ms_scalar scalar_of(const ms_resources *set, ms_name name) {
  ms_scalar sum = 0;
  for (uint32_t i = 0; i < set->n; i++) {
    const ms_resource *r = &set->v[i];
    if (r->name == name && r->type == MS_VALUE_SCALAR)
      sum += r->v.scalar * ((r->unit && !ms_resource_is_shared(r)) ? (ms_scalar)r->count : 1);
    else if (r->name > name)
      break; /* sets are sorted by name */
  }
  return sum;
}

bool alloc_minalloc_ok(const alloc_minalloc *m, const ms_resources *set) {
  if (m->nalts == 0)
    return true;
  uint32_t start = 0;
  for (uint32_t a = 0; a < m->nalts; a++) {
    bool ok = true;
    for (uint32_t t = start; t < m->alt_end[a] && ok; t++)
      ok = scalar_of(set, m->terms[t].name) >= m->terms[t].value;
    if (ok)
      return true;
    start = m->alt_end[a];
  }
  return false;
}
