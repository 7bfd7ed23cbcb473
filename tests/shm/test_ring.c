/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Ring semantics in one process: single-thread edges (empty, full, wrap-around,
 * pads, sizes), header validation on attach, parking and wakeups, clean close,
 * and a two-thread stream of 10^6 random-size records with checksums so that
 * ThreadSanitizer sees both sides at one address.
 */
#include "harness.h"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "loki/clock.h"
#include "shm_test.h"

struct pair {
    int fd;
    struct loki_ring *prod;
    struct loki_ring *cons;
};

static void pair_open(struct pair *p, size_t cap)
{
    p->fd = memfd_create("loki-test-ring", MFD_CLOEXEC);
    assert_true(p->fd >= 0);
    assert_int_equal(loki_ring_create(p->fd, cap, LOKI_RING_PRODUCER, &p->prod), 0);
    assert_int_equal(loki_ring_attach_local(p->prod, LOKI_RING_CONSUMER, &p->cons), 0);
}

static void pair_close(struct pair *p)
{
    loki_ring_destroy(p->prod);
    loki_ring_destroy(p->cons);
    close(p->fd);
}

static void test_create_attach(void **state)
{
    int fd = memfd_create("loki-test-ring", MFD_CLOEXEC);
    struct loki_ring *a, *b, *c;
    assert_int_equal(loki_ring_create(fd, 1000, LOKI_RING_PRODUCER, &a), -EINVAL);
    assert_int_equal(loki_ring_create(fd, 2048, LOKI_RING_PRODUCER, &a), -EINVAL);
    assert_int_equal(loki_ring_create(fd, 4096, LOKI_RING_PRODUCER, &a), 0);
    assert_int_equal(loki_ring_max_record(a), 2048 - 8);
    assert_int_equal(loki_ring_attach(fd, LOKI_RING_PRODUCER, &b), -EBUSY);
    assert_int_equal(loki_ring_attach(fd, LOKI_RING_CONSUMER, &b), 0);
    assert_int_equal(loki_ring_attach(fd, LOKI_RING_CONSUMER, &c), -EBUSY);
    /* separate mappings of one segment see each other's records */
    assert_int_equal(loki_ring_write(a, "hello", 5), 0);
    char buf[16];
    size_t n;
    assert_int_equal(loki_ring_read(b, buf, sizeof(buf), &n), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(buf, "hello", 5);
    /* wrong-role calls */
    const void *p;
    void *w;
    assert_int_equal(loki_ring_peek(a, &p, &n), -EINVAL);
    assert_int_equal(loki_ring_reserve(b, 1, &w), -EINVAL);
    loki_ring_destroy(a);
    loki_ring_destroy(b);
    close(fd);
}

static void test_empty_and_misuse(void **state)
{
    struct pair p;
    const void *ptr;
    size_t len;
    pair_open(&p, 4096);
    assert_int_equal(loki_ring_peek(p.cons, &ptr, &len), -EAGAIN);
    assert_int_equal(loki_ring_consume(p.cons), -EINVAL);
    assert_int_equal(loki_ring_commit(p.prod, 0), -EINVAL);
    assert_int_equal(loki_ring_wait(p.cons, 0, 0), -ETIMEDOUT);
    assert_int_equal(loki_ring_wait(p.cons, 0, 5 * 1000 * 1000), -ETIMEDOUT);
    /* the producer side of an empty ring is ready at once */
    assert_int_equal(loki_ring_wait(p.prod, 100, 0), 0);
    void *w;
    assert_int_equal(loki_ring_reserve(p.prod, loki_ring_max_record(p.prod) + 1, &w), LOKI_ETOOBIG);
    assert_int_equal(loki_ring_wait(p.prod, loki_ring_max_record(p.prod) + 1, 0), LOKI_ETOOBIG);
    /* commit longer than reserved */
    assert_int_equal(loki_ring_reserve(p.prod, 10, &w), 0);
    assert_int_equal(loki_ring_commit(p.prod, 11), -EINVAL);
    /* commit shorter than reserved; a record of 0 bytes */
    assert_int_equal(loki_ring_reserve(p.prod, 100, &w), 0);
    memcpy(w, "abc", 3);
    assert_int_equal(loki_ring_commit(p.prod, 3), 0);
    assert_int_equal(loki_ring_write(p.prod, "", 0), 0);
    assert_int_equal(loki_ring_peek(p.cons, &ptr, &len), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(ptr, "abc", 3);
    /* peek twice gives the same record */
    const void *ptr2;
    assert_int_equal(loki_ring_peek(p.cons, &ptr2, &len), 0);
    assert_ptr_equal(ptr, ptr2);
    assert_int_equal(loki_ring_consume(p.cons), 0);
    assert_int_equal(loki_ring_peek(p.cons, &ptr, &len), 0);
    assert_int_equal(len, 0);
    assert_int_equal(loki_ring_consume(p.cons), 0);
    assert_int_equal(loki_ring_peek(p.cons, &ptr, &len), -EAGAIN);
    assert_int_equal(loki_ring_used(p.prod), 0);
    /* read into a buffer too small leaves the record in place */
    assert_int_equal(loki_ring_write(p.prod, "0123456789", 10), 0);
    char small[4];
    assert_int_equal(loki_ring_read(p.cons, small, sizeof(small), &len), LOKI_ETOOBIG);
    char big[16];
    assert_int_equal(loki_ring_read(p.cons, big, sizeof(big), &len), 0);
    assert_int_equal(len, 10);
    pair_close(&p);
}

static void test_full_edge(void **state)
{
    struct pair p;
    void *w;
    const void *ptr;
    size_t len;
    pair_open(&p, 4096);
    /* 56-byte payload + 8-byte header = 64 B: exactly 64 records fill the ring */
    for (int i = 0; i < 64; i++) {
        assert_int_equal(loki_ring_reserve(p.prod, 56, &w), 0);
        memset(w, i, 56);
        assert_int_equal(loki_ring_commit(p.prod, 56), 0);
    }
    assert_int_equal(loki_ring_used(p.prod), 4096);
    assert_int_equal(loki_ring_reserve(p.prod, 0, &w), -EAGAIN);
    assert_int_equal(loki_ring_wait(p.prod, 0, 1000000), -ETIMEDOUT);
    assert_int_equal(loki_ring_peek(p.cons, &ptr, &len), 0);
    assert_int_equal(((const uint8_t *)ptr)[0], 0);
    assert_int_equal(loki_ring_consume(p.cons), 0);
    /* one record of room again, and not a byte more */
    assert_int_equal(loki_ring_reserve(p.prod, 57, &w), -EAGAIN);
    assert_int_equal(loki_ring_wait(p.prod, 56, 0), 0);
    assert_int_equal(loki_ring_reserve(p.prod, 56, &w), 0);
    memset(w, 64, 56);
    assert_int_equal(loki_ring_commit(p.prod, 56), 0);
    for (int i = 1; i <= 64; i++) {
        assert_int_equal(loki_ring_peek(p.cons, &ptr, &len), 0);
        assert_int_equal(len, 56);
        assert_int_equal(((const uint8_t *)ptr)[55], i);
        assert_int_equal(loki_ring_consume(p.cons), 0);
    }
    assert_int_equal(loki_ring_peek(p.cons, &ptr, &len), -EAGAIN);
    assert_int_equal(loki_ring_produced(p.prod), 65);
    assert_int_equal(loki_ring_consumed(p.prod), 65);
    pair_close(&p);
}

/* Records that do not divide the capacity force pad records at the end. */
static void test_wraparound(void **state)
{
    struct pair p;
    pair_open(&p, 4096);
    const size_t max = loki_ring_max_record(p.prod);
    uint64_t next_in = 0, next_out = 0, round = 0;
    /* keep the ring partly full while indexes go around ~200 times */
    while (next_out < 20000) {
        round++;
        int burst = (int)(shm_test_mix(round) % 7);
        for (int k = 0; k < burst; k++) {
            size_t len = shm_test_size(7, next_in, max);
            void *w;
            int err = loki_ring_reserve(p.prod, len, &w);
            if (err == -EAGAIN)
                break;
            assert_int_equal(err, 0);
            shm_test_fill(7, next_in, w, len);
            assert_int_equal(loki_ring_commit(p.prod, len), 0);
            next_in++;
        }
        int drain = (int)(shm_test_mix(round + (1ull << 40)) % 7);
        for (int k = 0; k < drain; k++) {
            const void *ptr;
            size_t len;
            int err = loki_ring_peek(p.cons, &ptr, &len);
            if (err == -EAGAIN)
                break;
            assert_int_equal(err, 0);
            assert_int_equal(len, shm_test_size(7, next_out, max));
            assert_int_equal(shm_test_check(7, next_out, ptr, len), 0);
            assert_int_equal(loki_ring_consume(p.cons), 0);
            next_out++;
        }
    }
    struct loki_ring_shm *shm = loki_ring_segment(p.prod);
    assert_true(shm->prod.idx > 100 * 4096ull);
    pair_close(&p);
}

static int attach_after(int fd, void (*scribble)(struct loki_ring_shm *))
{
    struct loki_ring *a, *b;
    int err;
    assert_int_equal(loki_ring_create(fd, 8192, LOKI_RING_PRODUCER, &a), 0);
    scribble(loki_ring_segment(a));
    err = loki_ring_attach(fd, LOKI_RING_CONSUMER, &b);
    if (err == 0)
        loki_ring_destroy(b);
    loki_ring_destroy(a);
    return err;
}

static void s_none(struct loki_ring_shm *s)
{
}
static void s_magic(struct loki_ring_shm *s)
{
    s->hdr.magic ^= 1;
}
static void s_version(struct loki_ring_shm *s)
{
    s->hdr.version = 99;
}
static void s_layout(struct loki_ring_shm *s)
{
    s->hdr.layout_hash ^= 0x10;
}
static void s_capacity(struct loki_ring_shm *s)
{
    s->hdr.param0 = 1u << 20; /* bigger than the file: would read out of bounds */
}
static void s_csum(struct loki_ring_shm *s)
{
    s->hdr.reserved = 1;
}

static void test_corrupt_header(void **state)
{
    int fd = memfd_create("loki-test-ring", MFD_CLOEXEC);
    struct loki_ring *b;
    assert_int_equal(attach_after(fd, s_none), 0);
    assert_int_equal(attach_after(fd, s_magic), LOKI_EBADMAGIC);
    assert_int_equal(attach_after(fd, s_version), LOKI_EBADMAGIC);
    assert_int_equal(attach_after(fd, s_layout), LOKI_ELAYOUT);
    assert_int_equal(attach_after(fd, s_capacity), LOKI_ECORRUPT);
    assert_int_equal(attach_after(fd, s_csum), LOKI_ECORRUPT);
    /* file size that disagrees with the header */
    assert_int_equal(attach_after(fd, s_none), 0);
    assert_int_equal(ftruncate(fd, 4096 + 8192 + 4096), 0);
    assert_int_equal(loki_ring_attach(fd, LOKI_RING_CONSUMER, &b), LOKI_ECORRUPT);
    /* empty and tiny files */
    assert_int_equal(ftruncate(fd, 0), 0);
    assert_int_equal(loki_ring_attach(fd, LOKI_RING_CONSUMER, &b), LOKI_EBADMAGIC);
    assert_int_equal(ftruncate(fd, 100), 0);
    assert_int_equal(loki_ring_attach(fd, LOKI_RING_CONSUMER, &b), LOKI_ECORRUPT);
    /* garbage of the right size */
    assert_int_equal(ftruncate(fd, 0), 0);
    assert_int_equal(ftruncate(fd, 4096 + 8192), 0);
    assert_int_equal(loki_ring_attach(fd, LOKI_RING_CONSUMER, &b), LOKI_EBADMAGIC);
    close(fd);
}

static void test_corrupt_record(void **state)
{
    struct pair p;
    const void *ptr;
    size_t len;
    pair_open(&p, 4096);
    uint8_t *data = (uint8_t *)loki_ring_segment(p.prod) + LOKI_RING_DATA_OFF;
    assert_int_equal(loki_ring_write(p.prod, "abcdefgh", 8), 0);
    struct loki_ring_rec *rec = (struct loki_ring_rec *)data;
    rec->seq ^= 5; /* a stale or scribbled record */
    assert_int_equal(loki_ring_peek(p.cons, &ptr, &len), LOKI_ECORRUPT);
    rec->seq ^= 5;
    rec->len = 3000; /* longer than what was published */
    assert_int_equal(loki_ring_peek(p.cons, &ptr, &len), LOKI_ECORRUPT);
    rec->len = 8;
    assert_int_equal(loki_ring_peek(p.cons, &ptr, &len), 0);
    pair_close(&p);
}

/* ---- two threads ---------------------------------------------------------------------------- */

struct stream_arg {
    struct loki_ring *r;
    uint64_t seed;
    uint64_t n;
    size_t max;
    int err;
    uint64_t got;
};

static void *producer_main(void *arg)
{
    struct stream_arg *a = arg;
    a->err = shm_test_produce(a->r, a->seed, a->n, a->max);
    return NULL;
}

static void *consumer_main(void *arg)
{
    struct stream_arg *a = arg;
    a->err = shm_test_consume(a->r, a->seed, a->n, a->max, &a->got);
    return NULL;
}

static void run_threads(size_t cap, uint64_t n, uint64_t spin_ns)
{
    struct pair p;
    pthread_t tp, tc;
    pair_open(&p, cap);
    loki_ring_set_spin(p.prod, spin_ns);
    loki_ring_set_spin(p.cons, spin_ns);
    size_t max = loki_ring_max_record(p.prod);
    if (max > 4000)
        max = 4000;
    struct stream_arg pa = {.r = p.prod, .seed = 42, .n = n, .max = max};
    struct stream_arg ca = {.r = p.cons, .seed = 42, .n = n, .max = max};
    assert_int_equal(pthread_create(&tc, NULL, consumer_main, &ca), 0);
    assert_int_equal(pthread_create(&tp, NULL, producer_main, &pa), 0);
    pthread_join(tp, NULL);
    pthread_join(tc, NULL);
    assert_int_equal(pa.err, 0);
    assert_int_equal(ca.err, 0);
    assert_int_equal(ca.got, n);
    assert_int_equal(loki_ring_consumed(p.prod), n);
    pair_close(&p);
}

static void test_threads_stream(void **state)
{
    run_threads(1 << 16, shm_test_scaled(1000000), LOKI_RING_SPIN_NS_DEFAULT);
}

/* No spinning at all: every empty/full edge goes through the futex. */
static void test_threads_park(void **state)
{
    run_threads(4096, shm_test_scaled(100000), 0);
}

/* ---- parking, eventfd, close ---------------------------------------------------------------- */

struct park_arg {
    struct loki_ring *r;
    int err;
    uint64_t cpu_ns;
    uint64_t woke_ns;
};

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *park_main(void *arg)
{
    struct park_arg *a = arg;
    uint64_t c0 = thread_cpu_ns();
    a->err = loki_ring_wait(a->r, 0, 5ll * 1000 * 1000 * 1000);
    a->woke_ns = loki_now_ns();
    a->cpu_ns = thread_cpu_ns() - c0;
    return NULL;
}

static void test_idle_park_costs_nothing(void **state)
{
    struct pair p;
    pthread_t t;
    pair_open(&p, 4096);
    struct park_arg a = {.r = p.cons};
    assert_int_equal(pthread_create(&t, NULL, park_main, &a), 0);
    usleep(300 * 1000);
    uint64_t sent = loki_now_ns();
    assert_int_equal(loki_ring_write(p.prod, "x", 1), 0);
    pthread_join(t, NULL);
    assert_int_equal(a.err, 0);
    /* 300 ms parked: a few dozen liveness checks, not a spinning core */
    assert_true(a.cpu_ns < 30ull * 1000 * 1000);
    assert_true(a.woke_ns - sent < 50ull * 1000 * 1000); /* woken, not timed out */
    pair_close(&p);
}

static void test_eventfd_notify(void **state)
{
    struct pair p;
    pair_open(&p, 4096);
    int efd_cons = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int efd_prod = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    loki_ring_set_notify(p.cons, efd_cons, efd_prod);
    loki_ring_set_notify(p.prod, efd_prod, efd_cons);
    struct pollfd pfd = {.fd = efd_cons, .events = POLLIN};
    uint64_t v;

    /* not armed: the producer does not touch the eventfd */
    assert_int_equal(loki_ring_write(p.prod, "a", 1), 0);
    assert_int_equal(poll(&pfd, 1, 0), 0);
    /* armed with data present: told to drain instead of sleeping */
    assert_int_equal(loki_ring_notify_arm(p.cons, 0), 1);
    char buf[8];
    size_t n;
    assert_int_equal(loki_ring_read(p.cons, buf, sizeof(buf), &n), 0);
    /* armed on an empty ring: the next commit writes the eventfd once */
    assert_int_equal(loki_ring_notify_arm(p.cons, 0), 0);
    assert_int_equal(poll(&pfd, 1, 0), 0);
    assert_int_equal(loki_ring_write(p.prod, "b", 1), 0);
    assert_int_equal(loki_ring_write(p.prod, "c", 1), 0);
    assert_int_equal(poll(&pfd, 1, 0), 1);
    assert_int_equal(read(efd_cons, &v, sizeof(v)), 8);
    assert_int_equal(v, 1);
    /* wait() in eventfd mode */
    assert_int_equal(loki_ring_read(p.cons, buf, sizeof(buf), &n), 0);
    assert_int_equal(loki_ring_read(p.cons, buf, sizeof(buf), &n), 0);
    loki_ring_set_spin(p.cons, 0);
    assert_int_equal(loki_ring_wait(p.cons, 0, 2 * 1000 * 1000), -ETIMEDOUT);
    struct park_arg a = {.r = p.cons};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, park_main, &a), 0);
    usleep(50 * 1000);
    uint64_t sent = loki_now_ns();
    assert_int_equal(loki_ring_write(p.prod, "d", 1), 0);
    pthread_join(t, NULL);
    assert_int_equal(a.err, 0);
    assert_true(a.woke_ns - sent < 20ull * 1000 * 1000);
    /* the producer side arms for room */
    while (loki_ring_write(p.prod, "0123456789abcdef0123456789abcdef", 32) == 0)
        ;
    assert_int_equal(loki_ring_notify_arm(p.prod, 32), 0);
    pfd.fd = efd_prod;
    assert_int_equal(poll(&pfd, 1, 0), 0);
    assert_int_equal(loki_ring_read(p.cons, buf, sizeof(buf), &n), 0);
    assert_int_equal(poll(&pfd, 1, 0), 1);
    pair_close(&p);
    close(efd_cons);
    close(efd_prod);
}

