/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Frontend tests over raw sockets (no client library), so each test controls
 * the exact bytes: framing, validation, limits, timeouts, slow readers, uid
 * refusal, disconnects with queries in flight, socket-file handling, and the
 * connection caps: idle timeout, per-uid cap, and a low RLIMIT_NOFILE (in a
 * helper process of this binary, which lowers its own limit and serves). The
 * owner is the echo server (echo.h), which answers from its own thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "echo.h"
#include "harness.h"
#include "loki/error.h"

static char sock_path[108];

static const char *fresh_path(void)
{
    static int n;
    char name[32];
    snprintf(name, sizeof(name), "fe-%d.sock", n++);
    assert_non_null(loki_test_tmp_path(name));
    assert_true(snprintf(sock_path, sizeof(sock_path), "%s", loki_test_tmp_path(name)) <
                (int)sizeof(sock_path));
    unlink(sock_path);
    return sock_path;
}

static int raw_connect(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

static void send_bytes(int fd, const void *p, size_t n)
{
    assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

static void send_raw_body(int fd, const void *body, uint32_t n)
{
    uint8_t h[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    send_bytes(fd, h, 4);
    send_bytes(fd, body, n);
}

static void send_infer(int fd, uint64_t id, const char *pipeline, const void *payload, uint32_t len)
{
    static uint8_t buf[1 << 18];
    struct loki_request r;
    loki_request_init(&r);
    r.type = LOKI_MSG_INFER;
    r.id = id;
    r.pipeline = loki_bytes_str(pipeline);
    r.payload.ptr = payload;
    r.payload.len = len;
    ssize_t n = loki_proto_encode_request(buf, sizeof(buf), &r);
    assert_true(n > 0);
    send_bytes(fd, buf, (size_t)n);
}

static void send_ctl(int fd, enum loki_msg_type t, uint64_t id)
{
    uint8_t buf[256];
    struct loki_request r;
    loki_request_init(&r);
    r.type = t;
    r.has_id = true;
    r.id = id;
    r.version = 1;
    ssize_t n = loki_proto_encode_request(buf, sizeof(buf), &r);
    send_bytes(fd, buf, (size_t)n);
}

/* Read one reply frame into @buf and decode it; returns 0, or -1 on EOF/timeout. */
static int read_reply(int fd, uint8_t *buf, size_t cap, struct loki_reply *r, int timeout_ms)
{
    size_t have = 0, want = 4;
    while (have < want) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, timeout_ms) <= 0)
            return -1;
        ssize_t k = recv(fd, buf + have, want - have, 0);
        if (k <= 0)
            return -1;
        have += (size_t)k;
        if (have == 4 && want == 4) {
            want = 4 + ((uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 |
                        buf[3]);
            assert_true(want <= cap);
        }
    }
    char err[LOKI_PROTO_ERR_MAX];
    int rc = loki_proto_decode_reply(buf + 4, want - 4, r, err, sizeof(err));
    if (rc)
        fail_msg("bad reply: %s", err);
    return 0;
}

static bool at_eof(int fd, int timeout_ms)
{
    uint8_t b[256];
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, timeout_ms) <= 0)
            return false;
        ssize_t k = recv(fd, b, sizeof(b), 0);
        if (k <= 0)
            return true;
    }
}

static struct echo_server *start(struct echo_opts *o)
{
    struct echo_server *s;
    o->path = fresh_path();
    assert_int_equal(echo_start(o, &s), 0);
    return s;
}

static struct loki_reply rep;
static uint8_t rbuf[1 << 20];

