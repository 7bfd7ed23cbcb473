/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lokid: the serving daemon. One libuv loop thread runs the frontend actor
 * (Unix socket, frames), the router actor (loki_router: EDF queues, split,
 * batching, dropping, fan-out) and the supervisor (worker processes, rings);
 * the planner actor solves on libuv's thread pool so a solve never stalls
 * the loop, and its plan is applied back on the loop (make-before-break,
 * inside loki_router_set_plan). Keeping frontend and router on one thread
 * means no query ever crosses a lock between arrival and dispatch.
 *
 *   client ─frame─▶ frontend ─on_request─▶ router ─dispatch─▶ req ring ─▶ worker
 *   client ◀─reply─ frontend ◀─complete─── router ◀─batch_done─ res ring ◀┘
 *
 * Every accepted query gets exactly one reply: the router completes every
 * submitted root exactly once (ok, dropped, late, error, overloaded), a dead
 * worker's batches are re-run or failed explicitly, and SIGTERM drains:
 * new requests are answered "draining" while in-flight ones finish.
 *
 * Operability lives here too: a once-a-second tick keeps a 60 s ring of
 * counter snapshots (drops and violations "over the last minute"), lokid
 * measures queueing (arrival to first dispatch), compute (dispatch to
 * result) and batch sizes itself, and renders two reports on request: the
 * status report ("table" or "json": plan, demand, accuracy, last minute) and
 * the Prometheus exposition, served over the client socket ("report" field,
 * docs/protocol.md) and, with --metrics-port, on 127.0.0.1 over HTTP.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "frontend.h"
#include "loki/arena.h"
#include "loki/clock.h"
#include "loki/compiler.h"
#include "loki/error.h"
#include "loki/log.h"
#include "loki/planner.h"
#include "planner.h" /* actors/: the planner actor */
#include "planner_uv.h"
#include "loki/proto.h"
#include "loki/router.h"
#include "loki/topology.h"
#include "lokid.h"
#include "supervisor.h"

#define MAX_INST 4096
#define ROOT_OUT_MAX 32 /* leaf outputs kept per root query; more are counted only */
#define MAX_BATCH_INFLIGHT 2
#define WINDOW_S 60   /* "last minute" of the status report: ring of 1 s snapshots */
#define QLOG_PER_S 10 /* per-query log lines allowed per second; the rest are counted */
#define HTTP_MAX_CONNS 32
#define HTTP_REQ_MAX 4096
#define RETRY_AFTER_MS 100 /* hint in "overloaded" replies: about one admission refill */
#define HIST_T 13
#define HIST_B 10

/* Bucket bounds (upper, inclusive) of the time histograms, seconds, and of batch sizes. */
static const double time_bounds[HIST_T] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                           0.1,    0.25,  0.5,    1,     2.5,  5};
static const double batch_bounds[HIST_B] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};

/* A Prometheus histogram: per-bucket (not cumulative) counts, the last one is +Inf. */
struct hist {
    uint64_t b[HIST_T + 1];
    uint64_t count;
    double sum;
};

struct var_metrics {
    struct hist compute; /* dispatch to result, seconds */
    struct hist batch;   /* dispatched batch sizes */
    uint64_t failed;     /* queries a worker reported failed */
};

/* Counters of one pipeline at one tick; the last-minute figures are differences. */
struct snap {
    uint64_t arrived, ok, dropped, late, error, overloaded, sub, sub_viol;
    double acc_sum, acc_sub_sum;
    uint64_t stage_drop[LOKI_MAX_TASKS];
};

struct snap_set {
    double t;
    struct snap p[LOKI_MAX_PIPELINES];
};

/* A growable text buffer for the reports (not on the query path). */
struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

struct http_conn {
    uv_tcp_t h;
    struct lokid *d;
    struct http_conn *next, **pprev;
    uv_write_t w;
    char req[HTTP_REQ_MAX];
    size_t len;
    char *resp;
    bool answered;
};

struct root {
    bool used;
    uint32_t gen; /* bumped per use: a late result for a finished root is recognised */
    struct loki_frontend_conn *conn;
    uint64_t id;
    uint64_t arrival_ns;
    bool queued_seen; /* queueing time recorded (first dispatch of its root task) */
    struct loki_arena_ref payload;
    uint16_t n_out;
    uint8_t out_len[ROOT_OUT_MAX];
    uint8_t out[ROOT_OUT_MAX][LOKI_BATCH_INLINE_MAX];
};

struct inflight {
    uint64_t batch_id, t_ns;
    int pipeline, task, variant, n;
    uint64_t cookies[512]; /* slot | gen << 32 of each query's root */
};

struct inst {
    bool live;
    int n_inflight;
    struct inflight b[MAX_BATCH_INFLIGHT];
    unsigned restarts;
};

struct lokid {
    uv_loop_t *loop;
    struct lokid_options opt;
    struct loki_topology *topo;
    struct loki_config cfg; /* the topology file's deployment sections */
    struct loki_frontend *fe;
    struct loki_router *router;
    struct loki_sup *sup;
    struct loki_planner_actor *pa;
    struct loki_planner_uv *pu; /* its solves on libuv's thread pool */
    struct root *roots;
    uint32_t n_roots, *free_roots, n_free;
    struct inst inst[MAX_INST];
    uv_timer_t plan_timer, restart_timer, drain_timer, tick_timer;
    uv_signal_t sig_term, sig_int, sig_hup;
    bool ready, draining, stopping;
    struct loki_plan *plan_restart;
    uint64_t t0_ns;
    /* metrics */
    struct hist queue_h[LOKI_MAX_PIPELINES], e2e_h[LOKI_MAX_PIPELINES];
    struct var_metrics vm[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS];
    struct snap_set win[WINDOW_S + 1];
    int win_head, win_n;
    struct sbuf rep; /* the last rendered report, kept until the next one */
    uv_tcp_t http;
    bool http_on;
    int http_port;
    int n_http;
    struct http_conn *http_conns;
    struct loki_reply reply; /* scratch: large, encoded before reuse */
    char paths[LOKI_MAX_TASKS * 8][LOKI_PROTO_PATH_STR_MAX / 8];
    int exit_code;
};

static double now_s(struct lokid *d)
{
    return (double)(loki_now_ns() - d->t0_ns) / 1e9;
}

/* The plan the router follows (zeros before the first), and the planner actor's counters. */
static const struct loki_plan *cur_plan(struct lokid *d)
{
    static const struct loki_plan none;
    const struct loki_plan *p = loki_planner_actor_plan(d->pa);
    return p ? p : &none;
}

static const struct loki_planner_actor_stats *pst(struct lokid *d)
{
    return loki_planner_actor_stats(d->pa);
}

static void hist_add(struct hist *h, const double *bounds, int nb, double v)
{
    int i = 0;
    while (i < nb && v > bounds[i])
        i++;
    h->b[i]++;
    h->count++;
    h->sum += v;
}

/* ---- router callbacks ---------------------------------------------------------------------- */

static uint64_t r_now(void *ctx)
{
    return loki_now_ns();
}

static int r_dispatch(void *ctx, const struct loki_router_batch *b)
{
    struct lokid *d = ctx;
    if (b->instance < 0 || b->instance >= MAX_INST)
        return -EINVAL;
    struct inst *in = &d->inst[b->instance];
    if (in->n_inflight >= MAX_BATCH_INFLIGHT || b->n > 512)
        return -EBUSY;
    struct loki_batch_query q[512];
    struct inflight *f = &in->b[in->n_inflight];
    uint64_t tn = loki_now_ns();
    bool root_task = b->task == d->topo->pipelines[b->pipeline].root;
    f->batch_id = b->batch_id;
    f->t_ns = tn;
    f->pipeline = b->pipeline;
    f->task = b->task;
    f->variant = b->variant;
    f->n = b->n;
    for (int i = 0; i < b->n; i++) {
        uint64_t c = b->items[i].cookie;
        struct root *r = &d->roots[(uint32_t)c];
        f->cookies[i] = c;
        if (root_task && !r->queued_seen) {
            r->queued_seen = true;
            hist_add(&d->queue_h[b->pipeline], time_bounds, HIST_T,
                     (double)(tn - r->arrival_ns) / 1e9);
        }
        q[i].query_id = b->items[i].query_id;
        q[i].sub_query_id = b->items[i].sub;
        q[i].deadline_ns = 0;
        q[i].payload = d->roots[(uint32_t)c].payload;
    }
    struct loki_batch_desc desc = {.batch_id = b->batch_id,
                                   .instance_id = (uint32_t)b->instance,
                                   .variant = (uint32_t)b->variant,
                                   .n_queries = (uint32_t)b->n,
                                   .queries = q};
    int rc = loki_sup_send(d->sup, b->instance, &desc);
    if (rc)
        return rc;
    in->n_inflight++;
    hist_add(&d->vm[b->pipeline][b->task][b->variant].batch, batch_bounds, HIST_B, b->n);
    return 0;
}

