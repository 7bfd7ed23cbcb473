/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `loki load`: replay a demand trace against a running lokid through the
 * client library. The trace is a CSV of per-second (`second,requests`) or
 * per-minute (`minute,requests`) counts; within each row, arrivals are a
 * Poisson process (seeded) at the row's rate, so bursts look like real
 * traffic rather than a metronome. Latency is measured here, from send to
 * completion. --csv and --plot add a per-second account (by the wall second a
 * query was sent in) and, from a metrics request once a second, the instances
 * and GPUs lokid had in use.
 *
 * The account is exact: every arrival ends in one outcome, and the outcomes
 * add up to the count they belong to (docs/operator.md, "loki load"):
 *
 *   attempted = sent + refused_client + send_failed
 *   sent      = ok + dropped + late + overloaded_server + timeouts + errors
 *
 * refused_client: the client library would not send it (this connection's
 * max_outstanding requests in flight); overloaded_server: lokid answered
 * "overloaded"; send_failed: the client library could not send it (the
 * connection is gone, the payload is over lokid's limit): the run stops there.
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
#include "loki/json.h"
#include "loki/replay.h"

/* What became of the arrivals of one wall second, or of the whole run (see the account above). */
struct load_count {
    uint64_t attempted, sent, refused_client, send_failed;
    uint64_t by_status[LOKI_STATUS_COUNT_]; /* outcomes of the sent ones, one each */
};

/* One wall second of the run, by send time. */
struct load_second {
    double rate; /* offered rate (trace row x rate scale), queries/s */
    struct load_count n;
    double acc_sum;
    uint64_t acc_n;
    double instances, gpus; /* from lokid's metrics; < 0: not reported */
};

struct load_stats {
    pthread_mutex_t m;
    struct load_count n;
    uint64_t done;              /* completions seen: n.sent once the client is closed */
    double acc_sum, acc_ok_sum; /* over ok + late, and over ok alone */
    uint64_t acc_n;
    double *lat;
    uint32_t *lat_sec; /* send second of lat[i] (only with per_second) */
    size_t n_lat, cap_lat;
    bool per_second;
    uint64_t t0;
    struct load_second *sec;
    size_t n_sec, cap_sec;
};

static struct load_stats S = {.m = PTHREAD_MUTEX_INITIALIZER};

/* The per-second slot of @t_ns, grown on demand; NULL without --csv/--plot or on ENOMEM.
 * Called with S.m held. */
static struct load_second *second_at(uint64_t t_ns)
{
    if (!S.per_second || t_ns < S.t0)
        return NULL;
    size_t i = (size_t)((t_ns - S.t0) / 1000000000ull);
    if (i >= S.cap_sec) {
        size_t cap = S.cap_sec ? S.cap_sec : 256;
        while (cap <= i)
            cap *= 2;
        struct load_second *p = realloc(S.sec, cap * sizeof(*p));
        if (!p)
            return NULL;
        for (size_t k = S.cap_sec; k < cap; k++)
            p[k] = (struct load_second){.instances = -1, .gpus = -1};
        S.sec = p;
        S.cap_sec = cap;
    }
    if (i >= S.n_sec)
        S.n_sec = i + 1;
    return &S.sec[i];
}

static void on_reply(void *ctx, const struct loki_reply *r)
{
    uint64_t sent_at = (uint64_t)(uintptr_t)ctx;
    double ms = (double)(loki_now_ns() - sent_at) / 1e6;
    pthread_mutex_lock(&S.m);
    struct load_second *sec = second_at(sent_at);
    /* a status this tool does not know is still one outcome: an error */
    unsigned st = (unsigned)r->status < LOKI_STATUS_COUNT_ ? (unsigned)r->status
                                                           : (unsigned)LOKI_STATUS_ERROR;
    S.done++;
    S.n.by_status[st]++;
    if (sec)
        sec->n.by_status[st]++;
    if (r->status == LOKI_STATUS_OK || r->status == LOKI_STATUS_LATE) {
        S.acc_sum += r->accuracy;
        S.acc_n++;
        if (r->status == LOKI_STATUS_OK)
            S.acc_ok_sum += r->accuracy;
        if (sec) {
            sec->acc_sum += r->accuracy;
            sec->acc_n++;
        }
        if (S.n_lat == S.cap_lat) {
            size_t cap = S.cap_lat ? S.cap_lat * 2 : 4096;
            double *p = realloc(S.lat, cap * sizeof(*p));
            if (p)
                S.lat = p;
            uint32_t *q = S.per_second ? realloc(S.lat_sec, cap * sizeof(*q)) : NULL;
            if (q)
                S.lat_sec = q;
            if (p && (q || !S.per_second))
                S.cap_lat = cap;
        }
        if (S.n_lat < S.cap_lat) {
            if (S.per_second)
                S.lat_sec[S.n_lat] = (uint32_t)((sent_at - S.t0) / 1000000000ull);
            S.lat[S.n_lat++] = ms;
        }
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

/* A metrics reply: keep the instances and GPUs in use for the second it was asked in. */
static void on_metrics(void *ctx, const struct loki_reply *r)
{
    uint64_t asked_at = (uint64_t)(uintptr_t)ctx;
    if (r->status != LOKI_STATUS_OK)
        return;
    pthread_mutex_lock(&S.m);
    struct load_second *sec = second_at(asked_at);
    for (uint32_t i = 0; sec && i < r->n_metrics; i++) {
        if (loki_bytes_eq(r->metrics[i].name, "loki_instances"))
            sec->instances = r->metrics[i].value;
        else if (loki_bytes_eq(r->metrics[i].name, "loki_gpus_in_use"))
            sec->gpus = r->metrics[i].value;
    }
    pthread_mutex_unlock(&S.m);
}

static int cmp_sec_lat(const void *a, const void *b)
{
    const size_t *x = a, *y = b;
    if (S.lat_sec[*x] != S.lat_sec[*y])
        return S.lat_sec[*x] < S.lat_sec[*y] ? -1 : 1;
    return S.lat[*x] < S.lat[*y] ? -1 : S.lat[*x] > S.lat[*y];
}

/* errors: every outcome of a sent query that is not ok, dropped, late, overloaded, timeout. */
static uint64_t count_errors(const struct load_count *n)
{
    const uint64_t *b = n->by_status;
    return b[LOKI_STATUS_ERROR] + b[LOKI_STATUS_BAD_REQUEST] + b[LOKI_STATUS_UNKNOWN_PIPELINE] +
           b[LOKI_STATUS_DRAINING] + b[LOKI_STATUS_CLOSED];
}

/* Queries that did not come back ok, whatever the reason (refused ones included). */
static uint64_t count_not_ok(const struct load_count *n)
{
    return n->attempted - n->by_status[LOKI_STATUS_OK];
}

/*
 * Per-second p50/p99 into @p50/@p99 (n_sec entries each, 0 for a second without
 * replies). Reorders nothing in S; returns -ENOMEM. Called with S.m held.
 */
static int per_second_latency(double *p50, double *p99)
{
    size_t *ix = malloc(sizeof(*ix) * (S.n_lat ? S.n_lat : 1));
    double *buf = malloc(sizeof(*buf) * (S.n_lat ? S.n_lat : 1));
    if (!ix || !buf) {
        free(ix);
        free(buf);
        return -ENOMEM;
    }
    for (size_t i = 0; i < S.n_lat; i++)
        ix[i] = i;
    qsort(ix, S.n_lat, sizeof(*ix), cmp_sec_lat);
    for (size_t k = 0; k < S.n_sec; k++)
        p50[k] = p99[k] = 0;
    for (size_t i = 0; i < S.n_lat;) {
        size_t j = i, n = 0;
        uint32_t sec = S.lat_sec[ix[i]];
        while (j < S.n_lat && S.lat_sec[ix[j]] == sec)
            buf[n++] = S.lat[ix[j++]];
        if (sec < S.n_sec) {
            p50[sec] = pct(buf, n, 0.50);
            p99[sec] = pct(buf, n, 0.99);
        }
        i = j;
    }
    free(ix);
    free(buf);
    return 0;
}

/* Write the per-second CSV; returns 0 or a negative errno. Called with S.m held. */
static int write_csv(const char *path, const double *p50, const double *p99)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -errno;
    fprintf(f, "second,offered_qps,attempted,refused_client,send_failed,sent,ok,dropped,late,"
               "overloaded_server,timeouts,errors,p50_ms,p99_ms,mean_accuracy,instances,gpus\n");
    for (size_t i = 0; i < S.n_sec; i++) {
        const struct load_second *s = &S.sec[i];
        const uint64_t *b = s->n.by_status;
        fprintf(f, "%zu,%.2f,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%.3f,%.3f,%.3f,", i,
                s->rate, (unsigned long long)s->n.attempted,
                (unsigned long long)s->n.refused_client, (unsigned long long)s->n.send_failed,
                (unsigned long long)s->n.sent, (unsigned long long)b[LOKI_STATUS_OK],
                (unsigned long long)b[LOKI_STATUS_DROPPED], (unsigned long long)b[LOKI_STATUS_LATE],
                (unsigned long long)b[LOKI_STATUS_OVERLOADED],
                (unsigned long long)b[LOKI_STATUS_TIMEOUT], (unsigned long long)count_errors(&s->n),
                p50[i], p99[i], s->acc_n ? s->acc_sum / (double)s->acc_n : 0);
        if (s->instances >= 0)
            fprintf(f, "%g,%.2f\n", s->instances, s->gpus);
        else
            fprintf(f, ",\n");
    }
    int rc = ferror(f) ? -EIO : 0;
    if (fclose(f) && !rc)
        rc = -errno;
    return rc;
}

/* Plot the per-second account with the replay's SVG helper. Called with S.m held. */
static int write_plot(const char *path, const char *pipeline, const double *p99)
{
    enum { NY = 7 };
    size_t n = S.n_sec;
    double *v[NY];
    int rc = -ENOMEM, n_gpu = 0;
    for (int k = 0; k < NY; k++)
        v[k] = malloc(sizeof(double) * (n ? n : 1));
    for (int k = 0; k < NY; k++)
        if (!v[k])
            goto out;
    for (size_t i = 0; i < n; i++) {
        const struct load_second *s = &S.sec[i];
        v[0][i] = (double)i;
        v[1][i] = s->rate;
        v[2][i] = (double)s->n.by_status[LOKI_STATUS_OK];
        v[3][i] = (double)count_not_ok(&s->n);
        v[4][i] = p99[i];
        v[5][i] = s->acc_n ? s->acc_sum / (double)s->acc_n : 0;
        /* a second without a metrics answer repeats the previous one */
        v[6][i] = s->gpus >= 0 ? s->gpus : i ? v[6][i - 1] : 0;
        n_gpu += s->gpus >= 0;
    }
    struct loki_svg_series q[3] = {
        {"offered (trace)", v[0], v[1], (int)n},
        {"ok", v[0], v[2], (int)n},
        {"not ok (dropped, late, overloaded, refused, errors)", v[0], v[3], (int)n},
    };
    struct loki_svg_series lat = {"p99 latency", v[0], v[4], (int)n};
    struct loki_svg_series acc = {"mean accuracy", v[0], v[5], (int)n};
    struct loki_svg_series gpu = {"GPUs in use", v[0], v[6], (int)n};
    struct loki_svg_panel panels[4] = {
        {"queries/s", q, 3, 0, 0},
        {"p99 latency (ms)", &lat, 1, 0, 0},
        {"mean accuracy (%)", &acc, 1, 0, 0},
        {"GPUs in use", &gpu, 1, 0, 0},
    };
    char title[160];
    snprintf(title, sizeof(title), "loki load: pipeline %s, per second of wall time", pipeline);
    FILE *f = fopen(path, "w");
    if (!f) {
        rc = -errno;
        goto out;
    }
    rc = loki_svg_panels(f, title, "wall time (s), by send time", panels, n_gpu ? 4 : 3);
    if (fclose(f) && !rc)
        rc = -errno;
out:
    for (int k = 0; k < NY; k++)
        free(v[k]);
    return rc;
}

/* One line of the text summary: the label, the count, and a note in parentheses. */
static void text_row(const char *label, uint64_t v, const char *note)
{
    if (note)
        printf("%-22s%-8llu(%s)\n", label, (unsigned long long)v, note);
    else
        printf("%-22s%llu\n", label, (unsigned long long)v);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loki load [--socket S | --topology F] --trace CSV [--rate-scale X]\n"
            "                 [--time-scale Y] [--seed N] [--pipeline P] [--duration S]\n"
            "                 [--payload-bytes B] [--deadline-ms D] [--timeout-ms T] [--json]\n"
            "                 [--csv OUT] [--plot OUT.svg]\n"
            "  --trace CSV      'second,requests' or 'minute,requests' rows\n"
            "  --rate-scale X   multiply every row's request rate by X (default 1)\n"
            "  --time-scale Y   play Y trace seconds per wall second, keeping each row's\n"
            "                   rate (a day-long per-minute trace at Y=60 takes 24 min)\n"
            "  --seed N         seed of the arrivals and the payload (default 1)\n"
            "  --pipeline P     default: the first pipeline lokid announces\n"
            "  --duration S     stop sending after S wall seconds\n"
            "  --payload-bytes B, --deadline-ms D, --timeout-ms T   per query (64, none, 30000)\n"
            "  --json           the summary as one JSON object (fields: docs/operator.md)\n"
            "  the summary: attempted = sent + refused_client + send_failed, and\n"
            "  sent = ok + dropped + late + overloaded_server + timeouts + errors;\n"
            "  refused_client: not sent, this client had max_outstanding requests in flight;\n"
            "  overloaded_server: lokid answered overloaded; send_failed: the client library\n"
            "  could not send it (connection gone, payload too big): the run stops there\n"
            "  --csv OUT        per wall second (by send time): offered rate, the outcomes as in\n"
            "                   the summary, p50/p99 latency, mean accuracy, instances and\n"
            "                   GPUs in use (from lokid's metrics)\n"
            "  --plot OUT.svg   the same as an SVG chart\n"
            "%s"
            "  -h, --help       this help\n",
            loki__cli_socket_help);
}

int loki_cli_load(int argc, char **argv)
{
    const char *sock_opt = NULL, *topology = NULL, *trace = NULL, *pipeline = NULL, *csv = NULL,
               *plot = NULL;
    double rate_scale = 1, time_scale = 1, duration = 0, deadline_ms = 0, timeout_ms = 30000;
    unsigned long long seed = 1;
    long payload_bytes = 64;
    int json = 0;
    static const struct option opts[] = {
        {"socket", required_argument, NULL, 's'},
        {"topology", required_argument, NULL, 'O'},
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
        {"csv", required_argument, NULL, 'c'},
        {"plot", required_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            sock_opt = optarg;
            break;
        case 'O':
            topology = optarg;
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
        case 'c':
            csv = optarg;
            break;
        case 'P':
            plot = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            return loki__cli_bad_option("load", c, argv);
        }
    }
    if (optind != argc)
        return loki__cli_usage_error("load", "unexpected argument '%s'", argv[optind]);
    if (!trace)
        return loki__cli_usage_error("load", "--trace CSV is required");
    if (!(rate_scale >= 0) || !(time_scale > 0) || payload_bytes < 0 || !(duration >= 0))
        return loki__cli_usage_error("load", "--rate-scale, --duration and --payload-bytes "
                                             "want values >= 0, --time-scale one > 0");
    char sock[LOKI_PATH_MAX];
    if (loki__cli_socket("load", sock_opt, topology, sock, sizeof(sock)))
        return 1;
    size_t n_rows;
    double unit_s;
    double *rows = read_trace(trace, &n_rows, &unit_s);
    if (!rows)
        return 1;
    struct loki_client *cl;
    struct loki_client_opts co = {.max_outstanding = 65536, .name = "loki-load"};
    int rc = loki__cli_connect("load", sock, &co, &cl);
    if (rc < 0) {
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
    /* the announced names live until close; the summary comes after it */
    char pname[LOKI_PROTO_NAME_MAX + 1];
    snprintf(pname, sizeof(pname), "%s", pipeline);
    pipeline = pname;
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
    uint64_t t0 = loki_now_ns(), next_progress = t0 + 1000000000ull, next_metrics = t0;
    S.per_second = csv || plot;
    S.t0 = t0;
    uint64_t stop_at = duration > 0 ? t0 + (uint64_t)(duration * 1e9) : UINT64_MAX;
    double row_wall_s = unit_s / time_scale;
    uint64_t t = t0;
    bool broken = false;
    for (size_t i = 0; i < n_rows && !broken && t < stop_at; i++) {
        double rate = rows[i] / unit_s * rate_scale; /* per wall second */
        if (S.per_second) {
            pthread_mutex_lock(&S.m);
            /* every wall second this row covers offers @rate (a later row wins a shared one) */
            double from = (double)i * row_wall_s, to = (double)(i + 1) * row_wall_s;
            if (duration > 0 && to > duration)
                to = duration;
            for (double k = floor(from); k < to; k++) {
                struct load_second *sec = second_at(t0 + (uint64_t)(k * 1e9));
                if (sec)
                    sec->rate = rate;
            }
            pthread_mutex_unlock(&S.m);
        }
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
            struct load_second *sec = second_at(now);
            struct load_count *per[2] = {&S.n, sec ? &sec->n : NULL};
            for (int k = 0; k < 2 && per[k]; k++) {
                per[k]->attempted++;
                if (rc == 0)
                    per[k]->sent++;
                else if (rc == -EAGAIN)
                    per[k]->refused_client++;
                else
                    per[k]->send_failed++;
            }
            pthread_mutex_unlock(&S.m);
            if (S.per_second && now >= next_metrics) {
                /* best effort: a server without metrics leaves the columns empty */
                (void)loki_client_request(cl, LOKI_MSG_METRICS, 1000, on_metrics,
                                          (void *)(uintptr_t)now, NULL);
                next_metrics = now + 1000000000ull;
            }
            if (rc < 0 && rc != -EAGAIN) {
                fprintf(stderr, "%sloki load: submit: %s\n", tty ? "\n" : "", loki_strerror(rc));
                broken = true;
                break;
            }
            if (tty && now >= next_progress) {
                pthread_mutex_lock(&S.m);
                fprintf(stderr,
                        "\r[%6.1fs] row %zu/%zu  %.1f req/s  sent %llu  ok %llu  dropped %llu  "
                        "late %llu  overloaded (server) %llu  refused (client) %llu ",
                        (double)(now - t0) / 1e9, i + 1, n_rows, rate, (unsigned long long)S.n.sent,
                        (unsigned long long)S.n.by_status[LOKI_STATUS_OK],
                        (unsigned long long)S.n.by_status[LOKI_STATUS_DROPPED],
                        (unsigned long long)S.n.by_status[LOKI_STATUS_LATE],
                        (unsigned long long)S.n.by_status[LOKI_STATUS_OVERLOADED],
                        (unsigned long long)S.n.refused_client);
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
    const struct load_count *n = &S.n;
    const uint64_t *b = n->by_status;
    uint64_t errors = count_errors(n);
    int out_rc = 0;
    if (S.done != n->sent) {
        /* the client library completes every accepted request exactly once, at the latest
         * in loki_client_close(): anything else is its bug, and the summary would not add up */
        fprintf(stderr, "loki load: %llu completions for %llu queries sent\n",
                (unsigned long long)S.done, (unsigned long long)n->sent);
        out_rc = 1;
    }
    if (S.per_second) {
        /* before the sort below, while lat[] and lat_sec[] still pair up */
        double *sp50 = calloc(S.n_sec ? S.n_sec : 1, sizeof(double));
        double *sp99 = calloc(S.n_sec ? S.n_sec : 1, sizeof(double));
        int prc = sp50 && sp99 ? per_second_latency(sp50, sp99) : -ENOMEM;
        if (!prc && csv && (prc = write_csv(csv, sp50, sp99)))
            fprintf(stderr, "loki load: %s: %s\n", csv, loki_strerror(prc));
        else if (!prc && plot && (prc = write_plot(plot, pipeline, sp99)))
            fprintf(stderr, "loki load: %s: %s\n", plot, loki_strerror(prc));
        else if (prc == -ENOMEM)
            fprintf(stderr, "loki load: per-second account: %s\n", loki_strerror(prc));
        out_rc |= prc ? 1 : 0;
        free(sp50);
        free(sp99);
    }
    qsort(S.lat, S.n_lat, sizeof(double), cmp_double);
    double p50 = pct(S.lat, S.n_lat, 0.50), p99 = pct(S.lat, S.n_lat, 0.99);
    double acc = S.acc_n ? S.acc_sum / (double)S.acc_n : 0;
    double acc_ok = b[LOKI_STATUS_OK] ? S.acc_ok_sum / (double)b[LOKI_STATUS_OK] : 0;
    /* GPUs in use: mean and largest of lokid's once-a-second answers (--csv/--plot only) */
    double gpu_sum = 0, gpu_max = 0;
    size_t gpu_n = 0;
    for (size_t i = 0; i < S.n_sec; i++)
        if (S.sec[i].gpus >= 0) {
            gpu_sum += S.sec[i].gpus;
            gpu_max = S.sec[i].gpus > gpu_max ? S.sec[i].gpus : gpu_max;
            gpu_n++;
        }
    if (json) {
        /* one object through jansson (loki/json.h); the pipeline name is escaped there */
        bool oom = false;
        json_t *o = json_object();
#define SET(k, v) loki_json_set(o, k, v, &oom)
        SET("pipeline", loki_json_str(pipeline));
        SET("duration_s", loki_json_fixed(send_s, 3));
        SET("attempted", loki_json_u64(n->attempted));
        SET("refused_client", loki_json_u64(n->refused_client));
        SET("send_failed", loki_json_u64(n->send_failed));
        SET("sent", loki_json_u64(n->sent));
        SET("ok", loki_json_u64(b[LOKI_STATUS_OK]));
        SET("dropped", loki_json_u64(b[LOKI_STATUS_DROPPED]));
        SET("late", loki_json_u64(b[LOKI_STATUS_LATE]));
        SET("overloaded_server", loki_json_u64(b[LOKI_STATUS_OVERLOADED]));
        SET("timeouts", loki_json_u64(b[LOKI_STATUS_TIMEOUT]));
        SET("errors", loki_json_u64(errors));
        SET("p50_ms", loki_json_fixed(p50, 3));
        SET("p99_ms", loki_json_fixed(p99, 3));
        SET("mean_accuracy", loki_json_fixed(acc, 3));
        SET("mean_accuracy_ok", loki_json_fixed(acc_ok, 3));
        if (gpu_n) {
            SET("gpus_mean", loki_json_fixed(gpu_sum / (double)gpu_n, 3));
            SET("gpus_max", loki_json_fixed(gpu_max, 2));
            SET("gpu_samples", loki_json_u64(gpu_n));
        }
#undef SET
        if (oom)
            json_decref(o);
        if (oom || loki_json_print(stdout, o))
            fprintf(stderr, "loki load: cannot print the summary\n");
    } else {
        printf("%-22s%s\n", "pipeline", pipeline);
        printf("%-22s%.1f s\n", "duration", send_s);
        text_row("attempted", n->attempted, "arrivals from the trace");
        text_row("  refused_client", n->refused_client, "not sent: max_outstanding in flight here");
        text_row("  send_failed", n->send_failed, NULL);
        text_row("  sent", n->sent, NULL);
        text_row("    ok", b[LOKI_STATUS_OK], NULL);
        text_row("    dropped", b[LOKI_STATUS_DROPPED], NULL);
        text_row("    late", b[LOKI_STATUS_LATE], NULL);
        text_row("    overloaded_server", b[LOKI_STATUS_OVERLOADED], "lokid answered overloaded");
        text_row("    timeouts", b[LOKI_STATUS_TIMEOUT], NULL);
        text_row("    errors", errors, NULL);
        printf("%-22sp50 %.2f ms  p99 %.2f ms\n", "latency", p50, p99);
        printf("%-22s%.2f (mean over ok+late)\n", "accuracy", acc);
        if (gpu_n)
            printf("%-22smean %.2f, max %.2f (lokid's metrics, once a second)\n", "GPUs",
                   gpu_sum / (double)gpu_n, gpu_max);
    }
    pthread_mutex_unlock(&S.m);
    free(S.lat);
    free(S.lat_sec);
    free(S.sec);
    free(payload);
    free(rows);
    return broken || out_rc ? 1 : 0;
}
