/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The flow formulation (planner/milp_flow.c, the default) against the path
 * formulation it replaces and against brute-force enumeration written here:
 * equal optima on the traffic example (whole GPUs and quarter shares) and on
 * random small pipelines (chains of two and three tasks, trees of depth two
 * and three), mode by mode; no path cap on a pipeline the path formulation
 * must thin; a model that grows by the same number of columns per added
 * task. Every solve is exact (gap 1e-9, no time limit): nothing depends on
 * timing.
 */
#include <glpk.h>
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

static void milp(const struct loki_topology *t, enum loki__milp_mode mode, double demand,
                 enum loki_formulation form, double gap, double limit_ms,
                 struct loki__milp_res *res)
{
    struct loki__milp_req rq;
    memset(&rq, 0, sizeof(rq));
    rq.topo = t;
    rq.demand[0] = demand;
    rq.mode = mode;
    rq.best_only = mode == LOKI__MILP_HARDWARE;
    rq.budget = t->gpus.count;
    rq.mip_gap = gap;
    rq.time_limit_ms = limit_ms;
    rq.formulation = form;
    assert_int_equal(loki__milp_solve(&rq, res), 0);
}

static bool same(double a, double b, double tol)
{
    return fabs(a - b) <= tol * fmax(1, fabs(b));
}

/* GPUs (shares) of a MILP answer. */
static double gpus_of(const struct loki_topology *t, const struct loki__milp_res *r)
{
    double g = 0;
    const struct loki_pipeline *p = &t->pipelines[0];
    for (int k = 0; k < p->n_tasks; k++)
        for (int v = 0; v < p->tasks[k].n_variants; v++)
            g += r->inst[0][k][v] * r->share[0][k][v];
    return g;
}

/* Both formulations, exact, in @mode at @d: the same feasibility and objective. */
static void agree(const struct loki_topology *t, enum loki__milp_mode mode, double d,
                  const char *what)
{
    struct loki__milp_res *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    milp(t, mode, d, LOKI_FORMULATION_FLOW, EXACT, 0, a);
    milp(t, mode, d, LOKI_FORMULATION_PATHS, EXACT, 0, b);
    assert_true(a->flow && !b->flow);
    if (a->feasible != b->feasible)
        fail_msg("%s mode %d at %.1f: flow feasible %d, paths %d", what, mode, d, a->feasible,
                 b->feasible);
    if (a->feasible && !same(a->objective, b->objective, 1e-6))
        fail_msg("%s mode %d at %.1f: flow %.9f, paths %.9f", what, mode, d, a->objective,
                 b->objective);
    free(a);
    free(b);
}

/* Traffic analysis, 20 whole GPUs: hardware, accuracy and served modes over the day's range. */
static void test_traffic_equal(void **state)
{
    (void)state;
    struct loki_topology *t = loki_test_traffic();
    const double hw[] = {40, 100, 140};
    for (int i = 0; i < 3; i++)
        agree(t, LOKI__MILP_HARDWARE, hw[i], "traffic");
    const double acc[] = {250, 400, 550, 700, 850, 1000};
    for (int i = 0; i < 6; i++)
        agree(t, LOKI__MILP_ACCURACY, acc[i], "traffic");
    agree(t, LOKI__MILP_SERVED, 1400, "traffic");
    free(t);
}

/* The same pipeline on 8 GPUs at quarter shares (examples/h200x8.yaml). */
static void test_h200_quarters_equal(void **state)
{
    (void)state;
    struct loki_topology *t = NULL;
    char err[1024];
    if (loki_topology_load(loki_test_src("examples/h200x8.yaml"), &t, err, sizeof(err)) != 0)
        fail_msg("cannot load examples/h200x8.yaml: %s", err);
    assert_true(t->gpus.share_granularity == 0.25);
    agree(t, LOKI__MILP_HARDWARE, 60, "h200x8");
    agree(t, LOKI__MILP_ACCURACY, 400, "h200x8");
    free(t);
}

/* ---- brute force ---- */

enum { BF_HW, BF_ACC, BF_SERVED };

