/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `loki load`: replay a demand trace against a running lokid through the
 * client library. The trace is a CSV of per-second (`second,requests`) or
 * per-minute (`minute,requests`) counts; within each row, arrivals are a
 * Poisson process (seeded) at the row's rate, so bursts look like real
 * traffic rather than a metronome. Replies are counted by status; latency is
 * measured here, from send to completion.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "loki/client.h"
#include "loki/clock.h"
#include "loki/error.h"

struct load_stats {
    pthread_mutex_t m;
    uint64_t sent, done, by_status[LOKI_STATUS_COUNT_], local_overload;
    double acc_sum;
    uint64_t acc_n;
    double *lat;
    size_t n_lat, cap_lat;
};

static struct load_stats S = {.m = PTHREAD_MUTEX_INITIALIZER};

static void on_reply(void *ctx, const struct loki_reply *r)
{
    uint64_t sent_at = (uint64_t)(uintptr_t)ctx;
    double ms = (double)(loki_now_ns() - sent_at) / 1e6;
    pthread_mutex_lock(&S.m);
    S.done++;
    if ((unsigned)r->status < LOKI_STATUS_COUNT_)
        S.by_status[r->status]++;
    if (r->status == LOKI_STATUS_OK || r->status == LOKI_STATUS_LATE) {
        S.acc_sum += r->accuracy;
        S.acc_n++;
        if (S.n_lat == S.cap_lat) {
            size_t cap = S.cap_lat ? S.cap_lat * 2 : 4096;
            double *p = realloc(S.lat, cap * sizeof(*p));
            if (p) {
                S.lat = p;
                S.cap_lat = cap;
            }
        }
        if (S.n_lat < S.cap_lat)
            S.lat[S.n_lat++] = ms;
    }
    pthread_mutex_unlock(&S.m);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double q)
{
    if (!n)
        return 0;
    size_t i = (size_t)ceil(q * (double)n) - 1;
    return v[i < n ? i : n - 1];
}

static uint64_t rng_state;

