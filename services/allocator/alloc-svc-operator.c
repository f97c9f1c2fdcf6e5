/* Allocator.OperatorCall: the Operator mutations master-api forwards. Each call is
 * checked as a whole first (all or nothing; INVALID_ARGUMENT names the field, NOT_FOUND
 * the agent or framework); what is durable (weights, quota, the maintenance schedule,
 * agents' drain / deactivated / gone state) is written to the registry through the
 * ordered worker, and only once the registry accepted it is the change applied to the
 * model and the caller answered ("persist first, then apply"). Without a registry the
 * change is applied at once. Reservations and volumes are not registry records (agents
 * own them): they are applied to the model and sent to the agent as APPLY_OPERATION.
 *
 * Everything here runs on the owner thread. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/pb.h"
#include "meseta/resources-io.h"
#include "meseta/roles.h"
#include "meseta/time.h"
#include "meseta/values.h"

#include "alloc-svc-internal.h"

typedef Meseta__V1__OperatorCallRequest op_req;
typedef Meseta__V1__OperatorCallResponse op_resp;

/* ---- checks (nothing changes) ---- */

static svc_agent *agent_of(alloc_service *s, const Meseta__V1__AgentID *id, const char *field,
                           ms_error **err) {
  if (!id || !id->value || !*id->value) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.agent_id` is missing", field);
    return NULL;
  }
  svc_agent *a = svc_table_get(&s->agents, id->value);
  if (!a)
    ms_error_set(err, MS_NOT_FOUND, "agent `%s` is not registered", id->value);
  return a;
}

static int resource_op(const op_req *r, ms_operation *op, const char **agent, ms_error **err) {
  Meseta__V1__Operation m = MESETA__V1__OPERATION__INIT;
  Meseta__V1__Operation__Reserve rs = MESETA__V1__OPERATION__RESERVE__INIT;
  Meseta__V1__Operation__Unreserve un = MESETA__V1__OPERATION__UNRESERVE__INIT;
  Meseta__V1__Operation__Create cr = MESETA__V1__OPERATION__CREATE__INIT;
  Meseta__V1__Operation__Destroy de = MESETA__V1__OPERATION__DESTROY__INIT;
  const Meseta__V1__AgentID *aid = NULL;
  const char *what = "";
  switch (r->call_case) {
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_RESERVE_RESOURCES:
    m.type = MESETA__V1__OPERATION__TYPE__RESERVE;
    rs.n_source = r->reserve_resources->n_source;
    rs.source = r->reserve_resources->source;
    rs.n_resources = r->reserve_resources->n_resources;
    rs.resources = r->reserve_resources->resources;
    m.reserve = &rs;
    aid = r->reserve_resources->agent_id;
    what = "reserve_resources";
    break;
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UNRESERVE_RESOURCES:
    m.type = MESETA__V1__OPERATION__TYPE__UNRESERVE;
    un.n_resources = r->unreserve_resources->n_resources;
    un.resources = r->unreserve_resources->resources;
    m.unreserve = &un;
    aid = r->unreserve_resources->agent_id;
    what = "unreserve_resources";
    break;
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_CREATE_VOLUMES:
    m.type = MESETA__V1__OPERATION__TYPE__CREATE;
    cr.n_volumes = r->create_volumes->n_volumes;
    cr.volumes = r->create_volumes->volumes;
    m.create = &cr;
    aid = r->create_volumes->agent_id;
    what = "create_volumes";
    break;
  default:
    m.type = MESETA__V1__OPERATION__TYPE__DESTROY;
    de.n_volumes = r->destroy_volumes->n_volumes;
    de.volumes = r->destroy_volumes->volumes;
    m.destroy = &de;
    aid = r->destroy_volumes->agent_id;
    what = "destroy_volumes";
    break;
  }
  if (!aid || !aid->value || !*aid->value)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.agent_id` is missing", what);
  *agent = aid->value;
  if (ms_operation_from_proto(&m, op, err) < 0)
    return ms_error_prefix(err, "`%s`", what);
  return 0;
}

