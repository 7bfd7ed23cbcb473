/* SPDX-License-Identifier: Apache-2.0 */
/*
 * eval_paper: the HPDC 2024 Loki evaluation in one run, on the replay
 * harness (same router and planner code as lokid). Traffic-analysis
 * pipeline, 20 GPUs, SLO 250 ms; (a) Azure 1,350-function day and (b)
 * Twitter day 2, both min-max rescaled to 50-425 qps, one trace minute per
 * replay second, under loki, inferline and proteus; the effective-capacity
 * sweep; ablations without early dropping and without rerouting. Writes a
 * markdown report, JSON, CSVs and SVG plots; prints the report.
 * Usage: eval_paper [--topology F] [--traces DIR] [--out DIR] [--beta B (default 1.35; 0: the
 * topology's)] [--seed N] [--quick]
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "loki/replay.h"
#include "loki/topology.h"

#define NPOL 3
static const enum loki_policy pols[NPOL] = {LOKI_POLICY_LOKI, LOKI_POLICY_INFERLINE,
                                            LOKI_POLICY_PROTEUS};

struct opts {
    const char *topo, *traces, *out;
    double beta;
    unsigned long long seed;
    bool quick;
};

static int run(const struct loki_topology *t, const struct loki_trace *tr, enum loki_policy p,
               int early_drop, int reroute, double duration, const struct opts *o,
               struct loki_replay_result *res)
{
    struct loki_replay_config cfg = {
        .policy = p,
        .seed = o->seed,
        .step_replay_s = 1,
        .duration_s = duration,
        .early_drop = early_drop,
        .reroute = reroute,
        .prewarm = true,
    };
    int rc = loki_replay_run(t, tr, &cfg, res);
    if (rc)
        fprintf(stderr, "eval_paper: replay %s failed: %d\n", loki_policy_name(p), rc);
    return rc;
}

static void write_csv(const char *dir, const char *name, const struct loki_replay_result *r)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s.csv", dir, name);
    FILE *f = fopen(path, "w");
    if (f) {
        loki_replay_write_csv(f, r);
        fclose(f);
    }
}

static void row(FILE *md, const char *label, const struct loki_replay_result *r)
{
    fprintf(md,
            "| %s | %.3f | %.3f | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f | %llu | %.1f | %.1f |\n",
            label, 100 * r->viol_ratio, 100 * r->viol_ratio_sub, r->accuracy, r->accuracy_sub,
            r->gpus_mean, r->gpus_offpeak, r->gpus_peak, r->gpu_seconds,
            (unsigned long long)r->rerouted, r->solve_ms_mean, r->wall_s);
}

static const char *hdr = "| run | viol % (query) | viol % (sub-query) | accuracy (query) | "
                         "accuracy (sub-query) | GPUs mean | GPUs off-peak | GPUs peak | "
                         "GPU-s | rerouted | solve ms | wall s |\n"
                         "|---|---|---|---|---|---|---|---|---|---|---|---|\n";

/* Largest constant demand with <= 1 % violations and accuracy >= 90 (binary search). */
static double capacity(const struct loki_topology *t, enum loki_policy p, const struct opts *o,
                       double *acc_at)
{
    double lo = 0, hi = 1000, dur = o->quick ? 30 : 60;
    *acc_at = 0;
    for (int it = 0; it < (o->quick ? 7 : 9); it++) {
        double mid = it == 0 ? 50 : (lo + hi) / 2;
        struct loki_trace tr;
        if (loki_trace_constant(&tr, mid, (int)dur))
            return -1;
        struct loki_replay_result r;
        int rc = run(t, &tr, p, -1, -1, dur, o, &r);
        loki_trace_free(&tr);
        if (rc)
            return -1;
        bool ok = r.viol_ratio <= 0.01 && r.accuracy >= 90;
        fprintf(stderr,
                "eval_paper: capacity probe %s %.1f qps: violations %.3f %%, accuracy %.2f\n",
                loki_policy_name(p), mid, 100 * r.viol_ratio, r.accuracy);
        if (ok) {
            lo = mid;
            *acc_at = r.accuracy;
        } else {
            hi = mid;
        }
        loki_replay_result_free(&r);
        if (it == 0 && !ok)
            hi = 50;
    }
    return lo;
}

