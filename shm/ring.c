/* SPDX-License-Identifier: Apache-2.0 */
/*
 * SPSC ring of variable-size records in a shared mapping: the transport between
 * the router and every worker process (batch descriptors one way, results the
 * other). Zero-copy, no syscall while busy, no CPU while idle, and a dead peer
 * is an error return rather than a hang.
 *
 * Design
 * ------
 * The ring is one memfd. Page 0 holds the control block, the data area follows:
 *
 *   offset 0      64     128              256              384         4096            4096+cap
 *   +-----------+------+----------------+----------------+--- ... ---+---------------------+
 *   | shm_hdr   | pad  | prod side      | cons side      |  unused   | data (cap = 2^k B)  |
 *   | magic ver |      | tail (idx)     | head (idx)     |           | [rec][rec][pad...]  |
 *   | hash csum |      | count waiter   | count waiter   |           |                     |
 *   | cap size  |      | pid gen        | pid gen        |           |                     |
 *   +-----------+------+----------------+----------------+--- ... ---+---------------------+
 *                        2 lines, written   2 lines, written
 *                        by the producer    by the consumer
 *
 *   record:  | len u32 | seq u32 | payload ...        | pad to 64 |   (starts a cache line)
 *
 * Indexes are free-running 64-bit byte counters (DPDK style): used = tail - head,
 * position = idx & (cap - 1); they never wrap in practice and full/empty need no
 * spare slot. A record is contiguous; when it does not fit before the end of the
 * data area the producer writes a pad record over the rest and starts again at 0,
 * which is why a record is at most cap/2 (an empty ring always has room for it).
 * Each record carries the low bits of its sequence number; the consumer checks
 * it, so a scribbled or stale record is LOKI_ECORRUPT instead of garbage.
 *
 * Publication. The producer writes the record, then stores tail (R1); the consumer
 * loads tail (A1) before reading the record. The consumer stores head after it is
 * done with the bytes (R2); the producer loads head (A2) before reusing them. A
 * record in the middle of being written is beyond the published tail: if the
 * producer dies there, the consumer never sees it.
 *
 * Each side caches the other's index and reloads it only when the cached value
 * says empty (consumer) or full (producer), so a busy stream touches the other
 * side's cache line once per batch of records, not once per record.
 *
 * Parking. A waiting side first polls: a microsecond of pause-spinning (no
 * syscall: a peer on another core answers within a cache-line round trip), then
 * the same with a sched_yield() every 32 looks until its spin budget is spent.
 * The yield matters on a machine with fewer cores than busy threads: a pure
 * spinner would hold the very core its peer needs to answer, while
 * sched_yield() returns at once when nothing else wants the core. The budget
 * adapts between LOKI_RING_SPIN_MIN_NS and the configured spin_ns: a wait that
 * parked and was answered soon after (within twice the maximum) restores the
 * maximum, one that parked for long halves it, so a side whose peer is slow (a
 * model taking milliseconds, or idle traffic) stops burning CPU, and one whose
 * peer answers in microseconds keeps catching it without a sleep. Then the side
 * sets a waiter bit on the *other* side's line, re-reads the other side's index
 * and, if nothing moved, sleeps in futex_wait on the low 32 bits of that index
 * (capacity < 2^31, so the word cannot come back to the same value while the
 * sleeper holds its index).
 * The publishing side stores its index and then loads its own line's waiter
 * word. Both pairs are seq_cst (S1 on the publisher, S2 on the sleeper: store
 * idx / load waiter against store waiter / load idx), the Dekker pattern: at
 * least one of them sees the other, so a wakeup is never lost; the waiter word
 * lives on the publisher's own line, so the common case (nobody parked) costs
 * one load of a line it already owns and no syscall. With an eventfd configured
 * the sleeper poll()s the eventfd and the publisher writes it instead: that is
 * the fd a libuv loop can watch (loki_ring_notify_arm()). A loop that polls the
 * ring for a while instead (lokid right after sending a batch to a fast worker)
 * withdraws its request with loki_ring_notify_disarm(), so the peer's publishes
 * cost no write() syscall, and arms again before it sleeps.
 *
 * Liveness. Each side records its pid and a generation (0 never attached,
 * 1 attached, 2 detached) on its own line. A parked side wakes at least every
 * LOKI_RING_PARK_SLICE_NS (25 ms) and checks its peer: generation 2 is a clean
 * close (-EPIPE once drained), a pidfd that polls readable is a death
 * (LOKI_EPEERDEAD). The pidfd is opened the first time the peer is seen attached;
 * a pid recycled before that first look is the one window this cannot close.
 * Rings are single use: a side cannot be attached twice.
 */
