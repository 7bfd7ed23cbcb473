/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Batch and result descriptors: round trips (boundary values, every output
 * kind), the bytes msgpack-c wrote for the same records (the format predates
 * loki/wire.h), encoding in place into ring slots, and a decoder that refuses
 * every truncated, padded, oversized or mutated record instead of reading past it.
 */
#include "harness.h"

#include <msgpack.h>
#include <sys/mman.h>
#include <unistd.h>

#include "loki/batch.h"
#include "loki/error.h"
#include "loki/ring.h"
#include "shm_test.h"

static struct loki_batch_query qs[5] = {
    {.query_id = 0, .sub_query_id = 0, .deadline_ns = 0, .payload = {0, 1, 1}},
    {.query_id = 1, .sub_query_id = 7, .deadline_ns = 123456789, .payload = {256, 300, 2}},
    {.query_id = UINT64_MAX,
     .sub_query_id = UINT32_MAX,
     .deadline_ns = UINT64_MAX,
     .payload = {UINT64_MAX, UINT32_MAX, UINT32_MAX}},
    {.query_id = 1ull << 40, .sub_query_id = 65536, .deadline_ns = 1, .payload = {1 << 20, 0, 9}},
    {.query_id = 127, .sub_query_id = 128, .deadline_ns = 255, .payload = {65535, 65536, 3}},
};

static const struct loki_batch_desc desc = {.batch_id = 0xfeedfacecafebeefull,
                                            .instance_id = 42,
                                            .variant = 3,
                                            .n_queries = 5,
                                            .queries = qs};

static const uint8_t inline_out[64] = {1, 2, 3, 4, 5, 6, 7, 8};

static struct loki_batch_result_query rqs[4] = {
    {.query_id = 5, .status = 0, .out_kind = LOKI_BATCH_OUT_NONE, .n_fanout = 0},
    {.query_id = 6,
     .status = -4995,
     .out_kind = LOKI_BATCH_OUT_INLINE,
     .inline_data = inline_out,
     .inline_len = 64,
     .n_fanout = 2,
     .fanout = {18, 0},
     .msg = "the model refused the input shape",
     .msg_len = 33},
    {.query_id = UINT64_MAX,
     .status = INT32_MIN,
     .out_kind = LOKI_BATCH_OUT_REF,
     .out_ref = {4096, 1000, 77},
     .n_fanout = LOKI_BATCH_MAX_CHILDREN, /* the most, with the largest count */
     .fanout = {1, 2, 3, 4, 5, 6, 7, UINT32_MAX},
     .children = {1u << 20, 16 * 28, 5}},
    {.query_id = 9, .status = INT32_MAX, .out_kind = LOKI_BATCH_OUT_INLINE, .inline_len = 0},
};

static const struct loki_batch_result result = {
    .batch_id = 77, .instance_id = 1, .n_queries = 4, .queries = rqs};

static void check_desc(const void *buf, size_t len)
{
    struct loki_batch_view v;
    struct loki_batch_query q;
    assert_int_equal(loki_batch_decode(buf, len, &v), 0);
    assert_int_equal(v.kind, LOKI_BATCH_KIND_DESC);
    assert_true(v.batch_id == desc.batch_id);
    assert_int_equal(v.instance_id, 42);
    assert_int_equal(v.variant, 3);
    assert_int_equal(v.n_queries, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(loki_batch_next_query(&v, &q), 1);
        assert_true(q.query_id == qs[i].query_id);
        assert_int_equal(q.sub_query_id, qs[i].sub_query_id);
        assert_true(q.deadline_ns == qs[i].deadline_ns);
        assert_memory_equal(&q.payload, &qs[i].payload, sizeof(q.payload));
    }
    assert_int_equal(loki_batch_next_query(&v, &q), 0);
    struct loki_batch_result_query rq;
    assert_int_equal(loki_batch_next_result(&v, &rq), -EINVAL);
}

