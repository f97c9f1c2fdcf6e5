#include <stdlib.h>
#include <string.h>

#include "meseta/roles.h"

#include "testlib.h"

static void expect_bad(const char *role, const char *msg) {
  ms_error *err = NULL;
  CU_ASSERT_EQUAL(ms_role_validate(role, &err), MS_ERR);
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
  if (strcmp(err->msg, msg) != 0)
    fprintf(stderr, "role %s: got \"%s\", want \"%s\"\n", role, err->msg, msg);
  CU_ASSERT_STRING_EQUAL(err->msg, msg);
  ms_error_free(err);
}

static void test_valid(void) {
  const char *ok[] = {"*", "eng", "eng/web/frontend", "a-b", "a.b", "x..y", "ü", "a*b"};
  for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
    CU_ASSERT_TRUE(ms_role_is_valid(ok[i]));
}

static void test_invalid(void) {
  expect_bad("", "role ``: must not be empty");
  expect_bad("/eng", "role `/eng`: must not start with `/`");
  expect_bad("eng/", "role `eng/`: must not end with `/`");
  expect_bad("eng//web", "role `eng//web`: empty component between slashes");
  expect_bad(".", "role `.`: component `.` is not allowed");
  expect_bad("eng/..", "role `eng/..`: component `..` is not allowed");
  expect_bad("-eng", "role `-eng`: component `-eng` starts with `-`");
  expect_bad("eng/-web", "role `eng/-web`: component `-web` starts with `-`");
  expect_bad("eng web", "role `eng web`: whitespace (byte 0x20) at offset 3");
  expect_bad("eng\tweb", "role `eng?web`: whitespace (byte 0x09) at offset 3");
  expect_bad("eng/*", "role `eng/*`: `*` is only valid as the whole role");
  expect_bad("a/*/b", "role `a/*/b`: `*` is only valid as the whole role");
  char *long_role = malloc(MS_ROLE_MAX_LEN + 2);
  memset(long_role, 'a', MS_ROLE_MAX_LEN + 1);
  long_role[MS_ROLE_MAX_LEN + 1] = '\0';
  CU_ASSERT_FALSE(ms_role_is_valid(long_role));
  free(long_role);
  ms_error *err = NULL;
  CU_ASSERT_EQUAL(ms_role_validate(NULL, &err), MS_ERR);
  ms_error_free(err);
}

static void test_ancestry(void) {
  CU_ASSERT_TRUE(ms_role_is_ancestor("eng", "eng/web"));
  CU_ASSERT_TRUE(ms_role_is_ancestor("eng", "eng/web/frontend"));
  CU_ASSERT_FALSE(ms_role_is_ancestor("eng", "eng"));
  CU_ASSERT_FALSE(ms_role_is_ancestor("eng", "engineering/web"));
  CU_ASSERT_FALSE(ms_role_is_ancestor("eng/web", "eng"));
  CU_ASSERT_FALSE(ms_role_is_ancestor("*", "eng"));
  CU_ASSERT_TRUE(ms_role_is_self_or_ancestor("eng", "eng"));
  CU_ASSERT_EQUAL(ms_role_depth("*"), 0);
  CU_ASSERT_EQUAL(ms_role_depth("eng/web/frontend"), 3);
  char *p = ms_role_parent("eng/web/frontend");
  CU_ASSERT_STRING_EQUAL(p, "eng/web");
  free(p);
  CU_ASSERT_PTR_NULL(ms_role_parent("eng"));
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"valid", test_valid},
      {"invalid", test_invalid},
      {"ancestry", test_ancestry},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "roles", cases);
}
