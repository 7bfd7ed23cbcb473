/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_data: payload bytes through lokid (issue 16 item 8b), against memcpy measured in the
 * same run. bench/e2e_data.yaml is a two-stage pipeline over zero-latency sim variants: each
 * root query carries a 100 KiB payload, its first task emits 8 child payloads of 16 KiB, and
 * each child sub-query is handed its own. C connections keep W roots each in flight.
 *
 * Bytes moved per root = its payload + its children's payloads (233,472 with the defaults),
 * each counted once, however often the runtime copies it: the client's payload goes socket ->
 * lokid's receive buffer -> the shared payload arena (where the first worker reads it); each
 * child payload is written by the first worker into its output arena and copied by lokid into
 * the payload arena (where the second worker reads it). A root counts only when it answered
 * ok with all 9 nodes of its tree.
 *
 * The reference is one thread's memcpy bandwidth over the same blocks (one payload, then the
 * children) cycling through a working set as large as the bytes in flight (C x W roots), so
 * that it meets the caches the runtime meets; working sets of one root (cache-resident: the
 * fastest memcpy there is) and of 64 MiB are reported too. Rounds alternate lokid and memcpy. Also
 * reported: CPU time (lokid, its workers and this client) per root and per byte. Prints `name unit
 * median p99 n` and writes DIR/data.json.
 */
#include "bench_lokid.h"
#include "bench_stats.h"
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "loki/client.h"
#include "loki/clock.h"
#include "loki/error.h"

#ifndef LOKI_DATA_TOPOLOGY
#define LOKI_DATA_TOPOLOGY "bench/e2e_data.yaml"
#endif

#define MAX_METRICS 32
#define MAX_CONNS 64

#define MAX_ROUNDS_KEPT 16 /* per-round figures printed and kept in the JSON, in round order */

struct metric {
    char name[64];
    const char *unit;
    double median, p99;
    size_t n;
    bool has_rounds;                /* 1 < n <= MAX_ROUNDS_KEPT: rounds[] holds the values */
    double rounds[MAX_ROUNDS_KEPT]; /* as measured, in round order */
};

static struct metric metrics[MAX_METRICS];
static size_t n_metrics;

static struct {
    int rounds, conns, window, children;
    uint32_t payload, child_bytes;
    double tput_s;
    const char *lokid, *topology, *out;
} cfg = {.rounds = 3,
         .conns = 4,
         .window = 8,
         .children = 8,
         .payload = 100 * 1024,
         .child_bytes = 16 * 1024,
         .tput_s = 2};

/* Sorts @v in place; records its median and p99. */
static const struct metric *record(const char *name, const char *unit, double *v, size_t n)
{
    if (n_metrics == MAX_METRICS)
        abort();
    struct metric *m = &metrics[n_metrics++];
    m->has_rounds = n > 1 && n <= MAX_ROUNDS_KEPT;
    if (m->has_rounds)
        memcpy(m->rounds, v, n * sizeof(*v));
    qsort(v, n, sizeof(*v), loki_bench_cmp_double);
    snprintf(m->name, sizeof(m->name), "%s", name);
    m->unit = unit;
    m->median = loki_bench_pct(v, n, 0.5);
    m->p99 = loki_bench_pct(v, n, 0.99);
    m->n = n;
    printf("%s %s %.6g %.6g %zu", m->name, m->unit, m->median, m->p99, m->n);
    for (size_t i = 0; m->has_rounds && i < m->n; i++)
        printf("%s%.4g", i ? " " : " # rounds: ", m->rounds[i]);
    printf("\n");
    fflush(stdout);
    return m;
}

/* ---- roots through lokid ------------------------------------------------------------------- */

struct conn {
    struct loki_client *c;
    atomic_bool *stop;
    atomic_ullong ok, bad;
    atomic_int inflight;
};

static uint8_t *payload;

static void on_root(void *ctx, const struct loki_reply *r);

static int root_submit(struct conn *k)
{
    struct loki_client_req rq = {
        .pipeline = "data", .payload = payload, .payload_len = cfg.payload, .timeout_ms = 30000};
    atomic_fetch_add(&k->inflight, 1);
    int rc = loki_client_submit(k->c, &rq, on_root, k, NULL);
    if (rc)
        atomic_fetch_sub(&k->inflight, 1);
    return rc;
}

static void on_root(void *ctx, const struct loki_reply *r)
{
    struct conn *k = ctx;
    /* the whole tree: the root task's node and one per child payload */
    if (r->status == LOKI_STATUS_OK && r->n_nodes == 1 + (uint32_t)cfg.children)
        atomic_fetch_add(&k->ok, 1);
    else
        atomic_fetch_add(&k->bad, 1);
    if (!atomic_load_explicit(k->stop, memory_order_relaxed))
        (void)root_submit(k);
    atomic_fetch_sub(&k->inflight, 1);
}