static void check_result(const void *buf, size_t len)
{
    struct loki_batch_view v;
    struct loki_batch_result_query q;
    assert_int_equal(loki_batch_decode(buf, len, &v), 0);
    assert_int_equal(v.kind, LOKI_BATCH_KIND_RESULT);
    assert_int_equal(v.batch_id, 77);
    assert_int_equal(v.n_queries, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(loki_batch_next_result(&v, &q), 1);
        assert_true(q.query_id == rqs[i].query_id);
        assert_int_equal(q.status, rqs[i].status);
        assert_int_equal(q.out_kind, rqs[i].out_kind);
        assert_int_equal(q.n_fanout, rqs[i].n_fanout);
        assert_memory_equal(q.fanout, rqs[i].fanout, q.n_fanout * sizeof(uint32_t));
        if (q.out_kind == LOKI_BATCH_OUT_REF)
            assert_memory_equal(&q.out_ref, &rqs[i].out_ref, sizeof(q.out_ref));
        assert_memory_equal(&q.children, &rqs[i].children, sizeof(q.children));
        assert_int_equal(q.msg_len, rqs[i].msg_len);
        if (q.msg_len)
            assert_memory_equal(q.msg, rqs[i].msg, q.msg_len);
        if (q.out_kind == LOKI_BATCH_OUT_INLINE) {
            assert_int_equal(q.inline_len, rqs[i].inline_len);
            /* zero copy: the bytes are read in place */
            assert_true((const uint8_t *)q.inline_data >= (const uint8_t *)buf &&
                        (const uint8_t *)q.inline_data + q.inline_len <=
                            (const uint8_t *)buf + len);
            if (q.inline_len)
                assert_memory_equal(q.inline_data, rqs[i].inline_data, q.inline_len);
        }
    }
    assert_int_equal(loki_batch_next_result(&v, &q), 0);
}

static void test_roundtrip(void **state)
{
    uint8_t buf[2048];
    size_t len;
    assert_int_equal(loki_batch_desc_encode(&desc, buf, sizeof(buf), &len), 0);
    assert_true(len <= loki_batch_desc_max_size(5));
    check_desc(buf, len);
    assert_int_equal(loki_batch_result_encode(&result, buf, sizeof(buf), &len), 0);
    assert_true(len <= loki_batch_result_max_size(&result));
    check_result(buf, len);
    /* an empty batch */
    struct loki_batch_desc empty = {.batch_id = 1};
    struct loki_batch_view v;
    struct loki_batch_query q;
    assert_int_equal(loki_batch_desc_encode(&empty, buf, sizeof(buf), &len), 0);
    assert_int_equal(loki_batch_decode(buf, len, &v), 0);
    assert_int_equal(v.n_queries, 0);
    assert_int_equal(loki_batch_next_query(&v, &q), 0);
}

static void test_encode_bounds(void **state)
{
    uint8_t buf[2048];
    size_t len, full;
    assert_int_equal(loki_batch_desc_encode(&desc, buf, sizeof(buf), &full), 0);
    for (size_t cap = 0; cap < full; cap++)
        assert_int_equal(loki_batch_desc_encode(&desc, buf, cap, &len), -ENOBUFS);
    assert_int_equal(loki_batch_result_encode(&result, buf, sizeof(buf), &full), 0);
    for (size_t cap = 0; cap < full; cap++)
        assert_int_equal(loki_batch_result_encode(&result, buf, cap, &len), -ENOBUFS);
    /* inputs the format cannot carry */
    struct loki_batch_result_query bad = rqs[1];
    struct loki_batch_result res = {.n_queries = 1, .queries = &bad};
    bad.inline_len = 65;
    assert_int_equal(loki_batch_result_encode(&res, buf, sizeof(buf), &len), -EINVAL);
    bad.inline_len = 1;
    bad.n_fanout = LOKI_BATCH_MAX_CHILDREN + 1;
    assert_int_equal(loki_batch_result_encode(&res, buf, sizeof(buf), &len), -EINVAL);
    struct loki_batch_desc big = desc;
    big.n_queries = LOKI_BATCH_MAX_QUERIES + 1;
    assert_int_equal(loki_batch_desc_encode(&big, buf, sizeof(buf), &len), LOKI_ETOOBIG);
}

