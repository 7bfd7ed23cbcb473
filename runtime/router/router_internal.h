/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The router's state, shared by its two files: router.c (pools, routing, batching,
 * completion, submit: the per-query path) and router_plan.c (instances, plan changes,
 * create and getters). Internal: nothing outside runtime/router includes it.
 */
#ifndef LOKI_ROUTER_INTERNAL_H
#define LOKI_ROUTER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "edf_heap.h"
#include "loki/router.h"

#define NIL LOKI_EDF_NIL
#define OFF 0xff
#define MAX_INST LOKI_MAX_INSTANCE_IDS
#define OVERRUN_MAX_NS (20 * 1000000ull) /* one stall counts at most this much */

enum inst_state {
    I_FREE = 0,
    I_STARTING, /* started, not ready: queues only while nothing else can serve */
    I_READY,
    I_RETIRING, /* not in the pending plan; serves until the pending plan is ready */
    I_DRAINING, /* no new queries; stopped once its in-flight batches return */
};

struct root {
    uint64_t id, cookie;
    uint64_t arrival, deadline, last_done;
    uint32_t pending;  /* sub-queries queued or in flight */
    uint32_t first_sq; /* its first sub-query (the root task's) */
    uint32_t next_free;
    uint32_t n_sub, n_viol, n_leaves;
    uint8_t pipeline, finished, status;
    int8_t stage;
    float sub_acc_sum;
    float br_sum[LOKI_MAX_TASKS];
    uint16_t br_cnt[LOKI_MAX_TASKS];
    uint16_t variants[LOKI_MAX_TASKS];
};

struct sq {
    struct loki_edf_node edf; /* its instance's EDF queue; edf.sibling doubles as free-list link */
    uint32_t root;
    int16_t inst;
    uint32_t data; /* the caller's word (loki_router_item.data) */
    uint8_t task, variant, parent_variant, rerouted;
    uint8_t batched; /* dispatched (a cancel can no longer take it back) */
    float acc;       /* product of normalised accuracies of the variants that served it so far */
    uint8_t path[LOKI_MAX_TASKS];
};

struct slot {
    uint64_t id;   /* 0: empty */
    uint64_t sent; /* when it was dispatched */
    int n;
    int variant; /* what it runs: the instance's variant or its fallback */
    double lat_ms;
    uint32_t *items; /* sq indexes */
};

struct inst {
    enum inst_state state;
    struct loki_plan_instance pi;
    uint64_t handle;
    int cap;
    bool matched;
    uint32_t heap, qlen;
    int inflight;
    uint64_t busy_until;
    /*
     * Overrun: how much later than profiled this instance's batches come back (EWMA of
     * completion - start - profiled latency, clamped at 0..OVERRUN_MAX_NS), i.e. the real
     * cost of a hop (rings, wake-ups, the worker's timer) the profile does not include.
     * It plus twice its jitter is added to every deadline check the router makes for the
     * instance (a query just inside the profile goes to the fallback instead of arriving
     * late); 0 on the replay's exact clock.
     */
    uint64_t over_ns;
    uint64_t over_dev_ns; /* EWMA of |overrun - over_ns|: its jitter */
    uint64_t margin_ns;   /* over_ns + 2 over_dev_ns: what deadline checks add */
    uint64_t last_done;   /* when its previous batch came back */
    struct slot slot[2];
    float *lat; /* lat[n], n = 1..max_batch, ms at this share */
    int fb;     /* fallback variant loaded alongside, or -1 */
    int fbcap;
    float *fblat; /* the fallback's lat[n] at this share */
};

struct bucket {
    double tokens, rate, burst;
    uint64_t last;
};

struct loki_router {
    const struct loki_topology *topo;
    struct loki_router_ops ops;
    void *ctx;
    struct loki_router_config cfg;
    int max_batch;

    struct root *roots;
    uint32_t n_roots, root_hw, root_free;
    struct sq *sqs;
    uint32_t n_sqs, sq_hw, sq_free;
    uint64_t seq, batch_seq;

    struct inst inst[MAX_INST];
    int n_inst_hw;
    /* routable (ready or retiring) instances per variant: vfirst/vcount into vlist */
    int vfirst[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS];
    int vcount[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS];
    int vlist[MAX_INST];
    struct bucket vbucket[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS];
    struct bucket admit[LOKI_MAX_PIPELINES];
    float wrr[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS][LOKI_MAX_VARIANTS];

    double down_ms[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS];   /* fastest path below a task, now */
    double down_topo[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS]; /* same over every variant */
    float acc[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS];    /* 0..1 */
    double fast1[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS]; /* batch 1, share 1 */

    bool has_active, has_pending;
    struct loki_plan active, pending;
    struct loki_router_stats st;
};

static inline uint64_t now(struct loki_router *r)
{
    return r->ops.now_ns(r->ctx);
}

static inline uint64_t ms_ns(double ms)
{
    return ms <= 0 ? 0 : (uint64_t)(ms * 1e6);
}

static inline const struct loki_plan *routing_plan(const struct loki_router *r)
{
    return r->has_active ? &r->active : (r->has_pending ? &r->pending : NULL);
}

static inline bool routable(const struct inst *in)
{
    return in->state == I_READY || in->state == I_RETIRING;
}

/* router.c */
void loki__router_try_dispatch(struct loki_router *r, int i);
void loki__router_reroute_or_fail(struct loki_router *r, uint32_t s, enum loki_query_status fail);
uint32_t loki__router_q_pop(struct loki_router *r, int i); /* its instance's EDF head, or NIL */
/* router_plan.c */
void loki__router_update_down(struct loki_router *r);
void loki__router_inst_remove(struct loki_router *r, int i, bool notify);
void loki__router_fail_instance(struct loki_router *r, int i);

#endif
