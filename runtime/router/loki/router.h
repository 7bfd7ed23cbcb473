/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The router: Loki's per-query policy (variant choice by the plan's split,
 * per-instance EDF queues, batching, early drop, opportunistic reroute,
 * fan-out into sub-queries, one completion per root query, admission
 * control, make-before-break plan changes). It sees only a clock and
 * instance handles, so lokid (real workers) and the replay harness (virtual
 * clock) run the same code. Not thread-safe by design: one router actor
 * thread owns a router and makes every call, and every callback runs on
 * that thread, from inside the router call that caused it.
 */
#ifndef LOKI_ROUTER_H
#define LOKI_ROUTER_H

#include <stdbool.h>
#include <stdint.h>

#include "loki/plan.h"

struct loki_router;

enum loki_query_status {
    LOKI_QUERY_OK = 0,     /* every leaf served before the deadline */
    LOKI_QUERY_DROPPED,    /* a sub-query could no longer meet the deadline and was dropped */
    LOKI_QUERY_LATE,       /* served, but the last leaf finished after the deadline */
    LOKI_QUERY_ERROR,      /* a worker reported an error or died with no way to re-run */
    LOKI_QUERY_OVERLOADED, /* refused: admission control, no capacity or pool exhausted */
    LOKI_QUERY_CANCELLED,  /* its client cancelled it before it was batched */
};

/* One entry of a dispatched batch (what the worker runs). */
struct loki_router_item {
    uint64_t query_id; /* the root query's id (as submitted) */
    uint64_t cookie;   /* the root query's cookie (as submitted; e.g. payload reference) */
    uint32_t sub;      /* router-internal sub-query handle, unique while queued/in flight */
    uint32_t data;     /* the caller's word for this sub-query (loki_router_batch_done_data);
                        * LOKI_ROUTER_NO_DATA for a root's first sub-query */
};

#define LOKI_ROUTER_NO_DATA UINT32_MAX

/* A batch handed to an instance. Valid only during the dispatch callback. */
struct loki_router_batch {
    int instance;      /* router instance id */
    uint64_t handle;   /* the caller's handle for it (loki_router_instance_bind) */
    uint64_t batch_id; /* pass back to loki_router_batch_done() */
    int pipeline, task, variant;
    int n;          /* queries, 1 .. planned batch size */
    int n_children; /* child tasks: fan-out counts per query expected back */
    const struct loki_router_item *items;
    double expect_ms; /* profiled latency of this batch at the instance's share */
};

/* The one completion of a root query. Valid only during the callback. */
struct loki_router_completion {
    uint64_t query_id, cookie;
    int pipeline;
    enum loki_query_status status;
    uint64_t arrival_ns, deadline_ns, done_ns;
    double latency_ms;
    double accuracy;      /* 0..100 per root query (leaf branches weigh equally); 0 unless served */
    double accuracy_sub;  /* 0..100 mean over leaf sub-queries (each weighs one) */
    int n_leaves;         /* leaf sub-queries served */
    int n_sub;            /* sub-queries created (root included) */
    int n_sub_violations; /* sub-queries dropped or finished after the deadline */
    int stage;            /* task where it was dropped/failed; -1 otherwise */
    uint16_t variants[LOKI_MAX_TASKS]; /* per task: bit v set when variant v served a sub-query */
};

/*
 * Callbacks into the harness. Each runs on the router thread, inside the
 * router call that triggered it; a callback must not call back into the
 * router except the getters (loki_router_stats() etc.).
 */
struct loki_router_ops {
    /* Required: monotonic time in ns (CLOCK_MONOTONIC live, virtual in replay). */
    uint64_t (*now_ns)(void *ctx);
    /*
     * Required: run @b on its instance (executing if the worker is idle,
     * else staged behind the executing one). Return 0, or < 0 when the
     * worker cannot take it: its queries are then re-routed as for a
     * failed instance and the instance is marked failed.
     */
    int (*dispatch)(void *ctx, const struct loki_router_batch *b);
    /* Required: the one completion of a root query. */
    void (*complete)(void *ctx, const struct loki_router_completion *c);
    /*
     * Optional: the plan needs a new instance of @pi; start a worker, call
     * loki_router_instance_bind() with its handle now or later, and
     * loki_router_instance_ready() once it serves. NULL: instances are
     * ready at once (tests).
     */
    void (*instance_start)(void *ctx, int instance, const struct loki_plan_instance *pi);
    /* Optional: instance @instance holds no work any more and is gone from the router; stop it. */
    void (*instance_stop)(void *ctx, int instance, uint64_t handle);
};

