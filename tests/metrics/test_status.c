/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The reports rendered from a hand-filled view, without a daemon: the JSON
 * status report as the document it was before it went through jansson
 * (parsed: the same keys in the same order, the same values; and equal to
 * what the hand-written printer, bench/json_legacy.c, renders from the same
 * view), the table byte for byte, and the Prometheus exposition's
 * figures a user alerts on (counters, cumulative histogram buckets with
 * _sum and _count, last-minute gauges, planner and frontend figures).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "harness.h"
#include "json_legacy.h"
#include "loki/json.h"
#include "loki/status.h"
#include "loki/version.h"

struct fx {
    struct loki_topology *topo;
    struct loki_plan *plan;
    struct loki_metrics *m;
    struct loki_router_stats st;
    struct loki_status_view v;
    struct loki_report r;
};

/*
 * 70 seconds of steady traffic ticked once a second (the ring's base is second 10), a few
 * latency and batch observations, and the view lokid would fill 0.4 s after the last tick.
 */
static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->topo = fx_topology();
    f->plan = fx_plan();
    assert_non_null(f->topo);
    assert_non_null(f->plan);
    assert_int_equal(loki_metrics_create(f->topo, &f->m), 0);
    for (int t = 0; t <= 70; t++) {
        fx_stats(&f->st, (uint64_t)t);
        loki_metrics_tick(f->m, t, &f->st);
    }
    /* queueing: 0.001 sits on a bound (inclusive); 9 s is past the last one */
    const double q[] = {0.0003, 0.001, 0.003, 0.7, 9};
    for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++)
        loki_metrics_queue_time(f->m, 0, q[i]);
    loki_metrics_e2e(f->m, 0, 0.12);
    loki_metrics_compute(f->m, 0, 1, 0, 0.004);
    const int b[] = {3, 4, 4, 600};
    for (size_t i = 0; i < sizeof(b) / sizeof(b[0]); i++)
        loki_metrics_batch(f->m, 0, 0, 0, b[i]);
    loki_metrics_failed(f->m, 0, 0, 0, 2);
    loki_metrics_failed(f->m, 0, 0, 0, 1);
    f->v = (struct loki_status_view){
        .topo = f->topo,
        .metrics = f->m,
        .plan = f->plan,
        .router = &f->st,
        .demand_est = {42.5},
        .planner = {.plans_applied = 2,
                    .plans_kept = 1,
                    .solves = 3,
                    .solve_errors = 1,
                    .solve_ms_sum = 40,
                    .last_solve_ms = 12.5,
                    .last_change_s = 50},
        .frontend = {.connections = 3,
                     .inflight = 5,
                     .requests = 900,
                     .bad_requests = 2,
                     .overloaded = 7,
                     .draining = 0,
                     .read_buffer_bytes = 131072,
                     .frame_errors = 1,
                     .frame_timeouts = 2,
                     .slow_drops = 3,
                     .idle_timeouts = 4,
                     .read_pauses = 5},
        .workers = {.alive = 4, .started = 7, .start_failed = 2, .last_start_error = -EMFILE},
        .instances = 4,
        .gpus_in_use = 2.5,
        .ready = true,
        .uptime_s = 70.4,
        .metrics_port = 9464,
    };
    loki_report_init(&f->r);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    loki_report_fini(&f->r);
    loki_metrics_destroy(f->m);
    free(f->plan);
    free(f->topo);
    free(f);
    return 0;
}

/* True when @text holds @line as a whole line. */
static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *s = text; (s = strstr(s, line)); s++)
        if ((s == text || s[-1] == '\n') && s[n] == '\n')
            return true;
    return false;
}

#define assert_line(text, line)                                                                    \
    do {                                                                                           \
        if (!has_line(text, line))                                                                 \
            fail_msg("no line \"%s\" in the report", line);                                        \
    } while (0)

