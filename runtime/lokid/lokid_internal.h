/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lokid's state, shared by its files: lokid.c (building and wiring the actors, readiness,
 * drain, signals), lokid_status.c (the status view, the reports and the metrics endpoint),
 * lokid_reload.c (reading the topology file, SIGHUP reloads) and lokid_front.c (the opt-in
 * HTTP front door). Internal to runtime/lokid.
 */
#ifndef LOKID_INTERNAL_H
#define LOKID_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "frontend.h"
#include "loki/clock.h"
#include "loki/config.h"
#include "loki/http.h"
#include "loki/metrics.h"
#include "loki/status.h"
#include "lokid.h"
#include "planner.h" /* actors/: the planner actor */
#include "planner_uv.h"
#include "router_actor.h"
#include "supervisor.h"

#define RETRY_AFTER_MS 100 /* hint in "overloaded" replies: about one admission refill */

struct loki_http_front; /* actors/http_front.h, when built */

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
    struct loki_report rep;         /* the last rendered report, kept until the next one */
    struct loki_http *http;         /* GET /metrics; NULL without --metrics-port or once stopped */
    size_t arena_bytes;             /* the payload arena's */
    struct loki_process_stats proc; /* the last sample, shown by the reports */
    struct loki_gpu *gpu;           /* NVML; NULL without the driver */
    struct loki_http_front *front;  /* the HTTP front door; NULL when off */
    int exit_code;
    uint64_t start_failed_seen; /* worker starts that failed, as of the last plan applied */
    /* SIGHUP: a validated configuration waiting for the solve in flight to end (reload_apply) */
    struct loki_topology *reload_topo;
    int reload_fd;
};

static inline double now_s(struct lokid *d)
{
    return (double)(loki_now_ns() - d->t0_ns) / 1e9;
}

/* lokid_status.c: the frontend's report callbacks, the once-a-second metrics tick, and the
 * HTTP endpoint (started before any worker, so a taken port fails at once) */
int lokid__fe_metrics(void *ctx, struct loki_metric *out, int max);
int lokid__fe_report(void *ctx, enum loki_msg_type type, struct loki_bytes format,
                     struct loki_bytes *out, char *err, size_t errlen);
void lokid__on_tick(uv_timer_t *tm);
int lokid__http_start(struct lokid *d);
void lokid__http_stop(struct lokid *d);

/* lokid_reload.c: read, validate and seal the topology file (*@fd the sealed copy workers
 * get); SIGHUP re-reads it; a reload waiting for a solve in flight is applied by
 * lokid__reload_apply() */
int lokid__load_config(const struct lokid_options *opt, struct loki_topology **topo,
                       struct loki_config *cfg, int *fd, char *err, size_t errlen);
void lokid__on_sighup(uv_signal_t *s, int sig);
void lokid__reload_apply(struct lokid *d);

/* lokid_front.c: the HTTP front door where frontend.http (or --http-port) asks for it, started
 * after the socket listens and before any worker (returns 0 or lokid's exit status); stopped
 * after the frontend (a write it blocked on the loop then fails), logging its counters */
int lokid__front_start(struct lokid *d);
void lokid__front_stop(struct lokid *d);
/* The front door's counters for the status view (enabled false without one). */
void lokid__front_status(const struct lokid *d, struct loki_status_http *out);
void lokid__front_destroy(struct lokid *d);

/* lokid.c: the planner actor's timer (a reload re-plans at once) */
void lokid__on_plan_timer(uv_timer_t *t);

#endif
