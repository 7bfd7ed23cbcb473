/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Every struct that lives in shared memory, in one place. Two processes built
 * from different revisions must refuse to talk: each segment starts with a
 * header carrying a magic, a version and a hash of this file's sizes and
 * offsets (loki_shm_layout_hash()), checked on attach. Fields are plain
 * integers accessed only through __atomic builtins where the peer can race.
 */
#ifndef LOKI_SHM_LAYOUT_H
#define LOKI_SHM_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "loki/compiler.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "futex parking uses the low 32 bits of a 64-bit index word");

#define LOKI_SHM_VERSION 1u
#define LOKI_SHM_RING_MAGIC 0x31474e52494b4f4cull  /* "LOKIRNG1" */
#define LOKI_SHM_ARENA_MAGIC 0x314e5241494b4f4cull /* "LOKIARN1" */

/* Common segment header: immutable after creation, covered by @csum. */
struct loki_shm_hdr {
    uint64_t magic;       /* written last by the creator (R0), read first on attach (A0) */
    uint32_t version;     /* LOKI_SHM_VERSION */
    uint32_t hdr_size;    /* offset of the data area from the segment start */
    uint64_t layout_hash; /* loki_shm_layout_hash() of the creator's build */
    uint64_t seg_size;    /* total bytes; must equal the memfd size */
    uint64_t param0;      /* ring: capacity in bytes; arena: data bytes */
    uint64_t param1;      /* arena: number of units; ring: 0 */
    uint64_t reserved;
    uint64_t csum; /* FNV-1a 64 of all bytes above */
};
_Static_assert(sizeof(struct loki_shm_hdr) == 64, "header is one cache line");
_Static_assert(offsetof(struct loki_shm_hdr, csum) == 56, "csum last");

/* ---- ring ---------------------------------------------------------------------------------- */

/*
 * One side of a ring, on its own pair of cache lines (128 B, so the adjacent-line
 * prefetcher does not couple producer and consumer). The owner writes @idx on every
 * publish; the other side writes @waiter only when it goes to sleep waiting for @idx
 * to move, so the owner's check after each publish reads a line it already holds.
 */
struct loki_ring_side {
    uint64_t idx;    /* producer: tail, consumer: head; free-running byte counters */
    uint64_t count;  /* records published through @idx (the next record's sequence) */
    uint32_t waiter; /* LOKI_RING_WAIT_* bits set by the *other* side when it parks */
    uint32_t pid;    /* owner's pid (getpid()) */
    uint32_t gen;    /* owner generation: 0 never attached, 1 attached, 2 detached */
    uint32_t pad0;
    uint8_t pad[128 - 32];
};
_Static_assert(sizeof(struct loki_ring_side) == 2 * LOKI_CACHELINE, "two cache lines");
_Static_assert(offsetof(struct loki_ring_side, idx) == 0, "futex word at line start");

#define LOKI_RING_WAIT_FUTEX 1u   /* parked in futex_wait on the low half of idx */
#define LOKI_RING_WAIT_EVENTFD 2u /* sleeping on an eventfd (poll loop / libuv) */

#define LOKI_RING_GEN_NONE 0u
#define LOKI_RING_GEN_ATTACHED 1u
#define LOKI_RING_GEN_DETACHED 2u

#define LOKI_RING_DATA_OFF 4096u /* data area starts on its own page */
#define LOKI_RING_MIN_CAP 4096u
#define LOKI_RING_MAX_CAP (1u << 30) /* keeps idx deltas far below 2^32 (futex word) */

struct loki_ring_shm {
    struct loki_shm_hdr hdr;
    uint8_t pad_hdr[64];
    struct loki_ring_side prod; /* idx = tail */
    struct loki_ring_side cons; /* idx = head */
};
_Static_assert(offsetof(struct loki_ring_shm, prod) == 128, "producer lines");
_Static_assert(offsetof(struct loki_ring_shm, cons) == 256, "consumer lines");
_Static_assert(sizeof(struct loki_ring_shm) <= LOKI_RING_DATA_OFF, "control fits one page");

/*
 * Record header, at the start of a cache line: records are padded to whole
 * lines (LOKI_RING_ALIGN) so the producer filling record k+1 never shares a
 * line with the consumer reading record k (measured: 4x the 1 KiB message
 * rate of 8-byte alignment). A record never wraps: when it does not fit before
 * the end, the producer fills the rest with a pad record (LOKI_RING_REC_PAD set
 * in @len) that the consumer skips.
 */
struct loki_ring_rec {
    uint32_t len; /* payload bytes, or LOKI_RING_REC_PAD | bytes to the end */
    uint32_t seq; /* low 32 bits of the record's sequence number; checked by the consumer */
};
_Static_assert(sizeof(struct loki_ring_rec) == 8, "record header");
#define LOKI_RING_REC_PAD 0x80000000u
#define LOKI_RING_ALIGN LOKI_CACHELINE

