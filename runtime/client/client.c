/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Client library: one blocking Unix stream socket, one reader thread.
 *
 *   submitters ──lock: take slot──▶ sendmsg (under wlock: header+fields, then payload,
 *                                   one frame, no copy of the payload)
 *   reader     ──poll(fd, eventfd, next deadline)──▶ frame ▶ decode ▶ lock: find slot ▶ cb
 *
 * Request ids name a slot: id = generation << 32 | slot index. A slot is
 * completed by whoever removes it from the table under @lock (the reader for
 * a reply or a timeout, the reader's exit path for a closed connection), and
 * the callback runs after the lock is released; a reply whose slot is free or
 * carries another generation is late and dropped, so a timed-out request can
 * never complete twice. Timeouts live in a binary min-heap of slots; the reader
 * sleeps in poll() until the earliest one, and a submitter whose deadline is
 * earlier than the reader's current wake-up pokes the eventfd. A send that
 * fails half way breaks the framing, so it shuts the socket down: the reader
 * then sees EOF and completes everything pending with LOKI_STATUS_CLOSED.
 *
 * Frames submitted by completion callbacks while the reader dispatches one
 * recv()'s replies are not sent one by one: they are copied into the reader's
 * out buffer (small frames only; a larger one first sends what is buffered,
 * then goes as usual) and sent with one sendmsg once the batch is dispatched,
 * the way a pipelining client writes. A send that fails then shuts the socket
 * down as above, so those requests complete with LOKI_STATUS_CLOSED.
 */
#include "client_internal.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "loki/clock.h"
#include "loki/error.h"

#define RBUF_INIT (64 * 1024)
#define BATCH 64
#define OBUF_SIZE (64 * 1024) /* the reader's out buffer */
#define CORK_MAX (8 * 1024)   /* frames up to this size are buffered there */

/* ---- deadline heap (under lock) ----------------------------------------------- */

static bool heap_less(struct loki_client *c, uint32_t a, uint32_t b)
{
    return c->slots[c->heap[a]].deadline < c->slots[c->heap[b]].deadline;
}

static void heap_swap(struct loki_client *c, uint32_t a, uint32_t b)
{
    uint32_t t = c->heap[a];
    c->heap[a] = c->heap[b];
    c->heap[b] = t;
    c->slots[c->heap[a]].heap = (int)a;
    c->slots[c->heap[b]].heap = (int)b;
}

static void heap_fix(struct loki_client *c, uint32_t i)
{
    while (i > 0 && heap_less(c, i, (i - 1) / 2)) {
        heap_swap(c, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < c->heap_n && heap_less(c, l, m))
            m = l;
        if (r < c->heap_n && heap_less(c, r, m))
            m = r;
        if (m == i)
            return;
        heap_swap(c, i, m);
        i = m;
    }
}

static void heap_push(struct loki_client *c, uint32_t idx)
{
    c->heap[c->heap_n] = idx;
    c->slots[idx].heap = (int)c->heap_n;
    heap_fix(c, c->heap_n++);
}

static void heap_remove(struct loki_client *c, uint32_t idx)
{
    int h = c->slots[idx].heap;
    if (h < 0)
        return;
    c->slots[idx].heap = -1;
    if ((uint32_t)h != --c->heap_n) {
        c->heap[h] = c->heap[c->heap_n];
        c->slots[c->heap[h]].heap = h;
        heap_fix(c, (uint32_t)h);
    }
}

/* ---- slots (under lock) -------------------------------------------------------- */

static uint64_t slot_id(struct loki_client *c, uint32_t idx)
{
    return (uint64_t)c->slots[idx].gen << 32 | idx;
}

/* Remove slot @idx from the table; returns what its completion needs. */
static struct done slot_take(struct loki_client *c, uint32_t idx)
{
    struct slot *s = &c->slots[idx];
    struct done d = {s->cb, s->ctx, slot_id(c, idx)};
    heap_remove(c, idx);
    s->used = false;
    s->cb = NULL;
    s->next_free = c->free_head;
    c->free_head = idx;
    c->outstanding--;
    return d;
}

static void wake_reader(struct loki_client *c)
{
    uint64_t one = 1;
    ssize_t n = write(c->evfd, &one, sizeof(one));
    (void)n; /* EAGAIN: the counter is already non-zero, the reader will wake */
}

static void complete_local(struct done *d, enum loki_status st, const char *msg)
{
    struct loki_reply r;
    loki_reply_init(&r);
    r.has_id = true;
    r.id = d->id;
    r.status = st;
    r.error = loki_bytes_str(msg);
    d->cb(d->ctx, &r);
}

/* ---- sending ------------------------------------------------------------------- */

static int send_all(struct loki_client *c, struct iovec *iov, int n)
{
    while (n > 0) {
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t k = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        while (n > 0 && (size_t)k >= iov->iov_len) {
            k -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + k;
            iov->iov_len -= (size_t)k;
        }
    }
    return 0;
}

/* The client whose reader is dispatching replies on this thread: its callbacks' frames are
 * buffered. Thread-local, so no other thread ever sees it set. */
static __thread struct loki_client *corked;

/* Send the reader's buffered frames (reader thread). A failure ends the stream as a failed
 * send does: the requests in it complete with LOKI_STATUS_CLOSED. */
static void uncork(struct loki_client *c)
{
    if (!c->olen)
        return;
    struct iovec iov = {c->obuf, c->olen};
    pthread_mutex_lock(&c->wlock);
    int rc = send_all(c, &iov, 1);
    pthread_mutex_unlock(&c->wlock);
    c->olen = 0;
    if (rc < 0)
        shutdown(c->fd, SHUT_WR);
}

/* Send @iov[0..n) as one frame: buffered while the reader dispatches, else at once. */
static int send_frame(struct loki_client *c, struct iovec *iov, int n)
{
    if (corked == c) {
        size_t len = 0;
        for (int i = 0; i < n; i++)
            len += iov[i].iov_len;
        if (len <= CORK_MAX) {
            if (c->olen + len > OBUF_SIZE)
                uncork(c);
            for (int i = 0; i < n; i++) {
                memcpy(c->obuf + c->olen, iov[i].iov_base, iov[i].iov_len);
                c->olen += iov[i].iov_len;
            }
            return 0;
        }
        uncork(c); /* a big frame goes now, after what is buffered */
    }
    pthread_mutex_lock(&c->wlock);
    int rc = send_all(c, iov, n);
    pthread_mutex_unlock(&c->wlock);
    return rc;
}

int loki_client_cancel(struct loki_client *c, uint64_t id)
{
    uint8_t frame[64];
    struct loki_request rq;
    if (!c)
        return -EINVAL;
    loki_request_init(&rq);
    rq.type = LOKI_MSG_CANCEL;
    rq.has_id = true;
    rq.id = id;
    ssize_t n = loki_proto_encode_request_head(frame, sizeof(frame), &rq);
    if (n < 0)
        return (int)n;
    pthread_mutex_lock(&c->lock);
    bool dead = c->dead || c->closing;
    pthread_mutex_unlock(&c->lock);
    if (dead)
        return -EPIPE;
    struct iovec iov = {frame, (size_t)n};
    int rc = send_frame(c, &iov, 1); /* after the request it names, if that is buffered */
    return rc < 0 ? rc : 0;
}

int loki__client_submit(struct loki_client *c, struct loki_request *rq, double timeout_ms,
                        loki_client_cb cb, void *ctx, uint64_t *id_out)
{
    uint8_t head[512];
    if (!cb)
        return -EINVAL;
    if (timeout_ms == 0)
        timeout_ms = c->default_timeout_ms;
    /* a timeout past 2^62 ns (146 years) is none: (uint64_t) of a double >= 2^64 is undefined */
    uint64_t deadline = timeout_ms > 0 && timeout_ms * 1e6 < 0x1p62
                            ? loki_now_ns() + (uint64_t)(timeout_ms * 1e6)
                            : 0;

    pthread_mutex_lock(&c->lock);
    if (c->dead || c->closing) {
        pthread_mutex_unlock(&c->lock);
        return -EPIPE;
    }
    if (c->outstanding >= c->limit || c->free_head == UINT32_MAX) {
        pthread_mutex_unlock(&c->lock);
        return -EAGAIN;
    }
    uint32_t idx = c->free_head;
    struct slot *s = &c->slots[idx];
    c->free_head = s->next_free;
    s->gen++;
    s->used = true;
    s->cb = cb;
    s->ctx = ctx;
    s->deadline = deadline;
    s->heap = -1;
    c->outstanding++;
    c->st.submitted++;
    bool wake = false;
    if (deadline) {
        heap_push(c, idx);
        wake = deadline < c->wake_at;
    }
    uint32_t gen = s->gen;
    rq->has_id = true;
    rq->id = slot_id(c, idx);
    pthread_mutex_unlock(&c->lock);
    if (id_out)
        *id_out = rq->id;
    if (wake)
        wake_reader(c);

    ssize_t hl = loki_proto_encode_request_head(head, sizeof(head), rq);
    int rc = (int)hl;
    if (hl > 0) {
        struct iovec iov[2] = {{head, (size_t)hl}, {(void *)rq->payload.ptr, rq->payload.len}};
        rc = send_frame(c, iov, rq->type == LOKI_MSG_INFER && rq->payload.len ? 2 : 1);
        if (rc < 0)
            shutdown(c->fd, SHUT_WR); /* framing may be broken: end it; the reader still
                                         reads what the server said, then EOF */
    }
    if (rc >= 0)
        return 0;
    /* not sent: withdraw the slot unless the reader already completed it (then cb ran) */
    pthread_mutex_lock(&c->lock);
    bool ours = s->used && s->gen == gen;
    if (ours) {
        slot_take(c, idx);
        c->st.submitted--;
    }
    pthread_mutex_unlock(&c->lock);
    return ours ? (rc == -ENOBUFS ? -EINVAL : rc == -EPIPE || rc == -ECONNRESET ? -EPIPE : rc) : 0;
}

int loki_client_submit(struct loki_client *c, const struct loki_client_req *req, loki_client_cb cb,
                       void *ctx, uint64_t *id)
{
    if (!c || !req || !req->pipeline || (!req->payload && req->payload_len))
        return -EINVAL;
    size_t pl = strlen(req->pipeline);
    if (pl == 0)
        return -EINVAL;
    if (pl > LOKI_PROTO_NAME_MAX)
        return -ENAMETOOLONG;
    if (c->max_payload && req->payload_len > c->max_payload)
        return LOKI_ETOOBIG;
    struct loki_request rq;
    loki_request_init(&rq);
    rq.type = LOKI_MSG_INFER;
    rq.pipeline = loki_bytes_str(req->pipeline);
    rq.payload.ptr = req->payload;
    rq.payload.len = req->payload_len;
    if (req->deadline_ms > 0) {
        rq.has_deadline = true;
        rq.deadline_ms = req->deadline_ms;
    }
    rq.has_priority = req->has_priority;
    rq.priority = req->priority;
    return loki__client_submit(c, &rq, req->timeout_ms, cb, ctx, id);
}

int loki_client_request(struct loki_client *c, enum loki_msg_type type, double timeout_ms,
                        loki_client_cb cb, void *ctx, uint64_t *id)
{
    if (!c || type < LOKI_MSG_HELLO || type > LOKI_MSG_PING)
        return -EINVAL;
    struct loki_request rq;
    loki_request_init(&rq);
    rq.type = type;
    rq.version = LOKI_PROTO_VERSION;
    return loki__client_submit(c, &rq, timeout_ms, cb, ctx, id);
}

/* ---- reader ---------------------------------------------------------------------- */

static void handle_reply(struct loki_client *c, const uint8_t *body, uint32_t len)
{
    char err[LOKI_PROTO_ERR_MAX];
    struct loki_reply *r = &c->reply;
    r->node_buf = c->nodes;
    r->node_cap = c->node_cap;
    int drc = loki_proto_decode_reply(body, len, r, err, sizeof(err));
    if (drc >= 0 && r->n_nodes > c->node_cap) {
        /* a bigger tree than any before: grow the room and decode again */
        struct loki_reply_node *n = realloc(c->nodes, sizeof(*n) * r->n_nodes);
        if (n) {
            c->nodes = n;
            c->node_cap = r->n_nodes;
            r->node_buf = c->nodes;
            r->node_cap = c->node_cap;
            drc = loki_proto_decode_reply(body, len, r, err, sizeof(err));
        } else {
            r->n_nodes = c->node_cap; /* the callback sees as much of it as fits */
        }
    }
    if (drc < 0) {
        pthread_mutex_lock(&c->lock);
        c->st.proto_errors++;
        pthread_mutex_unlock(&c->lock);
        return;
    }
    if (!r->has_id) { /* about the connection: keep the reason for the CLOSED completions */
        pthread_mutex_lock(&c->lock);
        snprintf(c->last_error, sizeof(c->last_error), "%s: %.*s", loki_status_name(r->status),
                 (int)r->error.len, (const char *)r->error.ptr);
        pthread_mutex_unlock(&c->lock);
        return;
    }
    uint32_t idx = (uint32_t)r->id;
    struct done d = {NULL, NULL, 0};
    pthread_mutex_lock(&c->lock);
    if (idx < c->nslots && c->slots[idx].used && c->slots[idx].gen == (uint32_t)(r->id >> 32)) {
        d = slot_take(c, idx);
        c->st.completed++;
    } else {
        c->st.late_replies++;
    }
    pthread_mutex_unlock(&c->lock);
    if (d.cb)
        d.cb(d.ctx, r);
}

/* Expire due requests; returns the poll timeout in ms (-1: none). */
static int expire(struct loki_client *c)
{
    struct done due[BATCH];
    int n;
    int timeout;
    do {
        uint64_t now = loki_now_ns();
        n = 0;
        pthread_mutex_lock(&c->lock);
        while (n < BATCH && c->heap_n && c->slots[c->heap[0]].deadline <= now) {
            due[n++] = slot_take(c, c->heap[0]);
            c->st.timeouts++;
            c->st.completed++;
        }
        if (c->heap_n) {
            uint64_t dl = c->slots[c->heap[0]].deadline;
            c->wake_at = dl;
            timeout = dl <= now ? 0 : (int)((dl - now + 999999) / 1000000);
        } else {
            c->wake_at = UINT64_MAX;
            timeout = -1;
        }
        pthread_mutex_unlock(&c->lock);
        for (int i = 0; i < n; i++)
            complete_local(&due[i], LOKI_STATUS_TIMEOUT, "timed out waiting for the reply");
    } while (n == BATCH);
    return timeout;
}

/* Read what is available and dispatch complete frames. Returns false when the stream ends. */
static bool read_some(struct loki_client *c)
{
    if (c->rcap - c->rlen < RBUF_INIT / 4) {
        size_t max = (size_t)c->max_reply + LOKI_PROTO_HDR;
        size_t cap = c->rcap * 2 < max ? c->rcap * 2 : max;
        if (cap > c->rcap) {
            uint8_t *p = realloc(c->rbuf, cap);
            if (!p)
                return false;
            c->rbuf = p;
            c->rcap = cap;
        }
    }
    if (c->rlen == c->rcap)
        return false; /* cannot happen with a frame <= max_reply; defensive */
    ssize_t k = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
    if (k < 0)
        return errno == EINTR || errno == EAGAIN;
    if (k == 0)
        return false;
    c->rlen += (size_t)k;
    size_t off = 0;
    corked = c; /* what the callbacks submit goes in one send, after the batch */
    for (;;) {
        const uint8_t *body;
        uint32_t blen;
        ssize_t n = loki_proto_frame_next(c->rbuf + off, c->rlen - off, c->max_reply, &body, &blen);
        if (n == 0)
            break;
        if (n < 0) {
            pthread_mutex_lock(&c->lock);
            c->st.proto_errors++;
            snprintf(c->last_error, sizeof(c->last_error), "reply frame of %u bytes too big", blen);
            pthread_mutex_unlock(&c->lock);
            corked = NULL;
            uncork(c);
            return false;
        }
        handle_reply(c, body, blen);
        off += (size_t)n;
    }
    corked = NULL;
    uncork(c);
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= off;
    return true;
}

static void fail_all(struct loki_client *c)
{
    char msg[LOKI_PROTO_ERR_MAX + 32];
    for (;;) {
        struct done due[BATCH];
        int n = 0;
        pthread_mutex_lock(&c->lock);
        c->dead = true;
        snprintf(msg, sizeof(msg), "%s",
                 c->last_error[0] ? c->last_error
                 : c->closing     ? "client closed"
                                  : "connection closed");
        for (uint32_t i = 0; i < c->nslots && n < BATCH; i++)
            if (c->slots[i].used) {
                due[n++] = slot_take(c, i);
                c->st.completed++;
            }
        pthread_mutex_unlock(&c->lock);
        for (int i = 0; i < n; i++)
            complete_local(&due[i], LOKI_STATUS_CLOSED, msg);
        if (n < BATCH)
            return;
    }
}

static void *reader_main(void *arg)
{
    struct loki_client *c = arg;
    for (;;) {
        int timeout = expire(c);
        struct pollfd p[2] = {{c->fd, POLLIN, 0}, {c->evfd, POLLIN, 0}};
        int k = poll(p, 2, timeout);
        if (k < 0 && errno != EINTR)
            break;
        if (k <= 0)
            continue;
        if (p[1].revents) {
            uint64_t v;
            ssize_t n = read(c->evfd, &v, sizeof(v));
            (void)n;
            pthread_mutex_lock(&c->lock);
            bool closing = c->closing;
            pthread_mutex_unlock(&c->lock);
            if (closing)
                break;
        }
        if (p[0].revents && !read_some(c))
            break;
    }
    fail_all(c);
    return NULL;
}

bool loki__client_on_reader(struct loki_client *c)
{
    return c->reader_started && pthread_equal(pthread_self(), c->reader);
}

/* ---- lifecycle ------------------------------------------------------------------- */

static void client_free(struct loki_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    if (c->evfd >= 0)
        close(c->evfd);
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->wlock);
    free(c->slots);
    free(c->nodes);
    free(c->heap);
    free(c->rbuf);
    free(c->obuf);
    free(c);
}

