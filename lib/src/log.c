#include "meseta/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "meseta/alloc.h"

#define LOG_LINE_MAX 8192

static struct {
  char service[64];
  atomic_int level;
  ms_log_format format;
  int fd;
} cfg = {.service = "meseta", .level = MS_LOG_INFO, .format = MS_LOG_TEXT, .fd = 2};

static const char *const level_names[] = {"trace", "debug", "info", "warn", "error", "off"};

void ms_log_init(const char *service, ms_log_level level, ms_log_format format, int fd) {
  if (service)
    ms_strlcpy(cfg.service, service, sizeof(cfg.service));
  atomic_store(&cfg.level, (int)level);
  cfg.format = format;
  cfg.fd = fd >= 0 ? fd : 2;
}

void ms_log_set_level(ms_log_level level) {
  atomic_store(&cfg.level, (int)level);
}
ms_log_level ms_log_get_level(void) {
  return (ms_log_level)atomic_load(&cfg.level);
}
bool ms_log_enabled(ms_log_level level) {
  return (int)level >= atomic_load(&cfg.level) && level < MS_LOG_OFF;
}

const char *ms_log_level_name(ms_log_level level) {
  if ((unsigned)level >= MS_ARRAY_SIZE(level_names))
    return "unknown";
  return level_names[level];
}

int ms_log_level_parse(const char *s, ms_log_level *ret_level, ms_error **err) {
  for (size_t i = 0; s && i < MS_ARRAY_SIZE(level_names); i++) {
    if (strcasecmp(s, level_names[i]) == 0) {
      *ret_level = (ms_log_level)i;
      return 0;
    }
  }
  if (s && strcasecmp(s, "warning") == 0) {
    *ret_level = MS_LOG_WARN;
    return 0;
  }
  return ms_error_set(err, MS_INVALID_ARGUMENT,
                      "log level `%s` is not one of trace, debug, info, warn, error, off", s ? s : "");
}

int ms_log_format_parse(const char *s, ms_log_format *ret_format, ms_error **err) {
  if (s && strcasecmp(s, "text") == 0) {
    *ret_format = MS_LOG_TEXT;
    return 0;
  }
  if (s && strcasecmp(s, "json") == 0) {
    *ret_format = MS_LOG_JSON;
    return 0;
  }
  return ms_error_set(err, MS_INVALID_ARGUMENT, "log format `%s` is not one of text, json", s ? s : "");
}

/* Appends src to buf at *pos, escaping what would break a line (and, for JSON,
 * quotes and backslashes). Truncates at the buffer's end. */
static void put_escaped(char *buf, size_t cap, size_t *pos, const char *src, bool json) {
  for (const unsigned char *p = (const unsigned char *)src; *p && *pos + 7 < cap; p++) {
    unsigned char c = *p;
    if (c == '\n') {
      buf[(*pos)++] = '\\';
      buf[(*pos)++] = 'n';
    } else if (c == '\t' || c == '\r' || c < 0x20 || c == 0x7f) {
      *pos += (size_t)snprintf(buf + *pos, cap - *pos, json ? "\\u%04x" : "\\x%02x", c);
    } else if (json && (c == '"' || c == '\\')) {
      buf[(*pos)++] = '\\';
      buf[(*pos)++] = (char)c;
    } else {
      buf[(*pos)++] = (char)c;
    }
  }
}

static void put_raw(char *buf, size_t cap, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void put_raw(char *buf, size_t cap, size_t *pos, const char *fmt, ...) {
  if (*pos >= cap)
    return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf + *pos, cap - *pos, fmt, ap);
  va_end(ap);
  if (n > 0)
    *pos = *pos + (size_t)n < cap ? *pos + (size_t)n : cap - 1;
}

void ms_log(ms_log_level level, const char *id, const char *fmt, ...) {
  if (!ms_log_enabled(level))
    return;
  char msg[LOG_LINE_MAX / 2];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);

  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char when[64];
  snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

  char line[LOG_LINE_MAX];
  size_t pos = 0;
  bool json = cfg.format == MS_LOG_JSON;
  if (json) {
    put_raw(line, sizeof(line), &pos, "{\"ts\":\"%s\",\"level\":\"%s\",\"service\":\"", when,
            ms_log_level_name(level));
    put_escaped(line, sizeof(line), &pos, cfg.service, true);
    put_raw(line, sizeof(line), &pos, "\",\"pid\":%d", (int)getpid());
    if (id) {
      put_raw(line, sizeof(line), &pos, ",\"id\":\"");
      put_escaped(line, sizeof(line), &pos, id, true);
      put_raw(line, sizeof(line), &pos, "\"");
    }
    put_raw(line, sizeof(line), &pos, ",\"msg\":\"");
    put_escaped(line, sizeof(line), &pos, msg, true);
    put_raw(line, sizeof(line), &pos, "\"}");
  } else {
    put_raw(line, sizeof(line), &pos, "%s %s %s[%d] ", when, ms_log_level_name(level), cfg.service,
            (int)getpid());
    if (id) {
      put_escaped(line, sizeof(line), &pos, id, false);
      put_raw(line, sizeof(line), &pos, ": ");
    }
    put_escaped(line, sizeof(line), &pos, msg, false);
  }
  if (pos >= sizeof(line) - 1)
    pos = sizeof(line) - 2;
  line[pos++] = '\n';
  /* One write per line: O_APPEND / pipe semantics keep lines whole across threads. */
  ssize_t w = write(cfg.fd, line, pos);
  (void)w;
}