/* Roots/s answered ok (whole trees) over @cfg.tput_s seconds; how many in *@n_ok. */
static double root_round(struct loki_client **cs, uint64_t *bad, uint64_t *n_ok)
{
    static struct conn ks[MAX_CONNS];
    static atomic_bool stop;
    atomic_store(&stop, false);
    uint64_t t0 = loki_now_ns();
    for (int i = 0; i < cfg.conns; i++) {
        ks[i].c = cs[i];
        ks[i].stop = &stop;
        atomic_store(&ks[i].ok, 0);
        atomic_store(&ks[i].bad, 0);
        atomic_store(&ks[i].inflight, 0);
    }
    for (int w = 0; w < cfg.window; w++)
        for (int i = 0; i < cfg.conns; i++)
            (void)root_submit(&ks[i]);
    uint64_t end = t0 + (uint64_t)(cfg.tput_s * 1e9);
    struct timespec until = {.tv_sec = (time_t)(end / 1000000000u),
                             .tv_nsec = (long)(end % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
        ;
    atomic_store(&stop, true);
    for (;;) {
        int left = 0;
        for (int i = 0; i < cfg.conns; i++)
            left += atomic_load(&ks[i].inflight);
        if (!left)
            break;
        usleep(1000);
    }
    double s = (double)(loki_now_ns() - t0) / 1e9;
    uint64_t ok = 0;
    for (int i = 0; i < cfg.conns; i++) {
        ok += atomic_load(&ks[i].ok);
        *bad += atomic_load(&ks[i].bad);
    }
    *n_ok = ok;
    return (double)ok / s;
}

/* ---- the reference: memcpy ----------------------------------------------------------------- */

/*
 * One thread's memcpy bytes/s over ~@seconds: one payload-sized block, then @cfg.children
 * child-sized ones, again and again, walking through @ws bytes of source and destination.
 */
static double memcpy_bw(size_t ws, double seconds)
{
    size_t per_root = cfg.payload + (size_t)cfg.children * cfg.child_bytes;
    if (ws < per_root)
        ws = per_root;
    uint8_t *src = malloc(ws), *dst = malloc(ws);
    if (!src || !dst) {
        free(src);
        free(dst);
        return 0;
    }
    memset(src, 1, ws);
    memset(dst, 2, ws);
    uint64_t bytes = 0, t0 = loki_now_ns(), t1 = t0;
    size_t off = 0;
    volatile uint8_t sink = 0;
    while ((double)(t1 - t0) < seconds * 1e9) {
        for (int rep = 0; rep < 16; rep++) {
            if (off + per_root > ws)
                off = 0;
            memcpy(dst + off, src + off, cfg.payload);
            off += cfg.payload;
            for (int c = 0; c < cfg.children; c++) {
                memcpy(dst + off, src + off, cfg.child_bytes);
                off += cfg.child_bytes;
            }
            bytes += per_root;
        }
        sink ^= dst[off / 2]; /* the copies are used */
        t1 = loki_now_ns();
    }
    (void)sink;
    free(src);
    free(dst);
    return (double)bytes / ((double)(t1 - t0) / 1e9);
}

/* ---- main ---------------------------------------------------------------------------------- */

static struct loki_bench_lokid lk = {.pid = -1};
static char tmpdir[64];

static void cleanup(void)
{
    loki_bench_lokid_kill(&lk);
    if (tmpdir[0]) {
        unlink(lk.sock);
        unlink(lk.hop_log);
        rmdir(tmpdir);
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_data --out DIR [--lokid PATH] [--topology F] [--rounds N] [--conns C]\n"
            "                  [--window W] [--seconds S] [--payload BYTES]\n");
}

int main(int argc, char **argv)
{
    static char self_lokid[PATH_MAX];
    char exe[PATH_MAX];
    ssize_t el = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (el > 0) {
        exe[el] = 0;
        snprintf(self_lokid, sizeof(self_lokid), "%s/lokid", dirname(exe));
        cfg.lokid = self_lokid;
    }
    cfg.topology = LOKI_DATA_TOPOLOGY;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            usage();
            return 2;
        }
        i++;
        if (!strcmp(a, "--out"))
            cfg.out = v;
        else if (!strcmp(a, "--lokid"))
            cfg.lokid = v;
        else if (!strcmp(a, "--topology"))
            cfg.topology = v;
        else if (!strcmp(a, "--rounds"))
            cfg.rounds = atoi(v);
        else if (!strcmp(a, "--conns"))
            cfg.conns = atoi(v);
        else if (!strcmp(a, "--window"))
            cfg.window = atoi(v);
        else if (!strcmp(a, "--seconds"))
            cfg.tput_s = atof(v);
        else if (!strcmp(a, "--payload"))
            cfg.payload = (uint32_t)strtoul(v, NULL, 10);
        else {
            usage();
            return 2;
        }
    }
    if (!cfg.out || !cfg.lokid || cfg.rounds < 1 || cfg.conns < 1 || cfg.conns > MAX_CONNS ||
        cfg.window < 1 || !(cfg.tput_s > 0) || cfg.payload < 1 || cfg.payload > (1u << 20)) {
        usage();
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    uint64_t t_start = loki_now_ns();
    double load0 = loki_bench_loadavg();
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/loki-bench-data-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "bench_data: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    atexit(cleanup);
    double per_root = (double)cfg.payload + (double)cfg.children * cfg.child_bytes;
    size_t ws = (size_t)(per_root * cfg.conns * cfg.window);
    printf("# bench_data: lokid %s, topology %s; %d rounds; %d connections x %d roots in "
           "flight; %u B payload -> %d x %u B children (%.0f B moved per root); memcpy "
           "working set %zu B; load average %.2f\n",
           cfg.lokid, cfg.topology, cfg.rounds, cfg.conns, cfg.window, cfg.payload, cfg.children,
           cfg.child_bytes, per_root, ws, load0);
    printf("# name unit median p99 n\n");
    int rc = loki_bench_lokid_start(&lk, cfg.lokid, cfg.topology, tmpdir, "lokid", NULL);
    if (rc) {
        fprintf(stderr, "bench_data: %s did not become ready (topology %s): %s\n", cfg.lokid,
                cfg.topology, loki_strerror(rc));
        return 1;
    }
    struct loki_client *cs[MAX_CONNS];
    struct loki_client_opts co = {.max_outstanding = (uint32_t)cfg.window * 2,
                                  .name = "bench_data"};
    for (int i = 0; i < cfg.conns; i++) {
        rc = loki_client_connect(lk.sock, &co, &cs[i]);
        if (rc) {
            fprintf(stderr, "bench_data: connect %s: %s\n", lk.sock, loki_strerror(rc));
            return 1;
        }
    }
    payload = malloc(cfg.payload);
    double *roots = calloc((size_t)cfg.rounds, sizeof(double));
    double *bps = calloc((size_t)cfg.rounds, sizeof(double));
    double *mc = calloc((size_t)cfg.rounds, sizeof(double));
    double *mc64 = calloc((size_t)cfg.rounds, sizeof(double));
    double *mch = calloc((size_t)cfg.rounds, sizeof(double));
    double *ratioh = calloc((size_t)cfg.rounds, sizeof(double));
    double *ratio = calloc((size_t)cfg.rounds, sizeof(double));
    double *ratio64 = calloc((size_t)cfg.rounds, sizeof(double));
    double *cpu = calloc((size_t)cfg.rounds, sizeof(double));
    double *cpu_gb = calloc((size_t)cfg.rounds, sizeof(double));
    if (!payload || !roots || !bps || !mc || !mc64 || !ratio || !ratio64 || !cpu || !cpu_gb ||
        !mch || !ratioh) {
        fprintf(stderr, "bench_data: out of memory\n");
        return 1;
    }
    for (uint32_t i = 0; i < cfg.payload; i++)
        payload[i] = (uint8_t)(i * 131 + 7);
    uint64_t bad = 0, n_ok;
    (void)root_round(cs, &bad, &n_ok); /* warm-up: arenas, rings, caches */
    bad = 0;
    for (int r = 0; r < cfg.rounds; r++) {
        double c0 = loki_bench_tree_cpu_s(lk.pid) + loki_bench_self_cpu_s();
        roots[r] = root_round(cs, &bad, &n_ok);
        double c1 = loki_bench_tree_cpu_s(lk.pid) + loki_bench_self_cpu_s();
        bps[r] = roots[r] * per_root;
        cpu[r] = n_ok ? (c1 - c0) * 1e6 / (double)n_ok : 0;
        cpu_gb[r] = n_ok ? (c1 - c0) / ((double)n_ok * per_root / 1e9) : 0;
        mc[r] = memcpy_bw(ws, cfg.tput_s / 2);
        mc64[r] = memcpy_bw((size_t)64 << 20, cfg.tput_s / 2);
        mch[r] = memcpy_bw(0, cfg.tput_s / 2);
        ratio[r] = mc[r] > 0 ? bps[r] / mc[r] : 0;
        ratio64[r] = mc64[r] > 0 ? bps[r] / mc64[r] : 0;
        ratioh[r] = mch[r] > 0 ? bps[r] / mch[r] : 0;
    }
    double load1 = loki_bench_loadavg();
    int lokid_exit = loki_bench_lokid_stop(&lk);
    for (int i = 0; i < cfg.conns; i++)
        loki_client_close(cs[i]);

    size_t nr = (size_t)cfg.rounds;
    record("data_roots_per_s", "qps", roots, nr);
    record("data_payload_bytes_per_s", "B/s", bps, nr);
    record("memcpy_inflight_ws_bytes_per_s", "B/s", mc, nr);
    record("memcpy_64m_ws_bytes_per_s", "B/s", mc64, nr);
    record("memcpy_one_root_ws_bytes_per_s", "B/s", mch, nr);
    const struct metric *m = record("data_vs_memcpy", "ratio", ratio, nr);
    record("data_vs_memcpy_64m", "ratio", ratio64, nr);
    record("data_vs_memcpy_one_root", "ratio", ratioh, nr);
    record("data_cpu_per_root", "us", cpu, nr);
    record("data_cpu_per_gb", "s", cpu_gb, nr);
    if (bad)
        printf("# %llu roots did not answer ok with their whole tree (counted out)\n",
               (unsigned long long)bad);
    bool met = m->median >= 0.5;
    printf("target_data_vs_memcpy ratio %.4g %.4g 1 # target >= 0.5: %s\n", m->median, m->median,
           met ? "met" : "MISSED");
    if (lokid_exit != 0)
        printf("# lokid exited with status %d after SIGTERM\n", lokid_exit);
    printf("# load average %.2f at the start, %.2f at the end\n", load0, load1);

    char path[PATH_MAX];
    mkdir(cfg.out, 0755);
    snprintf(path, sizeof(path), "%s/data.json", cfg.out);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "bench_data: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    fprintf(f, "{\n  \"bench\": \"data\",\n  \"wall_s\": %.3f,\n",
            (double)(loki_now_ns() - t_start) * 1e-9);
    fprintf(f, "  \"loadavg\": [%.2f, %.2f],\n  \"cpus\": %ld,\n", load0, load1,
            sysconf(_SC_NPROCESSORS_ONLN));
    fprintf(f,
            "  \"config\": {\"topology\": \"%s\", \"rounds\": %d, \"connections\": %d, "
            "\"window\": %d, \"seconds\": %g, \"payload_bytes\": %u, \"children\": %d, "
            "\"child_payload_bytes\": %u, \"bytes_per_root\": %.0f, \"memcpy_ws_bytes\": %zu},\n",
            cfg.topology, cfg.rounds, cfg.conns, cfg.window, cfg.tput_s, cfg.payload, cfg.children,
            cfg.child_bytes, per_root, ws);
    fprintf(f, "  \"lokid_exit_status\": %d,\n  \"not_ok_roots\": %llu,\n", lokid_exit,
            (unsigned long long)bad);
    fprintf(f, "  \"notes\": \"bytes moved per root = payload + child payloads, each counted "
               "once (lokid copies the payload from its receive buffer into the payload arena "
               "and each child payload from the worker's output arena into the payload arena); "
               "a root counts when it answered ok with its whole tree; memcpy: one thread, the "
               "same blocks, over a working set of the bytes in flight (the target's "
               "reference), of one root (cache-resident) and of 64 MiB; cpu: lokid, its workers "
               "and this client\",\n");
    fprintf(f, "  \"metrics\": [\n");
    for (size_t i = 0; i < n_metrics; i++) {
        const struct metric *x = &metrics[i];
        fprintf(f,
                "    {\"name\": \"%s\", \"unit\": \"%s\", \"median\": %.6g, \"p99\": %.6g, "
                "\"n\": %zu",
                x->name, x->unit, x->median, x->p99, x->n);
        for (size_t k = 0; x->has_rounds && k < x->n; k++)
            fprintf(f, "%s%.6g", k ? ", " : ", \"rounds\": [", x->rounds[k]);
        fprintf(f, "%s}%s\n", x->has_rounds ? "]" : "", i + 1 < n_metrics ? "," : "");
    }
    fprintf(f,
            "  ],\n  \"targets\": [\n    {\"name\": \"data_vs_memcpy\", \"value\": %.6g, \"op\": "
            "\">=\", \"target\": 0.5, \"met\": %s, \"skipped\": false, \"note\": \"\"}\n  ]\n}\n",
            m->median, met ? "true" : "false");
    fclose(f);
    free(payload);
    free(roots);
    free(bps);
    free(mc);
    free(mc64);
    free(ratio);
    free(ratio64);
    free(mch);
    free(ratioh);
    free(cpu);
    free(cpu_gb);
    return 0;
}
