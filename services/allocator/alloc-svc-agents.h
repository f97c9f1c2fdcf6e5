/* Agents (alloc-svc-agents.c): what other modules may call. Owner thread
 * only; memory as each comment says. */
#pragma once

#include "alloc-svc-core.h"

/* ---- agents (alloc-svc-agents.c) ---- */

/* Owner-thread ends of an AgentLink.Connect stream (posted by allocator-rpc.c): data is
 * the stream's svc_link, msg an AgentMessage copy. */
void svc_agent_link_opened(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg);
void svc_agent_link_msg(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg);
void svc_agent_link_closed(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg);
/* Forgets an agent: its tasks become TASK_LOST, its offers are rescinded. */
void svc_agent_remove(alloc_service *s, svc_agent *a, const char *why);
void svc_agents_ping(alloc_service *s);
void svc_agents_close(alloc_service *s);

/* ---- agents' operator state (alloc-svc-agents.c) ---- */

/* The state the engine should hold for agent id, from its record's operator state. */
alloc_agent_state svc_agent_wanted_state(alloc_service *s, const char *id);
/* Re-specs the agent in the engine: state from its record, maintenance window from the
 * schedule (its offers are rescinded). */
int svc_agent_respec(alloc_service *s, svc_agent *a, ms_error **err);
