/* Resources to and from their outside forms: the agent's `--resources` text, JSON and
 * the meseta.v1 protobuf messages. Every parser validates fully (see resources.h) and
 * either returns a whole set or an error naming what is wrong; none crashes on bad
 * input. Printing then parsing gives an equal set.
 *
 * Text grammar (Mesos' agent flag):
 *   resources := resource (';' resource)*          empty parts are skipped
 *   resource  := name ['(' role ')'] ':' value     role `*` or absent: default role
 *   value     := scalar | '[' [range (',' range)*] ']' | '{' [item (',' item)*] '}'
 *   range     := uint ['-' uint]
 * e.g. `cpus:4;mem:8192;ports:[31000-32000];disk(ads):100`. A role makes a STATIC
 * reservation. Text that starts with `[` is read as the JSON form instead.
 * ms_resources_format_text prints the text form when every resource fits it and the
 * JSON form otherwise, so its output always parses back.
 *
 * JSON form: an array of objects shaped as meseta.v1.Resource with proto field names
 * ({"name":"cpus","type":"SCALAR","scalar":{"value":4}, "reservations":[...], ...});
 * unknown keys are refused. 64-bit range bounds may be numbers or decimal strings.
 *
 * Ownership: parsed sets are the caller's (ms_resources_free). Printed strings are the
 * caller's (free). ms_resources_to_proto returns a message the caller frees with
 * ms_resources_proto_free; it does not point into the set. The from_proto functions
 * only read the message. */
#pragma once

#include <jansson.h>
#include <stddef.h>

#include "meseta/error.h"
#include "meseta/resources-ops.h"
#include "meseta/resources.h"
#include "meseta/v1/resources.pb-c.h"

#define MS_RESOURCES_TEXT_MAX (1u << 20) /* bytes of text or JSON accepted */

/* default_role: the role of resources without one (NULL or "*": unreserved). */
int ms_resources_parse_text(const char *text, const char *default_role, ms_resources **ret, ms_error **err);
char *ms_resources_format_text(const ms_resources *set);

int ms_resources_from_json(const char *text, size_t len, ms_resources **ret, ms_error **err);
int ms_resources_from_json_value(const json_t *array, ms_resources **ret, ms_error **err);
char *ms_resources_to_json(const ms_resources *set);         /* compact */
json_t *ms_resources_to_json_value(const ms_resources *set); /* a new reference */

int ms_resources_from_proto(Meseta__V1__Resource *const *resources, size_t n, ms_resources **ret,
                            ms_error **err);
int ms_resources_from_proto_msg(const Meseta__V1__Resources *msg, ms_resources **ret, ms_error **err);
Meseta__V1__Resources *ms_resources_to_proto(const ms_resources *set);
void ms_resources_proto_free(Meseta__V1__Resources *msg);

/* Fills *ret (zero it first; release with ms_operation_release) from msg. */
int ms_operation_from_proto(const Meseta__V1__Operation *msg, ms_operation *ret, ms_error **err);