#include "loki/ring.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "loki/clock.h"
#include "loki/compiler.h"
#include "loki/error.h"

struct ring_map {
    int refs; /* handles sharing the mapping (attach_local); atomic */
    void *base;
    size_t size;
};

struct loki_ring {
    struct loki_ring_shm *shm;
    uint8_t *data;
    uint64_t cap;
    uint64_t mask;
    struct ring_map *map;
    enum loki_ring_role role;
    struct loki_ring_side *me;   /* the side this handle owns */
    struct loki_ring_side *peer; /* the other side */

    uint64_t pos;       /* producer: tail to publish next; consumer: head (published) */
    uint64_t other;     /* cached peer index: producer caches head, consumer caches tail */
    uint64_t seq;       /* next record sequence */
    uint64_t resv_pos;  /* producer: position of the reserved record */
    uint32_t resv_len;  /* producer: reserved payload bytes */
    uint32_t peek_need; /* consumer: bytes to release on consume */
    bool reserved;
    bool peeked;

    uint64_t spin_ns;  /* configured (maximum) spin budget */
    uint64_t spin_cur; /* adapted budget, LOKI_RING_SPIN_MIN_NS (or less) .. spin_ns */
    int wait_fd;
    int wake_fd;
    int pidfd;
    pid_t peer_pid;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) & ~(a - 1);
}

static uint32_t *futex_word(struct loki_ring_side *s)
{
    return (uint32_t *)&s->idx; /* low half on little endian (shm_layout.h) */
}

static void futex_wait(uint32_t *addr, uint32_t val, uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u),
                          .tv_nsec = (long)(ns % 1000000000u)};
    /* Not FUTEX_PRIVATE: the word is shared between processes. */
    syscall(SYS_futex, addr, FUTEX_WAIT, val, &ts, NULL, 0);
}

