/* Resource names, metadata (build, hash, compare), validation and descriptions. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/resources-internal.h"
#include "meseta/roles.h"

/* ---- interned names ---- */

#define NAME_CHUNK 256u
#define NAME_SLOTS (MS_NAME_MAX_COUNT * 2u)

static const char *const well_known[] = {"cpus", "mem", "disk", "ports", "gpus"};
/* Readers index chunks without the lock: chunks never move, and name_count is
 * published (release) after the entry is written. */
static const char **name_chunks[MS_NAME_MAX_COUNT / NAME_CHUNK];
static uint32_t name_count;
static uint32_t name_slots[NAME_SLOTS]; /* id + 1; 0 is empty */
static pthread_mutex_t name_lock = PTHREAD_MUTEX_INITIALIZER;
/* Set while this thread parses a client's input (ms_names_untrusted): find, never add. */
static _Thread_local bool names_untrusted;

static uint32_t fnv(uint32_t h, const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++)
    h = (h ^ s[i]) * 16777619u;
  return h;
}
#define FNV_SEED 2166136261u

static void name_insert_locked(const char *s, size_t len, uint32_t id) {
  uint32_t i = fnv(FNV_SEED, s, len) & (NAME_SLOTS - 1);
  while (name_slots[i])
    i = (i + 1) & (NAME_SLOTS - 1);
  if (!name_chunks[id / NAME_CHUNK])
    name_chunks[id / NAME_CHUNK] = ms_xcalloc(NAME_CHUNK, sizeof(char *));
  name_chunks[id / NAME_CHUNK][id % NAME_CHUNK] =
      id < MS_ARRAY_SIZE(well_known) ? well_known[id] : ms_xstrndup(s, len);
  name_slots[i] = id + 1;
  __atomic_store_n(&name_count, id + 1, __ATOMIC_RELEASE);
}

static void names_init_locked(void) {
  if (name_count)
    return;
  for (uint32_t id = 0; id < MS_ARRAY_SIZE(well_known); id++)
    name_insert_locked(well_known[id], strlen(well_known[id]), id);
}

static bool name_find_locked(const char *s, size_t len, ms_name *ret) {
  uint32_t i = fnv(FNV_SEED, s, len) & (NAME_SLOTS - 1);
  for (; name_slots[i]; i = (i + 1) & (NAME_SLOTS - 1)) {
    uint32_t id = name_slots[i] - 1;
    const char *have = name_chunks[id / NAME_CHUNK][id % NAME_CHUNK];
    if (strncmp(have, s, len) == 0 && have[len] == '\0') {
      *ret = id;
      return true;
    }
  }
  return false;
}

static bool well_known_find(const char *s, size_t len, ms_name *ret) {
  for (uint32_t id = 0; id < MS_ARRAY_SIZE(well_known); id++)
    if (strncmp(well_known[id], s, len) == 0 && well_known[id][len] == '\0') {
      *ret = id;
      return true;
    }
  return false;
}

static bool name_char_ok(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c == '-' || c == '/' || c == '+';
}

int ms_name_intern(const char *name, size_t len, ms_name *ret, ms_error **err) {
  char q[64];
  if (len >= 3 && len <= 5 && well_known_find(name, len, ret))
    return 0;
  if (len == 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "resource name must not be empty");
  if (len > MS_NAME_MAX_LEN)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "resource name `%s` is longer than %d bytes",
                        ms_value_quote(strndupa(name, 40), q, sizeof(q)), MS_NAME_MAX_LEN);
  for (size_t i = 0; i < len; i++)
    if (!name_char_ok(name[i]))
      return ms_error_set(
          err, MS_INVALID_ARGUMENT,
          "resource name `%s`: byte 0x%02x at offset %zu is not a letter, digit or one of `_.-/+`",
          ms_value_quote(strndupa(name, len < 60 ? len : 60), q, sizeof(q)), (unsigned char)name[i], i);
  pthread_mutex_lock(&name_lock);
  names_init_locked();
  int rc = 0;
  if (!name_find_locked(name, len, ret)) {
    if (names_untrusted)
      rc = ms_error_set(err, MS_INVALID_ARGUMENT,
                        "resource name `%s` is not known to the cluster (no agent advertises it)",
                        ms_value_quote(strndupa(name, len), q, sizeof(q)));
    else if (name_count >= MS_NAME_MAX_COUNT)
      rc = ms_error_set(err, MS_RESOURCE_EXHAUSTED, "resource name `%s`: already %u distinct names",
                        ms_value_quote(strndupa(name, len), q, sizeof(q)), MS_NAME_MAX_COUNT);
    else
      *ret = name_count, name_insert_locked(name, len, name_count);
  }
  pthread_mutex_unlock(&name_lock);
  return rc;
}

