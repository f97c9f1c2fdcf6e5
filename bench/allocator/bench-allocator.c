/* Times one allocation cycle over a simulated cluster, for the shapes Mesos 1.8's
 * HierarchicalAllocator benchmarks published: (agents, frameworks) = (1k, 100),
 * (10k, 1k), (20k, 2k), all frameworks in one role; the same with every offer
 * declined (5 s filters, a cycle per simulated second, so filters pile up); and 3,000
 * roles each with one framework and a quota guarantee and limit.
 *
 * Each cycle offers every agent; between timed cycles the offers are rescinded (or
 * declined), untimed. Prints the median of the cycles and the resident memory the
 * model took (from /proc/self/statm: resident growth over building the model and the
 * first cycle, each shape in a fresh child process). No time is asserted.
 *
 *   bench-allocator [--cycles N] [--quick]   (--quick: the small shape only) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/resources-io.h"

#include "alloc-cycle.h"
#include "alloc-model.h"

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double rss_mb(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long size = 0, resident = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &size, &resident) != 2)
      resident = 0;
    fclose(f);
  }
  return (double)resident * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024.0);
}

static void die(ms_error *err) {
  fprintf(stderr, "bench-allocator: %s\n", err ? err->msg : "failed");
  exit(1);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef enum shape_kind { ONE_ROLE, DECLINES, QUOTA_ROLES } shape_kind;

typedef struct shape {
  const char *name;
  shape_kind kind;
  uint32_t agents, frameworks;
  double mesos_ms; /* Mesos 1.8's published cycle time, 0 if none */
} shape;

typedef struct result {
  double median_ms, min_ms, build_ms, rss_mb;
  uint32_t offers;
} result;

static alloc_model *build(const shape *s) {
  alloc_config cfg = {.seed = 1};
  alloc_model *m = NULL;
  ms_error *err = NULL;
  if (alloc_model_new(&cfg, &m, &err) < 0)
    die(err);
  ms_resources *total = NULL;
  if (ms_resources_parse_text("cpus:16;mem:65536;disk:500000;ports:[31000-32000]", NULL, &total, &err) < 0)
    die(err);
  char id[32], role[32];
  for (uint32_t i = 0; i < s->agents; i++) {
    snprintf(id, sizeof(id), "agent-%u", i);
    alloc_agent_spec a = {.id = id, .hostname = id, .total = total};
    if (alloc_model_add_agent(m, &a, &err) < 0)
      die(err);
  }
  ms_quantities g = {0}, l = {0};
  ms_quantities_set(&g, MS_NAME_CPUS, 16 * MS_SCALAR_UNIT);
  ms_quantities_set(&g, MS_NAME_MEM, 32768 * MS_SCALAR_UNIT);
  ms_quantities_set(&l, MS_NAME_CPUS, 48 * MS_SCALAR_UNIT);
  ms_quantities_set(&l, MS_NAME_MEM, 196608 * MS_SCALAR_UNIT);
  for (uint32_t i = 0; i < s->frameworks; i++) {
    snprintf(id, sizeof(id), "framework-%u", i);
    if (s->kind == QUOTA_ROLES)
      snprintf(role, sizeof(role), "team-%u/batch", i);
    else
      snprintf(role, sizeof(role), "everyone");
    const char *roles[] = {role};
    alloc_framework_spec f = {.id = id, .roles = roles, .nroles = 1};
    if (alloc_model_add_framework(m, &f, &err) < 0)
      die(err);
    if (s->kind == QUOTA_ROLES && alloc_model_set_quota(m, role, &g, &l, &err) < 0)
      die(err);
  }
  ms_quantities_release(&g);
  ms_quantities_release(&l);
  ms_resources_free(total);
  return m;
}

