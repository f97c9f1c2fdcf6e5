/* Operations on resources (Mesos' Offer.Operation): reserve, unreserve, persistent
 * volumes, growing and shrinking them, and CSI disks. ms_resources_apply checks an
 * operation against a set and applies it all or not at all; each refusal names the
 * resource and the rule.
 *
 * Ownership: an ms_operation owns the sets and strings it points to; release it with
 * ms_operation_release (which frees them and zeroes the struct). ms_resources_apply
 * only reads the operation. */
#pragma once

#include "meseta/error.h"
#include "meseta/resources.h"

typedef enum ms_operation_type {
  MS_OP_UNKNOWN = 0,
  MS_OP_RESERVE = 1,
  MS_OP_UNRESERVE = 2,
  MS_OP_CREATE = 3,
  MS_OP_DESTROY = 4,
  MS_OP_GROW_VOLUME = 5,
  MS_OP_SHRINK_VOLUME = 6,
  MS_OP_CREATE_DISK = 7,
  MS_OP_DESTROY_DISK = 8,
} ms_operation_type;

typedef struct ms_operation {
  ms_operation_type type;
  /* RESERVE: the resources as they will be (top reservation DYNAMIC); UNRESERVE: the
   * reserved resources to give back; CREATE / DESTROY: the volumes. */
  ms_resources *resources;
  /* RESERVE: when set, the resources as they are now, re-targeted to `resources`
   * (Mesos 1.10's reservation update: same quantities, different dynamic reservations).
   * CREATE_DISK / DESTROY_DISK: the one disk to convert. */
  ms_resources *source;
  ms_resources *volume;            /* GROW_VOLUME / SHRINK_VOLUME: one persistent volume */
  ms_resources *addition;          /* GROW_VOLUME: disk like the volume's, without persistence */
  ms_scalar subtract;              /* SHRINK_VOLUME: > 0 and below the volume's size */
  ms_disk_source_type target_type; /* CREATE_DISK: MOUNT or BLOCK */
  char *target_profile;            /* CREATE_DISK: optional, else the source's profile */
  /* CREATE_DISK: the id the resource provider gave the new disk (CREATE_DISK is applied
   * once the provider reports it); optional when the source RAW disk has an id. */
  char *volume_id;
} ms_operation;

void ms_operation_release(ms_operation *op);
/* "RESERVE", ...; "UNKNOWN" for anything else. */
const char *ms_operation_type_name(ms_operation_type t);

/* Applies op to set. On failure set is unchanged and *err says why:
 * MS_INVALID_ARGUMENT for a malformed operation, MS_FAILED_PRECONDITION when set
 * lacks what it consumes, MS_ALREADY_EXISTS for a persistence id in use. */
int ms_resources_apply(ms_resources *set, const ms_operation *op, ms_error **err);

/* Puts an agent's checkpointed resources (its dynamic reservations and persistent
 * volumes) in place of what they were made from (the same resources without dynamic
 * reservations, persistence or sharing) in `total`, its configured resources. On failure
 * (total lacks them: MS_FAILED_PRECONDITION) total is unchanged. */
int ms_resources_put_checkpointed(ms_resources *total, const ms_resources *checkpointed, ms_error **err);
