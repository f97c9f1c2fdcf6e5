/* Times the resource operations the allocator runs millions of times a cycle, on an
 * agent-sized set: 13 resources, reservations three deep, ports in 100 intervals.
 * The baseline does what a straightforward implementation would (Mesos' shape): an
 * unordered array, a linear search per resource, names and metadata compared field by
 * field. Both run on the same entries in the same process. No time is asserted.
 *
 * Uses the module's private header to reach the entries the baseline walks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "meseta/resources-internal.h"
#include "meseta/resources-io.h"
#include "meseta/resources-ops.h"

#define DEEP                                                                                                 \
  "\"reservations\":[{\"type\":\"STATIC\",\"role\":\"eng\"},{\"type\":\"DYNAMIC\",\"role\":\"eng/web\","     \
  "\"principal\":\"ops\"},{\"type\":\"DYNAMIC\",\"role\":\"eng/web/fe\",\"principal\":\"ci\"}]"
#define S(name, v, extra) "{\"name\":\"" name "\",\"type\":\"SCALAR\",\"scalar\":{\"value\":" v "}" extra "}"

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static ms_resources *parse(const char *text) {
  ms_error *err = NULL;
  ms_resources *r = NULL;
  if (ms_resources_parse_text(text, NULL, &r, &err) < 0) {
    fprintf(stderr, "bench: %s\n", err->msg);
    exit(1);
  }
  return r;
}

static char *agent_text(void) {
  ms_rbuf b = {0};
  ms_rbuf_add(&b, "[" S("cpus", "16", "") "," S("mem", "65536", "") "," S("disk", "500000",
                                                                          "") "," S("gpus", "2", ""));
  ms_rbuf_add(&b,
              "," S("cpus", "4", "," DEEP) "," S("mem", "8192", "," DEEP) "," S("disk", "1000", "," DEEP));
  ms_rbuf_add(&b, "," S("cpus", "4", ",\"revocable\":{}") "," S("ephemeral_storage", "100", ""));
  ms_rbuf_add(&b, "," S("disk", "100",
                        "," DEEP ",\"disk\":{\"persistence\":{\"id\":\"v1\"},\"volume\":{"
                        "\"container_path\":\"data\"}}"));
  ms_rbuf_add(&b, "," S("disk", "2000",
                        ",\"disk\":{\"source\":{\"type\":\"MOUNT\",\"mount\":{\"root\":\"/mnt/d1\"}}}"));
  ms_rbuf_add(&b, ",{\"name\":\"ports\",\"type\":\"RANGES\",\"ranges\":{\"range\":[");
  for (int i = 0; i < 100; i++)
    ms_rbuf_add(&b, "%s{\"begin\":%d,\"end\":%d}", i ? "," : "", 31000 + 20 * i, 31009 + 20 * i);
  ms_rbuf_add(&b, "]}},{\"name\":\"ports\",\"type\":\"RANGES\",\"ranges\":{\"range\":[");
  for (int i = 0; i < 10; i++)
    ms_rbuf_add(&b, "%s{\"begin\":%d,\"end\":%d}", i ? "," : "", 20000 + 20 * i, 20009 + 20 * i);
  ms_rbuf_add(&b, "]}," DEEP "}]");
  return ms_rbuf_take(&b);
}

/* What a task takes: some of each kind, reserved and not. */
static const char task_text[] =
    "[" S("cpus", "0.5", "") "," S("mem", "512", "") "," S("cpus", "1", "," DEEP) "," S(
        "mem", "1024",
        "," DEEP) ",{\"name\":\"ports\",\"type\":\"RANGES\",\"ranges\":{\"range\":[{\"begin\":31020,"
                  "\"end\":31021}]}}]";

/* ---- the naive baseline ---- */

static bool naive_same(const ms_resource *a, const ms_resource *b) {
  if (strcmp(ms_name_str(a->name), ms_name_str(b->name)) != 0 || a->type != b->type)
    return false;
  if ((a->meta == NULL) != (b->meta == NULL) || (a->meta && ms_rmeta_cmp_slow(a->meta, b->meta) != 0))
    return false;
  return !a->unit || a->v.scalar == b->v.scalar;
}

static long naive_find(const ms_resources *a, const ms_resource *w) {
  for (uint32_t i = 0; i < a->n; i++)
    if (naive_same(&a->v[i], w))
      return i;
  return -1;
}

static bool naive_contains(const ms_resources *a, const ms_resources *b) {
  for (uint32_t j = 0; j < b->n; j++) {
    long i = naive_find(a, &b->v[j]);
    if (i < 0)
      return false;
    const ms_resource *h = &a->v[i], *w = &b->v[j];
    bool ok = h->unit                      ? h->count >= w->count
              : h->type == MS_VALUE_SCALAR ? h->v.scalar >= w->v.scalar
              : h->type == MS_VALUE_RANGES ? ms_ranges_contains(&h->v.ranges, &w->v.ranges)
                                           : ms_set_contains(&h->v.set, &w->v.set);
    if (!ok)
      return false;
  }
  return true;
}

static void naive_add(ms_resources *a, const ms_resources *b) {
  for (uint32_t j = 0; j < b->n; j++) {
    long i = naive_find(a, &b->v[j]);
    ms_resource *h = &a->v[i]; /* the bench only adds shapes the set has */
    if (h->type == MS_VALUE_SCALAR)
      h->v.scalar += b->v[j].v.scalar;
    else if (h->type == MS_VALUE_RANGES)
      ms_ranges_union(&h->v.ranges, &b->v[j].v.ranges);
  }
}

