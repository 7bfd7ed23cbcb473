/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One frontend connection (see the essay in frontend.c): its birth, reference
 * count, one timer (FRAME, IDLE, LINGER) and close; the in-flight id set; and
 * reading: the receive buffer, framing, decoding and the requests answered
 * here (hello, status, metrics, ping) or handed to the owner (infer).
 */
#include "frontend_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "loki/compiler.h"

#define RBUF_KEEP (1024 * 1024) /* a read buffer larger than this shrinks once its frame is in */

/* ---- in-flight id set ---------------------------------------------------- */

static uint32_t id_hash(const struct loki_frontend_conn *c, uint64_t id)
{
    return (uint32_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & c->mask;
}

/* The slot of @id, or -1. */
static long ids_find(const struct loki_frontend_conn *c, uint64_t id)
{
    for (uint32_t i = id_hash(c, id);; i = (i + 1) & c->mask) {
        if (!c->used[i])
            return -1;
        if (c->ids[i] == id)
            return i;
    }
}

static bool ids_has(const struct loki_frontend_conn *c, uint64_t id)
{
    return ids_find(c, id) >= 0;
}

bool loki_frontend_conn_tag(struct loki_frontend_conn *c, uint64_t id, uint64_t tag)
{
    long i = ids_find(c, id);
    if (i < 0)
        return false;
    c->tags[i] = tag;
    return true;
}

static void ids_add(struct loki_frontend_conn *c, uint64_t id)
{
    uint32_t i = id_hash(c, id);
    while (c->used[i])
        i = (i + 1) & c->mask;
    c->used[i] = 1;
    c->ids[i] = id;
    c->tags[i] = 0;
    c->n_inflight++;
}

bool loki__frontend_ids_del(struct loki_frontend_conn *c, uint64_t id)
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
            c->tags[i] = c->tags[j];
            i = j;
        }
    }
    c->used[i] = 0;
    c->n_inflight--;
    return true;
}

/* ---- closing ------------------------------------------------------------ */

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct loki_frontend_conn *c = req->data;
    loki__frontend_conn_close(c);
    loki__frontend_conn_unref(c); /* R3: pairs with A3 in conn_shutdown() */
}

/* Run @c's one timer for @m (T_OFF stops it). Loop thread. */
static void conn_timer(struct loki_frontend_conn *c, enum tmode m, uint64_t ms);

/*
 * Stop reading; once the queries already accepted are answered (loki__frontend_deliver_node()
 * calls loki__frontend_conn_finish() for the last one), let the queued writes finish, then close.
 * Loop thread.
 */
static void conn_shutdown(struct loki_frontend_conn *c)
{
    if (!c->open || c->shutting)
        return;
    c->shutting = true;
    uv_read_stop((uv_stream_t *)&c->pipe);
    conn_timer(c, T_OFF, 0);
    if (c->n_inflight == 0)
        loki__frontend_conn_finish(c);
}

/* Half-close after the queued writes, then close; LINGER bounds a peer that does not read. */
void loki__frontend_conn_finish(struct loki_frontend_conn *c)
{
    if (!c->open || c->fin)
        return;
    loki__frontend_conn_flush(c); /* the frames queued this turn go before the shutdown */
    c->fin = true;
    c->sreq.data = c;
    c->refs++; /* A3 */
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->pipe, on_shutdown) < 0) {
        loki__frontend_conn_close(c);
        loki__frontend_conn_unref(c); /* R3 on failure */
        return;
    }
    conn_timer(c, T_LINGER, c->fe->o.frame_timeout_ms);
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
    loki__frontend_send_local(c, &r);
    if (then_close)
        conn_shutdown(c);
}

/* ---- connections ------------------------------------------------------------ */

void loki__frontend_conn_free(struct loki_frontend_conn *c)
{
    free(c->rbuf);
    free(c->ids);
    free(c->tags);
    free(c->used);
    free(c);
}

void loki__frontend_conn_unref(struct loki_frontend_conn *c)
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
    loki__frontend_conn_free(c);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct loki_frontend_conn *c = h->data;
    if (--c->handles == 0)
        loki__frontend_conn_unref(c); /* R0: pairs with A0 in loki__frontend_conn_open() */
}

void loki__frontend_conn_close(struct loki_frontend_conn *c)
{
    if (!c->open)
        return;
    /* frames queued this loop turn are written as they were before writes were batched: what
     * the socket takes now goes out (a drain's last answers), the rest is cancelled below */
    loki__frontend_conn_flush(c);
    if (!c->open)
        return; /* the flush failed and closed it */
    __atomic_store_n(&c->open, false, __ATOMIC_RELEASE);
    loki__frontend_rb_release(c);
    STAT_SUB(c->fe, connections, 1);
    loki__frontend_uid_del(c->fe, c->uid);
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
            loki__frontend_conn_rearm(c, false, false);
            break;
        }
        STAT_ADD(fe, idle_timeouts, 1);
        snprintf(msg, sizeof(msg), "idle timeout: no request for %u ms", fe->idle_ms);
        send_error(c, LOKI_MSG_NONE, false, 0, LOKI_STATUS_ERROR, msg, true);
        break;
    case T_LINGER: /* the peer did not take its last frames in time */
        if (c->wq_bytes)
            STAT_ADD(fe, slow_drops, 1);
        loki__frontend_conn_close(c);
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
void loki__frontend_conn_rearm(struct loki_frontend_conn *c, bool new_frame, bool got_bytes)
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

