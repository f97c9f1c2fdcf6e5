/* The JSON form: an array of meseta.v1.Resource objects with proto field names. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/resources-internal.h"
#include "meseta/resources-io.h"

/* ---- parsing ---- */

/* Temporary storage for one resource's spec; strings borrow from the JSON tree. */
typedef struct jspec {
  ms_resource_spec spec;
  ms_reservation res[MS_RESERVATIONS_MAX];
  ms_disk_info disk;
  ms_label *labels[MS_RESERVATIONS_MAX + 1]; /* one array per reservation, +1 for disk metadata */
} jspec;

static void jspec_release(jspec *j) {
  ms_ranges_release(&j->spec.ranges);
  ms_set_release(&j->spec.set);
  for (size_t i = 0; i < MS_ARRAY_SIZE(j->labels); i++)
    free(j->labels[i]);
}

static int bad(ms_error **err, const char *where, const char *what) {
  return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: %s", where, what);
}

/* Refuses keys outside `allowed` (NULL-terminated) so typos do not pass silently. */
static int check_keys(const json_t *obj, const char *where, const char *const *allowed, ms_error **err) {
  const char *key;
  json_t *v;
  char q[48];
  if (!json_is_object(obj))
    return bad(err, where, "expected an object");
  json_object_foreach((json_t *)obj, key, v) {
    bool ok = false;
    for (const char *const *a = allowed; *a && !ok; a++)
      ok = strcmp(*a, key) == 0;
    if (!ok) {
      char why[96];
      snprintf(why, sizeof(why), "unknown key `%s`", ms_value_quote(key, q, sizeof(q)));
      return bad(err, where, why);
    }
  }
  return 0;
}

static int get_str(const json_t *obj, const char *key, const char *where, const char **ret, ms_error **err) {
  json_t *v = json_object_get(obj, key);
  *ret = NULL;
  if (!v || json_is_null(v))
    return 0;
  if (!json_is_string(v)) {
    char why[96];
    snprintf(why, sizeof(why), "`%s` must be a string", key);
    return bad(err, where, why);
  }
  *ret = json_string_value(v);
  return 0;
}

/* An enum by name ("STATIC") or number. */
static int get_enum(const json_t *obj, const char *key, const char *where, const char *const *names, int n,
                    int *ret, ms_error **err) {
  json_t *v = json_object_get(obj, key);
  char why[128], q[48];
  *ret = 0;
  if (!v || json_is_null(v))
    return 0;
  if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) < n) {
    *ret = (int)json_integer_value(v);
    return 0;
  }
  for (int i = 0; json_is_string(v) && i < n; i++)
    if (names[i] && strcmp(names[i], json_string_value(v)) == 0) {
      *ret = i;
      return 0;
    }
  snprintf(why, sizeof(why), "`%s` has an unknown value `%s`", key,
           json_is_string(v) ? ms_value_quote(json_string_value(v), q, sizeof(q)) : "(not a string)");
  return bad(err, where, why);
}

static int get_u64(const json_t *v, const char *where, uint64_t *ret, ms_error **err) {
  if (json_is_integer(v) && json_integer_value(v) >= 0) {
    *ret = (uint64_t)json_integer_value(v);
    return 0;
  }
  if (json_is_string(v)) {
    const char *s = json_string_value(v);
    char *end = NULL;
    errno = 0;
    unsigned long long u = s[0] >= '0' && s[0] <= '9' ? strtoull(s, &end, 10) : 0;
    if (end && !*end && !errno) {
      *ret = u;
      return 0;
    }
  }
  return bad(err, where, "range bounds must be non-negative integers (or decimal strings)");
}