/*
 * Every integer decision enumerated (per variant: off, or one batch size and
 * share and 1.. instances within the GPUs), and for each the routing solved
 * as an LP over variant paths, on the router's terms: a root query's path
 * through a task of depth 2 that has children (v) may take an edge into v
 * from a root variant no slower than v's cap, and an edge out of v only if
 * the cap plus v plus the rest fits h x SLO, the caps enumerated over the
 * root options' latencies (that is every path the router's per-parent split
 * can take, within the budget).
 */
struct bf {
    const struct loki_topology *t;
    double demand;
    int mode;
    int nchains, chains[4][LOKI_MAX_TASKS], len[4];
    int nvar, vt[32], vv[32];
    int opt_b[32], opt_s[32], z[32]; /* opt_b < 0: off */
    double cap[32];                  /* mid variants: latency cap on the edge in */
    int nmid, mid[32];
    double best; /* most accuracy / served, or fewest GPUs */
    bool found;
    long lps;
};

static double lat(const struct bf *b, int id)
{
    const struct loki_variant *v = &b->t->pipelines[0].tasks[b->vt[id]].variants[b->vv[id]];
    return v->latency_ms[b->opt_s[id]][b->opt_b[id]];
}

static double thr(const struct bf *b, int id)
{
    const struct loki_variant *v = &b->t->pipelines[0].tasks[b->vt[id]].variants[b->vv[id]];
    return v->batches[b->opt_b[id]] * 1000.0 / lat(b, id);
}

static int vid(const struct bf *b, int task, int v)
{
    for (int i = 0; i < b->nvar; i++)
        if (b->vt[i] == task && b->vv[i] == v)
            return i;
    return -1;
}

static int depth_of(const struct loki_pipeline *p, int t)
{
    int d = 1;
    for (int k = 0; k < p->n_tasks; k++)
        for (int c = 0; c < p->tasks[k].n_children; c++)
            if (p->tasks[k].children[c] == t)
                return 1 + depth_of(p, k);
    return d;
}

struct bpath {
    int chain, var[LOKI_MAX_TASKS];
    double mult[LOKI_MAX_TASKS], acc;
};

/* Paths of chain @k whose every edge the caps allow. */
static int enum_paths(const struct bf *b, int k, int pos, int *var, double l, struct bpath *out,
                      int n)
{
    const struct loki_pipeline *p = &b->t->pipelines[0];
    double budget = b->t->planner.headroom * p->slo_ms;
    if (pos == b->len[k]) {
        struct bpath *ph = &out[n];
        ph->chain = k;
        memcpy(ph->var, var, sizeof(ph->var));
        double m = 1;
        for (int i = 0; i < b->len[k]; i++) {
            int task = b->chains[k][i];
            ph->mult[i] = m;
            if (i + 1 < b->len[k])
                m *= p->tasks[task]
                         .variants[var[task]]
                         .fanout[loki_task_child_slot(&p->tasks[task], b->chains[k][i + 1])]
                         .mean;
        }
        ph->acc = loki__path_accuracy(p, b->chains[k], b->len[k], var);
        return n + 1;
    }
    int task = b->chains[k][pos];
    for (int v = 0; v < p->tasks[task].n_variants; v++) {
        int id = vid(b, task, v);
        if (id < 0 || b->opt_b[id] < 0)
            continue;
        double l2 = l + lat(b, id);
        if (pos == 1 && depth_of(p, task) == 2 && p->tasks[task].n_children > 0) {
            /* a mid variant: the edge in within its cap, the rest from the cap on */
            if (l > b->cap[id] + 1e-9)
                continue;
            l2 = b->cap[id] + lat(b, id);
        }
        if (l2 > budget + 1e-9)
            continue;
        var[task] = v;
        n = enum_paths(b, k, pos + 1, var, l2, out, n);
    }
    return n;
}

