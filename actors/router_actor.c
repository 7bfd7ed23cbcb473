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
#include "router_actor.h"

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

#define NIL UINT32_MAX
#define INPUT 0x80000000u /* a router data word naming an input record */
#define NODE_INLINE 32    /* outputs this small stay in the node */

struct root {
    bool used;
    uint32_t gen; /* bumped per use: a late result for a finished root is recognised */
    struct loki_frontend_conn *conn;
    uint64_t id;
    uint64_t arrival_ns;
    bool queued_seen; /* queueing time recorded (first dispatch of its root task) */
    struct loki_arena_ref payload;
    uint32_t first_node, last_node, n_nodes; /* its result tree, in completion order */
    uint32_t first_input;                    /* its child payloads */
    uint64_t result_bytes;                   /* outputs kept so far */
    uint32_t handle;                         /* the router's (loki_router_cancel) */
    const char *why;                         /* set: answer error with this (first wins) */
};

/* One answered sub-query: a node of its root's result tree. */
struct node {
    uint32_t next;   /* the root's list, or the free list */
    uint32_t parent; /* pool index, NIL for the root task's */
    uint32_t index;  /* its place in the reply (set while replying) */
    uint8_t task, variant, inline_len;
    bool failed, leaf;
    struct loki_arena_ref out; /* in the payload arena; len 0: none (or inline) */
    uint8_t inl[NODE_INLINE];
};

/* A child sub-query's payload (in the payload arena) and the node that emitted it. */
struct input {
    uint32_t next; /* the root's list, or the free list */
    uint32_t parent;
    struct loki_arena_ref ref;
};

/* A batch a worker holds: what its result needs to find its roots again. */
struct inflight {
    uint64_t batch_id, t_ns;
    double expect_ms; /* its profiled latency at the instance's share */
    int pipeline, task, variant, n;
    uint64_t *cookies; /* [max_batch]: each query's root cookie */
    uint32_t *data;    /* [max_batch]: each query's router data word */
};

