/* Tasks and executors the allocator launched or re-adopted: where they run, in which
 * role, what they hold. Status updates from agents go to the framework's stream (and
 * to the launch operation that waits for them, alloc-svc-operations.c); a terminal one
 * gives the task's resources back to the model (and its executor's, when it was the
 * executor's last task). */
#include "alloc-svc-tasks.h"

#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/task-state.h"

#include "alloc-svc-completed.h"
#include "alloc-svc-core.h"
#include "alloc-svc-operations.h"
#include "alloc-svc-state.h"

bool svc_task_state_terminal(Meseta__V1__TaskState st) {
  return ms_task_state_terminal(st);
}

svc_task *svc_task_get(alloc_service *s, const char *framework_id, const char *task_id) {
  _cleanup_free_ char *key = svc_key2(framework_id, task_id);
  return svc_table_get(&s->tasks, key);
}

bool svc_executor_known(alloc_service *s, const char *agent_id, const char *framework_id,
                        const char *executor_id) {
  _cleanup_free_ char *key = svc_key3(agent_id, framework_id, executor_id);
  return svc_table_get(&s->executors, key) != NULL;
}

svc_task *svc_task_add(alloc_service *s, const char *framework_id, const char *task_id, const char *agent_id,
                       const char *role, const ms_resources *res, const char *executor_id,
                       const ms_resources *exec_res) {
  svc_task *t = ms_xcalloc(1, sizeof(*t));
  t->e.key = svc_key2(framework_id, task_id);
  t->framework_id = ms_xstrdup(framework_id);
  t->task_id = ms_xstrdup(task_id);
  t->agent_id = ms_xstrdup(agent_id);
  t->role = ms_xstrdup(role);
  t->res = res ? ms_resources_clone(res) : ms_resources_new();
  t->state = MESETA__V1__TASK_STATE__TASK_STAGING;
  if (executor_id && *executor_id) {
    _cleanup_free_ char *key = svc_key3(agent_id, framework_id, executor_id);
    svc_executor *x = svc_table_get(&s->executors, key);
    if (!x) {
      x = ms_xcalloc(1, sizeof(*x));
      x->e.key = TAKE_PTR(key);
      x->framework_id = ms_xstrdup(framework_id);
      x->agent_id = ms_xstrdup(agent_id);
      x->role = ms_xstrdup(role);
      x->res = exec_res ? ms_resources_clone(exec_res) : ms_resources_new();
      svc_table_put(&s->executors, &x->e);
    }
    x->ntasks++;
    t->executor = x;
  }
  svc_table_put(&s->tasks, &t->e);
  svc_unacked_forget(s, t->e.key);
  svc_state_emit_task(s, t, SVC_ADDED);
  return t;
}

static void executor_free(svc_executor *x) {
  free(x->e.key);
  free(x->framework_id);
  free(x->agent_id);
  free(x->role);
  ms_resources_free(x->res);
  free(x);
}

static void task_free(svc_task *t) {
  free(t->e.key);
  free(t->framework_id);
  free(t->task_id);
  free(t->agent_id);
  free(t->role);
  ms_resources_free(t->res);
  free(t);
}

static void recover(alloc_service *s, const char *fw, const char *agent, const char *role,
                    const ms_resources *res) {
  if (ms_resources_is_empty(res))
    return;
  ms_error *err = NULL;
  if (alloc_model_recover(s->model, fw, agent, role, res, &err) < 0) {
    ms_log_warn(fw, "recovering on agent `%s`: %s", agent, err->msg);
    ms_error_free(err);
  }
}

void svc_task_end(alloc_service *s, svc_task *t) {
  svc_run_task_ended(s, t); /* e.g. kept as completed (terminal) or removed from the views */
  recover(s, t->framework_id, t->agent_id, t->role, t->res);
  svc_executor *x = t->executor;
  if (x && --x->ntasks == 0) {
    /* Simplification: the executor's resources return with its last task, without
     * waiting for the agent to report the executor's exit. */
    recover(s, x->framework_id, x->agent_id, x->role, x->res);
    svc_table_del(&s->executors, &x->e);
    executor_free(x);
  }
  svc_table_del(&s->tasks, &t->e);
  task_free(t);
  svc_check_trigger(s);
}

