#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "meseta/time.h"

#include "testlib.h"

static void test_clocks(void) {
  int64_t a = ms_time_mono_ns();
  int64_t b = ms_time_mono_ns();
  CU_ASSERT_TRUE(a > 0);
  CU_ASSERT_TRUE(b >= a);
  CU_ASSERT_TRUE(ms_time_mono_ms() >= a / MS_NSEC_PER_MSEC);
  /* Wall clock: sometime after 2020-01-01 and consistent between units. */
  int64_t real_ms = ms_time_real_ms();
  CU_ASSERT_TRUE(real_ms > INT64_C(1577836800000));
  CU_ASSERT_TRUE(ms_time_real_ns() / MS_NSEC_PER_MSEC >= real_ms);
}

/* A deadline on the monotonic clock, and a monotonic condition waits until it. */
static void test_mono_deadline(void) {
  int64_t before = ms_time_mono_ns();
  struct timespec ts = ms_time_mono_after(1500);
  int64_t at = (int64_t)ts.tv_sec * MS_NSEC_PER_SEC + ts.tv_nsec;
  CU_ASSERT(ts.tv_nsec >= 0 && ts.tv_nsec < MS_NSEC_PER_SEC);
  CU_ASSERT(at >= before + 1500 * MS_NSEC_PER_MSEC);
  CU_ASSERT(at <= ms_time_mono_ns() + 1500 * MS_NSEC_PER_MSEC);
  ts = ms_time_mono_after(-5); /* the past is now */
  CU_ASSERT((int64_t)ts.tv_sec * MS_NSEC_PER_SEC + ts.tv_nsec <= ms_time_mono_ns());
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  pthread_cond_t cv;
  ms_cond_init_mono(&cv);
  pthread_mutex_lock(&mu);
  int64_t t0 = ms_time_mono_ms();
  ts = ms_time_mono_after(20);
  int rc;
  while ((rc = pthread_cond_timedwait(&cv, &mu, &ts)) == 0)
    ;
  CU_ASSERT_EQUAL(rc, ETIMEDOUT);
  CU_ASSERT(ms_time_mono_ms() - t0 >= 20); /* it waited on the clock the deadline is on */
  pthread_mutex_unlock(&mu);
  pthread_cond_destroy(&cv);
}

static void test_sleep_at_least(void) {
  int64_t start = ms_time_mono_ns();
  ms_time_sleep_ms(5);
  /* A lower bound only: sleeping is allowed to take longer. */
  CU_ASSERT_TRUE(ms_time_mono_ns() - start >= 5 * MS_NSEC_PER_MSEC);
  ms_time_sleep_ms(0);
  ms_time_sleep_ms(-1);
}

static void on_alarm(int signo) {
  (void)signo;
}

static void *interrupter(void *arg) {
  pthread_t target = *(pthread_t *)arg;
  for (int i = 0; i < 5; i++) {
    usleep(2000);
    pthread_kill(target, SIGALRM);
  }
  return NULL;
}

static void test_sleep_survives_signals(void) {
  struct sigaction sa = {.sa_handler = on_alarm}, old;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGALRM, &sa, &old); /* no SA_RESTART: the sleep sees EINTR */
  pthread_t self = pthread_self(), t;
  CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, interrupter, &self), 0);
  int64_t start = ms_time_mono_ns();
  ms_time_sleep_ms(30);
  CU_ASSERT_TRUE(ms_time_mono_ns() - start >= 30 * MS_NSEC_PER_MSEC);
  pthread_join(t, NULL);
  sigaction(SIGALRM, &old, NULL);
}

static void check_parse(const char *s, int64_t want) {
  ms_error *err = NULL;
  int64_t got = -1;
  int rc = ms_duration_parse(s, &got, &err);
  if (rc < 0)
    fprintf(stderr, "parse `%s`: %s\n", s, err->msg);
  CU_ASSERT_EQUAL(rc, 0);
  CU_ASSERT_EQUAL(got, want);
  ms_error_free(err);
}