static double rng_uniform(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static void sleep_until(uint64_t t_ns)
{
    struct timespec ts = {(time_t)(t_ns / 1000000000ull), (long)(t_ns % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* Read the trace; returns rows (requests per row) and sets *unit_s (1 or 60). */
static double *read_trace(const char *path, size_t *n, double *unit_s)
{
    FILE *f = fopen(path, "r");
    char line[256];
    double *rows = NULL;
    size_t cap = 0;
    *n = 0;
    if (!f) {
        fprintf(stderr, "loki load: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    if (!fgets(line, sizeof(line), f)) {
        fprintf(stderr, "loki load: %s: empty trace\n", path);
        fclose(f);
        return NULL;
    }
    if (!strncmp(line, "second", 6))
        *unit_s = 1;
    else if (!strncmp(line, "minute", 6))
        *unit_s = 60;
    else {
        fprintf(stderr,
                "loki load: %s: header must be 'second,requests' or "
                "'minute,requests'\n",
                path);
        fclose(f);
        return NULL;
    }
    int lineno = 1;
    while (fgets(line, sizeof(line), f)) {
        double t, v;
        lineno++;
        if (line[0] == '\n' || line[0] == '#')
            continue;
        if (sscanf(line, "%lf , %lf", &t, &v) != 2 || !(v >= 0) || !isfinite(v)) {
            fprintf(stderr, "loki load: %s:%d: expected 'time,requests'\n", path, lineno);
            free(rows);
            fclose(f);
            return NULL;
        }
        if (*n == cap) {
            cap = cap ? cap * 2 : 256;
            double *p = realloc(rows, cap * sizeof(*p));
            if (!p) {
                free(rows);
                fclose(f);
                return NULL;
            }
            rows = p;
        }
        rows[(*n)++] = v;
    }
    fclose(f);
    if (!*n)
        fprintf(stderr, "loki load: %s: no rows\n", path);
    return rows;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loki load --socket S --trace CSV [--rate-scale X] [--time-scale Y]\n"
            "                 [--seed N] [--pipeline P] [--duration S] [--payload-bytes B]\n"
            "                 [--deadline-ms D] [--timeout-ms T] [--json]\n"
            "  --rate-scale X   multiply every row's request rate by X (default 1)\n"
            "  --time-scale Y   play Y trace seconds per wall second, keeping each row's\n"
            "                   rate (a day-long per-minute trace at Y=60 takes 24 min)\n"
            "  --duration S     stop sending after S wall seconds\n");
}

int loki_cli_load(int argc, char **argv)
{
    const char *sock = NULL, *trace = NULL, *pipeline = NULL;
    double rate_scale = 1, time_scale = 1, duration = 0, deadline_ms = 0, timeout_ms = 30000;
    unsigned long long seed = 1;
    long payload_bytes = 64;
    int json = 0;
    static const struct option opts[] = {
        {"socket", required_argument, NULL, 's'},
        {"trace", required_argument, NULL, 't'},
        {"rate-scale", required_argument, NULL, 'r'},
        {"time-scale", required_argument, NULL, 'T'},
        {"seed", required_argument, NULL, 'S'},
        {"pipeline", required_argument, NULL, 'p'},
        {"duration", required_argument, NULL, 'd'},
        {"json", no_argument, NULL, 'j'},
        {"payload-bytes", required_argument, NULL, 'b'},
        {"deadline-ms", required_argument, NULL, 'D'},
        {"timeout-ms", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            sock = optarg;
            break;
        case 't':
            trace = optarg;
            break;
        case 'r':
            rate_scale = atof(optarg);
            break;
        case 'T':
            time_scale = atof(optarg);
            break;
        case 'S':
            seed = strtoull(optarg, NULL, 10);
            break;
        case 'p':
            pipeline = optarg;
            break;
        case 'd':
            duration = atof(optarg);
            break;
        case 'j':
            json = 1;
            break;
        case 'b':
            payload_bytes = atol(optarg);
            break;
        case 'D':
            deadline_ms = atof(optarg);
            break;
        case 'o':
            timeout_ms = atof(optarg);
            break;
        case 'h':
            usage();
            return 0;
        default:
            usage();
            return 2;
        }
    }
    if (!sock || !trace || !(rate_scale >= 0) || !(time_scale > 0) || payload_bytes < 0 ||
        duration < 0) {
        usage();
        return 2;
    }
    size_t n_rows;
    double unit_s;
    double *rows = read_trace(trace, &n_rows, &unit_s);
    if (!rows)
        return 1;
    struct loki_client *cl;
    struct loki_client_opts co = {.max_outstanding = 65536, .name = "loki-load"};
    int rc = loki_client_connect(sock, &co, &cl);
    if (rc < 0) {
        fprintf(stderr, "loki load: connect %s: %s\n", sock, loki_strerror(rc));
        free(rows);
        return 1;
    }
    if (!pipeline) {
        const char *names[1];
        if (loki_client_pipelines(cl, names, 1) < 1) {
            fprintf(stderr, "loki load: the server announced no pipeline; use --pipeline\n");
            loki_client_close(cl);
            free(rows);
            return 1;
        }
        pipeline = names[0];
    }
    uint8_t *payload = malloc((size_t)payload_bytes + 1);
    rng_state = seed * 0x9E3779B97F4A7C15ull + 1;
    for (long i = 0; i < payload_bytes; i++)
        payload[i] = (uint8_t)(rng_uniform() * 256);
    struct loki_client_req rq = {.pipeline = pipeline,
                                 .payload = payload,
                                 .payload_len = (uint32_t)payload_bytes,
                                 .deadline_ms = deadline_ms,
                                 .timeout_ms = timeout_ms};
    bool tty = isatty(2);
    uint64_t t0 = loki_now_ns(), next_progress = t0 + 1000000000ull;
    uint64_t stop_at = duration > 0 ? t0 + (uint64_t)(duration * 1e9) : UINT64_MAX;
    double row_wall_s = unit_s / time_scale;
    uint64_t t = t0;
    bool broken = false;
    for (size_t i = 0; i < n_rows && !broken && t < stop_at; i++) {
        double rate = rows[i] / unit_s * rate_scale; /* per wall second */
        uint64_t row_end = t0 + (uint64_t)((double)(i + 1) * row_wall_s * 1e9);
        for (;;) {
            if (rate <= 0) {
                t = row_end;
                break;
            }
            t += (uint64_t)(-log(1 - rng_uniform()) / rate * 1e9);
            if (t >= row_end || t >= stop_at) {
                t = row_end;
                break;
            }
            sleep_until(t);
            uint64_t now = loki_now_ns();
            rc = loki_client_submit(cl, &rq, on_reply, (void *)(uintptr_t)now, NULL);
            pthread_mutex_lock(&S.m);
            if (rc == 0)
                S.sent++;
            else if (rc == -EAGAIN)
                S.local_overload++;
            pthread_mutex_unlock(&S.m);
            if (rc < 0 && rc != -EAGAIN) {
                fprintf(stderr, "%sloki load: submit: %s\n", tty ? "\n" : "", loki_strerror(rc));
                broken = true;
                break;
            }
            if (tty && now >= next_progress) {
                pthread_mutex_lock(&S.m);
                fprintf(
                    stderr,
                    "\r[%6.1fs] row %zu/%zu  %.1f req/s  sent %llu  ok %llu  dropped %llu  "
                    "late %llu  overloaded %llu ",
                    (double)(now - t0) / 1e9, i + 1, n_rows, rate, (unsigned long long)S.sent,
                    (unsigned long long)S.by_status[LOKI_STATUS_OK],
                    (unsigned long long)S.by_status[LOKI_STATUS_DROPPED],
                    (unsigned long long)S.by_status[LOKI_STATUS_LATE],
                    (unsigned long long)(S.by_status[LOKI_STATUS_OVERLOADED] + S.local_overload));
                pthread_mutex_unlock(&S.m);
                next_progress = now + 1000000000ull;
            }
        }
        if (t > stop_at)
            t = stop_at;
    }
    if (!broken)
        sleep_until(t < stop_at ? t : stop_at);
    double send_s = (double)(loki_now_ns() - t0) / 1e9;
    /* wait for what is in flight; the per-request timeout bounds this */
    for (;;) {
        struct loki_client_stats cs;
        loki_client_stats(cl, &cs);
        if (cs.outstanding == 0)
            break;
        usleep(2000);
    }
    loki_client_close(cl);
    if (tty)
        fprintf(stderr, "\n");

    pthread_mutex_lock(&S.m);
    qsort(S.lat, S.n_lat, sizeof(double), cmp_double);
    uint64_t *b = S.by_status;
    uint64_t errors = b[LOKI_STATUS_ERROR] + b[LOKI_STATUS_BAD_REQUEST] +
                      b[LOKI_STATUS_UNKNOWN_PIPELINE] + b[LOKI_STATUS_DRAINING] +
                      b[LOKI_STATUS_CLOSED];
    double p50 = pct(S.lat, S.n_lat, 0.50), p99 = pct(S.lat, S.n_lat, 0.99);
    double acc = S.acc_n ? S.acc_sum / (double)S.acc_n : 0;
    if (json) {
        printf("{\"pipeline\": \"%s\", \"duration_s\": %.3f, \"sent\": %llu, \"ok\": %llu, "
               "\"dropped\": %llu, \"late\": %llu, \"overloaded\": %llu, \"timeouts\": %llu, "
               "\"errors\": %llu, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"mean_accuracy\": %.3f}\n",
               pipeline, send_s, (unsigned long long)S.sent, (unsigned long long)b[LOKI_STATUS_OK],
               (unsigned long long)b[LOKI_STATUS_DROPPED], (unsigned long long)b[LOKI_STATUS_LATE],
               (unsigned long long)(b[LOKI_STATUS_OVERLOADED] + S.local_overload),
               (unsigned long long)b[LOKI_STATUS_TIMEOUT], (unsigned long long)errors, p50, p99,
               acc);
    } else {
        printf("pipeline    %s\n", pipeline);
        printf("duration    %.1f s\n", send_s);
        printf("sent        %llu\n", (unsigned long long)S.sent);
        printf("ok          %llu\n", (unsigned long long)b[LOKI_STATUS_OK]);
        printf("dropped     %llu\n", (unsigned long long)b[LOKI_STATUS_DROPPED]);
        printf("late        %llu\n", (unsigned long long)b[LOKI_STATUS_LATE]);
        printf("overloaded  %llu\n",
               (unsigned long long)(b[LOKI_STATUS_OVERLOADED] + S.local_overload));
        printf("timeouts    %llu\n", (unsigned long long)b[LOKI_STATUS_TIMEOUT]);
        printf("errors      %llu\n", (unsigned long long)errors);
        printf("latency     p50 %.2f ms  p99 %.2f ms\n", p50, p99);
        printf("accuracy    %.2f (mean over ok+late)\n", acc);
    }
    pthread_mutex_unlock(&S.m);
    free(S.lat);
    free(payload);
    free(rows);
    return broken ? 1 : 0;
}
