/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers shared by the shm tests: deterministic record streams (size and bytes
 * are a function of the record number, so the consumer detects loss, reordering
 * and corruption), the LOKI_TEST_SCALE knob, and the producer/consumer loops
 * used by both the thread and the process variants.
 */
#ifndef LOKI_TESTS_SHM_TEST_H
#define LOKI_TESTS_SHM_TEST_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "loki/error.h"
#include "loki/ring.h"

static inline uint64_t shm_test_mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/*
 * Size of record @i: mostly small, 1 in 64 up to @max (to exercise pads and
 * wrap-around), 1 in 256 empty.
 */
static inline size_t shm_test_size(uint64_t seed, uint64_t i, size_t max)
{
    uint64_t h = shm_test_mix(seed ^ (i * 0x9e3779b97f4a7c15ull));
    if ((h & 0xff) == 0)
        return 0;
    if ((h & 0x3f) == 1)
        return (size_t)((h >> 16) % (max + 1));
    size_t small = max < 512 ? max : 512;
    return (size_t)((h >> 16) % (small + 1));
}

/* Fill / check record @i: 8-byte words of a per-record xorshift stream. */
static inline void shm_test_fill(uint64_t seed, uint64_t i, uint8_t *p, size_t n)
{
    uint64_t x = shm_test_mix(seed + i) | 1;
    size_t k = 0;
    for (; k + 8 <= n; k += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(p + k, &x, 8);
    }
    x ^= x << 13;
    for (; k < n; k++)
        p[k] = (uint8_t)(x >> (8 * (k & 7)));
}

static inline int shm_test_check(uint64_t seed, uint64_t i, const uint8_t *p, size_t n)
{
    uint64_t x = shm_test_mix(seed + i) | 1;
    size_t k = 0;
    for (; k + 8 <= n; k += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (memcmp(p + k, &x, 8) != 0)
            return -1;
    }
    x ^= x << 13;
    for (; k < n; k++)
        if (p[k] != (uint8_t)(x >> (8 * (k & 7))))
            return -1;
    return 0;
}

/*
 * @base scaled by LOKI_TEST_SCALE (a factor, e.g. 0.1). Without it: @base, except
 * under ThreadSanitizer (~10x slower on this workload) where counts stop at 10^6.
 */
static inline uint64_t shm_test_scaled(uint64_t base)
{
    const char *s = getenv("LOKI_TEST_SCALE");
    if (s && *s) {
        uint64_t n = (uint64_t)((double)base * strtod(s, NULL));
        return n ? n : 1;
    }
#if defined(__SANITIZE_THREAD__)
    if (base > 1000000)
        return 1000000;
#endif
    return base;
}

/*
 * Produce records [0, @n) (n == UINT64_MAX: forever). Returns 0 or the first
 * error of reserve/wait (e.g. LOKI_EPEERDEAD).
 */
static inline int shm_test_produce(struct loki_ring *r, uint64_t seed, uint64_t n, size_t max)
{
    for (uint64_t i = 0; i < n; i++) {
        size_t len = shm_test_size(seed, i, max);
        void *p;
        int err;
        while ((err = loki_ring_reserve(r, len, &p)) == -EAGAIN) {
            err = loki_ring_wait(r, len, -1);
            if (err)
                return err;
        }
        if (err)
            return err;
        shm_test_fill(seed, i, p, len);
        err = loki_ring_commit(r, len);
        if (err)
            return err;
    }
    return 0;
}

/*
 * Consume and verify records [0, @n) (UINT64_MAX: until the wait fails).
 * *@got receives the number of records verified. Returns 0, the wait error
 * (-EPIPE, LOKI_EPEERDEAD), or -EBADMSG on a wrong size or content.
 */
static inline int shm_test_consume(struct loki_ring *r, uint64_t seed, uint64_t n, size_t max,
                                   uint64_t *got)
{
    uint64_t i = 0;
    int err = 0;
    for (; i < n; i++) {
        const void *p;
        size_t len;
        while ((err = loki_ring_peek(r, &p, &len)) == -EAGAIN) {
            err = loki_ring_wait(r, 0, -1);
            if (err)
                goto out;
        }
        if (err)
            goto out;
        if (len != shm_test_size(seed, i, max) || shm_test_check(seed, i, p, len) != 0) {
            err = -EBADMSG;
            goto out;
        }
        err = loki_ring_consume(r);
        if (err)
            goto out;
    }
out:
    *got = i;
    return err;
}

#endif
