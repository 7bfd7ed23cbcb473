/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The replay harness: a discrete-event simulation on a virtual clock that
 * drives the real router (loki_router) and planner (loki_planner) with
 * simulated instances executing by profile, so a day-long trace replays in
 * seconds with the exact policy code lokid runs. Also request traces
 * (loading, rescaling) and a dependency-free SVG line-chart writer for the
 * plots. Single-threaded; one replay per call, no global state.
 */
#ifndef LOKI_REPLAY_H
#define LOKI_REPLAY_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "loki/json.h"
#include "loki/model.h"

/* A demand trace: one rate (root queries/s) per step. */
struct loki_trace {
    int n;
    double *rate;  /* queries/s during step i */
    double step_s; /* length of one row in the source (1 for second, 60 for minute traces) */
};

/*
 * Load a `second,requests` or `minute,requests` CSV from @path: rate =
 * requests / row length. Returns 0, -errno, LOKI_EPARSE (bad header or row;
 * @err says where, may be NULL). Release with loki_trace_free().
 */
int loki_trace_load(const char *path, struct loki_trace *out, char *err, size_t errlen);

/* A constant trace of @n steps at @qps. Returns 0 or -ENOMEM. */
int loki_trace_constant(struct loki_trace *out, double qps, int n);

/* Min-max rescale the rates linearly onto [@lo, @hi]. Returns 0 or -EINVAL. */
int loki_trace_rescale(struct loki_trace *t, double lo, double hi);

/* Multiply every rate by @x. */
void loki_trace_scale(struct loki_trace *t, double x);

/*
 * Write @t as a CSV that `loki load` and loki_trace_load() read back: `minute,requests`
 * (requests = rate x 60) when step_s is 60, else `second,requests` (requests = rate).
 * Returns 0 or -EIO.
 */
int loki_trace_write(FILE *f, const struct loki_trace *t);

/* Release the rates (the struct itself is the caller's). */
void loki_trace_free(struct loki_trace *t);

struct loki_replay_config {
    enum loki_policy policy;
    uint64_t seed;
    double step_replay_s; /* replay seconds per trace step (time-scale); 0: 1 */
    double duration_s;    /* stop after this much replay time; 0: the whole trace */
    int early_drop;       /* -1: topology's setting, 0 off, 1 on */
    int reroute;          /* -1: topology's setting, 0 off, 1 on */
    double interval_ms;   /* re-plan period in replay time; 0: topology's planner.interval_ms */
    bool prewarm;         /* instances of the first plan are ready at t = 0 (default in CLI) */
    /*
     * Arrival process. LOKI_ARRIVALS_REPLAY: Poisson per step from the shared
     * xoshiro256** stream (fan-outs draw from it too). LOKI_ARRIVALS_LOAD: the
     * exact arrival times `loki load --seed N` sends for the same trace, rate
     * scale and time scale (its xorshift64* stream, after the @load_payload_bytes
     * draws it spends on the payload), on a stream of their own, for the
     * first pipeline only (loki load drives one).
     */
    int arrivals;
    long load_payload_bytes; /* `loki load --payload-bytes` (its default is 64) */
    /*
     * lokid's control loop rather than the idealised one (for the live cross-check):
     * a plan takes effect only once its solve's measured wall time has passed
     * (lokid solves off its loop thread), no re-plan while a solve or a plan
     * change is still in progress (lokid skips its plan timer meanwhile), and a
     * solved plan that equals the current one is not applied again. Off: re-plan
     * every interval and apply at once every plan the planner does not mark
     * "kept" (deterministic but for the MILP's wall-clock limit).
     */
    bool lokid_loop;
    /*
     * lokid_loop: lokid spawns each new worker (posix_spawn, until the child execs)
     * on its loop thread, which routes nothing meanwhile: every instance a plan
     * change starts keeps the router busy this long, and arrivals, batch completions
     * and timers that fall in that time are handled at its end. 0: no such pause.
     */
    double spawn_ms;
    /* > 0: the first plan is solved for this demand (lokid --initial-demand); 0: row 0's rate */
    double initial_demand;
    /*
     * true: every instance takes @startup_ms from start to ready instead of its
     * variant's startup_ms (the live sim backend does not wait startup_ms: its
     * workers are ready once spawned, tens of milliseconds).
     */
    bool override_startup;
    double startup_ms;
    /*
     * Seed of the fan-out draws' xoshiro256** stream; 0: @seed. Arrivals come from a
     * stream of their own, seeded from @seed (or `loki load --seed`'s generator with
     * LOKI_ARRIVALS_LOAD), so this varies the fan-out draws alone, and policies compared
     * with the same @seed see the very same arrivals.
     */
    uint64_t sim_seed;
};

enum { LOKI_ARRIVALS_REPLAY = 0, LOKI_ARRIVALS_LOAD = 1 };

