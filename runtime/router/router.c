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
#include "router_internal.h"

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
    q->batched = 0;
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
    case LOKI_QUERY_CANCELLED:
        break; /* counted by loki_router_cancel() */
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

uint32_t loki__router_q_pop(struct loki_router *r, int i)
{
    struct inst *in = &r->inst[i];
    uint32_t s = loki_edf_pop(sq_pool(r), &in->heap);
    if (s == NIL)
        return NIL;
    r->sqs[s].inst = -1;
    in->qlen--;
    return s;
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
    loki__router_try_dispatch(r, i);
}

/* Re-route @s (queue moved or instance lost); no instance left: fail its root with @fail. */
void loki__router_reroute_or_fail(struct loki_router *r, uint32_t s, enum loki_query_status fail)
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

/* Form and dispatch batches on @i while it has room. */
void loki__router_try_dispatch(struct loki_router *r, int i)
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
                loki__router_q_pop(r, i);
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
                    loki__router_q_pop(r, i);
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
            loki__router_q_pop(r, i);
            q->variant = (uint8_t)var;
            q->batched = 1;
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
            items[k].data = r->sqs[sl->items[k]].data;
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
            loki__router_fail_instance(r, i);
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
static void sq_done(struct loki_router *r, uint32_t s, const uint16_t *kids,
                    const uint32_t *kid_data, uint64_t tn)
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
    uint32_t at = 0;
    for (int c = 0; c < tk->n_children && !rt->finished; c++) {
        for (uint32_t k = 0; k < kids[c] && !rt->finished; k++, at++) {
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
            n->data = kid_data ? kid_data[at] : LOKI_ROUTER_NO_DATA;
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
    return loki_router_batch_done_data(r, i, batch_id, children, NULL, failed);
}

int loki_router_batch_done_data(struct loki_router *r, int i, uint64_t batch_id,
                                const uint16_t *children, const uint32_t *child_data,
                                const uint8_t *failed)
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
    size_t at = 0; /* this item's first word in @child_data */
    for (int k = 0; k < n; k++) {
        uint32_t s = items[k];
        if (failed && failed[k]) {
            r->st.var[p][t][sl->variant].served++;
            sq_fail(r, s, LOKI_QUERY_ERROR);
            continue;
        }
        const uint16_t *kids = children ? children + (size_t)k * (size_t)nc : NULL;
        sq_done(r, s, kids, child_data && kids ? child_data + at : NULL, tn);
        for (int c = 0; kids && c < nc; c++)
            at += kids[c];
    }
    if (in->state == I_DRAINING && in->inflight == 0) {
        loki__router_inst_remove(r, i, true);
        return 0;
    }
    loki__router_try_dispatch(r, i);
    return 0;
}

int loki_router_expire(struct loki_router *r)
{
    uint64_t tn = now(r);
    int n = 0;
    for (int i = 0; i < r->n_inst_hw; i++) {
        struct inst *in = &r->inst[i];
        if (in->state == I_FREE || !in->inflight)
            continue;
        for (int k = 0; k < 2; k++) {
            const struct slot *sl = &in->slot[k];
            if (!sl->id)
                continue;
            uint64_t began = sl->sent > in->last_done ? sl->sent : in->last_done;
            if (tn <= began + ms_ns(sl->lat_ms) + in->margin_ns)
                continue; /* not overdue: its worker is making progress as profiled */
            for (int j = 0; j < sl->n; j++) {
                const struct sq *q = &r->sqs[sl->items[j]];
                struct root *rt = &r->roots[q->root];
                if (!rt->finished && tn > rt->deadline) {
                    finish_root(r, q->root, LOKI_QUERY_DROPPED, q->task, tn);
                    n++;
                }
            }
        }
    }
    return n;
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
    return loki_router_submit_ex(r, p, id, cookie, deadline_ns, NULL);
}

int loki_router_cancel(struct loki_router *r, uint32_t handle, uint64_t cookie)
{
    uint32_t ri = handle;
    if (ri >= r->root_hw)
        return -ENOENT;
    struct root *rt = &r->roots[ri];
    if (rt->finished || rt->cookie != cookie || rt->pending == 0)
        return -ENOENT;
    const struct sq *q = &r->sqs[rt->first_sq];
    /* only while its one sub-query still waits in a queue: nothing of it ran */
    if (rt->n_sub != 1 || q->root != ri || q->batched)
        return -EBUSY;
    /* it leaves its queue when it reaches a batch, as a dropped root's sub-queries do */
    r->st.pipe[rt->pipeline].cancelled++;
    finish_root(r, ri, LOKI_QUERY_CANCELLED, q->task, now(r));
    return 0;
}

int loki_router_submit_ex(struct loki_router *r, int p, uint64_t id, uint64_t cookie,
                          uint64_t deadline_ns, uint32_t *handle)
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
    rt->first_sq = s;
    struct sq *q = &r->sqs[s];
    q->root = ri;
    q->edf.deadline = dl;
    q->edf.seq = ++r->seq;
    q->task = (uint8_t)pl->root;
    q->data = LOKI_ROUTER_NO_DATA;
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
    if (handle)
        *handle = ri;
    return 0;
}
