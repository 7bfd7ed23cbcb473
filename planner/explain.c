/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Saying why: what in a topology can never be used (loki_topology_lint(), printed by `loki
 * topology check`) and why a plan serves less than its demand (loki__plan_explain(), which
 * fills loki_plan.why and why_text for every policy). Both reason from the same two facts a
 * plan must respect: a variant path runs within headroom x SLO at batch 1 at best (each
 * policy with its own set of variants and budget: inferline only the most accurate ones,
 * proteus an equal slice per task), and an instance fits one GPU's memory. Pure functions.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "loki/planner.h"

#define MAX_CHAINS 64

const char *loki_plan_why_name(enum loki_plan_why w)
{
    static const char *const n[] = {"none", "latency", "memory", "gpus", "solver", "static"};
    return (unsigned)w < sizeof(n) / sizeof(n[0]) ? n[w] : "?";
}

/* Batch-1 latency of @v at its fastest share (share 1: every profile has it). */
static double lat1(const struct loki_variant *v)
{
    return loki_variant_latency(v, 1, 1.0);
}

/* Whether one instance of @v fits a GPU's memory (memory_mb 0: unlimited). */
static bool fits_memory(const struct loki_topology *topo, const struct loki_variant *v)
{
    return !(topo->gpus.mem_mb > 0) || v->mem_mb <= topo->gpus.mem_mb + 1e-6;
}

/* Fastest batch-1 latency over the variants of @t that fit memory (or all, if none does). */
static double task_fastest(const struct loki_topology *topo, const struct loki_task *t)
{
    double best = INFINITY, any = INFINITY;
    for (int v = 0; v < t->n_variants; v++) {
        double l = lat1(&t->variants[v]);
        if (!(l > 0))
            continue;
        any = fmin(any, l);
        if (fits_memory(topo, &t->variants[v]))
            best = fmin(best, l);
    }
    return isfinite(best) ? best : any;
}

double loki_task_budget_ms(const struct loki_topology *topo, int p, int task)
{
    const struct loki_pipeline *pp = &topo->pipelines[p];
    int chains[MAX_CHAINS][LOKI_MAX_TASKS], len[MAX_CHAINS];
    int n = loki_pipeline_chains(pp, chains, len, MAX_CHAINS);
    double rest = 0;
    for (int k = 0; k < n; k++) {
        bool on = false;
        double s = 0;
        for (int i = 0; i < len[k]; i++) {
            if (chains[k][i] == task)
                on = true;
            else
                s += task_fastest(topo, &pp->tasks[chains[k][i]]);
        }
        if (on)
            rest = fmax(rest, s);
    }
    return topo->planner.headroom * pp->slo_ms - rest;
}

/* Length of the longest chain through @task: proteus gives each task budget / this. */
static int task_depth(const struct loki_pipeline *pp, int task)
{
    int chains[MAX_CHAINS][LOKI_MAX_TASKS], len[MAX_CHAINS];
    int n = loki_pipeline_chains(pp, chains, len, MAX_CHAINS);
    int d = 1;
    for (int k = 0; k < n; k++)
        for (int i = 0; i < len[k]; i++)
            if (chains[k][i] == task && len[k] > d)
                d = len[k];
    return d;
}

double loki_task_proteus_budget_ms(const struct loki_topology *topo, int p, int task)
{
    const struct loki_pipeline *pp = &topo->pipelines[p];
    return topo->planner.headroom * pp->slo_ms / task_depth(pp, task);
}

/*
 * The chain of the most accurate variants with the largest batch-1 latency: writes its text
 * ("a/x -> b/y") into @buf and returns the latency.
 */
static double best_chain(const struct loki_pipeline *pp, char *buf, size_t len)
{
    int chains[MAX_CHAINS][LOKI_MAX_TASKS], clen[MAX_CHAINS];
    int n = loki_pipeline_chains(pp, chains, clen, MAX_CHAINS);
    double worst = -1;
    buf[0] = 0;
    for (int k = 0; k < n; k++) {
        double s = 0;
        for (int i = 0; i < clen[k]; i++) {
            const struct loki_task *t = &pp->tasks[chains[k][i]];
            s += lat1(&t->variants[loki_task_best_variant(t)]);
        }
        if (s <= worst)
            continue;
        worst = s;
        size_t u = 0;
        for (int i = 0; i < clen[k] && u < len; i++) {
            const struct loki_task *t = &pp->tasks[chains[k][i]];
            int w = snprintf(buf + u, len - u, "%s%s/%s", i ? " -> " : "", t->name,
                             t->variants[loki_task_best_variant(t)].name);
            u += w > 0 ? (size_t)w : 0;
        }
    }
    return worst;
}

