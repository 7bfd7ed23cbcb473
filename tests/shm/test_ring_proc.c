/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ring across two processes (this binary re-executed as the peer): streams
 * of random-size records with checksums in both directions, and a peer killed
 * with SIGKILL at random points, mid-write, mid-read and while the survivor is
 * parked. The survivor must get every record committed before the death, never
 * a half-written one, and LOKI_EPEERDEAD within 100 ms instead of a hang.
 */
#include "harness.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loki/clock.h"
#include "shm_test.h"

#define CAP (1u << 16)
#define MAXREC 4000u
#define FOREVER UINT64_MAX
#define DETECT_NS (100ull * 1000 * 1000)

/* ---- the peer process ----------------------------------------------------------------------- */

struct child_args {
    int fd;
    uint64_t n;
    uint64_t seed;
    char mode[16]; /* "stream", "midwrite", "midread", "idle" */
};

static int child_main(const char *role, const char *arg)
{
    struct child_args a = {0};
    struct loki_ring *r;
    int err;

    if (sscanf(arg, "%d,%lu,%lu,%15s", &a.fd, &a.n, &a.seed, a.mode) != 4)
        return 2;
    bool prod = strcmp(role, "producer") == 0;
    err = loki_ring_attach(a.fd, prod ? LOKI_RING_PRODUCER : LOKI_RING_CONSUMER, &r);
    if (err) {
        fprintf(stderr, "child attach: %s\n", loki_strerror(err));
        return 3;
    }
    if (strcmp(a.mode, "midwrite") == 0) {
        /* n whole records, then half of one, then die without committing it */
        err = shm_test_produce(r, a.seed, a.n, MAXREC);
        void *p;
        while (loki_ring_reserve(r, 1000, &p) == -EAGAIN)
            loki_ring_wait(r, 1000, -1);
        memset(p, 0xee, 500);
        raise(SIGKILL);
    } else if (strcmp(a.mode, "midread") == 0) {
        uint64_t got;
        const void *p;
        size_t len;
        err = shm_test_consume(r, a.seed, a.n, MAXREC, &got);
        while (loki_ring_peek(r, &p, &len) == -EAGAIN)
            loki_ring_wait(r, 0, -1);
        raise(SIGKILL); /* peeked, never consumed */
    } else if (strcmp(a.mode, "idle") == 0) {
        err = shm_test_produce(r, a.seed, a.n, MAXREC);
        for (;;)
            pause();
    } else if (prod) {
        err = shm_test_produce(r, a.seed, a.n, MAXREC);
    } else {
        uint64_t got;
        err = shm_test_consume(r, a.seed, a.n, MAXREC, &got);
        if (err == 0 && got != a.n)
            err = -EBADMSG;
    }
    if (err)
        fprintf(stderr, "child %s: %s\n", role, loki_strerror(err));
    loki_ring_destroy(r);
    return err ? 1 : 0;
}

/* ---- the parent ----------------------------------------------------------------------------- */

static pid_t spawn(int fd, const char *role, uint64_t n, uint64_t seed, const char *mode)
{
    char arg[128];
    snprintf(arg, sizeof(arg), "%d,%lu,%lu,%s", fd, n, seed, mode);
    pid_t pid = loki_test_spawn_self(role, arg);
    assert_true(pid > 0);
    return pid;
}

