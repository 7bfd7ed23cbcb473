/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lokid's reports: the status report ("table" for people, "json" for tools),
 * the Prometheus text exposition and the figures of a METRICS reply. Each
 * renders a read-only view that its caller fills (topology, plan, router
 * counters, planner counters, readiness...) together with the recorded
 * metrics (loki/metrics.h), so a test renders them without a daemon. The
 * formats are documented in docs/operator.md and docs/protocol.md; tools
 * parse them, so a change here is a protocol change.
 */
#ifndef LOKI_STATUS_H
#define LOKI_STATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loki/gpu.h"
#include "loki/metrics.h"
#include "loki/plan.h"
#include "loki/process.h"
#include "loki/proto.h"
#include "loki/router.h"

/* The planner's counters, as the planner glue keeps them. */
struct loki_status_planner {
    uint64_t plans_applied; /* plans applied, the initial one included */
    uint64_t plans_kept;    /* solves whose plan hysteresis or dwell kept */
    uint64_t solves, solve_errors;
    double solve_ms_sum, last_solve_ms;
    double last_change_s; /* when the current plan was applied, on the view's uptime clock */
};

/* The frontend's counters shown in the Prometheus exposition (struct loki_frontend_stats). */
struct loki_status_frontend {
    uint64_t connections, inflight, read_buffer_bytes; /* gauges */
    uint64_t requests, bad_requests, overloaded, draining;
    uint64_t frame_errors, frame_timeouts, slow_drops, idle_timeouts, read_pauses;
};

/* The HTTP front door's counters (struct loki_http_front_stats), when it runs. */
struct loki_status_http {
    bool enabled; /* false: no loki_http_ metrics */
    uint64_t requests, infers, status_2xx, status_4xx, status_5xx, lokid_connects;
    uint64_t waiting; /* gauge: infer requests waiting for lokid's answer */
};

/* Worker processes as the supervisor counts them (struct loki_sup_stats). */
struct loki_status_workers {
    int alive;             /* worker processes running now */
    uint64_t started;      /* spawned since start */
    uint64_t start_failed; /* starts that spawned nothing (retried with backoff) */
    int last_start_error;  /* negative errno of the last of those; 0 before any */
};

/* Everything a report shows. Pointers are borrowed for the duration of the render. */
struct loki_status_view {
    const struct loki_topology *topo;
    const struct loki_metrics *metrics;     /* created for @topo */
    const struct loki_plan *plan;           /* the plan routing now; NULL before the first */
    const struct loki_router_stats *router; /* cumulative counters now */
    double demand_est[LOKI_MAX_PIPELINES];  /* per pipeline, root qps (EWMA) */
    struct loki_status_planner planner;
    struct loki_status_frontend frontend;
    struct loki_status_http http;
    struct loki_status_workers workers;
    int instances;      /* worker instances live in the router */
    double gpus_in_use; /* distinct GPUs those occupy */
    bool transitioning; /* a plan change waits for new instances */
    bool ready, draining;
    double uptime_s;                      /* now, on the clock given to loki_metrics_tick() */
    int metrics_port;                     /* port of the HTTP endpoint; -1 when there is none */
    double arena_bytes, arena_used_bytes; /* the payload arena: size, held by queries now */
    /* worker processes of variant (p, t, v) that exited unasked (the supervisor's count);
     * NULL: no loki_worker_crashes_total, 0 in the reports */
    uint64_t (*worker_crashes)(const void *ctx, int p, int t, int v);
    const void *worker_crashes_ctx;
    const struct loki_process_stats *process; /* the daemon's; NULL: no process_ metrics */
    const struct loki_gpu_stats *gpus;        /* NVML's devices; none: no loki_gpu_ metrics */
    int n_gpus;
};

/* A rendered report: NUL-terminated @text of @len bytes; the buffer grows and is reused. */
struct loki_report {
    char *text;
    size_t len, cap;
    bool oom; /* a render ran out of memory; @text is incomplete */
};

/* Start @r empty, on the caller's memory. Allocates nothing. */
void loki_report_init(struct loki_report *r);

/* Release what @r holds; @r is empty afterwards. */
void loki_report_fini(struct loki_report *r);

/*
 * Render @v into @out, replacing its text: the status report as JSON (one object and a
 * newline) or as a table, or the Prometheus text exposition (format 0.0.4). Allocates, so
 * not on the query path. Returns 0 or -ENOMEM (@out then holds a truncated text).
 */
int loki_status_json(const struct loki_status_view *v, struct loki_report *out);
int loki_status_table(const struct loki_status_view *v, struct loki_report *out);
int loki_status_prometheus(const struct loki_status_view *v, struct loki_report *out);

/*
 * The report a client asked for: STATUS with @format "table" or "json", METRICS with
 * "prometheus". Returns 0, -ENOMEM, or -EINVAL for another pair, with the protocol's error
 * text in @err (@errlen bytes) for either error.
 */
int loki_status_render(const struct loki_status_view *v, enum loki_msg_type type,
                       struct loki_bytes format, struct loki_report *out, char *err, size_t errlen);

/*
 * The figures of a METRICS reply without a format (first pipeline): up to @max name/value
 * pairs into @out, names pointing to static strings. Returns how many were written.
 */
int loki_status_summary(const struct loki_status_view *v, struct loki_metric *out, int max);

#endif
