/* The allocator's live model of the cluster: agents, frameworks, the role tree with
 * weights and quota, what is allocated (tasks and executors) and offered, filters and
 * suppression. The service calls these functions from its one owner thread as events
 * arrive; alloc-cycle.h turns the model into offers.
 *
 * Ids are strings at the edge; inside, every entity is a dense index found through a
 * hash map. Time is always passed in (now_ms, any monotonic origin) and never read
 * here, so a test replays exactly.
 *
 * Accounting follows Mesos' allocator: offered resources count as allocated to the
 * framework and role they were offered to. A role's quota consumption is what is
 * reserved to it or its sub-roles (allocated or not) plus the unreserved resources
 * allocated to it or its sub-roles, so reserving cannot escape a limit.
 *
 * Errors: MS_NOT_FOUND for an unknown agent, framework or offer (naming it),
 * MS_ALREADY_EXISTS for a duplicate id, MS_INVALID_ARGUMENT for malformed input,
 * MS_FAILED_PRECONDITION when the model lacks what the call needs (resources not
 * available or not in the offer), MS_RESOURCE_EXHAUSTED for a quota limit.
 * A failing call changes nothing.
 *
 * Ownership: the model copies everything it is given (specs, resources, strings);
 * callers keep theirs. Pointers the model hands out (views, resources) belong to it
 * and stay valid until the next call that mutates the model. Not thread-safe. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "meseta/error.h"
#include "meseta/resources-ops.h"
#include "meseta/resources.h"

#include "alloc-sorter.h"

typedef struct alloc_model alloc_model;

/* An outstanding offer, borrowed from the model. */
typedef struct alloc_offer_view {
  const char *id, *framework_id, *agent_id, *role;
  const ms_resources *resources;
  int64_t created_ms;
} alloc_offer_view;

typedef void (*alloc_rescind_fn)(void *ctx, const alloc_offer_view *offer);

#define ALLOC_DEFAULT_REFUSE_MS 5000LL
#define ALLOC_MAX_REFUSE_MS (365LL * 24 * 3600 * 1000)
/* A framework that lets offers expire is held back from every agent: 5 s after the
 * first expiry, doubling with each further one in a row, at most 5 min; any answer
 * ends the run. */
#define ALLOC_EXPIRY_HOLD_MS 5000LL
#define ALLOC_EXPIRY_HOLD_MAX_MS (300LL * 1000)
/* Mesos' default minimum: an offer must hold 0.01 cpus or 32 MB of memory. */
#define ALLOC_DEFAULT_MIN_ALLOCATABLE "cpus:0.01|mem:32"

typedef struct alloc_config {
  alloc_sorter_kind role_sorter, framework_sorter;
  const char *fair_share_excluded; /* "gpus,fpgas": names DRF leaves out; NULL: none */
  const char *min_allocatable;     /* "cpus:0.01,mem:32|disk:64"; NULL: the default above */
  const char *local_region;        /* NULL: every agent counts as local */
  int64_t offer_timeout_ms;        /* 0: offers never time out */
  /* A framework holding this many outstanding offers gets no more until it answers
   * (accepts, declines) or they are rescinded or expire. 0: no bound. */
  uint32_t max_offers_per_framework;
  /* At most this many silent frameworks (no answer since they subscribed or since an
   * offer of theirs expired) hold offers at once; other silent ones wait their turn,
   * which ends at their first answer or when their offers go. 0: no bound. */
  uint32_t max_silent_frameworks;
  uint64_t seed;               /* the random sorter's generator */
  alloc_rescind_fn on_rescind; /* called for each offer the model takes back; may be NULL */
  void *rescind_ctx;
  /* Called when the first change since the last alloc_model_take_changes is recorded
   * (so the caller can schedule the take); must not call into the model. May be NULL. */
  void (*on_change)(void *ctx);
  void *change_ctx;
} alloc_config;

/* Reads cfg (copies its strings). Fails on a malformed sorter or minimum. */
int alloc_model_new(const alloc_config *cfg, alloc_model **ret, ms_error **err);
void alloc_model_free(alloc_model *m);

/* ---- agents ---- */

typedef enum alloc_agent_state {
  ALLOC_AGENT_ACTIVE = 0,
  ALLOC_AGENT_DEACTIVATED = 1,
  ALLOC_AGENT_DRAINING = 2,
} alloc_agent_state;

typedef struct alloc_attribute {
  const char *name, *value;
} alloc_attribute;

