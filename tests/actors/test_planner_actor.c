/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The planner actor under its two harnesses: lokid's (solves on a libuv
 * loop's thread pool, through planner_uv) and the replay's (inline). Both get
 * the same arrivals and fan-outs on the same clock and must apply the same
 * sequence of plans; freezing, the serial rule and shutdown are checked too.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <cmocka.h>

#include "loki/planner.h"
#include "loki/router.h"
#include "loki/topology.h"
#include "planner.h"
#include "planner_uv.h"

/* Root a (2 variants, the accurate one slower) -> b; 4 GPUs; generous solve limit so the
 * MILP never stops on time and both harnesses see the very same optimum. */
#define TOPO                                                                                       \
    "gpus: {count: 4}\n"                                                                           \
    "planner: {time_limit_ms: 20000, min_dwell_s: 2}\n"                                            \
    "pipelines:\n"                                                                                 \
    "  - name: p\n"                                                                                \
    "    slo_ms: 200\n"                                                                            \
    "    tasks:\n"                                                                                 \
    "      - name: a\n"                                                                            \
    "        children: [b]\n"                                                                      \
    "        variants:\n"                                                                          \
    "          - {name: a1, accuracy: 80, batch_sizes: [1, 4], latency_ms: [4, 8],\n"              \
    "             fanout: {b: 1}}\n"                                                               \
    "          - {name: a2, accuracy: 100, batch_sizes: [1, 4], latency_ms: [10, 20],\n"           \
    "             fanout: {b: 2}}\n"                                                               \
    "      - name: b\n"                                                                            \
    "        variants:\n"                                                                          \
    "          - {name: b1, accuracy: 100, batch_sizes: [1, 8], latency_ms: [2, 6]}\n"

#define MAX_PLANS 64

struct harness {
    double now;
    bool busy;
    struct loki_router_stats stats;
    struct loki_plan *plans; /* every plan applied, in order */
    char why[MAX_PLANS][32];
    int n_plans;
    struct loki_planner_actor *a;
    struct loki_planner_uv *u; /* lokid's binding; NULL: the replay's (inline) */
    uv_loop_t loop;
};

static double h_now(void *ctx)
{
    return ((struct harness *)ctx)->now;
}

static int h_apply(void *ctx, const struct loki_plan *p, const char *why)
{
    struct harness *h = ctx;
    assert_true(h->n_plans < MAX_PLANS);
    memcpy(&h->plans[h->n_plans], p, sizeof(*p));
    snprintf(h->why[h->n_plans], sizeof(h->why[0]), "%s", why);
    h->n_plans++;
    return 0;
}

static bool h_busy(void *ctx)
{
    return ((struct harness *)ctx)->busy;
}

static const struct loki_router_stats *h_stats(void *ctx)
{
    return &((struct harness *)ctx)->stats;
}

static int h_offload(void *ctx)
{
    return loki_planner_uv_offload(((struct harness *)ctx)->u);
}

static struct loki_topology *topo(void)
{
    static char err[4096];
    struct loki_topology *t = NULL;
    if (loki_topology_parse(TOPO, strlen(TOPO), "t.yaml", &t, err, sizeof(err)))
        fail_msg("topology: %s", err);
    return t;
}

static void h_init(struct harness *h, const struct loki_topology *t, bool uv)
{
    memset(h, 0, sizeof(*h));
    h->plans = calloc(MAX_PLANS, sizeof(*h->plans));
    assert_non_null(h->plans);
    struct loki_planner_actor_ops ops = {
        .now_s = h_now, .apply = h_apply, .busy = h_busy, .stats = h_stats};
    if (uv) {
        assert_int_equal(uv_loop_init(&h->loop), 0);
        assert_int_equal(loki_planner_uv_create(&h->loop, &h->u), 0);
        ops.offload = h_offload;
    }
    struct loki_planner_actor_config cfg = {.serial = true};
    assert_int_equal(loki_planner_actor_create(t, &cfg, &ops, h, &h->a), 0);
    if (uv)
        loki_planner_uv_bind(h->u, h->a);
    double d0[LOKI_MAX_PIPELINES] = {10};
    assert_int_equal(loki_planner_actor_initial(h->a, d0), 0);
    loki_planner_actor_start(h->a);
}

/* Let a solve queued on the pool finish and its plan land (lokid's loop turning). */
static void h_settle(struct harness *h)
{
    if (!h->u)
        return;
    while (loki_planner_uv_is_busy(h->u))
        uv_run(&h->loop, UV_RUN_ONCE);
}

static void h_fini(struct harness *h)
{
    h_settle(h);
    loki_planner_actor_destroy(h->a);
    if (h->u) {
        loki_planner_uv_destroy(h->u);
        assert_int_equal(uv_loop_close(&h->loop), 0);
    }
    free(h->plans);
}

/* Demand of second @s: a step up, a peak, a step down (qps). */
static int rate_at(int s)
{
    return s < 8 ? 20 : s < 20 ? 400 : 60;
}

/* One second of arrivals, evenly spaced, and the router's counters as the sim would move
 * them (every root served by a2, two children each), then the plan timer. */
