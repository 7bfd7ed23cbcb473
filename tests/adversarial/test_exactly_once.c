/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Exactly once under attack: one lokid (sim backend, detect -> classify with fan-out 3) and
 * everything at once: 1200 connections held open, each sending queries on raw sockets; the
 * per-uid connection cap probed; client-library senders with 10x overload bursts; a loop of
 * clients that connect, send a few queries and close without reading; a worker SIGKILLed and
 * another SIGSTOPped mid-load (lokid kills a stalled worker and answers or re-runs its
 * queries); a SIGTERM drain while queries keep coming. Every query is counted by its id:
 * each one lokid accepted is answered exactly once (queries the client library refused at
 * send time, and those the drain never read, are counted apart). Nothing is timed: the
 * checks are on counts, and each wait is bounded only to fail rather than hang.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "adv.h"
#include "loki/client.h"

#define N_RAW 1200        /* connections held open, raw sockets */
#define RAW_ROUNDS 2      /* queries each of them sends */
#define CAP_PER_UID 1300  /* frontend.max_connections_per_uid */
#define CAP_ALL 1400      /* frontend.max_connections */
#define N_LIB 4           /* client-library connections */
#define MAXQ 60000        /* client-library queries, at most */
#define RAW_BASE 1000000u /* raw query ids: RAW_BASE + index */
#define BURST 2000        /* queries of one overload burst, sent without a gap */

static const char topology[] =
    "gpus: {count: 4, memory_mb: 16384}\n"
    "planner: {interval_ms: 500, min_dwell_s: 2}\n"
    "frontend: {max_inflight: 8192, max_connections: 1400, max_connections_per_uid: 1300,\n"
    "           idle_timeout_s: 600}\n"
    "pipelines:\n"
    "  - name: small\n"
    "    slo_ms: 200\n"
    "    tasks:\n"
    "      - name: detect\n"
    "        children: [classify]\n"
    "        variants:\n"
    "          - {name: det-fast, accuracy: 80, startup_ms: 50, batch_sizes: [1, 4, 8],\n"
    "             latency_ms: [2, 4, 6], fanout: {classify: {mean: 3, dist: constant}}}\n"
    "          - {name: det-best, accuracy: 100, startup_ms: 50, batch_sizes: [1, 4, 8],\n"
    "             latency_ms: [4, 8, 12], fanout: {classify: {mean: 3, dist: constant}}}\n"
    "      - name: classify\n"
    "        variants:\n"
    "          - {name: cls-fast, accuracy: 90, startup_ms: 50, batch_sizes: [1, 8, 16],\n"
    "             latency_ms: [1, 3, 5]}\n"
    "          - {name: cls-best, accuracy: 100, startup_ms: 50, batch_sizes: [1, 8, 16],\n"
    "             latency_ms: [2, 5, 8]}\n";

static struct adv_lokid lokid;

/* ---- client-library queries: counted per index (the callback's ctx) -------------------- */

static struct loki_client *lib[N_LIB];
static atomic_int lib_next;                /* next query index */
static atomic_int lib_answers[MAXQ];       /* completions per query */
static atomic_uchar lib_closed[MAXQ];      /* completed "closed" (the connection ended) */
static atomic_uchar lib_before_term[MAXQ]; /* sent in full before lokid got SIGTERM */
static atomic_int lib_status[LOKI_STATUS_COUNT_];
static atomic_int lib_refused_full, lib_refused_gone, lib_refused_other; /* at send time */
static atomic_bool term_sent;
static atomic_bool stop_senders;

static void on_lib_reply(void *ctx, const struct loki_reply *rep)
{
    int i = (int)(intptr_t)ctx;
    atomic_fetch_add(&lib_answers[i], 1);
    atomic_fetch_add(&lib_status[rep->status < LOKI_STATUS_COUNT_ ? rep->status : 0], 1);
    if (rep->status == LOKI_STATUS_CLOSED)
        atomic_store(&lib_closed[i], 1);
}

