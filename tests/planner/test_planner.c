/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Planner behaviour a user would notice: demand and fan-out estimates,
 * hysteresis and minimum dwell, the baselines (inferline,
 * proteus, static), the checker rejecting broken plans, and never failing
 * under overload.
 */
#include <math.h>

#include "harness.h"
#include "loki/error.h"
#include "loki/planner.h"
#include "ptest.h"
#ifndef SLO_MUL
#define SLO_MUL 2
#endif

static struct loki_topology *two_task(void)
{
    int nv[2] = {3, 3};
    struct loki_topology *t = ptest_random(11, 2, nv, false, false, 6);
    t->planner.mip_gap = 1e-6;
    t->pipelines[0].slo_ms *= SLO_MUL; /* the best path fits at batch 1 */
    return t;
}

static void test_demand_ewma(void **state)
{
    (void)state;
    struct loki_demand d;
    loki_demand_init(&d, 0, 0);
    assert_true(fabs(d.alpha - 0.385) < 1e-12);
    assert_int_equal(d.windows, 20);
    for (int s = 0; s < 30; s++)
        for (int i = 0; i < 10; i++)
            loki_demand_observe(&d, s + i / 10.0, 1);
    assert_true(fabs(loki_demand_estimate(&d, 30.0) - 10) < 1e-9);
    /* One second at 50/s: adjusted EWMA over the last 20 windows. */
    loki_demand_observe(&d, 30.5, 50);
    double est = loki_demand_estimate(&d, 31.0);
    double num = 50, den = 1, w = 1;
    for (int i = 1; i < 20; i++) {
        w *= 1 - 0.385;
        num += 10 * w;
        den += w;
    }
    assert_true(fabs(est - num / den) < 1e-9);
    assert_true(est > 10 + 0.385 * 40 - 1); /* reacts within one window */
    /* Silence decays towards zero, windows without arrivals count. */
    double later = loki_demand_estimate(&d, 60.0);
    assert_true(later < 0.01);
}

static void test_demand_plan_input(void **state)
{
    (void)state;
    struct loki_demand d;
    loki_demand_init(&d, 0, 0);
    for (int s = 0; s < 30; s++)
        loki_demand_observe(&d, s + 0.5, 100);
    /* Steady 100 qps: plan for two Poisson standard deviations above it. */
    assert_true(fabs(loki_demand_plan_input(&d, 30.0) - 120) < 1e-9);
    d.plan_sigmas = 0;
    assert_true(fabs(loki_demand_plan_input(&d, 30.0) - 100) < 1e-9);
    /* A one-second burst: the EWMA follows part way, plan_recent covers it all. */
    loki_demand_observe(&d, 30.5, 400);
    double ewma = loki_demand_plan_input(&d, 31.0);
    assert_true(ewma > 100 && ewma < 400);
    d.plan_recent = 1;
    assert_true(fabs(loki_demand_plan_input(&d, 31.0) - 400) < 1e-9);
    d.plan_sigmas = 2;
    assert_true(fabs(loki_demand_plan_input(&d, 31.0) - 440) < 1e-9);
    /* Once the burst window is older than plan_recent, only the EWMA remembers it. */
    loki_demand_observe(&d, 31.5, 100);
    assert_true(loki_demand_plan_input(&d, 32.0) < 400);
}

