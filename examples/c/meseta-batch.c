/* meseta-batch: a small batch framework in C, on libmeseta's gRPC client (meseta/rpc.h).
 *
 *   meseta-batch --master 127.0.0.1:5050,127.0.0.1:6050 --tasks 100 --cmd 'true' --cpus 0.1 --mem 32
 *
 * It subscribes through meseta.v1.Scheduler (served by meseta-master-api) and reacts to
 * the events of its stream:
 *
 *   SUBSCRIBED  keep framework_id and stream_id: every other call names both
 *   OFFERS      pack as many pending tasks as fit into each offer (one Accept with a
 *               LAUNCH per offer); decline offers too small for one; once no task is
 *               pending, Suppress (no more offers)
 *   UPDATE      acknowledge it when it carries a uuid (else the agent sends it again, and
 *               the task's later updates wait behind it); count each task's terminal
 *               state once, by task id. The same terminal update seen again (a resend)
 *               is fine; a different terminal state for a task that already ended is an
 *               error, reported
 *   ERROR       the control plane ended the stream for good
 *
 * Failover: when the stream to a master-api breaks (the replica died, UNAVAILABLE; also
 * before the first SUBSCRIBED, e.g. an allocator that just lost the lead), it
 * subscribes again through the next --master address (backoff 100 ms doubling to 5 s,
 * for at most --failover-timeout) with its framework id, then reconciles: explicitly the
 * tasks it launched and has not seen end, and implicitly. A task whose Accept got no
 * answer (the connection broke) is "uncertain" until reconciliation says: TASK_UNKNOWN
 * launches it again, any other state adopts it. A launched task answered TASK_UNKNOWN is
 * waited for (its agent resends its updates). --framework-id resumes a framework another
 * run left (every task uncertain at first). The failover timeout defaults to 1 hour.
 *
 * A stream master-api moved to a new leader stays the same stream: no SUBSCRIBED comes,
 * yet an Accept refused meanwhile (UNAVAILABLE: the allocator was losing or taking the
 * lead) leaves its tasks uncertain, and a Revive may have failed. So on every event,
 * heartbeats included, tasks uncertain for RECONCILE_AFTER_MS are reconciled again and a
 * Revive still owed is sent again.
 *
 * Failed, lost or dropped tasks are reported, not retried. When every task has ended it
 * tears the framework down (unless --no-teardown) and prints one line:
 *
 *   summary: launched=N finished=N failed=N errors=N seconds=S tasks/s=R
 *
 * (seconds: from SUBSCRIBED to the last terminal update; tasks/s: finished / seconds;
 * launched counts Accepts that succeeded, a relaunch after TASK_UNKNOWN included).
 * Exit status: 0 when every task FINISHED, 1 otherwise (a task did not finish, an error,
 * a refused call, a stream not replaced within --failover-timeout, --timeout, a signal),
 * 2 on bad usage.
 *
 * Threads: the main thread reads the stream and makes Accept / Decline / Suppress calls;
 * --ack-threads threads make the Acknowledge calls from a queue, so that a round trip per
 * update does not hold the stream; a signal thread cancels the stream on SIGINT/SIGTERM.
 * `mu` guards what they share: the queue, the current channel and stream id, the stream. */
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
#define CONNECT_TIMEOUT_MS 10000 /* to wait for a master-api's connection before Subscribe */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define RECONCILE_CHUNK 1000
/* Uncertain tasks are reconciled again once this long has passed since the last became
 * uncertain and since the last reconcile: by then their Accept is answered or dropped
 * everywhere, so TASK_UNKNOWN cannot overtake it. */
#define RECONCILE_AFTER_MS 5000
#define MAX_MASTERS 16

static char *f_cmd, *f_role, *f_name, *f_framework_id;
static ms_strv f_master;
static int64_t f_tasks, f_ack_threads, f_timeout, f_failover_timeout;
static double f_cpus, f_mem;
static bool f_verbose, f_no_teardown;