struct inst {
    bool live;
    bool stalled;          /* killed for making no progress; its exit re-runs its batches */
    uint64_t last_done_ns; /* its last result */
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
    struct node *nodes;
    struct input *inputs;
    uint32_t n_pool, free_node, free_input; /* both pools have n_pool entries */
    uint32_t *words;                        /* a batch's child data words */
    size_t cap_words;
    struct loki_reply_node *rnodes; /* a reply's tree, [LOKI_MAX_REPLY_NODES] */
    struct inst inst[LOKI_MAX_INSTANCE_IDS];
    /* scratch for one batch, [max_batch] (x LOKI_MAX_CHILDREN) */
    struct loki_batch_query *q;
    uint16_t *children, *packed; /* [max_batch * LOKI_MAX_CHILDREN] */
    uint8_t *failed;
    uv_timer_t restart_timer;
    unsigned start_retries; /* rounds of failed worker starts since the last that had none */
    uv_timer_t stall_timer; /* every STALL_SCAN_MS: workers that stopped making progress */
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
    case LOKI_QUERY_CANCELLED:
        return LOKI_STATUS_CANCELLED;
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

/* Give back root slot @c and everything it holds: its payload, its tree, its children's. */
static void release_root(struct loki_router_actor *ra, uint32_t c)
{
    struct root *r = &ra->roots[c];
    struct loki_arena *a = loki_sup_arena(ra->sup);
    if (r->payload.len)
        loki_arena_free(a, r->payload);
    for (uint32_t n = r->first_node, next; n != NIL; n = next) {
        struct node *nd = &ra->nodes[n];
        next = nd->next;
        if (nd->out.len)
            loki_arena_free(a, nd->out);
        nd->next = ra->free_node;
        ra->free_node = n;
    }
    for (uint32_t i = r->first_input, next; i != NIL; i = next) {
        struct input *in = &ra->inputs[i];
        next = in->next;
        if (in->ref.len)
            loki_arena_free(a, in->ref);
        in->next = ra->free_input;
        ra->free_input = i;
    }
    r->first_node = r->last_node = r->first_input = NIL;
    r->used = false;
    r->conn = NULL;
    ra->free_roots[ra->n_free++] = c;
}

/* Copy @len bytes at @src into a new block of the payload arena; 0 or -ENOMEM/LOKI_ETOOBIG. */
static int keep_bytes(struct loki_router_actor *ra, const void *src, uint32_t len,
                      struct loki_arena_ref *ref)
{
    void *p;
    int rc = loki_arena_alloc(loki_sup_arena(ra->sup), len, ref, &p);
    if (rc)
        return rc;
    memcpy(p, src, len);
    return 0;
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
    if (c->status == LOKI_QUERY_ERROR && r->why)
        loki_log_query(LOKI_LOG_WARN, "query %llu: %s", (unsigned long long)r->id, r->why);
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
    if (served && r->why) {
        /* served, but its result cannot be sent: say so, and nothing else */
        rep->status = LOKI_STATUS_ERROR;
        rep->error = loki_bytes_str(r->why);
        served = false;
    }
    if (served) {
        struct loki_arena *a = loki_sup_arena(ra->sup);
        uint32_t k = 0;
        for (uint32_t n = r->first_node; n != NIL; n = ra->nodes[n].next, k++) {
            struct node *nd = &ra->nodes[n];
            struct loki_reply_node *o = &ra->rnodes[k];
            const struct loki_task *t = &pl->tasks[nd->task];
            nd->index = k;
            o->task = loki_bytes_str(t->name);
            o->variant = loki_bytes_str(t->variants[nd->variant].name);
            o->parent = nd->parent == NIL ? -1 : (int32_t)ra->nodes[nd->parent].index;
            o->status = nd->failed ? LOKI_STATUS_ERROR : LOKI_STATUS_OK;
            void *p = NULL;
            if (nd->out.len && loki_arena_get(a, nd->out, &p) == 0) {
                o->output.ptr = p;
                o->output.len = nd->out.len;
            } else {
                o->output.ptr = nd->inl;
                o->output.len = nd->inline_len;
            }
            if (nd->leaf && !nd->failed && rep->n_outputs < LOKI_PROTO_MAX_OUTPUTS)
                rep->outputs[rep->n_outputs++] = o->output;
        }
        rep->n_nodes = k;
        rep->nodes = ra->rnodes;
        path_strings(ra, c);
    }
    if (c->status == LOKI_QUERY_OVERLOADED) {
        rep->has_retry_after = true;
        rep->retry_after_ms = ra->cfg.retry_after_ms;
        rep->error = loki_bytes_str("planned capacity exceeded; retry later");
    } else if (c->status == LOKI_QUERY_DROPPED) {
        rep->error = loki_bytes_str("could no longer meet its deadline; dropped early");
    } else if (c->status == LOKI_QUERY_ERROR) {
        rep->error = loki_bytes_str(r->why ? r->why : "a worker failed while serving this query");
        /* a backend that failed the query said why (out->fail): that reaches the client */
        struct loki_arena *a = loki_sup_arena(ra->sup);
        for (uint32_t n = r->first_node; !r->why && n != NIL; n = ra->nodes[n].next) {
            const struct node *nd = &ra->nodes[n];
            void *p = NULL;
            if (!nd->failed)
                continue;
            if (nd->out.len && loki_arena_get(a, nd->out, &p) == 0)
                rep->error = (struct loki_bytes){.ptr = p, .len = nd->out.len};
            else if (nd->inline_len)
                rep->error = (struct loki_bytes){.ptr = nd->inl, .len = nd->inline_len};
            break;
        }
    } else if (c->status == LOKI_QUERY_CANCELLED) {
        rep->error = loki_bytes_str("cancelled before it was batched");
    }
    loki_frontend_reply(r->conn, r->id, rep);
    release_root(ra, slot);
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

/* Give back what a result query left in worker @wa's output arena (its output, its
 * children's payloads and their table). */
static void drop_worker_blocks(struct loki_arena *wa, const struct loki_batch_result_query *q)
{
    if (!wa)
        return;
    if (q->out_kind == LOKI_BATCH_OUT_REF)
        loki_arena_free(wa, q->out_ref);
    if (!q->children.len)
        return;
    const struct loki_arena_ref *t;
    if (loki_arena_get(wa, q->children, (void **)&t) == 0) {
        uint32_t n = q->children.len / (uint32_t)sizeof(*t);
        for (uint32_t k = 0; k < n; k++)
            if (t[k].len)
                loki_arena_free(wa, t[k]);
    }
    loki_arena_free(wa, q->children);
}

/* Fail root @r (it is answered error @why once the router completes it). */
static void root_why(struct root *r, const char *why)
{
    if (!r->why)
        r->why = why;
}

/*
 * Result query @q of a batch of task @task on @variant for root @r (current), which the
 * router knows by data word @data: record its node, keep its output, and turn its children
 * into data words at ra->words[*n_words..]. Returns false when the query must count as
 * failed (its root is answered error, r->why says why).
 */
static bool take_result(struct loki_router_actor *ra, struct loki_arena *wa, struct root *r,
                        uint32_t data, int task, int variant,
                        const struct loki_batch_result_query *q, size_t *n_words)
{
    /* the node */
    if (r->n_nodes >= LOKI_MAX_REPLY_NODES || ra->free_node == NIL) {
        root_why(r, "result too large: more answered sub-queries than a reply holds");
        return false;
    }
    uint32_t ni = ra->free_node;
    struct node *nd = &ra->nodes[ni];
    ra->free_node = nd->next;
    memset(nd, 0, offsetof(struct node, inl));
    nd->next = NIL;
    nd->task = (uint8_t)task;
    nd->variant = (uint8_t)variant;
    nd->parent = data == LOKI_ROUTER_NO_DATA ? NIL
                 : (data & INPUT)            ? ra->inputs[data & ~INPUT].parent
                                             : data;
    nd->failed = q->status != 0;
    if (r->last_node == NIL)
        r->first_node = ni;
    else
        ra->nodes[r->last_node].next = ni;
    r->last_node = ni;
    r->n_nodes++;

    /* its output (for a failed query: why) */
    const void *src = NULL;
    uint32_t len = 0;
    if (q->status) {
        src = q->msg;
        len = q->msg_len;
    } else if (q->out_kind == LOKI_BATCH_OUT_INLINE) {
        src = q->inline_data;
        len = q->inline_len;
    } else if (q->out_kind == LOKI_BATCH_OUT_REF) {
        void *p;
        if (!wa || loki_arena_get(wa, q->out_ref, &p)) {
            root_why(r, "a worker's output reference was stale");
            return false;
        }
        src = p;
        len = q->out_ref.len;
    }
    r->result_bytes += len;
    if (r->result_bytes > ra->cfg.max_result) {
        root_why(r, "result too large: more output than frontend.max_result_bytes");
        return false;
    }
    if (len <= NODE_INLINE) {
        if (len)
            memcpy(nd->inl, src, len);
        nd->inline_len = (uint8_t)len;
    } else if (keep_bytes(ra, src, len, &nd->out)) {
        memset(&nd->out, 0, sizeof(nd->out));
        root_why(r, "payload arena full while keeping an output");
        return false;
    }
    if (q->status)
        return false;

    /* its children */
    uint32_t total = 0;
    for (uint32_t c = 0; c < q->n_fanout; c++)
        total += q->fanout[c];
    nd->leaf = total == 0;
    if (!total)
        return true;
    if (*n_words + total > ra->cap_words) {
        size_t cap = ra->cap_words ? ra->cap_words : 4096;
        while (cap < *n_words + total)
            cap *= 2;
        uint32_t *w = realloc(ra->words, sizeof(*w) * cap);
        if (!w) {
            root_why(r, "out of memory for child sub-queries");
            return false;
        }
        ra->words = w;
        ra->cap_words = cap;
    }
    uint32_t *words = ra->words + *n_words;
    const struct loki_arena_ref *t = NULL;
    if (q->children.len) {
        if (!wa || loki_arena_get(wa, q->children, (void **)&t) ||
            q->children.len != total * sizeof(*t)) {
            root_why(r, "a worker's child payload table was stale or malformed");
            return false;
        }
    }
    for (uint32_t k = 0; k < total; k++) {
        words[k] = ni;
        if (!t || !t[k].len)
            continue;
        void *p;
        if (loki_arena_get(wa, t[k], &p)) {
            root_why(r, "a worker's child payload reference was stale");
            return false;
        }
        if (ra->free_input == NIL) {
            root_why(r, "too many child payloads in flight");
            return false;
        }
        uint32_t ii = ra->free_input;
        struct input *in = &ra->inputs[ii];
        if (keep_bytes(ra, p, t[k].len, &in->ref)) {
            root_why(r, "payload arena full while keeping a child payload");
            return false;
        }
        ra->free_input = in->next;
        in->parent = ni;
        in->next = r->first_input;
        r->first_input = ii;
        words[k] = INPUT | ii;
    }
    *n_words += total;
    return true;
}

static void s_result(void *ctx, int inst, struct loki_batch_view *v)
{
    struct loki_router_actor *ra = ctx;
    if (inst < 0 || inst >= LOKI_MAX_INSTANCE_IDS)
        return;
    struct loki_arena *wa = loki_sup_out_arena(ra->sup, inst);
    struct inst *in = &ra->inst[inst];
    struct loki_batch_result_query q;
    int k = -1;
    for (int i = 0; i < in->n_inflight; i++)
        if (in->b[i].batch_id == v->batch_id)
            k = i;
    if (k < 0) {
        /* a batch the router already re-ran elsewhere: only give the worker's blocks back */
        while (loki_batch_next_result(v, &q) == 1)
            drop_worker_blocks(wa, &q);
        return;
    }
    /* keep the batch's cookies: its slot's buffer moves to the end with it */
    struct inflight f = in->b[k];
    loki_metrics_compute(ra->cfg.metrics, f.pipeline, f.task, f.variant,
                         (double)(loki_now_ns() - f.t_ns) / 1e9);
    memmove(&in->b[k], &in->b[k + 1], sizeof(in->b[0]) * (size_t)(in->n_inflight - k - 1));
    in->n_inflight--;
    in->b[in->n_inflight] = f;
    in->last_done_ns = loki_now_ns();

    uint16_t *children = ra->children;
    uint8_t *failed = ra->failed;
    int i = 0, n_children = ra->topo->pipelines[f.pipeline].tasks[f.task].n_children;
    size_t n_words = 0;
    while (i < f.n && loki_batch_next_result(v, &q) == 1) {
        struct root *r = &ra->roots[(uint32_t)f.cookies[i]];
        /* a sibling may have been dropped already: its root is answered (and maybe reused) */
        bool current = r->used && r->gen == (uint32_t)(f.cookies[i] >> 32);
        bool ok = current && take_result(ra, wa, r, f.data[i], f.task, f.variant, &q, &n_words);
        failed[i] = current ? !ok : q.status != 0;
        for (int c = 0; c < n_children; c++)
            children[i * LOKI_MAX_CHILDREN + c] =
                ok && (uint32_t)c < q.n_fanout
                    ? (uint16_t)(q.fanout[c] > 65535 ? 65535 : q.fanout[c])
                    : 0;
        drop_worker_blocks(wa, &q);
        i++;
    }
    for (; i < f.n; i++)
        failed[i] = 1; /* fewer results than queries: a worker bug, fail them explicitly */
    uint64_t n_failed = 0;
    for (i = 0; i < f.n; i++)
        n_failed += failed[i];
    loki_metrics_failed(ra->cfg.metrics, f.pipeline, f.task, f.variant, n_failed);
    /* the router wants n x n_children, packed with the task's child count */
    for (int a = 0; a < f.n; a++)
        for (int c = 0; c < n_children; c++)
            ra->packed[a * n_children + c] = children[a * LOKI_MAX_CHILDREN + c];
    loki_router_batch_done_data(ra->router, inst, f.batch_id, n_children ? ra->packed : NULL,
                                ra->words, failed);
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
    .ready = s_ready, .result = s_result, .exited = s_exited};

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
        reply_now(ra, conn, req->id, LOKI_STATUS_BAD_REQUEST,
                  "field 'priority': not supported: queries are served by deadline (send "
                  "deadline_ms to tighten one)");
        return;
    }
    if (!ra->n_free) {
        reply_now(ra, conn, req->id, LOKI_STATUS_OVERLOADED, "too many queries in flight");
        return;
    }
    struct loki_arena *a = loki_sup_arena(ra->sup);
    if (ra->cfg.arena_bytes && loki_arena_free_bytes(a) < ra->cfg.arena_bytes / 4 &&
        (loki_arena_reclaim(a), loki_arena_free_bytes(a) < ra->cfg.arena_bytes / 4)) {
        reply_now(ra, conn, req->id, LOKI_STATUS_OVERLOADED,
                  "payload arena nearly full: queries in flight hold three quarters of it");
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
    r->first_node = r->last_node = r->first_input = NIL;
    r->n_nodes = 0;
    r->result_bytes = 0;
    r->why = NULL;
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
    int rc = loki_router_submit_ex(ra->router, req->pipeline_index, req->id, cookie, deadline,
                                   &r->handle);
    if (!rc)
        loki_frontend_conn_tag(conn, req->id, cookie);
    /* each arrival in the one-second window it arrived in, as the replay harness counts it */
    if ((!rc || rc == LOKI_EOVERLOADED) && ra->ops.arrival)
        ra->ops.arrival(ra->ctx, req->pipeline_index, r->arrival_ns);
    if (rc && rc != LOKI_EOVERLOADED) {
        /* no completion was delivered for an invalid submission: answer here */
        reply_now(ra, conn, req->id, LOKI_STATUS_ERROR, loki_strerror(rc));
        release_root(ra, slot);
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
        ra->cfg.max_result = 16u << 20;
    for (uint32_t i = 0; i < ra->n_pool; i++) {
        ra->nodes[i].next = i + 1 < ra->n_pool ? i + 1 : NIL;
        ra->inputs[i].next = i + 1 < ra->n_pool ? i + 1 : NIL;
    }
    ra->free_node = ra->free_input = 0;
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
