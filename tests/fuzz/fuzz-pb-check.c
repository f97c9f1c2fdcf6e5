/* The descriptor-driven checks (pb-check.h) on any message a client can send: the first
 * byte picks the type, the rest is its wire form. Whatever unpacks is walked without a
 * crash; a refusal is one line of UTF-8 naming a path; a message that passes still
 * passes after a pack / unpack round trip, and one a server accepts packs into bytes
 * that parse again (protobuf-c keeps unknown fields it cannot re-read: field 0); the UTF-8 validator and
 * repair agree with values.c's decoder on the raw bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/pb-check.h"
#include "meseta/v1/agent_link.pb-c.h"
#include "meseta/v1/allocator.pb-c.h"
#include "meseta/v1/operator.pb-c.h"
#include "meseta/v1/scheduler.pb-c.h"
#include "meseta/values.h"

static void check_error(ms_error *err) {
  if (!err || err->code != MS_INVALID_ARGUMENT || !err->msg || err->msg[0] != '`' ||
      !ms_utf8_valid(err->msg, strlen(err->msg)) || strchr(err->msg, '\n')) {
    fprintf(stderr, "bad refusal: %s\n", err && err->msg ? err->msg : "(none)");
    abort();
  }
  ms_error_free(err);
}

static void raw_bytes(const uint8_t *data, size_t size) {
  const char *s = (const char *)data;
  size_t ok = ms_utf8_valid_prefix(s, size);
  if (ok > size || (ok == size) != ms_utf8_valid(s, size) || !ms_utf8_valid(s, ok))
    abort();
  char *z = malloc(size + 1);
  memcpy(z, data, size);
  z[size] = '\0';
  char *r = ms_utf8_repair(z);
  if (!ms_utf8_valid(r, strlen(r)) || (ms_utf8_valid(z, strlen(z)) && strcmp(r, z) != 0))
    abort();
  free(r);
  free(z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  raw_bytes(data, size);
  static const ProtobufCMessageDescriptor *const types[] = {
      &meseta__v1__accept_request__descriptor,         &meseta__v1__subscribe_request__descriptor,
      &meseta__v1__scheduler_call_request__descriptor, &meseta__v1__framework_subscription__descriptor,
      &meseta__v1__agent_message__descriptor,          &meseta__v1__update_framework_request__descriptor,
  };
  if (size < 1)
    return 0;
  const ProtobufCMessageDescriptor *d = types[data[0] % (sizeof(types) / sizeof(types[0]))];
  ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, size - 1, data + 1);
  if (!m)
    return 0;
  ms_error *err = NULL;
  bool utf8 = ms_pb_check_utf8(m, "request", &err) == 0;
  if (!utf8)
    check_error(err), err = NULL;
  bool request = ms_pb_check_request(m, "request", &err) == 0;
  if (!request && utf8 && err && err->msg && strstr(err->msg, "UTF-8"))
    abort(); /* the strict check adds unknown fields only */
  if (!request)
    ms_error_free(err), err = NULL; /* may name no path: an unknown field at the top */
  bool allowed = ms_pb_check_refused(m, NULL, &err) == 0;
  if (!allowed)
    check_error(err), err = NULL;
  /* What passed passes again once packed and read back (what a server keeps and resends). */
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(n + 1);
  protobuf_c_message_pack(m, buf);
  ProtobufCMessage *again = protobuf_c_message_unpack(d, NULL, n, buf);
  if (!again && request)
    abort(); /* what a server accepts, it can copy (ms_pb_dup) */
  if (!again) {
    free(buf);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
  }
  if (utf8 && ms_pb_check_utf8(again, NULL, NULL) < 0)
    abort();
  if (allowed && ms_pb_check_refused(again, NULL, NULL) < 0)
    abort();
  protobuf_c_message_free_unpacked(again, NULL);
  free(buf);
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}