static void futex_wake(uint32_t *addr)
{
    syscall(SYS_futex, addr, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

size_t loki_ring_segment_size(size_t capacity)
{
    if (capacity < LOKI_RING_MIN_CAP || capacity > LOKI_RING_MAX_CAP ||
        (capacity & (capacity - 1)) != 0)
        return 0;
    return LOKI_RING_DATA_OFF + capacity;
}

size_t loki_ring_max_record(const struct loki_ring *r)
{
    return r->cap / 2 - sizeof(struct loki_ring_rec);
}

static int handle_new(struct ring_map *map, enum loki_ring_role role, struct loki_ring **out)
{
    struct loki_ring *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->map = map;
    r->shm = map->base;
    r->data = (uint8_t *)map->base + LOKI_RING_DATA_OFF;
    r->cap = r->shm->hdr.param0;
    r->mask = r->cap - 1;
    r->role = role;
    r->me = role == LOKI_RING_PRODUCER ? &r->shm->prod : &r->shm->cons;
    r->peer = role == LOKI_RING_PRODUCER ? &r->shm->cons : &r->shm->prod;
    r->spin_ns = LOKI_RING_SPIN_NS_DEFAULT;
    r->spin_cur = LOKI_RING_SPIN_NS_DEFAULT;
    r->wait_fd = -1;
    r->wake_fd = -1;
    r->pidfd = -1;
    *out = r;
    return 0;
}

/* Claim side @role: generation 0 -> 1. Resume from the side's published state. */
static int claim_side(struct loki_ring *r)
{
    uint32_t expect = LOKI_RING_GEN_NONE;
    __atomic_store_n(&r->me->pid, (uint32_t)getpid(), __ATOMIC_RELAXED);
    /* R3: publishes pid with the generation; pairs with A3 in peer_check(). */
    if (!__atomic_compare_exchange_n(&r->me->gen, &expect, LOKI_RING_GEN_ATTACHED, false,
                                     __ATOMIC_RELEASE, __ATOMIC_RELAXED))
        return -EBUSY;
    r->pos = __atomic_load_n(&r->me->idx, __ATOMIC_RELAXED);
    r->seq = __atomic_load_n(&r->me->count, __ATOMIC_RELAXED);
    /* A4: the peer's index, paired with its R1/R2 stores. */
    r->other = __atomic_load_n(&r->peer->idx, __ATOMIC_ACQUIRE);
    return 0;
}

static void map_unref(struct ring_map *m)
{
    if (__atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        munmap(m->base, m->size);
        free(m);
    }
}

static int map_new(int memfd, size_t size, struct ring_map **out)
{
    struct ring_map *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    /* Populated now: no page fault on the data path, and ENOMEM shows up here. */
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, memfd, 0);
    if (base == MAP_FAILED) {
        int err = -errno;
        free(m);
        return err;
    }
    m->refs = 1;
    m->base = base;
    m->size = size;
    *out = m;
    return 0;
}

int loki_ring_create(int memfd, size_t capacity, enum loki_ring_role role, struct loki_ring **out)
{
    size_t size = loki_ring_segment_size(capacity);
    struct ring_map *map = NULL;
    int err;

    if (size == 0 || (role != LOKI_RING_PRODUCER && role != LOKI_RING_CONSUMER) || !out)
        return -EINVAL;
    if (ftruncate(memfd, 0) < 0 || ftruncate(memfd, (off_t)size) < 0)
        return -errno; /* truncating to 0 first zeroes any previous content */
    err = map_new(memfd, size, &map);
    if (err)
        return err;

    struct loki_ring_shm *shm = map->base;
    struct loki_shm_hdr h = {
        .magic = LOKI_SHM_RING_MAGIC,
        .version = LOKI_SHM_VERSION,
        .hdr_size = LOKI_RING_DATA_OFF,
        .layout_hash = loki_shm_layout_hash(),
        .seg_size = size,
        .param0 = capacity,
    };
    h.csum = loki_shm_hdr_csum(&h);
    memcpy((char *)&shm->hdr + sizeof(h.magic), (char *)&h + sizeof(h.magic),
           sizeof(h) - sizeof(h.magic));
    /* R0: the header is complete before the magic says so; pairs with A0 in attach. */
    __atomic_store_n(&shm->hdr.magic, h.magic, __ATOMIC_RELEASE);

    struct loki_ring *r;
    err = handle_new(map, role, &r);
    if (err)
        goto undo_map;
    err = claim_side(r);
    LOKI_BUG_ON(err); /* fresh segment */
    *out = r;
    return 0;

undo_map:
    map_unref(map);
    return err;
}

static int check_header(const struct loki_shm_hdr *h, size_t file_size)
{
    /* A0: pairs with R0 in create. */
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != LOKI_SHM_RING_MAGIC ||
        h->version != LOKI_SHM_VERSION)
        return LOKI_EBADMAGIC;
    if (h->layout_hash != loki_shm_layout_hash())
        return LOKI_ELAYOUT;
    if (h->csum != loki_shm_hdr_csum(h) || h->hdr_size != LOKI_RING_DATA_OFF ||
        loki_ring_segment_size(h->param0) == 0 ||
        h->seg_size != loki_ring_segment_size(h->param0) || h->seg_size != file_size)
        return LOKI_ECORRUPT;
    return 0;
}

int loki_ring_attach(int memfd, enum loki_ring_role role, struct loki_ring **out)
{
    struct stat st;
    struct ring_map *map = NULL;
    struct loki_ring *r;
    int err;

    if ((role != LOKI_RING_PRODUCER && role != LOKI_RING_CONSUMER) || !out)
        return -EINVAL;
    if (fstat(memfd, &st) < 0)
        return -errno;
    if ((size_t)st.st_size < LOKI_RING_DATA_OFF)
        return st.st_size < (off_t)sizeof(struct loki_shm_hdr) ? LOKI_EBADMAGIC : LOKI_ECORRUPT;
    err = map_new(memfd, (size_t)st.st_size, &map);
    if (err)
        return err;
    err = check_header(&((struct loki_ring_shm *)map->base)->hdr, (size_t)st.st_size);
    if (err)
        goto undo_map;
    err = handle_new(map, role, &r);
    if (err)
        goto undo_map;
    err = claim_side(r);
    if (err)
        goto undo_handle;
    *out = r;
    return 0;

undo_handle:
    free(r);
undo_map:
    map_unref(map);
    return err;
}

int loki_ring_attach_local(struct loki_ring *other, enum loki_ring_role role,
                           struct loki_ring **out)
{
    struct loki_ring *r;
    int err;

