/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_e2e: the runtime's own cost, end to end through lokid and the client library, against
 * a zero-latency sim topology (bench/e2e_zero.yaml: pipeline `one` is one task, `two` a chain
 * of two; every batch takes 1 ns), judged against redis measured in the same run.
 *
 * Throughput (issue 16 item 8a): root queries/s through `one` with C connections x W queries
 * in flight (64-byte payloads), against redis-benchmark PING -c C -P W over a Unix socket, the
 * same connections and in-flight depth; SET with 64-byte values is reported too. The CPU time
 * each side used (lokid and its workers plus this client; redis-server plus redis-benchmark)
 * is divided by the queries served: CPU per query does not depend on how much of the machine
 * other processes took, which moves both rates.
 *
 * Hop latency (item 8c): lokid, run with LOKI_HOP_LOG, records every batch's time from just
 * before its descriptor is encoded to the moment its result record is picked up (its own
 * CLOCK_MONOTONIC); the batches sent during the latency rounds (one query each, nothing else
 * in flight) give `lokid_hop_latency`. Two lokids run side by side: one on the topology as it
 * is (runtime.spin_us 50, the default) and one with runtime.spin_us raised (--spin-us, 10000
 * by default: workers poll for their next batch instead of parking), whose p99 is the target;
 * their latency rounds alternate. `two - one` (quantiles of client and server latencies) is
 * reported too: at the median it agrees, at p99 it is the difference of two tails that the
 * machine's scheduling noise dominates.
 *
 * Prints `name unit median p99 n` and writes DIR/e2e.json. Without redis the reference is
 * reported as skipped. Payload data movement (item 8b) is bench_data.
 */
#include "bench_lokid.h"
#include "bench_stats.h"
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loki/client.h"
#include "loki/clock.h"
#include "loki/error.h"

#ifndef LOKI_E2E_TOPOLOGY
#define LOKI_E2E_TOPOLOGY "bench/e2e_zero.yaml"
#endif

#define MAX_METRICS 64
#define MAX_CONNS 64
#define LAT_MAX (1 << 20)

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
    int rounds, conns, window, lat_n, redis_n, spin_us;
    double tput_s;
    const char *lokid, *topology, *out;
} cfg = {.rounds = 3,
         .conns = 4,
         .window = 32,
         .lat_n = 2000,
         .redis_n = 100000,
         .spin_us = 10000,
         .tput_s = 2};

/* Sorts @v in place; records its median and p99. */
static struct metric *record(const char *name, const char *unit, double *v, size_t n)
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

static struct metric *record2(const char *name, const char *unit, double median, double p99,
                              size_t n)
{
    if (n_metrics == MAX_METRICS)
        abort();
    struct metric *m = &metrics[n_metrics++];
    snprintf(m->name, sizeof(m->name), "%s", name);
    m->unit = unit;
    m->median = median;
    m->p99 = p99;
    m->n = n;
    m->has_rounds = false; /* a difference of two quantiles: no rounds of its own */
    printf("%s %s %.6g %.6g %zu\n", m->name, m->unit, m->median, m->p99, n);
    fflush(stdout);
    return m;
}

static const struct metric *find(const char *name)
{
    for (size_t i = 0; i < n_metrics; i++)
        if (!strcmp(metrics[i].name, name))
            return &metrics[i];
    return NULL;
}

/* ---- lokid --------------------------------------------------------------------------------- */

static struct loki_bench_lokid lk = {.pid = -1}, lk_spin = {.pid = -1};
static char tmpdir[64], spin_topology[128];

/*
 * The topology with runtime.spin_us set to @cfg.spin_us, written to @spin_topology. Returns 0,
 * or -EEXIST when the topology sets runtime itself (the spin lokid is then skipped).
 */
