#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/compression.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/pb-check.h"

#include "rpc-internal.h"

void ms_rpc__init(void) {
  grpc_init();
}
void ms_rpc__shutdown(void) {
  grpc_shutdown();
}

grpc_byte_buffer *ms_rpc__pack(const ProtobufCMessage *msg) {
  return ms_rpc__pack_sized(msg, protobuf_c_message_get_packed_size(msg));
}

grpc_byte_buffer *ms_rpc__pack_sized(const ProtobufCMessage *msg, size_t n) {
  grpc_slice s = grpc_slice_malloc(n);
  protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  return bb;
}

ProtobufCMessage *ms_rpc__unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb,
                                 ms_error **err) {
  grpc_byte_buffer_reader r;
  if (!grpc_byte_buffer_reader_init(&r, bb)) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "message could not be decompressed");
    return NULL;
  }
  grpc_slice s = grpc_byte_buffer_reader_readall(&r);
  grpc_byte_buffer_reader_destroy(&r);
  ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
  grpc_slice_unref(s);
  if (!m)
    ms_error_set(err, MS_INVALID_ARGUMENT, "message is not a valid `%s`", desc->name);
  return m;
}

ProtobufCMessage *ms_rpc__unpack_request(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb,
                                         ms_error **err) {
  ProtobufCMessage *m = ms_rpc__unpack(desc, bb, err);
  /* proto3 strings are UTF-8: what we keep, every client must be able to parse again;
   * and a field we do not know would be kept and ignored. */
  if (m && ms_pb_check_request(m, NULL, err) < 0) {
    protobuf_c_message_free_unpacked(m, NULL);
    return NULL;
  }
  return m;
}

char *ms_rpc__read_pem(const char *path, const char *what, ms_error **err) {
  _cleanup_fclose_ FILE *f = fopen(path, "re");
  if (!f) {
    ms_error_set_errno(err, errno, "%s `%s`", what, path);
    return NULL;
  }
  struct stat st;
  if (fstat(fileno(f), &st) < 0 || st.st_size > 1024 * 1024) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "%s `%s` is not a readable PEM file under 1 MiB", what, path);
    return NULL;
  }
  char *buf = ms_xmalloc((size_t)st.st_size + 1);
  size_t n = fread(buf, 1, (size_t)st.st_size, f);
  buf[n] = '\0';
  if (!strstr(buf, "-----BEGIN ")) {
    free(buf);
    ms_error_set(err, MS_INVALID_ARGUMENT, "%s `%s` holds no PEM block", what, path);
    return NULL;
  }
  return buf;
}

grpc_server_credentials *ms_rpc__server_creds(const ms_rpc_tls *tls, ms_error **err) {
  if (!tls)
    return grpc_insecure_server_credentials_create();
  if (!tls->cert_file || !tls->key_file) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "TLS needs both a certificate and a key file");
    return NULL;
  }
  _cleanup_free_ char *cert = ms_rpc__read_pem(tls->cert_file, "TLS certificate", err);
  _cleanup_free_ char *key = cert ? ms_rpc__read_pem(tls->key_file, "TLS key", err) : NULL;
  _cleanup_free_ char *ca = NULL;
  if (!cert || !key)
    return NULL;
  if (tls->ca_file && !(ca = ms_rpc__read_pem(tls->ca_file, "TLS CA", err)))
    return NULL;
  grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
  grpc_ssl_client_certificate_request_type req =
      ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
         : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
  grpc_server_credentials *c = grpc_ssl_server_credentials_create_ex(ca, &pair, 1, req, NULL);
  if (!c)
    ms_error_set(err, MS_INVALID_ARGUMENT, "TLS certificate `%s` or key `%s` was refused", tls->cert_file,
                 tls->key_file);
  return c;
}

grpc_channel_credentials *ms_rpc__channel_creds(const ms_rpc_tls *tls, ms_error **err) {
  if (!tls)
    return grpc_insecure_credentials_create();
  _cleanup_free_ char *ca = NULL, *cert = NULL, *key = NULL;
  if (tls->ca_file && !(ca = ms_rpc__read_pem(tls->ca_file, "TLS CA", err)))
    return NULL;
  if (!!tls->cert_file != !!tls->key_file) {
    ms_error_set(err, MS_INVALID_ARGUMENT,
                 "a TLS client certificate needs both a certificate and a key file");
    return NULL;
  }
  if (tls->cert_file) {
    if (!(cert = ms_rpc__read_pem(tls->cert_file, "TLS certificate", err)) ||
        !(key = ms_rpc__read_pem(tls->key_file, "TLS key", err)))
      return NULL;
  }
  grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
  grpc_channel_credentials *c = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
  if (!c)
    ms_error_set(err, MS_INVALID_ARGUMENT, "TLS client credentials were refused");
  return c;
}

char *ms_rpc__slice_strdup(grpc_slice s) {
  return ms_xstrndup((const char *)GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s));
}

int64_t ms_rpc__ms_until(gpr_timespec deadline) {
  if (gpr_time_cmp(deadline, gpr_inf_future(deadline.clock_type)) == 0)
    return INT64_MAX;
  gpr_timespec now = gpr_now(deadline.clock_type);
  if (gpr_time_cmp(deadline, now) <= 0)
    return 0;
  return gpr_time_to_millis(gpr_time_sub(deadline, now));
}

