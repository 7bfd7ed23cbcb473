/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The planner's entry: policy dispatch, Loki's mode ladder on the MILP
 * (milp.c: hardware scaling, then accuracy scaling, then served-fraction
 * maximisation, re-solving with a smaller GPU budget when placement fails),
 * burst spares, and what decides whether a new plan replaces the current
 * one (hysteresis, minimum dwell, demand margins). Placement, the baselines
 * and the plan checker live in placement.c, baselines.c and check.c.
 */
#include "loki/planner.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "loki/error.h"

/* Latency that breaks any SLO (at most an hour, topology.c): the MILP's path search drops it. */
#define UNPLACEABLE_MS 1e9

int loki_planner_create(const struct loki_topology *topo, struct loki_planner **out)
{
    if (!topo || !out || topo->n_pipelines <= 0 || topo->gpus.count <= 0)
        return -EINVAL;
    struct loki_planner *pl = calloc(1, sizeof(*pl));
    if (!pl)
        return -ENOMEM;
    pl->topo = topo;
    pl->milp_topo = topo;
    bool big = false;
    for (int p = 0; p < topo->n_pipelines; p++)
        for (int t = 0; t < topo->pipelines[p].n_tasks; t++)
            for (int v = 0; v < topo->pipelines[p].tasks[t].n_variants; v++)
                big |= topo->gpus.mem_mb > 0 &&
                       topo->pipelines[p].tasks[t].variants[v].mem_mb > topo->gpus.mem_mb + 1e-6;
    if (big) {
        /* price what can never be placed out of the MILP (internal.h, milp_topo) */
        if (!(pl->own_topo = malloc(sizeof(*pl->own_topo)))) {
            free(pl);
            return -ENOMEM;
        }
        memcpy(pl->own_topo, topo, sizeof(*pl->own_topo));
        for (int p = 0; p < topo->n_pipelines; p++)
            for (int t = 0; t < topo->pipelines[p].n_tasks; t++)
                for (int v = 0; v < topo->pipelines[p].tasks[t].n_variants; v++) {
                    struct loki_variant *va = &pl->own_topo->pipelines[p].tasks[t].variants[v];
                    if (va->mem_mb <= topo->gpus.mem_mb + 1e-6)
                        continue;
                    for (int s = 0; s < va->n_shares; s++)
                        for (int b = 0; b < va->n_batches; b++)
                            va->latency_ms[s][b] = UNPLACEABLE_MS;
                }
        pl->milp_topo = pl->own_topo;
    }
    loki_fanout_est_init(&pl->fan, 0, 0);
    *out = pl;
    return 0;
}

void loki_planner_destroy(struct loki_planner *pl)
{
    if (pl)
        free(pl->own_topo);
    free(pl);
}

struct loki_fanout_est *loki_planner_fanout(struct loki_planner *pl)
{
    return &pl->fan;
}

const char *loki_plan_mode_name(enum loki_plan_mode m)
{
    static const char *const n[] = {"hardware", "accuracy", "served", "static"};
    return (unsigned)m < 4 ? n[m] : "?";
}

void loki__plan_from_res(const struct loki_topology *topo, const struct loki__milp_res *r,
                         struct loki_plan *pl)
{
    for (int p = 0; p < topo->n_pipelines; p++) {
        pl->served_fraction[p] = r->served[p];
        for (int t = 0; t < topo->pipelines[p].n_tasks; t++)
            for (int v = 0; v < topo->pipelines[p].tasks[t].n_variants; v++) {
                struct loki_plan_variant *pv = &pl->var[p][t][v];
                pv->instances = r->inst[p][t][v];
                pv->batch = r->batch[p][t][v];
                pv->share = r->share[p][t][v];
            }
    }
    memcpy(pl->split, r->split, sizeof(pl->split));
    pl->objective = r->objective;
    pl->gap = r->gap;
    loki__coalesce_shares(topo, pl);
}

void loki__plan_reset(struct loki_plan *pl, enum loki_policy policy)
{
    memset(pl, 0, sizeof(*pl));
    pl->policy = policy;
}

