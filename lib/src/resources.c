/* Resource sets: canonical flat arrays; add, subtract, contains and equal are merges. */
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/resources-internal.h"

static void reserve(ms_resources *set, uint32_t n) {
  if (n <= set->cap)
    return;
  uint32_t cap = set->cap ? set->cap : 8;
  while (cap < n)
    cap *= 2;
  set->v = ms_xrealloc(set->v, (size_t)cap * sizeof(*set->v));
  set->cap = cap;
}

ms_resources *ms_resources_new(void) {
  return ms_xcalloc(1, sizeof(ms_resources));
}

void ms_resources_clear(ms_resources *set) {
  for (uint32_t i = 0; i < set->n; i++)
    ms_resource_release(&set->v[i]);
  set->n = 0;
}

void ms_resources_free(ms_resources *set) {
  if (!set)
    return;
  ms_resources_clear(set);
  free(set->v);
  free(set);
}

ms_resources *ms_resources_clone(const ms_resources *set) {
  ms_resources *c = ms_resources_new();
  reserve(c, set->n);
  for (uint32_t i = 0; i < set->n; i++)
    ms_resource_copy(&c->v[i], &set->v[i]);
  c->n = set->n;
  return c;
}

void ms_resources_swap(ms_resources *a, ms_resources *b) {
  ms_resources t = *a;
  *a = *b;
  *b = t;
}

size_t ms_resources_size(const ms_resources *set) {
  return set->n;
}
bool ms_resources_is_empty(const ms_resources *set) {
  return set->n == 0;
}
const ms_resource *ms_resources_at(const ms_resources *set, size_t i) {
  return i < set->n ? &set->v[i] : NULL;
}

void ms_resources_push_moved(ms_resources *set, ms_resource *r) {
  reserve(set, set->n + 1);
  set->v[set->n++] = *r;
  r->meta = NULL;
  memset(&r->v, 0, sizeof(r->v));
}

static int key_cmp_q(const void *a, const void *b) {
  return ms_resource_key_cmp(a, b);
}

static int scalar_sum(ms_scalar a, ms_scalar b, ms_scalar *ret, const ms_resource *r, ms_error **err) {
  ms_scalar s;
  if (__builtin_add_overflow(a, b, &s) || s > MS_SCALAR_MAX)
    return ms_error_set(err, MS_OUT_OF_RANGE, "resource `%s`: sum is above the limit of %lld",
                        ms_name_str(r->name), (long long)(MS_SCALAR_MAX / MS_SCALAR_UNIT));
  *ret = s;
  return 0;
}

static int count_sum(uint32_t a, uint32_t b, uint32_t *ret, const ms_resource *r, ms_error **err) {
  if (__builtin_add_overflow(a, b, ret))
    return ms_error_set(err, MS_OUT_OF_RANGE, "resource `%s`: too many copies", ms_name_str(r->name));
  return 0;
}

/* dst += src for entries with equal keys; checked already, cannot fail. */
static void combine(ms_resource *dst, const ms_resource *src) {
  if (dst->unit)
    dst->count += src->count;
  else if (dst->type == MS_VALUE_SCALAR)
    dst->v.scalar += src->v.scalar;
  else if (dst->type == MS_VALUE_RANGES)
    ms_ranges_union(&dst->v.ranges, &src->v.ranges);
  else if (dst->type == MS_VALUE_SET)
    ms_set_union(&dst->v.set, &src->v.set);
}

static int combine_check(const ms_resource *dst, const ms_resource *src, ms_error **err) {
  uint32_t c;
  ms_scalar s;
  if (dst->unit)
    return count_sum(dst->count, src->count, &c, dst, err);
  if (dst->type == MS_VALUE_SCALAR)
    return scalar_sum(dst->v.scalar, src->v.scalar, &s, dst, err);
  return 0;
}