bool ms_names_untrusted(bool on) {
  bool was = names_untrusted;
  names_untrusted = on;
  return was;
}

bool ms_name_lookup(const char *name, ms_name *ret) {
  size_t len = strlen(name);
  if (well_known_find(name, len, ret))
    return true;
  pthread_mutex_lock(&name_lock);
  names_init_locked();
  bool found = name_find_locked(name, len, ret);
  pthread_mutex_unlock(&name_lock);
  return found;
}

const char *ms_name_str(ms_name id) {
  if (id < MS_ARRAY_SIZE(well_known))
    return well_known[id];
  if (id >= __atomic_load_n(&name_count, __ATOMIC_ACQUIRE))
    return "?";
  return name_chunks[id / NAME_CHUNK][id % NAME_CHUNK];
}

/* ---- metadata ---- */

static const char *opt(const char *s) {
  return s && *s ? s : NULL;
}
static char *dup_opt(const char *s) {
  return s && *s ? ms_xstrdup(s) : NULL;
}

static int scmp(const char *a, const char *b) {
  if (a == b)
    return 0;
  if (!a || !b)
    return a ? 1 : -1;
  return strcmp(a, b);
}

static int label_cmp(const void *x, const void *y) {
  const ms_label *a = x, *b = y;
  int c = strcmp(a->key, b->key);
  return c ? c : scmp(a->value, b->value);
}

/* Labels compare as multisets (as Mesos' Labels): kept sorted. */
static ms_label *labels_dup(const ms_label *src, uint32_t n) {
  if (!n)
    return NULL;
  ms_label *out = ms_xcalloc(n, sizeof(*out));
  for (uint32_t i = 0; i < n; i++)
    out[i] = (ms_label){ms_xstrdup(src[i].key ? src[i].key : ""), dup_opt(src[i].value)};
  qsort(out, n, sizeof(*out), label_cmp);
  return out;
}

static void labels_free(const ms_label *l, uint32_t n) {
  for (uint32_t i = 0; i < n; i++) {
    free((char *)l[i].key);
    free((char *)l[i].value);
  }
  free((ms_label *)l);
}

static int labels_cmp(const ms_label *a, uint32_t na, const ms_label *b, uint32_t nb) {
  if (na != nb)
    return na < nb ? -1 : 1;
  for (uint32_t i = 0; i < na; i++) {
    int c = label_cmp(&a[i], &b[i]);
    if (c)
      return c;
  }
  return 0;
}

static uint32_t hash_str(uint32_t h, const char *s) {
  if (!s)
    return fnv(h, "\xff", 1);
  return fnv(h, s, strlen(s) + 1);
}

static uint32_t hash_labels(uint32_t h, const ms_label *l, uint32_t n) {
  h = fnv(h, &n, sizeof(n));
  for (uint32_t i = 0; i < n; i++)
    h = hash_str(hash_str(h, l[i].key), l[i].value);
  return h;
}

static bool disk_is_unit(const ms_disk_info *d) {
  return d->persistence_id || d->source == MS_DISK_SOURCE_MOUNT || d->source == MS_DISK_SOURCE_BLOCK ||
         (d->source == MS_DISK_SOURCE_RAW && d->source_id);
}

