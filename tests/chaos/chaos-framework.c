/* The chaos batch framework: N logical tasks on the public Scheduler API, following
 * Mesos' rules for a framework that must not lose work:
 *  - each launch is an attempt with its own task id "<name>-<i>.<k>";
 *  - a broken stream is subscribed again, on the next master-api replica, with the
 *    framework id (failover timeout 10 min), then every open attempt is reconciled;
 *  - an attempt without news for a while, or whose Accept failed, is reconciled;
 *  - an attempt the cluster calls UNKNOWN, DROPPED, LOST or GONE is relaunched as a new
 *    attempt (Mesos: it did not run, or is gone); FAILED, KILLED, ERROR end the task.
 * So a cluster that answers "unknown" for a task that did run makes it run twice: the
 * ledger shows it (chaos-verify.c).
 * Each task runs `echo "$MESETA_TASK_ID $MESETA_AGENT_ID" >> $MESETA_SANDBOX/ledger;
 * sleep S`: the sandbox is the only host directory a container can write (docs/runtime.md),
 * and it stays after the task. Two threads: the stream (events, offers, acks) and a
 * ticker (reconciliation). */
#include <CUnit/CUnit.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/rpc.h"
#include "meseta/task-state.h"
#include "meseta/time.h"
#include "meseta/v1/scheduler.pb-c.h"

#include "chaos.h"

#define CALL_MS 5000
#define QUIET_MS 4000     /* an open attempt without news this long is reconciled */
#define RECONCILE_MS 2000 /* at most one reconciliation this often */
#define TASK_CPUS 0.1
#define TASK_MEM 32.0
#define SUBSCRIBE_WAIT_MS 60000

enum { T_PENDING, T_LAUNCHED, T_FINISHED, T_FAILED };

typedef struct fw_attempt {
  chaos_attempt a;
  int64_t accept_ms, finish_ms, news_ms;
  bool accepting; /* its Accept is in flight: the cluster may not know it yet */
} fw_attempt;

struct chaos_fw {
  pthread_mutex_t mu;
  char **targets;
  ms_rpc_channel **chs;
  int n_targets, cur;
  char *name, *id, *stream_id, *cmd;
  int tasks, max_running;
  fw_attempt *att;
  size_t natt, capatt;
  int *cur_att, *next_k, *state;
  ms_rpc_stream *st;
  bool stop, connected, reconcile_all, paused;
  int64_t last_reconcile_ms;
  pthread_t rx, tick;
  uint64_t offers, launches, accept_failures, declines, relaunches, updates, subscriptions, reconciles,
      reconcile_failures, ack_failures, foreign, stale_answers;
};

static const char *fw_target(chaos_fw *f) {
  return f->targets[f->cur];
}

/* A unary Scheduler call on the current replica. */
static int sched_call(chaos_fw *f, const char *method, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp, ms_error **err) {
  pthread_mutex_lock(&f->mu);
  ms_rpc_channel *ch = f->chs[f->cur];
  pthread_mutex_unlock(&f->mu);
  _cleanup_free_ char *path = ms_xasprintf("/meseta.v1.Scheduler/%s", method);
  ms_rpc_call_options co = {.timeout_ms = CALL_MS};
  ProtobufCMessage *out = NULL;
  if (ms_rpc_unary(ch, path, req, resp, &co, &out, err) < 0)
    return MS_ERR;
  protobuf_c_message_free_unpacked(out, NULL);
  return 0;
}

/* The unreserved scalar `name` in the offer, in thousandths. */
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

/* A new attempt of task i on agent_id; the lock is held. Its index. */
static size_t new_attempt(chaos_fw *f, int i, const char *agent_id) {
  if (f->natt == f->capatt) {
    f->capatt = f->capatt ? 2 * f->capatt : 64;
    f->att = ms_xrealloc(f->att, f->capatt * sizeof(*f->att));
  }
  fw_attempt *t = &f->att[f->natt];
  *t = (fw_attempt){0};
  t->a.id = ms_xasprintf("%s-%d.%d", f->name, i, f->next_k[i]++);
  t->a.task = i;
  t->a.agent_id = ms_xstrdup(agent_id);
  f->cur_att[i] = (int)f->natt;
  f->state[i] = T_LAUNCHED;
  t->accepting = true;
  return f->natt++;
}