/* ---- applying (after the registry accepted what is durable) ---- */

static void collect_offer(void *ctx, const alloc_offer_view *o) {
  void **c = ctx;
  const char *agent = c[0];
  char ***ids = c[1];
  uint32_t *n = c[2];
  if (strcmp(o->agent_id, agent) != 0)
    return;
  *ids = ms_xrealloc(*ids, (*n + 1) * sizeof(**ids));
  (*ids)[(*n)++] = ms_xstrdup(o->id);
}

/* Rescinds the agent's outstanding offers (the resources return to available). */
void svc_rescind_agent_offers(alloc_service *s, const char *agent) {
  char **ids = NULL;
  uint32_t n = 0;
  void *ctx[3] = {(void *)agent, &ids, &n};
  alloc_model_each_offer(s->model, collect_offer, ctx);
  for (uint32_t i = 0; i < n; i++) {
    (void)alloc_model_rescind(s->model, ids[i], NULL);
    free(ids[i]);
  }
  free(ids);
}

static void emit_roles_of(alloc_service *s, const ms_resources *res) {
  if (!res)
    return;
  for (uint32_t i = 0; i < ms_resources_size(res); i++) {
    const char *role = ms_resource_role(ms_resources_at(res, i));
    if (strcmp(role, "*") != 0)
      svc_state_emit_role(s, role);
  }
}