static void h_second(struct harness *h, int s)
{
    int n = rate_at(s);
    for (int k = 0; k < n; k++)
        loki_planner_actor_arrival(h->a, 0, s + (double)k / n);
    h->stats.var[0][0][1].served += (uint64_t)n;
    h->stats.var[0][0][1].children[0] += 2 * (uint64_t)n;
    h->stats.var[0][1][0].served += 2 * (uint64_t)n;
    h->now = s + 1;
    assert_int_equal(loki_planner_actor_tick(h->a), 0);
    h_settle(h);
}

static void test_same_plans_both_harnesses(void **state)
{
    (void)state;
    struct loki_topology *t = topo();
    struct harness *L = calloc(1, sizeof(*L)), *R = calloc(1, sizeof(*R));
    h_init(L, t, true);
    h_init(R, t, false);
    for (int s = 0; s < 40; s++) {
        h_second(L, s);
        h_second(R, s);
    }
    /* the ramp must have moved the plan: initial, up for the peak, down after it */
    assert_true(R->n_plans >= 3);
    assert_int_equal(L->n_plans, R->n_plans);
    for (int i = 0; i < R->n_plans; i++) {
        assert_false(loki_plan_differs(&L->plans[i], &R->plans[i]));
        assert_string_equal(L->why[i], R->why[i]);
        assert_true(L->plans[i].demand_qps[0] == R->plans[i].demand_qps[0]);
        assert_int_equal(L->plans[i].n_instances, R->plans[i].n_instances);
    }
    assert_string_equal(R->why[0], "initial");
    /* the peak's plan was solved for the peak, with more capacity than the first */
    double peak = 0;
    for (int i = 0; i < R->n_plans; i++)
        peak = R->plans[i].demand_qps[0] > peak ? R->plans[i].demand_qps[0] : peak;
    assert_true(peak > 300);
    const struct loki_planner_actor_stats *ls = loki_planner_actor_stats(L->a),
                                          *rs = loki_planner_actor_stats(R->a);
    assert_int_equal(ls->replans, rs->replans);
    assert_int_equal(ls->plans_kept, rs->plans_kept);
    assert_int_equal(ls->plans_applied, (uint64_t)L->n_plans);
    assert_true(loki_planner_actor_estimate(L->a, 0) == loki_planner_actor_estimate(R->a, 0));
    h_fini(L);
    h_fini(R);
    free(L);
    free(R);
    free(t);
}

/* Frozen (drain, fixed plan), busy (serial: a reconfiguration runs) or not yet started:
 * estimates follow demand, but no solve starts and no plan is applied. */
static void test_frozen_busy_unstarted(void **state)
{
    (void)state;
    struct loki_topology *t = topo();
    struct harness *h = calloc(1, sizeof(*h));
    h_init(h, t, false);
    loki_planner_actor_freeze(h->a, true);
    for (int s = 0; s < 12; s++)
        h_second(h, s);
    assert_int_equal(h->n_plans, 1);
    assert_true(loki_planner_actor_estimate(h->a, 0) > 100); /* the estimate saw the peak */
    loki_planner_actor_freeze(h->a, false);
    h->busy = true;
    uint64_t replans = loki_planner_actor_stats(h->a)->replans;
    h_second(h, 12);
    assert_int_equal(loki_planner_actor_stats(h->a)->replans, replans);
    h->busy = false;
    h_second(h, 13);
    assert_int_equal(loki_planner_actor_stats(h->a)->replans, replans + 1);
    assert_int_equal(h->n_plans, 2); /* the peak finally gets its plan */
    h_fini(h);

    /* lokid before it serves: ticks do nothing and the estimate stays the initial guess */
    struct loki_planner_actor_ops ops = {
        .now_s = h_now, .apply = h_apply, .busy = h_busy, .stats = h_stats};
    struct loki_planner_actor_config cfg = {.serial = true};
    h_init(h, t, false);
    loki_planner_actor_destroy(h->a);
    h->n_plans = 0;
    assert_int_equal(loki_planner_actor_create(t, &cfg, &ops, h, &h->a), 0);
    double d0[LOKI_MAX_PIPELINES] = {10};
    assert_int_equal(loki_planner_actor_initial(h->a, d0), 0);
    h->now = 5;
    assert_int_equal(loki_planner_actor_tick(h->a), 0);
    assert_int_equal(loki_planner_actor_stats(h->a)->replans, 1); /* the initial solve only */
    assert_true(loki_planner_actor_estimate(h->a, 0) == 10);
    h_fini(h);
    free(h);
    free(t);
}

/* lokid's shutdown: a solve that lands after loki_planner_uv_stop() is not applied. */
static void test_stop_discards(void **state)
{
    (void)state;
    struct loki_topology *t = topo();
    struct harness *h = calloc(1, sizeof(*h));
    h_init(h, t, true);
    for (int s = 0; s < 8; s++)
        h_second(h, s);
    int before = h->n_plans;
    int n = rate_at(10);
    for (int s = 8; s < 12; s++)
        for (int k = 0; k < n; k++)
            loki_planner_actor_arrival(h->a, 0, s + (double)k / n);
    h->now = 12;
    assert_int_equal(loki_planner_actor_tick(h->a), 0);
    assert_true(loki_planner_actor_stats(h->a)->solving);
    loki_planner_uv_stop(h->u);
    h_settle(h);
    assert_false(loki_planner_actor_stats(h->a)->solving);
    assert_int_equal(h->n_plans, before);
    h_fini(h);
    free(h);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_plans_both_harnesses),
        cmocka_unit_test(test_frozen_busy_unstarted),
        cmocka_unit_test(test_stop_discards),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