static int reap(pid_t pid)
{
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int new_ring(enum loki_ring_role role, struct loki_ring **r)
{
    int fd = memfd_create("loki-test-ring", 0); /* inherited by the child */
    assert_true(fd >= 0);
    assert_int_equal(loki_ring_create(fd, CAP, role, r), 0);
    return fd;
}

static void test_stream_child_to_parent(void **state)
{
    struct loki_ring *r;
    uint64_t n = shm_test_scaled(1000000), got;
    int fd = new_ring(LOKI_RING_CONSUMER, &r);
    pid_t pid = spawn(fd, "producer", n, 11, "stream");
    assert_int_equal(shm_test_consume(r, 11, n, MAXREC, &got), 0);
    assert_int_equal(got, n);
    /* the child detaches cleanly: nothing lost, nothing extra */
    assert_int_equal(loki_ring_wait(r, 0, 10ll * 1000 * 1000 * 1000), -EPIPE);
    assert_int_equal(reap(pid), 0);
    loki_ring_destroy(r);
    close(fd);
}

static void test_stream_parent_to_child(void **state)
{
    struct loki_ring *r;
    uint64_t n = shm_test_scaled(1000000);
    int fd = new_ring(LOKI_RING_PRODUCER, &r);
    pid_t pid = spawn(fd, "consumer", n, 12, "stream");
    assert_int_equal(shm_test_produce(r, 12, n, MAXREC), 0);
    assert_int_equal(reap(pid), 0);
    assert_int_equal(loki_ring_consumed(r), n);
    loki_ring_destroy(r);
    close(fd);
}

/* Wait until the child has attached and made progress (exec + sanitizer start-up). */
static void wait_started(struct loki_ring *r)
{
    uint64_t t0 = loki_now_ns();
    while (loki_ring_produced(r) == 0 && loki_ring_consumed(r) == 0) {
        assert_true(loki_now_ns() - t0 < 20ull * 1000 * 1000 * 1000);
        usleep(1000);
    }
}

static void test_kill_producer_random(void **state)
{
    for (int it = 0; it < 8; it++) {
        struct loki_ring *r;
        uint64_t got = 0, seed = 100 + (uint64_t)it;
        int fd = new_ring(LOKI_RING_CONSUMER, &r);
        pid_t pid = spawn(fd, "producer", FOREVER, seed, "stream");
        wait_started(r);
        /* consume for a random while, then kill the producer wherever it is */
        uint64_t until = loki_now_ns() + (shm_test_mix(seed) % 20) * 1000 * 1000;
        uint64_t i = 0;
        while (loki_now_ns() < until) {
            const void *p;
            size_t len;
            int err = loki_ring_peek(r, &p, &len);
            if (err == -EAGAIN)
                continue;
            assert_int_equal(err, 0);
            assert_int_equal(len, shm_test_size(seed, i, MAXREC));
            assert_int_equal(shm_test_check(seed, i, p, len), 0);
            assert_int_equal(loki_ring_consume(r), 0);
            i++;
        }
        uint64_t t_kill = loki_now_ns();
        kill(pid, SIGKILL);
        /* the rest of what was committed arrives intact, then the death */
        struct loki_ring *rr = r;
        int err = 0;
        for (;; i++) {
            const void *p;
            size_t len;
            while ((err = loki_ring_peek(rr, &p, &len)) == -EAGAIN) {
                err = loki_ring_wait(rr, 0, -1);
                if (err)
                    break;
            }
            if (err)
                break;
            assert_int_equal(len, shm_test_size(seed, i, MAXREC));
            assert_int_equal(shm_test_check(seed, i, p, len), 0);
            assert_int_equal(loki_ring_consume(rr), 0);
        }
        uint64_t dt = loki_now_ns() - t_kill;
        got = i;
        assert_int_equal(err, LOKI_EPEERDEAD);
        assert_int_equal(got, loki_ring_produced(r));
        assert_true(dt < DETECT_NS);
        assert_int_equal(reap(pid), 128 + SIGKILL);
        loki_ring_destroy(r);
        close(fd);
    }
}

static void test_kill_consumer_random(void **state)
{
    for (int it = 0; it < 8; it++) {
        struct loki_ring *r;
        uint64_t seed = 200 + (uint64_t)it;
        int fd = new_ring(LOKI_RING_PRODUCER, &r);
        pid_t pid = spawn(fd, "consumer", FOREVER, seed, "stream");
        uint64_t t_kill = 0, delay = (shm_test_mix(seed) % 20) * 1000 * 1000;
        int err = 0;
        uint64_t t_start = loki_now_ns();
        for (uint64_t i = 0;; i++) {
            size_t len = shm_test_size(seed, i, MAXREC);
            void *p;
            while ((err = loki_ring_reserve(r, len, &p)) == -EAGAIN) {
                if (!t_kill && loki_ring_consumed(r) > 0 && loki_now_ns() - t_start > delay) {
                    t_kill = loki_now_ns();
                    kill(pid, SIGKILL);
                }
                err = loki_ring_wait(r, len, -1);
                if (err)
                    break;
            }
            if (err)
                break;
            shm_test_fill(seed, i, p, len);
            assert_int_equal(loki_ring_commit(r, len), 0);
            if (!t_kill && loki_ring_consumed(r) > 0 && loki_now_ns() - t_start > delay) {
                t_kill = loki_now_ns();
                kill(pid, SIGKILL);
            }
        }
        uint64_t dt = loki_now_ns() - t_kill;
        assert_int_equal(err, LOKI_EPEERDEAD);
        assert_true(t_kill != 0);
        assert_true(dt < DETECT_NS);
        assert_int_equal(reap(pid), 128 + SIGKILL);
        loki_ring_destroy(r);
        close(fd);
    }
}

static void test_die_mid_write(void **state)
{
    struct loki_ring *r;
    uint64_t got;
    int fd = new_ring(LOKI_RING_CONSUMER, &r);
    pid_t pid = spawn(fd, "producer", 5000, 31, "midwrite");
    /* exactly the committed records; the half-written one never shows up */
    assert_int_equal(shm_test_consume(r, 31, FOREVER, MAXREC, &got), LOKI_EPEERDEAD);
    assert_int_equal(got, 5000);
    assert_int_equal(reap(pid), 128 + SIGKILL);
    const void *p;
    size_t len;
    assert_int_equal(loki_ring_peek(r, &p, &len), -EAGAIN);
    loki_ring_destroy(r);
    close(fd);
}

static void test_die_mid_read(void **state)
{
    struct loki_ring *r;
    int fd = new_ring(LOKI_RING_PRODUCER, &r);
    pid_t pid = spawn(fd, "consumer", 3000, 32, "midread");
    /* produce until the dead consumer stops making room */
    assert_int_equal(shm_test_produce(r, 32, FOREVER, MAXREC), LOKI_EPEERDEAD);
    assert_int_equal(reap(pid), 128 + SIGKILL);
    assert_int_equal(loki_ring_consumed(r), 3000); /* the peeked record was not consumed */
    loki_ring_destroy(r);
    close(fd);
}

struct killer {
    pid_t pid;
    uint64_t t_kill;
};

static void *killer_main(void *arg)
{
    struct killer *k = arg;
    usleep(80 * 1000);
    k->t_kill = loki_now_ns();
    kill(k->pid, SIGKILL);
    return NULL;
}

/* The survivor is parked in futex_wait when the peer dies: the liveness slice finds it. */
static void test_kill_while_parked(void **state)
{
    struct loki_ring *r;
    uint64_t got;
    pthread_t t;
    int fd = new_ring(LOKI_RING_CONSUMER, &r);
    pid_t pid = spawn(fd, "producer", 100, 33, "idle");
    assert_int_equal(shm_test_consume(r, 33, 100, MAXREC, &got), 0);
    struct killer k = {.pid = pid};
    assert_int_equal(pthread_create(&t, NULL, killer_main, &k), 0);
    int err = loki_ring_wait(r, 0, 10ll * 1000 * 1000 * 1000);
    uint64_t now = loki_now_ns();
    pthread_join(t, NULL);
    assert_int_equal(err, LOKI_EPEERDEAD);
    assert_true(now - k.t_kill < DETECT_NS);
    int pfd;
    assert_int_equal(loki_ring_peer_pidfd(r, &pfd), 0);
    assert_true(pfd >= 0);
    assert_int_equal(reap(pid), 128 + SIGKILL);
    loki_ring_destroy(r);
    close(fd);
}

int main(int argc, char **argv)
{
    if (argc >= 3)
        return child_main(argv[1], argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_child_to_parent),
        cmocka_unit_test(test_stream_parent_to_child),
        cmocka_unit_test(test_kill_producer_random),
        cmocka_unit_test(test_kill_consumer_random),
        cmocka_unit_test(test_die_mid_write),
        cmocka_unit_test(test_die_mid_read),
        cmocka_unit_test(test_kill_while_parked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
