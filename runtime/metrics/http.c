/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The /metrics endpoint: just enough HTTP/1.1 for a Prometheus scrape or a
 * curl, on the caller's libuv loop. A connection reads one request head
 * into a fixed buffer, gets one answer and is closed once it is written;
 * nothing is kept between requests. The endpoint's memory is released from
 * the close callbacks of its last handle (libuv's handle lifetime rule:
 * memory of a handle is the caller's until its close callback has run).
 */
#include "loki/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define MAX_CONNS 32
#define REQ_MAX 4096

struct conn {
    uv_tcp_t h;
    struct loki_http *srv;
    struct conn *next, **pprev;
    uv_write_t w;
    char req[REQ_MAX];
    size_t len;
    char *resp;
    bool answered;
};

struct loki_http {
    uv_tcp_t listener;
    uv_loop_t *loop;
    loki_http_render_fn render;
    void *ctx;
    int port;
    int n_conns;
    struct conn *conns;
    int n_open;   /* handles whose close callback has not run: the listener and each conn */
    bool closing; /* destroyed (or failed to start): free with the last close callback */
};

static void handle_gone(struct loki_http *s)
{
    if (--s->n_open == 0 && s->closing)
        free(s);
}

static void conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct loki_http *s = c->srv;
    *c->pprev = c->next;
    if (c->next)
        c->next->pprev = c->pprev;
    s->n_conns--;
    free(c->resp);
    free(c);
    handle_gone(s);
}

static void conn_close(struct conn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->h))
        uv_close((uv_handle_t *)&c->h, conn_closed);
}

static void written(uv_write_t *w, int status)
{
    conn_close(w->data);
}

static void respond(struct conn *c, const char *code, const char *ctype, const char *body,
                    size_t len)
{
    char head[256];
    int hn = snprintf(head, sizeof(head),
                      "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      code, ctype, len);
    c->resp = malloc((size_t)hn + len);
    if (!c->resp) {
        conn_close(c);
        return;
    }
    memcpy(c->resp, head, (size_t)hn);
    if (len)
        memcpy(c->resp + hn, body, len);
    c->answered = true;
    uv_buf_t buf = uv_buf_init(c->resp, (unsigned)((size_t)hn + len));
    c->w.data = c;
    if (uv_write(&c->w, (uv_stream_t *)&c->h, &buf, 1, written))
        conn_close(c);
}

#define RESPOND_TEXT(c, code, msg) respond(c, code, "text/plain", msg, sizeof(msg) - 1)

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct conn *c = h->data;
    *buf = uv_buf_init(c->req + c->len, (unsigned)(sizeof(c->req) - 1 - c->len));
}

/* Answer the complete request head in c->req. */
static void answer(struct conn *c)
{
    struct loki_http *s = c->srv;
    size_t ml = strcspn(c->req, " \r\n");
    const char *target = c->req + ml;
    /* request line: method SP target...; anything else is not HTTP */
    if (!ml || *target != ' ' || target[1] != '/') {
        RESPOND_TEXT(c, "400 Bad Request", "bad request\n");
        return;
    }
    target++;
    bool get = ml == 3 && !strncmp(c->req, "GET", 3), head = ml == 4 && !strncmp(c->req, "HEAD", 4);
    size_t pl = strcspn(target, " ?\r\n");
    if (!get && !head) {
        RESPOND_TEXT(c, "405 Method Not Allowed", "only GET /metrics\n");
    } else if (pl == 8 && !strncmp(target, "/metrics", 8)) {
        const char *body = NULL;
        size_t len = 0;
        int rc = s->render(s->ctx, &body, &len);
        if (rc == -ENOMEM)
            RESPOND_TEXT(c, "500 Internal Server Error", "out of memory\n");
        else if (rc)
            RESPOND_TEXT(c, "500 Internal Server Error", "cannot render the metrics\n");
        else
            respond(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body, head ? 0 : len);
    } else {
        RESPOND_TEXT(c, "404 Not Found", "not found: try /metrics\n");
    }
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct conn *c = st->data;
    if (n < 0) {
        conn_close(c);
        return;
    }
    if (c->answered)
        return;
    c->len += (size_t)n;
    c->req[c->len] = 0;
    if (!strstr(c->req, "\r\n\r\n") && !strstr(c->req, "\n\n")) {
        if (c->len >= sizeof(c->req) - 1)
            RESPOND_TEXT(c, "431 Request Header Fields Too Large", "request too large\n");
        return;
    }
    uv_read_stop(st);
    answer(c);
}

static void on_connection(uv_stream_t *l, int status)
{
    struct loki_http *s = l->data;
    if (status < 0 || s->closing)
        return;
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->srv = s;
    uv_tcp_init(s->loop, &c->h);
    c->h.data = c;
    c->next = s->conns;
    if (c->next)
        c->next->pprev = &c->next;
    c->pprev = &s->conns;
    s->conns = c;
    s->n_conns++;
    s->n_open++;
    if (uv_accept(l, (uv_stream_t *)&c->h) || s->n_conns > MAX_CONNS ||
        uv_read_start((uv_stream_t *)&c->h, on_alloc, on_read))
        conn_close(c);
}

static void listener_closed(uv_handle_t *h)
{
    handle_gone(h->data);
}

int loki_http_create(struct uv_loop_s *loop, int port, loki_http_render_fn render, void *ctx,
                     struct loki_http **out)
{
    struct sockaddr_in a;
    int rc = uv_ip4_addr("127.0.0.1", port, &a);
    if (rc)
        return rc;
    struct loki_http *s = calloc(1, sizeof(*s));
    if (!s)
        return UV_ENOMEM;
    s->loop = loop;
    s->render = render;
    s->ctx = ctx;
    if ((rc = uv_tcp_init(loop, &s->listener))) {
        free(s);
        return rc;
    }
    s->listener.data = s;
    s->n_open = 1;
    struct sockaddr_in got;
    int len = sizeof(got);
    if ((rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&a, 0)) ||
        (rc = uv_listen((uv_stream_t *)&s->listener, 16, on_connection)) ||
        (rc = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&got, &len))) {
        s->closing = true;
        uv_close((uv_handle_t *)&s->listener, listener_closed);
        return rc;
    }
    s->port = ntohs(got.sin_port);
    *out = s;
    return 0;
}

int loki_http_port(const struct loki_http *h)
{
    return h->port;
}

void loki_http_destroy(struct loki_http *h)
{
    if (!h)
        return;
    h->closing = true;
    uv_close((uv_handle_t *)&h->listener, listener_closed);
    for (struct conn *c = h->conns; c; c = c->next)
        conn_close(c);
}
