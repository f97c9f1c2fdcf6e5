/* bench-registry: records through meseta-registry (gRPC, compare-and-swap into
 * etcd) against raw etcd puts and reads through the etcd client, same run, same
 * etcd, same concurrency.
 *
 *   bench-registry [--threads N] [--ops N] [--committers N]
 *
 * --threads is the number of concurrent clients (32 by default: enough to load both
 * paths to capacity, which is what a throughput ratio compares; with few clients each
 * call waits on one more network hop than a raw etcd call, and that latency is what
 * shows).
 *
 * It starts its own etcd (Debian's etcd-server, a temp data dir) and one
 * meseta-registry from the build tree. Writes create new records (expect absent);
 * reads get existing ones. Prints rates and ratios; asserts nothing. */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/etcd.h"
#include "meseta/rpc.h"
#include "meseta/v1/registry.pb-c.h"

#include "etcd-harness.h"
#include "proc.h"
#include "testlib.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef enum { RAW_PUT, RAW_GET, REG_PUT, REG_GET } mode;

typedef struct worker {
  mode m;
  int index, ops, failures;
  ms_etcd *etcd;
  ms_rpc_channel *ch;
} worker;

/* A framework record of realistic size (~200 bytes packed). */
static void fill(Meseta__V1__Record *r, Meseta__V1__FrameworkRecord *f, Meseta__V1__FrameworkInfo *info,
                 Meseta__V1__FrameworkID *id, char *idbuf) {
  meseta__v1__framework_id__init(id);
  id->value = idbuf;
  meseta__v1__framework_info__init(info);
  info->id = id;
  info->name = "benchmark-framework";
  info->user = "root";
  info->principal = "bench-principal";
  info->hostname = "scheduler-17.example.internal";
  info->webui_url = "http://scheduler-17.example.internal:8080/ui";
  meseta__v1__framework_record__init(f);
  f->info = info;
  meseta__v1__record__init(r);
  r->id = idbuf;
  r->body_case = MESETA__V1__RECORD__BODY_FRAMEWORK;
  r->framework = f;
}

static void *run(void *arg) {
  worker *w = arg;
  for (int i = 0; i < w->ops; i++) {
    char idbuf[64], key[128];
    snprintf(idbuf, sizeof(idbuf), "fw-%d-%d", w->index, i);
    Meseta__V1__Record r;
    Meseta__V1__FrameworkRecord f;
    Meseta__V1__FrameworkInfo info;
    Meseta__V1__FrameworkID id;
    fill(&r, &f, &info, &id, idbuf);
    ms_error *err = NULL;
    int rc = 0;
    switch (w->m) {
    case RAW_PUT: {
      snprintf(key, sizeof(key), "/raw/v1/frameworks/%s", idbuf);
      size_t n = protobuf_c_message_get_packed_size(&r.base);
      uint8_t buf[1024];
      protobuf_c_message_pack(&r.base, buf);
      rc = ms_etcd_put(w->etcd, key, strlen(key), buf, n, 0, NULL, &err);
      break;
    }
    case RAW_GET: {
      snprintf(key, sizeof(key), "/raw/v1/frameworks/%s", idbuf);
      ms_etcd_range_result res = {0};
      rc = ms_etcd_range(w->etcd, key, strlen(key), NULL, &res, &err);
      ms_etcd_range_result_release(&res);
      break;
    }
    case REG_PUT: {
      Meseta__V1__Expect e = MESETA__V1__EXPECT__INIT;
      e.expect_case = MESETA__V1__EXPECT__EXPECT_ABSENT;
      e.absent = true;
      Meseta__V1__PutRequest req = MESETA__V1__PUT_REQUEST__INIT;
      req.record = &r;
      req.expect = &e;
      ProtobufCMessage *resp = NULL;
      rc = ms_rpc_unary(w->ch, "/meseta.v1.Registry/Put", &req.base, &meseta__v1__put_response__descriptor,
                        NULL, &resp, &err);
      if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
      break;
    }
    case REG_GET: {
      Meseta__V1__GetRequest req = MESETA__V1__GET_REQUEST__INIT;
      req.kind = MESETA__V1__RECORD_KIND__FRAMEWORK;
      req.id = idbuf;
      ProtobufCMessage *resp = NULL;
      rc = ms_rpc_unary(w->ch, "/meseta.v1.Registry/Get", &req.base, &meseta__v1__record__descriptor, NULL,
                        &resp, &err);
      if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
      break;
    }
    }
    if (rc < 0) {
      if (w->failures++ == 0)
        fprintf(stderr, "bench-registry: %s\n", err->msg);
      ms_error_free(err);
    }
  }
  return NULL;
}

