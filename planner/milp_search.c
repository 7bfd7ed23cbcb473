/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The search of the planning MILP built by milp.c: incumbents (the warm
 * start, a greedy assignment), the LP relaxation from a stored basis, a
 * support heuristic and GLPK's branch and bound steered by our callback,
 * then reading the answer back as instances, batches, shares and splits.
 *
 * Search, ACCURACY mode (GLPK's presolver is off: it renumbers columns, and
 * then neither an incumbent nor a branching choice can be handed over):
 *   1. Incumbent: the better of the warm start (the current plan raised to
 *      carry the new demand, checked against every row) and a greedy
 *      one-option-per-task assignment (greedy_vector).
 *   2. LP relaxation, started from the optimal basis of the last solve of a
 *      model with the same structure (kept in the caller's result; only
 *      demand and budget differ between the planner's solves). An incumbent
 *      within the gap of its bound is the answer.
 *   3. The MILP restricted to the variants that the
 *      relaxation or the incumbents use (every batch and share of them; the
 *      rest fixed to zero), a small problem whose optimum is usually close to
 *      the global one; it replaces the incumbent when better.
 *   4. Branch and bound on the whole MILP, the incumbent handed over at the
 *      first heuristic call (glp_ios_heur_sol), GPU aggregates branched first.
 * A time limit cuts this short anywhere; the incumbent is then the answer
 * (a short limit degrades accuracy a little instead of dropping to served
 * mode). SERVED mode (no incumbent to hand over; on big models GLPK's
 * presolver finds some served fraction sooner) runs GLPK's branch and cut
 * with its presolver. So do HARDWARE mode and rq->reference, on the first
 * version's formulation (per-variant capacity, no aggregates; see plain()):
 * the reference is the baseline of the quality checks in tests/planner and
 * bench/bench_planner.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "loki/error.h"
#include "milp.h"

struct cbinfo {
    const struct model *m;
    const double *inc; /* incumbent handed to GLPK at the first GLP_IHEUR, or NULL */
    bool given;
    double gap;
};

/* The most fractional column of @cols GLPK may branch on at this node, or 0. */
static int most_fractional(glp_tree *tree, const int *cols, int n)
{
    glp_prob *lp = glp_ios_get_prob(tree);
    int best = 0;
    double bd = 1;
    for (int i = 0; i < n; i++) {
        if (!glp_ios_can_branch(tree, cols[i]))
            continue;
        double v = glp_get_col_prim(lp, cols[i]);
        double d = fabs(v - floor(v) - 0.5);
        if (d < bd) {
            bd = d;
            best = cols[i];
        }
    }
    return best;
}

static void callback(glp_tree *tree, void *info)
{
    struct cbinfo *ci = info;
    switch (glp_ios_reason(tree)) {
    case GLP_IBRANCH: {
        /* GPUs per task first, then per variant; the option binaries are left to GLPK. */
        int j = most_fractional(tree, ci->m->agg_task, ci->m->n_agg_task);
        if (!j)
            j = most_fractional(tree, ci->m->agg_var, ci->m->n_agg_var);
        if (j)
            glp_ios_branch_upon(tree, j, GLP_NO_BRNCH);
        break;
    }
    case GLP_IHEUR:
        if (ci->inc && !ci->given) {
            ci->given = true;
            glp_ios_heur_sol(tree, ci->inc); /* rejected when not better: fine */
        }
        break;
    case GLP_IBINGO:
    case GLP_ISELECT:
        ci->gap = glp_ios_mip_gap(tree);
        break;
    default:
        break;
    }
}

void loki__milp_fill_aggregates(const struct model *m, double *x)
{
    if (!m->n_agg_task)
        return;
    for (int i = 0; i < m->n_agg_task; i++)
        x[m->agg_task[i]] = 0;
    for (int i = 0; i < m->n_agg_var; i++)
        x[m->agg_var[i]] = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const struct node *n = &m->nodes[i];
        if (!n->used)
            continue;
        x[m->col_task[n->p][n->t]] += granules(m, n) * x[n->col_z];
        x[m->col_var[n->p][n->t][n->v]] += granules(m, n) * x[n->col_z];
    }
}

static double objective_of(glp_prob *lp, const double *x, int n_cols)
{
    double o = 0;
    for (int j = 1; j <= n_cols; j++)
        o += glp_get_obj_coef(lp, j) * x[j];
    return o;
}

/*
 * A warm solution vector (1-based, n_cols + 1 entries) from rq->warm, raised
 * to carry this demand; false if the warm plan is not a solution here.
 */
