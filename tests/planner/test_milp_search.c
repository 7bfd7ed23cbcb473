/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The MILP's search (per-node capacity, GPU aggregates branched first,
 * incumbents, the support heuristic, the stored LP basis) against the plain
 * reference formulation: solved to optimality both must agree on every mode,
 * on random small pipelines and on the traffic example; at the planner's gap
 * the search must stay within the gap and, over a demand walk, not below the
 * reference on average; incumbent answers (time limit, warm start) must be
 * feasible and never worse than the warm start; a stored basis must never
 * change an answer.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "example.h"
#include "harness.h"
#include "internal.h"
#include "loki/planner.h"
#include "loki/topology.h"
#include "ptest.h"

#define EXACT 1e-9

/* One MILP solve into @res (its stored bases are kept: the caller zeroes @res once). */
static void milp(const struct loki_topology *t, enum loki__milp_mode mode, bool best_only,
                 double demand, double gap, double limit_ms, bool reference,
                 const struct loki_plan *warm, struct loki__milp_res *res)
{
    struct loki__milp_req rq;
    memset(&rq, 0, sizeof(rq));
    rq.topo = t;
    rq.demand[0] = demand;
    rq.mode = mode;
    rq.best_only = best_only;
    rq.budget = t->gpus.count;
    rq.mip_gap = gap;
    rq.time_limit_ms = limit_ms;
    rq.reference = reference;
    rq.warm = warm;
    assert_int_equal(loki__milp_solve(&rq, res), 0);
}

static bool same(double a, double b)
{
    return fabs(a - b) <= 1e-6 * fmax(1, fabs(b));
}

/* Both formulations solved to optimality in @mode; fails on any disagreement. */
static void agree(const struct loki_topology *t, enum loki__milp_mode mode, bool best_only,
                  double d, const char *what)
{
    struct loki__milp_res *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    milp(t, mode, best_only, d, EXACT, 0, false, NULL, a);
    milp(t, mode, best_only, d, EXACT, 0, true, NULL, b);
    if (a->feasible != b->feasible)
        fail_msg("%s mode %d at %.2f: feasible %d, reference %d", what, mode, d, a->feasible,
                 b->feasible);
    if (a->feasible && !same(a->objective, b->objective))
        fail_msg("%s mode %d at %.2f: objective %.9f, reference %.9f", what, mode, d, a->objective,
                 b->objective);
    free(a);
    free(b);
}

static struct loki_topology *random_case(unsigned seed, double *unit)
{
    unsigned s = seed * 7919u;
    int n_tasks = 2 + (int)(prand(&s) * 2);
    bool tree = prand(&s) < 0.5;
    int nv[3], total = 0;
    for (int k = 0; k < n_tasks; k++) {
        nv[k] = 2 + (int)(prand(&s) * 3);
        if (total + nv[k] > 7)
            nv[k] = 2;
        total += nv[k];
    }
    bool halves = seed % 4 == 0;
    int gpus = halves ? 2 : 2 + (int)(prand(&s) * 3);
    struct loki_topology *t = ptest_random(seed, n_tasks, nv, tree, halves, gpus);
    const struct loki_variant *r = &t->pipelines[0].tasks[0].variants[nv[0] - 1];
    *unit = r->batches[2] * 1000.0 / r->latency_ms[0][2] * gpus / n_tasks;
    return t;
}

static void test_random_agree(void **state)
{
    (void)state;
    for (unsigned seed = 1; seed <= 30; seed++) {
        double unit;
        struct loki_topology *t = random_case(seed, &unit);
        const double levels[] = {0.15, 0.7, 2.5};
        char what[32];
        snprintf(what, sizeof(what), "seed %u", seed);
        for (int i = 0; i < 3; i++) {
            agree(t, LOKI__MILP_HARDWARE, true, levels[i] * unit, what);
            agree(t, LOKI__MILP_ACCURACY, false, levels[i] * unit, what);
            agree(t, LOKI__MILP_SERVED, false, levels[i] * unit, what);
        }
        free(t);
    }
}

static void test_traffic_agree(void **state)
{
    (void)state;
    struct loki_topology *t = loki_test_traffic();
    const double hw[] = {40, 100, 140};
    for (int i = 0; i < 3; i++)
        agree(t, LOKI__MILP_HARDWARE, true, hw[i], "traffic");
    const double acc[] = {300, 540, 780, 900, 980};
    for (int i = 0; i < 5; i++)
        agree(t, LOKI__MILP_ACCURACY, false, acc[i], "traffic");
    free(t);
}

/*
 * At the planner's gap, over a demand walk: within the gap of the optimum
 * (so never below the reference by more than the gap), and on average not
 * below the reference run at the same gap without a time limit.
 */
static void test_traffic_quality(void **state)
{
    (void)state;
    struct loki_topology *t = loki_test_traffic();
    double gap = t->planner.mip_gap;
    struct loki__milp_res *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    double sum_new = 0, sum_ref = 0;
    int n = 0;
    for (double d = 200; d <= 1000; d += 50) {
        milp(t, LOKI__MILP_ACCURACY, false, d, gap, 0, false, NULL, a);
        milp(t, LOKI__MILP_ACCURACY, false, d, gap, 0, true, NULL, b);
        assert_true(a->feasible && b->feasible);
        assert_true(a->gap <= gap + 1e-9);
        if (a->objective < b->objective * (1 - gap) - 1e-9)
            fail_msg("at %.0f qps: objective %.6f, reference %.6f, gap %.4f", d, a->objective,
                     b->objective, gap);
        sum_new += a->objective;
        sum_ref += b->objective;
        n++;
    }
    print_message("traffic walk, %d points at gap %.3f: mean objective %.5f, reference %.5f\n", n,
                  gap, sum_new / n, sum_ref / n);
    assert_true(sum_new >= sum_ref - 1e-9);
    free(a);
    free(b);
    free(t);
}

