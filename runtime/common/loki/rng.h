/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A tiny seeded PRNG (splitmix64) and fan-out draws, shared by the sim backend in workers and
 * the CUDA backend so both draw the same way. Installed with the backend plugin SDK (through
 * loki/backend.h), so everything here is inline: a plugin links no Loki library (the worker
 * that dlopens it exports nothing). loki_fanout_draw() calls libm (link -lm if you use it).
 */
#ifndef LOKI_RNG_H
#define LOKI_RNG_H

#include <math.h>
#include <stdint.h>

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

/*
 * Draw one fan-out count with mean @mean from @rng state. @dist is a
 * loki_backend_config.fanout_dist value: 0 Poisson (the default; Knuth below a mean of 30, a
 * normal approximation above), 1 constant (floor or ceil, preserving the mean), 2 geometric
 * on {0, 1, ...}. A mean of 0 or less draws 0.
 */
static inline uint32_t loki_fanout_draw(uint64_t *rng, double mean, int dist)
{
    if (mean <= 0)
        return 0;
    switch (dist) {
    case 1: {
        double fl = floor(mean);
        return (uint32_t)fl + (loki_rng_uniform(rng) < mean - fl ? 1u : 0u);
    }
    case 2: {
        double p = 1.0 / (1.0 + mean);
        double u = loki_rng_uniform(rng);
        return (uint32_t)floor(log1p(-u) / log1p(-p));
    }
    default: {
        if (mean > 30) {
            double u1 = loki_rng_uniform(rng), u2 = loki_rng_uniform(rng);
            /* 2 pi spelled out: M_PI is not ISO C, and plugins may build with -std=c11 */
            double z = sqrt(-2 * log(u1 + 1e-300)) * cos(6.283185307179586476925 * u2);
            double x = floor(mean + sqrt(mean) * z + 0.5);
            return x < 0 ? 0 : (uint32_t)x;
        }
        double l = exp(-mean), p = 1;
        uint32_t k = 0;
        do {
            k++;
            p *= loki_rng_uniform(rng);
        } while (p > l);
        return k - 1;
    }
    }
}

#endif
