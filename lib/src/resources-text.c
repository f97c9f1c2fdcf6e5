/* The agent's `--resources` text form: `cpus:4;ports:[31000-32000];disk(ads):100`. */
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/resources-internal.h"
#include "meseta/resources-io.h"
#include "meseta/roles.h"

typedef struct span {
  const char *s;
  size_t n;
} span;

static bool is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static span trim(span t) {
  while (t.n && is_ws(t.s[0]))
    t.s++, t.n--;
  while (t.n && is_ws(t.s[t.n - 1]))
    t.n--;
  return t;
}

static int parse_uint(span t, uint64_t *ret, const char *what, ms_error **err) {
  char q[48];
  t = trim(t);
  uint64_t v = 0;
  bool ok = t.n > 0 && t.n <= 20;
  for (size_t i = 0; ok && i < t.n; i++)
    ok = t.s[i] >= '0' && t.s[i] <= '9' && !__builtin_mul_overflow(v, 10, &v) &&
         !__builtin_add_overflow(v, (uint64_t)(t.s[i] - '0'), &v);
  if (!ok)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: range bound `%s` is not a number below 2^64", what,
                        ms_value_quote(strndupa(t.s, t.n < 40 ? t.n : 40), q, sizeof(q)));
  *ret = v;
  return 0;
}

static int parse_ranges(span t, ms_ranges *r, const char *what, ms_error **err) {
  span body = trim((span){t.s + 1, t.n - 2});
  if (!body.n)
    return 0;
  for (const char *p = body.s, *end = body.s + body.n; p <= end;) {
    const char *comma = memchr(p, ',', (size_t)(end - p));
    span item = {p, (size_t)((comma ? comma : end) - p)};
    const char *dash = memchr(item.s, '-', item.n);
    uint64_t b, e;
    if (parse_uint(dash ? (span){item.s, (size_t)(dash - item.s)} : item, &b, what, err) < 0)
      return MS_ERR;
    if (dash) {
      if (parse_uint((span){dash + 1, (size_t)(item.s + item.n - dash - 1)}, &e, what, err) < 0)
        return MS_ERR;
    } else {
      e = b;
    }
    if (ms_ranges_push(r, b, e, what, err) < 0)
      return MS_ERR;
    if (!comma)
      break;
    p = comma + 1;
  }
  return 0;
}

static int parse_set(span t, ms_set *s, const char *what, ms_error **err) {
  span body = trim((span){t.s + 1, t.n - 2});
  if (!body.n)
    return 0;
  for (const char *p = body.s, *end = body.s + body.n; p <= end;) {
    const char *comma = memchr(p, ',', (size_t)(end - p));
    span item = trim((span){p, (size_t)((comma ? comma : end) - p)});
    if (ms_set_push(s, item.s, item.n, what, err) < 0)
      return MS_ERR;
    if (!comma)
      break;
    p = comma + 1;
  }
  return 0;
}