    if ((role != LOKI_RING_PRODUCER && role != LOKI_RING_CONSUMER) || !out || !other)
        return -EINVAL;
    err = check_header(&other->shm->hdr, other->map->size);
    if (err)
        return err;
    __atomic_add_fetch(&other->map->refs, 1, __ATOMIC_RELAXED);
    err = handle_new(other->map, role, &r);
    if (err)
        goto undo_ref;
    err = claim_side(r);
    if (err)
        goto undo_handle;
    *out = r;
    return 0;

undo_handle:
    free(r);
undo_ref:
    map_unref(other->map);
    return err;
}

static void wake_bits(struct loki_ring *r, uint32_t w)
{
    if ((w & LOKI_RING_WAIT_EVENTFD) && r->wake_fd >= 0) {
        uint64_t one = 1;
        ssize_t n = write(r->wake_fd, &one, sizeof(one));
        (void)n; /* EAGAIN: the counter is saturated, the peer is awake anyway */
        w &= ~LOKI_RING_WAIT_EVENTFD;
    }
    if (w)
        futex_wake(futex_word(r->me));
}

/*
 * After publishing our index: wake the peer if it parked on it. The seq_cst
 * index store (S1) before this seq_cst load pairs with S2 in park_prepare().
 */
static inline void wake_peer(struct loki_ring *r)
{
    if (LOKI_LIKELY(__atomic_load_n(&r->me->waiter, __ATOMIC_SEQ_CST) == 0))
        return;
    wake_bits(r, __atomic_exchange_n(&r->me->waiter, 0, __ATOMIC_SEQ_CST));
}

void loki_ring_destroy(struct loki_ring *r)
{
    if (!r)
        return;
    /* R3: a clean close; the peer sees generation 2 (A3) and drains then gets -EPIPE. */
    __atomic_store_n(&r->me->gen, LOKI_RING_GEN_DETACHED, __ATOMIC_SEQ_CST);
    wake_bits(r, __atomic_exchange_n(&r->me->waiter, 0, __ATOMIC_SEQ_CST));
    if (r->pidfd >= 0)
        close(r->pidfd);
    map_unref(r->map);
    free(r);
}

/* ---- producer ------------------------------------------------------------------------------ */

/*
 * Room for a record of @need bytes at r->pos: returns the pad bytes to write first
 * (0 if none) via *@pad, and 0 / -EAGAIN. Reloads the consumer index only when the
 * cached one says full.
 */
static int prod_fits(struct loki_ring *r, uint64_t need, uint64_t *pad)
{
    uint64_t off = r->pos & r->mask;
    uint64_t contig = r->cap - off;
    uint64_t total = need + (contig < need ? contig : 0);

    *pad = contig < need ? contig : 0;
    if (LOKI_LIKELY(r->cap - (r->pos - r->other) >= total))
        return 0;
    /* A2: pairs with R2 in publish_head(): the consumer is done with those bytes. */
    r->other = __atomic_load_n(&r->peer->idx, __ATOMIC_ACQUIRE);
    if (LOKI_UNLIKELY(r->pos - r->other > r->cap))
        return LOKI_ECORRUPT;
    return r->cap - (r->pos - r->other) >= total ? 0 : -EAGAIN;
}

int loki_ring_reserve(struct loki_ring *r, size_t len, void **ptr)
{
    uint64_t pad;
    int err;

    if (LOKI_UNLIKELY(r->role != LOKI_RING_PRODUCER))
        return -EINVAL;
    if (LOKI_UNLIKELY(len > loki_ring_max_record(r)))
        return LOKI_ETOOBIG;
    r->reserved = false;
    uint64_t need = align_up(sizeof(struct loki_ring_rec) + len, LOKI_RING_ALIGN);
    err = prod_fits(r, need, &pad);
    if (err)
        return err;
    uint64_t pos = r->pos;
    if (pad) {
        /* Invisible until the commit publishes tail past it. */
        struct loki_ring_rec *p = (struct loki_ring_rec *)(r->data + (pos & r->mask));
        p->len = LOKI_RING_REC_PAD | (uint32_t)pad;
        p->seq = 0;
        pos += pad;
    }
    r->resv_pos = pos;
    r->resv_len = (uint32_t)len;
    r->reserved = true;
    *ptr = r->data + (pos & r->mask) + sizeof(struct loki_ring_rec);
    return 0;
}