const ms_rmeta *ms_rmeta_new(const ms_resource_spec *spec) {
  if (!spec->nreservations && !opt(spec->allocation_role) && !spec->disk && !spec->shared &&
      !spec->revocable && !opt(spec->provider_id))
    return NULL;
  struct ms_rmeta *m = ms_xcalloc(1, sizeof(*m));
  m->refs = 1;
  m->nres = spec->nreservations;
  m->shared = spec->shared;
  m->revocable = spec->revocable;
  m->alloc_role = dup_opt(spec->allocation_role);
  m->provider_id = dup_opt(spec->provider_id);
  if (m->nres) {
    m->res = ms_xcalloc(m->nres, sizeof(*m->res));
    for (uint32_t i = 0; i < m->nres; i++) {
      const ms_reservation *r = &spec->reservations[i];
      m->res[i] = (ms_reservation){r->type, ms_xstrdup(r->role ? r->role : ""), dup_opt(r->principal),
                                   labels_dup(r->labels, r->nlabels), r->nlabels};
    }
  }
  if (spec->disk) {
    const ms_disk_info *d = spec->disk;
    ms_disk_info *c = ms_xcalloc(1, sizeof(*c));
    *c = (ms_disk_info){dup_opt(d->persistence_id),
                        dup_opt(d->persistence_principal),
                        dup_opt(d->container_path),
                        d->mode == MS_VOLUME_RO ? MS_VOLUME_RO : MS_VOLUME_RW,
                        d->source,
                        dup_opt(d->root),
                        dup_opt(d->source_id),
                        dup_opt(d->profile),
                        dup_opt(d->vendor),
                        labels_dup(d->metadata, d->nmetadata),
                        d->nmetadata};
    if (!c->container_path)
      c->mode = MS_VOLUME_MODE_UNSET;
    m->disk = c;
  }
  m->unit = m->shared || (m->disk && disk_is_unit(m->disk));

  uint32_t h = FNV_SEED;
  uint8_t flags = (uint8_t)(m->shared | m->revocable << 1 | (m->disk != NULL) << 2);
  h = fnv(h, &flags, 1);
  h = fnv(h, &m->nres, sizeof(m->nres));
  for (uint32_t i = 0; i < m->nres; i++) {
    h = fnv(h, &m->res[i].type, sizeof(m->res[i].type));
    h = hash_labels(hash_str(hash_str(h, m->res[i].role), m->res[i].principal), m->res[i].labels,
                    m->res[i].nlabels);
  }
  h = hash_str(hash_str(h, m->alloc_role), m->provider_id);
  if (m->disk) {
    const ms_disk_info *d = m->disk;
    h = hash_str(hash_str(hash_str(h, d->persistence_id), d->persistence_principal), d->container_path);
    h = fnv(fnv(h, &d->mode, sizeof(d->mode)), &d->source, sizeof(d->source));
    h = hash_str(hash_str(hash_str(hash_str(h, d->root), d->source_id), d->profile), d->vendor);
    h = hash_labels(h, d->metadata, d->nmetadata);
  }
  m->hash = h;
  return m;
}

const ms_rmeta *ms_rmeta_ref(const ms_rmeta *m) {
  if (m)
    __atomic_add_fetch(&((struct ms_rmeta *)m)->refs, 1, __ATOMIC_RELAXED);
  return m;
}

