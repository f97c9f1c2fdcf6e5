/* An etcd v3 client on libcurl + jansson, through etcd's JSON gateway (`/v3/...`).
 *
 * What it covers: ranges, puts, deletes, transactions (compare-and-swap), leases
 * (grant, keepalive, revoke, and a keeper thread), watches that survive dropped
 * connections, elections (campaign, leader, observe, proclaim, resign) and compaction.
 * See docs/etcd.md for the design and the gateway's quirks.
 *
 * Keys, values and election names are byte strings (pointer + length; NUL bytes are
 * fine). base64 and JSON are internal details.
 *
 * Endpoints and failover. A client has one or more endpoints ("http://host:port" or
 * "https://host:port"). A request goes to the endpoint that answered last; when it
 * cannot be reached (connect refused, unresolvable, connect timeout) the request moves
 * on to the next one, and the one that answers becomes the current endpoint. A request
 * that may have reached etcd (the connection broke after sending) is retried on the
 * next endpoint only when it is a read or otherwise safe to repeat; a write then fails
 * with UNAVAILABLE, since it may or may not have been applied. The client reconnects
 * by itself: nothing needs to be recreated after an outage.
 *
 * Errors. Every failure names the endpoint, the gateway path and why:
 *   etcd `http://127.0.0.1:2379`: /v3/kv/put: Connection refused
 * Codes: UNAVAILABLE when no endpoint answers (or etcd has no leader), DEADLINE_EXCEEDED
 * on a request timeout, INVALID_ARGUMENT for bad input and for requests over etcd's
 * size limit, NOT_FOUND for an unknown or expired lease and for an election without a
 * leader, OUT_OF_RANGE for a compacted (or future) revision, PERMISSION_DENIED and
 * UNAUTHENTICATED for auth, RESOURCE_EXHAUSTED when etcd's space quota is full or an
 * answer is larger than max_response_bytes. A transaction whose compares fail is not
 * an error: it reports succeeded = false. Callers add context (the record) on top.
 *
 * Threads. An ms_etcd may be used from any number of threads at once: it keeps a
 * small pool of libcurl handles (one keep-alive connection each) under a mutex, so
 * each concurrent request has its own connection and connections are reused.
 * Watches, observes, the lease keeper and campaigns each use their own handle.
 * Callbacks (watch events, observe, lease lost) run on the stream's own thread; they
 * may call this client, but must not stop their own stream.
 *
 * Ownership. Everything passed in is borrowed for the duration of the call (options
 * are copied by ms_etcd_new). Results are filled into caller-provided structs that
 * own their memory; release them with the matching _release function (which also
 * accepts a zeroed struct). Events and kvs handed to callbacks are borrowed for the
 * callback only. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "meseta/error.h"

typedef struct ms_etcd ms_etcd;

/* etcd's default --max-request-bytes. */
#define MS_ETCD_DEFAULT_MAX_REQUEST (1536 * 1024)

typedef struct ms_etcd_options {
  const char *const *endpoints; /* "http://127.0.0.1:2379", "https://etcd-0:2379"; at least one */
  size_t n_endpoints;
  int64_t request_timeout_ms; /* whole request, connect included; 0: 5000 */
  int64_t connect_timeout_ms; /* TCP (+TLS) connect per endpoint; 0: 2000 */
  /* TLS (https endpoints): CA bundle to verify etcd with (NULL: system CAs), and an
   * optional client certificate + key for etcd's --client-cert-auth. PEM files. */
  const char *ca_file;
  const char *cert_file;
  const char *key_file;
  /* Optional auth: when username is set the client authenticates through
   * /v3/auth/authenticate before its first request, sends the token with every
   * request, and authenticates again once when etcd says the token is invalid. */
  const char *username;
  const char *password;
  /* The size etcd refuses requests over (its --max-request-bytes). Puts and txns the
   * client can see are too big are refused before sending. 0: 1.5 MiB. */
  size_t max_request_bytes;
  size_t max_response_bytes;     /* largest JSON answer accepted; 0: 256 MiB */
  unsigned max_idle_connections; /* pooled handles kept open when idle; 0: 8 */
} ms_etcd_options;

/* Creates a client. Contacts nobody (so it works while etcd is down); fails with
 * INVALID_ARGUMENT on a malformed endpoint or option. Free with ms_etcd_free(). */
ms_etcd *ms_etcd_new(const ms_etcd_options *o, ms_error **err);

/* Frees the client and closes its connections; NULL is fine. Every watch, observe and
 * lease keeper started on it must be stopped first, and no call may be in flight. */
void ms_etcd_free(ms_etcd *e);

/* The endpoint requests go to now (the last one that answered). Owned by the client,
 * valid until ms_etcd_free. */
