/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Real data between stages, end to end through lokid (backend ABI v2): with the echo plugin
 * each leaf's output derives from the piece its own parent cut for it, never from the root's
 * payload, and the reply's result tree says which node came from which; with the sim
 * backend outputs and child payloads of 100 kB and 16 KiB travel whole; a result over
 * frontend.max_result_bytes is answered "result too large" while the others still pass; a
 * burst far over the plan with child payloads in flight, with a worker SIGKILLed in the
 * middle, is answered exactly once per query, and the payload arena is empty afterwards.
 */
#include "harness.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loki/client.h"
#include "prom.h"

static pid_t lokid_pid;
static char sock[128];

static int teardown(void **state)
{
    (void)state;
    if (lokid_pid > 0) {
        kill(lokid_pid, SIGKILL);
        waitpid(lokid_pid, NULL, 0);
        lokid_pid = 0;
    }
    return 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The topology: the echo plugin's path is this build's. */
static const char *topology(void)
{
    static char text[4096];
    snprintf(text, sizeof(text),
             "gpus: {count: 8, memory_mb: 16384}\n"
             "planner: {interval_ms: 500, min_dwell_s: 600}\n"
             "frontend: {max_inflight: 8192, max_result_bytes: 1048576}\n"
             "pipelines:\n"
             "  - name: echo\n"
             "    slo_ms: 2000\n"
             "    tasks:\n"
             "      - name: detect\n"
             "        input: raw bytes, cut into 100-byte pieces\n"
             "        children: [classify]\n"
             "        variants:\n"
             "          - {name: det, accuracy: 90, startup_ms: 1, batch_sizes: [1, 8],\n"
             "             latency_ms: [1, 2], backend: %s,\n"
             "             fanout: {classify: {mean: 3, dist: constant}}}\n"
             "      - name: classify\n"
             "        variants:\n"
             "          - {name: cls, accuracy: 90, startup_ms: 1, batch_sizes: [1, 8],\n"
             "             latency_ms: [1, 2], backend: %s}\n"
             "  - name: sized\n"
             "    slo_ms: 3000\n"
             "    tasks:\n"
             "      - name: detect\n"
             "        children: [classify]\n"
             "        variants:\n"
             "          - {name: sdet, accuracy: 90, startup_ms: 1, batch_sizes: [1, 16],\n"
             "             latency_ms: [2, 8], fanout: {classify: {mean: 8, dist: constant}},\n"
             "             args: {output_bytes: 100000, child_payload_bytes: 16384}}\n"
             "      - name: classify\n"
             "        variants:\n"
             "          - {name: scls, accuracy: 90, startup_ms: 1, batch_sizes: [1, 32],\n"
             "             latency_ms: [1, 4], args: {output_bytes: 1000}}\n"
             "  - name: burst\n"
             "    slo_ms: 3000\n"
             "    tasks:\n"
             "      - name: detect\n"
             "        children: [classify]\n"
             "        variants:\n"
             "          - {name: bdet, accuracy: 90, startup_ms: 1, batch_sizes: [1, 16],\n"
             "             latency_ms: [2, 8], fanout: {classify: {mean: 8, dist: constant}},\n"
             "             args: {output_bytes: 2000, child_payload_bytes: 16384}}\n"
             "      - name: classify\n"
             "        variants:\n"
             "          - {name: bcls, accuracy: 90, startup_ms: 1, batch_sizes: [1, 32],\n"
             "             latency_ms: [1, 4], args: {output_bytes: 100}}\n"
             "  - name: huge\n"
             "    slo_ms: 3000\n"
             "    tasks:\n"
             "      - name: only\n"
             "        variants:\n"
             "          - {name: big, accuracy: 90, startup_ms: 1, batch_sizes: [1, 4],\n"
             "             latency_ms: [1, 2], max_output_bytes: 4194304,\n"
             "             args: {output_bytes: 2000000}}\n",
             loki_test_bin("lib/loki_echo_backend.so"), loki_test_bin("lib/loki_echo_backend.so"));
    return loki_test_write_tmp(text, ".yaml");
}

static void start(void)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    const char *topo = topology();
    assert_non_null(topo);
    char path[512];
    snprintf(path, sizeof(path), "%s", topo);
    snprintf(sock, sizeof(sock), "%s", loki_test_tmp_path("lokid.sock"));
    lokid_pid = fork();
    if (lokid_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(fds[0]);
        char fd[16];
        snprintf(fd, sizeof(fd), "%d", fds[1]);
        execl(loki_test_bin("bin/lokid"), "lokid", "--topology", path, "--socket", sock,
              "--ready-fd", fd, "--quiet", "--initial-demand", "100", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char buf[16] = {0};
    ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
    close(fds[0]);
    assert_true(n > 0 && !strncmp(buf, "ready", 5));
}

static void stop(void)
{
    int st = 0;
    kill(lokid_pid, SIGTERM);
    assert_int_equal(waitpid(lokid_pid, &st, 0), lokid_pid);
    lokid_pid = 0;
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static bool bytes_is(struct loki_bytes b, const char *s)
{
    return b.len == strlen(s) && !memcmp(b.ptr, s, b.len);
}

/* Each leaf's output is the byte sum of the piece its parent cut for it. */
static void test_children_get_their_parents_output(void **state)
{
    (void)state;
    start();
    struct loki_client *c;
    assert_int_equal(loki_client_connect(sock, NULL, &c), 0);
    uint8_t payload[350];
    for (int i = 0; i < 350; i++)
        payload[i] = (uint8_t)(i / 100 + 1); /* pieces of 1s, 2s, 3s, then 50 4s */
    struct loki_client_req req = {.pipeline = "echo", .payload = payload, .payload_len = 350};
    struct loki_client_result res;
    assert_int_equal(loki_client_infer(c, &req, &res), 0);
    if (res.status != LOKI_STATUS_OK)
        fprintf(stderr, "echo: %s: %s\n", loki_status_name(res.status), res.error);
    assert_int_equal(res.status, LOKI_STATUS_OK);
    assert_int_equal(res.n_nodes, 4);
    /* the root task's node: the whole frame */
    int root = loki_reply_next_child(res.nodes, res.n_nodes, -1, -1);
    assert_int_equal(root, 0);
    assert_int_equal(loki_reply_next_child(res.nodes, res.n_nodes, -1, root), -1);
    assert_true(bytes_is(res.nodes[root].task, "detect"));
    assert_true(bytes_is(res.nodes[root].variant, "det"));
    assert_true(bytes_is(res.nodes[root].output, "det sum=800 len=350"));
    /* its three children, one per piece, each naming its own piece (the root's sum is 800) */
    bool seen[4] = {false};
    int n = 0;
    for (int k = loki_reply_next_child(res.nodes, res.n_nodes, root, -1); k >= 0;
         k = loki_reply_next_child(res.nodes, res.n_nodes, root, k), n++) {
        const struct loki_reply_node *nd = &res.nodes[k];
        assert_true(bytes_is(nd->task, "classify"));
        assert_int_equal(nd->status, LOKI_STATUS_OK);
        unsigned sum = 0, len = 0;
        char text[64];
        snprintf(text, sizeof(text), "%.*s", (int)nd->output.len, (const char *)nd->output.ptr);
        assert_int_equal(sscanf(text, "cls sum=%u len=%u", &sum, &len), 2);
        assert_int_equal(len, 100);
        assert_true(sum == 100 || sum == 200 || sum == 300);
        assert_false(seen[sum / 100]);
        seen[sum / 100] = true;
    }
    assert_int_equal(n, 3);
    /* the leaves are also the reply's outputs */
    assert_int_equal(res.n_outputs, 3);
    loki_client_result_fini(&res);
    loki_client_close(c);
    stop();
}

/* 100 kB outputs and 8 child payloads of 16 KiB each, whole and derived from their input. */
static void test_large_outputs_and_child_payloads(void **state)
{
    (void)state;
    start();
    struct loki_client *c;
    assert_int_equal(loki_client_connect(sock, NULL, &c), 0);
    static const char payload[] = "0123456789abcdef";
    struct loki_client_req req = {
        .pipeline = "sized", .payload = payload, .payload_len = sizeof(payload) - 1};
    struct loki_client_result res;
    assert_int_equal(loki_client_infer(c, &req, &res), 0);
    assert_int_equal(res.status, LOKI_STATUS_OK);
    assert_int_equal(res.n_nodes, 9);
    assert_int_equal(res.nodes[0].parent, -1);
    assert_int_equal(res.nodes[0].output.len, 100000);
    assert_memory_equal(res.nodes[0].output.ptr, payload, 16);
    assert_memory_equal((const char *)res.nodes[0].output.ptr + 99984, payload, 16);
    for (uint32_t k = 1; k < 9; k++) {
        assert_int_equal(res.nodes[k].parent, 0);
        assert_int_equal(res.nodes[k].output.len, 1000);
        /* the sim backend repeats its input: the child payload it got was the parent's
         * repetition of the frame */
        assert_memory_equal(res.nodes[k].output.ptr, payload, 16);
    }
    loki_client_result_fini(&res);

    /* over frontend.max_result_bytes (1 MiB): an error that says so, the others still pass */
    req.pipeline = "huge";
    assert_int_equal(loki_client_infer(c, &req, &res), 0);
    assert_int_equal(res.status, LOKI_STATUS_ERROR);
    assert_non_null(strstr(res.error, "result too large"));
    assert_int_equal(res.n_nodes, 0);
    loki_client_result_fini(&res);
    req.pipeline = "sized";
    assert_int_equal(loki_client_infer(c, &req, &res), 0);
    assert_int_equal(res.status, LOKI_STATUS_OK);
    loki_client_result_fini(&res);
    loki_client_close(c);
    stop();
}

#define BURST 3000
static atomic_int answers[BURST];
static atomic_int n_ok, n_overloaded, n_closed, n_other;

static void on_reply(void *ctx, const struct loki_reply *r)
{
    int i = (int)(intptr_t)ctx;
    atomic_fetch_add(&answers[i], 1);
    if (r->status == LOKI_STATUS_OK && r->n_nodes == 9)
        atomic_fetch_add(&n_ok, 1);
    else if (r->status == LOKI_STATUS_OVERLOADED)
        atomic_fetch_add(&n_overloaded, 1);
    else if (r->status == LOKI_STATUS_CLOSED)
        atomic_fetch_add(&n_closed, 1);
    else
        atomic_fetch_add(&n_other, 1);
}

/* Worker pids of lokid. */
static int children(pid_t *out, int max)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)lokid_pid, (int)lokid_pid);
    FILE *f = fopen(path, "r");
    int n = 0, p;
    if (!f)
        return 0;
    while (n < max && fscanf(f, "%d", &p) == 1)
        out[n++] = p;
    fclose(f);
    return n;
}

