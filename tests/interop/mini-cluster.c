/* mini-cluster: a whole meseta control plane on loopback, for the interop tests and
 * for trying the example frameworks (examples/python, examples/node) by hand.
 *
 *   mini-cluster [--agents N] [--task-ms MS] [--address-file F] [--log-dir DIR] ...
 *
 * Starts a real etcd (tests/lib/etcd-harness), meseta-registry, meseta-allocator and
 * meseta-master-api as processes, then N simulated agents in this process
 * (tests/lib/sim.h: they answer a launch with TASK_RUNNING, then TASK_FINISHED after
 * --task-ms). Once master-api serves and lists every agent it prints
 * `READY <master-api address>` on stdout (after `ALLOCATOR`, `ETCD` and `LOGS` lines)
 * and writes the address to --address-file (removed at exit). It runs until SIGTERM,
 * SIGINT or SIGHUP, or until its standard input ends (so a test that dies takes the
 * cluster with it; --ignore-stdin turns that off, e.g. for `&` in a shell), then stops
 * everything and exits 0 when every service exited cleanly, 1 otherwise (with the log
 * directory kept and named). A stop asked for while it starts waits for READY.
 * Meanwhile the line `stats` on standard input prints the agents' counters summed:
 * `STATS agents=N connected=N run_tasks=N running=N kills=N acks=N unacked=N`.
 *
 * The service binaries come from --registry-bin, --allocator-bin, --master-api-bin
 * (CMake passes $<TARGET_FILE:...> as MESETA_REGISTRY_BIN etc.), else from
 * $MESETA_BINARY_DIR/services/... No process outlives it: services run under
 * `setpriv --pdeathsig KILL` when setpriv exists, and etcd likewise. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/flags.h"
#include "meseta/log.h"
#include "meseta/rpc.h"
#include "meseta/v1/operator.pb-c.h"

#include "cluster.h"
#include "etcd-harness.h"
#include "proc.h"
#include "sim.h"
#include "testlib.h"

#define START_WAIT_MS 60000 /* a hang guard for a loaded machine under ASan */
#define MAX_AGENTS 64

static int64_t n_agents;
static int64_t task_ms;
static char *agent_resources;
static char *address_file;
static char *log_dir;
static char *registry_bin, *allocator_bin, *mapi_bin;
static char *service_log_level;
static bool ignore_stdin;

static const ms_flag flags[] = {
    {"agents", MS_FLAG_INT, &n_agents, "2", "Simulated agents to start (1 to 64)", "N"},
    {"agent-resources", MS_FLAG_STRING, &agent_resources, "cpus:4;mem:4096", "Each agent's resources",
     "TEXT"},
    {"task-ms", MS_FLAG_INT, &task_ms, "500",
     "How long a task runs on a simulated agent before TASK_FINISHED (negative: until killed)", "MS"},
    {"address-file", MS_FLAG_STRING, &address_file, NULL,
     "Write master-api's address to this file when ready", "FILE"},
    {"log-dir", MS_FLAG_STRING, &log_dir, NULL,
     "Where the services' logs go (default: a new temporary directory, removed after a clean stop)", "DIR"},
    {"registry-bin", MS_FLAG_STRING, &registry_bin, NULL, "The meseta-registry binary", "PATH"},
    {"allocator-bin", MS_FLAG_STRING, &allocator_bin, NULL, "The meseta-allocator binary", "PATH"},
    {"master-api-bin", MS_FLAG_STRING, &mapi_bin, NULL, "The meseta-master-api binary", "PATH"},
    {"service-log-level", MS_FLAG_STRING, &service_log_level, "debug", "--log-level of the services",
     "LEVEL"},
    {"ignore-stdin", MS_FLAG_BOOL, &ignore_stdin, "false", "Keep running when standard input ends", NULL},
};
static const ms_flag_spec spec = {
    "mini-cluster", "Runs etcd, registry, allocator, master-api and simulated agents on loopback.", flags,
    MS_ARRAY_SIZE(flags), NULL};

