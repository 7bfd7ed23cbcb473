/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CUDA backend on a real GPU: calibration makes a batch take its profiled
 * time, infer() answers every query with fan-outs, LOKI_CUDA_WORK pins the
 * work, and a green context of a quarter of the SMs is slower on a big batch.
 * Without a GPU (or without nvcc at build time) it checks that init refuses
 * cleanly with -ENODEV and exits 77 (skipped).
 */
#include "harness.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loki/backend.h"
#include "loki/clock.h"
#ifdef LOKI_HAVE_CUDA
#include "loki/cuda.h"

static const int batches[] = {1, 4, 16};
static const double lat[] = {4.0, 10.0, 30.0};
static const double means[] = {2.0};
static const int dists[] = {1}; /* constant */

static struct loki_backend_config cfg(double share)
{
    struct loki_backend_config c = {.pipeline = "p",
                                    .task = "t",
                                    .variant = "v",
                                    .max_batch = 16,
                                    .share = share,
                                    .gpu = 0,
                                    .n_batches = 3,
                                    .batches = batches,
                                    .latency_ms = lat,
                                    .n_children = 1,
                                    .fanout_mean = means,
                                    .fanout_dist = dists,
                                    .seed = 3};
    return c;
}

static void test_calibrated_latency(void **unused)
{
    const struct loki_backend_v1 *be = loki_backend_cuda();
    struct loki_backend_config c = cfg(1);
    void *s;
    unsetenv("LOKI_CUDA_WORK");
    unsetenv("LOKI_CUDA_GREEN_CTX");
    int rc = be->init(&c, &s);
    if (rc)
        fprintf(stderr, "init: %s\n", loki_cuda_last_error());
    assert_int_equal(rc, 0);
    for (int i = 0; i < 3; i++) {
        double ms;
        assert_int_equal(loki_cuda_time_batch(s, batches[i], 5, &ms), 0);
        fprintf(stderr, "batch %d: %.2f ms (profile %.2f)\n", batches[i], ms, lat[i]);
        assert_true(ms > lat[i] * 0.85 && ms < lat[i] * 1.15);
    }
    /* infer: host-side time includes launch and sync, never far below the profile */
    struct loki_backend_query q[16];
    struct loki_backend_result r[16];
    for (int i = 0; i < 16; i++)
        q[i] = (struct loki_backend_query){.id = (uint64_t)i + 100};
    uint64_t t0 = loki_now_ns();
    assert_int_equal(be->infer(s, q, 16, r), 0);
    double ms = (double)(loki_now_ns() - t0) / 1e6;
    assert_true(ms > 30.0 * 0.85);
    assert_string_equal((char *)r[5].output, "v:105");
    assert_int_equal(r[5].n_children, 1);
    assert_int_equal(r[5].fanout[0], 2);
    assert_int_equal(be->infer(s, q, 17, r), -EINVAL);
    be->fini(s);
}

static void test_fixed_work(void **unused)
{
    const struct loki_backend_v1 *be = loki_backend_cuda();
    struct loki_backend_config c = cfg(1);
    void *s;
    setenv("LOKI_CUDA_WORK", "3,5,7", 1);
    assert_int_equal(be->init(&c, &s), 0);
    unsetenv("LOKI_CUDA_WORK");
    int w[3];
    assert_int_equal(loki_cuda_work(s, w, 3), 3);
    assert_int_equal(w[0], 3);
    assert_int_equal(w[2], 7);
    be->fini(s);
}

static void test_green_context(void **unused)
{
    const struct loki_backend_v1 *be = loki_backend_cuda();
    struct loki_backend_config c = cfg(1);
    void *s;
    setenv("LOKI_CUDA_WORK", "20,20,20", 1);
    assert_int_equal(be->init(&c, &s), 0);
    unsetenv("LOKI_CUDA_WORK");
    int all = loki_cuda_sm_count(s);
    double full, quarter, ms;
    assert_int_equal(loki_cuda_time_batch(s, 16, 5, &full), 0);
    int rc = loki_cuda_green_resize(s, 0.25, &ms);
    if (rc == -ENOTSUP) {
        fprintf(stderr, "green contexts unsupported here: %s\n", loki_cuda_last_error());
        be->fini(s);
        return;
    }
    assert_int_equal(rc, 0);
    assert_true(loki_cuda_sm_count(s) < all);
    assert_int_equal(loki_cuda_time_batch(s, 16, 5, &quarter), 0);
    fprintf(stderr, "green: %d of %d SMs in %.2f ms; batch 16: %.2f -> %.2f ms\n",
            loki_cuda_sm_count(s), all, ms, full, quarter);
    assert_true(quarter > full * 1.5);
    be->fini(s);
}
#endif

int main(void)
{
#ifndef LOKI_HAVE_CUDA
    fprintf(stderr, "skipped: built without the CUDA backend (no nvcc)\n");
    return 77;
#else
    if (loki_cuda_device_count() < 1) {
        /* no GPU: the backend must refuse cleanly, not crash */
        struct loki_backend_config c = cfg(1);
        void *s = NULL;
        int rc = loki_backend_cuda()->init(&c, &s);
        if (rc != -ENODEV) {
            fprintf(stderr, "init without a GPU returned %d, not -ENODEV\n", rc);
            return 1;
        }
        fprintf(stderr, "skipped: no CUDA GPU (%s)\n", loki_cuda_last_error());
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calibrated_latency),
        cmocka_unit_test(test_fixed_work),
        cmocka_unit_test(test_green_context),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
#endif
}
