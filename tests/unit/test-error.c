#include <errno.h>
#include <string.h>

#include "meseta/error.h"

#include "testlib.h"

static int inner(ms_error **err) {
  return ms_error_set_errno(err, ENOENT, "open `%s`", "/nope");
}

static int outer(ms_error **err) {
  if (inner(err) < 0)
    return ms_error_prefix(err, "load config");
  return 0;
}

static void test_message_climbs(void) {
  ms_error *err = NULL;
  CU_ASSERT_EQUAL(outer(&err), MS_ERR);
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_STRING_EQUAL(err->msg, "load config: open `/nope`: No such file or directory");
  CU_ASSERT_EQUAL(err->code, MS_NOT_FOUND);
  CU_ASSERT_EQUAL(err->errnum, ENOENT);
  ms_error_free(err);
}

static void test_set_replaces(void) {
  ms_error *err = NULL;
  ms_error_set(&err, MS_ABORTED, "first");
  ms_error_set(&err, MS_INVALID_ARGUMENT, "field `%s` is empty", "name");
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
  CU_ASSERT_STRING_EQUAL(err->msg, "field `name` is empty");
  ms_error_free(err);
}

static void test_null_err_is_discarded(void) {
  CU_ASSERT_EQUAL(ms_error_set(NULL, MS_INTERNAL, "x"), MS_ERR);
  CU_ASSERT_EQUAL(ms_error_prefix(NULL, "y"), MS_ERR);
  ms_error_free(NULL);
}

static void test_ok_code_becomes_unknown(void) {
  ms_error *err = NULL;
  ms_error_set(&err, MS_OK, "no code");
  CU_ASSERT_EQUAL(err->code, MS_UNKNOWN);
  ms_error_free(err);
}

static void test_errno_mapping(void) {
  CU_ASSERT_EQUAL(ms_status_from_errno(EINVAL), MS_INVALID_ARGUMENT);
  CU_ASSERT_EQUAL(ms_status_from_errno(EEXIST), MS_ALREADY_EXISTS);
  CU_ASSERT_EQUAL(ms_status_from_errno(EACCES), MS_PERMISSION_DENIED);
  CU_ASSERT_EQUAL(ms_status_from_errno(ETIMEDOUT), MS_DEADLINE_EXCEEDED);
  CU_ASSERT_EQUAL(ms_status_from_errno(ECONNREFUSED), MS_UNAVAILABLE);
  CU_ASSERT_EQUAL(ms_status_from_errno(E2BIG), MS_RESOURCE_EXHAUSTED);
  CU_ASSERT_EQUAL(ms_status_from_errno(EIO), MS_INTERNAL);
}

static void test_status_names(void) {
  CU_ASSERT_STRING_EQUAL(ms_status_name(MS_FAILED_PRECONDITION), "FAILED_PRECONDITION");
  CU_ASSERT_STRING_EQUAL(ms_status_name((ms_status)99), "UNKNOWN");
  ms_status s;
  CU_ASSERT_TRUE(ms_status_parse("not_found", &s));
  CU_ASSERT_EQUAL(s, MS_NOT_FOUND);
  CU_ASSERT_TRUE(ms_status_parse("14", &s));
  CU_ASSERT_EQUAL(s, MS_UNAVAILABLE);
  CU_ASSERT_FALSE(ms_status_parse("17", &s));
  CU_ASSERT_FALSE(ms_status_parse("nope", &s));
  CU_ASSERT_FALSE(ms_status_parse("", &s));
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"message_climbs", test_message_climbs},
      {"set_replaces", test_set_replaces},
      {"null_err_is_discarded", test_null_err_is_discarded},
      {"ok_code_becomes_unknown", test_ok_code_becomes_unknown},
      {"errno_mapping", test_errno_mapping},
      {"status_names", test_status_names},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "error", cases);
}
