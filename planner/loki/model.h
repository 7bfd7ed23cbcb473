/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The in-memory pipeline model: what a topology file describes (GPUs,
 * pipelines as DAGs of tasks, variants with profiles and fan-outs, planner
 * and frontend settings). The loader in runtime/config fills it; planner/,
 * the router and the replay harness only read it. Plain fixed-size arrays so
 * the model is one allocation (about 2 MB: always on the heap) that never
 * needs freeing piecemeal.
 */
#ifndef LOKI_MODEL_H
#define LOKI_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "loki/limits.h" /* LOKI_MAX_PIPELINES, _TASKS, _VARIANTS, _CHILDREN, _BATCHES, _SHARES */

#define LOKI_NAME_MAX 64
#define LOKI_PATH_MAX 256
#define LOKI_MAX_PATH_ACC 512 /* rows of a measured path-accuracy table */
#define LOKI_MAX_STATIC 64    /* entries of a static plan */

enum loki_backend_kind {
    LOKI_BACKEND_SIM = 0,
    LOKI_BACKEND_CUDA,
    LOKI_BACKEND_PLUGIN, /* path in loki_variant.backend_path */
};

enum loki_fanout_dist {
    LOKI_FANOUT_POISSON = 0, /* default: counts drawn from Poisson(mean) */
    LOKI_FANOUT_CONSTANT,    /* floor(mean) or ceil(mean), preserving the mean */
    LOKI_FANOUT_GEOMETRIC,   /* heavy-ish tail with the given mean */
};

/* How the planning MILP is written (docs/planner.md): its optimum is the same either way. */
enum loki_formulation {
    LOKI_FORMULATION_FLOW = 0, /* default: per-task flows, size linear in the options */
    LOKI_FORMULATION_PATHS,    /* the first one: a column per latency-feasible option path */
};

enum loki_policy {
    LOKI_POLICY_LOKI = 0,
    LOKI_POLICY_INFERLINE,
    LOKI_POLICY_PROTEUS,
    LOKI_POLICY_STATIC,
};

struct loki_fanout {
    double mean; /* expected sub-queries per query, >= 0 */
    enum loki_fanout_dist dist;
};

struct loki_variant {
    char name[LOKI_NAME_MAX];
    double accuracy;   /* 0..100, normalised: best of the task = 100 */
    double mem_mb;     /* GPU memory footprint of one instance */
    double startup_ms; /* time from spawn to ready */
    int n_batches;
    int batches[LOKI_MAX_BATCHES]; /* ascending, >= 1 */
    int n_shares;
    double shares[LOKI_MAX_SHARES]; /* descending; shares[0] == 1.0 always */
    /* latency_ms[s][b]: ms per batch of batches[b] at shares[s]; > 0 */
    double latency_ms[LOKI_MAX_SHARES][LOKI_MAX_BATCHES];
    /*
     * Shares other than 1 were not measured: given by a formula in the file, or derived at load
     * time (loki_topology_derive_shares(): latency at share s = latency at share 1 / s).
     */
    bool share_scaled;
    bool share_derived; /* the shares below 1 were derived by loki_topology_derive_shares() */
    struct loki_fanout fanout[LOKI_MAX_CHILDREN]; /* indexed like task.children */
    enum loki_backend_kind backend;
    char backend_path[LOKI_PATH_MAX]; /* plugin .so for LOKI_BACKEND_PLUGIN */
    /* For the backend only (the planner ignores them): */
    uint32_t max_output_bytes; /* a query's output and child payloads together */
    int n_args;                /* `args:` entries: n_args (key, value) pairs of NUL-ended */
    uint32_t args_off;         /* strings at loki_topology.strings + args_off */
};

struct loki_task {
    char name[LOKI_NAME_MAX];
    int n_variants;
    struct loki_variant variants[LOKI_MAX_VARIANTS];
    int n_children;
    int children[LOKI_MAX_CHILDREN]; /* task indexes in the same pipeline */
    uint32_t input_off; /* `input:` description at loki_topology.strings + input_off; 0 none */
};

/* One row of a measured path-accuracy table: variant index per task on a
 * root-to-leaf chain (-1 for tasks not on the chain). */
struct loki_path_accuracy {
    int variant[LOKI_MAX_TASKS];
    double accuracy; /* 0..100 */
};

struct loki_pipeline {
    char name[LOKI_NAME_MAX];
    double slo_ms;
    int root; /* task index */
    int n_tasks;
    struct loki_task tasks[LOKI_MAX_TASKS];
    int n_path_acc;
    struct loki_path_accuracy path_acc[LOKI_MAX_PATH_ACC];
};

struct loki_gpus {
    int count;
    double mem_mb;            /* per GPU */
    int mps_max_clients;      /* per GPU; 48 on Volta+ MPS */
    double share_granularity; /* 1 = whole GPUs only; 0.25 = quarters */
};

