/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Planner solve time and plan quality: the traffic-analysis pipeline at 20
 * GPUs over a demand walk that crosses all modes, the same pipeline on 8
 * H200s at quarter shares (examples/h200x8.yaml), synthetic chains and trees
 * growing from 8 to 128 GPUs, 2 to 5 tasks, 4 to 8 variants with shares 1,
 * 1/2, 1/4; cold (no current plan) and warm (the previous plan as warm
 * start). Every walk runs twice in the same process, on the flow formulation
 * (the default) and on the path formulation (planner.formulation), and the
 * `_paths_over_flow` lines give their ratios. Served fractions are judged
 * against an independent witness: a greedy plan built here, one variant and
 * option per task within an equal share of the latency budget, that passes
 * loki_plan_check() at beta x demand; where one exists the demand is
 * feasible and the planner must serve all of it. Plan quality on the traffic
 * pipeline against the first version's MILP (milp.c, rq->reference) and the
 * optimum. Times are wall and processor time (the machine may be shared).
 * Prints `name unit median p99 n` per metric; --out DIR writes
 * DIR/planner.json; --verbose prints every solve; --no-paths skips the path
 * formulation's runs.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_stats.h"
#include "internal.h"
#include "loki/planner.h"
#include "loki/topology.h"

struct metric {
    char name[96];
    const char *unit;
    double median, p99;
    int n;
    char note[256];
};

static struct metric metrics[256];
static int n_metrics;
static bool verbose;

/* Processor time of this process, ms: the machine is shared, so wall time alone misleads. */
static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void record(const char *name, const char *unit, double *v, int n, const char *note)
{
    struct metric *m = &metrics[n_metrics++];
    snprintf(m->name, sizeof(m->name), "%s", name);
    m->unit = unit;
    qsort(v, (size_t)n, sizeof(double), loki_bench_cmp_double);
    m->median = loki_bench_pct(v, (size_t)n, 0.5);
    m->p99 = loki_bench_pct(v, (size_t)n, 0.99);
    m->n = n;
    snprintf(m->note, sizeof(m->note), "%s", note ? note : "");
    printf("%s %s %.3f %.3f %d%s%s\n", m->name, unit, m->median, m->p99, n, note ? "  # " : "",
           note ? note : "");
    fflush(stdout);
}

static double urand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return ((*s >> 8) & 0xffffff) / (double)0x1000000;
}

/* Topology mean fan-out of variant @v of task @t into its child @child. */
static double task_fanout(const struct loki_pipeline *p, int t, int v, int child)
{
    int slot = loki_task_child_slot(&p->tasks[t], child);
    return slot >= 0 ? p->tasks[t].variants[v].fanout[slot].mean : 0;
}

/*
 * A synthetic pipeline of @tasks tasks with @nv variants each, batches 1..64,
 * shares 1, 1/2, 1/4: a chain, or (@tree) a tree whose task k > 0 hangs off
 * task (k - 1) / 2 (root -> {1, 2}, 1 -> {3, 4}: depth 3 at 5 tasks).
 */
