#include "etcd-harness.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/time.h"

#include "testlib.h"

#define ETCD_BIN "/usr/bin/etcd"
#define ETCDCTL_BIN "/usr/bin/etcdctl"
#define SETPRIV_BIN "/usr/bin/setpriv"
#define READY_TIMEOUT_MS 30000
#define STOP_TIMEOUT_MS 10000
#define MAX_HARNESSES 64

extern char **environ;

struct ms_test_etcd {
  char *dir;
  char *endpoint;
  char *peer;
  char *log;
  char *data;
  char *cert, *key, *client_ca, *client_cert, *client_key; /* TLS, or NULL */
  pid_t pid;                                               /* 0 when stopped */
};

/* Every live etcd, for the atexit handler. */
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static ms_test_etcd *live[MAX_HARNESSES];
static bool atexit_set;

static void kill_all(void) {
  pthread_mutex_lock(&live_mu);
  for (size_t i = 0; i < MAX_HARNESSES; i++) {
    if (live[i] && live[i]->pid > 0) {
      kill(live[i]->pid, SIGKILL);
      waitpid(live[i]->pid, NULL, 0);
      live[i]->pid = 0;
      ms_test_rmtree(live[i]->dir);
    }
  }
  pthread_mutex_unlock(&live_mu);
}

static void track(ms_test_etcd *h, bool on) {
  pthread_mutex_lock(&live_mu);
  if (!atexit_set) {
    atexit(kill_all);
    atexit_set = true;
  }
  for (size_t i = 0; i < MAX_HARNESSES; i++) {
    if (on && !live[i]) {
      live[i] = h;
      break;
    }
    if (!on && live[i] == h) {
      live[i] = NULL;
      break;
    }
  }
  pthread_mutex_unlock(&live_mu);
}

static int free_port(int *ret_port, ms_error **err) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return ms_error_set_errno(err, errno, "socket");
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
    int e = errno;
    close(fd);
    return ms_error_set_errno(err, e, "bind a free loopback port");
  }
  close(fd);
  *ret_port = ntohs(a.sin_port);
  return 0;
}

static int spawn(ms_test_etcd *h, ms_error **err) {
  _cleanup_free_ char *peers = ms_xasprintf("t=%s", h->peer);
  const char *etcd_args[] = {
      ETCD_BIN,     "--name",
      "t",          "--data-dir",
      h->data,      "--listen-client-urls",
      h->endpoint,  "--advertise-client-urls",
      h->endpoint,  "--listen-peer-urls",
      h->peer,      "--initial-advertise-peer-urls",
      h->peer,      "--initial-cluster",
      peers,        "--logger",
      "zap",        "--log-level",
      "warn",       "--quota-backend-bytes",
      "1073741824", NULL,
  };
  const char *argv[MS_ARRAY_SIZE(etcd_args) + 16];
  size_t n = 0;
  if (access(SETPRIV_BIN, X_OK) == 0) {
    argv[n++] = SETPRIV_BIN;
    argv[n++] = "--pdeathsig";
    argv[n++] = "KILL";
  }
  if (h->cert) {
    argv[n++] = ETCD_BIN;
    argv[n++] = "--cert-file";
    argv[n++] = h->cert;
    argv[n++] = "--key-file";
    argv[n++] = h->key;
    if (h->client_ca) {
      argv[n++] = "--client-cert-auth";
      argv[n++] = "--trusted-ca-file";
      argv[n++] = h->client_ca;
    }
  }
  for (size_t i = h->cert ? 1 : 0; i < MS_ARRAY_SIZE(etcd_args); i++)
    argv[n++] = etcd_args[i];
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, h->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0)
    return ms_error_set_errno(err, rc, "spawn `%s`", argv[0]);
  h->pid = pid;
  return 0;
}

static size_t sink(char *p, size_t size, size_t n, void *arg) {
  size_t len = size * n;
  char *buf = arg;
  size_t have = strlen(buf);
  if (have + len < 256) {
    memcpy(buf + have, p, len);
    buf[have + len] = '\0';
  }
  return len;
}

static bool healthy(const ms_test_etcd *h) {
  CURL *c = curl_easy_init();
  if (!c)
    return false;
  char body[256] = "";
  _cleanup_free_ char *url = ms_xasprintf("%s/health", h->endpoint);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 1000L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
  if (h->cert) {
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L); /* only asking whether it is up */
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    if (h->client_cert) {
      curl_easy_setopt(c, CURLOPT_SSLCERT, h->client_cert);
      curl_easy_setopt(c, CURLOPT_SSLKEY, h->client_key);
    }
  }
  CURLcode rc = curl_easy_perform(c);
  long http = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &http);
  curl_easy_cleanup(c);
  return rc == CURLE_OK && http == 200 && strstr(body, "\"true\"");
}

static int wait_ready(ms_test_etcd *h, ms_error **err) {
  int64_t deadline = ms_time_mono_ms() + READY_TIMEOUT_MS;
  while (ms_time_mono_ms() < deadline) {
    int status = 0;
    if (waitpid(h->pid, &status, WNOHANG) == h->pid) {
      h->pid = 0;
      return ms_error_set(err, MS_UNAVAILABLE, "etcd on `%s` exited (status %d) before answering; see `%s`",
                          h->endpoint, status, h->log);
    }
    if (healthy(h))
      return 0;
    ms_time_sleep_ms(50);
  }
  return ms_error_set(err, MS_DEADLINE_EXCEEDED, "etcd on `%s` not healthy after %d ms; see `%s`",
                      h->endpoint, READY_TIMEOUT_MS, h->log);
}

static char *dup_or_null(const char *s) {
  return s ? ms_xstrdup(s) : NULL;
}