const char *ms_etcd_current_endpoint(ms_etcd *e);

/* ---- key-value ----------------------------------------------------------------- */

/* One key-value pair. key and value point into one allocation owned by whoever owns
 * the kv; each is followed by a NUL byte not counted in its length (so text keys can
 * be printed directly). */
typedef struct ms_etcd_kv {
  char *key;
  size_t key_len;
  char *value;
  size_t value_len;
  int64_t create_revision;
  int64_t mod_revision;
  int64_t version;
  int64_t lease; /* 0: none */
} ms_etcd_kv;

/* Frees a kv filled by ms_etcd_leader(); a zeroed kv is fine. */
void ms_etcd_kv_release(ms_etcd_kv *kv);

typedef struct ms_etcd_range_opts {
  bool prefix;           /* every key starting with `key` */
  const void *range_end; /* or: keys in [key, range_end) ("\0" with length 1: all keys >= key) */
  size_t range_end_len;  /* 0: no range_end, unless prefix */
  int64_t limit;         /* 0: no limit */
  int64_t revision;      /* read at this revision; 0: latest */
  bool serializable;     /* answer from the local member, no quorum read */
  bool keys_only;        /* values come back empty */
  bool count_only;       /* only count (and revision) */
} ms_etcd_range_opts;

typedef struct ms_etcd_range_result {
  ms_etcd_kv *kvs; /* n_kvs, in key order; the result owns them */
  size_t n_kvs;
  int64_t count;    /* keys in the range (not limited) */
  bool more;        /* the limit cut the answer short */
  int64_t revision; /* the store's revision the read saw */
} ms_etcd_range_result;

/* Reads a key or range. `o` may be NULL (one key, latest, linearizable). *ret is
 * overwritten (not released) and filled only on success; release it with
 * ms_etcd_range_result_release(). OUT_OF_RANGE if o->revision is compacted. */
int ms_etcd_range(ms_etcd *e, const void *key, size_t key_len, const ms_etcd_range_opts *o,
                  ms_etcd_range_result *ret, ms_error **err);
void ms_etcd_range_result_release(ms_etcd_range_result *r);

/* Writes key = value, attached to `lease` (0: none). The new revision goes to
 * *ret_revision (may be NULL). INVALID_ARGUMENT, naming the key and the size, for a
 * value over max_request_bytes. NOT_FOUND if the lease does not exist. */
int ms_etcd_put(ms_etcd *e, const void *key, size_t key_len, const void *value, size_t value_len,
                int64_t lease, int64_t *ret_revision, ms_error **err);

/* Deletes a key, or every key under a prefix. Counts deleted keys into *ret_deleted
 * and the store's revision after it into *ret_revision (both may be NULL). Deleting
 * nothing is not an error. */
int ms_etcd_delete(ms_etcd *e, const void *key, size_t key_len, bool prefix, int64_t *ret_deleted,
                   int64_t *ret_revision, ms_error **err);

/* Compacts the history up to `revision`: older revisions can no longer be read or
 * watched (OUT_OF_RANGE). `physical` waits until the space is reclaimed. */
int ms_etcd_compact(ms_etcd *e, int64_t revision, bool physical, ms_error **err);

/* ---- transactions ---------------------------------------------------------------- */

typedef enum ms_etcd_target {
  MS_ETCD_TARGET_VERSION = 0, /* compare.number against the key's version (0: absent) */
  MS_ETCD_TARGET_CREATE,      /* create_revision; create-if-absent is CREATE EQUAL 0 */
  MS_ETCD_TARGET_MOD,         /* mod_revision: the usual compare-and-swap */
  MS_ETCD_TARGET_VALUE,       /* compare.value */
  MS_ETCD_TARGET_LEASE,       /* the attached lease id */
} ms_etcd_target;

typedef enum ms_etcd_cmp_result {
  MS_ETCD_EQUAL = 0,
  MS_ETCD_GREATER,
  MS_ETCD_LESS,
  MS_ETCD_NOT_EQUAL,
} ms_etcd_cmp_result;

typedef struct ms_etcd_compare {
  const void *key;
  size_t key_len;
  bool prefix; /* compare every key under the prefix (all must hold) */
  ms_etcd_target target;
  ms_etcd_cmp_result result;
  int64_t number;    /* VERSION, CREATE, MOD, LEASE */
  const void *value; /* VALUE */
  size_t value_len;
} ms_etcd_compare;

typedef enum ms_etcd_op_type {
  MS_ETCD_OP_RANGE = 0,
  MS_ETCD_OP_PUT,
  MS_ETCD_OP_DELETE,
} ms_etcd_op_type;

