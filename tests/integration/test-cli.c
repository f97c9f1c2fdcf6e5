/* The `meseta` command as a user runs it, against a real cluster: etcd, registry, one
 * allocator, master-api and one meseta-agent running real containers (root). `run` prints
 * a task's output and exits with its code (and 124 past --timeout), `agents -o json`
 * parses and lists the agent, `tasks` shows the finished tasks, `task logs` reads a
 * sandbox, `quota set` then `quota get` shows the quota, and a refused call, an
 * unreachable master and a bad flag each give one line on stderr and their exit code.
 * Waits are bounded hang guards, never timing assertions. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/time.h"

#include "cluster.h"
#include "etcd-harness.h"
#include "proc.h"
#include "sim.h"
#include "testlib.h"

#define WAIT_MS 60000
#define CLI_GUARD_MS 120000
#define CGROUP_PARENT "meseta-test-cli" /* apart from other tests' containers */

extern char **environ;

static ms_test_etcd *etcd;
static char *dir, *work, *mapi_addr, *agent_port, *agent_id;
static ms_test_cluster cluster;
static ms_test_proc *mapi_proc, *agent_proc;
static int runs;

typedef struct result {
  int code; /* exit code; 128 + signal if killed */
  char *out, *err;
} result;

static void result_release(result *r) {
  free(r->out);
  free(r->err);
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "re");
  if (!f)
    return ms_xstrdup("");
  size_t cap = 1 << 16, n = 0;
  char *buf = ms_xmalloc(cap + 1);
  size_t k;
  while ((k = fread(buf + n, 1, cap - n, f)) > 0) {
    n += k;
    if (n == cap)
      buf = ms_xrealloc(buf, (cap *= 2) + 1);
  }
  buf[n] = '\0';
  fclose(f);
  return buf;
}

static int cli_err_fd = -1; /* >= 0: the next cli_start's stderr (else a file) */

/* Starts the built `meseta` with args (NULL-ended), after --master and --agent-port when
 * `where`; stdout and stderr go to files in the test's directory (index *ret_k). */