static void path_strings(struct lokid *d, const struct loki_router_completion *c)
{
    const struct loki_pipeline *p = &d->topo->pipelines[c->pipeline];
    int chains[LOKI_MAX_TASKS * 8][LOKI_MAX_TASKS], len[LOKI_MAX_TASKS * 8];
    int n = loki_pipeline_chains(p, chains, len, LOKI_MAX_TASKS * 8);
    d->reply.n_paths = 0;
    for (int ch = 0; ch < n && d->reply.n_paths < LOKI_PROTO_MAX_PATHS; ch++) {
        char *s = d->paths[d->reply.n_paths];
        size_t cap = sizeof(d->paths[0]), k = 0;
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
        for (uint32_t j = 0; j < d->reply.n_paths; j++)
            dup |= !strcmp(d->paths[j], s);
        if (!dup) {
            d->reply.paths[d->reply.n_paths] = loki_bytes_str(s);
            d->reply.n_paths++;
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

static void release_root(struct lokid *d, uint32_t c)
{
    struct root *r = &d->roots[c];
    if (r->payload.len)
        loki_arena_free(loki_sup_arena(d->sup), r->payload);
    r->used = false;
    r->conn = NULL;
    d->free_roots[d->n_free++] = c;
}

static void r_complete(void *ctx, const struct loki_router_completion *c)
{
    struct lokid *d = ctx;
    uint32_t slot = (uint32_t)c->cookie;
    struct root *r = &d->roots[slot];
    struct loki_reply *rep = &d->reply;
    LOKI_BUG_ON(!r->used || r->gen != (uint32_t)(c->cookie >> 32));
    if (c->status == LOKI_QUERY_OK || c->status == LOKI_QUERY_LATE)
        hist_add(&d->e2e_h[c->pipeline], time_bounds, HIST_T, c->latency_ms / 1e3);
    const struct loki_pipeline *pl = &d->topo->pipelines[c->pipeline];
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
    rep->n_outputs = 0;
    rep->n_paths = 0;
    if (c->status == LOKI_QUERY_OK || c->status == LOKI_QUERY_LATE) {
        for (int i = 0; i < r->n_out && i < ROOT_OUT_MAX; i++) {
            rep->outputs[i].ptr = r->out[i];
            rep->outputs[i].len = r->out_len[i];
        }
        rep->n_outputs = r->n_out < ROOT_OUT_MAX ? r->n_out : ROOT_OUT_MAX;
        path_strings(d, c);
    }
    if (c->status == LOKI_QUERY_OVERLOADED) {
        rep->has_retry_after = true;
        rep->retry_after_ms = RETRY_AFTER_MS;
        rep->error = loki_bytes_str("planned capacity exceeded; retry later");
    } else if (c->status == LOKI_QUERY_DROPPED) {
        rep->error = loki_bytes_str("could no longer meet its deadline; dropped early");
    } else if (c->status == LOKI_QUERY_ERROR) {
        rep->error = loki_bytes_str("a worker failed while serving this query");
    }
    loki_frontend_reply(r->conn, r->id, rep);
    release_root(d, slot);
}

static void r_instance_start(void *ctx, int instance, const struct loki_plan_instance *pi)
{
    struct lokid *d = ctx;
    if (instance < 0 || instance >= MAX_INST) {
        loki_log(LOKI_LOG_ERROR, "router instance id %d beyond the supervisor's table", instance);
        return;
    }
    int rc = loki_sup_start(d->sup, instance, pi);
    const struct loki_variant *v =
        &d->topo->pipelines[pi->pipeline].tasks[pi->task].variants[pi->variant];
    if (rc) {
        loki_log(LOKI_LOG_ERROR, "start worker %d (%s): %s", instance, v->name, loki_strerror(rc));
        loki_router_instance_failed(d->router, instance);
        return;
    }
    d->inst[instance].live = true;
    d->inst[instance].n_inflight = 0;
    loki_router_instance_bind(d->router, instance, (uint64_t)instance);
    int fv = loki_plan_fallback(pi);
    loki_log(LOKI_LOG_INFO, "worker %d starting: %s batch %d share %.2f gpu %d pid %d%s%s",
             instance, v->name, pi->batch, pi->share, pi->gpu, loki_sup_pid(d->sup, instance),
             fv >= 0 ? " fallback " : "",
             fv >= 0 ? d->topo->pipelines[pi->pipeline].tasks[pi->task].variants[fv].name : "");
}

static void r_instance_stop(void *ctx, int instance, uint64_t handle)
{
    struct lokid *d = ctx;
    if (instance >= 0 && instance < MAX_INST) {
        d->inst[instance].live = false;
        loki_sup_stop(d->sup, instance);
        loki_log(LOKI_LOG_INFO, "worker %d stopping (plan change)", instance);
    }
}

/* ---- supervisor callbacks ------------------------------------------------------------------ */

static void s_ready(void *ctx, int inst)
{
    struct lokid *d = ctx;
    loki_router_instance_ready(d->router, inst);
    loki_log(LOKI_LOG_INFO, "worker %d ready", inst);
}

static void s_result(void *ctx, int inst, struct loki_batch_view *v)
{
    struct lokid *d = ctx;
    struct inst *in = &d->inst[inst];
    int k = -1;
    for (int i = 0; i < in->n_inflight; i++)
        if (in->b[i].batch_id == v->batch_id)
            k = i;
    if (k < 0)
        return; /* a batch the router already re-ran elsewhere */
    struct inflight f = in->b[k];
    struct var_metrics *vm = &d->vm[f.pipeline][f.task][f.variant];
    hist_add(&vm->compute, time_bounds, HIST_T, (double)(loki_now_ns() - f.t_ns) / 1e9);
    memmove(&in->b[k], &in->b[k + 1], sizeof(in->b[0]) * (size_t)(in->n_inflight - k - 1));
    in->n_inflight--;

    uint16_t children[512 * LOKI_MAX_CHILDREN];
    uint8_t failed[512];
    struct loki_batch_result_query q;
    int i = 0, n_children = 0;
    while (i < f.n && loki_batch_next_result(v, &q) == 1) {
        struct root *r = &d->roots[(uint32_t)f.cookies[i]];
        /* a sibling may have been dropped already: its root is answered (and maybe reused) */
        bool current = r->used && r->gen == (uint32_t)(f.cookies[i] >> 32);
        failed[i] = q.status != 0;
        n_children = (int)q.n_fanout;
        for (uint32_t c = 0; c < q.n_fanout && c < LOKI_MAX_CHILDREN; c++)
            children[i * LOKI_MAX_CHILDREN + c] =
                (uint16_t)(q.fanout[c] > 65535 ? 65535 : q.fanout[c]);
        /* leaf outputs become the reply's outputs */
        if (current && q.status == 0 && q.n_fanout == 0 && q.out_kind == LOKI_BATCH_OUT_INLINE &&
            r->n_out < ROOT_OUT_MAX) {
            memcpy(r->out[r->n_out], q.inline_data, q.inline_len);
            r->out_len[r->n_out] = (uint8_t)q.inline_len;
            r->n_out++;
        }
        i++;
    }
    for (; i < f.n; i++)
        failed[i] = 1; /* fewer results than queries: a worker bug, fail them explicitly */
    for (i = 0; i < f.n; i++)
        vm->failed += failed[i];
    /* the router wants n x n_children, packed with the task's child count */
    uint16_t packed[512 * LOKI_MAX_CHILDREN];
    if (n_children) {
        for (int a = 0; a < f.n; a++)
            for (int c = 0; c < n_children; c++)
                packed[a * n_children + c] = children[a * LOKI_MAX_CHILDREN + c];
    }
    loki_router_batch_done(d->router, inst, f.batch_id, n_children ? packed : NULL, failed);
}

static void on_restart_timer(uv_timer_t *t)
{
    struct lokid *d = t->data;
    if (d->draining || d->stopping)
        return;
    const struct loki_plan *p = loki_router_plan(d->router);
    if (p) {
        memcpy(d->plan_restart, p, sizeof(*p));
        loki_router_set_plan(d->router, d->plan_restart); /* starts what is missing */
    }
}

static void s_exited(void *ctx, int inst, int64_t status, int term_signal, bool expected)
{
    struct lokid *d = ctx;
    struct inst *in = &d->inst[inst];
    in->live = false;
    in->n_inflight = 0;
    if (expected) {
        loki_log(LOKI_LOG_INFO, "worker %d exited (status %lld)", inst, (long long)status);
        return;
    }
    loki_log(LOKI_LOG_WARN, "worker %d died (status %lld, signal %d): re-running its batches", inst,
             (long long)status, term_signal);
    loki_router_instance_failed(d->router, inst);
    if (d->draining || d->stopping)
        return;
    /* restart with backoff: 100 ms doubling to 5 s */
    in->restarts++;
    uint64_t delay = 100u << (in->restarts < 6 ? in->restarts - 1 : 5);
    if (delay > 5000)
        delay = 5000;
    uv_timer_start(&d->restart_timer, on_restart_timer, delay, 0);
}

/* ---- frontend callbacks -------------------------------------------------------------------- */

/* Answer request @id at once with @status (overloaded ones carry the retry hint). */
static void reply_now(struct lokid *d, struct loki_frontend_conn *conn, uint64_t id,
                      enum loki_status status, const char *why)
{
    struct loki_reply *rep = &d->reply;
    memset(rep, 0, offsetof(struct loki_reply, outputs));
    rep->status = status;
    if (status == LOKI_STATUS_OVERLOADED) {
        rep->has_retry_after = true;
        rep->retry_after_ms = RETRY_AFTER_MS;
    }
    rep->error = loki_bytes_str(why);
    loki_frontend_reply(conn, id, rep);
}

static void fe_request(void *ctx, struct loki_frontend_conn *conn, const struct loki_request *req)
{
    struct lokid *d = ctx;
    if (!d->n_free) {
        reply_now(d, conn, req->id, LOKI_STATUS_OVERLOADED, "too many queries in flight");
        return;
    }
    uint32_t slot = d->free_roots[--d->n_free];
    struct root *r = &d->roots[slot];
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
        int rc = loki_arena_alloc(loki_sup_arena(d->sup), req->payload.len, &r->payload, &p);
        if (rc) {
            memset(&r->payload, 0, sizeof(r->payload));
            reply_now(d, conn, req->id, LOKI_STATUS_OVERLOADED, "payload arena full");
            release_root(d, slot);
            return;
        }
        memcpy(p, req->payload.ptr, req->payload.len);
    }
    uint64_t deadline = 0;
    if (req->has_deadline)
        deadline = loki_now_ns() + (uint64_t)(req->deadline_ms * 1e6);
    uint64_t cookie = slot | (uint64_t)r->gen << 32;
    int rc = loki_router_submit(d->router, req->pipeline_index, req->id, cookie, deadline);
    /* each arrival in the one-second window it arrived in, as the replay harness counts it */
    if (!rc || rc == LOKI_EOVERLOADED)
        loki_planner_actor_arrival(d->pa, req->pipeline_index,
                                   (double)(r->arrival_ns - d->t0_ns) / 1e9);
    if (rc && rc != LOKI_EOVERLOADED) {
        /* no completion was delivered for an invalid submission: answer here */
        reply_now(d, conn, req->id, LOKI_STATUS_ERROR, loki_strerror(rc));
        release_root(d, slot);
    }
}

static bool fe_ready(void *ctx)
{
    struct lokid *d = ctx;
    return d->ready && !d->draining;
}

static int fe_metrics(void *ctx, struct loki_metric *out, int max)
{
    struct lokid *d = ctx;
    const struct loki_router_stats *st = loki_router_stats(d->router);
    double gpus = 0;
    int n_inst = loki_router_instances(d->router, &gpus);
    const struct loki_router_pipeline_stats *p = &st->pipe[0];
    const struct {
        const char *name;
        double v;
    } m[] = {
        {"loki_queries_arrived_total", (double)p->arrived},
        {"loki_queries_ok_total", (double)p->ok},
        {"loki_queries_dropped_total", (double)p->dropped},
        {"loki_queries_late_total", (double)p->late},
        {"loki_queries_error_total", (double)p->error},
        {"loki_queries_overloaded_total", (double)p->overloaded},
        {"loki_subqueries_total", (double)p->sub_created},
        {"loki_subquery_violations_total", (double)p->sub_violations},
        {"loki_rerouted_total", (double)p->rerouted},
        {"loki_fallback_total", (double)p->fallback},
        {"loki_instances", (double)n_inst},
        {"loki_gpus_in_use", gpus},
        {"loki_demand_qps", loki_planner_actor_estimate(d->pa, 0)},
        {"loki_plan_accuracy", 100 * cur_plan(d)->accuracy[0]},
        {"loki_plan_mode", loki_planner_actor_plan(d->pa) ? (double)cur_plan(d)->mode : -1},
        {"loki_planner_solve_ms", cur_plan(d)->solve_ms},
        {"loki_plans_applied_total", (double)pst(d)->plans_applied},
        {"loki_roots_inflight", (double)st->roots_inflight},
    };
    int n = 0;
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]) && n < max; i++, n++) {
        out[n].name = loki_bytes_str(m[i].name);
        out[n].value = m[i].v;
    }
    return n;
}

