/* Allocator.SchedulerCall: one row per scheduler call. Every call names the framework
 * and its current stream (svc_framework_check); effects reach the framework as events
 * on its stream and the agents as messages on their links. A failing call changes
 * nothing. */
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/buf.h"
#include "meseta/log.h"
#include "meseta/pb-check.h"
#include "meseta/pb.h"
#include "meseta/resources-io.h"
#include "meseta/roles.h"
#include "meseta/task-check.h"

#include "alloc-svc-calls-internal.h"
#include "alloc-svc-completed.h"
#include "alloc-svc-core.h"
#include "alloc-svc-frameworks.h"
#include "alloc-svc-history.h"
#include "alloc-svc-operations.h"
#include "alloc-svc-registry.h"
#include "alloc-svc-state.h"
#include "alloc-svc-tasks.h"

static int64_t refuse_ms(const Meseta__V1__Filters *f) {
  if (!f || !f->refuse_duration)
    return -1; /* the engine's default */
  return f->refuse_duration->seconds * 1000 + f->refuse_duration->nanos / 1000000;
}

/* Resources of a launch, without allocation role (the model's form). */
static int launch_resources(Meseta__V1__Resource *const *r, size_t n, ms_resources **ret, const char *what,
                            ms_error **err) {
  if (ms_resources_from_proto(r, n, ret, err) < 0)
    return ms_error_prefix(err, "`%s`", what);
  ms_resources_allocate(*ret, NULL, NULL);
  return 0;
}

/* ---- accept ---- */

typedef struct launch_plan {
  alloc_accept_op *ops;
  ms_resources **sets; /* every set the ops point to */
  ms_operation *rops;  /* resource operations */
  Meseta__V1__Operation *rop_msgs;
  uint32_t nops, nsets, nrops;
} launch_plan;

static ms_resources *plan_set(launch_plan *p, ms_resources *r) {
  p->sets[p->nsets++] = r;
  return r;
}

static void plan_release(launch_plan *p) {
  for (uint32_t i = 0; i < p->nsets; i++)
    ms_resources_free(p->sets[i]);
  for (uint32_t i = 0; i < p->nrops; i++)
    ms_operation_release(&p->rops[i]);
  free(p->ops);
  free(p->sets);
  free(p->rops);
  free(p->rop_msgs);
}

static bool task_id_ok(alloc_service *s, svc_framework *fw, const Meseta__V1__TaskInfo *t, const char *where,
                       ms_error **err) {
  if (!t->task_id || !t->task_id->value || !*t->task_id->value) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.task_id` is missing", where);
    return false;
  }
  if (svc_task_get(s, fw->e.key, t->task_id->value)) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.task_id`: task `%s` already exists", where,
                 t->task_id->value);
    return false;
  }
  return true;
}

/* Builds the engine's operations: one LAUNCH per task (its executor's resources with
 * the first task that brings it), one for a whole task group, and resource operations. */