static bool warm_vector(struct model *m, glp_prob *lp, double *x)
{
    if (m->fl)
        return loki__flow_warm(m, lp, x);
    const struct loki__milp_req *rq = m->rq;
    const struct loki_plan *w = rq->warm;
    const struct loki_topology *topo = rq->topo;
    if (!w || rq->decoupled)
        return false;
    memset(x, 0, sizeof(double) * (size_t)(m->n_cols + 1));
    int chosen[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS];
    memset(chosen, -1, sizeof(chosen));
    for (int p = 0; p < topo->n_pipelines; p++)
        for (int t = 0; t < topo->pipelines[p].n_tasks; t++)
            for (int v = 0; v < topo->pipelines[p].tasks[t].n_variants; v++) {
                const struct loki_plan_variant *pv = &w->var[p][t][v];
                if (pv->instances <= 0)
                    continue;
                int found = -1;
                for (int i = 0; i < m->tn_count[p][t]; i++) {
                    const struct node *n = &m->nodes[m->tn_first[p][t] + i];
                    if (n->v == v && n->batch == pv->batch && fabs(n->share - pv->share) < 1e-9 &&
                        n->used)
                        found = m->tn_first[p][t] + i;
                }
                if (found < 0)
                    return false;
                chosen[p][t][v] = found;
                x[m->nodes[found].col_y] = 1;
                x[m->nodes[found].col_z] = pv->instances;
            }
    for (int p = 0; p < topo->n_pipelines; p++)
        x[m->col_sigma[p]] = 1;
    double load[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS];
    memset(load, 0, sizeof(load));
    for (int k = 0; k < m->n_chains; k++) {
        const struct chain *c = &m->chains[k];
        double sum = 0;
        for (int i = 0; i < c->n; i++) {
            const struct path *ph = &m->paths[c->first + i];
            double prob = 1;
            int u = 0;
            for (int j = 0; j < c->len && prob > 0; j++) {
                const struct node *n = &m->nodes[ph->node[j]];
                if (chosen[c->p][n->t][n->v] != ph->node[j])
                    prob = 0;
                else
                    prob *= w->split[c->p][n->t][u][n->v];
                u = n->v;
            }
            if (prob < 1e-7)
                prob = 0;
            x[ph->col] = prob;
            sum += prob;
        }
        if (fabs(sum - 1) > 1e-4)
            return false; /* the warm plan routes along paths that are not options here */
        for (int i = 0; i < c->n; i++) {
            const struct path *ph = &m->paths[c->first + i];
            x[ph->col] /= sum;
            for (int j = 0; j < c->len; j++) {
                const struct node *n = &m->nodes[ph->node[j]];
                if (m->owner[c->p][n->t] == k)
                    load[c->p][n->t][n->v] += c->base * ph->mult[j] * x[ph->col];
            }
        }
    }
    double gpus = 0, mem = 0, cl = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const struct node *n = &m->nodes[i];
        if (!n->used || x[n->col_y] < 0.5)
            continue;
        /* the split is stored as float: a variant planned full to the last query per second
         * must not read as needing one more instance */
        double want = topo->planner.beta * load[n->p][n->t][n->v] / n->thr;
        double need = ceil(want - 1e-6 * fmax(1, want));
        if (x[n->col_z] < need)
            x[n->col_z] = need;
        if (x[n->col_z] < 1)
            x[n->col_z] = 1;
        gpus += n->share * x[n->col_z];
        mem += n->mem * x[n->col_z];
        cl += x[n->col_z];
    }
    double g = ceil(rq->budget - 1e-9);
    if (gpus > rq->budget + 1e-9 || mem > g * topo->gpus.mem_mb + 1e-6 ||
        cl > g * topo->gpus.mps_max_clients)
        return false;
    return true;
}

/* Whether solution vector @x satisfies every row of @m (loaded into @lp). */
static bool rows_hold(const struct model *m, glp_prob *lp, const double *x)
{
    double *act = calloc((size_t)(m->n_rows + 1), sizeof(double));
    if (!act)
        return false;
    for (int k = 1; k <= m->nz; k++)
        act[m->ia[k]] += m->ar[k] * x[m->ja[k]];
    bool ok = true;
    for (int i = 1; i <= m->n_rows && ok; i++) {
        int type = glp_get_row_type(lp, i);
        double tol = 1e-7 * fmax(1, fabs(act[i]));
        if ((type == GLP_LO || type == GLP_DB || type == GLP_FX) &&
            act[i] < glp_get_row_lb(lp, i) - tol)
            ok = false;
        if ((type == GLP_UP || type == GLP_DB || type == GLP_FX) &&
            act[i] > glp_get_row_ub(lp, i) + tol)
            ok = false;
    }
    free(act);
    return ok;
}

/*
 * Greedy incumbent for ACCURACY mode: one
 * option node per task (an "assignment"), every chain on the single path it
 * induces. Start from the most accurate path of each chain that agrees with
 * the tasks already assigned, then, while the instances it needs exceed the
 * budget, take the single-task change that saves the most GPUs per unit of
 * objective lost; then take objective-improving changes that still fit. Each
 * evaluation is a hash lookup of each chain's path plus the load sums, so the
 * whole search costs a few ms. Writes @x (like warm_vector) and returns true
 * when the assignment fits budget, memory and MPS clients.
 */
struct gsearch {
    struct model *m;
    int *hash; /* path index + 1 per slot, 0 empty; open addressing */
    int hsize;
    double g; /* GPUs (ceil of budget) for the memory and client rows */
};

