/* The container spec (JSON → rt_spec) and the status file (rt_result → JSON). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "meseta/alloc.h"

#include "runtime.h"

#define RT_MAX_SPEC_BYTES (1 << 20)

static const struct {
  const char *name;
  int resource;
} rlimit_names[] = {
    {"as", RLIMIT_AS},           {"core", RLIMIT_CORE},
    {"cpu", RLIMIT_CPU},         {"data", RLIMIT_DATA},
    {"fsize", RLIMIT_FSIZE},     {"locks", RLIMIT_LOCKS},
    {"memlock", RLIMIT_MEMLOCK}, {"msgqueue", RLIMIT_MSGQUEUE},
    {"nice", RLIMIT_NICE},       {"nofile", RLIMIT_NOFILE},
    {"nproc", RLIMIT_NPROC},     {"rss", RLIMIT_RSS},
    {"rtprio", RLIMIT_RTPRIO},   {"sigpending", RLIMIT_SIGPENDING},
    {"stack", RLIMIT_STACK},
};

void rt_spec_free(rt_spec *s) {
  if (!s)
    return;
  for (char **p = s->argv; p && *p; p++)
    free(*p);
  for (char **p = s->env; p && *p; p++)
    free(*p);
  free(s->argv);
  free(s->env);
  free(s->id);
  free(s->rootfs);
  free(s->sandbox);
  free(s->cwd);
  free(s->hostname);
  free(s->seccomp_profile);
  free(s->cgroup_parent);
  free(s->status_file);
  free(s);
}

bool rt_spec_burstable(const rt_spec *s) {
  bool mem = s->mem_limit == RT_UNLIMITED || (s->mem_request > 0 && s->mem_limit > s->mem_request);
  bool cpu = s->cpu_limit == RT_UNLIMITED || (s->cpu_request > 0 && s->cpu_limit > s->cpu_request);
  return mem || cpu;
}

static bool id_ok(const char *id) {
  size_t n = strlen(id);
  if (n == 0 || n > 128 || id[0] == '.')
    return false;
  return strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

static int get_string(json_t *o, const char *key, bool required, char **ret, ms_error **err) {
  json_t *v = json_object_get(o, key);
  if (!v || json_is_null(v)) {
    if (required)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "field `%s`: required", key);
    return 0;
  }
  if (!json_is_string(v))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `%s`: not a string", key);
  *ret = ms_xstrdup(json_string_value(v));
  return 0;
}

/* A number, or "unlimited" → RT_UNLIMITED when allowed. */
static int get_amount(json_t *o, const char *obj, const char *key, bool unlimited_ok, double *ret,
                      ms_error **err) {
  json_t *v = json_object_get(o, key);
  if (!v || json_is_null(v))
    return 0;
  if (json_is_string(v) && unlimited_ok && strcmp(json_string_value(v), "unlimited") == 0) {
    *ret = RT_UNLIMITED;
    return 0;
  }
  if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) <= 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `%s.%s`: not a positive number%s", obj, key,
                        unlimited_ok ? " or \"unlimited\"" : "");
  *ret = json_number_value(v);
  return 0;
}

static int parse_resources(json_t *root, rt_spec *s, ms_error **err) {
  json_t *cpus = json_object_get(root, "cpus"), *mem = json_object_get(root, "memory");
  double req = 0, lim = 0;
  if (cpus && !json_is_object(cpus))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `cpus`: not an object");
  if (cpus && (get_amount(cpus, "cpus", "request", false, &req, err) < 0 ||
               get_amount(cpus, "cpus", "limit", true, &lim, err) < 0))
    return MS_ERR;
  s->cpu_request = req;
  s->cpu_limit = lim == 0 ? (req > 0 ? req : RT_UNLIMITED) : lim;
  if (s->cpu_limit != RT_UNLIMITED && s->cpu_limit < 0.01)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `cpus.limit`: %g is below 0.01", s->cpu_limit);
  if (s->cpu_limit != RT_UNLIMITED && req > s->cpu_limit)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `cpus.request`: %g is above the limit %g", req,
                        s->cpu_limit);
  req = lim = 0;
  if (mem && !json_is_object(mem))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `memory`: not an object");
  if (mem && (get_amount(mem, "memory", "request", false, &req, err) < 0 ||
              get_amount(mem, "memory", "limit", true, &lim, err) < 0))
    return MS_ERR;
  s->mem_request = (int64_t)req;
  s->mem_limit = lim == 0 ? (req > 0 ? (int64_t)req : RT_UNLIMITED) : (int64_t)lim;
  if (s->mem_limit != RT_UNLIMITED && s->mem_limit < (1 << 20))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `memory.limit`: %lld bytes is below 1 MiB",
                        (long long)s->mem_limit);
  if (s->mem_limit != RT_UNLIMITED && s->mem_request > s->mem_limit)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `memory.request`: above the limit");
  json_t *pids = json_object_get(root, "pids_limit");
  if (pids && (!json_is_integer(pids) || json_integer_value(pids) < 0))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `pids_limit`: not a non-negative integer");
  s->pids_limit = pids ? json_integer_value(pids) : 0;
  return 0;
}

