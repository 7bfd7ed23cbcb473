/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers over the pipeline model: defaults, latency lookup with linear
 * interpolation between profiled batch sizes, chain enumeration. Pure
 * functions, no allocation.
 */
#include "loki/model.h"

#include <math.h>
#include <string.h>

void loki_topology_defaults(struct loki_topology *t)
{
    memset(t, 0, sizeof(*t));
    t->gpus.count = 1;
    t->gpus.mem_mb = 16384;
    t->gpus.mps_max_clients = 48;
    t->gpus.share_granularity = 1.0;
    t->planner.policy = LOKI_POLICY_LOKI;
    t->planner.interval_ms = 1000;
    t->planner.headroom = 0.5;
    t->planner.beta = 1.35; /* measured: 1.05 leaves 5.8 % violations at steady 100 qps */
    t->planner.ewma_alpha = 0.385;
    t->planner.ewma_windows = 20;
    t->planner.hysteresis = 0.02;
    t->planner.min_dwell_s = 10;
    t->planner.time_limit_ms = 200;
    t->planner.mip_gap = 0.005;
    t->planner.burst_spares = 0;
    t->planner.fallback = true;
    t->planner.demand_sigmas = 2;
    t->planner.accuracy_floor = 0;
    t->planner.early_drop = true;
    t->planner.reroute = true;
}

int loki_variant_share_index(const struct loki_variant *v, double share)
{
    for (int i = 0; i < v->n_shares; i++)
        if (fabs(v->shares[i] - share) < 1e-9)
            return i;
    return -1;
}

double loki_variant_latency(const struct loki_variant *v, int batch, double share)
{
    int s = loki_variant_share_index(v, share);
    if (s < 0 || batch < 1 || v->n_batches < 1)
        return -1;
    const double *lat = v->latency_ms[s];
    if (batch <= v->batches[0])
        return lat[0];
    for (int i = 1; i < v->n_batches; i++) {
        if (batch <= v->batches[i]) {
            double f =
                (double)(batch - v->batches[i - 1]) / (double)(v->batches[i] - v->batches[i - 1]);
            return lat[i - 1] + f * (lat[i] - lat[i - 1]);
        }
    }
    return -1;
}

double loki_variant_throughput(const struct loki_variant *v, int batch, double share)
{
    double ms = loki_variant_latency(v, batch, share);
    if (ms <= 0)
        return 0;
    return batch * 1000.0 / ms;
}

int loki_topology_derive_shares(struct loki_topology *t)
{
    double g = t->gpus.share_granularity;
    if (!(g > 0) || g >= 1 - 1e-9)
        return 0;
    /* g, 2g, 4g, ... below 1, largest first (the model stores shares descending) */
    double sh[LOKI_MAX_SHARES];
    int n = 0;
    for (double s = g; s < 1 - 1e-9 && n < LOKI_MAX_SHARES - 1; s *= 2)
        n++;
    for (int i = 0; i < n; i++)
        sh[i] = g * (double)(1 << (n - 1 - i));
    int changed = 0;
    for (int p = 0; p < t->n_pipelines; p++)
        for (int k = 0; k < t->pipelines[p].n_tasks; k++)
            for (int v = 0; v < t->pipelines[p].tasks[k].n_variants; v++) {
                struct loki_variant *var = &t->pipelines[p].tasks[k].variants[v];
                if (var->n_shares != 1 || fabs(var->shares[0] - 1) > 1e-9 || n == 0)
                    continue;
                for (int i = 0; i < n; i++) {
                    var->shares[1 + i] = sh[i];
                    for (int b = 0; b < var->n_batches; b++)
                        var->latency_ms[1 + i][b] = var->latency_ms[0][b] / sh[i];
                }
                var->n_shares = 1 + n;
                var->share_scaled = true;
                var->share_derived = true;
                changed++;
            }
    return changed;
}

double loki_task_min_latency(const struct loki_task *t)
{
    double best = -1;
    for (int i = 0; i < t->n_variants; i++) {
        double l = loki_variant_latency(&t->variants[i], 1, 1.0);
        if (l > 0 && (best < 0 || l < best))
            best = l;
    }
    return best;
}

static double min_below(const struct loki_pipeline *p, int t, int depth)
{
    const struct loki_task *tk = &p->tasks[t];
    double worst = 0;
    for (int c = 0; c < tk->n_children && depth < LOKI_MAX_TASKS; c++) {
        int ch = tk->children[c];
        double l = loki_task_min_latency(&p->tasks[ch]) + min_below(p, ch, depth + 1);
        if (l > worst)
            worst = l;
    }
    return worst;
}

double loki_task_min_below(const struct loki_pipeline *p, int t)
{
    return min_below(p, t, 0);
}

static int walk(const struct loki_pipeline *p, int task, int *stack, int depth,
                int chains[][LOKI_MAX_TASKS], int *len, int n, int max)
{
    if (depth >= LOKI_MAX_TASKS)
        return n;
    stack[depth] = task;
    const struct loki_task *t = &p->tasks[task];
    if (t->n_children == 0) {
        if (n < max) {
            memcpy(chains[n], stack, sizeof(int) * (size_t)(depth + 1));
            len[n] = depth + 1;
        }
        return n + 1;
    }
    for (int c = 0; c < t->n_children; c++)
        n = walk(p, t->children[c], stack, depth + 1, chains, len, n, max);
    return n;
}

int loki_pipeline_chains(const struct loki_pipeline *p, int chains[][LOKI_MAX_TASKS], int *len,
                         int max)
{
    int stack[LOKI_MAX_TASKS];
    if (p->n_tasks == 0)
        return 0;
    int n = walk(p, p->root, stack, 0, chains, len, 0, max);
    return n < max ? n : max;
}

int loki_pipeline_task_index(const struct loki_pipeline *p, const char *name)
{
    for (int i = 0; i < p->n_tasks; i++)
        if (strcmp(p->tasks[i].name, name) == 0)
            return i;
    return -1;
}

int loki_task_variant_index(const struct loki_task *t, const char *name)
{
    for (int i = 0; i < t->n_variants; i++)
        if (strcmp(t->variants[i].name, name) == 0)
            return i;
    return -1;
}

int loki_topology_pipeline_index(const struct loki_topology *t, const char *name)
{
    for (int i = 0; i < t->n_pipelines; i++)
        if (strcmp(t->pipelines[i].name, name) == 0)
            return i;
    return -1;
}

int loki_task_child_slot(const struct loki_task *t, int child)
{
    for (int i = 0; i < t->n_children; i++)
        if (t->children[i] == child)
            return i;
    return -1;
}

int loki_task_best_variant(const struct loki_task *t)
{
    int best = -1;
    for (int i = 0; i < t->n_variants; i++) {
        const struct loki_variant *v = &t->variants[i];
        if (best < 0 || v->accuracy > t->variants[best].accuracy ||
            (v->accuracy == t->variants[best].accuracy &&
             loki_variant_latency(v, 1, 1.0) < loki_variant_latency(&t->variants[best], 1, 1.0)))
            best = i;
    }
    return best;
}

static const char *const policy_names[] = {"loki", "inferline", "proteus", "static"};

const char *loki_policy_name(enum loki_policy p)
{
    return (unsigned)p < 4 ? policy_names[p] : "?";
}

int loki_policy_parse(const char *s, enum loki_policy *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, policy_names[i]) == 0) {
            *out = (enum loki_policy)i;
            return 0;
        }
    }
    return -22;
}