int main(int argc, char **argv)
{
    struct opts o = {
        "examples/traffic_analysis.yaml", "examples/traces", "build/bench/eval", 1.35, 1, false};
    static const struct option lo[] = {{"topology", required_argument, 0, 't'},
                                       {"traces", required_argument, 0, 'T'},
                                       {"out", required_argument, 0, 'o'},
                                       {"beta", required_argument, 0, 'b'},
                                       {"seed", required_argument, 0, 's'},
                                       {"quick", no_argument, 0, 'q'},
                                       {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 't':
            o.topo = optarg;
            break;
        case 'T':
            o.traces = optarg;
            break;
        case 'o':
            o.out = optarg;
            break;
        case 'b':
            o.beta = atof(optarg);
            break;
        case 's':
            o.seed = strtoull(optarg, NULL, 0);
            break;
        case 'q':
            o.quick = true;
            break;
        default:
            fprintf(stderr, "usage: eval_paper [--topology F] [--traces DIR] [--out DIR] "
                            "[--beta B] [--seed N] [--quick]\n");
            return 2;
        }
    }
    char err[2048];
    struct loki_topology *t = NULL;
    if (loki_topology_load(o.topo, &t, err, sizeof(err))) {
        fprintf(stderr, "eval_paper: %s\n", err);
        return 1;
    }
    if (o.beta > 0)
        t->planner.beta = o.beta;
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", o.out);
    if (system(cmd) != 0) {
        fprintf(stderr, "eval_paper: cannot create %s\n", o.out);
        return 1;
    }
    char path[1024];
    snprintf(path, sizeof(path), "%s/results.md", o.out);
    FILE *md = fopen(path, "w");
    snprintf(path, sizeof(path), "%s/summary.json", o.out);
    FILE *js = fopen(path, "w");
    if (!md || !js) {
        fprintf(stderr, "eval_paper: cannot write into %s\n", o.out);
        return 1;
    }
    fprintf(md,
            "# Loki evaluation (replay)\n\n%s: %d GPUs, SLO %.0f ms, planner beta %.2f, "
            "headroom %.2f, seed %llu. Traces min-max rescaled to 50-425 qps, one trace "
            "minute per replay second. Violations count dropped, late, refused and failed "
            "queries; accuracy is over served queries; off-peak/peak = seconds with demand in "
            "the lowest/highest quartile.\n\n",
            t->pipelines[0].name, t->gpus.count, t->pipelines[0].slo_ms, t->planner.beta,
            t->planner.headroom, o.seed);
    fprintf(js, "{\"beta\":%.3f,\"traces\":{", t->planner.beta);

    static const char *const traces[2][2] = {
        {"azure", "azure2019_1350fn_day_per_minute.csv"},
        {"twitter", "twitter_2021-08-02_per_minute.csv"},
    };
    struct loki_replay_result res[2][NPOL];
    struct loki_replay_result abl[3];
    memset(res, 0, sizeof(res));
    memset(abl, 0, sizeof(abl));
    double dur = o.quick ? 240 : 0;
    for (int k = 0; k < 2; k++) {
        struct loki_trace tr;
        snprintf(path, sizeof(path), "%s/%s", o.traces, traces[k][1]);
        if (loki_trace_load(path, &tr, err, sizeof(err)) || loki_trace_rescale(&tr, 50, 425)) {
            fprintf(stderr, "eval_paper: %s\n", err);
            return 1;
        }
        fprintf(md, "## (%c) %s trace (%s, %d minutes)\n\n%s", 'a' + k, traces[k][0], traces[k][1],
                tr.n, hdr);
        fprintf(js, "%s\"%s\":[", k ? "," : "", traces[k][0]);
        for (int i = 0; i < NPOL; i++) {
            if (run(t, &tr, pols[i], -1, -1, dur, &o, &res[k][i]))
                return 1;
            row(md, res[k][i].policy, &res[k][i]);
            fprintf(js, i ? "," : "");
            loki_replay_write_json(js, &res[k][i]);
            char name[64];
            snprintf(name, sizeof(name), "%s_%.15s", k ? "twitter" : "azure", res[k][i].policy);
            write_csv(o.out, name, &res[k][i]);
            fprintf(stderr, "eval_paper: %s %s done (%.1f s)\n", traces[k][0], res[k][i].policy,
                    res[k][i].wall_s);
        }
        if (k == 0) {
            static const char *const alabel[3] = {"loki, no early drop", "loki, no reroute",
                                                  "loki, no burst spares"};
            static const char *const aname[3] = {"loki-nodrop", "loki-noreroute", "loki-nospares"};
            for (int a = 0; a < 3; a++) {
                int spares = t->planner.burst_spares;
                if (a == 2)
                    t->planner.burst_spares = 0;
                int rc = run(t, &tr, LOKI_POLICY_LOKI, a == 0 ? 0 : -1, a == 1 ? 0 : -1, dur, &o,
                             &abl[a]);
                t->planner.burst_spares = spares;
                if (rc)
                    return 1;
                row(md, alabel[a], &abl[a]);
                fprintf(js, ",");
                snprintf(abl[a].policy, sizeof(abl[a].policy), "%s", aname[a]);
                loki_replay_write_json(js, &abl[a]);
            }
        }
        fprintf(js, "]");
        const struct loki_replay_result *rp[NPOL] = {&res[k][0], &res[k][1], &res[k][2]};
        snprintf(path, sizeof(path), "%s/%s.svg", o.out, traces[k][0]);
        FILE *svg = fopen(path, "w");
        if (svg) {
            char title[256];
            snprintf(title, sizeof(title),
                     "%s trace, traffic analysis, 20 GPUs, SLO 250 ms (10 s moving mean)",
                     traces[k][0]);
            loki_replay_plot_svg(svg, title, rp, NULL, NPOL, 10);
            fclose(svg);
        }
        const struct loki_replay_result *L = &res[k][0], *I = &res[k][1], *P = &res[k][2];
        double vi = L->viol_ratio > 0 ? I->viol_ratio / L->viol_ratio : INFINITY;
        double vp = L->viol_ratio > 0 ? P->viol_ratio / L->viol_ratio : INFINITY;
        fprintf(md,
                "\nPaper targets on this trace: violations inferline/loki = %.2fx, proteus/loki "
                "= %.2fx (target >= 10x); accuracy loki - proteus = %+.2f points (target >= "
                "-5); off-peak GPUs proteus/loki = %.2fx (target >= 2.67x). Plot: %s.svg\n\n",
                vi, vp, L->accuracy - P->accuracy,
                L->gpus_offpeak > 0 ? P->gpus_offpeak / L->gpus_offpeak : 0, traces[k][0]);
        loki_trace_free(&tr);
    }
    fprintf(js, "},\"capacity\":{");
    fprintf(md, "## Effective capacity\n\nLargest constant demand (qps) served with <= 1 %% "
                "violations at mean accuracy >= 90 (binary search over constant-demand "
                "replays).\n\n| policy | capacity (qps) | accuracy there |\n|---|---|---|\n");
    double cap[NPOL];
    for (int i = 0; i < NPOL; i++) {
        double acc;
        cap[i] = capacity(t, pols[i], &o, &acc);
        fprintf(md, "| %s | %.1f | %.2f |\n", loki_policy_name(pols[i]), cap[i], acc);
        fprintf(js, "%s\"%s\":%.2f", i ? "," : "", loki_policy_name(pols[i]), cap[i]);
        fprintf(stderr, "eval_paper: capacity %s %.1f\n", loki_policy_name(pols[i]), cap[i]);
    }
    fprintf(md, "\nLoki / inferline effective capacity: %.2fx (target >= 2.7x).\n",
            cap[1] > 0 ? cap[0] / cap[1] : 0);
    fprintf(js, "},\"capacity_ratio_loki_inferline\":%.3f}\n", cap[1] > 0 ? cap[0] / cap[1] : 0);
    fclose(md);
    fclose(js);
    snprintf(path, sizeof(path), "%s/results.md", o.out);
    FILE *f = fopen(path, "r");
    if (f) {
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
            fwrite(buf, 1, n, stdout);
        fclose(f);
    }
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < NPOL; i++)
            loki_replay_result_free(&res[k][i]);
    loki_replay_result_free(&abl[0]);
    loki_replay_result_free(&abl[1]);
    loki_replay_result_free(&abl[2]);
    free(t);
    return 0;
}