/* Sizing; zeros pick defaults derived from the topology. */
struct loki_router_config {
    uint32_t max_roots; /* in-flight root queries; 0: 65536 (lokid passes frontend.max_inflight) */
    uint32_t max_subqueries;  /* in-flight sub-queries; 0: max_roots x (1 + expected fan-out) */
    double admission_burst_s; /* token-bucket depth in seconds of planned rate; 0: 0.25 */
};

/* Per pipeline counters (cumulative since create). */
struct loki_router_pipeline_stats {
    uint64_t arrived, ok, dropped, late, error, overloaded;
    uint64_t sub_created, sub_violations; /* per sub-query SLO accounting */
    uint64_t rerouted;
    uint64_t cancelled;          /* roots cancelled before they were batched */
    uint64_t fallback;           /* sub-queries run on an instance's fallback variant */
    double acc_sum, acc_sub_sum; /* sums of completion.accuracy(_sub) over ok roots */
    double latency_ms_sum;       /* over ok + late roots */
};

/* Per (pipeline, task, variant) counters (cumulative since create). */
struct loki_router_variant_stats {
    uint64_t arrived;  /* sub-queries enqueued at this variant (first routing) */
    uint64_t served;   /* sub-queries run in a completed batch */
    uint64_t dropped;  /* dropped at this stage */
    uint64_t late;     /* completed here after the deadline */
    uint64_t rerouted; /* moved here from a slower variant to escape a drop */
    uint64_t fallback; /* served here as the fallback of another variant's instance */
    uint64_t batches;
    /* fan-out observations for the planner's estimator: children produced per child slot */
    uint64_t children[LOKI_MAX_CHILDREN];
};

struct loki_router_stats {
    struct loki_router_pipeline_stats pipe[LOKI_MAX_PIPELINES];
    struct loki_router_variant_stats var[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS];
    uint32_t roots_inflight, subs_inflight;
    uint32_t pool_exhausted; /* refusals because a pool ran out */
};

/*
 * Create a router for @topo (borrowed; must outlive the router) with @ops
 * and @ctx (passed to every callback). All memory (query pools sized by
 * @cfg, may be NULL for defaults; instance table) is allocated here.
 * Returns 0, -EINVAL, -ENOMEM. Release with loki_router_destroy().
 */
int loki_router_create(const struct loki_topology *topo, const struct loki_router_config *cfg,
                       const struct loki_router_ops *ops, void *ctx, struct loki_router **out);

/* Release @r. Outstanding queries get no completion. NULL is a no-op. */
void loki_router_destroy(struct loki_router *r);

/*
 * Apply @plan (copied) make-before-break: plan instances are matched to live
 * ones by (pipeline, task, variant, share) and keep their worker (batch caps
 * change in place); missing ones are started (ops->instance_start) and the
 * previous plan keeps routing until every started instance is ready; then
 * the new split takes over and unmatched instances drain: they get no new
 * queries, their queued queries are re-routed, and once their in-flight
 * batches return they are stopped (ops->instance_stop). Admission control
 * follows plan->served_fraction. Returns 0, -EINVAL, -ENOSPC (instance table full).
 */
int loki_router_set_plan(struct loki_router *r, const struct loki_plan *plan);

/* Associate the caller's @handle (worker id, ring...) with @instance. Returns 0 or -ENOENT. */
int loki_router_instance_bind(struct loki_router *r, int instance, uint64_t handle);

/* Instance @instance finished starting and may receive batches. Returns 0 or -ENOENT. */
int loki_router_instance_ready(struct loki_router *r, int instance);

