/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The planner: from a topology, a root demand per pipeline and the current
 * plan, produce the next plan (struct loki_plan) under the topology's policy
 * (Loki's MILP or a baseline: inferline, proteus, static). Also the
 * independent plan checker and the plan comparison that tells lokid whether
 * a new plan changes anything. Pure library: no I/O, no threads, no logging;
 * one planner object per thread.
 */
#ifndef LOKI_PLANNER_H
#define LOKI_PLANNER_H

#include <stddef.h>

#include "loki/demand.h"
#include "loki/plan.h"

struct loki_planner;

/*
 * Create a planner for @topo (borrowed: must outlive the planner and not
 * change while it lives). Returns 0, -EINVAL for an empty topology, -ENOMEM.
 * Release with loki_planner_destroy(). The planner thread owns it.
 */
int loki_planner_create(const struct loki_topology *topo, struct loki_planner **out);

/* Release @pl and everything it allocated. NULL is a no-op. */
void loki_planner_destroy(struct loki_planner *pl);

/*
 * The planner's fan-out estimator: feed it with loki_fanout_est_observe() from
 * the planner thread; solves use its estimates (topology means until observed).
 */
struct loki_fanout_est *loki_planner_fanout(struct loki_planner *pl);

/*
 * Plan for @demand (root queries/s, one per pipeline, >= 0) under the
 * topology's policy (topology.planner.policy).
 * @current: the plan now applied (NULL at start). Loki's MILP is warm started
 *           from it, and hysteresis keeps it (out->kept = true, loads
 *           re-evaluated) unless the new plan improves accuracy or GPU use by
 *           planner.hysteresis (relative) or @current cannot carry @demand;
 *           a plan that would stop a variant younger than planner.min_dwell_s
 *           is not applied while @current still carries demand.
 * @now_s:   planner clock, seconds (for dwell times; any origin).
 * @out:     the next plan; may alias nothing else. Always placeable.
 * Never fails for lack of capacity: it degrades to accuracy scaling, then to
 * a served fraction < 1 (mode LOKI_MODE_SERVED) that admission control
 * enforces. Returns 0, -EINVAL on bad arguments, -ENOMEM, LOKI_ESOLVER when
 * GLPK fails outright, LOKI_EINFEASIBLE for a static plan that cannot be
 * placed.
 */
int loki_planner_solve(struct loki_planner *pl, const double *demand,
                       const struct loki_plan *current, double now_s, struct loki_plan *out);

/* As loki_planner_solve() with @policy instead of the topology's (for comparisons). */
int loki_planner_solve_policy(struct loki_planner *pl, enum loki_policy policy,
                              const double *demand, const struct loki_plan *current, double now_s,
                              struct loki_plan *out);

/*
 * Independent check of @plan against @topo for root @demand (per pipeline;
 * the plan's served_fraction is applied): placement (GPU index, shares <= 1,
 * MPS clients, memory per GPU; instance list agrees with the per-variant
 * counts), splits sum to 1 where traffic flows, capacity >= load at every
 * variant with the load propagated through the plan's split and the
 * topology's fan-outs, and every variant path that can carry traffic within
 * headroom x SLO. Returns 0 or LOKI_EINFEASIBLE with a reason in @why
 * (may be NULL). Pure; any thread.
 */
int loki_plan_check(const struct loki_topology *topo, const struct loki_plan *plan,
                    const double *demand, char *why, size_t len);

/*
 * Loads under @plan's split for root @demand (served fraction applied) with
 * fan-outs from @fan (NULL: topology means): writes @load[p][t][v] in qps.
 * Returns 0, or LOKI_EINFEASIBLE if some variant's load exceeds its capacity.
 */
int loki_plan_loads(const struct loki_topology *topo, const struct loki_plan *plan,
                    const double *demand, const struct loki_fanout_est *fan,
                    double load[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS]);

/*
 * Whether applying @b in place of @a changes anything workers or routing see: instances
 * (variant, batch, share, GPU, in order), splits or served fractions. NULL differs.
 */
bool loki_plan_differs(const struct loki_plan *a, const struct loki_plan *b);

/* "none", "latency", "memory", "gpus", "solver", "static". */
const char *loki_plan_why_name(enum loki_plan_why w);

/*
 * The batch-1 latency budget of a variant of task @task of pipeline @p: headroom x SLO less the
 * fastest the rest of the pipeline can be (over every root-to-leaf chain through @task, the
 * batch-1 latency of the fastest variant of every other task that fits a GPU's memory). A
 * variant slower than this at batch 1 on a whole GPU can never be planned. Pure; any thread.
 */
double loki_task_budget_ms(const struct loki_topology *topo, int p, int task);

/* Proteus's budget for task @task: headroom x SLO / the length of the longest chain through it. */
double loki_task_proteus_budget_ms(const struct loki_topology *topo, int p, int task);

enum loki_lint_kind {
    LOKI_LINT_PIPELINE = 0,    /* the fastest path breaks headroom x SLO: no policy plans it */
    LOKI_LINT_TASK,            /* a task has no usable variant (latency and memory together) */
    LOKI_LINT_VARIANT_LATENCY, /* a variant slower at batch 1 than its task's budget */
    LOKI_LINT_VARIANT_MEMORY,  /* a variant larger than one GPU's memory */
    LOKI_LINT_INFERLINE,       /* inferline (most accurate variants only) cannot serve it */
    LOKI_LINT_PROTEUS,         /* proteus (an equal budget slice per task) cannot serve it */
};

/* One finding of loki_topology_lint(). */
struct loki_lint {
    enum loki_lint_kind kind;
    int pipeline, task, variant; /* -1 where it is about the whole task or pipeline */
    double latency_ms;           /* batch-1 latency concerned */
    double budget_ms;            /* the budget it is compared with */
    char text[LOKI_WHY_TEXT];    /* one line for people, naming everything */
};

/*
 * What in @topo can never be used, or cannot be served by a policy: every variant slower at
 * batch 1 than its task's budget (loki_task_budget_ms()) or larger than a GPU's memory, tasks
 * left without a usable variant, pipelines whose fastest path breaks headroom x SLO, and
 * pipelines inferline or proteus cannot serve. Writes at most @max findings to @out (may be
 * NULL with @max 0) and returns how many there are. Pure; any thread.
 */
int loki_topology_lint(const struct loki_topology *topo, struct loki_lint *out, int max);

/* "hardware", "accuracy", "served", "static". */
const char *loki_plan_mode_name(enum loki_plan_mode m);

#endif