static const char json_want[] =
    "{\"ready\":true,\"draining\":false,\"uptime_s\":70.400,\"policy\":\"loki\","
    "\"mode\":\"accuracy\",\"transitioning\":false,\"plans_applied\":2,\"plans_kept\":1,"
    "\"plan_age_s\":20.400,\"solves\":3,\"solve_ms\":12.500,\"metrics_port\":9464,"
    "\"instances\":4,\"instances_planned\":4,\"workers\":{\"alive\":4,\"started\":7,"
    "\"start_failures\":2,\"last_start_error\":\"Too many open files\",\"crashes\":0},"
    "\"gpus\":{\"count\":8,\"in_use\":2.5000,\"active\":3},"
    "\"pipelines\":[{\"name\":\"tiny\",\"slo_ms\":250.000,"
    "\"demand\":{\"estimate_qps\":42.500,\"planned_qps\":180.000,\"served_fraction\":1.0000},"
    "\"accuracy\":{\"predicted\":85.000,\"predicted_subquery\":90.000,\"served\":90.000,"
    "\"served_subquery\":95.000},"
    "\"last_minute\":{\"window_s\":60.400,\"arrived\":720,\"ok\":420,\"dropped\":60,"
    "\"late\":60,\"error\":60,\"overloaded\":120,\"violations\":180,"
    "\"violation_ratio\":0.300000,\"sub_queries\":1200,\"sub_violations\":120,"
    "\"drops_by_stage\":{\"det\":0,\"cls\":60}},"
    "\"variants\":["
    "{\"task\":\"det\",\"variant\":\"fast\",\"accuracy\":80.000,\"instances\":2,\"batch\":4,"
    "\"share\":0.5000,\"gpus\":[0,1],\"capacity_qps\":200.000,\"load_qps\":150.000,"
    "\"dropped_total\":0,\"fallback_total\":0,\"fallback\":null},"
    "{\"task\":\"det\",\"variant\":\"slow\",\"accuracy\":100.000,\"instances\":1,\"batch\":2,"
    "\"share\":0.5000,\"gpus\":[1],\"capacity_qps\":40.000,\"load_qps\":30.000,"
    "\"dropped_total\":0,\"fallback_total\":5,\"fallback\":\"fast\"},"
    "{\"task\":\"cls\",\"variant\":\"c0\",\"accuracy\":100.000,\"instances\":1,\"batch\":8,"
    "\"share\":1.0000,\"gpus\":[2],\"capacity_qps\":500.000,\"load_qps\":360.000,"
    "\"dropped_total\":70,\"fallback_total\":0,\"fallback\":null}],"
    "\"splits\":["
    "{\"task\":\"det\",\"from\":\"\",\"to\":{\"fast\":0.7500,\"slow\":0.2500}},"
    "{\"task\":\"cls\",\"from\":\"fast\",\"to\":{\"c0\":1.0000}},"
    "{\"task\":\"cls\",\"from\":\"slow\",\"to\":{\"c0\":1.0000}}]}]}\n";

/* Whether @a and @b hold the same keys in the same order (recursively). */
static bool same_key_order(json_t *a, json_t *b)
{
    if (json_is_array(a) && json_is_array(b)) {
        for (size_t i = 0; i < json_array_size(a) && i < json_array_size(b); i++)
            if (!same_key_order(json_array_get(a, i), json_array_get(b, i)))
                return false;
        return true;
    }
    if (!json_is_object(a) || !json_is_object(b))
        return true;
    void *ia = json_object_iter(a), *ib = json_object_iter(b);
    for (; ia && ib; ia = json_object_iter_next(a, ia), ib = json_object_iter_next(b, ib))
        if (strcmp(json_object_iter_key(ia), json_object_iter_key(ib)) ||
            !same_key_order(json_object_iter_value(ia), json_object_iter_value(ib)))
            return false;
    return !ia && !ib;
}

/* @text is one line of JSON, parsed equal to @want with its keys in @want's order. */
static void assert_json_doc(const char *text, const char *want)
{
    json_error_t e;
    size_t n = strlen(text);
    if (!n || text[n - 1] != '\n' || strchr(text, '\n') != text + n - 1)
        fail_msg("not one line: %s", text);
    json_t *a = json_loads(text, 0, &e);
    if (!a)
        fail_msg("not JSON (%s): %s", e.text, text);
    json_t *b = json_loads(want, 0, &e);
    assert_non_null(b);
    if (!json_equal(a, b) || !same_key_order(a, b))
        fail_msg("JSON differs:\n got %s\nwant %s", text, want);
    json_decref(a);
    json_decref(b);
}

/* What the hand-written printer renders from the same view, parsed, equals the report less the
 * keys added since (workers.crashes). */
static void assert_as_legacy(const struct loki_status_view *v, const char *text)
{
    struct loki_report old;
    json_error_t e;
    loki_report_init(&old);
    assert_int_equal(loki_bench_status_json_legacy(v, &old), 0);
    json_t *now = json_loads(text, 0, &e);
    assert_non_null(now);
    assert_int_equal(json_object_del(json_object_get(now, "workers"), "crashes"), 0);
    char *less = json_dumps(now, LOKI_JSON_FLAGS);
    assert_non_null(less);
    size_t n = strlen(less);
    less = realloc(less, n + 2);
    assert_non_null(less);
    memcpy(less + n, "\n", 2);
    assert_json_doc(less, old.text);
    free(less);
    json_decref(now);
    loki_report_fini(&old);
}

