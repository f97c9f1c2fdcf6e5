/* meseta-agent as a process (root: real containers through meseta-runtime) against a real
 * meseta-allocator (no etcd), driven by a simulated framework (tests/lib/sim.h): echo
 * finishes with its output in the sandbox, exit codes fail, a missing binary fails with the
 * runtime's message, a kill kills, nothing of a container stays behind, and a restarted
 * agent comes back with its id. Waits are bounded hang guards. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/resources-io.h"
#include "meseta/time.h"
#include "meseta/v1/agent_operator.pb-c.h"

#include "cluster.h"
#include "etcd-harness.h"
#include "proc.h"
#include "sim.h"
#include "testlib.h"

#define WAIT_MS 30000

extern char **environ;

static char *dir, *work;
static ms_test_proc *alloc_proc, *agent_proc;
static ms_sim_framework *fw;
static char *agent_id_first;

#define RESOURCES "cpus:2;mem:1024;disk:1000;ports:[31000-32000]"
#define ATTRIBUTES "rack:r1;level:3"

/* An agent on the shared work dir; NULL with *err if it exits before registering. */
static ms_test_proc *try_agent(const char *name, const char *resources, const char *attributes,
                               const char *policy, ms_error **err) {
  _cleanup_free_ char *bin = ms_test_binary("services/agent/meseta-agent");
  _cleanup_free_ char *rt = ms_test_binary("services/agent/runtime/meseta-runtime");
  const char *src = getenv("MESETA_SOURCE_DIR");
  _cleanup_free_ char *profiles = ms_xasprintf("%s/services/agent/runtime/profiles", src ? src : ".");
  const char *argv[] = {bin,
                        "--allocator",
                        ms_test_proc_address(alloc_proc),
                        "--work-dir",
                        work,
                        "--resources",
                        resources,
                        "--attributes",
                        attributes,
                        "--reconfiguration-policy",
                        policy,
                        "--isolation",
                        "linux/seccomp,cgroups/pids,network/none",
                        "--container-pids-limit",
                        "77",
                        "--runtime",
                        rt,
                        "--seccomp-dir",
                        profiles,
                        "--no-switch-user",
                        "--listen",
                        "", /* no AgentOperator server: port 5051 may be taken */
                        "--status-update-retry",
                        "1s",
                        "--max-kill-grace-period",
                        "10m",
                        "--shutdown-grace",
                        "10s",
                        "--log-level",
                        "debug",
                        NULL};
  return ms_test_proc_start(name, dir, argv, err);
}

static ms_test_proc *start_agent(const char *name) {
  ms_error *err = NULL;
  ms_test_proc *p = try_agent(name, RESOURCES, ATTRIBUTES, "equal", &err);
  if (!p)
    fprintf(stderr, "%s: %s\n", name, err->msg);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  return p;
}

/* The allocator, one agent and a HOLD framework, once for every case. */
static void up(void) {
  if (fw)
    return;
  alloc_proc = ms_test_allocator_start(dir, "allocator", NULL);
  agent_proc = start_agent("agent");
  agent_id_first = ms_xstrdup(ms_test_proc_address(agent_proc)); /* the ready file holds the id */
  ms_error *err = NULL;
  ms_sim_framework_options fo = {.name = "agent-test", .mode = MS_SIM_HOLD};
  fw = ms_sim_framework_start(ms_test_proc_address(alloc_proc), &fo, &err);
  if (!fw)
    fprintf(stderr, "framework: %s\n", err->msg);
  CU_ASSERT_PTR_NOT_NULL_FATAL(fw);
}

typedef struct take_ctx {
  Meseta__V1__Offer *offer;
} take_ctx;

static bool took_offer(void *ctx) {
  take_ctx *t = ctx;
  return (t->offer = ms_sim_framework_take_offer(fw)) != NULL;
}

/* Accepts the next offer with one command task of `resources`, under the seccomp profile
 * `profile` (NULL: the agent's default); the accept's result. */
static int launch_with(const char *task_id, const char *command, bool shell, const char *resources,
                       const char *profile, int64_t grace_s, ms_error **ret_err) {
  take_ctx tc = {NULL};
  CU_ASSERT_FATAL(ms_sim_wait(took_offer, &tc, WAIT_MS));
  Meseta__V1__Offer *offer = tc.offer;
  CU_ASSERT_STRING_EQUAL(offer->agent_id->value, agent_id_first);
  ms_resources *r = NULL;
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_resources_parse_text(resources, NULL, &r, &err), &err);
  const char *role = offer->allocation_info ? offer->allocation_info->role : NULL;
  ms_resources_allocate(r, role && *role ? role : NULL, NULL);
  Meseta__V1__Resources *rp = ms_resources_to_proto(r);
  ms_resources_free(r);

  Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
  tid.value = (char *)task_id;
  Google__Protobuf__BoolValue sh = GOOGLE__PROTOBUF__BOOL_VALUE__INIT;
  sh.value = shell;
  char *args[] = {(char *)command};
  Meseta__V1__CommandInfo cmd = MESETA__V1__COMMAND_INFO__INIT;
  cmd.value = (char *)command;
  cmd.shell = &sh;
  if (!shell) {
    cmd.n_arguments = 1;
    cmd.arguments = args;
  }
  Meseta__V1__TaskInfo t = MESETA__V1__TASK_INFO__INIT;
  t.name = (char *)task_id;
  t.task_id = &tid;
  t.agent_id = offer->agent_id;
  t.n_resources = rp->n_resources;
  t.resources = rp->resources;
  t.command = &cmd;
  Meseta__V1__SeccompInfo sc = MESETA__V1__SECCOMP_INFO__INIT;
  Meseta__V1__LinuxInfo li = MESETA__V1__LINUX_INFO__INIT;
  Meseta__V1__ContainerInfo ci = MESETA__V1__CONTAINER_INFO__INIT;
  if (profile) {
    sc.profile_case = MESETA__V1__SECCOMP_INFO__PROFILE_PROFILE_NAME;
    sc.profile_name = (char *)profile;
    li.seccomp = &sc;
    ci.linux_info = &li;
    t.container = &ci;
  }
  Google__Protobuf__Duration gd = GOOGLE__PROTOBUF__DURATION__INIT;
  Meseta__V1__KillPolicy kp = MESETA__V1__KILL_POLICY__INIT;
  if (grace_s > 0) { /* the task's own grace */
    gd.seconds = grace_s;
    kp.grace_period = &gd;
    t.kill_policy = &kp;
  }
  Meseta__V1__TaskInfo *tis[] = {&t};
  Meseta__V1__Offer__Operation__Launch l = MESETA__V1__OFFER__OPERATION__LAUNCH__INIT;
  l.n_task_infos = 1;
  l.task_infos = tis;
  Meseta__V1__Offer__Operation op = MESETA__V1__OFFER__OPERATION__INIT;
  op.operation_case = MESETA__V1__OFFER__OPERATION__OPERATION_LAUNCH;
  op.launch = &l;
  int rc = ms_sim_framework_accept(fw, offer, &op, 0, ret_err); /* remainder offered again at once */
  if (rc < 0) /* a refused accept leaves the offer with us: give it back, as a framework would */
    MS_ASSERT_OK(ms_sim_framework_decline(fw, offer->id->value, 0, &err), &err);
  ms_resources_proto_free(rp);
  protobuf_c_message_free_unpacked(&offer->base, NULL);
  return rc;
}