static unsigned path_hash(const int *node, int len)
{
    unsigned h = 2166136261u;
    for (int i = 0; i < len; i++)
        h = (h ^ (unsigned)node[i]) * 16777619u;
    return h;
}

static int find_path(const struct gsearch *gs, int k, const int *node)
{
    const struct chain *c = &gs->m->chains[k];
    unsigned h = (path_hash(node, c->len) ^ (unsigned)k * 2654435761u) & (unsigned)(gs->hsize - 1);
    for (;; h = (h + 1) & (unsigned)(gs->hsize - 1)) {
        int e = gs->hash[h];
        if (!e)
            return -1;
        const struct path *ph = &gs->m->paths[e - 1];
        if (ph->chain == k && !memcmp(ph->node, node, sizeof(int) * (size_t)c->len))
            return e - 1;
    }
}

/* Objective (the LP's coefficients) and GPUs of @as; false if some chain has no path. */
static bool eval_assign(const struct gsearch *gs, glp_prob *lp,
                        const int as[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS], double *obj, double *gpus,
                        bool *fits, double *x)
{
    struct model *m = gs->m;
    const struct loki_topology *topo = m->rq->topo;
    double load[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS];
    int pidx[LOKI_MAX_PIPELINES * LOKI_MAX_TASKS * 2];
    memset(load, 0, sizeof(load));
    *obj = 0;
    for (int k = 0; k < m->n_chains; k++) {
        const struct chain *c = &m->chains[k];
        int node[LOKI_MAX_TASKS];
        for (int i = 0; i < c->len; i++)
            node[i] = as[c->p][c->task[i]];
        int pi = find_path(gs, k, node);
        if (pi < 0)
            return false;
        pidx[k] = pi;
        const struct path *ph = &m->paths[pi];
        *obj += glp_get_obj_coef(lp, ph->col);
        for (int i = 0; i < c->len; i++)
            if (m->owner[c->p][c->task[i]] == k)
                load[c->p][c->task[i]] = c->base * ph->mult[i];
    }
    double beta = topo->planner.beta > 0 ? topo->planner.beta : 1;
    double mem = 0, cl = 0;
    *gpus = 0;
    if (x)
        memset(x, 0, sizeof(double) * (size_t)(m->n_cols + 1));
    for (int p = 0; p < topo->n_pipelines; p++) {
        *obj += glp_get_obj_coef(lp, m->col_sigma[p]);
        if (x)
            x[m->col_sigma[p]] = 1;
        for (int t = 0; t < topo->pipelines[p].n_tasks; t++) {
            const struct node *n = &m->nodes[as[p][t]];
            double z = fmax(1, ceil(beta * load[p][t] / n->thr - 1e-9));
            *gpus += n->share * z;
            mem += n->mem * z;
            cl += z;
            *obj += glp_get_obj_coef(lp, n->col_y) + glp_get_obj_coef(lp, n->col_z) * z;
            if (x) {
                x[n->col_y] = 1;
                x[n->col_z] = z;
            }
        }
    }
    for (int k = 0; k < m->n_chains && x; k++)
        x[m->paths[pidx[k]].col] = 1;
    *fits = *gpus <= m->rq->budget + 1e-9 &&
            (topo->gpus.mem_mb <= 0 || mem <= gs->g * topo->gpus.mem_mb + 1e-6) &&
            (topo->gpus.mps_max_clients <= 0 || cl <= gs->g * topo->gpus.mps_max_clients);
    return true;
}

