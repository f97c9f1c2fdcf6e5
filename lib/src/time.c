#include "meseta/time.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "meseta/alloc.h"

static int64_t clock_ns(clockid_t id) {
  struct timespec ts;
  /* Cannot fail for these clocks with a valid pointer. */
  clock_gettime(id, &ts);
  return (int64_t)ts.tv_sec * MS_NSEC_PER_SEC + ts.tv_nsec;
}

int64_t ms_time_mono_ns(void) {
  return clock_ns(CLOCK_MONOTONIC);
}
int64_t ms_time_mono_ms(void) {
  return ms_time_mono_ns() / MS_NSEC_PER_MSEC;
}
int64_t ms_time_real_ns(void) {
  return clock_ns(CLOCK_REALTIME);
}
int64_t ms_time_real_ms(void) {
  return ms_time_real_ns() / MS_NSEC_PER_MSEC;
}

void ms_time_sleep_ms(int64_t ms) {
  if (ms <= 0)
    return;
  /* An absolute deadline makes EINTR restarts exact: a relative sleep restarted
   * with the remaining time drifts a little with every signal. */
  if (ms > INT64_MAX / MS_NSEC_PER_MSEC / 2)
    ms = INT64_MAX / MS_NSEC_PER_MSEC / 2; /* ~146 years: keeps the sum below from overflowing */
  int64_t until = ms_time_mono_ns() + ms * MS_NSEC_PER_MSEC;
  struct timespec ts = {.tv_sec = until / MS_NSEC_PER_SEC, .tv_nsec = until % MS_NSEC_PER_SEC};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

typedef struct duration_unit {
  const char *name;
  int64_t ns;
} duration_unit;

/* Matched whole: a unit is the entire run of characters up to the next digit or dot. */
static const duration_unit units[] = {
    {"ns", 1},
    {"us", MS_NSEC_PER_USEC},
    {"\xc2\xb5s", MS_NSEC_PER_USEC}, /* U+00B5 MICRO SIGN */
    {"\xce\xbcs", MS_NSEC_PER_USEC}, /* U+03BC GREEK SMALL LETTER MU, what keyboards often give */
    {"ms", MS_NSEC_PER_MSEC},
    {"s", MS_NSEC_PER_SEC},
    {"m", MS_NSEC_PER_MIN},
    {"h", MS_NSEC_PER_HOUR},
    {"d", MS_NSEC_PER_DAY},
};

#define UNIT_LIST "ns, us, ms, s, m, h or d"

static int64_t unit_ns(const char *name, size_t len) {
  for (size_t i = 0; i < MS_ARRAY_SIZE(units); i++)
    if (strlen(units[i].name) == len && memcmp(units[i].name, name, len) == 0)
      return units[i].ns;
  return 0;
}

static bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

static int not_a_duration(const char *s, ms_error **err) {
  return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s` is not a duration (e.g. `1h30m`, `1.5s`, `150ms`)", s);
}

int ms_duration_parse(const char *s, int64_t *ret_ns, ms_error **err) {
  if (!s || !*s)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "empty duration");
  if (*s == '-')
    return ms_error_set(err, MS_INVALID_ARGUMENT, "duration `%s` is negative", s);
  if (strcmp(s, "0") == 0) {
    *ret_ns = 0;
    return 0;
  }
  /* 128 bits: every partial sum and product below fits, so overflow is one
   * comparison against INT64_MAX rather than a check before each operation. */
  unsigned __int128 total = 0;
  const char *p = s;
  while (*p) {
    const char *piece = p;
    unsigned __int128 whole = 0, frac = 0, scale = 1;
    bool digits = false;
    for (; is_digit(*p); p++) {
      whole = whole * 10 + (unsigned)(*p - '0');
      if (whole > INT64_MAX)
        goto out_of_range;
      digits = true;
    }
    if (*p == '.') {
      p++;
      for (; is_digit(*p); p++) {
        /* Past 18 digits nothing smaller than 1ns per day is left to gain. */
        if (scale < UINT64_C(1000000000000000000)) {
          frac = frac * 10 + (unsigned)(*p - '0');
          scale *= 10;
        }
        digits = true;
      }
    }
    if (!digits)
      return not_a_duration(s, err);
    const char *u = p;
    while (*p && *p != '.' && !is_digit(*p))
      p++;
    if (p == u) {
      if (piece == s && *p == '\0')
        return ms_error_set(err, MS_INVALID_ARGUMENT,
                            "duration `%s` needs a unit (" UNIT_LIST "), e.g. `%ss`", s, s);
      return ms_error_set(err, MS_INVALID_ARGUMENT,
                          "duration `%s` has a number without a unit (" UNIT_LIST ")", s);
    }
    int64_t mult = unit_ns(u, (size_t)(p - u));
    if (!mult)
      return ms_error_set(err, MS_INVALID_ARGUMENT,
                          "duration `%s` has unknown unit `%.*s` (want " UNIT_LIST ")", s, (int)(p - u), u);
    total += whole * (unsigned __int128)mult + frac * (unsigned __int128)mult / scale;
    if (total > INT64_MAX)
      goto out_of_range;
  }
  *ret_ns = (int64_t)total;
  return 0;

out_of_range:
  return ms_error_set(err, MS_INVALID_ARGUMENT,
                      "duration `%s` is out of range (at most 106751d23h47m16.854775807s)", s);
}

/* Appends "<whole>[.<frac>]<unit>" where frac has `width` digits, trailing zeros cut. */
static size_t put_decimal(char *out, size_t pos, uint64_t whole, uint64_t frac, int width, const char *unit) {
  int n = snprintf(out + pos, MS_DURATION_FMT_MAX - pos, "%" PRIu64, whole);
  pos += (size_t)n;
  if (frac) {
    char digits[24];
    snprintf(digits, sizeof(digits), "%0*" PRIu64, width, frac);
    size_t len = strlen(digits);
    while (len > 0 && digits[len - 1] == '0')
      len--;
    n = snprintf(out + pos, MS_DURATION_FMT_MAX - pos, ".%.*s", (int)len, digits);
    pos += (size_t)n;
  }
  n = snprintf(out + pos, MS_DURATION_FMT_MAX - pos, "%s", unit);
  return pos + (size_t)n;
}

char *ms_duration_format(int64_t ns, char *buf, size_t size) {
  char out[MS_DURATION_FMT_MAX];
  size_t pos = 0;
  /* Unsigned so INT64_MIN has a magnitude. */
  uint64_t u = ns < 0 ? -(uint64_t)ns : (uint64_t)ns;
  if (ns < 0)
    out[pos++] = '-';
  if (u == 0) {
    pos = put_decimal(out, pos, 0, 0, 0, "s");
  } else if (u < (uint64_t)MS_NSEC_PER_USEC) {
    pos = put_decimal(out, pos, u, 0, 0, "ns");
  } else if (u < (uint64_t)MS_NSEC_PER_MSEC) {
    pos = put_decimal(out, pos, u / MS_NSEC_PER_USEC, u % MS_NSEC_PER_USEC, 3, "us");
  } else if (u < (uint64_t)MS_NSEC_PER_SEC) {
    pos = put_decimal(out, pos, u / MS_NSEC_PER_MSEC, u % MS_NSEC_PER_MSEC, 6, "ms");
  } else {
    /* From a second up: whole days, hours and minutes, then seconds with a fraction,
     * each only if non-zero ("1h30m", not Go's "1h30m0s"). */
    static const struct {
      uint64_t ns;
      const char *name;
    } parts[] = {{MS_NSEC_PER_DAY, "d"}, {MS_NSEC_PER_HOUR, "h"}, {MS_NSEC_PER_MIN, "m"}};
    for (size_t i = 0; i < MS_ARRAY_SIZE(parts); i++) {
      if (u >= parts[i].ns) {
        pos = put_decimal(out, pos, u / parts[i].ns, 0, 0, parts[i].name);
        u %= parts[i].ns;
      }
    }
    if (u)
      pos = put_decimal(out, pos, u / MS_NSEC_PER_SEC, u % MS_NSEC_PER_SEC, 9, "s");
  }
  (void)pos;
  if (size)
    ms_strlcpy(buf, out, size);
  return buf;
}

void ms_cond_init_mono(pthread_cond_t *c) {
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(c, &ca);
  pthread_condattr_destroy(&ca);
}

struct timespec ms_time_mono_after(int64_t ms) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  if (ms < 0)
    ms = 0;
  int64_t ns = ts.tv_nsec + ms % 1000 * MS_NSEC_PER_MSEC;
  ts.tv_sec += ms / 1000 + ns / MS_NSEC_PER_SEC;
  ts.tv_nsec = ns % MS_NSEC_PER_SEC;
  return ts;
}
