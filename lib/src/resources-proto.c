/* meseta.v1.Resource / Resources / Operation <-> the internal form. */
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/resources-internal.h"
#include "meseta/resources-io.h"

/* ---- from the wire ---- */

typedef struct pspec {
  ms_resource_spec spec;
  ms_reservation res[MS_RESERVATIONS_MAX];
  ms_disk_info disk;
  ms_label *labels[MS_RESERVATIONS_MAX + 1];
} pspec;

static void pspec_release(pspec *p) {
  ms_ranges_release(&p->spec.ranges);
  ms_set_release(&p->spec.set);
  for (size_t i = 0; i < MS_ARRAY_SIZE(p->labels); i++)
    free(p->labels[i]);
}

static int labels_from(const Meseta__V1__Labels *l, ms_label **ret, uint32_t *ret_n, const char *where,
                       ms_error **err) {
  *ret_n = 0;
  if (!l || !l->n_labels)
    return 0;
  if (l->n_labels > 1024)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: more than 1024 labels", where);
  *ret = ms_xcalloc(l->n_labels, sizeof(**ret));
  for (size_t i = 0; i < l->n_labels; i++)
    (*ret)[i] = (ms_label){l->labels[i]->key, l->labels[i]->value};
  *ret_n = (uint32_t)l->n_labels;
  return 0;
}

static int spec_from(const Meseta__V1__Resource *m, pspec *p, const char *where, ms_error **err) {
  ms_resource_spec *s = &p->spec;
  s->name = m->name;
  s->type = (ms_value_type)m->type;
  if (m->scalar) {
    if (m->type != MESETA__V1__VALUE__TYPE__SCALAR)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: `scalar` set but type is not SCALAR", where);
    if (ms_scalar_from_double(m->scalar->value, where, &s->scalar, err) < 0)
      return MS_ERR;
  }
  if (m->ranges) {
    if (m->type != MESETA__V1__VALUE__TYPE__RANGES)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: `ranges` set but type is not RANGES", where);
    for (size_t i = 0; i < m->ranges->n_range; i++)
      if (ms_ranges_push(&s->ranges, m->ranges->range[i]->begin, m->ranges->range[i]->end, where, err) < 0)
        return MS_ERR;
  }
  if (m->set) {
    if (m->type != MESETA__V1__VALUE__TYPE__SET)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: `set` set but type is not SET", where);
    for (size_t i = 0; i < m->set->n_item; i++)
      if (ms_set_push(&s->set, m->set->item[i], strlen(m->set->item[i]), where, err) < 0)
        return MS_ERR;
  }
  if (m->n_reservations > MS_RESERVATIONS_MAX)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: more than %d reservations", where,
                        MS_RESERVATIONS_MAX);
  for (size_t i = 0; i < m->n_reservations; i++) {
    const Meseta__V1__Resource__ReservationInfo *r = m->reservations[i];
    p->res[i] = (ms_reservation){(ms_reservation_type)r->type, r->role, r->principal, NULL, 0};
    if (labels_from(r->labels, &p->labels[i], &p->res[i].nlabels, where, err) < 0)
      return MS_ERR;
    p->res[i].labels = p->labels[i];
  }
  s->reservations = p->res;
  s->nreservations = (uint32_t)m->n_reservations;
  s->allocation_role = m->allocation_info ? m->allocation_info->role : NULL;
  s->provider_id = m->provider_id ? m->provider_id->value : NULL;
  s->revocable = m->revocable != NULL;
  s->shared = m->shared != NULL;
  if (m->disk) {
    const Meseta__V1__Resource__DiskInfo *d = m->disk;
    s->disk = &p->disk;
    if (d->persistence)
      p->disk.persistence_id = d->persistence->id, p->disk.persistence_principal = d->persistence->principal;
    if (d->volume)
      p->disk.container_path = d->volume->container_path, p->disk.mode = (ms_volume_mode)d->volume->mode;
    if (d->source) {
      const Meseta__V1__Resource__DiskInfo__Source *src = d->source;
      if (src->type == 0)
        return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: `disk.source` needs a `type`", where);
      p->disk.source = (ms_disk_source_type)src->type;
      if ((src->path && src->type != MESETA__V1__RESOURCE__DISK_INFO__SOURCE__TYPE__PATH) ||
          (src->mount && src->type != MESETA__V1__RESOURCE__DISK_INFO__SOURCE__TYPE__MOUNT))
        return ms_error_set(err, MS_INVALID_ARGUMENT, "%s: `disk.source` has the root of another source type",
                            where);
      p->disk.root = src->path ? src->path->root : src->mount ? src->mount->root : NULL;
      p->disk.source_id = src->id;
      p->disk.profile = src->profile;
      p->disk.vendor = src->vendor;
      if (labels_from(src->metadata, &p->labels[MS_RESERVATIONS_MAX], &p->disk.nmetadata, where, err) < 0)
        return MS_ERR;
      p->disk.metadata = p->labels[MS_RESERVATIONS_MAX];
    }
  }
  return 0;
}

