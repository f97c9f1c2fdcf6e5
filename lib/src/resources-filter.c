/* Filters, reservation refinement, allocation and scalar quantities. */
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/resources-internal.h"
#include "meseta/roles.h"

int ms_resource_rebuild(ms_resource *ret, const ms_resource_spec *spec, uint32_t count, bool validate,
                        ms_error **err) {
  ms_resource e;
  if (ms_resource_init(&e, spec, validate, err) < 0)
    return MS_ERR;
  if (e.unit) {
    e.count = count;
  } else if (count > 1 && e.type == MS_VALUE_SCALAR) {
    if (__builtin_mul_overflow(e.v.scalar, (ms_scalar)count, &e.v.scalar) || e.v.scalar > MS_SCALAR_MAX) {
      ms_resource_release(&e);
      return ms_error_set(err, MS_OUT_OF_RANGE, "resource `%s`: sum is above the limit", spec->name);
    }
  }
  *ret = e;
  return 0;
}

int ms_resources_map(const ms_resources *set, ms_resource_edit edit, void *ctx, bool validate,
                     ms_resources *ret, ms_error **err) {
  ms_resources out = {0};
  for (uint32_t i = 0; i < set->n; i++) {
    ms_resource_spec spec;
    ms_resource e;
    ms_resource_spec_of(&set->v[i], &spec);
    if (edit(&set->v[i], &spec, ctx, err) < 0 ||
        ms_resource_rebuild(&e, &spec, set->v[i].count, validate, err) < 0)
      goto fail;
    ms_resources_push_moved(&out, &e);
  }
  if (ms_resources_normalize(&out, err) < 0)
    goto fail;
  *ret = out;
  return 0;
fail:
  ms_resources_discard(&out);
  return MS_ERR;
}

/* ---- filters ---- */

ms_resources *ms_resources_filter(const ms_resources *set, ms_resource_pred pred, void *ctx) {
  ms_resources *out = ms_resources_new();
  for (uint32_t i = 0; i < set->n; i++) {
    if (!pred(&set->v[i], ctx))
      continue;
    /* Still canonical: a subsequence of a canonical array. */
    if (out->n == out->cap) {
      out->cap = out->cap ? out->cap * 2 : 8;
      out->v = ms_xrealloc(out->v, (size_t)out->cap * sizeof(*out->v));
    }
    ms_resource_copy(&out->v[out->n++], &set->v[i]);
  }
  return out;
}

static bool p_unreserved(const ms_resource *r, void *ctx) {
  return !ms_resource_is_reserved(r);
}
static bool p_reserved(const ms_resource *r, void *ctx) {
  return ms_resource_is_reserved(r) && (!ctx || strcmp(ms_resource_role(r), ctx) == 0);
}
static bool p_allocatable(const ms_resource *r, void *ctx) {
  return !ms_resource_is_reserved(r) || ms_role_is_self_or_ancestor(ms_resource_role(r), ctx);
}
static bool p_volume(const ms_resource *r, void *ctx) {
  return ms_resource_is_persistent_volume(r);
}
static bool p_revocable(const ms_resource *r, void *ctx) {
  return ms_resource_is_revocable(r) == (ctx != NULL);
}
static bool p_shared(const ms_resource *r, void *ctx) {
  return ms_resource_is_shared(r) == (ctx != NULL);
}
static bool p_named(const ms_resource *r, void *ctx) {
  return r->name == *(ms_name *)ctx;
}
static bool p_provider(const ms_resource *r, void *ctx) {
  const char *p = ms_resource_provider_id(r);
  return ctx ? p && strcmp(p, ctx) == 0 : p == NULL;
}
static bool p_allocated(const ms_resource *r, void *ctx) {
  const char *a = ms_resource_allocation_role(r);
  return a && (!ctx || strcmp(a, ctx) == 0);
}
static bool p_none(const ms_resource *r, void *ctx) {
  return false;
}

