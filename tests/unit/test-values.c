#include <math.h>
#include <string.h>

#include "meseta/values.h"

#include "testlib.h"

static void test_scalar_rounding(void) {
  ms_error *err = NULL;
  ms_scalar s;
  MS_ASSERT_OK(ms_scalar_from_double(0.1, "x", &s, &err), &err);
  CU_ASSERT_EQUAL(s, 100);
  MS_ASSERT_OK(ms_scalar_from_double(1.0005, "x", &s, &err), &err);
  CU_ASSERT_EQUAL(s, 1001); /* half away from zero */
  MS_ASSERT_OK(ms_scalar_from_double(1.0004, "x", &s, &err), &err);
  CU_ASSERT_EQUAL(s, 1000);
  MS_ASSERT_OK(ms_scalar_from_double(-0.0, "x", &s, &err), &err);
  CU_ASSERT_EQUAL(s, 0);
  CU_ASSERT_DOUBLE_EQUAL(ms_scalar_to_double(1500), 1.5, 1e-12);
}

static void test_scalar_refusals(void) {
  ms_error *err = NULL;
  ms_scalar s = 7;
  CU_ASSERT_EQUAL(ms_scalar_from_double(NAN, "resource `cpus`", &s, &err), MS_ERR);
  CU_ASSERT_STRING_EQUAL(err->msg, "resource `cpus`: scalar value is not a finite number");
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
  CU_ASSERT_EQUAL(ms_scalar_from_double(INFINITY, "x", &s, &err), MS_ERR);
  CU_ASSERT_EQUAL(ms_scalar_from_double(-1, "resource `mem`", &s, &err), MS_ERR);
  CU_ASSERT_STRING_EQUAL(err->msg, "resource `mem`: scalar value -1 is negative");
  CU_ASSERT_EQUAL(ms_scalar_from_double(2e12, "x", &s, &err), MS_ERR);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "above the limit"));
  CU_ASSERT_EQUAL(s, 7); /* untouched on failure */
  ms_error_free(err);
}

static void test_scalar_text(void) {
  ms_error *err = NULL;
  ms_scalar s;
  char buf[MS_SCALAR_BUFSZ];
  MS_ASSERT_OK(ms_scalar_parse("1.125", 5, "x", &s, &err), &err);
  CU_ASSERT_EQUAL(s, 1125);
  MS_ASSERT_OK(ms_scalar_parse("1e3", 3, "x", &s, &err), &err);
  CU_ASSERT_EQUAL(s, 1000000);
  CU_ASSERT_EQUAL(ms_scalar_parse("inf", 3, "x", &s, &err), MS_ERR);
  CU_ASSERT_EQUAL(ms_scalar_parse("0x10", 4, "x", &s, &err), MS_ERR);
  CU_ASSERT_EQUAL(ms_scalar_parse("", 0, "x", &s, &err), MS_ERR);
  CU_ASSERT_EQUAL(ms_scalar_parse("1.5.", 4, "x", &s, &err), MS_ERR);
  CU_ASSERT_EQUAL(ms_scalar_parse("+1", 2, "x", &s, &err), MS_ERR);
  CU_ASSERT_STRING_EQUAL(ms_scalar_format(4000, buf), "4");
  CU_ASSERT_STRING_EQUAL(ms_scalar_format(500, buf), "0.5");
  CU_ASSERT_STRING_EQUAL(ms_scalar_format(1050, buf), "1.05");
  CU_ASSERT_STRING_EQUAL(ms_scalar_format(1125, buf), "1.125");
  CU_ASSERT_STRING_EQUAL(ms_scalar_format(MS_SCALAR_MAX, buf), "1000000000000");
  ms_error_free(err);
}

/* A million add / subtract cycles of 0.1 leave exactly what was there. */
static void test_scalar_no_drift(void) {
  ms_scalar s = 0, tenth;
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_scalar_from_double(0.1, "x", &tenth, &err), &err);
  for (int i = 0; i < 1000000; i++)
    s += tenth;
  CU_ASSERT_EQUAL(s, 100000 * MS_SCALAR_UNIT);
  for (int i = 0; i < 1000000; i++)
    s -= tenth;
  CU_ASSERT_EQUAL(s, 0);
}

