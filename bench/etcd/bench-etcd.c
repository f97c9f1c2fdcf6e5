/* Puts per second through the etcd client, next to a raw libcurl loop doing the same
 * POSTs on one keep-alive connection (the floor: etcd's own commit time dominates).
 *
 *   bench-etcd [endpoint] [puts]
 *
 * Without an endpoint it starts a throwaway etcd (tests/lib/etcd-harness). */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/etcd.h"
#include "meseta/time.h"

#include "etcd-harness.h"

typedef struct worker {
  ms_etcd *e;
  int id;
  long n;
  long failed;
} worker;

static void *put_loop(void *p) {
  worker *w = p;
  char key[64], val[128];
  memset(val, 'v', sizeof(val));
  for (long i = 0; i < w->n; i++) {
    snprintf(key, sizeof(key), "bench/%d/%ld", w->id, i % 1000);
    if (ms_etcd_put(w->e, key, strlen(key), val, sizeof(val), 0, NULL, NULL) < 0)
      w->failed++;
  }
  return NULL;
}

static double client_rate(ms_etcd *e, int threads, long puts) {
  pthread_t t[16];
  worker w[16];
  int64_t start = ms_time_mono_ns();
  for (int i = 0; i < threads; i++) {
    w[i] = (worker){.e = e, .id = i, .n = puts / threads};
    pthread_create(&t[i], NULL, put_loop, &w[i]);
  }
  long failed = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(t[i], NULL);
    failed += w[i].failed;
  }
  if (failed)
    fprintf(stderr, "%ld puts failed\n", failed);
  return (double)(puts / threads * threads) / ((double)(ms_time_mono_ns() - start) / 1e9);
}

static size_t discard(char *p, size_t size, size_t n, void *arg) {
  (void)p, (void)arg;
  return size * n;
}

static double raw_rate(const char *endpoint, long puts) {
  CURL *h = curl_easy_init();
  _cleanup_free_ char *url = ms_xasprintf("%s/v3/kv/put", endpoint);
  /* key "bench/raw", a 128-byte value, already base64. */
  char body[512];
  char val[173];
  /* 128 'v' bytes in base64: 42 x "dnZ2" ("vvv") and "dnY=" ("vv"). */
  for (int i = 0; i < 42; i++)
    memcpy(val + i * 4, "dnZ2", 4);
  memcpy(val + 168, "dnY=", 4);
  val[172] = '\0';
  snprintf(body, sizeof(body), "{\"key\":\"YmVuY2gvcmF3\",\"value\":\"%s\"}", val);
  struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
  int64_t start = ms_time_mono_ns();
  for (long i = 0; i < puts; i++)
    if (curl_easy_perform(h) != CURLE_OK)
      fprintf(stderr, "raw put failed\n");
  double rate = (double)puts / ((double)(ms_time_mono_ns() - start) / 1e9);
  curl_slist_free_all(hdrs);
  curl_easy_cleanup(h);
  return rate;
}

int main(int argc, char **argv) {
  ms_error *err = NULL;
  ms_test_etcd *h = NULL;
  const char *endpoint = argc > 1 ? argv[1] : NULL;
  long puts = argc > 2 ? strtol(argv[2], NULL, 10) : 4000;
  if (puts <= 0)
    puts = 4000;
  if (!endpoint) {
    h = ms_test_etcd_start(&err);
    if (!h) {
      fprintf(stderr, "bench-etcd: %s\n", err->msg);
      return 1;
    }
    endpoint = ms_test_etcd_endpoint(h);
  }
  const char *eps[] = {endpoint};
  ms_etcd_options o = {.endpoints = eps, .n_endpoints = 1};
  ms_etcd *e = ms_etcd_new(&o, &err);
  if (!e) {
    fprintf(stderr, "bench-etcd: %s\n", err->msg);
    ms_test_etcd_free(h);
    return 1;
  }
  double raw = raw_rate(endpoint, puts);
  double one = client_rate(e, 1, puts);
  double four = client_rate(e, 4, puts);
  printf("etcd puts/s (128-byte values, %ld puts each):\n", puts);
  printf("  raw libcurl loop, 1 connection   %8.0f\n", raw);
  printf("  ms_etcd_put,      1 thread        %8.0f\n", one);
  printf("  ms_etcd_put,      4 threads       %8.0f\n", four);
  ms_etcd_free(e);
  ms_test_etcd_free(h);
  return 0;
}
