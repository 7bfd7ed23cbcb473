/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz entry point for the batch and result descriptors (shm/batch.c): the
 * input is a ring record as a worker or the router would consume it. A record
 * is either refused whole (LOKI_ECORRUPT or LOKI_ETOOBIG) or every one of its
 * queries can be read back, exactly n_queries of them, with nothing failing
 * half-way (the decoder's promise: validated before the first query is handed
 * out). What decodes is re-encoded, must fit the encoder's size bound, and
 * must decode to the same fields, so the encoder is checked too.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loki/batch.h"
#include "loki/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_batch: check failed: %s (line %d)\n", #c, __LINE__);             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static struct loki_batch_query qs[2][LOKI_BATCH_MAX_QUERIES];
static struct loki_batch_result_query rqs[2][LOKI_BATCH_MAX_QUERIES];

static bool ref_same(const struct loki_arena_ref *a, const struct loki_arena_ref *b)
{
    return a->off == b->off && a->len == b->len && a->gen == b->gen;
}

/* Reads every query of the validated record @v into set @k; returns how many. */
static uint32_t read_all(struct loki_batch_view *v, int k)
{
    uint32_t n = 0;
    int rc;
    if (v->kind == LOKI_BATCH_KIND_DESC) {
        struct loki_batch_result_query other;
        CHECK(loki_batch_next_result(v, &other) == -EINVAL);
        while ((rc = loki_batch_next_query(v, &qs[k][n])) == 1)
            CHECK(++n <= v->n_queries);
    } else {
        struct loki_batch_query other;
        CHECK(loki_batch_next_query(v, &other) == -EINVAL);
        while ((rc = loki_batch_next_result(v, &rqs[k][n])) == 1) {
            const struct loki_batch_result_query *q = &rqs[k][n];
            CHECK(q->out_kind <= LOKI_BATCH_OUT_REF && q->n_fanout <= LOKI_BATCH_MAX_CHILDREN);
            CHECK(q->out_kind != LOKI_BATCH_OUT_INLINE || q->inline_len <= LOKI_BATCH_INLINE_MAX);
            CHECK(++n <= v->n_queries);
        }
    }
    CHECK(rc == 0 && n == v->n_queries);
    return n;
}

static void check_desc(const struct loki_batch_view *a, uint32_t n)
{
    static uint8_t buf[26 + LOKI_BATCH_MAX_QUERIES * 43];
    struct loki_batch_desc d = {a->batch_id, a->instance_id, a->variant, n, qs[0]};
    struct loki_batch_view b;
    size_t len;
    CHECK(loki_batch_desc_max_size(n) <= sizeof(buf));
    CHECK(loki_batch_desc_encode(&d, buf, sizeof(buf), &len) == 0);
    CHECK(len <= loki_batch_desc_max_size(n));
    CHECK(loki_batch_decode(buf, len, &b) == 0);
    CHECK(b.kind == LOKI_BATCH_KIND_DESC && b.batch_id == a->batch_id);
    CHECK(b.instance_id == a->instance_id && b.variant == a->variant && b.n_queries == n);
    CHECK(read_all(&b, 1) == n);
    for (uint32_t i = 0; i < n; i++) {
        CHECK(qs[0][i].query_id == qs[1][i].query_id);
        CHECK(qs[0][i].sub_query_id == qs[1][i].sub_query_id);
        CHECK(qs[0][i].deadline_ns == qs[1][i].deadline_ns);
        CHECK(ref_same(&qs[0][i].payload, &qs[1][i].payload));
    }
}

static void check_result(const struct loki_batch_view *a, uint32_t n)
{
    static uint8_t buf[21 + LOKI_BATCH_MAX_QUERIES * (18 + 5 * 16 + 66)];
    struct loki_batch_result r = {a->batch_id, a->instance_id, n, rqs[0]};
    struct loki_batch_view b;
    size_t len;
    CHECK(loki_batch_result_max_size(&r) <= sizeof(buf));
    CHECK(loki_batch_result_encode(&r, buf, sizeof(buf), &len) == 0);
    CHECK(len <= loki_batch_result_max_size(&r));
    CHECK(loki_batch_decode(buf, len, &b) == 0);
    CHECK(b.kind == LOKI_BATCH_KIND_RESULT && b.batch_id == a->batch_id);
    CHECK(b.instance_id == a->instance_id && b.n_queries == n);
    CHECK(read_all(&b, 1) == n);
    for (uint32_t i = 0; i < n; i++) {
        const struct loki_batch_result_query *x = &rqs[0][i], *y = &rqs[1][i];
        CHECK(x->query_id == y->query_id && x->status == y->status);
        CHECK(x->out_kind == y->out_kind && ref_same(&x->out_ref, &y->out_ref));
        CHECK(x->inline_len == y->inline_len);
        CHECK(!x->inline_len || !memcmp(x->inline_data, y->inline_data, x->inline_len));
        CHECK(x->n_fanout == y->n_fanout);
        CHECK(!memcmp(x->fanout, y->fanout, sizeof(x->fanout[0]) * x->n_fanout));
        CHECK(ref_same(&x->children, &y->children));
        CHECK(x->msg_len == y->msg_len && (!x->msg_len || !memcmp(x->msg, y->msg, x->msg_len)));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct loki_batch_view v;
    int rc = loki_batch_decode(data, size, &v);
    if (rc) {
        CHECK(rc == LOKI_ECORRUPT || rc == LOKI_ETOOBIG);
        return 0;
    }
    CHECK(v.kind == LOKI_BATCH_KIND_DESC || v.kind == LOKI_BATCH_KIND_RESULT);
    CHECK(v.n_queries <= LOKI_BATCH_MAX_QUERIES);
    uint32_t n = read_all(&v, 0);
    if (v.kind == LOKI_BATCH_KIND_DESC)
        check_desc(&v, n);
    else
        check_result(&v, n);
    return 0;
}