/* ---- reports: status (table, json) and Prometheus ------------------------------------------- */

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 16384;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

/* @s as a JSON string or a Prometheus label value (same escapes for our names). */
static void sb_quoted(struct sbuf *b, const char *s)
{
    sb_printf(b, "\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            sb_printf(b, "\\%c", *s);
        else if (*s == '\n')
            sb_printf(b, "\\n");
        else if ((unsigned char)*s >= 0x20)
            sb_printf(b, "%c", *s);
    }
    sb_printf(b, "\"");
}

static void snap_now(struct lokid *d, int p, struct snap *o)
{
    const struct loki_router_stats *st = loki_router_stats(d->router);
    const struct loki_router_pipeline_stats *ps = &st->pipe[p];
    const struct loki_pipeline *pl = &d->topo->pipelines[p];
    memset(o, 0, sizeof(*o));
    o->arrived = ps->arrived;
    o->ok = ps->ok;
    o->dropped = ps->dropped;
    o->late = ps->late;
    o->error = ps->error;
    o->overloaded = ps->overloaded;
    o->sub = ps->sub_created;
    o->sub_viol = ps->sub_violations;
    o->acc_sum = ps->acc_sum;
    o->acc_sub_sum = ps->acc_sub_sum;
    for (int t = 0; t < pl->n_tasks; t++)
        for (int v = 0; v < pl->tasks[t].n_variants; v++)
            o->stage_drop[t] += st->var[p][t][v].dropped;
}

/* Counters of pipeline @p over the last minute (or since start); returns the window, s. */
static double last_minute(struct lokid *d, int p, struct snap *o)
{
    struct snap cur;
    snap_now(d, p, &cur);
    double t = now_s(d), t0 = 0;
    struct snap base;
    memset(&base, 0, sizeof(base));
    if (d->win_n) {
        /* oldest snapshot in the ring: about WINDOW_S seconds ago once it is full */
        int i = (d->win_head - d->win_n + WINDOW_S + 1) % (WINDOW_S + 1);
        base = d->win[i].p[p];
        t0 = d->win[i].t;
    }
    o->arrived = cur.arrived - base.arrived;
    o->ok = cur.ok - base.ok;
    o->dropped = cur.dropped - base.dropped;
    o->late = cur.late - base.late;
    o->error = cur.error - base.error;
    o->overloaded = cur.overloaded - base.overloaded;
    o->sub = cur.sub - base.sub;
    o->sub_viol = cur.sub_viol - base.sub_viol;
    o->acc_sum = cur.acc_sum - base.acc_sum;
    o->acc_sub_sum = cur.acc_sub_sum - base.acc_sub_sum;
    for (int k = 0; k < LOKI_MAX_TASKS; k++)
        o->stage_drop[k] = cur.stage_drop[k] - base.stage_drop[k];
    return t - t0;
}

static void on_tick(uv_timer_t *tm)
{
    struct lokid *d = tm->data;
    double t = now_s(d);
    struct snap_set *w = &d->win[d->win_head];
    w->t = t;
    for (int p = 0; p < d->topo->n_pipelines; p++)
        snap_now(d, p, &w->p[p]);
    d->win_head = (d->win_head + 1) % (WINDOW_S + 1);
    if (d->win_n < WINDOW_S + 1)
        d->win_n++;
    loki_log_query_tick();
}

/* Violations: dropped, late or failed among the answered (refusals are counted apart). */
static double violation_ratio(const struct snap *m)
{
    uint64_t answered = m->ok + m->dropped + m->late + m->error;
    return answered ? (double)(m->dropped + m->late + m->error) / (double)answered : 0;
}

/* Parent task of @t in @pl, or -1 for the root. */
static int parent_task(const struct loki_pipeline *pl, int t)
{
    for (int u = 0; u < pl->n_tasks; u++)
        for (int c = 0; c < pl->tasks[u].n_children; c++)
            if (pl->tasks[u].children[c] == t)
                return u;
    return -1;
}

/* The fallback the instances of variant @v of task @t load (the first one found), or -1. */
static int variant_fallback(const struct loki_plan *plan, int p, int t, int v)
{
    for (int i = 0; i < plan->n_instances; i++) {
        const struct loki_plan_instance *pi = &plan->inst[i];
        if (pi->pipeline == p && pi->task == t && pi->variant == v && pi->fallback)
            return loki_plan_fallback(pi);
    }
    return -1;
}

/* GPU indexes hosting instances of (p, t, v) in @plan, as "0,1" into @out. */
static void variant_gpus(const struct loki_plan *plan, int p, int t, int v, char *out, size_t cap,
                         bool json)
{
    bool on[256] = {0};
    size_t k = 0;
    out[0] = 0;
    for (int i = 0; i < plan->n_instances; i++) {
        const struct loki_plan_instance *pi = &plan->inst[i];
        if (pi->pipeline == p && pi->task == t && pi->variant == v && pi->gpu >= 0 && pi->gpu < 256)
            on[pi->gpu] = true;
    }
    for (int g = 0; g < 256 && k + 8 < cap; g++)
        if (on[g])
            k += (size_t)snprintf(out + k, cap - k, "%s%d", k ? "," : "", g);
    if (!k && !json)
        snprintf(out, cap, "-");
}