static void test_clean_close(void **state)
{
    struct pair p;
    char buf[8];
    size_t n;
    pair_open(&p, 4096);
    assert_int_equal(loki_ring_peer_check(p.cons), 0);
    assert_int_equal(loki_ring_write(p.prod, "a", 1), 0);
    assert_int_equal(loki_ring_write(p.prod, "b", 1), 0);
    loki_ring_destroy(p.prod);
    /* what was committed before the close is still delivered, then -EPIPE */
    assert_int_equal(loki_ring_wait(p.cons, 0, 1000000), 0);
    assert_int_equal(loki_ring_read(p.cons, buf, sizeof(buf), &n), 0);
    assert_int_equal(loki_ring_read(p.cons, buf, sizeof(buf), &n), 0);
    assert_int_equal(buf[0], 'b');
    assert_int_equal(loki_ring_wait(p.cons, 0, -1), -EPIPE);
    assert_int_equal(loki_ring_peer_check(p.cons), -EPIPE);
    loki_ring_destroy(p.cons);
    close(p.fd);
}

/* A parked consumer is woken by the producer's close, not by a timeout. */
static void test_close_wakes_parked(void **state)
{
    struct pair p;
    pthread_t t;
    pair_open(&p, 4096);
    loki_ring_set_spin(p.cons, 0);
    struct park_arg a = {.r = p.cons};
    assert_int_equal(pthread_create(&t, NULL, park_main, &a), 0);
    usleep(30 * 1000);
    uint64_t closed = loki_now_ns();
    loki_ring_destroy(p.prod);
    pthread_join(t, NULL);
    assert_int_equal(a.err, -EPIPE);
    assert_true(a.woke_ns - closed < 20ull * 1000 * 1000);
    loki_ring_destroy(p.cons);
    close(p.fd);
}