/* The LP over paths for the integer decisions and caps now set. */
static void lp_leaf(struct bf *b)
{
    const struct loki_topology *t = b->t;
    const struct loki_pipeline *p = &t->pipelines[0];
    static struct bpath paths[8192];
    int n = 0, first[4], cnt[4];
    for (int k = 0; k < b->nchains; k++) {
        int var[LOKI_MAX_TASKS] = {0};
        first[k] = n;
        n = enum_paths(b, k, 0, var, 0, paths, n);
        cnt[k] = n - first[k];
        if (cnt[k] == 0 && b->mode != BF_SERVED)
            return;
    }
    double gpus = 0;
    for (int i = 0; i < b->nvar; i++)
        if (b->opt_b[i] >= 0)
            gpus += b->z[i] * p->tasks[b->vt[i]].variants[b->vv[i]].shares[b->opt_s[i]];
    if (b->mode == BF_HW && b->found && gpus >= b->best - 1e-9)
        return;
    b->lps++;
    glp_prob *lp = glp_create_prob();
    glp_set_obj_dir(lp, GLP_MAX);
    int ncol = n + 1; /* the last: the served fraction */
    glp_add_cols(lp, ncol);
    for (int i = 0; i < n; i++) {
        glp_set_col_bnds(lp, i + 1, GLP_DB, 0, 1);
        if (b->mode == BF_ACC)
            glp_set_obj_coef(lp, i + 1, paths[i].acc / b->nchains);
    }
    if (b->mode == BF_SERVED) {
        glp_set_col_bnds(lp, ncol, GLP_DB, 0, 1);
        glp_set_obj_coef(lp, ncol, 1);
    } else {
        glp_set_col_bnds(lp, ncol, GLP_FX, 1, 1);
    }
    static int ia[200000], ja[200000];
    static double ar[200000];
    int nz = 0, row;
#define PUT(r, c, v) (++nz, ia[nz] = (r), ja[nz] = (c), ar[nz] = (v))
    for (int k = 0; k < b->nchains; k++) {
        row = glp_add_rows(lp, 1);
        glp_set_row_bnds(lp, row, GLP_FX, 0, 0);
        for (int i = first[k]; i < first[k] + cnt[k]; i++)
            PUT(row, i + 1, 1);
        PUT(row, ncol, -1);
    }
    /* Consecutive chains agree on how root queries spread over their shared prefix. */
    for (int k = 1; k < b->nchains; k++) {
        int lcp = 0;
        while (lcp < b->len[k] && lcp < b->len[k - 1] && b->chains[k][lcp] == b->chains[k - 1][lcp])
            lcp++;
        for (int i = first[k]; i < first[k] + cnt[k]; i++) {
            /* one row per distinct prefix, keyed by its first path in chain k */
            bool seen = false;
            for (int j = first[k]; j < i && !seen; j++) {
                seen = true;
                for (int q = 0; q < lcp && seen; q++)
                    seen = paths[j].var[b->chains[k][q]] == paths[i].var[b->chains[k][q]];
            }
            if (seen)
                continue;
            row = glp_add_rows(lp, 1);
            glp_set_row_bnds(lp, row, GLP_FX, 0, 0);
            for (int side = 0; side < 2; side++) {
                int kk = side ? k - 1 : k;
                for (int j = first[kk]; j < first[kk] + cnt[kk]; j++) {
                    bool eq = true;
                    for (int q = 0; q < lcp && eq; q++)
                        eq = paths[j].var[b->chains[k][q]] == paths[i].var[b->chains[k][q]];
                    if (eq)
                        PUT(row, j + 1, side ? -1 : 1);
                }
            }
        }
    }
    /* Capacity: each task's load read off the first chain through it. */
    for (int id = 0; id < b->nvar; id++) {
        row = glp_add_rows(lp, 1);
        glp_set_row_bnds(lp, row, GLP_UP, 0, b->opt_b[id] >= 0 ? b->z[id] * thr(b, id) : 0);
        int task = b->vt[id], owner = -1, pos = -1;
        for (int k = 0; k < b->nchains && owner < 0; k++)
            for (int j = 0; j < b->len[k]; j++)
                if (b->chains[k][j] == task)
                    owner = k, pos = j;
        for (int i = first[owner]; i < first[owner] + cnt[owner]; i++)
            if (paths[i].var[task] == b->vv[id])
                PUT(row, i + 1, t->planner.beta * b->demand * paths[i].mult[pos]);
    }
#undef PUT
    glp_load_matrix(lp, nz, ia, ja, ar);
    glp_smcp sm;
    glp_init_smcp(&sm);
    sm.msg_lev = GLP_MSG_OFF;
    sm.presolve = GLP_ON;
    if (glp_simplex(lp, &sm) == 0 && glp_get_status(lp) == GLP_OPT) {
        double obj = glp_get_obj_val(lp);
        if (b->mode == BF_HW) {
            b->best = gpus;
            b->found = true;
        } else if (!b->found || obj > b->best) {
            b->best = obj;
            b->found = true;
        }
    }
    glp_delete_prob(lp);
}

