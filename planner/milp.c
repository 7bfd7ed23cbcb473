/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The planning MILP and its GLPK glue (the only file that includes glpk.h).
 *
 * Formulation
 * -----------
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
#include <glpk.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "loki/error.h"

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

struct model {
    const struct loki__milp_req *rq;
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

static int push_nz(struct model *m, int row, int col, double val)
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

/* Units of share granularity one instance of @n takes (an integer by loki__share_allowed). */
static double granules(const struct model *m, const struct node *n)
{
    return round(n->share / m->gran);
}

/* Set the GPU aggregates of solution vector @x from its instance counts. */
static void fill_aggregates(const struct model *m, double *x)
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
static bool warm_vector(struct model *m, double *x)
{
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
        for (int t = 0; t < pp->n_tasks; t++) {
            const struct loki_task *task = &pp->tasks[t];
            int par = m->parent[p][t];
            int nu = par >= 0 ? pp->tasks[par].n_variants : 1;
            double agg[LOKI_MAX_VARIANTS] = {0}, aggsum = 0;
            for (int u = 0; u < LOKI_MAX_VARIANTS; u++)
                for (int v = 0; v < task->n_variants; v++) {
                    res->load[p][t][v] += l[p][t][u][v];
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
    free(l);
    return 0;
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

/* Solve the LP relaxation from the current basis; true when optimal. Sets *@timed_out. */
static bool relax(glp_prob *lp, int tm_lim, bool *timed_out)
{
    glp_smcp sm;
    glp_init_smcp(&sm);
    sm.msg_lev = GLP_MSG_OFF;
    sm.tm_lim = tm_lim;
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

/* Bounds of node @n's columns: free, or fixed to zero while @n->off. */
static void node_bounds(const struct model *m, glp_prob *lp, const struct node *n)
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

/*
 * The first version's formulation (per-variant capacity, no GPU aggregates):
 * the reference, and HARDWARE mode, whose models (best variants only) solve
 * in well under a millisecond either way and whose many plans with equally
 * few GPUs then stay the ones the first version chose.
 */
static bool plain(const struct loki__milp_req *rq)
{
    return rq->reference || (rq->mode == LOKI__MILP_HARDWARE && !(rq->acc_floor > 0));
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

static int solve_model(struct model *m, double t0, struct loki__milp_res *res)
{
    const struct loki__milp_req *rq = m->rq;
    const struct loki_topology *topo = rq->topo;
    int rc = 0;
    glp_prob *lp = glp_create_prob();
    double *x = NULL, *inc = NULL;
    int term = glp_term_out(GLP_OFF); /* scaling and basis construction print otherwise */
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
    double g = ceil(rq->budget - 1e-9);

    /* Columns. */
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

    /* Rows. */
    int row = 0;
#define ROW(type, lo, up)                                                                          \
    do {                                                                                           \
        row = glp_add_rows(lp, 1);                                                                 \
        glp_set_row_bnds(lp, row, (type), (lo), (up));                                             \
    } while (0)
#define NZ(col, val)                                                                               \
    do {                                                                                           \
        if ((rc = push_nz(m, row, (col), (val))) < 0)                                              \
            goto out;                                                                              \
    } while (0)
    /* One option per variant. */
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
        double zmax = floor(rq->budget / n->share + 1e-9);
        ROW(GLP_UP, 0, 0);
        NZ(n->col_z, 1);
        NZ(n->col_y, -zmax);
        ROW(GLP_UP, 0, 0);
        NZ(n->col_y, 1);
        NZ(n->col_z, -1);
    }
    /* Paths use chosen options only: sum_{owner paths through n} c <= y[n]. */
    {
        int *link = calloc((size_t)m->n_nodes, sizeof(int));
        if (!link) {
            rc = -ENOMEM;
            goto out;
        }
        for (int i = 0; i < m->n_nodes; i++) {
            if (!m->nodes[i].used)
                continue;
            ROW(GLP_UP, 0, 0);
            link[i] = row;
            if ((rc = push_nz(m, row, m->nodes[i].col_y, -1)) < 0)
                break;
        }
        for (int i = 0; i < m->n_paths && rc == 0; i++) {
            const struct path *ph = &m->paths[i];
            const struct chain *c = &m->chains[ph->chain];
            for (int j = 0; j < c->len && rc == 0; j++) {
                const struct node *n = &m->nodes[ph->node[j]];
                if (m->owner[c->p][n->t] == ph->chain)
                    rc = push_nz(m, link[ph->node[j]], ph->col, 1);
            }
        }
        free(link);
        if (rc < 0)
            goto out;
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
            goto out;
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
                rc = push_nz(m, row, pr[j].col, pr[j].sign);
                j++;
            }
            i = j;
        }
        free(pr);
        if (rc < 0)
            goto out;
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
            goto out;
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
            rc = push_nz(m, caprow[i], n->col_z, -n->thr);
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
                    rc = push_nz(m, caprow[ph->node[j]], ph->col, coef);
            }
        }
        free(caprow);
        if (rc < 0)
            goto out;
    }
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
    ROW(GLP_UP, 0, rq->budget);
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
#undef ROW
#undef NZ
    m->n_rows = row;
    glp_load_matrix(lp, m->nz, m->ia, m->ja, m->ar);
    res->n_cols = n_cols;
    res->n_rows = row;
    res->n_paths = m->n_paths;

    x = calloc((size_t)(n_cols + 1), sizeof(double));
    inc = calloc((size_t)(n_cols + 1), sizeof(double));
    if (!x || !inc) {
        rc = -ENOMEM;
        goto out;
    }
    if (plain(rq) || rq->mode == LOKI__MILP_SERVED) {
        rc = solve_presolved(m, lp, x, t0, res);
        goto out;
    }
    /*
     * The incumbent: the better of the warm start and (accuracy mode) the
     * greedy assignment. Both: a warm plan made for other demand can be far
     * worse than the greedy one, and the heuristic below searches near both.
     */
    bool warm = warm_vector(m, inc);
    if (warm)
        fill_aggregates(m, inc);
    if (warm && rq->acc_floor > 0)
        warm = rows_hold(m, lp, inc); /* a current plan below the floor is no incumbent */
    bool warm_ok = warm;
    bool gr = greedy_vector(m, lp, x);
    double inc_obj = 0;
    if (gr) {
        fill_aggregates(m, x);
        double go = objective_of(lp, x, n_cols);
        if (!warm || better(rq, go, objective_of(lp, inc, n_cols))) {
            double *t = inc;
            inc = x, x = t;
            warm = false;
        }
    }
    bool have = warm || gr, both = warm_ok && gr;
    if (have)
        inc_obj = objective_of(lp, inc, n_cols);
    double tol = rq->mip_gap > 0 ? rq->mip_gap : 0;
    double bound = 0, gap = 0;
    bool have_bound = false;
    struct cbinfo ci = {.m = m};
    glp_iocp parm;
    glp_init_iocp(&parm);
    parm.msg_lev = GLP_MSG_OFF;
    parm.presolve = GLP_OFF; /* GLPK's presolver renumbers columns: no incumbent, no branching */
    parm.mip_gap = tol;
    parm.fp_heur = GLP_OFF;
    parm.cb_func = callback;
    parm.cb_info = &ci;

    glp_scale_prob(lp, GLP_SF_AUTO);
    struct loki__milp_basis *bs = &res->basis[rq->mode];
    uint64_t key = model_key(m);
    bool cached = load_basis(lp, bs, key, row, n_cols);
    if (!cached)
        glp_adv_basis(lp, 0);
    int left = ms_left(rq, t0);
    bool rok = left && relax(lp, left, &res->time_limited);
    if (!rok && cached && glp_get_status(lp) != GLP_NOFEAS && (left = ms_left(rq, t0))) {
        glp_adv_basis(lp, 0); /* the stored basis did not work out here */
        rok = relax(lp, left, &res->time_limited);
    }
    if (rok)
        save_basis(lp, bs, key, row, n_cols);
    if (!left || !rok) {
        if (left && glp_get_status(lp) == GLP_NOFEAS) {
            res->feasible = false;
            goto out;
        }
        goto fallback; /* out of time */
    }
    bound = glp_get_obj_val(lp);
    have_bound = true;
    /*
     * An incumbent within the gap of the LP bound needs no search (the common
     * case for a warm start when demand moved little).
     */
    if (have && rel_gap(bound, inc_obj) <= tol)
        goto fallback;
    if (rq->mode == LOKI__MILP_ACCURACY && (left = ms_left(rq, t0)) > 0) {
        /* Heuristic: the same MILP on the variants the relaxation or the incumbent uses. */
        restrict_support(m, lp, have ? inc : NULL, both ? x : NULL, true);
        if (relax(lp, left, &res->time_limited)) {
            ci.inc = have ? inc : NULL;
            ci.given = false;
            parm.tm_lim = left > 1 ? left / 2 : 1;
            int ret = glp_intopt(lp, &parm);
            res->time_limited |= ret == GLP_ETMLIM && !ms_left(rq, t0);
            int st = glp_mip_status(lp);
            double o = glp_mip_obj_val(lp);
            if ((st == GLP_OPT || st == GLP_FEAS) && (!have || better(rq, o, inc_obj))) {
                /* glp_ios_heur_sol() takes integer columns only when exactly integral */
                for (int j = 1; j <= n_cols; j++)
                    inc[j] = glp_get_col_kind(lp, j) == GLP_CV ? glp_mip_col_val(lp, j)
                                                               : round(glp_mip_col_val(lp, j));
                have = true;
                inc_obj = o;
            }
        }
        restrict_support(m, lp, NULL, NULL, false);
        if (have && rel_gap(bound, inc_obj) <= tol)
            goto fallback;
        if (!(left = ms_left(rq, t0)) || !relax(lp, left, &res->time_limited))
            goto fallback;
    }
    if (!(left = ms_left(rq, t0)))
        goto fallback;
    ci.inc = have ? inc : NULL;
    ci.given = false;
    ci.gap = have ? rel_gap(bound, inc_obj) : 1;
    parm.tm_lim = left;
    int ret = glp_intopt(lp, &parm);
    int st = glp_mip_status(lp);
    if ((ret == 0 || ret == GLP_ETMLIM || ret == GLP_EMIPGAP || ret == GLP_ESTOP) &&
        (st == GLP_OPT || st == GLP_FEAS)) {
        /* GLPK's answer: the incumbent handed over, or better. */
        for (int j = 1; j <= n_cols; j++)
            x[j] = glp_mip_col_val(lp, j);
        res->objective = glp_mip_obj_val(lp);
        res->gap = ret == 0 ? 0 : ret == GLP_EMIPGAP ? fmin(ci.gap, tol) : ci.gap;
        res->time_limited |= ret == GLP_ETMLIM;
        res->feasible = true;
        res->warm_used = warm;
        rc = extract(m, x, res);
        goto out;
    }
    if (!have && !(ret == 0 || ret == GLP_ENOPFS || ret == GLP_ENODFS || ret == GLP_ETMLIM ||
                   ret == GLP_EMIPGAP || ret == GLP_ESTOP)) {
        rc = LOKI_ESOLVER;
        goto out;
    }
fallback:
    res->time_limited |= ms_left(rq, t0) == 0;
    /*
     * The incumbent is the answer: within the gap of the bound, or the best
     * there is when time ran out. Without one, no solution (the ladder moves
     * on to the next mode).
     */
    if (have) {
        gap = have_bound ? rel_gap(bound, inc_obj) : 1;
        res->objective = inc_obj;
        res->gap = gap;
        res->feasible = true;
        res->warm_used = warm;
        rc = extract(m, inc, res);
    } else {
        res->feasible = false;
    }
out:
    glp_term_out(term);
    free(x);
    free(inc);
    glp_delete_prob(lp);
    return rc;
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
    free(m->nodes);
    free(m->paths);
    free(m->ia);
    free(m->ja);
    free(m->ar);
    free(m);
    res->solve_ms = loki__now_ms() - t0;
    return rc;
}
