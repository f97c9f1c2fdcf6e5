/* Private to the resources module (lib/src/resources*.c): the metadata struct and the
 * helpers its files share. Nothing outside lib/src/resources*.c should include it.
 *
 * Ownership: an ms_rmeta is immutable once built and reference-counted (atomically,
 * so sets in different threads may share one); every string and array in it is owned
 * by it. An ms_resource owns its value and one reference to its meta. */
#pragma once

#include <stdarg.h>

#include "meseta/resources.h"

struct ms_rmeta {
  uint32_t refs;
  uint32_t hash; /* over every field: unequal hashes, unequal metas */
  uint32_t nres;
  bool shared, revocable;
  bool unit; /* shared, persistent, MOUNT / BLOCK, or RAW with an id */
  ms_reservation *res;
  const char *alloc_role;
  const char *provider_id;
  ms_disk_info *disk;
};

/* A deep copy of spec's metadata, NULL when it has none. Does not validate. */
const ms_rmeta *ms_rmeta_new(const ms_resource_spec *spec);
const ms_rmeta *ms_rmeta_ref(const ms_rmeta *m);
void ms_rmeta_unref(const ms_rmeta *m);
/* A total order; 0 exactly when equal. */
int ms_rmeta_cmp_slow(const ms_rmeta *a, const ms_rmeta *b);

static inline int ms_rmeta_cmp(const ms_rmeta *a, const ms_rmeta *b) {
  if (a == b)
    return 0;
  if (!a || !b)
    return a ? 1 : -1;
  if (a->hash != b->hash)
    return a->hash < b->hash ? -1 : 1;
  return ms_rmeta_cmp_slow(a, b);
}

/* Canonical order of entries: name, type, metadata, then the value of unit resources.
 * Entries with equal keys combine. */
static inline int ms_resource_key_cmp(const ms_resource *a, const ms_resource *b) {
  if (a->name != b->name)
    return a->name < b->name ? -1 : 1;
  if (a->type != b->type)
    return a->type < b->type ? -1 : 1;
  int c = ms_rmeta_cmp(a->meta, b->meta);
  if (c)
    return c;
  if (a->unit && a->v.scalar != b->v.scalar)
    return a->v.scalar < b->v.scalar ? -1 : 1;
  return 0;
}

int ms_resource_spec_validate(const ms_resource_spec *spec, ms_error **err);
/* Builds an entry from spec (value copied and normalized, name interned). */
int ms_resource_init(ms_resource *ret, const ms_resource_spec *spec, bool validate, ms_error **err);
void ms_resource_copy(ms_resource *dst, const ms_resource *src);
void ms_resource_release(ms_resource *r);
bool ms_resource_value_empty(const ms_resource *r);
/* Compares the values of two entries of the same type. */
bool ms_resource_value_equal(const ms_resource *a, const ms_resource *b);

/* Builds the entry spec describes with `count` copies: kept as a count when the result
 * is a unit resource, multiplied into the scalar otherwise. */
int ms_resource_rebuild(ms_resource *ret, const ms_resource_spec *spec, uint32_t count, bool validate,
                        ms_error **err);

/* Rewrites each entry of set through edit (which adjusts a view of it) into *ret, a
 * new normalized set (zero-initialized by the caller, filled only on success). */
typedef int (*ms_resource_edit)(const ms_resource *r, ms_resource_spec *spec, void *ctx, ms_error **err);
int ms_resources_map(const ms_resources *set, ms_resource_edit edit, void *ctx, bool validate,
                     ms_resources *ret, ms_error **err);

/* Appends r (its contents move into the set) without ordering it. */
void ms_resources_push_moved(ms_resources *set, ms_resource *r);
/* Sorts, combines equal keys, drops empty values; fails past MS_SCALAR_MAX. */
int ms_resources_normalize(ms_resources *set, ms_error **err);

/* Ends building a set: frees what was built (entries and array). */
void ms_resources_discard(ms_resources *building);
/* Ends building a set: normalizes it and moves it into a new set for *ret; on
 * failure discards it. Either way `building` is left empty. */
int ms_resources_finish(ms_resources *building, ms_resources **ret, ms_error **err);

/* A read-only one-entry set over r, for add / subtract / contains. */
static inline ms_resources ms_resources_view(const ms_resource *r) {
  return (ms_resources){(ms_resource *)r, 1, 0};
}

/* "resource `disk(eng)`" style label for messages about a spec. */
const char *ms_spec_label(const ms_resource_spec *spec, char *buf, size_t size);

/* A growable string for describe and the text form. */
typedef struct ms_rbuf {
  char *s;
  size_t n, cap;
} ms_rbuf;
void ms_rbuf_addn(ms_rbuf *b, const char *s, size_t n);
void ms_rbuf_add(ms_rbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hands the string over (never NULL). */
char *ms_rbuf_take(ms_rbuf *b);
void ms_rbuf_describe_value(ms_rbuf *b, const ms_resource *r, bool full);
