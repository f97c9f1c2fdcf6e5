/* Building, running and supervising one container.
 *
 * Three processes:
 *   runtime  (host namespaces) validates, creates cgroups, clones `init`, supervises, reports;
 *   init     (pid 1 of the new pid namespace) joins the cgroups (the runtime moves it before
 *            letting it go on), enters a new cgroup namespace, builds the filesystem, forks the
 *            task, then only reaps and forwards signals. Being pid 1 it would drop signals it
 *            has no handler for, which is why the task is not pid 1 itself: a task without a
 *            SIGTERM handler still dies on SIGTERM. When the task ends, init hands its wait
 *            status to the runtime and exits; the kernel then kills whatever the task left.
 *   task     (pid 2) sets session, stdio, rlimits, oom_score_adj, cwd, user, environment,
 *            loads the seccomp filter last and execs.
 * Errors before exec travel through a CLOEXEC pipe as "errno<TAB>message": an exec that
 * succeeds closes it, so EOF with no bytes means the task is running. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/fs.h"

#include "runtime-internal.h"

#define RT_DEFAULT_MOUNTPOINT "/run/meseta/root"

extern char **environ;

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

typedef struct launch {
  const rt_spec *s;
  const char *mountpoint;
  rt_seccomp *sc;
  int sync_r, err_w, status_w;
  int stdio[3];
} launch;

static _Noreturn void child_fail(int fd, int errnum, const char *msg) {
  char buf[2048];
  int n = snprintf(buf, sizeof(buf), "%d\t%s", errnum, msg);
  if (n > 0 && write(fd, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1) < 0)
    _exit(125);
  _exit(errnum == ENOENT ? 127 : errnum == EACCES ? 126 : 125);
}

static _Noreturn void child_fail_err(int fd, ms_error *e) {
  child_fail(fd, e->errnum, e->msg);
}

static void noop_handler(int sig) {
  (void)sig;
}

static _Noreturn void task_main(const launch *l) {
  const rt_spec *s = l->s;
  ms_error *err = NULL;
  char msg[1024];
  setsid();
  for (int i = 0; i < 3; i++)
    if (dup2(l->stdio[i], i) < 0)
      child_fail(l->err_w, errno, "dup2 stdio");
  for (size_t i = 0; i < MS_ARRAY_SIZE(forwarded); i++)
    signal(forwarded[i], SIG_DFL);
  for (size_t i = 0; i < s->n_rlimits; i++) {
    struct rlimit rl = {.rlim_cur = s->rlimits[i].soft, .rlim_max = s->rlimits[i].hard};
    if (setrlimit(s->rlimits[i].resource, &rl) != 0)
      child_fail(l->err_w, errno, "setrlimit");
  }
  int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
  snprintf(msg, sizeof(msg), "%d", s->oom_score_adj);
  if (fd < 0 || write(fd, msg, strlen(msg)) < 0)
    child_fail(l->err_w, errno, "write `/proc/self/oom_score_adj`");
  close(fd);
  if (chdir(s->cwd) != 0) {
    snprintf(msg, sizeof(msg), "working directory `%s`: %s", s->cwd, strerror(errno));
    child_fail(l->err_w, errno, msg);
  }
  if (s->has_user) {
    if (setgroups(0, NULL) != 0 || setgid(s->gid) != 0 || setuid(s->uid) != 0) {
      snprintf(msg, sizeof(msg), "switch to user %u:%u: %s", (unsigned)s->uid, (unsigned)s->gid,
               strerror(errno));
      child_fail(l->err_w, errno, msg);
    }
  }
  environ = s->env;
  if (syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */) != 0) {
    for (int i = 3; i < 1024; i++)
      if (i != l->err_w)
        close(i);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  if (rt_seccomp_apply(l->sc, &err) < 0)
    child_fail_err(l->err_w, err);
  execvp(s->argv[0], s->argv);
  int e = errno;
  snprintf(msg, sizeof(msg), "task command `%s`: %s", s->argv[0], strerror(e));
  child_fail(l->err_w, e, msg);
}

