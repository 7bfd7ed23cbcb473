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
 *
 * Data between stages. A worker writes each query's output and child payloads into its own
 * output arena; on its result we copy what we keep into the payload arena (ours: we are its
 * only allocator) and give the worker's blocks back at once, so a worker's death strands
 * nothing of ours. Every answered sub-query becomes a node of its root's result tree (task,
 * variant, parent node, status, output); each child payload an input record (payload, the
 * node that emitted it). The router carries one word per sub-query for us:
 *
 *   LOKI_ROUTER_NO_DATA   the root's first sub-query: the client's payload, no parent
 *   INPUT | i             input record i: its payload and parent
 *   n                     a child with an empty payload, emitted by node n
 *
 * Nodes, inputs and every block they hold belong to the root and go back when it is
 * answered, after the reply was encoded; a sub-query still in some worker's batch then reads
 * a freed block, which the arena's generation check turns into that query's failure, and
 * its result is ignored (the root is answered already).
 */
#include "router_actor_internal.h"

#include <errno.h>
#include <signal.h>
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

/* ---- router callbacks ---------------------------------------------------------------------- */

/* The router's clock: while a request is submitted, its arrival time (one clock read per
 * request, not two); otherwise now. */
static uint64_t r_now(void *ctx)
{
    struct loki_router_actor *ra = ctx;
    return ra->now_hint ? ra->now_hint : loki_now_ns();
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
    LOKI_BUG_ON(!f->cookies || !f->data); /* allocated when the instance started */
    uint64_t tn = loki_now_ns();
    bool root_task = b->task == ra->topo->pipelines[b->pipeline].root;
    f->batch_id = b->batch_id;
    f->t_ns = tn;
    f->expect_ms = b->expect_ms;
    f->pipeline = b->pipeline;
    f->task = b->task;
    f->variant = b->variant;
    f->n = b->n;
    for (int i = 0; i < b->n; i++) {
        uint64_t c = b->items[i].cookie;
        struct root *r = &ra->roots[(uint32_t)c];
        f->cookies[i] = c;
        f->data[i] = b->items[i].data;
        if (root_task && !r->queued_seen) {
            r->queued_seen = true;
            loki_metrics_queue_time(ra->cfg.metrics, b->pipeline,
                                    (double)(tn - r->arrival_ns) / 1e9);
        }
        ra->q[i].query_id = b->items[i].query_id;
        ra->q[i].sub_query_id = b->items[i].sub;
        ra->q[i].deadline_ns = 0;
        uint32_t d = b->items[i].data;
        if (d == LOKI_ROUTER_NO_DATA)
            ra->q[i].payload = r->payload; /* the root task: the client's payload */
        else if (d & INPUT)
            ra->q[i].payload = ra->inputs[d & ~INPUT].ref;
        else
            memset(&ra->q[i].payload, 0, sizeof(ra->q[i].payload)); /* an empty child */
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

static void on_restart_timer(uv_timer_t *t);

/*
 * A worker did not start (the supervisor said why; the router dropped the instance, so nothing
 * is routed to it): start what the plan misses again, with backoff (100 ms doubling to 5 s),
 * unless a restart is already due, which starts it too.
 */
static void retry_starts(struct loki_router_actor *ra)
{
    if (ra->draining || uv_is_active((uv_handle_t *)&ra->restart_timer))
        return;
    uint64_t delay = 100u << (ra->start_retries < 6 ? ra->start_retries : 5);
    ra->start_retries++;
    uv_update_time(ra->restart_timer.loop); /* the initial plan comes before the loop runs */
    uv_timer_start(&ra->restart_timer, on_restart_timer, delay > 5000 ? 5000 : delay, 0);
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
        if ((!in->b[k].cookies &&
             !(in->b[k].cookies = malloc(sizeof(uint64_t) * (size_t)ra->max_batch))) ||
            (!in->b[k].data &&
             !(in->b[k].data = malloc(sizeof(uint32_t) * (size_t)ra->max_batch)))) {
            loki_log(LOKI_LOG_ERROR, "start worker %d (%s): out of memory", instance, v->name);
            loki_router_instance_failed(ra->router, instance);
            return;
        }
    int rc = loki_sup_start(ra->sup, instance, pi);
    if (rc) {
        loki_log(LOKI_LOG_ERROR, "start worker %d (%s): %s", instance, v->name, loki_strerror(rc));
        loki_router_instance_failed(ra->router, instance);
        retry_starts(ra);
        return;
    }
    in->live = true;
    in->stalled = false;
    in->n_inflight = 0;
    in->last_done_ns = 0;
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

/*
 * A worker that stopped making progress (SIGSTOP, a wedged driver, a backend in an endless
 * loop) holds its batches and their queries. Every scan first answers, as dropped, what such
 * batches hold past its deadline (loki_router_expire): nobody waits longer than the deadline
 * for a worker that may never answer. Its running batch started when it was sent or
 * when the one before it came back, whichever is later; past STALL_FACTOR times its profiled
 * latency plus STALL_SLACK_MS it is killed, and its exit re-runs its batches elsewhere (the
 * router drops there what can no longer make its deadline) and restarts it with backoff.
 * The slack keeps a loaded machine's scheduling delays from killing healthy workers.
 */
#define STALL_SCAN_MS 20
#define STALL_FACTOR 10
#define STALL_SLACK_MS 1000

static void on_stall_timer(uv_timer_t *t)
{
    struct loki_router_actor *ra = t->data;
    if (!ra->sup)
        return;
    loki_router_expire(ra->router);
    uint64_t now = loki_now_ns();
    for (int i = 0; i < LOKI_MAX_INSTANCE_IDS; i++) {
        struct inst *in = &ra->inst[i];
        if (!in->live || in->stalled || !in->n_inflight)
            continue;
        const struct inflight *f = &in->b[0];
        uint64_t began = f->t_ns > in->last_done_ns ? f->t_ns : in->last_done_ns;
        double ms = (double)(now - began) / 1e6;
        if (now <= began || ms < STALL_FACTOR * f->expect_ms + STALL_SLACK_MS)
            continue;
        int pid = loki_sup_pid(ra->sup, i);
        if (pid <= 0)
            continue;
        in->stalled = true;
        loki_log(LOKI_LOG_WARN,
                 "worker %d (pid %d) made no progress for %.0f ms on a batch profiled at %.1f ms: "
                 "killing it; its batches run elsewhere",
                 i, pid, ms, f->expect_ms);
        kill(pid, SIGKILL); /* its exit (pidfd) reaches s_exited, which re-runs and restarts */
    }
}

static void on_restart_timer(uv_timer_t *t)
{
    struct loki_router_actor *ra = t->data;
    if (ra->draining)
        return;
    const struct loki_plan *p = loki_router_plan(ra->router);
    if (p) {
        const struct loki_sup_stats *ss = loki_sup_stats(ra->sup);
        uint64_t failed = ss->start_failed;
        memcpy(ra->plan_restart, p, sizeof(*p));
        loki_router_set_plan(ra->router, ra->plan_restart); /* starts what is missing */
        int n = loki_router_instances(ra->router, NULL);
        if (ss->start_failed != failed) /* retry_starts() armed the next round */
            loki_log(LOKI_LOG_WARN,
                     "plan still incomplete: %d of %d instances running, %llu failed to start "
                     "again (%s); retrying",
                     n, ra->plan_restart->n_instances,
                     (unsigned long long)(ss->start_failed - failed),
                     loki_strerror(ss->last_start_error));
        else if (ra->start_retries) {
            ra->start_retries = 0;
            loki_log(LOKI_LOG_INFO, "plan complete: %d instances running", n);
        }
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
    .ready = s_ready, .result = loki__ra_result, .exited = s_exited};

const struct loki_sup_ops *loki_router_actor_sup_ops(void)
{
    return &sup_ops;
}

/* ---- the frontend's requests --------------------------------------------------------------- */

void loki_router_actor_request(struct loki_router_actor *ra, struct loki_frontend_conn *conn,
                               const struct loki_request *req)
{
    if (req->has_priority) {
        /* accepted and ignored would promise what nothing does: say so */
        loki__ra_reply_now(ra, conn, req->id, LOKI_STATUS_BAD_REQUEST,
                           "field 'priority': not supported: queries are served by deadline (send "
                           "deadline_ms to tighten one)");
        return;
    }
    if (!ra->n_free) {
        loki__ra_reply_now(ra, conn, req->id, LOKI_STATUS_OVERLOADED, "too many queries in flight");
        return;
    }
    struct loki_arena *a = loki_sup_arena(ra->sup);
    if (ra->cfg.arena_bytes && loki_arena_free_bytes(a) < ra->cfg.arena_bytes / 4 &&
        (loki_arena_reclaim(a), loki_arena_free_bytes(a) < ra->cfg.arena_bytes / 4)) {
        loki__ra_reply_now(
            ra, conn, req->id, LOKI_STATUS_OVERLOADED,
            "payload arena nearly full: queries in flight hold three quarters of it");
        return;
    }
    uint32_t slot = ra->free_roots[--ra->n_free];
    struct root *r = &ra->roots[slot];
    r->used = true;
    r->gen++;
    r->conn = conn;
    r->id = req->id;
    uint64_t now = loki_now_ns();
    r->arrival_ns = now;
    r->queued_seen = false;
    r->first_node = r->last_node = r->first_input = NIL;
    r->n_nodes = 0;
    r->result_bytes = 0;
    r->why = NULL;
    r->busy = false;
    memset(&r->payload, 0, sizeof(r->payload));
    if (req->payload.len) {
        void *p;
        int rc = loki_arena_alloc(loki_sup_arena(ra->sup), req->payload.len, &r->payload, &p);
        if (rc) {
            memset(&r->payload, 0, sizeof(r->payload));
            loki__ra_reply_now(ra, conn, req->id, LOKI_STATUS_OVERLOADED, "payload arena full");
            loki__ra_release_root(ra, slot);
            return;
        }
        memcpy(p, req->payload.ptr, req->payload.len);
    }
    uint64_t deadline = req->has_deadline ? loki_deadline_ns(now, req->deadline_ms) : 0;
    uint64_t cookie = slot | (uint64_t)r->gen << 32;
    ra->now_hint = now; /* the copy above: tens of microseconds for a 1 MiB payload at most */
    int rc = loki_router_submit_ex(ra->router, req->pipeline_index, req->id, cookie, deadline,
                                   &r->handle);
    ra->now_hint = 0;
    if (!rc)
        loki_frontend_conn_tag(conn, req->id, cookie);
    /* each arrival in the one-second window it arrived in, as the replay harness counts it */
    if ((!rc || rc == LOKI_EOVERLOADED) && ra->ops.arrival)
        ra->ops.arrival(ra->ctx, req->pipeline_index, r->arrival_ns);
    if (rc && rc != LOKI_EOVERLOADED) {
        /* no completion was delivered for an invalid submission: answer here */
        loki__ra_reply_now(ra, conn, req->id, LOKI_STATUS_ERROR, loki_strerror(rc));
        loki__ra_release_root(ra, slot);
    }
}

void loki_router_actor_cancel(struct loki_router_actor *ra, struct loki_frontend_conn *conn,
                              uint64_t id, uint64_t tag)
{
    uint32_t slot = (uint32_t)tag;
    if (!tag || slot >= ra->cfg.max_roots)
        return;
    struct root *r = &ra->roots[slot];
    if (!r->used || r->gen != (uint32_t)(tag >> 32) || r->conn != conn || r->id != id)
        return;
    /* cancelled: its completion answers it now; too late (batched): it runs on as usual */
    loki_router_cancel(ra->router, r->handle, tag);
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
    /* nodes and child payloads held by answered-to-be roots: four per root on average */
    uint64_t pool = (uint64_t)cfg->max_roots * 4 + 1024;
    ra->n_pool = pool > (1u << 24) ? (1u << 24) : (uint32_t)pool;
    ra->nodes = calloc(ra->n_pool, sizeof(*ra->nodes));
    ra->inputs = calloc(ra->n_pool, sizeof(*ra->inputs));
    ra->rnodes = calloc(LOKI_MAX_REPLY_NODES, sizeof(*ra->rnodes));
    int rc = -ENOMEM;
    if (!ra->roots || !ra->free_roots || !ra->plan_restart || !ra->q || !ra->children ||
        !ra->packed || !ra->failed || !ra->nodes || !ra->inputs || !ra->rnodes)
        goto fail;
    if (!ra->cfg.max_result)
        ra->cfg.max_result = 4u << 20;
    for (uint32_t i = 0; i < ra->n_pool; i++) {
        ra->nodes[i].next = i + 1 < ra->n_pool ? i + 1 : NIL;
        ra->inputs[i].next = i + 1 < ra->n_pool ? i + 1 : NIL;
    }
    ra->free_node = ra->free_input = 0;
    for (uint32_t i = 0; i < cfg->max_roots; i++)
        ra->free_roots[ra->n_free++] = cfg->max_roots - 1 - i;
    struct loki_router_ops ro = {.now_ns = r_now,
                                 .dispatch = r_dispatch,
                                 .complete = loki__ra_complete,
                                 .instance_start = r_instance_start,
                                 .instance_stop = r_instance_stop};
    struct loki_router_config rcfg = {.max_roots = cfg->max_roots};
    if ((rc = loki_router_create(ra->topo, &rcfg, &ro, ra, &ra->router)))
        goto fail;
    uv_timer_init(loop, &ra->restart_timer);
    ra->restart_timer.data = ra;
    uv_timer_init(loop, &ra->stall_timer);
    ra->stall_timer.data = ra;
    uv_timer_start(&ra->stall_timer, on_stall_timer, STALL_SCAN_MS, STALL_SCAN_MS);
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
    /* the stall check stays on: a drain still waits for every worker's batches */
}

void loki_router_actor_stop(struct loki_router_actor *ra)
{
    ra->draining = true;
    uv_close((uv_handle_t *)&ra->restart_timer, NULL);
    uv_close((uv_handle_t *)&ra->stall_timer, NULL);
}

void loki_router_actor_destroy(struct loki_router_actor *ra)
{
    if (!ra)
        return;
    loki_router_destroy(ra->router);
    for (int i = 0; i < LOKI_MAX_INSTANCE_IDS; i++)
        for (int k = 0; k < LOKI_MAX_BATCH_INFLIGHT; k++) {
            free(ra->inst[i].b[k].cookies);
            free(ra->inst[i].b[k].data);
        }
    free(ra->roots);
    free(ra->free_roots);
    free(ra->plan_restart);
    free(ra->q);
    free(ra->children);
    free(ra->packed);
    free(ra->failed);
    free(ra->nodes);
    free(ra->inputs);
    free(ra->rnodes);
    free(ra->words);
    free(ra);
}
