/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The router's EDF queue (runtime/router/edf_heap.h) on its own: queries
 * come out earliest deadline first and first-in-first-out among equal
 * deadlines, whatever the order of pushes and pops, with the heap node
 * embedded anywhere in a larger record whose other fields it never touches.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "edf_heap.h"
#include "harness.h"

/* A record like the router's sub-query: the node not first, payload on both sides. */
struct rec {
    uint32_t before;
    struct loki_edf_node edf;
    uint16_t after;
    char pad[7];
};

static struct loki_edf_pool pool(struct rec *r)
{
    return (struct loki_edf_pool){.base = (char *)r + offsetof(struct rec, edf),
                                  .stride = sizeof(struct rec)};
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void test_empty(void **state)
{
    (void)state;
    struct rec r[1];
    uint32_t root = LOKI_EDF_NIL;
    assert_int_equal(loki_edf_pop(pool(r), &root), LOKI_EDF_NIL);
    assert_int_equal(root, LOKI_EDF_NIL);
}

/* Many equal deadlines: order by (deadline, seq), every node exactly once. */
static void test_order_and_fifo(void **state)
{
    (void)state;
    enum { N = 2000 };
    struct rec *r = calloc(N, sizeof(*r));
    uint32_t root = LOKI_EDF_NIL;
    for (uint32_t i = 0; i < N; i++) {
        r[i].before = i;
        r[i].after = (uint16_t)(i * 7);
        r[i].edf.deadline = 1000 + rnd() % 50;
        r[i].edf.seq = i + 1;
        loki_edf_push(pool(r), &root, i);
    }
    bool *seen = calloc(N, sizeof(*seen));
    uint64_t last_dl = 0, last_seq = 0;
    for (int k = 0; k < N; k++) {
        uint32_t i = loki_edf_pop(pool(r), &root);
        assert_true(i < N);
        assert_false(seen[i]);
        seen[i] = true;
        const struct loki_edf_node *n = &r[i].edf;
        assert_true(n->deadline > last_dl || (n->deadline == last_dl && n->seq > last_seq));
        last_dl = n->deadline;
        last_seq = n->seq;
        assert_int_equal(n->child, LOKI_EDF_NIL);
        assert_int_equal(n->sibling, LOKI_EDF_NIL);
        assert_int_equal(r[i].before, i);
        assert_int_equal(r[i].after, (uint16_t)(i * 7));
    }
    assert_int_equal(loki_edf_pop(pool(r), &root), LOKI_EDF_NIL);
    free(seen);
    free(r);
}

/* Interleaved pushes and pops (popped nodes pushed again) against a linear scan. */
static void test_interleaved(void **state)
{
    (void)state;
    enum { N = 300, STEPS = 20000 };
    struct rec *r = calloc(N, sizeof(*r));
    bool queued[N] = {false};
    uint32_t root = LOKI_EDF_NIL;
    uint64_t seq = 0;
    int n_queued = 0;
    for (int step = 0; step < STEPS; step++) {
        bool push = n_queued == 0 || (n_queued < N && rnd() % 3 != 0);
        if (push) {
            uint32_t i;
            do
                i = (uint32_t)(rnd() % N);
            while (queued[i]);
            r[i].edf.deadline = rnd() % 100;
            r[i].edf.seq = ++seq;
            loki_edf_push(pool(r), &root, i);
            queued[i] = true;
            n_queued++;
            continue;
        }
        int want = -1;
        for (int i = 0; i < N; i++)
            if (queued[i] &&
                (want < 0 || r[i].edf.deadline < r[want].edf.deadline ||
                 (r[i].edf.deadline == r[want].edf.deadline && r[i].edf.seq < r[want].edf.seq)))
                want = i;
        uint32_t got = loki_edf_pop(pool(r), &root);
        assert_int_equal(got, (uint32_t)want);
        queued[got] = false;
        n_queued--;
    }
    while (n_queued-- > 0)
        assert_true(loki_edf_pop(pool(r), &root) != LOKI_EDF_NIL);
    assert_int_equal(loki_edf_pop(pool(r), &root), LOKI_EDF_NIL);
    free(r);
}

/* Separate heaps over one pool stay separate (the router keeps one per instance). */
static void test_two_heaps_one_pool(void **state)
{
    (void)state;
    struct rec r[8];
    memset(r, 0, sizeof(r));
    uint32_t even = LOKI_EDF_NIL, odd = LOKI_EDF_NIL;
    for (uint32_t i = 0; i < 8; i++) {
        r[i].edf.deadline = 100 - i;
        r[i].edf.seq = i;
        loki_edf_push(pool(r), i % 2 ? &odd : &even, i);
    }
    const uint32_t want_even[] = {6, 4, 2, 0}, want_odd[] = {7, 5, 3, 1};
    for (int k = 0; k < 4; k++) {
        assert_int_equal(loki_edf_pop(pool(r), &even), want_even[k]);
        assert_int_equal(loki_edf_pop(pool(r), &odd), want_odd[k]);
    }
    assert_int_equal(even, LOKI_EDF_NIL);
    assert_int_equal(odd, LOKI_EDF_NIL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_order_and_fifo),
        cmocka_unit_test(test_interleaved),
        cmocka_unit_test(test_two_heaps_one_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
