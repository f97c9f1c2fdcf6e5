/* Feedback for framework operations accepted with an Offer.Operation.id: resource
 * operations (RESERVE, UNRESERVE, CREATE, DESTROY, GROW / SHRINK_VOLUME, CREATE /
 * DESTROY_DISK) and launches (LAUNCH, LAUNCH_GROUP): tracking from the accept to the
 * framework's acknowledgement of a terminal status, statuses sent as
 * UPDATE_OPERATION_STATUS (again on re-subscription while not acknowledged),
 * reconciliation, the model's undo of a failed resource operation, and what becomes of
 * operations whose agent is removed (UNREACHABLE, or GONE_BY_OPERATOR).
 *
 * A resource operation's statuses come from the agent (APPLY_OPERATION, then
 * OPERATION_STATUS_UPDATE). A launch is not an operation to the agent (it gets RUN_TASK
 * / RUN_TASK_GROUP as without an id): the allocator settles it from its tasks' first
 * statuses — FINISHED once each task reported a state that shows it was launched,
 * FAILED as soon as one reports that it was not (see launch_verdict_of) — and makes the
 * status itself (a fresh uuid). Nothing is acknowledged to the agent for it.
 *
 * The model applies an operation at accept time (optimistically, as Mesos' master); the
 * agent's FAILED / ERROR / DROPPED answer applies the inverse to the agent's unallocated
 * resources (rescinding its offers when they hold them). RESERVE ↔ UNRESERVE (a
 * re-targeting RESERVE swaps source and result) and CREATE ↔ DESTROY have inverses;
 * GROW / SHRINK_VOLUME and CREATE / DESTROY_DISK are not undone (logged).
 *
 * Registry: one OperationRecord per tracked operation, its id the operation's uuid
 * (hex), written with Expect any (only the leader writes them): created before
 * APPLY_OPERATION (a launch: its RUN_TASKs) is sent, updated with each status, deleted on
 * the acknowledgement of a terminal status. A launch's record has an empty `operation`
 * (TYPE_UNSPECIFIED; the registry wants one). Nothing reads them back yet (a new leader
 * does not recover them). */
#include "alloc-svc-operations.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/hex.h"
#include "meseta/log.h"
#include "meseta/pb.h"
#include "meseta/resources-io.h"
#include "meseta/task-state.h"

#include "alloc-svc-core.h"
#include "alloc-svc-frameworks.h"
#include "alloc-svc-operator.h"
#include "alloc-svc-registry.h"
#include "alloc-svc-state.h"
#include "alloc-svc-tasks.h"

/* ---- helpers ---- */

static bool state_terminal(Meseta__V1__OperationState st) {
  switch (st) {
  case MESETA__V1__OPERATION_STATE__OPERATION_FINISHED:
  case MESETA__V1__OPERATION_STATE__OPERATION_FAILED:
  case MESETA__V1__OPERATION_STATE__OPERATION_ERROR:
  case MESETA__V1__OPERATION_STATE__OPERATION_DROPPED:
  case MESETA__V1__OPERATION_STATE__OPERATION_GONE_BY_OPERATOR:
    return true;
  default:
    return false;
  }
}

static bool state_failed(Meseta__V1__OperationState st) {
  return st == MESETA__V1__OPERATION_STATE__OPERATION_FAILED ||
         st == MESETA__V1__OPERATION_STATE__OPERATION_ERROR ||
         st == MESETA__V1__OPERATION_STATE__OPERATION_DROPPED;
}

static void uuid_hex(const uint8_t u[16], char out[33]) {
  ms_hex_encode(u, 16, out);
}

static const char *info_id(const Meseta__V1__Offer__Operation *o) {
  return o->id && o->id->value && *o->id->value ? o->id->value : NULL;
}

static svc_operation *op_by_uuid(alloc_service *s, const uint8_t *u, size_t len) {
  if (len != 16)
    return NULL;
  /* Linear: operations in flight are few. */
  for (uint32_t i = 0; i < s->operations.n; i++) {
    svc_operation *op = (svc_operation *)s->operations.v[i];
    if (memcmp(op->uuid, u, 16) == 0)
      return op;
  }
  return NULL;
}

static svc_operation *op_get(alloc_service *s, const char *framework_id, const char *id) {
  char *k = svc_key2(framework_id, id);
  svc_operation *op = svc_table_get(&s->operations, k);
  free(k);
  return op;
}

static void op_free(svc_operation *op) {
  free(op->e.key);
  free(op->framework_id);
  free(op->agent_id);
  free(op->op_id);
  if (op->info)
    protobuf_c_message_free_unpacked(&op->info->base, NULL);
  if (op->op)
    protobuf_c_message_free_unpacked(&op->op->base, NULL);
  if (op->latest)
    protobuf_c_message_free_unpacked(&op->latest->base, NULL);
  ms_operation_release(&op->undo);
  for (size_t i = 0; i < op->ntasks; i++)
    free(op->tasks[i]);
  free(op->tasks);
  free(op->started);
  free(op);
}