/* Observing from mid-window (loki_demand_start, as lokid does when it starts serving). */
static void test_demand_start(void **state)
{
    (void)state;
    struct loki_demand d;
    /* Seen from 4.3 s: 70 arrivals by 5.0 s are 100 qps, not 70 (the part seen counts). */
    loki_demand_init(&d, 0, 0);
    loki_demand_start(&d, 4.3);
    for (int i = 0; i < 50; i++)
        loki_demand_observe(&d, 4.3 + i / 100.0, 1);
    assert_true(fabs(loki_demand_estimate(&d, 4.8) - 50 / 0.5) < 1e-6); /* open window so far */
    for (int i = 50; i < 70; i++)
        loki_demand_observe(&d, 4.3 + i / 100.0, 1);
    assert_true(fabs(loki_demand_estimate(&d, 5.0) - 100) < 1e-6);
    /* Without the start the whole first window counts: 70. */
    loki_demand_init(&d, 0, 0);
    for (int i = 0; i < 70; i++)
        loki_demand_observe(&d, 4.3 + i / 100.0, 1);
    assert_true(fabs(loki_demand_estimate(&d, 5.0) - 70) < 1e-6);
    /* Seen for under half a window (from 4.8): it runs on into the next, one window of 1.2 s. */
    loki_demand_init(&d, 0, 0);
    loki_demand_start(&d, 4.8);
    for (int i = 0; i < 120; i++)
        loki_demand_observe(&d, 4.8 + i / 100.0, 1);
    assert_true(fabs(loki_demand_estimate(&d, 6.0) - 100) < 1e-6);
    assert_int_equal(d.n_hist, 1);
    /* Nothing before the start is idle: ticks before it (none here) and the time before it
     * do not dilute the estimate; idle seconds after it do. */
    loki_demand_init(&d, 0, 0);
    loki_demand_start(&d, 10.0);
    for (int i = 0; i < 50; i++)
        loki_demand_observe(&d, 10.0 + i / 50.0, 1);
    assert_true(fabs(loki_demand_estimate(&d, 11.0) - 50) < 1e-6);
    assert_true(loki_demand_estimate(&d, 13.0) < 50 * 0.6); /* 50, 0, 0: 25.1 */
    /* Once observing, a start changes nothing. */
    double before = loki_demand_estimate(&d, 13.0);
    loki_demand_start(&d, 13.5);
    assert_true(fabs(loki_demand_estimate(&d, 13.0) - before) < 1e-12);
}

static void test_fanout_est(void **state)
{
    (void)state;
    struct loki_topology *t = two_task();
    struct loki_fanout_est f;
    loki_fanout_est_init(&f, 0.2, 10);
    double model = t->pipelines[0].tasks[0].variants[1].fanout[0].mean;
    assert_true(loki_fanout_est_get(&f, t, 0, 0, 1, 0) == model);
    assert_int_equal(loki_fanout_est_observe(&f, 0, 0, 1, 0, 5, 50), 0);
    assert_true(loki_fanout_est_get(&f, t, 0, 0, 1, 0) == model); /* too few yet */
    for (int i = 0; i < 20; i++)
        loki_fanout_est_observe(&f, 0, 0, 1, 0, 5, 50);
    assert_true(fabs(loki_fanout_est_get(&f, t, 0, 0, 1, 0) - 10) < 1e-6);
    for (int i = 0; i < 40; i++)
        loki_fanout_est_observe(&f, 0, 0, 1, 0, 1, 2);
    double e = loki_fanout_est_get(&f, t, 0, 0, 1, 0);
    assert_true(e < 2.1 && e > 1.9);
    assert_int_equal(loki_fanout_est_observe(&f, 9, 0, 0, 0, 1, 1), -22);
    free(t);
}

static void test_never_fails(void **state)
{
    (void)state;
    struct loki_topology *t = two_task();
    struct loki_planner *pl;
    assert_int_equal(loki_planner_create(t, &pl), 0);
    struct loki_plan *p = malloc(sizeof(*p));
    double huge = 1e6, zero = 0;
    assert_int_equal(loki_planner_solve(pl, &huge, NULL, 0, p), 0);
    assert_int_equal(p->mode, LOKI_MODE_SERVED);
    assert_true(p->served_fraction[0] > 0 && p->served_fraction[0] < 0.01);
    assert_int_equal(loki_plan_check(t, p, &huge, NULL, 0), 0);
    assert_int_equal(loki_planner_solve(pl, &zero, NULL, 0, p), 0);
    assert_int_equal(p->mode, LOKI_MODE_HARDWARE);
    assert_true(p->gpus_used <= 2 + 1e-9); /* one instance per task stays */
    assert_int_equal(loki_plan_check(t, p, &zero, NULL, 0), 0);
    free(p);
    loki_planner_destroy(pl);
    free(t);
}

/* Demand that hardware scaling alone cannot carry on all GPUs. */
static double overload(struct loki_planner *pl, struct loki_plan *p)
{
    for (double d = 10;; d *= 1.25) {
        assert_int_equal(loki_planner_solve(pl, &d, NULL, 0, p), 0);
        if (p->mode != LOKI_MODE_HARDWARE)
            return d;
        assert_true(d < 1e6);
    }
}

