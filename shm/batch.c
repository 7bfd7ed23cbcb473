/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Batch and result descriptors: msgpack-c packer writing into a bounded buffer
 * (a ring slot in place), and a hand-rolled bounded decoder. msgpack-c's own
 * unpacker allocates a zone per message; the decoder here reads the handful of
 * types the format uses, checks every length against the remaining bytes, and
 * validates a whole record before handing out its first query.
 */
#include "loki/batch.h"

#include <errno.h>
#include <msgpack.h>
#include <stdbool.h>
#include <string.h>

#include "loki/error.h"
#include "loki/ring.h"

/* ---- encode -------------------------------------------------------------------------------- */

struct wbuf {
    uint8_t *p;
    size_t len;
    size_t cap;
};

static int wbuf_write(void *data, const char *buf, size_t len)
{
    struct wbuf *w = data;
    if (len > w->cap - w->len)
        return -1; /* msgpack-c stops packing and returns this */
    if (len) {
        memcpy(w->p + w->len, buf, len);
        w->len += len;
    }
    return 0;
}

#define DESC_HDR_MAX 26u   /* fixarray, kind, u64, u32, u32, array32 header */
#define DESC_QUERY_MAX 43u /* fixarray, u64, u32, u64, u64, u32, u32 */
#define RES_HDR_MAX 21u    /* fixarray, kind, u64, u32, array32 header */
#define RES_QUERY_MAX 18u  /* fixarray, u64, i32, fan-out array header (3) */
#define RES_REF_MAX 20u    /* fixarray, u64, u32, u32 */

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

static int pack_ref(msgpack_packer *pk, const struct loki_arena_ref *ref)
{
    return msgpack_pack_array(pk, 3) | msgpack_pack_uint64(pk, ref->off) |
           msgpack_pack_uint32(pk, ref->len) | msgpack_pack_uint32(pk, ref->gen);
}

int loki_batch_desc_encode(const struct loki_batch_desc *d, void *buf, size_t cap, size_t *len)
{
    struct wbuf w = {.p = buf, .cap = cap};
    msgpack_packer pk;
    int bad;

    if (d->n_queries > LOKI_BATCH_MAX_QUERIES)
        return LOKI_ETOOBIG;
    if (d->n_queries && !d->queries)
        return -EINVAL;
    msgpack_packer_init(&pk, &w, wbuf_write);
    bad = msgpack_pack_array(&pk, 5) | msgpack_pack_uint8(&pk, LOKI_BATCH_KIND_DESC) |
          msgpack_pack_uint64(&pk, d->batch_id) | msgpack_pack_uint32(&pk, d->instance_id) |
          msgpack_pack_uint32(&pk, d->variant) | msgpack_pack_array(&pk, d->n_queries);
    for (uint32_t i = 0; i < d->n_queries && !bad; i++) {
        const struct loki_batch_query *q = &d->queries[i];
        bad = msgpack_pack_array(&pk, 6) | msgpack_pack_uint64(&pk, q->query_id) |
              msgpack_pack_uint32(&pk, q->sub_query_id) | msgpack_pack_uint64(&pk, q->deadline_ns) |
              msgpack_pack_uint64(&pk, q->payload.off) | msgpack_pack_uint32(&pk, q->payload.len) |
              msgpack_pack_uint32(&pk, q->payload.gen);
    }
    if (bad)
        return -ENOBUFS;
    *len = w.len;
    return 0;
}

