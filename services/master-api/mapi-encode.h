/* Pre-encoded protobuf for master-api's big reads.
 *
 * The view keeps each item packed beside its message (mapi_coll.enc), written once
 * by the watch thread. A reply is then assembled from those bytes instead of packing
 * the messages again: a repeated message field is, on the wire, each item's tag,
 * length (varint) and bytes, in order, so concatenating them gives exactly what
 * protobuf_c_message_pack would write for the same messages. Pages carry such bytes
 * as unknown fields of their response (protobuf-c packs unknown fields after the known
 * ones, verbatim: tag, then the field's data, which for a length-delimited field
 * includes its length); GetState sends the State's bytes as they are
 * (ms_rpc_call_send_bytes).
 *
 * Ownership: mapi_enc_item's bytes are the caller's (free(out->data)). A mapi_bytes
 * is reference counted: whoever holds a reference calls mapi_bytes_unref. */
#pragma once

#include <protobuf-c/protobuf-c.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mapi_state mapi_state;

/* The bytes of varint v (at most 10), written at out; returns how many. */
size_t mapi_varint_put(uint8_t *out, uint64_t v);
size_t mapi_varint_size(uint64_t v);

/* m packed with its length (varint) in front: a length-delimited field's data. */
void mapi_enc_item(const ProtobufCMessage *m, ProtobufCBinaryData *out);

/* Shared, immutable bytes. */
typedef struct mapi_bytes {
  atomic_int refs;
  size_t len;
  uint8_t *data;
} mapi_bytes;

mapi_bytes *mapi_bytes_ref(mapi_bytes *b);
void mapi_bytes_unref(mapi_bytes *b); /* NULL is fine */

/* The State message (operator.proto: agents = 1, frameworks = 2, tasks = 3,
 * executors = 4, operations = 5, roles = 6) of st, as the data of a
 * length-delimited field (its length in front), from the items' bytes. One
 * reference, the caller's. Under the view's read lock. */
mapi_bytes *mapi_encode_state(const mapi_state *st);