static int apply_resource_op(alloc_service *s, const op_req *r, op_resp *resp, ms_error **err) {
  ms_operation op = {0};
  const char *agent = NULL;
  if (resource_op(r, &op, &agent, err) < 0) {
    ms_operation_release(&op);
    return MS_ERR;
  }
  svc_agent *a = svc_table_get(&s->agents, agent);
  int rc = 0;
  if (!a) {
    rc = ms_error_set(err, MS_NOT_FOUND, "agent `%s` is not registered", agent);
  } else {
    ms_error *e1 = NULL;
    rc = alloc_model_apply_operator(s->model, agent, &op, &e1);
    if (rc < 0 && e1->code == MS_FAILED_PRECONDITION) {
      /* Perhaps offered: offers are rescinded first, then it is tried again. */
      ms_error_free(e1);
      e1 = NULL;
      svc_rescind_agent_offers(s, agent);
      rc = alloc_model_apply_operator(s->model, agent, &op, &e1);
    }
    if (rc < 0)
      *err = e1;
  }
  if (rc == 0) {
    char opid[40];
    svc_uuid(opid);
    uint8_t uuid[16];
    svc_uuid_bytes(uuid);
    Meseta__V1__Operation *m = NULL;
    Meseta__V1__OperationID oid = MESETA__V1__OPERATION_ID__INIT;
    oid.value = opid;
    /* The agent learns about it (it owns reservations and volumes). */
    Meseta__V1__Operation__Reserve rs = MESETA__V1__OPERATION__RESERVE__INIT;
    Meseta__V1__Operation__Unreserve un = MESETA__V1__OPERATION__UNRESERVE__INIT;
    Meseta__V1__Operation__Create cr = MESETA__V1__OPERATION__CREATE__INIT;
    Meseta__V1__Operation__Destroy de = MESETA__V1__OPERATION__DESTROY__INIT;
    Meseta__V1__Operation om = MESETA__V1__OPERATION__INIT;
    m = &om;
    switch (r->call_case) {
    case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_RESERVE_RESOURCES:
      om.type = MESETA__V1__OPERATION__TYPE__RESERVE;
      rs.n_source = r->reserve_resources->n_source;
      rs.source = r->reserve_resources->source;
      rs.n_resources = r->reserve_resources->n_resources;
      rs.resources = r->reserve_resources->resources;
      om.reserve = &rs;
      resp->result_case = MESETA__V1__OPERATOR_CALL_RESPONSE__RESULT_RESERVE_RESOURCES;
      resp->reserve_resources = ms_pb_new(&meseta__v1__reserve_resources_response__descriptor);
      break;
    case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UNRESERVE_RESOURCES:
      om.type = MESETA__V1__OPERATION__TYPE__UNRESERVE;
      un.n_resources = r->unreserve_resources->n_resources;
      un.resources = r->unreserve_resources->resources;
      om.unreserve = &un;
      resp->result_case = MESETA__V1__OPERATOR_CALL_RESPONSE__RESULT_UNRESERVE_RESOURCES;
      resp->unreserve_resources = ms_pb_new(&meseta__v1__unreserve_resources_response__descriptor);
      break;
    case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_CREATE_VOLUMES:
      om.type = MESETA__V1__OPERATION__TYPE__CREATE;
      cr.n_volumes = r->create_volumes->n_volumes;
      cr.volumes = r->create_volumes->volumes;
      om.create = &cr;
      resp->result_case = MESETA__V1__OPERATOR_CALL_RESPONSE__RESULT_CREATE_VOLUMES;
      resp->create_volumes = ms_pb_new(&meseta__v1__create_volumes_response__descriptor);
      break;
    default:
      om.type = MESETA__V1__OPERATION__TYPE__DESTROY;
      de.n_volumes = r->destroy_volumes->n_volumes;
      de.volumes = r->destroy_volumes->volumes;
      om.destroy = &de;
      resp->result_case = MESETA__V1__OPERATOR_CALL_RESPONSE__RESULT_DESTROY_VOLUMES;
      resp->destroy_volumes = ms_pb_new(&meseta__v1__destroy_volumes_response__descriptor);
      break;
    }
    Meseta__V1__AllocatorMessage__ApplyOperation ap = MESETA__V1__ALLOCATOR_MESSAGE__APPLY_OPERATION__INIT;
    ap.operation = m;
    ap.operation_id = &oid;
    ap.operation_uuid.data = uuid;
    ap.operation_uuid.len = sizeof(uuid);
    Meseta__V1__AllocatorMessage am = MESETA__V1__ALLOCATOR_MESSAGE__INIT;
    am.message_case = MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_APPLY_OPERATION;
    am.apply_operation = &ap;
    svc_send_agent(s, a, &am);
    ms_log_info(agent, "operator %s applied (operation `%s`)", ms_operation_type_name(op.type), opid);
    int64_t rev = svc_state_emit_agent(s, agent, SVC_UPDATED);
    emit_roles_of(s, op.resources);
    rev = s->revision;
    /* Every resource-operation response has revision (1) and operation_id (2). */
    switch (resp->result_case) {
    case MESETA__V1__OPERATOR_CALL_RESPONSE__RESULT_RESERVE_RESOURCES:
      resp->reserve_resources->revision = rev;
      resp->reserve_resources->operation_id = (Meseta__V1__OperationID *)ms_pb_dup(&oid.base);
      break;
    case MESETA__V1__OPERATOR_CALL_RESPONSE__RESULT_UNRESERVE_RESOURCES:
      resp->unreserve_resources->revision = rev;
      resp->unreserve_resources->operation_id = (Meseta__V1__OperationID *)ms_pb_dup(&oid.base);
      break;
    case MESETA__V1__OPERATOR_CALL_RESPONSE__RESULT_CREATE_VOLUMES:
      resp->create_volumes->revision = rev;
      resp->create_volumes->operation_id = (Meseta__V1__OperationID *)ms_pb_dup(&oid.base);
      break;
    default:
      resp->destroy_volumes->revision = rev;
      resp->destroy_volumes->operation_id = (Meseta__V1__OperationID *)ms_pb_dup(&oid.base);
      break;
    }
    svc_check_trigger(s);
  }
  ms_operation_release(&op);
  return rc;
}

