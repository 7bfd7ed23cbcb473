/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Client library end to end against the frontend with the echo owner, which
 * answers from its own thread through the MPSC reply path: blocking and
 * asynchronous requests, exactly-once completion under concurrent submitters
 * (while a bad client hammers the same server), callbacks that submit (sent together after
 * the replies of one read), timeouts with late replies
 * discarded, close with requests pending, the server going away, uid refusal
 * and local argument checks.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "echo.h"
#include "harness.h"
#include "loki/client.h"
#include "loki/clock.h"
#include "loki/error.h"

static char path[108];

static struct echo_server *start(struct echo_opts *o)
{
    static int n;
    struct echo_server *s;
    char name[32];
    snprintf(name, sizeof(name), "cl-%d.sock", n++);
    assert_non_null(loki_test_tmp_path(name));
    assert_true(snprintf(path, sizeof(path), "%s", loki_test_tmp_path(name)) < (int)sizeof(path));
    unlink(path);
    o->path = path;
    assert_int_equal(echo_start(o, &s), 0);
    return s;
}

static struct loki_client_req req(const char *pipeline, const char *payload, double timeout_ms)
{
    struct loki_client_req r = {0};
    r.pipeline = pipeline;
    r.payload = payload;
    r.payload_len = (uint32_t)strlen(payload);
    r.timeout_ms = timeout_ms;
    return r;
}

static void test_blocking(void **st)
{
    struct echo_opts o = {0};
    struct echo_server *s = start(&o);
    struct loki_client *c;
    assert_int_equal(loki_client_connect(path, NULL, &c), 0);
    const char *names[4];
    assert_int_equal(loki_client_pipelines(c, names, 4), 2);
    assert_string_equal(names[0], "traffic");
    assert_int_equal(loki_client_max_payload(c), 64 * 1024);
    struct loki_client_result res;
    struct loki_client_req r = req("traffic", "picture", 2000);
    r.deadline_ms = 40;
    r.has_priority = true;
    r.priority = 2;
    assert_int_equal(loki_client_infer(c, &r, &res), 0);
    assert_int_equal(res.status, LOKI_STATUS_OK);
    assert_int_equal(res.n_outputs, 1);
    assert_memory_equal(res.outputs[0].ptr, "picture", 7);
    assert_int_equal(res.n_paths, 1);
    assert_string_equal(res.paths[0], "traffic>echo");
    assert_true(res.accuracy == 100);
    loki_client_result_fini(&res);
    r = req("nosuch", "x", 2000);
    assert_int_equal(loki_client_infer(c, &r, &res), 0);
    assert_int_equal(res.status, LOKI_STATUS_UNKNOWN_PIPELINE);
    assert_string_equal(res.error, "unknown pipeline 'nosuch'");
    loki_client_result_fini(&res);
    r = req("traffic", "status:dropped", 2000);
    assert_int_equal(loki_client_infer(c, &r, &res), 0);
    assert_int_equal(res.status, LOKI_STATUS_DROPPED);
    loki_client_result_fini(&res);
    assert_int_equal(loki_client_ping(c, 2000), 0);
    struct loki_reply sr;
    assert_int_equal(loki_client_status(c, 2000, &sr), 0);
    assert_true(sr.ready && sr.connections == 1);
    /* local argument checks */
    static char big[64 * 1024 + 1];
    r = req("traffic", "", 0);
    r.payload = big;
    r.payload_len = sizeof(big);
    assert_int_equal(loki_client_infer(c, &r, &res), LOKI_ETOOBIG);
    r = req("a-pipeline-name-that-is-much-longer-than-sixty-three-bytes-xxxxxxxx", "x", 0);
    assert_int_equal(loki_client_infer(c, &r, &res), -ENAMETOOLONG);
    assert_int_equal(loki_client_close(c), 0);
    echo_stop(s);
}

/* ---- concurrency: every request completes exactly once ---- */

#define THREADS 4
#define PER_THREAD 400

struct tally {
    int calls[THREADS * PER_THREAD];
    int bad; /* wrong status or payload */
};

static struct tally tally;
static struct loki_client *shared;

struct slot_ctx {
    int index;
};

