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
  int64_t finish_at; /* mono ms; -1: never */
} sim_task;

struct ms_sim_agent {
  ms_rpc_channel *ch;
  ms_rpc_stream *st;
  char *id;
  int64_t task_ms;
  pthread_t rx, ticker;
  bool rx_started, ticker_started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool registered, failed, stop;
  sim_task *tasks;
  size_t ntasks, cap;
  ms_sim_agent_stats stats;
};

/* Sends a status; the lock is held (sends from two threads must not interleave). */
static void agent_status(ms_sim_agent *a, const char *fw, const char *task, Meseta__V1__TaskState state) {
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = (char *)fw;
  Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
  tid.value = (char *)task;
  uint8_t uuid[16];
  getrandom(uuid, sizeof(uuid), 0);
  Meseta__V1__TaskStatus st = MESETA__V1__TASK_STATUS__INIT;
  st.task_id = &tid;
  st.state = state;
  st.source = MESETA__V1__TASK_STATUS__SOURCE__SOURCE_AGENT;
  st.uuid.data = uuid;
  st.uuid.len = sizeof(uuid);
  Meseta__V1__AgentMessage__StatusUpdate u = MESETA__V1__AGENT_MESSAGE__STATUS_UPDATE__INIT;
  u.framework_id = &fid;
  u.status = &st;
  u.latest_state = state;
  Meseta__V1__AgentMessage m = MESETA__V1__AGENT_MESSAGE__INIT;
  m.message_case = MESETA__V1__AGENT_MESSAGE__MESSAGE_STATUS_UPDATE;
  m.status_update = &u;
  ms_rpc_stream_send(a->st, &m.base, NULL);
}

static void agent_drop_task(ms_sim_agent *a, size_t i) {
  free(a->tasks[i].framework_id);
  free(a->tasks[i].task_id);
  a->tasks[i] = a->tasks[--a->ntasks];
  a->stats.running--;
}

static void agent_launch(ms_sim_agent *a, const char *fw, const Meseta__V1__TaskInfo *t) {
  const char *tid = t->task_id ? t->task_id->value : "";
  a->stats.run_tasks++;
  agent_status(a, fw, tid, MESETA__V1__TASK_STATE__TASK_RUNNING);
  if (a->task_ms == 0) {
    agent_status(a, fw, tid, MESETA__V1__TASK_STATE__TASK_FINISHED);
    return;
  }
  if (a->ntasks == a->cap) {
    a->cap = a->cap ? 2 * a->cap : 16;
    a->tasks = ms_xrealloc(a->tasks, a->cap * sizeof(*a->tasks));
  }
  a->tasks[a->ntasks++] =
      (sim_task){ms_xstrdup(fw), ms_xstrdup(tid), a->task_ms < 0 ? -1 : ms_time_mono_ms() + a->task_ms};
  a->stats.running++;
}

static void agent_on_message(ms_sim_agent *a, const Meseta__V1__AllocatorMessage *m) {
  pthread_mutex_lock(&a->mu);
  switch (m->message_case) {
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_REGISTERED:
    a->id = ms_xstrdup(m->registered->agent_id->value);
    a->registered = true;
    pthread_cond_broadcast(&a->cv);
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
    break;
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_PING: {
    a->stats.pings++;
    Meseta__V1__AgentMessage__Heartbeat hb = MESETA__V1__AGENT_MESSAGE__HEARTBEAT__INIT;
    hb.sequence = m->ping->sequence;
    Meseta__V1__AgentMessage r = MESETA__V1__AGENT_MESSAGE__INIT;
    r.message_case = MESETA__V1__AGENT_MESSAGE__MESSAGE_HEARTBEAT;
    r.heartbeat = &hb;
    ms_rpc_stream_send(a->st, &r.base, NULL);
    break;
  }
  default:
    break;
  }
  pthread_mutex_unlock(&a->mu);
}

static void *agent_rx(void *arg) {
  ms_sim_agent *a = arg;
  for (;;) {
    ProtobufCMessage *m = NULL;
    if (ms_rpc_stream_recv(a->st, &meseta__v1__allocator_message__descriptor, &m, NULL) != 1)
      break;
    agent_on_message(a, (Meseta__V1__AllocatorMessage *)m);
    free_msg(m);
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
      if (a->tasks[i].finish_at >= 0 && a->tasks[i].finish_at <= now && !a->failed) {
        agent_status(a, a->tasks[i].framework_id, a->tasks[i].task_id, MESETA__V1__TASK_STATE__TASK_FINISHED);
        agent_drop_task(a, i);
      } else {
        i++;
      }
    }
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
  Meseta__V1__Resources *rp = ms_resources_to_proto(res);
  ms_resources_free(res);
  ms_sim_agent *a = ms_xcalloc(1, sizeof(*a));
  pthread_mutex_init(&a->mu, NULL);
  pthread_cond_init(&a->cv, NULL);
  a->task_ms = o->task_ms;
  Meseta__V1__AgentInfo info = MESETA__V1__AGENT_INFO__INIT;
  info.hostname = (char *)(o->hostname ? o->hostname : "sim-agent");
  info.n_resources = rp->n_resources;
  info.resources = rp->resources;
  Meseta__V1__AgentMessage__Register reg = MESETA__V1__AGENT_MESSAGE__REGISTER__INIT;
  reg.agent_info = &info;
  reg.version = "sim";
  Meseta__V1__AgentMessage m = MESETA__V1__AGENT_MESSAGE__INIT;
  m.message_case = MESETA__V1__AGENT_MESSAGE__MESSAGE_REGISTER;
  m.register_ = &reg;
  int rc = MS_ERR;
  if (!(a->ch = ms_rpc_channel_new(target, NULL, err)) ||
      !(a->st = ms_rpc_stream_open(a->ch, CONNECT, NULL, NULL, err)) ||
      ms_rpc_stream_send(a->st, &m.base, err) < 0)
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
  ms_resources_proto_free(rp);
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
  pthread_mutex_unlock(&a->mu);
}

