/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Small compiler helpers shared by every module: always-on bug checks for
 * shared-memory invariants (LOKI_BUG_ON) and debug-only assertions.
 */
#ifndef LOKI_COMPILER_H
#define LOKI_COMPILER_H

#include <stdio.h>
#include <stdlib.h>

#define LOKI_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define LOKI_LIKELY(x) __builtin_expect(!!(x), 1)
#define LOKI_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define LOKI_CACHELINE 64

#define LOKI_BUG_ON(cond)                                                                          \
    do {                                                                                           \
        if (LOKI_UNLIKELY(cond)) {                                                                 \
            fprintf(stderr, "loki BUG at %s:%d: %s\n", __FILE__, __LINE__, #cond);                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#ifdef NDEBUG
#define LOKI_ASSERT(cond) ((void)0)
#else
#define LOKI_ASSERT(cond) LOKI_BUG_ON(!(cond))
#endif

#endif