static void on_done(void *ctx, const struct loki_reply *r)
{
    int i = (int)(intptr_t)ctx;
    __atomic_fetch_add(&tally.calls[i], 1, __ATOMIC_RELAXED);
    char want[16];
    snprintf(want, sizeof(want), "%d", i);
    if (r->status != LOKI_STATUS_OK || r->n_outputs != 1 || r->outputs[0].len != strlen(want) ||
        memcmp(r->outputs[0].ptr, want, strlen(want)))
        __atomic_fetch_add(&tally.bad, 1, __ATOMIC_RELAXED);
}

static void *submitter(void *arg)
{
    int t = (int)(intptr_t)arg;
    int failures = 0;
    for (int k = 0; k < PER_THREAD; k++) {
        int i = t * PER_THREAD + k;
        char p[16];
        snprintf(p, sizeof(p), "%d", i);
        struct loki_client_req r = req(t % 2 ? "social" : "traffic", p, 10000);
        int rc;
        while ((rc = loki_client_submit(shared, &r, on_done, (void *)(intptr_t)i, NULL)) == -EAGAIN)
            usleep(100);
        failures += rc != 0;
    }
    return (void *)(intptr_t)failures;
}

static bool stop_bad; /* atomic */

static void *bad_client(void *arg)
{
    while (!__atomic_load_n(&stop_bad, __ATOMIC_RELAXED)) {
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
            const uint8_t junk[] = {0, 0, 0, 3, 0xc1, 0xc1, 0xc1, 0xff, 0xff, 0xff, 0xff};
            send(fd, junk, sizeof(junk), MSG_NOSIGNAL);
        }
        close(fd);
        usleep(1000);
    }
    return NULL;
}

static void test_concurrent_exactly_once(void **st)
{
    struct echo_opts o = {0};
    struct echo_server *s = start(&o);
    struct loki_client_opts co = {.max_outstanding = 256};
    memset(&tally, 0, sizeof(tally));
    assert_int_equal(loki_client_connect(path, &co, &shared), 0);
    pthread_t th[THREADS], bad;
    __atomic_store_n(&stop_bad, false, __ATOMIC_RELAXED);
    pthread_create(&bad, NULL, bad_client, NULL);
    for (int t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, submitter, (void *)(intptr_t)t);
    int failures = 0;
    for (int t = 0; t < THREADS; t++) {
        void *f;
        pthread_join(th[t], &f);
        failures += (int)(intptr_t)f;
    }
    assert_int_equal(failures, 0);
    struct loki_client_stats cs;
    for (int w = 0; w < 1000; w++) {
        loki_client_stats(shared, &cs);
        if (cs.outstanding == 0)
            break;
        usleep(10000);
    }
    __atomic_store_n(&stop_bad, true, __ATOMIC_RELAXED);
    pthread_join(bad, NULL);
    assert_int_equal(cs.outstanding, 0);
    assert_int_equal(loki_client_close(shared), 0);
    for (int i = 0; i < THREADS * PER_THREAD; i++)
        if (tally.calls[i] != 1)
            fail_msg("request %d completed %d times", i, tally.calls[i]);
    assert_int_equal(tally.bad, 0);
    assert_int_equal(echo_answered(s), THREADS * PER_THREAD);
    echo_stop(s);
}

/* ---- callbacks that submit: their requests go out together, after the batch ---- */

#define CHAINS 8
#define STEPS 150
/* above the client's buffering limit: sent on its own, after what is buffered */
#define BIG 20000

struct chain {
    struct loki_client *c;
    int id, step, calls_at_step[STEPS];
    int bad, submit_failed;
    bool done; /* atomic */
};

static uint8_t chain_big[CHAINS][BIG];

/* Step @k of chain @ch: every fifth one carries a big payload, the others a short text. */
static int chain_submit(struct chain *ch);

static void chain_payload(const struct chain *ch, int k, const void **p, uint32_t *len, char *small,
                          size_t cap)
{
    if (k % 5 == 4) {
        memset(chain_big[ch->id], 'a' + (k % 26), BIG);
        *p = chain_big[ch->id];
        *len = BIG;
    } else {
        *len = (uint32_t)snprintf(small, cap, "chain %d step %d", ch->id, k);
        *p = small;
    }
}

