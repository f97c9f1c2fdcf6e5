/* Clocks and durations.
 *
 * Monotonic time (CLOCK_MONOTONIC) is for measuring and scheduling: timeouts,
 * intervals, deadlines inside the process. Wall time (CLOCK_REALTIME) is only for
 * showing and recording moments (logs, timestamps stored in etcd); it jumps.
 *
 * Durations are int64_t nanoseconds everywhere (about 292 years of range), written as
 * Go writes them plus days: "150ms", "1.5s", "1h30m", "10us" or "10µs", "5ns", "3d".
 * A day here is exactly 24h.
 *
 * Ownership: nothing here allocates; ms_duration_format() writes into the caller's
 * buffer. All functions are thread-safe. */
#pragma once

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "meseta/error.h"

#define MS_NSEC_PER_USEC INT64_C(1000)
#define MS_NSEC_PER_MSEC INT64_C(1000000)
#define MS_NSEC_PER_SEC INT64_C(1000000000)
#define MS_NSEC_PER_MIN (60 * MS_NSEC_PER_SEC)
#define MS_NSEC_PER_HOUR (60 * MS_NSEC_PER_MIN)
#define MS_NSEC_PER_DAY (24 * MS_NSEC_PER_HOUR)

/* Big enough for any int64_t duration: "-106751d23h47m16.854775808s" is 27 bytes. */
#define MS_DURATION_FMT_MAX 32

/* Monotonic clock since an arbitrary point (boot); never goes backwards. */
int64_t ms_time_mono_ns(void);
int64_t ms_time_mono_ms(void);

/* Wall clock since the Unix epoch. */
int64_t ms_time_real_ns(void);
int64_t ms_time_real_ms(void);

/* Condition variables that wait on the monotonic clock: ms_cond_init_mono makes one,
 * ms_time_mono_after gives the absolute deadline `ms` from now to pass to
 * pthread_cond_timedwait on it (ms <= 0: now). */
void ms_cond_init_mono(pthread_cond_t *c);
struct timespec ms_time_mono_after(int64_t ms);

/* Sleeps at least ms milliseconds, resuming after signal handlers (EINTR) until the
 * full time has passed. ms <= 0 returns at once. */
void ms_time_sleep_ms(int64_t ms);

/* Parses a duration such as "0", "150ms", "1.5s", "2m", "1h30m", "10us", "10µs",
 * "5ns", "3d" into nanoseconds. Units: ns, us (or µs), ms, s, m, h, d; a number may
 * have a fraction ("1.5h") and pieces add up ("1h30m"). Refuses, with
 * MS_INVALID_ARGUMENT and a message quoting s: empty input, signs (durations are never
 * negative), numbers without a unit other than "0", unknown units, and values past
 * INT64_MAX nanoseconds. *ret_ns is set only on success. */
int ms_duration_parse(const char *s, int64_t *ret_ns, ms_error **err);

/* Writes the shortest readable form of ns into buf ("1h30m", "1.5s", "150ms", "0s",
 * "-2m"), which ms_duration_parse() reads back to the same value (negatives aside).
 * Truncates like snprintf if size is too small (MS_DURATION_FMT_MAX always fits).
 * Returns buf. */
char *ms_duration_format(int64_t ns, char *buf, size_t size);
