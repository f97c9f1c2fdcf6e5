/* Any protobuf-c message to its proto3 JSON form, walking the message's descriptor, so
 * every Operator answer prints without code per message type. Field names are the
 * .proto names (as `protoc --json_name` would not change them), which is what the
 * docs and the protos show. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "meseta/alloc.h"

#include "cli.h"

static json_t *field_value(const ProtobufCFieldDescriptor *f, const void *p);

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static json_t *base64(const ProtobufCBinaryData *b) {
  char *out = ms_xmalloc(4 * ((b->len + 2) / 3) + 1);
  size_t o = 0;
  for (size_t i = 0; i < b->len; i += 3) {
    uint32_t v = (uint32_t)b->data[i] << 16;
    if (i + 1 < b->len)
      v |= (uint32_t)b->data[i + 1] << 8;
    if (i + 2 < b->len)
      v |= b->data[i + 2];
    out[o++] = b64[(v >> 18) & 63];
    out[o++] = b64[(v >> 12) & 63];
    out[o++] = i + 1 < b->len ? b64[(v >> 6) & 63] : '=';
    out[o++] = i + 2 < b->len ? b64[v & 63] : '=';
  }
  out[o] = '\0';
  json_t *j = json_string(out);
  free(out);
  return j;
}

static json_t *int64_text(int64_t v) {
  char buf[32];
  snprintf(buf, sizeof(buf), "%" PRId64, v);
  return json_string(buf);
}

static json_t *uint64_text(uint64_t v) {
  char buf[32];
  snprintf(buf, sizeof(buf), "%" PRIu64, v);
  return json_string(buf);
}

/* Field by name of a message whose type is known to have it. */
static const void *member(const ProtobufCMessage *m, const char *name,
                          const ProtobufCFieldDescriptor **ret_f) {
  const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
  *ret_f = f;
  return f ? (const char *)m + f->offset : NULL;
}

/* Timestamp: RFC 3339 in UTC ("2026-11-21T08:32:05.120Z"). */
static json_t *timestamp(const ProtobufCMessage *m) {
  const ProtobufCFieldDescriptor *f;
  int64_t secs = *(const int64_t *)member(m, "seconds", &f);
  int32_t nanos = *(const int32_t *)member(m, "nanos", &f);
  time_t t = (time_t)secs;
  struct tm tm;
  char buf[64], frac[16] = "";
  if (!gmtime_r(&t, &tm))
    return int64_text(secs);
  if (nanos > 0) {
    snprintf(frac, sizeof(frac), ".%09d", nanos);
    for (size_t n = strlen(frac); n > 1 && frac[n - 1] == '0'; n--)
      frac[n - 1] = '\0';
  }
  size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, sizeof(buf) - n, "%sZ", frac);
  return json_string(buf);
}

/* Duration: seconds with up to 9 decimals and an "s" ("1.5s"). */
static json_t *duration(const ProtobufCMessage *m) {
  const ProtobufCFieldDescriptor *f;
  int64_t secs = *(const int64_t *)member(m, "seconds", &f);
  int32_t nanos = *(const int32_t *)member(m, "nanos", &f);
  char buf[64];
  bool neg = secs < 0 || nanos < 0;
  uint64_t s = (uint64_t)(secs < 0 ? -secs : secs);
  int32_t ns = nanos < 0 ? -nanos : nanos;
  if (ns) {
    snprintf(buf, sizeof(buf), "%s%" PRIu64 ".%09d", neg ? "-" : "", s, ns);
    for (size_t n = strlen(buf); buf[n - 1] == '0'; n--)
      buf[n - 1] = '\0';
  } else {
    snprintf(buf, sizeof(buf), "%s%" PRIu64, neg ? "-" : "", s);
  }
  strncat(buf, "s", sizeof(buf) - strlen(buf) - 1);
  return json_string(buf);
}

/* Map entries: a repeated message field whose type is a generated `...Entry` with
 * `key` (1) and `value` (2), as protoc makes for map<K, V>. */
static bool is_map_entry(const ProtobufCMessageDescriptor *d) {
  size_t n = strlen(d->short_name);
  return n > 5 && strcmp(d->short_name + n - 5, "Entry") == 0 && d->n_fields == 2 && d->fields[0].id == 1 &&
         strcmp(d->fields[0].name, "key") == 0 && d->fields[1].id == 2 &&
         strcmp(d->fields[1].name, "value") == 0;
}

static json_t *map_value(const ProtobufCMessage *const *entries, size_t n) {
  json_t *o = json_object();
  for (size_t i = 0; i < n; i++) {
    const ProtobufCMessageDescriptor *d = entries[i]->descriptor;
    const ProtobufCFieldDescriptor *kf = &d->fields[0], *vf = &d->fields[1];
    json_t *k = field_value(kf, (const char *)entries[i] + kf->offset);
    json_t *v = field_value(vf, (const char *)entries[i] + vf->offset);
    const char *ks = json_is_string(k) ? json_string_value(k) : NULL;
    char buf[64];
    if (!ks) {
      if (json_is_integer(k))
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(k));
      else
        snprintf(buf, sizeof(buf), "%s", json_is_true(k) ? "true" : "false");
      ks = buf;
    }
    json_object_set_new(o, ks, v ? v : json_null());
    json_decref(k);
  }
  return o;
}

