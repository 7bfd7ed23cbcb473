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
 * (runtime/metrics) and the HTTP endpoint (/metrics, /healthz, /readyz; loopback by
 * default), readiness, drain on SIGTERM (new requests get "draining" while in-flight ones
 * finish) and, on SIGHUP, reloading the topology and re-planning.
 *
 * Start-up order: descriptors (the soft limit raised to the hard one), the topology
 * (validated, and sealed for the workers: they never read the file), the socket, the
 * metrics port and the opt-in HTTP front door (lokid_front.c; a bad path or a taken port fails
 * before any worker), then the initial plan's workers.
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
#include "loki/arena.h"
#include "loki/clock.h"
#include "loki/error.h"
#include "loki/gpu.h"
#include "loki/http.h"
#include "loki/log.h"
#include "loki/metrics.h"
#include "loki/planner.h"
#include "planner.h" /* actors/: the planner actor */
#include "planner_uv.h"
#include "loki/router.h"
#include "loki/status.h"
#include "loki/topology.h"
#include "lokid.h"
#include "lokid_internal.h"
#include "lokid_sd.h"
#include "router_actor.h"
#include "supervisor.h"

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

void lokid__on_plan_timer(uv_timer_t *t)
{
    struct lokid *d = t->data;
    /* a solve reads the topology on the thread pool: a reload waits until none runs */
    if (d->reload_topo && !loki_planner_uv_is_busy(d->pu))
        lokid__reload_apply(d);
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
    lokid__front_stop(d);
    lokid__http_stop(d);
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
    if ((rc = lokid__load_config(opt, &d->topo, &d->cfg, &config_fd, err, sizeof(err)))) {
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
                                    .on_cancel = fe_cancel,
                                    .is_ready = fe_ready,
                                    .on_metrics = lokid__fe_metrics,
                                    .on_report = lokid__fe_report,
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

    if ((rc = lokid__http_start(d)) || (rc = lokid__front_start(d)))
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
    uv_timer_start(&d->plan_timer, lokid__on_plan_timer, (uint64_t)d->topo->planner.interval_ms,
                   (uint64_t)d->topo->planner.interval_ms);
    uv_timer_init(d->loop, &d->drain_timer);
    d->drain_timer.data = d;
    uv_timer_init(d->loop, &d->tick_timer);
    d->tick_timer.data = d;
    lokid__on_tick(&d->tick_timer); /* the zero baseline of the first minute */
    uv_timer_start(&d->tick_timer, lokid__on_tick, 1000, 1000);
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
    uv_signal_start(&d->sig_hup, lokid__on_sighup, SIGHUP);
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
    lokid__http_stop(d);
    while (uv_run(d->loop, UV_RUN_NOWAIT))
        ;
    loki_frontend_destroy(d->fe);
    lokid__front_destroy(d);
    loki_router_actor_destroy(d->ra);
    loki_planner_actor_destroy(d->pa);
    loki_planner_uv_destroy(d->pu);
    loki_metrics_destroy(d->metrics);
    loki_gpu_close(d->gpu);
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
