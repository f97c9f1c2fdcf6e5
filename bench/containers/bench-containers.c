/* bench-containers: launch and destroy N containers of /bin/true, one after another and P at
 * a time, with meseta-runtime and, in the same run, with crun on an equivalent busybox
 * bundle; print launches/s and the ratio. Asserts nothing.
 *
 * Equivalent means: pid, mount, ipc, uts, cgroup and network namespaces; cgroups with cpu
 * shares and quota, a memory limit and a pids limit; the same seccomp profile (meseta's
 * default.json, which is also valid OCI seccomp). crun 1.8 refuses this machine's hybrid
 * cgroup layout, so its phase runs in a private mount namespace with cgroup2 unmounted
 * (docs: notes/platform-facts.md). Needs root and the crun and busybox-static packages.
 *
 *   bench-containers [--n 100] [--parallel 4] */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/flags.h"

extern char **environ;

static int64_t n_launch, parallel;
static char *runtime_bin, *profiles, *crun_bin, *busybox_bin;

static const ms_flag flags[] = {
    {"n", MS_FLAG_INT, &n_launch, "100", "Containers per measurement", "N"},
    {"parallel", MS_FLAG_INT, &parallel, "4", "Containers in flight in the parallel measurement", "P"},
    {"runtime", MS_FLAG_STRING, &runtime_bin, NULL, "meseta-runtime (default: $MESETA_BINARY_DIR/...)",
     "PATH"},
    {"seccomp-dir", MS_FLAG_STRING, &profiles, NULL, "Profiles (default: the source tree's)", "DIR"},
    {"crun", MS_FLAG_STRING, &crun_bin, "/usr/bin/crun", "crun binary", "PATH"},
    {"busybox", MS_FLAG_STRING, &busybox_bin, "/bin/busybox", "A static busybox for the crun bundle", "PATH"},
};
static const ms_flag_spec spec = {"bench-containers", "Container launches/s: meseta-runtime against crun.",
                                  flags, MS_ARRAY_SIZE(flags), NULL};

static char *work;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef char **(*argv_fn)(int i); /* the command for launch i; static storage per call */

static char **meseta_argv(int i) {
  static char spec_path[512];
  static char *argv[5];
  snprintf(spec_path, sizeof(spec_path), "%s/meseta-spec-%d.json", work, i);
  argv[0] = runtime_bin;
  argv[1] = "--seccomp-dir";
  argv[2] = profiles;
  argv[3] = spec_path;
  argv[4] = NULL;
  return argv;
}

static char **crun_argv(int i) {
  static char root[512], bundle[512], id[64];
  static char *argv[9];
  snprintf(root, sizeof(root), "%s/crun-state", work);
  snprintf(bundle, sizeof(bundle), "%s/bundle", work);
  snprintf(id, sizeof(id), "bench-crun-%d-%d", (int)getpid(), i);
  char *a[] = {crun_bin, "--root", root, "run", "--bundle", bundle, id, NULL};
  memcpy(argv, a, sizeof(a));
  return argv;
}

static pid_t spawn(char **argv) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) != 0)
    pid = -1;
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

/* Runs n launches, `width` at a time; returns launches/s (failures counted in *ret_failed). */
static double measure(argv_fn fn, int n, int width, int *ret_failed) {
  int started = 0, done = 0, failed = 0, running = 0;
  double t0 = now_s();
  while (done < n) {
    while (running < width && started < n) {
      if (spawn(fn(started++)) < 0)
        failed++, done++;
      else
        running++;
    }
    int st;
    if (wait(&st) > 0) {
      running--;
      done++;
      if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        failed++;
    } else if (errno == ECHILD) {
      break;
    }
  }
  *ret_failed = failed;
  return n / (now_s() - t0);
}

static int write_meseta_specs(int n) {
  _cleanup_free_ char *sandbox = ms_xasprintf("%s/sandbox", work);
  if (mkdir(sandbox, 0755) != 0)
    return -1;
  for (int i = 0; i < n; i++) {
    _cleanup_free_ char *path = ms_xasprintf("%s/meseta-spec-%d.json", work, i);
    _cleanup_free_ char *id = ms_xasprintf("bench-%d-%d", (int)getpid(), i);
    json_t *s = json_pack("{s:s, s:s, s:{s:[s]}, s:s, s:{s:f, s:f}, s:{s:I, s:I}, s:I}", "id", id, "sandbox",
                          sandbox, "command", "argv", "/bin/true", "network", "none", "cpus", "request", 0.1,
                          "limit", 1.0, "memory", "request", (json_int_t)(64 << 20), "limit",
                          (json_int_t)(64 << 20), "pids_limit", (json_int_t)64);
    int r = json_dump_file(s, path, 0);
    json_decref(s);
    if (r != 0)
      return -1;
  }
  return 0;
}

/* Drops what OCI's seccomp section does not know (comments, includes, excludes). */
static json_t *oci_seccomp(void) {
  _cleanup_free_ char *path = ms_xasprintf("%s/default.json", profiles);
  json_t *p = json_load_file(path, 0, NULL);
  if (!p)
    return NULL;
  size_t i;
  json_t *rule;
  json_array_foreach(json_object_get(p, "syscalls"), i, rule) {
    json_object_del(rule, "comment");
    json_object_del(rule, "includes");
    json_object_del(rule, "excludes");
  }
  return p;
}

