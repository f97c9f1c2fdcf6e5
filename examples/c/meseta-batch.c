/* meseta-batch: a small batch framework in C, on libmeseta's gRPC client (meseta/rpc.h).
 *
 *   meseta-batch --master 127.0.0.1:5050 --tasks 100 --cmd 'true' --cpus 0.1 --mem 32
 *
 * It subscribes through meseta.v1.Scheduler (served by meseta-master-api) and reacts to
 * the events of its stream:
 *
 *   SUBSCRIBED  keep framework_id and stream_id: every other call names both
 *   OFFERS      pack as many pending tasks as fit into each offer (one Accept with a
 *               LAUNCH per offer); decline offers too small for one; once every task is
 *               launched, Suppress (no more offers)
 *   UPDATE      acknowledge it when it carries a uuid (else the agent sends it again, and
 *               the task's later updates wait behind it); count each task's terminal
 *               state once, by task id. The same terminal update seen again (a resend)
 *               is fine; a different terminal state for a task that already ended is an
 *               error, reported
 *   ERROR       the control plane ended the stream for good
 *
 * Failed, lost or dropped tasks are reported, not retried. When every task has ended it
 * tears the framework down (unless --no-teardown) and prints one line:
 *
 *   summary: launched=N finished=N failed=N errors=N seconds=S tasks/s=R
 *
 * (seconds: from SUBSCRIBED to the last terminal update; tasks/s: finished / seconds).
 * Exit status: 0 when every task FINISHED, 1 otherwise (a task did not finish, an error,
 * a refused call, a broken stream, --timeout, a signal), 2 on bad usage.
 *
 * Threads: the main thread reads the stream and makes Accept / Decline / Suppress calls;
 * --ack-threads threads make the Acknowledge calls from a queue, so that a round trip per
 * update does not hold the stream; a signal thread cancels the stream on SIGINT/SIGTERM. */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/flags.h"
#include "meseta/rpc.h"
#include "meseta/task-state.h"
#include "meseta/time.h"
#include "meseta/v1/scheduler.pb-c.h"

#define CALL_TIMEOUT_MS 30000

static char *f_master, *f_cmd, *f_role, *f_name;
static int64_t f_tasks, f_ack_threads, f_timeout, f_failover_timeout;
static double f_cpus, f_mem;
static bool f_verbose, f_no_teardown;

static const ms_flag flags[] = {
    {"master", MS_FLAG_STRING, &f_master, NULL, "meseta-master-api address", "HOST:PORT", true},
    {"tasks", MS_FLAG_INT, &f_tasks, "10", "How many tasks to run", "N"},
    {"cmd", MS_FLAG_STRING, &f_cmd, "true", "Each task's command (run with /bin/sh -c)", "CMD"},
    {"cpus", MS_FLAG_DOUBLE, &f_cpus, "0.1", "Cpus per task", "N"},
    {"mem", MS_FLAG_DOUBLE, &f_mem, "32", "Memory per task (MiB)", "MIB"},
    {"role", MS_FLAG_STRING, &f_role, "*", "Role to take resources as", "ROLE"},
    {"name", MS_FLAG_STRING, &f_name, "meseta-batch", "Framework name, and the prefix of task ids", "NAME"},
    {"ack-threads", MS_FLAG_INT, &f_ack_threads, "4", "Threads making Acknowledge calls", "N"},
    {"timeout", MS_FLAG_DURATION, &f_timeout, "0s", "Give up after this long (0: never)"},
    {"verbose", MS_FLAG_BOOL, &f_verbose, "false", "Print every launch and status update"},
    {"failover-timeout", MS_FLAG_DURATION, &f_failover_timeout, "0s",
     "How long meseta keeps the framework after its stream is gone (FrameworkInfo.failover_timeout)"},
    {"no-teardown", MS_FLAG_BOOL, &f_no_teardown, "false",
     "Leave the framework registered at the end (removed after --failover-timeout), e.g. to read its "
     "tasks with the Operator API"},
};
static const ms_flag_spec spec = {"meseta-batch", "Runs N command tasks on a meseta cluster.", flags,
                                  MS_ARRAY_SIZE(flags), NULL};

