/* The allocator service: AgentLink.Connect (agents' streams), Allocator.SubscribeFramework
 * and Allocator.SchedulerCall (frameworks, as master-api relays them) over the engine
 * in alloc-model.h / alloc-cycle.h.
 *
 * Threads. The service lives on one owner thread, the one that runs `loop`: it owns
 * the model, the agents, frameworks and tasks, and runs the allocation cycle and the
 * timers. gRPC callbacks (the server's thread) never touch that state: they copy the
 * request (ms_pb_dup), take a reference on the call and ms_loop_post a closure; the
 * owner thread answers with ms_rpc_call_send / ms_rpc_call_reply (thread-safe) and
 * drops the reference.
 *
 * Leadership. A new service is a standby: every call fails with UNAVAILABLE and health
 * is NOT_SERVING until alloc_service_set_leading(svc, true) (on the owner thread).
 *
 * Shutdown, on the owner thread once the loop has stopped:
 *   alloc_service_close(svc);            ends every stream, answers what waits
 *   ms_rpc_server_shutdown(srv, grace);  the server thread ends
 *   alloc_service_drain(svc);            runs the closures the last callbacks posted
 *   ms_rpc_server_free(srv);             no call reference is left
 *   alloc_service_free(svc);
 *
 * Ownership: the config's strings are copied; the loop and the server are borrowed
 * and must outlive the service. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "meseta/loop.h"
#include "meseta/rpc.h"

#include "alloc-sorter.h"

typedef struct alloc_service alloc_service;

typedef struct alloc_service_config {
  int64_t allocation_interval_ms;   /* the cycle's period; > 0 */
  int64_t offer_timeout_ms;         /* 0: offers never time out (main.c's default: 30 s) */
  int64_t max_offers_per_framework; /* outstanding offers one framework may hold; 0: no bound */
  int64_t max_silent_frameworks;    /* silent frameworks holding offers at once; 0: no bound */
  int64_t heartbeat_interval_ms;    /* framework HEARTBEAT and agent PING period; > 0 */
  alloc_sorter_kind role_sorter, framework_sorter;
  const char *fair_share_excluded; /* NULL: none */
  const char *min_allocatable;     /* NULL: the engine's default */
  const char *local_region;        /* NULL: every agent is local */
  const char *advertise_address;   /* MasterInfo.address; NULL: none */
  const char *hostname;            /* MasterInfo.hostname; NULL: none */
  /* Durability: meseta-registry's address. NULL: nothing is written or loaded (tests,
   * single-node setups); a new leader then rebuilds only from re-registrations. */
  const char *registry;
  int64_t registry_timeout_ms;    /* one registry call's deadline; > 0 with a registry */
  double recovery_agent_fraction; /* offers wait until this share of admitted agents is back */
  int64_t recovery_timeout_ms;    /* ... or this long has passed (0: no wait) */
  /* An agent whose stream ended keeps its tasks (no offers) this long before they are
   * reported lost: time for it to reconnect or restart and re-attach (0: at once).
   * Defaults are the flags' (main.c), written nowhere else. */
  int64_t agent_reconnect_timeout_ms;
  /* Completed tasks kept for WatchState (and so GetState / GetTasks): at most this many
   * per framework and in all, the oldest forgotten first; at least 1. */
  int64_t max_completed_tasks_per_framework, max_completed_tasks;
  /* Completed frameworks kept (GetFrameworks include_completed), oldest forgotten first;
   * a subscription with a kept one's id is refused; at least 1. */
  int64_t max_completed_frameworks;
  /* Called on the registry worker thread before every registry request: false, and the
   * request is not sent (UNAVAILABLE). A leader whose lease may be gone writes nothing,
   * even what it queued before it froze. NULL: always sent. */
  bool (*registry_fence)(void *arg);
  void *registry_fence_arg;
} alloc_service_config;

/* Fails on a malformed sorter, minimum, interval or fraction (INVALID_ARGUMENT naming
 * the config field as its flag). */
alloc_service *alloc_service_new(const alloc_service_config *cfg, ms_loop *loop, ms_error **err);

/* Hosts AgentLink and Allocator on srv (before ms_rpc_server_start) and remembers the
 * server for health. */
int alloc_service_add(alloc_service *svc, ms_rpc_server *srv, ms_error **err);

/* Owner thread. Leading: timers run, calls are served, health is SERVING. With a
 * registry, leading starts with recovery: the registry's agents, frameworks, weights
 * and quota are loaded (calls answer UNAVAILABLE meanwhile), then re-registrations and
 * re-subscriptions are accepted but no offer is made until the configured share of
 * admitted agents is back or the recovery timeout passed. Losing the lead ends every
 * stream (UNAVAILABLE) and forgets the model. */
void alloc_service_set_leading(alloc_service *svc, bool leading);

/* This allocator's id (MasterInfo.id), new for every process. Owned by the service. */
const char *alloc_service_id(const alloc_service *svc);

/* Owner thread, after the loop stopped: see the shutdown order above. close also
 * stops the registry worker (queued writes are cancelled; one in flight finishes within
 * its deadline); drain runs their results. */
void alloc_service_close(alloc_service *svc);
void alloc_service_drain(alloc_service *svc);

/* NULL is fine. */
void alloc_service_free(alloc_service *svc);