static void status_json(struct lokid *d, struct sbuf *b)
{
    const struct loki_plan *pl_ = cur_plan(d);
    double gpus = 0;
    int n_inst = loki_router_instances(d->router, &gpus);
    sb_printf(b,
              "{\"ready\":%s,\"draining\":%s,\"uptime_s\":%.3f,\"policy\":\"%s\",\"mode\":\"%s\","
              "\"transitioning\":%s,\"plans_applied\":%llu,\"plans_kept\":%llu,"
              "\"plan_age_s\":%.3f,\"solves\":%llu,\"solve_ms\":%.3f,\"metrics_port\":%d,"
              "\"instances\":%d,\"gpus\":{\"count\":%d,\"in_use\":%.4f,\"active\":%d},"
              "\"pipelines\":[",
              d->ready && !d->draining ? "true" : "false", d->draining ? "true" : "false", now_s(d),
              loki_policy_name(pl_->policy), loki_plan_mode_name(pl_->mode),
              loki_router_is_transitioning(d->router) ? "true" : "false",
              (unsigned long long)pst(d)->plans_applied, (unsigned long long)pst(d)->plans_kept,
              now_s(d) - pst(d)->last_change_s, (unsigned long long)pst(d)->solves,
              pst(d)->last_solve_ms, d->http_on ? d->http_port : -1, n_inst, d->topo->gpus.count,
              gpus, pl_->gpus_active);
    for (int p = 0; p < d->topo->n_pipelines; p++) {
        const struct loki_pipeline *pl = &d->topo->pipelines[p];
        struct snap m;
        double win = last_minute(d, p, &m);
        sb_printf(b, "%s{\"name\":", p ? "," : "");
        sb_quoted(b, pl->name);
        sb_printf(
            b,
            ",\"slo_ms\":%.3f,\"demand\":{\"estimate_qps\":%.3f,\"planned_qps\":%.3f,"
            "\"served_fraction\":%.4f},\"accuracy\":{\"predicted\":%.3f,"
            "\"predicted_subquery\":%.3f,\"served\":%.3f,\"served_subquery\":%.3f},"
            "\"last_minute\":{\"window_s\":%.3f,\"arrived\":%llu,\"ok\":%llu,\"dropped\":%llu,"
            "\"late\":%llu,\"error\":%llu,\"overloaded\":%llu,\"violations\":%llu,"
            "\"violation_ratio\":%.6f,\"sub_queries\":%llu,\"sub_violations\":%llu,"
            "\"drops_by_stage\":{",
            pl->slo_ms, loki_planner_actor_estimate(d->pa, p), pl_->demand_qps[p],
            pl_->served_fraction[p], 100 * pl_->accuracy[p], 100 * pl_->accuracy_subquery[p],
            m.ok ? m.acc_sum / (double)m.ok : 0, m.ok ? m.acc_sub_sum / (double)m.ok : 0, win,
            (unsigned long long)m.arrived, (unsigned long long)m.ok, (unsigned long long)m.dropped,
            (unsigned long long)m.late, (unsigned long long)m.error,
            (unsigned long long)m.overloaded, (unsigned long long)(m.dropped + m.late + m.error),
            violation_ratio(&m), (unsigned long long)m.sub, (unsigned long long)m.sub_viol);
        for (int t = 0; t < pl->n_tasks; t++) {
            sb_printf(b, "%s", t ? "," : "");
            sb_quoted(b, pl->tasks[t].name);
            sb_printf(b, ":%llu", (unsigned long long)m.stage_drop[t]);
        }
        sb_printf(b, "}},\"variants\":[");
        bool first = true;
        const struct loki_router_stats *st = loki_router_stats(d->router);
        for (int t = 0; t < pl->n_tasks; t++)
            for (int v = 0; v < pl->tasks[t].n_variants; v++) {
                const struct loki_plan_variant *pv = &pl_->var[p][t][v];
                if (!pv->instances)
                    continue;
                char g[512];
                variant_gpus(pl_, p, t, v, g, sizeof(g), true);
                sb_printf(b, "%s{\"task\":", first ? "" : ",");
                sb_quoted(b, pl->tasks[t].name);
                sb_printf(b, ",\"variant\":");
                sb_quoted(b, pl->tasks[t].variants[v].name);
                sb_printf(b,
                          ",\"accuracy\":%.3f,\"instances\":%d,\"batch\":%d,\"share\":%.4f,"
                          "\"gpus\":[%s],\"capacity_qps\":%.3f,\"load_qps\":%.3f,"
                          "\"dropped_total\":%llu,\"fallback_total\":%llu,\"fallback\":",
                          pl->tasks[t].variants[v].accuracy, pv->instances, pv->batch, pv->share, g,
                          pv->capacity_qps, pv->load_qps,
                          (unsigned long long)st->var[p][t][v].dropped,
                          (unsigned long long)st->var[p][t][v].fallback);
                int fv = variant_fallback(pl_, p, t, v);
                if (fv >= 0)
                    sb_quoted(b, pl->tasks[t].variants[fv].name);
                else
                    sb_printf(b, "null");
                sb_printf(b, "}");
                first = false;
            }
        sb_printf(b, "],\"splits\":[");
        first = true;
        for (int t = 0; t < pl->n_tasks; t++) {
            int par = parent_task(pl, t);
            int nu = par < 0 ? 1 : pl->tasks[par].n_variants;
            for (int u = 0; u < nu; u++) {
                if (par >= 0 && !pl_->var[p][par][u].instances)
                    continue;
                sb_printf(b, "%s{\"task\":", first ? "" : ",");
                sb_quoted(b, pl->tasks[t].name);
                sb_printf(b, ",\"from\":");
                sb_quoted(b, par < 0 ? "" : pl->tasks[par].variants[u].name);
                sb_printf(b, ",\"to\":{");
                bool f2 = true;
                for (int v = 0; v < pl->tasks[t].n_variants; v++) {
                    float x = pl_->split[p][t][u][v];
                    if (x <= 0)
                        continue;
                    sb_printf(b, "%s", f2 ? "" : ",");
                    sb_quoted(b, pl->tasks[t].variants[v].name);
                    sb_printf(b, ":%.4f", x);
                    f2 = false;
                }
                sb_printf(b, "}}");
                first = false;
            }
        }
        sb_printf(b, "]}");
    }
    sb_printf(b, "]}\n");
}

static void status_table(struct lokid *d, struct sbuf *b)
{
    const struct loki_plan *pl_ = cur_plan(d);
    double gpus = 0;
    int n_inst = loki_router_instances(d->router, &gpus);
    sb_printf(b,
              "lokid %s%s, up %.1f s; policy %s, mode %s%s; plans applied %llu (last %.1f s ago), "
              "kept %llu; last solve %.1f ms\n",
              d->ready ? "ready" : "not ready", d->draining ? ", draining" : "", now_s(d),
              loki_policy_name(pl_->policy), loki_plan_mode_name(pl_->mode),
              loki_router_is_transitioning(d->router) ? " (reconfiguring)" : "",
              (unsigned long long)pst(d)->plans_applied, now_s(d) - pst(d)->last_change_s,
              (unsigned long long)pst(d)->plans_kept, pst(d)->last_solve_ms);
    sb_printf(b, "GPUs: %.2f in use on %d of %d; %d instances\n", gpus, pl_->gpus_active,
              d->topo->gpus.count, n_inst);
    for (int p = 0; p < d->topo->n_pipelines; p++) {
        const struct loki_pipeline *pl = &d->topo->pipelines[p];
        struct snap m;
        double win = last_minute(d, p, &m);
        sb_printf(b, "\npipeline %s (SLO %.0f ms)\n", pl->name, pl->slo_ms);
        sb_printf(
            b, "  demand    %.1f qps estimated, plan carries %.1f qps, served fraction %.3f\n",
            loki_planner_actor_estimate(d->pa, p), pl_->demand_qps[p], pl_->served_fraction[p]);
        sb_printf(b, "  accuracy  predicted %.2f (per sub-query %.2f), served %.2f (last %.0f s)\n",
                  100 * pl_->accuracy[p], 100 * pl_->accuracy_subquery[p],
                  m.ok ? m.acc_sum / (double)m.ok : 0, win);
        sb_printf(b,
                  "  last %.0f s: %llu arrived, %llu ok, %llu dropped, %llu late, %llu error, "
                  "%llu overloaded; violations %.2f %% (sub-queries %.2f %%)\n",
                  win, (unsigned long long)m.arrived, (unsigned long long)m.ok,
                  (unsigned long long)m.dropped, (unsigned long long)m.late,
                  (unsigned long long)m.error, (unsigned long long)m.overloaded,
                  100 * violation_ratio(&m),
                  m.sub ? 100.0 * (double)m.sub_viol / (double)m.sub : 0);
        sb_printf(b, "  drops by stage:");
        for (int t = 0; t < pl->n_tasks; t++)
            sb_printf(b, " %s %llu", pl->tasks[t].name, (unsigned long long)m.stage_drop[t]);
        sb_printf(b, "\n  %-16s %-20s %5s %5s %6s %-10s %10s %10s  %s\n", "TASK", "VARIANT", "INST",
                  "BATCH", "SHARE", "GPUS", "CAP/s", "LOAD/s", "FALLBACK");
        for (int t = 0; t < pl->n_tasks; t++)
            for (int v = 0; v < pl->tasks[t].n_variants; v++) {
                const struct loki_plan_variant *pv = &pl_->var[p][t][v];
                if (!pv->instances)
                    continue;
                char g[512];
                variant_gpus(pl_, p, t, v, g, sizeof(g), false);
                int fv = variant_fallback(pl_, p, t, v);
                sb_printf(b, "  %-16s %-20s %5d %5d %6.2f %-10s %10.1f %10.1f  %s\n",
                          pl->tasks[t].name, pl->tasks[t].variants[v].name, pv->instances,
                          pv->batch, pv->share, g, pv->capacity_qps, pv->load_qps,
                          fv >= 0 ? pl->tasks[t].variants[fv].name : "-");
            }
        sb_printf(b, "  splits:\n");
        for (int t = 0; t < pl->n_tasks; t++) {
            int par = parent_task(pl, t);
            int nu = par < 0 ? 1 : pl->tasks[par].n_variants;
            for (int u = 0; u < nu; u++) {
                if (par >= 0 && !pl_->var[p][par][u].instances)
                    continue;
                sb_printf(b, "    %s <- %s:", pl->tasks[t].name,
                          par < 0 ? "(arrivals)" : pl->tasks[par].variants[u].name);
                for (int v = 0; v < pl->tasks[t].n_variants; v++)
                    if (pl_->split[p][t][u][v] > 0)
                        sb_printf(b, " %s %.2f", pl->tasks[t].variants[v].name,
                                  pl_->split[p][t][u][v]);
                sb_printf(b, "\n");
            }
        }
    }
}