static int parse_rlimit_value(json_t *v, const char *name, uint64_t *ret, ms_error **err) {
  if (json_is_string(v) && strcmp(json_string_value(v), "unlimited") == 0) {
    *ret = RLIM_INFINITY;
    return 0;
  }
  if (!json_is_integer(v) || json_integer_value(v) < 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "field `rlimits.%s`: not a non-negative integer or \"unlimited\"", name);
  *ret = (uint64_t)json_integer_value(v);
  return 0;
}

static int parse_rlimits(json_t *root, rt_spec *s, ms_error **err) {
  json_t *rl = json_object_get(root, "rlimits");
  if (!rl)
    return 0;
  if (!json_is_object(rl))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `rlimits`: not an object");
  const char *key;
  json_t *v;
  json_object_foreach(rl, key, v) {
    size_t i = 0;
    while (i < MS_ARRAY_SIZE(rlimit_names) && strcmp(rlimit_names[i].name, key) != 0)
      i++;
    if (i == MS_ARRAY_SIZE(rlimit_names))
      return ms_error_set(err, MS_INVALID_ARGUMENT, "field `rlimits.%s`: unknown limit", key);
    if (s->n_rlimits == RT_MAX_RLIMITS)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "field `rlimits`: too many");
    rt_rlimit *r = &s->rlimits[s->n_rlimits++];
    r->resource = rlimit_names[i].resource;
    /* [soft, hard] or one value for both */
    if (json_is_array(v) && json_array_size(v) == 2) {
      if (parse_rlimit_value(json_array_get(v, 0), key, &r->soft, err) < 0 ||
          parse_rlimit_value(json_array_get(v, 1), key, &r->hard, err) < 0)
        return MS_ERR;
    } else {
      if (parse_rlimit_value(v, key, &r->soft, err) < 0)
        return MS_ERR;
      r->hard = r->soft;
    }
    if (r->soft > r->hard)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "field `rlimits.%s`: soft above hard", key);
  }
  return 0;
}

static int parse_command(json_t *root, rt_spec *s, ms_error **err) {
  json_t *cmd = json_object_get(root, "command");
  if (!json_is_object(cmd))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `command`: required, an object");
  json_t *shell = json_object_get(cmd, "shell"), *argv = json_object_get(cmd, "argv");
  if (json_is_string(shell)) {
    s->argv = ms_xcalloc(4, sizeof(char *));
    s->argv[0] = ms_xstrdup("/bin/sh");
    s->argv[1] = ms_xstrdup("-c");
    s->argv[2] = ms_xstrdup(json_string_value(shell));
    return 0;
  }
  if (!json_is_array(argv) || json_array_size(argv) == 0 || json_array_size(argv) > RT_MAX_ARGS)
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "field `command`: needs `shell` (a string) or `argv` "
                        "(1 to %d strings)",
                        RT_MAX_ARGS);
  size_t n = json_array_size(argv);
  s->argv = ms_xcalloc(n + 1, sizeof(char *));
  for (size_t i = 0; i < n; i++) {
    json_t *a = json_array_get(argv, i);
    if (!json_is_string(a))
      return ms_error_set(err, MS_INVALID_ARGUMENT, "field `command.argv[%zu]`: not a string", i);
    s->argv[i] = ms_xstrdup(json_string_value(a));
  }
  if (!*s->argv[0])
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `command.argv[0]`: empty");
  return 0;
}