/* The caps of the mid variants that run, each among the latencies of the root variants on. */
static void caps(struct bf *b, int i)
{
    if (i == b->nmid) {
        lp_leaf(b);
        return;
    }
    int id = b->mid[i];
    if (b->opt_b[id] < 0) {
        caps(b, i + 1);
        return;
    }
    const struct loki_pipeline *p = &b->t->pipelines[0];
    for (int r = 0; r < b->nvar; r++) {
        if (b->vt[r] != p->root || b->opt_b[r] < 0)
            continue;
        b->cap[id] = lat(b, r);
        caps(b, i + 1);
    }
}

static void rec(struct bf *b, int id, double left)
{
    if (id == b->nvar) {
        caps(b, 0);
        return;
    }
    const struct loki_task *task = &b->t->pipelines[0].tasks[b->vt[id]];
    const struct loki_variant *v = &task->variants[b->vv[id]];
    b->opt_b[id] = -1;
    rec(b, id + 1, left);
    if (b->mode == BF_HW && b->vv[id] != loki_task_best_variant(task))
        return;
    for (int s = 0; s < v->n_shares; s++) {
        if (s > 0 && b->t->gpus.share_granularity >= 1)
            continue;
        for (int bi = 0; bi < v->n_batches; bi++)
            for (int z = 1; z * v->shares[s] <= left + 1e-9; z++) {
                b->opt_b[id] = bi;
                b->opt_s[id] = s;
                b->z[id] = z;
                rec(b, id + 1, left - z * v->shares[s]);
            }
    }
    b->opt_b[id] = -1;
}

static bool brute(const struct loki_topology *t, double demand, int mode, double *best, long *lps)
{
    struct bf *b = calloc(1, sizeof(*b));
    b->t = t;
    b->demand = demand;
    b->mode = mode;
    const struct loki_pipeline *p = &t->pipelines[0];
    b->nchains = loki_pipeline_chains(p, b->chains, b->len, 4);
    for (int k = 0; k < p->n_tasks; k++)
        for (int v = 0; v < p->tasks[k].n_variants; v++) {
            if (depth_of(p, k) == 2 && p->tasks[k].n_children > 0)
                b->mid[b->nmid++] = b->nvar;
            b->vt[b->nvar] = k;
            b->vv[b->nvar++] = v;
        }
    rec(b, 0, t->gpus.count);
    *best = b->best;
    *lps += b->lps;
    bool found = b->found;
    free(b);
    return found;
}

/*
 * A random pipeline of @shape: 0 a chain of 2, 1 a chain of 3, 2 a root with
 * two leaves, 3 a depth-3 tree (root -> a -> c, root -> b).
 */
static struct loki_topology *random_shape(unsigned seed, int shape, double *unit)
{
    unsigned s = seed * 7919u + (unsigned)shape;
    int n_tasks = shape == 0 ? 2 : shape == 3 ? 4 : 3;
    int nv[4], total = 0;
    for (int k = 0; k < n_tasks; k++) {
        nv[k] = n_tasks == 4 ? 2 : 2 + (int)(prand(&s) * 2);
        if (total + nv[k] > 7 && n_tasks < 4)
            nv[k] = 2;
        total += nv[k];
    }
    bool halves = seed % 3 == 0 && n_tasks < 4;
    int gpus = n_tasks == 4             ? 4
               : halves || n_tasks == 3 ? 2 + (int)!halves
                                        : 2 + (int)(prand(&s) * 2);
    struct loki_topology *t = ptest_random(seed, n_tasks, nv, shape == 2, halves, gpus);
    struct loki_pipeline *p = &t->pipelines[0];
    if (shape == 3) {
        p->tasks[0].n_children = 2;
        p->tasks[0].children[0] = 1;
        p->tasks[0].children[1] = 2;
        p->tasks[1].n_children = 1;
        p->tasks[1].children[0] = 3;
        p->tasks[2].n_children = 0;
    }
    const struct loki_variant *r = &p->tasks[0].variants[nv[0] - 1];
    *unit = r->batches[2] * 1000.0 / r->latency_ms[0][2] * gpus / n_tasks;
    return t;
}