/* One metric family header. */
static void prom_head(struct sbuf *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Labels {pipeline="..",task="..",variant=".."}; @t/@v < 0 leave those out. */
static void prom_labels(struct sbuf *b, struct lokid *d, int p, int t, int v, const char *extra)
{
    const struct loki_pipeline *pl = &d->topo->pipelines[p];
    sb_printf(b, "{pipeline=");
    sb_quoted(b, pl->name);
    if (t >= 0) {
        sb_printf(b, ",task=");
        sb_quoted(b, pl->tasks[t].name);
    }
    if (v >= 0) {
        sb_printf(b, ",variant=");
        sb_quoted(b, pl->tasks[t].variants[v].name);
    }
    sb_printf(b, "%s%s}", extra ? "," : "", extra ? extra : "");
}

static void prom_hist(struct sbuf *b, struct lokid *d, const char *name, int p, int t, int v,
                      const struct hist *h, const double *bounds, int nb)
{
    uint64_t cum = 0;
    char le[48];
    for (int i = 0; i <= nb; i++) {
        cum += h->b[i];
        if (i < nb)
            snprintf(le, sizeof(le), "le=\"%g\"", bounds[i]);
        else
            snprintf(le, sizeof(le), "le=\"+Inf\"");
        sb_printf(b, "%s_bucket", name);
        prom_labels(b, d, p, t, v, le);
        sb_printf(b, " %llu\n", (unsigned long long)cum);
    }
    sb_printf(b, "%s_sum", name);
    prom_labels(b, d, p, t, v, NULL);
    sb_printf(b, " %.9g\n%s_count", h->sum, name);
    prom_labels(b, d, p, t, v, NULL);
    sb_printf(b, " %llu\n", (unsigned long long)h->count);
}

static void prometheus(struct lokid *d, struct sbuf *b)
{
    const struct loki_router_stats *st = loki_router_stats(d->router);
    const struct loki_plan *pl_ = cur_plan(d);
    const int np = d->topo->n_pipelines;
    static const struct {
        const char *name, *help;
        size_t off;
    } pc[] = {
#define PC(n, f, h) {"loki_" n, h, offsetof(struct loki_router_pipeline_stats, f)}
        PC("request_total", arrived, "Root queries that arrived."),
        PC("request_success_total", ok, "Root queries served within the deadline."),
        PC("request_failure_total", error, "Root queries failed by a worker."),
        PC("request_drop_total", dropped, "Root queries dropped early (deadline unreachable)."),
        PC("request_late_total", late, "Root queries served after the deadline."),
        PC("request_overloaded_total", overloaded,
           "Root queries refused by admission control (no worker time spent)."),
        PC("request_rerouted_total", rerouted, "Sub-queries rerouted to a faster variant."),
        PC("request_fallback_total", fallback,
           "Sub-queries run on an instance's fallback variant (burst overflow)."),
        PC("subquery_total", sub_created, "Sub-queries created (root included)."),
        PC("subquery_violation_total", sub_violations,
           "Sub-queries dropped or finished after the deadline."),
#undef PC
    };
    for (size_t i = 0; i < sizeof(pc) / sizeof(pc[0]); i++) {
        prom_head(b, pc[i].name, "counter", pc[i].help);
        for (int p = 0; p < np; p++) {
            sb_printf(b, "%s", pc[i].name);
            prom_labels(b, d, p, -1, -1, NULL);
            sb_printf(
                b, " %llu\n",
                (unsigned long long)*(const uint64_t *)((const char *)&st->pipe[p] + pc[i].off));
        }
    }
    static const struct {
        const char *name, *help;
        size_t off;
    } vc[] = {
#define VC(n, f, h) {"loki_variant_" n, h, offsetof(struct loki_router_variant_stats, f)}
        VC("request_total", arrived, "Sub-queries routed to this variant."),
        VC("success_total", served, "Sub-queries this variant ran in a completed batch."),
        VC("drop_total", dropped, "Sub-queries dropped early at this variant."),
        VC("late_total", late, "Sub-queries completed here after the deadline."),
        VC("rerouted_total", rerouted, "Sub-queries moved here to escape a drop."),
        VC("fallback_total", fallback, "Sub-queries run here as another variant's fallback."),
        VC("batches_total", batches, "Batches completed by this variant."),
#undef VC
    };
    for (size_t i = 0; i < sizeof(vc) / sizeof(vc[0]); i++) {
        prom_head(b, vc[i].name, "counter", vc[i].help);
        for (int p = 0; p < np; p++)
            for (int t = 0; t < d->topo->pipelines[p].n_tasks; t++)
                for (int v = 0; v < d->topo->pipelines[p].tasks[t].n_variants; v++) {
                    sb_printf(b, "%s", vc[i].name);
                    prom_labels(b, d, p, t, v, NULL);
                    sb_printf(b, " %llu\n",
                              (unsigned long long)*(
                                  const uint64_t *)((const char *)&st->var[p][t][v] + vc[i].off));
                }
    }
    prom_head(b, "loki_variant_failure_total", "counter",
              "Sub-queries a worker of this variant reported failed.");
    for (int p = 0; p < np; p++)
        for (int t = 0; t < d->topo->pipelines[p].n_tasks; t++)
            for (int v = 0; v < d->topo->pipelines[p].tasks[t].n_variants; v++) {
                sb_printf(b, "loki_variant_failure_total");
                prom_labels(b, d, p, t, v, NULL);
                sb_printf(b, " %llu\n", (unsigned long long)d->vm[p][t][v].failed);
            }
    prom_head(b, "loki_stage_drop_total", "counter", "Sub-queries dropped early at this task.");
    for (int p = 0; p < np; p++) {
        struct snap cur;
        snap_now(d, p, &cur);
        for (int t = 0; t < d->topo->pipelines[p].n_tasks; t++) {
            sb_printf(b, "loki_stage_drop_total");
            prom_labels(b, d, p, t, -1, NULL);
            sb_printf(b, " %llu\n", (unsigned long long)cur.stage_drop[t]);
        }
    }
    prom_head(b, "loki_queue_duration_seconds", "histogram",
              "Root query arrival to the dispatch of its first batch.");
    for (int p = 0; p < np; p++)
        prom_hist(b, d, "loki_queue_duration_seconds", p, -1, -1, &d->queue_h[p], time_bounds,
                  HIST_T);
    prom_head(b, "loki_request_duration_seconds", "histogram",
              "Root query arrival to reply, served queries (ok or late).");
    for (int p = 0; p < np; p++)
        prom_hist(b, d, "loki_request_duration_seconds", p, -1, -1, &d->e2e_h[p], time_bounds,
                  HIST_T);
    prom_head(b, "loki_compute_duration_seconds", "histogram",
              "Batch dispatch to result (staging behind the running batch included).");
    for (int p = 0; p < np; p++)
        for (int t = 0; t < d->topo->pipelines[p].n_tasks; t++)
            for (int v = 0; v < d->topo->pipelines[p].tasks[t].n_variants; v++)
                prom_hist(b, d, "loki_compute_duration_seconds", p, t, v, &d->vm[p][t][v].compute,
                          time_bounds, HIST_T);
    prom_head(b, "loki_batch_size", "histogram", "Sizes of dispatched batches.");
    for (int p = 0; p < np; p++)
        for (int t = 0; t < d->topo->pipelines[p].n_tasks; t++)
            for (int v = 0; v < d->topo->pipelines[p].tasks[t].n_variants; v++)
                prom_hist(b, d, "loki_batch_size", p, t, v, &d->vm[p][t][v].batch, batch_bounds,
                          HIST_B);
    static const char *const vg[][2] = {
        {"loki_variant_instances", "Instances of this variant in the current plan."},
        {"loki_variant_share", "GPU share of each instance of this variant."},
        {"loki_variant_batch_max", "Planned (maximum) batch size of this variant."},
        {"loki_variant_capacity_qps", "Planned capacity of this variant."},
        {"loki_variant_load_qps", "Predicted load on this variant under the plan."},
    };
    for (int i = 0; i < 5; i++) {
        prom_head(b, vg[i][0], "gauge", vg[i][1]);
        for (int p = 0; p < np; p++)
            for (int t = 0; t < d->topo->pipelines[p].n_tasks; t++)
                for (int v = 0; v < d->topo->pipelines[p].tasks[t].n_variants; v++) {
                    const struct loki_plan_variant *pv = &pl_->var[p][t][v];
                    double x = i == 0   ? pv->instances
                               : i == 1 ? (pv->instances ? pv->share : 0)
                               : i == 2 ? (pv->instances ? pv->batch : 0)
                               : i == 3 ? pv->capacity_qps
                                        : pv->load_qps;
                    sb_printf(b, "%s", vg[i][0]);
                    prom_labels(b, d, p, t, v, NULL);
                    sb_printf(b, " %.9g\n", x);
                }
    }
    static const char *const pg[][2] = {
        {"loki_demand_estimate_qps", "EWMA estimate of root demand."},
        {"loki_demand_planned_qps", "Root demand the current plan was solved for."},
        {"loki_plan_served_fraction", "Fraction of demand the plan serves (admission control)."},
        {"loki_accuracy_predicted", "Predicted pipeline accuracy of the plan, 0..100."},
        {"loki_accuracy_served", "Mean accuracy of the queries served in the last minute."},
        {"loki_violation_ratio", "Dropped, late or failed among answered, last minute."},
    };
    for (int i = 0; i < 6; i++) {
        prom_head(b, pg[i][0], "gauge", pg[i][1]);
        for (int p = 0; p < np; p++) {
            struct snap m;
            last_minute(d, p, &m);
            double x = i == 0   ? loki_planner_actor_estimate(d->pa, p)
                       : i == 1 ? pl_->demand_qps[p]
                       : i == 2 ? pl_->served_fraction[p]
                       : i == 3 ? 100 * pl_->accuracy[p]
                       : i == 4 ? (m.ok ? m.acc_sum / (double)m.ok : 0)
                                : violation_ratio(&m);
            sb_printf(b, "%s", pg[i][0]);
            prom_labels(b, d, p, -1, -1, NULL);
            sb_printf(b, " %.9g\n", x);
        }
    }
    double gpus = 0;
    int n_inst = loki_router_instances(d->router, &gpus);
    struct loki_frontend_stats fs;
    loki_frontend_stats(d->fe, &fs);
    const struct {
        const char *name, *type, *help;
        double v;
    } g[] = {
        {"loki_instances", "gauge", "Worker instances live in the router.", n_inst},
        {"loki_gpus_in_use", "gauge",
         "Distinct GPUs holding live instances (starting, serving or retiring).", gpus},
        {"loki_gpus_active", "gauge", "GPUs hosting an instance of the plan.", pl_->gpus_active},
        {"loki_gpus", "gauge", "GPUs in the topology.", d->topo->gpus.count},
        {"loki_planner_last_solve_seconds", "gauge", "Duration of the last solve.",
         pst(d)->last_solve_ms / 1e3},
        {"loki_planner_solve_seconds_sum", "counter", "Total time spent solving.",
         pst(d)->solve_ms_sum / 1e3},
        {"loki_planner_solves_total", "counter", "Solves completed.", (double)pst(d)->solves},
        {"loki_planner_errors_total", "counter", "Solves that failed.",
         (double)pst(d)->solve_errors},
        {"loki_plans_applied_total", "counter", "Plans applied (initial included).",
         (double)pst(d)->plans_applied},
        {"loki_plans_kept_total", "counter", "Solves whose plan hysteresis or dwell kept.",
         (double)pst(d)->plans_kept},
        {"loki_reconfiguring", "gauge", "1 while a plan change waits for new instances.",
         loki_router_is_transitioning(d->router)},
        {"loki_roots_inflight", "gauge", "Root queries in the router.", st->roots_inflight},
        {"loki_ready", "gauge", "1 when serving and not draining.", d->ready && !d->draining},
        {"loki_frontend_connections", "gauge", "Open client connections.", (double)fs.connections},
        {"loki_frontend_inflight", "gauge", "Requests delivered, not answered.",
         (double)fs.inflight},
        {"loki_frontend_requests_total", "counter", "Infer requests accepted.",
         (double)fs.requests},
        {"loki_frontend_bad_requests_total", "counter", "Requests refused as malformed.",
         (double)fs.bad_requests},
        {"loki_frontend_overloaded_total", "counter", "Requests refused by frontend limits.",
         (double)fs.overloaded},
        {"loki_frontend_draining_total", "counter", "Requests refused while draining.",
         (double)fs.draining},
    };
    for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
        prom_head(b, g[i].name, g[i].type, g[i].help);
        sb_printf(b, "%s %.9g\n", g[i].name, g[i].v);
    }
    prom_head(b, "loki_planner_mode", "gauge", "1 for the mode of the current plan.");
    for (int m = LOKI_MODE_HARDWARE; m <= LOKI_MODE_STATIC; m++)
        sb_printf(b, "loki_planner_mode{mode=\"%s\"} %d\n",
                  loki_plan_mode_name((enum loki_plan_mode)m), (int)pl_->mode == m);
}

