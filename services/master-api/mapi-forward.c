/* Unary calls relayed to the allocator: Operator mutations as Allocator.OperatorCall,
 * (every Operator method whose request is a member of OperatorCallRequest's oneof:
 * nothing to add here for a new one),
 * Scheduler calls as Allocator.SchedulerCall. The request goes inside the internal
 * oneof as it came (after the checks below); the answer's payload, or its status and
 * message unchanged, go back. The blocking call runs on the forwarding pool. */
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/operator-check.h"
#include "meseta/pb.h"
#include "meseta/v1/operator.pb-c.h"
#include "meseta/v1/scheduler.pb-c.h"
#include "meseta/version.h"

#include "mapi-auth.h"
#include "mapi-internal.h"

int mapi_principal(mapi_service *s, ms_rpc_call *call, Meseta__V1__Principal **ret, ms_error **err) {
  Meseta__V1__Principal *p = NULL;
  if (mapi_auth_call(s->cfg.auth, call, &p, err) < 0) /* mapi-auth.c */
    return MS_ERR;
  free(p->via == protobuf_c_empty_string ? NULL : p->via);
  p->via = ms_xstrdup(s->cfg.name);
  *ret = p;
  return 0;
}

#define MEMBER(msg, off, type) (*(type *)((char *)(msg) + (off)))

typedef struct fwd_job {
  mapi_service *s;
  ms_rpc_call *call;
  ProtobufCMessage *wrapped; /* OperatorCallRequest or SchedulerCallRequest; owned */
  const char *path;          /* the Allocator method */
  const ProtobufCMessageDescriptor *resp_wrapper, *resp_payload;
  int64_t timeout_ms;
} fwd_job;

/* An accept or decline went through: the scheduler's relays here stop tracking those
 * offers (they need no RESCIND after a failover). */
static void offers_used(mapi_service *s, const ProtobufCMessage *wrapped) {
  if (wrapped->descriptor != &meseta__v1__scheduler_call_request__descriptor)
    return;
  const Meseta__V1__SchedulerCallRequest *c = (const Meseta__V1__SchedulerCallRequest *)wrapped;
  if (c->call_case == MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_ACCEPT && c->accept->framework_id)
    mapi_relays_offers_gone(s, c->accept->framework_id->value, c->accept->offer_ids, c->accept->n_offer_ids);
  else if (c->call_case == MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_DECLINE && c->decline->framework_id)
    mapi_relays_offers_gone(s, c->decline->framework_id->value, c->decline->offer_ids,
                            c->decline->n_offer_ids);
}

void mapi_hop_error(ms_error **err, const char *addr) {
  if (!err || !*err)
    return;
  _cleanup_free_ char *quoted = ms_xasprintf("`%s`", addr);
  switch ((*err)->code) {
  case MS_UNAVAILABLE:
  case MS_DEADLINE_EXCEEDED:
  case MS_CANCELLED:
  case MS_UNKNOWN:
  case MS_INTERNAL:
    if (strstr((*err)->msg, quoted)) /* the transport named it already */
      ms_error_prefix(err, "allocator");
    else
      ms_error_prefix(err, "allocator `%s`", addr);
    break;
  default: /* the allocator's verdict on the request: it names the field itself */
    break;
  }
}

static void fwd_run(void *arg) {
  fwd_job *j = arg;
  ms_error *err = NULL;
  ProtobufCMessage *resp = NULL;
  ms_rpc_call_options co = {.timeout_ms = j->timeout_ms};
  mapi_chan *ch = NULL;
  if (ms_rpc_call_is_done(j->call)) {
    /* The caller left (deadline, cancel) while queued: forward nothing. */
  } else if (!(ch = mapi_alloc_get(j->s, &err)) ||
             ms_rpc_unary(ch->ch, j->path, j->wrapped, j->resp_wrapper, &co, &resp, &err) < 0) {
    /* The allocator's verdict unchanged; a failed hop (UNAVAILABLE while no leader is
     * known or the leader is unreachable: a failover, the caller retries) says so. */
    if (ch)
      mapi_hop_error(&err, ch->addr);
    ms_rpc_call_finish_error(j->call, err);
  } else {
    offers_used(j->s, j->wrapped);
    const ProtobufCFieldDescriptor *f = ms_pb_oneof_member(j->resp_wrapper, j->resp_payload);
    ProtobufCMessage *payload = NULL;
    if (f && MEMBER(resp, f->quantifier_offset, uint32_t) == f->id)
      payload = MEMBER(resp, f->offset, ProtobufCMessage *);
    if (payload) {
      if (ms_rpc_call_reply(j->call, payload, &err) < 0)
        ms_log_debug(NULL, "%s: %s", ms_rpc_call_method(j->call), err->msg);
    } else {
      /* An answer without the payload: the payload's defaults (empty responses). */
      ProtobufCMessage *empty = ms_pb_new(j->resp_payload);
      if (ms_rpc_call_reply(j->call, empty, &err) < 0)
        ms_log_debug(NULL, "%s: %s", ms_rpc_call_method(j->call), err->msg);
      protobuf_c_message_free_unpacked(empty, NULL);
    }
  }
  mapi_alloc_put(ch);
  ms_error_free(err);
  if (resp)
    protobuf_c_message_free_unpacked(resp, NULL);
  protobuf_c_message_free_unpacked(j->wrapped, NULL);
  ms_rpc_call_unref(j->call);
  free(j);
}