/* ---- the registry ---- */

static Meseta__V1__Write *write_new(const svc_operation *op, bool del) {
  char hex[33];
  uuid_hex(op->uuid, hex);
  Meseta__V1__Write *w = ms_pb_new(&meseta__v1__write__descriptor);
  w->expect = ms_pb_new(&meseta__v1__expect__descriptor);
  w->expect->expect_case = MESETA__V1__EXPECT__EXPECT_ANY;
  w->expect->any = true;
  if (del) {
    w->op_case = MESETA__V1__WRITE__OP_DELETE;
    w->delete_ = ms_pb_new(&meseta__v1__record_ref__descriptor);
    w->delete_->kind = MESETA__V1__RECORD_KIND__OPERATION;
    w->delete_->id = ms_xstrdup(hex);
    return w;
  }
  Meseta__V1__Record *rec = ms_pb_new(&meseta__v1__record__descriptor);
  rec->id = ms_xstrdup(hex);
  rec->body_case = MESETA__V1__RECORD__BODY_OPERATION;
  Meseta__V1__OperationRecord *r = ms_pb_new(&meseta__v1__operation_record__descriptor);
  r->id = ms_pb_new(&meseta__v1__operation_id__descriptor);
  r->id->value = ms_xstrdup(op->op_id);
  r->framework_id = ms_pb_new(&meseta__v1__framework_id__descriptor);
  r->framework_id->value = ms_xstrdup(op->framework_id);
  r->agent_id = ms_pb_new(&meseta__v1__agent_id__descriptor);
  r->agent_id->value = ms_xstrdup(op->agent_id);
  r->operation = op->op ? (Meseta__V1__Operation *)ms_pb_dup(&op->op->base)
                        : ms_pb_new(&meseta__v1__operation__descriptor); /* a launch */
  r->state = op->state;
  r->message = ms_xstrdup(op->latest && op->latest->message ? op->latest->message : "");
  rec->operation = r;
  w->op_case = MESETA__V1__WRITE__OP_PUT;
  w->put = rec;
  return w;
}

static Meseta__V1__BatchRequest *batch_new(void) {
  return ms_pb_new(&meseta__v1__batch_request__descriptor);
}

static void batch_add(Meseta__V1__BatchRequest *b, Meseta__V1__Write *w) {
  b->writes = ms_xrealloc(b->writes, (b->n_writes + 1) * sizeof(*b->writes));
  b->writes[b->n_writes++] = w;
}

static void logged(alloc_service *s, void *ctx, const ms_error *err, bool current) {
  (void)s;
  (void)ctx;
  (void)err;
  (void)current; /* job_result logged a failure */
}

/* Fire and forget: the record follows the operation (a later write wins). */
static void persist(alloc_service *s, const svc_operation *op, bool del) {
  if (!svc_durable(s) || s->closing)
    return;
  Meseta__V1__BatchRequest *b = batch_new();
  batch_add(b, write_new(op, del));
  svc_reg_batch(s, b, logged, NULL);
}

/* ---- to the framework and the agent ---- */

static void send_status(alloc_service *s, const svc_operation *op, const Meseta__V1__OperationStatus *st) {
  svc_framework *fw = svc_table_get(&s->frameworks, op->framework_id);
  Meseta__V1__Event__UpdateOperationStatus u = MESETA__V1__EVENT__UPDATE_OPERATION_STATUS__INIT;
  u.status = (Meseta__V1__OperationStatus *)st;
  Meseta__V1__Event ev = MESETA__V1__EVENT__INIT;
  ev.event_case = MESETA__V1__EVENT__EVENT_UPDATE_OPERATION_STATUS;
  ev.update_operation_status = &u;
  svc_send_event(s, fw, &ev);
}

static void ack_agent(alloc_service *s, svc_agent *a, const uint8_t *op_uuid,
                      ProtobufCBinaryData status_uuid) {
  Meseta__V1__AllocatorMessage__AcknowledgeOperationStatus k =
      MESETA__V1__ALLOCATOR_MESSAGE__ACKNOWLEDGE_OPERATION_STATUS__INIT;
  k.operation_uuid.data = (uint8_t *)op_uuid;
  k.operation_uuid.len = 16;
  k.status_uuid = status_uuid;
  Meseta__V1__AllocatorMessage m = MESETA__V1__ALLOCATOR_MESSAGE__INIT;
  m.message_case = MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_ACKNOWLEDGE_OPERATION_STATUS;
  m.acknowledge_operation_status = &k;
  svc_send_agent(s, a, &m);
}

/* Replaces op's latest status with one of the allocator's own (a fresh uuid, to be
 * acknowledged by the framework). */
