/* End to end over a small simulated network (issue 8): the services (etcd, registry,
 * allocator, master-api) in one network namespace, three real agents in three more, each
 * with its own address, joined by a bridge in the services' namespace; the example C
 * batch framework (examples/c, meseta-batch) runs 1,000 `true` tasks
 * ($MESETA_E2E_TASKS to change it) as real containers. Every task reaches FINISHED exactly
 * once, the tasks ran on all three agents, and the operator's view (GetTasks, GetState)
 * agrees with what the framework saw (the framework is left registered with
 * --no-teardown so that its completed tasks are still there, up to the allocator's
 * retention of 1000 per framework; the test tears it down afterwards). Afterwards
 * nothing of the run is left: no process, no namespace, no container cgroup.
 *
 * Layout (x from the pid): namespace mse2e-<pid>-s holds br0 10.213.x.1/24 and the
 * services; mse2e-<pid>-a<i> holds eth0 10.213.x.(10+i)/24, whose veth peer v<i> is on
 * br0. Nothing is added to the host's own namespace, so deleting the four namespaces
 * removes every link. This process enters the services' namespace itself (before any
 * thread exists), so the processes it starts and its own calls are there too; agents are
 * started through nsenter (not `ip netns exec`, which remounts /sys and would hide the
 * cgroup hierarchies). Root only; skipped without `ip` or nsenter. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/rpc.h"
#include "meseta/time.h"
#include "meseta/v1/operator.pb-c.h"

#include "cluster.h"
#include "e2e-stack.h"
#include "sim.h"
#include "testlib.h"

#define N_AGENTS 3
#define AGENT_RESOURCES "cpus:2;mem:2048"
#define AGENT_SLOTS 20 /* tasks of cpus:0.1;mem:32 that fit one agent */
#define IP "/usr/sbin/ip"
#define BATCH_TIMEOUT_MS (15 * 60 * 1000) /* hang guard */
#define VIEW_WAIT_MS 30000

static char ns_svc[32], ns_agent[N_AGENTS][32], net[32];
static const char *agent_ns[N_AGENTS];
static char *dir;
static ms_e2e_stack stack;
static bool stack_up;
static char *cgroup_parent[N_AGENTS];
static int64_t n_tasks = 1000;
static ms_e2e_batch result;

/* Runs a shell command line; its exit status (or -1). Output goes to ip.log. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *cmd = NULL;
  int r = vasprintf(&cmd, fmt, ap);
  va_end(ap);
  if (r < 0)
    return -1;
  _cleanup_free_ char *log = dir ? ms_xasprintf("%s/ip.log", dir) : ms_xstrdup("/dev/null");
  _cleanup_free_ char *line = ms_xasprintf("(%s) >>'%s' 2>&1", cmd, log);
  free(cmd);
  int st = system(line);
  return st == -1 ? -1 : WEXITSTATUS(st);
}

static bool serving_addr(void *addr) {
  return ms_test_health(addr) == 1;
}

static char *slurp_file(const char *path) {
  _cleanup_fclose_ FILE *f = fopen(path, "re");
  char *buf = NULL;
  size_t cap = 0;
  if (!f || getdelim(&buf, &cap, '\0', f) < 0) {
    free(buf);
    return ms_xstrdup("");
  }
  return buf;
}

static void closedirp(DIR **d) {
  if (*d)
    closedir(*d);
}

static bool ns_exists(const char *name) {
  _cleanup_free_ char *p = ms_xasprintf("/run/netns/%s", name);
  return access(p, F_OK) == 0;
}

/* Kills what is left in the container cgroups (c-*) under `parent` and removes them and
 * it, in every hierarchy. */