int loki_ring_commit(struct loki_ring *r, size_t len)
{
    if (LOKI_UNLIKELY(!r->reserved || len > r->resv_len))
        return -EINVAL;
    struct loki_ring_rec *rec = (struct loki_ring_rec *)(r->data + (r->resv_pos & r->mask));
    rec->len = (uint32_t)len;
    rec->seq = (uint32_t)r->seq;
    r->seq++;
    r->pos = r->resv_pos + align_up(sizeof(*rec) + len, LOKI_RING_ALIGN);
    r->reserved = false;
    __atomic_store_n(&r->me->count, r->seq, __ATOMIC_RELAXED);
    /* R1 + S1: the record bytes before the tail; pairs with A1 in peek and S2 in park. */
    __atomic_store_n(&r->me->idx, r->pos, __ATOMIC_SEQ_CST);
    wake_peer(r);
    return 0;
}

int loki_ring_write(struct loki_ring *r, const void *buf, size_t len)
{
    void *p;
    int err = loki_ring_reserve(r, len, &p);
    if (err)
        return err;
    memcpy(p, buf, len);
    return loki_ring_commit(r, len);
}

/* ---- consumer ------------------------------------------------------------------------------ */

static void publish_head(struct loki_ring *r)
{
    __atomic_store_n(&r->me->count, r->seq, __ATOMIC_RELAXED);
    /* R2 + S1: done with the bytes before head; pairs with A2 in prod_fits and S2 in park. */
    __atomic_store_n(&r->me->idx, r->pos, __ATOMIC_SEQ_CST);
    wake_peer(r);
}

int loki_ring_peek(struct loki_ring *r, const void **ptr, size_t *len)
{
    if (LOKI_UNLIKELY(r->role != LOKI_RING_CONSUMER))
        return -EINVAL;
    for (;;) {
        if (r->pos == r->other) {
            /* A1: pairs with R1 in commit: record bytes are visible. */
            r->other = __atomic_load_n(&r->peer->idx, __ATOMIC_ACQUIRE);
            if (r->pos == r->other)
                return -EAGAIN;
        }
        uint64_t avail = r->other - r->pos;
        uint64_t off = r->pos & r->mask;
        if (LOKI_UNLIKELY(avail > r->cap || avail < sizeof(struct loki_ring_rec)))
            return LOKI_ECORRUPT;
        const struct loki_ring_rec *rec = (const struct loki_ring_rec *)(r->data + off);
        uint32_t l = rec->len;
        if (l & LOKI_RING_REC_PAD) {
            uint64_t pad = l & ~LOKI_RING_REC_PAD;
            if (LOKI_UNLIKELY(pad != r->cap - off || pad > avail))
                return LOKI_ECORRUPT;
            r->pos += pad;
            publish_head(r); /* the producer may be waiting for exactly this room */
            continue;
        }
        uint64_t need = align_up(sizeof(*rec) + (uint64_t)l, LOKI_RING_ALIGN);
        if (LOKI_UNLIKELY(l > loki_ring_max_record(r) || need > avail || need > r->cap - off ||
                          rec->seq != (uint32_t)r->seq))
            return LOKI_ECORRUPT;
        r->peek_need = (uint32_t)need;
        r->peeked = true;
        *ptr = rec + 1;
        *len = l;
        return 0;
    }
}

int loki_ring_consume(struct loki_ring *r)
{
    if (LOKI_UNLIKELY(!r->peeked))
        return -EINVAL;
    r->peeked = false;
    r->pos += r->peek_need;
    r->seq++;
    publish_head(r);
    return 0;
}

int loki_ring_read(struct loki_ring *r, void *buf, size_t cap, size_t *len)
{
    const void *p;
    size_t n;
    int err = loki_ring_peek(r, &p, &n);
    if (err)
        return err;
    if (n > cap)
        return LOKI_ETOOBIG;
    memcpy(buf, p, n);
    *len = n;
    return loki_ring_consume(r);
}

/* ---- waiting and liveness ------------------------------------------------------------------ */

