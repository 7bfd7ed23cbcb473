/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_json: what building the JSON status report with jansson costs against
 * the hand-written printf-and-escaper printer it replaced (json_legacy.c), on
 * the example topologies with a solved plan and a minute of counters. The two
 * run interleaved in one process, so the ratio (library / hand-written, per
 * report) is the figure; issue 19 keeps the hand-written one only if the
 * library costs the status path more than 2x. Each run first checks that both
 * documents parse to the same JSON (less the keys added since: workers.crashes). Prints `name unit
 * median p99 n` lines and, with --out DIR, DIR/json.json.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_stats.h"
#include "json_legacy.h"
#include "loki/clock.h"
#include "loki/json.h"
#include "loki/planner.h"
#include "loki/status.h"
#include "loki/topology.h"

#define SAMPLES 301
#define REPS 20 /* reports per sample */

struct metric {
    char name[96];
    const char *unit;
    double median, p99;
    int n;
};

static struct metric metrics[16];
static int n_metrics;

static void emit(const char *name, const char *unit, double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), loki_bench_cmp_double);
    struct metric *m = &metrics[n_metrics++];
    snprintf(m->name, sizeof(m->name), "%s", name);
    m->unit = unit;
    m->median = loki_bench_pct(v, (size_t)n, 0.5);
    m->p99 = loki_bench_pct(v, (size_t)n, 0.99);
    m->n = n;
    printf("%s %s %.4g %.4g %d\n", m->name, unit, m->median, m->p99, n);
}

/* One example: plan it at @qps per pipeline, fill a view, time both renderers. */
static int run(const char *file, double qps)
{
    char path[4096], err[4096] = "", name[96];
    struct loki_topology *topo = NULL;
    struct loki_planner *pl = NULL;
    struct loki_plan *plan = calloc(1, sizeof(*plan));
    struct loki_router_stats *st = calloc(1, sizeof(*st));
    struct loki_metrics *m = NULL;
    struct loki_report a, b;
    double demand[LOKI_MAX_PIPELINES];
    double ta[SAMPLES], tb[SAMPLES], ratio[SAMPLES];
    int rc;
    loki_report_init(&a);
    loki_report_init(&b);
    snprintf(path, sizeof(path), "%s/examples/%s", LOKI_SOURCE_DIR, file);
    if (!plan || !st || (rc = loki_topology_load(path, &topo, err, sizeof(err))) ||
        (rc = loki_planner_create(topo, &pl)) || (rc = loki_metrics_create(topo, &m))) {
        fprintf(stderr, "bench_json: %s: cannot set up: %s\n", file, err);
        return 1;
    }
    for (int p = 0; p < topo->n_pipelines; p++)
        demand[p] = qps;
    if ((rc = loki_planner_solve_policy(pl, LOKI_POLICY_LOKI, demand, NULL, 0, plan)) < 0) {
        fprintf(stderr, "bench_json: %s: solve failed (%d)\n", file, rc);
        return 1;
    }
    /* a minute of traffic at the planned rate, a few failures of each kind */
    for (int t = 0; t <= 61; t++) {
        for (int p = 0; p < topo->n_pipelines; p++) {
            struct loki_router_pipeline_stats *ps = &st->pipe[p];
            uint64_t k = (uint64_t)(qps * t);
            ps->arrived = k;
            ps->ok = k - k / 50;
            ps->dropped = ps->late = ps->error = k / 150;
            ps->sub_created = 3 * k;
            ps->sub_violations = k / 40;
            ps->acc_sum = 93.25 * (double)ps->ok;
            ps->acc_sub_sum = 95.125 * (double)ps->ok;
            for (int tk = 0; tk < topo->pipelines[p].n_tasks; tk++)
                for (int v = 0; v < topo->pipelines[p].tasks[tk].n_variants; v++) {
                    st->var[p][tk][v].arrived = k / 2;
                    st->var[p][tk][v].dropped = k / 300;
                    st->var[p][tk][v].fallback = k / 700;
                }
        }
        loki_metrics_tick(m, t, st);
    }
    struct loki_status_view v = {.topo = topo,
                                 .metrics = m,
                                 .plan = plan,
                                 .router = st,
                                 .planner = {.plans_applied = 7,
                                             .plans_kept = 31,
                                             .solves = 38,
                                             .solve_ms_sum = 512.25,
                                             .last_solve_ms = 13.375,
                                             .last_change_s = 20.5},
                                 .instances = plan->n_instances,
                                 .gpus_in_use = plan->gpus_used,
                                 .ready = true,
                                 .uptime_s = 61.437,
                                 .metrics_port = 9464};
    for (int p = 0; p < topo->n_pipelines; p++)
        v.demand_est[p] = qps * 0.97;

    /* the same document: parsed, the two outputs are equal */
    if (loki_bench_status_json_legacy(&v, &a) || loki_status_json(&v, &b)) {
        fprintf(stderr, "bench_json: %s: render failed\n", file);
        return 1;
    }
    json_error_t je;
    json_t *ja = json_loads(a.text, 0, &je), *jb = json_loads(b.text, 0, &je);
    json_object_del(json_object_get(jb, "workers"), "crashes"); /* added since the printer */
    if (!ja || !jb || !json_equal(ja, jb)) {
        fprintf(stderr,
                "bench_json: %s: the two reports differ\n--- hand-written\n%s--- jansson\n%s", file,
                a.text, b.text);
        return 1;
    }
    json_decref(ja);
    json_decref(jb);

    for (int s = 0; s < SAMPLES; s++) {
        uint64_t t0 = loki_now_ns();
        for (int r = 0; r < REPS; r++)
            loki_bench_status_json_legacy(&v, &a);
        uint64_t t1 = loki_now_ns();
        for (int r = 0; r < REPS; r++)
            loki_status_json(&v, &b);
        uint64_t t2 = loki_now_ns();
        ta[s] = (double)(t1 - t0) / REPS / 1e3;
        tb[s] = (double)(t2 - t1) / REPS / 1e3;
        ratio[s] = tb[s] / ta[s];
    }
    printf("# %s at %g qps: %d instances, report %zu bytes (hand-written) / %zu (jansson)\n", file,
           qps, plan->n_instances, a.len, b.len);
    char stem[64];
    snprintf(stem, sizeof(stem), "%.*s", (int)strcspn(file, "."), file);
    snprintf(name, sizeof(name), "status_json_handwritten_%s", stem);
    emit(name, "us", ta, SAMPLES);
    snprintf(name, sizeof(name), "status_json_jansson_%s", stem);
    emit(name, "us", tb, SAMPLES);
    snprintf(name, sizeof(name), "status_json_ratio_%s", stem);
    emit(name, "x", ratio, SAMPLES);

    loki_report_fini(&a);
    loki_report_fini(&b);
    loki_metrics_destroy(m);
    loki_planner_destroy(pl);
    free(topo);
    free(plan);
    free(st);
    return 0;
}

