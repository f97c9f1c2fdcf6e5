/* TLS and mutual TLS through the gRPC layer at both ends, with certificates made
 * by openssl for the test: a CA, a server, a good client and a stranger's client. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/test/v1/echo.pb-c.h"

#include "echo-service.h"
#include "testlib.h"

static char *dir;

static char *path(const char *name) {
  return ms_xasprintf("%s/%s", dir, name);
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  _cleanup_free_ char *cmd = NULL;
  if (vasprintf(&cmd, fmt, ap) < 0)
    abort();
  va_end(ap);
  _cleanup_free_ char *quiet = ms_xasprintf("cd '%s' && (%s) >/dev/null 2>&1", dir, cmd);
  if (system(quiet) != 0) {
    fprintf(stderr, "command failed: %s\n", cmd);
    abort();
  }
}

/* A CA and a certificate it signs: <name>.pem / <name>.key. */
static void make_ca(const char *ca) {
  sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
     "-keyout %s.key -out %s.pem -subj /CN=%s",
     ca, ca, ca);
}

static void make_cert(const char *ca, const char *name, const char *cn, const char *san) {
  sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout %s.key -out %s.csr -subj "
     "/CN=%s",
     name, name, cn);
  sh("printf 'subjectAltName=%s\\n' > %s.ext && openssl x509 -req -days 2 -in %s.csr -CA %s.pem -CAkey "
     "%s.key "
     "-CAcreateserial -out %s.pem -extfile %s.ext",
     san, name, name, ca, ca, name, name);
}

static int setup(void) {
  if (system("openssl version >/dev/null 2>&1") != 0) {
    fprintf(stderr, "openssl is missing: run scripts/setup-deps.sh\n");
    return 1;
  }
  dir = ms_test_tmpdir("meseta-tls");
  make_ca("ca");
  make_ca("other-ca");
  make_cert("ca", "server", "localhost", "DNS:localhost,IP:127.0.0.1");
  make_cert("ca", "client", "framework-a", "DNS:framework-a");
  make_cert("other-ca", "stranger", "framework-b", "DNS:framework-b");
  return 0;
}

typedef struct server {
  ms_rpc_server *srv;
  char *cert, *key, *ca;
} server;

static server start(bool mutual) {
  server s = {.cert = path("server.pem"), .key = path("server.key"), .ca = mutual ? path("ca.pem") : NULL};
  ms_rpc_tls tls = {.cert_file = s.cert, .key_file = s.key, .ca_file = s.ca};
  const char *addrs[] = {"127.0.0.1:0"};
  ms_rpc_server_options o = {.listen = addrs, .n_listen = 1, .tls = &tls};
  ms_error *err = NULL;
  s.srv = ms_rpc_server_new(&o, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s.srv);
  MS_ASSERT_OK(echo_service_add(s.srv, &err), &err);
  MS_ASSERT_OK(ms_rpc_server_start(s.srv, &err), &err);
  return s;
}

static void stop(server *s) {
  ms_rpc_server_free(s->srv);
  free(s->cert);
  free(s->key);
  free(s->ca);
}

/* Calls Identity as `client` (NULL: no certificate). Returns the identity the
 * handler saw, or NULL with *ret_code set when the call failed. */
