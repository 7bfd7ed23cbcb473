/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The planning MILP: the model (chains, option nodes, path options) and the
 * LP that GLPK solves, built from it; milp_search.c searches it. These files
 * and milp_flow.c are the only ones that include glpk.h (through milp.h).
 *
 * Two formulations share the option nodes, the GPU rows and the search: the
 * flow formulation (milp_flow.c), the default since it grows linearly with
 * the options per task, and the path formulation below, one column per
 * latency-feasible option path, kept as planner.formulation = paths, as the
 * reference of the quality checks and for the shapes the flows do not model
 * (use_flow()). Their optima agree (tests/planner/test_flow.c,
 * docs/planner.md).
 *
 * Path formulation
 * ----------------
 * An *option node* n = (variant v of task t, batch b, share s) carries its
 * profiled latency tau_n and throughput theta_n = b / tau_n. Every variant runs
 * at most one option (y[n] binary, sum over the variant's options <= 1), with
 * z[n] integer instances, y[n] <= z[n] <= Zmax * y[n]: a chosen option has at
 * least one instance, so a pipeline stays alive at zero demand.
 *
 * A *chain* is a root-to-leaf list of tasks. A *path option* p of a chain
 * picks one option node per task of the chain; its latency
 * L_p = sum tau_n is a constant, so the latency constraint "L_p <= h * SLO on
 * every path in use" becomes: path options with L_p > h * SLO get no column
 * at all (the path-in-use binaries iota[p] of the design are folded into the
 * node binaries: c[p] <= iota[p] <= y[n] for every n in p, aggregated per
 * node as sum_{p ni n} c[p] <= y[n], valid because sum_p c[p] <= 1).
 * c[p] in [0,1] is the fraction of root queries following p; per chain
 * sum_p c[p] = sigma (sigma = 1, or the served fraction in SERVED mode).
 *
 * Trees: consecutive chains (in depth-first order) that share a prefix of
 * tasks must agree on how root traffic is distributed over the option
 * assignments of that prefix: for each prefix assignment q,
 * sum_{p in k, p|prefix = q} c[p] = sum_{p in k-1, p|prefix = q} c[p].
 * Consecutive agreement implies agreement of any two chains on their common
 * prefix (in DFS order the common prefix of chains j < k is the shortest of
 * the consecutive ones between them). So every chain induces the same joint
 * distribution on shared tasks: c is the marginal, per chain, of one
 * distribution over whole-tree assignments whose branches are conditionally
 * independent given the shared prefix, which is exactly what the router
 * realises when it routes a sub-query by the variant that served its parent.
 *
 * Capacity: the load on variant v of task t is read off the first chain
 * that contains t (the *owner* chain; consistency makes every chain agree).
 * It is written per option node, beta * D * sum_{p in owner, p ni n} M_p(t)
 * c[p] <= theta_n z[n], with M_p(t) the product of the fan-outs of p's
 * variants upstream of t: only the chosen option of a variant carries paths,
 * so on integer points this is the per-variant row, but its LP relaxation
 * cannot serve a fast option's paths with a slow option's throughput (the
 * per-variant row allowed that and cost the first version most of its search).
 * All terms are linear: the fan-out products are constants of the path
 * option. GPUs: sum share_n z[n] <= G; plus aggregate memory and MPS-client
 * rows that make the placement step (first-fit decreasing, planner.c) rarely
 * fail; when it does, the planner re-solves with a smaller G.
 *
 * GPU aggregates: integer columns g[t] = sum_{n of t} (share_n / granularity)
 * z[n] per task and g[v] per variant. They change no solution; they are what
 * branch and bound branches on first (task, then variant; the callback picks
 * the most fractional), which splits the GPU budget between tasks before
 * anything else. The LP relaxation's weakness is rounding instances up to
 * whole GPUs; branching on one option's z[n] at a time closed that gap
 * slowly, branching on a task's total closes it in a few nodes.
 *
 * Objectives: HARDWARE minimises sum share * z (best variants only);
 * ACCURACY maximises sum_pipelines w_D sum_chains (1/#chains) sum_p A_p c[p]
 * (every branch weighs the same per root query) minus a GPU tie-breaker that
 * can never outweigh 1e-4 of accuracy; SERVED maximises sum w_D sigma with a
 * 1e-3-weighted accuracy term. A_p is the product of normalised accuracies
 * or the topology's path table.
 *
 * Accuracy floor (rq->acc_floor > 0, HARDWARE mode over all variants): one
 * more row per pipeline, sum_chains weight sum_p A_p c[p] >= floor * sigma
 * (the measure ACCURACY mode maximises), and the objective subtracts
 * gran/2 times that accuracy, which cannot outweigh one GPU granule: the
 * fewest GPUs, then the most accuracy on them. It runs on this formulation
 * and ACCURACY mode's search (a warm start below the floor is no incumbent;
 * no greedy one), not on the plain one.
 *
 * Routing split: the router splits by (task, parent variant). Loads flowing
 * along an edge (u -> v) are l = D sum M_p(t) c[p] over owner paths with that
 * edge; split = l / sum_v l. Propagating root demand through that split
 * reproduces the planned loads exactly, so the capacity rows hold for what
 * the router does. For chains of two tasks (the traffic pipeline) the
 * realised path distribution is exactly c; on chains of three or more tasks
 * the router's Markov routing keeps the planned loads but may mix paths.
 *
 * Size: the traffic pipeline has 35 detector and 49 + 35 classifier options
 * at whole GPUs; after pruning 84 of them lie on 874 path options (1,063
 * columns, 391 rows with the aggregates). Pruning: options
 * dominated within (variant, share) (no faster and no higher throughput),
 * and path options whose latency already breaks h * SLO (a DFS prunes with
 * the fastest completion of the rest of the chain). If more than max_paths
 * remain, option batch sizes are thinned (every other batch kept) and the
 * result flagged truncated: no longer exact, but still feasible.
 *
 * Search: milp_search.c, whose header comment has its steps.
 */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "milp.h"

#define DEFAULT_MAX_PATHS 40000

double loki__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

bool loki__share_allowed(const struct loki_topology *topo, double share)
{
    double g = topo->gpus.share_granularity;
    if (share > 1 + 1e-9 || share <= 0)
        return false;
    if (g <= 0 || g >= 1 - 1e-9)
        return fabs(share - 1) < 1e-9;
    if (share < g - 1e-9)
        return false;
    double k = share / g;
    return fabs(k - round(k)) < 1e-6;
}

double loki__path_accuracy(const struct loki_pipeline *p, const int *chain, int len, const int *var)
{
    for (int r = 0; r < p->n_path_acc; r++) {
        const struct loki_path_accuracy *row = &p->path_acc[r];
        bool ok = true;
        for (int i = 0; i < len && ok; i++)
            ok = row->variant[chain[i]] == var[chain[i]];
        if (ok)
            return row->accuracy / 100.0;
    }
    double a = 1;
    for (int i = 0; i < len; i++)
        a *= p->tasks[chain[i]].variants[var[chain[i]]].accuracy / 100.0;
    return a;
}

int loki__milp_nz(struct model *m, int row, int col, double val)
{
    if (m->nz + 1 >= m->cap_nz) {
        int cap = m->cap_nz ? m->cap_nz * 2 : 4096;
        int *ia = realloc(m->ia, sizeof(int) * (size_t)cap);
        if (!ia)
            return -ENOMEM;
        m->ia = ia;
        int *ja = realloc(m->ja, sizeof(int) * (size_t)cap);
        if (!ja)
            return -ENOMEM;
        m->ja = ja;
        double *ar = realloc(m->ar, sizeof(double) * (size_t)cap);
        if (!ar)
            return -ENOMEM;
        m->ar = ar;
        m->cap_nz = cap;
    }
    m->nz++; /* GLPK arrays are 1-based */
    m->ia[m->nz] = row;
    m->ja[m->nz] = col;
    m->ar[m->nz] = val;
    return 0;
}

static int task_depth(const struct model *m, int p, int t)
{
    int d = 0;
    for (int k = 0; k < m->n_chains; k++) {
        const struct chain *c = &m->chains[k];
        if (c->p == p)
            for (int i = 0; i < c->len; i++)
                if (c->task[i] == t && c->len > d)
                    d = c->len;
    }
    return d > 0 ? d : 1;
}

static void build_chains(struct model *m)
{
    const struct loki__milp_req *rq = m->rq;
    const struct loki_topology *topo = rq->topo;
    int full[LOKI_MAX_PIPELINES * LOKI_MAX_TASKS][LOKI_MAX_TASKS];
    int flen[LOKI_MAX_PIPELINES * LOKI_MAX_TASKS];
    int nfull = 0, fp[LOKI_MAX_PIPELINES * LOKI_MAX_TASKS];
    for (int p = 0; p < topo->n_pipelines; p++) {
        int n = loki_pipeline_chains(&topo->pipelines[p], &full[nfull], &flen[nfull],
                                     LOKI_MAX_PIPELINES * LOKI_MAX_TASKS - nfull);
        for (int i = 0; i < n; i++)
            fp[nfull + i] = p;
        nfull += n;
        for (int t = 0; t < LOKI_MAX_TASKS; t++)
            m->parent[p][t] = -1;
        const struct loki_pipeline *pp = &topo->pipelines[p];
        for (int t = 0; t < pp->n_tasks; t++)
            for (int c = 0; c < pp->tasks[t].n_children; c++)
                m->parent[p][pp->tasks[t].children[c]] = t;
    }
    /* Full chains first: depths for the decoupled budget slices need them. */
    m->n_chains = 0;
    for (int i = 0; i < nfull; i++) {
        struct chain *c = &m->chains[m->n_chains++];
        memset(c, 0, sizeof(*c));
        c->p = fp[i];
        c->len = flen[i];
        memcpy(c->task, full[i], sizeof(int) * (size_t)flen[i]);
    }
    if (rq->decoupled) {
        struct chain tmp[LOKI_MAX_PIPELINES * LOKI_MAX_TASKS];
        int n = 0;
        for (int p = 0; p < topo->n_pipelines; p++) {
            const struct loki_pipeline *pp = &topo->pipelines[p];
            for (int t = 0; t < pp->n_tasks; t++) {
                struct chain *c = &tmp[n++];
                memset(c, 0, sizeof(*c));
                c->p = p;
                c->len = 1;
                c->task[0] = t;
                c->budget = topo->planner.headroom * pp->slo_ms / task_depth(m, p, t);
                c->base = rq->task_demand[p][t];
                c->weight = 1.0 / pp->n_tasks;
            }
        }
        memcpy(m->chains, tmp, sizeof(tmp[0]) * (size_t)n);
        m->n_chains = n;
    } else {
        int per[LOKI_MAX_PIPELINES] = {0};
        for (int k = 0; k < m->n_chains; k++)
            per[m->chains[k].p]++;
        for (int k = 0; k < m->n_chains; k++) {
            struct chain *c = &m->chains[k];
            const struct loki_pipeline *pp = &topo->pipelines[c->p];
            c->budget = topo->planner.headroom * pp->slo_ms;
            c->base = rq->demand[c->p];
            c->weight = 1.0 / per[c->p];
            c->lcp = 0;
            if (k > 0 && m->chains[k - 1].p == c->p) {
                const struct chain *prev = &m->chains[k - 1];
                while (c->lcp < c->len && c->lcp < prev->len &&
                       c->task[c->lcp] == prev->task[c->lcp])
                    c->lcp++;
            }
        }
    }
    for (int p = 0; p < LOKI_MAX_PIPELINES; p++)
        for (int t = 0; t < LOKI_MAX_TASKS; t++)
            m->owner[p][t] = -1;
    for (int k = 0; k < m->n_chains; k++)
        for (int i = 0; i < m->chains[k].len; i++) {
            int p = m->chains[k].p, t = m->chains[k].task[i];
            if (m->owner[p][t] < 0) {
                m->owner[p][t] = k;
                m->owner_pos[p][t] = i;
            }
        }
}

static int build_nodes(struct model *m, int thin)
{
    const struct loki__milp_req *rq = m->rq;
    const struct loki_topology *topo = rq->topo;
    int cap = 0;
    for (int p = 0; p < topo->n_pipelines; p++)
        for (int t = 0; t < topo->pipelines[p].n_tasks; t++)
            for (int v = 0; v < topo->pipelines[p].tasks[t].n_variants; v++) {
                const struct loki_variant *var = &topo->pipelines[p].tasks[t].variants[v];
                cap += var->n_batches * var->n_shares;
            }
    free(m->nodes);
    m->nodes = calloc((size_t)(cap > 0 ? cap : 1), sizeof(struct node));
    if (!m->nodes)
        return -ENOMEM;
    m->n_nodes = 0;
    for (int p = 0; p < topo->n_pipelines; p++) {
        const struct loki_pipeline *pp = &topo->pipelines[p];
        for (int t = 0; t < pp->n_tasks; t++) {
            const struct loki_task *task = &pp->tasks[t];
            int best = loki_task_best_variant(task);
            m->tn_first[p][t] = m->n_nodes;
            for (int v = 0; v < task->n_variants; v++) {
                if (rq->best_only && v != best)
                    continue;
                const struct loki_variant *var = &task->variants[v];
                for (int s = 0; s < var->n_shares; s++) {
                    if (!loki__share_allowed(topo, var->shares[s]))
                        continue;
                    int first = m->n_nodes;
                    for (int b = 0; b < var->n_batches; b++) {
                        double lat = var->latency_ms[s][b];
                        if (!(lat > 0))
                            continue;
                        struct node *n = &m->nodes[m->n_nodes++];
                        memset(n, 0, sizeof(*n));
                        n->p = p;
                        n->t = t;
                        n->v = v;
                        n->batch = var->batches[b];
                        n->share = var->shares[s];
                        n->lat = lat;
                        n->thr = var->batches[b] * 1000.0 / lat;
                        n->mem = var->mem_mb;
                    }
                    /* Drop options dominated within (variant, share). */
                    int w = first;
                    for (int i = first; i < m->n_nodes; i++) {
                        bool dom = false;
                        for (int j = first; j < m->n_nodes && !dom; j++) {
                            if (j == i)
                                continue;
                            const struct node *a = &m->nodes[i], *o = &m->nodes[j];
                            if (o->lat <= a->lat && o->thr >= a->thr &&
                                (o->lat < a->lat || o->thr > a->thr || j < i))
                                dom = true;
                        }
                        if (!dom)
                            m->nodes[w++] = m->nodes[i];
                    }
                    m->n_nodes = w;
                    /* Thinning (only when the path count overflows): every other batch. */
                    for (int r = 0; r < thin; r++) {
                        int k = 0, cnt = m->n_nodes - first;
                        if (cnt <= 2)
                            break;
                        w = first;
                        for (int i = first; i < m->n_nodes; i++, k++)
                            if (k % 2 == 0 || i == m->n_nodes - 1)
                                m->nodes[w++] = m->nodes[i];
                        m->n_nodes = w;
                    }
                }
            }
            m->tn_count[p][t] = m->n_nodes - m->tn_first[p][t];
        }
    }
    return 0;
}

static int add_path(struct model *m, int k, const int *stack, double lat)
{
    if (m->n_paths >= m->max_paths) {
        m->overflow = true;
        return 0;
    }
    if (m->n_paths >= m->cap_paths) {
        int cap = m->cap_paths ? m->cap_paths * 2 : 1024;
        struct path *np = realloc(m->paths, sizeof(struct path) * (size_t)cap);
        if (!np)
            return -ENOMEM;
        m->paths = np;
        m->cap_paths = cap;
    }
    const struct chain *c = &m->chains[k];
    const struct loki_pipeline *pp = &m->rq->topo->pipelines[c->p];
    struct path *ph = &m->paths[m->n_paths++];
    ph->chain = k;
    ph->lat = lat;
    int var[LOKI_MAX_TASKS];
    double mult = 1;
    for (int i = 0; i < c->len; i++) {
        ph->node[i] = stack[i];
        const struct node *n = &m->nodes[stack[i]];
        var[n->t] = n->v;
        ph->mult[i] = (float)mult;
        if (!m->rq->decoupled && i + 1 < c->len) {
            int slot = loki_task_child_slot(&pp->tasks[n->t], c->task[i + 1]);
            mult *= slot >= 0 ? m->fan[c->p][n->t][n->v][slot] : 0;
        }
    }
    ph->acc = loki__path_accuracy(pp, c->task, c->len, var);
    ph->col = 0;
    return 0;
}

static int dfs(struct model *m, int k, int pos, int *stack, double lat, const double *minrest)
{
    const struct chain *c = &m->chains[k];
    if (pos == c->len)
        return add_path(m, k, stack, lat);
    int p = c->p, t = c->task[pos];
    for (int i = 0; i < m->tn_count[p][t]; i++) {
        int ni = m->tn_first[p][t] + i;
        double l = lat + m->nodes[ni].lat;
        if (l + minrest[pos + 1] > c->budget + 1e-9)
            continue;
        stack[pos] = ni;
        int rc = dfs(m, k, pos + 1, stack, l, minrest);
        if (rc < 0 || m->overflow)
            return rc;
    }
    return 0;
}

static int build_paths(struct model *m)
{
    m->n_paths = 0;
    m->overflow = false;
    for (int k = 0; k < m->n_chains; k++) {
        struct chain *c = &m->chains[k];
        double minrest[LOKI_MAX_TASKS + 1];
        minrest[c->len] = 0;
        for (int i = c->len - 1; i >= 0; i--) {
            double mn = INFINITY;
            int p = c->p, t = c->task[i];
            for (int j = 0; j < m->tn_count[p][t]; j++)
                mn = fmin(mn, m->nodes[m->tn_first[p][t] + j].lat);
            minrest[i] = minrest[i + 1] + mn;
        }
        c->first = m->n_paths;
        int stack[LOKI_MAX_TASKS];
        int rc = dfs(m, k, 0, stack, 0, minrest);
        if (rc < 0)
            return rc;
        c->n = m->n_paths - c->first;
        if (m->overflow)
            return 0;
    }
    return 0;
}

/* Sort key for prefix consistency rows. */
struct pref {
    int key[LOKI_MAX_TASKS];
    int len;
    int col;
    double sign;
};

static int pref_len;

static int pref_cmp(const void *a, const void *b)
{
    const struct pref *x = a, *y = b;
    for (int i = 0; i < pref_len; i++)
        if (x->key[i] != y->key[i])
            return x->key[i] < y->key[i] ? -1 : 1;
    return 0;
}

static void fill_fanouts(struct model *m)
{
    const struct loki_topology *topo = m->rq->topo;
    for (int p = 0; p < topo->n_pipelines; p++)
        for (int t = 0; t < topo->pipelines[p].n_tasks; t++) {
            const struct loki_task *task = &topo->pipelines[p].tasks[t];
            for (int v = 0; v < task->n_variants; v++)
                for (int c = 0; c < task->n_children; c++)
                    m->fan[p][t][v][c] = loki_fanout_est_get(m->rq->fan, topo, p, t, v, c);
        }
}

/*
 * Columns of @m into @lp, with their kinds, bounds and objective
 * coefficients: y and z per option node on some path option, c per path
 * option, sigma per pipeline, and (not plain()) the integer GPU aggregates.
 * Sets the model's column numbers and the objective direction.
 */
static void add_columns(struct model *m, glp_prob *lp)
{
    const struct loki__milp_req *rq = m->rq;
    const struct loki_topology *topo = rq->topo;
    glp_set_obj_dir(lp, rq->mode == LOKI__MILP_HARDWARE ? GLP_MIN : GLP_MAX);

    /* Nodes that appear on some path option. */
    for (int i = 0; i < m->n_nodes; i++)
        m->nodes[i].used = false;
    for (int i = 0; i < m->n_paths; i++)
        for (int j = 0; j < m->chains[m->paths[i].chain].len; j++)
            m->nodes[m->paths[i].node[j]].used = true;

    double dsum = 0;
    for (int p = 0; p < topo->n_pipelines; p++)
        dsum += rq->demand[p];
    for (int p = 0; p < topo->n_pipelines; p++)
        m->wp[p] = dsum > 0 ? rq->demand[p] / dsum : 1.0 / topo->n_pipelines;
    double eps_gpu = 1e-4 / fmax(rq->budget, 1);

    int n_cols = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        struct node *n = &m->nodes[i];
        if (!n->used)
            continue;
        n->col_y = ++n_cols;
        n->col_z = ++n_cols;
    }
    for (int i = 0; i < m->n_paths; i++)
        m->paths[i].col = ++n_cols;
    for (int p = 0; p < topo->n_pipelines; p++)
        m->col_sigma[p] = ++n_cols;
    m->gran = topo->gpus.share_granularity > 0 && topo->gpus.share_granularity < 1
                  ? topo->gpus.share_granularity
                  : 1;
    memset(m->col_task, 0, sizeof(m->col_task));
    memset(m->col_var, 0, sizeof(m->col_var));
    m->n_agg_task = m->n_agg_var = 0;
    for (int i = 0; i < m->n_nodes && !plain(rq); i++) {
        const struct node *n = &m->nodes[i];
        if (!n->used)
            continue;
        if (!m->col_task[n->p][n->t])
            m->agg_task[m->n_agg_task++] = m->col_task[n->p][n->t] = ++n_cols;
        if (!m->col_var[n->p][n->t][n->v])
            m->agg_var[m->n_agg_var++] = m->col_var[n->p][n->t][n->v] = ++n_cols;
    }
    m->n_cols = n_cols;
    glp_add_cols(lp, n_cols);
    double gmax = floor(rq->budget / m->gran + 1e-9);
    for (int i = 0; i < m->n_agg_task; i++) {
        glp_set_col_kind(lp, m->agg_task[i], GLP_IV);
        glp_set_col_bnds(lp, m->agg_task[i], GLP_DB, 0, gmax);
    }
    for (int i = 0; i < m->n_agg_var; i++) {
        glp_set_col_kind(lp, m->agg_var[i], GLP_IV);
        glp_set_col_bnds(lp, m->agg_var[i], GLP_DB, 0, gmax);
    }
    for (int i = 0; i < m->n_nodes; i++) {
        const struct node *n = &m->nodes[i];
        if (!n->used)
            continue;
        glp_set_col_kind(lp, n->col_y, GLP_BV);
        glp_set_col_kind(lp, n->col_z, GLP_IV);
        node_bounds(m, lp, n);
        if (rq->mode == LOKI__MILP_HARDWARE)
            glp_set_obj_coef(lp, n->col_z, n->share);
        else
            glp_set_obj_coef(lp, n->col_z, -eps_gpu * n->share);
    }
    for (int i = 0; i < m->n_paths; i++) {
        const struct path *ph = &m->paths[i];
        const struct chain *c = &m->chains[ph->chain];
        glp_set_col_bnds(lp, ph->col, GLP_DB, 0, 1);
        double a = m->wp[c->p] * c->weight * ph->acc;
        if (rq->mode == LOKI__MILP_ACCURACY)
            glp_set_obj_coef(lp, ph->col, a);
        else if (rq->mode == LOKI__MILP_SERVED)
            glp_set_obj_coef(lp, ph->col, 1e-3 * a);
        else if (rq->acc_floor > 0)
            glp_set_obj_coef(lp, ph->col, -0.5 * m->gran * a); /* sum of a <= 1: < one granule */
    }
    for (int p = 0; p < topo->n_pipelines; p++) {
        if (rq->mode == LOKI__MILP_SERVED) {
            glp_set_col_bnds(lp, m->col_sigma[p], GLP_DB, 0, 1);
            glp_set_obj_coef(lp, m->col_sigma[p], m->wp[p]);
        } else {
            glp_set_col_bnds(lp, m->col_sigma[p], GLP_FX, 1, 1);
        }
    }
}

