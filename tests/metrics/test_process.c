/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The process metrics (runtime/metrics/process.c) of this test process,
 * checked against what it can see of itself: descriptors it opens are
 * counted, the limit is getrlimit()'s, memory it touches shows in the
 * resident size, CPU time grows with work, the start time is before now.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "loki/process.h"

static void test_sample_self(void **state)
{
    struct loki_process_stats a, b;
    assert_int_equal(loki_process_sample(&a), 0);
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    assert_int_equal(a.max_fds, (uint64_t)rl.rlim_cur);
    assert_true(a.open_fds >= 3);
    assert_true(a.start_time_seconds <= (double)time(NULL) + 1);
    assert_true(a.start_time_seconds > (double)time(NULL) - 3600);
    assert_true(a.resident_bytes > 0 && a.virtual_bytes >= a.resident_bytes);

    /* ten more descriptors, 64 MiB touched, some CPU spent */
    int fds[10];
    for (int i = 0; i < 10; i++)
        assert_true((fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0);
    size_t big = 64u << 20;
    char *m = malloc(big);
    assert_non_null(m);
    memset(m, 1, big);
    volatile double x = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        for (int i = 0; i < 100000; i++)
            x += i * 0.5;
        clock_gettime(CLOCK_MONOTONIC, &t1);
    } while ((double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9 < 0.3);
    assert_int_equal(loki_process_sample(&b), 0);
    assert_int_equal(b.open_fds, a.open_fds + 10);
    assert_true(b.resident_bytes >= a.resident_bytes + big / 2);
    assert_true(b.cpu_seconds > a.cpu_seconds); /* ticks are 10 ms: 0.3 s of spinning shows */
    assert_true(b.start_time_seconds == a.start_time_seconds);
    for (int i = 0; i < 10; i++)
        close(fds[i]);
    free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_sample_self)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