static void test_hysteresis_and_dwell(void **state)
{
    (void)state;
    struct loki_topology *t = two_task();
    t->planner.hysteresis = 0.02;
    t->planner.min_dwell_s = 10;
    struct loki_planner *pl;
    assert_int_equal(loki_planner_create(t, &pl), 0);
    struct loki_plan *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b)), *c = malloc(sizeof(*c));
    double hi = overload(pl, a);
    double d = hi;
    assert_int_equal(loki_planner_solve(pl, &d, NULL, 100, a), 0);
    assert_int_equal(a->mode, LOKI_MODE_ACCURACY);
    /* Same demand again: nothing better by the margin, the current plan stays. */
    assert_int_equal(loki_planner_solve(pl, &d, a, 101, b), 0);
    assert_true(b->kept);
    assert_false(loki_plan_differs(a, b));
    /* Demand collapses: the hardware plan would stop the cheap variants, but they
     * started less than min_dwell_s ago and the current plan still carries. */
    double lo = d * 0.05;
    assert_int_equal(loki_planner_solve(pl, &lo, a, 105, b), 0);
    assert_true(b->kept);
    assert_int_equal(loki_plan_check(t, b, &lo, NULL, 0), 0);
    /* After the dwell time the better (fewer GPUs) plan is applied. */
    assert_int_equal(loki_planner_solve(pl, &lo, a, 111, c), 0);
    assert_false(c->kept);
    assert_true(c->gpus_used < a->gpus_used);
    /* The current plan cannot carry a higher demand: replaced at once. */
    double up = d * 1.5;
    assert_int_equal(loki_planner_solve(pl, &up, c, 112, b), 0);
    assert_false(b->kept);
    assert_int_equal(loki_plan_check(t, b, &up, NULL, 0), 0);
    /* A large margin keeps a carrying plan even when the new one saves GPUs. */
    double mid = d * 0.3;
    assert_int_equal(loki_planner_solve(pl, &mid, NULL, 200, a), 0);
    double mid2 = mid * 0.8;
    t->planner.hysteresis = 0.9;
    assert_int_equal(loki_planner_solve(pl, &mid2, a, 300, b), 0);
    assert_true(b->kept);
    t->planner.hysteresis = 0;
    assert_int_equal(loki_planner_solve(pl, &mid2, a, 300, b), 0);
    assert_true(b->gpus_used <= a->gpus_used + 1e-9);
    free(a);
    free(b);
    free(c);
    loki_planner_destroy(pl);
    free(t);
}

static void test_burst_spares(void **state)
{
    (void)state;
    struct loki_topology *t = two_task();
    struct loki_planner *pl;
    assert_int_equal(loki_planner_create(t, &pl), 0);
    struct loki_plan *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b)), *c = malloc(sizeof(*c));
    double hi = overload(pl, a);
    double lo = hi * 0.3;
    t->planner.burst_spares = 0;
    assert_int_equal(loki_planner_solve(pl, &lo, NULL, 0, c), 0);
    t->planner.burst_spares = 1;
    assert_int_equal(loki_planner_solve(pl, &lo, NULL, 0, a), 0);
    assert_int_equal(a->mode, LOKI_MODE_HARDWARE);
    /* Spares hold a GPU each, carry no planned traffic and the plan still checks. */
    int n = 0;
    for (int k = 0; k < 2; k++)
        for (int v = 0; v < 3; v++) {
            const struct loki_plan_variant *pv = &a->var[0][k][v];
            n += pv->spares;
            assert_true(pv->spares <= pv->instances);
            if (pv->spares == pv->instances && pv->spares > 0) {
                assert_true(pv->load_qps < 1e-9);
                assert_true(a->split[0][k][0][v] == 0 || k != 0);
            }
        }
    assert_true(n >= 1);
    assert_true(fabs(a->gpus_used - c->gpus_used - n) < 1e-9);
    assert_int_equal(loki_plan_check(t, a, &lo, NULL, 0), 0);
    /* A spare is the fastest variant: it absorbs more than a best-variant instance. */
    for (int k = 0; k < 2; k++) {
        int best = loki_task_best_variant(&t->pipelines[0].tasks[k]);
        for (int v = 0; v < 3; v++)
            if (a->var[0][k][v].spares > 0 && v != best && c->var[0][k][best].instances > 0)
                assert_true(a->var[0][k][v].capacity_qps / a->var[0][k][v].instances >=
                            c->var[0][k][best].capacity_qps / c->var[0][k][best].instances *
                                (1 - 1e-9));
    }
    /* Warm re-solve from a plan with spares: kept, spares and all. */
    assert_int_equal(loki_planner_solve(pl, &lo, a, 1, b), 0);
    assert_true(b->kept);
    assert_true(fabs(b->gpus_used - a->gpus_used) < 1e-9);
    /* Accuracy mode uses every GPU for planned traffic: no spares. */
    assert_int_equal(loki_planner_solve(pl, &hi, a, 2, b), 0);
    assert_int_equal(b->mode, LOKI_MODE_ACCURACY);
    for (int k = 0; k < 2; k++)
        for (int v = 0; v < 3; v++)
            assert_int_equal(b->var[0][k][v].spares, 0);
    free(a);
    free(b);
    free(c);
    loki_planner_destroy(pl);
    free(t);
}