/* Accepts the next offer with one command task of cpus:0.1;mem:64. */
static void launch(const char *task_id, const char *command, bool shell) {
  ms_error *err = NULL;
  MS_ASSERT_OK(launch_with(task_id, command, shell, "cpus:0.1;mem:64", NULL, 0, &err), &err);
}

typedef struct state_ctx {
  const char *task_id;
  Meseta__V1__TaskState state;
  Meseta__V1__TaskStatus *st;
} state_ctx;

static bool reached(void *ctx) {
  state_ctx *s = ctx;
  if (s->st)
    protobuf_c_message_free_unpacked(&s->st->base, NULL);
  s->st = ms_sim_framework_task_status(fw, s->task_id);
  return s->st && s->st->state == s->state;
}

/* Waits for the task's latest status to be `state`; the status is the caller's. */
static Meseta__V1__TaskStatus *wait_state(const char *task_id, Meseta__V1__TaskState state) {
  state_ctx s = {task_id, state, NULL};
  bool ok = ms_sim_wait(reached, &s, WAIT_MS);
  if (!ok)
    fprintf(stderr, "task %s: state %d (message `%s`), expected %d\n", task_id, s.st ? (int)s.st->state : -1,
            s.st && s.st->message ? s.st->message : "", (int)state);
  CU_ASSERT_FATAL(ok);
  return s.st;
}

static char *sandbox_file(const char *task_id, const char *name) {
  return ms_xasprintf("%s/sandboxes/%s/%s/%s", work, ms_sim_framework_id(fw), task_id, name);
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "re");
  if (!f)
    return ms_xstrdup("");
  char *buf = ms_xcalloc(1, 65537);
  size_t n = fread(buf, 1, 65536, f);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

static void free_status(Meseta__V1__TaskStatus *st) {
  protobuf_c_message_free_unpacked(&st->base, NULL);
}

/* How many processes still mention the work dir (runtimes: their spec path is under it);
 * sig > 0: each is sent sig too. */
static int signal_processes_in_work(int sig) {
  DIR *d = opendir("/proc");
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d))) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9')
      continue;
    _cleanup_free_ char *p = ms_xasprintf("/proc/%s/cmdline", e->d_name);
    FILE *f = fopen(p, "re");
    if (!f)
      continue;
    char buf[8192];
    size_t len = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    for (size_t i = 0; i < len; i++)
      if (!buf[i])
        buf[i] = ' ';
    buf[len] = '\0';
    if (strstr(buf, "/containers/c-") && strstr(buf, work) && !strstr(buf, "meseta-agent")) {
      n++;
      if (sig > 0)
        kill((pid_t)strtol(e->d_name, NULL, 10), sig);
    }
  }
  if (d)
    closedir(d);
  return n;
}

static int processes_in_work(void) {
  return signal_processes_in_work(0);
}

/* Containers' cgroups left under meseta/ in any v1 hierarchy or on v2. */
static int cgroups_left(void) {
  const char *roots[] = {"/sys/fs/cgroup/cpu/meseta", "/sys/fs/cgroup/cpuacct/meseta",
                         "/sys/fs/cgroup/memory/meseta", "/sys/fs/cgroup/pids/meseta",
                         "/sys/fs/cgroup/meseta"};
  int n = 0;
  for (size_t i = 0; i < MS_ARRAY_SIZE(roots); i++) {
    DIR *d = opendir(roots[i]);
    struct dirent *e;
    while (d && (e = readdir(d)))
      n += strncmp(e->d_name, "c-", 2) == 0;
    if (d)
      closedir(d);
  }
  return n;
}

/* Mounts anywhere under the test's work dir, as the host sees them. */
static int mounts_in_work(void) {
  _cleanup_free_ char *text = slurp("/proc/self/mountinfo");
  int n = 0;
  for (char *p = text; (p = strstr(p, work)); p++)
    n++;
  return n;
}

static bool no_processes(void *ctx) {
  (void)ctx;
  return processes_in_work() == 0;
}

static bool nothing_left(void *ctx) {
  return processes_in_work() == 0 && cgroups_left() == 0;
}

/* ---- cases ---- */

