/* Errors that carry their story up the stack.
 *
 * A function that can fail returns int (negative on failure, see MS_ERR) and takes
 * `ms_error **err` last. The innermost failure creates the error with a message that
 * names its subject; callers add context with ms_error_prefix() as it climbs. The
 * gRPC layer turns an error into a status in one place (ms_rpc_call_finish_error, rpc.h).
 *
 * Ownership: *err, once set, belongs to the caller that passed `err`; free it with
 * ms_error_free(). Passing err == NULL discards the error. Setting an error where one
 * is already set replaces (and frees) the old one. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>

/* gRPC status codes, so an error maps to a status without a table. */
typedef enum ms_status {
  MS_OK = 0,
  MS_CANCELLED = 1,
  MS_UNKNOWN = 2,
  MS_INVALID_ARGUMENT = 3,
  MS_DEADLINE_EXCEEDED = 4,
  MS_NOT_FOUND = 5,
  MS_ALREADY_EXISTS = 6,
  MS_PERMISSION_DENIED = 7,
  MS_RESOURCE_EXHAUSTED = 8,
  MS_FAILED_PRECONDITION = 9,
  MS_ABORTED = 10,
  MS_OUT_OF_RANGE = 11,
  MS_UNIMPLEMENTED = 12,
  MS_INTERNAL = 13,
  MS_UNAVAILABLE = 14,
  MS_DATA_LOSS = 15,
  MS_UNAUTHENTICATED = 16,
} ms_status;

typedef struct ms_error {
  ms_status code; /* never MS_OK */
  int errnum;     /* the errno behind it, 0 if none */
  char *msg;      /* one line, owned by the error */
} ms_error;

/* The value every failing function returns. */
#define MS_ERR (-1)

/* Sets *err to a new error with `code` and a printf-style message. Returns MS_ERR. */
int ms_error_set(ms_error **err, ms_status code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int ms_error_setv(ms_error **err, ms_status code, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Like ms_error_set, with the code derived from errnum and ": strerror(errnum)"
 * appended to the message. Returns MS_ERR. */
int ms_error_set_errno(ms_error **err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "context: " to an existing error's message (no-op if err or *err is
 * NULL). Returns MS_ERR so callers can `return ms_error_prefix(err, ...)`. */
int ms_error_prefix(ms_error **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Frees an error; NULL is fine. */
void ms_error_free(ms_error *e);

/* The status code for an errno value (ENOENT -> NOT_FOUND, EINVAL -> INVALID_ARGUMENT...). */
ms_status ms_status_from_errno(int errnum);

/* "INVALID_ARGUMENT" etc.; "UNKNOWN" for values out of range. Static storage. */
const char *ms_status_name(ms_status code);

/* Parses a status name ("NOT_FOUND", case-insensitive) or number. Returns false if unknown. */
bool ms_status_parse(const char *s, ms_status *ret_code);