static void test_echo_and_control(void **st)
{
    struct echo_opts o = {0};
    struct echo_server *s = start(&o);
    struct stat sb;
    assert_int_equal(stat(sock_path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    int fd = raw_connect(sock_path);
    send_ctl(fd, LOKI_MSG_HELLO, 1);
    assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 2000), 0);
    assert_int_equal(rep.type, LOKI_MSG_HELLO);
    assert_int_equal(rep.version, 1);
    assert_int_equal(rep.n_pipelines, 2);
    assert_true(loki_bytes_eq(rep.server, "echo"));
    assert_int_equal(rep.max_payload, 64 * 1024);
    send_infer(fd, 77, "social", "hello", 5);
    assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 2000), 0);
    assert_true(rep.has_id && rep.id == 77);
    assert_int_equal(rep.status, LOKI_STATUS_OK);
    assert_int_equal(rep.n_outputs, 1);
    assert_memory_equal(rep.outputs[0].ptr, "hello", 5);
    assert_true(loki_bytes_eq(rep.paths[0], "social>echo"));
    send_ctl(fd, LOKI_MSG_STATUS, 2);
    assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 2000), 0);
    assert_true(rep.ready && !rep.draining && rep.connections == 1 && rep.id == 2);
    send_ctl(fd, LOKI_MSG_METRICS, 3);
    assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 2000), 0);
    bool found = false;
    for (uint32_t i = 0; i < rep.n_metrics; i++)
        if (loki_bytes_eq(rep.metrics[i].name, "frontend_requests")) {
            assert_true(rep.metrics[i].value == 1);
            found = true;
        }
    assert_true(found);
    send_ctl(fd, LOKI_MSG_PING, 4);
    assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 2000), 0);
    assert_true(rep.type == LOKI_MSG_PING && rep.status == LOKI_STATUS_OK && rep.id == 4);
    close(fd);
    echo_stop(s);
    assert_int_equal(access(sock_path, F_OK), -1); /* socket file removed on stop */
}

/* A report "format" the owner cannot render (the echo server has no on_report): bad_request. */
static void test_report_format_without_owner(void **st)
{
    struct echo_opts o = {0};
    struct echo_server *s = start(&o);
    int fd = raw_connect(sock_path);
    uint8_t buf[256];
    struct loki_request r;
    loki_request_init(&r);
    r.type = LOKI_MSG_STATUS;
    r.has_id = true;
    r.id = 5;
    r.format = loki_bytes_str("json");
    ssize_t n = loki_proto_encode_request(buf, sizeof(buf), &r);
    send_bytes(fd, buf, (size_t)n);
    assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 2000), 0);
    assert_true(rep.has_id && rep.id == 5 && rep.type == LOKI_MSG_STATUS);
    assert_int_equal(rep.status, LOKI_STATUS_BAD_REQUEST);
    assert_true(loki_bytes_eq(rep.error, "field 'format': unknown report format 'json'"));
    assert_int_equal(rep.report.len, 0);
    send_ctl(fd, LOKI_MSG_PING, 6); /* the connection stays usable */
    assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 2000), 0);
    assert_true(rep.id == 6 && rep.status == LOKI_STATUS_OK);
    close(fd);
    echo_stop(s);
}

static void test_bad_requests_keep_connection(void **st)
{
    struct echo_opts o = {0};
    struct echo_server *s = start(&o);
    int fd = raw_connect(sock_path);
    const uint8_t garbage[] = {0xc1, 0x00, 0x13};
    send_raw_body(fd, garbage, sizeof(garbage));
    assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 2000), 0);
    assert_int_equal(rep.status, LOKI_STATUS_BAD_REQUEST);
    assert_false(rep.has_id);
    assert_true(loki_bytes_eq(rep.error, "invalid msgpack byte 0xc1 at offset 0"));
    /* wrong type, id known: the error names the field and carries the id */
    const uint8_t wrong[] = {0x84, 0xa2, 'i',  'd',  0x09, 0xa8, 'p',  'i', 'p', 'e', 'l', 'i',
                             'n',  'e',  0x07, 0xa7, 'p',  'a',  'y',  'l', 'o', 'a', 'd', 0xc4,
                             0x00, 0xa4, 't',  'y',  'p',  'e',  0xa5, 'i', 'n', 'f', 'e', 'r'};
    send_raw_body(fd, wrong, sizeof(wrong));
    assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 2000), 0);
    assert_true(rep.has_id && rep.id == 9 && rep.status == LOKI_STATUS_BAD_REQUEST);
    assert_true(loki_bytes_eq(rep.error, "field 'pipeline': expected str, got int"));
    send_infer(fd, 10, "nosuch", "x", 1);
    assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 2000), 0);
    assert_true(rep.id == 10 && rep.status == LOKI_STATUS_UNKNOWN_PIPELINE);
    assert_true(loki_bytes_eq(rep.error, "unknown pipeline 'nosuch'"));
    /* payload over max_payload but frame within the limit: bad request, conn survives */
    static uint8_t big[64 * 1024 + 100];
    send_infer(fd, 11, "traffic", big, sizeof(big));
    assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 2000), 0);
    assert_true(rep.id == 11 && rep.status == LOKI_STATUS_BAD_REQUEST);
    assert_true(
        loki_bytes_eq(rep.error, "field 'payload': 65636 bytes exceeds the limit of 65536"));
    /* duplicate id while the first is in flight */
    send_infer(fd, 12, "traffic", "sleep:300", 9);
    send_infer(fd, 12, "traffic", "x", 1);
    assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 2000), 0);
    assert_true(rep.id == 12 && rep.status == LOKI_STATUS_BAD_REQUEST);
    assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 2000), 0);
    assert_true(rep.id == 12 && rep.status == LOKI_STATUS_OK);
    /* still usable */
    send_infer(fd, 13, "traffic", "ok", 2);
    assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 2000), 0);
    assert_true(rep.id == 13 && rep.status == LOKI_STATUS_OK);
    struct loki_frontend_stats fs;
    echo_stats(s, &fs);
    assert_int_equal(fs.bad_requests, 4);
    assert_int_equal(fs.unknown_pipeline, 1);
    close(fd);
    echo_stop(s);
}

