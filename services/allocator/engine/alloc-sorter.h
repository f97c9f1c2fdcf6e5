/* Ordering for the allocation cycle: dominant resource fairness (DRF) and a weighted
 * random order, applied per level of the role tree (a role's child roles, and the
 * frameworks inside one role).
 *
 * DRF keeps each level as an array sorted by (key, id), the key being the client's
 * dominant share divided by its weight. The cycle walks the array as it stands and
 * repositions only the clients whose allocation changed once an agent is done (one
 * binary search and one memmove each), so nothing is re-sorted per agent.
 * The random sorter draws a fresh order per walk: each client gets an exponential key
 * with rate = weight and the smallest key goes first, which makes the chance of coming
 * first proportional to the weight (Efraimidis–Spirakis sampling without replacement).
 *
 * Ownership: a level owns its array (alloc_level_release frees it). The other functions
 * only read their arguments except where they say `out`. Not thread-safe. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "meseta/resources.h"

typedef enum alloc_sorter_kind {
  ALLOC_SORTER_DRF = 0,
  ALLOC_SORTER_RANDOM = 1,
} alloc_sorter_kind;

/* Parses "drf" or "random"; MS_INVALID_ARGUMENT naming `what` otherwise. */
int alloc_sorter_parse(const char *text, const char *what, alloc_sorter_kind *ret, ms_error **err);

typedef struct alloc_slot {
  double key;
  uint32_t id;
} alloc_slot;

/* Ascending by (key, id): equal shares go to the lower id (the earlier client). */
typedef struct alloc_level {
  alloc_slot *v;
  uint32_t n, cap;
} alloc_level;

void alloc_level_release(alloc_level *l);
void alloc_level_insert(alloc_level *l, uint32_t id, double key);
/* Removes (key, id); false when it is not there. */
bool alloc_level_remove(alloc_level *l, uint32_t id, double key);
/* Moves (old_key, id) to where new_key belongs. */
void alloc_level_update(alloc_level *l, uint32_t id, double old_key, double new_key);
/* Re-sorts after keys were rewritten in place (the cluster total changed). */
void alloc_level_sort(alloc_level *l);

/* Names left out of fair sharing (e.g. gpus): a sorted array of interned ids. */
typedef struct alloc_names {
  ms_name *v;
  uint32_t n;
} alloc_names;

/* Parses "gpus,fpgas" (empty or NULL: none). Caller releases with alloc_names_release. */
int alloc_names_parse(const char *text, alloc_names *ret, ms_error **err);
void alloc_names_release(alloc_names *n);
bool alloc_names_has(const alloc_names *n, ms_name name);

/* max over names of allocated / total, leaving out `excluded` and names with no total. */
double alloc_drf_share(const ms_quantities *allocated, const ms_quantities *total,
                       const alloc_names *excluded);

/* xoshiro-style 64-bit generator; seed it with any value. */
typedef struct alloc_rng {
  uint64_t s;
} alloc_rng;

uint64_t alloc_rng_next(alloc_rng *r);
/* Uniform in (0, 1]. */
double alloc_rng_unit(alloc_rng *r);

/* Writes ids[0..n) into out in a random order where, at each position, a remaining id
 * comes next with probability weight / (sum of remaining weights). keys is scratch of
 * n slots. Weights must be > 0. */
void alloc_random_order(const uint32_t *ids, const double *weights, uint32_t n, alloc_rng *rng,
                        alloc_slot *keys, uint32_t *out);
