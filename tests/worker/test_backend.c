/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Backends through ABI version 2's emitter (a capturing struct loki_backend_out here): the sim
 * backend takes the profiled time, draws fan-outs with the right means reproducibly and moves
 * data of the sizes its args name; the example plugin cuts child payloads from its input; a
 * version-1 plugin runs through the adapter; a missing or wrong plugin is refused with a
 * clear message; a topology variant's config (loki_backend_setup_init) is what the worker
 * and `loki profile` hand init().
 */
#include "harness.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loki/backend.h"
#include "loki/backend_setup.h"
#include "loki/clock.h"
#include "loki/topology.h"

static const int batches[] = {1, 4};
static const double lat[] = {2.0, 6.0};
static const double means[] = {3.0, 0.25};
static const int dists[] = {0, 1};

static struct loki_backend_config cfg(uint64_t seed)
{
    struct loki_backend_config c = {.pipeline = "p",
                                    .task = "t",
                                    .variant = "v",
                                    .max_batch = 4,
                                    .share = 1,
                                    .gpu = -1,
                                    .n_batches = 2,
                                    .batches = batches,
                                    .latency_ms = lat,
                                    .n_children = 2,
                                    .fanout_mean = means,
                                    .fanout_dist = dists,
                                    .seed = seed,
                                    .max_output_bytes = 1u << 20};
    return c;
}

/* ---- a capturing emitter ------------------------------------------------------------------- */

#define QN 8
#define KIDS 4096

struct cap {
    struct loki_backend_out out; /* first: the callbacks get &out */
    uint8_t output[QN][4096];
    uint32_t out_len[QN];
    int32_t status[QN];
    char msg[QN][96];
    int n_kids[QN][2];
    struct {
        int q, c;
        uint32_t len;
        uint8_t data[256];
    } kid[KIDS];
    int n_kid;
};

static void *c_output(struct loki_backend_out *o, int i, uint32_t len)
{
    struct cap *c = (struct cap *)o;
    assert_true(i >= 0 && i < QN && len <= sizeof(c->output[0]));
    c->out_len[i] = len;
    return c->output[i];
}

static void *c_child(struct loki_backend_out *o, int i, int child, uint32_t len)
{
    struct cap *c = (struct cap *)o;
    assert_true(i >= 0 && i < QN && child >= 0 && child < 2 && len <= 256 && c->n_kid < KIDS);
    c->n_kids[i][child]++;
    c->kid[c->n_kid].q = i;
    c->kid[c->n_kid].c = child;
    c->kid[c->n_kid].len = len;
    return c->kid[c->n_kid++].data;
}

static void c_shrink(struct loki_backend_out *o, void *p, uint32_t len)
{
    (void)o, (void)p, (void)len;
}

static void c_fail(struct loki_backend_out *o, int i, int32_t status, const char *msg)
{
    struct cap *c = (struct cap *)o;
    c->status[i] = status;
    snprintf(c->msg[i], sizeof(c->msg[i]), "%s", msg ? msg : "");
}

static struct cap *cap_new(void)
{
    struct cap *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->out = (struct loki_backend_out){
        .output = c_output, .child = c_child, .shrink = c_shrink, .fail = c_fail};
    return c;
}

static const struct loki_backend_handle sim = {.be = NULL};

