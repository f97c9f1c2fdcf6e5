/* Pieces shared by the gRPC layer's files; not part of libmeseta's API. */
#pragma once

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <protobuf-c/protobuf-c.h>

#include "meseta/error.h"
#include "meseta/rpc.h"

/* grpc_init / grpc_shutdown, counted by gRPC core itself. */
void ms_rpc__init(void);
void ms_rpc__shutdown(void);

/* Serializes a message into a new byte buffer (the caller destroys it). */
grpc_byte_buffer *ms_rpc__pack(const ProtobufCMessage *msg);
/* The same when the packed size is already known. */
grpc_byte_buffer *ms_rpc__pack_sized(const ProtobufCMessage *msg, size_t size);
/* Parses a byte buffer (decompressing if needed). INVALID_ARGUMENT naming the
 * type when the bytes are not one. */
ProtobufCMessage *ms_rpc__unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb,
                                 ms_error **err);
/* The same for what a server receives (requests, client-stream messages): also every
 * string strict UTF-8 and no unknown field (ms_pb_check_request), or INVALID_ARGUMENT
 * naming the field. Responses are not checked: a client keeps reading records stored
 * before this check existed. */
ProtobufCMessage *ms_rpc__unpack_request(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb,
                                         ms_error **err);

/* Reads a whole PEM file (at most 1 MiB); the result is the caller's. */
char *ms_rpc__read_pem(const char *path, const char *what, ms_error **err);

grpc_server_credentials *ms_rpc__server_creds(const ms_rpc_tls *tls, ms_error **err);
grpc_channel_credentials *ms_rpc__channel_creds(const ms_rpc_tls *tls, ms_error **err);
/* A channel to target with the layer's arguments for opts (NULL: defaults; limits,
 * backoff, connect timeout, keepalive, gzip, TLS name). It holds one ms_rpc__init,
 * which the caller gives back with ms_rpc__shutdown after destroying the channel.
 * NULL with err set (and nothing held) on a bad target or credentials. */
grpc_channel *ms_rpc__channel_create(const char *target, const ms_rpc_channel_options *opts, ms_error **err);

/* A copy of a slice as a C string (the caller frees). */
char *ms_rpc__slice_strdup(grpc_slice s);

/* Why gRPC could not listen on `addr`: always sets *err (naming the address, with
 * errnum EADDRINUSE when another socket holds it) and returns MS_ERR. */
int ms_rpc__listen_error(const char *addr, ms_error **err);
/* Whether a server answers on a "unix:" address (gRPC core would replace its file). */
bool ms_rpc__unix_in_use(const char *addr);

/* Milliseconds from now to a gpr deadline (INT64_MAX if infinite, 0 if past). */
int64_t ms_rpc__ms_until(gpr_timespec deadline);
gpr_timespec ms_rpc__deadline_after_ms(int64_t ms);

/* Health and reflection, registered by ms_rpc_server_start. */
int ms_rpc__health_register(ms_rpc_server *srv, ms_error **err);
void ms_rpc__health_set(ms_rpc_server *srv, const char *service, bool serving);
void ms_rpc__health_shutdown(ms_rpc_server *srv);
void ms_rpc__health_free(ms_rpc_server *srv);
int ms_rpc__reflection_register(ms_rpc_server *srv, ms_error **err);

/* The full names of the services a server hosts (owned by the server). */
size_t ms_rpc__server_service_count(const ms_rpc_server *srv);
const char *ms_rpc__server_service_name(const ms_rpc_server *srv, size_t i);

/* Per-server state the health module keeps (opaque to the server). */
struct ms_rpc_health;
struct ms_rpc_health **ms_rpc__server_health_slot(ms_rpc_server *srv);
