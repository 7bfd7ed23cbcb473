/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Payload arena: allocation and coalescing, generations that turn a double
 * free or a use after free into -ESTALE, refs that do not point at a block,
 * header validation, frees from another thread (ThreadSanitizer) and from
 * another process, and a randomised run against a simple model.
 */
#include "harness.h"

#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "loki/arena.h"
#include "loki/error.h"
#include "loki/ring.h"
#include "shm_test.h"

#define ARENA_BYTES (1u << 20)

static struct loki_arena *new_arena(int *fd, size_t bytes)
{
    struct loki_arena *a;
    *fd = memfd_create("loki-test-arena", 0);
    assert_true(*fd >= 0);
    assert_int_equal(loki_arena_create(*fd, bytes, &a), 0);
    return a;
}

static void test_alloc_free_basic(void **state)
{
    int fd;
    struct loki_arena *a = new_arena(&fd, ARENA_BYTES);
    struct loki_arena_ref r1, r2;
    void *p1, *p2, *g;
    assert_int_equal(loki_arena_free_bytes(a), ARENA_BYTES);
    assert_int_equal(loki_arena_alloc(a, 0, &r1, &p1), -EINVAL);
    assert_int_equal(loki_arena_alloc(a, ARENA_BYTES + 1, &r1, &p1), LOKI_ETOOBIG);
    assert_int_equal(loki_arena_alloc(a, 1000, &r1, &p1), 0);
    assert_int_equal(r1.len, 1000);
    assert_int_equal(loki_arena_alloc(a, 100, &r2, &p2), 0);
    assert_int_equal(loki_arena_free_bytes(a), ARENA_BYTES - 1024 - 256);
    memset(p1, 1, 1000);
    memset(p2, 2, 100);
    assert_int_equal(loki_arena_get(a, r1, &g), 0);
    assert_ptr_equal(g, p1);
    assert_int_equal(((uint8_t *)g)[999], 1);
    /* a ref claiming more than the block holds */
    struct loki_arena_ref bad = r2;
    bad.len = 257;
    assert_int_equal(loki_arena_get(a, bad, &g), LOKI_ECORRUPT);
    assert_int_equal(loki_arena_free(a, r1), 0);
    assert_int_equal(loki_arena_free(a, r2), 0);
    assert_int_equal(loki_arena_reclaim(a), 2);
    assert_int_equal(loki_arena_free_bytes(a), ARENA_BYTES);
    /* the whole arena in one block proves the buddies merged back */
    struct loki_arena_ref all;
    assert_int_equal(loki_arena_alloc(a, ARENA_BYTES, &all, &p1), 0);
    assert_int_equal(loki_arena_alloc(a, 1, &r1, &p1), -ENOMEM);
    assert_int_equal(loki_arena_free(a, all), 0);
    loki_arena_destroy(a);
    close(fd);
}

static void test_double_free_and_use_after_free(void **state)
{
    int fd;
    struct loki_arena *a = new_arena(&fd, ARENA_BYTES);
    struct loki_arena_ref r, r_new;
    void *p, *g;
    assert_int_equal(loki_arena_alloc(a, 300, &r, &p), 0);
    assert_int_equal(loki_arena_free(a, r), 0);
    /* freed, not yet reclaimed */
    assert_int_equal(loki_arena_free(a, r), -ESTALE);
    assert_int_equal(loki_arena_get(a, r, &g), -ESTALE);
    /* reclaimed and handed out again at the same offset: the old ref stays stale */
    assert_int_equal(loki_arena_alloc(a, 300, &r_new, &p), 0);
    assert_int_equal(r_new.off, r.off);
    assert_true(r_new.gen != r.gen);
    assert_int_equal(loki_arena_get(a, r, &g), -ESTALE);
    assert_int_equal(loki_arena_free(a, r), -ESTALE);
    assert_int_equal(loki_arena_get(a, r_new, &g), 0); /* the new owner is unaffected */
    assert_int_equal(loki_arena_free(a, r_new), 0);
    assert_int_equal(loki_arena_free(a, r_new), -ESTALE);
    /* a stale ref into what is now the inside of a bigger block */
    struct loki_arena_ref small1, small2, big;
    assert_int_equal(loki_arena_alloc(a, 256, &small1, &p), 0);
    assert_int_equal(loki_arena_alloc(a, 256, &small2, &p), 0);
    assert_int_equal(loki_arena_free(a, small1), 0);
    assert_int_equal(loki_arena_free(a, small2), 0);
    assert_int_equal(loki_arena_reclaim(a), 2);
    assert_int_equal(loki_arena_alloc(a, 512, &big, &p), 0);
    struct loki_arena_ref inner = small1.off < small2.off ? small2 : small1;
    assert_true(inner.off > big.off && inner.off < big.off + 512);
    assert_int_equal(loki_arena_get(a, inner, &g), -ESTALE);
    assert_int_equal(loki_arena_free(a, inner), -ESTALE);
    assert_int_equal(loki_arena_get(a, big, &g), 0);
    assert_int_equal(loki_arena_free(a, big), 0);
    loki_arena_destroy(a);
    close(fd);
}