/* Wraps req (copied) into a new `wrapper` message with the principal, and queues the
 * forward. */
static int forward(ms_rpc_call *call, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *wrapper,
                   const ProtobufCMessageDescriptor *resp_wrapper, const char *path, ms_error **err) {
  mapi_service *s = ms_rpc_call_userdata(call);
  const ProtobufCMessageDescriptor *in = req->descriptor;
  const ProtobufCFieldDescriptor *f = ms_pb_oneof_member(wrapper, in);
  /* The method's output type: the Response beside the Request. */
  const ProtobufCServiceDescriptor *svc = wrapper == &meseta__v1__operator_call_request__descriptor
                                              ? &meseta__v1__operator__descriptor
                                              : &meseta__v1__scheduler__descriptor;
  const ProtobufCMessageDescriptor *out = NULL;
  const char *method = strrchr(ms_rpc_call_method(call), '/');
  const ProtobufCMethodDescriptor *md =
      method ? protobuf_c_service_descriptor_get_method_by_name(svc, method + 1) : NULL;
  if (md)
    out = md->output;
  if (!f || !out)
    return ms_error_set(err, MS_UNIMPLEMENTED, "%s: not relayed to the allocator", ms_rpc_call_method(call));
  ProtobufCMessage *w = ms_pb_new(wrapper);
  /* Both wrappers have `Principal principal = 1`. */
  const ProtobufCFieldDescriptor *pf = protobuf_c_message_descriptor_get_field(wrapper, 1);
  Meseta__V1__Principal *who = NULL;
  if (mapi_principal(s, call, &who, err) < 0) {
    protobuf_c_message_free_unpacked(w, NULL);
    return MS_ERR;
  }
  MEMBER(w, pf->offset, Meseta__V1__Principal *) = who;
  MEMBER(w, f->quantifier_offset, uint32_t) = f->id;
  MEMBER(w, f->offset, ProtobufCMessage *) = ms_pb_dup(req);
  fwd_job *j = ms_xmalloc(sizeof(*j));
  int64_t left = ms_rpc_call_deadline_ms(call);
  *j = (fwd_job){.s = s,
                 .call = call,
                 .wrapped = w,
                 .path = path,
                 .resp_wrapper = resp_wrapper,
                 .resp_payload = out,
                 .timeout_ms = left < s->cfg.call_timeout_ms || s->cfg.call_timeout_ms <= 0
                                   ? left
                                   : s->cfg.call_timeout_ms};
  if (j->timeout_ms == INT64_MAX)
    j->timeout_ms = 0;
  if (j->timeout_ms < 0)
    j->timeout_ms = 1;
  ms_rpc_call_ref(call);
  if (ms_workq_push(s->fwd, fwd_run, j, err) < 0) {
    ms_rpc_call_unref(call);
    protobuf_c_message_free_unpacked(w, NULL);
    free(j);
    return ms_error_prefix(err, "master-api busy");
  }
  return 0;
}

/* ---- checks before forwarding (what needs no state) ---- */

static int need_id(const char *field, const void *idmsg, ms_error **err) {
  const Meseta__V1__AgentID *id = idmsg; /* every id message is { string value = 1; } */
  if (!id || !id->value || !*id->value)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: required", field);
  return 0;
}

static int operator_write(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err) {
  if (mapi_check_request(req, err) < 0 || ms_operator_check(req, err) < 0)
    return MS_ERR;
  return forward(call, req, &meseta__v1__operator_call_request__descriptor,
                 &meseta__v1__operator_call_response__descriptor, "/meseta.v1.Allocator/OperatorCall", err);
}

