/* Following the allocator leader through a registry's WatchLeader stream, on a
 * thread of its own: each LeaderInfo is handed to on_leader (on that thread). When
 * the stream fails or ends, the failure is logged and the stream re-opened after a
 * backoff (100 ms doubling to max_backoff_ms, back to 100 ms once a message came);
 * the leader last reported is not withdrawn meanwhile (a registry outage says
 * nothing about the allocator). Used by master-api and the agent.
 *
 * Ownership: the channel is the caller's and must outlive the follower; the
 * LeaderInfo given to on_leader is borrowed for the call. */
#pragma once

#include <stdint.h>

#include "meseta/error.h"
#include "meseta/rpc.h"
#include "meseta/v1/registry.pb-c.h"

typedef struct ms_leader_follow ms_leader_follow;
typedef void (*ms_leader_fn)(void *arg, const Meseta__V1__LeaderInfo *li);

/* `who` names the registry in logs ("registry `host:port`"). */
ms_leader_follow *ms_leader_follow_start(ms_rpc_channel *registry, const char *who, int64_t max_backoff_ms,
                                         ms_leader_fn on_leader, void *arg, ms_error **err);
/* Cancels the stream, wakes the backoff, joins the thread, frees. NULL is fine.
 * on_leader is not called after it returns. */
void ms_leader_follow_stop(ms_leader_follow *f);
