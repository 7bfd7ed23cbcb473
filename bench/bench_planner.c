/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Planner solve time: the traffic-analysis pipeline at 20 GPUs over a demand
 * walk that crosses all modes, cold (no current plan) and warm (the previous
 * plan as warm start), and synthetic chains growing from 8 to 128 GPUs, 2 to
 * 5 tasks, 4 to 8 variants with shares 1, 1/2, 1/4. Prints
 * `name unit median p99 n` per metric; --out DIR writes DIR/planner.json.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loki/planner.h"
#include "loki/topology.h"

struct metric {
    char name[96];
    const char *unit;
    double median, p99;
    int n;
    char note[192];
};

static struct metric metrics[64];
static int n_metrics;

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void record(const char *name, const char *unit, double *v, int n, const char *note)
{
    struct metric *m = &metrics[n_metrics++];
    snprintf(m->name, sizeof(m->name), "%s", name);
    m->unit = unit;
    qsort(v, (size_t)n, sizeof(double), cmpd);
    m->median = n ? v[n / 2] : 0;
    int k = (int)ceil(0.99 * n) - 1;
    m->p99 = n ? v[k < 0 ? 0 : k] : 0;
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

/* A chain of @tasks tasks with @nv variants each, batches 1..64, shares 1, 1/2, 1/4. */
static struct loki_topology *synthetic(int gpus, int tasks, int nv, unsigned seed)
{
    struct loki_topology *t = calloc(1, sizeof(*t));
    loki_topology_defaults(t);
    t->gpus.count = gpus;
    t->gpus.mem_mb = 80000;
    t->gpus.share_granularity = 0.25;
    t->n_pipelines = 1;
    struct loki_pipeline *p = &t->pipelines[0];
    snprintf(p->name, sizeof(p->name), "chain%d", tasks);
    p->n_tasks = tasks;
    p->slo_ms = 100.0 * tasks;
    for (int k = 0; k < tasks; k++) {
        struct loki_task *tk = &p->tasks[k];
        snprintf(tk->name, sizeof(tk->name), "task%d", k);
        tk->n_variants = nv;
        if (k + 1 < tasks) {
            tk->n_children = 1;
            tk->children[0] = k + 1;
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
            var->fanout[0].mean = 1 + 0.3 * v;
        }
    }
    return t;
}

/* Solve a demand walk cold and warm; returns the hard-mode root demand used. */
static void run(const char *name, struct loki_topology *t, const double *demand, int n)
{
    struct loki_planner *pl;
    if (loki_planner_create(t, &pl) < 0)
        exit(1);
    struct loki_plan *cur = malloc(sizeof(*cur)), *next = malloc(sizeof(*next));
    double *cold = malloc(sizeof(double) * (size_t)n), *warm = malloc(sizeof(double) * (size_t)n);
    int missed_cold = 0, missed_warm = 0, bad = 0;
    /* What was measured: plan modes, kept plans, path-cap truncation, time-limit hits. */
    int mode_c[4] = {0}, mode_w[4] = {0}, kept = 0, trunc_c = 0, trunc_w = 0, tl_c = 0, tl_w = 0;
    double served = 0; /* mean served fraction of the cold plans: 0 = the serve-nothing plan */
    for (int i = 0; i < n; i++) {
        double d = demand[i];
        if (loki_planner_solve(pl, &d, NULL, i, next) < 0)
            exit(1);
        cold[i] = next->solve_ms;
        missed_cold += next->gap > t->planner.mip_gap + 1e-9;
        mode_c[next->mode & 3]++;
        served += next->served_fraction[0] / n;
        trunc_c += next->truncated;
        tl_c += next->time_limited;
        bad += loki_plan_check(t, next, &d, NULL, 0) != 0;
        if (i == 0)
            memcpy(cur, next, sizeof(*cur));
        if (loki_planner_solve(pl, &d, cur, 1000.0 * i, next) < 0)
            exit(1);
        warm[i] = next->solve_ms;
        missed_warm += next->gap > t->planner.mip_gap + 1e-9;
        if (next->kept) {
            kept++;
        } else {
            mode_w[next->mode & 3]++;
            trunc_w += next->truncated;
            tl_w += next->time_limited;
        }
        bad += loki_plan_check(t, next, &d, NULL, 0) != 0;
        memcpy(cur, next, sizeof(*cur));
    }
    char m[128], note[192];
    snprintf(m, sizeof(m), "%s_cold", name);
    snprintf(note, sizeof(note),
             "modes hw/acc/served %d/%d/%d, mean served fraction %.2f, time limit hit %d, path "
             "cap hit %d, gap above target %d, check failures %d",
             mode_c[0], mode_c[1], mode_c[2], served, tl_c, trunc_c, missed_cold, bad);
    record(m, "ms", cold, n, note);
    snprintf(m, sizeof(m), "%s_warm", name);
    snprintf(note, sizeof(note),
             "kept %d; solved: modes hw/acc/served %d/%d/%d, time limit hit %d, path cap hit "
             "%d, gap above target %d",
             kept, mode_w[0], mode_w[1], mode_w[2], tl_w, trunc_w, missed_warm);
    record(m, "ms", warm, n, note);
    free(cold);
    free(warm);
    free(cur);
    free(next);
    loki_planner_destroy(pl);
}

int main(int argc, char **argv)
{
    const char *out = NULL;
    const char *topo = "examples/traffic_analysis.yaml";
    bool traffic_only = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc)
            out = argv[++i];
        else if (!strcmp(argv[i], "--traffic-only"))
            traffic_only = true;
        else if (!strcmp(argv[i], "--topology") && i + 1 < argc)
            topo = argv[++i];
        else {
            fprintf(stderr, "usage: bench_planner [--out DIR] [--topology F] [--traffic-only]\n");
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
        run("traffic20_walk", t, d, 60);
        double peak[40];
        for (int i = 0; i < 40; i++)
            peak[i] = 700 + 300 * urand(&s);
        run("traffic20_peak", t, peak, 40);
        free(t);
    } else {
        fprintf(stderr, "bench_planner: %s: %s (traffic metrics skipped)\n", topo, err);
    }
    static const int sizes[][3] = {{8, 2, 4},  {16, 2, 6}, {16, 3, 4},  {32, 3, 6}, {32, 4, 4},
                                   {64, 4, 6}, {64, 5, 4}, {128, 4, 8}, {128, 5, 8}};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]) && !traffic_only; i++) {
        int g = sizes[i][0], k = sizes[i][1], v = sizes[i][2];
        struct loki_topology *st = synthetic(g, k, v, 100u + (unsigned)i);
        /* Demand around where accuracy scaling is needed: scaled by GPUs. */
        double d[12];
        unsigned s = 11;
        for (int j = 0; j < 12; j++)
            d[j] = g * (15 + 25 * urand(&s));
        char name[64];
        snprintf(name, sizeof(name), "synth_g%d_t%d_v%d", g, k, v);
        run(name, st, d, 12);
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