static void test_oversized_frame_closes(void **st)
{
    struct echo_opts o = {0};
    struct echo_server *s = start(&o);
    int fd = raw_connect(sock_path);
    const uint8_t hdr[] = {0x7f, 0xff, 0xff, 0xff, 0x80};
    send_bytes(fd, hdr, sizeof(hdr));
    assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 2000), 0);
    assert_int_equal(rep.status, LOKI_STATUS_BAD_REQUEST);
    assert_true(loki_bytes_eq(rep.error, "frame of 2147483647 bytes exceeds the limit of 66560"));
    assert_true(at_eof(fd, 2000));
    close(fd);
    echo_stop(s);
}

static void test_half_frame_timeout(void **st)
{
    struct echo_opts o = {.frame_timeout_ms = 200};
    struct echo_server *s = start(&o);
    int fd = raw_connect(sock_path);
    int good = raw_connect(sock_path);
    const uint8_t half[] = {0x00, 0x00, 0x00, 0x20, 0x81};
    send_bytes(fd, half, sizeof(half));
    /* the good connection is served while the other one dangles */
    send_infer(good, 1, "traffic", "a", 1);
    assert_int_equal(read_reply(good, rbuf, sizeof(rbuf), &rep, 2000), 0);
    assert_int_equal(rep.status, LOKI_STATUS_OK);
    assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 3000), 0);
    assert_int_equal(rep.status, LOKI_STATUS_BAD_REQUEST);
    assert_true(
        loki_bytes_eq(rep.error, "incomplete frame: 5 bytes received, then nothing for 200 ms"));
    assert_true(at_eof(fd, 2000));
    send_infer(good, 2, "traffic", "b", 1);
    assert_int_equal(read_reply(good, rbuf, sizeof(rbuf), &rep, 2000), 0);
    assert_int_equal(rep.id, 2);
    struct loki_frontend_stats fs;
    echo_stats(s, &fs);
    assert_int_equal(fs.frame_timeouts, 1);
    close(fd);
    close(good);
    echo_stop(s);
}

static void test_uid_refused(void **st)
{
    struct echo_opts o = {.n_uids = 1, .uids = {getuid() + 1}};
    struct echo_server *s = start(&o);
    int fd = raw_connect(sock_path);
    assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 2000), 0);
    assert_int_equal(rep.status, LOKI_STATUS_ERROR);
    char want[96];
    snprintf(want, sizeof(want), "permission denied: uid %u is not allowed", getuid());
    assert_true(loki_bytes_eq(rep.error, want));
    assert_true(at_eof(fd, 2000));
    close(fd);
    struct loki_frontend_stats fs;
    echo_stats(s, &fs);
    assert_int_equal(fs.refused, 1);
    assert_int_equal(echo_delivered(s), 0);
    echo_stop(s);
    /* our own uid is let in */
    o.uids[0] = getuid();
    s = start(&o);
    fd = raw_connect(sock_path);
    send_ctl(fd, LOKI_MSG_PING, 1);
    assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 2000), 0);
    assert_int_equal(rep.status, LOKI_STATUS_OK);
    close(fd);
    echo_stop(s);
}

