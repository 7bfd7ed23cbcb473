/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The MILP against exhaustive enumeration on small random pipelines: every
 * integer decision (variant option, batch, share, instance count) is
 * enumerated, the routing fractions of each assignment solved as a plain LP,
 * and the best value compared with what the planner reports, mode by mode.
 * Every plan also passes the independent checker.
 */
#include <glpk.h>
#include <math.h>

#include "harness.h"
#include "loki/planner.h"
#include "ptest.h"

enum { BF_HW, BF_ACC, BF_SERVED };

struct bf {
    const struct loki_topology *t;
    double demand;
    int mode;
    int nchains, chains[4][LOKI_MAX_TASKS], len[4];
    int nvar, vt[32], vv[32];
    int opt_b[32], opt_s[32], z[32]; /* opt_b < 0: off */
    double best;                     /* max accuracy / served, or min GPUs */
    bool found;
    long leaves;
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

struct bpath {
    int chain, var[LOKI_MAX_TASKS];
    double mult[LOKI_MAX_TASKS], acc;
};

static int enum_paths(const struct bf *b, int k, int pos, int *var, double l, struct bpath *out,
                      int n)
{
    const struct loki_pipeline *p = &b->t->pipelines[0];
    const struct loki_topology *t = b->t;
    if (pos == b->len[k]) {
        struct bpath *ph = &out[n];
        ph->chain = k;
        memcpy(ph->var, var, sizeof(ph->var));
        double m = 1, a = 1;
        for (int i = 0; i < b->len[k]; i++) {
            int task = b->chains[k][i];
            ph->mult[i] = m;
            a *= p->tasks[task].variants[var[task]].accuracy / 100;
            if (i + 1 < b->len[k])
                m *= p->tasks[task]
                         .variants[var[task]]
                         .fanout[loki_task_child_slot(&p->tasks[task], b->chains[k][i + 1])]
                         .mean;
        }
        ph->acc = a;
        return n + 1;
    }
    int task = b->chains[k][pos];
    for (int v = 0; v < p->tasks[task].n_variants; v++) {
        int id = vid(b, task, v);
        if (id < 0 || b->opt_b[id] < 0)
            continue;
        double l2 = l + lat(b, id);
        if (l2 > t->planner.headroom * p->slo_ms + 1e-9)
            continue;
        var[task] = v;
        n = enum_paths(b, k, pos + 1, var, l2, out, n);
    }
    return n;
}

/* LP over path fractions for the current integer assignment. */
static void leaf(struct bf *b)
{
    b->leaves++;
    const struct loki_topology *t = b->t;
    struct bpath paths[4096];
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
            gpus +=
                b->z[i] * t->pipelines[0].tasks[b->vt[i]].variants[b->vv[i]].shares[b->opt_s[i]];
    if (b->mode == BF_HW && b->found && gpus >= b->best - 1e-9)
        return;
    glp_prob *lp = glp_create_prob();
    glp_set_obj_dir(lp, GLP_MAX);
    int ncol = n + 1; /* last column: sigma */
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
    int ia[20000], ja[20000];
    double ar[20000];
    int nz = 0, row;
    for (int k = 0; k < b->nchains; k++) {
        row = glp_add_rows(lp, 1);
        glp_set_row_bnds(lp, row, GLP_FX, 0, 0);
        for (int i = first[k]; i < first[k] + cnt[k]; i++)
            ++nz, ia[nz] = row, ja[nz] = i + 1, ar[nz] = 1;
        ++nz, ia[nz] = row, ja[nz] = ncol, ar[nz] = -1;
    }
    /* Two chains (root + two leaves) agree on the root's split. */
    const struct loki_pipeline *p = &t->pipelines[0];
    if (b->nchains == 2)
        for (int v = 0; v < p->tasks[p->root].n_variants; v++) {
            row = glp_add_rows(lp, 1);
            glp_set_row_bnds(lp, row, GLP_FX, 0, 0);
            for (int i = 0; i < n; i++)
                if (paths[i].var[p->root] == v)
                    ++nz, ia[nz] = row, ja[nz] = i + 1, ar[nz] = paths[i].chain ? -1 : 1;
        }
    for (int id = 0; id < b->nvar; id++) {
        row = glp_add_rows(lp, 1);
        double cap = b->opt_b[id] >= 0 ? b->z[id] * thr(b, id) : 0;
        glp_set_row_bnds(lp, row, GLP_UP, 0, cap);
        int task = b->vt[id];
        for (int i = 0; i < n; i++) {
            const struct bpath *ph = &paths[i];
            /* Loads from the first chain through the task. */
            int owner = -1, pos = -1;
            for (int k = 0; k < b->nchains && owner < 0; k++)
                for (int j = 0; j < b->len[k]; j++)
                    if (b->chains[k][j] == task) {
                        owner = k;
                        pos = j;
                    }
            if (ph->chain != owner || ph->var[task] != b->vv[id])
                continue;
            ++nz, ia[nz] = row, ja[nz] = i + 1,
                  ar[nz] = t->planner.beta * b->demand * ph->mult[pos];
        }
    }
    glp_load_matrix(lp, nz, ia, ja, ar);
    glp_smcp sm;
    glp_init_smcp(&sm);
    sm.msg_lev = GLP_MSG_OFF;
    sm.presolve = GLP_ON;
    int rc = glp_simplex(lp, &sm);
    if (rc == 0 && glp_get_status(lp) == GLP_OPT) {
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

static void rec(struct bf *b, int id, double left)
{
    if (id == b->nvar) {
        leaf(b);
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

static bool brute(const struct loki_topology *t, double demand, int mode, double *best,
                  long *leaves)
{
    struct bf b;
    memset(&b, 0, sizeof(b));
    b.t = t;
    b.demand = demand;
    b.mode = mode;
    const struct loki_pipeline *p = &t->pipelines[0];
    b.nchains = loki_pipeline_chains(p, b.chains, b.len, 4);
    for (int k = 0; k < p->n_tasks; k++)
        for (int v = 0; v < p->tasks[k].n_variants; v++) {
            b.vt[b.nvar] = k;
            b.vv[b.nvar++] = v;
        }
    rec(&b, 0, t->gpus.count);
    *best = b.best;
    *leaves += b.leaves;
    return b.found;
}

static void test_random_pipelines(void **state)
{
    (void)state;
    int seen[3] = {0};
    long leaves = 0;
    int cases = 0;
    for (unsigned seed = 1; seed <= 36; seed++) {
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
        int gpus = halves ? 2 : (total > 5 ? 2 + (int)(prand(&s) * 2) : 2 + (int)(prand(&s) * 3));
        struct loki_topology *t = ptest_random(seed, n_tasks, nv, tree, halves, gpus);
        const struct loki_variant *r = &t->pipelines[0].tasks[0].variants[nv[0] - 1];
        double unit = r->batches[2] * 1000.0 / r->latency_ms[0][2];
        double levels[3] = {0.15, 0.7, 2.5};
        struct loki_planner *pl;
        assert_int_equal(loki_planner_create(t, &pl), 0);
        struct loki_plan *plan = malloc(sizeof(*plan));
        for (int li = 0; li < 3; li++) {
            double d = levels[li] * unit * gpus / n_tasks * (0.5 + prand(&s));
            assert_int_equal(loki_planner_solve(pl, &d, NULL, 0, plan), 0);
            char why[512] = "";
            int crc = loki_plan_check(t, plan, &d, why, sizeof(why));
            if (crc != 0)
                fail_msg("seed %u demand %.2f: plan fails the checker: %s", seed, d, why);
            double hw, acc, served;
            bool hw_ok = brute(t, d, BF_HW, &hw, &leaves);
            cases++;
            if (hw_ok) {
                assert_int_equal(plan->mode, LOKI_MODE_HARDWARE);
                /* Burst spares (no planned traffic) come on top of the MILP's optimum. */
                double used = plan->gpus_used;
                for (int k = 0; k < t->pipelines[0].n_tasks; k++)
                    for (int v = 0; v < t->pipelines[0].tasks[k].n_variants; v++)
                        used -= plan->var[0][k][v].spares * plan->var[0][k][v].share;
                if (fabs(used - hw) > 1e-6)
                    fail_msg("seed %u d %.2f: hardware mode uses %.2f GPUs, brute force %.2f", seed,
                             d, used, hw);
                seen[0]++;
                continue;
            }
            assert_int_not_equal(plan->mode, LOKI_MODE_HARDWARE);
            bool acc_ok = brute(t, d, BF_ACC, &acc, &leaves);
            if (acc_ok) {
                assert_int_equal(plan->mode, LOKI_MODE_ACCURACY);
                if (fabs(plan->accuracy[0] - acc) > 2e-4)
                    fail_msg("seed %u d %.2f: accuracy %.6f, brute force %.6f", seed, d,
                             plan->accuracy[0], acc);
                seen[1]++;
                continue;
            }
            assert_int_equal(plan->mode, LOKI_MODE_SERVED);
            assert_true(brute(t, d, BF_SERVED, &served, &leaves));
            if (fabs(plan->served_fraction[0] - served) > 2e-3)
                fail_msg("seed %u d %.2f: served %.6f, brute force %.6f", seed, d,
                         plan->served_fraction[0], served);
            seen[2]++;
        }
        free(plan);
        loki_planner_destroy(pl);
        free(t);
    }
    print_message("%d cases (hardware %d, accuracy %d, served %d), %ld brute-force LPs\n", cases,
                  seen[0], seen[1], seen[2], leaves);
    assert_true(seen[0] > 0 && seen[1] > 0 && seen[2] > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_pipelines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
