/* meseta-runtime: builds one container from a spec file, runs it to its end, reports.
 *
 *   meseta-runtime [--seccomp-dir DIR] [--seccomp-default NAME] SPEC.json
 *
 * Single-threaded by design: the agent (a gRPC process, so threaded) posix_spawns it and
 * never forks itself. The result goes to the spec's status_file and, as one JSON line, to
 * stdout; the exit code maps it (rt_exit_code). SIGTERM, SIGINT or SIGHUP ask for a kill:
 * SIGTERM to the task, SIGKILL after the spec's kill_grace_ms. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/flags.h"
#include "meseta/log.h"

#include "runtime.h"

static char *seccomp_dir, *seccomp_default, *root_mountpoint, *log_level;

static const ms_flag flags[] = {
    {"seccomp-dir", MS_FLAG_STRING, &seccomp_dir, "/etc/meseta/seccomp",
     "Directory of seccomp profiles (<name>.json, Docker's format)", "DIR"},
    {"seccomp-default", MS_FLAG_STRING, &seccomp_default, "default",
     "Profile for tasks that name none (\"unconfined\": no filter)", "NAME"},
    {"root-mountpoint", MS_FLAG_STRING, &root_mountpoint, "/run/meseta/root",
     "Empty directory the container's root is mounted on (host root filesystem)", "DIR"},
    {"log-level", MS_FLAG_STRING, &log_level, "info", "trace, debug, info, warn or error", "LEVEL"},
};

static const ms_flag_spec spec = {"meseta-runtime",
                                  "Builds one container (namespaces, cgroups, seccomp), runs its task to "
                                  "the end and reports how it ended.",
                                  flags, MS_ARRAY_SIZE(flags), "<SPEC.json>"};

int main(int argc, char **argv) {
  ms_error *err = NULL;
  int next = argc;
  int r = ms_flags_parse(&spec, argc, argv, &next, &err);
  if (r == 1) {
    ms_flags_free(&spec);
    return 0;
  }
  ms_log_level level = MS_LOG_INFO;
  if (r == 0 && ms_log_level_parse(log_level, &level, &err) < 0)
    r = MS_ERR;
  if (r == 0 && next != argc - 1)
    r = ms_error_set(&err, MS_INVALID_ARGUMENT, "expected one argument, the spec file (see --help)");
  if (r < 0) {
    fprintf(stderr, "meseta-runtime: %s\n", err->msg);
    ms_error_free(err);
    ms_flags_free(&spec);
    return 125;
  }
  ms_log_init("meseta-runtime", level, MS_LOG_TEXT, 2);

  rt_spec *s = NULL;
  rt_result res = {.state = RT_FAILED};
  if (rt_spec_load(argv[next], &s, &err) < 0) {
    res.message = ms_xstrdup(err->msg);
    ms_error_free(TAKE_PTR(err));
  } else {
    rt_options o = {
        .seccomp_dir = seccomp_dir, .seccomp_default = seccomp_default, .root_mountpoint = root_mountpoint};
    rt_container_run(s, &o, &res);
  }
  _cleanup_free_ char *id = ms_xasprintf("container=%s", s ? s->id : "?");
  if (res.state == RT_FAILED)
    ms_log_error(id, "%s", res.message);
  else
    ms_log_debug(id, "%s: %s", rt_state_name(res.state), res.message);
  if (rt_result_write(s, &res, &err) < 0) {
    ms_log_error(id, "%s", err->msg);
    ms_error_free(TAKE_PTR(err));
  }
  _cleanup_free_ char *json = rt_result_json(s, &res);
  printf("%s\n", json);
  fflush(stdout);
  int code = rt_exit_code(&res);
  rt_result_release(&res);
  rt_spec_free(s);
  ms_flags_free(&spec);
  return code;
}
