/* Simulated agents and frameworks: see sim.h. */
#include "sim.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "meseta/alloc.h"
#include "meseta/pb.h"
#include "meseta/resources-io.h"
#include "meseta/rpc.h"
#include "meseta/time.h"
#include "meseta/v1/agent_link.pb-c.h"

#include "sim-internal.h"

#define CONNECT "/meseta.v1.AgentLink/Connect"
#define SUBSCRIBE "/meseta.v1.Allocator/SubscribeFramework"
#define SCHED_CALL "/meseta.v1.Allocator/SchedulerCall"
#define START_TIMEOUT_MS 10000

bool ms_sim_wait(bool (*pred)(void *ctx), void *ctx, int64_t timeout_ms) {
  int64_t end = ms_time_mono_ms() + timeout_ms;
  while (!pred(ctx)) {
    if (ms_time_mono_ms() >= end)
      return false;
    ms_time_sleep_ms(10);
  }
  return true;
}

static void free_msg(void *m) {
  if (m)
    protobuf_c_message_free_unpacked(m, NULL);
}

/* ---- agents ---- */

typedef struct sim_task {
  char *framework_id, *task_id;
  int64_t finish_at;          /* mono ms; -1: never */
  Meseta__V1__TaskInfo *info; /* a copy: its resources */
} sim_task;

/* A status update kept until acknowledged. */
typedef struct sim_update {
  char *framework_id, *task_id;
  Meseta__V1__TaskState state;
  uint8_t uuid[16];
  int64_t sent_at; /* mono ms; 0: not sent */
} sim_update;

/* An operation status kept until acknowledged. */
typedef struct sim_opupd {
  char *framework_id, *op_id, *message;
  uint8_t op_uuid[16], uuid[16];
  Meseta__V1__OperationState state;
  int64_t sent_at;
} sim_opupd;

struct ms_sim_agent {
  char **targets;
  ms_rpc_channel **chs;
  size_t ntargets, cur;
  ms_rpc_stream *st; /* the live stream, under mu */
  Meseta__V1__Resources *rp;
  ms_resources *total;
  char *hostname, *id;
  int64_t task_ms;
  bool reconnect;
  ms_sim_ledger *ledger;
  pthread_t rx, ticker;
  bool rx_started, ticker_started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool registered, connected, failed, stop;
  sim_task *tasks;
  size_t ntasks, cap;
  sim_update *upd;
  size_t nupd, capupd;
  sim_opupd *opu;
  size_t nopu;
  char *fail_next; /* the next APPLY_OPERATION fails with this message */
  ms_sim_agent_stats stats;
};

static char **targets_of(const char *target, const char *const *more, size_t *n) {
  size_t k = 1;
  for (size_t i = 0; more && more[i]; i++)
    k++;
  char **v = ms_xcalloc(k, sizeof(*v));
  v[0] = ms_xstrdup(target);
  for (size_t i = 1; i < k; i++)
    v[i] = ms_xstrdup(more[i - 1]);
  *n = k;
  return v;
}

/* Sends an update on the live stream; the lock is held. */
static void agent_send_update(ms_sim_agent *a, sim_update *u) {
  if (!a->st || !a->connected)
    return;
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = u->framework_id;
  Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
  tid.value = u->task_id;
  Meseta__V1__TaskStatus st = MESETA__V1__TASK_STATUS__INIT;
  st.task_id = &tid;
  st.state = u->state;
  st.source = MESETA__V1__TASK_STATUS__SOURCE__SOURCE_AGENT;
  st.uuid.data = u->uuid;
  st.uuid.len = sizeof(u->uuid);
  Meseta__V1__AgentMessage__StatusUpdate su = MESETA__V1__AGENT_MESSAGE__STATUS_UPDATE__INIT;
  su.framework_id = &fid;
  su.status = &st;
  su.latest_state = u->state;
  Meseta__V1__AgentMessage m = MESETA__V1__AGENT_MESSAGE__INIT;
  m.message_case = MESETA__V1__AGENT_MESSAGE__MESSAGE_STATUS_UPDATE;
  m.status_update = &su;
  ms_rpc_stream_send(a->st, &m.base, NULL);
  u->sent_at = ms_time_mono_ms();
}

/* The lock is held. */
static void agent_send_opupd(ms_sim_agent *a, sim_opupd *u) {
  if (!a->st || !a->connected)
    return;
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = u->framework_id;
  Meseta__V1__OperationID oid = MESETA__V1__OPERATION_ID__INIT;
  oid.value = u->op_id;
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = a->id;
  Meseta__V1__OperationStatus st = MESETA__V1__OPERATION_STATUS__INIT;
  st.operation_id = *u->op_id ? &oid : NULL;
  st.state = u->state;
  st.message = u->message;
  st.uuid.data = u->uuid;
  st.uuid.len = sizeof(u->uuid);
  st.agent_id = &aid;
  Meseta__V1__AgentMessage__OperationStatusUpdate su =
      MESETA__V1__AGENT_MESSAGE__OPERATION_STATUS_UPDATE__INIT;
  su.framework_id = *u->framework_id ? &fid : NULL;
  su.status = &st;
  su.latest_status = &st;
  su.operation_uuid.data = u->op_uuid;
  su.operation_uuid.len = sizeof(u->op_uuid);
  Meseta__V1__AgentMessage m = MESETA__V1__AGENT_MESSAGE__INIT;
  m.message_case = MESETA__V1__AGENT_MESSAGE__MESSAGE_OPERATION_STATUS_UPDATE;
  m.operation_status_update = &su;
  ms_rpc_stream_send(a->st, &m.base, NULL);
  u->sent_at = ms_time_mono_ms();
}

/* APPLY_OPERATION: FINISHED, or FAILED when told so; the lock is held. */
static void agent_apply(ms_sim_agent *a, const Meseta__V1__AllocatorMessage__ApplyOperation *ap) {
  a->stats.apply_operations++;
  a->opu = ms_xrealloc(a->opu, (a->nopu + 1) * sizeof(*a->opu));
  sim_opupd *u = &a->opu[a->nopu++];
  memset(u, 0, sizeof(*u));
  u->framework_id = ms_xstrdup(ap->framework_id && ap->framework_id->value ? ap->framework_id->value : "");
  u->op_id = ms_xstrdup(ap->operation_id && ap->operation_id->value ? ap->operation_id->value : "");
  if (ap->operation_uuid.len == 16)
    memcpy(u->op_uuid, ap->operation_uuid.data, 16);
  getrandom(u->uuid, sizeof(u->uuid), 0);
  if (a->fail_next) {
    u->state = MESETA__V1__OPERATION_STATE__OPERATION_FAILED;
    u->message = a->fail_next;
    a->fail_next = NULL;
  } else {
    u->state = MESETA__V1__OPERATION_STATE__OPERATION_FINISHED;
    u->message = ms_xstrdup("");
  }
  agent_send_opupd(a, u);
}

