/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The router's EDF queue: an intrusive pairing heap, keyed on an absolute
 * deadline with a sequence number breaking ties (FIFO among equal deadlines
 * when it counts up). Nodes are indexes into a caller's preallocated array of
 * larger records that embed a struct loki_edf_node, so pushing and popping
 * never allocate: the router's per-query path stays allocation-free.
 * Private to the router (and its test); single-threaded like the router.
 */
#ifndef LOKI_ROUTER_EDF_HEAP_H
#define LOKI_ROUTER_EDF_HEAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LOKI_EDF_NIL UINT32_MAX

/* Embedded in each record that can wait in a heap. */
struct loki_edf_node {
    uint64_t deadline; /* earliest first */
    uint64_t seq;      /* then lowest first */
    /* Links (node indexes, LOKI_EDF_NIL for none); only meaningful while queued. */
    uint32_t child, sibling;
};

/*
 * Where the nodes live: node i at @base + i * @stride (@base: the embedded
 * node of record 0; @stride: the record's size). Passed by value so that,
 * once inlined, a constant stride folds into the address arithmetic.
 */
struct loki_edf_pool {
    char *base;
    size_t stride;
};

static inline struct loki_edf_node *loki_edf_at(struct loki_edf_pool p, uint32_t i)
{
    return (struct loki_edf_node *)(p.base + (size_t)i * p.stride);
}

/* Whether @a comes out of the heap before @b. */
static inline bool loki_edf_before(const struct loki_edf_node *a, const struct loki_edf_node *b)
{
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

/* Meld heaps @a and @b (roots, either LOKI_EDF_NIL); returns the new root. */
static inline uint32_t loki_edf_meld(struct loki_edf_pool p, uint32_t a, uint32_t b)
{
    if (a == LOKI_EDF_NIL)
        return b;
    if (b == LOKI_EDF_NIL)
        return a;
    if (loki_edf_before(loki_edf_at(p, b), loki_edf_at(p, a))) {
        uint32_t t = a;
        a = b;
        b = t;
    }
    loki_edf_at(p, b)->sibling = loki_edf_at(p, a)->child;
    loki_edf_at(p, a)->child = b;
    return a;
}

/*
 * The two-pass pairing of a popped root's children (the list from @first
 * along sibling links): pairs melded left to right, then the pairs melded
 * right to left. Returns the new root.
 */
static inline uint32_t loki_edf_merge_pairs(struct loki_edf_pool p, uint32_t first)
{
    uint32_t stack = LOKI_EDF_NIL;
    while (first != LOKI_EDF_NIL) {
        uint32_t a = first, b = loki_edf_at(p, a)->sibling;
        if (b == LOKI_EDF_NIL) {
            loki_edf_at(p, a)->sibling = stack;
            stack = a;
            break;
        }
        first = loki_edf_at(p, b)->sibling;
        loki_edf_at(p, a)->sibling = loki_edf_at(p, b)->sibling = LOKI_EDF_NIL;
        uint32_t m = loki_edf_meld(p, a, b);
        loki_edf_at(p, m)->sibling = stack;
        stack = m;
    }
    if (stack == LOKI_EDF_NIL)
        return LOKI_EDF_NIL;
    uint32_t res = stack;
    stack = loki_edf_at(p, res)->sibling;
    loki_edf_at(p, res)->sibling = LOKI_EDF_NIL;
    while (stack != LOKI_EDF_NIL) {
        uint32_t n = loki_edf_at(p, stack)->sibling;
        loki_edf_at(p, stack)->sibling = LOKI_EDF_NIL;
        res = loki_edf_meld(p, res, stack);
        stack = n;
    }
    return res;
}

/* Queue node @i (its deadline and seq set, not queued anywhere) in the heap at *@root. */
static inline void loki_edf_push(struct loki_edf_pool p, uint32_t *root, uint32_t i)
{
    struct loki_edf_node *n = loki_edf_at(p, i);
    n->child = n->sibling = LOKI_EDF_NIL;
    *root = loki_edf_meld(p, *root, i);
}

/* The first node of the heap at *@root, removed (links cleared), or LOKI_EDF_NIL if empty. */
static inline uint32_t loki_edf_pop(struct loki_edf_pool p, uint32_t *root)
{
    uint32_t i = *root;
    if (i == LOKI_EDF_NIL)
        return LOKI_EDF_NIL;
    struct loki_edf_node *n = loki_edf_at(p, i);
    *root = loki_edf_merge_pairs(p, n->child);
    n->child = n->sibling = LOKI_EDF_NIL;
    return i;
}

#endif