static void test_bad_refs(void **state)
{
    int fd;
    struct loki_arena *a = new_arena(&fd, ARENA_BYTES);
    struct loki_arena_ref r;
    void *p, *g;
    assert_int_equal(loki_arena_alloc(a, 64, &r, &p), 0);
    struct loki_arena_ref bad = r;
    bad.off = ARENA_BYTES; /* past the end */
    assert_int_equal(loki_arena_get(a, bad, &g), LOKI_ECORRUPT);
    assert_int_equal(loki_arena_free(a, bad), LOKI_ECORRUPT);
    bad.off = r.off + 8; /* not a block start */
    assert_int_equal(loki_arena_free(a, bad), LOKI_ECORRUPT);
    bad = r;
    bad.gen = 0;
    assert_int_equal(loki_arena_get(a, bad, &g), LOKI_ECORRUPT);
    bad = r;
    bad.gen = r.gen + 1; /* a generation from the future */
    assert_int_equal(loki_arena_free(a, bad), -ESTALE);
    bad = r;
    bad.len = 0;
    assert_int_equal(loki_arena_get(a, bad, &g), LOKI_ECORRUPT);
    assert_int_equal(loki_arena_free(a, r), 0);
    loki_arena_destroy(a);
    close(fd);
}

static void test_exhaust_and_coalesce(void **state)
{
    int fd;
    struct loki_arena *a = new_arena(&fd, 1u << 16);
    const int n = (1 << 16) / LOKI_ARENA_UNIT;
    struct loki_arena_ref refs[257];
    void *p;
    for (int i = 0; i < n; i++)
        assert_int_equal(loki_arena_alloc(a, 1, &refs[i], &p), 0);
    assert_int_equal(loki_arena_alloc(a, 1, &refs[n], &p), -ENOMEM);
    assert_int_equal(loki_arena_free_bytes(a), 0);
    /* free every other block: lots of free bytes, no two buddies free */
    for (int i = 0; i < n; i += 2)
        assert_int_equal(loki_arena_free(a, refs[i]), 0);
    assert_int_equal(loki_arena_alloc(a, 512, &refs[n], &p), -ENOMEM);
    assert_int_equal(loki_arena_free_bytes(a), (1u << 16) / 2);
    for (int i = 1; i < n; i += 2)
        assert_int_equal(loki_arena_free(a, refs[i]), 0);
    assert_int_equal(loki_arena_alloc(a, 1u << 16, &refs[0], &p), 0);
    loki_arena_destroy(a);
    close(fd);
}