/* An acknowledgement waiting for an ack thread; owns its strings. */
typedef struct ack {
  struct ack *next;
  char *agent_id, *task_id;
  ProtobufCBinaryData uuid;
} ack;

typedef struct batch {
  ms_rpc_channel *ch;
  ms_rpc_stream *stream;
  char *framework_id, *stream_id; /* from SUBSCRIBED */
  int64_t start_ms, end_ms;

  /* Tasks are <name>-<i>, i in [0, n); end[i] is the terminal state, 0 until then. */
  int64_t next; /* the next task to launch */
  Meseta__V1__TaskState *end;
  int64_t launched, ended, finished, failed, errors;
  bool suppressed;

  /* The ack queue, shared with the ack threads. */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  ack *head, *tail;
  int busy;     /* acks being sent */
  bool closing; /* the ack threads leave once the queue is empty */
  int64_t ack_failures;
} batch;

/* ---- scheduler calls ---- */

/* A unary Scheduler call; the response (always empty) is dropped. */
static int call(batch *b, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *resp, ms_error **err) {
  _cleanup_free_ char *path = ms_xasprintf("/meseta.v1.Scheduler/%s", method);
  ms_rpc_call_options co = {.timeout_ms = CALL_TIMEOUT_MS};
  ProtobufCMessage *out = NULL;
  if (ms_rpc_unary(b->ch, path, req, resp, &co, &out, err) < 0)
    return ms_error_prefix(err, "%s", method);
  protobuf_c_message_free_unpacked(out, NULL);
  return 0;
}

static void *ack_thread(void *arg) {
  batch *b = arg;
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = b->framework_id;
  pthread_mutex_lock(&b->mu);
  for (;;) {
    while (!b->head && !b->closing)
      pthread_cond_wait(&b->cv, &b->mu);
    ack *a = b->head;
    if (!a)
      break;
    b->head = a->next;
    if (!b->head)
      b->tail = NULL;
    b->busy++;
    pthread_mutex_unlock(&b->mu);

    Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
    aid.value = a->agent_id;
    Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
    tid.value = a->task_id;
    Meseta__V1__AcknowledgeRequest req = MESETA__V1__ACKNOWLEDGE_REQUEST__INIT;
    req.framework_id = &fid;
    req.stream_id = b->stream_id;
    req.agent_id = &aid;
    req.task_id = &tid;
    req.uuid = a->uuid;
    ms_error *err = NULL;
    int rc = call(b, "Acknowledge", &req.base, &meseta__v1__acknowledge_response__descriptor, &err);
    if (rc < 0) {
      fprintf(stderr, "error: task %s: %s\n", a->task_id, err->msg);
      ms_error_free(err);
    }
    free(a->agent_id);
    free(a->task_id);
    free(a->uuid.data);
    free(a);

    pthread_mutex_lock(&b->mu);
    b->busy--;
    if (rc < 0)
      b->ack_failures++;
    pthread_cond_broadcast(&b->cv); /* for ack_drain */
  }
  pthread_mutex_unlock(&b->mu);
  return NULL;
}

static void ack_queue(batch *b, const Meseta__V1__TaskStatus *st) {
  ack *a = ms_xcalloc(1, sizeof(*a));
  a->agent_id = ms_xstrdup(st->agent_id ? st->agent_id->value : "");
  a->task_id = ms_xstrdup(st->task_id->value);
  a->uuid.len = st->uuid.len;
  a->uuid.data = ms_xmalloc(st->uuid.len);
  memcpy(a->uuid.data, st->uuid.data, st->uuid.len);
  pthread_mutex_lock(&b->mu);
  if (b->tail)
    b->tail->next = a;
  else
    b->head = a;
  b->tail = a;
  pthread_cond_signal(&b->cv);
  pthread_mutex_unlock(&b->mu);
}

/* Waits until every queued acknowledgement has been sent. */
static void ack_drain(batch *b) {
  pthread_mutex_lock(&b->mu);
  while (b->head || b->busy)
    pthread_cond_wait(&b->cv, &b->mu);
  pthread_mutex_unlock(&b->mu);
}

/* ---- offers ---- */

