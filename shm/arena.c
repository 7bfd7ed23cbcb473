/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared payload arena: a buddy allocator whose metadata sits out of band, with
 * a generation per block and a lock-free return path for frees from any process.
 *
 *   0        128          256            512              512+16n    data_off (page)
 *   +--------+------------+--------------+----------------+---------+----------------------+
 *   | hdr    | ret_head   | free_head[]  | units[n]       | meta[n] | data: n units of     |
 *   | magic  | (freers'   | free_units   | tag ret_next   | order + | 256 B, blocks of     |
 *   | hash.. |  line)     | (allocator)  | next prev      | FREE    | 256 B << order       |
 *   +--------+------------+--------------+----------------+---------+----------------------+
 *
 * Only the allocator touches free lists and meta[]. A block's head unit carries
 * tag = generation << 1 | allocated. alloc bumps the generation and sets the bit
 * (R1, release: the block's metadata before the tag); a reference carries the
 * generation it was issued with. free is one CAS of the tag from (gen, 1) to
 * (gen, 0): exactly one free per allocation can win, every later free or get()
 * with that reference sees a mismatch (-ESTALE). get() loads the tag with
 * acquire (A1, pairs with R1). The freed block is then pushed on the returned
 * stack, a Treiber stack of unit indexes (R2, release CAS), that the allocator
 * takes whole with one exchange (A2, acquire) and merges into its free lists,
 * coalescing buddies. Taking the whole stack at once means no ABA: a block
 * cannot be pushed again before the allocator has taken it and handed it out.
 *
 * Generations only grow, so a reference to a block that was freed, merged and
 * reallocated either points at a head with a newer generation or at an interior
 * unit whose allocated bit is clear. A process killed between the CAS and the
 * push leaks that block (it is neither free nor allocated) until the arena is
 * recreated; the supervisor recreates arenas with their worker anyway.
 */
#include "loki/arena.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loki/compiler.h"
#include "loki/error.h"

struct loki_arena {
    struct loki_arena_shm *shm;
    struct loki_arena_unit *units;
    uint8_t *meta;
    uint8_t *data;
    size_t seg_size;
    uint64_t data_bytes;
    uint32_t n_units;
    uint32_t max_order;
};

static uint64_t data_offset(uint64_t n_units)
{
    uint64_t end = sizeof(struct loki_arena_shm) + n_units * (sizeof(struct loki_arena_unit) + 1);
    return (end + 4095) & ~(uint64_t)4095;
}

size_t loki_arena_segment_size(size_t data_bytes)
{
    if (data_bytes < LOKI_ARENA_MIN_BYTES ||
        data_bytes > ((uint64_t)LOKI_ARENA_UNIT << LOKI_ARENA_MAX_ORDER) ||
        (data_bytes & (data_bytes - 1)) != 0)
        return 0;
    return data_offset(data_bytes >> LOKI_ARENA_UNIT_SHIFT) + data_bytes;
}

static int map_segment(int memfd, size_t size, struct loki_arena **out)
{
    struct loki_arena *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (base == MAP_FAILED) {
        int err = -errno;
        free(a);
        return err;
    }
    a->shm = base;
    a->seg_size = size;
    *out = a;
    return 0;
}

static void fill_handle(struct loki_arena *a)
{
    a->data_bytes = a->shm->hdr.param0;
    a->n_units = (uint32_t)a->shm->hdr.param1;
    a->max_order = (uint32_t)__builtin_ctzll(a->n_units);
    a->units = (struct loki_arena_unit *)(a->shm + 1);
    a->meta = (uint8_t *)(a->units + a->n_units);
    a->data = (uint8_t *)a->shm + a->shm->hdr.hdr_size;
}

/* Free-list helpers: allocator only. Links are unit index + 1, 0 terminates. */
static void list_push(struct loki_arena *a, uint32_t i, uint32_t order)
{
    uint32_t head = a->shm->free_head[order];
    a->units[i].next = head;
    a->units[i].prev = 0;
    if (head)
        a->units[head - 1].prev = i + 1;
    a->shm->free_head[order] = i + 1;
    __atomic_store_n(&a->meta[i], (uint8_t)(LOKI_ARENA_META_FREE | order), __ATOMIC_RELAXED);
}

static void list_unlink(struct loki_arena *a, uint32_t i, uint32_t order)
{
    struct loki_arena_unit *u = &a->units[i];
    if (u->prev)
        a->units[u->prev - 1].next = u->next;
    else
        a->shm->free_head[order] = u->next;
    if (u->next)
        a->units[u->next - 1].prev = u->prev;
    __atomic_store_n(&a->meta[i], 0, __ATOMIC_RELAXED);
}

int loki_arena_create(int memfd, size_t data_bytes, struct loki_arena **out)
{
    size_t size = loki_arena_segment_size(data_bytes);
    struct loki_arena *a = NULL;
    int err;

    if (size == 0 || !out)
        return -EINVAL;
    if (ftruncate(memfd, 0) < 0 || ftruncate(memfd, (off_t)size) < 0)
        return -errno;
    err = map_segment(memfd, size, &a);
    if (err)
        return err;
    uint64_t n = data_bytes >> LOKI_ARENA_UNIT_SHIFT;
    struct loki_shm_hdr h = {
        .magic = LOKI_SHM_ARENA_MAGIC,
        .version = LOKI_SHM_VERSION,
        .hdr_size = (uint32_t)data_offset(n),
        .layout_hash = loki_shm_layout_hash(),
        .seg_size = size,
        .param0 = data_bytes,
        .param1 = n,
    };
    h.csum = loki_shm_hdr_csum(&h);
    memcpy((char *)&a->shm->hdr + sizeof(h.magic), (char *)&h + sizeof(h.magic),
           sizeof(h) - sizeof(h.magic));
    fill_handle(a);
    list_push(a, 0, a->max_order); /* one block: the whole arena */
    __atomic_store_n(&a->shm->free_units, n, __ATOMIC_RELAXED);
    /* R0: header and free lists before the magic; pairs with A0 in attach. */
    __atomic_store_n(&a->shm->hdr.magic, h.magic, __ATOMIC_RELEASE);
    *out = a;
    return 0;
}

int loki_arena_attach(int memfd, struct loki_arena **out)
{
    struct stat st;
    struct loki_arena *a = NULL;
    int err;

    if (!out)
        return -EINVAL;
    if (fstat(memfd, &st) < 0)
        return -errno;
    if ((size_t)st.st_size < sizeof(struct loki_arena_shm))
        return st.st_size < (off_t)sizeof(struct loki_shm_hdr) ? LOKI_EBADMAGIC : LOKI_ECORRUPT;
    err = map_segment(memfd, (size_t)st.st_size, &a);
    if (err)
        return err;
    const struct loki_shm_hdr *h = &a->shm->hdr;
    /* A0: pairs with R0 in create. */
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != LOKI_SHM_ARENA_MAGIC ||
        h->version != LOKI_SHM_VERSION)
        err = LOKI_EBADMAGIC;
    else if (h->layout_hash != loki_shm_layout_hash())
        err = LOKI_ELAYOUT;
    else if (h->csum != loki_shm_hdr_csum(h) || loki_arena_segment_size(h->param0) == 0 ||
             h->seg_size != loki_arena_segment_size(h->param0) ||
             h->seg_size != (uint64_t)st.st_size ||
             h->param1 != h->param0 >> LOKI_ARENA_UNIT_SHIFT ||
             h->hdr_size != data_offset(h->param1))
        err = LOKI_ECORRUPT;
    if (err) {
        loki_arena_destroy(a);
        return err;
    }
    fill_handle(a);
    *out = a;
    return 0;
}