static const ms_flag flags[] = {
    {"master", MS_FLAG_LIST, &f_master, NULL,
     "meseta-master-api addresses (comma-separated or repeated): the next is used when one fails",
     "HOST:PORT", true},
    {"tasks", MS_FLAG_INT, &f_tasks, "10", "How many tasks to run", "N"},
    {"cmd", MS_FLAG_STRING, &f_cmd, "true", "Each task's command (run with /bin/sh -c)", "CMD"},
    {"cpus", MS_FLAG_DOUBLE, &f_cpus, "0.1", "Cpus per task", "N"},
    {"mem", MS_FLAG_DOUBLE, &f_mem, "32", "Memory per task (MiB)", "MIB"},
    {"role", MS_FLAG_STRING, &f_role, "*", "Role to take resources as", "ROLE"},
    {"name", MS_FLAG_STRING, &f_name, "meseta-batch", "Framework name, and the prefix of task ids", "NAME"},
    {"ack-threads", MS_FLAG_INT, &f_ack_threads, "4", "Threads making Acknowledge calls", "N"},
    {"timeout", MS_FLAG_DURATION, &f_timeout, "0s", "Give up after this long (0: never)"},
    {"verbose", MS_FLAG_BOOL, &f_verbose, "false", "Print every launch and status update"},
    {"failover-timeout", MS_FLAG_DURATION, &f_failover_timeout, "1h",
     "How long meseta keeps the framework and its tasks while no stream is open "
     "(FrameworkInfo.failover_timeout); also how long a lost stream is retried"},
    {"framework-id", MS_FLAG_STRING, &f_framework_id, NULL,
     "Resume this framework (a run that died within its failover timeout): its tasks are reconciled, "
     "and only those the master does not know are launched",
     "ID"},
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

/* What the framework knows of task i. */
typedef enum task_st {
  T_PENDING,   /* to launch */
  T_UNCERTAIN, /* its Accept got no answer, or resumed: reconciliation tells */
  T_LAUNCHED,  /* accepted (or reconciled as known); its updates will come */
  T_ENDED,     /* a terminal state was seen */
} task_st;

typedef struct batch {
  ms_rpc_channel *chs[MAX_MASTERS]; /* one per --master address */
  size_t n_chs, cur;                /* cur: the address of the current stream */
  ms_rpc_stream *stream;
  char *framework_id, *stream_id; /* from SUBSCRIBED; stream_id changes on failover */
  int64_t start_ms, end_ms;

  /* Tasks are <name>-<i>, i in [0, n); end[i] is the terminal state, 0 until then. */
  task_st *st;
  char **agent; /* the agent each launched task went to (for reconciliation) */
  Meseta__V1__TaskState *end;
  int64_t pending, uncertain, cursor; /* cursor: where to look for pending tasks */
  int64_t launched, ended, finished, failed, errors, failovers;
  int64_t uncertain_ms, reconciled_ms; /* when a task last became uncertain; the last reconcile */
  bool suppressed, revive;

  /* Shared with the ack and signal threads, under mu. */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  ack *head, *tail;
  int busy;      /* acks being sent */
  bool closing;  /* the ack threads leave once the queue is empty */
  bool stopping; /* a signal came: no failover */
  int64_t ack_failures;
} batch;

/* ---- scheduler calls ---- */

/* A unary call on `ch` (NULL: the current master); the response (always empty) is dropped. */
static int call_on(batch *b, ms_rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *resp, ms_error **err) {
  if (!ch) {
    pthread_mutex_lock(&b->mu);
    ch = b->chs[b->cur];
    pthread_mutex_unlock(&b->mu);
  }
  _cleanup_free_ char *path = ms_xasprintf("/meseta.v1.Scheduler/%s", method);
  ms_rpc_call_options co = {.timeout_ms = CALL_TIMEOUT_MS};
  ProtobufCMessage *out = NULL;
  if (ms_rpc_unary(ch, path, req, resp, &co, &out, err) < 0)
    return ms_error_prefix(err, "%s", method);
  protobuf_c_message_free_unpacked(out, NULL);
  return 0;
}

static int call(batch *b, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *resp, ms_error **err) {
  return call_on(b, NULL, method, req, resp, err);
}

/* A failure the next stream makes good: the update comes again, the offer is gone, the
 * stream id went stale. */
static bool transient(ms_status code) {
  return code == MS_UNAVAILABLE || code == MS_DEADLINE_EXCEEDED || code == MS_CANCELLED ||
         code == MS_FAILED_PRECONDITION || code == MS_NOT_FOUND || code == MS_UNKNOWN || code == MS_INTERNAL;
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
    char *stream_id = ms_xstrdup(b->stream_id);
    ms_rpc_channel *ch = b->chs[b->cur];
    pthread_mutex_unlock(&b->mu);

    Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
    aid.value = a->agent_id;
    Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
    tid.value = a->task_id;
    Meseta__V1__AcknowledgeRequest req = MESETA__V1__ACKNOWLEDGE_REQUEST__INIT;
    req.framework_id = &fid;
    req.stream_id = stream_id;
    req.agent_id = &aid;
    req.task_id = &tid;
    req.uuid = a->uuid;
    ms_error *err = NULL;
    int rc = call_on(b, ch, "Acknowledge", &req.base, &meseta__v1__acknowledge_response__descriptor, &err);
    bool counts = false;
    if (rc < 0) {
      /* During a failover acks fail and the update simply comes again. */
      counts = !transient(err->code);
      fprintf(stderr, "%s: task %s: %s\n", counts ? "error" : "warning", a->task_id, err->msg);
      ms_error_free(err);
    }
    free(stream_id);
    free(a->agent_id);
    free(a->task_id);
    free(a->uuid.data);
    free(a);

    pthread_mutex_lock(&b->mu);
    b->busy--;
    if (counts)
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

/* The next k pending tasks (fewer if there are not so many) into idx; how many. */
static int64_t take_pending(batch *b, int64_t k, int64_t *idx) {
  int64_t n = 0;
  for (int64_t seen = 0; n < k && b->pending > 0 && seen < f_tasks; seen++) {
    int64_t i = b->cursor;
    b->cursor = (b->cursor + 1) % f_tasks;
    if (b->st[i] == T_PENDING)
      idx[n++] = i;
  }
  return n;
}

static void set_state(batch *b, int64_t i, task_st to) {
  if (b->st[i] == to)
    return;
  b->pending += (to == T_PENDING) - (b->st[i] == T_PENDING);
  b->uncertain += (to == T_UNCERTAIN) - (b->st[i] == T_UNCERTAIN);
  if (to == T_UNCERTAIN)
    b->uncertain_ms = ms_time_mono_ms();
  if (to == T_PENDING && b->cursor > i)
    b->cursor = i;
  b->st[i] = to;
}

/* Accepts `offer` with the k tasks idx[0..k). */
static int launch(batch *b, const Meseta__V1__Offer *offer, const int64_t *idx, int64_t k, ms_error **err) {
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
    names[i] = ms_xasprintf("%s-%" PRId64, f_name, idx[i]);
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
  /* No answer (the connection broke) may still mean the launch happened: uncertain
   * until reconciliation. A refusal means it did not: pending again. */
  bool maybe =
      rc < 0 && ((*err)->code == MS_UNAVAILABLE || (*err)->code == MS_DEADLINE_EXCEEDED ||
                 (*err)->code == MS_CANCELLED || (*err)->code == MS_UNKNOWN || (*err)->code == MS_INTERNAL);
  for (int64_t i = 0; i < k; i++) {
    if (rc == 0 || maybe) {
      free(b->agent[idx[i]]);
      b->agent[idx[i]] = ms_xstrdup(offer->agent_id->value);
    }
    set_state(b, idx[i], rc == 0 ? T_LAUNCHED : maybe ? T_UNCERTAIN : T_PENDING);
  }
  if (rc == 0) {
    b->launched += k;
    if (f_verbose)
      printf("launched: %s .. %s on %s\n", names[0], names[k - 1], offer->hostname);
  }
  for (int64_t i = 0; i < k; i++)
    free(names[i]);
  free(names);
  return rc;
}

/* Suppress once nothing is pending, Revive when tasks are pending again. */
static int suppress_or_revive(batch *b, ms_error **err) {
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = b->framework_id;
  if (b->pending == 0 && b->uncertain == 0 && !b->suppressed) {
    Meseta__V1__SuppressRequest req = MESETA__V1__SUPPRESS_REQUEST__INIT;
    req.framework_id = &fid;
    req.stream_id = b->stream_id;
    if (call(b, "Suppress", &req.base, &meseta__v1__suppress_response__descriptor, err) < 0)
      return MS_ERR;
    b->suppressed = true;
  } else if (b->pending > 0 && (b->suppressed || b->revive)) {
    Meseta__V1__ReviveRequest req = MESETA__V1__REVIVE_REQUEST__INIT;
    req.framework_id = &fid;
    req.stream_id = b->stream_id;
    if (call(b, "Revive", &req.base, &meseta__v1__revive_response__descriptor, err) < 0)
      return MS_ERR;
    b->suppressed = b->revive = false;
  }
  return 0;
}

static int on_offers(batch *b, const Meseta__V1__Event__Offers *ev, ms_error **err) {
  int64_t need_cpus = llround(f_cpus * 1000), need_mem = llround(f_mem * 1000);
  _cleanup_free_ Meseta__V1__OfferID **unused = ms_xcalloc(ev->n_offers + 1, sizeof(*unused));
  size_t n_unused = 0;
  for (size_t i = 0; i < ev->n_offers; i++) {
    const Meseta__V1__Offer *o = ev->offers[i];
    int64_t cpus = offered(o, "cpus"), mem = offered(o, "mem"), fit = 0;
    while (cpus >= need_cpus && mem >= need_mem && fit < f_tasks) {
      cpus -= need_cpus;
      mem -= need_mem;
      fit++;
    }
    _cleanup_free_ int64_t *idx = ms_xcalloc((size_t)fit + 1, sizeof(*idx));
    int64_t k = take_pending(b, fit, idx);
    if (k == 0) {
      unused[n_unused++] = o->id;
      continue;
    }
    ms_error *e = NULL;
    if (launch(b, o, idx, k, &e) < 0) {
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
    /* While tasks are pending (or may be), small offers may grow soon: a short filter.
     * Afterwards the default filter (5 s) holds them until Suppress has taken effect. */
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    d.seconds = b->uncertain > 0 ? 1 : 0;
    Meseta__V1__Filters filters = MESETA__V1__FILTERS__INIT;
    filters.refuse_duration = &d;
    Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
    fid.value = b->framework_id;
    Meseta__V1__DeclineRequest req = MESETA__V1__DECLINE_REQUEST__INIT;
    req.framework_id = &fid;
    req.stream_id = b->stream_id;
    req.n_offer_ids = n_unused;
    req.offer_ids = unused;
    req.filters = b->pending > 0 || b->uncertain > 0 ? &filters : NULL;
    if (call(b, "Decline", &req.base, &meseta__v1__decline_response__descriptor, err) < 0)
      return MS_ERR;
    b->revive = b->revive || b->uncertain > 0; /* their filters must not delay a relaunch */
  }
  return suppress_or_revive(b, err);
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
  if (st->state == MESETA__V1__TASK_STATE__TASK_UNKNOWN) {
    /* Reconciliation: the master does not know it. Never launched (an Accept lost with
     * its connection, or a resumed run's task): launch it. Launched: its agent still
     * owes its updates; wait for them. */
    if (b->st[i] == T_UNCERTAIN) {
      if (f_verbose)
        printf("task %s: not known to the master: launching it\n", id);
      set_state(b, i, T_PENDING);
      b->revive = true;
    }
    return;
  }
  if (!ms_task_state_terminal(st->state)) {
    if (b->st[i] == T_PENDING || b->st[i] == T_UNCERTAIN)
      set_state(b, i, T_LAUNCHED); /* the master knows it: it was launched */
    return;
  }
  set_state(b, i, T_ENDED);
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
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = b->framework_id ? b->framework_id : f_framework_id;
  if (fid.value)
    info.id = &fid; /* a failover: the same framework, its tasks kept */
  Google__Protobuf__Duration failover = GOOGLE__PROTOBUF__DURATION__INIT;
  if (f_failover_timeout > 0) {
    failover.seconds = f_failover_timeout / MS_NSEC_PER_SEC;
    failover.nanos = (int32_t)(f_failover_timeout % MS_NSEC_PER_SEC);
    info.failover_timeout = &failover;
  }
  Meseta__V1__SubscribeRequest req = MESETA__V1__SUBSCRIBE_REQUEST__INIT;
  req.framework_info = &info;
  ms_rpc_call_options co = {0};
  if (f_timeout > 0) {
    co.timeout_ms =
        (b->start_ms ? b->start_ms : ms_time_mono_ms()) + f_timeout / MS_NSEC_PER_MSEC - ms_time_mono_ms();
    if (co.timeout_ms <= 0)
      return ms_error_set(err, MS_DEADLINE_EXCEEDED, "--timeout reached");
  }
  pthread_mutex_lock(&b->mu);
  ms_rpc_channel *ch = b->chs[b->cur];
  pthread_mutex_unlock(&b->mu);
  /* A slow handshake (a loaded machine) is waited for, a dead address not for long. */
  co.wait_for_ready = true;
  ms_rpc_stream *st = NULL;
  if (ms_rpc_channel_wait_ready(ch, CONNECT_TIMEOUT_MS, err) == 0)
    st = ms_rpc_stream_open(ch, "/meseta.v1.Scheduler/Subscribe", &req.base, &co, err);
  if (!st)
    return ms_error_prefix(err, "Subscribe through %s", f_master.v[b->cur]);
  pthread_mutex_lock(&b->mu);
  ms_rpc_stream *old = b->stream;
  b->stream = st;
  if (b->stopping)
    ms_rpc_stream_cancel(st);
  pthread_mutex_unlock(&b->mu);
  ms_rpc_stream_free(old);
  return 0;
}

/* Reconciles after a (re)subscription: explicitly every task launched or uncertain and
 * not ended (in chunks), then implicitly (empty list). `uncertain_only`: explicitly the
 * uncertain tasks, nothing implicit. Answers come as UPDATE events. */
static int reconcile(batch *b, bool uncertain_only, ms_error **err) {
  b->reconciled_ms = ms_time_mono_ms();
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = b->framework_id;
  _cleanup_free_ Meseta__V1__ReconcileRequest__Task *tasks = ms_xcalloc(RECONCILE_CHUNK, sizeof(*tasks));
  _cleanup_free_ Meseta__V1__ReconcileRequest__Task **ptrs = ms_xcalloc(RECONCILE_CHUNK, sizeof(*ptrs));
  _cleanup_free_ Meseta__V1__TaskID *tids = ms_xcalloc(RECONCILE_CHUNK, sizeof(*tids));
  _cleanup_free_ Meseta__V1__AgentID *aids = ms_xcalloc(RECONCILE_CHUNK, sizeof(*aids));
  _cleanup_free_ char **names = ms_xcalloc(RECONCILE_CHUNK, sizeof(*names));
  int64_t i = 0, asked = 0;
  int rc = 0;
  for (bool implicit = false; rc == 0 && !implicit;) {
    size_t n = 0;
    for (; i < f_tasks && n < RECONCILE_CHUNK; i++) {
      if (b->st[i] != T_UNCERTAIN && (uncertain_only || b->st[i] != T_LAUNCHED))
        continue;
      names[n] = ms_xasprintf("%s-%" PRId64, f_name, i);
      meseta__v1__task_id__init(&tids[n]);
      tids[n].value = names[n];
      meseta__v1__agent_id__init(&aids[n]);
      aids[n].value = b->agent[i];
      meseta__v1__reconcile_request__task__init(&tasks[n]);
      tasks[n].task_id = &tids[n];
      tasks[n].agent_id = b->agent[i] ? &aids[n] : NULL;
      ptrs[n] = &tasks[n];
      n++;
    }
    implicit = n == 0;
    if (implicit && uncertain_only)
      break;
    Meseta__V1__ReconcileRequest req = MESETA__V1__RECONCILE_REQUEST__INIT;
    req.framework_id = &fid;
    req.stream_id = b->stream_id;
    req.n_tasks = n;
    req.tasks = ptrs;
    rc = call(b, "Reconcile", &req.base, &meseta__v1__reconcile_response__descriptor, err);
    asked += (int64_t)n;
    for (size_t k = 0; k < n; k++)
      free(names[k]);
  }
  if (rc == 0 && f_verbose)
    printf("reconcile: asked about %" PRId64 " tasks, and implicitly\n", asked);
  return rc;
}

/* Whether a broken stream is worth subscribing again for: the replica or the network
 * failed. The control plane refusing or ending the framework is final. */
static bool retryable(const ms_error *e) {
  return e && (e->code == MS_UNAVAILABLE || e->code == MS_UNKNOWN || e->code == MS_INTERNAL ||
               e->code == MS_CANCELLED || e->code == MS_DEADLINE_EXCEEDED);
}

static bool stopping(batch *b) {
  pthread_mutex_lock(&b->mu);
  bool stop = b->stopping;
  pthread_mutex_unlock(&b->mu);
  return stop;
}

/* Sleeps ms, or less when a signal asks to stop. */
static void pause_ms(batch *b, int64_t ms) {
  for (int64_t slept = 0; slept < ms && !stopping(b); slept += 50)
    ms_time_sleep_ms(50);
}

/* Opens a stream through each address in turn from `first`, once each. */
static int subscribe_from(batch *b, size_t first, ms_error **err) {
  for (size_t k = first; k < b->n_chs; k++) {
    pthread_mutex_lock(&b->mu);
    b->cur = k;
    pthread_mutex_unlock(&b->mu);
    ms_error_free(*err);
    *err = NULL;
    if (subscribe(b, err) == 0)
      return 0;
    if (k + 1 < b->n_chs)
      fprintf(stderr, "warning: %s\n", (*err)->msg);
  }
  return MS_ERR;
}

/* Opens a stream through the next addresses in turn, with backoff, until one opens, or
 * the master has dropped the framework (--failover-timeout since `lost_ms`), or a signal.
 * The stream's first event says whether the subscription took. */
static int failover(batch *b, const ms_error *why, int64_t lost_ms, int64_t *backoff, ms_error **err) {
  size_t from = b->cur;
  b->failovers++;
  for (;;) {
    pthread_mutex_lock(&b->mu);
    b->cur = (b->cur + 1) % b->n_chs;
    pthread_mutex_unlock(&b->mu);
    printf("failover: the stream through %s broke (%s: %s); subscribing again through %s\n", f_master.v[from],
           ms_status_name(why->code), why->msg, f_master.v[b->cur]);
    fflush(stdout);
    ms_error *e = NULL;
    if (subscribe(b, &e) == 0)
      return 0;
    bool timed_out = f_timeout > 0 && e->code == MS_DEADLINE_EXCEEDED; /* --timeout */
    if (!retryable(e) || timed_out || stopping(b) ||
        ms_time_mono_ms() - lost_ms > f_failover_timeout / MS_NSEC_PER_MSEC) {
      *err = e;
      return ms_error_prefix(err, "failover");
    }
    fprintf(stderr, "warning: %s (next try in %" PRId64 " ms)\n", e->msg, *backoff);
    ms_error_free(e);
    pause_ms(b, *backoff);
    *backoff = *backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *backoff * 2;
  }
}

/* Reads events until every task has ended, subscribing again when a stream breaks. */
static int run(batch *b, ms_error **err) {
  pthread_t *ackers = ms_xcalloc((size_t)f_ack_threads, sizeof(*ackers));
  int n_ackers = 0, rc = 0;
  int64_t backoff = BACKOFF_MIN_MS, lost_ms = 0; /* lost_ms: when the last stream broke */
  bool subscribed = false;                       /* on the current stream */
  while (rc == 0 && b->ended < f_tasks) {
    Meseta__V1__Event *ev = NULL;
    int r = ms_rpc_stream_recv(b->stream, &meseta__v1__event__descriptor, (ProtobufCMessage **)&ev, err);
    if (r <= 0) {
      bool stop = stopping(b);
      if (r < 0 && (*err)->code == MS_DEADLINE_EXCEEDED && f_timeout > 0) {
        rc = ms_error_prefix(err, "--timeout reached with %" PRId64 " of %" PRId64 " tasks ended", b->ended,
                             f_tasks);
      } else if (r < 0 && !stop && retryable(*err) &&
                 (!lost_ms || ms_time_mono_ms() - lost_ms < f_failover_timeout / MS_NSEC_PER_MSEC)) {
        /* Retried for as long as the master keeps the framework without a stream; a first
         * subscription too (a replica relaying to an allocator that just lost the lead
         * answers UNAVAILABLE: the next try finds the new leader). */
        ms_error *why = *err;
        *err = NULL;
        if (!lost_ms)
          lost_ms = ms_time_mono_ms();
        /* A stream that broke before its SUBSCRIBED: pause before the next. */
        if (!subscribed)
          pause_ms(b, backoff);
        backoff = subscribed ? BACKOFF_MIN_MS : (backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2);
        subscribed = false;
        rc = failover(b, why, lost_ms, &backoff, err);
        ms_error_free(why);
      } else {
        rc = r < 0 ? ms_error_prefix(err, "the event stream broke")
                   : ms_error_set(err, MS_UNAVAILABLE, "the event stream ended");
      }
      continue;
    }
    switch (ev->event_case) {
    case MESETA__V1__EVENT__EVENT_SUBSCRIBED: {
      bool again = b->framework_id != NULL;
      pthread_mutex_lock(&b->mu);
      if (!b->framework_id)
        b->framework_id = ms_xstrdup(ev->subscribed->framework_id->value);
      free(b->stream_id);
      b->stream_id = ms_xstrdup(ev->subscribed->stream_id);
      pthread_mutex_unlock(&b->mu);
      subscribed = true;
      lost_ms = 0;
      b->suppressed = false; /* a new subscription starts unsuppressed */
      if (!b->start_ms)
        b->start_ms = b->end_ms = ms_time_mono_ms();
      printf("%ssubscribed: framework_id=%s stream_id=%s through %s\n", again ? "re" : "", b->framework_id,
             b->stream_id, f_master.v[b->cur]);
      fflush(stdout);
      while (n_ackers < f_ack_threads && pthread_create(&ackers[n_ackers], NULL, ack_thread, b) == 0)
        n_ackers++;
      if (again || f_framework_id) {
        ms_error *e = NULL;
        if (reconcile(b, false, &e) < 0) { /* the stream breaking next says more */
          fprintf(stderr, "warning: %s\n", e->msg);
          ms_error_free(e);
        }
      }
      break;
    }
    case MESETA__V1__EVENT__EVENT_OFFERS:
      rc = on_offers(b, ev->offers, err);
      break;
    case MESETA__V1__EVENT__EVENT_UPDATE:
      if (ev->update->status)
        on_update(b, ev->update->status);
      break; /* a Revive it calls for is sent below */
    case MESETA__V1__EVENT__EVENT_ERROR:
      rc = ms_error_set(err, MS_ABORTED, "the control plane ended the stream: %s", ev->error->message);
      break;
    default: /* heartbeat, rescind (offers are used at once), failure: their tasks get updates */
      break;
    }
    /* The stream may have moved to a new leader unseen (see the top of this file). */
    int64_t now = ms_time_mono_ms();
    if (rc == 0 && b->uncertain > 0 && now - b->uncertain_ms >= RECONCILE_AFTER_MS &&
        now - b->reconciled_ms >= RECONCILE_AFTER_MS) {
      if (f_verbose)
        printf("reconcile: %" PRId64 " uncertain tasks again\n", b->uncertain);
      rc = reconcile(b, true, err);
    }
    if (rc == 0 && b->revive)
      rc = suppress_or_revive(b, err);
    if (rc < 0 && transient((*err)->code)) {
      /* A call failed as its replica went away: the stream breaks next, and failover
       * follows. Nothing was lost: tasks stayed pending or uncertain. */
      fprintf(stderr, "warning: %s\n", (*err)->msg);
      ms_error_free(*err);
      *err = NULL;
      rc = 0;
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
    pthread_mutex_lock(&b->mu);
    b->stopping = true;
    ms_rpc_stream_cancel(b->stream);
    pthread_mutex_unlock(&b->mu);
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
  b.st = ms_xcalloc((size_t)f_tasks, sizeof(*b.st));
  b.agent = ms_xcalloc((size_t)f_tasks, sizeof(*b.agent));
  /* A resumed framework may have launched any of them: reconciliation tells. */
  for (int64_t i = 0; i < f_tasks; i++)
    b.st[i] = f_framework_id ? T_UNCERTAIN : T_PENDING;
  b.pending = f_framework_id ? 0 : f_tasks;
  b.uncertain = f_framework_id ? f_tasks : 0;
  sigset_t set;
  blocked_signals(&set);
  pthread_sigmask(SIG_BLOCK, &set, NULL);

  int rc = MS_ERR;
  if (f_master.n > MAX_MASTERS)
    ms_error_set(&err, MS_INVALID_ARGUMENT, "--master: more than %d addresses", MAX_MASTERS);
  for (size_t i = 0; i < f_master.n && !err; i++)
    if (!(b.chs[b.n_chs++] = ms_rpc_channel_new(f_master.v[i], NULL, &err)))
      ms_error_prefix(&err, "--master `%s`", f_master.v[i]);
  if (!err && subscribe_from(&b, 0, &err) == 0) {
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
  if (rc < 0 && err)
    fprintf(stderr, "meseta-batch: %s\n", err->msg);

  double secs = (double)(b.end_ms - b.start_ms) / 1000.0;
  printf("summary: launched=%" PRId64 " finished=%" PRId64 " failed=%" PRId64 " errors=%" PRId64
         " seconds=%.2f tasks/s=%.1f\n",
         b.launched, b.finished, b.failed, b.errors + b.ack_failures, secs,
         secs > 0 ? b.finished / secs : 0.0);
  if (b.failovers)
    printf("failovers: %" PRId64 "\n", b.failovers);
  bool ok = rc == 0 && b.finished == f_tasks && b.errors == 0 && b.ack_failures == 0;

  ms_error_free(err);
  free(b.framework_id);
  free(b.stream_id);
  free(b.end);
  free(b.st);
  for (int64_t i = 0; i < f_tasks; i++)
    free(b.agent[i]);
  free(b.agent);
  for (size_t i = 0; i < b.n_chs; i++)
    ms_rpc_channel_free(b.chs[i]);
  ms_flags_free(&spec);
  return ok ? 0 : 1;
}
