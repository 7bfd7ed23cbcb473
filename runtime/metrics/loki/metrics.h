/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What lokid measures itself: per pipeline, queueing (arrival to first
 * dispatch) and end-to-end latency histograms; per variant, compute time
 * (dispatch to result) and batch-size histograms and failed sub-queries;
 * and a ring of once-a-second snapshots of the router's counters, from
 * which the reports take "the last minute" as differences. One loop thread
 * owns a struct loki_metrics and makes every call; recording never
 * allocates. The reports over these figures are in loki/status.h.
 */
#ifndef LOKI_METRICS_H
#define LOKI_METRICS_H

#include <stdint.h>

#include "loki/model.h"
#include "loki/router.h"

/* Seconds of the "last minute": the ring keeps this many 1 s snapshots, plus one. */
#define LOKI_METRICS_WINDOW_S 60

struct loki_metrics;

/* Counters of one pipeline: cumulative (a snapshot) or over a window (a difference). */
struct loki_metrics_counts {
    uint64_t arrived, ok, dropped, late, error, overloaded; /* root queries by outcome */
    uint64_t sub, sub_viol;              /* sub-queries created; of them dropped or late */
    double acc_sum, acc_sub_sum;         /* accuracy sums over the ok root queries, 0..100 each */
    uint64_t stage_drop[LOKI_MAX_TASKS]; /* sub-queries dropped early, per task */
};

/*
 * Create the metrics of @topo (borrowed: must outlive them and not change): empty histograms
 * and an empty snapshot ring. Returns 0 or -ENOMEM. Release with loki_metrics_destroy().
 */
int loki_metrics_create(const struct loki_topology *topo, struct loki_metrics **out);

/* Release @m. NULL is a no-op. */
void loki_metrics_destroy(struct loki_metrics *m);

/*
 * Record one observation. The query path calls these, on the owning thread; none allocates.
 * @p, @t, @v: pipeline, task and variant indexes in the topology (checked in debug builds).
 *   queue_time: root query @p waited @seconds from arrival to the dispatch of its first batch;
 *   e2e:        root query @p was served (ok or late) @seconds after it arrived;
 *   compute:    a batch of variant (p, t, v) came back @seconds after its dispatch;
 *   batch:      a batch of @n queries was dispatched to variant (p, t, v);
 *   failed:     a worker of variant (p, t, v) reported @n queries failed.
 */
void loki_metrics_queue_time(struct loki_metrics *m, int p, double seconds);
void loki_metrics_e2e(struct loki_metrics *m, int p, double seconds);
void loki_metrics_compute(struct loki_metrics *m, int p, int t, int v, double seconds);
void loki_metrics_batch(struct loki_metrics *m, int p, int t, int v, int n);
void loki_metrics_failed(struct loki_metrics *m, int p, int t, int v, uint64_t n);

/*
 * Take the snapshot of second @now_s (any origin, the same clock the reports are given) from
 * the router's cumulative counters @st; the snapshot taken LOKI_METRICS_WINDOW_S ticks ago
 * becomes the base of the last minute. Call once at start (the zero baseline) and then once
 * a second. Owning thread; no allocation.
 */
void loki_metrics_tick(struct loki_metrics *m, double now_s, const struct loki_router_stats *st);

/*
 * Counters of pipeline @p over the last minute: @st (the router's counters now) less the
 * oldest snapshot in the ring (zero before the first tick). Writes @out; returns the window
 * in seconds (@now_s less the base's time: up to LOKI_METRICS_WINDOW_S, less after a start).
 */
double loki_metrics_last_minute(const struct loki_metrics *m, const struct loki_router_stats *st,
                                double now_s, int p, struct loki_metrics_counts *out);

/* Violations among the answered root queries of @c: (dropped + late + error) / (those + ok);
 * 0 when none were answered. Refusals (overloaded) are counted apart. */
double loki_metrics_violation_ratio(const struct loki_metrics_counts *c);

#endif
