/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The frontend actor: a libuv Unix-socket server that accepts client
 * connections, frames and decodes requests (loki_proto), validates them and
 * hands each valid infer request to its owner (the router in lokid) through
 * one callback. The owner answers each request exactly once with
 * loki_frontend_reply(), from the loop thread or from any other thread.
 * The process must ignore SIGPIPE (libuv writes with write(2)); lokid does.
 * See the essay at the top of frontend.c.
 */
#ifndef LOKI_FRONTEND_H
#define LOKI_FRONTEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loki/config.h"
#include "loki/proto.h"

struct uv_loop_s; /* libuv's uv_loop_t */

struct loki_frontend;
struct loki_frontend_conn;

/*
 * A valid infer request arrived. Runs on the loop thread. @req (and the payload it points
 * to) is borrowed for the duration of the call only: copy what must outlive it.
 * req->pipeline_index is the index of the pipeline in loki_frontend_opts.pipelines.
 * The request holds a reference on @conn that the matching loki_frontend_reply() releases:
 * every delivered request must be answered exactly once, even after the client left.
 */
typedef void (*loki_frontend_request_cb)(void *ctx, struct loki_frontend_conn *conn,
                                         const struct loki_request *req);
/*
 * Readiness (loop thread): what "status" reports, and while it is false (lokid's workers are
 * still starting) an infer request is answered at once, "overloaded" with retry_after_ms and
 * "not ready: workers are starting", instead of waiting for them. NULL: ready while not
 * draining.
 */
typedef bool (*loki_frontend_ready_cb)(void *ctx);
/* A "cancel" for infer request @id of @conn, still in flight, which the owner tagged @tag
 * (loki_frontend_conn_tag; 0 untagged). The owner drops it if it can, and answers it either
 * way exactly once as usual (cancelled, or its result). Loop thread. */
typedef void (*loki_frontend_cancel_cb)(void *ctx, struct loki_frontend_conn *conn, uint64_t id,
                                        uint64_t tag);
/* Extra metrics for "metrics" requests (loop thread): fill up to @max entries of @out,
 * whose names must stay valid until the reply is encoded (static strings), return count. */
typedef int (*loki_frontend_metrics_cb)(void *ctx, struct loki_metric *out, int max);
/*
 * A "status" or "metrics" request asked for a report in @format (loop thread): point
 * @out at the rendered text, which must stay valid until the reply is encoded (the
 * owner's buffer; the next call may reuse it). Return 0, or < 0 for a format the owner
 * does not know (the client gets "bad_request" with @err, filled by the callback).
 */
typedef int (*loki_frontend_report_cb)(void *ctx, enum loki_msg_type type, struct loki_bytes format,
                                       struct loki_bytes *out, char *err, size_t errlen);
/* Drain finished: every delivered request was answered (loop thread). */
typedef void (*loki_frontend_drained_cb)(void *ctx);

struct loki_frontend_opts {
    const struct loki_frontend_cfg *cfg; /* socket_path, mode, uids, max_payload, max_inflight,
                                            max_conns, max_conns_per_uid, idle_timeout_s */
    const char *const *pipelines;        /* known pipeline names (copied) */
    int n_pipelines;                     /* <= LOKI_PROTO_MAX_PIPELINES */
    loki_frontend_request_cb on_request; /* required */
    loki_frontend_ready_cb is_ready;     /* optional */
    loki_frontend_metrics_cb on_metrics; /* optional */
    loki_frontend_cancel_cb on_cancel;   /* optional: without it "cancel" is ignored */
    loki_frontend_report_cb on_report;   /* optional: without it a "format" is refused */
    void *ctx;                           /* passed to the callbacks */
    uint32_t max_outstanding;            /* per connection; 0 -> 1024 */
    uint32_t frame_timeout_ms;           /* a frame must complete this soon after its first
                                            byte; 0 -> 10000 */
    uint64_t max_write_queue;            /* bytes queued to a slow reader before it is
                                            dropped; 0 -> 4 MiB + one max frame */
    double retry_after_ms;               /* hint in "overloaded" replies; 0 -> 50 */
    const char *server_name;             /* in hello replies; NULL -> "lokid" */
};

