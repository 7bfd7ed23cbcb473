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
 */
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
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "frontend.h"
#include "loki/arena.h"
#include "loki/clock.h"
#include "loki/compiler.h"
#include "loki/error.h"
#include "loki/planner.h"
#include "loki/proto.h"
#include "loki/router.h"
#include "loki/topology.h"
#include "lokid.h"
#include "supervisor.h"

#define MAX_INST 4096
#define ROOT_OUT_MAX 32 /* leaf outputs kept per root query; more are counted only */
#define MAX_BATCH_INFLIGHT 2

struct root {
    bool used;
    uint32_t gen; /* bumped per use: a late result for a finished root is recognised */
    struct loki_frontend_conn *conn;
    uint64_t id;
    struct loki_arena_ref payload;
    uint16_t n_out;
    uint8_t out_len[ROOT_OUT_MAX];
    uint8_t out[ROOT_OUT_MAX][LOKI_BATCH_INLINE_MAX];
};

struct inflight {
    uint64_t batch_id;
    int task, n;
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
    struct loki_frontend *fe;
    struct loki_router *router;
    struct loki_sup *sup;
    struct loki_planner *planner;
    struct root *roots;
    uint32_t n_roots, *free_roots, n_free;
    struct inst inst[MAX_INST];
    uv_timer_t plan_timer, restart_timer, drain_timer;
    uv_signal_t sig_term, sig_int;
    uv_work_t work;
    bool solving, ready, draining, stopping;
    struct loki_plan *plan_cur, *plan_next, *plan_restart;
    struct loki_demand demand[LOKI_MAX_PIPELINES];
    double demand_est[LOKI_MAX_PIPELINES];
    uint64_t last_arrived[LOKI_MAX_PIPELINES];
    uint64_t last_served[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS];
    uint64_t last_children[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS]
                          [LOKI_MAX_CHILDREN];
    uint64_t t0_ns;
    int solve_rc;
    uint64_t replans, plan_applied;
    struct loki_reply reply; /* scratch: large, encoded before reuse */
    char paths[LOKI_MAX_TASKS * 8][LOKI_PROTO_PATH_STR_MAX / 8];
    int exit_code;
};

static void logf_(struct lokid *d, const char *level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* One place that logs: JSON lines on stderr, so journald and people can both read them. */
static void logf_(struct lokid *d, const char *level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (d->opt.quiet && strcmp(level, "error") && strcmp(level, "warn"))
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char esc[1100];
    size_t k = 0;
    for (const char *s = msg; *s && k + 2 < sizeof(esc); s++) {
        if (*s == '"' || *s == '\\')
            esc[k++] = '\\';
        esc[k++] = *s == '\n' ? ' ' : *s;
    }
    esc[k] = 0;
    fprintf(stderr, "{\"ts\":%lld.%03ld,\"level\":\"%s\",\"msg\":\"%s\"}\n", (long long)ts.tv_sec,
            ts.tv_nsec / 1000000, level, esc);
}

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
    f->batch_id = b->batch_id;
    f->task = b->task;
    f->n = b->n;
    for (int i = 0; i < b->n; i++) {
        uint64_t c = b->items[i].cookie;
        f->cookies[i] = c;
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
                int w = snprintf(s + k, cap - k, "%s%s", first ? "" : "|", p->tasks[t].variants[v].name);
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
        rep->retry_after_ms = 100;
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
        logf_(d, "error", "router instance id %d beyond the supervisor's table", instance);
        return;
    }
    int rc = loki_sup_start(d->sup, instance, pi);
    const struct loki_variant *v =
        &d->topo->pipelines[pi->pipeline].tasks[pi->task].variants[pi->variant];
    if (rc) {
        logf_(d, "error", "start worker %d (%s): %s", instance, v->name, loki_strerror(rc));
        loki_router_instance_failed(d->router, instance);
        return;
    }
    d->inst[instance].live = true;
    d->inst[instance].n_inflight = 0;
    loki_router_instance_bind(d->router, instance, (uint64_t)instance);
    logf_(d, "info", "worker %d starting: %s batch %d share %.2f gpu %d pid %d", instance, v->name,
          pi->batch, pi->share, pi->gpu, loki_sup_pid(d->sup, instance));
}

static void r_instance_stop(void *ctx, int instance, uint64_t handle)
{
    struct lokid *d = ctx;
    if (instance >= 0 && instance < MAX_INST) {
        d->inst[instance].live = false;
        loki_sup_stop(d->sup, instance);
        logf_(d, "info", "worker %d stopping (plan change)", instance);
    }
}

/* ---- supervisor callbacks ------------------------------------------------------------------ */