ms_resources *ms_resources_unreserved(const ms_resources *s) {
  return ms_resources_filter(s, p_unreserved, NULL);
}
ms_resources *ms_resources_reserved(const ms_resources *s, const char *role) {
  return ms_resources_filter(s, p_reserved, (void *)role);
}
ms_resources *ms_resources_allocatable_to(const ms_resources *s, const char *role) {
  return ms_resources_filter(s, p_allocatable, (void *)role);
}
ms_resources *ms_resources_persistent_volumes(const ms_resources *s) {
  return ms_resources_filter(s, p_volume, NULL);
}
ms_resources *ms_resources_revocable(const ms_resources *s) {
  return ms_resources_filter(s, p_revocable, (void *)1);
}
ms_resources *ms_resources_nonrevocable(const ms_resources *s) {
  return ms_resources_filter(s, p_revocable, NULL);
}
ms_resources *ms_resources_shared(const ms_resources *s) {
  return ms_resources_filter(s, p_shared, (void *)1);
}
ms_resources *ms_resources_nonshared(const ms_resources *s) {
  return ms_resources_filter(s, p_shared, NULL);
}
ms_resources *ms_resources_named(const ms_resources *s, const char *name) {
  ms_name id;
  if (!ms_name_lookup(name, &id))
    return ms_resources_filter(s, p_none, NULL);
  return ms_resources_filter(s, p_named, &id);
}
ms_resources *ms_resources_by_provider(const ms_resources *s, const char *id) {
  return ms_resources_filter(s, p_provider, (void *)id);
}
ms_resources *ms_resources_allocated(const ms_resources *s, const char *role) {
  return ms_resources_filter(s, p_allocated, (void *)role);
}

/* ---- rewriting every entry ---- */

static int e_unreserve_all(const ms_resource *r, ms_resource_spec *spec, void *ctx, ms_error **err) {
  spec->nreservations = 0;
  return 0;
}

ms_resources *ms_resources_to_unreserved(const ms_resources *set) {
  ms_resources tmp = {0};
  /* Without validation this cannot fail: the limits were checked when the set was built. */
  if (ms_resources_map(set, e_unreserve_all, NULL, false, &tmp, NULL) < 0)
    return ms_resources_new();
  ms_resources *out = ms_resources_new();
  *out = tmp;
  return out;
}

static int e_allocate(const ms_resource *r, ms_resource_spec *spec, void *ctx, ms_error **err) {
  spec->allocation_role = ctx;
  return 0;
}

static int replace_with(ms_resources *set, ms_resources *tmp) {
  ms_resources_swap(set, tmp);
  ms_resources_clear(tmp);
  free(tmp->v);
  return 0;
}

int ms_resources_allocate(ms_resources *set, const char *role, ms_error **err) {
  if (role && ms_role_validate(role, err) < 0)
    return ms_error_prefix(err, "allocate");
  ms_resources tmp = {0};
  if (ms_resources_map(set, e_allocate, (void *)role, false, &tmp, err) < 0)
    return MS_ERR;
  return replace_with(set, &tmp);
}

typedef struct push_ctx {
  const ms_reservation *push;
  ms_reservation stack[MS_RESERVATIONS_MAX + 1];
} push_ctx;

static int e_push(const ms_resource *r, ms_resource_spec *spec, void *vctx, ms_error **err) {
  push_ctx *ctx = vctx;
  if (spec->nreservations >= MS_RESERVATIONS_MAX) {
    _cleanup_free_ char *d = ms_resource_describe(r);
    return ms_error_set(err, MS_INVALID_ARGUMENT, "resource `%s`: already %d reservations deep", d,
                        MS_RESERVATIONS_MAX);
  }
  if (spec->nreservations)
    memcpy(ctx->stack, spec->reservations, spec->nreservations * sizeof(*ctx->stack));
  ctx->stack[spec->nreservations] = *ctx->push;
  spec->reservations = ctx->stack;
  spec->nreservations++;
  return 0;
}

int ms_resources_push_reservation(ms_resources *set, const ms_reservation *r, ms_error **err) {
  if (r->type != MS_RESERVATION_DYNAMIC)
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "push reservation: only DYNAMIC reservations refine others");
  push_ctx ctx = {.push = r};
  ms_resources tmp = {0};
  if (ms_resources_map(set, e_push, &ctx, true, &tmp, err) < 0)
    return ms_error_prefix(err, "push reservation");
  return replace_with(set, &tmp);
}

static int e_pop(const ms_resource *r, ms_resource_spec *spec, void *ctx, ms_error **err) {
  if (!spec->nreservations) {
    _cleanup_free_ char *d = ms_resource_describe(r);
    return ms_error_set(err, MS_INVALID_ARGUMENT, "resource `%s` is not reserved", d);
  }
  spec->nreservations--;
  return 0;
}

