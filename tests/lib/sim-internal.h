/* Private to the simulator (sim.c, sim-ledger.c): the ledger's entry points. Every
 * function accepts a NULL ledger (no-op) and copies what it keeps. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "meseta/resources.h"
#include "meseta/v1/allocator.pb-c.h"

#include "sim.h"

void sim_ledger_agent_total(ms_sim_ledger *l, const char *agent_id, const ms_resources *total);
/* A task starts (start) or ends on the agent. */
void sim_ledger_task(ms_sim_ledger *l, const char *agent_id, const Meseta__V1__Resource *const *r, size_t n,
                     bool start);
void sim_ledger_offer(ms_sim_ledger *l, const void *owner, const Meseta__V1__Offer *o);
/* The owner's offer is used, declined or rescinded; offer_id NULL: all of the owner's. */
void sim_ledger_offer_gone(ms_sim_ledger *l, const void *owner, const char *offer_id);

/* sim.c: what the agent and framework halves share. */
void sim_free_msg(void *m);
/* The first target and the others, as one owned array of n owned strings. */
char **sim_targets_of(const char *target, const char *const *more, size_t *n);
/* Sleeps ms unless *stop is raised (under mu): false if it was. */
bool sim_nap(pthread_mutex_t *mu, const bool *stop, int64_t ms);