int ms_resources_normalize(ms_resources *set, ms_error **err) {
  if (set->n > 1)
    qsort(set->v, set->n, sizeof(*set->v), key_cmp_q);
  /* Check every sum first so a failure leaves the set as it was (only reordered). */
  for (uint32_t head = 0; head < set->n;) {
    uint32_t j = head + 1;
    ms_resource acc = set->v[head];
    for (; j < set->n && ms_resource_key_cmp(&set->v[head], &set->v[j]) == 0; j++) {
      if (combine_check(&acc, &set->v[j], err) < 0)
        return MS_ERR;
      if (acc.unit)
        acc.count += set->v[j].count;
      else if (acc.type == MS_VALUE_SCALAR)
        acc.v.scalar += set->v[j].v.scalar;
    }
    head = j;
  }
  uint32_t out = 0;
  for (uint32_t i = 0; i < set->n; i++) {
    if (out > 0 && ms_resource_key_cmp(&set->v[out - 1], &set->v[i]) == 0) {
      combine(&set->v[out - 1], &set->v[i]);
      ms_resource_release(&set->v[i]);
    } else {
      set->v[out++] = set->v[i];
    }
  }
  set->n = out;
  out = 0;
  for (uint32_t i = 0; i < set->n; i++) {
    if (ms_resource_value_empty(&set->v[i]))
      ms_resource_release(&set->v[i]);
    else
      set->v[out++] = set->v[i];
  }
  set->n = out;
  return 0;
}

void ms_resources_discard(ms_resources *building) {
  ms_resources_clear(building);
  free(building->v);
  *building = (ms_resources){0};
}

int ms_resources_finish(ms_resources *building, ms_resources **ret, ms_error **err) {
  if (ms_resources_normalize(building, err) < 0) {
    ms_resources_discard(building);
    return MS_ERR;
  }
  *ret = ms_resources_new();
  **ret = *building;
  *building = (ms_resources){0};
  return 0;
}

int ms_resources_add_spec(ms_resources *set, const ms_resource_spec *spec, ms_error **err) {
  ms_resource r;
  if (ms_resource_init(&r, spec, true, err) < 0)
    return MS_ERR;
  if (ms_resource_value_empty(&r)) {
    ms_resource_release(&r);
    return 0;
  }
  ms_resources one = ms_resources_view(&r);
  int rc = ms_resources_add(set, &one, err);
  ms_resource_release(&r);
  return rc;
}

int ms_resources_add(ms_resources *a, const ms_resources *b, ms_error **err) {
  /* Pass 1: find how many of b's keys are new, check sums. */
  uint32_t i = 0, missing = 0;
  for (uint32_t j = 0; j < b->n; j++) {
    int c = 1;
    while (i < a->n && (c = ms_resource_key_cmp(&a->v[i], &b->v[j])) < 0)
      i++;
    if (i < a->n && c == 0) {
      if (combine_check(&a->v[i], &b->v[j], err) < 0)
        return MS_ERR;
    } else {
      missing++;
    }
  }
  if (missing == 0) { /* the allocator's common case: same shapes, in place */
    i = 0;
    for (uint32_t j = 0; j < b->n; j++) {
      while (ms_resource_key_cmp(&a->v[i], &b->v[j]) < 0)
        i++;
      combine(&a->v[i], &b->v[j]);
    }
    return 0;
  }
  uint32_t n = a->n + missing;
  ms_resource *out = ms_xmalloc((size_t)n * sizeof(*out));
  uint32_t k = 0, j = 0;
  i = 0;
  while (i < a->n || j < b->n) {
    int c = i == a->n ? 1 : j == b->n ? -1 : ms_resource_key_cmp(&a->v[i], &b->v[j]);
    if (c < 0) {
      out[k++] = a->v[i++];
    } else if (c > 0) {
      ms_resource_copy(&out[k++], &b->v[j++]);
    } else {
      combine(&a->v[i], &b->v[j++]);
      out[k++] = a->v[i++];
    }
  }
  free(a->v);
  a->v = out;
  a->n = a->cap = n;
  return 0;
}

/* Whether a's entry `have` (same key) holds all of `want`. */
static bool entry_contains(const ms_resource *have, const ms_resource *want) {
  if (have->unit)
    return have->count >= want->count;
  switch (have->type) {
  case MS_VALUE_SCALAR:
    return have->v.scalar >= want->v.scalar;
  case MS_VALUE_RANGES:
    return ms_ranges_contains(&have->v.ranges, &want->v.ranges);
  case MS_VALUE_SET:
    return ms_set_contains(&have->v.set, &want->v.set);
  default:
    return false;
  }
}

