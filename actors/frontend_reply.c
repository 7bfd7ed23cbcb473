/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The frontend's write side (see the essay in frontend.c): reply nodes from a
 * per-size-class cache, writes with the per-connection write-queue cap (queued
 * per connection and written once per loop turn), and the MPSC queue that
 * carries owner replies from any thread to the loop.
 * loki_frontend_reply() is the one function here any thread may call.
 */
#include "frontend_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define NODE_CACHE 64            /* cached nodes per class */
#define COALESCE_MAX (16 * 1024) /* frames up to this size are joined into one write */
#define WRITE_MAX (256 * 1024)   /* ... of at most this many bytes */

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

/* ---- writing ------------------------------------------------------------- */

static void on_write(uv_write_t *w, int status)
{
    struct node *n = w->data;
    struct loki_frontend_conn *c = n->conn;
    struct loki_frontend *fe = c->fe;
    c->wq_bytes -= n->len;
    if (status < 0 && status != UV_ECANCELED)
        loki__frontend_conn_close(c);
    else if (status == 0)
        STAT_ADD(fe, bytes_out, n->len);
    node_put(fe, n);
    loki__frontend_conn_unref(c); /* R2: pairs with A2 in submit_write() */
}

/* Hand @n (queued on @c, counted in wq_bytes) to uv_write(); takes ownership of @n. */
static void submit_write(struct loki_frontend_conn *c, struct node *n)
{
    struct loki_frontend *fe = c->fe;
    uv_buf_t b = uv_buf_init((char *)n->data, (unsigned)n->len);
    n->conn = c;
    n->wreq.data = n;
    c->refs++; /* A2: the write holds the conn until on_write() */
    int rc = uv_write(&n->wreq, (uv_stream_t *)&c->pipe, &b, 1, on_write);
    if (rc < 0) {
        c->wq_bytes -= n->len;
        node_put(fe, n);
        loki__frontend_conn_close(c);
        loki__frontend_conn_unref(c); /* R2 on failure */
    }
}

/*
 * Queue @n on @c; takes ownership of @n. Loop thread. Frames are not written at once: the
 * flush handle writes each connection's frames at the end of the loop turn, so the replies
 * of one turn (a worker's batch) cost one write(2), not one each.
 */
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
        loki__frontend_conn_close(c);
        return;
    }
    n->next = NULL;
    n->conn = c;
    if (c->wq_tail)
        c->wq_tail->next = n;
    else
        c->wq_head = n;
    c->wq_tail = n;
    c->wq_bytes += n->len;
    if (!c->dirty) {
        c->dirty = true;
        c->refs++; /* A5: the dirty list holds the conn until loki__frontend_on_flush() */
        c->dirty_next = fe->dirty;
        fe->dirty = c;
        if (!uv_is_active((uv_handle_t *)&fe->flush))
            uv_prepare_start(&fe->flush, loki__frontend_on_flush);
    }
}

void loki__frontend_conn_flush(struct loki_frontend_conn *c)
{
    struct loki_frontend *fe = c->fe;
    struct node *n = c->wq_head;
    c->wq_head = c->wq_tail = NULL;
    while (n) {
        struct node *end = n->next;
        if (!c->open) {
            c->wq_bytes -= n->len;
            node_put(fe, n);
            n = end;
            continue;
        }
        /* a run of small frames becomes one write: copying them is cheaper than a syscall */
        size_t run = n->len;
        int k = 1;
        if (n->len <= COALESCE_MAX)
            for (; end && end->len <= COALESCE_MAX && run + end->len <= WRITE_MAX; end = end->next)
                run += end->len, k++;
        struct node *w = k > 1 ? node_get(fe, run) : NULL;
        if (!w) { /* one frame, or no memory to join them: this one alone */
            end = n->next;
            submit_write(c, n);
            n = end;
            continue;
        }
        while (n != end) {
            struct node *next = n->next;
            memcpy(w->data + w->len, n->data, n->len);
            w->len += n->len;
            node_put(fe, n);
            n = next;
        }
        submit_write(c, w);
    }
}

void loki__frontend_on_flush(uv_prepare_t *p)
{
    struct loki_frontend *fe = p->data;
    struct loki_frontend_conn *c;
    uv_prepare_stop(p);
    while ((c = fe->dirty)) {
        fe->dirty = c->dirty_next;
        c->dirty = false;
        loki__frontend_conn_flush(c);
        loki__frontend_conn_unref(c); /* R5: pairs with A5 in conn_write() */
    }
}

/* Encode a reply built here (r->type, has_id, id set by the caller) and write it. */
void loki__frontend_send_local(struct loki_frontend_conn *c, const struct loki_reply *r)
{
    struct loki_frontend *fe = c->fe;
    struct node *n = node_get(fe, loki_proto_reply_size(r));
    ssize_t len = n ? loki_proto_encode_reply(n->data, n->cap, r) : -ENOMEM;
    if (len < 0) {
        if (n)
            node_put(fe, n);
        loki__frontend_conn_close(c); /* cannot answer: better a closed connection than a hang */
        return;
    }
    n->len = (size_t)len;
    conn_write(c, n);
}
/* ---- replies from the owner ------------------------------------------------ */

/* Loop thread: route one owner reply (or release) to its connection. Takes @n. */
void loki__frontend_deliver_node(struct loki_frontend *fe, struct node *n)
{
    struct loki_frontend_conn *c = n->conn;
    if (!loki__frontend_ids_del(c, n->id)) {
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
            loki__frontend_conn_finish(c); /* the last answer is queued: now the close */
        else
            loki__frontend_conn_rearm(c, false, false); /* its idle clock starts */
    }
    loki__frontend_conn_unref(c); /* R1: pairs with A1 in handle_infer() */
    loki__frontend_drain_check(fe);
}

void loki__frontend_on_async(uv_async_t *a)
{
    struct loki_frontend *fe = a->data;
    pthread_mutex_lock(&fe->qlock);
    struct node *n = fe->qhead;
    fe->qhead = fe->qtail = NULL;
    pthread_mutex_unlock(&fe->qlock);
    while (n) {
        struct node *next = n->next;
        loki__frontend_deliver_node(fe, n);
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
        loki__frontend_deliver_node(fe, n);
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
