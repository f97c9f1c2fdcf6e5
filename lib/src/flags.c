#include "meseta/flags.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "meseta/alloc.h"
#include "meseta/time.h"

#define HELP_WIDTH 100  /* wrap --help text here */
#define HELP_MAX_COL 36 /* help text starts at most this far right */

/* ---- ms_strv ---- */

static void strv_push_n(ms_strv *sv, const char *s, size_t len) {
  sv->v = ms_xrealloc(sv->v, (sv->n + 2) * sizeof(*sv->v));
  sv->v[sv->n++] = ms_xstrndup(s, len);
  sv->v[sv->n] = NULL;
}

void ms_strv_push(ms_strv *sv, const char *s) {
  strv_push_n(sv, s, strlen(s));
}

void ms_strv_release(ms_strv *sv) {
  for (size_t i = 0; i < sv->n; i++)
    free(sv->v[i]);
  free(sv->v);
  sv->v = NULL;
  sv->n = 0;
}

/* ---- what the parser owns ----
 *
 * The spec is const and the targets are plain pointers, so the parser keeps a side
 * table of (target, value it stored). A target whose value changed since (the program
 * replaced it) is no longer ours and is never freed. */

typedef struct owned {
  const void *target;
  const void *value;
} owned;

static pthread_mutex_t owned_lock = PTHREAD_MUTEX_INITIALIZER;
static owned *owned_tab;
static size_t n_owned;

/* Forgets target; returns true if it still holds the value the parser stored there. */
static bool owned_take(const void *target, const void *current) {
  bool ours = false;
  pthread_mutex_lock(&owned_lock);
  for (size_t i = 0; i < n_owned; i++) {
    if (owned_tab[i].target == target) {
      ours = owned_tab[i].value == current;
      owned_tab[i] = owned_tab[--n_owned];
      break;
    }
  }
  if (n_owned == 0) {
    free(owned_tab);
    owned_tab = NULL;
  }
  pthread_mutex_unlock(&owned_lock);
  return ours;
}

static void owned_put(const void *target, const void *value) {
  pthread_mutex_lock(&owned_lock);
  owned_tab = ms_xrealloc(owned_tab, (n_owned + 1) * sizeof(*owned_tab));
  owned_tab[n_owned++] = (owned){target, value};
  pthread_mutex_unlock(&owned_lock);
}

static void release_target(const ms_flag *f) {
  if (f->type == MS_FLAG_STRING) {
    char **p = f->ptr;
    if (owned_take(p, *p)) {
      free(*p);
      *p = NULL;
    }
  } else if (f->type == MS_FLAG_LIST) {
    ms_strv *sv = f->ptr;
    if (owned_take(sv, sv->v))
      ms_strv_release(sv);
  }
}

void ms_flags_free(const ms_flag_spec *spec) {
  for (size_t i = 0; spec && i < spec->n_flags; i++)
    release_target(&spec->flags[i]);
}

/* ---- values ---- */

typedef struct flag_value {
  char *s;
  int64_t i;
  bool b;
  double d;
  ms_strv list;
} flag_value;

static void value_clear(flag_value *v) {
  free(v->s);
  v->s = NULL;
  ms_strv_release(&v->list);
}

static bool starts_number(const char *s) {
  if (*s == '-' || *s == '+')
    s++;
  return isdigit((unsigned char)*s) || (*s == '.' && isdigit((unsigned char)s[1]));
}

