#include "meseta/alloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static _Noreturn void oom(size_t n) {
  /* No allocation here: we are out of memory. */
  char line[96];
  int len = snprintf(line, sizeof(line), "meseta: out of memory allocating %zu bytes\n", n);
  if (len > 0 && write(2, line, (size_t)len) < 0) {
    /* nothing left to do */
  }
  abort();
}

void *ms_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p)
    oom(n);
  return p;
}

void *ms_xcalloc(size_t count, size_t size) {
  void *p = calloc(count ? count : 1, size ? size : 1);
  if (!p)
    oom(count * size);
  return p;
}

void *ms_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q)
    oom(n);
  return q;
}

char *ms_xstrdup(const char *s) {
  char *d = strdup(s ? s : "");
  if (!d)
    oom(s ? strlen(s) : 0);
  return d;
}

char *ms_xstrndup(const char *s, size_t n) {
  char *d = strndup(s ? s : "", n);
  if (!d)
    oom(n);
  return d;
}

char *ms_xasprintf(const char *fmt, ...) {
  char *s = NULL;
  va_list ap;
  va_start(ap, fmt);
  int n = vasprintf(&s, fmt, ap);
  va_end(ap);
  if (n < 0)
    oom(strlen(fmt));
  return s;
}

size_t ms_strlcpy(char *dst, const char *src, size_t size) {
  size_t len = strlen(src);
  if (size) {
    size_t n = len < size - 1 ? len : size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
  }
  return len;
}

void ms_closep(int *fd) {
  if (*fd >= 0)
    close(*fd);
}

void ms_fclosep(FILE **f) {
  if (*f)
    fclose(*f);
}
