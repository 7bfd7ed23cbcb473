/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Topology loader: the examples load with the values the importer wrote,
 * JSON is accepted, and every class of bad file is rejected with a message
 * that names file:line:column and the key.
 */
#include "harness.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loki/error.h"
#include "loki/topology.h"

/* A small valid pipeline: root a (2 variants) -> children b and c. */
#define GOOD                                                                                       \
    "gpus:\n"                                                                                      \
    "  count: 2\n"                                                                                 \
    "  share_granularity: 0.5\n"                                                                   \
    "pipelines:\n"                                                                                 \
    "  - name: p\n"                                                                                \
    "    slo_ms: 100\n"                                                                            \
    "    tasks:\n"                                                                                 \
    "      - name: a\n"                                                                            \
    "        children: [b, c]\n"                                                                   \
    "        variants:\n"                                                                          \
    "          - name: a1\n"                                                                       \
    "            accuracy: 80\n"                                                                   \
    "            batch_sizes: [1, 4]\n"                                                            \
    "            latency_ms: {1: [5, 10], 0.5: [8, 16]}\n"                                         \
    "            fanout: {b: 2, c: {mean: 0.5, dist: constant}}\n"                                 \
    "          - name: a2\n"                                                                       \
    "            accuracy: 100\n"                                                                  \
    "            batch_sizes: [1, 4]\n"                                                            \
    "            latency_ms: [10, 20]\n"                                                           \
    "            fanout: {b: 3, c: 1}\n"                                                           \
    "      - name: b\n"                                                                            \
    "        variants:\n"                                                                          \
    "          - {name: b1, accuracy: 100, batch_sizes: [1], latency_ms: [2]}\n"                   \
    "      - name: c\n"                                                                            \
    "        variants:\n"                                                                          \
    "          - {name: c1, accuracy: 100, batch_sizes: [1], latency_ms: [3]}\n"

static char err[8192];

static int parse(const char *text, struct loki_topology **t)
{
    *t = NULL;
    return loki_topology_parse(text, strlen(text), "t.yaml", t, err, sizeof(err));
}

/* Parse with the deployment sections into *@cfg. */
static int parse_cfg(const char *text, struct loki_topology **t, struct loki_config *cfg)
{
    *t = NULL;
    return loki_config_parse(text, strlen(text), "t.yaml", t, cfg, err, sizeof(err));
}

/* Replace the first occurrence of @from in GOOD by @to and parse; must fail with @want. */
static void expect_error(const char *from, const char *to, const char *want)
{
    const char *base = GOOD;
    const char *at = strstr(base, from);
    assert_non_null(at);
    char doc[4096];
    snprintf(doc, sizeof(doc), "%.*s%s%s", (int)(at - base), base, to, at + strlen(from));
    struct loki_topology *t;
    int rc = parse(doc, &t);
    if (rc != LOKI_ETOPOLOGY || !strstr(err, want))
        fprintf(stderr, "replacing '%s' by '%s': rc %d, got:\n%s\nwanted: %s\n", from, to, rc, err,
                want);
    assert_int_equal(rc, LOKI_ETOPOLOGY);
    assert_non_null(strstr(err, want));
    assert_null(t);
}

