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
 * Operability: lokid measures queueing (arrival to first dispatch), compute
 * (dispatch to result) and batch sizes itself into loki_metrics, whose
 * once-a-second tick keeps a 60 s ring of counter snapshots (drops and
 * violations "over the last minute"); on request it fills a status view and
 * renders the status report ("table" or "json") or the Prometheus
 * exposition (runtime/metrics/), served over the client socket ("report"
 * field, docs/protocol.md) and, with --metrics-port, over HTTP (loopback by
 * default), next to the /healthz and /readyz probes.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
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
#include "loki/gpu.h"
#include "loki/http.h"
#include "loki/log.h"
#include "loki/metrics.h"
#include "loki/planner.h"
#include "planner.h" /* actors/: the planner actor */
#include "planner_uv.h"
#include "loki/proto.h"
#include "loki/router.h"
#include "loki/status.h"
#include "loki/topology.h"
#include "lokid.h"
#include "supervisor.h"

#define MAX_INST 4096
#define ROOT_OUT_MAX 32 /* leaf outputs kept per root query; more are counted only */
#define MAX_BATCH_INFLIGHT 2
#define QLOG_PER_S 10      /* per-query log lines allowed per second; the rest are counted */
#define RETRY_AFTER_MS 100 /* hint in "overloaded" replies: about one admission refill */
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
    struct loki_metrics *metrics;
    struct loki_report rep;         /* the last rendered report, kept until the next one */
    struct loki_http *http;         /* GET /metrics; NULL without --metrics-port or once stopped */
    struct loki_process_stats proc; /* the last sample, shown by the reports */
    struct loki_gpu *gpu;           /* NVML; NULL without the driver */
    struct loki_reply reply;        /* scratch: large, encoded before reuse */
    char paths[LOKI_MAX_TASKS * 8][LOKI_PROTO_PATH_STR_MAX / 8];
    int exit_code;
};