static bool greedy_vector(struct model *m, glp_prob *lp, double *x)
{
    if (m->fl)
        return loki__flow_greedy(m, lp, x);
    const struct loki__milp_req *rq = m->rq;
    const struct loki_topology *topo = rq->topo;
    if (rq->mode != LOKI__MILP_ACCURACY || rq->decoupled || m->n_paths == 0)
        return false;
    struct gsearch gs = {.m = m, .g = ceil(rq->budget - 1e-9)};
    gs.hsize = 1;
    while (gs.hsize < 2 * m->n_paths)
        gs.hsize <<= 1;
    gs.hash = calloc((size_t)gs.hsize, sizeof(int));
    if (!gs.hash)
        return false;
    for (int i = 0; i < m->n_paths; i++) {
        const struct path *ph = &m->paths[i];
        unsigned h =
            (path_hash(ph->node, m->chains[ph->chain].len) ^ (unsigned)ph->chain * 2654435761u) &
            (unsigned)(gs.hsize - 1);
        while (gs.hash[h])
            h = (h + 1) & (unsigned)(gs.hsize - 1);
        gs.hash[h] = i + 1;
    }
    bool ok = false;
    int as[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS];
    memset(as, -1, sizeof(as));
    /* Start: per chain the most accurate path agreeing with what is assigned (then faster). */
    for (int k = 0; k < m->n_chains; k++) {
        const struct chain *c = &m->chains[k];
        int best = -1;
        for (int i = c->first; i < c->first + c->n; i++) {
            const struct path *ph = &m->paths[i];
            bool agree = true;
            for (int j = 0; j < c->len && agree; j++)
                agree = as[c->p][c->task[j]] < 0 || as[c->p][c->task[j]] == ph->node[j];
            if (!agree)
                continue;
            if (best < 0 || ph->acc > m->paths[best].acc + 1e-12 ||
                (ph->acc > m->paths[best].acc - 1e-12 && ph->lat < m->paths[best].lat))
                best = i;
        }
        if (best < 0)
            goto out;
        for (int j = 0; j < c->len; j++)
            as[c->p][c->task[j]] = m->paths[best].node[j];
    }
    double obj, gpus;
    bool fits;
    if (!eval_assign(&gs, lp, as, &obj, &gpus, &fits, NULL))
        goto out;
    /* Downgrade until it fits; then upgrade while it still fits. */
    for (int phase = 0; phase < 2; phase++) {
        for (int iter = 0; iter < 256; iter++) {
            if (phase == 0 && fits)
                break;
            int bp = -1, bt = -1, bn = -1;
            double bscore = 0, bobj = 0, bg = 0;
            bool bfits = false;
            for (int p = 0; p < topo->n_pipelines; p++)
                for (int t = 0; t < topo->pipelines[p].n_tasks; t++) {
                    int cur = as[p][t];
                    for (int i = 0; i < m->tn_count[p][t]; i++) {
                        int ni = m->tn_first[p][t] + i;
                        if (ni == cur || !m->nodes[ni].used)
                            continue;
                        as[p][t] = ni;
                        double o2, g2;
                        bool f2;
                        bool valid = eval_assign(&gs, lp, as, &o2, &g2, &f2, NULL);
                        as[p][t] = cur;
                        if (!valid)
                            continue;
                        double score;
                        if (phase == 0) {
                            if (g2 >= gpus - 1e-9)
                                continue;
                            score = (gpus - g2) / fmax(obj - o2, 1e-9);
                        } else {
                            if (!f2 || o2 <= obj + 1e-12)
                                continue;
                            score = o2 - obj;
                        }
                        if (bp < 0 || score > bscore) {
                            bp = p, bt = t, bn = ni;
                            bscore = score, bobj = o2, bg = g2, bfits = f2;
                        }
                    }
                }
            if (bp < 0)
                break;
            as[bp][bt] = bn;
            obj = bobj, gpus = bg, fits = bfits;
        }
        if (!fits)
            goto out;
    }
    ok = eval_assign(&gs, lp, as, &obj, &gpus, &fits, x) && fits;
out:
    free(gs.hash);
    return ok;
}

static int extract(struct model *m, const double *x, struct loki__milp_res *res)
{
    if (m->fl)
        return loki__flow_extract(m, x, res);
    const struct loki__milp_req *rq = m->rq;
    const struct loki_topology *topo = rq->topo;
    static const double eps = 1e-9;
    for (int i = 0; i < m->n_nodes; i++) {
        const struct node *n = &m->nodes[i];
        if (!n->used || x[n->col_y] < 0.5)
            continue;
        int z = (int)lround(x[n->col_z]);
        res->inst[n->p][n->t][n->v] = z;
        res->batch[n->p][n->t][n->v] = n->batch;
        res->share[n->p][n->t][n->v] = n->share;
    }
    /* Edge loads l[p][t][u][v]; root arrivals use u = 0. */
    double(*l)[LOKI_MAX_TASKS][LOKI_MAX_VARIANTS][LOKI_MAX_VARIANTS] =
        calloc(LOKI_MAX_PIPELINES, sizeof(*l));
    if (!l)
        return -ENOMEM;
    double accr[LOKI_MAX_PIPELINES] = {0}, accs_n[LOKI_MAX_PIPELINES] = {0},
           accs_d[LOKI_MAX_PIPELINES] = {0};
    for (int p = 0; p < topo->n_pipelines; p++)
        res->served[p] = x[m->col_sigma[p]];
    for (int k = 0; k < m->n_chains; k++) {
        const struct chain *c = &m->chains[k];
        if (c->len > 0)
            res->n_chains[c->p]++;
        double worst = 0;
        for (int i = 0; i < c->n; i++) {
            const struct path *ph = &m->paths[c->first + i];
            double cv = x[ph->col];
            if (cv <= eps)
                continue;
            worst = fmax(worst, ph->lat);
            accr[c->p] += c->weight * ph->acc * cv;
            double leaf = rq->decoupled ? c->base : ph->mult[c->len - 1];
            accs_n[c->p] += leaf * cv * ph->acc;
            accs_d[c->p] += leaf * cv;
            int u = 0;
            for (int j = 0; j < c->len; j++) {
                const struct node *n = &m->nodes[ph->node[j]];
                if (m->owner[c->p][n->t] == k)
                    l[c->p][n->t][rq->decoupled ? 0 : u][n->v] += c->base * ph->mult[j] * cv;
                u = n->v;
            }
        }
        if (!rq->decoupled && c->len > 0)
            res->chain_lat[c->p][res->n_chains[c->p] - 1] = worst;
        else if (rq->decoupled)
            res->chain_lat[c->p][c->task[0]] = worst;
    }
    for (int p = 0; p < topo->n_pipelines; p++) {
        double s = res->served[p];
        res->acc_root[p] = s > eps ? accr[p] / s : 0;
        res->acc_sub[p] = accs_d[p] > eps ? accs_n[p] / accs_d[p] : res->acc_root[p];
        const struct loki_pipeline *pp = &topo->pipelines[p];
        for (int t = 0; t < pp->n_tasks; t++)
            for (int u = 0; u < LOKI_MAX_VARIANTS; u++)
                for (int v = 0; v < pp->tasks[t].n_variants; v++)
                    res->load[p][t][v] += l[p][t][u][v];
    }
    loki__milp_splits(m, l, res);
    free(l);
    return 0;
}

