/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The MILP's model, shared by milp.c (which builds it and the path
 * formulation's LP), milp_flow.c (the flow formulation's LP) and
 * milp_search.c (which searches either): option nodes, chains, path options
 * or flows, column numbers and the constraint matrix as triplets. Private to
 * those three files, the only ones that include glpk.h.
 */
#ifndef LOKI_PLANNER_MILP_H
#define LOKI_PLANNER_MILP_H

#include <glpk.h>
#include <math.h>
#include <stdbool.h>

#include "internal.h"

struct node {
    int p, t, v, batch;
    double share, lat, thr, mem;
    bool used;
    bool off; /* fixed to zero while the support heuristic runs */
    int col_y, col_z;
};

struct chain {
    int p, len;
    int task[LOKI_MAX_TASKS];
    double base;   /* root demand (or task demand when decoupled) */
    double budget; /* latency budget, ms */
    double weight; /* objective weight of its accuracy */
    int lcp;       /* tasks shared with the previous chain of the pipeline */
    int first, n;  /* its path options */
};

struct path {
    int chain;
    int node[LOKI_MAX_TASKS];
    float mult[LOKI_MAX_TASKS]; /* fan-out product upstream of each position */
    double lat, acc;
    int col;
};

struct flow; /* milp_flow.c */

struct model {
    const struct loki__milp_req *rq;
    struct flow *fl; /* the flow formulation's columns; NULL: path options */
    struct node *nodes;
    int n_nodes;
    /* nodes of (p, t): [tn_first, tn_first + tn_count) */
    int tn_first[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS], tn_count[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS];
    struct chain chains[LOKI_MAX_PIPELINES * LOKI_MAX_TASKS * 2];
    int n_chains;
    int owner[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS], owner_pos[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS];
    int parent[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS];
    double fan[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS][LOKI_MAX_CHILDREN];
    struct path *paths;
    int n_paths, cap_paths;
    bool overflow;
    int max_paths;
    int col_sigma[LOKI_MAX_PIPELINES];
    /* integer GPU aggregates (in share-granularity units): per task, per variant */
    int col_task[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS];
    int col_var[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS];
    int agg_task[LOKI_MAX_PIPELINES * LOKI_MAX_TASKS], n_agg_task;
    int agg_var[LOKI_MAX_PIPELINES * LOKI_MAX_TASKS * LOKI_MAX_VARIANTS], n_agg_var;
    double gran; /* share granularity: 1 for whole GPUs */
    int n_cols;
    /* triplets */
    int *ia, *ja;
    double *ar;
    int nz, cap_nz;
    int n_rows;
    /* per-pipeline objective weights */
    double wp[LOKI_MAX_PIPELINES];
};

/* Units of share granularity one instance of @n takes (an integer by loki__share_allowed). */
static inline double granules(const struct model *m, const struct node *n)
{
    return round(n->share / m->gran);
}

/* Bounds of node @n's columns: free, or fixed to zero while @n->off. */
static inline void node_bounds(const struct model *m, glp_prob *lp, const struct node *n)
{
    double zmax = floor(m->rq->budget / n->share + 1e-9);
    if (n->off) {
        glp_set_col_bnds(lp, n->col_y, GLP_FX, 0, 0);
        glp_set_col_bnds(lp, n->col_z, GLP_FX, 0, 0);
    } else {
        glp_set_col_bnds(lp, n->col_y, GLP_DB, 0, 1);
        if (zmax < 1)
            glp_set_col_bnds(lp, n->col_z, GLP_FX, 0, 0);
        else
            glp_set_col_bnds(lp, n->col_z, GLP_DB, 0, zmax);
    }
}

/*
 * The first version's formulation (per-variant capacity, no GPU aggregates):
 * the reference, and HARDWARE mode, whose models (best variants only) solve
 * in well under a millisecond either way and whose many plans with equally
 * few GPUs then stay the ones the first version chose.
 */
static inline bool plain(const struct loki__milp_req *rq)
{
    return rq->reference || (rq->mode == LOKI__MILP_HARDWARE && !(rq->acc_floor > 0));
}

/* Append @val at (@row, @col) to @m's triplets. Returns 0 or -ENOMEM. */
int loki__milp_nz(struct model *m, int row, int col, double val);

/*
 * Rows both formulations share, into @lp: one option per variant and
 * y <= z <= Zmax y (loki__milp_option_rows); the GPU aggregates, the GPU
 * budget, memory and MPS clients (loki__milp_gpu_rows). Return 0 or -ENOMEM.
 */
int loki__milp_option_rows(struct model *m, glp_prob *lp);
int loki__milp_gpu_rows(struct model *m, glp_prob *lp);

/* Set the GPU aggregates of solution vector @x from its instance counts (milp_search.c). */
void loki__milp_fill_aggregates(const struct model *m, double *x);

/*
 * The routing split of @res from edge weights @l[p][t][u][v] (root arrivals:
 * u = 0) that the router's split must be proportional to, with fallback rows
 * for parent variants without planned traffic (milp_search.c).
 */
void loki__milp_splits(const struct model *m,
                       double (*l)[LOKI_MAX_TASKS][LOKI_MAX_VARIANTS][LOKI_MAX_VARIANTS],
                       struct loki__milp_res *res);

/*
 * The flow formulation (milp_flow.c), on @m's chains and option nodes
 * (built with no thinning): loki__flow_build() prunes the nodes by latency
 * and lays out the flows (-ENOMEM), loki__flow_columns() and
 * loki__flow_rows() load its LP (0 or -ENOMEM), loki__flow_warm() and
 * loki__flow_greedy() write incumbents like milp_search.c's path ones,
 * loki__flow_extract() reads a solution vector into @res, loki__flow_free()
 * releases what build allocated (NULL @m->fl: no-op).
 */
int loki__flow_build(struct model *m);
void loki__flow_columns(struct model *m, glp_prob *lp);
int loki__flow_rows(struct model *m, glp_prob *lp);
bool loki__flow_warm(struct model *m, glp_prob *lp, double *x);
bool loki__flow_greedy(struct model *m, glp_prob *lp, double *x);
int loki__flow_extract(struct model *m, const double *x, struct loki__milp_res *res);
void loki__flow_free(struct model *m);

/*
 * Search the LP of @m, loaded into @lp, within @m->rq's time limit counted
 * from @t0 (milp_search.c); the answer goes into @res. Returns 0
 * (res->feasible says whether there is one), -ENOMEM or LOKI_ESOLVER.
 */
int loki__milp_search(struct model *m, glp_prob *lp, double t0, struct loki__milp_res *res);

#endif
