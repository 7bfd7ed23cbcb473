/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Saying why, never failing silently: loki_topology_lint() names every variant that can never be
 * used, with its batch-1 latency against its budget, and the pipelines inferline and proteus
 * cannot serve; every policy's plan says why it serves less than its demand (loki_plan.why and
 * why_text), and says nothing when it serves it all.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "loki/planner.h"
#include "loki/topology.h"

static char err[8192];

/*
 * SLO 100, headroom 0.5: 50 ms of budget. a -> b -> c. a2 (48 ms) is the most accurate detector
 * but too slow with b and c after it (b1 2 ms + c1 1 ms leave a 47 ms); a3 does not fit a GPU's
 * memory; b2 (20 ms) fits Loki's budget but not proteus's slice (50 / 3 = 16.7 ms), and it is
 * b's only variant when @b_only_slow.
 */
static struct loki_topology *load(bool b_only_slow, const char *planner)
{
    char doc[4096];
    snprintf(doc, sizeof(doc),
             "gpus: {count: 4, memory_mb: 4000}\n"
             "%s"
             "pipelines:\n"
             "  - name: p\n"
             "    slo_ms: 100\n"
             "    tasks:\n"
             "      - name: a\n"
             "        children: [b]\n"
             "        variants:\n"
             "          - {name: a1, accuracy: 80, batch_sizes: [1, 4], latency_ms: [5, 10],"
             " fanout: {b: 1}}\n"
             "          - {name: a2, accuracy: 100, batch_sizes: [1, 4], latency_ms: [48, 60],"
             " fanout: {b: 1}}\n"
             "          - {name: a3, accuracy: 90, memory_mb: 5000, batch_sizes: [1],"
             " latency_ms: [6], fanout: {b: 1}}\n"
             "      - name: b\n"
             "        children: [c]\n"
             "        variants:\n"
             "%s"
             "          - {name: b2, accuracy: 100, batch_sizes: [1, 2], latency_ms: [20, 30],"
             " fanout: {c: 1}}\n"
             "      - name: c\n"
             "        variants:\n"
             "          - {name: c1, accuracy: 100, batch_sizes: [1, 8], latency_ms: [1, 4]}\n",
             planner,
             b_only_slow ? ""
                         : "          - {name: b1, accuracy: 90, batch_sizes: [1, 8],"
                           " latency_ms: [2, 6], fanout: {c: 1}}\n");
    struct loki_topology *t = NULL;
    int rc = loki_topology_parse(doc, strlen(doc), "e.yaml", &t, err, sizeof(err));
    if (rc)
        fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    t->planner.time_limit_ms = 60000; /* the answer, not what a loaded machine reaches */
    return t;
}

static int find(const struct loki_lint *l, int n, enum loki_lint_kind kind, const char *text)
{
    for (int i = 0; i < n; i++)
        if (l[i].kind == kind && strstr(l[i].text, text))
            return i;
    return -1;
}

static void test_lint(void **state)
{
    (void)state;
    struct loki_topology *t = load(false, "");
    /* budgets: h x SLO less the fastest rest of the pipeline */
    assert_true(fabs(loki_task_budget_ms(t, 0, 0) - 47) < 1e-9); /* b1 2 + c1 1 */
    assert_true(fabs(loki_task_budget_ms(t, 0, 1) - 44) < 1e-9); /* a1 5 + c1 1 */
    assert_true(fabs(loki_task_proteus_budget_ms(t, 0, 1) - 50.0 / 3) < 1e-9);
    struct loki_lint l[32];
    int n = loki_topology_lint(t, l, 32);
    assert_true(n <= 32);
    for (int i = 0; i < n; i++)
        fprintf(stderr, "  lint: %s\n", l[i].text);
    int i = find(l, n, LOKI_LINT_VARIANT_LATENCY, "a/a2 can never be used: 48 ms at batch 1");
    assert_true(i >= 0);
    assert_true(strstr(l[i].text, "leaves it 47 ms of the 50 ms budget") != NULL);
    assert_true(l[i].latency_ms == 48 && fabs(l[i].budget_ms - 47) < 1e-9);
    assert_int_equal(l[i].task, 0);
    assert_int_equal(l[i].variant, 1);
    assert_true(find(l, n, LOKI_LINT_VARIANT_MEMORY, "a/a3 can never be used: it needs 5000 MiB") >=
                0);
    assert_true(find(l, n, LOKI_LINT_INFERLINE, "a/a2 -> b/b2 -> c/c1 needs 69 ms") >= 0);
    /* b has b1 within proteus's slice: no proteus finding; nothing else is unusable */
    assert_int_equal(find(l, n, LOKI_LINT_PROTEUS, ""), -1);
    int unusable = 0;
    for (int k = 0; k < n; k++)
        unusable += l[k].kind == LOKI_LINT_VARIANT_LATENCY || l[k].kind == LOKI_LINT_VARIANT_MEMORY;
    assert_int_equal(unusable, 2);
    assert_int_equal(loki_topology_lint(t, NULL, 0), n);
    free(t);

    /* without b1, proteus's slice excludes b entirely */
    t = load(true, "");
    n = loki_topology_lint(t, l, 32);
    i = find(l, n, LOKI_LINT_PROTEUS, "task b an equal slice of the budget, 16.7 ms");
    assert_true(i >= 0);
    assert_true(strstr(l[i].text, "b2 needs 20 ms") != NULL);
    free(t);

    /* an SLO no path fits: the pipeline, and every variant, are named */
    t = load(false, "planner: {headroom: 0.05}\n");
    n = loki_topology_lint(t, l, 32);
    assert_true(find(l, n, LOKI_LINT_PIPELINE, "no policy can plan it") >= 0);
    assert_true(find(l, n, LOKI_LINT_VARIANT_LATENCY, "c/c1 can never be used") >= 0);
    free(t);
}

