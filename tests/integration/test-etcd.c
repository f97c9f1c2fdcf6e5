/* The etcd client against a real etcd (tests/lib/etcd-harness.h): key-value, txn,
 * leases, watches across restarts and compaction, outages, failover, size limits,
 * elections and auth. No timing is asserted: waits are bounded only to catch hangs. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/etcd.h"
#include "meseta/time.h"

#include "etcd-harness.h"
#include "testlib.h"

#define HANG_GUARD_MS 30000

static ms_test_etcd *shared_etcd;

/* One etcd for the tests that do not stop, restart or compact it. */
static ms_test_etcd *shared(void) {
  if (!shared_etcd) {
    ms_error *err = NULL;
    shared_etcd = ms_test_etcd_start(&err);
    if (!shared_etcd)
      fprintf(stderr, "start etcd: %s\n", err->msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(shared_etcd);
  }
  return shared_etcd;
}

static ms_test_etcd *own_etcd(void) {
  ms_error *err = NULL;
  ms_test_etcd *h = ms_test_etcd_start(&err);
  if (!h)
    fprintf(stderr, "start etcd: %s\n", err->msg);
  CU_ASSERT_PTR_NOT_NULL_FATAL(h);
  return h;
}

static ms_etcd *client_for(ms_test_etcd *h) {
  const char *eps[] = {ms_test_etcd_endpoint(h)};
  ms_etcd_options o = {.endpoints = eps, .n_endpoints = 1};
  ms_error *err = NULL;
  ms_etcd *e = ms_etcd_new(&o, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(e);
  return e;
}

static int put_s(ms_etcd *e, const char *k, const char *v, int64_t *rev, ms_error **err) {
  return ms_etcd_put(e, k, strlen(k), v, strlen(v), 0, rev, err);
}

/* The value of a text key (the caller frees it), NULL if absent; the read must work. */
static char *get_s(ms_etcd *e, const char *k) {
  ms_error *err = NULL;
  ms_etcd_range_result r = {0};
  int rc = ms_etcd_range(e, k, strlen(k), NULL, &r, &err);
  if (rc < 0)
    fprintf(stderr, "range `%s`: %s\n", k, err->msg);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  char *v = r.n_kvs ? ms_xstrdup(r.kvs[0].value) : NULL;
  ms_etcd_range_result_release(&r);
  return v;
}

static bool has_key(ms_etcd *e, const char *k) {
  _cleanup_free_ char *v = get_s(e, k);
  return v != NULL;
}

/* ---- key-value ----------------------------------------------------------------- */

static void test_binary_round_trip(void) {
  ms_etcd *e = client_for(shared());
  ms_error *err = NULL;
  const char key[] = "bin/\0k\xff\x01";
  const char val[] = "v\0a\0l\xfe";
  int64_t rev = 0;
  MS_ASSERT_OK(ms_etcd_put(e, key, sizeof(key) - 1, val, sizeof(val) - 1, 0, &rev, &err), &err);
  CU_ASSERT(rev > 0);
  ms_etcd_range_result r = {0};
  MS_ASSERT_OK(ms_etcd_range(e, key, sizeof(key) - 1, NULL, &r, &err), &err);
  CU_ASSERT_EQUAL_FATAL(r.n_kvs, 1);
  CU_ASSERT_EQUAL(r.kvs[0].key_len, sizeof(key) - 1);
  CU_ASSERT(memcmp(r.kvs[0].key, key, sizeof(key) - 1) == 0);
  CU_ASSERT_EQUAL(r.kvs[0].value_len, sizeof(val) - 1);
  CU_ASSERT(memcmp(r.kvs[0].value, val, sizeof(val) - 1) == 0);
  CU_ASSERT_EQUAL(r.kvs[0].mod_revision, rev);
  CU_ASSERT_EQUAL(r.kvs[0].version, 1);
  CU_ASSERT(r.revision >= rev);
  ms_etcd_range_result_release(&r);
  /* An empty value and a missing key. */
  MS_ASSERT_OK(ms_etcd_put(e, "bin/empty", 9, "", 0, 0, NULL, &err), &err);
  MS_ASSERT_OK(ms_etcd_range(e, "bin/empty", 9, NULL, &r, &err), &err);
  CU_ASSERT_EQUAL_FATAL(r.n_kvs, 1);
  CU_ASSERT_EQUAL(r.kvs[0].value_len, 0);
  ms_etcd_range_result_release(&r);
  int64_t deleted = 0;
  MS_ASSERT_OK(ms_etcd_delete(e, key, sizeof(key) - 1, false, &deleted, NULL, &err), &err);
  CU_ASSERT_EQUAL(deleted, 1);
  MS_ASSERT_OK(ms_etcd_range(e, key, sizeof(key) - 1, NULL, &r, &err), &err);
  CU_ASSERT_EQUAL(r.n_kvs, 0);
  CU_ASSERT_EQUAL(r.count, 0);
  ms_etcd_range_result_release(&r);
  ms_etcd_free(e);
}

static void test_prefix_limit(void) {
  ms_etcd *e = client_for(shared());
  ms_error *err = NULL;
  for (int i = 0; i < 5; i++) {
    char k[32], v[32];
    snprintf(k, sizeof(k), "pfx/%d", i);
    snprintf(v, sizeof(v), "v%d", i);
    MS_ASSERT_OK(put_s(e, k, v, NULL, &err), &err);
  }
  MS_ASSERT_OK(put_s(e, "pfy", "outside", NULL, &err), &err);
  ms_etcd_range_result r = {0};
  ms_etcd_range_opts o = {.prefix = true};
  MS_ASSERT_OK(ms_etcd_range(e, "pfx/", 4, &o, &r, &err), &err);
  CU_ASSERT_EQUAL(r.n_kvs, 5);
  CU_ASSERT_EQUAL(r.count, 5);
  CU_ASSERT_FALSE(r.more);
  CU_ASSERT_STRING_EQUAL(r.kvs[0].key, "pfx/0");
  CU_ASSERT_STRING_EQUAL(r.kvs[4].value, "v4");
  ms_etcd_range_result_release(&r);
  o.limit = 2;
  MS_ASSERT_OK(ms_etcd_range(e, "pfx/", 4, &o, &r, &err), &err);
  CU_ASSERT_EQUAL(r.n_kvs, 2);
  CU_ASSERT_EQUAL(r.count, 5);
  CU_ASSERT_TRUE(r.more);
  ms_etcd_range_result_release(&r);
  o = (ms_etcd_range_opts){.prefix = true, .keys_only = true};
  MS_ASSERT_OK(ms_etcd_range(e, "pfx/", 4, &o, &r, &err), &err);
  CU_ASSERT_EQUAL(r.n_kvs, 5);
  CU_ASSERT_EQUAL(r.kvs[1].value_len, 0);
  ms_etcd_range_result_release(&r);
  o = (ms_etcd_range_opts){.prefix = true, .count_only = true};
  MS_ASSERT_OK(ms_etcd_range(e, "pfx/", 4, &o, &r, &err), &err);
  CU_ASSERT_EQUAL(r.n_kvs, 0);
  CU_ASSERT_EQUAL(r.count, 5);
  ms_etcd_range_result_release(&r);
  /* [pfx/1, pfx/3) */
  o = (ms_etcd_range_opts){.range_end = "pfx/3", .range_end_len = 5};
  MS_ASSERT_OK(ms_etcd_range(e, "pfx/1", 5, &o, &r, &err), &err);
  CU_ASSERT_EQUAL(r.n_kvs, 2);
  ms_etcd_range_result_release(&r);
  int64_t deleted = 0;
  MS_ASSERT_OK(ms_etcd_delete(e, "pfx/", 4, true, &deleted, NULL, &err), &err);
  CU_ASSERT_EQUAL(deleted, 5);
  MS_ASSERT_OK(ms_etcd_range(e, "pfy", 3, NULL, &r, &err), &err);
  CU_ASSERT_EQUAL(r.n_kvs, 1);
  ms_etcd_range_result_release(&r);
  ms_etcd_free(e);
}

static void test_old_revision_and_serializable(void) {
  ms_etcd *e = client_for(shared());
  ms_error *err = NULL;
  int64_t r1 = 0, r2 = 0;
  MS_ASSERT_OK(put_s(e, "old/k", "one", &r1, &err), &err);
  MS_ASSERT_OK(put_s(e, "old/k", "two", &r2, &err), &err);
  CU_ASSERT(r2 > r1);
  ms_etcd_range_result r = {0};
  ms_etcd_range_opts o = {.revision = r1};
  MS_ASSERT_OK(ms_etcd_range(e, "old/k", 5, &o, &r, &err), &err);
  CU_ASSERT_EQUAL_FATAL(r.n_kvs, 1);
  CU_ASSERT_STRING_EQUAL(r.kvs[0].value, "one");
  ms_etcd_range_result_release(&r);
  o = (ms_etcd_range_opts){.serializable = true};
  MS_ASSERT_OK(ms_etcd_range(e, "old/k", 5, &o, &r, &err), &err);
  CU_ASSERT_EQUAL_FATAL(r.n_kvs, 1);
  CU_ASSERT_STRING_EQUAL(r.kvs[0].value, "two");
  CU_ASSERT_EQUAL(r.kvs[0].version, 2);
  ms_etcd_range_result_release(&r);
  /* A future revision is OUT_OF_RANGE. */
  o = (ms_etcd_range_opts){.revision = r2 + 1000};
  CU_ASSERT_EQUAL(ms_etcd_range(e, "old/k", 5, &o, &r, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_OUT_OF_RANGE);
  ms_error_free(err);
  ms_etcd_free(e);
}

/* ---- transactions ---------------------------------------------------------------- */

#define CAS_ROUNDS 150

typedef struct cas_arg {
  ms_etcd *e;
  int conflicts;
  int failed;
} cas_arg;

static void *cas_worker(void *p) {
  cas_arg *a = p;
  for (int i = 0; i < CAS_ROUNDS; i++) {
    for (;;) {
      ms_error *err = NULL;
      ms_etcd_range_result r = {0};
      if (ms_etcd_range(a->e, "cas/counter", 11, NULL, &r, &err) < 0 || r.n_kvs != 1) {
        a->failed++;
        ms_error_free(err);
        ms_etcd_range_result_release(&r);
        return NULL;
      }
      long long v = strtoll(r.kvs[0].value, NULL, 10);
      int64_t mod = r.kvs[0].mod_revision;
      ms_etcd_range_result_release(&r);
      char next[32];
      snprintf(next, sizeof(next), "%lld", v + 1);
      ms_etcd_compare c = {.key = "cas/counter", .key_len = 11, .target = MS_ETCD_TARGET_MOD, .number = mod};
      ms_etcd_op put = {.type = MS_ETCD_OP_PUT,
                        .key = "cas/counter",
                        .key_len = 11,
                        .value = next,
                        .value_len = strlen(next)};
      ms_etcd_txn_result t = {0};
      if (ms_etcd_txn(a->e, &c, 1, &put, 1, NULL, 0, &t, &err) < 0) {
        fprintf(stderr, "txn: %s\n", err->msg);
        a->failed++;
        ms_error_free(err);
        return NULL;
      }
      bool ok = t.succeeded;
      ms_etcd_txn_result_release(&t);
      if (ok)
        break;
      a->conflicts++;
    }
  }
  return NULL;
}

static void test_txn_cas_race(void) {
  ms_etcd *e = client_for(shared());
  ms_error *err = NULL;
  MS_ASSERT_OK(put_s(e, "cas/counter", "0", NULL, &err), &err);
  cas_arg a = {.e = e}, b = {.e = e};
  pthread_t ta, tb;
  pthread_create(&ta, NULL, cas_worker, &a);
  pthread_create(&tb, NULL, cas_worker, &b);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  CU_ASSERT_EQUAL(a.failed + b.failed, 0);
  _cleanup_free_ char *v = get_s(e, "cas/counter");
  CU_ASSERT_EQUAL(strtoll(v ? v : "0", NULL, 10), 2 * CAS_ROUNDS);
  printf("\n    cas race: %d increments, %d lost compares retried\n", 2 * CAS_ROUNDS,
         a.conflicts + b.conflicts);
  ms_etcd_free(e);
}

static void test_txn_create_if_absent(void) {
  ms_etcd *e = client_for(shared());
  ms_error *err = NULL;
  ms_etcd_compare absent = {.key = "cia/k", .key_len = 5, .target = MS_ETCD_TARGET_CREATE, .number = 0};
  ms_etcd_op put = {.type = MS_ETCD_OP_PUT, .key = "cia/k", .key_len = 5, .value = "first", .value_len = 5};
  ms_etcd_op get = {.type = MS_ETCD_OP_RANGE, .key = "cia/k", .key_len = 5};
  ms_etcd_txn_result t = {0};
  MS_ASSERT_OK(ms_etcd_txn(e, &absent, 1, &put, 1, &get, 1, &t, &err), &err);
  CU_ASSERT_TRUE(t.succeeded);
  CU_ASSERT_EQUAL_FATAL(t.n_responses, 1);
  CU_ASSERT_EQUAL(t.responses[0].type, MS_ETCD_OP_PUT);
  int64_t created = t.revision;
  ms_etcd_txn_result_release(&t);
  put.value = "second";
  put.value_len = 6;
  MS_ASSERT_OK(ms_etcd_txn(e, &absent, 1, &put, 1, &get, 1, &t, &err), &err);
  CU_ASSERT_FALSE(t.succeeded);
  CU_ASSERT_EQUAL_FATAL(t.n_responses, 1);
  CU_ASSERT_EQUAL(t.responses[0].type, MS_ETCD_OP_RANGE);
  CU_ASSERT_EQUAL_FATAL(t.responses[0].range.n_kvs, 1);
  CU_ASSERT_STRING_EQUAL(t.responses[0].range.kvs[0].value, "first");
  CU_ASSERT_EQUAL(t.responses[0].range.kvs[0].create_revision, created);
  ms_etcd_txn_result_release(&t);
  /* VALUE compare and a delete op. */
  ms_etcd_compare is_first = {
      .key = "cia/k", .key_len = 5, .target = MS_ETCD_TARGET_VALUE, .value = "first", .value_len = 5};
  ms_etcd_op del = {.type = MS_ETCD_OP_DELETE, .key = "cia/", .key_len = 4, .prefix = true};
  MS_ASSERT_OK(ms_etcd_txn(e, &is_first, 1, &del, 1, NULL, 0, &t, &err), &err);
  CU_ASSERT_TRUE(t.succeeded);
  CU_ASSERT_EQUAL_FATAL(t.n_responses, 1);
  CU_ASSERT_EQUAL(t.responses[0].deleted, 1);
  ms_etcd_txn_result_release(&t);
  ms_etcd_free(e);
}

/* ---- leases -------------------------------------------------------------------- */

static void test_lease_revoke(void) {
  ms_etcd *e = client_for(shared());
  ms_error *err = NULL;
  int64_t id = 0, ttl = 0;
  MS_ASSERT_OK(ms_etcd_lease_grant(e, 60, 0, &id, &ttl, &err), &err);
  CU_ASSERT(id != 0);
  CU_ASSERT_EQUAL(ttl, 60);
  MS_ASSERT_OK(ms_etcd_put(e, "lease/k", 7, "v", 1, id, NULL, &err), &err);
  ms_etcd_range_result r = {0};
  MS_ASSERT_OK(ms_etcd_range(e, "lease/k", 7, NULL, &r, &err), &err);
  CU_ASSERT_EQUAL_FATAL(r.n_kvs, 1);
  CU_ASSERT_EQUAL(r.kvs[0].lease, id);
  ms_etcd_range_result_release(&r);
  MS_ASSERT_OK(ms_etcd_lease_keepalive(e, id, &ttl, &err), &err);
  CU_ASSERT(ttl > 0);
  MS_ASSERT_OK(ms_etcd_lease_revoke(e, id, &err), &err);
  CU_ASSERT_FALSE(has_key(e, "lease/k"));
  /* Gone now: keepalive, revoke and put with it say NOT_FOUND. */
  CU_ASSERT_EQUAL(ms_etcd_lease_keepalive(e, id, NULL, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_NOT_FOUND);
  char want[64];
  snprintf(want, sizeof(want), "lease `%lld` expired or unknown", (long long)id);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, want));
  CU_ASSERT_EQUAL(ms_etcd_lease_revoke(e, id, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_NOT_FOUND);
  CU_ASSERT_EQUAL(ms_etcd_put(e, "lease/k", 7, "v", 1, id, NULL, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_NOT_FOUND);
  printf("\n    %s\n", err->msg);
  /* A lease that never existed. */
  CU_ASSERT_EQUAL(ms_etcd_lease_keepalive(e, 0x7eadbeef, NULL, &err), MS_ERR);
  CU_ASSERT_EQUAL_FATAL(err->code, MS_NOT_FOUND);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "expired or unknown"));
  ms_error_free(err);
  ms_etcd_free(e);
}

typedef struct lost_arg {
  atomic_int calls;
  atomic_int code;
} lost_arg;

static void on_lost(void *arg, int64_t id, const ms_error *why) {
  lost_arg *l = arg;
  (void)id;
  atomic_store(&l->code, (int)why->code);
  atomic_fetch_add(&l->calls, 1);
}

static bool wait_int(atomic_int *v, int want) {
  for (int64_t end = ms_time_mono_ms() + HANG_GUARD_MS; ms_time_mono_ms() < end;) {
    if (atomic_load(v) >= want)
      return true;
    ms_time_sleep_ms(10);
  }
  return atomic_load(v) >= want;
}

static void test_lease_keeper(void) {
  ms_etcd *e = client_for(shared());
  ms_error *err = NULL;
  int64_t id = 0;
  MS_ASSERT_OK(ms_etcd_lease_grant(e, 2, 0, &id, NULL, &err), &err);
  MS_ASSERT_OK(ms_etcd_put(e, "keeper/k", 8, "v", 1, id, NULL, &err), &err);
  lost_arg l = {0};
  ms_etcd_lease_keeper *k = ms_etcd_lease_keeper_start(e, id, 2, on_lost, &l, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(k);
  /* Past two TTLs the key is still there: the keeper renewed it. */
  ms_time_sleep_ms(4500);
  CU_ASSERT_TRUE(has_key(e, "keeper/k"));
  CU_ASSERT_EQUAL(atomic_load(&l.calls), 0);
  /* Revoked behind its back: the keeper reports the loss. */
  MS_ASSERT_OK(ms_etcd_lease_revoke(e, id, &err), &err);
  CU_ASSERT_TRUE(wait_int(&l.calls, 1));
  CU_ASSERT_EQUAL(atomic_load(&l.code), MS_NOT_FOUND);
  ms_etcd_lease_keeper_stop(k);
  ms_etcd_free(e);
}

/* ---- watches ------------------------------------------------------------------- */

#define MAX_SEEN 256

typedef struct seen_event {
  ms_etcd_event_type type;
  char key[64];
  char value[64];
  int64_t rev;
} seen_event;

typedef struct watcher {
  pthread_mutex_t mu;
  seen_event ev[MAX_SEEN];
  atomic_int n;
  atomic_int drops;
  atomic_int ups;
  atomic_int errors;
  ms_status err_code;
  char err_msg[512];
} watcher;

static void w_events(void *arg, const ms_etcd_event *evs, size_t n) {
  watcher *w = arg;
  pthread_mutex_lock(&w->mu);
  for (size_t i = 0; i < n; i++) {
    int at = atomic_load(&w->n);
    if (at >= MAX_SEEN)
      break;
    seen_event *s = &w->ev[at];
    s->type = evs[i].type;
    ms_strlcpy(s->key, evs[i].kv.key, sizeof(s->key));
    ms_strlcpy(s->value, evs[i].kv.value, sizeof(s->value));
    s->rev = evs[i].kv.mod_revision;
    atomic_store(&w->n, at + 1);
  }
  pthread_mutex_unlock(&w->mu);
}

static void w_error(void *arg, const ms_error *err) {
  watcher *w = arg;
  pthread_mutex_lock(&w->mu);
  w->err_code = err->code;
  ms_strlcpy(w->err_msg, err->msg, sizeof(w->err_msg));
  pthread_mutex_unlock(&w->mu);
  atomic_fetch_add(&w->errors, 1);
}

static void w_connection(void *arg, bool up, const ms_error *why) {
  watcher *w = arg;
  (void)why;
  atomic_fetch_add(up ? &w->ups : &w->drops, 1);
}

static const ms_etcd_watch_cb watch_cb = {
    .on_events = w_events, .on_error = w_error, .on_connection = w_connection};

static void watcher_init(watcher *w) {
  memset(w, 0, sizeof(*w));
  pthread_mutex_init(&w->mu, NULL);
}

static void test_watch_order(void) {
  ms_etcd *e = client_for(shared());
  ms_error *err = NULL;
  watcher w;
  watcher_init(&w);
  ms_etcd_watch *wa = ms_etcd_watch_start(e, "wo/", 3, true, 0, &watch_cb, &w, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(wa);
  CU_ASSERT_TRUE_FATAL(wait_int(&w.ups, 1));
  int64_t r1, r2, r3;
  MS_ASSERT_OK(put_s(e, "wo/a", "1", &r1, &err), &err);
  MS_ASSERT_OK(put_s(e, "wo/b", "2", &r2, &err), &err);
  MS_ASSERT_OK(put_s(e, "elsewhere", "x", NULL, &err), &err);
  MS_ASSERT_OK(ms_etcd_delete(e, "wo/a", 4, false, NULL, &r3, &err), &err);
  CU_ASSERT_TRUE_FATAL(wait_int(&w.n, 3));
  CU_ASSERT_EQUAL(atomic_load(&w.n), 3);
  CU_ASSERT_EQUAL(w.ev[0].type, MS_ETCD_EVENT_PUT);
  CU_ASSERT_STRING_EQUAL(w.ev[0].key, "wo/a");
  CU_ASSERT_STRING_EQUAL(w.ev[0].value, "1");
  CU_ASSERT_EQUAL(w.ev[0].rev, r1);
  CU_ASSERT_STRING_EQUAL(w.ev[1].key, "wo/b");
  CU_ASSERT_EQUAL(w.ev[1].rev, r2);
  CU_ASSERT_EQUAL(w.ev[2].type, MS_ETCD_EVENT_DELETE);
  CU_ASSERT_STRING_EQUAL(w.ev[2].key, "wo/a");
  CU_ASSERT_EQUAL(w.ev[2].rev, r3);
  CU_ASSERT_EQUAL(ms_etcd_watch_next_revision(wa), r3 + 1);
  ms_etcd_watch_stop(wa);
  /* From an old revision: the history is replayed. */
  watcher_init(&w);
  wa = ms_etcd_watch_start(e, "wo/", 3, true, r1, &watch_cb, &w, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(wa);
  CU_ASSERT_TRUE(wait_int(&w.n, 3));
  CU_ASSERT_EQUAL(w.ev[0].rev, r1);
  CU_ASSERT_EQUAL(w.ev[2].rev, r3);
  ms_etcd_watch_stop(wa);
  ms_etcd_free(e);
}

static void test_watch_resume_after_restart(void) {
  ms_test_etcd *h = own_etcd();
  ms_etcd *e = client_for(h);
  ms_error *err = NULL;
  watcher w;
  watcher_init(&w);
  ms_etcd_watch *wa = ms_etcd_watch_start(e, "wr/", 3, true, 0, &watch_cb, &w, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(wa);
  CU_ASSERT_TRUE_FATAL(wait_int(&w.ups, 1));
  MS_ASSERT_OK(put_s(e, "wr/1", "a", NULL, &err), &err);
  MS_ASSERT_OK(put_s(e, "wr/2", "b", NULL, &err), &err);
  CU_ASSERT_TRUE_FATAL(wait_int(&w.n, 2));
  MS_ASSERT_OK(ms_test_etcd_stop(h, &err), &err);
  CU_ASSERT_TRUE_FATAL(wait_int(&w.drops, 1));
  MS_ASSERT_OK(ms_test_etcd_restart(h, &err), &err);
  /* Written at once, most likely before the watch is back: it must replay them. */
  MS_ASSERT_OK(put_s(e, "wr/3", "c", NULL, &err), &err);
  MS_ASSERT_OK(ms_etcd_delete(e, "wr/1", 4, false, NULL, NULL, &err), &err);
  MS_ASSERT_OK(put_s(e, "wr/4", "d", NULL, &err), &err);
  CU_ASSERT_TRUE_FATAL(wait_int(&w.n, 5));
  /* Let anything repeated show up before counting. */
  CU_ASSERT_TRUE(wait_int(&w.ups, 2));
  MS_ASSERT_OK(put_s(e, "wr/5", "e", NULL, &err), &err);
  CU_ASSERT_TRUE_FATAL(wait_int(&w.n, 6));
  const char *want[] = {"wr/1", "wr/2", "wr/3", "wr/1", "wr/4", "wr/5"};
  CU_ASSERT_EQUAL(atomic_load(&w.n), 6);
  for (int i = 0; i < 6; i++) {
    CU_ASSERT_STRING_EQUAL(w.ev[i].key, want[i]);
    if (i > 0)
      CU_ASSERT(w.ev[i].rev > w.ev[i - 1].rev);
  }
  CU_ASSERT_EQUAL(w.ev[3].type, MS_ETCD_EVENT_DELETE);
  CU_ASSERT_EQUAL(atomic_load(&w.errors), 0);
  ms_etcd_watch_stop(wa);
  ms_etcd_free(e);
  ms_test_etcd_free(h);
}

static void test_watch_compacted(void) {
  ms_test_etcd *h = own_etcd();
  ms_etcd *e = client_for(h);
  ms_error *err = NULL;
  int64_t first = 0, last = 0;
  MS_ASSERT_OK(put_s(e, "wc/k", "1", &first, &err), &err);
  MS_ASSERT_OK(put_s(e, "wc/k", "2", NULL, &err), &err);
  MS_ASSERT_OK(put_s(e, "wc/k", "3", &last, &err), &err);
  MS_ASSERT_OK(ms_etcd_compact(e, last, true, &err), &err);
  /* Reading the past is OUT_OF_RANGE too. */
  ms_etcd_range_result r = {0};
  ms_etcd_range_opts o = {.revision = first};
  CU_ASSERT_EQUAL(ms_etcd_range(e, "wc/k", 4, &o, &r, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_OUT_OF_RANGE);
  ms_error_free(err);
  err = NULL;
  watcher w;
  watcher_init(&w);
  ms_etcd_watch *wa = ms_etcd_watch_start(e, "wc/k", 4, false, first, &watch_cb, &w, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(wa);
  CU_ASSERT_TRUE_FATAL(wait_int(&w.errors, 1));
  CU_ASSERT_EQUAL(w.err_code, MS_OUT_OF_RANGE);
  char a[64], b[64];
  snprintf(a, sizeof(a), "from revision %lld", (long long)first);
  snprintf(b, sizeof(b), "up to revision %lld", (long long)last);
  CU_ASSERT_PTR_NOT_NULL(strstr(w.err_msg, a));
  CU_ASSERT_PTR_NOT_NULL(strstr(w.err_msg, b));
  printf("\n    %s\n", w.err_msg);
  CU_ASSERT_EQUAL(atomic_load(&w.n), 0);
  ms_etcd_watch_stop(wa);
  ms_etcd_free(e);
  ms_test_etcd_free(h);
}

/* ---- outages, failover, limits ---------------------------------------------------- */

static void test_outage_and_recovery(void) {
  ms_test_etcd *h = own_etcd();
  ms_etcd *e = client_for(h);
  ms_error *err = NULL;
  MS_ASSERT_OK(put_s(e, "out/k", "before", NULL, &err), &err);
  MS_ASSERT_OK(ms_test_etcd_stop(h, &err), &err);
  CU_ASSERT_EQUAL(put_s(e, "out/k", "during", NULL, &err), MS_ERR);
  CU_ASSERT_EQUAL_FATAL(err->code, MS_UNAVAILABLE);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, ms_test_etcd_endpoint(h)));
  printf("\n    %s\n", err->msg);
  ms_etcd_range_result r = {0};
  CU_ASSERT_EQUAL(ms_etcd_range(e, "out/k", 5, NULL, &r, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_UNAVAILABLE);
  ms_error_free(err);
  err = NULL;
  MS_ASSERT_OK(ms_test_etcd_restart(h, &err), &err);
  MS_ASSERT_OK(put_s(e, "out/k", "after", NULL, &err), &err);
  _cleanup_free_ char *v = get_s(e, "out/k");
  CU_ASSERT_STRING_EQUAL(v, "after");
  ms_etcd_free(e);
  ms_test_etcd_free(h);
}

static void test_failover(void) {
  ms_test_etcd *h = shared();
  ms_error *err = NULL;
  /* A port nobody listens on: a stopped etcd's. */
  ms_test_etcd *dead = own_etcd();
  _cleanup_free_ char *dead_ep = ms_xstrdup(ms_test_etcd_endpoint(dead));
  ms_test_etcd_free(dead);
  const char *eps[] = {dead_ep, ms_test_etcd_endpoint(h)};
  ms_etcd_options o = {.endpoints = eps, .n_endpoints = 2};
  ms_etcd *e = ms_etcd_new(&o, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(e);
  CU_ASSERT_STRING_EQUAL(ms_etcd_current_endpoint(e), dead_ep);
  MS_ASSERT_OK(put_s(e, "fo/k", "v", NULL, &err), &err);
  CU_ASSERT_STRING_EQUAL(ms_etcd_current_endpoint(e), ms_test_etcd_endpoint(h));
  CU_ASSERT_TRUE(has_key(e, "fo/k"));
  ms_etcd_free(e);
  /* Every endpoint dead: UNAVAILABLE naming each. */
  const char *dead_eps[] = {dead_ep, "http://127.0.0.1:1"};
  o = (ms_etcd_options){.endpoints = dead_eps, .n_endpoints = 2};
  e = ms_etcd_new(&o, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(e);
  CU_ASSERT_EQUAL(put_s(e, "fo/k", "v", NULL, &err), MS_ERR);
  CU_ASSERT_EQUAL_FATAL(err->code, MS_UNAVAILABLE);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, dead_ep));
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "http://127.0.0.1:1"));
  printf("\n    %s\n", err->msg);
  ms_error_free(err);
  ms_etcd_free(e);
  /* Bad endpoints are refused up front. */
  err = NULL;
  const char *bad[] = {"127.0.0.1:2379"};
  o = (ms_etcd_options){.endpoints = bad, .n_endpoints = 1};
  CU_ASSERT_PTR_NULL(ms_etcd_new(&o, &err));
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
  ms_error_free(err);
}

static void test_too_large(void) {
  ms_test_etcd *h = shared();
  ms_etcd *e = client_for(h);
  ms_error *err = NULL;
  size_t big = 1600 * 1024;
  char *v = ms_xcalloc(1, big);
  CU_ASSERT_EQUAL(ms_etcd_put(e, "big/record", 10, v, big, 0, NULL, &err), MS_ERR);
  CU_ASSERT_EQUAL_FATAL(err->code, MS_INVALID_ARGUMENT);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "big/record"));
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "1638410 bytes"));
  printf("\n    %s\n", err->msg);
  ms_etcd_op put = {.type = MS_ETCD_OP_PUT, .key = "big/txn", .key_len = 7, .value = v, .value_len = big};
  ms_etcd_txn_result t = {0};
  CU_ASSERT_EQUAL(ms_etcd_txn(e, NULL, 0, &put, 1, NULL, 0, &t, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "big/txn"));
  ms_etcd_free(e);
  /* A client that believes etcd takes more: etcd's own refusal maps the same way. */
  const char *eps[] = {ms_test_etcd_endpoint(h)};
  ms_etcd_options o = {.endpoints = eps, .n_endpoints = 1, .max_request_bytes = 8 << 20};
  e = ms_etcd_new(&o, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(e);
  CU_ASSERT_EQUAL(ms_etcd_put(e, "big/record", 10, v, big, 0, NULL, &err), MS_ERR);
  CU_ASSERT_EQUAL_FATAL(err->code, MS_INVALID_ARGUMENT);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "big/record"));
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "request is too large"));
  printf("    %s\n", err->msg);
  ms_error_free(err);
  free(v);
  ms_etcd_free(e);
}