/* Launches up to what fits in the offer and the running budget; declines the offer
 * when nothing fits. */
static void use_offer(chaos_fw *f, const Meseta__V1__Offer *o) {
  int64_t cpus = offered(o, "cpus"), mem = offered(o, "mem");
  int64_t need_c = llround(TASK_CPUS * 1000), need_m = llround(TASK_MEM * 1000);
  size_t picked[64];
  size_t k = 0;
  pthread_mutex_lock(&f->mu);
  int running = 0;
  for (int i = 0; i < f->tasks; i++)
    running += f->state[i] == T_LAUNCHED;
  bool paused = f->paused;
  for (int i = 0; i < f->tasks && k < MS_ARRAY_SIZE(picked) && !paused; i++) {
    if (f->state[i] != T_PENDING || running >= f->max_running || cpus < need_c || mem < need_m)
      continue;
    picked[k++] = new_attempt(f, i, o->agent_id->value);
    running++;
    cpus -= need_c;
    mem -= need_m;
  }
  char **ids = ms_xcalloc(k + 1, sizeof(char *));
  for (size_t j = 0; j < k; j++)
    ids[j] = ms_xstrdup(f->att[picked[j]].a.id);
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = ms_xstrdup(f->id);
  _cleanup_free_ char *stream_id = ms_xstrdup(f->stream_id ? f->stream_id : "");
  f->offers++;
  pthread_mutex_unlock(&f->mu);

  Google__Protobuf__Duration refuse = GOOGLE__PROTOBUF__DURATION__INIT;
  Meseta__V1__Filters filters = MESETA__V1__FILTERS__INIT;
  filters.refuse_duration = &refuse; /* zero: what is left comes back at once */
  Meseta__V1__OfferID *oids[] = {o->id};
  ms_error *err = NULL;
  int rc;
  int64_t sent = ms_time_mono_ms(); /* a launch counts from when it was asked for */
  if (k == 0) {
    refuse.seconds = paused ? 3600 : 1; /* paused: until chaos_fw_resume revives */
    Meseta__V1__DeclineRequest d = MESETA__V1__DECLINE_REQUEST__INIT;
    d.framework_id = &fid;
    d.stream_id = stream_id;
    d.n_offer_ids = 1;
    d.offer_ids = oids;
    d.filters = &filters;
    rc = sched_call(f, "Decline", &d.base, &meseta__v1__decline_response__descriptor, &err);
  } else {
    Meseta__V1__Resource__AllocationInfo ai = MESETA__V1__RESOURCE__ALLOCATION_INFO__INIT;
    ai.role = o->allocation_info && o->allocation_info->role ? o->allocation_info->role : "*";
    Meseta__V1__Resource rc_, rm;
    Meseta__V1__Value__Scalar vc, vm;
    scalar(&rc_, &vc, &ai, "cpus", TASK_CPUS);
    scalar(&rm, &vm, &ai, "mem", TASK_MEM);
    Meseta__V1__Resource *res[] = {&rc_, &rm};
    Meseta__V1__CommandInfo cmd = MESETA__V1__COMMAND_INFO__INIT;
    cmd.value = f->cmd;
    Meseta__V1__TaskInfo *tis = ms_xcalloc(k, sizeof(*tis));
    Meseta__V1__TaskInfo **tp = ms_xcalloc(k, sizeof(*tp));
    Meseta__V1__TaskID *tids = ms_xcalloc(k, sizeof(*tids));
    for (size_t j = 0; j < k; j++) {
      meseta__v1__task_id__init(&tids[j]);
      tids[j].value = ids[j];
      meseta__v1__task_info__init(&tis[j]);
      tis[j].name = ids[j];
      tis[j].task_id = &tids[j];
      tis[j].agent_id = o->agent_id;
      tis[j].n_resources = MS_ARRAY_SIZE(res);
      tis[j].resources = res;
      tis[j].command = &cmd;
      tp[j] = &tis[j];
    }
    Meseta__V1__Offer__Operation__Launch l = MESETA__V1__OFFER__OPERATION__LAUNCH__INIT;
    l.n_task_infos = k;
    l.task_infos = tp;
    Meseta__V1__Offer__Operation op = MESETA__V1__OFFER__OPERATION__INIT;
    op.operation_case = MESETA__V1__OFFER__OPERATION__OPERATION_LAUNCH;
    op.launch = &l;
    Meseta__V1__Offer__Operation *ops[] = {&op};
    Meseta__V1__AcceptRequest a = MESETA__V1__ACCEPT_REQUEST__INIT;
    a.framework_id = &fid;
    a.stream_id = stream_id;
    a.n_offer_ids = 1;
    a.offer_ids = oids;
    a.n_operations = 1;
    a.operations = ops;
    a.filters = &filters;
    rc = sched_call(f, "Accept", &a.base, &meseta__v1__accept_response__descriptor, &err);
    free(tis);
    free(tp);
    free(tids);
  }
  pthread_mutex_lock(&f->mu);
  if (k == 0) {
    f->declines += rc == 0;
  } else {
    f->launches += k;
    if (rc < 0) {
      f->accept_failures++;
      fprintf(stderr, "chaos-fw: Accept of %zu task(s) via %s failed (they will be reconciled): %s\n", k,
              fw_target(f), err->msg);
    }
    for (size_t j = 0; j < k; j++) {
      fw_attempt *t = &f->att[picked[j]];
      t->a.accept_ok = rc == 0;
      t->accepting = false;
      t->accept_ms = rc == 0 ? sent : 0;
      t->news_ms = rc == 0 ? ms_time_mono_ms() : 0; /* a failed Accept: reconciled at the next tick */
    }
  }
  pthread_mutex_unlock(&f->mu);
  ms_error_free(err);
  for (size_t j = 0; j < k; j++)
    free(ids[j]);
  free(ids);
  free(fid.value);
}

