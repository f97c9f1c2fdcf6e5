/* The rpc layer: the allocator's gRPC method tables and their server-thread shims.
 * A shim runs on the server's thread and never touches the service's state: it copies
 * the request, references the call and posts the owner-thread function of the feature
 * that serves it (svc_post). */
#include "allocator-rpc.h"

#include "meseta/alloc.h"
#include "meseta/pb.h"
#include "meseta/rpc.h"
#include "meseta/v1/agent_link.pb-c.h"
#include "meseta/v1/allocator.pb-c.h"

#include "alloc-svc-agents.h"
#include "alloc-svc-core.h"
#include "alloc-svc-frameworks.h"
#include "alloc-svc-operator.h"
#include "alloc-svc-state.h"

/* ---- AgentLink: agents' streams ---- */

static int on_link_start(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err) {
  (void)req;
  alloc_service *s = ms_rpc_call_userdata(call);
  svc_link *l = ms_xcalloc(1, sizeof(*l));
  ms_rpc_call_set_data(call, l);
  if (svc_try_post(s, svc_agent_link_opened, call, l, NULL, err) < 0) {
    ms_rpc_call_set_data(call, NULL); /* never posted: on_link_done has nothing to close */
    free(l);
    return MS_ERR;
  }
  return 0;
}

static int on_link_message(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  (void)err;
  svc_post_held(ms_rpc_call_userdata(call), svc_agent_link_msg, call, ms_rpc_call_data(call), ms_pb_dup(msg));
  return 0;
}

static int on_link_half_close(ms_rpc_call *call, ms_error **err) {
  (void)err;
  ms_rpc_call_finish(call, MS_OK, NULL); /* the agent said goodbye: the link ends */
  return 0;
}

static void on_link_done(ms_rpc_call *call, bool cancelled) {
  (void)cancelled;
  if (ms_rpc_call_data(call))
    svc_post(ms_rpc_call_userdata(call), svc_agent_link_closed, call, ms_rpc_call_data(call), NULL);
}

static int add_agent_link(alloc_service *s, ms_rpc_server *srv, ms_error **err) {
  static const ms_rpc_method methods[] = {
      {.name = "Connect",
       .on_start = on_link_start,
       .on_message = on_link_message,
       .on_half_close = on_link_half_close,
       .on_done = on_link_done},
  };
  return ms_rpc_server_add_service(srv, &meseta__v1__agent_link__descriptor, methods, MS_ARRAY_SIZE(methods),
                                   s, err);
}

/* ---- Allocator: frameworks (relayed by master-api), operators, WatchState ---- */

static int on_subscribe(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err) {
  return svc_try_post(ms_rpc_call_userdata(call), svc_framework_subscribe, call, NULL, ms_pb_dup(req), err);
}

static void on_subscribe_done(ms_rpc_call *call, bool cancelled) {
  (void)cancelled;
  svc_post(ms_rpc_call_userdata(call), svc_framework_stream_closed, call, NULL, NULL);
}

static int on_scheduler_call(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err) {
  return svc_try_post(ms_rpc_call_userdata(call), svc_scheduler_call, call, NULL, ms_pb_dup(req), err);
}

static int on_operator_call(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err) {
  return svc_try_post(ms_rpc_call_userdata(call), svc_operator_call, call, NULL, ms_pb_dup(req), err);
}

static int on_watch_state(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err) {
  return svc_try_post(ms_rpc_call_userdata(call), svc_state_watch, call, NULL, ms_pb_dup(req), err);
}

static void on_watch_done(ms_rpc_call *call, bool cancelled) {
  (void)cancelled;
  svc_post(ms_rpc_call_userdata(call), svc_state_watch_done, call, NULL, NULL);
}

static int add_allocator(alloc_service *s, ms_rpc_server *srv, ms_error **err) {
  static const ms_rpc_method methods[] = {
      {.name = "SubscribeFramework", .on_start = on_subscribe, .on_done = on_subscribe_done},
      {.name = "SchedulerCall", .on_start = on_scheduler_call},
      {.name = "OperatorCall", .on_start = on_operator_call},
      {.name = "WatchState",
       .on_start = on_watch_state,
       .on_drain = svc_state_watch_drained,
       .on_done = on_watch_done},
  };
  return ms_rpc_server_add_service(srv, &meseta__v1__allocator__descriptor, methods, MS_ARRAY_SIZE(methods),
                                   s, err);
}

int alloc_rpc_add(alloc_service *s, ms_rpc_server *srv, ms_error **err) {
  if (add_agent_link(s, srv, err) < 0 || add_allocator(s, srv, err) < 0)
    return MS_ERR;
  return 0;
}