static void agent_op_acked(ms_sim_agent *a,
                           const Meseta__V1__AllocatorMessage__AcknowledgeOperationStatus *k) {
  a->stats.op_acks++;
  for (size_t i = 0; i < a->nopu; i++)
    if (k->operation_uuid.len == 16 && memcmp(a->opu[i].op_uuid, k->operation_uuid.data, 16) == 0 &&
        k->status_uuid.len == 16 && memcmp(a->opu[i].uuid, k->status_uuid.data, 16) == 0) {
      free(a->opu[i].framework_id);
      free(a->opu[i].op_id);
      free(a->opu[i].message);
      memmove(&a->opu[i], &a->opu[i + 1], (a->nopu - i - 1) * sizeof(*a->opu));
      a->nopu--;
      return;
    }
}

void ms_sim_agent_fail_next_operation(ms_sim_agent *a, const char *message) {
  pthread_mutex_lock(&a->mu);
  free(a->fail_next);
  a->fail_next = ms_xstrdup(message ? message : "");
  pthread_mutex_unlock(&a->mu);
}

/* A new status, kept until acknowledged; the lock is held. */
static void agent_status(ms_sim_agent *a, const char *fw, const char *task, Meseta__V1__TaskState state) {
  if (a->nupd == a->capupd) {
    a->capupd = a->capupd ? 2 * a->capupd : 16;
    a->upd = ms_xrealloc(a->upd, a->capupd * sizeof(*a->upd));
  }
  sim_update *u = &a->upd[a->nupd++];
  *u = (sim_update){ms_xstrdup(fw), ms_xstrdup(task), state, {0}, 0};
  getrandom(u->uuid, sizeof(u->uuid), 0);
  agent_send_update(a, u);
}

static void agent_acked(ms_sim_agent *a, const Meseta__V1__AllocatorMessage__AcknowledgeStatus *k) {
  for (size_t i = 0; i < a->nupd; i++)
    if (k->task_id && strcmp(a->upd[i].task_id, k->task_id->value) == 0 && k->uuid.len == 16 &&
        memcmp(a->upd[i].uuid, k->uuid.data, 16) == 0) {
      free(a->upd[i].framework_id);
      free(a->upd[i].task_id);
      memmove(&a->upd[i], &a->upd[i + 1], (a->nupd - i - 1) * sizeof(*a->upd));
      a->nupd--;
      return;
    }
}

/* Forgets a task (its resources leave the ledger before its terminal status is sent). */
static void agent_drop_task(ms_sim_agent *a, size_t i) {
  sim_task *t = &a->tasks[i];
  if (t->info)
    sim_ledger_task(a->ledger, a->id, (const Meseta__V1__Resource *const *)t->info->resources,
                    t->info->n_resources, false);
  free(t->framework_id);
  free(t->task_id);
  if (t->info)
    free_msg(t->info);
  a->tasks[i] = a->tasks[--a->ntasks];
  a->stats.running--;
}

static void agent_launch(ms_sim_agent *a, const char *fw, const Meseta__V1__TaskInfo *t) {
  const char *tid = t->task_id ? t->task_id->value : "";
  a->stats.run_tasks++;
  if (a->ntasks == a->cap) {
    a->cap = a->cap ? 2 * a->cap : 16;
    a->tasks = ms_xrealloc(a->tasks, a->cap * sizeof(*a->tasks));
  }
  a->tasks[a->ntasks++] =
      (sim_task){ms_xstrdup(fw), ms_xstrdup(tid), a->task_ms < 0 ? -1 : ms_time_mono_ms() + a->task_ms,
                 (Meseta__V1__TaskInfo *)ms_pb_dup(&t->base)};
  a->stats.running++;
  sim_ledger_task(a->ledger, a->id, (const Meseta__V1__Resource *const *)t->resources, t->n_resources, true);
  agent_status(a, fw, tid, MESETA__V1__TASK_STATE__TASK_RUNNING);
  if (a->task_ms == 0) {
    agent_drop_task(a, a->ntasks - 1);
    agent_status(a, fw, tid, MESETA__V1__TASK_STATE__TASK_FINISHED);
  }
}

/* REGISTER, or REREGISTER with the agent's id and running tasks; the lock is held. */
static void agent_hello(ms_sim_agent *a) {
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = a->id;
  Meseta__V1__AgentInfo info = MESETA__V1__AGENT_INFO__INIT;
  info.hostname = a->hostname;
  info.n_resources = a->rp->n_resources;
  info.resources = a->rp->resources;
  Meseta__V1__AgentMessage m = MESETA__V1__AGENT_MESSAGE__INIT;
  Meseta__V1__AgentMessage__Register reg = MESETA__V1__AGENT_MESSAGE__REGISTER__INIT;
  Meseta__V1__AgentMessage__Reregister rr = MESETA__V1__AGENT_MESSAGE__REREGISTER__INIT;
  Meseta__V1__Task *tasks = ms_xcalloc(a->ntasks + 1, sizeof(*tasks));
  Meseta__V1__Task **tp = ms_xcalloc(a->ntasks + 1, sizeof(*tp));
  Meseta__V1__FrameworkID *fids = ms_xcalloc(a->ntasks + 1, sizeof(*fids));
  if (!a->id) {
    reg.agent_info = &info;
    reg.version = "sim";
    m.message_case = MESETA__V1__AGENT_MESSAGE__MESSAGE_REGISTER;
    m.register_ = &reg;
  } else {
    info.id = &aid;
    for (size_t i = 0; i < a->ntasks; i++) {
      meseta__v1__task__init(&tasks[i]);
      meseta__v1__framework_id__init(&fids[i]);
      fids[i].value = a->tasks[i].framework_id;
      tasks[i].name = a->tasks[i].task_id;
      tasks[i].task_id = a->tasks[i].info->task_id;
      tasks[i].framework_id = &fids[i];
      tasks[i].agent_id = &aid;
      tasks[i].state = MESETA__V1__TASK_STATE__TASK_RUNNING;
      tasks[i].n_resources = a->tasks[i].info->n_resources;
      tasks[i].resources = a->tasks[i].info->resources;
      tp[i] = &tasks[i];
    }
    rr.agent_info = &info;
    rr.version = "sim";
    rr.n_tasks = a->ntasks;
    rr.tasks = tp;
    m.message_case = MESETA__V1__AGENT_MESSAGE__MESSAGE_REREGISTER;
    m.reregister = &rr;
  }
  ms_rpc_stream_send(a->st, &m.base, NULL);
  free(tasks);
  free(tp);
  free(fids);
}