static int parse_bool(const char *s, bool *ret, ms_error **err) {
  static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
  for (size_t i = 0; i < MS_ARRAY_SIZE(yes); i++) {
    if (strcasecmp(s, yes[i]) == 0) {
      *ret = true;
      return 0;
    }
    if (strcasecmp(s, no[i]) == 0) {
      *ret = false;
      return 0;
    }
  }
  return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s` is not a boolean (use true or false)", s);
}

static int parse_int(const char *s, int64_t *ret, ms_error **err) {
  char *end = NULL;
  errno = 0;
  long long v = starts_number(s) ? strtoll(s, &end, 10) : 0;
  if (!end || *end || end == s)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s` is not an integer", s);
  if (errno == ERANGE)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s` is out of range for a 64-bit integer", s);
  *ret = v;
  return 0;
}

static int parse_double(const char *s, double *ret, ms_error **err) {
  char *end = NULL;
  errno = 0;
  /* starts_number keeps out "nan", "inf" and leading blanks, which strtod would take. */
  double v = starts_number(s) ? strtod(s, &end) : 0;
  if (!end || *end || end == s)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s` is not a number", s);
  if (errno == ERANGE || !isfinite(v))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s` is out of range for a number", s);
  *ret = v;
  return 0;
}

int ms_bytes_parse(const char *s, int64_t *ret_bytes, ms_error **err) {
  if (!s || !*s)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "empty size");
  if (*s == '-')
    return ms_error_set(err, MS_INVALID_ARGUMENT, "size `%s` is negative", s);
  /* 128 bits hold whole * 1024^6 and frac * 1024^6, so one check catches overflow. */
  unsigned __int128 whole = 0, frac = 0, scale = 1;
  const char *p = s;
  bool digits = false;
  for (; isdigit((unsigned char)*p); p++, digits = true) {
    whole = whole * 10 + (unsigned)(*p - '0');
    if (whole > INT64_MAX)
      goto out_of_range;
  }
  if (*p == '.') {
    for (p++; isdigit((unsigned char)*p); p++, digits = true) {
      if (scale < UINT64_C(1000000000000000000)) {
        frac = frac * 10 + (unsigned)(*p - '0');
        scale *= 10;
      }
    }
  }
  if (!digits)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s` is not a size (e.g. `512KiB`, `4MiB`, `1GB`, `100`)",
                        s);
  /* Unit: "" or "b"; else one of k m g t p e, then "", "b" (powers of 1000) or "i", "ib"
   * (powers of 1024). */
  static const char prefixes[] = "kmgtpe";
  unsigned __int128 mult = 1;
  const char *u = p;
  if (*u && strcasecmp(u, "b") != 0) {
    const char *at = strchr(prefixes, tolower((unsigned char)*u));
    const char *rest = u + 1;
    bool iec = rest[0] == 'i' || rest[0] == 'I';
    if (iec)
      rest++;
    if (!at || (*rest && strcasecmp(rest, "b") != 0))
      return ms_error_set(err, MS_INVALID_ARGUMENT,
                          "size `%s` has unknown unit `%s` (want B, KB, KiB, MB, MiB, GB, GiB, TB, TiB, PB, "
                          "PiB, EB or EiB)",
                          s, u);
    for (long i = 0; i <= at - prefixes; i++)
      mult *= iec ? 1024 : 1000;
  }
  unsigned __int128 total = whole * mult + frac * mult / scale;
  if (total > INT64_MAX)
    goto out_of_range;
  *ret_bytes = (int64_t)total;
  return 0;

out_of_range:
  return ms_error_set(err, MS_INVALID_ARGUMENT, "size `%s` is out of range (at most %" PRId64 " bytes)", s,
                      INT64_MAX);
}

/* Splits on commas, trims blanks around items and drops empty ones ("a, b,," -> a, b). */
static void split_list(const char *s, ms_strv *sv) {
  while (*s) {
    const char *comma = strchr(s, ',');
    const char *end = comma ? comma : s + strlen(s);
    const char *a = s, *b = end;
    while (a < b && isspace((unsigned char)*a))
      a++;
    while (b > a && isspace((unsigned char)b[-1]))
      b--;
    if (b > a)
      strv_push_n(sv, a, (size_t)(b - a));
    s = comma ? comma + 1 : end;
  }
}

/* Parses text into v according to f's type. Lists append, so occurrences accumulate. */
static int parse_value(const ms_flag *f, const char *text, flag_value *v, ms_error **err) {
  switch (f->type) {
  case MS_FLAG_STRING:
    free(v->s);
    v->s = ms_xstrdup(text);
    return 0;
  case MS_FLAG_INT:
    return parse_int(text, &v->i, err);
  case MS_FLAG_BOOL:
    return parse_bool(text, &v->b, err);
  case MS_FLAG_DOUBLE:
    return parse_double(text, &v->d, err);
  case MS_FLAG_DURATION:
    return ms_duration_parse(text, &v->i, err);
  case MS_FLAG_BYTES:
    return ms_bytes_parse(text, &v->i, err);
  case MS_FLAG_LIST:
    split_list(text, &v->list);
    return 0;
  }
  return ms_error_set(err, MS_INTERNAL, "flag `--%s` has unknown type %d", f->name, (int)f->type);
}

