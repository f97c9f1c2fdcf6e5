/* Allocator.OperatorCall: the Operator mutations master-api forwards. Each call is
 * checked as a whole first (all or nothing; INVALID_ARGUMENT names the field, NOT_FOUND
 * the agent or framework); what is durable (weights, quota, the maintenance schedule,
 * agents' drain / deactivated / gone state) is written to the registry through the
 * ordered worker, and only once the registry accepted it is the change applied to the
 * model and the caller answered ("persist first, then apply"). Without a registry the
 * change is applied at once. Reservations and volumes are not registry records (agents
 * own them): they are applied to the model and sent to the agent as APPLY_OPERATION.
 *
 * Each call kind is one row of `kinds` (the end of this file): its checks, what it
 * writes to the registry first, how it changes the model, and its answer's type.
 * Adding a call is adding a row and its function(s).
 *
 * Everything here runs on the owner thread. */
#include "alloc-svc-operator.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/operator-check.h"
#include "meseta/pb.h"
#include "meseta/resources-io.h"
#include "meseta/roles.h"
#include "meseta/time.h"
#include "meseta/values.h"
#include "meseta/version.h"

#include "alloc-svc-agents.h"
#include "alloc-svc-config.h"
#include "alloc-svc-core.h"
#include "alloc-svc-frameworks.h"
#include "alloc-svc-maintenance.h"
#include "alloc-svc-registry.h"
#include "alloc-svc-state.h"
#include "alloc-svc-tasks.h"

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

/* The request's field name of each resource-operation call. */
typedef struct rop_row {
  Meseta__V1__OperatorCallRequest__CallCase call;
  const char *what;
} rop_row;

static const rop_row rop_rows[] = {
    {MESETA__V1__OPERATOR_CALL_REQUEST__CALL_RESERVE_RESOURCES, "reserve_resources"},
    {MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UNRESERVE_RESOURCES, "unreserve_resources"},
    {MESETA__V1__OPERATOR_CALL_REQUEST__CALL_CREATE_VOLUMES, "create_volumes"},
    {MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DESTROY_VOLUMES, "destroy_volumes"},
    {MESETA__V1__OPERATOR_CALL_REQUEST__CALL_GROW_VOLUME, "grow_volume"},
    {MESETA__V1__OPERATOR_CALL_REQUEST__CALL_SHRINK_VOLUME, "shrink_volume"},
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
  *agent = aid->value; /* (volume, addition, subtract: ms_operator_check) */
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

static int apply_resource_op(alloc_service *s, const op_req *r, ProtobufCMessage *ans, ms_error **err) {
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
    /* Every such answer has operation_id = 2 (the revision is filled by the caller). */
    const ProtobufCFieldDescriptor *fo = protobuf_c_message_descriptor_get_field(ans->descriptor, 2);
    *(ProtobufCMessage **)((char *)ans + fo->offset) = ms_pb_dup(&oid.base);
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
    svc_task_send_kill(s, a, t->framework_id, t->task_id, NULL);
  }
}

static int respec(alloc_service *s, svc_agent *a, ms_error **err) {
  if (svc_agent_respec(s, a, err) < 0)
    return MS_ERR;
  svc_check_trigger(s);
  return 0;
}

static int apply_agent_state(alloc_service *s, const op_req *r, ProtobufCMessage *ans, ms_error **err) {
  (void)ans;
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
  svc_state_emit_agent(s, a->e.key, SVC_UPDATED);
  return 0;
}

static int apply_gone(alloc_service *s, const op_req *r, ProtobufCMessage *ans, ms_error **err) {
  (void)ans;
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
  svc_check_trigger(s);
  return 0;
}

static int apply_weights(alloc_service *s, const op_req *r, ProtobufCMessage *ans, ms_error **err) {
  (void)ans;
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
  svc_want_cycle(s);
  return 0;
}

static int apply_quota(alloc_service *s, const op_req *r, ProtobufCMessage *ans, ms_error **err) {
  (void)ans;
  const Meseta__V1__UpdateQuotaRequest *u = r->update_quota;
  for (size_t i = 0; i < u->n_configs; i++)
    if (svc_config_quota_apply(s, u->configs[i], err) < 0)
      return ms_error_prefix(err, "`update_quota.configs[%zu]`", i);
  svc_state_emit_quota(s);
  for (size_t i = 0; i < u->n_configs; i++)
    svc_state_emit_role(s, u->configs[i]->role);
  svc_want_cycle(s);
  return 0;
}