static void remove_cgroup_parent(const char *parent) {
  _cleanup_(closedirp) DIR *root = opendir("/sys/fs/cgroup");
  struct dirent *h;
  while (root && (h = readdir(root))) {
    if (h->d_name[0] == '.')
      continue;
    _cleanup_free_ char *path = ms_xasprintf("/sys/fs/cgroup/%s/%s", h->d_name, parent);
    _cleanup_(closedirp) DIR *d = opendir(path);
    struct dirent *c;
    while (d && (c = readdir(d))) {
      if (strncmp(c->d_name, "c-", 2) != 0)
        continue;
      sh("xargs -r kill -9 < '%s/%s/cgroup.procs'", path, c->d_name);
      _cleanup_free_ char *child = ms_xasprintf("%s/%s", path, c->d_name);
      rmdir(child);
    }
    rmdir(path);
  }
}

static void remove_cgroups(void) {
  for (int i = 0; i < N_AGENTS; i++)
    if (cgroup_parent[i])
      remove_cgroup_parent(cgroup_parent[i]);
}

/* A run that died without its cleanup (a crash, SIGKILL: atexit handlers do not run)
 * leaves namespaces mse2e-<pid>-* and cgroups meseta-e2e-<pid>-*; remove those of dead
 * pids. */
static void remove_stale(void) {
  _cleanup_(closedirp) DIR *d = opendir("/run/netns");
  struct dirent *e;
  int pid;
  while (d && (e = readdir(d)))
    if (sscanf(e->d_name, "mse2e-%d-", &pid) == 1 && pid > 0 && kill(pid, 0) < 0 && errno == ESRCH)
      sh(IP " netns del '%s'", e->d_name);
  _cleanup_(closedirp) DIR *cg = opendir("/sys/fs/cgroup/pids");
  while (cg && (e = readdir(cg)))
    if (sscanf(e->d_name, "meseta-e2e-%d-", &pid) == 1 && pid > 0 && kill(pid, 0) < 0 && errno == ESRCH)
      remove_cgroup_parent(e->d_name);
}

/* The namespaces and cgroups go. Also an atexit handler for a run that ends abruptly:
 * it runs after tests/lib's own handlers have killed the processes they started
 * (registered first, so it runs last). Idempotent. */
static void remove_all(void) {
  remove_cgroups();
  for (int i = 0; i < N_AGENTS; i++)
    if (ns_agent[i][0] && ns_exists(ns_agent[i]))
      sh(IP " netns del %s", ns_agent[i]);
  if (ns_svc[0] && ns_exists(ns_svc))
    sh(IP " netns del %s", ns_svc);
}

/* The namespaces, the bridge and the veth pairs, then this process joins the services'
 * namespace. */
static void make_network(void) {
  int pid = (int)getpid();
  snprintf(net, sizeof(net), "10.213.%d", 20 + pid % 200);
  snprintf(ns_svc, sizeof(ns_svc), "mse2e-%d-s", pid);
  CU_ASSERT_EQUAL_FATAL(sh(IP " netns add %s", ns_svc), 0);
  CU_ASSERT_EQUAL_FATAL(sh(IP " -n %s link set lo up && " IP " -n %s link add br0 type bridge && " IP
                              " -n %s addr add %s.1/24 dev br0 && " IP " -n %s link set br0 up",
                           ns_svc, ns_svc, ns_svc, net, ns_svc),
                        0);
  for (int i = 0; i < N_AGENTS; i++) {
    snprintf(ns_agent[i], sizeof(ns_agent[i]), "mse2e-%d-a%d", pid, i);
    agent_ns[i] = ns_agent[i];
    const char *a = ns_agent[i];
    CU_ASSERT_EQUAL_FATAL(sh(IP " netns add %s", a), 0);
    CU_ASSERT_EQUAL_FATAL(sh(IP " -n %s link add v%d type veth peer name eth0 netns %s && " IP
                                " -n %s link set v%d master br0 up && " IP
                                " -n %s addr add %s.%d/24 dev eth0 && " IP " -n %s link set eth0 up && " IP
                                " -n %s link set lo up",
                             ns_svc, i, a, ns_svc, i, a, net, 10 + i, a, a),
                          0);
  }
  _cleanup_free_ char *path = ms_xasprintf("/run/netns/%s", ns_svc);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  CU_ASSERT_FATAL(fd >= 0);
  CU_ASSERT_EQUAL_FATAL(setns(fd, CLONE_NEWNET), 0);
  close(fd);
}