void loki__milp_splits(const struct model *m,
                       double (*l)[LOKI_MAX_TASKS][LOKI_MAX_VARIANTS][LOKI_MAX_VARIANTS],
                       struct loki__milp_res *res)
{
    const struct loki__milp_req *rq = m->rq;
    const struct loki_topology *topo = rq->topo;
    static const double eps = 1e-9;
    for (int p = 0; p < topo->n_pipelines; p++) {
        const struct loki_pipeline *pp = &topo->pipelines[p];
        for (int t = 0; t < pp->n_tasks; t++) {
            const struct loki_task *task = &pp->tasks[t];
            int par = m->parent[p][t];
            int nu = par >= 0 ? pp->tasks[par].n_variants : 1;
            double agg[LOKI_MAX_VARIANTS] = {0}, aggsum = 0;
            for (int u = 0; u < LOKI_MAX_VARIANTS; u++)
                for (int v = 0; v < task->n_variants; v++) {
                    agg[v] += l[p][t][u][v];
                    aggsum += l[p][t][u][v];
                }
            /* Fallback row for parents without planned traffic. */
            int fb = -1;
            for (int v = 0; v < task->n_variants; v++)
                if (res->inst[p][t][v] > 0 &&
                    (fb < 0 || task->variants[v].accuracy > task->variants[fb].accuracy))
                    fb = v;
            if (fb < 0)
                fb = loki_task_best_variant(task);
            for (int u = 0; u < nu; u++) {
                int uu = rq->decoupled ? 0 : u;
                double sum = 0;
                for (int v = 0; v < task->n_variants; v++)
                    sum += l[p][t][uu][v];
                for (int v = 0; v < task->n_variants; v++) {
                    double f;
                    if (sum > eps)
                        f = l[p][t][uu][v] / sum;
                    else if (aggsum > eps)
                        f = agg[v] / aggsum;
                    else
                        f = v == fb ? 1 : 0;
                    res->split[p][t][u][v] = (float)f;
                }
            }
            /* Variants with no planned instances must get nothing. */
            for (int u = 0; u < nu; u++) {
                double s2 = 0;
                for (int v = 0; v < task->n_variants; v++) {
                    if (res->inst[p][t][v] <= 0)
                        res->split[p][t][u][v] = 0;
                    s2 += res->split[p][t][u][v];
                }
                if (s2 > 1e-6)
                    for (int v = 0; v < task->n_variants; v++)
                        res->split[p][t][u][v] = (float)(res->split[p][t][u][v] / s2);
            }
        }
    }
}

/* The structure of @m's matrix (which row has which column): keys its stored basis. */
static uint64_t model_key(const struct model *m)
{
    uint64_t h = 1469598103934665603ull;
    int dims[3] = {m->n_rows, m->n_cols, m->nz};
    for (int i = 0; i < 3; i++)
        h = (h ^ (uint64_t)(unsigned)dims[i]) * 1099511628211ull;
    for (int k = 1; k <= m->nz; k++)
        h = (h ^ ((uint64_t)(unsigned)m->ia[k] << 32 | (unsigned)m->ja[k])) * 1099511628211ull;
    return h ? h : 1;
}

/* Start @lp from the basis @bs stored for this structure; false if none. */
static bool load_basis(glp_prob *lp, const struct loki__milp_basis *bs, uint64_t key, int rows,
                       int cols)
{
    if (bs->key != key || bs->n_rows != rows || bs->n_cols != cols)
        return false;
    for (int i = 0; i < rows + cols; i++)
        if (bs->stat[i] < GLP_BS || bs->stat[i] > GLP_NS)
            return false;
    /* GLPK maps a non-basic status onto what the (new) bounds allow. */
    for (int i = 1; i <= rows; i++)
        glp_set_row_stat(lp, i, bs->stat[i - 1]);
    for (int j = 1; j <= cols; j++)
        glp_set_col_stat(lp, j, bs->stat[rows + j - 1]);
    return true;
}

static void save_basis(glp_prob *lp, struct loki__milp_basis *bs, uint64_t key, int rows, int cols)
{
    if (rows + cols > LOKI__MILP_BASIS_MAX) {
        bs->key = 0;
        return;
    }
    for (int i = 1; i <= rows; i++)
        bs->stat[i - 1] = (unsigned char)glp_get_row_stat(lp, i);
    for (int j = 1; j <= cols; j++)
        bs->stat[rows + j - 1] = (unsigned char)glp_get_col_stat(lp, j);
    bs->key = key;
    bs->n_rows = rows;
    bs->n_cols = cols;
}