static _Noreturn void init_main(const launch *l) {
  ms_error *err = NULL;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  char go;
  if (read(l->sync_r, &go, 1) != 1)
    _exit(125); /* the runtime gave up (or died) before placing us in the cgroups */
  close(l->sync_r);
  if (unshare(CLONE_NEWCGROUP) != 0)
    child_fail(l->err_w, errno, "unshare cgroup namespace");
  if (sethostname(l->s->hostname, strlen(l->s->hostname)) != 0)
    child_fail(l->err_w, errno, "sethostname");
  if (l->s->new_net && rt_net_loopback_up(&err) < 0)
    child_fail_err(l->err_w, err);
  if (rt_mount_rootfs(l->s, l->mountpoint, &err) < 0) {
    ms_error_prefix(&err, "container filesystem");
    child_fail_err(l->err_w, err);
  }
  struct sigaction sa = {.sa_handler = noop_handler};
  for (size_t i = 0; i < MS_ARRAY_SIZE(forwarded); i++)
    sigaction(forwarded[i], &sa, NULL); /* pid 1 only receives signals it handles */
  pid_t task = fork();
  if (task < 0)
    child_fail(l->err_w, errno, "fork the task");
  if (task == 0)
    task_main(l);
  close(l->err_w);
  for (int i = 0; i < 3; i++)
    close(l->stdio[i]);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  for (size_t i = 0; i < MS_ARRAY_SIZE(forwarded); i++)
    sigaddset(&set, forwarded[i]);
  for (;;) {
    siginfo_t si;
    int sig = sigwaitinfo(&set, &si);
    if (sig < 0)
      continue;
    if (sig != SIGCHLD) {
      kill(task, sig);
      continue;
    }
    int st;
    pid_t p;
    while ((p = waitpid(-1, &st, WNOHANG)) > 0)
      if (p == task) {
        if (write(l->status_w, &st, sizeof(st)) != sizeof(st))
          _exit(124);
        _exit(0);
      }
  }
}

static int open_stdio(const rt_spec *s, int stdio[3], ms_error **err) {
  stdio[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (stdio[0] < 0)
    return ms_error_set_errno(err, errno, "open `/dev/null`");
  static const char *const names[] = {"stdout", "stderr"};
  for (int i = 0; i < 2; i++) {
    _cleanup_free_ char *path = ms_xasprintf("%s/%s", s->sandbox, names[i]);
    stdio[i + 1] = open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (stdio[i + 1] < 0)
      return ms_error_set_errno(err, errno, "task %s `%s`", names[i], path);
    if (s->has_user && fchown(stdio[i + 1], s->uid, s->gid) != 0)
      return ms_error_set_errno(err, errno, "chown `%s`", path);
  }
  return 0;
}

static void close_fd(int *fd) {
  if (*fd >= 0)
    close(*fd);
  *fd = -1;
}

/* Reads the child's pre-exec error, if any: "errno\tmessage". */
static bool read_launch_error(int fd, rt_result *r) {
  char buf[2048];
  size_t len = 0;
  for (;;) {
    ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0 || (len += (size_t)n) == sizeof(buf) - 1)
      break;
  }
  if (len == 0)
    return false;
  buf[len] = '\0';
  char *tab = strchr(buf, '\t');
  r->start_errno = 0;
  if (tab) {
    *tab = '\0';
    r->start_errno = (int)strtol(buf, NULL, 10);
  }
  r->message = ms_xstrdup(tab ? tab + 1 : buf);
  return true;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for init, forwarding a kill request (SIGTERM, SIGINT, SIGHUP) and escalating to
 * SIGKILL after the grace period. Returns init's wait status; *ret_killed says a kill was
 * requested. */
static int supervise(pid_t init, const rt_spec *s, bool *ret_killed) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  int64_t deadline = -1;
  for (;;) {
    int st;
    if (waitpid(init, &st, WNOHANG) == init)
      return st;
    siginfo_t si;
    int sig;
    if (deadline < 0) {
      sig = sigwaitinfo(&set, &si);
    } else {
      int64_t left = deadline - now_ms();
      if (left <= 0) {
        kill(init, SIGKILL);
        deadline = INT64_MAX;
        continue;
      }
      struct timespec ts = {left / 1000, (left % 1000) * 1000000};
      sig = sigtimedwait(&set, &si, &ts);
    }
    if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
      /* A grace sent with the signal (sigqueue: the agent's KillPolicy override) replaces
       * the spec's; a later kill may only shorten it. */
      int64_t grace = s->kill_grace_ms;
      if (si.si_code == SI_QUEUE && si.si_value.sival_int >= 0)
        grace = si.si_value.sival_int;
      int64_t want = now_ms() + grace;
      if (!*ret_killed) {
        *ret_killed = true;
        kill(init, SIGTERM);
        deadline = want;
      } else if (want < deadline) {
        deadline = want;
      }
    }
  }
}