static void test_echo_finishes(void) {
  up();
  launch("echo", "echo hello", true);
  Meseta__V1__TaskStatus *st = wait_state("echo", MESETA__V1__TASK_STATE__TASK_FINISHED);
  CU_ASSERT_PTR_NOT_NULL(st->exit_status);
  if (st->exit_status) {
    CU_ASSERT_EQUAL(st->exit_status->how_case, MESETA__V1__EXIT_STATUS__HOW_CODE);
    CU_ASSERT_EQUAL(st->exit_status->code, 0);
  }
  CU_ASSERT_STRING_EQUAL(st->agent_id->value, agent_id_first);
  CU_ASSERT_EQUAL(st->uuid.len, 16);
  free_status(st);
  _cleanup_free_ char *path = sandbox_file("echo", "stdout");
  _cleanup_free_ char *out = slurp(path);
  CU_ASSERT_STRING_EQUAL(out, "hello\n");
}

static void test_exit_code_fails(void) {
  up();
  launch("exit3", "exit 3", true);
  Meseta__V1__TaskStatus *st = wait_state("exit3", MESETA__V1__TASK_STATE__TASK_FAILED);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st->exit_status);
  CU_ASSERT_EQUAL(st->exit_status->how_case, MESETA__V1__EXIT_STATUS__HOW_CODE);
  CU_ASSERT_EQUAL(st->exit_status->code, 3);
  CU_ASSERT_PTR_NOT_NULL(strstr(st->message, "status 3"));
  free_status(st);
}

static void test_missing_binary_fails_clearly(void) {
  up();
  launch("missing", "/nonexistent/meseta-no-such-binary", false);
  Meseta__V1__TaskStatus *st = wait_state("missing", MESETA__V1__TASK_STATE__TASK_FAILED);
  fprintf(stderr, "missing binary: %s\n", st->message);
  CU_ASSERT_PTR_NOT_NULL(strstr(st->message, "/nonexistent/meseta-no-such-binary"));
  CU_ASSERT_PTR_NOT_NULL(strstr(st->message, "No such file"));
  CU_ASSERT_EQUAL(st->reason, MESETA__V1__TASK_STATUS__REASON__REASON_CONTAINER_LAUNCH_FAILED);
  free_status(st);
}

/* Kills through the scheduler API; grace_ms >= 0 overrides the task's KillPolicy. */
static void kill_task_grace(const char *task_id, int64_t grace_ms) {
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = (char *)ms_sim_framework_id(fw);
  Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
  tid.value = (char *)task_id;
  Meseta__V1__KillRequest k = MESETA__V1__KILL_REQUEST__INIT;
  k.framework_id = &fid;
  k.stream_id = (char *)ms_sim_framework_stream_id(fw);
  k.task_id = &tid;
  Google__Protobuf__Duration gd = GOOGLE__PROTOBUF__DURATION__INIT;
  Meseta__V1__KillPolicy kp = MESETA__V1__KILL_POLICY__INIT;
  if (grace_ms >= 0) {
    gd.seconds = grace_ms / 1000;
    gd.nanos = (int32_t)(grace_ms % 1000) * 1000000;
    kp.grace_period = &gd;
    k.kill_policy = &kp;
  }
  Meseta__V1__SchedulerCallRequest c = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  c.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_KILL;
  c.kill = &k;
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_sim_framework_call(fw, &c, &err), &err);
}

static void kill_task(const char *task_id) {
  kill_task_grace(task_id, -1);
}

/* A kill's KillPolicy overrides the task's: a task that ignores SIGTERM, with a grace of
 * ten minutes of its own, killed with a grace of 0 is SIGKILLed at once (the wait below is
 * a hang guard far below the task's grace). */
static void test_kill_policy_override(void) {
  up();
  ms_error *err = NULL;
  MS_ASSERT_OK(launch_with("stubborn", "trap '' TERM; while true; do sleep 0.2; done", true,
                           "cpus:0.1;mem:64", NULL, 600, &err),
               &err);
  free_status(wait_state("stubborn", MESETA__V1__TASK_STATE__TASK_RUNNING));
  kill_task_grace("stubborn", 0);
  Meseta__V1__TaskStatus *st = wait_state("stubborn", MESETA__V1__TASK_STATE__TASK_KILLED);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st->exit_status);
  CU_ASSERT_EQUAL(st->exit_status->signal, SIGKILL);
  free_status(st);
}

static void test_kill_sleep(void) {
  up();
  launch("sleeper", "sleep 60", true);
  free_status(wait_state("sleeper", MESETA__V1__TASK_STATE__TASK_RUNNING));
  CU_ASSERT(processes_in_work() >= 1); /* the runtime (and its init, a clone of it) */
  kill_task("sleeper");
  Meseta__V1__TaskStatus *st = wait_state("sleeper", MESETA__V1__TASK_STATE__TASK_KILLED);
  /* Ended by the SIGTERM itself, not by a SIGKILL after the grace. */
  CU_ASSERT_PTR_NOT_NULL_FATAL(st->exit_status);
  CU_ASSERT_EQUAL(st->exit_status->how_case, MESETA__V1__EXIT_STATUS__HOW_SIGNAL);
  CU_ASSERT_EQUAL(st->exit_status->signal, SIGTERM);
  free_status(st);
}

static void test_nothing_left_and_restart_keeps_id(void) {
  up();
  CU_ASSERT(ms_sim_wait(nothing_left, NULL, WAIT_MS));
  CU_ASSERT_EQUAL(processes_in_work(), 0);
  CU_ASSERT_EQUAL(cgroups_left(), 0);
  CU_ASSERT_EQUAL(ms_test_proc_stop(agent_proc, SIGTERM), 0); /* a clean, leak-free exit */
  ms_test_proc_free(agent_proc);
  agent_proc = start_agent("agent-restarted");
  CU_ASSERT_STRING_EQUAL(ms_test_proc_address(agent_proc), agent_id_first);
  launch("after-restart", "true", true); /* offers name the same agent id */
  free_status(wait_state("after-restart", MESETA__V1__TASK_STATE__TASK_FINISHED));
  CU_ASSERT(ms_sim_wait(nothing_left, NULL, WAIT_MS));
}