/* Milliseconds left of @rq's time limit counted from @t0: INT_MAX without one, 0 when spent. */
static int ms_left(const struct loki__milp_req *rq, double t0)
{
    if (rq->time_limit_ms <= 0)
        return INT_MAX;
    double left = rq->time_limit_ms - (loki__now_ms() - t0);
    return left < 1 ? 0 : (int)ceil(left);
}

/*
 * Solve the LP relaxation from the current basis; true when optimal. Sets
 * *@timed_out. @dual: the dual simplex (falling back to the primal where the
 * basis is not dual feasible): from a basis of the same model at other
 * demand or bounds, the flow LP's restarts take a third of the primal's
 * iterations (measured on the 128-GPU synthetic chains).
 */
static bool relax(glp_prob *lp, int tm_lim, bool *timed_out, bool dual)
{
    glp_smcp sm;
    glp_init_smcp(&sm);
    sm.msg_lev = GLP_MSG_OFF;
    sm.tm_lim = tm_lim;
    if (dual)
        sm.meth = GLP_DUALP;
    int ret = glp_simplex(lp, &sm);
    *timed_out |= ret == GLP_ETMLIM;
    return ret == 0 && glp_get_status(lp) == GLP_OPT;
}

static double rel_gap(double bound, double obj)
{
    return fabs(bound - obj) / fmax(fabs(obj), 1e-9);
}

static bool better(const struct loki__milp_req *rq, double a, double b)
{
    return rq->mode == LOKI__MILP_HARDWARE ? a < b - 1e-12 : a > b + 1e-12;
}

/*
 * @on: fix to zero every variant that the LP relaxation (y > 0) and the
 * solutions @a and @b (each may be NULL) leave unused, so a MILP over the
 * rest is small; !@on: undo.
 */
static void restrict_support(struct model *m, glp_prob *lp, const double *a, const double *b,
                             bool on)
{
    bool keep[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS];
    memset(keep, 0, sizeof(keep));
    for (int i = 0; i < m->n_nodes && on; i++) {
        const struct node *n = &m->nodes[i];
        if (n->used && (glp_get_col_prim(lp, n->col_y) > 1e-7 || (a && a[n->col_y] > 0.5) ||
                        (b && b[n->col_y] > 0.5)))
            keep[n->p][n->t][n->v] = true;
    }
    double gmax = floor(m->rq->budget / m->gran + 1e-9);
    for (int i = 0; i < m->n_nodes; i++) {
        struct node *n = &m->nodes[i];
        if (!n->used || (on && keep[n->p][n->t][n->v]) || (!on && !n->off))
            continue;
        n->off = on;
        node_bounds(m, lp, n);
        int cv = m->col_var[n->p][n->t][n->v];
        if (on)
            glp_set_col_bnds(lp, cv, GLP_FX, 0, 0);
        else
            glp_set_col_bnds(lp, cv, GLP_DB, 0, gmax);
    }
}

/* Only tracks the gap: GLPK's presolver renumbers columns, so nothing can be handed over. */
static void gap_callback(glp_tree *tree, void *info)
{
    int r = glp_ios_reason(tree);
    if (r == GLP_IBINGO || r == GLP_ISELECT)
        ((struct cbinfo *)info)->gap = glp_ios_mip_gap(tree);
}

/*
 * GLPK's own branch and cut with its presolver, nothing of ours: the
 * reference search, and SERVED mode's (no incumbent to hand over there, and
 * on big models the presolver finds some served fraction sooner).
 */
static int solve_presolved(struct model *m, glp_prob *lp, double *x, double t0,
                           struct loki__milp_res *res)
{
    const struct loki__milp_req *rq = m->rq;
    struct cbinfo ci = {.m = m};
    glp_iocp parm;
    glp_init_iocp(&parm);
    parm.msg_lev = GLP_MSG_OFF;
    parm.presolve = GLP_ON;
    parm.mip_gap = rq->mip_gap > 0 ? rq->mip_gap : 0;
    parm.tm_lim = ms_left(rq, t0);
    parm.fp_heur = GLP_OFF;
    parm.cb_func = gap_callback;
    parm.cb_info = &ci;
    if (!parm.tm_lim) {
        res->time_limited = true;
        return 0;
    }
    int ret = glp_intopt(lp, &parm);
    int st = glp_mip_status(lp);
    res->time_limited = ret == GLP_ETMLIM;
    bool ok = ret == 0 || ret == GLP_ETMLIM || ret == GLP_EMIPGAP || ret == GLP_ESTOP ||
              ret == GLP_ENOPFS || ret == GLP_ENODFS;
    if (!ok)
        return LOKI_ESOLVER;
    if (st != GLP_OPT && st != GLP_FEAS)
        return 0;
    for (int j = 1; j <= m->n_cols; j++)
        x[j] = glp_mip_col_val(lp, j);
    res->objective = glp_mip_obj_val(lp);
    res->gap = ret == 0 ? 0 : ret == GLP_EMIPGAP ? fmin(ci.gap, parm.mip_gap) : ci.gap;
    res->feasible = true;
    return extract(m, x, res);
}