static struct loki_topology *synthetic(int gpus, int tasks, int nv, bool tree, unsigned seed)
{
    struct loki_topology *t = calloc(1, sizeof(*t));
    loki_topology_defaults(t);
    t->gpus.count = gpus;
    t->gpus.mem_mb = 80000;
    t->gpus.share_granularity = 0.25;
    t->n_pipelines = 1;
    struct loki_pipeline *p = &t->pipelines[0];
    snprintf(p->name, sizeof(p->name), "%s%d", tree ? "tree" : "chain", tasks);
    p->n_tasks = tasks;
    p->slo_ms = 100.0 * tasks;
    for (int k = 0; k < tasks; k++) {
        struct loki_task *tk = &p->tasks[k];
        snprintf(tk->name, sizeof(tk->name), "task%d", k);
        tk->n_variants = nv;
        if (k > 0) {
            struct loki_task *par = &p->tasks[tree ? (k - 1) / 2 : k - 1];
            par->children[par->n_children++] = k;
        }
        double base = 3 + 8 * urand(&seed);
        for (int v = 0; v < nv; v++) {
            struct loki_variant *var = &tk->variants[v];
            snprintf(var->name, sizeof(var->name), "v%d", v);
            var->accuracy = v == nv - 1 ? 100 : 60 + 38.0 * (v + urand(&seed)) / nv;
            var->mem_mb = 500 + 300 * v;
            var->n_batches = 7;
            var->n_shares = 3;
            var->shares[0] = 1, var->shares[1] = 0.5, var->shares[2] = 0.25;
            var->share_scaled = true;
            double l1 = base * (1 + 0.6 * v);
            for (int b = 0; b < 7; b++) {
                int bs = 1 << b;
                var->batches[b] = bs;
                double l = l1 * (0.6 + 0.4 * bs) * (1 + 0.05 * urand(&seed));
                for (int s = 0; s < 3; s++)
                    var->latency_ms[s][b] = l * (1 + (1 / var->shares[s] - 1) * fmin(1, bs / 32.0));
            }
            for (int c = 0; c < 2; c++)
                var->fanout[c].mean = 1 + 0.3 * v;
        }
    }
    return t;
}

/* Tasks of @p parents first; returns their count. */
static int task_order(const struct loki_pipeline *p, int *order, int *parent)
{
    int n = 0;
    for (int t = 0; t < LOKI_MAX_TASKS; t++)
        parent[t] = -1;
    order[n++] = p->root;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < p->tasks[order[i]].n_children; c++) {
            parent[p->tasks[order[i]].children[c]] = order[i];
            order[n++] = p->tasks[order[i]].children[c];
        }
    return n;
}

/*
 * The independent feasibility witness (pipeline 0): one variant and option
 * per task, parents first, each task within budget / depth (depth: the
 * longest chain), picking the option that needs the fewest GPUs for its own
 * load plus (@look) its children's load at their cheapest rate; instances to
 * carry beta x @d, placed, then loki_plan_check() at beta x @d. True when
 * either way of picking gives a plan that passes: @d is then feasible.
 */
static bool witness(const struct loki_topology *t, double d, struct loki_plan *w)
{
    const struct loki_pipeline *p = &t->pipelines[0];
    int order[LOKI_MAX_TASKS], parent[LOKI_MAX_TASKS];
    int n = task_order(p, order, parent);
    int chains[LOKI_MAX_TASKS * 4][LOKI_MAX_TASKS], len[LOKI_MAX_TASKS * 4], depth = 1;
    int nc = loki_pipeline_chains(p, chains, len, LOKI_MAX_TASKS * 4);
    for (int k = 0; k < nc; k++)
        depth = len[k] > depth ? len[k] : depth;
    double beta = t->planner.beta > 0 ? t->planner.beta : 1, bd = beta * d;
    double budget = t->planner.headroom * p->slo_ms / depth;
    double g = t->gpus.share_granularity > 0 && t->gpus.share_granularity < 1
                   ? t->gpus.share_granularity
                   : 1;
    for (int look = 0; look < 2; look++) {
        memset(w, 0, sizeof(*w));
        w->policy = LOKI_POLICY_LOKI;
        w->served_fraction[0] = 1;
        double load[LOKI_MAX_TASKS] = {0};
        int var[LOKI_MAX_TASKS];
        bool ok = true;
        for (int i = 0; i < n && ok; i++) {
            int tk = order[i], par = parent[tk];
            const struct loki_task *task = &p->tasks[tk];
            if (par >= 0)
                load[tk] = load[par] * task_fanout(p, par, var[par], tk);
            else
                load[tk] = bd;
            double best = INFINITY;
            int bv = -1, bb = 0;
            double bs = 1;
            for (int v = 0; v < task->n_variants; v++) {
                const struct loki_variant *va = &task->variants[v];
                for (int s = 0; s < va->n_shares; s++) {
                    double sh = va->shares[s];
                    double k = sh / g;
                    if (sh > 1 + 1e-9 || sh < g - 1e-9 || fabs(k - round(k)) > 1e-6)
                        continue;
                    for (int b = 0; b < va->n_batches; b++) {
                        double lat = va->latency_ms[s][b];
                        if (!(lat > 0) || lat > budget + 1e-9)
                            continue;
                        double thr = va->batches[b] * 1000.0 / lat;
                        double cost = sh * fmax(1, ceil(load[tk] / thr - 1e-9));
                        for (int c = 0; c < task->n_children && look; c++) {
                            const struct loki_task *ct = &p->tasks[task->children[c]];
                            double rate = INFINITY; /* cheapest GPUs per qps of the child */
                            for (int cv = 0; cv < ct->n_variants; cv++)
                                for (int cs = 0; cs < ct->variants[cv].n_shares; cs++)
                                    for (int cb = 0; cb < ct->variants[cv].n_batches; cb++) {
                                        double cl = ct->variants[cv].latency_ms[cs][cb];
                                        if (cl > 0 && cl <= budget)
                                            rate = fmin(
                                                rate, ct->variants[cv].shares[cs] * cl /
                                                          (1000.0 * ct->variants[cv].batches[cb]));
                                    }
                            cost += load[tk] * va->fanout[c].mean * rate;
                        }
                        if (cost < best - 1e-12) {
                            best = cost;
                            bv = v, bb = va->batches[b], bs = sh;
                        }
                    }
                }
            }
            if (bv < 0) {
                ok = false;
                break;
            }
            var[tk] = bv;
            struct loki_plan_variant *pv = &w->var[0][tk][bv];
            pv->batch = bb;
            pv->share = bs;
            pv->instances = (int)fmax(
                1, ceil(load[tk] / loki_variant_throughput(&task->variants[bv], bb, bs) - 1e-9));
            w->split[0][tk][par >= 0 ? var[par] : 0][bv] = 1;
        }
        if (!ok)
            continue;
        if (loki__plan_finish(t, &bd, NULL, w) < 0 || w->gpus_used > t->gpus.count + 1e-9 ||
            loki__place(t, w) != 0)
            continue;
        if (loki_plan_check(t, w, &bd, NULL, 0) == 0)
            return true;
    }
    return false;
}