static void test_disconnect_in_flight(void **st)
{
    struct echo_opts o = {0};
    struct echo_server *s = start(&o);
    int fd = raw_connect(sock_path);
    for (uint64_t i = 0; i < 50; i++)
        send_infer(fd, i, "traffic", "sleep:150", 9);
    /* wait until all are delivered, then leave */
    for (int t = 0; t < 200 && echo_delivered(s) < 50; t++)
        usleep(10000);
    assert_int_equal(echo_delivered(s), 50);
    close(fd);
    struct loki_frontend_stats fs;
    for (int t = 0; t < 300; t++) {
        echo_stats(s, &fs);
        if (fs.late_replies == 50)
            break;
        usleep(10000);
    }
    assert_int_equal(fs.late_replies, 50);
    assert_int_equal(fs.inflight, 0);
    assert_int_equal(fs.connections, 0);
    fd = raw_connect(sock_path);
    send_infer(fd, 1, "traffic", "z", 1);
    assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 2000), 0);
    assert_int_equal(rep.status, LOKI_STATUS_OK);
    close(fd);
    echo_stop(s);
}

static void test_outstanding_limit(void **st)
{
    struct echo_opts o = {.max_outstanding = 4};
    struct echo_server *s = start(&o);
    int fd = raw_connect(sock_path);
    for (uint64_t i = 0; i < 6; i++)
        send_infer(fd, i, "traffic", "sleep:200", 9);
    int ok = 0, over = 0;
    for (int i = 0; i < 6; i++) {
        assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 3000), 0);
        if (rep.status == LOKI_STATUS_OK)
            ok++;
        if (rep.status == LOKI_STATUS_OVERLOADED) {
            over++;
            assert_true(rep.has_retry_after && rep.retry_after_ms > 0);
            assert_true(rep.id >= 4);
        }
    }
    assert_int_equal(ok, 4);
    assert_int_equal(over, 2);
    close(fd);
    echo_stop(s);
}

static void test_slow_reader_dropped(void **st)
{
    struct echo_opts o = {.max_write_queue = 256 * 1024};
    struct echo_server *s = start(&o);
    int fd = raw_connect(sock_path);
    int good = raw_connect(sock_path);
    static uint8_t payload[32 * 1024];
    static uint8_t frame[40 * 1024];
    struct loki_request r;
    loki_request_init(&r);
    r.type = LOKI_MSG_INFER;
    r.pipeline = loki_bytes_str("traffic");
    r.payload.ptr = payload;
    r.payload.len = sizeof(payload);
    /* never read: replies pile up in the kernel and then in the frontend */
    struct loki_frontend_stats fs;
    for (uint64_t i = 0; i < 2000; i++) {
        r.id = i;
        ssize_t n = loki_proto_encode_request(frame, sizeof(frame), &r);
        if (send(fd, frame, (size_t)n, MSG_NOSIGNAL) != n)
            break;
        echo_stats(s, &fs);
        if (fs.slow_drops)
            break;
    }
    for (int t = 0; t < 300; t++) {
        echo_stats(s, &fs);
        if (fs.slow_drops)
            break;
        usleep(10000);
    }
    assert_int_equal(fs.slow_drops, 1);
    send_infer(good, 1, "traffic", "g", 1);
    assert_int_equal(read_reply(good, rbuf, sizeof(rbuf), &rep, 2000), 0);
    assert_int_equal(rep.status, LOKI_STATUS_OK);
    close(fd);
    close(good);
    echo_stop(s);
}

static void test_socket_file_handling(void **st)
{
    struct echo_opts o = {0};
    struct echo_server *s, *s2;
    /* a stale socket (bound, nobody listening) is replaced */
    o.path = fresh_path();
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", o.path);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    close(fd);
    assert_int_equal(echo_start(&o, &s), 0);
    /* a live one is not */
    assert_int_equal(echo_start(&o, &s2), -EADDRINUSE);
    echo_stop(s);
    /* nor is a regular file */
    FILE *f = fopen(o.path, "w");
    fclose(f);
    assert_int_equal(echo_start(&o, &s2), -EEXIST);
    assert_int_equal(access(o.path, F_OK), 0);
    unlink(o.path);
}

/* Ping on @fd and expect the answer. */
static void ping_ok(int fd, uint64_t id)
{
    send_ctl(fd, LOKI_MSG_PING, id);
    assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 3000), 0);
    assert_true(rep.type == LOKI_MSG_PING && rep.status == LOKI_STATUS_OK && rep.id == id);
}