static void test_plan_why(void **state)
{
    (void)state;
    struct loki_topology *t = load(true, "");
    struct loki_planner *pn;
    assert_int_equal(loki_planner_create(t, &pn), 0);
    struct loki_plan *pl = malloc(sizeof(*pl));
    double d = 10;
    /* loki serves 10 qps (a3 would be more accurate than a1 but fits no GPU): nothing to say */
    assert_int_equal(loki_planner_solve_policy(pn, LOKI_POLICY_LOKI, &d, NULL, 0, pl), 0);
    assert_true(pl->served_fraction[0] >= 1 - 1e-9);
    assert_int_equal(pl->why[0], LOKI_WHY_NONE);
    assert_string_equal(pl->why_text[0], "");
    /* inferline: the most accurate chain is too slow */
    assert_int_equal(loki_planner_solve_policy(pn, LOKI_POLICY_INFERLINE, &d, NULL, 0, pl), 0);
    assert_true(pl->served_fraction[0] < 1e-9);
    assert_int_equal(pl->why[0], LOKI_WHY_LATENCY);
    assert_string_equal(loki_plan_why_name(pl->why[0]), "latency");
    assert_non_null(strstr(pl->why_text[0], "a/a2 -> b/b2 -> c/c1 needs 69 ms at batch 1"));
    /* proteus: b's slice */
    assert_int_equal(loki_planner_solve_policy(pn, LOKI_POLICY_PROTEUS, &d, NULL, 0, pl), 0);
    assert_true(pl->served_fraction[0] < 1e-9);
    assert_int_equal(pl->why[0], LOKI_WHY_LATENCY);
    assert_non_null(strstr(pl->why_text[0], "proteus gives task b an equal slice"));
    /* loki beyond its GPUs */
    d = 1e5;
    assert_int_equal(loki_planner_solve_policy(pn, LOKI_POLICY_LOKI, &d, NULL, 0, pl), 0);
    assert_true(pl->served_fraction[0] > 0 && pl->served_fraction[0] < 1);
    assert_int_equal(pl->why[0], LOKI_WHY_GPUS);
    assert_non_null(strstr(pl->why_text[0], "need more than the 4 GPUs"));
    /* a later plan that serves everything clears the reason */
    d = 10;
    assert_int_equal(loki_planner_solve_policy(pn, LOKI_POLICY_LOKI, &d, NULL, 0, pl), 0);
    assert_int_equal(pl->why[0], LOKI_WHY_NONE);
    free(pl);
    loki_planner_destroy(pn);
    free(t);

    /* static: the fixed plan's bottleneck is named */
    t = load(false, "planner:\n  policy: static\n  static_plan:\n"
                    "    - {pipeline: p, task: a, variant: a1, batch: 4}\n"
                    "    - {pipeline: p, task: b, variant: b1, batch: 1}\n"
                    "    - {pipeline: p, task: c, variant: c1, batch: 8}\n");
    assert_int_equal(loki_planner_create(t, &pn), 0);
    pl = malloc(sizeof(*pl));
    d = 1000; /* a1 at batch 4 carries 400 qps, b1 at batch 1 500 */
    assert_int_equal(loki_planner_solve(pn, &d, NULL, 0, pl), 0);
    assert_true(pl->served_fraction[0] < 0.6);
    assert_int_equal(pl->why[0], LOKI_WHY_STATIC);
    assert_non_null(strstr(pl->why_text[0], "serves 40.0 % of 1000.0 qps: its bottleneck a/a1 has "
                                            "400.0 qps of capacity for 1000.0 qps of load"));
    free(pl);
    loki_planner_destroy(pn);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lint),
        cmocka_unit_test(test_plan_why),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
