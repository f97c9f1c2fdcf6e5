/* Completed tasks in the registry (alloc-svc-history.c): what other modules may call. Owner thread
 * only; memory as each comment says. */
#pragma once

#include "alloc-svc-core.h"
#include "alloc-svc-registry.h"

/* ---- completed tasks in the registry (alloc-svc-history.c) ----
 *
 * With a registry, completed tasks are written as COMPLETED_TASKS records, in groups (at
 * most SVC_HIST_GROUP tasks or SVC_HIST_BYTES, SVC_HIST_DELAY_MS after the first one
 * waits), so a new leader lists them again: one write per group, not per task. A record
 * is deleted when none of its tasks is kept any more, and rewritten (its kept tasks in
 * the next group, then the record deleted) when fewer than half are: what the registry
 * holds stays within about twice what is kept (the --max-completed-tasks* bounds). */
#define SVC_HIST_GROUP 500u
#define SVC_HIST_BYTES (512u * 1024u)
#define SVC_HIST_DELAY_MS 250

/* A framework's acknowledgement of a completed task's terminal update is held from the
 * agent until the record holding the task is written: until then the agent keeps the
 * task and would bring it to a new leader. True: held (sent later, or dropped with the
 * lead); false: send it now. */
bool svc_history_hold_ack(alloc_service *s, const char *agent_id, const char *framework_id,
                          const char *task_id, const ProtobufCBinaryData *uuid);
/* d was kept as completed: written with the next group. */
void svc_history_added(alloc_service *s, svc_done_task *d);
/* d was loaded from chunk's record. */
void svc_history_restored(alloc_service *s, svc_done_task *d, svc_chunk *chunk);
/* d is forgotten (evicted, replaced): its record may go. */
void svc_history_forget(alloc_service *s, svc_done_task *d);
/* The leader's load: every COMPLETED_TASKS record becomes completed tasks again. */
void svc_history_loaded(alloc_service *s, const svc_reg_loaded *l);
/* Forgets the history's state (lost lead, shutdown); what waits is not written. */
void svc_history_reset(alloc_service *s);