ms_test_etcd *ms_test_etcd_start(ms_error **err) {
  return ms_test_etcd_start_tls(NULL, err);
}

ms_test_etcd *ms_test_etcd_start_tls(const ms_test_etcd_tls *tls, ms_error **err) {
  if (access(ETCD_BIN, X_OK) != 0) {
    ms_error_set(
        err, MS_FAILED_PRECONDITION,
        "`%s` is missing: install etcd-server with scripts/setup-deps.sh (integration tests need it)",
        ETCD_BIN);
    return NULL;
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);
  int cport = 0, pport = 0;
  if (free_port(&cport, err) < 0)
    return NULL;
  do {
    if (free_port(&pport, err) < 0)
      return NULL;
  } while (pport == cport);
  ms_test_etcd *h = ms_xcalloc(1, sizeof(*h));
  h->dir = ms_test_tmpdir("meseta-etcd");
  h->endpoint = ms_xasprintf("%s://127.0.0.1:%d", tls ? "https" : "http", cport);
  if (tls) {
    h->cert = dup_or_null(tls->cert_file);
    h->key = dup_or_null(tls->key_file);
    h->client_ca = dup_or_null(tls->client_ca_file);
    h->client_cert = dup_or_null(tls->client_cert_file);
    h->client_key = dup_or_null(tls->client_key_file);
  }
  h->peer = ms_xasprintf("http://127.0.0.1:%d", pport);
  h->log = ms_xasprintf("%s/etcd.log", h->dir);
  h->data = ms_xasprintf("%s/data", h->dir); /* etcd creates it (mode 0700) */
  track(h, true);
  if (spawn(h, err) < 0 || wait_ready(h, err) < 0) {
    ms_test_etcd_free(h);
    return NULL;
  }
  return h;
}

const char *ms_test_etcd_endpoint(const ms_test_etcd *h) {
  return h->endpoint;
}

pid_t ms_test_etcd_pid(const ms_test_etcd *h) {
  return h->pid;
}

const char *ms_test_etcd_dir(const ms_test_etcd *h) {
  return h->dir;
}

int ms_test_etcd_stop(ms_test_etcd *h, ms_error **err) {
  if (h->pid <= 0)
    return 0;
  kill(h->pid, SIGTERM);
  int64_t deadline = ms_time_mono_ms() + STOP_TIMEOUT_MS;
  for (;;) {
    pid_t r = waitpid(h->pid, NULL, WNOHANG);
    if (r == h->pid || (r < 0 && errno == ECHILD))
      break;
    if (ms_time_mono_ms() >= deadline) {
      kill(h->pid, SIGKILL);
      waitpid(h->pid, NULL, 0);
      break;
    }
    ms_time_sleep_ms(10);
  }
  h->pid = 0;
  (void)err;
  return 0;
}

int ms_test_etcd_restart(ms_test_etcd *h, ms_error **err) {
  if (ms_test_etcd_stop(h, err) < 0)
    return MS_ERR;
  if (spawn(h, err) < 0 || wait_ready(h, err) < 0)
    return ms_error_prefix(err, "restart etcd");
  return 0;
}

int ms_test_etcd_ctl(ms_test_etcd *h, ms_error **err, const char *const *args) {
  const char *argv[32] = {ETCDCTL_BIN, "--endpoints", h->endpoint};
  size_t n = 3;
  for (size_t i = 0; args[i]; i++) {
    if (n + 2 > MS_ARRAY_SIZE(argv))
      return ms_error_set(err, MS_INVALID_ARGUMENT, "etcdctl: too many arguments");
    argv[n++] = args[i];
  }
  argv[n] = NULL;
  _cleanup_free_ char *log = ms_xasprintf("%s/etcdctl.log", h->dir);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0)
    return ms_error_set_errno(err, rc, "spawn `%s`", argv[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return ms_error_set(err, MS_INTERNAL, "etcdctl %s: exit status %d; see `%s`", args[0] ? args[0] : "",
                        status, log);
  return 0;
}

static int sh(const char *dir, const char *cmd, ms_error **err) {
  _cleanup_free_ char *full = ms_xasprintf("cd '%s' && (%s) >/dev/null 2>&1", dir, cmd);
  int rc = system(full);
  if (rc != 0)
    return ms_error_set(err, MS_INTERNAL, "`%s` in `%s` failed (status %d); is openssl installed?", cmd, dir,
                        rc);
  return 0;
}

int ms_test_etcd_make_certs(const char *dir, ms_error **err) {
#define EC "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  static const char *const cmds[] = {
      "openssl req -x509 " EC " -days 2 -keyout ca.key -out ca.pem -subj /CN=ca",
      "openssl req " EC " -keyout server.key -out server.csr -subj /CN=etcd",
      "printf 'subjectAltName=IP:127.0.0.1\\n' > server.ext",
      "openssl x509 -req -days 2 -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem "
      "-extfile server.ext",
      "openssl req " EC " -keyout client.key -out client.csr -subj /CN=meseta",
      "openssl x509 -req -days 2 -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem",
  };
#undef EC
  for (size_t i = 0; i < MS_ARRAY_SIZE(cmds); i++)
    if (sh(dir, cmds[i], err) < 0)
      return MS_ERR;
  return 0;
}

void ms_test_etcd_free(ms_test_etcd *h) {
  if (!h)
    return;
  ms_test_etcd_stop(h, NULL);
  track(h, false);
  ms_test_rmtree(h->dir);
  free(h->dir);
  free(h->endpoint);
  free(h->peer);
  free(h->log);
  free(h->data);
  free(h->cert);
  free(h->key);
  free(h->client_ca);
  free(h->client_cert);
  free(h->client_key);
  free(h);
}