static void agent_on_message(ms_sim_agent *a, const Meseta__V1__AllocatorMessage *m) {
  pthread_mutex_lock(&a->mu);
  switch (m->message_case) {
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_REGISTERED:
    if (!a->id)
      a->id = ms_xstrdup(m->registered->agent_id->value);
    a->registered = a->connected = true;
    sim_ledger_agent_total(a->ledger, a->id, a->total);
    pthread_cond_broadcast(&a->cv);
    break;
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_REREGISTERED:
    a->connected = true;
    a->stats.reregistrations++;
    for (size_t i = 0; i < a->nupd; i++) /* in order: what the new leader missed */
      agent_send_update(a, &a->upd[i]);
    for (size_t i = 0; i < a->nopu; i++)
      agent_send_opupd(a, &a->opu[i]);
    break;
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_APPLY_OPERATION:
    agent_apply(a, m->apply_operation);
    break;
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_ACKNOWLEDGE_OPERATION_STATUS:
    agent_op_acked(a, m->acknowledge_operation_status);
    break;
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_RUN_TASK: {
    const char *fw = m->run_task->framework_info && m->run_task->framework_info->id
                         ? m->run_task->framework_info->id->value
                         : "";
    agent_launch(a, fw, m->run_task->task);
    break;
  }
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_RUN_TASK_GROUP: {
    const Meseta__V1__AllocatorMessage__RunTaskGroup *g = m->run_task_group;
    const char *fw = g->framework_info && g->framework_info->id ? g->framework_info->id->value : "";
    for (size_t i = 0; g->task_group && i < g->task_group->n_tasks; i++)
      agent_launch(a, fw, g->task_group->tasks[i]);
    break;
  }
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_KILL_TASK: {
    a->stats.kills++;
    const char *tid = m->kill_task->task_id ? m->kill_task->task_id->value : "";
    const char *fw = m->kill_task->framework_id ? m->kill_task->framework_id->value : "";
    for (size_t i = 0; i < a->ntasks; i++)
      if (strcmp(a->tasks[i].task_id, tid) == 0 && strcmp(a->tasks[i].framework_id, fw) == 0) {
        agent_drop_task(a, i);
        break;
      }
    agent_status(a, fw, tid, MESETA__V1__TASK_STATE__TASK_KILLED);
    break;
  }
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_ACKNOWLEDGE_STATUS:
    a->stats.acks++;
    agent_acked(a, m->acknowledge_status);
    break;
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_PING: {
    a->stats.pings++;
    Meseta__V1__AgentMessage__Heartbeat hb = MESETA__V1__AGENT_MESSAGE__HEARTBEAT__INIT;
    hb.sequence = m->ping->sequence;
    Meseta__V1__AgentMessage r = MESETA__V1__AGENT_MESSAGE__INIT;
    r.message_case = MESETA__V1__AGENT_MESSAGE__MESSAGE_HEARTBEAT;
    r.heartbeat = &hb;
    if (a->st)
      ms_rpc_stream_send(a->st, &r.base, NULL);
    break;
  }
  default:
    break;
  }
  pthread_mutex_unlock(&a->mu);
}

/* Sleeps ms in small steps; false when told to stop. */
static bool nap(pthread_mutex_t *mu, const bool *stop, int64_t ms) {
  for (int64_t t = 0; t < ms; t += 10) {
    pthread_mutex_lock(mu);
    bool s = *stop;
    pthread_mutex_unlock(mu);
    if (s)
      return false;
    ms_time_sleep_ms(10);
  }
  return true;
}

static void *agent_rx(void *arg) {
  ms_sim_agent *a = arg;
  int64_t backoff = 100;
  for (;;) {
    pthread_mutex_lock(&a->mu);
    ms_rpc_stream *st = a->stop ? NULL : ms_rpc_stream_open(a->chs[a->cur], CONNECT, NULL, NULL, NULL);
    if (st) {
      a->st = st;
      agent_hello(a);
    }
    pthread_mutex_unlock(&a->mu);
    for (; st;) {
      ProtobufCMessage *m = NULL;
      if (ms_rpc_stream_recv(st, &meseta__v1__allocator_message__descriptor, &m, NULL) != 1)
        break;
      agent_on_message(a, (Meseta__V1__AllocatorMessage *)m);
      free_msg(m);
      backoff = 100;
    }
    pthread_mutex_lock(&a->mu);
    a->st = NULL;
    a->connected = false;
    bool again = a->reconnect && !a->stop;
    pthread_mutex_unlock(&a->mu);
    ms_rpc_stream_free(st);
    if (!again || !nap(&a->mu, &a->stop, backoff))
      break;
    a->cur = (a->cur + 1) % a->ntargets;
    backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
  }
  pthread_mutex_lock(&a->mu);
  a->failed = true;
  pthread_cond_broadcast(&a->cv);
  pthread_mutex_unlock(&a->mu);
  return NULL;
}

static void *agent_tick(void *arg) {
  ms_sim_agent *a = arg;
  pthread_mutex_lock(&a->mu);
  while (!a->stop) {
    int64_t now = ms_time_mono_ms();
    for (size_t i = 0; i < a->ntasks;) {
      if (a->tasks[i].finish_at >= 0 && a->tasks[i].finish_at <= now && (a->reconnect || !a->failed)) {
        char *fw = ms_xstrdup(a->tasks[i].framework_id), *tid = ms_xstrdup(a->tasks[i].task_id);
        agent_drop_task(a, i);
        agent_status(a, fw, tid, MESETA__V1__TASK_STATE__TASK_FINISHED);
        free(fw);
        free(tid);
      } else {
        i++;
      }
    }
    for (size_t i = 0; a->reconnect && i < a->nupd; i++) /* not acknowledged within 1 s: again */
      if (a->upd[i].sent_at && now - a->upd[i].sent_at >= 1000)
        agent_send_update(a, &a->upd[i]);
    for (size_t i = 0; i < a->nopu; i++) /* operation statuses: resent until acknowledged */
      if (a->opu[i].sent_at && now - a->opu[i].sent_at >= 1000)
        agent_send_opupd(a, &a->opu[i]);
    pthread_mutex_unlock(&a->mu);
    ms_time_sleep_ms(5);
    pthread_mutex_lock(&a->mu);
  }
  pthread_mutex_unlock(&a->mu);
  return NULL;
}

