/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The torchscript plugin through lokid, end to end, on tiny models made at test time: a PNG
 * and a JPEG go to a detector whose boxes become crops, and every child node of the reply's
 * result tree (a raw-output model and a top-k classifier) answers for the crop its parent's
 * box implies: the box it names is one of its parent's, its mean colour is that box's; the
 * detector with raw outputs (decoded and NMS'd in the plugin) gives the same tree; in a burst
 * of tensors, the one of the wrong shape fails alone with a message that says so. A variant
 * whose model file is missing or corrupt refuses to start with a log line naming the file;
 * lokid serves the other pipeline and answers every query it accepted exactly once. `loki load
 * --payload-dir` sends pictures from a folder and prints the result trees.
 */
#include "torch_test.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "loki/client.h"
#include "loki/vision.h"

static pid_t lokid_pid;
static char sock[128], logpath[256];

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

static const char *plugin(void)
{
    static char p[512];
    snprintf(p, sizeof(p), "%s", loki_test_bin("lib/loki_torch_backend.so"));
    return p;
}

/* The vision pipelines: detector (plain or raw outputs) -> colour (mean.pt, raw output) and
 * kind (lin.pt, top-k); flat: mean.pt alone, for tensors. */
static const char *topology_good(void)
{
    static char t[8192];
    const char *so = plugin();
    int n = snprintf(t, sizeof(t),
                     "gpus: {count: 8, memory_mb: 16384}\n"
                     "planner: {interval_ms: 500, min_dwell_s: 600}\n"
                     "frontend: {max_inflight: 4096, max_result_bytes: 4194304}\n"
                     "pipelines:\n");
    const char *dets[2][2] = {{"vision", "det.pt"}, {"coded", "det_coded.pt"}};
    for (int k = 0; k < 2; k++)
        n += snprintf(
            t + n, sizeof(t) - (size_t)n,
            "  - name: %s\n"
            "    slo_ms: 10000\n"
            "    tasks:\n"
            "      - name: detect\n"
            "        input: a JPEG or PNG picture\n"
            "        children: [colour, kind]\n"
            "        variants:\n"
            "          - {name: det%d, accuracy: 90, batch_sizes: [1, 4], latency_ms: [5, 10],\n"
            "             backend: %s, max_output_bytes: 65536,\n"
            "             fanout: {colour: {mean: 2, dist: constant}, kind: {mean: 2, dist: "
            "constant}},\n"
            "             args: {model: %s, shape: 3x48x64, postprocess: detect_crops,\n"
            "                    crop: 8x8, score_threshold: 0.5}}\n"
            "      - name: colour\n"
            "        input: a uint8 3x8x8 crop\n"
            "        variants:\n"
            "          - {name: mean%d, accuracy: 90, batch_sizes: [1, 8], latency_ms: [2, 4],\n"
            "             backend: %s, args: {model: %s, shape: 3x8x8}}\n"
            "      - name: kind\n"
            "        variants:\n"
            "          - {name: lin%d, accuracy: 90, batch_sizes: [1, 8], latency_ms: [2, 4],\n"
            "             backend: %s, args: {model: %s, shape: 3x8x8, postprocess: "
            "classify_topk,\n"
            "                                 topk: 2, labels: %s}}\n",
            dets[k][0], k, so, model(dets[k][1]), k, so, model("mean.pt"), k, so, model("lin.pt"),
            model("labels.txt"));
    snprintf(t + n, sizeof(t) - (size_t)n,
             "  - name: flat\n"
             "    slo_ms: 10000\n"
             "    tasks:\n"
             "      - name: only\n"
             "        variants:\n"
             "          - {name: flatmean, accuracy: 90, batch_sizes: [1, 8], latency_ms: [2, 4],\n"
             "             backend: %s, args: {model: %s, shape: 3x8x8}}\n",
             so, model("mean.pt"));
    return t;
}

/* flat, plus a pipeline whose only variant's model is missing and one whose model is junk */
static const char *topology_bad(void)
{
    static char t[4096];
    const char *so = plugin();
    snprintf(
        t, sizeof(t),
        "gpus: {count: 4, memory_mb: 16384}\n"
        "planner: {interval_ms: 500, min_dwell_s: 600}\n"
        "pipelines:\n"
        "  - name: flat\n"
        "    slo_ms: 10000\n"
        "    tasks:\n"
        "      - name: only\n"
        "        variants:\n"
        "          - {name: flatmean, accuracy: 90, batch_sizes: [1, 8], latency_ms: [2, 4],\n"
        "             backend: %s, args: {model: %s, shape: 3x8x8}}\n"
        "  - name: missing\n"
        "    slo_ms: 10000\n"
        "    tasks:\n"
        "      - name: only\n"
        "        variants:\n"
        "          - {name: nomodel, accuracy: 90, batch_sizes: [1, 8], latency_ms: [2, 4],\n"
        "             backend: %s, args: {model: %s, shape: 3x8x8}}\n"
        "  - name: corrupt\n"
        "    slo_ms: 10000\n"
        "    tasks:\n"
        "      - name: only\n"
        "        variants:\n"
        "          - {name: junkmodel, accuracy: 90, batch_sizes: [1, 8], latency_ms: [2, 4],\n"
        "             backend: %s, args: {model: %s, shape: 3x8x8}}\n",
        so, model("mean.pt"), so, model("no-such-model.pt"), so, model("corrupt.pt"));
    return t;
}

/* Start lokid on @text, its stderr into logpath; wait for "ready" when @wait. */
static void start(const char *text, bool wait)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    char topo[512];
    snprintf(topo, sizeof(topo), "%s", loki_test_write_tmp(text, ".yaml"));
    snprintf(sock, sizeof(sock), "%s", loki_test_tmp_path("lokid.sock"));
    snprintf(logpath, sizeof(logpath), "%s", loki_test_tmp_path("lokid.log"));
    lokid_pid = fork();
    if (lokid_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(fds[0]);
        int lf = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (lf < 0 || dup2(lf, 2) != 2)
            _exit(126);
        char fd[16];
        snprintf(fd, sizeof(fd), "%d", fds[1]);
        execl(loki_test_bin("bin/lokid"), "lokid", "--topology", topo, "--socket", sock,
              "--ready-fd", fd, "--initial-demand", "20", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    if (wait) {
        char buf[16] = {0};
        ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
        if (n <= 0)
            fprintf(stderr, "lokid never got ready; its log: %s\n", logpath);
        assert_true(n > 0 && !strncmp(buf, "ready", 5));
    }
    close(fds[0]);
}

static void stop(void)
{
    int st = 0;
    kill(lokid_pid, SIGTERM);
    assert_int_equal(waitpid(lokid_pid, &st, 0), lokid_pid);
    lokid_pid = 0;
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static const char *log_text(void)
{
    static char buf[1 << 20];
    FILE *f = fopen(logpath, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static bool bytes_is(struct loki_bytes b, const char *s)
{
    return b.len == strlen(s) && !memcmp(b.ptr, s, b.len);
}

/* Lines of @text that start with @prefix. */
static int count_lines(const char *text, const char *prefix)
{
    int n = 0;
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        n += !strncmp(l, prefix, strlen(prefix));
    return n;
}

/* The boxes of a detector's JSON output. */
static int boxes_of(struct loki_bytes out, float (*b)[4], int max)
{
    char text[8192];
    snprintf(text, sizeof(text), "%.*s", (int)out.len, (const char *)out.ptr);
    int n = 0;
    for (const char *s = text; n < max && (s = strstr(s, "\"box\":[")); s += 7, n++)
        assert_int_equal(sscanf(s + 7, "%f,%f,%f,%f", &b[n][0], &b[n][1], &b[n][2], &b[n][3]), 4);
    return n;
}

/* One picture through @pipeline: the tree is detect -> 2 boxes -> one colour and one kind
 * node per box, each answering for its own box's crop. */
static void check_tree(struct loki_client *c, const char *pipeline, bool jpeg)
{
    size_t len;
    uint8_t *img = encode_picture(jpeg, &len);
    assert_non_null(img);
    struct loki_client_req req = {
        .pipeline = pipeline, .payload = img, .payload_len = (uint32_t)len, .timeout_ms = 30000};
    struct loki_client_result res;
    assert_int_equal(loki_client_infer(c, &req, &res), 0);
    free(img);
    if (res.status != LOKI_STATUS_OK)
        fprintf(stderr, "%s: %s: %s\n", pipeline, loki_status_name(res.status), res.error);
    assert_int_equal(res.status, LOKI_STATUS_OK);
    int root = loki_reply_next_child(res.nodes, res.n_nodes, -1, -1);
    assert_int_equal(root, 0);
    assert_true(bytes_is(res.nodes[root].task, "detect"));
    fprintf(stderr, "%s %s: detect: %.*s\n", pipeline, jpeg ? "jpeg" : "png",
            (int)res.nodes[root].output.len, (const char *)res.nodes[root].output.ptr);
    float boxes[8][4];
    int nb = boxes_of(res.nodes[root].output, boxes, 8);
    assert_int_equal(nb, N_RED);
    for (int k = 0; k < nb; k++)
        assert_true(cell_of(boxes[k]) >= 0);
    int n_colour = 0, n_kind = 0;
    bool seen[N_RED][2] = {{false}};
    for (int k = loki_reply_next_child(res.nodes, res.n_nodes, root, -1); k >= 0;
         k = loki_reply_next_child(res.nodes, res.n_nodes, root, k)) {
        const struct loki_reply_node *nd = &res.nodes[k];
        if (nd->status != LOKI_STATUS_OK)
            fprintf(stderr, "child %d: %.*s\n", k, (int)nd->output.len, (char *)nd->output.ptr);
        assert_int_equal(nd->status, LOKI_STATUS_OK);
        int cell;
        if (bytes_is(nd->task, "colour")) {
            /* the raw output, a tensor: the crop's mean colour, and the box it came from */
            struct loki_tensor t;
            char err[128];
            assert_int_equal(loki_tensor_parse(nd->output.ptr, nd->output.len, &t, err, 128), 0);
            assert_int_equal(t.ndim, 1);
            assert_int_equal(t.shape[0], 3);
            assert_true(t.has_box);
            cell = cell_of(t.box);
            assert_true(cell >= 0);
            /* the box its parent's box implies: 32x32 pixels of the picture */
            assert_float_equal(t.box[2] - t.box[0], 32, 1);
            assert_float_equal(t.box[3] - t.box[1], 32, 1);
            float m[3]; /* reply slices are not aligned */
            memcpy(m, t.data, sizeof(m));
            float tol = jpeg ? 0.05f : 0.002f;
            assert_float_equal(m[0], 1.f, tol);
            assert_float_equal(m[1], red_cells[cell].green / 255.f, tol);
            assert_false(seen[cell][0]);
            seen[cell][0] = true;
            n_colour++;
        } else {
            assert_true(bytes_is(nd->task, "kind"));
            /* top-2 JSON with the crop's box; red is the largest logit */
            char text[512];
            snprintf(text, sizeof(text), "%.*s", (int)nd->output.len, (const char *)nd->output.ptr);
            float b[4];
            assert_int_equal(sscanf(text, "{\"box\":[%f,%f,%f,%f]", &b[0], &b[1], &b[2], &b[3]), 4);
            cell = cell_of(b);
            assert_true(cell >= 0);
            assert_non_null(strstr(text, "\"top\":[{\"class\":0,\"label\":\"red\",\"score\":"));
            assert_false(seen[cell][1]);
            seen[cell][1] = true;
            n_kind++;
        }
    }
    assert_int_equal(n_colour, N_RED);
    assert_int_equal(n_kind, N_RED);
    assert_int_equal(res.n_nodes, 1 + 2 * N_RED);
    loki_client_result_fini(&res);
}

static void test_crops_down_the_tree(void **state)
{
    (void)state;
    start(topology_good(), true);
    struct loki_client *c;
    assert_int_equal(loki_client_connect(sock, NULL, &c), 0);
    check_tree(c, "vision", false);
    check_tree(c, "vision", true);
    check_tree(c, "coded", false);
    loki_client_close(c);
    stop();
}

#define BURST 64
static atomic_int answered[BURST], ok_count, bad_ok;
static char bad_error[256];

static void on_flat(void *ctx, const struct loki_reply *r)
{
    int i = (int)(intptr_t)ctx;
    atomic_fetch_add(&answered[i], 1);
    bool ok =
        r->status == LOKI_STATUS_OK && r->n_nodes == 1 && r->nodes[0].status == LOKI_STATUS_OK;
    if (i == BURST / 2) {
        if (ok)
            atomic_fetch_add(&bad_ok, 1);
        const struct loki_bytes e = r->n_nodes ? r->nodes[0].output : r->error;
        snprintf(bad_error, sizeof(bad_error), "%s: %.*s", loki_status_name(r->status), (int)e.len,
                 (const char *)e.ptr);
    } else if (ok) {
        atomic_fetch_add(&ok_count, 1);
    } else {
        fprintf(stderr, "query %d: %s %.*s\n", i, loki_status_name(r->status), (int)r->error.len,
                (const char *)r->error.ptr);
    }
}

/* A uint8 tensor payload of 3 x @h x 8; malloc'ed. */
static uint8_t *grey_tensor(int h, size_t *len)
{
    int64_t shape[3] = {3, h, 8};
    size_t data = (size_t)3 * (size_t)h * 8;
    size_t hdr = loki_tensor_header_len(LOKI_DTYPE_UINT8, 3, false);
    uint8_t *p = malloc(hdr + data);
    loki_tensor_write_header(p, LOKI_DTYPE_UINT8, 3, shape, data, NULL);
    memset(p + hdr, 128, data);
    *len = hdr + data;
    return p;
}

static void test_wrong_shape_fails_alone(void **state)
{
    (void)state;
    start(topology_good(), true);
    struct loki_client *c;
    assert_int_equal(loki_client_connect(sock, NULL, &c), 0);
    size_t glen, blen;
    uint8_t *good = grey_tensor(8, &glen), *bad = grey_tensor(9, &blen);
    for (int i = 0; i < BURST; i++) {
        struct loki_client_req req = {.pipeline = "flat",
                                      .payload = i == BURST / 2 ? bad : good,
                                      .payload_len = (uint32_t)(i == BURST / 2 ? blen : glen),
                                      .timeout_ms = 30000};
        assert_int_equal(loki_client_submit(c, &req, on_flat, (void *)(intptr_t)i, NULL), 0);
    }
    for (int t = 0; t < 3000; t++) {
        int n = 0;
        for (int i = 0; i < BURST; i++)
            n += atomic_load(&answered[i]) > 0;
        if (n == BURST)
            break;
        sleep_ms(10);
    }
    for (int i = 0; i < BURST; i++)
        assert_int_equal(atomic_load(&answered[i]), 1);
    fprintf(stderr, "wrong shape: %s; the other %d: %d ok\n", bad_error, BURST - 1,
            atomic_load(&ok_count));
    assert_int_equal(atomic_load(&ok_count), BURST - 1);
    assert_int_equal(atomic_load(&bad_ok), 0);
    assert_non_null(strstr(bad_error, "input shape [3,9,8] is not the model's [3,8,8]"));
    free(good);
    free(bad);
    loki_client_close(c);
    stop();
}

static atomic_int bad_answers[3][16];

static void on_bad(void *ctx, const struct loki_reply *r)
{
    int k = (int)(intptr_t)ctx;
    atomic_fetch_add(&bad_answers[k / 16][k % 16], 1);
    (void)r;
}

static void test_bad_models_refuse_to_start(void **state)
{
    (void)state;
    start(topology_bad(), true); /* ready: flat's worker is up, the others retry */
    const char *missing = model("no-such-model.pt"), *corrupt = model("corrupt.pt");
    /* each refusal is logged naming its file (the worker's line, then lokid's) */
    const char *log = NULL;
    for (int t = 0; t < 500; t++) {
        log = log_text();
        if (strstr(log, missing) && strstr(log, corrupt))
            break;
        sleep_ms(20);
    }
    if (!strstr(log, missing) || !strstr(log, corrupt))
        fprintf(stderr, "lokid's log:\n%s\n", log);
    assert_non_null(strstr(log, missing));
    assert_non_null(strstr(log, corrupt));
    assert_non_null(strstr(log, "not a TorchScript model"));
    struct loki_client *c;
    assert_int_equal(loki_client_connect(sock, NULL, &c), 0);
    size_t glen;
    uint8_t *good = grey_tensor(8, &glen);
    const char *pipes[3] = {"flat", "missing", "corrupt"};
    int accepted = 0;
    for (int k = 0; k < 48; k++) {
        struct loki_client_req req = {.pipeline = pipes[k / 16],
                                      .payload = good,
                                      .payload_len = (uint32_t)glen,
                                      .timeout_ms = 30000};
        if (loki_client_submit(c, &req, on_bad, (void *)(intptr_t)k, NULL) == 0)
            accepted++;
    }
    assert_int_equal(accepted, 48);
    /* flat answers; every query of the broken pipelines is answered too, once (not ok) */
    for (int t = 0; t < 3000; t++) {
        int n = 0;
        for (int k = 0; k < 48; k++)
            n += atomic_load(&bad_answers[k / 16][k % 16]) > 0;
        if (n == 48)
            break;
        sleep_ms(10);
    }
    for (int k = 0; k < 48; k++)
        assert_int_equal(atomic_load(&bad_answers[k / 16][k % 16]), 1);
    struct loki_client_req req = {
        .pipeline = "flat", .payload = good, .payload_len = (uint32_t)glen};
    struct loki_client_result res;
    assert_int_equal(loki_client_infer(c, &req, &res), 0);
    assert_int_equal(res.status, LOKI_STATUS_OK);
    loki_client_result_fini(&res);
    req.pipeline = "missing";
    assert_int_equal(loki_client_infer(c, &req, &res), 0);
    fprintf(stderr, "a query for the variant that cannot start: %s (%s)\n",
            loki_status_name(res.status), res.error);
    assert_int_not_equal(res.status, LOKI_STATUS_OK);
    loki_client_result_fini(&res);
    free(good);
    loki_client_close(c);
    stop();
}

/* `loki load --payload-dir DIR --show N`: the pictures of DIR go out as payloads, and the
 * result trees come back printed, node under parent. */
static void test_load_payload_dir(void **state)
{
    (void)state;
    start(topology_good(), true);
    char dir[512], path[600], trace[512];
    snprintf(dir, sizeof(dir), "%s", loki_test_tmp_path("pictures"));
    mkdir(dir, 0700);
    for (int k = 0; k < 2; k++) {
        size_t len;
        uint8_t *img = encode_picture(k == 1, &len);
        snprintf(path, sizeof(path), "%s/%d.%s", dir, k, k ? "jpg" : "png");
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(img, 1, len, f), len);
        fclose(f);
        free(img);
    }
    snprintf(trace, sizeof(trace), "%s",
             loki_test_write_tmp("second,requests\n0,5\n1,5\n", ".csv"));
    char cmd[4096];
    snprintf(cmd, sizeof(cmd),
             "'%s' load --socket '%s' --pipeline vision --trace '%s' --payload-dir '%s' --show 2 "
             "--timeout-ms 60000",
             loki_test_bin("bin/loki"), sock, trace, dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    static char out[65536];
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = 0;
    int st = pclose(p);
    fprintf(stderr, "%s", out);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(count_lines(out, "  detect/det0 ok: {\"image\":[128,96],\"boxes\":[{\"box\":"),
                     2);
    assert_int_equal(count_lines(out, "    colour/mean0 ok: <"), 2 * N_RED);
    assert_int_equal(count_lines(out, "    kind/lin0 ok: {\"box\":["), 2 * N_RED);
    /* every query sent was answered ok (the summary's counts) */
    unsigned sent = 0, ok = 0;
    const char *l = strstr(out, "\n  sent");
    assert_non_null(l);
    assert_int_equal(sscanf(l, "\n  sent %u", &sent), 1);
    assert_non_null((l = strstr(out, "\n    ok")));
    assert_int_equal(sscanf(l, "\n    ok %u", &ok), 1);
    assert_true(sent >= 2);
    assert_int_equal(ok, sent);
    stop();
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    models_dir(); /* 77 without torch */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_crops_down_the_tree, teardown),
        cmocka_unit_test_teardown(test_wrong_shape_fails_alone, teardown),
        cmocka_unit_test_teardown(test_bad_models_refuse_to_start, teardown),
        cmocka_unit_test_teardown(test_load_payload_dir, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