static ms_ranges mk(const uint64_t *pairs, size_t n) {
  ms_ranges r = {0};
  for (size_t i = 0; i < n; i++)
    ms_ranges_push(&r, pairs[2 * i], pairs[2 * i + 1], "t", NULL);
  ms_ranges_normalize(&r);
  return r;
}

static void test_ranges_normalize(void) {
  uint64_t p[] = {10, 20, 1, 2, 3, 5, 15, 25, 30, 30, 31, 31};
  ms_ranges r = mk(p, 6);
  CU_ASSERT_EQUAL_FATAL(r.n, 3);
  CU_ASSERT_EQUAL(r.v[0].begin, 1);
  CU_ASSERT_EQUAL(r.v[0].end, 5); /* adjacent [1-2][3-5] merge */
  CU_ASSERT_EQUAL(r.v[1].begin, 10);
  CU_ASSERT_EQUAL(r.v[1].end, 25);
  CU_ASSERT_EQUAL(r.v[2].begin, 30);
  CU_ASSERT_EQUAL(r.v[2].end, 31);
  CU_ASSERT_EQUAL(ms_ranges_count(&r), 5 + 16 + 2);
  ms_ranges_release(&r);
  ms_error *err = NULL;
  ms_ranges bad = {0};
  CU_ASSERT_EQUAL(ms_ranges_push(&bad, 5, 4, "resource `ports`", &err), MS_ERR);
  CU_ASSERT_STRING_EQUAL(err->msg, "resource `ports`: range [5-4] begins after it ends");
  ms_error_free(err);
  uint64_t edge[] = {UINT64_MAX - 1, UINT64_MAX, 0, 0, 1, UINT64_MAX - 2};
  r = mk(edge, 3);
  CU_ASSERT_EQUAL(r.n, 1);
  CU_ASSERT_EQUAL(ms_ranges_count(&r), UINT64_MAX);
  ms_ranges_release(&r);
}

static void test_ranges_arithmetic(void) {
  uint64_t pa[] = {1, 10, 20, 30}, pb[] = {5, 6, 20, 20, 30, 30}, pc[] = {1, 4, 7, 10, 21, 29};
  ms_ranges a = mk(pa, 2), b = mk(pb, 3), c = mk(pc, 3);
  CU_ASSERT_TRUE(ms_ranges_contains(&a, &b));
  CU_ASSERT_FALSE(ms_ranges_contains(&b, &a));
  ms_ranges_subtract(&a, &b); /* split in the middle and trimmed at both ends */
  CU_ASSERT_TRUE(ms_ranges_equal(&a, &c));
  ms_ranges_union(&a, &b);
  ms_ranges d = mk(pa, 2);
  CU_ASSERT_TRUE(ms_ranges_equal(&a, &d));
  uint64_t pe[] = {0, 0};
  ms_ranges e = mk(pe, 1);
  CU_ASSERT_FALSE(ms_ranges_contains(&a, &e));
  ms_ranges_subtract(&e, &e);
  CU_ASSERT_EQUAL(e.n, 0);
  ms_ranges_release(&a);
  ms_ranges_release(&b);
  ms_ranges_release(&c);
  ms_ranges_release(&d);
  ms_ranges_release(&e);
}

/* Random ranges against a bitmap: union / subtract / contains, small and large operands
 * (both the per-interval and the merging paths). */