static int write_spin_topology(void)
{
    FILE *in = fopen(cfg.topology, "r");
    if (!in)
        return -errno;
    snprintf(spin_topology, sizeof(spin_topology), "%s/spin.yaml", tmpdir);
    FILE *out = fopen(spin_topology, "w");
    if (!out) {
        fclose(in);
        return -errno;
    }
    char line[1024];
    int rc = 0;
    while (fgets(line, sizeof(line), in)) {
        if (!strncmp(line, "runtime:", 8))
            rc = -EEXIST;
        fputs(line, out);
    }
    fprintf(out, "\nruntime:\n  spin_us: %d\n", cfg.spin_us);
    fclose(in);
    if (fclose(out) && !rc)
        rc = -EIO;
    return rc;
}

/* ---- latency: one query at a time ---------------------------------------------------------- */

struct one_shot {
    sem_t done;
    uint64_t t_done;
    double server_ms; /* lokid's own account: frame arrival to reply */
    enum loki_status status;
};

static void on_one_shot(void *ctx, const struct loki_reply *r)
{
    struct one_shot *o = ctx;
    o->t_done = loki_now_ns(); /* stamped on the reader thread, as redis-benchmark does */
    o->status = r->status;
    o->server_ms = r->latency_ms;
    sem_post(&o->done);
}

/* Alternate `one` and `two` queries, one in flight; append latencies (us) to @l1, @l2, and
 * lokid's server-side latencies (us) to @s1, @s2 (same indexes). */
static int latency_round(struct loki_client *c, double *l1, double *s1, size_t *n1, double *l2,
                         double *s2, size_t *n2, uint64_t *bad)
{
    static const uint8_t payload[64];
    struct one_shot o;
    sem_init(&o.done, 0, 0);
    for (int i = 0; i < 2 * cfg.lat_n; i++) {
        bool two = i & 1;
        struct loki_client_req rq = {.pipeline = two ? "two" : "one",
                                     .payload = payload,
                                     .payload_len = sizeof(payload),
                                     .timeout_ms = 5000};
        uint64_t t0 = loki_now_ns();
        int rc = loki_client_submit(c, &rq, on_one_shot, &o, NULL);
        if (rc) {
            fprintf(stderr, "bench_e2e: submit: %s\n", loki_strerror(rc));
            sem_destroy(&o.done);
            return rc;
        }
        while (sem_wait(&o.done) && errno == EINTR)
            ;
        if (o.status != LOKI_STATUS_OK) {
            (*bad)++;
            continue;
        }
        double us = (double)(o.t_done - t0) / 1e3;
        if (two && *n2 < LAT_MAX) {
            s2[*n2] = o.server_ms * 1e3;
            l2[(*n2)++] = us;
        } else if (!two && *n1 < LAT_MAX) {
            s1[*n1] = o.server_ms * 1e3;
            l1[(*n1)++] = us;
        }
    }
    sem_destroy(&o.done);
    return 0;
}

/*
 * The hop log @path lokid wrote at exit ("inst send_ns transit_ns" lines): append the transit
 * times (us) of batches sent inside one of the @n windows [@win[2i], @win[2i+1]) to @v.
 */
static size_t read_hops(const char *path, const uint64_t *win, int n, double *v, size_t max)
{
    FILE *f = fopen(path, "r");
    size_t k = 0;
    int inst;
    unsigned long long sent, transit;
    if (!f)
        return 0;
    while (k < max && fscanf(f, "%d %llu %llu", &inst, &sent, &transit) == 3)
        for (int i = 0; i < n; i++)
            if (sent >= win[2 * i] && sent < win[2 * i + 1]) {
                v[k++] = (double)transit / 1e3;
                break;
            }
    fclose(f);
    return k;
}

/* ---- throughput: pipelined connections ------------------------------------------------------ */

struct conn {
    struct loki_client *c;
    const char *pipeline;
    atomic_bool *stop; /* set by the main thread at the round's end */
    atomic_ullong ok, bad;
    atomic_int inflight;
};

static const uint8_t tput_payload[64];

static void on_tput(void *ctx, const struct loki_reply *r);

static int tput_submit(struct conn *k)
{
    struct loki_client_req rq = {.pipeline = k->pipeline,
                                 .payload = tput_payload,
                                 .payload_len = sizeof(tput_payload),
                                 .timeout_ms = 10000};
    atomic_fetch_add(&k->inflight, 1);
    int rc = loki_client_submit(k->c, &rq, on_tput, k, NULL);
    if (rc)
        atomic_fetch_sub(&k->inflight, 1);
    return rc;
}

