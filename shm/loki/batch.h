/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Batch descriptors (router -> worker) and result descriptors (worker ->
 * router), msgpack-encoded straight into ring records with the project's codec
 * (loki/wire.h): the writer targets the caller's buffer or the reserved ring
 * slot, so no allocation per message. Decoding is bounded: every count and
 * length read from the wire is checked against the bytes that remain, the whole
 * record is validated before the first query is handed out, and payload bytes
 * are never copied (payloads are arena refs; small inline outputs point into
 * the record).
 *
 * Wire format (msgpack arrays; integers in their shortest msgpack form):
 *   batch  = [1, batch_id u64, instance_id u32, variant u32, [query...]]
 *   query  = [query_id u64, sub_query_id u32, deadline_ns u64, off u64, len u32, gen u32]
 *   result = [2, batch_id u64, instance_id u32, [rquery...]]
 *   rquery = [query_id u64, status i32, output, [fanout u32...]]
 *   output = nil | bin (<= 64 B, inline) | [off u64, len u32, gen u32] (arena)
 */
#ifndef LOKI_BATCH_H
#define LOKI_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "loki/limits.h"
#include "loki/shm_layout.h" /* struct loki_arena_ref */

struct loki_ring;

/* per descriptor; larger counts are LOKI_ETOOBIG (the caps of loki/limits.h) */
#define LOKI_BATCH_MAX_QUERIES ((uint32_t)LOKI_MAX_BATCH)
#define LOKI_BATCH_MAX_CHILDREN ((uint32_t)LOKI_MAX_CHILDREN)    /* fan-out entries per query */
#define LOKI_BATCH_INLINE_MAX ((uint32_t)LOKI_MAX_INLINE_OUTPUT) /* largest inline output */
#define LOKI_BATCH_MSG_MAX 95u /* bytes of a failed query's message */

enum loki_batch_kind {
    LOKI_BATCH_KIND_DESC = 1,
    LOKI_BATCH_KIND_RESULT = 2,
};

/* One query of a batch. */
struct loki_batch_query {
    uint64_t query_id;
    uint32_t sub_query_id;
    uint64_t deadline_ns; /* absolute, CLOCK_MONOTONIC */
    struct loki_arena_ref payload;
};

/* A batch for one instance (encode input). @queries borrowed. */
struct loki_batch_desc {
    uint64_t batch_id;
    uint32_t instance_id;
    uint32_t variant;
    uint32_t n_queries;
    const struct loki_batch_query *queries;
};

enum loki_batch_out {
    LOKI_BATCH_OUT_NONE = 0,
    LOKI_BATCH_OUT_INLINE = 1, /* @inline_data / @inline_len */
    LOKI_BATCH_OUT_REF = 2,    /* @out_ref */
};

/* Per-query result (encode input, decode output). */
struct loki_batch_result_query {
    uint64_t query_id;
    int32_t status; /* 0 ok; otherwise a negative error code or an application status */
    enum loki_batch_out out_kind;
    struct loki_arena_ref out_ref;
    const void *inline_data;                  /* decode: points into the record (zero copy) */
    uint32_t inline_len;                      /* <= LOKI_BATCH_INLINE_MAX */
    uint32_t n_fanout;                        /* <= LOKI_BATCH_MAX_CHILDREN */
    uint32_t fanout[LOKI_BATCH_MAX_CHILDREN]; /* sub-queries created per child task */
    /* The children's payloads: a table of sum(fanout) struct loki_arena_ref (child task 0's
     * first, in order) in the worker's output arena; len 0: every child's payload is empty. */
    struct loki_arena_ref children;
    const char *msg;  /* status != 0: why (decode: points into the record), may be NULL */
    uint32_t msg_len; /* <= LOKI_BATCH_MSG_MAX */
};

/* A batch result (encode input). @queries borrowed. */
struct loki_batch_result {
    uint64_t batch_id;
    uint32_t instance_id;
    uint32_t n_queries;
    const struct loki_batch_result_query *queries;
};

