/* Command tasks: a sandbox, a runtime spec, `posix_spawn` of meseta-runtime, reaping on
 * SIGCHLD and the status that the runtime's status file maps to. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/pb.h"
#include "meseta/resources-io.h"

#include "agent-internal.h"

#define STATUS_MAX (64 * 1024)
#define DEFAULT_GRACE_MS 3000 /* KillPolicy: absent → 3 s */

extern char **environ;

typedef Meseta__V1__TaskStatus__Reason reason_t;

static const char *task_state_name(Meseta__V1__TaskState s) {
  const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(&meseta__v1__task_state__descriptor, s);
  return v ? v->name : "?";
}

static bool terminal_state(Meseta__V1__TaskState s) {
  return s == MESETA__V1__TASK_STATE__TASK_FINISHED || s == MESETA__V1__TASK_STATE__TASK_FAILED ||
         s == MESETA__V1__TASK_STATE__TASK_KILLED || s == MESETA__V1__TASK_STATE__TASK_ERROR ||
         s == MESETA__V1__TASK_STATE__TASK_LOST || s == MESETA__V1__TASK_STATE__TASK_DROPPED ||
         s == MESETA__V1__TASK_STATE__TASK_GONE;
}

/* Sends a status of the task (and marks it terminal when it is). */
static void report(agent *a, agent_task *t, Meseta__V1__TaskState state, reason_t reason, const char *msg,
                   const Meseta__V1__ExitStatus *exit, Meseta__V1__TaskResourceLimitation *limitation) {
  Meseta__V1__TaskStatus st = MESETA__V1__TASK_STATUS__INIT;
  st.state = state;
  st.reason = reason;
  st.message = (char *)(msg ? msg : "");
  st.exit_status = (Meseta__V1__ExitStatus *)exit;
  st.limitation = limitation;
  if (terminal_state(state))
    t->terminal = true;
  agent_status_push(a, t, &st);
}

static void fail(agent *a, agent_task *t, reason_t reason, const char *msg) {
  report(a, t, MESETA__V1__TASK_STATE__TASK_FAILED, reason, msg, NULL, NULL);
}

/* ---- tasks ---- */

agent_task *agent_task_find(agent *a, const char *framework_id, const char *task_id) {
  for (agent_task *t = a->tasks; t; t = t->next)
    if (strcmp(t->task_id, task_id) == 0 && strcmp(t->framework_id, framework_id) == 0)
      return t;
  return NULL;
}

void agent_task_free(agent_task *t) {
  if (!t)
    return;
  while (t->head) {
    agent_update *u = t->head;
    t->head = u->next;
    protobuf_c_message_free_unpacked(&u->msg->base, NULL);
    free(u);
  }
  if (t->info)
    protobuf_c_message_free_unpacked(&t->info->base, NULL);
  if (t->framework)
    protobuf_c_message_free_unpacked(&t->framework->base, NULL);
  free(t->framework_id);
  free(t->task_id);
  free(t->container_id);
  free(t->sandbox);
  free(t->cdir);
  free(t->log_id);
  free(t);
}

void agent_task_forget(agent *a, agent_task *t) {
  for (agent_task **p = &a->tasks; *p; p = &(*p)->next)
    if (*p == t) {
      *p = t->next;
      break;
    }
  if (t->retry_timer)
    ms_loop_cancel_timer(a->loop, t->retry_timer);
  agent_task_free(t);
}

size_t agent_task_live(const agent *a) {
  size_t n = 0;
  for (const agent_task *t = a->tasks; t; t = t->next)
    n += t->pid > 0;
  return n;
}

