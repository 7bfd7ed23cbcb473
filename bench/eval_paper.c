/* SPDX-License-Identifier: Apache-2.0 */
/*
 * eval_paper: the HPDC 2024 Loki evaluation in one run, on the replay
 * harness (same router and planner code as lokid). Traffic-analysis
 * pipeline, 20 GPUs, SLO 250 ms; (a) Azure 1,350-function day and (b)
 * Twitter day 2, both min-max rescaled to 50-425 qps, one trace minute per
 * replay second, under loki, inferline and proteus; the effective-capacity
 * sweep; ablations without early dropping and without rerouting. Writes a
 * markdown report, JSON, CSVs and SVG plots; prints the report.
 * Every figure is the mean over --seeds seeds (default 5: seed, seed+1, ...), with the range of
 * the violation ratio across them: one seed's bursts decide too much on their own. The CSVs and
 * plots are the first seed's.
 * --front: instead, the off-peak front (issue 18.4): Loki at share granularity 1, 1/2 and 1/4
 * (shares derived as latency / share: the topology's profiles are whole-GPU ones) crossed with
 * the planning margins (beta, demand_sigmas), against proteus and inferline at whole GPUs, on
 * both traces; writes front.md and front.json.
 * Usage: eval_paper [--topology F] [--traces DIR] [--out DIR] [--beta B (default 1.35; 0: the
 * topology's)] [--seed N] [--seeds K] [--quick] [--front]
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "loki/planner.h"
#include "loki/replay.h"
#include "loki/topology.h"

#define NPOL 3
static const enum loki_policy pols[NPOL] = {LOKI_POLICY_LOKI, LOKI_POLICY_INFERLINE,
                                            LOKI_POLICY_PROTEUS};

struct opts {
    const char *topo, *traces, *out;
    double beta;
    unsigned long long seed;
    int seeds;
    bool quick;
    bool front;
};

/* Means over seeds of one run configuration. */
struct agg {
    double viol, viol_min, viol_max, viol_sub, acc, acc_sub, gpus_mean, gpus_off, gpus_peak, gpu_s,
        rerouted, fallback, solve_ms, wall_s, demand_off;
    int n;
};

static void agg_add(struct agg *a, const struct loki_replay_result *r)
{
    double v = 100 * r->viol_ratio;
    if (a->n == 0 || v < a->viol_min)
        a->viol_min = v;
    if (a->n == 0 || v > a->viol_max)
        a->viol_max = v;
    a->viol += v;
    a->viol_sub += 100 * r->viol_ratio_sub;
    a->acc += r->accuracy;
    a->acc_sub += r->accuracy_sub;
    a->gpus_mean += r->gpus_mean;
    a->gpus_off += r->gpus_offpeak;
    a->gpus_peak += r->gpus_peak;
    a->gpu_s += r->gpu_seconds;
    a->rerouted += (double)r->rerouted;
    a->fallback += (double)r->fallback;
    a->solve_ms += r->solve_ms_mean;
    a->wall_s += r->wall_s;
    a->demand_off += r->demand_offpeak;
    a->n++;
}

static void agg_done(struct agg *a)
{
    double n = a->n > 0 ? a->n : 1;
    a->viol /= n, a->viol_sub /= n, a->acc /= n, a->acc_sub /= n, a->gpus_mean /= n;
    a->gpus_off /= n, a->gpus_peak /= n, a->gpu_s /= n, a->rerouted /= n, a->solve_ms /= n;
    a->fallback /= n;
    a->wall_s /= n, a->demand_off /= n;
}

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

static void row(FILE *md, const char *label, const struct agg *a)
{
    fprintf(md,
            "| %s | %.3f (%.3f-%.3f) | %.3f | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f | %.0f | "
            "%.0f | %.1f | %.1f |\n",
            label, a->viol, a->viol_min, a->viol_max, a->viol_sub, a->acc, a->acc_sub, a->gpus_mean,
            a->gpus_off, a->gpus_peak, a->gpu_s, a->rerouted, a->fallback, a->solve_ms, a->wall_s);
}

