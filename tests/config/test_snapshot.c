/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The configuration lokid hands its workers (runtime/config/snapshot.c): a sealed snapshot
 * loads to the same model as the text it was made from and cannot be changed, a memfd that
 * is not sealed is refused, and loki_config_reload_check() lets through exactly the changes
 * that may apply while lokid serves (plugin paths, per-solve planner settings), naming the
 * first other one.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "loki/error.h"
#include "loki/topology.h"

#define DOC(planner, frontend, fanout, backend, latency)                                           \
    "gpus: {count: 2}\n"                                                                           \
    "planner: {" planner "}\n"                                                                     \
    "frontend: {" frontend "}\n"                                                                   \
    "pipelines:\n"                                                                                 \
    "  - name: p\n"                                                                                \
    "    slo_ms: 100\n"                                                                            \
    "    tasks:\n"                                                                                 \
    "      - name: a\n"                                                                            \
    "        children: [b]\n"                                                                      \
    "        variants:\n"                                                                          \
    "          - {name: a1, accuracy: 100, batch_sizes: [1, 4], latency_ms: [5, 10],\n"            \
    "             fanout: {b: " fanout "}}\n"                                                      \
    "      - name: b\n"                                                                            \
    "        variants:\n"                                                                          \
    "          - {name: b1, accuracy: 100, batch_sizes: [1], latency_ms: [" latency "],\n"         \
    "             backend: " backend "}\n"

#define BASE DOC("interval_ms: 500", "mode: \"0660\"", "2", "sim", "2")

static char err[8192];

static void load(const char *text, struct loki_topology **t, struct loki_config *c)
{
    int rc = loki_config_parse(text, strlen(text), "t.yaml", t, c, err, sizeof(err));
    if (rc)
        fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
}

static void test_sealed_roundtrip(void **state)
{
    const char *text = BASE;
    int fd;
    assert_int_equal(loki_config_seal(text, strlen(text), &fd), 0);
    /* sealed: no write, no resize, no more seals to add or remove */
    assert_true(write(fd, "x", 1) < 0);
    assert_true(ftruncate(fd, 0) < 0);
    assert_true(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) < 0);
    assert_true(fcntl(fd, F_GET_SEALS) & F_SEAL_SEAL);
    assert_true(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);

    struct loki_topology *a, *b;
    struct loki_config ca, cb;
    load(text, &a, &ca);
    /* twice: a shared descriptor is read with pread, whatever its offset */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(loki_config_load_sealed(fd, "snap", &b, &cb, err, sizeof(err)), 0);
        assert_int_equal(loki_config_reload_check(a, &ca, b, &cb, err, sizeof(err)), 0);
        assert_string_equal(b->source, "snap");
        free(b);
    }
    free(a);
    close(fd);
}

static void test_unsealed_refused(void **state)
{
    const char *text = BASE;
    int fd = memfd_create("loki-config", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    struct loki_topology *t = NULL;
    /* writable: refused */
    assert_int_equal(loki_config_load_sealed(fd, "snap", &t, NULL, err, sizeof(err)), -EPERM);
    assert_non_null(strstr(err, "not sealed"));
    /* sealed against writes but still growable: refused too */
    assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_SEAL), 0);
    assert_int_equal(loki_config_load_sealed(fd, "snap", &t, NULL, err, sizeof(err)), -EPERM);
    assert_null(t);
    close(fd);
    /* a plain file cannot be sealed at all */
    const char *path = loki_test_write_tmp(text, ".yaml");
    fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_true(loki_config_load_sealed(fd, "file", &t, NULL, err, sizeof(err)) < 0);
    close(fd);
}

static void test_load_snapshot(void **state)
{
    const char *path = loki_test_write_tmp(BASE, ".yaml");
    struct loki_topology *t;
    struct loki_config c;
    struct stat st;
    int fd;
    assert_int_equal(loki_config_load_snapshot(path, &t, &c, &fd, &st, err, sizeof(err)), 0);
    assert_true(S_ISREG(st.st_mode));
    free(t);
    /* the file changes; the snapshot does not */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("broken: [\n", f);
    fclose(f);
    assert_int_equal(loki_config_load_sealed(fd, "snap", &t, &c, err, sizeof(err)), 0);
    assert_int_equal(t->gpus.count, 2);
    free(t);
    close(fd);
    /* a file that does not validate: no snapshot, the errors */
    assert_int_equal(loki_config_load_snapshot(path, &t, &c, &fd, NULL, err, sizeof(err)),
                     LOKI_ETOPOLOGY);
    assert_non_null(strstr(err, path));
    assert_int_equal(
        loki_config_load_snapshot("/nonexistent/t.yaml", &t, &c, &fd, NULL, err, sizeof(err)),
        -ENOENT);
}

