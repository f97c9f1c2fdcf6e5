/* What every meseta service's main() does, once.
 *
 *   static int run(ms_error **err) { ... }           // the service, flags already parsed
 *   int main(int argc, char **argv) { return ms_service_main(argc, argv, &spec, run); }
 *
 * ms_service_main blocks SIGTERM and SIGINT (before any thread starts, so a signalfd
 * in the service's loop receives them), parses the flags (printing --help), runs,
 * prints a failure as one line "<prog>: <message>" and frees the flags. Exit codes:
 * 0 done, 1 the service failed, 2 bad flags. */
#pragma once

#include "meseta/error.h"
#include "meseta/flags.h"
#include "meseta/rpc.h"

int ms_service_main(int argc, char **argv, const ms_flag_spec *spec, int (*run)(ms_error **err));

/* Writes the server's bound addresses, one per line, to `path` atomically (a
 * temporary file renamed): how tests and scripts learn a port-0 address. */
int ms_service_write_ready(const char *path, const ms_rpc_server *srv, ms_error **err);
