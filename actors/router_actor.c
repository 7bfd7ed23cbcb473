/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The router actor (see router_actor.h): root slots, the payload arena, the batches each
 * worker holds, replies, and restarts. The router decides; this file carries its decisions
 * to the supervisor and the frontend and brings results back.
 *
 * A root slot is named by a cookie, slot | generation << 32, that travels with every
 * sub-query of the root: a result that comes back for a root already answered (a sibling
 * dropped it) finds a different generation and is ignored. Buffers sized by the largest
 * batch (LOKI_MAX_BATCH at most) are allocated at creation and when an instance id is first
 * used, never per query.
 */
#include "router_actor.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "frontend.h"
#include "loki/arena.h"
#include "loki/batch.h"
#include "loki/clock.h"
#include "loki/compiler.h"
#include "loki/error.h"
#include "loki/limits.h"
#include "loki/log.h"
#include "loki/metrics.h"
#include "loki/proto.h"
#include "loki/router.h"

struct root {
    bool used;
    uint32_t gen; /* bumped per use: a late result for a finished root is recognised */
    struct loki_frontend_conn *conn;
    uint64_t id;
    uint64_t arrival_ns;
    bool queued_seen; /* queueing time recorded (first dispatch of its root task) */
    struct loki_arena_ref payload;
    uint16_t n_out;
    uint8_t out_len[LOKI_MAX_REPLY_OUTPUTS];
    uint8_t out[LOKI_MAX_REPLY_OUTPUTS][LOKI_MAX_INLINE_OUTPUT];
};

/* A batch a worker holds: what its result needs to find its roots again. */
struct inflight {
    uint64_t batch_id, t_ns;
    int pipeline, task, variant, n;
    uint64_t *cookies; /* [max_batch]: each query's root cookie */
};

struct inst {
    bool live;
    int n_inflight;
    struct inflight b[LOKI_MAX_BATCH_INFLIGHT];
    unsigned restarts;
};

struct loki_router_actor {
    struct loki_router_actor_config cfg;
    struct loki_router_actor_ops ops;
    void *ctx;
    const struct loki_topology *topo;
    struct loki_router *router;
    struct loki_sup *sup;
    int max_batch; /* the topology's largest profiled batch size */
    struct root *roots;
    uint32_t *free_roots, n_free;
    struct inst inst[LOKI_MAX_INSTANCE_IDS];
    /* scratch for one batch, [max_batch] (x LOKI_MAX_CHILDREN) */
    struct loki_batch_query *q;
    uint16_t *children, *packed;
    uint8_t *failed;
    uv_timer_t restart_timer;
    bool draining;
    struct loki_plan *plan_restart;
    struct loki_reply reply; /* scratch: large, encoded before reuse */
    char paths[LOKI_MAX_TASKS * 8][LOKI_PROTO_PATH_STR_MAX / 8];
};

uint64_t loki_deadline_ns(uint64_t now_ns, double deadline_ms)
{
    double ns = deadline_ms * 1e6;
    /* (uint64_t) of a double at or past 2^64 is undefined; 2^62 ns is 146 years, beyond any
     * SLO, and leaves room for now_ns */
    if (!(ns < 0x1p62))
        return 0;
    return now_ns + (uint64_t)ns;
}

/* ---- replies ------------------------------------------------------------------------------- */