static void test_truncated_and_trailing(void **state)
{
    uint8_t buf[2048];
    size_t len;
    struct loki_batch_view v;
    assert_int_equal(loki_batch_desc_encode(&desc, buf, sizeof(buf) - 1, &len), 0);
    for (size_t n = 0; n < len; n++) {
        /* a heap copy of exactly n bytes: ASan catches any read past it */
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, buf, n);
        assert_int_equal(loki_batch_decode(copy, n, &v), LOKI_ECORRUPT);
        free(copy);
    }
    buf[len] = 0xc0;
    assert_int_equal(loki_batch_decode(buf, len + 1, &v), LOKI_ECORRUPT);
    assert_int_equal(loki_batch_result_encode(&result, buf, sizeof(buf), &len), 0);
    for (size_t n = 0; n < len; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, buf, n);
        assert_int_equal(loki_batch_decode(copy, n, &v), LOKI_ECORRUPT);
        free(copy);
    }
}

/* Hand-packed records that lie about their sizes. */
struct sbuf_pk {
    msgpack_sbuffer sb;
    msgpack_packer pk;
};

static void sp_init(struct sbuf_pk *s)
{
    msgpack_sbuffer_init(&s->sb);
    msgpack_packer_init(&s->pk, &s->sb, msgpack_sbuffer_write);
}

static void test_lying_lengths(void **state)
{
    struct sbuf_pk s;
    struct loki_batch_view v;

    /* a count of 2^32-1 queries in a few bytes */
    sp_init(&s);
    msgpack_pack_array(&s.pk, 5);
    msgpack_pack_uint8(&s.pk, 1);
    msgpack_pack_uint64(&s.pk, 1);
    msgpack_pack_uint32(&s.pk, 1);
    msgpack_pack_uint32(&s.pk, 1);
    msgpack_pack_array(&s.pk, UINT32_MAX);
    assert_int_equal(loki_batch_decode(s.sb.data, s.sb.size, &v), LOKI_ECORRUPT);
    msgpack_sbuffer_destroy(&s.sb);

    /* more queries than a batch may hold, all well-formed */
    sp_init(&s);
    msgpack_pack_array(&s.pk, 5);
    msgpack_pack_uint8(&s.pk, 1);
    msgpack_pack_uint64(&s.pk, 1);
    msgpack_pack_uint32(&s.pk, 1);
    msgpack_pack_uint32(&s.pk, 1);
    msgpack_pack_array(&s.pk, LOKI_BATCH_MAX_QUERIES + 1);
    for (uint32_t i = 0; i <= LOKI_BATCH_MAX_QUERIES; i++) {
        msgpack_pack_array(&s.pk, 6);
        for (int k = 0; k < 6; k++)
            msgpack_pack_uint8(&s.pk, 1);
    }
    assert_int_equal(loki_batch_decode(s.sb.data, s.sb.size, &v), LOKI_ETOOBIG);
    msgpack_sbuffer_destroy(&s.sb);

    /* inline output longer than 64 B; bin length beyond the record */
    for (int variant = 0; variant < 3; variant++) {
        sp_init(&s);
        msgpack_pack_array(&s.pk, 4);
        msgpack_pack_uint8(&s.pk, 2);
        msgpack_pack_uint64(&s.pk, 1);
        msgpack_pack_uint32(&s.pk, 1);
        msgpack_pack_array(&s.pk, 1);
        msgpack_pack_array(&s.pk, 6);
        msgpack_pack_uint64(&s.pk, 1);
        msgpack_pack_int32(&s.pk, 0);
        uint8_t blob[100] = {0};
        if (variant == 0) {
            msgpack_pack_bin_with_body(&s.pk, blob, 65);
            msgpack_pack_array(&s.pk, 0);
            msgpack_pack_nil(&s.pk);
            msgpack_pack_nil(&s.pk);
        } else if (variant == 1) {
            msgpack_pack_bin(&s.pk, 60); /* header claims 60, 3 bytes follow */
            msgpack_sbuffer_write(&s.sb, (const char *)blob, 3);
        } else {
            msgpack_pack_nil(&s.pk);
            msgpack_pack_array(&s.pk, 17); /* fan-out over the limit */
            for (int k = 0; k < 17; k++)
                msgpack_pack_uint8(&s.pk, 1);
        }
        int want = variant == 2 ? LOKI_ETOOBIG : LOKI_ECORRUPT;
        assert_int_equal(loki_batch_decode(s.sb.data, s.sb.size, &v), want);
        msgpack_sbuffer_destroy(&s.sb);
    }

    /* wrong types and out-of-range integers */
    sp_init(&s);
    msgpack_pack_array(&s.pk, 5);
    msgpack_pack_uint8(&s.pk, 1);
    msgpack_pack_int64(&s.pk, -1); /* negative batch id */
    msgpack_pack_uint32(&s.pk, 1);
    msgpack_pack_uint32(&s.pk, 1);
    msgpack_pack_array(&s.pk, 0);
    assert_int_equal(loki_batch_decode(s.sb.data, s.sb.size, &v), LOKI_ECORRUPT);
    msgpack_sbuffer_destroy(&s.sb);
    sp_init(&s);
    msgpack_pack_array(&s.pk, 5);
    msgpack_pack_uint8(&s.pk, 1);
    msgpack_pack_uint64(&s.pk, 1);
    msgpack_pack_uint64(&s.pk, 1ull << 32); /* instance id over u32 */
    msgpack_pack_uint32(&s.pk, 1);
    msgpack_pack_array(&s.pk, 0);
    assert_int_equal(loki_batch_decode(s.sb.data, s.sb.size, &v), LOKI_ECORRUPT);
    msgpack_sbuffer_destroy(&s.sb);
    sp_init(&s);
    msgpack_pack_str_with_body(&s.pk, "batch", 5);
    assert_int_equal(loki_batch_decode(s.sb.data, s.sb.size, &v), LOKI_ECORRUPT);
    msgpack_sbuffer_destroy(&s.sb);
}