static int get_labels(const json_t *obj, const char *key, const char *where, ms_label **ret, uint32_t *ret_n,
                      ms_error **err) {
  static const char *const keys[] = {"labels", NULL};
  static const char *const lkeys[] = {"key", "value", NULL};
  json_t *wrap = json_object_get(obj, key), *arr;
  *ret_n = 0;
  if (!wrap || json_is_null(wrap))
    return 0;
  if (check_keys(wrap, where, keys, err) < 0)
    return MS_ERR;
  arr = json_object_get(wrap, "labels");
  if (!arr)
    return 0;
  if (!json_is_array(arr) || json_array_size(arr) > 1024)
    return bad(err, where, "`labels` must be an array of at most 1024 labels");
  size_t n = json_array_size(arr);
  if (!n)
    return 0;
  *ret = ms_xcalloc(n, sizeof(**ret));
  *ret_n = (uint32_t)n;
  for (size_t i = 0; i < n; i++) {
    json_t *l = json_array_get(arr, i);
    if (check_keys(l, where, lkeys, err) < 0 || get_str(l, "key", where, &(*ret)[i].key, err) < 0 ||
        get_str(l, "value", where, &(*ret)[i].value, err) < 0)
      return MS_ERR;
  }
  return 0;
}

static const char *const value_types[] = {"TYPE_UNSPECIFIED", "SCALAR", "RANGES", "SET", "TEXT"};
static const char *const res_types[] = {"TYPE_UNSPECIFIED", "STATIC", "DYNAMIC"};
static const char *const modes[] = {"MODE_UNSPECIFIED", "RW", "RO"};
static const char *const sources[] = {"TYPE_UNSPECIFIED", "PATH", "MOUNT", "BLOCK", "RAW"};

static int parse_value(const json_t *o, const char *where, jspec *j, ms_error **err) {
  static const char *const skeys[] = {"value", NULL}, *const rkeys[] = {"range", NULL},
                           *const bkeys[] = {"begin", "end", NULL}, *const ikeys[] = {"item", NULL};
  json_t *v;
  if ((v = json_object_get(o, "scalar")) && !json_is_null(v)) {
    if (j->spec.type != MS_VALUE_SCALAR)
      return bad(err, where, "`scalar` set but type is not SCALAR");
    if (check_keys(v, where, skeys, err) < 0)
      return MS_ERR;
    json_t *n = json_object_get(v, "value");
    if (n && !json_is_number(n))
      return bad(err, where, "`scalar.value` must be a number");
    if (ms_scalar_from_double(n ? json_number_value(n) : 0, where, &j->spec.scalar, err) < 0)
      return MS_ERR;
  }
  if ((v = json_object_get(o, "ranges")) && !json_is_null(v)) {
    if (j->spec.type != MS_VALUE_RANGES)
      return bad(err, where, "`ranges` set but type is not RANGES");
    if (check_keys(v, where, rkeys, err) < 0)
      return MS_ERR;
    json_t *arr = json_object_get(v, "range"), *r;
    size_t i;
    if (arr && !json_is_array(arr))
      return bad(err, where, "`ranges.range` must be an array");
    json_array_foreach(arr, i, r) {
      uint64_t b = 0, e = 0;
      json_t *jb = json_object_get(r, "begin"), *je = json_object_get(r, "end");
      if (check_keys(r, where, bkeys, err) < 0 || (jb && get_u64(jb, where, &b, err) < 0) ||
          (je && get_u64(je, where, &e, err) < 0) || ms_ranges_push(&j->spec.ranges, b, e, where, err) < 0)
        return MS_ERR;
    }
  }
  if ((v = json_object_get(o, "set")) && !json_is_null(v)) {
    if (j->spec.type != MS_VALUE_SET)
      return bad(err, where, "`set` set but type is not SET");
    if (check_keys(v, where, ikeys, err) < 0)
      return MS_ERR;
    json_t *arr = json_object_get(v, "item"), *it;
    size_t i;
    if (arr && !json_is_array(arr))
      return bad(err, where, "`set.item` must be an array");
    json_array_foreach(arr, i, it) {
      if (!json_is_string(it))
        return bad(err, where, "set items must be strings");
      if (ms_set_push(&j->spec.set, json_string_value(it), strlen(json_string_value(it)), where, err) < 0)
        return MS_ERR;
    }
  }
  return 0;
}

