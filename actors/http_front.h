/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP front door (opt-in: frontend.http, lokid --http-port): HTTP/1.1 through
 * libmicrohttpd on its own thread, speaking the KServe v2 inference protocol, and handing every
 * infer request to lokid through the C client library over lokid's own Unix socket, so it meets
 * the same router with the same size, rate and in-flight limits as any local client. Every
 * accepted HTTP request gets exactly one response. See the essay at the top of http_front.c.
 */
#ifndef LOKI_HTTP_FRONT_H
#define LOKI_HTTP_FRONT_H

#include <stddef.h>
#include <stdint.h>

#include "loki/config.h"
#include "loki/model.h"

struct loki_http_front;

struct loki_http_front_opts {
    const struct loki_http_cfg *cfg;  /* frontend.http (copied; enabled is not looked at) */
    const char *socket_path;          /* lokid's Unix socket, where requests go (copied) */
    const struct loki_topology *topo; /* its pipelines, for the metadata (copied at create) */
    uint32_t max_payload;             /* frontend.max_payload: sizes the body budget */
    double lokid_idle_timeout_s;      /* frontend.idle_timeout_s: keep-alive pings come sooner */
    const char *server_version;       /* in GET /v2; NULL: "" */
};

/* Counters (monotonic, but the gauge), relaxed atomics. */
struct loki_http_front_stats {
    uint64_t requests; /* HTTP requests answered */
    uint64_t infers;   /* of them, infer requests handed to lokid */
    uint64_t status_2xx, status_4xx, status_5xx;
    uint64_t inflight;       /* gauge: infer, health requests waiting for lokid */
    uint64_t lokid_connects; /* connections made to lokid's socket (reconnects included) */
};

/*
 * Build the front door from @o: copies everything, renders each pipeline's metadata, reads
 * the TLS files. Binds nothing. Returns 0, -EINVAL (bad address, TLS files that cannot be
 * read: @err says), -ENOTSUP (TLS asked of a libmicrohttpd built without it), -ENOMEM. Free
 * with loki_http_front_destroy(). Any thread (lokid: its loop thread).
 */
int loki_http_front_create(const struct loki_http_front_opts *o, struct loki_http_front **out,
                           char *err, size_t errlen);

/*
 * Bind cfg->address:cfg->port and start the front door's thread, which connects to lokid's
 * socket by itself (retrying until it answers; until then infer and health requests get 503).
 * Returns 0 or a negative errno (-EADDRINUSE, -EACCES, ...) with libmicrohttpd's reason in
 * @err. Must not wait for lokid's loop: it does not connect itself. The thread that created.
 */
int loki_http_front_start(struct loki_http_front *hf, char *err, size_t errlen);

/* The port bound (cfg->port 0 picks one), or -1 before start. Any thread. */
int loki_http_front_port(const struct loki_http_front *hf);

/*
 * Stop: take the answers lokid wrote before its frontend stopped (a second at most), close the
 * connections to lokid (whatever still waited gets its response: 503, "closed"), send the
 * responses already made for at most a second, close every HTTP connection, join the
 * thread. Blocks two seconds at most. Call it after lokid's frontend has stopped (its sockets
 * closed): a write the thread has blocked on the loop that now calls this then fails instead of
 * waiting forever. Idempotent. The thread that started.
 */
void loki_http_front_stop(struct loki_http_front *hf);

/* Stop if needed and free @hf. NULL is a no-op. */
void loki_http_front_destroy(struct loki_http_front *hf);

/* Snapshot of the counters. Any thread. */
void loki_http_front_stats(const struct loki_http_front *hf, struct loki_http_front_stats *out);

#endif