/* Render a report into d->rep (kept until the next one). Returns 0 or -EINVAL/-ENOMEM. */
static int render(struct lokid *d, enum loki_msg_type type, struct loki_bytes format)
{
    d->rep.len = 0;
    d->rep.oom = false;
    if (type == LOKI_MSG_STATUS && loki_bytes_eq(format, "json"))
        status_json(d, &d->rep);
    else if (type == LOKI_MSG_STATUS && loki_bytes_eq(format, "table"))
        status_table(d, &d->rep);
    else if (type == LOKI_MSG_METRICS && loki_bytes_eq(format, "prometheus"))
        prometheus(d, &d->rep);
    else
        return -EINVAL;
    return d->rep.oom ? -ENOMEM : 0;
}

static int fe_report(void *ctx, enum loki_msg_type type, struct loki_bytes format,
                     struct loki_bytes *out, char *err, size_t errlen)
{
    struct lokid *d = ctx;
    int rc = render(d, type, format);
    if (rc == -ENOMEM)
        snprintf(err, errlen, "out of memory rendering the report");
    else if (rc)
        snprintf(err, errlen, "field 'format': %s reports are %s", loki_msg_type_name(type),
                 type == LOKI_MSG_STATUS ? "\"table\" or \"json\"" : "\"prometheus\"");
    if (rc)
        return rc;
    out->ptr = (const uint8_t *)d->rep.p;
    out->len = (uint32_t)d->rep.len;
    return 0;
}

/* ---- Prometheus over HTTP on 127.0.0.1 --------------------------------------------------- */

static void http_closed(uv_handle_t *h)
{
    struct http_conn *c = h->data;
    struct lokid *d = c->d;
    *c->pprev = c->next;
    if (c->next)
        c->next->pprev = c->pprev;
    d->n_http--;
    free(c->resp);
    free(c);
}

static void http_close(struct http_conn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->h))
        uv_close((uv_handle_t *)&c->h, http_closed);
}

static void http_written(uv_write_t *w, int status)
{
    http_close(w->data);
}

static void http_respond(struct http_conn *c, const char *code, const char *ctype, const char *body,
                         size_t len)
{
    char head[256];
    int hn = snprintf(head, sizeof(head),
                      "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      code, ctype, len);
    c->resp = malloc((size_t)hn + len);
    if (!c->resp) {
        http_close(c);
        return;
    }
    memcpy(c->resp, head, (size_t)hn);
    memcpy(c->resp + hn, body, len);
    c->answered = true;
    uv_buf_t buf = uv_buf_init(c->resp, (unsigned)((size_t)hn + len));
    c->w.data = c;
    if (uv_write(&c->w, (uv_stream_t *)&c->h, &buf, 1, http_written))
        http_close(c);
}

static void http_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct http_conn *c = h->data;
    *buf = uv_buf_init(c->req + c->len, (unsigned)(sizeof(c->req) - 1 - c->len));
}

