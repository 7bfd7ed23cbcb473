/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Batch and result descriptors on the project's msgpack codec (loki/wire.h):
 * encoded in place into a reserved ring slot (no allocation per message), and
 * decoded by a bounded reader that checks every length against the remaining
 * bytes and validates a whole record before handing out its first query.
 * Malformed records are LOKI_ECORRUPT; the wire format is in loki/batch.h.
 */
#include "loki/batch.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "loki/error.h"
#include "loki/ring.h"
#include "loki/wire.h"

/* ---- encode -------------------------------------------------------------------------------- */

#define DESC_HDR_MAX 26u   /* fixarray, kind, u64, u32, u32, array32 header */
#define DESC_QUERY_MAX 43u /* fixarray, u64, u32, u64, u64, u32, u32 */
#define RES_HDR_MAX 21u    /* fixarray, kind, u64, u32, array32 header */
#define RES_QUERY_MAX                                                                              \
    (18u + 20u + 2u + LOKI_BATCH_MSG_MAX) /* fixarray, u64, i32, fan-out                           \
array header (3), children ref, message */
#define RES_REF_MAX 20u                   /* fixarray, u64, u32, u32 */

size_t loki_batch_desc_max_size(uint32_t n_queries)
{
    return DESC_HDR_MAX + (size_t)n_queries * DESC_QUERY_MAX;
}

size_t loki_batch_result_max_size(const struct loki_batch_result *res)
{
    size_t n = RES_HDR_MAX;
    for (uint32_t i = 0; i < res->n_queries; i++) {
        const struct loki_batch_result_query *q = &res->queries[i];
        n += RES_QUERY_MAX + 5u * q->n_fanout;
        n += q->out_kind == LOKI_BATCH_OUT_INLINE ? 2u + q->inline_len : RES_REF_MAX;
    }
    return n;
}

size_t loki_batch_ring_capacity(uint32_t max_batch)
{
    if (max_batch < 1)
        max_batch = 1;
    if (max_batch > LOKI_BATCH_MAX_QUERIES)
        max_batch = LOKI_BATCH_MAX_QUERIES;
    size_t out =
        2u + LOKI_BATCH_INLINE_MAX > RES_REF_MAX ? 2u + LOKI_BATCH_INLINE_MAX : RES_REF_MAX;
    size_t res =
        RES_HDR_MAX + (size_t)max_batch * (RES_QUERY_MAX + 5u * LOKI_BATCH_MAX_CHILDREN + out);
    size_t desc = loki_batch_desc_max_size(max_batch);
    size_t rec = (res > desc ? res : desc) + 8; /* the ring's record header */
    /* a record may take at most half the ring (loki_ring_max_record), and a record that
     * does not fit before the end wraps: room for LOKI_MAX_BATCH_INFLIGHT of them twice */
    size_t need = 2 * LOKI_MAX_BATCH_INFLIGHT * rec, cap = (size_t)1 << 16;
    while (cap < need)
        cap <<= 1;
    return cap;
}

static void put_ref(struct loki_wire_writer *w, const struct loki_arena_ref *ref)
{
    loki_wire_put_array(w, 3);
    loki_wire_put_uint(w, ref->off);
    loki_wire_put_uint(w, ref->len);
    loki_wire_put_uint(w, ref->gen);
}

int loki_batch_desc_encode(const struct loki_batch_desc *d, void *buf, size_t cap, size_t *len)
{
    struct loki_wire_writer w;

    if (d->n_queries > LOKI_BATCH_MAX_QUERIES)
        return LOKI_ETOOBIG;
    if (d->n_queries && !d->queries)
        return -EINVAL;
    loki_wire_writer_init(&w, buf, cap);
    loki_wire_put_array(&w, 5);
    loki_wire_put_uint(&w, LOKI_BATCH_KIND_DESC);
    loki_wire_put_uint(&w, d->batch_id);
    loki_wire_put_uint(&w, d->instance_id);
    loki_wire_put_uint(&w, d->variant);
    loki_wire_put_array(&w, d->n_queries);
    /* a record that no longer fits stops early: -ENOBUFS either way */
    for (uint32_t i = 0; i < d->n_queries && loki_wire_writer_fits(&w); i++) {
        const struct loki_batch_query *q = &d->queries[i];
        loki_wire_put_array(&w, 6);
        loki_wire_put_uint(&w, q->query_id);
        loki_wire_put_uint(&w, q->sub_query_id);
        loki_wire_put_uint(&w, q->deadline_ns);
        loki_wire_put_uint(&w, q->payload.off);
        loki_wire_put_uint(&w, q->payload.len);
        loki_wire_put_uint(&w, q->payload.gen);
    }
    return loki_wire_writer_finish(&w, len);
}