static void test_good(void **state)
{
    struct loki_topology *t;
    assert_int_equal(parse(GOOD, &t), 0);
    assert_int_equal(t->gpus.count, 2);
    assert_int_equal(t->n_pipelines, 1);
    const struct loki_pipeline *p = &t->pipelines[0];
    assert_int_equal(p->n_tasks, 3);
    assert_int_equal(p->root, 0);
    const struct loki_variant *a1 = &p->tasks[0].variants[0];
    assert_int_equal(a1->n_shares, 2);
    assert_true(a1->shares[0] == 1.0 && a1->shares[1] == 0.5);
    /* interpolation between batch 1 and 4, and the half-share row */
    assert_true(loki_variant_latency(a1, 2, 1.0) > 5 && loki_variant_latency(a1, 2, 1.0) < 10);
    assert_true(loki_variant_latency(a1, 4, 0.5) == 16);
    assert_true(loki_variant_latency(a1, 5, 1.0) < 0);
    assert_true(a1->fanout[0].mean == 2 && a1->fanout[1].mean == 0.5);
    assert_int_equal(a1->fanout[1].dist, LOKI_FANOUT_CONSTANT);
    assert_int_equal(loki_task_best_variant(&p->tasks[0]), 1);
    int chains[8][LOKI_MAX_TASKS], len[8];
    assert_int_equal(loki_pipeline_chains(p, chains, len, 8), 2);
    assert_int_equal(len[0], 2);
    /* defaults */
    assert_true(t->planner.headroom == 0.5);
    assert_int_equal(t->planner.burst_spares, 0);
    assert_true(t->planner.fallback);
    assert_true(t->planner.demand_sigmas == 2);
    assert_true(t->planner.accuracy_floor == 0);
    free(t);
}

static void test_planner_keys(void **state)
{
    struct loki_topology *t;
    char doc[4096];
    snprintf(doc, sizeof(doc),
             "%splanner: {burst_spares: 2, beta: 1.2, policy: proteus, fallback: false, "
             "demand_sigmas: 1, accuracy_floor: 95.5}\n",
             GOOD);
    int rc = parse(doc, &t);
    if (rc)
        fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(t->planner.burst_spares, 2);
    assert_false(t->planner.fallback);
    assert_true(t->planner.demand_sigmas == 1);
    assert_true(t->planner.accuracy_floor == 95.5);
    assert_true(t->planner.beta == 1.2);
    assert_int_equal(t->planner.policy, LOKI_POLICY_PROTEUS);
    free(t);
    expect_error("pipelines:\n", "planner: {burst_spares: 99}\npipelines:\n",
                 "burst_spares: 99 is out of range [0, 16]");
    expect_error("pipelines:\n", "planner: {demand_sigmas: -1}\npipelines:\n",
                 "demand_sigmas: -1 is out of range [0, 10]");
    expect_error("pipelines:\n", "planner: {accuracy_floor: 101}\npipelines:\n",
                 "accuracy_floor: 101 is out of range [0, 100]");
    expect_error("pipelines:\n", "planner: {fallback: 3}\npipelines:\n", "fallback");
}

static void test_runtime_keys(void **state)
{
    struct loki_topology *t;
    struct loki_config cfg;
    char doc[4096];
    assert_int_equal(parse_cfg(GOOD, &t, &cfg), 0);
    assert_true(cfg.runtime.spin_us == 50);
    assert_int_equal(cfg.frontend.mode, 0660);
    assert_int_equal(cfg.frontend.max_inflight, 65536);
    free(t);
    snprintf(doc, sizeof(doc), "%sruntime: {spin_us: 0}\nfrontend: {max_inflight: 7}\n", GOOD);
    assert_int_equal(parse_cfg(doc, &t, &cfg), 0);
    assert_true(cfg.runtime.spin_us == 0);
    assert_int_equal(cfg.frontend.max_inflight, 7);
    free(t);
    expect_error("pipelines:\n", "runtime: {spin_us: 20000}\npipelines:\n",
                 "spin_us: 20000 is out of range [0, 10000]");
    expect_error("pipelines:\n", "runtime: {spin: 5}\npipelines:\n",
                 "spin: unknown key in runtime");
}

