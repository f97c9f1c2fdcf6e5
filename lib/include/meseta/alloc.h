/* Memory helpers and cleanup attributes.
 *
 * ms_x*() abort the process with a message when memory runs out (as crun's
 * xmalloc): a cluster daemon that cannot allocate a few bytes cannot carry on
 * safely, and checking every small allocation hides the real error paths.
 * Everything they return is owned by the caller and freed with free().
 *
 * Cleanup: `_cleanup_free_ char *s = ...;` frees s when it leaves scope;
 * TAKE_PTR(s) hands ownership out and leaves NULL behind. */
#pragma once

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

void *ms_xmalloc(size_t n) __attribute__((malloc, returns_nonnull));
void *ms_xcalloc(size_t count, size_t size) __attribute__((malloc, returns_nonnull));
void *ms_xrealloc(void *p, size_t n) __attribute__((returns_nonnull));
char *ms_xstrdup(const char *s) __attribute__((malloc, returns_nonnull));
char *ms_xstrndup(const char *s, size_t n) __attribute__((malloc, returns_nonnull));
/* asprintf that aborts on failure; the result is the caller's. */
char *ms_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2), malloc, returns_nonnull));

/* Copies at most size-1 bytes of src into dst and terminates it; returns strlen(src)
 * so truncation shows as a return >= size. */
size_t ms_strlcpy(char *dst, const char *src, size_t size);

/* Defines `static inline void name(type *p)` that calls func(*p) when *p is set. */
#define MS_DEFINE_CLEANUP(type, func)                                                                        \
  static inline void func##p(type *p) {                                                                      \
    if (*p)                                                                                                  \
      func(*p);                                                                                              \
  }

static inline void ms_freep(void *p) {
  free(*(void **)p);
}
void ms_closep(int *fd);
void ms_fclosep(FILE **f);

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(ms_freep)
#define _cleanup_close_ _cleanup_(ms_closep)
#define _cleanup_fclose_ _cleanup_(ms_fclosep)

/* Returns p's value and sets p to NULL: ownership moves to whoever takes it. */
#define TAKE_PTR(p)                                                                                          \
  ({                                                                                                         \
    __typeof__(p) _taken = (p);                                                                              \
    (p) = NULL;                                                                                              \
    _taken;                                                                                                  \
  })
/* Same for file descriptors (-1 left behind). */
#define TAKE_FD(fd)                                                                                          \
  ({                                                                                                         \
    int _taken = (fd);                                                                                       \
    (fd) = -1;                                                                                               \
    _taken;                                                                                                  \
  })

#define MS_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
