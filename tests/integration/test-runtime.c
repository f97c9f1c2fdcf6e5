/* meseta-runtime with real containers on this kernel: namespaces, cgroups (limits written,
 * OOM reported as a memory limitation), the default seccomp profile, launch errors, and no
 * cgroup, mount or process left behind on any path.
 *
 * The test binary doubles as the task that probes from inside: copied into the sandbox, it
 * runs as `/mnt/sandbox/probe --probe-...` (see probe_main). */
#include <dirent.h>
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
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "meseta/alloc.h"

#include "proc.h"
#include "runtime.h"
#include "testlib.h"

extern char **environ;

/* ---- the probe, run inside the container ---- */

static int probe_main(const char *mode) {
  if (strcmp(mode, "--probe-syscalls") == 0) {
    int m = mount("none", "/tmp", "tmpfs", 0, NULL) == 0 ? 0 : errno;
    int u = unshare(CLONE_NEWNS) == 0 ? 0 : errno;
    int k = syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 0) >= 0 ? 0 : errno;
    printf("mount=%d unshare=%d keyctl=%d\n", m, u, k);
    return 0;
  }
  if (strcmp(mode, "--probe-pid") == 0) {
    char ns[128] = "";
    ssize_t n = readlink("/proc/self/ns/pid", ns, sizeof(ns) - 1);
    ns[n > 0 ? n : 0] = '\0';
    printf("pid=%d ns=%s procs=", (int)getpid(), ns);
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d)))
      if (e->d_name[0] >= '0' && e->d_name[0] <= '9')
        printf("%s,", e->d_name);
    if (d)
      closedir(d);
    printf("\n");
    return 0;
  }
  return 2;
}

/* ---- running the runtime ---- */

typedef struct run {
  char *dir, *sandbox, *spec_path;
  pid_t pid;
  int code;       /* the runtime's exit code */
  json_t *status; /* the status file */
} run;

static char *profiles_dir(void) {
  const char *src = getenv("MESETA_SOURCE_DIR");
  return ms_xasprintf("%s/services/agent/runtime/profiles", src ? src : ".");
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "re");
  if (!f)
    return ms_xstrdup("");
  char *buf = ms_xcalloc(1, 1 << 16);
  size_t n = fread(buf, 1, (1 << 16) - 1, f);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

static void copy_probe(const char *sandbox) {
  _cleanup_free_ char *dst = ms_xasprintf("%s/probe", sandbox);
  int in = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
  CU_ASSERT_FATAL(in >= 0 && out >= 0);
  char buf[65536];
  ssize_t n;
  while ((n = read(in, buf, sizeof(buf))) > 0)
    CU_ASSERT_FATAL(write(out, buf, (size_t)n) == n);
  close(in);
  close(out);
}

/* Writes the spec (a JSON object given as text, to which id, sandbox and status_file are
 * added) and starts the runtime. */
static void run_start(run *r, const char *id, const char *spec_json) {
  memset(r, 0, sizeof(*r));
  r->dir = ms_test_tmpdir("test-runtime");
  r->sandbox = ms_xasprintf("%s/sandbox", r->dir);
  CU_ASSERT_FATAL(chmod(r->dir, 0755) == 0 && mkdir(r->sandbox, 0777) == 0 && chmod(r->sandbox, 0777) == 0);
  copy_probe(r->sandbox);
  json_error_t jerr;
  json_t *spec = json_loads(spec_json, 0, &jerr);
  if (!spec)
    fprintf(stderr, "bad test spec: %s\n", jerr.text);
  CU_ASSERT_PTR_NOT_NULL_FATAL(spec);
  _cleanup_free_ char *status = ms_xasprintf("%s/status.json", r->dir);
  json_object_set_new(spec, "id", json_string(id));
  json_object_set_new(spec, "sandbox", json_string(r->sandbox));
  json_object_set_new(spec, "status_file", json_string(status));
  r->spec_path = ms_xasprintf("%s/spec.json", r->dir);
  CU_ASSERT_FATAL(json_dump_file(spec, r->spec_path, 0) == 0);
  json_decref(spec);

  _cleanup_free_ char *bin = ms_test_binary("services/agent/runtime/meseta-runtime");
  _cleanup_free_ char *profiles = profiles_dir();
  _cleanup_free_ char *log = ms_xasprintf("%s/runtime.log", r->dir);
  char *argv[] = {bin, "--seccomp-dir", profiles, r->spec_path, NULL};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  CU_ASSERT_FATAL(posix_spawn(&r->pid, bin, &fa, NULL, argv, environ) == 0);
  posix_spawn_file_actions_destroy(&fa);
}