int loki_client_connect(const char *path, const struct loki_client_opts *opts,
                        struct loki_client **out)
{
    struct loki_client_opts o = {0};
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int rc;
    if (!path || !out)
        return -EINVAL;
    if (opts)
        o = *opts;
    if (strlen(path) >= sizeof(a.sun_path))
        return -ENAMETOOLONG;
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    if (!o.max_outstanding)
        o.max_outstanding = 1024;
    if (o.max_outstanding > (1u << 24))
        o.max_outstanding = 1u << 24;
    if (!o.max_reply_bytes)
        o.max_reply_bytes = 64u << 20;
    if (!(o.connect_timeout_ms > 0))
        o.connect_timeout_ms = 5000;

    struct loki_client *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->fd = c->evfd = -1;
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->wlock, NULL);
    c->nslots = c->limit = o.max_outstanding;
    c->slots = calloc(c->nslots, sizeof(*c->slots));
    c->heap = calloc(c->nslots, sizeof(*c->heap));
    c->rcap = RBUF_INIT;
    c->rbuf = malloc(c->rcap);
    c->obuf = malloc(OBUF_SIZE);
    c->max_reply = o.max_reply_bytes;
    c->default_timeout_ms = o.default_timeout_ms;
    c->wake_at = UINT64_MAX;
    if (!c->slots || !c->heap || !c->rbuf || !c->obuf) {
        rc = -ENOMEM;
        goto free_client;
    }
    for (uint32_t i = 0; i < c->nslots; i++) {
        c->slots[i].heap = -1;
        c->slots[i].next_free = i + 1 < c->nslots ? i + 1 : UINT32_MAX;
    }
    c->free_head = 0;
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    c->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->fd < 0 || c->evfd < 0) {
        rc = -errno;
        goto free_client;
    }
    if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        rc = -errno;
        goto free_client;
    }
    rc = -pthread_create(&c->reader, NULL, reader_main, c);
    if (rc < 0)
        goto free_client;
    c->reader_started = true;
    if (!o.no_hello) {
        struct loki_reply r;
        char err[LOKI_PROTO_ERR_MAX];
        loki_reply_init(&r);
        rc = loki__client_ctl(c, LOKI_MSG_HELLO, o.connect_timeout_ms, &r, err, sizeof(err));
        if (rc == -EPIPE) {
            /* the server hung up: let the reader drain what it sent (a refusal says why) */
            pthread_join(c->reader, NULL);
            c->reader_started = false;
        }
        if (rc == -EPIPE || (rc == 0 && r.status != LOKI_STATUS_OK)) {
            char why[LOKI_PROTO_ERR_MAX];
            pthread_mutex_lock(&c->lock);
            snprintf(why, sizeof(why), "%s", c->last_error);
            pthread_mutex_unlock(&c->lock);
            rc = strstr(why, "permission denied") || strstr(err, "permission denied") ? -EACCES
                 : rc == -EPIPE                                                       ? -ECONNRESET
                                                                                      : LOKI_EPROTO;
        }
        if (rc < 0) {
            loki_client_close(c);
            return rc;
        }
        pthread_mutex_lock(&c->lock);
        c->max_payload = r.max_payload;
        if (r.max_outstanding && r.max_outstanding < c->limit)
            c->limit = r.max_outstanding;
        pthread_mutex_unlock(&c->lock);
    }
    *out = c;
    return 0;
free_client:
    client_free(c);
    return rc;
}

int loki_client_close(struct loki_client *c)
{
    if (!c)
        return 0;
    if (loki__client_on_reader(c))
        return -EDEADLK;
    pthread_mutex_lock(&c->lock);
    c->closing = true;
    pthread_mutex_unlock(&c->lock);
    shutdown(c->fd, SHUT_RDWR); /* unblocks a submitter stuck in sendmsg */
    wake_reader(c);
    if (c->reader_started)
        pthread_join(c->reader, NULL); /* the reader completes all pending on its way out */
    else
        fail_all(c);
    client_free(c);
    return 0;
}

uint32_t loki_client_max_payload(const struct loki_client *c)
{
    return c->max_payload;
}

int loki_client_pipelines(const struct loki_client *c, const char **names, int max)
{
    int n = c->n_pipelines < max ? c->n_pipelines : max;
    for (int i = 0; i < n; i++)
        names[i] = c->pipelines[i];
    return n;
}

void loki_client_stats(struct loki_client *c, struct loki_client_stats *out)
{
    pthread_mutex_lock(&c->lock);
    *out = c->st;
    out->outstanding = c->outstanding;
    pthread_mutex_unlock(&c->lock);
}