static int apply_teardown(alloc_service *s, const op_req *r, ProtobufCMessage *ans, ms_error **err) {
  (void)ans;
  const char *id = r->teardown->framework_id->value; /* present: ms_operator_check */
  svc_framework *fw = svc_table_get(&s->frameworks, id);
  if (!fw)
    return ms_error_set(err, MS_NOT_FOUND, "`teardown.framework_id`: framework `%s` is not known", id);
  svc_framework_remove(s, fw, "torn down by an operator");
  return 0;
}

static int apply_get_version(alloc_service *s, const op_req *r, ProtobufCMessage *ans, ms_error **err) {
  (void)s, (void)r, (void)err;
  Meseta__V1__GetVersionResponse *v = (Meseta__V1__GetVersionResponse *)ans;
  v->version_info = ms_pb_new(&meseta__v1__version_info__descriptor);
  v->version_info->version = ms_xstrdup(ms_version());
  return 0;
}

/* ---- checks against the state (the stateless ones are ms_operator_check's) ---- */

static int check_quota(alloc_service *s, const op_req *r, ms_error **err) {
  return svc_config_check_quota(s, r->update_quota, err);
}

static int check_maintenance(alloc_service *s, const op_req *r, ms_error **err) {
  Meseta__V1__MaintenanceRecord *mr = svc_maint_next(s, r, err);
  if (!mr)
    return MS_ERR;
  protobuf_c_message_free_unpacked(&mr->base, NULL);
  return 0;
}

static const ProtobufCMessage *member_of(const op_req *r, const ProtobufCFieldDescriptor **field);

/* The agent calls (AgentID agent_id = 1), present: ms_operator_check. */
static const Meseta__V1__AgentID *agent_id_of(const op_req *r) {
  const ProtobufCFieldDescriptor *field;
  const ProtobufCMessage *m = member_of(r, &field);
  const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(m->descriptor, 1);
  return *(const Meseta__V1__AgentID *const *)((const char *)m + f->offset);
}

static int check_agent(alloc_service *s, const op_req *r, ms_error **err) {
  const ProtobufCFieldDescriptor *field;
  (void)member_of(r, &field);
  return agent_of(s, agent_id_of(r), field->name, err) ? 0 : MS_ERR;
}

static int check_gone(alloc_service *s, const op_req *r, ms_error **err) {
  const char *id = r->mark_agent_gone->agent_id->value;
  if (!svc_table_get(&s->agents, id) &&
      svc_agent_rec_state(s, id) == MESETA__V1__AGENT_RECORD__STATE__STATE_UNKNOWN)
    return ms_error_set(err, MS_NOT_FOUND, "`mark_agent_gone.agent_id`: agent `%s` is not known", id);
  return 0;
}

/* ---- what is written to the registry first ---- */

typedef struct op_record {
  Meseta__V1__BatchRequest *batch; /* registry writes (owned), or */
  const char *agent;               /* an agent record patch */
  svc_agent_patch patch;
  const Meseta__V1__DrainConfig *drain;
} op_record;

static void record_weights(alloc_service *s, const op_req *r, op_record *rec) {
  rec->batch = svc_config_weights_batch(s, r->update_weights);
}

static void record_quota(alloc_service *s, const op_req *r, op_record *rec) {
  rec->batch = svc_config_quota_batch(s, r->update_quota);
}

static void record_maintenance(alloc_service *s, const op_req *r, op_record *rec) {
  Meseta__V1__MaintenanceRecord *mr = svc_maint_next(s, r, NULL); /* checked already */
  rec->batch = mr ? svc_config_maint_batch(mr) : NULL;
}

static void record_drain(alloc_service *s, const op_req *r, op_record *rec) {
  (void)s;
  *rec =
      (op_record){.agent = agent_id_of(r)->value, .patch = SVC_PATCH_DRAIN, .drain = r->drain_agent->config};
}

