/* Recovery of a new leader (alloc-svc-recovery.c): what other modules may call. Owner thread
 * only; memory as each comment says. */
#pragma once

#include "alloc-svc-core.h"
#include "alloc-svc-registry.h"

/* ---- recovery (alloc-svc-recovery.c) ---- */

/* Leading with a registry: load it (retrying while it does not answer), then recover. */
void svc_recovery_start(alloc_service *s);
/* The load's result (err: retry soon). */
void svc_recovery_loaded(alloc_service *s, const svc_reg_loaded *l, const ms_error *err, bool current);
/* An agent re-registered: counts toward the agents expected back. */
void svc_recovery_agent_back(alloc_service *s, const char *id);
/* Forgets the recovery's state (lost lead, shutdown). */
void svc_recovery_reset(alloc_service *s);
