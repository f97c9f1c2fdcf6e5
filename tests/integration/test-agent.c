/* meseta-agent as a process (root: real containers through meseta-runtime) against a real
 * meseta-allocator (no etcd), driven by a simulated framework (tests/lib/sim.h): echo
 * finishes with its output in the sandbox, exit codes fail, a missing binary fails with the
 * runtime's message, a kill kills, nothing of a container stays behind, and a restarted
 * agent comes back with its id. Waits are bounded hang guards. */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/resources-io.h"
#include "meseta/time.h"

#include "proc.h"
#include "sim.h"
#include "testlib.h"

#define WAIT_MS 30000

static char *dir, *work;
static ms_test_proc *alloc_proc, *agent_proc;
static ms_sim_framework *fw;
static char *agent_id_first;

static ms_test_proc *start(const char *name, const char *const *argv) {
  ms_error *err = NULL;
  ms_test_proc *p = ms_test_proc_start(name, dir, argv, &err);
  if (!p)
    fprintf(stderr, "%s: %s\n", name, err->msg);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  return p;
}

static ms_test_proc *start_agent(const char *name) {
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
                        "cpus:2;mem:1024;disk:1000;ports:[31000-32000]",
                        "--attributes",
                        "rack:r1;level:3",
                        "--runtime",
                        rt,
                        "--seccomp-dir",
                        profiles,
                        "--no-switch-user",
                        "--status-update-retry",
                        "1s",
                        "--shutdown-grace",
                        "10s",
                        "--log-level",
                        "debug",
                        NULL};
  return start(name, argv);
}

/* The allocator, one agent and a HOLD framework, once for every case. */
static void up(void) {
  if (fw)
    return;
  _cleanup_free_ char *abin = ms_test_binary("services/allocator/meseta-allocator");
  const char *aargv[] = {abin,    "--listen",    "127.0.0.1:0", "--allocation-interval",
                         "100ms", "--log-level", "debug",       NULL};
  alloc_proc = start("allocator", aargv);
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

/* Accepts the next offer with one command task of cpus:0.1;mem:64. */
static void launch(const char *task_id, const char *command, bool shell) {
  take_ctx tc = {NULL};
  CU_ASSERT_FATAL(ms_sim_wait(took_offer, &tc, WAIT_MS));
  Meseta__V1__Offer *offer = tc.offer;
  CU_ASSERT_STRING_EQUAL(offer->agent_id->value, agent_id_first);
  ms_resources *r = NULL;
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_resources_parse_text("cpus:0.1;mem:64", NULL, &r, &err), &err);
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
  Meseta__V1__TaskInfo *tis[] = {&t};
  Meseta__V1__Offer__Operation__Launch l = MESETA__V1__OFFER__OPERATION__LAUNCH__INIT;
  l.n_task_infos = 1;
  l.task_infos = tis;
  Meseta__V1__Offer__Operation op = MESETA__V1__OFFER__OPERATION__INIT;
  op.operation_case = MESETA__V1__OFFER__OPERATION__OPERATION_LAUNCH;
  op.launch = &l;
  MS_ASSERT_OK(ms_sim_framework_accept(fw, offer, &op, 0, &err), &err); /* remainder offered again at once */
  ms_resources_proto_free(rp);
  protobuf_c_message_free_unpacked(&offer->base, NULL);
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

/* How many processes still mention the work dir (runtimes: their spec path is under it). */
static int processes_in_work(void) {
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
    if (strstr(buf, "/containers/c-") && strstr(buf, work) && !strstr(buf, "meseta-agent"))
      n++;
  }
  if (d)
    closedir(d);
  return n;
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

static void test_kill_sleep(void) {
  up();
  launch("sleeper", "sleep 60", true);
  free_status(wait_state("sleeper", MESETA__V1__TASK_STATE__TASK_RUNNING));
  CU_ASSERT(processes_in_work() >= 1); /* the runtime (and its init, a clone of it) */
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = (char *)ms_sim_framework_id(fw);
  Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
  tid.value = "sleeper";
  Meseta__V1__KillRequest k = MESETA__V1__KILL_REQUEST__INIT;
  k.framework_id = &fid;
  k.stream_id = (char *)ms_sim_framework_stream_id(fw);
  k.task_id = &tid;
  Meseta__V1__SchedulerCallRequest c = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  c.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_KILL;
  c.kill = &k;
  ms_error *err = NULL;
  int64_t t0 = ms_time_mono_ms();
  MS_ASSERT_OK(ms_sim_framework_call(fw, &c, &err), &err);
  Meseta__V1__TaskStatus *st = wait_state("sleeper", MESETA__V1__TASK_STATE__TASK_KILLED);
  CU_ASSERT(ms_time_mono_ms() - t0 < 2500); /* sleep got SIGTERM, no wait for the grace */
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
      {"nothing_left_and_restart_keeps_id", test_nothing_left_and_restart_keeps_id},
      {NULL, NULL},
  };
  int rc = ms_test_main(argc, argv, "agent", cases);
  ms_sim_framework_free(fw);
  if (agent_proc) {
    if (ms_test_proc_stop(agent_proc, SIGTERM) != 0)
      rc = 1;
    ms_test_proc_free(agent_proc);
  }
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