/* One replay second. Queries are counted in the second they completed. */
struct loki_replay_second {
    double t;        /* start of the second, replay time */
    double demand;   /* root arrivals in this second */
    double estimate; /* planner's demand estimate used by the latest plan */
    double ok, dropped, late, overloaded, error;
    double viol_ratio;     /* (dropped+late+overloaded+error) / completed roots */
    double viol_ratio_sub; /* violating sub-queries / sub-queries of completed roots */
    double accuracy;       /* mean per-root accuracy of ok queries (0 when none) */
    double accuracy_sub;   /* mean per-sub-query accuracy of ok queries */
    double gpus;           /* distinct GPUs holding instances (starting, serving, draining) */
    double solve_ms;       /* planner wall time spent in this second */
    int mode;              /* enum loki_plan_mode of the plan routing now */
};

struct loki_replay_result {
    char policy[16];
    uint64_t seed;
    double replay_s, wall_s;
    uint64_t arrived, ok, dropped, late, error, overloaded;
    uint64_t sub_created, sub_violations, rerouted, events;
    uint64_t fallback;                      /* sub-queries run on an instance's fallback variant */
    uint64_t dropped_stage[LOKI_MAX_TASKS]; /* sub-queries dropped per task (all pipelines) */
    uint64_t batches, batched;              /* batches dispatched and queries in them */
    double viol_ratio;                      /* (dropped + late + error + overloaded) / arrived */
    double viol_ratio_sub;                  /* sub-query violations / sub-queries created */
    double accuracy;                        /* mean per-root accuracy over ok queries */
    double accuracy_sub;                    /* mean per-sub-query accuracy over ok queries */
    double gpu_seconds, gpus_mean, gpus_max;
    double gpus_offpeak;    /* mean GPUs over seconds with demand <= the 25th percentile */
    double gpus_peak;       /* mean GPUs over seconds with demand >= the 75th percentile */
    double demand_offpeak;  /* mean root demand over those off-peak seconds (qps) */
    double latency_ms_mean; /* over ok + late */
    double latency_ms_p50;  /* over ok + late, nearest rank (as `loki load` reports it) */
    double latency_ms_p99;
    double accuracy_ok_late; /* mean per-root accuracy over ok + late (as `loki load`) */
    double gpus_time_mean;   /* GPUs in use (as @gpus), sampled every 100 ms at mid-interval */
    int replans, plan_changes;
    double solve_ms_mean, solve_ms_max;
    double sim_qps;    /* root queries simulated per wall-clock second */
    double sim_subqps; /* sub-queries simulated per wall-clock second */
    int n_seconds;
    struct loki_replay_second *sec; /* n_seconds rows; freed by loki_replay_result_free() */
};

/*
 * Replay @trace against @topo (copied; policy, early_drop and reroute
 * overridden from @cfg) with every pipeline receiving Poisson arrivals at
 * the trace's rate. Deterministic for a seed. Returns 0, -EINVAL, -ENOMEM,
 * or a planner/router error. Release @out with loki_replay_result_free().
 */
int loki_replay_run(const struct loki_topology *topo, const struct loki_trace *trace,
                    const struct loki_replay_config *cfg, struct loki_replay_result *out);

void loki_replay_result_free(struct loki_replay_result *res);

/* Per-second CSV (header + one row per replay second). Returns 0 or -EIO. */
int loki_replay_write_csv(FILE *f, const struct loki_replay_result *res);

/* The summary as a JSON object (jansson): a new reference, or NULL when out of memory. */
json_t *loki_replay_json(const struct loki_replay_result *res);

/* Summary as one JSON object (no trailing newline). Returns 0, -ENOMEM or -EIO. */
int loki_replay_write_json(FILE *f, const struct loki_replay_result *res);

/*
 * Plot one or more results as an SVG with four panels over replay time:
 * demand, accuracy, GPUs in use, SLO violation ratio; one line per result
 * labelled by @labels[i] (NULL: the policy name). @smooth_s averages each
 * series over a moving window (0: none). Returns 0 or -EIO.
 */
int loki_replay_plot_svg(FILE *f, const char *title, const struct loki_replay_result *const *res,
                         const char *const *labels, int n, double smooth_s);

/* ---- the generic SVG helper behind loki_replay_plot_svg (usable by benches) ---- */

struct loki_svg_series {
    const char *name;
    const double *x, *y;
    int n;
};

struct loki_svg_panel {
    const char *title; /* y-axis label */
    const struct loki_svg_series *series;
    int n_series;
    double ymin, ymax; /* ymin == ymax: from the data */
};

/*
 * Stacked line-chart panels sharing an x axis labelled @xlabel. Series i
 * gets colour i in every panel (one legend). Returns 0 or -EIO.
 */
int loki_svg_panels(FILE *f, const char *title, const char *xlabel,
                    const struct loki_svg_panel *panels, int n_panels);

/* Seeded PRNG (xoshiro256**, seeded by splitmix64): same seed, same stream. */
struct loki_rng {
    uint64_t s[4];
};
void loki_rng_seed(struct loki_rng *g, uint64_t seed);
uint64_t loki_rng_next(struct loki_rng *g);
/* Uniform in (0, 1). */
double loki_rng_uniform(struct loki_rng *g);
/* Exponential with rate @rate (> 0). */
double loki_rng_exp(struct loki_rng *g, double rate);
/* A count drawn from @f (Poisson by default). */
unsigned loki_rng_fanout(struct loki_rng *g, const struct loki_fanout *f);

#endif
