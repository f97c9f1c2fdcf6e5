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
#include "alloc-svc-operator.h"

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

#include "alloc-svc-agents.h"
#include "alloc-svc-config.h"
#include "alloc-svc-core.h"
#include "alloc-svc-frameworks.h"
#include "alloc-svc-registry.h"
#include "alloc-svc-state.h"

typedef Meseta__V1__OperatorCallRequest op_req;
typedef Meseta__V1__OperatorCallResponse op_resp;

/* ---- checks (nothing changes) ---- */

/* The revision to answer a mutation with: after the changes it caused, including the
 * agent and role updates the state stream sends at the end of the turn (flushed now), so
 * a read at that revision shows all of them (read-your-writes). */
static int64_t settled_revision(alloc_service *s) {
  svc_state_flush(s);
  return s->revision;
}

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

/* One row per resource-operation call: the request's field name and its answer's type
 * (every such answer has revision = 1 and operation_id = 2; the response oneof's
 * cases are the request's). */
typedef struct rop_row {
  Meseta__V1__OperatorCallRequest__CallCase call;
  const char *what;
  const ProtobufCMessageDescriptor *resp;
} rop_row;

static const rop_row rop_rows[] = {
    {MESETA__V1__OPERATOR_CALL_REQUEST__CALL_RESERVE_RESOURCES, "reserve_resources",
     &meseta__v1__reserve_resources_response__descriptor},
    {MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UNRESERVE_RESOURCES, "unreserve_resources",
     &meseta__v1__unreserve_resources_response__descriptor},
    {MESETA__V1__OPERATOR_CALL_REQUEST__CALL_CREATE_VOLUMES, "create_volumes",
     &meseta__v1__create_volumes_response__descriptor},
    {MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DESTROY_VOLUMES, "destroy_volumes",
     &meseta__v1__destroy_volumes_response__descriptor},
    {MESETA__V1__OPERATOR_CALL_REQUEST__CALL_GROW_VOLUME, "grow_volume",
     &meseta__v1__grow_volume_response__descriptor},
    {MESETA__V1__OPERATOR_CALL_REQUEST__CALL_SHRINK_VOLUME, "shrink_volume",
     &meseta__v1__shrink_volume_response__descriptor},
};

static const rop_row *rop_row_of(const op_req *r) {
  for (size_t i = 0; i < MS_ARRAY_SIZE(rop_rows); i++)
    if (rop_rows[i].call == r->call_case)
      return &rop_rows[i];
  return NULL;
}

/* The request as a meseta.v1.Operation, borrowing the request's resources: what the
 * model applies and what the agent is sent. */
typedef struct rop_msg {
  Meseta__V1__Operation op;
  Meseta__V1__Operation__Reserve rs;
  Meseta__V1__Operation__Unreserve un;
  Meseta__V1__Operation__Create cr;
  Meseta__V1__Operation__Destroy de;
  Meseta__V1__Operation__GrowVolume gv;
  Meseta__V1__Operation__ShrinkVolume sv;
} rop_msg;

