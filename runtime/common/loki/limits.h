/* SPDX-License-Identifier: Apache-2.0 */
/*
 * loki/limits.h: every compile-time cap of the project in one place, so that the topology
 * loader refuses exactly what the planner, the router, the batch descriptors and lokid
 * cannot carry. A cap here is the one definition; modules that named their own (the batch
 * descriptor's, the backend ABI's) define theirs as these. docs/topology.md's ranges follow.
 *
 *   topology ─ batch sizes ≤ LOKI_MAX_BATCH ─▶ planner ─ plan ≤ LOKI_MAX_INSTANCES ─▶ router
 *   router ─ batch of ≤ LOKI_MAX_BATCH, instance id < LOKI_MAX_INSTANCE_IDS ─▶ lokid/supervisor
 *   worker ─ ≤ LOKI_MAX_CHILDREN fan-out counts per query ─▶ router
 */
#ifndef LOKI_LIMITS_H
#define LOKI_LIMITS_H

/* The pipeline model (topology file, planner). */
#define LOKI_MAX_PIPELINES 4 /* pipelines in one topology */
#define LOKI_MAX_TASKS 16    /* tasks per pipeline */
#define LOKI_MAX_VARIANTS 16 /* variants per task */
#define LOKI_MAX_CHILDREN 8  /* child tasks per task: fan-out counts per result query */
#define LOKI_MAX_BATCHES 64  /* profiled batch sizes per variant (the Loki artifact: 1..64) */
#define LOKI_MAX_SHARES 8    /* profiled GPU shares per variant */
#define LOKI_MAX_GPUS 1024   /* gpus.count */

/* Batches: the largest profiled batch size, so the largest batch the router forms, a batch
 * descriptor carries and a worker runs (its rings are sized for it). */
#define LOKI_MAX_BATCH 4096

/* Instances: a plan has at most LOKI_MAX_INSTANCES; while a new plan starts beside the old
 * one (make-before-break) both are live, so instance ids run below LOKI_MAX_INSTANCE_IDS
 * (the router's, lokid's and the supervisor's tables). */
#define LOKI_MAX_INSTANCES 1024
#define LOKI_MAX_INSTANCE_IDS (2 * LOKI_MAX_INSTANCES)

/* Batches a worker holds at once: one running, one staged behind it in its ring. */
#define LOKI_MAX_BATCH_INFLIGHT 2

/* Outputs: a worker's output of one query travels inline in its result up to this size;
 * a reply carries the outputs of at most LOKI_MAX_REPLY_OUTPUTS leaves (more are counted). */
#define LOKI_MAX_INLINE_OUTPUT 64
#define LOKI_MAX_REPLY_OUTPUTS 32

/* Data a query emits (its output and child payloads together): a variant's max_output_bytes
 * is at most this; child sub-queries one query may create, over all its child tasks. */
#define LOKI_MAX_OUTPUT_BYTES (256u << 20)
#define LOKI_DEFAULT_OUTPUT_BYTES (1u << 20)
#define LOKI_MAX_QUERY_CHILDREN 4096
/* Nodes (answered sub-queries) in one reply's result tree. */
#define LOKI_MAX_REPLY_NODES 65536

/* Backend arguments: a variant's `args:` map has at most LOKI_MAX_ARGS entries; all the
 * topology's argument and description strings share LOKI_MAX_STRINGS bytes. */
#define LOKI_MAX_ARGS 32
#define LOKI_MAX_STRINGS (64u << 10)

#endif