/*
 * The read-buffer budget. A connection's buffer starts at RBUF_INIT bytes and doubles while
 * a frame needs it, up to one largest frame; what all buffers hold beyond RBUF_INIT is
 * fe->rb_used, bounded by fe->rb_budget (frontend.max_read_buffer_bytes). A connection
 * whose full buffer cannot grow within it stops reading and waits in fe->rb_wait_* (arrival
 * order) until budget comes back: a buffer shrinks once its frame is in, a closing
 * connection gives its share back. A waiting connection keeps its frame timer, so clients
 * that hold partial frames and send nothing more are closed after frame_timeout_ms and free
 * what they hold; nothing is lost to a pause, the bytes just stay in the socket meanwhile.
 * Without the budget, every connection could pin one largest frame (1024 connections of a
 * 256 MiB payload limit: 256 GiB) for the frame timeout.
 */
static size_t rb_step(const struct loki_frontend_conn *c)
{
    size_t max = (size_t)c->fe->max_body + LOKI_PROTO_HDR + RBUF_SLACK;
    return c->rcap >= max ? 0 : (c->rcap * 2 < max ? c->rcap * 2 : max) - c->rcap;
}

static void rb_account(struct loki_frontend_conn *c, size_t cap)
{
    struct loki_frontend *fe = c->fe;
    size_t held = cap > RBUF_INIT ? cap - RBUF_INIT : 0;
    fe->rb_used = fe->rb_used - c->rb_held + held;
    if (held > c->rb_held)
        STAT_ADD(fe, read_buffer_bytes, held - c->rb_held);
    else
        STAT_SUB(fe, read_buffer_bytes, c->rb_held - held);
    c->rb_held = held;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void rb_unwait(struct loki_frontend_conn *c)
{
    struct loki_frontend *fe = c->fe;
    if (!c->rb_waiting)
        return;
    if (c->rb_prev)
        c->rb_prev->rb_next = c->rb_next;
    else
        fe->rb_wait_head = c->rb_next;
    if (c->rb_next)
        c->rb_next->rb_prev = c->rb_prev;
    else
        fe->rb_wait_tail = c->rb_prev;
    c->rb_prev = c->rb_next = NULL;
    c->rb_waiting = false;
}

/* Resume the waiting connections, first come first, while the budget has their next step. */
static void rb_resume(struct loki_frontend *fe)
{
    struct loki_frontend_conn *c;
    while ((c = fe->rb_wait_head) && fe->rb_used + rb_step(c) <= fe->rb_budget) {
        rb_unwait(c);
        if (c->open && !c->shutting &&
            uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) < 0)
            loki__frontend_conn_close(c);
    }
}

void loki__frontend_rb_release(struct loki_frontend_conn *c)
{
    rb_unwait(c);
    if (c->rb_held) {
        rb_account(c, RBUF_INIT);
        rb_resume(c->fe);
    }
}

/* Once @c's frames are taken out: a large buffer, or any grown one while others wait for
 * budget, goes back to RBUF_INIT when what is left of the next frame fits there. */
static void rb_shrink(struct loki_frontend_conn *c)
{
    struct loki_frontend *fe = c->fe;
    if (c->rcap <= RBUF_INIT || c->rlen > RBUF_INIT / 2 ||
        (c->rcap <= RBUF_KEEP && !fe->rb_wait_head))
        return;
    uint8_t *p = realloc(c->rbuf, RBUF_INIT);
    if (!p)
        return;
    c->rbuf = p;
    c->rcap = RBUF_INIT;
    rb_account(c, RBUF_INIT);
    rb_resume(fe);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct loki_frontend_conn *c = h->data;
    struct loki_frontend *fe = c->fe;
    size_t step = rb_step(c);
    (void)hint;
    if (c->rcap - c->rlen < RBUF_INIT / 2 && step && fe->rb_used + step <= fe->rb_budget) {
        uint8_t *p = realloc(c->rbuf, c->rcap + step);
        if (p) {
            c->rbuf = p;
            rb_account(c, c->rcap + step);
            c->rcap += step;
        }
    }
    /* full and no budget to grow: a zero-length buffer, and on_read() pauses (UV_ENOBUFS) */
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
    loki__frontend_send_local(c, &r);
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
        C(accepted),         C(refused),      C(connections),  C(inflight),
        C(requests),         C(replies),      C(late_replies), C(bad_requests),
        C(unknown_pipeline), C(overloaded),   C(draining),     C(frame_errors),
        C(frame_timeouts),   C(slow_drops),   C(bytes_in),     C(bytes_out),
        C(idle_timeouts),    C(fd_exhausted), C(read_pauses),  C(read_buffer_bytes),
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
    loki__frontend_send_local(c, &r);
}