static void on_chain(void *ctx, const struct loki_reply *r)
{
    struct chain *ch = ctx;
    int k = ch->step;
    ch->calls_at_step[k]++;
    char small[64];
    const void *p;
    uint32_t len;
    chain_payload(ch, k, &p, &len, small, sizeof(small));
    if (r->status != LOKI_STATUS_OK || r->n_outputs != 1 || r->outputs[0].len != len ||
        memcmp(r->outputs[0].ptr, p, len))
        ch->bad++;
    if (++ch->step < STEPS) {
        if (chain_submit(ch))
            ch->submit_failed++;
    } else {
        __atomic_store_n(&ch->done, true, __ATOMIC_RELEASE);
    }
}

static int chain_submit(struct chain *ch)
{
    char small[64];
    struct loki_client_req r = {.pipeline = "traffic", .timeout_ms = 10000};
    chain_payload(ch, ch->step, &r.payload, &r.payload_len, small, sizeof(small));
    return loki_client_submit(ch->c, &r, on_chain, ch, NULL);
}

/* Chains of requests, each submitted by the previous one's callback, big and small mixed:
 * every reply echoes the payload its own request carried, each completes once. */
static void test_callback_submits(void **st)
{
    struct echo_opts o = {0};
    struct echo_server *s = start(&o);
    struct loki_client *c;
    assert_int_equal(loki_client_connect(path, NULL, &c), 0);
    static struct chain chains[CHAINS];
    memset(chains, 0, sizeof(chains));
    for (int i = 0; i < CHAINS; i++) {
        chains[i].c = c;
        chains[i].id = i;
        assert_int_equal(chain_submit(&chains[i]), 0);
    }
    for (int i = 0; i < CHAINS; i++)
        for (int w = 0; w < 2000 && !__atomic_load_n(&chains[i].done, __ATOMIC_ACQUIRE); w++)
            usleep(5000);
    assert_int_equal(loki_client_close(c), 0); /* joins the reader: the chains are quiet */
    for (int i = 0; i < CHAINS; i++) {
        assert_true(chains[i].done);
        assert_int_equal(chains[i].bad, 0);
        assert_int_equal(chains[i].submit_failed, 0);
        for (int k = 0; k < STEPS; k++)
            assert_int_equal(chains[i].calls_at_step[k], 1);
    }
    assert_int_equal(echo_answered(s), CHAINS * STEPS);
    echo_stop(s);
}

/* ---- timeouts, close, server gone ---- */

struct rec {
    int calls;
    enum loki_status status;
    uint64_t at;
};

static void on_rec(void *ctx, const struct loki_reply *r)
{
    struct rec *x = ctx;
    __atomic_fetch_add(&x->calls, 1, __ATOMIC_RELAXED);
    x->status = r->status;
    __atomic_store_n(&x->at, loki_now_ns(), __ATOMIC_RELEASE);
}

static void test_timeout_and_late_reply(void **st)
{
    struct echo_opts o = {0};
    struct echo_server *s = start(&o);
    struct loki_client *c;
    assert_int_equal(loki_client_connect(path, NULL, &c), 0);
    struct rec slow = {0}, fast = {0};
    struct loki_client_req r = req("traffic", "sleep:300", 60);
    uint64_t t0 = loki_now_ns();
    assert_int_equal(loki_client_submit(c, &r, on_rec, &slow, NULL), 0);
    r = req("traffic", "quick", 5000);
    assert_int_equal(loki_client_submit(c, &r, on_rec, &fast, NULL), 0);
    while (!__atomic_load_n(&slow.at, __ATOMIC_ACQUIRE))
        usleep(1000);
    assert_int_equal(slow.status, LOKI_STATUS_TIMEOUT);
    double waited = (double)(slow.at - t0) / 1e6;
    assert_true(waited >= 59 && waited < 250);
    assert_int_equal(fast.status, LOKI_STATUS_OK);
    usleep(400000); /* the server answers the slow one now: discarded */
    struct loki_client_stats cs;
    loki_client_stats(c, &cs);
    assert_int_equal(cs.late_replies, 1);
    assert_int_equal(cs.timeouts, 1);
    assert_int_equal(slow.calls, 1);
    /* the blocking API reports the timeout too */
    struct loki_client_result res;
    r = req("traffic", "sleep:300", 30);
    assert_int_equal(loki_client_infer(c, &r, &res), 0);
    assert_int_equal(res.status, LOKI_STATUS_TIMEOUT);
    loki_client_result_fini(&res);
    assert_int_equal(loki_client_ping(c, 1000), 0);
    loki_client_close(c);
    echo_stop(s);
}