static void test_json(void **state)
{
    struct fx *f = *state;
    assert_int_equal(loki_status_json(&f->v, &f->r), 0);
    assert_int_equal(f->r.len, strlen(f->r.text));
    assert_json_doc(f->r.text, json_want);
    assert_as_legacy(&f->v, f->r.text);
    /* numbers keep their decimals' value; integral reals stay reals */
    assert_non_null(strstr(f->r.text, "\"uptime_s\":70.4,"));
    assert_non_null(strstr(f->r.text, "\"served_fraction\":1.0}"));
}

/* Values that need rounding, huge counters and odd names stay what the old printer said. */
static void test_json_as_legacy(void **state)
{
    struct fx *f = *state;
    f->v.uptime_s = 1234567.891249999;
    f->v.gpus_in_use = 2.00005;
    f->v.demand_est[0] = 1.0 / 3;
    f->v.planner.last_solve_ms = 0.0005;
    f->st.pipe[0].ok += 1ull << 40;
    f->plan->var[0][0][0].share = 0.33333;
    strcpy(f->topo->pipelines[0].tasks[1].name, "cl\"s/\u00e9");
    assert_int_equal(loki_status_json(&f->v, &f->r), 0);
    assert_as_legacy(&f->v, f->r.text);
    f->v.draining = true;
    f->v.plan = NULL;
    assert_int_equal(loki_status_json(&f->v, &f->r), 0);
    assert_as_legacy(&f->v, f->r.text);
}

/* A fixed-decimals number parses to what printf's text parses to, for any value. */
static void test_json_fixed_is_printf(void **state)
{
    unsigned long long s = 88172645463325252ull;
    char buf[512];
    for (int i = 0; i < 200000; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        int d = (int)(s % 10);
        double x = (double)(s >> 11) / (double)(1ull << 53) * (i % 7 == 0 ? 1e12 : 1e3);
        if (i % 3 == 0) /* ties in decimal: k + 0.5 at the last digit */
            x = ((double)(s % 100000) + 0.5) / (d ? 1e1 * d : 1);
        if (i % 5 == 0)
            x = -x;
        json_t *j = loki_json_fixed(x, d);
        snprintf(buf, sizeof(buf), "%.*f", d, x);
        /* 0 decimals: an integer, as the text "%.0f" prints is */
        if (json_number_value(j) != strtod(buf, NULL) || json_is_integer(j) != (d == 0))
            fail_msg("%.17g at %d decimals: %.17g, printf %s", x, d, json_number_value(j), buf);
        json_decref(j);
    }
    json_t *j = loki_json_fixed(0.0 / 0.0, 3);
    assert_true(json_is_null(j));
    json_decref(j);
}

static const char table_want[] =
    "lokid ready, up 70.4 s; policy loki, mode accuracy; plans applied 2 (last 20.4 s ago), "
    "kept 1; last solve 12.5 ms\n"
    "GPUs: 2.50 in use on 3 of 8; 4 instances, 4 planned; 4 workers running; 2 worker starts "
    "failed (last: Too many open files)\n"
    "\n"
    "pipeline tiny (SLO 250 ms)\n"
    "  demand    42.5 qps estimated, plan carries 180.0 qps, served fraction 1.000\n"
    "  accuracy  predicted 85.00 (per sub-query 90.00), served 90.00 (last 60 s)\n"
    "  last 60 s: 720 arrived, 420 ok, 60 dropped, 60 late, 60 error, 120 overloaded; "
    "violations 30.00 % (sub-queries 10.00 %)\n"
    "  drops by stage: det 0 cls 60\n"
    "  TASK             VARIANT               INST BATCH  SHARE GPUS            CAP/s     LOAD/s"
    "  FALLBACK\n"
    "  det              fast                     2     4   0.50 0,1             200.0      150.0"
    "  -\n"
    "  det              slow                     1     2   0.50 1                40.0       30.0"
    "  fast\n"
    "  cls              c0                       1     8   1.00 2               500.0      360.0"
    "  -\n"
    "  splits:\n"
    "    det <- (arrivals): fast 0.75 slow 0.25\n"
    "    cls <- fast: c0 1.00\n"
    "    cls <- slow: c0 1.00\n";

static void test_table(void **state)
{
    struct fx *f = *state;
    assert_int_equal(loki_status_table(&f->v, &f->r), 0);
    assert_string_equal(f->r.text, table_want);
}

/* Draining: not ready for the probes, and said so in both reports. */
static void test_draining(void **state)
{
    struct fx *f = *state;
    f->v.draining = true;
    f->v.transitioning = true;
    f->v.metrics_port = -1;
    assert_int_equal(loki_status_json(&f->v, &f->r), 0);
    assert_non_null(strstr(f->r.text, "{\"ready\":false,\"draining\":true,"));
    assert_non_null(strstr(f->r.text, "\"transitioning\":true,"));
    assert_non_null(strstr(f->r.text, "\"metrics_port\":-1,"));
    assert_int_equal(loki_status_table(&f->v, &f->r), 0);
    const char *head = "lokid ready, draining, up 70.4 s; policy loki, mode accuracy "
                       "(reconfiguring); plans applied 2";
    assert_int_equal(strncmp(f->r.text, head, strlen(head)), 0);
    assert_int_equal(loki_status_prometheus(&f->v, &f->r), 0);
    assert_line(f->r.text, "loki_ready 0");
    assert_line(f->r.text, "loki_reconfiguring 1");
}

