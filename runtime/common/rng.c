/* SPDX-License-Identifier: Apache-2.0 */
/* Fan-out draws: Poisson (default), constant (mean-preserving floor/ceil), geometric. */
#include "loki/rng.h"

#include <math.h>

uint32_t loki_fanout_draw(uint64_t *rng, double mean, int dist)
{
    if (mean <= 0)
        return 0;
    switch (dist) {
    case 1: { /* constant: floor or ceil, preserving the mean */
        double fl = floor(mean);
        return (uint32_t)fl + (loki_rng_uniform(rng) < mean - fl ? 1u : 0u);
    }
    case 2: { /* geometric on {0,1,...} with the given mean */
        double p = 1.0 / (1.0 + mean);
        double u = loki_rng_uniform(rng);
        return (uint32_t)floor(log1p(-u) / log1p(-p));
    }
    default: { /* Poisson: Knuth for small means, normal approximation above 30 */
        if (mean > 30) {
            double u1 = loki_rng_uniform(rng), u2 = loki_rng_uniform(rng);
            double z = sqrt(-2 * log(u1 + 1e-300)) * cos(2 * M_PI * u2);
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