/* The ids a call about a command task's executor names: the framework, the executor
 * (the task's id) and the agent. Borrowed strings. */
typedef struct executor_ids {
  Meseta__V1__FrameworkID fid;
  Meseta__V1__ExecutorID eid;
  Meseta__V1__AgentID aid;
} executor_ids;

static void executor_ids_of(executor_ids *x, const char *task_id) {
  meseta__v1__framework_id__init(&x->fid);
  x->fid.value = (char *)ms_sim_framework_id(fw);
  meseta__v1__executor_id__init(&x->eid);
  x->eid.value = (char *)task_id;
  meseta__v1__agent_id__init(&x->aid);
  x->aid.value = agent_id_first;
}

/* Shutdown of a command task's executor (its id is the task id) kills the task. */
static void test_shutdown_executor(void) {
  up();
  launch("shut-me", "sleep 600", true);
  free_status(wait_state("shut-me", MESETA__V1__TASK_STATE__TASK_RUNNING));
  executor_ids x;
  executor_ids_of(&x, "shut-me");
  Meseta__V1__ShutdownRequest r = MESETA__V1__SHUTDOWN_REQUEST__INIT;
  r.framework_id = &x.fid;
  r.stream_id = (char *)ms_sim_framework_stream_id(fw);
  r.executor_id = &x.eid;
  r.agent_id = &x.aid;
  Meseta__V1__SchedulerCallRequest c = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  c.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_SHUTDOWN;
  c.shutdown = &r;
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_sim_framework_call(fw, &c, &err), &err);
  free_status(wait_state("shut-me", MESETA__V1__TASK_STATE__TASK_KILLED));
}

/* A framework message for a command task's executor: the real agent has nowhere to put it,
 * so the allocator refuses the call, naming the field, instead of sending it to be dropped. */
static void test_trust_6_framework_message_refused(void) {
  up();
  launch("no-mailbox", "sleep 600", true);
  free_status(wait_state("no-mailbox", MESETA__V1__TASK_STATE__TASK_RUNNING));
  executor_ids x;
  executor_ids_of(&x, "no-mailbox");
  Meseta__V1__MessageRequest r = MESETA__V1__MESSAGE_REQUEST__INIT;
  r.framework_id = &x.fid;
  r.stream_id = (char *)ms_sim_framework_stream_id(fw);
  r.executor_id = &x.eid;
  r.agent_id = &x.aid;
  r.data.data = (uint8_t *)"hello";
  r.data.len = 5;
  Meseta__V1__SchedulerCallRequest c = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  c.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_MESSAGE;
  c.message = &r;
  ms_error *err = NULL;
  int rc = ms_sim_framework_call(fw, &c, &err);
  CU_ASSERT_EQUAL(rc, MS_ERR);
  if (rc < 0) {
    fprintf(stderr, "message refused: %s\n", err->msg);
    CU_ASSERT_EQUAL(err->code, MS_FAILED_PRECONDITION);
    CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "`message.executor_id`"));
    ms_error_free(err);
  }
  kill_task("no-mailbox");
  free_status(wait_state("no-mailbox", MESETA__V1__TASK_STATE__TASK_KILLED));
}

/* The optional isolators the fixture's agent has: network/none (only loopback inside) and
 * cgroups/pids (the limit reaches the runtime's spec); --isolation refuses unknown names. */
static void test_isolators(void) {
  up();
  launch("only-lo", "test \"$(grep -c : /proc/net/dev)\" = 1", true); /* header lines have no ':' */
  free_status(wait_state("only-lo", MESETA__V1__TASK_STATE__TASK_FINISHED));
  _cleanup_free_ char *cdir = ms_xasprintf("%s/containers", work);
  DIR *d = opendir(cdir);
  struct dirent *e;
  int with_limit = 0;
  while (d && (e = readdir(d))) {
    _cleanup_free_ char *p = ms_xasprintf("%s/%s/spec.json", cdir, e->d_name);
    _cleanup_free_ char *spec = slurp(p);
    with_limit += strstr(spec, "\"pids_limit\": 77") != NULL;
  }
  if (d)
    closedir(d);
  CU_ASSERT(with_limit > 0);
  ms_error *err = NULL;
  _cleanup_free_ char *bin = ms_test_binary("services/agent/meseta-agent");
  _cleanup_free_ char *w2 = ms_xasprintf("%s/work-bad-isolation", dir);
  const char *argv[] = {bin, "--allocator", ms_test_proc_address(alloc_proc), "--work-dir", w2, "--listen",
                        "",  "--isolation", "linux/seccomp,gpu/magic",        NULL};
  ms_test_proc *p = ms_test_proc_start("agent-bad-isolation", dir, argv, &err);
  CU_ASSERT_PTR_NULL(p);
  if (!p) {
    CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "unknown isolator `gpu/magic`"));
    ms_error_free(err);
  }
  ms_test_proc_free(p);
}

/* ---- restarts ---- */

/* A command that waits for the file `go` in its sandbox, then exits with `code`: the test
 * decides when a task ends, with no timing involved. */
static char *wait_for_go(int code) {
  return ms_xasprintf("while [ ! -e /mnt/sandbox/go ]; do sleep 0.05; done; exit %d", code);
}

static void go(const char *task_id) {
  _cleanup_free_ char *path = sandbox_file(task_id, "go");
  FILE *f = fopen(path, "we");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fclose(f);
}

/* Containers whose runtime wrote its status file (they ended). */
static int status_files(void) {
  _cleanup_free_ char *cdir = ms_xasprintf("%s/containers", work);
  DIR *d = opendir(cdir);
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d))) {
    _cleanup_free_ char *p = ms_xasprintf("%s/%s/status.json", cdir, e->d_name);
    n += access(p, F_OK) == 0;
  }
  if (d)
    closedir(d);
  return n;
}