/* Kills what runs on the agent (draining). */
static void kill_agent_tasks(alloc_service *s, svc_agent *a) {
  for (uint32_t i = 0; i < s->tasks.n; i++) {
    svc_task *t = (svc_task *)s->tasks.v[i];
    if (strcmp(t->agent_id, a->e.key) != 0)
      continue;
    Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
    fid.value = t->framework_id;
    Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
    tid.value = t->task_id;
    Meseta__V1__AllocatorMessage__KillTask k = MESETA__V1__ALLOCATOR_MESSAGE__KILL_TASK__INIT;
    k.framework_id = &fid;
    k.task_id = &tid;
    Meseta__V1__AllocatorMessage m = MESETA__V1__ALLOCATOR_MESSAGE__INIT;
    m.message_case = MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_KILL_TASK;
    m.kill_task = &k;
    svc_send_agent(s, a, &m);
  }
}

static int respec(alloc_service *s, svc_agent *a, ms_error **err) {
  if (svc_agent_respec(s, a, err) < 0)
    return MS_ERR;
  svc_check_trigger(s);
  return 0;
}

#define SET_REV(field, type_desc, rev)                                                                       \
  do {                                                                                                       \
    resp->field = ms_pb_new(&type_desc);                                                                     \
    resp->field->revision = (rev);                                                                           \
  } while (0)

static int apply_agent_state(alloc_service *s, const op_req *r, op_resp *resp, ms_error **err) {
  const Meseta__V1__AgentID *id;
  switch (r->call_case) {
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DRAIN_AGENT:
    id = r->drain_agent->agent_id;
    break;
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DEACTIVATE_AGENT:
    id = r->deactivate_agent->agent_id;
    break;
  default:
    id = r->reactivate_agent->agent_id;
    break;
  }
  svc_agent *a = agent_of(s, id, "agent", err);
  if (!a)
    return MS_ERR;
  svc_agent_rec *rec = svc_agent_rec_get(s, a->e.key);
  if (r->call_case == MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DRAIN_AGENT) {
    rec->drain_state = MESETA__V1__DRAIN_STATE__DRAINING;
    rec->mark_gone = r->drain_agent->config && r->drain_agent->config->mark_gone;
  } else if (r->call_case == MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DEACTIVATE_AGENT) {
    rec->deactivated = true;
  } else {
    rec->deactivated = false;
    rec->drain_state = MESETA__V1__DRAIN_STATE__DRAIN_STATE_UNKNOWN;
    rec->mark_gone = false;
  }
  if (respec(s, a, err) < 0) /* a draining or deactivated agent's offers are rescinded */
    return MS_ERR;
  if (r->call_case == MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DRAIN_AGENT) {
    Meseta__V1__AllocatorMessage__Drain d = MESETA__V1__ALLOCATOR_MESSAGE__DRAIN__INIT;
    d.config = r->drain_agent->config;
    Meseta__V1__AllocatorMessage m = MESETA__V1__ALLOCATOR_MESSAGE__INIT;
    m.message_case = MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_DRAIN;
    m.drain = &d;
    svc_send_agent(s, a, &m);
    kill_agent_tasks(s, a);
  }
  ms_log_info(a->e.key, "agent %s by an operator",
              r->call_case == MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DRAIN_AGENT        ? "draining"
              : r->call_case == MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DEACTIVATE_AGENT ? "deactivated"
                                                                                         : "reactivated");
  int64_t rev = svc_state_emit_agent(s, a->e.key, SVC_UPDATED);
  if (r->call_case == MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DRAIN_AGENT) {
    resp->result_case = MESETA__V1__OPERATOR_CALL_RESPONSE__RESULT_DRAIN_AGENT;
    SET_REV(drain_agent, meseta__v1__drain_agent_response__descriptor, rev);
  } else if (r->call_case == MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DEACTIVATE_AGENT) {
    resp->result_case = MESETA__V1__OPERATOR_CALL_RESPONSE__RESULT_DEACTIVATE_AGENT;
    SET_REV(deactivate_agent, meseta__v1__deactivate_agent_response__descriptor, rev);
  } else {
    resp->result_case = MESETA__V1__OPERATOR_CALL_RESPONSE__RESULT_REACTIVATE_AGENT;
    SET_REV(reactivate_agent, meseta__v1__reactivate_agent_response__descriptor, rev);
  }
  return 0;
}

