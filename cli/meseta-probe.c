/* meseta-probe: asks a meseta service's grpc.health.v1 whether it is SERVING, for
 * container health checks (Kubernetes can probe gRPC itself; Compose cannot).
 *
 *   meseta-probe [--service NAME] [--any-status] [--timeout DURATION]
 *                [--tls-ca F [--tls-cert F --tls-key F]] ADDRESS
 *
 * Exits 0 when SERVING (with --any-status: when health answers at all, e.g. a standby
 * allocator's NOT_SERVING), 1 otherwise (printing why), 2 on bad usage. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "meseta/alloc.h"
#include "meseta/flags.h"
#include "meseta/rpc.h"

#include "grpc/health/v1/health.pb-c.h"

static char *service, *tls_ca, *tls_cert, *tls_key;
static int64_t timeout_ns;
static bool any_status;

static const ms_flag flags[] = {
    {"service", MS_FLAG_STRING, &service, "", "Service to ask about (empty: the server as a whole)", "NAME"},
    {"any-status", MS_FLAG_BOOL, &any_status, "false",
     "Exit 0 whenever health answers, SERVING or not (a standby allocator is up and NOT_SERVING)"},
    {"timeout", MS_FLAG_DURATION, &timeout_ns, "3s", "How long to wait for an answer"},
    {"tls-ca", MS_FLAG_STRING, &tls_ca, NULL, "CA to verify the server with (enables TLS)", "FILE"},
    {"tls-cert", MS_FLAG_STRING, &tls_cert, NULL, "Client certificate (mutual TLS)", "FILE"},
    {"tls-key", MS_FLAG_STRING, &tls_key, NULL, "Client key (mutual TLS)", "FILE"},
};
static const ms_flag_spec spec = {"meseta-probe",
                                  "Exits 0 if a meseta service reports SERVING on gRPC health.", flags,
                                  MS_ARRAY_SIZE(flags), "ADDRESS"};

int main(int argc, char **argv) {
  ms_error *err = NULL;
  int next = 0;
  int r = ms_flags_parse(&spec, argc, argv, &next, &err);
  if (r == 1)
    return 0;
  if (r == 0 && next != argc - 1)
    r = ms_error_set(&err, MS_INVALID_ARGUMENT, "one ADDRESS is needed (host:port or unix:PATH)");
  if (r < 0) {
    fprintf(stderr, "meseta-probe: %s\n", err->msg);
    ms_error_free(err);
    ms_flags_free(&spec);
    return 2;
  }
  ms_rpc_tls tls = {.ca_file = tls_ca, .cert_file = tls_cert, .key_file = tls_key};
  ms_rpc_channel_options o = {.tls = tls_ca ? &tls : NULL};
  int rc = 1;
  ms_rpc_channel *ch = ms_rpc_channel_new(argv[next], &o, &err);
  if (ch) {
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = service;
    ms_rpc_call_options co = {.timeout_ms = timeout_ns / 1000000};
    ProtobufCMessage *resp = NULL;
    if (ms_rpc_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
                     &grpc__health__v1__health_check_response__descriptor, &co, &resp, &err) == 0) {
      int st = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
      rc = any_status || st == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING ? 0 : 1;
      if (rc)
        fprintf(stderr, "meseta-probe: `%s` is not serving (status %d)\n", argv[next], st);
      protobuf_c_message_free_unpacked(resp, NULL);
    }
    ms_rpc_channel_free(ch);
  }
  if (err) {
    fprintf(stderr, "meseta-probe: `%s`: %s\n", argv[next], err->msg);
    ms_error_free(err);
  }
  ms_flags_free(&spec);
  return rc;
}