ms_sim_agent *ms_sim_agent_start(const char *target, const ms_sim_agent_options *o, ms_error **err) {
  ms_resources *res = NULL;
  if (ms_resources_parse_text(o->resources ? o->resources : "", NULL, &res, err) < 0)
    return NULL;
  ms_sim_agent *a = ms_xcalloc(1, sizeof(*a));
  pthread_mutex_init(&a->mu, NULL);
  pthread_cond_init(&a->cv, NULL);
  a->rp = ms_resources_to_proto(res);
  a->total = res;
  a->task_ms = o->task_ms;
  a->hostname = ms_xstrdup(o->hostname ? o->hostname : "sim-agent");
  a->reconnect = o->more_targets != NULL;
  a->ledger = o->ledger;
  a->targets = targets_of(target, o->more_targets, &a->ntargets);
  a->chs = ms_xcalloc(a->ntargets, sizeof(*a->chs));
  int rc = MS_ERR;
  for (size_t i = 0; i < a->ntargets; i++)
    if (!(a->chs[i] = ms_rpc_channel_new(a->targets[i], NULL, err)))
      goto out;
  a->rx_started = pthread_create(&a->rx, NULL, agent_rx, a) == 0;
  a->ticker_started = pthread_create(&a->ticker, NULL, agent_tick, a) == 0;
  int64_t end = ms_time_mono_ms() + START_TIMEOUT_MS;
  pthread_mutex_lock(&a->mu);
  while (!a->registered && !a->failed && ms_time_mono_ms() < end) {
    pthread_mutex_unlock(&a->mu);
    ms_time_sleep_ms(5);
    pthread_mutex_lock(&a->mu);
  }
  rc = a->registered
           ? 0
           : ms_error_set(err, MS_DEADLINE_EXCEEDED, "simulated agent: no REGISTERED from `%s`", target);
  pthread_mutex_unlock(&a->mu);
out:
  if (rc < 0) {
    ms_sim_agent_free(a);
    return NULL;
  }
  return a;
}

const char *ms_sim_agent_id(const ms_sim_agent *a) {
  return a->id;
}

void ms_sim_agent_stats_get(ms_sim_agent *a, ms_sim_agent_stats *ret) {
  pthread_mutex_lock(&a->mu);
  *ret = a->stats;
  ret->unacked = a->nupd;
  ret->op_unacked = a->nopu;
  ret->connected = a->connected;
  pthread_mutex_unlock(&a->mu);
}

void ms_sim_agent_disconnect(ms_sim_agent *a) {
  pthread_mutex_lock(&a->mu);
  a->stop = true; /* for good: no reconnection */
  if (a->st)
    ms_rpc_stream_cancel(a->st);
  pthread_mutex_unlock(&a->mu);
}

void ms_sim_agent_free(ms_sim_agent *a) {
  if (!a)
    return;
  ms_sim_agent_disconnect(a);
  if (a->rx_started)
    pthread_join(a->rx, NULL);
  if (a->ticker_started)
    pthread_join(a->ticker, NULL);
  for (size_t i = 0; i < a->ntargets; i++) {
    ms_rpc_channel_free(a->chs[i]);
    free(a->targets[i]);
  }
  free(a->chs);
  free(a->targets);
  while (a->ntasks)
    agent_drop_task(a, 0);
  free(a->tasks);
  for (size_t i = 0; i < a->nupd; i++) {
    free(a->upd[i].framework_id);
    free(a->upd[i].task_id);
  }
  free(a->upd);
  for (size_t i = 0; i < a->nopu; i++) {
    free(a->opu[i].framework_id);
    free(a->opu[i].op_id);
    free(a->opu[i].message);
  }
  free(a->opu);
  free(a->fail_next);
  ms_resources_proto_free(a->rp);
  ms_resources_free(a->total);
  free(a->hostname);
  free(a->id);
  pthread_mutex_destroy(&a->mu);
  pthread_cond_destroy(&a->cv);
  free(a);
}

/* ---- frameworks ---- */

/* A task this framework launched, for ms_sim_framework_tasks. */
typedef struct sim_ftask {
  char *id;
  int state; /* 0: accept in flight, 1: accepted, 2: uncertain */
  uint64_t epoch;
  uint32_t nterminal;
  uint8_t uuid[16]; /* of the first terminal update */
} sim_ftask;

struct ms_sim_framework {
  char **targets;
  ms_rpc_channel **chs;
  size_t ntargets, cur;
  bool reconnect, stop, connected;
  ms_sim_ledger *ledger;
  uint64_t epoch; /* subscriptions so far */
  sim_ftask *ft;
  size_t nft, capft;
  char **old_streams; /* stream ids of earlier subscriptions, kept for racing readers */
  size_t nold;
  ms_rpc_stream *st;
  char *name, *role, *id, *stream_id;
  ms_resources *task_res; /* ACCEPT: one task, without allocation role */
  uint32_t max_tasks;
  int64_t refuse_ms;
  pthread_t rx;
  bool rx_started;
  pthread_mutex_t mu;
  bool subscribed, failed;
  ms_sim_mode mode;
  Meseta__V1__Offer **held;
  size_t nheld, capheld;
  uint64_t next_task, finished_later;
  bool op_acks;
  Meseta__V1__OperationStatus **opst; /* the last status per operation id */
  size_t nopst;
  ms_sim_framework_stats stats;
};

static void fill_ids(ms_sim_framework *f, Meseta__V1__FrameworkID *fid) {
  meseta__v1__framework_id__init(fid);
  fid->value = f->id;
}

int ms_sim_framework_call(ms_sim_framework *f, const Meseta__V1__SchedulerCallRequest *req, ms_error **err) {
  ProtobufCMessage *resp = NULL;
  ms_rpc_call_options co = {.timeout_ms = 10000};
  pthread_mutex_lock(&f->mu);
  ms_rpc_channel *ch = f->chs[f->cur];
  pthread_mutex_unlock(&f->mu);
  if (ms_rpc_unary(ch, SCHED_CALL, &req->base, &meseta__v1__scheduler_call_response__descriptor, &co, &resp,
                   err) < 0)
    return MS_ERR;
  free_msg(resp);
  return 0;
}

static void count_failure(ms_sim_framework *f) {
  pthread_mutex_lock(&f->mu);
  f->stats.call_failures++;
  pthread_mutex_unlock(&f->mu);
}

int ms_sim_framework_decline(ms_sim_framework *f, const char *offer_id, int64_t refuse_ms, ms_error **err) {
  Meseta__V1__FrameworkID fid;
  fill_ids(f, &fid);
  sim_ledger_offer_gone(f->ledger, f, offer_id);
  Meseta__V1__OfferID oid = MESETA__V1__OFFER_ID__INIT;
  oid.value = (char *)offer_id;
  Meseta__V1__OfferID *oids[] = {&oid};
  Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
  d.seconds = refuse_ms / 1000;
  d.nanos = (int32_t)(refuse_ms % 1000) * 1000000;
  Meseta__V1__Filters filters = MESETA__V1__FILTERS__INIT;
  filters.refuse_duration = refuse_ms >= 0 ? &d : NULL;
  Meseta__V1__DeclineRequest r = MESETA__V1__DECLINE_REQUEST__INIT;
  r.framework_id = &fid;
  r.stream_id = f->stream_id;
  r.n_offer_ids = 1;
  r.offer_ids = oids;
  r.filters = &filters;
  Meseta__V1__SchedulerCallRequest c = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  c.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_DECLINE;
  c.decline = &r;
  return ms_sim_framework_call(f, &c, err);
}

