/* `meseta run`: a one-task framework. It subscribes as "meseta-run", takes the first
 * offer that holds the resources asked for (declining others briefly), launches one
 * command task, acknowledges its status updates (printed on stderr), copies its
 * stdout / stderr from the agent's sandbox while it runs and once it has ended, tears
 * the framework down and exits with the task's exit code.
 *
 * Threads: the main thread reads the event stream and makes the scheduler calls; a side
 * thread ticks every POLL_MS to copy output, notice the deadline or a signal (then it
 * kills the task, or cancels the stream when nothing was launched yet) and say once
 * that no offer fits yet. Shared state is under `mu`. */
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/resources-io.h"
#include "meseta/task-state.h"
#include "meseta/time.h"
#include "meseta/v1/operator.pb-c.h"
#include "meseta/v1/scheduler.pb-c.h"

#include "cli.h"

#define POLL_MS 200
#define WAITING_NOTE_MS 3000 /* say "no offer fits yet" after this */
#define KILL_GUARD_MS 60000  /* after a kill, give up on the task's end after this */
#define DECLINE_MS 1000      /* offers that do not fit come back after this */

static char *f_cpus, *f_mem, *f_disk, *f_limit_cpus, *f_limit_mem, *f_role, *f_name, *f_shell, *f_user;
static ms_strv f_env;
static int64_t f_timeout;
static bool f_quiet;

static const ms_flag flags[] = {
    {"cpus", MS_FLAG_STRING, &f_cpus, "0.1", "Cpus the task is guaranteed", "N"},
    {"mem", MS_FLAG_STRING, &f_mem, "64", "Memory the task is guaranteed (MiB, or 512MiB, 1GiB...)", "SIZE"},
    {"disk", MS_FLAG_STRING, &f_disk, NULL, "Disk the task is guaranteed (MiB, or a size)", "SIZE"},
    {"limit-cpus", MS_FLAG_STRING, &f_limit_cpus, NULL,
     "Upper limit of cpus, or `unlimited` (default: --cpus)", "N"},
    {"limit-mem", MS_FLAG_STRING, &f_limit_mem, NULL,
     "Upper limit of memory, or `unlimited` (default: --mem)", "SIZE"},
    {"role", MS_FLAG_STRING, &f_role, "*", "Role to take resources as", "ROLE"},
    {"name", MS_FLAG_STRING, &f_name, NULL, "Task name (default: the program's name)", "NAME"},
    {"shell", MS_FLAG_STRING, &f_shell, NULL, "Run this string with /bin/sh -c instead of a program", "CMD"},
    {"env", MS_FLAG_LIST, &f_env, NULL, "Environment variable for the task (repeatable)", "NAME=VALUE"},
    {"user", MS_FLAG_STRING, &f_user, NULL, "Unix user to run as (default: yours)", "USER"},
    {"timeout", MS_FLAG_DURATION, &f_timeout, "0s", "Kill the task after this long and exit 124 (0: never)"},
    {"quiet", MS_FLAG_BOOL, &f_quiet, "false", "Do not print the task's state changes"},
};

/* What the task asks for, for cli_why_waiting. */
static const char *want_names[3] = {"cpus", "mem", "disk"};
static double want_values[3];
static size_t n_want;

typedef enum stop_why { STOP_NONE, STOP_TIMEOUT, STOP_SIGNAL } stop_why;

typedef struct run {
  cli *c;
  pthread_mutex_t mu;
  ms_rpc_stream *stream;
  char *fw_id, *stream_id;
  char task_id[40];
  char *agent_id;        /* set at launch */
  bool launched, ended;  /* the task was accepted; the main loop is done */
  stop_why stop;         /* what the side thread did */
  int64_t deadline_ms;   /* 0: none */
  int64_t kill_sent_ms;  /* 0: not yet */
  ms_rpc_channel *agent; /* AgentOperator of the task's agent (side thread, then main) */
  char *agent_addr;
  ms_error *agent_err; /* why the output could not be read */
  int64_t off_out, off_err;
} run;

static volatile sig_atomic_t got_signal;