/*
 * Instance @instance died: its in-flight batches are re-routed to other
 * instances of the same task (queries that cannot be placed complete with
 * LOKI_QUERY_ERROR), its queue is re-routed, and it is removed (no
 * instance_stop). Returns 0 or -ENOENT.
 */
int loki_router_instance_failed(struct loki_router *r, int instance);

/*
 * Submit a root query. @deadline_ns: 0 for arrival + SLO, else the client's
 * absolute deadline (the tighter of the two is used). Exactly one
 * completion follows for every call, possibly from inside this call
 * (refusals). Returns 0 when queued, LOKI_EOVERLOADED when refused
 * (admission control, no instance, pool exhausted; completion already
 * delivered with LOKI_QUERY_OVERLOADED), -EINVAL for a bad pipeline
 * (no completion).
 */
/* As loki_router_submit; when queued (0), *@handle names the root for loki_router_cancel(). */
int loki_router_submit_ex(struct loki_router *r, int pipeline, uint64_t query_id, uint64_t cookie,
                          uint64_t deadline_ns, uint32_t *handle);
/*
 * Cancel root @handle (from loki_router_submit_ex; @cookie as submitted, so a reused handle is
 * told apart) while nothing of it has been batched: it completes now with
 * LOKI_QUERY_CANCELLED. Returns 0, -EBUSY (a batch holds part of it already: it runs on and
 * completes as usual) or -ENOENT (finished or unknown).
 */
int loki_router_cancel(struct loki_router *r, uint32_t handle, uint64_t cookie);
int loki_router_submit(struct loki_router *r, int pipeline, uint64_t query_id, uint64_t cookie,
                       uint64_t deadline_ns);

/*
 * Batch @batch_id of @instance finished. @children: n x n_children counts
 * (row per batch item, in dispatch order) of sub-queries to create per
 * child task, or NULL for none; @failed: NULL, or n flags (non-zero: that
 * query failed). Unknown (e.g. re-routed after a failure) batches are
 * ignored: returns -ENOENT. Returns 0.
 */
int loki_router_batch_done(struct loki_router *r, int instance, uint64_t batch_id,
                           const uint16_t *children, const uint8_t *failed);

/*
 * loki_router_expire - answer what a stalled worker holds by its deadline: every root with a
 * sub-query in a batch that is overdue (past its profiled latency plus the instance's
 * overrun margin, counted from when it could start) and whose deadline has passed completes
 * now as LOKI_QUERY_DROPPED; the batch's result, if it ever comes, is ignored for it. Call
 * it periodically (lokid: every 20 ms). Returns how many roots it completed.
 */
int loki_router_expire(struct loki_router *r);
/*
 * loki_router_batch_done_data - as loki_router_batch_done, and @child_data (NULL: none) gives
 * each child sub-query created the caller's word, returned in its loki_router_item.data: one
 * per child, for item 0's child task 0 first, then its later tasks, then item 1's, ... (the
 * sum of @children in that order; failed items have none). Children not created (the root
 * finished, the pool ran out) simply never show their word.
 */
int loki_router_batch_done_data(struct loki_router *r, int instance, uint64_t batch_id,
                                const uint16_t *children, const uint32_t *child_data,
                                const uint8_t *failed);

/* Counters (cumulative). The pointer stays valid for the router's life. */
const struct loki_router_stats *loki_router_stats(const struct loki_router *r);

/* Instances live in the router (starting, ready or draining); @gpus_in_use: the distinct GPUs
 * they occupy (instances placed on no GPU count their share). */
int loki_router_instances(const struct loki_router *r, double *gpus_in_use);

/* True while a plan change waits for new instances to become ready. */
bool loki_router_is_transitioning(const struct loki_router *r);

/* The plan routing now (NULL before the first set_plan). */
const struct loki_plan *loki_router_plan(const struct loki_router *r);

/* Queued (not dispatched) sub-queries at @instance, or -ENOENT. */
int loki_router_queue_len(const struct loki_router *r, int instance);

#endif