/*
 * A pipeline whose all-variant option set overflows the path formulation's
 * cap even after thinning (4 tasks x 6 variants x 3 shares x 7 batches): at a
 * demand hardware scaling cannot carry, the path formulation still serves a
 * fraction with the best variants instead of returning the serve-nothing
 * plan; the flow formulation (the default) has no cap and scales accuracy,
 * serving all of it.
 */
static void test_path_cap_fallback(void **state)
{
    (void)state;
    struct loki_topology *t = calloc(1, sizeof(*t));
    loki_topology_defaults(t);
    t->gpus.count = 32;
    t->gpus.mem_mb = 0;
    t->gpus.share_granularity = 0.25;
    t->planner.time_limit_ms =
        1000; /* a loaded machine must not turn the hardware solve into a fall-through */
    t->n_pipelines = 1;
    struct loki_pipeline *p = &t->pipelines[0];
    snprintf(p->name, sizeof(p->name), "wide");
    p->n_tasks = 4;
    p->slo_ms = 400;
    unsigned seed = 5;
    for (int k = 0; k < 4; k++) {
        struct loki_task *tk = &p->tasks[k];
        snprintf(tk->name, sizeof(tk->name), "task%d", k);
        tk->n_variants = 6;
        if (k < 3) {
            tk->n_children = 1;
            tk->children[0] = k + 1;
        }
        double base = 3 + 8 * prand(&seed);
        for (int v = 0; v < 6; v++) {
            struct loki_variant *var = &tk->variants[v];
            snprintf(var->name, sizeof(var->name), "v%d", v);
            var->accuracy = v == 5 ? 100 : 60 + 6.0 * v;
            var->n_batches = 7;
            var->n_shares = 3;
            var->shares[0] = 1, var->shares[1] = 0.5, var->shares[2] = 0.25;
            for (int b = 0; b < 7; b++) {
                var->batches[b] = 1 << b;
                double l = base * (1 + 0.6 * v) * (0.6 + 0.4 * (1 << b));
                for (int sh = 0; sh < 3; sh++)
                    var->latency_ms[sh][b] = l * (1 + (1 / var->shares[sh] - 1) * 0.5);
            }
            var->fanout[0].mean = 1 + 0.3 * v;
        }
    }
    struct loki_planner *pl;
    assert_int_equal(loki_planner_create(t, &pl), 0);
    struct loki_plan *a = malloc(sizeof(*a));
    double d = 10; /* hardware scaling carries this on 6.5 of 32 GPUs */
    assert_int_equal(loki_planner_solve(pl, &d, NULL, 0, a), 0);
    assert_int_equal(a->mode, LOKI_MODE_HARDWARE);
    d = 150;
    assert_int_equal(loki_planner_solve(pl, &d, NULL, 0, a), 0);
    assert_int_equal(a->mode, LOKI_MODE_ACCURACY);
    assert_false(a->truncated);
    assert_true(a->served_fraction[0] > 1 - 1e-9);
    assert_int_equal(loki_plan_check(t, a, &d, NULL, 0), 0);
    t->planner.formulation = LOKI_FORMULATION_PATHS;
    assert_int_equal(loki_planner_solve(pl, &d, NULL, 0, a), 0);
    assert_int_equal(a->mode, LOKI_MODE_SERVED);
    assert_true(a->truncated);
    assert_true(a->served_fraction[0] > 0.1);
    assert_int_equal(loki_plan_check(t, a, &d, NULL, 0), 0);
    free(a);
    loki_planner_destroy(pl);
    free(t);
}