static int apply_gone(alloc_service *s, const op_req *r, op_resp *resp, ms_error **err) {
  (void)err;
  const char *id = r->mark_agent_gone->agent_id->value;
  svc_agent_rec_set(s, id, MESETA__V1__AGENT_RECORD__STATE__GONE);
  svc_agent *a = svc_table_get(&s->agents, id);
  if (a) {
    Meseta__V1__AllocatorMessage__ShutdownAgent sd = MESETA__V1__ALLOCATOR_MESSAGE__SHUTDOWN_AGENT__INIT;
    sd.reason = "marked gone by an operator";
    Meseta__V1__AllocatorMessage m = MESETA__V1__ALLOCATOR_MESSAGE__INIT;
    m.message_case = MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_SHUTDOWN_AGENT;
    m.shutdown_agent = &sd;
    svc_send_agent(s, a, &m);
    ms_rpc_call *link = a->link ? a->link->call : NULL;
    svc_agent_remove(s, a, "marked gone by an operator"); /* its tasks: TASK_GONE_BY_OPERATOR */
    if (link)
      ms_rpc_call_finish(link, MS_FAILED_PRECONDITION, "this agent was marked gone by an operator");
  } else {
    svc_state_emit_agent(s, id, SVC_REMOVED);
  }
  ms_log_info(id, "agent marked gone by an operator");
  resp->result_case = MESETA__V1__OPERATOR_CALL_RESPONSE__RESULT_MARK_AGENT_GONE;
  SET_REV(mark_agent_gone, meseta__v1__mark_agent_gone_response__descriptor, s->revision);
  svc_check_trigger(s);
  return 0;
}