/* ---- adaptive spin, notify disarm ---------------------------------------------------------- */

struct late_write {
    struct loki_ring *prod;
    unsigned delay_us;
};

static void *late_write_main(void *arg)
{
    struct late_write *lw = arg;
    usleep(lw->delay_us);
    return (void *)(intptr_t)loki_ring_write(lw->prod, "x", 1);
}

/* One wait answered @delay_us after it started (give or take the scheduler). */
static void wait_answered_after(struct pair *p, unsigned delay_us)
{
    struct late_write lw = {.prod = p->prod, .delay_us = delay_us};
    pthread_t t;
    void *rc;
    char buf[8];
    size_t n;
    assert_int_equal(pthread_create(&t, NULL, late_write_main, &lw), 0);
    assert_int_equal(loki_ring_wait(p->cons, 0, 5ll * 1000 * 1000 * 1000), 0);
    pthread_join(t, &rc);
    assert_int_equal((intptr_t)rc, 0);
    assert_int_equal(loki_ring_read(p->cons, buf, sizeof(buf), &n), 0);
}

/*
 * A peer that answers long after the spin budget (here 10 ms against 2 ms) halves the
 * budget down to the floor, so an idle side stops spinning; one that answers soon after
 * (1 ms, within twice the maximum) gets the whole budget back.
 */