/*
 * The basis stored in a result is reused only by a model of the same
 * structure and never changes an optimal answer, even when another
 * topology's solve or a corrupted entry sits in between.
 */
static void test_stored_basis(void **state)
{
    (void)state;
    struct loki_topology *t = loki_test_traffic();
    double unit;
    struct loki_topology *r = random_case(5, &unit);
    struct loki__milp_res *kept = calloc(1, sizeof(*kept)), *fresh = calloc(1, sizeof(*fresh));
    const double d[] = {500, 520, 760, 300};
    for (int i = 0; i < 4; i++) {
        memset(fresh, 0, sizeof(*fresh));
        milp(t, LOKI__MILP_ACCURACY, false, d[i], EXACT, 0, false, NULL, fresh);
        milp(t, LOKI__MILP_ACCURACY, false, d[i], EXACT, 0, false, NULL, kept);
        assert_true(kept->basis[LOKI__MILP_ACCURACY].key != 0);
        if (!same(kept->objective, fresh->objective))
            fail_msg("at %.0f qps with a stored basis: %.9f, without %.9f", d[i], kept->objective,
                     fresh->objective);
        /* another structure in between, then a corrupted status */
        milp(r, LOKI__MILP_ACCURACY, false, 0.7 * unit, EXACT, 0, false, NULL, kept);
        if (i == 2) {
            milp(t, LOKI__MILP_ACCURACY, false, d[i], EXACT, 0, false, NULL, kept);
            kept->basis[LOKI__MILP_ACCURACY].stat[0] = 99;
        }
    }
    free(kept);
    free(fresh);
    free(r);
    free(t);
}

/*
 * A warm start is an incumbent: the answer is never worse than it, under a
 * time limit too short for any search as well as without one, where it must
 * reach the optimum all the same.
 */
static void test_warm_incumbent(void **state)
{
    (void)state;
    struct loki_topology *t = loki_test_traffic();
    struct loki_planner *pl;
    assert_int_equal(loki_planner_create(t, &pl), 0);
    struct loki_plan *p = malloc(sizeof(*p));
    struct loki__milp_res *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    const double d[] = {350, 650, 950};
    for (int i = 0; i < 3; i++) {
        double dd = d[i];
        assert_int_equal(loki_planner_solve(pl, &dd, NULL, 0, p), 0);
        assert_int_equal(p->mode, LOKI_MODE_ACCURACY);
        /* the plan at the same demand, re-checked as the MILP's objective */
        milp(t, LOKI__MILP_ACCURACY, false, dd, EXACT, 0, true, NULL, b);
        milp(t, LOKI__MILP_ACCURACY, false, dd, t->planner.mip_gap, 0.001, false, p, a);
        assert_true(a->feasible);
        assert_true(a->time_limited);
        if (a->objective < p->objective - 1e-9)
            fail_msg("at %.0f qps, 1 us limit: %.6f below the warm start's %.6f", dd, a->objective,
                     p->objective);
        milp(t, LOKI__MILP_ACCURACY, false, dd, EXACT, 0, false, p, a);
        assert_true(a->feasible && !a->time_limited);
        if (!same(a->objective, b->objective))
            fail_msg("at %.0f qps, warm: %.9f, optimum %.9f", dd, a->objective, b->objective);
    }
    free(a);
    free(b);
    free(p);
    loki_planner_destroy(pl);
    free(t);
}

/* Answers cut short by a 1 ms limit are the incumbents: every plan must pass the checker. */
static void test_time_limited_plans_check(void **state)
{
    (void)state;
    int limited = 0, n = 0;
    for (unsigned seed = 1; seed <= 30; seed++) {
        double unit;
        struct loki_topology *t = random_case(seed, &unit);
        t->planner.time_limit_ms = 1;
        t->planner.mip_gap = 0.005;
        struct loki_planner *pl;
        assert_int_equal(loki_planner_create(t, &pl), 0);
        struct loki_plan *p = malloc(sizeof(*p));
        const double levels[] = {0.15, 0.7, 2.5};
        for (int i = 0; i < 3; i++) {
            double d = levels[i] * unit;
            assert_int_equal(loki_planner_solve(pl, &d, NULL, 0, p), 0);
            char why[512] = "";
            if (loki_plan_check(t, p, &d, why, sizeof(why)) != 0)
                fail_msg("seed %u at %.2f: %s", seed, d, why);
            limited += p->time_limited;
            n++;
        }
        free(p);
        loki_planner_destroy(pl);
        free(t);
    }
    print_message("%d plans, %d cut short by the time limit\n", n, limited);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_agree),    cmocka_unit_test(test_traffic_agree),
        cmocka_unit_test(test_traffic_quality), cmocka_unit_test(test_stored_basis),
        cmocka_unit_test(test_warm_incumbent),  cmocka_unit_test(test_time_limited_plans_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