static int plan_accept(alloc_service *s, svc_framework *fw, const Meseta__V1__AcceptRequest *r,
                       const char *agent_id, launch_plan *p, ms_error **err) {
  size_t maxsets = 0;
  for (size_t k = 0; k < r->n_operations; k++) {
    const Meseta__V1__Offer__Operation *o = r->operations[k];
    maxsets +=
        o->operation_case == MESETA__V1__OFFER__OPERATION__OPERATION_LAUNCH ? 2 * o->launch->n_task_infos : 1;
  }
  p->ops = ms_xcalloc(maxsets + 1, sizeof(*p->ops));
  p->sets = ms_xcalloc(2 * maxsets + 1, sizeof(*p->sets));
  p->rops = ms_xcalloc(r->n_operations + 1, sizeof(*p->rops));
  p->rop_msgs = ms_xcalloc(r->n_operations + 1, sizeof(*p->rop_msgs));
  char where[128];
  for (size_t k = 0; k < r->n_operations; k++) {
    const Meseta__V1__Offer__Operation *o = r->operations[k];
    switch (o->operation_case) {
    case MESETA__V1__OFFER__OPERATION__OPERATION_LAUNCH:
      for (size_t j = 0; j < o->launch->n_task_infos; j++) {
        const Meseta__V1__TaskInfo *t = o->launch->task_infos[j];
        snprintf(where, sizeof(where), "accept.operations[%zu].launch.task_infos[%zu]", k, j);
        if (!task_id_ok(s, fw, t, where, err))
          return MS_ERR;
        if (t->agent_id && t->agent_id->value && *t->agent_id->value && strcmp(t->agent_id->value, agent_id))
          return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.agent_id` `%s` is not the offers' agent `%s`",
                              where, t->agent_id->value, agent_id);
        ms_resources *res;
        if (launch_resources(t->resources, t->n_resources, &res, where, err) < 0)
          return MS_ERR;
        plan_set(p, res);
        if (ms_task_check_minimums(res, err) < 0)
          return ms_error_prefix(err, "`%s.resources`", where);
        if (t->executor && t->executor->executor_id &&
            !svc_executor_known(s, agent_id, fw->e.key, t->executor->executor_id->value)) {
          ms_resources *x;
          if (launch_resources(t->executor->resources, t->executor->n_resources, &x, where, err) < 0)
            return MS_ERR;
          plan_set(p, x);
          res = plan_set(p, ms_resources_clone(res));
          ms_resources_add(res, x, NULL);
        }
        p->ops[p->nops++] = (alloc_accept_op){.kind = ALLOC_OP_LAUNCH, .launch = res};
      }
      break;
    case MESETA__V1__OFFER__OPERATION__OPERATION_LAUNCH_GROUP: {
      const Meseta__V1__Offer__Operation__LaunchGroup *g = o->launch_group;
      snprintf(where, sizeof(where), "accept.operations[%zu].launch_group", k);
      if (!g->executor || !g->executor->executor_id || !*g->executor->executor_id->value)
        return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.executor.executor_id` is missing", where);
      if (!g->task_group || g->task_group->n_tasks == 0)
        return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.task_group.tasks` is empty", where);
      ms_resources *all = plan_set(p, ms_resources_new());
      if (!svc_executor_known(s, agent_id, fw->e.key, g->executor->executor_id->value)) {
        ms_resources *x;
        if (launch_resources(g->executor->resources, g->executor->n_resources, &x, where, err) < 0)
          return MS_ERR;
        ms_resources_add(all, x, NULL);
        ms_resources_free(x);
      }
      for (size_t j = 0; j < g->task_group->n_tasks; j++) {
        char tw[sizeof(where) + 64];
        snprintf(tw, sizeof(tw), "%s.task_group.tasks[%zu]", where, j);
        ms_resources *res;
        if (!task_id_ok(s, fw, g->task_group->tasks[j], tw, err) ||
            launch_resources(g->task_group->tasks[j]->resources, g->task_group->tasks[j]->n_resources, &res,
                             tw, err) < 0)
          return MS_ERR;
        if (ms_task_check_minimums(res, err) < 0) {
          ms_resources_free(res);
          return ms_error_prefix(err, "`%s.resources`", tw);
        }
        ms_resources_add(all, res, NULL);
        ms_resources_free(res);
      }
      p->ops[p->nops++] = (alloc_accept_op){.kind = ALLOC_OP_LAUNCH, .launch = all};
      break;
    }
    case MESETA__V1__OFFER__OPERATION__OPERATION_RESERVE:
    case MESETA__V1__OFFER__OPERATION__OPERATION_UNRESERVE:
    case MESETA__V1__OFFER__OPERATION__OPERATION_CREATE:
    case MESETA__V1__OFFER__OPERATION__OPERATION_DESTROY:
    case MESETA__V1__OFFER__OPERATION__OPERATION_GROW_VOLUME:
    case MESETA__V1__OFFER__OPERATION__OPERATION_SHRINK_VOLUME:
    case MESETA__V1__OFFER__OPERATION__OPERATION_CREATE_DISK:
    case MESETA__V1__OFFER__OPERATION__OPERATION_DESTROY_DISK: {
      /* Offer.Operation's payloads are meseta.v1.Operation's: one envelope for both. */
      Meseta__V1__Operation *m = &p->rop_msgs[p->nrops];
      meseta__v1__operation__init(m);
      m->type =
          (Meseta__V1__Operation__Type)(o->operation_case - MESETA__V1__OFFER__OPERATION__OPERATION_RESERVE +
                                        MESETA__V1__OPERATION__TYPE__RESERVE);
      /* Offer.Operation's payloads are a oneof (one union): set only the one given. */
      switch (o->operation_case) {
      case MESETA__V1__OFFER__OPERATION__OPERATION_RESERVE:
        m->reserve = o->reserve;
        break;
      case MESETA__V1__OFFER__OPERATION__OPERATION_UNRESERVE:
        m->unreserve = o->unreserve;
        break;
      case MESETA__V1__OFFER__OPERATION__OPERATION_CREATE:
        m->create = o->create;
        break;
      case MESETA__V1__OFFER__OPERATION__OPERATION_DESTROY:
        m->destroy = o->destroy;
        break;
      case MESETA__V1__OFFER__OPERATION__OPERATION_GROW_VOLUME:
        m->grow_volume = o->grow_volume;
        break;
      case MESETA__V1__OFFER__OPERATION__OPERATION_SHRINK_VOLUME:
        m->shrink_volume = o->shrink_volume;
        break;
      case MESETA__V1__OFFER__OPERATION__OPERATION_CREATE_DISK:
        m->create_disk = o->create_disk;
        break;
      default:
        m->destroy_disk = o->destroy_disk;
        break;
      }
      if (ms_operation_from_proto(m, &p->rops[p->nrops], err) < 0)
        return ms_error_prefix(err, "`accept.operations[%zu]`", k);
      /* The model's form: without allocation role (as launches). */
      ms_operation *mo = &p->rops[p->nrops];
      ms_resources *sets[] = {mo->resources, mo->source, mo->volume, mo->addition};
      for (size_t j = 0; j < MS_ARRAY_SIZE(sets); j++)
        if (sets[j])
          ms_resources_allocate(sets[j], NULL, NULL);
      p->ops[p->nops++] = (alloc_accept_op){.kind = ALLOC_OP_RESOURCES, .op = &p->rops[p->nrops]};
      p->nrops++;
      break;
    }
    default:
      return ms_error_set(err, MS_INVALID_ARGUMENT, "`accept.operations[%zu]` has no operation", k);
    }
  }
  return 0;
}

static Meseta__V1__AgentID *heap_agent_id(const char *id) {
  Meseta__V1__AgentID *a = ms_xmalloc(sizeof(*a));
  meseta__v1__agent_id__init(a);
  a->value = ms_xstrdup(id);
  return a;
}

/* The message copy is ours: fill in the agent id where the framework left it out. */
static void own_agent_id(Meseta__V1__TaskInfo *t, const char *agent_id) {
  if (t->agent_id && t->agent_id->value && *t->agent_id->value)
    return;
  if (t->agent_id)
    protobuf_c_message_free_unpacked(&t->agent_id->base, NULL);
  t->agent_id = heap_agent_id(agent_id);
}

/* Records the launches and tracked operations; the agent's messages go through an
 * outbox (after the operations' records are durable). */
static void dispatch(alloc_service *s, svc_framework *fw, const Meseta__V1__AcceptRequest *r, svc_agent *a,
                     const char *role, launch_plan *p) {
  uint32_t rop = 0;
  svc_outbox box = {0};
  for (size_t k = 0; k < r->n_operations; k++) {
    Meseta__V1__Offer__Operation *o = r->operations[k];
    Meseta__V1__AllocatorMessage m = MESETA__V1__ALLOCATOR_MESSAGE__INIT;
    if (o->operation_case == MESETA__V1__OFFER__OPERATION__OPERATION_LAUNCH) {
      for (size_t j = 0; j < o->launch->n_task_infos; j++) {
        Meseta__V1__TaskInfo *t = o->launch->task_infos[j];
        own_agent_id(t, a->e.key);
        ms_resources *res = NULL, *x = NULL;
        launch_resources(t->resources, t->n_resources, &res, "task", NULL);
        if (t->executor)
          launch_resources(t->executor->resources, t->executor->n_resources, &x, "executor", NULL);
        svc_task_add(s, fw->e.key, t->task_id->value, a->e.key, role, res,
                     t->executor && t->executor->executor_id ? t->executor->executor_id->value : NULL, x);
        ms_resources_free(res);
        ms_resources_free(x);
        Meseta__V1__AllocatorMessage__RunTask rt = MESETA__V1__ALLOCATOR_MESSAGE__RUN_TASK__INIT;
        rt.framework_info = fw->info;
        rt.task = t;
        m.message_case = MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_RUN_TASK;
        m.run_task = &rt;
        svc_outbox_add(&box, &m);
        ms_log_debug(fw->e.key, "task `%s` launched on agent `%s`", t->task_id->value, a->e.key);
      }
      if (o->id && o->id->value && *o->id->value)
        svc_op_track_launch(s, fw->e.key, a->e.key, o); /* settled by its tasks' statuses */
    } else if (o->operation_case == MESETA__V1__OFFER__OPERATION__OPERATION_LAUNCH_GROUP) {
      Meseta__V1__Offer__Operation__LaunchGroup *g = o->launch_group;
      ms_resources *x = NULL;
      launch_resources(g->executor->resources, g->executor->n_resources, &x, "executor", NULL);
      for (size_t j = 0; j < g->task_group->n_tasks; j++) {
        Meseta__V1__TaskInfo *t = g->task_group->tasks[j];
        own_agent_id(t, a->e.key);
        ms_resources *res = NULL;
        launch_resources(t->resources, t->n_resources, &res, "task", NULL);
        svc_task_add(s, fw->e.key, t->task_id->value, a->e.key, role, res, g->executor->executor_id->value,
                     x);
        ms_resources_free(res);
      }
      ms_resources_free(x);
      if (o->id && o->id->value && *o->id->value)
        svc_op_track_launch(s, fw->e.key, a->e.key, o); /* settled by its tasks' statuses */
      Meseta__V1__AllocatorMessage__RunTaskGroup rg = MESETA__V1__ALLOCATOR_MESSAGE__RUN_TASK_GROUP__INIT;
      rg.framework_info = fw->info;
      rg.executor = g->executor;
      rg.task_group = g->task_group;
      m.message_case = MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_RUN_TASK_GROUP;
      m.run_task_group = &rg;
      svc_outbox_add(&box, &m);
    } else {
      Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
      fid.value = fw->e.key;
      uint8_t uuid[16];
      svc_uuid_bytes(uuid);
      Meseta__V1__AllocatorMessage__ApplyOperation ap = MESETA__V1__ALLOCATOR_MESSAGE__APPLY_OPERATION__INIT;
      ap.framework_id = &fid;
      ap.operation = &p->rop_msgs[rop];
      ap.operation_id = o->id;
      ap.operation_uuid.data = uuid;
      ap.operation_uuid.len = sizeof(uuid);
      if (o->id && o->id->value && *o->id->value)
        svc_op_track(s, fw->e.key, a->e.key, o, &p->rop_msgs[rop], &p->rops[rop], uuid);
      rop++;
      m.message_case = MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_APPLY_OPERATION;
      m.apply_operation = &ap;
      svc_outbox_add(&box, &m);
    }
  }
  svc_outbox_flush(s, a->e.key, &box);
}

static int do_accept(alloc_service *s, const call_req *c, ms_error **err) {
  const Meseta__V1__AcceptRequest *r = c->accept;
  svc_framework *fw = svc_framework_check(s, "accept", r->framework_id, r->stream_id, err);
  if (!fw)
    return MS_ERR;
  if (r->n_offer_ids == 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`accept.offer_ids` is empty");
  const char **ids = ms_xcalloc(r->n_offer_ids, sizeof(*ids));
  for (size_t i = 0; i < r->n_offer_ids; i++) {
    ids[i] = r->offer_ids[i] ? r->offer_ids[i]->value : "";
    if (!ids[i] || !*ids[i]) {
      free(ids);
      return ms_error_set(err, MS_INVALID_ARGUMENT, "`accept.offer_ids[%zu]` is empty", i);
    }
  }
  alloc_offer_view v;
  if (alloc_model_offer(s->model, ids[0], &v, err) < 0 || strcmp(v.framework_id, fw->e.key) != 0) {
    ms_error_set(err, MS_NOT_FOUND, "`accept.offer_ids[0]`: offer `%s` is not an outstanding offer of `%s`",
                 ids[0], fw->e.key);
    free(ids);
    return MS_ERR;
  }
  char *agent_id = ms_xstrdup(v.agent_id), *role = ms_xstrdup(v.role);
  launch_plan p = {0};
  int rc = svc_ops_check_ids(s, fw->e.key, r, err);
  if (rc == 0)
    rc = plan_accept(s, fw, r, agent_id, &p, err);
  if (rc == 0) {
    rc = alloc_model_accept(s->model, fw->e.key, ids, (uint32_t)r->n_offer_ids, p.ops, p.nops,
                            refuse_ms(r->filters), svc_now_ms(), err);
    /* The model's FAILED_PRECONDITION here means the request asked for what its
     * offers do not hold: the caller's mistake. */
    if (rc < 0 && err && *err && (*err)->code == MS_FAILED_PRECONDITION)
      (*err)->code = MS_INVALID_ARGUMENT;
    if (rc < 0)
      ms_error_prefix(err, "accept");
  }
  if (rc == 0) {
    svc_agent *a = svc_table_get(&s->agents, agent_id);
    dispatch(s, fw, r, a, role, &p);
  }
  plan_release(&p);
  free(agent_id);
  free(role);
  free(ids);
  return rc;
}

/* ---- the other calls ---- */

static int do_decline(alloc_service *s, const call_req *c, ms_error **err) {
  const Meseta__V1__DeclineRequest *r = c->decline;
  svc_framework *fw = svc_framework_check(s, "decline", r->framework_id, r->stream_id, err);
  if (!fw)
    return MS_ERR;
  if (r->n_offer_ids == 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`decline.offer_ids` is empty");
  /* All or nothing: every offer is checked before any is declined. */
  for (size_t i = 0; i < r->n_offer_ids; i++) {
    alloc_offer_view v;
    const char *id = r->offer_ids[i] ? r->offer_ids[i]->value : "";
    if (!id || !*id)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "`decline.offer_ids[%zu]` is empty", i);
    if (alloc_model_offer(s->model, id, &v, NULL) < 0 || strcmp(v.framework_id, fw->e.key) != 0)
      return ms_error_set(err, MS_NOT_FOUND,
                          "`decline.offer_ids[%zu]`: offer `%s` is not an outstanding offer of `%s`", i, id,
                          fw->e.key);
  }
  for (size_t i = 0; i < r->n_offer_ids; i++)
    if (alloc_model_decline(s->model, fw->e.key, r->offer_ids[i]->value, refuse_ms(r->filters), svc_now_ms(),
                            err) < 0)
      return MS_ERR;
  svc_check_trigger(s);
  return 0;
}

static int each_role(alloc_service *s, svc_framework *fw, char **roles, size_t n, const char *what,
                     int (*fn)(alloc_model *, const char *, const char *, ms_error **), ms_error **err) {
  if (n == 0)
    return fn(s->model, fw->e.key, NULL, err);
  for (size_t i = 0; i < n; i++) {
    bool found = false;
    for (size_t j = 0; j < fw->info->n_roles && !found; j++)
      found = strcmp(fw->info->roles[j], roles[i]) == 0;
    if (!found)
      return ms_error_set(err, MS_INVALID_ARGUMENT,
                          "`%s.roles[%zu]`: `%s` is not one of the framework's roles", what, i, roles[i]);
  }
  for (size_t i = 0; i < n; i++)
    if (fn(s->model, fw->e.key, roles[i], err) < 0)
      return MS_ERR;
  return 0;
}

/* The framework's suppressed roles into its record, without waiting: a new leader
 * restores them (master-api resumes the scheduler's stream with the request it first
 * subscribed with). Lost with the leader if it dies first: the framework then gets
 * offers it declines, as after any Mesos failover. */
static void persist_suppression(alloc_service *s, svc_framework *fw) {
  if (!svc_durable(s))
    return;
  const Meseta__V1__FrameworkInfo *info = fw->info;
  const char *star = "*";
  char *const *roles = info->n_roles ? info->roles : (char *const *)&star;
  size_t nroles = info->n_roles ? info->n_roles : 1;
  _cleanup_free_ const char **sup = ms_xcalloc(nroles + 1, sizeof(*sup));
  size_t n = 0;
  for (size_t i = 0; i < nroles; i++)
    if (alloc_model_suppressed(s->model, fw->e.key, roles[i]))
      sup[n++] = roles[i];
  svc_reg_update_framework(s, info, sup, n, NULL, NULL);
}

static int do_revive(alloc_service *s, const call_req *c, ms_error **err) {
  const Meseta__V1__ReviveRequest *r = c->revive;
  svc_framework *fw = svc_framework_check(s, "revive", r->framework_id, r->stream_id, err);
  if (!fw || each_role(s, fw, r->roles, r->n_roles, "revive", alloc_model_revive, err) < 0)
    return MS_ERR;
  persist_suppression(s, fw);
  svc_state_emit_framework(s, fw->e.key, SVC_UPDATED);
  svc_want_cycle(s);
  return 0;
}

static int do_suppress(alloc_service *s, const call_req *c, ms_error **err) {
  const Meseta__V1__SuppressRequest *r = c->suppress;
  svc_framework *fw = svc_framework_check(s, "suppress", r->framework_id, r->stream_id, err);
  if (!fw || each_role(s, fw, r->roles, r->n_roles, "suppress", alloc_model_suppress, err) < 0)
    return MS_ERR;
  persist_suppression(s, fw);
  svc_state_emit_framework(s, fw->e.key, SVC_UPDATED);
  return 0;
}

static void send_status(alloc_service *s, svc_framework *fw, const char *task_id, const char *agent_id,
                        Meseta__V1__TaskState state, Meseta__V1__TaskStatus__Reason reason, const char *msg) {
  Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
  tid.value = (char *)task_id;
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = (char *)agent_id;
  Meseta__V1__TaskStatus st = MESETA__V1__TASK_STATUS__INIT;
  st.task_id = &tid;
  st.agent_id = agent_id ? &aid : NULL;
  st.state = state;
  st.source = MESETA__V1__TASK_STATUS__SOURCE__SOURCE_MASTER;
  st.reason = reason;
  st.message = (char *)(msg ? msg : "");
  svc_send_update(s, fw, &st);
}

static int do_kill(alloc_service *s, const call_req *c, ms_error **err) {
  const Meseta__V1__KillRequest *r = c->kill;
  svc_framework *fw = svc_framework_check(s, "kill", r->framework_id, r->stream_id, err);
  if (!fw)
    return MS_ERR;
  if (!r->task_id || !r->task_id->value || !*r->task_id->value)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`kill.task_id` is missing");
  svc_task *t = svc_task_get(s, fw->e.key, r->task_id->value);
  svc_agent *a = t ? svc_table_get(&s->agents, t->agent_id) : NULL;
  if (!t || !a) {
    send_status(s, fw, r->task_id->value, NULL, MESETA__V1__TASK_STATE__TASK_LOST,
                MESETA__V1__TASK_STATUS__REASON__REASON_TASK_UNKNOWN, "the task is not known");
    return 0;
  }
  svc_task_send_kill(s, a, fw->e.key, t->task_id, r->kill_policy);
  return 0;
}

static int do_acknowledge(alloc_service *s, const call_req *c, ms_error **err) {
  const Meseta__V1__AcknowledgeRequest *r = c->acknowledge;
  svc_framework *fw = svc_framework_check(s, "acknowledge", r->framework_id, r->stream_id, err);
  if (!fw)
    return MS_ERR;
  if (!r->agent_id || !r->agent_id->value || !*r->agent_id->value)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`acknowledge.agent_id` is missing");
  if (!r->task_id || !r->task_id->value || !*r->task_id->value)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`acknowledge.task_id` is missing");
  if (r->uuid.len != 16)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`acknowledge.uuid` must be 16 bytes, not %zu",
                        r->uuid.len);
  svc_agent *a = svc_table_get(&s->agents, r->agent_id->value);
  if (!a)
    return ms_error_set(err, MS_NOT_FOUND, "agent `%s` is not known", r->agent_id->value);
  if (!svc_history_hold_ack(s, a->e.key, fw->e.key, r->task_id->value, &r->uuid))
    svc_send_ack(s, a, fw->e.key, r->task_id->value, &r->uuid);
  svc_unacked_ack(s, fw->e.key, r->task_id->value, &r->uuid);
  return 0;
}

static int do_teardown(alloc_service *s, const call_req *c, ms_error **err) {
  const Meseta__V1__TeardownRequest *r = c->teardown;
  svc_framework *fw = svc_framework_check(s, "teardown", r->framework_id, r->stream_id, err);
  if (!fw)
    return MS_ERR;
  svc_framework_remove(s, fw, "torn down");
  return 0;
}

/* An admitted agent that has not re-registered with this leader yet: it may still bring
 * tasks this leader does not know. Until it is back or marked unreachable, a task it
 * may hold is not answered TASK_UNKNOWN (a framework would launch it a second time). */
static bool awaited_agent(alloc_service *s, const char *id) {
  return svc_durable(s) && !svc_table_get(&s->agents, id) &&
         svc_agent_rec_state(s, id) == MESETA__V1__AGENT_RECORD__STATE__ADMITTED;
}

/* Whether any agent is awaited; *memo caches the answer for one call (-1: not known). */
static bool any_awaited(alloc_service *s, int *memo) {
  if (*memo < 0) {
    *memo = 0;
    for (uint32_t i = 0; i < s->agent_recs.n && !*memo; i++)
      *memo = awaited_agent(s, s->agent_recs.v[i]->key);
  }
  return *memo > 0;
}

static int do_reconcile(alloc_service *s, const call_req *c, ms_error **err) {
  const Meseta__V1__ReconcileRequest *r = c->reconcile;
  svc_framework *fw = svc_framework_check(s, "reconcile", r->framework_id, r->stream_id, err);
  if (!fw)
    return MS_ERR;
  Meseta__V1__TaskStatus__Reason why = MESETA__V1__TASK_STATUS__REASON__REASON_RECONCILIATION;
  if (r->n_tasks == 0) { /* implicit: live tasks and terminal ones not acknowledged yet */
    for (uint32_t i = 0; i < s->tasks.n; i++) {
      svc_task *t = (svc_task *)s->tasks.v[i];
      if (strcmp(t->framework_id, fw->e.key) == 0)
        send_status(s, fw, t->task_id, t->agent_id, t->state, why, NULL);
    }
    for (svc_unacked *u = s->unacked_head; u; u = u->next)
      if (strcmp(u->framework_id, fw->e.key) == 0 && !svc_task_get(s, u->framework_id, u->task_id))
        send_status(s, fw, u->task_id, u->agent_id, u->state, why, NULL);
    return 0;
  }
  for (size_t i = 0; i < r->n_tasks; i++) {
    const Meseta__V1__ReconcileRequest__Task *q = r->tasks[i];
    if (!q->task_id || !q->task_id->value || !*q->task_id->value)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "`reconcile.tasks[%zu].task_id` is missing", i);
  }
  int awaited = -1;
  for (size_t i = 0; i < r->n_tasks; i++) {
    const Meseta__V1__ReconcileRequest__Task *q = r->tasks[i];
    svc_task *t = svc_task_get(s, fw->e.key, q->task_id->value);
    const char *aid = q->agent_id && q->agent_id->value && *q->agent_id->value ? q->agent_id->value : NULL;
    /* The last known state: live, ended but not acknowledged, or completed. */
    svc_unacked *u = t ? NULL : svc_unacked_get(s, fw->e.key, q->task_id->value);
    _cleanup_free_ char *key = t || u ? NULL : svc_key2(fw->e.key, q->task_id->value);
    const Meseta__V1__Task *done = key ? svc_completed_get(s, key) : NULL;
    if (t)
      send_status(s, fw, t->task_id, t->agent_id, t->state, why, NULL);
    else if (u)
      send_status(s, fw, u->task_id, u->agent_id, u->state, why, NULL);
    else if (done)
      send_status(s, fw, q->task_id->value, done->agent_id ? done->agent_id->value : aid, done->state, why,
                  NULL);
    else if (s->recovering && (!aid || !svc_table_get(&s->agents, aid)))
      continue; /* its agent may still re-register: no answer yet (ask again later) */
    else if (aid ? awaited_agent(s, aid) : any_awaited(s, &awaited))
      continue; /* an admitted agent not back since the failover may bring it (as Mesos) */
    else if (aid && svc_agent_rec_state(s, aid) == MESETA__V1__AGENT_RECORD__STATE__UNREACHABLE)
      send_status(s, fw, q->task_id->value, aid, MESETA__V1__TASK_STATE__TASK_UNREACHABLE, why,
                  "its agent is unreachable");
    else
      send_status(s, fw, q->task_id->value, aid, MESETA__V1__TASK_STATE__TASK_UNKNOWN, why,
                  "the task is not known");
  }
  return 0;
}

static int do_acknowledge_operation(alloc_service *s, const call_req *c, ms_error **err) {
  return svc_op_acknowledge(s, c->acknowledge_operation_status, err);
}

static int do_reconcile_operations(alloc_service *s, const call_req *c, ms_error **err) {
  return svc_op_reconcile(s, c->reconcile_operations, err);
}

/* ---- executors: shutdown and messages ---- */

/* The agent a call names, and whether the framework has the executor there (a named
 * executor, or a command task's own executor, whose id is the task's). NOT_FOUND
 * names which one is unknown. */
static svc_agent *executor_agent(alloc_service *s, svc_framework *fw, const char *what,
                                 const Meseta__V1__AgentID *aid, const Meseta__V1__ExecutorID *eid,
                                 ms_error **err) {
  if (!aid || !aid->value || !*aid->value) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.agent_id` is missing", what);
    return NULL;
  }
  if (!eid || !eid->value || !*eid->value) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.executor_id` is missing", what);
    return NULL;
  }
  svc_agent *a = svc_table_get(&s->agents, aid->value);
  if (!a) {
    ms_error_set(err, MS_NOT_FOUND, "`%s.agent_id`: agent `%s` is not registered", what, aid->value);
    return NULL;
  }
  if (svc_executor_known(s, a->e.key, fw->e.key, eid->value))
    return a;
  svc_task *t = svc_task_get(s, fw->e.key, eid->value);
  if (t && !t->executor && strcmp(t->agent_id, a->e.key) == 0)
    return a;
  ms_error_set(err, MS_NOT_FOUND, "`%s.executor_id`: framework `%s` has no executor `%s` on agent `%s`", what,
               fw->e.key, eid->value, a->e.key);
  return NULL;
}

static int do_shutdown(alloc_service *s, const call_req *c, ms_error **err) {
  const Meseta__V1__ShutdownRequest *r = c->shutdown;
  svc_framework *fw = svc_framework_check(s, "shutdown", r->framework_id, r->stream_id, err);
  svc_agent *a = fw ? executor_agent(s, fw, "shutdown", r->agent_id, r->executor_id, err) : NULL;
  if (!a)
    return MS_ERR;
  /* The agent kills the executor's tasks (their updates recover the resources). */
  Meseta__V1__AllocatorMessage__ShutdownExecutor sd = MESETA__V1__ALLOCATOR_MESSAGE__SHUTDOWN_EXECUTOR__INIT;
  sd.framework_id = r->framework_id;
  sd.executor_id = r->executor_id;
  Meseta__V1__AllocatorMessage m = MESETA__V1__ALLOCATOR_MESSAGE__INIT;
  m.message_case = MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_SHUTDOWN_EXECUTOR;
  m.shutdown_executor = &sd;
  svc_send_agent(s, a, &m);
  ms_log_info(fw->e.key, "executor `%s` on agent `%s`: shutdown asked", r->executor_id->value, a->e.key);
  return 0;
}

#define MESSAGE_MAX (1u << 20)

/* Whether the agent said it can hand framework messages to its executors. */
static bool agent_delivers_messages(const svc_agent *a) {
  for (size_t i = 0; a->info && i < a->info->n_capabilities; i++)
    if (a->info->capabilities[i]->type == MESETA__V1__AGENT_INFO__CAPABILITY__TYPE__EXECUTOR_MESSAGES)
      return true;
  return false;
}

static int do_message(alloc_service *s, const call_req *c, ms_error **err) {
  const Meseta__V1__MessageRequest *r = c->message;
  svc_framework *fw = svc_framework_check(s, "message", r->framework_id, r->stream_id, err);
  if (!fw)
    return MS_ERR;
  if (r->data.len > MESSAGE_MAX)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`message.data`: %zu bytes, above the maximum of 1 MiB",
                        r->data.len);
  svc_agent *a = executor_agent(s, fw, "message", r->agent_id, r->executor_id, err);
  if (!a)
    return MS_ERR;
  if (!agent_delivers_messages(a))
    return ms_error_set(
        err, MS_FAILED_PRECONDITION,
        "`message.executor_id`: agent `%s` cannot deliver framework messages to executor `%s` "
        "(a command task takes none, and the agent does not declare EXECUTOR_MESSAGES)",
        a->e.key, r->executor_id->value);
  Meseta__V1__AllocatorMessage__FrameworkToExecutor fe =
      MESETA__V1__ALLOCATOR_MESSAGE__FRAMEWORK_TO_EXECUTOR__INIT;
  fe.framework_id = r->framework_id;
  fe.executor_id = r->executor_id;
  fe.data = r->data;
  Meseta__V1__AllocatorMessage m = MESETA__V1__ALLOCATOR_MESSAGE__INIT;
  m.message_case = MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_FRAMEWORK_TO_EXECUTOR;
  m.framework_to_executor = &fe;
  svc_send_agent(s, a, &m); /* best effort, as in Mesos */
  return 0;
}

/* ---- the table ---- */

typedef struct call_row {
  Meseta__V1__SchedulerCallRequest__CallCase call;
  const ProtobufCMessageDescriptor *resp; /* the (empty) response's type */
  int (*fn)(alloc_service *s, const call_req *c, ms_error **err);
  /* Instead of fn: a call that answers itself (now, or once a write is durable). */
  int (*start)(alloc_service *s, ms_rpc_call *call, const call_req *c, ms_error **err);
} call_row;

static const call_row rows[] = {
    {MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_TEARDOWN, &meseta__v1__teardown_response__descriptor,
     do_teardown},
    {MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_ACCEPT, &meseta__v1__accept_response__descriptor, do_accept},
    {MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_DECLINE, &meseta__v1__decline_response__descriptor, do_decline},
    {MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_REVIVE, &meseta__v1__revive_response__descriptor, do_revive},
    {MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_SUPPRESS, &meseta__v1__suppress_response__descriptor,
     do_suppress},
    {MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_KILL, &meseta__v1__kill_response__descriptor, do_kill},
    {MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_ACKNOWLEDGE, &meseta__v1__acknowledge_response__descriptor,
     do_acknowledge},
    {MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_RECONCILE, &meseta__v1__reconcile_response__descriptor,
     do_reconcile},
    {MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_ACKNOWLEDGE_OPERATION_STATUS,
     &meseta__v1__acknowledge_operation_status_response__descriptor, do_acknowledge_operation},
    {MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_RECONCILE_OPERATIONS,
     &meseta__v1__reconcile_operations_response__descriptor, do_reconcile_operations},
    {MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_SHUTDOWN, &meseta__v1__shutdown_response__descriptor,
     do_shutdown},
    {MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_MESSAGE, &meseta__v1__message_response__descriptor, do_message},
    {MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_UPDATE_FRAMEWORK,
     &meseta__v1__update_framework_response__descriptor, NULL, svc_calls_update_framework},
};

/* Identity: a framework with a recorded principal answers only to that principal
 * (docs/master-api.md). Anonymous callers (authentication off at their replica) are
 * not compared. Every call's request starts with FrameworkID framework_id = 1. */
static int check_principal(alloc_service *s, const call_req *c, ms_error **err) {
  const Meseta__V1__Principal *p = c->principal;
  if (!p || (p->method != MESETA__V1__PRINCIPAL__METHOD__MTLS &&
             p->method != MESETA__V1__PRINCIPAL__METHOD__BEARER_TOKEN))
    return 0;
  const ProtobufCMessage *payload = &c->accept->base; /* the oneof's member, whichever it is */
  const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(payload->descriptor, 1);
  if (!f || f->descriptor != &meseta__v1__framework_id__descriptor)
    return 0;
  const Meseta__V1__FrameworkID *id = *(Meseta__V1__FrameworkID *const *)((const char *)payload + f->offset);
  svc_framework *fw = id && id->value && *id->value ? svc_table_get(&s->frameworks, id->value) : NULL;
  const char *recorded = fw && fw->info->principal && *fw->info->principal ? fw->info->principal : NULL;
  if (recorded && strcmp(recorded, p->name ? p->name : "") != 0)
    return ms_error_set(err, MS_PERMISSION_DENIED, "framework `%s` belongs to principal `%s`, not `%s`",
                        id->value, recorded, p->name ? p->name : "");
  return 0;
}

void svc_scheduler_call(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg) {
  (void)data;
  const call_req *c = (const call_req *)msg;
  if (svc_refuse_unless_serving(s, call))
    return;
  const call_row *row = NULL;
  for (size_t i = 0; i < MS_ARRAY_SIZE(rows) && !row; i++)
    if (rows[i].call == c->call_case)
      row = &rows[i];
  if (!row) {
    ms_rpc_call_finish(call, c->call_case ? MS_UNIMPLEMENTED : MS_INVALID_ARGUMENT,
                       c->call_case ? "this scheduler call is not supported by this allocator yet"
                                    : "`call` is not set");
    return;
  }
  ms_error *err = NULL;
  int rc = check_principal(s, c, &err);
  if (rc == 0) /* fields the cluster does not implement (lib/src/pb-refused.c) */
    rc = ms_pb_check_refused(msg, NULL, &err);
  if (rc == 0) { /* a framework's resource names only find what agents brought */
    bool was = ms_names_untrusted(true);
    rc = row->start ? row->start(s, call, c, &err) : row->fn(s, c, &err);
    ms_names_untrusted(was);
  }
  if (rc < 0) {
    ms_log_debug(NULL, "scheduler call refused: %s", err->msg);
    ms_rpc_call_finish_error(call, err);
    ms_error_free(err);
    return;
  }
  if (!row->start)
    svc_calls_reply_ok(s, call, c);
}

void svc_calls_reply_ok(alloc_service *s, ms_rpc_call *call, const call_req *c) {
  const call_row *row = NULL;
  for (size_t i = 0; i < MS_ARRAY_SIZE(rows) && !row; i++)
    if (rows[i].call == c->call_case)
      row = &rows[i];
  ms_error *err = NULL;
  /* Every response payload is an empty message; the oneof's cases match the call's. */
  _Alignas(max_align_t) uint8_t body[64];
  protobuf_c_message_init(row->resp, body);
  Meseta__V1__SchedulerCallResponse resp = MESETA__V1__SCHEDULER_CALL_RESPONSE__INIT;
  resp.result_case = (Meseta__V1__SchedulerCallResponse__ResultCase)c->call_case;
  resp.accept = (Meseta__V1__AcceptResponse *)body; /* a union: every member is this pointer */
  if (ms_rpc_call_reply(call, &resp.base, &err) < 0) {
    ms_log_debug(NULL, "scheduler call reply: %s", err->msg);
    ms_error_free(err);
  }
  svc_check_trigger(s);
}
