/* Descriptor-driven checks of whole messages (see pb-check.h): strict UTF-8 in every
 * string, and the table of refused fields. One walk over protobuf-c's field
 * descriptors; a path is rendered only when something fails. */
#include "meseta/pb-check.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/buf.h"
#include "meseta/values.h"

/* ---- UTF-8 ---- */

size_t ms_utf8_valid_prefix(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < len) {
    unsigned c = p[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    /* Table 3-7 of the Unicode standard: the second byte's range excludes overlongs
     * (E0, F0), surrogates (ED) and code points past U+10FFFF (F4). */
    size_t more;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      more = 1;
    } else if (c == 0xE0) {
      more = 2;
      lo = 0xA0;
    } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
      more = 2;
    } else if (c == 0xED) {
      more = 2;
      hi = 0x9F;
    } else if (c == 0xF0) {
      more = 3;
      lo = 0x90;
    } else if (c >= 0xF1 && c <= 0xF3) {
      more = 3;
    } else if (c == 0xF4) {
      more = 3;
      hi = 0x8F;
    } else {
      return i; /* 80..C1 (continuation or overlong lead), F5..FF */
    }
    if (len - i <= more || p[i + 1] < lo || p[i + 1] > hi)
      return i;
    for (size_t k = 2; k <= more; k++)
      if ((p[i + k] & 0xC0) != 0x80)
        return i;
    i += more + 1;
  }
  return len;
}

char *ms_utf8_repair(const char *s) {
  size_t len = strlen(s), n = 0;
  char *out = ms_xmalloc(3 * len + 1); /* each bad byte becomes 3 bytes at most */
  while (len) {
    size_t ok = ms_utf8_valid_prefix(s, len);
    memcpy(out + n, s, ok);
    n += ok;
    if (ok == len)
      break;
    memcpy(out + n, "\xEF\xBF\xBD", 3);
    n += 3;
    s += ok + 1;
    len -= ok + 1;
  }
  out[n] = '\0';
  return out;
}

/* ---- walking messages ---- */

#define NO_INDEX SIZE_MAX
#define PATH_MAX_LEN 512

/* One step of the path from the message checked to a field: a list on the C stack. */
typedef struct frame {
  const struct frame *up;
  const char *name;
  size_t index; /* NO_INDEX: not an element of a repeated field */
} frame;

static void render(ms_buf *b, const frame *f) {
  if (!f)
    return;
  render(b, f->up);
  if (b->len)
    ms_buf_putc(b, '.', NULL);
  ms_buf_appends(b, f->name, NULL);
  if (f->index != NO_INDEX)
    ms_buf_appendf(b, NULL, "[%zu]", f->index);
}

__attribute__((format(printf, 4, 5))) static int fail_at(const char *prefix, const frame *f, ms_error **err,
                                                         const char *fmt, ...) {
  ms_buf path = MS_BUF_INIT(PATH_MAX_LEN); /* a longer path is cut, not refused */
  if (prefix && *prefix)
    ms_buf_appends(&path, prefix, NULL);
  render(&path, f);
  va_list ap;
  va_start(ap, fmt);
  ms_error_setv(err, MS_INVALID_ARGUMENT, fmt, ap);
  va_end(ap);
  ms_error_prefix(err, "`%s`", path.data ? path.data : "");
  ms_buf_release(&path);
  return MS_ERR;
}

static size_t value_size(ProtobufCType t) {
  switch (t) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
  case PROTOBUF_C_TYPE_FLOAT:
  case PROTOBUF_C_TYPE_ENUM:
    return 4;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
  case PROTOBUF_C_TYPE_DOUBLE:
    return 8;
  case PROTOBUF_C_TYPE_BOOL:
    return sizeof(protobuf_c_boolean);
  case PROTOBUF_C_TYPE_STRING:
    return sizeof(char *);
  case PROTOBUF_C_TYPE_BYTES:
    return sizeof(ProtobufCBinaryData);
  case PROTOBUF_C_TYPE_MESSAGE:
    return sizeof(ProtobufCMessage *);
  }
  return 0;
}

