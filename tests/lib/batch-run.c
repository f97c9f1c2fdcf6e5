#include "batch-run.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "meseta/alloc.h"
#include "meseta/time.h"

#include "proc.h"

extern char **environ;

pid_t ms_test_batch_spawn(const char *masters, int64_t tasks, double cpus, double mem,
                          const char *const *extra, const char *log, ms_error **err) {
  _cleanup_free_ char *bin = ms_test_binary("examples/c/meseta-batch");
  _cleanup_free_ char *n = ms_xasprintf("%" PRId64, tasks);
  _cleanup_free_ char *c = ms_xasprintf("%g", cpus);
  _cleanup_free_ char *m = ms_xasprintf("%g", mem);
  const char *argv[48] = {bin, "--master", masters, "--tasks", n, "--cmd", "true", "--cpus", c, "--mem", m};
  size_t k = 11;
  for (size_t i = 0; extra && extra[i] && k < MS_ARRAY_SIZE(argv) - 1; i++)
    argv[k++] = extra[i];
  argv[k] = NULL;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid;
  int e = posix_spawn(&pid, bin, &fa, NULL, (char *const *)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (e != 0) {
    ms_error_set_errno(err, e, "start `%s`", bin);
    return -1;
  }
  return pid;
}

/* Reads the `subscribed:` and `summary:` lines of meseta-batch's output. */
static int parse_log(const char *log, ms_test_batch *b, ms_error **err) {
  _cleanup_fclose_ FILE *f = fopen(log, "re");
  if (!f)
    return ms_error_set_errno(err, errno, "open `%s`", log);
  char line[1024];
  bool summary = false;
  while (fgets(line, sizeof(line), f)) {
    const char *fw = strstr(line, "subscribed: framework_id=");
    if (fw)
      sscanf(fw, "subscribed: framework_id=%255s", b->framework_id);
    if (sscanf(line,
               "summary: launched=%" SCNd64 " finished=%" SCNd64 " failed=%" SCNd64 " errors=%" SCNd64
               " seconds=%lf tasks/s=%lf",
               &b->launched, &b->finished, &b->failed, &b->errors, &b->seconds, &b->rate) == 6)
      summary = true;
  }
  return summary ? 0 : ms_error_set(err, MS_INTERNAL, "meseta-batch printed no summary; see `%s`", log);
}

int ms_test_batch_wait(pid_t pid, const char *log, int64_t timeout_ms, ms_test_batch *ret, ms_error **err) {
  int st = 0;
  int64_t deadline = ms_time_mono_ms() + timeout_ms, kill_at = 0;
  while (waitpid(pid, &st, WNOHANG) == 0) {
    int64_t now = ms_time_mono_ms();
    if (!kill_at && now > deadline) {
      fprintf(stderr, "meseta-batch still running after %" PRId64 " ms: stopping it\n", timeout_ms);
      kill(pid, SIGTERM);
      kill_at = now + 10000;
    } else if (kill_at && now > kill_at) {
      kill(pid, SIGKILL);
      kill_at = INT64_MAX;
    }
    ms_time_sleep_ms(20);
  }
  *ret = (ms_test_batch){.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st)};
  return parse_log(log, ret, err);
}
