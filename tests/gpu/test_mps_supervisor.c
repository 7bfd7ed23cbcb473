/* SPDX-License-Identifier: Apache-2.0 */
/*
 * MPS supervision without a GPU: a fake nvidia-cuda-mps-control (a shell
 * script named by LOKI_MPS_CONTROL) logs how it is called, and this binary
 * plays the worker (`--worker`: dump the environment, exit as if MPS refused
 * it). The supervisor must start one daemon for the GPU with its own pipe
 * folder, hand the worker that folder, its share and memory limit, report
 * the refusal's exit status, and quit the daemon and remove the folder on
 * destroy. Without the control binary it runs the worker without MPS.
 */
#include "harness.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "loki/topology.h"
#include "supervisor.h"

extern char **environ;

static const char topo_yaml[] = "gpus: {count: 1, memory_mb: 16384, share_granularity: 0.25}\n"
                                "pipelines:\n"
                                "  - name: p\n"
                                "    slo_ms: 200\n"
                                "    tasks:\n"
                                "      - name: t\n"
                                "        variants:\n"
                                "          - name: v\n"
                                "            accuracy: 100\n"
                                "            memory_mb: 800\n"
                                "            backend: cuda\n"
                                "            batch_sizes: [1, 4]\n"
                                "            latency_ms: {1: [2, 4], 0.5: [3, 6]}\n";

static const char ctl_sh[] = "#!/bin/sh\n"
                             "{ echo \"args: $*\"; env | grep '^CUDA_' | sort;\n"
                             "  if [ $# -eq 0 ]; then echo \"stdin: $(cat)\"; fi; } "
                             ">> \"$LOKI_TEST_CTL_LOG\"\n";

struct ctx {
    bool done;
    int64_t status;
    bool expected;
};

static void on_ready(void *c, int inst)
{
}

static void on_result(void *c, int inst, struct loki_batch_view *v)
{
}

static void on_exited(void *c, int inst, int64_t status, int sig, bool expected)
{
    struct ctx *x = c;
    x->done = true;
    x->status = status;
    x->expected = expected;
}