/* The encoder as it was on msgpack-c: the wire format must stay byte for byte the same. */
static void mpc_desc(msgpack_packer *pk, const struct loki_batch_desc *d)
{
    msgpack_pack_array(pk, 5);
    msgpack_pack_uint8(pk, LOKI_BATCH_KIND_DESC);
    msgpack_pack_uint64(pk, d->batch_id);
    msgpack_pack_uint32(pk, d->instance_id);
    msgpack_pack_uint32(pk, d->variant);
    msgpack_pack_array(pk, d->n_queries);
    for (uint32_t i = 0; i < d->n_queries; i++) {
        const struct loki_batch_query *q = &d->queries[i];
        msgpack_pack_array(pk, 6);
        msgpack_pack_uint64(pk, q->query_id);
        msgpack_pack_uint32(pk, q->sub_query_id);
        msgpack_pack_uint64(pk, q->deadline_ns);
        msgpack_pack_uint64(pk, q->payload.off);
        msgpack_pack_uint32(pk, q->payload.len);
        msgpack_pack_uint32(pk, q->payload.gen);
    }
}

static void mpc_result(msgpack_packer *pk, const struct loki_batch_result *res)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint8(pk, LOKI_BATCH_KIND_RESULT);
    msgpack_pack_uint64(pk, res->batch_id);
    msgpack_pack_uint32(pk, res->instance_id);
    msgpack_pack_array(pk, res->n_queries);
    for (uint32_t i = 0; i < res->n_queries; i++) {
        const struct loki_batch_result_query *q = &res->queries[i];
        msgpack_pack_array(pk, 6);
        msgpack_pack_uint64(pk, q->query_id);
        msgpack_pack_int32(pk, q->status);
        if (q->out_kind == LOKI_BATCH_OUT_NONE) {
            msgpack_pack_nil(pk);
        } else if (q->out_kind == LOKI_BATCH_OUT_INLINE) {
            msgpack_pack_bin_with_body(pk, q->inline_data, q->inline_len);
        } else {
            msgpack_pack_array(pk, 3);
            msgpack_pack_uint64(pk, q->out_ref.off);
            msgpack_pack_uint32(pk, q->out_ref.len);
            msgpack_pack_uint32(pk, q->out_ref.gen);
        }
        msgpack_pack_array(pk, q->n_fanout);
        for (uint32_t k = 0; k < q->n_fanout; k++)
            msgpack_pack_uint32(pk, q->fanout[k]);
        if (q->children.len) {
            msgpack_pack_array(pk, 3);
            msgpack_pack_uint64(pk, q->children.off);
            msgpack_pack_uint32(pk, q->children.len);
            msgpack_pack_uint32(pk, q->children.gen);
        } else {
            msgpack_pack_nil(pk);
        }
        if (q->msg_len)
            msgpack_pack_str_with_body(pk, q->msg, q->msg_len);
        else
            msgpack_pack_nil(pk);
    }
}