/* Policy loki's accuracy floor as a fraction; 0 when off or for another policy. */
static double acc_floor(const struct loki_topology *topo, enum loki_policy policy)
{
    double f = topo->planner.accuracy_floor;
    return policy == LOKI_POLICY_LOKI && f > 0 ? fmin(f, 100) / 100 : 0;
}

/*
 * A floor plan @out (placed) holds the fewest GPUs; on exactly those, ask
 * ACCURACY mode for the most accurate plan, warm-started from @out so its
 * answer is never worse. Taken when it places and is at least as accurate
 * on no more GPUs; @out keeps its mode (hardware). @ms accumulates.
 */
static int refine_floor(struct loki_planner *pl, const struct loki__milp_req *base,
                        const double *demand, struct loki_plan *out, double *ms)
{
    const struct loki_topology *topo = pl->topo;
    struct loki_plan *warm = malloc(2 * sizeof(*warm));
    if (!warm)
        return -ENOMEM;
    struct loki_plan *alt = warm + 1;
    memcpy(warm, out, sizeof(*warm));
    struct loki__milp_req rq = *base;
    rq.mode = LOKI__MILP_ACCURACY;
    rq.best_only = false;
    rq.acc_floor = 0;
    rq.budget = out->gpus_used;
    rq.warm = warm;
    int rc = loki__milp_solve(&rq, &pl->res);
    *ms += pl->res.solve_ms;
    if (rc < 0 || !pl->res.feasible)
        goto out;
    loki__plan_reset(alt, out->policy);
    loki__plan_from_res(topo, &pl->res, alt);
    alt->mode = out->mode;
    if ((rc = loki__plan_finish(topo, demand, &pl->fan, alt)) < 0)
        goto out;
    bool ok = alt->gpus_used <= out->gpus_used + 1e-9;
    for (int p = 0; p < topo->n_pipelines && ok; p++)
        ok = alt->served_fraction[p] >= 1 - 1e-9 && alt->accuracy[p] >= out->accuracy[p] - 1e-9;
    if (ok && loki__place(topo, alt) == 0) {
        alt->objective = out->objective; /* the floor solve's: GPUs less the accuracy term */
        memcpy(out, alt, sizeof(*out));
    }
out:
    free(warm);
    return rc < 0 ? rc : 0;
}

/*
 * The mode ladder. @best_only and !@accuracy make it inferline. On a
 * placement failure the same mode is re-solved with the budget shrunk below
 * what the failed plan used. With loki's accuracy floor the first rung
 * minimises GPUs over all variants at planned accuracy >= the floor
 * (reported as hardware mode), then refine_floor() spends them on accuracy;
 * below the floor it falls to accuracy mode as usual.
 */