int ms_sim_framework_revive(ms_sim_framework *f, ms_error **err) {
  Meseta__V1__FrameworkID fid;
  fill_ids(f, &fid);
  Meseta__V1__ReviveRequest r = MESETA__V1__REVIVE_REQUEST__INIT;
  r.framework_id = &fid;
  r.stream_id = f->stream_id;
  Meseta__V1__SchedulerCallRequest c = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  c.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_REVIVE;
  c.revive = &r;
  return ms_sim_framework_call(f, &c, err);
}

static int launch_set(ms_sim_framework *f, const Meseta__V1__Offer *offer, const char *task_id,
                      const ms_resources *res, ms_error **err) {
  ms_resources *r = ms_resources_clone(res);
  const char *role = offer->allocation_info ? offer->allocation_info->role : NULL;
  ms_resources_allocate(r, role && *role ? role : NULL, NULL);
  Meseta__V1__Resources *rp = ms_resources_to_proto(r);
  ms_resources_free(r);
  Meseta__V1__FrameworkID fid;
  fill_ids(f, &fid);
  Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
  tid.value = (char *)task_id;
  Meseta__V1__CommandInfo cmd = MESETA__V1__COMMAND_INFO__INIT;
  cmd.value = "true";
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
  Meseta__V1__Offer__Operation *ops[] = {&op};
  Meseta__V1__OfferID *oids[] = {offer->id};
  Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
  d.seconds = f->refuse_ms / 1000;
  d.nanos = (int32_t)(f->refuse_ms % 1000) * 1000000;
  Meseta__V1__Filters filters = MESETA__V1__FILTERS__INIT;
  filters.refuse_duration = f->refuse_ms >= 0 ? &d : NULL;
  Meseta__V1__AcceptRequest a = MESETA__V1__ACCEPT_REQUEST__INIT;
  a.framework_id = &fid;
  a.stream_id = f->stream_id;
  a.n_offer_ids = 1;
  a.offer_ids = oids;
  a.n_operations = 1;
  a.operations = ops;
  a.filters = &filters;
  Meseta__V1__SchedulerCallRequest c = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  c.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_ACCEPT;
  c.accept = &a;
  sim_ledger_offer_gone(f->ledger, f, offer->id->value);
  int rc = ms_sim_framework_call(f, &c, err);
  ms_resources_proto_free(rp);
  return rc;
}

int ms_sim_framework_launch(ms_sim_framework *f, const Meseta__V1__Offer *offer, const char *task_id,
                            const char *resources, ms_error **err) {
  ms_resources *res = NULL;
  if (ms_resources_parse_text(resources, NULL, &res, err) < 0)
    return MS_ERR;
  int rc = launch_set(f, offer, task_id, res, err);
  ms_resources_free(res);
  return rc;
}

/* The lock is held. */
static sim_ftask *ft_find(ms_sim_framework *f, const char *id) {
  for (size_t i = f->nft; i-- > 0;)
    if (strcmp(f->ft[i].id, id) == 0)
      return &f->ft[i];
  return NULL;
}

void ms_sim_framework_tasks(ms_sim_framework *f, ms_sim_task_summary *ret) {
  memset(ret, 0, sizeof(*ret));
  pthread_mutex_lock(&f->mu);
  for (size_t i = 0; i < f->nft; i++) {
    const sim_ftask *t = &f->ft[i];
    ret->accepted += t->state == 1;
    ret->uncertain += t->state == 2;
    ret->terminal += t->nterminal > 0;
    ret->open += t->state == 1 && !t->nterminal;
    ret->duplicated += t->nterminal > 1;
  }
  ret->finished_later = f->finished_later;
  pthread_mutex_unlock(&f->mu);
}

/* ACCEPT mode: one task if the offer holds it and the budget allows, else decline. */
static void fw_use_offer(ms_sim_framework *f, const Meseta__V1__Offer *o, ms_sim_mode mode) {
  bool launch = false;
  char task_id[160];
  if (mode == MS_SIM_ACCEPT && f->task_res) {
    ms_resources *have = NULL;
    if (ms_resources_from_proto(o->resources, o->n_resources, &have, NULL) == 0) {
      ms_resources_allocate(have, NULL, NULL);
      pthread_mutex_lock(&f->mu);
      launch =
          ms_resources_contains(have, f->task_res) && (!f->max_tasks || f->stats.launched < f->max_tasks);
      if (launch) {
        snprintf(task_id, sizeof(task_id), "%s-t%llu", f->name, (unsigned long long)f->next_task++);
        f->stats.launched++;
        if (f->nft == f->capft) {
          f->capft = f->capft ? 2 * f->capft : 64;
          f->ft = ms_xrealloc(f->ft, f->capft * sizeof(*f->ft));
        }
        f->ft[f->nft++] = (sim_ftask){ms_xstrdup(task_id), 0, f->epoch, 0, {0}};
      }
      pthread_mutex_unlock(&f->mu);
    }
    ms_resources_free(have);
  }
  int rc = launch ? launch_set(f, o, task_id, f->task_res, NULL)
                  : ms_sim_framework_decline(f, o->id->value, f->refuse_ms, NULL);
  pthread_mutex_lock(&f->mu);
  if (rc < 0)
    f->stats.call_failures++;
  else if (!launch)
    f->stats.declined++;
  if (launch) {
    sim_ftask *t = ft_find(f, task_id);
    if (t)
      t->state = rc < 0 ? 2 : 1;
  }
  pthread_mutex_unlock(&f->mu);
}

static void fw_ack(ms_sim_framework *f, const Meseta__V1__TaskStatus *st) {
  Meseta__V1__FrameworkID fid;
  fill_ids(f, &fid);
  Meseta__V1__AcknowledgeRequest r = MESETA__V1__ACKNOWLEDGE_REQUEST__INIT;
  r.framework_id = &fid;
  r.stream_id = f->stream_id;
  r.agent_id = st->agent_id;
  r.task_id = st->task_id;
  r.uuid = st->uuid;
  Meseta__V1__SchedulerCallRequest c = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  c.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_ACKNOWLEDGE;
  c.acknowledge = &r;
  if (ms_sim_framework_call(f, &c, NULL) < 0)
    count_failure(f);
}