static void test_close_with_pending(void **st)
{
    struct echo_opts o = {0};
    struct echo_server *s = start(&o);
    struct loki_client *c;
    struct loki_client_opts co = {.max_outstanding = 8};
    assert_int_equal(loki_client_connect(path, &co, &c), 0);
    struct rec recs[9] = {{0}};
    struct loki_client_req r = req("traffic", "sleep:400", -1);
    for (int i = 0; i < 8; i++)
        assert_int_equal(loki_client_submit(c, &r, on_rec, &recs[i], NULL), 0);
    assert_int_equal(loki_client_submit(c, &r, on_rec, &recs[8], NULL), -EAGAIN);
    uint64_t t0 = loki_now_ns();
    assert_int_equal(loki_client_close(c), 0);
    assert_true(loki_now_ns() - t0 < 300 * 1000000ull); /* did not wait for the replies */
    for (int i = 0; i < 8; i++) {
        assert_int_equal(recs[i].calls, 1);
        assert_int_equal(recs[i].status, LOKI_STATUS_CLOSED);
    }
    assert_int_equal(recs[8].calls, 0);
    echo_stop(s); /* the frontend discards the late replies */
}

static void test_server_gone(void **st)
{
    assert_non_null(loki_test_tmp_path("raw.sock"));
    assert_true(snprintf(path, sizeof(path), "%s", loki_test_tmp_path("raw.sock")) <
                (int)sizeof(path));
    unlink(path);
    int ls = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(ls, 4), 0);
    struct loki_client *c;
    struct loki_client_opts co = {.no_hello = true};
    assert_int_equal(loki_client_connect(path, &co, &c), 0);
    int fd = accept(ls, NULL, NULL);
    struct rec recs[5] = {{0}};
    struct loki_client_req r = req("traffic", "x", -1);
    for (int i = 0; i < 5; i++)
        assert_int_equal(loki_client_submit(c, &r, on_rec, &recs[i], NULL), 0);
    close(fd);
    for (int i = 0; i < 5; i++) {
        while (!__atomic_load_n(&recs[i].at, __ATOMIC_ACQUIRE))
            usleep(1000);
        assert_int_equal(recs[i].status, LOKI_STATUS_CLOSED);
    }
    assert_int_equal(loki_client_submit(c, &r, on_rec, &recs[0], NULL), -EPIPE);
    assert_int_equal(loki_client_ping(c, 100), -EPIPE);
    loki_client_close(c);
    for (int i = 0; i < 5; i++)
        assert_int_equal(recs[i].calls, 1);
    /* hello that is never answered */
    co.no_hello = false;
    co.connect_timeout_ms = 100;
    assert_int_equal(loki_client_connect(path, &co, &c), -ETIMEDOUT);
    close(ls);
    unlink(path);
    assert_int_equal(loki_client_connect(path, NULL, &c), -ENOENT);
}

static void test_uid_refused(void **st)
{
    struct echo_opts o = {.n_uids = 1, .uids = {getuid() + 1}};
    struct echo_server *s = start(&o);
    struct loki_client *c;
    assert_int_equal(loki_client_connect(path, NULL, &c), -EACCES);
    echo_stop(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocking),           cmocka_unit_test(test_concurrent_exactly_once),
        cmocka_unit_test(test_callback_submits),   cmocka_unit_test(test_timeout_and_late_reply),
        cmocka_unit_test(test_close_with_pending), cmocka_unit_test(test_server_gone),
        cmocka_unit_test(test_uid_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