static void test_sim_latency_and_fanout(void **state)
{
    struct loki_backend_handle h = sim;
    h.be = loki_backend_sim();
    struct loki_backend_config c = cfg(42);
    void *s;
    assert_int_equal(loki_backend_init(&h, &c, &s), 0);
    struct loki_backend_query q[4] = {{.id = 1}, {.id = 2}, {.id = 3}, {.id = 4}};
    struct cap *k = cap_new();
    /* batch of 4 takes the profiled 6 ms (not less) */
    uint64_t t0 = loki_now_ns();
    assert_int_equal(loki_backend_infer(&h, s, q, 4, &k->out), 0);
    double ms = (double)(loki_now_ns() - t0) / 1e6;
    assert_true(ms >= 6.0);
    assert_int_equal(k->out_len[2], 3);
    assert_memory_equal(k->output[2], "v:3", 3);
    /* children have empty payloads by default */
    for (int j = 0; j < k->n_kid; j++)
        assert_int_equal(k->kid[j].len, 0);
    loki_backend_fini(&h, s);
    free(k);
    uint64_t rng = 7;
    double sum0 = 0, sum1 = 0;
    for (int i = 0; i < 100000; i++) {
        sum0 += loki_fanout_draw(&rng, 3.0, 0);
        sum1 += loki_fanout_draw(&rng, 0.25, 1);
    }
    assert_true(sum0 / 100000 > 2.95 && sum0 / 100000 < 3.05);
    assert_true(sum1 / 100000 > 0.24 && sum1 / 100000 < 0.26);
    double g = 0, big = 0;
    for (int i = 0; i < 100000; i++) {
        g += loki_fanout_draw(&rng, 5.0, 2);
        big += loki_fanout_draw(&rng, 17.8, 0);
    }
    assert_true(g / 100000 > 4.85 && g / 100000 < 5.15);
    assert_true(big / 100000 > 17.6 && big / 100000 < 18.0);
}

static void test_sim_reproducible(void **state)
{
    struct loki_backend_handle h = {.be = loki_backend_sim()};
    int a[8], b[8];
    for (int run = 0; run < 2; run++) {
        struct loki_backend_config c = cfg(99);
        c.latency_ms = (const double[]){0.0001, 0.0001};
        void *s;
        assert_int_equal(loki_backend_init(&h, &c, &s), 0);
        struct loki_backend_query q[4] = {{.id = 1}, {.id = 2}, {.id = 3}, {.id = 4}};
        for (int k = 0; k < 2; k++) {
            struct cap *cp = cap_new();
            assert_int_equal(loki_backend_infer(&h, s, q, 4, &cp->out), 0);
            for (int i = 0; i < 4; i++)
                (run ? b : a)[k * 4 + i] = cp->n_kids[i][0];
            free(cp);
        }
        loki_backend_fini(&h, s);
    }
    assert_memory_equal(a, b, sizeof(a));
}

/* args: the sim backend moves data of the configured sizes, derived from its input */
static void test_sim_sizes(void **state)
{
    struct loki_backend_handle h = {.be = loki_backend_sim()};
    struct loki_backend_config c = cfg(5);
    c.latency_ms = (const double[]){0.0001, 0.0001};
    const char *keys[] = {"output_bytes", "child_payload_bytes"};
    const char *vals[] = {"1000", "200"};
    c.n_args = 2;
    c.arg_keys = keys;
    c.arg_values = vals;
    c.fanout_mean = (const double[]){2, 0};
    c.fanout_dist = (const int[]){1, 1}; /* constant */
    void *s;
    assert_int_equal(loki_backend_init(&h, &c, &s), 0);
    char in[3] = "abc";
    struct loki_backend_query q = {.id = 1, .payload = in, .payload_len = 3};
    struct cap *k = cap_new();
    assert_int_equal(loki_backend_infer(&h, s, &q, 1, &k->out), 0);
    assert_int_equal(k->out_len[0], 1000);
    assert_memory_equal(k->output[0], "abcabc", 6);
    assert_int_equal(k->n_kids[0][0], 2);
    assert_int_equal(k->n_kid, 2);
    assert_int_equal(k->kid[0].len, 200);
    assert_memory_equal(k->kid[1].data, "abcabc", 6);
    loki_backend_fini(&h, s);
    free(k);
    /* a size that is not a number is refused at init */
    vals[1] = "lots";
    assert_int_equal(loki_backend_init(&h, &c, &s), -EINVAL);
}

