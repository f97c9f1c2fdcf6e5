/* Shared between master-api's files (private). */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "meseta/leader-follow.h"
#include "meseta/loop.h"
#include "meseta/rpc-astream.h"
#include "meseta/rpc.h"
#include "meseta/v1/allocator.pb-c.h"
#include "meseta/workq.h"

#include "mapi-events.h"
#include "mapi-service.h"
#include "mapi-view.h"

typedef struct mapi_parked mapi_parked;
typedef struct mapi_relay mapi_relay;

/* A channel to one allocator address, shared by the calls and streams that use it:
 * each holds a reference (mapi_alloc_get / mapi_alloc_put), so a leader change never
 * frees a channel under a stream still open on it. */
typedef struct mapi_chan {
  ms_rpc_channel *ch;
  ms_rpc_achannel *ach; /* the same target, for the Subscribe relays' streams */
  char *addr;
  atomic_int refs;
} mapi_chan;

/* Who owns what. "set up" fields are written before the server starts and only read
 * after. The CQ thread (every handler) owns nothing here: it reads and posts. */
struct mapi_service {
  mapi_config cfg;    /* set up; strings owned */
  ms_rpc_server *srv; /* set up */
  /* The allocator to talk to: the fixed --allocator, or the leader the registry
   * reports (NULL while none is known). Under mu: the leader thread writes them
   * (set_leader), every thread reads; `leader_gen` grows at each change (written
   * under mu, for `cond`; read without it). */
  mapi_chan *alloc;
  bool leader_absent; /* the registry says no leader: calls answer UNAVAILABLE */
  _Atomic uint64_t leader_gen;
  /* --registry: the channel (set up), and the thread following WatchLeader. */
  ms_rpc_channel *reg;
  ms_leader_follow *leader;
  mapi_view *view;     /* its own rwlock: the watch thread writes, readers read */
  mapi_events *events; /* its own lock and thread: Operator.Subscribe (mapi-events.c) */
  ms_workq *fwd;       /* thread-safe queue of the forwarders */
  atomic_bool stopping;

  /* The watch thread; `watch` is its stream while open (under mu: the leader thread
   * and the close cancel it). */
  pthread_t watch_thread;
  bool watch_started;
  ms_rpc_stream *watch;
  mapi_chan *watch_chan; /* the channel `watch` is open on */

  /* Reads (mapi-reads.c): the loop that serves every read and its thread. The list
   * of parked reads and the deadline timer belong to that thread alone (no lock).
   * reads_held (queued + parked, the --max-queued-reads bound) and n_parked (the
   * watch thread's hint to kick) are atomics; reads_mu orders the CQ thread's posts
   * before the close's last post (guards reads_closed). */
  ms_loop *reads_loop;
  pthread_t reads_thread;
  bool reads_started;
  mapi_parked *parked; /* reads loop thread */
  uint64_t park_timer; /* reads loop thread; 0: none */
  atomic_size_t reads_held;
  atomic_size_t n_parked;
  atomic_bool kick_pending; /* a kick posted, not run yet */
  pthread_mutex_t reads_mu;
  bool reads_closed;

  /* Subscribe relays (mapi-subscribe.c): the loop thread that owns them (each relay's
   * state and offers too: forwarders post the offers used), the queue their upstream
   * streams complete on, and the list of live ones (under mu: the CQ thread inserts
   * and counts per principal, the loop walks and unlinks). */
  ms_loop *relay_loop;
  pthread_t relay_thread;
  bool relay_started;
  ms_rpc_aqueue *aq;
  mapi_relay *relays;
  size_t n_relays;

  /* Guards alloc, leader_absent, leader_gen's changes, watch, watch_chan, relays, n_relays;
   * no longer the parked reads nor the relays' offers (their loops own them). */
  pthread_mutex_t mu;
  pthread_cond_t cond; /* the leader changed, a relay ended, or stopping */
};

/* mapi-service.c: the allocator channel. A reference to the current one, or NULL
 * with UNAVAILABLE while no leader is known; dropped with mapi_alloc_put. */
