/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The router: Loki's per-query policy, shared by lokid and the replay harness.
 *
 * Design. A root query becomes a tree of sub-queries. Each sub-query waits in
 * the EDF queue of one instance (an intrusive pairing heap keyed on the
 * root's absolute deadline, FIFO among equals), so nothing is committed to a
 * worker until its batch is formed: that is Loki's late binding, and it is
 * what lets the router drop or reroute up to the last moment.
 *
 *   submit ─▶ route(task, parent variant) ─▶ instance EDF queue ─▶ form batch ─▶ dispatch
 *                ▲                                                   │ drop / reroute
 *                └──── children (fan-out counts) ◀── batch_done ◀────┘
 *
 * Routing. The plan gives split[p][t][u][v]: of the queries reaching task t
 * whose parent ran variant u, the fraction for variant v. A smooth weighted
 * round-robin per (p,t,u) follows it exactly over any window, with no random
 * numbers. A token bucket per variant at its planned capacity notices when
 * real traffic exceeds the plan; the residual goes most-accurate-first to a
 * variant with tokens left. Inside a variant the instance with the least
 * estimated backlog wins, so instances share in proportion to capacity.
 *
 * Batching and dropping. A worker holds at most one executing and one
 * staged batch. An idle instance forms a batch at once from the head of its
 * queue (it never waits, so it never waits past the head's slack); a busy
 * one stages a batch only when a full one is queued. While forming, a query
 * joins only if the batch, started when the instance frees up, still leaves
 * the head query the fastest possible downstream path (batch-1 latency of the
 * fastest variant of every later task, worst branch). A head query that
 * cannot make it even alone is first offered to a strictly faster variant of
 * the same task with an instance that can take it in time (reroute), else
 * dropped now, at the earliest stage, so its fan-out never burns GPU time. A
 * dropped sub-query completes its root as dropped; the root's other
 * sub-queries are discarded when they reach a batch.
 *
 * Fallbacks. An instance that loaded a faster variant of its task beside its
 * own (loki_plan_instance.fallback) runs the next batch on it when its queue,
 * served at the planned batch's rate, would not be through by the head's
 * deadline, or when the head can make it there but not on its own variant:
 * a burst is met on the GPUs in use, at once, at some accuracy.
 *
 * Overrun. Every deadline check for an instance adds how much later than
 * profiled its batches have been coming back (an EWMA, plus twice its
 * jitter): in lokid the rings, wake-ups and the loop's own delays; on the
 * replay's clock 0.
 *
 * Plans change make-before-break: see loki_router_set_plan() in the header.
 * Memory: two pools (roots, sub-queries) with free lists, preallocated at
 * create and touched lazily; an empty pool refuses work with "overloaded".
 * Single-threaded by design: one router actor owns it.
 */
#include "loki/router.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "edf_heap.h"
#include "loki/error.h"

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
    uint32_t pending; /* sub-queries queued or in flight */
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
    uint8_t task, variant, parent_variant, rerouted;
    float acc; /* product of normalised accuracies of the variants that served it so far */
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

static void try_dispatch(struct loki_router *r, int i);
static void update_down(struct loki_router *r);
static void reroute_or_fail(struct loki_router *r, uint32_t s, enum loki_query_status fail);

static inline uint64_t now(struct loki_router *r)
{
    return r->ops.now_ns(r->ctx);
}

static inline uint64_t ms_ns(double ms)
{
    return ms <= 0 ? 0 : (uint64_t)(ms * 1e6);
}

static const struct loki_plan *routing_plan(const struct loki_router *r)
{
    return r->has_active ? &r->active : (r->has_pending ? &r->pending : NULL);
}

/* ---- pools ---------------------------------------------------------------------------------- */

static uint32_t root_alloc(struct loki_router *r)
{
    uint32_t i;
    if (r->root_free != NIL) {
        i = r->root_free;
        r->root_free = r->roots[i].next_free;
    } else if (r->root_hw < r->n_roots) {
        i = r->root_hw++;
    } else {
        return NIL;
    }
    memset(&r->roots[i], 0, sizeof(r->roots[i]));
    r->st.roots_inflight++;
    return i;
}

static void root_release(struct loki_router *r, uint32_t i)
{
    r->roots[i].next_free = r->root_free;
    r->root_free = i;
    r->st.roots_inflight--;
}

static uint32_t sq_alloc(struct loki_router *r)
{
    uint32_t i;
    if (r->sq_free != NIL) {
        i = r->sq_free;
        r->sq_free = r->sqs[i].edf.sibling;
    } else if (r->sq_hw < r->n_sqs) {
        i = r->sq_hw++;
    } else {
        return NIL;
    }
    struct sq *q = &r->sqs[i];
    q->edf.child = q->edf.sibling = NIL;
    q->inst = -1;
    q->rerouted = 0;
    r->st.subs_inflight++;
    return i;
}

/* ---- root completion ------------------------------------------------------------------------ */

static void finish_root(struct loki_router *r, uint32_t ri, enum loki_query_status status,
                        int stage, uint64_t t)
{
    struct root *q = &r->roots[ri];
    if (q->finished)
        return;
    q->finished = 1;
    struct loki_router_pipeline_stats *ps = &r->st.pipe[q->pipeline];
    struct loki_router_completion c;
    memset(&c, 0, sizeof(c));
    c.query_id = q->id;
    c.cookie = q->cookie;
    c.pipeline = q->pipeline;
    c.status = status;
    c.arrival_ns = q->arrival;
    c.deadline_ns = q->deadline;
    c.done_ns = t;
    c.latency_ms = (double)(t - q->arrival) / 1e6;
    c.n_leaves = (int)q->n_leaves;
    c.n_sub = (int)q->n_sub;
    c.n_sub_violations = (int)q->n_viol;
    c.stage = stage;
    memcpy(c.variants, q->variants, sizeof(c.variants));
    if (status == LOKI_QUERY_OK || status == LOKI_QUERY_LATE) {
        double sum = 0;
        int nb = 0;
        for (int b = 0; b < LOKI_MAX_TASKS; b++) {
            if (q->br_cnt[b]) {
                sum += q->br_sum[b] / q->br_cnt[b];
                nb++;
            }
        }
        c.accuracy = nb ? 100.0 * sum / nb : 0;
        c.accuracy_sub = q->n_leaves ? 100.0 * q->sub_acc_sum / q->n_leaves : 0;
        ps->latency_ms_sum += c.latency_ms;
    }
    switch (status) {
    case LOKI_QUERY_OK:
        ps->ok++;
        ps->acc_sum += c.accuracy;
        ps->acc_sub_sum += c.accuracy_sub;
        break;
    case LOKI_QUERY_DROPPED:
        ps->dropped++;
        break;
    case LOKI_QUERY_LATE:
        ps->late++;
        break;
    case LOKI_QUERY_ERROR:
        ps->error++;
        break;
    case LOKI_QUERY_OVERLOADED:
        ps->overloaded++;
        break;
    }
    r->ops.complete(r->ctx, &c);
}

/* Release sub-query @s; completes (ok/late) and frees its root when it was the last one. */
static void sq_release(struct loki_router *r, uint32_t s)
{
    struct sq *q = &r->sqs[s];
    uint32_t ri = q->root;
    q->edf.sibling = r->sq_free;
    r->sq_free = s;
    r->st.subs_inflight--;
    struct root *rt = &r->roots[ri];
    if (--rt->pending == 0) {
        if (!rt->finished)
            finish_root(r, ri, rt->last_done > rt->deadline ? LOKI_QUERY_LATE : LOKI_QUERY_OK, -1,
                        rt->last_done);
        root_release(r, ri);
    }
}

/* Sub-query @s failed (drop, error): its root completes now with @status. */
static void sq_fail(struct loki_router *r, uint32_t s, enum loki_query_status status)
{
    struct sq *q = &r->sqs[s];
    struct root *rt = &r->roots[q->root];
    if (!rt->finished) {
        rt->n_viol++;
        r->st.pipe[rt->pipeline].sub_violations++;
        finish_root(r, q->root, status, q->task, now(r));
    } else {
        r->st.pipe[rt->pipeline].sub_violations++;
    }
    sq_release(r, s);
}

/* ---- EDF queue: intrusive pairing heap (edf_heap.h) over the sub-query pool ----------------- */

static inline struct loki_edf_pool sq_pool(const struct loki_router *r)
{
    return (struct loki_edf_pool){.base = (char *)r->sqs + offsetof(struct sq, edf),
                                  .stride = sizeof(struct sq)};
}

static void q_push(struct loki_router *r, int i, uint32_t s)
{
    struct sq *q = &r->sqs[s];
    loki_edf_push(sq_pool(r), &r->inst[i].heap, s);
    q->inst = (int16_t)i;
    r->inst[i].qlen++;
}

static uint32_t q_pop(struct loki_router *r, int i)
{
    struct inst *in = &r->inst[i];
    uint32_t s = loki_edf_pop(sq_pool(r), &in->heap);
    if (s == NIL)
        return NIL;
    r->sqs[s].inst = -1;
    in->qlen--;
    return s;
}

/* ---- instances ------------------------------------------------------------------------------ */

static inline bool routable(const struct inst *in)
{
    return in->state == I_READY || in->state == I_RETIRING;
}

static const struct loki_variant *inst_variant(const struct loki_router *r, const struct inst *in)
{
    return &r->topo->pipelines[in->pi.pipeline].tasks[in->pi.task].variants[in->pi.variant];
}

/*
 * lat[n], n = 0..max_batch: @v's latency (ms) at batch n and @share; past what is profiled,
 * twice the previous one (never chosen, but finite). Returns the largest n up to which every
 * batch size is profiled (0: none).
 */
static int fill_lat(const struct loki_variant *v, double share, int max_batch, float *lat)
{
    int ok = 0;
    lat[0] = 0;
    for (int n = 1; n <= max_batch; n++) {
        double l = loki_variant_latency(v, n, share);
        if (l <= 0)
            l = lat[n - 1] > 0 ? lat[n - 1] * 2 : 1e6;
        else if (ok == n - 1)
            ok = n;
        lat[n] = (float)l;
    }
    return ok;
}

/* Take @pi's variant, batch cap and share; @fallback (loki_plan_instance.fallback) is what the
 * worker loaded: a kept instance keeps the one it started with. */
static void inst_set_pi(struct loki_router *r, struct inst *in, const struct loki_plan_instance *pi,
                        int fallback)
{
    in->pi = *pi;
    in->pi.fallback = fallback;
    int cap = pi->batch < 1 ? 1 : pi->batch;
    if (cap > r->max_batch)
        cap = r->max_batch;
    int ok = fill_lat(inst_variant(r, in), pi->share, r->max_batch, in->lat);
    if (ok < cap)
        cap = ok;
    in->cap = cap < 1 ? 1 : cap;
    in->fb = -1;
    int fv = loki_plan_fallback(&in->pi);
    if (fv >= 0) {
        const struct loki_variant *f =
            &r->topo->pipelines[pi->pipeline].tasks[pi->task].variants[fv];
        int fc = fill_lat(f, pi->share, r->max_batch, in->fblat);
        if (fc >= 1 && in->fblat[1] < in->lat[1]) {
            in->fb = fv;
            in->fbcap = fc;
        }
    }
}

/* Capacity (queries/s) of @in at its batch cap. */
static double inst_capacity(const struct inst *in)
{
    return in->lat[in->cap] > 0 ? in->cap * 1000.0 / in->lat[in->cap] : 0;
}

static void rebuild_index(struct loki_router *r)
{
    memset(r->vcount, 0, sizeof(r->vcount));
    for (int i = 0; i < r->n_inst_hw; i++) {
        struct inst *in = &r->inst[i];
        if (routable(in))
            r->vcount[in->pi.pipeline][in->pi.task][in->pi.variant]++;
    }
    int off = 0;
    for (int p = 0; p < LOKI_MAX_PIPELINES; p++)
        for (int t = 0; t < LOKI_MAX_TASKS; t++)
            for (int v = 0; v < LOKI_MAX_VARIANTS; v++) {
                r->vfirst[p][t][v] = off;
                off += r->vcount[p][t][v];
                r->vcount[p][t][v] = 0;
            }
    uint64_t t0 = now(r);
    double cap[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS];
    memset(cap, 0, sizeof(cap));
    for (int i = 0; i < r->n_inst_hw; i++) {
        struct inst *in = &r->inst[i];
        if (!routable(in))
            continue;
        int p = in->pi.pipeline, t = in->pi.task, v = in->pi.variant;
        r->vlist[r->vfirst[p][t][v] + r->vcount[p][t][v]++] = i;
        cap[p][t][v] += inst_capacity(in);
    }
    update_down(r);
    /* Buckets hold what the instances can absorb within half an SLO. */
    for (int p = 0; p < r->topo->n_pipelines; p++) {
        double win = r->topo->pipelines[p].slo_ms * 0.5 / 1000.0;
        for (int t = 0; t < r->topo->pipelines[p].n_tasks; t++)
            for (int v = 0; v < LOKI_MAX_VARIANTS; v++) {
                struct bucket *b = &r->vbucket[p][t][v];
                b->rate = cap[p][t][v];
                b->burst = b->rate * win + 1;
                if (b->tokens > b->burst || b->last == 0)
                    b->tokens = b->burst;
                b->last = t0;
            }
    }
}

/*
 * Fastest possible remaining time below each task: per child task the
 * quickest batch-1 latency among the instances that can serve it now (the
 * topology's fastest variant when none can yet), worst branch. A lower
 * bound on what a query still needs, so dropping on it never loses a
 * query that could have made its deadline.
 */
static double down_now(struct loki_router *r, const double fast[LOKI_MAX_TASKS], int p, int t,
                       int depth)
{
    const struct loki_task *tk = &r->topo->pipelines[p].tasks[t];
    double worst = 0;
    for (int c = 0; c < tk->n_children && depth < LOKI_MAX_TASKS; c++) {
        int ch = tk->children[c];
        double l = fast[ch] + down_now(r, fast, p, ch, depth + 1);
        if (l > worst)
            worst = l;
    }
    return worst;
}

static void update_down(struct loki_router *r)
{
    for (int p = 0; p < r->topo->n_pipelines; p++) {
        const struct loki_pipeline *pl = &r->topo->pipelines[p];
        double fast[LOKI_MAX_TASKS];
        for (int t = 0; t < pl->n_tasks; t++) {
            fast[t] = -1;
            for (int v = 0; v < pl->tasks[t].n_variants; v++)
                for (int k = 0; k < r->vcount[p][t][v]; k++) {
                    double l = r->inst[r->vlist[r->vfirst[p][t][v] + k]].lat[1];
                    if (fast[t] < 0 || l < fast[t])
                        fast[t] = l;
                }
            if (fast[t] < 0)
                fast[t] = loki_task_min_latency(&pl->tasks[t]);
        }
        for (int t = 0; t < pl->n_tasks; t++)
            r->down_ms[p][t] = down_now(r, fast, p, t, 0);
    }
}

static int inst_alloc(struct loki_router *r)
{
    for (int i = 0; i < MAX_INST; i++) {
        if (r->inst[i].state == I_FREE) {
            if (i >= r->n_inst_hw)
                r->n_inst_hw = i + 1;
            struct inst *in = &r->inst[i];
            in->heap = NIL;
            in->qlen = 0;
            in->inflight = 0;
            in->handle = 0;
            in->busy_until = 0;
            in->over_ns = 0;
            in->over_dev_ns = 0;
            in->margin_ns = 0;
            in->last_done = 0;
            in->slot[0].id = in->slot[1].id = 0;
            return i;
        }
    }
    return -1;
}

/* Remove @i; its queue must be empty and nothing in flight. */
static void inst_remove(struct loki_router *r, int i, bool notify)
{
    struct inst *in = &r->inst[i];
    uint64_t h = in->handle;
    in->state = I_FREE;
    while (r->n_inst_hw > 0 && r->inst[r->n_inst_hw - 1].state == I_FREE)
        r->n_inst_hw--;
    if (notify && r->ops.instance_stop)
        r->ops.instance_stop(r->ctx, i, h);
}

/* Move every queued query of @i elsewhere. */
static void requeue_all(struct loki_router *r, int i)
{
    uint32_t s;
    while ((s = q_pop(r, i)) != NIL)
        reroute_or_fail(r, s, LOKI_QUERY_OVERLOADED);
}

/* ---- routing -------------------------------------------------------------------------------- */

static bool bucket_take(struct bucket *b, uint64_t t)
{
    if (t > b->last) {
        b->tokens += b->rate * (double)(t - b->last) / 1e9;
        if (b->tokens > b->burst)
            b->tokens = b->burst;
        b->last = t;
    }
    if (b->tokens >= 1) {
        b->tokens -= 1;
        return true;
    }
    return false;
}

/* Estimated ns until @in could start a new query (in-flight work plus its queue). */
static uint64_t inst_backlog(const struct inst *in, uint64_t t)
{
    uint64_t busy = in->busy_until > t ? in->busy_until - t : 0; /* overrun included */
    double per = in->lat[in->cap] / in->cap;
    return busy + ms_ns(per * in->qlen);
}

static int pick_instance(struct loki_router *r, int p, int t, int v, uint64_t tn)
{
    int n = r->vcount[p][t][v], best = -1;
    uint64_t bw = UINT64_MAX;
    for (int k = 0; k < n; k++) {
        int i = r->vlist[r->vfirst[p][t][v] + k];
        uint64_t w = inst_backlog(&r->inst[i], tn);
        if (w < bw) {
            bw = w;
            best = i;
        }
    }
    return best;
}

/* Variant for a query at task @t whose parent ran @u, or -1 when no variant has an instance. */
static int choose_variant(struct loki_router *r, int p, int t, int u, uint64_t tn)
{
    const struct loki_task *tk = &r->topo->pipelines[p].tasks[t];
    const struct loki_plan *pl = routing_plan(r);
    int pick = -1;
    if (pl) {
        const float *w = pl->split[p][t][u];
        float *cur = r->wrr[p][t][u];
        float tot = 0;
        for (int v = 0; v < tk->n_variants; v++) {
            if (w[v] > 0 && r->vcount[p][t][v] > 0) {
                cur[v] += w[v];
                tot += w[v];
                if (pick < 0 || cur[v] > cur[pick])
                    pick = v;
            }
        }
        if (pick >= 0) {
            cur[pick] -= tot;
            if (bucket_take(&r->vbucket[p][t][pick], tn))
                return pick;
        }
    }
    /* Residual (or no split row for this parent): most accurate variant with spare capacity. */
    int best = -1;
    for (int v = 0; v < tk->n_variants; v++) {
        if (r->vcount[p][t][v] == 0 || v == pick)
            continue;
        if (best >= 0 && r->acc[p][t][v] <= r->acc[p][t][best])
            continue;
        const struct bucket *b = &r->vbucket[p][t][v];
        double avail = b->tokens + (tn > b->last ? b->rate * (double)(tn - b->last) / 1e9 : 0);
        if (avail >= 1)
            best = v;
    }
    if (best >= 0) {
        bucket_take(&r->vbucket[p][t][best], tn);
        return best;
    }
    if (pick >= 0)
        return pick;
    for (int v = 0; v < tk->n_variants; v++)
        if (r->vcount[p][t][v] > 0 && (best < 0 || r->acc[p][t][v] > r->acc[p][t][best]))
            best = v;
    return best;
}

/* Any starting instance of task @t (queries wait there before the first plan is ready). */
static int starting_instance(struct loki_router *r, int p, int t)
{
    int best = -1;
    for (int i = 0; i < r->n_inst_hw; i++) {
        struct inst *in = &r->inst[i];
        if (in->state == I_STARTING && in->pi.pipeline == p && in->pi.task == t &&
            (best < 0 || in->qlen < r->inst[best].qlen))
            best = i;
    }
    return best;
}

/* Instance for sub-query @s (task and parent variant set), or -1. */
static int route(struct loki_router *r, uint32_t s, uint64_t tn)
{
    struct sq *q = &r->sqs[s];
    int p = r->roots[q->root].pipeline;
    int v = choose_variant(r, p, q->task, q->parent_variant, tn);
    if (v >= 0)
        return pick_instance(r, p, q->task, v, tn);
    return starting_instance(r, p, q->task);
}

static void enqueue(struct loki_router *r, uint32_t s, int i, bool first)
{
    struct sq *q = &r->sqs[s];
    struct inst *in = &r->inst[i];
    q->variant = (uint8_t)in->pi.variant;
    if (first)
        r->st.var[in->pi.pipeline][q->task][q->variant].arrived++;
    q_push(r, i, s);
    try_dispatch(r, i);
}

/* Re-route @s (queue moved or instance lost); no instance left: fail its root with @fail. */
static void reroute_or_fail(struct loki_router *r, uint32_t s, enum loki_query_status fail)
{
    if (r->roots[r->sqs[s].root].finished) {
        sq_release(r, s);
        return;
    }
    int i = route(r, s, now(r));
    if (i < 0) {
        sq_fail(r, s, fail);
        return;
    }
    enqueue(r, s, i, false);
}

/*
 * Opportunistic reroute of @s, which cannot make its deadline on @from:
 * the most accurate strictly faster variant with an instance that can
 * start it now (idle or room for a staged batch, short queue) in time.
 */
static bool try_reroute(struct loki_router *r, uint32_t s, int from, uint64_t tn)
{
    struct sq *q = &r->sqs[s];
    const struct inst *fi = &r->inst[from];
    int p = fi->pi.pipeline, t = q->task;
    const struct loki_task *tk = &r->topo->pipelines[p].tasks[t];
    double down = r->down_ms[p][t];
    double cur = fi->lat[1];
    int best = -1;
    uint64_t best_fin = 0;
    for (int v = 0; v < tk->n_variants; v++) {
        if (v == fi->pi.variant || r->vcount[p][t][v] == 0 || r->fast1[p][t][v] >= cur)
            continue;
        for (int k = 0; k < r->vcount[p][t][v]; k++) {
            int i = r->vlist[r->vfirst[p][t][v] + k];
            const struct inst *in = &r->inst[i];
            if (in->lat[1] >= cur || in->inflight >= 2 || in->qlen >= (uint32_t)in->cap)
                continue;
            uint64_t start = in->inflight && in->busy_until > tn ? in->busy_until : tn;
            int nb = (int)in->qlen + 1 <= in->cap ? (int)in->qlen + 1 : in->cap;
            uint64_t fin = start + ms_ns(in->lat[nb]) + in->margin_ns;
            if (fin + ms_ns(down) > q->edf.deadline)
                continue;
            if (best < 0 || r->acc[p][t][v] > r->acc[p][t][r->inst[best].pi.variant] ||
                (r->acc[p][t][v] == r->acc[p][t][r->inst[best].pi.variant] && fin < best_fin)) {
                best = i;
                best_fin = fin;
            }
        }
    }
    if (best < 0)
        return false;
    q->rerouted++;
    r->st.var[p][t][r->inst[best].pi.variant].rerouted++;
    r->st.pipe[p].rerouted++;
    enqueue(r, s, best, false);
    return true;
}

/* ---- batching ------------------------------------------------------------------------------- */

static void fail_instance(struct loki_router *r, int i);

/* Form and dispatch batches on @i while it has room. */
static void try_dispatch(struct loki_router *r, int i)
{
    struct inst *in = &r->inst[i];
    const struct loki_topology *topo = r->topo;
    while (routable(in) && in->inflight < 2 && in->qlen > 0) {
        if (in->inflight == 1 && in->qlen < (uint32_t)in->cap)
            return; /* stage only full batches: late binding keeps the rest movable */
        uint64_t tn = now(r);
        uint64_t start = in->inflight && in->busy_until > tn ? in->busy_until : tn;
        int p = in->pi.pipeline, t = in->pi.task;
        /* the fastest path below, plus this instance's overrun margin per batch */
        uint64_t down = ms_ns(r->down_ms[p][t]) + in->margin_ns;
        struct slot *sl = in->slot[0].id == 0 ? &in->slot[0] : &in->slot[1];
        const float *lat = in->lat;
        int cap = in->cap, var = in->pi.variant;
        int n = 0;
        uint64_t head_dl = 0;
        while (in->qlen > 0 && n < cap) {
            uint32_t s = in->heap;
            struct sq *q = &r->sqs[s];
            if (r->roots[q->root].finished) {
                q_pop(r, i);
                sq_release(r, s);
                continue;
            }
            uint64_t fin = start + ms_ns(lat[n + 1]);
            if (n == 0) {
                bool hopeless =
                    topo->planner.early_drop ? fin + down > q->edf.deadline : tn > q->edf.deadline;
                /*
                 * Fallback batch: when the head cannot make it on the instance's own variant,
                 * or the queue behind it, served at the planned batch's rate, would not be
                 * through by the head's deadline (a burst the plan does not cover), run this
                 * batch on the faster variant loaded alongside, if the head makes it there.
                 */
                bool press = hopeless;
                if (!press && in->fb >= 0) {
                    double per = in->lat[in->cap] / in->cap;
                    press = start + ms_ns(per * in->qlen) + down > q->edf.deadline;
                }
                if (press && in->fb >= 0 && lat == in->lat &&
                    start + ms_ns(in->fblat[1]) + down <= q->edf.deadline) {
                    lat = in->fblat;
                    cap = in->fbcap;
                    var = in->fb;
                    hopeless = false;
                }
                if (hopeless) {
                    q_pop(r, i);
                    if (topo->planner.reroute && try_reroute(r, s, i, tn))
                        continue;
                    r->st.var[p][t][in->pi.variant].dropped++;
                    sq_fail(r, s, LOKI_QUERY_DROPPED);
                    continue;
                }
                head_dl = q->edf.deadline;
            } else if (topo->planner.early_drop && fin + down > head_dl) {
                break; /* a bigger batch would make the head miss */
            }
            q_pop(r, i);
            q->variant = (uint8_t)var;
            sl->items[n++] = s;
        }
        if (n == 0)
            continue;
        sl->id = ++r->batch_seq;
        sl->n = n;
        sl->variant = var;
        sl->lat_ms = lat[n];
        in->inflight++;
        sl->sent = tn;
        in->busy_until = start + ms_ns(sl->lat_ms) + in->over_ns;
        r->st.var[p][t][var].batches++;
        if (var != in->pi.variant) {
            r->st.var[p][t][var].fallback += (uint64_t)n;
            r->st.pipe[p].fallback += (uint64_t)n;
        }

        struct loki_router_item items[n];
        for (int k = 0; k < n; k++) {
            struct sq *q = &r->sqs[sl->items[k]];
            items[k].query_id = r->roots[q->root].id;
            items[k].cookie = r->roots[q->root].cookie;
            items[k].sub = sl->items[k];
        }
        struct loki_router_batch b = {
            .instance = i,
            .handle = in->handle,
            .batch_id = sl->id,
            .pipeline = p,
            .task = t,
            .variant = var,
            .n = n,
            .n_children = topo->pipelines[p].tasks[t].n_children,
            .items = items,
            .expect_ms = sl->lat_ms,
        };
        if (r->ops.dispatch(r->ctx, &b) < 0) {
            fail_instance(r, i);
            return;
        }
    }
}

/* ---- completion ----------------------------------------------------------------------------- */

static double path_accuracy(const struct loki_router *r, int p, const struct sq *q)
{
    const struct loki_pipeline *pl = &r->topo->pipelines[p];
    for (int k = 0; k < pl->n_path_acc; k++) {
        const struct loki_path_accuracy *row = &pl->path_acc[k];
        int t;
        for (t = 0; t < pl->n_tasks; t++) {
            int v = q->path[t] == OFF ? -1 : q->path[t];
            if (row->variant[t] != v)
                break;
        }
        if (t == pl->n_tasks)
            return row->accuracy / 100.0;
    }
    return q->acc;
}

/* Sub-query @s finished on its variant at @tn with @kids children per child slot. */
static void sq_done(struct loki_router *r, uint32_t s, const uint16_t *kids, uint64_t tn)
{
    struct sq *q = &r->sqs[s];
    struct root *rt = &r->roots[q->root];
    int p = rt->pipeline, t = q->task, v = q->variant;
    struct loki_router_variant_stats *vs = &r->st.var[p][t][v];
    vs->served++;
    if (rt->finished) {
        sq_release(r, s);
        return;
    }
    if (tn > rt->deadline) {
        vs->late++;
        rt->n_viol++;
        r->st.pipe[p].sub_violations++;
    }
    if (tn > rt->last_done)
        rt->last_done = tn;
    rt->variants[t] |= (uint16_t)(1u << v);
    q->path[t] = (uint8_t)v;
    q->acc *= r->acc[p][t][v];
    const struct loki_task *tk = &r->topo->pipelines[p].tasks[t];
    uint32_t total = 0;
    for (int c = 0; kids && c < tk->n_children; c++) {
        vs->children[c] += kids[c];
        total += kids[c];
    }
    if (total == 0) {
        float a = (float)path_accuracy(r, p, q);
        rt->br_sum[t] += a;
        rt->br_cnt[t]++;
        rt->sub_acc_sum += a;
        rt->n_leaves++;
        sq_release(r, s);
        return;
    }
    for (int c = 0; c < tk->n_children && !rt->finished; c++) {
        for (uint32_t k = 0; k < kids[c] && !rt->finished; k++) {
            uint32_t ns = sq_alloc(r);
            if (ns == NIL) {
                r->st.pool_exhausted++;
                finish_root(r, q->root, LOKI_QUERY_OVERLOADED, tk->children[c], tn);
                break;
            }
            q = &r->sqs[s]; /* sqs does not move, but keep the reload obvious */
            struct sq *n = &r->sqs[ns];
            n->root = q->root;
            n->edf.deadline = q->edf.deadline;
            n->edf.seq = ++r->seq;
            n->task = (uint8_t)tk->children[c];
            n->parent_variant = (uint8_t)v;
            n->acc = q->acc;
            memcpy(n->path, q->path, sizeof(n->path));
            rt->pending++;
            rt->n_sub++;
            r->st.pipe[p].sub_created++;
            int i = route(r, ns, tn);
            if (i < 0) {
                sq_fail(r, ns, LOKI_QUERY_OVERLOADED);
                break;
            }
            enqueue(r, ns, i, true);
        }
    }
    sq_release(r, s); /* last: holds the root while children are created */
}

int loki_router_batch_done(struct loki_router *r, int i, uint64_t batch_id,
                           const uint16_t *children, const uint8_t *failed)
{
    if (i < 0 || i >= r->n_inst_hw || r->inst[i].state == I_FREE || batch_id == 0)
        return -ENOENT;
    struct inst *in = &r->inst[i];
    struct slot *sl = in->slot[0].id == batch_id   ? &in->slot[0]
                      : in->slot[1].id == batch_id ? &in->slot[1]
                                                   : NULL;
    if (!sl)
        return -ENOENT;
    uint64_t tn = now(r);
    sl->id = 0;
    in->inflight--;
    /* It started when it was sent or when the batch before it came back, whichever is later. */
    uint64_t began = sl->sent > in->last_done ? sl->sent : in->last_done;
    uint64_t took = tn > began ? tn - began : 0, prof = ms_ns(sl->lat_ms);
    uint64_t over = took > prof ? took - prof : 0;
    if (over > OVERRUN_MAX_NS)
        over = OVERRUN_MAX_NS;
    uint64_t dev = over > in->over_ns ? over - in->over_ns : in->over_ns - over;
    in->over_ns = (in->over_ns * 7 + over) / 8;
    in->over_dev_ns = (in->over_dev_ns * 7 + dev) / 8;
    in->margin_ns = in->over_ns + 2 * in->over_dev_ns;
    in->last_done = tn;
    /* The staged batch (if any) started when this one finished. */
    struct slot *other = sl == &in->slot[0] ? &in->slot[1] : &in->slot[0];
    in->busy_until = in->inflight ? tn + ms_ns(other->lat_ms) + in->over_ns : tn;
    int p = in->pi.pipeline, t = in->pi.task;
    int nc = r->topo->pipelines[p].tasks[t].n_children;
    int n = sl->n;
    /* Copy the items out: creating children may dispatch into this instance's freed slot. */
    uint32_t items[n];
    memcpy(items, sl->items, sizeof(uint32_t) * (size_t)n);
    for (int k = 0; k < n; k++) {
        uint32_t s = items[k];
        if (failed && failed[k]) {
            r->st.var[p][t][sl->variant].served++;
            sq_fail(r, s, LOKI_QUERY_ERROR);
            continue;
        }
        sq_done(r, s, children ? children + (size_t)k * (size_t)nc : NULL, tn);
    }
    if (in->state == I_DRAINING && in->inflight == 0) {
        inst_remove(r, i, true);
        return 0;
    }
    try_dispatch(r, i);
    return 0;
}

/* ---- plan changes --------------------------------------------------------------------------- */

static void maybe_switch(struct loki_router *r)
{
    if (!r->has_pending)
        return;
    for (int i = 0; i < r->n_inst_hw; i++)
        if (r->inst[i].state == I_STARTING)
            return;
    memcpy(&r->active, &r->pending, sizeof(r->active));
    r->has_active = true;
    r->has_pending = false;
    int drain[MAX_INST], nd = 0;
    for (int i = 0; i < r->n_inst_hw; i++) {
        if (r->inst[i].state == I_RETIRING) {
            r->inst[i].state = I_DRAINING;
            drain[nd++] = i;
        }
    }
    rebuild_index(r);
    /* Admission buckets follow the new plan. */
    uint64_t tn = now(r);
    for (int p = 0; p < r->topo->n_pipelines; p++) {
        struct bucket *b = &r->admit[p];
        double f = r->active.served_fraction[p];
        b->rate = f < 1 ? r->active.demand_qps[p] * f : 0;
        b->burst = b->rate * r->cfg.admission_burst_s + 1;
        if (b->tokens > b->burst || b->last == 0)
            b->tokens = b->burst;
        if (b->last == 0 || b->last > tn)
            b->last = tn;
    }
    for (int k = 0; k < nd; k++) {
        requeue_all(r, drain[k]);
        if (r->inst[drain[k]].inflight == 0)
            inst_remove(r, drain[k], true);
    }
    for (int i = 0; i < r->n_inst_hw; i++)
        if (routable(&r->inst[i]))
            try_dispatch(r, i);
}

int loki_router_set_plan(struct loki_router *r, const struct loki_plan *plan)
{
    if (!plan || plan->n_instances < 0 || plan->n_instances > LOKI_MAX_INSTANCES)
        return -EINVAL;
    for (int k = 0; k < plan->n_instances; k++) {
        const struct loki_plan_instance *pi = &plan->inst[k];
        if (pi->pipeline < 0 || pi->pipeline >= r->topo->n_pipelines || pi->task < 0 ||
            pi->task >= r->topo->pipelines[pi->pipeline].n_tasks || pi->variant < 0 ||
            pi->variant >= r->topo->pipelines[pi->pipeline].tasks[pi->task].n_variants ||
            pi->fallback < 0 ||
            pi->fallback > r->topo->pipelines[pi->pipeline].tasks[pi->task].n_variants ||
            pi->fallback == pi->variant + 1)
            return -EINVAL;
    }
    memcpy(&r->pending, plan, sizeof(r->pending));
    r->has_pending = true;
    for (int i = 0; i < r->n_inst_hw; i++)
        r->inst[i].matched = false;
    int started[LOKI_MAX_INSTANCES], started_k[LOKI_MAX_INSTANCES], ns = 0;
    for (int k = 0; k < plan->n_instances; k++) {
        const struct loki_plan_instance *pi = &plan->inst[k];
        int found = -1;
        for (int i = 0; i < r->n_inst_hw; i++) {
            struct inst *in = &r->inst[i];
            if (in->matched || in->state == I_FREE || in->state == I_DRAINING)
                continue;
            if (in->pi.pipeline == pi->pipeline && in->pi.task == pi->task &&
                in->pi.variant == pi->variant && fabs(in->pi.share - pi->share) < 1e-9 &&
                in->pi.gpu == pi->gpu) {
                if (found < 0 || (r->inst[found].state != I_READY && in->state == I_READY))
                    found = i;
            }
        }
        int fallback = pi->fallback;
        if (found < 0) {
            found = inst_alloc(r);
            if (found < 0)
                return -ENOSPC;
            r->inst[found].state = I_STARTING;
            started_k[ns] = k;
            started[ns++] = found;
        } else {
            fallback = r->inst[found].pi.fallback;
            if (r->inst[found].state == I_RETIRING)
                r->inst[found].state = I_READY;
        }
        r->inst[found].matched = true;
        inst_set_pi(r, &r->inst[found], pi, fallback);
    }
    for (int i = 0; i < r->n_inst_hw; i++) {
        struct inst *in = &r->inst[i];
        if (in->matched || in->state == I_FREE || in->state == I_DRAINING)
            continue;
        if (in->state == I_STARTING) {
            in->state = I_DRAINING; /* never served: nothing in flight */
            requeue_all(r, i);
            inst_remove(r, i, true);
        } else {
            in->state = I_RETIRING;
        }
    }
    for (int k = 0; k < ns; k++) {
        if (r->ops.instance_start)
            r->ops.instance_start(r->ctx, started[k], &plan->inst[started_k[k]]);
        else
            r->inst[started[k]].state = I_READY;
    }
    rebuild_index(r);
    maybe_switch(r);
    return 0;
}

int loki_router_instance_bind(struct loki_router *r, int i, uint64_t handle)
{
    if (i < 0 || i >= r->n_inst_hw || r->inst[i].state == I_FREE)
        return -ENOENT;
    r->inst[i].handle = handle;
    return 0;
}

int loki_router_instance_ready(struct loki_router *r, int i)
{
    if (i < 0 || i >= r->n_inst_hw || r->inst[i].state == I_FREE)
        return -ENOENT;
    struct inst *in = &r->inst[i];
    if (in->state != I_STARTING)
        return 0;
    in->state = I_READY;
    rebuild_index(r);
    try_dispatch(r, i);
    maybe_switch(r);
    return 0;
}

static void fail_instance(struct loki_router *r, int i)
{
    struct inst *in = &r->inst[i];
    in->state = I_DRAINING; /* not routable while its work moves */
    rebuild_index(r);
    for (int k = 0; k < 2; k++) {
        struct slot *sl = &in->slot[k];
        if (sl->id == 0)
            continue;
        int n = sl->n;
        uint32_t items[n];
        memcpy(items, sl->items, sizeof(uint32_t) * (size_t)n);
        sl->id = 0;
        in->inflight--;
        for (int j = 0; j < n; j++)
            reroute_or_fail(r, items[j], LOKI_QUERY_ERROR);
    }
    requeue_all(r, i);
    inst_remove(r, i, false);
    maybe_switch(r);
}

int loki_router_instance_failed(struct loki_router *r, int i)
{
    if (i < 0 || i >= r->n_inst_hw || r->inst[i].state == I_FREE)
        return -ENOENT;
    fail_instance(r, i);
    return 0;
}

/* ---- submit --------------------------------------------------------------------------------- */

static int refuse(struct loki_router *r, int p, uint64_t id, uint64_t cookie, uint64_t tn,
                  uint64_t dl)
{
    struct loki_router_completion c;
    memset(&c, 0, sizeof(c));
    c.query_id = id;
    c.cookie = cookie;
    c.pipeline = p;
    c.status = LOKI_QUERY_OVERLOADED;
    c.arrival_ns = c.done_ns = tn;
    c.deadline_ns = dl;
    c.stage = -1;
    r->st.pipe[p].overloaded++;
    r->ops.complete(r->ctx, &c);
    return LOKI_EOVERLOADED;
}

int loki_router_submit(struct loki_router *r, int p, uint64_t id, uint64_t cookie,
                       uint64_t deadline_ns)
{
    if (p < 0 || p >= r->topo->n_pipelines)
        return -EINVAL;
    uint64_t tn = now(r);
    const struct loki_pipeline *pl = &r->topo->pipelines[p];
    uint64_t dl = tn + ms_ns(pl->slo_ms);
    if (deadline_ns && deadline_ns < dl)
        dl = deadline_ns;
    r->st.pipe[p].arrived++;
    if (r->has_active && r->admit[p].rate > 0 && !bucket_take(&r->admit[p], tn))
        return refuse(r, p, id, cookie, tn, dl);
    uint32_t ri = root_alloc(r);
    if (ri == NIL) {
        r->st.pool_exhausted++;
        return refuse(r, p, id, cookie, tn, dl);
    }
    uint32_t s = sq_alloc(r);
    if (s == NIL) {
        root_release(r, ri);
        r->st.pool_exhausted++;
        return refuse(r, p, id, cookie, tn, dl);
    }
    struct root *rt = &r->roots[ri];
    rt->id = id;
    rt->cookie = cookie;
    rt->arrival = tn;
    rt->deadline = dl;
    rt->pipeline = (uint8_t)p;
    rt->stage = -1;
    rt->pending = 1;
    rt->n_sub = 1;
    struct sq *q = &r->sqs[s];
    q->root = ri;
    q->edf.deadline = dl;
    q->edf.seq = ++r->seq;
    q->task = (uint8_t)pl->root;
    q->parent_variant = 0;
    q->acc = 1.0f;
    memset(q->path, OFF, sizeof(q->path));
    r->st.pipe[p].sub_created++;
    int i = route(r, s, tn);
    if (i < 0) {
        /* Nothing can serve it: undo and refuse. */
        q->edf.sibling = r->sq_free;
        r->sq_free = s;
        r->st.subs_inflight--;
        r->st.pipe[p].sub_created--;
        root_release(r, ri);
        return refuse(r, p, id, cookie, tn, dl);
    }
    enqueue(r, s, i, true);
    return 0;
}

/* ---- create / getters ----------------------------------------------------------------------- */

/* Expected sub-queries per root query below task @t on the most fan-out-heavy variants. */
static double expected_subs(const struct loki_pipeline *p, int t, int depth)
{
    const struct loki_task *tk = &p->tasks[t];
    if (depth > LOKI_MAX_TASKS)
        return 1;
    double best = 0;
    for (int v = 0; v < tk->n_variants; v++) {
        double s = 0;
        for (int c = 0; c < tk->n_children; c++)
            s += tk->variants[v].fanout[c].mean * expected_subs(p, tk->children[c], depth + 1);
        if (s > best)
            best = s;
    }
    return 1 + best;
}

int loki_router_create(const struct loki_topology *topo, const struct loki_router_config *cfg,
                       const struct loki_router_ops *ops, void *ctx, struct loki_router **out)
{
    if (!topo || !ops || !ops->now_ns || !ops->dispatch || !ops->complete || !out ||
        topo->n_pipelines < 1 || topo->n_pipelines > LOKI_MAX_PIPELINES)
        return -EINVAL;
    struct loki_router *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->topo = topo;
    r->ops = *ops;
    r->ctx = ctx;
    if (cfg)
        r->cfg = *cfg;
    if (r->cfg.max_roots == 0)
        r->cfg.max_roots = 65536;
    double subs = 1;
    r->max_batch = 1;
    for (int p = 0; p < topo->n_pipelines; p++) {
        const struct loki_pipeline *pl = &topo->pipelines[p];
        double e = expected_subs(pl, pl->root, 0);
        if (e > subs)
            subs = e;
        for (int t = 0; t < pl->n_tasks; t++) {
            r->down_ms[p][t] = r->down_topo[p][t] = loki_task_min_below(pl, t);
            for (int v = 0; v < pl->tasks[t].n_variants; v++) {
                const struct loki_variant *va = &pl->tasks[t].variants[v];
                r->acc[p][t][v] = (float)(va->accuracy / 100.0);
                r->fast1[p][t][v] = loki_variant_latency(va, 1, 1.0);
                if (va->n_batches > 0 && va->batches[va->n_batches - 1] > r->max_batch)
                    r->max_batch = va->batches[va->n_batches - 1];
            }
        }
    }
    if (r->cfg.max_subqueries == 0) {
        double n = (double)r->cfg.max_roots * subs * 1.5;
        r->cfg.max_subqueries = n > (double)(1u << 22) ? (1u << 22) : (uint32_t)n;
    }
    if (r->cfg.max_subqueries < r->cfg.max_roots)
        r->cfg.max_subqueries = r->cfg.max_roots;
    if (r->cfg.admission_burst_s <= 0)
        r->cfg.admission_burst_s = 0.25;
    r->n_roots = r->cfg.max_roots;
    r->n_sqs = r->cfg.max_subqueries;
    /* calloc: pages are touched only as the pools' high-water marks rise. */
    r->roots = calloc(r->n_roots, sizeof(*r->roots));
    r->sqs = calloc(r->n_sqs, sizeof(*r->sqs));
    float *lat = calloc((size_t)MAX_INST * 2 * (size_t)(r->max_batch + 1), sizeof(float));
    uint32_t *items = calloc((size_t)MAX_INST * 2 * (size_t)r->max_batch, sizeof(uint32_t));
    if (!r->roots || !r->sqs || !lat || !items) {
        free(r->roots);
        free(r->sqs);
        free(lat);
        free(items);
        free(r);
        return -ENOMEM;
    }
    for (int i = 0; i < MAX_INST; i++) {
        r->inst[i].lat = lat + (size_t)i * 2 * (size_t)(r->max_batch + 1);
        r->inst[i].fblat = r->inst[i].lat + r->max_batch + 1;
        r->inst[i].slot[0].items = items + (size_t)i * 2 * (size_t)r->max_batch;
        r->inst[i].slot[1].items = r->inst[i].slot[0].items + r->max_batch;
        r->inst[i].heap = NIL;
    }
    r->root_free = r->sq_free = NIL;
    *out = r;
    return 0;
}

void loki_router_destroy(struct loki_router *r)
{
    if (!r)
        return;
    free(r->inst[0].lat);
    free(r->inst[0].slot[0].items);
    free(r->roots);
    free(r->sqs);
    free(r);
}

const struct loki_router_stats *loki_router_stats(const struct loki_router *r)
{
    return &r->st;
}

int loki_router_instances(const struct loki_router *r, double *gpus)
{
    /* GPUs in use: distinct GPUs holding any instance (starting, serving or retiring), so
     * make-before-break on the same GPU counts it once; instances without a GPU count their
     * share. */
    bool on[LOKI_MAX_INSTANCES] = {0};
    int n = 0;
    double g = 0;
    for (int i = 0; i < r->n_inst_hw; i++) {
        const struct inst *in = &r->inst[i];
        if (in->state == I_FREE)
            continue;
        n++;
        if (in->pi.gpu >= 0 && in->pi.gpu < LOKI_MAX_INSTANCES) {
            g += !on[in->pi.gpu];
            on[in->pi.gpu] = true;
        } else {
            g += in->pi.share;
        }
    }
    if (gpus)
        *gpus = g;
    return n;
}

bool loki_router_is_transitioning(const struct loki_router *r)
{
    return r->has_pending;
}

const struct loki_plan *loki_router_plan(const struct loki_router *r)
{
    return routing_plan(r);
}

int loki_router_queue_len(const struct loki_router *r, int i)
{
    if (i < 0 || i >= r->n_inst_hw || r->inst[i].state == I_FREE)
        return -ENOENT;
    return (int)r->inst[i].qlen;
}