gpr_timespec ms_rpc__deadline_after_ms(int64_t ms) {
  if (ms <= 0 || ms == INT64_MAX)
    return gpr_inf_future(GPR_CLOCK_REALTIME);
  return gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

char *ms_rpc_method_path(const ProtobufCServiceDescriptor *desc, const char *method) {
  return ms_xasprintf("/%s/%s", desc->name, method);
}

/* Says why gRPC could not listen on `addr` (it reports only a port of 0): binds a
 * socket there the way gRPC core does (SO_REUSEADDR, no SO_REUSEPORT), or for a
 * unix socket asks whether a server answers on it. */
int ms_rpc__listen_error(const char *addr, ms_error **err) {
  int e = 0;
  if (strncmp(addr, "unix:", 5) == 0) {
    if (ms_rpc__unix_in_use(addr))
      e = EADDRINUSE;
  } else {
    const char *colon = strrchr(addr, ':');
    if (!colon || !colon[1])
      return ms_error_set(err, MS_INVALID_ARGUMENT, "listen address `%s`: not an address (want host:port)",
                          addr);
    _cleanup_free_ char *host = ms_xstrndup(addr, (size_t)(colon - addr));
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
      memmove(host, host + 1, strlen(host));
      host[strlen(host) - 1] = '\0';
    }
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(*host ? host : NULL, colon + 1, &hints, &res);
    if (g != 0)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "listen address `%s`: not an address (%s)", addr,
                          gai_strerror(g));
    for (struct addrinfo *ai = res; ai && !e; ai = ai->ai_next) {
      int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd < 0)
        continue;
      int one = 1;
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0)
        e = errno;
      close(fd);
    }
    freeaddrinfo(res);
  }
  int rc;
  switch (e) {
  case EADDRINUSE:
    rc =
        ms_error_set(err, MS_UNAVAILABLE, "listen address `%s`: in use (another server listens there)", addr);
    break;
  case EACCES:
    rc = ms_error_set(err, MS_PERMISSION_DENIED,
                      "listen address `%s`: permission denied (a port below 1024 needs CAP_NET_BIND_SERVICE)",
                      addr);
    break;
  case EADDRNOTAVAIL:
    rc = ms_error_set(err, MS_INVALID_ARGUMENT, "listen address `%s`: not an address of this host", addr);
    break;
  case 0:
    rc = ms_error_set(err, MS_UNAVAILABLE, "listen address `%s`: gRPC could not listen there", addr);
    break;
  default:
    rc = ms_error_set_errno(err, e, "listen address `%s`", addr);
    break;
  }
  if (err && *err)
    (*err)->errnum = e;
  return rc;
}

bool ms_rpc__unix_in_use(const char *addr) {
  const char *path = strncmp(addr, "unix://", 7) == 0 ? addr + 7 : addr + 5;
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(sun.sun_path))
    return false;
  memcpy(sun.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  bool answered = connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;
  close(fd);
  return answered;
}

grpc_channel *ms_rpc__channel_create(const char *target, const ms_rpc_channel_options *opts, ms_error **err) {
  static const ms_rpc_channel_options defaults = {0};
  if (!opts)
    opts = &defaults;
  if (!target || !*target) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "a channel needs a target address");
    return NULL;
  }
  ms_rpc__init();
  grpc_channel_credentials *creds = ms_rpc__channel_creds(opts->tls, err);
  if (!creds) {
    ms_rpc__shutdown();
    return NULL;
  }
  int max = opts->max_message_bytes > 0 ? (int)opts->max_message_bytes : MS_RPC_DEFAULT_MAX_MESSAGE;
  grpc_arg args[10];
  size_t n = 0;
  args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, {.integer = max}};
  args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, {.integer = max}};
  int initial = opts->initial_backoff_ms > 0 ? (int)opts->initial_backoff_ms : 200;
  args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, {.integer = initial}};
  /* gRPC core takes its "minimum reconnect backoff" as the minimum time a connection
   * attempt may take (handshake included), not as a backoff: it must not be the
   * short initial backoff, or a slow handshake never completes. */
  int connect = opts->connect_timeout_ms > 0 ? (int)opts->connect_timeout_ms : 20000;
  args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, {.integer = connect}};
  args[n++] = (grpc_arg){GRPC_ARG_INTEGER,
                         GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
                         {.integer = opts->max_backoff_ms > 0 ? (int)opts->max_backoff_ms : 10000}};
  /* Long-lived streams (agents, subscribers) must notice a dead peer. */
  args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIME_MS, {.integer = 30000}};
  args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, {.integer = 10000}};
  if (opts->gzip)
    args[n++] = (grpc_arg){
        GRPC_ARG_INTEGER, GRPC_COMPRESSION_CHANNEL_DEFAULT_ALGORITHM, {.integer = GRPC_COMPRESS_GZIP}};
  if (opts->tls && opts->tls->server_name)
    args[n++] = (grpc_arg){
        GRPC_ARG_STRING, GRPC_SSL_TARGET_NAME_OVERRIDE_ARG, {.string = (char *)opts->tls->server_name}};
  grpc_channel_args cargs = {.num_args = n, .args = args};
  grpc_channel *gch = grpc_channel_create(target, creds, &cargs);
  grpc_channel_credentials_release(creds);
  return gch;
}
