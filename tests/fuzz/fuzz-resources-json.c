/* Fuzzes the JSON form of resources. */
#include <stdint.h>

#include "fuzz-common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ms_resources *r = NULL;
  ms_error *err = NULL;
  if (ms_resources_from_json((const char *)data, size, &r, &err) == 0) {
    fuzz_check_set(r);
    ms_resources_free(r);
  } else {
    if (r)
      fuzz_fail("a failed parse returned a set", r);
    fuzz_check_error(err);
  }
  return 0;
}
