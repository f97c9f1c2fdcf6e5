/* bench-master-api: Operator.GetState latency and throughput from meseta-master-api
 * over a simulated cluster of 10,000 agents and 100,000 running tasks, with one
 * replica and then with two, in one run.
 *
 *   bench-master-api [--agents N] [--tasks N] [--completed N] [--finish-rate N/s]
 *                    [--frameworks N] [--clients 1,4,16] [--seconds S] [--no-paged]
 *
 * It starts a real etcd, meseta-registry, meseta-allocator (leader through etcd,
 * durable through the registry) from the build tree, subscribes --frameworks
 * simulated frameworks, and brings --agents simulated agents in through AgentLink,
 * each re-registering (as after an allocator failover) with its share of the tasks
 * as checkpointed RUNNING tasks (fleet.h). Then one master-api builds its view from
 * the allocator's WatchState, and client threads read the whole state for --seconds
 * per configuration (load.h): first all on one replica, then, with a second replica
 * started, split over both.
 *
 * --completed N more tasks are reported TASK_FINISHED by their agents once both
 * replicas watch (the allocator forgets finished tasks; a view keeps those it saw
 * finish), --finish-rate a second (2000 by default: a burst overflows the allocator's
 * per-stream send queues, which cuts framework and watcher streams off). That is
 * Mesos' anchor shape: 1.7's /state took 1.86 s at 10k agents with 100k running and
 * 100k completed tasks (--completed 100000).
 *
 * Prints figures and ratios; asserts no time. Every process it started is stopped at
 * the end and on failure, and killed on SIGINT / SIGTERM. */
#include <getopt.h>
#include <grpc/grpc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/rpc.h"
#include "meseta/time.h"
#include "meseta/v1/operator.pb-c.h"

#include "cluster.h"
#include "etcd-harness.h"
#include "fleet.h"
#include "load.h"
#include "proc.h"
#include "sim.h"
#include "testlib.h"

#define MESOS_STATE_S 1.86
#define MAX_CLIENTS 64
#define POPULATE_GUARD_MS (30 * 60 * 1000)
#define SYNC_GUARD_MS (10 * 60 * 1000)

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- what the run started, stopped by cleanup() on every path ---- */

static struct {
  ms_test_etcd *etcd;
  ms_test_proc *registry, *alloc, *mapi[2];
  ms_sim_framework **fws;
  size_t nfws;
  bench_fleet *fleet;
  char *dir;
  bool keep_dir;
} run;

/* Every process started, for on_signal; cleared once all are stopped. */
static volatile pid_t children[8];

static void cleanup(void) {
  /* master-api first, then the allocator (it ends 10k streams at once, without
   * removing the agents one by one), then the simulated clients. */
  for (int i = 0; i < 2; i++) {
    if (run.mapi[i])
      ms_test_proc_stop(run.mapi[i], SIGTERM);
    ms_test_proc_free(TAKE_PTR(run.mapi[i]));
  }
  if (run.alloc)
    ms_test_proc_stop(run.alloc, SIGTERM);
  ms_test_proc_free(TAKE_PTR(run.alloc));
  bench_fleet_free(TAKE_PTR(run.fleet));
  for (size_t i = 0; i < run.nfws; i++)
    ms_sim_framework_free(run.fws[i]);
  free(TAKE_PTR(run.fws));
  run.nfws = 0;
  if (run.registry)
    ms_test_proc_stop(run.registry, SIGTERM);
  ms_test_proc_free(TAKE_PTR(run.registry));
  ms_test_etcd_free(TAKE_PTR(run.etcd));
  for (size_t i = 0; i < MS_ARRAY_SIZE(children); i++)
    children[i] = 0;
  if (run.dir) {
    if (run.keep_dir)
      fprintf(stderr, "bench-master-api: logs kept in %s\n", run.dir);
    else
      ms_test_rmtree(run.dir);
    free(TAKE_PTR(run.dir));
  }
}

