/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Planner internals shared by its files: planner.c (policy dispatch, Loki's
 * mode ladder, hysteresis), baselines.c, placement.c, check.c (evaluation
 * and checker) and milp.c/milp_search.c (the MILP: the only files that talk
 * to GLPK, through their private milp.h). Not installed.
 */
#ifndef LOKI_PLANNER_INTERNAL_H
#define LOKI_PLANNER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "loki/demand.h"
#include "loki/plan.h"

enum loki__milp_mode {
    LOKI__MILP_HARDWARE = 0, /* minimise GPUs, demand fully carried */
    LOKI__MILP_ACCURACY,     /* maximise accuracy, demand fully carried */
    LOKI__MILP_SERVED,       /* maximise the served fraction */
};

struct loki__milp_req {
    const struct loki_topology *topo;
    const struct loki_fanout_est *fan; /* NULL: topology means */
    double demand[LOKI_MAX_PIPELINES]; /* root qps */
    enum loki__milp_mode mode;
    bool best_only; /* only the most accurate variant of every task */
    /*
     * HARDWARE mode over all variants (!best_only): every pipeline's planned
     * accuracy (per root query, the measure ACCURACY mode maximises) >= this
     * (0..1); 0: no such row. The objective then also rewards accuracy, too
     * little to ever buy a GPU granule.
     */
    double acc_floor;
    /*
     * The plain formulation and search of the first version (per-variant
     * capacity rows, GLPK's presolver, no GPU aggregates, no incumbent, warm
     * start ignored): the baseline quality checks compare against.
     */
    bool reference;
    /*
     * The formulation (milp_flow.c or milp.c). Ignored by the reference and
     * decoupled solves, which are path solves; a flow request falls back to
     * paths for a pipeline shape the flows do not model (milp.c, use_flow()).
     */
    enum loki_formulation formulation;
    /*
     * Proteus: every task is planned alone for task_demand[p][t] with an
     * equal slice of the latency budget (headroom * SLO / depth of its
     * deepest chain); no fan-out or path coupling.
     */
    bool decoupled;
    double task_demand[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS];
    double budget;        /* GPUs, in share units */
    double time_limit_ms; /* <= 0: none */
    double mip_gap;
    int max_paths;                /* path-option cap (0: default) */
    const struct loki_plan *warm; /* NULL or a plan to warm start from */
};

/*
 * The optimal LP basis of the last solve of one kind of model, the start of
 * the next solve of a model with the same structure (only demand and budget
 * differ between the planner's solves): statuses (GLP_BS..GLP_NS) of the
 * rows, then of the columns.
 */
#define LOKI__MILP_BASIS_MAX 131072
struct loki__milp_basis {
    uint64_t key; /* the model's structure; 0: empty */
    int n_rows, n_cols;
    unsigned char stat[LOKI__MILP_BASIS_MAX];
};

struct loki__milp_res {
    bool feasible;
    bool warm_used;    /* the warm start was a valid incumbent, better than the greedy one */
    bool truncated;    /* node options were thinned to respect max_paths */
    bool flow;         /* solved on the flow formulation */
    bool time_limited; /* the time limit cut the search short (answer: best found) */
    int n_cols, n_rows, n_paths;
    double objective, gap, solve_ms;
    int inst[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS];
    int batch[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS];
    double share[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS];
    double load[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS];
    float split[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS][LOKI_MAX_VARIANTS];
    double served[LOKI_MAX_PIPELINES];
    double acc_root[LOKI_MAX_PIPELINES]; /* branches weigh equally */
    double acc_sub[LOKI_MAX_PIPELINES];  /* every leaf sub-query weighs one */
    int n_chains[LOKI_MAX_PIPELINES];
    double chain_lat[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS];
    /*
     * Kept across solves with the same @res (loki__milp_solve() resets
     * everything above): one LP basis per mode. Zero it before the first use.
     */
    struct loki__milp_basis basis[3];
};

/*
 * Build and solve the MILP of @rq. Returns 0 (res->feasible says whether a
 * solution exists), -ENOMEM, or LOKI_ESOLVER.
 */
int loki__milp_solve(const struct loki__milp_req *rq, struct loki__milp_res *res);

/* One planner (loki_planner_create()): owned by the planner thread. */
struct loki_planner {
    const struct loki_topology *topo;
    /*
     * What the MILP solves over: @topo, or (owned) a copy of it in which every variant larger
     * than one GPU's memory is priced out of every path by its latency. The MILP bounds memory
     * only in aggregate, so such a variant could win a solve whose plan then never places.
     */
    const struct loki_topology *milp_topo;
    struct loki_topology *own_topo;
    struct loki_fanout_est fan;
    struct loki__milp_res res; /* the last MILP answer; keeps its LP bases across solves */
    struct loki_plan scratch;  /* a plan's worth of room for one policy at a time */
};

