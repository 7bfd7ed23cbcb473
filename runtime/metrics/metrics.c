/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Recording and the last minute. Histograms keep per-bucket counts (the
 * exposition makes them cumulative); the ring holds WINDOW_S + 1 snapshots
 * so that, once full, its oldest is WINDOW_S ticks old and "the last
 * minute" is the router's counters now less that one. See README.md.
 */
#include "loki/metrics.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "loki/compiler.h"

#define RING (LOKI_METRICS_WINDOW_S + 1)

const double loki__time_bounds[LOKI__HIST_T] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                0.1,    0.25,  0.5,    1,     2.5,  5};
const double loki__batch_bounds[LOKI__HIST_B] = {1,   2,   4,   8,    16,   32,  64,
                                                 128, 256, 512, 1024, 2048, 4096};

int loki_metrics_create(const struct loki_topology *topo, struct loki_metrics **out)
{
    struct loki_metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->topo = topo;
    *out = m;
    return 0;
}

void loki_metrics_destroy(struct loki_metrics *m)
{
    free(m);
}

static void hist_add(struct loki__hist *h, const double *bounds, int nb, double v)
{
    int i = 0;
    while (i < nb && v > bounds[i])
        i++;
    h->b[i]++;
    h->count++;
    h->sum += v;
}

static __attribute__((unused)) bool var_ok(const struct loki_metrics *m, int p, int t, int v)
{
    return p >= 0 && p < m->topo->n_pipelines && t >= 0 && t < m->topo->pipelines[p].n_tasks &&
           v >= 0 && v < m->topo->pipelines[p].tasks[t].n_variants;
}

void loki_metrics_queue_time(struct loki_metrics *m, int p, double seconds)
{
    LOKI_ASSERT(p >= 0 && p < m->topo->n_pipelines);
    hist_add(&m->queue[p], loki__time_bounds, LOKI__HIST_T, seconds);
}

void loki_metrics_e2e(struct loki_metrics *m, int p, double seconds)
{
    LOKI_ASSERT(p >= 0 && p < m->topo->n_pipelines);
    hist_add(&m->e2e[p], loki__time_bounds, LOKI__HIST_T, seconds);
}

void loki_metrics_compute(struct loki_metrics *m, int p, int t, int v, double seconds)
{
    LOKI_ASSERT(var_ok(m, p, t, v));
    hist_add(&m->var[p][t][v].compute, loki__time_bounds, LOKI__HIST_T, seconds);
}

void loki_metrics_batch(struct loki_metrics *m, int p, int t, int v, int n)
{
    LOKI_ASSERT(var_ok(m, p, t, v));
    hist_add(&m->var[p][t][v].batch, loki__batch_bounds, LOKI__HIST_B, n);
}

void loki_metrics_failed(struct loki_metrics *m, int p, int t, int v, uint64_t n)
{
    LOKI_ASSERT(var_ok(m, p, t, v));
    m->var[p][t][v].failed += n;
}

void loki__counts_now(const struct loki_metrics *m, const struct loki_router_stats *st, int p,
                      struct loki_metrics_counts *o)
{
    const struct loki_router_pipeline_stats *ps = &st->pipe[p];
    const struct loki_pipeline *pl = &m->topo->pipelines[p];
    memset(o, 0, sizeof(*o));
    o->arrived = ps->arrived;
    o->ok = ps->ok;
    o->dropped = ps->dropped;
    o->late = ps->late;
    o->error = ps->error;
    o->overloaded = ps->overloaded;
    o->sub = ps->sub_created;
    o->sub_viol = ps->sub_violations;
    o->acc_sum = ps->acc_sum;
    o->acc_sub_sum = ps->acc_sub_sum;
    for (int t = 0; t < pl->n_tasks; t++)
        for (int v = 0; v < pl->tasks[t].n_variants; v++)
            o->stage_drop[t] += st->var[p][t][v].dropped;
}

void loki_metrics_tick(struct loki_metrics *m, double now_s, const struct loki_router_stats *st)
{
    struct loki__snap_set *w = &m->win[m->win_head];
    w->t = now_s;
    for (int p = 0; p < m->topo->n_pipelines; p++)
        loki__counts_now(m, st, p, &w->p[p]);
    m->win_head = (m->win_head + 1) % RING;
    if (m->win_n < RING)
        m->win_n++;
}

double loki_metrics_last_minute(const struct loki_metrics *m, const struct loki_router_stats *st,
                                double now_s, int p, struct loki_metrics_counts *o)
{
    struct loki_metrics_counts cur, base;
    double t0 = 0;
    loki__counts_now(m, st, p, &cur);
    memset(&base, 0, sizeof(base));
    if (m->win_n) {
        /* oldest snapshot in the ring: about WINDOW_S seconds ago once it is full */
        int i = (m->win_head - m->win_n + RING) % RING;
        base = m->win[i].p[p];
        t0 = m->win[i].t;
    }
    o->arrived = cur.arrived - base.arrived;
    o->ok = cur.ok - base.ok;
    o->dropped = cur.dropped - base.dropped;
    o->late = cur.late - base.late;
    o->error = cur.error - base.error;
    o->overloaded = cur.overloaded - base.overloaded;
    o->sub = cur.sub - base.sub;
    o->sub_viol = cur.sub_viol - base.sub_viol;
    o->acc_sum = cur.acc_sum - base.acc_sum;
    o->acc_sub_sum = cur.acc_sub_sum - base.acc_sub_sum;
    for (int k = 0; k < LOKI_MAX_TASKS; k++)
        o->stage_drop[k] = cur.stage_drop[k] - base.stage_drop[k];
    return now_s - t0;
}

double loki_metrics_violation_ratio(const struct loki_metrics_counts *c)
{
    uint64_t answered = c->ok + c->dropped + c->late + c->error;
    return answered ? (double)(c->dropped + c->late + c->error) / (double)answered : 0;
}