static void run(const shape *s, int cycles, result *ret) {
  double rss0 = rss_mb(), t0 = now_ms();
  alloc_model *m = build(s);
  ret->build_ms = now_ms() - t0;
  double *times = calloc((size_t)cycles, sizeof(double));
  ms_error *err = NULL;
  alloc_offer_list l = {0};
  for (int c = 0; c < cycles; c++) {
    int64_t now = (int64_t)c * 1000;
    l.n = 0;
    double start = now_ms();
    if (alloc_cycle_run(m, now, &l, NULL, &err) < 0)
      die(err);
    times[c] = now_ms() - start;
    ret->offers = l.n;
    if (c == 0)
      ret->rss_mb = rss_mb() - rss0;
    /* Copy the ids out: each call below changes the model the views borrow from. */
    char **ids = malloc((size_t)l.n * sizeof(*ids) + 1);
    char **fws = malloc((size_t)l.n * sizeof(*fws) + 1);
    for (uint32_t i = 0; i < l.n; i++) {
      ids[i] = ms_xstrdup(l.v[i].id);
      fws[i] = ms_xstrdup(l.v[i].framework_id);
    }
    uint32_t n = l.n;
    for (uint32_t i = 0; i < n; i++) {
      int rc = s->kind == DECLINES ? alloc_model_decline(m, fws[i], ids[i], 5000, now, &err)
                                   : alloc_model_rescind(m, ids[i], &err);
      if (rc < 0)
        die(err);
      free(ids[i]);
      free(fws[i]);
    }
    free(ids);
    free(fws);
  }
  qsort(times, (size_t)cycles, sizeof(double), cmp_double);
  ret->median_ms = times[cycles / 2];
  ret->min_ms = times[0];
  free(times);
  alloc_offer_list_release(&l);
  alloc_model_free(m);
}

int main(int argc, char **argv) {
  int cycles = 7;
  bool quick = false;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--cycles") == 0 && i + 1 < argc)
      cycles = (int)strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--quick") == 0)
      quick = true;
  }
  if (cycles < 1)
    cycles = 1;
  static const shape shapes[] = {
      {"one role", ONE_ROLE, 1000, 100, 0},
      {"one role", ONE_ROLE, 10000, 1000, 1100},
      {"one role", ONE_ROLE, 20000, 2000, 3800},
      {"declines", DECLINES, 1000, 100, 0},
      {"declines", DECLINES, 10000, 1000, 0},
      {"declines", DECLINES, 20000, 2000, 0},
      {"3000 quota roles", QUOTA_ROLES, 10000, 3000, 0},
  };
  printf("allocation cycle, median of %d (one core, this machine); Mesos 1.8 published figures beside\n",
         cycles);
  printf("%-18s %7s %6s %8s %10s %9s %9s %9s %10s %8s\n", "shape", "agents", "fws", "offers", "median ms",
         "min ms", "build ms", "model MB", "Mesos ms", "ratio");
  for (size_t i = 0; i < MS_ARRAY_SIZE(shapes); i++) {
    const shape *s = &shapes[i];
    if (quick && s->agents > 1000)
      continue;
    /* Each shape in its own process, so memory freed by one is not reused by the next
     * and the resident growth is the model's own. */
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
      perror("bench-allocator: fork");
      return 1;
    }
    if (pid > 0) {
      int status;
      waitpid(pid, &status, 0);
      continue;
    }
    result r = {0};
    run(s, cycles, &r);
    char mesos[16] = "-", ratio[16] = "-";
    if (s->mesos_ms > 0) {
      snprintf(mesos, sizeof(mesos), "%.0f", s->mesos_ms);
      snprintf(ratio, sizeof(ratio), "%.0fx", s->mesos_ms / r.median_ms);
    }
    printf("%-18s %7u %6u %8u %10.2f %9.2f %9.1f %9.1f %10s %8s\n", s->name, s->agents, s->frameworks,
           r.offers, r.median_ms, r.min_ms, r.build_ms, r.rss_mb, mesos, ratio);
    fflush(stdout);
    _exit(0);
  }
  return 0;
}
