#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "meseta/alloc.h"

extern char **environ;

struct ms_test_proc {
  pid_t pid;
  int status; /* -1 while running */
  char *address, *log, *ready;
};

#define MAX_PROCS 64
static pid_t live[MAX_PROCS];

static void kill_all(void) {
  for (int i = 0; i < MAX_PROCS; i++)
    if (live[i] > 0) {
      kill(live[i], SIGKILL);
      waitpid(live[i], NULL, 0);
    }
}

static void track(pid_t pid, bool add) {
  static bool registered;
  if (!registered) {
    atexit(kill_all);
    registered = true;
  }
  for (int i = 0; i < MAX_PROCS; i++)
    if (add ? live[i] == 0 : live[i] == pid) {
      live[i] = add ? pid : 0;
      return;
    }
}

char *ms_test_binary(const char *rel) {
  const char *dir = getenv("MESETA_BINARY_DIR");
  return ms_xasprintf("%s/%s", dir && *dir ? dir : ".", rel);
}

static char *tail_of(const char *path) {
  _cleanup_fclose_ FILE *f = fopen(path, "re");
  if (!f)
    return ms_xstrdup("(no log)");
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  long from = n > 2000 ? n - 2000 : 0;
  fseek(f, from, SEEK_SET);
  char *buf = ms_xcalloc(1, (size_t)(n - from) + 1);
  size_t got = fread(buf, 1, (size_t)(n - from), f);
  buf[got] = '\0';
  return buf;
}

static bool reap(ms_test_proc *p, int flags) {
  int st;
  pid_t r = waitpid(p->pid, &st, flags);
  if (r != p->pid)
    return false;
  p->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  track(p->pid, false);
  return true;
}

ms_test_proc *ms_test_proc_start(const char *name, const char *dir, const char *const *argv, ms_error **err) {
  ms_test_proc *p = ms_xcalloc(1, sizeof(*p));
  p->status = -1;
  p->log = ms_xasprintf("%s/%s.log", dir, name);
  p->ready = ms_xasprintf("%s/%s.ready", dir, name);
  unlink(p->ready);
  size_t n = 0;
  while (argv[n])
    n++;
  /* Under `setpriv --pdeathsig KILL` (util-linux; it execs, so the pid stays the
   * service's): a test that aborts (a sanitizer, a crash) takes its services with it,
   * where the atexit handler below would not run. */
  static const char *const wrap[] = {"/usr/bin/setpriv", "--pdeathsig", "KILL", "--"};
  size_t w = access(wrap[0], X_OK) == 0 ? MS_ARRAY_SIZE(wrap) : 0;
  const char **args = ms_xcalloc(w + n + 3, sizeof(char *));
  memcpy(args, wrap, w * sizeof(char *));
  memcpy(args + w, argv, n * sizeof(char *));
  args[w + n] = "--ready-file";
  args[w + n + 1] = p->ready;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, p->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  int e = posix_spawn(&p->pid, args[0], &fa, NULL, (char *const *)args, environ);
  posix_spawn_file_actions_destroy(&fa);
  free(args);
  if (e != 0) {
    ms_error_set_errno(err, e, "start `%s`", argv[0]);
    ms_test_proc_free(p);
    return NULL;
  }
  track(p->pid, true);
  for (int i = 0; i < 3000; i++) { /* 30 s */
    _cleanup_fclose_ FILE *f = fopen(p->ready, "re");
    char line[512];
    if (f && fgets(line, sizeof(line), f)) {
      line[strcspn(line, "\n")] = '\0';
      p->address = ms_xstrdup(line);
      return p;
    }
    if (reap(p, WNOHANG))
      break;
    usleep(10000);
  }
  _cleanup_free_ char *tail = tail_of(p->log);
  ms_error_set(err, MS_UNAVAILABLE, "`%s` %s; its log ends:\n%s", name,
               p->status >= 0 ? "exited before it was ready" : "was not ready within 30 s", tail);
  ms_test_proc_free(p);
  return NULL;
}

const char *ms_test_proc_address(const ms_test_proc *p) {
  return p->address;
}
pid_t ms_test_proc_pid(const ms_test_proc *p) {
  return p->pid;
}
const char *ms_test_proc_log(const ms_test_proc *p) {
  return p->log;
}

int ms_test_proc_stop(ms_test_proc *p, int sig) {
  if (p->status >= 0)
    return p->status;
  kill(p->pid, sig);
  for (int i = 0; i < 3000; i++) {
    if (reap(p, WNOHANG))
      return p->status;
    usleep(10000);
  }
  kill(p->pid, SIGKILL);
  reap(p, 0);
  return p->status;
}

void ms_test_proc_free(ms_test_proc *p) {
  if (!p)
    return;
  if (p->pid > 0 && p->status < 0)
    ms_test_proc_stop(p, SIGKILL);
  free(p->address);
  free(p->log);
  free(p->ready);
  free(p);
}
