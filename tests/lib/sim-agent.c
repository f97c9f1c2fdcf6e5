/* Simulated agents: an AgentLink client each, answering launches, kills and
 * operations the way a real agent would, and re-registering after failures. */
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
#include "sim.h"

#define CONNECT "/meseta.v1.AgentLink/Connect"
#define SUBSCRIBE "/meseta.v1.Allocator/SubscribeFramework"
#define SCHED_CALL "/meseta.v1.Allocator/SchedulerCall"
#define START_TIMEOUT_MS 10000
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
  char *fail_next;                  /* the next APPLY_OPERATION fails with this message */
  ms_sim_launch_answer next_launch; /* for the next task to run */
  ms_sim_agent_stats stats;
};

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

void ms_sim_agent_next_launch(ms_sim_agent *a, ms_sim_launch_answer how) {
  pthread_mutex_lock(&a->mu);
  a->next_launch = how;
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
    sim_free_msg(t->info);
  a->tasks[i] = a->tasks[--a->ntasks];
  a->stats.running--;
}

static void agent_launch(ms_sim_agent *a, const char *fw, const Meseta__V1__TaskInfo *t) {
  const char *tid = t->task_id ? t->task_id->value : "";
  a->stats.run_tasks++;
  if (a->next_launch != MS_SIM_LAUNCH_RUN) {
    bool error = a->next_launch == MS_SIM_LAUNCH_ERROR;
    a->next_launch = MS_SIM_LAUNCH_RUN;
    if (error)
      agent_status(a, fw, tid, MESETA__V1__TASK_STATE__TASK_ERROR);
    return;
  }
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
  /* It records framework messages (stats.last_message): it may declare that it takes them. */
  Meseta__V1__AgentInfo__Capability cap = MESETA__V1__AGENT_INFO__CAPABILITY__INIT;
  cap.type = MESETA__V1__AGENT_INFO__CAPABILITY__TYPE__EXECUTOR_MESSAGES;
  Meseta__V1__AgentInfo__Capability *caps[] = {&cap};
  info.n_capabilities = 1;
  info.capabilities = caps;
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
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_SHUTDOWN_EXECUTOR:
    a->stats.executor_shutdowns++;
    break;
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_FRAMEWORK_TO_EXECUTOR: {
    a->stats.framework_messages++;
    size_t n = m->framework_to_executor->data.len;
    if (n >= sizeof(a->stats.last_message))
      n = sizeof(a->stats.last_message) - 1;
    if (n)
      memcpy(a->stats.last_message, m->framework_to_executor->data.data, n);
    a->stats.last_message[n] = 0;
    break;
  }
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_UPDATE_FRAMEWORK: {
    a->stats.framework_updates++;
    const Meseta__V1__FrameworkInfo *fi = m->update_framework->framework_info;
    snprintf(a->stats.last_framework_name, sizeof(a->stats.last_framework_name), "%s",
             fi && fi->name ? fi->name : "");
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
      sim_free_msg(m);
      backoff = 100;
    }
    pthread_mutex_lock(&a->mu);
    a->st = NULL;
    a->connected = false;
    bool again = a->reconnect && !a->stop;
    pthread_mutex_unlock(&a->mu);
    ms_rpc_stream_free(st);
    if (!again || !sim_nap(&a->mu, &a->stop, backoff))
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
  a->targets = sim_targets_of(target, o->more_targets, &a->ntargets);
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

void ms_sim_agent_cut(ms_sim_agent *a) {
  pthread_mutex_lock(&a->mu);
  a->reconnect = true;
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
