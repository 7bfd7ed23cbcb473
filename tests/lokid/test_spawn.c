/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The supervisor's worker spawn, driven directly (no socket, no router):
 * a worker holds exactly descriptors 0..6 (/dev/null, our 1 and 2, its two
 * rings, the arena, the eventfd; besides the pidfd on lokid its rings open
 * themselves; the configuration snapshot on 7 is closed once loaded), even
 * when the parent has an inheritable descriptor open, and starts with default
 * signals and an empty mask; its GPU variables are set. A stopped worker exits as expected (status
 * 0), a SIGKILLed one is reported with its signal, destroy kills the rest, and a missing executable
 * is refused with -ENOENT. A worker logs at the level of the process that spawned it: its debug
 * lines appear on the stderr it inherits when that level is debug, and not at info. A worker
 * loads the sealed snapshot it is given, never the topology file (edited or gone after the
 * snapshot, the file changes nothing), and loki_sup_set_config() changes what later workers
 * load, not running ones.
 *
 * `test_spawn bench [MB [seq]]` only times loki_sup_start (13 workers, 5
 * rounds, after touching MB MiB of heap like a busy lokid; with seq each
 * waits until the previous worker is ready) and prints the median.
 */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "loki/clock.h"
#include "loki/log.h"
#include "loki/topology.h"
#include "supervisor.h"

#define N_W 3
#define BENCH_W 13

struct seen {
    int ready[BENCH_W];
    int exited[BENCH_W];
    int64_t status[BENCH_W];
    int sig[BENCH_W];
    bool expected[BENCH_W];
};

static void on_ready(void *ctx, int inst)
{
    ((struct seen *)ctx)->ready[inst]++;
}

static void on_result(void *ctx, int inst, struct loki_batch_view *v)
{
}

static void on_exited(void *ctx, int inst, int64_t status, int sig, bool expected)
{
    struct seen *s = ctx;
    s->exited[inst]++;
    s->status[inst] = status;
    s->sig[inst] = sig;
    s->expected[inst] = expected;
}

struct fixture {
    uv_loop_t loop;
    struct loki_topology *topo;
    struct loki_sup *sup;
    struct seen seen;
};

static void fixture_open_at(struct fixture *f, const char *exe, const char *topo)
{
    char err[512];
    memset(f, 0, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    int config_fd;
    assert_int_equal(
        loki_config_load_snapshot(topo, &f->topo, NULL, &config_fd, NULL, err, sizeof(err)), 0);
    struct loki_sup_config cfg = {.self_exe = exe,
                                  .config_fd = config_fd,
                                  .arena_bytes = 1u << 20,
                                  .ring_bytes = 1u << 16,
                                  .seed = 1};
    struct loki_sup_ops ops = {.ready = on_ready, .result = on_result, .exited = on_exited};
    assert_int_equal(loki_sup_create(&f->loop, f->topo, &cfg, &ops, &f->seen, &f->sup), 0);
    close(config_fd); /* the supervisor keeps its own */
}

static void fixture_open(struct fixture *f, const char *exe)
{
    fixture_open_at(f, exe, loki_test_src("tests/lokid/small.yaml"));
}

static void fixture_close(struct fixture *f)
{
    loki_sup_destroy(f->sup);
    uv_run(&f->loop, UV_RUN_DEFAULT); /* every handle closes */
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f->topo);
}

static void on_deadline(uv_timer_t *t)
{
}

/* Run the loop until *@count reaches @want or 10 s pass. */
static void run_until(struct fixture *f, const int *count, int want)
{
    uv_timer_t t;
    uv_timer_init(&f->loop, &t);
    uv_timer_start(&t, on_deadline, 10000, 0);
    while (*count < want && uv_is_active((uv_handle_t *)&t))
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_true(*count >= want);
}

static int sum(const int *a, int n)
{
    int t = 0;
    for (int i = 0; i < n; i++)
        t += a[i];
    return t;
}

static const struct loki_plan_instance pi0 = {
    .pipeline = 0, .task = 0, .variant = 0, .batch = 1, .share = 1, .gpu = 0};

/* Bit @sig of the hex mask after @key in /proc/@pid/status. */
static bool status_bit(pid_t pid, const char *key, int sig)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    unsigned long long mask = 0;
    bool found = false;
    while (fgets(line, sizeof(line), f))
        if (!strncmp(line, key, strlen(key)) && sscanf(line + strlen(key), "%llx", &mask) == 1)
            found = true;
    fclose(f);
    assert_true(found);
    return mask >> (sig - 1) & 1;
}

static bool environ_has(pid_t pid, const char *kv)
{
    char path[64], buf[65536];
    snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    assert_true(n > 0);
    buf[n] = 0;
    for (ssize_t i = 0; i < n; i += (ssize_t)strlen(buf + i) + 1)
        if (!strcmp(buf + i, kv))
            return true;
    return false;
}

