/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_ring: the shared-memory ring against a Unix socketpair and a pipe for
 * the same message streams (64 B, 1 KiB, 64 KiB, 1 MiB), two threads pinned to
 * two CPUs, plus the machine's own limits measured in the same run (memcpy
 * bandwidth, cache-line round trip between the two pinned threads). Targets
 * are checked as ratios of figures from this run. Prints one line per metric
 * (`name unit median p99 n`) and writes DIR/ring.json.
 *
 * Every transport does the same work per message: the producer copies the
 * message in (write(), or memcpy into the reserved slot), the consumer copies it
 * out (read(), or memcpy from the peeked record). `ring_zc` also reports the
 * zero-copy consumer the runtime uses (reads the 8-byte header word only).
 */
#include "bench_stats.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loki/clock.h"
#include "loki/error.h"
#include "loki/ring.h"

#define END_MARK UINT64_MAX
#define TP_REPS 5
#define TP_RUN_NS (100ull * 1000 * 1000)
#define LAT_MAX_SAMPLES 20000
#define LAT_RUN_NS (150ull * 1000 * 1000)
#define LAT_GAP_NS 20000ull

static int cpu_a = -1, cpu_b = -1;
static double ns_per_tick = 1.0;

/*
 * Latency probes: the TSC (invariant on this class of machine, ~10 ns to read)
 * rather than clock_gettime (~20 ns), so the probe costs less than what it measures.
 */
static inline uint64_t stamp(void)
{
#if defined(__x86_64__)
    return __builtin_ia32_rdtsc();
#else
    return loki_now_ns();
#endif
}

static void calibrate_stamp(void)
{
    uint64_t t0 = loki_now_ns(), c0 = stamp();
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    uint64_t t1 = loki_now_ns(), c1 = stamp();
    ns_per_tick = c1 > c0 ? (double)(t1 - t0) / (double)(c1 - c0) : 1.0;
}