void loki_arena_destroy(struct loki_arena *a)
{
    if (!a)
        return;
    munmap(a->shm, a->seg_size);
    free(a);
}

/* Insert block @i of @order into the free lists, merging with free buddies. */
static void free_insert(struct loki_arena *a, uint32_t i, uint32_t order)
{
    __atomic_fetch_add(&a->shm->free_units, 1u << order, __ATOMIC_RELAXED);
    while (order < a->max_order) {
        uint32_t b = i ^ (1u << order);
        if (__atomic_load_n(&a->meta[b], __ATOMIC_RELAXED) != (LOKI_ARENA_META_FREE | order))
            break;
        list_unlink(a, b, order);
        i = i < b ? i : b;
        order++;
    }
    list_push(a, i, order);
}

int loki_arena_reclaim(struct loki_arena *a)
{
    if (LOKI_LIKELY(__atomic_load_n(&a->shm->ret_head, __ATOMIC_RELAXED) == 0))
        return 0;
    /* A2: pairs with R2 in free: the freers' ret_next links are visible. */
    uint32_t link = __atomic_exchange_n(&a->shm->ret_head, 0, __ATOMIC_ACQUIRE);
    int n = 0;
    while (link) {
        uint32_t i = link - 1;
        LOKI_BUG_ON(i >= a->n_units); /* the stack is only written by free() after checks */
        link = __atomic_load_n(&a->units[i].ret_next, __ATOMIC_RELAXED);
        uint32_t order = __atomic_load_n(&a->meta[i], __ATOMIC_RELAXED) & 0x1f;
        free_insert(a, i, order);
        n++;
    }
    return n;
}

