#include "meseta/pb.h"

#include <stdlib.h>

#include "meseta/alloc.h"

uint8_t *ms_pb_pack(const ProtobufCMessage *m, size_t *ret_len) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = ms_xmalloc(n ? n : 1);
  protobuf_c_message_pack(m, buf);
  *ret_len = n;
  return buf;
}

ProtobufCMessage *ms_pb_dup(const ProtobufCMessage *m) {
  size_t n;
  uint8_t *buf = ms_pb_pack(m, &n);
  ProtobufCMessage *copy = protobuf_c_message_unpack(m->descriptor, NULL, n, buf);
  free(buf);
  if (!copy)
    abort(); /* our own bytes always parse; failing here means memory ran out */
  return copy;
}

void *ms_pb_new(const ProtobufCMessageDescriptor *d) {
  void *m = ms_xmalloc(d->sizeof_message);
  protobuf_c_message_init(d, m);
  return m;
}

const ProtobufCFieldDescriptor *ms_pb_oneof_member(const ProtobufCMessageDescriptor *wrapper,
                                                   const ProtobufCMessageDescriptor *payload) {
  for (unsigned i = 0; i < wrapper->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &wrapper->fields[i];
    if (f->type == PROTOBUF_C_TYPE_MESSAGE && f->descriptor == payload &&
        (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
      return f;
  }
  return NULL;
}