static void s_ready(void *ctx, int inst)
{
    struct lokid *d = ctx;
    loki_router_instance_ready(d->router, inst);
    logf_(d, "info", "worker %d ready", inst);
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
            children[i * LOKI_MAX_CHILDREN + c] = (uint16_t)(q.fanout[c] > 65535 ? 65535 : q.fanout[c]);
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
        logf_(d, "info", "worker %d exited (status %lld)", inst, (long long)status);
        return;
    }
    logf_(d, "warn", "worker %d died (status %lld, signal %d): re-running its batches", inst,
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

static void fe_request(void *ctx, struct loki_frontend_conn *conn, const struct loki_request *req)
{
    struct lokid *d = ctx;
    struct loki_reply *rep = &d->reply;
    if (!d->n_free) {
        memset(rep, 0, offsetof(struct loki_reply, outputs));
        rep->status = LOKI_STATUS_OVERLOADED;
        rep->has_retry_after = true;
        rep->retry_after_ms = 100;
        rep->error = loki_bytes_str("too many queries in flight");
        loki_frontend_reply(conn, req->id, rep);
        return;
    }
    uint32_t slot = d->free_roots[--d->n_free];
    struct root *r = &d->roots[slot];
    r->used = true;
    r->gen++;
    r->conn = conn;
    r->id = req->id;
    r->n_out = 0;
    memset(&r->payload, 0, sizeof(r->payload));
    if (req->payload.len) {
        void *p;
        int rc = loki_arena_alloc(loki_sup_arena(d->sup), req->payload.len, &r->payload, &p);
        if (rc) {
            memset(&r->payload, 0, sizeof(r->payload));
            memset(rep, 0, offsetof(struct loki_reply, outputs));
            rep->status = LOKI_STATUS_OVERLOADED;
            rep->has_retry_after = true;
            rep->retry_after_ms = 100;
            rep->error = loki_bytes_str("payload arena full");
            loki_frontend_reply(conn, req->id, rep);
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
    if (rc && rc != LOKI_EOVERLOADED) {
        /* no completion was delivered for an invalid submission: answer here */
        memset(rep, 0, offsetof(struct loki_reply, outputs));
        rep->status = LOKI_STATUS_ERROR;
        rep->error = loki_bytes_str(loki_strerror(rc));
        loki_frontend_reply(conn, req->id, rep);
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
        {"loki_instances", (double)n_inst},
        {"loki_gpus_in_use", gpus},
        {"loki_demand_qps", d->demand_est[0]},
        {"loki_plan_accuracy", d->plan_cur ? 100 * d->plan_cur->accuracy[0] : 0},
        {"loki_plan_mode", d->plan_cur ? (double)d->plan_cur->mode : -1},
        {"loki_planner_solve_ms", d->plan_cur ? d->plan_cur->solve_ms : 0},
        {"loki_plans_applied_total", (double)d->plan_applied},
        {"loki_roots_inflight", (double)st->roots_inflight},
    };
    int n = 0;
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]) && n < max; i++, n++) {
        out[n].name = loki_bytes_str(m[i].name);
        out[n].value = m[i].v;
    }
    return n;
}

/* ---- planner actor ------------------------------------------------------------------------- */

static void plan_work(uv_work_t *w)
{
    struct lokid *d = w->data;
    d->solve_rc =
        loki_planner_solve(d->planner, d->demand_est, d->plan_cur, now_s(d), d->plan_next);
}

static void apply_plan(struct lokid *d, struct loki_plan *p, const char *why)
{
    int rc = loki_router_set_plan(d->router, p);
    if (rc) {
        logf_(d, "error", "applying plan failed: %s", loki_strerror(rc));
        return;
    }
    struct loki_plan *tmp = d->plan_cur;
    d->plan_cur = p;
    d->plan_next = tmp;
    d->plan_applied++;
    logf_(d, "info",
          "plan applied (%s): mode %s, %d instances, %.2f GPUs, predicted accuracy %.1f, demand "
          "%.1f qps, solve %.1f ms",
          why, loki_plan_mode_name(p->mode), p->n_instances, p->gpus_used, 100 * p->accuracy[0],
          p->demand_qps[0], p->solve_ms);
}

/* Whether applying @b would change anything workers or routing see. */
static bool plan_differs(const struct loki_plan *a, const struct loki_plan *b)
{
    if (!a || !b)
        return true;
    if (a->n_instances != b->n_instances || memcmp(a->split, b->split, sizeof(a->split)) ||
        memcmp(a->served_fraction, b->served_fraction, sizeof(a->served_fraction)))
        return true;
    for (int i = 0; i < a->n_instances; i++) {
        const struct loki_plan_instance *x = &a->inst[i], *y = &b->inst[i];
        if (x->pipeline != y->pipeline || x->task != y->task || x->variant != y->variant ||
            x->batch != y->batch || x->share != y->share || x->gpu != y->gpu)
            return true;
    }
    return false;
}