static void test_adaptive_spin(void **state)
{
    struct pair p;
    const uint64_t max = 2 * 1000 * 1000;
    pair_open(&p, 4096);
    loki_ring_set_spin(p.cons, max);
    assert_int_equal(loki_ring_spin_budget(p.cons), max);
    for (int i = 0; i < 5 && loki_ring_spin_budget(p.cons) == max; i++)
        wait_answered_after(&p, 10 * 1000);
    assert_int_equal(loki_ring_spin_budget(p.cons), max / 2);
    /* ten halvings reach the floor; a few more tries absorb a descheduled waiter */
    for (int i = 0; i < 30 && loki_ring_spin_budget(p.cons) != LOKI_RING_SPIN_MIN_NS; i++)
        wait_answered_after(&p, 10 * 1000);
    assert_int_equal(loki_ring_spin_budget(p.cons), LOKI_RING_SPIN_MIN_NS);
    for (int i = 0; i < 20 && loki_ring_spin_budget(p.cons) != max; i++)
        wait_answered_after(&p, 1000);
    assert_int_equal(loki_ring_spin_budget(p.cons), max);
    /* a budget of 0 stays 0: park at once */
    loki_ring_set_spin(p.cons, 0);
    wait_answered_after(&p, 1000);
    assert_int_equal(loki_ring_spin_budget(p.cons), 0);
    pair_close(&p);
}