static int parse_disk(const json_t *d, const char *where, jspec *j, ms_error **err) {
  static const char
      *const dkeys[] = {"persistence", "volume", "source", NULL},
             *const pkeys[] = {"id", "principal", NULL}, *const vkeys[] = {"container_path", "mode", NULL},
             *const skeys[] = {"type", "path", "mount", "id", "profile", "vendor", "metadata", NULL},
             *const rootkeys[] = {"root", NULL};
  json_t *p, *v, *s;
  int t;
  if (check_keys(d, where, dkeys, err) < 0)
    return MS_ERR;
  j->spec.disk = &j->disk;
  if ((p = json_object_get(d, "persistence")) &&
      (check_keys(p, where, pkeys, err) < 0 || get_str(p, "id", where, &j->disk.persistence_id, err) < 0 ||
       get_str(p, "principal", where, &j->disk.persistence_principal, err) < 0))
    return MS_ERR;
  if ((v = json_object_get(d, "volume"))) {
    if (check_keys(v, where, vkeys, err) < 0 ||
        get_str(v, "container_path", where, &j->disk.container_path, err) < 0 ||
        get_enum(v, "mode", where, modes, 3, &t, err) < 0)
      return MS_ERR;
    j->disk.mode = (ms_volume_mode)t;
  }
  if ((s = json_object_get(d, "source"))) {
    if (check_keys(s, where, skeys, err) < 0 || get_enum(s, "type", where, sources, 5, &t, err) < 0 ||
        get_str(s, "id", where, &j->disk.source_id, err) < 0 ||
        get_str(s, "profile", where, &j->disk.profile, err) < 0 ||
        get_str(s, "vendor", where, &j->disk.vendor, err) < 0 ||
        get_labels(s, "metadata", where, &j->labels[MS_RESERVATIONS_MAX], &j->disk.nmetadata, err) < 0)
      return MS_ERR;
    j->disk.metadata = j->labels[MS_RESERVATIONS_MAX];
    j->disk.source = (ms_disk_source_type)t;
    if (t == 0)
      return bad(err, where, "`disk.source` needs a `type`");
    json_t *root = json_object_get(s, t == MS_DISK_SOURCE_MOUNT ? "mount" : "path");
    if (json_object_get(s, t == MS_DISK_SOURCE_MOUNT ? "path" : "mount"))
      return bad(err, where, "`disk.source` has the root of another source type");
    if (root &&
        (check_keys(root, where, rootkeys, err) < 0 || get_str(root, "root", where, &j->disk.root, err) < 0))
      return MS_ERR;
  }
  return 0;
}

