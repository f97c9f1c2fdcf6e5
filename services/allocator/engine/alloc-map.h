/* A string -> dense index hash map for the allocator's ids (agents, frameworks, roles,
 * offers): open addressing with linear probing and backward-shift deletion, so lookups
 * never walk tombstones however many ids come and go.
 *
 * Ownership: the map borrows its keys; each key must stay valid and unchanged until it
 * is deleted or the map released (the model points them at the entity's own id).
 * alloc_map_release frees the table only. Not thread-safe. */
#pragma once

#include <stdint.h>

#define ALLOC_NONE UINT32_MAX

typedef struct alloc_map_slot {
  const char *key; /* NULL: empty */
  uint32_t hash;
  uint32_t val;
} alloc_map_slot;

typedef struct alloc_map {
  alloc_map_slot *v;
  uint32_t cap, n; /* cap: a power of two, or 0 */
} alloc_map;

/* The value for key, or ALLOC_NONE. */
uint32_t alloc_map_get(const alloc_map *m, const char *key);
/* Inserts or replaces. */
void alloc_map_put(alloc_map *m, const char *key, uint32_t val);
/* Removes key if present. */
void alloc_map_del(alloc_map *m, const char *key);
void alloc_map_release(alloc_map *m);