static void run_wait(run *r) {
  int st;
  CU_ASSERT_FATAL(waitpid(r->pid, &st, 0) == r->pid);
  r->code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  _cleanup_free_ char *status = ms_xasprintf("%s/status.json", r->dir);
  json_error_t jerr;
  r->status = json_load_file(status, 0, &jerr);
  _cleanup_free_ char *log_path = ms_xasprintf("%s/runtime.log", r->dir);
  _cleanup_free_ char *log_text = read_text(log_path);
  if (!r->status) {
    /* a spec too broken to name its status file: the same line is on stdout */
    for (char *line = log_text; line && *line && !r->status;
         line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
      if (*line == '{')
        r->status = json_loadb(line, strcspn(line, "\n"), 0, &jerr);
  }
  if (!r->status) {
    _cleanup_free_ char *log = ms_xasprintf("%s/runtime.log", r->dir);
    _cleanup_free_ char *text = read_text(log);
    fprintf(stderr, "no status file (runtime exit %d): %s\n", r->code, text);
  }
  CU_ASSERT_PTR_NOT_NULL_FATAL(r->status);
}

static void run_sync(run *r, const char *id, const char *spec_json) {
  run_start(r, id, spec_json);
  run_wait(r);
}

static const char *status_str(run *r, const char *key) {
  const char *s = json_string_value(json_object_get(r->status, key));
  return s ? s : "";
}

static char *sandbox_file(run *r, const char *name) {
  _cleanup_free_ char *p = ms_xasprintf("%s/%s", r->sandbox, name);
  return read_text(p);
}

static void run_free(run *r) {
  json_decref(r->status);
  ms_test_rmtree(r->dir);
  free(r->dir);
  free(r->sandbox);
  free(r->spec_path);
}

/* Nothing of container `id` remains: no cgroup, no mount of its sandbox, no process
 * started from its sandbox or spec. */
static void assert_no_leak(run *r, const char *id) {
  static const char *const ctrls[] = {"cpu", "cpuacct", "memory", "pids"};
  for (size_t i = 0; i < MS_ARRAY_SIZE(ctrls); i++) {
    _cleanup_free_ char *p = rt_cgroup_is_v2() ? ms_xasprintf("/sys/fs/cgroup/meseta/%s", id)
                                               : ms_xasprintf("/sys/fs/cgroup/%s/meseta/%s", ctrls[i], id);
    if (access(p, F_OK) == 0)
      fprintf(stderr, "leaked cgroup `%s`\n", p);
    CU_ASSERT_NOT_EQUAL(access(p, F_OK), 0);
  }
  _cleanup_free_ char *mounts = read_text("/proc/self/mountinfo");
  CU_ASSERT_PTR_NULL(strstr(mounts, r->sandbox));
  DIR *d = opendir("/proc");
  struct dirent *e;
  while (d && (e = readdir(d))) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9')
      continue;
    _cleanup_free_ char *path = ms_xasprintf("/proc/%s/cmdline", e->d_name);
    char buf[4096];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
    if (fd >= 0)
      close(fd);
    if (n <= 0)
      continue;
    for (ssize_t i = 0; i < n; i++)
      buf[i] = buf[i] ? buf[i] : ' ';
    buf[n] = '\0';
    bool leak = strstr(buf, r->spec_path) || strstr(buf, "/mnt/sandbox/probe");
    if (leak)
      fprintf(stderr, "leaked process %s: %s\n", e->d_name, buf);
    CU_ASSERT_FALSE(leak);
  }
  if (d)
    closedir(d);
}

/* ---- the cases ---- */

