/* etcd's answers arrive from the network: whatever JSON comes back must never crash
 * the parsers, and a refusal must say something. base64 must round-trip. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/buf.h"

#include "etcd-internal.h"

static void check(int rc, ms_error *err) {
  if (rc < 0 && (!err || !err->msg || !*err->msg))
    abort();
  ms_error_free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
  if (j) {
    ms_error *err = NULL;
    ms_etcd_range_result r = {0};
    int rc = ms_etcd__range_from_json(j, &r, &err);
    check(rc, err);
    if (rc == 0)
      ms_etcd_range_result_release(&r);
    err = NULL;
    ms_etcd_kv kv = {0};
    rc = ms_etcd__kv_from_json(j, &kv, &err);
    check(rc, err);
    if (rc == 0)
      ms_etcd_kv_release(&kv);
    err = NULL;
    check(ms_etcd__answer_error("http://127.0.0.1:2379", "/v3/kv/range", 200, j, &err), err);
    (void)ms_etcd__jrevision(j);
    json_decref(j);
  }
  /* The input as base64 text: decode, and if it decodes, encoding gives it back. */
  char *out = NULL;
  size_t n = 0;
  ms_error *err = NULL;
  if (ms_etcd__b64_decode((const char *)data, size, &out, &n, &err) == 0) {
    ms_buf b;
    ms_buf_init(&b, 4 * size + 16);
    if (ms_etcd__b64_append(&b, out, n, NULL) < 0)
      abort();
    char *again = NULL;
    size_t m = 0;
    if (ms_etcd__b64_decode(b.data, b.len, &again, &m, NULL) < 0 || m != n || memcmp(again, out, n) != 0)
      abort();
    free(again);
    ms_buf_release(&b);
    free(out);
  } else {
    check(-1, err);
  }
  /* Raw bytes as data: base64 round trip. */
  ms_buf b;
  ms_buf_init(&b, 4 * size + 16);
  if (ms_etcd__b64_append(&b, data, size, NULL) < 0)
    abort();
  char *back = NULL;
  size_t k = 0;
  if (ms_etcd__b64_decode(b.data, b.len, &back, &k, NULL) < 0 || k != size ||
      (size && memcmp(back, data, size)))
    abort();
  free(back);
  ms_buf_release(&b);
  return 0;
}
