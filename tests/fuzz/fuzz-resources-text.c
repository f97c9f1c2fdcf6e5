/* Fuzzes the agent's --resources text parser (which also reads the JSON form). */
#include <stdint.h>

#include "fuzz-common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = malloc(size + 1);
  memcpy(text, data, size);
  text[size] = '\0';
  ms_resources *r = NULL;
  ms_error *err = NULL;
  /* A role from the input's first line half the time, to reach default-role paths. */
  const char *role = size && data[0] == '@' ? "eng/web" : NULL;
  if (ms_resources_parse_text(role ? text + 1 : text, role, &r, &err) == 0) {
    fuzz_check_set(r);
    ms_resources_free(r);
  } else {
    if (r)
      fuzz_fail("a failed parse returned a set", r);
    fuzz_check_error(err);
  }
  free(text);
  return 0;
}
