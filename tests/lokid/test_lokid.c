/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lokid end to end with the sim backend, through the client library: every
 * query is answered exactly once, fan-out counts reach the reply, a worker
 * SIGKILLed under load loses no accepted query and comes back, and SIGTERM
 * drains (in-flight queries are answered, lokid exits 0). A burst far over the
 * plan runs overflow batches on the fallback variant (Prometheus counters), and
 * `lokid --worker` refuses a bad --fallback with exit status 2, and so a configuration
 * that is not a sealed snapshot on descriptor 7 (or a --topology file to read).
 */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loki/client.h"
#include "loki/clock.h"
#include "loki/topology.h"
#include "prom.h"

#define MAXQ 20000 /* queries one test may send */

struct run {
    pid_t pid;
    char sock[128];
};

static pid_t current; /* lokid of the running test, killed by teardown if an assert fired */

static int teardown(void **state)
{
    if (current > 0) {
        kill(current, SIGKILL);
        waitpid(current, NULL, 0);
        current = 0;
    }
    return 0;
}

static atomic_int answers[MAXQ];
static atomic_int by_status[LOKI_STATUS_COUNT_];
static atomic_int bad_outputs;
static unsigned want_outputs = 3; /* leaf outputs of an ok reply (small.yaml: fan-out 3) */

static void reset(void)
{
    for (int i = 0; i < MAXQ; i++)
        atomic_store(&answers[i], 0);
    for (int i = 0; i < LOKI_STATUS_COUNT_; i++)
        atomic_store(&by_status[i], 0);
    atomic_store(&bad_outputs, 0);
}

static void sleep_ms(double ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000),
                          .tv_nsec = (long)((ms - 1000 * (long)(ms / 1000)) * 1e6)};
    nanosleep(&ts, NULL);
}

/* Start lokid on tests/lokid/@topo for @demand qps and wait until it reports ready. */
static void start_on(struct run *r, const char *topo, const char *demand, const char *extra)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_non_null(loki_test_tmp_path("lokid.sock"));
    assert_true(snprintf(r->sock, sizeof(r->sock), "%s", loki_test_tmp_path("lokid.sock")) <
                (int)sizeof(r->sock));
    unlink(r->sock);
    r->pid = fork();
    if (r->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
        close(fds[0]);
        char fd[16];
        snprintf(fd, sizeof(fd), "%d", fds[1]);
        const char *argv[16] = {loki_test_bin("bin/lokid"),
                                "--topology",
                                loki_test_src(topo),
                                "--socket",
                                r->sock,
                                "--ready-fd",
                                fd,
                                "--quiet",
                                "--initial-demand",
                                demand};
        int n = 10;
        if (extra)
            argv[n++] = extra;
        argv[n] = NULL;
        execv(argv[0], (char **)argv);
        _exit(127);
    }
    close(fds[1]);
    current = r->pid;
    char buf[16] = {0};
    ssize_t n = read(fds[0], buf, sizeof(buf) - 1); /* blocks until ready or lokid exits */
    close(fds[0]);
    assert_true(n > 0 && !strncmp(buf, "ready", 5));
}

static void start(struct run *r, const char *extra)
{
    start_on(r, "tests/lokid/small.yaml", "200", extra);
}

static int stop(struct run *r, int sig)
{
    int st = 0;
    kill(r->pid, sig);
    assert_int_equal(waitpid(r->pid, &st, 0), r->pid);
    current = 0;
    unlink(r->sock);
    return st;
}

/* Children of @pid (worker processes). */
static int children(pid_t pid, pid_t *out, int max)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pid, (int)pid);
    FILE *f = fopen(path, "r");
    int n = 0;
    if (!f)
        return 0;
    int c;
    while (n < max && fscanf(f, "%d", &c) == 1)
        out[n++] = c;
    fclose(f);
    return n;
}

static void on_reply(const struct loki_reply *rep)
{
    atomic_fetch_add(&by_status[rep->status < LOKI_STATUS_COUNT_ ? rep->status : 0], 1);
    if (rep->status == LOKI_STATUS_OK && rep->n_outputs != want_outputs) {
        fprintf(stderr, "ok reply %llu with %u outputs\n", (unsigned long long)rep->id,
                rep->n_outputs);
        atomic_fetch_add(&bad_outputs, 1);
    }
}