static char *slurp(const char *path)
{
    static char buf[16384];
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

/* Run one worker at share 0.5 on GPU 0 to its exit; the worker's environment lands in @env_out. */
static void run_one(const char *env_out, struct ctx *x, char *pipe_dir, size_t len)
{
    char err[4096], self[PATH_MAX];
    struct loki_topology *t;
    const char *tp = loki_test_write_tmp(topo_yaml, ".yaml");
    char tpath[PATH_MAX];
    snprintf(tpath, sizeof(tpath), "%s", tp);
    int cfg_fd;
    int rc = loki_config_load_snapshot(tpath, &t, NULL, &cfg_fd, NULL, err, sizeof(err));
    if (rc)
        fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    assert_true(n > 0);
    self[n] = 0;
    setenv("LOKI_TEST_ENV_OUT", env_out, 1);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct loki_sup_config sc = {.self_exe = self,
                                 .config_fd = cfg_fd,
                                 .arena_bytes = 1u << 20,
                                 .ring_bytes = 1u << 16,
                                 .seed = 1,
                                 .mps = true};
    struct loki_sup_ops ops = {.ready = on_ready, .result = on_result, .exited = on_exited};
    struct loki_sup *s;
    assert_int_equal(loki_sup_create(&loop, t, &sc, &ops, x, &s), 0);
    close(cfg_fd);
    struct loki_plan_instance pi = {
        .pipeline = 0, .task = 0, .variant = 0, .batch = 1, .share = 0.5, .gpu = 0};
    assert_int_equal(loki_sup_start(s, 0, &pi), 0);
    for (int i = 0; i < 1000 && !x->done; i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_true(x->done);
    /* while the supervisor lives, its daemon's pipe folder exists */
    const char *e = slurp(env_out);
    assert_non_null(e);
    const char *pd = strstr(e, "CUDA_MPS_PIPE_DIRECTORY=");
    pipe_dir[0] = 0;
    if (pd) {
        snprintf(pipe_dir, len, "%.*s", (int)strcspn(pd + 24, "\n"), pd + 24);
        struct stat st;
        assert_int_equal(stat(pipe_dir, &st), 0);
    }
    loki_sup_destroy(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(t);
}

static void test_daemon_env_and_quit(void **unused)
{
    char ctl[PATH_MAX], log[PATH_MAX], env_out[PATH_MAX], pipe_dir[PATH_MAX];
    snprintf(ctl, sizeof(ctl), "%s", loki_test_write_tmp(ctl_sh, ".sh"));
    assert_int_equal(chmod(ctl, 0755), 0);
    snprintf(log, sizeof(log), "%s", loki_test_write_tmp("", ".log"));
    snprintf(env_out, sizeof(env_out), "%s", loki_test_write_tmp("", ".env"));
    setenv("LOKI_MPS_CONTROL", ctl, 1);
    setenv("LOKI_TEST_CTL_LOG", log, 1);
    struct ctx x = {0};
    run_one(env_out, &x, pipe_dir, sizeof(pipe_dir));

    /* the refusal is reported as such, and was not asked for */
    assert_int_equal(x.status, LOKI_SUP_EXIT_MPS);
    assert_false(x.expected);
    const char *e = slurp(env_out);
    assert_non_null(strstr(e, "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=50\n"));
    assert_non_null(strstr(e, "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=800M\n"));
    assert_non_null(strstr(e, "CUDA_VISIBLE_DEVICES=0\n"));
    size_t pl = strlen(pipe_dir), sl = strlen("/mps-0/pipe");
    assert_true(pl > sl);
    assert_string_equal(pipe_dir + pl - sl, "/mps-0/pipe");

    /* one daemon started with that pipe folder for GPU 0, then told to quit */
    const char *l = slurp(log);
    assert_non_null(l);
    const char *d = strstr(l, "args: -d\n");
    const char *q = strstr(l, "stdin: quit");
    assert_non_null(d);
    assert_non_null(q);
    assert_true(d < q);
    assert_null(strstr(d + 1, "args: -d\n"));
    char want[PATH_MAX + 32];
    snprintf(want, sizeof(want), "CUDA_MPS_PIPE_DIRECTORY=%s\n", pipe_dir);
    assert_non_null(strstr(l, want));
    assert_non_null(strstr(l, "CUDA_VISIBLE_DEVICES=0\n"));
    /* and the run folder went with it */
    struct stat st;
    assert_int_not_equal(stat(pipe_dir, &st), 0);
    unlink(log);
    unlink(env_out);
    unlink(ctl);
}

static void test_without_control_binary(void **unused)
{
    char env_out[PATH_MAX], pipe_dir[PATH_MAX];
    snprintf(env_out, sizeof(env_out), "%s", loki_test_write_tmp("", ".env"));
    setenv("LOKI_MPS_CONTROL", "/nonexistent/nvidia-cuda-mps-control", 1);
    struct ctx x = {0};
    run_one(env_out, &x, pipe_dir, sizeof(pipe_dir));
    const char *e = slurp(env_out);
    assert_null(strstr(e, "CUDA_MPS_PIPE_DIRECTORY="));
    assert_null(strstr(e, "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT="));
    assert_non_null(strstr(e, "CUDA_VISIBLE_DEVICES=0\n"));
    unlink(env_out);
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--worker")) {
        /* the fake worker: record the environment, then exit as MPS-refused */
        FILE *f = fopen(getenv("LOKI_TEST_ENV_OUT"), "w");
        if (!f)
            return 1;
        for (char **e = environ; *e; e++)
            fprintf(f, "%s\n", *e);
        fclose(f);
        return LOKI_SUP_EXIT_MPS;
    }
    /* hwloc's PCI plugin leaks a little per topology load (libpciaccess, dlclosed before
     * LeakSanitizer can name it); this test needs no PCI discovery, placement is a hint */
    setenv("HWLOC_COMPONENTS", "-pci", 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_daemon_env_and_quit),
        cmocka_unit_test(test_without_control_binary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
