/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The /metrics and health endpoint: just enough HTTP/1.1 for a Prometheus
 * scrape, a kubelet probe or a curl, on the caller's libuv loop. A
 * connection reads one request head into a fixed buffer, gets one answer
 * and is closed once it is written; nothing is kept between requests.
 *
 * Nobody can hold the endpoint: every connection has a deadline (the
 * request head within timeout_ms of the accept, the answer taken within
 * timeout_ms of being sent: a slow sender or a reader that never reads is
 * closed by a sweep timer), and when all max_conns slots are taken the
 * oldest connection is closed to make room for the new one. A scraper
 * sends its request as soon as it connects, so it is always among the
 * newest; idle connections are the oldest and go first. Connections sit on
 * one list in accept order (oldest at the head).
 *
 * The endpoint's memory is released from the close callbacks of its last
 * handle (libuv's handle lifetime rule: memory of a handle is the caller's
 * until its close callback has run).
 */
#include "loki/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

struct conn {
    uv_tcp_t h;
    struct loki_http *srv;
    struct conn *next, *prev; /* accept order; unlinked when its close starts */
    uint64_t deadline;        /* uv_now() ms */
    uv_write_t w;
    char req[LOKI_HTTP_HEAD_MAX + 1];
    size_t len;
    char *resp;
    bool answered;
};

struct loki_http {
    uv_tcp_t listener;
    uv_timer_t sweep; /* closes connections past their deadline; runs while any is open */
    uv_loop_t *loop;
    struct loki_http_config cfg;
    char addr[64];
    int port;
    struct conn *head, *tail; /* live connections (not closing), oldest first */
    struct loki_http_stats st;
    int n_open;   /* handles whose close callback has not run: listener, sweep, each conn */
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
    free(c->resp);
    free(c);
    handle_gone(s);
}

static void unlink_conn(struct conn *c)
{
    struct loki_http *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        s->tail = c->prev;
    c->next = c->prev = NULL;
    s->st.open--;
}

static void conn_close(struct conn *c)
{
    if (uv_is_closing((uv_handle_t *)&c->h))
        return;
    unlink_conn(c);
    uv_close((uv_handle_t *)&c->h, conn_closed);
}

static void written(uv_write_t *w, int status)
{
    conn_close(w->data);
}

static void respond(struct conn *c, const char *code, const char *ctype, const char *body,
                    size_t len, bool head_only)
{
    char head[256];
    int hn = snprintf(head, sizeof(head),
                      "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      code, ctype, head_only ? 0 : len);
    if (head_only)
        len = 0;
    c->resp = malloc((size_t)hn + len);
    if (!c->resp) {
        conn_close(c);
        return;
    }
    memcpy(c->resp, head, (size_t)hn);
    if (len)
        memcpy(c->resp + hn, body, len);
    c->answered = true;
    c->srv->st.answered++;
    /* as long again to take the answer as to send the request */
    c->deadline = uv_now(c->srv->loop) + c->srv->cfg.timeout_ms;
    uv_buf_t buf = uv_buf_init(c->resp, (unsigned)((size_t)hn + len));
    c->w.data = c;
    if (uv_write(&c->w, (uv_stream_t *)&c->h, &buf, 1, written))
        conn_close(c);
}

#define RESPOND_TEXT(c, code, msg, head_only)                                                      \
    respond(c, code, "text/plain; charset=utf-8", msg, sizeof(msg) - 1, head_only)

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct conn *c = h->data;
    *buf = uv_buf_init(c->req + c->len, (unsigned)(sizeof(c->req) - 1 - c->len));
}

static bool path_is(const char *target, size_t pl, const char *path)
{
    return pl == strlen(path) && !strncmp(target, path, pl);
}

/* Answer the complete request head in c->req. */
static void answer(struct conn *c)
{
    struct loki_http *s = c->srv;
    size_t ml = strcspn(c->req, " \r\n");
    const char *target = c->req + ml;
    /* request line: method SP target...; anything else is not HTTP */
    if (!ml || *target != ' ' || target[1] != '/') {
        RESPOND_TEXT(c, "400 Bad Request", "bad request\n", false);
        return;
    }
    target++;
    bool get = ml == 3 && !strncmp(c->req, "GET", 3), head = ml == 4 && !strncmp(c->req, "HEAD", 4);
    size_t pl = strcspn(target, " ?\r\n");
    if (!get && !head) {
        RESPOND_TEXT(c, "405 Method Not Allowed", "only GET and HEAD\n", false);
    } else if (path_is(target, pl, "/metrics")) {
        const char *body = NULL;
        size_t len = 0;
        int rc = s->cfg.render(s->cfg.ctx, &body, &len);
        if (rc == -ENOMEM)
            RESPOND_TEXT(c, "500 Internal Server Error", "out of memory\n", head);
        else if (rc)
            RESPOND_TEXT(c, "500 Internal Server Error", "cannot render the metrics\n", head);
        else
            respond(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body, len, head);
    } else if (path_is(target, pl, "/healthz")) {
        if (!s->cfg.live || s->cfg.live(s->cfg.ctx))
            RESPOND_TEXT(c, "200 OK", "ok\n", head);
        else
            RESPOND_TEXT(c, "503 Service Unavailable", "not live\n", head);
    } else if (path_is(target, pl, "/readyz") && s->cfg.ready) {
        if (s->cfg.ready(s->cfg.ctx))
            RESPOND_TEXT(c, "200 OK", "ready\n", head);
        else
            RESPOND_TEXT(c, "503 Service Unavailable", "not ready\n", head);
    } else {
        RESPOND_TEXT(c, "404 Not Found", "not found: try /metrics\n", head);
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
        if (c->len >= sizeof(c->req) - 1) {
            uv_read_stop(st);
            RESPOND_TEXT(c, "431 Request Header Fields Too Large", "request too large\n", false);
        }
        return;
    }
    uv_read_stop(st);
    answer(c);
}