static int parse_resource(const json_t *o, size_t idx, ms_resources *out, ms_error **err) {
  static const char *const keys[] = {"name",      "type",         "scalar",          "ranges",
                                     "set",       "reservations", "allocation_info", "disk",
                                     "revocable", "shared",       "provider_id",     NULL};
  static const char *const rkeys[] = {"type", "role", "principal", "labels", NULL},
                           *const akeys[] = {"role", NULL}, *const idkeys[] = {"value", NULL},
                           *const nokeys[] = {NULL};
  char where[48];
  snprintf(where, sizeof(where), "resources JSON [%zu]", idx);
  jspec j = {0};
  int t, rc = MS_ERR;
  json_t *v;
  if (check_keys(o, where, keys, err) < 0 || get_str(o, "name", where, &j.spec.name, err) < 0 ||
      get_enum(o, "type", where, value_types, 5, &t, err) < 0)
    goto out;
  if (!j.spec.name) {
    bad(err, where, "`name` is required");
    goto out;
  }
  j.spec.type = (ms_value_type)t;
  if (parse_value(o, where, &j, err) < 0)
    goto out;
  if ((v = json_object_get(o, "reservations")) && !json_is_null(v)) {
    if (!json_is_array(v) || json_array_size(v) > MS_RESERVATIONS_MAX) {
      bad(err, where, "`reservations` must be an array of at most 32");
      goto out;
    }
    for (size_t i = 0; i < json_array_size(v); i++) {
      json_t *r = json_array_get(v, i);
      ms_reservation *res = &j.res[i];
      if (check_keys(r, where, rkeys, err) < 0 || get_enum(r, "type", where, res_types, 3, &t, err) < 0 ||
          get_str(r, "role", where, &res->role, err) < 0 ||
          get_str(r, "principal", where, &res->principal, err) < 0 ||
          get_labels(r, "labels", where, &j.labels[i], &res->nlabels, err) < 0)
        goto out;
      res->type = (ms_reservation_type)t;
      res->labels = j.labels[i];
    }
    j.spec.reservations = j.res;
    j.spec.nreservations = (uint32_t)json_array_size(v);
  }
  if ((v = json_object_get(o, "allocation_info")) &&
      (check_keys(v, where, akeys, err) < 0 || get_str(v, "role", where, &j.spec.allocation_role, err) < 0))
    goto out;
  if ((v = json_object_get(o, "provider_id")) &&
      (check_keys(v, where, idkeys, err) < 0 || get_str(v, "value", where, &j.spec.provider_id, err) < 0))
    goto out;
  if ((v = json_object_get(o, "revocable")) && check_keys(v, where, nokeys, err) < 0)
    goto out;
  j.spec.revocable = v != NULL;
  if ((v = json_object_get(o, "shared")) && check_keys(v, where, nokeys, err) < 0)
    goto out;
  j.spec.shared = v != NULL;
  if ((v = json_object_get(o, "disk")) && parse_disk(v, where, &j, err) < 0)
    goto out;
  ms_resource e;
  if ((rc = ms_resource_init(&e, &j.spec, true, err)) == 0)
    ms_resources_push_moved(out, &e);
  else
    ms_error_prefix(err, "%s", where);
out:
  jspec_release(&j);
  return rc;
}

int ms_resources_from_json_value(const json_t *array, ms_resources **ret, ms_error **err) {
  if (!json_is_array(array))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "resources JSON: expected an array of resources");
  ms_resources out = {0};
  for (size_t i = 0; i < json_array_size(array); i++)
    if (parse_resource(json_array_get(array, i), i, &out, err) < 0)
      goto fail;
  return ms_resources_finish(&out, ret, err);
fail:
  ms_resources_discard(&out);
  return MS_ERR;
}

int ms_resources_from_json(const char *text, size_t len, ms_resources **ret, ms_error **err) {
  if (len > MS_RESOURCES_TEXT_MAX)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "resources JSON is longer than %u bytes",
                        MS_RESOURCES_TEXT_MAX);
  json_error_t je;
  json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
  if (!root) {
    char q[JSON_ERROR_TEXT_LENGTH];
    return ms_error_set(err, MS_INVALID_ARGUMENT, "resources JSON: line %d column %d: %s", je.line, je.column,
                        ms_value_quote(je.text, q, sizeof(q)));
  }
  int rc = ms_resources_from_json_value(root, ret, err);
  json_decref(root);
  return rc;
}

/* ---- printing ---- */

static json_t *labels_json(const ms_label *l, uint32_t n) {
  json_t *arr = json_array();
  for (uint32_t i = 0; i < n; i++) {
    json_t *o = json_pack("{s:s}", "key", l[i].key);
    if (l[i].value)
      json_object_set_new(o, "value", json_string(l[i].value));
    json_array_append_new(arr, o);
  }
  return json_pack("{s:o}", "labels", arr);
}

static json_t *u64_json(uint64_t v) {
  return v <= INT64_MAX ? json_integer((json_int_t)v) : json_sprintf("%llu", (unsigned long long)v);
}

