/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Frontend tests over raw sockets (no client library), so each test controls
 * the exact bytes: framing, validation, limits, timeouts, slow readers, uid
 * refusal, disconnects with queries in flight, and socket-file handling. The
 * owner is the echo server (echo.h), which answers from its own thread.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
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

int main(void)
{
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