/* The unreserved scalar `name` in the offer, in thousandths (meseta keeps three decimals). */
static int64_t offered(const Meseta__V1__Offer *o, const char *name) {
  int64_t sum = 0;
  for (size_t i = 0; i < o->n_resources; i++) {
    const Meseta__V1__Resource *r = o->resources[i];
    if (strcmp(r->name, name) == 0 && r->scalar && r->n_reservations == 0 && !r->disk && !r->revocable)
      sum += llround(r->scalar->value * 1000);
  }
  return sum;
}

static void scalar(Meseta__V1__Resource *r, Meseta__V1__Value__Scalar *v,
                   Meseta__V1__Resource__AllocationInfo *ai, const char *name, double value) {
  meseta__v1__resource__init(r);
  meseta__v1__value__scalar__init(v);
  v->value = value;
  r->name = (char *)name;
  r->type = MESETA__V1__VALUE__TYPE__SCALAR;
  r->scalar = v;
  r->allocation_info = ai;
}

/* Accepts `offer` with k pending tasks (ids next .. next+k-1). */
static int launch(batch *b, const Meseta__V1__Offer *offer, int64_t k, ms_error **err) {
  /* Offered resources carry the role they were allocated to; so must the tasks'. */
  Meseta__V1__Resource__AllocationInfo ai = MESETA__V1__RESOURCE__ALLOCATION_INFO__INIT;
  ai.role = offer->allocation_info ? offer->allocation_info->role : f_role;
  Meseta__V1__Resource cpus, mem;
  Meseta__V1__Value__Scalar vc, vm;
  scalar(&cpus, &vc, &ai, "cpus", f_cpus);
  scalar(&mem, &vm, &ai, "mem", f_mem);
  Meseta__V1__Resource *res[] = {&cpus, &mem};
  /* CommandInfo.shell absent means true: `value` runs with /bin/sh -c. */
  Meseta__V1__CommandInfo cmd = MESETA__V1__COMMAND_INFO__INIT;
  cmd.value = f_cmd;

  _cleanup_free_ Meseta__V1__TaskInfo *tasks = ms_xcalloc((size_t)k, sizeof(*tasks));
  _cleanup_free_ Meseta__V1__TaskInfo **ptrs = ms_xcalloc((size_t)k, sizeof(*ptrs));
  _cleanup_free_ Meseta__V1__TaskID *ids = ms_xcalloc((size_t)k, sizeof(*ids));
  char **names = ms_xcalloc((size_t)k, sizeof(*names));
  for (int64_t i = 0; i < k; i++) {
    names[i] = ms_xasprintf("%s-%" PRId64, f_name, b->next + i);
    meseta__v1__task_id__init(&ids[i]);
    ids[i].value = names[i];
    meseta__v1__task_info__init(&tasks[i]);
    tasks[i].name = names[i];
    tasks[i].task_id = &ids[i];
    tasks[i].agent_id = offer->agent_id;
    tasks[i].n_resources = MS_ARRAY_SIZE(res);
    tasks[i].resources = res;
    tasks[i].command = &cmd;
    ptrs[i] = &tasks[i];
  }
  Meseta__V1__Offer__Operation__Launch l = MESETA__V1__OFFER__OPERATION__LAUNCH__INIT;
  l.n_task_infos = (size_t)k;
  l.task_infos = ptrs;
  Meseta__V1__Offer__Operation op = MESETA__V1__OFFER__OPERATION__INIT;
  op.operation_case = MESETA__V1__OFFER__OPERATION__OPERATION_LAUNCH;
  op.launch = &l;
  Meseta__V1__Offer__Operation *ops[] = {&op};

  /* What is left of the offer goes back with a zero filter: it comes again as soon as
   * tasks end and make it big enough. */
  Google__Protobuf__Duration zero = GOOGLE__PROTOBUF__DURATION__INIT;
  Meseta__V1__Filters filters = MESETA__V1__FILTERS__INIT;
  filters.refuse_duration = &zero;
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = b->framework_id;
  Meseta__V1__AcceptRequest req = MESETA__V1__ACCEPT_REQUEST__INIT;
  req.framework_id = &fid;
  req.stream_id = b->stream_id;
  Meseta__V1__OfferID *offer_ids[] = {offer->id};
  req.n_offer_ids = 1;
  req.offer_ids = offer_ids;
  req.n_operations = 1;
  req.operations = ops;
  req.filters = &filters;
  int rc = call(b, "Accept", &req.base, &meseta__v1__accept_response__descriptor, err);
  if (rc == 0) {
    b->next += k;
    b->launched += k;
    if (f_verbose)
      printf("launched: %s .. %s on %s\n", names[0], names[k - 1], offer->hostname);
  }
  for (int64_t i = 0; i < k; i++)
    free(names[i]);
  free(names);
  return rc;
}