static pid_t cli_start(const char *const *args, bool where, int *ret_k) {
  _cleanup_free_ char *bin = ms_test_binary("cli/meseta");
  /* The agent advertises its AgentOperator port: --agent-port only once it is known
   * (a test passing its own comes later and wins). */
  const char *argv[32] = {bin, "--master", mapi_addr, "--agent-port", agent_port};
  size_t n = where ? (agent_port ? 5 : 3) : 1, first = n;
  for (size_t i = 0; args[i] && n < MS_ARRAY_SIZE(argv) - 1; i++)
    argv[n++] = args[i];
  argv[n] = NULL;
  int k = *ret_k = runs++;
  _cleanup_free_ char *out = ms_xasprintf("%s/cli-%d.out", dir, k);
  _cleanup_free_ char *err = ms_xasprintf("%s/cli-%d.err", dir, k);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (cli_err_fd >= 0)
    posix_spawn_file_actions_adddup2(&fa, cli_err_fd, 2);
  else
    posix_spawn_file_actions_addopen(&fa, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid;
  int rc = posix_spawn(&pid, bin, &fa, NULL, (char *const *)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  fprintf(stderr, "[%d] meseta", k);
  for (size_t i = first; argv[i]; i++)
    fprintf(stderr, " %s", argv[i]);
  fputc('\n', stderr);
  return pid;
}

static char *cli_file(int k, const char *which) {
  _cleanup_free_ char *p = ms_xasprintf("%s/cli-%d.%s", dir, k, which);
  return slurp(p);
}

static result cli_wait(pid_t pid, int k) {
  int status = 0;
  for (int waited = 0;; waited += 50) {
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid)
      break;
    if (waited > CLI_GUARD_MS) { /* hang guard */
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
  }
  result r = {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), cli_file(k, "out"),
              cli_file(k, "err")};
  fprintf(stderr, "[%d] -> %d\n  stdout: %s\n  stderr: %s\n", k, r.code, r.out, r.err);
  return r;
}

/* Without --master and --agent-port: the environment or config file says. */
static result cli_bare(const char *const *args) {
  int k;
  pid_t pid = cli_start(args, false, &k);
  return cli_wait(pid, k);
}

static result cli(const char *const *args) {
  int k;
  pid_t pid = cli_start(args, true, &k);
  return cli_wait(pid, k);
}

static int lines(const char *s) {
  int n = 0;
  for (; *s; s++)
    n += *s == '\n';
  return n;
}

/* A port nobody listens on right now, for the agent's AgentOperator server. */
static char *free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  CU_ASSERT_FATAL(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
  CU_ASSERT_FATAL(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
  close(fd);
  return ms_xasprintf("%d", ntohs(a.sin_port));
}

static bool agent_listed(void *ctx) {
  (void)ctx;
  const char *args[] = {"agents", "-o", "json", NULL};
  result r = cli(args);
  json_t *doc = r.code == 0 ? json_loads(r.out, 0, NULL) : NULL;
  json_t *a = json_array_get(json_object_get(doc, "agents"), 0);
  const char *id =
      json_string_value(json_object_get(json_object_get(json_object_get(a, "agent_info"), "id"), "value"));
  bool ok = id && strcmp(id, agent_id) == 0 && json_array_size(json_object_get(doc, "agents")) == 1;
  json_int_t port = json_integer_value(json_object_get(json_object_get(a, "agent_info"), "port"));
  if (ok && port > 0 && !agent_port)
    agent_port = ms_xasprintf("%lld", (long long)port); /* as it advertises it */
  ok = ok && agent_port;
  json_decref(doc);
  result_release(&r);
  return ok;
}

static void up(void) {
  if (agent_proc)
    return;
  ms_test_cluster_start(&cluster, etcd, dir, "cli", 1, "5s");
  CU_ASSERT_FATAL(ms_test_cluster_wait_leader(&cluster, WAIT_MS) == 0);
  _cleanup_free_ char *mbin = ms_test_binary("services/master-api/meseta-master-api");
  const char *margv[] = {mbin,    "--listen", "127.0.0.1:0", "--allocator", cluster.addr[0], "--max-backoff",
                         "200ms", NULL};
  mapi_proc = ms_test_start("master-api", dir, margv);
  mapi_addr = ms_xstrdup(ms_test_proc_address(mapi_proc));
  CU_ASSERT_FATAL(ms_sim_wait(ms_test_serving, mapi_addr, WAIT_MS));

  /* Port 0: no race for a free port; the agent advertises the one it got. */
  const char *listen = "127.0.0.1:0";
  _cleanup_free_ char *bin = ms_test_binary("services/agent/meseta-agent");
  _cleanup_free_ char *rt = ms_test_binary("services/agent/runtime/meseta-runtime");
  const char *src = getenv("MESETA_SOURCE_DIR");
  _cleanup_free_ char *profiles = ms_xasprintf("%s/services/agent/runtime/profiles", src ? src : ".");
  const char *aargv[] = {bin,
                         "--allocator",
                         cluster.addr[0],
                         "--work-dir",
                         work,
                         "--resources",
                         "cpus:4;mem:1024;disk:1000",
                         "--hostname",
                         "127.0.0.1",
                         "--listen",
                         listen,
                         "--runtime",
                         rt,
                         "--seccomp-dir",
                         profiles,
                         "--no-switch-user",
                         "--cgroup-parent",
                         CGROUP_PARENT,
                         "--log-level",
                         "debug",
                         NULL};
  agent_proc = ms_test_start("agent", dir, aargv);
  agent_id = ms_xstrdup(ms_test_proc_address(agent_proc)); /* the agent's ready file holds its id */
}

/* The task id from `run`'s stderr ("meseta: task run-...: ..."). */
static char *task_id_of(const result *r) {
  const char *p = strstr(r->err, "task run-");
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  p += 5;
  return ms_xstrndup(p, strcspn(p, ": \n"));
}

/* ---- cases ---- */

static char *echo_task;

static void test_agents_json(void) {
  up();
  CU_ASSERT_FATAL(ms_sim_wait(agent_listed, NULL, WAIT_MS));
  const char *args[] = {"agents", NULL};
  result r = cli(args);
  CU_ASSERT_EQUAL(r.code, 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "HOSTNAME"));
  CU_ASSERT_PTR_NOT_NULL(strstr(r.out, agent_id));
  result_release(&r);
}

static void test_run_echo(void) {
  up();
  const char *args[] = {"run", "--", "echo", "hello", NULL};
  result r = cli(args);
  CU_ASSERT_EQUAL(r.code, 0);
  CU_ASSERT_STRING_EQUAL(r.out, "hello\n");
  CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "TASK_FINISHED"));
  echo_task = task_id_of(&r);
  result_release(&r);
}

/* An agent whose AgentOperator cannot be reached: the exit code still comes, with why
 * the output does not. */
static void test_run_output_unreachable(void) {
  up();
  result r = cli((const char *[]){"--agent-port", "1", "run", "--", "echo", "hi", NULL});
  CU_ASSERT_EQUAL(r.code, 0);
  CU_ASSERT_STRING_EQUAL(r.out, "");
  CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "cannot read the task's output from agent"));
  result_release(&r);
}

static void test_run_exit_code(void) {
  up();
  const char *args[] = {"run", "--quiet", "--", "sh", "-c", "echo to-stderr >&2; exit 3", NULL};
  result r = cli(args);
  CU_ASSERT_EQUAL(r.code, 3);
  CU_ASSERT_STRING_EQUAL(r.out, "");
  CU_ASSERT_STRING_EQUAL(r.err, "to-stderr\n"); /* --quiet: only the task's own stderr */
  result_release(&r);
}

static void test_run_timeout(void) {
  up();
  /* The timeout counts from the launch: it must leave the container time to start and
   * echo even on a loaded machine (2 s did not once, under ASan with the suite on 2 cores). */
  const char *args[] = {"run", "--timeout", "15s", "--shell", "echo started; exec sleep 60", NULL};
  result r = cli(args);
  CU_ASSERT_EQUAL(r.code, 124);
  CU_ASSERT_STRING_EQUAL(r.out, "started\n");
  CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "TASK_KILLED"));
  result_release(&r);
}

