/* Leader election for the allocator, through etcd's election API.
 *
 * One background thread keeps one candidacy: it grants a lease, keeps it alive, and
 * campaigns with the allocator's address as its value. When elected it calls
 * on_change(arg, true); when leadership is lost (the lease could not be renewed for
 * a whole TTL, etcd says it is gone, or the local lease deadline passed) it calls
 * on_change(arg, false) and campaigns again with a fresh lease. Standbys simply wait
 * in the campaign. Clients find the leader through the registry's WatchLeader, which
 * reads the same election.
 *
 * Fencing. The leader keeps a local lease deadline on the monotonic clock: the send
 * time of the last successful renewal (or of the grant) + the granted TTL - a margin
 * (a tenth of the TTL, at least 100 ms). etcd cannot have let the lease go before it,
 * so a leader that checks alloc_leader_valid() before acting never acts while another
 * leads, even after its process was frozen (SIGSTOP, a long pause): a deadline in the
 * past ends the candidacy at once, before etcd or the keeper say anything.
 *
 * on_change runs on the election thread: hand the news to the owner thread (e.g.
 * ms_loop_post) rather than touching state there. It is never called after
 * alloc_leader_stop has returned.
 *
 * Ownership: strings are copied; the etcd client is borrowed and must outlive the
 * leader handle. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "meseta/etcd.h"

typedef struct alloc_leader alloc_leader;
typedef void (*alloc_leader_fn)(void *arg, bool leading);

/* Starts campaigning. ttl_s: the lease's time to live (a dead leader is replaced
 * about this long after it stops renewing); 0: 2 s (etcd's minimum with its default
 * election timeout). */
alloc_leader *alloc_leader_start(ms_etcd *etcd, const char *election, const char *address, int64_t ttl_s,
                                 alloc_leader_fn on_change, void *arg, ms_error **err);

/* Whether this candidate leads now. Any thread. */
bool alloc_leader_is_leading(alloc_leader *l);

/* Whether this candidate leads AND its local lease deadline has not passed. Once the
 * deadline has passed the candidacy is over for good (false from then on; on_change
 * (false) follows and a new candidacy starts). NULL: false. Any thread; cheap (a clock read and a
 * lock), meant to be called before every event the leader handles. */
bool alloc_leader_valid(alloc_leader *l);

/* Resigns if leading (a standby takes over at once instead of after the TTL),
 * revokes the lease, stops the thread and frees. NULL is fine. */
void alloc_leader_stop(alloc_leader *l);