static int parse_env(json_t *root, rt_spec *s, ms_error **err) {
  json_t *env = json_object_get(root, "env");
  if (env && !json_is_object(env))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `env`: not an object of strings");
  size_t n = env ? json_object_size(env) : 0, i = 0;
  bool has_path = env && json_object_get(env, "PATH");
  s->env = ms_xcalloc(n + 2, sizeof(char *));
  const char *key;
  json_t *v;
  json_object_foreach(env, key, v) {
    if (!json_is_string(v) || !*key || strchr(key, '='))
      return ms_error_set(err, MS_INVALID_ARGUMENT, "field `env.%s`: bad name or not a string", key);
    s->env[i++] = ms_xasprintf("%s=%s", key, json_string_value(v));
  }
  if (!has_path)
    s->env[i] = ms_xstrdup("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  return 0;
}

static int parse_user(json_t *root, rt_spec *s, ms_error **err) {
  json_t *u = json_object_get(root, "user");
  if (!u || json_is_null(u))
    return 0;
  s->has_user = true;
  if (json_is_object(u)) {
    json_t *uid = json_object_get(u, "uid"), *gid = json_object_get(u, "gid");
    if (!json_is_integer(uid) || json_integer_value(uid) < 0 || json_integer_value(uid) > 0xfffffffe)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "field `user.uid`: not a valid uid");
    s->uid = (uid_t)json_integer_value(uid);
    s->gid = json_is_integer(gid) ? (gid_t)json_integer_value(gid) : (gid_t)s->uid;
    return 0;
  }
  if (!json_is_string(u))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `user`: a name or {uid, gid}");
  struct passwd *pw = getpwnam(json_string_value(u));
  if (!pw)
    return ms_error_set(err, MS_NOT_FOUND, "field `user`: no user `%s` on this host", json_string_value(u));
  s->uid = pw->pw_uid;
  s->gid = pw->pw_gid;
  return 0;
}

static int parse_root(json_t *root, rt_spec *s, ms_error **err) {
  if (!json_is_object(root))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "not a JSON object");
  if (get_string(root, "id", true, &s->id, err) < 0)
    return MS_ERR;
  if (!id_ok(s->id))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `id`: `%s` is not 1-128 of [A-Za-z0-9_.-]", s->id);
  if (get_string(root, "rootfs", false, &s->rootfs, err) < 0 ||
      get_string(root, "sandbox", true, &s->sandbox, err) < 0 ||
      get_string(root, "cwd", false, &s->cwd, err) < 0 ||
      get_string(root, "hostname", false, &s->hostname, err) < 0 ||
      get_string(root, "seccomp_profile", false, &s->seccomp_profile, err) < 0 ||
      get_string(root, "cgroup_parent", false, &s->cgroup_parent, err) < 0 ||
      get_string(root, "status_file", false, &s->status_file, err) < 0)
    return MS_ERR;
  if (s->rootfs && !*s->rootfs) {
    free(s->rootfs);
    s->rootfs = NULL;
  }
  if (s->rootfs && s->rootfs[0] != '/')
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `rootfs`: `%s` is not absolute", s->rootfs);
  if (s->sandbox[0] != '/')
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `sandbox`: `%s` is not absolute", s->sandbox);
  if (!s->cwd)
    s->cwd = ms_xstrdup("/mnt/sandbox");
  if (!s->hostname)
    s->hostname = ms_xstrndup(s->id, 63);
  if (!s->cgroup_parent)
    s->cgroup_parent = ms_xstrdup("meseta");
  if (strstr(s->cgroup_parent, "..") || s->cgroup_parent[0] == '/' || !*s->cgroup_parent)
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "field `cgroup_parent`: `%s` must be relative, without `..`", s->cgroup_parent);
  json_t *net = json_object_get(root, "network");
  if (net && (!json_is_string(net) ||
              (strcmp(json_string_value(net), "host") != 0 && strcmp(json_string_value(net), "none") != 0)))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `network`: \"host\" or \"none\"");
  s->new_net = net && strcmp(json_string_value(net), "none") == 0;
  json_t *grace = json_object_get(root, "kill_grace_ms"), *oom = json_object_get(root, "oom_score_adj");
  if (grace && (!json_is_integer(grace) || json_integer_value(grace) < 0))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `kill_grace_ms`: not a non-negative integer");
  s->kill_grace_ms = grace ? json_integer_value(grace) : 5000;
  if (oom && (!json_is_integer(oom) || json_integer_value(oom) < -1000 || json_integer_value(oom) > 1000))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `oom_score_adj`: not an integer in [-1000, 1000]");
  s->oom_score_set = oom != NULL;
  s->oom_score_adj = oom ? (int)json_integer_value(oom) : 0;
  if (parse_command(root, s, err) < 0 || parse_env(root, s, err) < 0 || parse_user(root, s, err) < 0 ||
      parse_resources(root, s, err) < 0 || parse_rlimits(root, s, err) < 0)
    return MS_ERR;
  if (!s->oom_score_set)
    s->oom_score_adj = rt_spec_burstable(s) ? 500 : 0;
  return 0;
}

