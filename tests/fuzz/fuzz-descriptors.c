/* Descriptor sets are parsed by hand (to keep each file's exact bytes): any bytes
 * must be refused cleanly or indexed, never crash. */
#include <stdlib.h>

#include "meseta/descriptors.h"

static void touch(const ms_descfile *f, void *arg) {
  (void)arg;
  if (!f->name || (f->len && !f->bytes))
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ms_descdb *db = ms_descdb_new();
  ms_error *err = NULL;
  if (ms_descdb_add_set(db, data, size, &err) < 0) {
    if (!err || !err->msg || err->code != MS_INVALID_ARGUMENT)
      abort();
    ms_error_free(err);
  }
  /* Whatever was indexed must be walkable. */
  const char *names[] = {"meseta.test.v1.Echo", "grpc.health.v1.Health", "a.B", "a.B.C"};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    const ms_descfile *f = ms_descdb_file_by_symbol(db, names[i]);
    if (f)
      ms_descdb_walk_deps(f, touch, NULL);
    ms_call_kind kind;
    ms_error *e = NULL;
    if (ms_descdb_method_kind(db, names[i], "M", &kind, &e) < 0)
      ms_error_free(e);
  }
  ms_descdb_free(db);
  return 0;
}
