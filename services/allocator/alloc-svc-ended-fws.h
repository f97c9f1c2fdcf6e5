/* Completed frameworks (alloc-svc-ended-fws.c): what other modules may call. Owner thread
 * only; memory as each comment says. */
#pragma once

#include "alloc-svc-core.h"

/* The framework ended at ended_ms (wall clock, ms): kept (info copied) and shown as
 * completed; past cfg.max_completed_frameworks the one that ended first is forgotten
 * (framework_removed). Known already: nothing happens. */
void svc_ended_fw_add(alloc_service *s, const Meseta__V1__FrameworkInfo *info, int64_t ended_ms);
bool svc_ended_fw_has(alloc_service *s, const char *id);
void svc_ended_fw_free_all(alloc_service *s); /* lost lead, close */