static bool ms_sim_terminal(Meseta__V1__TaskState s) {
  switch (s) {
  case MESETA__V1__TASK_STATE__TASK_FINISHED:
  case MESETA__V1__TASK_STATE__TASK_FAILED:
  case MESETA__V1__TASK_STATE__TASK_KILLED:
  case MESETA__V1__TASK_STATE__TASK_ERROR:
  case MESETA__V1__TASK_STATE__TASK_LOST:
  case MESETA__V1__TASK_STATE__TASK_DROPPED:
  case MESETA__V1__TASK_STATE__TASK_GONE:
  case MESETA__V1__TASK_STATE__TASK_GONE_BY_OPERATOR:
    return true;
  default:
    return false;
  }
}

static void fw_on_update(ms_sim_framework *f, const Meseta__V1__TaskStatus *st) {
  pthread_mutex_lock(&f->mu);
  f->stats.updates++;
  sim_ftask *t = st->task_id ? ft_find(f, st->task_id->value) : NULL;
  bool fresh = true; /* not a resend of a terminal update already seen */
  if (t && ms_sim_terminal(st->state)) {
    if (t->nterminal && st->uuid.len == 16 && memcmp(t->uuid, st->uuid.data, 16) == 0) {
      fresh = false;
    } else {
      if (!t->nterminal && st->uuid.len == 16)
        memcpy(t->uuid, st->uuid.data, 16);
      if (!t->nterminal && st->state == MESETA__V1__TASK_STATE__TASK_FINISHED && f->epoch > t->epoch)
        f->finished_later++;
      t->nterminal++;
    }
  }
  if (!fresh) {
    pthread_mutex_unlock(&f->mu);
    if (st->uuid.len == 16 && st->agent_id)
      fw_ack(f, st);
    return;
  }
  switch (st->state) {
  case MESETA__V1__TASK_STATE__TASK_RUNNING:
    f->stats.running++;
    break;
  case MESETA__V1__TASK_STATE__TASK_FINISHED:
    f->stats.finished++;
    break;
  case MESETA__V1__TASK_STATE__TASK_KILLED:
    f->stats.killed++;
    break;
  case MESETA__V1__TASK_STATE__TASK_LOST:
    f->stats.lost++;
    break;
  default:
    break;
  }
  pthread_mutex_unlock(&f->mu);
  if (st->uuid.len == 16 && st->agent_id)
    fw_ack(f, st);
}

static void fw_on_op_status(ms_sim_framework *f, const Meseta__V1__OperationStatus *st);

static void fw_on_event(ms_sim_framework *f, Meseta__V1__Event *ev) {
  pthread_mutex_lock(&f->mu);
  ms_sim_mode mode = f->mode;
  switch (ev->event_case) {
  case MESETA__V1__EVENT__EVENT_SUBSCRIBED:
    if (!f->id)
      f->id = ms_xstrdup(ev->subscribed->framework_id->value);
    else
      f->stats.resubscriptions++;
    if (f->stream_id) {
      f->old_streams = ms_xrealloc(f->old_streams, (f->nold + 1) * sizeof(*f->old_streams));
      f->old_streams[f->nold++] = f->stream_id;
    }
    f->stream_id = ms_xstrdup(ev->subscribed->stream_id);
    f->subscribed = f->connected = true;
    f->epoch++;
    break;
  case MESETA__V1__EVENT__EVENT_OFFERS:
    f->stats.offer_events++;
    f->stats.offers += ev->offers->n_offers;
    for (size_t i = 0; i < ev->offers->n_offers; i++)
      sim_ledger_offer(f->ledger, f, ev->offers->offers[i]);
    break;
  case MESETA__V1__EVENT__EVENT_RESCIND:
    f->stats.rescinds++;
    sim_ledger_offer_gone(f->ledger, f, ev->rescind->offer_id->value);
    for (size_t i = 0; i < f->nheld; i++)
      if (strcmp(f->held[i]->id->value, ev->rescind->offer_id->value) == 0) {
        free_msg(f->held[i]);
        memmove(&f->held[i], &f->held[i + 1], (f->nheld - i - 1) * sizeof(*f->held));
        f->nheld--;
        break;
      }
    break;
  case MESETA__V1__EVENT__EVENT_ERROR:
    f->stats.errors++;
    break;
  case MESETA__V1__EVENT__EVENT_HEARTBEAT:
    f->stats.heartbeats++;
    break;
  default:
    break;
  }
  if (ev->event_case == MESETA__V1__EVENT__EVENT_OFFERS && mode == MS_SIM_HOLD) {
    for (size_t i = 0; i < ev->offers->n_offers; i++) {
      if (f->nheld == f->capheld) {
        f->capheld = f->capheld ? 2 * f->capheld : 16;
        f->held = ms_xrealloc(f->held, f->capheld * sizeof(*f->held));
      }
      f->held[f->nheld++] = (Meseta__V1__Offer *)ms_pb_dup(&ev->offers->offers[i]->base);
    }
  }
  pthread_mutex_unlock(&f->mu);
  if (ev->event_case == MESETA__V1__EVENT__EVENT_OFFERS && mode != MS_SIM_HOLD)
    for (size_t i = 0; i < ev->offers->n_offers; i++)
      fw_use_offer(f, ev->offers->offers[i], mode);
  if (ev->event_case == MESETA__V1__EVENT__EVENT_UPDATE && ev->update->status)
    fw_on_update(f, ev->update->status);
  if (ev->event_case == MESETA__V1__EVENT__EVENT_UPDATE_OPERATION_STATUS &&
      ev->update_operation_status->status)
    fw_on_op_status(f, ev->update_operation_status->status);
}

/* ---- operations ---- */

static void fw_op_ack(ms_sim_framework *f, const Meseta__V1__OperationStatus *st) {
  Meseta__V1__FrameworkID fid;
  fill_ids(f, &fid);
  Meseta__V1__AcknowledgeOperationStatusRequest r = MESETA__V1__ACKNOWLEDGE_OPERATION_STATUS_REQUEST__INIT;
  r.framework_id = &fid;
  r.stream_id = f->stream_id;
  r.agent_id = st->agent_id;
  r.operation_id = st->operation_id;
  r.uuid = st->uuid;
  Meseta__V1__SchedulerCallRequest c = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  c.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_ACKNOWLEDGE_OPERATION_STATUS;
  c.acknowledge_operation_status = &r;
  if (ms_sim_framework_call(f, &c, NULL) < 0) {
    count_failure(f);
    return;
  }
  pthread_mutex_lock(&f->mu);
  f->stats.op_acks++;
  pthread_mutex_unlock(&f->mu);
}