int ms_resources_from_proto(Meseta__V1__Resource *const *resources, size_t n, ms_resources **ret,
                            ms_error **err) {
  ms_resources out = {0};
  for (size_t i = 0; i < n; i++) {
    char where[48];
    snprintf(where, sizeof(where), "resources[%zu]", i);
    pspec p = {0};
    ms_resource e;
    int rc = spec_from(resources[i], &p, where, err);
    if (rc == 0 && (rc = ms_resource_init(&e, &p.spec, true, err)) < 0)
      ms_error_prefix(err, "%s", where);
    pspec_release(&p);
    if (rc < 0)
      goto fail;
    ms_resources_push_moved(&out, &e);
  }
  return ms_resources_finish(&out, ret, err);
fail:
  ms_resources_discard(&out);
  return MS_ERR;
}

int ms_resources_from_proto_msg(const Meseta__V1__Resources *msg, ms_resources **ret, ms_error **err) {
  return ms_resources_from_proto(msg->resources, msg->n_resources, ret, err);
}

/* ---- to the wire: every part malloc'ed, so protobuf_c_message_free_unpacked frees it ---- */

static char *dup_or_empty(const char *s) {
  return s ? ms_xstrdup(s) : (char *)protobuf_c_empty_string;
}

static Meseta__V1__Labels *labels_to(const ms_label *l, uint32_t n) {
  Meseta__V1__Labels *m = ms_xmalloc(sizeof(*m));
  meseta__v1__labels__init(m);
  m->n_labels = n;
  m->labels = ms_xcalloc(n, sizeof(*m->labels));
  for (uint32_t i = 0; i < n; i++) {
    m->labels[i] = ms_xmalloc(sizeof(*m->labels[i]));
    meseta__v1__label__init(m->labels[i]);
    m->labels[i]->key = dup_or_empty(l[i].key);
    m->labels[i]->value = dup_or_empty(l[i].value);
  }
  return m;
}

static Meseta__V1__Resource__DiskInfo *disk_to(const ms_disk_info *d) {
  Meseta__V1__Resource__DiskInfo *m = ms_xmalloc(sizeof(*m));
  meseta__v1__resource__disk_info__init(m);
  if (d->persistence_id) {
    m->persistence = ms_xmalloc(sizeof(*m->persistence));
    meseta__v1__resource__disk_info__persistence__init(m->persistence);
    m->persistence->id = dup_or_empty(d->persistence_id);
    m->persistence->principal = dup_or_empty(d->persistence_principal);
  }
  if (d->container_path) {
    m->volume = ms_xmalloc(sizeof(*m->volume));
    meseta__v1__resource__disk_info__volume__init(m->volume);
    m->volume->container_path = dup_or_empty(d->container_path);
    m->volume->mode = d->mode == MS_VOLUME_RO ? MESETA__V1__RESOURCE__DISK_INFO__VOLUME__MODE__RO
                                              : MESETA__V1__RESOURCE__DISK_INFO__VOLUME__MODE__RW;
  }
  if (d->source != MS_DISK_SOURCE_NONE) {
    Meseta__V1__Resource__DiskInfo__Source *s = ms_xmalloc(sizeof(*s));
    meseta__v1__resource__disk_info__source__init(s);
    s->type = (Meseta__V1__Resource__DiskInfo__Source__Type)d->source;
    if (d->root && d->source == MS_DISK_SOURCE_MOUNT) {
      s->mount = ms_xmalloc(sizeof(*s->mount));
      meseta__v1__resource__disk_info__source__mount__init(s->mount);
      s->mount->root = dup_or_empty(d->root);
    } else if (d->root) {
      s->path = ms_xmalloc(sizeof(*s->path));
      meseta__v1__resource__disk_info__source__path__init(s->path);
      s->path->root = dup_or_empty(d->root);
    }
    s->id = dup_or_empty(d->source_id);
    s->profile = dup_or_empty(d->profile);
    s->vendor = dup_or_empty(d->vendor);
    if (d->nmetadata)
      s->metadata = labels_to(d->metadata, d->nmetadata);
    m->source = s;
  }
  return m;
}

