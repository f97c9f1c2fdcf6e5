/* The registry's record kinds: key layout, id rules and validation, one table row
 * per kind. Pure functions of their inputs; thread-safe.
 *
 * Layout: `<prefix>/v1/<segment>/<id>` holds a packed meseta.v1.Record (its
 * revision field left 0: the revision is etcd's mod_revision). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "meseta/error.h"
#include "meseta/v1/registry.pb-c.h"

/* Tasks one COMPLETED_TASKS record may hold. */
#define REG_MAX_COMPLETED_TASKS 1000

typedef Meseta__V1__RecordKind reg_kind;
typedef Meseta__V1__Record reg_record;

/* "agents", "frameworks", ... NULL for an unknown kind. Static storage. */
const char *reg_kind_segment(reg_kind kind);
/* "AGENT", "FRAMEWORK", ... for messages. Static storage. */
const char *reg_kind_name(reg_kind kind);
/* The kind a record's body says it is (RECORD_KIND_UNSPECIFIED without a body). */
reg_kind reg_record_kind(const reg_record *r);

/* Checks a kind and an id: INVALID_ARGUMENT naming the field otherwise. */
int reg_check_ref(reg_kind kind, const char *id, const char *field, ms_error **err);

/* Checks a record before it is written: an id valid for its kind, a body, and the
 * body's own fields (ids inside matching the record id, roles valid, numbers in
 * range). INVALID_ARGUMENT naming the field otherwise. */
int reg_validate(const reg_record *r, ms_error **err);

/* `<prefix>/v1/<segment>/<id>`, and the listing prefix `<prefix>/v1/<segment>/`.
 * The caller frees. */
char *reg_key(const char *prefix, reg_kind kind, const char *id);
char *reg_kind_prefix(const char *prefix, reg_kind kind);

/* Splits a key under `<prefix>/v1/` into kind and id (*ret_id points into key).
 * false for keys that are not records. */
bool reg_parse_key(const char *prefix, const char *key, size_t len, reg_kind *ret_kind, const char **ret_id,
                   size_t *ret_id_len);

/* Page tokens carry the listing's revision and the next key; they are opaque to
 * clients. The encoder's result is the caller's. */
char *reg_page_token_encode(long long revision, const char *next_key, size_t len);
int reg_page_token_decode(const char *token, long long *ret_revision, char **ret_next_key, size_t *ret_len,
                          ms_error **err);