/* The variant paths a completed root took, one string per chain ("det-a>cls-b|cls-c"). */
static void path_strings(struct loki_router_actor *ra, const struct loki_router_completion *c)
{
    const struct loki_pipeline *p = &ra->topo->pipelines[c->pipeline];
    int chains[LOKI_MAX_TASKS * 8][LOKI_MAX_TASKS], len[LOKI_MAX_TASKS * 8];
    int n = loki_pipeline_chains(p, chains, len, LOKI_MAX_TASKS * 8);
    ra->reply.n_paths = 0;
    for (int ch = 0; ch < n && ra->reply.n_paths < LOKI_PROTO_MAX_PATHS; ch++) {
        char *s = ra->paths[ra->reply.n_paths];
        size_t cap = sizeof(ra->paths[0]), k = 0;
        bool any = false;
        s[0] = 0;
        for (int i = 0; i < len[ch]; i++) {
            int t = chains[ch][i];
            if (!c->variants[t])
                break; /* this chain ended early (no sub-queries for it) */
            if (i && k + 1 < cap)
                s[k++] = '>';
            bool first = true;
            for (int v = 0; v < p->tasks[t].n_variants; v++) {
                if (!(c->variants[t] & (1u << v)))
                    continue;
                int w = snprintf(s + k, cap - k, "%s%s", first ? "" : "|",
                                 p->tasks[t].variants[v].name);
                if (w > 0)
                    k = k + (size_t)w < cap ? k + (size_t)w : cap - 1;
                first = false;
                any = true;
            }
        }
        if (!any)
            continue;
        /* chains share their prefix: keep a path only if not already listed */
        bool dup = false;
        for (uint32_t j = 0; j < ra->reply.n_paths; j++)
            dup |= !strcmp(ra->paths[j], s);
        if (!dup) {
            ra->reply.paths[ra->reply.n_paths] = loki_bytes_str(s);
            ra->reply.n_paths++;
        }
    }
}

static enum loki_status map_status(enum loki_query_status s)
{
    switch (s) {
    case LOKI_QUERY_OK:
        return LOKI_STATUS_OK;
    case LOKI_QUERY_DROPPED:
        return LOKI_STATUS_DROPPED;
    case LOKI_QUERY_LATE:
        return LOKI_STATUS_LATE;
    case LOKI_QUERY_OVERLOADED:
        return LOKI_STATUS_OVERLOADED;
    default:
        return LOKI_STATUS_ERROR;
    }
}

/* Answer request @id at once with @status (overloaded ones carry the retry hint). */
static void reply_now(struct loki_router_actor *ra, struct loki_frontend_conn *conn, uint64_t id,
                      enum loki_status status, const char *why)
{
    struct loki_reply *rep = &ra->reply;
    memset(rep, 0, offsetof(struct loki_reply, outputs));
    rep->status = status;
    if (status == LOKI_STATUS_OVERLOADED) {
        rep->has_retry_after = true;
        rep->retry_after_ms = ra->cfg.retry_after_ms;
    }
    rep->error = loki_bytes_str(why);
    loki_frontend_reply(conn, id, rep);
}

static void release_root(struct loki_router_actor *ra, uint32_t c)
{
    struct root *r = &ra->roots[c];
    if (r->payload.len)
        loki_arena_free(loki_sup_arena(ra->sup), r->payload);
    r->used = false;
    r->conn = NULL;
    ra->free_roots[ra->n_free++] = c;
}

/* ---- router callbacks ---------------------------------------------------------------------- */

static uint64_t r_now(void *ctx)
{
    (void)ctx;
    return loki_now_ns();
}

static int r_dispatch(void *ctx, const struct loki_router_batch *b)
{
    struct loki_router_actor *ra = ctx;
    if (b->instance < 0 || b->instance >= LOKI_MAX_INSTANCE_IDS || b->n < 1 || b->n > ra->max_batch)
        return -EINVAL;
    struct inst *in = &ra->inst[b->instance];
    if (in->n_inflight >= LOKI_MAX_BATCH_INFLIGHT)
        return -EBUSY;
    struct inflight *f = &in->b[in->n_inflight];
    LOKI_BUG_ON(!f->cookies); /* allocated when the instance started */
    uint64_t tn = loki_now_ns();
    bool root_task = b->task == ra->topo->pipelines[b->pipeline].root;
    f->batch_id = b->batch_id;
    f->t_ns = tn;
    f->pipeline = b->pipeline;
    f->task = b->task;
    f->variant = b->variant;
    f->n = b->n;
    for (int i = 0; i < b->n; i++) {
        uint64_t c = b->items[i].cookie;
        struct root *r = &ra->roots[(uint32_t)c];
        f->cookies[i] = c;
        if (root_task && !r->queued_seen) {
            r->queued_seen = true;
            loki_metrics_queue_time(ra->cfg.metrics, b->pipeline,
                                    (double)(tn - r->arrival_ns) / 1e9);
        }
        ra->q[i].query_id = b->items[i].query_id;
        ra->q[i].sub_query_id = b->items[i].sub;
        ra->q[i].deadline_ns = 0;
        ra->q[i].payload = r->payload;
    }
    struct loki_batch_desc desc = {.batch_id = b->batch_id,
                                   .instance_id = (uint32_t)b->instance,
                                   .variant = (uint32_t)b->variant,
                                   .n_queries = (uint32_t)b->n,
                                   .queries = ra->q};
    int rc = loki_sup_send(ra->sup, b->instance, &desc);
    if (rc)
        return rc;
    in->n_inflight++;
    loki_metrics_batch(ra->cfg.metrics, b->pipeline, b->task, b->variant, b->n);
    return 0;
}