static void own_status(svc_operation *op, Meseta__V1__OperationState state, const char *message) {
  Meseta__V1__OperationStatus *st = ms_pb_new(&meseta__v1__operation_status__descriptor);
  st->operation_id = ms_pb_new(&meseta__v1__operation_id__descriptor);
  st->operation_id->value = ms_xstrdup(op->op_id);
  st->agent_id = ms_pb_new(&meseta__v1__agent_id__descriptor);
  st->agent_id->value = ms_xstrdup(op->agent_id);
  st->state = state;
  st->message = ms_xstrdup(message);
  st->uuid.data = ms_xmalloc(16);
  st->uuid.len = 16;
  svc_uuid_bytes(st->uuid.data);
  if (op->latest)
    protobuf_c_message_free_unpacked(&op->latest->base, NULL);
  op->latest = st;
  op->state = state;
}

/* The allocator decided op's state: recorded, watched, told to the framework. */
static void settle(alloc_service *s, svc_operation *op, Meseta__V1__OperationState state,
                   const char *message) {
  own_status(op, state, message);
  ms_log_info(op->framework_id, "operation `%s` on agent `%s`: %s%s%s", op->op_id, op->agent_id,
              protobuf_c_enum_descriptor_get_value(&meseta__v1__operation_state__descriptor, state)->name,
              *message ? ": " : "", message);
  persist(s, op, false);
  svc_state_emit_operation(s, op, SVC_UPDATED);
  send_status(s, op, op->latest);
}

/* ---- the model ---- */

static ms_resources *unallocated(const ms_resources *r) {
  if (!r)
    return NULL;
  ms_resources *c = ms_resources_clone(r);
  ms_resources_allocate(c, NULL, NULL);
  return c;
}

/* The inverse of mop on unallocated resources; type MS_OP_UNKNOWN when there is none. */
static void inverse(const ms_operation *mop, ms_operation *inv) {
  *inv = (ms_operation){0};
  switch (mop->type) {
  case MS_OP_RESERVE:
    if (mop->source) {
      inv->type = MS_OP_RESERVE;
      inv->resources = unallocated(mop->source);
      inv->source = unallocated(mop->resources);
    } else {
      inv->type = MS_OP_UNRESERVE;
      inv->resources = unallocated(mop->resources);
    }
    break;
  case MS_OP_UNRESERVE:
    inv->type = MS_OP_RESERVE;
    inv->resources = unallocated(mop->resources);
    break;
  case MS_OP_CREATE:
    inv->type = MS_OP_DESTROY;
    inv->resources = unallocated(mop->resources);
    break;
  case MS_OP_DESTROY:
    inv->type = MS_OP_CREATE;
    inv->resources = unallocated(mop->resources);
    break;
  default:
    break;
  }
}

/* The agent did not apply it: the model gives back what it was before. */
static void undo(alloc_service *s, svc_operation *op) {
  if (op->undone || op->launch) /* a launch's tasks give their resources back themselves */
    return;
  op->undone = true;
  if (op->undo.type == MS_OP_UNKNOWN) {
    ms_log_warn(op->agent_id, "operation `%s` failed; %s is not undone in the model", op->op_id,
                op->op ? "this kind of operation" : "it");
    return;
  }
  if (!svc_table_get(&s->agents, op->agent_id))
    return; /* the agent is gone: its resources with it */
  ms_error *err = NULL;
  int rc = alloc_model_apply_operator(s->model, op->agent_id, &op->undo, &err);
  if (rc < 0 && err->code == MS_FAILED_PRECONDITION) {
    /* Perhaps offered: take the offers back and try again. */
    ms_error_free(err);
    err = NULL;
    svc_rescind_agent_offers(s, op->agent_id);
    rc = alloc_model_apply_operator(s->model, op->agent_id, &op->undo, &err);
  }
  if (rc < 0) {
    /* E.g. a task launched on what the operation made: its end will give it back. */
    ms_log_warn(op->agent_id, "failed operation `%s` could not be undone: %s", op->op_id, err->msg);
    ms_error_free(err);
    return;
  }
  ms_log_info(op->agent_id, "failed operation `%s` undone (%s)", op->op_id,
              ms_operation_type_name(op->undo.type));
  svc_state_emit_agent(s, op->agent_id, SVC_UPDATED);
  svc_check_trigger(s);
}

/* ---- tracking ---- */

int svc_ops_check_ids(alloc_service *s, const char *framework_id, const Meseta__V1__AcceptRequest *r,
                      ms_error **err) {
  for (size_t k = 0; k < r->n_operations; k++) {
    const Meseta__V1__Offer__Operation *o = r->operations[k];
    const char *id = info_id(o);
    if (!id)
      continue;
    if (op_get(s, framework_id, id))
      return ms_error_set(
          err, MS_INVALID_ARGUMENT,
          "`accept.operations[%zu].id`: operation `%s` is already in use (not acknowledged yet)", k, id);
    for (size_t j = 0; j < k; j++) {
      const char *other = info_id(r->operations[j]);
      if (other && strcmp(other, id) == 0)
        return ms_error_set(err, MS_INVALID_ARGUMENT,
                            "`accept.operations[%zu].id`: operation `%s` is also `accept.operations[%zu].id`",
                            k, id, j);
    }
  }
  return 0;
}