void ms_rmeta_unref(const ms_rmeta *cm) {
  struct ms_rmeta *m = (struct ms_rmeta *)cm;
  if (!m || __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  for (uint32_t i = 0; i < m->nres; i++) {
    free((char *)m->res[i].role);
    free((char *)m->res[i].principal);
    labels_free(m->res[i].labels, m->res[i].nlabels);
  }
  free(m->res);
  free((char *)m->alloc_role);
  free((char *)m->provider_id);
  if (m->disk) {
    ms_disk_info *d = m->disk;
    const char *strs[] = {
        d->persistence_id, d->persistence_principal, d->container_path, d->root, d->source_id, d->profile,
        d->vendor};
    for (size_t i = 0; i < MS_ARRAY_SIZE(strs); i++)
      free((char *)strs[i]);
    labels_free(d->metadata, d->nmetadata);
    free(d);
  }
  free(m);
}

static int disk_cmp(const ms_disk_info *a, const ms_disk_info *b) {
  if (!a || !b)
    return a == b ? 0 : a ? 1 : -1;
  int c;
  if ((c = scmp(a->persistence_id, b->persistence_id)) ||
      (c = scmp(a->persistence_principal, b->persistence_principal)) ||
      (c = scmp(a->container_path, b->container_path)))
    return c;
  if (a->mode != b->mode)
    return a->mode < b->mode ? -1 : 1;
  if (a->source != b->source)
    return a->source < b->source ? -1 : 1;
  if ((c = scmp(a->root, b->root)) || (c = scmp(a->source_id, b->source_id)) ||
      (c = scmp(a->profile, b->profile)) || (c = scmp(a->vendor, b->vendor)))
    return c;
  return labels_cmp(a->metadata, a->nmetadata, b->metadata, b->nmetadata);
}

int ms_rmeta_cmp_slow(const ms_rmeta *a, const ms_rmeta *b) {
  int c;
  if (a->shared != b->shared)
    return a->shared ? 1 : -1;
  if (a->revocable != b->revocable)
    return a->revocable ? 1 : -1;
  if (a->nres != b->nres)
    return a->nres < b->nres ? -1 : 1;
  for (uint32_t i = 0; i < a->nres; i++) {
    const ms_reservation *x = &a->res[i], *y = &b->res[i];
    if (x->type != y->type)
      return x->type < y->type ? -1 : 1;
    if ((c = strcmp(x->role, y->role)) || (c = scmp(x->principal, y->principal)) ||
        (c = labels_cmp(x->labels, x->nlabels, y->labels, y->nlabels)))
      return c;
  }
  if ((c = scmp(a->alloc_role, b->alloc_role)) || (c = scmp(a->provider_id, b->provider_id)))
    return c;
  return disk_cmp(a->disk, b->disk);
}

/* ---- validation ---- */

const char *ms_spec_label(const ms_resource_spec *spec, char *buf, size_t size) {
  char n[48], r[64];
  const char *role = spec->nreservations ? spec->reservations[spec->nreservations - 1].role : "*";
  snprintf(buf, size, "resource `%s(%s)`", ms_value_quote(spec->name, n, sizeof(n)),
           ms_value_quote(role, r, sizeof(r)));
  return buf;
}

static int check_str(const char *label, const char *field, const char *s, bool required, ms_error **err) {
  if (!s || !*s)
    return required ? ms_error_set(err, MS_INVALID_ARGUMENT, "%s: %s must not be empty", label, field) : 0;
  size_t len = strnlen(s, MS_STRING_MAX_LEN + 1);
  if (len > MS_STRING_MAX_LEN)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: %s is longer than %d bytes", label, field,
                        MS_STRING_MAX_LEN);
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: %s has control byte 0x%02x at offset %zu", label,
                          field, (unsigned char)s[i], i);
  if (!ms_utf8_valid(s, len))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: %s is not valid UTF-8", label, field);
  return 0;
}

static int check_labels(const char *label, const char *field, const ms_label *l, uint32_t n, ms_error **err) {
  char f[96];
  for (uint32_t i = 0; i < n; i++) {
    snprintf(f, sizeof(f), "%s key", field);
    if (check_str(label, f, l[i].key, true, err) < 0)
      return MS_ERR;
    snprintf(f, sizeof(f), "%s value", field);
    if (check_str(label, f, l[i].value, false, err) < 0)
      return MS_ERR;
  }
  return 0;
}

/* Persistence ids name directories: no slashes, no dot names, no whitespace. */
static int check_id(const char *label, const char *field, const char *s, ms_error **err) {
  char q[64];
  if (check_str(label, field, s, true, err) < 0)
    return MS_ERR;
  if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0 || strpbrk(s, "/\\ "))
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "%s: %s `%s` must not be `.`, `..` or hold `/`, `\\` or spaces", label, field,
                        ms_value_quote(s, q, sizeof(q)));
  return 0;
}

static int check_container_path(const char *label, const char *p, ms_error **err) {
  char q[64];
  if (check_str(label, "volume container path", p, true, err) < 0)
    return MS_ERR;
  if (p[0] == '/')
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: volume container path `%s` must be relative", label,
                        ms_value_quote(p, q, sizeof(q)));
  for (const char *c = p; c; c = strchr(c, '/'), c = c ? c + 1 : NULL)
    if (strncmp(c, "..", 2) == 0 && (c[2] == '/' || c[2] == '\0'))
      return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: volume container path `%s` must not hold `..`",
                          label, ms_value_quote(p, q, sizeof(q)));
  return 0;
}

