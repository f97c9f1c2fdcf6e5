/* Weights, quota and the maintenance schedule (alloc-svc-config.c): what other modules may call. Owner thread
 * only; memory as each comment says. */
#pragma once

#include "alloc-svc-core.h"

/* (The stateless checks of weights, quota and the schedule: ms_operator_check.) */
void svc_config_weight(alloc_service *s, const char *role, double w);
int svc_config_quota_apply(alloc_service *s, const Meseta__V1__QuotaConfig *q, ms_error **err);
/* Resource names, and unless r->force the capacity and hierarchy checks
 * (FAILED_PRECONDITION naming the config). */
int svc_config_check_quota(alloc_service *s, const Meseta__V1__UpdateQuotaRequest *r, ms_error **err);
/* The registry writes of a call (the caller's); NULL when there are none. The
 * maintenance record is the batch's after the call. */
Meseta__V1__BatchRequest *svc_config_weights_batch(alloc_service *s,
                                                   const Meseta__V1__UpdateWeightsRequest *u);
Meseta__V1__BatchRequest *svc_config_quota_batch(alloc_service *s, const Meseta__V1__UpdateQuotaRequest *u);
Meseta__V1__BatchRequest *svc_config_maint_batch(Meseta__V1__MaintenanceRecord *mr);
/* A loaded registry record of operator configuration (weight, quota, maintenance). */
void svc_operator_load(alloc_service *s, const Meseta__V1__Record *r);
/* Forgets weights, quota and the schedule (lost lead, shutdown). */
void svc_operator_reset(alloc_service *s);