static void test_parse(void) {
  check_parse("0", 0);
  check_parse("0s", 0);
  check_parse("5ns", 5);
  check_parse("10us", 10 * MS_NSEC_PER_USEC);
  check_parse("10\xc2\xb5s", 10 * MS_NSEC_PER_USEC);
  check_parse("10\xce\xbcs", 10 * MS_NSEC_PER_USEC);
  check_parse("150ms", 150 * MS_NSEC_PER_MSEC);
  check_parse("1.5s", 1500 * MS_NSEC_PER_MSEC);
  check_parse(".5s", 500 * MS_NSEC_PER_MSEC);
  check_parse("1.s", MS_NSEC_PER_SEC);
  check_parse("2m", 2 * MS_NSEC_PER_MIN);
  check_parse("1h30m", 90 * MS_NSEC_PER_MIN);
  check_parse("3d", 3 * MS_NSEC_PER_DAY);
  check_parse("1.5h", 90 * MS_NSEC_PER_MIN);
  check_parse("1h1h", 2 * MS_NSEC_PER_HOUR); /* pieces add up, in any order */
  check_parse("1ms1h", MS_NSEC_PER_HOUR + MS_NSEC_PER_MSEC);
  check_parse("0.000000001s", 1);
  check_parse("0.0000000019s", 1); /* below a nanosecond truncates */
  check_parse("1.0000000000000000000000001s", MS_NSEC_PER_SEC);
  check_parse("9223372036854775807ns", INT64_MAX);
  check_parse("106751d23h47m16.854775807s", INT64_MAX);
}

static void check_error(const char *s, const char *want) {
  ms_error *err = NULL;
  int64_t got = 42;
  CU_ASSERT_EQUAL(ms_duration_parse(s, &got, &err), MS_ERR);
  CU_ASSERT_EQUAL(got, 42); /* untouched on failure */
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
  if (strcmp(err->msg, want) != 0)
    fprintf(stderr, "parse `%s`:\n  got  %s\n  want %s\n", s, err->msg, want);
  CU_ASSERT_STRING_EQUAL(err->msg, want);
  ms_error_free(err);
}

static void test_parse_errors(void) {
  check_error("", "empty duration");
  check_error(NULL, "empty duration");
  check_error("-5s", "duration `-5s` is negative");
  check_error("-0", "duration `-0` is negative");
  check_error("150", "duration `150` needs a unit (ns, us, ms, s, m, h or d), e.g. `150s`");
  check_error("1.5", "duration `1.5` needs a unit (ns, us, ms, s, m, h or d), e.g. `1.5s`");
  check_error("1h30", "duration `1h30` has a number without a unit (ns, us, ms, s, m, h or d)");
  check_error("5x", "duration `5x` has unknown unit `x` (want ns, us, ms, s, m, h or d)");
  check_error("5 s", "duration `5 s` has unknown unit ` s` (want ns, us, ms, s, m, h or d)");
  check_error("5sec", "duration `5sec` has unknown unit `sec` (want ns, us, ms, s, m, h or d)");
  check_error("abc", "`abc` is not a duration (e.g. `1h30m`, `1.5s`, `150ms`)");
  check_error("+5s", "`+5s` is not a duration (e.g. `1h30m`, `1.5s`, `150ms`)");
  check_error(".s", "`.s` is not a duration (e.g. `1h30m`, `1.5s`, `150ms`)");
  check_error("1s.", "`1s.` is not a duration (e.g. `1h30m`, `1.5s`, `150ms`)");
  check_error("9223372036854775808ns",
              "duration `9223372036854775808ns` is out of range (at most 106751d23h47m16.854775807s)");
  check_error("106752d", "duration `106752d` is out of range (at most 106751d23h47m16.854775807s)");
  check_error("106751d23h47m16.854775808s",
              "duration `106751d23h47m16.854775808s` is out of range (at most 106751d23h47m16.854775807s)");
  check_error("99999999999999999999999999h",
              "duration `99999999999999999999999999h` is out of range (at most 106751d23h47m16.854775807s)");
}

