#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "meseta/alloc.h"

#include "testlib.h"

static int closed_fd = -1;

static void scope_with_fd(int fd) {
  _cleanup_close_ int f = fd;
  closed_fd = f;
}

static void test_cleanup_close(void) {
  int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  CU_ASSERT_FATAL(fd >= 0);
  scope_with_fd(fd);
  /* The descriptor was closed when the scope ended. */
  CU_ASSERT_EQUAL(fcntl(closed_fd, F_GETFD), -1);
}

static char *make_and_hand_out(void) {
  _cleanup_free_ char *s = ms_xstrdup("kept");
  return TAKE_PTR(s); /* ownership leaves; the cleanup frees NULL */
}

static void test_take_ptr(void) {
  char *s = make_and_hand_out();
  CU_ASSERT_STRING_EQUAL(s, "kept");
  free(s);
  _cleanup_free_ char *p = ms_xstrdup("x");
  char *q = TAKE_PTR(p);
  CU_ASSERT_PTR_NULL(p);
  free(q);
  int fd = 7;
  CU_ASSERT_EQUAL(TAKE_FD(fd), 7);
  CU_ASSERT_EQUAL(fd, -1);
}

static void test_strlcpy(void) {
  char buf[5];
  CU_ASSERT_EQUAL(ms_strlcpy(buf, "abc", sizeof(buf)), 3);
  CU_ASSERT_STRING_EQUAL(buf, "abc");
  CU_ASSERT_EQUAL(ms_strlcpy(buf, "abcdefgh", sizeof(buf)), 8); /* >= size: truncated */
  CU_ASSERT_STRING_EQUAL(buf, "abcd");
  CU_ASSERT_EQUAL(ms_strlcpy(buf, "zz", 0), 2);
  CU_ASSERT_STRING_EQUAL(buf, "abcd");
}

static void test_x_allocators(void) {
  _cleanup_free_ char *s = ms_xasprintf("%s-%d", "agent", 7);
  CU_ASSERT_STRING_EQUAL(s, "agent-7");
  _cleanup_free_ char *n = ms_xstrndup("abcdef", 3);
  CU_ASSERT_STRING_EQUAL(n, "abc");
  _cleanup_free_ char *z = ms_xstrdup(NULL);
  CU_ASSERT_STRING_EQUAL(z, "");
  _cleanup_free_ int *v = ms_xcalloc(4, sizeof(int));
  CU_ASSERT_EQUAL(v[3], 0);
  v = ms_xrealloc(v, 8 * sizeof(int));
  v[7] = 1;
  CU_ASSERT_EQUAL(v[7], 1);
  CU_ASSERT_EQUAL(MS_ARRAY_SIZE((int[3]){0}), 3);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"cleanup_close", test_cleanup_close},
      {"take_ptr", test_take_ptr},
      {"strlcpy", test_strlcpy},
      {"x_allocators", test_x_allocators},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "alloc", cases);
}
