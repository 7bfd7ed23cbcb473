/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Soak (label slow): 10^7 random-size records with checksums through a small
 * ring, once between two threads and once between two processes; no loss, no
 * reordering, no corruption. LOKI_TEST_SCALE scales the count (under
 * ThreadSanitizer the default stops at 10^6).
 */
#include "harness.h"

#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm_test.h"

#define CAP (1u << 16)
#define MAXREC 4000u

struct side {
    struct loki_ring *r;
    uint64_t n;
    int err;
    uint64_t got;
};

static void *consumer_main(void *arg)
{
    struct side *s = arg;
    s->err = shm_test_consume(s->r, 77, s->n, MAXREC, &s->got);
    return NULL;
}

static void test_soak_threads(void **state)
{
    int fd = memfd_create("loki-test-ring", MFD_CLOEXEC);
    struct loki_ring *prod, *cons;
    pthread_t t;
    uint64_t n = shm_test_scaled(10000000);
    assert_int_equal(loki_ring_create(fd, CAP, LOKI_RING_PRODUCER, &prod), 0);
    assert_int_equal(loki_ring_attach_local(prod, LOKI_RING_CONSUMER, &cons), 0);
    struct side c = {.r = cons, .n = n};
    assert_int_equal(pthread_create(&t, NULL, consumer_main, &c), 0);
    assert_int_equal(shm_test_produce(prod, 77, n, MAXREC), 0);
    pthread_join(t, NULL);
    assert_int_equal(c.err, 0);
    assert_int_equal(c.got, n);
    loki_ring_destroy(prod);
    loki_ring_destroy(cons);
    close(fd);
}

static int child_producer(const char *arg)
{
    int fd;
    unsigned long n;
    struct loki_ring *r;
    if (sscanf(arg, "%d,%lu", &fd, &n) != 2 || loki_ring_attach(fd, LOKI_RING_PRODUCER, &r))
        return 2;
    int err = shm_test_produce(r, 77, n, MAXREC);
    loki_ring_destroy(r);
    return err ? 1 : 0;
}

static void test_soak_processes(void **state)
{
    int fd = memfd_create("loki-test-ring", 0);
    struct loki_ring *cons;
    uint64_t n = shm_test_scaled(10000000), got;
    char arg[64];
    assert_int_equal(loki_ring_create(fd, CAP, LOKI_RING_CONSUMER, &cons), 0);
    snprintf(arg, sizeof(arg), "%d,%lu", fd, n);
    pid_t pid = loki_test_spawn_self("producer", arg);
    assert_true(pid > 0);
    assert_int_equal(shm_test_consume(cons, 77, n, MAXREC, &got), 0);
    assert_int_equal(got, n);
    assert_int_equal(loki_ring_wait(cons, 0, -1), -EPIPE); /* and nothing after */
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    loki_ring_destroy(cons);
    close(fd);
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "producer") == 0)
        return child_producer(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_soak_threads),
        cmocka_unit_test(test_soak_processes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
