/* `meseta up`: a local cluster in the foreground (etcd, registry, allocator, master-api and
 * N agents), stopped in reverse order on Ctrl-C / SIGTERM. Every process is spawned in a
 * session of its own (a terminal's ^C reaches only us, and we stop them in order), with its
 * output in <state>/logs/<name>.log. The state directory is reused by the next run: etcd's
 * data and each agent's work dir (so agents keep their ids). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/etcd.h"
#include "meseta/time.h"

#include "cli.h"

extern char **environ;

#define MAX_PROCS 40
#define MAX_AGENTS 32

typedef struct proc {
  char name[32];
  pid_t pid;
  char *ready; /* its --ready-file (NULL: etcd) */
  char info[256];
} proc;

typedef struct up {
  char *state, *logs, *bin_dir, *etcd_bin, *seccomp_dir;
  char *self; /* this binary: children start through it (CLI_UP_EXEC) */
  proc procs[MAX_PROCS];
  int n;
} up;

static char *f_state, *f_bin_dir, *f_etcd, *f_seccomp, *f_cgroup;
static int64_t f_agents, f_etcd_port, f_etcd_peer, f_registry_port, f_allocator_port, f_master_port,
    f_agent_port;

static const ms_flag flags[] = {
    {"state-dir", MS_FLAG_STRING, &f_state, ".state", "Where etcd's data, agents' work dirs and logs live",
     "DIR"},
    {"agents", MS_FLAG_INT, &f_agents, "1", "How many agents to start", "N"},
    {"etcd-port", MS_FLAG_INT, &f_etcd_port, "2379", "etcd's client port", "PORT"},
    {"etcd-peer-port", MS_FLAG_INT, &f_etcd_peer, "2380", "etcd's peer port", "PORT"},
    {"registry-port", MS_FLAG_INT, &f_registry_port, "5052", "meseta-registry's port", "PORT"},
    {"allocator-port", MS_FLAG_INT, &f_allocator_port, "5053", "meseta-allocator's port", "PORT"},
    {"master-port", MS_FLAG_INT, &f_master_port, "5050", "meseta-master-api's port (the public API)", "PORT"},
    {"agent-port", MS_FLAG_INT, &f_agent_port, "5051",
     "The first agent's AgentOperator port (agent i gets PORT + 10 × i)", "PORT"},
    {"bin-dir", MS_FLAG_STRING, &f_bin_dir, NULL,
     "Where the meseta-* binaries are (default: beside this one, or the build tree's services/)", "DIR"},
    {"etcd", MS_FLAG_STRING, &f_etcd, "etcd", "The etcd binary", "FILE"},
    {"cgroup-parent", MS_FLAG_STRING, &f_cgroup, "meseta", "Cgroup under which the agents put containers",
     "PATH"},
    {"seccomp-dir", MS_FLAG_STRING, &f_seccomp, NULL,
     "Seccomp profiles for the agents (default: /etc/meseta/seccomp, else the source tree's)", "DIR"},
};
static const ms_flag_spec spec = {"meseta up",
                                  "Start a local cluster in the foreground; Ctrl-C stops it. The state "
                                  "directory is kept and reused.",
                                  flags, MS_ARRAY_SIZE(flags), NULL};

/* ---- binaries ---- */

static char *self_dir(void) {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0)
    return ms_xstrdup(".");
  buf[n] = '\0';
  *strrchr(buf, '/') = '\0';
  return ms_xstrdup(buf);
}

/* meseta-<svc>: in --bin-dir, beside this binary (installed), or in the build tree. */
static char *service_bin(const up *u, const char *svc) {
  char *p = ms_xasprintf("%s/meseta-%s", u->bin_dir, svc);
  if (access(p, X_OK) == 0)
    return p;
  free(p);
  p = ms_xasprintf("%s/../services/%s/meseta-%s", u->bin_dir, svc, svc);
  if (access(p, X_OK) == 0)
    return p;
  free(p);
  return ms_xasprintf("%s/../services/agent/%s/meseta-%s", u->bin_dir, svc, svc); /* runtime */
}

