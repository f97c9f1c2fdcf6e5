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

/* The flags every gRPC server of meseta has, written once: a service keeps one
 * ms_server_flags (static, like its other flag targets) and puts
 * MS_SERVER_FLAGS(its_flags, "0.0.0.0:PORT", "5s") among its rows. Strings are the
 * flag parser's (ms_flags_free). */
typedef struct ms_server_flags {
  ms_strv listen;
  char *tls_cert, *tls_key, *tls_ca;
  int64_t max_message; /* bytes */
  int64_t grace_ns;
  char *log_level, *log_format, *ready_file;
} ms_server_flags;

#define MS_LOG_FLAGS(level_ptr, format_ptr)                                                                  \
  {"log-level", MS_FLAG_STRING, (level_ptr), "info", "trace, debug, info, warn or error", "LEVEL", false}, { \
    "log-format", MS_FLAG_STRING, (format_ptr), "text", "text or json", "FORMAT", false                      \
  }

#define MS_SERVER_FLAGS(f, listen_def, max_message_def, grace_def)                                            \
  {"listen", MS_FLAG_LIST, &(f).listen, (listen_def), "Addresses to serve gRPC on (host:port or unix:PATH)",  \
   "ADDR",   false},                                                                                          \
      {"tls-cert", MS_FLAG_STRING, &(f).tls_cert, NULL, "Server certificate (PEM); enables TLS",              \
       "FILE",     false},                                                                                    \
      {"tls-key", MS_FLAG_STRING, &(f).tls_key, NULL, "Server key (PEM)", "FILE", false},                     \
      {"tls-ca", MS_FLAG_STRING, &(f).tls_ca, NULL, "CA that client certificates must chain to (mutual TLS)", \
       "FILE",   false},                                                                                      \
      {"max-message-bytes",                                                                                   \
       MS_FLAG_BYTES,                                                                                         \
       &(f).max_message,                                                                                      \
       (max_message_def),                                                                                     \
       "Largest gRPC message accepted and sent",                                                              \
       NULL,                                                                                                  \
       false},                                                                                                \
      {"shutdown-grace",                                                                                      \
       MS_FLAG_DURATION,                                                                                      \
       &(f).grace_ns,                                                                                         \
       (grace_def),                                                                                           \
       "How long calls may finish after SIGTERM",                                                             \
       NULL,                                                                                                  \
       false},                                                                                                \
      {"ready-file", MS_FLAG_STRING, &(f).ready_file, NULL, "Write the bound addresses here once serving",    \
       "FILE",       false},                                                                                  \
      MS_LOG_FLAGS(&(f).log_level, &(f).log_format)

/* Starts logging as `prog` with the --log-level and --log-format given. */
int ms_service_log_init(const char *prog, const char *level, const char *format, ms_error **err);
/* Starts logging and fills the server's options from f (*tls is where the TLS
 * settings go; *so points into f and tls, which must outlive it). The caller may
 * set more of *so after. */
int ms_server_setup(const char *prog, const ms_server_flags *f, ms_rpc_tls *tls, ms_rpc_server_options *so,
                    ms_error **err);
/* ms_service_write_ready to --ready-file, if given. */
int ms_server_ready(const ms_server_flags *f, const ms_rpc_server *srv, ms_error **err);

/* Writes the server's bound addresses, one per line, to `path` atomically (a
 * temporary file renamed): how tests and scripts learn a port-0 address. */
int ms_service_write_ready(const char *path, const ms_rpc_server *srv, ms_error **err);
