/* Operator.Subscribe: the view's state, then its changes, as OperatorEvents.
 *
 * The view's change hooks (mapi-view.h) turn each applied revision into events once
 * (each serialized a single time, shared by every subscriber) and queue them on each
 * subscriber; a subscriber's queue is drained into its call from the hooks and from
 * on_drain, a few messages at a time. One thread ("events") serializes each new
 * subscriber's SUBSCRIBED state (under the view's read lock, off the server's thread)
 * and sends heartbeats.
 *
 * Bounds: a subscriber's queue holds at most `queue_bytes` of events waiting; past
 * that its stream ends with RESOURCE_EXHAUSTED (it re-subscribes for a fresh state).
 * Its own SUBSCRIBED state is not counted (it is as big as GetState's answer).
 *
 * Lifetime: mapi_events_new after the view (it sets the view's hooks and starts the
 * thread; before the watch thread starts), mapi_events_close before the server's
 * shutdown (every stream ends with UNAVAILABLE after what it was sent), mapi_events_free
 * after the server is freed and the watch thread joined. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "meseta/error.h"
#include "meseta/rpc.h"

#include "mapi-view.h"

typedef struct mapi_events mapi_events;

typedef struct mapi_events_config {
  size_t queue_bytes;   /* events waiting per subscriber (0: 8 MiB) */
  size_t chunk_bytes;   /* the state's parts in SUBSCRIBED / STATE_CHUNK (0: 1 MiB) */
  int64_t heartbeat_ms; /* when the request sets none (0: 15 s) */
} mapi_events_config;

/* Never fails (allocation failures abort); `view` is kept, not owned. */
mapi_events *mapi_events_new(mapi_view *view, const mapi_events_config *cfg);
/* Ends every stream (UNAVAILABLE: shutting down) and stops the thread; later
 * subscriptions are refused. Idempotent. */
void mapi_events_close(mapi_events *e);
void mapi_events_free(mapi_events *e); /* NULL is fine */

/* The handlers of Operator.Subscribe; the service's userdata is the mapi_service. */
int mapi_events_subscribe(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err);
void mapi_events_drain(ms_rpc_call *call);
void mapi_events_done(ms_rpc_call *call, bool cancelled);
