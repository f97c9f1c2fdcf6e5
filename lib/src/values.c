#include "meseta/values.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"

const char *ms_value_type_name(ms_value_type t) {
  switch (t) {
  case MS_VALUE_SCALAR:
    return "SCALAR";
  case MS_VALUE_RANGES:
    return "RANGES";
  case MS_VALUE_SET:
    return "SET";
  case MS_VALUE_TEXT:
    return "TEXT";
  default:
    return "UNKNOWN";
  }
}

const char *ms_value_quote(const char *s, char *out, size_t size) {
  size_t i = 0, j = 0;
  if (!s)
    s = "";
  /* Messages stay one line of UTF-8: control bytes, backticks and (in invalid input)
   * non-ASCII bytes become `?`. */
  bool utf8 = ms_utf8_valid(s, strlen(s));
  for (; s[i] && j + 1 < size; i++) {
    unsigned char c = (unsigned char)s[i];
    out[j++] = (c < 0x20 || c == 0x7f || c == '`' || (c >= 0x80 && !utf8)) ? '?' : (char)c;
  }
  out[j] = '\0';
  if (s[i] && size >= 8) { /* truncated: cut at a character boundary and say so */
    j = size - 4;
    while (j > 0 && ((unsigned char)out[j] & 0xc0) == 0x80)
      j--;
    memcpy(out + j, "...", 4);
  }
  return out;
}