/* CPU seconds a process has used (utime + stime from /proc). */
static double cpu_of(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "re");
  if (!f)
    return 0;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
  unsigned long long ut = 0, st = 0;
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
    return 0;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static pid_t pids[3]; /* etcd, registry, this bench */

static double measure(mode m, int threads, int ops, ms_etcd *etcd, ms_rpc_channel **chs) {
  worker w[64];
  pthread_t t[64];
  double cpu_before[3];
  for (int i = 0; i < 3; i++)
    cpu_before[i] = cpu_of(pids[i]);
  double t0 = now_s();
  for (int i = 0; i < threads; i++) {
    w[i] = (worker){.m = m, .index = i, .ops = ops, .etcd = etcd, .ch = chs[i]};
    pthread_create(&t[i], NULL, run, &w[i]);
  }
  int failures = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(t[i], NULL);
    failures += w[i].failures;
  }
  double rate = (double)threads * ops / (now_s() - t0);
  double total = (double)threads * ops;
  printf("  cpu per op: etcd %5.0f us, registry %5.0f us, client %5.0f us\n",
         (cpu_of(pids[0]) - cpu_before[0]) * 1e6 / total, (cpu_of(pids[1]) - cpu_before[1]) * 1e6 / total,
         (cpu_of(pids[2]) - cpu_before[2]) * 1e6 / total);
  if (failures)
    fprintf(stderr, "bench-registry: %d operations failed\n", failures);
  return rate;
}

int main(int argc, char **argv) {
  int threads = 32, ops = 500;
  const char *committers = "2";
  static const struct option longopts[] = {{"threads", required_argument, NULL, 't'},
                                           {"ops", required_argument, NULL, 'o'},
                                           {"committers", required_argument, NULL, 'w'},
                                           {NULL, 0, NULL, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    long v = strtol(optarg, NULL, 10);
    if (v <= 0)
      return 2;
    if (o == 'w')
      committers = optarg;
    else if (o == 't')
      threads = v > 64 ? 64 : (int)v;
    else if (o == 'o')
      ops = (int)v;
    else
      return 2;
  }
  ms_error *err = NULL;
  ms_test_etcd *h = ms_test_etcd_start(&err);
  if (!h) {
    fprintf(stderr, "bench-registry: %s\n", err->msg);
    return 1;
  }
  char *dir = ms_test_tmpdir("bench-registry");
  char *bin = ms_test_binary("services/registry/meseta-registry");
  const char *args[] = {
      bin,           "--listen", "127.0.0.1:0",  "--etcd-endpoints", ms_test_etcd_endpoint(h),
      "--log-level", "warn",     "--committers", committers,         NULL};
  ms_test_proc *reg = ms_test_proc_start("registry", dir, args, &err);
  if (!reg) {
    fprintf(stderr, "bench-registry: %s\n", err->msg);
    ms_test_etcd_free(h);
    return 1;
  }
  const char *ep[] = {ms_test_etcd_endpoint(h)};
  ms_etcd_options eo = {.endpoints = ep, .n_endpoints = 1};
  ms_etcd *etcd = ms_etcd_new(&eo, &err);
  ms_rpc_channel *chs[64];
  for (int i = 0; i < threads; i++)
    chs[i] = ms_rpc_channel_new(ms_test_proc_address(reg), NULL, &err);

  pids[0] = ms_test_etcd_pid(h);
  pids[1] = ms_test_proc_pid(reg);
  pids[2] = getpid();
  printf("bench-registry: %d threads x %d operations, ~200-byte framework records, one local etcd\n", threads,
         ops);
  printf("raw etcd puts:\n");
  double raw_put = measure(RAW_PUT, threads, ops, etcd, chs);
  printf("registry writes:\n");
  double reg_put = measure(REG_PUT, threads, ops, etcd, chs);
  printf("raw etcd reads:\n");
  double raw_get = measure(RAW_GET, threads, ops, etcd, chs);
  printf("registry reads:\n");
  double reg_get = measure(REG_GET, threads, ops, etcd, chs);
  printf("%-34s %10.0f/s\n", "raw etcd puts (etcd client)", raw_put);
  printf("%-34s %10.0f/s   ratio %.2f\n", "registry writes (gRPC, CAS create)", reg_put, reg_put / raw_put);
  printf("%-34s %10.0f/s\n", "raw etcd reads (etcd client)", raw_get);
  printf("%-34s %10.0f/s   ratio %.2f\n", "registry reads (gRPC Get)", reg_get, reg_get / raw_get);

  for (int i = 0; i < threads; i++)
    ms_rpc_channel_free(chs[i]);
  ms_etcd_free(etcd);
  ms_test_proc_stop(reg, SIGTERM);
  ms_test_proc_free(reg);
  ms_test_etcd_free(h);
  ms_test_rmtree(dir);
  free(dir);
  free(bin);
  return 0;
}