typedef struct ms_etcd_op {
  ms_etcd_op_type type;
  const void *key;
  size_t key_len;
  const void *value; /* PUT */
  size_t value_len;
  int64_t lease;                   /* PUT; 0: none */
  bool prefix;                     /* DELETE: the whole prefix */
  const ms_etcd_range_opts *range; /* RANGE: options (NULL: the one key) */
} ms_etcd_op;

typedef struct ms_etcd_op_result {
  ms_etcd_op_type type;
  ms_etcd_range_result range; /* RANGE: the result (owned by the txn result) */
  int64_t deleted;            /* DELETE: keys deleted */
} ms_etcd_op_result;

typedef struct ms_etcd_txn_result {
  bool succeeded;               /* the compares held and `success` ran; else `failure` ran */
  int64_t revision;             /* the store's revision after the txn */
  ms_etcd_op_result *responses; /* one per op of the branch that ran */
  size_t n_responses;
} ms_etcd_txn_result;

/* If every compare holds, runs `success`, else `failure`, atomically. *ret is filled
 * only on success (of the call: a failed compare is success with succeeded = false);
 * release it with ms_etcd_txn_result_release(). INVALID_ARGUMENT for a txn over
 * max_request_bytes (naming the biggest key) or with a bad enum. Never retried on
 * another endpoint once it may have been sent. */
int ms_etcd_txn(ms_etcd *e, const ms_etcd_compare *cmp, size_t n_cmp, const ms_etcd_op *success,
                size_t n_success, const ms_etcd_op *failure, size_t n_failure, ms_etcd_txn_result *ret,
                ms_error **err);
void ms_etcd_txn_result_release(ms_etcd_txn_result *r);

/* ---- leases -------------------------------------------------------------------- */

/* Grants a lease of ttl_s seconds; id 0 lets etcd choose. *ret_id and *ret_ttl (the
 * TTL etcd granted) may be NULL. */
int ms_etcd_lease_grant(ms_etcd *e, int64_t ttl_s, int64_t id, int64_t *ret_id, int64_t *ret_ttl,
                        ms_error **err);

/* Renews a lease once. NOT_FOUND ("lease `ID` expired or unknown") if etcd no longer
 * has it. *ret_ttl (may be NULL) gets the renewed TTL. */
int ms_etcd_lease_keepalive(ms_etcd *e, int64_t id, int64_t *ret_ttl, ms_error **err);

/* Revokes a lease, deleting every key attached to it. NOT_FOUND if unknown. */
int ms_etcd_lease_revoke(ms_etcd *e, int64_t id, ms_error **err);

typedef struct ms_etcd_lease_keeper ms_etcd_lease_keeper;

/* Called once, on the keeper's thread, when the lease is lost: etcd said it is gone
 * (NOT_FOUND) or no renewal succeeded for a whole TTL (the last error). The keeper
 * thread ends after the call; the owner still calls ms_etcd_lease_keeper_stop(). */
typedef void (*ms_etcd_lease_lost_fn)(void *arg, int64_t id, const ms_error *why);

/* Keeps lease `id` (granted with ttl_s) alive from a background thread, renewing every
 * ttl_s / 3 and retrying sooner after a failure. Free with ms_etcd_lease_keeper_stop()
 * (which joins the thread and leaves the lease to expire or to be revoked). */
ms_etcd_lease_keeper *ms_etcd_lease_keeper_start(ms_etcd *e, int64_t id, int64_t ttl_s,
                                                 ms_etcd_lease_lost_fn on_lost, void *arg, ms_error **err);
void ms_etcd_lease_keeper_stop(ms_etcd_lease_keeper *k);
/* When (ms_time_mono_ms) the last successful renewal was SENT, 0 before the first: the
 * lease lives at least until this + TTL on etcd's side, so a holder that must stop
 * acting the moment the lease may be gone (a fenced leader) counts from here. Any
 * thread. */
int64_t ms_etcd_lease_keeper_renewed_ms(ms_etcd_lease_keeper *k);

/* ---- watches ------------------------------------------------------------------- */

typedef enum ms_etcd_event_type {
  MS_ETCD_EVENT_PUT = 0,
  MS_ETCD_EVENT_DELETE,
} ms_etcd_event_type;

/* kv.mod_revision is the event's revision (for a DELETE, the deletion's revision;
 * its value is empty). */
typedef struct ms_etcd_event {
  ms_etcd_event_type type;
  ms_etcd_kv kv;
} ms_etcd_event;

typedef struct ms_etcd_watch_cb {
  /* Events in revision order; each revision exactly once, including across
   * reconnections. Borrowed for the call. Required. */
  void (*on_events)(void *arg, const ms_etcd_event *events, size_t n);
  /* The watch ended for good: OUT_OF_RANGE when the revision it needs was compacted
   * (the message names the requested and the compacted revision), or what etcd said
   * when it cancelled the watch. No further calls follow. Optional. */
  void (*on_error)(void *arg, const ms_error *err);
  /* The stream connected (why == NULL) or dropped (why says how); the watch keeps
   * reconnecting with backoff by itself. Informational, optional. */
  void (*on_connection)(void *arg, bool up, const ms_error *why);
} ms_etcd_watch_cb;