static int validate_disk(const char *label, const ms_resource_spec *spec, ms_error **err) {
  const ms_disk_info *d = spec->disk;
  if (spec->name && strcmp(spec->name, "disk") != 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: only `disk` resources carry disk info", label);
  if (opt(d->persistence_id)) {
    if (check_id(label, "persistence id", d->persistence_id, err) < 0 ||
        check_str(label, "persistence principal", d->persistence_principal, false, err) < 0 ||
        check_container_path(label, d->container_path, err) < 0)
      return MS_ERR;
    if (!spec->nreservations)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: persistent volume `%s` must be reserved", label,
                          d->persistence_id);
    if (spec->revocable)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: persistent volume `%s` cannot be revocable", label,
                          d->persistence_id);
  } else if (opt(d->container_path) || opt(d->persistence_principal)) {
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: a volume without persistence is not supported", label);
  }
  if (d->mode != MS_VOLUME_MODE_UNSET && d->mode != MS_VOLUME_RW && d->mode != MS_VOLUME_RO)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: unknown volume mode %d", label, (int)d->mode);
  if (d->source == MS_DISK_SOURCE_NONE) {
    if (opt(d->root) || opt(d->source_id) || opt(d->profile) || opt(d->vendor) || d->nmetadata)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: disk source fields set without a source type",
                          label);
    return 0;
  }
  if (d->source < MS_DISK_SOURCE_PATH || d->source > MS_DISK_SOURCE_RAW)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: unknown disk source type %d", label, (int)d->source);
  if ((d->source == MS_DISK_SOURCE_BLOCK || d->source == MS_DISK_SOURCE_RAW) && opt(d->root))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: BLOCK and RAW disk sources have no root path", label);
  if (opt(d->source_id) && check_id(label, "disk source id", d->source_id, err) < 0)
    return MS_ERR;
  if (check_str(label, "disk source root", d->root, false, err) < 0 ||
      check_str(label, "disk profile", d->profile, false, err) < 0 ||
      check_str(label, "disk vendor", d->vendor, false, err) < 0 ||
      check_labels(label, "disk metadata", d->metadata, d->nmetadata, err) < 0)
    return MS_ERR;
  return 0;
}

static int validate_value(const char *label, const ms_resource_spec *spec, ms_error **err) {
  switch (spec->type) {
  case MS_VALUE_SCALAR:
    if (spec->scalar < 0 || spec->scalar > MS_SCALAR_MAX)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: scalar value out of range", label);
    return 0;
  case MS_VALUE_RANGES:
    for (uint32_t i = 0; i < spec->ranges.n; i++)
      if (spec->ranges.v[i].begin > spec->ranges.v[i].end)
        return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: range [%llu-%llu] begins after it ends", label,
                            (unsigned long long)spec->ranges.v[i].begin,
                            (unsigned long long)spec->ranges.v[i].end);
    return 0;
  case MS_VALUE_SET:
    for (uint32_t i = 0; i < spec->set.n; i++)
      if (check_str(label, "set item", spec->set.v[i], true, err) < 0)
        return MS_ERR;
    return 0;
  case MS_VALUE_TEXT:
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: type TEXT is for attributes, not resources", label);
  default:
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: unknown value type %d", label, (int)spec->type);
  }
}

