/* Seccomp profiles in Docker's JSON format, turned into a libseccomp filter.
 *
 * Understood: defaultAction, defaultErrnoRet, architectures, syscalls[] with names (or the
 * older name), action, errnoRet, args[] {index, value, valueTwo, op} (ANDed in one rule),
 * includes {arches, caps} and excludes {arches, caps}. The task never holds extra
 * capabilities, so a rule that needs one in `includes.caps` is skipped and one excluded by
 * `excludes.caps` applies. Syscall names this libseccomp does not know are skipped, as
 * Docker does; a rule whose action is the default action is redundant and skipped. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <seccomp.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "meseta/alloc.h"

#include "runtime.h"

#define RT_MAX_PROFILE_BYTES (4 << 20)

struct rt_seccomp {
  scmp_filter_ctx ctx;
};

void rt_seccomp_free(rt_seccomp *sc) {
  if (!sc)
    return;
  seccomp_release(sc->ctx);
  free(sc);
}

static int parse_action(json_t *v, int errno_ret, const char *where, uint32_t *ret, ms_error **err) {
  static const struct {
    const char *name;
    uint32_t action;
  } actions[] = {
      {"SCMP_ACT_ALLOW", SCMP_ACT_ALLOW},
      {"SCMP_ACT_KILL", SCMP_ACT_KILL},
      {"SCMP_ACT_KILL_THREAD", SCMP_ACT_KILL_THREAD},
      {"SCMP_ACT_KILL_PROCESS", SCMP_ACT_KILL_PROCESS},
      {"SCMP_ACT_TRAP", SCMP_ACT_TRAP},
      {"SCMP_ACT_LOG", SCMP_ACT_LOG},
  };
  const char *s = json_string_value(v);
  if (!s)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: `action` missing or not a string", where);
  if (strcmp(s, "SCMP_ACT_ERRNO") == 0) {
    *ret = SCMP_ACT_ERRNO((uint32_t)errno_ret);
    return 0;
  }
  if (strcmp(s, "SCMP_ACT_TRACE") == 0) {
    *ret = SCMP_ACT_TRACE((uint32_t)errno_ret);
    return 0;
  }
  for (size_t i = 0; i < MS_ARRAY_SIZE(actions); i++)
    if (strcmp(actions[i].name, s) == 0) {
      *ret = actions[i].action;
      return 0;
    }
  return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: unknown action `%s`", where, s);
}

static int parse_op(const char *s, enum scmp_compare *ret) {
  static const struct {
    const char *name;
    enum scmp_compare op;
  } ops[] = {
      {"SCMP_CMP_NE", SCMP_CMP_NE},
      {"SCMP_CMP_LT", SCMP_CMP_LT},
      {"SCMP_CMP_LE", SCMP_CMP_LE},
      {"SCMP_CMP_EQ", SCMP_CMP_EQ},
      {"SCMP_CMP_GE", SCMP_CMP_GE},
      {"SCMP_CMP_GT", SCMP_CMP_GT},
      {"SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ},
  };
  for (size_t i = 0; s && i < MS_ARRAY_SIZE(ops); i++)
    if (strcmp(ops[i].name, s) == 0) {
      *ret = ops[i].op;
      return 0;
    }
  return -1;
}

/* "SCMP_ARCH_X86_64" → libseccomp's token; 0 if unknown. */
static uint32_t arch_token(const char *name) {
  if (!name)
    return 0;
  if (strncmp(name, "SCMP_ARCH_", 10) == 0)
    name += 10;
  char lower[32];
  size_t i = 0;
  for (; name[i] && i < sizeof(lower) - 1; i++)
    lower[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] - 'A' + 'a' : name[i]);
  lower[i] = '\0';
  return seccomp_arch_resolve_name(lower);
}

static bool list_has_native_arch(json_t *arr) {
  size_t i;
  json_t *a;
  json_array_foreach(arr, i, a) if (arch_token(json_string_value(a)) == seccomp_arch_native()) return true;
  return false;
}

/* Whether a rule applies to this task (no extra capabilities, native architecture). */
static bool rule_applies(json_t *rule) {
  json_t *inc = json_object_get(rule, "includes"), *exc = json_object_get(rule, "excludes");
  json_t *caps = json_object_get(inc, "caps"), *arches = json_object_get(inc, "arches");
  if (json_array_size(caps) > 0)
    return false;
  if (json_array_size(arches) > 0 && !list_has_native_arch(arches))
    return false;
  arches = json_object_get(exc, "arches");
  if (json_array_size(arches) > 0 && list_has_native_arch(arches))
    return false;
  return true;
}

