/* Helpers shared by the resources fuzz targets: invariants that abort on violation. */
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/resources-io.h"

static inline void fuzz_fail(const char *what, const ms_resources *a) {
  char *d = a ? ms_resources_describe(a) : NULL;
  fprintf(stderr, "invariant broken: %s: %s\n", what, d ? d : "");
  free(d);
  abort();
}

/* An error must exist and say something. */
static inline void fuzz_check_error(ms_error *err) {
  if (!err || !err->msg || !*err->msg || err->code == MS_OK)
    fuzz_fail("a refusal without a message", NULL);
  if (!ms_utf8_valid(err->msg, strlen(err->msg)) || strchr(err->msg, '\n')) {
    fprintf(stderr, "%s\n", err->msg);
    fuzz_fail("an error message that is not one line of UTF-8", NULL);
  }
  ms_error_free(err);
}

/* Arithmetic on a valid set: a ⊆ a + a and a can be taken back out (ranges and sets
 * union, so (a + a) - a need not be a), a - a is empty, printed forms parse back equal. */
static inline void fuzz_check_set(const ms_resources *a) {
  ms_error *err = NULL;
  ms_resources *twice = ms_resources_clone(a), *back = NULL;
  if (ms_resources_add(twice, a, &err) == 0) {
    if (!ms_resources_contains(twice, a))
      fuzz_fail("a + a does not contain a", a);
    if (ms_resources_subtract(twice, a, &err) < 0)
      fuzz_fail("a + a - a refused", a);
  } else {
    ms_error_free(err), err = NULL; /* past MS_SCALAR_MAX: refused, fine */
  }
  ms_resources_free(twice);
  ms_resources *none = ms_resources_clone(a);
  if (ms_resources_subtract(none, a, &err) < 0 || !ms_resources_is_empty(none))
    fuzz_fail("a - a is not empty", a);
  ms_resources_free(none);

  char *text = ms_resources_format_text(a);
  if (ms_resources_parse_text(text, NULL, &back, &err) < 0) {
    fprintf(stderr, "%s\n%s\n", text, err->msg);
    fuzz_fail("printed text does not parse", a);
  }
  if (!ms_resources_equal(a, back))
    fuzz_fail("text round trip changed the set", a);
  ms_resources_free(back);
  free(text);

  char *json = ms_resources_to_json(a);
  if (ms_resources_from_json(json, strlen(json), &back, &err) < 0) {
    fprintf(stderr, "%s\n%s\n", json, err->msg);
    fuzz_fail("printed JSON does not parse", a);
  }
  if (!ms_resources_equal(a, back))
    fuzz_fail("JSON round trip changed the set", a);
  ms_resources_free(back);
  free(json);

  Meseta__V1__Resources *msg = ms_resources_to_proto(a);
  size_t len = protobuf_c_message_get_packed_size(&msg->base);
  uint8_t *buf = malloc(len + 1);
  protobuf_c_message_pack(&msg->base, buf);
  Meseta__V1__Resources *in = meseta__v1__resources__unpack(NULL, len, buf);
  if (!in || ms_resources_from_proto_msg(in, &back, &err) < 0)
    fuzz_fail("packed proto does not convert back", a);
  if (!ms_resources_equal(a, back))
    fuzz_fail("proto round trip changed the set", a);
  ms_resources_free(back);
  meseta__v1__resources__free_unpacked(in, NULL);
  ms_resources_proto_free(msg);
  free(buf);
}