static void test_worker_fds_signals_env(void **state)
{
    /* something lokid might have inherited without close-on-exec: the worker must not get it */
    int null = open("/dev/null", O_RDONLY);
    int stray = fcntl(null, F_DUPFD, 20); /* above 3..6, where the spawn would overwrite it */
    close(null);
    assert_true(stray >= 20);
    /* lokid ignores SIGPIPE; a blocked signal stands for whatever a caller blocked */
    void (*old_pipe)(int) = signal(SIGPIPE, SIG_IGN);
    sigset_t usr1, old_mask;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, &old_mask);

    struct fixture f;
    fixture_open(&f, loki_test_bin("bin/lokid"));
    for (int i = 0; i < N_W; i++)
        assert_int_equal(loki_sup_start(f.sup, i, &pi0), 0);
    assert_int_equal(loki_sup_alive(f.sup), N_W);
    for (int i = 0; i < N_W; i++)
        run_until(&f, &f.seen.ready[i], 1);

    pid_t pids[N_W];
    for (int i = 0; i < N_W; i++) {
        pid_t pid = pids[i] = loki_sup_pid(f.sup, i);
        assert_true(pid > 0);
        char dir[64];
        snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
        DIR *d = opendir(dir);
        assert_non_null(d);
        unsigned seen = 0;
        int n = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            int fd = atoi(e->d_name);
            char p[320], target[256] = "?";
            snprintf(p, sizeof(p), "%s/%.255s", dir, e->d_name);
            ssize_t len = readlink(p, target, sizeof(target) - 1);
            target[len > 0 ? len : 0] = 0;
            /* the worker's own: its rings watch lokid through a pidfd (shm/ring.c) */
            if ((fd == 7 || fd > 8) && !strcmp(target, "anon_inode:[pidfd]"))
                continue;
            if (fd < 0 || fd > 8 || fd == 7)
                fprintf(stderr, "worker %d holds fd %d: %s\n", i, fd, target);
            assert_in_range(fd, 0, 8);
            assert_int_not_equal(fd, 7);
            seen |= 1u << fd;
            n++;
        }
        closedir(d);
        assert_int_equal(n, 8);
        assert_int_equal(seen, 0x17f);
        static const char *want[] = {"/dev/null",
                                     NULL,
                                     NULL,
                                     "/memfd:loki-ring",
                                     "/memfd:loki-ring",
                                     "/memfd:loki-arena",
                                     "anon_inode:[eventfd]",
                                     NULL,
                                     "/memfd:loki-out"};
        for (int fd = 0; fd < 9; fd++) {
            if (!want[fd])
                continue;
            char p[80], target[256];
            snprintf(p, sizeof(p), "/proc/%d/fd/%d", (int)pid, fd);
            ssize_t len = readlink(p, target, sizeof(target) - 1);
            assert_true(len > 0);
            target[len] = 0;
            if (strncmp(target, want[fd], strlen(want[fd])))
                fprintf(stderr, "worker %d fd %d is %s, want %s\n", i, fd, target, want[fd]);
            assert_true(!strncmp(target, want[fd], strlen(want[fd])));
        }
        assert_false(status_bit(pid, "SigIgn:", SIGPIPE));
        assert_false(status_bit(pid, "SigBlk:", SIGUSR1));
        assert_true(environ_has(pid, "CUDA_VISIBLE_DEVICES=0"));
        assert_true(environ_has(pid, "CUDA_DEVICE_ORDER=PCI_BUS_ID"));
    }
    fixture_close(&f);
    for (int i = 0; i < N_W; i++)
        assert_int_equal(waitpid(pids[i], NULL, 0), pids[i]);
    close(stray);
    sigprocmask(SIG_SETMASK, &old_mask, NULL);
    signal(SIGPIPE, old_pipe);
}