typedef struct tasks_wait {
  result r;
} tasks_wait;

static bool tasks_shown(void *ctx) {
  tasks_wait *w = ctx;
  result_release(&w->r);
  const char *args[] = {"tasks", NULL};
  w->r = cli(args);
  return w->r.code == 0 && strstr(w->r.out, echo_task) && strstr(w->r.out, "TASK_FINISHED") &&
         strstr(w->r.out, "TASK_FAILED");
}

static void test_tasks_and_logs(void) {
  up();
  CU_ASSERT_PTR_NOT_NULL_FATAL(echo_task);
  tasks_wait w = {{0}};
  CU_ASSERT(ms_sim_wait(tasks_shown, &w, WAIT_MS));
  CU_ASSERT_PTR_NOT_NULL(strstr(w.r.out, "STATE"));
  result_release(&w.r);

  const char *logs[] = {"task", "logs", echo_task, NULL};
  result r = cli(logs);
  CU_ASSERT_EQUAL(r.code, 0);
  CU_ASSERT_STRING_EQUAL(r.out, "hello\n");
  result_release(&r);

  const char *desc[] = {"task", "describe", echo_task, "-o", "json", NULL};
  r = cli(desc);
  CU_ASSERT_EQUAL(r.code, 0);
  json_t *doc = json_loads(r.out, 0, NULL);
  CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(doc, "state")), "TASK_FINISHED");
  json_decref(doc);
  result_release(&r);
}

static void test_quota(void) {
  up();
  const char *set[] = {"quota", "set", "eng", "--cpus", "2", NULL};
  result r = cli(set);
  CU_ASSERT_EQUAL(r.code, 0);
  result_release(&r);
  /* The read may come from a view a revision behind the write: wait for it. */
  bool seen = false;
  for (int i = 0; i < 100 && !seen; i++) {
    const char *get[] = {"quota", "get", "eng", "-o", "json", NULL};
    r = cli(get);
    json_t *doc = r.code == 0 ? json_loads(r.out, 0, NULL) : NULL;
    json_t *cfg = json_array_get(json_object_get(doc, "configs"), 0);
    json_t *cpus = json_object_get(json_object_get(json_object_get(cfg, "guarantees"), "cpus"), "value");
    seen = json_is_number(cpus) && json_number_value(cpus) == 2.0 &&
           strcmp(json_string_value(json_object_get(cfg, "role")), "eng") == 0;
    json_decref(doc);
    result_release(&r);
    if (!seen) {
      struct timespec ts = {0, 100 * 1000000L};
      nanosleep(&ts, NULL);
    }
  }
  CU_ASSERT(seen);
  const char *table[] = {"quota", NULL};
  r = cli(table);
  CU_ASSERT_EQUAL(r.code, 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "cpus=2"));
  result_release(&r);
}

static void test_errors(void) {
  up();
  /* Refused by the server: one line, exit 1. */
  const char *bad_role[] = {"quota", "set", "/bad//role", "--cpus", "1", NULL};
  result r = cli(bad_role);
  CU_ASSERT_EQUAL(r.code, 1);
  CU_ASSERT_EQUAL(lines(r.err), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "INVALID_ARGUMENT"));
  CU_ASSERT_STRING_EQUAL(r.out, "");
  result_release(&r);
  /* No master there: exit 3. */
  const char *unreachable[] = {"--master", "127.0.0.1:1", "--call-timeout", "5s", "agents", NULL};
  r = cli(unreachable);
  CU_ASSERT_EQUAL(r.code, 3);
  CU_ASSERT_EQUAL(lines(r.err), 1);
  result_release(&r);
  /* Usage: exit 2. */
  const char *usage[] = {"agents", "--bogus", NULL};
  r = cli(usage);
  CU_ASSERT_EQUAL(r.code, 2);
  CU_ASSERT_EQUAL(lines(r.err), 1);
  result_release(&r);
  const char *noun[] = {"nonsense", NULL};
  r = cli(noun);
  CU_ASSERT_EQUAL(r.code, 2);
  result_release(&r);
}

/* Runs args, asserts the exit code and that stdout holds `want` (NULL: anything). */
static void expect(const char *const *args, int code, const char *want) {
  result r = cli(args);
  CU_ASSERT_EQUAL(r.code, code);
  if (want && !strstr(r.out, want)) {
    fprintf(stderr, "  (stdout lacks `%s`)\n", want);
    CU_FAIL("output");
  }
  result_release(&r);
}