/* The fastest variant of @t at batch 1 (ties: the first). */
static int fastest_variant(const struct loki_task *t)
{
    int f = 0;
    for (int v = 1; v < t->n_variants; v++)
        if (lat1(&t->variants[v]) < lat1(&t->variants[f]))
            f = v;
    return f;
}

struct lint_out {
    struct loki_lint *out;
    int max, n;
};

static void add(struct lint_out *o, enum loki_lint_kind kind, int p, int t, int v, double lat,
                double budget, const char *fmt, ...) __attribute__((format(printf, 8, 9)));

static void add(struct lint_out *o, enum loki_lint_kind kind, int p, int t, int v, double lat,
                double budget, const char *fmt, ...)
{
    if (o->n < o->max) {
        struct loki_lint *l = &o->out[o->n];
        l->kind = kind;
        l->pipeline = p;
        l->task = t;
        l->variant = v;
        l->latency_ms = lat;
        l->budget_ms = budget;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(l->text, sizeof(l->text), fmt, ap);
        va_end(ap);
    }
    o->n++;
}

int loki_topology_lint(const struct loki_topology *topo, struct loki_lint *out, int max)
{
    struct lint_out o = {out, max > 0 ? max : 0, 0};
    double h = topo->planner.headroom;
    for (int p = 0; p < topo->n_pipelines; p++) {
        const struct loki_pipeline *pp = &topo->pipelines[p];
        double total = h * pp->slo_ms;
        char chain[256];
        /* the pipeline as a whole: its fastest chain */
        double fast = 0;
        {
            int chains[MAX_CHAINS][LOKI_MAX_TASKS], len[MAX_CHAINS];
            int n = loki_pipeline_chains(pp, chains, len, MAX_CHAINS);
            for (int k = 0; k < n; k++) {
                double s = 0;
                for (int i = 0; i < len[k]; i++)
                    s += task_fastest(topo, &pp->tasks[chains[k][i]]);
                fast = fmax(fast, s);
            }
        }
        if (fast > total + 1e-9)
            add(&o, LOKI_LINT_PIPELINE, p, -1, -1, fast, total,
                "pipeline %s: its fastest path needs %.3g ms at batch 1, more than the planning "
                "budget of %.3g ms (headroom %g x SLO %g ms): no policy can plan it",
                pp->name, fast, total, h, pp->slo_ms);
        for (int t = 0; t < pp->n_tasks; t++) {
            const struct loki_task *tk = &pp->tasks[t];
            double budget = loki_task_budget_ms(topo, p, t);
            int usable = 0;
            for (int v = 0; v < tk->n_variants; v++) {
                const struct loki_variant *va = &tk->variants[v];
                double l = lat1(va);
                bool lat_ok = l <= budget + 1e-9, mem_ok = fits_memory(topo, va);
                usable += lat_ok && mem_ok;
                if (!lat_ok)
                    add(&o, LOKI_LINT_VARIANT_LATENCY, p, t, v, l, budget,
                        "%s/%s can never be used: %.3g ms at batch 1, but the rest of the "
                        "pipeline leaves it %.3g ms of the %.3g ms budget (headroom %g x SLO %g "
                        "ms)",
                        tk->name, va->name, l, budget, total, h, pp->slo_ms);
                if (!mem_ok)
                    add(&o, LOKI_LINT_VARIANT_MEMORY, p, t, v, l, budget,
                        "%s/%s can never be used: it needs %g MiB of GPU memory, a GPU has %g",
                        tk->name, va->name, va->mem_mb, topo->gpus.mem_mb);
            }
            if (usable == 0 && fast <= total + 1e-9)
                add(&o, LOKI_LINT_TASK, p, t, -1, lat1(&tk->variants[fastest_variant(tk)]), budget,
                    "task %s has no usable variant: pipeline %s cannot be planned", tk->name,
                    pp->name);
            /* proteus: an equal slice per task */
            double slice = loki_task_proteus_budget_ms(topo, p, t);
            double fv = INFINITY;
            int fi = -1;
            for (int v = 0; v < tk->n_variants; v++)
                if (fits_memory(topo, &tk->variants[v]) && lat1(&tk->variants[v]) < fv) {
                    fv = lat1(&tk->variants[v]);
                    fi = v;
                }
            if (fi >= 0 && fv > slice + 1e-9 && usable > 0)
                add(&o, LOKI_LINT_PROTEUS, p, t, fi, fv, slice,
                    "proteus cannot serve pipeline %s: it gives task %s an equal slice of the "
                    "budget, %.3g ms (%.3g / %d tasks deep), and its fastest variant %s needs "
                    "%.3g ms at batch 1",
                    pp->name, tk->name, slice, total, task_depth(pp, t), tk->variants[fi].name, fv);
        }
        /* inferline: only the most accurate variant of every task */
        double bl = best_chain(pp, chain, sizeof(chain));
        if (bl > total + 1e-9 && fast <= total + 1e-9)
            add(&o, LOKI_LINT_INFERLINE, p, -1, -1, bl, total,
                "inferline cannot serve pipeline %s: it runs only the most accurate variant of "
                "each task, and %s needs %.3g ms at batch 1, more than the %.3g ms budget",
                pp->name, chain, bl, total);
        for (int t = 0; t < pp->n_tasks; t++) {
            const struct loki_task *tk = &pp->tasks[t];
            const struct loki_variant *b = &tk->variants[loki_task_best_variant(tk)];
            if (!fits_memory(topo, b))
                add(&o, LOKI_LINT_INFERLINE, p, t, loki_task_best_variant(tk), lat1(b), total,
                    "inferline cannot serve pipeline %s: the most accurate variant of task %s, "
                    "%s, needs %g MiB of GPU memory, a GPU has %g",
                    pp->name, tk->name, b->name, b->mem_mb, topo->gpus.mem_mb);
        }
    }
    return o.n;
}