int loki_arena_alloc(struct loki_arena *a, size_t len, struct loki_arena_ref *ref, void **ptr)
{
    if (len == 0 || !ref)
        return -EINVAL;
    if (len > a->data_bytes || len > UINT32_MAX)
        return LOKI_ETOOBIG;
    uint32_t want = 0;
    while (((uint64_t)LOKI_ARENA_UNIT << want) < len)
        want++;
    loki_arena_reclaim(a);

    uint32_t order = want;
    while (order <= a->max_order && a->shm->free_head[order] == 0)
        order++;
    if (order > a->max_order)
        return -ENOMEM;
    uint32_t i = a->shm->free_head[order] - 1;
    list_unlink(a, i, order);
    while (order > want) {
        order--;
        list_push(a, i + (1u << order), order); /* the upper half stays free */
    }
    __atomic_fetch_sub(&a->shm->free_units, 1u << want, __ATOMIC_RELAXED);
    a->shm->allocs++;
    __atomic_store_n(&a->meta[i], (uint8_t)want, __ATOMIC_RELAXED);
    uint32_t gen = (__atomic_load_n(&a->units[i].tag, __ATOMIC_RELAXED) >> 1) + 1;
    if (gen == (UINT32_MAX >> 1) + 1)
        gen = 1; /* 2^31 allocations of one unit: wrap, skipping 0 */
    /* R1: order (meta) before the tag that makes the block live; pairs with A1. */
    __atomic_store_n(&a->units[i].tag, gen << 1 | 1u, __ATOMIC_RELEASE);

    ref->off = (uint64_t)i << LOKI_ARENA_UNIT_SHIFT;
    ref->len = (uint32_t)len;
    ref->gen = gen;
    if (ptr)
        *ptr = a->data + ref->off;
    return 0;
}

/* Unit index of @ref's block head, or LOKI_ECORRUPT. */
static int ref_unit(const struct loki_arena *a, const struct loki_arena_ref *ref, uint32_t *i)
{
    if (ref->off >= a->data_bytes || (ref->off & (LOKI_ARENA_UNIT - 1)) != 0 || ref->len == 0 ||
        ref->gen == 0 || ref->gen > (UINT32_MAX >> 1))
        return LOKI_ECORRUPT;
    *i = (uint32_t)(ref->off >> LOKI_ARENA_UNIT_SHIFT);
    return 0;
}

int loki_arena_get(const struct loki_arena *a, struct loki_arena_ref ref, void **ptr)
{
    uint32_t i;
    int err = ref_unit(a, &ref, &i);
    if (err)
        return err;
    /* A1: pairs with R1 in alloc. */
    if (__atomic_load_n(&a->units[i].tag, __ATOMIC_ACQUIRE) != (ref.gen << 1 | 1u))
        return -ESTALE;
    uint32_t order = __atomic_load_n(&a->meta[i], __ATOMIC_RELAXED) & 0x1f;
    if (ref.len > ((uint64_t)LOKI_ARENA_UNIT << order))
        return LOKI_ECORRUPT;
    *ptr = a->data + ref.off;
    return 0;
}

int loki_arena_free(struct loki_arena *a, struct loki_arena_ref ref)
{
    uint32_t i;
    int err = ref_unit(a, &ref, &i);
    if (err)
        return err;
    uint32_t live = ref.gen << 1 | 1u;
    /* The one winning free: (gen, allocated) -> (gen, free). A1 pairs with R1. */
    if (!__atomic_compare_exchange_n(&a->units[i].tag, &live, ref.gen << 1, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_RELAXED))
        return -ESTALE;
    uint32_t head = __atomic_load_n(&a->shm->ret_head, __ATOMIC_RELAXED);
    do {
        __atomic_store_n(&a->units[i].ret_next, head, __ATOMIC_RELAXED);
        /* R2: the link before the new head; pairs with A2 in reclaim. */
    } while (!__atomic_compare_exchange_n(&a->shm->ret_head, &head, i + 1, true, __ATOMIC_RELEASE,
                                          __ATOMIC_RELAXED));
    __atomic_fetch_add(&a->shm->ret_count, 1, __ATOMIC_RELAXED);
    return 0;
}

size_t loki_arena_free_bytes(const struct loki_arena *a)
{
    uint64_t u = __atomic_load_n(&a->shm->free_units, __ATOMIC_RELAXED);
    return (size_t)(u << LOKI_ARENA_UNIT_SHIFT);
}

void *loki_arena_segment(const struct loki_arena *a)
{
    return a->shm;
}