svc_operation *svc_op_track(alloc_service *s, const char *framework_id, const char *agent_id,
                            const Meseta__V1__Offer__Operation *info, const Meseta__V1__Operation *op,
                            const ms_operation *mop, const uint8_t uuid[16]) {
  svc_operation *t = ms_xcalloc(1, sizeof(*t));
  t->framework_id = ms_xstrdup(framework_id);
  t->agent_id = ms_xstrdup(agent_id);
  t->op_id = ms_xstrdup(info_id(info));
  t->e.key = svc_key2(framework_id, t->op_id);
  memcpy(t->uuid, uuid, 16);
  t->info = (Meseta__V1__Offer__Operation *)ms_pb_dup(&info->base);
  t->op = (Meseta__V1__Operation *)ms_pb_dup(&op->base);
  t->state = MESETA__V1__OPERATION_STATE__OPERATION_PENDING;
  inverse(mop, &t->undo);
  svc_table_put(&s->operations, &t->e);
  ms_log_debug(framework_id, "operation `%s` (%s) pending on agent `%s`", t->op_id,
               ms_operation_type_name(mop->type), agent_id);
  svc_state_emit_operation(s, t, SVC_ADDED);
  return t;
}

static void op_drop(alloc_service *s, svc_operation *op, bool delete_record) {
  if (delete_record)
    persist(s, op, true);
  if (!s->closing)
    svc_state_emit_operation(s, op, SVC_REMOVED);
  svc_table_del(&s->operations, &op->e);
  op_free(op);
}

/* ---- launches ---- */

svc_operation *svc_op_track_launch(alloc_service *s, const char *framework_id, const char *agent_id,
                                   const Meseta__V1__Offer__Operation *info) {
  svc_operation *t = ms_xcalloc(1, sizeof(*t));
  t->framework_id = ms_xstrdup(framework_id);
  t->agent_id = ms_xstrdup(agent_id);
  t->op_id = ms_xstrdup(info_id(info));
  t->e.key = svc_key2(framework_id, t->op_id);
  svc_uuid_bytes(t->uuid);
  t->info = (Meseta__V1__Offer__Operation *)ms_pb_dup(&info->base);
  t->state = MESETA__V1__OPERATION_STATE__OPERATION_PENDING;
  t->launch = true;
  Meseta__V1__TaskInfo **v = NULL;
  if (info->operation_case == MESETA__V1__OFFER__OPERATION__OPERATION_LAUNCH) {
    v = info->launch->task_infos;
    t->ntasks = info->launch->n_task_infos;
  } else if (info->launch_group->task_group) {
    v = info->launch_group->task_group->tasks;
    t->ntasks = info->launch_group->task_group->n_tasks;
  }
  t->tasks = ms_xcalloc(t->ntasks + 1, sizeof(*t->tasks));
  t->started = ms_xcalloc(t->ntasks + 1, sizeof(*t->started));
  for (size_t i = 0; i < t->ntasks; i++)
    t->tasks[i] = ms_xstrdup(v[i]->task_id->value);
  t->nwaiting = t->ntasks;
  svc_table_put(&s->operations, &t->e);
  ms_log_debug(framework_id, "operation `%s` (launch of %zu task(s)) pending on agent `%s`", t->op_id,
               t->ntasks, agent_id);
  svc_state_emit_operation(s, t, SVC_ADDED);
  if (t->ntasks == 0)
    settle(s, t, MESETA__V1__OPERATION_STATE__OPERATION_FINISHED, "nothing to launch");
  return t;
}

/* The unsettled launch of the framework that holds task tid (its index in *ret_i); with
 * agent_id, one on that agent still waiting for the task (a task id may be reused while
 * an older launch of it is UNREACHABLE). Linear: launches wait for their first statuses
 * only for a moment. */
static svc_operation *launch_of(alloc_service *s, const char *framework_id, const char *tid,
                                const char *agent_id, size_t *ret_i) {
  for (uint32_t i = 0; i < s->operations.n; i++) {
    svc_operation *op = (svc_operation *)s->operations.v[i];
    if (!op->launch || state_terminal(op->state) || strcmp(op->framework_id, framework_id) != 0 ||
        (agent_id && strcmp(op->agent_id, agent_id) != 0))
      continue;
    for (size_t j = 0; j < op->ntasks; j++)
      if (strcmp(op->tasks[j], tid) == 0 && !(agent_id && op->started[j])) {
        *ret_i = j;
        return op;
      }
  }
  return NULL;
}