/* Stores v into f's target; strings and lists move (v gives them up). */
static void assign(const ms_flag *f, flag_value *v) {
  switch (f->type) {
  case MS_FLAG_STRING:
    release_target(f);
    *(char **)f->ptr = v->s;
    owned_put(f->ptr, v->s);
    v->s = NULL;
    break;
  case MS_FLAG_LIST:
    release_target(f);
    *(ms_strv *)f->ptr = v->list;
    owned_put(f->ptr, v->list.v);
    v->list = (ms_strv){NULL, 0};
    break;
  case MS_FLAG_BOOL:
    *(bool *)f->ptr = v->b;
    break;
  case MS_FLAG_DOUBLE:
    *(double *)f->ptr = v->d;
    break;
  case MS_FLAG_INT:
  case MS_FLAG_DURATION:
  case MS_FLAG_BYTES:
    *(int64_t *)f->ptr = v->i;
    break;
  }
}

char *ms_flag_env_name(const char *name) {
  return ms_flag_env_name_in(NULL, name);
}

char *ms_flag_env_name_in(const ms_flag_spec *spec, const char *name) {
  const char *prefix = spec && spec->env_prefix ? spec->env_prefix : "MESETA_";
  char *env = ms_xasprintf("%s%s", prefix, name);
  for (char *c = env; *c; c++)
    *c = *c == '-' || *c == ' ' ? '_' : (char)toupper((unsigned char)*c);
  return env;
}

/* ---- the command line ---- */

typedef struct occurrence {
  const ms_flag *flag;
  const char *value;
} occurrence;

static const ms_flag *find_flag(const ms_flag_spec *spec, const char *name, size_t len) {
  for (size_t i = 0; i < spec->n_flags; i++)
    if (strlen(spec->flags[i].name) == len && memcmp(spec->flags[i].name, name, len) == 0)
      return &spec->flags[i];
  return NULL;
}

/* Optimal string alignment distance: edits plus adjacent swaps ("prot" -> "port" is 1). */
static size_t edit_distance(const char *a, size_t la, const char *b, size_t lb) {
  enum { MAX = 64 };
  if (la > MAX || lb > MAX)
    return SIZE_MAX;
  size_t rows[3][MAX + 1]; /* i-2, i-1, i */
  for (size_t j = 0; j <= lb; j++)
    rows[1][j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t *prev2 = rows[0], *prev = rows[1], *cur = rows[2];
    cur[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t cost = a[i - 1] != b[j - 1];
      size_t best = prev[j - 1] + cost;
      if (prev[j] + 1 < best)
        best = prev[j] + 1;
      if (cur[j - 1] + 1 < best)
        best = cur[j - 1] + 1;
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && prev2[j - 2] + 1 < best)
        best = prev2[j - 2] + 1;
      cur[j] = best;
    }
    memcpy(rows[0], rows[1], sizeof(rows[0]));
    memcpy(rows[1], rows[2], sizeof(rows[1]));
  }
  return rows[1][lb];
}

static void consider(const char *name, size_t len, const char *prefix, const char *cand, size_t *best,
                     char **ret) {
  size_t cl = strlen(cand);
  size_t d = edit_distance(name, len, cand, cl);
  /* Close enough to be a typo, and not most of a short word. */
  if (d < *best && d <= (cl >= 6 ? 2u : 1u) && d < cl) {
    *best = d;
    free(*ret);
    *ret = ms_xasprintf("--%s%s", prefix, cand);
  }
}

static int unknown_flag(const ms_flag_spec *spec, const char *arg, ms_error **err) {
  size_t dashes = arg[1] == '-' ? 2 : 1;
  const char *name = arg + dashes;
  size_t len = strcspn(name, "=");
  _cleanup_free_ char *suggestion = NULL;
  size_t best = SIZE_MAX;
  if (dashes == 1 && find_flag(spec, name, len))
    suggestion = ms_xasprintf("--%.*s", (int)len, name);
  for (size_t i = 0; !suggestion && i < spec->n_flags; i++) {
    const ms_flag *f = &spec->flags[i];
    consider(name, len, "", f->name, &best, &suggestion);
    if (f->type == MS_FLAG_BOOL && len > 3 && strncmp(name, "no-", 3) == 0)
      consider(name + 3, len - 3, "no-", f->name, &best, &suggestion);
  }
  if (!suggestion)
    consider(name, len, "", "help", &best, &suggestion);
  if (suggestion)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "unknown flag `%.*s` (did you mean `%s`?)",
                        (int)(dashes + len), arg, suggestion);
  return ms_error_set(err, MS_INVALID_ARGUMENT, "unknown flag `%.*s`", (int)(dashes + len), arg);
}

static bool is_help(const char *a) {
  return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0;
}

