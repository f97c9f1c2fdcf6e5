/* The meseta.v1.Registry gRPC service: typed records in etcd, every write a
 * compare-and-swap, listings with pages, watches, and the allocator's leader.
 *
 * Handlers hand each request to a worker pool (etcd calls block); watch streams
 * run on the etcd client's watch threads. The service borrows the etcd client and
 * the server; free the service after the server has shut down and before the
 * client. */
#pragma once

#include <stdint.h>

#include "meseta/etcd.h"
#include "meseta/rpc.h"

typedef struct reg_config {
  const char *prefix;   /* key prefix, e.g. "/meseta" */
  const char *election; /* the allocator's election name */
  size_t workers;       /* threads for listings and watch streams */
  size_t committers;    /* threads committing grouped reads and writes */
  /* Retention (0: no limit). */
  int64_t max_gone_agents;
  int64_t gone_agent_ttl_ms;
  int64_t max_unreachable_agents;
  int64_t unreachable_agent_ttl_ms;
  int64_t max_completed_frameworks;
  int64_t max_message_bytes; /* the server's gRPC limit: pages and watch batches stay under it */
} reg_config;

typedef struct reg_service reg_service;

/* The config's strings are copied. */
reg_service *reg_service_new(const reg_config *cfg, ms_etcd *etcd, ms_error **err);
int reg_service_add(reg_service *svc, ms_rpc_server *srv, ms_error **err);
void reg_service_free(reg_service *svc);

/* One retention pass: prunes gone / unreachable agents and completed frameworks
 * past their count or age limits, oldest first, each delete a compare-and-swap.
 * Counts deleted records into *ret_pruned (may be NULL). */
int reg_retention_run(reg_service *svc, int64_t now_ms, size_t *ret_pruned, ms_error **err);

/* Whether etcd answers (a quick count-only read): 0 or UNAVAILABLE / DEADLINE_EXCEEDED. */
int reg_etcd_check(reg_service *svc, ms_error **err);

/* Internals shared by the service's files. */
const reg_config *reg_service_config(const reg_service *svc);
ms_etcd *reg_service_etcd(const reg_service *svc);