static void fw_on_op_status(ms_sim_framework *f, const Meseta__V1__OperationStatus *st) {
  pthread_mutex_lock(&f->mu);
  f->stats.op_updates++;
  switch (st->state) {
  case MESETA__V1__OPERATION_STATE__OPERATION_FINISHED:
    f->stats.op_finished++;
    break;
  case MESETA__V1__OPERATION_STATE__OPERATION_FAILED:
    f->stats.op_failed++;
    break;
  case MESETA__V1__OPERATION_STATE__OPERATION_STATE_UNKNOWN:
    f->stats.op_unknown++;
    break;
  case MESETA__V1__OPERATION_STATE__OPERATION_PENDING:
    f->stats.op_pending++;
    break;
  default:
    break;
  }
  const char *id = st->operation_id && st->operation_id->value ? st->operation_id->value : "";
  size_t i = 0;
  while (i < f->nopst && strcmp(f->opst[i]->operation_id->value, id) != 0)
    i++;
  if (i == f->nopst) {
    f->opst = ms_xrealloc(f->opst, (f->nopst + 1) * sizeof(*f->opst));
    f->nopst++;
  } else {
    free_msg(f->opst[i]);
  }
  f->opst[i] = (Meseta__V1__OperationStatus *)ms_pb_dup(&st->base);
  if (!f->opst[i]->operation_id) {
    f->opst[i]->operation_id = ms_pb_new(&meseta__v1__operation_id__descriptor);
    f->opst[i]->operation_id->value = ms_xstrdup("");
  }
  bool ack = f->op_acks && st->uuid.len == 16 && *id;
  pthread_mutex_unlock(&f->mu);
  if (ack)
    fw_op_ack(f, st);
}

Meseta__V1__OperationStatus *ms_sim_framework_op_status(ms_sim_framework *f, const char *op_id) {
  Meseta__V1__OperationStatus *r = NULL;
  pthread_mutex_lock(&f->mu);
  for (size_t i = 0; i < f->nopst && !r; i++)
    if (strcmp(f->opst[i]->operation_id->value, op_id) == 0)
      r = (Meseta__V1__OperationStatus *)ms_pb_dup(&f->opst[i]->base);
  pthread_mutex_unlock(&f->mu);
  return r;
}

void ms_sim_framework_set_operation_acks(ms_sim_framework *f, bool ack) {
  pthread_mutex_lock(&f->mu);
  f->op_acks = ack;
  pthread_mutex_unlock(&f->mu);
}

int ms_sim_framework_reserve(ms_sim_framework *f, const Meseta__V1__Offer *offer, const char *op_id,
                             const char *resources, ms_error **err) {
  ms_resources *res = NULL;
  if (ms_resources_parse_text(resources, NULL, &res, err) < 0)
    return MS_ERR;
  const char *role = offer->allocation_info ? offer->allocation_info->role : NULL;
  ms_resources_allocate(res, role && *role ? role : NULL, NULL);
  Meseta__V1__Resources *rp = ms_resources_to_proto(res);
  ms_resources_free(res);
  Meseta__V1__Resource__ReservationInfo ri = MESETA__V1__RESOURCE__RESERVATION_INFO__INIT;
  ri.type = MESETA__V1__RESOURCE__RESERVATION_INFO__TYPE__DYNAMIC;
  ri.role = (char *)(role ? role : "*");
  Meseta__V1__Resource__ReservationInfo *ris[] = {&ri};
  Meseta__V1__Resource__ReservationInfo ***own = ms_xcalloc(rp->n_resources + 1, sizeof(*own));
  for (size_t i = 0; i < rp->n_resources; i++) {
    own[i] = rp->resources[i]->reservations; /* put back before the free */
    rp->resources[i]->reservations = ris;
    rp->resources[i]->n_reservations = 1;
  }
  Meseta__V1__FrameworkID fid;
  fill_ids(f, &fid);
  Meseta__V1__OperationID oid = MESETA__V1__OPERATION_ID__INIT;
  oid.value = (char *)op_id;
  Meseta__V1__Operation__Reserve rs = MESETA__V1__OPERATION__RESERVE__INIT;
  rs.n_resources = rp->n_resources;
  rs.resources = rp->resources;
  Meseta__V1__Offer__Operation op = MESETA__V1__OFFER__OPERATION__INIT;
  op.id = op_id ? &oid : NULL;
  op.operation_case = MESETA__V1__OFFER__OPERATION__OPERATION_RESERVE;
  op.reserve = &rs;
  Meseta__V1__Offer__Operation *ops[] = {&op};
  Meseta__V1__OfferID *oids[] = {offer->id};
  Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
  Meseta__V1__Filters filters = MESETA__V1__FILTERS__INIT;
  filters.refuse_duration = &d; /* 0: what is left comes back at once */
  Meseta__V1__AcceptRequest a = MESETA__V1__ACCEPT_REQUEST__INIT;
  a.framework_id = &fid;
  a.stream_id = f->stream_id;
  a.n_offer_ids = 1;
  a.offer_ids = oids;
  a.n_operations = 1;
  a.operations = ops;
  a.filters = &filters;
  Meseta__V1__SchedulerCallRequest c = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  c.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_ACCEPT;
  c.accept = &a;
  sim_ledger_offer_gone(f->ledger, f, offer->id->value);
  int rc = ms_sim_framework_call(f, &c, err);
  for (size_t i = 0; i < rp->n_resources; i++) {
    rp->resources[i]->reservations = own[i];
    rp->resources[i]->n_reservations = 0;
  }
  free(own);
  ms_resources_proto_free(rp);
  return rc;
}

int ms_sim_framework_reconcile_operations(ms_sim_framework *f, const char *const *op_ids, size_t n,
                                          ms_error **err) {
  Meseta__V1__FrameworkID fid;
  fill_ids(f, &fid);
  Meseta__V1__ReconcileOperationsRequest__Operation *ops = ms_xcalloc(n + 1, sizeof(*ops));
  Meseta__V1__ReconcileOperationsRequest__Operation **opp = ms_xcalloc(n + 1, sizeof(*opp));
  Meseta__V1__OperationID *ids = ms_xcalloc(n + 1, sizeof(*ids));
  for (size_t i = 0; i < n; i++) {
    meseta__v1__reconcile_operations_request__operation__init(&ops[i]);
    meseta__v1__operation_id__init(&ids[i]);
    ids[i].value = (char *)op_ids[i];
    ops[i].operation_id = &ids[i];
    opp[i] = &ops[i];
  }
  Meseta__V1__ReconcileOperationsRequest r = MESETA__V1__RECONCILE_OPERATIONS_REQUEST__INIT;
  r.framework_id = &fid;
  r.stream_id = f->stream_id;
  r.n_operations = n;
  r.operations = opp;
  Meseta__V1__SchedulerCallRequest c = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  c.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_RECONCILE_OPERATIONS;
  c.reconcile_operations = &r;
  int rc = ms_sim_framework_call(f, &c, err);
  free(ops);
  free(opp);
  free(ids);
  return rc;
}