/* One query on @c; false once MAXQ are used up. */
static bool lib_send(struct loki_client *c)
{
    static const char payload[48] = "frame";
    int i = atomic_fetch_add(&lib_next, 1);
    if (i >= MAXQ)
        return false;
    struct loki_client_req req = {.pipeline = "small",
                                  .payload = payload,
                                  .payload_len = sizeof(payload),
                                  .timeout_ms = 45000};
    int rc = loki_client_submit(c, &req, on_lib_reply, (void *)(intptr_t)i, NULL);
    if (rc == 0) {
        /* read after the send returned: 0 means it was written before the SIGTERM */
        if (!atomic_load(&term_sent))
            atomic_store(&lib_before_term[i], 1);
    } else {
        /* never accepted: no callback will come; counted apart */
        atomic_fetch_add(&lib_answers[i], 1);
        atomic_fetch_add(rc == -EAGAIN  ? &lib_refused_full
                         : rc == -EPIPE ? &lib_refused_gone
                                        : &lib_refused_other,
                         1);
    }
    return true;
}

struct steady {
    struct loki_client *c;
    double gap_ms;
};

static void *steady_thread(void *p)
{
    struct steady *s = p;
    while (!atomic_load(&stop_senders) && lib_send(s->c))
        adv_sleep_ms(s->gap_ms);
    return NULL;
}

/* 10x overload: bursts of BURST queries with no gap (the plan is for 200 qps), then a rest. */
static void *burst_thread(void *p)
{
    (void)p;
    for (int b = 0; !atomic_load(&stop_senders); b++) {
        for (int k = 0; k < BURST; k++)
            if (!lib_send(lib[2 + (k & 1)]))
                return NULL;
        for (int t = 0; t < 25 && !atomic_load(&stop_senders); t++)
            adv_sleep_ms(100);
    }
    return NULL;
}

/* ---- fast reconnects: connect, send a few, close without reading ----------------------- */

static atomic_int reconnect_cycles, reconnect_refused;

static void *reconnect_thread(void *p)
{
    const char *sock = p;
    static const char payload[16] = "r";
    for (uint64_t cycle = 0; !atomic_load(&stop_senders); cycle++) {
        int fd = adv_connect(sock);
        if (fd < 0) {
            atomic_fetch_add(&reconnect_refused, 1);
            adv_sleep_ms(5);
            continue;
        }
        int n = 1 + (int)(cycle % 4); /* 1 to 4 queries */
        for (int k = 0; k < n; k++) {
            struct loki_request q;
            loki_request_init(&q);
            q.type = LOKI_MSG_INFER;
            q.id = cycle * 8 + (uint64_t)k;
            q.pipeline = loki_bytes_str("small");
            q.payload.ptr = (const uint8_t *)payload;
            q.payload.len = sizeof(payload);
            if (adv_send_request(fd, &q))
                break;
        }
        if (cycle % 5 == 4) { /* and sometimes half a frame on top */
            static const uint8_t half[] = {0, 0, 0, 40, 0x85, 0xa4};
            (void)adv_send_all(fd, half, sizeof(half));
        }
        close(fd);
        atomic_fetch_add(&reconnect_cycles, 1);
        adv_sleep_ms(3);
    }
    return NULL;
}

/* ---- 1200 connections on raw sockets: one thread sends and reads them all -------------- */

#define RAW_RBUF 16384

struct raw_conn {
    int fd;
    size_t len;
    uint8_t buf[RAW_RBUF];
};

static struct raw_conn *raw;
static atomic_int raw_answers[N_RAW * RAW_ROUNDS];
static atomic_int raw_status[LOKI_STATUS_COUNT_];
static atomic_int raw_received, raw_strays, raw_eofs, raw_send_errors;
static atomic_int raw_round_wanted; /* rounds the thread is told to send */
static atomic_bool raw_stop;

static void raw_send(int k, int round)
{
    static const char payload[32] = "held";
    struct loki_request q;
    loki_request_init(&q);
    q.type = LOKI_MSG_INFER;
    q.id = RAW_BASE + (uint64_t)round * N_RAW + (uint64_t)k;
    q.pipeline = loki_bytes_str("small");
    q.payload.ptr = (const uint8_t *)payload;
    q.payload.len = sizeof(payload);
    if (adv_send_request(raw[k].fd, &q))
        atomic_fetch_add(&raw_send_errors, 1);
}