/* Fills m from r; returns the request's agent id (may be NULL). */
static const Meseta__V1__AgentID *rop_build(const op_req *r, rop_msg *m) {
  *m = (rop_msg){.op = MESETA__V1__OPERATION__INIT,
                 .rs = MESETA__V1__OPERATION__RESERVE__INIT,
                 .un = MESETA__V1__OPERATION__UNRESERVE__INIT,
                 .cr = MESETA__V1__OPERATION__CREATE__INIT,
                 .de = MESETA__V1__OPERATION__DESTROY__INIT,
                 .gv = MESETA__V1__OPERATION__GROW_VOLUME__INIT,
                 .sv = MESETA__V1__OPERATION__SHRINK_VOLUME__INIT};
  switch (r->call_case) {
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_RESERVE_RESOURCES:
    m->op.type = MESETA__V1__OPERATION__TYPE__RESERVE;
    m->rs.n_source = r->reserve_resources->n_source;
    m->rs.source = r->reserve_resources->source;
    m->rs.n_resources = r->reserve_resources->n_resources;
    m->rs.resources = r->reserve_resources->resources;
    m->op.reserve = &m->rs;
    return r->reserve_resources->agent_id;
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UNRESERVE_RESOURCES:
    m->op.type = MESETA__V1__OPERATION__TYPE__UNRESERVE;
    m->un.n_resources = r->unreserve_resources->n_resources;
    m->un.resources = r->unreserve_resources->resources;
    m->op.unreserve = &m->un;
    return r->unreserve_resources->agent_id;
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_CREATE_VOLUMES:
    m->op.type = MESETA__V1__OPERATION__TYPE__CREATE;
    m->cr.n_volumes = r->create_volumes->n_volumes;
    m->cr.volumes = r->create_volumes->volumes;
    m->op.create = &m->cr;
    return r->create_volumes->agent_id;
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DESTROY_VOLUMES:
    m->op.type = MESETA__V1__OPERATION__TYPE__DESTROY;
    m->de.n_volumes = r->destroy_volumes->n_volumes;
    m->de.volumes = r->destroy_volumes->volumes;
    m->op.destroy = &m->de;
    return r->destroy_volumes->agent_id;
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_GROW_VOLUME:
    m->op.type = MESETA__V1__OPERATION__TYPE__GROW_VOLUME;
    m->gv.volume = r->grow_volume->volume;
    m->gv.addition = r->grow_volume->addition;
    m->op.grow_volume = &m->gv;
    return r->grow_volume->agent_id;
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_SHRINK_VOLUME:
    m->op.type = MESETA__V1__OPERATION__TYPE__SHRINK_VOLUME;
    m->sv.volume = r->shrink_volume->volume;
    m->sv.subtract = r->shrink_volume->subtract;
    m->op.shrink_volume = &m->sv;
    return r->shrink_volume->agent_id;
  default:
    return NULL;
  }
}

