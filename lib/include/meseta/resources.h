/* The resource model: what agents offer, the allocator sorts, operations transform and
 * tasks consume. Semantics follow Apache Mesos (`Resource`, `Resources`); the
 * representation is built for the allocator's hot loops.
 *
 * A resource is a name, a value (fixed-point scalar, ranges or set; see values.h) and
 * metadata: a reservation stack, an allocation role, disk info, shared / revocable
 * markers and a resource provider id. A set (ms_resources) is a flat array in a
 * canonical order, so add / subtract / contains / equal are merges:
 *   - names are interned (cpus, mem, disk, ports, gpus are 0..4) and compared as ints;
 *   - metadata lives in an immutable, reference-counted ms_rmeta with a precomputed
 *     hash; unreserved resources with no metadata have meta == NULL (the fast path);
 *   - two resources combine when everything but the value matches. Resources whose
 *     value is part of their identity ("unit" resources: shared or persistent volumes,
 *     MOUNT / BLOCK disks, RAW disks with an id) never combine: equal copies are counted
 *     (`count`), and only an exact copy can be subtracted.
 * Zero-valued results vanish. Subtracting what is not contained fails; nothing changes.
 *
 * Ownership: ms_resources_new / _clone / the filters return sets the caller frees with
 * ms_resources_free (NULL is fine). Functions taking `const ms_resources *` only read
 * it. Pointers returned by accessors (names, roles, disk info) belong to the set and
 * stay valid until the entry is changed or the set freed. Metadata and interned names
 * are shared between sets and threads safely; a set itself is not thread-safe.
 *
 * Errors: MS_INVALID_ARGUMENT for a malformed resource (naming it and the rule),
 * MS_FAILED_PRECONDITION when a set lacks what a subtraction or operation needs,
 * MS_OUT_OF_RANGE when a sum passes MS_SCALAR_MAX. A failing call leaves its set as it
 * was. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "meseta/error.h"
#include "meseta/values.h"

/* ---- names ---- */

typedef uint32_t ms_name;
enum {
  MS_NAME_CPUS = 0,
  MS_NAME_MEM = 1,
  MS_NAME_DISK = 2,
  MS_NAME_PORTS = 3,
  MS_NAME_GPUS = 4,
};
#define MS_NAME_MAX_LEN 128
#define MS_NAME_MAX_COUNT 65536u

/* Validates (letters, digits, `_ . - / +`, at most MS_NAME_MAX_LEN bytes) and interns
 * name[0..len). The table is global, thread-safe and never shrinks; past
 * MS_NAME_MAX_COUNT distinct names it refuses with MS_RESOURCE_EXHAUSTED.
 *
 * It does not reclaim names: an ms_name is a plain integer copied into resources,
 * sorters, quotas and filters without a reference, so no one knows when the last use
 * of a name is gone (counting would put an atomic on every resource copy). It is kept
 * from filling instead: only trusted input adds names (agents' registrations, operator
 * calls, flags); a service parses a client's input (scheduler calls) inside
 * ms_names_untrusted(true), where a name not interned yet is refused. Such a name
 * cannot match any agent's resources anyway. */
int ms_name_intern(const char *name, size_t len, ms_name *ret, ms_error **err);
/* For the calling thread: while on, ms_name_intern (and every parse that interns:
 * ms_resources_from_proto, operations, text, JSON) adds no name and fails an unknown
 * one with MS_INVALID_ARGUMENT "resource name `x` is not known to the cluster (no agent
 * advertises it)", which callers prefix with the field. Returns the previous setting,
 * to restore after the parse. */
bool ms_names_untrusted(bool on);
/* Finds an interned name without adding it. */
bool ms_name_lookup(const char *name, ms_name *ret);
/* The string for an id (static storage); "?" for an unknown id. */
const char *ms_name_str(ms_name id);

/* ---- metadata ---- */

typedef enum ms_reservation_type {
  MS_RESERVATION_UNKNOWN = 0,
  MS_RESERVATION_STATIC = 1,
  MS_RESERVATION_DYNAMIC = 2,
} ms_reservation_type;

typedef enum ms_disk_source_type {
  MS_DISK_SOURCE_NONE = 0, /* the agent's root disk */
  MS_DISK_SOURCE_PATH = 1,
  MS_DISK_SOURCE_MOUNT = 2,
  MS_DISK_SOURCE_BLOCK = 3,
  MS_DISK_SOURCE_RAW = 4,
} ms_disk_source_type;