static _Noreturn void fail(const char *what, ms_error *err) {
  fprintf(stderr, "bench-master-api: %s%s%s\n", what, err ? ": " : "", err ? err->msg : "");
  ms_error_free(err);
  run.keep_dir = true;
  cleanup();
  exit(1);
}

static void remember(pid_t pid) {
  for (size_t i = 0; i < MS_ARRAY_SIZE(children); i++)
    if (!children[i]) {
      children[i] = pid;
      return;
    }
}

/* SIGINT / SIGTERM: every process started is killed (async-signal-safe: kill and
 * _exit only); the temp directories stay. */
static void on_signal(int sig) {
  static const char msg[] = "bench-master-api: interrupted, killing the processes it started\n";
  for (size_t i = 0; i < MS_ARRAY_SIZE(children); i++)
    if (children[i] > 0)
      kill(children[i], SIGKILL);
  if (write(2, msg, sizeof(msg) - 1) < 0) {
  }
  _exit(128 + sig);
}

/* ---- /proc ---- */

static double cpu_of(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "re");
  if (!f)
    return 0;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *p = strrchr(buf, ')');
  unsigned long long ut = 0, st = 0;
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
    return 0;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* VmRSS or VmHWM of a process, in MiB. */
static double mem_mb(pid_t pid, const char *field) {
  char path[64], line[256];
  snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "re");
  double kb = 0;
  size_t n = strlen(field);
  while (f && fgets(line, sizeof(line), f))
    if (strncmp(line, field, n) == 0 && line[n] == ':')
      kb = strtod(line + n + 1, NULL);
  if (f)
    fclose(f);
  return kb / 1024.0;
}

/* The 1-minute load average (other work on the machine skews every figure). */
static double loadavg(void) {
  FILE *f = fopen("/proc/loadavg", "re");
  double l = 0;
  if (f && fscanf(f, "%lf", &l) != 1)
    l = 0;
  if (f)
    fclose(f);
  return l;
}

/* CPU seconds of the processes that matter, to show who did the work of a step. */
typedef struct cpu_snap {
  double etcd, registry, alloc, mapi[2], bench, wall;
} cpu_snap;

static void cpu_take(cpu_snap *c) {
  *c = (cpu_snap){.etcd = run.etcd ? cpu_of(ms_test_etcd_pid(run.etcd)) : 0,
                  .registry = run.registry ? cpu_of(ms_test_proc_pid(run.registry)) : 0,
                  .alloc = run.alloc ? cpu_of(ms_test_proc_pid(run.alloc)) : 0,
                  .mapi = {run.mapi[0] ? cpu_of(ms_test_proc_pid(run.mapi[0])) : 0,
                           run.mapi[1] ? cpu_of(ms_test_proc_pid(run.mapi[1])) : 0},
                  .bench = cpu_of(getpid()),
                  .wall = now_s()};
}

/* Prints the cores each process kept busy since *a was taken. */
static void cpu_print(const char *step, const cpu_snap *a) {
  cpu_snap b;
  cpu_take(&b);
  double w = b.wall - a->wall;
  if (w <= 0)
    return;
  printf("    cpu during %s (%.1f s; cores busy): etcd %.2f, registry %.2f, allocator %.2f, "
         "master-api %.2f + %.2f, bench %.2f; load average %.1f\n",
         step, w, (b.etcd - a->etcd) / w, (b.registry - a->registry) / w, (b.alloc - a->alloc) / w,
         (b.mapi[0] - a->mapi[0]) / w, (b.mapi[1] - a->mapi[1]) / w, (b.bench - a->bench) / w, loadavg());
}

/* ---- steps ---- */

static ms_test_proc *start_proc(const char *name, const char *const *argv) {
  ms_error *err = NULL;
  ms_test_proc *p = ms_test_proc_start(name, run.dir, argv, &err);
  if (!p)
    fail(name, err);
  remember(ms_test_proc_pid(p));
  return p;
}