int loki_batch_result_encode(const struct loki_batch_result *res, void *buf, size_t cap,
                             size_t *len)
{
    struct wbuf w = {.p = buf, .cap = cap};
    msgpack_packer pk;
    int bad;

    if (res->n_queries > LOKI_BATCH_MAX_QUERIES)
        return LOKI_ETOOBIG;
    if (res->n_queries && !res->queries)
        return -EINVAL;
    for (uint32_t i = 0; i < res->n_queries; i++) {
        const struct loki_batch_result_query *q = &res->queries[i];
        if (q->n_fanout > LOKI_BATCH_MAX_CHILDREN || q->out_kind > LOKI_BATCH_OUT_REF ||
            (q->out_kind == LOKI_BATCH_OUT_INLINE &&
             (q->inline_len > LOKI_BATCH_INLINE_MAX || (q->inline_len && !q->inline_data))))
            return -EINVAL;
    }
    msgpack_packer_init(&pk, &w, wbuf_write);
    bad = msgpack_pack_array(&pk, 4) | msgpack_pack_uint8(&pk, LOKI_BATCH_KIND_RESULT) |
          msgpack_pack_uint64(&pk, res->batch_id) | msgpack_pack_uint32(&pk, res->instance_id) |
          msgpack_pack_array(&pk, res->n_queries);
    for (uint32_t i = 0; i < res->n_queries && !bad; i++) {
        const struct loki_batch_result_query *q = &res->queries[i];
        bad = msgpack_pack_array(&pk, 4) | msgpack_pack_uint64(&pk, q->query_id) |
              msgpack_pack_int32(&pk, q->status);
        switch (q->out_kind) {
        case LOKI_BATCH_OUT_NONE:
            bad |= msgpack_pack_nil(&pk);
            break;
        case LOKI_BATCH_OUT_INLINE:
            bad |= msgpack_pack_bin_with_body(&pk, q->inline_data, q->inline_len);
            break;
        case LOKI_BATCH_OUT_REF:
            bad |= pack_ref(&pk, &q->out_ref);
            break;
        }
        bad |= msgpack_pack_array(&pk, q->n_fanout);
        for (uint32_t k = 0; k < q->n_fanout; k++)
            bad |= msgpack_pack_uint32(&pk, q->fanout[k]);
    }
    if (bad)
        return -ENOBUFS;
    *len = w.len;
    return 0;
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

struct rd {
    const uint8_t *p;
    const uint8_t *end;
};

static uint64_t be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Any msgpack integer; *@neg set when it is negative (then *@v holds the two's complement). */
static int rd_int(struct rd *r, uint64_t *v, bool *neg)
{
    if (r->p >= r->end)
        return LOKI_ECORRUPT;
    uint8_t t = *r->p++;
    size_t n;
    bool sgn = false;

    *neg = false;
    if (t <= 0x7f) {
        *v = t;
        return 0;
    }
    if (t >= 0xe0) {
        *v = (uint64_t)(int64_t)(int8_t)t;
        *neg = true;
        return 0;
    }
    switch (t) {
    case 0xcc:
        n = 1;
        break;
    case 0xcd:
        n = 2;
        break;
    case 0xce:
        n = 4;
        break;
    case 0xcf:
        n = 8;
        break;
    case 0xd0:
        n = 1;
        sgn = true;
        break;
    case 0xd1:
        n = 2;
        sgn = true;
        break;
    case 0xd2:
        n = 4;
        sgn = true;
        break;
    case 0xd3:
        n = 8;
        sgn = true;
        break;
    default:
        return LOKI_ECORRUPT;
    }
    if ((size_t)(r->end - r->p) < n)
        return LOKI_ECORRUPT;
    uint64_t u = be(r->p, n);
    r->p += n;
    if (sgn && n < 8 && (u >> (8 * n - 1)) & 1)
        u |= ~0ull << (8 * n); /* sign-extend */
    *v = u;
    *neg = sgn && (int64_t)u < 0;
    return 0;
}

static int rd_uint(struct rd *r, uint64_t max, uint64_t *v)
{
    bool neg;
    int err = rd_int(r, v, &neg);
    if (err)
        return err;
    return neg || *v > max ? LOKI_ECORRUPT : 0;
}

static int rd_i32(struct rd *r, int32_t *v)
{
    uint64_t u;
    bool neg;
    int err = rd_int(r, &u, &neg);
    if (err)
        return err;
    int64_t s = (int64_t)u;
    if ((!neg && u > INT32_MAX) || (neg && s < INT32_MIN))
        return LOKI_ECORRUPT;
    *v = (int32_t)s;
    return 0;
}

/* Array header; the count is bounded by the bytes left at @min_elem bytes per element. */
static int rd_array(struct rd *r, size_t min_elem, uint32_t *n)
{
    if (r->p >= r->end)
        return LOKI_ECORRUPT;
    uint8_t t = *r->p++;
    uint64_t c;
    if ((t & 0xf0) == 0x90) {
        c = t & 0x0f;
    } else if (t == 0xdc || t == 0xdd) {
        size_t k = t == 0xdc ? 2 : 4;
        if ((size_t)(r->end - r->p) < k)
            return LOKI_ECORRUPT;
        c = be(r->p, k);
        r->p += k;
    } else {
        return LOKI_ECORRUPT;
    }
    if (c > (uint64_t)(r->end - r->p) / min_elem)
        return LOKI_ECORRUPT;
    *n = (uint32_t)c;
    return 0;
}

static int rd_fixed_array(struct rd *r, uint32_t want)
{
    uint32_t n;
    int err = rd_array(r, 1, &n);
    return err ? err : n == want ? 0 : LOKI_ECORRUPT;
}

static int rd_ref(struct rd *r, struct loki_arena_ref *ref, bool with_header)
{
    uint64_t off, len, gen;
    int err = with_header ? rd_fixed_array(r, 3) : 0;
    if (!err)
        err = rd_uint(r, UINT64_MAX, &off);
    if (!err)
        err = rd_uint(r, UINT32_MAX, &len);
    if (!err)
        err = rd_uint(r, UINT32_MAX, &gen);
    if (err)
        return err;
    ref->off = off;
    ref->len = (uint32_t)len;
    ref->gen = (uint32_t)gen;
    return 0;
}

static int rd_query(struct rd *r, struct loki_batch_query *q)
{
    uint64_t id, sub, dl;
    int err = rd_fixed_array(r, 6);
    if (!err)
        err = rd_uint(r, UINT64_MAX, &id);
    if (!err)
        err = rd_uint(r, UINT32_MAX, &sub);
    if (!err)
        err = rd_uint(r, UINT64_MAX, &dl);
    if (!err)
        err = rd_ref(r, &q->payload, false);
    if (err)
        return err;
    q->query_id = id;
    q->sub_query_id = (uint32_t)sub;
    q->deadline_ns = dl;
    return 0;
}

static int rd_result(struct rd *r, struct loki_batch_result_query *q)
{
    uint64_t id;
    uint32_t n;
    int err = rd_fixed_array(r, 4);
    if (!err)
        err = rd_uint(r, UINT64_MAX, &id);
    if (!err)
        err = rd_i32(r, &q->status);
    if (err || r->p >= r->end)
        return err ? err : LOKI_ECORRUPT;
    q->query_id = id;
    q->out_kind = LOKI_BATCH_OUT_NONE;
    q->inline_data = NULL;
    q->inline_len = 0;
    memset(&q->out_ref, 0, sizeof(q->out_ref));
    uint8_t t = *r->p;
    if (t == 0xc0) {
        r->p++;
    } else if (t == 0xc4 || t == 0xc5 || t == 0xc6) {
        size_t k = t == 0xc4 ? 1 : t == 0xc5 ? 2 : 4;
        r->p++;
        if ((size_t)(r->end - r->p) < k)
            return LOKI_ECORRUPT;
        uint64_t len = be(r->p, k);
        r->p += k;
        if (len > LOKI_BATCH_INLINE_MAX || len > (uint64_t)(r->end - r->p))
            return LOKI_ECORRUPT;
        q->out_kind = LOKI_BATCH_OUT_INLINE;
        q->inline_data = r->p;
        q->inline_len = (uint32_t)len;
        r->p += len;
    } else {
        err = rd_ref(r, &q->out_ref, true);
        if (err)
            return err;
        q->out_kind = LOKI_BATCH_OUT_REF;
    }
    err = rd_array(r, 1, &n);
    if (err)
        return err;
    if (n > LOKI_BATCH_MAX_CHILDREN)
        return LOKI_ETOOBIG;
    q->n_fanout = n;
    for (uint32_t k = 0; k < n; k++) {
        uint64_t f;
        err = rd_uint(r, UINT32_MAX, &f);
        if (err)
            return err;
        q->fanout[k] = (uint32_t)f;
    }
    return 0;
}

int loki_batch_decode(const void *buf, size_t len, struct loki_batch_view *v)
{
    struct rd r = {.p = buf, .end = (const uint8_t *)buf + len};
    uint64_t kind, batch_id, inst, variant = 0;
    uint32_t top, n;
    int err;

    if (!buf || !v)
        return -EINVAL;
    err = rd_array(&r, 1, &top);
    if (!err)
        err = rd_uint(&r, 0x7f, &kind);
    if (err)
        return err;
    if (!((kind == LOKI_BATCH_KIND_DESC && top == 5) ||
          (kind == LOKI_BATCH_KIND_RESULT && top == 4)))
        return LOKI_ECORRUPT;
    err = rd_uint(&r, UINT64_MAX, &batch_id);
    if (!err)
        err = rd_uint(&r, UINT32_MAX, &inst);
    if (!err && kind == LOKI_BATCH_KIND_DESC)
        err = rd_uint(&r, UINT32_MAX, &variant);
    if (!err) /* smallest query: 7 bytes (desc) / 5 bytes (result) */
        err = rd_array(&r, kind == LOKI_BATCH_KIND_DESC ? 7 : 5, &n);
    if (err)
        return err;
    if (n > LOKI_BATCH_MAX_QUERIES)
        return LOKI_ETOOBIG;

    const uint8_t *first = r.p;
    for (uint32_t i = 0; i < n; i++) {
        struct loki_batch_query q;
        struct loki_batch_result_query rq;
        err = kind == LOKI_BATCH_KIND_DESC ? rd_query(&r, &q) : rd_result(&r, &rq);
        if (err)
            return err;
    }
    if (r.p != r.end)
        return LOKI_ECORRUPT; /* trailing bytes: not what the producer committed */

    v->kind = (enum loki_batch_kind)kind;
    v->batch_id = batch_id;
    v->instance_id = (uint32_t)inst;
    v->variant = (uint32_t)variant;
    v->n_queries = n;
    v->p_ = first;
    v->end_ = r.end;
    v->left_ = n;
    return 0;
}

int loki_batch_next_query(struct loki_batch_view *v, struct loki_batch_query *q)
{
    if (v->kind != LOKI_BATCH_KIND_DESC)
        return -EINVAL;
    if (v->left_ == 0)
        return 0;
    struct rd r = {.p = v->p_, .end = v->end_};
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
    struct rd r = {.p = v->p_, .end = v->end_};
    int err = rd_result(&r, q);
    if (err)
        return err; /* validated once: the record changed under us */
    v->p_ = r.p;
    v->left_--;
    return 1;
}