/* The connection-level error frame @want (status @status), then the end of the stream. */
static void expect_closed_with(int fd, enum loki_status status, const char *want)
{
    assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 3000), 0);
    if (!loki_bytes_eq(rep.error, want))
        fail_msg("error frame '%.*s', wanted '%s'", (int)rep.error.len, (const char *)rep.error.ptr,
                 want);
    assert_int_equal(rep.type, LOKI_MSG_NONE);
    assert_false(rep.has_id);
    assert_int_equal(rep.status, status);
    assert_true(at_eof(fd, 3000));
}

/*
 * Connect and ping. Returns 1 when served, 0 when refused with an error frame (its text in
 * @why), and fails the test on anything else: a silent close, or no answer at all.
 */
static int try_serve(const char *path, uint64_t id, int *fd_out, char *why, size_t whylen)
{
    uint8_t buf[256];
    struct loki_request r;
    int fd = raw_connect(path);
    loki_request_init(&r);
    r.type = LOKI_MSG_PING;
    r.has_id = true;
    r.id = id;
    ssize_t n = loki_proto_encode_request(buf, sizeof(buf), &r);
    /* a refused connection may be closed before the ping goes out: its frame is still there */
    (void)!send(fd, buf, (size_t)n, MSG_NOSIGNAL);
    if (read_reply(fd, rbuf, sizeof(rbuf), &rep, 3000) < 0)
        fail_msg("connection %llu: closed or silent, without an error frame",
                 (unsigned long long)id);
    if (rep.type == LOKI_MSG_PING && rep.status == LOKI_STATUS_OK) {
        *fd_out = fd;
        return 1;
    }
    assert_int_equal(rep.type, LOKI_MSG_NONE);
    snprintf(why, whylen, "%.*s", (int)rep.error.len, (const char *)rep.error.ptr);
    assert_true(at_eof(fd, 3000));
    close(fd);
    *fd_out = -1;
    return 0;
}

/*
 * Idle connections are closed after idle_timeout_s with an error frame, so they cannot hold
 * every connection slot; a connection over the cap is told which cap; a connection with a
 * query in flight, or one that keeps sending, is not idle, and its query is answered.
 */
static void test_idle_timeout(void **st)
{
    struct echo_opts o = {.max_conns = 4, .max_conns_per_uid = 4, .idle_timeout_s = 0.3};
    struct echo_server *s = start(&o);
    int busy = raw_connect(sock_path), chatty = raw_connect(sock_path);
    send_infer(busy, 1, "traffic", "sleep:900", 9);
    ping_ok(chatty, 1);
    int idle1 = raw_connect(sock_path), idle2 = raw_connect(sock_path);
    ping_ok(idle2, 1);
    /* every slot is taken: the fifth is refused, naming the cap */
    int extra = raw_connect(sock_path);
    expect_closed_with(extra, LOKI_STATUS_OVERLOADED, "too many connections (limit 4)");
    close(extra);
    for (uint64_t i = 0; i < 7; i++) { /* 700 ms, never 300 ms without a request */
        usleep(100 * 1000);
        ping_ok(chatty, 10 + i);
    }
    expect_closed_with(idle1, LOKI_STATUS_ERROR, "idle timeout: no request for 300 ms");
    expect_closed_with(idle2, LOKI_STATUS_ERROR, "idle timeout: no request for 300 ms");
    /* the slots they held serve a new client */
    int fresh = raw_connect(sock_path);
    ping_ok(fresh, 1);
    ping_ok(chatty, 20);
    /* in flight for 900 ms: answered, and only then does its idle clock start */
    assert_int_equal(read_reply(busy, rbuf, sizeof(rbuf), &rep, 3000), 0);
    assert_true(rep.id == 1 && rep.status == LOKI_STATUS_OK);
    expect_closed_with(busy, LOKI_STATUS_ERROR, "idle timeout: no request for 300 ms");
    struct loki_frontend_stats fs;
    echo_stats(s, &fs);
    assert_true(fs.idle_timeouts >= 3);
    assert_int_equal(fs.refused, 1);
    assert_int_equal(fs.late_replies, 0);
    assert_int_equal(fs.replies, 1);
    close(idle1);
    close(idle2);
    close(busy);
    close(chatty);
    close(fresh);
    echo_stop(s);
}

