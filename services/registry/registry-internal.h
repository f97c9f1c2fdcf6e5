/* What the registry's files share; not used outside services/registry. */
#pragma once

#include "meseta/etcd.h"
#include "meseta/rpc.h"
#include "meseta/workq.h"

#include "registry-records.h"
#include "registry-service.h"

ms_workq *reg_service_pool(const reg_service *svc);
/* How many record bytes one response may carry. */
size_t reg_response_budget(const reg_service *svc);

/* Decodes a stored record, its revision set from the kv. DATA_LOSS if corrupt.
 * The caller frees it with meseta__v1__record__free_unpacked. */
reg_record *reg_decode(const reg_service *svc, const ms_etcd_kv *kv, ms_error **err);

/* Watch and WatchLeader streams (registry-watch.c). */
int reg_watch_start(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err);
int reg_leader_start(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err);
void reg_watch_done(ms_rpc_call *call, bool cancelled);
