/* One allocation cycle: the model's available resources become offers.
 *
 * For each agent that can take new work (active, not draining, outside a maintenance
 * window) and has something available:
 *   1. Quota stage: roles below their guarantee, in sorter order, and each role's
 *      frameworks in sorter order, get the agent's resources they may use (reserved
 *      to them or an ancestor, or unreserved), the unreserved scalars cut to what is
 *      still missing from the guarantee and to every limit up the tree.
 *   2. Fair-share stage: the role tree in sorter order (a role's own frameworks are a
 *      slot beside its child roles), then the frameworks; unreserved scalars cut to
 *      the limits and so that enough unreserved, unallocated resources stay for every
 *      guarantee not yet met (the headroom), except what counts toward the role's own
 *      unmet guarantee.
 * Skipped: suppressed roles, inactive frameworks, offers a live filter holds back,
 * offers below the minimum allocatable size (the framework's own for that role, else
 * the global one), and agents outside the local region for frameworks that are not
 * region-aware. Allocations to one framework and role on one agent make one offer.
 * The sorters' order holds for a whole agent; shares are brought up to date between
 * agents.
 *
 * Ownership: the list holds views borrowed from the model (valid until the next call
 * that mutates it); alloc_offer_list_release frees the list's array only. */
#pragma once

#include <stdint.h>

#include "meseta/error.h"

#include "alloc-model.h"

typedef struct alloc_offer_list {
  alloc_offer_view *v;
  uint32_t n, cap;
} alloc_offer_list;

void alloc_offer_list_release(alloc_offer_list *l);

typedef struct alloc_cycle_stats {
  uint32_t agents_visited; /* agents with something available that could take work */
  uint32_t offers;         /* offers made (both stages) */
  uint32_t quota_offers;   /* of which in the quota stage */
  uint32_t filtered;       /* candidates a filter held back */
} alloc_cycle_stats;

/* Runs one cycle at now_ms, appending the offers it makes to *ret (which may hold
 * earlier entries). stats may be NULL. Fails only on an internal inconsistency. */
int alloc_cycle_run(alloc_model *m, int64_t now_ms, alloc_offer_list *ret, alloc_cycle_stats *stats,
                    ms_error **err);