static void plan_after(uv_work_t *w, int status)
{
    struct lokid *d = w->data;
    d->solving = false;
    if (status || d->stopping)
        return;
    if (d->solve_rc) {
        logf_(d, "warn", "planner: %s; keeping the current plan", loki_strerror(d->solve_rc));
        return;
    }
    if (plan_differs(d->plan_cur, d->plan_next))
        apply_plan(d, d->plan_next, "demand changed");
}

static void observe(struct lokid *d)
{
    const struct loki_router_stats *st = loki_router_stats(d->router);
    double t = now_s(d);
    for (int p = 0; p < d->topo->n_pipelines; p++) {
        uint64_t a = st->pipe[p].arrived;
        loki_demand_observe(&d->demand[p], t, (double)(a - d->last_arrived[p]));
        d->last_arrived[p] = a;
        d->demand_est[p] = loki_demand_estimate(&d->demand[p], t);
        const struct loki_pipeline *pl = &d->topo->pipelines[p];
        for (int ti = 0; ti < pl->n_tasks; ti++)
            for (int v = 0; v < pl->tasks[ti].n_variants; v++) {
                const struct loki_router_variant_stats *vs = &st->var[p][ti][v];
                uint64_t served = vs->served - d->last_served[p][ti][v];
                d->last_served[p][ti][v] = vs->served;
                for (int c = 0; c < pl->tasks[ti].n_children; c++) {
                    uint64_t ch = vs->children[c] - d->last_children[p][ti][v][c];
                    d->last_children[p][ti][v][c] = vs->children[c];
                    if (served)
                        loki_fanout_est_observe(loki_planner_fanout(d->planner), p, ti, v, c,
                                                (double)served, (double)ch);
                }
            }
    }
}