typedef enum launch_verdict { LAUNCH_UNSURE, LAUNCH_DONE, LAUNCH_NOT_DONE } launch_verdict;

/* Reasons for a TASK_FAILED before the task's command ran. */
static bool launch_reason(Meseta__V1__TaskStatus__Reason r) {
  switch (r) {
  case MESETA__V1__TASK_STATUS__REASON__REASON_CONTAINER_LAUNCH_FAILED:
  case MESETA__V1__TASK_STATUS__REASON__REASON_TASK_INVALID:
  case MESETA__V1__TASK_STATUS__REASON__REASON_TASK_GROUP_INVALID:
  case MESETA__V1__TASK_STATUS__REASON__REASON_TASK_UNAUTHORIZED:
  case MESETA__V1__TASK_STATUS__REASON__REASON_TASK_GROUP_UNAUTHORIZED:
  case MESETA__V1__TASK_STATUS__REASON__REASON_AGENT_RESTARTED:
  case MESETA__V1__TASK_STATUS__REASON__REASON_AGENT_REMOVED:
  case MESETA__V1__TASK_STATUS__REASON__REASON_EXECUTOR_REGISTRATION_TIMEOUT:
  case MESETA__V1__TASK_STATUS__REASON__REASON_INVALID_FRAMEWORKID:
  case MESETA__V1__TASK_STATUS__REASON__REASON_INVALID_OFFERS:
  case MESETA__V1__TASK_STATUS__REASON__REASON_RESOURCES_UNKNOWN:
  case MESETA__V1__TASK_STATUS__REASON__REASON_TASK_KILLED_DURING_LAUNCH:
    return true;
  default:
    return false;
  }
}

/* What a task's first informative status says of its launch. STARTING, RUNNING and
 * what can only follow them (KILLING, FINISHED, KILLED, FAILED of the command itself,
 * e.g. REASON_COMMAND_EXECUTOR_FAILED) mean it was launched; ERROR, DROPPED, LOST,
 * GONE, a FAILED with a launch reason or a kill during the launch mean it was not;
 * STAGING and UNREACHABLE say nothing yet. */
static launch_verdict launch_verdict_of(const Meseta__V1__TaskStatus *st) {
  switch (st->state) {
  case MESETA__V1__TASK_STATE__TASK_STARTING:
  case MESETA__V1__TASK_STATE__TASK_RUNNING:
  case MESETA__V1__TASK_STATE__TASK_KILLING:
  case MESETA__V1__TASK_STATE__TASK_FINISHED:
    return LAUNCH_DONE;
  case MESETA__V1__TASK_STATE__TASK_KILLED:
  case MESETA__V1__TASK_STATE__TASK_FAILED:
    return launch_reason(st->reason) ? LAUNCH_NOT_DONE : LAUNCH_DONE;
  case MESETA__V1__TASK_STATE__TASK_ERROR:
  case MESETA__V1__TASK_STATE__TASK_DROPPED:
  case MESETA__V1__TASK_STATE__TASK_LOST:
  case MESETA__V1__TASK_STATE__TASK_GONE:
  case MESETA__V1__TASK_STATE__TASK_GONE_BY_OPERATOR:
    return LAUNCH_NOT_DONE;
  default:
    return LAUNCH_UNSURE;
  }
}

void svc_ops_task_status(alloc_service *s, const char *agent_id, const char *framework_id,
                         const Meseta__V1__TaskStatus *st) {
  if (!st->task_id || !st->task_id->value)
    return;
  size_t i = 0;
  svc_operation *op = launch_of(s, framework_id, st->task_id->value, agent_id, &i);
  if (!op)
    return;
  switch (launch_verdict_of(st)) {
  case LAUNCH_UNSURE:
    return;
  case LAUNCH_DONE:
    op->started[i] = true;
    if (--op->nwaiting == 0)
      settle(s, op, MESETA__V1__OPERATION_STATE__OPERATION_FINISHED, "launched");
    return;
  case LAUNCH_NOT_DONE: {
    const char *state = ms_task_state_name(st->state);
    _cleanup_free_ char *msg =
        ms_xasprintf("task `%s` was not launched: %s%s%s", op->tasks[i], state,
                     st->message && *st->message ? ": " : "", st->message ? st->message : "");
    settle(s, op, MESETA__V1__OPERATION_STATE__OPERATION_FAILED, msg);
    return;
  }
  }
}

/* ---- agents removed ---- */

