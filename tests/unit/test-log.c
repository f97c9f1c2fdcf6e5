#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "meseta/log.h"

#include "testlib.h"

/* Logs through a pipe and returns what came out (static buffer). */
static const char *capture(ms_log_format fmt, ms_log_level level, const char *id, const char *msg) {
  static char out[16384];
  int p[2];
  CU_ASSERT_FATAL(pipe(p) == 0);
  ms_log_init("meseta-test", MS_LOG_INFO, fmt, p[1]);
  ms_log(level, id, "%s", msg);
  close(p[1]);
  ssize_t n = read(p[0], out, sizeof(out) - 1);
  close(p[0]);
  out[n > 0 ? n : 0] = '\0';
  ms_log_init("meseta-test", MS_LOG_INFO, MS_LOG_TEXT, 2);
  return out;
}

static void test_text_line(void) {
  const char *s = capture(MS_LOG_TEXT, MS_LOG_WARN, "task=t-1", "launched");
  CU_ASSERT_PTR_NOT_NULL(strstr(s, " warn meseta-test["));
  CU_ASSERT_PTR_NOT_NULL(strstr(s, "] task=t-1: launched\n"));
  CU_ASSERT_EQUAL(strchr(s, '\n'), s + strlen(s) - 1);
}

static void test_newlines_escaped(void) {
  const char *s = capture(MS_LOG_TEXT, MS_LOG_ERROR, NULL, "two\nlines\tand tab");
  CU_ASSERT_PTR_NOT_NULL(strstr(s, "two\\nlines\\x09and tab\n"));
  CU_ASSERT_EQUAL(strchr(s, '\n'), s + strlen(s) - 1);
}

static void test_json_line(void) {
  const char *s = capture(MS_LOG_JSON, MS_LOG_INFO, "agent=a\"1", "say \"hi\"\n");
  CU_ASSERT_PTR_NOT_NULL(strstr(s, "\"level\":\"info\""));
  CU_ASSERT_PTR_NOT_NULL(strstr(s, "\"service\":\"meseta-test\""));
  CU_ASSERT_PTR_NOT_NULL(strstr(s, "\"id\":\"agent=a\\\"1\""));
  CU_ASSERT_PTR_NOT_NULL(strstr(s, "\"msg\":\"say \\\"hi\\\"\\n\"}\n"));
}

static void test_level_filter(void) {
  const char *s = capture(MS_LOG_TEXT, MS_LOG_DEBUG, NULL, "hidden");
  CU_ASSERT_STRING_EQUAL(s, "");
  CU_ASSERT_FALSE(ms_log_enabled(MS_LOG_DEBUG));
  CU_ASSERT_TRUE(ms_log_enabled(MS_LOG_ERROR));
}

static void test_long_message_truncated_to_one_line(void) {
  static char big[20000];
  memset(big, 'x', sizeof(big) - 1);
  const char *s = capture(MS_LOG_TEXT, MS_LOG_ERROR, NULL, big);
  CU_ASSERT_TRUE(strlen(s) < 8200);
  CU_ASSERT_EQUAL(strchr(s, '\n'), s + strlen(s) - 1);
}

static void test_parse(void) {
  ms_error *err = NULL;
  ms_log_level l;
  ms_log_format f;
  MS_ASSERT_OK(ms_log_level_parse("DEBUG", &l, &err), &err);
  CU_ASSERT_EQUAL(l, MS_LOG_DEBUG);
  MS_ASSERT_OK(ms_log_format_parse("json", &f, &err), &err);
  CU_ASSERT_EQUAL(f, MS_LOG_JSON);
  CU_ASSERT_EQUAL(ms_log_level_parse("loud", &l, &err), MS_ERR);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "`loud`"));
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
  ms_error_free(err);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"text_line", test_text_line},
      {"newlines_escaped", test_newlines_escaped},
      {"json_line", test_json_line},
      {"level_filter", test_level_filter},
      {"long_message_truncated_to_one_line", test_long_message_truncated_to_one_line},
      {"parse", test_parse},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "log", cases);
}
