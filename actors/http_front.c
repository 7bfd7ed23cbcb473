/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP front door: KServe v2 over HTTP/1.1 (libmicrohttpd), opt-in, in front of lokid.
 *
 * Why a client of lokid's own socket. Every HTTP infer request is submitted through the C
 * client library (runtime/client) over one of a few shared connections to lokid's Unix socket,
 * exactly as `loki load` would. That gives it, with no second path into the router, the same
 * payload cap, the same in-flight limits (per connection and frontend.max_inflight), the same
 * admission control, readiness and drain answers, the same exactly-once accounting and the same
 * counters as every other client; cancel-free, priority-free semantics stay lokid's business.
 * The price is one copy of the payload and a local socket hop (tens of microseconds), which an
 * HTTP and JSON path pays many times over anyway. Hooking into the router actor directly would
 * need a second kind of "connection" for replies (loki_frontend_reply() answers a frontend
 * connection), and every limit above duplicated or factored out of the frontend.
 *
 *   HTTP client ─TCP─▶ libmicrohttpd ─(front thread: parse, submit)─▶ loki_client ─unix─▶ lokid
 *   HTTP client ◀─TCP─ libmicrohttpd ◀─(reader thread: render, resume)─ loki_client ◀─unix─┘
 *
 * Threads. The front door runs on its own thread (the "front thread"), never on lokid's loop:
 * it owns the libmicrohttpd daemon in external-epoll mode (poll() on MHD's epoll descriptor and
 * an eventfd for stop) and the loki_client handles (connect, keep-alive ping, reconnect). A
 * request is parsed and submitted on the front thread, its connection suspended first
 * (MHD_suspend_connection) so the reply can never resume it too early; the client library's
 * reader thread renders the reply into the request, resumes the connection and writes the
 * front thread's eventfd (libmicrohttpd's own wake-up does not reach an external poll); the
 * front thread then queues the response. `done` (release on the reader, acquire on the front
 * thread) hands the rendered response over (D1 pairs with D2).
 *
 * Exactly one response. loki_client_submit() either fails at once (answered here: 503, 413,
 * 400) or runs its callback exactly once: the reply, LOKI_STATUS_TIMEOUT after
 * frontend.http.request_timeout_s (504), or LOKI_STATUS_CLOSED when the connection to lokid
 * ends (503). A request's memory is freed only by MHD's completion callback, which comes after
 * its response (a suspended connection is never completed: stop closes the clients, so every
 * waiting request is resumed, before the daemon stops).
 *
 * Keep-alive. lokid closes a connection idle for frontend.idle_timeout_s; the front thread pings
 * each connection at a third of it, so a request does not race an idle close. A connection that
 * died anyway (a write failed, lokid closed it) is closed and made again, with backoff while
 * lokid does not answer; a request that finds no live connection waits for one (2 s at most,
 * then 503) instead of failing at once.
 *
 * Loading. libmicrohttpd is opened (dlopen) when a front door is created, not linked: lokid is
 * also its workers' executable, and linking would load it and GnuTLS's eight libraries into
 * every lokid and every worker at each exec (3.5 ms more a process start, measured), for a
 * feature that is off by default; a host without libmicrohttpd runs lokid all the same.
 *
 * Memory. Each HTTP request allocates its body buffer and its rendered response: the front door
 * is an adapter at the edge, sized by libmicrohttpd's connection limit, not lokid's hot path
 * (which starts at the Unix socket, as for every client).
 */
#include "http_front_internal.h"

#include <errno.h>
#include <microhttpd.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "http_kserve.h"
#include "loki/client.h"
#include "loki/clock.h"
#include "loki/compiler.h"
#include "loki/error.h"
#include "loki/log.h"

enum route { R_INFER, R_LIVE, R_READY, R_MODEL_READY };
enum state { S_BODY, S_WAIT, S_SENT };

/* One HTTP request (MHD's con_cls). Front thread, except what the reader fills before D1. */
struct req {
    struct loki_http_front *hf;
    struct MHD_Connection *conn;
    struct lokid_conn *lc; /* the connection it was submitted on */
    enum route route;
    enum state state;
    int model;
    bool too_big;
    struct req *next_pending;
    uint64_t pending_until_ns;
    uint8_t *body;
    size_t len, cap, seen;
    size_t header_len; /* Inference-Header-Content-Length, 0 absent */
    struct loki_kserve_req kq;
    atomic_bool done;
    struct loki_kserve_resp resp; /* written before done (D1), read after it (D2) */
};