void svc_ops_agent_removed(alloc_service *s, const char *agent_id, bool gone, const char *why) {
  if (s->closing)
    return;
  Meseta__V1__OperationState to = gone ? MESETA__V1__OPERATION_STATE__OPERATION_GONE_BY_OPERATOR
                                       : MESETA__V1__OPERATION_STATE__OPERATION_UNREACHABLE;
  for (uint32_t i = 0; i < s->operations.n; i++) {
    svc_operation *op = (svc_operation *)s->operations.v[i];
    if (strcmp(op->agent_id, agent_id) != 0 || state_terminal(op->state) || op->state == to)
      continue;
    /* UNREACHABLE is not terminal: an agent that comes back (through the registry) may
     * still report the operation, or the launch's tasks. */
    _cleanup_free_ char *msg = ms_xasprintf("agent `%s` was removed: %s", agent_id, why ? why : "");
    settle(s, op, to, msg);
  }
}

void svc_op_status(alloc_service *s, svc_agent *a, const Meseta__V1__AgentMessage__OperationStatusUpdate *u) {
  const Meseta__V1__OperationStatus *st = u->status;
  if (!st)
    return;
  svc_operation *op = op_by_uuid(s, u->operation_uuid.data, u->operation_uuid.len);
  if (!op || op->launch || strcmp(op->agent_id, a->e.key) != 0) {
    /* An operator's operation, or one already acknowledged (a resend): nobody waits. */
    if (u->operation_uuid.len == 16 && st->uuid.len)
      ack_agent(s, a, u->operation_uuid.data, st->uuid);
    return;
  }
  if (op->latest && op->latest->uuid.len == st->uuid.len &&
      memcmp(op->latest->uuid.data, st->uuid.data, st->uuid.len) == 0)
    return; /* a resend: the framework has it, or gets it when it re-subscribes */
  Meseta__V1__OperationStatus *copy = (Meseta__V1__OperationStatus *)ms_pb_dup(&st->base);
  if (!copy->operation_id) {
    copy->operation_id = ms_pb_new(&meseta__v1__operation_id__descriptor);
    copy->operation_id->value = ms_xstrdup(op->op_id);
  }
  if (!copy->agent_id) {
    copy->agent_id = ms_pb_new(&meseta__v1__agent_id__descriptor);
    copy->agent_id->value = ms_xstrdup(op->agent_id);
  }
  if (op->latest)
    protobuf_c_message_free_unpacked(&op->latest->base, NULL);
  op->latest = copy;
  op->state = copy->state;
  ms_log_info(op->framework_id, "operation `%s` on agent `%s`: state %d%s%s", op->op_id, op->agent_id,
              (int)op->state, copy->message && *copy->message ? ": " : "",
              copy->message ? copy->message : "");
  if (state_failed(op->state))
    undo(s, op);
  persist(s, op, false);
  svc_state_emit_operation(s, op, SVC_UPDATED);
  send_status(s, op, op->latest);
}

void svc_ops_resend(alloc_service *s, svc_framework *fw) {
  for (uint32_t i = 0; i < s->operations.n; i++) {
    svc_operation *op = (svc_operation *)s->operations.v[i];
    if (op->latest && op->latest->uuid.len && strcmp(op->framework_id, fw->e.key) == 0)
      send_status(s, op, op->latest);
  }
}

void svc_ops_forget_framework(alloc_service *s, const char *framework_id) {
  for (uint32_t i = 0; i < s->operations.n;) {
    svc_operation *op = (svc_operation *)s->operations.v[i];
    if (strcmp(op->framework_id, framework_id) == 0)
      op_drop(s, op, true); /* the table's last entry moves to i */
    else
      i++;
  }
}

int svc_op_acknowledge(alloc_service *s, const Meseta__V1__AcknowledgeOperationStatusRequest *r,
                       ms_error **err) {
  svc_framework *fw =
      svc_framework_check(s, "acknowledge_operation_status", r->framework_id, r->stream_id, err);
  if (!fw)
    return MS_ERR;
  if (!r->operation_id || !r->operation_id->value || !*r->operation_id->value)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`acknowledge_operation_status.operation_id` is missing");
  if (r->uuid.len != 16)
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "`acknowledge_operation_status.uuid` must be 16 bytes, not %zu", r->uuid.len);
  const char *id = r->operation_id->value;
  svc_operation *op = op_get(s, fw->e.key, id);
  if (!op)
    return ms_error_set(err, MS_NOT_FOUND,
                        "`acknowledge_operation_status.operation_id`: operation `%s` is not known", id);
  if (!op->latest || op->latest->uuid.len != 16 || memcmp(op->latest->uuid.data, r->uuid.data, 16) != 0)
    return ms_error_set(err, MS_NOT_FOUND,
                        "`acknowledge_operation_status.uuid`: operation `%s` has no status with this uuid",
                        id);
  if (!op->launch) /* the agent knows nothing of a launch's operation */
    ack_agent(s, svc_table_get(&s->agents, op->agent_id), op->uuid, r->uuid);
  ms_log_debug(fw->e.key, "operation `%s`: status acknowledged", id);
  if (state_terminal(op->state)) {
    op_drop(s, op, true);
  } else {
    /* Acknowledged, nothing new to wait for: no resend on re-subscription. */
    protobuf_c_message_free_unpacked(&op->latest->base, NULL);
    op->latest = NULL;
  }
  return 0;
}