int loki_ring_peer_check(struct loki_ring *r)
{
    /* A3: pairs with R3 (claim/destroy): pid is valid once generation reads 1. */
    uint32_t gen = __atomic_load_n(&r->peer->gen, __ATOMIC_ACQUIRE);
    if (gen == LOKI_RING_GEN_NONE)
        return 0;
    if (gen != LOKI_RING_GEN_ATTACHED)
        return gen == LOKI_RING_GEN_DETACHED ? -EPIPE : LOKI_EPEERDEAD;
    if (r->peer_pid == 0) {
        r->peer_pid = (pid_t)__atomic_load_n(&r->peer->pid, __ATOMIC_RELAXED);
        if (r->peer_pid != getpid()) {
            r->pidfd = (int)syscall(SYS_pidfd_open, r->peer_pid, 0);
            if (r->pidfd < 0 && errno == ESRCH)
                return LOKI_EPEERDEAD;
        }
    }
    if (r->pidfd >= 0) {
        struct pollfd p = {.fd = r->pidfd, .events = POLLIN};
        if (poll(&p, 1, 0) > 0)
            return LOKI_EPEERDEAD;
    } else if (r->peer_pid != getpid() && kill(r->peer_pid, 0) < 0 && errno == ESRCH) {
        return LOKI_EPEERDEAD; /* no pidfd (old kernel): pid liveness only */
    }
    return 0;
}

int loki_ring_peer_pidfd(struct loki_ring *r, int *fd)
{
    int err = loki_ring_peer_check(r);
    if (err && err != LOKI_EPEERDEAD)
        return err;
    if (r->peer_pid == 0)
        return -EAGAIN;
    if (r->pidfd < 0)
        return -ESRCH;
    *fd = r->pidfd;
    return 0;
}

void loki_ring_set_spin(struct loki_ring *r, uint64_t spin_ns)
{
    r->spin_ns = spin_ns;
    r->spin_cur = spin_ns;
}

uint64_t loki_ring_spin_budget(const struct loki_ring *r)
{
    return r->spin_cur;
}

void loki_ring_set_notify(struct loki_ring *r, int wait_fd, int wake_fd)
{
    r->wait_fd = wait_fd;
    r->wake_fd = wake_fd;
}

/* Ready for this side, with a fresh look at the peer's index. */
static int ready(struct loki_ring *r, uint64_t need)
{
    if (r->role == LOKI_RING_CONSUMER) {
        r->other = __atomic_load_n(&r->peer->idx, __ATOMIC_ACQUIRE); /* A1 */
        return r->other != r->pos;
    }
    uint64_t pad;
    int err = prod_fits(r, need, &pad);
    return err == 0 ? 1 : err == -EAGAIN ? 0 : err;
}

/*
 * S2: announce we are about to sleep on the peer's index, then look again. The
 * seq_cst store/load pair against the publisher's S1 store / waiter load means
 * either we see its new index here or it sees our waiter bit.
 */
static int park_prepare(struct loki_ring *r, uint32_t mode, uint64_t need, uint32_t *seen)
{
    __atomic_fetch_or(&r->peer->waiter, mode, __ATOMIC_SEQ_CST);
    uint64_t idx = __atomic_load_n(&r->peer->idx, __ATOMIC_SEQ_CST);
    *seen = (uint32_t)idx;
    int rc = ready(r, need);
    if (rc)
        /* not going to sleep: spare the peer a wakeup syscall at its next publish */
        __atomic_fetch_and(&r->peer->waiter, ~mode, __ATOMIC_RELAXED);
    return rc;
}

static uint64_t record_need(const struct loki_ring *r, size_t len)
{
    return align_up(sizeof(struct loki_ring_rec) + len, LOKI_RING_ALIGN);
}

void loki_ring_notify_disarm(struct loki_ring *r)
{
    /* Relaxed: a publisher that still sees the bit writes the eventfd once more, harmless. */
    __atomic_fetch_and(&r->peer->waiter, ~LOKI_RING_WAIT_EVENTFD, __ATOMIC_RELAXED);
}

int loki_ring_notify_arm(struct loki_ring *r, size_t len)
{
    uint32_t seen;
    if (r->role == LOKI_RING_PRODUCER && len > loki_ring_max_record(r))
        return LOKI_ETOOBIG;
    int rc = park_prepare(r, LOKI_RING_WAIT_EVENTFD, record_need(r, len), &seen);
    return rc != 0 ? 1 : 0;
}

/*
 * After a wait that parked for @waited_ns in all: adapt the next spin budget
 * (see the design note). Answered within twice the maximum: spinning the
 * maximum would (nearly) have caught it. Longer: halve, down to the floor.
 */