static char *identity_as(server *s, const char *client, ms_status *ret_code) {
  _cleanup_free_ char *ca = path("ca.pem");
  _cleanup_free_ char *cert = client ? ms_xasprintf("%s/%s.pem", dir, client) : NULL;
  _cleanup_free_ char *key = client ? ms_xasprintf("%s/%s.key", dir, client) : NULL;
  ms_rpc_tls tls = {.ca_file = ca, .cert_file = cert, .key_file = key};
  ms_rpc_channel_options o = {.tls = &tls};
  ms_error *err = NULL;
  ms_rpc_channel *ch = ms_rpc_channel_new(ms_rpc_server_address(s->srv, 0), &o, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
  Meseta__Test__V1__EchoRequest req = MESETA__TEST__V1__ECHO_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  ms_rpc_call_options co = {.timeout_ms = 5000};
  char *id = NULL;
  *ret_code = MS_OK;
  if (ms_rpc_unary(ch, "/meseta.test.v1.Echo/Identity", &req.base, &meseta__test__v1__echo_reply__descriptor,
                   &co, &resp, &err) < 0) {
    *ret_code = err->code;
    ms_error_free(err);
  } else {
    id = ms_xstrdup(((Meseta__Test__V1__EchoReply *)resp)->peer_identity);
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  ms_rpc_channel_free(ch);
  return id;
}

static void test_mutual_good_client(void) {
  server s = start(true);
  ms_status code;
  _cleanup_free_ char *id = identity_as(&s, "client", &code);
  CU_ASSERT_EQUAL(code, MS_OK);
  CU_ASSERT_PTR_NOT_NULL_FATAL(id);
  CU_ASSERT_STRING_EQUAL(id, "framework-a");
  stop(&s);
}

static void test_mutual_refuses_no_cert(void) {
  server s = start(true);
  ms_status code;
  _cleanup_free_ char *id = identity_as(&s, NULL, &code);
  CU_ASSERT_PTR_NULL(id);
  CU_ASSERT_EQUAL(code, MS_UNAVAILABLE);
  stop(&s);
}

static void test_mutual_refuses_other_ca(void) {
  server s = start(true);
  ms_status code;
  _cleanup_free_ char *id = identity_as(&s, "stranger", &code);
  CU_ASSERT_PTR_NULL(id);
  CU_ASSERT_EQUAL(code, MS_UNAVAILABLE);
  stop(&s);
}

static void test_server_only_tls(void) {
  server s = start(false);
  ms_status code;
  _cleanup_free_ char *id = identity_as(&s, NULL, &code);
  CU_ASSERT_EQUAL(code, MS_OK);
  CU_ASSERT_PTR_NOT_NULL_FATAL(id);
  CU_ASSERT_STRING_EQUAL(id, ""); /* encrypted, but the client is anonymous */
  stop(&s);
}

static void test_plaintext_client_refused(void) {
  server s = start(true);
  ms_error *err = NULL;
  ms_rpc_channel *ch = ms_rpc_channel_new(ms_rpc_server_address(s.srv, 0), NULL, &err);
  Meseta__Test__V1__EchoRequest req = MESETA__TEST__V1__ECHO_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  ms_rpc_call_options co = {.timeout_ms = 5000};
  CU_ASSERT_EQUAL(ms_rpc_unary(ch, "/meseta.test.v1.Echo/Identity", &req.base,
                               &meseta__test__v1__echo_reply__descriptor, &co, &resp, &err),
                  MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_UNAVAILABLE);
  ms_error_free(err);
  ms_rpc_channel_free(ch);
  stop(&s);
}

static void test_bad_pem(void) {
  _cleanup_free_ char *junk = path("junk.pem");
  sh("echo 'not a certificate' > junk.pem");
  ms_rpc_tls tls = {.ca_file = junk};
  ms_rpc_channel_options o = {.tls = &tls};
  ms_error *err = NULL;
  CU_ASSERT_PTR_NULL(ms_rpc_channel_new("127.0.0.1:1", &o, &err));
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "junk.pem"));
  ms_error_free(err);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"mutual_good_client", test_mutual_good_client},
      {"mutual_refuses_no_cert", test_mutual_refuses_no_cert},
      {"mutual_refuses_other_ca", test_mutual_refuses_other_ca},
      {"server_only_tls", test_server_only_tls},
      {"plaintext_client_refused", test_plaintext_client_refused},
      {"bad_pem", test_bad_pem},
      {NULL, NULL},
  };
  if (setup() != 0)
    return 1;
  int rc = ms_test_main(argc, argv, "rpc-tls", cases);
  ms_test_rmtree(dir);
  free(dir);
  return rc;
}
