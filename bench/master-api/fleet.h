/* A fleet of simulated agents in one process for benchmarks: thousands of
 * AgentLink.Connect streams on a few connections, driven by one thread over one gRPC
 * completion queue (ms_sim_agent's two threads and one channel per agent do not go
 * to 10,000).
 *
 * Each agent re-registers, as an agent does after an allocator failover, with an id
 * of its own and checkpointed RUNNING tasks: the allocator admits it (through the
 * registry when it has one) and charges the tasks to their frameworks, which must be
 * subscribed already. Afterwards the agent drains what the allocator sends (pings,
 * acknowledgements) without answering (the allocator has no ping timeout), and, when
 * told to, reports its "completed" tasks TASK_FINISHED (one update each, with a uuid,
 * not resent).
 *
 * Not thread-safe: one caller. Strings given are copied. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "meseta/error.h"

typedef struct bench_fleet bench_fleet;

typedef struct bench_fleet_options {
  const char *target;            /* the allocator leader */
  size_t agents;                 /* ids "<id_prefix>-<i>", hostnames "node-<i>" */
  const char *id_prefix;         /* NULL: "bench-agent" */
  size_t tasks_per_agent;        /* RUNNING tasks "t-<agent>-<k>" */
  size_t completed_per_agent;    /* more RUNNING tasks "c-<agent>-<k>", finished by bench_fleet_finish */
  const char *task_resources;    /* text form, one task's; the agent's total is all its tasks' */
  const char *const *frameworks; /* task k of agent i belongs to frameworks[(i*tasks+k) % n] */
  size_t n_frameworks;
  double finish_rate; /* TASK_FINISHED updates per second across the fleet; 0: no limit */
  size_t connections; /* HTTP/2 connections the streams share; 0: 8 */
} bench_fleet_options;

typedef struct bench_fleet_stats {
  size_t registered; /* REREGISTERED received */
  size_t ended;      /* streams over (the status arrived) */
  size_t messages;   /* messages received in all */
  size_t finished;   /* TASK_FINISHED updates sent */
} bench_fleet_stats;

/* Opens every stream and sends every REREGISTER; returns at once (the answers come
 * on the fleet's thread). */
bench_fleet *bench_fleet_start(const bench_fleet_options *o, ms_error **err);
void bench_fleet_stats_get(bench_fleet *f, bench_fleet_stats *ret);
/* Every agent sends TASK_FINISHED for its completed_per_agent tasks (on the fleet's
 * thread; see stats.finished). */
void bench_fleet_finish(bench_fleet *f);
/* The first stream status that was not OK ("" if none). Owned by the fleet. */
const char *bench_fleet_first_error(bench_fleet *f);
/* Cancels every stream, waits for the thread and frees. NULL is fine. */
void bench_fleet_free(bench_fleet *f);
