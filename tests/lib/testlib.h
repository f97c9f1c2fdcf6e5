/* Shared helpers for meseta's CUnit test binaries.
 *
 * A test binary lists its cases in a NULL-terminated ms_test_case array and returns
 * ms_test_main(argc, argv, "suite", cases) from main(): 0 when every case passed,
 * 1 otherwise. `./test-foo name...` runs only the named cases. */
#pragma once

#include <CUnit/CUnit.h>
#include <stdbool.h>

typedef struct ms_test_case {
  const char *name;
  void (*fn)(void);
} ms_test_case;

int ms_test_main(int argc, char **argv, const char *suite, const ms_test_case *cases);

/* Prints "SKIP: <why>" and exits 77 (CTest's skip code). Only for a machine that
 * truly lacks what the test needs. */
_Noreturn void ms_test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Asserts an ms_error-returning call succeeded, printing the error's message if not. */
#define MS_ASSERT_OK(call, errp)                                                                             \
  do {                                                                                                       \
    int _rc = (call);                                                                                        \
    if (_rc < 0)                                                                                             \
      fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call,                                   \
              *(errp) ? (*(errp))->msg : "(no error set)");                                                  \
    CU_ASSERT_FATAL(_rc >= 0);                                                                               \
  } while (0)

/* A fresh temporary directory under $TMPDIR; the caller frees the string and may
 * remove the tree with ms_test_rmtree. */
char *ms_test_tmpdir(const char *prefix);
void ms_test_rmtree(const char *path);
