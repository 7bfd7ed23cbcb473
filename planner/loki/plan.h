/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A plan: the planner's output and the router's and supervisor's input.
 * Per variant how many instances at which batch size and share; per instance
 * its GPU; per (task, incoming parent variant) the routing split over the
 * task's variants; and what the planner predicts for it. Plain data, heap
 * allocated (about 200 KB), copied with memcpy.
 */
#ifndef LOKI_PLAN_H
#define LOKI_PLAN_H

#include "loki/model.h"

enum loki_plan_mode {
    LOKI_MODE_HARDWARE = 0, /* best variants only, fewest GPUs */
    LOKI_MODE_ACCURACY,     /* all variants, maximise accuracy on all GPUs */
    LOKI_MODE_SERVED,       /* cannot carry demand: maximise served fraction */
    LOKI_MODE_STATIC,       /* fixed plan from the topology */
};

/*
 * Why a plan does not serve all of a pipeline's demand (served_fraction < 1), most basic cause
 * first; LOKI_WHY_NONE when it serves it all. loki_plan.why_text says it in words, naming the
 * task, variant and numbers (loki_plan_why_name() gives the code's name).
 */
enum loki_plan_why {
    LOKI_WHY_NONE = 0,
    LOKI_WHY_LATENCY, /* no variant path the policy may use fits headroom x SLO at batch 1 */
    LOKI_WHY_MEMORY,  /* a task has no variant (the policy may use) that fits one GPU's memory */
    LOKI_WHY_GPUS,    /* the plans that fit the latency budget need more GPUs than there are */
    LOKI_WHY_SOLVER,  /* the solver stopped (time limit, path cap) before it found a plan */
    LOKI_WHY_STATIC,  /* the topology's fixed plan has too little capacity */
};

#define LOKI_WHY_TEXT 320

struct loki_plan_instance {
    int pipeline, task, variant;
    int batch;    /* planned (maximum) batch size */
    double share; /* fraction of one GPU */
    int gpu;      /* 0..gpus.count-1 */
    /*
     * Fallback: 0 none, else 1 + the index of a faster variant of the same task that the
     * instance loads alongside its own (memory counted on its GPU) and that the router runs
     * overflow batches on at once when a burst outruns the plan (loki_plan_fallback()).
     */
    int fallback;
};

/* The fallback variant of @x, or -1. */
static inline int loki_plan_fallback(const struct loki_plan_instance *x)
{
    return x->fallback - 1;
}

struct loki_plan_variant {
    int instances;
    int batch;
    double share;
    double capacity_qps; /* instances * throughput(batch, share) */
    double load_qps;     /* predicted arrivals at this variant under the plan */
    double since_s;      /* planner time at which it last went from 0 to > 0 instances */
    int spares;          /* of @instances, burst spares: no planned traffic (split 0) */
};

struct loki_plan {
    enum loki_policy policy;
    enum loki_plan_mode mode;
    double demand_qps[LOKI_MAX_PIPELINES];      /* root demand planned for */
    double served_fraction[LOKI_MAX_PIPELINES]; /* 1 unless MODE_SERVED */
    double accuracy[LOKI_MAX_PIPELINES]; /* predicted, 0..1, per root query (branches equal) */
    double accuracy_subquery[LOKI_MAX_PIPELINES]; /* predicted, 0..1, each sub-query weighs one */
    double objective;
    double gpus_used; /* sum of shares */
    int gpus_active;  /* GPUs hosting at least one instance */
    double solve_ms;
    double gap; /* relative MIP gap reported by the solver; 0 if optimal */
    int n_instances;
    struct loki_plan_instance inst[LOKI_MAX_INSTANCES];
    struct loki_plan_variant var[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS];
    /*
     * split[p][t][u][v]: fraction of the queries arriving at task t whose
     * parent task was served by variant u that go to variant v of t
     * (root task: u = 0). Sums to 1 over v for every u that carries traffic.
     */
    float split[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS][LOKI_MAX_VARIANTS];
    /* worst planned latency (ms) over the variant paths in use, per chain */
    int n_chains[LOKI_MAX_PIPELINES];
    double chain_latency_ms[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS];
    double created_s;  /* planner time of the solve that produced it */
    bool truncated;    /* some MILP solve thinned (batch, share) options to its path cap */
    bool time_limited; /* some MILP solve stopped at planner.time_limit_ms */
    bool kept;         /* hysteresis kept the current plan (re-evaluated for the new demand) */
    /* per pipeline: why served_fraction < 1 (LOKI_WHY_NONE and "" when it is 1 or no demand) */
    enum loki_plan_why why[LOKI_MAX_PIPELINES];
    char why_text[LOKI_MAX_PIPELINES][LOKI_WHY_TEXT];
};

#endif
