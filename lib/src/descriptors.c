/* The descriptor database: files split out of FileDescriptorSets with their exact
 * bytes (reflection must serve what protoc wrote), plus a sorted symbol index. */
#include "meseta/descriptors.h"

#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"

#include "google/protobuf/descriptor.pb-c.h"

typedef enum sym_kind { SYM_SERVICE, SYM_METHOD, SYM_MESSAGE, SYM_ENUM, SYM_FIELD, SYM_VALUE } sym_kind;

typedef struct symbol {
  char *name;
  sym_kind kind;
  ms_call_kind call_kind; /* methods only */
  ms_descfile *file;
} symbol;

struct ms_descdb {
  ms_descfile **files;
  size_t n_files;
  char **dep_names; /* per file, resolved once the set is loaded */
  symbol *syms;
  size_t n_syms, cap_syms;
  bool sorted;
};

ms_descdb *ms_descdb_new(void) {
  return ms_xcalloc(1, sizeof(ms_descdb));
}

static void file_free(ms_descfile *f) {
  if (!f)
    return;
  free((char *)f->name);
  free((char *)f->package);
  free((uint8_t *)f->bytes);
  free(f->deps);
  free(f);
}

void ms_descdb_free(ms_descdb *db) {
  if (!db)
    return;
  for (size_t i = 0; i < db->n_files; i++)
    file_free(db->files[i]);
  free(db->files);
  for (size_t i = 0; i < db->n_syms; i++)
    free(db->syms[i].name);
  free(db->syms);
  free(db);
}

static void add_sym(ms_descdb *db, char *name, sym_kind kind, ms_call_kind ck, ms_descfile *f) {
  if (db->n_syms == db->cap_syms) {
    db->cap_syms = db->cap_syms ? db->cap_syms * 2 : 256;
    db->syms = ms_xrealloc(db->syms, db->cap_syms * sizeof(symbol));
  }
  db->syms[db->n_syms++] = (symbol){.name = name, .kind = kind, .call_kind = ck, .file = f};
  db->sorted = false;
}

static char *qualify(const char *scope, const char *name) {
  return *scope ? ms_xasprintf("%s.%s", scope, name) : ms_xstrdup(name);
}

static void index_enum(ms_descdb *db, ms_descfile *f, const char *scope,
                       const Google__Protobuf__EnumDescriptorProto *e) {
  char *full = qualify(scope, e->name);
  /* Enum values live in the enum's parent scope, as in C++. */
  for (size_t i = 0; i < e->n_value; i++)
    add_sym(db, qualify(scope, e->value[i]->name), SYM_VALUE, 0, f);
  add_sym(db, full, SYM_ENUM, 0, f);
}

static void index_message(ms_descdb *db, ms_descfile *f, const char *scope,
                          const Google__Protobuf__DescriptorProto *m) {
  char *full = qualify(scope, m->name);
  for (size_t i = 0; i < m->n_field; i++)
    add_sym(db, qualify(full, m->field[i]->name), SYM_FIELD, 0, f);
  for (size_t i = 0; i < m->n_nested_type; i++)
    index_message(db, f, full, m->nested_type[i]);
  for (size_t i = 0; i < m->n_enum_type; i++)
    index_enum(db, f, full, m->enum_type[i]);
  add_sym(db, full, SYM_MESSAGE, 0, f);
}

static void index_file(ms_descdb *db, ms_descfile *f, const Google__Protobuf__FileDescriptorProto *fd) {
  const char *pkg = fd->package ? fd->package : "";
  for (size_t i = 0; i < fd->n_message_type; i++)
    index_message(db, f, pkg, fd->message_type[i]);
  for (size_t i = 0; i < fd->n_enum_type; i++)
    index_enum(db, f, pkg, fd->enum_type[i]);
  for (size_t i = 0; i < fd->n_service; i++) {
    const Google__Protobuf__ServiceDescriptorProto *s = fd->service[i];
    char *sname = qualify(pkg, s->name);
    for (size_t j = 0; j < s->n_method; j++) {
      const Google__Protobuf__MethodDescriptorProto *m = s->method[j];
      ms_call_kind ck = (m->client_streaming ? MS_CALL_CLIENT_STREAM : 0) |
                        (m->server_streaming ? MS_CALL_SERVER_STREAM : 0);
      add_sym(db, qualify(sname, m->name), SYM_METHOD, ck, f);
    }
    add_sym(db, sname, SYM_SERVICE, 0, f);
  }
}

static int sym_cmp(const void *a, const void *b) {
  return strcmp(((const symbol *)a)->name, ((const symbol *)b)->name);
}

/* Reads a base-128 varint; returns bytes used, 0 on malformed input. */
static size_t read_varint(const uint8_t *p, size_t len, uint64_t *ret) {
  uint64_t v = 0;
  for (size_t i = 0; i < len && i < 10; i++) {
    v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
    if (!(p[i] & 0x80)) {
      *ret = v;
      return i + 1;
    }
  }
  return 0;
}

