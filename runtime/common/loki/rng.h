/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A tiny seeded PRNG (splitmix64) and fan-out draws, shared by the sim
 * backend in workers and the replay harness so both draw the same way.
 */
#ifndef LOKI_RNG_H
#define LOKI_RNG_H

#include <stdint.h>

/* Draw one fan-out count with mean @mean and distribution @dist from @rng state. */
uint32_t loki_fanout_draw(uint64_t *rng, double mean, int dist /* enum loki_fanout_dist */);

/* splitmix64 step: a tiny seeded PRNG usable anywhere. */
static inline uint64_t loki_rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform double in [0, 1). */
static inline double loki_rng_uniform(uint64_t *s)
{
    return (double)(loki_rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

#endif
