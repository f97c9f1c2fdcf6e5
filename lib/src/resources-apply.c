/* Operations: each is checked and applied on a copy, swapped in only when all of it
 * succeeded, so a refused operation never half-applies. */
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/resources-internal.h"
#include "meseta/resources-ops.h"

static const char *const op_names[] = {"UNKNOWN",       "RESERVE",     "UNRESERVE",
                                       "CREATE",        "DESTROY",     "GROW_VOLUME",
                                       "SHRINK_VOLUME", "CREATE_DISK", "DESTROY_DISK"};

const char *ms_operation_type_name(ms_operation_type t) {
  return (unsigned)t < MS_ARRAY_SIZE(op_names) ? op_names[t] : "UNKNOWN";
}

void ms_operation_release(ms_operation *op) {
  ms_resources_free(op->resources);
  ms_resources_free(op->source);
  ms_resources_free(op->volume);
  ms_resources_free(op->addition);
  free(op->target_profile);
  free(op->volume_id);
  *op = (ms_operation){0};
}

/* ---- entry rewrites ---- */

typedef struct edit_ctx {
  ms_disk_info disk;
  ms_scalar scalar;
} edit_ctx;

static int e_pop(const ms_resource *r, ms_resource_spec *spec, void *ctx, ms_error **err) {
  spec->nreservations--;
  return 0;
}

/* Keeps a STATIC base reservation, drops every DYNAMIC one. */
static int e_static_only(const ms_resource *r, ms_resource_spec *spec, void *ctx, ms_error **err) {
  spec->nreservations = spec->nreservations && spec->reservations[0].type == MS_RESERVATION_STATIC ? 1 : 0;
  return 0;
}

/* The disk a volume was made from: no persistence, no volume, not shared. */
static int e_strip_volume(const ms_resource *r, ms_resource_spec *spec, void *vctx, ms_error **err) {
  edit_ctx *ctx = vctx;
  ctx->disk = *spec->disk;
  ctx->disk.persistence_id = ctx->disk.persistence_principal = ctx->disk.container_path = NULL;
  ctx->disk.mode = MS_VOLUME_MODE_UNSET;
  spec->disk = ctx->disk.source == MS_DISK_SOURCE_NONE ? NULL : &ctx->disk;
  spec->shared = false;
  return 0;
}

static int e_set_scalar(const ms_resource *r, ms_resource_spec *spec, void *vctx, ms_error **err) {
  spec->scalar = ((edit_ctx *)vctx)->scalar;
  return 0;
}

static int e_strip_with_scalar(const ms_resource *r, ms_resource_spec *spec, void *vctx, ms_error **err) {
  e_strip_volume(r, spec, vctx, err);
  return e_set_scalar(r, spec, vctx, err);
}

/* The edited form of one entry, as a set (empty when the value vanished). */
static int rewrite(const ms_resource *r, ms_resource_edit edit, void *ctx, ms_resources *ret,
                   ms_error **err) {
  ms_resources view = ms_resources_view(r);
  return ms_resources_map(&view, edit, ctx, true, ret, err);
}

static void set_release(ms_resources *s) {
  ms_resources_clear(s);
  free(s->v);
  *s = (ms_resources){0};
}

/* work -= minus (when given); work += plus. */
static int replace(ms_resources *work, const ms_resources *minus, const ms_resources *plus, ms_error **err) {
  if (minus && ms_resources_subtract(work, minus, err) < 0)
    return MS_ERR;
  return plus ? ms_resources_add(work, plus, err) : 0;
}

static int fail(const char *op, const ms_resource *r, ms_status code, const char *rule, ms_error **err) {
  _cleanup_free_ char *d = ms_resource_describe(r);
  return ms_error_set(err, code, "%s: resource `%s` %s", op, d, rule);
}

