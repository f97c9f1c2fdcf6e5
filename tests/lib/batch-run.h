/* The example batch framework (examples/c, meseta-batch) run as a child process by tests
 * and benchmarks: started with its output in a log file, waited for with a deadline, and
 * its `subscribed:` and `summary:` lines read back. */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "meseta/error.h"

/* What meseta-batch printed. */
typedef struct ms_test_batch {
  int exit_code; /* 128 + signal when killed */
  char framework_id[256];
  int64_t launched, finished, failed, errors;
  double seconds, rate;
} ms_test_batch;

/* Starts `meseta-batch --master <masters> --tasks N --cmd true --cpus C --mem M` plus
 * `extra` (NULL-terminated, may be NULL), stdout and stderr to `log` (created). Its
 * binary comes from $MESETA_BINARY_DIR. Returns its pid, or -1 and *err. */
pid_t ms_test_batch_spawn(const char *masters, int64_t tasks, double cpus, double mem,
                          const char *const *extra, const char *log, ms_error **err);

/* Waits for `pid` at most timeout_ms (then SIGTERM, and SIGKILL 10 s later) and reads
 * `log` into *ret. Fails when it printed no summary line. */
int ms_test_batch_wait(pid_t pid, const char *log, int64_t timeout_ms, ms_test_batch *ret, ms_error **err);
