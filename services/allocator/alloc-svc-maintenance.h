/* Maintenance: the schedule and DOWN machines (alloc-svc-maintenance.c). Owner thread
 * only. */
#pragma once

#include <stdbool.h>

#include "meseta/error.h"
#include "meseta/rpc.h"
#include "meseta/v1/operator.pb-c.h"

#include "alloc-svc-core.h"

/* The maintenance record `r` (an UpdateMaintenanceSchedule, StartMaintenance or
 * StopMaintenance) would leave, checked against the current one: the caller's, or NULL
 * and *err naming the field. */
Meseta__V1__MaintenanceRecord *svc_maint_next(alloc_service *s, const Meseta__V1__OperatorCallRequest *r,
                                              ms_error **err);
/* An agent registering from a DOWN machine: SHUTDOWN_AGENT, the link ends
 * FAILED_PRECONDITION; true when refused. */
bool svc_maint_refuse(alloc_service *s, ms_rpc_call *link, const Meseta__V1__AgentInfo *info);
/* Applies `r` (recorded already): the new schedule and DOWN machines, their agents shut
 * down. `ans` is the call's answer (nothing to fill). */
int svc_maint_apply(alloc_service *s, const Meseta__V1__OperatorCallRequest *r, ProtobufCMessage *ans,
                    ms_error **err);
