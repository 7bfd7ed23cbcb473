/* SPDX-License-Identifier: Apache-2.0 */
/*
 * loki_metrics without a daemon: the last minute is the router's counters
 * less the snapshot taken about a minute ago (everything since start before
 * the ring is full), and the violation ratio counts dropped, late and failed
 * queries among the answered ones, refusals apart.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "harness.h"
#include "loki/metrics.h"

struct fx {
    struct loki_topology *topo;
    struct loki_metrics *m;
    struct loki_router_stats st;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->topo = fx_topology();
    assert_non_null(f->topo);
    assert_int_equal(loki_metrics_create(f->topo, &f->m), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    loki_metrics_destroy(f->m);
    free(f->topo);
    free(f);
    return 0;
}

/* Before the first tick, the "last minute" is everything since start. */
static void test_no_tick_counts_since_start(void **state)
{
    struct fx *f = *state;
    struct loki_metrics_counts c;
    fx_stats(&f->st, 5);
    double win = loki_metrics_last_minute(f->m, &f->st, 4.5, 0, &c);
    assert_true(fabs(win - 4.5) < 1e-9);
    assert_int_equal(c.arrived, 60);
    assert_int_equal(c.ok, 35);
    assert_int_equal(c.overloaded, 10);
    assert_int_equal(c.stage_drop[0], 0);
    assert_int_equal(c.stage_drop[1], 5); /* drops at cls, summed over its variants */
}

/* A zero baseline at start, then the window grows with the uptime up to a minute. */
static void test_window_grows_from_start(void **state)
{
    struct fx *f = *state;
    struct loki_metrics_counts c;
    fx_stats(&f->st, 0);
    loki_metrics_tick(f->m, 0.1, &f->st);
    for (int t = 1; t <= 30; t++) {
        fx_stats(&f->st, (uint64_t)t);
        loki_metrics_tick(f->m, t + 0.1, &f->st);
    }
    double win = loki_metrics_last_minute(f->m, &f->st, 30.35, 0, &c);
    assert_true(fabs(win - 30.25) < 1e-9);
    assert_int_equal(c.arrived, 360);
    assert_int_equal(c.ok, 210);
    assert_int_equal(c.dropped, 30);
    assert_int_equal(c.sub, 600);
    assert_int_equal(c.sub_viol, 60);
    assert_true(fabs(c.acc_sum / (double)c.ok - 90) < 1e-9);
}

/* Once the ring is full, the window slides: the minute before now, not the first minute. */
static void test_window_slides(void **state)
{
    struct fx *f = *state;
    struct loki_metrics_counts c;
    for (int t = 0; t <= 70; t++) {
        fx_stats(&f->st, (uint64_t)t);
        loki_metrics_tick(f->m, t, &f->st);
    }
    /* traffic went on for half a second after the last tick */
    fx_stats(&f->st, 70);
    f->st.pipe[0].arrived += 6;
    double win = loki_metrics_last_minute(f->m, &f->st, 70.5, 0, &c);
    assert_true(fabs(win - 60.5) < 1e-9);
    assert_int_equal(c.arrived, 12 * 60 + 6);
    assert_int_equal(c.ok, 7 * 60);
    assert_int_equal(c.late, 60);
    assert_int_equal(c.error, 60);
    assert_int_equal(c.stage_drop[1], 60);
    assert_true(fabs(loki_metrics_violation_ratio(&c) - 0.3) < 1e-12);
    /* a long quiet spell empties the window */
    for (int t = 71; t <= 140; t++)
        loki_metrics_tick(f->m, t, &f->st);
    win = loki_metrics_last_minute(f->m, &f->st, 140, 0, &c);
    assert_true(fabs(win - 60) < 1e-9);
    assert_int_equal(c.arrived, 0);
    assert_int_equal(c.ok, 0);
    assert_true(loki_metrics_violation_ratio(&c) == 0);
}

static void test_violation_ratio(void **state)
{
    struct loki_metrics_counts c;
    memset(&c, 0, sizeof(c));
    assert_true(loki_metrics_violation_ratio(&c) == 0); /* nothing answered */
    c.overloaded = 50;                                  /* refusals are not violations */
    assert_true(loki_metrics_violation_ratio(&c) == 0);
    c.ok = 6;
    c.dropped = 1;
    c.late = 2;
    c.error = 1;
    assert_true(fabs(loki_metrics_violation_ratio(&c) - 0.4) < 1e-12);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_no_tick_counts_since_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_grows_from_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_slides, setup, teardown),
        cmocka_unit_test(test_violation_ratio),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
