/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Frontend actor: the Unix-socket face of lokid.
 *
 *   client ──bytes──▶ conn.rbuf ──frame──▶ decode ──validate──▶ on_request(owner)
 *                                                                   │ (router thread)
 *   client ◀──uv_write── node ◀── loop: async_cb ◀── MPSC queue ◀── loki_frontend_reply()
 *
 * Everything but loki_frontend_reply() runs on the loop thread. Reading: each
 * connection owns a receive buffer that grows (doubling) up to one maximum
 * frame plus slack; complete frames are handled in place and the remainder is
 * moved to the front, so a payload is never copied by the frontend: the owner
 * gets a pointer into the receive buffer, valid during its callback. A frame
 * whose prefix is over the limit gets an error frame and the connection is
 * shut down (its stream can no longer be framed); a frame that parses but is
 * wrong gets an error reply naming the problem and the connection carries on.
 * A frame must complete within frame_timeout_ms of its first byte.
 *
 * Connections: the frontend owns its listening socket (a uv_poll_t on it, so
 * that it decides what happens when accept() fails) and admits a connection
 * only under three caps: max_conns in all, max_conns_per_uid per peer uid
 * (SO_PEERCRED; a small hash of open connections per uid), and the process's
 * file descriptors (RLIMIT_NOFILE: the default caps take half of it, the rest
 * is lokid's; a connection that would take one of the last FD_SPARE is
 * refused). A refused connection gets one error frame naming the cap, written
 * straight to the fresh socket, and is closed at once, so a burst of refusals
 * holds no descriptors. When accept() itself fails for want of descriptors
 * (EMFILE/ENFILE), a reserve descriptor is closed to accept and refuse the
 * pending connections the same way, and accepting pauses ACCEPT_PAUSE_MS
 * instead of spinning on a listener that stays readable; it is logged once.
 *
 * Each connection has one timer, in one of three modes: FRAME while a frame is
 * incomplete, IDLE while nothing is in flight and nothing is buffered (a
 * connection that idles idle_timeout_s gets an error frame and is closed, so
 * idle connections cannot hold every slot), LINGER once it is closing (a peer
 * that does not read its last frames cannot keep it open). A connection closed
 * by the server (error frame, then shutdown) stops reading at once but first
 * writes the replies to the queries it had already accepted.
 *
 * Replies are encoded by the thread that calls loki_frontend_reply() into a
 * "node" (a write request plus buffer) taken from a small per-size-class cache,
 * so steady state allocates nothing. Off the loop thread the node is pushed on
 * a mutex-protected MPSC list; only the push that makes the list non-empty
 * calls uv_async_send() (under the lock, so it never races with the handle's
 * close in loki_frontend_stop()). The loop takes the whole list at once.
 *
 * Lifetime: a connection object is reference counted, on the loop thread only:
 * one reference for its open handles, one per delivered request (recorded in a
 * per-connection id set), one per write in progress. A reply removes its id
 * from the set and drops that reference; if the client has gone, the reply is
 * discarded (counted as late). An id that is not in the set (already answered)
 * is never dereferenced twice. Slow readers: bytes handed to uv_write() and
 * not yet completed are counted per connection; going over max_write_queue
 * drops the connection. Libraries do not log: every event is a counter.
 */
#include "frontend.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "loki/compiler.h"
#include "loki/error.h"
#include "loki/log.h"

#define NODE_CLASSES 12 /* 512 B .. 1 MiB */
#define NODE_CACHE 64   /* cached nodes per class */
#define RBUF_INIT (16 * 1024)
#define RBUF_SLACK (64 * 1024)
#define FD_SPARE 8            /* descriptors a connection never takes: lokid's last few */
#define ACCEPT_BATCH 64       /* connections accepted per listener wake-up */
#define ACCEPT_PAUSE_MS 100   /* accepting pauses this long when descriptors run out */
#define AUTO_MAX_CONNS 32768  /* ceiling of the max_conns sized from RLIMIT_NOFILE */
#define IDLE_DEFAULT_MS 60000 /* idle_timeout_s <= 0 */
#define REFUSAL_MAX 256       /* bytes of a refusal frame */

enum tmode { T_OFF, T_FRAME, T_IDLE, T_LINGER };

enum node_kind { NODE_PLAIN, NODE_REPLY, NODE_RELEASE };

struct node {
    struct node *next;
    uv_write_t wreq;
    struct loki_frontend_conn *conn;
    uint64_t id;
    enum node_kind kind;
    int cls; /* size class, -1 when not cached */
    size_t cap, len;
    uint8_t data[];
};

struct loki_frontend_conn {
    uv_pipe_t pipe;
    uv_timer_t timer;
    uv_shutdown_t sreq;
    struct loki_frontend *fe;
    struct loki_frontend_conn *prev, *next; /* every conn object, open or not */
    int refs;                               /* loop thread only */
    int handles;                            /* handles not yet closed */
    bool open;                              /* atomic: read by other threads */
    bool shutting;                          /* no more reading; closes once answered */
    bool fin;                               /* uv_shutdown() issued: nothing more is written */
    enum tmode tmode;                       /* what c->timer is running for */
    unsigned uid;
    uint8_t *rbuf;
    size_t rlen, rcap;
    uint64_t wq_bytes;
    /* in-flight id set: linear probing, backward-shift deletion */
    uint64_t *ids;
    uint8_t *used;
    uint32_t mask, n_inflight;
};

/* Open connections of one uid; n == 0 marks a free slot. */
struct uid_slot {
    uint32_t uid, n;
};

struct loki_frontend {
    uv_loop_t *loop;
    uv_poll_t lpoll;        /* readable: connections to accept on lfd */
    uv_timer_t pause_timer; /* accepting paused after EMFILE/ENFILE */
    int lfd;                /* the listening socket */
    int reserve_fd;         /* closed to accept (and refuse) when descriptors ran out */
    bool paused, fd_logged;
    uint64_t fd_limit; /* RLIMIT_NOFILE at start */
    uint64_t fd_guard; /* a connection on a descriptor at or above it is refused */
    uint32_t max_conns, max_conns_uid, idle_ms;
    struct uid_slot *uidt; /* open connections per uid: linear probing */
    uint32_t uid_mask, uid_used;
    uv_async_t async;
    uv_thread_t loop_thread;
    struct loki_frontend_opts o;
    struct loki_frontend_cfg cfg;
    char names[LOKI_PROTO_MAX_PIPELINES][LOKI_PROTO_NAME_MAX + 1];
    uint32_t max_body;
    bool listening, started, stopped, draining;
    int open_handles; /* listener poll, pause timer, async: for destroy */
    dev_t sock_dev;
    ino_t sock_ino;
    loki_frontend_drained_cb drained_cb;
    void *drained_ctx;
    struct loki_frontend_conn *conns;
    struct loki_frontend_stats st; /* atomics */
    /* shared with other threads, under qlock */
    pthread_mutex_t qlock;
    struct node *qhead, *qtail;
    bool qclosed;
    struct node *cache[NODE_CLASSES];
    int ncache[NODE_CLASSES];
};

