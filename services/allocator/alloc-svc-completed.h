/* Completed tasks and unacknowledged terminal statuses (alloc-svc-completed.c): what other modules may call.
 * Owner thread only; memory as each comment says. */
#pragma once

#include "alloc-svc-core.h"

/* ---- completed tasks (alloc-svc-completed.c) ----
 *
 * A task that ended is kept, as WatchState last showed it (terminal), so a snapshot
 * holds what a view that saw it end holds: at most cfg.max_completed_tasks_per_framework
 * per framework and cfg.max_completed_tasks in all, the oldest evicted first with a
 * task_removed change. A task that leaves without a terminal state (its framework
 * removed) is removed at once; a framework's removal removes its completed tasks. */

/* svc_state_emit_task showed the task terminal: msg (taken) is what it showed. */
void svc_completed_shown(alloc_service *s, const svc_task *t, Meseta__V1__Task *msg);
/* The task leaves the live table (svc_task_end): kept as completed, or removed. */
void svc_completed_add(alloc_service *s, const svc_task *t);
/* A task with the key (framework \x1f task id) is added again: the completed one is
 * forgotten silently (the view's TASK_ADDED replaces it). */
void svc_completed_replaced(alloc_service *s, const char *key);
/* A completed task loaded from the registry (msg taken; framework and task ids set),
 * held by chunk. Replaces an older copy; the bounds apply. */
void svc_completed_restore(alloc_service *s, Meseta__V1__Task *msg, struct svc_chunk *chunk);
/* At close: frees every completed task. */
void svc_completed_free_all(alloc_service *s);
/* The completed task with the key (framework \x1f task id), NULL if none. Borrowed. */
const Meseta__V1__Task *svc_completed_get(alloc_service *s, const char *key);

/* Terminal statuses not acknowledged yet, so reconciliation answers them (as Mesos'
 * master keeps such tasks until the acknowledgement) rather than TASK_UNKNOWN, which
 * would make a framework launch the task again. At most SVC_MAX_UNACKED, the oldest
 * forgotten first. */
#define SVC_MAX_UNACKED 100000u
typedef struct svc_unacked {
  svc_entry e; /* framework \x1f task id */
  char *framework_id, *task_id, *agent_id;
  Meseta__V1__TaskState state;
  uint8_t uuid[16];
  struct svc_unacked *prev, *next; /* oldest first */
} svc_unacked;
/* A terminal status with a uuid went to the framework (the task may be unknown here:
 * an agent resending after a failover). */
void svc_unacked_terminal(alloc_service *s, const char *framework_id, const char *agent_id,
                          const Meseta__V1__TaskStatus *st);
/* The framework acknowledged (framework, task, uuid): forgotten if it is the terminal one. */
void svc_unacked_ack(alloc_service *s, const char *framework_id, const char *task_id,
                     const ProtobufCBinaryData *uuid);
svc_unacked *svc_unacked_get(alloc_service *s, const char *framework_id, const char *task_id);
/* The task id is launched again: the old terminal status is forgotten. */
void svc_unacked_forget(alloc_service *s, const char *key);
void svc_unacked_forget_framework(alloc_service *s, const char *framework_id);
void svc_unacked_free_all(alloc_service *s);