/*
 * A connection the server closes for a stalled frame still gets the replies to the queries it
 * had accepted, after the error frame and before the end of the stream.
 */
static void test_closing_answers_accepted(void **st)
{
    struct echo_opts o = {.frame_timeout_ms = 200};
    struct echo_server *s = start(&o);
    int fd = raw_connect(sock_path);
    send_infer(fd, 1, "traffic", "sleep:600", 9);
    send_infer(fd, 2, "social", "sleep:50", 8);
    const uint8_t half[] = {0x00, 0x00, 0x00, 0x20, 0x81};
    send_bytes(fd, half, sizeof(half));
    bool got[3] = {false, false, false};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(read_reply(fd, rbuf, sizeof(rbuf), &rep, 3000), 0);
        if (!rep.has_id) {
            assert_true(loki_bytes_eq(
                rep.error, "incomplete frame: 5 bytes received, then nothing for 200 ms"));
            assert_false(got[0]);
            got[0] = true;
        } else {
            assert_true(rep.id == 1 || rep.id == 2);
            assert_int_equal(rep.status, LOKI_STATUS_OK);
            got[rep.id] = true;
        }
    }
    assert_true(got[0] && got[1] && got[2]);
    assert_true(at_eof(fd, 3000));
    struct loki_frontend_stats fs;
    echo_stats(s, &fs);
    assert_int_equal(fs.replies, 2);
    assert_int_equal(fs.late_replies, 0);
    close(fd);
    echo_stop(s);
}

/* An idle client that does not read its replies cannot keep its slot: it is dropped, counted. */
static void test_idle_non_reader_dropped(void **st)
{
    struct echo_opts o = {.idle_timeout_s = 0.2, .frame_timeout_ms = 200};
    struct echo_server *s = start(&o);
    int fd = raw_connect(sock_path);
    static uint8_t payload[32 * 1024];
    for (uint64_t i = 0; i < 40; i++) /* 1.3 MB of replies: far more than the socket holds */
        send_infer(fd, i, "traffic", payload, sizeof(payload));
    struct loki_frontend_stats fs;
    for (int t = 0; t < 300; t++) {
        echo_stats(s, &fs);
        if (fs.connections == 0)
            break;
        usleep(10000);
    }
    assert_int_equal(fs.connections, 0);
    assert_int_equal(fs.replies, 40);
    assert_int_equal(fs.idle_timeouts, 1);
    assert_int_equal(fs.slow_drops, 1);
    close(fd);
    echo_stop(s);
}

/* Helper process: connect as uid/gid 65534 to @path and ping; exit 0 when served. */
static int helper_other_uid(const char *path)
{
    if (setgid(65534) < 0 || setuid(65534) < 0)
        return 2;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
        return 3;
    uint8_t buf[64];
    struct loki_request r;
    loki_request_init(&r);
    r.type = LOKI_MSG_PING;
    r.has_id = true;
    r.id = 5;
    ssize_t n = loki_proto_encode_request(buf, sizeof(buf), &r);
    if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) != n)
        return 4;
    if (read_reply(fd, rbuf, sizeof(rbuf), &rep, 3000) < 0)
        return 5;
    return rep.type == LOKI_MSG_PING && rep.status == LOKI_STATUS_OK && rep.id == 5 ? 0 : 6;
}