/* The first signal asks for a clean end (kill the task, print its output); a second one
 * quits at once (the master then removes the framework and its task with the stream). */
static void on_signal(int sig) {
  if (got_signal)
    _exit(128 + sig);
  got_signal = sig;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...) {
  if (f_quiet)
    return;
  va_list ap;
  va_start(ap, fmt);
  fputs("meseta: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* A Scheduler call on behalf of the framework. The request's fields 1 and 2 are
 * framework_id and stream_id in every request type, which this fills. */
static int sched_call(run *r, const char *method, ProtobufCMessage *req, const ProtobufCMessageDescriptor *rd,
                      ms_error **err) {
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = r->fw_id;
  const ProtobufCMessageDescriptor *d = req->descriptor;
  *(Meseta__V1__FrameworkID **)((char *)req + d->fields[0].offset) = &fid;
  *(char **)((char *)req + d->fields[1].offset) = r->stream_id;
  ProtobufCMessage *resp = NULL;
  int rc = cli_call(r->c, NULL, "Scheduler", method, req, rd, &resp, err);
  if (resp)
    protobuf_c_message_free_unpacked(resp, NULL);
  return rc;
}

static void copy_output(run *r, bool final) {
  if (!final && r->agent_err)
    return; /* the agent cannot be read: tried once more at the end */
  if (!r->agent && !r->agent_err)
    r->agent = cli_agent_channel(r->c, r->agent_id, &r->agent_addr, &r->agent_err);
  if (!r->agent)
    return;
  if (final) { /* the last read decides whether the output is complete */
    ms_error_free(r->agent_err);
    r->agent_err = NULL;
  }
  ms_error *err = NULL;
  if (cli_read_sandbox(r->c, r->agent, r->fw_id, r->task_id, "stdout", &r->off_out, stdout, &err) < 0 ||
      cli_read_sandbox(r->c, r->agent, r->fw_id, r->task_id, "stderr", &r->off_err, stderr, &err) < 0) {
    /* While it starts the sandbox may not be there yet; at the end, every error counts. */
    if (final || (err->code != MS_NOT_FOUND && err->code != MS_UNAVAILABLE)) {
      ms_error_free(r->agent_err);
      r->agent_err = err;
    } else {
      ms_error_free(err);
    }
  }
}

static void kill_task(run *r) {
  Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
  tid.value = r->task_id;
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = r->agent_id;
  Meseta__V1__KillRequest k = MESETA__V1__KILL_REQUEST__INIT;
  k.task_id = &tid;
  k.agent_id = &aid;
  ms_error *err = NULL;
  if (sched_call(r, "Kill", &k.base, &meseta__v1__kill_response__descriptor, &err) < 0) {
    fprintf(stderr, "meseta: run: kill: %s\n", err->msg);
    ms_error_free(err);
    ms_rpc_stream_cancel(r->stream);
  }
}

/* Decides under the lock, calls without it: a slow agent or master must not hold up the
 * event loop. Once launched, agent_id and the ids never change; the output state (agent,
 * offsets, agent_err) is this thread's until the main thread joins it. */
static void *side(void *arg) {
  run *r = arg;
  int64_t start = now_ms();
  bool noted = false;
  for (;;) {
    struct timespec ts = {0, POLL_MS * 1000000L};
    nanosleep(&ts, NULL);
    pthread_mutex_lock(&r->mu);
    if (r->ended) {
      pthread_mutex_unlock(&r->mu);
      return NULL;
    }
    int64_t now = now_ms();
    bool kill_now = false;
    if (r->stop == STOP_NONE && (got_signal || (r->deadline_ms && now >= r->deadline_ms))) {
      r->stop = got_signal ? STOP_SIGNAL : STOP_TIMEOUT;
      if (r->launched) {
        note("task %s: %s: killing it", r->task_id, r->stop == STOP_SIGNAL ? "interrupted" : "timed out");
        kill_now = true;
        r->kill_sent_ms = now;
      } else {
        ms_rpc_stream_cancel(r->stream);
      }
    }
    if (r->kill_sent_ms && now - r->kill_sent_ms > KILL_GUARD_MS)
      ms_rpc_stream_cancel(r->stream); /* the task never reported its end */
    bool explain = false;
    if (!r->launched && !noted && r->stop == STOP_NONE && now - start > WAITING_NOTE_MS) {
      noted = explain = true;
      note("no offer of role `%s` fits cpus:%s;mem:%s%s%s yet: waiting", f_role, f_cpus, f_mem,
           f_disk ? ";disk:" : "", f_disk ? f_disk : "");
    }
    bool launched = r->launched;
    pthread_mutex_unlock(&r->mu);
    if (explain) /* even with --quiet: a wait nobody explains looks like a hang */
      cli_why_waiting(r->c, f_role, want_names, want_values, n_want, stderr);
    if (kill_now)
      kill_task(r);
    if (launched)
      copy_output(r, false);
  }
}

/* ---- the task ---- */

static int add_limit(Meseta__V1__TaskInfo__LimitsEntry *e, Meseta__V1__Limit *l, const char *name,
                     const char *text, ms_error **err) {
  meseta__v1__task_info__limits_entry__init(e);
  meseta__v1__limit__init(l);
  e->key = (char *)name;
  e->value = l;
  if (strcmp(text, "unlimited") == 0) {
    l->limit_case = MESETA__V1__LIMIT__LIMIT_UNLIMITED;
    l->unlimited = true;
    return 0;
  }
  l->limit_case = MESETA__V1__LIMIT__LIMIT_VALUE;
  if (cli_parse_quantity(name, text, &l->value, err) < 0)
    return ms_error_prefix(err, "flag `--limit-%s`", name);
  return 0;
}

/* Accepts `offer` with the task. */
static int launch(run *r, const Meseta__V1__Offer *offer, const ms_resources *want, char **pos, int npos,
                  ms_error **err) {
  ms_resources *res = ms_resources_clone(want);
  const char *role =
      offer->allocation_info && *offer->allocation_info->role ? offer->allocation_info->role : NULL;
  ms_resources_allocate(res, role, NULL);
  Meseta__V1__Resources *rp = ms_resources_to_proto(res);
  ms_resources_free(res);

  Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
  tid.value = r->task_id;
  Google__Protobuf__BoolValue sh = GOOGLE__PROTOBUF__BOOL_VALUE__INIT;
  sh.value = f_shell != NULL;
  Meseta__V1__CommandInfo cmd = MESETA__V1__COMMAND_INFO__INIT;
  cmd.shell = &sh;
  cmd.value = f_shell ? f_shell : pos[0];
  cmd.n_arguments = f_shell ? 0 : (size_t)npos;
  cmd.arguments = f_shell ? NULL : pos;
  Meseta__V1__Environment env = MESETA__V1__ENVIRONMENT__INIT;
  Meseta__V1__Environment__Variable *vars = ms_xcalloc(f_env.n + 1, sizeof(*vars));
  Meseta__V1__Environment__Variable **vp = ms_xcalloc(f_env.n + 1, sizeof(*vp));
  char **names = ms_xcalloc(f_env.n + 1, sizeof(*names));
  for (size_t i = 0; i < f_env.n; i++) {
    const char *eq = strchr(f_env.v[i], '=');
    meseta__v1__environment__variable__init(&vars[i]);
    names[i] = ms_xstrndup(f_env.v[i], eq ? (size_t)(eq - f_env.v[i]) : strlen(f_env.v[i]));
    vars[i].name = names[i];
    vars[i].source_case = MESETA__V1__ENVIRONMENT__VARIABLE__SOURCE_VALUE;
    vars[i].value = (char *)(eq ? eq + 1 : "");
    vp[i] = &vars[i];
  }
  env.n_variables = f_env.n;
  env.variables = vp;
  cmd.environment = f_env.n ? &env : NULL;

  Meseta__V1__TaskInfo__LimitsEntry le[2];
  Meseta__V1__Limit lv[2];
  Meseta__V1__TaskInfo__LimitsEntry *lp[2];
  size_t nl = 0;
  int rc = 0;
  if (f_limit_cpus && (rc = add_limit(&le[nl], &lv[nl], "cpus", f_limit_cpus, err)) == 0)
    lp[nl] = &le[nl], nl++;
  if (rc == 0 && f_limit_mem && (rc = add_limit(&le[nl], &lv[nl], "mem", f_limit_mem, err)) == 0)
    lp[nl] = &le[nl], nl++;

  const char *base = f_shell ? "sh" : strrchr(pos[0], '/') ? strrchr(pos[0], '/') + 1 : pos[0];
  Meseta__V1__TaskInfo t = MESETA__V1__TASK_INFO__INIT;
  t.name = f_name ? f_name : (char *)base;
  t.task_id = &tid;
  t.agent_id = offer->agent_id;
  t.n_resources = rp->n_resources;
  t.resources = rp->resources;
  t.command = &cmd;
  t.n_limits = nl;
  t.limits = lp;
  Meseta__V1__TaskInfo *tis[] = {&t};
  Meseta__V1__Offer__Operation__Launch l = MESETA__V1__OFFER__OPERATION__LAUNCH__INIT;
  l.n_task_infos = 1;
  l.task_infos = tis;
  Meseta__V1__Offer__Operation op = MESETA__V1__OFFER__OPERATION__INIT;
  op.operation_case = MESETA__V1__OFFER__OPERATION__OPERATION_LAUNCH;
  op.launch = &l;
  Meseta__V1__Offer__Operation *ops[] = {&op};
  Meseta__V1__OfferID *oids[] = {offer->id};
  Meseta__V1__AcceptRequest a = MESETA__V1__ACCEPT_REQUEST__INIT;
  a.n_offer_ids = 1;
  a.offer_ids = oids;
  a.n_operations = 1;
  a.operations = ops;
  if (rc == 0)
    rc = sched_call(r, "Accept", &a.base, &meseta__v1__accept_response__descriptor, err);
  for (size_t i = 0; i < f_env.n; i++)
    free(names[i]);
  free(names);
  free(vp);
  free(vars);
  ms_resources_proto_free(rp);
  return rc;
}

static void decline(run *r, Meseta__V1__OfferID *id, int64_t refuse_ms) {
  Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
  d.seconds = refuse_ms / 1000;
  d.nanos = (int32_t)(refuse_ms % 1000) * 1000000;
  Meseta__V1__Filters f = MESETA__V1__FILTERS__INIT;
  f.refuse_duration = &d;
  Meseta__V1__OfferID *ids[] = {id};
  Meseta__V1__DeclineRequest req = MESETA__V1__DECLINE_REQUEST__INIT;
  req.n_offer_ids = 1;
  req.offer_ids = ids;
  req.filters = &f;
  ms_error *err = NULL;
  if (sched_call(r, "Decline", &req.base, &meseta__v1__decline_response__descriptor, &err) < 0)
    ms_error_free(err); /* the offer comes back later anyway */
}

static bool fits(const Meseta__V1__Offer *offer, const ms_resources *want) {
  ms_resources *have = NULL;
  if (ms_resources_from_proto(offer->resources, offer->n_resources, &have, NULL) < 0)
    return false;
  ms_resources *w = ms_resources_clone(want);
  const char *role =
      offer->allocation_info && *offer->allocation_info->role ? offer->allocation_info->role : NULL;
  ms_resources_allocate(w, role, NULL);
  bool ok = ms_resources_contains(have, w);
  ms_resources_free(w);
  ms_resources_free(have);
  return ok;
}

/* A state after which no update comes for the task; UNKNOWN too (reconciliation says the
 * task does not exist). */
static bool terminal(Meseta__V1__TaskState s) {
  return ms_task_state_terminal(s) || s == MESETA__V1__TASK_STATE__TASK_UNKNOWN;
}

/* The exit code a task's last status means. */
static int exit_code(const run *r, const Meseta__V1__TaskStatus *st) {
  if (r->stop == STOP_TIMEOUT)
    return 124;
  if (r->stop == STOP_SIGNAL)
    return 128 + (int)got_signal;
  const Meseta__V1__ExitStatus *x = st->exit_status;
  if (x && x->how_case == MESETA__V1__EXIT_STATUS__HOW_CODE)
    return x->code;
  if (x && x->how_case == MESETA__V1__EXIT_STATUS__HOW_SIGNAL)
    return 128 + x->signal;
  switch (st->state) {
  case MESETA__V1__TASK_STATE__TASK_FINISHED:
    return 0;
  case MESETA__V1__TASK_STATE__TASK_FAILED:
    return 1;
  case MESETA__V1__TASK_STATE__TASK_KILLED:
    return 128 + SIGKILL;
  default:
    return CLI_EXIT_RUN_FAILED; /* it never ran, or is lost */
  }
}

/* Handles one status; *ret_done with the exit code when it is the last. */
static void on_update(run *r, const Meseta__V1__TaskStatus *st, bool *ret_done, int *ret_code) {
  if (!st || !st->task_id || strcmp(st->task_id->value, r->task_id) != 0)
    return;
  const char *msg = st->message && *st->message ? st->message : NULL;
  bool end = terminal(st->state);
  if (!f_quiet ||
      (end && st->state != MESETA__V1__TASK_STATE__TASK_FINISHED &&
       st->state != MESETA__V1__TASK_STATE__TASK_FAILED && st->state != MESETA__V1__TASK_STATE__TASK_KILLED))
    fprintf(stderr, "meseta: task %s: %s%s%s\n", r->task_id, ms_task_state_name(st->state), msg ? ": " : "",
            msg ? msg : "");
  if (st->uuid.len) {
    Meseta__V1__AcknowledgeRequest ack = MESETA__V1__ACKNOWLEDGE_REQUEST__INIT;
    ack.agent_id = st->agent_id;
    ack.task_id = st->task_id;
    ack.uuid = st->uuid;
    ms_error *err = NULL;
    if (sched_call(r, "Acknowledge", &ack.base, &meseta__v1__acknowledge_response__descriptor, &err) < 0) {
      fprintf(stderr, "meseta: run: acknowledge: %s\n", err->msg);
      ms_error_free(err);
    }
  }
  if (end) {
    *ret_done = true;
    *ret_code = exit_code(r, st);
  }
}

/* Reads events until the task ends; its exit code, or CLI_EXIT_RUN_FAILED. */
static int event_loop(run *r, const ms_resources *want, char **pos, int npos) {
  for (;;) {
    Meseta__V1__Event *ev = NULL;
    ms_error *err = NULL;
    int n = ms_rpc_stream_recv(r->stream, &meseta__v1__event__descriptor, (ProtobufCMessage **)&ev, &err);
    if (n <= 0) {
      pthread_mutex_lock(&r->mu);
      stop_why stop = r->stop;
      pthread_mutex_unlock(&r->mu);
      if (stop != STOP_NONE) {
        ms_error_free(err);
        fprintf(stderr, "meseta: run: %s before the task ended\n",
                stop == STOP_TIMEOUT ? "timed out" : "interrupted");
        return stop == STOP_TIMEOUT ? 124 : 128 + (int)got_signal;
      }
      if (err)
        fprintf(stderr, "meseta: run: the event stream failed: %s: %s\n", ms_status_name(err->code),
                err->msg);
      else
        fprintf(stderr, "meseta: run: the master ended the event stream\n");
      ms_error_free(err);
      return CLI_EXIT_RUN_FAILED;
    }
    bool done = false;
    int code = CLI_EXIT_RUN_FAILED;
    pthread_mutex_lock(&r->mu);
    switch (ev->event_case) {
    case MESETA__V1__EVENT__EVENT_OFFERS:
      for (size_t i = 0; i < ev->offers->n_offers; i++) {
        Meseta__V1__Offer *o = ev->offers->offers[i];
        if (r->launched || r->stop != STOP_NONE || !fits(o, want)) {
          decline(r, o->id, r->launched ? 3600 * 1000 : DECLINE_MS);
          continue;
        }
        if (launch(r, o, want, pos, npos, &err) < 0) {
          fprintf(stderr, "meseta: run: accept: %s: %s\n", ms_status_name(err->code), err->msg);
          done = err->code == MS_INVALID_ARGUMENT; /* the task as asked can never run */
          ms_error_free(err);
          if (done)
            break;
          continue;
        }
        r->agent_id = ms_xstrdup(o->agent_id->value);
        r->launched = true;
        note("task %s: launched on %s (agent %s)", r->task_id, o->hostname, r->agent_id);
      }
      break;
    case MESETA__V1__EVENT__EVENT_UPDATE:
      on_update(r, ev->update->status, &done, &code);
      break;
    case MESETA__V1__EVENT__EVENT_ERROR:
      fprintf(stderr, "meseta: run: the master: %s\n", ev->error->message);
      done = true;
      break;
    default:
      break;
    }
    pthread_mutex_unlock(&r->mu);
    protobuf_c_message_free_unpacked(&ev->base, NULL);
    if (done)
      return code;
  }
}

static int subscribe(run *r, ms_error **err) {
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  const char *user = f_user;
  struct passwd *pw = user ? NULL : getpwuid(geteuid());
  if (!user)
    user = pw ? pw->pw_name : "nobody";
  char *roles[] = {f_role};
  Meseta__V1__FrameworkInfo__Capability cap = MESETA__V1__FRAMEWORK_INFO__CAPABILITY__INIT;
  cap.type = MESETA__V1__FRAMEWORK_INFO__CAPABILITY__TYPE__TASK_KILLING_STATE;
  Meseta__V1__FrameworkInfo__Capability *caps[] = {&cap};
  Meseta__V1__FrameworkInfo info = MESETA__V1__FRAMEWORK_INFO__INIT;
  info.name = "meseta-run";
  info.user = (char *)user;
  info.hostname = host;
  info.n_roles = 1;
  info.roles = roles;
  info.n_capabilities = 1;
  info.capabilities = caps;
  Meseta__V1__SubscribeRequest req = MESETA__V1__SUBSCRIBE_REQUEST__INIT;
  req.framework_info = &info;
  /* The stream has no deadline: wait for the connection first, bounded by --call-timeout
   * (a slow handshake is waited for, an absent master is not waited for forever). */
  ms_rpc_channel *ch = cli_master(r->c, err);
  ms_rpc_call_options o = {.metadata = r->c->md, .wait_for_ready = true};
  if (!ch || ms_rpc_channel_wait_ready(ch, r->c->timeout_ns / 1000000, err) < 0 ||
      !(r->stream = ms_rpc_stream_open(ch, "/meseta.v1.Scheduler/Subscribe", &req.base, &o, err)))
    return MS_ERR;
  Meseta__V1__Event *ev = NULL;
  int n = ms_rpc_stream_recv(r->stream, &meseta__v1__event__descriptor, (ProtobufCMessage **)&ev, err);
  if (n == 0)
    return ms_error_set(err, MS_UNAVAILABLE, "the stream ended before SUBSCRIBED");
  if (n < 0)
    return MS_ERR;
  int rc = 0;
  if (ev->event_case != MESETA__V1__EVENT__EVENT_SUBSCRIBED || !ev->subscribed->framework_id)
    rc = ms_error_set(err, MS_INTERNAL, "the first event is not SUBSCRIBED");
  else {
    r->fw_id = ms_xstrdup(ev->subscribed->framework_id->value);
    r->stream_id = ms_xstrdup(ev->subscribed->stream_id);
  }
  protobuf_c_message_free_unpacked(&ev->base, NULL);
  return rc;
}

static int run_task(cli *c, char **pos, int npos) {
  if (f_shell && npos)
    return cli_usage_error("run: give either --shell CMD or a command after `--`, not both");
  if (!f_shell && !npos)
    return cli_usage_error("run: a command is needed: `meseta run [flags] -- CMD [ARGS]...` or --shell CMD");
  for (size_t i = 0; i < f_env.n; i++)
    if (f_env.v[i][0] == '=' || !strchr(f_env.v[i], '='))
      return cli_usage_error("run: flag `--env`: `%s` is not NAME=VALUE", f_env.v[i]);
  double q;
  ms_error *err = NULL;
  if (cli_parse_quantity("cpus", f_cpus, &q, &err) < 0 || cli_parse_quantity("mem", f_mem, &q, &err) < 0 ||
      (f_disk && cli_parse_quantity("disk", f_disk, &q, &err) < 0)) {
    int rc = cli_usage_error("run: %s", err->msg);
    ms_error_free(err);
    return rc;
  }
  double cpus, mem, disk = 0;
  cli_parse_quantity("cpus", f_cpus, &cpus, NULL);
  cli_parse_quantity("mem", f_mem, &mem, NULL);
  if (f_disk)
    cli_parse_quantity("disk", f_disk, &disk, NULL);
  want_values[0] = cpus;
  want_values[1] = mem;
  want_values[2] = disk;
  n_want = f_disk ? 3 : 2;
  char text[256];
  snprintf(text, sizeof(text), "cpus:%.3f;mem:%.3f%s", cpus, mem, f_disk ? "" : "");
  if (f_disk)
    snprintf(text + strlen(text), sizeof(text) - strlen(text), ";disk:%.3f", disk);
  ms_resources *want = NULL;
  if (ms_resources_parse_text(text, NULL, &want, &err) < 0) {
    int rc = cli_usage_error("run: resources `%s`: %s", text, err->msg);
    ms_error_free(err);
    return rc;
  }

  run r = {.c = c};
  pthread_mutex_init(&r.mu, NULL);
  uint8_t rnd[6] = {0};
  if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
    memcpy(rnd, &(int64_t){now_ms() ^ getpid()}, sizeof(rnd));
  snprintf(r.task_id, sizeof(r.task_id), "run-%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3],
           rnd[4], rnd[5]);
  r.deadline_ms = f_timeout > 0 ? now_ms() + f_timeout / 1000000 : 0;
  struct sigaction sa = {.sa_handler = on_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  int code = CLI_EXIT_RUN_FAILED;
  pthread_t th;
  bool side_started = false;
  if (subscribe(&r, &err) < 0) {
    fprintf(stderr, "meseta: run: subscribe: %s: %s (master %s)\n", ms_status_name(err->code), err->msg,
            c->master);
    ms_error_free(err);
  } else if (pthread_create(&th, NULL, side, &r) != 0) {
    fprintf(stderr, "meseta: run: cannot start a thread\n");
  } else {
    side_started = true;
    code = event_loop(&r, want, pos, npos);
  }
  pthread_mutex_lock(&r.mu);
  r.ended = true;
  pthread_mutex_unlock(&r.mu);
  if (side_started)
    pthread_join(th, NULL);
  if (r.launched) {
    copy_output(&r, true);
    if (r.agent_err)
      fprintf(stderr, "meseta: run: cannot read the task's output from agent %s (%s): %s\n", r.agent_id,
              r.agent_addr ? r.agent_addr : "address unknown", r.agent_err->msg);
  }
  if (r.fw_id) {
    Meseta__V1__TeardownRequest td = MESETA__V1__TEARDOWN_REQUEST__INIT;
    if (sched_call(&r, "Teardown", &td.base, &meseta__v1__teardown_response__descriptor, &err) < 0) {
      if (err->code != MS_FAILED_PRECONDITION && err->code != MS_NOT_FOUND) /* stream already gone */
        fprintf(stderr, "meseta: run: teardown of framework %s: %s\n", r.fw_id, err->msg);
      ms_error_free(err);
    }
  }
  ms_rpc_stream_free(r.stream);
  ms_rpc_channel_free(r.agent);
  ms_error_free(r.agent_err);
  free(r.agent_addr);
  free(r.agent_id);
  free(r.fw_id);
  free(r.stream_id);
  ms_resources_free(want);
  pthread_mutex_destroy(&r.mu);
  return code;
}

int cli_cmd_run(cli *c, int argc, char **argv) {
  ms_flag_spec spec = {"meseta run",
                       "Runs a command as a task, prints its output and exits with its exit code "
                       "(124: --timeout; 125: meseta failed).",
                       flags, MS_ARRAY_SIZE(flags), "-- CMD [ARGS]..."};
  char **pos;
  int npos;
  int rc = cli_args(c, &spec, argc, argv, 0, -1, &pos, &npos);
  if (rc < 0)
    rc = run_task(c, pos, npos);
  cli_args_free(&spec);
  return rc;
}
