#include "meseta/error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "meseta/alloc.h"

static const char *const status_names[] = {
    "OK",        "CANCELLED",       "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS",  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",    "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED",
};

const char *ms_status_name(ms_status code) {
  if ((unsigned)code >= MS_ARRAY_SIZE(status_names))
    return "UNKNOWN";
  return status_names[code];
}

bool ms_status_parse(const char *s, ms_status *ret_code) {
  if (!s || !*s)
    return false;
  for (size_t i = 0; i < MS_ARRAY_SIZE(status_names); i++) {
    if (strcasecmp(s, status_names[i]) == 0) {
      *ret_code = (ms_status)i;
      return true;
    }
  }
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < 0 || v >= (long)MS_ARRAY_SIZE(status_names))
    return false;
  *ret_code = (ms_status)v;
  return true;
}

ms_status ms_status_from_errno(int errnum) {
  switch (errnum) {
  case 0:
    return MS_UNKNOWN;
  case ENOENT:
  case ESRCH:
  case ENXIO:
    return MS_NOT_FOUND;
  case EINVAL:
  case ERANGE:
  case ENAMETOOLONG:
  case EDOM:
    return MS_INVALID_ARGUMENT;
  case EEXIST:
    return MS_ALREADY_EXISTS;
  case EACCES:
  case EPERM:
  case EROFS:
    return MS_PERMISSION_DENIED;
  case ENOMEM:
  case ENOSPC:
  case EMFILE:
  case ENFILE:
  case E2BIG:
  case EMSGSIZE:
  case EDQUOT:
    return MS_RESOURCE_EXHAUSTED;
  case ETIMEDOUT:
    return MS_DEADLINE_EXCEEDED;
  case ECONNREFUSED:
  case ECONNRESET:
  case EHOSTUNREACH:
  case ENETUNREACH:
  case EAGAIN:
  case EPIPE:
  case ENOTCONN:
    return MS_UNAVAILABLE;
  case ECANCELED:
  case EINTR:
    return MS_CANCELLED;
  case ENOSYS:
  case EOPNOTSUPP:
    return MS_UNIMPLEMENTED;
  case EBUSY:
  case ENOTEMPTY:
  case EISDIR:
  case ENOTDIR:
    return MS_FAILED_PRECONDITION;
  default:
    return MS_INTERNAL;
  }
}

/* Handed out when not even an error fits in memory; never freed. */
static ms_error oom_error = {.code = MS_RESOURCE_EXHAUSTED, .errnum = ENOMEM, .msg = (char *)"out of memory"};

static void replace(ms_error **err, ms_error *e) {
  if (*err)
    ms_error_free(*err);
  *err = e;
}

__attribute__((format(printf, 4, 0))) static int make(ms_error **err, ms_status code, int errnum,
                                                      const char *fmt, va_list ap) {
  if (!err)
    return MS_ERR;
  char *msg = NULL;
  if (vasprintf(&msg, fmt, ap) < 0) {
    replace(err, &oom_error);
    return MS_ERR;
  }
  if (errnum) {
    char *full = NULL;
    if (asprintf(&full, "%s: %s", msg, strerror(errnum)) < 0) {
      free(msg);
      replace(err, &oom_error);
      return MS_ERR;
    }
    free(msg);
    msg = full;
  }
  ms_error *e = calloc(1, sizeof(*e));
  if (!e) {
    free(msg);
    replace(err, &oom_error);
    return MS_ERR;
  }
  e->code = code == MS_OK ? MS_UNKNOWN : code;
  e->errnum = errnum;
  e->msg = msg;
  replace(err, e);
  return MS_ERR;
}

int ms_error_setv(ms_error **err, ms_status code, const char *fmt, va_list ap) {
  return make(err, code, 0, fmt, ap);
}

int ms_error_set(ms_error **err, ms_status code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  make(err, code, 0, fmt, ap);
  va_end(ap);
  return MS_ERR;
}

int ms_error_set_errno(ms_error **err, int errnum, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  make(err, ms_status_from_errno(errnum), errnum, fmt, ap);
  va_end(ap);
  return MS_ERR;
}

int ms_error_prefix(ms_error **err, const char *fmt, ...) {
  if (!err || !*err || *err == &oom_error)
    return MS_ERR;
  char *ctx = NULL;
  va_list ap;
  va_start(ap, fmt);
  int n = vasprintf(&ctx, fmt, ap);
  va_end(ap);
  if (n < 0)
    return MS_ERR; /* keep the inner message rather than lose it */
  char *full = NULL;
  if (asprintf(&full, "%s: %s", ctx, (*err)->msg) >= 0) {
    free((*err)->msg);
    (*err)->msg = full;
  }
  free(ctx);
  return MS_ERR;
}

void ms_error_free(ms_error *e) {
  if (!e || e == &oom_error)
    return;
  free(e->msg);
  free(e);
}