static bool relaunchable(Meseta__V1__TaskState s) {
  return s == MESETA__V1__TASK_STATE__TASK_UNKNOWN || s == MESETA__V1__TASK_STATE__TASK_DROPPED ||
         s == MESETA__V1__TASK_STATE__TASK_LOST || s == MESETA__V1__TASK_STATE__TASK_GONE ||
         s == MESETA__V1__TASK_STATE__TASK_GONE_BY_OPERATOR;
}

static void ack(chaos_fw *f, const Meseta__V1__TaskStatus *st) {
  pthread_mutex_lock(&f->mu);
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = ms_xstrdup(f->id);
  _cleanup_free_ char *stream_id = ms_xstrdup(f->stream_id ? f->stream_id : "");
  pthread_mutex_unlock(&f->mu);
  Meseta__V1__AcknowledgeRequest r = MESETA__V1__ACKNOWLEDGE_REQUEST__INIT;
  r.framework_id = &fid;
  r.stream_id = stream_id;
  r.agent_id = st->agent_id;
  r.task_id = st->task_id;
  r.uuid = st->uuid;
  int rc = sched_call(f, "Acknowledge", &r.base, &meseta__v1__acknowledge_response__descriptor, NULL);
  free(fid.value);
  if (rc < 0) {
    pthread_mutex_lock(&f->mu);
    f->ack_failures++; /* the agent resends it */
    pthread_mutex_unlock(&f->mu);
  }
}