static void record_deactivate(alloc_service *s, const op_req *r, op_record *rec) {
  (void)s;
  *rec = (op_record){.agent = agent_id_of(r)->value, .patch = SVC_PATCH_DEACTIVATE};
}

static void record_reactivate(alloc_service *s, const op_req *r, op_record *rec) {
  (void)s;
  *rec = (op_record){.agent = agent_id_of(r)->value, .patch = SVC_PATCH_REACTIVATE};
}

static void record_gone(alloc_service *s, const op_req *r, op_record *rec) {
  (void)s;
  *rec = (op_record){.agent = r->mark_agent_gone->agent_id->value, .patch = SVC_PATCH_GONE};
}

/* ---- the table ---- */

#define OP_SERIAL 1u /* one at a time, each checked after the one before is applied (quota) */

typedef struct op_kind {
  Meseta__V1__OperatorCallRequest__CallCase call;
  /* Checks against the state; nothing changes. NULL: none beyond ms_operator_check. */
  int (*check)(alloc_service *s, const op_req *r, ms_error **err);
  /* What must be durable before the model changes. NULL: nothing. */
  void (*record)(alloc_service *s, const op_req *r, op_record *rec);
  /* Changes the model and fills the answer (a new message of the response's member
   * type; a `revision` left 0 is set to the settled revision after it). */
  int (*apply)(alloc_service *s, const op_req *r, ProtobufCMessage *ans, ms_error **err);
  unsigned flags;
} op_kind;

#define CALL(x) MESETA__V1__OPERATOR_CALL_REQUEST__CALL_##x
static const op_kind kinds[] = {
    {CALL(UPDATE_WEIGHTS), NULL, record_weights, apply_weights, 0},
    {CALL(UPDATE_QUOTA), check_quota, record_quota, apply_quota, OP_SERIAL},
    {CALL(RESERVE_RESOURCES), NULL, NULL, apply_resource_op, 0},
    {CALL(UNRESERVE_RESOURCES), NULL, NULL, apply_resource_op, 0},
    {CALL(CREATE_VOLUMES), NULL, NULL, apply_resource_op, 0},
    {CALL(DESTROY_VOLUMES), NULL, NULL, apply_resource_op, 0},
    {CALL(GROW_VOLUME), NULL, NULL, apply_resource_op, 0},
    {CALL(SHRINK_VOLUME), NULL, NULL, apply_resource_op, 0},
    {CALL(UPDATE_MAINTENANCE_SCHEDULE), check_maintenance, record_maintenance, svc_maint_apply, 0},
    {CALL(START_MAINTENANCE), check_maintenance, record_maintenance, svc_maint_apply, 0},
    {CALL(STOP_MAINTENANCE), check_maintenance, record_maintenance, svc_maint_apply, 0},
    {CALL(DRAIN_AGENT), check_agent, record_drain, apply_agent_state, 0},
    {CALL(DEACTIVATE_AGENT), check_agent, record_deactivate, apply_agent_state, 0},
    {CALL(REACTIVATE_AGENT), check_agent, record_reactivate, apply_agent_state, 0},
    {CALL(MARK_AGENT_GONE), check_gone, record_gone, apply_gone, 0},
    {CALL(TEARDOWN), NULL, NULL, apply_teardown, 0},
    {CALL(GET_VERSION), NULL, NULL, apply_get_version, 0},
};
#undef CALL

static const op_kind *kind_of(const op_req *r) {
  for (size_t i = 0; i < MS_ARRAY_SIZE(kinds); i++)
    if (kinds[i].call == r->call_case)
      return &kinds[i];
  return NULL;
}

/* The request's member (the call oneof is set: checked on entry). */
static const ProtobufCMessage *member_of(const op_req *r, const ProtobufCFieldDescriptor **field) {
  *field = protobuf_c_message_descriptor_get_field(r->base.descriptor, (unsigned)r->call_case);
  return *(const ProtobufCMessage *const *)((const char *)r + (*field)->offset);
}

/* ---- the call ---- */

/* Quota updates waiting their turn, at most. */
#define MAX_QUOTA_WAITING 1024u

typedef struct op_wait {
  ms_rpc_call *call; /* referenced */
  op_req *req;       /* a copy */
} op_wait;