/* Where the metrics endpoint listens: loopback and no endpoint by default; IP literals only. */
static void test_runtime_metrics_keys(void **state)
{
    struct loki_topology *t;
    struct loki_config cfg;
    char doc[4096];
    assert_int_equal(parse_cfg(GOOD, &t, &cfg), 0);
    assert_string_equal(cfg.runtime.metrics_address, "127.0.0.1");
    assert_int_equal(cfg.runtime.metrics_port, -1);
    free(t);
    snprintf(doc, sizeof(doc), "%sruntime: {metrics_address: \"::\", metrics_port: 9464}\n", GOOD);
    assert_int_equal(parse_cfg(doc, &t, &cfg), 0);
    assert_string_equal(cfg.runtime.metrics_address, "::");
    assert_int_equal(cfg.runtime.metrics_port, 9464);
    free(t);
    snprintf(doc, sizeof(doc), "%sruntime: {metrics_address: 10.1.2.3, metrics_port: 0}\n", GOOD);
    assert_int_equal(parse_cfg(doc, &t, &cfg), 0);
    assert_string_equal(cfg.runtime.metrics_address, "10.1.2.3");
    assert_int_equal(cfg.runtime.metrics_port, 0);
    free(t);
    expect_error("pipelines:\n", "runtime: {metrics_address: localhost}\npipelines:\n",
                 "metrics_address: expected an IPv4 or IPv6 address");
    expect_error("pipelines:\n", "runtime: {metrics_port: 70000}\npipelines:\n",
                 "metrics_port: 70000 is out of range [0, 65535]");
}

/* The frontend's connection knobs: defaults (0 = sized from RLIMIT_NOFILE by the frontend),
 * values and range checks. */
static void test_frontend_conn_keys(void **state)
{
    struct loki_topology *t;
    struct loki_config cfg;
    char doc[4096];
    assert_int_equal(parse_cfg(GOOD, &t, &cfg), 0);
    assert_int_equal(cfg.frontend.max_conns, 0);
    assert_int_equal(cfg.frontend.max_conns_per_uid, 0);
    assert_true(cfg.frontend.idle_timeout_s == 60);
    free(t);
    snprintf(doc, sizeof(doc),
             "%sfrontend: {max_connections: 300, max_connections_per_uid: 20, "
             "idle_timeout_s: 0.25}\n",
             GOOD);
    int rc = parse_cfg(doc, &t, &cfg);
    if (rc)
        fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(cfg.frontend.max_conns, 300);
    assert_int_equal(cfg.frontend.max_conns_per_uid, 20);
    assert_true(cfg.frontend.idle_timeout_s == 0.25);
    free(t);
    expect_error("pipelines:\n", "frontend: {max_connections: 0}\npipelines:\n",
                 "max_connections: 0 is out of range [1, 1.04858e+06]");
    expect_error("pipelines:\n", "frontend: {max_connections: 2000000}\npipelines:\n",
                 "max_connections: 2e+06 is out of range [1, 1.04858e+06]");
    expect_error("pipelines:\n", "frontend: {max_connections_per_uid: -1}\npipelines:\n",
                 "max_connections_per_uid: -1 is out of range [1, 1.04858e+06]");
    expect_error("pipelines:\n",
                 "frontend: {max_connections: 10, max_connections_per_uid: 11}\npipelines:\n",
                 "max_connections_per_uid: 11 exceeds max_connections 10");
    expect_error("pipelines:\n", "frontend: {idle_timeout_s: 0}\npipelines:\n",
                 "idle_timeout_s: 0 is out of range (0, 86400]");
    expect_error("pipelines:\n", "frontend: {idle_timeout_s: 90000}\npipelines:\n",
                 "idle_timeout_s: 90000 is out of range (0, 86400]");
    expect_error("pipelines:\n", "frontend: {idle_timeout_s: soon}\npipelines:\n",
                 "idle_timeout_s: expected a number, got 'soon'");
    expect_error("pipelines:\n", "frontend: {max_conns: 5}\npipelines:\n",
                 "max_conns: unknown key in frontend");
}

static void test_json_accepted(void **state)
{
    const char *json =
        "{\"gpus\": {\"count\": 1}, \"pipelines\": [{\"name\": \"p\", \"slo_ms\": 50, "
        "\"tasks\": [{\"name\": \"a\", \"variants\": [{\"name\": \"v\", \"accuracy\": 100, "
        "\"batch_sizes\": [1, 2], \"latency_ms\": [1.5, 2.5]}]}]}]}";
    struct loki_topology *t;
    assert_int_equal(parse(json, &t), 0);
    assert_string_equal(t->pipelines[0].tasks[0].variants[0].name, "v");
    free(t);
}