#define ROW(type, lo, up)                                                                          \
    do {                                                                                           \
        row = glp_add_rows(lp, 1);                                                                 \
        glp_set_row_bnds(lp, row, (type), (lo), (up));                                             \
    } while (0)
#define NZ(col, val)                                                                               \
    do {                                                                                           \
        if ((rc = loki__milp_nz(m, row, (col), (val))) < 0)                                        \
            return rc;                                                                             \
    } while (0)

int loki__milp_option_rows(struct model *m, glp_prob *lp)
{
    int rc = 0, row = 0;
    /* One option per variant (a variant's nodes are consecutive). */
    for (int i = 0; i < m->n_nodes;) {
        int j = i;
        bool any = false;
        while (j < m->n_nodes && m->nodes[j].p == m->nodes[i].p && m->nodes[j].t == m->nodes[i].t &&
               m->nodes[j].v == m->nodes[i].v) {
            any |= m->nodes[j].used;
            j++;
        }
        if (any) {
            ROW(GLP_UP, 0, 1);
            for (int k = i; k < j; k++)
                if (m->nodes[k].used)
                    NZ(m->nodes[k].col_y, 1);
        }
        i = j;
    }
    /* y <= z <= Zmax y. */
    for (int i = 0; i < m->n_nodes; i++) {
        const struct node *n = &m->nodes[i];
        if (!n->used)
            continue;
        double zmax = floor(m->rq->budget / n->share + 1e-9);
        ROW(GLP_UP, 0, 0);
        NZ(n->col_z, 1);
        NZ(n->col_y, -zmax);
        ROW(GLP_UP, 0, 0);
        NZ(n->col_y, 1);
        NZ(n->col_z, -1);
    }
    return 0;
}

