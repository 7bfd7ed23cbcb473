/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The planner actor: the one control loop that turns observed arrivals and
 * fan-outs into plans. It estimates demand (EWMA over one-second windows),
 * decides when to solve, runs the solve off its caller's loop when the
 * harness can (lokid: libuv's thread pool; the replay: inline, on a virtual
 * clock), and applies the result through a callback, with the planner
 * library's hysteresis and minimum dwell. It sees only a clock and callbacks,
 * so lokid and `loki replay` drive this same code, not two copies of it.
 *
 *   arrival ──▶ demand EWMA ─┐
 *   router stats ─▶ fan-outs ─┼─ tick ─▶ offload(work: solve) ─▶ done ─▶ apply(plan)
 *   clock ───────────────────┘
 */
#ifndef LOKI_ACTOR_PLANNER_H
#define LOKI_ACTOR_PLANNER_H

#include <stdbool.h>
#include <stdint.h>

#include "loki/model.h"
#include "loki/plan.h"

struct loki_planner_actor;
struct loki_router_stats;

struct loki_planner_actor_ops {
    /* The harness's clock, seconds (lokid: since start; the replay: virtual time). */
    double (*now_s)(void *ctx);
    /*
     * Make the router follow @plan (loki_router_set_plan). @why: "initial" or
     * "demand changed". Returns 0, or a negative error: the actor then keeps
     * the current plan. The plan stays valid until the next apply.
     */
    int (*apply)(void *ctx, const struct loki_plan *plan, const char *why);
    /* Whether a reconfiguration is still in progress (loki_router_is_transitioning). */
    bool (*busy)(void *ctx);
    /* The router's cumulative counters, for the fan-outs observed since the last solve. */
    const struct loki_router_stats *(*stats)(void *ctx);
    /*
     * Optional. See that loki_planner_actor_work() runs (off the loop, or
     * inline) and then loki_planner_actor_done() on the loop (lokid:
     * uv_queue_work; the replay: inline, done at once or at a later event).
     * Its return value is the tick's. NULL: both run inline within
     * loki_planner_actor_tick().
     */
    int (*offload)(void *ctx);
    /* Optional. A solve finished: @rc 0 or its error, @wall_ms its wall time. */
    void (*solved)(void *ctx, int rc, const struct loki_plan *next, double wall_ms);
};

struct loki_planner_actor_config {
    /*
     * lokid's control loop: no tick while a reconfiguration is in progress
     * (one at a time), and a solved plan equal to the current one is not
     * applied again. Off (the replay's idealised loop): solve every tick and
     * apply every plan the planner does not mark kept.
     */
    bool serial;
    /*
     * Demand windows count from time 0 (the replay, whose arrivals start at 0).
     * Off: ticks do nothing until loki_planner_actor_start(), and demand counts
     * from that moment (lokid: when it serves, so the seconds its first workers
     * took to start are not counted as idle ones).
     */
    bool from_zero;
};

/*
 * Create the actor for @topo (borrowed; outlives the actor). Returns 0,
 * -ENOMEM or the planner library's error. Release with
 * loki_planner_actor_destroy(). Loop thread.
 */
int loki_planner_actor_create(const struct loki_topology *topo,
                              const struct loki_planner_actor_config *cfg,
                              const struct loki_planner_actor_ops *ops, void *ctx,
                              struct loki_planner_actor **out);

/* Release. No solve may be in flight (wait for its done first). */
void loki_planner_actor_destroy(struct loki_planner_actor *a);

/*
 * Solve for @demand (qps per pipeline) with no current plan and apply it,
 * inline: the plan a harness starts with. Returns 0 or the solve's or
 * apply's error.
 */
int loki_planner_actor_initial(struct loki_planner_actor *a, const double *demand);

/* Begin serving: demand windows count from now and ticks plan (see from_zero). */
void loki_planner_actor_start(struct loki_planner_actor *a);

/* Stop (true) or resume re-planning; estimates still follow demand (drain, fixed plan). */
void loki_planner_actor_freeze(struct loki_planner_actor *a, bool frozen);

/* One root query of pipeline @p arrived at @t_s on the harness's clock. Loop thread. */
void loki_planner_actor_arrival(struct loki_planner_actor *a, int p, double t_s);

/*
 * The plan timer: update the demand estimate and, unless a solve is in
 * flight, re-planning is frozen or (serial) a reconfiguration runs, observe
 * fan-outs and start a solve. Returns 0 or the inline solve's or apply's
 * error. Loop thread.
 */
int loki_planner_actor_tick(struct loki_planner_actor *a);

/* The off-loop half of a solve that ops->offload() was asked to run. Any one thread. */
void loki_planner_actor_work(struct loki_planner_actor *a);

/*
 * The loop half: count the solve and apply its plan unless the planner kept
 * the current one (or, serial, it equals it). @discard: the work was
 * cancelled or the harness is stopping; nothing is applied. Returns 0 or
 * apply's error. Loop thread.
 */
int loki_planner_actor_done(struct loki_planner_actor *a, bool discard);

/* Counters of the control loop, for status and metrics. */
struct loki_planner_actor_stats {
    uint64_t replans;      /* solves started */
    uint64_t solves;       /* solves completed */
    uint64_t solve_errors; /* solves that failed (the current plan stays) */
    uint64_t plans_kept;   /* solves whose plan hysteresis or dwell kept */
    uint64_t plans_applied;
    double solve_ms_sum, last_solve_ms; /* the planner's own solve time (plan->solve_ms) */
    double last_change_s;               /* clock time of the last plan applied */
    bool solving;
};

const struct loki_planner_actor_stats *loki_planner_actor_stats(const struct loki_planner_actor *a);

/* The plan the router follows now (NULL before the initial plan). */
const struct loki_plan *loki_planner_actor_plan(const struct loki_planner_actor *a);

/* The EWMA demand estimate of pipeline @p as of the last tick (qps). */
double loki_planner_actor_estimate(const struct loki_planner_actor *a, int p);

/* The demand the last solve planned pipeline @p for (estimate plus noise margin, qps). */
double loki_planner_actor_plan_input(const struct loki_planner_actor *a, int p);

/* Wall time of the last solve's work, ms (the replay's lokid loop delays its plan by it). */
double loki_planner_actor_last_wall_ms(const struct loki_planner_actor *a);

#endif
