/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers for planner tests: small random pipelines built on the heap
 * (calloc + loki_topology_defaults), deterministic from a seed.
 */
#ifndef LOKI_PTEST_H
#define LOKI_PTEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loki/model.h"

static inline double prand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return ((*s >> 8) & 0xffffff) / (double)0x1000000;
}

/*
 * A random pipeline: @n_tasks tasks (2 or 3; with 3, a chain when @tree is
 * false, else a root with two leaves), @nv[t] variants each, batch sizes
 * 1, 2, 4, optional half shares, @gpus GPUs.
 */
static inline struct loki_topology *ptest_random(unsigned seed, int n_tasks, const int *nv,
                                                 bool tree, bool halves, int gpus)
{
    struct loki_topology *t = calloc(1, sizeof(*t));
    loki_topology_defaults(t);
    t->gpus.count = gpus;
    t->gpus.mem_mb = 0;
    t->gpus.share_granularity = halves ? 0.5 : 1;
    t->planner.mip_gap = 1e-9;
    t->planner.time_limit_ms = 0;
    t->n_pipelines = 1;
    struct loki_pipeline *p = &t->pipelines[0];
    snprintf(p->name, sizeof(p->name), "rand%u", seed);
    p->n_tasks = n_tasks;
    p->root = 0;
    double slo_sum = 0;
    for (int k = 0; k < n_tasks; k++) {
        struct loki_task *tk = &p->tasks[k];
        snprintf(tk->name, sizeof(tk->name), "task%d", k);
        tk->n_variants = nv[k];
        double base = 4 + 20 * prand(&seed);
        for (int v = 0; v < nv[k]; v++) {
            struct loki_variant *var = &tk->variants[v];
            snprintf(var->name, sizeof(var->name), "t%dv%d", k, v);
            /* Variant v: slower and more accurate as v grows; the last is the best. */
            var->accuracy = v == nv[k] - 1 ? 100 : 50 + 45.0 * (v + prand(&seed)) / nv[k];
            double l1 = base * (1 + v * (0.5 + prand(&seed)));
            var->n_batches = 3;
            var->n_shares = halves ? 2 : 1;
            var->shares[0] = 1;
            var->shares[1] = 0.5;
            for (int b = 0; b < 3; b++) {
                var->batches[b] = 1 << b;
                var->latency_ms[0][b] = l1 * (0.55 + 0.45 * (1 << b)) * (1 + 0.1 * prand(&seed));
                var->latency_ms[1][b] = var->latency_ms[0][b] * (1.3 + 0.5 * prand(&seed));
            }
            for (int c = 0; c < LOKI_MAX_CHILDREN; c++)
                var->fanout[c].mean = 0.5 + 2.5 * prand(&seed);
        }
        slo_sum += base * 2.5;
    }
    if (n_tasks == 2 || !tree) {
        for (int k = 0; k + 1 < n_tasks; k++) {
            p->tasks[k].n_children = 1;
            p->tasks[k].children[0] = k + 1;
        }
    } else {
        p->tasks[0].n_children = 2;
        p->tasks[0].children[0] = 1;
        p->tasks[0].children[1] = 2;
    }
    p->slo_ms = 2 * slo_sum * (0.8 + 0.8 * prand(&seed));
    return t;
}

#endif
