/* Private to services/allocator/alloc-*.c: the model's structs and the helpers its
 * files share. Entities live in arrays indexed by dense ids; a removed agent,
 * framework or offer leaves a dead slot that the next add reuses. Roles are never
 * removed (an idle role costs a few hundred bytes and no cycle time: it leaves the
 * sorter levels while nobody in it wants offers).
 *
 * Ownership: the model owns every struct, string and set below. */
#pragma once

#include "alloc-map.h"
#include "alloc-model.h"
#include "alloc-sorter.h"

#define ALLOC_ROOT 0u /* role 0: the tree's root, no name, no frameworks */

typedef struct alloc_use {
  uint32_t fw, role;
  ms_resources *res;
} alloc_use;

typedef struct alloc_filter {
  uint32_t fw, role;
  uint64_t gen; /* the membership's generation when made: a revive makes it stale */
  int64_t expires_ms;
  ms_resources *refused;
} alloc_filter;

typedef struct alloc_agent {
  char *id, *hostname, *region, *zone;
  alloc_attribute *attrs; /* strings owned */
  uint32_t nattrs;
  bool live, remote, has_reserved;
  bool changed; /* in the model's changed_agents since the last take */
  alloc_agent_state state;
  int64_t unavail_start_ms, unavail_duration_ms;
  ms_resources *total, *available, *offered;
  alloc_use *uses;
  uint32_t nuses, capuses;
  alloc_filter *filters;
  uint32_t nfilters, capfilters;
} alloc_agent;

/* A framework in one of its roles. */
typedef struct alloc_fwrole {
  uint32_t role;
  bool subscribed, suppressed;
  bool in_level; /* in the role's framework level: subscribed, unsuppressed, framework active */
  bool has_min;
  uint64_t gen;
  double key;
  ms_quantities alloc_q; /* offered + used */
  alloc_minalloc min;
} alloc_fwrole;

typedef struct alloc_framework {
  char *id;
  bool live, active;
  uint32_t caps;
  double failover_timeout_s;
  uint32_t noffers; /* outstanding */
  /* noffers at the model's max_offers, or silent without offers while the silent slots
   * are full: out of every level until that changes */
  bool capped;
  /* Offers it let expire (one per expiry sweep) since it last answered anything: > 0
   * ranks it last; while held (until held_until_ms) it is out of every level. */
  uint32_t expiries;
  bool held;
  /* Answered anything since it subscribed or its last expired offer; if not, it is
   * silent: it holds offers only in one of the model's max_silent slots. */
  bool answered;
  bool silent_slot; /* silent and holding offers: counted in silent_holding */
  int64_t held_until_ms, last_expiry_ms;
  alloc_fwrole *roles;
  uint32_t nroles, caproles;
} alloc_framework;

typedef struct alloc_role {
  char *name; /* "" for the root */
  uint32_t parent;
  double weight;
  double key;      /* its slot in the parent's level (subtree share / weight) */
  double self_key; /* its self slot in its own level (own frameworks' share / weight) */
  double s1_key;   /* its slot in the cycle's quota level */
  bool in_parent, self_in, in_s1;
  /* Children (by role index) and a self slot (id == own index) for its own frameworks. */
  alloc_level children;
  alloc_level fws;                        /* ids: framework indices */
  uint32_t wanting, wanting_self;         /* memberships in a level: subtree, own */
  ms_quantities alloc_q;                  /* subtree, offered + used */
  ms_quantities self_alloc_q;             /* own frameworks only */
  ms_quantities reserved_q;               /* subtree: reserved on agents, allocated or not */
  ms_quantities alloc_unres_q;            /* subtree: unreserved allocated */
  bool has_guarantee, has_limit, bounded; /* bounded: it or an ancestor has a limit */
  bool changed;                           /* in the model's changed_roles since the last take */
  uint32_t sat_wanting;                   /* > 0: out of this cycle's walk at its limits (its wanting_self) */
  ms_quantities guarantee;
  ms_quantity *limits; /* sorted by name; value may be 0 */
  uint32_t nlimits;
} alloc_role;

typedef struct alloc_offer {
  char *id;
  bool live;
  uint32_t fw, agent, role;
  ms_resources *res;
  int64_t created_ms;
} alloc_offer;

typedef struct alloc_freelist {
  uint32_t *v;
  uint32_t n, cap;
} alloc_freelist;

typedef struct alloc_touch {
  uint32_t fw, role;
} alloc_touch;

struct alloc_model {
  alloc_sorter_kind role_sorter, fw_sorter;
  alloc_names excluded;
  alloc_minalloc min_global;
  char *local_region;
  int64_t offer_timeout_ms;
  uint32_t max_offers; /* per framework; 0: no bound */
  uint32_t max_silent; /* silent frameworks holding offers at once; 0: no bound */
  uint32_t silent_holding;
  bool cap_dirty; /* a framework's cap changed during the cycle: levels synced after it */
  alloc_rescind_fn on_rescind;
  void *rescind_ctx;
  void (*on_change)(void *ctx);
  void *change_ctx;
  alloc_rng rng;
  bool trigger;

  alloc_agent *agents;
  uint32_t nagents, capagents, live_agents;
  alloc_map agent_ids;
  alloc_freelist free_agents, free_fws, free_offers;
  alloc_framework *fws;
  uint32_t nfws, capfws;
  alloc_map fw_ids;
  alloc_role *roles;
  uint32_t nroles, caproles;
  alloc_map role_ids;
  alloc_offer *offers;
  uint32_t noffers, capoffers, live_offers;
  alloc_map offer_ids;
  uint64_t offer_seq, gen_seq;

