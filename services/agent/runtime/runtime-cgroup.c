/* The container's cgroups: v1 (a directory per hierarchy: cpu, cpuacct, memory, pids) or v2
 * (one directory), detected from the filesystem type of /sys/fs/cgroup.
 *
 * Requests and limits (Mesos 1.10 semantics):
 *   cpu    v1 cpu.shares = 1024 × request, cpu.cfs_quota_us = limit × period (none if unlimited)
 *          v2 cpu.weight from the shares (runc's conversion), cpu.max = "quota period" or untouched
 *   memory v1 memory.limit_in_bytes (+ memsw at the same value: no swapping past the limit),
 *          memory.soft_limit_in_bytes = request; v2 memory.max, memory.swap.max = 0, memory.low
 *   pids   pids.max */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/fs.h"

#include "runtime.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

#define RT_CGROUP_MOUNT "/sys/fs/cgroup"
#define RT_CFS_PERIOD_US 100000

static const char *const v1_controllers[] = {"cpu", "cpuacct", "memory", "pids"};
#define RT_NCTRL MS_ARRAY_SIZE(v1_controllers)

struct rt_cgroup {
  bool v2;
  char *paths[RT_NCTRL]; /* v1: per controller, NULL when the hierarchy is shared or absent; v2: [0] */
  const char *by_ctrl[RT_NCTRL];
};