/* Before the first plan (lokid serves reports while its workers start): an empty plan. */
static void test_no_plan_yet(void **state)
{
    struct fx *f = *state;
    f->v.plan = NULL;
    assert_int_equal(loki_status_json(&f->v, &f->r), 0);
    assert_non_null(strstr(f->r.text, "\"mode\":\"hardware\","));
    assert_non_null(strstr(f->r.text, "\"variants\":[],\"splits\":[{\"task\":\"det\",\"from\":\"\","
                                      "\"to\":{}}]}]}\n"));
    assert_int_equal(loki_status_table(&f->v, &f->r), 0);
    assert_non_null(strstr(f->r.text, "GPUs: 2.50 in use on 0 of 8; 4 instances, 0 planned; "));
    assert_int_equal(loki_status_prometheus(&f->v, &f->r), 0);
    assert_line(f->r.text,
                "loki_variant_instances{pipeline=\"tiny\",task=\"det\",variant=\"fast\"} 0");
    assert_line(f->r.text, "loki_planner_mode{mode=\"hardware\"} 1");
}

/* Names are escaped in JSON strings and Prometheus label values. */
static void test_escaping(void **state)
{
    struct fx *f = *state;
    strcpy(f->topo->pipelines[0].name, "ti\"ny\\");
    assert_int_equal(loki_status_json(&f->v, &f->r), 0);
    assert_non_null(strstr(f->r.text, "{\"name\":\"ti\\\"ny\\\\\",\"slo_ms\""));
    assert_int_equal(loki_status_prometheus(&f->v, &f->r), 0);
    assert_line(f->r.text, "loki_request_total{pipeline=\"ti\\\"ny\\\\\"} 840");
}