static void why(struct loki_plan *pl, int p, enum loki_plan_why w, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void why(struct loki_plan *pl, int p, enum loki_plan_why w, const char *fmt, ...)
{
    pl->why[p] = w;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pl->why_text[p], sizeof(pl->why_text[p]), fmt, ap);
    va_end(ap);
}

/*
 * What the policy could never plan for pipeline @p whatever the GPUs: a task without a variant
 * (of those the policy uses) within its latency budget, or without one that also fits a GPU's
 * memory. Writes the first such reason into @pl and returns true; false when there is none.
 */
static bool explain_static_limits(const struct loki_topology *topo, enum loki_policy policy, int p,
                                  struct loki_plan *pl)
{
    const struct loki_pipeline *pp = &topo->pipelines[p];
    double h = topo->planner.headroom, total = h * pp->slo_ms;
    if (policy == LOKI_POLICY_INFERLINE) {
        char chain[256];
        double bl = best_chain(pp, chain, sizeof(chain));
        if (bl > total + 1e-9) {
            why(pl, p, LOKI_WHY_LATENCY,
                "inferline runs only the most accurate variant of each task, and %s needs %.3g "
                "ms at batch 1, more than the %.3g ms budget (headroom %g x SLO %g ms)",
                chain, bl, total, h, pp->slo_ms);
            return true;
        }
        for (int t = 0; t < pp->n_tasks; t++) {
            const struct loki_task *tk = &pp->tasks[t];
            const struct loki_variant *b = &tk->variants[loki_task_best_variant(tk)];
            if (!fits_memory(topo, b)) {
                why(pl, p, LOKI_WHY_MEMORY,
                    "inferline runs only the most accurate variant of each task, and %s/%s "
                    "needs %g MiB of GPU memory, a GPU has %g",
                    tk->name, b->name, b->mem_mb, topo->gpus.mem_mb);
                return true;
            }
        }
        return false;
    }
    for (int t = 0; t < pp->n_tasks; t++) {
        const struct loki_task *tk = &pp->tasks[t];
        bool proteus = policy == LOKI_POLICY_PROTEUS;
        double budget =
            proteus ? loki_task_proteus_budget_ms(topo, p, t) : loki_task_budget_ms(topo, p, t);
        int nl = 0, nlm = 0;
        for (int v = 0; v < tk->n_variants; v++) {
            bool l = lat1(&tk->variants[v]) <= budget + 1e-9;
            nl += l;
            nlm += l && fits_memory(topo, &tk->variants[v]);
        }
        int f = fastest_variant(tk);
        if (nl == 0) {
            if (proteus)
                why(pl, p, LOKI_WHY_LATENCY,
                    "proteus gives task %s an equal slice of the budget, %.3g ms (%.3g ms / %d "
                    "tasks deep), and its fastest variant %s needs %.3g ms at batch 1",
                    tk->name, budget, total, task_depth(pp, t), tk->variants[f].name,
                    lat1(&tk->variants[f]));
            else
                why(pl, p, LOKI_WHY_LATENCY,
                    "no variant of task %s fits the latency budget: the fastest, %s, needs %.3g "
                    "ms at batch 1 where the rest of the pipeline leaves it %.3g of %.3g ms "
                    "(headroom %g x SLO %g ms)",
                    tk->name, tk->variants[f].name, lat1(&tk->variants[f]), budget, total, h,
                    pp->slo_ms);
            return true;
        }
        if (nlm == 0) {
            why(pl, p, LOKI_WHY_MEMORY,
                "no variant of task %s that fits the latency budget fits a GPU's %g MiB of "
                "memory",
                tk->name, topo->gpus.mem_mb);
            return true;
        }
    }
    return false;
}