/* An id that becomes one path component. */
static bool path_safe(const char *s) {
  return s && *s && strlen(s) <= 200 && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* ---- the spec ---- */

static double scalar_of(const ms_resources *r, const char *name) {
  return r ? (double)ms_resources_scalar(r, name) / (double)MS_SCALAR_UNIT : 0;
}

/* limit: the task's Limit for `name` → value in the resource's unit, -1 unlimited, 0 none. */
static double limit_of(const Meseta__V1__TaskInfo *ti, const char *name) {
  for (size_t i = 0; i < ti->n_limits; i++) {
    const Meseta__V1__TaskInfo__LimitsEntry *e = ti->limits[i];
    if (!e->key || strcmp(e->key, name) != 0 || !e->value)
      continue;
    if (e->value->limit_case == MESETA__V1__LIMIT__LIMIT_UNLIMITED)
      return -1;
    if (e->value->limit_case == MESETA__V1__LIMIT__LIMIT_VALUE)
      return e->value->value;
  }
  return 0;
}

static json_t *request_limit(double request, double limit, double scale) {
  json_t *o = json_object();
  if (request > 0)
    json_object_set_new(o, "request",
                        scale == 1 ? json_real(request) : json_integer((json_int_t)(request * scale)));
  if (limit < 0)
    json_object_set_new(o, "limit", json_string("unlimited"));
  else if (limit > 0)
    json_object_set_new(o, "limit",
                        scale == 1 ? json_real(limit) : json_integer((json_int_t)(limit * scale)));
  return o;
}

/* The runtime spec (docs/runtime.md) for a command task, as JSON text (caller frees). */
static char *build_spec(agent *a, agent_task *t, ms_error **err) {
  const Meseta__V1__TaskInfo *ti = t->info;
  const Meseta__V1__CommandInfo *cmd = ti->command;
  json_t *spec = json_object();
  json_object_set_new(spec, "id", json_string(t->container_id));
  json_object_set_new(spec, "sandbox", json_string(t->sandbox));
  json_t *command = json_object();
  bool shell = !cmd->shell || cmd->shell->value;
  if (!cmd->value || !*cmd->value) {
    json_decref(spec);
    json_decref(command);
    ms_error_set(err, MS_INVALID_ARGUMENT, "`command.value` is empty");
    return NULL;
  }
  if (shell) {
    json_object_set_new(command, "shell", json_string(cmd->value));
  } else {
    json_t *argv = json_array();
    json_array_append_new(argv, json_string(cmd->value));
    for (size_t i = 1; i < cmd->n_arguments; i++)
      json_array_append_new(argv, json_string(cmd->arguments[i]));
    json_object_set_new(command, "argv", argv);
  }
  json_object_set_new(spec, "command", command);

  json_t *env = json_object();
  json_object_set_new(env, "PATH",
                      json_string("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
  json_object_set_new(env, "MESETA_SANDBOX", json_string("/mnt/sandbox"));
  json_object_set_new(env, "MESOS_SANDBOX", json_string("/mnt/sandbox"));
  json_object_set_new(env, "MESETA_TASK_ID", json_string(t->task_id));
  json_object_set_new(env, "MESETA_FRAMEWORK_ID", json_string(t->framework_id));
  if (a->id)
    json_object_set_new(env, "MESETA_AGENT_ID", json_string(a->id));
  for (size_t i = 0; cmd->environment && i < cmd->environment->n_variables; i++) {
    const Meseta__V1__Environment__Variable *v = cmd->environment->variables[i];
    if (!v->name || !*v->name || strchr(v->name, '=')) {
      json_decref(spec);
      json_decref(env);
      ms_error_set(err, MS_INVALID_ARGUMENT, "`command.environment.variables[%zu].name` is empty or has `=`",
                   i);
      return NULL;
    }
    if (v->source_case != MESETA__V1__ENVIRONMENT__VARIABLE__SOURCE_VALUE) {
      json_decref(spec);
      json_decref(env);
      ms_error_set(err, MS_UNIMPLEMENTED, "environment variable `%s`: secrets are not supported yet",
                   v->name);
      return NULL;
    }
    json_object_set_new(env, v->name, json_string(v->value ? v->value : ""));
  }
  json_object_set_new(spec, "env", env);

  const char *user = cmd->user && *cmd->user ? cmd->user : t->framework ? t->framework->user : NULL;
  if (a->cfg.switch_user && user && *user)
    json_object_set_new(spec, "user", json_string(user));

  ms_resources *res = NULL;
  if (ms_resources_from_proto(ti->resources, ti->n_resources, &res, err) < 0) {
    json_decref(spec);
    ms_error_prefix(err, "`resources`");
    return NULL;
  }
  double cpus = scalar_of(res, "cpus"), mem = scalar_of(res, "mem");
  ms_resources_free(res);
  json_object_set_new(spec, "cpus", request_limit(cpus, limit_of(ti, "cpus"), 1));
  json_object_set_new(spec, "memory", request_limit(mem, limit_of(ti, "mem"), 1024.0 * 1024.0));
  json_object_set_new(spec, "seccomp_profile", json_string(a->seccomp_default));
  json_object_set_new(spec, "cgroup_parent", json_string(a->cgroup_parent));
  int64_t grace = DEFAULT_GRACE_MS;
  if (ti->kill_policy && ti->kill_policy->grace_period)
    grace = ti->kill_policy->grace_period->seconds * 1000 + ti->kill_policy->grace_period->nanos / 1000000;
  if (grace > a->cfg.max_kill_grace_ms)
    grace = a->cfg.max_kill_grace_ms;
  json_object_set_new(spec, "kill_grace_ms", json_integer(grace < 0 ? 0 : grace));
  _cleanup_free_ char *status = ms_xasprintf("%s/status.json", t->cdir);
  json_object_set_new(spec, "status_file", json_string(status));
  char *text = json_dumps(spec, JSON_INDENT(2) | JSON_SORT_KEYS);
  json_decref(spec);
  return text;
}

/* ---- spawning ---- */

static int spawn_runtime(agent *a, agent_task *t, const char *spec_path, pid_t *ret_pid, ms_error **err) {
  _cleanup_free_ char *out = ms_xasprintf("%s/runtime.out", t->cdir);
  _cleanup_free_ char *log = ms_xasprintf("%s/runtime.log", t->cdir);
  char *argv[] = {
      a->runtime, "--seccomp-dir", a->seccomp_dir, "--seccomp-default", a->seccomp_default, (char *)spec_path,
      NULL};
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&at);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  /* Default handlers, and a session of its own (a ^C to the agent is not its). The runtime
   * starts with SIGTERM, SIGINT and SIGHUP blocked: it blocks them itself before it waits
   * for them (sigwaitinfo), and a kill that comes earlier must stay pending rather than
   * kill the runtime halfway (its init would die, its cgroups would stay). */
  sigset_t mask, defaults;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  sigemptyset(&defaults);
  int defsigs[] = {SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGPIPE, SIGQUIT, SIGUSR1, SIGUSR2};
  for (size_t i = 0; i < MS_ARRAY_SIZE(defsigs); i++)
    sigaddset(&defaults, defsigs[i]);
  posix_spawnattr_setsigmask(&at, &mask);
  posix_spawnattr_setsigdefault(&at, &defaults);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSID);
  int e = posix_spawn(ret_pid, a->runtime, &fa, &at, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  if (e)
    return ms_error_set_errno(err, e, "runtime `%s`", a->runtime);
  return 0;
}

void agent_task_run(agent *a, const Meseta__V1__AllocatorMessage__RunTask *rt) {
  const Meseta__V1__TaskInfo *ti = rt->task;
  const char *fid = rt->framework_info && rt->framework_info->id ? rt->framework_info->id->value : NULL;
  const char *tid = ti && ti->task_id ? ti->task_id->value : NULL;
  if (!fid || !tid || !*fid || !*tid) {
    ms_log_warn(NULL, "RUN_TASK without framework id or task id ignored");
    return;
  }
  if (agent_task_find(a, fid, tid)) {
    ms_log_warn(NULL, "task=%s/%s: RUN_TASK for a task already here ignored", fid, tid);
    return;
  }
  agent_task *t = ms_xcalloc(1, sizeof(*t));
  t->owner = a;
  t->framework_id = ms_xstrdup(fid);
  t->task_id = ms_xstrdup(tid);
  t->log_id = ms_xasprintf("task=%s/%s", fid, tid);
  t->info = (Meseta__V1__TaskInfo *)ms_pb_dup(&ti->base);
  t->framework = (Meseta__V1__FrameworkInfo *)ms_pb_dup(&rt->framework_info->base);
  t->state = MESETA__V1__TASK_STATE__TASK_STAGING;
  t->next = a->tasks;
  a->tasks = t;

  if (a->shutting_down) {
    fail(a, t, MESETA__V1__TASK_STATUS__REASON__REASON_AGENT_REMOVED, "the agent is shutting down");
    return;
  }
  if (!path_safe(fid) || !path_safe(tid)) {
    report(a, t, MESETA__V1__TASK_STATE__TASK_ERROR, MESETA__V1__TASK_STATUS__REASON__REASON_TASK_INVALID,
           "the task id and framework id must be usable as file names (no `/`, not `.` or `..`)", NULL, NULL);
    return;
  }
  if (ti->executor || !ti->command) {
    report(a, t, MESETA__V1__TASK_STATE__TASK_ERROR, MESETA__V1__TASK_STATUS__REASON__REASON_TASK_INVALID,
           ti->executor ? "tasks with an executor are not supported by this agent yet"
                        : "the task has neither `command` nor `executor`",
           NULL, NULL);
    return;
  }
  uint8_t rnd[8];
  if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
    memset(rnd, 0, sizeof(rnd));
  t->container_id = ms_xasprintf("c-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3], rnd[4],
                                 rnd[5], rnd[6], rnd[7]);
  t->sandbox = ms_xasprintf("%s/sandboxes/%s/%s", a->work_dir, fid, tid);
  t->cdir = ms_xasprintf("%s/containers/%s", a->work_dir, t->container_id);

  ms_error *err = NULL;
  _cleanup_free_ char *spec_path = ms_xasprintf("%s/spec.json", t->cdir);
  _cleanup_free_ char *spec = NULL;
  pid_t pid = 0;
  if (agent_mkdirs(t->sandbox, &err) < 0 || agent_mkdirs(t->cdir, &err) < 0) {
    fail(a, t, MESETA__V1__TASK_STATUS__REASON__REASON_CONTAINER_LAUNCH_FAILED, err->msg);
  } else if (!(spec = build_spec(a, t, &err))) {
    report(a, t, MESETA__V1__TASK_STATE__TASK_ERROR, MESETA__V1__TASK_STATUS__REASON__REASON_TASK_INVALID,
           err->msg, NULL, NULL);
  } else if (agent_write_file(spec_path, spec, &err) < 0 || spawn_runtime(a, t, spec_path, &pid, &err) < 0) {
    fail(a, t, MESETA__V1__TASK_STATUS__REASON__REASON_CONTAINER_LAUNCH_FAILED, err->msg);
  } else {
    t->pid = pid;
    ms_log_info(t->log_id, "container %s: runtime pid %d, sandbox `%s`", t->container_id, (int)pid,
                t->sandbox);
    report(a, t, MESETA__V1__TASK_STATE__TASK_STARTING, 0, NULL, NULL, NULL);
    report(a, t, MESETA__V1__TASK_STATE__TASK_RUNNING, 0, NULL, NULL, NULL);
  }
  ms_error_free(err);
}

/* ---- kills ---- */

static void kill_one(agent *a, agent_task *t) {
  if (!t->pid || t->kill_requested)
    return;
  t->kill_requested = true;
  ms_log_info(t->log_id, "killing: SIGTERM to runtime pid %d", (int)t->pid);
  if (kill(t->pid, SIGTERM) < 0)
    ms_log_warn(t->log_id, "SIGTERM to runtime pid %d: %s", (int)t->pid, strerror(errno));
}

void agent_task_kill(agent *a, const char *framework_id, const char *task_id) {
  agent_task *t = agent_task_find(a, framework_id, task_id);
  if (!t) {
    ms_log_info(NULL, "task=%s/%s: KILL_TASK for an unknown task", framework_id, task_id);
    return; /* the allocator answers kills of unknown tasks itself */
  }
  if (t->terminal) {
    ms_log_debug(t->log_id, "KILL_TASK for a task already %s", task_state_name(t->state));
    return;
  }
  kill_one(a, t);
}

void agent_task_kill_all(agent *a, const char *framework_id) {
  for (agent_task *t = a->tasks; t; t = t->next)
    if (!framework_id || strcmp(framework_id, t->framework_id) == 0)
      kill_one(a, t);
}

/* ---- reaping ---- */

/* Removes the container's cgroup directories the runtime could not (it was killed). */
static void remove_cgroups(agent *a, agent_task *t) {
  const char *ctrls[] = {"cpu", "cpuacct", "cpu,cpuacct", "memory", "pids", "unified", ""};
  for (size_t i = 0; i < MS_ARRAY_SIZE(ctrls); i++) {
    _cleanup_free_ char *p = ms_xasprintf("/sys/fs/cgroup/%s%s%s/%s", ctrls[i], *ctrls[i] ? "/" : "",
                                          a->cgroup_parent, t->container_id);
    if (rmdir(p) == 0)
      ms_log_info(t->log_id, "removed leftover cgroup `%s`", p);
  }
}

static const char *jstr(json_t *o, const char *key) {
  const char *s = json_string_value(json_object_get(o, key));
  return s ? s : "";
}

/* The last line of a file (at most 512 bytes), for runtime failures without a status. */
static char *last_line(const char *path) {
  char *text = agent_read_file(path, 16 * 1024, NULL);
  if (!text)
    return ms_xstrdup("");
  size_t n = strlen(text);
  while (n && text[n - 1] == '\n')
    text[--n] = '\0';
  char *nl = strrchr(text, '\n');
  char *r = ms_xstrndup(nl ? nl + 1 : text, 512);
  free(text);
  return r;
}

/* The runtime ended with wait status `ws`: read its status file and report. */
static void finished(agent *a, agent_task *t, int ws) {
  t->pid = 0;
  _cleanup_free_ char *path = ms_xasprintf("%s/status.json", t->cdir);
  _cleanup_free_ char *text = agent_read_file(path, STATUS_MAX, NULL);
  json_t *st = text ? json_loads(text, 0, NULL) : NULL;
  Meseta__V1__ExitStatus ex = MESETA__V1__EXIT_STATUS__INIT;
  const reason_t none = MESETA__V1__TASK_STATUS__REASON__REASON_UNSPECIFIED;
  if (!st) {
    remove_cgroups(a, t);
    _cleanup_free_ char *log = ms_xasprintf("%s/runtime.log", t->cdir);
    _cleanup_free_ char *line = last_line(log);
    _cleanup_free_ char *msg =
        WIFSIGNALED(ws)
            ? ms_xasprintf("meseta-runtime killed by signal %d", WTERMSIG(ws))
            : ms_xasprintf("meseta-runtime exited with %d without a status: %s", WEXITSTATUS(ws), line);
    if (t->kill_requested)
      report(a, t, MESETA__V1__TASK_STATE__TASK_KILLED, none, msg, NULL, NULL);
    else
      fail(a, t, MESETA__V1__TASK_STATUS__REASON__REASON_EXECUTOR_TERMINATED, msg);
    return;
  }
  const char *state = jstr(st, "state"), *message = jstr(st, "message");
  int code = (int)json_integer_value(json_object_get(st, "exit_code"));
  int sig = (int)json_integer_value(json_object_get(st, "signal"));
  if (sig) {
    ex.how_case = MESETA__V1__EXIT_STATUS__HOW_SIGNAL;
    ex.signal = sig;
  } else {
    ex.how_case = MESETA__V1__EXIT_STATUS__HOW_CODE;
    ex.code = code;
  }
  if (strcmp(state, "failed") == 0) {
    fail(a, t, MESETA__V1__TASK_STATUS__REASON__REASON_CONTAINER_LAUNCH_FAILED, message);
  } else if (strcmp(state, "memory_limitation") == 0) {
    Meseta__V1__TaskResourceLimitation lim = MESETA__V1__TASK_RESOURCE_LIMITATION__INIT;
    ms_resources *mem = NULL;
    Meseta__V1__Resources *rp = NULL;
    if (ms_resources_parse_text("mem:1", NULL, &mem, NULL) == 0 && (rp = ms_resources_to_proto(mem))) {
      lim.n_resources = rp->n_resources;
      lim.resources = rp->resources;
    }
    report(a, t, MESETA__V1__TASK_STATE__TASK_FAILED,
           MESETA__V1__TASK_STATUS__REASON__REASON_CONTAINER_LIMITATION_MEMORY, message, &ex, &lim);
    ms_resources_proto_free(rp);
    ms_resources_free(mem);
  } else if (t->kill_requested || strcmp(state, "killed") == 0) {
    report(a, t, MESETA__V1__TASK_STATE__TASK_KILLED, none, message, &ex, NULL);
  } else if (!sig && code == 0) {
    report(a, t, MESETA__V1__TASK_STATE__TASK_FINISHED, none, message, &ex, NULL);
  } else {
    _cleanup_free_ char *m = sig ? ms_xasprintf("Command terminated by signal %d", sig)
                                 : ms_xasprintf("Command exited with status %d", code);
    report(a, t, MESETA__V1__TASK_STATE__TASK_FAILED,
           MESETA__V1__TASK_STATUS__REASON__REASON_COMMAND_EXECUTOR_FAILED, m, &ex, NULL);
  }
  json_decref(st);
}

void agent_task_reap(agent *a) {
  bool again = true;
  while (again) {
    again = false;
    for (agent_task *t = a->tasks; t; t = t->next) {
      if (!t->pid)
        continue;
      int ws = 0;
      pid_t r = waitpid(t->pid, &ws, WNOHANG);
      if (r == t->pid || (r < 0 && errno == ECHILD)) {
        if (r < 0)
          ws = 0;
        ms_log_debug(t->log_id, "runtime pid %d ended (wait status %#x)", (int)t->pid, ws);
        finished(a, t, ws); /* may forget other tasks? no: only pushes updates */
        again = true;       /* the list may have changed under us (acks never run here) */
        break;
      }
    }
  }
  agent_maybe_done(a);
}