static void r_complete(void *ctx, const struct loki_router_completion *c)
{
    struct loki_router_actor *ra = ctx;
    uint32_t slot = (uint32_t)c->cookie;
    struct root *r = &ra->roots[slot];
    struct loki_reply *rep = &ra->reply;
    LOKI_BUG_ON(!r->used || r->gen != (uint32_t)(c->cookie >> 32));
    bool served = c->status == LOKI_QUERY_OK || c->status == LOKI_QUERY_LATE;
    if (served)
        loki_metrics_e2e(ra->cfg.metrics, c->pipeline, c->latency_ms / 1e3);
    const struct loki_pipeline *pl = &ra->topo->pipelines[c->pipeline];
    const char *stage = c->stage >= 0 && c->stage < pl->n_tasks ? pl->tasks[c->stage].name : "-";
    if (c->status == LOKI_QUERY_ERROR)
        loki_log_query(LOKI_LOG_WARN, "query %llu (%s) failed at %s", (unsigned long long)r->id,
                       pl->name, stage);
    else if (c->status == LOKI_QUERY_DROPPED)
        loki_log_query(LOKI_LOG_DEBUG, "query %llu (%s) dropped at %s after %.1f ms",
                       (unsigned long long)r->id, pl->name, stage, c->latency_ms);
    memset(rep, 0, offsetof(struct loki_reply, outputs));
    rep->status = map_status(c->status);
    rep->accuracy = c->accuracy;
    rep->latency_ms = c->latency_ms;
    if (served) {
        for (int i = 0; i < r->n_out; i++) {
            rep->outputs[i].ptr = r->out[i];
            rep->outputs[i].len = r->out_len[i];
        }
        rep->n_outputs = r->n_out;
        path_strings(ra, c);
    }
    if (c->status == LOKI_QUERY_OVERLOADED) {
        rep->has_retry_after = true;
        rep->retry_after_ms = ra->cfg.retry_after_ms;
        rep->error = loki_bytes_str("planned capacity exceeded; retry later");
    } else if (c->status == LOKI_QUERY_DROPPED) {
        rep->error = loki_bytes_str("could no longer meet its deadline; dropped early");
    } else if (c->status == LOKI_QUERY_ERROR) {
        rep->error = loki_bytes_str("a worker failed while serving this query");
    }
    loki_frontend_reply(r->conn, r->id, rep);
    release_root(ra, slot);
}

static void r_instance_start(void *ctx, int instance, const struct loki_plan_instance *pi)
{
    struct loki_router_actor *ra = ctx;
    const struct loki_variant *v =
        &ra->topo->pipelines[pi->pipeline].tasks[pi->task].variants[pi->variant];
    if (instance < 0 || instance >= LOKI_MAX_INSTANCE_IDS) {
        loki_log(LOKI_LOG_ERROR, "router instance id %d beyond LOKI_MAX_INSTANCE_IDS", instance);
        loki_router_instance_failed(ra->router, instance);
        return;
    }
    struct inst *in = &ra->inst[instance];
    for (int k = 0; k < LOKI_MAX_BATCH_INFLIGHT; k++)
        if (!in->b[k].cookies &&
            !(in->b[k].cookies = malloc(sizeof(uint64_t) * (size_t)ra->max_batch))) {
            loki_log(LOKI_LOG_ERROR, "start worker %d (%s): out of memory", instance, v->name);
            loki_router_instance_failed(ra->router, instance);
            return;
        }
    int rc = loki_sup_start(ra->sup, instance, pi);
    if (rc) {
        loki_log(LOKI_LOG_ERROR, "start worker %d (%s): %s", instance, v->name, loki_strerror(rc));
        loki_router_instance_failed(ra->router, instance);
        return;
    }
    in->live = true;
    in->n_inflight = 0;
    loki_router_instance_bind(ra->router, instance, (uint64_t)instance);
    int fv = loki_plan_fallback(pi);
    loki_log(LOKI_LOG_INFO, "worker %d starting: %s batch %d share %.2f gpu %d pid %d%s%s",
             instance, v->name, pi->batch, pi->share, pi->gpu, loki_sup_pid(ra->sup, instance),
             fv >= 0 ? " fallback " : "",
             fv >= 0 ? ra->topo->pipelines[pi->pipeline].tasks[pi->task].variants[fv].name : "");
}