static fw_attempt *find_attempt(chaos_fw *f, const char *id) {
  for (size_t i = f->natt; i-- > 0;)
    if (strcmp(f->att[i].a.id, id) == 0)
      return &f->att[i];
  return NULL;
}

static void on_update(chaos_fw *f, const Meseta__V1__TaskStatus *st) {
  const char *id = st->task_id && st->task_id->value ? st->task_id->value : "";
  bool has_uuid = st->uuid.len == 16;
  int64_t now = ms_time_mono_ms();
  pthread_mutex_lock(&f->mu);
  f->updates++;
  fw_attempt *t = find_attempt(f, id);
  if (!t) {
    f->foreign++;
    fprintf(stderr, "chaos-fw: an update for a task that is not ours: `%s` %s\n", id,
            ms_task_state_name(st->state));
    pthread_mutex_unlock(&f->mu);
    if (has_uuid)
      ack(f, st);
    return;
  }
  t->news_ms = now;
  t->a.last_state = st->state;
  if (st->reason == MESETA__V1__TASK_STATUS__REASON__REASON_RECONCILIATION)
    ms_strlcpy(t->a.reconcile, ms_task_state_name(st->state), sizeof(t->a.reconcile));
  bool terminal = ms_task_state_terminal(st->state);
  bool unknown = st->state == MESETA__V1__TASK_STATE__TASK_UNKNOWN;
  bool recon = st->reason == MESETA__V1__TASK_STATUS__REASON__REASON_RECONCILIATION;
  static const uint8_t no_uuid[16];
  int i = t->a.task;
  bool current = f->cur_att[i] == (int)(t - f->att) && f->state[i] == T_LAUNCHED;
  if (terminal && !t->a.terminal_state) {
    t->a.terminal_state = st->state;
    t->a.terminal_count = 1;
    if (has_uuid)
      memcpy(t->a.uuid, st->uuid.data, 16);
    if (st->state == MESETA__V1__TASK_STATE__TASK_FINISHED)
      t->finish_ms = now;
  } else if (terminal && (st->state != (Meseta__V1__TaskState)t->a.terminal_state ||
                          (has_uuid && memcmp(t->a.uuid, no_uuid, 16) != 0 &&
                           memcmp(t->a.uuid, st->uuid.data, 16) != 0))) {
    /* A second, different terminal update (a resend has the same uuid; a
     * reconciliation answer has none and repeats the state). */
    t->a.terminal_count++;
    fprintf(stderr, "chaos-fw: task %s ended twice: %s, then %s%s\n", id,
            ms_task_state_name(t->a.terminal_state), ms_task_state_name(st->state),
            recon ? " (a reconciliation answer)" : "");
  } else if (terminal && has_uuid && memcmp(t->a.uuid, no_uuid, 16) == 0) {
    memcpy(t->a.uuid, st->uuid.data, 16); /* first seen by reconciliation */
  } else if (unknown && t->a.terminal_state) {
    /* Asked before its end arrived, answered after the cluster forgot it (Mesos does
     * the same for acknowledged tasks): not acted upon. */
    f->stale_answers++;
  }
  if (unknown && !t->a.terminal_state && !t->a.unknown)
    t->a.unknown = true;
  /* The attempt's end for the framework: FINISHED; a state that means it did not run or
   * is gone (TASK_UNKNOWN is not terminal in Mesos' table, but the cluster says it never
   * had it): launched again; any other terminal state ends the task. */
  if (current && (terminal || unknown)) {
    if (st->state == MESETA__V1__TASK_STATE__TASK_FINISHED) {
      f->state[i] = T_FINISHED;
    } else if (relaunchable(st->state)) {
      t->a.relaunched = true;
      f->state[i] = T_PENDING;
      f->relaunches++;
      fprintf(stderr, "chaos-fw: task %s: %s%s (%s): relaunched\n", id, ms_task_state_name(st->state),
              recon ? " by reconciliation" : "", st->message ? st->message : "");
    } else {
      f->state[i] = T_FAILED;
      fprintf(stderr, "chaos-fw: task %s: %s: %s\n", id, ms_task_state_name(st->state),
              st->message ? st->message : "");
    }
  }
  pthread_mutex_unlock(&f->mu);
  if (has_uuid && st->agent_id)
    ack(f, st);
}