static void test_ls_works_and_output_goes_to_sandbox(void) {
  run r;
  run_sync(&r, "t-ls", "{\"command\":{\"argv\":[\"ls\",\"/\"]}}");
  CU_ASSERT_EQUAL(r.code, 0);
  CU_ASSERT_STRING_EQUAL(status_str(&r, "state"), "exited");
  _cleanup_free_ char *out = sandbox_file(&r, "stdout");
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "usr"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "proc"));
  assert_no_leak(&r, "t-ls");
  run_free(&r);
}

static void test_default_profile_refuses_mount_unshare_keyctl(void) {
  run r;
  run_sync(&r, "t-seccomp", "{\"command\":{\"argv\":[\"/mnt/sandbox/probe\",\"--probe-syscalls\"]}}");
  _cleanup_free_ char *out = sandbox_file(&r, "stdout");
  _cleanup_free_ char *err = sandbox_file(&r, "stderr");
  if (r.code != 0)
    fprintf(stderr, "probe: %s / %s / %s\n", out, err, status_str(&r, "message"));
  CU_ASSERT_EQUAL(r.code, 0);
  CU_ASSERT_STRING_EQUAL(out, "mount=1 unshare=1 keyctl=1\n"); /* EPERM, three times */
  assert_no_leak(&r, "t-seccomp");
  run_free(&r);
  /* the same task unconfined can do all three: it is the profile that refused them */
  run_sync(&r, "t-unconfined",
           "{\"seccomp_profile\":\"unconfined\","
           "\"command\":{\"argv\":[\"/mnt/sandbox/probe\",\"--probe-syscalls\"]}}");
  _cleanup_free_ char *out2 = sandbox_file(&r, "stdout");
  CU_ASSERT_STRING_EQUAL(out2, "mount=0 unshare=0 keyctl=0\n");
  assert_no_leak(&r, "t-unconfined");
  run_free(&r);
}

static void test_new_pid_namespace_and_private_proc(void) {
  char host_ns[128] = "";
  ssize_t n = readlink("/proc/self/ns/pid", host_ns, sizeof(host_ns) - 1);
  CU_ASSERT_FATAL(n > 0);
  host_ns[n] = '\0';
  run r;
  run_sync(&r, "t-pidns",
           "{\"network\":\"none\",\"command\":{\"argv\":[\"/mnt/sandbox/probe\",\"--probe-pid\"]}}");
  CU_ASSERT_EQUAL(r.code, 0);
  _cleanup_free_ char *out = sandbox_file(&r, "stdout");
  /* pid 2 under the container's init (pid 1); /proc shows those two and nothing else */
  _cleanup_free_ char *want_prefix = ms_xasprintf("pid=2 ns=pid:[");
  CU_ASSERT_EQUAL(strncmp(out, want_prefix, strlen(want_prefix)), 0);
  CU_ASSERT_PTR_NULL(strstr(out, host_ns));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "procs=1,2,\n") ? out : strstr(out, "procs=2,1,\n"));
  if (!strstr(out, "procs=1,2,\n") && !strstr(out, "procs=2,1,\n"))
    fprintf(stderr, "probe saw: %s", out);
  assert_no_leak(&r, "t-pidns");
  run_free(&r);
}

static void test_over_memory_limit_is_a_memory_limitation(void) {
  run r;
  run_sync(&r, "t-oom",
           "{\"memory\":{\"request\":16777216,\"limit\":33554432},"
           "\"command\":{\"shell\":\"head -c 400000000 /dev/zero | tail\"}}");
  CU_ASSERT_EQUAL(r.code, 2);
  CU_ASSERT_STRING_EQUAL(status_str(&r, "state"), "memory_limitation");
  CU_ASSERT_STRING_EQUAL(status_str(&r, "reason"), "memory limitation");
  CU_ASSERT_TRUE(json_is_true(json_object_get(r.status, "oom_killed")));
  assert_no_leak(&r, "t-oom");
  run_free(&r);
}

static char *cg_read(const char *ctrl, const char *id, const char *file) {
  _cleanup_free_ char *p = rt_cgroup_is_v2() ? ms_xasprintf("/sys/fs/cgroup/meseta/%s/%s", id, file)
                                             : ms_xasprintf("/sys/fs/cgroup/%s/meseta/%s/%s", ctrl, id, file);
  char *t = read_text(p);
  t[strcspn(t, "\n")] = '\0';
  return t;
}