/*
 * Random pipelines of every shape at three demand levels: the flow MILP's
 * optimum equals the enumeration's (GPUs in hardware mode, accuracy in
 * accuracy mode, the served fraction in served mode) and the path
 * formulation's objective.
 */
static void test_random_enumerated(void **state)
{
    (void)state;
    int seen[4][3] = {{0}};
    long lps = 0;
    struct loki__milp_res *a = calloc(1, sizeof(*a));
    for (int shape = 0; shape < 4; shape++)
        for (unsigned seed = 1; seed <= (shape == 3 ? 6u : 10u); seed++) {
            double unit;
            struct loki_topology *t = random_shape(seed, shape, &unit);
            const double levels[] = {0.15, 0.5, 1.2};
            for (int li = 0; li < 3; li++) {
                double d = levels[li] * unit;
                char what[48];
                snprintf(what, sizeof(what), "shape %d seed %u", shape, seed);
                double best;
                int mode;
                if (brute(t, d, BF_HW, &best, &lps)) {
                    mode = BF_HW;
                    milp(t, LOKI__MILP_HARDWARE, d, LOKI_FORMULATION_FLOW, EXACT, 0, a);
                    assert_true(a->feasible);
                    if (!same(gpus_of(t, a), best, 1e-9))
                        fail_msg("%s at %.2f: flow hardware mode %.2f GPUs, enumeration %.2f", what,
                                 d, gpus_of(t, a), best);
                } else if (brute(t, d, BF_ACC, &best, &lps)) {
                    mode = BF_ACC;
                    milp(t, LOKI__MILP_ACCURACY, d, LOKI_FORMULATION_FLOW, EXACT, 0, a);
                    assert_true(a->feasible);
                    /* the MILP also saves GPUs at a weight of at most 1e-4 of accuracy */
                    if (fabs(a->acc_root[0] - best) > 2e-4)
                        fail_msg("%s at %.2f: flow accuracy %.6f, enumeration %.6f", what, d,
                                 a->acc_root[0], best);
                } else {
                    mode = BF_SERVED;
                    assert_true(brute(t, d, BF_SERVED, &best, &lps));
                    milp(t, LOKI__MILP_SERVED, d, LOKI_FORMULATION_FLOW, EXACT, 0, a);
                    assert_true(a->feasible);
                    if (fabs(a->served[0] - best) > 2e-3)
                        fail_msg("%s at %.2f: flow serves %.6f, enumeration %.6f", what, d,
                                 a->served[0], best);
                }
                agree(t,
                      mode == BF_HW    ? LOKI__MILP_HARDWARE
                      : mode == BF_ACC ? LOKI__MILP_ACCURACY
                                       : LOKI__MILP_SERVED,
                      d, what);
                seen[shape][mode]++;
            }
            free(t);
        }
    print_message("chain2 %d/%d/%d, chain3 %d/%d/%d, tree2 %d/%d/%d, tree3 %d/%d/%d "
                  "(hardware/accuracy/served), %ld enumerated LPs\n",
                  seen[0][0], seen[0][1], seen[0][2], seen[1][0], seen[1][1], seen[1][2],
                  seen[2][0], seen[2][1], seen[2][2], seen[3][0], seen[3][1], seen[3][2], lps);
    for (int shape = 0; shape < 4; shape++)
        assert_true(seen[shape][BF_ACC] > 0);
    free(a);
}

