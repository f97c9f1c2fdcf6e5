#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/buf.h"

#include "testlib.h"

static void test_init_allocates_nothing(void) {
  ms_buf b;
  ms_buf_init(&b, 100);
  CU_ASSERT_PTR_NULL(b.data);
  CU_ASSERT_EQUAL(b.len, 0);
  CU_ASSERT_EQUAL(b.cap, 0);
  CU_ASSERT_EQUAL(b.max, 100);
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_buf_append(&b, NULL, 0, &err), &err);
  CU_ASSERT_PTR_NULL(b.data);
  ms_buf_release(&b);
}

static void test_append_and_terminate(void) {
  ms_buf b = MS_BUF_INIT(1024);
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_buf_append(&b, "abc", 3, &err), &err);
  MS_ASSERT_OK(ms_buf_appends(&b, "def", &err), &err);
  MS_ASSERT_OK(ms_buf_putc(&b, '!', &err), &err);
  CU_ASSERT_EQUAL(b.len, 7);
  CU_ASSERT_STRING_EQUAL(b.data, "abcdef!");
  /* Binary content with an embedded NUL keeps its length. */
  MS_ASSERT_OK(ms_buf_append(&b, "x\0y", 3, &err), &err);
  CU_ASSERT_EQUAL(b.len, 10);
  CU_ASSERT_EQUAL(memcmp(b.data + 7, "x\0y", 4), 0);
  ms_buf_release(&b);
  CU_ASSERT_PTR_NULL(b.data);
  CU_ASSERT_EQUAL(b.max, 1024);
}

static void test_appendf(void) {
  ms_buf b = MS_BUF_INIT(4096);
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_buf_appendf(&b, &err, "task `%s` cpus=%.1f", "t-1", 0.5), &err);
  MS_ASSERT_OK(ms_buf_appendf(&b, &err, " mem=%d", 128), &err);
  CU_ASSERT_STRING_EQUAL(b.data, "task `t-1` cpus=0.5 mem=128");
  CU_ASSERT_EQUAL(b.len, strlen(b.data));
  /* Longer than the free tail: takes the second formatting pass. */
  char big[300];
  memset(big, 'z', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  size_t before = b.len;
  MS_ASSERT_OK(ms_buf_appendf(&b, &err, "[%s]", big), &err);
  CU_ASSERT_EQUAL(b.len, before + 301);
  CU_ASSERT_EQUAL(b.data[b.len - 1], ']');
  CU_ASSERT_EQUAL(b.data[b.len], '\0');
  /* An empty format on an empty buffer is fine. */
  ms_buf_reset(&b);
  MS_ASSERT_OK(ms_buf_appendf(&b, &err, "%s", ""), &err);
  CU_ASSERT_EQUAL(b.len, 0);
  CU_ASSERT_STRING_EQUAL(b.data, "");
  ms_buf_release(&b);
}

static void test_grows_geometrically(void) {
  ms_buf b = MS_BUF_INIT(1 << 20);
  ms_error *err = NULL;
  size_t reallocs = 0, last_cap = 0;
  for (int i = 0; i < 100000; i++) {
    MS_ASSERT_OK(ms_buf_putc(&b, (char)('a' + i % 26), &err), &err);
    if (b.cap != last_cap) {
      reallocs++;
      last_cap = b.cap;
    }
  }
  CU_ASSERT_EQUAL(b.len, 100000);
  CU_ASSERT_TRUE(reallocs < 20);
  CU_ASSERT_TRUE(b.cap > b.len);
  CU_ASSERT_EQUAL(b.data[99999], (char)('a' + 99999 % 26));
  ms_buf_release(&b);
}

static void test_limit_refuses_without_partial_append(void) {
  ms_buf b = MS_BUF_INIT(10);
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_buf_appends(&b, "12345678", &err), &err);
  CU_ASSERT_EQUAL(ms_buf_appends(&b, "abc", &err), MS_ERR);
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_EQUAL(err->code, MS_RESOURCE_EXHAUSTED);
  CU_ASSERT_STRING_EQUAL(err->msg, "buffer limit of 10 bytes exceeded (holding 8, adding 3)");
  ms_error_free(err);
  err = NULL;
  CU_ASSERT_EQUAL(b.len, 8);
  CU_ASSERT_STRING_EQUAL(b.data, "12345678");

  /* The formatted path refuses the same way and restores the terminator. */
  CU_ASSERT_EQUAL(ms_buf_appendf(&b, &err, "%d", 123), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_RESOURCE_EXHAUSTED);
  ms_error_free(err);
  err = NULL;
  CU_ASSERT_STRING_EQUAL(b.data, "12345678");

  /* Exactly up to the limit is allowed, and the allocation never exceeds max + 1. */
  MS_ASSERT_OK(ms_buf_appends(&b, "90", &err), &err);
  CU_ASSERT_STRING_EQUAL(b.data, "1234567890");
  CU_ASSERT_TRUE(b.cap <= 11);
  CU_ASSERT_EQUAL(ms_buf_putc(&b, 'x', NULL), MS_ERR);
  CU_ASSERT_EQUAL(ms_buf_append(&b, "", 0, &err), 0);
  ms_buf_release(&b);
}