/* A value of random magnitude: every integer width gets its turn. */
static uint64_t rand_width(uint64_t h)
{
    int bits = (int)(h % 65);
    uint64_t v = shm_test_mix(h);
    return bits == 64 ? v : v & ((1ull << bits) - 1);
}

static void test_msgpackc_bytes(void **state)
{
    static uint8_t buf[1 << 16];
    static struct loki_batch_query q[64];
    static struct loki_batch_result_query rq[64];
    size_t len;
    struct sbuf_pk s;

    sp_init(&s);
    mpc_desc(&s.pk, &desc);
    assert_int_equal(loki_batch_desc_encode(&desc, buf, sizeof(buf), &len), 0);
    assert_int_equal(len, s.sb.size);
    assert_memory_equal(buf, s.sb.data, len);
    msgpack_sbuffer_destroy(&s.sb);
    sp_init(&s);
    mpc_result(&s.pk, &result);
    assert_int_equal(loki_batch_result_encode(&result, buf, sizeof(buf), &len), 0);
    assert_int_equal(len, s.sb.size);
    assert_memory_equal(buf, s.sb.data, len);
    msgpack_sbuffer_destroy(&s.sb);

    for (uint64_t it = 0; it < 200; it++) {
        uint64_t h = shm_test_mix(it + 1000);
        uint32_t n = (uint32_t)(h % 64);
        for (uint32_t i = 0; i < n; i++) {
            uint64_t g = shm_test_mix(h + i);
            q[i] = (struct loki_batch_query){
                .query_id = rand_width(g),
                .sub_query_id = (uint32_t)rand_width(g + 1),
                .deadline_ns = rand_width(g + 2),
                .payload = {rand_width(g + 3), (uint32_t)rand_width(g + 4),
                            (uint32_t)rand_width(g + 5)},
            };
            rq[i] = (struct loki_batch_result_query){
                .query_id = rand_width(g + 6),
                .status = (int32_t)(uint32_t)rand_width(g + 7),
                .out_kind = (enum loki_batch_out)(g % 3),
                .out_ref = q[i].payload,
                .inline_data = inline_out,
                .inline_len = (uint32_t)(g % (LOKI_BATCH_INLINE_MAX + 1)),
                .n_fanout = (uint32_t)((g >> 8) % (LOKI_BATCH_MAX_CHILDREN + 1)),
            };
            for (uint32_t k = 0; k < rq[i].n_fanout; k++)
                rq[i].fanout[k] = (uint32_t)rand_width(g + 8 + k);
        }
        struct loki_batch_desc d = {rand_width(h + 1), (uint32_t)rand_width(h + 2),
                                    (uint32_t)rand_width(h + 3), n, q};
        struct loki_batch_result r = {rand_width(h + 4), (uint32_t)rand_width(h + 5), n, rq};
        sp_init(&s);
        mpc_desc(&s.pk, &d);
        assert_int_equal(loki_batch_desc_encode(&d, buf, sizeof(buf), &len), 0);
        assert_int_equal(len, s.sb.size);
        assert_memory_equal(buf, s.sb.data, len);
        assert_true(len <= loki_batch_desc_max_size(n));
        msgpack_sbuffer_destroy(&s.sb);
        sp_init(&s);
        mpc_result(&s.pk, &r);
        assert_int_equal(loki_batch_result_encode(&r, buf, sizeof(buf), &len), 0);
        assert_int_equal(len, s.sb.size);
        assert_memory_equal(buf, s.sb.data, len);
        assert_true(len <= loki_batch_result_max_size(&r));
        msgpack_sbuffer_destroy(&s.sb);
        /* and it decodes to what went in */
        struct loki_batch_view v;
        struct loki_batch_result_query got;
        assert_int_equal(loki_batch_decode(buf, len, &v), 0);
        for (uint32_t i = 0; i < n; i++) {
            assert_int_equal(loki_batch_next_result(&v, &got), 1);
            assert_true(got.query_id == rq[i].query_id);
            assert_int_equal(got.status, rq[i].status);
            assert_int_equal(got.out_kind, rq[i].out_kind);
            assert_int_equal(got.n_fanout, rq[i].n_fanout);
            assert_memory_equal(got.fanout, rq[i].fanout, got.n_fanout * sizeof(uint32_t));
        }
        assert_int_equal(loki_batch_next_result(&v, &got), 0);
    }
}

