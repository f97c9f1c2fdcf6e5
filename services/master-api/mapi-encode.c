/* Pre-encoded protobuf: item bytes, the State assembled from them. */
#include "mapi-encode.h"

#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"

#include "mapi-view.h"

size_t mapi_varint_put(uint8_t *out, uint64_t v) {
  size_t k = 0;
  while (v >= 0x80) {
    out[k++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  out[k++] = (uint8_t)v;
  return k;
}

size_t mapi_varint_size(uint64_t v) {
  size_t k = 1;
  while (v >= 0x80) {
    v >>= 7;
    k++;
  }
  return k;
}

void mapi_enc_item(const ProtobufCMessage *m, ProtobufCBinaryData *out) {
  size_t n = protobuf_c_message_get_packed_size(m);
  size_t k = mapi_varint_size(n);
  out->data = ms_xmalloc(k + n);
  mapi_varint_put(out->data, n);
  protobuf_c_message_pack(m, out->data + k);
  out->len = k + n;
}

mapi_bytes *mapi_bytes_ref(mapi_bytes *b) {
  atomic_fetch_add(&b->refs, 1);
  return b;
}

void mapi_bytes_unref(mapi_bytes *b) {
  if (!b || atomic_fetch_sub(&b->refs, 1) != 1)
    return;
  free(b->data);
  free(b);
}

mapi_bytes *mapi_encode_state(const mapi_state *st) {
  /* In field order: protobuf-c packs a message's fields by number. */
  const mapi_coll *cs[] = {&st->agents,    &st->frameworks, &st->tasks,
                           &st->executors, &st->operations, &st->roles};
  size_t body = 0;
  for (size_t f = 0; f < MS_ARRAY_SIZE(cs); f++)
    body += cs[f]->n + cs[f]->enc_bytes; /* a one-byte tag (fields 1-6) per item */
  mapi_bytes *b = ms_xmalloc(sizeof(*b));
  atomic_init(&b->refs, 1);
  b->data = ms_xmalloc(mapi_varint_size(body) + body);
  uint8_t *p = b->data + mapi_varint_put(b->data, body);
  for (size_t f = 0; f < MS_ARRAY_SIZE(cs); f++) {
    uint8_t tag = (uint8_t)(((f + 1) << 3) | PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED);
    const mapi_coll *c = cs[f];
    for (size_t i = 0; i < c->n; i++) {
      *p++ = tag;
      memcpy(p, c->enc[i].data, c->enc[i].len);
      p += c->enc[i].len;
    }
  }
  b->len = (size_t)(p - b->data);
  return b;
}