static int add_rule(scmp_filter_ctx ctx, json_t *rule, size_t idx, uint32_t def_action, int def_errno,
                    ms_error **err) {
  char where[48];
  snprintf(where, sizeof(where), "syscalls[%zu]", idx);
  if (!json_is_object(rule))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: not an object", where);
  if (!rule_applies(rule))
    return 0;
  json_t *er = json_object_get(rule, "errnoRet");
  uint32_t action;
  if (parse_action(json_object_get(rule, "action"),
                   json_is_integer(er) ? (int)json_integer_value(er) : def_errno, where, &action, err) < 0)
    return MS_ERR;
  json_t *args = json_object_get(rule, "args");
  struct scmp_arg_cmp cmps[6];
  unsigned ncmp = 0;
  if (args && !json_is_null(args)) {
    if (!json_is_array(args) || json_array_size(args) > 6)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: `args` is not an array of at most 6", where);
    size_t i;
    json_t *a;
    json_array_foreach(args, i, a) {
      json_t *index = json_object_get(a, "index");
      enum scmp_compare op;
      if (!json_is_integer(index) || json_integer_value(index) < 0 || json_integer_value(index) > 5)
        return ms_error_set(err, MS_INVALID_ARGUMENT, "%s.args[%zu]: `index` not in 0..5", where, i);
      if (parse_op(json_string_value(json_object_get(a, "op")), &op) < 0)
        return ms_error_set(err, MS_INVALID_ARGUMENT, "%s.args[%zu]: unknown `op`", where, i);
      cmps[ncmp++] =
          (struct scmp_arg_cmp){.arg = (unsigned)json_integer_value(index),
                                .op = op,
                                .datum_a = (scmp_datum_t)json_integer_value(json_object_get(a, "value")),
                                .datum_b = (scmp_datum_t)json_integer_value(json_object_get(a, "valueTwo"))};
    }
  }
  json_t *names = json_object_get(rule, "names");
  json_t *one = json_object_get(rule, "name");
  if (!json_is_array(names) && !json_is_string(one))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: no `names`", where);
  if (action == def_action)
    return 0;
  size_t n = json_is_array(names) ? json_array_size(names) : 1;
  for (size_t i = 0; i < n; i++) {
    const char *name = json_string_value(json_is_array(names) ? json_array_get(names, i) : one);
    if (!name)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "%s.names[%zu]: not a string", where, i);
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR)
      continue; /* not on this architecture / libseccomp */
    int r = seccomp_rule_add_array(ctx, action, nr, ncmp, cmps);
    if (r < 0)
      return ms_error_set_errno(err, -r, "%s: rule for `%s`", where, name);
  }
  return 0;
}

int rt_seccomp_parse(const char *text, size_t len, const char *what, rt_seccomp **ret, ms_error **err) {
  json_error_t jerr;
  json_t *root = json_loadb(text, len, 0, &jerr);
  if (!root)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "seccomp profile %s: line %d: %s", what, jerr.line,
                        jerr.text);
  rt_seccomp *sc = ms_xcalloc(1, sizeof(*sc));
  json_t *der = json_object_get(root, "defaultErrnoRet");
  int def_errno = json_is_integer(der) ? (int)json_integer_value(der) : EPERM;
  uint32_t def_action;
  json_t *syscalls = json_object_get(root, "syscalls"), *arches = json_object_get(root, "architectures");
  if (!json_is_object(root) || parse_action(json_object_get(root, "defaultAction"), def_errno,
                                            "defaultAction", &def_action, err) < 0) {
    if (!json_is_object(root))
      ms_error_set(err, MS_INVALID_ARGUMENT, "not an object");
    goto fail;
  }
  sc->ctx = seccomp_init(def_action);
  if (!sc->ctx) {
    ms_error_set(err, MS_INTERNAL, "seccomp_init failed");
    goto fail;
  }
  /* A filter for another architecture's syscalls must not be a way around this one. */
  if (seccomp_attr_set(sc->ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS) < 0) {
    ms_error_set(err, MS_INTERNAL, "seccomp bad-arch action");
    goto fail;
  }
  size_t i;
  json_t *v;
  json_array_foreach(arches, i, v) {
    uint32_t tok = arch_token(json_string_value(v));
    int r = tok ? seccomp_arch_add(sc->ctx, tok) : 0;
    if (r < 0 && r != -EEXIST) {
      ms_error_set_errno(err, -r, "architectures[%zu]: `%s`", i, json_string_value(v));
      goto fail;
    }
  }
  if (syscalls && !json_is_array(syscalls)) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "`syscalls`: not an array");
    goto fail;
  }
  json_array_foreach(syscalls, i, v) if (add_rule(sc->ctx, v, i, def_action, def_errno, err) < 0) goto fail;
  json_decref(root);
  *ret = sc;
  return 0;
fail:
  json_decref(root);
  rt_seccomp_free(sc);
  return ms_error_prefix(err, "seccomp profile %s", what);
}

static bool name_ok(const char *name) {
  size_t n = strlen(name);
  return n > 0 && n <= 128 && name[0] != '.' &&
         strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

int rt_seccomp_load(const char *dir, const char *name, const char *default_name, rt_seccomp **ret,
                    ms_error **err) {
  if (!name || !*name)
    name = default_name;
  if (!name || strcmp(name, "unconfined") == 0) {
    *ret = NULL;
    return 0;
  }
  if (!name_ok(name))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "seccomp profile `%s`: not a valid name ([A-Za-z0-9_.-])",
                        name);
  if (!dir)
    return ms_error_set(err, MS_FAILED_PRECONDITION, "seccomp profile `%s`: no profiles directory configured",
                        name);
  _cleanup_free_ char *path = ms_xasprintf("%s/%s.json", dir, name);
  _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return ms_error_set(err, MS_NOT_FOUND, "seccomp profile `%s`: unknown (no `%s`)", name, path);
    return ms_error_set_errno(err, errno, "seccomp profile `%s`", path);
  }
  _cleanup_free_ char *buf = ms_xmalloc(RT_MAX_PROFILE_BYTES + 1);
  size_t len = 0;
  for (;;) {
    ssize_t n = read(fd, buf + len, RT_MAX_PROFILE_BYTES + 1 - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return ms_error_set_errno(err, errno, "seccomp profile `%s`", path);
    if (n == 0)
      break;
    len += (size_t)n;
    if (len > RT_MAX_PROFILE_BYTES)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "seccomp profile `%s`: too large", path);
  }
  _cleanup_free_ char *what = ms_xasprintf("`%s`", path);
  return rt_seccomp_parse(buf, len, what, ret, err);
}

int rt_seccomp_apply(rt_seccomp *sc, ms_error **err) {
  if (!sc)
    return 0;
  int r = seccomp_load(sc->ctx);
  if (r < 0)
    return ms_error_set_errno(err, -r, "load seccomp filter");
  return 0;
}