typedef struct ms_etcd_stream ms_etcd_watch;

/* Watches a key (or prefix) from start_revision (0: from now on; the client reads the
 * current revision first so "now" survives a reconnection) on a thread of its own,
 * over one long POST. After a dropped connection it reconnects (any endpoint, backoff
 * 100 ms doubling to 5 s) and resumes at the last delivered revision + 1. The cb
 * struct is copied. Stop and free with ms_etcd_watch_stop(). */
ms_etcd_watch *ms_etcd_watch_start(ms_etcd *e, const void *key, size_t key_len, bool prefix,
                                   int64_t start_revision, const ms_etcd_watch_cb *cb, void *arg,
                                   ms_error **err);

/* The revision the watch resumes from (last delivered + 1, or the start). Any thread. */
int64_t ms_etcd_watch_next_revision(ms_etcd_watch *w);

/* Ends the watch promptly (the connection is cut at once), joins its thread and frees
 * it; NULL is fine. Never from the watch's own callbacks. */
void ms_etcd_watch_stop(ms_etcd_watch *w);

/* ---- elections (etcd's v3election service) --------------------------------------- */

/* A campaign's proof of leadership: pass it to proclaim and resign. Owns name and key
 * (NUL-terminated past their lengths); release with ms_etcd_leader_key_release(). */
typedef struct ms_etcd_leader_key {
  char *name;
  size_t name_len;
  char *key;
  size_t key_len;
  int64_t rev;
  int64_t lease;
} ms_etcd_leader_key;
void ms_etcd_leader_key_release(ms_etcd_leader_key *k);

/* A flag another thread raises to abandon a blocking call (campaign) at once. */
typedef struct ms_etcd_cancel ms_etcd_cancel;
ms_etcd_cancel *ms_etcd_cancel_new(void);
/* Cancels the call using it now and any later call given it. Any thread. */
void ms_etcd_cancel_trigger(ms_etcd_cancel *c);
/* NULL is fine; no call may be using it. */
void ms_etcd_cancel_free(ms_etcd_cancel *c);

/* Campaigns for leadership of election `name` with `value`, holding `lease` (the
 * leadership ends when the lease does: keep it alive). Blocks until elected, until
 * timeout_ms passes (0: no limit; DEADLINE_EXCEEDED) or until `cancel` (may be NULL) is
 * triggered (CANCELLED; etcd withdraws the candidacy). *ret is filled on success. */
int ms_etcd_campaign(ms_etcd *e, const void *name, size_t name_len, int64_t lease, const void *value,
                     size_t value_len, int64_t timeout_ms, ms_etcd_cancel *cancel, ms_etcd_leader_key *ret,
                     ms_error **err);

/* The current leader's kv (its value is what it proclaimed). NOT_FOUND if none.
 * Release *ret with ms_etcd_kv_release(). */
int ms_etcd_leader(ms_etcd *e, const void *name, size_t name_len, ms_etcd_kv *ret, ms_error **err);

/* Updates the leader's value without a new election. FAILED_PRECONDITION (as etcd
 * says) if `leader` is no longer the leader. */
int ms_etcd_proclaim(ms_etcd *e, const ms_etcd_leader_key *leader, const void *value, size_t value_len,
                     ms_error **err);

/* Gives up leadership; the next candidate is elected. */
int ms_etcd_resign(ms_etcd *e, const ms_etcd_leader_key *leader, ms_error **err);

typedef struct ms_etcd_observe_cb {
  /* A leader was elected or proclaimed a new value. Also called with the current
   * leader on every (re)connection, so the same leader may be reported twice. */
  void (*on_leader)(void *arg, const ms_etcd_kv *leader);
  void (*on_error)(void *arg, const ms_error *err);               /* ended for good; optional */
  void (*on_connection)(void *arg, bool up, const ms_error *why); /* optional */
} ms_etcd_observe_cb;

typedef struct ms_etcd_stream ms_etcd_observe;

/* Follows election `name` on a thread of its own, reconnecting like a watch. Stop
 * and free with ms_etcd_observe_stop() (same rules as ms_etcd_watch_stop). */
ms_etcd_observe *ms_etcd_observe_start(ms_etcd *e, const void *name, size_t name_len,
                                       const ms_etcd_observe_cb *cb, void *arg, ms_error **err);
void ms_etcd_observe_stop(ms_etcd_observe *o);