typedef struct alloc_agent_spec {
  const char *id, *hostname;
  const ms_resources *total;
  const alloc_attribute *attributes;
  uint32_t nattributes;
  const char *region, *zone; /* fault domain; optional */
  alloc_agent_state state;
  /* Maintenance: no new offers while start <= now < start + duration; duration 0 means
   * no window, a negative duration an open-ended one. */
  int64_t unavailable_start_ms, unavailable_duration_ms;
} alloc_agent_spec;

int alloc_model_add_agent(alloc_model *m, const alloc_agent_spec *spec, ms_error **err);
/* Replaces everything but the id. Outstanding offers on the agent are rescinded; the
 * new total must still hold what tasks use there. */
int alloc_model_update_agent(alloc_model *m, const alloc_agent_spec *spec, ms_error **err);
/* Rescinds its offers and forgets what ran there. */
int alloc_model_remove_agent(alloc_model *m, const char *id, ms_error **err);

/* ---- frameworks ---- */

enum {
  ALLOC_CAP_REGION_AWARE = 1u << 0,
  ALLOC_CAP_RESERVATION_REFINEMENT = 1u << 1,
  ALLOC_CAP_MULTI_ROLE = 1u << 2,
};

/* A framework's own minimum for one of its roles; "" means no minimum at all. */
typedef struct alloc_min_override {
  const char *role, *spec;
} alloc_min_override;

typedef struct alloc_framework_spec {
  const char *id;
  const char *const *roles;
  uint32_t nroles;
  uint32_t capabilities; /* ALLOC_CAP_* */
  const alloc_min_override *min_allocatable;
  uint32_t nmin_allocatable;
  const char *const *suppressed_roles; /* suppressed from the start */
  uint32_t nsuppressed;
  double failover_timeout_s; /* kept for the service's failover timer */
} alloc_framework_spec;

int alloc_model_add_framework(alloc_model *m, const alloc_framework_spec *spec, ms_error **err);
/* Roles added, roles left (its offers in them rescinded; what it runs there stays
 * accounted until recovered), capabilities, minimums and suppression replaced. */
int alloc_model_update_framework(alloc_model *m, const alloc_framework_spec *spec, ms_error **err);
/* Rescinds its offers and recovers everything it had. */
int alloc_model_remove_framework(alloc_model *m, const char *id, ms_error **err);
/* A disconnected framework gets no offers (its outstanding ones are rescinded). */
int alloc_model_set_framework_active(alloc_model *m, const char *id, bool active, ms_error **err);

/* ---- roles ---- */

/* weight > 0 (default 1): a role with weight 2 is entitled to twice the share. */
int alloc_model_set_weight(alloc_model *m, const char *role, double weight, ms_error **err);
/* Guarantees and limits as scalar quantities (NULL: none). A name absent from limits
 * is unlimited; a guarantee may not exceed its limit. */
int alloc_model_set_quota(alloc_model *m, const char *role, const ms_quantities *guarantees,
                          const ms_quantities *limits, ms_error **err);

/* ---- allocations ---- */

/* A framework's tasks or executors use `resources` on the agent, in `role` (tasks the
 * agent reports on re-registering, or launched outside an offer). They must be
 * available there. */
int alloc_model_allocate(alloc_model *m, const char *framework_id, const char *agent_id, const char *role,
                         const ms_resources *resources, ms_error **err);
/* Tasks ended: their resources are free again. */
int alloc_model_recover(alloc_model *m, const char *framework_id, const char *agent_id, const char *role,
                        const ms_resources *resources, ms_error **err);

/* ---- offers and filters ---- */

/* role NULL: every role of the framework. Revive also clears its filters. Both lift a
 * hold for expired offers (see alloc_model_expire_offers). */
int alloc_model_suppress(alloc_model *m, const char *framework_id, const char *role, ms_error **err);
int alloc_model_revive(alloc_model *m, const char *framework_id, const char *role, ms_error **err);
/* Whether the framework has suppressed offers for `role` (false for an unknown pair). */
bool alloc_model_suppressed(const alloc_model *m, const char *framework_id, const char *role);

/* The framework refuses the offer: its resources return, and the agent's resources are
 * filtered for that framework and role for refuse_ms (negative: the default 5 s;
 * capped at 365 days; 0: no filter) unless they grow. */
int alloc_model_decline(alloc_model *m, const char *framework_id, const char *offer_id, int64_t refuse_ms,
                        int64_t now_ms, ms_error **err);

typedef enum alloc_op_kind {
  ALLOC_OP_LAUNCH = 0,    /* a task or executor uses `launch` out of the offer */
  ALLOC_OP_RESOURCES = 1, /* reserve, unreserve, volumes, disks: `op` */
} alloc_op_kind;