int main(int argc, char **argv)
{
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out = argv[++i];
        } else {
            fprintf(stderr, "usage: bench_json [--out DIR]\n");
            return 2;
        }
    }
    if (run("traffic_analysis.yaml", 150) || run("h200x8.yaml", 300))
        return 1;
    if (out) {
        char path[4096];
        bool oom = false;
        snprintf(path, sizeof(path), "%s/json.json", out);
        FILE *f = fopen(path, "w");
        if (!f) {
            fprintf(stderr, "bench_json: %s: %s\n", path, strerror(errno));
            return 1;
        }
        json_t *doc = json_object(), *ms;
        loki_json_set(doc, "bench", json_string("json"), &oom);
        loki_json_set(doc, "notes",
                      json_string("us per status report; ratio = jansson / hand-written, per "
                                  "sample of 20 reports each, interleaved"),
                      &oom);
        ms = loki_json_set(doc, "metrics", json_array(), &oom);
        for (int i = 0; i < n_metrics; i++) {
            json_t *o = loki_json_push(ms, json_object(), &oom);
            loki_json_set(o, "name", json_string(metrics[i].name), &oom);
            loki_json_set(o, "unit", json_string(metrics[i].unit), &oom);
            loki_json_set(o, "median", json_real(metrics[i].median), &oom);
            loki_json_set(o, "p99", json_real(metrics[i].p99), &oom);
            loki_json_set(o, "n", json_integer(metrics[i].n), &oom);
        }
        int rc = oom ? -ENOMEM : loki_json_print(f, doc);
        fclose(f);
        if (rc) {
            fprintf(stderr, "bench_json: cannot write %s\n", path);
            return 1;
        }
    }
    return 0;
}