struct sender {
    struct loki_client *c;
    int n;
    int first; /* index of its first query in answers[] */
    double gap_ms;
    const char *pipeline; /* NULL: "small" */
    uint64_t ids[MAXQ];
    atomic_int done;
};

struct ctx {
    struct sender *s;
    int idx;
};

static struct ctx ctxs[MAXQ];

static void on_reply_idx(void *p, const struct loki_reply *rep)
{
    struct ctx *c = p;
    atomic_fetch_add(&answers[c->idx], 1);
    on_reply(rep);
}

static void *send_thread(void *p)
{
    struct sender *s = p;
    static const char payload[32] = "frame";
    for (int i = 0; i < s->n; i++) {
        struct loki_client_req req = {.pipeline = s->pipeline ? s->pipeline : "small",
                                      .payload = payload,
                                      .payload_len = sizeof(payload),
                                      .timeout_ms = 20000};
        int k = s->first + i;
        ctxs[k].s = s;
        ctxs[k].idx = k;
        int rc = loki_client_submit(s->c, &req, on_reply_idx, &ctxs[k], &s->ids[i]);
        if (rc) {
            /* not accepted by the library (connection gone): counts as answered by us */
            atomic_fetch_add(&answers[k], 1);
            atomic_fetch_add(&by_status[LOKI_STATUS_CLOSED], 1);
        }
        if (s->gap_ms > 0)
            sleep_ms(s->gap_ms);
    }
    return NULL;
}

static void wait_answers(int n, double max_ms)
{
    for (double t = 0; t < max_ms; t += 20) {
        int total = 0;
        for (int i = 0; i < LOKI_STATUS_COUNT_; i++)
            total += atomic_load(&by_status[i]);
        if (total >= n)
            return;
        sleep_ms(20);
    }
}

static void assert_exactly_once(int n)
{
    for (int i = 0; i < n; i++) {
        if (atomic_load(&answers[i]) != 1)
            fprintf(stderr, "query %d answered %d times\n", i, atomic_load(&answers[i]));
        assert_int_equal(atomic_load(&answers[i]), 1);
    }
}

static void print_statuses(const char *what)
{
    fprintf(stderr, "%s:", what);
    for (int i = 0; i < LOKI_STATUS_COUNT_; i++)
        if (atomic_load(&by_status[i]))
            fprintf(stderr, " %s=%d", loki_status_name((enum loki_status)i),
                    atomic_load(&by_status[i]));
    fprintf(stderr, "\n");
}