static void reconcile_one(alloc_service *s, svc_framework *fw, const svc_operation *op, const char *id,
                          const char *agent_id) {
  Meseta__V1__OperationID oid = MESETA__V1__OPERATION_ID__INIT;
  oid.value = (char *)id;
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = (char *)agent_id;
  Meseta__V1__OperationStatus st = MESETA__V1__OPERATION_STATUS__INIT;
  st.operation_id = &oid;
  st.agent_id = agent_id ? &aid : NULL;
  st.state = op ? op->state : MESETA__V1__OPERATION_STATE__OPERATION_STATE_UNKNOWN;
  st.message = (char *)(op ? (op->latest && op->latest->message ? op->latest->message : "")
                           : "the operation is not known");
  if (op && op->latest) {
    st.n_converted_resources = op->latest->n_converted_resources;
    st.converted_resources = op->latest->converted_resources;
    st.resource_provider_id = op->latest->resource_provider_id;
  }
  /* No uuid: reconciliation answers are not acknowledged. */
  Meseta__V1__Event__UpdateOperationStatus u = MESETA__V1__EVENT__UPDATE_OPERATION_STATUS__INIT;
  u.status = &st;
  Meseta__V1__Event ev = MESETA__V1__EVENT__INIT;
  ev.event_case = MESETA__V1__EVENT__EVENT_UPDATE_OPERATION_STATUS;
  ev.update_operation_status = &u;
  svc_send_event(s, fw, &ev);
}

int svc_op_reconcile(alloc_service *s, const Meseta__V1__ReconcileOperationsRequest *r, ms_error **err) {
  svc_framework *fw = svc_framework_check(s, "reconcile_operations", r->framework_id, r->stream_id, err);
  if (!fw)
    return MS_ERR;
  if (r->n_operations == 0) {
    for (uint32_t i = 0; i < s->operations.n; i++) {
      const svc_operation *op = (const svc_operation *)s->operations.v[i];
      if (strcmp(op->framework_id, fw->e.key) == 0)
        reconcile_one(s, fw, op, op->op_id, op->agent_id);
    }
    return 0;
  }
  for (size_t i = 0; i < r->n_operations; i++) {
    const Meseta__V1__ReconcileOperationsRequest__Operation *q = r->operations[i];
    if (!q->operation_id || !q->operation_id->value || !*q->operation_id->value)
      return ms_error_set(err, MS_INVALID_ARGUMENT,
                          "`reconcile_operations.operations[%zu].operation_id` is missing", i);
  }
  for (size_t i = 0; i < r->n_operations; i++) {
    const Meseta__V1__ReconcileOperationsRequest__Operation *q = r->operations[i];
    const svc_operation *op = op_get(s, fw->e.key, q->operation_id->value);
    const char *aid = q->agent_id && q->agent_id->value && *q->agent_id->value ? q->agent_id->value : NULL;
    reconcile_one(s, fw, op, q->operation_id->value, op ? op->agent_id : aid);
  }
  return 0;
}

void svc_ops_free_all(alloc_service *s) {
  for (uint32_t i = 0; i < s->operations.n; i++)
    op_free((svc_operation *)s->operations.v[i]);
  svc_table_release(&s->operations);
}

/* ---- the outbox: APPLY_OPERATION after the records are durable ---- */

void svc_outbox_add(svc_outbox *o, const Meseta__V1__AllocatorMessage *m) {
  o->v = ms_xrealloc(o->v, (o->n + 1) * sizeof(*o->v));
  o->v[o->n++] = (Meseta__V1__AllocatorMessage *)ms_pb_dup(&m->base);
}

typedef struct outbox_wait {
  char *agent_id;
  svc_outbox box;
} outbox_wait;

/* The tracked operation a message carries: an APPLY_OPERATION's, or the launch a
 * RUN_TASK / RUN_TASK_GROUP belongs to. */
static svc_operation *msg_op(alloc_service *s, const Meseta__V1__AllocatorMessage *m) {
  const Meseta__V1__FrameworkInfo *fi = NULL;
  const Meseta__V1__TaskInfo *t = NULL;
  switch (m->message_case) {
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_APPLY_OPERATION:
    return op_by_uuid(s, m->apply_operation->operation_uuid.data, m->apply_operation->operation_uuid.len);
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_RUN_TASK:
    fi = m->run_task->framework_info;
    t = m->run_task->task;
    break;
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_RUN_TASK_GROUP:
    fi = m->run_task_group->framework_info;
    if (m->run_task_group->task_group && m->run_task_group->task_group->n_tasks)
      t = m->run_task_group->task_group->tasks[0];
    break;
  default:
    return NULL;
  }
  if (!fi || !fi->id || !t || !t->task_id)
    return NULL;
  size_t i;
  return launch_of(s, fi->id->value, t->task_id->value, NULL, &i);
}

