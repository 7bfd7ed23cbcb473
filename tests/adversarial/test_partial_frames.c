/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Partial frames cannot pin unbounded memory. Each of N_HOLDERS connections announces a
 * frame of 4 MiB (the payload limit here), sends what the socket takes of its first 3 MiB
 * and then nothing more. Without a budget lokid would buffer about 3 MiB for each of them
 * for the 10 s frame timeout (72 MiB here; with 1024 connections and a 256 MiB payload
 * limit, far more than a host has). With frontend.max_read_buffer_bytes at 16 MiB:
 *   - lokid's heap grows by the budget at most (checked against a generous bound, half of
 *     what the holders would pin without it), and its read-buffer gauge stays within it;
 *   - connections that need more are paused (counted), not failed;
 *   - small queries keep being served meanwhile (they never need more than a connection's
 *     first 16 KiB);
 *   - a client sending a real 2 MiB payload while the budget is spent waits for its turn and
 *     is answered ok once the holders time out; the holders each get "incomplete frame";
 *   - after all that, the gauge is back to zero.
 * Counts and sizes only; the one wait is the holders' frame timeout (10 s).
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "adv.h"
#include "loki/client.h"

#define N_HOLDERS 24
#define FRAME (4u << 20)
#define HELD (3u << 20)
#define BUDGET_MB 16
#define BIG (2u << 20)

static const char topology[] =
    "gpus: {count: 2, memory_mb: 16384}\n"
    "frontend: {max_payload_bytes: 4194304, max_read_buffer_bytes: 16777216}\n"
    "pipelines:\n"
    "  - name: echo\n"
    "    slo_ms: 5000\n"
    "    tasks:\n"
    "      - name: only\n"
    "        variants:\n"
    "          - {name: v, accuracy: 90, startup_ms: 1, batch_sizes: [1, 8],\n"
    "             latency_ms: [1, 2]}\n";

static struct adv_lokid lokid;

/* Announce a FRAME-byte frame and send what the socket takes of its first HELD bytes. */
static size_t hold(int fd, const uint8_t *junk)
{
    uint8_t hdr[4];
    uint32_t be = htonl(FRAME);
    memcpy(hdr, &be, 4);
    if (adv_send_all(fd, hdr, 4))
        return 0;
    size_t sent = 0;
    for (int idle = 0; sent < HELD && idle < 20;) {
        ssize_t n = send(fd, junk + sent, HELD - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            sent += (size_t)n;
            idle = 0;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            idle++; /* lokid stopped reading (or has not yet): give it a moment */
            adv_sleep_ms(5);
        } else {
            break;
        }
    }
    return sent;
}

struct big {
    struct loki_client *c;
    const uint8_t *payload;
    int rc;
    struct loki_client_result res;
};

static void *send_big(void *p)
{
    struct big *b = p;
    struct loki_client_req req = {
        .pipeline = "echo", .payload = b->payload, .payload_len = BIG, .timeout_ms = 60000};
    b->rc = loki_client_infer(b->c, &req, &b->res);
    return NULL;
}

static double prom(const char *series)
{
    char *m = adv_prom_text(lokid.sock);
    assert_non_null(m);
    double v = adv_prom_value(m, series);
    free(m);
    return v;
}

static void test_partial_frames(void **state)
{
    (void)state;
    uint8_t *junk = calloc(1, HELD > BIG ? HELD : BIG);
    assert_non_null(junk);
    adv_lokid_start(&lokid, topology, "50", NULL);
    struct loki_client *small, *bigc;
    assert_int_equal(loki_client_connect(lokid.sock, NULL, &small), 0);
    assert_int_equal(loki_client_connect(lokid.sock, NULL, &bigc), 0);
    struct loki_client_req req = {.pipeline = "echo", .payload = "x", .payload_len = 1};
    struct loki_client_result res;
    assert_int_equal(loki_client_infer(small, &req, &res), 0);
    assert_int_equal(res.status, LOKI_STATUS_OK);
    loki_client_result_fini(&res);
    long base = adv_status_kb(lokid.pid, "RssAnon");
    assert_true(base > 0);

    int fds[N_HOLDERS];
    size_t held = 0;
    for (int k = 0; k < N_HOLDERS; k++) {
        fds[k] = adv_connect(lokid.sock);
        assert_true(fds[k] >= 0);
        held += hold(fds[k], junk);
    }
    double held_at = adv_now_ms();
    adv_sleep_ms(500); /* let lokid read what it will */
    long peak = adv_status_kb(lokid.pid, "RssAnon");
    double gauge = prom("loki_frontend_read_buffer_bytes");
    double pauses = prom("loki_frontend_read_pauses_total");
    fprintf(stderr,
            "holders sent %zu KiB in all; lokid heap %ld -> %ld KiB; read buffers %.0f KiB; "
            "%.0f connections paused\n",
            held / 1024, base, peak, gauge / 1024, pauses);
    /* at most 16 MiB / 3 MiB holders fit in the budget: most of them wait */
    assert_true(gauge <= BUDGET_MB * 1048576.0);
    assert_true(gauge > 0);
    assert_true(pauses >= N_HOLDERS / 2);
    if (ADV_RSS_MEANINGFUL) /* without the budget: + ~72 MiB */
        assert_true(peak - base < (long)(BUDGET_MB + 20) * 1024);

    /* small queries are served while the budget is spent */
    for (int i = 0; i < 20; i++) {
        assert_int_equal(loki_client_infer(small, &req, &res), 0);
        assert_int_equal(res.status, LOKI_STATUS_OK);
        loki_client_result_fini(&res);
    }
    /* a real large payload waits for budget, then is served. It starts 3 s after the
     * holders, so its own frame clock has 3 s left when theirs run out (a slow build, a
     * sanitizer's, may take a second to close them all and hand the budget on) */
    double wait = held_at + 3000 - adv_now_ms();
    if (wait > 0)
        adv_sleep_ms(wait);
    struct big b = {.c = bigc, .payload = junk};
    pthread_t th;
    pthread_create(&th, NULL, send_big, &b);
    pthread_join(th, NULL);
    fprintf(stderr, "2 MiB query: rc %d, status %s (%s)\n", b.rc, loki_status_name(b.res.status),
            b.res.error);
    assert_int_equal(b.rc, 0);
    assert_int_equal(b.res.status, LOKI_STATUS_OK);
    loki_client_result_fini(&b.res);
    assert_true(prom("loki_frontend_read_pauses_total") > pauses); /* it waited too */

    /* each holder was told why and closed */
    for (int k = 0; k < N_HOLDERS; k++) {
        uint8_t buf[4096];
        struct loki_reply r;
        int rc = adv_read_reply(fds[k], buf, sizeof(buf), &r, 30000);
        assert_int_equal(rc, 0);
        assert_int_equal(r.status, LOKI_STATUS_BAD_REQUEST);
        assert_true(r.error.len >= 16 && !memcmp(r.error.ptr, "incomplete frame", 16));
        assert_true(adv_at_eof(fds[k], 5000));
        close(fds[k]);
    }
    assert_true(prom("loki_frontend_frame_timeouts_total") == N_HOLDERS);
    /* what is left: the two clients' buffers, back to their first 16 KiB */
    assert_true(prom("loki_frontend_read_buffer_bytes") == 0);
    loki_client_close(small);
    loki_client_close(bigc);
    free(junk);
    int st = adv_lokid_stop(&lokid, SIGTERM, 30000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate_setup_teardown(test_partial_frames, NULL, adv_teardown, &lokid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