/* The other reads and changes, each through its command. */
static void test_more_commands(void) {
  up();
  expect((const char *[]){"agents", "-o", "yaml", NULL}, 0, "agents:\n- agent_info:\n");
  expect((const char *[]){"roles", NULL}, 0, "eng");
  expect((const char *[]){"frameworks", "--all", "-o", "json", NULL}, 0, "\"frameworks\"");
  expect((const char *[]){"offers", NULL}, 0, NULL);
  expect((const char *[]){"operations", NULL}, 0, NULL);
  expect((const char *[]){"state", "-o", "json", NULL}, 0, "\"agents\"");
  expect((const char *[]){"weights", "set", "eng=2.5", NULL}, 0, "weights set");
  expect((const char *[]){"weights", "set", "eng", NULL}, 2, NULL);
  expect((const char *[]){"reserve", agent_id, "cpus:1;mem:128", "--role", "eng", NULL}, 0, "reserved");
  expect((const char *[]){"unreserve", agent_id, "cpus:1;mem:128", "--role", "eng", NULL}, 0, "unreserved");
  expect((const char *[]){"reserve", agent_id, "cpus:1", NULL}, 2, NULL); /* --role is required */
  expect((const char *[]){"deactivate", agent_id, NULL}, 0, "deactivated");
  expect((const char *[]){"reactivate", agent_id, NULL}, 0, "reactivated");
  expect((const char *[]){"deactivate", "no-such-agent", NULL}, 1, NULL);
  expect((const char *[]){"maintenance", "set", "--duration", "1h", "some-host", NULL}, 0, "1 machine");
  expect((const char *[]){"maintenance", "-o", "yaml", NULL}, 0, "some-host");
  expect((const char *[]){"maintenance", "set", NULL}, 0, "0 machine");
  expect((const char *[]){"task", "kill", "x", NULL}, 1, NULL);
  expect((const char *[]){"task", NULL}, 2, NULL);
  expect((const char *[]){"quota", "set", "--help", NULL}, 0, "--guarantee");
}

typedef struct running {
  int k;
} running;

static bool output_streamed(void *ctx) {
  _cleanup_free_ char *out = cli_file(((running *)ctx)->k, "out");
  return strcmp(out, "started\n") == 0;
}

/* Output shows while the task runs; Ctrl-C kills the task and exits 130. */
static void test_run_interrupted(void) {
  up();
  running w;
  pid_t pid = cli_start((const char *[]){"run", "--shell", "echo started; exec sleep 60", NULL}, true, &w.k);
  CU_ASSERT(ms_sim_wait(output_streamed, &w, WAIT_MS));
  kill(pid, SIGINT);
  result r = cli_wait(pid, w.k);
  CU_ASSERT_EQUAL(r.code, 130);
  CU_ASSERT_STRING_EQUAL(r.out, "started\n");
  CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "TASK_KILLED"));
  result_release(&r);
}

/* `meseta task kill` reaches the task through its agent: the running `meseta run` sees
 * TASK_KILLED and exits 128 + SIGTERM. */
static void test_task_kill(void) {
  up();
  running w;
  pid_t pid = cli_start((const char *[]){"run", "--shell", "echo started; exec sleep 600", NULL}, true, &w.k);
  CU_ASSERT_FATAL(ms_sim_wait(output_streamed, &w, WAIT_MS));
  result so_far = {0, NULL, cli_file(w.k, "err")};
  _cleanup_free_ char *task = task_id_of(&so_far);
  result_release(&so_far);
  result k = cli((const char *[]){"task", "kill", task, NULL});
  CU_ASSERT_EQUAL(k.code, 0);
  result_release(&k);
  result r = cli_wait(pid, w.k);
  CU_ASSERT_EQUAL(r.code, 128 + SIGTERM);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "TASK_KILLED"));
  result_release(&r);
  /* Killing it again: it has ended. */
  k = cli((const char *[]){"task", "kill", task, NULL});
  CU_ASSERT_EQUAL(k.code, 1);
  CU_ASSERT(strstr(k.err, "has already ended") || strstr(k.err, "not on this agent"));
  result_release(&k);
}

/* The master from the environment or the config file; YAML says what JSON says. */
static void test_config_and_yaml(void) {
  up();
  setenv("MESETA_MASTER", mapi_addr, 1);
  result r = cli_bare((const char *[]){"agents", NULL});
  CU_ASSERT_EQUAL(r.code, 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.out, agent_id));
  result_release(&r);
  unsetenv("MESETA_MASTER");

  _cleanup_free_ char *cfgdir = ms_xasprintf("%s/.config/meseta", dir);
  _cleanup_free_ char *mk = ms_xasprintf("mkdir -p '%s'", cfgdir);
  CU_ASSERT_EQUAL_FATAL(system(mk), 0);
  _cleanup_free_ char *cfg = ms_xasprintf("%s/config.json", cfgdir);
  FILE *f = fopen(cfg, "we");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fprintf(f, "{\"master\": \"%s\", \"agent_port\": %s, \"output\": \"yaml\"}\n", mapi_addr, agent_port);
  fclose(f);
  r = cli_bare((const char *[]){"state", NULL});
  CU_ASSERT_EQUAL(r.code, 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "state:\n  agents:\n"));
  int yaml_k = runs - 1; /* the run just waited for */
  result_release(&r);
  r = cli_bare((const char *[]){"state", "-o", "json", NULL});
  CU_ASSERT_EQUAL(r.code, 0);
  int json_k = runs - 1;
  result_release(&r);
  if (access("/usr/bin/python3", X_OK) == 0 && system("/usr/bin/python3 -c 'import yaml' 2>/dev/null") == 0) {
    _cleanup_free_ char *cmd =
        ms_xasprintf("/usr/bin/python3 -c 'import json, yaml, sys\n"
                     "a = json.load(open(sys.argv[1])); b = yaml.safe_load(open(sys.argv[2]))\n"
                     "a.pop(\"revision\"); b.pop(\"revision\")\n"
                     "sys.exit(0 if a == b else 1)' %s/cli-%d.out %s/cli-%d.out",
                     dir, json_k, dir, yaml_k);
    CU_ASSERT_EQUAL(system(cmd), 0);
  } else {
    fprintf(stderr, "  (no python3 yaml: YAML not checked against JSON)\n");
  }
  f = fopen(cfg, "we");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fputs("{\"mastr\": \"x\"}\n", f);
  fclose(f);
  r = cli_bare((const char *[]){"agents", NULL});
  CU_ASSERT_EQUAL(r.code, 2);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "unknown key `mastr`"));
  result_release(&r);
  unlink(cfg);
}

