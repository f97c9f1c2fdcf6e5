/* Fuzzes the protobuf conversion: the input is a meseta.v1.Resources (first byte even)
 * or a meseta.v1.Operation applied to a fixed agent set (first byte odd), which must
 * either apply or leave the set exactly as it was. */
#include <stdint.h>

#include "fuzz-common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char agent_text[] =
    "[{\"name\":\"cpus\",\"type\":\"SCALAR\",\"scalar\":{\"value\":8}},"
    "{\"name\":\"cpus\",\"type\":\"SCALAR\",\"scalar\":{\"value\":2},\"reservations\":[{\"type\":\"DYNAMIC\","
    "\"role\":\"eng\"}]},"
    "{\"name\":\"disk\",\"type\":\"SCALAR\",\"scalar\":{\"value\":100},\"reservations\":[{\"type\":"
    "\"DYNAMIC\",\"role\":\"eng\"}]},"
    "{\"name\":\"disk\",\"type\":\"SCALAR\",\"scalar\":{\"value\":10},\"reservations\":[{\"type\":"
    "\"DYNAMIC\",\"role\":\"eng\"}],"
    "\"disk\":{\"persistence\":{\"id\":\"v1\"},\"volume\":{\"container_path\":\"data\"}}},"
    "{\"name\":\"disk\",\"type\":\"SCALAR\",\"scalar\":{\"value\":50},\"provider_id\":{\"value\":\"rp\"},"
    "\"disk\":{\"source\":{\"type\":\"RAW\",\"profile\":\"fast\"}}},"
    "{\"name\":\"ports\",\"type\":\"RANGES\",\"ranges\":{\"range\":[{\"begin\":31000,\"end\":32000}]}}]";

static void fuzz_operation(const uint8_t *data, size_t size) {
  Meseta__V1__Operation *msg = meseta__v1__operation__unpack(NULL, size, data);
  if (!msg)
    return;
  ms_operation op = {0};
  ms_error *err = NULL;
  if (ms_operation_from_proto(msg, &op, &err) == 0) {
    ms_resources *agent = NULL;
    if (ms_resources_from_json(agent_text, sizeof(agent_text) - 1, &agent, &err) < 0)
      abort();
    ms_resources *before = ms_resources_clone(agent);
    if (ms_resources_apply(agent, &op, &err) == 0) {
      fuzz_check_set(agent);
    } else {
      if (!ms_resources_equal(agent, before))
        fuzz_fail("a refused operation changed the set", agent);
      fuzz_check_error(err);
    }
    ms_resources_free(agent);
    ms_resources_free(before);
    ms_operation_release(&op);
  } else {
    fuzz_check_error(err);
  }
  meseta__v1__operation__free_unpacked(msg, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  if (data[0] & 1) {
    fuzz_operation(data + 1, size - 1);
    return 0;
  }
  Meseta__V1__Resources *msg = meseta__v1__resources__unpack(NULL, size - 1, data + 1);
  if (!msg)
    return 0;
  ms_resources *r = NULL;
  ms_error *err = NULL;
  if (ms_resources_from_proto_msg(msg, &r, &err) == 0) {
    fuzz_check_set(r);
    ms_resources_free(r);
  } else {
    fuzz_check_error(err);
  }
  meseta__v1__resources__free_unpacked(msg, NULL);
  return 0;
}
