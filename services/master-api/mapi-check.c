/* Checks on every request master-api takes, read from the message descriptors. */
#include <stdio.h>
#include <string.h>

#include "meseta/alloc.h"

#include "mapi-internal.h"

#define MEMBER(msg, off, type) (*(type *)((char *)(msg) + (off)))
#define MAX_DEPTH 64

/* Appends `.name` or `name[i]` to the path in buf (n bytes), returning the old length. */
static size_t path_push(char *buf, size_t n, const char *name, size_t index, bool indexed) {
  size_t len = strlen(buf);
  if (indexed)
    snprintf(buf + len, n - len, "%s%s[%zu]", len ? "." : "", name, index);
  else
    snprintf(buf + len, n - len, "%s%s", len ? "." : "", name);
  return len;
}

static bool field_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
    return MEMBER(m, f->quantifier_offset, uint32_t) == f->id;
  if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE)
    return MEMBER(m, f->quantifier_offset, protobuf_c_boolean);
  return true;
}

static int walk(const ProtobufCMessage *m, char *path, size_t cap, int depth, ms_error **err) {
  if (depth > MAX_DEPTH)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: messages nested deeper than %d", path, MAX_DEPTH);
  const ProtobufCMessageDescriptor *d = m->descriptor;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    if (f->type != PROTOBUF_C_TYPE_ENUM && f->type != PROTOBUF_C_TYPE_MESSAGE)
      continue;
    bool repeated = f->label == PROTOBUF_C_LABEL_REPEATED;
    size_t n = repeated ? MEMBER(m, f->quantifier_offset, size_t) : field_present(m, f) ? 1 : 0;
    for (size_t k = 0; k < n; k++) {
      size_t len = path_push(path, cap, f->name, k, repeated);
      int rc = 0;
      if (f->type == PROTOBUF_C_TYPE_ENUM) {
        int v = repeated ? MEMBER(m, f->offset, int *)[k] : MEMBER(m, f->offset, int);
        const ProtobufCEnumDescriptor *e = f->descriptor;
        if (!protobuf_c_enum_descriptor_get_value(e, v))
          rc = ms_error_set(err, MS_INVALID_ARGUMENT, "%s: %d is not a value of %s", path, v, e->name);
      } else {
        const ProtobufCMessage *sub = repeated ? MEMBER(m, f->offset, ProtobufCMessage **)[k]
                                               : MEMBER(m, f->offset, ProtobufCMessage *);
        if (sub)
          rc = walk(sub, path, cap, depth + 1, err);
      }
      path[len] = '\0';
      if (rc < 0)
        return rc;
    }
  }
  return 0;
}

int mapi_check_request(const ProtobufCMessage *req, ms_error **err) {
  char path[512] = "";
  return walk(req, path, sizeof(path), 0, err);
}