/* Read what @k has and count every reply; false when the connection ended. */
static bool raw_drain(int k)
{
    struct raw_conn *c = &raw[k];
    static struct loki_reply rep; /* this thread's only */
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->len, RAW_RBUF - c->len, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        if (n <= 0)
            return false;
        c->len += (size_t)n;
        size_t off = 0;
        for (;;) {
            const uint8_t *body;
            uint32_t blen;
            ssize_t f =
                loki_proto_frame_next(c->buf + off, c->len - off, RAW_RBUF - 4, &body, &blen);
            if (f == 0)
                break;
            char err[LOKI_PROTO_ERR_MAX];
            rep.node_buf = NULL;
            rep.node_cap = 0;
            if (f < 0 || loki_proto_decode_reply(body, blen, &rep, err, sizeof(err))) {
                atomic_fetch_add(&raw_strays, 1);
                return false;
            }
            off += (size_t)f;
            uint64_t idx = rep.id - RAW_BASE;
            if (!rep.has_id || rep.type != LOKI_MSG_INFER || rep.id < RAW_BASE ||
                idx >= (uint64_t)N_RAW * RAW_ROUNDS || idx % N_RAW != (uint64_t)k) {
                fprintf(stderr, "raw connection %d: stray frame (type %d, id %llu, %s: %.*s)\n", k,
                        (int)rep.type, (unsigned long long)rep.id, loki_status_name(rep.status),
                        (int)rep.error.len, (const char *)rep.error.ptr);
                atomic_fetch_add(&raw_strays, 1);
                continue;
            }
            atomic_fetch_add(&raw_answers[idx], 1);
            atomic_fetch_add(&raw_status[rep.status < LOKI_STATUS_COUNT_ ? rep.status : 0], 1);
            atomic_fetch_add(&raw_received, 1);
        }
        memmove(c->buf, c->buf + off, c->len - off);
        c->len -= off;
    }
    return true;
}

static void *raw_thread(void *p)
{
    (void)p;
    static struct pollfd pf[N_RAW];
    int sent_rounds = 0;
    for (int k = 0; k < N_RAW; k++)
        pf[k] = (struct pollfd){raw[k].fd, POLLIN, 0};
    while (!atomic_load(&raw_stop)) {
        if (sent_rounds < atomic_load(&raw_round_wanted)) {
            for (int k = 0; k < N_RAW; k++)
                raw_send(k, sent_rounds);
            sent_rounds++;
        }
        if (atomic_load(&raw_received) >= sent_rounds * N_RAW && sent_rounds == RAW_ROUNDS)
            break;
        if (poll(pf, N_RAW, 50) <= 0)
            continue;
        for (int k = 0; k < N_RAW; k++) {
            if (!pf[k].revents)
                continue;
            if (!raw_drain(k)) {
                atomic_fetch_add(&raw_eofs, 1);
                pf[k].fd = -1; /* poll ignores it from now on */
            }
        }
    }
    return NULL;
}

/* Open the N_RAW connections and make sure each is admitted (a ping answered). */
static void raw_open(const char *sock)
{
    static uint8_t buf[4096];
    static struct loki_reply rep;
    raw = calloc(N_RAW, sizeof(*raw));
    assert_non_null(raw);
    for (int k = 0; k < N_RAW; k++) {
        raw[k].fd = adv_connect(sock);
        if (raw[k].fd < 0)
            fail_msg("connection %d: %s", k, strerror(-raw[k].fd));
        struct loki_request q;
        loki_request_init(&q);
        q.type = LOKI_MSG_PING;
        q.has_id = true;
        q.id = (uint64_t)k;
        assert_int_equal(adv_send_request(raw[k].fd, &q), 0);
    }
    for (int k = 0; k < N_RAW; k++) {
        int rc = adv_read_reply(raw[k].fd, buf, sizeof(buf), &rep, 20000);
        if (rc || rep.type != LOKI_MSG_PING || rep.id != (uint64_t)k)
            fail_msg("connection %d: no ping reply (rc %d, type %d, %.*s)", k, rc, (int)rep.type,
                     (int)rep.error.len, (const char *)rep.error.ptr);
    }
}

/*
 * With @open connections of ours admitted, connections past the per-uid cap are refused with
 * an error frame naming it, and the ones below it are served. Closes what it opened.
 */