/* ---- arena --------------------------------------------------------------------------------- */

/* A reference to an arena block: what travels in descriptors. 16 bytes. */
struct loki_arena_ref {
    uint64_t off; /* byte offset of the block in the arena data area */
    uint32_t len; /* payload bytes (<= block size) */
    uint32_t gen; /* block generation at allocation; stale refs are refused */
};
_Static_assert(sizeof(struct loki_arena_ref) == 16, "arena ref");

#define LOKI_ARENA_UNIT_SHIFT 8u /* smallest block: 256 B */
#define LOKI_ARENA_UNIT (1u << LOKI_ARENA_UNIT_SHIFT)
#define LOKI_ARENA_MAX_ORDER 24u /* largest arena: 256 B << 24 = 4 GiB */
#define LOKI_ARENA_MIN_BYTES (1u << 12)

/*
 * Per-unit metadata, out of band so that a buggy writer into a freed block
 * cannot corrupt the allocator. Only the head unit of a block is meaningful.
 */
struct loki_arena_unit {
    uint32_t tag;      /* (generation << 1) | allocated; CAS'd by free, set by alloc */
    uint32_t ret_next; /* returned-stack link (unit index + 1), written by the freer */
    uint32_t next;     /* free-list links (unit index + 1), allocator only */
    uint32_t prev;
};
_Static_assert(sizeof(struct loki_arena_unit) == 16, "unit table entry");

#define LOKI_ARENA_META_FREE 0x80u /* head of a block on a free list; low 5 bits: order */

struct loki_arena_shm {
    struct loki_shm_hdr hdr;
    uint8_t pad_hdr[64];
    /* written by freeing sides (any process): the returned-blocks stack */
    uint32_t ret_head; /* unit index + 1 of the last returned block, 0 if empty */
    uint32_t pad1;
    uint64_t ret_count;
    uint8_t pad_ret[128 - 16];
    /* written by the single allocator */
    uint32_t free_head[LOKI_ARENA_MAX_ORDER + 1]; /* per order, unit index + 1 */
    uint32_t pad2[32 - (LOKI_ARENA_MAX_ORDER + 1)];
    uint64_t free_units;
    uint64_t allocs;
    uint8_t pad_alloc[256 - 128 - 16];
    /* followed by: struct loki_arena_unit units[n]; uint8_t meta[n]; data (page aligned) */
};
_Static_assert(offsetof(struct loki_arena_shm, ret_head) == 128, "freer line");
_Static_assert(offsetof(struct loki_arena_shm, free_head) == 256, "allocator lines");
_Static_assert(sizeof(struct loki_arena_shm) == 512, "arena control block");

/* FNV-1a 64, used for header checksums and the layout hash. */
static inline uint64_t loki_shm_fnv1a(const void *p, size_t n, uint64_t h)
{
    const uint8_t *b = (const uint8_t *)p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}
#define LOKI_SHM_FNV_SEED 0xcbf29ce484222325ull

/* Hash of every size and offset above: two builds that disagree refuse to attach. */
static inline uint64_t loki_shm_layout_hash(void)
{
    const uint64_t v[] = {
        LOKI_SHM_VERSION,
        sizeof(struct loki_shm_hdr),
        offsetof(struct loki_shm_hdr, csum),
        sizeof(struct loki_ring_side),
        offsetof(struct loki_ring_side, count),
        offsetof(struct loki_ring_side, waiter),
        offsetof(struct loki_ring_side, pid),
        offsetof(struct loki_ring_side, gen),
        sizeof(struct loki_ring_shm),
        offsetof(struct loki_ring_shm, prod),
        offsetof(struct loki_ring_shm, cons),
        LOKI_RING_DATA_OFF,
        sizeof(struct loki_ring_rec),
        LOKI_RING_REC_PAD,
        LOKI_RING_ALIGN,
        sizeof(struct loki_arena_ref),
        LOKI_ARENA_UNIT_SHIFT,
        LOKI_ARENA_MAX_ORDER,
        sizeof(struct loki_arena_unit),
        sizeof(struct loki_arena_shm),
        offsetof(struct loki_arena_shm, ret_head),
        offsetof(struct loki_arena_shm, free_head),
        offsetof(struct loki_arena_shm, free_units),
    };
    return loki_shm_fnv1a(v, sizeof(v), LOKI_SHM_FNV_SEED);
}

/* Checksum of the immutable header fields (everything before @csum). */
static inline uint64_t loki_shm_hdr_csum(const struct loki_shm_hdr *h)
{
    return loki_shm_fnv1a(h, offsetof(struct loki_shm_hdr, csum), LOKI_SHM_FNV_SEED);
}

#endif
