/* Simulated agents and frameworks (see sim.h): what both halves share. */
/* Simulated agents and frameworks: see sim.h. */
#include "sim.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "meseta/alloc.h"
#include "meseta/pb.h"
#include "meseta/resources-io.h"
#include "meseta/rpc.h"
#include "meseta/time.h"
#include "meseta/v1/agent_link.pb-c.h"

#include "sim-internal.h"

#define CONNECT "/meseta.v1.AgentLink/Connect"
#define SUBSCRIBE "/meseta.v1.Allocator/SubscribeFramework"
#define SCHED_CALL "/meseta.v1.Allocator/SchedulerCall"
#define START_TIMEOUT_MS 10000

bool ms_sim_wait(bool (*pred)(void *ctx), void *ctx, int64_t timeout_ms) {
  int64_t end = ms_time_mono_ms() + timeout_ms;
  while (!pred(ctx)) {
    if (ms_time_mono_ms() >= end)
      return false;
    ms_time_sleep_ms(10);
  }
  return true;
}

uint64_t ms_sim_framework_stat(ms_sim_framework *f, size_t offset) {
  ms_sim_framework_stats st;
  ms_sim_framework_stats_get(f, &st);
  return *(uint64_t *)((char *)&st + offset);
}

uint64_t ms_sim_agent_stat(ms_sim_agent *a, size_t offset) {
  ms_sim_agent_stats st;
  ms_sim_agent_stats_get(a, &st);
  return *(uint64_t *)((char *)&st + offset);
}

typedef struct stat_wait {
  void *who;
  size_t offset;
  uint64_t n;
} stat_wait;

static bool fw_reached(void *ctx) {
  stat_wait *w = ctx;
  return ms_sim_framework_stat(w->who, w->offset) >= w->n;
}

static bool agent_reached(void *ctx) {
  stat_wait *w = ctx;
  return ms_sim_agent_stat(w->who, w->offset) >= w->n;
}

bool ms_sim_framework_wait_stat(ms_sim_framework *f, size_t offset, uint64_t n, int64_t timeout_ms) {
  stat_wait w = {f, offset, n};
  return ms_sim_wait(fw_reached, &w, timeout_ms);
}

bool ms_sim_agent_wait_stat(ms_sim_agent *a, size_t offset, uint64_t n, int64_t timeout_ms) {
  stat_wait w = {a, offset, n};
  return ms_sim_wait(agent_reached, &w, timeout_ms);
}

typedef struct offer_wait {
  ms_sim_framework *f;
  Meseta__V1__Offer *offer;
} offer_wait;

static bool took_offer(void *ctx) {
  offer_wait *w = ctx;
  return (w->offer = ms_sim_framework_take_offer(w->f)) != NULL;
}

Meseta__V1__Offer *ms_sim_framework_wait_offer(ms_sim_framework *f, int64_t timeout_ms) {
  offer_wait w = {f, NULL};
  ms_sim_wait(took_offer, &w, timeout_ms);
  return w.offer;
}

void sim_free_msg(void *m) {
  if (m)
    protobuf_c_message_free_unpacked(m, NULL);
}

char **sim_targets_of(const char *target, const char *const *more, size_t *n) {
  size_t k = 1;
  for (size_t i = 0; more && more[i]; i++)
    k++;
  char **v = ms_xcalloc(k, sizeof(*v));
  v[0] = ms_xstrdup(target);
  for (size_t i = 1; i < k; i++)
    v[i] = ms_xstrdup(more[i - 1]);
  *n = k;
  return v;
}

bool sim_nap(pthread_mutex_t *mu, const bool *stop, int64_t ms) {
  for (int64_t t = 0; t < ms; t += 10) {
    pthread_mutex_lock(mu);
    bool s = *stop;
    pthread_mutex_unlock(mu);
    if (s)
      return false;
    ms_time_sleep_ms(10);
  }
  return true;
}
