#include "meseta/roles.h"

#include <string.h>

#include "meseta/alloc.h"
#include "meseta/values.h"

static int bad(ms_error **err, const char *role, const char *why) {
  char q[96];
  return ms_error_set(err, MS_INVALID_ARGUMENT, "role `%s`: %s", ms_value_quote(role, q, sizeof(q)), why);
}

static int check_component(const char *role, const char *c, size_t len, ms_error **err) {
  char q[96], why[160];
  if (len == 0)
    return bad(err, role, "empty component between slashes");
  if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
    return snprintf(why, sizeof(why), "component `%.*s` is not allowed", (int)len, c), bad(err, role, why);
  if (len == 1 && c[0] == '*')
    return bad(err, role, "`*` is only valid as the whole role");
  if (c[0] == '-')
    return snprintf(why, sizeof(why), "component `%s` starts with `-`",
                    ms_value_quote(strndupa(c, len < 64 ? len : 64), q, sizeof(q))),
           bad(err, role, why);
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)c[i];
    if (ch <= 0x20 || ch == 0x7f) {
      snprintf(why, sizeof(why), "%s (byte 0x%02x) at offset %zu",
               ch == ' ' || (ch >= 0x09 && ch <= 0x0d) ? "whitespace" : "control byte", ch,
               (size_t)(c + i - role));
      return bad(err, role, why);
    }
  }
  return 0;
}

int ms_role_validate(const char *role, ms_error **err) {
  if (!role || !*role)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "role ``: must not be empty");
  if (role[0] == '*' && role[1] == '\0')
    return 0;
  size_t len = strnlen(role, MS_ROLE_MAX_LEN + 1);
  if (len > MS_ROLE_MAX_LEN)
    return bad(err, role, "longer than 1024 bytes");
  if (!ms_utf8_valid(role, len))
    return bad(err, role, "not valid UTF-8");
  if (role[0] == '/')
    return bad(err, role, "must not start with `/`");
  if (role[len - 1] == '/')
    return bad(err, role, "must not end with `/`");
  const char *start = role;
  for (const char *p = role;; p++) {
    if (*p == '/' || *p == '\0') {
      if (check_component(role, start, (size_t)(p - start), err) < 0)
        return MS_ERR;
      if (*p == '\0')
        return 0;
      start = p + 1;
    }
  }
}

bool ms_role_is_valid(const char *role) {
  return ms_role_validate(role, NULL) == 0;
}

bool ms_role_is_ancestor(const char *ancestor, const char *role) {
  if (strcmp(ancestor, "*") == 0)
    return false;
  size_t n = strlen(ancestor);
  return strncmp(ancestor, role, n) == 0 && role[n] == '/';
}

bool ms_role_is_self_or_ancestor(const char *ancestor, const char *role) {
  return strcmp(ancestor, role) == 0 || ms_role_is_ancestor(ancestor, role);
}

size_t ms_role_depth(const char *role) {
  if (strcmp(role, "*") == 0)
    return 0;
  size_t d = 1;
  for (const char *p = role; *p; p++)
    d += *p == '/';
  return d;
}

char *ms_role_parent(const char *role) {
  const char *slash = strrchr(role, '/');
  return slash ? ms_xstrndup(role, (size_t)(slash - role)) : NULL;
}