static int need_set(const ms_resources *s, const char *op, const char *field, ms_error **err) {
  if (!s || s->n == 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: `%s` must not be empty", op, field);
  return 0;
}

static int need_one(const ms_resources *s, const char *op, const char *field, const ms_resource **ret,
                    ms_error **err) {
  if (!s || s->n != 1 || s->v[0].count != 1)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: `%s` must be exactly one resource", op, field);
  *ret = &s->v[0];
  return 0;
}

/* ---- each operation, applied to a private copy ---- */

static int apply_reserve_source(ms_resources *work, const ms_operation *op, ms_error **err) {
  if (need_set(op->resources, "RESERVE", "resources", err) < 0)
    return MS_ERR;
  for (uint32_t i = 0; i < op->resources->n; i++)
    if (!ms_resource_is_dynamically_reserved(&op->resources->v[i]))
      return fail("RESERVE", &op->resources->v[i], MS_INVALID_ARGUMENT,
                  "must have a DYNAMIC reservation on top", err);
  ms_resources from = {0}, to = {0};
  int rc = MS_ERR;
  if (ms_resources_map(op->source, e_static_only, NULL, false, &from, err) < 0 ||
      ms_resources_map(op->resources, e_static_only, NULL, false, &to, err) < 0)
    goto out;
  if (!ms_resources_equal(&from, &to)) {
    rc = ms_error_set(err, MS_INVALID_ARGUMENT,
                      "RESERVE: `source` and `resources` must differ only in their dynamic reservations");
    goto out;
  }
  rc = replace(work, op->source, op->resources, err);
  if (rc < 0)
    ms_error_prefix(err, "RESERVE");
out:
  set_release(&from);
  set_release(&to);
  return rc;
}

static int apply_reserve(ms_resources *work, const ms_operation *op, ms_error **err) {
  if (op->source && op->source->n)
    return apply_reserve_source(work, op, err);
  if (need_set(op->resources, "RESERVE", "resources", err) < 0)
    return MS_ERR;
  for (uint32_t i = 0; i < op->resources->n; i++) {
    const ms_resource *r = &op->resources->v[i];
    if (!ms_resource_is_dynamically_reserved(r))
      return fail("RESERVE", r, MS_INVALID_ARGUMENT, "must have a DYNAMIC reservation on top", err);
    ms_resources from = {0}, to = ms_resources_view(r);
    int rc = rewrite(r, e_pop, NULL, &from, err);
    if (rc == 0)
      rc = replace(work, &from, &to, err);
    set_release(&from);
    if (rc < 0) {
      _cleanup_free_ char *d = ms_resource_describe(r);
      return ms_error_prefix(err, "RESERVE `%s`", d);
    }
  }
  return 0;
}

static int apply_unreserve(ms_resources *work, const ms_operation *op, ms_error **err) {
  if (need_set(op->resources, "UNRESERVE", "resources", err) < 0)
    return MS_ERR;
  for (uint32_t i = 0; i < op->resources->n; i++) {
    const ms_resource *r = &op->resources->v[i];
    if (!ms_resource_is_dynamically_reserved(r))
      return fail("UNRESERVE", r, MS_INVALID_ARGUMENT, "has no DYNAMIC reservation to remove", err);
    if (ms_resource_is_persistent_volume(r))
      return fail("UNRESERVE", r, MS_INVALID_ARGUMENT, "is a persistent volume: DESTROY it first", err);
    ms_resources from = ms_resources_view(r), to = {0};
    int rc = rewrite(r, e_pop, NULL, &to, err);
    if (rc == 0)
      rc = replace(work, &from, &to, err);
    set_release(&to);
    if (rc < 0)
      return ms_error_prefix(err, "UNRESERVE");
  }
  return 0;
}

static const ms_resource *find_volume_id(const ms_resources *set, const char *id) {
  for (uint32_t i = 0; i < set->n; i++) {
    const ms_disk_info *d = ms_resource_disk(&set->v[i]);
    if (d && d->persistence_id && strcmp(d->persistence_id, id) == 0)
      return &set->v[i];
  }
  return NULL;
}

static int apply_create(ms_resources *work, const ms_operation *op, ms_error **err) {
  if (need_set(op->resources, "CREATE", "volumes", err) < 0)
    return MS_ERR;
  for (uint32_t i = 0; i < op->resources->n; i++) {
    const ms_resource *v = &op->resources->v[i];
    if (!ms_resource_is_persistent_volume(v))
      return fail("CREATE", v, MS_INVALID_ARGUMENT, "is not a persistent volume (disk with a persistence id)",
                  err);
    const char *id = ms_resource_disk(v)->persistence_id;
    const ms_resource *used = find_volume_id(work, id);
    if (used || v->count > 1) {
      _cleanup_free_ char *u = ms_resource_describe(used ? used : v);
      return ms_error_set(err, MS_ALREADY_EXISTS, "CREATE: persistence id `%s` is already used by `%s`", id,
                          u);
    }
    edit_ctx ctx = {0};
    ms_resources from = {0}, to = ms_resources_view(v);
    int rc = rewrite(v, e_strip_volume, &ctx, &from, err);
    if (rc == 0)
      rc = replace(work, &from, &to, err);
    set_release(&from);
    if (rc < 0)
      return ms_error_prefix(err, "CREATE volume `%s`", id);
  }
  return 0;
}

static int apply_destroy(ms_resources *work, const ms_operation *op, ms_error **err) {
  if (need_set(op->resources, "DESTROY", "volumes", err) < 0)
    return MS_ERR;
  for (uint32_t i = 0; i < op->resources->n; i++) {
    const ms_resource *v = &op->resources->v[i];
    if (!ms_resource_is_persistent_volume(v))
      return fail("DESTROY", v, MS_INVALID_ARGUMENT, "is not a persistent volume", err);
    edit_ctx ctx = {0};
    ms_resources from = ms_resources_view(v), to = {0};
    int rc = rewrite(v, e_strip_volume, &ctx, &to, err);
    if (rc == 0)
      rc = replace(work, &from, &to, err);
    set_release(&to);
    if (rc < 0)
      return ms_error_prefix(err, "DESTROY volume `%s`", ms_resource_disk(v)->persistence_id);
  }
  return 0;
}

/* GROW / SHRINK work on non-shared volumes of the root disk or a PATH disk. */
static int check_resizable(const char *op, const ms_resource *v, ms_error **err) {
  if (!ms_resource_is_persistent_volume(v))
    return fail(op, v, MS_INVALID_ARGUMENT, "is not a persistent volume", err);
  if (ms_resource_is_shared(v))
    return fail(op, v, MS_INVALID_ARGUMENT, "is shared: shared volumes cannot be resized", err);
  ms_disk_source_type t = ms_resource_disk(v)->source;
  if (t != MS_DISK_SOURCE_NONE && t != MS_DISK_SOURCE_PATH)
    return fail(op, v, MS_INVALID_ARGUMENT,
                "is on a MOUNT, BLOCK or RAW disk: only ROOT and PATH volumes resize", err);
  return 0;
}

static int apply_grow(ms_resources *work, const ms_operation *op, ms_error **err) {
  const ms_resource *v = NULL, *add = NULL;
  if (need_one(op->volume, "GROW_VOLUME", "volume", &v, err) < 0 ||
      need_one(op->addition, "GROW_VOLUME", "addition", &add, err) < 0 ||
      check_resizable("GROW_VOLUME", v, err) < 0)
    return MS_ERR;
  edit_ctx ctx = {.scalar = add->v.scalar};
  ms_resources like = {0}, grown = {0};
  int rc = rewrite(v, e_strip_with_scalar, &ctx, &like, err);
  if (rc < 0)
    return ms_error_prefix(err, "GROW_VOLUME");
  if (!ms_resources_equal(&like, op->addition)) {
    set_release(&like);
    return fail("GROW_VOLUME", add, MS_INVALID_ARGUMENT,
                "must be disk like the volume's (same reservations and source), without persistence", err);
  }
  set_release(&like);
  if (__builtin_add_overflow(v->v.scalar, add->v.scalar, &ctx.scalar) || ctx.scalar > MS_SCALAR_MAX)
    return fail("GROW_VOLUME", v, MS_OUT_OF_RANGE, "would grow past the scalar limit", err);
  rc = rewrite(v, e_set_scalar, &ctx, &grown, err);
  if (rc == 0)
    rc = replace(work, op->volume, NULL, err);
  if (rc == 0)
    rc = replace(work, op->addition, &grown, err);
  set_release(&grown);
  return rc < 0 ? ms_error_prefix(err, "GROW_VOLUME") : 0;
}

static int apply_shrink(ms_resources *work, const ms_operation *op, ms_error **err) {
  const ms_resource *v = NULL;
  if (need_one(op->volume, "SHRINK_VOLUME", "volume", &v, err) < 0 ||
      check_resizable("SHRINK_VOLUME", v, err) < 0)
    return MS_ERR;
  if (op->subtract <= 0 || op->subtract >= v->v.scalar)
    return fail("SHRINK_VOLUME", v, MS_INVALID_ARGUMENT,
                "cannot shrink by that: `subtract` must be above zero and below the volume's size", err);
  edit_ctx ctx = {.scalar = v->v.scalar - op->subtract};
  ms_resources shrunk = {0}, freed = {0};
  int rc = rewrite(v, e_set_scalar, &ctx, &shrunk, err);
  ctx.scalar = op->subtract;
  if (rc == 0)
    rc = rewrite(v, e_strip_with_scalar, &ctx, &freed, err);
  if (rc == 0)
    rc = replace(work, op->volume, &shrunk, err);
  if (rc == 0)
    rc = replace(work, NULL, &freed, err);
  set_release(&shrunk);
  set_release(&freed);
  return rc < 0 ? ms_error_prefix(err, "SHRINK_VOLUME") : 0;
}

typedef struct disk_ctx {
  ms_disk_info disk;
  const ms_operation *op;
} disk_ctx;

static int e_create_disk(const ms_resource *r, ms_resource_spec *spec, void *vctx, ms_error **err) {
  disk_ctx *ctx = vctx;
  ctx->disk = *spec->disk;
  ctx->disk.source = ctx->op->target_type;
  ctx->disk.root = NULL;
  if (ctx->op->volume_id && *ctx->op->volume_id)
    ctx->disk.source_id = ctx->op->volume_id;
  if (ctx->op->target_profile && *ctx->op->target_profile)
    ctx->disk.profile = ctx->op->target_profile;
  spec->disk = &ctx->disk;
  return 0;
}

/* A MOUNT / BLOCK disk goes back to RAW: to its pool (no id) when it came from a
 * profile, as an identified pre-existing volume otherwise. */
static int e_destroy_disk(const ms_resource *r, ms_resource_spec *spec, void *vctx, ms_error **err) {
  disk_ctx *ctx = vctx;
  ctx->disk = *spec->disk;
  ctx->disk.source = MS_DISK_SOURCE_RAW;
  ctx->disk.root = NULL;
  if (ctx->disk.profile)
    ctx->disk.source_id = NULL;
  spec->disk = &ctx->disk;
  return 0;
}

static int check_provider_disk(const char *op, const ms_resource *d, ms_error **err) {
  if (!ms_resource_disk(d) || ms_resource_disk(d)->source == MS_DISK_SOURCE_NONE)
    return fail(op, d, MS_INVALID_ARGUMENT, "is not a disk with a source", err);
  if (!ms_resource_provider_id(d))
    return fail(op, d, MS_INVALID_ARGUMENT, "does not come from a resource provider", err);
  if (ms_resource_is_persistent_volume(d))
    return fail(op, d, MS_INVALID_ARGUMENT, "holds a persistent volume: DESTROY it first", err);
  return 0;
}

static int apply_create_disk(ms_resources *work, const ms_operation *op, ms_error **err) {
  const ms_resource *src = NULL;
  if (need_one(op->source, "CREATE_DISK", "source", &src, err) < 0 ||
      check_provider_disk("CREATE_DISK", src, err) < 0)
    return MS_ERR;
  const ms_disk_info *d = ms_resource_disk(src);
  if (d->source != MS_DISK_SOURCE_RAW)
    return fail("CREATE_DISK", src, MS_INVALID_ARGUMENT, "is not a RAW disk", err);
  if (op->target_type != MS_DISK_SOURCE_MOUNT && op->target_type != MS_DISK_SOURCE_BLOCK)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "CREATE_DISK: `target_type` must be MOUNT or BLOCK");
  if (!(op->volume_id && *op->volume_id) && !d->source_id)
    return fail("CREATE_DISK", src, MS_INVALID_ARGUMENT,
                "has no id and the operation names no `volume_id` (apply it once the provider reports one)",
                err);
  disk_ctx ctx = {.op = op};
  ms_resources made = {0};
  int rc = rewrite(src, e_create_disk, &ctx, &made, err);
  if (rc == 0)
    rc = replace(work, op->source, &made, err);
  set_release(&made);
  return rc < 0 ? ms_error_prefix(err, "CREATE_DISK") : 0;
}