void loki__plan_explain(const struct loki_topology *topo, enum loki_policy policy,
                        const double *demand, struct loki_plan *pl)
{
    for (int p = 0; p < topo->n_pipelines; p++) {
        pl->why[p] = LOKI_WHY_NONE;
        pl->why_text[p][0] = 0;
        if (!(demand[p] > 0) || pl->served_fraction[p] >= 1 - 1e-9)
            continue;
        const struct loki_pipeline *pp = &topo->pipelines[p];
        double f = pl->served_fraction[p];
        if (policy == LOKI_POLICY_STATIC) {
            /* the bottleneck of the fixed plan */
            int bt = -1, bv = -1;
            double worst = INFINITY;
            for (int t = 0; t < pp->n_tasks; t++) {
                double cap = 0, load = 0;
                for (int v = 0; v < pp->tasks[t].n_variants; v++) {
                    cap += pl->var[p][t][v].capacity_qps;
                    load += pl->var[p][t][v].load_qps;
                    if (pl->var[p][t][v].load_qps > 1e-9 &&
                        pl->var[p][t][v].capacity_qps / pl->var[p][t][v].load_qps < worst) {
                        worst = pl->var[p][t][v].capacity_qps / pl->var[p][t][v].load_qps;
                        bt = t, bv = v;
                    }
                }
                if (cap <= 0 && load <= 0 && bt < 0) {
                    why(pl, p, LOKI_WHY_STATIC,
                        "the static plan has no instance of task %s: it serves %.1f %% of %.1f "
                        "qps",
                        pp->tasks[t].name, 100 * f, demand[p]);
                    bt = -2;
                    break;
                }
            }
            if (bt >= 0)
                why(pl, p, LOKI_WHY_STATIC,
                    "the static plan serves %.1f %% of %.1f qps: its bottleneck %s/%s has %.1f "
                    "qps of capacity for %.1f qps of load",
                    100 * f, demand[p], pp->tasks[bt].name, pp->tasks[bt].variants[bv].name,
                    pl->var[p][bt][bv].capacity_qps,
                    f > 1e-9 ? pl->var[p][bt][bv].load_qps / f : pl->var[p][bt][bv].load_qps);
            else if (bt == -1)
                why(pl, p, LOKI_WHY_STATIC, "the static plan serves %.1f %% of %.1f qps", 100 * f,
                    demand[p]);
            continue;
        }
        if (explain_static_limits(topo, policy, p, pl))
            continue;
        /* at least one instance of every task (at the smallest share) must be placed */
        double g = topo->gpus.share_granularity > 0 && topo->gpus.share_granularity < 1
                       ? topo->gpus.share_granularity
                       : 1;
        if (f <= 1e-9 && pp->n_tasks * g > topo->gpus.count + 1e-9) {
            why(pl, p, LOKI_WHY_GPUS,
                "%d tasks need at least one instance each (%g GPU at least), more than the %d "
                "GPUs",
                pp->n_tasks, g, topo->gpus.count);
            continue;
        }
        if (f <= 1e-9 && (pl->truncated || pl->time_limited)) {
            why(pl, p, LOKI_WHY_SOLVER, "the solver found no plan: %s",
                pl->truncated ? "the options were thinned to the MILP's path cap"
                              : "it stopped at planner.time_limit_ms");
            continue;
        }
        /* a variant too large for one GPU can still pass the solver's aggregate memory row */
        char big[LOKI_WHY_TEXT] = "";
        for (int t = 0; t < pp->n_tasks && !big[0]; t++)
            for (int v = 0; v < pp->tasks[t].n_variants && !big[0]; v++)
                if (!fits_memory(topo, &pp->tasks[t].variants[v]) &&
                    (policy != LOKI_POLICY_INFERLINE || v == loki_task_best_variant(&pp->tasks[t])))
                    snprintf(big, sizeof(big),
                             "; %s/%s (%g MiB) does not fit one GPU's %g MiB, which can leave "
                             "the solver's plans unplaceable",
                             pp->tasks[t].name, pp->tasks[t].variants[v].name,
                             pp->tasks[t].variants[v].mem_mb, topo->gpus.mem_mb);
        f = fmax(f, 0);
        why(pl, p, LOKI_WHY_GPUS,
            "%.4g qps (planned with beta %g) need more than the %d GPUs: %s serves %.1f %% "
            "(%.4g qps) with them%s%s",
            demand[p], topo->planner.beta, topo->gpus.count, loki_policy_name(policy), 100 * f,
            f * demand[p],
            policy == LOKI_POLICY_INFERLINE ? ", running only the most accurate variants" : "",
            big);
    }
}