int loki__solve_ladder(struct loki_planner *pl, enum loki_policy policy, const double *demand,
                       const struct loki_plan *current, bool best_only, bool accuracy,
                       struct loki_plan *out)
{
    const struct loki_topology *topo = pl->topo;
    struct loki__milp_req rq;
    memset(&rq, 0, sizeof(rq));
    rq.topo = pl->milp_topo;
    rq.fan = &pl->fan;
    for (int p = 0; p < topo->n_pipelines; p++)
        rq.demand[p] = demand[p] > 0 ? demand[p] : 0;
    rq.time_limit_ms = topo->planner.time_limit_ms;
    rq.mip_gap = topo->planner.mip_gap;
    rq.formulation = topo->planner.formulation;
    rq.warm = current;
    double gran = topo->gpus.share_granularity > 0 && topo->gpus.share_granularity < 1
                      ? topo->gpus.share_granularity
                      : 1;
    /*
     * The last step serves a fraction with the best variants only: when every
     * variant's options overflow the MILP's path cap even after thinning (large
     * pipelines), the all-variant modes have no model at all, and a degraded
     * plan beats the serve-nothing one below.
     */
    enum loki__milp_mode modes[4] = {LOKI__MILP_HARDWARE, LOKI__MILP_ACCURACY, LOKI__MILP_SERVED,
                                     LOKI__MILP_SERVED};
    double budget = topo->gpus.count;
    double gap_sum = 0, ms = 0;
    double acc_min = best_only ? 0 : acc_floor(topo, policy);
    bool trunc = false, tlim = false;
    for (int mi = 0; mi < 4; mi++) {
        if ((mi == 1 && !accuracy) || (mi == 3 && best_only))
            continue;
        if (mi == 3)
            budget = topo->gpus.count;
        rq.mode = modes[mi];
        rq.best_only = (mi == 0 && acc_min <= 0) || mi == 3 || best_only;
        rq.acc_floor = mi == 0 ? acc_min : 0;
        for (int attempt = 0; attempt < 8 && budget > 0; attempt++) {
            rq.budget = budget;
            int rc = loki__milp_solve(&rq, &pl->res);
            ms += pl->res.solve_ms;
            if (rc < 0)
                return rc;
            trunc |= pl->res.truncated;
            tlim |= pl->res.time_limited;
            if (!pl->res.feasible)
                break;
            loki__plan_reset(out, policy);
            loki__plan_from_res(topo, &pl->res, out);
            out->mode = mi == 3 ? LOKI_MODE_SERVED : (enum loki_plan_mode)mi;
            gap_sum = pl->res.gap;
            if ((rc = loki__plan_finish(topo, demand, &pl->fan, out)) < 0)
                return rc;
            if (loki__place(topo, out) == 0) {
                if (rq.acc_floor > 0) {
                    if ((rc = refine_floor(pl, &rq, demand, out, &ms)) < 0)
                        return rc;
                    tlim |= pl->res.time_limited;
                }
                out->solve_ms = ms;
                out->gap = gap_sum;
                out->truncated = trunc;
                out->time_limited = tlim;
                return 0;
            }
            budget = fmin(budget, out->gpus_used) - gran;
        }
    }
    /* Nothing fits at all: serve nothing, admission control sheds everything. */
    loki__plan_reset(out, policy);
    out->mode = LOKI_MODE_SERVED;
    out->solve_ms = ms;
    out->truncated = trunc;
    out->time_limited = tlim;
    return loki__plan_finish(topo, demand, &pl->fan, out);
}

/*
 * Burst spares (Loki, hardware mode). A burst shorter than an instance's
 * start-up cannot be met by scaling out, however fast the planner reacts;
 * Loki's answer is accuracy scaling on what already runs. In hardware mode
 * only the most accurate variants run, so there is nothing cheaper to move
 * traffic to. So keep planner.burst_spares warm instances per task that the
 * plan loads to at least half its capacity, of the variant with the highest
 * throughput that fits the latency budget left by the rest of the planned
 * path, on GPUs the plan leaves free. They get no planned traffic (split 0,
 * load 0); the router's residual rule (most accurate variant with capacity
 * left once the planned one is full) and its reroute-before-drop send them
 * the overflow at lower accuracy, and a cheaper detector's lower fan-out
 * relieves the downstream tasks too. A spare that does not fit the budget or
 * placement is not added. Measured in docs/evaluation.md.
 */