static int apply(alloc_service *s, const op_req *r, op_resp *resp, ms_error **err) {
  switch (r->call_case) {
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UPDATE_WEIGHTS: {
    const Meseta__V1__UpdateWeightsRequest *u = r->update_weights;
    for (size_t i = 0; i < u->n_weight_infos; i++) {
      const Meseta__V1__WeightInfo *w = u->weight_infos[i];
      if (alloc_model_set_weight(s->model, w->role, w->weight, err) < 0)
        return ms_error_prefix(err, "`update_weights.weight_infos[%zu]`", i);
      svc_config_weight(s, w->role, w->weight);
    }
    svc_state_emit_weights(s);
    for (size_t i = 0; i < u->n_weight_infos; i++)
      svc_state_emit_role(s, u->weight_infos[i]->role);
    resp->result_case = MESETA__V1__OPERATOR_CALL_RESPONSE__RESULT_UPDATE_WEIGHTS;
    SET_REV(update_weights, meseta__v1__update_weights_response__descriptor, s->revision);
    svc_want_cycle(s);
    return 0;
  }
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UPDATE_QUOTA: {
    const Meseta__V1__UpdateQuotaRequest *u = r->update_quota;
    for (size_t i = 0; i < u->n_configs; i++)
      if (svc_config_quota_apply(s, u->configs[i], err) < 0)
        return ms_error_prefix(err, "`quota[%zu]`", i);
    svc_state_emit_quota(s);
    for (size_t i = 0; i < u->n_configs; i++)
      svc_state_emit_role(s, u->configs[i]->role);
    resp->result_case = MESETA__V1__OPERATOR_CALL_RESPONSE__RESULT_UPDATE_QUOTA;
    SET_REV(update_quota, meseta__v1__update_quota_response__descriptor, s->revision);
    svc_want_cycle(s);
    return 0;
  }
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_RESERVE_RESOURCES:
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UNRESERVE_RESOURCES:
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_CREATE_VOLUMES:
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DESTROY_VOLUMES:
    return apply_resource_op(s, r, resp, err);
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DRAIN_AGENT:
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DEACTIVATE_AGENT:
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_REACTIVATE_AGENT:
    return apply_agent_state(s, r, resp, err);
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_MARK_AGENT_GONE:
    return apply_gone(s, r, resp, err);
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UPDATE_MAINTENANCE_SCHEDULE: {
    if (s->schedule)
      protobuf_c_message_free_unpacked(&s->schedule->base, NULL);
    s->schedule =
        r->update_maintenance_schedule->schedule
            ? (Meseta__V1__MaintenanceSchedule *)ms_pb_dup(&r->update_maintenance_schedule->schedule->base)
            : NULL;
    svc_state_emit_maintenance(s);
    for (uint32_t i = 0; i < s->agents.n; i++) {
      svc_agent *a = (svc_agent *)s->agents.v[i];
      ms_error *e = NULL;
      if (svc_agent_respec(s, a, &e) < 0) {
        ms_log_warn(a->e.key, "maintenance window: %s", e->msg);
        ms_error_free(e);
      }
      svc_state_emit_agent(s, a->e.key, SVC_UPDATED);
    }
    svc_check_trigger(s);
    resp->result_case = MESETA__V1__OPERATOR_CALL_RESPONSE__RESULT_UPDATE_MAINTENANCE_SCHEDULE;
    SET_REV(update_maintenance_schedule, meseta__v1__update_maintenance_schedule_response__descriptor,
            s->revision);
    return 0;
  }
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_TEARDOWN: {
    const Meseta__V1__FrameworkID *id = r->teardown->framework_id;
    if (!id || !id->value || !*id->value)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "`teardown.framework_id` is missing");
    svc_framework *fw = svc_table_get(&s->frameworks, id->value);
    if (!fw)
      return ms_error_set(err, MS_NOT_FOUND, "framework `%s` is not known", id->value);
    svc_framework_remove(s, fw, "torn down by an operator");
    resp->result_case = MESETA__V1__OPERATOR_CALL_RESPONSE__RESULT_TEARDOWN;
    SET_REV(teardown, meseta__v1__teardown_framework_response__descriptor, s->revision);
    return 0;
  }
  default:
    return ms_error_set(err, MS_UNIMPLEMENTED, "this operator call is not served by the allocator yet");
  }
}

/* ---- the call ---- */

typedef struct op_wait {
  ms_rpc_call *call; /* referenced */
  op_req *req;       /* a copy */
} op_wait;

static void answer(alloc_service *s, ms_rpc_call *call, const op_req *r) {
  op_resp *resp = ms_pb_new(&meseta__v1__operator_call_response__descriptor);
  ms_error *err = NULL;
  if (apply(s, r, resp, &err) < 0) {
    ms_log_info(NULL, "operator call refused: %s", err->msg);
    ms_rpc_call_finish_error(call, err);
    ms_error_free(err);
  } else if (ms_rpc_call_reply(call, &resp->base, &err) < 0) {
    ms_error_free(err);
  }
  protobuf_c_message_free_unpacked(&resp->base, NULL);
}

static void persisted(alloc_service *s, void *ctx, const ms_error *err, bool current) {
  op_wait *w = ctx;
  if (!current)
    ms_rpc_call_finish(w->call, MS_UNAVAILABLE, "this allocator is no longer the leader");
  else if (err)
    ms_rpc_call_finish(w->call, err->code == MS_CANCELLED ? MS_UNAVAILABLE : err->code, err->msg);
  else if (!ms_rpc_call_is_done(w->call))
    answer(s, w->call, w->req); /* durable: now the model changes, then the caller hears */
  ms_rpc_call_unref(w->call);
  protobuf_c_message_free_unpacked(&w->req->base, NULL);
  free(w);
}

static op_wait *wait_new(ms_rpc_call *call, const op_req *r) {
  op_wait *w = ms_xmalloc(sizeof(*w));
  w->call = call;
  ms_rpc_call_ref(call);
  w->req = (op_req *)ms_pb_dup(&r->base);
  return w;
}