static int resource_op(const op_req *r, rop_msg *m, ms_operation *op, const char **agent, ms_error **err) {
  const rop_row *row = rop_row_of(r);
  const Meseta__V1__AgentID *aid = rop_build(r, m);
  if (!aid || !aid->value || !*aid->value)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.agent_id` is missing", row->what);
  *agent = aid->value;
  if (m->op.type == MESETA__V1__OPERATION__TYPE__GROW_VOLUME && (!m->gv.volume || !m->gv.addition))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`grow_volume.%s` is missing",
                        m->gv.volume ? "addition" : "volume");
  if (m->op.type == MESETA__V1__OPERATION__TYPE__SHRINK_VOLUME && (!m->sv.volume || !m->sv.subtract))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`shrink_volume.%s` is missing",
                        m->sv.volume ? "subtract" : "volume");
  if (ms_operation_from_proto(&m->op, op, err) < 0)
    return ms_error_prefix(err, "`%s`", row->what);
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
  const rop_row *row = rop_row_of(r);
  ms_operation op = {0};
  rop_msg m;
  const char *agent = NULL;
  if (resource_op(r, &m, &op, &agent, err) < 0) {
    ms_operation_release(&op);
    return MS_ERR;
  }
  svc_agent *a = svc_table_get(&s->agents, agent);
  int rc = 0;
  if (!a) {
    rc = ms_error_set(err, MS_NOT_FOUND, "`%s.agent_id`: agent `%s` is not registered", row->what, agent);
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
    if (rc < 0) {
      ms_error_prefix(&e1, "`%s`", row->what);
      *err = e1;
    }
  }
  if (rc == 0) {
    char opid[40];
    svc_uuid(opid);
    uint8_t uuid[16];
    svc_uuid_bytes(uuid);
    Meseta__V1__OperationID oid = MESETA__V1__OPERATION_ID__INIT;
    oid.value = opid;
    /* The agent learns about it (it owns reservations and volumes). */
    Meseta__V1__AllocatorMessage__ApplyOperation ap = MESETA__V1__ALLOCATOR_MESSAGE__APPLY_OPERATION__INIT;
    ap.operation = &m.op;
    ap.operation_id = &oid;
    ap.operation_uuid.data = uuid;
    ap.operation_uuid.len = sizeof(uuid);
    Meseta__V1__AllocatorMessage am = MESETA__V1__ALLOCATOR_MESSAGE__INIT;
    am.message_case = MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_APPLY_OPERATION;
    am.apply_operation = &ap;
    svc_send_agent(s, a, &am);
    ms_log_info(agent, "operator %s applied (operation `%s`)", ms_operation_type_name(op.type), opid);
    svc_state_emit_agent(s, agent, SVC_UPDATED);
    emit_roles_of(s, op.resources);
    emit_roles_of(s, op.source); /* a reservation moved: the old role's too */
    emit_roles_of(s, op.volume);
    ProtobufCMessage *pm = ms_pb_new(row->resp);
    const ProtobufCFieldDescriptor *fr = protobuf_c_message_descriptor_get_field(row->resp, 1);
    const ProtobufCFieldDescriptor *fo = protobuf_c_message_descriptor_get_field(row->resp, 2);
    *(int64_t *)((char *)pm + fr->offset) = settled_revision(s);
    *(ProtobufCMessage **)((char *)pm + fo->offset) = ms_pb_dup(&oid.base);
    resp->result_case = (Meseta__V1__OperatorCallResponse__ResultCase)r->call_case;
    resp->reserve_resources = (Meseta__V1__ReserveResourcesResponse *)pm; /* a union: every member */
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
  SET_REV(mark_agent_gone, meseta__v1__mark_agent_gone_response__descriptor, settled_revision(s));
  svc_check_trigger(s);
  return 0;
}

/* ---- maintenance: the schedule and DOWN machines ---- */

static const char *str0(const char *x) {
  return x ? x : "";
}

static bool machine_eq(const Meseta__V1__MachineID *a, const Meseta__V1__MachineID *b) {
  return strcmp(str0(a->hostname), str0(b->hostname)) == 0 && strcmp(str0(a->ip), str0(b->ip)) == 0;
}

/* As svc_agent_window: the hostname, or the ip compared with the agent's hostname. */
static bool machine_is_agent(const Meseta__V1__MachineID *m, const Meseta__V1__AgentInfo *info) {
  if (!info || !info->hostname || !*info->hostname)
    return false;
  return (m->hostname && *m->hostname && strcmp(m->hostname, info->hostname) == 0) ||
         (m->ip && *m->ip && strcmp(m->ip, info->hostname) == 0);
}

static const char *machine_name(const Meseta__V1__MachineID *m) {
  return m->hostname && *m->hostname ? m->hostname : str0(m->ip);
}

static bool in_schedule(const Meseta__V1__MaintenanceSchedule *sc, const Meseta__V1__MachineID *m) {
  for (size_t i = 0; sc && i < sc->n_windows; i++)
    for (size_t k = 0; k < sc->windows[i]->n_machine_ids; k++)
      if (machine_eq(sc->windows[i]->machine_ids[k], m))
        return true;
  return false;
}

static bool is_down(Meseta__V1__MachineID *const *v, size_t n, const Meseta__V1__MachineID *m) {
  for (size_t i = 0; i < n; i++)
    if (machine_eq(v[i], m))
      return true;
  return false;
}

static void down_add(Meseta__V1__MaintenanceRecord *mr, const Meseta__V1__MachineID *m) {
  mr->down_machines = ms_xrealloc(mr->down_machines, (mr->n_down_machines + 1) * sizeof(*mr->down_machines));
  mr->down_machines[mr->n_down_machines++] = (Meseta__V1__MachineID *)ms_pb_dup(&m->base);
}

/* The machines of a Start/StopMaintenance: named, each with a hostname or an ip. */
static int check_machines(Meseta__V1__MachineID *const *v, size_t n, const char *what, ms_error **err) {
  if (n == 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.machines` is empty", what);
  for (size_t i = 0; i < n; i++)
    if (!*str0(v[i]->hostname) && !*str0(v[i]->ip))
      return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.machines[%zu]` has neither hostname nor ip", what,
                          i);
  return 0;
}

/* The schedule and DOWN machines the call leaves (all owned by the result); NULL and
 * *err when refused. Nothing changes here. */
static Meseta__V1__MaintenanceRecord *maint_next(alloc_service *s, const op_req *r, ms_error **err) {
  Meseta__V1__MaintenanceRecord *mr = ms_pb_new(&meseta__v1__maintenance_record__descriptor);
  Meseta__V1__MachineID *const *down = s->down ? s->down->machines : NULL;
  size_t ndown = s->down ? s->down->n_machines : 0;
  int rc = 0;
  switch (r->call_case) {
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UPDATE_MAINTENANCE_SCHEDULE: {
    const Meseta__V1__MaintenanceSchedule *sc = r->update_maintenance_schedule->schedule;
    for (size_t i = 0; i < ndown && rc == 0; i++)
      if (!in_schedule(sc, down[i]))
        rc = ms_error_set(err, MS_FAILED_PRECONDITION,
                          "`update_maintenance_schedule.schedule`: machine `%s` is DOWN and must stay in the "
                          "schedule until StopMaintenance",
                          machine_name(down[i]));
      else
        down_add(mr, down[i]);
    mr->schedule = sc ? (Meseta__V1__MaintenanceSchedule *)ms_pb_dup(&sc->base)
                      : ms_pb_new(&meseta__v1__maintenance_schedule__descriptor);
    break;
  }
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_START_MAINTENANCE: {
    const Meseta__V1__StartMaintenanceRequest *q = r->start_maintenance;
    rc = check_machines(q->machines, q->n_machines, "start_maintenance", err);
    for (size_t i = 0; i < q->n_machines && rc == 0; i++)
      if (!in_schedule(s->schedule, q->machines[i]))
        rc =
            ms_error_set(err, MS_FAILED_PRECONDITION,
                         "`start_maintenance.machines[%zu]`: machine `%s` is not in the maintenance schedule",
                         i, machine_name(q->machines[i]));
    for (size_t i = 0; i < ndown && rc == 0; i++)
      down_add(mr, down[i]);
    for (size_t i = 0; i < q->n_machines && rc == 0; i++) /* DOWN already: no change (a retry) */
      if (!is_down(mr->down_machines, mr->n_down_machines, q->machines[i]))
        down_add(mr, q->machines[i]);
    mr->schedule = s->schedule ? (Meseta__V1__MaintenanceSchedule *)ms_pb_dup(&s->schedule->base)
                               : ms_pb_new(&meseta__v1__maintenance_schedule__descriptor);
    break;
  }
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_STOP_MAINTENANCE: {
    const Meseta__V1__StopMaintenanceRequest *q = r->stop_maintenance;
    rc = check_machines(q->machines, q->n_machines, "stop_maintenance", err);
    for (size_t i = 0; i < q->n_machines && rc == 0; i++)
      if (!is_down(down, ndown, q->machines[i]))
        rc = ms_error_set(err, MS_FAILED_PRECONDITION,
                          "`stop_maintenance.machines[%zu]`: machine `%s` is not DOWN", i,
                          machine_name(q->machines[i]));
    for (size_t i = 0; i < ndown && rc == 0; i++)
      if (!is_down(q->machines, q->n_machines, down[i]))
        down_add(mr, down[i]);
    /* Back UP: out of the schedule too; a window left without machines goes. */
    mr->schedule = ms_pb_new(&meseta__v1__maintenance_schedule__descriptor);
    for (size_t i = 0; rc == 0 && s->schedule && i < s->schedule->n_windows; i++) {
      Meseta__V1__MaintenanceWindow *w =
          (Meseta__V1__MaintenanceWindow *)ms_pb_dup(&s->schedule->windows[i]->base);
      size_t keep = 0;
      for (size_t k = 0; k < w->n_machine_ids; k++) {
        if (is_down(q->machines, q->n_machines, w->machine_ids[k]))
          protobuf_c_message_free_unpacked(&w->machine_ids[k]->base, NULL);
        else
          w->machine_ids[keep++] = w->machine_ids[k];
      }
      w->n_machine_ids = keep;
      if (!keep) {
        protobuf_c_message_free_unpacked(&w->base, NULL);
        continue;
      }
      Meseta__V1__MaintenanceSchedule *sc = mr->schedule;
      sc->windows = ms_xrealloc(sc->windows, (sc->n_windows + 1) * sizeof(*sc->windows));
      sc->windows[sc->n_windows++] = w;
    }
    break;
  }
  default:
    rc = ms_error_set(err, MS_INTERNAL, "not a maintenance call");
    break;
  }
  if (rc < 0) {
    protobuf_c_message_free_unpacked(&mr->base, NULL);
    return NULL;
  }
  return mr;
}

Meseta__V1__MaintenanceRecord *svc_maint_record(alloc_service *s, const op_req *r) {
  return maint_next(s, r, NULL);
}

static void send_shutdown(alloc_service *s, svc_agent *a, ms_rpc_call *link, const char *why) {
  Meseta__V1__AllocatorMessage__ShutdownAgent sd = MESETA__V1__ALLOCATOR_MESSAGE__SHUTDOWN_AGENT__INIT;
  sd.reason = (char *)why;
  Meseta__V1__AllocatorMessage m = MESETA__V1__ALLOCATOR_MESSAGE__INIT;
  m.message_case = MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_SHUTDOWN_AGENT;
  m.shutdown_agent = &sd;
  if (a)
    svc_send_agent(s, a, &m);
  else if (link)
    (void)ms_rpc_call_send(link, &m.base, NULL);
}

bool svc_maint_refuse(alloc_service *s, ms_rpc_call *link, const Meseta__V1__AgentInfo *info) {
  for (size_t i = 0; s->down && i < s->down->n_machines; i++) {
    if (!machine_is_agent(s->down->machines[i], info))
      continue;
    char why[256];
    snprintf(why, sizeof(why),
             "machine `%s` is DOWN for maintenance: its agent may register after StopMaintenance",
             machine_name(s->down->machines[i]));
    ms_log_info(NULL, "agent on `%s` refused: %s", info->hostname, why);
    send_shutdown(s, NULL, link, why);
    ms_rpc_call_finish(link, MS_FAILED_PRECONDITION, why);
    return true;
  }
  return false;
}

/* Agents on DOWN machines are shut down and removed (they may come back after
 * StopMaintenance, re-registering with their id). */
static void shut_down_machines(alloc_service *s) {
  char **ids = ms_xcalloc(s->agents.n + 1, sizeof(*ids));
  size_t n = 0;
  for (uint32_t i = 0; i < s->agents.n; i++) {
    svc_agent *a = (svc_agent *)s->agents.v[i];
    for (size_t k = 0; s->down && k < s->down->n_machines; k++)
      if (machine_is_agent(s->down->machines[k], a->info)) {
        ids[n++] = ms_xstrdup(a->e.key);
        break;
      }
  }
  for (size_t i = 0; i < n; i++) {
    svc_agent *a = svc_table_get(&s->agents, ids[i]);
    const char *why = "its machine is DOWN for maintenance";
    send_shutdown(s, a, NULL, why);
    ms_rpc_call *link = a->link ? a->link->call : NULL;
    svc_agent_remove(s, a, why);
    if (link)
      ms_rpc_call_finish(link, MS_FAILED_PRECONDITION, why);
    free(ids[i]);
  }
  free(ids);
}

static int apply_maintenance(alloc_service *s, const op_req *r, op_resp *resp, ms_error **err) {
  Meseta__V1__MaintenanceRecord *mr = maint_next(s, r, err);
  if (!mr)
    return MS_ERR;
  if (s->schedule)
    protobuf_c_message_free_unpacked(&s->schedule->base, NULL);
  s->schedule = TAKE_PTR(mr->schedule);
  if (s->schedule && s->schedule->n_windows == 0) {
    protobuf_c_message_free_unpacked(&s->schedule->base, NULL);
    s->schedule = NULL;
  }
  bool down_changed = r->call_case != MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UPDATE_MAINTENANCE_SCHEDULE;
  if (down_changed) {
    if (s->down)
      protobuf_c_message_free_unpacked(&s->down->base, NULL);
    s->down = NULL;
    if (mr->n_down_machines) {
      s->down = ms_pb_new(&meseta__v1__down_machines__descriptor);
      s->down->machines = TAKE_PTR(mr->down_machines);
      s->down->n_machines = mr->n_down_machines;
      mr->n_down_machines = 0;
    }
  }
  protobuf_c_message_free_unpacked(&mr->base, NULL);
  if (r->call_case != MESETA__V1__OPERATOR_CALL_REQUEST__CALL_START_MAINTENANCE)
    svc_state_emit_maintenance(s);
  if (down_changed)
    svc_state_emit_down(s);
  if (r->call_case == MESETA__V1__OPERATOR_CALL_REQUEST__CALL_START_MAINTENANCE)
    shut_down_machines(s);
  for (uint32_t i = 0; i < s->agents.n; i++) { /* windows moved */
    svc_agent *a = (svc_agent *)s->agents.v[i];
    ms_error *e = NULL;
    if (svc_agent_respec(s, a, &e) < 0) {
      ms_log_warn(a->e.key, "maintenance window: %s", e->msg);
      ms_error_free(e);
    }
    svc_state_emit_agent(s, a->e.key, SVC_UPDATED);
  }
  svc_check_trigger(s);
  ms_log_info(NULL, "maintenance: %s",
              r->call_case == MESETA__V1__OPERATOR_CALL_REQUEST__CALL_START_MAINTENANCE ? "machines DOWN"
              : r->call_case == MESETA__V1__OPERATOR_CALL_REQUEST__CALL_STOP_MAINTENANCE
                  ? "machines back UP"
                  : "schedule updated");
  switch (r->call_case) {
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_START_MAINTENANCE:
    resp->result_case = MESETA__V1__OPERATOR_CALL_RESPONSE__RESULT_START_MAINTENANCE;
    SET_REV(start_maintenance, meseta__v1__start_maintenance_response__descriptor, settled_revision(s));
    break;
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_STOP_MAINTENANCE:
    resp->result_case = MESETA__V1__OPERATOR_CALL_RESPONSE__RESULT_STOP_MAINTENANCE;
    SET_REV(stop_maintenance, meseta__v1__stop_maintenance_response__descriptor, settled_revision(s));
    break;
  default:
    resp->result_case = MESETA__V1__OPERATOR_CALL_RESPONSE__RESULT_UPDATE_MAINTENANCE_SCHEDULE;
    SET_REV(update_maintenance_schedule, meseta__v1__update_maintenance_schedule_response__descriptor,
            settled_revision(s));
    break;
  }
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
    SET_REV(update_weights, meseta__v1__update_weights_response__descriptor, settled_revision(s));
    svc_want_cycle(s);
    return 0;
  }
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UPDATE_QUOTA: {
    const Meseta__V1__UpdateQuotaRequest *u = r->update_quota;
    for (size_t i = 0; i < u->n_configs; i++)
      if (svc_config_quota_apply(s, u->configs[i], err) < 0)
        return ms_error_prefix(err, "`update_quota.configs[%zu]`", i);
    svc_state_emit_quota(s);
    for (size_t i = 0; i < u->n_configs; i++)
      svc_state_emit_role(s, u->configs[i]->role);
    resp->result_case = MESETA__V1__OPERATOR_CALL_RESPONSE__RESULT_UPDATE_QUOTA;
    SET_REV(update_quota, meseta__v1__update_quota_response__descriptor, settled_revision(s));
    svc_want_cycle(s);
    return 0;
  }
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_RESERVE_RESOURCES:
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UNRESERVE_RESOURCES:
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_CREATE_VOLUMES:
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DESTROY_VOLUMES:
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_GROW_VOLUME:
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_SHRINK_VOLUME:
    return apply_resource_op(s, r, resp, err);
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DRAIN_AGENT:
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DEACTIVATE_AGENT:
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_REACTIVATE_AGENT:
    return apply_agent_state(s, r, resp, err);
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_MARK_AGENT_GONE:
    return apply_gone(s, r, resp, err);
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UPDATE_MAINTENANCE_SCHEDULE:
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_START_MAINTENANCE:
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_STOP_MAINTENANCE:
    return apply_maintenance(s, r, resp, err);
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_TEARDOWN: {
    const Meseta__V1__FrameworkID *id = r->teardown->framework_id;
    if (!id || !id->value || !*id->value)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "`teardown.framework_id` is missing");
    svc_framework *fw = svc_table_get(&s->frameworks, id->value);
    if (!fw)
      return ms_error_set(err, MS_NOT_FOUND, "framework `%s` is not known", id->value);
    svc_framework_remove(s, fw, "torn down by an operator");
    resp->result_case = MESETA__V1__OPERATOR_CALL_RESPONSE__RESULT_TEARDOWN;
    SET_REV(teardown, meseta__v1__teardown_framework_response__descriptor, settled_revision(s));
    return 0;
  }
  default:
    return ms_error_set(err, MS_UNIMPLEMENTED, "this operator call is not served by the allocator yet");
  }
}

/* ---- the call ---- */

/* Quota updates waiting their turn, at most. */
#define MAX_QUOTA_WAITING 1024u

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

static void quota_next(alloc_service *s);

static void persisted(alloc_service *s, void *ctx, const ms_error *err, bool current) {
  op_wait *w = ctx;
  bool quota = w->req->call_case == MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UPDATE_QUOTA;
  if (!current)
    ms_rpc_call_finish(w->call, MS_UNAVAILABLE, "this allocator is no longer the leader");
  else if (err)
    ms_rpc_call_finish(w->call, err->code == MS_CANCELLED ? MS_UNAVAILABLE : err->code, err->msg);
  else if (!ms_rpc_call_is_done(w->call))
    answer(s, w->call, w->req); /* durable: now the model changes, then the caller hears */
  ms_rpc_call_unref(w->call);
  protobuf_c_message_free_unpacked(&w->req->base, NULL);
  free(w);
  if (quota && current) /* (a lost lead has dropped the waiting ones already) */
    quota_next(s);
}

static void wait_free(op_wait *w) {
  ms_rpc_call_unref(w->call);
  protobuf_c_message_free_unpacked(&w->req->base, NULL);
  free(w);
}

/* The quota update in flight is done: the next waiting one runs, checked anew. */
static void quota_next(alloc_service *s) {
  s->quota_busy = false;
  while (!s->quota_busy && s->nquota_waiting > 0) { /* one refused or answered at once: the next */
    op_wait *w = s->quota_waiting[0];
    memmove(s->quota_waiting, s->quota_waiting + 1, --s->nquota_waiting * sizeof(*s->quota_waiting));
    svc_operator_call(s, w->call, NULL, &w->req->base);
    wait_free(w);
  }
}

void svc_operator_quota_drop(alloc_service *s) {
  for (uint32_t i = 0; i < s->nquota_waiting; i++) {
    ms_rpc_call_finish(s->quota_waiting[i]->call, MS_UNAVAILABLE, "this allocator is no longer the leader");
    wait_free(s->quota_waiting[i]);
  }
  free(s->quota_waiting);
  s->quota_waiting = NULL;
  s->nquota_waiting = 0;
  s->quota_busy = false;
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
    return svc_config_check_quota(s, r->update_quota, err);
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UPDATE_MAINTENANCE_SCHEDULE:
    if (svc_config_check_schedule(r->update_maintenance_schedule, err) < 0)
      return MS_ERR;
    /* fallthrough */
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_START_MAINTENANCE:
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_STOP_MAINTENANCE: {
    Meseta__V1__MaintenanceRecord *mr = maint_next(s, r, err);
    if (!mr)
      return MS_ERR;
    protobuf_c_message_free_unpacked(&mr->base, NULL);
    return 0;
  }
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
  bool quota = r->call_case == MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UPDATE_QUOTA;
  if (quota && s->quota_busy) { /* its turn comes when the one in flight is applied */
    if (s->nquota_waiting >= MAX_QUOTA_WAITING) {
      ms_rpc_call_finish(call, MS_RESOURCE_EXHAUSTED, "too many quota updates waiting: try again");
      return;
    }
    s->quota_waiting = ms_xrealloc(s->quota_waiting, (s->nquota_waiting + 1) * sizeof(*s->quota_waiting));
    s->quota_waiting[s->nquota_waiting++] = wait_new(call, r);
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
  if (b && quota)
    s->quota_busy = true;
  if (b)
    svc_reg_batch(s, b, persisted, wait_new(call, r));
  else
    answer(s, call, r); /* nothing durable */
}