static void on_event(chaos_fw *f, const Meseta__V1__Event *ev) {
  switch (ev->event_case) {
  case MESETA__V1__EVENT__EVENT_SUBSCRIBED:
    pthread_mutex_lock(&f->mu);
    if (!f->id)
      f->id = ms_xstrdup(ev->subscribed->framework_id->value);
    free(f->stream_id);
    f->stream_id = ms_xstrdup(ev->subscribed->stream_id);
    f->connected = true;
    f->reconcile_all = f->subscriptions++ > 0; /* after a failover: every open attempt */
    pthread_mutex_unlock(&f->mu);
    break;
  case MESETA__V1__EVENT__EVENT_OFFERS:
    for (size_t i = 0; i < ev->offers->n_offers; i++)
      use_offer(f, ev->offers->offers[i]);
    break;
  case MESETA__V1__EVENT__EVENT_UPDATE:
    if (ev->update->status)
      on_update(f, ev->update->status);
    break;
  case MESETA__V1__EVENT__EVENT_ERROR:
    fprintf(stderr, "chaos-fw: ERROR event: %s\n", ev->error->message ? ev->error->message : "");
    break;
  default:
    break;
  }
}

static ms_rpc_stream *subscribe(chaos_fw *f, ms_error **err) {
  char *roles[] = {"*"};
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = f->id;
  Google__Protobuf__Duration fot = GOOGLE__PROTOBUF__DURATION__INIT;
  fot.seconds = 600;
  Meseta__V1__FrameworkInfo info = MESETA__V1__FRAMEWORK_INFO__INIT;
  info.name = f->name;
  info.user = "root";
  info.n_roles = 1;
  info.roles = roles;
  info.id = f->id ? &fid : NULL;
  info.failover_timeout = &fot;
  Meseta__V1__SubscribeRequest req = MESETA__V1__SUBSCRIBE_REQUEST__INIT;
  req.framework_info = &info;
  return ms_rpc_stream_open(f->chs[f->cur], "/meseta.v1.Scheduler/Subscribe", &req.base, NULL, err);
}

static void *rx_main(void *arg) {
  chaos_fw *f = arg;
  int64_t backoff = 200;
  for (;;) {
    pthread_mutex_lock(&f->mu);
    ms_error *err = NULL;
    ms_rpc_stream *st = f->stop ? NULL : subscribe(f, &err);
    f->st = st;
    bool stop = f->stop;
    pthread_mutex_unlock(&f->mu);
    if (stop)
      break;
    for (; st;) {
      ProtobufCMessage *m = NULL;
      ms_error_free(err);
      err = NULL;
      if (ms_rpc_stream_recv(st, &meseta__v1__event__descriptor, &m, &err) != 1)
        break;
      on_event(f, (Meseta__V1__Event *)m);
      protobuf_c_message_free_unpacked(m, NULL);
      backoff = 200;
    }
    pthread_mutex_lock(&f->mu);
    f->st = NULL;
    f->connected = false;
    stop = f->stop;
    if (!stop)
      fprintf(stderr, "chaos-fw: the stream on %s ended (%s); subscribing again on %s\n", fw_target(f),
              err ? err->msg : "end of stream", f->targets[(f->cur + 1) % f->n_targets]);
    f->cur = (f->cur + 1) % f->n_targets;
    pthread_mutex_unlock(&f->mu);
    ms_error_free(err);
    ms_rpc_stream_free(st);
    if (stop)
      break;
    ms_time_sleep_ms(backoff);
    backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
  }
  return NULL;
}

/* Explicit reconciliation of open attempts that are quiet (or all of them after a
 * re-subscription). */