static int validate_reservations(const char *label, const ms_resource_spec *spec, ms_error **err) {
  if (spec->nreservations > MS_RESERVATIONS_MAX)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: more than %d reservations", label,
                        MS_RESERVATIONS_MAX);
  for (uint32_t i = 0; i < spec->nreservations; i++) {
    const ms_reservation *r = &spec->reservations[i];
    char field[64];
    if (r->type != MS_RESERVATION_STATIC && r->type != MS_RESERVATION_DYNAMIC)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: reservation %u has no type (STATIC or DYNAMIC)",
                          label, i);
    if (i > 0 && r->type == MS_RESERVATION_STATIC)
      return ms_error_set(err, MS_INVALID_ARGUMENT,
                          "%s: reservation %u is STATIC; only the first reservation may be", label, i);
    if (ms_role_validate(r->role, err) < 0)
      return ms_error_prefix(err, "%s: reservation %u", label, i);
    if (strcmp(r->role, "*") == 0)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: reservation %u: cannot reserve to role `*`", label,
                          i);
    if (i > 0 && !ms_role_is_ancestor(spec->reservations[i - 1].role, r->role)) {
      char a[64], b[64];
      return ms_error_set(
          err, MS_INVALID_ARGUMENT,
          "%s: reservation %u to `%s` does not refine `%s` (each role must be a descendant of the "
          "one below)",
          label, i, ms_value_quote(r->role, a, sizeof(a)),
          ms_value_quote(spec->reservations[i - 1].role, b, sizeof(b)));
    }
    snprintf(field, sizeof(field), "reservation %u principal", i);
    if (check_str(label, field, r->principal, false, err) < 0)
      return MS_ERR;
    snprintf(field, sizeof(field), "reservation %u label", i);
    if (check_labels(label, field, r->labels, r->nlabels, err) < 0)
      return MS_ERR;
  }
  return 0;
}

int ms_resource_spec_validate(const ms_resource_spec *spec, ms_error **err) {
  char label[160];
  ms_name id;
  if (!spec->name || ms_name_intern(spec->name, strlen(spec->name), &id, err) < 0)
    return spec->name ? MS_ERR : ms_error_set(err, MS_INVALID_ARGUMENT, "resource name must not be empty");
  ms_spec_label(spec, label, sizeof(label));
  if (validate_value(label, spec, err) < 0)
    return MS_ERR;
  ms_value_type want = id == MS_NAME_PORTS  ? MS_VALUE_RANGES
                       : id <= MS_NAME_GPUS ? MS_VALUE_SCALAR
                                            : spec->type;
  if (spec->type != want)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: must be %s, not %s", label, ms_value_type_name(want),
                        ms_value_type_name(spec->type));
  if (validate_reservations(label, spec, err) < 0)
    return MS_ERR;
  if (spec->allocation_role && *spec->allocation_role && ms_role_validate(spec->allocation_role, err) < 0)
    return ms_error_prefix(err, "%s: allocation", label);
  if (check_str(label, "provider id", spec->provider_id, false, err) < 0)
    return MS_ERR;
  if (spec->disk && validate_disk(label, spec, err) < 0)
    return MS_ERR;
  if (spec->shared && !(spec->disk && opt(spec->disk->persistence_id)))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: only persistent volumes can be shared", label);
  return 0;
}

/* ---- entries ---- */

int ms_resource_init(ms_resource *ret, const ms_resource_spec *spec, bool validate, ms_error **err) {
  char label[160];
  if (validate && ms_resource_spec_validate(spec, err) < 0)
    return MS_ERR;
  ms_resource r = {.type = (uint8_t)spec->type, .count = 1};
  if (ms_name_intern(spec->name, strlen(spec->name), &r.name, err) < 0)
    return MS_ERR;
  if (spec->type == MS_VALUE_SCALAR) {
    r.v.scalar = spec->scalar;
  } else if (spec->type == MS_VALUE_RANGES) {
    ms_ranges_copy(&r.v.ranges, &spec->ranges);
    ms_ranges_normalize(&r.v.ranges);
  } else {
    ms_set_copy(&r.v.set, &spec->set);
    if (ms_set_normalize(&r.v.set, ms_spec_label(spec, label, sizeof(label)), err) < 0) {
      ms_set_release(&r.v.set);
      return MS_ERR;
    }
  }
  r.meta = ms_rmeta_new(spec);
  r.unit = r.meta && r.meta->unit;
  *ret = r;
  return 0;
}

void ms_resource_copy(ms_resource *dst, const ms_resource *src) {
  *dst = *src;
  ms_rmeta_ref(src->meta);
  if (src->type == MS_VALUE_RANGES)
    ms_ranges_copy(&dst->v.ranges, &src->v.ranges);
  else if (src->type == MS_VALUE_SET)
    ms_set_copy(&dst->v.set, &src->v.set);
}

void ms_resource_release(ms_resource *r) {
  if (r->type == MS_VALUE_RANGES)
    ms_ranges_release(&r->v.ranges);
  else if (r->type == MS_VALUE_SET)
    ms_set_release(&r->v.set);
  ms_rmeta_unref(r->meta);
  r->meta = NULL;
}