#define STAT_ADD(fe, f, n) __atomic_fetch_add(&(fe)->st.f, (uint64_t)(n), __ATOMIC_RELAXED)
#define STAT_SUB(fe, f, n) __atomic_fetch_sub(&(fe)->st.f, (uint64_t)(n), __ATOMIC_RELAXED)

static void conn_close(struct loki_frontend_conn *c);
static void conn_unref(struct loki_frontend_conn *c);
static void conn_rearm(struct loki_frontend_conn *c, bool new_frame, bool got_bytes);
static void conn_finish(struct loki_frontend_conn *c);
static void drain_check(struct loki_frontend *fe);

/* ---- nodes -------------------------------------------------------------- */

static struct node *node_get(struct loki_frontend *fe, size_t need)
{
    int cls = 0;
    while (cls < NODE_CLASSES && ((size_t)512 << cls) < need)
        cls++;
    struct node *n = NULL;
    if (cls < NODE_CLASSES) {
        pthread_mutex_lock(&fe->qlock);
        n = fe->cache[cls];
        if (n) {
            fe->cache[cls] = n->next;
            fe->ncache[cls]--;
        }
        pthread_mutex_unlock(&fe->qlock);
    }
    if (!n) {
        size_t cap = cls < NODE_CLASSES ? (size_t)512 << cls : need;
        n = malloc(sizeof(*n) + cap);
        if (!n)
            return NULL;
        n->cap = cap;
        n->cls = cls < NODE_CLASSES ? cls : -1;
    }
    n->next = NULL;
    n->conn = NULL;
    n->len = 0;
    n->kind = NODE_PLAIN;
    return n;
}

static void node_put(struct loki_frontend *fe, struct node *n)
{
    if (n->cls >= 0) {
        pthread_mutex_lock(&fe->qlock);
        if (fe->ncache[n->cls] < NODE_CACHE) {
            n->next = fe->cache[n->cls];
            fe->cache[n->cls] = n;
            fe->ncache[n->cls]++;
            n = NULL;
        }
        pthread_mutex_unlock(&fe->qlock);
    }
    free(n);
}

/* ---- in-flight id set ---------------------------------------------------- */

static uint32_t id_hash(const struct loki_frontend_conn *c, uint64_t id)
{
    return (uint32_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & c->mask;
}

static bool ids_has(const struct loki_frontend_conn *c, uint64_t id)
{
    for (uint32_t i = id_hash(c, id);; i = (i + 1) & c->mask) {
        if (!c->used[i])
            return false;
        if (c->ids[i] == id)
            return true;
    }
}

static void ids_add(struct loki_frontend_conn *c, uint64_t id)
{
    uint32_t i = id_hash(c, id);
    while (c->used[i])
        i = (i + 1) & c->mask;
    c->used[i] = 1;
    c->ids[i] = id;
    c->n_inflight++;
}

static bool ids_del(struct loki_frontend_conn *c, uint64_t id)
{
    uint32_t i = id_hash(c, id);
    for (;; i = (i + 1) & c->mask) {
        if (!c->used[i])
            return false;
        if (c->ids[i] == id)
            break;
    }
    /* backward-shift: pull later members of the probe run into the hole */
    for (uint32_t j = (i + 1) & c->mask; c->used[j]; j = (j + 1) & c->mask) {
        uint32_t h = id_hash(c, c->ids[j]);
        bool movable = i <= j ? (h <= i || h > j) : (h <= i && h > j);
        if (movable) {
            c->ids[i] = c->ids[j];
            i = j;
        }
    }
    c->used[i] = 0;
    c->n_inflight--;
    return true;
}

/* ---- open connections per uid ----------------------------------------------- */

static uint32_t uid_hash(uint32_t mask, uint32_t uid)
{
    return (uint32_t)(((uint64_t)uid * 0x9E3779B97F4A7C15ull) >> 32) & mask;
}

/* The slot holding @uid, or the free slot where it would go. */
static uint32_t uid_slot(const struct loki_frontend *fe, uint32_t uid)
{
    uint32_t i = uid_hash(fe->uid_mask, uid);
    while (fe->uidt[i].n && fe->uidt[i].uid != uid)
        i = (i + 1) & fe->uid_mask;
    return i;
}

static uint32_t uid_conns(const struct loki_frontend *fe, uint32_t uid)
{
    return fe->uidt[uid_slot(fe, uid)].n;
}

/* Count one more connection of @uid; -ENOMEM when the table could not grow. */
static int uid_add(struct loki_frontend *fe, uint32_t uid)
{
    uint32_t i = uid_slot(fe, uid);
    if (!fe->uidt[i].n && 2 * (fe->uid_used + 1) > fe->uid_mask + 1) {
        /* keep the load at most one half: double and reinsert */
        uint32_t cap = 2 * (fe->uid_mask + 1);
        struct uid_slot *t = calloc(cap, sizeof(*t)), *old = fe->uidt;
        if (!t)
            return -ENOMEM;
        uint32_t old_cap = fe->uid_mask + 1;
        fe->uidt = t;
        fe->uid_mask = cap - 1;
        for (uint32_t k = 0; k < old_cap; k++)
            if (old[k].n)
                t[uid_slot(fe, old[k].uid)] = old[k];
        free(old);
        i = uid_slot(fe, uid);
    }
    if (!fe->uidt[i].n) {
        fe->uidt[i].uid = uid;
        fe->uid_used++;
    }
    fe->uidt[i].n++;
    return 0;
}

/* One connection of @uid fewer; the slot is freed at zero (backward-shift deletion). */
static void uid_del(struct loki_frontend *fe, uint32_t uid)
{
    uint32_t i = uid_slot(fe, uid), mask = fe->uid_mask;
    LOKI_ASSERT(fe->uidt[i].n > 0);
    if (--fe->uidt[i].n > 0)
        return;
    fe->uid_used--;
    for (uint32_t j = (i + 1) & mask; fe->uidt[j].n; j = (j + 1) & mask) {
        uint32_t h = uid_hash(mask, fe->uidt[j].uid);
        bool movable = i <= j ? (h <= i || h > j) : (h <= i && h > j);
        if (movable) {
            fe->uidt[i] = fe->uidt[j];
            fe->uidt[j].n = 0;
            i = j;
        }
    }
}

/* ---- writing ------------------------------------------------------------- */

static void on_write(uv_write_t *w, int status)
{
    struct node *n = w->data;
    struct loki_frontend_conn *c = n->conn;
    struct loki_frontend *fe = c->fe;
    c->wq_bytes -= n->len;
    if (status < 0 && status != UV_ECANCELED)
        conn_close(c);
    else if (status == 0)
        STAT_ADD(fe, bytes_out, n->len);
    node_put(fe, n);
    conn_unref(c); /* R2: pairs with A2 in conn_write() */
}

/* Queue @n on @c; takes ownership of @n. Loop thread. */
static void conn_write(struct loki_frontend_conn *c, struct node *n)
{
    struct loki_frontend *fe = c->fe;
    if (!c->open || c->fin) {
        node_put(fe, n);
        return;
    }
    if (c->wq_bytes + n->len > fe->o.max_write_queue) {
        STAT_ADD(fe, slow_drops, 1);
        node_put(fe, n);
        conn_close(c);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)n->data, (unsigned)n->len);
    n->conn = c;
    n->wreq.data = n;
    c->refs++; /* A2: the write holds the conn until on_write() */
    c->wq_bytes += n->len;
    int rc = uv_write(&n->wreq, (uv_stream_t *)&c->pipe, &b, 1, on_write);
    if (rc < 0) {
        c->wq_bytes -= n->len;
        node_put(fe, n);
        conn_close(c);
        conn_unref(c); /* R2 on failure */
    }
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct loki_frontend_conn *c = req->data;
    conn_close(c);
    conn_unref(c); /* R3: pairs with A3 in conn_shutdown() */
}