static char *default_seccomp(const up *u) {
  if (access("/etc/meseta/seccomp/default.json", R_OK) == 0)
    return ms_xstrdup("/etc/meseta/seccomp");
  /* The build tree's CMake cache names the source dir. */
  _cleanup_free_ char *cache = ms_xasprintf("%s/../CMakeCache.txt", u->bin_dir);
  _cleanup_fclose_ FILE *f = fopen(cache, "re");
  char line[PATH_MAX + 64];
  while (f && fgets(line, sizeof(line), f)) {
    if (strncmp(line, "meseta_SOURCE_DIR:STATIC=", 25) == 0 ||
        strncmp(line, "CMAKE_HOME_DIRECTORY:", 21) == 0) {
      char *eq = strchr(line, '=');
      eq[strcspn(eq, "\n")] = '\0';
      return ms_xasprintf("%s/services/agent/runtime/profiles", eq + 1);
    }
  }
  return ms_xstrdup("/etc/meseta/seccomp");
}

/* ---- processes ---- */

static int spawn(up *u, const char *name, const char *info, char *const *argv, const char *ready,
                 ms_error **err) {
  if (u->n == MAX_PROCS)
    return ms_error_set(err, MS_RESOURCE_EXHAUSTED, "too many processes");
  _cleanup_free_ char *log = ms_xasprintf("%s/%s.log", u->logs, name);
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&at);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigfillset(&defaults);
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setsigdefault(&at, &defaults);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  /* Through ourselves (cli_up_exec): the child gets SIGTERM when we die, even by SIGKILL,
   * which posix_spawn alone cannot arrange (PR_SET_PDEATHSIG goes between fork and exec). */
  size_t n = 0;
  while (argv[n])
    n++;
  _cleanup_free_ char **args = ms_xcalloc(n + 4, sizeof(char *));
  char ppid[32];
  snprintf(ppid, sizeof(ppid), "%d", (int)getpid());
  args[0] = u->self;
  args[1] = CLI_UP_EXEC;
  args[2] = ppid;
  memcpy(args + 3, argv, n * sizeof(char *));
  proc *p = &u->procs[u->n];
  memset(p, 0, sizeof(*p));
  int e = posix_spawn(&p->pid, "/proc/self/exe", &fa, &at, args, environ); /* even if rebuilt since */
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  if (e)
    return ms_error_set_errno(err, e, "%s: `%s`", name, argv[0]);
  snprintf(p->name, sizeof(p->name), "%s", name);
  snprintf(p->info, sizeof(p->info), "%s", info);
  p->ready = ready ? ms_xstrdup(ready) : NULL;
  u->n++;
  return 0;
}

static void log_tail(const up *u, const char *name) {
  _cleanup_free_ char *path = ms_xasprintf("%s/%s.log", u->logs, name);
  _cleanup_fclose_ FILE *f = fopen(path, "re");
  char *lines[10] = {0};
  size_t n = 0, cap = 0;
  char *line = NULL;
  while (f && getline(&line, &cap, f) > 0) {
    free(lines[n % 10]);
    lines[n % 10] = ms_xstrdup(line);
    n++;
  }
  free(line);
  for (size_t i = n > 10 ? n - 10 : 0; i < n; i++)
    fprintf(stderr, "  | %s", lines[i % 10]);
  for (size_t i = 0; i < 10; i++)
    free(lines[i]);
}

static bool alive(proc *p) {
  if (!p->pid)
    return false;
  int ws;
  pid_t r = waitpid(p->pid, &ws, WNOHANG);
  if (r == p->pid) {
    p->pid = 0;
    return false;
  }
  return true;
}

static bool etcd_ready(int64_t port) {
  _cleanup_free_ char *ep = ms_xasprintf("http://127.0.0.1:%lld", (long long)port);
  const char *eps[] = {ep};
  ms_etcd_options o = {
      .endpoints = eps, .n_endpoints = 1, .request_timeout_ms = 1000, .connect_timeout_ms = 500};
  ms_etcd *e = ms_etcd_new(&o, NULL);
  if (!e)
    return false;
  ms_etcd_range_result r = {0};
  bool ok = ms_etcd_range(e, "/meseta-up-probe", 15, NULL, &r, NULL) == 0;
  if (ok)
    ms_etcd_range_result_release(&r);
  ms_etcd_free(e);
  return ok;
}

/* Waits for the last process to be ready (its ready file, or etcd answering); any
 * process that exits meanwhile ends the start, with the end of its log. */