static ms_test_proc *start_mapi(int i, const char *alloc) {
  _cleanup_free_ char *bin = ms_test_binary("services/master-api/meseta-master-api");
  char name[32];
  snprintf(name, sizeof(name), "master-api-%d", i);
  const char *argv[] = {bin,  "--listen",    "127.0.0.1:0", "--allocator",         alloc,  "--name",
                        name, "--log-level", "warn",        "--max-message-bytes", "1GiB", NULL};
  return start_proc(name, argv);
}

/* What master-api does for each GetState (the view holds unpacked messages and
 * packs the answer from them), timed here on the same message: protobuf-c's size
 * pass and pack, against a plain copy of the packed bytes. */
static void serialization(const ProtobufCMessage *m, size_t size) {
  double t0 = now_s();
  size_t n = protobuf_c_message_get_packed_size(m);
  double t1 = now_s();
  uint8_t *buf = ms_xmalloc(n), *copy = ms_xmalloc(n);
  protobuf_c_message_pack(m, buf);
  double t2 = now_s();
  memcpy(copy, buf, n);
  __asm__ volatile("" : : "r"(copy) : "memory"); /* the copy counts: not optimised away */
  double t3 = now_s();
  printf("    serializing this GetState here (what master-api does per read): get_packed_size %.0f ms + pack "
         "%.0f ms; a memcpy of the %.1f MB it yields: %.1f ms\n",
         (t1 - t0) * 1e3, (t2 - t1) * 1e3, (double)size / 1e6, (t3 - t2) * 1e3);
  free(buf);
  free(copy);
}

/* Waits until the replica reports SERVING (its first snapshot applied); prints how
 * long after cs was taken (just before its start) and the cpu spent meanwhile. */
static void wait_serving(const char *addr, const char *label, const cpu_snap *cs) {
  int64_t end = ms_time_mono_ms() + SYNC_GUARD_MS;
  while (ms_test_health(addr) != 1) {
    if (ms_time_mono_ms() > end)
      fail("master-api did not become SERVING (hang guard)", NULL);
    ms_time_sleep_ms(20);
  }
  printf("  %s: SERVING (its snapshot applied) %.2f s after its start\n", label, now_s() - cs->wall);
  cpu_print("the sync", cs);
}

/* What one GetState shows. */
typedef struct view_counts {
  size_t agents, tasks, terminal, bytes;
  double call_and_unpack_ms;
} view_counts;

static bool terminal(Meseta__V1__TaskState s) {
  return s == MESETA__V1__TASK_STATE__TASK_FINISHED || s == MESETA__V1__TASK_STATE__TASK_FAILED ||
         s == MESETA__V1__TASK_STATE__TASK_KILLED || s == MESETA__V1__TASK_STATE__TASK_LOST ||
         s == MESETA__V1__TASK_STATE__TASK_ERROR || s == MESETA__V1__TASK_STATE__TASK_DROPPED ||
         s == MESETA__V1__TASK_STATE__TASK_GONE || s == MESETA__V1__TASK_STATE__TASK_GONE_BY_OPERATOR;
}

/* One GetState, unpacked and counted (profile: and its serialization timed). */
static void view_count(const char *addr, bool profile, view_counts *ret) {
  ms_rpc_channel_options o = {.max_message_bytes = 1024 * 1024 * 1024};
  ms_error *err = NULL;
  ms_rpc_channel *ch = ms_rpc_channel_new(addr, &o, &err);
  if (!ch)
    fail("master-api channel", err);
  Meseta__V1__GetStateRequest req = MESETA__V1__GET_STATE_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  ms_rpc_call_options co = {.timeout_ms = 120000};
  double t0 = now_s();
  if (ms_rpc_unary(ch, "/meseta.v1.Operator/GetState", &req.base, &meseta__v1__get_state_response__descriptor,
                   &co, &resp, &err) < 0)
    fail("GetState", err);
  *ret = (view_counts){.call_and_unpack_ms = (now_s() - t0) * 1e3};
  const Meseta__V1__State *st = ((Meseta__V1__GetStateResponse *)resp)->state;
  if (st) {
    ret->agents = st->n_agents;
    ret->tasks = st->n_tasks;
    for (size_t i = 0; i < st->n_tasks; i++)
      ret->terminal += terminal(st->tasks[i]->state);
  }
  ret->bytes = protobuf_c_message_get_packed_size(resp);
  if (profile)
    serialization(resp, ret->bytes);
  protobuf_c_message_free_unpacked(resp, NULL);
  ms_rpc_channel_free(ch);
}