/* Starts a sleeping task, checks its cgroup files while it runs, then kills it. */
static void check_running_limits(const char *id, const char *spec, const char *quota, const char *shares,
                                 const char *mem) {
  run r;
  run_start(&r, id, spec);
  _cleanup_free_ char *procs_path = rt_cgroup_is_v2()
                                        ? ms_xasprintf("/sys/fs/cgroup/meseta/%s/cgroup.procs", id)
                                        : ms_xasprintf("/sys/fs/cgroup/cpu/meseta/%s/cgroup.procs", id);
  bool running = false;
  for (int i = 0; i < 1000 && !running; i++) { /* hang guard, not a timing */
    _cleanup_free_ char *procs = read_text(procs_path);
    running = strchr(procs, '\n') && strchr(procs, '\n') != strrchr(procs, '\n'); /* init + task */
    if (!running)
      usleep(10000);
  }
  CU_ASSERT_TRUE(running);
  bool v2 = rt_cgroup_is_v2();
  _cleanup_free_ char *q = cg_read("cpu", id, v2 ? "cpu.max" : "cpu.cfs_quota_us");
  _cleanup_free_ char *sh = cg_read("cpu", id, v2 ? "cpu.weight" : "cpu.shares");
  _cleanup_free_ char *m = cg_read("memory", id, v2 ? "memory.max" : "memory.limit_in_bytes");
  _cleanup_free_ char *pm = cg_read("pids", id, "pids.max");
  if (v2) {
    CU_ASSERT_STRING_EQUAL(q, strcmp(quota, "-1") == 0 ? "max 100000" : "150000 100000");
  } else {
    CU_ASSERT_STRING_EQUAL(q, quota);
    CU_ASSERT_STRING_EQUAL(sh, shares);
    CU_ASSERT_STRING_EQUAL(m, mem);
  }
  CU_ASSERT_STRING_EQUAL(pm, "32");
  CU_ASSERT_EQUAL(kill(r.pid, SIGTERM), 0);
  run_wait(&r);
  CU_ASSERT_EQUAL(r.code, 3);
  CU_ASSERT_STRING_EQUAL(status_str(&r, "state"), "killed");
  CU_ASSERT_EQUAL(json_integer_value(json_object_get(r.status, "signal")), SIGTERM); /* not the SIGKILL */
  assert_no_leak(&r, id);
  run_free(&r);
}

static void test_cpu_quota_from_limit(void) {
  check_running_limits("t-quota",
                       "{\"cpus\":{\"request\":0.5,\"limit\":1.5},\"memory\":{\"request\":67108864,"
                       "\"limit\":134217728},\"pids_limit\":32,\"command\":{\"argv\":[\"sleep\",\"60\"]}}",
                       "150000", "512", "134217728");
}

static void test_unlimited_writes_no_quota(void) {
  check_running_limits(
      "t-unlimited",
      "{\"cpus\":{\"request\":0.25,\"limit\":\"unlimited\"},\"memory\":{\"request\":67108864,"
      "\"limit\":\"unlimited\"},\"pids_limit\":32,\"command\":{\"argv\":[\"sleep\",\"60\"]}}",
      "-1", "256", "9223372036854771712");
}

static void test_missing_command_fails_clearly(void) {
  run r;
  run_sync(&r, "t-nope", "{\"command\":{\"argv\":[\"/nope\"]}}");
  CU_ASSERT_EQUAL(r.code, 127);
  CU_ASSERT_STRING_EQUAL(status_str(&r, "state"), "failed");
  CU_ASSERT_STRING_EQUAL(status_str(&r, "message"), "task command `/nope`: No such file or directory");
  assert_no_leak(&r, "t-nope");
  run_free(&r);
}