static void r_instance_stop(void *ctx, int instance, uint64_t handle)
{
    struct loki_router_actor *ra = ctx;
    (void)handle;
    if (instance >= 0 && instance < LOKI_MAX_INSTANCE_IDS) {
        ra->inst[instance].live = false;
        loki_sup_stop(ra->sup, instance);
        loki_log(LOKI_LOG_INFO, "worker %d stopping (plan change)", instance);
    }
}

/* ---- supervisor callbacks ------------------------------------------------------------------ */

static void s_ready(void *ctx, int inst)
{
    struct loki_router_actor *ra = ctx;
    loki_router_instance_ready(ra->router, inst);
    loki_log(LOKI_LOG_INFO, "worker %d ready", inst);
}

static void s_result(void *ctx, int inst, struct loki_batch_view *v)
{
    struct loki_router_actor *ra = ctx;
    if (inst < 0 || inst >= LOKI_MAX_INSTANCE_IDS)
        return;
    struct inst *in = &ra->inst[inst];
    int k = -1;
    for (int i = 0; i < in->n_inflight; i++)
        if (in->b[i].batch_id == v->batch_id)
            k = i;
    if (k < 0)
        return; /* a batch the router already re-ran elsewhere */
    /* keep the batch's cookies: its slot's buffer moves to the end with it */
    struct inflight f = in->b[k];
    loki_metrics_compute(ra->cfg.metrics, f.pipeline, f.task, f.variant,
                         (double)(loki_now_ns() - f.t_ns) / 1e9);
    memmove(&in->b[k], &in->b[k + 1], sizeof(in->b[0]) * (size_t)(in->n_inflight - k - 1));
    in->n_inflight--;
    in->b[in->n_inflight] = f;

    uint16_t *children = ra->children;
    uint8_t *failed = ra->failed;
    struct loki_batch_result_query q;
    int i = 0, n_children = 0;
    while (i < f.n && loki_batch_next_result(v, &q) == 1) {
        struct root *r = &ra->roots[(uint32_t)f.cookies[i]];
        /* a sibling may have been dropped already: its root is answered (and maybe reused) */
        bool current = r->used && r->gen == (uint32_t)(f.cookies[i] >> 32);
        failed[i] = q.status != 0;
        n_children = (int)q.n_fanout;
        for (uint32_t c = 0; c < q.n_fanout && c < LOKI_MAX_CHILDREN; c++)
            children[i * LOKI_MAX_CHILDREN + c] =
                (uint16_t)(q.fanout[c] > 65535 ? 65535 : q.fanout[c]);
        /* leaf outputs become the reply's outputs */
        if (current && q.status == 0 && q.n_fanout == 0 && q.out_kind == LOKI_BATCH_OUT_INLINE &&
            r->n_out < LOKI_MAX_REPLY_OUTPUTS) {
            memcpy(r->out[r->n_out], q.inline_data, q.inline_len);
            r->out_len[r->n_out] = (uint8_t)q.inline_len;
            r->n_out++;
        }
        i++;
    }
    for (; i < f.n; i++)
        failed[i] = 1; /* fewer results than queries: a worker bug, fail them explicitly */
    uint64_t n_failed = 0;
    for (i = 0; i < f.n; i++)
        n_failed += failed[i];
    loki_metrics_failed(ra->cfg.metrics, f.pipeline, f.task, f.variant, n_failed);
    /* the router wants n x n_children, packed with the task's child count */
    if (n_children > LOKI_MAX_CHILDREN)
        n_children = LOKI_MAX_CHILDREN;
    for (int a = 0; a < f.n; a++)
        for (int c = 0; c < n_children; c++)
            ra->packed[a * n_children + c] = children[a * LOKI_MAX_CHILDREN + c];
    loki_router_batch_done(ra->router, inst, f.batch_id, n_children ? ra->packed : NULL, failed);
}