static void reconcile(chaos_fw *f) {
  int64_t now = ms_time_mono_ms();
  pthread_mutex_lock(&f->mu);
  if (!f->connected || !f->id || now - f->last_reconcile_ms < RECONCILE_MS) {
    pthread_mutex_unlock(&f->mu);
    return;
  }
  bool all = f->reconcile_all;
  size_t n = 0;
  Meseta__V1__ReconcileRequest__Task *ts = ms_xcalloc((size_t)f->tasks + 1, sizeof(*ts));
  Meseta__V1__ReconcileRequest__Task **tp = ms_xcalloc((size_t)f->tasks + 1, sizeof(*tp));
  Meseta__V1__TaskID *tids = ms_xcalloc((size_t)f->tasks + 1, sizeof(*tids));
  Meseta__V1__AgentID *aids = ms_xcalloc((size_t)f->tasks + 1, sizeof(*aids));
  for (int i = 0; i < f->tasks; i++) {
    if (f->state[i] != T_LAUNCHED)
      continue;
    fw_attempt *t = &f->att[f->cur_att[i]];
    /* Not while its Accept is unanswered: calls may overtake each other on the way, and
     * a task the allocator has not seen yet is rightly unknown (the Accept's deadline
     * bounds the wait). */
    if (t->accepting || (!all && now - t->news_ms < QUIET_MS))
      continue;
    meseta__v1__task_id__init(&tids[n]);
    tids[n].value = ms_xstrdup(t->a.id);
    meseta__v1__agent_id__init(&aids[n]);
    aids[n].value = ms_xstrdup(t->a.agent_id);
    meseta__v1__reconcile_request__task__init(&ts[n]);
    ts[n].task_id = &tids[n];
    ts[n].agent_id = &aids[n];
    tp[n] = &ts[n];
    n++;
  }
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = ms_xstrdup(f->id);
  _cleanup_free_ char *stream_id = ms_xstrdup(f->stream_id ? f->stream_id : "");
  pthread_mutex_unlock(&f->mu);
  int rc = 0;
  if (n > 0) {
    Meseta__V1__ReconcileRequest r = MESETA__V1__RECONCILE_REQUEST__INIT;
    r.framework_id = &fid;
    r.stream_id = stream_id;
    r.n_tasks = n;
    r.tasks = tp;
    rc = sched_call(f, "Reconcile", &r.base, &meseta__v1__reconcile_response__descriptor, NULL);
  }
  pthread_mutex_lock(&f->mu);
  if (n > 0) {
    f->reconciles++;
    f->reconcile_failures += rc < 0;
  }
  if (rc == 0) {
    f->last_reconcile_ms = now;
    if (all)
      f->reconcile_all = false;
  }
  pthread_mutex_unlock(&f->mu);
  for (size_t i = 0; i < n; i++) {
    free(tids[i].value);
    free(aids[i].value);
  }
  free(ts);
  free(tp);
  free(tids);
  free(aids);
  free(fid.value);
}

static void *tick_main(void *arg) {
  chaos_fw *f = arg;
  for (;;) {
    pthread_mutex_lock(&f->mu);
    bool stop = f->stop;
    pthread_mutex_unlock(&f->mu);
    if (stop)
      break;
    reconcile(f);
    ms_time_sleep_ms(250);
  }
  return NULL;
}

