/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A minimal HTTP/1.1 endpoint for Prometheus scrapes and health probes: GET (or HEAD)
 * /metrics answers 200 with whatever the render callback returns, /healthz and /readyz
 * answer 200 or 503 from two probe callbacks, other paths 404, other methods 405, a
 * request head over LOKI_HTTP_HEAD_MAX bytes 431; one request per connection
 * ("Connection: close"). A connection must send its whole request head within the
 * timeout, and gets as long again to take the answer; when every slot is taken the oldest
 * connection is closed for the new one, so idle connections can never starve a scrape.
 * It runs on the caller's libuv loop; this header does not need <uv.h>.
 */
#ifndef LOKI_HTTP_H
#define LOKI_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LOKI_HTTP_HEAD_MAX 4096   /* request head, bytes (a scrape sends ~200) */
#define LOKI_HTTP_MAX_CONNS 64    /* default of max_conns */
#define LOKI_HTTP_TIMEOUT_MS 5000 /* default of timeout_ms */
#define LOKI_HTTP_DEFAULT_ADDR "127.0.0.1"

struct uv_loop_s;
struct loki_http;

/*
 * Produce the body of GET /metrics: point *@body at @len bytes that stay valid until the
 * callback runs again (they are copied before then). Return 0, or a negative errno to
 * answer 500. Runs on the loop thread.
 */
typedef int (*loki_http_render_fn)(void *ctx, const char **body, size_t *len);

/* A health probe: true answers 200, false 503. Runs on the loop thread. */
typedef bool (*loki_http_probe_fn)(void *ctx);

struct loki_http_config {
    const char *address; /* IPv4 or IPv6 literal to listen on; NULL: LOKI_HTTP_DEFAULT_ADDR */
    int port;            /* 0: a free port the kernel picks */
    int max_conns;       /* connections kept at once; 0: LOKI_HTTP_MAX_CONNS */
    unsigned timeout_ms; /* to send the request head, and again to take the answer; 0:
                          * LOKI_HTTP_TIMEOUT_MS */
    loki_http_render_fn render;
    loki_http_probe_fn live;  /* GET /healthz; NULL: always live (the loop answered) */
    loki_http_probe_fn ready; /* GET /readyz; NULL: /readyz answers 404 */
    void *ctx;                /* given to the callbacks */
};

/* What the endpoint did since it was created. */
struct loki_http_stats {
    uint64_t accepted;  /* connections accepted */
    uint64_t answered;  /* requests answered (any status) */
    uint64_t evicted;   /* connections closed to make room for a newer one */
    uint64_t timed_out; /* connections closed at their deadline */
    int open;           /* connections open now */
};

/*
 * Listen on @cfg's address and port on @loop (@cfg is copied; the address string too).
 * Returns 0 and the endpoint in *@out, or a negative libuv error code (uv_strerror() names
 * it: the port is taken, the address is not local, UV_EINVAL for an address that is not an
 * IP literal...). Either way the loop must run again before uv_loop_close() (a failed
 * listener is closed through it). Loop thread only; release with loki_http_destroy().
 */
int loki_http_create(struct uv_loop_s *loop, const struct loki_http_config *cfg,
                     struct loki_http **out);

/* The port @h listens on (the one picked when created with 0). */
int loki_http_port(const struct loki_http *h);

/* Counters of @h into @out. Loop thread only. */
void loki_http_stats(const struct loki_http *h, struct loki_http_stats *out);

/*
 * Stop listening and close every connection, answered or not; the memory goes once the loop
 * has run the close callbacks, so run it before uv_loop_close(). No callback runs again.
 * NULL is a no-op. Loop thread only.
 */
void loki_http_destroy(struct loki_http *h);

#endif