static int add_burst_spares(const struct loki_topology *topo, const double *demand,
                            const struct loki_fanout_est *fan, struct loki_plan *out)
{
    int n = topo->planner.burst_spares;
    if (n <= 0 || out->mode != LOKI_MODE_HARDWARE)
        return 0;
    /* A task loaded below this has headroom of its own for a burst. */
    const double spare_util = 0.5;
    double gran = topo->gpus.share_granularity > 0 && topo->gpus.share_granularity < 1
                      ? topo->gpus.share_granularity
                      : 1;
    for (int p = 0; p < topo->n_pipelines; p++) {
        const struct loki_pipeline *pp = &topo->pipelines[p];
        if (!(demand[p] > 0))
            continue;
        int chains[LOKI_MAX_TASKS * 4][LOKI_MAX_TASKS], len[LOKI_MAX_TASKS * 4];
        int nc = loki_pipeline_chains(pp, chains, len, LOKI_MAX_TASKS * 4);
        for (int t = 0; t < pp->n_tasks; t++) {
            const struct loki_task *task = &pp->tasks[t];
            int bv = loki_task_best_variant(task);
            const struct loki_plan_variant *bp = &out->var[p][t][bv];
            if (bp->instances <= 0 || bp->load_qps < spare_util * bp->capacity_qps)
                continue;
            /* Planned latency of the rest of every chain through t (one variant per task). */
            double tl = loki_variant_latency(&task->variants[bv], bp->batch, bp->share);
            double rest = 0;
            for (int k = 0; k < nc && k < LOKI_MAX_TASKS; k++)
                for (int i = 0; i < len[k]; i++)
                    if (chains[k][i] == t)
                        rest = fmax(rest, out->chain_latency_ms[p][k] - tl);
            double budget = topo->planner.headroom * pp->slo_ms;
            int cv = -1, cb = 0;
            double cs = 1, cthr = 0;
            for (int v = 0; v < task->n_variants; v++) {
                const struct loki_variant *va = &task->variants[v];
                double sh = loki_variant_latency(va, va->batches[0], gran) > 0 ? gran : 1;
                if (out->gpus_used + sh > topo->gpus.count + 1e-9)
                    continue; /* not even one fits */
                for (int i = 0; i < va->n_batches; i++) {
                    int b = va->batches[i];
                    double l = loki_variant_latency(va, b, sh);
                    if (l <= 0 || l + rest > budget)
                        continue;
                    const struct loki_plan_variant *pv = &out->var[p][t][v];
                    if (pv->instances > 0 && (pv->batch != b || fabs(pv->share - sh) > 1e-9))
                        continue; /* one batch size and share per variant */
                    double thr = b * 1000.0 / l;
                    if (thr > cthr * (1 + 1e-9) || (thr > cthr * (1 - 1e-9) && cv >= 0 &&
                                                    va->accuracy > task->variants[cv].accuracy)) {
                        cv = v, cb = b, cs = sh, cthr = thr;
                    }
                }
            }
            if (cv < 0)
                continue;
            /* As many as fit, up to n: a smaller GPU budget gets fewer spares, not none. */
            int k = (int)floor((topo->gpus.count - out->gpus_used) / cs + 1e-9);
            if (k > n)
                k = n;
            struct loki_plan_variant *pv = &out->var[p][t][cv], saved = *pv;
            for (; k >= 1; k--) {
                pv->instances = saved.instances + k;
                pv->spares = saved.spares + k;
                pv->batch = cb;
                pv->share = cs;
                int rc = loki__plan_finish(topo, demand, fan, out);
                if (rc < 0)
                    return rc;
                if (loki__place(topo, out) == 0)
                    break;
            }
            if (k < 1) {
                *pv = saved;
                int rc = loki__plan_finish(topo, demand, fan, out);
                if (rc < 0)
                    return rc;
                if (loki__place(topo, out) != 0)
                    return LOKI_EINFEASIBLE; /* placed before: cannot happen */
            }
        }
    }
    return 0;
}

/* A copy of @w without its burst spares (they are not MILP options), in @tmp; @w if none. */
static const struct loki_plan *without_spares(const struct loki_plan *w, struct loki_plan *tmp)
{
    bool any = false;
    for (int p = 0; p < LOKI_MAX_PIPELINES && w; p++)
        for (int t = 0; t < LOKI_MAX_TASKS; t++)
            for (int v = 0; v < LOKI_MAX_VARIANTS; v++)
                any |= w->var[p][t][v].spares > 0;
    if (!any)
        return w;
    memcpy(tmp, w, sizeof(*tmp));
    for (int p = 0; p < LOKI_MAX_PIPELINES; p++)
        for (int t = 0; t < LOKI_MAX_TASKS; t++)
            for (int v = 0; v < LOKI_MAX_VARIANTS; v++) {
                struct loki_plan_variant *pv = &tmp->var[p][t][v];
                pv->instances -= pv->spares;
                pv->spares = 0;
            }
    return tmp;
}