void svc_task_adopt_ended(alloc_service *s, const char *agent_id, const char *fid, const char *tid,
                          Meseta__V1__TaskState state) {
  _cleanup_free_ char *key = svc_key2(fid, tid);
  if (!svc_table_get(&s->frameworks, fid) || svc_task_get(s, fid, tid) || svc_completed_get(s, key))
    return;
  ms_resources *none = ms_resources_new();
  svc_task *t = svc_task_add(s, fid, tid, agent_id, "*", none, NULL, NULL);
  ms_resources_free(none);
  t->state = state;
  svc_state_emit_task(s, t, SVC_UPDATED);
  svc_task_end(s, t);
}

void svc_task_status(alloc_service *s, svc_agent *a, const Meseta__V1__AgentMessage__StatusUpdate *u) {
  if (!u->status || !u->status->task_id || !u->framework_id) {
    ms_log_warn(a->e.key, "status update without `framework_id` or `status.task_id` ignored");
    return;
  }
  const char *fid = u->framework_id->value, *tid = u->status->task_id->value;
  svc_framework *fw = svc_table_get(&s->frameworks, fid);
  /* The agent's id in the status is ours to vouch for. */
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = a->e.key;
  Meseta__V1__AgentID *saved = u->status->agent_id;
  u->status->agent_id = &aid;
  svc_send_update(s, fw, u->status);
  u->status->agent_id = saved;
  svc_unacked_terminal(s, fid, a->e.key, u->status); /* reconcilable until acknowledged */
  svc_task *t = svc_task_get(s, fid, tid);
  if (!t) {
    ms_log_debug(fid, "status %d of unknown task `%s` forwarded", (int)u->status->state, tid);
    if (svc_task_state_terminal(u->status->state)) /* ended while no leader knew it */
      svc_task_adopt_ended(s, a->e.key, fid, tid, u->status->state);
    return;
  }
  if (strcmp(t->agent_id, a->e.key) != 0) {
    ms_log_warn(fid, "task `%s`: status from agent `%s`, but it runs on `%s`", tid, a->e.key, t->agent_id);
    return;
  }
  t->state = u->status->state;
  svc_state_emit_task(s, t, SVC_UPDATED);
  /* A launch accepted with an operation id settles from its tasks' first statuses. */
  svc_ops_task_status(s, a->e.key, fid, u->status);
  if (svc_task_state_terminal(u->status->state)) {
    ms_log_debug(fid, "task `%s` ended (%d): resources recovered", tid, (int)u->status->state);
    svc_task_end(s, t);
  }
}

void svc_tasks_free_all(alloc_service *s) {
  for (uint32_t i = 0; i < s->tasks.n; i++)
    task_free((svc_task *)s->tasks.v[i]);
  for (uint32_t i = 0; i < s->executors.n; i++)
    executor_free((svc_executor *)s->executors.v[i]);
  svc_table_release(&s->tasks);
  svc_table_release(&s->executors);
}

void svc_task_send_kill(alloc_service *s, svc_agent *a, const char *framework_id, const char *task_id,
                        Meseta__V1__KillPolicy *policy) {
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = (char *)framework_id;
  Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
  tid.value = (char *)task_id;
  Meseta__V1__AllocatorMessage__KillTask k = MESETA__V1__ALLOCATOR_MESSAGE__KILL_TASK__INIT;
  k.framework_id = &fid;
  k.task_id = &tid;
  k.kill_policy = policy;
  Meseta__V1__AllocatorMessage m = MESETA__V1__ALLOCATOR_MESSAGE__INIT;
  m.message_case = MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_KILL_TASK;
  m.kill_task = &k;
  svc_send_agent(s, a, &m);
}
