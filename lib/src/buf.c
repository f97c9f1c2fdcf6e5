#include "meseta/buf.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"

/* Small enough not to waste memory on many short strings, big enough that
 * appending a few short pieces does not realloc each time. */
#define BUF_MIN_CAP 32

void ms_buf_init(ms_buf *b, size_t max) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
  /* Keeps max + 1 (room for the terminator) from wrapping around. */
  b->max = max < SIZE_MAX ? max : SIZE_MAX - 1;
}

static int too_big(const ms_buf *b, size_t n, ms_error **err) {
  return ms_error_set(err, MS_RESOURCE_EXHAUSTED,
                      "buffer limit of %zu bytes exceeded (holding %zu, adding %zu)", b->max, b->len, n);
}

/* Makes room for n more bytes plus the terminator. On failure nothing changes. */
static int reserve(ms_buf *b, size_t n, ms_error **err) {
  /* len <= max always holds, so max - len cannot wrap; this is the overflow check too. */
  if (n > b->max - b->len)
    return too_big(b, n, err);
  size_t need = b->len + n + 1; /* <= max + 1, which init keeps representable */
  if (need <= b->cap)
    return 0;
  size_t cap = b->cap ? b->cap : BUF_MIN_CAP;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  /* Geometric growth stops at the limit: never allocate more than may be used. */
  if (cap > b->max + 1)
    cap = b->max + 1;
  b->data = ms_xrealloc(b->data, cap);
  b->cap = cap;
  return 0;
}

int ms_buf_append(ms_buf *b, const void *p, size_t n, ms_error **err) {
  if (n == 0)
    return 0; /* nothing to add, and an unallocated buffer stays unallocated */
  if (reserve(b, n, err) < 0)
    return MS_ERR;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

int ms_buf_appends(ms_buf *b, const char *s, ms_error **err) {
  return ms_buf_append(b, s, strlen(s), err);
}

int ms_buf_putc(ms_buf *b, char c, ms_error **err) {
  return ms_buf_append(b, &c, 1, err);
}

int ms_buf_vappendf(ms_buf *b, ms_error **err, const char *fmt, va_list ap) {
  /* Try the free tail first: most appends fit and need a single formatting pass. */
  size_t room = b->cap - b->len;
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(b->data ? b->data + b->len : NULL, b->data ? room : 0, fmt, ap2);
  va_end(ap2);
  if (n < 0) {
    int errnum = errno ? errno : EINVAL;
    if (b->data)
      b->data[b->len] = '\0';
    return ms_error_set_errno(err, errnum, "format `%s` into buffer", fmt);
  }
  if (b->data && (size_t)n < room) {
    /* It fit, but the limit still applies to what was written. */
    if ((size_t)n > b->max - b->len) {
      b->data[b->len] = '\0';
      return too_big(b, (size_t)n, err);
    }
    b->len += (size_t)n;
    return 0;
  }
  /* vsnprintf overwrote our terminator with the start of the text; restore it so a
   * failure below leaves the buffer unchanged. */
  if (b->data)
    b->data[b->len] = '\0';
  if (reserve(b, (size_t)n, err) < 0)
    return MS_ERR;
  va_copy(ap2, ap);
  vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap2);
  va_end(ap2);
  b->len += (size_t)n;
  return 0;
}

int ms_buf_appendf(ms_buf *b, ms_error **err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int r = ms_buf_vappendf(b, err, fmt, ap);
  va_end(ap);
  return r;
}

int ms_buf_truncate(ms_buf *b, size_t len, ms_error **err) {
  if (len > b->len)
    return ms_error_set(err, MS_OUT_OF_RANGE, "truncate buffer to %zu bytes: it holds only %zu", len, b->len);
  b->len = len;
  if (b->data)
    b->data[len] = '\0';
  return 0;
}

void ms_buf_reset(ms_buf *b) {
  b->len = 0;
  if (b->data)
    b->data[0] = '\0';
}

void ms_buf_release(ms_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

char *ms_buf_steal(ms_buf *b, size_t *ret_len) {
  char *s = b->data ? b->data : ms_xstrdup("");
  if (ret_len)
    *ret_len = b->len;
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
  return s;
}