static int apply_destroy_disk(ms_resources *work, const ms_operation *op, ms_error **err) {
  const ms_resource *src = NULL;
  if (need_one(op->source, "DESTROY_DISK", "source", &src, err) < 0 ||
      check_provider_disk("DESTROY_DISK", src, err) < 0)
    return MS_ERR;
  const ms_disk_info *d = ms_resource_disk(src);
  if (d->source == MS_DISK_SOURCE_PATH || (d->source == MS_DISK_SOURCE_RAW && !d->source_id))
    return fail("DESTROY_DISK", src, MS_INVALID_ARGUMENT, "is not a MOUNT, BLOCK or identified RAW disk",
                err);
  disk_ctx ctx = {.op = op};
  ms_resources back = {0};
  /* An identified RAW disk is deleted outright: nothing comes back. */
  int rc = d->source == MS_DISK_SOURCE_RAW ? 0 : rewrite(src, e_destroy_disk, &ctx, &back, err);
  if (rc == 0)
    rc = replace(work, op->source, &back, err);
  set_release(&back);
  return rc < 0 ? ms_error_prefix(err, "DESTROY_DISK") : 0;
}

typedef int (*apply_fn)(ms_resources *work, const ms_operation *op, ms_error **err);

static const apply_fn appliers[] = {
    [MS_OP_RESERVE] = apply_reserve,         [MS_OP_UNRESERVE] = apply_unreserve,
    [MS_OP_CREATE] = apply_create,           [MS_OP_DESTROY] = apply_destroy,
    [MS_OP_GROW_VOLUME] = apply_grow,        [MS_OP_SHRINK_VOLUME] = apply_shrink,
    [MS_OP_CREATE_DISK] = apply_create_disk, [MS_OP_DESTROY_DISK] = apply_destroy_disk,
};