static int wait_ready(up *u, int64_t timeout_ms, volatile sig_atomic_t *stop, ms_error **err) {
  proc *p = &u->procs[u->n - 1];
  int64_t end = ms_time_mono_ms() + timeout_ms;
  for (;;) {
    for (int i = 0; i < u->n; i++) {
      proc *q = &u->procs[i];
      if (alive(q))
        continue;
      fprintf(stderr, "up: %s exited while %s was starting; the end of its log:\n", q->name, p->name);
      log_tail(u, q->name);
      return ms_error_set(err, MS_UNAVAILABLE, "%s did not start (log: %s/%s.log)", q->name, u->logs,
                          q->name);
    }
    struct stat st;
    if (p->ready ? stat(p->ready, &st) == 0 && st.st_size > 0 : etcd_ready(f_etcd_port))
      return 0;
    if (*stop)
      return ms_error_set(err, MS_CANCELLED, "interrupted while %s was starting", p->name);
    if (ms_time_mono_ms() > end)
      return ms_error_set(err, MS_DEADLINE_EXCEEDED, "%s not ready after %lld s (log: %s/%s.log)", p->name,
                          (long long)timeout_ms / 1000, u->logs, p->name);
    ms_time_sleep_ms(100);
  }
}

/* SIGTERM to each process, newest first; SIGKILL after its grace. */
static void stop_all(up *u) {
  for (int i = u->n - 1; i >= 0; i--) {
    proc *p = &u->procs[i];
    if (!alive(p))
      continue;
    fprintf(stderr, "up: stopping %s (pid %d)\n", p->name, (int)p->pid);
    kill(p->pid, SIGTERM);
    /* Agents end their containers first (their kill grace); the others are quick. */
    int64_t grace = strncmp(p->name, "agent", 5) == 0 ? 45000 : 15000;
    int64_t end = ms_time_mono_ms() + grace;
    while (alive(p) && ms_time_mono_ms() < end)
      ms_time_sleep_ms(50);
    if (alive(p)) {
      fprintf(stderr, "up: %s did not stop within %lld s: killing it\n", p->name, (long long)grace / 1000);
      kill(p->pid, SIGKILL);
      waitpid(p->pid, NULL, 0);
      p->pid = 0;
    }
  }
}

/* ---- the command ---- */

static volatile sig_atomic_t stop_flag;

static void on_stop(int sig) {
  (void)sig;
  stop_flag = 1;
}

static int mkdir_p(const char *path, mode_t mode) {
  _cleanup_free_ char *p = ms_xstrdup(path);
  for (char *s = p + 1; *s; s++)
    if (*s == '/') {
      *s = '\0';
      mkdir(p, 0755);
      *s = '/';
    }
  return mkdir(p, mode) == 0 || errno == EEXIST ? 0 : -1;
}

static char *portstr(int64_t port) {
  return ms_xasprintf("127.0.0.1:%lld", (long long)port);
}

/* Every port this run will use is free, and no two are the same; otherwise the error
 * names the port, its flag and who holds it. Checked before anything starts: a second
 * cluster must not half start beside the first. */
static int check_ports(ms_error **err) {
  struct {
    const char *flag;
    int64_t port;
  } ports[6 + MAX_AGENTS] = {{"--etcd-port", f_etcd_port},
                             {"--etcd-peer-port", f_etcd_peer},
                             {"--registry-port", f_registry_port},
                             {"--allocator-port", f_allocator_port},
                             {"--master-port", f_master_port}};
  size_t n = 5;
  char flag[MAX_AGENTS][48];
  for (int64_t i = 0; i < f_agents; i++) {
    snprintf(flag[i], sizeof(flag[i]), i ? "--agent-port (+ 10 x %lld, agent %lld)" : "--agent-port",
             (long long)i, (long long)i + 1);
    ports[n].flag = flag[i];
    ports[n++].port = f_agent_port + 10 * i;
  }
  for (size_t i = 0; i < n; i++) {
    if (ports[i].port <= 0 || ports[i].port > 65535)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: %lld is not a port", ports[i].flag,
                          (long long)ports[i].port);
    for (size_t j = 0; j < i; j++)
      if (ports[j].port == ports[i].port)
        return ms_error_set(err, MS_INVALID_ARGUMENT, "%s and %s are both port %lld", ports[j].flag,
                            ports[i].flag, (long long)ports[i].port);
    char holder[256];
    if (cli_port_busy((int)ports[i].port, holder, sizeof(holder)))
      return ms_error_set(err, MS_FAILED_PRECONDITION,
                          "port %lld (%s) is in use by %s: stop it, or give %s another port",
                          (long long)ports[i].port, ports[i].flag, holder, ports[i].flag);
  }
  return 0;
}

int cli_up_exec(int argc, char **argv) {
  /* argv: CLI_UP_EXEC PARENT_PID PROG ARGS... */
  if (argc < 3)
    return 127;
  char *end;
  long parent = strtol(argv[1], &end, 10);
  if (*end || prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) {
    perror("meseta up: PR_SET_PDEATHSIG");
    return 127;
  }
  if (getppid() != (pid_t)parent) /* `meseta up` died before the line above */
    return 1;
  execvp(argv[2], argv + 2);
  fprintf(stderr, "meseta up: cannot run `%s`: %s\n", argv[2], strerror(errno));
  return 127;
}

