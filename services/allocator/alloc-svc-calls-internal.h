/* What the scheduler calls' files (alloc-svc-calls.c, the table; alloc-svc-calls-update.c,
 * UpdateFramework) share. Owner thread only. */
#pragma once

#include "meseta/error.h"
#include "meseta/rpc.h"
#include "meseta/v1/allocator.pb-c.h"

#include "alloc-svc-core.h"

typedef Meseta__V1__SchedulerCallRequest call_req;

/* Answers the call with its (empty) response and runs a cycle if one is due. */
void svc_calls_reply_ok(alloc_service *s, ms_rpc_call *call, const call_req *c);

/* UpdateFramework: checked, recorded, applied, then answered (or refused, *err). */
int svc_calls_update_framework(alloc_service *s, ms_rpc_call *call, const call_req *c, ms_error **err);