static void on_plan_timer(uv_timer_t *t)
{
    struct lokid *d = t->data;
    observe(d);
    if (d->solving || d->draining || !d->ready || d->opt.fixed_plan)
        return;
    if (loki_router_is_transitioning(d->router))
        return; /* one reconfiguration at a time */
    d->solving = true;
    d->replans++;
    uv_queue_work(d->loop, &d->work, plan_work, plan_after);
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

static uv_timer_t ready_timer;

static void check_ready(uv_timer_t *t)
{
    struct lokid *d = t->data;
    double gpus;
    int n = loki_router_instances(d->router, &gpus);
    if (d->ready || loki_router_is_transitioning(d->router) || n == 0)
        return;
    int rc = loki_frontend_start(d->fe);
    if (rc) {
        logf_(d, "error", "cannot listen on %s: %s", d->topo->frontend.socket_path,
              loki_strerror(rc));
        d->exit_code = 1;
        uv_timer_stop(t);
        uv_kill(getpid(), SIGTERM);
        return;
    }
    d->ready = true;
    uv_timer_stop(t);
    logf_(d, "info", "ready: %d workers, %.2f GPUs, listening on %s", n, gpus,
          d->topo->frontend.socket_path);
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
    uv_timer_stop(&d->plan_timer);
    uv_timer_stop(&d->restart_timer);
    uv_timer_stop(&d->drain_timer);
    uv_timer_stop(&ready_timer);
    loki_frontend_stop(d->fe);
    uv_signal_stop(&d->sig_term);
    uv_signal_stop(&d->sig_int);
    uv_stop(d->loop);
}

static void on_drained(void *ctx)
{
    struct lokid *d = ctx;
    logf_(d, "info", "drained: every accepted query answered");
    shutdown_now(d);
}

static void on_drain_timeout(uv_timer_t *t)
{
    struct lokid *d = t->data;
    logf_(d, "warn", "drain timed out; stopping");
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
    notify_systemd("STOPPING=1");
    logf_(d, "info", "%s: draining (new queries get \"draining\")", strsignal(sig));
    double max_slo = 0;
    for (int p = 0; p < d->topo->n_pipelines; p++)
        max_slo = fmax(max_slo, d->topo->pipelines[p].slo_ms);
    uv_timer_start(&d->drain_timer, on_drain_timeout, (uint64_t)(max_slo * 4) + 10000, 0);
    loki_frontend_drain(d->fe, on_drained, d);
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
    d->loop = uv_default_loop();
    if ((rc = loki_topology_load(opt->topology, &d->topo, err, sizeof(err)))) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    if (opt->socket)
        snprintf(d->topo->frontend.socket_path, sizeof(d->topo->frontend.socket_path), "%s",
                 opt->socket);
    if (opt->policy_set)
        d->topo->planner.policy = opt->policy;

    d->n_roots = d->topo->frontend.max_inflight;
    d->roots = calloc(d->n_roots, sizeof(*d->roots));
    d->free_roots = calloc(d->n_roots, sizeof(uint32_t));
    d->plan_cur = calloc(1, sizeof(struct loki_plan));
    d->plan_next = calloc(1, sizeof(struct loki_plan));
    d->plan_restart = calloc(1, sizeof(struct loki_plan));
    if (!d->roots || !d->free_roots || !d->plan_cur || !d->plan_next || !d->plan_restart) {
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
                                 .arena_bytes = opt->arena_mb ? (size_t)opt->arena_mb << 20
                                                              : (size_t)64 << 20,
                                 .ring_bytes = 1u << 16,
                                 .seed = opt->seed,
                                 .mps = true};
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
    if ((rc = loki_planner_create(d->topo, &d->planner))) {
        fprintf(stderr, "lokid: planner: %s\n", loki_strerror(rc));
        return 1;
    }
    const char *names[LOKI_MAX_PIPELINES];
    for (int p = 0; p < d->topo->n_pipelines; p++) {
        names[p] = d->topo->pipelines[p].name;
        loki_demand_init(&d->demand[p], d->topo->planner.ewma_alpha,
                         d->topo->planner.ewma_windows);
        d->demand_est[p] = opt->initial_demand;
    }
    struct loki_frontend_opts fo = {.cfg = &d->topo->frontend,
                                    .pipelines = names,
                                    .n_pipelines = d->topo->n_pipelines,
                                    .on_request = fe_request,
                                    .is_ready = fe_ready,
                                    .on_metrics = fe_metrics,
                                    .ctx = d,
                                    .server_name = "lokid"};
    if ((rc = loki_frontend_create(d->loop, &fo, &d->fe))) {
        fprintf(stderr, "lokid: frontend: %s\n", loki_strerror(rc));
        return 1;
    }

    /* the initial plan, for the initial demand guess, solved before serving */
    rc = loki_planner_solve(d->planner, d->demand_est, NULL, 0, d->plan_next);
    if (rc) {
        fprintf(stderr, "lokid: initial plan: %s\n", loki_strerror(rc));
        return 1;
    }
    apply_plan(d, d->plan_next, "initial");

    d->work.data = d;
    uv_timer_init(d->loop, &d->plan_timer);
    d->plan_timer.data = d;
    uv_timer_start(&d->plan_timer, on_plan_timer, (uint64_t)d->topo->planner.interval_ms,
                   (uint64_t)d->topo->planner.interval_ms);
    uv_timer_init(d->loop, &d->restart_timer);
    d->restart_timer.data = d;
    uv_timer_init(d->loop, &d->drain_timer);
    d->drain_timer.data = d;
    uv_timer_init(d->loop, &ready_timer);
    ready_timer.data = d;
    uv_timer_start(&ready_timer, check_ready, 5, 5);
    uv_signal_init(d->loop, &d->sig_term);
    d->sig_term.data = d;
    uv_signal_start(&d->sig_term, on_signal, SIGTERM);
    uv_signal_init(d->loop, &d->sig_int);
    d->sig_int.data = d;
    uv_signal_start(&d->sig_int, on_signal, SIGINT);
    signal(SIGPIPE, SIG_IGN);

    uv_run(d->loop, UV_RUN_DEFAULT);

    /* orderly teardown: workers, handles, then memory */
    loki_sup_destroy(d->sup);
    uv_close((uv_handle_t *)&d->plan_timer, NULL);
    uv_close((uv_handle_t *)&d->restart_timer, NULL);
    uv_close((uv_handle_t *)&d->drain_timer, NULL);
    uv_close((uv_handle_t *)&ready_timer, NULL);
    uv_close((uv_handle_t *)&d->sig_term, NULL);
    uv_close((uv_handle_t *)&d->sig_int, NULL);
    while (uv_run(d->loop, UV_RUN_NOWAIT))
        ;
    loki_frontend_destroy(d->fe);
    loki_router_destroy(d->router);
    loki_planner_destroy(d->planner);
    uv_loop_close(d->loop);
    free(d->roots);
    free(d->free_roots);
    free(d->plan_cur);
    free(d->plan_next);
    free(d->plan_restart);
    free(d->topo);
    logf_(d, "info", "stopped");
    return d->exit_code;
}