/* A disarmed consumer is not written to; armed again, it is. */
static void test_notify_disarm(void **state)
{
    struct pair p;
    char buf[8];
    size_t n;
    uint64_t v;
    pair_open(&p, 4096);
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    loki_ring_set_notify(p.cons, efd, -1);
    loki_ring_set_notify(p.prod, -1, efd);
    struct pollfd pfd = {.fd = efd, .events = POLLIN};

    assert_int_equal(loki_ring_notify_arm(p.cons, 0), 0);
    loki_ring_notify_disarm(p.cons);
    assert_int_equal(loki_ring_write(p.prod, "a", 1), 0);
    assert_int_equal(poll(&pfd, 1, 0), 0);
    assert_int_equal(loki_ring_read(p.cons, buf, sizeof(buf), &n), 0);
    assert_int_equal(loki_ring_notify_arm(p.cons, 0), 0);
    assert_int_equal(loki_ring_write(p.prod, "b", 1), 0);
    assert_int_equal(poll(&pfd, 1, 0), 1);
    assert_int_equal(read(efd, &v, sizeof(v)), 8);
    pair_close(&p);
    close(efd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_attach),
        cmocka_unit_test(test_empty_and_misuse),
        cmocka_unit_test(test_full_edge),
        cmocka_unit_test(test_wraparound),
        cmocka_unit_test(test_corrupt_header),
        cmocka_unit_test(test_corrupt_record),
        cmocka_unit_test(test_threads_stream),
        cmocka_unit_test(test_threads_park),
        cmocka_unit_test(test_idle_park_costs_nothing),
        cmocka_unit_test(test_eventfd_notify),
        cmocka_unit_test(test_clean_close),
        cmocka_unit_test(test_close_wakes_parked),
        cmocka_unit_test(test_adaptive_spin),
        cmocka_unit_test(test_notify_disarm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