/*
 * A burst of 3000 (the plan is for 100 qps) with 8 child payloads each, a worker SIGKILLed
 * while they are in flight: every query is answered exactly once, and once all are, the
 * payload arena holds nothing.
 */
static void test_overload_kill_and_arena(void **state)
{
    (void)state;
    start();
    enum { CONNS = 4 };
    struct loki_client *c[CONNS];
    /* at most 256 replies (of about 3 kB) wait for each client: a client this machine's load
     * keeps from reading is never dropped for a full write queue */
    struct loki_client_opts co = {.max_outstanding = 256};
    for (int k = 0; k < CONNS; k++)
        assert_int_equal(loki_client_connect(sock, &co, &c[k]), 0);
    static const char payload[64] = "frame";
    for (int i = 0; i < BURST; i++) {
        struct loki_client_req req = {.pipeline = "burst",
                                      .payload = payload,
                                      .payload_len = sizeof(payload),
                                      .timeout_ms = 60000};
        int rc;
        while ((rc = loki_client_submit(c[i % CONNS], &req, on_reply, (void *)(intptr_t)i, NULL)) ==
               -EAGAIN)
            sleep_ms(1); /* the library's own window is full: wait for replies */
        assert_int_equal(rc, 0);
        if (i == BURST / 3) {
            pid_t w[16];
            int n = children(w, 16);
            assert_true(n > 0);
            kill(w[n - 1], SIGKILL);
        }
    }
    for (int t = 0; t < 6000; t++) {
        if (atomic_load(&n_ok) + atomic_load(&n_overloaded) + atomic_load(&n_closed) +
                atomic_load(&n_other) >=
            BURST)
            break;
        sleep_ms(10);
    }
    for (int i = 0; i < BURST; i++) {
        if (atomic_load(&answers[i]) != 1)
            fprintf(stderr, "query %d answered %d times\n", i, atomic_load(&answers[i]));
        assert_int_equal(atomic_load(&answers[i]), 1);
    }
    fprintf(stderr, "burst with child payloads: %d ok, %d overloaded, %d closed, %d other\n",
            atomic_load(&n_ok), atomic_load(&n_overloaded), atomic_load(&n_closed),
            atomic_load(&n_other));
    assert_true(atomic_load(&n_ok) > 0);
    assert_int_equal(atomic_load(&n_closed), 0);
    for (int k = 0; k < CONNS; k++)
        loki_client_close(c[k]);
    /* nothing is held once every root is answered (and lokid has let go of them all) */
    double used = -1, size = 0, inflight = -1;
    for (int t = 0; t < 100 && (inflight != 0 || used != 0); t++) {
        char *m = metrics_text(sock);
        used = prom_value(m, "loki_payload_arena_used_bytes");
        size = prom_value(m, "loki_payload_arena_bytes");
        inflight = prom_value(m, "loki_roots_inflight");
        free(m);
        if (inflight != 0 || used != 0)
            sleep_ms(50);
    }
    fprintf(stderr, "payload arena: %.0f of %.0f bytes used after the burst\n", used, size);
    assert_true(size > 0);
    assert_true(used == 0);
    stop();
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_children_get_their_parents_output, teardown),
        cmocka_unit_test_teardown(test_large_outputs_and_child_payloads, teardown),
        cmocka_unit_test_teardown(test_overload_kill_and_arena, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