/* ---- issue 12 ("Trust") ---- */

/* Point 10: an environment twin reaches only the command whose flag it names:
 * MESETA_CPUS (set for something else) is not `quota set --cpus`. */
static void test_trust_10_env_twin_scoped(void) {
  up();
  setenv("MESETA_CPUS", "1.5", 1);
  setenv("MESETA_QUOTA_SET_DISK", "7", 1); /* the command's own twin does apply */
  result r = cli((const char *[]){"quota", "set", "zz", "--mem", "10", NULL});
  unsetenv("MESETA_CPUS");
  unsetenv("MESETA_QUOTA_SET_DISK");
  CU_ASSERT_EQUAL(r.code, 0);
  result_release(&r);
  bool seen = false;
  json_t *g = NULL;
  for (int i = 0; i < 100 && !seen; i++) {
    r = cli((const char *[]){"quota", "get", "zz", "-o", "json", NULL});
    json_t *doc = r.code == 0 ? json_loads(r.out, 0, NULL) : NULL;
    json_t *cfg = json_array_get(json_object_get(doc, "configs"), 0);
    seen = json_object_get(json_object_get(cfg, "guarantees"), "mem") != NULL;
    if (seen)
      g = json_incref(json_object_get(cfg, "guarantees"));
    json_decref(doc);
    result_release(&r);
    if (!seen)
      ms_time_sleep_ms(100);
  }
  CU_ASSERT(seen);
  CU_ASSERT_PTR_NULL(json_object_get(g, "cpus")); /* not 1.5 from MESETA_CPUS */
  CU_ASSERT_PTR_NOT_NULL(json_object_get(g, "disk"));
  json_decref(g);
  r = cli((const char *[]){"quota", "remove", "zz", NULL});
  CU_ASSERT_EQUAL(r.code, 0);
  result_release(&r);
}

/* Point 10: global flags after the command, --version, shell completion. */
static void test_trust_10_global_flags_version_completion(void) {
  up();
  result r = cli_bare((const char *[]){"agents", "--master", mapi_addr, "-o", "json", NULL});
  CU_ASSERT_EQUAL(r.code, 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.out, agent_id));
  result_release(&r);
  r = cli_bare((const char *[]){"quota", "get", "--call-timeout=20s", "--master", mapi_addr, NULL});
  CU_ASSERT_EQUAL(r.code, 0);
  result_release(&r);
  r = cli_bare((const char *[]){"--version", NULL});
  CU_ASSERT_EQUAL(r.code, 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "meseta "));
  CU_ASSERT(r.out[7] >= '0' && r.out[7] <= '9');
  result_release(&r);
  r = cli_bare((const char *[]){"completion", "bash", NULL});
  CU_ASSERT_EQUAL(r.code, 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "complete -F _meseta meseta"));
  CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "get set remove")); /* quota's verbs, from the table */
  _cleanup_free_ char *script = ms_xasprintf("%s/completion.bash", dir);
  FILE *f = fopen(script, "we");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fputs(r.out, f);
  fclose(f);
  result_release(&r);
  _cleanup_free_ char *check = ms_xasprintf("bash -n '%s'", script);
  CU_ASSERT_EQUAL(system(check), 0);
  r = cli_bare((const char *[]){"completion", "fish", NULL});
  CU_ASSERT_EQUAL(r.code, 2);
  result_release(&r);
}

/* Point 10: `run` says why it waits: here, other roles' quota guarantees leave role `*`
 * no headroom (the tour's trap: a guarantee as large as the machine). */
static void test_trust_10_run_says_why_quota(void) {
  up();
  result r = cli((const char *[]){"quota", "set", "trust10", "--cpus", "4", "--force", NULL});
  CU_ASSERT_EQUAL(r.code, 0);
  result_release(&r);
  r = cli((const char *[]){"run", "--timeout", "10s", "--", "echo", "never", NULL});
  CU_ASSERT_EQUAL(r.code, 124);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "waiting for an offer: the quota guarantees of"));
  CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "`trust10`"));
  result_release(&r);
  r = cli((const char *[]){"quota", "remove", "trust10", NULL});
  CU_ASSERT_EQUAL(r.code, 0);
  result_release(&r);
}