/* One `name(role):value`; the value goes into *ret. */
static int parse_one(span t, const char *default_role, ms_resources *out, ms_error **err) {
  char what[96], q[64];
  snprintf(what, sizeof(what), "resource `%s`",
           ms_value_quote(strndupa(t.s, t.n < 60 ? t.n : 60), q, sizeof(q)));
  const char *colon = memchr(t.s, ':', t.n);
  if (!colon)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: expected `name:value`", what);
  span head = trim((span){t.s, (size_t)(colon - t.s)});
  span val = trim((span){colon + 1, (size_t)(t.s + t.n - colon - 1)});
  const char *role = default_role;
  _cleanup_free_ char *role_buf = NULL;
  const char *paren = memchr(head.s, '(', head.n);
  span name = head;
  if (paren) {
    if (head.s[head.n - 1] != ')')
      return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: the role must end with `)` just before `:`", what);
    name = trim((span){head.s, (size_t)(paren - head.s)});
    span r = trim((span){paren + 1, (size_t)(head.s + head.n - 1 - paren - 1)});
    role = role_buf = ms_xstrndup(r.s, r.n);
    if (ms_role_validate(role, err) < 0)
      return ms_error_prefix(err, "%s", what);
  }
  _cleanup_free_ char *name_s = ms_xstrndup(name.s, name.n);
  ms_resource_spec spec = {.name = name_s};
  ms_reservation res = {.type = MS_RESERVATION_STATIC, .role = role};
  if (role && strcmp(role, "*") != 0)
    spec.reservations = &res, spec.nreservations = 1;
  int rc;
  if (val.n && val.s[0] == '[') {
    if (val.s[val.n - 1] != ']')
      return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: ranges must end with `]`", what);
    spec.type = MS_VALUE_RANGES;
    rc = parse_ranges(val, &spec.ranges, what, err);
  } else if (val.n && val.s[0] == '{') {
    if (val.s[val.n - 1] != '}')
      return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: a set must end with `}`", what);
    spec.type = MS_VALUE_SET;
    rc = parse_set(val, &spec.set, what, err);
  } else {
    spec.type = MS_VALUE_SCALAR;
    rc = ms_scalar_parse(val.s, val.n, what, &spec.scalar, err);
  }
  ms_resource e;
  if (rc == 0 && (rc = ms_resource_init(&e, &spec, true, err)) == 0)
    ms_resources_push_moved(out, &e);
  ms_ranges_release(&spec.ranges);
  ms_set_release(&spec.set);
  return rc;
}

int ms_resources_parse_text(const char *text, const char *default_role, ms_resources **ret, ms_error **err) {
  size_t len = strnlen(text, MS_RESOURCES_TEXT_MAX + 1);
  if (len > MS_RESOURCES_TEXT_MAX)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "resources text is longer than %u bytes",
                        MS_RESOURCES_TEXT_MAX);
  span all = trim((span){text, len});
  if (all.n && all.s[0] == '[')
    return ms_resources_from_json(all.s, all.n, ret, err);
  if (default_role && ms_role_validate(default_role, err) < 0)
    return ms_error_prefix(err, "default role");
  ms_resources out = {0};
  for (const char *p = all.s, *end = all.s + all.n; p < end;) {
    const char *semi = memchr(p, ';', (size_t)(end - p));
    span part = trim((span){p, (size_t)((semi ? semi : end) - p)});
    if (part.n && parse_one(part, default_role, &out, err) < 0)
      goto fail;
    p = semi ? semi + 1 : end;
  }
  return ms_resources_finish(&out, ret, err);
fail:
  ms_resources_discard(&out);
  return MS_ERR;
}

/* Whether the text form can carry r: a name, a value, at most one STATIC role. */
static bool text_fits(const ms_resource *r) {
  const ms_rmeta *m = r->meta;
  if (m && (m->nres > 1 || m->alloc_role || m->disk || m->shared || m->revocable || m->provider_id ||
            r->count != 1))
    return false;
  if (m && m->nres == 1 &&
      (m->res[0].type != MS_RESERVATION_STATIC || m->res[0].principal || m->res[0].nlabels ||
       strpbrk(m->res[0].role, ";:()[]{},")))
    return false;
  if (r->type == MS_VALUE_SET)
    for (uint32_t i = 0; i < r->v.set.n; i++) {
      const char *it = r->v.set.v[i];
      size_t n = strlen(it);
      if (strpbrk(it, ",;{}") || is_ws(it[0]) || is_ws(it[n - 1]))
        return false;
    }
  return true;
}

char *ms_resources_format_text(const ms_resources *set) {
  for (uint32_t i = 0; i < set->n; i++)
    if (!text_fits(&set->v[i]))
      return ms_resources_to_json(set);
  ms_rbuf b = {0};
  for (uint32_t i = 0; i < set->n; i++) {
    const ms_resource *r = &set->v[i];
    ms_rbuf_add(&b, "%s%s", i ? ";" : "", ms_name_str(r->name));
    if (r->meta)
      ms_rbuf_add(&b, "(%s)", r->meta->res[0].role);
    ms_rbuf_addn(&b, ":", 1);
    ms_rbuf_describe_value(&b, r, true);
  }
  return ms_rbuf_take(&b);
}