static void test_plugin(void **state)
{
    struct loki_backend_handle h;
    char err[512];
    assert_int_equal(
        loki_backend_load_plugin(loki_test_bin("lib/loki_echo_backend.so"), &h, err, sizeof(err)),
        0);
    assert_non_null(h.be);
    assert_null(h.v1);
    assert_string_equal(h.be->name, "echo");
    struct loki_backend_config c = cfg(1);
    void *s;
    assert_int_equal(loki_backend_init(&h, &c, &s), 0);
    uint8_t payload[250];
    for (int i = 0; i < 250; i++)
        payload[i] = (uint8_t)(i / 100 + 1); /* pieces of 1s, 2s, (3s) */
    struct loki_backend_query q = {.id = 9, .payload = payload, .payload_len = sizeof(payload)};
    struct cap *k = cap_new();
    assert_int_equal(loki_backend_infer(&h, s, &q, 1, &k->out), 0);
    char want[64];
    snprintf(want, sizeof(want), "v sum=%u len=250", 100 * 1 + 100 * 2 + 50 * 3);
    assert_int_equal(k->out_len[0], strlen(want));
    assert_memory_equal(k->output[0], want, strlen(want));
    /* two whole pieces for each of the two child tasks, cut from the input */
    assert_int_equal(k->n_kids[0][0], 2);
    assert_int_equal(k->n_kids[0][1], 2);
    assert_int_equal(k->kid[0].len, 100);
    assert_int_equal(k->kid[0].data[0], 1);
    assert_int_equal(k->kid[1].data[99], 2);
    loki_backend_fini(&h, s);
    free(k);

    assert_int_equal(loki_backend_load_plugin("/nonexistent/x.so", &h, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "cannot load backend plugin /nonexistent/x.so"));
    /* a shared object without the entry point */
    assert_int_equal(loki_backend_load_plugin("libm.so.6", &h, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "exports neither loki_backend_v2_get nor loki_backend_v1_get"));
}

/* A version-1 plugin runs through the adapter: output, fan-out counts as empty children,
 * a per-query failure. */
static void test_v1_adapter(void **state)
{
    struct loki_backend_handle h;
    char err[512];
    assert_int_equal(loki_backend_load_plugin(loki_test_bin("lib/loki_test_v1_backend.so"), &h, err,
                                              sizeof(err)),
                     0);
    assert_null(h.be);
    assert_non_null(h.v1);
    struct loki_backend_config c = cfg(1);
    void *s;
    assert_int_equal(loki_backend_init(&h, &c, &s), 0);
    struct loki_backend_query q[2] = {{.id = 12}, {.id = 13}};
    struct cap *k = cap_new();
    assert_int_equal(loki_backend_infer(&h, s, q, 2, &k->out), 0);
    assert_int_equal(k->out_len[0], 5);
    assert_memory_equal(k->output[0], "v1:12", 5);
    assert_int_equal(k->n_kids[0][0], 2);
    assert_int_equal(k->kid[0].len, 0);
    assert_int_equal(k->status[1], -33);
    assert_int_equal(k->n_kids[1][0], 0);
    loki_backend_fini(&h, s);
    free(k);
}

/* A topology variant's backend and config as a worker (and `loki profile`) loads it: args,
 * max_output_bytes (given and default), the task's input and child names, the fan-out, the
 * profile at the share asked for; a share without a profile is refused. */