static void test_corrupt_header(void **state)
{
    int fd;
    struct loki_arena *a = new_arena(&fd, ARENA_BYTES), *b;
    struct loki_arena_shm *shm = loki_arena_segment(a);
    assert_int_equal(loki_arena_attach(fd, &b), 0);
    loki_arena_destroy(b);
    shm->hdr.magic ^= 1;
    assert_int_equal(loki_arena_attach(fd, &b), LOKI_EBADMAGIC);
    shm->hdr.magic ^= 1;
    shm->hdr.layout_hash ^= 1;
    assert_int_equal(loki_arena_attach(fd, &b), LOKI_ELAYOUT);
    shm->hdr.layout_hash ^= 1;
    shm->hdr.param0 *= 2;
    assert_int_equal(loki_arena_attach(fd, &b), LOKI_ECORRUPT);
    shm->hdr.param0 /= 2;
    shm->hdr.csum ^= 1;
    assert_int_equal(loki_arena_attach(fd, &b), LOKI_ECORRUPT);
    shm->hdr.csum ^= 1;
    assert_int_equal(loki_arena_attach(fd, &b), 0);
    loki_arena_destroy(b);
    /* a ring is not an arena */
    int rfd = memfd_create("loki-test-ring", MFD_CLOEXEC);
    struct loki_ring *r;
    assert_int_equal(loki_ring_create(rfd, 1u << 20, LOKI_RING_PRODUCER, &r), 0);
    assert_int_equal(loki_arena_attach(rfd, &b), LOKI_EBADMAGIC);
    loki_ring_destroy(r);
    close(rfd);
    loki_arena_destroy(a);
    close(fd);
}

/* Randomised alloc/free against a model of live blocks and their contents. */
static void test_random_model(void **state)
{
    int fd;
    struct loki_arena *a = new_arena(&fd, ARENA_BYTES);
    enum { SLOTS = 512 };
    struct loki_arena_ref live[SLOTS];
    bool used[SLOTS] = {0};
    uint64_t tag[SLOTS];
    for (uint64_t step = 0; step < 200000; step++) {
        uint64_t h = shm_test_mix(step);
        int s = (int)(h % SLOTS);
        void *p;
        if (!used[s]) {
            size_t len = 1 + (size_t)((h >> 20) % ((h & 0x100) ? 20000 : 600));
            int err = loki_arena_alloc(a, len, &live[s], &p);
            if (err == -ENOMEM)
                continue;
            assert_int_equal(err, 0);
            shm_test_fill(step, 0, p, len);
            tag[s] = step;
            used[s] = true;
        } else {
            assert_int_equal(loki_arena_get(a, live[s], &p), 0);
            /* nobody else's allocation overwrote this block */
            assert_int_equal(shm_test_check(tag[s], 0, p, live[s].len), 0);
            assert_int_equal(loki_arena_free(a, live[s]), 0);
            assert_int_equal(loki_arena_free(a, live[s]), -ESTALE);
            used[s] = false;
        }
    }
    for (int s = 0; s < SLOTS; s++)
        if (used[s])
            assert_int_equal(loki_arena_free(a, live[s]), 0);
    loki_arena_reclaim(a);
    assert_int_equal(loki_arena_free_bytes(a), ARENA_BYTES);
    loki_arena_destroy(a);
    close(fd);
}

/* ---- another thread frees: the router/worker pattern, refs passed through a ring --------- */

struct freer {
    struct loki_ring *r;
    struct loki_arena *a;
    uint64_t n;
    int bad;
};

static void *freer_main(void *arg)
{
    struct freer *f = arg;
    for (uint64_t i = 0; i < f->n; i++) {
        struct loki_arena_ref ref;
        size_t len;
        void *p;
        int err;
        while ((err = loki_ring_read(f->r, &ref, sizeof(ref), &len)) == -EAGAIN)
            loki_ring_wait(f->r, 0, -1);
        if (err || len != sizeof(ref) || loki_arena_get(f->a, ref, &p) != 0 ||
            shm_test_check(i, 1, p, ref.len) != 0 || loki_arena_free(f->a, ref) != 0 ||
            loki_arena_free(f->a, ref) != -ESTALE)
            f->bad++;
    }
    return NULL;
}