/* Run @c's one timer for @m (T_OFF stops it). Loop thread. */
static void conn_timer(struct loki_frontend_conn *c, enum tmode m, uint64_t ms);

/*
 * Stop reading; once the queries already accepted are answered (deliver_node() calls
 * conn_finish() for the last one), let the queued writes finish, then close. Loop thread.
 */
static void conn_shutdown(struct loki_frontend_conn *c)
{
    if (!c->open || c->shutting)
        return;
    c->shutting = true;
    uv_read_stop((uv_stream_t *)&c->pipe);
    conn_timer(c, T_OFF, 0);
    if (c->n_inflight == 0)
        conn_finish(c);
}

/* Half-close after the queued writes, then close; LINGER bounds a peer that does not read. */
static void conn_finish(struct loki_frontend_conn *c)
{
    if (!c->open || c->fin)
        return;
    c->fin = true;
    c->sreq.data = c;
    c->refs++; /* A3 */
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->pipe, on_shutdown) < 0) {
        conn_close(c);
        conn_unref(c); /* R3 on failure */
        return;
    }
    conn_timer(c, T_LINGER, c->fe->o.frame_timeout_ms);
}

/* Encode a reply built here (r->type, has_id, id set by the caller) and write it. */
static void send_local(struct loki_frontend_conn *c, const struct loki_reply *r)
{
    struct loki_frontend *fe = c->fe;
    struct node *n = node_get(fe, loki_proto_reply_size(r));
    ssize_t len = n ? loki_proto_encode_reply(n->data, n->cap, r) : -ENOMEM;
    if (len < 0) {
        if (n)
            node_put(fe, n);
        conn_close(c); /* cannot answer: better a closed connection than a hang */
        return;
    }
    n->len = (size_t)len;
    conn_write(c, n);
}

/* A short error reply; then the connection is shut down when @then_close. Loop thread. */
static void send_error(struct loki_frontend_conn *c, enum loki_msg_type type, bool has_id,
                       uint64_t id, enum loki_status status, const char *msg, bool then_close)
{
    struct loki_reply r;
    loki_reply_init(&r);
    r.type = type;
    r.has_id = has_id;
    r.id = id;
    r.status = status;
    r.error = loki_bytes_str(msg);
    if (status == LOKI_STATUS_OVERLOADED) {
        r.has_retry_after = true;
        r.retry_after_ms = c->fe->o.retry_after_ms;
    }
    send_local(c, &r);
    if (then_close)
        conn_shutdown(c);
}

/* ---- replies from the owner ------------------------------------------------ */

/* Loop thread: route one owner reply (or release) to its connection. Takes @n. */
static void deliver_node(struct loki_frontend *fe, struct node *n)
{
    struct loki_frontend_conn *c = n->conn;
    if (!ids_del(c, n->id)) {
        /* already answered: the owner broke the once-only contract; never unref twice */
        node_put(fe, n);
        return;
    }
    STAT_SUB(fe, inflight, 1);
    if (n->kind == NODE_REPLY && c->open && !c->fin) {
        STAT_ADD(fe, replies, 1);
        n->kind = NODE_PLAIN;
        conn_write(c, n);
    } else {
        if (!c->open || c->fin)
            STAT_ADD(fe, late_replies, 1);
        node_put(fe, n);
    }
    if (c->n_inflight == 0 && c->open) {
        if (c->shutting)
            conn_finish(c); /* the last answer is queued: now the close */
        else
            conn_rearm(c, false, false); /* its idle clock starts */
    }
    conn_unref(c); /* R1: pairs with A1 in handle_infer() */
    drain_check(fe);
}

static void on_async(uv_async_t *a)
{
    struct loki_frontend *fe = a->data;
    pthread_mutex_lock(&fe->qlock);
    struct node *n = fe->qhead;
    fe->qhead = fe->qtail = NULL;
    pthread_mutex_unlock(&fe->qlock);
    while (n) {
        struct node *next = n->next;
        deliver_node(fe, n);
        n = next;
    }
}

int loki_frontend_reply(struct loki_frontend_conn *c, uint64_t id, const struct loki_reply *r)
{
    struct loki_frontend *fe = c->fe;
    int rc = 0;
    struct node *n = node_get(fe, loki_proto_reply_size(r));
    ssize_t len = n ? loki_proto_encode_reply_as(n->data, n->cap, r, LOKI_MSG_INFER, id) : -ENOMEM;
    if (len < 0 && n) {
        /* the reply itself is invalid (too many outputs...): tell the client so */
        rc = (int)len;
        struct loki_reply e;
        loki_reply_init(&e);
        e.status = LOKI_STATUS_ERROR;
        e.error = loki_bytes_str("server could not encode the reply");
        len = loki_proto_encode_reply_as(n->data, n->cap, &e, LOKI_MSG_INFER, id);
    }
    if (len < 0) {
        /* no memory for a node: the release must still reach the loop, so fall back to
         * a node-less path on the loop thread, or the smallest cached node elsewhere */
        rc = -ENOMEM;
        if (n)
            node_put(fe, n);
        n = node_get(fe, 1);
        if (!n)
            return -ENOMEM; /* the connection reference leaks until destroy */
        n->kind = NODE_RELEASE;
        n->len = 0;
    } else {
        n->kind = NODE_REPLY;
        n->len = (size_t)len;
    }
    n->conn = c;
    n->id = id;
    if (uv_thread_equal(&fe->loop_thread, &(uv_thread_t){uv_thread_self()})) {
        deliver_node(fe, n);
        return rc;
    }
    pthread_mutex_lock(&fe->qlock);
    if (fe->qclosed) {
        pthread_mutex_unlock(&fe->qlock);
        STAT_ADD(fe, late_replies, 1);
        node_put(fe, n);
        return rc;
    }
    bool was_empty = fe->qhead == NULL;
    if (fe->qtail)
        fe->qtail->next = n;
    else
        fe->qhead = n;
    fe->qtail = n;
    if (was_empty)
        uv_async_send(&fe->async); /* under qlock: never races with uv_close() in stop */
    pthread_mutex_unlock(&fe->qlock);
    return rc;
}