/* Random mutations of valid records: decode answers, never crashes or overreads. */
static void test_mutations(void **state)
{
    uint8_t good[2][2048];
    size_t glen[2];
    assert_int_equal(loki_batch_desc_encode(&desc, good[0], sizeof(good[0]), &glen[0]), 0);
    assert_int_equal(loki_batch_result_encode(&result, good[1], sizeof(good[1]), &glen[1]), 0);
    uint64_t iters = shm_test_scaled(200000), ok = 0;
    for (uint64_t it = 0; it < iters; it++) {
        uint64_t h = shm_test_mix(it);
        int which = (int)(h & 1);
        size_t len = glen[which];
        uint8_t *buf = malloc(len);
        memcpy(buf, good[which], len);
        int flips = 1 + (int)((h >> 1) % 4);
        for (int f = 0; f < flips; f++) {
            uint64_t g = shm_test_mix(h + (uint64_t)f);
            buf[g % len] = (uint8_t)(g >> 32);
        }
        struct loki_batch_view v;
        int err = loki_batch_decode(buf, len, &v);
        assert_true(err == 0 || err == LOKI_ECORRUPT || err == LOKI_ETOOBIG);
        if (err == 0) {
            ok++;
            struct loki_batch_query q;
            struct loki_batch_result_query rq;
            uint32_t n = 0;
            if (v.kind == LOKI_BATCH_KIND_DESC)
                while (loki_batch_next_query(&v, &q) == 1)
                    n++;
            else
                while (loki_batch_next_result(&v, &rq) == 1) {
                    if (rq.out_kind == LOKI_BATCH_OUT_INLINE)
                        assert_true(rq.inline_len <= LOKI_BATCH_INLINE_MAX);
                    n++;
                }
            assert_int_equal(n, v.n_queries);
        }
        free(buf);
    }
    assert_true(ok > 0); /* some mutations only change values */
}

static void test_through_ring(void **state)
{
    int fd = memfd_create("loki-test-ring", MFD_CLOEXEC);
    struct loki_ring *prod, *cons;
    assert_int_equal(loki_ring_create(fd, 1u << 14, LOKI_RING_PRODUCER, &prod), 0);
    assert_int_equal(loki_ring_attach_local(prod, LOKI_RING_CONSUMER, &cons), 0);
    int sent = 0;
    /* fill the ring; encoded in place into reserved slots */
    for (;;) {
        int err =
            sent & 1 ? loki_batch_result_send(prod, &result) : loki_batch_desc_send(prod, &desc);
        if (err == -EAGAIN)
            break;
        assert_int_equal(err, 0);
        sent++;
    }
    assert_true(sent > 20);
    for (int i = 0; i < sent; i++) {
        const void *p;
        size_t len;
        assert_int_equal(loki_ring_peek(cons, &p, &len), 0);
        if (i & 1)
            check_result(p, len);
        else
            check_desc(p, len);
        assert_int_equal(loki_ring_consume(cons), 0);
    }
    /* a batch larger than any record of this ring */
    static struct loki_batch_query many[LOKI_BATCH_MAX_QUERIES];
    struct loki_batch_desc d = {.n_queries = LOKI_BATCH_MAX_QUERIES, .queries = many};
    for (uint32_t i = 0; i < LOKI_BATCH_MAX_QUERIES; i++)
        many[i].query_id = UINT64_MAX - i;
    assert_int_equal(loki_batch_desc_send(prod, &d), -ENOBUFS);
    loki_ring_destroy(prod);
    loki_ring_destroy(cons);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_encode_bounds),
        cmocka_unit_test(test_truncated_and_trailing),
        cmocka_unit_test(test_lying_lengths),
        cmocka_unit_test(test_msgpackc_bytes),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_through_ring),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