/* Decoding cursor over a validated record; fields public, @p_/@end_/@left_ private. */
struct loki_batch_view {
    enum loki_batch_kind kind;
    uint64_t batch_id;
    uint32_t instance_id;
    uint32_t variant; /* descriptors only */
    uint32_t n_queries;
    const uint8_t *p_;
    const uint8_t *end_;
    uint32_t left_;
};

/* ---- sizes --------------------------------------------------------------------------------- */

/* Upper bound of the encoded size of a descriptor with @n_queries queries. Any thread. */
size_t loki_batch_desc_max_size(uint32_t n_queries);
/* Upper bound of the encoded size of result @res (depends on inline sizes). Any thread. */
size_t loki_batch_result_max_size(const struct loki_batch_result *res);
/*
 * Capacity (a power of two, at least 64 KiB) of a ring that holds LOKI_MAX_BATCH_INFLIGHT
 * records of the largest descriptor or result of @max_batch queries (each with
 * LOKI_BATCH_MAX_CHILDREN fan-out counts and a LOKI_BATCH_INLINE_MAX inline output), so a
 * batch the plan allows always fits a worker's rings. @max_batch is clamped to
 * 1..LOKI_BATCH_MAX_QUERIES. Any thread.
 */
size_t loki_batch_ring_capacity(uint32_t max_batch);

/* ---- encode: any thread, no allocation ----------------------------------------------------- */

/*
 * loki_batch_desc_encode - encode @d into @buf (@cap bytes); *@len gets the size.
 * Errors: -ENOBUFS (does not fit @cap), LOKI_ETOOBIG (more than
 * LOKI_BATCH_MAX_QUERIES), -EINVAL (NULL queries with n > 0). All borrowed.
 */
int loki_batch_desc_encode(const struct loki_batch_desc *d, void *buf, size_t cap, size_t *len);

/*
 * loki_batch_result_encode - encode @res into @buf; as loki_batch_desc_encode(),
 * plus -EINVAL for an inline output over LOKI_BATCH_INLINE_MAX or more than
 * LOKI_BATCH_MAX_CHILDREN fan-out entries.
 */
int loki_batch_result_encode(const struct loki_batch_result *res, void *buf, size_t cap,
                             size_t *len);

/*
 * loki_batch_desc_send / loki_batch_result_send - reserve a ring slot of the
 * maximum size, encode into it in place, commit the actual size. Never blocks:
 * -EAGAIN when the ring is full (loki_ring_wait() with the max size), plus the
 * encode and reserve errors. The ring's producer thread.
 */
int loki_batch_desc_send(struct loki_ring *r, const struct loki_batch_desc *d);
int loki_batch_result_send(struct loki_ring *r, const struct loki_batch_result *res);

/* ---- decode: any thread, no allocation, nothing copied -------------------------------------- */

/*
 * loki_batch_decode - validate the whole record @buf/@len (a descriptor or a
 * result) and set up @v to iterate its queries. @buf must stay valid (e.g. not
 * consumed from the ring) while @v is used.
 * Errors: LOKI_ECORRUPT (malformed, truncated, trailing bytes, a count larger
 * than the bytes could hold, an out-of-range integer), LOKI_ETOOBIG (more than
 * LOKI_BATCH_MAX_QUERIES queries or LOKI_BATCH_MAX_CHILDREN fan-outs).
 */
int loki_batch_decode(const void *buf, size_t len, struct loki_batch_view *v);

/*
 * loki_batch_next_query / loki_batch_next_result - the next query of a
 * validated descriptor / result. Returns 1 with *@q filled, 0 at the end,
 * -EINVAL on a view of the other kind. Result inline data points into the record.
 */
int loki_batch_next_query(struct loki_batch_view *v, struct loki_batch_query *q);
int loki_batch_next_result(struct loki_batch_view *v, struct loki_batch_result_query *q);

#endif