typedef struct mini {
  char *dir;
  bool own_dir;
  ms_test_etcd *etcd;
  ms_test_proc *registry, *allocator, *mapi;
  ms_sim_agent *agents[MAX_AGENTS];
  int n_agents;
} mini;

/* The binary's path: the flag, else $MESETA_BINARY_DIR/rel. The caller frees. */
static char *binary(const char *flag_value, const char *rel) {
  return flag_value && *flag_value ? ms_xstrdup(flag_value) : ms_test_binary(rel);
}

/* Starts a service under `setpriv --pdeathsig KILL` (when there is one), so that a
 * SIGKILLed mini-cluster still takes it along. */
static int start_service(mini *m, ms_test_proc **ret, const char *name, const char *const *argv,
                         ms_error **err) {
  const char *args[32];
  size_t n = 0;
  if (access("/usr/bin/setpriv", X_OK) == 0) {
    args[n++] = "/usr/bin/setpriv";
    args[n++] = "--pdeathsig";
    args[n++] = "KILL";
    args[n++] = "--";
  }
  for (size_t i = 0; argv[i]; i++) {
    if (n == MS_ARRAY_SIZE(args) - 1)
      return ms_error_set(err, MS_INTERNAL, "%s: too many arguments", name);
    args[n++] = argv[i];
  }
  args[n] = NULL;
  if (access(argv[0], X_OK) != 0)
    return ms_error_set(err, MS_FAILED_PRECONDITION, "%s: `%s` is not an executable (build it first)", name,
                        argv[0]);
  ms_test_proc *p = ms_test_proc_start(name, m->dir, args, err);
  if (!p)
    return MS_ERR;
  *ret = p;
  return 0;
}

static int write_address(const char *path, const char *addr, ms_error **err) {
  _cleanup_free_ char *tmp = ms_xasprintf("%s.tmp", path);
  FILE *f = fopen(tmp, "we");
  if (!f)
    return ms_error_set_errno(err, errno, "open `%s`", tmp);
  fprintf(f, "%s\n", addr);
  if (fclose(f) != 0)
    return ms_error_set_errno(err, errno, "write `%s`", tmp);
  if (rename(tmp, path) < 0)
    return ms_error_set_errno(err, errno, "rename `%s` to `%s`", tmp, path);
  return 0;
}

static int mini_start(mini *m, ms_error **err) {
  m->etcd = ms_test_etcd_start(err);
  if (!m->etcd)
    return MS_ERR;
  const char *ep = ms_test_etcd_endpoint(m->etcd);

  _cleanup_free_ char *reg = binary(registry_bin, "services/registry/meseta-registry");
  const char *rargv[] = {reg,          "--listen",     "127.0.0.1:0",     "--etcd-endpoints",
                         ep,           "--key-prefix", "/mini",           "--election",
                         "mini-alloc", "--log-level",  service_log_level, NULL};
  if (start_service(m, &m->registry, "registry", rargv, err) < 0)
    return MS_ERR;

  _cleanup_free_ char *alloc = binary(allocator_bin, "services/allocator/meseta-allocator");
  const char *aargv[] = {alloc,
                         "--listen",
                         "127.0.0.1:0",
                         "--allocation-interval",
                         "100ms",
                         "--etcd-endpoints",
                         ep,
                         "--election",
                         "mini-alloc",
                         "--leader-lease",
                         "2s",
                         "--registry",
                         ms_test_proc_address(m->registry),
                         "--recovery-timeout",
                         "1s",
                         "--log-level",
                         service_log_level,
                         NULL};
  if (start_service(m, &m->allocator, "allocator", aargv, err) < 0)
    return MS_ERR;
  const char *alloc_addr = ms_test_proc_address(m->allocator);
  if (!ms_sim_wait(ms_test_serving, (void *)alloc_addr, START_WAIT_MS))
    return ms_error_set(err, MS_UNAVAILABLE, "the allocator at %s did not become leader; see %s", alloc_addr,
                        ms_test_proc_log(m->allocator));

  _cleanup_free_ char *mapi = binary(mapi_bin, "services/master-api/meseta-master-api");
  const char *margv[] = {mapi,       "--listen",    "127.0.0.1:0",     "--allocator",
                         alloc_addr, "--name",      "mini-mapi",       "--max-backoff",
                         "200ms",    "--log-level", service_log_level, NULL};
  if (start_service(m, &m->mapi, "master-api", margv, err) < 0)
    return MS_ERR;
  const char *mapi_addr = ms_test_proc_address(m->mapi);

  for (int i = 0; i < n_agents; i++) {
    _cleanup_free_ char *host = ms_xasprintf("sim-agent-%d", i);
    ms_sim_agent_options ao = {.hostname = host, .resources = agent_resources, .task_ms = task_ms};
    m->agents[i] = ms_sim_agent_start(alloc_addr, &ao, err);
    if (!m->agents[i])
      return ms_error_prefix(err, "simulated agent %d", i);
    m->n_agents = i + 1;
  }

  if (!ms_sim_wait(ms_test_serving, (void *)mapi_addr, START_WAIT_MS))
    return ms_error_set(err, MS_UNAVAILABLE, "master-api at %s is not serving; see %s", mapi_addr,
                        ms_test_proc_log(m->mapi));
  ms_test_agents_wait aw = {mapi_addr, (size_t)n_agents};
  if (!ms_sim_wait(ms_test_agents_listed, &aw, START_WAIT_MS))
    return ms_error_set(err, MS_UNAVAILABLE, "master-api at %s does not list the %d agents; see %s",
                        mapi_addr, m->n_agents, ms_test_proc_log(m->mapi));
  return 0;
}