/* The state of one search (ACCURACY mode and the accuracy floor): the incumbent and the bound. */
struct search {
    struct model *m;
    glp_prob *lp;
    double t0;
    struct loki__milp_res *res;
    double *x, *inc; /* 1-based, n_cols + 1 entries: scratch and the incumbent */
    bool have;       /* @inc holds an incumbent */
    bool warm;       /* ... which is the warm start */
    bool both;       /* the warm and the greedy one were both valid: @x holds the other one */
    double inc_obj;  /* @inc's objective */
    double bound;    /* the LP relaxation's objective, once have_bound */
    bool have_bound;
    double tol; /* relative gap that ends the search */
    struct cbinfo ci;
    glp_iocp parm;
};

/*
 * Step 1, the incumbent: the better of the warm start and (accuracy mode)
 * the greedy assignment. Both: a warm plan made for other demand can be far
 * worse than the greedy one, and the heuristic below searches near both.
 */
static void pick_incumbent(struct search *s)
{
    struct model *m = s->m;
    const struct loki__milp_req *rq = m->rq;
    glp_prob *lp = s->lp;
    int n_cols = m->n_cols;
    bool warm = warm_vector(m, lp, s->inc);
    if (warm)
        loki__milp_fill_aggregates(m, s->inc);
    if (warm && rq->acc_floor > 0)
        warm = rows_hold(m, lp, s->inc); /* a current plan below the floor is no incumbent */
    bool warm_ok = warm;
    bool gr = greedy_vector(m, lp, s->x);
    if (gr) {
        loki__milp_fill_aggregates(m, s->x);
        double go = objective_of(lp, s->x, n_cols);
        if (!warm || better(rq, go, objective_of(lp, s->inc, n_cols))) {
            double *t = s->inc;
            s->inc = s->x, s->x = t;
            warm = false;
        }
    }
    s->warm = warm;
    s->have = warm || gr;
    s->both = warm_ok && gr;
    if (s->have)
        s->inc_obj = objective_of(lp, s->inc, n_cols);
}

/*
 * Step 2, the LP relaxation, started from the basis stored for this
 * structure (GLPK's advanced basis when there is none or it does not work
 * out here). Returns 1 when optimal (the bound set), 0 when out of time or
 * failed, -1 when infeasible.
 */
static int relax_root(struct search *s)
{
    struct model *m = s->m;
    const struct loki__milp_req *rq = m->rq;
    glp_prob *lp = s->lp;
    glp_scale_prob(lp, GLP_SF_AUTO);
    struct loki__milp_basis *bs = &s->res->basis[rq->mode];
    uint64_t key = model_key(m);
    bool cached = load_basis(lp, bs, key, m->n_rows, m->n_cols);
    if (!cached)
        glp_adv_basis(lp, 0);
    int left = ms_left(rq, s->t0);
    bool timed = false;
    bool rok = left && relax(lp, left, &timed, cached && m->fl);
    if (!rok && cached && glp_get_status(lp) != GLP_NOFEAS && (left = ms_left(rq, s->t0))) {
        glp_adv_basis(lp, 0); /* the stored basis did not work out here */
        rok = relax(lp, left, &timed, false);
    }
    s->res->time_limited |= timed;
    /*
     * A flow LP cut short by the time limit (large deep pipelines) keeps the
     * basis it got to: the next solve of the same structure goes on from there
     * instead of starting over and running out of time the same way.
     */
    if (rok || (timed && m->fl))
        save_basis(lp, bs, key, m->n_rows, m->n_cols);
    if (!left || !rok)
        return left && glp_get_status(lp) == GLP_NOFEAS ? -1 : 0;
    s->bound = glp_get_obj_val(lp);
    s->have_bound = true;
    return 1;
}

/*
 * Step 3, the heuristic: the same MILP on the variants the relaxation or the
 * incumbents use, for half of the @left ms; its answer replaces the
 * incumbent when better. Every variant is free again afterwards.
 */
static void support_heuristic(struct search *s, int left)
{
    struct model *m = s->m;
    const struct loki__milp_req *rq = m->rq;
    glp_prob *lp = s->lp;
    restrict_support(m, lp, s->have ? s->inc : NULL, s->both ? s->x : NULL, true);
    if (relax(lp, left, &s->res->time_limited, m->fl != NULL)) {
        s->ci.inc = s->have ? s->inc : NULL;
        s->ci.given = false;
        s->parm.tm_lim = left > 1 ? left / 2 : 1;
        int ret = glp_intopt(lp, &s->parm);
        s->res->time_limited |= ret == GLP_ETMLIM && !ms_left(rq, s->t0);
        int st = glp_mip_status(lp);
        double o = glp_mip_obj_val(lp);
        if ((st == GLP_OPT || st == GLP_FEAS) && (!s->have || better(rq, o, s->inc_obj))) {
            /* glp_ios_heur_sol() takes integer columns only when exactly integral */
            for (int j = 1; j <= m->n_cols; j++)
                s->inc[j] = glp_get_col_kind(lp, j) == GLP_CV ? glp_mip_col_val(lp, j)
                                                              : round(glp_mip_col_val(lp, j));
            s->have = true;
            s->inc_obj = o;
        }
    }
    restrict_support(m, lp, NULL, NULL, false);
}

