/* Tasks (alloc-svc-tasks.c): what other modules may call. Owner thread
 * only; memory as each comment says. */
#pragma once

#include "alloc-svc-core.h"

/* ---- tasks (alloc-svc-tasks.c) ---- */

svc_task *svc_task_get(alloc_service *s, const char *framework_id, const char *task_id);
/* Records a launched task (STAGING) and its executor (new: its resources were part of
 * the launch). res and exec_res are copied. */
svc_task *svc_task_add(alloc_service *s, const char *framework_id, const char *task_id, const char *agent_id,
                       const char *role, const ms_resources *res, const char *executor_id,
                       const ms_resources *exec_res);
/* The task ended: recovers its resources (and its executor's if it was the last) and
 * forgets it. */
/* A task an agent reports ended that this leader does not know (the last leader died
 * before its terminal update, or before that update's record was written): kept as
 * completed, as if its update had come here, so GetTasks and reconciliation know it.
 * Nothing when its framework is not known (yet), or it is live or completed already. */
void svc_task_adopt_ended(alloc_service *s, const char *agent_id, const char *fid, const char *tid,
                          Meseta__V1__TaskState state);
void svc_task_end(alloc_service *s, svc_task *t);
/* Tells the agent (NULL or unlinked: nothing) to kill a task; policy may be NULL.
 * Everything is borrowed. */
void svc_task_send_kill(alloc_service *s, svc_agent *a, const char *framework_id, const char *task_id,
                        Meseta__V1__KillPolicy *policy);
/* A status update from the agent: forwards it, ends the task when terminal. */
void svc_task_status(alloc_service *s, svc_agent *a, const Meseta__V1__AgentMessage__StatusUpdate *u);
bool svc_task_state_terminal(Meseta__V1__TaskState st);
/* Whether the executor is already known on that agent. */
bool svc_executor_known(alloc_service *s, const char *agent_id, const char *framework_id,
                        const char *executor_id);
void svc_tasks_free_all(alloc_service *s);