bool ms_utf8_valid(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  while (p < end) {
    unsigned c = *p++;
    size_t more;
    unsigned min;
    if (c < 0x80)
      continue;
    if (c >= 0xc2 && c <= 0xdf)
      more = 1, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
      more = 2, min = 0x800, c &= 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
      more = 3, min = 0x10000, c &= 0x07;
    else
      return false;
    if ((size_t)(end - p) < more)
      return false;
    if (more == 1)
      c &= 0x1f;
    for (size_t i = 0; i < more; i++, p++) {
      if ((*p & 0xc0) != 0x80)
        return false;
      c = (c << 6) | (*p & 0x3f);
    }
    /* Overlong forms, UTF-16 surrogates and values past U+10FFFF are not UTF-8. */
    if (c < min || (c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff)
      return false;
  }
  return true;
}

/* ---- scalars ---- */

int ms_scalar_from_double(double v, const char *what, ms_scalar *ret, ms_error **err) {
  if (isnan(v) || isinf(v))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: scalar value is not a finite number", what);
  if (v < 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: scalar value %g is negative", what, v);
  if (v > (double)MS_SCALAR_MAX / (double)MS_SCALAR_UNIT + 0.0005)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: scalar value %g is above the limit of %lld", what, v,
                        (long long)(MS_SCALAR_MAX / MS_SCALAR_UNIT));
  ms_scalar s = (ms_scalar)llround(v * (double)MS_SCALAR_UNIT);
  if (s > MS_SCALAR_MAX)
    s = MS_SCALAR_MAX;
  *ret = s;
  return 0;
}

double ms_scalar_to_double(ms_scalar s) {
  /* Split so the integer part is exact and the fraction is the closest double. */
  return (double)(s / MS_SCALAR_UNIT) + (double)(s % MS_SCALAR_UNIT) / (double)MS_SCALAR_UNIT;
}

int ms_scalar_parse(const char *s, size_t len, const char *what, ms_scalar *ret, ms_error **err) {
  char buf[64];
  char q[48];
  if (len == 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: empty scalar value", what);
  if (len >= sizeof(buf))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: scalar value is too long", what);
  memcpy(buf, s, len);
  buf[len] = '\0';
  /* strtod alone would take "inf", "nan" and hex; a decimal is all we want. */
  bool digit = false;
  for (size_t i = 0; i < len; i++) {
    char c = buf[i];
    if (c >= '0' && c <= '9')
      digit = true;
    else if (!(c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-'))
      digit = false, i = len;
  }
  char *end = NULL;
  errno = 0;
  double v = digit ? strtod(buf, &end) : 0;
  if (!digit || end != buf + len || (buf[0] != '-' && buf[0] != '.' && (buf[0] < '0' || buf[0] > '9')))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: `%s` is not a decimal number", what,
                        ms_value_quote(buf, q, sizeof(q)));
  return ms_scalar_from_double(v, what, ret, err);
}

const char *ms_scalar_format(ms_scalar s, char buf[MS_SCALAR_BUFSZ]) {
  const char *sign = s < 0 ? "-" : "";
  uint64_t a = s < 0 ? -(uint64_t)s : (uint64_t)s;
  uint64_t ip = a / 1000, fp = a % 1000;
  if (fp == 0)
    snprintf(buf, MS_SCALAR_BUFSZ, "%s%llu", sign, (unsigned long long)ip);
  else if (fp % 100 == 0)
    snprintf(buf, MS_SCALAR_BUFSZ, "%s%llu.%llu", sign, (unsigned long long)ip,
             (unsigned long long)(fp / 100));
  else if (fp % 10 == 0)
    snprintf(buf, MS_SCALAR_BUFSZ, "%s%llu.%02llu", sign, (unsigned long long)ip,
             (unsigned long long)(fp / 10));
  else
    snprintf(buf, MS_SCALAR_BUFSZ, "%s%llu.%03llu", sign, (unsigned long long)ip, (unsigned long long)fp);
  return buf;
}

/* ---- ranges ---- */

static void ranges_reserve(ms_ranges *r, uint32_t n) {
  if (n <= r->cap)
    return;
  uint32_t cap = r->cap ? r->cap : 4;
  while (cap < n)
    cap *= 2;
  r->v = ms_xrealloc(r->v, (size_t)cap * sizeof(*r->v));
  r->cap = cap;
}

void ms_ranges_release(ms_ranges *r) {
  free(r->v);
  *r = (ms_ranges){0};
}

void ms_ranges_copy(ms_ranges *dst, const ms_ranges *src) {
  *dst = (ms_ranges){0};
  if (!src->n)
    return;
  ranges_reserve(dst, src->n);
  memcpy(dst->v, src->v, (size_t)src->n * sizeof(*src->v));
  dst->n = src->n;
}

int ms_ranges_push(ms_ranges *r, uint64_t begin, uint64_t end, const char *what, ms_error **err) {
  if (begin > end)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: range [%llu-%llu] begins after it ends", what,
                        (unsigned long long)begin, (unsigned long long)end);
  if (r->n >= MS_RANGES_MAX_INTERVALS)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: more than %u ranges", what, MS_RANGES_MAX_INTERVALS);
  ranges_reserve(r, r->n + 1);
  r->v[r->n++] = (ms_range){begin, end};
  return 0;
}

static int range_cmp(const void *a, const void *b) {
  const ms_range *x = a, *y = b;
  if (x->begin != y->begin)
    return x->begin < y->begin ? -1 : 1;
  return x->end < y->end ? -1 : x->end > y->end;
}

void ms_ranges_normalize(ms_ranges *r) {
  if (r->n < 2)
    return;
  bool sorted = true;
  for (uint32_t i = 1; i < r->n && sorted; i++)
    sorted = r->v[i - 1].end < r->v[i].begin && r->v[i].begin - r->v[i - 1].end > 1;
  if (sorted)
    return;
  qsort(r->v, r->n, sizeof(*r->v), range_cmp);
  uint32_t out = 0;
  for (uint32_t i = 1; i < r->n; i++) {
    ms_range *last = &r->v[out];
    /* Overlapping or adjacent (end + 1 == begin) intervals merge; no overflow at UINT64_MAX. */
    if (r->v[i].begin <= last->end || r->v[i].begin - last->end == 1) {
      if (r->v[i].end > last->end)
        last->end = r->v[i].end;
    } else {
      r->v[++out] = r->v[i];
    }
  }
  r->n = out + 1;
}

/* First index whose interval ends at or after x (or touches it when `touch`). */
static uint32_t first_ending_from(const ms_ranges *a, uint64_t x, bool touch) {
  uint32_t lo = 0, hi = a->n;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    uint64_t end = a->v[mid].end;
    if (end >= x || (touch && end + 1 == x))
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

/* One interval into a normalized array: a binary search and a memmove, no sort. */
static void ranges_insert(ms_ranges *a, ms_range r) {
  uint32_t i = first_ending_from(a, r.begin, true), k = i;
  while (k < a->n && (a->v[k].begin <= r.end || a->v[k].begin - r.end == 1))
    k++;
  if (k == i) {
    ranges_reserve(a, a->n + 1);
    memmove(&a->v[i + 1], &a->v[i], (size_t)(a->n - i) * sizeof(*a->v));
    a->v[i] = r;
    a->n++;
    return;
  }
  /* a[i..k) overlap or touch r: they become one interval. */
  ms_range m = {a->v[i].begin < r.begin ? a->v[i].begin : r.begin,
                a->v[k - 1].end > r.end ? a->v[k - 1].end : r.end};
  a->v[i] = m;
  memmove(&a->v[i + 1], &a->v[k], (size_t)(a->n - k) * sizeof(*a->v));
  a->n -= k - i - 1;
}

/* Takes one interval out of a normalized array in place. */
static void ranges_remove(ms_ranges *a, ms_range r) {
  uint32_t i = first_ending_from(a, r.begin, false);
  if (i == a->n || a->v[i].begin > r.end)
    return;
  if (a->v[i].begin < r.begin && a->v[i].end > r.end) { /* split one interval in two */
    ranges_reserve(a, a->n + 1);
    memmove(&a->v[i + 2], &a->v[i + 1], (size_t)(a->n - i - 1) * sizeof(*a->v));
    a->v[i + 1] = (ms_range){r.end + 1, a->v[i].end};
    a->v[i].end = r.begin - 1;
    a->n++;
    return;
  }
  if (a->v[i].begin < r.begin)
    a->v[i++].end = r.begin - 1;
  uint32_t m = i;
  while (m < a->n && a->v[m].end <= r.end)
    m++;
  if (m < a->n && a->v[m].begin <= r.end)
    a->v[m].begin = r.end + 1;
  memmove(&a->v[i], &a->v[m], (size_t)(a->n - m) * sizeof(*a->v));
  a->n -= m - i;
}

/* Below this many intervals in b, per-interval insertion beats a full merge. */
#define RANGES_SMALL 4

/* Appends r to the normalized prefix out[0..*n), merging when it overlaps or touches. */
static void ranges_emit(ms_range *out, uint32_t *n, ms_range r) {
  if (*n) {
    ms_range *last = &out[*n - 1];
    if (r.begin <= last->end || r.begin - last->end == 1) {
      if (r.end > last->end)
        last->end = r.end;
      return;
    }
  }
  out[(*n)++] = r;
}

void ms_ranges_union(ms_ranges *a, const ms_ranges *b) {
  if (!b->n || a == b)
    return;
  if (b->n <= RANGES_SMALL) {
    for (uint32_t j = 0; j < b->n; j++)
      ranges_insert(a, b->v[j]);
    return;
  }
  /* A linear merge in place: a's intervals move to the back of the buffer and the
   * result is written from the front, which never overtakes what is still unread. */
  uint32_t na = a->n;
  ranges_reserve(a, na + b->n);
  memmove(a->v + b->n, a->v, (size_t)na * sizeof(*a->v));
  const ms_range *ra = a->v + b->n;
  uint32_t i = 0, j = 0, n = 0;
  while (i < na || j < b->n) {
    bool take_a = j == b->n || (i < na && ra[i].begin <= b->v[j].begin);
    ranges_emit(a->v, &n, take_a ? ra[i++] : b->v[j++]);
  }
  a->n = n;
}

void ms_ranges_subtract(ms_ranges *a, const ms_ranges *b) {
  if (a == b) {
    a->n = 0;
    return;
  }
  if (!a->n || !b->n)
    return;
  if (b->n <= RANGES_SMALL) {
    for (uint32_t j = 0; j < b->n; j++)
      ranges_remove(a, b->v[j]);
    return;
  }
  /* Each subtracted interval can split one of a's in two: at most a->n + b->n results. */
  uint32_t cap = a->n + b->n;
  ms_range *out = ms_xmalloc((size_t)cap * sizeof(*out));
  uint32_t n = 0, j = 0;
  for (uint32_t i = 0; i < a->n; i++) {
    uint64_t lo = a->v[i].begin, hi = a->v[i].end;
    bool alive = true;
    while (j < b->n && b->v[j].end < lo)
      j++;
    for (uint32_t k = j; k < b->n && b->v[k].begin <= hi && alive; k++) {
      if (b->v[k].begin > lo)
        out[n++] = (ms_range){lo, b->v[k].begin - 1};
      if (b->v[k].end >= hi)
        alive = false;
      else
        lo = b->v[k].end + 1;
    }
    if (alive)
      out[n++] = (ms_range){lo, hi};
  }
  free(a->v);
  a->v = out;
  a->n = n;
  a->cap = cap;
}

bool ms_ranges_contains(const ms_ranges *a, const ms_ranges *b) {
  uint32_t i = 0;
  for (uint32_t j = 0; j < b->n; j++) {
    while (i < a->n && a->v[i].end < b->v[j].begin)
      i++;
    if (i == a->n || a->v[i].begin > b->v[j].begin || a->v[i].end < b->v[j].end)
      return false;
  }
  return true;
}

bool ms_ranges_equal(const ms_ranges *a, const ms_ranges *b) {
  return a->n == b->n && (a->n == 0 || memcmp(a->v, b->v, (size_t)a->n * sizeof(*a->v)) == 0);
}

uint64_t ms_ranges_count(const ms_ranges *r) {
  uint64_t total = 0;
  for (uint32_t i = 0; i < r->n; i++) {
    uint64_t len = r->v[i].end - r->v[i].begin;
    if (len == UINT64_MAX || total > UINT64_MAX - len - 1)
      return UINT64_MAX;
    total += len + 1;
  }
  return total;
}

/* ---- sets ---- */

static void set_reserve(ms_set *s, uint32_t n) {
  if (n <= s->cap)
    return;
  uint32_t cap = s->cap ? s->cap : 4;
  while (cap < n)
    cap *= 2;
  s->v = ms_xrealloc(s->v, (size_t)cap * sizeof(*s->v));
  s->cap = cap;
}

void ms_set_release(ms_set *s) {
  for (uint32_t i = 0; i < s->n; i++)
    free(s->v[i]);
  free(s->v);
  *s = (ms_set){0};
}

void ms_set_copy(ms_set *dst, const ms_set *src) {
  *dst = (ms_set){0};
  if (!src->n)
    return;
  set_reserve(dst, src->n);
  for (uint32_t i = 0; i < src->n; i++)
    dst->v[i] = ms_xstrdup(src->v[i]);
  dst->n = src->n;
}

int ms_set_push(ms_set *s, const char *item, size_t len, const char *what, ms_error **err) {
  if (len == 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: empty set item", what);
  if (len > MS_SET_MAX_ITEM_LEN)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: set item longer than %u bytes", what,
                        MS_SET_MAX_ITEM_LEN);
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)item[i];
    if (c < 0x20 || c == 0x7f)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: set item has control byte 0x%02x", what, c);
  }
  if (!ms_utf8_valid(item, len))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: set item is not valid UTF-8", what);
  if (s->n >= MS_SET_MAX_ITEMS)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: more than %u set items", what, MS_SET_MAX_ITEMS);
  set_reserve(s, s->n + 1);
  s->v[s->n++] = ms_xstrndup(item, len);
  return 0;
}

static int str_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

int ms_set_normalize(ms_set *s, const char *what, ms_error **err) {
  char q[48];
  if (s->n > 1)
    qsort(s->v, s->n, sizeof(*s->v), str_cmp);
  for (uint32_t i = 1; i < s->n; i++)
    if (strcmp(s->v[i - 1], s->v[i]) == 0)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: set item `%s` appears twice", what,
                          ms_value_quote(s->v[i], q, sizeof(q)));
  return 0;
}