static void test_stack_up(void) {
  make_network();
  _cleanup_free_ char *listen = ms_xasprintf("%s.1:0", net);
  _cleanup_free_ char *tag = ms_xasprintf("%d", (int)getpid());
  ms_e2e_options o = {.dir = dir,
                      .tag = tag,
                      .n_agents = N_AGENTS,
                      .agent_resources = AGENT_RESOURCES,
                      .alloc_listen = listen,
                      .agent_netns = agent_ns,
                      .log_level = "info"};
  ms_error *err = NULL;
  stack_up = true;
  int rc = ms_e2e_start(&stack, &o, &err);
  for (int i = 0; i < N_AGENTS; i++)
    cgroup_parent[i] = ms_e2e_cgroup_parent(&stack, i);
  if (rc < 0)
    fprintf(stderr, "e2e: %s\n", err->msg);
  ms_error_free(err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
}

static void test_batch(void) {
  CU_ASSERT_FATAL(stack_up && stack.mapi);
  _cleanup_free_ char *log = ms_xasprintf("%s/meseta-batch.log", dir);
  ms_error *err = NULL;
  /* The framework stays registered (disconnected) at the end, so that its completed
   * tasks are still in the operator's view when it is read; test_operator_state tears
   * it down. */
  const char *extra[] = {"--no-teardown", "--failover-timeout", "10m", NULL};
  int rc = ms_e2e_run_batch(&stack, n_tasks, 0.1, 32, extra, log, BATCH_TIMEOUT_MS, &result, &err);
  if (rc < 0)
    fprintf(stderr, "e2e: %s\n", err->msg);
  ms_error_free(err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  printf("\n  meseta-batch: exit %d, launched %" PRId64 ", finished %" PRId64 ", failed %" PRId64
         ", errors %" PRId64 " in %.1f s (%.1f tasks/s)\n",
         result.exit_code, result.launched, result.finished, result.failed, result.errors, result.seconds,
         result.rate);
  CU_ASSERT_EQUAL(result.exit_code, 0);
  CU_ASSERT_EQUAL(result.launched, n_tasks);
  CU_ASSERT_EQUAL(result.finished, n_tasks);
  CU_ASSERT_EQUAL(result.failed, 0);
  CU_ASSERT_EQUAL(result.errors, 0);
  CU_ASSERT(result.framework_id[0] != '\0');
  if (result.exit_code != 0)
    fprintf(stderr, "e2e: see %s\n", log);
}

/* What the operator's view says of the framework's tasks. */
typedef struct view {
  int64_t tasks, finished, other, dup;
  int64_t per_agent[N_AGENTS], unknown_agent;
  int64_t state_finished; /* GetState's count */
} view;

static int agent_index(const char *id) {
  for (int i = 0; i < N_AGENTS; i++)
    if (strcmp(id, ms_e2e_agent_id(&stack, i)) == 0)
      return i;
  return -1;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool read_view(view *v) {
  *v = (view){0};
  ms_rpc_channel *ch = ms_rpc_channel_new(ms_e2e_mapi(&stack), NULL, NULL);
  if (!ch)
    return false;
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = result.framework_id;
  char **ids = ms_xcalloc((size_t)n_tasks * 2 + 1, sizeof(char *));
  size_t n_ids = 0;
  _cleanup_free_ char *token = ms_xstrdup("");
  bool ok = true;
  do {
    Meseta__V1__GetTasksRequest req = MESETA__V1__GET_TASKS_REQUEST__INIT;
    req.framework_id = &fid;
    req.include_completed = true;
    req.page_size = 500;
    req.page_token = token;
    ProtobufCMessage *out = NULL;
    ms_rpc_call_options co = {.timeout_ms = 10000};
    if (ms_rpc_unary(ch, "/meseta.v1.Operator/GetTasks", &req.base,
                     &meseta__v1__get_tasks_response__descriptor, &co, &out, NULL) < 0) {
      ok = false;
      break;
    }
    Meseta__V1__GetTasksResponse *r = (void *)out;
    for (size_t i = 0; i < r->n_tasks; i++) {
      Meseta__V1__Task *t = r->tasks[i];
      v->tasks++;
      if (t->state == MESETA__V1__TASK_STATE__TASK_FINISHED)
        v->finished++;
      else
        v->other++;
      int a = agent_index(t->agent_id ? t->agent_id->value : "");
      if (a < 0)
        v->unknown_agent++;
      else
        v->per_agent[a]++;
      if (n_ids < (size_t)n_tasks * 2)
        ids[n_ids++] = ms_xstrdup(t->task_id ? t->task_id->value : "");
    }
    free(token);
    token = ms_xstrdup(r->next_page_token);
    protobuf_c_message_free_unpacked(out, NULL);
  } while (*token);
  qsort(ids, n_ids, sizeof(char *), cmp_str);
  for (size_t i = 1; i < n_ids; i++)
    v->dup += strcmp(ids[i], ids[i - 1]) == 0;
  for (size_t i = 0; i < n_ids; i++)
    free(ids[i]);
  free(ids);

  Meseta__V1__GetStateRequest sreq = MESETA__V1__GET_STATE_REQUEST__INIT;
  ProtobufCMessage *out = NULL;
  ms_rpc_call_options co = {.timeout_ms = 10000};
  if (ok && ms_rpc_unary(ch, "/meseta.v1.Operator/GetState", &sreq.base,
                         &meseta__v1__get_state_response__descriptor, &co, &out, NULL) == 0) {
    Meseta__V1__GetStateResponse *r = (void *)out;
    for (size_t i = 0; r->state && i < r->state->n_tasks; i++) {
      Meseta__V1__Task *t = r->state->tasks[i];
      if (t->framework_id && strcmp(t->framework_id->value, result.framework_id) == 0 &&
          t->state == MESETA__V1__TASK_STATE__TASK_FINISHED)
        v->state_finished++;
    }
    protobuf_c_message_free_unpacked(out, NULL);
  } else {
    ok = false;
  }
  ms_rpc_channel_free(ch);
  return ok;
}

/* The view keeps at most the allocator's --max-completed-tasks-per-framework (1000 by
 * default) completed tasks of a framework, the latest. */
#define RETAINED 1000
static int64_t expect_in_view(void) {
  return result.finished < RETAINED ? result.finished : RETAINED;
}

static bool view_complete(void *ctx) {
  view *v = ctx;
  return read_view(v) && v->finished == expect_in_view() && v->state_finished == expect_in_view();
}

static int teardown_framework(ms_error **err) {
  ms_rpc_channel *ch = ms_rpc_channel_new(ms_e2e_mapi(&stack), NULL, err);
  if (!ch)
    return MS_ERR;
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = result.framework_id;
  Meseta__V1__TeardownFrameworkRequest req = MESETA__V1__TEARDOWN_FRAMEWORK_REQUEST__INIT;
  req.framework_id = &fid;
  ProtobufCMessage *out = NULL;
  ms_rpc_call_options co = {.timeout_ms = 30000};
  int rc = ms_rpc_unary(ch, "/meseta.v1.Operator/Teardown", &req.base,
                        &meseta__v1__teardown_framework_response__descriptor, &co, &out, err);
  if (out)
    protobuf_c_message_free_unpacked(out, NULL);
  ms_rpc_channel_free(ch);
  return rc;
}

static void test_operator_state(void) {
  CU_ASSERT_FATAL(result.framework_id[0] != '\0');
  view v;
  bool complete = ms_sim_wait(view_complete, &v, VIEW_WAIT_MS);
  printf("\n  operator view: %" PRId64 " tasks (%" PRId64 " FINISHED, %" PRId64 " other, %" PRId64
         " duplicate ids), GetState %" PRId64 " FINISHED; per agent",
         v.tasks, v.finished, v.other, v.dup, v.state_finished);
  for (int i = 0; i < N_AGENTS; i++)
    printf(" %" PRId64, v.per_agent[i]);
  printf("\n");
  CU_ASSERT(complete);
  CU_ASSERT_EQUAL(v.tasks, expect_in_view());
  CU_ASSERT_EQUAL(v.finished, expect_in_view());
  CU_ASSERT_EQUAL(v.other, 0);
  CU_ASSERT_EQUAL(v.dup, 0);
  CU_ASSERT_EQUAL(v.unknown_agent, 0);
  CU_ASSERT_EQUAL(v.state_finished, expect_in_view());
  /* More tasks than all agents hold at once: every agent must have had some (with
   * fewer, packing may rightly put them all on one). */
  if (n_tasks > N_AGENTS * AGENT_SLOTS)
    for (int i = 0; i < N_AGENTS; i++)
      CU_ASSERT(v.per_agent[i] > 0);
  ms_error *err = NULL;
  MS_ASSERT_OK(teardown_framework(&err), &err);
}

/* ---- trust_5: meseta-batch survives the loss of its master-api replica ---- */

#define FAILOVER_TASKS 30 /* all fit at once (60 slots): every one is running when A dies */

typedef struct killer {
  const char *watch; /* B: where to see tasks running */
  pid_t victim;      /* A */
  bool killed;
  bool done; /* the batch exited (atomic) */
} killer;

static int64_t running_tasks(const char *addr) {
  Meseta__V1__TaskState running = MESETA__V1__TASK_STATE__TASK_RUNNING;
  Meseta__V1__GetTasksRequest req = MESETA__V1__GET_TASKS_REQUEST__INIT;
  req.n_states = 1;
  req.states = &running;
  ProtobufCMessage *out = NULL;
  if (ms_test_call(addr, NULL, NULL, "/meseta.v1.Operator/GetTasks", &req.base,
                   &meseta__v1__get_tasks_response__descriptor, 5000, &out, NULL) != MS_OK)
    return 0;
  int64_t n = (int64_t)((Meseta__V1__GetTasksResponse *)out)->n_tasks;
  protobuf_c_message_free_unpacked(out, NULL);
  return n;
}

/* Kills A (SIGKILL) once B sees a third of the tasks running: the batch then has tasks
 * running, launched through A, and its stream to A breaks. */
static void *killer_main(void *arg) {
  killer *k = arg;
  int64_t end = ms_time_mono_ms() + BATCH_TIMEOUT_MS;
  while (ms_time_mono_ms() < end && !__atomic_load_n(&k->done, __ATOMIC_SEQ_CST) &&
         running_tasks(k->watch) < FAILOVER_TASKS / 3)
    ms_time_sleep_ms(100);
  if (__atomic_load_n(&k->done, __ATOMIC_SEQ_CST))
    return NULL;
  printf("\n  killing master-api A (pid %d) with %" PRId64 " tasks running\n", (int)k->victim,
         running_tasks(k->watch));
  k->killed = kill(k->victim, SIGKILL) == 0;
  return NULL;
}

static void test_trust_5_batch_survives_master_api_loss(void) {
  CU_ASSERT_FATAL(stack_up && stack.mapi);
  /* Replica B beside the stack's master-api (A), on the same allocator. */
  _cleanup_free_ char *mapi = ms_test_binary("services/master-api/meseta-master-api");
  const char *argv[] = {
      mapi,     "--listen",   "127.0.0.1:0",   "--allocator", ms_test_proc_address(stack.allocator),
      "--name", "e2e-mapi-b", "--max-backoff", "200ms",       NULL};
  ms_error *err = NULL;
  ms_test_proc *b = ms_test_proc_start("master-api-b", dir, argv, &err);
  MS_ASSERT_OK(b ? 0 : MS_ERR, &err);
  CU_ASSERT_FATAL(b != NULL);
  const char *b_addr = ms_test_proc_address(b);
  CU_ASSERT_FATAL(ms_sim_wait(serving_addr, (void *)b_addr, VIEW_WAIT_MS));

  killer k = {.watch = b_addr, .victim = ms_test_proc_pid(stack.mapi)};
  pthread_t th;
  CU_ASSERT_FATAL(pthread_create(&th, NULL, killer_main, &k) == 0);
  _cleanup_free_ char *log = ms_xasprintf("%s/meseta-batch-failover.log", dir);
  /* --master A (given by ms_e2e_run_batch) then B; the default failover timeout. */
  const char *extra[] = {"--master", b_addr, "--cmd", "sleep 3", "--no-teardown", "--name", "failover", NULL};
  ms_e2e_batch r;
  int rc = ms_e2e_run_batch(&stack, FAILOVER_TASKS, 0.1, 32, extra, log, BATCH_TIMEOUT_MS, &r, &err);
  __atomic_store_n(&k.done, true, __ATOMIC_SEQ_CST);
  pthread_join(th, NULL);
  /* A is dead: B takes its place in the stack (the last case stops it). */
  ms_test_proc_stop(stack.mapi, SIGKILL);
  ms_test_proc_free(stack.mapi);
  stack.mapi = b;
  if (rc < 0)
    fprintf(stderr, "e2e: %s\n", err->msg);
  ms_error_free(err);
  CU_ASSERT_FATAL(rc == 0);
  printf("  meseta-batch: exit %d, launched %" PRId64 ", finished %" PRId64 ", failed %" PRId64
         ", errors %" PRId64 " in %.1f s; log %s\n",
         r.exit_code, r.launched, r.finished, r.failed, r.errors, r.seconds, log);
  CU_ASSERT(k.killed);
  CU_ASSERT_EQUAL(r.exit_code, 0);
  CU_ASSERT_EQUAL(r.launched, FAILOVER_TASKS); /* none launched twice */
  CU_ASSERT_EQUAL(r.finished, FAILOVER_TASKS);
  CU_ASSERT_EQUAL(r.failed, 0);
  CU_ASSERT_EQUAL(r.errors, 0);
  _cleanup_free_ char *out = slurp_file(log);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "failover: the stream through"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "resubscribed: framework_id="));

  /* The operator's view through B: each task once, FINISHED. */
  result = r;
  n_tasks = FAILOVER_TASKS;
  view v;
  bool complete = ms_sim_wait(view_complete, &v, VIEW_WAIT_MS);
  printf("  operator view: %" PRId64 " tasks (%" PRId64 " FINISHED, %" PRId64 " other, %" PRId64
         " duplicate ids)\n",
         v.tasks, v.finished, v.other, v.dup);
  CU_ASSERT(complete);
  CU_ASSERT_EQUAL(v.tasks, FAILOVER_TASKS);
  CU_ASSERT_EQUAL(v.finished, FAILOVER_TASKS);
  CU_ASSERT_EQUAL(v.dup, 0);
  MS_ASSERT_OK(teardown_framework(&err), &err);
}

/* The pid of the process whose command line holds `needle`, or 0. */
static pid_t pid_with(const char *needle) {
  _cleanup_(closedirp) DIR *d = opendir("/proc");
  struct dirent *e;
  while (d && (e = readdir(d))) {
    char *end;
    long pid = strtol(e->d_name, &end, 10);
    if (*end || pid <= 0 || pid == (long)getpid())
      continue;
    _cleanup_free_ char *p = ms_xasprintf("/proc/%ld/cmdline", pid);
    /* NULs separate the words. */
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    char buf[4096];
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
    if (fd >= 0)
      close(fd);
    for (ssize_t i = 0; i < n; i++)
      if (!buf[i])
        buf[i] = ' ';
    if (n > 0 && (buf[n] = '\0', strstr(buf, needle)))
      return (pid_t)pid;
  }
  return 0;
}

typedef struct stopper {
  const char *watch, *needle;
  int64_t want_running;
  bool stopped;
  bool done; /* the batch exited by itself (atomic) */
} stopper;

/* SIGTERM to the batch once `want_running` tasks run: it leaves without teardown
 * (--no-teardown), its tasks keep running (the failover timeout). */
static void *stopper_main(void *arg) {
  stopper *st = arg;
  int64_t end = ms_time_mono_ms() + BATCH_TIMEOUT_MS;
  while (ms_time_mono_ms() < end && !__atomic_load_n(&st->done, __ATOMIC_SEQ_CST) &&
         running_tasks(st->watch) < st->want_running)
    ms_time_sleep_ms(100);
  if (__atomic_load_n(&st->done, __ATOMIC_SEQ_CST))
    return NULL;
  pid_t pid = pid_with(st->needle);
  printf("\n  stopping the first meseta-batch (pid %d) with %" PRId64 " tasks running\n", (int)pid,
         running_tasks(st->watch));
  st->stopped = pid > 0 && kill(pid, SIGTERM) == 0;
  return NULL;
}

/* Point 5, the option: a second run resumes the framework of a first one that left with
 * its tasks running (--framework-id): it reconciles and adopts them, launches none
 * again, and sees each finish once. */
static void test_trust_5_batch_resumes_framework_id(void) {
  CU_ASSERT_FATAL(stack_up && stack.mapi);
  const char *mapi = ms_e2e_mapi(&stack);
  stopper st = {.watch = mapi, .needle = "--name resume-e2e", .want_running = FAILOVER_TASKS};
  pthread_t th;
  CU_ASSERT_FATAL(pthread_create(&th, NULL, stopper_main, &st) == 0);
  _cleanup_free_ char *log1 = ms_xasprintf("%s/meseta-batch-resume-1.log", dir);
  const char *extra1[] = {"--cmd", "sleep 10", "--no-teardown", "--name", "resume-e2e", NULL};
  ms_e2e_batch r1, r2;
  ms_error *err = NULL;
  int rc = ms_e2e_run_batch(&stack, FAILOVER_TASKS, 0.1, 32, extra1, log1, BATCH_TIMEOUT_MS, &r1, &err);
  __atomic_store_n(&st.done, true, __ATOMIC_SEQ_CST);
  pthread_join(th, NULL);
  MS_ASSERT_OK(rc, &err);
  CU_ASSERT(st.stopped);
  CU_ASSERT_NOT_EQUAL(r1.exit_code, 0); /* stopped before its tasks ended */
  CU_ASSERT_EQUAL(r1.launched, FAILOVER_TASKS);
  CU_ASSERT_FATAL(r1.framework_id[0] != '\0');

  _cleanup_free_ char *log2 = ms_xasprintf("%s/meseta-batch-resume-2.log", dir);
  const char *extra2[] = {"--cmd",      "sleep 10",       "--no-teardown", "--name",
                          "resume-e2e", "--framework-id", r1.framework_id, NULL};
  rc = ms_e2e_run_batch(&stack, FAILOVER_TASKS, 0.1, 32, extra2, log2, BATCH_TIMEOUT_MS, &r2, &err);
  MS_ASSERT_OK(rc, &err);
  printf("  resumed: exit %d, launched %" PRId64 ", finished %" PRId64 ", errors %" PRId64 "; log %s\n",
         r2.exit_code, r2.launched, r2.finished, r2.errors, log2);
  CU_ASSERT_EQUAL(r2.exit_code, 0);
  CU_ASSERT_STRING_EQUAL(r2.framework_id, r1.framework_id);
  CU_ASSERT_EQUAL(r2.launched, 0); /* every task was adopted, none ran twice */
  CU_ASSERT_EQUAL(r2.finished, FAILOVER_TASKS);
  CU_ASSERT_EQUAL(r2.errors, 0);

  result = r2;
  n_tasks = FAILOVER_TASKS;
  view v;
  bool complete = ms_sim_wait(view_complete, &v, VIEW_WAIT_MS);
  printf("  operator view: %" PRId64 " tasks (%" PRId64 " FINISHED, %" PRId64 " duplicate ids)\n", v.tasks,
         v.finished, v.dup);
  CU_ASSERT(complete);
  CU_ASSERT_EQUAL(v.tasks, FAILOVER_TASKS);
  CU_ASSERT_EQUAL(v.dup, 0);
  MS_ASSERT_OK(teardown_framework(&err), &err);
}

/* Whether a cgroup of ours holds a container (c-*) in any hierarchy. */
static int containers_left(void) {
  int n = 0;
  _cleanup_(closedirp) DIR *root = opendir("/sys/fs/cgroup");
  struct dirent *h;
  while (root && (h = readdir(root)))
    for (int i = 0; h->d_name[0] != '.' && i < N_AGENTS; i++) {
      _cleanup_free_ char *parent = ms_xasprintf("/sys/fs/cgroup/%s/%s", h->d_name, cgroup_parent[i]);
      _cleanup_(closedirp) DIR *d = opendir(parent);
      struct dirent *c;
      while (d && (c = readdir(d)))
        if (strncmp(c->d_name, "c-", 2) == 0) {
          fprintf(stderr, "e2e: container cgroup left: %s/%s\n", parent, c->d_name);
          n++;
        }
    }
  return n;
}

static void test_nothing_left(void) {
  CU_ASSERT_FATAL(stack_up);
  pid_t pids[N_AGENTS + 3];
  int np = 0;
  for (int i = 0; i < N_AGENTS; i++)
    pids[np++] = ms_test_proc_pid(stack.agents[i]);
  pids[np++] = ms_test_proc_pid(stack.mapi);
  pids[np++] = ms_test_proc_pid(stack.allocator);
  pids[np++] = ms_test_proc_pid(stack.registry);
  CU_ASSERT(ms_e2e_stop(&stack)); /* every service exits 0 on SIGTERM */
  stack_up = false;
  for (int i = 0; i < np; i++)
    CU_ASSERT(kill(pids[i], 0) < 0 && errno == ESRCH);
  CU_ASSERT_EQUAL(containers_left(), 0);
  /* No process is left in any of the namespaces, then they go, with their links. */
  _cleanup_free_ char *pids_out = ms_xasprintf("%s/netns-pids", dir);
  for (int i = 0; i < N_AGENTS; i++) {
    CU_ASSERT_EQUAL(sh(IP " netns pids %s > '%s'", ns_agent[i], pids_out), 0);
    struct stat st;
    CU_ASSERT(stat(pids_out, &st) == 0 && st.st_size == 0);
  }
  remove_all();
  for (int i = 0; i < N_AGENTS; i++)
    CU_ASSERT(!ns_exists(ns_agent[i]));
  CU_ASSERT(!ns_exists(ns_svc));
  for (int i = 0; i < N_AGENTS; i++) {
    _cleanup_free_ char *p = ms_xasprintf("/sys/fs/cgroup/pids/%s", cgroup_parent[i]);
    CU_ASSERT(access(p, F_OK) != 0);
  }
}

static const ms_test_case cases[] = {
    {"stack_up", test_stack_up},
    {"batch", test_batch},
    {"operator_state", test_operator_state},
    {"trust_5_batch_survives_master_api_loss", test_trust_5_batch_survives_master_api_loss},
    {"trust_5_batch_resumes_framework_id", test_trust_5_batch_resumes_framework_id},
    {"nothing_left", test_nothing_left},
    {NULL, NULL},
};

int main(int argc, char **argv) {
  if (geteuid() != 0)
    ms_test_skip("needs root (network namespaces, containers)");
  if (access(IP, X_OK) != 0)
    ms_test_skip("`%s` not found (iproute2)", IP);
  if (access("/usr/bin/nsenter", X_OK) != 0)
    ms_test_skip("nsenter not found (util-linux)");
  const char *n = getenv("MESETA_E2E_TASKS");
  if (n && *n)
    n_tasks = strtoll(n, NULL, 10);
  if (n_tasks < 1)
    n_tasks = 1000;
  dir = ms_test_tmpdir("test-e2e");
  remove_stale();
  atexit(remove_all); /* first registered, so it runs after tests/lib's handlers */
  int rc = ms_test_main(argc, argv, "e2e", cases);
  if (stack_up) /* a case failed half-way: stop what runs */
    ms_e2e_stop(&stack);
  stack_up = false;
  remove_all();
  if (rc == 0)
    ms_test_rmtree(dir);
  else
    fprintf(stderr, "test-e2e: logs kept in %s\n", dir);
  free(dir);
  dir = NULL;
  for (int i = 0; i < N_AGENTS; i++) {
    free(cgroup_parent[i]);
    cgroup_parent[i] = NULL;
  }
  return rc;
}