static int make_bundle(void) {
  _cleanup_free_ char *bin = ms_xasprintf("%s/bundle/rootfs/bin", work);
  _cleanup_free_ char *cmd =
      ms_xasprintf("mkdir -p '%s' && cp '%s' '%s/busybox' && ln -s busybox '%s/true' && cd '%s/bundle' && "
                   "'%s' spec >/dev/null && mkdir -p '%s/crun-state'",
                   bin, busybox_bin, bin, bin, work, crun_bin, work);
  if (system(cmd) != 0)
    return -1;
  _cleanup_free_ char *cfg = ms_xasprintf("%s/bundle/config.json", work);
  json_t *c = json_load_file(cfg, 0, NULL);
  json_t *sc = oci_seccomp();
  if (!c || !sc)
    return -1;
  json_t *proc = json_object_get(c, "process"), *linux_ = json_object_get(c, "linux");
  json_object_set_new(proc, "args", json_pack("[s]", "/bin/true"));
  json_object_set_new(proc, "terminal", json_false());
  json_array_append_new(json_object_get(linux_, "namespaces"), json_pack("{s:s}", "type", "cgroup"));
  json_object_set_new(linux_, "resources",
                      json_pack("{s:{s:I, s:I, s:I}, s:{s:I}, s:{s:I}}", "cpu", "shares", (json_int_t)102,
                                "quota", (json_int_t)100000, "period", (json_int_t)100000, "memory", "limit",
                                (json_int_t)(64 << 20), "pids", "limit", (json_int_t)64));
  json_object_set_new(linux_, "seccomp", sc);
  int r = json_dump_file(c, cfg, JSON_INDENT(1));
  json_decref(c);
  return r;
}

int main(int argc, char **argv) {
  ms_error *err = NULL;
  int r = ms_flags_parse(&spec, argc, argv, NULL, &err);
  if (r != 0) {
    if (r < 0)
      fprintf(stderr, "bench-containers: %s\n", err->msg);
    ms_error_free(err);
    return r < 0 ? 2 : 0;
  }
  const char *bdir = getenv("MESETA_BINARY_DIR"), *sdir = getenv("MESETA_SOURCE_DIR");
  if (!runtime_bin)
    runtime_bin = ms_xasprintf("%s/services/agent/runtime/meseta-runtime", bdir ? bdir : ".");
  if (!profiles)
    profiles = ms_xasprintf("%s/services/agent/runtime/profiles", sdir ? sdir : ".");
  char tmpl[] = "/tmp/bench-containers-XXXXXX";
  work = mkdtemp(tmpl);
  if (!work || write_meseta_specs((int)(n_launch > parallel ? n_launch : parallel)) < 0) {
    perror("bench-containers: work directory");
    return 1;
  }
  int n = (int)n_launch, p = (int)parallel, f1, f2, f3 = 0, f4 = 0;
  printf(
      "bench-containers: %d launches of /bin/true, %d in parallel; namespaces pid mount ipc uts cgroup net, "
      "cgroups cpu memory pids, seccomp default\n",
      n, p);
  double m_seq = measure(meseta_argv, n, 1, &f1);
  double m_par = measure(meseta_argv, n, p, &f2);
  printf("  meseta-runtime  sequential %8.1f launches/s (%.2f ms each)  parallel %8.1f launches/s  failures "
         "%d\n",
         m_seq, 1000 / m_seq, m_par, f1 + f2);

  double c_seq = 0, c_par = 0;
  bool have_crun = access(crun_bin, X_OK) == 0 && access(busybox_bin, R_OK) == 0;
  if (!have_crun) {
    printf("  crun            not installed (apt-get install crun busybox-static): no baseline\n");
  } else if (make_bundle() < 0) {
    printf("  crun            could not build the busybox bundle: no baseline\n");
  } else {
    /* crun 1.8 and a hybrid layout: hide cgroup2 in a private mount namespace (this process only). */
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
      perror("bench-containers: private mount namespace");
    struct stat st;
    if (stat("/sys/fs/cgroup/unified", &st) == 0)
      umount2("/sys/fs/cgroup/unified", MNT_DETACH);
    c_seq = measure(crun_argv, n, 1, &f3);
    c_par = measure(crun_argv, n, p, &f4);
    printf("  crun            sequential %8.1f launches/s (%.2f ms each)  parallel %8.1f launches/s  "
           "failures %d\n",
           c_seq, 1000 / c_seq, c_par, f3 + f4);
    printf("  ratio meseta/crun: sequential %.2fx  parallel %.2fx\n", m_seq / c_seq, m_par / c_par);
  }
  _cleanup_free_ char *rm = ms_xasprintf("rm -rf '%s'", work);
  if (system(rm) != 0)
    fprintf(stderr, "bench-containers: could not remove `%s`\n", work);
  ms_flags_free(&spec);
  return 0;
}