static void http_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct http_conn *c = s->data;
    if (n < 0) {
        http_close(c);
        return;
    }
    if (c->answered)
        return;
    c->len += (size_t)n;
    c->req[c->len] = 0;
    if (!strstr(c->req, "\r\n\r\n") && !strstr(c->req, "\n\n")) {
        if (c->len >= sizeof(c->req) - 1) {
            static const char m[] = "request too large\n";
            http_respond(c, "431 Request Header Fields Too Large", "text/plain", m, sizeof(m) - 1);
        }
        return;
    }
    uv_read_stop(s);
    bool get = !strncmp(c->req, "GET ", 4), head = !strncmp(c->req, "HEAD ", 5);
    const char *path = c->req + (get ? 4 : 5);
    size_t pl = strcspn(path, " ?\r\n");
    if (!get && !head) {
        static const char m[] = "only GET /metrics\n";
        http_respond(c, "405 Method Not Allowed", "text/plain", m, sizeof(m) - 1);
    } else if (pl == 8 && !strncmp(path, "/metrics", 8)) {
        struct lokid *d = c->d;
        if (render(d, LOKI_MSG_METRICS, loki_bytes_str("prometheus"))) {
            static const char m[] = "out of memory\n";
            http_respond(c, "500 Internal Server Error", "text/plain", m, sizeof(m) - 1);
        } else {
            http_respond(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", d->rep.p,
                         head ? 0 : d->rep.len);
        }
    } else {
        static const char m[] = "not found: try /metrics\n";
        http_respond(c, "404 Not Found", "text/plain", m, sizeof(m) - 1);
    }
}

static void http_accept(uv_stream_t *srv, int status)
{
    struct lokid *d = srv->data;
    if (status < 0)
        return;
    struct http_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->d = d;
    uv_tcp_init(d->loop, &c->h);
    c->h.data = c;
    c->next = d->http_conns;
    if (c->next)
        c->next->pprev = &c->next;
    c->pprev = &d->http_conns;
    d->http_conns = c;
    d->n_http++;
    if (uv_accept(srv, (uv_stream_t *)&c->h) || d->n_http > HTTP_MAX_CONNS ||
        uv_read_start((uv_stream_t *)&c->h, http_alloc, http_read))
        http_close(c);
}

/* Listen on 127.0.0.1:@port (0: any free port). Returns 0 or a negative errno. */
static int http_start(struct lokid *d, int port)
{
    struct sockaddr_in a;
    int rc = uv_ip4_addr("127.0.0.1", port, &a);
    if (!rc)
        rc = uv_tcp_init(d->loop, &d->http);
    if (rc)
        return rc;
    d->http.data = d;
    d->http_on = true;
    if ((rc = uv_tcp_bind(&d->http, (const struct sockaddr *)&a, 0)) ||
        (rc = uv_listen((uv_stream_t *)&d->http, 16, http_accept)))
        return rc;
    struct sockaddr_in got;
    int len = sizeof(got);
    if ((rc = uv_tcp_getsockname(&d->http, (struct sockaddr *)&got, &len)))
        return rc;
    d->http_port = ntohs(got.sin_port);
    return 0;
}

static void http_stop(struct lokid *d)
{
    if (d->http_on && !uv_is_closing((uv_handle_t *)&d->http))
        uv_close((uv_handle_t *)&d->http, NULL);
    for (struct http_conn *c = d->http_conns; c; c = c->next)
        http_close(c);
}

/* ---- planner actor: lokid's clock, router and thread pool ---------------------------------- */

static double pa_now(void *ctx)
{
    return now_s(ctx);
}

static int pa_apply(void *ctx, const struct loki_plan *p, const char *why)
{
    struct lokid *d = ctx;
    int rc = loki_router_set_plan(d->router, p);
    if (rc) {
        loki_log(LOKI_LOG_ERROR, "applying plan failed: %s", loki_strerror(rc));
        return rc;
    }
    loki_log(LOKI_LOG_INFO,
             "plan applied (%s): mode %s, %d instances, %.2f GPUs, predicted accuracy %.1f, "
             "demand %.1f qps, served fraction %.3f, solve %.1f ms",
             why, loki_plan_mode_name(p->mode), p->n_instances, p->gpus_used, 100 * p->accuracy[0],
             p->demand_qps[0], p->served_fraction[0], p->solve_ms);
    return 0;
}

static bool pa_busy(void *ctx)
{
    return loki_router_is_transitioning(((struct lokid *)ctx)->router);
}

static const struct loki_router_stats *pa_stats(void *ctx)
{
    return loki_router_stats(((struct lokid *)ctx)->router);
}

static void pa_solved(void *ctx, int rc, const struct loki_plan *next, double wall_ms)
{
    (void)ctx;
    (void)next;
    (void)wall_ms;
    if (rc)
        loki_log(LOKI_LOG_WARN, "planner: %s; keeping the current plan", loki_strerror(rc));
}

static int pa_offload(void *ctx)
{
    return loki_planner_uv_offload(((struct lokid *)ctx)->pu);
}

static void on_plan_timer(uv_timer_t *t)
{
    struct lokid *d = t->data;
    loki_planner_actor_tick(d->pa); /* errors are logged by pa_solved and pa_apply */
}

/* ---- readiness, drain, signals ------------------------------------------------------------- */

static void notify_systemd(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || (path[0] != '/' && path[0] != '@'))
        return;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if (n >= sizeof(a.sun_path)) {
        close(fd);
        return;
    }
    memcpy(a.sun_path, path, n);
    if (a.sun_path[0] == '@')
        a.sun_path[0] = 0;
    sendto(fd, state, strlen(state), 0, (struct sockaddr *)&a,
           (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
    close(fd);
}

/*
 * systemd's watchdog (WatchdogSec= in the unit): WATCHDOG_USEC is the interval and
 * WATCHDOG_PID, when set, the process it is meant for. Ping from the loop at half the
 * interval, so that a wedged loop stops pinging and systemd restarts lokid.
 */
static uv_timer_t watchdog_timer;
static bool watchdog_on;

static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    notify_systemd("WATCHDOG=1");
}

static void watchdog_start(uv_loop_t *loop)
{
    const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    unsigned long long us = usec ? strtoull(usec, NULL, 10) : 0;
    if (!us || (pid && strtol(pid, NULL, 10) != (long)getpid()))
        return;
    uint64_t ms = us / 2000 ? us / 2000 : 1;
    uv_timer_init(loop, &watchdog_timer);
    uv_timer_start(&watchdog_timer, on_watchdog, ms, ms);
    watchdog_on = true;
}

static uv_timer_t ready_timer;

static void check_ready(uv_timer_t *t)
{
    struct lokid *d = t->data;
    double gpus;
    int n = loki_router_instances(d->router, &gpus);
    if (d->ready || loki_router_is_transitioning(d->router) || n == 0)
        return;
    loki_planner_actor_start(d->pa);
    int rc = loki_frontend_start(d->fe);
    if (rc) {
        loki_log(LOKI_LOG_ERROR, "cannot listen on %s: %s", d->cfg.frontend.socket_path,
                 loki_strerror(rc));
        d->exit_code = 1;
        uv_timer_stop(t);
        uv_kill(getpid(), SIGTERM);
        return;
    }
    d->ready = true;
    uv_timer_stop(t);
    loki_log(LOKI_LOG_INFO, "ready: %d workers, %.2f GPUs, listening on %s", n, gpus,
             d->cfg.frontend.socket_path);
    if (d->opt.ready_fd >= 0) {
        (void)!write(d->opt.ready_fd, "ready\n", 6);
        close(d->opt.ready_fd);
        d->opt.ready_fd = -1;
    }
    notify_systemd("READY=1");
}

static void shutdown_now(struct lokid *d)
{
    if (d->stopping)
        return;
    d->stopping = true;
    loki_planner_uv_stop(d->pu);
    uv_timer_stop(&d->plan_timer);
    uv_timer_stop(&d->restart_timer);
    uv_timer_stop(&d->drain_timer);
    uv_timer_stop(&d->tick_timer);
    uv_timer_stop(&ready_timer);
    if (watchdog_on)
        uv_timer_stop(&watchdog_timer);
    loki_frontend_stop(d->fe);
    http_stop(d);
    uv_signal_stop(&d->sig_term);
    uv_signal_stop(&d->sig_int);
    uv_signal_stop(&d->sig_hup);
    uv_stop(d->loop);
}

static void on_drained(void *ctx)
{
    struct lokid *d = ctx;
    loki_log(LOKI_LOG_INFO, "drained: every accepted query answered");
    shutdown_now(d);
}

static void on_drain_timeout(uv_timer_t *t)
{
    struct lokid *d = t->data;
    loki_log(LOKI_LOG_WARN, "drain timed out; stopping");
    d->exit_code = 1;
    shutdown_now(d);
}

