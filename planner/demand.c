/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Demand and fan-out estimators. The root-demand EWMA reproduces what the
 * original planner computed each second (pandas ewm(com=1.6, adjust=True)
 * over the last 20 per-second counts, newest value taken); the fan-out EWMA
 * weighs a batch of n queries like n single observations.
 */
#include "loki/demand.h"

#include <errno.h>
#include <math.h>
#include <string.h>

void loki_demand_init(struct loki_demand *d, double alpha, int windows)
{
    memset(d, 0, sizeof(*d));
    d->alpha = alpha > 0 && alpha <= 1 ? alpha : 0.385;
    d->windows = windows > 0 ? windows : 20;
    if (d->windows > LOKI_DEMAND_MAX_WINDOWS)
        d->windows = LOKI_DEMAND_MAX_WINDOWS;
    d->window_s = 1.0;
    d->cur = -1;
    d->plan_sigmas = 2;
    d->plan_recent = 0;
}

static void push(struct loki_demand *d, double rate)
{
    d->hist[d->head] = rate;
    d->head = (d->head + 1) % LOKI_DEMAND_MAX_WINDOWS;
    if (d->n_hist < LOKI_DEMAND_MAX_WINDOWS)
        d->n_hist++;
}

void loki_demand_start(struct loki_demand *d, double now_s)
{
    if (d->cur >= 0)
        return; /* already observing */
    d->cur = (long)floor(now_s / d->window_s);
    d->span_start = now_s;
    d->cur_count = 0;
}

/* Close every window before the one containing @now_s. */
static void advance(struct loki_demand *d, double now_s)
{
    long w = (long)floor(now_s / d->window_s);
    if (d->cur < 0) {
        d->cur = w;
        d->span_start = (double)w * d->window_s; /* the whole first window counts */
        return;
    }
    if (w <= d->cur)
        return;
    /* Only the first window can have been seen for part of its length (loki_demand_start):
     * its rate is over that part; seen for under half a window it runs on into the next. */
    double span = (double)(d->cur + 1) * d->window_s - d->span_start;
    if (span < 0.5 * d->window_s && w == d->cur + 1) {
        d->cur = w;
        return;
    }
    push(d, d->cur_count / (span >= 0.5 * d->window_s ? span : d->window_s));
    /* Idle windows count as zero, but more than the history holds changes nothing. */
    long gap = w - d->cur - 1;
    if (gap > LOKI_DEMAND_MAX_WINDOWS)
        gap = LOKI_DEMAND_MAX_WINDOWS;
    for (long i = 0; i < gap; i++)
        push(d, 0);
    d->cur = w;
    d->cur_count = 0;
    d->span_start = (double)w * d->window_s;
}

void loki_demand_observe(struct loki_demand *d, double now_s, double count)
{
    advance(d, now_s);
    d->cur_count += count;
}

double loki_demand_estimate(struct loki_demand *d, double now_s)
{
    advance(d, now_s);
    if (d->n_hist == 0) {
        if (d->cur < 0)
            return 0;
        double el = now_s - d->span_start;
        return el > 1e-3 ? d->cur_count / el : 0;
    }
    int n = d->n_hist < d->windows ? d->n_hist : d->windows;
    double num = 0, den = 0, w = 1;
    for (int i = 0; i < n; i++) {
        int k = (d->head - 1 - i + 2 * LOKI_DEMAND_MAX_WINDOWS) % LOKI_DEMAND_MAX_WINDOWS;
        num += w * d->hist[k];
        den += w;
        w *= 1 - d->alpha;
    }
    return num / den;
}

double loki_demand_plan_input(struct loki_demand *d, double now_s)
{
    double r = loki_demand_estimate(d, now_s); /* closes windows up to now_s */
    int n = d->plan_recent < d->n_hist ? d->plan_recent : d->n_hist;
    for (int i = 0; i < n; i++) {
        int k = (d->head - 1 - i + 2 * LOKI_DEMAND_MAX_WINDOWS) % LOKI_DEMAND_MAX_WINDOWS;
        if (d->hist[k] > r)
            r = d->hist[k];
    }
    double sig = d->plan_sigmas > 0 ? d->plan_sigmas : 0;
    return r + sig * sqrt(r > 0 ? r : 0);
}

void loki_fanout_est_init(struct loki_fanout_est *f, double alpha, int min_queries)
{
    memset(f, 0, sizeof(*f));
    f->alpha = alpha > 0 && alpha <= 1 ? alpha : 0.1;
    f->min_queries = min_queries > 0 ? min_queries : 20;
}

static bool in_range(int p, int t, int v, int slot)
{
    return p >= 0 && p < LOKI_MAX_PIPELINES && t >= 0 && t < LOKI_MAX_TASKS && v >= 0 &&
           v < LOKI_MAX_VARIANTS && slot >= 0 && slot < LOKI_MAX_CHILDREN;
}

int loki_fanout_est_observe(struct loki_fanout_est *f, int p, int t, int v, int slot,
                            double n_queries, double n_children)
{
    if (!in_range(p, t, v, slot) || !(n_queries > 0) || !(n_children >= 0))
        return -EINVAL;
    double x = n_children / n_queries;
    double *m = &f->mean[p][t][v][slot];
    double *seen = &f->seen[p][t][v][slot];
    if (*seen <= 0)
        *m = x;
    else
        *m += (1 - pow(1 - f->alpha, n_queries)) * (x - *m);
    *seen += n_queries;
    return 0;
}

double loki_fanout_est_get(const struct loki_fanout_est *f, const struct loki_topology *topo, int p,
                           int t, int v, int slot)
{
    if (f && in_range(p, t, v, slot) && f->seen[p][t][v][slot] >= f->min_queries)
        return f->mean[p][t][v][slot];
    return topo->pipelines[p].tasks[t].variants[v].fanout[slot].mean;
}