/* Applies the call and answers: the response's member has the request's number. */
static void answer(alloc_service *s, ms_rpc_call *call, const op_req *r) {
  const op_kind *k = kind_of(r);
  const ProtobufCFieldDescriptor *rf =
      protobuf_c_message_descriptor_get_field(&meseta__v1__operator_call_response__descriptor, r->call_case);
  ProtobufCMessage *ans = ms_pb_new(rf->descriptor);
  ms_error *err = NULL;
  if (k->apply(s, r, ans, &err) < 0) {
    ms_log_info(NULL, "operator call refused: %s", err->msg);
    ms_rpc_call_finish_error(call, err);
    ms_error_free(err);
    protobuf_c_message_free_unpacked(ans, NULL);
    return;
  }
  const ProtobufCFieldDescriptor *rev =
      protobuf_c_message_descriptor_get_field_by_name(rf->descriptor, "revision");
  if (rev && rev->type == PROTOBUF_C_TYPE_INT64 && *(int64_t *)((char *)ans + rev->offset) == 0)
    *(int64_t *)((char *)ans + rev->offset) = settled_revision(s);
  op_resp *resp = ms_pb_new(&meseta__v1__operator_call_response__descriptor);
  resp->result_case = (Meseta__V1__OperatorCallResponse__ResultCase)r->call_case;
  *(ProtobufCMessage **)((char *)resp + rf->offset) = ans;
  if (ms_rpc_call_reply(call, &resp->base, &err) < 0)
    ms_error_free(err);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
}

static void quota_next(alloc_service *s);

static void persisted(alloc_service *s, void *ctx, const ms_error *err, bool current) {
  op_wait *w = ctx;
  bool serial = kind_of(w->req)->flags & OP_SERIAL;
  if (!current)
    ms_rpc_call_finish(w->call, MS_UNAVAILABLE, "this allocator is no longer the leader");
  else if (err)
    ms_rpc_call_finish(w->call, err->code == MS_CANCELLED ? MS_UNAVAILABLE : err->code, err->msg);
  else if (!ms_rpc_call_is_done(w->call))
    answer(s, w->call, w->req); /* durable: now the model changes, then the caller hears */
  ms_rpc_call_unref(w->call);
  protobuf_c_message_free_unpacked(&w->req->base, NULL);
  free(w);
  if (serial && current) /* (a lost lead has dropped the waiting ones already) */
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

static void refuse(ms_rpc_call *call, ms_error *err) {
  ms_log_info(NULL, "operator call refused: %s", err->msg);
  ms_rpc_call_finish_error(call, err);
  ms_error_free(err);
}

void svc_operator_call(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg) {
  (void)data;
  if (svc_refuse_unless_serving(s, call))
    return;
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
  const ProtobufCFieldDescriptor *field;
  const ProtobufCMessage *req = member_of(r, &field);
  const op_kind *k = kind_of(r);
  if (!k) {
    ms_error_set(&err, MS_UNIMPLEMENTED, "`%s`: not served by the allocator yet", field->name);
    refuse(call, err);
    return;
  }
  if (k->flags & OP_SERIAL && s->quota_busy) { /* its turn comes when the one in flight is applied */
    if (s->nquota_waiting >= MAX_QUOTA_WAITING) {
      ms_rpc_call_finish(call, MS_RESOURCE_EXHAUSTED, "too many quota updates waiting: try again");
      return;
    }
    s->quota_waiting = ms_xrealloc(s->quota_waiting, (s->nquota_waiting + 1) * sizeof(*s->quota_waiting));
    s->quota_waiting[s->nquota_waiting++] = wait_new(call, r);
    return;
  }
  if (ms_operator_check(req, &err) < 0 || (k->check && k->check(s, r, &err) < 0)) {
    refuse(call, err);
    return;
  }
  op_record rec = {0};
  if (svc_durable(s) && k->record)
    k->record(s, r, &rec);
  if (rec.agent) {
    svc_reg_agent_patch(s, rec.agent, rec.patch, rec.drain, persisted, wait_new(call, r));
  } else if (rec.batch) {
    if (k->flags & OP_SERIAL)
      s->quota_busy = true;
    svc_reg_batch(s, rec.batch, persisted, wait_new(call, r));
  } else {
    answer(s, call, r); /* nothing durable */
  }
}