static void on_sweep(uv_timer_t *t)
{
    struct loki_http *s = t->data;
    uint64_t now = uv_now(s->loop);
    for (struct conn *c = s->head, *next; c; c = next) {
        next = c->next;
        if (now >= c->deadline) {
            s->st.timed_out++;
            conn_close(c);
        }
    }
    if (!s->head)
        uv_timer_stop(t);
}

static void on_connection(uv_stream_t *l, int status)
{
    struct loki_http *s = l->data;
    if (status < 0 || s->closing)
        return;
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        return; /* the connection waits in the backlog for the next one */
    c->srv = s;
    uv_tcp_init(s->loop, &c->h);
    c->h.data = c;
    s->n_open++;
    if (uv_accept(l, (uv_stream_t *)&c->h)) {
        uv_close((uv_handle_t *)&c->h, conn_closed);
        return;
    }
    s->st.accepted++;
    /* full: the oldest connection makes room (an idle one, or a reader that stalls) */
    if (s->st.open >= s->cfg.max_conns && s->head) {
        s->st.evicted++;
        conn_close(s->head);
    }
    c->prev = s->tail;
    if (s->tail)
        s->tail->next = c;
    else
        s->head = c;
    s->tail = c;
    s->st.open++;
    c->deadline = uv_now(s->loop) + s->cfg.timeout_ms;
    if (!uv_is_active((uv_handle_t *)&s->sweep)) {
        uint64_t every = s->cfg.timeout_ms / 4;
        every = every < 10 ? 10 : every > 1000 ? 1000 : every;
        uv_timer_start(&s->sweep, on_sweep, every, every);
    }
    if (uv_read_start((uv_stream_t *)&c->h, on_alloc, on_read))
        conn_close(c);
}

static void handle_closed(uv_handle_t *h)
{
    handle_gone(h->data);
}

int loki_http_create(struct uv_loop_s *loop, const struct loki_http_config *cfg,
                     struct loki_http **out)
{
    struct sockaddr_storage a;
    const char *addr = cfg->address && cfg->address[0] ? cfg->address : LOKI_HTTP_DEFAULT_ADDR;
    int rc;
    if (!cfg->render || cfg->port < 0 || cfg->port > 65535 || cfg->max_conns < 0 ||
        strlen(addr) >= sizeof(((struct loki_http *)0)->addr))
        return UV_EINVAL;
    if (uv_ip4_addr(addr, cfg->port, (struct sockaddr_in *)&a) &&
        uv_ip6_addr(addr, cfg->port, (struct sockaddr_in6 *)&a))
        return UV_EINVAL;
    struct loki_http *s = calloc(1, sizeof(*s));
    if (!s)
        return UV_ENOMEM;
    s->loop = loop;
    s->cfg = *cfg;
    snprintf(s->addr, sizeof(s->addr), "%s", addr);
    s->cfg.address = s->addr;
    if (!s->cfg.max_conns)
        s->cfg.max_conns = LOKI_HTTP_MAX_CONNS;
    if (!s->cfg.timeout_ms)
        s->cfg.timeout_ms = LOKI_HTTP_TIMEOUT_MS;
    if ((rc = uv_tcp_init(loop, &s->listener))) {
        free(s);
        return rc;
    }
    s->listener.data = s;
    uv_timer_init(loop, &s->sweep);
    s->sweep.data = s;
    s->n_open = 2;
    struct sockaddr_storage got;
    int len = sizeof(got);
    if ((rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&a, 0)) ||
        (rc = uv_listen((uv_stream_t *)&s->listener, 128, on_connection)) ||
        (rc = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&got, &len))) {
        s->closing = true;
        uv_close((uv_handle_t *)&s->listener, handle_closed);
        uv_close((uv_handle_t *)&s->sweep, handle_closed);
        return rc;
    }
    s->port = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                              : ((struct sockaddr_in *)&got)->sin_port);
    *out = s;
    return 0;
}

int loki_http_port(const struct loki_http *h)
{
    return h->port;
}

void loki_http_stats(const struct loki_http *h, struct loki_http_stats *out)
{
    *out = h->st;
}

void loki_http_destroy(struct loki_http *h)
{
    if (!h)
        return;
    h->closing = true;
    uv_close((uv_handle_t *)&h->listener, handle_closed);
    uv_close((uv_handle_t *)&h->sweep, handle_closed);
    while (h->head)
        conn_close(h->head);
}
