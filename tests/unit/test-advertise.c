/* Advertised addresses (issue 13 point 2: an allocator bound to 0.0.0.0 advertised
 * 0.0.0.0:5053, which every other container dials as itself). */
#include <stdlib.h>
#include <string.h>

#include "meseta/advertise.h"
#include "meseta/alloc.h"

#include "testlib.h"

static char *advertised(const char *given, const char *bound, const char *hostname) {
  char *ret = NULL;
  ms_error *err = NULL;
  if (ms_advertise_address("--advertise-address", given, bound, hostname, &ret, &err) < 0) {
    ms_error_free(err);
    return NULL;
  }
  return ret;
}

static void expect_refused(const char *given, const char *bound, const char *hostname, const char *needle) {
  char *ret = NULL;
  ms_error *err = NULL;
  CU_ASSERT_EQUAL(ms_advertise_address("--advertise-address", given, bound, hostname, &ret, &err), MS_ERR);
  CU_ASSERT_PTR_NULL(ret);
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "--advertise-address"));
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, needle));
  ms_error_free(err);
}

static void test_deploy_2_unspecified_bind_advertises_hostname(void) {
  _cleanup_free_ char *v4 = advertised(NULL, "0.0.0.0:5053", "allocator-a");
  CU_ASSERT_STRING_EQUAL(v4, "allocator-a:5053");
  _cleanup_free_ char *v6 = advertised(NULL, "[::]:41000", "node7");
  CU_ASSERT_STRING_EQUAL(v6, "node7:41000");
  _cleanup_free_ char *v6long = advertised(NULL, "[0:0:0:0:0:0:0:0]:5053", "node7");
  CU_ASSERT_STRING_EQUAL(v6long, "node7:5053");
  /* Without a hostname there is nothing to advertise: the flag is needed. */
  expect_refused(NULL, "0.0.0.0:5053", "", "any address");
}

static void test_deploy_2_specific_bind_kept(void) {
  _cleanup_free_ char *ip = advertised(NULL, "10.1.2.3:5053", "h");
  CU_ASSERT_STRING_EQUAL(ip, "10.1.2.3:5053");
  _cleanup_free_ char *lo = advertised(NULL, "127.0.0.1:40001", "h");
  CU_ASSERT_STRING_EQUAL(lo, "127.0.0.1:40001");
  _cleanup_free_ char *unix_addr = advertised(NULL, "unix:/run/a.sock", "h");
  CU_ASSERT_STRING_EQUAL(unix_addr, "unix:/run/a.sock");
}

static void test_deploy_2_given_address(void) {
  _cleanup_free_ char *name = advertised("allocator-b:5053", "0.0.0.0:5053", "h");
  CU_ASSERT_STRING_EQUAL(name, "allocator-b:5053");
  _cleanup_free_ char *v6 = advertised("[fd00::1]:5053", "0.0.0.0:5053", "h");
  CU_ASSERT_STRING_EQUAL(v6, "[fd00::1]:5053");
  expect_refused("0.0.0.0:5053", "0.0.0.0:5053", "h", "0.0.0.0");
  expect_refused("[::]:5053", "0.0.0.0:5053", "h", "::");
  expect_refused(":5053", "0.0.0.0:5053", "h", "empty host");
  expect_refused("allocator-b", "0.0.0.0:5053", "h", "HOST:PORT");
  expect_refused("allocator-b:0", "0.0.0.0:5053", "h", "HOST:PORT");
  expect_refused("allocator-b:x", "0.0.0.0:5053", "h", "HOST:PORT");
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"deploy_2_unspecified_bind_advertises_hostname", test_deploy_2_unspecified_bind_advertises_hostname},
      {"deploy_2_specific_bind_kept", test_deploy_2_specific_bind_kept},
      {"deploy_2_given_address", test_deploy_2_given_address},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "advertise", cases);
}