/* The MILP's mode ladder (hardware, then accuracy) at root demand @d. */
struct rung {
    int mode; /* 0 hardware, 1 accuracy, 2 neither */
    double objective, cpu_ms;
};

static struct rung ladder(const struct loki_topology *t, double d, double gap, double limit_ms,
                          bool reference, struct loki__milp_res *res)
{
    struct loki__milp_req rq;
    memset(&rq, 0, sizeof(rq));
    rq.topo = t;
    rq.demand[0] = d;
    rq.budget = t->gpus.count;
    rq.mip_gap = gap;
    rq.time_limit_ms = limit_ms;
    rq.reference = reference;
    struct rung r = {.mode = 2};
    double c0 = cpu_ms();
    for (int mode = 0; mode < 2 && r.mode == 2; mode++) {
        rq.mode = mode ? LOKI__MILP_ACCURACY : LOKI__MILP_HARDWARE;
        rq.best_only = mode == 0;
        if (loki__milp_solve(&rq, res) < 0)
            exit(1);
        if (res->feasible) {
            r.mode = mode;
            r.objective = res->objective;
        }
    }
    r.cpu_ms = cpu_ms() - c0;
    return r;
}

/*
 * Plan quality over a demand walk: the MILP as the planner runs it (its gap
 * and time limit, a basis kept from solve to solve) against the first
 * version's formulation and search at the same gap without a time limit, and
 * against the optimum (gap 1e-9; tests/planner check that both formulations
 * agree there).
 */