/* Stops one service with SIGTERM; false (and a line on stderr) unless it exited 0. */
static bool stop_service(ms_test_proc **p, const char *name) {
  if (!*p)
    return true;
  int rc = ms_test_proc_stop(*p, SIGTERM);
  bool ok = rc == 0;
  if (!ok)
    fprintf(stderr, "mini-cluster: %s exited with %d on SIGTERM; see %s\n", name, rc, ms_test_proc_log(*p));
  ms_test_proc_free(*p);
  *p = NULL;
  return ok;
}

/* Stops everything, clients before servers; true when every service exited cleanly. */
static bool mini_stop(mini *m) {
  for (int i = 0; i < m->n_agents; i++)
    ms_sim_agent_free(m->agents[i]);
  m->n_agents = 0;
  bool ok = stop_service(&m->mapi, "master-api");
  ok = stop_service(&m->allocator, "allocator") && ok;
  ok = stop_service(&m->registry, "registry") && ok;
  ms_test_etcd_free(m->etcd);
  m->etcd = NULL;
  return ok;
}

/* `STATS ...`: the simulated agents' counters, summed, for tests to check what a
 * framework did (launches, acknowledgements) from the agents' side. */
static void print_stats(mini *m) {
  ms_sim_agent_stats sum = {0};
  int connected = 0;
  for (int i = 0; i < m->n_agents; i++) {
    ms_sim_agent_stats st;
    ms_sim_agent_stats_get(m->agents[i], &st);
    sum.run_tasks += st.run_tasks;
    sum.running += st.running;
    sum.kills += st.kills;
    sum.acks += st.acks;
    sum.unacked += st.unacked;
    connected += st.connected;
  }
  printf("STATS agents=%d connected=%d run_tasks=%llu running=%llu kills=%llu acks=%llu unacked=%llu\n",
         m->n_agents, connected, (unsigned long long)sum.run_tasks, (unsigned long long)sum.running,
         (unsigned long long)sum.kills, (unsigned long long)sum.acks, (unsigned long long)sum.unacked);
  fflush(stdout);
}

/* One line of standard input: `stats` prints the agents' counters; anything else is
 * ignored (with a word on stderr). */
static void command(mini *m, const char *line) {
  if (strcmp(line, "stats") == 0)
    print_stats(m);
  else if (*line)
    fprintf(stderr, "mini-cluster: unknown command `%s` (known: stats)\n", line);
}