/* ---- plans (planner.c) ---- */

/* Zero @pl and set its policy. */
void loki__plan_reset(struct loki_plan *pl, enum loki_policy policy);

/* Copy a MILP answer's per-variant choice, split, served fractions and objective into @pl. */
void loki__plan_from_res(const struct loki_topology *topo, const struct loki__milp_res *r,
                         struct loki_plan *pl);

/*
 * Loki's mode ladder: hardware scaling, then (@accuracy) accuracy scaling,
 * then the served fraction, each re-solved with a smaller GPU budget while
 * placement fails. @best_only and !@accuracy make it inferline. Returns 0 or
 * a negative errno / LOKI_ESOLVER; @out is always a placed plan on 0.
 */
int loki__solve_ladder(struct loki_planner *pl, enum loki_policy policy, const double *demand,
                       const struct loki_plan *current, bool best_only, bool accuracy,
                       struct loki_plan *out);

/* ---- baselines (baselines.c): one plan for @demand, no hysteresis; errors as the ladder ---- */

int loki__solve_inferline(struct loki_planner *pl, const double *demand,
                          const struct loki_plan *warm, struct loki_plan *out);
/* @current: the plan in force, whose routing gives the per-task demand proteus observes. */
int loki__solve_proteus(struct loki_planner *pl, const double *demand,
                        const struct loki_plan *current, struct loki_plan *out);
/* LOKI_EINFEASIBLE when the fixed plan cannot be placed, -EINVAL when it names no variant. */
int loki__solve_static(struct loki_planner *pl, const double *demand, struct loki_plan *out);

/* ---- placement (placement.c) ---- */

/*
 * Fewer, larger instances for the same GPUs: where a variant runs n instances at share s < 1
 * and n x s is a whole number m of a larger allowed share s' it is profiled at, run m at s'
 * instead, when that keeps the capacity and does not slow a batch (with latency / share, always:
 * the same capacity, each batch faster, fewer processes). The MILP prices both the same.
 */
void loki__coalesce_shares(const struct loki_topology *topo, struct loki_plan *pl);

/*
 * Build @pl's instance list from its per-variant counts and pack it onto GPUs
 * first-fit decreasing (share, then memory). Returns 0, -ENOSPC (does not
 * fit) or -ENOMEM.
 */
int loki__place(const struct loki_topology *topo, struct loki_plan *pl);

/*
 * Re-place @pl's instances so those with a twin in @cur (NULL: nothing runs)
 * keep its GPU; leaves @pl's placement as it was when that does not fit.
 */
void loki__place_stably(const struct loki_topology *topo, const struct loki_plan *cur,
                        struct loki_plan *pl);

/* Set every instance's fallback variant (policy loki with planner.fallback; else none). */
void loki__set_fallbacks(const struct loki_topology *topo, enum loki_policy policy,
                         struct loki_plan *pl);

/* ---- evaluation (check.c) ---- */

/*
 * Recompute everything derived from @pl's per-variant choice and split for
 * root @demand: capacities, GPUs used, loads, chain latencies, accuracies.
 * Returns 0 or -ENOMEM.
 */
int loki__plan_finish(const struct loki_topology *topo, const double *demand,
                      const struct loki_fanout_est *fan, struct loki_plan *pl);

/*
 * Whether @plan carries @demand (served fraction applied) with fan-outs from
 * @fan: capacity at every variant, latency on every path in use. False also
 * when out of memory.
 */
bool loki__plan_fits(const struct loki_topology *topo, const struct loki_plan *plan,
                     const double *demand, const struct loki_fanout_est *fan);

/* ---- explanations (explain.c) ---- */

/*
 * Fill @pl->why and why_text for every pipeline @pl serves less than all of (demand > 0,
 * served_fraction < 1) under @policy; clear them for the others.
 */
void loki__plan_explain(const struct loki_topology *topo, enum loki_policy policy,
                        const double *demand, struct loki_plan *pl);

/* ---- MILP helpers (milp.c) ---- */

/* Path accuracy (0..1) of variant assignment @var (per task, -1 off chain) on @chain. */
double loki__path_accuracy(const struct loki_pipeline *p, const int *chain, int len,
                           const int *var);

/* Shares a variant may run at under the topology's granularity. */
bool loki__share_allowed(const struct loki_topology *topo, double share);

/* Monotonic milliseconds. */
double loki__now_ms(void);

#endif