/* A TCP proxy to master-api that accepts nothing for `delay_ms` (the connection waits in
 * the backlog: a handshake that is slow to come), then forwards every connection. */
typedef struct slow_proxy {
  int lfd;
  int delay_ms;
  const char *target; /* "127.0.0.1:P" */
  volatile bool stop;
} slow_proxy;

static void *pump(void *arg) {
  int *fds = arg;
  struct pollfd p[2] = {{fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}};
  char buf[16384];
  for (bool open = true; open;) {
    if (poll(p, 2, 1000) < 0)
      break;
    for (int i = 0; i < 2 && open; i++) {
      if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      ssize_t n = read(p[i].fd, buf, sizeof(buf));
      open = n > 0 && write(p[1 - i].fd, buf, (size_t)n) == n;
    }
  }
  close(fds[0]);
  close(fds[1]);
  free(fds);
  return NULL;
}

static void *slow_proxy_main(void *arg) {
  slow_proxy *sp = arg;
  ms_time_sleep_ms(sp->delay_ms);
  int port = (int)strtol(strrchr(sp->target, ':') + 1, NULL, 10);
  while (!sp->stop) {
    struct pollfd p = {sp->lfd, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0)
      continue;
    int c = accept4(sp->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
      continue;
    int u = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(u, (struct sockaddr *)&a, sizeof(a)) != 0) {
      close(c);
      close(u);
      continue;
    }
    int *fds = ms_xmalloc(2 * sizeof(int));
    fds[0] = c;
    fds[1] = u;
    pthread_t th;
    if (pthread_create(&th, NULL, pump, fds) == 0)
      pthread_detach(th);
  }
  return NULL;
}

/* Point 8: a call whose connection is slow to be accepted waits for it (wait-for-ready,
 * bounded by --call-timeout) instead of failing with "connection attempt timed out". */
static void test_trust_8_cli_waits_for_slow_handshake(void) {
  up();
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  CU_ASSERT_FATAL(bind(lfd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(lfd, 64) == 0);
  CU_ASSERT_FATAL(getsockname(lfd, (struct sockaddr *)&a, &len) == 0);
  _cleanup_free_ char *addr = ms_xasprintf("127.0.0.1:%d", ntohs(a.sin_port));
  slow_proxy sp = {.lfd = lfd, .delay_ms = 3000, .target = mapi_addr};
  pthread_t th;
  CU_ASSERT_FATAL(pthread_create(&th, NULL, slow_proxy_main, &sp) == 0);
  result r =
      cli_bare((const char *[]){"--master", addr, "--call-timeout", "60s", "agents", "-o", "json", NULL});
  CU_ASSERT_EQUAL(r.code, 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.out, agent_id));
  result_release(&r);
  sp.stop = true;
  pthread_join(th, NULL);
  close(lfd);
}

/* Everything stops cleanly (under ASan: without leaks). */
static void test_stop(void) {
  if (agent_proc) {
    CU_ASSERT_EQUAL(ms_test_proc_stop(agent_proc, SIGTERM), 0);
    ms_test_proc_free(agent_proc);
    agent_proc = NULL;
  }
  if (mapi_proc) {
    CU_ASSERT_EQUAL(ms_test_proc_stop(mapi_proc, SIGTERM), 0);
    ms_test_proc_free(mapi_proc);
    mapi_proc = NULL;
  }
  if (cluster.registry)
    ms_test_cluster_stop(&cluster);
  /* Every container's cgroup is gone; then the parent goes too. */
  static const char *const roots[] = {"cpu",     "cpuacct", "memory",  "pids",
                                      "devices", "freezer", "unified", ""};
  for (size_t i = 0; i < MS_ARRAY_SIZE(roots); i++) {
    _cleanup_free_ char *p =
        ms_xasprintf("/sys/fs/cgroup/%s%s" CGROUP_PARENT, roots[i], *roots[i] ? "/" : "");
    if (rmdir(p) != 0 && errno != ENOENT) {
      fprintf(stderr, "rmdir %s: %s\n", p, strerror(errno));
      CU_FAIL("a container's cgroup is left");
    }
  }
}

/* Processes whose command line mentions `needle`. */
static int processes_with(const char *needle) {
  DIR *d = opendir("/proc");
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d))) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9' || strtol(e->d_name, NULL, 10) == (long)getpid())
      continue;
    _cleanup_free_ char *p = ms_xasprintf("/proc/%s/cmdline", e->d_name);
    char buf[8192];
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    ssize_t len = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
    if (fd >= 0)
      close(fd);
    if (len <= 0)
      continue;
    for (ssize_t i = 0; i < len; i++)
      if (!buf[i])
        buf[i] = ' ';
    buf[len] = '\0';
    n += strstr(buf, needle) != NULL;
  }
  if (d)
    closedir(d);
  return n;
}