static int naive_subtract(ms_resources *a, const ms_resources *b) {
  if (!naive_contains(a, b))
    return -1;
  for (uint32_t j = 0; j < b->n; j++) {
    ms_resource *h = &a->v[naive_find(a, &b->v[j])];
    if (h->type == MS_VALUE_SCALAR)
      h->v.scalar -= b->v[j].v.scalar;
    else if (h->type == MS_VALUE_RANGES)
      ms_ranges_subtract(&h->v.ranges, &b->v[j].v.ranges);
  }
  return 0;
}

static bool naive_equal(const ms_resources *a, const ms_resources *b) {
  return a->n == b->n && naive_contains(a, b) && naive_contains(b, a);
}

/* ---- timing ---- */

#define SETS 256
#define ROUNDS 400

typedef struct result {
  double add, sub, contains, equal;
} result;

static volatile bool sink;

static result run(bool naive, const ms_resources *agent, const ms_resources *task) {
  ms_resources *sets[SETS];
  ms_error *err = NULL;
  for (int i = 0; i < SETS; i++)
    sets[i] = ms_resources_clone(agent);
  result r = {0};
  for (int round = 0; round < ROUNDS; round++) {
    /* Allocate (subtract) then free (add back), as the allocator does. */
    double t0 = now_ns();
    for (int i = 0; i < SETS; i++)
      if ((naive ? naive_subtract(sets[i], task) : ms_resources_subtract(sets[i], task, &err)) < 0)
        abort();
    double t1 = now_ns();
    for (int i = 0; i < SETS; i++)
      naive ? naive_add(sets[i], task) : (void)ms_resources_add(sets[i], task, &err);
    double t2 = now_ns();
    for (int i = 0; i < SETS; i++)
      sink = naive ? naive_contains(sets[i], task) : ms_resources_contains(sets[i], task);
    double t3 = now_ns();
    for (int i = 0; i < SETS; i++)
      sink = naive ? naive_equal(sets[i], agent) : ms_resources_equal(sets[i], agent);
    double t4 = now_ns();
    r.sub += t1 - t0, r.add += t2 - t1, r.contains += t3 - t2, r.equal += t4 - t3;
  }
  const double n = (double)SETS * ROUNDS;
  r.add /= n, r.sub /= n, r.contains /= n, r.equal /= n;
  for (int i = 0; i < SETS; i++) {
    if (!ms_resources_equal(sets[i], agent))
      abort(); /* every add was taken back */
    ms_resources_free(sets[i]);
  }
  return r;
}

static double run_apply(const ms_resources *agent, double *ret_unreserve) {
  ms_error *err = NULL;
  ms_resources *set = ms_resources_clone(agent);
  ms_operation reserve = {.type = MS_OP_RESERVE}, unreserve = {.type = MS_OP_UNRESERVE};
  const char *deeper =
      "[" S("cpus", "1",
            ",\"reservations\":[{\"type\":\"STATIC\",\"role\":\"eng\"},{\"type\":\"DYNAMIC\","
            "\"role\":\"eng/web\",\"principal\":\"ops\"},{\"type\":\"DYNAMIC\",\"role\":\"eng/web/fe\","
            "\"principal\":\"ci\"},{\"type\":\"DYNAMIC\",\"role\":\"eng/web/fe/x\"}]") "]";
  reserve.resources = parse(deeper);
  unreserve.resources = parse(deeper);
  double tr = 0, tu = 0;
  const int n = 20000;
  for (int i = 0; i < n; i++) {
    double t0 = now_ns();
    if (ms_resources_apply(set, &reserve, &err) < 0)
      abort();
    double t1 = now_ns();
    if (ms_resources_apply(set, &unreserve, &err) < 0)
      abort();
    tr += t1 - t0, tu += now_ns() - t1;
  }
  ms_operation_release(&reserve);
  ms_operation_release(&unreserve);
  ms_resources_free(set);
  *ret_unreserve = tu / n;
  return tr / n;
}

int main(void) {
  char *text = agent_text();
  ms_resources *agent = parse(text), *task = parse(task_text);
  free(text);
  printf("bench-resources: agent set of %zu resources (reservations 3 deep, ports in 100 + 10 intervals), "
         "task of %zu\n",
         ms_resources_size(agent), ms_resources_size(task));
  result m = run(false, agent, task), b = run(true, agent, task);
  printf("%-22s %12s %12s %8s\n", "operation", "meseta ns", "naive ns", "ratio");
  printf("%-22s %12.1f %12.1f %7.1fx\n", "add (free a task)", m.add, b.add, b.add / m.add);
  printf("%-22s %12.1f %12.1f %7.1fx\n", "subtract (allocate)", m.sub, b.sub, b.sub / m.sub);
  printf("%-22s %12.1f %12.1f %7.1fx\n", "contains", m.contains, b.contains, b.contains / m.contains);
  printf("%-22s %12.1f %12.1f %7.1fx\n", "equal (agent, agent)", m.equal, b.equal, b.equal / m.equal);
  double un, re = run_apply(agent, &un);
  printf("%-22s %12.1f\n", "apply RESERVE", re);
  printf("%-22s %12.1f\n", "apply UNRESERVE", un);
  ms_resources_free(agent);
  ms_resources_free(task);
  return 0;
}