bool loki_frontend_conn_is_open(const struct loki_frontend_conn *c)
{
    return __atomic_load_n(&c->open, __ATOMIC_ACQUIRE);
}

unsigned loki_frontend_conn_uid(const struct loki_frontend_conn *c)
{
    return c->uid;
}

/* ---- connections ------------------------------------------------------------ */

static void conn_free(struct loki_frontend_conn *c)
{
    free(c->rbuf);
    free(c->ids);
    free(c->used);
    free(c);
}

static void conn_unref(struct loki_frontend_conn *c)
{
    LOKI_ASSERT(c->refs > 0);
    if (--c->refs > 0)
        return;
    struct loki_frontend *fe = c->fe;
    if (c->prev)
        c->prev->next = c->next;
    else
        fe->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    conn_free(c);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct loki_frontend_conn *c = h->data;
    if (--c->handles == 0)
        conn_unref(c); /* R0: pairs with A0 in on_connection() */
}

static void conn_close(struct loki_frontend_conn *c)
{
    if (!c->open)
        return;
    __atomic_store_n(&c->open, false, __ATOMIC_RELEASE);
    STAT_SUB(c->fe, connections, 1);
    uid_del(c->fe, c->uid);
    uv_close((uv_handle_t *)&c->pipe, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void on_conn_timer(uv_timer_t *t)
{
    struct loki_frontend_conn *c = t->data;
    struct loki_frontend *fe = c->fe;
    char msg[128];
    enum tmode m = c->tmode;
    c->tmode = T_OFF; /* one-shot */
    switch (m) {
    case T_FRAME:
        STAT_ADD(fe, frame_timeouts, 1);
        snprintf(msg, sizeof(msg), "incomplete frame: %zu bytes received, then nothing for %u ms",
                 c->rlen, fe->o.frame_timeout_ms);
        send_error(c, LOKI_MSG_NONE, false, 0, LOKI_STATUS_BAD_REQUEST, msg, true);
        break;
    case T_IDLE:
        if (c->n_inflight || c->rlen) { /* not idle after all: never close a busy one */
            conn_rearm(c, false, false);
            break;
        }
        STAT_ADD(fe, idle_timeouts, 1);
        snprintf(msg, sizeof(msg), "idle timeout: no request for %u ms", fe->idle_ms);
        send_error(c, LOKI_MSG_NONE, false, 0, LOKI_STATUS_ERROR, msg, true);
        break;
    case T_LINGER: /* the peer did not take its last frames in time */
        if (c->wq_bytes)
            STAT_ADD(fe, slow_drops, 1);
        conn_close(c);
        break;
    case T_OFF:
        break;
    }
}

static void conn_timer(struct loki_frontend_conn *c, enum tmode m, uint64_t ms)
{
    if (m == T_OFF) {
        if (c->tmode != T_OFF)
            uv_timer_stop(&c->timer);
    } else {
        uv_timer_start(&c->timer, on_conn_timer, ms, 0);
    }
    c->tmode = m;
}

/*
 * Pick the timer for @c's state after bytes arrived (@got_bytes; @new_frame: a frame
 * completed, so buffered bytes begin a new one) or a query was answered. Loop thread.
 */
static void conn_rearm(struct loki_frontend_conn *c, bool new_frame, bool got_bytes)
{
    struct loki_frontend *fe = c->fe;
    if (!c->open || c->shutting)
        return;
    if (c->rlen > 0) {
        if (new_frame || c->tmode != T_FRAME) /* a new frame started: its clock starts now */
            conn_timer(c, T_FRAME, fe->o.frame_timeout_ms);
    } else if (c->n_inflight == 0) {
        if (got_bytes || c->tmode != T_IDLE)
            conn_timer(c, T_IDLE, fe->idle_ms);
    } else {
        conn_timer(c, T_OFF, 0);
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct loki_frontend_conn *c = h->data;
    size_t max = (size_t)c->fe->max_body + LOKI_PROTO_HDR + RBUF_SLACK;
    if (c->rcap - c->rlen < RBUF_INIT / 2 && c->rcap < max) {
        size_t cap = c->rcap * 2 < max ? c->rcap * 2 : max;
        uint8_t *p = realloc(c->rbuf, cap);
        if (p) {
            c->rbuf = p;
            c->rcap = cap;
        }
    }
    *buf = uv_buf_init((char *)c->rbuf + c->rlen, (unsigned)(c->rcap - c->rlen));
}

/* Fill r->report from the owner for a request naming a format; false: answered with an error. */
static bool want_report(struct loki_frontend_conn *c, const struct loki_request *req,
                        struct loki_reply *r)
{
    struct loki_frontend *fe = c->fe;
    char err[LOKI_PROTO_ERR_MAX];
    snprintf(err, sizeof(err), "field 'format': unknown report format '%.*s'", (int)req->format.len,
             (const char *)req->format.ptr);
    if (fe->o.on_report &&
        fe->o.on_report(fe->o.ctx, req->type, req->format, &r->report, err, sizeof(err)) == 0)
        return true;
    STAT_ADD(fe, bad_requests, 1);
    send_error(c, req->type, req->has_id, req->id, LOKI_STATUS_BAD_REQUEST, err, false);
    return false;
}

static void reply_hello(struct loki_frontend_conn *c, const struct loki_request *req,
                        enum loki_msg_type type)
{
    struct loki_frontend *fe = c->fe;
    struct loki_reply r;
    loki_reply_init(&r);
    r.type = type;
    r.has_id = req->has_id;
    r.id = req->id;
    r.status = LOKI_STATUS_OK;
    r.version = LOKI_PROTO_VERSION;
    r.server = loki_bytes_str(fe->o.server_name);
    r.max_payload = fe->cfg.max_payload;
    r.max_outstanding = fe->o.max_outstanding;
    r.n_pipelines = (uint32_t)fe->o.n_pipelines;
    for (int i = 0; i < fe->o.n_pipelines; i++)
        r.pipelines[i] = loki_bytes_str(fe->names[i]);
    if (type == LOKI_MSG_STATUS) {
        bool ready = fe->o.is_ready ? fe->o.is_ready(fe->o.ctx) : true;
        r.draining = fe->draining;
        r.ready = ready && !fe->draining;
        r.connections = __atomic_load_n(&fe->st.connections, __ATOMIC_RELAXED);
        r.inflight = __atomic_load_n(&fe->st.inflight, __ATOMIC_RELAXED);
        if (req->format.len && !want_report(c, req, &r))
            return;
    }
    send_local(c, &r);
}

static void reply_metrics(struct loki_frontend_conn *c, const struct loki_request *req)
{
    struct loki_frontend *fe = c->fe;
    struct loki_frontend_stats s;
    struct loki_reply r;
    loki_frontend_stats(fe, &s);
    loki_reply_init(&r);
    r.type = LOKI_MSG_METRICS;
    r.has_id = req->has_id;
    r.id = req->id;
    r.status = LOKI_STATUS_OK;
    static const struct {
        const char *name;
        size_t off;
    } counters[] = {
#define C(f) {"frontend_" #f, offsetof(struct loki_frontend_stats, f)}
        C(accepted),  C(refused),       C(connections),    C(inflight),         C(requests),
        C(replies),   C(late_replies),  C(bad_requests),   C(unknown_pipeline), C(overloaded),
        C(draining),  C(frame_errors),  C(frame_timeouts), C(slow_drops),       C(bytes_in),
        C(bytes_out), C(idle_timeouts), C(fd_exhausted),
#undef C
    };
    for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
        r.metrics[r.n_metrics].name = loki_bytes_str(counters[i].name);
        r.metrics[r.n_metrics++].value =
            (double)*(const uint64_t *)((const char *)&s + counters[i].off);
    }
    if (fe->o.on_metrics) {
        int k = fe->o.on_metrics(fe->o.ctx, r.metrics + r.n_metrics,
                                 LOKI_PROTO_MAX_METRICS - (int)r.n_metrics);
        if (k > 0 && k <= LOKI_PROTO_MAX_METRICS - (int)r.n_metrics)
            r.n_metrics += (uint32_t)k;
    }
    if (req->format.len && !want_report(c, req, &r))
        return;
    send_local(c, &r);
}

static void handle_infer(struct loki_frontend_conn *c, struct loki_request *req)
{
    struct loki_frontend *fe = c->fe;
    char msg[160];
    int p;
    for (p = 0; p < fe->o.n_pipelines; p++)
        if (loki_bytes_eq(req->pipeline, fe->names[p]))
            break;
    if (p == fe->o.n_pipelines) {
        STAT_ADD(fe, unknown_pipeline, 1);
        snprintf(msg, sizeof(msg), "unknown pipeline '%.*s'", (int)req->pipeline.len,
                 (const char *)req->pipeline.ptr);
        send_error(c, LOKI_MSG_INFER, true, req->id, LOKI_STATUS_UNKNOWN_PIPELINE, msg, false);
        return;
    }
    if (fe->draining) {
        STAT_ADD(fe, draining, 1);
        send_error(c, LOKI_MSG_INFER, true, req->id, LOKI_STATUS_DRAINING, "server is draining",
                   false);
        return;
    }
    if (fe->o.is_ready && !fe->o.is_ready(fe->o.ctx)) {
        /* the socket listens before the workers are up (a bad path fails at once): until they
         * are, say so now rather than hold the query for seconds of model loading */
        STAT_ADD(fe, overloaded, 1);
        send_error(c, LOKI_MSG_INFER, true, req->id, LOKI_STATUS_OVERLOADED,
                   "not ready: workers are starting", false);
        return;
    }
    if (ids_has(c, req->id)) {
        STAT_ADD(fe, bad_requests, 1);
        snprintf(msg, sizeof(msg), "field 'id': %llu is already in flight on this connection",
                 (unsigned long long)req->id);
        send_error(c, LOKI_MSG_INFER, true, req->id, LOKI_STATUS_BAD_REQUEST, msg, false);
        return;
    }
    if (c->n_inflight >= fe->o.max_outstanding ||
        __atomic_load_n(&fe->st.inflight, __ATOMIC_RELAXED) >= fe->cfg.max_inflight) {
        STAT_ADD(fe, overloaded, 1);
        send_error(c, LOKI_MSG_INFER, true, req->id, LOKI_STATUS_OVERLOADED,
                   c->n_inflight >= fe->o.max_outstanding
                       ? "too many outstanding requests on this connection"
                       : "too many requests in flight",
                   false);
        return;
    }
    ids_add(c, req->id);
    c->refs++; /* A1: released by the matching loki_frontend_reply() */
    STAT_ADD(fe, inflight, 1);
    STAT_ADD(fe, requests, 1);
    req->pipeline_index = p;
    fe->o.on_request(fe->o.ctx, c, req);
}

static void handle_frame(struct loki_frontend_conn *c, const uint8_t *body, uint32_t len)
{
    struct loki_frontend *fe = c->fe;
    struct loki_request req;
    struct loki_proto_limits lim = {fe->cfg.max_payload};
    char err[LOKI_PROTO_ERR_MAX];
    int rc = loki_proto_decode_request(body, len, &lim, &req, err, sizeof(err));
    if (rc < 0) {
        STAT_ADD(fe, bad_requests, 1);
        send_error(c, req.has_id ? LOKI_MSG_INFER : LOKI_MSG_NONE, req.has_id, req.id,
                   LOKI_STATUS_BAD_REQUEST, err, false);
        return;
    }
    switch (req.type) {
    case LOKI_MSG_INFER:
        handle_infer(c, &req);
        break;
    case LOKI_MSG_HELLO:
    case LOKI_MSG_STATUS:
        reply_hello(c, &req, req.type);
        break;
    case LOKI_MSG_METRICS:
        reply_metrics(c, &req);
        break;
    default: { /* ping: liveness only */
        struct loki_reply r;
        loki_reply_init(&r);
        r.type = LOKI_MSG_PING;
        r.has_id = req.has_id;
        r.id = req.id;
        send_local(c, &r);
        break;
    }
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct loki_frontend_conn *c = s->data;
    struct loki_frontend *fe = c->fe;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (nread == 0 || c->shutting)
        return;
    STAT_ADD(fe, bytes_in, nread);
    c->rlen += (size_t)nread;
    size_t off = 0;
    bool consumed = false;
    /* the owner's callback may reply on this thread, but never closes @c itself: the
     * write path only closes it for a full write queue, checked through c->open */
    c->refs++; /* A4: keep @c across callbacks */
    while (c->open && !c->shutting) {
        const uint8_t *body;
        uint32_t blen = 0;
        ssize_t n = loki_proto_frame_next(c->rbuf + off, c->rlen - off, fe->max_body, &body, &blen);
        if (n == 0)
            break;
        if (n < 0) {
            char msg[128];
            STAT_ADD(fe, frame_errors, 1);
            snprintf(msg, sizeof(msg), "frame of %u bytes exceeds the limit of %u", blen,
                     fe->max_body);
            send_error(c, LOKI_MSG_NONE, false, 0, LOKI_STATUS_BAD_REQUEST, msg, true);
            break;
        }
        handle_frame(c, body, blen);
        off += (size_t)n;
        consumed = true;
    }
    if (c->open && !c->shutting) {
        if (off) {
            memmove(c->rbuf, c->rbuf + off, c->rlen - off);
            c->rlen -= off;
        }
        conn_rearm(c, consumed, true);
    }
    conn_unref(c); /* R4 */
}

/*
 * Refuse a connection that was never admitted: one error frame (it fits the fresh socket's
 * empty buffer, so a non-blocking send takes it whole), then close; the descriptor is back
 * at once. Loop thread.
 */
static void refuse_fd(struct loki_frontend *fe, int fd, enum loki_status status, const char *msg)
{
    uint8_t buf[REFUSAL_MAX];
    struct loki_reply r;
    loki_reply_init(&r);
    r.type = LOKI_MSG_NONE;
    r.status = status;
    r.error = loki_bytes_str(msg);
    if (status == LOKI_STATUS_OVERLOADED) {
        r.has_retry_after = true;
        r.retry_after_ms = fe->o.retry_after_ms;
    }
    STAT_ADD(fe, refused, 1); /* before the peer can see the close */
    ssize_t n = loki_proto_encode_reply(buf, sizeof(buf), &r);
    if (n > 0 && send(fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) == n)
        STAT_ADD(fe, bytes_out, n);
    close(fd);
}

/* Descriptors ran short: counted always, logged once (the operator's knob is the limit). */
static void note_fd_shortage(struct loki_frontend *fe, int err)
{
    STAT_ADD(fe, fd_exhausted, 1);
    if (fe->fd_logged)
        return;
    fe->fd_logged = true;
    loki_log(LOKI_LOG_WARN,
             "frontend: out of file descriptors (%s; RLIMIT_NOFILE %llu, %llu connections open): "
             "new connections are refused with an error frame until some close; raise the limit "
             "(LimitNOFILE) or lower frontend.max_connections (logged once)",
             err ? strerror(err) : "only the reserve left", (unsigned long long)fe->fd_limit,
             (unsigned long long)__atomic_load_n(&fe->st.connections, __ATOMIC_RELAXED));
}

static void refuse_no_fds(struct loki_frontend *fe, int fd)
{
    char msg[96];
    snprintf(msg, sizeof(msg), "out of file descriptors (limit %llu)",
             (unsigned long long)fe->fd_limit);
    refuse_fd(fe, fd, LOKI_STATUS_OVERLOADED, msg);
}

static void on_listen_io(uv_poll_t *p, int status, int events);

static void on_accept_resume(uv_timer_t *t)
{
    struct loki_frontend *fe = t->data;
    fe->paused = false;
    if (fe->reserve_fd < 0)
        fe->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fe->listening)
        uv_poll_start(&fe->lpoll, UV_READABLE, on_listen_io);
}

/* Stop accepting for ACCEPT_PAUSE_MS: the listener stays readable, so polling would spin. */
static void accept_pause(struct loki_frontend *fe)
{
    if (fe->paused || !fe->listening)
        return;
    fe->paused = true;
    uv_poll_stop(&fe->lpoll);
    uv_timer_start(&fe->pause_timer, on_accept_resume, ACCEPT_PAUSE_MS, 0);
}

/*
 * accept() failed with EMFILE/ENFILE: give up the reserve descriptor to accept and refuse,
 * with an error frame each, the connections waiting now (up to a batch), then pause.
 */
static void out_of_fds(struct loki_frontend *fe, int err)
{
    note_fd_shortage(fe, err);
    for (int k = 0; k < ACCEPT_BATCH && fe->reserve_fd >= 0; k++) {
        close(fe->reserve_fd);
        int fd = accept4(fe->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        int e = errno;
        if (fd >= 0) {
            if (k > 0)
                STAT_ADD(fe, fd_exhausted, 1);
            refuse_no_fds(fe, fd);
        }
        fe->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC); /* -1: retried on resume */
        if (fd < 0 && e != EINTR && e != ECONNABORTED)
            break;
    }
    accept_pause(fe);
}

static bool uid_allowed(const struct loki_frontend *fe, unsigned uid)
{
    if (fe->cfg.n_uids == 0)
        return true;
    for (int i = 0; i < fe->cfg.n_uids && i < LOKI_MAX_UIDS; i++)
        if (fe->cfg.uids[i] == uid)
            return true;
    return false;
}

/* A pipe that never became a connection has closed: free what was allocated for it. */
static void on_stillborn_closed(uv_handle_t *h)
{
    conn_free(h->data);
}

/* Make an admitted socket a connection. Takes @fd on success only. Loop thread. */
static int conn_open(struct loki_frontend *fe, int fd, unsigned uid)
{
    struct loki_frontend_conn *c = calloc(1, sizeof(*c));
    uint32_t slots = 16;
    while (slots < 2 * fe->o.max_outstanding)
        slots <<= 1;
    if (c) {
        c->rbuf = malloc(RBUF_INIT);
        c->ids = malloc(slots * sizeof(*c->ids));
        c->used = calloc(slots, 1);
    }
    if (!c || !c->rbuf || !c->ids || !c->used || uv_pipe_init(fe->loop, &c->pipe, 0) < 0) {
        if (c)
            conn_free(c);
        return -ENOMEM;
    }
    if (uid_add(fe, uid) < 0) {
        c->pipe.data = c;
        uv_close((uv_handle_t *)&c->pipe, on_stillborn_closed);
        return -ENOMEM;
    }
    uv_timer_init(fe->loop, &c->timer);
    c->fe = fe;
    c->uid = uid;
    c->rcap = RBUF_INIT;
    c->mask = slots - 1;
    c->pipe.data = c->timer.data = c;
    c->refs = 1; /* A0: the handles; released when both have closed */
    c->handles = 2;
    c->open = true;
    c->next = fe->conns;
    if (fe->conns)
        fe->conns->prev = c;
    fe->conns = c;
    STAT_ADD(fe, connections, 1);
    int rc = uv_pipe_open(&c->pipe, fd);
    if (rc < 0) {
        conn_close(c); /* @fd stays the caller's */
        return rc;
    }
    STAT_ADD(fe, accepted, 1);
    if (uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) < 0)
        conn_close(c);
    else
        conn_rearm(c, false, true); /* idle from the start: a silent client is closed too */
    return 0;
}

/* Admit or refuse a freshly accepted socket. Takes @fd. Loop thread. */
static void admit(struct loki_frontend *fe, int fd)
{
    char msg[128];
    struct ucred cred = {0};
    socklen_t cl = sizeof(cred);
    if ((uint64_t)fd >= fe->fd_guard) {
        note_fd_shortage(fe, 0);
        refuse_no_fds(fe, fd);
        return;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
        close(fd);
        STAT_ADD(fe, refused, 1);
        return;
    }
    if (!uid_allowed(fe, cred.uid)) {
        snprintf(msg, sizeof(msg), "permission denied: uid %u is not allowed", cred.uid);
        refuse_fd(fe, fd, LOKI_STATUS_ERROR, msg);
        return;
    }
    if (__atomic_load_n(&fe->st.connections, __ATOMIC_RELAXED) >= fe->max_conns) {
        snprintf(msg, sizeof(msg), "too many connections (limit %u)", fe->max_conns);
        refuse_fd(fe, fd, LOKI_STATUS_OVERLOADED, msg);
        return;
    }
    if (uid_conns(fe, cred.uid) >= fe->max_conns_uid) {
        snprintf(msg, sizeof(msg), "too many connections from uid %u (limit %u)", cred.uid,
                 fe->max_conns_uid);
        refuse_fd(fe, fd, LOKI_STATUS_OVERLOADED, msg);
        return;
    }
    if (conn_open(fe, fd, cred.uid) < 0)
        refuse_fd(fe, fd, LOKI_STATUS_ERROR, "server out of memory");
}

static void on_listen_io(uv_poll_t *p, int status, int events)
{
    struct loki_frontend *fe = p->data;
    (void)events;
    if (status < 0) {
        accept_pause(fe);
        return;
    }
    for (int k = 0; k < ACCEPT_BATCH && fe->listening && !fe->paused; k++) {
        int fd = accept4(fe->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            admit(fe, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        if (errno == EMFILE || errno == ENFILE)
            out_of_fds(fe, errno);
        else
            accept_pause(fe); /* ENOBUFS, ENOMEM...: try again shortly, do not spin */
        return;
    }
}

/* ---- lifecycle ------------------------------------------------------------ */

int loki_frontend_create(uv_loop_t *loop, const struct loki_frontend_opts *o,
                         struct loki_frontend **out)
{
    if (!loop || !o || !o->cfg || !o->on_request || o->n_pipelines < 0 ||
        o->n_pipelines > LOKI_PROTO_MAX_PIPELINES || (o->n_pipelines && !o->pipelines))
        return -EINVAL;
    if (o->cfg->max_payload == 0 || o->cfg->max_payload > UINT32_MAX - LOKI_PROTO_OVERHEAD)
        return -EINVAL;
    for (int i = 0; i < o->n_pipelines; i++)
        if (!o->pipelines[i] || !*o->pipelines[i] || strlen(o->pipelines[i]) > LOKI_PROTO_NAME_MAX)
            return -EINVAL;
    struct loki_frontend *fe = calloc(1, sizeof(*fe));
    if (!fe)
        return -ENOMEM;
    fe->loop = loop;
    fe->o = *o;
    fe->cfg = *o->cfg;
    fe->o.cfg = &fe->cfg;
    fe->o.pipelines = NULL;
    for (int i = 0; i < o->n_pipelines; i++)
        snprintf(fe->names[i], sizeof(fe->names[i]), "%s", o->pipelines[i]);
    if (!fe->o.max_outstanding)
        fe->o.max_outstanding = 1024;
    if (fe->o.max_outstanding > (1u << 24))
        fe->o.max_outstanding = 1u << 24;
    if (!fe->o.frame_timeout_ms)
        fe->o.frame_timeout_ms = 10000;
    if (!fe->cfg.max_inflight)
        fe->cfg.max_inflight = 65536;
    if (!fe->cfg.mode)
        fe->cfg.mode = 0660;
    if (!(fe->o.retry_after_ms > 0))
        fe->o.retry_after_ms = 50;
    if (!fe->o.server_name)
        fe->o.server_name = "lokid";
    fe->max_body = fe->cfg.max_payload + LOKI_PROTO_OVERHEAD;
    if (!fe->o.max_write_queue)
        fe->o.max_write_queue = (4u << 20) + (uint64_t)fe->max_body + LOKI_PROTO_HDR;
    fe->idle_ms = IDLE_DEFAULT_MS;
    if (fe->cfg.idle_timeout_s > 0)
        fe->idle_ms = fe->cfg.idle_timeout_s >= 4e6 ? 4000000000u
                      : fe->cfg.idle_timeout_s < 1e-3
                          ? 1
                          : (uint32_t)(fe->cfg.idle_timeout_s * 1000 + 0.5);
    fe->lfd = fe->reserve_fd = -1;
    fe->uid_mask = 63;
    fe->uidt = calloc(fe->uid_mask + 1, sizeof(*fe->uidt));
    if (!fe->uidt) {
        free(fe);
        return -ENOMEM;
    }
    pthread_mutex_init(&fe->qlock, NULL);
    fe->loop_thread = uv_thread_self();
    *out = fe;
    return 0;
}

static void on_fe_handle_closed(uv_handle_t *h)
{
    struct loki_frontend *fe = h->data;
    fe->open_handles--;
}

/* Remove the socket file if it is still the one we bound. */
static void unlink_ours(struct loki_frontend *fe)
{
    struct stat st;
    if (lstat(fe->cfg.socket_path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == fe->sock_dev &&
        st.st_ino == fe->sock_ino)
        unlink(fe->cfg.socket_path);
}

/* Stop accepting for good: close the listening socket and the pause timer. */
static void close_listener(struct loki_frontend *fe)
{
    if (!fe->listening)
        return;
    fe->listening = false;
    unlink_ours(fe);
    uv_close((uv_handle_t *)&fe->lpoll, on_fe_handle_closed); /* stops polling lfd now */
    close(fe->lfd);
    fe->lfd = -1;
    uv_close((uv_handle_t *)&fe->pause_timer, on_fe_handle_closed);
    if (fe->reserve_fd >= 0)
        close(fe->reserve_fd);
    fe->reserve_fd = -1;
}

/* Size the caps that default from RLIMIT_NOFILE (see the essay). */
static void size_caps(struct loki_frontend *fe)
{
    struct rlimit rl;
    fe->fd_limit = UINT32_MAX;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < UINT32_MAX)
        fe->fd_limit = rl.rlim_cur;
    uint64_t spare = fe->fd_limit / 8 < FD_SPARE ? fe->fd_limit / 8 : FD_SPARE;
    fe->fd_guard = fe->fd_limit - spare;
    uint64_t half = fe->fd_limit / 2;
    fe->max_conns = fe->cfg.max_conns       ? fe->cfg.max_conns
                    : half < 1              ? 1
                    : half > AUTO_MAX_CONNS ? AUTO_MAX_CONNS
                                            : (uint32_t)half;
    fe->max_conns_uid = fe->cfg.max_conns_per_uid ? fe->cfg.max_conns_per_uid : fe->max_conns / 2;
    if (fe->max_conns_uid > fe->max_conns)
        fe->max_conns_uid = fe->max_conns;
    if (fe->max_conns_uid < 1)
        fe->max_conns_uid = 1;
}

/* A listening Unix socket at @path with @mode; returns the descriptor or a negative errno. */
static int listen_at(const char *path, unsigned mode, struct stat *st)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int e;
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
        goto close_fd;
    /* no connection completes before listen(), so chmod here leaves no window */
    if (chmod(path, mode & 07777) < 0 || lstat(path, st) < 0 || listen(fd, SOMAXCONN) < 0)
        goto unlink_path;
    return fd;
unlink_path:
    e = errno;
    unlink(path);
    errno = e;
close_fd:
    e = errno;
    close(fd);
    return -e;
}

/* Unlink @path if it is a socket nobody listens on. */
static int clear_stale(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return -EEXIST;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    int rc = connect(fd, (struct sockaddr *)&a, sizeof(a));
    int e = errno;
    close(fd);
    if (rc == 0)
        return -EADDRINUSE;
    if (e != ECONNREFUSED)
        return -e;
    if (unlink(path) < 0 && errno != ENOENT)
        return -errno;
    return 0;
}

int loki_frontend_start(struct loki_frontend *fe)
{
    const char *path = fe->cfg.socket_path;
    struct stat st;
    if (fe->started)
        return -EALREADY;
    if (!*path || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return -ENAMETOOLONG;
    fe->loop_thread = uv_thread_self();
    size_caps(fe);
    int rc = clear_stale(path);
    if (rc < 0)
        return rc;
    rc = uv_async_init(fe->loop, &fe->async, on_async);
    if (rc < 0)
        return rc;
    fe->async.data = fe;
    fe->open_handles++;
    fe->lfd = listen_at(path, fe->cfg.mode, &st);
    if (fe->lfd < 0) {
        rc = fe->lfd;
        fe->lfd = -1;
        goto close_async;
    }
    fe->sock_dev = st.st_dev;
    fe->sock_ino = st.st_ino;
    rc = uv_poll_init(fe->loop, &fe->lpoll, fe->lfd);
    if (rc < 0) {
        unlink_ours(fe);
        close(fe->lfd);
        fe->lfd = -1;
        goto close_async;
    }
    fe->lpoll.data = fe;
    uv_timer_init(fe->loop, &fe->pause_timer);
    fe->pause_timer.data = fe;
    fe->open_handles += 2;
    fe->listening = true;
    fe->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC); /* -1 tolerated: pauses only */
    rc = uv_poll_start(&fe->lpoll, UV_READABLE, on_listen_io);
    if (rc < 0) {
        close_listener(fe);
        goto close_async;
    }
    fe->started = true;
    return 0;
close_async:
    pthread_mutex_lock(&fe->qlock);
    fe->qclosed = true;
    pthread_mutex_unlock(&fe->qlock);
    uv_close((uv_handle_t *)&fe->async, on_fe_handle_closed);
    fe->stopped = true;
    return rc;
}

static void drain_check(struct loki_frontend *fe)
{
    if (fe->draining && fe->drained_cb &&
        __atomic_load_n(&fe->st.inflight, __ATOMIC_RELAXED) == 0) {
        loki_frontend_drained_cb cb = fe->drained_cb;
        fe->drained_cb = NULL;
        cb(fe->drained_ctx);
    }
}

void loki_frontend_drain(struct loki_frontend *fe, loki_frontend_drained_cb cb, void *ctx)
{
    fe->draining = true;
    close_listener(fe);
    fe->drained_cb = cb;
    fe->drained_ctx = ctx;
    drain_check(fe);
}

void loki_frontend_stop(struct loki_frontend *fe)
{
    if (fe->stopped)
        return;
    fe->stopped = true;
    fe->draining = true;
    if (!fe->started)
        return; /* a failed start cleaned up after itself */
    close_listener(fe);
    pthread_mutex_lock(&fe->qlock);
    fe->qclosed = true;
    struct node *n = fe->qhead;
    fe->qhead = fe->qtail = NULL;
    pthread_mutex_unlock(&fe->qlock);
    for (struct loki_frontend_conn *c = fe->conns; c; c = c->next)
        conn_close(c);
    while (n) { /* releases only: every connection is closed now */
        struct node *next = n->next;
        deliver_node(fe, n);
        n = next;
    }
    uv_close((uv_handle_t *)&fe->async, on_fe_handle_closed);
}

void loki_frontend_destroy(struct loki_frontend *fe)
{
    if (!fe)
        return;
    if (fe->started && !fe->stopped)
        loki_frontend_stop(fe);
    /* handles close asynchronously: finish them if the owner has not run the loop */
    while (fe->open_handles > 0 || (fe->conns && fe->conns->handles > 0)) {
        bool pending = fe->open_handles > 0;
        for (struct loki_frontend_conn *c = fe->conns; c; c = c->next)
            pending |= c->handles > 0;
        if (!pending)
            break;
        uv_run(fe->loop, UV_RUN_NOWAIT);
    }
    while (fe->conns) {
        struct loki_frontend_conn *c = fe->conns;
        fe->conns = c->next;
        conn_free(c);
    }
    for (int k = 0; k < NODE_CLASSES; k++)
        while (fe->cache[k]) {
            struct node *n = fe->cache[k];
            fe->cache[k] = n->next;
            free(n);
        }
    pthread_mutex_destroy(&fe->qlock);
    free(fe->uidt);
    free(fe);
}

void loki_frontend_stats(const struct loki_frontend *fe, struct loki_frontend_stats *out)
{
    const uint64_t *src = (const uint64_t *)&fe->st;
    uint64_t *dst = (uint64_t *)out;
    for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}