/* Reads the flag at argv[*i] (advancing *i past a separate value) into occs. */
static int scan_flag(const ms_flag_spec *spec, int argc, char **argv, int *i, occurrence *occs, size_t *n_occ,
                     ms_error **err) {
  const char *a = argv[*i];
  if (a[1] != '-')
    return unknown_flag(spec, a, err);
  const char *name = a + 2, *eq = strchr(name, '=');
  size_t len = eq ? (size_t)(eq - name) : strlen(name);
  const ms_flag *f = find_flag(spec, name, len);
  const char *value = eq ? eq + 1 : NULL;
  if (!f && len > 3 && strncmp(name, "no-", 3) == 0) {
    const ms_flag *neg = find_flag(spec, name + 3, len - 3);
    if (neg && neg->type != MS_FLAG_BOOL)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "unknown flag `--%.*s` (`--%s` is not a boolean)",
                          (int)len, name, neg->name);
    if (neg) {
      if (eq)
        return ms_error_set(err, MS_INVALID_ARGUMENT, "flag `--%.*s` takes no value", (int)len, name);
      f = neg;
      value = "false";
    }
  }
  if (!f)
    return unknown_flag(spec, a, err);
  if (!value && f->type == MS_FLAG_BOOL) {
    value = "true"; /* `--bool value` would be ambiguous with an argument */
  } else if (!value) {
    if (*i + 1 >= argc || strncmp(argv[*i + 1], "--", 2) == 0)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "flag `--%s` needs a value", f->name);
    value = argv[++*i];
  }
  occs[(*n_occ)++] = (occurrence){f, value};
  return 0;
}

/* Gives f its value from the highest layer that has one. */
static int apply_flag(const ms_flag_spec *spec, const ms_flag *f, const occurrence *occs, size_t n_occ,
                      ms_error **err) {
  flag_value v = {0};
  size_t hits = 0;
  for (size_t j = 0; j < n_occ; j++) {
    if (occs[j].flag != f)
      continue;
    hits++;
    /* Every occurrence is checked, even those a later one overrides. */
    if (parse_value(f, occs[j].value, &v, err) < 0) {
      value_clear(&v);
      return ms_error_prefix(err, "flag `--%s`", f->name);
    }
  }
  _cleanup_free_ char *env = ms_flag_env_name_in(spec, f->name);
  bool found = hits > 0;
  if (!found) {
    const char *ev = getenv(env);
    if (ev && *ev) {
      if (parse_value(f, ev, &v, err) < 0) {
        value_clear(&v);
        return ms_error_prefix(err, "environment `%s` for flag `--%s`", env, f->name);
      }
      found = true;
    } else if (f->def) {
      if (parse_value(f, f->def, &v, err) < 0) {
        value_clear(&v);
        return ms_error_prefix(err, "default for flag `--%s`", f->name);
      }
      found = true;
    } else if (f->required) {
      return ms_error_set(err, MS_INVALID_ARGUMENT, "missing required flag `--%s` (or set `%s`)", f->name,
                          env);
    }
  }
  if (found)
    assign(f, &v);
  value_clear(&v);
  return 0;
}

/* Hands a locally held error to the caller's err, as ms_error_set would. */
static int give_error(ms_error **err, ms_error *e) {
  if (err) {
    ms_error_free(*err);
    *err = e;
  } else {
    ms_error_free(e);
  }
  return MS_ERR;
}

int ms_flags_parse(const ms_flag_spec *spec, int argc, char **argv, int *ret_next_arg, ms_error **err) {
  _cleanup_free_ occurrence *occs = ms_xcalloc(argc > 0 ? (size_t)argc : 1, sizeof(*occs));
  size_t n_occ = 0;
  ms_error *scan_err = NULL; /* kept aside: --help later on the line still wins */
  bool help = false;
  int i = 1;
  for (; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0) {
      i++;
      break;
    }
    if (a[0] != '-' || a[1] == '\0')
      break;
    if (is_help(a))
      help = true;
    else if (!scan_err)
      scan_flag(spec, argc, argv, &i, occs, &n_occ, &scan_err);
  }
  if (help) {
    ms_error_free(scan_err);
    ms_flags_print_help(spec, stdout);
    fflush(stdout);
    return 1;
  }
  if (scan_err)
    return give_error(err, scan_err);
  if (!ret_next_arg && i < argc)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "unexpected argument `%s`", argv[i]);
  for (size_t k = 0; k < spec->n_flags; k++)
    if (apply_flag(spec, &spec->flags[k], occs, n_occ, err) < 0)
      return MS_ERR;
  if (ret_next_arg)
    *ret_next_arg = i < argc ? i : argc;
  return 0;
}