static ms_rpc_stream *fw_open(ms_sim_framework *f) {
  char *roles[] = {f->role};
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = f->id;
  Meseta__V1__FrameworkInfo info = MESETA__V1__FRAMEWORK_INFO__INIT;
  info.name = f->name;
  info.user = "sim";
  info.n_roles = 1;
  info.roles = roles;
  info.id = f->id ? &fid : NULL; /* the same framework after a failover */
  Meseta__V1__SubscribeRequest req = MESETA__V1__SUBSCRIBE_REQUEST__INIT;
  req.framework_info = &info;
  Meseta__V1__FrameworkSubscription sub = MESETA__V1__FRAMEWORK_SUBSCRIPTION__INIT;
  sub.request = &req;
  return ms_rpc_stream_open(f->chs[f->cur], SUBSCRIBE, &sub.base, NULL, NULL);
}

static void *fw_rx(void *arg) {
  ms_sim_framework *f = arg;
  int64_t backoff = 100;
  for (;;) {
    pthread_mutex_lock(&f->mu);
    ms_rpc_stream *st = f->stop ? NULL : fw_open(f);
    f->st = st;
    pthread_mutex_unlock(&f->mu);
    for (; st;) {
      ProtobufCMessage *m = NULL;
      if (ms_rpc_stream_recv(st, &meseta__v1__event__descriptor, &m, NULL) != 1)
        break;
      fw_on_event(f, (Meseta__V1__Event *)m);
      free_msg(m);
      backoff = 100;
    }
    pthread_mutex_lock(&f->mu);
    f->st = NULL;
    f->connected = false;
    for (size_t i = 0; i < f->nheld; i++) /* the old leader's offers are void */
      free_msg(f->held[i]);
    f->nheld = 0;
    bool again = f->reconnect && !f->stop;
    pthread_mutex_unlock(&f->mu);
    sim_ledger_offer_gone(f->ledger, f, NULL);
    ms_rpc_stream_free(st);
    if (!again || !nap(&f->mu, &f->stop, backoff))
      break;
    pthread_mutex_lock(&f->mu);
    f->cur = (f->cur + 1) % f->ntargets;
    pthread_mutex_unlock(&f->mu);
    backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
  }
  pthread_mutex_lock(&f->mu);
  f->failed = true;
  pthread_mutex_unlock(&f->mu);
  return NULL;
}

ms_sim_framework *ms_sim_framework_start(const char *target, const ms_sim_framework_options *o,
                                         ms_error **err) {
  ms_sim_framework *f = ms_xcalloc(1, sizeof(*f));
  pthread_mutex_init(&f->mu, NULL);
  f->name = ms_xstrdup(o->name ? o->name : "sim");
  f->role = ms_xstrdup(o->role ? o->role : "*");
  f->mode = o->mode;
  f->max_tasks = o->max_tasks;
  f->refuse_ms = o->refuse_ms;
  f->reconnect = o->more_targets != NULL;
  f->ledger = o->ledger;
  f->op_acks = !o->no_operation_acks;
  f->id = o->framework_id ? ms_xstrdup(o->framework_id) : NULL;
  f->targets = targets_of(target, o->more_targets, &f->ntargets);
  f->chs = ms_xcalloc(f->ntargets, sizeof(*f->chs));
  if (o->task_resources && ms_resources_parse_text(o->task_resources, NULL, &f->task_res, err) < 0) {
    ms_sim_framework_free(f);
    return NULL;
  }
  int rc = MS_ERR;
  for (size_t i = 0; i < f->ntargets; i++)
    if (!(f->chs[i] = ms_rpc_channel_new(f->targets[i], NULL, err)))
      goto out;
  f->rx_started = pthread_create(&f->rx, NULL, fw_rx, f) == 0;
  int64_t end = ms_time_mono_ms() + START_TIMEOUT_MS;
  pthread_mutex_lock(&f->mu);
  while (!f->subscribed && !f->failed && ms_time_mono_ms() < end) {
    pthread_mutex_unlock(&f->mu);
    ms_time_sleep_ms(5);
    pthread_mutex_lock(&f->mu);
  }
  rc = f->subscribed
           ? 0
           : ms_error_set(err, MS_DEADLINE_EXCEEDED, "simulated framework: no SUBSCRIBED from `%s`", target);
  pthread_mutex_unlock(&f->mu);
out:
  if (rc < 0) {
    ms_sim_framework_free(f);
    return NULL;
  }
  return f;
}

const char *ms_sim_framework_id(const ms_sim_framework *f) {
  return f->id;
}

const char *ms_sim_framework_stream_id(const ms_sim_framework *f) {
  return f->stream_id;
}

void ms_sim_framework_stats_get(ms_sim_framework *f, ms_sim_framework_stats *ret) {
  pthread_mutex_lock(&f->mu);
  *ret = f->stats;
  ret->connected = f->connected;
  pthread_mutex_unlock(&f->mu);
}

void ms_sim_framework_set_mode(ms_sim_framework *f, ms_sim_mode mode) {
  pthread_mutex_lock(&f->mu);
  f->mode = mode;
  pthread_mutex_unlock(&f->mu);
}

Meseta__V1__Offer *ms_sim_framework_take_offer(ms_sim_framework *f) {
  Meseta__V1__Offer *o = NULL;
  pthread_mutex_lock(&f->mu);
  if (f->nheld) {
    o = f->held[0];
    memmove(&f->held[0], &f->held[1], (f->nheld - 1) * sizeof(*f->held));
    f->nheld--;
  }
  pthread_mutex_unlock(&f->mu);
  return o;
}

void ms_sim_framework_disconnect(ms_sim_framework *f) {
  pthread_mutex_lock(&f->mu);
  f->stop = true; /* for good: no reconnection */
  if (f->st)
    ms_rpc_stream_cancel(f->st);
  pthread_mutex_unlock(&f->mu);
}

void ms_sim_framework_free(ms_sim_framework *f) {
  if (!f)
    return;
  ms_sim_framework_disconnect(f);
  if (f->rx_started)
    pthread_join(f->rx, NULL);
  for (size_t i = 0; i < f->ntargets; i++) {
    ms_rpc_channel_free(f->chs[i]);
    free(f->targets[i]);
  }
  free(f->chs);
  free(f->targets);
  for (size_t i = 0; i < f->nft; i++)
    free(f->ft[i].id);
  free(f->ft);
  for (size_t i = 0; i < f->nold; i++)
    free(f->old_streams[i]);
  free(f->old_streams);
  for (size_t i = 0; i < f->nheld; i++)
    free_msg(f->held[i]);
  free(f->held);
  for (size_t i = 0; i < f->nopst; i++)
    free_msg(f->opst[i]);
  free(f->opst);
  ms_resources_free(f->task_res);
  free(f->name);
  free(f->role);
  free(f->id);
  free(f->stream_id);
  pthread_mutex_destroy(&f->mu);
  free(f);
}