static void pin(int cpu)
{
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* ---- statistics and output ----------------------------------------------------------------- */

struct metric {
    char name[64];
    const char *unit;
    double median;
    double p99;
    size_t n;
};

static struct metric metrics[256];
static size_t n_metrics;

static struct metric *record(const char *name, const char *unit, double *v, size_t n)
{
    struct metric *m = &metrics[n_metrics++];
    qsort(v, n, sizeof(*v), loki_bench_cmp_double);
    snprintf(m->name, sizeof(m->name), "%s", name);
    m->unit = unit;
    m->median = n ? loki_bench_pct(v, n, 0.5) : 0;
    m->p99 = n ? loki_bench_pct(v, n, 0.99) : 0;
    m->n = n;
    printf("%s %s %.6g %.6g %zu\n", m->name, m->unit, m->median, m->p99, m->n);
    fflush(stdout);
    return m;
}

static const struct metric *find(const char *name)
{
    for (size_t i = 0; i < n_metrics; i++)
        if (strcmp(metrics[i].name, name) == 0)
            return &metrics[i];
    return NULL;
}

/* ---- machine limits ------------------------------------------------------------------------ */

static void bench_memcpy(size_t size, const char *name)
{
    enum { SAMPLES = 400 };
    uint8_t *src = aligned_alloc(4096, size), *dst = aligned_alloc(4096, size);
    double v[SAMPLES];
    memset(src, 1, size);
    memset(dst, 2, size);
    pin(cpu_a);
    for (int i = 0; i < 20; i++)
        memcpy(dst, src, size);
    for (int s = 0; s < SAMPLES; s++) {
        int reps = size < 65536 ? 64 : 4;
        uint64_t t0 = loki_now_ns();
        for (int i = 0; i < reps; i++) {
            memcpy(dst, src, size);
            __asm__ __volatile__("" ::"r"(dst) : "memory");
        }
        v[s] = (double)size * reps / ((double)(loki_now_ns() - t0) * 1e-9);
    }
    record(name, "bytes/s", v, SAMPLES);
    free(src);
    free(dst);
}

struct pingpong {
    _Alignas(128) uint64_t line;
    _Alignas(128) uint64_t rounds;
};

static void *pong_main(void *arg)
{
    struct pingpong *pp = arg;
    pin(cpu_b);
    for (uint64_t i = 0; i < pp->rounds; i++) {
        while (__atomic_load_n(&pp->line, __ATOMIC_ACQUIRE) != 2 * i + 1)
            relax();
        __atomic_store_n(&pp->line, 2 * i + 2, __ATOMIC_RELEASE);
    }
    return NULL;
}

static void bench_cacheline(void)
{
    enum { BATCH = 100, SAMPLES = 2000 };
    static struct pingpong pp;
    static double v[SAMPLES];
    pthread_t t;
    pp.line = 0;
    pp.rounds = (uint64_t)BATCH * (SAMPLES + 10);
    pthread_create(&t, NULL, pong_main, &pp);
    pin(cpu_a);
    uint64_t i = 0;
    for (int s = -10; s < SAMPLES; s++) {
        uint64_t t0 = loki_now_ns();
        for (int k = 0; k < BATCH; k++, i++) {
            __atomic_store_n(&pp.line, 2 * i + 1, __ATOMIC_RELEASE);
            while (__atomic_load_n(&pp.line, __ATOMIC_ACQUIRE) != 2 * i + 2)
                relax();
        }
        if (s >= 0)
            v[s] = (double)(loki_now_ns() - t0) / BATCH;
    }
    pthread_join(t, NULL);
    record("cacheline_rtt", "ns", v, SAMPLES);
}

/* ---- transports ---------------------------------------------------------------------------- */

enum tkind { T_RING, T_RING_ZC, T_SOCK, T_PIPE };
static const char *const tname[] = {"ring", "ring_zc", "socketpair", "pipe"};

struct chan {
    enum tkind k;
    int memfd;
    struct loki_ring *prod;
    struct loki_ring *cons;
    int wfd;
    int rfd;
};

static size_t ring_cap_for(size_t size)
{
    size_t c = 1;
    while (c < size + 8)
        c <<= 1;
    c *= 4;
    return c < (256u << 10) ? (256u << 10) : c;
}

static int chan_open(struct chan *c, enum tkind k, size_t size, uint64_t spin_ns)
{
    memset(c, 0, sizeof(*c));
    c->k = k;
    c->wfd = c->rfd = c->memfd = -1;
    if (k == T_RING || k == T_RING_ZC) {
        c->memfd = memfd_create("bench-ring", MFD_CLOEXEC);
        int err = loki_ring_create(c->memfd, ring_cap_for(size), LOKI_RING_PRODUCER, &c->prod);
        if (!err)
            err = loki_ring_attach_local(c->prod, LOKI_RING_CONSUMER, &c->cons);
        if (err)
            return err;
        loki_ring_set_spin(c->prod, 1000000000ull);
        loki_ring_set_spin(c->cons, spin_ns);
        return 0;
    }
    int fds[2];
    if (k == T_SOCK) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
            return -errno;
        int buf = 4 << 20;
        setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
        setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
    } else {
        if (pipe2(fds, O_CLOEXEC) < 0)
            return -errno;
        fcntl(fds[1], F_SETPIPE_SZ, 1 << 20); /* best effort: the default max is 1 MiB */
        int t = fds[0];
        fds[0] = fds[1]; /* fds[0] writes, fds[1] reads, as for the socket */
        fds[1] = t;
    }
    c->wfd = fds[0];
    c->rfd = fds[1];
    return 0;
}

static void chan_close(struct chan *c)
{
    loki_ring_destroy(c->prod);
    loki_ring_destroy(c->cons);
    if (c->memfd >= 0)
        close(c->memfd);
    if (c->wfd >= 0)
        close(c->wfd);
    if (c->rfd >= 0)
        close(c->rfd);
}