/* ---- per-process calls ---- */

static int get_version(ms_rpc_call *call, ms_error **err) {
  Meseta__V1__VersionInfo v = MESETA__V1__VERSION_INFO__INIT;
  v.version = (char *)ms_version();
  Meseta__V1__GetVersionResponse resp = MESETA__V1__GET_VERSION_RESPONSE__INIT;
  resp.version_info = &v;
  return ms_rpc_call_reply(call, &resp.base, err);
}

/* What this replica answers about itself, by request type. */
static const struct {
  const ProtobufCMessageDescriptor *req;
  int (*serve)(ms_rpc_call *call, ms_error **err);
} own[] = {
    {&meseta__v1__get_version_request__descriptor, get_version},
};

/* `component` (field 1) ALLOCATOR goes to the allocator; MASTER_API (or unset) is
 * this replica's own answer. */
static int per_process(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err) {
  if (mapi_check_request(req, err) < 0)
    return MS_ERR;
  const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(req->descriptor, 1);
  int component = f ? MEMBER(req, f->offset, int) : 0;
  if (component == MESETA__V1__COMPONENT__COMPONENT_ALLOCATOR)
    return operator_write(call, req, err);
  for (size_t i = 0; i < MS_ARRAY_SIZE(own); i++)
    if (own[i].req == req->descriptor)
      return own[i].serve(call, err);
  return ms_error_set(err, MS_UNIMPLEMENTED, "%s for COMPONENT_MASTER_API: not implemented yet",
                      ms_rpc_call_method(call));
}

/* Per-process requests start with `Component component = 1`. */
static bool is_per_process(const ProtobufCMessageDescriptor *d) {
  const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, 1);
  return f && f->type == PROTOBUF_C_TYPE_ENUM && f->descriptor == &meseta__v1__component__descriptor;
}

size_t mapi_operator_writes(ms_rpc_method *out) {
  size_t n = 0;
  const ProtobufCServiceDescriptor *op = &meseta__v1__operator__descriptor;
  for (unsigned i = 0; i < op->n_methods; i++) {
    const ProtobufCMethodDescriptor *md = &op->methods[i];
    if (!ms_operator_call_member(md->input))
      continue;
    if (out)
      out[n] = (ms_rpc_method){.name = md->name,
                               .on_start = is_per_process(md->input) ? per_process : operator_write};
    n++;
  }
  return n;
}

/* Every Scheduler request starts with FrameworkID framework_id = 1, string stream_id = 2. */
static int scheduler_call(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err) {
  const ProtobufCFieldDescriptor *fid = protobuf_c_message_descriptor_get_field(req->descriptor, 1);
  const ProtobufCFieldDescriptor *sid = protobuf_c_message_descriptor_get_field(req->descriptor, 2);
  if (mapi_check_request(req, err) < 0)
    return MS_ERR;
  if (fid && need_id("framework_id", MEMBER(req, fid->offset, const void *), err) < 0)
    return MS_ERR;
  if (sid && sid->type == PROTOBUF_C_TYPE_STRING) {
    const char *v = MEMBER(req, sid->offset, const char *);
    if (!v || !*v)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "stream_id: required (from the SUBSCRIBED event)");
  }
  return forward(call, req, &meseta__v1__scheduler_call_request__descriptor,
                 &meseta__v1__scheduler_call_response__descriptor, "/meseta.v1.Allocator/SchedulerCall", err);
}

const ms_rpc_method mapi_scheduler_calls[] = {
    {.name = "Teardown", .on_start = scheduler_call},
    {.name = "Accept", .on_start = scheduler_call},
    {.name = "Decline", .on_start = scheduler_call},
    {.name = "Revive", .on_start = scheduler_call},
    {.name = "Suppress", .on_start = scheduler_call},
    {.name = "Kill", .on_start = scheduler_call},
    {.name = "Shutdown", .on_start = scheduler_call},
    {.name = "Acknowledge", .on_start = scheduler_call},
    {.name = "AcknowledgeOperationStatus", .on_start = scheduler_call},
    {.name = "Reconcile", .on_start = scheduler_call},
    {.name = "ReconcileOperations", .on_start = scheduler_call},
    {.name = "Message", .on_start = scheduler_call},
    {.name = "UpdateFramework", .on_start = scheduler_call},
};
const size_t mapi_n_scheduler_calls = MS_ARRAY_SIZE(mapi_scheduler_calls);