static void test_ranges_random(void) {
  uint64_t seed = 42;
  for (int iter = 0; iter < 3000; iter++) {
    bool ma[130] = {0}, mb[130] = {0};
    ms_ranges a = {0}, b = {0};
    for (int side = 0; side < 2; side++) {
      seed = seed * 6364136223846793005ull + 1442695040888963407ull;
      int n = (int)((seed >> 33) % (side ? 7 : 12));
      for (int k = 0; k < n; k++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t lo = (seed >> 33) % 120, len = (seed >> 20) % 6;
        ms_ranges_push(side ? &b : &a, lo, lo + len, "t", NULL);
        for (uint64_t x = lo; x <= lo + len; x++)
          (side ? mb : ma)[x] = true;
      }
    }
    ms_ranges_normalize(&a);
    ms_ranges_normalize(&b);
    bool sub = true;
    for (int x = 0; x < 130; x++)
      sub &= !mb[x] || ma[x];
    CU_ASSERT_EQUAL(ms_ranges_contains(&a, &b), sub);
    ms_ranges u = {0}, d = {0};
    ms_ranges_copy(&u, &a);
    ms_ranges_copy(&d, &a);
    ms_ranges_union(&u, &b);
    ms_ranges_subtract(&d, &b);
    for (int x = 0; x < 130; x++) {
      ms_ranges pt = {0};
      ms_ranges_push(&pt, (uint64_t)x, (uint64_t)x, "t", NULL);
      CU_ASSERT_EQUAL(ms_ranges_contains(&u, &pt), ma[x] || mb[x]);
      CU_ASSERT_EQUAL(ms_ranges_contains(&d, &pt), ma[x] && !mb[x]);
      ms_ranges_release(&pt);
    }
    for (uint32_t k = 1; k < u.n; k++) /* still normalized: sorted, apart */
      CU_ASSERT_TRUE(u.v[k].begin > u.v[k - 1].end + 1);
    for (uint32_t k = 1; k < d.n; k++)
      CU_ASSERT_TRUE(d.v[k].begin > d.v[k - 1].end + 1);
    ms_ranges_release(&a);
    ms_ranges_release(&b);
    ms_ranges_release(&u);
    ms_ranges_release(&d);
  }
}

static void test_sets(void) {
  ms_error *err = NULL;
  ms_set a = {0}, b = {0};
  ms_set_push(&a, "sdb", 3, "t", NULL);
  ms_set_push(&a, "sda", 3, "t", NULL);
  MS_ASSERT_OK(ms_set_normalize(&a, "t", &err), &err);
  CU_ASSERT_STRING_EQUAL(a.v[0], "sda");
  ms_set_push(&b, "sdb", 3, "t", NULL);
  MS_ASSERT_OK(ms_set_normalize(&b, "t", &err), &err);
  CU_ASSERT_TRUE(ms_set_contains(&a, &b));
  CU_ASSERT_FALSE(ms_set_contains(&b, &a));
  CU_ASSERT_TRUE(ms_set_has(&a, "sdb"));
  ms_set_subtract(&a, &b);
  CU_ASSERT_EQUAL(a.n, 1);
  ms_set_union(&a, &b);
  ms_set_union(&a, &b);
  CU_ASSERT_EQUAL(a.n, 2);
  ms_set_push(&a, "sda", 3, "t", NULL);
  CU_ASSERT_EQUAL(ms_set_normalize(&a, "resource `disks`", &err), MS_ERR);
  CU_ASSERT_STRING_EQUAL(err->msg, "resource `disks`: set item `sda` appears twice");
  CU_ASSERT_EQUAL(ms_set_push(&b, "", 0, "t", &err), MS_ERR);
  CU_ASSERT_EQUAL(ms_set_push(&b, "a\nb", 3, "t", &err), MS_ERR);
  ms_error_free(err);
  ms_set_release(&a);
  ms_set_release(&b);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"scalar_rounding", test_scalar_rounding},
      {"scalar_refusals", test_scalar_refusals},
      {"scalar_text", test_scalar_text},
      {"scalar_no_drift", test_scalar_no_drift},
      {"ranges_normalize", test_ranges_normalize},
      {"ranges_arithmetic", test_ranges_arithmetic},
      {"ranges_random", test_ranges_random},
      {"sets", test_sets},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "values", cases);
}
