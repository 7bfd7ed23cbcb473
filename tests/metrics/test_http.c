/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The /metrics endpoint on a libuv loop in this process, on 127.0.0.1: a
 * client thread with plain blocking sockets sends one request and reads
 * the answer to EOF while the main thread runs the loop; the main thread
 * asserts. GET /metrics gets the callback's text; /healthz and /readyz the
 * probes' verdicts; other paths 404, other methods 405, non-HTTP 400, an
 * endless head 431, a failing render 500; a silent or dripping client is
 * closed at the timeout, idle connections never starve a scrape, the bind
 * address is honoured; destroying the endpoint closes its connections and
 * leaves nothing behind.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <uv.h>

#include "harness.h"
#include "loki/http.h"

static const char body_text[] = "# HELP loki_ready 1 when serving.\n# TYPE loki_ready gauge\n"
                                "loki_ready 1\n";

struct env {
    uv_loop_t loop;
    struct loki_http *h;
    int render_rc; /* what the callback returns */
    int renders;   /* times it ran */
    bool live, ready;
};

static int render(void *ctx, const char **body, size_t *len)
{
    struct env *e = ctx;
    e->renders++;
    *body = body_text;
    *len = sizeof(body_text) - 1;
    return e->render_rc;
}

static bool live(void *ctx)
{
    return ((struct env *)ctx)->live;
}

static bool ready(void *ctx)
{
    return ((struct env *)ctx)->ready;
}

/* The endpoint of the tests: defaults but for @timeout_ms (0: the default). */
static struct loki_http_config config(struct env *e, unsigned timeout_ms)
{
    return (struct loki_http_config){
        .render = render, .live = live, .ready = ready, .ctx = e, .timeout_ms = timeout_ms};
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof(*e));
    assert_non_null(e);
    assert_int_equal(uv_loop_init(&e->loop), 0);
    e->live = true;
    struct loki_http_config cfg = config(e, 0);
    assert_int_equal(loki_http_create(&e->loop, &cfg, &e->h), 0);
    assert_true(loki_http_port(e->h) > 0);
    *state = e;
    return 0;
}

/* Destroying the endpoint must leave no handle open: the loop then closes. */
static int teardown(void **state)
{
    struct env *e = *state;
    loki_http_destroy(e->h);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    free(e);
    return 0;
}

struct client {
    const char *addr; /* NULL: 127.0.0.1 */
    int port;
    int drip_ms;     /* send the request a byte at a time, this long apart */
    uint64_t end_ns; /* uv_hrtime() when the answer ended (EOF) */
    const char *req;
    size_t req_len;
    int pause_ms;  /* before signalling, after sending */
    bool wait_eof; /* signal before reading (the main thread then ends the connection) */
    char resp[16384];
    size_t len;
    int err; /* errno of a failed step; checked on the main thread */
    uv_async_t done;
};

static void *client_main(void *arg)
{
    struct client *c = arg;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->port)};
    inet_pton(AF_INET, c->addr ? c->addr : "127.0.0.1", &a.sin_addr);
    struct timeval tv = {.tv_sec = 10};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        c->err = errno;
        goto signal;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
        c->err = errno;
        goto close_fd;
    }
    for (size_t off = 0; off < c->req_len;) {
        if (c->drip_ms && off)
            usleep((useconds_t)c->drip_ms * 1000);
        ssize_t n = send(fd, c->req + off, c->drip_ms ? 1 : c->req_len - off, MSG_NOSIGNAL);
        if (n <= 0) {
            c->err = errno;
            goto close_fd;
        }
        off += (size_t)n;
    }
    if (c->pause_ms)
        usleep((useconds_t)c->pause_ms * 1000);
    if (c->wait_eof)
        uv_async_send(&c->done);
    for (;;) {
        ssize_t n = read(fd, c->resp + c->len, sizeof(c->resp) - 1 - c->len);
        if (n == 0)
            break;
        if (n < 0) {
            /* a connection closed before it was accepted is reset: also an end */
            if (errno != ECONNRESET || !c->wait_eof)
                c->err = errno;
            break;
        }
        c->len += (size_t)n;
    }
    c->end_ns = uv_hrtime();
    c->resp[c->len] = 0;