mapi_chan *mapi_alloc_get(mapi_service *s, ms_error **err);
void mapi_alloc_put(mapi_chan *c); /* NULL is fine */
/* Sleeps ms unless stopping or the leader changes from `gen`; false when stopping. */
bool mapi_nap(mapi_service *s, int64_t ms, uint64_t gen);
/* mapi-service.c: the watch thread (WatchState) and the leader thread (WatchLeader). */
void *mapi_watch_main(void *arg);
/* mapi-reads.c */
extern const ms_rpc_method mapi_operator_reads[];
extern const size_t mapi_n_operator_reads;
/* The reads loop (mapi_service_new), its thread (mapi_service_start). */
int mapi_reads_init(mapi_service *s, ms_error **err);
int mapi_reads_start(mapi_service *s, ms_error **err);
/* Refuses new reads (UNAVAILABLE), lets the loop run what was handed over, fails the
 * parked ones and joins the thread. After the watch thread is joined (no more kicks). */
void mapi_reads_close(mapi_service *s);
void mapi_reads_free(mapi_service *s); /* after mapi_reads_close */
/* Watch thread: wakes the parked reads (the view advanced). */
void mapi_reads_kick(mapi_service *s);
/* mapi-forward.c: unary calls relayed to the allocator. */
/* The Operator methods relayed (those whose request is a member of
 * Allocator.OperatorCallRequest's oneof) written to out (NULL: only counted). */
size_t mapi_operator_writes(ms_rpc_method *out);
extern const ms_rpc_method mapi_scheduler_calls[];
extern const size_t mapi_n_scheduler_calls;
/* The Principal of a call, authenticated (mapi-auth.h), with via = this replica;
 * *ret is the caller's. UNAUTHENTICATED when the caller's credentials are refused. */
int mapi_principal(mapi_service *s, ms_rpc_call *call, Meseta__V1__Principal **ret, ms_error **err);
/* mapi-auth.c: a read's caller authenticated (refused as mapi_principal would). */
int mapi_read_auth(mapi_service *s, ms_rpc_call *call, ms_error **err);
/* mapi-forward.c: an error from a call to the allocator at addr, as master-api relays
 * it: a failed hop (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, UNKNOWN, INTERNAL) is
 * prefixed with `allocator `addr``; the allocator's verdicts on the request (every
 * other code) are kept as they are. */
void mapi_hop_error(ms_error **err, const char *addr);
/* mapi-check.c: enum fields of the request (nested ones too) hold values their enum
 * defines; INVALID_ARGUMENT naming the field's path (`states[0]: 999 is not ...`). */
int mapi_check_request(const ProtobufCMessage *req, ms_error **err);
/* mapi-subscribe.c */
int mapi_subscribe_start(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err);
void mapi_subscribe_done(ms_rpc_call *call, bool cancelled);
/* The relays' loop and queue (mapi_service_new), their thread (mapi_service_start). */
int mapi_relays_init(mapi_service *s, ms_error **err);
int mapi_relays_start(mapi_service *s, ms_error **err);
/* Cancels every relay and waits (bounded) for them to end. */
void mapi_relays_close(mapi_service *s);
/* After the server is freed (the calls' on_done have run): stops the relays' thread,
 * frees the loop and the queue. */
void mapi_relays_free(mapi_service *s);
/* The leader moved: relays whose upstream is open on another channel than the
 * current one re-open it there, waiting ones try at once (posted; mu may be held). */
void mapi_relays_move(mapi_service *s, const mapi_chan *now);
/* Offers a scheduler used or declined through this replica: its relays stop
 * tracking them (they will not be rescinded after a failover). Any thread: posted
 * to the relays' loop, which owns the offers. */
void mapi_relays_offers_gone(mapi_service *s, const char *framework_id, Meseta__V1__OfferID *const *ids,
                             size_t n);
/* Health of the whole server and its two services. */
void mapi_set_health(mapi_service *s, bool serving);