static void test_unknown_child(void **state)
{
    expect_error("children: [b, c]", "children: [b, d]",
                 "t.yaml:9:23: children: unknown child task 'd' of task 'a'");
}

static void test_cycle(void **state)
{
    expect_error("      - name: b\n", "      - name: b\n        children: [a]\n", "closes a cycle");
}

static void test_no_profile(void **state)
{
    expect_error("            latency_ms: [10, 20]\n", "",
                 "t.yaml:16:13: latency_ms: variant 'a2' has no latency profile");
}

static void test_bad_latency(void **state)
{
    expect_error("latency_ms: [10, 20]", "latency_ms: [10, -1]",
                 "t.yaml:19:30: latency_ms: latency must be positive, got -1 ms");
    expect_error("latency_ms: [10, 20]", "latency_ms: [10, 0]", "latency must be positive");
}

/* Like expect_error(), on the result of replacing @from by @to (a string with NULs: @to_len). */
static void expect_error_n(const char *from, const char *to, size_t to_len, const char *want)
{
    const char *base = GOOD;
    const char *at = strstr(base, from);
    assert_non_null(at);
    char doc[4096];
    size_t pre = (size_t)(at - base), post = strlen(at + strlen(from));
    assert_true(pre + to_len + post < sizeof(doc));
    memcpy(doc, base, pre);
    memcpy(doc + pre, to, to_len);
    memcpy(doc + pre + to_len, at + strlen(from), post);
    struct loki_topology *t = NULL;
    int rc = loki_topology_parse(doc, pre + to_len + post, "t.yaml", &t, err, sizeof(err));
    if (rc != LOKI_ETOPOLOGY || !strstr(err, want))
        fprintf(stderr, "replacing '%s': rc %d, got:\n%s\nwanted: %s\n", from, rc, err, want);
    assert_int_equal(rc, LOKI_ETOPOLOGY);
    assert_non_null(strstr(err, want));
    assert_null(t);
    free(t);
}

/*
 * A NUL byte in a name ("a\0b", YAML's escape in double quotes) used to be cut there: "a2\0b"
 * loaded as variant a2. Every scalar with one is refused, names, keys and references alike.
 */
static void test_nul_in_strings(void **state)
{
    expect_error("- name: a2", "- name: \"a2\\0b\"",
                 "t.yaml:16:19: name: \"a2\\0b\" contains a NUL byte");
    expect_error("  - name: p\n", "  - name: \"p\\0\"\n",
                 "t.yaml:5:11: name: \"p\\0\" contains a NUL byte");
    expect_error("      - name: c\n", "      - name: \"c\\0x\"\n",
                 "t.yaml:24:15: name: \"c\\0x\" contains a NUL byte");
    expect_error("children: [b, c]", "children: [b, \"c\\0\"]",
                 "t.yaml:9:23: children: \"c\\0\" contains a NUL byte");
    expect_error("accuracy: 80", "\"accuracy\\0x\": 80",
                 "t.yaml:12:13: variants: key \"accuracy\\0x\" contains a NUL byte");
    expect_error("pipelines:\n", "frontend: {socket: \"/run/a\\0/b.sock\"}\npipelines:\n",
                 "socket: \"/run/a\\0/b.sock\" contains a NUL byte");
    /* a raw NUL byte in the file is not YAML at all */
    expect_error_n("name: a2", "name: a2\0b", 10, "YAML syntax error");
    /* every one is reported, not only the first */
    struct loki_topology *t;
    const char *doc = "gpus: {count: 1}\npipelines:\n  - {name: \"x\\0\", slo_ms: 9, "
                      "tasks: [{name: \"y\\0\", variants: []}]}\n";
    assert_int_equal(parse(doc, &t), LOKI_ETOPOLOGY);
    assert_non_null(strstr(err, "t.yaml:3:12: name: \"x\\0\" contains a NUL byte"));
    assert_non_null(strstr(err, "t.yaml:3:45: name: \"y\\0\" contains a NUL byte"));
}

