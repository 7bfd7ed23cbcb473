/* SPDX-License-Identifier: Apache-2.0 */
/*
 * loki_client: the C client library for lokid's Unix socket (docs/protocol.md).
 *
 * Threading model: each client handle owns one background reader thread. It
 * receives replies, enforces per-request timeouts and runs the completion
 * callbacks. Any number of threads may submit concurrently. Every request
 * accepted by loki_client_submit() completes exactly once: with the server's
 * reply, with LOKI_STATUS_TIMEOUT when its timeout passes first (a reply that
 * arrives later is discarded), or with LOKI_STATUS_CLOSED when the connection
 * ends or the handle is closed. No libuv in this API; the library never logs.
 */
#ifndef LOKI_CLIENT_H
#define LOKI_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loki/proto.h"

struct loki_client;

struct loki_client_opts {
    uint32_t max_outstanding;  /* requests in flight; 0 -> 1024 (and never above the
                                  server's advertised limit) */
    uint32_t max_reply_bytes;  /* largest reply frame accepted; 0 -> 64 MiB */
    double default_timeout_ms; /* used when a request says 0; 0 -> no timeout */
    double connect_timeout_ms; /* hello handshake; 0 -> 5000 */
    bool no_hello;             /* skip the handshake (limits then stay unknown) */
    const char *name;          /* sent in hello; optional */
};

/* One infer request. */
struct loki_client_req {
    const char *pipeline; /* NUL-terminated, <= LOKI_PROTO_NAME_MAX bytes */
    const void *payload;  /* borrowed until loki_client_submit() returns */
    uint32_t payload_len;
    double deadline_ms; /* > 0: tighter end-to-end deadline than the SLO; 0: none */
    bool has_priority;
    int32_t priority;
    double timeout_ms; /* > 0: local timeout; 0: opts default; < 0: none */
};

/*
 * Completion callback, called exactly once per accepted request, on the reader thread (or
 * on the thread inside loki_client_close()). @reply and every slice in it are valid only
 * during the call. reply->id is the id loki_client_submit() returned. Client-side
 * outcomes use LOKI_STATUS_TIMEOUT and LOKI_STATUS_CLOSED with reply->error set. The
 * callback may submit new requests; it must not call loki_client_close() or a blocking
 * function of the same handle (they return -EDEADLK). Small requests it submits are sent
 * together once the replies that arrived with its own have been dispatched (one write, as a
 * pipelining client sends); should that write fail, they complete with LOKI_STATUS_CLOSED.
 */
typedef void (*loki_client_cb)(void *ctx, const struct loki_reply *reply);

/* A reply copied out for the blocking API; release with loki_client_result_fini(). */
struct loki_client_result {
    uint64_t id;
    enum loki_status status;
    double accuracy, latency_ms;
    bool has_retry_after;
    double retry_after_ms;
    char error[LOKI_PROTO_ERR_MAX]; /* "" when none */
    uint32_t n_outputs;
    struct loki_bytes *outputs; /* n_outputs slices, owned by the result */
    uint32_t n_paths;
    const char **paths; /* n_paths NUL-terminated strings, owned by the result */
    /* the result tree: every answered sub-query, parents first (loki_reply_next_child walks
     * it); the slices point into memory the result owns */
    uint32_t n_nodes;
    const struct loki_reply_node *nodes;
    void *mem_; /* private */
};

struct loki_client_stats {
    uint64_t submitted, completed, timeouts, late_replies, proto_errors;
    uint32_t outstanding;
};

/*
 * Connect to the server at @path and (unless opts->no_hello) do the hello handshake.
 * @opts may be NULL. On success *@out owns a socket and a reader thread.
 * Returns 0; -ENAMETOOLONG; -ENOENT/-ECONNREFUSED/-EACCES from connect(); -EACCES when
 * the server refuses our uid; -ETIMEDOUT when hello is not answered in time;
 * LOKI_EPROTO when the server answers something else; -ENOMEM. Any thread.
 */
int loki_client_connect(const char *path, const struct loki_client_opts *opts,
                        struct loki_client **out);