int loki__milp_gpu_rows(struct model *m, glp_prob *lp)
{
    const struct loki_topology *topo = m->rq->topo;
    double g = ceil(m->rq->budget - 1e-9);
    int rc = 0, row = 0;
    /* GPU aggregates: granules of every task and every variant, integers to branch on. */
    for (int i = 0; i < m->n_agg_task + m->n_agg_var; i++) {
        bool task = i < m->n_agg_task;
        int col = task ? m->agg_task[i] : m->agg_var[i - m->n_agg_task];
        ROW(GLP_FX, 0, 0);
        NZ(col, -1);
        for (int k = 0; k < m->n_nodes; k++) {
            const struct node *n = &m->nodes[k];
            if (n->used && (task ? m->col_task[n->p][n->t] : m->col_var[n->p][n->t][n->v]) == col)
                NZ(n->col_z, granules(m, n));
        }
    }
    /* GPU budget, memory and MPS clients in aggregate. */
    ROW(GLP_UP, 0, m->rq->budget);
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].used)
            NZ(m->nodes[i].col_z, m->nodes[i].share);
    if (topo->gpus.mem_mb > 0) {
        ROW(GLP_UP, 0, g * topo->gpus.mem_mb);
        for (int i = 0; i < m->n_nodes; i++)
            if (m->nodes[i].used && m->nodes[i].mem > 0)
                NZ(m->nodes[i].col_z, m->nodes[i].mem);
    }
    if (topo->gpus.mps_max_clients > 0) {
        ROW(GLP_UP, 0, g * topo->gpus.mps_max_clients);
        for (int i = 0; i < m->n_nodes; i++)
            if (m->nodes[i].used)
                NZ(m->nodes[i].col_z, 1);
    }
    return 0;
}
#undef ROW
#undef NZ

