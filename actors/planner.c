/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The planner actor (planner.h). Its state is split by thread: the loop owns
 * the estimators, the counters and plan_cur; a solve in flight reads
 * plan_cur, plan_in and the planner object (with its fan-out estimator) and
 * writes plan_next. While @solving the loop leaves all of those alone
 * (observations wait in the router's cumulative counters; arrivals go to the
 * demand estimators, which the solve does not read) and it touches plan_next
 * only in done(), after the work has finished, so the two threads never
 * share a written byte.
 */
#include "planner.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "loki/clock.h"
#include "loki/demand.h"
#include "loki/planner.h"
#include "loki/router.h"

struct loki_planner_actor {
    const struct loki_topology *topo;
    struct loki_planner_actor_config cfg;
    struct loki_planner_actor_ops ops;
    void *ctx;
    struct loki_planner *planner;
    struct loki_plan *plan_cur, *plan_next;
    bool have_plan, started, frozen;
    struct loki_demand demand[LOKI_MAX_PIPELINES];
    double estimate[LOKI_MAX_PIPELINES];
    double plan_in[LOKI_MAX_PIPELINES]; /* the solve's input: read by the solving thread */
    double solve_now_s;                 /* the clock at the tick that started the solve */
    uint64_t last_served[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS];
    uint64_t last_children[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS]
                          [LOKI_MAX_CHILDREN];
    int solve_rc;
    double wall_ms;
    struct loki_planner_actor_stats st;
};

int loki_planner_actor_create(const struct loki_topology *topo,
                              const struct loki_planner_actor_config *cfg,
                              const struct loki_planner_actor_ops *ops, void *ctx,
                              struct loki_planner_actor **out)
{
    if (!topo || !ops || !ops->now_s || !ops->apply || !ops->stats || !out)
        return -EINVAL;
    struct loki_planner_actor *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->topo = topo;
    if (cfg)
        a->cfg = *cfg;
    a->ops = *ops;
    a->ctx = ctx;
    a->plan_cur = calloc(1, sizeof(*a->plan_cur));
    a->plan_next = calloc(1, sizeof(*a->plan_next));
    int rc = -ENOMEM;
    if (!a->plan_cur || !a->plan_next)
        goto free_plans;
    if ((rc = loki_planner_create(topo, &a->planner)))
        goto free_plans;
    for (int p = 0; p < topo->n_pipelines; p++) {
        loki_demand_init(&a->demand[p], topo->planner.ewma_alpha, topo->planner.ewma_windows);
        a->demand[p].plan_sigmas = topo->planner.demand_sigmas;
    }
    a->started = a->cfg.from_zero;
    *out = a;
    return 0;

free_plans:
    free(a->plan_cur);
    free(a->plan_next);
    free(a);
    return rc;
}

void loki_planner_actor_destroy(struct loki_planner_actor *a)
{
    if (!a)
        return;
    loki_planner_destroy(a->planner);
    free(a->plan_cur);
    free(a->plan_next);
    free(a);
}

/* Make plan_next the current plan if the harness takes it; it then counts as a change. */
static int apply(struct loki_planner_actor *a, const char *why)
{
    int rc = a->ops.apply(a->ctx, a->plan_next, why);
    if (rc)
        return rc;
    struct loki_plan *t = a->plan_cur;
    a->plan_cur = a->plan_next;
    a->plan_next = t;
    a->have_plan = true;
    a->st.plans_applied++;
    a->st.last_change_s = a->ops.now_s(a->ctx);
    return 0;
}

int loki_planner_actor_initial(struct loki_planner_actor *a, const double *demand)
{
    double now = a->ops.now_s(a->ctx);
    for (int p = 0; p < a->topo->n_pipelines; p++)
        a->estimate[p] = a->plan_in[p] = demand[p];
    uint64_t t0 = loki_now_ns();
    int rc = loki_planner_solve(a->planner, a->plan_in, NULL, now, a->plan_next);
    a->wall_ms = (double)(loki_now_ns() - t0) / 1e6;
    a->st.replans++;
    if (rc) {
        a->st.solve_errors++;
        return rc;
    }
    a->st.solves++;
    a->st.last_solve_ms = a->plan_next->solve_ms;
    a->st.solve_ms_sum += a->plan_next->solve_ms;
    return apply(a, "initial");
}

void loki_planner_actor_start(struct loki_planner_actor *a)
{
    if (a->started)
        return;
    double now = a->ops.now_s(a->ctx);
    for (int p = 0; p < a->topo->n_pipelines; p++)
        loki_demand_start(&a->demand[p], now);
    a->started = true;
}

