/* ms_mkdirs: parents made, existing directories fine, a file in the way named. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/fs.h"

#include "testlib.h"

static void test_mkdirs(void) {
  _cleanup_free_ char *dir = ms_test_tmpdir("test-fs");
  _cleanup_free_ char *deep = ms_xasprintf("%s/a/b/c", dir);
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_mkdirs(deep, &err), &err);
  struct stat st;
  CU_ASSERT(stat(deep, &st) == 0 && S_ISDIR(st.st_mode));
  MS_ASSERT_OK(ms_mkdirs(deep, &err), &err); /* again: nothing to do */
  _cleanup_free_ char *slash = ms_xasprintf("%s/d/e/", dir);
  MS_ASSERT_OK(ms_mkdirs(slash, &err), &err); /* a trailing slash */
  _cleanup_free_ char *file = ms_xasprintf("%s/f", dir);
  FILE *f = fopen(file, "we");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fclose(f);
  _cleanup_free_ char *under = ms_xasprintf("%s/f/g", dir);
  CU_ASSERT_EQUAL(ms_mkdirs(under, &err), MS_ERR);
  if (err) {
    CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "/f/g"));
    ms_error_free(err);
    err = NULL;
  }
  CU_ASSERT_EQUAL(ms_mkdirs("", &err), MS_ERR);
  ms_error_free(err);
  ms_test_rmtree(dir);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {{"mkdirs", test_mkdirs}, {NULL, NULL}};
  return ms_test_main(argc, argv, "fs", cases);
}
