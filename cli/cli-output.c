/* Output of the read commands: `-o table` (columns chosen per noun), `-o json` and
 * `-o yaml` (the whole answer, from the same JSON tree). */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "meseta/alloc.h"

#include "cli.h"

#define JSON_FLAGS (JSON_INDENT(2) | JSON_REAL_PRECISION(15) | JSON_ENCODE_ANY)

json_t *cli_json_path(json_t *v, const char *path) {
  const char *p = path;
  while (v && *p) {
    const char *dot = strchr(p, '.');
    size_t n = dot ? (size_t)(dot - p) : strlen(p);
    v = json_is_object(v) ? json_object_getn(v, p, n) : NULL;
    p += n + (dot ? 1 : 0);
  }
  return v;
}

static double number(json_t *v) {
  if (json_is_number(v))
    return json_number_value(v);
  if (json_is_string(v))
    return strtod(json_string_value(v), NULL);
  return 0;
}

/* A cell's text (caller frees); "-" for nothing. */
static char *scalar_text(json_t *v) {
  if (!v || json_is_null(v))
    return ms_xstrdup("-");
  if (json_is_string(v))
    return ms_xstrdup(*json_string_value(v) ? json_string_value(v) : "-");
  if (json_is_integer(v))
    return ms_xasprintf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
  if (json_is_real(v))
    return ms_xasprintf("%g", json_real_value(v));
  if (json_is_boolean(v))
    return ms_xstrdup(json_is_true(v) ? "true" : "false");
  char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
  return s ? s : ms_xstrdup("?");
}

static char *cell(json_t *item, const cli_col *col) {
  json_t *v = cli_json_path(item, col->path);
  switch (col->kind) {
  case CLI_COL_PATH:
    return scalar_text(v);
  case CLI_COL_COUNT:
    return ms_xasprintf("%zu", json_is_array(v) ? json_array_size(v) : 0);
  case CLI_COL_LAST:
    return scalar_text(json_is_array(v) && json_array_size(v)
                           ? cli_json_path(json_array_get(v, json_array_size(v) - 1), col->arg)
                           : NULL);
  case CLI_COL_MAP: {
    const char *k;
    json_t *e;
    char *out = NULL;
    json_object_foreach(json_is_object(v) ? v : NULL, k, e) {
      _cleanup_free_ char *val =
          scalar_text(json_is_object(e) && json_object_get(e, "value") ? json_object_get(e, "value") : e);
      char *next = out ? ms_xasprintf("%s,%s=%s", out, k, val) : ms_xasprintf("%s=%s", k, val);
      free(out);
      out = next;
    }
    return out ? out : ms_xstrdup("-");
  }
  case CLI_COL_KEYS: {
    const char *k;
    json_t *e;
    char *out = NULL;
    json_object_foreach(json_is_object(v) ? v : NULL, k, e) {
      if (col->arg && strcmp(k, col->arg) == 0)
        continue;
      char *next = out ? ms_xasprintf("%s,%s", out, k) : ms_xstrdup(k);
      free(out);
      out = next;
    }
    return out ? out : ms_xstrdup("-");
  }
  case CLI_COL_RESOURCE: {
    double sum = 0;
    size_t i;
    json_t *r;
    json_array_foreach(v, i, r) {
      const char *name = json_string_value(json_object_get(r, "name"));
      if (name && strcmp(name, col->arg) == 0)
        sum += number(cli_json_path(r, "scalar.value"));
    }
    return ms_xasprintf("%g", sum);
  }
  }
  return ms_xstrdup("-");
}

static void print_table(json_t *rows, const char *items, const cli_col *cols, size_t ncols) {
  size_t nrows = json_array_size(rows);
  if (!nrows) {
    fprintf(stderr, "no %s\n", items);
    return;
  }
  char **cells = ms_xcalloc(nrows * ncols, sizeof(char *));
  size_t *width = ms_xcalloc(ncols, sizeof(size_t));
  for (size_t c = 0; c < ncols; c++)
    width[c] = strlen(cols[c].header);
  for (size_t r = 0; r < nrows; r++)
    for (size_t c = 0; c < ncols; c++) {
      cells[r * ncols + c] = cell(json_array_get(rows, r), &cols[c]);
      size_t n = strlen(cells[r * ncols + c]);
      width[c] = n > width[c] ? n : width[c];
    }
  for (size_t c = 0; c < ncols; c++)
    printf("%-*s%s", c + 1 < ncols ? (int)width[c] : 0, cols[c].header, c + 1 < ncols ? "   " : "\n");
  for (size_t r = 0; r < nrows; r++)
    for (size_t c = 0; c < ncols; c++) {
      printf("%-*s%s", c + 1 < ncols ? (int)width[c] : 0, cells[r * ncols + c], c + 1 < ncols ? "   " : "\n");
      free(cells[r * ncols + c]);
    }
  free(cells);
  free(width);
}

