/* The simulator's ledger (sim.h): per agent, its total, what its tasks use and the
 * offers frameworks hold on it; every increase is checked against the total. One
 * mutex; agents and frameworks call in from their own threads. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/resources-io.h"

#include "sim-internal.h"

typedef struct led_agent {
  char *id;
  ms_quantities total, running;
} led_agent;

typedef struct led_offer {
  char *id, *agent_id;
  const void *owner;
  ms_quantities q;
} led_offer;

struct ms_sim_ledger {
  pthread_mutex_t mu;
  led_agent *agents;
  size_t nagents;
  led_offer *offers;
  size_t noffers;
  uint64_t violations, checks;
};

ms_sim_ledger *ms_sim_ledger_new(void) {
  ms_sim_ledger *l = ms_xcalloc(1, sizeof(*l));
  pthread_mutex_init(&l->mu, NULL);
  return l;
}

void ms_sim_ledger_free(ms_sim_ledger *l) {
  if (!l)
    return;
  for (size_t i = 0; i < l->nagents; i++) {
    free(l->agents[i].id);
    ms_quantities_release(&l->agents[i].total);
    ms_quantities_release(&l->agents[i].running);
  }
  for (size_t i = 0; i < l->noffers; i++) {
    free(l->offers[i].id);
    free(l->offers[i].agent_id);
    ms_quantities_release(&l->offers[i].q);
  }
  free(l->agents);
  free(l->offers);
  pthread_mutex_destroy(&l->mu);
  free(l);
}

uint64_t ms_sim_ledger_violations(ms_sim_ledger *l, uint64_t *checks) {
  pthread_mutex_lock(&l->mu);
  uint64_t v = l->violations;
  if (checks)
    *checks = l->checks;
  pthread_mutex_unlock(&l->mu);
  return v;
}

static led_agent *agent(ms_sim_ledger *l, const char *id) {
  for (size_t i = 0; i < l->nagents; i++)
    if (strcmp(l->agents[i].id, id) == 0)
      return &l->agents[i];
  l->agents = ms_xrealloc(l->agents, (l->nagents + 1) * sizeof(*l->agents));
  led_agent *a = &l->agents[l->nagents++];
  memset(a, 0, sizeof(*a));
  a->id = ms_xstrdup(id);
  return a;
}

static void check(ms_sim_ledger *l, led_agent *a) {
  if (!a->total.n)
    return; /* not known yet */
  ms_quantities used = {0};
  ms_quantities_add(&used, &a->running);
  for (size_t i = 0; i < l->noffers; i++)
    if (strcmp(l->offers[i].agent_id, a->id) == 0)
      ms_quantities_add(&used, &l->offers[i].q);
  l->checks++;
  if (!ms_quantities_contains(&a->total, &used)) {
    l->violations++;
    fprintf(stderr, "sim ledger: agent `%s`: held offers + running tasks exceed its total\n", a->id);
  }
  ms_quantities_release(&used);
}

static void quantities(const Meseta__V1__Resource *const *r, size_t n, ms_quantities *q) {
  ms_resources *set = NULL;
  if (ms_resources_from_proto((Meseta__V1__Resource **)r, n, &set, NULL) == 0)
    ms_quantities_of(q, set);
  ms_resources_free(set);
}

void sim_ledger_agent_total(ms_sim_ledger *l, const char *agent_id, const ms_resources *total) {
  if (!l)
    return;
  pthread_mutex_lock(&l->mu);
  ms_quantities_of(&agent(l, agent_id)->total, total);
  pthread_mutex_unlock(&l->mu);
}

void sim_ledger_task(ms_sim_ledger *l, const char *agent_id, const Meseta__V1__Resource *const *r, size_t n,
                     bool start) {
  if (!l || !agent_id)
    return;
  ms_quantities q = {0};
  quantities(r, n, &q);
  pthread_mutex_lock(&l->mu);
  led_agent *a = agent(l, agent_id);
  if (start) {
    ms_quantities_add(&a->running, &q);
    check(l, a);
  } else {
    ms_quantities_subtract(&a->running, &q);
  }
  pthread_mutex_unlock(&l->mu);
  ms_quantities_release(&q);
}

void sim_ledger_offer(ms_sim_ledger *l, const void *owner, const Meseta__V1__Offer *o) {
  if (!l)
    return;
  led_offer x = {ms_xstrdup(o->id->value), ms_xstrdup(o->agent_id->value), owner, {0}};
  quantities((const Meseta__V1__Resource *const *)o->resources, o->n_resources, &x.q);
  pthread_mutex_lock(&l->mu);
  l->offers = ms_xrealloc(l->offers, (l->noffers + 1) * sizeof(*l->offers));
  l->offers[l->noffers++] = x;
  check(l, agent(l, x.agent_id));
  pthread_mutex_unlock(&l->mu);
}

static void drop(ms_sim_ledger *l, size_t i) {
  free(l->offers[i].id);
  free(l->offers[i].agent_id);
  ms_quantities_release(&l->offers[i].q);
  l->offers[i] = l->offers[--l->noffers];
}

void sim_ledger_offer_gone(ms_sim_ledger *l, const void *owner, const char *offer_id) {
  if (!l)
    return;
  pthread_mutex_lock(&l->mu);
  for (size_t i = 0; i < l->noffers;)
    if (l->offers[i].owner == owner && (!offer_id || strcmp(l->offers[i].id, offer_id) == 0))
      drop(l, i);
    else
      i++;
  pthread_mutex_unlock(&l->mu);
}
