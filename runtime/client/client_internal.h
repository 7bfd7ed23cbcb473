/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The client library's insides, shared by client.c (the socket, the reader thread, the
 * asynchronous calls, the lifecycle) and client_sync.c (the blocking calls built on them).
 * Its functions are hidden: the shared library exports loki_client_* only.
 */
#ifndef LOKI_CLIENT_INTERNAL_H
#define LOKI_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "loki/client.h"

#define LOKI_CLIENT_HIDDEN __attribute__((visibility("hidden")))

struct slot {
    uint32_t gen;
    bool used;
    int heap;          /* index in the deadline heap, -1 when none */
    uint64_t deadline; /* ns, monotonic; 0 = none */
    loki_client_cb cb;
    void *ctx;
    uint32_t next_free; /* UINT32_MAX ends the list */
};

struct done {
    loki_client_cb cb;
    void *ctx;
    uint64_t id;
};

struct loki_client {
    int fd, evfd;
    pthread_t reader;
    bool reader_started;
    pthread_mutex_t lock;  /* slots, heap, flags */
    pthread_mutex_t wlock; /* serialises frames on the socket */
    struct slot *slots;
    uint32_t nslots, limit, free_head, outstanding;
    uint32_t *heap;
    uint32_t heap_n;
    uint64_t wake_at; /* when the reader will next wake by itself; UINT64_MAX: never */
    bool dead, closing;
    double default_timeout_ms;
    uint32_t max_reply, max_payload;
    uint8_t *rbuf;
    size_t rlen, rcap;
    /* reader thread only: frames its callbacks submitted during one dispatch (corked) */
    uint8_t *obuf;
    size_t olen;
    char last_error[LOKI_PROTO_ERR_MAX]; /* from an id-less error frame */
    struct loki_client_stats st;
    int n_pipelines;
    char pipelines[LOKI_PROTO_MAX_PIPELINES][LOKI_PROTO_NAME_MAX + 1];
    const char *pipeline_ptrs[LOKI_PROTO_MAX_PIPELINES];
    struct loki_reply reply;       /* reader thread's decode target */
    struct loki_reply_node *nodes; /* its result tree's room (grows) */
    uint32_t node_cap;
};

/* Send request @rq (its id is set here) and call @cb once with its reply, a timeout after
 * @timeout_ms (0: the default, < 0: none) or the connection's end; *@id_out gets the id. */
LOKI_CLIENT_HIDDEN int loki__client_submit(struct loki_client *c, struct loki_request *rq,
                                           double timeout_ms, loki_client_cb cb, void *ctx,
                                           uint64_t *id_out);

/* Whether the caller is @c's reader thread (which must not block on its own replies). */
LOKI_CLIENT_HIDDEN bool loki__client_on_reader(struct loki_client *c);

/* Blocking control call (client_sync.c): @out gets the reply's scalars, @err its error. */
LOKI_CLIENT_HIDDEN int loki__client_ctl(struct loki_client *c, enum loki_msg_type type,
                                        double timeout_ms, struct loki_reply *out, char *err,
                                        size_t errlen);

#endif