/* Checks what can be checked before anything is written. */
static int check(alloc_service *s, const op_req *r, ms_error **err) {
  switch (r->call_case) {
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UPDATE_WEIGHTS:
    return svc_config_check_weights(r->update_weights, err);
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UPDATE_QUOTA:
    return svc_config_check_quota(r->update_quota, err);
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UPDATE_MAINTENANCE_SCHEDULE:
    return svc_config_check_schedule(r->update_maintenance_schedule, err);
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DRAIN_AGENT:
    return agent_of(s, r->drain_agent->agent_id, "drain_agent", err) ? 0 : MS_ERR;
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DEACTIVATE_AGENT:
    return agent_of(s, r->deactivate_agent->agent_id, "deactivate_agent", err) ? 0 : MS_ERR;
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_REACTIVATE_AGENT:
    return agent_of(s, r->reactivate_agent->agent_id, "reactivate_agent", err) ? 0 : MS_ERR;
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_MARK_AGENT_GONE: {
    const Meseta__V1__AgentID *id = r->mark_agent_gone->agent_id;
    if (!id || !id->value || !*id->value)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "`mark_agent_gone.agent_id` is missing");
    if (!svc_table_get(&s->agents, id->value) &&
        svc_agent_rec_state(s, id->value) == MESETA__V1__AGENT_RECORD__STATE__STATE_UNKNOWN)
      return ms_error_set(err, MS_NOT_FOUND, "agent `%s` is not known", id->value);
    return 0;
  }
  default:
    return 0;
  }
}

void svc_operator_call(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg) {
  (void)data;
  const char *why;
  if (!svc_serving(s, &why)) {
    ms_rpc_call_finish(call, MS_UNAVAILABLE, why);
    return;
  }
  if (s->recovering) {
    ms_rpc_call_finish(call, MS_UNAVAILABLE, "this allocator is recovering: agents are re-registering");
    return;
  }
  if (ms_rpc_call_is_done(call))
    return;
  const op_req *r = (const op_req *)msg;
  ms_error *err = NULL;
  if (r->call_case == MESETA__V1__OPERATOR_CALL_REQUEST__CALL__NOT_SET) {
    ms_rpc_call_finish(call, MS_INVALID_ARGUMENT, "`call` is not set");
    return;
  }
  if (check(s, r, &err) < 0) {
    ms_log_info(NULL, "operator call refused: %s", err->msg);
    ms_rpc_call_finish_error(call, err);
    ms_error_free(err);
    return;
  }
  if (!svc_durable(s)) {
    answer(s, call, r);
    return;
  }
  const char *agent = NULL;
  svc_agent_patch patch;
  const Meseta__V1__DrainConfig *cfg = NULL;
  switch (r->call_case) {
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DRAIN_AGENT:
    agent = r->drain_agent->agent_id->value;
    patch = SVC_PATCH_DRAIN;
    cfg = r->drain_agent->config;
    break;
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DEACTIVATE_AGENT:
    agent = r->deactivate_agent->agent_id->value;
    patch = SVC_PATCH_DEACTIVATE;
    break;
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_REACTIVATE_AGENT:
    agent = r->reactivate_agent->agent_id->value;
    patch = SVC_PATCH_REACTIVATE;
    break;
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_MARK_AGENT_GONE:
    agent = r->mark_agent_gone->agent_id->value;
    patch = SVC_PATCH_GONE;
    break;
  default:
    patch = SVC_PATCH_DRAIN;
    break;
  }
  if (agent) {
    svc_reg_agent_patch(s, agent, patch, cfg, persisted, wait_new(call, r));
    return;
  }
  Meseta__V1__BatchRequest *b = svc_config_batch(s, r);
  if (b)
    svc_reg_batch(s, b, persisted, wait_new(call, r));
  else
    answer(s, call, r); /* nothing durable */
}
