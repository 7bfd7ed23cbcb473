/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The router actor's replies (see router_actor.c for the design): a worker's result becomes
 * nodes of its roots' result trees, its outputs and child payloads are kept in the payload
 * arena and its own blocks given back, and a root's completion becomes its one reply.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loki/arena.h"
#include "loki/clock.h"
#include "loki/compiler.h"
#include "loki/log.h"
#include "loki/metrics.h"
#include "router_actor_internal.h"

/* Append @n bytes of @src to @s (length *@k, capacity @cap), truncating; keeps it terminated. */
static void append(char *s, size_t cap, size_t *k, const char *src, size_t n)
{
    if (*k + n >= cap)
        n = cap - 1 - *k;
    memcpy(s + *k, src, n);
    *k += n;
    s[*k] = 0;
}

/* The variant paths a completed root took, one string per chain ("det-a>cls-b|cls-c"). Runs
 * once per reply: plain copies, no formatting. */
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
            if (i)
                append(s, cap, &k, ">", 1);
            bool first = true;
            for (int v = 0; v < p->tasks[t].n_variants; v++) {
                if (!(c->variants[t] & (1u << v)))
                    continue;
                const char *name = p->tasks[t].variants[v].name;
                if (!first)
                    append(s, cap, &k, "|", 1);
                append(s, cap, &k, name, strlen(name));
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
            ra->reply.paths[ra->reply.n_paths].ptr = (const uint8_t *)s;
            ra->reply.paths[ra->reply.n_paths].len = (uint32_t)k;
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
void loki__ra_reply_now(struct loki_router_actor *ra, struct loki_frontend_conn *conn, uint64_t id,
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
void loki__ra_release_root(struct loki_router_actor *ra, uint32_t c)
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

void loki__ra_complete(void *ctx, const struct loki_router_completion *c)
{
    struct loki_router_actor *ra = ctx;
    uint32_t slot = (uint32_t)c->cookie;
    struct root *r = &ra->roots[slot];
    struct loki_reply *rep = &ra->reply;
    LOKI_BUG_ON(!r->used || r->gen != (uint32_t)(c->cookie >> 32));
    bool served = c->status == LOKI_QUERY_OK || c->status == LOKI_QUERY_LATE;
    if (served)
        loki_metrics_e2e(ra->cfg.metrics, c->pipeline, c->latency_ms / 1e3);
    if (c->status == LOKI_QUERY_ERROR && r->why && !r->busy)
        loki_log_query(LOKI_LOG_WARN, "query %llu: %s", (unsigned long long)r->id, r->why);
    const struct loki_pipeline *pl = &ra->topo->pipelines[c->pipeline];
    const char *stage = c->stage >= 0 && c->stage < pl->n_tasks ? pl->tasks[c->stage].name : "-";
    if (c->status == LOKI_QUERY_ERROR && r->busy)
        loki_log_query(LOKI_LOG_DEBUG, "query %llu (%s) refused at %s: %s",
                       (unsigned long long)r->id, pl->name, stage, r->why);
    else if (c->status == LOKI_QUERY_ERROR)
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
    if (r->why && r->busy) {
        /* no room to keep what it made: refused like an overloaded admission, with why */
        rep->status = LOKI_STATUS_OVERLOADED;
        rep->has_retry_after = true;
        rep->retry_after_ms = ra->cfg.retry_after_ms;
        rep->error = loki_bytes_str(r->why);
    } else if (c->status == LOKI_QUERY_OVERLOADED) {
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
    loki__ra_release_root(ra, slot);
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

/* Fail root @r for a lack of room that passes (the payload arena, the child pools): it is
 * answered overloaded with the retry hint and @why, as admission would have answered it. */
static void root_busy(struct root *r, const char *why)
{
    if (!r->why) {
        r->why = why;
        r->busy = true;
    }
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
        root_busy(r, "payload arena full while keeping an output");
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
            root_busy(r, "out of memory for child sub-queries");
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
            root_busy(r, "too many child payloads in flight");
            return false;
        }
        uint32_t ii = ra->free_input;
        struct input *in = &ra->inputs[ii];
        if (keep_bytes(ra, p, t[k].len, &in->ref)) {
            root_busy(r, "payload arena full while keeping a child payload");
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

void loki__ra_result(void *ctx, int inst, struct loki_batch_view *v)
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
