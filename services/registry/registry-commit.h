/* Group commit: writes that arrive together go to etcd as one transaction, and so
 * do reads. etcd pays per transaction (one raft entry, one fsync), so a group of
 * N writes costs about what one does.
 *
 * Semantics are per write, as if each ran alone: a write's expectations are
 * compares in the shared transaction. If any compare fails, nothing of the group is
 * applied; the failure branch reads every key, each write whose expectations did
 * not hold is refused (ABORTED / NOT_FOUND, naming the record), and the others are
 * committed again at once, in the next group. A client Batch is one write with
 * several plans: all of its plans apply together or none does. Two writes to the
 * same key never share a group.
 *
 * Threads: committer threads pull groups from one FIFO; `done` runs on them.
 * Ownership: the op and its plans stay the submitter's; the committer fills in
 * the result fields and calls done exactly once, after which it never touches the
 * op again. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "meseta/etcd.h"
#include "meseta/v1/registry.pb-c.h"

#include "registry-records.h"

typedef struct reg_plan {
  reg_kind kind;
  char *id;
  char *key;
  uint8_t *value; /* the packed record; NULL for a delete */
  size_t value_len;
  Meseta__V1__Expect__ExpectCase expect; /* absent, revision or any */
  int64_t expect_revision;
} reg_plan;

void reg_plan_release(reg_plan *p);

typedef struct reg_op reg_op;
struct reg_op {
  bool read;
  /* A write: its plans. A read: one plan naming the key (value NULL). */
  reg_plan *plans;
  size_t n_plans;
  const char *field; /* for messages: "expect" or "writes" */

  /* Results. */
  ms_error *err;    /* set on failure; the done callback takes it */
  int64_t revision; /* a write's commit revision */
  bool found;       /* a read: the record exists */
  uint8_t *value;   /* a read: its bytes (the op owns them) */
  size_t value_len;
  int64_t mod_revision;

  void (*done)(reg_op *op);
  void *arg;
  reg_op *next; /* the committer's queue */
};

typedef struct reg_committer reg_committer;

reg_committer *reg_committer_new(ms_etcd *etcd, size_t threads, ms_error **err);
/* What may wait for a committer: requests, and the bytes of their keys and values.
 * Past either a submit is refused, so clients that send faster than etcd commits meet
 * RESOURCE_EXHAUSTED instead of a growing queue. */
#define REG_MAX_QUEUED 4096
#define REG_MAX_QUEUED_BYTES (16u * 1024 * 1024)
/* Queues an op; done is called later on a committer thread. Any thread. Past the
 * bounds above, queues nothing and fails with RESOURCE_EXHAUSTED ("registry busy: N
 * requests (K KiB) already queued"); done is then never called. */
int reg_committer_submit(reg_committer *c, reg_op *op, ms_error **err);
/* Finishes what is queued, stops the threads, frees. NULL is fine. */
void reg_committer_free(reg_committer *c);