int rt_spec_parse(const char *text, size_t len, rt_spec **ret_spec, ms_error **err) {
  json_error_t jerr;
  json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!root)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "line %d: %s", jerr.line, jerr.text);
  rt_spec *s = ms_xcalloc(1, sizeof(*s));
  int r = parse_root(root, s, err);
  json_decref(root);
  if (r < 0) {
    rt_spec_free(s);
    return MS_ERR;
  }
  *ret_spec = s;
  return 0;
}

int rt_spec_load(const char *path, rt_spec **ret_spec, ms_error **err) {
  _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return ms_error_set_errno(err, errno, "container spec `%s`", path);
  _cleanup_free_ char *buf = ms_xmalloc(RT_MAX_SPEC_BYTES + 1);
  size_t len = 0;
  for (;;) {
    ssize_t n = read(fd, buf + len, RT_MAX_SPEC_BYTES + 1 - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return ms_error_set_errno(err, errno, "container spec `%s`", path);
    if (n == 0)
      break;
    len += (size_t)n;
    if (len > RT_MAX_SPEC_BYTES)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "container spec `%s`: larger than %d bytes", path,
                          RT_MAX_SPEC_BYTES);
  }
  if (rt_spec_parse(buf, len, ret_spec, err) < 0)
    return ms_error_prefix(err, "container spec `%s`", path);
  return 0;
}

/* ---- results ---- */

const char *rt_state_name(rt_state st) {
  switch (st) {
  case RT_EXITED:
    return "exited";
  case RT_KILLED:
    return "killed";
  case RT_OOM:
    return "memory_limitation";
  case RT_FAILED:
    return "failed";
  }
  return "unknown";
}

int rt_exit_code(const rt_result *r) {
  switch (r->state) {
  case RT_EXITED:
    return r->exit_code == 0 && r->signal == 0 ? 0 : 1;
  case RT_OOM:
    return 2;
  case RT_KILLED:
    return 3;
  case RT_FAILED:
    return r->start_errno == ENOENT ? 127 : r->start_errno == EACCES || r->start_errno == ENOEXEC ? 126 : 125;
  }
  return 125;
}

void rt_result_release(rt_result *r) {
  free(r->message);
  r->message = NULL;
}

char *rt_result_json(const rt_spec *s, const rt_result *r) {
  json_t *o = json_object();
  json_object_set_new(o, "id", json_string(s ? s->id : ""));
  json_object_set_new(o, "state", json_string(rt_state_name(r->state)));
  if (r->state != RT_FAILED) {
    json_object_set_new(o, "exit_code", json_integer(r->exit_code));
    json_object_set_new(o, "signal", json_integer(r->signal));
  }
  if (r->state == RT_OOM)
    json_object_set_new(o, "reason", json_string("memory limitation"));
  json_object_set_new(o, "oom_killed", json_boolean(r->state == RT_OOM));
  json_object_set_new(o, "pid", json_integer(r->pid));
  json_object_set_new(o, "message", json_string(r->message ? r->message : ""));
  char *text = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
  json_decref(o);
  if (!text)
    text = ms_xstrdup("{}");
  return text;
}

int rt_result_write(const rt_spec *s, const rt_result *r, ms_error **err) {
  if (!s || !s->status_file)
    return 0;
  _cleanup_free_ char *text = rt_result_json(s, r);
  _cleanup_free_ char *tmp = ms_xasprintf("%s.tmp.%d", s->status_file, (int)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0)
    return ms_error_set_errno(err, errno, "status file `%s`", tmp);
  size_t len = strlen(text);
  bool ok = write(fd, text, len) == (ssize_t)len && write(fd, "\n", 1) == 1;
  int e = errno;
  if (close(fd) != 0 && ok) {
    ok = false;
    e = errno;
  }
  if (!ok || rename(tmp, s->status_file) != 0) {
    e = ok ? errno : e;
    unlink(tmp);
    return ms_error_set_errno(err, e, "status file `%s`", s->status_file);
  }
  return 0;
}
