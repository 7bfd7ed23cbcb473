/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The topology's frontend.http section (runtime/config): off by default with its documented
 * defaults, every key read, each bad value refused with file:line:col and the key named, and
 * a SIGHUP reload that changes it refused (it is bound at start).
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loki/topology.h"

static char err[2048];

/* A minimal valid topology with @frontend as its frontend section's body. */
static int load(const char *frontend, struct loki_topology **t, struct loki_config *cfg)
{
    char text[2048];
    snprintf(text, sizeof(text),
             "gpus: {count: 1, memory_mb: 1000}\n"
             "%s%s"
             "pipelines:\n"
             "  - name: p\n"
             "    slo_ms: 100\n"
             "    tasks:\n"
             "      - name: t\n"
             "        variants:\n"
             "          - {name: v, accuracy: 90, batch_sizes: [1], latency_ms: [1]}\n",
             frontend ? "frontend:\n" : "", frontend ? frontend : "");
    *t = NULL;
    return loki_config_parse(text, strlen(text), "t.yaml", t, cfg, err, sizeof(err));
}

static void test_defaults(void **state)
{
    (void)state;
    struct loki_topology *t;
    struct loki_config cfg;
    assert_int_equal(load(NULL, &t, &cfg), 0);
    const struct loki_http_cfg *h = &cfg.frontend.http;
    assert_false(h->enabled);
    assert_string_equal(h->address, "127.0.0.1");
    assert_int_equal(h->port, 8000);
    assert_string_equal(h->tls_cert, "");
    assert_int_equal(h->max_connections, 256);
    assert_int_equal(h->max_connections_per_ip, 0);
    assert_true(h->connection_timeout_s == 30);
    assert_true(h->request_timeout_s == 60);
    assert_int_equal(h->lokid_connections, 2);
    free(t);
}

static void test_keys(void **state)
{
    (void)state;
    struct loki_topology *t;
    struct loki_config cfg;
    int rc = load("  http:\n"
                  "    enabled: true\n"
                  "    address: \"::1\"\n"
                  "    port: 0\n"
                  "    tls_cert: /etc/loki/cert.pem\n"
                  "    tls_key: /etc/loki/key.pem\n"
                  "    max_connections: 10\n"
                  "    max_connections_per_ip: 2\n"
                  "    connection_timeout_s: 5\n"
                  "    request_timeout_s: 0.5\n"
                  "    lokid_connections: 4\n",
                  &t, &cfg);
    if (rc)
        fail_msg("%s", err);
    const struct loki_http_cfg *h = &cfg.frontend.http;
    assert_true(h->enabled);
    assert_string_equal(h->address, "::1");
    assert_int_equal(h->port, 0);
    assert_string_equal(h->tls_cert, "/etc/loki/cert.pem");
    assert_string_equal(h->tls_key, "/etc/loki/key.pem");
    assert_int_equal(h->max_connections, 10);
    assert_int_equal(h->max_connections_per_ip, 2);
    assert_true(h->connection_timeout_s == 5);
    assert_true(h->request_timeout_s == 0.5);
    assert_int_equal(h->lokid_connections, 4);
    free(t);
}

static void expect_refused(const char *http, const char *want)
{
    struct loki_topology *t;
    struct loki_config cfg;
    char fe[512];
    snprintf(fe, sizeof(fe), "  http: %s\n", http);
    if (load(fe, &t, &cfg) == 0 || !strstr(err, want) || !strstr(err, "t.yaml:"))
        fail_msg("http: %s: got '%s', want '%s'", http, err, want);
    free(t);
}

static void test_refusals(void **state)
{
    (void)state;
    expect_refused("{address: localhost}", "expected an IPv4 or IPv6 address");
    expect_refused("{port: 65536}", "port");
    expect_refused("{port: -1}", "port");
    expect_refused("{tls_cert: /a.pem}", "tls_cert and tls_key go together");
    expect_refused("{tls_key: /a.pem}", "tls_cert and tls_key go together");
    expect_refused("{max_connections: 0}", "max_connections");
    expect_refused("{lokid_connections: 65}", "lokid_connections");
    expect_refused("{connection_timeout_s: 0}", "connection_timeout_s");
    expect_refused("{enabled: maybe}", "expected true or false");
    expect_refused("{prot: 80}", "prot");
    expect_refused("8000", "http");
}

/* frontend.http is bound at start: a reload that changes it takes a restart */
static void test_reload(void **state)
{
    (void)state;
    struct loki_topology *a, *b;
    struct loki_config ca, cb;
    char why[256];
    assert_int_equal(load("  http: {enabled: true, port: 8000}\n", &a, &ca), 0);
    assert_int_equal(load("  http: {enabled: true, port: 8000}\n", &b, &cb), 0);
    assert_int_equal(loki_config_reload_check(a, &ca, b, &cb, why, sizeof(why)), 0);
    free(b);
    assert_int_equal(load("  http: {enabled: true, port: 8001}\n", &b, &cb), 0);
    assert_int_not_equal(loki_config_reload_check(a, &ca, b, &cb, why, sizeof(why)), 0);
    assert_non_null(strstr(why, "frontend.http"));
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_reload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
