/* Bounded growable byte buffer (curl's dynbuf habit).
 *
 * Every buffer has a maximum length fixed at init: a buffer that holds what a client
 * sends can never grow past what the caller decided it may hold, and going past it is
 * an ordinary MS_RESOURCE_EXHAUSTED error rather than an out-of-memory abort. A failed
 * append leaves the buffer exactly as it was (no partial append).
 *
 *   ms_buf b;
 *   ms_buf_init(&b, 64 * 1024);
 *   if (ms_buf_appendf(&b, err, "task `%s`", id) < 0) ...
 *   ms_buf_release(&b);
 *
 * Ownership: the buffer owns `data`; ms_buf_release() frees it, ms_buf_steal() hands it
 * to the caller (who frees it with free()). `data` is NULL until the first byte is
 * appended and is always NUL-terminated when non-NULL (the terminator is not counted
 * in `len` and does not count against `max`). The fields are readable; change them
 * only through these functions. Not thread-safe: one owner at a time. */
#pragma once

#include <stdarg.h>
#include <stddef.h>

#include "meseta/error.h"

typedef struct ms_buf {
  char *data; /* NULL or NUL-terminated, owned by the buffer */
  size_t len; /* bytes held, excluding the terminator */
  size_t cap; /* bytes allocated, including room for the terminator */
  size_t max; /* the most `len` may ever be */
} ms_buf;

/* For static or designated initialisation: `ms_buf b = MS_BUF_INIT(4096);`. */
#define MS_BUF_INIT(limit) ((ms_buf){.data = NULL, .len = 0, .cap = 0, .max = (limit)})

/* Makes b empty with a limit of `max` bytes. Allocates nothing. A max of SIZE_MAX is
 * lowered by one so the terminator always has room. */
void ms_buf_init(ms_buf *b, size_t max);

/* Appends n bytes from p (p may be NULL when n is 0). Returns 0, or MS_ERR with
 * MS_RESOURCE_EXHAUSTED when the result would be longer than b->max. */
int ms_buf_append(ms_buf *b, const void *p, size_t n, ms_error **err);

/* Appends the NUL-terminated string s (without its terminator). */
int ms_buf_appends(ms_buf *b, const char *s, ms_error **err);

/* Appends one byte. */
int ms_buf_putc(ms_buf *b, char c, ms_error **err);

/* Appends printf-style formatted text. Same limits and guarantees as ms_buf_append. */
int ms_buf_appendf(ms_buf *b, ms_error **err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int ms_buf_vappendf(ms_buf *b, ms_error **err, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Shortens the content to len bytes, keeping the memory. Returns MS_ERR with
 * MS_OUT_OF_RANGE if len is longer than the current content. */
int ms_buf_truncate(ms_buf *b, size_t len, ms_error **err);

/* Empties the buffer but keeps its memory for reuse (len = 0, data stays allocated). */
void ms_buf_reset(ms_buf *b);

/* Frees the memory; the buffer is empty again with the same max and may be reused. */
void ms_buf_release(ms_buf *b);

/* Hands the content to the caller, who frees it with free(); never NULL (an empty
 * buffer gives an allocated ""). The length goes to *ret_len if ret_len is not NULL.
 * The buffer is left empty with the same max, as after ms_buf_release(). */
char *ms_buf_steal(ms_buf *b, size_t *ret_len);

/* For `_cleanup_(ms_buf_releasep) ms_buf b = MS_BUF_INIT(n);`. */
static inline void ms_buf_releasep(ms_buf *b) {
  ms_buf_release(b);
}