static int add_file(ms_descdb *db, const uint8_t *bytes, size_t len, ms_error **err) {
  Google__Protobuf__FileDescriptorProto *fd =
      google__protobuf__file_descriptor_proto__unpack(NULL, len, bytes);
  if (!fd || !fd->name) {
    if (fd)
      google__protobuf__file_descriptor_proto__free_unpacked(fd, NULL);
    return ms_error_set(err, MS_INVALID_ARGUMENT, "descriptor set holds a malformed FileDescriptorProto");
  }
  if (ms_descdb_file_by_name(db, fd->name)) {
    google__protobuf__file_descriptor_proto__free_unpacked(fd, NULL);
    return 0;
  }
  ms_descfile *f = ms_xcalloc(1, sizeof(*f));
  f->name = ms_xstrdup(fd->name);
  f->package = ms_xstrdup(fd->package ? fd->package : "");
  uint8_t *copy = ms_xmalloc(len);
  memcpy(copy, bytes, len);
  f->bytes = copy;
  f->len = len;
  /* Dependencies are resolved by name; --include_imports lists them before their users. */
  f->deps = ms_xcalloc(fd->n_dependency ? fd->n_dependency : 1, sizeof(*f->deps));
  for (size_t i = 0; i < fd->n_dependency; i++) {
    const ms_descfile *d = ms_descdb_file_by_name(db, fd->dependency[i]);
    if (d)
      f->deps[f->n_deps++] = d;
  }
  db->files = ms_xrealloc(db->files, (db->n_files + 1) * sizeof(*db->files));
  db->files[db->n_files++] = f;
  index_file(db, f, fd);
  google__protobuf__file_descriptor_proto__free_unpacked(fd, NULL);
  return 0;
}

int ms_descdb_add_set(ms_descdb *db, const uint8_t *bytes, size_t len, ms_error **err) {
  /* FileDescriptorSet is `repeated FileDescriptorProto file = 1`: walk the wire
   * format so each file keeps its exact bytes. */
  size_t pos = 0;
  while (pos < len) {
    uint64_t tag = 0, n = 0;
    size_t used = read_varint(bytes + pos, len - pos, &tag);
    if (!used)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "descriptor set: bad tag at byte %zu", pos);
    pos += used;
    if ((tag & 7) != 2)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "descriptor set: unexpected wire type at byte %zu", pos);
    used = read_varint(bytes + pos, len - pos, &n);
    if (!used || n > len - pos - used)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "descriptor set: truncated at byte %zu", pos);
    pos += used;
    if ((tag >> 3) == 1 && add_file(db, bytes + pos, (size_t)n, err) < 0)
      return MS_ERR;
    pos += (size_t)n;
  }
  if (db->n_syms) /* qsort may not be given NULL, even for nothing */
    qsort(db->syms, db->n_syms, sizeof(symbol), sym_cmp);
  db->sorted = true;
  return 0;
}

const ms_descfile *ms_descdb_file_by_name(const ms_descdb *db, const char *name) {
  for (size_t i = 0; i < db->n_files; i++)
    if (strcmp(db->files[i]->name, name) == 0)
      return db->files[i];
  return NULL;
}

static const symbol *find_sym(const ms_descdb *db, const char *name) {
  if (!name || !db->sorted || db->n_syms == 0)
    return NULL;
  symbol key = {.name = (char *)name};
  return bsearch(&key, db->syms, db->n_syms, sizeof(symbol), sym_cmp);
}

const ms_descfile *ms_descdb_file_by_symbol(const ms_descdb *db, const char *symbol_name) {
  const symbol *s = find_sym(db, symbol_name);
  return s ? s->file : NULL;
}

bool ms_descdb_is_message(const ms_descdb *db, const char *symbol_name) {
  const symbol *s = find_sym(db, symbol_name);
  return s && s->kind == SYM_MESSAGE;
}

int ms_descdb_method_kind(const ms_descdb *db, const char *service, const char *method,
                          ms_call_kind *ret_kind, ms_error **err) {
  _cleanup_free_ char *full = ms_xasprintf("%s.%s", service, method);
  const symbol *s = find_sym(db, full);
  if (!s || s->kind != SYM_METHOD)
    return ms_error_set(err, MS_NOT_FOUND, "method `%s` is not in the descriptor set", full);
  *ret_kind = s->call_kind;
  return 0;
}

typedef struct walk {
  const ms_descfile **seen;
  size_t n, cap;
} walk;

static void walk_one(const ms_descfile *f, walk *w, void (*fn)(const ms_descfile *, void *), void *arg) {
  for (size_t i = 0; i < w->n; i++)
    if (w->seen[i] == f)
      return;
  if (w->n == w->cap) {
    w->cap = w->cap ? w->cap * 2 : 16;
    w->seen = ms_xrealloc(w->seen, w->cap * sizeof(*w->seen));
  }
  w->seen[w->n++] = f;
  fn(f, arg);
  for (size_t i = 0; i < f->n_deps; i++)
    walk_one(f->deps[i], w, fn, arg);
}

void ms_descdb_walk_deps(const ms_descfile *file, void (*fn)(const ms_descfile *f, void *arg), void *arg) {
  walk w = {0};
  walk_one(file, &w, fn, arg);
  free(w.seen);
}
