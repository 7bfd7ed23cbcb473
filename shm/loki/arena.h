/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Payload arena in shared memory: query inputs and outputs live here and only
 * their (offset, length, generation) reference travels in ring records. One
 * side allocates (a buddy allocator, 256 B .. whole arena); any side frees,
 * lock-free, and every block has a generation so that a double free or a read
 * through a stale reference is an error return, never silent corruption.
 * Use one arena per direction (router -> worker inputs, worker -> router
 * outputs) so that each has a single allocator.
 */
#ifndef LOKI_ARENA_H
#define LOKI_ARENA_H

#include <stddef.h>
#include <stdint.h>

#include "loki/shm_layout.h" /* struct loki_arena_ref */

struct loki_arena; /* process-local handle */

/*
 * loki_arena_segment_size - bytes an arena of @data_bytes needs in its memfd.
 * @data_bytes: a power of two, LOKI_ARENA_MIN_BYTES .. LOKI_ARENA_UNIT << LOKI_ARENA_MAX_ORDER.
 * Returns 0 when invalid. Any thread.
 */
size_t loki_arena_segment_size(size_t data_bytes);

/*
 * loki_arena_create - size @memfd, map it and initialise an empty arena.
 * @memfd: borrowed; pass it to the peer for loki_arena_attach().
 * @out: a new handle; release with loki_arena_destroy().
 * Errors: -EINVAL (size), -ENOMEM, -errno from ftruncate/mmap. Setup time.
 */
int loki_arena_create(int memfd, size_t data_bytes, struct loki_arena **out);

/*
 * loki_arena_attach - map an existing arena; checks magic/version
 * (LOKI_EBADMAGIC), layout hash (LOKI_ELAYOUT), checksum and sizes
 * (LOKI_ECORRUPT). @memfd borrowed; @out a new handle. Setup time.
 */
int loki_arena_attach(int memfd, struct loki_arena **out);

/* loki_arena_destroy - unmap and free the handle (blocks stay as they are). NULL is a no-op. */
void loki_arena_destroy(struct loki_arena *a);

/*
 * loki_arena_alloc - allocate a block of at least @len bytes (rounded up to a
 * power of two, minimum 256 B).
 * @ref: receives the reference to hand to the other side.
 * @ptr: receives the writable address in this process (may be NULL).
 * Also takes back blocks freed by other sides since the last call.
 * Errors: -EINVAL (@len 0), LOKI_ETOOBIG (larger than the arena or 4 GiB),
 * -ENOMEM (no free block big enough now). Ownership: the caller owns the block
 * until it (or whoever it hands @ref to) calls loki_arena_free().
 * Thread: the arena's single allocating thread (one per arena, any process).
 */
int loki_arena_alloc(struct loki_arena *a, size_t len, struct loki_arena_ref *ref, void **ptr);

/*
 * loki_arena_get - map @ref to an address in this process after checking it
 * is live: the block is allocated with @ref's generation and @ref.len fits.
 * Errors: -ESTALE (freed, or freed and reused: use after free), LOKI_ECORRUPT
 * (offset/length not a block of this arena). The pointer is valid until the
 * block is freed. Any thread holding @ref.
 */
int loki_arena_get(const struct loki_arena *a, struct loki_arena_ref ref, void **ptr);

/*
 * loki_arena_free - give the block back. Exactly one free per allocation:
 * the second returns -ESTALE and changes nothing (double free detected).
 * Errors: -ESTALE, LOKI_ECORRUPT (offset not a block start of this arena).
 * Ownership: consumes @ref. Any thread, any process, lock-free.
 */
int loki_arena_free(struct loki_arena *a, struct loki_arena_ref ref);

/*
 * loki_arena_reclaim - take back blocks freed by other sides now (alloc does
 * it too). Returns the number of blocks taken back. Allocator thread only.
 */
int loki_arena_reclaim(struct loki_arena *a);

/* Free bytes as the allocator last saw them (excludes blocks not yet reclaimed). Any thread. */
size_t loki_arena_free_bytes(const struct loki_arena *a);

/* Raw segment base (tests corrupt it through this); borrowed. */
void *loki_arena_segment(const struct loki_arena *a);

#endif