typedef struct count_ctx {
  int want;
} count_ctx;

static bool status_files_reached(void *ctx) {
  return status_files() >= ((count_ctx *)ctx)->want;
}

static void expect_exit(const char *task_id, Meseta__V1__TaskState state, int code) {
  Meseta__V1__TaskStatus *st = wait_state(task_id, state);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st->exit_status);
  CU_ASSERT_EQUAL(st->exit_status->how_case, MESETA__V1__EXIT_STATUS__HOW_CODE);
  CU_ASSERT_EQUAL(st->exit_status->code, code);
  CU_ASSERT_STRING_EQUAL(st->agent_id->value, agent_id_first);
  free_status(st);
}

/* The restart test: kill -9 the agent with tasks running; two of them end while it
 * is down; the restarted agent reports those with their exit codes, and the two still
 * running are re-attached: one ends later and one is killed, and both updates arrive. */
static void test_kill9_restart_reattaches(void) {
  up();
  _cleanup_free_ char *ok = wait_for_go(0), *seven = wait_for_go(7);
  launch("keeps-running", ok, true);
  launch("ends-while-down", ok, true);
  launch("fails-while-down", seven, true);
  launch("killed-after", "sleep 600", true);
  const char *ids[] = {"keeps-running", "ends-while-down", "fails-while-down", "killed-after"};
  for (size_t i = 0; i < MS_ARRAY_SIZE(ids); i++)
    free_status(wait_state(ids[i], MESETA__V1__TASK_STATE__TASK_RUNNING));
  int ended_before = status_files();

  CU_ASSERT_EQUAL(ms_test_proc_stop(agent_proc, SIGKILL), 128 + SIGKILL);
  ms_test_proc_free(agent_proc);
  agent_proc = NULL;
  CU_ASSERT(processes_in_work() >= 4); /* every runtime outlived the agent */
  go("ends-while-down");
  go("fails-while-down");
  count_ctx cc = {ended_before + 2};
  CU_ASSERT_FATAL(ms_sim_wait(status_files_reached, &cc, WAIT_MS)); /* both ended, agent still down */

  agent_proc = start_agent("agent-after-kill9");
  CU_ASSERT_STRING_EQUAL(ms_test_proc_address(agent_proc), agent_id_first);
  expect_exit("ends-while-down", MESETA__V1__TASK_STATE__TASK_FINISHED, 0);
  expect_exit("fails-while-down", MESETA__V1__TASK_STATE__TASK_FAILED, 7);

  /* Still running, and watched: their later updates reach the framework. */
  Meseta__V1__TaskStatus *st = ms_sim_framework_task_status(fw, "keeps-running");
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  CU_ASSERT_EQUAL(st->state, MESETA__V1__TASK_STATE__TASK_RUNNING);
  free_status(st);
  go("keeps-running");
  expect_exit("keeps-running", MESETA__V1__TASK_STATE__TASK_FINISHED, 0);
  kill_task("killed-after");
  st = wait_state("killed-after", MESETA__V1__TASK_STATE__TASK_KILLED);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st->exit_status);
  CU_ASSERT_EQUAL(st->exit_status->signal, SIGTERM);
  free_status(st);
  CU_ASSERT(ms_sim_wait(nothing_left, NULL, WAIT_MS));
}

/* Removes the checkpoint that names task_id; how many were removed. */
static int remove_checkpoint_of(const char *task_id) {
  _cleanup_free_ char *tdir = ms_xasprintf("%s/meta/tasks", work);
  DIR *d = opendir(tdir);
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d))) {
    /* Only the checkpoint itself: a kill in the middle of a rewrite leaves a `.pb.tmp`
     * with the same task, which the agent ignores. */
    size_t nl = strlen(e->d_name);
    if (nl < 4 || strcmp(e->d_name + nl - 3, ".pb") != 0)
      continue;
    _cleanup_free_ char *p = ms_xasprintf("%s/%s", tdir, e->d_name);
    FILE *f = fopen(p, "re");
    if (!f)
      continue;
    char buf[65536];
    size_t len = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    if (memmem(buf, len, task_id, strlen(task_id)) && unlink(p) == 0)
      n++;
  }
  if (d)
    closedir(d);
  return n;
}

/* A task whose checkpoint is lost while the agent is down: the restarted agent stops its
 * container (nothing would ever report it), and the allocator, not hearing of it in
 * REREGISTER, tells the framework it is lost. */
static void test_lost_checkpoint(void) {
  up();
  launch("orphan", "sleep 600", true);
  free_status(wait_state("orphan", MESETA__V1__TASK_STATE__TASK_RUNNING));
  CU_ASSERT_EQUAL(ms_test_proc_stop(agent_proc, SIGKILL), 128 + SIGKILL);
  ms_test_proc_free(agent_proc);
  CU_ASSERT_EQUAL(remove_checkpoint_of("orphan"), 1);
  /* What a kill in the middle of a checkpoint write leaves: the restart removes it. */
  _cleanup_free_ char *stale = ms_xasprintf("%s/meta/tasks/c-00000000000000ff.pb.tmp", work);
  FILE *sf = fopen(stale, "we");
  CU_ASSERT_PTR_NOT_NULL_FATAL(sf);
  fputs("half a checkpoint", sf);
  fclose(sf);
  agent_proc = start_agent("agent-lost-checkpoint");
  Meseta__V1__TaskStatus *st = wait_state("orphan", MESETA__V1__TASK_STATE__TASK_LOST);
  CU_ASSERT_EQUAL(st->reason, MESETA__V1__TASK_STATUS__REASON__REASON_AGENT_REREGISTERED);
  free_status(st);
  CU_ASSERT(ms_sim_wait(nothing_left, NULL, WAIT_MS));
  CU_ASSERT(access(stale, F_OK) < 0 && errno == ENOENT);
}

