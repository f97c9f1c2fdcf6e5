/* echo-server: the Echo test service as a process, for the Python and Node interop
 * tests and the benchmarks.
 *
 *   echo-server --listen ADDR [--listen ADDR...] --ready-file PATH
 *               [--tls-cert F --tls-key F [--tls-ca F]] [--max-message-bytes N] [--grace-ms N]
 *
 * Writes the bound addresses, one per line, to the ready file once serving;
 * SIGTERM or SIGINT shuts it down gracefully. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/service.h"

#include "echo-service.h"

static long long number(const char *flag, const char *v) {
  char *end = NULL;
  long long n = strtoll(v, &end, 10);
  if (!*v || *end || n < 0) {
    fprintf(stderr, "echo-server: flag `--%s`: `%s` is not a non-negative number\n", flag, v);
    exit(2);
  }
  return n;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"listen", required_argument, NULL, 'l'},
      {"ready-file", required_argument, NULL, 'r'},
      {"tls-cert", required_argument, NULL, 'c'},
      {"tls-key", required_argument, NULL, 'k'},
      {"tls-ca", required_argument, NULL, 'a'},
      {"max-message-bytes", required_argument, NULL, 'm'},
      {"grace-ms", required_argument, NULL, 'g'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  const char *listen[8];
  size_t n_listen = 0;
  const char *ready = NULL;
  ms_rpc_tls tls = {0};
  ms_rpc_server_options opts = {0};
  long long grace = 2000;
  int o;
  while ((o = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (o) {
    case 'l':
      if (n_listen < MS_ARRAY_SIZE(listen))
        listen[n_listen++] = optarg;
      break;
    case 'r':
      ready = optarg;
      break;
    case 'c':
      tls.cert_file = optarg;
      break;
    case 'k':
      tls.key_file = optarg;
      break;
    case 'a':
      tls.ca_file = optarg;
      break;
    case 'm':
      opts.max_message_bytes = number("max-message-bytes", optarg);
      break;
    case 'g':
      grace = number("grace-ms", optarg);
      break;
    case 'h':
      printf(
          "usage: echo-server --listen ADDR... [--ready-file PATH] [--tls-cert F --tls-key F [--tls-ca F]]\n"
          "                   [--max-message-bytes N] [--grace-ms N]\n");
      return 0;
    default:
      return 2;
    }
  }
  if (n_listen == 0)
    listen[n_listen++] = "127.0.0.1:0";
  ms_log_init("echo-server", MS_LOG_INFO, MS_LOG_TEXT, 2);

  /* Signals are taken with sigwait below, so block them before gRPC starts threads. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, NULL);

  opts.listen = listen;
  opts.n_listen = n_listen;
  opts.tls = tls.cert_file ? &tls : NULL;
  ms_error *err = NULL;
  ms_rpc_server *srv = ms_rpc_server_new(&opts, &err);
  if (!srv || echo_service_add(srv, &err) < 0 || ms_rpc_server_start(srv, &err) < 0) {
    fprintf(stderr, "echo-server: %s\n", err->msg);
    ms_error_free(err);
    ms_rpc_server_free(srv);
    return 1;
  }
  if (ready && ms_service_write_ready(ready, srv, &err) < 0) {
    fprintf(stderr, "echo-server: %s\n", err->msg);
    ms_error_free(err);
    ms_rpc_server_free(srv);
    return 1;
  }
  ms_log_info(NULL, "serving on %s", ms_rpc_server_address(srv, 0));
  int sig = 0;
  sigwait(&set, &sig);
  ms_log_info(NULL, "signal %d: shutting down (grace %lld ms)", sig, grace);
  ms_rpc_server_shutdown(srv, grace);
  ms_rpc_server_free(srv);
  return 0;
}