bool ms_resource_value_empty(const ms_resource *r) {
  switch (r->type) {
  case MS_VALUE_SCALAR:
    return r->v.scalar == 0;
  case MS_VALUE_RANGES:
    return r->v.ranges.n == 0;
  case MS_VALUE_SET:
    return r->v.set.n == 0;
  default:
    return true;
  }
}

bool ms_resource_value_equal(const ms_resource *a, const ms_resource *b) {
  switch (a->type) {
  case MS_VALUE_SCALAR:
    return a->v.scalar == b->v.scalar;
  case MS_VALUE_RANGES:
    return ms_ranges_equal(&a->v.ranges, &b->v.ranges);
  case MS_VALUE_SET:
    return ms_set_equal(&a->v.set, &b->v.set);
  default:
    return true;
  }
}

/* ---- accessors ---- */

const char *ms_resource_name(const ms_resource *r) {
  return ms_name_str(r->name);
}
const char *ms_resource_role(const ms_resource *r) {
  return r->meta && r->meta->nres ? r->meta->res[r->meta->nres - 1].role : "*";
}
uint32_t ms_resource_nreservations(const ms_resource *r) {
  return r->meta ? r->meta->nres : 0;
}
const ms_reservation *ms_resource_reservation(const ms_resource *r, uint32_t i) {
  return r->meta && i < r->meta->nres ? &r->meta->res[i] : NULL;
}
const ms_disk_info *ms_resource_disk(const ms_resource *r) {
  return r->meta ? r->meta->disk : NULL;
}
const char *ms_resource_allocation_role(const ms_resource *r) {
  return r->meta ? r->meta->alloc_role : NULL;
}
const char *ms_resource_provider_id(const ms_resource *r) {
  return r->meta ? r->meta->provider_id : NULL;
}
bool ms_resource_is_shared(const ms_resource *r) {
  return r->meta && r->meta->shared;
}
bool ms_resource_is_revocable(const ms_resource *r) {
  return r->meta && r->meta->revocable;
}
bool ms_resource_is_reserved(const ms_resource *r) {
  return r->meta && r->meta->nres;
}
bool ms_resource_is_dynamically_reserved(const ms_resource *r) {
  return r->meta && r->meta->nres && r->meta->res[r->meta->nres - 1].type == MS_RESERVATION_DYNAMIC;
}
bool ms_resource_is_persistent_volume(const ms_resource *r) {
  return r->meta && r->meta->disk && r->meta->disk->persistence_id;
}

void ms_resource_spec_of(const ms_resource *r, ms_resource_spec *ret) {
  const ms_rmeta *m = r->meta;
  *ret = (ms_resource_spec){.name = ms_name_str(r->name), .type = (ms_value_type)r->type};
  if (r->type == MS_VALUE_SCALAR)
    ret->scalar = r->v.scalar;
  else if (r->type == MS_VALUE_RANGES)
    ret->ranges = r->v.ranges;
  else if (r->type == MS_VALUE_SET)
    ret->set = r->v.set;
  if (!m)
    return;
  ret->reservations = m->res;
  ret->nreservations = m->nres;
  ret->allocation_role = m->alloc_role;
  ret->disk = m->disk;
  ret->shared = m->shared;
  ret->revocable = m->revocable;
  ret->provider_id = m->provider_id;
}

/* ---- descriptions ---- */

void ms_rbuf_addn(ms_rbuf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + n + 1)
      cap *= 2;
    b->s = ms_xrealloc(b->s, cap);
    b->cap = cap;
  }
  memcpy(b->s + b->n, s, n);
  b->n += n;
  b->s[b->n] = '\0';
}