void ms_set_union(ms_set *a, const ms_set *b) {
  if (!b->n || a == b)
    return;
  char **out = ms_xmalloc((size_t)(a->n + b->n) * sizeof(*out));
  uint32_t i = 0, j = 0, n = 0;
  while (i < a->n || j < b->n) {
    int c = i == a->n ? 1 : j == b->n ? -1 : strcmp(a->v[i], b->v[j]);
    if (c < 0)
      out[n++] = a->v[i++];
    else if (c > 0)
      out[n++] = ms_xstrdup(b->v[j++]);
    else
      out[n++] = a->v[i++], j++;
  }
  free(a->v);
  a->v = out;
  a->cap = a->n + b->n;
  a->n = n;
}

void ms_set_subtract(ms_set *a, const ms_set *b) {
  if (a == b) {
    for (uint32_t i = 0; i < a->n; i++)
      free(a->v[i]);
    a->n = 0;
    return;
  }
  uint32_t i = 0, j = 0, n = 0;
  while (i < a->n) {
    int c = j == b->n ? -1 : strcmp(a->v[i], b->v[j]);
    if (c < 0)
      a->v[n++] = a->v[i++];
    else if (c > 0)
      j++;
    else
      free(a->v[i++]), j++;
  }
  a->n = n;
}

bool ms_set_contains(const ms_set *a, const ms_set *b) {
  uint32_t i = 0;
  for (uint32_t j = 0; j < b->n; j++) {
    int c = -1;
    while (i < a->n && (c = strcmp(a->v[i], b->v[j])) < 0)
      i++;
    if (i == a->n || c != 0)
      return false;
    i++;
  }
  return true;
}

bool ms_set_equal(const ms_set *a, const ms_set *b) {
  if (a->n != b->n)
    return false;
  for (uint32_t i = 0; i < a->n; i++)
    if (strcmp(a->v[i], b->v[i]) != 0)
      return false;
  return true;
}

bool ms_set_has(const ms_set *s, const char *item) {
  uint32_t lo = 0, hi = s->n;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    int c = strcmp(s->v[mid], item);
    if (c == 0)
      return true;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return false;
}