/* Blocks until a stop signal, or the end of standard input unless ignored; runs the
 * commands that come in on standard input meanwhile. */
static void wait_for_stop(mini *m, int sfd) {
  struct pollfd fds[2] = {{.fd = sfd, .events = POLLIN}, {.fd = ignore_stdin ? -1 : 0, .events = POLLIN}};
  char line[256];
  size_t len = 0;
  bool too_long = false;
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      return;
    }
    if (fds[0].revents) {
      struct signalfd_siginfo si;
      if (read(sfd, &si, sizeof(si)) == sizeof(si))
        fprintf(stderr, "mini-cluster: signal %u: stopping\n", si.ssi_signo);
      return;
    }
    if (fds[1].revents) {
      char buf[256];
      ssize_t n = read(0, buf, sizeof(buf));
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0) {
        fprintf(stderr, "mini-cluster: standard input ended: stopping\n");
        return;
      }
      for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == '\n') {
          line[len] = '\0';
          if (!too_long)
            command(m, line);
          len = 0;
          too_long = false;
        } else if (len + 1 < sizeof(line)) {
          line[len++] = buf[i];
        } else {
          too_long = true; /* dropped whole at its end */
        }
      }
    }
  }
}

int main(int argc, char **argv) {
  ms_error *err = NULL;
  int r = ms_flags_parse(&spec, argc, argv, NULL, &err);
  if (r == 1)
    return 0;
  if (r < 0) {
    fprintf(stderr, "mini-cluster: %s\n", err->msg);
    ms_error_free(err);
    return 2;
  }
  if (n_agents < 1 || n_agents > MAX_AGENTS) {
    fprintf(stderr, "mini-cluster: flag `--agents`: %lld is not between 1 and %d\n", (long long)n_agents,
            MAX_AGENTS);
    ms_flags_free(&spec);
    return 2;
  }
  ms_log_init("mini-cluster", MS_LOG_WARN, MS_LOG_TEXT, 2);

  /* Stop signals come through a signalfd: block them before any thread starts. A
   * reader of our stdout that went away must not kill us before we clean up. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  int sfd = signalfd(-1, &set, SFD_CLOEXEC);
  if (sfd < 0) {
    fprintf(stderr, "mini-cluster: signalfd: %s\n", strerror(errno));
    ms_flags_free(&spec);
    return 1;
  }

  mini m = {0};
  if (log_dir && *log_dir) {
    if (mkdir(log_dir, 0755) < 0 && errno != EEXIST) {
      fprintf(stderr, "mini-cluster: flag `--log-dir`: mkdir `%s`: %s\n", log_dir, strerror(errno));
      ms_flags_free(&spec);
      return 2;
    }
    m.dir = ms_xstrdup(log_dir);
  } else {
    m.dir = ms_test_tmpdir("meseta-mini");
    m.own_dir = true;
  }

  int rc = 0;
  if (mini_start(&m, &err) < 0 ||
      (address_file && write_address(address_file, ms_test_proc_address(m.mapi), &err) < 0)) {
    fprintf(stderr, "mini-cluster: %s\n", err->msg);
    fprintf(stderr, "mini-cluster: logs are in %s\n", m.dir);
    ms_error_free(err);
    mini_stop(&m);
    rc = 1;
  } else {
    printf("ALLOCATOR %s\nETCD %s\nLOGS %s\nREADY %s\n", ms_test_proc_address(m.allocator),
           ms_test_etcd_endpoint(m.etcd), m.dir, ms_test_proc_address(m.mapi));
    fflush(stdout);
    wait_for_stop(&m, sfd);
    if (!mini_stop(&m)) {
      fprintf(stderr, "mini-cluster: logs are in %s\n", m.dir);
      rc = 1;
    }
  }
  if (rc == 0 && m.own_dir)
    ms_test_rmtree(m.dir); /* our own mkdtemp directory, holding only our logs */
  if (address_file)
    unlink(address_file); /* the address is stale now */
  close(sfd);
  free(m.dir);
  ms_flags_free(&spec);
  return rc;
}