static void check_format(int64_t ns, const char *want) {
  char buf[MS_DURATION_FMT_MAX];
  CU_ASSERT_PTR_EQUAL(ms_duration_format(ns, buf, sizeof(buf)), buf);
  if (strcmp(buf, want) != 0)
    fprintf(stderr, "format %lld: got `%s`, want `%s`\n", (long long)ns, buf, want);
  CU_ASSERT_STRING_EQUAL(buf, want);
}

static void test_format(void) {
  check_format(0, "0s");
  check_format(5, "5ns");
  check_format(999, "999ns");
  check_format(1000, "1us");
  check_format(1500, "1.5us");
  check_format(150 * MS_NSEC_PER_MSEC, "150ms");
  check_format(1500 * MS_NSEC_PER_USEC, "1.5ms");
  check_format(1500 * MS_NSEC_PER_MSEC, "1.5s");
  check_format(MS_NSEC_PER_SEC + 1, "1.000000001s");
  check_format(2 * MS_NSEC_PER_MIN, "2m");
  check_format(90 * MS_NSEC_PER_MIN, "1h30m");
  check_format(90 * MS_NSEC_PER_SEC, "1m30s");
  check_format(MS_NSEC_PER_MIN + 500 * MS_NSEC_PER_MSEC, "1m0.5s");
  check_format(3 * MS_NSEC_PER_DAY, "3d");
  check_format(MS_NSEC_PER_DAY + MS_NSEC_PER_SEC, "1d1s");
  check_format(-2 * MS_NSEC_PER_MIN, "-2m");
  check_format(INT64_MAX, "106751d23h47m16.854775807s");
  check_format(INT64_MIN, "-106751d23h47m16.854775808s");
}

static void test_format_truncates(void) {
  char small[4];
  ms_duration_format(90 * MS_NSEC_PER_MIN, small, sizeof(small));
  CU_ASSERT_STRING_EQUAL(small, "1h3");
  char none[1] = {'x'};
  ms_duration_format(1, none, 0);
  CU_ASSERT_EQUAL(none[0], 'x');
}

static void test_round_trip(void) {
  static const int64_t values[] = {
      0,
      1,
      999,
      1000,
      1001,
      123456789,
      MS_NSEC_PER_SEC,
      59 * MS_NSEC_PER_SEC + 999999999,
      MS_NSEC_PER_MIN,
      3723 * MS_NSEC_PER_SEC + 4,
      7 * MS_NSEC_PER_DAY + 1,
      INT64_MAX,
      INT64_MAX - 1,
  };
  for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
    for (int64_t scale = 1; scale > 0 && scale <= MS_NSEC_PER_HOUR; scale *= 60) {
      if (values[i] > INT64_MAX / scale)
        continue;
      int64_t v = values[i] * scale;
      char buf[MS_DURATION_FMT_MAX];
      check_parse(ms_duration_format(v, buf, sizeof(buf)), v);
    }
  /* A cheap sweep over many magnitudes with a deterministic pseudo-random walk. */
  uint64_t x = 88172645463325252u;
  for (int i = 0; i < 20000; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    int64_t v = (int64_t)(x >> (1 + i % 63));
    char buf[MS_DURATION_FMT_MAX];
    ms_error *err = NULL;
    int64_t back = -1;
    CU_ASSERT_EQUAL(ms_duration_parse(ms_duration_format(v, buf, sizeof(buf)), &back, &err), 0);
    CU_ASSERT_EQUAL(back, v);
    ms_error_free(err);
  }
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"clocks", test_clocks},
      {"mono_deadline", test_mono_deadline},
      {"sleep_at_least", test_sleep_at_least},
      {"sleep_survives_signals", test_sleep_survives_signals},
      {"parse", test_parse},
      {"parse_errors", test_parse_errors},
      {"format", test_format},
      {"format_truncates", test_format_truncates},
      {"round_trip", test_round_trip},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "time", cases);
}