close_fd:
    if (!c->end_ns)
        c->end_ns = uv_hrtime();
    close(fd);
signal:
    if (!c->wait_eof || c->err)
        uv_async_send(&c->done);
    return NULL;
}

static void on_done(uv_async_t *a)
{
    uv_stop(a->loop);
}

/* Send @req (@n bytes) and read the whole answer into @c (its address kept) while the loop
 * runs. */
static void exchange_n(struct env *e, const char *req, size_t n, struct client *c)
{
    pthread_t th;
    const char *addr = c->addr;
    memset(c, 0, sizeof(*c));
    c->addr = addr;
    c->port = loki_http_port(e->h);
    c->req = req;
    c->req_len = n;
    assert_int_equal(uv_async_init(&e->loop, &c->done, on_done), 0);
    assert_int_equal(pthread_create(&th, NULL, client_main, c), 0);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    pthread_join(th, NULL);
    uv_close((uv_handle_t *)&c->done, NULL);
    uv_run(&e->loop, UV_RUN_NOWAIT); /* runs the close callback: @c may be reused */
    assert_int_equal(c->err, 0);
}

static void exchange(struct env *e, const char *req, size_t n, struct client *c)
{
    c->addr = NULL;
    exchange_n(e, req, n, c);
}

static void exchange_at(struct env *e, const char *req, struct client *c)
{
    exchange_n(e, req, strlen(req), c);
}

#define EXCHANGE(e, req, c) exchange(e, req, strlen(req), c)

/* The status line and the body after the blank line. */
static const char *body_of(const struct client *c)
{
    const char *b = strstr(c->resp, "\r\n\r\n");
    assert_non_null(b);
    return b + 4;
}

static void test_get_metrics(void **state)
{
    struct env *e = *state;
    struct client c;
    char want[512];
    EXCHANGE(e, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n", &c);
    snprintf(want, sizeof(want),
             "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
             "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
             sizeof(body_text) - 1, body_text);
    assert_string_equal(c.resp, want);
    assert_int_equal(e->renders, 1);
    /* a query string is ignored; each scrape renders afresh */
    EXCHANGE(e, "GET /metrics?name[]=loki_ready HTTP/1.1\r\n\r\n", &c);
    assert_int_equal(strncmp(c.resp, "HTTP/1.1 200 OK\r\n", 17), 0);
    assert_string_equal(body_of(&c), body_text);
    assert_int_equal(e->renders, 2);
}

static void test_head_has_no_body(void **state)
{
    struct env *e = *state;
    struct client c;
    EXCHANGE(e, "HEAD /metrics HTTP/1.1\r\n\r\n", &c);
    assert_int_equal(strncmp(c.resp, "HTTP/1.1 200 OK\r\n", 17), 0);
    assert_non_null(strstr(c.resp, "\r\nContent-Length: 0\r\n"));
    assert_string_equal(body_of(&c), "");
}

static void test_other_paths_404(void **state)
{
    struct env *e = *state;
    struct client c;
    static const char *const reqs[] = {"GET / HTTP/1.1\r\n\r\n", "GET /metricsx HTTP/1.1\r\n\r\n",
                                       "GET /status HTTP/1.0\n\n"};
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        EXCHANGE(e, reqs[i], &c);
        assert_int_equal(strncmp(c.resp, "HTTP/1.1 404 Not Found\r\n", 24), 0);
        assert_string_equal(body_of(&c), "not found: try /metrics\n");
    }
    assert_int_equal(e->renders, 0);
}