/*
 * Steps 1 to 4 (see the top of the file) on @s->lp, then the answer into
 * @s->res: GLPK's, or the incumbent when time ran out or it is within the
 * gap of the bound. Returns 0 (res->feasible says whether there is one),
 * -ENOMEM or LOKI_ESOLVER.
 */
static int search_own(struct search *s)
{
    struct model *m = s->m;
    const struct loki__milp_req *rq = m->rq;
    struct loki__milp_res *res = s->res;
    glp_prob *lp = s->lp;
    int n_cols = m->n_cols;
    pick_incumbent(s);
    s->tol = rq->mip_gap > 0 ? rq->mip_gap : 0;
    s->ci = (struct cbinfo){.m = m};
    glp_init_iocp(&s->parm);
    s->parm.msg_lev = GLP_MSG_OFF;
    s->parm.presolve = GLP_OFF; /* GLPK's presolver renumbers columns: no incumbent, no branching */
    s->parm.mip_gap = s->tol;
    s->parm.fp_heur = GLP_OFF;
    s->parm.cb_func = callback;
    s->parm.cb_info = &s->ci;

    int relaxed = relax_root(s);
    if (relaxed < 0) {
        res->feasible = false;
        return 0;
    }
    if (!relaxed)
        goto incumbent; /* out of time */
    /*
     * An incumbent within the gap of the LP bound needs no search (the common
     * case for a warm start when demand moved little).
     */
    if (s->have && rel_gap(s->bound, s->inc_obj) <= s->tol)
        goto incumbent;
    int left;
    if (rq->mode == LOKI__MILP_ACCURACY && (left = ms_left(rq, s->t0)) > 0) {
        support_heuristic(s, left);
        if (s->have && rel_gap(s->bound, s->inc_obj) <= s->tol)
            goto incumbent;
        if (!(left = ms_left(rq, s->t0)) || !relax(lp, left, &res->time_limited, m->fl != NULL))
            goto incumbent;
    }
    /* Step 4: branch and bound on the whole MILP, the incumbent handed over. */
    if (!(left = ms_left(rq, s->t0)))
        goto incumbent;
    s->ci.inc = s->have ? s->inc : NULL;
    s->ci.given = false;
    s->ci.gap = s->have ? rel_gap(s->bound, s->inc_obj) : 1;
    s->parm.tm_lim = left;
    int ret = glp_intopt(lp, &s->parm);
    int st = glp_mip_status(lp);
    if ((ret == 0 || ret == GLP_ETMLIM || ret == GLP_EMIPGAP || ret == GLP_ESTOP) &&
        (st == GLP_OPT || st == GLP_FEAS)) {
        /* GLPK's answer: the incumbent handed over, or better. */
        for (int j = 1; j <= n_cols; j++)
            s->x[j] = glp_mip_col_val(lp, j);
        res->objective = glp_mip_obj_val(lp);
        res->gap = ret == 0 ? 0 : ret == GLP_EMIPGAP ? fmin(s->ci.gap, s->tol) : s->ci.gap;
        res->time_limited |= ret == GLP_ETMLIM;
        res->feasible = true;
        res->warm_used = s->warm;
        return extract(m, s->x, res);
    }
    if (!s->have && !(ret == 0 || ret == GLP_ENOPFS || ret == GLP_ENODFS || ret == GLP_ETMLIM ||
                      ret == GLP_EMIPGAP || ret == GLP_ESTOP))
        return LOKI_ESOLVER;
incumbent:
    res->time_limited |= ms_left(rq, s->t0) == 0;
    /*
     * The incumbent is the answer: within the gap of the bound, or the best
     * there is when time ran out. Without one, no solution (the ladder moves
     * on to the next mode).
     */
    if (s->have) {
        res->objective = s->inc_obj;
        res->gap = s->have_bound ? rel_gap(s->bound, s->inc_obj) : 1;
        res->feasible = true;
        res->warm_used = s->warm;
        return extract(m, s->inc, res);
    }
    res->feasible = false;
    return 0;
}

int loki__milp_search(struct model *m, glp_prob *lp, double t0, struct loki__milp_res *res)
{
    const struct loki__milp_req *rq = m->rq;
    struct search s = {.m = m, .lp = lp, .t0 = t0, .res = res};
    int rc;
    s.x = calloc((size_t)(m->n_cols + 1), sizeof(double));
    s.inc = calloc((size_t)(m->n_cols + 1), sizeof(double));
    if (!s.x || !s.inc)
        rc = -ENOMEM;
    else if (plain(rq) || rq->mode == LOKI__MILP_SERVED)
        rc = solve_presolved(m, lp, s.x, t0, res);
    else
        rc = search_own(&s);
    free(s.x);
    free(s.inc);
    return rc;
}
