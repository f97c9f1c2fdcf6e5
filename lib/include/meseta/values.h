/* Resource and attribute values: fixed-point scalars, interval ranges, string sets.
 *
 * Scalars are int64 milli-units (three decimals, as Mesos rounds them) so a million
 * add/subtract cycles never drift. The wire keeps Mesos' `double`; conversion rounds
 * to the nearest 0.001 and refuses NaN, infinities, negatives and values above
 * MS_SCALAR_MAX with an error that names the field.
 *
 * Ranges are sorted arrays of disjoint, non-adjacent [begin, end] intervals (inclusive);
 * sets are sorted arrays of distinct strings. Both are "normalized" after every public
 * operation, so equality is a memcmp/strcmp walk and containment a merge.
 *
 * Ownership: an ms_ranges / ms_set owns its array (and a set its strings). Zero-
 * initialize one ({0}) before use, release it with ms_ranges_release / ms_set_release.
 * Functions taking `const` inputs only read them. Not thread-safe per object. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "meseta/error.h"

/* The value types of the wire (meseta.v1.Value.Type). TEXT is for attributes only. */
typedef enum ms_value_type {
  MS_VALUE_UNKNOWN = 0,
  MS_VALUE_SCALAR = 1,
  MS_VALUE_RANGES = 2,
  MS_VALUE_SET = 3,
  MS_VALUE_TEXT = 4,
} ms_value_type;

/* "SCALAR", "RANGES", "SET", "TEXT", "UNKNOWN". Static storage. */
const char *ms_value_type_name(ms_value_type t);

/* ---- scalars ---- */

typedef int64_t ms_scalar; /* milli-units: 1.5 cpus is 1500 */
#define MS_SCALAR_UNIT ((ms_scalar)1000)
/* 10^12 units: an exabyte of memory in MB. Sums past it are refused too, so every
 * value the library holds converts back to a double exactly. */
#define MS_SCALAR_MAX ((ms_scalar)1000000000000000LL)
#define MS_SCALAR_BUFSZ 32

/* Rounds v to three decimals. `what` names the field in the error ("resource `cpus`"). */
int ms_scalar_from_double(double v, const char *what, ms_scalar *ret, ms_error **err);
double ms_scalar_to_double(ms_scalar s);
/* Parses a decimal ("4", "0.5", "1e3") of len bytes; rounding and limits as above. */
int ms_scalar_parse(const char *s, size_t len, const char *what, ms_scalar *ret, ms_error **err);
/* Shortest exact decimal ("4", "0.5", "1.125") into buf; returns buf. */
const char *ms_scalar_format(ms_scalar s, char buf[MS_SCALAR_BUFSZ]);

/* ---- ranges ---- */

typedef struct ms_range {
  uint64_t begin, end; /* inclusive, begin <= end */
} ms_range;

typedef struct ms_ranges {
  ms_range *v;
  uint32_t n, cap;
} ms_ranges;

/* Inputs from clients (wire, text, JSON) may hold at most this many intervals. */
#define MS_RANGES_MAX_INTERVALS 65536u

void ms_ranges_release(ms_ranges *r);
/* dst is overwritten (not released first). */
void ms_ranges_copy(ms_ranges *dst, const ms_ranges *src);
/* Appends without normalizing (begin <= end is checked); call ms_ranges_normalize after
 * a batch. Refuses more than MS_RANGES_MAX_INTERVALS. `what` names the field. */
int ms_ranges_push(ms_ranges *r, uint64_t begin, uint64_t end, const char *what, ms_error **err);
/* Sorts, merges overlapping and adjacent intervals: [1-2],[3-5] -> [1-5]. */
void ms_ranges_normalize(ms_ranges *r);
/* a |= b; a \= b (values of b not in a are ignored); a ⊇ b; a == b. All normalized. */
void ms_ranges_union(ms_ranges *a, const ms_ranges *b);
void ms_ranges_subtract(ms_ranges *a, const ms_ranges *b);
bool ms_ranges_contains(const ms_ranges *a, const ms_ranges *b);
bool ms_ranges_equal(const ms_ranges *a, const ms_ranges *b);
/* Number of values (saturates at UINT64_MAX). */
uint64_t ms_ranges_count(const ms_ranges *r);

/* ---- sets ---- */

typedef struct ms_set {
  char **v; /* sorted, distinct, each owned */
  uint32_t n, cap;
} ms_set;

#define MS_SET_MAX_ITEMS 65536u
#define MS_SET_MAX_ITEM_LEN 1024u

void ms_set_release(ms_set *s);
void ms_set_copy(ms_set *dst, const ms_set *src);
/* Appends a copy of item[0..len) without normalizing; refuses empty items, control
 * characters, items longer than MS_SET_MAX_ITEM_LEN and sets past MS_SET_MAX_ITEMS. */
int ms_set_push(ms_set *s, const char *item, size_t len, const char *what, ms_error **err);
/* Sorts; refuses duplicates (naming the item). */
int ms_set_normalize(ms_set *s, const char *what, ms_error **err);
void ms_set_union(ms_set *a, const ms_set *b);
void ms_set_subtract(ms_set *a, const ms_set *b);
bool ms_set_contains(const ms_set *a, const ms_set *b);
bool ms_set_equal(const ms_set *a, const ms_set *b);
bool ms_set_has(const ms_set *s, const char *item);

/* Whether s[0..len) is well-formed UTF-8 (what protobuf strings and JSON require). */
bool ms_utf8_valid(const char *s, size_t len);

/* Copies s into out (size >= 8) for an error message: control bytes become `?`,
 * long strings end in "...". Returns out. */
const char *ms_value_quote(const char *s, char *out, size_t size);