void rt_container_run(const rt_spec *s, const rt_options *o, rt_result *r) {
  memset(r, 0, sizeof(*r));
  r->state = RT_FAILED;
  ms_error *err = NULL;
  rt_seccomp *sc = NULL;
  rt_cgroup *cg = NULL;
  int stdio[3] = {-1, -1, -1}, sync_p[2] = {-1, -1}, err_p[2] = {-1, -1}, status_p[2] = {-1, -1};
  const char *mountpoint = o->root_mountpoint ? o->root_mountpoint : RT_DEFAULT_MOUNTPOINT;
  struct stat st;

  if (rt_seccomp_load(o->seccomp_dir, s->seccomp_profile, o->seccomp_default, &sc, &err) < 0)
    goto fail;
  if (stat(s->sandbox, &st) != 0 || !S_ISDIR(st.st_mode)) {
    ms_error_set_errno(&err, errno ? errno : ENOTDIR, "sandbox `%s`", s->sandbox);
    goto fail;
  }
  if (s->rootfs && (stat(s->rootfs, &st) != 0 || !S_ISDIR(st.st_mode))) {
    ms_error_set_errno(&err, errno ? errno : ENOTDIR, "rootfs `%s`", s->rootfs);
    goto fail;
  }
  if (!s->rootfs && ms_mkdirs(mountpoint, &err) < 0)
    goto fail;
  if (open_stdio(s, stdio, &err) < 0 || rt_cgroup_create(s, &cg, &err) < 0)
    goto fail;
  if (pipe2(sync_p, O_CLOEXEC) != 0 || pipe2(err_p, O_CLOEXEC) != 0 || pipe2(status_p, O_CLOEXEC) != 0) {
    ms_error_set_errno(&err, errno, "pipe");
    goto fail;
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  for (size_t i = 0; i < MS_ARRAY_SIZE(forwarded); i++)
    sigaddset(&set, forwarded[i]);
  sigprocmask(SIG_BLOCK, &set, NULL);

  unsigned long flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | SIGCHLD;
  if (s->new_net)
    flags |= CLONE_NEWNET;
  /* A raw clone without a stack behaves as fork: the runtime is single-threaded. */
  pid_t init = (pid_t)syscall(SYS_clone, flags, NULL, NULL, NULL, NULL);
  if (init < 0) {
    ms_error_set_errno(&err, errno, "clone the container's namespaces");
    goto fail;
  }
  if (init == 0) {
    close(sync_p[1]);
    close(err_p[0]);
    close(status_p[0]);
    launch l = {.s = s,
                .mountpoint = mountpoint,
                .sc = sc,
                .sync_r = sync_p[0],
                .err_w = err_p[1],
                .status_w = status_p[1],
                .stdio = {stdio[0], stdio[1], stdio[2]}};
    init_main(&l);
  }
  close_fd(&sync_p[0]);
  close_fd(&err_p[1]);
  close_fd(&status_p[1]);
  for (int i = 0; i < 3; i++)
    close_fd(&stdio[i]);
  r->pid = init;
  if (rt_cgroup_attach(cg, init, &err) < 0) {
    close_fd(&sync_p[1]); /* init reads EOF and exits */
    kill(init, SIGKILL);
    waitpid(init, NULL, 0);
    goto fail;
  }
  if (write(sync_p[1], "g", 1) != 1) {
    ms_error_set_errno(&err, errno, "start the container's init");
    kill(init, SIGKILL);
  }
  close_fd(&sync_p[1]);
  bool failed = read_launch_error(err_p[0], r);
  close_fd(&err_p[0]);
  bool killed = false;
  int init_status = supervise(init, s, &killed);
  int task_status;
  bool have_status = read(status_p[0], &task_status, sizeof(task_status)) == sizeof(task_status);
  close_fd(&status_p[0]);
  int64_t ooms = rt_cgroup_oom_kills(cg);
  if (rt_cgroup_destroy(TAKE_PTR(cg), &err) < 0) {
    if (!failed)
      goto fail;
    ms_error_free(TAKE_PTR(err)); /* the launch error is the story to tell */
  }
  rt_seccomp_free(sc);
  if (failed)
    return; /* state FAILED, message and start_errno set by read_launch_error */
  if (!have_status)
    task_status = init_status; /* init itself was killed (SIGKILL after the grace, or the OOM killer) */
  r->exit_code = WIFEXITED(task_status) ? WEXITSTATUS(task_status) : 128 + WTERMSIG(task_status);
  r->signal = WIFSIGNALED(task_status) ? WTERMSIG(task_status) : 0;
  if (ooms > 0) {
    r->state = RT_OOM;
    r->message = ms_xasprintf("memory limitation: the task went over its memory limit of %lld bytes and was "
                              "killed (%lld oom kills)",
                              (long long)s->mem_limit, (long long)ooms);
  } else if (killed) {
    r->state = RT_KILLED;
    r->message = ms_xasprintf("killed on request (signal %d)", r->signal);
  } else {
    r->state = RT_EXITED;
    r->message = r->signal ? ms_xasprintf("killed by signal %d", r->signal)
                           : ms_xasprintf("exited with status %d", r->exit_code);
  }
  return;
fail:
  r->state = RT_FAILED;
  r->start_errno = err ? err->errnum : 0;
  free(r->message);
  r->message = ms_xstrdup(err ? err->msg : "unknown error");
  ms_error_free(err);
  rt_cgroup_destroy(cg, NULL);
  rt_seccomp_free(sc);
  for (int i = 0; i < 3; i++)
    close_fd(&stdio[i]);
  int *fds[] = {&sync_p[0], &sync_p[1], &err_p[0], &err_p[1], &status_p[0], &status_p[1]};
  for (size_t i = 0; i < MS_ARRAY_SIZE(fds); i++)
    close_fd(fds[i]);
}