/* ---- YAML ---- */

static bool plain_ok(const char *s) {
  static const char *const reserved[] = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"};
  if (!*s || !(((*s | 32) >= 'a' && (*s | 32) <= 'z') || *s == '/' || *s == '_'))
    return false;
  for (const char *p = s; *p; p++)
    if (!(((*p | 32) >= 'a' && (*p | 32) <= 'z') || (*p >= '0' && *p <= '9') || strchr("_./@-", *p)))
      return false;
  for (size_t i = 0; i < MS_ARRAY_SIZE(reserved); i++)
    if (strcasecmp(s, reserved[i]) == 0)
      return false;
  return true;
}

static void yaml_scalar(FILE *out, json_t *v) {
  if (json_is_string(v) && plain_ok(json_string_value(v))) {
    fputs(json_string_value(v), out);
  } else if (json_is_object(v)) {
    fputs("{}", out); /* only empty ones come here */
  } else if (json_is_array(v)) {
    fputs("[]", out);
  } else {
    char *s = json_dumps(v, JSON_FLAGS); /* a JSON string is a YAML double-quoted one */
    fputs(s ? s : "null", out);
    free(s);
  }
}

static bool is_block(json_t *v) {
  return (json_is_object(v) && json_object_size(v)) || (json_is_array(v) && json_array_size(v));
}

static void yaml_node(FILE *out, json_t *v, int indent, bool inline_first);

static void yaml_object(FILE *out, json_t *v, int indent, bool inline_first) {
  const char *k;
  json_t *e;
  bool first = true;
  json_object_foreach(v, k, e) {
    if (!(first && inline_first))
      fprintf(out, "%*s", indent, "");
    first = false;
    if (plain_ok(k)) {
      fputs(k, out);
    } else {
      json_t *ks = json_string(k);
      yaml_scalar(out, ks);
      json_decref(ks);
    }
    if (is_block(e)) {
      fputs(":\n", out);
      yaml_node(out, e, json_is_array(e) ? indent : indent + 2, false);
    } else {
      fputs(": ", out);
      yaml_scalar(out, e);
      fputc('\n', out);
    }
  }
}

static void yaml_node(FILE *out, json_t *v, int indent, bool inline_first) {
  if (json_is_object(v) && json_object_size(v)) {
    yaml_object(out, v, indent, inline_first);
    return;
  }
  if (!json_is_array(v) || !json_array_size(v)) {
    fprintf(out, "%*s", inline_first ? 0 : indent, "");
    yaml_scalar(out, v);
    fputc('\n', out);
    return;
  }
  size_t i;
  json_t *e;
  json_array_foreach(v, i, e) {
    if (!(i == 0 && inline_first))
      fprintf(out, "%*s", indent, "");
    if (json_is_object(e) && json_object_size(e)) {
      fputs("- ", out);
      yaml_object(out, e, indent + 2, true);
    } else if (is_block(e)) {
      fputs("-\n", out);
      yaml_node(out, e, indent + 2, false);
    } else {
      fputs("- ", out);
      yaml_scalar(out, e);
      fputc('\n', out);
    }
  }
}

void cli_yaml_write(FILE *out, json_t *v) {
  yaml_node(out, v, 0, false);
}

static int print_doc(const char *format, json_t *doc, bool *ret_done) {
  *ret_done = true;
  if (strcmp(format, "json") == 0) {
    char *s = json_dumps(doc, JSON_FLAGS);
    printf("%s\n", s ? s : "null");
    free(s);
    return CLI_EXIT_OK;
  }
  if (strcmp(format, "yaml") == 0) {
    cli_yaml_write(stdout, doc);
    return CLI_EXIT_OK;
  }
  *ret_done = false;
  if (strcmp(format, "table") == 0)
    return CLI_EXIT_OK;
  return cli_usage_error("flag `--output`: `%s` is not one of table, json, yaml", format);
}

int cli_print(cli *c, json_t *doc, const char *items, const cli_col *cols, size_t ncols) {
  bool done;
  int rc = print_doc(c->output, doc, &done);
  if (done || rc != CLI_EXIT_OK)
    return rc;
  json_t *rows = json_object_get(doc, items);
  json_t *none = json_array();
  print_table(rows ? rows : none, items, cols, ncols);
  json_decref(none);
  return CLI_EXIT_OK;
}

int cli_print_message(cli *c, const ProtobufCMessage *m) {
  json_t *doc = cli_json_from_message(m);
  bool done;
  int rc = print_doc(c->output, doc, &done);
  if (!done && rc == CLI_EXIT_OK)
    cli_yaml_write(stdout, doc);
  json_decref(doc);
  return rc;
}