/*
 * The client's bytes @b as text for an error: a byte outside printable ASCII as \xNN, so a NUL
 * cannot cut the text short in a C client and a control byte reaches no terminal or log raw.
 */
static void printable(struct loki_bytes b, char *out, size_t n)
{
    size_t o = 0;
    for (uint32_t i = 0; i < b.len && o + 5 < n; i++) {
        uint8_t ch = b.ptr[i];
        if (ch >= 0x20 && ch < 0x7f)
            out[o++] = (char)ch;
        else
            o += (size_t)snprintf(out + o, n - o, "\\x%02x", ch);
    }
    out[o] = '\0';
}

static void handle_infer(struct loki_frontend_conn *c, struct loki_request *req)
{
    struct loki_frontend *fe = c->fe;
    char msg[320];
    int p;
    for (p = 0; p < fe->o.n_pipelines; p++)
        if (loki_bytes_eq(req->pipeline, fe->names[p]))
            break;
    if (p == fe->o.n_pipelines) {
        char name[4 * LOKI_PROTO_NAME_MAX + 1];
        STAT_ADD(fe, unknown_pipeline, 1);
        printable(req->pipeline, name, sizeof(name));
        snprintf(msg, sizeof(msg), "unknown pipeline '%s'", name);
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
        /* an error tied to a request carries its type (an absent "type" means infer) */
        send_error(c,
                   !req.has_id                 ? LOKI_MSG_NONE
                   : req.type != LOKI_MSG_NONE ? req.type
                                               : LOKI_MSG_INFER,
                   req.has_id, req.id, LOKI_STATUS_BAD_REQUEST, err, false);
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
    case LOKI_MSG_CANCEL: { /* no reply of its own: the query it names gets its one reply */
        long i = ids_find(c, req.id);
        STAT_ADD(fe, cancels, 1);
        if (i >= 0 && fe->o.on_cancel)
            fe->o.on_cancel(fe->o.ctx, c, req.id, c->tags[i]);
        break;
    }
    default: { /* ping: liveness only */
        struct loki_reply r;
        loki_reply_init(&r);
        r.type = LOKI_MSG_PING;
        r.has_id = req.has_id;
        r.id = req.id;
        loki__frontend_send_local(c, &r);
        break;
    }
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct loki_frontend_conn *c = s->data;
    struct loki_frontend *fe = c->fe;
    (void)buf;
    if (nread == UV_ENOBUFS) { /* on_alloc(): the budget for partial frames is spent */
        uv_read_stop(s);
        if (!c->rb_waiting) {
            STAT_ADD(fe, read_pauses, 1);
            c->rb_waiting = true;
            c->rb_prev = fe->rb_wait_tail;
            if (fe->rb_wait_tail)
                fe->rb_wait_tail->rb_next = c;
            else
                fe->rb_wait_head = c;
            fe->rb_wait_tail = c;
        }
        return;
    }
    if (nread < 0) {
        loki__frontend_conn_close(c);
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
            rb_shrink(c);
        }
        loki__frontend_conn_rearm(c, consumed, true);
    }
    loki__frontend_conn_unref(c); /* R4 */
}

/* ---- a new connection ---------------------------------------------------- */

/* A pipe that never became a connection has closed: free what was allocated for it. */
static void on_stillborn_closed(uv_handle_t *h)
{
    loki__frontend_conn_free(h->data);
}

/* Make an admitted socket a connection. Takes @fd on success only. Loop thread. */
int loki__frontend_conn_open(struct loki_frontend *fe, int fd, unsigned uid)
{
    struct loki_frontend_conn *c = calloc(1, sizeof(*c));
    uint32_t slots = 16;
    while (slots < 2 * fe->o.max_outstanding)
        slots <<= 1;
    if (c) {
        c->rbuf = malloc(RBUF_INIT);
        c->ids = malloc(slots * sizeof(*c->ids));
        c->tags = malloc(slots * sizeof(*c->tags));
        c->used = calloc(slots, 1);
    }
    if (!c || !c->rbuf || !c->ids || !c->tags || !c->used ||
        uv_pipe_init(fe->loop, &c->pipe, 0) < 0) {
        if (c)
            loki__frontend_conn_free(c);
        return -ENOMEM;
    }
    if (loki__frontend_uid_add(fe, uid) < 0) {
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
        loki__frontend_conn_close(c); /* @fd stays the caller's */
        return rc;
    }
    STAT_ADD(fe, accepted, 1);
    if (uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) < 0)
        loki__frontend_conn_close(c);
    else /* idle from the start: a silent client is closed too */
        loki__frontend_conn_rearm(c, false, true);
    return 0;
}