static void quality(const char *name, const struct loki_topology *t)
{
    struct loki__milp_res *res = calloc(1, sizeof(*res)), *ref = calloc(1, sizeof(*ref));
    enum { N = 50 };
    double short_ref[N], short_opt[N], t_new[N], t_ref[N];
    int n = 0, nhw = 0, hw_same = 0, worse = 0;
    double sum_new = 0, sum_ref = 0, sum_opt = 0;
    for (int i = 0; i < N; i++) {
        double d = 20 + 20 * i;
        struct rung a = ladder(t, d, t->planner.mip_gap, t->planner.time_limit_ms, false, res);
        struct rung b = ladder(t, d, t->planner.mip_gap, 0, true, ref);
        struct rung o = ladder(t, d, 1e-9, 0, false, ref);
        if (a.mode != b.mode || a.mode != o.mode) {
            fprintf(stderr, "bench_planner: %s at %.0f qps: modes %d/%d/%d\n", name, d, a.mode,
                    b.mode, o.mode);
            exit(1);
        }
        if (a.mode == 0) {
            nhw++;
            hw_same += fabs(a.objective - b.objective) < 1e-6;
            continue;
        }
        short_ref[n] = fmax(0, 100 * (b.objective - a.objective));
        short_opt[n] = fmax(0, 100 * (o.objective - a.objective));
        worse += b.objective > a.objective + 1e-6;
        t_new[n] = a.cpu_ms;
        t_ref[n] = b.cpu_ms;
        sum_new += a.objective, sum_ref += b.objective, sum_opt += o.objective;
        n++;
    }
    char m[128], note[256];
    snprintf(m, sizeof(m), "%s_below_reference", name);
    snprintf(note, sizeof(note),
             "accuracy mode, 20-1000 qps: below the reference at %d of %d points; mean objective "
             "%.5f, reference %.5f, optimum %.5f; hardware mode: same GPUs at %d of %d",
             worse, n, sum_new / n, sum_ref / n, sum_opt / n, hw_same, nhw);
    record(m, "pp", short_ref, n, note);
    snprintf(m, sizeof(m), "%s_below_optimum", name);
    record(m, "pp", short_opt, n, "accuracy points below the optimum (gap 1e-9)");
    snprintf(m, sizeof(m), "%s_milp_cpu", name);
    record(m, "ms", t_new, n, "processor time of one ladder (hardware, then accuracy) as planned");
    snprintf(m, sizeof(m), "%s_reference_cpu", name);
    snprintf(note, sizeof(note), "the same with the first version's formulation and search");
    record(m, "ms", t_ref, n, note);
    free(res);
    free(ref);
}

/* 1 (and with --verbose the reason) when @p fails the independent checker. */
static int checked(const char *name, int i, const struct loki_topology *t,
                   const struct loki_plan *p, double d)
{
    char why[512] = "";
    if (loki_plan_check(t, p, &d, why, sizeof(why)) == 0)
        return 0;
    if (verbose)
        printf("#   %s %d: %.1f qps, mode %d: check failed: %s\n", name, i, d, p->mode, why);
    return 1;
}

/* What one walk measured, for the comparison between formulations. */
struct walk {
    int n;
    double warm_cpu_med, warm_cpu_p99, cold_cpu_p99;
    double *acc;    /* per point: the warm plan's accuracy x served fraction */
    double *wcpu;   /* per point: the warm solve's processor time */
    int gap_over;   /* warm plans whose gap exceeds 1 % */
    double gap_p99; /* % */
    int feasible, served_all, bad, tl, trunc;
};

/*
 * Solve a demand walk cold and warm on formulation @form; with @rec, record
 * its metrics under @name. @feasible[i]: the witness found demand[i] feasible.
 */