int ms_resources_apply(ms_resources *set, const ms_operation *op, ms_error **err) {
  if ((unsigned)op->type >= MS_ARRAY_SIZE(appliers) || !appliers[op->type])
    return ms_error_set(err, MS_INVALID_ARGUMENT, "operation type %d is not one that applies to resources",
                        (int)op->type);
  ms_resources work = {0};
  ms_resources *copy = ms_resources_clone(set);
  ms_resources_swap(&work, copy);
  free(copy);
  int rc = appliers[op->type](&work, op, err);
  if (rc == 0)
    ms_resources_swap(set, &work);
  set_release(&work);
  return rc;
}

/* What a checkpointed resource was made from: no dynamic reservation, no volume. */
static int e_base(const ms_resource *r, ms_resource_spec *spec, void *ctx, ms_error **err) {
  e_static_only(r, spec, ctx, err);
  return spec->disk ? e_strip_volume(r, spec, ctx, err) : 0;
}

int ms_resources_put_checkpointed(ms_resources *total, const ms_resources *checkpointed, ms_error **err) {
  ms_resources base = {0};
  edit_ctx ctx = {0};
  if (ms_resources_map(checkpointed, e_base, &ctx, false, &base, err) < 0)
    return MS_ERR;
  ms_resources work = {0};
  ms_resources *copy = ms_resources_clone(total);
  ms_resources_swap(&work, copy);
  free(copy);
  int rc = replace(&work, &base, checkpointed, err);
  if (rc == 0)
    ms_resources_swap(total, &work);
  else
    ms_error_prefix(err, "checkpointed resources");
  set_release(&work);
  set_release(&base);
  return rc;
}