static int on_offers(batch *b, const Meseta__V1__Event__Offers *ev, ms_error **err) {
  int64_t need_cpus = llround(f_cpus * 1000), need_mem = llround(f_mem * 1000);
  _cleanup_free_ Meseta__V1__OfferID **unused = ms_xcalloc(ev->n_offers + 1, sizeof(*unused));
  size_t n_unused = 0;
  for (size_t i = 0; i < ev->n_offers; i++) {
    const Meseta__V1__Offer *o = ev->offers[i];
    int64_t cpus = offered(o, "cpus"), mem = offered(o, "mem"), k = 0;
    while (b->next + k < f_tasks && cpus >= need_cpus && mem >= need_mem) {
      cpus -= need_cpus;
      mem -= need_mem;
      k++;
    }
    if (k == 0) {
      unused[n_unused++] = o->id;
      continue;
    }
    ms_error *e = NULL;
    if (launch(b, o, k, &e) < 0) {
      /* An offer can go away under us (rescinded, agent lost): its tasks stay pending
       * for the next offer. A request we built wrong will not get better. */
      if (e->code == MS_INVALID_ARGUMENT) {
        *err = e;
        return MS_ERR;
      }
      fprintf(stderr, "warning: %s (the tasks wait for another offer)\n", e->msg);
      ms_error_free(e);
    }
  }
  if (n_unused > 0) {
    /* While tasks are pending, small offers may grow soon: no filter. Afterwards the
     * default filter (5 s) holds them until Suppress has taken effect. */
    Google__Protobuf__Duration zero = GOOGLE__PROTOBUF__DURATION__INIT;
    Meseta__V1__Filters filters = MESETA__V1__FILTERS__INIT;
    filters.refuse_duration = &zero;
    Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
    fid.value = b->framework_id;
    Meseta__V1__DeclineRequest req = MESETA__V1__DECLINE_REQUEST__INIT;
    req.framework_id = &fid;
    req.stream_id = b->stream_id;
    req.n_offer_ids = n_unused;
    req.offer_ids = unused;
    req.filters = b->next < f_tasks ? &filters : NULL;
    if (call(b, "Decline", &req.base, &meseta__v1__decline_response__descriptor, err) < 0)
      return MS_ERR;
  }
  if (b->next == f_tasks && !b->suppressed) {
    Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
    fid.value = b->framework_id;
    Meseta__V1__SuppressRequest req = MESETA__V1__SUPPRESS_REQUEST__INIT;
    req.framework_id = &fid;
    req.stream_id = b->stream_id;
    if (call(b, "Suppress", &req.base, &meseta__v1__suppress_response__descriptor, err) < 0)
      return MS_ERR;
    b->suppressed = true;
  }
  return 0;
}

/* ---- updates ---- */

/* The index of one of our task ids (<name>-<i>), -1 for anything else. */
static int64_t task_index(const char *id) {
  size_t n = strlen(f_name);
  if (strncmp(id, f_name, n) != 0 || id[n] != '-' || id[n + 1] < '0' || id[n + 1] > '9')
    return -1;
  char *end;
  long long i = strtoll(id + n + 1, &end, 10);
  return *end == '\0' && i < f_tasks ? i : -1;
}