/* One uid cannot take every connection: over its cap it is refused, another uid is served. */
static void test_per_uid_cap(void **st)
{
    struct echo_opts o = {.max_conns = 8, .max_conns_per_uid = 3, .mode = 0666};
    struct echo_server *s = start(&o);
    int fds[3];
    for (int i = 0; i < 3; i++) {
        fds[i] = raw_connect(sock_path);
        ping_ok(fds[i], (uint64_t)i);
    }
    char want[96];
    snprintf(want, sizeof(want), "too many connections from uid %u (limit 3)", geteuid());
    int extra = raw_connect(sock_path);
    expect_closed_with(extra, LOKI_STATUS_OVERLOADED, want);
    close(extra);
    if (geteuid() == 0) { /* another uid still gets in while ours is at its cap */
        /* the scratch folder is 0700 (mkdtemp): let the other uid reach the socket in it */
        assert_int_equal(chmod(loki_test_tmpdir(), 0711), 0);
        pid_t pid = loki_test_spawn_self("other-uid", sock_path);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    /* a slot given back is ours again (once the server has seen the close) */
    close(fds[0]);
    int served = 0, fd = -1;
    char why[128];
    for (int t = 0; t < 100 && !served; t++) {
        served = try_serve(sock_path, 100 + (uint64_t)t, &fd, why, sizeof(why));
        if (!served) {
            assert_string_equal(why, want);
            usleep(10000);
        }
    }
    assert_true(served);
    ping_ok(fds[1], 7);
    struct loki_frontend_stats fs;
    echo_stats(s, &fs);
    assert_true(fs.refused >= 1);
    assert_int_equal(fs.connections, 3);
    close(fd);
    close(fds[1]);
    close(fds[2]);
    echo_stop(s);
}

#define LOWFD_LIMIT 64

/* A line from the helper's control socket, or fail. */
static void ctl_read(int ctl, char *line, size_t len)
{
    size_t have = 0;
    while (have + 1 < len) {
        struct pollfd p = {ctl, POLLIN, 0};
        assert_true(poll(&p, 1, 10000) == 1);
        ssize_t k = read(ctl, line + have, 1);
        assert_true(k == 1);
        if (line[have] == '\n')
            break;
        have++;
    }
    line[have] = '\0';
}

static void ctl_cmd(int ctl, char cmd, char *line, size_t len)
{
    assert_int_equal(write(ctl, &cmd, 1), 1);
    ctl_read(ctl, line, len);
}

/*
 * Helper process: lower RLIMIT_NOFILE to LOWFD_LIMIT, serve @path with the frontend's
 * default caps ("auto") or with caps far above the limit ("high"), and obey the control
 * socket: 'b' takes every free descriptor, 'f' gives them back, 's' reports the counters,
 * 'q' stops. Arg: "PATH,CTLFD,auto|high".
 */
static int helper_low_fds(const char *arg)
{
    char path[108], caps[8];
    int ctl;
    if (sscanf(arg, "%107[^,],%d,%7s", path, &ctl, caps) != 3)
        return 2;
    struct rlimit rl = {LOWFD_LIMIT, LOWFD_LIMIT};
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 3;
    struct echo_opts o = {.path = path};
    if (!strcmp(caps, "high"))
        o.max_conns = o.max_conns_per_uid = 1000;
    struct echo_server *s;
    if (echo_start(&o, &s) < 0)
        return 4;
    int burnt[LOWFD_LIMIT], nb = 0;
    dprintf(ctl, "ready\n");
    for (;;) {
        char cmd;
        if (read(ctl, &cmd, 1) != 1)
            cmd = 'q';
        if (cmd == 'b') {
            int fd;
            while (nb < LOWFD_LIMIT && (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
                burnt[nb++] = fd;
            dprintf(ctl, "%d\n", nb);
        } else if (cmd == 'f') {
            while (nb > 0)
                close(burnt[--nb]);
            dprintf(ctl, "0\n");
        } else if (cmd == 's') {
            struct loki_frontend_stats fs;
            echo_stats(s, &fs);
            dprintf(ctl, "%llu %llu %llu\n", (unsigned long long)fs.refused,
                    (unsigned long long)fs.fd_exhausted, (unsigned long long)fs.connections);
        } else {
            break;
        }
    }
    echo_stop(s);
    dprintf(ctl, "bye\n");
    return 0;
}

static pid_t spawn_low_fds(const char *caps, int *ctl)
{
    int sv[2];
    char arg[160];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(fcntl(sv[1], F_SETFD, 0), 0); /* the helper's end crosses exec */
    snprintf(arg, sizeof(arg), "%s,%d,%s", fresh_path(), sv[1], caps);
    pid_t pid = loki_test_spawn_self("low-fds", arg);
    assert_true(pid > 0);
    close(sv[1]);
    *ctl = sv[0];
    char line[64];
    ctl_read(*ctl, line, sizeof(line));
    assert_string_equal(line, "ready");
    return pid;
}

static void stop_low_fds(pid_t pid, int ctl)
{
    char line[64];
    int status;
    ctl_cmd(ctl, 'q', line, sizeof(line));
    assert_string_equal(line, "bye");
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(ctl);
}

/*
 * Default caps follow RLIMIT_NOFILE: with 64 descriptors the frontend takes 32 connections,
 * 16 per uid; the next ones are refused with an error frame naming the cap.
 */
static void test_low_fd_limit_default_caps(void **st)
{
    int ctl, fds[24], served = 0;
    char why[128], want[96];
    pid_t pid = spawn_low_fds("auto", &ctl);
    snprintf(want, sizeof(want), "too many connections from uid %u (limit %d)", geteuid(),
             LOWFD_LIMIT / 4);
    for (int i = 0; i < 24; i++) {
        int ok = try_serve(sock_path, (uint64_t)i, &fds[i], why, sizeof(why));
        if (!ok)
            assert_string_equal(why, want);
        served += ok;
    }
    assert_int_equal(served, LOWFD_LIMIT / 4);
    for (int i = 0; i < 24; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    stop_low_fds(pid, ctl);
}

/*
 * Caps far above RLIMIT_NOFILE: connections past the descriptors the process has are refused
 * with an error frame (never a silent close), those that fit are served, and when the
 * descriptors run out altogether (accept fails with EMFILE) a new connection still gets the
 * error frame, accepting pauses instead of spinning, and resumes once descriptors are free.
 */
static void test_low_fd_limit_exhausted(void **st)
{
    int ctl, fds[LOWFD_LIMIT + 16], served = 0, refused = 0;
    char why[128], want[64], line[64];
    pid_t pid = spawn_low_fds("high", &ctl);
    snprintf(want, sizeof(want), "out of file descriptors (limit %d)", LOWFD_LIMIT);
    for (int i = 0; i < LOWFD_LIMIT + 16; i++) {
        int ok = try_serve(sock_path, (uint64_t)i, &fds[i], why, sizeof(why));
        if (!ok) {
            assert_string_equal(why, want);
            refused++;
        }
        served += ok;
    }
    assert_true(served >= LOWFD_LIMIT / 2);
    assert_true(refused >= 16);
    /* no descriptor left at all: accept itself fails */
    ctl_cmd(ctl, 'b', line, sizeof(line));
    int x;
    for (int i = 0; i < 3; i++)
        assert_int_equal(try_serve(sock_path, 1000 + (uint64_t)i, &x, why, sizeof(why)), 0);
    assert_string_equal(why, want);
    ping_ok(fds[0], 2000); /* open connections are still served */
    ctl_cmd(ctl, 's', line, sizeof(line));
    unsigned long long n_refused, n_fd, n_conns;
    assert_int_equal(sscanf(line, "%llu %llu %llu", &n_refused, &n_fd, &n_conns), 3);
    assert_true(n_fd >= 3 && n_fd <= (unsigned long long)refused + 3 + 8); /* no spinning */
    assert_int_equal(n_conns, served);
    ctl_cmd(ctl, 'f', line, sizeof(line));
    for (int i = 0; i < LOWFD_LIMIT + 16; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    /* descriptors are back: accepting resumes after its pause */
    int ok = 0;
    for (int t = 0; t < 100 && !ok; t++) {
        ok = try_serve(sock_path, 3000 + (uint64_t)t, &x, why, sizeof(why));
        if (!ok)
            usleep(20000);
    }
    assert_true(ok);
    close(x);
    stop_low_fds(pid, ctl);
}

int main(int argc, char **argv)
{
    if (argc > 2 && !strcmp(argv[1], "other-uid"))
        return helper_other_uid(argv[2]);
    if (argc > 2 && !strcmp(argv[1], "low-fds"))
        return helper_low_fds(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_echo_and_control),
        cmocka_unit_test(test_report_format_without_owner),
        cmocka_unit_test(test_bad_requests_keep_connection),
        cmocka_unit_test(test_oversized_frame_closes),
        cmocka_unit_test(test_half_frame_timeout),
        cmocka_unit_test(test_uid_refused),
        cmocka_unit_test(test_disconnect_in_flight),
        cmocka_unit_test(test_outstanding_limit),
        cmocka_unit_test(test_slow_reader_dropped),
        cmocka_unit_test(test_socket_file_handling),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_closing_answers_accepted),
        cmocka_unit_test(test_idle_non_reader_dropped),
        cmocka_unit_test(test_per_uid_cap),
        cmocka_unit_test(test_low_fd_limit_default_caps),
        cmocka_unit_test(test_low_fd_limit_exhausted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