static void probe_cap(const char *sock, int open)
{
    static uint8_t buf[4096];
    static struct loki_reply rep;
    int fds[CAP_ALL], n = 0, served = 0;
    char want[96];
    snprintf(want, sizeof(want), "too many connections from uid %u (limit %d)", geteuid(),
             CAP_PER_UID);
    for (; n < CAP_PER_UID - open + 3; n++) {
        fds[n] = adv_connect(sock);
        assert_true(fds[n] >= 0);
        struct loki_request q;
        loki_request_init(&q);
        q.type = LOKI_MSG_PING;
        q.has_id = true;
        q.id = 7;
        (void)adv_send_request(fds[n], &q); /* a refused one may be closed already */
        assert_int_equal(adv_read_reply(fds[n], buf, sizeof(buf), &rep, 20000), 0);
        if (rep.type == LOKI_MSG_PING) {
            assert_int_equal(rep.status, LOKI_STATUS_OK);
            assert_int_equal(n, served); /* nothing is served after a refusal */
            served++;
        } else {
            assert_int_equal(rep.type, LOKI_MSG_NONE);
            assert_int_equal(rep.status, LOKI_STATUS_OVERLOADED);
            if (!loki_bytes_eq(rep.error, want))
                fail_msg("refused with '%.*s', wanted '%s'", (int)rep.error.len,
                         (const char *)rep.error.ptr, want);
            assert_true(adv_at_eof(fds[n], 10000));
        }
    }
    fprintf(stderr, "cap: %d connections open, %d more served, %d refused at %d per uid\n", open,
            served, n - served, CAP_PER_UID);
    assert_int_equal(served, CAP_PER_UID - open);
    for (int k = 0; k < n; k++)
        close(fds[k]);
}

static int n_lib_answered(void)
{
    int n = atomic_load(&lib_next) < MAXQ ? atomic_load(&lib_next) : MAXQ, done = 0;
    for (int i = 0; i < n; i++)
        done += atomic_load(&lib_answers[i]) > 0;
    return done;
}

static bool wait_lib(double max_ms)
{
    double end = adv_now_ms() + max_ms;
    int n = atomic_load(&lib_next) < MAXQ ? atomic_load(&lib_next) : MAXQ;
    while (n_lib_answered() < n && adv_now_ms() < end)
        adv_sleep_ms(50);
    return n_lib_answered() == n;
}

static void print_statuses(const char *what, atomic_int *st)
{
    fprintf(stderr, "%s:", what);
    for (int i = 0; i < LOKI_STATUS_COUNT_; i++)
        if (atomic_load(&st[i]))
            fprintf(stderr, " %s=%d", loki_status_name((enum loki_status)i), atomic_load(&st[i]));
    fprintf(stderr, "\n");
}

static bool pid_gone(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return true;
    char line[512], state = '?';
    if (fgets(line, sizeof(line), f)) {
        char *p = strrchr(line, ')');
        if (p && p[1] == ' ')
            state = p[2];
    }
    fclose(f);
    return state == 'Z' || state == 'X';
}

