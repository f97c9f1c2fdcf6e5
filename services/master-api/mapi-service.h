/* meseta-master-api's service: the public Scheduler and Operator APIs, relayed to the
 * allocator leader (Allocator.*) and answered from a read view it keeps with
 * Allocator.WatchState.
 *
 * Threads: the gRPC server's thread runs the handlers (never blocking, never serving
 * a read); one watch thread keeps the view; one loop thread serves every read and
 * holds those parked on `min_revision`; a pool
 * forwards unary calls; one loop thread relays every Scheduler.Subscribe (their
 * upstream streams complete on one more thread); with a
 * registry, one thread follows Registry.WatchLeader and moves every stream to the
 * new leader.
 *
 * Lifetime: mapi_service_new, mapi_service_add (before the server starts),
 * mapi_service_start (the watch begins); at the end mapi_service_close (streams
 * cancelled, threads joined, parked reads answered) before ms_rpc_server_shutdown,
 * then ms_rpc_server_free, then mapi_service_free. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "meseta/error.h"
#include "meseta/rpc.h"

typedef struct mapi_config {
  const char *allocator;           /* a fixed allocator address (e.g. a Service routing to the leader) */
  const char *registry;            /* or: follow the leader through this registry's WatchLeader */
  const char *name;                /* this replica, for logs and Principal.via */
  size_t forwarders;               /* threads forwarding unary calls (>= 1) */
  int64_t call_timeout_ms;         /* deadline of a forwarded call when the caller set none */
  int64_t max_revision_wait_ms;    /* a read waits this long at most for min_revision */
  int64_t max_backoff_ms;          /* between WatchState attempts */
  uint32_t max_chunk_bytes;        /* WatchStateRequest.max_chunk_bytes (0: the allocator's default) */
  int64_t max_message_bytes;       /* of the channel to the allocator */
  const ms_rpc_tls *allocator_tls; /* NULL: plaintext */
  size_t subscriber_queue_bytes;   /* Operator.Subscribe: events waiting per subscriber (0: 8 MiB) */
  struct mapi_auth *auth;          /* who calls (mapi-auth.h); borrowed; NULL: mTLS or anonymous */
  size_t max_subscriptions_per_principal; /* Scheduler.Subscribe streams per principal (0: no limit) */
  size_t
      max_queued_reads; /* reads queued or parked on the reads loop; past it RESOURCE_EXHAUSTED (0: 1024) */
} mapi_config;

typedef struct mapi_service mapi_service;

/* The config's strings are copied. */
mapi_service *mapi_service_new(const mapi_config *cfg, ms_error **err);
/* Hosts meseta.v1.Scheduler and meseta.v1.Operator on srv (kept, not owned); both
 * report NOT_SERVING until the view is current. */
int mapi_service_add(mapi_service *s, ms_rpc_server *srv, ms_error **err);
/* Starts the watch and the threads. After ms_rpc_server_start. */
int mapi_service_start(mapi_service *s, ms_error **err);
void mapi_service_close(mapi_service *s);
void mapi_service_free(mapi_service *s); /* NULL is fine */
