/* Command tasks: a sandbox, a runtime spec, `posix_spawn` of meseta-runtime, a pidfd that
 * tells when it ended, and the status that the runtime's status file maps to. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/fs.h"
#include "meseta/log.h"
#include "meseta/pb-check.h"
#include "meseta/pb.h"
#include "meseta/resources-io.h"
#include "meseta/task-check.h"
#include "meseta/task-state.h"

#include "agent-internal.h"

#define STATUS_MAX (64 * 1024)
#define DEFAULT_GRACE_MS 3000 /* KillPolicy: absent → 3 s */

extern char **environ;

typedef Meseta__V1__TaskStatus__Reason reason_t;

/* Sends a status of the task (and marks it terminal when it is). */
static void report(agent *a, agent_task *t, Meseta__V1__TaskState state, reason_t reason, const char *msg,
                   const Meseta__V1__ExitStatus *exit, Meseta__V1__TaskResourceLimitation *limitation) {
  Meseta__V1__TaskStatus st = MESETA__V1__TASK_STATUS__INIT;
  st.state = state;
  st.reason = reason;
  /* Messages quote what the agent did not check (paths, errno text, a runtime's words):
   * the allocator refuses a stream message that is not UTF-8. */
  _cleanup_free_ char *text = msg ? ms_utf8_repair(msg) : NULL;
  st.message = text ? text : "";
  st.exit_status = (Meseta__V1__ExitStatus *)exit;
  st.limitation = limitation;
  if (ms_task_state_terminal(state))
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
  if (t->pidfd >= 0) {
    ms_loop_del_fd(t->owner->loop, t->pidfd, NULL);
    close(t->pidfd);
  }
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
  const Meseta__V1__SeccompInfo *sc =
      ti->container && ti->container->linux_info ? ti->container->linux_info->seccomp : NULL;
  const char *profile = a->iso_seccomp ? a->seccomp_default : "unconfined";
  if (sc && sc->profile_case == MESETA__V1__SECCOMP_INFO__PROFILE_PROFILE_NAME) {
    profile = sc->profile_name;
    if (!path_safe(profile)) {
      json_decref(spec);
      ms_error_set(err, MS_INVALID_ARGUMENT,
                   "`task.container.linux_info.seccomp.profile_name`: `%s` is not a profile name (one file "
                   "name, without `/`)",
                   profile ? profile : "");
      return NULL;
    }
  } else if (sc && sc->profile_case == MESETA__V1__SECCOMP_INFO__PROFILE_UNCONFINED) {
    if (!sc->unconfined) {
      json_decref(spec);
      ms_error_set(
          err, MS_INVALID_ARGUMENT,
          "`task.container.linux_info.seccomp.unconfined`: false is invalid (leave `seccomp` out for "
          "the agent's default)");
      return NULL;
    }
    profile = "unconfined";
  }
  json_object_set_new(spec, "seccomp_profile", json_string(profile));
  if (a->iso_pids && a->cfg.pids_limit > 0)
    json_object_set_new(spec, "pids_limit", json_integer(a->cfg.pids_limit));
  if (a->iso_net_none)
    json_object_set_new(spec, "network", json_string("none"));
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

/* ---- resources ---- */

/* A set as the agent compares it: no reservations, no allocation. */
static int plain_set(Meseta__V1__Resource *const *r, size_t n, ms_resources **ret, ms_error **err) {
  ms_resources *set = NULL;
  if (ms_resources_from_proto(r, n, &set, err) < 0)
    return MS_ERR;
  *ret = ms_resources_to_unreserved(set);
  ms_resources_free(set);
  return ms_resources_allocate(*ret, NULL, NULL);
}

/* The agent's last line of defence against an allocator that lost track: the task's
 * resources (quantities, and ports by value) must fit in what no other live task uses. */
static int check_resources(agent *a, const agent_task *t, ms_error **err) {
  ms_resources *total = ms_resources_clone(a->total), *want = NULL, *used = ms_resources_new();
  int rc = MS_ERR;
  if (plain_set(t->info->resources, t->info->n_resources, &want, err) < 0) {
    ms_error_prefix(err, "`task.resources`");
    goto out;
  }
  for (agent_task *o = a->tasks; o; o = o->next) {
    ms_resources *r = NULL;
    if (o == t || !o->info || (o->terminal && !o->pid) ||
        plain_set(o->info->resources, o->info->n_resources, &r, NULL) < 0)
      continue;
    ms_resources_add(used, r, NULL);
    ms_resources_free(r);
  }
  ms_quantities qt = {0}, qu = {0}, qw = {0};
  ms_quantities_of(&qt, total);
  ms_quantities_of(&qu, used);
  ms_quantities_of(&qw, want);
  ms_quantities_subtract(&qt, &qu);
  ms_resources *want_ports = ms_resources_named(want, "ports"),
               *free_ports = ms_resources_named(total, "ports");
  ms_resources *used_ports = ms_resources_named(used, "ports");
  bool ports_ok = ms_resources_contains(free_ports, used_ports) &&
                  ms_resources_subtract(free_ports, used_ports, NULL) == 0 &&
                  ms_resources_contains(free_ports, want_ports);
  if (!ms_quantities_contains(&qt, &qw) || !ports_ok) {
    _cleanup_free_ char *w = ms_resources_describe(want);
    ms_resources_subtract(total, used, NULL);
    _cleanup_free_ char *f = ms_resources_describe(total);
    ms_error_set(err, MS_INVALID_ARGUMENT, "`task.resources`: `%s` is more than this agent has free (`%s`)",
                 w, f);
  } else {
    rc = 0;
  }
  ms_resources_free(want_ports);
  ms_resources_free(free_ports);
  ms_resources_free(used_ports);
  ms_quantities_release(&qt);
  ms_quantities_release(&qu);
  ms_quantities_release(&qw);
out:
  ms_resources_free(total);
  ms_resources_free(want);
  ms_resources_free(used);
  return rc;
}

/* Defence in depth (the allocator refuses these at accept): no field this agent does
 * not implement, and never a container without cpus and a memory limit. */
int agent_task_check(const Meseta__V1__TaskInfo *ti, ms_error **err) {
  if (ms_pb_check_refused(&ti->base, "task", err) < 0)
    return MS_ERR;
  ms_resources *r = NULL;
  if (ms_resources_from_proto(ti->resources, ti->n_resources, &r, err) < 0)
    return ms_error_prefix(err, "`task.resources`");
  int rc = ms_task_check_minimums(r, err);
  ms_resources_free(r);
  return rc < 0 ? ms_error_prefix(err, "`task.resources`") : 0;
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

agent_task *agent_task_new(agent *a, const char *framework_id, const char *task_id) {
  agent_task *t = ms_xcalloc(1, sizeof(*t));
  t->owner = a;
  t->pidfd = -1;
  t->framework_id = ms_xstrdup(framework_id);
  t->task_id = ms_xstrdup(task_id);
  t->log_id = ms_xasprintf("task=%s/%s", framework_id, task_id);
  t->state = MESETA__V1__TASK_STATE__TASK_STAGING;
  return t;
}

/* A container id: random, so it can name cgroups whatever the task id holds. */
static char *new_container_id(void) {
  uint8_t rnd[8];
  if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
    for (size_t i = 0; i < sizeof(rnd); i++)
      rnd[i] = (uint8_t)rand();
  return ms_xasprintf("c-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5],
                      rnd[6], rnd[7]);
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
  agent_task *t = agent_task_new(a, fid, tid);
  t->info = (Meseta__V1__TaskInfo *)ms_pb_dup(&ti->base);
  t->framework = (Meseta__V1__FrameworkInfo *)ms_pb_dup(&rt->framework_info->base);
  t->container_id = new_container_id();
  t->cdir = ms_xasprintf("%s/containers/%s", a->work_dir, t->container_id);
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
  ms_error *err = NULL;
  if (agent_task_check(ti, &err) < 0) {
    report(a, t, MESETA__V1__TASK_STATE__TASK_ERROR, MESETA__V1__TASK_STATUS__REASON__REASON_TASK_INVALID,
           err->msg, NULL, NULL);
    ms_error_free(err);
    return;
  }
  if (ti->executor || !ti->command) {
    report(a, t, MESETA__V1__TASK_STATE__TASK_ERROR, MESETA__V1__TASK_STATUS__REASON__REASON_TASK_INVALID,
           ti->executor ? "tasks with an executor are not supported by this agent yet"
                        : "the task has neither `command` nor `executor`",
           NULL, NULL);
    return;
  }
  t->sandbox = ms_xasprintf("%s/sandboxes/%s/%s", a->work_dir, fid, tid);

  if (check_resources(a, t, &err) < 0) {
    report(a, t, MESETA__V1__TASK_STATE__TASK_ERROR, MESETA__V1__TASK_STATUS__REASON__REASON_TASK_INVALID,
           err->msg, NULL, NULL);
    ms_error_free(err);
    return;
  }
  _cleanup_free_ char *spec_path = ms_xasprintf("%s/spec.json", t->cdir);
  _cleanup_free_ char *spec = NULL;
  pid_t pid = 0;
  if (ms_mkdirs(t->sandbox, &err) < 0 || ms_mkdirs(t->cdir, &err) < 0) {
    fail(a, t, MESETA__V1__TASK_STATUS__REASON__REASON_CONTAINER_LAUNCH_FAILED, err->msg);
  } else if (!(spec = build_spec(a, t, &err))) {
    report(a, t, MESETA__V1__TASK_STATE__TASK_ERROR, MESETA__V1__TASK_STATUS__REASON__REASON_TASK_INVALID,
           err->msg, NULL, NULL);
  } else if (agent_write_bytes(spec_path, spec, strlen(spec), false, &err) < 0) {
    /* Not fsync'ed, as checkpoints are not: a spec matters only while this boot lasts. */
    fail(a, t, MESETA__V1__TASK_STATUS__REASON__REASON_CONTAINER_LAUNCH_FAILED, err->msg);
  } else {
    /* Checkpointed before the spawn: an agent that dies right after it finds the
     * runtime again by its spec path (agent-checkpoint.c). */
    t->launched = true;
    agent_checkpoint_task(a, t);
    if (spawn_runtime(a, t, spec_path, &pid, &err) < 0) {
      fail(a, t, MESETA__V1__TASK_STATUS__REASON__REASON_CONTAINER_LAUNCH_FAILED, err->msg);
    } else {
      t->pid = pid;
      t->child = true;
      t->start_time = agent_proc_start_time(pid);
      if (agent_task_watch(a, t, &err) < 0) {
        /* Unwatched, it would never be reported: stop it (the runtime cleans up). */
        ms_log_error(t->log_id, "%s: stopping the container", err->msg);
        kill(pid, SIGKILL);
        int ws = 0;
        waitpid(pid, &ws, 0);
        t->pid = 0;
        fail(a, t, MESETA__V1__TASK_STATUS__REASON__REASON_CONTAINER_LAUNCH_FAILED, err->msg);
      } else {
        ms_log_info(t->log_id, "container %s: runtime pid %d, sandbox `%s`", t->container_id, (int)pid,
                    t->sandbox);
        report(a, t, MESETA__V1__TASK_STATE__TASK_STARTING, 0, NULL, NULL, NULL);
        report(a, t, MESETA__V1__TASK_STATE__TASK_RUNNING, 0, NULL, NULL, NULL);
      }
    }
  }
  ms_error_free(err);
}

/* ---- kills ---- */

/* SIGTERM to the runtime, which forwards it and SIGKILLs after the grace. grace_ms >= 0
 * overrides the task's own: it travels as the signal's value (sigqueue), and the runtime
 * keeps the shorter of what it has; a later kill may shorten a grace already running. */
static void kill_one(agent *a, agent_task *t, int64_t grace_ms) {
  if (!t->pid || (t->kill_requested && grace_ms < 0))
    return;
  if (!t->kill_requested) {
    t->kill_requested = true;
    agent_checkpoint_task(a, t);
  }
  int rc;
  if (grace_ms >= 0) {
    if (grace_ms > a->cfg.max_kill_grace_ms)
      grace_ms = a->cfg.max_kill_grace_ms;
    ms_log_info(t->log_id, "killing: SIGTERM to runtime pid %d, grace %lld ms", (int)t->pid,
                (long long)grace_ms);
    rc = sigqueue(t->pid, SIGTERM, (union sigval){.sival_int = (int)grace_ms});
  } else {
    ms_log_info(t->log_id, "killing: SIGTERM to runtime pid %d", (int)t->pid);
    rc = kill(t->pid, SIGTERM);
  }
  if (rc < 0)
    ms_log_warn(t->log_id, "SIGTERM to runtime pid %d: %s", (int)t->pid, strerror(errno));
}

void agent_task_kill(agent *a, const char *framework_id, const char *task_id, int64_t grace_ms) {
  agent_task *t = agent_task_find(a, framework_id, task_id);
  if (!t) {
    ms_log_info(NULL, "task=%s/%s: KILL_TASK for an unknown task", framework_id, task_id);
    return; /* the allocator answers kills of unknown tasks itself */
  }
  if (t->terminal) {
    ms_log_debug(t->log_id, "KILL_TASK for a task already %s", ms_task_state_name(t->state));
    return;
  }
  kill_one(a, t, grace_ms);
}

void agent_task_update_framework(agent *a, const Meseta__V1__FrameworkInfo *info) {
  if (!info->id || !info->id->value)
    return;
  for (agent_task *t = a->tasks; t; t = t->next) {
    if (strcmp(t->framework_id, info->id->value) != 0)
      continue;
    if (t->framework)
      protobuf_c_message_free_unpacked(&t->framework->base, NULL);
    t->framework = (Meseta__V1__FrameworkInfo *)ms_pb_dup(&info->base);
    agent_checkpoint_task(a, t);
  }
}

void agent_task_kill_all(agent *a, const char *framework_id) {
  for (agent_task *t = a->tasks; t; t = t->next)
    if (!framework_id || strcmp(framework_id, t->framework_id) == 0)
      kill_one(a, t, -1);
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

/* Mesos' rule for a task whose end is not known: GONE to a PARTITION_AWARE framework,
 * LOST to the others; either way the framework may launch it again. */
static bool partition_aware(const agent_task *t) {
  for (size_t i = 0; t->framework && i < t->framework->n_capabilities; i++)
    if (t->framework->capabilities[i]->type == MESETA__V1__FRAMEWORK_INFO__CAPABILITY__TYPE__PARTITION_AWARE)
      return true;
  return false;
}

void agent_task_lost(agent *a, agent_task *t, const char *msg) {
  report(a, t, partition_aware(t) ? MESETA__V1__TASK_STATE__TASK_GONE : MESETA__V1__TASK_STATE__TASK_LOST,
         MESETA__V1__TASK_STATUS__REASON__REASON_AGENT_RESTARTED, msg, NULL, NULL);
}

void agent_task_ended(agent *a, agent_task *t, int ws) {
  t->pid = 0;
  t->start_time = 0;
  t->child = false;
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
        ws < 0 ? ms_xasprintf("meseta-runtime ended without a status while the agent was away: %s", line)
        : WIFSIGNALED(ws)
            ? ms_xasprintf("meseta-runtime killed by signal %d", WTERMSIG(ws))
            : ms_xasprintf("meseta-runtime exited with %d without a status: %s", WEXITSTATUS(ws), line);
    if (t->kill_requested)
      report(a, t, MESETA__V1__TASK_STATE__TASK_KILLED, none, msg, NULL, NULL);
    else if (ws < 0) /* the agent was killed mid-launch: nothing says the task ran or failed */
      agent_task_lost(a, t, msg);
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

/* The pidfd is readable: the runtime ended. */
static void on_runtime_end(ms_loop *loop, int fd, uint32_t events, void *arg) {
  agent_task *t = arg;
  agent *a = t->owner;
  ms_loop_del_fd(loop, fd, NULL);
  close(fd);
  t->pidfd = -1;
  int ws = -1;
  if (t->child) {
    int st = 0;
    pid_t r;
    while ((r = waitpid(t->pid, &st, 0)) < 0 && errno == EINTR)
      ;
    if (r == t->pid)
      ws = st;
  }
  ms_log_debug(t->log_id, "runtime pid %d ended (wait status %#x)", (int)t->pid, ws);
  agent_task_ended(a, t, ws);
  agent_maybe_done(a);
}

int agent_task_watch(agent *a, agent_task *t, ms_error **err) {
  int fd = (int)syscall(SYS_pidfd_open, t->pid, 0);
  if (fd < 0)
    return ms_error_set_errno(err, errno, "pidfd_open of runtime pid %d (Linux 5.3 or later is needed)",
                              (int)t->pid);
  if (ms_loop_add_fd(a->loop, fd, EPOLLIN, on_runtime_end, t, err) < 0) {
    close(fd);
    return MS_ERR;
  }
  t->pidfd = fd;
  return 0;
}

uint64_t agent_proc_start_time(pid_t pid) {
  _cleanup_free_ char *path = ms_xasprintf("/proc/%d/stat", (int)pid);
  _cleanup_free_ char *text = agent_read_file(path, 4096, NULL);
  /* Field 2 is the command in parentheses and may hold anything: count from the last ')'. */
  char *p = text ? strrchr(text, ')') : NULL;
  if (!p)
    return 0;
  p++;
  for (int field = 3; field < 22 && p; field++)
    p = strchr(p + 1, ' ');
  return p ? strtoull(p + 1, NULL, 10) : 0;
}
