/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Demand estimates for the planner: an EWMA of root arrivals over one-second
 * windows (the original Loki used pandas ewm(com=1.6) over the last 20
 * windows, i.e. alpha = 1/(1+com) = 0.385 with adjust=True weights), and an
 * online EWMA of the observed fan-out per (variant, child task) that falls
 * back to the topology's mean until enough queries were seen. Plain data in
 * the caller's memory; no allocation, no clock: callers pass the time.
 */
#ifndef LOKI_DEMAND_H
#define LOKI_DEMAND_H

#include "loki/model.h"

#define LOKI_DEMAND_MAX_WINDOWS 128

struct loki_demand {
    double alpha;    /* weight of the newest window */
    int windows;     /* how many closed windows the estimate looks at */
    double window_s; /* 1.0 */
    long cur;        /* index of the open window (floor(t / window_s)); -1 before any */
    double cur_count;
    double span_start; /* where observation of the open window began (s): its start, or later
                        * for the first window after loki_demand_start() */
    int n_hist;        /* closed windows kept, newest at hist[(head - 1) mod max] */
    int head;
    double hist[LOKI_DEMAND_MAX_WINDOWS]; /* arrivals per second of closed windows */
    /* loki_demand_plan_input() knobs, set by init; callers may change them after. */
    double plan_sigmas; /* standard deviations of Poisson noise added (default 2) */
    int plan_recent;    /* also cover the largest of the last N closed windows (default 0) */
};

/*
 * Initialise @d: @alpha in (0,1] (0 picks 0.385), @windows in 1..128 (0 picks 20).
 * Caller's memory; any thread, but one thread at a time per object.
 */
void loki_demand_init(struct loki_demand *d, double alpha, int windows);

/*
 * Start observing at @now_s (seconds) when that is not a window boundary: the window holding
 * @now_s counts only from there, so its rate is taken over the part seen (a part under half a
 * window runs on into the next window), and nothing before @now_s counts as idle. lokid calls it
 * when it starts serving; without it the first observation's whole window counts (the replay
 * harness, whose arrivals start at 0). No effect once observing.
 */
void loki_demand_start(struct loki_demand *d, double now_s);

/*
 * Record @count arrivals at time @now_s (seconds, monotonic, non-decreasing).
 * Windows that passed without arrivals are recorded as zero.
 */
void loki_demand_observe(struct loki_demand *d, double now_s, double count);

/*
 * Estimated arrival rate (queries/s) at @now_s: the adjusted EWMA (weights
 * (1-alpha)^i, newest first, normalised) over the last @windows closed
 * one-second windows. Before the first window closes, the rate of the open
 * window so far (0 if nothing was observed). Closes windows up to @now_s.
 */
double loki_demand_estimate(struct loki_demand *d, double now_s);

/*
 * The root demand the planner should provision for at @now_s (queries/s):
 *
 *     r = max(EWMA estimate, largest of the last plan_recent closed windows)
 *     D = r + plan_sigmas * sqrt(r)
 *
 * The sqrt term is two standard deviations of Poisson arrivals at rate r: at
 * tens of qps a one-second dip otherwise shrinks the plan below the real
 * rate. The EWMA lags a step up by several seconds; plan_recent > 0 also
 * covers the newest windows, so the next re-plan scales up at once while the
 * EWMA still smooths the way down. Off by default: on the Azure day
 * (one-second bursts, 2 s start-up) it cut violations only 1.14 -> 1.09 %
 * for +0.5 GPUs off-peak once the planner keeps burst spares (planner.c).
 * plan_recent 0 and plan_sigmas 0 give the bare EWMA. The replay harness and
 * lokid's planner actor both use this rule, so they provision alike. Closes
 * windows up to @now_s, like loki_demand_estimate(); same threading rules.
 */
double loki_demand_plan_input(struct loki_demand *d, double now_s);

/* Online fan-out estimate per (pipeline, task, variant, child slot). */
struct loki_fanout_est {
    double alpha;    /* EWMA weight of one observation batch; default 0.1 */
    int min_queries; /* observations needed before the estimate replaces the model; default 20 */
    double mean[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS][LOKI_MAX_CHILDREN];
    double seen[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS][LOKI_MAX_CHILDREN];
};

/* Reset @f to "nothing observed" with @alpha (0 picks 0.1) and @min_queries (0 picks 20). */
void loki_fanout_est_init(struct loki_fanout_est *f, double alpha, int min_queries);

/*
 * Record that @n_queries queries served by variant @v of task @t in pipeline
 * @p produced @n_children sub-queries for child slot @slot (index into
 * task.children). Out-of-range indexes are ignored (returns -EINVAL).
 */
int loki_fanout_est_observe(struct loki_fanout_est *f, int p, int t, int v, int slot,
                            double n_queries, double n_children);

/*
 * Fan-out mean to use for planning: the EWMA once @min_queries queries of the
 * variant were observed, otherwise the topology's mean. @f may be NULL.
 */
double loki_fanout_est_get(const struct loki_fanout_est *f, const struct loki_topology *topo, int p,
                           int t, int v, int slot);

#endif