/* Counters for metrics; monotonic except the two gauges. */
struct loki_frontend_stats {
    uint64_t accepted;     /* connections admitted */
    uint64_t refused;      /* connections refused (uid, caps, descriptors) */
    uint64_t connections;  /* gauge: open connections */
    uint64_t inflight;     /* gauge: delivered, not yet answered */
    uint64_t requests;     /* infer requests delivered to on_request */
    uint64_t cancels;      /* "cancel" requests received (whether or not they dropped one) */
    uint64_t replies;      /* replies written for delivered requests */
    uint64_t late_replies; /* replies for a connection that had gone (discarded) */
    uint64_t bad_requests; /* decode/validation failures answered with an error */
    uint64_t unknown_pipeline;
    uint64_t overloaded;        /* answered "overloaded" (per-conn or global limit) */
    uint64_t draining;          /* answered "draining" */
    uint64_t frame_errors;      /* oversized frames (connection closed) */
    uint64_t frame_timeouts;    /* half frames timed out (connection closed) */
    uint64_t slow_drops;        /* connections dropped for a full write queue */
    uint64_t idle_timeouts;     /* idle connections closed (idle_timeout_s) */
    uint64_t fd_exhausted;      /* accepts short of file descriptors (refused or paused) */
    uint64_t read_pauses;       /* connections paused: partial frames at max_read_buffer_bytes */
    uint64_t read_buffer_bytes; /* gauge: partial frames' memory beyond each connection's
                                   first 16 KiB (what max_read_buffer_bytes bounds) */
    uint64_t bytes_in, bytes_out;
};

/*
 * Create a frontend on @loop. Copies @o (and the pipeline names); binds nothing yet.
 * Returns 0, -EINVAL (missing callback, too many pipelines, bad cfg) or -ENOMEM.
 * Free with loki_frontend_destroy(). Loop thread.
 */
int loki_frontend_create(struct uv_loop_s *loop, const struct loki_frontend_opts *o,
                         struct loki_frontend **out);

/*
 * Bind cfg->socket_path with cfg->mode and start accepting. A stale socket file (nobody
 * listening) is unlinked; a live one gives -EADDRINUSE; a path that is not a socket gives
 * -EEXIST and is left alone. Returns 0, -ENAMETOOLONG or a negative errno from the
 * socket calls. The calling thread becomes the frontend's loop thread. Loop thread.
 * Reads RLIMIT_NOFILE (the soft limit) here: cfg->max_conns 0 becomes half of it (at most
 * 32768), cfg->max_conns_per_uid 0 half of max_conns; a connection over a cap, or on one
 * of the process's last 8 descriptors, gets an error frame naming the cap and is closed.
 * Raise the limit before this call, not after.
 */
int loki_frontend_start(struct loki_frontend *fe);

/*
 * Answer request @id received on @conn. @reply is borrowed: it is encoded before the call
 * returns (reply->type, id and has_id are set here). Releases the reference the request
 * held on @conn: call exactly once per delivered request; afterwards @conn may be gone.
 * A reply for a connection that has closed is discarded and counted.
 * Any thread: on the loop thread it is written at once, elsewhere it goes through the
 * frontend's MPSC reply queue and uv_async_send(). Returns 0, or -ENOMEM/-EINVAL when
 * the reply could not be encoded (the client then gets an "error" reply; the reference is
 * released in every case).
 */
/* Tag in-flight infer request @id of @conn with the owner's @tag (handed to on_cancel).
 * Returns false when @id is not in flight. Loop thread. */
bool loki_frontend_conn_tag(struct loki_frontend_conn *conn, uint64_t id, uint64_t tag);

int loki_frontend_reply(struct loki_frontend_conn *conn, uint64_t id,
                        const struct loki_reply *reply);

/*
 * Begin draining: stop accepting connections, answer new requests "draining", keep
 * writing replies; when nothing is in flight, call @cb once (possibly before returning).
 * Then call loki_frontend_stop(). Loop thread.
 */
void loki_frontend_drain(struct loki_frontend *fe, loki_frontend_drained_cb cb, void *ctx);

/*
 * Close the listener (unlinking the socket file it created) and every connection.
 * Replies arriving later are discarded. Let the loop run (uv_run) so the handles finish
 * closing before loki_frontend_destroy(). Idempotent. Loop thread.
 */
void loki_frontend_stop(struct loki_frontend *fe);

/*
 * Free @fe and every connection object, including those still referenced by unanswered
 * requests: after this, no thread may call loki_frontend_reply(). Stops first if needed;
 * the loop must then be run until its handles are closed, so prefer stop, uv_run, destroy.
 * Loop thread (or any thread once the loop has stopped).
 */
void loki_frontend_destroy(struct loki_frontend *fe);

/* Snapshot of the counters. Any thread (relaxed atomics). */
void loki_frontend_stats(const struct loki_frontend *fe, struct loki_frontend_stats *out);

#endif
