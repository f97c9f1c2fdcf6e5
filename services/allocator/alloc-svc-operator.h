/* Operator calls and maintenance (alloc-svc-operator.c): what other modules may call. Owner thread
 * only; memory as each comment says. */
#pragma once

#include "alloc-svc-core.h"

/* Rescinds the agent's outstanding offers. */
void svc_rescind_agent_offers(alloc_service *s, const char *agent);

void svc_operator_call(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg);
/* Ends the quota updates waiting their turn (UNAVAILABLE): the lead is lost or closing. */
void svc_operator_quota_drop(alloc_service *s);