/* How many values field f holds in m: 0 when it is not set (proto3: the default
 * value; a oneof: another member), the element count of a repeated field. */
static size_t count(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  const char *base = (const char *)m;
  if (f->label == PROTOBUF_C_LABEL_REPEATED)
    return *(const size_t *)(base + f->quantifier_offset);
  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
    return *(const uint32_t *)(base + f->quantifier_offset) == f->id;
  const char *v = base + f->offset;
  switch (f->type) {
  case PROTOBUF_C_TYPE_MESSAGE:
    return *(void *const *)v != NULL;
  case PROTOBUF_C_TYPE_STRING: {
    const char *s = *(const char *const *)v;
    return s && *s;
  }
  case PROTOBUF_C_TYPE_BYTES:
    return ((const ProtobufCBinaryData *)v)->len > 0;
  default:
    break;
  }
  if (f->label == PROTOBUF_C_LABEL_REQUIRED)
    return 1;
  if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset)
    return *(const protobuf_c_boolean *)(base + f->quantifier_offset) ? 1 : 0;
  static const uint8_t zero[8];
  return memcmp(v, zero, value_size(f->type)) != 0;
}

/* The address of value k of field f (k < count). */
static const void *value_at(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, size_t k) {
  const char *v = (const char *)m + f->offset;
  if (f->label == PROTOBUF_C_LABEL_REPEATED)
    return *(const char *const *)v + k * value_size(f->type);
  return v;
}

/* ---- strict UTF-8 everywhere ---- */

/* strict: also refuse unknown fields (protobuf-c keeps them, and packs some, such as
 * field number 0, into bytes it cannot read back: ms_pb_dup would abort). */
static int utf8_walk(const ProtobufCMessage *m, const frame *up, const char *prefix, bool strict,
                     ms_error **err) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  if (strict && m->n_unknown_fields)
    return up ? fail_at(prefix, up, err, "field number %u is not part of `%s`", m->unknown_fields[0].tag,
                        d->name)
              : ms_error_set(err, MS_INVALID_ARGUMENT, "field number %u is not part of `%s`",
                             m->unknown_fields[0].tag, d->name);
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
      continue;
    size_t n = count(m, f);
    bool rep = f->label == PROTOBUF_C_LABEL_REPEATED;
    for (size_t k = 0; k < n; k++) {
      frame fr = {up, f->name, rep ? k : NO_INDEX};
      const void *v = value_at(m, f, k);
      if (f->type == PROTOBUF_C_TYPE_STRING) {
        const char *s = *(const char *const *)v;
        size_t len = s ? strlen(s) : 0, ok = s ? ms_utf8_valid_prefix(s, len) : 0;
        if (ok != len)
          return fail_at(prefix, &fr, err, "not valid UTF-8 (byte %zu)", ok);
      } else {
        const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)v;
        if (sub && utf8_walk(sub, &fr, prefix, strict, err) < 0)
          return MS_ERR;
      }
    }
  }
  return 0;
}

int ms_pb_check_utf8(const ProtobufCMessage *m, const char *prefix, ms_error **err) {
  return utf8_walk(m, NULL, prefix, false, err);
}

int ms_pb_check_request(const ProtobufCMessage *m, const char *prefix, ms_error **err) {
  return utf8_walk(m, NULL, prefix, true, err);
}

/* ---- refused fields ---- */

static bool listed(const char *const *allowed, const char *v) {
  for (; v && *allowed; allowed++)
    if (strcmp(*allowed, v) == 0)
      return true;
  return false;
}

/* Value k of f as the text an `allowed` list holds (enum value name, string, map key);
 * buf holds a number that has no name. */