typedef enum ms_volume_mode {
  MS_VOLUME_MODE_UNSET = 0, /* read as RW */
  MS_VOLUME_RW = 1,
  MS_VOLUME_RO = 2,
} ms_volume_mode;

/* In a spec these borrow; inside a set they belong to the set. NULL and "" both mean
 * "not set" for optional strings. */
typedef struct ms_label {
  const char *key;
  const char *value; /* optional */
} ms_label;

typedef struct ms_reservation {
  ms_reservation_type type;
  const char *role;
  const char *principal; /* optional */
  const ms_label *labels;
  uint32_t nlabels;
} ms_reservation;

typedef struct ms_disk_info {
  const char *persistence_id;        /* set: a persistent volume */
  const char *persistence_principal; /* optional */
  const char *container_path;        /* the volume; required with persistence */
  ms_volume_mode mode;
  ms_disk_source_type source;
  const char *root;      /* PATH / MOUNT only */
  const char *source_id; /* a CSI volume id */
  const char *profile;
  const char *vendor;
  const ms_label *metadata;
  uint32_t nmetadata;
} ms_disk_info;

#define MS_RESERVATIONS_MAX 32
#define MS_STRING_MAX_LEN 4096 /* any id, path, principal or label */

/* Everything a resource is, borrowed: the way to build one, and a view of one. */
typedef struct ms_resource_spec {
  const char *name;
  ms_value_type type;
  ms_scalar scalar;
  ms_ranges ranges;                   /* borrowed: never released by the library */
  ms_set set;                         /* idem */
  const ms_reservation *reservations; /* bottom first: reservations[0] may be STATIC */
  uint32_t nreservations;
  const char *allocation_role; /* optional */
  const ms_disk_info *disk;    /* optional */
  bool shared, revocable;
  const char *provider_id; /* optional */
} ms_resource_spec;

typedef struct ms_rmeta ms_rmeta; /* private: see resources-internal.h */

/* One entry of a set. Read it with the accessors below. */
typedef struct ms_resource {
  ms_name name;
  uint8_t type;         /* ms_value_type */
  bool unit;            /* value is part of the identity: copies are counted, never merged */
  uint32_t count;       /* copies (unit resources); 1 otherwise */
  const ms_rmeta *meta; /* NULL: unreserved, no metadata */
  union {
    ms_scalar scalar;
    ms_ranges ranges;
    ms_set set;
  } v;
} ms_resource;

typedef struct ms_resources {
  ms_resource *v; /* private: canonical order */
  uint32_t n, cap;
} ms_resources;

/* ---- sets ---- */

ms_resources *ms_resources_new(void);
void ms_resources_free(ms_resources *set);
ms_resources *ms_resources_clone(const ms_resources *set);
void ms_resources_clear(ms_resources *set);
/* Exchanges the contents of two sets. */
void ms_resources_swap(ms_resources *a, ms_resources *b);

size_t ms_resources_size(const ms_resources *set); /* entries, not copies */
bool ms_resources_is_empty(const ms_resources *set);
const ms_resource *ms_resources_at(const ms_resources *set, size_t i);

/* Validates spec and adds it (values are copied). */
int ms_resources_add_spec(ms_resources *set, const ms_resource_spec *spec, ms_error **err);
/* a += b. Fails only past MS_SCALAR_MAX. */
int ms_resources_add(ms_resources *a, const ms_resources *b, ms_error **err);
/* a -= b; fails unless a contains b, naming the first missing resource. */
int ms_resources_subtract(ms_resources *a, const ms_resources *b, ms_error **err);
bool ms_resources_contains(const ms_resources *a, const ms_resources *b);
bool ms_resources_equal(const ms_resources *a, const ms_resources *b);
/* Sum of the scalar resources called `name` (a shared volume counts once). */
ms_scalar ms_resources_scalar(const ms_resources *set, const char *name);

/* "cpus:4; disk(eng)[volume v1:data]:100; ports:[31000-32000]" for messages and logs
 * (not a parseable form: see ms_resources_format_text). Caller frees. */
char *ms_resources_describe(const ms_resources *set);

/* ---- one resource ---- */