static struct walk run(const char *name, struct loki_topology *t, const double *demand, int n,
                       const bool *feasible, enum loki_formulation form, bool rec)
{
    t->planner.formulation = form;
    struct walk r = {.n = n};
    r.acc = calloc((size_t)n, sizeof(double));
    r.wcpu = calloc((size_t)n, sizeof(double));
    struct loki_planner *pl;
    if (loki_planner_create(t, &pl) < 0)
        exit(1);
    struct loki_plan *cur = malloc(sizeof(*cur)), *next = malloc(sizeof(*next));
    double *cold = malloc(sizeof(double) * (size_t)n), *warm = malloc(sizeof(double) * (size_t)n);
    double *cold_cpu = malloc(sizeof(double) * (size_t)n);
    double *warm_cpu = malloc(sizeof(double) * (size_t)n);
    double *gaps = malloc(sizeof(double) * (size_t)n);
    int missed_cold = 0, missed_warm = 0, bad = 0;
    /* What was measured: plan modes, kept plans, path-cap truncation, time-limit hits. */
    int mode_c[4] = {0}, mode_w[4] = {0}, kept = 0, trunc_c = 0, trunc_w = 0, tl_c = 0, tl_w = 0;
    double served = 0; /* mean served fraction of the cold plans: 0 = the serve-nothing plan */
    int feas = 0, all_c = 0, all_w = 0;
    for (int i = 0; i < n; i++) {
        double d = demand[i];
        double c0 = cpu_ms();
        if (loki_planner_solve(pl, &d, NULL, i, next) < 0)
            exit(1);
        cold_cpu[i] = cpu_ms() - c0;
        cold[i] = next->solve_ms;
        int cmode = next->mode;
        missed_cold += next->gap > t->planner.mip_gap + 1e-9;
        mode_c[next->mode & 3]++;
        served += next->served_fraction[0] / n;
        trunc_c += next->truncated;
        tl_c += next->time_limited;
        bad += checked(name, i, t, next, d);
        feas += feasible[i];
        all_c += feasible[i] && next->served_fraction[0] > 1 - 1e-9;
        if (i == 0)
            memcpy(cur, next, sizeof(*cur));
        c0 = cpu_ms();
        if (loki_planner_solve(pl, &d, cur, 1000.0 * i, next) < 0)
            exit(1);
        warm_cpu[i] = cpu_ms() - c0;
        warm[i] = next->solve_ms;
        r.wcpu[i] = warm_cpu[i];
        r.acc[i] = next->accuracy[0] * next->served_fraction[0];
        gaps[i] = 100 * next->gap;
        all_w += feasible[i] && next->served_fraction[0] > 1 - 1e-9;
        if (verbose)
            printf(
                "#   %s %s %2d: %6.1f qps  cold %6.1f ms (cpu %6.1f) mode %d | warm %6.1f ms (cpu "
                "%6.1f) mode %d acc %.4f served %.3f gap %.4f%s%s\n",
                name, form == LOKI_FORMULATION_FLOW ? "flow" : "paths", i, d, cold[i], cold_cpu[i],
                cmode, warm[i], warm_cpu[i], next->mode, next->accuracy[0],
                next->served_fraction[0], next->gap, next->kept ? " kept" : "",
                feasible[i] ? "" : " (no witness)");
        missed_warm += next->gap > t->planner.mip_gap + 1e-9;
        r.gap_over += next->gap > 0.01 + 1e-9;
        if (next->kept) {
            kept++;
        } else {
            mode_w[next->mode & 3]++;
            trunc_w += next->truncated;
            tl_w += next->time_limited;
        }
        bad += checked(name, i, t, next, d);
        memcpy(cur, next, sizeof(*cur));
    }
    r.feasible = feas;
    r.served_all = all_c < all_w ? all_c : all_w;
    r.bad = bad;
    r.tl = tl_c + tl_w;
    r.trunc = trunc_c + trunc_w;
    char m[128], note[256];
    if (rec) {
        snprintf(m, sizeof(m), "%s_cold", name);
        snprintf(note, sizeof(note),
                 "modes hw/acc/served %d/%d/%d, mean served fraction %.2f, time limit hit %d, "
                 "path cap hit %d, gap above target %d, check failures %d",
                 mode_c[0], mode_c[1], mode_c[2], served, tl_c, trunc_c, missed_cold, bad);
        record(m, "ms", cold, n, note);
        snprintf(m, sizeof(m), "%s_warm", name);
        snprintf(note, sizeof(note),
                 "kept %d; solved: modes hw/acc/served %d/%d/%d, time limit hit %d, path cap hit "
                 "%d, gap above target %d",
                 kept, mode_w[0], mode_w[1], mode_w[2], tl_w, trunc_w, missed_warm);
        record(m, "ms", warm, n, note);
        snprintf(m, sizeof(m), "%s_cold_cpu", name);
        record(m, "ms", cold_cpu, n, "processor time of the same solves");
    }
    qsort(cold_cpu, (size_t)n, sizeof(double), loki_bench_cmp_double);
    r.cold_cpu_p99 = loki_bench_pct(cold_cpu, (size_t)n, 0.99);
    if (rec) {
        snprintf(m, sizeof(m), "%s_warm_cpu", name);
        record(m, "ms", warm_cpu, n, "processor time of the same solves");
        snprintf(m, sizeof(m), "%s_gap", name);
        snprintf(note, sizeof(note),
                 "the warm plans' MIP gap; above 1 %%: %d of %d; witnessed feasible %d of %d, all "
                 "served (cold and warm) at %d of them",
                 r.gap_over, n, feas, n, r.served_all);
        record(m, "%", gaps, n, note);
    } else {
        qsort(warm_cpu, (size_t)n, sizeof(double), loki_bench_cmp_double);
        qsort(gaps, (size_t)n, sizeof(double), loki_bench_cmp_double);
    }
    r.warm_cpu_med = loki_bench_pct(warm_cpu, (size_t)n, 0.5);
    r.warm_cpu_p99 = loki_bench_pct(warm_cpu, (size_t)n, 0.99);
    r.gap_p99 = loki_bench_pct(gaps, (size_t)n, 0.99);
    free(cold);
    free(warm);
    free(cold_cpu);
    free(warm_cpu);
    free(gaps);
    free(cur);
    free(next);
    loki_planner_destroy(pl);
    return r;
}