static void test_bad_requests(void **state)
{
    struct env *e = *state;
    struct client c;
    EXCHANGE(e, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &c);
    assert_int_equal(strncmp(c.resp, "HTTP/1.1 405 Method Not Allowed\r\n", 33), 0);
    static const char *const junk[] = {"hello\r\n\r\n", "GET metrics HTTP/1.1\r\n\r\n", "\r\n\r\n",
                                       "GET\n\n"};
    for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
        EXCHANGE(e, junk[i], &c);
        assert_int_equal(strncmp(c.resp, "HTTP/1.1 400 Bad Request\r\n", 26), 0);
        assert_string_equal(body_of(&c), "bad request\n");
    }
    /* a head that never ends within LOKI_HTTP_HEAD_MAX (4 KiB) */
    char big[LOKI_HTTP_HEAD_MAX];
    memcpy(big, "GET /metrics HTTP/1.1\r\nX-Pad: ", 30);
    memset(big + 30, 'a', sizeof(big) - 30);
    exchange(e, big, sizeof(big), &c);
    assert_int_equal(strncmp(c.resp, "HTTP/1.1 431 ", 13), 0);
    assert_int_equal(e->renders, 0);
}

static void test_render_failure_500(void **state)
{
    struct env *e = *state;
    struct client c;
    e->render_rc = -ENOMEM;
    EXCHANGE(e, "GET /metrics HTTP/1.1\r\n\r\n", &c);
    assert_int_equal(strncmp(c.resp, "HTTP/1.1 500 Internal Server Error\r\n", 36), 0);
    assert_string_equal(body_of(&c), "out of memory\n");
    e->render_rc = -EIO;
    EXCHANGE(e, "GET /metrics HTTP/1.1\r\n\r\n", &c);
    assert_int_equal(strncmp(c.resp, "HTTP/1.1 500 Internal Server Error\r\n", 36), 0);
}

/* A second endpoint on a port in use fails, and leaves nothing open on the loop. */
static void test_port_in_use(void **state)
{
    struct env *e = *state;
    struct loki_http *h2 = NULL;
    struct loki_http_config cfg = config(e, 0);
    cfg.port = loki_http_port(e->h);
    int rc = loki_http_create(&e->loop, &cfg, &h2);
    assert_int_equal(rc, UV_EADDRINUSE);
    assert_null(h2);
    /* an address that is not an IP literal: refused before anything is opened */
    cfg.port = 0;
    cfg.address = "localhost";
    assert_int_equal(loki_http_create(&e->loop, &cfg, &h2), UV_EINVAL);
    assert_null(h2);
}

/* Destroying the endpoint ends a connection waiting in the middle of a request. */
static void test_destroy_closes_connections(void **state)
{
    struct env *e = *state;
    struct client c;
    pthread_t th;
    memset(&c, 0, sizeof(c));
    c.port = loki_http_port(e->h);
    c.req = "GET /metr";
    c.req_len = strlen(c.req);
    c.pause_ms = 100; /* the loop accepts and reads meanwhile */
    c.wait_eof = true;
    assert_int_equal(uv_async_init(&e->loop, &c.done, on_done), 0);
    assert_int_equal(pthread_create(&th, NULL, client_main, &c), 0);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    loki_http_destroy(e->h);
    e->h = NULL;
    uv_close((uv_handle_t *)&c.done, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT); /* returns once every handle is closed */
    pthread_join(th, NULL);
    assert_int_equal(c.err, 0);
    assert_int_equal(c.len, 0);
    assert_int_equal(e->renders, 0);
}

