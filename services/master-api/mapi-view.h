/* master-api's read view: the allocator's state as Allocator.WatchState streams it.
 *
 * One writer (the watch thread) and many readers (the gRPC server thread, the thread
 * that serves parked reads). Readers take the read lock, look at the collections and
 * serialize their answer before unlocking: nothing is copied. The writer builds a new
 * snapshot aside and swaps it in under the write lock, and applies the changes of one
 * revision together, so a reader never sees a revision half applied.
 *
 * Collections are arrays sorted by key (the id order pagination needs); each item is
 * a message the view owns (unpacked by protobuf-c, freed with
 * protobuf_c_message_free_unpacked). Keys: agents and frameworks by id, roles by name,
 * tasks by "<framework id>/<task id>", executors by "<framework>/<agent>/<executor>",
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

typedef struct mapi_coll {
  size_t n, cap;
  char **keys;
  ProtobufCMessage **items;
} mapi_coll;

/* The first index whose key is above `key` (NULL or "": 0). */
size_t mapi_coll_after(const mapi_coll *c, const char *key);

typedef struct mapi_state {
  mapi_coll agents, frameworks, tasks, executors, operations, roles, quota, weights;
  Meseta__V1__MaintenanceSchedule *schedule; /* NULL: none */
  Meseta__V1__SnapshotBegin *begin;          /* leader id, master info, election time */
  int64_t revision;                          /* the revision the state reflects */
} mapi_state;

typedef struct mapi_view mapi_view;

mapi_view *mapi_view_new(void);
void mapi_view_free(mapi_view *v); /* NULL is fine */

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
int64_t mapi_view_revision(mapi_view *v);
