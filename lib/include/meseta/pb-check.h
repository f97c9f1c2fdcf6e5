/* Checks of whole protobuf-c messages, driven by their descriptors: every string is
 * strict UTF-8 (proto3's rule, which grpcio and other runtimes enforce when they parse),
 * and no field the cluster does not implement is set (one table, pb-refused.c).
 *
 * Both walk a message recursively (nested messages, repeated fields, the set member
 * of a oneof, map entries) and name what they find by its path from the message
 * checked: `framework_info.name`, `operations[0].launch.task_infos[2].container.volumes`.
 * They allocate nothing unless they fail; the error (INVALID_ARGUMENT) is the caller's.
 * A path longer than 512 bytes is cut short in the message. */
#pragma once

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

#include "meseta/error.h"

/* The length of the longest prefix of s[0..len) that is strict UTF-8 (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF; NUL is allowed). Equal to len
 * when all of it is. */
size_t ms_utf8_valid_prefix(const char *s, size_t len);

/* (Whether all of it is: ms_utf8_valid in values.h.) */

/* A copy of the NUL-terminated s with every byte that is not part of strict UTF-8
 * replaced by U+FFFD; the caller frees it. For text this process makes from bytes it
 * did not check (file names, another program's output) before it is sent. */
char *ms_utf8_repair(const char *s);

/* Every string field of m, at any depth, is strict UTF-8. Otherwise INVALID_ARGUMENT:
 * "`<prefix>.<path>`: not valid UTF-8 (byte N)". prefix may be NULL or "". */
int ms_pb_check_utf8(const ProtobufCMessage *m, const char *prefix, ms_error **err);

/* What a server checks in every message it receives: ms_pb_check_utf8, and no field
 * the message type does not define (protobuf-c would keep it, ignored; some, such as
 * field number 0, it packs into bytes it cannot parse again). INVALID_ARGUMENT
 * "`<path>`: field number N is not part of `<type>`". */
int ms_pb_check_request(const ProtobufCMessage *m, const char *prefix, ms_error **err);

/* A field the cluster does not implement (yet). A row refuses the field whenever it is
 * set; with `allowed`, only values outside that list: names of enum values for an enum
 * field, strings for a string field, keys for a map field. */
typedef struct ms_pb_refusal {
  const ProtobufCMessageDescriptor *message;
  const char *field;
  const char *const *allowed; /* NULL-terminated, or NULL: any value is refused */
  const char *why;            /* completes "`path`: " */
  /* NULL: wherever the message appears; else only in a walk from a message of this
   * type (e.g. a FrameworkInfo field that Subscribe ignores but UpdateFramework applies). */
  const ProtobufCMessageDescriptor *root;
} ms_pb_refusal;

/* The cluster's table (pb-refused.c) and its length. */
extern const ms_pb_refusal ms_pb_refused[];
extern const size_t ms_pb_nrefused;

/* The first field of m (depth first, in field order) that a row of `table` refuses.
 * INVALID_ARGUMENT "`<prefix>.<path>`: <why>", or for an `allowed` row
 * "`<prefix>.<path>`: `<value>`: <why>". */
int ms_pb_check_refusals(const ProtobufCMessage *m, const char *prefix, const ms_pb_refusal *table, size_t n,
                         ms_error **err);

/* The same with the cluster's table. */
int ms_pb_check_refused(const ProtobufCMessage *m, const char *prefix, ms_error **err);

/* Whether every row of `table` names a field its message has (a test's check). On
 * false, *ret_row is the first row that does not. */
bool ms_pb_refusals_resolve(const ms_pb_refusal *table, size_t n, size_t *ret_row);
