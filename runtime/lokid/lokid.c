/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lokid: the serving daemon, as wiring. One libuv loop thread runs the frontend actor
 * (actors/frontend: Unix socket, frames), the router actor (actors/router_actor: root slots,
 * payload arena, replies, around runtime/router's EDF queues and batching) and the
 * supervisor (actors/supervisor: worker processes, rings); the planner actor
 * (actors/planner) solves on libuv's thread pool (actors/planner_uv) so a solve never
 * stalls the loop, and its plan is applied back on the loop (make-before-break, inside
 * loki_router_set_plan). Keeping frontend and router on one thread means no query ever
 * crosses a lock between arrival and dispatch.
 *
 *   client ─frame─▶ frontend ─request─▶ router actor ─batch─▶ req ring ─▶ worker
 *   client ◀─reply─ frontend ◀─reply─── router actor ◀─result─ res ring ◀┘
 *
 * This file holds what only the daemon does: building the actors from the topology file,
 * feeding arrivals to the planner actor, the status view the reports render
 * (runtime/metrics), readiness, drain on SIGTERM (new requests get "draining" while
 * in-flight ones finish) and, on SIGHUP, reloading the topology and re-planning.
 *
 * Start-up order: descriptors (the soft limit raised to the hard one), the topology
 * (validated, and sealed for the workers: they never read the file), the socket and the
 * metrics port (a bad path fails before any worker), then the initial plan's workers.
 * SIGHUP re-reads the file and takes it only if valid and limited to what may change
 * while serving (loki_config_reload_check()).
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "frontend.h"
#ifdef LOKI_HAVE_HTTP_FRONT
#include "http_front.h" /* actors/: the opt-in HTTP front door */
#endif
#include "loki/arena.h"
#include "loki/clock.h"
#include "loki/error.h"
#include "loki/http.h"
#include "loki/log.h"
#include "loki/metrics.h"
#include "loki/planner.h"
#include "planner.h" /* actors/: the planner actor */
#include "planner_uv.h"
#include "loki/router.h"
#include "loki/status.h"
#include "loki/topology.h"
#include "loki/version.h"
#include "lokid.h"
#include "lokid_sd.h"
#include "router_actor.h"
#include "supervisor.h"

#define RETRY_AFTER_MS 100 /* hint in "overloaded" replies: about one admission refill */

struct lokid {
    uv_loop_t *loop;
    struct lokid_options opt;
    struct loki_topology *topo;
    struct loki_config cfg; /* the topology file's deployment sections */
    struct loki_frontend *fe;
    struct loki_router_actor *ra;
    struct loki_router *router; /* the router actor's */
    struct loki_sup *sup;
    struct loki_planner_actor *pa;
    struct loki_planner_uv *pu; /* its solves on libuv's thread pool */
    uv_timer_t plan_timer, drain_timer, tick_timer;
    uv_signal_t sig_term, sig_int, sig_hup;
    bool ready, draining, stopping;
    uint64_t t0_ns;
    struct loki_metrics *metrics;
    struct loki_report rep; /* the last rendered report, kept until the next one */
    struct loki_http *http; /* GET /metrics; NULL without --metrics-port or once stopped */
#ifdef LOKI_HAVE_HTTP_FRONT
    struct loki_http_front *front; /* the HTTP front door; NULL when off */
#endif
    size_t arena_bytes; /* the payload arena's */
    int exit_code;
    uint64_t start_failed_seen; /* worker starts that failed, as of the last plan applied */
    /* SIGHUP: a validated configuration waiting for the solve in flight to end (reload_apply) */
    struct loki_topology *reload_topo;
    int reload_fd;
};

static double now_s(struct lokid *d)
{
    return (double)(loki_now_ns() - d->t0_ns) / 1e9;
}

/* ---- frontend and router actor: requests in, arrivals to the planner ------------------------ */

static void fe_request(void *ctx, struct loki_frontend_conn *conn, const struct loki_request *req)
{
    loki_router_actor_request(((struct lokid *)ctx)->ra, conn, req);
}

static void fe_cancel(void *ctx, struct loki_frontend_conn *conn, uint64_t id, uint64_t tag)
{
    loki_router_actor_cancel(((struct lokid *)ctx)->ra, conn, id, tag);
}

/* each arrival in the one-second window it arrived in, as the replay harness counts it */
static void ra_arrival(void *ctx, int pipeline, uint64_t arrival_ns)
{
    struct lokid *d = ctx;
    loki_planner_actor_arrival(d->pa, pipeline, (double)(arrival_ns - d->t0_ns) / 1e9);
}

static bool fe_ready(void *ctx)
{
    struct lokid *d = ctx;
    return d->ready && !d->draining;
}

/* ---- reports: status (table, json), Prometheus, /metrics (runtime/metrics) ---------------- */

/*
 * What the reports show, gathered from the router, the frontend and the planner actor: the one
 * place the reports read the planner's state (its plan, demand estimates and counters).
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

static void http_stop(struct lokid *d)
{
    loki_http_destroy(d->http);
    d->http = NULL;
}

/* ---- the HTTP front door (frontend.http, --http-port): a client of lokid's own socket ----------
 */

/*
 * Start it where frontend.http asks (after the socket listens, before any worker, so a taken
 * port fails now). It submits through the C client library over lokid's socket: the same
 * limits as every client, no second way into the router (actors/http_front.c says why).
 * Returns 0 or lokid's exit status.
 */
static int front_start(struct lokid *d)
{
    const struct loki_http_cfg *h = &d->cfg.frontend.http;
    if (!h->enabled)
        return 0;
#ifdef LOKI_HAVE_HTTP_FRONT
    char err[512];
    const struct loki_frontend_cfg *f = &d->cfg.frontend;
    bool self = f->n_uids == 0;
    for (int i = 0; i < f->n_uids; i++)
        self |= f->uids[i] == (unsigned)geteuid();
    if (!self) {
        fprintf(stderr,
                "lokid: frontend.http submits through lokid's own socket, but "
                "frontend.allowed_uids does not list lokid's uid %u\n",
                (unsigned)geteuid());
        return 2;
    }
    struct loki_http_front_opts o = {.cfg = h,
                                     .socket_path = f->socket_path,
                                     .topo = d->topo,
                                     .max_payload = f->max_payload,
                                     .lokid_idle_timeout_s = f->idle_timeout_s,
                                     .server_version = LOKI_VERSION};
    int rc = loki_http_front_create(&o, &d->front, err, sizeof(err));
    if (!rc)
        rc = loki_http_front_start(d->front, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "lokid: cannot serve HTTP on %s port %d: %s\n", h->address, h->port, err);
        return 1;
    }
    const char *v6 = strchr(h->address, ':') ? "[" : "";
    loki_log(LOKI_LOG_INFO, "http front door (KServe v2) on http%s://%s%s%s:%d/v2",
             h->tls_cert[0] ? "s" : "", v6, h->address, v6[0] ? "]" : "",
             loki_http_front_port(d->front));
    return 0;
#else
    fprintf(stderr, "lokid: frontend.http is enabled, but this lokid was built without the HTTP "
                    "front door (libmicrohttpd and jansson were not found)\n");
    return 2;
#endif
}