static void test_setup(void **state)
{
    static const char yaml[] =
        "gpus: {count: 1, share_granularity: 0.5}\n"
        "pipelines:\n"
        "  - name: p\n"
        "    slo_ms: 100\n"
        "    tasks:\n"
        "      - name: det\n"
        "        children: [cls, ocr]\n"
        "        input: \"RGB frame\"\n"
        "        variants:\n"
        "          - name: a\n"
        "            accuracy: 100\n"
        "            batch_sizes: [1, 4]\n"
        "            latency_ms: {1: [2, 6], 0.5: [3, 9]}\n"
        "            fanout: {cls: 2.5, ocr: {mean: 1, dist: constant}}\n"
        "            args: {model: /m/a.pt, threshold: 0.25}\n"
        "            max_output_bytes: 4096\n"
        "          - {name: b, accuracy: 90, batch_sizes: [1], latency_ms: [1],\n"
        "             fanout: {cls: 1, ocr: 0}, backend: /nonexistent/b.so}\n"
        "      - name: cls\n"
        "        variants: [{name: c, accuracy: 100, batch_sizes: [1], latency_ms: [1]}]\n"
        "      - name: ocr\n"
        "        variants: [{name: o, accuracy: 100, batch_sizes: [1], latency_ms: [1]}]\n";
    struct loki_topology *t;
    char err[1024];
    assert_int_equal(loki_topology_parse(yaml, strlen(yaml), "t.yaml", &t, err, sizeof(err)), 0);
    int det = loki_pipeline_task_index(&t->pipelines[0], "det");
    struct loki_backend_setup *su = malloc(sizeof(*su));
    assert_non_null(su);
    assert_int_equal(loki_backend_setup_init(su, t, 0, det, 0, 8, 0.5, 2, 42, err, sizeof(err)), 0);
    const struct loki_backend_config *c = &su->cfg;
    assert_string_equal(c->pipeline, "p");
    assert_string_equal(c->task, "det");
    assert_string_equal(c->variant, "a");
    assert_int_equal(c->max_batch, 8);
    assert_true(c->share == 0.5 && c->gpu == 2 && c->seed == 42);
    assert_int_equal(c->n_batches, 2);
    assert_true(c->latency_ms[0] == 3 && c->latency_ms[1] == 9); /* the share-0.5 row */
    assert_int_equal(c->n_children, 2);
    assert_string_equal(c->child_tasks[0], "cls");
    assert_string_equal(c->child_tasks[1], "ocr");
    assert_true(c->fanout_mean[0] == 2.5 && c->fanout_mean[1] == 1);
    assert_int_equal(c->fanout_dist[1], LOKI_FANOUT_CONSTANT);
    assert_int_equal(c->n_args, 2);
    assert_string_equal(loki_backend_arg(c, "model"), "/m/a.pt");
    assert_string_equal(loki_backend_arg(c, "threshold"), "0.25");
    assert_null(loki_backend_arg(c, "other"));
    assert_int_equal(c->max_output_bytes, 4096);
    assert_string_equal(c->input, "RGB frame");
    struct loki_backend_handle h;
    assert_int_equal(
        loki_backend_select(&t->pipelines[0].tasks[det].variants[0], &h, err, sizeof(err)), 0);
    assert_true(h.be == loki_backend_sim() && !h.v1);
    assert_string_equal(loki_backend_name(&h), "sim");

    /* variant b: no args, the default max_output_bytes, a plugin that is not there */
    assert_int_equal(loki_backend_setup_init(su, t, 0, det, 1, 1, 1, -1, 1, err, sizeof(err)), 0);
    assert_int_equal(su->cfg.n_args, 0);
    assert_int_equal(su->cfg.max_output_bytes, LOKI_DEFAULT_OUTPUT_BYTES);
    assert_int_equal(
        loki_backend_select(&t->pipelines[0].tasks[det].variants[1], &h, err, sizeof(err)),
        -ENOENT);
    assert_non_null(strstr(err, "/nonexistent/b.so"));
    /* b was profiled on whole GPUs only: the loader derived its half share (latency / share) */
    assert_int_equal(loki_backend_setup_init(su, t, 0, det, 1, 1, 0.5, -1, 1, err, sizeof(err)), 0);
    assert_true(su->cfg.latency_ms[0] == 2);
    /* a measured per-share profile keeps exactly its shares: a has none at 0.25 */
    assert_int_equal(loki_backend_setup_init(su, t, 0, det, 0, 1, 0.25, -1, 1, err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, "variant a has no profile at share 0.25"));
    /* a leaf task: no children, no input */
    int cls = loki_pipeline_task_index(&t->pipelines[0], "cls");
    assert_int_equal(loki_backend_setup_init(su, t, 0, cls, 0, 1, 1, -1, 1, err, sizeof(err)), 0);
    assert_int_equal(su->cfg.n_children, 0);
    assert_null(su->cfg.input);
    free(su);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sim_latency_and_fanout),
        cmocka_unit_test(test_sim_reproducible),
        cmocka_unit_test(test_sim_sizes),
        cmocka_unit_test(test_plugin),
        cmocka_unit_test(test_v1_adapter),
        cmocka_unit_test(test_setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