static void on_update(batch *b, const Meseta__V1__TaskStatus *st) {
  const char *id = st->task_id && st->task_id->value ? st->task_id->value : "";
  if (f_verbose)
    printf("task %s: %s%s%s\n", id, ms_task_state_name(st->state), st->message && *st->message ? ": " : "",
           st->message ? st->message : "");
  if (st->uuid.len > 0)
    ack_queue(b, st);
  int64_t i = task_index(id);
  if (i < 0) {
    fprintf(stderr, "error: update for a task that is not ours: `%s`\n", id);
    b->errors++;
    return;
  }
  if (!ms_task_state_terminal(st->state))
    return;
  if (b->end[i] != 0) {
    if (b->end[i] != st->state) {
      fprintf(stderr, "error: task %s ended twice: %s, then %s\n", id, ms_task_state_name(b->end[i]),
              ms_task_state_name(st->state));
      b->errors++;
    }
    return; /* the same terminal update again (a resend): counted already */
  }
  b->end[i] = st->state;
  b->ended++;
  b->end_ms = ms_time_mono_ms();
  if (st->state == MESETA__V1__TASK_STATE__TASK_FINISHED) {
    b->finished++;
  } else {
    b->failed++;
    fprintf(stderr, "failed: task %s: %s: %s\n", id, ms_task_state_name(st->state),
            st->message && *st->message ? st->message : "(no message)");
  }
}

/* ---- the stream ---- */

static int subscribe(batch *b, ms_error **err) {
  const char *user = getenv("USER");
  struct passwd *pw = getpwuid(getuid());
  Meseta__V1__FrameworkInfo info = MESETA__V1__FRAMEWORK_INFO__INIT;
  info.user = pw ? pw->pw_name : user ? (char *)user : "root";
  info.name = f_name;
  info.n_roles = 1;
  info.roles = &f_role;
  Google__Protobuf__Duration failover = GOOGLE__PROTOBUF__DURATION__INIT;
  if (f_failover_timeout > 0) {
    failover.seconds = f_failover_timeout / MS_NSEC_PER_SEC;
    failover.nanos = (int32_t)(f_failover_timeout % MS_NSEC_PER_SEC);
    info.failover_timeout = &failover;
  }
  Meseta__V1__SubscribeRequest req = MESETA__V1__SUBSCRIBE_REQUEST__INIT;
  req.framework_info = &info;
  ms_rpc_call_options co = {.timeout_ms = f_timeout / MS_NSEC_PER_MSEC};
  b->stream = ms_rpc_stream_open(b->ch, "/meseta.v1.Scheduler/Subscribe", &req.base, &co, err);
  return b->stream ? 0 : ms_error_prefix(err, "Subscribe");
}

/* Reads events until every task has ended. */
static int run(batch *b, ms_error **err) {
  pthread_t *ackers = ms_xcalloc((size_t)f_ack_threads, sizeof(*ackers));
  int n_ackers = 0, rc = 0;
  while (rc == 0 && b->ended < f_tasks) {
    Meseta__V1__Event *ev = NULL;
    int r = ms_rpc_stream_recv(b->stream, &meseta__v1__event__descriptor, (ProtobufCMessage **)&ev, err);
    if (r <= 0) {
      if (r < 0 && (*err)->code == MS_DEADLINE_EXCEEDED && f_timeout > 0)
        rc = ms_error_prefix(err, "--timeout reached with %" PRId64 " of %" PRId64 " tasks ended", b->ended,
                             f_tasks);
      else
        rc = r < 0 ? ms_error_prefix(err, "the event stream broke")
                   : ms_error_set(err, MS_UNAVAILABLE, "the event stream ended");
      break;
    }
    switch (ev->event_case) {
    case MESETA__V1__EVENT__EVENT_SUBSCRIBED:
      b->framework_id = ms_xstrdup(ev->subscribed->framework_id->value);
      b->stream_id = ms_xstrdup(ev->subscribed->stream_id);
      b->start_ms = b->end_ms = ms_time_mono_ms();
      printf("subscribed: framework_id=%s stream_id=%s\n", b->framework_id, b->stream_id);
      fflush(stdout);
      while (n_ackers < f_ack_threads && pthread_create(&ackers[n_ackers], NULL, ack_thread, b) == 0)
        n_ackers++;
      break;
    case MESETA__V1__EVENT__EVENT_OFFERS:
      rc = on_offers(b, ev->offers, err);
      break;
    case MESETA__V1__EVENT__EVENT_UPDATE:
      if (ev->update->status)
        on_update(b, ev->update->status);
      break;
    case MESETA__V1__EVENT__EVENT_ERROR:
      rc = ms_error_set(err, MS_ABORTED, "the control plane ended the stream: %s", ev->error->message);
      break;
    default: /* heartbeat, rescind (offers are used at once), failure: their tasks get updates */
      break;
    }
    protobuf_c_message_free_unpacked(&ev->base, NULL);
  }
  /* Acknowledge what came, then let the ack threads go. */
  ack_drain(b);
  pthread_mutex_lock(&b->mu);
  b->closing = true;
  pthread_cond_broadcast(&b->cv);
  pthread_mutex_unlock(&b->mu);
  for (int i = 0; i < n_ackers; i++)
    pthread_join(ackers[i], NULL);
  free(ackers);
  return rc;
}