/* ---- elections ------------------------------------------------------------------- */

typedef struct campaigner {
  ms_etcd *e;
  int64_t lease;
  const char *value;
  int64_t timeout_ms;
  ms_etcd_cancel *cancel;
  ms_etcd_leader_key key;
  int rc;
  ms_status code;
  atomic_int done;
} campaigner;

static void *campaign_thread(void *p) {
  campaigner *c = p;
  ms_error *err = NULL;
  c->rc = ms_etcd_campaign(c->e, "elect", 5, c->lease, c->value, strlen(c->value), c->timeout_ms, c->cancel,
                           &c->key, &err);
  c->code = err ? err->code : MS_OK;
  ms_error_free(err);
  atomic_store(&c->done, 1);
  return NULL;
}

typedef struct observer {
  pthread_mutex_t mu;
  char values[16][16];
  atomic_int n;
} observer;

static void on_leader(void *arg, const ms_etcd_kv *kv) {
  observer *o = arg;
  pthread_mutex_lock(&o->mu);
  int n = atomic_load(&o->n);
  if (n < 16 && (n == 0 || strcmp(o->values[n - 1], kv->value) != 0)) {
    ms_strlcpy(o->values[n], kv->value, sizeof(o->values[n]));
    atomic_store(&o->n, n + 1);
  }
  pthread_mutex_unlock(&o->mu);
}