/*
 * Rows of @m into @lp (after add_columns()), then the matrix: one option per
 * variant, y <= z <= Zmax y, paths on chosen options only, the served
 * fraction per chain, the accuracy floor, shared prefixes, capacity per
 * option node, GPU aggregates, and GPUs, memory and MPS clients in aggregate.
 * Returns 0 or -ENOMEM.
 */
static int add_rows(struct model *m, glp_prob *lp)
{
    const struct loki__milp_req *rq = m->rq;
    const struct loki_topology *topo = rq->topo;
    int rc = 0;
    int row = 0;
#define ROW(type, lo, up)                                                                          \
    do {                                                                                           \
        row = glp_add_rows(lp, 1);                                                                 \
        glp_set_row_bnds(lp, row, (type), (lo), (up));                                             \
    } while (0)
#define NZ(col, val)                                                                               \
    do {                                                                                           \
        if ((rc = loki__milp_nz(m, row, (col), (val))) < 0)                                        \
            return rc;                                                                             \
    } while (0)
    if ((rc = loki__milp_option_rows(m, lp)) < 0)
        return rc;
    /* Paths use chosen options only: sum_{owner paths through n} c <= y[n]. */
    {
        int *link = calloc((size_t)m->n_nodes, sizeof(int));
        if (!link) {
            rc = -ENOMEM;
            return rc;
        }
        for (int i = 0; i < m->n_nodes; i++) {
            if (!m->nodes[i].used)
                continue;
            ROW(GLP_UP, 0, 0);
            link[i] = row;
            if ((rc = loki__milp_nz(m, row, m->nodes[i].col_y, -1)) < 0)
                break;
        }
        for (int i = 0; i < m->n_paths && rc == 0; i++) {
            const struct path *ph = &m->paths[i];
            const struct chain *c = &m->chains[ph->chain];
            for (int j = 0; j < c->len && rc == 0; j++) {
                const struct node *n = &m->nodes[ph->node[j]];
                if (m->owner[c->p][n->t] == ph->chain)
                    rc = loki__milp_nz(m, link[ph->node[j]], ph->col, 1);
            }
        }
        free(link);
        if (rc < 0)
            return rc;
    }
    /* Every chain carries the served fraction. */
    for (int k = 0; k < m->n_chains; k++) {
        const struct chain *c = &m->chains[k];
        ROW(GLP_FX, 0, 0);
        for (int i = 0; i < c->n; i++)
            NZ(m->paths[c->first + i].col, 1);
        NZ(m->col_sigma[c->p], -1);
    }
    /*
     * Accuracy floor, per pipeline: sum_chains weight sum_p A_p c[p] >= floor
     * * sigma. A hair above the floor, so that the router's float split
     * still evaluates at or above it; never above 1, which best variants reach.
     */
    if (rq->acc_floor > 0) {
        double lb = fmin(rq->acc_floor + 1e-6, 1 - 1e-9);
        for (int p = 0; p < topo->n_pipelines; p++) {
            ROW(GLP_LO, 0, 0);
            for (int k = 0; k < m->n_chains; k++) {
                const struct chain *c = &m->chains[k];
                for (int i = 0; i < c->n && c->p == p; i++)
                    NZ(m->paths[c->first + i].col, c->weight * m->paths[c->first + i].acc);
            }
            NZ(m->col_sigma[p], -lb);
        }
    }
    /* Shared prefixes agree. */
    for (int k = 1; k < m->n_chains; k++) {
        const struct chain *c = &m->chains[k], *prev = &m->chains[k - 1];
        if (c->lcp <= 0 || prev->p != c->p)
            continue;
        int n = c->n + prev->n;
        struct pref *pr = calloc((size_t)(n > 0 ? n : 1), sizeof(*pr));
        if (!pr) {
            rc = -ENOMEM;
            return rc;
        }
        int w = 0;
        for (int side = 0; side < 2; side++) {
            const struct chain *cc = side ? prev : c;
            for (int i = 0; i < cc->n; i++) {
                const struct path *ph = &m->paths[cc->first + i];
                memcpy(pr[w].key, ph->node, sizeof(int) * (size_t)c->lcp);
                pr[w].col = ph->col;
                pr[w].sign = side ? -1 : 1;
                w++;
            }
        }
        pref_len = c->lcp;
        qsort(pr, (size_t)w, sizeof(*pr), pref_cmp);
        for (int i = 0; i < w && rc == 0;) {
            int j = i;
            ROW(GLP_FX, 0, 0);
            while (j < w && pref_cmp(&pr[i], &pr[j]) == 0 && rc == 0) {
                rc = loki__milp_nz(m, row, pr[j].col, pr[j].sign);
                j++;
            }
            i = j;
        }
        free(pr);
        if (rc < 0)
            return rc;
    }
    /*
     * Capacity per option node. Only the chosen option of a variant carries
     * paths, so on integer points this is the per-variant row; its LP
     * relaxation is tighter: a fast option's paths cannot borrow a slow,
     * high-throughput option's capacity.
     */
    {
        int *caprow = calloc((size_t)m->n_nodes, sizeof(int));
        if (!caprow) {
            rc = -ENOMEM;
            return rc;
        }
        int last = -1;
        for (int i = 0; i < m->n_nodes && rc == 0; i++) {
            const struct node *n = &m->nodes[i];
            if (!n->used)
                continue;
            /* The reference shares one row among a variant's options (nodes are grouped). */
            const struct node *pn = last >= 0 ? &m->nodes[last] : NULL;
            if (plain(rq) && pn && pn->p == n->p && pn->t == n->t && pn->v == n->v) {
                caprow[i] = caprow[last];
            } else {
                ROW(GLP_UP, 0, 0);
                caprow[i] = row;
            }
            rc = loki__milp_nz(m, caprow[i], n->col_z, -n->thr);
            last = i;
        }
        double beta = topo->planner.beta > 0 ? topo->planner.beta : 1;
        for (int i = 0; i < m->n_paths && rc == 0; i++) {
            const struct path *ph = &m->paths[i];
            const struct chain *c = &m->chains[ph->chain];
            for (int j = 0; j < c->len && rc == 0; j++) {
                const struct node *n = &m->nodes[ph->node[j]];
                double coef = beta * c->base * ph->mult[j];
                if (m->owner[c->p][n->t] == ph->chain && coef > 0)
                    rc = loki__milp_nz(m, caprow[ph->node[j]], ph->col, coef);
            }
        }
        free(caprow);
        if (rc < 0)
            return rc;
    }
    if ((rc = loki__milp_gpu_rows(m, lp)) < 0)
        return rc;
#undef ROW
#undef NZ
    m->n_rows = glp_get_num_rows(lp);
    glp_load_matrix(lp, m->nz, m->ia, m->ja, m->ar);
    return 0;
}

