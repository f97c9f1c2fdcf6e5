/* A database of .proto file descriptors, built from serialized FileDescriptorSets
 * (protoc --include_imports --descriptor_set_out, embedded by ms_proto_library).
 *
 * protobuf-c's generated code knows nothing of streaming: the gRPC layer takes each
 * method's call kind from here, and server reflection serves the files' original bytes.
 *
 * Ownership: the database copies what it is given; every pointer it returns stays
 * valid until ms_descdb_free(). It is immutable once built and safe to read from
 * any thread; adding sets is not thread-safe (do it before serving). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "meseta/error.h"

typedef struct ms_descdb ms_descdb;

typedef struct ms_descfile {
  const char *name;     /* "grpc/health/v1/health.proto" */
  const char *package;  /* "grpc.health.v1" */
  const uint8_t *bytes; /* the serialized FileDescriptorProto */
  size_t len;
  const struct ms_descfile **deps; /* direct dependencies found in the db */
  size_t n_deps;
} ms_descfile;

typedef enum ms_call_kind {
  MS_CALL_UNARY = 0,
  MS_CALL_SERVER_STREAM = 1,
  MS_CALL_CLIENT_STREAM = 2,
  MS_CALL_BIDI_STREAM = 3,
} ms_call_kind;

ms_descdb *ms_descdb_new(void);
void ms_descdb_free(ms_descdb *db);

/* Adds every file of a serialized FileDescriptorSet; files already present (same
 * name) are kept once. Fails with INVALID_ARGUMENT on a malformed set. */
int ms_descdb_add_set(ms_descdb *db, const uint8_t *bytes, size_t len, ms_error **err);

/* libmeseta's own embedded set (everything under proto/). Added by the caller. */
extern const unsigned char ms_descriptor_set[];
extern const size_t ms_descriptor_set_len;

const ms_descfile *ms_descdb_file_by_name(const ms_descdb *db, const char *name);

/* Resolves a fully-qualified symbol: a service ("pkg.Svc"), a method
 * ("pkg.Svc.Method"), a message or enum (nested ones too: "pkg.Outer.Inner"),
 * a field or an enum value. NULL if unknown. */
const ms_descfile *ms_descdb_file_by_symbol(const ms_descdb *db, const char *symbol);

/* Whether `symbol` names a message type. */
bool ms_descdb_is_message(const ms_descdb *db, const char *symbol);

/* The call kind of "pkg.Svc"/"Method". Fails with NOT_FOUND if unknown. */
int ms_descdb_method_kind(const ms_descdb *db, const char *service, const char *method,
                          ms_call_kind *ret_kind, ms_error **err);

/* Calls fn for `file` and then every file it depends on, each once, the file first. */
void ms_descdb_walk_deps(const ms_descfile *file, void (*fn)(const ms_descfile *f, void *arg), void *arg);