static Meseta__V1__Resource *resource_to(const ms_resource *r) {
  Meseta__V1__Resource *m = ms_xmalloc(sizeof(*m));
  meseta__v1__resource__init(m);
  m->name = ms_xstrdup(ms_name_str(r->name));
  m->type = (Meseta__V1__Value__Type)r->type;
  if (r->type == MS_VALUE_SCALAR) {
    m->scalar = ms_xmalloc(sizeof(*m->scalar));
    meseta__v1__value__scalar__init(m->scalar);
    m->scalar->value = ms_scalar_to_double(r->v.scalar);
  } else if (r->type == MS_VALUE_RANGES) {
    m->ranges = ms_xmalloc(sizeof(*m->ranges));
    meseta__v1__value__ranges__init(m->ranges);
    m->ranges->n_range = r->v.ranges.n;
    m->ranges->range = ms_xcalloc(r->v.ranges.n, sizeof(*m->ranges->range));
    for (uint32_t i = 0; i < r->v.ranges.n; i++) {
      Meseta__V1__Value__Range *g = ms_xmalloc(sizeof(*g));
      meseta__v1__value__range__init(g);
      g->begin = r->v.ranges.v[i].begin;
      g->end = r->v.ranges.v[i].end;
      m->ranges->range[i] = g;
    }
  } else {
    m->set = ms_xmalloc(sizeof(*m->set));
    meseta__v1__value__set__init(m->set);
    m->set->n_item = r->v.set.n;
    m->set->item = ms_xcalloc(r->v.set.n, sizeof(char *));
    for (uint32_t i = 0; i < r->v.set.n; i++)
      m->set->item[i] = ms_xstrdup(r->v.set.v[i]);
  }
  const ms_rmeta *meta = r->meta;
  if (!meta)
    return m;
  m->n_reservations = meta->nres;
  m->reservations = ms_xcalloc(meta->nres, sizeof(*m->reservations));
  for (uint32_t i = 0; i < meta->nres; i++) {
    Meseta__V1__Resource__ReservationInfo *ri = ms_xmalloc(sizeof(*ri));
    meseta__v1__resource__reservation_info__init(ri);
    ri->type = (Meseta__V1__Resource__ReservationInfo__Type)meta->res[i].type;
    ri->role = dup_or_empty(meta->res[i].role);
    ri->principal = dup_or_empty(meta->res[i].principal);
    if (meta->res[i].nlabels)
      ri->labels = labels_to(meta->res[i].labels, meta->res[i].nlabels);
    m->reservations[i] = ri;
  }
  if (meta->alloc_role) {
    m->allocation_info = ms_xmalloc(sizeof(*m->allocation_info));
    meseta__v1__resource__allocation_info__init(m->allocation_info);
    m->allocation_info->role = dup_or_empty(meta->alloc_role);
  }
  if (meta->disk)
    m->disk = disk_to(meta->disk);
  if (meta->revocable) {
    m->revocable = ms_xmalloc(sizeof(*m->revocable));
    meseta__v1__resource__revocable_info__init(m->revocable);
  }
  if (meta->shared) {
    m->shared = ms_xmalloc(sizeof(*m->shared));
    meseta__v1__resource__shared_info__init(m->shared);
  }
  if (meta->provider_id) {
    m->provider_id = ms_xmalloc(sizeof(*m->provider_id));
    meseta__v1__resource_provider_id__init(m->provider_id);
    m->provider_id->value = dup_or_empty(meta->provider_id);
  }
  return m;
}

Meseta__V1__Resources *ms_resources_to_proto(const ms_resources *set) {
  Meseta__V1__Resources *msg = ms_xmalloc(sizeof(*msg));
  meseta__v1__resources__init(msg);
  size_t n = 0;
  for (uint32_t i = 0; i < set->n; i++)
    n += set->v[i].count;
  msg->resources = ms_xcalloc(n, sizeof(*msg->resources));
  for (uint32_t i = 0; i < set->n; i++)
    for (uint32_t c = 0; c < set->v[i].count; c++) /* copies are listed, as Mesos does */
      msg->resources[msg->n_resources++] = resource_to(&set->v[i]);
  return msg;
}