static void test_prometheus_counters_and_gauges(void **state)
{
    struct fx *f = *state;
    const char *t;
    assert_int_equal(loki_status_prometheus(&f->v, &f->r), 0);
    t = f->r.text;
    assert_int_equal(strlen(t), f->r.len);
    assert_int_equal(t[f->r.len - 1], '\n');
    /* root queries by outcome, cumulative */
    assert_line(t, "# HELP loki_request_total Root queries that arrived.");
    assert_line(t, "# TYPE loki_request_total counter");
    assert_line(t, "loki_request_total{pipeline=\"tiny\"} 840");
    assert_line(t, "loki_request_success_total{pipeline=\"tiny\"} 490");
    assert_line(t, "loki_request_overloaded_total{pipeline=\"tiny\"} 140");
    assert_line(t, "loki_request_fallback_total{pipeline=\"tiny\"} 4");
    assert_line(t, "loki_subquery_violation_total{pipeline=\"tiny\"} 140");
    /* per variant and per task */
    assert_line(t,
                "loki_variant_request_total{pipeline=\"tiny\",task=\"det\",variant=\"fast\"} 490");
    assert_line(t,
                "loki_variant_fallback_total{pipeline=\"tiny\",task=\"det\",variant=\"slow\"} 5");
    assert_line(t, "loki_variant_failure_total{pipeline=\"tiny\",task=\"det\",variant=\"fast\"} 3");
    assert_line(t, "loki_variant_failure_total{pipeline=\"tiny\",task=\"cls\",variant=\"c0\"} 0");
    assert_line(t, "loki_stage_drop_total{pipeline=\"tiny\",task=\"det\"} 0");
    assert_line(t, "loki_stage_drop_total{pipeline=\"tiny\",task=\"cls\"} 70");
    /* the plan */
    assert_line(t, "# TYPE loki_variant_instances gauge");
    assert_line(t, "loki_variant_instances{pipeline=\"tiny\",task=\"det\",variant=\"fast\"} 2");
    assert_line(t, "loki_variant_share_ratio{pipeline=\"tiny\",task=\"det\",variant=\"slow\"} 0.5");
    assert_line(t, "loki_variant_batch_max{pipeline=\"tiny\",task=\"cls\",variant=\"c0\"} 8");
    assert_line(t, "loki_variant_load_queries_per_second{pipeline=\"tiny\",task=\"det\",variant="
                   "\"fast\"} 150");
    /* demand, accuracy and violations over the last minute */
    assert_line(t, "loki_demand_estimate_queries_per_second{pipeline=\"tiny\"} 42.5");
    assert_line(t, "loki_demand_planned_queries_per_second{pipeline=\"tiny\"} 180");
    assert_line(t, "loki_accuracy_predicted_ratio{pipeline=\"tiny\"} 0.85");
    assert_line(t, "loki_accuracy_served_ratio{pipeline=\"tiny\"} 0.9");
    assert_line(t, "loki_violation_ratio{pipeline=\"tiny\"} 0.3");
    /* daemon-wide: router, planner, frontend */
    assert_line(t, "loki_instances 4");
    assert_line(t, "loki_instances_planned 4");
    assert_line(t, "loki_workers 4");
    assert_line(t, "loki_worker_starts_total 7");
    assert_line(t, "loki_worker_start_failures_total 2");
    assert_line(t, "loki_gpus_in_use 2.5");
    assert_line(t, "loki_gpus_active 3");
    assert_line(t, "loki_gpus 8");
    assert_line(t, "loki_planner_last_solve_seconds 0.0125");
    assert_line(t, "# TYPE loki_planner_solve_seconds summary");
    assert_line(t, "loki_planner_solve_seconds_sum 0.04");
    assert_line(t, "loki_planner_solve_seconds_count 3");
    assert_line(t, "loki_planner_solves_total 3");
    assert_line(t, "loki_planner_errors_total 1");
    assert_line(t, "loki_plans_applied_total 2");
    assert_line(t, "loki_plans_kept_total 1");
    assert_line(t, "loki_reconfiguring 0");
    assert_line(t, "loki_roots_inflight 6");
    assert_line(t, "loki_ready 1");
    assert_line(t, "loki_frontend_connections 3");
    assert_line(t, "loki_frontend_inflight 5");
    assert_line(t, "loki_frontend_requests_total 900");
    assert_line(t, "loki_frontend_bad_requests_total 2");
    assert_line(t, "loki_frontend_overloaded_total 7");
    assert_line(t, "loki_frontend_frame_errors_total 1");
    assert_line(t, "loki_frontend_frame_timeouts_total 2");
    assert_line(t, "loki_frontend_slow_reader_drops_total 3");
    assert_line(t, "loki_frontend_idle_timeouts_total 4");
    assert_line(t, "loki_frontend_read_buffer_bytes 131072");
    assert_line(t, "loki_frontend_read_pauses_total 5");
    assert_line(t, "loki_planner_mode{mode=\"hardware\"} 0");
    assert_line(t, "loki_planner_mode{mode=\"accuracy\"} 1");
    /* no HTTP front door: none of its series */
    assert_null(strstr(t, "loki_http_"));
    f->v.http = (struct loki_status_http){.enabled = true,
                                          .requests = 60,
                                          .infers = 50,
                                          .status_2xx = 45,
                                          .status_4xx = 10,
                                          .status_5xx = 5,
                                          .lokid_connects = 3,
                                          .waiting = 2};
    assert_int_equal(loki_status_prometheus(&f->v, &f->r), 0);
    t = f->r.text;
    assert_line(t, "# TYPE loki_http_requests_total counter");
    assert_line(t, "loki_http_requests_total{code=\"2xx\"} 45");
    assert_line(t, "loki_http_requests_total{code=\"4xx\"} 10");
    assert_line(t, "loki_http_requests_total{code=\"5xx\"} 5");
    assert_line(t, "loki_http_infer_requests_total 50");
    assert_line(t, "loki_http_waiting 2");
    assert_line(t, "loki_http_lokid_connects_total 3");
}