int loki_batch_result_encode(const struct loki_batch_result *res, void *buf, size_t cap,
                             size_t *len)
{
    struct loki_wire_writer w;

    if (res->n_queries > LOKI_BATCH_MAX_QUERIES)
        return LOKI_ETOOBIG;
    if (res->n_queries && !res->queries)
        return -EINVAL;
    for (uint32_t i = 0; i < res->n_queries; i++) {
        const struct loki_batch_result_query *q = &res->queries[i];
        if (q->n_fanout > LOKI_BATCH_MAX_CHILDREN || q->out_kind > LOKI_BATCH_OUT_REF ||
            (q->out_kind == LOKI_BATCH_OUT_INLINE &&
             (q->inline_len > LOKI_BATCH_INLINE_MAX || (q->inline_len && !q->inline_data))) ||
            q->msg_len > LOKI_BATCH_MSG_MAX || (q->msg_len && !q->msg))
            return -EINVAL;
    }
    loki_wire_writer_init(&w, buf, cap);
    loki_wire_put_array(&w, 4);
    loki_wire_put_uint(&w, LOKI_BATCH_KIND_RESULT);
    loki_wire_put_uint(&w, res->batch_id);
    loki_wire_put_uint(&w, res->instance_id);
    loki_wire_put_array(&w, res->n_queries);
    for (uint32_t i = 0; i < res->n_queries && loki_wire_writer_fits(&w); i++) {
        const struct loki_batch_result_query *q = &res->queries[i];
        loki_wire_put_array(&w, 6);
        loki_wire_put_uint(&w, q->query_id);
        loki_wire_put_int(&w, q->status);
        switch (q->out_kind) {
        case LOKI_BATCH_OUT_NONE:
            loki_wire_put_nil(&w);
            break;
        case LOKI_BATCH_OUT_INLINE:
            loki_wire_put_bin(&w, q->inline_data, q->inline_len);
            break;
        case LOKI_BATCH_OUT_REF:
            put_ref(&w, &q->out_ref);
            break;
        }
        loki_wire_put_array(&w, q->n_fanout);
        for (uint32_t k = 0; k < q->n_fanout; k++)
            loki_wire_put_uint(&w, q->fanout[k]);
        if (q->children.len)
            put_ref(&w, &q->children);
        else
            loki_wire_put_nil(&w);
        if (q->msg_len)
            loki_wire_put_str(&w, q->msg, q->msg_len);
        else
            loki_wire_put_nil(&w);
    }
    return loki_wire_writer_finish(&w, len);
}

static int send_encoded(struct loki_ring *r, size_t max, const void *obj,
                        int (*enc)(const void *, void *, size_t, size_t *))
{
    size_t rmax = loki_ring_max_record(r);
    void *slot;
    size_t len;
    int err;

    if (max > rmax)
        max = rmax; /* the encoder reports -ENOBUFS if it really does not fit */
    err = loki_ring_reserve(r, max, &slot);
    if (err)
        return err;
    err = enc(obj, slot, max, &len);
    if (err)
        return err; /* the reservation is simply never committed */
    return loki_ring_commit(r, len);
}

static int enc_desc(const void *obj, void *buf, size_t cap, size_t *len)
{
    return loki_batch_desc_encode(obj, buf, cap, len);
}

static int enc_result(const void *obj, void *buf, size_t cap, size_t *len)
{
    return loki_batch_result_encode(obj, buf, cap, len);
}

int loki_batch_desc_send(struct loki_ring *r, const struct loki_batch_desc *d)
{
    if (d->n_queries > LOKI_BATCH_MAX_QUERIES)
        return LOKI_ETOOBIG;
    return send_encoded(r, loki_batch_desc_max_size(d->n_queries), d, enc_desc);
}

