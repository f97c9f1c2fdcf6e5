/* The registry client (alloc-svc-registry.c): what other modules may call. Owner thread
 * only; memory as each comment says. */
#pragma once

#include "alloc-svc-core.h"

/* ---- the registry (alloc-svc-registry.c) ----
 *
 * One worker thread (meseta/workq.h) makes every registry call, in the order they were
 * asked for, each with the --registry-timeout deadline; the owner thread never waits
 * on the network. Results come back to the owner thread through ms_loop_post. Agent
 * state changes read the record and write it back with Expect revision (the worker's
 * compare-and-swap), so the owner never has to know revisions. */

bool svc_durable(const alloc_service *s);
int svc_reg_open(alloc_service *s, ms_error **err); /* no-op without cfg.registry */
/* Cancels what is queued and joins the worker (results are posted, not run). */
void svc_reg_stop(alloc_service *s);

/* A write's outcome on the owner thread; err NULL on success. `current`: the same
 * term and not closing (else only clean up ctx). */
typedef void (*svc_reg_done)(alloc_service *s, void *ctx, const ms_error *err, bool current);

/* Creates the agent's ADMITTED record (Expect absent). info is copied, its id set. */
void svc_reg_admit(alloc_service *s, const Meseta__V1__AgentInfo *info, svc_reg_done done, void *ctx);
/* Moves an agent's record to `state` (read, then write at the read revision; created
 * when missing). Refused (FAILED_PRECONDITION) for a GONE agent. info may be NULL
 * (the stored one is kept). done may be NULL. */
void svc_reg_agent_state(alloc_service *s, const char *id, const Meseta__V1__AgentInfo *info,
                         Meseta__V1__AgentRecord__State state, svc_reg_done done, void *ctx);
/* Creates a framework's record (Expect absent; one already there is fine). */
void svc_reg_add_framework(alloc_service *s, const Meseta__V1__FrameworkInfo *info, svc_reg_done done,
                           void *ctx);
/* Marks a framework's record completed (completed_time). done may be NULL. */
void svc_reg_complete_framework(alloc_service *s, const Meseta__V1__FrameworkInfo *info, svc_reg_done done,
                                void *ctx);
/* Replaces the info and the suppressed roles in a framework's record (read, then write
 * at the read revision; created when missing). Copies what it is given. done may be NULL. */
void svc_reg_update_framework(alloc_service *s, const Meseta__V1__FrameworkInfo *info,
                              const char *const *suppressed, size_t nsuppressed, svc_reg_done done,
                              void *ctx);
/* The owner's view of an agent's record: STATE_UNKNOWN when there is none. */
Meseta__V1__AgentRecord__State svc_agent_rec_state(alloc_service *s, const char *id);
void svc_agent_rec_set(alloc_service *s, const char *id, Meseta__V1__AgentRecord__State state);
void svc_agent_recs_clear(alloc_service *s);

/* Every record of the kinds a leader loads (agents, frameworks, weights, quota), as
 * the pages the registry answered. */
typedef struct svc_reg_loaded {
  Meseta__V1__ListResponse **pages;
  size_t npages;
} svc_reg_loaded;
/* Lists them on the worker; the result goes to svc_recovery_loaded. */
void svc_reg_load(alloc_service *s);

/* ---- operator writes (alloc-svc-registry.c) ---- */

/* Applies every write or none (the registry's Batch). Takes b. */
void svc_reg_batch(alloc_service *s, Meseta__V1__BatchRequest *b, svc_reg_done done, void *ctx);

typedef enum svc_agent_patch {
  SVC_PATCH_DRAIN,      /* drain_state DRAINING, drain_config set */
  SVC_PATCH_DEACTIVATE, /* deactivated */
  SVC_PATCH_REACTIVATE, /* neither deactivated nor draining */
  SVC_PATCH_GONE,       /* GONE, gone_time */
} svc_agent_patch;
/* Reads the agent's record and writes it back changed (at the read revision). NOT_FOUND
 * without a record; FAILED_PRECONDITION for a GONE agent (except GONE again). cfg may
 * be NULL; it is copied. */
void svc_reg_agent_patch(alloc_service *s, const char *id, svc_agent_patch what,
                         const Meseta__V1__DrainConfig *cfg, svc_reg_done done, void *ctx);
/* The owner's record of an agent, created (STATE_UNKNOWN) when missing. */
svc_agent_rec *svc_agent_rec_get(alloc_service *s, const char *id);