static bool no_paths;

/*
 * The walk on both formulations (the path one unless --no-paths), the flow
 * one recorded; then the ratios, paths over flow, per demand point.
 */
static void compare(const char *name, struct loki_topology *t, const double *demand, int n)
{
    bool *feasible = calloc((size_t)n, sizeof(bool));
    struct loki_plan *w = malloc(sizeof(*w));
    for (int i = 0; i < n; i++)
        feasible[i] = witness(t, demand[i], w);
    free(w);
    struct walk f = run(name, t, demand, n, feasible, LOKI_FORMULATION_FLOW, true);
    if (!no_paths) {
        struct walk p = run(name, t, demand, n, feasible, LOKI_FORMULATION_PATHS, false);
        double *cpu = malloc(sizeof(double) * (size_t)n), *acc = malloc(sizeof(double) * (size_t)n);
        double fa = 0, pa = 0;
        for (int i = 0; i < n; i++) {
            cpu[i] = p.wcpu[i] / fmax(f.wcpu[i], 1e-3);
            acc[i] = f.acc[i] > 1e-9 ? p.acc[i] / f.acc[i] : (p.acc[i] > 1e-9 ? 2 : 1);
            fa += f.acc[i] / n;
            pa += p.acc[i] / n;
        }
        char m[128], note[256];
        snprintf(m, sizeof(m), "%s_paths_over_flow_warm_cpu", name);
        snprintf(note, sizeof(note),
                 "warm processor time p99 %.1f ms paths, %.1f ms flow (%.2fx); paths: time limit "
                 "hit %d, path cap hit %d, check failures %d, all served at %d of %d witnessed",
                 p.warm_cpu_p99, f.warm_cpu_p99, p.warm_cpu_p99 / fmax(f.warm_cpu_p99, 1e-3), p.tl,
                 p.trunc, p.bad, p.served_all, p.feasible);
        record(m, "x", cpu, n, note);
        snprintf(m, sizeof(m), "%s_paths_over_flow_accuracy", name);
        snprintf(note, sizeof(note),
                 "served accuracy (planned accuracy x served fraction) per point, mean %.4f "
                 "paths, %.4f flow",
                 pa, fa);
        record(m, "x", acc, n, note);
        free(cpu);
        free(acc);
        free(p.acc);
        free(p.wcpu);
    }
    free(f.acc);
    free(f.wcpu);
    free(feasible);
}