static double mean_accuracy(const struct loki_topology *topo, const struct loki_plan *p,
                            const double *demand)
{
    double num = 0, den = 0;
    for (int i = 0; i < topo->n_pipelines; i++) {
        double w = demand[i] > 0 ? demand[i] : 1e-9;
        num += w * p->accuracy[i] * p->served_fraction[i];
        den += w;
    }
    return den > 0 ? num / den : 0;
}

/* Whether @p is a plan of loki's accuracy floor: all served, every pipeline at the floor. */
static bool meets_floor(const struct loki_topology *topo, enum loki_policy policy,
                        const struct loki_plan *p, const double *demand)
{
    double f = acc_floor(topo, policy);
    if (!(f > 0) || p->mode != LOKI_MODE_HARDWARE)
        return false;
    for (int i = 0; i < topo->n_pipelines; i++)
        if (demand[i] > 0 && (p->served_fraction[i] < 1 - 1e-9 || p->accuracy[i] < f - 1e-6))
            return false;
    return true;
}

/* Whether @pl, re-evaluated for @demand, still carries all of it within the SLO. */
static bool carries(struct loki_planner *pl, const struct loki_plan *cur, const double *demand)
{
    for (int p = 0; p < pl->topo->n_pipelines; p++)
        if (cur->served_fraction[p] < 1 - 1e-9 && demand[p] > 0)
            return false;
    /*
     * With the same over-provisioning the MILP plans with: keeping a plan
     * until demand fills it to 100 % would run it at the utilisation beta is
     * there to avoid, where queueing alone breaks the SLO.
     */
    double beta = pl->topo->planner.beta > 0 ? pl->topo->planner.beta : 1;
    double d[LOKI_MAX_PIPELINES];
    for (int p = 0; p < pl->topo->n_pipelines; p++)
        d[p] = demand[p] * beta;
    return loki__plan_fits(pl->topo, cur, d, &pl->fan);
}

/* One solve of @policy for @demand, warm-started from @warm; no hysteresis. */
static int solve_once(struct loki_planner *pl, enum loki_policy policy, const double *demand,
                      const struct loki_plan *warm, struct loki_plan *out)
{
    const struct loki_topology *topo = pl->topo;
    int rc;
    switch (policy) {
    case LOKI_POLICY_LOKI:
        rc = loki__solve_ladder(pl, policy, demand, without_spares(warm, &pl->scratch), false, true,
                                out);
        if (rc >= 0)
            rc = add_burst_spares(topo, demand, &pl->fan, out);
        break;
    case LOKI_POLICY_INFERLINE:
        rc = loki__solve_inferline(pl, demand, warm, out);
        break;
    case LOKI_POLICY_PROTEUS:
        rc = loki__solve_proteus(pl, demand, warm, out);
        break;
    case LOKI_POLICY_STATIC:
        rc = loki__solve_static(pl, demand, out);
        break;
    default:
        return -EINVAL;
    }
    return rc;
}

/* Instances keep the time their variant came up; new ones start now. */
static void stamp(const struct loki_topology *topo, const struct loki_plan *warm,
                  struct loki_plan *out, double now_s)
{
    out->created_s = now_s;
    out->kept = false;
    for (int p = 0; p < topo->n_pipelines; p++)
        for (int t = 0; t < topo->pipelines[p].n_tasks; t++)
            for (int v = 0; v < topo->pipelines[p].tasks[t].n_variants; v++) {
                struct loki_plan_variant *pv = &out->var[p][t][v];
                bool was = warm && warm->var[p][t][v].instances > 0;
                pv->since_s = pv->instances > 0 ? (was ? warm->var[p][t][v].since_s : now_s) : 0;
            }
}

/*
 * A plan that is better only in accuracy must also carry this much more demand than
 * it is asked for: otherwise Poisson noise around a capacity threshold flips between
 * it and a cheaper plan every few seconds (measured: 4 changes in 24 s at 60 qps).
 */