/* The agent is killed, then its task's runtime too, before the runtime could write a
 * status (as when the agent dies mid-launch): the restarted agent cannot tell whether the
 * task ran, so it reports TASK_LOST with REASON_AGENT_RESTARTED (GONE to a
 * PARTITION_AWARE framework), which a framework launches again, not TASK_FAILED, which
 * says the task itself failed. */
static void test_runtime_gone_without_status_is_lost(void) {
  up();
  launch("no-status", "sleep 600", true);
  free_status(wait_state("no-status", MESETA__V1__TASK_STATE__TASK_RUNNING));
  int statuses = status_files();
  CU_ASSERT_EQUAL(ms_test_proc_stop(agent_proc, SIGKILL), 128 + SIGKILL);
  ms_test_proc_free(agent_proc);
  CU_ASSERT(signal_processes_in_work(SIGKILL) >= 1);
  CU_ASSERT(ms_sim_wait(no_processes, NULL, WAIT_MS));
  CU_ASSERT_EQUAL(status_files(), statuses); /* none written: it was killed */
  agent_proc = start_agent("agent-no-status");
  Meseta__V1__TaskStatus *st = wait_state("no-status", MESETA__V1__TASK_STATE__TASK_LOST);
  CU_ASSERT_EQUAL(st->reason, MESETA__V1__TASK_STATUS__REASON__REASON_AGENT_RESTARTED);
  CU_ASSERT_PTR_NOT_NULL(strstr(st->message ? st->message : "", "without a status"));
  free_status(st);
}

/* cpus in the next offer. */
static double offered_cpus(void) {
  take_ctx tc = {NULL};
  CU_ASSERT_FATAL(ms_sim_wait(took_offer, &tc, WAIT_MS));
  double cpus = 0;
  for (size_t i = 0; i < tc.offer->n_resources; i++)
    if (strcmp(tc.offer->resources[i]->name, "cpus") == 0 && tc.offer->resources[i]->scalar)
      cpus += tc.offer->resources[i]->scalar->value;
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_sim_framework_decline(fw, tc.offer->id->value, 0, &err), &err);
  protobuf_c_message_free_unpacked(&tc.offer->base, NULL);
  return cpus;
}

/* A refused restart: the agent exits with a message naming what changed. */
static void expect_refused(const char *name, const char *resources, const char *attributes,
                           const char *policy, const char *what) {
  ms_error *err = NULL;
  ms_test_proc *p = try_agent(name, resources, attributes, policy, &err);
  CU_ASSERT_PTR_NULL(p);
  if (p) {
    ms_test_proc_free(p);
    return;
  }
  fprintf(stderr, "%s refused: %s\n", name, err->msg);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, what));
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "--reconfiguration-policy"));
  ms_error_free(err);
}

/* SIGTERM leaves containers running; a restart under `equal` refuses changed resources or
 * attributes; under `additive` more resources and a new attribute keep the id and the
 * running task, and the allocator offers the added cpus. */
