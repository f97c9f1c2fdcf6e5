/* Raw gRPC core calls for tests and benchmarks: bytes in, bytes out, no protobuf
 * and no ms_rpc in between (to send what our client never would, or to measure a
 * baseline). Everything returned is the caller's. */
#pragma once

#include <grpc/grpc.h>
#include <stddef.h>
#include <stdint.h>

/* One unary call of `method` on `ch`, plucked from `cq` (a pluck queue).
 * `registered` is a grpc_channel_register_call handle for `method`, or NULL.
 * timeout_ms 0: none. *ret_resp (may be NULL) gets the reply's bytes or NULL;
 * *ret_details (may be NULL) the status message (free both). Returns the status. */
grpc_status_code ms_raw_unary(grpc_channel *ch, grpc_completion_queue *cq, void *registered,
                              const char *method, grpc_byte_buffer *req, int64_t timeout_ms,
                              grpc_byte_buffer **ret_resp, char **ret_details);

/* The first batch of a unary or server-streaming client call: send initial metadata,
 * send `req`, close the request side, receive the server's initial metadata into *md.
 * Zeroes and fills ops[0..3] and returns 4: the caller may add ops after them. */
size_t ms_raw_request_ops(grpc_op *ops, grpc_byte_buffer *req, grpc_metadata_array *md);

/* Shuts down, drains and destroys a pluck queue. */
void ms_raw_cq_destroy(grpc_completion_queue *cq);