static void on_tput(void *ctx, const struct loki_reply *r)
{
    struct conn *k = ctx;
    if (r->status == LOKI_STATUS_OK)
        atomic_fetch_add(&k->ok, 1);
    else
        atomic_fetch_add(&k->bad, 1);
    /* keep the window full until the round ends: the callback may submit (client.h); a flag,
     * not a clock read per reply, like redis-benchmark's loop */
    if (!atomic_load_explicit(k->stop, memory_order_relaxed))
        (void)tput_submit(k);
    atomic_fetch_sub(&k->inflight, 1);
}

/* Root queries/s answered ok over @cfg.tput_s seconds with conns x window in flight; the
 * number answered ok in *@n_ok. */
static double tput_round(struct loki_client **cs, const char *pipeline, uint64_t *bad,
                         uint64_t *n_ok)
{
    static struct conn ks[MAX_CONNS];
    static atomic_bool stop;
    atomic_store(&stop, false);
    uint64_t t0 = loki_now_ns();
    for (int i = 0; i < cfg.conns; i++) {
        ks[i].c = cs[i];
        ks[i].pipeline = pipeline;
        ks[i].stop = &stop;
        atomic_store(&ks[i].ok, 0);
        atomic_store(&ks[i].bad, 0);
        atomic_store(&ks[i].inflight, 0);
    }
    for (int w = 0; w < cfg.window; w++)
        for (int i = 0; i < cfg.conns; i++)
            (void)tput_submit(&ks[i]);
    struct timespec until = {.tv_sec = (time_t)((t0 + (uint64_t)(cfg.tput_s * 1e9)) / 1000000000u),
                             .tv_nsec = (long)((t0 + (uint64_t)(cfg.tput_s * 1e9)) % 1000000000u)};
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

/* ---- redis reference ----------------------------------------------------------------------- */

static pid_t redis_pid = -1;
static char redis_sock[96];

static bool in_path(const char *prog)
{
    const char *path = getenv("PATH");
    char buf[PATH_MAX];
    if (!path)
        path = "/usr/bin:/bin";
    while (*path) {
        size_t n = strcspn(path, ":");
        snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, path, prog);
        if (access(buf, X_OK) == 0)
            return true;
        path += n + (path[n] == ':');
    }
    return false;
}

static int redis_start(void)
{
    snprintf(redis_sock, sizeof(redis_sock), "%s/redis.sock", tmpdir);
    redis_pid = fork();
    if (redis_pid < 0)
        return -errno;
    if (redis_pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
        }
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", redis_sock, "--save",
               "", "--appendonly", "no", "--dir", tmpdir, (char *)NULL);
        _exit(127);
    }
    /* ready when the socket accepts a connection */
    for (int i = 0; i < 500; i++) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof(a.sun_path), "%s", redis_sock);
        int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
        if (fd >= 0)
            close(fd);
        if (ok)
            return 0;
        if (waitpid(redis_pid, NULL, WNOHANG) == redis_pid) {
            redis_pid = -1;
            return -ECHILD;
        }
        usleep(10000);
    }
    return -ETIMEDOUT;
}

static void redis_stop(void)
{
    if (redis_pid <= 0)
        return;
    kill(redis_pid, SIGTERM);
    waitpid(redis_pid, NULL, 0);
    redis_pid = -1;
}

struct redis_res {
    double rps, p50_us, p99_us;
    double cpu_s; /* redis-server and redis-benchmark together */
};

/*
 * redis-benchmark -s SOCK -t @test -n N -c C -P P [-d @dsize] --csv: the row named @row
 * (PING_MBULK: RESP proper; SET). Counts the CPU the server and the benchmark used.
 */
