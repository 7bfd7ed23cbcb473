/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The traffic-analysis example reproduces known points: hardware-only
 * capacity of the car chain (object_detection -> car_classification) on 18
 * whole GPUs, SLO 250 ms, headroom 1/2 is about 190 qps (the Loki paper's
 * InferLine-like baseline); every Loki and InferLine plan over a range of
 * demands passes the independent checker; Loki carries well over twice the
 * hardware-only demand on the full pipeline.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "example.h"
#include "harness.h"
#include "loki/planner.h"
#include "loki/topology.h"

static bool carried(struct loki_planner *pl, const struct loki_topology *t, enum loki_policy pol,
                    double d, struct loki_plan *p)
{
    assert_int_equal(loki_planner_solve_policy(pl, pol, &d, NULL, 0, p), 0);
    return p->served_fraction[0] >= 1 - 1e-9 && loki_plan_check(t, p, &d, NULL, 0) == 0;
}

static double capacity(struct loki_planner *pl, const struct loki_topology *t, enum loki_policy pol,
                       struct loki_plan *p)
{
    double lo = 0, hi = 1;
    while (carried(pl, t, pol, hi, p))
        lo = hi, hi *= 2;
    while (hi - lo > 0.05) {
        double mid = (lo + hi) / 2;
        if (carried(pl, t, pol, mid, p))
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static void test_car_chain_hardware_capacity(void **state)
{
    (void)state;
    struct loki_topology *t = loki_test_traffic();
    struct loki_pipeline *pp = &t->pipelines[0];
    int car = loki_pipeline_task_index(pp, "car_classification");
    struct loki_task *root = &pp->tasks[pp->root];
    int slot = loki_task_child_slot(root, car);
    assert_true(car >= 0 && slot >= 0);
    /* Keep only the car branch; fan-outs are indexed like children. */
    for (int v = 0; v < root->n_variants; v++)
        root->variants[v].fanout[0] = root->variants[v].fanout[slot];
    root->children[0] = car;
    root->n_children = 1;
    t->gpus.count = 18;
    pp->slo_ms = 250;
    t->planner.headroom = 0.5;
    t->planner.beta = 1.0; /* the paper's point plans capacity = demand */
    struct loki_planner *pl;
    assert_int_equal(loki_planner_create(t, &pl), 0);
    struct loki_plan *p = malloc(sizeof(*p));
    double cap = capacity(pl, t, LOKI_POLICY_INFERLINE, p);
    print_message("car chain, 18 GPUs, hardware only: %.2f qps\n", cap);
    assert_true(cap >= 150 && cap <= 230);
    free(p);
    loki_planner_destroy(pl);
    free(t);
}

static void test_plans_check(void **state)
{
    (void)state;
    struct loki_topology *t = loki_test_traffic();
    struct loki_planner *pl;
    assert_int_equal(loki_planner_create(t, &pl), 0);
    struct loki_plan *p = malloc(sizeof(*p)), *prev = malloc(sizeof(*prev));
    bool have = false;
    for (double d = 10; d <= 3000; d *= 1.6) {
        enum loki_policy pols[2] = {LOKI_POLICY_LOKI, LOKI_POLICY_INFERLINE};
        for (int i = 0; i < 2; i++) {
            assert_int_equal(
                loki_planner_solve_policy(pl, pols[i], &d, i == 0 && have ? prev : NULL, d, p), 0);
            char why[512] = "";
            if (loki_plan_check(t, p, &d, why, sizeof(why)) != 0)
                fail_msg("%s at %.1f qps: %s", loki_policy_name(pols[i]), d, why);
            if (i == 0) {
                memcpy(prev, p, sizeof(*p));
                have = true;
            }
        }
    }
    double hw = capacity(pl, t, LOKI_POLICY_INFERLINE, p);
    double lk = capacity(pl, t, LOKI_POLICY_LOKI, p);
    print_message("traffic pipeline, 20 GPUs: inferline %.1f qps, loki %.1f qps (%.2fx)\n", hw, lk,
                  lk / hw);
    assert_true(lk > 2 * hw);
    free(p);
    free(prev);
    loki_planner_destroy(pl);
    free(t);
}

/*
 * A time limit too short for GLPK to find any accuracy-mode solution: the
 * greedy fallback still gives an accuracy-mode plan that carries the demand,
 * instead of served mode shedding queries.
 */
static void test_short_time_limit(void **state)
{
    (void)state;
    struct loki_topology *t = loki_test_traffic();
    t->planner.time_limit_ms = 1;
    struct loki_planner *pl;
    assert_int_equal(loki_planner_create(t, &pl), 0);
    struct loki_plan *p = malloc(sizeof(*p));
    for (double d = 300; d <= 600; d += 100) {
        assert_int_equal(loki_planner_solve(pl, &d, NULL, 0, p), 0);
        assert_int_equal(p->mode, LOKI_MODE_ACCURACY);
        assert_true(p->served_fraction[0] == 1);
        assert_true(p->time_limited);
        assert_true(p->accuracy[0] > 0.5);
        char why[512] = "";
        if (loki_plan_check(t, p, &d, why, sizeof(why)) != 0)
            fail_msg("at %.0f qps: %s", d, why);
    }
    free(p);
    loki_planner_destroy(pl);
    free(t);
}

/*
 * Placement is stable across plans: every instance the new plan keeps (same variant and share)
 * stays on a GPU where the current plan runs it, so the router keeps it instead of restarting
 * it elsewhere, and new instances go to GPUs the kept ones leave room on. First-fit from
 * scratch fails this on the example: one more detector shifts every classifier by a GPU.
 */
static void test_stable_placement(void **state)
{
    (void)state;
    struct loki_topology *t = loki_test_traffic();
    struct loki_planner *pl;
    assert_int_equal(loki_planner_create(t, &pl), 0);
    struct loki_plan *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
    const double demands[] = {40, 75, 110, 60, 150, 300, 90};
    int kept_total = 0;
    assert_int_equal(loki_planner_solve(pl, &demands[0], NULL, 0, a), 0);
    for (size_t k = 1; k < sizeof(demands) / sizeof(demands[0]); k++) {
        /* far apart in time: no dwell, every change is taken */
        assert_int_equal(loki_planner_solve(pl, &demands[k], a, 1000.0 * (double)k, b), 0);
        char why[256] = "";
        assert_int_equal(loki_plan_check(t, b, &demands[k], why, sizeof(why)), 0);
        bool used[LOKI_MAX_INSTANCES] = {0};
        for (int p = 0; p < t->n_pipelines; p++)
            for (int tk = 0; tk < t->pipelines[p].n_tasks; tk++)
                for (int v = 0; v < t->pipelines[p].tasks[tk].n_variants; v++) {
                    const struct loki_plan_variant *va = &a->var[p][tk][v], *vb = &b->var[p][tk][v];
                    if (va->instances == 0 || vb->instances == 0 ||
                        fabs(va->share - vb->share) > 1e-9)
                        continue;
                    int want = va->instances < vb->instances ? va->instances : vb->instances;
                    int same = 0;
                    for (int i = 0; i < b->n_instances; i++) {
                        const struct loki_plan_instance *x = &b->inst[i];
                        if (x->pipeline != p || x->task != tk || x->variant != v)
                            continue;
                        for (int j = 0; j < a->n_instances; j++) {
                            const struct loki_plan_instance *y = &a->inst[j];
                            if (!used[j] && y->pipeline == p && y->task == tk && y->variant == v &&
                                y->gpu == x->gpu) {
                                used[j] = true;
                                same++;
                                break;
                            }
                        }
                    }
                    assert_int_equal(same, want);
                    kept_total += want;
                }
        struct loki_plan *tmp = a;
        a = b;
        b = tmp;
    }
    assert_true(kept_total > 10); /* the walk does keep instances across plans */
    free(a);
    free(b);
    loki_planner_destroy(pl);
    free(t);
}

/*
 * Fallbacks (Loki only): every instance loads a faster variant of its task too (the most
 * accurate with 3x its throughput within the headroom budget, else the fastest: yolov5s for
 * yolov5x, efficientnet-b0 for efficientnet-b6 here), within the GPU's memory; the baselines get
 * none; planner.fallback = false turns them off.
 */
static int n_fallbacks(const struct loki_plan *p, int *wrong)
{
    int n = 0;
    for (int i = 0; i < p->n_instances; i++) {
        const struct loki_plan_instance *x = &p->inst[i];
        int fv = loki_plan_fallback(x);
        if (fv < 0)
            continue;
        n++;
        /* detection: yolov5x (4) -> yolov5s (1); car classification: efficientnet-b0 (0) */
        if (fv == x->variant || (x->task == 0 && x->variant == 4 && fv != 1) ||
            (x->task == 1 && fv != 0))
            (*wrong)++;
    }
    return n;
}

static void test_fallbacks(void **state)
{
    (void)state;
    struct loki_topology *t = loki_test_traffic();
    struct loki_planner *pl;
    assert_int_equal(loki_planner_create(t, &pl), 0);
    struct loki_plan *p = malloc(sizeof(*p));
    double d = 120;
    char why[256] = "";
    int wrong = 0;
    assert_int_equal(loki_planner_solve_policy(pl, LOKI_POLICY_LOKI, &d, NULL, 0, p), 0);
    assert_int_equal(loki_plan_check(t, p, &d, why, sizeof(why)), 0);
    int n = n_fallbacks(p, &wrong);
    assert_int_equal(wrong, 0);
    /* hardware mode at 120 qps: only the most accurate variants run, each with a fallback */
    assert_int_equal(p->mode, LOKI_MODE_HARDWARE);
    assert_int_equal(n, p->n_instances);
    enum loki_policy base[] = {LOKI_POLICY_INFERLINE, LOKI_POLICY_PROTEUS};
    for (int k = 0; k < 2; k++) {
        assert_int_equal(loki_planner_solve_policy(pl, base[k], &d, NULL, 0, p), 0);
        assert_int_equal(n_fallbacks(p, &wrong), 0);
    }
    loki_planner_destroy(pl);
    /* memory: a GPU with room for yolov5x (2600 MB) but not also yolov5s (800 MB) */
    t->gpus.mem_mb = 3000;
    assert_int_equal(loki_planner_create(t, &pl), 0);
    assert_int_equal(loki_planner_solve_policy(pl, LOKI_POLICY_LOKI, &d, NULL, 0, p), 0);
    assert_int_equal(loki_plan_check(t, p, &d, why, sizeof(why)), 0);
    int det = 0, det_fb = 0;
    for (int i = 0; i < p->n_instances; i++)
        if (p->inst[i].task == 0) {
            det++;
            det_fb += p->inst[i].fallback != 0;
        }
    assert_true(det > 0);
    assert_int_equal(det_fb, 0);
    assert_true(n_fallbacks(p, &wrong) > 0); /* the classifiers' still fit */
    /* a plan whose fallbacks overflow a GPU is refused by the checker */
    for (int i = 0; i < p->n_instances; i++)
        if (p->inst[i].task == 0)
            p->inst[i].fallback = 1;
    assert_int_not_equal(loki_plan_check(t, p, &d, why, sizeof(why)), 0);
    assert_non_null(strstr(why, "MB"));
    loki_planner_destroy(pl);
    t->gpus.mem_mb = 11264;
    t->planner.fallback = false;
    assert_int_equal(loki_planner_create(t, &pl), 0);
    assert_int_equal(loki_planner_solve_policy(pl, LOKI_POLICY_LOKI, &d, NULL, 0, p), 0);
    assert_int_equal(n_fallbacks(p, &wrong), 0);
    assert_int_equal(wrong, 0);
    loki_planner_destroy(pl);
    free(p);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_car_chain_hardware_capacity),
        cmocka_unit_test(test_plans_check),
        cmocka_unit_test(test_short_time_limit),
        cmocka_unit_test(test_stable_placement),
        cmocka_unit_test(test_fallbacks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