typedef struct alloc_accept_op {
  alloc_op_kind kind;
  const ms_resources *launch;
  const ms_operation *op;
} alloc_accept_op;

/* Accepts offers on one agent: the operations run in order against what the offers
 * hold (a RESERVE or UNRESERVE must name the offer's role). All succeed or nothing
 * changes. Launched resources become the framework's; the rest returns, filtered for
 * refuse_ms as in decline. */
int alloc_model_accept(alloc_model *m, const char *framework_id, const char *const *offer_ids,
                       uint32_t noffers, const alloc_accept_op *ops, uint32_t nops, int64_t refuse_ms,
                       int64_t now_ms, ms_error **err);

/* Takes an offer back (on_rescind is called). */
int alloc_model_rescind(alloc_model *m, const char *offer_id, ms_error **err);
/* Rescinds offers older than the configured timeout; returns how many. A framework
 * whose offer expires is held back from every agent (out of the sorters) for
 * ALLOC_EXPIRY_HOLD_MS, doubling with each sweep in which another of its offers
 * expires, capped at ALLOC_EXPIRY_HOLD_MAX_MS, so the resources go to frameworks that
 * answer. Any answer (accept, decline, even of an offer already gone; suppress; revive;
 * re-subscribe) resets the run and lifts the hold. Holds that are over end here too:
 * call it every second or so (the cycle does not end them). */
uint32_t alloc_model_expire_offers(alloc_model *m, int64_t now_ms);

/* An operator's RESERVE / UNRESERVE / CREATE / DESTROY on an agent's unallocated
 * resources. A RESERVE past a quota limit of the role or an ancestor fails with
 * MS_RESOURCE_EXHAUSTED. */
int alloc_model_apply_operator(alloc_model *m, const char *agent_id, const ms_operation *op, ms_error **err);

/* ---- reading the model ---- */

/* Agents whose total, available or offered resources changed, and roles whose
 * allocation (offered + used) or reservations changed (the role itself, not its
 * ancestors), since the last call: fn gets each id once (borrowed for the call).
 * Agents removed since are left out. Clears the record. */
typedef void (*alloc_changed_fn)(void *ctx, const char *id);
void alloc_model_take_changes(alloc_model *m, alloc_changed_fn agent_fn, alloc_changed_fn role_fn, void *ctx);

/* Whether something happened that deserves a cycle before the next tick (an agent
 * added, resources freed, a revive); reading it clears it. */
bool alloc_model_take_trigger(alloc_model *m);

int alloc_model_offer(const alloc_model *m, const char *offer_id, alloc_offer_view *ret, ms_error **err);
uint32_t alloc_model_offer_count(const alloc_model *m);
/* Calls fn for every outstanding offer. */
void alloc_model_each_offer(const alloc_model *m, void (*fn)(void *ctx, const alloc_offer_view *o),
                            void *ctx);

typedef struct alloc_agent_view {
  const ms_resources *total, *available, *offered;
  alloc_agent_state state;
  const char *region, *zone, *hostname;
} alloc_agent_view;
int alloc_model_agent(const alloc_model *m, const char *agent_id, alloc_agent_view *ret, ms_error **err);

/* A role's quota consumption (reserved + unreserved allocated, sub-roles included) and
 * allocation (offered + used, sub-roles included), copied into ret. */
int alloc_model_role_consumption(const alloc_model *m, const char *role, ms_quantities *ret, ms_error **err);
int alloc_model_role_allocation(const alloc_model *m, const char *role, ms_quantities *ret, ms_error **err);
/* The scalar sums of every agent's total (the cluster's capacity), copied into ret. */
void alloc_model_total(const alloc_model *m, ms_quantities *ret);
/* A framework's allocation in one role. */
int alloc_model_framework_allocation(const alloc_model *m, const char *framework_id, const char *role,
                                     ms_quantities *ret, ms_error **err);

/* ---- minimum allocatable sizes ---- */

/* An OR of ANDs: "cpus:0.01,mem:32|disk:64" is satisfied by (>= 0.01 cpus and >= 32
 * mem) or (>= 64 disk). An empty spec accepts anything. */
typedef struct alloc_minalloc {
  ms_quantity *terms;
  uint32_t *alt_end; /* alternative i is terms[alt_end[i-1] .. alt_end[i]) */
  uint32_t nterms, nalts;
} alloc_minalloc;

int alloc_minalloc_parse(const char *text, alloc_minalloc *ret, ms_error **err);
void alloc_minalloc_release(alloc_minalloc *m);
bool alloc_minalloc_ok(const alloc_minalloc *m, const ms_resources *set);