void loki_planner_actor_freeze(struct loki_planner_actor *a, bool frozen)
{
    a->frozen = frozen;
}

void loki_planner_actor_arrival(struct loki_planner_actor *a, int p, double t_s)
{
    if (p >= 0 && p < a->topo->n_pipelines)
        loki_demand_observe(&a->demand[p], t_s, 1);
}

/* Fan-outs served since the last solve, into the planner's estimator (no solve in flight). */
static void observe_fanout(struct loki_planner_actor *a)
{
    const struct loki_router_stats *st = a->ops.stats(a->ctx);
    struct loki_fanout_est *fe = loki_planner_fanout(a->planner);
    if (!st || !fe)
        return;
    for (int p = 0; p < a->topo->n_pipelines; p++) {
        const struct loki_pipeline *pl = &a->topo->pipelines[p];
        for (int t = 0; t < pl->n_tasks; t++)
            for (int v = 0; v < pl->tasks[t].n_variants; v++) {
                const struct loki_router_variant_stats *vs = &st->var[p][t][v];
                uint64_t served = vs->served - a->last_served[p][t][v];
                if (!served)
                    continue;
                a->last_served[p][t][v] = vs->served;
                for (int c = 0; c < pl->tasks[t].n_children; c++) {
                    uint64_t ch = vs->children[c] - a->last_children[p][t][v][c];
                    a->last_children[p][t][v][c] = vs->children[c];
                    loki_fanout_est_observe(fe, p, t, v, c, (double)served, (double)ch);
                }
            }
    }
}

int loki_planner_actor_tick(struct loki_planner_actor *a)
{
    if (!a->started)
        return 0;
    double now = a->ops.now_s(a->ctx);
    for (int p = 0; p < a->topo->n_pipelines; p++)
        a->estimate[p] = loki_demand_estimate(&a->demand[p], now);
    if (a->st.solving || a->frozen)
        return 0;
    if (a->cfg.serial && a->ops.busy && a->ops.busy(a->ctx))
        return 0; /* one reconfiguration at a time; the fan-out counts wait for the next solve */
    observe_fanout(a);
    /* the one provisioning rule every policy and harness plans with: see demand.h */
    for (int p = 0; p < a->topo->n_pipelines; p++)
        a->plan_in[p] = loki_demand_plan_input(&a->demand[p], now);
    a->solve_now_s = now;
    a->st.solving = true;
    a->st.replans++;
    if (a->ops.offload)
        return a->ops.offload(a->ctx);
    loki_planner_actor_work(a);
    return loki_planner_actor_done(a, false);
}

void loki_planner_actor_work(struct loki_planner_actor *a)
{
    uint64_t t0 = loki_now_ns();
    a->solve_rc = loki_planner_solve(a->planner, a->plan_in, a->have_plan ? a->plan_cur : NULL,
                                     a->solve_now_s, a->plan_next);
    a->wall_ms = (double)(loki_now_ns() - t0) / 1e6;
}

int loki_planner_actor_done(struct loki_planner_actor *a, bool discard)
{
    a->st.solving = false;
    if (discard)
        return 0;
    if (a->ops.solved)
        a->ops.solved(a->ctx, a->solve_rc, a->plan_next, a->wall_ms);
    if (a->solve_rc) {
        a->st.solve_errors++;
        return a->solve_rc;
    }
    a->st.solves++;
    a->st.last_solve_ms = a->plan_next->solve_ms;
    a->st.solve_ms_sum += a->plan_next->solve_ms;
    /* hysteresis or min dwell kept the current plan: nothing to apply */
    if (a->have_plan && a->plan_next->kept) {
        a->st.plans_kept++;
        return 0;
    }
    if (a->have_plan && a->cfg.serial && !loki_plan_differs(a->plan_cur, a->plan_next))
        return 0;
    return apply(a, "demand changed");
}

const struct loki_planner_actor_stats *loki_planner_actor_stats(const struct loki_planner_actor *a)
{
    return &a->st;
}

const struct loki_plan *loki_planner_actor_plan(const struct loki_planner_actor *a)
{
    return a->have_plan ? a->plan_cur : NULL;
}

double loki_planner_actor_estimate(const struct loki_planner_actor *a, int p)
{
    return p >= 0 && p < a->topo->n_pipelines ? a->estimate[p] : 0;
}

double loki_planner_actor_plan_input(const struct loki_planner_actor *a, int p)
{
    return p >= 0 && p < a->topo->n_pipelines ? a->plan_in[p] : 0;
}

double loki_planner_actor_last_wall_ms(const struct loki_planner_actor *a)
{
    return a->wall_ms;
}