static void agg_json(FILE *js, const char *label, const struct agg *a)
{
    fprintf(js,
            "{\"run\":\"%s\",\"seeds\":%d,\"viol_pct\":%.4f,\"viol_pct_min\":%.4f,"
            "\"viol_pct_max\":%.4f,\"viol_pct_sub\":%.4f,\"accuracy\":%.3f,"
            "\"accuracy_sub\":%.3f,\"gpus_mean\":%.3f,\"gpus_offpeak\":%.3f,"
            "\"gpus_peak\":%.3f,\"gpu_seconds\":%.1f,\"rerouted\":%.1f,\"fallback\":%.1f,"
            "\"offpeak_demand_qps\":%.2f}",
            label, a->n, a->viol, a->viol_min, a->viol_max, a->viol_sub, a->acc, a->acc_sub,
            a->gpus_mean, a->gpus_off, a->gpus_peak, a->gpu_s, a->rerouted, a->fallback,
            a->demand_off);
}

static const char *hdr = "| run | viol % (query): mean (range) | viol % (sub-query) | "
                         "accuracy (query) | accuracy (sub-query) | GPUs mean | GPUs off-peak | "
                         "GPUs peak | GPU-s | rerouted | on fallback | solve ms | wall s |\n"
                         "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";

/* One configuration over o->seeds seeds; the first seed's result is kept in @first. */
static int runs(struct loki_topology *t, const struct loki_trace *tr, enum loki_policy p,
                int early_drop, int reroute, int spares, int fallback, double beta, double sigmas,
                double duration, const struct opts *o, struct agg *a,
                struct loki_replay_result *first)
{
    memset(a, 0, sizeof(*a));
    int keep = t->planner.burst_spares;
    bool keep_fb = t->planner.fallback;
    double keep_beta = t->planner.beta, keep_sig = t->planner.demand_sigmas;
    if (beta > 0)
        t->planner.beta = beta;
    if (sigmas >= 0)
        t->planner.demand_sigmas = sigmas;
    if (spares >= 0)
        t->planner.burst_spares = spares;
    if (fallback >= 0)
        t->planner.fallback = fallback != 0;
    struct opts os = *o;
    int rc = 0;
    for (int k = 0; k < o->seeds && rc == 0; k++) {
        struct loki_replay_result r;
        os.seed = o->seed + (unsigned long long)k;
        if ((rc = run(t, tr, p, early_drop, reroute, duration, &os, &r)) != 0)
            break;
        agg_add(a, &r);
        if (k == 0 && first)
            *first = r;
        else
            loki_replay_result_free(&r);
    }
    t->planner.burst_spares = keep;
    t->planner.fallback = keep_fb;
    t->planner.beta = keep_beta;
    t->planner.demand_sigmas = keep_sig;
    agg_done(a);
    return rc;
}

/*
 * The fewest GPUs that carry @demand with the most accurate variants and nothing to spare
 * (beta 1, no burst spares, no noise margin): a floor no policy that keeps full accuracy goes
 * below at that demand; queueing needs more.
 */
static int gpu_floor(const struct loki_topology *t, double demand)
{
    struct loki_topology *c = malloc(sizeof(*c));
    struct loki_plan *pl = malloc(sizeof(*pl));
    struct loki_planner *pn = NULL;
    int g = -1;
    if (c && pl) {
        memcpy(c, t, sizeof(*c));
        c->planner.beta = 1;
        c->planner.burst_spares = 0;
        double d[LOKI_MAX_PIPELINES] = {demand};
        if (loki_planner_create(c, &pn) == 0 &&
            loki_planner_solve_policy(pn, LOKI_POLICY_INFERLINE, d, NULL, 0, pl) == 0 &&
            pl->mode == LOKI_MODE_HARDWARE)
            g = pl->gpus_active;
    }
    if (pn)
        loki_planner_destroy(pn);
    free(pl);
    free(c);
    return g;
}

/* Granularity @g on a copy of @t whose variants keep only their whole-GPU rows, shares derived. */
static struct loki_topology *with_granularity(const struct loki_topology *t, double g)
{
    struct loki_topology *c = malloc(sizeof(*c));
    if (!c)
        return NULL;
    memcpy(c, t, sizeof(*c));
    c->gpus.share_granularity = g;
    for (int p = 0; p < c->n_pipelines; p++)
        for (int k = 0; k < c->pipelines[p].n_tasks; k++)
            for (int v = 0; v < c->pipelines[p].tasks[k].n_variants; v++) {
                struct loki_variant *va = &c->pipelines[p].tasks[k].variants[v];
                va->n_shares = 1;
                va->share_scaled = va->share_derived = false;
            }
    loki_topology_derive_shares(c);
    return c;
}

