/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Topology loader: the examples load with the values the importer wrote,
 * JSON is accepted, and every class of bad file is rejected with a message
 * that names file:line:column and the key.
 */
#include "harness.h"

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

static void test_batch_zero(void **state)
{
    expect_error("batch_sizes: [1, 4]", "batch_sizes: [0, 4]",
                 "t.yaml:13:27: batch_sizes: batch size must be 1..4096, got 0");
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
    const char *files[] = {"examples/traffic_analysis.yaml", "examples/h200x8.yaml"};
    for (size_t i = 0; i < 2; i++) {
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
        assert_int_equal(t->gpus.count, i == 0 ? 20 : 8);
        if (i == 1) {
            assert_int_equal(od->variants[x].n_shares, 3);
            assert_true(od->variants[x].share_scaled);
        }
        free(t);
    }
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
        cmocka_unit_test(test_frontend_conn_keys),
        cmocka_unit_test(test_json_accepted),
        cmocka_unit_test(test_unknown_child),
        cmocka_unit_test(test_cycle),
        cmocka_unit_test(test_no_profile),
        cmocka_unit_test(test_bad_latency),
        cmocka_unit_test(test_batch_zero),
        cmocka_unit_test(test_slo_too_short),
        cmocka_unit_test(test_accuracy_range),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_fanout_errors),
        cmocka_unit_test(test_syntax_error),
        cmocka_unit_test(test_share_granularity),
        cmocka_unit_test(test_many_errors_reported),
        cmocka_unit_test(test_planner_keys),
        cmocka_unit_test(test_examples_load),
        cmocka_unit_test(test_missing_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
