/* Simulated frameworks: a scheduler event stream each, accepting or declining
 * offers, acknowledging updates, reconnecting to a new leader. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "meseta/alloc.h"
#include "meseta/pb.h"
#include "meseta/resources-io.h"
#include "meseta/rpc.h"
#include "meseta/task-state.h"
#include "meseta/time.h"
#include "meseta/v1/agent_link.pb-c.h"

#include "sim-internal.h"
#include "sim.h"

#define CONNECT "/meseta.v1.AgentLink/Connect"
#define SUBSCRIBE "/meseta.v1.Allocator/SubscribeFramework"
#define SCHED_CALL "/meseta.v1.Allocator/SchedulerCall"
#define PUBLIC_SUBSCRIBE "/meseta.v1.Scheduler/Subscribe"
#define START_TIMEOUT_MS 10000
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
  bool public_api;
  int64_t failover_timeout_ms;
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
  Meseta__V1__TaskStatus **tst; /* the last status per task id */
  size_t ntst;
  bool no_status_acks;
  Meseta__V1__TaskStatus **rst; /* the last reconciliation answer per task id */
  size_t nrst;
  ms_sim_framework_stats stats;
};

static void fill_ids(ms_sim_framework *f, Meseta__V1__FrameworkID *fid) {
  meseta__v1__framework_id__init(fid);
  fid->value = f->id;
}

/* The public API: the request inside the wrapper's oneof, to the Scheduler method
 * that takes it. */
static int public_call(ms_rpc_channel *ch, const Meseta__V1__SchedulerCallRequest *req,
                       const ms_rpc_call_options *co, ms_error **err) {
  const ProtobufCFieldDescriptor *fd = protobuf_c_message_descriptor_get_field(
      &meseta__v1__scheduler_call_request__descriptor, req->call_case);
  const ProtobufCServiceDescriptor *svc = &meseta__v1__scheduler__descriptor;
  const ProtobufCMethodDescriptor *md = NULL;
  for (unsigned i = 0; fd && i < svc->n_methods && !md; i++)
    if (svc->methods[i].input == fd->descriptor)
      md = &svc->methods[i];
  if (!md)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "simulated framework: call %d has no Scheduler method",
                        (int)req->call_case);
  const ProtobufCMessage *inner = *(const ProtobufCMessage *const *)((const char *)req + fd->offset);
  char path[128];
  snprintf(path, sizeof(path), "/%s/%s", svc->name, md->name);
  ProtobufCMessage *resp = NULL;
  if (ms_rpc_unary(ch, path, inner, md->output, co, &resp, err) < 0)
    return MS_ERR;
  sim_free_msg(resp);
  return 0;
}