static json_t *message_value(const ProtobufCMessage *m) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  if (strcmp(d->name, "google.protobuf.Timestamp") == 0)
    return timestamp(m);
  if (strcmp(d->name, "google.protobuf.Duration") == 0)
    return duration(m);
  if (strncmp(d->name, "google.protobuf.", 16) == 0 && d->n_fields == 1 &&
      strcmp(d->fields[0].name, "value") == 0) { /* wrappers: the bare value, even when default */
    json_t *v = field_value(&d->fields[0], (const char *)m + d->fields[0].offset);
    return v ? v : json_null();
  }
  return cli_json_from_message(m);
}

/* One value of a field's type at p; NULL for nothing (a NULL message). */
static json_t *field_value(const ProtobufCFieldDescriptor *f, const void *p) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
    return json_integer(*(const int32_t *)p);
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    return json_integer(*(const uint32_t *)p);
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
    return int64_text(*(const int64_t *)p);
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    return uint64_text(*(const uint64_t *)p);
  case PROTOBUF_C_TYPE_FLOAT:
    return json_real(*(const float *)p);
  case PROTOBUF_C_TYPE_DOUBLE:
    return json_real(*(const double *)p);
  case PROTOBUF_C_TYPE_BOOL:
    return json_boolean(*(const protobuf_c_boolean *)p);
  case PROTOBUF_C_TYPE_ENUM: {
    int v = *(const int *)p;
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
    return ev ? json_string(ev->name) : json_integer(v);
  }
  case PROTOBUF_C_TYPE_STRING: {
    const char *s = *(char *const *)p;
    json_t *j = json_string(s ? s : "");
    if (!j) { /* not UTF-8, which jansson refuses: show the bad bytes as '?' */
      char *t = ms_xstrdup(s);
      for (char *q = t; *q; q++)
        if ((unsigned char)*q >= 0x80)
          *q = '?';
      j = json_string(t);
      free(t);
    }
    return j;
  }
  case PROTOBUF_C_TYPE_BYTES:
    return base64(p);
  case PROTOBUF_C_TYPE_MESSAGE: {
    const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
    return m ? message_value(m) : NULL;
  }
  }
  return NULL;
}

/* Whether a proto3 scalar holds its default (then it is left out). */
static bool is_default(const ProtobufCFieldDescriptor *f, const void *p) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
  case PROTOBUF_C_TYPE_ENUM:
    return *(const int32_t *)p == 0;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    return *(const int64_t *)p == 0;
  case PROTOBUF_C_TYPE_FLOAT:
    return *(const float *)p == 0;
  case PROTOBUF_C_TYPE_DOUBLE:
    return *(const double *)p == 0;
  case PROTOBUF_C_TYPE_BOOL:
    return !*(const protobuf_c_boolean *)p;
  case PROTOBUF_C_TYPE_STRING: {
    const char *s = *(char *const *)p;
    return !s || !*s;
  }
  case PROTOBUF_C_TYPE_BYTES:
    return ((const ProtobufCBinaryData *)p)->len == 0;
  case PROTOBUF_C_TYPE_MESSAGE:
    return *(ProtobufCMessage *const *)p == NULL;
  }
  return true;
}

static size_t elem_size(ProtobufCType t) {
  switch (t) {
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
  case PROTOBUF_C_TYPE_DOUBLE:
    return 8;
  case PROTOBUF_C_TYPE_STRING:
  case PROTOBUF_C_TYPE_MESSAGE:
    return sizeof(void *);
  case PROTOBUF_C_TYPE_BYTES:
    return sizeof(ProtobufCBinaryData);
  case PROTOBUF_C_TYPE_BOOL:
    return sizeof(protobuf_c_boolean);
  default:
    return 4;
  }
}

json_t *cli_json_from_message(const ProtobufCMessage *m) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  json_t *o = json_object();
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    const char *base = (const char *)m;
    const void *p = base + f->offset;
    json_t *v = NULL;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = *(const size_t *)(base + f->quantifier_offset);
      if (!n)
        continue;
      const char *arr = *(char *const *)p;
      if (f->type == PROTOBUF_C_TYPE_MESSAGE && is_map_entry(f->descriptor)) {
        v = map_value((const ProtobufCMessage *const *)arr, n);
      } else {
        v = json_array();
        for (size_t k = 0; k < n; k++) {
          json_t *e = field_value(f, arr + k * elem_size(f->type));
          json_array_append_new(v, e ? e : json_null());
        }
      }
    } else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
      if (*(const uint32_t *)(base + f->quantifier_offset) != f->id)
        continue;
      v = field_value(f, p); /* a set oneof member shows even at its default */
    } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
               f->type != PROTOBUF_C_TYPE_MESSAGE) {
      if (!*(const protobuf_c_boolean *)(base + f->quantifier_offset))
        continue;
      v = field_value(f, p);
    } else {
      if (is_default(f, p))
        continue;
      v = field_value(f, p);
    }
    if (v)
      json_object_set_new(o, f->name, v);
  }
  return o;
}
