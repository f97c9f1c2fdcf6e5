#include "testlib.h"

#include <CUnit/Basic.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meseta/alloc.h"

static bool selected(int argc, char **argv, const char *name) {
  if (argc <= 1)
    return true;
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], name) == 0)
      return true;
  return false;
}

int ms_test_main(int argc, char **argv, const char *suite_name, const ms_test_case *cases) {
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  CU_pSuite suite = CU_add_suite(suite_name, NULL, NULL);
  if (!suite) {
    CU_cleanup_registry();
    return 1;
  }
  for (const ms_test_case *c = cases; c->name; c++)
    if (selected(argc, argv, c->name))
      CU_add_test(suite, c->name, c->fn);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
  unsigned run = CU_get_number_of_tests_run();
  CU_cleanup_registry();
  if (run == 0) {
    fprintf(stderr, "no test ran\n");
    return 1;
  }
  return failed ? 1 : 0;
}

void ms_test_skip(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("SKIP: ", stdout);
  vprintf(fmt, ap);
  fputc('\n', stdout);
  va_end(ap);
  fflush(stdout);
  exit(77);
}

char *ms_test_tmpdir(const char *prefix) {
  const char *base = getenv("TMPDIR");
  char *tmpl = ms_xasprintf("%s/%s-XXXXXX", base && *base ? base : "/tmp", prefix);
  if (!mkdtemp(tmpl)) {
    perror("mkdtemp");
    abort();
  }
  return tmpl;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

void ms_test_rmtree(const char *path) {
  if (path)
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}