static const char *value_text(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, size_t k,
                              char *buf, size_t size) {
  const void *v = value_at(m, f, k);
  switch (f->type) {
  case PROTOBUF_C_TYPE_ENUM: {
    int32_t x;
    memcpy(&x, v, sizeof(x));
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, x);
    if (ev)
      return ev->name;
    snprintf(buf, size, "%d", (int)x);
    return buf;
  }
  case PROTOBUF_C_TYPE_STRING:
    return *(const char *const *)v;
  case PROTOBUF_C_TYPE_MESSAGE: {
    /* A map field: its entry's key (field 1). */
    const ProtobufCMessage *e = *(const ProtobufCMessage *const *)v;
    const ProtobufCFieldDescriptor *key =
        e ? protobuf_c_message_descriptor_get_field(e->descriptor, 1) : NULL;
    if (key && key->type == PROTOBUF_C_TYPE_STRING)
      return *(const char *const *)((const char *)e + key->offset);
    return NULL;
  }
  default:
    return NULL;
  }
}

static int refused_walk(const ProtobufCMessage *m, const ProtobufCMessageDescriptor *root, const frame *up,
                        const char *prefix, const ms_pb_refusal *table, size_t nrows, ms_error **err) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  bool rows = false; /* most messages have none: then only their submessages are looked at */
  for (size_t r = 0; r < nrows && !rows; r++)
    rows = table[r].message == d;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    if (!rows && f->type != PROTOBUF_C_TYPE_MESSAGE)
      continue;
    size_t n = count(m, f);
    if (n == 0)
      continue;
    bool rep = f->label == PROTOBUF_C_LABEL_REPEATED;
    for (size_t r = 0; rows && r < nrows; r++) {
      const ms_pb_refusal *row = &table[r];
      if (row->message != d || (row->root && row->root != root) || strcmp(row->field, f->name) != 0)
        continue;
      if (!row->allowed) {
        frame fr = {up, f->name, NO_INDEX};
        return fail_at(prefix, &fr, err, "%s", row->why);
      }
      for (size_t k = 0; k < n; k++) {
        char num[16];
        const char *v = value_text(m, f, k, num, sizeof(num));
        if (!listed(row->allowed, v)) {
          frame fr = {up, f->name, rep ? k : NO_INDEX};
          char q[64];
          return fail_at(prefix, &fr, err, "`%s`: %s", ms_value_quote(v, q, sizeof(q)), row->why);
        }
      }
    }
    if (f->type != PROTOBUF_C_TYPE_MESSAGE)
      continue;
    for (size_t k = 0; k < n; k++) {
      frame fr = {up, f->name, rep ? k : NO_INDEX};
      const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)value_at(m, f, k);
      if (sub && refused_walk(sub, root, &fr, prefix, table, nrows, err) < 0)
        return MS_ERR;
    }
  }
  return 0;
}

int ms_pb_check_refusals(const ProtobufCMessage *m, const char *prefix, const ms_pb_refusal *table, size_t n,
                         ms_error **err) {
  return refused_walk(m, m->descriptor, NULL, prefix, table, n, err);
}

int ms_pb_check_refused(const ProtobufCMessage *m, const char *prefix, ms_error **err) {
  return refused_walk(m, m->descriptor, NULL, prefix, ms_pb_refused, ms_pb_nrefused, err);
}

bool ms_pb_refusals_resolve(const ms_pb_refusal *table, size_t n, size_t *ret_row) {
  for (size_t r = 0; r < n; r++) {
    const ProtobufCFieldDescriptor *f =
        table[r].message ? protobuf_c_message_descriptor_get_field_by_name(table[r].message, table[r].field)
                         : NULL;
    bool ok = f && table[r].why && *table[r].why;
    if (ok && table[r].allowed) /* values are compared as enum names, strings or map keys */
      ok = f->type == PROTOBUF_C_TYPE_ENUM || f->type == PROTOBUF_C_TYPE_STRING ||
           (f->type == PROTOBUF_C_TYPE_MESSAGE && f->label == PROTOBUF_C_LABEL_REPEATED);
    if (!ok) {
      if (ret_row)
        *ret_row = r;
      return false;
    }
  }
  return true;
}
