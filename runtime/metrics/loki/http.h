/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A minimal HTTP/1.1 endpoint on 127.0.0.1 for Prometheus scrapes: GET (or
 * HEAD) /metrics answers 200 with whatever the render callback returns,
 * other paths 404, other methods 405, a request head over 4 KiB 431; one
 * request per connection ("Connection: close"), at most 32 connections.
 * It runs on the caller's libuv loop; this header does not need <uv.h>.
 */
#ifndef LOKI_HTTP_H
#define LOKI_HTTP_H

#include <stddef.h>

struct uv_loop_s;
struct loki_http;

/*
 * Produce the body of GET /metrics: point *@body at @len bytes that stay valid until the
 * callback runs again (they are copied before then). Return 0, or a negative errno to
 * answer 500. Runs on the loop thread.
 */
typedef int (*loki_http_render_fn)(void *ctx, const char **body, size_t *len);

/*
 * Listen on 127.0.0.1:@port (0: a free port the kernel picks) on @loop and answer with
 * @render and @ctx. Returns 0 and the endpoint in *@out, or a negative libuv error code
 * (uv_strerror() names it: the port is taken...). Either way the loop must run again
 * before uv_loop_close() (a failed listener is closed through it). Loop thread only;
 * release with loki_http_destroy().
 */
int loki_http_create(struct uv_loop_s *loop, int port, loki_http_render_fn render, void *ctx,
                     struct loki_http **out);

/* The port @h listens on (the one picked when created with 0). */
int loki_http_port(const struct loki_http *h);

/*
 * Stop listening and close every connection, answered or not; the memory goes once the loop
 * has run the close callbacks, so run it before uv_loop_close(). @render is not called
 * again. NULL is a no-op. Loop thread only.
 */
void loki_http_destroy(struct loki_http *h);

#endif
