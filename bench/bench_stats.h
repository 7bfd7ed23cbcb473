/* SPDX-License-Identifier: Apache-2.0 */
/* Order statistics shared by the benchmarks: sort doubles, take a nearest-rank percentile. */
#ifndef LOKI_BENCH_STATS_H
#define LOKI_BENCH_STATS_H

#include <stddef.h>

static inline int loki_bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile @p (0..1) of @sorted[0..n); 0 when empty. */
static inline double loki_bench_pct(const double *sorted, size_t n, double p)
{
    size_t k = (size_t)(p * (double)n + 0.999999);
    if (k == 0)
        k = 1;
    if (k > n)
        k = n;
    return n ? sorted[k - 1] : 0;
}

#endif