static void test_worker_exits(void **state)
{
    struct fixture f;
    fixture_open(&f, loki_test_bin("bin/lokid"));
    for (int i = 0; i < N_W; i++)
        assert_int_equal(loki_sup_start(f.sup, i, &pi0), 0);
    for (int i = 0; i < N_W; i++)
        run_until(&f, &f.seen.ready[i], 1);
    pid_t last = loki_sup_pid(f.sup, 2);

    /* stopped: drains and exits 0, expected */
    assert_int_equal(loki_sup_stop(f.sup, 0), 0);
    run_until(&f, &f.seen.exited[0], 1);
    assert_true(f.seen.expected[0]);
    assert_int_equal(f.seen.status[0], 0);
    assert_int_equal(f.seen.sig[0], 0);
    assert_int_equal(loki_sup_pid(f.sup, 0), -1);
    /* an exit that was asked for is no crash */
    assert_int_equal(loki_sup_crashes(f.sup, pi0.pipeline, pi0.task, pi0.variant), 0);

    /* killed: reported with its signal, not expected */
    assert_int_equal(kill(loki_sup_pid(f.sup, 1), SIGKILL), 0);
    run_until(&f, &f.seen.exited[1], 1);
    assert_false(f.seen.expected[1]);
    assert_int_equal(f.seen.sig[1], SIGKILL);
    assert_int_equal(loki_sup_alive(f.sup), 1);
    /* counted against its variant, and no other */
    assert_int_equal(loki_sup_crashes(f.sup, pi0.pipeline, pi0.task, pi0.variant), 1);
    assert_int_equal(loki_sup_crashes(f.sup, pi0.pipeline, pi0.task, pi0.variant + 1), 0);
    assert_int_equal(loki_sup_crashes(f.sup, -1, 0, 0), 0);

    /* the same id starts again (a restart) */
    assert_int_equal(loki_sup_start(f.sup, 1, &pi0), 0);
    run_until(&f, &f.seen.ready[1], 2);
    pid_t again = loki_sup_pid(f.sup, 1);

    /* destroy SIGKILLs the rest (and leaves them to us to reap) */
    fixture_close(&f);
    assert_int_equal(sum(f.seen.exited, N_W), 2);
    pid_t left[2] = {last, again};
    for (int i = 0; i < 2; i++) {
        int st = 0;
        assert_int_equal(waitpid(left[i], &st, 0), left[i]);
        assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    }
}

static void test_bad_executable(void **state)
{
    struct fixture f;
    fixture_open(&f, "/nonexistent/lokid");
    assert_int_equal(loki_sup_start(f.sup, 0, &pi0), -ENOENT);
    assert_int_equal(loki_sup_alive(f.sup), 0);
    assert_int_equal(loki_sup_pid(f.sup, 0), -1);
    /* nothing left to reap */
    assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
    fixture_close(&f);
}

/* small.yaml's text with det-fast (detect's variant 0) on the plugin @so. */
static char *small_with_plugin(const char *so)
{
    char *text, err[256];
    size_t len;
    assert_int_equal(loki_config_read(loki_test_src("tests/lokid/small.yaml"), &text, &len, NULL,
                                      err, sizeof(err)),
                     0);
    const char *at = strstr(text, "- name: det-fast\n");
    assert_non_null(at);
    at += strlen("- name: det-fast\n");
    char *out = malloc(len + strlen(so) + 64);
    assert_non_null(out);
    sprintf(out, "%.*s            backend: %s\n%s", (int)(at - text), text, so, at);
    free(text);
    return out;
}

static void test_worker_config_snapshot(void **state)
{
    /* lokid's topology file, snapshot taken, then edited into garbage */
    char *text, err[256];
    size_t len;
    assert_int_equal(loki_config_read(loki_test_src("tests/lokid/small.yaml"), &text, &len, NULL,
                                      err, sizeof(err)),
                     0);
    char *path = strdup(loki_test_write_tmp(text, ".yaml"));
    free(text);
    struct fixture f;
    fixture_open_at(&f, loki_test_bin("bin/lokid"), path);
    FILE *o = fopen(path, "w");
    assert_non_null(o);
    fputs("gpus: [this is not the file lokid validated\n", o);
    fclose(o);
    /* worker 0 loads what was validated: ready */
    assert_int_equal(loki_sup_start(f.sup, 0, &pi0), 0);
    run_until(&f, &f.seen.ready[0], 1);

    /* a new snapshot: det-fast on a plugin that does not exist. Later workers load it (and
     * fail); the running one is untouched */
    char *bad = small_with_plugin("/nonexistent/loki-test-evil.so");
    int bad_fd, good_fd = -1;
    assert_int_equal(loki_config_seal(bad, strlen(bad), &bad_fd), 0);
    free(bad);
    /* sealed: neither written nor resized, nor unsealed */
    assert_true(write(bad_fd, "x", 1) < 0);
    assert_int_equal(errno, EPERM);
    assert_true(ftruncate(bad_fd, 1) < 0);
    assert_true(fcntl(bad_fd, F_ADD_SEALS, 0) < 0);
    assert_int_equal(loki_sup_set_config(f.sup, bad_fd), 0);
    close(bad_fd);
    assert_int_equal(loki_sup_start(f.sup, 1, &pi0), 0);
    run_until(&f, &f.seen.exited[1], 1);
    assert_int_equal(f.seen.ready[1], 0);
    assert_int_equal(f.seen.status[1], 1); /* its backend would not load */
    assert_int_equal(f.seen.exited[0], 0);

    /* the good snapshot again: the same instance starts and serves */
    struct loki_topology *t;
    assert_int_equal(loki_config_load_snapshot(loki_test_src("tests/lokid/small.yaml"), &t, NULL,
                                               &good_fd, NULL, err, sizeof(err)),
                     0);
    free(t);
    assert_int_equal(loki_sup_set_config(f.sup, good_fd), 0);
    close(good_fd);
    assert_int_equal(loki_sup_start(f.sup, 1, &pi0), 0);
    run_until(&f, &f.seen.ready[1], 1);
    assert_int_equal(loki_sup_stats(f.sup)->start_failed, 0);
    assert_int_equal(loki_sup_stats(f.sup)->started, 3);
    fixture_close(&f);
    while (waitpid(-1, NULL, 0) > 0) /* destroy leaves the killed ones to us */
        ;
    free(path);
}