/* Build the LP of @m and search it. Returns as loki__milp_search(). */
static int solve_model(struct model *m, double t0, struct loki__milp_res *res)
{
    glp_prob *lp = glp_create_prob();
    int term = glp_term_out(GLP_OFF); /* scaling and basis construction print otherwise */
    int rc;
    if (m->fl) {
        loki__flow_columns(m, lp);
        rc = loki__flow_rows(m, lp);
    } else {
        add_columns(m, lp);
        rc = add_rows(m, lp);
    }
    if (rc == 0) {
        res->n_cols = m->n_cols;
        res->n_rows = m->n_rows;
        res->n_paths = m->n_paths;
        rc = loki__milp_search(m, lp, t0, res);
    }
    glp_term_out(term);
    glp_delete_prob(lp);
    return rc;
}

/*
 * Whether @rq is solved on the flow formulation: asked for (the default),
 * not the reference or a decoupled (per-task, already linear) solve, and
 * every pipeline a tree (one parent per task) without a measured
 * path-accuracy table on a chain of three or more tasks, which the flows'
 * per-task accuracy cannot carry. Otherwise the path formulation.
 */
static bool use_flow(const struct loki__milp_req *rq)
{
    const struct loki_topology *topo = rq->topo;
    if (rq->reference || rq->decoupled || rq->formulation != LOKI_FORMULATION_FLOW)
        return false;
    for (int p = 0; p < topo->n_pipelines; p++) {
        const struct loki_pipeline *pp = &topo->pipelines[p];
        int indeg[LOKI_MAX_TASKS] = {0};
        for (int t = 0; t < pp->n_tasks; t++)
            for (int c = 0; c < pp->tasks[t].n_children; c++)
                if (++indeg[pp->tasks[t].children[c]] > 1)
                    return false;
        if (pp->n_path_acc > 0) {
            int chains[LOKI_MAX_TASKS * 4][LOKI_MAX_TASKS], len[LOKI_MAX_TASKS * 4];
            int nc = loki_pipeline_chains(pp, chains, len, LOKI_MAX_TASKS * 4);
            for (int k = 0; k < nc; k++)
                if (len[k] >= 3)
                    return false;
        }
    }
    return true;
}

