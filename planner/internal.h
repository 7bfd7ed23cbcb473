/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Planner internals shared by planner.c (policies, placement, hysteresis)
 * and milp.c (the only file that talks to GLPK). Not installed.
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
#define LOKI__MILP_BASIS_MAX 16384
struct loki__milp_basis {
    uint64_t key; /* the model's structure; 0: empty */
    int n_rows, n_cols;
    unsigned char stat[LOKI__MILP_BASIS_MAX];
};

struct loki__milp_res {
    bool feasible;
    bool warm_used;    /* the warm start was a valid incumbent, better than the greedy one */
    bool truncated;    /* node options were thinned to respect max_paths */
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

/* Path accuracy (0..1) of variant assignment @var (per task, -1 off chain) on @chain. */
double loki__path_accuracy(const struct loki_pipeline *p, const int *chain, int len,
                           const int *var);

/* Shares a variant may run at under the topology's granularity. */
bool loki__share_allowed(const struct loki_topology *topo, double share);

/* Monotonic milliseconds. */
double loki__now_ms(void);

#endif
