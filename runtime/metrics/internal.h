/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared by metrics.c (recording, snapshots) and status.c (rendering): the
 * layout of struct loki_metrics and its histograms. Not installed, not
 * included outside runtime/metrics/.
 */
#ifndef LOKI_METRICS_INTERNAL_H
#define LOKI_METRICS_INTERNAL_H

#include <stdint.h>

#include "loki/metrics.h"

#define LOKI__HIST_T 13 /* time buckets, +Inf apart */
#define LOKI__HIST_B 13 /* batch-size buckets, +Inf apart */

/* Bucket bounds (upper, inclusive) of the time histograms, seconds, and of batch sizes. */
extern const double loki__time_bounds[LOKI__HIST_T];
extern const double loki__batch_bounds[LOKI__HIST_B];

/* A Prometheus histogram: per-bucket (not cumulative) counts, the last one is +Inf. */
struct loki__hist {
    uint64_t b[LOKI__HIST_T + 1];
    uint64_t count;
    double sum;
};

struct loki__var_metrics {
    struct loki__hist compute; /* dispatch to result, seconds */
    struct loki__hist batch;   /* dispatched batch sizes */
    uint64_t failed;           /* queries a worker reported failed */
};

/* The counters of every pipeline at one tick. */
struct loki__snap_set {
    double t;
    struct loki_metrics_counts p[LOKI_MAX_PIPELINES];
};

struct loki_metrics {
    const struct loki_topology *topo;
    struct loki__hist queue[LOKI_MAX_PIPELINES], e2e[LOKI_MAX_PIPELINES];
    struct loki__var_metrics var[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS];
    /* ring of snapshots: win_head is the next to write, win_n how many are valid */
    struct loki__snap_set win[LOKI_METRICS_WINDOW_S + 1];
    int win_head, win_n;
};

/* The cumulative counters of pipeline @p in @st, per-task drops summed over variants. */
void loki__counts_now(const struct loki_metrics *m, const struct loki_router_stats *st, int p,
                      struct loki_metrics_counts *o);

#endif