static void test_unknown_profile_fails_without_leaks(void) {
  run r;
  run_sync(&r, "t-badprofile", "{\"seccomp_profile\":\"nosuch\",\"command\":{\"argv\":[\"/bin/true\"]}}");
  CU_ASSERT_EQUAL(r.code, 125);
  CU_ASSERT_STRING_EQUAL(status_str(&r, "state"), "failed");
  CU_ASSERT_EQUAL(strncmp(status_str(&r, "message"), "seccomp profile `nosuch`: unknown", 33), 0);
  assert_no_leak(&r, "t-badprofile");
  run_free(&r);
}

static void test_bad_spec_fails_clearly(void) {
  run r;
  run_sync(&r, "t-badspec", "{\"cpus\":{\"limit\":-1},\"command\":{\"argv\":[\"/bin/true\"]}}");
  CU_ASSERT_EQUAL(r.code, 125);
  CU_ASSERT_PTR_NOT_NULL(strstr(status_str(&r, "message"), "field `cpus.limit`"));
  assert_no_leak(&r, "t-badspec");
  run_free(&r);
}

static void test_user_rlimits_env_cwd(void) {
  run r;
  run_sync(&r, "t-user",
           "{\"user\":{\"uid\":65534,\"gid\":65534},\"rlimits\":{\"nofile\":[256,512]},"
           "\"env\":{\"GREETING\":\"hello\"},\"hostname\":\"box\","
           "\"command\":{\"shell\":\"id -u; id -g; ulimit -n; ulimit -Hn; echo $GREETING; pwd; "
           "hostname; cat /proc/self/oom_score_adj\"}}");
  CU_ASSERT_EQUAL(r.code, 0);
  _cleanup_free_ char *out = sandbox_file(&r, "stdout");
  CU_ASSERT_STRING_EQUAL(out,
                         "65534\n65534\n256\n512\nhello\n/mnt/sandbox\nbox\n500\n"); /* no limits: bursts */
  assert_no_leak(&r, "t-user");
  run_free(&r);
}

static void test_exit_code_reported(void) {
  run r;
  run_sync(&r, "t-exit",
           "{\"cpus\":{\"request\":1,\"limit\":1},\"memory\":{\"request\":67108864,\"limit\":"
           "67108864},\"command\":{\"shell\":\"cat /proc/self/oom_score_adj; exit 7\"}}");
  CU_ASSERT_EQUAL(r.code, 1);
  CU_ASSERT_STRING_EQUAL(status_str(&r, "state"), "exited");
  CU_ASSERT_EQUAL(json_integer_value(json_object_get(r.status, "exit_code")), 7);
  _cleanup_free_ char *out = sandbox_file(&r, "stdout");
  CU_ASSERT_STRING_EQUAL(out, "0\n"); /* guaranteed: no extra OOM score */
  assert_no_leak(&r, "t-exit");
  run_free(&r);
}

int main(int argc, char **argv) {
  if (argc == 2 && strncmp(argv[1], "--probe-", 8) == 0) {
    /* _exit: LeakSanitizer's exit-time scan needs ptrace, which the profile refuses */
    int code = probe_main(argv[1]);
    fflush(stdout);
    _exit(code);
  }
  if (geteuid() != 0)
    ms_test_skip("meseta-runtime needs root (namespaces, cgroups)");
  static const ms_test_case cases[] = {
      {"ls_works_and_output_goes_to_sandbox", test_ls_works_and_output_goes_to_sandbox},
      {"default_profile_refuses_mount_unshare_keyctl", test_default_profile_refuses_mount_unshare_keyctl},
      {"new_pid_namespace_and_private_proc", test_new_pid_namespace_and_private_proc},
      {"over_memory_limit_is_a_memory_limitation", test_over_memory_limit_is_a_memory_limitation},
      {"cpu_quota_from_limit", test_cpu_quota_from_limit},
      {"unlimited_writes_no_quota", test_unlimited_writes_no_quota},
      {"missing_command_fails_clearly", test_missing_command_fails_clearly},
      {"unknown_profile_fails_without_leaks", test_unknown_profile_fails_without_leaks},
      {"bad_spec_fails_clearly", test_bad_spec_fails_clearly},
      {"user_rlimits_env_cwd", test_user_rlimits_env_cwd},
      {"exit_code_reported", test_exit_code_reported},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "runtime", cases);
}