/* Index in a of the first entry of b that a lacks, or -1 when a contains b. */
static long first_missing(const ms_resources *a, const ms_resources *b) {
  uint32_t i = 0;
  for (uint32_t j = 0; j < b->n; j++) {
    int c = 1;
    while (i < a->n && (c = ms_resource_key_cmp(&a->v[i], &b->v[j])) < 0)
      i++;
    if (i == a->n || c != 0 || !entry_contains(&a->v[i], &b->v[j]))
      return (long)j;
  }
  return -1;
}

bool ms_resources_contains(const ms_resources *a, const ms_resources *b) {
  if (b->n > a->n)
    return false;
  return first_missing(a, b) < 0;
}

/* Explains why `want` is missing from a: atomic disks get their own rule. */
static int missing_error(const ms_resources *a, const ms_resource *want, ms_error **err) {
  _cleanup_free_ char *w = ms_resource_describe(want);
  if (want->unit && !(want->meta->shared)) {
    for (uint32_t i = 0; i < a->n; i++) {
      const ms_resource *h = &a->v[i];
      if (h->name == want->name && h->unit && ms_rmeta_cmp(h->meta, want->meta) == 0 &&
          h->v.scalar != want->v.scalar) {
        _cleanup_free_ char *hs = ms_resource_describe(h);
        return ms_error_set(
            err, MS_FAILED_PRECONDITION,
            "resource `%s` is not available: `%s` is atomic (a persistent volume or a MOUNT, BLOCK "
            "or identified RAW disk) and cannot be split",
            w, hs);
      }
    }
  }
  return ms_error_set(err, MS_FAILED_PRECONDITION, "resource `%s` is not available", w);
}

int ms_resources_subtract(ms_resources *a, const ms_resources *b, ms_error **err) {
  long miss = first_missing(a, b);
  if (miss >= 0)
    return missing_error(a, &b->v[miss], err);
  uint32_t i = 0;
  bool emptied = false;
  for (uint32_t j = 0; j < b->n; j++) {
    while (ms_resource_key_cmp(&a->v[i], &b->v[j]) < 0)
      i++;
    ms_resource *h = &a->v[i];
    const ms_resource *w = &b->v[j];
    if (h->unit) {
      h->count -= w->count;
      emptied |= h->count == 0;
      continue;
    }
    if (h->type == MS_VALUE_SCALAR)
      h->v.scalar -= w->v.scalar;
    else if (h->type == MS_VALUE_RANGES)
      ms_ranges_subtract(&h->v.ranges, &w->v.ranges);
    else
      ms_set_subtract(&h->v.set, &w->v.set);
    emptied |= ms_resource_value_empty(h);
  }
  if (emptied) {
    uint32_t out = 0;
    for (uint32_t k = 0; k < a->n; k++) {
      if ((a->v[k].unit && a->v[k].count == 0) || ms_resource_value_empty(&a->v[k]))
        ms_resource_release(&a->v[k]);
      else
        a->v[out++] = a->v[k];
    }
    a->n = out;
  }
  return 0;
}

bool ms_resources_equal(const ms_resources *a, const ms_resources *b) {
  if (a->n != b->n)
    return false;
  for (uint32_t i = 0; i < a->n; i++) {
    const ms_resource *x = &a->v[i], *y = &b->v[i];
    if (ms_resource_key_cmp(x, y) != 0 || x->count != y->count || !ms_resource_value_equal(x, y))
      return false;
  }
  return true;
}

ms_scalar ms_resources_scalar(const ms_resources *set, const char *name) {
  ms_name id;
  if (!ms_name_lookup(name, &id))
    return 0;
  ms_scalar sum = 0;
  for (uint32_t i = 0; i < set->n; i++) {
    const ms_resource *r = &set->v[i];
    if (r->name < id)
      continue;
    if (r->name > id)
      break;
    if (r->type != MS_VALUE_SCALAR)
      continue;
    ms_scalar v = r->v.scalar;
    if (r->unit && !r->meta->shared && __builtin_mul_overflow(v, (ms_scalar)r->count, &v))
      v = INT64_MAX;
    sum = __builtin_add_overflow(sum, v, &sum) ? INT64_MAX : sum;
  }
  return sum;
}
