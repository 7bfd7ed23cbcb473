/* SPDX-License-Identifier: Apache-2.0 */
/* Monotonic clock in nanoseconds; the one time base of the runtime. */
#ifndef LOKI_CLOCK_H
#define LOKI_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t loki_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif
