/* SPDX-License-Identifier: Apache-2.0 */
/*
 * planner.accuracy_floor on the traffic-analysis example: Loki's first rung
 * minimises GPUs over all variants at planned accuracy >= the floor. At 95 %
 * the plans pass the independent checker, meet the floor and hold fewer GPUs
 * than the hardware-mode plans (best variants only) at low demand; at 100 %
 * only the best variants qualify, so the GPUs match hardware mode; at 0 and
 * for the baselines nothing changes.
 *
 * Every assertion is about the plans a finished solve gives: the topology's solve time limit is
 * raised to the loader's maximum, and a solve still cut short fails the test by name instead of
 * as a worse plan (under ASan or on a loaded machine the default 200 ms used to run out).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "example.h"
#include "harness.h"
#include "loki/planner.h"
#include "loki/topology.h"

/* planner.time_limit_ms's maximum: no solve here gets near it (ctest's timeout comes first). */
#define SOLVE_LIMIT_MS 600000

/* The example with a time limit no solve reaches. The caller frees it. */
static struct loki_topology *traffic(void)
{
    struct loki_topology *t = loki_test_traffic();
    t->planner.time_limit_ms = SOLVE_LIMIT_MS;
    return t;
}

/* Fails when @p was cut short by the time limit: its mode and GPUs would be the clock's. */
static void assert_finished(const struct loki_plan *p, const char *what, double d)
{
    if (p->time_limited)
        fail_msg("%s, %.0f qps: the solve hit the %d ms time limit", what, d, SOLVE_LIMIT_MS);
}

/* A fresh planner's plan of @pol for @d qps under floor @floor; checked. */
static void solve(struct loki_topology *t, double floor_pct, enum loki_policy pol, double d,
                  struct loki_plan *p)
{
    t->planner.accuracy_floor = floor_pct;
    struct loki_planner *pl;
    assert_int_equal(loki_planner_create(t, &pl), 0);
    assert_int_equal(loki_planner_solve_policy(pl, pol, &d, NULL, 0, p), 0);
    assert_finished(p, loki_policy_name(pol), d);
    char why[512] = "";
    if (loki_plan_check(t, p, &d, why, sizeof(why)) != 0)
        fail_msg("%s, floor %.0f, %.0f qps: %s", loki_policy_name(pol), floor_pct, d, why);
    loki_planner_destroy(pl);
}

/* The variant instances of @a and @b agree (same counts, batches and shares). */
static bool same_variants(const struct loki_topology *t, const struct loki_plan *a,
                          const struct loki_plan *b)
{
    for (int p = 0; p < t->n_pipelines; p++)
        for (int k = 0; k < t->pipelines[p].n_tasks; k++)
            for (int v = 0; v < t->pipelines[p].tasks[k].n_variants; v++) {
                const struct loki_plan_variant *x = &a->var[p][k][v], *y = &b->var[p][k][v];
                if (x->instances != y->instances ||
                    (x->instances > 0 && (x->batch != y->batch || x->share != y->share)))
                    return false;
            }
    return true;
}

static void test_floor_95(void **state)
{
    (void)state;
    struct loki_topology *t = traffic();
    struct loki_plan *off = malloc(sizeof(*off)), *on = malloc(sizeof(*on));
    const double demands[] = {50, 100, 200};
    for (size_t i = 0; i < sizeof(demands) / sizeof(demands[0]); i++) {
        double d = demands[i];
        solve(t, 0, LOKI_POLICY_LOKI, d, off);
        solve(t, 95, LOKI_POLICY_LOKI, d, on);
        print_message("%3.0f qps: floor 0: %s, %.0f GPUs, accuracy %.2f %%; floor 95: %s, %.0f "
                      "GPUs, accuracy %.2f %% (%.1f ms%s)\n",
                      d, loki_plan_mode_name(off->mode), off->gpus_used, 100 * off->accuracy[0],
                      loki_plan_mode_name(on->mode), on->gpus_used, 100 * on->accuracy[0],
                      on->solve_ms, on->time_limited ? ", time-limited" : "");
        assert_true(on->served_fraction[0] >= 1 - 1e-9);
        assert_true(on->accuracy[0] >= 0.95);
        assert_true(on->gpus_used <= off->gpus_used);
        if (d <= 100) {
            assert_int_equal(off->mode, LOKI_MODE_HARDWARE);
            assert_int_equal(on->mode, LOKI_MODE_HARDWARE);
            assert_true(on->gpus_used < off->gpus_used);
        }
    }
    free(off);
    free(on);
    free(t);
}

static void test_floor_100_is_hardware(void **state)
{
    (void)state;
    struct loki_topology *t = traffic();
    struct loki_plan *off = malloc(sizeof(*off)), *on = malloc(sizeof(*on));
    const double demands[] = {50, 100, 200};
    for (size_t i = 0; i < sizeof(demands) / sizeof(demands[0]); i++) {
        double d = demands[i];
        solve(t, 0, LOKI_POLICY_LOKI, d, off);
        solve(t, 100, LOKI_POLICY_LOKI, d, on);
        print_message("%3.0f qps: floor 0: %s %.0f GPUs, floor 100: %s %.0f GPUs, accuracy %.4f\n",
                      d, loki_plan_mode_name(off->mode), off->gpus_used,
                      loki_plan_mode_name(on->mode), on->gpus_used, on->accuracy[0]);
        assert_int_equal(on->mode, off->mode);
        assert_true(fabs(on->gpus_used - off->gpus_used) < 1e-9);
        if (off->mode == LOKI_MODE_HARDWARE)
            assert_true(on->accuracy[0] >= 1 - 1e-6);
    }
    free(off);
    free(on);
    free(t);
}

/* Floor 0 is today's ladder; the baselines ignore the knob whatever it says. */
static void test_floor_off_and_baselines(void **state)
{
    (void)state;
    struct loki_topology *t = traffic();
    struct loki_plan *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
    const double demands[] = {50, 100, 200, 400};
    enum loki_policy base[] = {LOKI_POLICY_INFERLINE, LOKI_POLICY_PROTEUS};
    for (size_t i = 0; i < sizeof(demands) / sizeof(demands[0]); i++) {
        double d = demands[i];
        /* the default is off */
        struct loki_topology *fresh = loki_test_traffic();
        assert_true(fresh->planner.accuracy_floor == 0);
        free(fresh);
        for (int k = 0; k < 2; k++) {
            solve(t, 0, base[k], d, a);
            solve(t, 97, base[k], d, b);
            assert_int_equal(a->mode, b->mode);
            assert_true(same_variants(t, a, b));
        }
        /* loki at floor 0: best variants only whenever hardware mode carries the demand */
        solve(t, 0, LOKI_POLICY_LOKI, d, a);
        if (a->mode == LOKI_MODE_HARDWARE)
            assert_true(a->accuracy[0] >= 1 - 1e-6);
    }
    free(a);
    free(b);
    free(t);
}

/*
 * A floor nothing can meet at this demand falls to accuracy mode as before:
 * at 400 qps hardware mode cannot carry the demand, nor can anything at 100 %.
 */
static void test_floor_unreachable_falls_back(void **state)
{
    (void)state;
    struct loki_topology *t = traffic();
    struct loki_plan *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
    double d = 400;
    solve(t, 0, LOKI_POLICY_LOKI, d, a);
    solve(t, 100, LOKI_POLICY_LOKI, d, b);
    assert_int_equal(a->mode, LOKI_MODE_ACCURACY);
    assert_int_equal(b->mode, LOKI_MODE_ACCURACY);
    assert_true(b->served_fraction[0] >= 1 - 1e-9);
    assert_true(fabs(a->accuracy[0] - b->accuracy[0]) < 1e-6);
    free(a);
    free(b);
    free(t);
}

/*
 * Across a walk of demands with the current plan handed back (hysteresis,
 * warm starts), every plan meets the floor whenever it is reported as
 * hardware mode, and passes the checker.
 */
static void test_floor_walk(void **state)
{
    (void)state;
    struct loki_topology *t = traffic();
    t->planner.accuracy_floor = 96;
    struct loki_planner *pl;
    assert_int_equal(loki_planner_create(t, &pl), 0);
    struct loki_plan *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
    const double demands[] = {60, 140, 90, 250, 420, 180, 40, 120};
    int n = sizeof(demands) / sizeof(demands[0]), hw = 0;
    for (int k = 0; k < n; k++) {
        double d = demands[k];
        assert_int_equal(loki_planner_solve(pl, &d, k ? a : NULL, 1000.0 * k, b), 0);
        assert_finished(b, "walk", d);
        char why[512] = "";
        if (loki_plan_check(t, b, &d, why, sizeof(why)) != 0)
            fail_msg("step %d, %.0f qps: %s", k, d, why);
        if (b->mode == LOKI_MODE_HARDWARE) {
            hw++;
            assert_true(b->accuracy[0] >= 0.96);
        }
        struct loki_plan *tmp = a;
        a = b;
        b = tmp;
    }
    assert_true(hw >= n / 2);
    free(a);
    free(b);
    loki_planner_destroy(pl);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_floor_95),
        cmocka_unit_test(test_floor_100_is_hardware),
        cmocka_unit_test(test_floor_off_and_baselines),
        cmocka_unit_test(test_floor_unreachable_falls_back),
        cmocka_unit_test(test_floor_walk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