int ms_resources_pop_reservation(ms_resources *set, ms_error **err) {
  ms_resources tmp = {0};
  if (ms_resources_map(set, e_pop, NULL, true, &tmp, err) < 0)
    return ms_error_prefix(err, "pop reservation");
  return replace_with(set, &tmp);
}

/* ---- quantities ---- */

void ms_quantities_release(ms_quantities *q) {
  free(q->v);
  *q = (ms_quantities){0};
}

static uint32_t q_find(const ms_quantities *q, ms_name name) {
  uint32_t lo = 0, hi = q->n;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (q->v[mid].name < name)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

ms_scalar ms_quantities_get(const ms_quantities *q, ms_name name) {
  uint32_t i = q_find(q, name);
  return i < q->n && q->v[i].name == name ? q->v[i].value : 0;
}

void ms_quantities_set(ms_quantities *q, ms_name name, ms_scalar value) {
  uint32_t i = q_find(q, name);
  if (i < q->n && q->v[i].name == name) {
    if (value > 0) {
      q->v[i].value = value;
    } else {
      memmove(&q->v[i], &q->v[i + 1], (q->n - i - 1) * sizeof(*q->v));
      q->n--;
    }
    return;
  }
  if (value <= 0)
    return;
  if (q->n == q->cap) {
    q->cap = q->cap ? q->cap * 2 : 8;
    q->v = ms_xrealloc(q->v, (size_t)q->cap * sizeof(*q->v));
  }
  memmove(&q->v[i + 1], &q->v[i], (q->n - i) * sizeof(*q->v));
  q->v[i] = (ms_quantity){name, value};
  q->n++;
}

static ms_scalar sat_add(ms_scalar a, ms_scalar b) {
  ms_scalar s;
  return __builtin_add_overflow(a, b, &s) ? INT64_MAX : s;
}

void ms_quantities_of(ms_quantities *q, const ms_resources *set) {
  q->n = 0;
  /* The set is sorted by name: each name is one run. */
  for (uint32_t i = 0; i < set->n; i++) {
    const ms_resource *r = &set->v[i];
    if (r->type != MS_VALUE_SCALAR)
      continue;
    ms_scalar v = r->v.scalar;
    if (r->unit && !r->meta->shared && __builtin_mul_overflow(v, (ms_scalar)r->count, &v))
      v = INT64_MAX;
    if (q->n && q->v[q->n - 1].name == r->name) {
      q->v[q->n - 1].value = sat_add(q->v[q->n - 1].value, v);
      continue;
    }
    if (q->n == q->cap) {
      q->cap = q->cap ? q->cap * 2 : 8;
      q->v = ms_xrealloc(q->v, (size_t)q->cap * sizeof(*q->v));
    }
    q->v[q->n++] = (ms_quantity){r->name, v};
  }
}

void ms_quantities_add(ms_quantities *a, const ms_quantities *b) {
  for (uint32_t j = 0; j < b->n; j++)
    ms_quantities_set(a, b->v[j].name, sat_add(ms_quantities_get(a, b->v[j].name), b->v[j].value));
}

void ms_quantities_subtract(ms_quantities *a, const ms_quantities *b) {
  if (a == b) { /* removing entries while walking them would skip some */
    a->n = 0;
    return;
  }
  for (uint32_t j = 0; j < b->n; j++)
    ms_quantities_set(a, b->v[j].name, ms_quantities_get(a, b->v[j].name) - b->v[j].value);
}

bool ms_quantities_contains(const ms_quantities *a, const ms_quantities *b) {
  for (uint32_t j = 0; j < b->n; j++)
    if (ms_quantities_get(a, b->v[j].name) < b->v[j].value)
      return false;
  return true;
}

bool ms_quantities_equal(const ms_quantities *a, const ms_quantities *b) {
  return a->n == b->n && (a->n == 0 || memcmp(a->v, b->v, a->n * sizeof(*a->v)) == 0);
}

double ms_quantities_dominant_share(const ms_quantities *allocated, const ms_quantities *total) {
  double share = 0;
  for (uint32_t i = 0; i < allocated->n; i++) {
    ms_scalar t = ms_quantities_get(total, allocated->v[i].name);
    if (t > 0) {
      double s = (double)allocated->v[i].value / (double)t;
      if (s > share)
        share = s;
    }
  }
  return share;
}