void ms_rbuf_add(ms_rbuf *b, const char *fmt, ...) {
  char small[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof(small), fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  if ((size_t)n < sizeof(small)) {
    ms_rbuf_addn(b, small, (size_t)n);
    return;
  }
  char *big = ms_xmalloc((size_t)n + 1);
  va_start(ap, fmt);
  vsnprintf(big, (size_t)n + 1, fmt, ap);
  va_end(ap);
  ms_rbuf_addn(b, big, (size_t)n);
  free(big);
}

char *ms_rbuf_take(ms_rbuf *b) {
  if (!b->s)
    ms_rbuf_addn(b, "", 0);
  char *s = b->s;
  *b = (ms_rbuf){0};
  return s;
}

void ms_rbuf_describe_value(ms_rbuf *b, const ms_resource *r, bool full) {
  char num[MS_SCALAR_BUFSZ];
  const uint32_t max = full ? UINT32_MAX : 8;
  if (r->type == MS_VALUE_SCALAR) {
    ms_rbuf_add(b, "%s", ms_scalar_format(r->v.scalar, num));
  } else if (r->type == MS_VALUE_RANGES) {
    ms_rbuf_addn(b, "[", 1);
    for (uint32_t i = 0; i < r->v.ranges.n && i < max; i++)
      ms_rbuf_add(b, "%s%llu-%llu", i ? "," : "", (unsigned long long)r->v.ranges.v[i].begin,
                  (unsigned long long)r->v.ranges.v[i].end);
    ms_rbuf_add(b, "%s]", r->v.ranges.n > max ? ",..." : "");
  } else if (r->type == MS_VALUE_SET) {
    ms_rbuf_addn(b, "{", 1);
    for (uint32_t i = 0; i < r->v.set.n && i < max; i++)
      ms_rbuf_add(b, "%s%s", i ? "," : "", r->v.set.v[i]);
    ms_rbuf_add(b, "%s}", r->v.set.n > max ? ",..." : "");
  }
}

static const char *const source_names[] = {"ROOT", "PATH", "MOUNT", "BLOCK", "RAW"};

static void describe_into(ms_rbuf *b, const ms_resource *r) {
  const ms_rmeta *m = r->meta;
  ms_rbuf_add(b, "%s", ms_name_str(r->name));
  if (m && m->nres) {
    ms_rbuf_addn(b, "(", 1);
    for (uint32_t i = 0; i < m->nres; i++)
      ms_rbuf_add(b, "%s%s", i ? "," : "", m->res[i].role);
    ms_rbuf_addn(b, ")", 1);
  }
  if (m && (m->disk || m->shared || m->revocable || m->provider_id || m->alloc_role)) {
    const char *sep = "";
    ms_rbuf_addn(b, "[", 1);
    if (m->disk && m->disk->persistence_id) {
      ms_rbuf_add(b, "volume %s:%s%s", m->disk->persistence_id, m->disk->container_path,
                  m->disk->mode == MS_VOLUME_RO ? " RO" : "");
      sep = ",";
    }
    if (m->disk && m->disk->source != MS_DISK_SOURCE_NONE) {
      const ms_disk_info *d = m->disk;
      ms_rbuf_add(b, "%s%s", sep, source_names[d->source]);
      if (d->root)
        ms_rbuf_add(b, " %s", d->root);
      if (d->source_id)
        ms_rbuf_add(b, " id %s", d->source_id);
      if (d->profile)
        ms_rbuf_add(b, " profile %s", d->profile);
      sep = ",";
    }
    if (m->shared)
      ms_rbuf_add(b, "%sshared", sep), sep = ",";
    if (m->revocable)
      ms_rbuf_add(b, "%srevocable", sep), sep = ",";
    if (m->provider_id)
      ms_rbuf_add(b, "%sprovider %s", sep, m->provider_id), sep = ",";
    if (m->alloc_role)
      ms_rbuf_add(b, "%sallocated %s", sep, m->alloc_role);
    ms_rbuf_addn(b, "]", 1);
  }
  ms_rbuf_addn(b, ":", 1);
  ms_rbuf_describe_value(b, r, false);
  if (r->count > 1)
    ms_rbuf_add(b, " x%u", r->count);
}

char *ms_resource_describe(const ms_resource *r) {
  ms_rbuf b = {0};
  describe_into(&b, r);
  return ms_rbuf_take(&b);
}

char *ms_resources_describe(const ms_resources *set) {
  ms_rbuf b = {0};
  for (uint32_t i = 0; i < set->n; i++) {
    if (i)
      ms_rbuf_addn(&b, "; ", 2);
    describe_into(&b, &set->v[i]);
  }
  return ms_rbuf_take(&b);
}