#define UPGRADE_MARGIN 0.10
#ifndef FORCED_MARGIN
#define FORCED_MARGIN 0.05
#endif

/*
 * Shares that stay. The router matches instances by variant, share and GPU, so a variant whose
 * share changes restarts every instance, and it holds the whole current plan until the new
 * instances are ready: a scale-down that also moves one small task from a whole GPU to a half
 * keeps every GPU it frees busy for that start-up. Where @out runs a variant at another share
 * than @cur, run it at @cur's share instead (as many instances as keep its capacity at the same
 * batch) when that costs no GPU: @out still fits its demand within the latency budget, places,
 * and holds no more GPUs than before. Returns 0 or -ENOMEM.
 */
static int keep_shares(struct loki_planner *pl, const struct loki_plan *cur, const double *demand,
                       struct loki_plan *out)
{
    const struct loki_topology *topo = pl->topo;
    int rc = 0;
    for (int p = 0; p < topo->n_pipelines; p++)
        for (int t = 0; t < topo->pipelines[p].n_tasks; t++)
            for (int v = 0; v < topo->pipelines[p].tasks[t].n_variants; v++) {
                const struct loki_variant *va = &topo->pipelines[p].tasks[t].variants[v];
                struct loki_plan_variant *pv = &out->var[p][t][v], saved = *pv;
                const struct loki_plan_variant *cv = &cur->var[p][t][v];
                if (pv->instances <= 0 || cv->instances <= 0 || pv->spares || cv->spares ||
                    fabs(pv->share - cv->share) < 1e-9)
                    continue;
                double need = pv->instances * loki_variant_throughput(va, pv->batch, pv->share);
                double thr = loki_variant_throughput(va, pv->batch, cv->share);
                if (!(thr > 0))
                    continue;
                int m = (int)ceil(need / thr - 1e-9);
                double used = out->gpus_used + m * cv->share - pv->instances * pv->share;
                if (used > topo->gpus.count + 1e-9)
                    continue;
                int active = out->gpus_active;
                pv->instances = m;
                pv->share = cv->share;
                if ((rc = loki__plan_finish(topo, demand, &pl->fan, out)) < 0)
                    return rc;
                if (loki__plan_fits(topo, out, demand, &pl->fan) && loki__place(topo, out) == 0 &&
                    out->gpus_active <= active)
                    continue;
                *pv = saved;
                if ((rc = loki__plan_finish(topo, demand, &pl->fan, out)) < 0)
                    return rc;
                if (loki__place(topo, out) != 0)
                    return LOKI_EINFEASIBLE; /* placed before: cannot happen */
            }
    return 0;
}