/* ---- responses ------------------------------------------------------------------------------- */

static void count_status(struct loki_http_front *hf, unsigned http)
{
    atomic_fetch_add_explicit(&hf->requests, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(http < 300   ? &hf->s2xx
                              : http < 500 ? &hf->s4xx
                                           : &hf->s5xx,
                              1, memory_order_relaxed);
}

/* Queue @rs on @c, handing its body to libmicrohttpd. */
static enum MHD_Result send_resp(struct loki_http_front *hf, struct MHD_Connection *c,
                                 struct loki_kserve_resp *rs)
{
    static const char nomem[] = "{\"error\":\"out of memory\"}";
    struct MHD_Response *m;
    unsigned http = rs->http;
    if (rs->body)
        m = MHD_create_response_from_buffer(rs->len, rs->body, MHD_RESPMEM_MUST_FREE);
    else /* rendering ran out of memory */
        m = MHD_create_response_from_buffer(sizeof(nomem) - 1, (void *)nomem,
                                            MHD_RESPMEM_PERSISTENT),
        http = 500;
    if (!m) {
        free(rs->body);
        rs->body = NULL;
        return MHD_NO; /* closes the connection: the one case without a response */
    }
    rs->body = NULL; /* MHD frees it with the response */
    char num[32];
    if (rs->header_len) {
        MHD_add_response_header(m, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
        snprintf(num, sizeof(num), "%zu", rs->header_len);
        MHD_add_response_header(m, "Inference-Header-Content-Length", num);
    } else {
        MHD_add_response_header(m, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    }
    if (rs->retry_after_s) {
        snprintf(num, sizeof(num), "%u", rs->retry_after_s);
        MHD_add_response_header(m, MHD_HTTP_HEADER_RETRY_AFTER, num);
    }
    if (rs->close)
        MHD_add_response_header(m, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ok = MHD_queue_response(c, http, m);
    MHD_destroy_response(m);
    count_status(hf, http);
    return ok;
}

/* A JSON error response now. */
static enum MHD_Result send_error(struct loki_http_front *hf, struct MHD_Connection *c,
                                  unsigned http, unsigned retry_after_s, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static enum MHD_Result send_error(struct loki_http_front *hf, struct MHD_Connection *c,
                                  unsigned http, unsigned retry_after_s, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct loki_kserve_resp rs;
    if (loki_kserve_render_error(http, msg, &rs))
        rs = (struct loki_kserve_resp){.http = http};
    rs.retry_after_s = retry_after_s;
    return send_resp(hf, c, &rs);
}

/* A small JSON body (metadata, health) from a static or rendered string; @text is copied. */
static enum MHD_Result send_json(struct loki_http_front *hf, struct MHD_Connection *c,
                                 unsigned http, const char *text, size_t len)
{
    struct loki_kserve_resp rs = {.http = http, .body = malloc(len ? len : 1), .len = len};
    if (rs.body)
        memcpy(rs.body, text, len);
    return send_resp(hf, c, &rs);
}

/* ---- lokid's replies (the client library's reader thread) ------------------------------------ */

/* The response is in q->resp: hand it to the front thread and wake it. */
static void complete(struct req *q)
{
    struct MHD_Connection *conn = q->conn; /* q may be freed once resumed */
    int wake_fd = q->hf->wake_fd;
    /* D1: release the rendered response to the front thread (pairs with D2) */
    atomic_store_explicit(&q->done, true, memory_order_release);
    MHD_resume_connection(conn);
    /* in external-epoll mode libmicrohttpd's own wake-up does not reach our poll(): the
     * eventfd does, and the next MHD_run() processes the resume */
    uint64_t one = 1;
    (void)!write(wake_fd, &one, sizeof(one));
}

static void note_closed(struct req *q, const struct loki_reply *r)
{
    if (r->status == LOKI_STATUS_CLOSED && q->lc)
        atomic_store_explicit(&q->lc->dead, true, memory_order_relaxed);
}

static void on_infer_reply(void *ctx, const struct loki_reply *r)
{
    struct req *q = ctx;
    note_closed(q, r);
    if (loki_kserve_render_reply(q->hf->models[q->model].name, &q->kq, r, &q->resp))
        q->resp = (struct loki_kserve_resp){.http = 500}; /* send_resp says out of memory */
    complete(q);
}

static void health_json(struct req *q, unsigned http, const char *key, bool yes, const char *why)
{
    char text[256];
    int n = snprintf(text, sizeof(text), "{\"%s\":%s%s%s%s}", key, yes ? "true" : "false",
                     why ? ",\"reason\":\"" : "", why ? why : "", why ? "\"" : "");
    q->resp = (struct loki_kserve_resp){.http = http, .body = malloc((size_t)n), .len = (size_t)n};
    if (q->resp.body)
        memcpy(q->resp.body, text, (size_t)n);
}

/* ping (live) or status (ready) answered, or not */
static void on_health_reply(void *ctx, const struct loki_reply *r)
{
    struct req *q = ctx;
    note_closed(q, r);
    if (q->route == R_LIVE) {
        bool ok = r->status == LOKI_STATUS_OK;
        health_json(q, ok ? 200 : 503, "live", ok, ok ? NULL : "lokid did not answer a ping");
    } else {
        const char *why = r->status != LOKI_STATUS_OK ? "lokid did not answer a status request"
                          : r->draining               ? "draining"
                          : !r->ready                 ? "not ready: workers are starting"
                                                      : NULL;
        health_json(q, why ? 503 : 200, "ready", !why, why);
    }
    complete(q);
}

static void on_ping(void *ctx, const struct loki_reply *r)
{
    struct lokid_conn *lc = ctx;
    if (r->status == LOKI_STATUS_CLOSED)
        atomic_store_explicit(&lc->dead, true, memory_order_relaxed);
}

/* ---- the connections to lokid (front thread) ------------------------------------------------- */

static bool conn_live(struct lokid_conn *lc)
{
    return lc->c && !atomic_load_explicit(&lc->dead, memory_order_relaxed);
}

/* Close dead connections, make missing ones (with backoff), ping idle ones. Returns the ms
 * until it wants to run again. */
static int housekeeping(struct loki_http_front *hf)
{
    uint64_t now = loki_now_ns(), next = now + 1000000000ull;
    for (int i = 0; i < hf->n_conns; i++) {
        struct lokid_conn *lc = &hf->conns[i];
        if (lc->c && atomic_load_explicit(&lc->dead, memory_order_relaxed)) {
            loki_client_close(lc->c); /* whatever still waited completes "closed" (503) */
            lc->c = NULL;
            lc->retry_at_ns = now;
        }
        if (!lc->c && now >= lc->retry_at_ns) {
            struct loki_client_opts o = {.connect_timeout_ms = CONNECT_TIMEOUT_MS,
                                         .name = "http-front"};
            int rc = loki_client_connect(hf->sock, &o, &lc->c);
            now = loki_now_ns();
            if (rc) {
                lc->c = NULL;
                lc->backoff_ms = lc->backoff_ms ? lc->backoff_ms * 2 : BACKOFF_MIN_MS;
                if (lc->backoff_ms > BACKOFF_MAX_MS)
                    lc->backoff_ms = BACKOFF_MAX_MS;
                lc->retry_at_ns = now + lc->backoff_ms * 1000000ull;
                if (!lc->warned && rc != -ETIMEDOUT)
                    loki_log(LOKI_LOG_WARN, "http: cannot connect to lokid at %s: %s (retrying)",
                             hf->sock, loki_strerror(rc));
                lc->warned = true;
            } else {
                atomic_store_explicit(&lc->dead, false, memory_order_relaxed);
                lc->backoff_ms = 0;
                lc->warned = false;
                lc->ping_at_ns = now + hf->ping_ns;
                atomic_fetch_add_explicit(&hf->connects, 1, memory_order_relaxed);
            }
        }
        if (conn_live(lc) && now >= lc->ping_at_ns) {
            if (loki_client_request(lc->c, LOKI_MSG_PING, PING_TIMEOUT_MS, on_ping, lc, NULL) ==
                -EPIPE)
                atomic_store_explicit(&lc->dead, true, memory_order_relaxed);
            lc->ping_at_ns = now + hf->ping_ns;
        }
        uint64_t t = lc->c ? lc->ping_at_ns : lc->retry_at_ns;
        if (t < next)
            next = t;
    }
    return next > now ? (int)((next - now) / 1000000 + 1) : 0;
}

/*
 * Submit @q (suspended by the caller) on a live connection: the callback will run exactly once
 * (0), or nothing was sent (the error). @infer: an infer request, else a ping or a status.
 */
static int submit(struct loki_http_front *hf, struct req *q)
{
    int rc = -ENOTCONN;
    for (int k = 0; k < hf->n_conns; k++) {
        struct lokid_conn *lc = &hf->conns[(hf->rr + (unsigned)k) % (unsigned)hf->n_conns];
        if (!conn_live(lc))
            continue;
        q->lc = lc;
        if (q->route == R_INFER) {
            struct loki_client_req cr = {.pipeline = hf->models[q->model].name,
                                         .payload = q->kq.payload,
                                         .payload_len = q->kq.payload_len,
                                         .deadline_ms = q->kq.deadline_ms,
                                         .timeout_ms = hf->cfg.request_timeout_s * 1e3};
            rc = loki_client_submit(lc->c, &cr, on_infer_reply, q, NULL);
        } else {
            rc = loki_client_request(lc->c, q->route == R_LIVE ? LOKI_MSG_PING : LOKI_MSG_STATUS,
                                     HEALTH_TIMEOUT_MS, on_health_reply, q, NULL);
        }
        if (rc == -EPIPE)
            atomic_store_explicit(&lc->dead, true, memory_order_relaxed);
        if (rc != -EPIPE && rc != -EAGAIN)
            break; /* sent, or an error another connection would give too */
    }
    hf->rr++;
    return rc;
}

/* ---- requests (front thread) ----------------------------------------------------------------- */

/* Answer @q, suspended, with the error of a submit that failed (rc). */
static void fail_submit(struct req *q, int rc)
{
    const char *why = rc == -ENOTCONN || rc == -EPIPE ? "not connected to lokid: retry"
                      : rc == -EAGAIN ? "overloaded: every connection to lokid is at its limit of "
                                        "requests in flight"
                                      : loki_strerror(rc);
    unsigned http = rc == LOKI_ETOOBIG ? 413 : rc == -EINVAL ? 400 : rc == -ENOMEM ? 500 : 503;
    if (loki_kserve_render_error(http, why, &q->resp))
        q->resp = (struct loki_kserve_resp){.http = 500};
    q->resp.retry_after_s = http == 503 ? 1 : 0;
    complete(q); /* resumes it; the access handler sends the response */
}

static bool no_connection(int rc)
{
    return rc == -ENOTCONN || rc == -EPIPE;
}

/*
 * Suspend @q's connection and hand it to lokid. With no live connection (lokid closed one, or
 * it is not up yet) it waits for the front thread to make one, RECONNECT_WAIT_MS at most; any
 * other failure is answered at once.
 */
static enum MHD_Result dispatch(struct loki_http_front *hf, struct req *q)
{
    q->state = S_WAIT;
    atomic_fetch_add_explicit(&hf->waiting, 1, memory_order_relaxed);
    MHD_suspend_connection(q->conn); /* before the submit: its reply may come at once */
    int rc = submit(hf, q);
    if (rc == 0) {
        if (q->route == R_INFER)
            atomic_fetch_add_explicit(&hf->infers, 1, memory_order_relaxed);
    } else if (no_connection(rc) && !hf->closing) {
        q->pending_until_ns = loki_now_ns() + RECONNECT_WAIT_MS * 1000000ull;
        if (hf->pending_tail)
            hf->pending_tail->next_pending = q;
        else
            hf->pending_head = q;
        hf->pending_tail = q;
    } else {
        fail_submit(q, rc);
    }
    return MHD_YES;
}

/* Submit what waited for a connection, or answer it once its wait is over (or now, @all).
 * Returns @ms, or less while some still wait. Front thread, outside MHD_run(). */
static int retry_pending(struct loki_http_front *hf, int ms, bool all)
{
    struct req *q = hf->pending_head, *keep = NULL, *tail = NULL;
    uint64_t now = loki_now_ns();
    hf->pending_head = hf->pending_tail = NULL;
    while (q) {
        struct req *next = q->next_pending;
        q->next_pending = NULL;
        int rc = all ? -ENOTCONN : submit(hf, q);
        if (rc == 0) {
            if (q->route == R_INFER)
                atomic_fetch_add_explicit(&hf->infers, 1, memory_order_relaxed);
        } else if (no_connection(rc) && !all && now < q->pending_until_ns) {
            if (tail)
                tail->next_pending = q;
            else
                keep = q;
            tail = q;
        } else {
            fail_submit(q, rc);
        }
        q = next;
    }
    hf->pending_head = keep;
    hf->pending_tail = tail;
    return keep && ms > 20 ? 20 : ms;
}

/* The body is complete: parse it and submit. */
static enum MHD_Result start_infer(struct loki_http_front *hf, struct req *q)
{
    char err[256];
    if (q->too_big)
        return send_error(hf, q->conn, 413, 0, "request body exceeds the limit of %zu bytes",
                          hf->body_max);
    int rc = loki_kserve_parse_infer(q->body, q->len, q->header_len, hf->max_payload, &q->kq, err,
                                     sizeof(err));
    if (rc)
        return send_error(hf, q->conn, rc == LOKI_ETOOBIG ? 413 : 400, 0, "%s", err);
    return dispatch(hf, q);
}

/* Append upload data to q->body, within the budget; past it, discard (413 at the end). */
static bool take_body(struct loki_http_front *hf, struct req *q, const char *data, size_t n)
{
    q->seen += n;
    if (q->too_big || q->len + n > hf->body_max) {
        q->too_big = true;
        return q->seen <= 4 * hf->body_max; /* beyond: close rather than read forever */
    }
    if (q->len + n > q->cap) {
        size_t cap = q->cap ? q->cap : 4096;
        while (cap < q->len + n)
            cap *= 2;
        if (cap > hf->body_max)
            cap = hf->body_max;
        uint8_t *b = realloc(q->body, cap);
        if (!b) {
            q->too_big = true; /* answered 413: no room for it here */
            return true;
        }
        q->body = b;
        q->cap = cap;
    }
    memcpy(q->body + q->len, data, n);
    q->len += n;
    return true;
}

static int model_index(struct loki_http_front *hf, const char *name, size_t n)
{
    for (int i = 0; i < hf->n_models; i++)
        if (strlen(hf->models[i].name) == n && !memcmp(hf->models[i].name, name, n))
            return i;
    return -1;
}

/* A header's value as a size; false when absent; *@bad when present but not a number. */
static bool header_size(struct MHD_Connection *c, const char *name, size_t *out, bool *bad)
{
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
    if (!v)
        return false;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    *bad = end == v || *end || errno || *v == '-' || x > SIZE_MAX / 2;
    *out = (size_t)x;
    return true;
}

/*
 * First call of a request: route it. Answers at once what needs no lokid (metadata, errors),
 * else allocates its struct req.
 */
static enum MHD_Result route(struct loki_http_front *hf, struct MHD_Connection *c, const char *url,
                             const char *method, void **con_cls)
{
    bool get = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);
    bool post = !strcmp(method, MHD_HTTP_METHOD_POST);
    enum route r = R_LIVE;
    bool meta = false;
    int model = -1;
    const char *m = NULL;
    size_t mlen = 0;
    if (!strcmp(url, "/v2/health/live")) {
        r = R_LIVE;
    } else if (!strcmp(url, "/v2/health/ready")) {
        r = R_READY;
    } else if (!strcmp(url, "/v2") || !strcmp(url, "/v2/")) {
        if (!get)
            goto not_allowed;
        return send_json(hf, c, 200, hf->server_meta, hf->server_meta_len);
    } else if (!strncmp(url, "/v2/models/", 11)) {
        m = url + 11;
        const char *slash = strchr(m, '/');
        mlen = slash ? (size_t)(slash - m) : strlen(m);
        const char *rest = slash ? slash : "";
        model = model_index(hf, m, mlen);
        if (!strcmp(rest, "") || !strcmp(rest, "/"))
            meta = true;
        else if (!strcmp(rest, "/ready"))
            r = R_MODEL_READY;
        else if (!strcmp(rest, "/infer"))
            r = R_INFER;
        else
            return send_error(hf, c, 404, 0,
                              "no such endpoint: %s (model versions are not supported)", url);
        if (model < 0)
            return send_error(hf, c, 404, 0, "unknown model '%.*s'", (int)(mlen > 64 ? 64 : mlen),
                              m);
        if (meta) {
            if (!get)
                goto not_allowed;
            return send_json(hf, c, 200, hf->models[model].meta, hf->models[model].meta_len);
        }
    } else {
        return send_error(hf, c, 404, 0, "no such endpoint: %s", url);
    }
    if (r == R_INFER ? !post : !get)
        goto not_allowed;

    struct req *q = calloc(1, sizeof(*q));
    if (!q)
        return send_error(hf, c, 500, 0, "out of memory");
    q->hf = hf;
    q->conn = c;
    q->route = r;
    q->model = model;
    if (r == R_INFER) {
        size_t n;
        bool bad = false;
        if (header_size(c, MHD_HTTP_HEADER_CONTENT_LENGTH, &n, &bad) && !bad && n > hf->body_max) {
            /* answered before the body when the client waits for "100 Continue" or the body
             * is huge (the connection then closes); else read and dropped, then answered, so
             * a client that sent it all reads the 413 rather than a reset */
            const char *ex =
                MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
            if ((ex && !strcasecmp(ex, "100-continue")) || n > 4 * hf->body_max) {
                free(q);
                return send_error(hf, c, 413, 0,
                                  "request body of %zu bytes exceeds the limit of %zu bytes", n,
                                  hf->body_max);
            }
            q->too_big = true;
        }
        if (header_size(c, "Inference-Header-Content-Length", &q->header_len, &bad) && bad) {
            free(q);
            return send_error(hf, c, 400, 0, "Inference-Header-Content-Length: not a number");
        }
    }
    *con_cls = q;
    return MHD_YES;
not_allowed:;
    struct loki_kserve_resp rs;
    if (loki_kserve_render_error(405, "method not allowed", &rs))
        rs = (struct loki_kserve_resp){.http = 405};
    return send_resp(hf, c, &rs);
}

enum MHD_Result loki__hf_on_access(void *cls, struct MHD_Connection *c, const char *url,
                                   const char *method, const char *version, const char *upload,
                                   size_t *upload_size, void **con_cls)
{
    struct loki_http_front *hf = cls;
    struct req *q = *con_cls;
    (void)version;
    if (!q)
        return route(hf, c, url, method, con_cls);
    switch (q->state) {
    case S_BODY:
        if (*upload_size) {
            bool go_on = take_body(hf, q, upload, *upload_size);
            *upload_size = 0;
            return go_on ? MHD_YES : MHD_NO;
        }
        if (q->route == R_INFER)
            return start_infer(hf, q);
        if (q->too_big || q->len)
            return send_error(hf, c, 400, 0, "a health check takes no body");
        return dispatch(hf, q);
    case S_WAIT:
        /* D2: resumed, so the reader (or dispatch) made the response (pairs with D1) */
        if (!atomic_load_explicit(&q->done, memory_order_acquire))
            return MHD_YES; /* not ours to answer yet (cannot happen: suspended until done) */
        atomic_fetch_sub_explicit(&hf->waiting, 1, memory_order_relaxed);
        q->state = S_SENT;
        atomic_fetch_add_explicit(&hf->responding, 1, memory_order_relaxed);
        return send_resp(hf, c, &q->resp);
    case S_SENT:
        break;
    }
    return MHD_YES;
}

void loki__hf_on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                           enum MHD_RequestTerminationCode toe)
{
    struct loki_http_front *hf = cls;
    struct req *q = *con_cls;
    (void)c;
    (void)toe;
    if (!q)
        return;
    LOKI_BUG_ON(q->state == S_WAIT && !atomic_load(&q->done)); /* completed while suspended */
    if (q->state == S_SENT)
        atomic_fetch_sub_explicit(&hf->responding, 1, memory_order_relaxed);
    else if (q->state == S_WAIT) /* resumed, then the client went before its response */
        atomic_fetch_sub_explicit(&hf->waiting, 1, memory_order_relaxed);
    free(q->body);
    free(q->resp.body);
    free(q);
    *con_cls = NULL;
}

/* libmicrohttpd's messages: into start's @err while starting, else the log. */
void loki__hf_on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct loki_http_front *hf = cls;
    char msg[256];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = 0;
    if (hf->start_err && hf->start_errlen)
        snprintf(hf->start_err, hf->start_errlen, "%s", msg);
    else
        loki_log(LOKI_LOG_WARN, "http: %s", msg);
}

/* ---- the front thread ------------------------------------------------------------------------ */

/* Requests (and pings) sent to lokid whose callback has not run yet. */
static uint64_t lokid_outstanding(struct loki_http_front *hf)
{
    uint64_t n = 0;
    for (int i = 0; i < hf->n_conns; i++)
        if (hf->conns[i].c) {
            struct loki_client_stats st;
            loki_client_stats(hf->conns[i].c, &st);
            n += st.outstanding;
        }
    return n;
}

void *loki__hf_front_main(void *arg)
{
    struct loki_http_front *hf = arg;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(hf->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    int epfd = di ? di->epoll_fd : -1;
    while (!atomic_load_explicit(&hf->stop, memory_order_acquire)) {
        int ms = retry_pending(hf, housekeeping(hf), false);
        MHD_UNSIGNED_LONG_LONG to;
        if (MHD_get_timeout(hf->mhd, &to) == MHD_YES && to < (MHD_UNSIGNED_LONG_LONG)ms)
            ms = (int)to;
        struct pollfd p[2] = {{.fd = epfd, .events = POLLIN},
                              {.fd = hf->wake_fd, .events = POLLIN}};
        if (poll(p, 2, ms) > 0 && (p[1].revents & POLLIN)) {
            uint64_t n;
            (void)!read(hf->wake_fd, &n, sizeof(n));
        }
        MHD_run(hf->mhd);
    }
    /* stop: no new connections; the clients, so whatever waits on lokid is answered "closed"
     * and resumed; then a bounded flush of the responses made */
    MHD_socket l = MHD_quiesce_daemon(hf->mhd);
    if (l != MHD_INVALID_SOCKET)
        close(l);
    hf->closing = true; /* a request on a kept-alive connection now gets 503 at once */
    /* lokid's frontend stopped first: the answers it wrote last are still in the sockets, and
     * closing a client would discard them (its shutdown drops unread data). Its reader takes
     * them, then EOF completes the rest "closed": wait for that, FLUSH_MS at most. */
    uint64_t until = loki_now_ns() + FLUSH_MS * 1000000ull;
    while (lokid_outstanding(hf) && loki_now_ns() < until) {
        struct pollfd p[2] = {{.fd = epfd, .events = POLLIN},
                              {.fd = hf->wake_fd, .events = POLLIN}};
        if (poll(p, 2, 10) > 0 && (p[1].revents & POLLIN)) {
            uint64_t n;
            (void)!read(hf->wake_fd, &n, sizeof(n));
        }
        MHD_run(hf->mhd);
    }
    for (int i = 0; i < hf->n_conns; i++) {
        loki_client_close(hf->conns[i].c);
        hf->conns[i].c = NULL;
    }
    retry_pending(hf, 0, true);
    until = loki_now_ns() + FLUSH_MS * 1000000ull;
    while ((atomic_load(&hf->waiting) || atomic_load(&hf->responding)) && loki_now_ns() < until) {
        struct pollfd p[2] = {{.fd = epfd, .events = POLLIN},
                              {.fd = hf->wake_fd, .events = POLLIN}};
        if (poll(p, 2, 10) > 0 && (p[1].revents & POLLIN)) {
            uint64_t n;
            (void)!read(hf->wake_fd, &n, sizeof(n));
        }
        MHD_run(hf->mhd);
    }
    return NULL;
}