static void test_size_overflow_refused(void) {
  ms_buf b;
  ms_buf_init(&b, SIZE_MAX);
  CU_ASSERT_EQUAL(b.max, SIZE_MAX - 1);
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_buf_appends(&b, "abc", &err), &err);
  /* len + n would wrap around: must be refused before any arithmetic overflows. */
  CU_ASSERT_EQUAL(ms_buf_append(&b, "x", SIZE_MAX - 1, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_RESOURCE_EXHAUSTED);
  ms_error_free(err);
  CU_ASSERT_STRING_EQUAL(b.data, "abc");
  ms_buf_release(&b);
}

static void test_zero_limit(void) {
  ms_buf b = MS_BUF_INIT(0);
  ms_error *err = NULL;
  CU_ASSERT_EQUAL(ms_buf_putc(&b, 'a', &err), MS_ERR);
  ms_error_free(err);
  CU_ASSERT_PTR_NULL(b.data);
  char *s = ms_buf_steal(&b, NULL);
  CU_ASSERT_STRING_EQUAL(s, "");
  free(s);
}

static void test_reset_keeps_memory(void) {
  ms_buf b = MS_BUF_INIT(100);
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_buf_appends(&b, "hello", &err), &err);
  char *mem = b.data;
  size_t cap = b.cap;
  ms_buf_reset(&b);
  CU_ASSERT_EQUAL(b.len, 0);
  CU_ASSERT_PTR_EQUAL(b.data, mem);
  CU_ASSERT_EQUAL(b.cap, cap);
  CU_ASSERT_STRING_EQUAL(b.data, "");
  MS_ASSERT_OK(ms_buf_appends(&b, "hi", &err), &err);
  CU_ASSERT_PTR_EQUAL(b.data, mem);
  CU_ASSERT_STRING_EQUAL(b.data, "hi");
  ms_buf_release(&b);
}

static void test_truncate(void) {
  ms_buf b = MS_BUF_INIT(100);
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_buf_appends(&b, "hello, world", &err), &err);
  MS_ASSERT_OK(ms_buf_truncate(&b, 5, &err), &err);
  CU_ASSERT_STRING_EQUAL(b.data, "hello");
  CU_ASSERT_EQUAL(ms_buf_truncate(&b, 6, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_OUT_OF_RANGE);
  CU_ASSERT_STRING_EQUAL(err->msg, "truncate buffer to 6 bytes: it holds only 5");
  ms_error_free(err);
  CU_ASSERT_STRING_EQUAL(b.data, "hello");
  MS_ASSERT_OK(ms_buf_truncate(&b, 0, &err), &err);
  CU_ASSERT_STRING_EQUAL(b.data, "");
  ms_buf_release(&b);
  /* Truncating an unallocated buffer to 0 is fine. */
  CU_ASSERT_EQUAL(ms_buf_truncate(&b, 0, NULL), 0);
}

static void test_steal(void) {
  ms_buf b = MS_BUF_INIT(100);
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_buf_appends(&b, "mine", &err), &err);
  size_t len = 0;
  _cleanup_free_ char *s = ms_buf_steal(&b, &len);
  CU_ASSERT_STRING_EQUAL(s, "mine");
  CU_ASSERT_EQUAL(len, 4);
  CU_ASSERT_PTR_NULL(b.data);
  CU_ASSERT_EQUAL(b.len, 0);
  CU_ASSERT_EQUAL(b.cap, 0);
  CU_ASSERT_EQUAL(b.max, 100);
  /* Reusable after steal. */
  MS_ASSERT_OK(ms_buf_appends(&b, "again", &err), &err);
  CU_ASSERT_STRING_EQUAL(b.data, "again");
  ms_buf_release(&b);
}

static void test_cleanup_attribute(void) {
  _cleanup_(ms_buf_releasep) ms_buf b = MS_BUF_INIT(64);
  CU_ASSERT_EQUAL(ms_buf_appends(&b, "freed at scope exit", NULL), 0);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"init_allocates_nothing", test_init_allocates_nothing},
      {"append_and_terminate", test_append_and_terminate},
      {"appendf", test_appendf},
      {"grows_geometrically", test_grows_geometrically},
      {"limit_refuses_without_partial_append", test_limit_refuses_without_partial_append},
      {"size_overflow_refused", test_size_overflow_refused},
      {"zero_limit", test_zero_limit},
      {"reset_keeps_memory", test_reset_keeps_memory},
      {"truncate", test_truncate},
      {"steal", test_steal},
      {"cleanup_attribute", test_cleanup_attribute},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "buf", cases);
}