void ms_resources_proto_free(Meseta__V1__Resources *msg) {
  if (msg)
    protobuf_c_message_free_unpacked(&msg->base, NULL);
}

/* ---- operations ---- */

static int list_from(Meseta__V1__Resource *const *v, size_t n, const char *field, ms_resources **ret,
                     ms_error **err) {
  if (ms_resources_from_proto(v, n, ret, err) < 0)
    return ms_error_prefix(err, "operation `%s`", field);
  return 0;
}

static int one_from(const Meseta__V1__Resource *m, const char *field, ms_resources **ret, ms_error **err) {
  if (!m)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "operation `%s` is required", field);
  Meseta__V1__Resource *const one[] = {(Meseta__V1__Resource *)m};
  return list_from(one, 1, field, ret, err);
}

int ms_operation_from_proto(const Meseta__V1__Operation *msg, ms_operation *ret, ms_error **err) {
  ms_operation op = {.type = (ms_operation_type)msg->type};
  const void *payloads[] = {NULL,
                            msg->reserve,
                            msg->unreserve,
                            msg->create,
                            msg->destroy,
                            msg->grow_volume,
                            msg->shrink_volume,
                            msg->create_disk,
                            msg->destroy_disk};
  if (msg->type <= 0 || (size_t)msg->type >= MS_ARRAY_SIZE(payloads))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "operation `type` %d is unknown", (int)msg->type);
  for (size_t i = 1; i < MS_ARRAY_SIZE(payloads); i++)
    if ((payloads[i] != NULL) != (i == (size_t)msg->type))
      return ms_error_set(err, MS_INVALID_ARGUMENT,
                          "operation %s: the payload must match `type` and be the only one",
                          ms_operation_type_name(op.type));
  int rc = 0;
  switch (op.type) {
  case MS_OP_RESERVE:
    rc = list_from(msg->reserve->resources, msg->reserve->n_resources, "reserve.resources", &op.resources,
                   err);
    if (rc == 0 && msg->reserve->n_source)
      rc = list_from(msg->reserve->source, msg->reserve->n_source, "reserve.source", &op.source, err);
    break;
  case MS_OP_UNRESERVE:
    rc = list_from(msg->unreserve->resources, msg->unreserve->n_resources, "unreserve.resources",
                   &op.resources, err);
    break;
  case MS_OP_CREATE:
    rc = list_from(msg->create->volumes, msg->create->n_volumes, "create.volumes", &op.resources, err);
    break;
  case MS_OP_DESTROY:
    rc = list_from(msg->destroy->volumes, msg->destroy->n_volumes, "destroy.volumes", &op.resources, err);
    break;
  case MS_OP_GROW_VOLUME:
    rc = one_from(msg->grow_volume->volume, "grow_volume.volume", &op.volume, err);
    if (rc == 0)
      rc = one_from(msg->grow_volume->addition, "grow_volume.addition", &op.addition, err);
    break;
  case MS_OP_SHRINK_VOLUME:
    rc = one_from(msg->shrink_volume->volume, "shrink_volume.volume", &op.volume, err);
    if (rc == 0 && !msg->shrink_volume->subtract)
      rc = ms_error_set(err, MS_INVALID_ARGUMENT, "operation `shrink_volume.subtract` is required");
    if (rc == 0)
      rc = ms_scalar_from_double(msg->shrink_volume->subtract->value, "operation `shrink_volume.subtract`",
                                 &op.subtract, err);
    break;
  case MS_OP_CREATE_DISK:
    rc = one_from(msg->create_disk->source, "create_disk.source", &op.source, err);
    op.target_type = (ms_disk_source_type)msg->create_disk->target_type;
    op.target_profile =
        *msg->create_disk->target_profile ? ms_xstrdup(msg->create_disk->target_profile) : NULL;
    op.volume_id = *msg->create_disk->volume_id ? ms_xstrdup(msg->create_disk->volume_id) : NULL;
    break;
  case MS_OP_DESTROY_DISK:
    rc = one_from(msg->destroy_disk->source, "destroy_disk.source", &op.source, err);
    break;
  default:
    break;
  }
  if (rc < 0) {
    ms_operation_release(&op);
    return MS_ERR;
  }
  *ret = op;
  return 0;
}