/* Check BASE against @next: 0, or LOKI_ETOPOLOGY with @want in the reason. */
static void check(const char *next, const char *want)
{
    struct loki_topology *a, *b;
    struct loki_config ca, cb;
    load(BASE, &a, &ca);
    load(next, &b, &cb);
    int rc = loki_config_reload_check(a, &ca, b, &cb, err, sizeof(err));
    if (want && (rc != LOKI_ETOPOLOGY || !strstr(err, want)))
        fprintf(stderr, "rc %d, reason \"%s\", wanted \"%s\"\n", rc, err, want);
    if (!want && rc)
        fprintf(stderr, "refused: %s\n", err);
    assert_int_equal(rc, want ? LOKI_ETOPOLOGY : 0);
    if (want)
        assert_non_null(strstr(err, want));
    free(a);
    free(b);
}

static void test_reload_allowed(void **state)
{
    check(BASE, NULL);
    /* a plugin path, or sim <-> plugin */
    check(DOC("interval_ms: 500", "mode: \"0660\"", "2", "/opt/models/b1.so", "2"), NULL);
    /* the planner settings each solve reads */
    check(DOC("interval_ms: 500, policy: inferline, headroom: 0.6, beta: 1.2, hysteresis: 0.1, "
              "min_dwell_s: 3, time_limit_ms: 100, mip_gap: 0.01, burst_spares: 1, "
              "fallback: false, accuracy_floor: 90, early_drop: false, reroute: false",
              "mode: \"0660\"", "2", "sim", "2"),
          NULL);
}

static void test_reload_refused(void **state)
{
    check(DOC("interval_ms: 500", "mode: \"0660\"", "3", "sim", "2"),
          "pipeline p, task a, variant a1: fanout differs");
    check(DOC("interval_ms: 500", "mode: \"0660\"", "2", "sim", "3"),
          "pipeline p, task b, variant b1: latency_ms differs");
    check(DOC("interval_ms: 500", "mode: \"0660\"", "2", "cuda", "2"),
          "variant b1: backend cuda differs");
    check(DOC("interval_ms: 400", "mode: \"0660\"", "2", "sim", "2"), "planner.interval_ms");
    check(DOC("interval_ms: 500, ewma_alpha: 0.5", "mode: \"0660\"", "2", "sim", "2"),
          "planner.ewma_alpha");
    check(DOC("interval_ms: 500", "mode: \"0600\"", "2", "sim", "2"), "frontend.mode");
    check(DOC("interval_ms: 500", "mode: \"0660\", socket: /tmp/x.sock", "2", "sim", "2"),
          "frontend.socket");
    check(DOC("interval_ms: 500", "mode: \"0660\", max_connections: 10", "2", "sim", "2"),
          "frontend.max_connections");
    char gpus[4096];
    snprintf(gpus, sizeof(gpus), "%s", BASE);
    memcpy(strstr(gpus, "count: 2"), "count: 3", 8);
    check(gpus, "gpus.count");
    char renamed[4096];
    snprintf(renamed, sizeof(renamed), "%s", BASE);
    memcpy(strstr(renamed, "name: b1"), "name: bx", 8);
    check(renamed, "variant b1: name differs");
    /* the metrics endpoint is bound at start */
    char metrics[4096];
    snprintf(metrics, sizeof(metrics), "%sruntime: {metrics_port: 9464}\n", BASE);
    check(metrics, "runtime.metrics_port");
    snprintf(metrics, sizeof(metrics), "%sruntime: {metrics_address: \"::1\"}\n", BASE);
    check(metrics, "runtime.metrics_address");
    /* the first difference is the one named */
    check(DOC("interval_ms: 400", "mode: \"0600\"", "3", "sim", "2"), "fanout");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sealed_roundtrip), cmocka_unit_test(test_unsealed_refused),
        cmocka_unit_test(test_load_snapshot),    cmocka_unit_test(test_reload_allowed),
        cmocka_unit_test(test_reload_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
