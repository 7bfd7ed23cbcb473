/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The NVML sampler (runtime/metrics/gpu.c) against a fake libnvidia-ml
 * (fake_nvml.c, a shared library loaded by path): devices, uuids and
 * figures come through in base units; a second's cache; a failing device is
 * marked, not fatal; no library, no driver or no device means no sampler
 * (and so no GPU metrics), never an error that stops lokid.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "loki/gpu.h"

static void (*fake_set)(unsigned int, unsigned long long, int);
static int (*fake_calls)(void);

static struct loki_gpu *open_fake(void)
{
    struct loki_gpu *g = NULL;
    assert_int_equal(loki_gpu_open(LOKI_FAKE_NVML, &g), 0);
    assert_non_null(g);
    /* the same library, already loaded: its controls */
    void *h = dlopen(LOKI_FAKE_NVML, RTLD_NOW | RTLD_NOLOAD);
    assert_non_null(h);
    fake_set = (void (*)(unsigned int, unsigned long long, int))dlsym(h, "fake_nvml_set");
    fake_calls = (int (*)(void))dlsym(h, "fake_nvml_calls");
    assert_non_null(fake_set);
    assert_non_null(fake_calls);
    dlclose(h);
    return g;
}

static void test_devices_and_figures(void **state)
{
    struct loki_gpu *g = open_fake();
    const struct loki_gpu_stats *s;
    fake_set(80, 3ull << 30, 0);
    assert_int_equal(loki_gpu_sample(g, 1000000000ull, &s), 2);
    assert_int_equal(s[0].index, 0);
    assert_string_equal(s[0].uuid, "GPU-fake-0");
    assert_true(s[0].ok);
    assert_true(s[0].utilization == 0.37);
    assert_int_equal(s[0].mem_used_bytes, 1ull << 30);
    assert_int_equal(s[0].mem_total_bytes, 80ull << 30);
    assert_string_equal(s[1].uuid, "GPU-fake-1");
    assert_true(s[1].utilization == 0.8);
    assert_int_equal(s[1].mem_used_bytes, 3ull << 30);
    /* within the second: the same sample, NVML not asked */
    int calls = fake_calls();
    fake_set(10, 4ull << 30, 0);
    assert_int_equal(loki_gpu_sample(g, 1900000000ull, &s), 2);
    assert_int_equal(fake_calls(), calls);
    assert_true(s[1].utilization == 0.8);
    /* a second later: fresh */
    assert_int_equal(loki_gpu_sample(g, 2000000000ull, &s), 2);
    assert_true(s[1].utilization == 0.1);
    assert_int_equal(s[1].mem_used_bytes, 4ull << 30);
    /* a device whose queries fail is marked; the other still reports */
    fake_set(10, 4ull << 30, 1);
    assert_int_equal(loki_gpu_sample(g, 3000000000ull, &s), 2);
    assert_true(s[0].ok);
    assert_false(s[1].ok);
    fake_set(80, 3ull << 30, 0);
    loki_gpu_close(g);
}

static void test_absent(void **state)
{
    struct loki_gpu *g = NULL;
    /* no library */
    assert_int_equal(loki_gpu_open("/nonexistent/libnvidia-ml.so.1", &g), -ENOENT);
    assert_null(g);
    /* a library that is not NVML (the C library has none of its functions) */
    assert_int_equal(loki_gpu_open("libc.so.6", &g), -ENOENT);
    /* the driver does not initialise (NVML_ERROR_DRIVER_NOT_LOADED) */
    setenv("FAKE_NVML_INIT", "9", 1);
    assert_int_equal(loki_gpu_open(LOKI_FAKE_NVML, &g), -ENODEV);
    unsetenv("FAKE_NVML_INIT");
    /* no device */
    setenv("FAKE_NVML_COUNT", "0", 1);
    assert_int_equal(loki_gpu_open(LOKI_FAKE_NVML, &g), -ENODEV);
    unsetenv("FAKE_NVML_COUNT");
    assert_null(g);
    loki_gpu_close(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_devices_and_figures),
        cmocka_unit_test(test_absent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