static void test_prometheus_histograms(void **state)
{
    struct fx *f = *state;
    const char *t;
    assert_int_equal(loki_status_prometheus(&f->v, &f->r), 0);
    t = f->r.text;
    assert_line(t, "# TYPE loki_queue_duration_seconds histogram");
    /* buckets are cumulative; a value on a bound counts in that bound's bucket */
    static const char *const queue[] = {
        "_bucket{pipeline=\"tiny\",le=\"0.0005\"} 1",
        "_bucket{pipeline=\"tiny\",le=\"0.001\"} 2",
        "_bucket{pipeline=\"tiny\",le=\"0.0025\"} 2",
        "_bucket{pipeline=\"tiny\",le=\"0.005\"} 3",
        "_bucket{pipeline=\"tiny\",le=\"0.5\"} 3",
        "_bucket{pipeline=\"tiny\",le=\"1\"} 4",
        "_bucket{pipeline=\"tiny\",le=\"5\"} 4",
        "_bucket{pipeline=\"tiny\",le=\"+Inf\"} 5",
        "_sum{pipeline=\"tiny\"} 9.7043",
        "_count{pipeline=\"tiny\"} 5",
    };
    for (size_t i = 0; i < sizeof(queue) / sizeof(queue[0]); i++) {
        char l[256];
        snprintf(l, sizeof(l), "loki_queue_duration_seconds%s", queue[i]);
        assert_line(t, l);
    }
    assert_line(t, "loki_request_duration_seconds_bucket{pipeline=\"tiny\",le=\"0.1\"} 0");
    assert_line(t, "loki_request_duration_seconds_bucket{pipeline=\"tiny\",le=\"0.25\"} 1");
    assert_line(t, "loki_request_duration_seconds_sum{pipeline=\"tiny\"} 0.12");
    assert_line(t, "loki_compute_duration_seconds_bucket{pipeline=\"tiny\",task=\"cls\","
                   "variant=\"c0\",le=\"0.005\"} 1");
    assert_line(t, "loki_compute_duration_seconds_count{pipeline=\"tiny\",task=\"det\","
                   "variant=\"fast\"} 0");
    assert_line(t, "# TYPE loki_batch_size histogram");
    assert_line(t, "loki_batch_size_bucket{pipeline=\"tiny\",task=\"det\",variant=\"fast\","
                   "le=\"2\"} 0");
    assert_line(t, "loki_batch_size_bucket{pipeline=\"tiny\",task=\"det\",variant=\"fast\","
                   "le=\"4\"} 3");
    assert_line(t, "loki_batch_size_bucket{pipeline=\"tiny\",task=\"det\",variant=\"fast\","
                   "le=\"512\"} 3");
    assert_line(t, "loki_batch_size_bucket{pipeline=\"tiny\",task=\"det\",variant=\"fast\","
                   "le=\"+Inf\"} 4");
    assert_line(t, "loki_batch_size_sum{pipeline=\"tiny\",task=\"det\",variant=\"fast\"} 611");
    assert_line(t, "loki_batch_size_count{pipeline=\"tiny\",task=\"det\",variant=\"fast\"} 4");
}

/*
 * Every histogram series, whatever its labels: buckets never decrease, the last is +Inf,
 * and it equals the series' _count.
 */
static void test_prometheus_buckets_cumulative(void **state)
{
    struct fx *f = *state;
    assert_int_equal(loki_status_prometheus(&f->v, &f->r), 0);
    char key[512] = "", prev_key[512] = "";
    unsigned long long prev = 0;
    int series = 0;
    for (const char *l = f->r.text; *l; l = strchr(l, '\n') + 1) {
        const char *b = strstr(l, "_bucket{"), *nl = strchr(l, '\n');
        if (!b || b > nl || l[0] == '#')
            continue;
        const char *le = strstr(l, "le=\"");
        const char *sp = strchr(le, ' ');
        assert_true(le && sp && sp < nl);
        snprintf(key, sizeof(key), "%.*s", (int)(le - l), l);
        unsigned long long n = strtoull(sp + 1, NULL, 10);
        if (strcmp(key, prev_key)) {
            series++;
            prev = 0;
            snprintf(prev_key, sizeof(prev_key), "%s", key);
        }
        assert_true(n >= prev);
        prev = n;
        if (!strncmp(le, "le=\"+Inf\"}", 10)) {
            /* name_bucket{labels, -> name_count{labels} n */
            char want[600];
            size_t kl = strlen(key);
            int bl = (int)(b - l);
            if (key[kl - 1] == '{')
                snprintf(want, sizeof(want), "%.*s_count %llu", bl, l, n);
            else
                snprintf(want, sizeof(want), "%.*s_count%.*s} %llu", bl, l,
                         (int)(kl - 1 - (size_t)bl - 7), key + bl + 7, n);
            assert_line(f->r.text, want);
        }
    }
    /* queue and e2e per pipeline, compute and batch per variant (3 of them) */
    assert_int_equal(series, 1 + 1 + 3 + 3);
}

static void test_render_dispatch(void **state)
{
    struct fx *f = *state;
    char err[256] = "";
    struct loki_report other;
    loki_report_init(&other);
    assert_int_equal(loki_status_render(&f->v, LOKI_MSG_STATUS, loki_bytes_str("table"), &f->r, err,
                                        sizeof(err)),
                     0);
    assert_string_equal(f->r.text, table_want);
    /* the buffer is reused: a second report replaces the first */
    assert_int_equal(
        loki_status_render(&f->v, LOKI_MSG_STATUS, loki_bytes_str("json"), &f->r, err, sizeof(err)),
        0);
    assert_json_doc(f->r.text, json_want);
    assert_int_equal(loki_status_render(&f->v, LOKI_MSG_METRICS, loki_bytes_str("prometheus"),
                                        &f->r, err, sizeof(err)),
                     0);
    assert_int_equal(loki_status_prometheus(&f->v, &other), 0);
    assert_string_equal(f->r.text, other.text);
    loki_report_fini(&other);
    assert_int_equal(
        loki_status_render(&f->v, LOKI_MSG_STATUS, loki_bytes_str("yaml"), &f->r, err, sizeof(err)),
        -EINVAL);
    assert_string_equal(err, "field 'format': status reports are \"table\" or \"json\"");
    assert_int_equal(loki_status_render(&f->v, LOKI_MSG_METRICS, loki_bytes_str("json"), &f->r, err,
                                        sizeof(err)),
                     -EINVAL);
    assert_string_equal(err, "field 'format': metrics reports are \"prometheus\"");
}