static void test_inferline(void **state)
{
    (void)state;
    struct loki_topology *t = two_task();
    struct loki_planner *pl;
    assert_int_equal(loki_planner_create(t, &pl), 0);
    struct loki_plan *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
    double hi = overload(pl, a);
    double lo = hi * 0.3;
    /* Off-peak: the same fewest-GPU plan as Loki's hardware mode (less Loki's burst spares,
     * which InferLine does not have). */
    assert_int_equal(loki_planner_solve(pl, &lo, NULL, 0, a), 0);
    assert_int_equal(loki_planner_solve_policy(pl, LOKI_POLICY_INFERLINE, &lo, NULL, 0, b), 0);
    assert_int_equal(b->mode, LOKI_MODE_HARDWARE);
    double spare = 0;
    for (int k = 0; k < 2; k++)
        for (int v = 0; v < 3; v++) {
            spare += a->var[0][k][v].spares * a->var[0][k][v].share;
            assert_int_equal(b->var[0][k][v].spares, 0);
        }
    assert_true(fabs(a->gpus_used - spare - b->gpus_used) < 1e-9);
    /* Peak: best variants only, all it can serve, the rest shed. */
    assert_int_equal(loki_planner_solve_policy(pl, LOKI_POLICY_INFERLINE, &hi, NULL, 0, b), 0);
    assert_int_equal(b->mode, LOKI_MODE_SERVED);
    assert_true(b->served_fraction[0] < 1 && b->served_fraction[0] > 0.3);
    for (int k = 0; k < 2; k++)
        for (int v = 0; v < 3; v++)
            if (v != loki_task_best_variant(&t->pipelines[0].tasks[k]))
                assert_int_equal(b->var[0][k][v].instances, 0);
    assert_int_equal(loki_plan_check(t, b, &hi, NULL, 0), 0);
    /* Loki carries it all by accuracy scaling. */
    assert_int_equal(loki_planner_solve(pl, &hi, NULL, 0, a), 0);
    assert_true(a->served_fraction[0] == 1);
    free(a);
    free(b);
    loki_planner_destroy(pl);
    free(t);
}

static void test_proteus(void **state)
{
    (void)state;
    struct loki_topology *t = two_task();
    /* Cheap variants fan out much more: what Proteus is blind to. */
    for (int v = 0; v < 3; v++)
        t->pipelines[0].tasks[0].variants[v].fanout[0].mean = 4.0 - v * 1.5;
    struct loki_planner *pl;
    assert_int_equal(loki_planner_create(t, &pl), 0);
    struct loki_plan *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
    double d = 20;
    assert_int_equal(loki_planner_solve_policy(pl, LOKI_POLICY_PROTEUS, &d, NULL, 0, a), 0);
    /* All GPUs always on. */
    assert_true(fabs(a->gpus_used - t->gpus.count) < 1e-9);
    assert_int_equal(a->gpus_active, t->gpus.count);
    /* The child's split ignores the parent variant. */
    for (int u = 1; u < 3; u++)
        for (int v = 0; v < 3; v++)
            assert_true(a->split[0][1][u][v] == a->split[0][1][0][v]);
    /* Each task meets an equal slice of the latency budget on its own. */
    double slice = t->planner.headroom * t->pipelines[0].slo_ms / 2;
    for (int k = 0; k < 2; k++)
        for (int v = 0; v < 3; v++) {
            const struct loki_plan_variant *pv = &a->var[0][k][v];
            if (pv->instances > 0)
                assert_true(loki_variant_latency(&t->pipelines[0].tasks[k].variants[v], pv->batch,
                                                 pv->share) <= slice + 1e-9);
        }
    /* The next solve plans the child for the demand the current routing produces. */
    double load[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS];
    loki_plan_loads(t, a, &d, NULL, load);
    double child = 0;
    for (int v = 0; v < 3; v++)
        child += load[0][1][v];
    a->var[0][0][0].since_s = -100;
    assert_int_equal(loki_planner_solve_policy(pl, LOKI_POLICY_PROTEUS, &d, a, 1000, b), 0);
    double planned = 0;
    for (int v = 0; v < 3; v++)
        planned += b->var[0][1][v].capacity_qps;
    assert_true(planned >= child * 0.999);
    free(a);
    free(b);
    loki_planner_destroy(pl);
    free(t);
}

