/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lokid's reports (see lokid.c): the status view gathered from the router, the frontend, the
 * supervisor and the planner actor, rendered by runtime/metrics as the status report, the
 * Prometheus exposition and the /metrics, /healthz and /readyz endpoint.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loki/arena.h"
#include "loki/error.h"
#include "loki/gpu.h"
#include "loki/log.h"
#include "loki/planner.h"
#include "loki/router.h"
#include "loki/topology.h"
#include "lokid_internal.h"

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
                                                .draining = fs.draining,
                                                .read_buffer_bytes = fs.read_buffer_bytes,
                                                .frame_errors = fs.frame_errors,
                                                .frame_timeouts = fs.frame_timeouts,
                                                .slow_drops = fs.slow_drops,
                                                .idle_timeouts = fs.idle_timeouts,
                                                .read_pauses = fs.read_pauses};
    lokid__front_status(d, &v->http);
    const struct loki_sup_stats *ss = loki_sup_stats(d->sup);
    v->workers = (struct loki_status_workers){.alive = loki_sup_alive(d->sup),
                                              .started = ss->started,
                                              .start_failed = ss->start_failed,
                                              .last_start_error = ss->last_start_error};
    v->instances = loki_router_instances(d->router, &v->gpus_in_use);
    v->transitioning = loki_router_is_transitioning(d->router);
    v->ready = d->ready;
    v->draining = d->draining;
    v->uptime_s = now_s(d);
    v->metrics_port = d->http ? loki_http_port(d->http) : -1;
    struct loki_arena *a = loki_sup_arena(d->sup);
    loki_arena_reclaim(a); /* what workers freed counts as free */
    v->arena_bytes = (double)d->arena_bytes;
    v->arena_used_bytes = (double)(d->arena_bytes - loki_arena_free_bytes(a));
    v->worker_crashes = sup_crashes;
    v->worker_crashes_ctx = d->sup;
    loki_process_sample(&d->proc); /* a figure it cannot read stays 0 */
    v->process = &d->proc;
    if (d->gpu)
        v->n_gpus = loki_gpu_sample(d->gpu, loki_now_ns(), &v->gpus);
}

void lokid__on_tick(uv_timer_t *tm)
{
    struct lokid *d = tm->data;
    loki_metrics_tick(d->metrics, now_s(d), loki_router_stats(d->router));
    loki_log_query_tick();
}

int lokid__fe_metrics(void *ctx, struct loki_metric *out, int max)
{
    struct lokid *d = ctx;
    struct loki_status_view v;
    status_view(d, &v);
    return loki_status_summary(&v, out, max);
}

/* The report goes into d->rep, kept until the next one. */
int lokid__fe_report(void *ctx, enum loki_msg_type type, struct loki_bytes format,
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
int lokid__http_start(struct lokid *d)
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
        bool v6 = strchr(addr, ':') != NULL;
        fprintf(stderr, "lokid: cannot serve metrics on %s%s%s:%d: %s\n", v6 ? "[" : "", addr,
                v6 ? "]" : "", port, uv_strerror(rc));
        return 1;
    }
    loki_log(LOKI_LOG_INFO, "metrics on http://%s%s%s:%d/metrics (and /healthz, /readyz)",
             strchr(addr, ':') ? "[" : "", addr, strchr(addr, ':') ? "]" : "",
             loki_http_port(d->http));
    return 0;
}

void lokid__http_stop(struct lokid *d)
{
    loki_http_destroy(d->http);
    d->http = NULL;
}