static int redis_bench(const char *test, const char *row, int clients, int pipeline, int n,
                       int dsize, struct redis_res *out)
{
    char cmd[PATH_MAX + 160], want[32];
    snprintf(cmd, sizeof(cmd),
             "redis-benchmark -s '%s' -t %s -n %d -c %d -P %d -d %d --csv --precision 3 "
             "2>/dev/null",
             redis_sock, test, n, clients, pipeline, dsize);
    snprintf(want, sizeof(want), "\"%s\"", row);
    double cpu0 = loki_bench_proc_cpu_s(redis_pid) + loki_bench_children_cpu_s();
    FILE *p = popen(cmd, "r");
    if (!p)
        return -errno;
    char line[512];
    int found = -ENOENT;
    while (fgets(line, sizeof(line), p)) {
        double rps, avg, mn, p50, p95, p99, mx;
        size_t k = strlen(want);
        if (!strncmp(line, want, k) &&
            sscanf(line + k, ",\"%lf\",\"%lf\",\"%lf\",\"%lf\",\"%lf\",\"%lf\",\"%lf\"", &rps, &avg,
                   &mn, &p50, &p95, &p99, &mx) == 7) {
            *out = (struct redis_res){rps, p50 * 1e3, p99 * 1e3, 0};
            found = 0;
        }
    }
    pclose(p);
    out->cpu_s = loki_bench_proc_cpu_s(redis_pid) + loki_bench_children_cpu_s() - cpu0;
    return found;
}

/* ---- main ---------------------------------------------------------------------------------- */

static void cleanup(void)
{
    loki_bench_lokid_kill(&lk);
    loki_bench_lokid_kill(&lk_spin);
    redis_stop();
    if (tmpdir[0]) {
        unlink(lk.sock);
        unlink(lk.hop_log);
        unlink(lk_spin.sock);
        unlink(lk_spin.hop_log);
        unlink(spin_topology);
        unlink(redis_sock);
        rmdir(tmpdir);
    }
}

static void usage(void)
{
    fprintf(
        stderr,
        "usage: bench_e2e --out DIR [--lokid PATH] [--topology F] [--rounds N] [--conns C]\n"
        "                 [--window W] [--seconds S] [--lat-n N] [--redis-n N] [--spin-us U]\n");
}

/* One judged target: met, missed or skipped (with why). */
struct target {
    const char *name, *unit, *op;
    double value, target;
    bool skipped, met;
    const char *why;
};

static void judge(struct target *t)
{
    t->met = !t->skipped && (t->op[0] == '>' ? t->value >= t->target : t->value <= t->target);
    if (t->skipped)
        printf("target_%s %s %.4g %.4g 0 # target %s %.3g: SKIPPED (%s)\n", t->name, t->unit,
               t->value, t->value, t->op, t->target, t->why);
    else
        printf("target_%s %s %.4g %.4g 1 # target %s %.3g: %s\n", t->name, t->unit, t->value,
               t->value, t->op, t->target, t->met ? "met" : "MISSED");
}