static void chan_send(struct chan *c, const uint8_t *src, size_t size)
{
    if (c->prod) {
        void *p;
        while (loki_ring_reserve(c->prod, size, &p) == -EAGAIN)
            loki_ring_wait(c->prod, size, -1);
        memcpy(p, src, size);
        loki_ring_commit(c->prod, size);
        return;
    }
    for (size_t off = 0; off < size;) {
        ssize_t n = write(c->wfd, src + off, size - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            abort(); /* benchmark plumbing broke: nothing to measure */
        off += (size_t)n;
    }
}

/* Receive one message; returns its first 8-byte word. */
static uint64_t chan_recv(struct chan *c, uint8_t *dst, size_t size)
{
    uint64_t w;
    if (c->cons) {
        const void *p;
        size_t len;
        while (loki_ring_peek(c->cons, &p, &len) == -EAGAIN)
            loki_ring_wait(c->cons, 0, -1);
        if (c->k == T_RING_ZC)
            memcpy(&w, p, sizeof(w));
        else {
            memcpy(dst, p, len);
            memcpy(&w, dst, sizeof(w));
        }
        loki_ring_consume(c->cons);
        return w;
    }
    for (size_t off = 0; off < size;) {
        ssize_t n = read(c->rfd, dst + off, size - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            abort();
        off += (size_t)n;
    }
    memcpy(&w, dst, sizeof(w));
    return w;
}

/* ---- throughput ---------------------------------------------------------------------------- */

struct tp {
    struct chan *c;
    size_t size;
    int stop;
    uint64_t count;
    uint64_t t_first;
    uint64_t t_last;
    uint64_t n_first;
    uint64_t n_last;
};

static void *tp_producer(void *arg)
{
    struct tp *t = arg;
    uint8_t *src = aligned_alloc(64, t->size);
    memset(src, 0x5a, t->size);
    pin(cpu_a);
    for (uint64_t seq = 0; !__atomic_load_n(&t->stop, __ATOMIC_RELAXED); seq++) {
        memcpy(src, &seq, sizeof(seq));
        chan_send(t->c, src, t->size);
    }
    uint64_t end = END_MARK;
    memcpy(src, &end, sizeof(end));
    chan_send(t->c, src, t->size);
    free(src);
    return NULL;
}

static void *tp_consumer(void *arg)
{
    struct tp *t = arg;
    uint8_t *dst = aligned_alloc(64, t->size);
    pin(cpu_b);
    uint64_t expect = 0;
    for (;;) {
        uint64_t w = chan_recv(t->c, dst, t->size);
        if (w == END_MARK)
            break;
        if (w != expect)
            abort(); /* lost or reordered: the numbers would be meaningless */
        expect++;
        /* the clock costs ~20 ns: read it at the first message and every 256th */
        if (t->count == 0) {
            t->t_first = loki_now_ns();
            t->n_first = 0;
        } else if ((t->count & 255) == 0) {
            t->t_last = loki_now_ns();
            t->n_last = t->count;
        }
        t->count++;
    }
    free(dst);
    return NULL;
}

static void bench_throughput(enum tkind k, size_t size, const char *label)
{
    double msgs[TP_REPS], bytes[TP_REPS];
    for (int rep = 0; rep < TP_REPS; rep++) {
        struct chan c;
        if (chan_open(&c, k, size, 1000000000ull) != 0) {
            fprintf(stderr, "bench_ring: cannot open %s\n", tname[k]);
            exit(1);
        }
        struct tp t = {.c = &c, .size = size};
        pthread_t tc, tpr;
        pthread_create(&tc, NULL, tp_consumer, &t);
        pthread_create(&tpr, NULL, tp_producer, &t);
        struct timespec ts = {0, (long)TP_RUN_NS};
        nanosleep(&ts, NULL);
        __atomic_store_n(&t.stop, 1, __ATOMIC_RELAXED);
        pthread_join(tpr, NULL);
        pthread_join(tc, NULL);
        double secs = (double)(t.t_last - t.t_first) * 1e-9;
        msgs[rep] = t.n_last > 0 && secs > 0 ? (double)(t.n_last - t.n_first) / secs : 0;
        bytes[rep] = msgs[rep] * (double)size;
        chan_close(&c);
    }
    char name[64];
    snprintf(name, sizeof(name), "%s_%s_msgs", tname[k], label);
    record(name, "msgs/s", msgs, TP_REPS);
    snprintf(name, sizeof(name), "%s_%s_bytes", tname[k], label);
    record(name, "bytes/s", bytes, TP_REPS);
}

/* ---- one-way latency ----------------------------------------------------------------------- */

struct lat {
    struct chan *c;
    size_t size;
    _Alignas(128) uint64_t ack;
    double *v;
};

static void *lat_consumer(void *arg)
{
    struct lat *l = arg;
    uint8_t *dst = aligned_alloc(64, l->size);
    pin(cpu_b);
    for (size_t i = 0;; i++) {
        uint64_t sent = chan_recv(l->c, dst, l->size);
        uint64_t now = stamp();
        if (sent == END_MARK)
            break;
        l->v[i] = (double)(now - sent) * ns_per_tick;
        /* R: the sample before the ack; the producer reads n only after joining */
        __atomic_store_n(&l->ack, i + 1, __ATOMIC_RELEASE);
    }
    free(dst);
    return NULL;
}

static void bench_latency(enum tkind k, size_t size, const char *label, uint64_t spin_ns,
                          const char *variant)
{
    struct chan c;
    static double v[LAT_MAX_SAMPLES];
    if (chan_open(&c, k, size, spin_ns) != 0)
        exit(1);
    struct lat l = {.c = &c, .size = size, .v = v};
    uint8_t *src = aligned_alloc(64, size);
    memset(src, 0x33, size);
    pthread_t t;
    pthread_create(&t, NULL, lat_consumer, &l);
    pin(cpu_a);
    uint64_t end_at = loki_now_ns() + LAT_RUN_NS;
    size_t i = 0;
    for (; i < LAT_MAX_SAMPLES && loki_now_ns() < end_at; i++) {
        /* one message in flight; a gap lets a parking consumer really park */
        while (__atomic_load_n(&l.ack, __ATOMIC_ACQUIRE) != i)
            relax();
        uint64_t gap_end = loki_now_ns() + LAT_GAP_NS;
        while (loki_now_ns() < gap_end)
            relax();
        uint64_t now = stamp();
        memcpy(src, &now, sizeof(now));
        chan_send(&c, src, size);
    }
    while (__atomic_load_n(&l.ack, __ATOMIC_ACQUIRE) != i)
        relax();
    uint64_t end = END_MARK;
    memcpy(src, &end, sizeof(end));
    chan_send(&c, src, size);
    pthread_join(t, NULL);
    char name[64];
    snprintf(name, sizeof(name), "%s_%s_oneway", variant, label);
    record(name, "ns", v, i);
    free(src);
    chan_close(&c);
}

/* ---- main ---------------------------------------------------------------------------------- */

struct target {
    const char *name;
    const char *op;
    double value;
    double target;
    bool met;
};

int main(int argc, char **argv)
{
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
            out = argv[++i];
        else {
            fprintf(stderr, "usage: bench_ring --out DIR\n");
            return 2;
        }
    }
    if (!out) {
        fprintf(stderr, "usage: bench_ring --out DIR\n");
        return 2;
    }
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) >= 2) {
        for (int c = 0; c < CPU_SETSIZE; c++) {
            if (!CPU_ISSET(c, &set))
                continue;
            if (cpu_a < 0)
                cpu_a = c;
            else if (cpu_b < 0)
                cpu_b = c;
        }
    }
    printf("# bench_ring: cpus %d,%d; name unit median p99 n\n", cpu_a, cpu_b);
    uint64_t t_start = loki_now_ns();
    calibrate_stamp();
    {
        enum { N = 200000 };
        double v[1];
        uint64_t c0 = stamp();
        for (int i = 0; i < N; i++)
            (void)loki_now_ns();
        v[0] = (double)(stamp() - c0) * ns_per_tick / N;
        record("clock_gettime_cost", "ns", v, 1);
    }

    bench_memcpy(1u << 20, "memcpy_1MiB");
    bench_memcpy(64u << 10, "memcpy_64KiB");
    bench_cacheline();

    static const size_t sizes[] = {64, 1024, 64 << 10, 1 << 20};
    static const char *const labels[] = {"64B", "1KiB", "64KiB", "1MiB"};
    for (size_t s = 0; s < 4; s++)
        for (int k = T_RING; k <= T_PIPE; k++)
            bench_throughput((enum tkind)k, sizes[s], labels[s]);
    for (size_t s = 0; s < 4; s++) {
        bench_latency(T_RING, sizes[s], labels[s], 1000000000ull, "ring_spin");
        bench_latency(T_RING, sizes[s], labels[s], 0, "ring_park");
        bench_latency(T_SOCK, sizes[s], labels[s], 0, "socketpair");
        bench_latency(T_PIPE, sizes[s], labels[s], 0, "pipe");
    }

    struct target tg[3] = {
        {"ring_vs_socketpair_64B_msgs",
         ">=", find("ring_64B_msgs")->median / find("socketpair_64B_msgs")->median, 10.0, false},
        {"ring_vs_memcpy_1MiB_bytes",
         ">=", find("ring_1MiB_bytes")->median / find("memcpy_1MiB")->median, 0.5, false},
        {"ring_spin_p50_vs_cacheline_rtt",
         "<=", find("ring_spin_64B_oneway")->median / find("cacheline_rtt")->median, 1.0, false},
    };
    for (int i = 0; i < 3; i++) {
        tg[i].met = tg[i].op[0] == '>' ? tg[i].value >= tg[i].target : tg[i].value <= tg[i].target;
        printf("target_%s ratio %.4g %.4g 1 # target %s %.3g: %s\n", tg[i].name, tg[i].value,
               tg[i].value, tg[i].op, tg[i].target, tg[i].met ? "met" : "MISSED");
    }

    char path[4096];
    snprintf(path, sizeof(path), "%s/ring.json", out);
    mkdir(out, 0755);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "bench_ring: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    fprintf(f, "{\n  \"bench\": \"ring\",\n  \"cpus\": [%d, %d],\n", cpu_a, cpu_b);
    fprintf(f, "  \"wall_s\": %.3f,\n", (double)(loki_now_ns() - t_start) * 1e-9);
    fprintf(f,
            "  \"notes\": \"throughput: %d reps of %.0f ms, p99 = 99th percentile of the "
            "per-rep rates; latency: one message in flight, send start to receive end, "
            "%.0f us gap; every transport copies in and out except ring_zc\",\n",
            TP_REPS, TP_RUN_NS / 1e6, LAT_GAP_NS / 1e3);
    fprintf(f, "  \"metrics\": [\n");
    for (size_t i = 0; i < n_metrics; i++)
        fprintf(f,
                "    {\"name\": \"%s\", \"unit\": \"%s\", \"median\": %.6g, \"p99\": %.6g, "
                "\"n\": %zu}%s\n",
                metrics[i].name, metrics[i].unit, metrics[i].median, metrics[i].p99, metrics[i].n,
                i + 1 < n_metrics ? "," : "");
    fprintf(f, "  ],\n  \"targets\": [\n");
    for (int i = 0; i < 3; i++)
        fprintf(f,
                "    {\"name\": \"%s\", \"value\": %.6g, \"op\": \"%s\", \"target\": %.3g, "
                "\"met\": %s}%s\n",
                tg[i].name, tg[i].value, tg[i].op, tg[i].target, tg[i].met ? "true" : "false",
                i < 2 ? "," : "");
    fprintf(f, "  ]\n}\n");
    fclose(f);
    return 0;
}