  ms_quantities total_q; /* every agent's total */
  bool totals_dirty;     /* keys are stale: re-sort every level before using them */
  uint32_t *quota_roles; /* roles with a guarantee or a limit */
  uint32_t nquota, capquota;

  alloc_touch *touched; /* allocations changed; levels repositioned at flush */
  uint32_t ntouched, captouched;
  bool in_cycle;
  alloc_level s1; /* the cycle's roles below their guarantee */

  ms_quantities tmp_q, tmp_qu; /* scratch for accounting */

  /* Agents whose resources (total, available, offered) and roles whose allocation or
   * reservations changed, each once, for alloc_model_take_changes. */
  uint32_t *changed_agents, nchanged_agents, capchanged_agents;
  uint32_t *changed_roles, nchanged_roles, capchanged_roles;
};

/* ---- alloc-model.c ---- */
uint32_t alloc_role_get(alloc_model *m, const char *name, bool create, ms_error **err);
alloc_fwrole *alloc_fwrole_find(alloc_framework *f, uint32_t role);
/* Remember that an agent's resources or a role's allocation changed (a flag test; the
 * first time until the next take, a push). */
void alloc_agent_record(alloc_model *m, uint32_t agent);
void alloc_role_record(alloc_model *m, uint32_t role);
static inline void alloc_agent_changed(alloc_model *m, uint32_t agent) {
  if (!m->agents[agent].changed)
    alloc_agent_record(m, agent);
}
static inline void alloc_role_changed(alloc_model *m, uint32_t role) {
  if (!m->roles[role].changed && role != ALLOC_ROOT)
    alloc_role_record(m, role);
}
/* Adds (sign 1) or removes (sign -1) res as allocated to (fw, role): framework, role
 * chain, unreserved consumption. Records the touch. */
void alloc_account(alloc_model *m, uint32_t fw, uint32_t role, const ms_resources *res, int sign);
/* Repositions every touched client in its levels (skipped while keys are stale). */
void alloc_flush(alloc_model *m);
/* Recomputes the framework's keys (its expiries went to 0) and repositions it. */
void alloc_fw_rekey(alloc_model *m, uint32_t fw);
/* Recomputes every key and re-sorts every level. */
void alloc_resort(alloc_model *m);
double alloc_role_key(const alloc_model *m, const alloc_role *r);
/* consumption = reserved + unreserved allocated, sub-roles included. */
void alloc_role_consumption(const alloc_role *r, ms_quantities *ret);
/* Scalar sums of the unreserved (reserved == false) or reserved entries of set. */
void alloc_scalars(const ms_resources *set, bool reserved, ms_quantities *ret);
/* Swaps in a new total (new_total gets the old one), keeping the cluster total and the
 * roles' reservations right. */
void alloc_agent_retotal(alloc_model *m, alloc_agent *a, ms_resources *new_total);
/* Adds or removes the framework's membership in the role's level as its state says. */
void alloc_fwrole_sync(alloc_model *m, uint32_t fw, alloc_fwrole *fr);
/* Rescinds the offers matching every index that is not ALLOC_NONE. */
void alloc_rescind_where(alloc_model *m, uint32_t agent, uint32_t fw, uint32_t role);
/* Adds delta to the frameworks wanting offers directly in role, moving its self slot
 * and its subtree's slots in and out of the levels as counts cross zero. */
void alloc_role_wanting(alloc_model *m, uint32_t role, int delta);
/* Repositions a role after its weight changed. */
void alloc_role_rekey(alloc_model *m, uint32_t role);
void alloc_fwrole_release(alloc_fwrole *fr);
/* Adds res to what (fw, role) uses on agent a, and accounts it. */
void alloc_use_add(alloc_model *m, alloc_agent *a, uint32_t fw, uint32_t role, const ms_resources *res);
bool alloc_agent_in_maintenance(const alloc_agent *a, int64_t now_ms);

void alloc_freelist_push(alloc_freelist *l, uint32_t i);
/* A slot index: a freed one, or *n (which grows *cap and the array *arr of elem bytes). */
uint32_t alloc_slot_take(alloc_freelist *l, void **arr, uint32_t *n, uint32_t *cap, size_t elem);

/* ---- alloc-offers.c ---- */
/* Removes an offer: its resources return to the agent's available. */
void alloc_offer_drop(alloc_model *m, uint32_t o, bool rescind);
uint32_t alloc_offer_new(alloc_model *m, uint32_t fw, uint32_t agent, uint32_t role, ms_resources *res,
                         int64_t now_ms);
void alloc_offer_view_of(const alloc_model *m, uint32_t o, alloc_offer_view *ret);
/* A framework's outstanding offers or its answered flag changed: it leaves or rejoins
 * the levels at its cap or for want of a silent slot (after the cycle when in one); when
 * the silent slots fill or free up, so do all silent frameworks without offers. */
void alloc_fw_offers_changed(alloc_model *m, uint32_t fw);
/* The framework answered (accept, decline, suppress, revive, re-subscribe): its run of
 * expired offers ends and a hold is lifted. */
void alloc_fw_answered(alloc_model *m, uint32_t fw);
/* Whether a live filter holds cand back from (fw, role) on agent a; drops dead ones. */
bool alloc_filtered(alloc_model *m, alloc_agent *a, uint32_t fw, uint32_t role, const ms_resources *cand,
                    int64_t now_ms);
