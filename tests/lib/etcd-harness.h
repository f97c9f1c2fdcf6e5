/* A real, single-member etcd for integration tests (Debian's etcd-server, /usr/bin/etcd).
 *
 *   ms_test_etcd *h = ms_test_etcd_start(&err);   // free loopback ports, temp data dir
 *   ... ms_test_etcd_endpoint(h) ...               // "http://127.0.0.1:P"
 *   ms_test_etcd_stop(h, &err);                    // SIGTERM, wait; data kept
 *   ms_test_etcd_restart(h, &err);                 // same ports, same data
 *   ms_test_etcd_free(h);                          // stop + remove the data dir
 *
 * etcd's output goes to `etcd.log` in the data directory. No etcd outlives the test
 * process: every started etcd is killed by an atexit handler (a failed CUnit assertion
 * skips the test's own cleanup), and etcd runs under `setpriv --pdeathsig KILL` when
 * setpriv exists, so even a SIGKILLed test takes its etcd with it. (The death signal
 * follows the thread that started etcd: start and restart it from the main thread.)
 *
 * A missing /usr/bin/etcd is an error (FAILED_PRECONDITION) telling to run
 * scripts/setup-deps.sh, not a skip. Handles are not thread-safe; strings returned
 * belong to the handle. */
#pragma once

#include <sys/types.h>

#include "meseta/error.h"

typedef struct ms_test_etcd ms_test_etcd;

/* Starts etcd and waits (at most 30 s) until /health answers. */
ms_test_etcd *ms_test_etcd_start(ms_error **err);

/* TLS on the client port (PEM files, borrowed for the call). The endpoint becomes
 * "https://127.0.0.1:P". With client_ca_file etcd requires client certificates signed
 * by it (--client-cert-auth); the harness then checks health with client_cert/key. */
typedef struct ms_test_etcd_tls {
  const char *cert_file; /* etcd's server certificate (SAN IP:127.0.0.1) */
  const char *key_file;
  const char *client_ca_file;
  const char *client_cert_file; /* for the harness's own health checks */
  const char *client_key_file;
} ms_test_etcd_tls;
ms_test_etcd *ms_test_etcd_start_tls(const ms_test_etcd_tls *tls, ms_error **err);

/* Makes throwaway certificates in dir with the openssl command: ca.pem/ca.key, a
 * server certificate for IP 127.0.0.1 (server.pem/server.key, CN etcd) and a client
 * certificate (client.pem/client.key, CN meseta), all signed by the CA (EC P-256, 2 days). */
int ms_test_etcd_make_certs(const char *dir, ms_error **err);

/* "http://127.0.0.1:P". */
const char *ms_test_etcd_endpoint(const ms_test_etcd *h);
/* etcd's process id (0 while stopped), e.g. for benchmarks that account CPU. */
pid_t ms_test_etcd_pid(const ms_test_etcd *h);

/* The temporary data directory (etcd.log is inside). */
const char *ms_test_etcd_dir(const ms_test_etcd *h);

/* SIGTERM and wait (SIGKILL after 10 s). A stopped etcd's port refuses connections.
 * Stopping a stopped etcd does nothing. */
int ms_test_etcd_stop(ms_test_etcd *h, ms_error **err);

/* Starts it again on the same ports with the same data and waits until it answers. */
int ms_test_etcd_restart(ms_test_etcd *h, ms_error **err);

/* Runs `etcdctl --endpoints <endpoint> args...` (a NULL-terminated list) and waits for
 * it; its output goes to etcdctl.log in the data directory. Fails unless it exits 0. */
int ms_test_etcd_ctl(ms_test_etcd *h, ms_error **err, const char *const *args);

/* Stops etcd, removes its data directory and frees the handle; NULL is fine. */
void ms_test_etcd_free(ms_test_etcd *h);
