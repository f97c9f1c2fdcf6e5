/* Service processes for integration tests: start a meseta binary with
 * `--ready-file`, learn its address, stop it with SIGTERM and see how it exited.
 * No process outlives the test binary (an atexit handler kills what is left).
 * Handles are not thread-safe; strings returned belong to the handle. */
#pragma once

#include <sys/types.h>

#include "meseta/error.h"

typedef struct ms_test_proc ms_test_proc;

/* The path of a built binary: "$MESETA_BINARY_DIR/<rel>". The caller frees it. */
char *ms_test_binary(const char *rel);

/* Runs argv (argv[0] a path, NULL-terminated) with `--ready-file F` appended and its
 * output in `<dir>/<name>.log`, and waits (at most 30 s) for F. Fails, with the log's
 * tail, if the process exits first. */
ms_test_proc *ms_test_proc_start(const char *name, const char *dir, const char *const *argv, ms_error **err);

/* The first address in the ready file ("127.0.0.1:PORT"). */
const char *ms_test_proc_address(const ms_test_proc *p);
pid_t ms_test_proc_pid(const ms_test_proc *p);
const char *ms_test_proc_log(const ms_test_proc *p);

/* Sends `sig` and waits for the exit (SIGKILL after 30 s). Returns the exit code, or
 * 128 + signal for a process killed by a signal. Idempotent. */
int ms_test_proc_stop(ms_test_proc *p, int sig);

/* Stops (SIGKILL) if still running and frees. NULL is fine. */
void ms_test_proc_free(ms_test_proc *p);
