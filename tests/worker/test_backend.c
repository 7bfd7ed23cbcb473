/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Backends: the sim backend takes the profiled time and draws fan-outs with
 * the right means, reproducibly; the example plugin loads through dlopen and
 * answers; a missing or wrong plugin is refused with a clear message.
 */
#include "harness.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "loki/backend.h"
#include "loki/clock.h"

static const int batches[] = {1, 4};
static const double lat[] = {2.0, 6.0};
static const double means[] = {3.0, 0.25};
static const int dists[] = {0, 1};

static struct loki_backend_config cfg(uint64_t seed)
{
    struct loki_backend_config c = {.pipeline = "p",
                                    .task = "t",
                                    .variant = "v",
                                    .max_batch = 4,
                                    .share = 1,
                                    .gpu = -1,
                                    .n_batches = 2,
                                    .batches = batches,
                                    .latency_ms = lat,
                                    .n_children = 2,
                                    .fanout_mean = means,
                                    .fanout_dist = dists,
                                    .seed = seed};
    return c;
}

static void test_sim_latency_and_fanout(void **state)
{
    const struct loki_backend_v1 *ops = loki_backend_sim();
    struct loki_backend_config c = cfg(42);
    void *s;
    assert_int_equal(ops->init(&c, &s), 0);
    struct loki_backend_query q[4] = {{.id = 1}, {.id = 2}, {.id = 3}, {.id = 4}};
    struct loki_backend_result r[4];
    /* batch of 4 takes the profiled 6 ms (not less) */
    uint64_t t0 = loki_now_ns();
    assert_int_equal(ops->infer(s, q, 4, r), 0);
    double ms = (double)(loki_now_ns() - t0) / 1e6;
    assert_true(ms >= 6.0);
    assert_string_equal((char *)r[2].output, "v:3");
    ops->fini(s);
    uint64_t rng = 7;
    double sum0 = 0, sum1 = 0;
    for (int i = 0; i < 100000; i++) {
        sum0 += loki_fanout_draw(&rng, 3.0, 0);
        sum1 += loki_fanout_draw(&rng, 0.25, 1);
    }
    assert_true(sum0 / 100000 > 2.95 && sum0 / 100000 < 3.05);
    assert_true(sum1 / 100000 > 0.24 && sum1 / 100000 < 0.26);
    double g = 0, big = 0;
    for (int i = 0; i < 100000; i++) {
        g += loki_fanout_draw(&rng, 5.0, 2);
        big += loki_fanout_draw(&rng, 17.8, 0);
    }
    assert_true(g / 100000 > 4.85 && g / 100000 < 5.15);
    assert_true(big / 100000 > 17.6 && big / 100000 < 18.0);
}

static void test_sim_reproducible(void **state)
{
    const struct loki_backend_v1 *ops = loki_backend_sim();
    uint32_t a[8], b[8];
    for (int run = 0; run < 2; run++) {
        struct loki_backend_config c = cfg(99);
        c.latency_ms = (const double[]){0.0001, 0.0001};
        void *s;
        assert_int_equal(ops->init(&c, &s), 0);
        struct loki_backend_query q[4] = {{.id = 1}, {.id = 2}, {.id = 3}, {.id = 4}};
        struct loki_backend_result r[4];
        for (int k = 0; k < 2; k++) {
            assert_int_equal(ops->infer(s, q, 4, r), 0);
            for (int i = 0; i < 4; i++)
                (run ? b : a)[k * 4 + i] = r[i].fanout[0];
        }
        ops->fini(s);
    }
    assert_memory_equal(a, b, sizeof(a));
}

static void test_plugin(void **state)
{
    const struct loki_backend_v1 *ops;
    char err[512];
    assert_int_equal(
        loki_backend_load_plugin(loki_test_bin("lib/loki_echo_backend.so"), &ops, err, sizeof(err)),
        0);
    assert_string_equal(ops->name, "echo");
    struct loki_backend_config c = cfg(1);
    void *s;
    assert_int_equal(ops->init(&c, &s), 0);
    char payload[250];
    memset(payload, 1, sizeof(payload));
    struct loki_backend_query q = {.id = 9, .payload = payload, .payload_len = sizeof(payload)};
    struct loki_backend_result r;
    assert_int_equal(ops->infer(s, &q, 1, &r), 0);
    assert_string_equal((char *)r.output, "v sum=250");
    assert_int_equal(r.fanout[0], 2);
    ops->fini(s);

    assert_int_equal(loki_backend_load_plugin("/nonexistent/x.so", &ops, err, sizeof(err)),
                     -ENOENT);
    assert_non_null(strstr(err, "cannot load backend plugin /nonexistent/x.so"));
    /* a shared object without the entry point */
    assert_int_equal(loki_backend_load_plugin("libm.so.6", &ops, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "does not export loki_backend_v1_get"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sim_latency_and_fanout),
        cmocka_unit_test(test_sim_reproducible),
        cmocka_unit_test(test_plugin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
