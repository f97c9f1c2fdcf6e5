/* Shared between master-api's files (private). */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "meseta/rpc.h"
#include "meseta/v1/allocator.pb-c.h"
#include "meseta/workq.h"

#include "mapi-service.h"
#include "mapi-view.h"

typedef struct mapi_parked mapi_parked;
typedef struct mapi_relay mapi_relay;

struct mapi_service {
  mapi_config cfg; /* strings owned */
  ms_rpc_server *srv;
  ms_rpc_channel *alloc;
  mapi_view *view;
  ms_workq *fwd;
  atomic_bool stopping;

  /* The watch thread; `watch` is its stream while open (under mu, for cancelling). */
  pthread_t watch_thread;
  bool watch_started;
  ms_rpc_stream *watch;

  /* Reads parked on min_revision, and the thread serving them. */
  pthread_t park_thread;
  bool park_started;
  mapi_parked *parked;

  /* Live Subscribe relays (each with its thread, detached). */
  mapi_relay *relays;
  size_t n_relays;

  pthread_mutex_t mu;
  pthread_cond_t cond; /* the view advanced, a relay ended, or stopping */
};

/* mapi-watch.c */
void *mapi_watch_main(void *arg);
/* mapi-reads.c */
extern const ms_rpc_method mapi_operator_reads[];
extern const size_t mapi_n_operator_reads;
void *mapi_park_main(void *arg);
/* Wakes the parked reads (the view advanced). */
void mapi_reads_kick(mapi_service *s);
/* mapi-forward.c: unary calls relayed to the allocator. */
extern const ms_rpc_method mapi_operator_writes[];
extern const size_t mapi_n_operator_writes;
extern const ms_rpc_method mapi_scheduler_calls[];
extern const size_t mapi_n_scheduler_calls;
/* The Principal of a call (anonymous for now), with via = this replica; heap. */
Meseta__V1__Principal *mapi_principal(mapi_service *s, ms_rpc_call *call);
/* mapi-subscribe.c */
int mapi_subscribe_start(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err);
void mapi_subscribe_done(ms_rpc_call *call, bool cancelled);
/* Cancels every relay and waits (bounded) for their threads to end. */
void mapi_relays_close(mapi_service *s);
/* Health of the whole server and its two services. */
void mapi_set_health(mapi_service *s, bool serving);