static void test_static_and_checker(void **state)
{
    (void)state;
    struct loki_topology *t = two_task();
    t->planner.policy = LOKI_POLICY_STATIC;
    t->planner.n_static = 2;
    t->planner.static_plan[0] = (struct loki_static_entry){
        .pipeline = 0, .task = 0, .variant = 2, .instances = 2, .batch = 1, .share = 1};
    t->planner.static_plan[1] = (struct loki_static_entry){
        .pipeline = 0, .task = 1, .variant = 1, .instances = 1, .batch = 2, .share = 1};
    struct loki_planner *pl;
    assert_int_equal(loki_planner_create(t, &pl), 0);
    struct loki_plan *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
    double d = 1;
    assert_int_equal(loki_planner_solve(pl, &d, NULL, 0, a), 0);
    assert_int_equal(a->mode, LOKI_MODE_STATIC);
    assert_int_equal(a->var[0][0][2].instances, 2);
    assert_int_equal(a->var[0][1][1].instances, 1);
    assert_int_equal(a->n_instances, 3);
    assert_true(a->split[0][1][2][1] == 1.0f);
    /* Far too much demand: a fixed plan serves only a fraction. */
    double big = 1e5;
    assert_int_equal(loki_planner_solve(pl, &big, a, 1, b), 0);
    assert_true(b->served_fraction[0] < 0.1);
    assert_int_equal(loki_plan_check(t, b, &big, NULL, 0), 0);
    /* The checker rejects broken plans. */
    char why[512];
    t->planner.policy = LOKI_POLICY_LOKI;
    d = 30;
    assert_int_equal(loki_planner_solve(pl, &d, NULL, 0, a), 0);
    if (loki_plan_check(t, a, &d, why, sizeof(why)) != 0)
        fail_msg("loki plan fails the check: %s", why);
    double more = d * 50;
    assert_int_equal(loki_plan_check(t, a, &more, why, sizeof(why)), LOKI_EINFEASIBLE);
    assert_non_null(strstr(why, "exceeds capacity"));
    memcpy(b, a, sizeof(*a));
    b->inst[0].gpu = t->gpus.count;
    assert_int_equal(loki_plan_check(t, b, &d, why, sizeof(why)), LOKI_EINFEASIBLE);
    memcpy(b, a, sizeof(*a));
    for (int i = 0; i < b->n_instances; i++)
        b->inst[i].gpu = 0;
    if (b->n_instances > 1)
        assert_int_equal(loki_plan_check(t, b, &d, why, sizeof(why)), LOKI_EINFEASIBLE);
    memcpy(b, a, sizeof(*a));
    t->pipelines[0].slo_ms = 1; /* nothing fits the latency budget any more */
    assert_int_equal(loki_plan_check(t, b, &d, why, sizeof(why)), LOKI_EINFEASIBLE);
    assert_non_null(strstr(why, "ms >"));
    free(a);
    free(b);
    loki_planner_destroy(pl);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demand_ewma),
        cmocka_unit_test(test_demand_plan_input),
        cmocka_unit_test(test_demand_start),
        cmocka_unit_test(test_fanout_est),
        cmocka_unit_test(test_burst_spares),
        cmocka_unit_test(test_never_fails),
        cmocka_unit_test(test_hysteresis_and_dwell),
        cmocka_unit_test(test_inferline),
        cmocka_unit_test(test_proteus),
        cmocka_unit_test(test_static_and_checker),
        cmocka_unit_test(test_path_cap_fallback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