const char *ms_resource_name(const ms_resource *r);
/* The role it is reserved to (top of the stack), or "*" when unreserved. */
const char *ms_resource_role(const ms_resource *r);
uint32_t ms_resource_nreservations(const ms_resource *r);
const ms_reservation *ms_resource_reservation(const ms_resource *r, uint32_t i);
const ms_disk_info *ms_resource_disk(const ms_resource *r);    /* NULL: none */
const char *ms_resource_allocation_role(const ms_resource *r); /* NULL: not allocated */
const char *ms_resource_provider_id(const ms_resource *r);     /* NULL: none */
bool ms_resource_is_shared(const ms_resource *r);
bool ms_resource_is_revocable(const ms_resource *r);
bool ms_resource_is_reserved(const ms_resource *r);
bool ms_resource_is_dynamically_reserved(const ms_resource *r); /* top is DYNAMIC */
bool ms_resource_is_persistent_volume(const ms_resource *r);
/* Fills *ret with a view borrowing from r. */
void ms_resource_spec_of(const ms_resource *r, ms_resource_spec *ret);
/* "disk(eng,eng/web)[volume v1:data,shared]:100"; caller frees. */
char *ms_resource_describe(const ms_resource *r);

/* ---- filters: each returns a new set the caller frees ---- */

typedef bool (*ms_resource_pred)(const ms_resource *r, void *ctx);
ms_resources *ms_resources_filter(const ms_resources *set, ms_resource_pred pred, void *ctx);
ms_resources *ms_resources_unreserved(const ms_resources *set);
/* Reserved to exactly `role` (top of the stack), or to anyone when role is NULL. */
ms_resources *ms_resources_reserved(const ms_resources *set, const char *role);
/* What a framework in `role` may use: unreserved, or reserved to role or an ancestor. */
ms_resources *ms_resources_allocatable_to(const ms_resources *set, const char *role);
ms_resources *ms_resources_persistent_volumes(const ms_resources *set);
ms_resources *ms_resources_revocable(const ms_resources *set);
ms_resources *ms_resources_nonrevocable(const ms_resources *set);
ms_resources *ms_resources_shared(const ms_resources *set);
ms_resources *ms_resources_nonshared(const ms_resources *set);
ms_resources *ms_resources_named(const ms_resources *set, const char *name);
/* From resource provider `id`, or from the agent itself when id is NULL. */
ms_resources *ms_resources_by_provider(const ms_resources *set, const char *id);
/* Allocated to `role` (allocation info), or to anyone when role is NULL. */
ms_resources *ms_resources_allocated(const ms_resources *set, const char *role);
/* Every reservation removed: the form quotas and "same quantities" checks compare. */
ms_resources *ms_resources_to_unreserved(const ms_resources *set);

/* Sets (role != NULL) or clears (role == NULL) the allocation role of every resource. */
int ms_resources_allocate(ms_resources *set, const char *role, ms_error **err);

/* ---- reservation refinement ---- */

/* Pushes r (DYNAMIC) on every resource: its role must be a strict descendant of each
 * resource's current role (any role for unreserved resources). */
int ms_resources_push_reservation(ms_resources *set, const ms_reservation *r, ms_error **err);
/* Pops the top reservation of every resource; fails if one is unreserved, or is a
 * persistent volume that would be left unreserved. */
int ms_resources_pop_reservation(ms_resources *set, ms_error **err);

/* ---- scalar quantities: what fair sharing and quota reason about ---- */

typedef struct ms_quantity {
  ms_name name;
  ms_scalar value;
} ms_quantity;

/* Sorted by name id, no zero values. Zero-initialize; release with ms_quantities_release. */
typedef struct ms_quantities {
  ms_quantity *v;
  uint32_t n, cap;
} ms_quantities;

void ms_quantities_release(ms_quantities *q);
/* Replaces q's contents with the scalar sums of set (non-scalar resources are left out). */
void ms_quantities_of(ms_quantities *q, const ms_resources *set);
ms_scalar ms_quantities_get(const ms_quantities *q, ms_name name);
void ms_quantities_set(ms_quantities *q, ms_name name, ms_scalar value);
/* Sums saturate at INT64_MAX; differences stop at zero (as Mesos' ResourceQuantities). */
void ms_quantities_add(ms_quantities *a, const ms_quantities *b);
void ms_quantities_subtract(ms_quantities *a, const ms_quantities *b);
bool ms_quantities_contains(const ms_quantities *a, const ms_quantities *b);
bool ms_quantities_equal(const ms_quantities *a, const ms_quantities *b);
/* DRF: the largest allocated[n] / total[n] over names with a non-zero total. */
double ms_quantities_dominant_share(const ms_quantities *allocated, const ms_quantities *total);
