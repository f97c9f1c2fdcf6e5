/* String -> index map: FNV-1a hashes, linear probing, load factor at most 1/2. */
#include "alloc-map.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"

static uint32_t hash_str(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++)
    h = (h ^ (uint8_t)*s) * 16777619u;
  return h;
}

static uint32_t find(const alloc_map *m, const char *key, uint32_t h) {
  uint32_t mask = m->cap - 1;
  for (uint32_t i = h & mask;; i = (i + 1) & mask) {
    const alloc_map_slot *s = &m->v[i];
    if (!s->key || (s->hash == h && strcmp(s->key, key) == 0))
      return i;
  }
}

uint32_t alloc_map_get(const alloc_map *m, const char *key) {
  if (!m->cap)
    return ALLOC_NONE;
  const alloc_map_slot *s = &m->v[find(m, key, hash_str(key))];
  return s->key ? s->val : ALLOC_NONE;
}

static void grow(alloc_map *m) {
  alloc_map old = *m;
  m->cap = old.cap ? old.cap * 2 : 16;
  m->v = ms_xcalloc(m->cap, sizeof(*m->v));
  for (uint32_t i = 0; i < old.cap; i++)
    if (old.v[i].key)
      m->v[find(m, old.v[i].key, old.v[i].hash)] = old.v[i];
  free(old.v);
}

void alloc_map_put(alloc_map *m, const char *key, uint32_t val) {
  if ((m->n + 1) * 2 > m->cap)
    grow(m);
  uint32_t h = hash_str(key);
  alloc_map_slot *s = &m->v[find(m, key, h)];
  if (!s->key)
    m->n++;
  *s = (alloc_map_slot){key, h, val};
}

void alloc_map_del(alloc_map *m, const char *key) {
  if (!m->cap)
    return;
  uint32_t mask = m->cap - 1;
  uint32_t i = find(m, key, hash_str(key));
  if (!m->v[i].key)
    return;
  m->n--;
  /* Backward shift: pull later members of the probe run into the hole when their home
   * slot does not lie between the hole and them. */
  for (uint32_t j = (i + 1) & mask; m->v[j].key; j = (j + 1) & mask) {
    uint32_t home = m->v[j].hash & mask;
    bool movable = i <= j ? (home <= i || home > j) : (home <= i && home > j);
    if (movable) {
      m->v[i] = m->v[j];
      i = j;
    }
  }
  m->v[i].key = NULL;
}

void alloc_map_release(alloc_map *m) {
  free(m->v);
  *m = (alloc_map){0};
}