static double now_s(struct lokid *d)
{
    return (double)(loki_now_ns() - d->t0_ns) / 1e9;
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
            loki_metrics_queue_time(d->metrics, b->pipeline, (double)(tn - r->arrival_ns) / 1e9);
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
    loki_metrics_batch(d->metrics, b->pipeline, b->task, b->variant, b->n);
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
        loki_metrics_e2e(d->metrics, c->pipeline, c->latency_ms / 1e3);
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
    loki_metrics_compute(d->metrics, f.pipeline, f.task, f.variant,
                         (double)(loki_now_ns() - f.t_ns) / 1e9);
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
    uint64_t n_failed = 0;
    for (i = 0; i < f.n; i++)
        n_failed += failed[i];
    loki_metrics_failed(d->metrics, f.pipeline, f.task, f.variant, n_failed);
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

/* ---- reports: status (table, json), Prometheus, /metrics (runtime/metrics) ---------------- */

static uint64_t sup_crashes(const void *sup, int p, int t, int v)
{
    return loki_sup_crashes(sup, p, t, v);
}

/*
 * What the reports show, gathered from the router, the frontend, the planner actor and the
 * supervisor: the one place the reports read the planner's state (its plan, demand estimates
 * and counters). The process and NVML figures are sampled here (NVML at most once a second).
 */
static void status_view(struct lokid *d, struct loki_status_view *v)
{
    const struct loki_planner_actor_stats *ps = loki_planner_actor_stats(d->pa);
    struct loki_frontend_stats fs;
    loki_frontend_stats(d->fe, &fs);
    memset(v, 0, sizeof(*v));
    v->topo = d->topo;
    v->metrics = d->metrics;
    v->plan = loki_planner_actor_plan(d->pa);
    v->router = loki_router_stats(d->router);
    for (int p = 0; p < d->topo->n_pipelines; p++)
        v->demand_est[p] = loki_planner_actor_estimate(d->pa, p);
    v->planner = (struct loki_status_planner){.plans_applied = ps->plans_applied,
                                              .plans_kept = ps->plans_kept,
                                              .solves = ps->solves,
                                              .solve_errors = ps->solve_errors,
                                              .solve_ms_sum = ps->solve_ms_sum,
                                              .last_solve_ms = ps->last_solve_ms,
                                              .last_change_s = ps->last_change_s};
    v->frontend = (struct loki_status_frontend){.connections = fs.connections,
                                                .inflight = fs.inflight,
                                                .requests = fs.requests,
                                                .bad_requests = fs.bad_requests,
                                                .overloaded = fs.overloaded,
                                                .draining = fs.draining};
    v->instances = loki_router_instances(d->router, &v->gpus_in_use);
    v->transitioning = loki_router_is_transitioning(d->router);
    v->ready = d->ready;
    v->draining = d->draining;
    v->uptime_s = now_s(d);
    v->metrics_port = d->http ? loki_http_port(d->http) : -1;
    v->worker_crashes = sup_crashes;
    v->worker_crashes_ctx = d->sup;
    loki_process_sample(&d->proc); /* a figure it cannot read stays 0 */
    v->process = &d->proc;
    if (d->gpu)
        v->n_gpus = loki_gpu_sample(d->gpu, loki_now_ns(), &v->gpus);
}

static void on_tick(uv_timer_t *tm)
{
    struct lokid *d = tm->data;
    loki_metrics_tick(d->metrics, now_s(d), loki_router_stats(d->router));
    loki_log_query_tick();
}

static int fe_metrics(void *ctx, struct loki_metric *out, int max)
{
    struct lokid *d = ctx;
    struct loki_status_view v;
    status_view(d, &v);
    return loki_status_summary(&v, out, max);
}

/* The report goes into d->rep, kept until the next one. */
static int fe_report(void *ctx, enum loki_msg_type type, struct loki_bytes format,
                     struct loki_bytes *out, char *err, size_t errlen)
{
    struct lokid *d = ctx;
    struct loki_status_view v;
    status_view(d, &v);
    int rc = loki_status_render(&v, type, format, &d->rep, err, errlen);
    if (rc)
        return rc;
    out->ptr = (const uint8_t *)d->rep.text;
    out->len = (uint32_t)d->rep.len;
    return 0;
}

static int http_render(void *ctx, const char **body, size_t *len)
{
    struct lokid *d = ctx;
    struct loki_status_view v;
    status_view(d, &v);
    int rc = loki_status_prometheus(&v, &d->rep);
    *body = d->rep.text;
    *len = d->rep.len;
    return rc;
}

/* /healthz: the loop answers, and lokid is not shutting down. */
static bool http_live(void *ctx)
{
    return !((struct lokid *)ctx)->stopping;
}

/* /readyz: serving (the initial plan's workers came up, the socket listens), not draining, a
 * plan applied and at least one worker process alive. */
static bool http_ready(void *ctx)
{
    struct lokid *d = ctx;
    return d->ready && !d->draining && !d->stopping && loki_planner_actor_plan(d->pa) &&
           loki_sup_alive(d->sup) > 0;
}

/* The HTTP endpoint, where --metrics-port or runtime.metrics_port asks for one. Returns 0 or
 * lokid's exit status. */
static int http_start(struct lokid *d)
{
    int port = d->opt.metrics_port >= 0 ? d->opt.metrics_port : d->cfg.runtime.metrics_port;
    const char *addr =
        d->opt.metrics_address ? d->opt.metrics_address : d->cfg.runtime.metrics_address;
    if (port < 0)
        return 0;
    struct loki_http_config hc = {.address = addr,
                                  .port = port,
                                  .render = http_render,
                                  .live = http_live,
                                  .ready = http_ready,
                                  .ctx = d};
    int rc = loki_http_create(d->loop, &hc, &d->http);
    if (rc) {
        fprintf(stderr, "lokid: cannot serve metrics on %s port %d: %s\n", addr, port,
                uv_strerror(rc));
        return 1;
    }
    loki_log(LOKI_LOG_INFO, "metrics on http://%s%s%s:%d/metrics (and /healthz, /readyz)",
             strchr(addr, ':') ? "[" : "", addr, strchr(addr, ':') ? "]" : "",
             loki_http_port(d->http));
    return 0;
}

static void http_stop(struct lokid *d)
{
    loki_http_destroy(d->http);
    d->http = NULL;
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
    if ((rc = loki_metrics_create(d->topo, &d->metrics))) {
        fprintf(stderr, "lokid: metrics: %s\n", loki_strerror(rc));
        return 1;
    }
    loki_report_init(&d->rep);
    /* GPU metrics where NVML is there (the driver's library); none otherwise */
    if (loki_gpu_open(NULL, &d->gpu) == 0)
        loki_log(LOKI_LOG_INFO, "NVML found: GPU utilisation and memory in the metrics");
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

    if ((rc = http_start(d)))
        return rc;

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
    loki_metrics_destroy(d->metrics);
    loki_gpu_close(d->gpu);
    uv_loop_close(d->loop);
    free(d->roots);
    free(d->free_roots);
    free(d->plan_restart);
    loki_report_fini(&d->rep);
    free(d->topo);
    loki_log_query_flush();
    loki_log(LOKI_LOG_INFO, "stopped");
    return d->exit_code;
}