/* /healthz follows the live probe, /readyz the ready probe: 200 or 503; HEAD has no body. */
static void test_health_probes(void **state)
{
    struct env *e = *state;
    struct client c;
    EXCHANGE(e, "GET /healthz HTTP/1.1\r\n\r\n", &c);
    assert_int_equal(strncmp(c.resp, "HTTP/1.1 200 OK\r\n", 17), 0);
    assert_string_equal(body_of(&c), "ok\n");
    EXCHANGE(e, "GET /readyz HTTP/1.1\r\n\r\n", &c);
    assert_int_equal(strncmp(c.resp, "HTTP/1.1 503 Service Unavailable\r\n", 34), 0);
    assert_string_equal(body_of(&c), "not ready\n");
    e->ready = true;
    EXCHANGE(e, "GET /readyz?verbose HTTP/1.1\r\n\r\n", &c);
    assert_int_equal(strncmp(c.resp, "HTTP/1.1 200 OK\r\n", 17), 0);
    assert_string_equal(body_of(&c), "ready\n");
    EXCHANGE(e, "HEAD /readyz HTTP/1.1\r\n\r\n", &c);
    assert_int_equal(strncmp(c.resp, "HTTP/1.1 200 OK\r\n", 17), 0);
    assert_string_equal(body_of(&c), "");
    e->live = false;
    EXCHANGE(e, "GET /healthz HTTP/1.1\r\n\r\n", &c);
    assert_int_equal(strncmp(c.resp, "HTTP/1.1 503 Service Unavailable\r\n", 34), 0);
    assert_int_equal(e->renders, 0);
}

/* Without a ready probe, /readyz is not served; without a live one, /healthz is always 200. */
static void test_probes_absent(void **state)
{
    struct env *e = *state;
    struct client c;
    loki_http_destroy(e->h);
    struct loki_http_config cfg = config(e, 0);
    cfg.live = cfg.ready = NULL;
    e->live = false;
    assert_int_equal(loki_http_create(&e->loop, &cfg, &e->h), 0);
    EXCHANGE(e, "GET /healthz HTTP/1.1\r\n\r\n", &c);
    assert_int_equal(strncmp(c.resp, "HTTP/1.1 200 OK\r\n", 17), 0);
    EXCHANGE(e, "GET /readyz HTTP/1.1\r\n\r\n", &c);
    assert_int_equal(strncmp(c.resp, "HTTP/1.1 404 Not Found\r\n", 24), 0);
}

/*
 * A connection that sends nothing, or its head a byte at a time (slowloris), is closed at the
 * timeout from its accept: bytes do not extend it.
 */
static void test_idle_timeout(void **state)
{
    struct env *e = *state;
    loki_http_destroy(e->h);
    struct loki_http_config cfg = config(e, 300);
    assert_int_equal(loki_http_create(&e->loop, &cfg, &e->h), 0);
    for (int slow = 0; slow < 2; slow++) {
        struct client c;
        pthread_t th;
        memset(&c, 0, sizeof(c));
        c.port = loki_http_port(e->h);
        /* slow: 40 bytes over 2 s, never a whole head */
        c.req = slow ? "GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaa" : "";
        c.req_len = strlen(c.req);
        c.drip_ms = slow ? 50 : 0;
        assert_int_equal(uv_async_init(&e->loop, &c.done, on_done), 0);
        uint64_t t0 = uv_hrtime();
        assert_int_equal(pthread_create(&th, NULL, client_main, &c), 0);
        uv_run(&e->loop, UV_RUN_DEFAULT);
        pthread_join(th, NULL);
        double ms = (double)(c.end_ns - t0) / 1e6;
        uv_close((uv_handle_t *)&c.done, NULL);
        uv_run(&e->loop, UV_RUN_NOWAIT);
        /* the write side may see the reset once the server closed */
        assert_true(c.err == 0 || c.err == ECONNRESET || c.err == EPIPE);
        assert_int_equal(c.len, 0);
        if (ms < 250 || ms > 1500)
            fail_msg("%s connection closed after %.0f ms (timeout 300 ms)", slow ? "slow" : "idle",
                     ms);
    }
    struct loki_http_stats st;
    loki_http_stats(e->h, &st);
    assert_int_equal(st.timed_out, 2);
    assert_int_equal(st.open, 0);
    assert_int_equal(e->renders, 0);
}