static void test_exactly_once_under_attack(void **state)
{
    (void)state;
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < 4096) { /* 1200 of ours and as many in lokid, which inherits it */
        rl.rlim_cur = rl.rlim_max < 8192 ? rl.rlim_max : 8192;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < 2 * N_RAW) {
        fprintf(stderr, "RLIMIT_NOFILE is %llu here, %d connections need more: skipped\n",
                (unsigned long long)rl.rlim_cur, N_RAW);
        skip();
    }
    adv_lokid_start(&lokid, topology, "200", NULL);
    pid_t seen[256];
    int n_seen = adv_children(lokid.pid, seen, 64);
    assert_true(n_seen >= 2);

    /* 1200 connections held open, the library's, then the cap on what one uid may hold */
    raw_open(lokid.sock);
    for (int k = 0; k < N_LIB; k++)
        assert_int_equal(loki_client_connect(lokid.sock, NULL, &lib[k]), 0);
    probe_cap(lokid.sock, N_RAW + N_LIB);
    /* the probe's connections are closed: wait until lokid has seen it (ours + this one) */
    double conns = 0;
    for (int t = 0; t < 400; t++) {
        conns = adv_frontend_metric(lokid.sock, "frontend_connections");
        if (conns == N_RAW + N_LIB + 1)
            break;
        adv_sleep_ms(25);
    }
    assert_true(conns == N_RAW + N_LIB + 1);

    /* the attack: all at once, each for a few seconds */
    pthread_t th_steady[2], th_burst, th_reconnect, th_raw;
    struct steady steady[2] = {{lib[0], 2}, {lib[1], 2}};
    atomic_store(&raw_round_wanted, 1);
    pthread_create(&th_raw, NULL, raw_thread, NULL);
    for (int k = 0; k < 2; k++)
        pthread_create(&th_steady[k], NULL, steady_thread, &steady[k]);
    pthread_create(&th_burst, NULL, burst_thread, NULL);
    pthread_create(&th_reconnect, NULL, reconnect_thread, lokid.sock);

    adv_sleep_ms(2000);
    pid_t kids[64];
    int k = adv_children(lokid.pid, kids, 64);
    assert_true(k >= 2);
    fprintf(stderr, "SIGKILL worker %d\n", (int)kids[0]);
    kill(kids[0], SIGKILL);
    adv_sleep_ms(1500);
    k = adv_children(lokid.pid, kids, 64);
    assert_true(k >= 1);
    pid_t stopped = kids[k - 1];
    fprintf(stderr, "SIGSTOP worker %d\n", (int)stopped);
    kill(stopped, SIGSTOP);
    adv_sleep_ms(1500);
    atomic_store(&raw_round_wanted, 2); /* the held connections' second round */
    adv_sleep_ms(3000);
    atomic_store(&stop_senders, true);
    for (k = 0; k < 2; k++)
        pthread_join(th_steady[k], NULL);
    pthread_join(th_burst, NULL);
    pthread_join(th_reconnect, NULL);

    /* the stopped worker was killed by lokid (a stopped process never exits on its own) */
    bool gone = false;
    for (int t = 0; t < 600 && !gone; t++) {
        gone = pid_gone(stopped);
        if (!gone)
            adv_sleep_ms(50);
    }
    assert_true(gone);

    /* every accepted query is answered, once */
    bool all = wait_lib(60000);
    for (int t = 0; t < 1200 && atomic_load(&raw_received) < RAW_ROUNDS * N_RAW; t++)
        adv_sleep_ms(50);
    atomic_store(&raw_stop, true);
    pthread_join(th_raw, NULL);
    int n_lib = atomic_load(&lib_next) < MAXQ ? atomic_load(&lib_next) : MAXQ;
    fprintf(stderr,
            "library: %d queries, refused at send time: %d (window full), %d (connection gone), "
            "%d (other)\n",
            n_lib, atomic_load(&lib_refused_full), atomic_load(&lib_refused_gone),
            atomic_load(&lib_refused_other));
    print_statuses("library answers", lib_status);
    print_statuses("held connections' answers", raw_status);
    fprintf(stderr, "reconnects: %d cycles, %d connects refused\n", atomic_load(&reconnect_cycles),
            atomic_load(&reconnect_refused));
    assert_true(all);
    for (int i = 0; i < n_lib; i++) {
        if (atomic_load(&lib_answers[i]) != 1)
            fprintf(stderr, "library query %d answered %d times\n", i,
                    atomic_load(&lib_answers[i]));
        assert_int_equal(atomic_load(&lib_answers[i]), 1);
    }
    for (int i = 0; i < N_RAW * RAW_ROUNDS; i++) {
        if (atomic_load(&raw_answers[i]) != 1)
            fprintf(stderr, "held-connection query %d answered %d times\n", i,
                    atomic_load(&raw_answers[i]));
        assert_int_equal(atomic_load(&raw_answers[i]), 1);
    }
    assert_int_equal(atomic_load(&raw_strays), 0);
    assert_int_equal(atomic_load(&raw_eofs), 0);
    assert_int_equal(atomic_load(&raw_send_errors), 0);
    assert_int_equal(atomic_load(&lib_status[LOKI_STATUS_TIMEOUT]), 0);
    assert_int_equal(atomic_load(&lib_status[LOKI_STATUS_CLOSED]), 0);
    assert_int_equal(atomic_load(&lib_refused_gone) + atomic_load(&lib_refused_other), 0);
    assert_true(atomic_load(&lib_status[LOKI_STATUS_OK]) > 0);
    assert_true(atomic_load(&raw_status[LOKI_STATUS_OK]) > 0);
    assert_true(atomic_load(&reconnect_cycles) > 0);
    for (int c = 0; c < N_LIB; c++) { /* a second reply for an id would show up here */
        struct loki_client_stats st;
        loki_client_stats(lib[c], &st);
        assert_int_equal(st.late_replies, 0);
        assert_int_equal(st.proto_errors, 0);
    }

    /* lokid's side: what it accepted from the clients that left without reading is answered
     * too (into closed connections), nothing stays in flight */
    double inflight = NAN, requests = NAN, replies = NAN, late = NAN;
    for (int t = 0; t < 600; t++) {
        char names[LOKI_PROTO_MAX_METRICS][40];
        double vals[LOKI_PROTO_MAX_METRICS];
        int n = adv_frontend_metrics(lokid.sock, names, vals, LOKI_PROTO_MAX_METRICS);
        for (int i = 0; i < n; i++) {
            if (!strcmp(names[i], "frontend_inflight"))
                inflight = vals[i];
            else if (!strcmp(names[i], "frontend_requests"))
                requests = vals[i];
            else if (!strcmp(names[i], "frontend_replies"))
                replies = vals[i];
            else if (!strcmp(names[i], "frontend_late_replies"))
                late = vals[i];
        }
        if (inflight == 0)
            break;
        adv_sleep_ms(50);
    }
    fprintf(stderr, "lokid: %.0f accepted, %.0f answered, %.0f of them after the client left\n",
            requests, replies, late);
    assert_true(inflight == 0);
    assert_true(requests == replies + late);
    assert_true(requests >= n_lib - atomic_load(&lib_refused_full) + N_RAW * RAW_ROUNDS);
    assert_true(late > 0); /* the reconnect loop left some behind */

    /* the drain: queries keep coming while lokid is told to stop */
    for (int i = 0; i < LOKI_STATUS_COUNT_; i++)
        atomic_store(&lib_status[i], 0);
    int first_drain_q = atomic_load(&lib_next);
    int refused_before = atomic_load(&lib_refused_full) + atomic_load(&lib_refused_gone) +
                         atomic_load(&lib_refused_other);
    atomic_store(&stop_senders, false);
    struct steady drain[2] = {{lib[0], 1}, {lib[1], 1}};
    for (k = 0; k < 2; k++)
        pthread_create(&th_steady[k], NULL, steady_thread, &drain[k]);
    adv_sleep_ms(400);
    /* the workers now (restarted ones included), for the check that none outlives lokid */
    n_seen += adv_children(lokid.pid, seen + n_seen, 256 - n_seen);
    atomic_store(&term_sent, true); /* A query read as sent before this was, before the kill */
    kill(lokid.pid, SIGTERM);
    adv_sleep_ms(500);
    atomic_store(&stop_senders, true);
    for (k = 0; k < 2; k++)
        pthread_join(th_steady[k], NULL);
    int st = adv_lokid_stop(&lokid, 0, 60000); /* already signalled: just reap it */
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0); /* 0: "drained: every accepted query answered" */
    assert_true(wait_lib(30000));
    n_lib = atomic_load(&lib_next) < MAXQ ? atomic_load(&lib_next) : MAXQ;
    int closed_early = 0;
    for (int i = 0; i < n_lib; i++) {
        assert_int_equal(atomic_load(&lib_answers[i]), 1);
        closed_early += atomic_load(&lib_closed[i]) && atomic_load(&lib_before_term[i]);
    }
    fprintf(stderr, "drain: %d queries, %d refused at send time (lokid had closed)\n",
            n_lib - first_drain_q,
            atomic_load(&lib_refused_full) + atomic_load(&lib_refused_gone) +
                atomic_load(&lib_refused_other) - refused_before);
    print_statuses("answers across the drain", lib_status);
    /* sent in full before the SIGTERM: read and answered ("draining" at worst), never cut */
    assert_int_equal(closed_early, 0);
    assert_int_equal(atomic_load(&lib_status[LOKI_STATUS_TIMEOUT]), 0);
    assert_true(atomic_load(&lib_status[LOKI_STATUS_OK]) > 0);
    assert_true(atomic_load(&lib_status[LOKI_STATUS_DRAINING]) +
                    atomic_load(&lib_status[LOKI_STATUS_CLOSED]) + atomic_load(&lib_refused_gone) >
                0);
    for (int c = 0; c < N_LIB; c++) {
        struct loki_client_stats cs;
        loki_client_stats(lib[c], &cs);
        assert_int_equal(cs.late_replies, 0);
        loki_client_close(lib[c]);
    }
    for (k = 0; k < N_RAW; k++)
        close(raw[k].fd);
    free(raw);
    /* no worker outlives lokid */
    for (int i = 0; i < n_seen; i++) {
        bool dead = false;
        for (int t = 0; t < 200 && !dead; t++) {
            dead = pid_gone(seen[i]);
            if (!dead)
                adv_sleep_ms(25);
        }
        if (!dead)
            fprintf(stderr, "worker %d outlived lokid\n", (int)seen[i]);
        assert_true(dead);
    }
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate_setup_teardown(test_exactly_once_under_attack, NULL, adv_teardown,
                                                 &lokid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
