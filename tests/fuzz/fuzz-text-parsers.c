/* The small text parsers behind flags and config: durations, byte sizes, log levels,
 * status names. Anything must parse or be refused with a message; a parsed duration
 * must format and parse back to itself. */
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/flags.h"
#include "meseta/log.h"
#include "meseta/time.h"

static void refused(ms_error *err) {
  if (!err || !err->msg || !*err->msg)
    abort();
  ms_error_free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 4096)
    return 0;
  char *s = malloc(size + 1);
  memcpy(s, data, size);
  s[size] = '\0';
  ms_error *err = NULL;
  int64_t ns = 0;
  if (ms_duration_parse(s, &ns, &err) == 0) {
    char buf[MS_DURATION_FMT_MAX];
    int64_t back = -1;
    if (ns < 0 || ms_duration_parse(ms_duration_format(ns, buf, sizeof(buf)), &back, NULL) < 0 || back != ns)
      abort();
  } else {
    refused(TAKE_PTR(err));
  }
  int64_t bytes = 0;
  if (ms_bytes_parse(s, &bytes, &err) < 0)
    refused(TAKE_PTR(err));
  else if (bytes < 0)
    abort();
  ms_log_level level;
  if (ms_log_level_parse(s, &level, &err) < 0)
    refused(TAKE_PTR(err));
  ms_status code;
  if (ms_status_parse(s, &code) && (int)code > 16)
    abort();
  free(s);
  return 0;
}