/* The address is configurable: on 127.0.0.2 the endpoint answers there and not on 127.0.0.1. */
static void test_bind_address(void **state)
{
    struct env *e = *state;
    struct client c;
    loki_http_destroy(e->h);
    struct loki_http_config cfg = config(e, 0);
    cfg.address = "127.0.0.2";
    assert_int_equal(loki_http_create(&e->loop, &cfg, &e->h), 0);
    memset(&c, 0, sizeof(c));
    c.addr = "127.0.0.2";
    exchange_at(e, "GET /metrics HTTP/1.1\r\n\r\n", &c);
    assert_int_equal(strncmp(c.resp, "HTTP/1.1 200 OK\r\n", 17), 0);
    /* 127.0.0.1 refuses: nothing listens there on that port */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)loki_http_port(e->h))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), -1);
    assert_int_equal(errno, ECONNREFUSED);
    close(fd);
    /* IPv6 loopback, where the machine has it */
    loki_http_destroy(e->h);
    cfg.address = "::1";
    int rc = loki_http_create(&e->loop, &cfg, &e->h);
    if (rc == UV_EADDRNOTAVAIL || rc == UV_EAFNOSUPPORT) {
        e->h = NULL;
        return;
    }
    assert_int_equal(rc, 0);
    assert_true(loki_http_port(e->h) > 0);
}

/*
 * Idle connections never starve a scrape: a local user holding more connections open than the
 * endpoint keeps (each sends nothing) must not stop the next GET /metrics from being answered.
 */
struct hog {
    int port, n;
    int fds[200];
    int err;
    char resp[16384];
    size_t len;
    uv_async_t done;
};

static void *hog_main(void *arg)
{
    struct hog *h = arg;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)h->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 10};
    for (int i = 0; i < h->n; i++) {
        h->fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (h->fds[i] < 0 || connect(h->fds[i], (struct sockaddr *)&a, sizeof(a))) {
            h->err = errno;
            goto out;
        }
    }
    usleep(200 * 1000); /* the loop accepts them all meanwhile */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    static const char req[] = "GET /metrics HTTP/1.1\r\n\r\n";
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) ||
        write(fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1) {
        h->err = errno;
    } else {
        ssize_t n;
        while ((n = read(fd, h->resp + h->len, sizeof(h->resp) - 1 - h->len)) > 0)
            h->len += (size_t)n;
        h->resp[h->len] = 0;
    }
    if (fd >= 0)
        close(fd);
out:
    for (int i = 0; i < h->n; i++)
        if (h->fds[i] > 0)
            close(h->fds[i]);
    uv_async_send(&h->done);
    return NULL;
}

static void test_idle_connections_do_not_starve_scrapes(void **state)
{
    struct env *e = *state;
    struct hog *h = calloc(1, sizeof(*h));
    pthread_t th;
    assert_non_null(h);
    h->port = loki_http_port(e->h);
    h->n = 100;
    assert_int_equal(uv_async_init(&e->loop, &h->done, on_done), 0);
    assert_int_equal(pthread_create(&th, NULL, hog_main, h), 0);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    pthread_join(th, NULL);
    uv_close((uv_handle_t *)&h->done, NULL);
    uv_run(&e->loop, UV_RUN_NOWAIT);
    assert_int_equal(h->err, 0);
    if (strncmp(h->resp, "HTTP/1.1 200 OK\r\n", 17))
        fail_msg("scrape behind %d idle connections got \"%.40s\"", h->n, h->resp);
    assert_int_equal(e->renders, 1);
    free(h);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_get_metrics),
        T(test_head_has_no_body),
        T(test_other_paths_404),
        T(test_bad_requests),
        T(test_render_failure_500),
        T(test_port_in_use),
        T(test_destroy_closes_connections),
        T(test_idle_connections_do_not_starve_scrapes),
        T(test_health_probes),
        T(test_probes_absent),
        T(test_idle_timeout),
        T(test_bind_address),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