static void on_signal(uv_signal_t *s, int sig)
{
    struct lokid *d = s->data;
    if (d->draining) {
        shutdown_now(d);
        return;
    }
    d->draining = true;
    loki_planner_actor_freeze(d->pa, true);
    notify_systemd("STOPPING=1");
    loki_log(LOKI_LOG_INFO, "%s: draining (new queries get \"draining\")", strsignal(sig));
    double max_slo = 0;
    for (int p = 0; p < d->topo->n_pipelines; p++)
        max_slo = fmax(max_slo, d->topo->pipelines[p].slo_ms);
    uv_timer_start(&d->drain_timer, on_drain_timeout, (uint64_t)(max_slo * 4) + 10000, 0);
    loki_frontend_drain(d->fe, on_drained, d);
}

/* SIGHUP: re-estimate and solve now instead of at the next interval. */
static void on_sighup(uv_signal_t *s, int sig)
{
    struct lokid *d = s->data;
    loki_log(LOKI_LOG_INFO, "SIGHUP: re-planning now");
    on_plan_timer(&d->plan_timer);
}

/* ---- setup ---------------------------------------------------------------------------------- */

int lokid_run(const struct lokid_options *opt)
{
    static struct lokid D;
    struct lokid *d = &D;
    char err[8192];
    int rc;

    memset(d, 0, sizeof(*d));
    d->opt = *opt;
    d->t0_ns = loki_now_ns();
    loki_log_init(opt->quiet && opt->log_level < LOKI_LOG_WARN ? LOKI_LOG_WARN : opt->log_level);
    d->loop = uv_default_loop();
    if ((rc = loki_config_load(opt->topology, &d->topo, &d->cfg, err, sizeof(err)))) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    if (opt->socket)
        snprintf(d->cfg.frontend.socket_path, sizeof(d->cfg.frontend.socket_path), "%s",
                 opt->socket);
    if (opt->policy_set)
        d->topo->planner.policy = opt->policy;

    d->n_roots = d->cfg.frontend.max_inflight;
    d->roots = calloc(d->n_roots, sizeof(*d->roots));
    d->free_roots = calloc(d->n_roots, sizeof(uint32_t));
    d->plan_restart = calloc(1, sizeof(struct loki_plan));
    if (!d->roots || !d->free_roots || !d->plan_restart) {
        fprintf(stderr, "lokid: out of memory\n");
        return 1;
    }
    for (uint32_t i = 0; i < d->n_roots; i++)
        d->free_roots[d->n_free++] = d->n_roots - 1 - i;

    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
        fprintf(stderr, "lokid: cannot find own executable\n");
        return 1;
    }
    self[n] = 0;
    struct loki_sup_config sc = {.self_exe = self,
                                 .topology_path = opt->topology,
                                 .arena_bytes =
                                     opt->arena_mb ? (size_t)opt->arena_mb << 20 : (size_t)64 << 20,
                                 .ring_bytes = 1u << 16,
                                 .seed = opt->seed,
                                 .mps = true,
                                 .spin_ns = (uint64_t)(d->cfg.runtime.spin_us * 1e3)};
    struct loki_sup_ops so = {.ready = s_ready, .result = s_result, .exited = s_exited};
    if ((rc = loki_sup_create(d->loop, d->topo, &sc, &so, d, &d->sup))) {
        fprintf(stderr, "lokid: supervisor: %s\n", loki_strerror(rc));
        return 1;
    }
    struct loki_router_ops ro = {.now_ns = r_now,
                                 .dispatch = r_dispatch,
                                 .complete = r_complete,
                                 .instance_start = r_instance_start,
                                 .instance_stop = r_instance_stop};
    struct loki_router_config rcfg = {.max_roots = d->n_roots};
    if ((rc = loki_router_create(d->topo, &rcfg, &ro, d, &d->router))) {
        fprintf(stderr, "lokid: router: %s\n", loki_strerror(rc));
        return 1;
    }
    struct loki_planner_actor_ops po = {.now_s = pa_now,
                                        .apply = pa_apply,
                                        .busy = pa_busy,
                                        .stats = pa_stats,
                                        .offload = pa_offload,
                                        .solved = pa_solved};
    struct loki_planner_actor_config pc = {.serial = true};
    if ((rc = loki_planner_uv_create(d->loop, &d->pu)) ||
        (rc = loki_planner_actor_create(d->topo, &pc, &po, d, &d->pa))) {
        fprintf(stderr, "lokid: planner: %s\n", loki_strerror(rc));
        return 1;
    }
    loki_planner_uv_bind(d->pu, d->pa);
    const char *names[LOKI_MAX_PIPELINES];
    double initial[LOKI_MAX_PIPELINES];
    for (int p = 0; p < d->topo->n_pipelines; p++) {
        names[p] = d->topo->pipelines[p].name;
        initial[p] = opt->initial_demand;
    }
    struct loki_frontend_opts fo = {.cfg = &d->cfg.frontend,
                                    .pipelines = names,
                                    .n_pipelines = d->topo->n_pipelines,
                                    .on_request = fe_request,
                                    .is_ready = fe_ready,
                                    .on_metrics = fe_metrics,
                                    .on_report = fe_report,
                                    .retry_after_ms = RETRY_AFTER_MS,
                                    .ctx = d,
                                    .server_name = "lokid"};
    if ((rc = loki_frontend_create(d->loop, &fo, &d->fe))) {
        fprintf(stderr, "lokid: frontend: %s\n", loki_strerror(rc));
        return 1;
    }

    if (opt->metrics_port >= 0) {
        if ((rc = http_start(d, opt->metrics_port))) {
            fprintf(stderr, "lokid: cannot serve metrics on 127.0.0.1:%d: %s\n", opt->metrics_port,
                    uv_strerror(rc));
            return 1;
        }
        loki_log(LOKI_LOG_INFO, "metrics on http://127.0.0.1:%d/metrics", d->http_port);
    }

    /* the initial plan, for the initial demand guess, solved before serving */
    if ((rc = loki_planner_actor_initial(d->pa, initial))) {
        fprintf(stderr, "lokid: initial plan: %s\n", loki_strerror(rc));
        return 1;
    }
    if (d->opt.fixed_plan)
        loki_planner_actor_freeze(d->pa, true);

    uv_timer_init(d->loop, &d->plan_timer);
    d->plan_timer.data = d;
    uv_timer_start(&d->plan_timer, on_plan_timer, (uint64_t)d->topo->planner.interval_ms,
                   (uint64_t)d->topo->planner.interval_ms);
    uv_timer_init(d->loop, &d->restart_timer);
    d->restart_timer.data = d;
    uv_timer_init(d->loop, &d->drain_timer);
    d->drain_timer.data = d;
    uv_timer_init(d->loop, &d->tick_timer);
    d->tick_timer.data = d;
    on_tick(&d->tick_timer); /* the zero baseline of the first minute */
    uv_timer_start(&d->tick_timer, on_tick, 1000, 1000);
    uv_timer_init(d->loop, &ready_timer);
    ready_timer.data = d;
    uv_timer_start(&ready_timer, check_ready, 5, 5);
    watchdog_start(d->loop);
    uv_signal_init(d->loop, &d->sig_term);
    d->sig_term.data = d;
    uv_signal_start(&d->sig_term, on_signal, SIGTERM);
    uv_signal_init(d->loop, &d->sig_int);
    d->sig_int.data = d;
    uv_signal_start(&d->sig_int, on_signal, SIGINT);
    uv_signal_init(d->loop, &d->sig_hup);
    d->sig_hup.data = d;
    uv_signal_start(&d->sig_hup, on_sighup, SIGHUP);
    signal(SIGPIPE, SIG_IGN);

    uv_run(d->loop, UV_RUN_DEFAULT);

    /* orderly teardown: workers, handles, then memory */
    loki_sup_destroy(d->sup);
    uv_close((uv_handle_t *)&d->plan_timer, NULL);
    uv_close((uv_handle_t *)&d->restart_timer, NULL);
    uv_close((uv_handle_t *)&d->drain_timer, NULL);
    uv_close((uv_handle_t *)&d->tick_timer, NULL);
    uv_close((uv_handle_t *)&ready_timer, NULL);
    if (watchdog_on)
        uv_close((uv_handle_t *)&watchdog_timer, NULL);
    uv_close((uv_handle_t *)&d->sig_term, NULL);
    uv_close((uv_handle_t *)&d->sig_int, NULL);
    uv_close((uv_handle_t *)&d->sig_hup, NULL);
    http_stop(d);
    while (uv_run(d->loop, UV_RUN_NOWAIT))
        ;
    loki_frontend_destroy(d->fe);
    loki_router_destroy(d->router);
    loki_planner_actor_destroy(d->pa);
    loki_planner_uv_destroy(d->pu);
    uv_loop_close(d->loop);
    free(d->roots);
    free(d->free_roots);
    free(d->plan_restart);
    free(d->rep.p);
    free(d->topo);
    loki_log_query_flush();
    loki_log(LOKI_LOG_INFO, "stopped");
    return d->exit_code;
}