/*
 * A value or key with a newline or a terminal escape went into its message raw, so one error
 * read as several lines (found by fuzz_topology: corpus/topology/yaml_features.yaml's block
 * scalar). Control characters show as '?'.
 */
static void test_one_error_per_line(void **state)
{
    expect_error("slo_ms: 100", "slo_ms: \"1\\n0\\e[2J\"",
                 "t.yaml:6:13: slo_ms: expected a number, got '1?0?[2J'");
    assert_null(strchr(err, '\n'));
    expect_error("accuracy: 80", "\"acc\\nuracy\": 80",
                 "t.yaml:12:13: acc?uracy: unknown key in variant");
    for (const char *l = err; l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        assert_int_equal(strncmp(l, "t.yaml:", 7), 0);
}

/*
 * Latencies had no upper bound: latency_ms: 1e308 loaded, and overflowed every sum over a path
 * and the sim worker's sleep in nanoseconds. Likewise a share granularity of 1e-300 "divides 1".
 * The bounds are inclusive: bench/e2e_zero.yaml's 1 ns workers still load.
 */
static void test_value_bounds(void **state)
{
    expect_error("latency_ms: [10, 20]", "latency_ms: [10, 1e308]",
                 "t.yaml:19:30: latency_ms: 1e+308 is out of range [1e-06, 3.6e+06]");
    expect_error("{1: [5, 10]", "{1: [5, 3.7e6]",
                 "latency_ms: 3.7e+06 is out of range [1e-06, 3.6e+06]");
    expect_error("latency_ms: [10, 20]", "latency_ms: [1e-7, 20]",
                 "latency_ms: 1e-07 is out of range [1e-06, 3.6e+06]");
    expect_error("share_granularity: 0.5", "share_granularity: 1e-300",
                 "t.yaml:3:22: share_granularity: 1e-300 is out of range [0.01, 1]");
    expect_error("share_granularity: 0.5", "share_granularity: 0.005",
                 "share_granularity: 0.005 is out of range [0.01, 1]");
    struct loki_topology *t;
    char doc[4096];
    const char *base = GOOD, *at = strstr(base, "latency_ms: [10, 20]");
    assert_non_null(at);
    snprintf(doc, sizeof(doc), "%.*slatency_ms: [0.000001, 3.6e6]%s", (int)(at - base), base,
             at + strlen("latency_ms: [10, 20]"));
    int rc = parse(doc, &t);
    if (rc)
        fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    assert_true(t->pipelines[0].tasks[0].variants[1].latency_ms[0][1] == 3.6e6);
    free(t);
}

static void test_batch_zero(void **state)
{
    expect_error("batch_sizes: [1, 4]", "batch_sizes: [0, 4]",
                 "t.yaml:13:27: batch_sizes: batch size must be 1..4096, got 0");
}

/* Every batch size 1..64 (what the Loki artifact profiles) loads; a 65th is refused. */
static void test_batch_sizes_64(void **state)
{
    char bs[1024], lat[2048], doc[8192];
    for (int n = 64; n <= 65; n++) {
        size_t ub = 0, ul = 0;
        for (int b = 1; b <= n; b++) {
            ub += (size_t)snprintf(bs + ub, sizeof(bs) - ub, "%s%d", b > 1 ? ", " : "", b);
            ul +=
                (size_t)snprintf(lat + ul, sizeof(lat) - ul, "%s%g", b > 1 ? ", " : "", 0.001 * b);
        }
        snprintf(doc, sizeof(doc),
                 "gpus: {count: 1}\npipelines:\n  - name: p\n    slo_ms: 100\n    tasks:\n"
                 "      - name: a\n        variants:\n          - {name: a1, accuracy: 100, "
                 "batch_sizes: [%s], latency_ms: [%s]}\n",
                 bs, lat);
        struct loki_topology *t;
        int rc = parse(doc, &t);
        if (n == 64) {
            assert_int_equal(rc, 0);
            assert_int_equal(t->pipelines[0].tasks[0].variants[0].n_batches, 64);
            assert_true(loki_variant_latency(&t->pipelines[0].tasks[0].variants[0], 64, 1) ==
                        0.064);
            free(t);
        } else {
            assert_int_equal(rc, LOKI_ETOPOLOGY);
            assert_non_null(strstr(err, "batch_sizes: needs 1..64 entries, has 65"));
        }
    }
}

static void test_slo_too_short(void **state)
{
    expect_error("slo_ms: 100", "slo_ms: 7",
                 "t.yaml:6:13: slo_ms: SLO 7 ms of pipeline 'p' is shorter than its fastest path "
                 "(8 ms at batch 1)");
}

static void test_accuracy_range(void **state)
{
    expect_error("accuracy: 80", "accuracy: 100.5",
                 "t.yaml:12:23: accuracy: 100.5 is out of range [0, 100]");
    expect_error("accuracy: 80", "accuracy: -3", "out of range");
}

static void test_duplicates(void **state)
{
    expect_error("- name: a2", "- name: a1", "duplicate variant name 'a1' in task 'a'");
    expect_error("      - name: c\n", "      - name: b\n", "duplicate task name 'b'");
    expect_error("    slo_ms: 100\n", "    slo_ms: 100\n    slo_ms: 90\n",
                 "slo_ms: duplicate key in pipeline");
}

static void test_unknown_key(void **state)
{
    expect_error("accuracy: 80", "acuracy: 80", "t.yaml:12:13: acuracy: unknown key in variant");
    expect_error("  count: 2\n", "  count: 2\n  cuont: 3\n", "cuont: unknown key in gpus");
}

static void test_wrong_types(void **state)
{
    expect_error("count: 2", "count: two", "t.yaml:2:10: count: expected an integer, got 'two'");
    expect_error("accuracy: 80", "accuracy: \"80\"", "accuracy: expected a number, got '80'");
    expect_error("children: [b, c]", "children: b", "children: expected a list, got a scalar");
    expect_error("slo_ms: 100", "slo_ms: [100]", "slo_ms: expected a scalar, got a list");
}

static void test_fanout_errors(void **state)
{
    expect_error("fanout: {b: 3, c: 1}", "fanout: {b: 3}",
                 "variant 'a2' of task 'a' gives no fan-out for child task 'c'");
    expect_error("fanout: {b: 3, c: 1}", "fanout: {b: 3, c: 1, x: 2}",
                 "fanout: 'x' is not a child task of 'a'");
}

static void test_syntax_error(void **state)
{
    struct loki_topology *t;
    assert_int_equal(parse("gpus: {count: 1\npipelines: [", &t), LOKI_ETOPOLOGY);
    assert_non_null(strstr(err, "t.yaml:"));
    assert_non_null(strstr(err, "YAML syntax error"));
}

static void test_share_granularity(void **state)
{
    expect_error("share_granularity: 0.5", "share_granularity: 1",
                 "profiled at share 0.5, not a multiple of gpus.share_granularity 1");
}

static void test_many_errors_reported(void **state)
{
    /* two independent mistakes: both are reported in one go */
    const char *doc = "gpus: {count: 0}\npipelines: 3\n";
    struct loki_topology *t;
    assert_int_equal(parse(doc, &t), LOKI_ETOPOLOGY);
    assert_non_null(strstr(err, "t.yaml:1:15: count: 0 is out of range"));
    assert_non_null(strstr(err, "t.yaml:2:12: pipelines: expected a list"));
}

static void test_examples_load(void **state)
{
    const char *files[] = {"examples/traffic_analysis.yaml", "examples/h200x8.yaml",
                           "examples/traffic_analysis_shares.yaml"};
    for (size_t i = 0; i < 3; i++) {
        struct loki_topology *t;
        int rc = loki_topology_load(loki_test_src(files[i]), &t, err, sizeof(err));
        if (rc)
            fprintf(stderr, "%s\n", err);
        assert_int_equal(rc, 0);
        const struct loki_pipeline *p = &t->pipelines[0];
        assert_string_equal(p->name, "traffic_analysis");
        assert_true(p->slo_ms == 250);
        assert_int_equal(p->n_tasks, 3);
        assert_int_equal(p->tasks[p->root].n_variants, 5);
        assert_int_equal(p->tasks[p->root].n_children, 2);
        int car = loki_pipeline_task_index(p, "car_classification");
        assert_true(car >= 0);
        assert_int_equal(p->tasks[car].n_variants, 7);
        /* yolov5x fan-out to cars: 18.894 * 0.9429 from branching.csv */
        const struct loki_task *od = &p->tasks[p->root];
        int x = loki_task_variant_index(od, "yolov5x");
        int slot = loki_task_child_slot(od, car);
        assert_true(od->variants[x].fanout[slot].mean > 17.8 &&
                    od->variants[x].fanout[slot].mean < 17.9);
        assert_int_equal(t->gpus.count, i == 1 ? 8 : 20);
        if (i > 0) {
            /* whole-GPU profiles, quarter granularity: 1/2 and 1/4 derived at latency / share */
            assert_int_equal(od->variants[x].n_shares, 3);
            assert_true(od->variants[x].share_scaled && od->variants[x].share_derived);
            assert_true(fabs(loki_variant_latency(&od->variants[x], 2, 0.25) -
                             4 * loki_variant_latency(&od->variants[x], 2, 1)) < 1e-9);
        } else {
            assert_int_equal(od->variants[x].n_shares, 1);
        }
        free(t);
    }
}

/* Whether the loader knows @key in top-level section @sec (it may still refuse the value 0). */
static bool key_known(const char *sec, const char *key)
{
    struct loki_topology *t = NULL;
    char doc[4096];
    if (!strcmp(sec, "gpus")) {
        const char *base = GOOD, *at = strstr(base, "  count: 2\n");
        assert_non_null(at);
        snprintf(doc, sizeof(doc), "%.*s  %s: 0\n%s", (int)(at - base), base, key, at);
    } else {
        snprintf(doc, sizeof(doc), "%s%s: {%s: 0}\n", GOOD, sec, key);
    }
    parse(doc, &t);
    free(t);
    return !strstr(err, "unknown key");
}

/*
 * Configuration keys the documentation names, as `section.key` in any text or as `key` rows of
 * the section tables in docs/topology.md, are keys the loader knows: docs/protocol.md once sent
 * readers to frontend.uids, frontend.max_payload and frontend.socket_path, which it refuses.
 */
static void test_docs_name_known_keys(void **state)
{
    static const char *const secs[] = {"gpus", "planner", "frontend", "runtime"};
    static const char *const files[] = {"README.md",      "docs/protocol.md",  "docs/topology.md",
                                        "docs/deploy.md", "docs/operator.md",  "docs/backend.md",
                                        "docs/gpu.md",    "docs/evaluation.md"};
    char bad[2048] = "";
    size_t nbad = 0;
    int checked = 0;
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        FILE *fp = fopen(loki_test_src(files[f]), "r");
        if (!fp)
            continue; /* not every tree has every document */
        char line[8192];
        int lineno = 0;
        const char *table = NULL; /* the section whose key table we are in */
        while (fgets(line, sizeof(line), fp)) {
            lineno++;
            if (line[0] == '#') {
                table = NULL;
                for (size_t k = 0; k < 4; k++) {
                    char h[64];
                    snprintf(h, sizeof(h), "## `%s`", secs[k]);
                    if (!strncmp(line, h, strlen(h)))
                        table = secs[k];
                }
            }
            for (const char *p = line; *p; p++) {
                char key[64] = "";
                const char *sec = NULL;
                if (table && p == line && !strncmp(p, "| `", 3) && strchr(p + 3, '`') &&
                    strncmp(p + 3, "key`", 4)) {
                    sec = table;
                    snprintf(key, sizeof(key), "%.*s", (int)(strchr(p + 3, '`') - (p + 3)), p + 3);
                }
                for (size_t k = 0; !sec && k < 4; k++) {
                    size_t n = strlen(secs[k]);
                    char before = p == line ? ' ' : p[-1];
                    if (strncmp(p, secs[k], n) || p[n] != '.' || before == '/' || before == '_' ||
                        (before >= 'a' && before <= 'z') || (before >= 'A' && before <= 'Z'))
                        continue;
                    size_t len = strspn(p + n + 1, "abcdefghijklmnopqrstuvwxyz_");
                    if (len < 3 || len >= sizeof(key)) /* planner.c, frontend.h: files */
                        continue;
                    sec = secs[k];
                    snprintf(key, sizeof(key), "%.*s", (int)len, p + n + 1);
                }
                if (!sec)
                    continue;
                checked++;
                if (!key_known(sec, key) && nbad < sizeof(bad))
                    nbad += (size_t)snprintf(bad + nbad, sizeof(bad) - nbad, "\n  %s:%d: %s.%s",
                                             files[f], lineno, sec, key);
            }
        }
        fclose(fp);
    }
    assert_true(checked > 30); /* the tables alone name more */
    if (bad[0])
        fail_msg("documented keys the loader does not know:%s", bad);
}

