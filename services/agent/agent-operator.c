/* AgentOperator.KillTask: an operator's kill (meseta task kill). The request is checked on
 * the gRPC thread; the kill itself runs on the agent's loop, which owns the tasks, and
 * answers from there (ms_rpc_call_reply and _finish are thread-safe). */
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/pb.h"
#include "meseta/task-state.h"

#include "agent-files.h"
#include "agent-internal.h"

typedef struct kill_job {
  ms_rpc_call *call; /* referenced */
  agent *a;
  Meseta__V1__KillTaskRequest *req; /* a copy */
} kill_job;

static void run_kill(void *arg) {
  kill_job *j = arg;
  const char *fid = j->req->framework_id->value, *tid = j->req->task_id->value;
  agent_task *t = agent_task_find(j->a, fid, tid);
  if (j->a->shutting_down) {
    ms_rpc_call_finish(j->call, MS_UNAVAILABLE, "the agent is shutting down");
  } else if (!t) {
    _cleanup_free_ char *m =
        ms_xasprintf("`task_id`: task `%s` of framework `%s` is not on this agent", tid, fid);
    ms_rpc_call_finish(j->call, MS_NOT_FOUND, m);
  } else if (t->terminal || !t->pid) {
    _cleanup_free_ char *m =
        ms_xasprintf("`task_id`: task `%s` has already ended (%s)", tid, ms_task_state_name(t->state));
    ms_rpc_call_finish(j->call, MS_FAILED_PRECONDITION, m);
  } else {
    const Meseta__V1__KillPolicy *kp = j->req->kill_policy;
    int64_t grace =
        kp && kp->grace_period ? kp->grace_period->seconds * 1000 + kp->grace_period->nanos / 1000000 : -1;
    ms_log_info(t->log_id, "killed by an operator (AgentOperator.KillTask)");
    agent_task_kill(j->a, fid, tid, grace);
    Meseta__V1__KillTaskResponse resp = MESETA__V1__KILL_TASK_RESPONSE__INIT;
    ms_error *err = NULL;
    if (ms_rpc_call_reply(j->call, &resp.base, &err) < 0)
      ms_error_free(err);
  }
  ms_rpc_call_unref(j->call);
  protobuf_c_message_free_unpacked(&j->req->base, NULL);
  free(j);
}

int agent_operator_kill(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  const Meseta__V1__KillTaskRequest *req = (const Meseta__V1__KillTaskRequest *)msg;
  const agent_operator_ctx *ctx = ms_rpc_call_userdata(call);
  if (!req->framework_id || !req->framework_id->value || !*req->framework_id->value)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`framework_id` is missing");
  if (!req->task_id || !req->task_id->value || !*req->task_id->value)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`task_id` is missing");
  if (req->kill_policy && req->kill_policy->grace_period &&
      (req->kill_policy->grace_period->seconds < 0 || req->kill_policy->grace_period->nanos < 0))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`kill_policy.grace_period` is negative");
  if (!ctx->a || !ctx->loop)
    return ms_error_set(err, MS_UNAVAILABLE, "this server cannot kill tasks");
  kill_job *j = ms_xcalloc(1, sizeof(*j));
  j->call = call;
  j->a = ctx->a;
  j->req = (Meseta__V1__KillTaskRequest *)ms_pb_dup(&req->base);
  ms_rpc_call_ref(call);
  if (ms_loop_post(ctx->loop, run_kill, j) < 0) {
    ms_rpc_call_unref(call);
    protobuf_c_message_free_unpacked(&j->req->base, NULL);
    free(j);
    return ms_error_set(err, MS_UNAVAILABLE, "the agent's loop is gone");
  }
  return 0;
}