bool rt_cgroup_is_v2(void) {
  struct statfs st;
  return statfs(RT_CGROUP_MOUNT, &st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC;
}

const char *rt_cgroup_path(const rt_cgroup *cg, const char *controller) {
  if (cg->v2)
    return cg->paths[0];
  for (size_t i = 0; i < RT_NCTRL; i++)
    if (strcmp(v1_controllers[i], controller) == 0)
      return cg->by_ctrl[i];
  return NULL;
}

static int write_file(const char *dir, const char *file, const char *value, ms_error **err) {
  _cleanup_free_ char *path = ms_xasprintf("%s/%s", dir, file);
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return ms_error_set_errno(err, errno, "cgroup file `%s`", path);
  size_t len = strlen(value);
  ssize_t n = write(fd, value, len);
  int e = errno;
  close(fd);
  if (n != (ssize_t)len)
    return ms_error_set_errno(err, n < 0 ? e : EIO, "write `%s` to `%s`", value, path);
  return 0;
}

static int writef(const char *dir, const char *file, ms_error **err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int writef(const char *dir, const char *file, ms_error **err, const char *fmt, ...) {
  char buf[64];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return write_file(dir, file, buf, err);
}

static bool exists(const char *dir, const char *file) {
  _cleanup_free_ char *path = ms_xasprintf("%s/%s", dir, file);
  return access(path, F_OK) == 0;
}

static int configure_v1(rt_cgroup *cg, const rt_spec *s, ms_error **err) {
  const char *cpu = rt_cgroup_path(cg, "cpu"), *mem = rt_cgroup_path(cg, "memory"),
             *pids = rt_cgroup_path(cg, "pids");
  if (cpu && s->cpu_request > 0 &&
      writef(cpu, "cpu.shares", err, "%lld",
             (long long)(s->cpu_request * 1024 < 2 ? 2 : s->cpu_request * 1024)) < 0)
    return MS_ERR;
  if (cpu && s->cpu_limit != RT_UNLIMITED) {
    long long quota = (long long)(s->cpu_limit * RT_CFS_PERIOD_US);
    if (writef(cpu, "cpu.cfs_period_us", err, "%d", RT_CFS_PERIOD_US) < 0 ||
        writef(cpu, "cpu.cfs_quota_us", err, "%lld", quota < 1000 ? 1000 : quota) < 0)
      return MS_ERR;
  }
  if (mem && s->mem_limit != RT_UNLIMITED) {
    if (writef(mem, "memory.limit_in_bytes", err, "%lld", (long long)s->mem_limit) < 0)
      return MS_ERR;
    if (exists(mem, "memory.memsw.limit_in_bytes") &&
        writef(mem, "memory.memsw.limit_in_bytes", err, "%lld", (long long)s->mem_limit) < 0)
      return MS_ERR;
  }
  if (mem && s->mem_request > 0 &&
      writef(mem, "memory.soft_limit_in_bytes", err, "%lld", (long long)s->mem_request) < 0)
    return MS_ERR;
  if (pids && s->pids_limit > 0 && writef(pids, "pids.max", err, "%lld", (long long)s->pids_limit) < 0)
    return MS_ERR;
  return 0;
}

static int configure_v2(rt_cgroup *cg, const rt_spec *s, ms_error **err) {
  const char *dir = cg->paths[0];
  if (s->cpu_request > 0) {
    uint64_t shares = (uint64_t)(s->cpu_request * 1024);
    shares = shares < 2 ? 2 : shares > 262144 ? 262144 : shares;
    if (writef(dir, "cpu.weight", err, "%llu", (unsigned long long)(1 + ((shares - 2) * 9999) / 262142)) < 0)
      return MS_ERR;
  }
  if (s->cpu_limit != RT_UNLIMITED) {
    long long quota = (long long)(s->cpu_limit * RT_CFS_PERIOD_US);
    if (writef(dir, "cpu.max", err, "%lld %d", quota < 1000 ? 1000 : quota, RT_CFS_PERIOD_US) < 0)
      return MS_ERR;
  }
  if (s->mem_limit != RT_UNLIMITED) {
    if (writef(dir, "memory.max", err, "%lld", (long long)s->mem_limit) < 0)
      return MS_ERR;
    if (exists(dir, "memory.swap.max") && write_file(dir, "memory.swap.max", "0", err) < 0)
      return MS_ERR;
  }
  if (s->mem_request > 0 && writef(dir, "memory.low", err, "%lld", (long long)s->mem_request) < 0)
    return MS_ERR;
  if (s->pids_limit > 0 && writef(dir, "pids.max", err, "%lld", (long long)s->pids_limit) < 0)
    return MS_ERR;
  return 0;
}

/* v2: the controllers must be enabled in every ancestor's subtree_control. */
static int enable_v2_controllers(const char *parent_rel, ms_error **err) {
  _cleanup_free_ char *rel = ms_xstrdup(parent_rel);
  _cleanup_free_ char *dir = ms_xstrdup(RT_CGROUP_MOUNT);
  for (char *p = rel;;) {
    if (write_file(dir, "cgroup.subtree_control", "+cpu +memory +pids", err) < 0)
      return ms_error_prefix(err, "enable cgroup v2 controllers");
    if (!p)
      break;
    char *slash = strchr(p, '/');
    if (slash)
      *slash = '\0';
    char *next = ms_xasprintf("%s/%s", dir, p);
    free(dir);
    dir = next;
    p = slash ? slash + 1 : NULL;
  }
  return 0;
}

static void kill_procs(const char *dir) {
  _cleanup_free_ char *path = ms_xasprintf("%s/cgroup.procs", dir);
  _cleanup_fclose_ FILE *f = fopen(path, "re");
  long pid;
  while (f && fscanf(f, "%ld", &pid) == 1)
    if (pid > 0)
      kill((pid_t)pid, SIGKILL);
}

int rt_cgroup_destroy(rt_cgroup *cg, ms_error **err) {
  if (!cg)
    return 0;
  int rc = 0;
  for (size_t i = 0; i < RT_NCTRL; i++) {
    if (!cg->paths[i])
      continue;
    /* Processes just killed take a moment to leave: retry EBUSY for up to 2 s. */
    for (int attempt = 0;; attempt++) {
      if (rmdir(cg->paths[i]) == 0 || errno == ENOENT)
        break;
      if (errno != EBUSY || attempt == 400) {
        rc = ms_error_set_errno(err, errno, "rmdir `%s`", cg->paths[i]);
        break;
      }
      kill_procs(cg->paths[i]);
      nanosleep(&(struct timespec){0, 5 * 1000 * 1000}, NULL);
    }
    free(cg->paths[i]);
  }
  free(cg);
  return rc;
}

int rt_cgroup_create(const rt_spec *s, rt_cgroup **ret_cg, ms_error **err) {
  rt_cgroup *cg = ms_xcalloc(1, sizeof(*cg));
  cg->v2 = rt_cgroup_is_v2();
  size_t n = cg->v2 ? 1 : RT_NCTRL;
  char seen[RT_NCTRL][PATH_MAX];
  for (size_t i = 0; i < n; i++) {
    _cleanup_free_ char *base =
        cg->v2 ? ms_xstrdup(RT_CGROUP_MOUNT) : ms_xasprintf(RT_CGROUP_MOUNT "/%s", v1_controllers[i]);
    char real[PATH_MAX];
    if (!realpath(base, real)) {
      if (errno == ENOENT && !cg->v2)
        continue; /* controller not mounted (e.g. no pids): nothing to limit there */
      ms_error_set_errno(err, errno, "cgroup hierarchy `%s`", base);
      goto fail;
    }
    /* cpu and cpuacct are often one hierarchy (cpu,cpuacct): create it once */
    bool dup = false;
    for (size_t j = 0; j < i && !dup; j++)
      if (cg->by_ctrl[j] && strcmp(seen[j], real) == 0) {
        cg->by_ctrl[i] = cg->by_ctrl[j];
        dup = true;
      }
    ms_strlcpy(seen[i], real, sizeof(seen[i]));
    if (dup)
      continue;
    _cleanup_free_ char *parent = ms_xasprintf("%s/%s", real, s->cgroup_parent);
    if (ms_mkdirs(parent, err) < 0) /* kept: shared by every container */
      goto fail;
    if (cg->v2 && enable_v2_controllers(s->cgroup_parent, err) < 0)
      goto fail;
    char *path = ms_xasprintf("%s/%s/%s", real, s->cgroup_parent, s->id);
    if (mkdir(path, 0755) != 0) {
      int e = errno;
      if (e == EEXIST)
        ms_error_set(err, MS_ALREADY_EXISTS, "cgroup `%s`: exists (container `%s` already running?)", path,
                     s->id);
      else
        ms_error_set_errno(err, e, "mkdir `%s`", path);
      free(path);
      goto fail;
    }
    cg->paths[i] = path;
    cg->by_ctrl[i] = path;
  }
  if ((cg->v2 ? configure_v2(cg, s, err) : configure_v1(cg, s, err)) < 0)
    goto fail;
  *ret_cg = cg;
  return 0;
fail:
  rt_cgroup_destroy(cg, NULL);
  return MS_ERR;
}

int rt_cgroup_attach(rt_cgroup *cg, pid_t pid, ms_error **err) {
  for (size_t i = 0; i < RT_NCTRL; i++)
    if (cg->paths[i] && writef(cg->paths[i], "cgroup.procs", err, "%d", (int)pid) < 0)
      return MS_ERR;
  return 0;
}

int64_t rt_cgroup_oom_kills(rt_cgroup *cg) {
  const char *dir = rt_cgroup_path(cg, "memory");
  if (!dir)
    return 0;
  _cleanup_free_ char *path = ms_xasprintf("%s/%s", dir, cg->v2 ? "memory.events" : "memory.oom_control");
  _cleanup_fclose_ FILE *f = fopen(path, "re");
  char key[64];
  long long v;
  while (f && fscanf(f, "%63s %lld", key, &v) == 2)
    if (strcmp(key, "oom_kill") == 0)
      return v;
  /* kernels before 4.13 have no oom_kill counter on v1: failcnt says the limit was hit */
  return 0;
}