/*
 * Run one worker from start to a clean stop with this process's logger at @lvl and its
 * stderr (which the worker inherits) in a file; returns what was written there (static).
 */
static const char *worker_log_at(enum loki_log_level lvl)
{
    static char buf[1 << 16];
    const char *path = loki_test_write_tmp("", ".log");
    int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fd, 2), 2);
    loki_log_init(lvl);

    struct fixture f;
    fixture_open(&f, loki_test_bin("bin/lokid"));
    int rc = loki_sup_start(f.sup, 0, &pi0);
    if (rc == 0) {
        run_until(&f, &f.seen.ready[0], 1);
        loki_sup_stop(f.sup, 0);
        run_until(&f, &f.seen.exited[0], 1);
    }
    fixture_close(&f);

    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    loki_log_init(LOKI_LOG_INFO);
    assert_int_equal(rc, 0);
    assert_int_equal(f.seen.status[0], 0);
    FILE *in = fopen(path, "r");
    assert_non_null(in);
    size_t n = fread(buf, 1, sizeof(buf) - 1, in);
    buf[n] = 0;
    fclose(in);
    unlink(path);
    return buf;
}

static void test_worker_log_level(void **state)
{
    const char *l = worker_log_at(LOKI_LOG_DEBUG);
    /* the worker's own lines (small.yaml's det-fast), as JSON lines like lokid's */
    assert_non_null(strstr(l, "{\"ts\":"));
    assert_non_null(strstr(l, "\"level\":\"debug\",\"msg\":\"worker 0 (det-fast): pid "));
    assert_non_null(strstr(l, "\"level\":\"debug\",\"msg\":\"worker 0 (det-fast): detached"));
    l = worker_log_at(LOKI_LOG_INFO);
    assert_null(strstr(l, "\"level\":\"debug\""));
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int bench(int mb, bool seq)
{
    /* a heap like a busy lokid's: page tables a fork would have to copy */
    size_t bytes = (size_t)mb << 20;
    char *heap = bytes ? malloc(bytes) : NULL;
    if (bytes && !heap)
        return 1;
    for (size_t i = 0; i < bytes; i += 4096)
        heap[i] = 1;
    enum { ROUNDS = 5 };
    uint64_t t[ROUNDS * BENCH_W];
    int n = 0;
    for (int r = 0; r < ROUNDS; r++) {
        struct fixture f;
        fixture_open(&f, loki_test_bin("bin/lokid"));
        for (int i = 0; i < BENCH_W; i++) {
            uint64_t t0 = loki_now_ns();
            if (loki_sup_start(f.sup, i, &pi0))
                return 1;
            t[n++] = loki_now_ns() - t0;
            if (seq) /* the next once this one is up: no boot competes for the cores */
                run_until(&f, &f.seen.ready[i], 1);
        }
        for (int i = 0; i < BENCH_W; i++)
            run_until(&f, &f.seen.ready[i], 1);
        fixture_close(&f);
        while (waitpid(-1, NULL, 0) > 0) /* destroy leaves the killed ones to us */
            ;
    }
    qsort(t, (size_t)n, sizeof(t[0]), cmp_u64);
    printf("loki_sup_start (%s): median %.1f us, min %.1f, max %.1f over %d spawns, %d MiB heap "
           "touched\n",
           seq ? "one at a time" : "burst", t[n / 2] / 1e3, t[0] / 1e3, t[n - 1] / 1e3, n, mb);
    free(heap);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "bench"))
        return bench(argc >= 3 ? atoi(argv[2]) : 0, argc >= 4 && !strcmp(argv[3], "seq"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_worker_fds_signals_env), cmocka_unit_test(test_worker_exits),
        cmocka_unit_test(test_bad_executable),         cmocka_unit_test(test_worker_log_level),
        cmocka_unit_test(test_worker_config_snapshot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