/*
 * The off-peak front: Loki's off-peak GPUs, violations and accuracy at each share granularity
 * and planning margin, against proteus and inferline (whole GPUs, default margins), with the
 * issue's three targets per point: off-peak GPUs <= proteus's / 2.67, >= 10x fewer violations
 * than both baselines, accuracy within 1 point of proteus's.
 */
static int front(struct loki_topology *t, const struct opts *o, const char *const traces[2][2])
{
    static const double grans[] = {1, 0.5, 0.25};
    static const double betas[] = {1.35, 1.2, 1.1, 1.0}, sigmas[] = {2, 1, 1, 0};
    const int ng = 3, nm = 4;
    char path[1024], err[2048];
    snprintf(path, sizeof(path), "%s/front.md", o->out);
    FILE *md = fopen(path, "w");
    snprintf(path, sizeof(path), "%s/front.json", o->out);
    FILE *js = fopen(path, "w");
    if (!md || !js) {
        fprintf(stderr, "eval_paper: cannot write into %s\n", o->out);
        return 1;
    }
    double dur = o->quick ? 240 : 0;
    fprintf(md,
            "# Off-peak front (replay)\n\n%s, %d GPUs, seeds %llu-%llu (means; violation range "
            "across seeds)%s. Loki at share granularity 1, 1/2, 1/4 (shares below 1 derived as "
            "latency / share: not measured) crossed with the planning margins; baselines at "
            "whole GPUs and the default margins. Targets: off-peak GPUs <= proteus's / 2.67, "
            "violations >= 10x fewer than both baselines, accuracy >= proteus's - 1.\n\n",
            t->pipelines[0].name, t->gpus.count, o->seed,
            o->seed + (unsigned long long)o->seeds - 1,
            o->quick ? ", first 240 s of each trace" : "");
    fprintf(js, "{\"seeds\":%d,\"quick\":%s,\"traces\":{", o->seeds, o->quick ? "true" : "false");
    for (int k = 0; k < 2; k++) {
        struct loki_trace tr;
        snprintf(path, sizeof(path), "%s/%s", o->traces, traces[k][1]);
        if (loki_trace_load(path, &tr, err, sizeof(err)) || loki_trace_rescale(&tr, 50, 425)) {
            fprintf(stderr, "eval_paper: %s\n", err);
            return 1;
        }
        struct agg P, I;
        if (runs(t, &tr, LOKI_POLICY_PROTEUS, -1, -1, -1, -1, 1.35, 2, dur, o, &P, NULL) ||
            runs(t, &tr, LOKI_POLICY_INFERLINE, -1, -1, -1, -1, 1.35, 2, dur, o, &I, NULL))
            return 1;
        fprintf(stderr, "eval_paper: front %s baselines done\n", traces[k][0]);
        fprintf(md,
                "## (%c) %s\n\nproteus: %.3f %% violations (%.3f-%.3f), accuracy %.2f, %.2f GPUs "
                "off-peak; inferline: %.3f %% (%.3f-%.3f), accuracy %.2f, %.2f GPUs off-peak. "
                "Off-peak demand %.1f qps.\n\n"
                "| granularity | beta | demand_sigmas | viol %% (range) | accuracy | GPUs mean | "
                "GPUs off-peak | proteus / loki off-peak | proteus / loki viol | inferline / loki "
                "viol | accuracy - proteus | solve ms | targets met |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
                'a' + k, traces[k][0], P.viol, P.viol_min, P.viol_max, P.acc, P.gpus_off, I.viol,
                I.viol_min, I.viol_max, I.acc, I.gpus_off, P.demand_off);
        fprintf(js, "%s\"%s\":{\"baselines\":[", k ? "," : "", traces[k][0]);
        agg_json(js, "proteus", &P);
        fprintf(js, ",");
        agg_json(js, "inferline", &I);
        fprintf(js, "],\"front\":[");
        for (int gi = 0; gi < ng; gi++) {
            struct loki_topology *c = with_granularity(t, grans[gi]);
            if (!c)
                return 1;
            for (int mi = 0; mi < nm; mi++) {
                struct agg L;
                if (runs(c, &tr, LOKI_POLICY_LOKI, -1, -1, -1, -1, betas[mi], sigmas[mi], dur, o,
                         &L, NULL)) {
                    free(c);
                    return 1;
                }
                double ro = L.gpus_off > 0 ? P.gpus_off / L.gpus_off : 0;
                double vp = L.viol > 0 ? P.viol / L.viol : INFINITY;
                double vi = L.viol > 0 ? I.viol / L.viol : INFINITY;
                int met = (ro >= 2.67) + (vp >= 10 && vi >= 10) + (L.acc >= P.acc - 1);
                fprintf(md,
                        "| %g | %.2f | %g | %.3f (%.3f-%.3f) | %.2f | %.2f | %.2f | %.2fx | %.1fx "
                        "| %.1fx | %+.2f | %.1f | %d of 3%s |\n",
                        grans[gi], betas[mi], sigmas[mi], L.viol, L.viol_min, L.viol_max, L.acc,
                        L.gpus_mean, L.gpus_off, ro, vp, vi, L.acc - P.acc, L.solve_ms, met,
                        ro >= 2.67 ? "" : " (not off-peak)");
                fflush(md);
                char label[96];
                snprintf(label, sizeof(label), "loki g%g beta%.2f sigmas%g", grans[gi], betas[mi],
                         sigmas[mi]);
                fprintf(js, "%s", gi || mi ? "," : "");
                agg_json(js, label, &L);
                fprintf(stderr, "eval_paper: front %s %s done (%.1f s per seed)\n", traces[k][0],
                        label, L.wall_s);
            }
            free(c);
        }
        fprintf(js, "]}");
        fprintf(md, "\n");
        loki_trace_free(&tr);
    }
    fprintf(js, "}}\n");
    fclose(md);
    fclose(js);
    snprintf(path, sizeof(path), "%s/front.md", o->out);
    FILE *f = fopen(path, "r");
    if (f) {
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
            fwrite(buf, 1, n, stdout);
        fclose(f);
    }
    return 0;
}

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
    struct opts o = {"examples/traffic_analysis.yaml",
                     "examples/traces",
                     "build/bench/eval",
                     1.35,
                     1,
                     5,
                     false,
                     false};
    static const struct option lo[] = {{"topology", required_argument, 0, 't'},
                                       {"traces", required_argument, 0, 'T'},
                                       {"out", required_argument, 0, 'o'},
                                       {"beta", required_argument, 0, 'b'},
                                       {"seed", required_argument, 0, 's'},
                                       {"seeds", required_argument, 0, 'n'},
                                       {"quick", no_argument, 0, 'q'},
                                       {"front", no_argument, 0, 'f'},
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
        case 'n':
            o.seeds = atoi(optarg);
            if (o.seeds < 1 || o.seeds > 100) {
                fprintf(stderr, "eval_paper: --seeds wants 1..100\n");
                return 2;
            }
            break;
        case 'q':
            o.quick = true;
            break;
        case 'f':
            o.front = true;
            break;
        default:
            fprintf(stderr, "usage: eval_paper [--topology F] [--traces DIR] [--out DIR] "
                            "[--beta B] [--seed N] [--seeds K] [--quick] [--front]\n");
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
    static const char *const traces[2][2] = {
        {"azure", "azure2019_1350fn_day_per_minute.csv"},
        {"twitter", "twitter_2021-08-02_per_minute.csv"},
    };
    if (o.front) {
        int rc = front(t, &o, traces);
        free(t);
        return rc;
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
            "headroom %.2f, burst spares %d, fallbacks %s, seeds %llu-%llu (every figure is the "
            "mean over "
            "them; the violation range is across seeds). Traces min-max rescaled to 50-425 "
            "qps, one trace minute per replay second. Violations count dropped, late, refused "
            "and failed queries; accuracy is over served queries; GPUs in use are distinct "
            "GPUs holding an instance (starting, serving or retiring); off-peak/peak = seconds "
            "with demand in the lowest/highest quartile.\n\n",
            t->pipelines[0].name, t->gpus.count, t->pipelines[0].slo_ms, t->planner.beta,
            t->planner.headroom, t->planner.burst_spares, t->planner.fallback ? "on" : "off",
            o.seed, o.seed + (unsigned long long)o.seeds - 1);
    fprintf(js, "{\"beta\":%.3f,\"traces\":{", t->planner.beta);

    struct loki_replay_result res[2][NPOL];
    struct agg ag[2][NPOL];
    memset(res, 0, sizeof(res));
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
            if (runs(t, &tr, pols[i], -1, -1, -1, -1, 0, -1, dur, &o, &ag[k][i], &res[k][i]))
                return 1;
            row(md, res[k][i].policy, &ag[k][i]);
            fprintf(js, i ? "," : "");
            agg_json(js, res[k][i].policy, &ag[k][i]);
            char name[64];
            snprintf(name, sizeof(name), "%s_%.15s", k ? "twitter" : "azure", res[k][i].policy);
            write_csv(o.out, name, &res[k][i]);
            fprintf(stderr, "eval_paper: %s %s done (%d seeds, %.1f s each)\n", traces[k][0],
                    res[k][i].policy, ag[k][i].n, ag[k][i].wall_s);
        }
        {
            /*
             * Ablations, then the fallback and burst-spares trade-off: violations against GPUs
             * held. On (b) only the fallback ablation.
             */
            static const char *const alabel[] = {
                "loki, no early drop",
                "loki, no reroute",
                "loki, no fallback",
                "loki, no fallback, burst spares 1 (the previous default)",
                "loki, burst spares 1",
                "loki, burst spares 2",
                "loki, lean: beta 1.1, demand_sigmas 1",
                "loki, leaner: beta 1.0, demand_sigmas 0"};
            static const int adrop[] = {0, -1, -1, -1, -1, -1, -1, -1},
                             arr[] = {-1, 0, -1, -1, -1, -1, -1, -1},
                             asp[] = {-1, -1, -1, 1, 1, 2, -1, -1},
                             afb[] = {-1, -1, 0, 0, -1, -1, -1, -1};
            static const double abeta[] = {0, 0, 0, 0, 0, 0, 1.1, 1.0},
                                asig[] = {-1, -1, -1, -1, -1, -1, 1, 0};
            for (int a = 0; a < (int)(sizeof(alabel) / sizeof(alabel[0])); a++) {
                struct agg x;
                if (k == 1 && a != 2 && a != 6)
                    continue;
                if (afb[a] < 0 && asp[a] >= 0 && asp[a] == t->planner.burst_spares)
                    continue; /* that is the loki row */
                if (runs(t, &tr, LOKI_POLICY_LOKI, adrop[a], arr[a], asp[a], afb[a], abeta[a],
                         asig[a], dur, &o, &x, NULL))
                    return 1;
                row(md, alabel[a], &x);
                fprintf(js, ",");
                agg_json(js, alabel[a], &x);
                fprintf(stderr, "eval_paper: %s %s done\n", traces[k][0], alabel[a]);
            }
        }
        fprintf(js, "]");
        const struct loki_replay_result *rp[NPOL] = {&res[k][0], &res[k][1], &res[k][2]};
        snprintf(path, sizeof(path), "%s/%s.svg", o.out, traces[k][0]);
        FILE *svg = fopen(path, "w");
        if (svg) {
            char title[256];
            snprintf(title, sizeof(title),
                     "%s trace, traffic analysis, 20 GPUs, SLO 250 ms, seed %llu (10 s moving "
                     "mean)",
                     traces[k][0], o.seed);
            loki_replay_plot_svg(svg, title, rp, NULL, NPOL, 10);
            fclose(svg);
        }
        const struct agg *L = &ag[k][0], *I = &ag[k][1], *P = &ag[k][2];
        double vi = L->viol > 0 ? I->viol / L->viol : INFINITY;
        double vp = L->viol > 0 ? P->viol / L->viol : INFINITY;
        int fl = gpu_floor(t, L->demand_off);
        fprintf(md,
                "\nPaper targets on this trace: violations inferline/loki = %.2fx, proteus/loki "
                "= %.2fx (target >= 10x); accuracy loki - proteus = %+.2f points (target >= "
                "-5); off-peak GPUs proteus/loki = %.2fx (target >= 2.67x). Off-peak demand "
                "averages %.1f qps; the fewest GPUs that carry it at full accuracy with nothing "
                "to spare (beta 1, no spares, no noise margin) are %d, i.e. at most %.2fx. "
                "Plot: %s.svg\n\n",
                vi, vp, L->acc - P->acc, L->gpus_off > 0 ? P->gpus_off / L->gpus_off : 0,
                L->demand_off, fl, fl > 0 ? P->gpus_off / fl : 0, traces[k][0]);
        fprintf(js, ",\"%s_offpeak_floor_gpus\":%d", traces[k][0], fl);
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
    free(t);
    return 0;
}