/* Polls GetState until the view has `agents` agents and `tasks` tasks, `terminal` of
 * them terminal; a hang guard only. */
static void wait_counts(const char *addr, size_t agents, size_t tasks, size_t term, int64_t guard_ms,
                        view_counts *ret) {
  int64_t end = ms_time_mono_ms() + guard_ms;
  for (;;) {
    view_count(addr, false, ret);
    if (ret->agents == agents && ret->tasks == tasks && ret->terminal == term)
      return;
    if (ms_time_mono_ms() > end) {
      fprintf(
          stderr,
          "bench-master-api: the view has %zu agents, %zu tasks (%zu terminal); %zu, %zu (%zu) expected\n",
          ret->agents, ret->tasks, ret->terminal, agents, tasks, term);
      fail("master-api's view never got there (hang guard)", NULL);
    }
    ms_time_sleep_ms(200);
  }
}

typedef struct cfg {
  size_t agents, tasks, completed, frameworks;
  double finish_rate;
  int clients[8];
  size_t nclients;
  double seconds;
  bool paged;
} cfg;

static void parse(int argc, char **argv, cfg *c) {
  *c = (cfg){.agents = 10000,
             .tasks = 100000,
             .frameworks = 10,
             .finish_rate = 2000,
             .clients = {1, 4, 16},
             .nclients = 3,
             .seconds = 10,
             .paged = true};
  static const struct option longopts[] = {{"agents", required_argument, NULL, 'a'},
                                           {"tasks", required_argument, NULL, 't'},
                                           {"frameworks", required_argument, NULL, 'f'},
                                           {"clients", required_argument, NULL, 'c'},
                                           {"seconds", required_argument, NULL, 's'},
                                           {"completed", required_argument, NULL, 'C'},
                                           {"finish-rate", required_argument, NULL, 'r'},
                                           {"no-paged", no_argument, NULL, 'n'},
                                           {NULL, 0, NULL, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (o) {
    case 'a':
      c->agents = strtoul(optarg, NULL, 10);
      break;
    case 't':
      c->tasks = strtoul(optarg, NULL, 10);
      break;
    case 'C':
      c->completed = strtoul(optarg, NULL, 10);
      break;
    case 'r':
      c->finish_rate = strtod(optarg, NULL);
      break;
    case 'f':
      c->frameworks = strtoul(optarg, NULL, 10);
      break;
    case 's':
      c->seconds = strtod(optarg, NULL);
      break;
    case 'n':
      c->paged = false;
      break;
    case 'c': {
      c->nclients = 0;
      for (char *p = optarg; *p && c->nclients < MS_ARRAY_SIZE(c->clients);) {
        long v = strtol(p, &p, 10);
        if (v < 1 || v > MAX_CLIENTS)
          goto usage;
        c->clients[c->nclients++] = (int)v;
        if (*p == ',')
          p++;
      }
      break;
    }
    default:
      goto usage;
    }
  }
  if (c->agents && c->frameworks && c->tasks % c->agents == 0 && c->completed % c->agents == 0 &&
      c->seconds > 0 && c->nclients)
    return;
usage:
  fprintf(stderr,
          "usage: bench-master-api [--agents N] [--tasks N] [--completed N] (multiples of agents) "
          "[--frameworks N]\n"
          "                        [--clients 1,4,16 (each 1-%d)] [--seconds S] [--no-paged]\n",
          MAX_CLIENTS);
  exit(2);
}

/* ---- the measurements ---- */

typedef struct row {
  load_mode mode;
  int replicas, clients;
  load_result r;
  double mapi_cpu_per_read_ms, bench_cpu_share;
} row;

static void measure(const cfg *c, load_mode mode, int replicas, int clients, row *out) {
  const char *targets[2] = {ms_test_proc_address(run.mapi[0]),
                            replicas > 1 ? ms_test_proc_address(run.mapi[1]) : NULL};
  pid_t pids[3] = {ms_test_proc_pid(run.mapi[0]), replicas > 1 ? ms_test_proc_pid(run.mapi[1]) : 0, getpid()};
  double cpu0[3];
  for (int i = 0; i < 3; i++)
    cpu0[i] = pids[i] ? cpu_of(pids[i]) : 0;
  *out = (row){.mode = mode, .replicas = replicas, .clients = clients};
  load_run(mode, targets, (size_t)replicas, clients, c->seconds, &out->r);
  double mapi_cpu = 0;
  for (int i = 0; i < 2; i++)
    mapi_cpu += pids[i] ? cpu_of(pids[i]) - cpu0[i] : 0;
  double bench_cpu = cpu_of(pids[2]) - cpu0[2];
  out->mapi_cpu_per_read_ms = out->r.reads ? mapi_cpu * 1e3 / (double)out->r.reads : 0;
  out->bench_cpu_share = out->r.seconds > 0 ? bench_cpu / out->r.seconds : 0;
  printf("  %-8s %d replica%s %2d clients: %6zu reads, %8.1f reads/s, p50 %8.1f ms, p99 %8.1f ms, "
         "%6.1f MB/read, %4.1f RPCs/read, master-api cpu %.1f ms/read, bench %.2f cores, load %.1f%s%s\n",
         mode == LOAD_STATE ? "GetState" : "paged", replicas, replicas > 1 ? "s" : " ", clients, out->r.reads,
         out->r.reads_per_s, out->r.p50_ms, out->r.p99_ms, out->r.bytes_per_read / 1e6, out->r.calls_per_read,
         out->mapi_cpu_per_read_ms, out->bench_cpu_share, loadavg(), out->r.errors ? "; errors: " : "",
         out->r.errors ? out->r.first_error : "");
  fflush(stdout);
}

static void phase(const cfg *c, int replicas, row *rows, size_t *nrows) {
  for (size_t i = 0; i < c->nclients; i++)
    measure(c, LOAD_STATE, replicas, c->clients[i], &rows[(*nrows)++]);
  if (c->paged)
    for (size_t i = 0; i < c->nclients; i++)
      measure(c, LOAD_PAGED, replicas, c->clients[i], &rows[(*nrows)++]);
}

static const row *find(const row *rows, size_t n, load_mode m, int replicas, int clients) {
  for (size_t i = 0; i < n; i++)
    if (rows[i].mode == m && rows[i].replicas == replicas && rows[i].clients == clients)
      return &rows[i];
  return NULL;
}

int main(int argc, char **argv) {
  cfg c;
  parse(argc, argv, &c);
  struct sigaction sa = {.sa_handler = on_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  grpc_init();
  ms_error *err = NULL;
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  size_t per_agent = c.tasks / c.agents;
  printf("bench-master-api: %zu agents, %zu running tasks (%zu each), %zu frameworks; %.0f s per "
         "configuration; nproc %ld, load average %.1f\n",
         c.agents, c.tasks, per_agent, c.frameworks, c.seconds, cores, loadavg());
  if (cores <= 2)
    printf("  note: %ld cores are shared by the client threads, the master-api replicas, the allocator and "
           "etcd: a second replica can add throughput only as far as a core is idle\n",
           cores);
  fflush(stdout);

  run.dir = ms_test_tmpdir("bench-master-api");
  double t0 = now_s();
  if (!(run.etcd = ms_test_etcd_start(&err)))
    fail("etcd", err);
  remember(ms_test_etcd_pid(run.etcd));
  const char *ep = ms_test_etcd_endpoint(run.etcd);
  _cleanup_free_ char *regbin = ms_test_binary("services/registry/meseta-registry");
  _cleanup_free_ char *allocbin = ms_test_binary("services/allocator/meseta-allocator");
  const char *rargv[] = {regbin, "--listen",    "127.0.0.1:0", "--etcd-endpoints",
                         ep,     "--log-level", "warn",        NULL};
  run.registry = start_proc("registry", rargv);
  /* Keep every completed task the run makes (the Mesos anchor has 100k): the allocator's
   * defaults keep fewer. */
  _cleanup_free_ char *keep_done =
      ms_xasprintf("%zu", c.completed > 1000 ? (size_t)c.completed : (size_t)1000);
  const char *aargv[] = {allocbin,
                         "--listen",
                         "127.0.0.1:0",
                         "--etcd-endpoints",
                         ep,
                         "--leader-lease",
                         "5s",
                         "--registry",
                         ms_test_proc_address(run.registry),
                         "--log-level",
                         "warn",
                         "--max-completed-tasks",
                         keep_done,
                         "--max-completed-tasks-per-framework",
                         keep_done,
                         NULL};
  run.alloc = start_proc("allocator", aargv);
  const char *alloc = ms_test_proc_address(run.alloc);
  int64_t end = ms_time_mono_ms() + 60000;
  while (ms_test_health(alloc) != 1)
    if (ms_time_mono_ms() > end)
      fail("the allocator did not lead (hang guard)", NULL);
    else
      ms_time_sleep_ms(20);
  printf("  control plane up (etcd, registry, allocator leading): %.2f s\n", now_s() - t0);

  /* Frameworks first: re-registering agents' tasks are charged to known frameworks. */
  run.fws = ms_xcalloc(c.frameworks, sizeof(*run.fws));
  const char **fw_ids = ms_xcalloc(c.frameworks, sizeof(*fw_ids));
  for (size_t i = 0; i < c.frameworks; i++) {
    char name[32];
    snprintf(name, sizeof(name), "bench-fw-%zu", i);
    ms_sim_framework_options fo = {.name = name, .mode = MS_SIM_DECLINE, .refuse_ms = 3600 * 1000};
    if (!(run.fws[i] = ms_sim_framework_start(alloc, &fo, &err)))
      fail("framework", err);
    run.nfws++;
    fw_ids[i] = ms_sim_framework_id(run.fws[i]);
  }

  cpu_snap cs;
  cpu_take(&cs);
  double tp = now_s();
  bench_fleet_options fo = {.target = alloc,
                            .agents = c.agents,
                            .tasks_per_agent = per_agent,
                            .completed_per_agent = c.completed / c.agents,
                            .finish_rate = c.finish_rate,
                            .task_resources = "cpus:1;mem:1024;disk:1024",
                            .frameworks = fw_ids,
                            .n_frameworks = c.frameworks};
  if (!(run.fleet = bench_fleet_start(&fo, &err)))
    fail("fleet", err);
  double sent = now_s() - tp;
  bench_fleet_stats fs = {0};
  end = ms_time_mono_ms() + POPULATE_GUARD_MS;
  double next_note = now_s() + 10;
  for (;;) {
    bench_fleet_stats_get(run.fleet, &fs);
    if (fs.registered >= c.agents)
      break;
    if (fs.ended) {
      ms_error_set(&err, MS_ERR, "%s", bench_fleet_first_error(run.fleet));
      fail("an agent's stream ended while populating", err);
    }
    if (ms_time_mono_ms() > end)
      fail("not every agent re-registered (hang guard)", NULL);
    if (now_s() > next_note) {
      printf("  ... %zu of %zu agents re-registered after %.0f s\n", fs.registered, c.agents, now_s() - tp);
      fflush(stdout);
      next_note += 10;
    }
    ms_time_sleep_ms(50);
  }
  double populate = now_s() - tp;
  printf("  populate: %zu agents re-registered with %zu tasks in %.2f s (%.0f agents/s; streams opened and "
         "REREGISTERs queued in %.2f s)\n",
         c.agents, c.tasks + c.completed, populate, (double)c.agents / populate, sent);
  cpu_print("populate", &cs);
  fflush(stdout);

  /* One replica: its view comes as one snapshot of the whole state. With completed
   * tasks both replicas start now (the second one idle until its phase): a view keeps
   * a finished task only if it saw it finish. */
  size_t all = c.tasks + c.completed;
  view_counts vc;
  cpu_take(&cs);
  run.mapi[0] = start_mapi(0, alloc);
  wait_serving(ms_test_proc_address(run.mapi[0]), "master-api 1", &cs);
  if (c.completed) {
    cpu_take(&cs);
    run.mapi[1] = start_mapi(1, alloc);
    wait_serving(ms_test_proc_address(run.mapi[1]), "master-api 2", &cs);
    wait_counts(ms_test_proc_address(run.mapi[1]), c.agents, all, 0, SYNC_GUARD_MS, &vc);
    wait_counts(ms_test_proc_address(run.mapi[0]), c.agents, all, 0, SYNC_GUARD_MS, &vc);
    double tf = now_s();
    cpu_take(&cs);
    bench_fleet_finish(run.fleet);
    /* A view cut off meanwhile (too slow for the allocator's queue) gets a snapshot
     * without them: the guard says so in 3 minutes. */
    wait_counts(ms_test_proc_address(run.mapi[0]), c.agents, all, c.completed, 180000, &vc);
    wait_counts(ms_test_proc_address(run.mapi[1]), c.agents, all, c.completed, 180000, &vc);
    printf(
        "  %zu tasks finished (TASK_FINISHED from their agents, paced at %.0f/s) and both views show them, "
        "%.2f s\n",
        c.completed, c.finish_rate, now_s() - tf);
    cpu_print("the finishing", &cs);
    /* The frameworks' acknowledgements still flow to the agents: measure once quiet. */
    double tq = now_s();
    bench_fleet_stats_get(run.fleet, &fs);
    for (size_t last = fs.messages, quiet = 0; quiet < 20 && now_s() - tq < 300;) {
      ms_time_sleep_ms(100);
      bench_fleet_stats_get(run.fleet, &fs);
      quiet = fs.messages == last ? quiet + 1 : 0;
      last = fs.messages;
    }
    printf("  the allocator and agents quiet again %.2f s later (acknowledgements delivered)\n",
           now_s() - tq);
  }
  view_count(ms_test_proc_address(run.mapi[0]), true, &vc);
  if (vc.agents != c.agents || vc.tasks != all)
    fail("master-api 1's GetState lacks agents or tasks", NULL);
  size_t size = vc.bytes;
  printf(
      "  master-api 1: GetState has %zu agents and %zu tasks (%zu terminal), %.1f MB; one GetState with the "
      "client's unpacking took %.0f ms\n",
      vc.agents, vc.tasks, vc.terminal, (double)size / 1e6, vc.call_and_unpack_ms);
  printf("  rss: master-api 1 %.0f MiB (peak %.0f), allocator %.0f MiB\n",
         mem_mb(ms_test_proc_pid(run.mapi[0]), "VmRSS"), mem_mb(ms_test_proc_pid(run.mapi[0]), "VmHWM"),
         mem_mb(ms_test_proc_pid(run.alloc), "VmRSS"));
  fflush(stdout);

  row rows[64];
  size_t nrows = 0;
  phase(&c, 1, rows, &nrows);

  if (!c.completed) {
    cpu_take(&cs);
    run.mapi[1] = start_mapi(1, alloc);
    wait_serving(ms_test_proc_address(run.mapi[1]), "master-api 2", &cs);
    wait_counts(ms_test_proc_address(run.mapi[1]), c.agents, all, 0, SYNC_GUARD_MS, &vc);
  }
  fflush(stdout);
  phase(&c, 2, rows, &nrows);
  printf("  rss after the reads: master-api 1 %.0f MiB (peak %.0f), master-api 2 %.0f MiB (peak %.0f), "
         "allocator %.0f MiB\n",
         mem_mb(ms_test_proc_pid(run.mapi[0]), "VmRSS"), mem_mb(ms_test_proc_pid(run.mapi[0]), "VmHWM"),
         mem_mb(ms_test_proc_pid(run.mapi[1]), "VmRSS"), mem_mb(ms_test_proc_pid(run.mapi[1]), "VmHWM"),
         mem_mb(ms_test_proc_pid(run.alloc), "VmRSS"));

  if (c.completed) {
    /* A replica that starts now builds its view from the allocator's snapshot. */
    ms_test_proc_stop(run.mapi[1], SIGTERM);
    ms_test_proc_free(TAKE_PTR(run.mapi[1]));
    cpu_take(&cs);
    run.mapi[1] = start_mapi(1, alloc);
    wait_serving(ms_test_proc_address(run.mapi[1]), "master-api 2 restarted", &cs);
    view_count(ms_test_proc_address(run.mapi[1]), false, &vc);
    printf(
        "  master-api 2 restarted: its GetState has %zu tasks (%zu terminal) where master-api 1 has %zu (%zu "
        "terminal): both come from the allocator's retained completed tasks\n",
        vc.tasks, vc.terminal, all, c.completed);
  }
  printf("\nsummary (%zu agents, %zu running + %zu completed tasks, %.1f MB per GetState; nproc %ld)\n",
         c.agents, c.tasks, c.completed, (double)size / 1e6, cores);
  printf("  %-9s %7s %9s %10s %10s %9s %14s %13s\n", "read", "clients", "replicas", "p50 ms", "p99 ms",
         "reads/s", "mapi cpu/read", "p50 vs Mesos");
  double cpu_state =
      0; /* the smallest per-read cost seen for GetState (least contended): the ceiling's basis */
  for (size_t i = 0; i < nrows; i++) {
    const row *r = &rows[i];
    printf("  %-9s %7d %9d %10.1f %10.1f %9.2f %11.1f ms %12.1fx\n",
           r->mode == LOAD_STATE ? "GetState" : "paged", r->clients, r->replicas, r->r.p50_ms, r->r.p99_ms,
           r->r.reads_per_s, r->mapi_cpu_per_read_ms,
           r->r.p50_ms > 0 ? MESOS_STATE_S * 1e3 / r->r.p50_ms : 0);
    if (r->mode == LOAD_STATE && r->mapi_cpu_per_read_ms > 0 &&
        (!cpu_state || r->mapi_cpu_per_read_ms < cpu_state))
      cpu_state = r->mapi_cpu_per_read_ms;
  }
  for (size_t i = 0; i < nrows; i++) {
    const row *one = &rows[i];
    const row *two = one->replicas == 1 ? find(rows, nrows, one->mode, 2, one->clients) : NULL;
    if (two && one->r.reads_per_s > 0)
      printf("  %-9s %2d client%s 2 replicas / 1 replica reads/s = %.2f%s\n",
             one->mode == LOAD_STATE ? "GetState" : "paged", one->clients, one->clients > 1 ? "s:" : ": ",
             two->r.reads_per_s / one->r.reads_per_s,
             one->clients == 1 ? " (one client reads from one replica either way: this is the run's noise)"
                               : "");
  }
  if (cpu_state > 0)
    printf(
        "  ceiling from cpu: a replica serialises each GetState on its one server thread, %.0f ms of cpu: "
        "at most %.1f reads/s per replica with a core to itself, p50 >= ~%.0f ms without queueing; two "
        "replicas double the ceiling only with two idle cores (this machine: %ld cores, load average %.1f)\n",
        cpu_state, 1e3 / cpu_state, cpu_state, cores, loadavg());
  printf("  Mesos 1.7 /state: %.2f s at 10k agents, 100k running + 100k completed tasks (\"p50 vs Mesos\" = "
         "1.86 s / p50).\n",
         MESOS_STATE_S);
  fflush(stdout);
  free(fw_ids);
  cleanup();
  grpc_shutdown();
  return 0;
}