/* After loki_frontend_stop(): a write it blocked on this loop fails instead of waiting. */
static void front_stop(struct lokid *d)
{
#ifdef LOKI_HAVE_HTTP_FRONT
    if (!d->front)
        return;
    loki_http_front_stop(d->front);
    struct loki_http_front_stats s;
    loki_http_front_stats(d->front, &s);
    loki_log(LOKI_LOG_INFO,
             "http front door stopped: %llu requests answered (%llu 2xx, %llu 4xx, %llu 5xx), "
             "%llu infer requests handed to lokid, %llu connections to lokid made",
             (unsigned long long)s.requests, (unsigned long long)s.status_2xx,
             (unsigned long long)s.status_4xx, (unsigned long long)s.status_5xx,
             (unsigned long long)s.infers, (unsigned long long)s.lokid_connects);
#else
    (void)d;
#endif
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
    /* the router follows the plan with the workers that started (the router actor retries
     * the others): never call a plan applied when part of it is not running */
    const struct loki_sup_stats *ss = loki_sup_stats(d->sup);
    int failed = (int)(ss->start_failed - d->start_failed_seen);
    d->start_failed_seen = ss->start_failed;
    char inst[192];
    if (failed)
        snprintf(inst, sizeof(inst),
                 "%d instances planned, %d of them failed to start (%s; retrying)", p->n_instances,
                 failed, loki_strerror(ss->last_start_error));
    else
        snprintf(inst, sizeof(inst), "%d instances", p->n_instances);
    loki_log(failed ? LOKI_LOG_WARN : LOKI_LOG_INFO,
             "plan %s (%s): mode %s, %s, %.2f GPUs, predicted accuracy %.1f, demand %.1f qps, "
             "served fraction %.3f, solve %.1f ms",
             failed ? "partly applied" : "applied", why, loki_plan_mode_name(p->mode), inst,
             p->gpus_used, 100 * p->accuracy[0], p->demand_qps[0], p->served_fraction[0],
             p->solve_ms);
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

static void reload_apply(struct lokid *d);

static void on_plan_timer(uv_timer_t *t)
{
    struct lokid *d = t->data;
    /* a solve reads the topology on the thread pool: a reload waits until none runs */
    if (d->reload_topo && !loki_planner_uv_is_busy(d->pu))
        reload_apply(d);
    loki_planner_actor_tick(d->pa); /* errors are logged by pa_solved and pa_apply */
}

/* ---- readiness, drain, signals ------------------------------------------------------------- */

static uv_timer_t ready_timer;

static void check_ready(uv_timer_t *t)
{
    struct lokid *d = t->data;
    double gpus;
    int n = loki_router_instances(d->router, &gpus);
    if (d->ready || loki_router_is_transitioning(d->router) || n == 0)
        return;
    loki_planner_actor_start(d->pa);
    d->ready = true;
    uv_timer_stop(t);
    const struct loki_plan *p = loki_router_plan(d->router);
    if (p && n < p->n_instances)
        loki_log(LOKI_LOG_WARN,
                 "ready: %d workers of %d planned (the others failed to start; retrying), "
                 "%.2f GPUs, listening on %s",
                 n, p->n_instances, gpus, d->cfg.frontend.socket_path);
    else
        loki_log(LOKI_LOG_INFO, "ready: %d workers, %.2f GPUs, listening on %s", n, gpus,
                 d->cfg.frontend.socket_path);
    if (d->opt.ready_fd >= 0) {
        (void)!write(d->opt.ready_fd, "ready\n", 6);
        close(d->opt.ready_fd);
        d->opt.ready_fd = -1;
    }
    lokid_sd_notify("READY=1");
}

static void shutdown_now(struct lokid *d)
{
    if (d->stopping)
        return;
    d->stopping = true;
    loki_planner_uv_stop(d->pu);
    uv_timer_stop(&d->plan_timer);
    loki_router_actor_drain(d->ra);
    uv_timer_stop(&d->drain_timer);
    uv_timer_stop(&d->tick_timer);
    uv_timer_stop(&ready_timer);
    lokid_sd_watchdog_stop();
    loki_frontend_stop(d->fe);
    front_stop(d);
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
    loki_router_actor_drain(d->ra);
    loki_planner_actor_freeze(d->pa, true);
    lokid_sd_notify("STOPPING=1");
    loki_log(LOKI_LOG_INFO, "%s: draining (new queries get \"draining\")", strsignal(sig));
    double max_slo = 0;
    for (int p = 0; p < d->topo->n_pipelines; p++)
        max_slo = fmax(max_slo, d->topo->pipelines[p].slo_ms);
    uv_timer_start(&d->drain_timer, on_drain_timeout, (uint64_t)(max_slo * 4) + 10000, 0);
    loki_frontend_drain(d->fe, on_drained, d);
}

/*
 * The topology file @opt names, validated, with the command line's overrides (--socket,
 * --policy), and *@fd the sealed snapshot of the bytes validated, which is all a worker ever
 * loads (runtime/config/snapshot.c). Returns 0 or the error, its message in @err.
 */
static int load_config(const struct lokid_options *opt, struct loki_topology **topo,
                       struct loki_config *cfg, int *fd, char *err, size_t errlen)
{
    struct stat st;
    int rc = loki_config_load_snapshot(opt->topology, topo, cfg, fd, &st, err, errlen);
    if (rc)
        return rc;
    if (opt->socket)
        snprintf(cfg->frontend.socket_path, sizeof(cfg->frontend.socket_path), "%s", opt->socket);
    if (opt->policy_set)
        (*topo)->planner.policy = opt->policy;
    if (opt->http_port >= 0) {
        cfg->frontend.http.enabled = true;
        cfg->frontend.http.port = opt->http_port;
    }
    if (opt->http_address)
        snprintf(cfg->frontend.http.address, sizeof(cfg->frontend.http.address), "%s",
                 opt->http_address);
    if (st.st_mode & (S_IWGRP | S_IWOTH))
        loki_log(LOKI_LOG_WARN,
                 "%s is writable by its %s: whoever can write it chooses what lokid's workers "
                 "load (plugin paths) at the next reload; chmod go-w it",
                 opt->topology, st.st_mode & S_IWOTH ? "group and others" : "group");
    return 0;
}

/* The reload waiting in d->reload_topo takes effect (no solve may be in flight). */
static void reload_apply(struct lokid *d)
{
    int rc = loki_sup_set_config(d->sup, d->reload_fd);
    if (rc) {
        loki_log(LOKI_LOG_ERROR, "reload of %s: %s; keeping the running configuration",
                 d->opt.topology, loki_strerror(rc));
    } else {
        /* only plugin paths and per-solve planner settings differ (loki_config_reload_check):
         * the router, the planner and the reports read those afresh where they use them */
        memcpy(d->topo, d->reload_topo, sizeof(*d->topo));
        loki_log(LOKI_LOG_INFO,
                 "reloaded %s: the planner uses it from its next solve, and workers started "
                 "from now on load it (running ones keep what they loaded)",
                 d->opt.topology);
    }
    free(d->reload_topo);
    d->reload_topo = NULL;
    close(d->reload_fd);
    d->reload_fd = -1;
}

/*
 * SIGHUP: re-read and validate the topology file, take it if it changes only what may change
 * while serving (loki_config_reload_check()), else keep the running configuration and say
 * why; then re-estimate and solve now instead of at the next interval.
 */
static void on_sighup(uv_signal_t *s, int sig)
{
    struct lokid *d = s->data;
    static char err[8192];
    struct loki_topology *t;
    struct loki_config c;
    int fd;
    loki_log(LOKI_LOG_INFO, "SIGHUP: reloading %s and re-planning now", d->opt.topology);
    if (load_config(&d->opt, &t, &c, &fd, err, sizeof(err))) {
        loki_log(LOKI_LOG_ERROR, "reload refused, keeping the running configuration: %s", err);
    } else if (loki_config_reload_check(d->topo, &d->cfg, t, &c, err, sizeof(err))) {
        loki_log(LOKI_LOG_ERROR,
                 "reload refused, keeping the running configuration: %s: %s, which takes a "
                 "restart",
                 d->opt.topology, err);
        free(t);
        close(fd);
    } else {
        if (d->reload_topo) { /* an earlier one still waiting: this one replaces it */
            free(d->reload_topo);
            close(d->reload_fd);
        }
        d->reload_topo = t;
        d->reload_fd = fd;
        if (loki_planner_uv_is_busy(d->pu))
            loki_log(LOKI_LOG_INFO,
                     "reload of %s validated; it takes effect when the solve in flight ends",
                     d->opt.topology);
    }
    on_plan_timer(&d->plan_timer);
}

/* ---- setup ---------------------------------------------------------------------------------- */

/*
 * Descriptors: one per connection and four per worker (two rings, its output arena, its
 * exit). The
 * soft limit is often 1024 (or a shell's `ulimit -n`) while the hard one is far higher: take
 * the hard one before anything is sized from it (the frontend's caps) or starts a worker.
 */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur >= rl.rlim_max)
        return;
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl))
        loki_log(LOKI_LOG_WARN, "cannot raise RLIMIT_NOFILE from %llu to %llu: %s",
                 (unsigned long long)was, (unsigned long long)rl.rlim_max, strerror(errno));
    else
        loki_log(LOKI_LOG_DEBUG, "RLIMIT_NOFILE raised from %llu to %llu", (unsigned long long)was,
                 (unsigned long long)rl.rlim_max);
}

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
    raise_nofile();
    int config_fd; /* the workers' sealed snapshot of what was validated here */
    if ((rc = load_config(opt, &d->topo, &d->cfg, &config_fd, err, sizeof(err)))) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    d->reload_fd = -1;

    if ((rc = loki_metrics_create(d->topo, &d->metrics))) {
        fprintf(stderr, "lokid: metrics: %s\n", loki_strerror(rc));
        return 1;
    }
    d->arena_bytes = opt->arena_mb ? (size_t)opt->arena_mb << 20 : (size_t)64 << 20;
    struct loki_router_actor_config rac = {.topo = d->topo,
                                           .max_roots = d->cfg.frontend.max_inflight,
                                           .retry_after_ms = RETRY_AFTER_MS,
                                           .max_result = d->cfg.frontend.max_result,
                                           .arena_bytes = d->arena_bytes,
                                           .metrics = d->metrics};
    struct loki_router_actor_ops rao = {.arrival = ra_arrival};
    if ((rc = loki_router_actor_create(d->loop, &rac, &rao, d, &d->ra))) {
        fprintf(stderr, "lokid: router: %s\n", loki_strerror(rc));
        return 1;
    }
    d->router = loki_router_actor_router(d->ra);

    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
        fprintf(stderr, "lokid: cannot find own executable\n");
        return 1;
    }
    self[n] = 0;
    struct loki_sup_config sc = {.self_exe = self,
                                 .config_fd = config_fd,
                                 .arena_bytes = d->arena_bytes,
                                 .ring_bytes = loki_router_actor_ring_bytes(d->ra),
                                 .seed = opt->seed,
                                 .mps = true,
                                 .spin_ns = (uint64_t)(d->cfg.runtime.spin_us * 1e3)};
    rc = loki_sup_create(d->loop, d->topo, &sc, loki_router_actor_sup_ops(), d->ra, &d->sup);
    close(config_fd); /* the supervisor holds its own */
    if (rc) {
        fprintf(stderr, "lokid: supervisor: %s\n", loki_strerror(rc));
        return 1;
    }
    loki_router_actor_attach(d->ra, d->sup);
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
    loki_report_init(&d->rep);
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
                                    .on_cancel = fe_cancel,
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
    /* the socket and the metrics port before any worker: a bad path or a taken port fails
     * now, with its own cause, not once every worker has loaded. Until the workers are up
     * the socket answers, and `status` says "not ready". */
    if ((rc = loki_frontend_start(d->fe))) {
        fprintf(stderr, "lokid: cannot listen on %s: %s\n", d->cfg.frontend.socket_path,
                loki_strerror(rc));
        return 1;
    }

    if (opt->metrics_port >= 0) {
        if ((rc = loki_http_create(d->loop, opt->metrics_port, http_render, d, &d->http))) {
            fprintf(stderr, "lokid: cannot serve metrics on 127.0.0.1:%d: %s\n", opt->metrics_port,
                    uv_strerror(rc));
            return 1;
        }
        loki_log(LOKI_LOG_INFO, "metrics on http://127.0.0.1:%d/metrics", loki_http_port(d->http));
    }

    if ((rc = front_start(d)))
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
    uv_timer_init(d->loop, &d->drain_timer);
    d->drain_timer.data = d;
    uv_timer_init(d->loop, &d->tick_timer);
    d->tick_timer.data = d;
    on_tick(&d->tick_timer); /* the zero baseline of the first minute */
    uv_timer_start(&d->tick_timer, on_tick, 1000, 1000);
    uv_timer_init(d->loop, &ready_timer);
    ready_timer.data = d;
    uv_timer_start(&ready_timer, check_ready, 5, 5);
    lokid_sd_watchdog_start(d->loop);
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
    loki_router_actor_stop(d->ra);
    uv_close((uv_handle_t *)&d->drain_timer, NULL);
    uv_close((uv_handle_t *)&d->tick_timer, NULL);
    uv_close((uv_handle_t *)&ready_timer, NULL);
    lokid_sd_watchdog_close();
    uv_close((uv_handle_t *)&d->sig_term, NULL);
    uv_close((uv_handle_t *)&d->sig_int, NULL);
    uv_close((uv_handle_t *)&d->sig_hup, NULL);
    http_stop(d);
    while (uv_run(d->loop, UV_RUN_NOWAIT))
        ;
    loki_frontend_destroy(d->fe);
#ifdef LOKI_HAVE_HTTP_FRONT
    loki_http_front_destroy(d->front);
#endif
    loki_router_actor_destroy(d->ra);
    loki_planner_actor_destroy(d->pa);
    loki_planner_uv_destroy(d->pu);
    loki_metrics_destroy(d->metrics);
    uv_loop_close(d->loop);
    loki_report_fini(&d->rep);
    free(d->reload_topo);
    if (d->reload_fd >= 0)
        close(d->reload_fd);
    free(d->topo);
    loki_log_query_flush();
    loki_log(LOKI_LOG_INFO, "stopped");
    return d->exit_code;
}
