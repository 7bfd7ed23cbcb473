/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The frontend's insides, shared by actors/frontend*.c only: the frontend and
 * connection objects, the reply node, and the functions one part calls in
 * another (loki__frontend_*). Loop thread only, except where a comment says
 * otherwise. Not for the frontend's users: they see frontend.h.
 */
#ifndef LOKI_FRONTEND_INTERNAL_H
#define LOKI_FRONTEND_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "frontend.h"

#define NODE_CLASSES 12        /* 512 B .. 1 MiB */
#define RBUF_INIT (16 * 1024)  /* a connection's read buffer to begin with */
#define RBUF_SLACK (64 * 1024) /* room past the largest frame: the next one's start */

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
    size_t rb_held; /* of fe->rb_used: rcap beyond RBUF_INIT, given back at close */
    /* reading paused for the read-buffer budget (fe->rb_wait_*'s list) */
    bool rb_waiting;
    struct loki_frontend_conn *rb_prev, *rb_next;
    uint64_t wq_bytes; /* queued here or handed to uv_write(), not yet written */
    /* encoded frames not yet handed to uv_write(): written at the end of the loop turn */
    struct node *wq_head, *wq_tail;
    bool dirty;                            /* on fe->dirty (holds a reference) */
    struct loki_frontend_conn *dirty_next; /* fe->dirty's list */
    /* in-flight id set: linear probing, backward-shift deletion */
    uint64_t *ids;
    uint64_t *tags; /* the owner's, per id (loki_frontend_conn_tag) */
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
    uv_prepare_t flush;               /* runs while some connection has frames to write */
    struct loki_frontend_conn *dirty; /* connections with queued frames */
    uv_thread_t loop_thread;
    struct loki_frontend_opts o;
    struct loki_frontend_cfg cfg;
    char names[LOKI_PROTO_MAX_PIPELINES][LOKI_PROTO_NAME_MAX + 1];
    uint32_t max_body;
    bool listening, started, stopped, draining;
    int open_handles; /* listener poll, pause timer, async, flush: for destroy */
    dev_t sock_dev;
    ino_t sock_ino;
    loki_frontend_drained_cb drained_cb;
    void *drained_ctx;
    struct loki_frontend_conn *conns;
    /* partial frames' memory: what connections' read buffers hold beyond their first
     * RBUF_INIT bytes, against frontend.max_read_buffer_bytes; connections that need more
     * wait (reading paused) in arrival order */
    uint64_t rb_budget, rb_used;
    struct loki_frontend_conn *rb_wait_head, *rb_wait_tail;
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

/* frontend.c: admission and lifecycle */

/* Count one more connection of @uid; -ENOMEM when the table could not grow. */
int loki__frontend_uid_add(struct loki_frontend *fe, uint32_t uid);
/* One connection of @uid fewer. */
void loki__frontend_uid_del(struct loki_frontend *fe, uint32_t uid);
/* Call the drained callback once draining and nothing is in flight. */
void loki__frontend_drain_check(struct loki_frontend *fe);

/* frontend_conn.c: one connection, its timer and its reading */

/* Make an admitted socket a connection. Takes @fd on success only. */
int loki__frontend_conn_open(struct loki_frontend *fe, int fd, unsigned uid);
/* Free @c's memory; its handles must be closed. */
void loki__frontend_conn_free(struct loki_frontend_conn *c);
/* Drop one reference on @c; the last frees it. */
void loki__frontend_conn_unref(struct loki_frontend_conn *c);
/* Close @c's handles now (nothing more is read or written). */
void loki__frontend_conn_close(struct loki_frontend_conn *c);
/* Pick @c's timer after bytes arrived or a query was answered (see frontend_conn.c). */
void loki__frontend_conn_rearm(struct loki_frontend_conn *c, bool new_frame, bool got_bytes);
/* Give @c's read-buffer budget back (at close) and resume the connections waiting for it. */
void loki__frontend_rb_release(struct loki_frontend_conn *c);
/* Half-close after the queued writes, then close. */
void loki__frontend_conn_finish(struct loki_frontend_conn *c);
/* Remove @id from @c's in-flight set; false when it was not there. */
bool loki__frontend_ids_del(struct loki_frontend_conn *c, uint64_t id);

/* frontend_reply.c: nodes, writes and the reply queue */

/* Encode a reply built here (r->type, has_id, id set by the caller) and write it. */
void loki__frontend_send_local(struct loki_frontend_conn *c, const struct loki_reply *r);
/* Hand @c's queued frames to uv_write() now (before a shutdown, say). */
void loki__frontend_conn_flush(struct loki_frontend_conn *c);
/* The flush handle's callback: write every connection's queued frames, once per loop turn. */
void loki__frontend_on_flush(uv_prepare_t *p);
/* Route one owner reply (or release) to its connection. Takes @n. */
void loki__frontend_deliver_node(struct loki_frontend *fe, struct node *n);
/* The async handle's callback: deliver every queued node. */
void loki__frontend_on_async(uv_async_t *a);

#endif
