/* Frameworks and scheduler calls (alloc-svc-frameworks.c, alloc-svc-calls.c): what other modules may call.
 * Owner thread only; memory as each comment says. */
#pragma once

#include "alloc-svc-core.h"

/* ---- frameworks and scheduler calls (alloc-svc-frameworks.c, alloc-svc-calls.c) ---- */

/* Owner-thread ends of Allocator.SubscribeFramework (posted by allocator-rpc.c). */
void svc_framework_subscribe(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg);
void svc_framework_stream_closed(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg);
void svc_framework_free(svc_framework *fw);
/* A framework known from its registry record: in the engine, inactive, no stream, so
 * its tasks re-registering agents report are accounted to it; with the roles it had
 * suppressed (those it no longer has are ignored). Copies what it is given. */
int svc_framework_restore(alloc_service *s, const Meseta__V1__FrameworkInfo *info, char *const *suppressed,
                          size_t nsuppressed, ms_error **err);
/* Recovery ended: frameworks that did not re-subscribe get their failover timeout
 * (at least the recovery timeout, so a relay replaying subscriptions has time). */
void svc_frameworks_recovered(alloc_service *s);
/* Removes a framework: kills its tasks, rescinds offers, ends its stream with ERROR. */
void svc_framework_remove(alloc_service *s, svc_framework *fw, const char *why);
void svc_frameworks_heartbeat(alloc_service *s);
void svc_frameworks_close(alloc_service *s);
/* Validates framework_id and stream_id of a call (`what` names the request). */
svc_framework *svc_framework_check(alloc_service *s, const char *what, const Meseta__V1__FrameworkID *id,
                                   const char *stream_id, ms_error **err);
void svc_scheduler_call(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg);
/* The engine's capability bits (ALLOC_CAP_*) of a FrameworkInfo. */
uint32_t svc_framework_caps(const Meseta__V1__FrameworkInfo *info);