static void test_election(void) {
  ms_etcd *e = client_for(shared());
  ms_error *err = NULL;
  int64_t la = 0, lb = 0, lc = 0;
  MS_ASSERT_OK(ms_etcd_lease_grant(e, 60, 0, &la, NULL, &err), &err);
  MS_ASSERT_OK(ms_etcd_lease_grant(e, 60, 0, &lb, NULL, &err), &err);
  MS_ASSERT_OK(ms_etcd_lease_grant(e, 60, 0, &lc, NULL, &err), &err);
  ms_etcd_kv kv = {0};
  CU_ASSERT_EQUAL(ms_etcd_leader(e, "elect", 5, &kv, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_NOT_FOUND);
  ms_error_free(err);
  err = NULL;
  observer ob = {0};
  pthread_mutex_init(&ob.mu, NULL);
  ms_etcd_observe_cb ocb = {.on_leader = on_leader};
  ms_etcd_observe *obs = ms_etcd_observe_start(e, "elect", 5, &ocb, &ob, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(obs);

  campaigner a = {.e = e, .lease = la, .value = "alpha", .timeout_ms = HANG_GUARD_MS};
  campaign_thread(&a);
  CU_ASSERT_EQUAL_FATAL(a.rc, 0);
  CU_ASSERT_EQUAL(a.key.lease, la);
  MS_ASSERT_OK(ms_etcd_leader(e, "elect", 5, &kv, &err), &err);
  CU_ASSERT_STRING_EQUAL(kv.value, "alpha");
  ms_etcd_kv_release(&kv);

  campaigner b = {.e = e, .lease = lb, .value = "beta", .timeout_ms = HANG_GUARD_MS};
  pthread_t tb;
  pthread_create(&tb, NULL, campaign_thread, &b);
  /* A bounded campaign that cannot win times out; a cancelled one ends at once. */
  campaigner c = {.e = e, .lease = lc, .value = "gamma", .timeout_ms = 300};
  campaign_thread(&c);
  CU_ASSERT_EQUAL(c.rc, MS_ERR);
  CU_ASSERT_EQUAL(c.code, MS_DEADLINE_EXCEEDED);
  c = (campaigner){.e = e, .lease = lc, .value = "gamma", .cancel = ms_etcd_cancel_new()};
  pthread_t tc;
  pthread_create(&tc, NULL, campaign_thread, &c);
  ms_time_sleep_ms(200);
  ms_etcd_cancel_trigger(c.cancel);
  pthread_join(tc, NULL);
  CU_ASSERT_EQUAL(c.rc, MS_ERR);
  CU_ASSERT_EQUAL(c.code, MS_CANCELLED);
  ms_etcd_cancel_free(c.cancel);

  CU_ASSERT_EQUAL(atomic_load(&b.done), 0); /* alpha still leads */
  MS_ASSERT_OK(ms_etcd_proclaim(e, &a.key, "alpha2", 6, &err), &err);
  MS_ASSERT_OK(ms_etcd_resign(e, &a.key, &err), &err);
  pthread_join(tb, NULL);
  CU_ASSERT_EQUAL_FATAL(b.rc, 0);
  MS_ASSERT_OK(ms_etcd_leader(e, "elect", 5, &kv, &err), &err);
  CU_ASSERT_STRING_EQUAL(kv.value, "beta");
  CU_ASSERT_EQUAL(kv.lease, lb);
  ms_etcd_kv_release(&kv);
  CU_ASSERT_TRUE(wait_int(&ob.n, 3));
  pthread_mutex_lock(&ob.mu);
  CU_ASSERT_STRING_EQUAL(ob.values[0], "alpha");
  CU_ASSERT_STRING_EQUAL(ob.values[1], "alpha2");
  CU_ASSERT_STRING_EQUAL(ob.values[2], "beta");
  pthread_mutex_unlock(&ob.mu);
  ms_etcd_observe_stop(obs);
  MS_ASSERT_OK(ms_etcd_resign(e, &b.key, &err), &err);
  ms_etcd_leader_key_release(&a.key);
  ms_etcd_leader_key_release(&b.key);
  for (int i = 0; i < 3; i++)
    ms_etcd_lease_revoke(e, i == 0 ? la : i == 1 ? lb : lc, NULL);
  ms_etcd_free(e);
}

/* ---- auth ---------------------------------------------------------------------- */

static void test_auth(void) {
  ms_test_etcd *h = own_etcd();
  ms_error *err = NULL;
  const char *add[] = {"user", "add", "root:s3cret", NULL};
  const char *grant[] = {"user", "grant-role", "root", "root", NULL};
  const char *enable[] = {"auth", "enable", NULL};
  MS_ASSERT_OK(ms_test_etcd_ctl(h, &err, add), &err);
  MS_ASSERT_OK(ms_test_etcd_ctl(h, &err, grant), &err);
  MS_ASSERT_OK(ms_test_etcd_ctl(h, &err, enable), &err);
  const char *eps[] = {ms_test_etcd_endpoint(h)};
  ms_etcd_options o = {.endpoints = eps, .n_endpoints = 1, .username = "root", .password = "s3cret"};
  ms_etcd *e = ms_etcd_new(&o, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(e);
  MS_ASSERT_OK(put_s(e, "auth/k", "v", NULL, &err), &err);
  CU_ASSERT_TRUE(has_key(e, "auth/k"));
  watcher w;
  watcher_init(&w);
  ms_etcd_watch *wa = ms_etcd_watch_start(e, "auth/", 5, true, 0, &watch_cb, &w, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(wa);
  CU_ASSERT_TRUE(wait_int(&w.ups, 1));
  MS_ASSERT_OK(put_s(e, "auth/k", "w", NULL, &err), &err);
  CU_ASSERT_TRUE(wait_int(&w.n, 1));
  ms_etcd_watch_stop(wa);
  /* Turning auth off and on drops every token: the client authenticates again. */
  const char *off[] = {"--user", "root:s3cret", "auth", "disable", NULL};
  MS_ASSERT_OK(ms_test_etcd_ctl(h, &err, off), &err);
  MS_ASSERT_OK(ms_test_etcd_ctl(h, &err, enable), &err);
  MS_ASSERT_OK(put_s(e, "auth/k", "again", NULL, &err), &err);
  ms_etcd_free(e);
  /* Wrong password, and no credentials at all. */
  o.password = "wrong";
  e = ms_etcd_new(&o, &err);
  CU_ASSERT_EQUAL(put_s(e, "auth/k", "v", NULL, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_UNAUTHENTICATED);
  printf("\n    %s\n", err->msg);
  ms_etcd_free(e);
  o.username = o.password = NULL;
  e = ms_etcd_new(&o, &err);
  CU_ASSERT_EQUAL(put_s(e, "auth/k", "v", NULL, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_UNAUTHENTICATED);
  printf("    %s\n", err->msg);
  ms_error_free(err);
  ms_etcd_free(e);
  ms_test_etcd_free(h);
}

/* ---- TLS ------------------------------------------------------------------------ */

static void test_tls(void) {
  _cleanup_free_ char *dir = ms_test_tmpdir("meseta-etcd-tls");
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_test_etcd_make_certs(dir, &err), &err);
  _cleanup_free_ char *ca_pem = ms_xasprintf("%s/ca.pem", dir);
  _cleanup_free_ char *srv_pem = ms_xasprintf("%s/server.pem", dir);
  _cleanup_free_ char *srv_key = ms_xasprintf("%s/server.key", dir);
  _cleanup_free_ char *cli_pem = ms_xasprintf("%s/client.pem", dir);
  _cleanup_free_ char *cli_key = ms_xasprintf("%s/client.key", dir);
  ms_test_etcd_tls tls = {.cert_file = srv_pem,
                          .key_file = srv_key,
                          .client_ca_file = ca_pem,
                          .client_cert_file = cli_pem,
                          .client_key_file = cli_key};
  ms_test_etcd *h = ms_test_etcd_start_tls(&tls, &err);
  if (!h)
    fprintf(stderr, "start etcd: %s\n", err->msg);
  CU_ASSERT_PTR_NOT_NULL_FATAL(h);
  const char *eps[] = {ms_test_etcd_endpoint(h)};
  ms_etcd_options o = {
      .endpoints = eps, .n_endpoints = 1, .ca_file = ca_pem, .cert_file = cli_pem, .key_file = cli_key};
  ms_etcd *e = ms_etcd_new(&o, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(e);
  MS_ASSERT_OK(put_s(e, "tls/k", "v", NULL, &err), &err);
  watcher w;
  watcher_init(&w);
  ms_etcd_watch *wa = ms_etcd_watch_start(e, "tls/", 4, true, 1, &watch_cb, &w, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(wa);
  CU_ASSERT_TRUE(wait_int(&w.n, 1));
  ms_etcd_watch_stop(wa);
  ms_etcd_free(e);
  /* Without a client certificate, and without trusting etcd's CA: refused, named. */
  o.cert_file = o.key_file = NULL;
  e = ms_etcd_new(&o, &err);
  CU_ASSERT_EQUAL(put_s(e, "tls/k", "v", NULL, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_UNAVAILABLE);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, ms_test_etcd_endpoint(h)));
  printf("\n    %s\n", err->msg);
  ms_etcd_free(e);
  o = (ms_etcd_options){.endpoints = eps, .n_endpoints = 1, .cert_file = cli_pem, .key_file = cli_key};
  e = ms_etcd_new(&o, &err);
  CU_ASSERT_EQUAL(put_s(e, "tls/k", "v", NULL, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_UNAVAILABLE);
  printf("    %s\n", err->msg);
  ms_error_free(err);
  ms_etcd_free(e);
  ms_test_etcd_free(h);
  ms_test_rmtree(dir);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"binary_round_trip", test_binary_round_trip},
      {"prefix_limit", test_prefix_limit},
      {"old_revision_and_serializable", test_old_revision_and_serializable},
      {"txn_cas_race", test_txn_cas_race},
      {"txn_create_if_absent", test_txn_create_if_absent},
      {"lease_revoke_and_unknown", test_lease_revoke},
      {"lease_keeper", test_lease_keeper},
      {"watch_order", test_watch_order},
      {"watch_resume_after_restart", test_watch_resume_after_restart},
      {"watch_compacted", test_watch_compacted},
      {"outage_and_recovery", test_outage_and_recovery},
      {"failover", test_failover},
      {"too_large", test_too_large},
      {"election", test_election},
      {"auth", test_auth},
      {"tls", test_tls},
      {NULL, NULL},
  };
  int rc = ms_test_main(argc, argv, "etcd", cases);
  ms_test_etcd_free(shared_etcd);
  return rc;
}