static void on_restart_timer(uv_timer_t *t)
{
    struct loki_router_actor *ra = t->data;
    if (ra->draining)
        return;
    const struct loki_plan *p = loki_router_plan(ra->router);
    if (p) {
        memcpy(ra->plan_restart, p, sizeof(*p));
        loki_router_set_plan(ra->router, ra->plan_restart); /* starts what is missing */
    }
}

static void s_exited(void *ctx, int inst, int64_t status, int term_signal, bool expected)
{
    struct loki_router_actor *ra = ctx;
    if (inst < 0 || inst >= LOKI_MAX_INSTANCE_IDS)
        return;
    struct inst *in = &ra->inst[inst];
    in->live = false;
    in->n_inflight = 0;
    if (expected) {
        loki_log(LOKI_LOG_INFO, "worker %d exited (status %lld)", inst, (long long)status);
        return;
    }
    loki_log(LOKI_LOG_WARN, "worker %d died (status %lld, signal %d): re-running its batches", inst,
             (long long)status, term_signal);
    loki_router_instance_failed(ra->router, inst);
    if (ra->draining)
        return;
    /* restart with backoff: 100 ms doubling to 5 s */
    in->restarts++;
    uint64_t delay = 100u << (in->restarts < 6 ? in->restarts - 1 : 5);
    if (delay > 5000)
        delay = 5000;
    uv_timer_start(&ra->restart_timer, on_restart_timer, delay, 0);
}

static const struct loki_sup_ops sup_ops = {
    .ready = s_ready, .result = s_result, .exited = s_exited};

const struct loki_sup_ops *loki_router_actor_sup_ops(void)
{
    return &sup_ops;
}

/* ---- the frontend's requests --------------------------------------------------------------- */

void loki_router_actor_request(struct loki_router_actor *ra, struct loki_frontend_conn *conn,
                               const struct loki_request *req)
{
    if (!ra->n_free) {
        reply_now(ra, conn, req->id, LOKI_STATUS_OVERLOADED, "too many queries in flight");
        return;
    }
    uint32_t slot = ra->free_roots[--ra->n_free];
    struct root *r = &ra->roots[slot];
    r->used = true;
    r->gen++;
    r->conn = conn;
    r->id = req->id;
    r->arrival_ns = loki_now_ns();
    r->queued_seen = false;
    r->n_out = 0;
    memset(&r->payload, 0, sizeof(r->payload));
    if (req->payload.len) {
        void *p;
        int rc = loki_arena_alloc(loki_sup_arena(ra->sup), req->payload.len, &r->payload, &p);
        if (rc) {
            memset(&r->payload, 0, sizeof(r->payload));
            reply_now(ra, conn, req->id, LOKI_STATUS_OVERLOADED, "payload arena full");
            release_root(ra, slot);
            return;
        }
        memcpy(p, req->payload.ptr, req->payload.len);
    }
    uint64_t deadline = req->has_deadline ? loki_deadline_ns(loki_now_ns(), req->deadline_ms) : 0;
    uint64_t cookie = slot | (uint64_t)r->gen << 32;
    int rc = loki_router_submit(ra->router, req->pipeline_index, req->id, cookie, deadline);
    /* each arrival in the one-second window it arrived in, as the replay harness counts it */
    if ((!rc || rc == LOKI_EOVERLOADED) && ra->ops.arrival)
        ra->ops.arrival(ra->ctx, req->pipeline_index, r->arrival_ns);
    if (rc && rc != LOKI_EOVERLOADED) {
        /* no completion was delivered for an invalid submission: answer here */
        reply_now(ra, conn, req->id, LOKI_STATUS_ERROR, loki_strerror(rc));
        release_root(ra, slot);
    }
}

