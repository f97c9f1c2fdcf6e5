/* bench-e2e: end-to-end tasks/s, from a framework's submission to TASK_FINISHED, on the
 * whole real stack on this host (etcd, registry, allocator, master-api and local
 * meseta-agent processes running real containers through meseta-runtime), driven by
 * the example batch framework (examples/c, meseta-batch) with `true` tasks; and, in the
 * same run, this machine's raw container-launch rate (bench-containers: meseta-runtime
 * launching /bin/true back to back and P at a time), with the ratio between the two.
 * Asserts nothing. Needs root.
 *
 *   bench-e2e [--tasks 10000] [--agents 3] [--agent-resources "cpus:8;mem:8192"]
 *             [--raw-n 200] [--raw-parallel 4] [--log-level warn] [--keep-logs]
 *
 * tasks/s is meseta-batch's own figure: tasks finished / seconds from SUBSCRIBED to the
 * last terminal update. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/flags.h"

#include "e2e-stack.h"
#include "testlib.h"

static int64_t n_tasks, n_agents, raw_n, raw_parallel;
static char *agent_resources, *log_level;
static double task_cpus, task_mem;
static bool keep_logs;

static const ms_flag flags[] = {
    {"tasks", MS_FLAG_INT, &n_tasks, "10000", "Tasks for meseta-batch to run", "N"},
    {"agents", MS_FLAG_INT, &n_agents, "3", "Local meseta-agent processes (1 to 8)", "N"},
    {"agent-resources", MS_FLAG_STRING, &agent_resources, "cpus:8;mem:8192", "Each agent's resources",
     "TEXT"},
    {"task-cpus", MS_FLAG_DOUBLE, &task_cpus, "0.1", "Cpus per task", "N"},
    {"task-mem", MS_FLAG_DOUBLE, &task_mem, "32", "Memory per task (MiB)", "MIB"},
    {"raw-n", MS_FLAG_INT, &raw_n, "200", "Containers per raw measurement (bench-containers --n)", "N"},
    {"raw-parallel", MS_FLAG_INT, &raw_parallel, "4", "Containers in flight in the raw parallel measurement",
     "P"},
    {"log-level", MS_FLAG_STRING, &log_level, "warn", "The services' --log-level", "LEVEL"},
    {"keep-logs", MS_FLAG_BOOL, &keep_logs, "false", "Keep the services' logs (their directory is printed)"},
};
static const ms_flag_spec spec = {"bench-e2e", "End-to-end tasks/s against the raw container-launch rate.",
                                  flags, MS_ARRAY_SIZE(flags), NULL};

/* Runs bench-containers and reads meseta-runtime's launches/s from its output. */
static int raw_rate(double *ret_seq, double *ret_par) {
  _cleanup_free_ char *bin = ms_test_binary("bench/containers/bench-containers");
  _cleanup_free_ char *cmd =
      ms_xasprintf("'%s' --n %" PRId64 " --parallel %" PRId64 " 2>&1", bin, raw_n, raw_parallel);
  FILE *p = popen(cmd, "re");
  if (!p)
    return -1;
  char line[512];
  int found = 0;
  while (fgets(line, sizeof(line), p)) {
    fputs(line, stdout);
    const char *m = strstr(line, "meseta-runtime  sequential");
    const char *par = m ? strstr(m, "parallel") : NULL;
    if (m && par && sscanf(m, "meseta-runtime  sequential %lf", ret_seq) == 1 &&
        sscanf(par, "parallel %lf", ret_par) == 1)
      found = 1;
  }
  return pclose(p) == 0 && found ? 0 : -1;
}

int main(int argc, char **argv) {
  ms_error *err = NULL;
  int r = ms_flags_parse(&spec, argc, argv, NULL, &err);
  if (r == 0 && (n_tasks < 1 || n_agents < 1 || n_agents > MS_E2E_MAX_AGENTS))
    r = ms_error_set(&err, MS_INVALID_ARGUMENT, "--tasks must be above 0 and --agents 1 to %d",
                     MS_E2E_MAX_AGENTS);
  if (r != 0) {
    if (r < 0)
      fprintf(stderr, "bench-e2e: %s\n", err->msg);
    ms_error_free(err);
    return r < 0 ? 2 : 0;
  }
  if (geteuid() != 0) {
    fprintf(stderr, "bench-e2e: needs root (containers)\n");
    return 2;
  }
  char cwd[4096];
  if (!getenv("MESETA_SOURCE_DIR") && getcwd(cwd, sizeof(cwd)))
    setenv("MESETA_SOURCE_DIR", cwd, 0); /* scripts/bench.sh runs from the source tree */

  printf("bench-e2e: raw container launches (bench-containers)\n");
  double raw_seq = 0, raw_par = 0;
  if (raw_rate(&raw_seq, &raw_par) < 0)
    fprintf(stderr, "bench-e2e: bench-containers failed or printed no meseta-runtime figure\n");

  char *dir = ms_test_tmpdir("bench-e2e");
  _cleanup_free_ char *tag = ms_xasprintf("bench-%d", (int)getpid());
  ms_e2e_options o = {.dir = dir,
                      .tag = tag,
                      .n_agents = (int)n_agents,
                      .agent_resources = agent_resources,
                      .log_level = log_level};
  ms_e2e_stack s;
  ms_e2e_batch b = {0};
  int rc = ms_e2e_start(&s, &o, &err);
  if (rc == 0) {
    printf("bench-e2e: %" PRId64 " `true` tasks (cpus %g, mem %g) through meseta-batch, %" PRId64
           " local agents of %s\n",
           n_tasks, task_cpus, task_mem, n_agents, agent_resources);
    fflush(stdout);
    _cleanup_free_ char *log = ms_xasprintf("%s/meseta-batch.log", dir);
    rc = ms_e2e_run_batch(&s, n_tasks, task_cpus, task_mem, NULL, log, 60 * 60 * 1000, &b, &err);
  }
  if (rc < 0)
    fprintf(stderr, "bench-e2e: %s\n", err->msg);
  bool clean = ms_e2e_stop(&s);
  if (rc == 0) {
    printf("  end to end       %8.1f tasks/s  (%" PRId64 " finished, %" PRId64 " failed, %" PRId64
           " errors in %.2f s; meseta-batch exit %d)\n",
           b.rate, b.finished, b.failed, b.errors, b.seconds, b.exit_code);
    if (raw_seq > 0)
      printf("  ratio end-to-end / raw: %.2f of sequential (%.1f launches/s), %.2f of parallel (%.1f "
             "launches/s)\n",
             b.rate / raw_seq, raw_seq, b.rate / raw_par, raw_par);
  }
  if (rc == 0 && b.exit_code == 0 && clean && !keep_logs)
    ms_test_rmtree(dir);
  else
    fprintf(stderr, "bench-e2e: logs kept in %s\n", dir);
  free(dir);
  ms_error_free(err);
  ms_flags_free(&spec);
  return rc == 0 && b.exit_code == 0 ? 0 : 1;
}
