/* Levelled, one-line logging.
 *
 * Lines are written with a single write(2) so concurrent threads never interleave:
 *   text: 2026-11-21T06:23:27.123Z info meseta-agent[412] task=t-1: launched
 *   json: {"ts":"...","level":"info","service":"meseta-agent","pid":412,"id":"task=t-1","msg":"launched"}
 * Newlines and control characters in messages are escaped so a line stays a line.
 * `id` names the subject (task=..., agent=..., framework=...) and may be NULL.
 *
 * Library code (lib/) logs at debug at most; services decide what else to log.
 * All functions are thread-safe; configuration is meant to be set once at start. */
#pragma once

#include <stdbool.h>

#include "meseta/error.h"

typedef enum ms_log_level {
  MS_LOG_TRACE = 0,
  MS_LOG_DEBUG,
  MS_LOG_INFO,
  MS_LOG_WARN,
  MS_LOG_ERROR,
  MS_LOG_OFF,
} ms_log_level;

typedef enum ms_log_format { MS_LOG_TEXT = 0, MS_LOG_JSON } ms_log_format;

/* `service` is copied. fd is where lines go (2 by default). */
void ms_log_init(const char *service, ms_log_level level, ms_log_format format, int fd);
void ms_log_set_level(ms_log_level level);
ms_log_level ms_log_get_level(void);
bool ms_log_enabled(ms_log_level level);

/* "trace" .. "error", "off". */
const char *ms_log_level_name(ms_log_level level);
int ms_log_level_parse(const char *s, ms_log_level *ret_level, ms_error **err);
int ms_log_format_parse(const char *s, ms_log_format *ret_format, ms_error **err);

void ms_log(ms_log_level level, const char *id, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define ms_log_at(level, id, ...)                                                                            \
  do {                                                                                                       \
    if (ms_log_enabled(level))                                                                               \
      ms_log(level, id, __VA_ARGS__);                                                                        \
  } while (0)
#define ms_log_trace(id, ...) ms_log_at(MS_LOG_TRACE, id, __VA_ARGS__)
#define ms_log_debug(id, ...) ms_log_at(MS_LOG_DEBUG, id, __VA_ARGS__)
#define ms_log_info(id, ...) ms_log_at(MS_LOG_INFO, id, __VA_ARGS__)
#define ms_log_warn(id, ...) ms_log_at(MS_LOG_WARN, id, __VA_ARGS__)
#define ms_log_error(id, ...) ms_log_at(MS_LOG_ERROR, id, __VA_ARGS__)