static void test_answers_and_fanout(void **state)
{
    struct run r;
    reset();
    start(&r, NULL);
    static struct sender s;
    memset(&s, 0, sizeof(s));
    assert_int_equal(loki_client_connect(r.sock, NULL, &s.c), 0);
    /* one blocking query: outputs and path */
    struct loki_client_req req = {.pipeline = "small", .payload = "x", .payload_len = 1};
    struct loki_client_result res;
    assert_int_equal(loki_client_infer(s.c, &req, &res), 0);
    assert_int_equal(res.status, LOKI_STATUS_OK);
    assert_int_equal(res.n_outputs, 3);
    assert_true(res.n_paths >= 1);
    assert_non_null(strstr(res.paths[0], ">"));
    assert_true(res.accuracy > 50 && res.accuracy <= 100);
    loki_client_result_fini(&res);
    /* deadlines far past the SLO, up to ones whose nanoseconds overflow a uint64 (2^64 ns
     * is 1.8e13 ms) or a double's range: the SLO applies, answered ok (they were dropped) */
    static const double far[] = {1e9, 1.8446744073709552e13, 1e15, 1e300, DBL_MAX};
    for (size_t k = 0; k < sizeof(far) / sizeof(far[0]); k++) {
        req.deadline_ms = far[k];
        assert_int_equal(loki_client_infer(s.c, &req, &res), 0);
        if (res.status != LOKI_STATUS_OK)
            fprintf(stderr, "deadline_ms %g: %s\n", far[k], loki_status_name(res.status));
        assert_int_equal(res.status, LOKI_STATUS_OK);
        loki_client_result_fini(&res);
    }
    req.deadline_ms = INFINITY; /* not a number of milliseconds: refused by name */
    assert_int_equal(loki_client_infer(s.c, &req, &res), 0);
    assert_int_equal(res.status, LOKI_STATUS_BAD_REQUEST);
    assert_non_null(strstr(res.error, "deadline_ms"));
    loki_client_result_fini(&res);
    req.deadline_ms = 0;
    /* priority: refused by name, not accepted and ignored */
    req.has_priority = true;
    req.priority = 2;
    assert_int_equal(loki_client_infer(s.c, &req, &res), 0);
    assert_int_equal(res.status, LOKI_STATUS_BAD_REQUEST);
    assert_non_null(strstr(res.error, "field 'priority': not supported"));
    loki_client_result_fini(&res);
    req.has_priority = false;
    /* unknown pipeline: explicit error, connection still usable */
    req.pipeline = "nope";
    assert_int_equal(loki_client_infer(s.c, &req, &res), 0);
    assert_int_equal(res.status, LOKI_STATUS_UNKNOWN_PIPELINE);
    loki_client_result_fini(&res);

    s.n = 2000;
    s.gap_ms = 1; /* ~600-900 qps on this machine */
    pthread_t th;
    pthread_create(&th, NULL, send_thread, &s);
    pthread_join(th, NULL);
    wait_answers(s.n, 30000);
    print_statuses("answers");
    assert_exactly_once(s.n);
    assert_int_equal(atomic_load(&bad_outputs), 0);
    /* this machine may be busy: most, not all, make the 200 ms SLO; none go unanswered */
    assert_true(atomic_load(&by_status[LOKI_STATUS_OK]) > s.n / 2);
    assert_int_equal(atomic_load(&by_status[LOKI_STATUS_TIMEOUT]), 0);
    loki_client_close(s.c);
    int st = stop(&r, SIGTERM);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_worker_sigkill(void **state)
{
    struct run r;
    reset();
    start(&r, NULL);
    pid_t kids[64];
    int before = children(r.pid, kids, 64);
    assert_true(before >= 2);
    static struct sender s;
    memset(&s, 0, sizeof(s));
    assert_int_equal(loki_client_connect(r.sock, NULL, &s.c), 0);
    s.n = 3000;
    s.gap_ms = 1;
    pthread_t th;
    pthread_create(&th, NULL, send_thread, &s);
    sleep_ms(800);
    /* kill two workers mid-load, one after the other */
    int k = children(r.pid, kids, 64);
    assert_true(k >= 2);
    kill(kids[0], SIGKILL);
    sleep_ms(400);
    k = children(r.pid, kids, 64);
    kill(kids[k - 1], SIGKILL);
    pthread_join(th, NULL);
    wait_answers(s.n, 30000);
    print_statuses("answers with SIGKILLed workers");
    assert_exactly_once(s.n);
    /* most survive (re-run on the restarted worker); the rest get an explicit status
     * (overloaded while a task has no live instance, dropped, error), never silence */
    assert_true(atomic_load(&by_status[LOKI_STATUS_OK]) > s.n * 6 / 10);
    assert_int_equal(atomic_load(&by_status[LOKI_STATUS_TIMEOUT]), 0);
    assert_int_equal(atomic_load(&by_status[LOKI_STATUS_CLOSED]), 0);
    /* the instances come back */
    int after = 0;
    for (int t = 0; t < 100 && after < before; t++) {
        sleep_ms(100);
        after = children(r.pid, kids, 64);
    }
    assert_true(after >= before);
    /* each kill counted once against its variant; they add up to the two */
    char *m = metrics_text(r.sock);
    double crashed = prom_sum(m, "loki_worker_crashes_total{");
    free(m);
    fprintf(stderr, "worker crashes counted: %.0f\n", crashed);
    assert_true(crashed == 2);
    loki_client_close(s.c);
    int st = stop(&r, SIGTERM);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/*
 * A worker that stops making progress (SIGSTOP) under load: its batches were held until the
 * client gave up (20 s); now lokid kills it once it is well past its batch's profiled time,
 * re-runs its batches elsewhere and restarts it, so every query is answered long before its
 * timeout.
 */
static void test_worker_sigstop(void **state)
{
    struct run r;
    reset();
    start(&r, NULL);
    static struct sender s;
    memset(&s, 0, sizeof(s));
    assert_int_equal(loki_client_connect(r.sock, NULL, &s.c), 0);
    s.n = 1500;
    s.gap_ms = 1;
    pthread_t th;
    pthread_create(&th, NULL, send_thread, &s);
    sleep_ms(500);
    pid_t kids[64];
    int k = children(r.pid, kids, 64);
    assert_true(k >= 2);
    pid_t stopped = kids[k - 1];
    kill(stopped, SIGSTOP);
    pthread_join(th, NULL);
    wait_answers(s.n, 15000); /* the client's timeout is 20 s */
    print_statuses("answers with a SIGSTOPped worker");
    assert_exactly_once(s.n);
    assert_int_equal(atomic_load(&by_status[LOKI_STATUS_TIMEOUT]), 0);
    assert_int_equal(atomic_load(&by_status[LOKI_STATUS_CLOSED]), 0);
    assert_true(atomic_load(&by_status[LOKI_STATUS_OK]) > 0);
    /* the stopped worker was killed (a stopped process does not exit on its own) */
    int st;
    bool gone = false;
    for (int t = 0; t < 100 && !gone; t++) {
        k = children(r.pid, kids, 64);
        gone = true;
        for (int i = 0; i < k; i++)
            gone &= kids[i] != stopped;
        if (!gone)
            sleep_ms(20);
    }
    assert_true(gone);
    loki_client_close(s.c);
    st = stop(&r, SIGTERM);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_sigterm_drains(void **state)
{
    struct run r;
    reset();
    start(&r, NULL);
    static struct sender s;
    memset(&s, 0, sizeof(s));
    assert_int_equal(loki_client_connect(r.sock, NULL, &s.c), 0);
    s.n = 1500;
    s.gap_ms = 0.5;
    pthread_t th;
    pthread_create(&th, NULL, send_thread, &s);
    sleep_ms(300);
    kill(r.pid, SIGTERM); /* while queries are in flight and more keep coming */
    pthread_join(th, NULL);
    wait_answers(s.n, 20000);
    print_statuses("answers across SIGTERM");
    assert_exactly_once(s.n);
    /* before the drain: served; after: "draining" or refused at connect time ("closed") */
    assert_true(atomic_load(&by_status[LOKI_STATUS_OK]) > 0);
    assert_true(atomic_load(&by_status[LOKI_STATUS_DRAINING]) +
                    atomic_load(&by_status[LOKI_STATUS_CLOSED]) >
                0);
    assert_int_equal(atomic_load(&by_status[LOKI_STATUS_TIMEOUT]), 0);
    int st = 0;
    assert_int_equal(waitpid(r.pid, &st, 0), r.pid);
    current = 0;
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    loki_client_close(s.c);
    unlink(r.sock);
}

#define VARIANT_FB(task, var)                                                                      \
    "loki_variant_fallback_total{pipeline=\"small\",task=\"" task "\",variant=\"" var "\"}"

/*
 * A burst far over the plan (small.yaml at 200 qps: one det-best instance, 667 qps planned)
 * with no gap between queries: the detect queue outgrows what the planned batches clear by
 * the head's deadline at once, so the router runs batches on det-fast, the fallback loaded
 * in the same worker. Nothing is timed: the burst is thousands of planned batch slots deep
 * however slow this machine is, and with `planner: {fallback: false}` both counters stay 0.
 */
static void test_fallback_burst(void **state)
{
    struct run r;
    reset();
    start(&r, NULL);
    /* the whole burst in flight at once: 1024 per connection, 8192 in small.yaml's frontend */
    enum { CONNS = 4, PER_CONN = 1000, N = CONNS * PER_CONN };
    static struct sender s[CONNS];
    pthread_t th[CONNS];
    memset(s, 0, sizeof(s));
    for (int k = 0; k < CONNS; k++) {
        assert_int_equal(loki_client_connect(r.sock, NULL, &s[k].c), 0);
        s[k].n = PER_CONN;
        s[k].first = k * PER_CONN;
    }
    for (int k = 0; k < CONNS; k++)
        pthread_create(&th[k], NULL, send_thread, &s[k]);
    for (int k = 0; k < CONNS; k++)
        pthread_join(th[k], NULL);
    wait_answers(N, 60000);
    print_statuses("answers to a burst");
    assert_exactly_once(N);
    /* batches run on the fallback come back with det-fast's fan-out (3), no worker error */
    assert_int_equal(atomic_load(&bad_outputs), 0);
    assert_true(atomic_load(&by_status[LOKI_STATUS_OK]) > 0);
    assert_int_equal(atomic_load(&by_status[LOKI_STATUS_ERROR]), 0);
    assert_int_equal(atomic_load(&by_status[LOKI_STATUS_TIMEOUT]), 0);
    assert_int_equal(atomic_load(&by_status[LOKI_STATUS_CLOSED]), 0);

    char *m = metrics_text(r.sock);
    double req_fb = prom_value(m, "loki_request_fallback_total{pipeline=\"small\"}");
    double det_fast = prom_value(m, VARIANT_FB("detect", "det-fast"));
    double det_best = prom_value(m, VARIANT_FB("detect", "det-best"));
    double cls_fast = prom_value(m, VARIANT_FB("classify", "cls-fast"));
    double det_fast_req =
        prom_value(m, "loki_variant_request_total{pipeline=\"small\",task=\"detect\","
                      "variant=\"det-fast\"}");
    double det_fast_ran =
        prom_value(m, "loki_variant_success_total{pipeline=\"small\",task=\"detect\","
                      "variant=\"det-fast\"}");
    free(m);
    fprintf(stderr,
            "fallback: %.0f sub-queries; det-fast %.0f (ran %.0f, routed to its own instances "
            "%.0f), det-best %.0f, cls-fast %.0f\n",
            req_fb, det_fast, det_fast_ran, det_fast_req, det_best, cls_fast);
    assert_true(req_fb > 0);
    assert_true(det_fast > 0);
    /* the worker ran them on det-fast (no error above): the first of many batches is long
     * back by the time the last of 4000 queries is answered */
    assert_true(det_fast_ran > 0);
    assert_true(det_fast <= req_fb);
    assert_true(det_best == 0); /* the slower variant is nobody's fallback */
    for (int k = 0; k < CONNS; k++)
        loki_client_close(s[k].c);
    int st = stop(&r, SIGTERM);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/*
 * Batches as large as the topology allows (4096, LOKI_MAX_BATCH), end to end: bigbatch.yaml
 * profiles only batch 1 and 4096 and is planned for 30000 qps, so the plan runs batch 4096;
 * a burst of 16384 queries (4 full detect batches, 8 classify ones) is answered exactly once,
 * all ok with both leaf outputs, and the batch-size histogram shows batches over 2048.
 */
static void test_max_batch(void **state)
{
    struct run r;
    reset();
    want_outputs = 2;
    start_on(&r, "tests/lokid/bigbatch.yaml", "30000", NULL);
    enum { CONNS = 16, PER_CONN = 1024, N = CONNS * PER_CONN };
    static struct sender s[CONNS];
    pthread_t th[CONNS];
    memset(s, 0, sizeof(s));
    for (int k = 0; k < CONNS; k++) {
        assert_int_equal(loki_client_connect(r.sock, NULL, &s[k].c), 0);
        s[k].n = PER_CONN;
        s[k].first = k * PER_CONN;
        s[k].pipeline = "big";
    }
    for (int k = 0; k < CONNS; k++)
        pthread_create(&th[k], NULL, send_thread, &s[k]);
    for (int k = 0; k < CONNS; k++)
        pthread_join(th[k], NULL);
    wait_answers(N, 120000);
    print_statuses("answers at batch 4096");
    assert_exactly_once(N);
    assert_int_equal(atomic_load(&bad_outputs), 0);
    assert_int_equal(atomic_load(&by_status[LOKI_STATUS_OK]), N);

    char *m = metrics_text(r.sock);
    const char *det = "pipeline=\"big\",task=\"detect\",variant=\"det\"";
    const char *cls = "pipeline=\"big\",task=\"classify\",variant=\"cls\"";
    char series[256];
    snprintf(series, sizeof(series), "loki_variant_batch_max{%s}", det);
    double det_max = prom_value(m, series);
    snprintf(series, sizeof(series), "loki_batch_size_bucket{%s,le=\"2048\"}", det);
    double det_small = prom_value(m, series);
    snprintf(series, sizeof(series), "loki_batch_size_count{%s}", det);
    double det_batches = prom_value(m, series);
    snprintf(series, sizeof(series), "loki_batch_size_bucket{%s,le=\"2048\"}", cls);
    double cls_small = prom_value(m, series);
    snprintf(series, sizeof(series), "loki_batch_size_count{%s}", cls);
    double cls_batches = prom_value(m, series);
    free(m);
    fprintf(stderr,
            "batch 4096: det planned %.0f, %.0f of %.0f batches <= 2048; cls %.0f of %.0f\n",
            det_max, det_small, det_batches, cls_small, cls_batches);
    assert_true(det_max == 4096);
    assert_true(det_batches > det_small); /* at least one detect batch over 2048 */
    assert_true(cls_batches > cls_small);
    for (int k = 0; k < CONNS; k++)
        loki_client_close(s[k].c);
    int st = stop(&r, SIGTERM);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    want_outputs = 3;
}

static atomic_int cancel_status[3];

static void on_cancel_reply(void *ctx, const struct loki_reply *rep)
{
    atomic_store(&cancel_status[(intptr_t)ctx], (int)rep->status + 1);
}

/*
 * "cancel": of three queries sent at once to a 200 ms stage, the third still waits in the
 * router's queue and is answered "cancelled" at once; the first is running, so its cancel
 * changes nothing and it is answered ok; a cancel for an id not in flight is ignored. Each
 * query gets exactly one reply.
 */
static void test_cancel(void **state)
{
    struct run r;
    start_on(&r, "tests/lokid/slow.yaml", "1", NULL);
    struct loki_client *c;
    assert_int_equal(loki_client_connect(r.sock, NULL, &c), 0);
    struct loki_client_stats st0, st;
    loki_client_stats(c, &st0); /* the hello is one completion already */
    uint64_t ids[3];
    for (int i = 0; i < 3; i++) {
        atomic_store(&cancel_status[i], 0);
        struct loki_client_req req = {.pipeline = "slow", .payload = "x", .payload_len = 1};
        assert_int_equal(loki_client_submit(c, &req, on_cancel_reply, (void *)(intptr_t)i, &ids[i]),
                         0);
    }
    sleep_ms(50); /* the first is batched by now, the third cannot be (200 ms per batch) */
    uint64_t t0 = loki_now_ns();
    assert_int_equal(loki_client_cancel(c, ids[2]), 0);
    assert_int_equal(loki_client_cancel(c, ids[0]), 0);
    assert_int_equal(loki_client_cancel(c, 987654321), 0); /* not in flight: ignored */
    while (!atomic_load(&cancel_status[2]) && loki_now_ns() - t0 < 5000000000ull)
        sleep_ms(1);
    double ms = (double)(loki_now_ns() - t0) / 1e6;
    assert_int_equal(atomic_load(&cancel_status[2]) - 1, LOKI_STATUS_CANCELLED);
    assert_true(ms < 150); /* at once, not after the batches ahead of it */
    for (int i = 0; i < 2; i++) {
        while (!atomic_load(&cancel_status[i]) && loki_now_ns() - t0 < 5000000000ull)
            sleep_ms(5);
        assert_int_equal(atomic_load(&cancel_status[i]) - 1, LOKI_STATUS_OK);
    }
    sleep_ms(300); /* no second reply arrives for the cancelled one */
    loki_client_stats(c, &st);
    assert_int_equal(st.late_replies, 0);
    assert_int_equal(st.completed - st0.completed, 3);
    loki_client_close(c);
    int stp = stop(&r, SIGTERM);
    assert_true(WIFEXITED(stp) && WEXITSTATUS(stp) == 0);
}

enum cfg_kind { CFG_SEALED, CFG_UNSEALED, CFG_NONE, CFG_FILE_ARG };

/*
 * Exit status of `lokid --worker` on small.yaml's detect task with @variant and @fallback,
 * given small.yaml as @how says: lokid's sealed snapshot on descriptor 7, the same bytes in a
 * memfd that is not sealed, nothing, or only as `--topology FILE` (what workers once read).
 */
static int worker_exit_cfg(const char *variant, const char *fallback, enum cfg_kind how)
{
    const char *argv[] = {loki_test_bin("bin/lokid"),
                          "--worker",
                          "--pipeline",
                          "0",
                          "--task",
                          "0",
                          "--variant",
                          variant,
                          "--fallback",
                          fallback,
                          "--batch",
                          "8",
                          how == CFG_FILE_ARG ? "--topology" : NULL,
                          loki_test_src("tests/lokid/small.yaml"),
                          NULL};
    char *text, err[256];
    size_t len;
    int cfg = -1;
    assert_int_equal(loki_config_read(loki_test_src("tests/lokid/small.yaml"), &text, &len, NULL,
                                      err, sizeof(err)),
                     0);
    if (how == CFG_SEALED) {
        assert_int_equal(loki_config_seal(text, len, &cfg), 0);
    } else if (how == CFG_UNSEALED) {
        cfg = memfd_create("loki-config", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        assert_true(cfg >= 0);
        assert_int_equal(write(cfg, text, len), (ssize_t)len);
    }
    free(text);
    struct rlimit rl;
    int max_fd =
        getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536 ? (int)rl.rlim_cur : 65536;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* no rings on fds 3..6: a worker whose arguments pass fails to attach them (exit 1) */
        if (cfg >= 0 && dup2(cfg, 7) != 7)
            _exit(126);
        for (int fd = 3; fd < max_fd; fd++)
            if (fd != 7 || cfg < 0)
                close(fd);
        execv(argv[0], (char **)argv);
        _exit(127);
    }
    if (cfg >= 0)
        close(cfg);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static int worker_exit(const char *variant, const char *fallback)
{
    return worker_exit_cfg(variant, fallback, CFG_SEALED);
}

static void test_worker_bad_fallback(void **state)
{
    /* detect has det-fast (0) and det-best (1); --fallback is 0 (none) or 1 + a variant */
    assert_int_equal(worker_exit("1", "2"), 2);  /* its own variant */
    assert_int_equal(worker_exit("0", "1"), 2);  /* likewise */
    assert_int_equal(worker_exit("1", "3"), 2);  /* past the task's variants */
    assert_int_equal(worker_exit("1", "17"), 2); /* past LOKI_MAX_VARIANTS */
    assert_int_equal(worker_exit("1", "-1"), 2);
    assert_int_equal(worker_exit("1", "x"), 2);
    /* the same command with a good fallback (or none) passes the parser */
    assert_int_equal(worker_exit("1", "1"), 1);
    assert_int_equal(worker_exit("0", "2"), 1);
    assert_int_equal(worker_exit("1", "0"), 1);
    /* the configuration: lokid's sealed snapshot or nothing; never a file of its own */
    assert_int_equal(worker_exit_cfg("1", "0", CFG_UNSEALED), 2);
    assert_int_equal(worker_exit_cfg("1", "0", CFG_NONE), 2);
    assert_int_equal(worker_exit_cfg("1", "0", CFG_FILE_ARG), 2);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_answers_and_fanout, teardown),
        cmocka_unit_test_teardown(test_worker_sigkill, teardown),
        cmocka_unit_test_teardown(test_worker_sigstop, teardown),
        cmocka_unit_test_teardown(test_sigterm_drains, teardown),
        cmocka_unit_test_teardown(test_fallback_burst, teardown),
        cmocka_unit_test_teardown(test_max_batch, teardown),
        cmocka_unit_test_teardown(test_cancel, teardown),
        cmocka_unit_test(test_worker_bad_fallback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