int loki_batch_result_send(struct loki_ring *r, const struct loki_batch_result *res)
{
    if (res->n_queries > LOKI_BATCH_MAX_QUERIES)
        return LOKI_ETOOBIG;
    return send_encoded(r, loki_batch_result_max_size(res), res, enc_result);
}

/* ---- decode -------------------------------------------------------------------------------- */

/* A reader over a record: malformed input is LOKI_ECORRUPT, no error text (nobody reads it). */
static void rd_init(struct loki_wire_reader *r, const void *buf, size_t len)
{
    loki_wire_reader_init(r, buf, len, LOKI_ECORRUPT, NULL, 0);
}

static int rd_fixed_array(struct loki_wire_reader *r, uint32_t want)
{
    uint32_t n;
    int err = loki_wire_read_array(r, 1, &n);
    return err ? err : n == want ? 0 : LOKI_ECORRUPT;
}

static int rd_u32(struct loki_wire_reader *r, uint32_t *v)
{
    uint64_t u;
    int err = loki_wire_read_uint(r, UINT32_MAX, &u);
    if (!err)
        *v = (uint32_t)u;
    return err;
}

static int rd_u64(struct loki_wire_reader *r, uint64_t *v)
{
    return loki_wire_read_uint(r, UINT64_MAX, v);
}

/* The three fields of an arena ref (its array header already read). */
static int rd_ref(struct loki_wire_reader *r, struct loki_arena_ref *ref)
{
    uint64_t off;
    uint32_t len, gen;
    int err = rd_u64(r, &off);
    if (!err)
        err = rd_u32(r, &len);
    if (!err)
        err = rd_u32(r, &gen);
    if (err)
        return err;
    ref->off = off;
    ref->len = len;
    ref->gen = gen;
    return 0;
}

static int rd_query(struct loki_wire_reader *r, struct loki_batch_query *q)
{
    uint64_t id, dl;
    uint32_t sub;
    int err = rd_fixed_array(r, 6);
    if (!err)
        err = rd_u64(r, &id);
    if (!err)
        err = rd_u32(r, &sub);
    if (!err)
        err = rd_u64(r, &dl);
    if (!err)
        err = rd_ref(r, &q->payload);
    if (err)
        return err;
    q->query_id = id;
    q->sub_query_id = sub;
    q->deadline_ns = dl;
    return 0;
}

static int rd_result(struct loki_wire_reader *r, struct loki_batch_result_query *q)
{
    uint64_t id;
    int64_t status;
    uint32_t n;
    struct loki_wire_val out;
    int err = rd_fixed_array(r, 6);
    if (!err)
        err = rd_u64(r, &id);
    if (!err)
        err = loki_wire_read_int(r, INT32_MIN, INT32_MAX, &status);
    if (!err)
        err = loki_wire_read(r, &out); /* nil | bin (inline) | [off, len, gen] */
    if (err)
        return err;
    q->query_id = id;
    q->status = (int32_t)status;
    q->out_kind = LOKI_BATCH_OUT_NONE;
    q->inline_data = NULL;
    q->inline_len = 0;
    memset(&q->out_ref, 0, sizeof(q->out_ref));
    if (out.kind == LOKI_WIRE_BIN) {
        if (out.len > LOKI_BATCH_INLINE_MAX)
            return LOKI_ECORRUPT;
        q->out_kind = LOKI_BATCH_OUT_INLINE;
        q->inline_data = out.ptr;
        q->inline_len = out.len;
    } else if (out.kind == LOKI_WIRE_ARRAY && out.len == 3) {
        err = rd_ref(r, &q->out_ref);
        if (err)
            return err;
        q->out_kind = LOKI_BATCH_OUT_REF;
    } else if (out.kind != LOKI_WIRE_NIL) {
        return LOKI_ECORRUPT;
    }
    err = loki_wire_read_array(r, 1, &n);
    if (err)
        return err;
    if (n > LOKI_BATCH_MAX_CHILDREN)
        return LOKI_ETOOBIG;
    q->n_fanout = n;
    for (uint32_t k = 0; k < n; k++) {
        err = rd_u32(r, &q->fanout[k]);
        if (err)
            return err;
    }
    struct loki_wire_val v;
    memset(&q->children, 0, sizeof(q->children));
    if ((err = loki_wire_read(r, &v))) /* nil | [off, len, gen] */
        return err;
    if (v.kind == LOKI_WIRE_ARRAY && v.len == 3) {
        if ((err = rd_ref(r, &q->children)))
            return err;
        if (!q->children.len)
            return LOKI_ECORRUPT;
    } else if (v.kind != LOKI_WIRE_NIL) {
        return LOKI_ECORRUPT;
    }
    q->msg = NULL;
    q->msg_len = 0;
    if ((err = loki_wire_read(r, &v))) /* nil | str */
        return err;
    if (v.kind == LOKI_WIRE_STR) {
        if (v.len > LOKI_BATCH_MSG_MAX)
            return LOKI_ECORRUPT;
        q->msg = (const char *)v.ptr;
        q->msg_len = v.len;
    } else if (v.kind != LOKI_WIRE_NIL) {
        return LOKI_ECORRUPT;
    }
    return 0;
}