int loki__milp_solve(const struct loki__milp_req *rq, struct loki__milp_res *res)
{
    double t0 = loki__now_ms();
    memset(res, 0, offsetof(struct loki__milp_res, basis));
    struct model *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->rq = rq;
    m->max_paths = rq->max_paths > 0 ? rq->max_paths : DEFAULT_MAX_PATHS;
    int rc = 0;
    fill_fanouts(m);
    build_chains(m);
    if (use_flow(rq)) {
        /* No paths, no cap: the flows grow with the options, not their products. */
        res->flow = true;
        if ((rc = build_nodes(m, 0)) < 0 || (rc = loki__flow_build(m)) < 0)
            goto out;
        /* A task without a latency-feasible option cannot be served at all. */
        for (int i = 0; i < m->n_chains; i++)
            for (int j = 0; j < m->chains[i].len; j++) {
                const struct chain *c = &m->chains[i];
                bool any = false;
                for (int k = 0; k < m->tn_count[c->p][c->task[j]] && !any; k++)
                    any = m->nodes[m->tn_first[c->p][c->task[j]] + k].used;
                if (!any && rq->mode != LOKI__MILP_SERVED) {
                    res->feasible = false;
                    goto out;
                }
            }
        rc = solve_model(m, t0, res);
        goto out;
    }
    for (int thin = 0; thin < 6; thin++) {
        if ((rc = build_nodes(m, thin)) < 0)
            goto out;
        if ((rc = build_paths(m)) < 0)
            goto out;
        if (!m->overflow)
            break;
        res->truncated = true;
    }
    if (m->overflow) {
        res->feasible = false;
        goto out;
    }
    /* A chain without a single latency-feasible path option cannot be served at all. */
    for (int k = 0; k < m->n_chains; k++)
        if (m->chains[k].n == 0) {
            res->feasible = false;
            if (rq->mode != LOKI__MILP_SERVED)
                goto out;
        }
    rc = solve_model(m, t0, res);
out:
    loki__flow_free(m);
    free(m->nodes);
    free(m->paths);
    free(m->ia);
    free(m->ja);
    free(m->ar);
    free(m);
    res->solve_ms = loki__now_ms() - t0;
    return rc;
}