/* Agent ids in `meseta agents -o json` on `master`, in order, joined ("" if none). */
static char *agent_ids(const char *master) {
  const char *args[] = {"--master", master, "agents", "-o", "json", NULL};
  result r = cli_bare(args);
  json_t *j = json_loads(r.out, 0, NULL);
  json_t *items = json_object_get(j, "agents");
  char *ids = ms_xstrdup("");
  size_t i;
  json_t *a;
  json_array_foreach(items, i, a) {
    const char *id =
        json_string_value(json_object_get(json_object_get(json_object_get(a, "agent_info"), "id"), "value"));
    char *next = ms_xasprintf("%s%s%s", ids, *ids ? "," : "", id ? id : "?");
    free(ids);
    ids = next;
  }
  json_decref(j);
  result_release(&r);
  return ids;
}

typedef struct up_run {
  pid_t pid;
  int k;
} up_run;

static bool up_ready(void *ctx) {
  up_run *u = ctx;
  _cleanup_free_ char *out = cli_file(u->k, "out");
  return strstr(out, "Press Ctrl-C to stop.") != NULL;
}

/* Starts `meseta up` on fresh ports with two agents; the master's address. */
static char *up_start(const char *state, up_run *u) {
  _cleanup_free_ char *pe = free_port(), *pp = free_port(), *pr = free_port(), *pa = free_port(),
                      *pm = free_port(), *pg = free_port();
  const char *args[] = {"up",
                        "--state-dir",
                        state,
                        "--agents",
                        "2",
                        "--etcd-port",
                        pe,
                        "--etcd-peer-port",
                        pp,
                        "--registry-port",
                        pr,
                        "--allocator-port",
                        pa,
                        "--master-port",
                        pm,
                        "--agent-port",
                        pg,
                        "--cgroup-parent",
                        CGROUP_PARENT "-up",
                        NULL};
  u->pid = cli_start(args, false, &u->k);
  CU_ASSERT_FATAL(ms_sim_wait(up_ready, u, 120000));
  return ms_xasprintf("127.0.0.1:%s", pm);
}

static int up_stop(up_run *u) {
  kill(u->pid, SIGINT); /* as Ctrl-C */
  result r = cli_wait(u->pid, u->k);
  int code = r.code;
  result_release(&r);
  return code;
}

/* `meseta up` brings up etcd, the services and two agents, runs a task, stops cleanly on
 * Ctrl-C (no process or container cgroup left), and a second run reuses the state. */
static void test_up_and_down(void) {
  _cleanup_free_ char *state = ms_xasprintf("%s/up-state", dir);
  up_run u;
  _cleanup_free_ char *master = up_start(state, &u);
  _cleanup_free_ char *ids = agent_ids(master);
  fprintf(stderr, "agents: %s\n", ids);
  CU_ASSERT_PTR_NOT_NULL(strchr(ids, ',')); /* two */
  const char *run[] = {"--master", master, "run", "--quiet", "--", "echo", "hello", NULL};
  result r = cli_bare(run);
  CU_ASSERT_EQUAL(r.code, 0);
  CU_ASSERT_STRING_EQUAL(r.out, "hello\n");
  result_release(&r);
  CU_ASSERT_EQUAL(up_stop(&u), 0);
  CU_ASSERT_EQUAL(processes_with(state), 0);
  static const char *const roots[] = {"cpu", "memory", "pids", ""};
  for (size_t i = 0; i < MS_ARRAY_SIZE(roots); i++) {
    _cleanup_free_ char *p =
        ms_xasprintf("/sys/fs/cgroup/%s%s" CGROUP_PARENT "-up", roots[i], *roots[i] ? "/" : "");
    CU_ASSERT(rmdir(p) == 0 || errno == ENOENT); /* empty: no container left */
  }

  up_run again;
  _cleanup_free_ char *master2 = up_start(state, &again);
  _cleanup_free_ char *ids2 = agent_ids(master2);
  CU_ASSERT_STRING_EQUAL(ids2, ids); /* the state dir was reused: the same agents */
  CU_ASSERT_EQUAL(up_stop(&again), 0);
  CU_ASSERT_EQUAL(processes_with(state), 0);
}

/* Point 7: a port in use stops `meseta up` before it starts anything, naming the port
 * and the process holding it (here: this test). */