void ms_sim_agent_disconnect(ms_sim_agent *a) {
  if (a->st)
    ms_rpc_stream_cancel(a->st);
}

void ms_sim_agent_free(ms_sim_agent *a) {
  if (!a)
    return;
  pthread_mutex_lock(&a->mu);
  a->stop = true;
  pthread_mutex_unlock(&a->mu);
  ms_sim_agent_disconnect(a);
  if (a->rx_started)
    pthread_join(a->rx, NULL);
  if (a->ticker_started)
    pthread_join(a->ticker, NULL);
  ms_rpc_stream_free(a->st);
  ms_rpc_channel_free(a->ch);
  while (a->ntasks)
    agent_drop_task(a, 0);
  free(a->tasks);
  free(a->id);
  pthread_mutex_destroy(&a->mu);
  pthread_cond_destroy(&a->cv);
  free(a);
}

/* ---- frameworks ---- */

struct ms_sim_framework {
  ms_rpc_channel *ch;
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
  uint64_t next_task;
  ms_sim_framework_stats stats;
};

static void fill_ids(ms_sim_framework *f, Meseta__V1__FrameworkID *fid) {
  meseta__v1__framework_id__init(fid);
  fid->value = f->id;
}

int ms_sim_framework_call(ms_sim_framework *f, const Meseta__V1__SchedulerCallRequest *req, ms_error **err) {
  ProtobufCMessage *resp = NULL;
  ms_rpc_call_options co = {.timeout_ms = 10000};
  if (ms_rpc_unary(f->ch, SCHED_CALL, &req->base, &meseta__v1__scheduler_call_response__descriptor, &co,
                   &resp, err) < 0)
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

static void fw_on_update(ms_sim_framework *f, const Meseta__V1__TaskStatus *st) {
  pthread_mutex_lock(&f->mu);
  f->stats.updates++;
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

static void fw_on_event(ms_sim_framework *f, Meseta__V1__Event *ev) {
  pthread_mutex_lock(&f->mu);
  ms_sim_mode mode = f->mode;
  switch (ev->event_case) {
  case MESETA__V1__EVENT__EVENT_SUBSCRIBED:
    f->id = ms_xstrdup(ev->subscribed->framework_id->value);
    f->stream_id = ms_xstrdup(ev->subscribed->stream_id);
    f->subscribed = true;
    break;
  case MESETA__V1__EVENT__EVENT_OFFERS:
    f->stats.offer_events++;
    f->stats.offers += ev->offers->n_offers;
    break;
  case MESETA__V1__EVENT__EVENT_RESCIND:
    f->stats.rescinds++;
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
}

static void *fw_rx(void *arg) {
  ms_sim_framework *f = arg;
  for (;;) {
    ProtobufCMessage *m = NULL;
    if (ms_rpc_stream_recv(f->st, &meseta__v1__event__descriptor, &m, NULL) != 1)
      break;
    fw_on_event(f, (Meseta__V1__Event *)m);
    free_msg(m);
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
  if (o->task_resources && ms_resources_parse_text(o->task_resources, NULL, &f->task_res, err) < 0) {
    ms_sim_framework_free(f);
    return NULL;
  }
  char *roles[] = {f->role};
  Meseta__V1__FrameworkInfo info = MESETA__V1__FRAMEWORK_INFO__INIT;
  info.name = f->name;
  info.user = "sim";
  info.n_roles = 1;
  info.roles = roles;
  Meseta__V1__SubscribeRequest req = MESETA__V1__SUBSCRIBE_REQUEST__INIT;
  req.framework_info = &info;
  Meseta__V1__FrameworkSubscription sub = MESETA__V1__FRAMEWORK_SUBSCRIPTION__INIT;
  sub.request = &req;
  int rc = MS_ERR;
  if (!(f->ch = ms_rpc_channel_new(target, NULL, err)) ||
      !(f->st = ms_rpc_stream_open(f->ch, SUBSCRIBE, &sub.base, NULL, err)))
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
  if (f->st)
    ms_rpc_stream_cancel(f->st);
}

void ms_sim_framework_free(ms_sim_framework *f) {
  if (!f)
    return;
  ms_sim_framework_disconnect(f);
  if (f->rx_started)
    pthread_join(f->rx, NULL);
  ms_rpc_stream_free(f->st);
  ms_rpc_channel_free(f->ch);
  for (size_t i = 0; i < f->nheld; i++)
    free_msg(f->held[i]);
  free(f->held);
  ms_resources_free(f->task_res);
  free(f->name);
  free(f->role);
  free(f->id);
  free(f->stream_id);
  pthread_mutex_destroy(&f->mu);
  free(f);
}
