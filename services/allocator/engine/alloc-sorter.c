/* DRF levels (sorted arrays updated in place) and the weighted random order. */
#include "alloc-sorter.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"

int alloc_sorter_parse(const char *text, const char *what, alloc_sorter_kind *ret, ms_error **err) {
  if (!text || strcmp(text, "drf") == 0)
    *ret = ALLOC_SORTER_DRF;
  else if (strcmp(text, "random") == 0)
    *ret = ALLOC_SORTER_RANDOM;
  else
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: unknown sorter `%s` (drf or random)", what, text);
  return 0;
}

static int slot_cmp(double ka, uint32_t ia, double kb, uint32_t ib) {
  if (ka != kb)
    return ka < kb ? -1 : 1;
  return ia < ib ? -1 : ia > ib;
}

/* First position whose slot is not below (key, id). */
static uint32_t lower_bound(const alloc_level *l, double key, uint32_t id) {
  uint32_t lo = 0, hi = l->n;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (slot_cmp(l->v[mid].key, l->v[mid].id, key, id) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

void alloc_level_release(alloc_level *l) {
  free(l->v);
  *l = (alloc_level){0};
}

void alloc_level_insert(alloc_level *l, uint32_t id, double key) {
  if (l->n == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 4;
    l->v = ms_xrealloc(l->v, (size_t)l->cap * sizeof(*l->v));
  }
  uint32_t at = lower_bound(l, key, id);
  memmove(&l->v[at + 1], &l->v[at], (size_t)(l->n - at) * sizeof(*l->v));
  l->v[at] = (alloc_slot){key, id};
  l->n++;
}

bool alloc_level_remove(alloc_level *l, uint32_t id, double key) {
  uint32_t at = lower_bound(l, key, id);
  if (at == l->n || l->v[at].id != id)
    return false;
  memmove(&l->v[at], &l->v[at + 1], (size_t)(l->n - at - 1) * sizeof(*l->v));
  l->n--;
  return true;
}

void alloc_level_update(alloc_level *l, uint32_t id, double old_key, double new_key) {
  uint32_t from = lower_bound(l, old_key, id);
  if (from == l->n || l->v[from].id != id)
    return;
  if (old_key == new_key)
    return;
  /* One shift of the slots between the old and the new place. */
  uint32_t to;
  if (new_key > old_key) {
    to = lower_bound(l, new_key, id) - 1; /* the slot itself still sits below */
    memmove(&l->v[from], &l->v[from + 1], (size_t)(to - from) * sizeof(*l->v));
  } else {
    to = lower_bound(l, new_key, id);
    memmove(&l->v[to + 1], &l->v[to], (size_t)(from - to) * sizeof(*l->v));
  }
  l->v[to] = (alloc_slot){new_key, id};
}

static int slot_qcmp(const void *a, const void *b) {
  const alloc_slot *x = a, *y = b;
  return slot_cmp(x->key, x->id, y->key, y->id);
}

void alloc_level_sort(alloc_level *l) {
  if (l->n > 1)
    qsort(l->v, l->n, sizeof(*l->v), slot_qcmp);
}

static int name_cmp(const void *a, const void *b) {
  ms_name x = *(const ms_name *)a, y = *(const ms_name *)b;
  return x < y ? -1 : x > y;
}

int alloc_names_parse(const char *text, alloc_names *ret, ms_error **err) {
  alloc_names out = {0};
  size_t cap = 0;
  for (const char *p = text; p && *p;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    ms_name id;
    if (ms_name_intern(p, len, &id, err) < 0) {
      alloc_names_release(&out);
      return ms_error_prefix(err, "fair sharing exclusions `%s`", text);
    }
    if (out.n == cap) {
      cap = cap ? cap * 2 : 4;
      out.v = ms_xrealloc(out.v, cap * sizeof(*out.v));
    }
    out.v[out.n++] = id;
    p = end ? end + 1 : p + len;
  }
  if (out.n)
    qsort(out.v, out.n, sizeof(*out.v), name_cmp);
  *ret = out;
  return 0;
}

void alloc_names_release(alloc_names *n) {
  free(n->v);
  *n = (alloc_names){0};
}

bool alloc_names_has(const alloc_names *n, ms_name name) {
  for (uint32_t i = 0; i < n->n; i++)
    if (n->v[i] == name)
      return true;
  return false;
}

double alloc_drf_share(const ms_quantities *allocated, const ms_quantities *total,
                       const alloc_names *excluded) {
  double best = 0;
  uint32_t j = 0;
  /* Both are sorted by name: one merge walk. */
  for (uint32_t i = 0; i < allocated->n; i++) {
    ms_name name = allocated->v[i].name;
    while (j < total->n && total->v[j].name < name)
      j++;
    if (j == total->n)
      break;
    if (total->v[j].name != name || total->v[j].value <= 0)
      continue;
    if (excluded && excluded->n && alloc_names_has(excluded, name))
      continue;
    double s = (double)allocated->v[i].value / (double)total->v[j].value;
    if (s > best)
      best = s;
  }
  return best;
}

uint64_t alloc_rng_next(alloc_rng *r) {
  /* splitmix64: tiny state, good enough spread for ordering clients. */
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double alloc_rng_unit(alloc_rng *r) {
  return ((double)(alloc_rng_next(r) >> 11) + 1.0) / 9007199254740992.0;
}

void alloc_random_order(const uint32_t *ids, const double *weights, uint32_t n, alloc_rng *rng,
                        alloc_slot *keys, uint32_t *out) {
  for (uint32_t i = 0; i < n; i++)
    keys[i] = (alloc_slot){-log(alloc_rng_unit(rng)) / weights[i], ids[i]};
  if (n > 1)
    qsort(keys, n, sizeof(*keys), slot_qcmp);
  for (uint32_t i = 0; i < n; i++)
    out[i] = keys[i].id;
}