static json_t *disk_json(const ms_disk_info *d) {
  json_t *o = json_object();
  if (d->persistence_id) {
    json_t *p = json_pack("{s:s}", "id", d->persistence_id);
    if (d->persistence_principal)
      json_object_set_new(p, "principal", json_string(d->persistence_principal));
    json_object_set_new(o, "persistence", p);
  }
  if (d->container_path)
    json_object_set_new(o, "volume",
                        json_pack("{s:s,s:s}", "container_path", d->container_path, "mode",
                                  modes[d->mode == MS_VOLUME_RO ? 2 : 1]));
  if (d->source != MS_DISK_SOURCE_NONE) {
    json_t *s = json_pack("{s:s}", "type", sources[d->source]);
    if (d->root)
      json_object_set_new(s, d->source == MS_DISK_SOURCE_MOUNT ? "mount" : "path",
                          json_pack("{s:s}", "root", d->root));
    if (d->source_id)
      json_object_set_new(s, "id", json_string(d->source_id));
    if (d->profile)
      json_object_set_new(s, "profile", json_string(d->profile));
    if (d->vendor)
      json_object_set_new(s, "vendor", json_string(d->vendor));
    if (d->nmetadata)
      json_object_set_new(s, "metadata", labels_json(d->metadata, d->nmetadata));
    json_object_set_new(o, "source", s);
  }
  return o;
}

static json_t *resource_json(const ms_resource *r) {
  json_t *o = json_pack("{s:s,s:s}", "name", ms_name_str(r->name), "type", value_types[r->type]);
  if (r->type == MS_VALUE_SCALAR) {
    ms_scalar s = r->v.scalar;
    json_object_set_new(
        o, "scalar",
        json_pack("{s:o}", "value",
                  s % MS_SCALAR_UNIT ? json_real(ms_scalar_to_double(s)) : json_integer(s / MS_SCALAR_UNIT)));
  } else if (r->type == MS_VALUE_RANGES) {
    json_t *arr = json_array();
    for (uint32_t i = 0; i < r->v.ranges.n; i++)
      json_array_append_new(arr, json_pack("{s:o,s:o}", "begin", u64_json(r->v.ranges.v[i].begin), "end",
                                           u64_json(r->v.ranges.v[i].end)));
    json_object_set_new(o, "ranges", json_pack("{s:o}", "range", arr));
  } else {
    json_t *arr = json_array();
    for (uint32_t i = 0; i < r->v.set.n; i++)
      json_array_append_new(arr, json_string(r->v.set.v[i]));
    json_object_set_new(o, "set", json_pack("{s:o}", "item", arr));
  }
  const ms_rmeta *m = r->meta;
  if (!m)
    return o;
  if (m->nres) {
    json_t *arr = json_array();
    for (uint32_t i = 0; i < m->nres; i++) {
      const ms_reservation *res = &m->res[i];
      json_t *ro = json_pack("{s:s,s:s}", "type", res_types[res->type], "role", res->role);
      if (res->principal)
        json_object_set_new(ro, "principal", json_string(res->principal));
      if (res->nlabels)
        json_object_set_new(ro, "labels", labels_json(res->labels, res->nlabels));
      json_array_append_new(arr, ro);
    }
    json_object_set_new(o, "reservations", arr);
  }
  if (m->alloc_role)
    json_object_set_new(o, "allocation_info", json_pack("{s:s}", "role", m->alloc_role));
  if (m->disk)
    json_object_set_new(o, "disk", disk_json(m->disk));
  if (m->revocable)
    json_object_set_new(o, "revocable", json_object());
  if (m->shared)
    json_object_set_new(o, "shared", json_object());
  if (m->provider_id)
    json_object_set_new(o, "provider_id", json_pack("{s:s}", "value", m->provider_id));
  return o;
}

json_t *ms_resources_to_json_value(const ms_resources *set) {
  json_t *arr = json_array();
  for (uint32_t i = 0; i < set->n; i++)
    for (uint32_t c = 0; c < set->v[i].count; c++) /* copies are listed, as Mesos does */
      json_array_append_new(arr, resource_json(&set->v[i]));
  return arr;
}

char *ms_resources_to_json(const ms_resources *set) {
  json_t *arr = ms_resources_to_json_value(set);
  /* 16 significant digits print every value of three decimals up to MS_SCALAR_MAX exactly. */
  char *s = json_dumps(arr, JSON_COMPACT | JSON_REAL_PRECISION(16));
  json_decref(arr);
  if (!s)
    abort(); /* only on out of memory, as ms_x* */
  char *out = ms_xstrdup(s);
  free(s);
  return out;
}