/* The example at the top of docs/topology.md loads as it is. */
static void test_docs_example_loads(void **state)
{
    FILE *fp = fopen(loki_test_src("docs/topology.md"), "r");
    assert_non_null(fp);
    char doc[8192] = "", line[1024];
    size_t used = 0;
    bool in = false, done = false;
    while (!done && fgets(line, sizeof(line), fp)) {
        if (!in) {
            in = !strncmp(line, "```yaml", 7);
            continue;
        }
        done = !strncmp(line, "```", 3);
        if (!done && used + strlen(line) < sizeof(doc))
            used += (size_t)snprintf(doc + used, sizeof(doc) - used, "%s", line);
    }
    fclose(fp);
    assert_true(done);
    struct loki_topology *t;
    int rc = loki_topology_parse(doc, used, "docs/topology.md", &t, err, sizeof(err));
    if (rc)
        fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    free(t);
}

static void test_missing_file(void **state)
{
    struct loki_topology *t = NULL;
    assert_true(loki_topology_load("/nonexistent/x.yaml", &t, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "/nonexistent/x.yaml: cannot open"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_runtime_keys),
        cmocka_unit_test(test_runtime_metrics_keys),
        cmocka_unit_test(test_frontend_conn_keys),
        cmocka_unit_test(test_json_accepted),
        cmocka_unit_test(test_unknown_child),
        cmocka_unit_test(test_cycle),
        cmocka_unit_test(test_no_profile),
        cmocka_unit_test(test_bad_latency),
        cmocka_unit_test(test_nul_in_strings),
        cmocka_unit_test(test_one_error_per_line),
        cmocka_unit_test(test_value_bounds),
        cmocka_unit_test(test_batch_zero),
        cmocka_unit_test(test_slo_too_short),
        cmocka_unit_test(test_accuracy_range),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_fanout_errors),
        cmocka_unit_test(test_syntax_error),
        cmocka_unit_test(test_share_granularity),
        cmocka_unit_test(test_batch_sizes_64),
        cmocka_unit_test(test_many_errors_reported),
        cmocka_unit_test(test_planner_keys),
        cmocka_unit_test(test_examples_load),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_docs_name_known_keys),
        cmocka_unit_test(test_docs_example_loads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