static void spin_adapt(struct loki_ring *r, uint64_t waited_ns)
{
    uint64_t floor = r->spin_ns < LOKI_RING_SPIN_MIN_NS ? r->spin_ns : LOKI_RING_SPIN_MIN_NS;
    if (waited_ns <= 2 * r->spin_ns)
        r->spin_cur = r->spin_ns;
    else
        r->spin_cur = r->spin_cur / 2 > floor ? r->spin_cur / 2 : floor;
}

/*
 * Poll until ready, @spin_end or @deadline: look, pause, and every 32 looks
 * read the clock; past the first LOKI_RING_PAUSE_NS, also sched_yield() there.
 * A record is seen within a pause of its commit, except while we are inside
 * the yield (a fraction of a microsecond, once per 32 looks). Returns ready()'s
 * value (0: not ready when the time ran out).
 */
static int spin_poll(struct loki_ring *r, uint64_t need, uint64_t start, uint64_t spin_end,
                     uint64_t deadline)
{
    uint64_t pause_end = start + LOKI_RING_PAUSE_NS;
    uint64_t end = spin_end < deadline ? spin_end : deadline;
    if (end <= start)
        return ready(r, need);
    for (unsigned i = 1;; i++) {
        int rc = ready(r, need);
        if (rc)
            return rc;
        cpu_relax();
        if (i % 32)
            continue;
        uint64_t now = loki_now_ns();
        if (now >= end)
            return 0;
        if (now >= pause_end)
            sched_yield(); /* the core goes to whoever needs it, our peer perhaps */
    }
}

int loki_ring_wait(struct loki_ring *r, size_t len, int64_t timeout_ns)
{
    uint64_t start = loki_now_ns();
    uint64_t deadline = timeout_ns < 0 ? UINT64_MAX : start + (uint64_t)timeout_ns;
    uint64_t need = record_need(r, len);
    uint64_t now;
    int rc;

    if (r->role == LOKI_RING_PRODUCER && len > loki_ring_max_record(r))
        return LOKI_ETOOBIG;
    rc = spin_poll(r, need, start, start + r->spin_cur, deadline);
    if (rc)
        return rc < 0 ? rc : 0;

    uint32_t mode = r->wait_fd >= 0 ? LOKI_RING_WAIT_EVENTFD : LOKI_RING_WAIT_FUTEX;
    for (;;) {
        uint32_t seen;
        rc = park_prepare(r, mode, need, &seen);
        if (rc) {
            if (rc > 0)
                spin_adapt(r, loki_now_ns() - start);
            return rc < 0 ? rc : 0;
        }
        int dead = loki_ring_peer_check(r);
        if (dead) {
            /* Records committed before the peer went away are still delivered. */
            rc = ready(r, need);
            return rc ? (rc < 0 ? rc : 0) : dead;
        }
        now = loki_now_ns();
        if (now >= deadline)
            return -ETIMEDOUT;
        uint64_t slice = deadline - now;
        if (slice > LOKI_RING_PARK_SLICE_NS)
            slice = LOKI_RING_PARK_SLICE_NS;
        if (mode == LOKI_RING_WAIT_FUTEX) {
            futex_wait(futex_word(r->peer), seen, slice);
        } else {
            struct pollfd p[2] = {{.fd = r->wait_fd, .events = POLLIN},
                                  {.fd = r->pidfd, .events = POLLIN}};
            int ms = (int)((slice + 999999) / 1000000);
            if (poll(p, r->pidfd >= 0 ? 2 : 1, ms) > 0 && (p[0].revents & POLLIN)) {
                uint64_t v;
                ssize_t n = read(r->wait_fd, &v, sizeof(v));
                (void)n; /* EAGAIN: another ring sharing the fd took it */
            }
        }
    }
}

/* ---- introspection ------------------------------------------------------------------------- */

uint64_t loki_ring_produced(const struct loki_ring *r)
{
    return __atomic_load_n(&r->shm->prod.count, __ATOMIC_RELAXED);
}

uint64_t loki_ring_consumed(const struct loki_ring *r)
{
    return __atomic_load_n(&r->shm->cons.count, __ATOMIC_RELAXED);
}

size_t loki_ring_used(const struct loki_ring *r)
{
    uint64_t head = __atomic_load_n(&r->shm->cons.idx, __ATOMIC_ACQUIRE);
    uint64_t tail = __atomic_load_n(&r->shm->prod.idx, __ATOMIC_ACQUIRE);
    return (size_t)(tail - head);
}

void *loki_ring_segment(const struct loki_ring *r)
{
    return r->shm;
}
