/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The router's instances and plans (see router.c for the design): the instance table and its
 * per-variant index, latency tables at each instance's share, the fastest path below each
 * task, make-before-break plan changes (loki_router_set_plan), worker lifecycle events, and
 * create/destroy/getters.
 */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "loki/error.h"
#include "router_internal.h"

/* ---- instances ------------------------------------------------------------------------------ */

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
    loki__router_update_down(r);
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

void loki__router_update_down(struct loki_router *r)
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
void loki__router_inst_remove(struct loki_router *r, int i, bool notify)
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
    while ((s = loki__router_q_pop(r, i)) != NIL)
        loki__router_reroute_or_fail(r, s, LOKI_QUERY_OVERLOADED);
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
            loki__router_inst_remove(r, drain[k], true);
    }
    for (int i = 0; i < r->n_inst_hw; i++)
        if (routable(&r->inst[i]))
            loki__router_try_dispatch(r, i);
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
            loki__router_inst_remove(r, i, true);
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
    loki__router_try_dispatch(r, i);
    maybe_switch(r);
    return 0;
}

void loki__router_fail_instance(struct loki_router *r, int i)
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
            loki__router_reroute_or_fail(r, items[j], LOKI_QUERY_ERROR);
    }
    requeue_all(r, i);
    loki__router_inst_remove(r, i, false);
    maybe_switch(r);
}

int loki_router_instance_failed(struct loki_router *r, int i)
{
    if (i < 0 || i >= r->n_inst_hw || r->inst[i].state == I_FREE)
        return -ENOENT;
    loki__router_fail_instance(r, i);
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