/* ---- scale ---- */

/* A chain of @tasks identical tasks: @nv variants, batches 1..64, shares 1, 1/2, 1/4. */
static struct loki_topology *uniform_chain(int tasks, int nv, int gpus)
{
    struct loki_topology *t = calloc(1, sizeof(*t));
    loki_topology_defaults(t);
    t->gpus.count = gpus;
    t->gpus.mem_mb = 80000;
    t->gpus.share_granularity = 0.25;
    t->n_pipelines = 1;
    struct loki_pipeline *p = &t->pipelines[0];
    snprintf(p->name, sizeof(p->name), "uniform%d", tasks);
    p->n_tasks = tasks;
    p->slo_ms = 100.0 * tasks;
    for (int k = 0; k < tasks; k++) {
        struct loki_task *tk = &p->tasks[k];
        snprintf(tk->name, sizeof(tk->name), "task%d", k);
        tk->n_variants = nv;
        if (k + 1 < tasks) {
            tk->n_children = 1;
            tk->children[0] = k + 1;
        }
        for (int v = 0; v < nv; v++) {
            struct loki_variant *var = &tk->variants[v];
            snprintf(var->name, sizeof(var->name), "v%d", v);
            var->accuracy = 60 + 40.0 * v / (nv - 1);
            var->mem_mb = 500 + 300 * v;
            var->n_batches = 7;
            var->n_shares = 3;
            var->shares[0] = 1, var->shares[1] = 0.5, var->shares[2] = 0.25;
            for (int b = 0; b < 7; b++) {
                var->batches[b] = 1 << b;
                double l = 6 * (1 + 0.6 * v) * (0.6 + 0.4 * (1 << b));
                for (int s = 0; s < 3; s++)
                    var->latency_ms[s][b] =
                        l * (1 + (1 / var->shares[s] - 1) * fmin(1, (1 << b) / 32.0));
            }
            var->fanout[0].mean = 1 + 0.3 * v;
        }
    }
    return t;
}

/*
 * Identical tasks added one at a time: from the fourth on, every task adds
 * the same number of columns (linear growth), where the path formulation's
 * options multiply and overflow its cap (thinned: truncated). The flow answer
 * cut short by a 1 ms limit is still a plan that passes the checker.
 */
static void test_linear_size(void **state)
{
    (void)state;
    struct loki__milp_res *a = calloc(1, sizeof(*a));
    int cols[7] = {0};
    for (int k = 2; k <= 6; k++) {
        struct loki_topology *t = uniform_chain(k, 6, 64);
        milp(t, LOKI__MILP_ACCURACY, 800, LOKI_FORMULATION_FLOW, 0.005, 1, a);
        cols[k] = a->n_cols;
        assert_false(a->truncated);
        if (k == 4) {
            milp(t, LOKI__MILP_ACCURACY, 800, LOKI_FORMULATION_PATHS, 0.005, 1, a);
            assert_true(a->truncated);
        }
        free(t);
    }
    print_message("flow columns for chains of 2..6 tasks: %d %d %d %d %d\n", cols[2], cols[3],
                  cols[4], cols[5], cols[6]);
    assert_int_equal(cols[6] - cols[5], cols[5] - cols[4]);

    struct loki_topology *t = uniform_chain(5, 6, 64);
    struct loki_planner *pl;
    assert_int_equal(loki_planner_create(t, &pl), 0);
    struct loki_plan *p = malloc(sizeof(*p));
    t->planner.time_limit_ms = 1;
    double d = 800;
    assert_int_equal(loki_planner_solve(pl, &d, NULL, 0, p), 0);
    char why[512] = "";
    if (loki_plan_check(t, p, &d, why, sizeof(why)) != 0)
        fail_msg("5-task chain at 800 qps: %s", why);
    assert_false(p->truncated);
    assert_true(p->served_fraction[0] > 1 - 1e-9);
    free(p);
    loki_planner_destroy(pl);
    free(t);
    free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traffic_equal),
        cmocka_unit_test(test_h200_quarters_equal),
        cmocka_unit_test(test_random_enumerated),
        cmocka_unit_test(test_linear_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