static int start_all(up *u, ms_error **err) {
  char ready[PATH_MAX];
  _cleanup_free_ char *etcd_dir = ms_xasprintf("%s/etcd", u->state);
  _cleanup_free_ char *client = ms_xasprintf("http://127.0.0.1:%lld", (long long)f_etcd_port);
  _cleanup_free_ char *peer = ms_xasprintf("http://127.0.0.1:%lld", (long long)f_etcd_peer);
  _cleanup_free_ char *cluster = ms_xasprintf("meseta-local=%s", peer);
  mkdir_p(etcd_dir, 0700);
  char *eargv[] = {u->etcd_bin,    "--name",
                   "meseta-local", "--data-dir",
                   etcd_dir,       "--listen-client-urls",
                   client,         "--advertise-client-urls",
                   client,         "--listen-peer-urls",
                   peer,           "--initial-advertise-peer-urls",
                   peer,           "--initial-cluster",
                   cluster,        "--initial-cluster-state",
                   "new",          NULL};
  _cleanup_free_ char *einfo = ms_xasprintf("etcd on %s, data in %s", client, etcd_dir);
  if (spawn(u, "etcd", einfo, eargv, NULL, err) < 0 || wait_ready(u, 30000, &stop_flag, err) < 0)
    return MS_ERR;

  _cleanup_free_ char *reg = service_bin(u, "registry"), *reg_addr = portstr(f_registry_port);
  snprintf(ready, sizeof(ready), "%s/registry.ready", u->state);
  unlink(ready);
  char *rargv[] = {reg, "--listen", reg_addr, "--etcd-endpoints", client, "--ready-file", ready, NULL};
  _cleanup_free_ char *rinfo = ms_xasprintf("meseta-registry on %s", reg_addr);
  if (spawn(u, "registry", rinfo, rargv, ready, err) < 0 || wait_ready(u, 30000, &stop_flag, err) < 0)
    return MS_ERR;

  _cleanup_free_ char *alc = service_bin(u, "allocator"), *alc_addr = portstr(f_allocator_port);
  snprintf(ready, sizeof(ready), "%s/allocator.ready", u->state);
  unlink(ready);
  char *aargv[] = {alc,    "--listen",   alc_addr, "--advertise-address", alc_addr, "--etcd-endpoints",
                   client, "--registry", reg_addr, "--ready-file",        ready,    NULL};
  _cleanup_free_ char *ainfo = ms_xasprintf("meseta-allocator on %s (leader through etcd)", alc_addr);
  if (spawn(u, "allocator", ainfo, aargv, ready, err) < 0 || wait_ready(u, 30000, &stop_flag, err) < 0)
    return MS_ERR;

  _cleanup_free_ char *mapi = service_bin(u, "master-api"), *mapi_addr = portstr(f_master_port);
  snprintf(ready, sizeof(ready), "%s/master-api.ready", u->state);
  unlink(ready);
  char *margv[] = {mapi, "--listen", mapi_addr, "--allocator", alc_addr, "--ready-file", ready, NULL};
  _cleanup_free_ char *minfo = ms_xasprintf("meseta-master-api on %s: Scheduler and Operator", mapi_addr);
  if (spawn(u, "master-api", minfo, margv, ready, err) < 0 || wait_ready(u, 30000, &stop_flag, err) < 0)
    return MS_ERR;

  _cleanup_free_ char *agent = service_bin(u, "agent"), *runtime = service_bin(u, "runtime");
  for (int64_t i = 0; i < f_agents; i++) {
    char name[32];
    snprintf(name, sizeof(name), i ? "agent-%lld" : "agent", (long long)i + 1);
    _cleanup_free_ char *work = ms_xasprintf("%s/%s", u->state, name);
    _cleanup_free_ char *listen = portstr(f_agent_port + 10 * i);
    mkdir_p(work, 0755);
    snprintf(ready, sizeof(ready), "%s/%s.ready", u->state, name);
    unlink(ready);
    char *gargv[] = {agent,
                     "--work-dir",
                     work,
                     "--allocator",
                     alc_addr,
                     "--listen",
                     listen,
                     "--hostname",
                     "127.0.0.1",
                     "--runtime",
                     runtime,
                     "--seccomp-dir",
                     u->seccomp_dir,
                     "--kill-containers-on-exit",
                     "--cgroup-parent",
                     f_cgroup,
                     "--ready-file",
                     ready,
                     NULL};
    _cleanup_free_ char *info = ms_xasprintf("meseta-agent, sandboxes on %s, work dir %s", listen, work);
    /* 127.0.0.1 as the hostname: clients reach sandboxes at hostname:port, and no name
     * needs resolving. A restarted allocator holds offers until its agents are back (up to 30 s). */
    if (spawn(u, name, info, gargv, ready, err) < 0 || wait_ready(u, 60000, &stop_flag, err) < 0)
      return MS_ERR;
  }
  return 0;
}

