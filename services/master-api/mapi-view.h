/* master-api's read view: the allocator's state as Allocator.WatchState streams it.
 *
 * One writer (the watch thread) and many readers (the gRPC server thread, the thread
 * that serves parked reads). Readers take the read lock, look at the collections and
 * serialize their answer from the items' bytes before unlocking (GetState's whole
 * State is encoded once per revision and shared: mapi_view_state_bytes). The writer
 * builds a new
 * snapshot aside and swaps it in under the write lock, and applies the changes of one
 * revision together, so a reader never sees a revision half applied.
 *
 * Collections are arrays sorted by key (the id order pagination needs); each item is
 * a message the view owns (unpacked by protobuf-c, freed with
 * protobuf_c_message_free_unpacked) and its encoding, packed once when it is put. Keys: agents and frameworks
 * by id, roles by name, tasks by "<framework id>/<task id>", executors by "<framework>/<agent>/<executor>",
 * operations by their uuid in hex, quota configs and weights by role.
 *
 * Ownership: the mapi_view_apply_* functions take the event they are given (it is
 * freed, or its parts moved into the view). Pointers read under the lock are valid
 * until mapi_view_unlock. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "meseta/v1/allocator.pb-c.h"

#include "mapi-encode.h"

typedef struct mapi_coll {
  size_t n, cap;
  char **keys;
  ProtobufCMessage **items;
  /* items[i] packed, its length (varint) in front (mapi-encode.h), written when
   * the item is put: what the big reads copy instead of packing. */
  ProtobufCBinaryData *enc;
  size_t enc_bytes; /* the sum of enc[i].len */
} mapi_coll;

/* The first index whose key is above `key` (NULL or "": 0). */
size_t mapi_coll_after(const mapi_coll *c, const char *key);
/* The item under `key`, or NULL. */
ProtobufCMessage *mapi_coll_get(const mapi_coll *c, const char *key);

typedef struct mapi_state {
  mapi_coll agents, frameworks, tasks, executors, operations, roles, quota, weights;
  Meseta__V1__MaintenanceSchedule *schedule; /* NULL: none */
  Meseta__V1__DownMachines *down;            /* machines DOWN for maintenance; NULL: none */
  Meseta__V1__SnapshotBegin *begin;          /* leader id, master info, election time */
  int64_t revision;                          /* the revision the state reflects */
  /* Grows by one at every applied revision and at every snapshot swap (a heartbeat
   * moves `revision` alone): what Operator.Subscribe orders its events by. */
  uint64_t seq;
} mapi_state;

typedef struct mapi_view mapi_view;

mapi_view *mapi_view_new(void);
void mapi_view_free(mapi_view *v); /* NULL is fine */

/* ---- change hooks (Operator.Subscribe) ----
 *
 * Called on the writer's thread, without the lock: only the writer changes the view,
 * so it may read `st` / `now` / `old` as it likes, and readers keep reading. Set
 * before the writer starts; a hook must not block (it may take short locks of its
 * own, never the view's). */
typedef struct mapi_view_hooks {
  /* The changes of one revision (n StateEvents, each with its `change`), before they
   * are applied to st (which the changes take their messages from, so the hook must
   * serialize what it needs now). Returns what `after_changes` gets. */
  void *(*before_changes)(void *arg, const mapi_state *st, Meseta__V1__StateEvent *const *evs, size_t n);
  /* They are applied: st->seq and st->revision are the new ones. */
  void (*after_changes)(void *arg, void *prepared, const mapi_state *st);
  /* A snapshot replaced `old` (still readable, freed after the call) with `now`. */
  void (*after_swap)(void *arg, const mapi_state *old, const mapi_state *now);
} mapi_view_hooks;

/* `hooks` (kept, not copied) with `arg`; NULL removes them. Before the writer starts. */
void mapi_view_set_hooks(mapi_view *v, const mapi_view_hooks *hooks, void *arg);

/* ---- the writer (one thread) ---- */

/* Applies one StateEvent (taken). A snapshot replaces the view at its end; changes
 * are held until the last of their revision, then applied at once. Returns true
 * when the view now reflects a new revision (so parked reads may be served). */
bool mapi_view_apply(mapi_view *v, Meseta__V1__StateEvent *ev);
/* The stream ended: drop a snapshot or revision half received, and mark the view
 * stale (its revision stays; it is still served). */
void mapi_view_stream_lost(mapi_view *v);

/* ---- readers ---- */

/* Takes the read lock and returns the state, or NULL (lock not held) when the view
 * has never had a snapshot. */
const mapi_state *mapi_view_rdlock(mapi_view *v);
void mapi_view_unlock(mapi_view *v);
/* Whether the view follows a live stream (a snapshot completed, and the stream has
 * not failed since); and its revision (0: none yet). Thread-safe. */
bool mapi_view_current(mapi_view *v);

/* The State of st (the live state, under the read lock) encoded as a
 * length-delimited field's data (mapi_encode_state): built once per `seq` and
 * shared by every reader at it. Returns a reference, the caller's (valid after
 * mapi_view_unlock: drop it with mapi_bytes_unref). */
mapi_bytes *mapi_view_state_bytes(mapi_view *v, const mapi_state *st);
int64_t mapi_view_revision(mapi_view *v);