chaos_fw *chaos_fw_start(const char *const *targets, int n_targets, const chaos_fw_options *o) {
  chaos_fw *f = ms_xcalloc(1, sizeof(*f));
  pthread_mutex_init(&f->mu, NULL);
  f->name = ms_xstrdup(o->name ? o->name : "chaos");
  f->cmd = ms_xasprintf("echo \"$MESETA_TASK_ID $MESETA_AGENT_ID\" >> \"$MESETA_SANDBOX/ledger\" && sleep %s",
                        o->sleep ? o->sleep : "1");
  f->tasks = o->tasks;
  f->max_running = o->max_running > 0 ? o->max_running : o->tasks;
  f->paused = o->paused;
  f->cur_att = ms_xcalloc((size_t)f->tasks, sizeof(int));
  f->next_k = ms_xcalloc((size_t)f->tasks, sizeof(int));
  f->state = ms_xcalloc((size_t)f->tasks, sizeof(int));
  for (int i = 0; i < f->tasks; i++)
    f->cur_att[i] = -1;
  f->n_targets = n_targets;
  f->targets = ms_xcalloc((size_t)n_targets, sizeof(char *));
  f->chs = ms_xcalloc((size_t)n_targets, sizeof(*f->chs));
  for (int i = 0; i < n_targets; i++) {
    f->targets[i] = ms_xstrdup(targets[i]);
    f->chs[i] = ms_rpc_channel_new(targets[i], NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f->chs[i]);
  }
  CU_ASSERT_EQUAL_FATAL(pthread_create(&f->rx, NULL, rx_main, f), 0);
  CU_ASSERT_EQUAL_FATAL(pthread_create(&f->tick, NULL, tick_main, f), 0);
  int64_t end = ms_time_mono_ms() + SUBSCRIBE_WAIT_MS;
  bool subscribed = false;
  while (!subscribed && ms_time_mono_ms() < end) {
    pthread_mutex_lock(&f->mu);
    subscribed = f->subscriptions > 0;
    pthread_mutex_unlock(&f->mu);
    ms_time_sleep_ms(20);
  }
  if (!subscribed)
    fprintf(stderr, "chaos-fw: no SUBSCRIBED from %s\n", targets[0]);
  CU_ASSERT_FATAL(subscribed);
  return f;
}

void chaos_fw_resume(chaos_fw *f) {
  pthread_mutex_lock(&f->mu);
  f->paused = false;
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = ms_xstrdup(f->id);
  _cleanup_free_ char *stream_id = ms_xstrdup(f->stream_id ? f->stream_id : "");
  pthread_mutex_unlock(&f->mu);
  Meseta__V1__ReviveRequest r = MESETA__V1__REVIVE_REQUEST__INIT;
  r.framework_id = &fid;
  r.stream_id = stream_id;
  ms_error *err = NULL;
  if (sched_call(f, "Revive", &r.base, &meseta__v1__revive_response__descriptor, &err) < 0)
    fprintf(stderr, "chaos-fw: Revive: %s\n", err->msg);
  CU_ASSERT_PTR_NULL(err);
  ms_error_free(err);
  free(fid.value);
}

const char *chaos_fw_id(chaos_fw *f) {
  return f->id; /* set once, before chaos_fw_start returns */
}

int chaos_fw_tasks(chaos_fw *f) {
  return f->tasks; /* fixed at start */
}

static int count_state(chaos_fw *f, int s1, int s2) {
  pthread_mutex_lock(&f->mu);
  int n = 0;
  for (int i = 0; i < f->tasks; i++)
    n += f->state[i] == s1 || f->state[i] == s2;
  pthread_mutex_unlock(&f->mu);
  return n;
}

int chaos_fw_finished(chaos_fw *f) {
  return count_state(f, T_FINISHED, T_FINISHED);
}

int chaos_fw_done(chaos_fw *f) {
  return count_state(f, T_FINISHED, T_FAILED);
}

int chaos_fw_running_on(chaos_fw *f, const char *agent_id) {
  pthread_mutex_lock(&f->mu);
  int n = 0;
  for (int i = 0; i < f->tasks; i++)
    if (f->state[i] == T_LAUNCHED) {
      const fw_attempt *t = &f->att[f->cur_att[i]];
      n += t->a.last_state == MESETA__V1__TASK_STATE__TASK_RUNNING && strcmp(t->a.agent_id, agent_id) == 0;
    }
  pthread_mutex_unlock(&f->mu);
  return n;
}

