/* Operations with feedback (alloc-svc-operations.c): what other modules may call. Owner thread
 * only; memory as each comment says. */
#pragma once

#include "alloc-svc-core.h"

/* ---- operations with feedback (alloc-svc-operations.c) ----
 *
 * An accepted resource operation with Offer.Operation.id is tracked from the accept
 * (OPERATION_PENDING; the model already holds its result) until the framework
 * acknowledges a terminal status. With a registry its OperationRecord (record id: the
 * operation's uuid) is written before APPLY_OPERATION leaves, updated on each status,
 * and deleted on the acknowledgement. A FAILED / ERROR / DROPPED status undoes the
 * operation in the model (its inverse on the agent's unallocated resources). A LAUNCH /
 * LAUNCH_GROUP with an id is tracked the same way, its record written before its
 * RUN_TASK(s) leave; its statuses are the allocator's own (from its tasks' statuses). */

/* Messages for one agent, held until the accept's operation records are durable. */
typedef struct svc_outbox {
  Meseta__V1__AllocatorMessage **v; /* owned copies */
  size_t n;
} svc_outbox;
void svc_outbox_add(svc_outbox *o, const Meseta__V1__AllocatorMessage *m);
/* Sends the messages to the agent, after writing the records of the tracked operations
 * among them when durable. Takes o's contents. */
void svc_outbox_flush(alloc_service *s, const char *agent_id, svc_outbox *o);

/* The ids of an accept's operations (launches too): each set one must be new to the
 * framework (no other non-acknowledged operation) and appear once. */
int svc_ops_check_ids(alloc_service *s, const char *framework_id, const Meseta__V1__AcceptRequest *r,
                      ms_error **err);
/* Starts tracking an accepted operation (PENDING). op and mop are copied. */
svc_operation *svc_op_track(alloc_service *s, const char *framework_id, const char *agent_id,
                            const Meseta__V1__Offer__Operation *info, const Meseta__V1__Operation *op,
                            const ms_operation *mop, const uint8_t uuid[16]);
/* Starts tracking an accepted LAUNCH / LAUNCH_GROUP with an id (PENDING), after its
 * tasks were added. info is copied. */
svc_operation *svc_op_track_launch(alloc_service *s, const char *framework_id, const char *agent_id,
                                   const Meseta__V1__Offer__Operation *info);
/* A task's status from its agent (svc_task_status): settles the launch operation that
 * waits for it, if any. */
void svc_ops_task_status(alloc_service *s, const char *agent_id, const char *framework_id,
                         const Meseta__V1__TaskStatus *st);
/* The agent is being removed: its operations not settled yet become
 * OPERATION_GONE_BY_OPERATOR (gone) or OPERATION_UNREACHABLE. */
void svc_ops_agent_removed(alloc_service *s, const char *agent_id, bool gone, const char *why);
/* An agent's OPERATION_STATUS_UPDATE. */
void svc_op_status(alloc_service *s, svc_agent *a, const Meseta__V1__AgentMessage__OperationStatusUpdate *u);
/* The framework (re-)subscribed: statuses waiting for its acknowledgement again. */
void svc_ops_resend(alloc_service *s, svc_framework *fw);
/* The framework is removed: its operations are forgotten (records deleted). */
void svc_ops_forget_framework(alloc_service *s, const char *framework_id);
int svc_op_acknowledge(alloc_service *s, const Meseta__V1__AcknowledgeOperationStatusRequest *r,
                       ms_error **err);
int svc_op_reconcile(alloc_service *s, const Meseta__V1__ReconcileOperationsRequest *r, ms_error **err);
void svc_ops_free_all(alloc_service *s);
