/* What the state files share (alloc-svc-state.c: the stream, the snapshot and the
 * changes; alloc-svc-state-build.c: the view's objects). Owner thread only. Messages
 * returned are heap trees the caller frees with protobuf_c_message_free_unpacked;
 * strings and arrays are the caller's too, unless said otherwise. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "meseta/pb.h"
#include "meseta/v1/operator.pb-c.h"

#include "alloc-svc-core.h"

#define NEW(type, prefix) ((type *)ms_pb_new(&prefix##__descriptor))

void *svc_st_dup(const void *m); /* a copy of a message, NULL for NULL */
int64_t svc_st_wall_ms(void);    /* the wall clock, ms since the epoch */
Google__Protobuf__Timestamp *svc_st_ts(int64_t ms);
char *svc_st_str(const char *p); /* a copy, "" for NULL */

Meseta__V1__Agent *svc_st_agent(alloc_service *s, const svc_agent *a);
Meseta__V1__Framework *svc_st_framework(alloc_service *s, const svc_framework *fw);
Meseta__V1__Task *svc_st_task(const svc_task *t);
Meseta__V1__Role *svc_st_role(alloc_service *s, const char *name);
/* Every role the view shows (weights, quotas, frameworks' roles), *n of them: the
 * array is the caller's, the names are borrowed. */
const char **svc_st_role_names(alloc_service *s, uint32_t *n);
Meseta__V1__QuotaConfig **svc_st_quotas(alloc_service *s, size_t *n);
Meseta__V1__WeightInfo **svc_st_weights(alloc_service *s, size_t *n);