static void test_cross_thread_free(void **state)
{
    int fd, rfd = memfd_create("loki-test-ring", MFD_CLOEXEC);
    struct loki_arena *a = new_arena(&fd, 1u << 16);
    struct loki_ring *prod, *cons;
    assert_int_equal(loki_ring_create(rfd, 4096, LOKI_RING_PRODUCER, &prod), 0);
    assert_int_equal(loki_ring_attach_local(prod, LOKI_RING_CONSUMER, &cons), 0);
    struct freer f = {.r = cons, .a = a, .n = shm_test_scaled(200000)};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, freer_main, &f), 0);
    for (uint64_t i = 0; i < f.n; i++) {
        struct loki_arena_ref ref;
        void *p;
        size_t len = 1 + (size_t)(shm_test_mix(i) % 3000);
        int err;
        /* a small arena: allocation fails until the other side frees */
        while ((err = loki_arena_alloc(a, len, &ref, &p)) == -ENOMEM)
            sched_yield();
        assert_int_equal(err, 0);
        shm_test_fill(i, 1, p, len);
        while ((err = loki_ring_write(prod, &ref, sizeof(ref))) == -EAGAIN)
            loki_ring_wait(prod, sizeof(ref), -1);
        assert_int_equal(err, 0);
    }
    pthread_join(t, NULL);
    assert_int_equal(f.bad, 0);
    loki_arena_reclaim(a);
    assert_int_equal(loki_arena_free_bytes(a), 1u << 16);
    loki_ring_destroy(prod);
    loki_ring_destroy(cons);
    loki_arena_destroy(a);
    close(fd);
    close(rfd);
}

/* ---- another process frees ------------------------------------------------------------------ */

static int child_free(const char *arg)
{
    int afd, rfd;
    unsigned long n;
    struct loki_arena *a;
    struct loki_ring *r;
    if (sscanf(arg, "%d,%d,%lu", &afd, &rfd, &n) != 3)
        return 2;
    if (loki_arena_attach(afd, &a) != 0 || loki_ring_attach(rfd, LOKI_RING_CONSUMER, &r) != 0)
        return 3;
    struct freer f = {.r = r, .a = a, .n = n};
    freer_main(&f);
    loki_ring_destroy(r);
    loki_arena_destroy(a);
    return f.bad ? 1 : 0;
}

static void test_cross_process_free(void **state)
{
    int fd, rfd = memfd_create("loki-test-ring", 0);
    struct loki_arena *a = new_arena(&fd, 1u << 16);
    struct loki_ring *prod;
    assert_int_equal(loki_ring_create(rfd, 4096, LOKI_RING_PRODUCER, &prod), 0);
    uint64_t n = shm_test_scaled(100000);
    char arg[64];
    snprintf(arg, sizeof(arg), "%d,%d,%lu", fd, rfd, n);
    pid_t pid = loki_test_spawn_self("free", arg);
    assert_true(pid > 0);
    for (uint64_t i = 0; i < n; i++) {
        struct loki_arena_ref ref;
        void *p;
        size_t len = 1 + (size_t)(shm_test_mix(i) % 3000);
        int err;
        while ((err = loki_arena_alloc(a, len, &ref, &p)) == -ENOMEM)
            usleep(10);
        assert_int_equal(err, 0);
        shm_test_fill(i, 1, p, len);
        while ((err = loki_ring_write(prod, &ref, sizeof(ref))) == -EAGAIN)
            assert_int_equal(loki_ring_wait(prod, sizeof(ref), -1), 0);
        assert_int_equal(err, 0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    loki_arena_reclaim(a);
    assert_int_equal(loki_arena_free_bytes(a), 1u << 16);
    loki_ring_destroy(prod);
    loki_arena_destroy(a);
    close(fd);
    close(rfd);
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "free") == 0)
        return child_free(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_free_basic),
        cmocka_unit_test(test_double_free_and_use_after_free),
        cmocka_unit_test(test_bad_refs),
        cmocka_unit_test(test_exhaust_and_coalesce),
        cmocka_unit_test(test_corrupt_header),
        cmocka_unit_test(test_random_model),
        cmocka_unit_test(test_cross_thread_free),
        cmocka_unit_test(test_cross_process_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
