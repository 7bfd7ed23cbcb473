/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Single-producer single-consumer ring of variable-size records over a shared
 * mapping (memfd), usable across processes and across threads. Zero-copy on
 * both sides: the producer reserves a slot, fills it and commits; the consumer
 * peeks at a record in place and consumes it. A waiting side spins briefly and
 * then parks (futex on the index word, or an eventfd for poll/libuv loops). A
 * peer that dies is reported as LOKI_EPEERDEAD within 100 ms. See ring.c for
 * the design and shm_layout.h for the segment layout.
 */
#ifndef LOKI_RING_H
#define LOKI_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loki/shm_layout.h"

struct loki_ring; /* process-local handle to one side of a ring */

enum loki_ring_role {
    LOKI_RING_PRODUCER = 0,
    LOKI_RING_CONSUMER = 1,
};

/* Default spin budget before parking, in ns (changed with loki_ring_set_spin()). */
#define LOKI_RING_SPIN_NS_DEFAULT 50000u
/* Floor the adaptive budget shrinks to while the peer keeps answering late. */
#define LOKI_RING_SPIN_MIN_NS 2000u
/* First part of a spin: pause-spinning without a syscall; sched_yield() polling after it. */
#define LOKI_RING_PAUSE_NS 1000u
/* Longest a parked side sleeps between two liveness checks of its peer. */
#define LOKI_RING_PARK_SLICE_NS 25000000u

/*
 * loki_ring_segment_size - bytes a ring of @capacity needs in its memfd.
 * @capacity: data bytes, a power of two in [LOKI_RING_MIN_CAP, LOKI_RING_MAX_CAP].
 * Returns 0 when @capacity is invalid. Any thread.
 */
size_t loki_ring_segment_size(size_t capacity);

/*
 * loki_ring_max_record - largest payload one record of this ring can carry
 * (capacity / 2 minus the 8-byte header). Any thread.
 */
size_t loki_ring_max_record(const struct loki_ring *r);

/*
 * loki_ring_create - size @memfd, map it, initialise a ring and return the
 * handle of side @role.
 * @memfd: a memfd (or any shared file) the caller owns; it is borrowed, never
 *         closed. Pass it to the peer (fork, SCM_RIGHTS) to loki_ring_attach().
 * @capacity: data bytes, a power of two in [LOKI_RING_MIN_CAP, LOKI_RING_MAX_CAP].
 * @role: the side the creator plays; the peer attaches as the other one.
 * @out: receives a new handle; release with loki_ring_destroy().
 * Errors: -EINVAL (capacity, role), -ENOMEM, -errno from ftruncate/mmap.
 * Setup time, any thread.
 */
int loki_ring_create(int memfd, size_t capacity, enum loki_ring_role role, struct loki_ring **out);

/*
 * loki_ring_attach - map an existing ring segment and take side @role.
 * The header is checked before anything else is touched: magic and version
 * (LOKI_EBADMAGIC), layout hash (LOKI_ELAYOUT), checksum, capacity and file
 * size (LOKI_ECORRUPT). -EBUSY when @role was already taken (rings are single
 * use: a restarted peer gets a new ring). @memfd is borrowed.
 * @out: receives a new handle; release with loki_ring_destroy().
 * Errors: the above, -EINVAL, -ENOMEM, -errno from fstat/mmap. Setup time.
 */
int loki_ring_attach(int memfd, enum loki_ring_role role, struct loki_ring **out);

/*
 * loki_ring_attach_local - take side @role of the ring behind @other in this
 * process, sharing @other's mapping (threads; lets ThreadSanitizer see both
 * sides at one address). Same errors as loki_ring_attach(). @other is
 * borrowed; the mapping lives until both handles are destroyed.
 */
int loki_ring_attach_local(struct loki_ring *other, enum loki_ring_role role,
                           struct loki_ring **out);

/*
 * loki_ring_destroy - detach (the peer sees a clean close: -EPIPE once the
 * ring is drained), wake a parked peer, unmap and free the handle. NULL is a
 * no-op. A reservation not committed is dropped. The owning thread.
 */
void loki_ring_destroy(struct loki_ring *r);

/* ---- producer (the one producing thread) ---------------------------------------------------- */

/*
 * loki_ring_reserve - reserve room for a record of up to @len bytes; never blocks.
 * @ptr: receives where to write the payload (8-byte aligned, contiguous; each
 *       record occupies whole cache lines).
 * The slot is invisible to the consumer until loki_ring_commit(). A second
 * reserve before commit replaces the first.
 * Errors: -EAGAIN (full: loki_ring_wait() for room), LOKI_ETOOBIG (@len >
 * loki_ring_max_record()), LOKI_ECORRUPT (consumer index impossible), -EINVAL
 * (wrong role). Producer thread only.
 */
int loki_ring_reserve(struct loki_ring *r, size_t len, void **ptr);

/*
 * loki_ring_commit - publish the reserved record with its final length @len
 * (<= the reserved length) and wake a parked consumer. Makes no syscall unless
 * the consumer is parked. Errors: -EINVAL (no reservation, @len too large).
 * Producer thread only.
 */
int loki_ring_commit(struct loki_ring *r, size_t len);

/* loki_ring_write - reserve, copy @len bytes from @buf, commit. Errors as reserve. */
int loki_ring_write(struct loki_ring *r, const void *buf, size_t len);

/* ---- consumer (the one consuming thread) ---------------------------------------------------- */

/*
 * loki_ring_peek - look at the oldest committed record without removing it;
 * never blocks. @ptr/@len receive the payload in place; valid until
 * loki_ring_consume(). Peeking again returns the same record.
 * Errors: -EAGAIN (empty), LOKI_ECORRUPT (bad record header or sequence: the
 * segment was scribbled on), -EINVAL (wrong role). Consumer thread only.
 */
int loki_ring_peek(struct loki_ring *r, const void **ptr, size_t *len);

/*
 * loki_ring_consume - release the record returned by the last peek, making
 * its room available to the producer (and waking it if parked).
 * Errors: -EINVAL (nothing peeked). Consumer thread only.
 */
int loki_ring_consume(struct loki_ring *r);

/* loki_ring_read - peek, copy into @buf (@cap bytes), consume; *@len gets the size.
 * Errors as peek, plus LOKI_ETOOBIG (record larger than @cap; left in the ring). */
int loki_ring_read(struct loki_ring *r, void *buf, size_t cap, size_t *len);

/* ---- waiting, liveness, notification -------------------------------------------------------- */

/*
 * loki_ring_wait - block until the ring is ready for this side: a record to
 * peek (consumer) or room for a @len-byte record (producer; ignored for the
 * consumer). Polls for the adaptive spin budget first (pause-spinning, then
 * sched_yield(); see loki_ring_set_spin()), then parks on the
 * futex (or poll()s the wait fd of loki_ring_set_notify()), waking at least
 * every LOKI_RING_PARK_SLICE_NS to check the peer.
 * @timeout_ns: < 0 waits forever, 0 just checks.
 * Returns 0 when ready. Errors: -ETIMEDOUT; LOKI_EPEERDEAD (peer process died
 * or changed; records it committed before dying are still delivered first);
 * -EPIPE (peer detached cleanly and nothing is left); LOKI_ETOOBIG.
 * The side's owning thread.
 */
int loki_ring_wait(struct loki_ring *r, size_t len, int64_t timeout_ns);

/*
 * loki_ring_peer_check - 0 while the peer is attached and alive, or not yet
 * attached; LOKI_EPEERDEAD if it died, -EPIPE if it detached. One poll() on a
 * pidfd at most. The owning thread.
 */
int loki_ring_peer_check(struct loki_ring *r);

/*
 * loki_ring_peer_pidfd - a pidfd of the peer process (owned by the handle, do
 * not close), for a poll loop: it turns readable when the peer exits. -EAGAIN
 * while the peer has not attached; -ESRCH if the peer is this process (threads).
 */
int loki_ring_peer_pidfd(struct loki_ring *r, int *fd);

/*
 * loki_ring_set_spin - the most loki_ring_wait() polls before parking, in ns
 * (0: park at once). The budget in use adapts below it: a wait that parked for
 * longer than twice @spin_ns halves it (down to LOKI_RING_SPIN_MIN_NS), one
 * answered sooner restores @spin_ns. Owning thread.
 */
void loki_ring_set_spin(struct loki_ring *r, uint64_t spin_ns);

/* loki_ring_spin_budget - the spin budget the next wait will use, in ns. Owning thread. */
uint64_t loki_ring_spin_budget(const struct loki_ring *r);

/*
 * loki_ring_set_notify - use eventfds instead of the futex.
 * @wait_fd: this side sleeps on it (poll/libuv); -1 for the futex.
 * @wake_fd: written (8-byte 1) when the peer armed its eventfd and this side
 *           made progress; -1 for none.
 * Both borrowed; create them with EFD_NONBLOCK. One eventfd may serve many
 * rings (a router wakes once and drains every ring). Owning thread, setup time.
 */
void loki_ring_set_notify(struct loki_ring *r, int wait_fd, int wake_fd);

/*
 * loki_ring_notify_arm - for event loops: ask the peer to write our wait fd
 * at its next publish. Returns 1 if the ring is already ready (do not sleep:
 * drain now and arm again), 0 when armed (safe to sleep on the wait fd).
 * Loop recipe (libuv): uv_poll the wait fd; on readable: read the eventfd,
 * drain with peek/consume until -EAGAIN, then arm; if arm returns 1, drain
 * again. Also uv_poll loki_ring_peer_pidfd() to learn of a dead peer.
 * @len: room wanted (producer); ignored for the consumer. Owning thread.
 */
int loki_ring_notify_arm(struct loki_ring *r, size_t len);

/*
 * loki_ring_notify_disarm - withdraw loki_ring_notify_arm(): the peer's next
 * publishes do not write our wait fd (no syscall on its side) while we poll
 * the ring ourselves. At most one more write may still come (a publish racing
 * with this). Arm again before sleeping on the wait fd. Owning thread.
 */
void loki_ring_notify_disarm(struct loki_ring *r);

/* Counters for tests and metrics: records published by each side so far. Any thread. */
uint64_t loki_ring_produced(const struct loki_ring *r);
uint64_t loki_ring_consumed(const struct loki_ring *r);

/* Bytes currently in use (committed, not yet consumed). Any thread; a snapshot. */
size_t loki_ring_used(const struct loki_ring *r);

/* Raw segment base (tests corrupt headers through it); borrowed. */
void *loki_ring_segment(const struct loki_ring *r);

#endif