/*
 * Send an infer request; @cb(@ctx, reply) runs once when it completes (possibly before
 * this returns). *@id (optional) receives the request id, set before the request is sent.
 * Returns 0 (the callback will run exactly once), or, with the callback never run:
 * -EINVAL (bad arguments), -ENAMETOOLONG (pipeline name), LOKI_ETOOBIG (payload over the
 * server's max_payload), -EAGAIN (max_outstanding requests in flight), -EPIPE (connection
 * gone). Any thread, concurrently.
 */
int loki_client_submit(struct loki_client *c, const struct loki_client_req *req, loki_client_cb cb,
                       void *ctx, uint64_t *id);

/*
 * Ask the server to drop infer request @id (from loki_client_submit) if nothing of it has
 * been batched yet. Its callback still runs exactly once: with LOKI_STATUS_CANCELLED when it
 * was dropped, else with its result. Returns 0 (sent), -EPIPE (connection gone), or a write
 * error. Any thread.
 */
int loki_client_cancel(struct loki_client *c, uint64_t id);

/*
 * Send a control request (LOKI_MSG_PING, _STATUS, _METRICS or _HELLO) with @timeout_ms
 * (same meaning as loki_client_req.timeout_ms); @cb runs once with the reply. Same
 * errors and threading as loki_client_submit().
 */
int loki_client_request(struct loki_client *c, enum loki_msg_type type, double timeout_ms,
                        loki_client_cb cb, void *ctx, uint64_t *id);

/*
 * Blocking infer: submit and wait for the completion. On 0, @res holds the outcome (any
 * status, including TIMEOUT and CLOSED): release it with loki_client_result_fini().
 * Errors as loki_client_submit(), plus -EDEADLK from a callback, -ENOMEM. Any thread.
 */
int loki_client_infer(struct loki_client *c, const struct loki_client_req *req,
                      struct loki_client_result *res);

/* Free what @res owns (idempotent). */
void loki_client_result_fini(struct loki_client_result *res);

/*
 * Liveness check: 0 when the server answered a ping within @timeout_ms, -ETIMEDOUT,
 * -EPIPE when the connection is gone, -EDEADLK from a callback. Any thread.
 */
int loki_client_ping(struct loki_client *c, double timeout_ms);

/*
 * Readiness check: ask "status" and copy the answer's scalars into @st (slices left
 * empty). Returns 0, -ETIMEDOUT, -EPIPE, -EDEADLK. Any thread.
 */
int loki_client_status(struct loki_client *c, double timeout_ms, struct loki_reply *st);

/*
 * Ask for a rendered report: @type LOKI_MSG_STATUS (formats "table", "json") or
 * LOKI_MSG_METRICS ("prometheus"). On 0, @st gets the reply's scalars (as
 * loki_client_status(); @st may be NULL) and *@text a NUL-terminated copy of the report
 * (the caller frees it; NULL when the server sent none). A status other than ok (e.g.
 * bad_request for an unknown format) returns LOKI_EPROTO with the server's reason in
 * @err (may be NULL). Also -EINVAL, -ENOMEM, -ETIMEDOUT, -EPIPE, -EDEADLK. Any thread.
 */
int loki_client_report(struct loki_client *c, enum loki_msg_type type, const char *format,
                       double timeout_ms, struct loki_reply *st, char **text, char *err,
                       size_t errlen);

/* Server limits from the handshake (0 when unknown). Any thread. */
uint32_t loki_client_max_payload(const struct loki_client *c);
/* Pipelines the server announced in hello: up to @max names into @names (valid until
 * close). Returns the count. Any thread. */
int loki_client_pipelines(const struct loki_client *c, const char **names, int max);

/* Counters. Any thread. */
void loki_client_stats(struct loki_client *c, struct loki_client_stats *out);

/*
 * Close the connection: every pending request completes with LOKI_STATUS_CLOSED (exactly
 * once, on the calling thread or the reader), the reader thread is joined and @c freed.
 * No other call on @c may run concurrently or follow. Returns 0, or -EDEADLK (nothing
 * done) when called from a completion callback. NULL is a no-op.
 */
int loki_client_close(struct loki_client *c);

#endif