static int64_t first_after(chaos_fw *f, int64_t t_ms, bool finish) {
  pthread_mutex_lock(&f->mu);
  int64_t best = -1;
  for (size_t i = 0; i < f->natt; i++) {
    int64_t t = finish ? f->att[i].finish_ms : f->att[i].accept_ms;
    if (t >= t_ms && t > 0 && (best < 0 || t < best))
      best = t;
  }
  pthread_mutex_unlock(&f->mu);
  return best;
}

int64_t chaos_fw_first_launch_after(chaos_fw *f, int64_t t_ms) {
  return first_after(f, t_ms, false);
}

int64_t chaos_fw_first_finish_after(chaos_fw *f, int64_t t_ms) {
  return first_after(f, t_ms, true);
}

int chaos_fw_target(chaos_fw *f) {
  pthread_mutex_lock(&f->mu);
  int cur = f->cur;
  pthread_mutex_unlock(&f->mu);
  return cur;
}

void chaos_fw_print(chaos_fw *f) {
  pthread_mutex_lock(&f->mu);
  int fin = 0, failed = 0, open = 0, pending = 0;
  for (int i = 0; i < f->tasks; i++) {
    fin += f->state[i] == T_FINISHED;
    failed += f->state[i] == T_FAILED;
    open += f->state[i] == T_LAUNCHED;
    pending += f->state[i] == T_PENDING;
  }
  printf("  framework %s: %d tasks: %d finished, %d failed, %d open, %d pending; %zu attempts, %" PRIu64
         " relaunched; %" PRIu64 " offers, %" PRIu64 " accept failures, %" PRIu64 " updates, %" PRIu64
         " subscriptions, %" PRIu64 " reconciliations (%" PRIu64 " failed, %" PRIu64
         " TASK_UNKNOWN answers after the end), %" PRIu64 " ack failures\n",
         f->id ? f->id : "?", f->tasks, fin, failed, open, pending, f->natt, f->relaunches, f->offers,
         f->accept_failures, f->updates, f->subscriptions, f->reconciles, f->reconcile_failures,
         f->stale_answers, f->ack_failures);
  pthread_mutex_unlock(&f->mu);
}

chaos_attempt *chaos_fw_attempts(chaos_fw *f, size_t *ret_n, int *ret_tasks) {
  pthread_mutex_lock(&f->mu);
  chaos_attempt *a = ms_xcalloc(f->natt + 1, sizeof(*a));
  for (size_t i = 0; i < f->natt; i++) {
    a[i] = f->att[i].a;
    a[i].id = ms_xstrdup(f->att[i].a.id);
    a[i].agent_id = ms_xstrdup(f->att[i].a.agent_id);
  }
  *ret_n = f->natt;
  *ret_tasks = f->tasks;
  pthread_mutex_unlock(&f->mu);
  return a;
}

void chaos_attempts_free(chaos_attempt *a, size_t n) {
  for (size_t i = 0; a && i < n; i++) {
    free(a[i].id);
    free(a[i].agent_id);
  }
  free(a);
}

void chaos_fw_free(chaos_fw *f) {
  if (!f)
    return;
  pthread_mutex_lock(&f->mu);
  f->stop = true;
  if (f->st)
    ms_rpc_stream_cancel(f->st);
  pthread_mutex_unlock(&f->mu);
  pthread_join(f->rx, NULL);
  pthread_join(f->tick, NULL);
  for (int i = 0; i < f->n_targets; i++) {
    ms_rpc_channel_free(f->chs[i]);
    free(f->targets[i]);
  }
  free(f->chs);
  free(f->targets);
  for (size_t i = 0; i < f->natt; i++) {
    free(f->att[i].a.id);
    free(f->att[i].a.agent_id);
  }
  free(f->att);
  free(f->cur_att);
  free(f->next_k);
  free(f->state);
  free(f->name);
  free(f->id);
  free(f->stream_id);
  free(f->cmd);
  pthread_mutex_destroy(&f->mu);
  free(f);
}