static int teardown(batch *b, ms_error **err) {
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = b->framework_id;
  Meseta__V1__TeardownRequest req = MESETA__V1__TEARDOWN_REQUEST__INIT;
  req.framework_id = &fid;
  req.stream_id = b->stream_id;
  return call(b, "Teardown", &req.base, &meseta__v1__teardown_response__descriptor, err);
}

/* SIGINT and SIGTERM, blocked in every thread, arrive here and cancel the stream: run()
 * then returns. SIGUSR1 is main() telling this thread to leave. */
static void blocked_signals(sigset_t *set) {
  sigemptyset(set);
  sigaddset(set, SIGINT);
  sigaddset(set, SIGTERM);
  sigaddset(set, SIGUSR1);
}

static void *signal_thread(void *arg) {
  batch *b = arg;
  sigset_t set;
  blocked_signals(&set);
  int sig;
  if (sigwait(&set, &sig) == 0 && sig != SIGUSR1) {
    fprintf(stderr, "meseta-batch: %s: stopping\n", strsignal(sig));
    ms_rpc_stream_cancel(b->stream);
  }
  return NULL;
}

int main(int argc, char **argv) {
  ms_error *err = NULL;
  int r = ms_flags_parse(&spec, argc, argv, NULL, &err);
  if (r == 0 && (f_tasks < 1 || f_cpus <= 0 || f_mem <= 0 || f_ack_threads < 1 || f_timeout < 0))
    r = ms_error_set(&err, MS_INVALID_ARGUMENT, "--tasks, --cpus, --mem and --ack-threads must be above 0");
  if (r != 0) {
    if (r < 0)
      fprintf(stderr, "meseta-batch: %s\n", err->msg);
    ms_error_free(err);
    ms_flags_free(&spec);
    return r < 0 ? 2 : 0;
  }

  batch b = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  b.end = ms_xcalloc((size_t)f_tasks, sizeof(*b.end));
  sigset_t set;
  blocked_signals(&set);
  pthread_sigmask(SIG_BLOCK, &set, NULL);

  int rc = MS_ERR;
  b.ch = ms_rpc_channel_new(f_master, NULL, &err);
  if (b.ch && subscribe(&b, &err) == 0) {
    pthread_t sig_thread;
    pthread_create(&sig_thread, NULL, signal_thread, &b);
    rc = run(&b, &err);
    if (b.framework_id && !f_no_teardown) {
      /* Teardown names the stream, so it goes before the stream is closed. */
      ms_error *e = NULL;
      if (teardown(&b, &e) < 0) {
        fprintf(stderr, "meseta-batch: %s\n", e->msg);
        ms_error_free(e);
      }
    }
    pthread_kill(sig_thread, SIGUSR1);
    pthread_join(sig_thread, NULL);
    ms_rpc_stream_free(b.stream);
  }
  if (rc < 0)
    fprintf(stderr, "meseta-batch: %s\n", err->msg);

  double secs = (double)(b.end_ms - b.start_ms) / 1000.0;
  printf("summary: launched=%" PRId64 " finished=%" PRId64 " failed=%" PRId64 " errors=%" PRId64
         " seconds=%.2f tasks/s=%.1f\n",
         b.launched, b.finished, b.failed, b.errors + b.ack_failures, secs,
         secs > 0 ? b.finished / secs : 0.0);
  bool ok = rc == 0 && b.finished == f_tasks && b.errors == 0 && b.ack_failures == 0;

  ms_error_free(err);
  free(b.framework_id);
  free(b.stream_id);
  free(b.end);
  ms_rpc_channel_free(b.ch);
  ms_flags_free(&spec);
  return ok ? 0 : 1;
}