static void test_trust_7_port_in_use_names_holder(void) {
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  CU_ASSERT_FATAL(bind(lfd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(lfd, 4) == 0);
  CU_ASSERT_FATAL(getsockname(lfd, (struct sockaddr *)&a, &len) == 0);
  _cleanup_free_ char *busy = ms_xasprintf("%d", ntohs(a.sin_port));
  _cleanup_free_ char *state = ms_xasprintf("%s/up-busy", dir);
  _cleanup_free_ char *pe = free_port(), *pp = free_port(), *pr = free_port(), *pa = free_port(),
                      *pg = free_port();
  result r = cli_bare((const char *[]){"up", "--state-dir", state, "--etcd-port", pe, "--etcd-peer-port", pp,
                                       "--registry-port", pr, "--allocator-port", pa, "--master-port", busy,
                                       "--agent-port", pg, NULL});
  _cleanup_free_ char *want =
      ms_xasprintf("port %s (--master-port) is in use by pid %d (test-cli)", busy, (int)getpid());
  CU_ASSERT_EQUAL(r.code, 1);
  if (!strstr(r.err, want)) {
    fprintf(stderr, "  (stderr lacks `%s`)\n", want);
    CU_FAIL("the holder is not named");
  }
  result_release(&r);
  CU_ASSERT_EQUAL(processes_with(state), 0); /* nothing started */
  close(lfd);
}

static bool none_with(void *needle) {
  return processes_with(needle) == 0;
}

/* Point 7: `meseta up` killed by SIGKILL takes every process it started along (they get
 * SIGTERM from the kernel: PR_SET_PDEATHSIG). */
static void test_trust_7_killed_up_leaves_nothing_running(void) {
  _cleanup_free_ char *state = ms_xasprintf("%s/up-killed", dir);
  up_run u;
  free(up_start(state, &u));
  CU_ASSERT(processes_with(state) > 0);
  kill(u.pid, SIGKILL);
  result r = cli_wait(u.pid, u.k);
  CU_ASSERT_EQUAL(r.code, 128 + SIGKILL);
  result_release(&r);
  CU_ASSERT(ms_sim_wait(none_with, state, 90000));
  fprintf(stderr, "processes of %s left: %d\n", state, processes_with(state));
}

/* Point 7: SIGHUP (a closed terminal) while stderr is a pipe nobody reads any more (a
 * `| tee` interrupted): everything is stopped, nothing dies of SIGPIPE halfway. */
static void test_trust_7_sighup_leaves_nothing_running(void) {
  _cleanup_free_ char *state = ms_xasprintf("%s/up-hup", dir);
  int p[2];
  CU_ASSERT_FATAL(pipe2(p, O_CLOEXEC) == 0);
  cli_err_fd = p[1];
  up_run u;
  free(up_start(state, &u));
  cli_err_fd = -1;
  close(p[1]);
  close(p[0]); /* the reader is gone */
  kill(u.pid, SIGHUP);
  result r = cli_wait(u.pid, u.k);
  CU_ASSERT_EQUAL(r.code, 0);
  result_release(&r);
  int left = processes_with(state);
  fprintf(stderr, "processes of %s left: %d\n", state, left);
  CU_ASSERT_EQUAL(left, 0);
  if (left)
    ms_sim_wait(none_with, state, 90000); /* do not leave them to the next case */
}

int main(int argc, char **argv) {
  if (geteuid() != 0)
    ms_test_skip("meseta-agent runs containers through meseta-runtime, which needs root");
  static const ms_test_case cases[] = {
      {"agents_json", test_agents_json},
      {"run_echo", test_run_echo},
      {"run_exit_code", test_run_exit_code},
      {"run_timeout", test_run_timeout},
      {"run_output_unreachable", test_run_output_unreachable},
      {"tasks_and_logs", test_tasks_and_logs},
      {"quota", test_quota},
      {"errors", test_errors},
      {"more_commands", test_more_commands},
      {"run_interrupted", test_run_interrupted},
      {"task_kill", test_task_kill},
      {"config_and_yaml", test_config_and_yaml},
      {"trust_10_env_twin_scoped", test_trust_10_env_twin_scoped},
      {"trust_10_global_flags_version_completion", test_trust_10_global_flags_version_completion},
      {"trust_10_run_says_why_quota", test_trust_10_run_says_why_quota},
      {"trust_8_cli_waits_for_slow_handshake", test_trust_8_cli_waits_for_slow_handshake},
      {"stop", test_stop},
      {"up_and_down", test_up_and_down},
      {"trust_7_port_in_use_names_holder", test_trust_7_port_in_use_names_holder},
      {"trust_7_killed_up_leaves_nothing_running", test_trust_7_killed_up_leaves_nothing_running},
      {"trust_7_sighup_leaves_nothing_running", test_trust_7_sighup_leaves_nothing_running},
      {NULL, NULL},
  };
  ms_error *err = NULL;
  dir = ms_test_tmpdir("test-cli");
  work = ms_xasprintf("%s/work", dir);
  setenv("HOME", dir, 1); /* no user config file */
  unsetenv("XDG_CONFIG_HOME");
  etcd = ms_test_etcd_start(&err);
  if (!etcd) {
    fprintf(stderr, "test-cli: %s\n", err->msg);
    return 1;
  }
  int rc = ms_test_main(argc, argv, "cli", cases);
  ms_test_proc_free(agent_proc); /* left by a failed case: killed */
  ms_test_proc_free(mapi_proc);
  ms_test_etcd_free(etcd);
  if (rc == 0 && !getenv("MESETA_KEEP_TEST_DIR"))
    ms_test_rmtree(dir);
  else
    fprintf(stderr, "test-cli: logs kept in %s\n", dir);
  free(echo_task);
  free(agent_id);
  free(agent_port);
  free(mapi_addr);
  free(work);
  free(dir);
  return rc;
}