int loki_batch_decode(const void *buf, size_t len, struct loki_batch_view *v)
{
    struct loki_wire_reader r;
    uint64_t kind, batch_id;
    uint32_t top, n, inst, variant = 0;
    int err;

    if (!buf || !v)
        return -EINVAL;
    rd_init(&r, buf, len);
    err = loki_wire_read_array(&r, 1, &top);
    if (!err)
        err = loki_wire_read_uint(&r, 0x7f, &kind);
    if (err)
        return err;
    if (!((kind == LOKI_BATCH_KIND_DESC && top == 5) ||
          (kind == LOKI_BATCH_KIND_RESULT && top == 4)))
        return LOKI_ECORRUPT;
    err = rd_u64(&r, &batch_id);
    if (!err)
        err = rd_u32(&r, &inst);
    if (!err && kind == LOKI_BATCH_KIND_DESC)
        err = rd_u32(&r, &variant);
    if (!err) /* smallest query: 7 bytes (desc) / 5 bytes (result) */
        err = loki_wire_read_array(&r, kind == LOKI_BATCH_KIND_DESC ? 7 : 5, &n);
    if (err)
        return err;
    if (n > LOKI_BATCH_MAX_QUERIES)
        return LOKI_ETOOBIG;

    size_t first = loki_wire_offset(&r);
    for (uint32_t i = 0; i < n; i++) {
        struct loki_batch_query q;
        struct loki_batch_result_query rq;
        err = kind == LOKI_BATCH_KIND_DESC ? rd_query(&r, &q) : rd_result(&r, &rq);
        if (err)
            return err;
    }
    if (loki_wire_left(&r))
        return LOKI_ECORRUPT; /* trailing bytes: not what the producer committed */

    v->kind = (enum loki_batch_kind)kind;
    v->batch_id = batch_id;
    v->instance_id = inst;
    v->variant = variant;
    v->n_queries = n;
    v->p_ = (const uint8_t *)buf + first;
    v->end_ = (const uint8_t *)buf + len;
    v->left_ = n;
    return 0;
}

int loki_batch_next_query(struct loki_batch_view *v, struct loki_batch_query *q)
{
    if (v->kind != LOKI_BATCH_KIND_DESC)
        return -EINVAL;
    if (v->left_ == 0)
        return 0;
    struct loki_wire_reader r;
    rd_init(&r, v->p_, (size_t)(v->end_ - v->p_));
    int err = rd_query(&r, q);
    if (err)
        return err; /* validated once: the record changed under us */
    v->p_ = r.p;
    v->left_--;
    return 1;
}

int loki_batch_next_result(struct loki_batch_view *v, struct loki_batch_result_query *q)
{
    if (v->kind != LOKI_BATCH_KIND_RESULT)
        return -EINVAL;
    if (v->left_ == 0)
        return 0;
    struct loki_wire_reader r;
    rd_init(&r, v->p_, (size_t)(v->end_ - v->p_));
    int err = rd_result(&r, q);
    if (err)
        return err; /* validated once: the record changed under us */
    v->p_ = r.p;
    v->left_--;
    return 1;
}