static void test_reconfiguration_policy(void) {
  up();
  launch("survives-restart", "sleep 600", true);
  free_status(wait_state("survives-restart", MESETA__V1__TASK_STATE__TASK_RUNNING));
  CU_ASSERT_EQUAL(ms_test_proc_stop(agent_proc, SIGTERM), 0);
  ms_test_proc_free(agent_proc);
  agent_proc = NULL;
  CU_ASSERT(processes_in_work() >= 1); /* SIGTERM stops the agent, not its containers */

  const char *more = "cpus:3;mem:1024;disk:1000;ports:[31000-32000]";
  const char *less = "cpus:1;mem:1024;disk:1000;ports:[31000-32000]";
  expect_refused("agent-equal-more", more, ATTRIBUTES, "equal", "resources changed");
  expect_refused("agent-equal-attr", RESOURCES, ATTRIBUTES ";zone:z1", "equal", "added: zone:z1");
  expect_refused("agent-additive-less", less, ATTRIBUTES, "additive", "resources changed");
  expect_refused("agent-additive-attr", RESOURCES, "rack:r2;level:3", "additive", "rack:r1");

  ms_error *err = NULL;
  agent_proc = try_agent("agent-additive", more, ATTRIBUTES ";zone:z1", "additive", &err);
  if (!agent_proc)
    fprintf(stderr, "additive restart: %s\n", err->msg);
  CU_ASSERT_PTR_NOT_NULL_FATAL(agent_proc);
  CU_ASSERT_STRING_EQUAL(ms_test_proc_address(agent_proc), agent_id_first);
  Meseta__V1__TaskStatus *st = ms_sim_framework_task_status(fw, "survives-restart");
  CU_ASSERT_EQUAL(st->state, MESETA__V1__TASK_STATE__TASK_RUNNING);
  free_status(st);
  /* 3 cpus now, 0.1 of them used by the task: more than the 2 the agent had. */
  double cpus = 0;
  for (int i = 0; i < 50 && cpus <= 2; i++)
    cpus = offered_cpus();
  CU_ASSERT(cpus > 2.5);
  kill_task("survives-restart");
  free_status(wait_state("survives-restart", MESETA__V1__TASK_STATE__TASK_KILLED));
  CU_ASSERT(ms_sim_wait(nothing_left, NULL, WAIT_MS));
  /* Back to the flags the other cases use (additive allows keeping the grown set only):
   * a fresh identity keeps the fixture simple. */
  CU_ASSERT_EQUAL(ms_test_proc_stop(agent_proc, SIGTERM), 0);
  ms_test_proc_free(agent_proc);
  agent_proc = try_agent("agent-additive-again", more, ATTRIBUTES ";zone:z1", "additive", &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(agent_proc);
  CU_ASSERT_STRING_EQUAL(ms_test_proc_address(agent_proc), agent_id_first);
}

/* An agent that never reached an allocator still stops at SIGTERM (its link thread
 * must not sit in a connect the shutdown cannot interrupt). */
static void test_stops_without_allocator(void) {
  _cleanup_free_ char *bin = ms_test_binary("services/agent/meseta-agent");
  _cleanup_free_ char *w = ms_xasprintf("%s/work-lonely", dir),
                      *log = ms_xasprintf("%s/agent-lonely.log", dir);
  char *argv[] = {bin, "--allocator", "127.0.0.1:1",           "--work-dir", w, "--listen",
                  "",  "--resources", "cpus:1;mem:64;disk:64", NULL};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = 0;
  CU_ASSERT_EQUAL_FATAL(posix_spawn(&pid, bin, &fa, NULL, argv, environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  /* Started once its log says where it connects; then stop it. */
  for (int i = 0; i < 600; i++) {
    _cleanup_free_ char *text = slurp(log);
    if (strstr(text, "allocator `127.0.0.1:1`"))
      break;
    ms_time_sleep_ms(50);
  }
  CU_ASSERT_EQUAL(kill(pid, SIGTERM), 0);
  int ws = 0;
  pid_t r = 0;
  for (int i = 0; i < 600 && (r = waitpid(pid, &ws, WNOHANG)) == 0; i++) /* hang guard: 30 s */
    ms_time_sleep_ms(50);
  if (r == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &ws, 0);
  }
  CU_ASSERT_EQUAL(r, pid);
  CU_ASSERT(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
}

/* ---- TLS ---- */

/* The link to an allocator that requires client certificates: the agent registers with
 * its own certificate, and reports the fault domain it was given. */
static void test_mutual_tls_link(void) {
  _cleanup_free_ char *certs = ms_xasprintf("%s/certs", dir), *w2 = ms_xasprintf("%s/work-tls", dir);
  ms_error *err = NULL;
  CU_ASSERT_EQUAL_FATAL(mkdir(certs, 0700), 0);
  MS_ASSERT_OK(ms_test_etcd_make_certs(certs, &err), &err);
  _cleanup_free_ char *ca = ms_xasprintf("%s/ca.pem", certs), *scert = ms_xasprintf("%s/server.pem", certs),
                      *skey = ms_xasprintf("%s/server.key", certs),
                      *ccert = ms_xasprintf("%s/client.pem", certs),
                      *ckey = ms_xasprintf("%s/client.key", certs);
  const char *tls[] = {"--tls-cert", scert, "--tls-key", skey, "--tls-ca", ca, NULL};
  ms_test_proc *al = ms_test_allocator_start(dir, "allocator-tls", tls);
  _cleanup_free_ char *bin = ms_test_binary("services/agent/meseta-agent");
  _cleanup_free_ char *rt = ms_test_binary("services/agent/runtime/meseta-runtime");
  const char *argv[] = {bin,
                        "--allocator",
                        ms_test_proc_address(al),
                        "--work-dir",
                        w2,
                        "--resources",
                        RESOURCES,
                        "--runtime",
                        rt,
                        "--listen",
                        "127.0.0.1:0",
                        "--operator-tls-cert",
                        scert,
                        "--operator-tls-key",
                        skey,
                        "--operator-tls-ca",
                        ca,
                        "--region",
                        "r1",
                        "--zone",
                        "z1",
                        "--tls-ca",
                        ca,
                        "--tls-cert",
                        ccert,
                        "--tls-key",
                        ckey,
                        NULL};
  ms_test_proc *ag = ms_test_proc_start("agent-tls", dir, argv, &err); /* ready: REGISTERED came */
  if (!ag)
    fprintf(stderr, "agent over mTLS: %s\n", err->msg);
  CU_ASSERT_PTR_NOT_NULL(ag);
  if (ag) {
    CU_ASSERT(strlen(ms_test_proc_address(ag)) > 0); /* its agent id */
    /* AgentOperator over mutual TLS: a client with a certificate of the CA gets answers
     * (NOT_FOUND: no such sandbox), one without, or in plaintext, gets nothing. */
    _cleanup_free_ char *log = slurp(ms_test_proc_log(ag));
    const char *at = strstr(log, "serving AgentOperator on ");
    CU_ASSERT_PTR_NOT_NULL_FATAL(at);
    _cleanup_free_ char *addr = ms_xstrndup(at + 25, strcspn(at + 25, " \n"));
    Meseta__V1__FrameworkID f = MESETA__V1__FRAMEWORK_ID__INIT;
    Meseta__V1__TaskID t = MESETA__V1__TASK_ID__INIT;
    f.value = "fw";
    t.value = "none";
    Meseta__V1__ListFilesRequest req = MESETA__V1__LIST_FILES_REQUEST__INIT;
    req.framework_id = &f;
    req.task_id = &t;
    ms_rpc_tls with = {.ca_file = ca, .cert_file = ccert, .key_file = ckey}, without = {.ca_file = ca};
    ms_rpc_channel_options cw = {.tls = &with}, cn = {.tls = &without};
    CU_ASSERT_EQUAL(ms_test_call(addr, &cw, NULL, "/meseta.v1.AgentOperator/ListFiles", &req.base,
                                 &meseta__v1__list_files_response__descriptor, 10000, NULL, NULL),
                    MS_NOT_FOUND);
    CU_ASSERT_NOT_EQUAL(ms_test_call(addr, &cn, NULL, "/meseta.v1.AgentOperator/ListFiles", &req.base,
                                     &meseta__v1__list_files_response__descriptor, 3000, NULL, NULL),
                        MS_NOT_FOUND);
    CU_ASSERT_NOT_EQUAL(ms_test_call(addr, NULL, NULL, "/meseta.v1.AgentOperator/ListFiles", &req.base,
                                     &meseta__v1__list_files_response__descriptor, 3000, NULL, NULL),
                        MS_NOT_FOUND);
    CU_ASSERT_EQUAL(ms_test_proc_stop(ag, SIGTERM), 0);
  }
  ms_test_proc_free(ag);
  CU_ASSERT_EQUAL(ms_test_proc_stop(al, SIGTERM), 0);
  ms_test_proc_free(al);
}

/* ---- bad input ---- */

/* More than the agent has: refused with a status naming the resources; nothing runs. */
static void test_resources_the_agent_lacks(void) {
  up();
  ms_error *err = NULL;
  CU_ASSERT(launch_with("too-big", "true", true, "cpus:64;mem:64", NULL, 0, &err) < 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  fprintf(stderr, "too big: %s\n", err->msg);
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "cpus"));
  ms_error_free(err);
  CU_ASSERT_PTR_NULL(ms_sim_framework_task_status(fw, "too-big"));
  CU_ASSERT(ms_sim_wait(nothing_left, NULL, WAIT_MS));
}

/* An unknown seccomp profile, and a profile name that is a path: the task fails or errs
 * with a message naming the profile, and leaves no process, cgroup or mount. */
static void test_unknown_seccomp_profile(void) {
  up();
  launch_with("no-such-profile", "true", true, "cpus:0.1;mem:64", "meseta-no-such-profile", 0, NULL);
  Meseta__V1__TaskStatus *st = wait_state("no-such-profile", MESETA__V1__TASK_STATE__TASK_FAILED);
  fprintf(stderr, "unknown profile: %s\n", st->message);
  CU_ASSERT_PTR_NOT_NULL(strstr(st->message, "meseta-no-such-profile"));
  CU_ASSERT_EQUAL(st->reason, MESETA__V1__TASK_STATUS__REASON__REASON_CONTAINER_LAUNCH_FAILED);
  free_status(st);
  launch_with("profile-path", "true", true, "cpus:0.1;mem:64", "../../etc/passwd", 0, NULL);
  st = wait_state("profile-path", MESETA__V1__TASK_STATE__TASK_ERROR);
  fprintf(stderr, "profile path: %s\n", st->message);
  CU_ASSERT_PTR_NOT_NULL(strstr(st->message, "seccomp.profile_name"));
  free_status(st);
  CU_ASSERT(ms_sim_wait(nothing_left, NULL, WAIT_MS));
  CU_ASSERT_EQUAL(mounts_in_work(), 0);
}

/* After a failed case: containers the agent left running (SIGTERM keeps them) are killed
 * through their cgroups, then their runtimes, so nothing outlives the test. */
static void kill_leftovers(void) {
  static const char *const roots[] = {"/sys/fs/cgroup/pids/meseta", "/sys/fs/cgroup/memory/meseta",
                                      "/sys/fs/cgroup/meseta"};
  int n = 0;
  for (size_t i = 0; i < MS_ARRAY_SIZE(roots); i++) {
    DIR *d = opendir(roots[i]);
    struct dirent *e;
    while (d && (e = readdir(d))) {
      if (strncmp(e->d_name, "c-", 2) != 0)
        continue;
      _cleanup_free_ char *spec = ms_xasprintf("%s/containers/%s/spec.json", work, e->d_name);
      if (access(spec, F_OK) != 0)
        continue; /* another test's */
      _cleanup_free_ char *procs = ms_xasprintf("%s/%s/cgroup.procs", roots[i], e->d_name);
      FILE *f = fopen(procs, "re");
      int pid;
      while (f && fscanf(f, "%d", &pid) == 1)
        n += kill(pid, SIGKILL) == 0;
      if (f)
        fclose(f);
    }
    if (d)
      closedir(d);
  }
  if (n)
    fprintf(stderr, "test-agent: killed %d processes of containers left by failed cases\n", n);
}

int main(int argc, char **argv) {
  if (geteuid() != 0)
    ms_test_skip("meseta-agent runs containers through meseta-runtime, which needs root");
  dir = ms_test_tmpdir("test-agent");
  work = ms_xasprintf("%s/work", dir);
  static const ms_test_case cases[] = {
      {"echo_finishes", test_echo_finishes},
      {"exit_code_fails", test_exit_code_fails},
      {"missing_binary_fails_clearly", test_missing_binary_fails_clearly},
      {"kill_sleep", test_kill_sleep},
      {"kill_policy_override", test_kill_policy_override},
      {"isolators", test_isolators},
      {"shutdown_executor", test_shutdown_executor},
      {"trust_6_framework_message_refused", test_trust_6_framework_message_refused},
      {"runtime_gone_without_status_is_lost", test_runtime_gone_without_status_is_lost},
      {"nothing_left_and_restart_keeps_id", test_nothing_left_and_restart_keeps_id},
      {"kill9_restart_reattaches", test_kill9_restart_reattaches},
      {"lost_checkpoint", test_lost_checkpoint},
      {"resources_the_agent_lacks", test_resources_the_agent_lacks},
      {"mutual_tls_link", test_mutual_tls_link},
      {"stops_without_allocator", test_stops_without_allocator},
      {"unknown_seccomp_profile", test_unknown_seccomp_profile},
      {"reconfiguration_policy", test_reconfiguration_policy},
      {NULL, NULL},
  };
  int rc = ms_test_main(argc, argv, "agent", cases);
  ms_sim_framework_free(fw);
  if (agent_proc) {
    if (ms_test_proc_stop(agent_proc, SIGTERM) != 0)
      rc = 1;
    ms_test_proc_free(agent_proc);
  }
  kill_leftovers(); /* the runtimes then end by themselves and remove their cgroups */
  if (alloc_proc) {
    if (ms_test_proc_stop(alloc_proc, SIGTERM) != 0)
      rc = 1;
    ms_test_proc_free(alloc_proc);
  }
  if (rc == 0 && !getenv("MESETA_KEEP_TEST_DIR"))
    ms_test_rmtree(dir);
  else
    fprintf(stderr, "logs kept in %s\n", dir);
  free(work);
  free(agent_id_first);
  free(dir);
  return rc;
}
