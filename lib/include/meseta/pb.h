/* Small protobuf-c helpers. */
#pragma once

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

/* A deep copy of a message (pack, then unpack): for keeping a request beyond the
 * callback that borrowed it. The caller frees it with protobuf_c_message_free_unpacked. */
ProtobufCMessage *ms_pb_dup(const ProtobufCMessage *m);

/* A new, initialised (all defaults) message of type `d` on the heap, for building
 * messages that protobuf_c_message_free_unpacked frees later (every field it points to
 * must then be heap memory too). */
void *ms_pb_new(const ProtobufCMessageDescriptor *d);

/* Packs a message into a new buffer (the caller frees it) and its size. */
uint8_t *ms_pb_pack(const ProtobufCMessage *m, size_t *ret_len);

/* The member of one of `wrapper`'s oneofs whose type is `payload` (the first if
 * several); NULL if none. The descriptor is static. */
const ProtobufCFieldDescriptor *ms_pb_oneof_member(const ProtobufCMessageDescriptor *wrapper,
                                                   const ProtobufCMessageDescriptor *payload);