/* ---- life ---------------------------------------------------------------------------------- */

int loki_router_actor_create(struct uv_loop_s *loop, const struct loki_router_actor_config *cfg,
                             const struct loki_router_actor_ops *ops, void *ctx,
                             struct loki_router_actor **out)
{
    struct loki_router_actor *ra = calloc(1, sizeof(*ra));
    if (!ra)
        return -ENOMEM;
    ra->cfg = *cfg;
    if (ops)
        ra->ops = *ops;
    ra->ctx = ctx;
    ra->topo = cfg->topo;
    ra->max_batch = 1;
    for (int p = 0; p < ra->topo->n_pipelines; p++)
        for (int t = 0; t < ra->topo->pipelines[p].n_tasks; t++)
            for (int v = 0; v < ra->topo->pipelines[p].tasks[t].n_variants; v++) {
                const struct loki_variant *va = &ra->topo->pipelines[p].tasks[t].variants[v];
                for (int b = 0; b < va->n_batches; b++)
                    if (va->batches[b] > ra->max_batch)
                        ra->max_batch = va->batches[b];
            }
    LOKI_BUG_ON(ra->max_batch > LOKI_MAX_BATCH); /* the loader refuses larger ones */
    size_t mb = (size_t)ra->max_batch;
    ra->roots = calloc(cfg->max_roots, sizeof(*ra->roots));
    ra->free_roots = calloc(cfg->max_roots, sizeof(uint32_t));
    ra->plan_restart = calloc(1, sizeof(struct loki_plan));
    ra->q = calloc(mb, sizeof(*ra->q));
    ra->children = calloc(mb * LOKI_MAX_CHILDREN, sizeof(uint16_t));
    ra->packed = calloc(mb * LOKI_MAX_CHILDREN, sizeof(uint16_t));
    ra->failed = calloc(mb, 1);
    int rc = -ENOMEM;
    if (!ra->roots || !ra->free_roots || !ra->plan_restart || !ra->q || !ra->children ||
        !ra->packed || !ra->failed)
        goto fail;
    for (uint32_t i = 0; i < cfg->max_roots; i++)
        ra->free_roots[ra->n_free++] = cfg->max_roots - 1 - i;
    struct loki_router_ops ro = {.now_ns = r_now,
                                 .dispatch = r_dispatch,
                                 .complete = r_complete,
                                 .instance_start = r_instance_start,
                                 .instance_stop = r_instance_stop};
    struct loki_router_config rcfg = {.max_roots = cfg->max_roots};
    if ((rc = loki_router_create(ra->topo, &rcfg, &ro, ra, &ra->router)))
        goto fail;
    uv_timer_init(loop, &ra->restart_timer);
    ra->restart_timer.data = ra;
    *out = ra;
    return 0;
fail:
    loki_router_actor_destroy(ra);
    return rc;
}

void loki_router_actor_attach(struct loki_router_actor *ra, struct loki_sup *sup)
{
    ra->sup = sup;
}

size_t loki_router_actor_ring_bytes(const struct loki_router_actor *ra)
{
    return loki_batch_ring_capacity((uint32_t)ra->max_batch);
}

struct loki_router *loki_router_actor_router(struct loki_router_actor *ra)
{
    return ra->router;
}

void loki_router_actor_drain(struct loki_router_actor *ra)
{
    ra->draining = true;
    uv_timer_stop(&ra->restart_timer);
}

void loki_router_actor_stop(struct loki_router_actor *ra)
{
    ra->draining = true;
    uv_close((uv_handle_t *)&ra->restart_timer, NULL);
}

void loki_router_actor_destroy(struct loki_router_actor *ra)
{
    if (!ra)
        return;
    loki_router_destroy(ra->router);
    for (int i = 0; i < LOKI_MAX_INSTANCE_IDS; i++)
        for (int k = 0; k < LOKI_MAX_BATCH_INFLIGHT; k++)
            free(ra->inst[i].b[k].cookies);
    free(ra->roots);
    free(ra->free_roots);
    free(ra->plan_restart);
    free(ra->q);
    free(ra->children);
    free(ra->packed);
    free(ra->failed);
    free(ra);
}