/* ---- --help ---- */

static const char *metavar(const ms_flag *f) {
  if (f->metavar)
    return f->metavar;
  switch (f->type) {
  case MS_FLAG_INT:
    return "INT";
  case MS_FLAG_DOUBLE:
    return "NUMBER";
  case MS_FLAG_DURATION:
    return "DURATION";
  case MS_FLAG_BYTES:
    return "SIZE";
  case MS_FLAG_LIST:
    return "VALUE";
  case MS_FLAG_STRING:
  case MS_FLAG_BOOL:
    break;
  }
  return "STRING";
}

/* "--work-dir <DIR>", "--[no-]verbose", "--label <VALUE>..." */
static char *flag_syntax(const ms_flag *f) {
  if (f->type == MS_FLAG_BOOL)
    return ms_xasprintf("--[no-]%s", f->name);
  return ms_xasprintf("--%s <%s>%s", f->name, metavar(f), f->type == MS_FLAG_LIST ? "..." : "");
}

/* Writes words from column *col on, wrapping to HELP_WIDTH with an indent of `indent`. */
static void put_words(FILE *out, size_t indent, size_t *col, const char *text, bool whole) {
  const char *p = text;
  while (*p) {
    size_t len = whole ? strlen(p) : strcspn(p, " ");
    if (len) {
      if (*col > indent && *col + 1 + len > HELP_WIDTH) {
        fprintf(out, "\n%*s", (int)indent, "");
        *col = indent;
      } else if (*col > indent) {
        fputc(' ', out);
        (*col)++;
      }
      fprintf(out, "%.*s", (int)len, p);
      *col += len;
    }
    p += len;
    while (*p == ' ')
      p++;
  }
}

static void put_row(FILE *out, size_t col, const char *left, const ms_flag_spec *spec, const ms_flag *f) {
  size_t pos = strlen(left);
  fputs(left, out);
  if (pos + 2 > col) {
    fprintf(out, "\n%*s", (int)col, "");
  } else {
    fprintf(out, "%*s", (int)(col - pos), "");
  }
  pos = col;
  if (!f) {
    put_words(out, col, &pos, "Print this help and exit", false);
    fputc('\n', out);
    return;
  }
  put_words(out, col, &pos, f->help ? f->help : "", false);
  /* Annotations never break inside: "[default: 5s]" stays on one line. */
  if (f->def) {
    _cleanup_free_ char *d = ms_xasprintf("[default: %s]", *f->def ? f->def : "\"\"");
    put_words(out, col, &pos, d, true);
  }
  _cleanup_free_ char *env = ms_flag_env_name_in(spec, f->name);
  _cleanup_free_ char *e = ms_xasprintf("[env: %s]", env);
  put_words(out, col, &pos, e, true);
  if (f->required)
    put_words(out, col, &pos, "(required)", true);
  fputc('\n', out);
}

void ms_flags_print_help(const ms_flag_spec *spec, FILE *out) {
  fprintf(out, "Usage: %s [OPTIONS]", spec->prog);
  for (size_t i = 0; i < spec->n_flags; i++) {
    const ms_flag *f = &spec->flags[i];
    if (f->required && !f->def && f->type != MS_FLAG_BOOL)
      fprintf(out, " --%s <%s>", f->name, metavar(f));
  }
  if (spec->args)
    fprintf(out, " %s", spec->args);
  fputc('\n', out);
  if (spec->summary)
    fprintf(out, "\n%s\n", spec->summary);
  fputs("\nOptions:\n", out);

  /* Align help text one column past the longest flag that fits, like clap and cobra. */
  static const char help_left[] = "  -h, --help";
  size_t col = sizeof(help_left) - 1 + 3;
  for (size_t i = 0; i < spec->n_flags; i++) {
    _cleanup_free_ char *syn = flag_syntax(&spec->flags[i]);
    size_t w = strlen(syn) + 6 + 3;
    if (w > col && w <= HELP_MAX_COL)
      col = w;
  }
  for (size_t i = 0; i < spec->n_flags; i++) {
    _cleanup_free_ char *syn = flag_syntax(&spec->flags[i]);
    _cleanup_free_ char *left = ms_xasprintf("      %s", syn);
    put_row(out, col, left, spec, &spec->flags[i]);
  }
  put_row(out, col, help_left, spec, NULL);
}