struct loki_static_entry {
    int pipeline, task, variant;
    int instances, batch;
    double share;
};

struct loki_planner_cfg {
    enum loki_policy policy;
    double interval_ms;   /* re-plan period; default 1000 */
    double headroom;      /* h: path latency <= h * SLO; default 0.5 */
    double beta;          /* over-provisioning factor on demand; default 1.35 */
    double ewma_alpha;    /* default 0.385 (com = 1.6) */
    int ewma_windows;     /* default 20 */
    double hysteresis;    /* relative objective gain needed to switch; default 0.02 */
    double min_dwell_s;   /* a variant stays at least this long; default 10 */
    double time_limit_ms; /* GLPK time limit per solve; default 200 */
    double mip_gap;       /* relative gap; default 0.005 */
    int burst_spares;     /* loki, hardware mode: warm spares per loaded task; default 0 */
    bool fallback;        /* loki: instances load a fast fallback variant; default true */
    double demand_sigmas; /* Poisson standard deviations added to the demand planned; default 2 */
    bool early_drop;      /* default true */
    bool reroute;         /* default true */
    /* loki: fewest GPUs over all variants at planned accuracy >= this %; default 0 (off) */
    double accuracy_floor;
    /* loki and inferline: the MILP's formulation (planner.formulation); default flow */
    enum loki_formulation formulation;
    int n_static;
    struct loki_static_entry static_plan[LOKI_MAX_STATIC];
};

struct loki_topology {
    char source[LOKI_PATH_MAX]; /* file it was loaded from */
    struct loki_gpus gpus;
    int n_pipelines;
    struct loki_pipeline pipelines[LOKI_MAX_PIPELINES];
    struct loki_planner_cfg planner;
    /* backend argument and input description strings (offset 0 is the empty string) */
    uint32_t strings_used;
    char strings[LOKI_MAX_STRINGS];
};

/* Fill @cfg with defaults (the values documented in docs/topology.md). */
void loki_topology_defaults(struct loki_topology *t);

/*
 * Latency of @v for batch size @batch at share @share, in ms. Batch sizes
 * between profiled points are interpolated linearly; above the largest
 * profiled batch the result is < 0 (not allowed). A share that is not
 * profiled returns < 0. Pure; any thread.
 */
double loki_variant_latency(const struct loki_variant *v, int batch, double share);

/* Index of share @share in @v->shares, or -1. */
int loki_variant_share_index(const struct loki_variant *v, double share);

/* Throughput of one instance in queries/s at (batch, share); 0 if not allowed. */
double loki_variant_throughput(const struct loki_variant *v, int batch, double share);

/*
 * Give every variant that was profiled on whole GPUs only (one latency row, share 1) the shares
 * the granularity allows, with the conservative model latency(b, s) = latency(b, 1) / s (no free
 * lunch: an instance at a quarter of a GPU is four times slower and has a quarter of the
 * throughput), and mark it share_scaled. The shares derived are the granularity g doubled until
 * 1 (g, 2g, 4g, ... < 1, at most LOKI_MAX_SHARES - 1 of them, the smallest first): with the
 * conservative model a share of 3g is no better than one of 2g plus one of g. Variants with a
 * per-share profile keep exactly the shares they list. Returns how many variants it changed.
 * The topology loader calls it; pure, any thread.
 */
int loki_topology_derive_shares(struct loki_topology *t);

/* Minimum batch-1 whole-GPU latency over the variants of @t (fastest). */
double loki_task_min_latency(const struct loki_task *t);

/*
 * Fastest possible time below task @t of @p: per later task the batch-1 latency of its fastest
 * variant (loki_task_min_latency), summed along each branch, worst branch; 0 for a leaf.
 */
double loki_task_min_below(const struct loki_pipeline *p, int t);

/*
 * Root-to-leaf chains of tasks. A chain is a list of task indexes starting
 * at the root and ending at a task with no children. Returns the number of
 * chains (<= @max) written to @chains, each of length @len[i].
 */
int loki_pipeline_chains(const struct loki_pipeline *p, int chains[][LOKI_MAX_TASKS], int *len,
                         int max);

/* Find a task by name; -1 if none. */
int loki_pipeline_task_index(const struct loki_pipeline *p, const char *name);
/* Find a variant by name; -1 if none. */
int loki_task_variant_index(const struct loki_task *t, const char *name);
/* Find a pipeline by name; -1 if none. */
int loki_topology_pipeline_index(const struct loki_topology *t, const char *name);

/* Index of the child task @child in @t->children, or -1. */
int loki_task_child_slot(const struct loki_task *t, int child);

/* Most accurate variant of a task (ties: the faster). */
int loki_task_best_variant(const struct loki_task *t);

const char *loki_policy_name(enum loki_policy p);
int loki_policy_parse(const char *s, enum loki_policy *out);

#endif