static int solve_policy(struct loki_planner *pl, enum loki_policy policy, const double *demand,
                        const struct loki_plan *current, double now_s, struct loki_plan *out)
{
    const struct loki_topology *topo = pl->topo;
    double t0 = loki__now_ms();
    const struct loki_plan *warm = current && current->policy == policy ? current : NULL;
    int rc = solve_once(pl, policy, demand, warm, out);
    if (rc < 0)
        return rc;
    stamp(topo, warm, out, now_s);
    if (warm && policy != LOKI_POLICY_STATIC && carries(pl, warm, demand)) {
        double h = topo->planner.hysteresis > 0 ? topo->planner.hysteresis : 0;
        double an = mean_accuracy(topo, out, demand), ac = mean_accuracy(topo, warm, demand);
        /* under an accuracy floor, fewer GPUs at or above it win even at some accuracy */
        bool fewer_gpus = (an >= ac - 1e-9 || meets_floor(topo, policy, out, demand)) &&
                          out->gpus_used < warm->gpus_used * (1 - h) - 1e-9;
        bool better = an > ac * (1 + h) + 1e-12 || fewer_gpus;
        if (better && !fewer_gpus) {
            double d2[LOKI_MAX_PIPELINES];
            for (int p = 0; p < topo->n_pipelines; p++)
                d2[p] = demand[p] * (1 + UPGRADE_MARGIN);
            if (!carries(pl, out, d2)) {
                /* ask for the margin explicitly: keep the current plan unless the more
                 * accurate one still wins with it */
                struct loki_plan *alt = malloc(sizeof(*alt));
                better = false;
                if (alt && solve_once(pl, policy, d2, warm, alt) >= 0 &&
                    mean_accuracy(topo, alt, demand) > ac * (1 + h) + 1e-12) {
                    memcpy(out, alt, sizeof(*out));
                    stamp(topo, warm, out, now_s);
                    better = true;
                }
                free(alt);
            }
        }
        /*
         * The whole plan dwells too: while the current plan carries demand it is not
         * replaced within min_dwell_s of its own start. Without this, demand noise around
         * a capacity threshold flips between a plan that just fails to carry it (forced
         * switch) and a more accurate one that just does ("better" switch back).
         */
        bool dwell_blocks = now_s - warm->created_s < topo->planner.min_dwell_s;
        for (int p = 0; p < topo->n_pipelines; p++)
            for (int t = 0; t < topo->pipelines[p].n_tasks; t++)
                for (int v = 0; v < topo->pipelines[p].tasks[t].n_variants; v++) {
                    const struct loki_plan_variant *w = &warm->var[p][t][v];
                    if (w->instances > w->spares && out->var[p][t][v].instances == 0 &&
                        now_s - w->since_s < topo->planner.min_dwell_s)
                        dwell_blocks = true;
                }
        if (!better || dwell_blocks) {
            double ms = loki__now_ms() - t0;
            memcpy(out, warm, sizeof(*out));
            if ((rc = loki__plan_finish(topo, demand, &pl->fan, out)) < 0)
                return rc;
            out->kept = true;
            out->solve_ms = ms;
            return 0;
        }
    } else if (warm && policy != LOKI_POLICY_STATIC && FORCED_MARGIN > 0 &&
               out->mode != LOKI_MODE_SERVED) {
        /*
         * Forced: the current plan cannot carry demand. A plan cut exactly to this estimate
         * is forced out again by the next small rise of a noisy estimate (at a constant
         * 300 qps that re-planned every 5 s), so plan for FORCED_MARGIN more when that costs
         * no change of mode; in served mode it would only shed more.
         */
        double d2[LOKI_MAX_PIPELINES];
        for (int p = 0; p < topo->n_pipelines; p++)
            d2[p] = demand[p] * (1 + FORCED_MARGIN);
        struct loki_plan *alt = malloc(sizeof(*alt));
        if (alt && solve_once(pl, policy, d2, warm, alt) >= 0 && alt->mode == out->mode) {
            double ms = out->solve_ms + alt->solve_ms;
            memcpy(out, alt, sizeof(*out));
            out->solve_ms = ms;
            stamp(topo, warm, out, now_s);
            if ((rc = loki__plan_finish(topo, demand, &pl->fan, out)) < 0) {
                free(alt);
                return rc;
            }
        }
        free(alt);
    }
    if (warm && policy != LOKI_POLICY_STATIC && (rc = keep_shares(pl, warm, demand, out)) < 0)
        return rc;
    loki__place_stably(topo, current, out);
    loki__set_fallbacks(topo, policy, out);
    out->solve_ms = loki__now_ms() - t0;
    return 0;
}

int loki_planner_solve_policy(struct loki_planner *pl, enum loki_policy policy,
                              const double *demand, const struct loki_plan *current, double now_s,
                              struct loki_plan *out)
{
    if (!pl || !demand || !out || out == current)
        return -EINVAL;
    int rc = solve_policy(pl, policy, demand, current, now_s, out);
    if (rc == 0)
        loki__plan_explain(pl->topo, policy, demand, out);
    return rc;
}

int loki_planner_solve(struct loki_planner *pl, const double *demand,
                       const struct loki_plan *current, double now_s, struct loki_plan *out)
{
    if (!pl)
        return -EINVAL;
    return loki_planner_solve_policy(pl, pl->topo->planner.policy, demand, current, now_s, out);
}