/* A launch's record could not be written: its tasks in m never leave; the framework
 * hears TASK_LOST (as for a task lost with its agent) and their resources come back. */
static void lose_tasks(alloc_service *s, const Meseta__V1__AllocatorMessage *m, const char *why) {
  const char *fid = NULL;
  Meseta__V1__TaskInfo **v = NULL;
  size_t n = 0;
  if (m->message_case == MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_RUN_TASK) {
    fid = m->run_task->framework_info->id->value;
    v = &m->run_task->task;
    n = 1;
  } else {
    fid = m->run_task_group->framework_info->id->value;
    v = m->run_task_group->task_group->tasks;
    n = m->run_task_group->task_group->n_tasks;
  }
  for (size_t i = 0; i < n; i++) {
    svc_task *t = svc_task_get(s, fid, v[i]->task_id->value);
    if (!t)
      continue;
    Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
    aid.value = t->agent_id;
    Meseta__V1__TaskStatus st = MESETA__V1__TASK_STATUS__INIT;
    st.task_id = v[i]->task_id;
    st.agent_id = &aid;
    st.state = MESETA__V1__TASK_STATE__TASK_LOST;
    st.source = MESETA__V1__TASK_STATUS__SOURCE__SOURCE_MASTER;
    st.message = (char *)why;
    svc_send_update(s, svc_table_get(&s->frameworks, fid), &st);
    t->state = st.state;
    svc_state_emit_task(s, t, SVC_UPDATED);
    svc_task_end(s, t);
  }
}

static void box_release(svc_outbox *o) {
  for (size_t i = 0; i < o->n; i++)
    if (o->v[i])
      protobuf_c_message_free_unpacked(&o->v[i]->base, NULL);
  free(o->v);
  *o = (svc_outbox){0};
}

static void box_send(alloc_service *s, const char *agent_id, svc_outbox *o) {
  svc_agent *a = svc_table_get(&s->agents, agent_id);
  for (size_t i = 0; i < o->n; i++)
    if (o->v[i])
      svc_send_agent(s, a, o->v[i]);
  box_release(o);
}

/* The registry refused the records: those operations end in OPERATION_ERROR (undone,
 * the framework told; a launch's tasks are lost), the rest of the accept goes out. */
static void persisted(alloc_service *s, void *ctx, const ms_error *err, bool current) {
  outbox_wait *w = ctx;
  if (current && err) {
    _cleanup_free_ char *why = ms_xasprintf("the operation could not be recorded: %s", err->msg);
    /* Each message's operation first: erroring one ends its search for the others. */
    svc_operation **ops = ms_xcalloc(w->box.n + 1, sizeof(*ops));
    for (size_t i = 0; i < w->box.n; i++)
      ops[i] = msg_op(s, w->box.v[i]);
    for (size_t i = 0; i < w->box.n; i++) {
      svc_operation *op = ops[i];
      if (!op)
        continue;
      if (op->launch)
        lose_tasks(s, w->box.v[i], why);
      protobuf_c_message_free_unpacked(&w->box.v[i]->base, NULL);
      w->box.v[i] = NULL;
      if (state_terminal(op->state))
        continue; /* another of its messages did it */
      own_status(op, MESETA__V1__OPERATION_STATE__OPERATION_ERROR, why);
      undo(s, op);
      svc_state_emit_operation(s, op, SVC_UPDATED);
      send_status(s, op, op->latest);
    }
    free(ops);
  }
  if (current)
    box_send(s, w->agent_id, &w->box);
  box_release(&w->box);
  free(w->agent_id);
  free(w);
}

void svc_outbox_flush(alloc_service *s, const char *agent_id, svc_outbox *o) {
  Meseta__V1__BatchRequest *b = NULL;
  svc_operation **seen = ms_xcalloc(o->n + 1, sizeof(*seen));
  size_t nseen = 0;
  for (size_t i = 0; svc_durable(s) && i < o->n; i++) {
    svc_operation *op = msg_op(s, o->v[i]);
    bool dup = false;
    for (size_t j = 0; op && j < nseen; j++)
      dup |= seen[j] == op; /* a launch's several RUN_TASKs: one record */
    if (!op || dup)
      continue;
    seen[nseen++] = op;
    if (!b)
      b = batch_new();
    batch_add(b, write_new(op, false));
  }
  free(seen);
  if (!b) {
    box_send(s, agent_id, o);
    return;
  }
  outbox_wait *w = ms_xcalloc(1, sizeof(*w));
  w->agent_id = ms_xstrdup(agent_id);
  w->box = *o;
  *o = (svc_outbox){0};
  svc_reg_batch(s, b, persisted, w);
}