int ms_sim_framework_call(ms_sim_framework *f, const Meseta__V1__SchedulerCallRequest *req, ms_error **err) {
  ProtobufCMessage *resp = NULL;
  ms_rpc_call_options co = {.timeout_ms = 10000};
  pthread_mutex_lock(&f->mu);
  ms_rpc_channel *ch = f->chs[f->cur];
  pthread_mutex_unlock(&f->mu);
  if (f->public_api)
    return public_call(ch, req, &co, err);
  if (ms_rpc_unary(ch, SCHED_CALL, &req->base, &meseta__v1__scheduler_call_response__descriptor, &co, &resp,
                   err) < 0)
    return MS_ERR;
  sim_free_msg(resp);
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

int ms_sim_framework_accept(ms_sim_framework *f, const Meseta__V1__Offer *offer,
                            Meseta__V1__Offer__Operation *op, int64_t refuse_ms, ms_error **err) {
  Meseta__V1__FrameworkID fid;
  fill_ids(f, &fid);
  Meseta__V1__Offer__Operation *ops[] = {op};
  Meseta__V1__OfferID *oids[] = {offer->id};
  Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
  d.seconds = refuse_ms > 0 ? refuse_ms / 1000 : 0;
  d.nanos = refuse_ms > 0 ? (int32_t)(refuse_ms % 1000) * 1000000 : 0;
  Meseta__V1__Filters filters = MESETA__V1__FILTERS__INIT;
  filters.refuse_duration = refuse_ms >= 0 ? &d : NULL;
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
  int rc = ms_sim_framework_accept(f, offer, &op, f->refuse_ms, err);
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

/* Keeps st as the last status of its task in *v. Under f->mu. */
static void keep_status(Meseta__V1__TaskStatus ***v, size_t *n, const Meseta__V1__TaskStatus *st) {
  size_t i = 0;
  while (i < *n && strcmp((*v)[i]->task_id->value, st->task_id->value) != 0)
    i++;
  if (i == *n)
    *v = ms_xrealloc(*v, ++*n * sizeof(**v));
  else
    sim_free_msg((*v)[i]);
  (*v)[i] = (Meseta__V1__TaskStatus *)ms_pb_dup(&st->base);
}

static void fw_on_update(ms_sim_framework *f, const Meseta__V1__TaskStatus *st) {
  pthread_mutex_lock(&f->mu);
  f->stats.updates++;
  if (st->task_id && st->task_id->value &&
      st->reason == MESETA__V1__TASK_STATUS__REASON__REASON_RECONCILIATION)
    keep_status(&f->rst, &f->nrst, st);
  bool ack = !f->no_status_acks;
  if (st->task_id && st->task_id->value) {
    size_t i = 0;
    while (i < f->ntst && strcmp(f->tst[i]->task_id->value, st->task_id->value) != 0)
      i++;
    if (i == f->ntst)
      f->tst = ms_xrealloc(f->tst, ++f->ntst * sizeof(*f->tst));
    else
      sim_free_msg(f->tst[i]);
    f->tst[i] = (Meseta__V1__TaskStatus *)ms_pb_dup(&st->base);
  }
  sim_ftask *t = st->task_id ? ft_find(f, st->task_id->value) : NULL;
  bool fresh = true; /* not a resend of a terminal update already seen */
  if (t && ms_task_state_terminal(st->state)) {
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
    if (ack && st->uuid.len == 16 && st->agent_id)
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
  if (ack && st->uuid.len == 16 && st->agent_id)
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
        sim_free_msg(f->held[i]);
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
    sim_free_msg(f->opst[i]);
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

Meseta__V1__TaskStatus *ms_sim_framework_task_status(ms_sim_framework *f, const char *task_id) {
  Meseta__V1__TaskStatus *r = NULL;
  pthread_mutex_lock(&f->mu);
  for (size_t i = 0; i < f->ntst && !r; i++)
    if (strcmp(f->tst[i]->task_id->value, task_id) == 0)
      r = (Meseta__V1__TaskStatus *)ms_pb_dup(&f->tst[i]->base);
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
  /* refuse 0: what is left comes back at once */
  int rc = ms_sim_framework_accept(f, offer, &op, 0, err);
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
  Google__Protobuf__Duration fot = GOOGLE__PROTOBUF__DURATION__INIT;
  fot.seconds = f->failover_timeout_ms / 1000;
  fot.nanos = (int32_t)(f->failover_timeout_ms % 1000) * 1000000;
  info.failover_timeout = f->failover_timeout_ms > 0 ? &fot : NULL;
  Meseta__V1__SubscribeRequest req = MESETA__V1__SUBSCRIBE_REQUEST__INIT;
  req.framework_info = &info;
  if (f->public_api)
    return ms_rpc_stream_open(f->chs[f->cur], PUBLIC_SUBSCRIBE, &req.base, NULL, NULL);
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
      sim_free_msg(m);
      backoff = 100;
    }
    pthread_mutex_lock(&f->mu);
    f->st = NULL;
    f->connected = false;
    for (size_t i = 0; i < f->nheld; i++) /* the old leader's offers are void */
      sim_free_msg(f->held[i]);
    f->nheld = 0;
    bool again = f->reconnect && !f->stop;
    pthread_mutex_unlock(&f->mu);
    sim_ledger_offer_gone(f->ledger, f, NULL);
    ms_rpc_stream_free(st);
    if (!again || !sim_nap(&f->mu, &f->stop, backoff))
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
  f->public_api = o->public_api;
  f->failover_timeout_ms = o->failover_timeout_ms;
  f->ledger = o->ledger;
  f->op_acks = !o->no_operation_acks;
  f->no_status_acks = o->no_status_acks;
  f->id = o->framework_id ? ms_xstrdup(o->framework_id) : NULL;
  f->targets = sim_targets_of(target, o->more_targets, &f->ntargets);
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
    sim_free_msg(f->held[i]);
  free(f->held);
  for (size_t i = 0; i < f->nopst; i++)
    sim_free_msg(f->opst[i]);
  free(f->opst);
  for (size_t i = 0; i < f->ntst; i++)
    sim_free_msg(f->tst[i]);
  free(f->tst);
  for (size_t i = 0; i < f->nrst; i++)
    sim_free_msg(f->rst[i]);
  free(f->rst);
  ms_resources_free(f->task_res);
  free(f->name);
  free(f->role);
  free(f->id);
  free(f->stream_id);
  pthread_mutex_destroy(&f->mu);
  free(f);
}

/* ---- reconciliation (tasks) ---- */

Meseta__V1__TaskStatus *ms_sim_framework_reconciled(ms_sim_framework *f, const char *task_id) {
  Meseta__V1__TaskStatus *r = NULL;
  pthread_mutex_lock(&f->mu);
  for (size_t i = 0; i < f->nrst && !r; i++)
    if (strcmp(f->rst[i]->task_id->value, task_id) == 0)
      r = (Meseta__V1__TaskStatus *)ms_pb_dup(&f->rst[i]->base);
  pthread_mutex_unlock(&f->mu);
  return r;
}

void ms_sim_framework_forget_reconciled(ms_sim_framework *f) {
  pthread_mutex_lock(&f->mu);
  for (size_t i = 0; i < f->nrst; i++)
    sim_free_msg(f->rst[i]);
  f->nrst = 0;
  pthread_mutex_unlock(&f->mu);
}

void ms_sim_framework_set_status_acks(ms_sim_framework *f, bool ack) {
  pthread_mutex_lock(&f->mu);
  f->no_status_acks = !ack;
  pthread_mutex_unlock(&f->mu);
}

int ms_sim_framework_reconcile(ms_sim_framework *f, const char *const *task_ids, size_t n, ms_error **err) {
  Meseta__V1__FrameworkID fid;
  fill_ids(f, &fid);
  Meseta__V1__ReconcileRequest__Task *ts = ms_xcalloc(n + 1, sizeof(*ts));
  Meseta__V1__ReconcileRequest__Task **tp = ms_xcalloc(n + 1, sizeof(*tp));
  Meseta__V1__TaskID *ids = ms_xcalloc(n + 1, sizeof(*ids));
  for (size_t i = 0; i < n; i++) {
    meseta__v1__reconcile_request__task__init(&ts[i]);
    meseta__v1__task_id__init(&ids[i]);
    ids[i].value = (char *)task_ids[i];
    ts[i].task_id = &ids[i];
    tp[i] = &ts[i];
  }
  Meseta__V1__ReconcileRequest r = MESETA__V1__RECONCILE_REQUEST__INIT;
  r.framework_id = &fid;
  r.stream_id = f->stream_id;
  r.n_tasks = n;
  r.tasks = tp;
  Meseta__V1__SchedulerCallRequest c = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  c.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_RECONCILE;
  c.reconcile = &r;
  int rc = ms_sim_framework_call(f, &c, err);
  free(ts);
  free(tp);
  free(ids);
  return rc;
}