int main(int argc, char **argv)
{
    const char *out = NULL;
    const char *topo = "examples/traffic_analysis.yaml";
    const char *h200 = "examples/h200x8.yaml";
    bool traffic_only = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc)
            out = argv[++i];
        else if (!strcmp(argv[i], "--verbose"))
            verbose = true;
        else if (!strcmp(argv[i], "--traffic-only"))
            traffic_only = true;
        else if (!strcmp(argv[i], "--topology") && i + 1 < argc)
            topo = argv[++i];
        else if (!strcmp(argv[i], "--no-paths"))
            no_paths = true;
        else {
            fprintf(stderr, "usage: bench_planner [--out DIR] [--topology F] [--traffic-only] "
                            "[--no-paths] [--verbose]\n");
            return 2;
        }
    }
    printf("# name unit median p99 n\n");
    struct loki_topology *t = NULL;
    char err[2048];
    if (loki_topology_load(topo, &t, err, sizeof(err)) == 0) {
        /* A day-like walk: off-peak (hardware mode) to peak (accuracy mode). */
        double d[60];
        unsigned s = 7;
        for (int i = 0; i < 60; i++)
            d[i] = 500 + 450 * sin(i / 6.0) + 40 * (urand(&s) - 0.5);
        compare("traffic20_walk", t, d, 60);
        double peak[40];
        for (int i = 0; i < 40; i++)
            peak[i] = 700 + 300 * urand(&s);
        compare("traffic20_peak", t, peak, 40);
        t->planner.formulation = LOKI_FORMULATION_FLOW;
        quality("traffic20_quality", t);
        free(t);
    } else {
        fprintf(stderr, "bench_planner: %s: %s (traffic metrics skipped)\n", topo, err);
    }
    if (!traffic_only && loki_topology_load(h200, &t, err, sizeof(err)) == 0) {
        /* The same pipeline on 8 H200s at quarter shares, a walk over its range. */
        double d[40];
        unsigned s = 13;
        for (int i = 0; i < 40; i++)
            d[i] = 400 + 320 * sin(i / 5.0) + 30 * (urand(&s) - 0.5);
        compare("h200x8_quarters_walk", t, d, 40);
        free(t);
    } else if (!traffic_only) {
        fprintf(stderr, "bench_planner: %s: %s (h200x8 metrics skipped)\n", h200, err);
    }
    /* Chains as before (same seeds), then trees. */
    static const int sizes[][4] = {{8, 2, 4, 0},   {16, 2, 6, 0}, {16, 3, 4, 0}, {32, 3, 6, 0},
                                   {32, 4, 4, 0},  {64, 4, 6, 0}, {64, 5, 4, 0}, {128, 4, 8, 0},
                                   {128, 5, 8, 0}, {16, 3, 4, 1}, {32, 4, 6, 1}, {64, 5, 6, 1},
                                   {128, 5, 8, 1}};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]) && !traffic_only; i++) {
        int g = sizes[i][0], k = sizes[i][1], v = sizes[i][2];
        bool tree = sizes[i][3];
        struct loki_topology *st = synthetic(g, k, v, tree, 100u + (unsigned)i);
        /* Demand around where accuracy scaling is needed: scaled by GPUs. */
        double d[12];
        unsigned s = 11;
        for (int j = 0; j < 12; j++)
            d[j] = g * (15 + 25 * urand(&s));
        char name[64];
        snprintf(name, sizeof(name), "synth_%s_g%d_t%d_v%d", tree ? "tree" : "chain", g, k, v);
        compare(name, st, d, 12);
        free(st);
    }
    if (out) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/planner.json", out);
        FILE *f = fopen(path, "w");
        if (!f) {
            fprintf(stderr, "bench_planner: %s: %s\n", path, strerror(errno));
            return 1;
        }
        fprintf(f, "{\"bench\":\"planner\",\"metrics\":[");
        for (int i = 0; i < n_metrics; i++)
            fprintf(f,
                    "%s{\"name\":\"%s\",\"unit\":\"%s\",\"median\":%.4f,\"p99\":%.4f,"
                    "\"n\":%d,\"note\":\"%s\"}",
                    i ? "," : "", metrics[i].name, metrics[i].unit, metrics[i].median,
                    metrics[i].p99, metrics[i].n, metrics[i].note);
        fprintf(f, "]}\n");
        fclose(f);
    }
    return 0;
}