static uint64_t crashes(const void *ctx, int p, int t, int v)
{
    return t == 0 && v == 1 ? 3 : t == 1 ? 1 : 0; /* det/slow 3, cls/c0 1 */
}

/* Restarts, build, process and GPU figures, where the view has them. */
static void test_prometheus_ops(void **state)
{
    struct fx *f = *state;
    const struct loki_process_stats ps = {.cpu_seconds = 12.5,
                                          .start_time_seconds = 1700000000.25,
                                          .resident_bytes = 50u << 20,
                                          .virtual_bytes = 900u << 20,
                                          .open_fds = 42,
                                          .max_fds = 65536};
    const struct loki_gpu_stats gs[2] = {
        {.index = 0,
         .uuid = "GPU-aa",
         .ok = true,
         .utilization = 0.37,
         .mem_used_bytes = 1ull << 30,
         .mem_total_bytes = 80ull << 30},
        {.index = 1, .uuid = "GPU-bb", .ok = false},
    };
    const char *t;
    /* without them: no samples, but the build */
    assert_int_equal(loki_status_prometheus(&f->v, &f->r), 0);
    t = f->r.text;
    assert_line(t, "loki_worker_crashes_total{pipeline=\"tiny\",task=\"det\",variant=\"slow\"} 0");
    assert_null(strstr(t, "process_"));
    assert_null(strstr(t, "loki_gpu_"));
    char build[256];
    snprintf(build, sizeof(build), "loki_build_info{version=\"%s\",git=\"%s\"} 1", LOKI_VERSION,
             LOKI_GIT_DESCRIBE);
    assert_line(t, build);
    f->v.worker_crashes = crashes;
    f->v.process = &ps;
    f->v.gpus = gs;
    f->v.n_gpus = 2;
    assert_int_equal(loki_status_prometheus(&f->v, &f->r), 0);
    t = f->r.text;
    assert_line(t, "# TYPE loki_worker_crashes_total counter");
    assert_line(t, "loki_worker_crashes_total{pipeline=\"tiny\",task=\"det\",variant=\"slow\"} 3");
    assert_line(t, "loki_worker_crashes_total{pipeline=\"tiny\",task=\"det\",variant=\"fast\"} 0");
    assert_line(t, "loki_worker_crashes_total{pipeline=\"tiny\",task=\"cls\",variant=\"c0\"} 1");
    assert_line(t, "# TYPE process_cpu_seconds_total counter");
    assert_line(t, "process_cpu_seconds_total 12.5");
    assert_line(t, "process_resident_memory_bytes 52428800");
    assert_line(t, "process_virtual_memory_bytes 943718400");
    assert_line(t, "process_open_fds 42");
    assert_line(t, "process_max_fds 65536");
    assert_line(t, "process_start_time_seconds 1700000000.25");
    assert_line(t, "# TYPE loki_gpu_utilization_ratio gauge");
    assert_line(t, "loki_gpu_utilization_ratio{gpu=\"0\",uuid=\"GPU-aa\"} 0.37");
    assert_line(t, "loki_gpu_memory_used_bytes{gpu=\"0\",uuid=\"GPU-aa\"} 1073741824");
    assert_line(t, "loki_gpu_memory_total_bytes{gpu=\"0\",uuid=\"GPU-aa\"} 85899345920");
    assert_null(strstr(t, "GPU-bb")); /* its queries failed this time: no samples */
    /* the status reports total them */
    assert_int_equal(loki_status_json(&f->v, &f->r), 0);
    assert_non_null(
        strstr(f->r.text, "\"last_start_error\":\"Too many open files\",\"crashes\":4}"));
    assert_int_equal(loki_status_table(&f->v, &f->r), 0);
    assert_non_null(strstr(f->r.text, "(last: Too many open files); 4 worker crashes\n"));
}