/* Per-round arrays, one per figure kept per round. */
enum {
    R_Q1,        /* lokid `one` root queries/s */
    R_Q2,        /* lokid `two` root queries/s */
    R_CPU,       /* lokid + workers + client CPU us per `one` query */
    R_RC,        /* redis PING -c conns */
    R_R50,       /* redis PING -c 50 */
    R_R1,        /* redis PING -c 1 */
    R_R1P50,     /* its latency p50, us */
    R_R1P99,     /* its latency p99, us */
    R_RP,        /* redis PING -c conns -P window */
    R_RPCPU,     /* its CPU us per query */
    R_RS,        /* redis SET 64 B -c conns -P window */
    R_RATIO,     /* lokid / max(redis -c conns, -c 50), unpipelined */
    R_RATIO_P,   /* lokid / redis PING -P window: the target */
    R_RATIO_S,   /* lokid / redis SET -P window */
    R_RATIO_CPU, /* redis CPU per query / lokid's */
    R_N
};

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
    cfg.topology = LOKI_E2E_TOPOLOGY;
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
        else if (!strcmp(a, "--lat-n"))
            cfg.lat_n = atoi(v);
        else if (!strcmp(a, "--redis-n"))
            cfg.redis_n = atoi(v);
        else if (!strcmp(a, "--spin-us"))
            cfg.spin_us = atoi(v);
        else {
            usage();
            return 2;
        }
    }
    if (!cfg.out || !cfg.lokid || cfg.rounds < 1 || cfg.conns < 1 || cfg.conns > MAX_CONNS ||
        cfg.window < 1 || !(cfg.tput_s > 0) || cfg.lat_n < 1 || cfg.redis_n < 1 ||
        cfg.spin_us < 0 || cfg.spin_us > 10000) {
        usage();
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    uint64_t t_start = loki_now_ns();
    double load0 = loki_bench_loadavg();
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/loki-bench-e2e-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "bench_e2e: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    atexit(cleanup);
    printf("# bench_e2e: lokid %s, topology %s; %d rounds; %d connections x %d in flight; "
           "spin lokid: runtime.spin_us %d; load average %.2f\n",
           cfg.lokid, cfg.topology, cfg.rounds, cfg.conns, cfg.window, cfg.spin_us, load0);
    printf("# name unit median p99 n\n");
    int rc = loki_bench_lokid_start(&lk, cfg.lokid, cfg.topology, tmpdir, "lokid", NULL);
    if (rc) {
        fprintf(stderr, "bench_e2e: %s did not become ready (topology %s): %s\n", cfg.lokid,
                cfg.topology, loki_strerror(rc));
        return 1;
    }
    const char *spin_why = NULL;
    if ((rc = write_spin_topology()))
        spin_why = rc == -EEXIST ? "the topology sets runtime itself" : loki_strerror(rc);
    else if ((rc =
                  loki_bench_lokid_start(&lk_spin, cfg.lokid, spin_topology, tmpdir, "spin", NULL)))
        spin_why = "the spin lokid did not become ready";
    if (spin_why)
        printf("# spin lokid SKIPPED: %s\n", spin_why);

    struct loki_client *cs[MAX_CONNS], *cspin = NULL;
    struct loki_client_opts co = {.max_outstanding = (uint32_t)cfg.window * 2, .name = "bench_e2e"};
    for (int i = 0; i < cfg.conns; i++) {
        rc = loki_client_connect(lk.sock, &co, &cs[i]);
        if (rc) {
            fprintf(stderr, "bench_e2e: connect %s: %s\n", lk.sock, loki_strerror(rc));
            return 1;
        }
    }
    if (!spin_why && (rc = loki_client_connect(lk_spin.sock, &co, &cspin))) {
        fprintf(stderr, "bench_e2e: connect %s: %s\n", lk_spin.sock, loki_strerror(rc));
        return 1;
    }
    bool have_redis = in_path("redis-server") && in_path("redis-benchmark");
    int rrc = have_redis ? redis_start() : -ENOENT;
    if (rrc) {
        printf("# redis reference SKIPPED: %s\n",
               have_redis ? loki_strerror(rrc)
                          : "redis-server or redis-benchmark not in PATH "
                            "(Debian: apt-get install redis-server)");
        have_redis = false;
    }

    double *l1 = malloc(sizeof(double) * LAT_MAX), *l2 = malloc(sizeof(double) * LAT_MAX);
    double *s1 = malloc(sizeof(double) * LAT_MAX), *s2 = malloc(sizeof(double) * LAT_MAX);
    double *hops = malloc(sizeof(double) * LAT_MAX);
    /* the spin lokid's, same layout */
    double *t1 = malloc(sizeof(double) * LAT_MAX), *t2 = malloc(sizeof(double) * LAT_MAX);
    double *u1 = malloc(sizeof(double) * LAT_MAX), *u2 = malloc(sizeof(double) * LAT_MAX);
    double *rd[R_N];
    uint64_t *win = calloc(2 * (size_t)cfg.rounds, sizeof(uint64_t));
    uint64_t *win_spin = calloc(2 * (size_t)cfg.rounds, sizeof(uint64_t));
    bool oom = !l1 || !l2 || !s1 || !s2 || !hops || !t1 || !t2 || !u1 || !u2 || !win || !win_spin;
    for (int k = 0; k < R_N; k++)
        oom |= !(rd[k] = calloc((size_t)cfg.rounds, sizeof(double)));
    if (oom) {
        fprintf(stderr, "bench_e2e: out of memory\n");
        return 1;
    }
    size_t n1 = 0, n2 = 0;
    uint64_t bad = 0;
    /* warm-up: fault in rings, arenas and the client's tables */
    {
        size_t w1 = 0, w2 = 0;
        int keep = cfg.lat_n;
        cfg.lat_n = 500;
        if (latency_round(cs[0], l1, s1, &w1, l2, s2, &w2, &bad))
            return 1;
        w1 = w2 = 0;
        if (cspin && latency_round(cspin, l1, s1, &w1, l2, s2, &w2, &bad))
            return 1;
        cfg.lat_n = keep;
        uint64_t n_ok;
        (void)tput_round(cs, "one", &bad, &n_ok);
        bad = 0;
    }
    int n_redis = 0, n_redis_p = 0;
    size_t n_spin1 = 0, n_spin2 = 0;
    for (int r = 0; r < cfg.rounds; r++) {
        win[2 * r] = loki_now_ns();
        if (latency_round(cs[0], l1, s1, &n1, l2, s2, &n2, &bad))
            return 1;
        win[2 * r + 1] = loki_now_ns();
        if (cspin) {
            win_spin[2 * r] = loki_now_ns();
            if (latency_round(cspin, t1, u1, &n_spin1, t2, u2, &n_spin2, &bad))
                return 1;
            win_spin[2 * r + 1] = loki_now_ns();
        }
        double cpu0 = loki_bench_tree_cpu_s(lk.pid) + loki_bench_self_cpu_s();
        uint64_t n_ok;
        rd[R_Q1][r] = tput_round(cs, "one", &bad, &n_ok);
        double cpu1 = loki_bench_tree_cpu_s(lk.pid) + loki_bench_self_cpu_s();
        rd[R_CPU][r] = n_ok ? (cpu1 - cpu0) * 1e6 / (double)n_ok : 0;
        rd[R_Q2][r] = tput_round(cs, "two", &bad, &n_ok);
        if (!have_redis)
            continue;
        struct redis_res a, b, c1, pp, ps;
        if (redis_bench("ping_mbulk", "PING_MBULK", cfg.conns, cfg.window, cfg.redis_n * 20, 3,
                        &pp) ||
            redis_bench("set", "SET", cfg.conns, cfg.window, cfg.redis_n * 20, 64, &ps) ||
            redis_bench("ping_mbulk", "PING_MBULK", cfg.conns, 1, cfg.redis_n, 3, &a) ||
            redis_bench("ping_mbulk", "PING_MBULK", 50, 1, cfg.redis_n, 3, &b) ||
            redis_bench("ping_mbulk", "PING_MBULK", 1, 1, cfg.redis_n / 5, 3, &c1)) {
            printf("# redis-benchmark gave no PING_MBULK or SET row: reference SKIPPED\n");
            have_redis = false;
            continue;
        }
        int k = n_redis++;
        rd[R_RP][k] = pp.rps;
        rd[R_RPCPU][k] = pp.cpu_s * 1e6 / (cfg.redis_n * 20.0);
        rd[R_RS][k] = ps.rps;
        rd[R_RC][k] = a.rps;
        rd[R_R50][k] = b.rps;
        rd[R_R1][k] = c1.rps;
        rd[R_R1P50][k] = c1.p50_us;
        rd[R_R1P99][k] = c1.p99_us;
        rd[R_RATIO_P][k] = rd[R_Q1][r] / pp.rps;
        rd[R_RATIO_S][k] = rd[R_Q1][r] / ps.rps;
        rd[R_RATIO_CPU][k] = rd[R_RPCPU][k] / rd[R_CPU][r];
        rd[R_RATIO][k] = rd[R_Q1][r] / (a.rps > b.rps ? a.rps : b.rps);
        n_redis_p = n_redis;
    }
    double load1 = loki_bench_loadavg();
    int lokid_exit = loki_bench_lokid_stop(&lk);
    int spin_exit = loki_bench_lokid_stop(&lk_spin);
    for (int i = 0; i < cfg.conns; i++)
        loki_client_close(cs[i]);
    loki_client_close(cspin);
    redis_stop();

    /* the hop itself, by lokid's clock, one batch of one query at a time */
    size_t n_hops = read_hops(lk.hop_log, win, cfg.rounds, hops, LAT_MAX);
    const struct metric *hop = n_hops ? record("lokid_hop_latency", "us", hops, n_hops) : NULL;
    if (!hop)
        printf("# lokid wrote no hop log (%s): lokid_hop_latency missing\n", lk.hop_log);
    const struct metric *hop_spin = NULL;
    if (cspin) {
        n_hops = read_hops(lk_spin.hop_log, win_spin, cfg.rounds, hops, LAT_MAX);
        hop_spin = n_hops ? record("lokid_hop_latency_spin", "us", hops, n_hops) : NULL;
        if (!hop_spin)
            printf("# the spin lokid wrote no hop log (%s)\n", lk_spin.hop_log);
        record("lokid_one_hop_latency_spin", "us", t1, n_spin1);
        record("lokid_one_hop_server_latency_spin", "us", u1, n_spin1);
    }
    /* the same from outside: the difference of the two pipelines' quantiles */
    const struct metric *m1 = record("lokid_one_hop_latency", "us", l1, n1);
    const struct metric *m2 = record("lokid_two_hop_latency", "us", l2, n2);
    record2("lokid_hop_overhead", "us", m2->median - m1->median, m2->p99 - m1->p99,
            n1 < n2 ? n1 : n2);
    /* the same queries by lokid's clock: what the socket and the client add is the rest */
    const struct metric *v1 = record("lokid_one_hop_server_latency", "us", s1, n1);
    const struct metric *v2 = record("lokid_two_hop_server_latency", "us", s2, n2);
    record2("lokid_hop_overhead_server", "us", v2->median - v1->median, v2->p99 - v1->p99,
            n1 < n2 ? n1 : n2);
    size_t nr = (size_t)cfg.rounds;
    record("lokid_one_qps", "qps", rd[R_Q1], nr);
    record("lokid_two_qps", "qps", rd[R_Q2], nr);
    record("lokid_one_cpu_per_query", "us", rd[R_CPU], nr);
    char nm[64];
    if (n_redis) {
        size_t n = (size_t)n_redis;
        snprintf(nm, sizeof(nm), "redis_ping_c%d_P%d_rps", cfg.conns, cfg.window);
        record(nm, "rps", rd[R_RP], n);
        snprintf(nm, sizeof(nm), "redis_ping_c%d_P%d_cpu_per_query", cfg.conns, cfg.window);
        record(nm, "us", rd[R_RPCPU], n);
        snprintf(nm, sizeof(nm), "redis_set64_c%d_P%d_rps", cfg.conns, cfg.window);
        record(nm, "rps", rd[R_RS], n);
        snprintf(nm, sizeof(nm), "redis_ping_c%d_rps", cfg.conns);
        record(nm, "rps", rd[R_RC], n);
        record("redis_ping_c50_rps", "rps", rd[R_R50], n);
        record("redis_ping_c1_rps", "rps", rd[R_R1], n);
        record("redis_ping_c1_latency_p50", "us", rd[R_R1P50], n);
        record("redis_ping_c1_latency_p99", "us", rd[R_R1P99], n);
        record("lokid_one_qps_vs_redis_pipelined", "ratio", rd[R_RATIO_P], n);
        record("lokid_one_qps_vs_redis_set64_pipelined", "ratio", rd[R_RATIO_S], n);
        record("lokid_one_cpu_vs_redis_pipelined", "ratio", rd[R_RATIO_CPU], n);
        /* informational: redis without pipelining, the earlier (easier) reference */
        record("lokid_one_qps_vs_redis", "ratio", rd[R_RATIO], n);
    }
    if (bad)
        printf("# %llu queries did not answer ok (counted out of the figures)\n",
               (unsigned long long)bad);

    struct target tg[2] = {
        {"qps_vs_redis_pipelined", "ratio",
         ">=", n_redis_p ? find("lokid_one_qps_vs_redis_pipelined")->median : 0, 0.5, !n_redis_p,
         false, "no redis reference"},
        {"hop_latency_spin_p99_us", "us", "<=", hop_spin ? hop_spin->p99 : 0, 50, !hop_spin, false,
         spin_why ? spin_why : "no hop log from the spin lokid"},
    };
    if (hop_spin && hop_spin->n < 1000) {
        tg[1].skipped = true;
        tg[1].why = "too few hops for a p99";
    }
    for (int i = 0; i < 2; i++)
        judge(&tg[i]);
    if (lokid_exit != 0)
        printf("# lokid exited with status %d after SIGTERM\n", lokid_exit);
    if (cspin && spin_exit != 0)
        printf("# the spin lokid exited with status %d after SIGTERM\n", spin_exit);
    printf("# load average %.2f at the start, %.2f at the end\n", load0, load1);

    char path[PATH_MAX];
    mkdir(cfg.out, 0755);
    snprintf(path, sizeof(path), "%s/e2e.json", cfg.out);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "bench_e2e: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    fprintf(f, "{\n  \"bench\": \"e2e\",\n  \"wall_s\": %.3f,\n",
            (double)(loki_now_ns() - t_start) * 1e-9);
    fprintf(f, "  \"loadavg\": [%.2f, %.2f],\n  \"cpus\": %ld,\n", load0, load1,
            sysconf(_SC_NPROCESSORS_ONLN));
    fprintf(f,
            "  \"config\": {\"topology\": \"%s\", \"rounds\": %d, \"connections\": %d, "
            "\"window\": %d, \"throughput_s\": %g, \"latency_queries_per_round\": %d, "
            "\"redis_n\": %d, \"spin_us\": %d},\n",
            cfg.topology, cfg.rounds, cfg.conns, cfg.window, cfg.tput_s, cfg.lat_n, cfg.redis_n,
            cfg.spin_us);
    fprintf(f, "  \"redis\": %s,\n  \"lokid_exit_status\": %d,\n  \"not_ok_queries\": %llu,\n",
            n_redis ? "true" : "false", lokid_exit, (unsigned long long)bad);
    fprintf(f, "  \"notes\": \"latency: one query in flight, alternating pipelines one and two, "
               "submit to completion callback; hop latency: per batch sent in the latency "
               "rounds, lokid's time from before encoding the descriptor to picking up its "
               "result record (ring, worker wake-up, zero-latency sim, result ring), for the "
               "topology as is and for a second lokid with runtime.spin_us raised (the target); "
               "hop overhead = quantile(two) - quantile(one), client and server clocks; "
               "qps: conns x window pipelined async submits of 64 B, per-round rates (p99 = "
               "max); cpu_per_query: CPU time of lokid, its workers and this client (redis: "
               "redis-server and redis-benchmark) over the queries served; redis: "
               "redis-benchmark over a Unix socket, PING_MBULK and SET -d 64 with -P window at "
               "the same connections (the target's reference), and PING without pipelining "
               "for information\",\n");
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
    fprintf(f, "  ],\n  \"targets\": [\n");
    for (int i = 0; i < 2; i++)
        fprintf(f,
                "    {\"name\": \"%s\", \"value\": %.6g, \"op\": \"%s\", \"target\": %.3g, "
                "\"met\": %s, \"skipped\": %s, \"note\": \"%s\"}%s\n",
                tg[i].name, tg[i].value, tg[i].op, tg[i].target, tg[i].met ? "true" : "false",
                tg[i].skipped ? "true" : "false", tg[i].skipped ? tg[i].why : "", i < 1 ? "," : "");
    fprintf(f, "  ]\n}\n");
    fclose(f);
    free(l1);
    free(l2);
    free(s1);
    free(s2);
    free(hops);
    free(t1);
    free(t2);
    free(u1);
    free(u2);
    for (int k = 0; k < R_N; k++)
        free(rd[k]);
    free(win);
    free(win_spin);
    return 0;
}
