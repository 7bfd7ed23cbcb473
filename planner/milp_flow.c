/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The planning MILP's flow formulation, the default (milp.c has the path
 * formulation it replaces; docs/planner.md compares them). Its size grows
 * with the options of each task, never with their products along a chain,
 * and it has no path cap. milp_search.c searches it like the path LP.
 *
 * Option nodes (variant, batch, share) with y[n] binary and z[n] instances
 * are the path formulation's, as are the GPU aggregates and the GPU, memory
 * and MPS rows (shared code). A node whose latency plus the fastest possible
 * prefix and suffix of its task breaks h * SLO gets no column; nor one that a
 * k-th share of the same variant dominates (no slower, k instances no less
 * throughput) where memory and MPS clients can never bind.
 *
 * Flows. Per task t and option node n of t, inflow columns X[u -> n]: the
 * fraction of root queries that reach n from variant u of t's parent task
 * (at the root one column per node, from the source). Throughflow x_n =
 * sum_u X[u -> n] <= y[n] (only the chosen option of a variant carries
 * traffic); per variant v of t and child task t', sum_n' X[v -> n'] =
 * sum_{n of v} x_n (every root query that reaches v sends its sub-queries on
 * to t'; the router's split of v's sub-queries over t' is X[v -> .] / x_v);
 * at the root sum_n x_n = sigma, the served fraction.
 *
 * Loads and accuracy down to the root's children (depth <= 2). A root query
 * at a child's node n came through one root variant u, so the load on n is
 * beta D sum_u m(u, t') X[u -> n] and a leaf's path accuracy A(u, w) (the
 * product, or the topology's path table) is a coefficient of X[u -> n]: all
 * linear, all exact.
 *
 * Deeper (depth >= 3) the sub-queries reaching a variant u come through
 * prefixes with different fan-out and accuracy products, and the router
 * splits them alike whatever their prefix: a product of splits that no
 * linear model holds. Per variant pair (u -> v) the load F (beta x qps) and
 * the accuracy mass G get columns, conserved with u's fan-out and accuracy as
 * gains (sum_v F[u -> v] = m(u) x u's load, sum_v G[u -> v] = a_u x u's
 * incoming mass); per pair, (F / (beta D m(u) X), G / (a_u X)), with X the
 * pair's fraction, lies in the convex hull of the (fan-out product, accuracy
 * product) pairs of the prefixes into u's task (one row per hull edge): what
 * any routing of whole prefixes can give, so the capacity rows hold for the
 * router's loads (its split is F's) and the accuracy is a bound that the
 * router meets when prefixes do not mix. A node's own load column ties F to
 * the option its fraction takes, within the prefixes' fan-out range.
 *
 * Latency (h * SLO on every variant path the router can take). Per edge
 * (task t -> child t') and parent variant u, with Bt = budget - fastest
 * prefix above t - fastest suffix below t': flow from u may enter child
 * option n' only from u's options n with tau_n + tau_n' <= Bt. Compatibility
 * sets are nested (a slower n' pairs with fewer n), so Hall's condition for
 * each child latency level k is necessary and sufficient for the flow to
 * pair up: S_k = sum_{n': tau_n' >= lambda_k} X[u -> n'] <=
 * P_j(k) = sum_{n of u: tau_n <= Bt - lambda_k} x_n, written with
 * cumulative columns S and P so the rows stay linear in the options. For a
 * pipeline whose chains have at most two tasks, Bt is the whole budget and
 * these rows are exactly the latency of every path: this LP is then the path
 * LP's projection (docs/planner.md), the same bound and the same optimum.
 * Deeper pipelines add edge binaries e[u -> w] >= X[u -> w's nodes] and
 * finish-time potentials E_w >= E_u + T_w - M (1 - e[u -> w]),
 * E_root >= T_root, E_leaf <= budget, T_v = sum_n tau_n y[n]: the longest
 * path of the routing's support, which is what the router can realise.
 *
 * Size (N options per task, V variants, H hull edges): nodes sum of N; inflow
 * columns V(parent) x N(child) per edge; Hall columns and rows at most
 * V(parent) x (N(child) + N(variant)) per edge; deep edges add 2 V^2 pair
 * columns, H V^2 hull rows and V^2 binaries, and a potential per variant.
 * Linear in tasks x variants x batch sizes x shares (times the parent's
 * variant count); no product over a chain.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "milp.h"

#define NP LOKI_MAX_PIPELINES
#define NT LOKI_MAX_TASKS
#define NV LOKI_MAX_VARIANTS
#define HULL_MAX 64 /* hull vertices kept per task (a 2-D hull of products: a few in practice) */

/* Flow into option node @node from variant @u of the parent task (-1 at the root). */
struct fin {
    int node, u;
    int cx; /* fraction of root queries */
};

/*
 * Hall's rows of parent variant @u towards child task @t: inflows sorted by
 * latency descending (fins[ifirst..]), u's nodes ascending (nodes[pfirst..]),
 * @ns S columns from @col_s on, @np P columns from @col_p on.
 */
struct hall {
    int p, t, u;
    int ifirst, ni, pfirst, npn;
    int ns, np, col_s, col_p;
};

struct flow {
    struct fin *fins;
    int n_fins, cap_fins;
    int *in_first, *in_n; /* per node: its inflows, consecutive */
    int *col_xn;          /* per node: its throughflow column (root: its one inflow); 0: a sum */
    int *col_fn;          /* per node below the root's children: beta x its load */
    int *sorted;          /* hall index lists: fin indexes, then node indexes */
    int n_sorted;
    struct hall *halls;
    int n_halls;
    unsigned char *cap_row; /* per row (1-based): a capacity row */
    int depth[NP][NT], parent[NP][NT], slot[NP][NT];
    int order[NP][NT], n_order[NP]; /* tasks, parents first */
    bool deep[NP];                  /* some chain has three or more tasks */
    double budget[NP], minpre[NP][NT], minsuf[NP][NT];
    double mmin[NP][NT], mmax[NP][NT], amin[NP][NT], amax[NP][NT]; /* over prefixes into t */
    /* convex hull of (fan-out product, accuracy product) over the prefixes into t, CCW */
    double hull[NP][NT][HULL_MAX][2];
    int n_hull[NP][NT];
    int vfirst[NP][NT][NV], vn[NP][NT][NV]; /* a variant's nodes (used or not) */
    double tmin[NP][NT][NV], tmax[NP][NT][NV];
    bool vused[NP][NT][NV];
    int col_e[NP][NT][NV][NV]; /* deep pipelines: edge u of the parent -> v of t in use */
    /* deep edges (below the root's children): beta x load and accuracy mass, u -> v of t */
    int col_f[NP][NT][NV][NV], col_g[NP][NT][NV][NV];
    int col_E[NP][NT][NV]; /* deep: finish time of v */
    double acc_mult;       /* the objective's weight on accuracy */
};

static double beta_of(const struct model *m)
{
    double b = m->rq->topo->planner.beta;
    return b > 0 ? b : 1;
}

static double acc_of(const struct model *m, int p, int t, int v)
{
    return m->rq->topo->pipelines[p].tasks[t].variants[v].accuracy / 100.0;
}

/* Fan-out of variant @u of @t's parent into @t. */
static double fan_in(const struct model *m, int p, int t, int u)
{
    const struct flow *f = m->fl;
    return m->fan[p][f->parent[p][t]][u][f->slot[p][t]];
}

/* ---- layout ---- */

static int push_fin(struct flow *f, int node, int u)
{
    if (f->n_fins == f->cap_fins) {
        int cap = f->cap_fins ? 2 * f->cap_fins : 256;
        struct fin *n = realloc(f->fins, sizeof(*n) * (size_t)cap);
        if (!n)
            return -ENOMEM;
        f->fins = n;
        f->cap_fins = cap;
    }
    f->fins[f->n_fins++] = (struct fin){.node = node, .u = u};
    return 0;
}

/* Depths, parents and a parents-first order of @p's tasks; whether some chain is deep. */
static void shape(struct model *m, int p)
{
    struct flow *f = m->fl;
    const struct loki_pipeline *pp = &m->rq->topo->pipelines[p];
    for (int t = 0; t < NT; t++)
        f->parent[p][t] = -1;
    f->n_order[p] = 0;
    f->order[p][f->n_order[p]++] = pp->root;
    f->depth[p][pp->root] = 1;
    for (int i = 0; i < f->n_order[p]; i++) {
        int t = f->order[p][i];
        const struct loki_task *task = &pp->tasks[t];
        for (int c = 0; c < task->n_children; c++) {
            int ch = task->children[c];
            f->parent[p][ch] = t;
            f->slot[p][ch] = c;
            f->depth[p][ch] = f->depth[p][t] + 1;
            if (f->depth[p][ch] >= 3)
                f->deep[p] = true;
            f->order[p][f->n_order[p]++] = ch;
        }
    }
}

/* Fastest prefix above and suffix below every task, over all its option nodes. */
static void bounds(struct model *m, int p)
{
    struct flow *f = m->fl;
    const struct loki_pipeline *pp = &m->rq->topo->pipelines[p];
    double mint[NT];
    for (int t = 0; t < pp->n_tasks; t++) {
        mint[t] = INFINITY;
        for (int i = 0; i < m->tn_count[p][t]; i++)
            mint[t] = fmin(mint[t], m->nodes[m->tn_first[p][t] + i].lat);
    }
    for (int i = 0; i < f->n_order[p]; i++) {
        int t = f->order[p][i], par = f->parent[p][t];
        f->minpre[p][t] = par < 0 ? 0 : f->minpre[p][par] + mint[par];
    }
    for (int i = f->n_order[p] - 1; i >= 0; i--) {
        int t = f->order[p][i];
        const struct loki_task *task = &pp->tasks[t];
        double s = 0;
        for (int c = 0; c < task->n_children; c++)
            s = fmax(s, mint[task->children[c]] + f->minsuf[p][task->children[c]]);
        f->minsuf[p][t] = s;
    }
}

/* Per variant: its nodes, used or not, and the latency range of the used ones. */
static void variant_ranges(struct model *m)
{
    struct flow *f = m->fl;
    memset(f->vn, 0, sizeof(f->vn));
    memset(f->vused, 0, sizeof(f->vused));
    for (int i = 0; i < m->n_nodes; i++) {
        const struct node *n = &m->nodes[i];
        if (!f->vn[n->p][n->t][n->v]++) {
            f->vfirst[n->p][n->t][n->v] = i;
            f->tmin[n->p][n->t][n->v] = INFINITY;
            f->tmax[n->p][n->t][n->v] = 0;
        }
        if (!n->used)
            continue;
        f->vused[n->p][n->t][n->v] = true;
        f->tmin[n->p][n->t][n->v] = fmin(f->tmin[n->p][n->t][n->v], n->lat);
        f->tmax[n->p][n->t][n->v] = fmax(f->tmax[n->p][n->t][n->v], n->lat);
    }
}

static int pt_cmp(const void *a, const void *b)
{
    const double *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0;
}

static double cross(const double *o, const double *a, const double *b)
{
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
}

/*
 * Convex hull of the @n points @pt (sorted in place), counter-clockwise into
 * @out (at most HULL_MAX, else the bounding box); returns its vertex count
 * (1: a point, 2: a segment).
 */
static int hull2d(double (*pt)[2], int n, double (*out)[2])
{
    qsort(pt, (size_t)n, sizeof(pt[0]), pt_cmp);
    int w = 1; /* drop duplicates */
    for (int i = 1; i < n; i++)
        if (fabs(pt[i][0] - pt[w - 1][0]) > 1e-12 * fmax(1, fabs(pt[i][0])) ||
            fabs(pt[i][1] - pt[w - 1][1]) > 1e-12 * fmax(1, fabs(pt[i][1])))
            memcpy(pt[w++], pt[i], sizeof(pt[0]));
    n = w;
    double h[2 * NV * HULL_MAX + 2][2];
    int k = 0;
    for (int i = 0; i < n; i++) { /* lower chain */
        while (k >= 2 && cross(h[k - 2], h[k - 1], pt[i]) <= 1e-15)
            k--;
        memcpy(h[k++], pt[i], sizeof(h[0]));
    }
    for (int i = n - 2, lo = k + 1; i >= 0; i--) { /* upper chain */
        while (k >= lo && cross(h[k - 2], h[k - 1], pt[i]) <= 1e-15)
            k--;
        memcpy(h[k++], pt[i], sizeof(h[0]));
    }
    if (k > 1)
        k--; /* the last point is the first */
    if (k <= HULL_MAX) {
        memcpy(out, h, sizeof(h[0]) * (size_t)k);
        return k;
    }
    double lo0 = pt[0][0], hi0 = pt[n - 1][0], lo1 = INFINITY, hi1 = -INFINITY;
    for (int i = 0; i < n; i++)
        lo1 = fmin(lo1, pt[i][1]), hi1 = fmax(hi1, pt[i][1]);
    double box[4][2] = {{lo0, lo1}, {hi0, lo1}, {hi0, hi1}, {lo0, hi1}};
    memcpy(out, box, sizeof(box));
    return 4;
}

/*
 * Per task, over the prefixes (one used variant per task above it) that
 * reach it: the range of their fan-out and accuracy products and the convex
 * hull of the pairs, built task by task from the parent's hull vertices
 * (scaling by one variant's fan-out and accuracy maps a hull onto a hull).
 */
static void prefix_ranges(struct model *m, int p)
{
    struct flow *f = m->fl;
    const struct loki_pipeline *pp = &m->rq->topo->pipelines[p];
    for (int i = 0; i < f->n_order[p]; i++) {
        int t = f->order[p][i], par = f->parent[p][t];
        if (par < 0) {
            f->mmin[p][t] = f->mmax[p][t] = f->amin[p][t] = f->amax[p][t] = 1;
            f->hull[p][t][0][0] = f->hull[p][t][0][1] = 1;
            f->n_hull[p][t] = 1;
            continue;
        }
        double pts[NV * HULL_MAX][2];
        int n = 0;
        for (int u = 0; u < pp->tasks[par].n_variants; u++) {
            if (!f->vused[p][par][u])
                continue;
            for (int k = 0; k < f->n_hull[p][par]; k++) {
                pts[n][0] = f->hull[p][par][k][0] * fan_in(m, p, t, u);
                pts[n][1] = f->hull[p][par][k][1] * acc_of(m, p, par, u);
                n++;
            }
        }
        if (n == 0) {
            pts[0][0] = pts[0][1] = 0;
            n = 1;
        }
        f->n_hull[p][t] = hull2d(pts, n, f->hull[p][t]);
        f->mmin[p][t] = f->amin[p][t] = INFINITY;
        f->mmax[p][t] = f->amax[p][t] = 0;
        for (int k = 0; k < f->n_hull[p][t]; k++) {
            f->mmin[p][t] = fmin(f->mmin[p][t], f->hull[p][t][k][0]);
            f->mmax[p][t] = fmax(f->mmax[p][t], f->hull[p][t][k][0]);
            f->amin[p][t] = fmin(f->amin[p][t], f->hull[p][t][k][1]);
            f->amax[p][t] = fmax(f->amax[p][t], f->hull[p][t][k][1]);
        }
    }
}

/* Latency left to the pair (parent task of @t, @t): budget less the fastest prefix and suffix. */
static double edge_budget(const struct model *m, int p, int t)
{
    const struct flow *f = m->fl;
    int par = f->parent[p][t];
    return f->budget[p] - f->minpre[p][par] - f->minsuf[p][t];
}

static const struct model *sort_model;

static int by_lat_desc(const void *a, const void *b)
{
    double x = sort_model->nodes[sort_model->fl->fins[*(const int *)a].node].lat;
    double y = sort_model->nodes[sort_model->fl->fins[*(const int *)b].node].lat;
    return x > y ? -1 : x < y ? 1 : *(const int *)a - *(const int *)b;
}

static int by_lat_asc(const void *a, const void *b)
{
    double x = sort_model->nodes[*(const int *)a].lat, y = sort_model->nodes[*(const int *)b].lat;
    return x < y ? -1 : x > y ? 1 : *(const int *)a - *(const int *)b;
}

/* Lay out Hall's rows for every (parent variant, child task): sorted lists and column counts. */
static int plan_halls(struct model *m)
{
    struct flow *f = m->fl;
    const struct loki_topology *topo = m->rq->topo;
    int cap = f->n_fins + 1, nh = 0;
    for (int p = 0; p < topo->n_pipelines; p++)
        for (int t = 0; t < topo->pipelines[p].n_tasks; t++) {
            int par = f->parent[p][t];
            if (par < 0)
                continue;
            nh += topo->pipelines[p].tasks[par].n_variants;
            for (int u = 0; u < topo->pipelines[p].tasks[par].n_variants; u++)
                cap += f->vn[p][par][u];
        }
    f->halls = calloc((size_t)(nh > 0 ? nh : 1), sizeof(*f->halls));
    f->sorted = malloc(sizeof(int) * (size_t)cap);
    if (!f->halls || !f->sorted)
        return -ENOMEM;
    sort_model = m;
    for (int p = 0; p < topo->n_pipelines; p++) {
        const struct loki_pipeline *pp = &topo->pipelines[p];
        for (int t = 0; t < pp->n_tasks; t++) {
            int par = f->parent[p][t];
            if (par < 0)
                continue;
            double bt = edge_budget(m, p, t);
            for (int u = 0; u < pp->tasks[par].n_variants; u++) {
                if (!f->vused[p][par][u])
                    continue;
                struct hall *h = &f->halls[f->n_halls];
                *h = (struct hall){.p = p, .t = t, .u = u, .ifirst = f->n_sorted};
                for (int i = 0; i < m->tn_count[p][t]; i++) {
                    int n = m->tn_first[p][t] + i;
                    for (int k = 0; k < f->in_n[n]; k++)
                        if (f->fins[f->in_first[n] + k].u == u) {
                            if (f->n_sorted >= cap)
                                return -ENOMEM;
                            f->sorted[f->n_sorted++] = f->in_first[n] + k;
                        }
                }
                h->ni = f->n_sorted - h->ifirst;
                qsort(f->sorted + h->ifirst, (size_t)h->ni, sizeof(int), by_lat_desc);
                h->pfirst = f->n_sorted;
                for (int i = 0; i < f->vn[p][par][u]; i++) {
                    int n = f->vfirst[p][par][u] + i;
                    if (!m->nodes[n].used)
                        continue;
                    if (f->n_sorted >= cap)
                        return -ENOMEM;
                    f->sorted[f->n_sorted++] = n;
                }
                h->npn = f->n_sorted - h->pfirst;
                qsort(f->sorted + h->pfirst, (size_t)h->npn, sizeof(int), by_lat_asc);
                /* Levels: distinct child latencies (descending), parent latencies (ascending). */
                int nplev = 0;
                for (int i = 0; i < h->npn; i++)
                    nplev += i == 0 || m->nodes[f->sorted[h->pfirst + i]].lat >
                                           m->nodes[f->sorted[h->pfirst + i - 1]].lat;
                int k = 0;
                for (int i = 0; i < h->ni; i++) {
                    const struct fin *fi = &f->fins[f->sorted[h->ifirst + i]];
                    double lam = m->nodes[fi->node].lat;
                    if (i > 0 && lam == m->nodes[f->fins[f->sorted[h->ifirst + i - 1]].node].lat)
                        continue;
                    /* parent levels compatible with lam */
                    int j = -1, lev = -1;
                    for (int q = 0; q < h->npn; q++) {
                        double mu = m->nodes[f->sorted[h->pfirst + q]].lat;
                        if (q == 0 || mu > m->nodes[f->sorted[h->pfirst + q - 1]].lat)
                            lev++;
                        if (mu + lam <= bt + 1e-9)
                            j = lev;
                    }
                    if (j >= nplev - 1)
                        break; /* every option of u pairs with this level and all faster ones */
                    k++;
                    h->np = j + 1;
                }
                h->ns = k;
                if (h->ns > 0)
                    f->n_halls++;
            }
        }
    }
    return 0;
}

/*
 * Whether memory and MPS clients can never bind: a GPU full of the smallest
 * share of any variant, each instance with the largest fallback of its task,
 * fits both (then only shares count, in the MILP and in placement).
 */
static bool shares_only(const struct model *m)
{
    const struct loki_topology *topo = m->rq->topo;
    double g = m->rq->topo->gpus.share_granularity;
    double per = g > 0 && g < 1 ? floor(1 / g + 1e-9) : 1;
    if (topo->gpus.mps_max_clients > 0 && per > topo->gpus.mps_max_clients)
        return false;
    for (int p = 0; p < topo->n_pipelines && topo->gpus.mem_mb > 0; p++)
        for (int t = 0; t < topo->pipelines[p].n_tasks; t++) {
            const struct loki_task *task = &topo->pipelines[p].tasks[t];
            double big = 0;
            for (int v = 0; v < task->n_variants; v++)
                big = fmax(big, task->variants[v].mem_mb);
            if (per * 2 * big > topo->gpus.mem_mb)
                return false;
        }
    return true;
}

/*
 * Where only shares count (shares_only()), an option is dominated by one of
 * the same variant at a k-th of its share (k integer) that is no slower and
 * whose k instances are no less throughput: k of those replace each of its
 * instances on the same GPUs. The path formulation keeps them; optima agree.
 */
static void drop_dominated_shares(struct model *m)
{
    if (!shares_only(m))
        return;
    for (int i = 0; i < m->n_nodes; i++) {
        struct node *b = &m->nodes[i];
        for (int j = 0; j < m->n_nodes && b->used; j++) {
            const struct node *a = &m->nodes[j];
            if (j == i || !a->used || a->p != b->p || a->t != b->t || a->v != b->v ||
                a->share >= b->share - 1e-9)
                continue;
            double k = b->share / a->share;
            if (fabs(k - round(k)) > 1e-6)
                continue;
            if (a->lat <= b->lat + 1e-12 && round(k) * a->thr >= b->thr - 1e-9)
                b->used = false;
        }
    }
}

int loki__flow_build(struct model *m)
{
    const struct loki__milp_req *rq = m->rq;
    const struct loki_topology *topo = rq->topo;
    struct flow *f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    m->fl = f;
    for (int p = 0; p < topo->n_pipelines; p++) {
        shape(m, p);
        bounds(m, p);
        f->budget[p] = topo->planner.headroom * topo->pipelines[p].slo_ms;
    }
    /* Options that cannot fit even between the fastest prefix and suffix get no column. */
    for (int i = 0; i < m->n_nodes; i++) {
        struct node *n = &m->nodes[i];
        n->used = n->lat + f->minpre[n->p][n->t] + f->minsuf[n->p][n->t] <= f->budget[n->p] + 1e-9;
    }
    drop_dominated_shares(m);
    variant_ranges(m);
    f->in_first = calloc((size_t)(m->n_nodes + 1), sizeof(int));
    f->in_n = calloc((size_t)(m->n_nodes + 1), sizeof(int));
    f->col_xn = calloc((size_t)(m->n_nodes + 1), sizeof(int));
    f->col_fn = calloc((size_t)(m->n_nodes + 1), sizeof(int));
    if (!f->in_first || !f->in_n || !f->col_xn || !f->col_fn)
        return -ENOMEM;
    /* Inflows, parents first: a child option is reachable from u if u's fastest option fits. */
    for (int p = 0; p < topo->n_pipelines; p++) {
        const struct loki_pipeline *pp = &topo->pipelines[p];
        for (int o = 0; o < f->n_order[p]; o++) {
            int t = f->order[p][o], par = f->parent[p][t];
            double bt = par >= 0 ? edge_budget(m, p, t) : 0;
            for (int i = 0; i < m->tn_count[p][t]; i++) {
                int ni = m->tn_first[p][t] + i;
                struct node *n = &m->nodes[ni];
                if (!n->used)
                    continue;
                f->in_first[ni] = f->n_fins;
                if (par < 0) {
                    if (push_fin(f, ni, -1) < 0)
                        return -ENOMEM;
                } else {
                    for (int u = 0; u < pp->tasks[par].n_variants; u++)
                        if (f->vused[p][par][u] && f->tmin[p][par][u] + n->lat <= bt + 1e-9 &&
                            push_fin(f, ni, u) < 0)
                            return -ENOMEM;
                }
                f->in_n[ni] = f->n_fins - f->in_first[ni];
                n->used = f->in_n[ni] > 0;
            }
            variant_ranges(m); /* a task's reachable options bound its children's inflows */
        }
        prefix_ranges(m, p);
    }
    return plan_halls(m);
}

void loki__flow_free(struct model *m)
{
    struct flow *f = m->fl;
    if (!f)
        return;
    free(f->fins);
    free(f->in_first);
    free(f->in_n);
    free(f->col_xn);
    free(f->col_fn);
    free(f->sorted);
    free(f->halls);
    free(f->cap_row);
    free(f);
    m->fl = NULL;
}

/* ---- the LP ---- */

static bool has_children(const struct model *m, int p, int t)
{
    return m->rq->topo->pipelines[p].tasks[t].n_children > 0;
}

/* Accuracy of the leaf inflow @fi (depth <= 2: a whole path; deeper: a_w, times G). */
static double leaf_acc(const struct model *m, const struct fin *fi)
{
    const struct node *n = &m->nodes[fi->node];
    const struct loki_pipeline *pp = &m->rq->topo->pipelines[n->p];
    int d = m->fl->depth[n->p][n->t];
    if (d >= 3)
        return acc_of(m, n->p, n->t, n->v);
    int chain[2], var[NT];
    chain[0] = pp->root;
    chain[1] = n->t;
    var[n->t] = n->v;
    if (d == 2)
        var[pp->root] = fi->u;
    return d == 1 ? loki__path_accuracy(pp, &chain[1], 1, var)
                  : loki__path_accuracy(pp, chain, 2, var);
}

/* Weight of chain (leaf task @t of pipeline @p) per root query. */
static double chain_weight(const struct model *m, int p, int t)
{
    for (int k = 0; k < m->n_chains; k++)
        if (m->chains[k].p == p && m->chains[k].task[m->chains[k].len - 1] == t)
            return m->chains[k].weight;
    return 0;
}

void loki__flow_columns(struct model *m, glp_prob *lp)
{
    const struct loki__milp_req *rq = m->rq;
    const struct loki_topology *topo = rq->topo;
    struct flow *f = m->fl;
    glp_set_obj_dir(lp, rq->mode == LOKI__MILP_HARDWARE ? GLP_MIN : GLP_MAX);
    double dsum = 0;
    for (int p = 0; p < topo->n_pipelines; p++)
        dsum += rq->demand[p];
    for (int p = 0; p < topo->n_pipelines; p++)
        m->wp[p] = dsum > 0 ? rq->demand[p] / dsum : 1.0 / topo->n_pipelines;
    double eps_gpu = 1e-4 / fmax(rq->budget, 1);
    m->gran = topo->gpus.share_granularity > 0 && topo->gpus.share_granularity < 1
                  ? topo->gpus.share_granularity
                  : 1;
    f->acc_mult = rq->mode == LOKI__MILP_ACCURACY ? 1
                  : rq->mode == LOKI__MILP_SERVED ? 1e-3
                  : rq->acc_floor > 0             ? -0.5 * m->gran /* < one granule */
                                                  : 0;

    int nc = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        struct node *n = &m->nodes[i];
        if (!n->used)
            continue;
        n->col_y = ++nc;
        n->col_z = ++nc;
    }
    for (int p = 0; p < topo->n_pipelines; p++)
        m->col_sigma[p] = ++nc;
    memset(f->col_f, 0, sizeof(f->col_f));
    memset(f->col_g, 0, sizeof(f->col_g));
    for (int i = 0; i < f->n_fins; i++) {
        struct fin *fi = &f->fins[i];
        const struct node *n = &m->nodes[fi->node];
        fi->cx = ++nc;
        if (f->depth[n->p][n->t] >= 3 && !f->col_f[n->p][n->t][fi->u][n->v]) {
            f->col_f[n->p][n->t][fi->u][n->v] = ++nc;
            f->col_g[n->p][n->t][fi->u][n->v] = ++nc;
        }
    }
    for (int i = 0; i < m->n_nodes; i++) {
        const struct node *n = &m->nodes[i];
        f->col_xn[i] = 0;
        if (!n->used)
            continue;
        if (f->parent[n->p][n->t] < 0)
            f->col_xn[i] = f->fins[f->in_first[i]].cx;
        else if (has_children(m, n->p, n->t))
            f->col_xn[i] = ++nc;
        f->col_fn[i] = f->depth[n->p][n->t] >= 3 ? ++nc : 0;
    }
    memset(f->col_e, 0, sizeof(f->col_e));
    memset(f->col_E, 0, sizeof(f->col_E));
    int first_e = nc + 1;
    for (int i = 0; i < f->n_fins; i++) {
        const struct fin *fi = &f->fins[i];
        const struct node *n = &m->nodes[fi->node];
        if (!f->deep[n->p])
            continue;
        if (fi->u >= 0 && !f->col_e[n->p][n->t][fi->u][n->v])
            f->col_e[n->p][n->t][fi->u][n->v] = ++nc;
    }
    int last_e = nc;
    for (int p = 0; p < topo->n_pipelines; p++)
        for (int t = 0; t < topo->pipelines[p].n_tasks && f->deep[p]; t++)
            for (int v = 0; v < topo->pipelines[p].tasks[t].n_variants; v++)
                if (f->vused[p][t][v])
                    f->col_E[p][t][v] = ++nc;
    for (int h = 0; h < f->n_halls; h++) {
        f->halls[h].col_s = nc + 1;
        nc += f->halls[h].ns;
        f->halls[h].col_p = nc + 1;
        nc += f->halls[h].np;
    }
    memset(m->col_task, 0, sizeof(m->col_task));
    memset(m->col_var, 0, sizeof(m->col_var));
    m->n_agg_task = m->n_agg_var = 0;
    for (int i = 0; i < m->n_nodes && !plain(rq); i++) {
        const struct node *n = &m->nodes[i];
        if (!n->used)
            continue;
        if (!m->col_task[n->p][n->t])
            m->agg_task[m->n_agg_task++] = m->col_task[n->p][n->t] = ++nc;
        if (!m->col_var[n->p][n->t][n->v])
            m->agg_var[m->n_agg_var++] = m->col_var[n->p][n->t][n->v] = ++nc;
    }
    m->n_cols = nc;
    glp_add_cols(lp, nc);

    /* Everything continuous and >= 0 unless set below. */
    for (int j = 1; j <= nc; j++)
        glp_set_col_bnds(lp, j, GLP_LO, 0, 0);
    double gmax = floor(rq->budget / m->gran + 1e-9);
    for (int i = 0; i < m->n_agg_task + m->n_agg_var; i++) {
        int c = i < m->n_agg_task ? m->agg_task[i] : m->agg_var[i - m->n_agg_task];
        glp_set_col_kind(lp, c, GLP_IV);
        glp_set_col_bnds(lp, c, GLP_DB, 0, gmax);
    }
    for (int i = 0; i < m->n_nodes; i++) {
        const struct node *n = &m->nodes[i];
        if (!n->used)
            continue;
        glp_set_col_kind(lp, n->col_y, GLP_BV);
        glp_set_col_kind(lp, n->col_z, GLP_IV);
        node_bounds(m, lp, n);
        glp_set_obj_coef(lp, n->col_z,
                         rq->mode == LOKI__MILP_HARDWARE ? n->share : -eps_gpu * n->share);
    }
    for (int p = 0; p < topo->n_pipelines; p++) {
        if (rq->mode == LOKI__MILP_SERVED) {
            glp_set_col_bnds(lp, m->col_sigma[p], GLP_DB, 0, 1);
            glp_set_obj_coef(lp, m->col_sigma[p], m->wp[p]);
        } else {
            glp_set_col_bnds(lp, m->col_sigma[p], GLP_FX, 1, 1);
        }
    }
    for (int i = 0; i < f->n_fins; i++) {
        const struct fin *fi = &f->fins[i];
        const struct node *n = &m->nodes[fi->node];
        glp_set_col_bnds(lp, fi->cx, GLP_DB, 0, 1);
        int cg = fi->u >= 0 ? f->col_g[n->p][n->t][fi->u][n->v] : 0;
        if (cg)
            glp_set_col_bnds(lp, cg, GLP_DB, 0, 1);
        if (has_children(m, n->p, n->t) || f->acc_mult == 0)
            continue;
        double a = f->acc_mult * m->wp[n->p] * chain_weight(m, n->p, n->t) * leaf_acc(m, fi);
        /* deep: a_w on the pair's accuracy mass, once per pair */
        if (cg)
            glp_set_obj_coef(lp, cg, a);
        else
            glp_set_obj_coef(lp, fi->cx, a);
    }
    for (int i = 0; i < m->n_nodes; i++)
        if (f->col_xn[i] && f->parent[m->nodes[i].p][m->nodes[i].t] >= 0)
            glp_set_col_bnds(lp, f->col_xn[i], GLP_DB, 0, 1);
    for (int c = first_e; c <= last_e; c++)
        glp_set_col_kind(lp, c, GLP_BV);
    for (int p = 0; p < topo->n_pipelines; p++)
        for (int t = 0; t < topo->pipelines[p].n_tasks && f->deep[p]; t++)
            for (int v = 0; v < topo->pipelines[p].tasks[t].n_variants; v++)
                if (f->col_E[p][t][v])
                    glp_set_col_bnds(lp, f->col_E[p][t][v], GLP_DB, 0,
                                     f->budget[p] - f->minsuf[p][t] + 1e-9);
}

/*
 * One row at a time, duplicates merged (GLPK refuses a column twice in a
 * row): add terms with rb_add(), then rb_row().
 */
struct rb {
    int n;
    int *col;
    double *dense;
};

static void rb_add(struct rb *r, int col, double v)
{
    if (!col || v == 0)
        return;
    if (r->dense[col] == 0) /* not listed yet: a listed term is never exactly 0 */
        r->col[r->n++] = col;
    r->dense[col] += v;
    if (r->dense[col] == 0)
        r->dense[col] = 1e-300; /* cancelled out: stays listed, written as nothing */
}

static int rb_row(struct model *m, glp_prob *lp, struct rb *r, int type, double lo, double up)
{
    int row = glp_add_rows(lp, 1);
    glp_set_row_bnds(lp, row, type, lo, up);
    int rc = 0;
    for (int i = 0; i < r->n; i++) {
        int c = r->col[i];
        double v = r->dense[c];
        r->dense[c] = 0;
        if (rc == 0 && fabs(v) > 1e-200)
            rc = loki__milp_nz(m, row, c, v);
    }
    r->n = 0;
    return rc < 0 ? rc : row;
}

/* x_n, the fraction of root queries through node @n. */
static void add_x(const struct model *m, struct rb *r, int n, double c)
{
    const struct flow *f = m->fl;
    if (f->col_xn[n]) {
        rb_add(r, f->col_xn[n], c);
        return;
    }
    for (int k = 0; k < f->in_n[n]; k++)
        rb_add(r, f->fins[f->in_first[n] + k].cx, c);
}

/* beta x the load on node @n, qps. */
static void add_load(const struct model *m, struct rb *r, int n, double c)
{
    const struct flow *f = m->fl;
    const struct node *nd = &m->nodes[n];
    double bd = beta_of(m) * m->rq->demand[nd->p];
    int d = f->depth[nd->p][nd->t];
    if (d >= 3) {
        rb_add(r, f->col_fn[n], c);
        return;
    }
    for (int k = 0; k < f->in_n[n]; k++) {
        const struct fin *fi = &f->fins[f->in_first[n] + k];
        rb_add(r, fi->cx, d == 1 ? c * bd : c * bd * fan_in(m, nd->p, nd->t, fi->u));
    }
}

/* beta x the load on variant @v of task @t, qps: exact at every depth. */
static void add_vload(const struct model *m, struct rb *r, int p, int t, int v, double c)
{
    const struct flow *f = m->fl;
    if (f->depth[p][t] <= 2) {
        for (int i = 0; i < f->vn[p][t][v]; i++)
            if (m->nodes[f->vfirst[p][t][v] + i].used)
                add_load(m, r, f->vfirst[p][t][v] + i, c);
        return;
    }
    for (int u = 0; u < NV; u++)
        rb_add(r, f->col_f[p][t][u][v], c);
}

/* Accuracy mass entering variant @v of task @t: its prefixes' product, per root query. */
static void add_vgin(const struct model *m, struct rb *r, int p, int t, int v, double c)
{
    const struct flow *f = m->fl;
    int d = f->depth[p][t], par = f->parent[p][t];
    if (d >= 3) {
        for (int u = 0; u < NV; u++)
            rb_add(r, f->col_g[p][t][u][v], c);
        return;
    }
    for (int i = 0; i < f->vn[p][t][v]; i++) {
        int n = f->vfirst[p][t][v] + i;
        if (!m->nodes[n].used)
            continue;
        for (int k = 0; k < f->in_n[n]; k++) {
            const struct fin *fi = &f->fins[f->in_first[n] + k];
            rb_add(r, fi->cx, d == 1 ? c : c * acc_of(m, p, par, fi->u));
        }
    }
}

/* X[u -> v's nodes] into @r, times @c: the fraction on the edge u -> v of task @t. */
static void add_pair_x(const struct model *m, struct rb *r, int p, int t, int u, int v, double c)
{
    const struct flow *f = m->fl;
    for (int i = 0; i < f->vn[p][t][v]; i++) {
        int n = f->vfirst[p][t][v] + i;
        if (!m->nodes[n].used)
            continue;
        for (int k = 0; k < f->in_n[n]; k++)
            if (f->fins[f->in_first[n] + k].u == u)
                rb_add(r, f->fins[f->in_first[n] + k].cx, c);
    }
}

int loki__flow_rows(struct model *m, glp_prob *lp)
{
    const struct loki__milp_req *rq = m->rq;
    const struct loki_topology *topo = rq->topo;
    struct flow *f = m->fl;
    int rc;
    struct rb r = {0};
    r.col = malloc(sizeof(int) * (size_t)(m->n_cols + 1));
    r.dense = calloc((size_t)(m->n_cols + 1), sizeof(double));
    /* capacity rows: one per node, whichever row numbers they get */
    int *caprow = calloc((size_t)(m->n_nodes + 1), sizeof(int));
    double(*g_acc)[NV][NV] = calloc(NT, sizeof(*g_acc));
    if (!r.col || !r.dense || !caprow || !g_acc) {
        rc = -ENOMEM;
        goto out;
    }
#define ROW(type, lo, up)                                                                          \
    do {                                                                                           \
        if ((rc = rb_row(m, lp, &r, (type), (lo), (up))) < 0)                                      \
            goto out;                                                                              \
    } while (0)
    if ((rc = loki__milp_option_rows(m, lp)) < 0)
        goto out;
    for (int i = 0; i < m->n_nodes; i++) {
        const struct node *n = &m->nodes[i];
        if (!n->used)
            continue;
        /* explicit throughflow columns: x_n = sum of its inflows */
        if (f->col_xn[i] && f->parent[n->p][n->t] >= 0) {
            rb_add(&r, f->col_xn[i], 1);
            for (int k = 0; k < f->in_n[i]; k++)
                rb_add(&r, f->fins[f->in_first[i] + k].cx, -1);
            ROW(GLP_FX, 0, 0);
        }
        /* only the chosen option carries traffic */
        add_x(m, &r, i, 1);
        rb_add(&r, n->col_y, -1);
        ROW(GLP_UP, 0, 0);
    }
    /* the served fraction enters at the root */
    for (int p = 0; p < topo->n_pipelines; p++) {
        int root = topo->pipelines[p].root;
        for (int i = 0; i < m->tn_count[p][root]; i++)
            if (m->nodes[m->tn_first[p][root] + i].used)
                add_x(m, &r, m->tn_first[p][root] + i, 1);
        rb_add(&r, m->col_sigma[p], -1);
        ROW(GLP_FX, 0, 0);
    }
    /* conservation: fractions, and below the root's children loads and accuracy mass */
    for (int p = 0; p < topo->n_pipelines; p++) {
        const struct loki_pipeline *pp = &topo->pipelines[p];
        for (int t = 0; t < pp->n_tasks; t++) {
            const struct loki_task *task = &pp->tasks[t];
            for (int c = 0; c < task->n_children; c++) {
                int ch = task->children[c];
                for (int v = 0; v < task->n_variants; v++) {
                    if (!f->vused[p][t][v])
                        continue;
                    for (int i = 0; i < m->tn_count[p][ch]; i++) {
                        int ni = m->tn_first[p][ch] + i;
                        for (int k = 0; k < f->in_n[ni]; k++)
                            if (f->fins[f->in_first[ni] + k].u == v)
                                rb_add(&r, f->fins[f->in_first[ni] + k].cx, 1);
                    }
                    for (int i = 0; i < f->vn[p][t][v]; i++)
                        if (m->nodes[f->vfirst[p][t][v] + i].used)
                            add_x(m, &r, f->vfirst[p][t][v] + i, -1);
                    ROW(GLP_FX, 0, 0);
                    if (f->depth[p][ch] < 3)
                        continue;
                    for (int w = 0; w < pp->tasks[ch].n_variants; w++)
                        rb_add(&r, f->col_f[p][ch][v][w], 1);
                    add_vload(m, &r, p, t, v, -m->fan[p][t][v][c]);
                    ROW(GLP_FX, 0, 0);
                    for (int w = 0; w < pp->tasks[ch].n_variants; w++)
                        rb_add(&r, f->col_g[p][ch][v][w], 1);
                    add_vgin(m, &r, p, t, v, -acc_of(m, p, t, v));
                    ROW(GLP_FX, 0, 0);
                }
            }
        }
    }
    /*
     * Deep edges u -> v of t: per root query on the edge, the load and the
     * accuracy mass are those of the mix of prefixes that reached u, so
     * (F / (beta D m(u, t) X), G / (a_u X)) lies in the hull of the prefix
     * products into u's task: one row per hull edge (a segment: the line and its
     * ends; a point: both equal).
     */
    for (int p = 0; p < topo->n_pipelines; p++)
        for (int t = 0; t < topo->pipelines[p].n_tasks; t++) {
            int par = f->parent[p][t];
            if (f->depth[p][t] < 3)
                continue;
            int nh = f->n_hull[p][par];
            const double(*h)[2] = f->hull[p][par];
            for (int u = 0; u < NV; u++)
                for (int v = 0; v < NV; v++) {
                    int cf = f->col_f[p][t][u][v], cg = f->col_g[p][t][u][v];
                    if (!cf)
                        continue;
                    double sf = beta_of(m) * rq->demand[p] * fan_in(m, p, t, u);
                    double sg = acc_of(m, p, par, u);
                    /* a x F + b x G - c x X <= 0 for a hull edge's outward normal */
                    for (int k = 0; k < (nh == 1 ? 4 : nh == 2 ? 4 : nh); k++) {
                        double nx, ny, c;
                        int type = GLP_UP;
                        if (nh == 1) { /* F = sf M X, G = sg A X: as two pairs of <= */
                            nx = k == 0 ? 1 : k == 1 ? -1 : 0;
                            ny = k == 2 ? 1 : k == 3 ? -1 : 0;
                            c = nx * h[0][0] + ny * h[0][1];
                        } else if (nh == 2) { /* the segment's line (both ways), its two ends */
                            double dx = h[1][0] - h[0][0], dy = h[1][1] - h[0][1];
                            if (k < 2) {
                                nx = k == 0 ? -dy : dy;
                                ny = k == 0 ? dx : -dx;
                                c = nx * h[0][0] + ny * h[0][1];
                            } else {
                                const double *e = h[k - 2], *o = h[3 - k];
                                nx = e[0] - o[0];
                                ny = e[1] - o[1];
                                c = nx * e[0] + ny * e[1];
                            }
                        } else {
                            const double *a = h[k], *b = h[(k + 1) % nh];
                            nx = b[1] - a[1];
                            ny = a[0] - b[0];
                            c = nx * a[0] + ny * a[1];
                        }
                        /* normalise: q = (F / (sf X), G / (sg X)); n . q <= c, times sf sg X */
                        double cfx = nx * sg, cgx = ny * sf, cxx = -c * sf * sg;
                        double sc = fmax(fmax(fabs(cfx), fabs(cgx)), fabs(cxx));
                        if (!(sc > 1e-12))
                            continue;
                        rb_add(&r, cf, cfx / sc);
                        rb_add(&r, cg, cgx / sc);
                        add_pair_x(m, &r, p, t, u, v, cxx / sc);
                        ROW(type, 0, 0);
                    }
                }
        }
    /* Hall's rows: cumulative inflows by child latency, cumulative u options by their own */
    for (int h = 0; h < f->n_halls; h++) {
        const struct hall *hl = &f->halls[h];
        double bt = edge_budget(m, hl->p, hl->t);
        int k = -1, lev = -1;
        double lam = 0;
        for (int i = 0; i <= hl->ni; i++) {
            double li = i < hl->ni ? m->nodes[f->fins[f->sorted[hl->ifirst + i]].node].lat : -1;
            if (k >= 0 && (i == hl->ni || li != lam)) {
                /* close S_k, then its Hall row against the P level that pairs with lam */
                if (k > 0)
                    rb_add(&r, hl->col_s + k - 1, 1);
                rb_add(&r, hl->col_s + k, -1);
                ROW(GLP_FX, 0, 0);
                int j = -1, jl = -1;
                for (int z = 0; z < hl->npn; z++) {
                    double mu = m->nodes[f->sorted[hl->pfirst + z]].lat;
                    if (z == 0 || mu > m->nodes[f->sorted[hl->pfirst + z - 1]].lat)
                        jl++;
                    if (mu + lam <= bt + 1e-9)
                        j = jl;
                }
                rb_add(&r, hl->col_s + k, 1);
                rb_add(&r, hl->col_p + j, -1);
                ROW(GLP_UP, 0, 0);
                if (k + 1 == hl->ns)
                    break;
            }
            if (i == hl->ni)
                break;
            if (k < 0 || li != lam) {
                k++;
                lam = li;
            }
            rb_add(&r, f->fins[f->sorted[hl->ifirst + i]].cx, 1);
        }
        /* P_j = P_{j-1} + the u options at latency level j */
        for (int i = 0; i <= hl->npn; i++) {
            double mu = i < hl->npn ? m->nodes[f->sorted[hl->pfirst + i]].lat : -1;
            bool next = i == hl->npn || i == 0 || mu > m->nodes[f->sorted[hl->pfirst + i - 1]].lat;
            if (next && lev >= 0) {
                if (lev > 0)
                    rb_add(&r, hl->col_p + lev - 1, 1);
                rb_add(&r, hl->col_p + lev, -1);
                ROW(GLP_FX, 0, 0);
                if (lev + 1 == hl->np)
                    break;
            }
            if (i == hl->npn)
                break;
            if (next)
                lev++;
            add_x(m, &r, f->sorted[hl->pfirst + i], 1);
        }
    }
    /*
     * Deeper, a variant's load goes to the option its fraction takes, within the range of
     * its prefixes' fan-out products: at integer points all of it to the one option.
     */
    for (int p = 0; p < topo->n_pipelines; p++)
        for (int t = 0; t < topo->pipelines[p].n_tasks; t++)
            for (int v = 0; v < topo->pipelines[p].tasks[t].n_variants; v++) {
                if (f->depth[p][t] < 3 || !f->vused[p][t][v])
                    continue;
                double bd = beta_of(m) * rq->demand[p];
                for (int i = 0; i < f->vn[p][t][v]; i++) {
                    int ni = f->vfirst[p][t][v] + i;
                    if (!m->nodes[ni].used)
                        continue;
                    rb_add(&r, f->col_fn[ni], 1);
                }
                for (int u = 0; u < NV; u++)
                    rb_add(&r, f->col_f[p][t][u][v], -1);
                ROW(GLP_FX, 0, 0);
                for (int i = 0; i < f->vn[p][t][v]; i++) {
                    int ni = f->vfirst[p][t][v] + i;
                    if (!m->nodes[ni].used)
                        continue;
                    rb_add(&r, f->col_fn[ni], 1);
                    add_x(m, &r, ni, -bd * f->mmax[p][t]);
                    ROW(GLP_UP, 0, 0);
                    rb_add(&r, f->col_fn[ni], 1);
                    add_x(m, &r, ni, -bd * f->mmin[p][t]);
                    ROW(GLP_LO, 0, 0);
                }
            }
    /* capacity per option node: beta x load <= theta z */
    for (int i = 0; i < m->n_nodes; i++) {
        const struct node *n = &m->nodes[i];
        if (!n->used)
            continue;
        add_load(m, &r, i, 1);
        rb_add(&r, n->col_z, -n->thr);
        ROW(GLP_UP, 0, 0);
        caprow[i] = rc;
    }
    /* accuracy floor per pipeline, a hair above (see milp.c) */
    if (rq->acc_floor > 0) {
        double lb = fmin(rq->acc_floor + 1e-6, 1 - 1e-9);
        for (int p = 0; p < topo->n_pipelines; p++) {
            for (int i = 0; i < f->n_fins; i++) {
                const struct fin *fi = &f->fins[i];
                const struct node *n = &m->nodes[fi->node];
                if (n->p != p || has_children(m, p, n->t))
                    continue;
                double a = chain_weight(m, p, n->t) * leaf_acc(m, fi);
                if (f->depth[p][n->t] >= 3)
                    g_acc[n->t][fi->u][n->v] = a; /* once per pair, below */
                else
                    rb_add(&r, fi->cx, a);
            }
            for (int t = 0; t < NT; t++)
                for (int u = 0; u < NV; u++)
                    for (int v = 0; v < NV; v++)
                        if (g_acc[t][u][v] != 0) {
                            rb_add(&r, f->col_g[p][t][u][v], g_acc[t][u][v]);
                            g_acc[t][u][v] = 0;
                        }
            rb_add(&r, m->col_sigma[p], -lb);
            ROW(GLP_LO, 0, 0);
        }
    }
    /* deep pipelines: the support's longest path within the budget */
    for (int p = 0; p < topo->n_pipelines; p++) {
        if (!f->deep[p])
            continue;
        const struct loki_pipeline *pp = &topo->pipelines[p];
        for (int t = 0; t < pp->n_tasks; t++) {
            int par = f->parent[p][t];
            for (int v = 0; v < pp->tasks[t].n_variants; v++) {
                if (!f->vused[p][t][v])
                    continue;
                if (par < 0) {
                    rb_add(&r, f->col_E[p][t][v], 1);
                    for (int i = 0; i < f->vn[p][t][v]; i++) {
                        const struct node *n = &m->nodes[f->vfirst[p][t][v] + i];
                        if (n->used)
                            rb_add(&r, n->col_y, -n->lat);
                    }
                    ROW(GLP_LO, 0, 0);
                    continue;
                }
                for (int u = 0; u < pp->tasks[par].n_variants; u++) {
                    int e = f->col_e[p][t][u][v];
                    if (!e)
                        continue;
                    /* support: X[u -> v's nodes] <= e */
                    for (int i = 0; i < f->vn[p][t][v]; i++) {
                        int ni = f->vfirst[p][t][v] + i;
                        for (int k = 0; k < f->in_n[ni]; k++)
                            if (f->fins[f->in_first[ni] + k].u == u)
                                rb_add(&r, f->fins[f->in_first[ni] + k].cx, 1);
                    }
                    rb_add(&r, e, -1);
                    ROW(GLP_UP, 0, 0);
                    /* E_v >= E_u + T_v - M (1 - e) */
                    double big = f->budget[p] - f->minsuf[p][par] + f->tmax[p][t][v];
                    rb_add(&r, f->col_E[p][t][v], 1);
                    rb_add(&r, f->col_E[p][par][u], -1);
                    for (int i = 0; i < f->vn[p][t][v]; i++) {
                        const struct node *n = &m->nodes[f->vfirst[p][t][v] + i];
                        if (n->used)
                            rb_add(&r, n->col_y, -n->lat);
                    }
                    rb_add(&r, e, -big);
                    ROW(GLP_LO, -big, 0);
                }
            }
        }
    }
#undef ROW
    if ((rc = loki__milp_gpu_rows(m, lp)) < 0)
        goto out;
    m->n_rows = glp_get_num_rows(lp);
    f->cap_row = calloc((size_t)(m->n_rows + 1), 1);
    if (!f->cap_row) {
        rc = -ENOMEM;
        goto out;
    }
    for (int i = 0; i < m->n_nodes; i++)
        if (caprow[i] > 0)
            f->cap_row[caprow[i]] = 1;

    glp_load_matrix(lp, m->nz, m->ia, m->ja, m->ar);
    rc = 0;
out:
    free(r.col);
    free(r.dense);
    free(caprow);
    free(g_acc);
    return rc;
}

/* ---- solution vectors ---- */

/* The inflow into node @n from @u (-1: the source), or -1. */
static int find_fin(const struct flow *f, int n, int u)
{
    for (int k = 0; k < f->in_n[n]; k++)
        if (f->fins[f->in_first[n] + k].u == u)
            return f->in_first[n] + k;
    return -1;
}

/* Value of x_n in solution vector @x. */
static double x_val(const struct model *m, const double *x, int n)
{
    const struct flow *f = m->fl;
    if (f->col_xn[n])
        return x[f->col_xn[n]];
    double v = 0;
    for (int k = 0; k < f->in_n[n]; k++)
        v += x[f->fins[f->in_first[n] + k].cx];
    return v;
}

/* Hall's cumulative columns of @x from its flows. */
static void fill_halls(const struct model *m, double *x)
{
    const struct flow *f = m->fl;
    for (int h = 0; h < f->n_halls; h++) {
        const struct hall *hl = &f->halls[h];
        int k = -1;
        double acc = 0;
        for (int i = 0; i < hl->ni; i++) {
            const struct fin *fi = &f->fins[f->sorted[hl->ifirst + i]];
            double li = m->nodes[fi->node].lat;
            if (i == 0 || li != m->nodes[f->fins[f->sorted[hl->ifirst + i - 1]].node].lat)
                k++;
            if (k >= hl->ns)
                break;
            acc += x[fi->cx];
            x[hl->col_s + k] = acc;
        }
        int j = -1;
        acc = 0;
        for (int i = 0; i < hl->npn; i++) {
            int n = f->sorted[hl->pfirst + i];
            if (i == 0 || m->nodes[n].lat > m->nodes[f->sorted[hl->pfirst + i - 1]].lat)
                j++;
            if (j >= hl->np)
                break;
            acc += x_val(m, x, n);
            x[hl->col_p + j] = acc;
        }
    }
}

/*
 * Route root queries by @s (s[p][t][u][v]: the share of variant u's
 * sub-queries that go to variant v of t; at the root u = 0) over the chosen
 * nodes @ch (per variant; -1: none) into @x, whose chosen y and z the caller
 * set: flows, throughflows, Hall's columns, edge binaries and potentials,
 * sigma = 1, instances raised to carry the loads. False when the routing
 * takes a pair without a column, leaves a variant's sub-queries unrouted,
 * breaks the latency budget, or the instances overflow the GPU budget,
 * memory or MPS clients.
 */
static bool route(struct model *m, const int (*ch)[NT][NV], double (*s)[NT][NV][NV], double *x)
{
    const struct loki__milp_req *rq = m->rq;
    const struct loki_topology *topo = rq->topo;
    struct flow *f = m->fl;
    double beta = beta_of(m);
    double gpus = 0, mem = 0, cl = 0;
    for (int p = 0; p < topo->n_pipelines; p++) {
        const struct loki_pipeline *pp = &topo->pipelines[p];
        double q[NT][NV] = {{0}}, L[NT][NV] = {{0}}, A[NT][NV] = {{0}}, E[NT][NV] = {{0}};
        x[m->col_sigma[p]] = 1;
        for (int o = 0; o < f->n_order[p]; o++) {
            int t = f->order[p][o], par = f->parent[p][t];
            const struct loki_task *task = &pp->tasks[t];
            /* every variant that receives traffic from the parent routes all of it */
            for (int u = 0; u < (par < 0 ? 1 : pp->tasks[par].n_variants); u++) {
                if (par >= 0 && !(q[par][u] > 0))
                    continue;
                double sum = 0;
                for (int v = 0; v < task->n_variants; v++)
                    sum += ch[p][t][v] >= 0 ? s[p][t][u][v] : 0;
                if (fabs(sum - 1) > 1e-6)
                    return false;
            }
            for (int v = 0; v < task->n_variants; v++) {
                int n = ch[p][t][v];
                if (n < 0)
                    continue;
                double lat = m->nodes[n].lat, pre = 0;
                for (int u = 0; u < (par < 0 ? 1 : pp->tasks[par].n_variants); u++) {
                    double fr = s[p][t][u][v];
                    if (!(fr > 0) || (par >= 0 && !(q[par][u] > 0)))
                        continue;
                    int k = find_fin(f, n, par < 0 ? -1 : u);
                    if (k < 0)
                        return false;
                    const struct fin *fi = &f->fins[k];
                    double X, lf, af;
                    if (par < 0) {
                        X = fr;
                        lf = beta * rq->demand[p] * fr;
                        af = fr;
                    } else {
                        X = q[par][u] * fr;
                        lf = L[par][u] * fan_in(m, p, t, u) * fr;
                        af = A[par][u] * acc_of(m, p, par, u) * fr;
                        pre = fmax(pre, E[par][u]);
                        if (f->col_e[p][t][u][v])
                            x[f->col_e[p][t][u][v]] = 1;
                    }
                    x[fi->cx] += X;
                    if (par >= 0 && f->col_f[p][t][u][v]) {
                        x[f->col_f[p][t][u][v]] += lf;
                        x[f->col_g[p][t][u][v]] += af;
                    }
                    q[t][v] += X;
                    L[t][v] += lf;
                    A[t][v] += af;
                }
                if (!(q[t][v] > 0))
                    continue;
                E[t][v] = pre + lat;
                if (E[t][v] > f->budget[p] - f->minsuf[p][t] + 1e-9)
                    return false;
                if (f->col_E[p][t][v])
                    x[f->col_E[p][t][v]] = E[t][v];
                if (f->col_xn[n] && par >= 0)
                    x[f->col_xn[n]] = q[t][v];
                if (f->col_fn[n])
                    x[f->col_fn[n]] = L[t][v];
            }
        }
        for (int t = 0; t < pp->n_tasks; t++)
            for (int v = 0; v < pp->tasks[t].n_variants; v++) {
                int n = ch[p][t][v];
                if (n < 0)
                    continue;
                const struct node *nd = &m->nodes[n];
                /* a plan's float split may read a full variant as a hair over its capacity */
                double want = L[t][v] / nd->thr;
                double need = fmax(1, ceil(want - 1e-6 * fmax(1, want)));
                if (x[nd->col_z] < need)
                    x[nd->col_z] = need;
                x[nd->col_y] = 1;
                gpus += nd->share * x[nd->col_z];
                mem += nd->mem * x[nd->col_z];
                cl += x[nd->col_z];
            }
    }
    fill_halls(m, x);
    double g = ceil(rq->budget - 1e-9);
    return gpus <= rq->budget + 1e-9 &&
           (topo->gpus.mem_mb <= 0 || mem <= g * topo->gpus.mem_mb + 1e-6) &&
           (topo->gpus.mps_max_clients <= 0 || cl <= g * topo->gpus.mps_max_clients);
}

/* Whether @x satisfies every row of @m; capacity rows with the float split's tolerance. */
static bool rows_ok(const struct model *m, glp_prob *lp, const double *x)
{
    double *act = calloc((size_t)(2 * (m->n_rows + 1)), sizeof(double));
    if (!act)
        return false;
    double *mag = act + m->n_rows + 1;
    for (int k = 1; k <= m->nz; k++) {
        act[m->ia[k]] += m->ar[k] * x[m->ja[k]];
        mag[m->ia[k]] += fabs(m->ar[k] * x[m->ja[k]]);
    }
    bool ok = true;
    for (int i = 1; i <= m->n_rows && ok; i++) {
        int type = glp_get_row_type(lp, i);
        double tol = (m->fl->cap_row[i] ? 2e-6 : 1e-7) * fmax(1, mag[i]);
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

bool loki__flow_warm(struct model *m, glp_prob *lp, double *x)
{
    const struct loki__milp_req *rq = m->rq;
    const struct loki_plan *w = rq->warm;
    const struct loki_topology *topo = rq->topo;
    if (!w)
        return false;
    memset(x, 0, sizeof(double) * (size_t)(m->n_cols + 1));
    int(*ch)[NT][NV] = malloc(sizeof(int) * NP * NT * NV);
    double(*s)[NT][NV][NV] = calloc(NP, sizeof(*s));
    bool ok = ch && s;
    for (int p = 0; p < topo->n_pipelines && ok; p++) {
        const struct loki_pipeline *pp = &topo->pipelines[p];
        for (int t = 0; t < pp->n_tasks && ok; t++) {
            int par = m->fl->parent[p][t];
            for (int v = 0; v < pp->tasks[t].n_variants && ok; v++) {
                const struct loki_plan_variant *pv = &w->var[p][t][v];
                ch[p][t][v] = -1;
                if (pv->instances <= 0)
                    continue;
                for (int i = 0; i < m->fl->vn[p][t][v]; i++) {
                    const struct node *n = &m->nodes[m->fl->vfirst[p][t][v] + i];
                    if (n->used && n->batch == pv->batch && fabs(n->share - pv->share) < 1e-9)
                        ch[p][t][v] = m->fl->vfirst[p][t][v] + i;
                }
                if (ch[p][t][v] < 0)
                    ok = false; /* its option has no column here */
                else
                    x[m->nodes[ch[p][t][v]].col_z] = pv->instances;
            }
            /* the plan's split over the variants it runs, normalised in double */
            for (int u = 0; u < (par < 0 ? 1 : pp->tasks[par].n_variants) && ok; u++) {
                double sum = 0;
                for (int v = 0; v < pp->tasks[t].n_variants; v++)
                    if (ch[p][t][v] >= 0)
                        sum += w->split[p][t][u][v];
                for (int v = 0; v < pp->tasks[t].n_variants; v++) {
                    double fr = ch[p][t][v] >= 0 ? w->split[p][t][u][v] : 0;
                    if (fr < 1e-7)
                        fr = 0; /* a float's dust is no route */
                    s[p][t][u][v] = sum > 1 - 1e-4 ? fr / sum : fr;
                }
                /* dust removed: renormalise what is left */
                double s2 = 0;
                for (int v = 0; v < pp->tasks[t].n_variants; v++)
                    s2 += s[p][t][u][v];
                if (sum > 1 - 1e-4 && s2 > 0)
                    for (int v = 0; v < pp->tasks[t].n_variants; v++)
                        s[p][t][u][v] /= s2;
            }
        }
    }
    ok = ok && route(m, (const int(*)[NT][NV])ch, s, x);
    free(ch);
    free(s);
    if (!ok)
        return false;
    loki__milp_fill_aggregates(m, x);
    return rows_ok(m, lp, x);
}

/* ---- greedy incumbent ---- */

/*
 * One option node per task (@as), every root query on the one path it
 * induces: objective (the LP's coefficients), GPUs, whether it fits the
 * budget, memory and clients, and how far its chains overrun the latency
 * budget in all.
 */
static void g_eval(const struct model *m, glp_prob *lp, const int (*as)[NT], double *obj,
                   double *gpus, bool *fits, double *excess)
{
    const struct loki__milp_req *rq = m->rq;
    const struct loki_topology *topo = rq->topo;
    const struct flow *f = m->fl;
    double beta = beta_of(m), mem = 0, cl = 0, g = ceil(rq->budget - 1e-9);
    *obj = *gpus = *excess = 0;
    for (int p = 0; p < topo->n_pipelines; p++) {
        const struct loki_pipeline *pp = &topo->pipelines[p];
        double L[NT], E[NT];
        int var[NT];
        *obj += glp_get_obj_coef(lp, m->col_sigma[p]);
        for (int o = 0; o < f->n_order[p]; o++) {
            int t = f->order[p][o], par = f->parent[p][t];
            const struct node *n = &m->nodes[as[p][t]];
            var[t] = n->v;
            L[t] = par < 0 ? beta * rq->demand[p] : L[par] * fan_in(m, p, t, var[par]);
            E[t] = (par < 0 ? 0 : E[par]) + n->lat;
            double z = fmax(1, ceil(L[t] / n->thr - 1e-9));
            *gpus += n->share * z;
            mem += n->mem * z;
            cl += z;
            *obj += glp_get_obj_coef(lp, n->col_y) + glp_get_obj_coef(lp, n->col_z) * z;
            if (pp->tasks[t].n_children == 0)
                *excess += fmax(0, E[t] - f->budget[p]);
        }
        for (int k = 0; k < m->n_chains; k++) {
            const struct chain *c = &m->chains[k];
            if (c->p == p)
                *obj += f->acc_mult * m->wp[p] * c->weight *
                        loki__path_accuracy(pp, c->task, c->len, var);
        }
    }
    *fits = *gpus <= rq->budget + 1e-9 &&
            (topo->gpus.mem_mb <= 0 || mem <= g * topo->gpus.mem_mb + 1e-6) &&
            (topo->gpus.mps_max_clients <= 0 || cl <= g * topo->gpus.mps_max_clients);
}

/*
 * Greedy incumbent for ACCURACY mode, as milp_search.c's for paths: the most
 * accurate variant of every task at its fastest option; while chains overrun
 * the latency budget, the change that cuts the overrun most per unit of
 * objective lost; then while the instances exceed the GPU budget, the change
 * that saves the most GPUs per unit of objective lost; then
 * objective-improving changes that still fit. Writes @x; true when it fits.
 */
bool loki__flow_greedy(struct model *m, glp_prob *lp, double *x)
{
    const struct loki__milp_req *rq = m->rq;
    const struct loki_topology *topo = rq->topo;
    const struct flow *f = m->fl;
    if (rq->mode != LOKI__MILP_ACCURACY)
        return false;
    int as[NP][NT];
    for (int p = 0; p < topo->n_pipelines; p++) {
        const struct loki_pipeline *pp = &topo->pipelines[p];
        for (int t = 0; t < pp->n_tasks; t++) {
            int best = -1;
            for (int i = 0; i < m->tn_count[p][t]; i++) {
                int ni = m->tn_first[p][t] + i;
                const struct node *n = &m->nodes[ni];
                if (!n->used)
                    continue;
                const struct node *b = best >= 0 ? &m->nodes[best] : NULL;
                double a = acc_of(m, p, t, n->v), ab = b ? acc_of(m, p, t, b->v) : -1;
                if (!b || a > ab + 1e-12 ||
                    (a > ab - 1e-12 && (n->lat < b->lat || (n->lat == b->lat && n->thr > b->thr))))
                    best = ni;
            }
            if (best < 0)
                return false;
            as[p][t] = best;
        }
    }
    double obj, gpus, excess;
    bool fits;
    g_eval(m, lp, (const int(*)[NT])as, &obj, &gpus, &fits, &excess);
    /* phase 0: latency; 1: GPUs; 2: upgrades that still fit */
    for (int phase = 0; phase < 3; phase++) {
        for (int iter = 0; iter < 512; iter++) {
            if ((phase == 0 && excess <= 1e-9) || (phase == 1 && fits))
                break;
            int bp = -1, bt = -1, bn = -1;
            double bscore = 0, bobj = 0, bg = 0, bex = 0;
            bool bfits = false;
            for (int p = 0; p < topo->n_pipelines; p++)
                for (int t = 0; t < topo->pipelines[p].n_tasks; t++) {
                    int cur = as[p][t];
                    for (int i = 0; i < m->tn_count[p][t]; i++) {
                        int ni = m->tn_first[p][t] + i;
                        if (ni == cur || !m->nodes[ni].used)
                            continue;
                        as[p][t] = ni;
                        double o2, g2, e2;
                        bool f2;
                        g_eval(m, lp, (const int(*)[NT])as, &o2, &g2, &f2, &e2);
                        as[p][t] = cur;
                        double score, lost = fmax(obj - o2, 1e-9);
                        if (phase == 0) {
                            if (e2 >= excess - 1e-12)
                                continue;
                            score = (excess - e2) / lost;
                        } else if (phase == 1) {
                            if (e2 > 1e-9 || g2 >= gpus - 1e-9)
                                continue;
                            score = (gpus - g2) / lost;
                        } else {
                            if (e2 > 1e-9 || !f2 || o2 <= obj + 1e-12)
                                continue;
                            score = o2 - obj;
                        }
                        if (bp < 0 || score > bscore) {
                            bp = p, bt = t, bn = ni;
                            bscore = score, bobj = o2, bg = g2, bfits = f2, bex = e2;
                        }
                    }
                }
            if (bp < 0)
                break;
            as[bp][bt] = bn;
            obj = bobj, gpus = bg, fits = bfits, excess = bex;
        }
        if ((phase == 0 && excess > 1e-9) || (phase == 1 && !fits))
            return false;
    }
    int(*ch)[NT][NV] = malloc(sizeof(int) * NP * NT * NV);
    double(*s)[NT][NV][NV] = calloc(NP, sizeof(*s));
    bool ok = ch && s;
    if (ok) {
        memset(x, 0, sizeof(double) * (size_t)(m->n_cols + 1));
        memset(ch, -1, sizeof(int) * NP * NT * NV);
        for (int p = 0; p < topo->n_pipelines; p++)
            for (int t = 0; t < topo->pipelines[p].n_tasks; t++) {
                const struct node *n = &m->nodes[as[p][t]];
                int par = f->parent[p][t];
                ch[p][t][n->v] = as[p][t];
                s[p][t][par < 0 ? 0 : m->nodes[as[p][par]].v][n->v] = 1;
            }
        ok = route(m, (const int(*)[NT][NV])ch, s, x);
    }
    free(ch);
    free(s);
    return ok;
}

/* ---- the answer ---- */

int loki__flow_extract(struct model *m, const double *x, struct loki__milp_res *res)
{
    const struct loki__milp_req *rq = m->rq;
    const struct loki_topology *topo = rq->topo;
    const struct flow *f = m->fl;
    static const double eps = 1e-9;
    double beta = beta_of(m);
    int chosen[NP][NT][NV];
    memset(chosen, -1, sizeof(chosen));
    for (int i = 0; i < m->n_nodes; i++) {
        const struct node *n = &m->nodes[i];
        if (!n->used || x[n->col_y] < 0.5)
            continue;
        chosen[n->p][n->t][n->v] = i;
        res->inst[n->p][n->t][n->v] = (int)lround(x[n->col_z]);
        res->batch[n->p][n->t][n->v] = n->batch;
        res->share[n->p][n->t][n->v] = n->share;
    }
    /* Route weights (what the router splits by) and loads: fractions down to the root's
     * children, where they are proportional per parent variant, then loads (or, at zero
     * demand, fractions again). */
    double(*l)[NT][NV][NV] = calloc(2 * NP, sizeof(*l));
    if (!l)
        return -ENOMEM;
    double(*xp)[NT][NV][NV] = l + NP; /* deep edges: fractions per variant pair */
    double accr[NP] = {0}, sub_n[NP] = {0}, sub_d[NP] = {0};
    for (int i = 0; i < f->n_fins; i++) {
        const struct fin *fi = &f->fins[i];
        const struct node *n = &m->nodes[fi->node];
        double X = x[fi->cx];
        if (X <= eps)
            continue;
        int p = n->p, t = n->t, d = f->depth[p][t];
        if (d >= 3) {
            xp[p][t][fi->u][n->v] += X;
            continue;
        }
        double load = rq->demand[p] * X * (d == 1 ? 1 : fan_in(m, p, t, fi->u));
        l[p][t][d == 1 ? 0 : fi->u][n->v] += X;
        res->load[p][t][n->v] += load;
        if (!has_children(m, p, t)) {
            double a = leaf_acc(m, fi);
            accr[p] += chain_weight(m, p, t) * a * X;
            sub_n[p] += load * a;
            sub_d[p] += load;
        }
    }
    for (int p = 0; p < topo->n_pipelines; p++)
        for (int t = 0; t < topo->pipelines[p].n_tasks; t++)
            for (int u = 0; u < NV && f->depth[p][t] >= 3; u++)
                for (int v = 0; v < NV; v++) {
                    if (!f->col_f[p][t][u][v])
                        continue;
                    double F = x[f->col_f[p][t][u][v]] / beta, G = x[f->col_g[p][t][u][v]];
                    double X = xp[p][t][u][v];
                    /* the router splits sub-queries: by load (at zero demand, by fraction) */
                    l[p][t][u][v] = rq->demand[p] > 0 ? F : X;
                    res->load[p][t][v] += F;
                    if (has_children(m, p, t) || X <= eps)
                        continue;
                    double a = acc_of(m, p, t, v), per = a * G / X;
                    accr[p] += chain_weight(m, p, t) * a * G;
                    sub_n[p] += F * per;
                    sub_d[p] += F;
                }
    for (int p = 0; p < topo->n_pipelines; p++) {
        res->served[p] = x[m->col_sigma[p]];
        res->acc_root[p] = res->served[p] > eps ? accr[p] / res->served[p] : 0;
        res->acc_sub[p] = sub_d[p] > eps ? sub_n[p] / sub_d[p] : res->acc_root[p];
        /* worst planned latency per chain over the routing's support */
        const struct loki_pipeline *pp = &topo->pipelines[p];
        double E[NT][NV] = {{0}};
        for (int o = 0; o < f->n_order[p]; o++) {
            int t = f->order[p][o], par = f->parent[p][t];
            for (int v = 0; v < pp->tasks[t].n_variants; v++) {
                if (chosen[p][t][v] < 0)
                    continue;
                double pre = 0;
                for (int u = 0; par >= 0 && u < pp->tasks[par].n_variants; u++)
                    if (l[p][t][u][v] > eps)
                        pre = fmax(pre, E[par][u]);
                E[t][v] = pre + m->nodes[chosen[p][t][v]].lat;
            }
        }
        for (int k = 0; k < m->n_chains; k++) {
            const struct chain *c = &m->chains[k];
            if (c->p != p)
                continue;
            int leaf = c->task[c->len - 1];
            double worst = 0;
            for (int v = 0; v < pp->tasks[leaf].n_variants; v++) {
                double in = 0;
                for (int u = 0; u < NV; u++)
                    in += l[p][leaf][u][v];
                if (in > eps)
                    worst = fmax(worst, E[leaf][v]);
            }
            if (res->n_chains[p] < NT)
                res->chain_lat[p][res->n_chains[p]] = worst;
            res->n_chains[p]++;
        }
    }
    loki__milp_splits(m, l, res);
    free(l);
    return 0;
}