/* Served accuracy is absent, not 0, over a minute without a served query. */
static void test_prometheus_idle_accuracy(void **state)
{
    struct fx *f = *state;
    for (int t = 71; t <= 140; t++) /* no traffic since second 70 */
        loki_metrics_tick(f->m, t, &f->st);
    f->v.uptime_s = 140.4;
    assert_int_equal(loki_status_prometheus(&f->v, &f->r), 0);
    assert_null(strstr(f->r.text, "loki_accuracy_served_ratio{"));
    assert_line(f->r.text, "# TYPE loki_accuracy_served_ratio gauge");
    assert_line(f->r.text, "loki_accuracy_predicted_ratio{pipeline=\"tiny\"} 0.85");
    assert_line(f->r.text, "loki_violation_ratio{pipeline=\"tiny\"} 0");
}

/*
 * Names and units as Prometheus wants them: every _sum has its _count with the same labels,
 * no _qps or _ms names, ratios between 0 and 1, every sample under a # TYPE of its family.
 */
static void test_prometheus_conventions(void **state)
{
    struct fx *f = *state;
    struct loki_process_stats ps = {.cpu_seconds = 1};
    f->v.process = &ps;
    assert_int_equal(loki_status_prometheus(&f->v, &f->r), 0);
    char family[128] = "";
    int sums = 0;
    for (const char *l = f->r.text; *l; l = strchr(l, '\n') + 1) {
        const char *nl = strchr(l, '\n');
        size_t nlen = strcspn(l, "{ \n");
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)nlen, l);
        if (!strncmp(l, "# TYPE ", 7)) {
            snprintf(family, sizeof(family), "%.*s", (int)strcspn(l + 7, " "), l + 7);
            continue;
        }
        if (l[0] == '#')
            continue;
        if (strstr(name, "_qps") || strstr(name, "_ms") || strstr(name, "_fraction"))
            fail_msg("not a base unit: %s", name);
        if (strncmp(name, family, strlen(family)))
            fail_msg("%s outside its family %s", name, family);
        if (nlen > 6 && !strcmp(name + nlen - 6, "_ratio")) {
            double x = strtod(strchr(l, ' ') + 1, NULL);
            if (x < 0 || x > 1)
                fail_msg("%.*s: a ratio out of 0..1", (int)(nl - l), l);
        }
        if (nlen > 4 && !strcmp(name + nlen - 4, "_sum")) {
            /* name_sum{labels} v  ->  name_count{labels} */
            char want[512];
            const char *rest = l + nlen, *sp = memrchr(l, ' ', (size_t)(nl - l));
            snprintf(want, sizeof(want), "%.*s_count%.*s ", (int)nlen - 4, l, (int)(sp - rest),
                     rest);
            const char *c = strstr(f->r.text, want);
            if (!c || (c != f->r.text && c[-1] != '\n'))
                fail_msg("no %s beside %.*s", want, (int)(nl - l), l);
            sums++;
        }
    }
    assert_true(sums >= 9); /* 8 histograms and the planner's summary */
}

static double summary_value(const struct loki_metric *m, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (loki_bytes_eq(m[i].name, name))
            return m[i].value;
    fail_msg("no %s in the summary", name);
    return -1;
}

static void test_summary(void **state)
{
    struct fx *f = *state;
    struct loki_metric m[64];
    int n = loki_status_summary(&f->v, m, 64);
    assert_int_equal(n, 18);
    assert_true(summary_value(m, n, "loki_queries_arrived_total") == 840);
    assert_true(summary_value(m, n, "loki_queries_ok_total") == 490);
    assert_true(summary_value(m, n, "loki_instances") == 4);
    assert_true(summary_value(m, n, "loki_demand_queries_per_second") == 42.5);
    assert_true(summary_value(m, n, "loki_plan_accuracy_ratio") == 0.85);
    assert_true(summary_value(m, n, "loki_plan_mode") == LOKI_MODE_ACCURACY);
    assert_true(summary_value(m, n, "loki_plans_applied_total") == 2);
    assert_true(summary_value(m, n, "loki_roots_inflight") == 6);
    /* no plan yet */
    f->v.plan = NULL;
    n = loki_status_summary(&f->v, m, 64);
    assert_true(summary_value(m, n, "loki_plan_mode") == -1);
    assert_true(summary_value(m, n, "loki_plan_accuracy_ratio") == 0);
    /* a short array gets the first ones */
    assert_int_equal(loki_status_summary(&f->v, m, 2), 2);
    assert_true(loki_bytes_eq(m[1].name, "loki_queries_ok_total"));
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_json),
        T(test_json_as_legacy),
        T(test_json_fixed_is_printf),
        T(test_table),
        T(test_draining),
        T(test_no_plan_yet),
        T(test_escaping),
        T(test_prometheus_counters_and_gauges),
        T(test_prometheus_histograms),
        T(test_prometheus_buckets_cumulative),
        T(test_render_dispatch),
        T(test_prometheus_ops),
        T(test_prometheus_idle_accuracy),
        T(test_prometheus_conventions),
        T(test_summary),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