int cli_cmd_up(cli *c, int argc, char **argv) {
  char **pos;
  int npos;
  int rc = cli_args(c, &spec, argc, argv, 0, 0, &pos, &npos);
  if (rc >= 0)
    return rc;
  if (f_agents < 1 || f_agents > MAX_AGENTS) {
    cli_args_free(&spec);
    return cli_usage_error("--agents: %lld is not between 1 and %d", (long long)f_agents, MAX_AGENTS);
  }
  if (geteuid() != 0)
    fprintf(stderr, "up: not root: agents need root for containers (namespaces, cgroups); tasks will fail\n");
  up u = {0};
  mkdir_p(f_state, 0755);
  char real[PATH_MAX];
  u.state = ms_xstrdup(realpath(f_state, real) ? real : f_state);
  u.logs = ms_xasprintf("%s/logs", u.state);
  mkdir_p(u.logs, 0755);
  u.bin_dir = f_bin_dir ? ms_xstrdup(f_bin_dir) : self_dir();
  u.etcd_bin = ms_xstrdup(f_etcd);
  u.seccomp_dir = f_seccomp ? ms_xstrdup(f_seccomp) : default_seccomp(&u);
  char self[PATH_MAX];
  ssize_t sn = readlink("/proc/self/exe", self, sizeof(self) - 1);
  self[sn > 0 ? sn : 0] = '\0';
  u.self = ms_xstrdup(sn > 0 ? self : "/proc/self/exe");

  struct sigaction sa = {.sa_handler = on_stop};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  /* A closed terminal or a gone `| tee` must not kill us halfway through stopping the
   * others: EPIPE on a write is ignored, the signal means stop. */
  sigaction(SIGPIPE, &sa, NULL);

  ms_error *err = NULL;
  rc = CLI_EXIT_OK;
  if (check_ports(&err) < 0) {
    fprintf(stderr, "up: %s\n", err->msg);
    ms_error_free(err);
    rc = CLI_EXIT_REFUSED;
  } else if (start_all(&u, &err) < 0) {
    fprintf(stderr, "up: %s\n", err->msg);
    ms_error_free(err);
    rc = stop_flag ? CLI_EXIT_OK : CLI_EXIT_UNREACHABLE;
  } else {
    printf("\nmeseta is up (state: %s)\n\n", u.state);
    for (int i = 0; i < u.n; i++)
      printf("  %-12s pid %-7d %s\n", u.procs[i].name, (int)u.procs[i].pid, u.procs[i].info);
    printf("\n  master:  127.0.0.1:%lld   (export MESETA_MASTER=127.0.0.1:%lld for another port)\n"
           "  try:     meseta agents\n"
           "           meseta run -- echo hello\n"
           "           meseta tasks\n"
           "  logs:    %s/\n\n"
           "Press Ctrl-C to stop.\n",
           (long long)f_master_port, (long long)f_master_port, u.logs);
    fflush(stdout);
    /* Stay in the foreground; a process that dies on its own takes the others down. */
    while (!stop_flag) {
      for (int i = 0; i < u.n && !stop_flag; i++)
        if (!alive(&u.procs[i])) {
          fprintf(stderr, "up: %s exited on its own; the end of its log:\n", u.procs[i].name);
          log_tail(&u, u.procs[i].name);
          rc = CLI_EXIT_REFUSED;
          stop_flag = 1;
        }
      ms_time_sleep_ms(200);
    }
    fprintf(stderr, "\nup: shutting down\n");
  }
  stop_all(&u);
  fprintf(stderr, "up: stopped; state kept in %s\n", u.state);
  for (int i = 0; i < u.n; i++)
    free(u.procs[i].ready);
  free(u.state);
  free(u.logs);
  free(u.bin_dir);
  free(u.etcd_bin);
  free(u.seccomp_dir);
  free(u.self);
  cli_args_free(&spec);
  return rc;
}
