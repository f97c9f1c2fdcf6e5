/* WatchState: the state emission (alloc-svc-state.c): what other modules may call. Owner thread
 * only; memory as each comment says. */
#pragma once

#include "alloc-svc-core.h"

/* ---- WatchState (alloc-svc-state.c) ----
 *
 * Every change to what a master-api view holds is numbered: s->revision grows by one
 * per change and never goes back, also across leaders (a leader starts at its election
 * time in microseconds, above any predecessor's count in practice). Each emit sends one
 * StateChange (last_of_revision) to every watcher and returns its revision; a watcher
 * whose send queue is full is cut off with RESOURCE_EXHAUSTED. */

void svc_state_watch(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg);
void svc_state_watch_done(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg);
/* The watcher's send queue emptied (the server's thread): agent changes held back for
 * it may go (posted to the owner). */
void svc_state_watch_drained(ms_rpc_call *call);
/* A new term begins (leading): the revision moves above every earlier one. */
void svc_state_begin_term(alloc_service *s);
/* Ends every watcher's stream. */
void svc_state_close(alloc_service *s, ms_status code, const char *why);

typedef enum svc_change { SVC_ADDED, SVC_UPDATED, SVC_REMOVED } svc_change;
int64_t svc_state_emit_agent(alloc_service *s, const char *agent_id, svc_change what);
int64_t svc_state_emit_framework(alloc_service *s, const char *framework_id, svc_change what);
/* A framework ended: shown as msg (a completed framework; copied), as framework_updated. */
int64_t svc_state_emit_framework_ended(alloc_service *s, const Meseta__V1__Framework *msg);
int64_t svc_state_emit_task(alloc_service *s, const svc_task *t, svc_change what);
int64_t svc_state_emit_role(alloc_service *s, const char *role);
int64_t svc_state_emit_quota(alloc_service *s);
int64_t svc_state_emit_weights(alloc_service *s);
int64_t svc_state_emit_maintenance(alloc_service *s);
int64_t svc_state_emit_down(alloc_service *s); /* the DOWN machines changed */
/* A tracked operation added or updated (SVC_ADDED / SVC_UPDATED) or removed. */
int64_t svc_state_emit_operation(alloc_service *s, const svc_operation *op, svc_change what);
int64_t svc_state_emit_task_removed(alloc_service *s, const char *framework_id, const char *task_id);

/* The engine's on_change: schedules svc_state_flush on the loop (once). */
void svc_state_changed(void *ctx);
/* Emits an agent update for every agent whose resources changed since the last flush
 * (tasks, offers: the engine's record), and a role update (or removal) for every role
 * whose Role differs from the one last shown; unchanged ones are not sent. Agent
 * updates wait while a watcher has many sends queued (a cycle may touch every agent),
 * and go on when its queue drains. Runs before every snapshot; a snapshot shows agents
 * as last shown, so at revision R it holds what the changes up to R built. */
void svc_state_flush(alloc_service *s);
void svc_state_reset(alloc_service *s); /* forgets what was shown (lost lead, shutdown) */

/* A Task built from a live task (alloc-svc-state.c); the caller frees. */
Meseta__V1__Task *svc_state_build_task(const svc_task *t);
