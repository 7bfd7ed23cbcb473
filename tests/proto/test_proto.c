/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Codec tests: round trips through our encoder and decoder, interoperability
 * with msgpack-c in both directions, and every class of malformed input, each
 * checked for the exact error it reports.
 */
#include <errno.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "loki/error.h"
#include "loki/proto.h"

static const struct loki_proto_limits lim = {1024};

/* ---- msgpack-c helpers ---- */
static void pk_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

static void pk_bin(msgpack_packer *pk, const void *p, size_t n)
{
    msgpack_pack_bin(pk, n);
    msgpack_pack_bin_body(pk, p, n);
}

/* Decode @sb's bytes as a request; returns rc, error text in @err. */
static int dec(const msgpack_sbuffer *sb, struct loki_request *req, char *err)
{
    return loki_proto_decode_request((const uint8_t *)sb->data, sb->size, &lim, req, err,
                                     LOKI_PROTO_ERR_MAX);
}

/* A valid infer map with one field replaced by @field_override (NULL: none) */
enum variant {
    V_OK,
    V_PIPE_INT,
    V_NO_ID,
    V_NO_PIPE,
    V_NO_PAYLOAD,
    V_BIG,
    V_NEG_ID,
    V_DEADLINE_ZERO,
    V_PRIO_BIG,
    V_TYPE_BAD,
    V_DUP,
    V_PAYLOAD_STR,
    V_LONG_NAME,
    V_DEADLINE_INT,
    V_PRIO_NEG
};

static void build(msgpack_sbuffer *sb, enum variant v)
{
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    int n = 6 - (v == V_NO_ID) - (v == V_NO_PIPE) - (v == V_NO_PAYLOAD) + (v == V_DUP);
    msgpack_pack_map(&pk, n);
    pk_str(&pk, "type");
    pk_str(&pk, v == V_TYPE_BAD ? "explode" : "infer");
    if (v != V_NO_ID) {
        pk_str(&pk, "id");
        if (v == V_NEG_ID)
            msgpack_pack_int64(&pk, -5);
        else
            msgpack_pack_uint64(&pk, 0x123456789abcull);
    }
    if (v != V_NO_PIPE) {
        pk_str(&pk, "pipeline");
        if (v == V_PIPE_INT)
            msgpack_pack_int(&pk, 7);
        else if (v == V_LONG_NAME)
            pk_str(&pk, "a-pipeline-name-that-is-much-longer-than-sixty-three-bytes-xxxxxxxx");
        else
            pk_str(&pk, "traffic");
    }
    if (v != V_NO_PAYLOAD) {
        pk_str(&pk, "payload");
        static char big[2048];
        if (v == V_PAYLOAD_STR)
            pk_str(&pk, "abc");
        else
            pk_bin(&pk, big, v == V_BIG ? sizeof(big) : 100);
    }
    pk_str(&pk, "deadline_ms");
    if (v == V_DEADLINE_ZERO)
        msgpack_pack_double(&pk, 0);
    else if (v == V_DEADLINE_INT)
        msgpack_pack_int(&pk, 80);
    else
        msgpack_pack_double(&pk, 12.5);
    pk_str(&pk, "priority");
    if (v == V_PRIO_BIG)
        msgpack_pack_int64(&pk, 1ll << 40);
    else
        msgpack_pack_int(&pk, v == V_PRIO_NEG ? -3 : 3);
    if (v == V_DUP) {
        pk_str(&pk, "priority");
        msgpack_pack_int(&pk, 4);
    }
}

static void expect_err(enum variant v, int rc_want, const char *msg, bool id_known)
{
    msgpack_sbuffer sb;
    struct loki_request req;
    char err[LOKI_PROTO_ERR_MAX];
    build(&sb, v);
    int rc = dec(&sb, &req, err);
    assert_int_equal(rc, rc_want);
    assert_string_equal(err, msg);
    assert_int_equal(req.has_id, id_known);
    if (id_known)
        assert_true(req.id == 0x123456789abcull);
    msgpack_sbuffer_destroy(&sb);
}

static void test_msgpackc_request(void **st)
{
    msgpack_sbuffer sb;
    struct loki_request req;
    char err[LOKI_PROTO_ERR_MAX];
    build(&sb, V_OK);
    assert_int_equal(dec(&sb, &req, err), 0);
    assert_int_equal(req.type, LOKI_MSG_INFER);
    assert_true(req.id == 0x123456789abcull);
    assert_true(loki_bytes_eq(req.pipeline, "traffic"));
    assert_int_equal(req.payload.len, 100);
    /* zero copy: the payload points into the frame */
    assert_true(req.payload.ptr > (const uint8_t *)sb.data &&
                req.payload.ptr < (const uint8_t *)sb.data + sb.size);
    assert_true(req.has_deadline && req.deadline_ms == 12.5);
    assert_true(req.has_priority && req.priority == 3);
    msgpack_sbuffer_destroy(&sb);
    build(&sb, V_DEADLINE_INT); /* ints are numbers too */
    assert_int_equal(dec(&sb, &req, err), 0);
    assert_true(req.deadline_ms == 80);
    msgpack_sbuffer_destroy(&sb);
    build(&sb, V_PRIO_NEG);
    assert_int_equal(dec(&sb, &req, err), 0);
    assert_int_equal(req.priority, -3);
    msgpack_sbuffer_destroy(&sb);
}

static void test_wrong_types_and_missing(void **st)
{
    expect_err(V_PIPE_INT, LOKI_EPROTO, "field 'pipeline': expected str, got int", true);
    expect_err(V_PAYLOAD_STR, LOKI_EPROTO, "field 'payload': expected bin, got str", true);
    expect_err(V_NO_ID, LOKI_EPROTO, "missing field 'id'", false);
    expect_err(V_NO_PIPE, LOKI_EPROTO, "missing field 'pipeline'", true);
    expect_err(V_NO_PAYLOAD, LOKI_EPROTO, "missing field 'payload'", true);
    expect_err(V_NEG_ID, LOKI_EPROTO, "field 'id': expected uint, got negative int", false);
    expect_err(V_DEADLINE_ZERO, LOKI_EPROTO, "field 'deadline_ms': must be > 0, got 0", true);
    expect_err(V_PRIO_BIG, LOKI_EPROTO, "field 'priority': out of the int32 range", true);
    expect_err(V_TYPE_BAD, LOKI_EPROTO, "field 'type': unknown message type 'explode'", true);
    expect_err(V_DUP, LOKI_EPROTO, "field 'priority' appears twice", true);
}

static void test_limits(void **st)
{
    expect_err(V_BIG, LOKI_ETOOBIG, "field 'payload': 2048 bytes exceeds the limit of 1024", true);
    expect_err(V_LONG_NAME, LOKI_ETOOBIG, "field 'pipeline': 67 bytes exceeds the limit of 63",
               true);
}

static void test_bad_msgpack(void **st)
{
    struct loki_request req;
    char err[LOKI_PROTO_ERR_MAX];
    const uint8_t c1[] = {0x81, 0xa2, 'i', 'd', 0xc1};
    assert_int_equal(loki_proto_decode_request(c1, sizeof(c1), &lim, &req, err, sizeof(err)),
                     LOKI_EPROTO);
    assert_string_equal(err, "invalid msgpack byte 0xc1 at offset 4");
    const uint8_t arr[] = {0x92, 1, 2};
    loki_proto_decode_request(arr, sizeof(arr), &lim, &req, err, sizeof(err));
    assert_string_equal(err, "frame body: expected map, got array");
    assert_int_equal(loki_proto_decode_request(arr, 0, &lim, &req, err, sizeof(err)), LOKI_EPROTO);
    assert_string_equal(err, "empty frame");
    const uint8_t intkey[] = {0x81, 0x01, 0x02};
    loki_proto_decode_request(intkey, sizeof(intkey), &lim, &req, err, sizeof(err));
    assert_string_equal(err, "map key: expected str, got int");
    /* a map that claims 2^32-1 entries in 6 bytes: refused before any loop */
    const uint8_t lie[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0x00};
    loki_proto_decode_request(lie, sizeof(lie), &lim, &req, err, sizeof(err));
    assert_string_equal(err, "truncated msgpack at offset 0");
    /* bin claiming more bytes than there are */
    const uint8_t bin[] = {0x81, 0xa7, 'p', 'a', 'y', 'l', 'o', 'a', 'd', 0xc6, 0x7f, 0, 0, 0};
    loki_proto_decode_request(bin, sizeof(bin), &lim, &req, err, sizeof(err));
    assert_string_equal(err, "truncated msgpack at offset 9");
    /* trailing garbage after a valid map */
    const uint8_t trail[] = {0x81, 0xa4, 't', 'y', 'p', 'e', 0xa4, 'p', 'i', 'n', 'g', 0x00};
    loki_proto_decode_request(trail, sizeof(trail), &lim, &req, err, sizeof(err));
    assert_string_equal(err, "1 trailing bytes after the map");
    assert_int_equal(
        loki_proto_decode_request(trail, sizeof(trail) - 1, &lim, &req, err, sizeof(err)), 0);
    assert_int_equal(req.type, LOKI_MSG_PING);
    /* deep nesting inside an unknown key */
    uint8_t deep[64];
    size_t n = 0;
    deep[n++] = 0x81;
    deep[n++] = 0xa1;
    deep[n++] = 'x';
    for (int i = 0; i < 40; i++)
        deep[n++] = 0x91;
    deep[n++] = 0x00;
    loki_proto_decode_request(deep, n, &lim, &req, err, sizeof(err));
    assert_string_equal(err, "msgpack nested deeper than 16 levels");
}

/* A request refused as malformed still says what it was, when it said so: its error reply
 * carries its type (a bad "status" request was answered as an "infer"). */
static void test_type_known_on_error(void **st)
{
    struct loki_request req;
    char err[LOKI_PROTO_ERR_MAX];
    /* {"id": 3, "format": 1, "type": "status"}: the type comes after the bad field */
    const uint8_t late[] = {0x83, 0xa2, 'i', 'd', 0x03, 0xa6, 'f', 'o', 'r', 'm', 'a', 't', 0x01,
                            0xa4, 't',  'y', 'p', 'e',  0xa6, 's', 't', 'a', 't', 'u', 's'};
    assert_int_equal(loki_proto_decode_request(late, sizeof(late), &lim, &req, err, sizeof(err)),
                     LOKI_EPROTO);
    assert_string_equal(err, "field 'format': expected str, got int");
    assert_true(req.has_id && req.id == 3);
    assert_int_equal(req.type, LOKI_MSG_STATUS);
    /* no type field: unknown (the frontend answers it as the default, infer) */
    const uint8_t none[] = {0x82, 0xa2, 'i', 'd', 0x03, 0xa6, 'f', 'o', 'r', 'm', 'a', 't', 0x01};
    assert_int_equal(loki_proto_decode_request(none, sizeof(none), &lim, &req, err, sizeof(err)),
                     LOKI_EPROTO);
    assert_int_equal(req.type, LOKI_MSG_NONE);
}

/* Every truncation of a valid request is an error, never a crash or a success. */
static void test_truncated(void **st)
{
    msgpack_sbuffer sb;
    struct loki_request req;
    char err[LOKI_PROTO_ERR_MAX];
    build(&sb, V_OK);
    for (size_t n = 0; n < sb.size; n++) {
        uint8_t *copy = malloc(n ? n : 1); /* exact size so ASan sees any over-read */
        memcpy(copy, sb.data, n);
        assert_int_not_equal(loki_proto_decode_request(copy, n, &lim, &req, err, sizeof(err)), 0);
        assert_true(strlen(err) > 0);
        free(copy);
    }
    msgpack_sbuffer_destroy(&sb);
}

/* A cut inside the payload names the payload's own offset, whatever the cut. */
static void test_truncated_offsets(void **st)
{
    msgpack_sbuffer sb;
    struct loki_request req;
    char err[LOKI_PROTO_ERR_MAX], want[LOKI_PROTO_ERR_MAX];
    build(&sb, V_OK);
    const uint8_t *b = (const uint8_t *)sb.data;
    size_t bin = 0;
    for (size_t i = 0; i + 9 < sb.size; i++)
        if (!memcmp(b + i, "\xa7payload\xc4\x64", 10))
            bin = i + 8;
    assert_true(bin > 0);
    snprintf(want, sizeof(want), "truncated msgpack at offset %zu", bin);
    for (size_t n = bin; n < bin + 2 + 100; n++) {
        assert_int_equal(loki_proto_decode_request(b, n, &lim, &req, err, sizeof(err)),
                         LOKI_EPROTO);
        assert_string_equal(err, want);
        assert_true(req.has_id); /* read before the cut */
    }
    msgpack_sbuffer_destroy(&sb);
}

/* msgpack-c, told the documented key order, writes exactly the bytes our encoder writes. */
static void test_msgpackc_same_bytes(void **st)
{
    static uint8_t buf[4096];
    static struct loki_reply rep;
    uint8_t payload[300] = {1, 2, 3};
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct loki_request rq;
    loki_request_init(&rq);
    rq.type = LOKI_MSG_INFER;
    rq.id = 1ull << 40;
    rq.pipeline = loki_bytes_str("traffic");
    rq.payload = (struct loki_bytes){payload, sizeof(payload)};
    rq.has_deadline = true;
    rq.deadline_ms = 180;
    rq.has_priority = true;
    rq.priority = -200;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 6);
    pk_str(&pk, "type");
    pk_str(&pk, "infer");
    pk_str(&pk, "id");
    msgpack_pack_uint64(&pk, rq.id);
    pk_str(&pk, "pipeline");
    pk_str(&pk, "traffic");
    pk_str(&pk, "deadline_ms");
    msgpack_pack_double(&pk, 180);
    pk_str(&pk, "priority");
    msgpack_pack_int32(&pk, -200);
    pk_str(&pk, "payload");
    pk_bin(&pk, payload, sizeof(payload));
    ssize_t n = loki_proto_encode_request(buf, sizeof(buf), &rq);
    assert_int_equal(n, (ssize_t)sb.size + 4);
    assert_memory_equal(buf + 4, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);

    loki_reply_init(&rep);
    rep.type = LOKI_MSG_INFER;
    rep.status = LOKI_STATUS_OK;
    rep.n_outputs = 1;
    rep.outputs[0] = (struct loki_bytes){payload, 40};
    rep.n_paths = 1;
    rep.paths[0] = loki_bytes_str("yolov5x>efficientnet-b6");
    rep.accuracy = 87.5;
    rep.latency_ms = 12.25;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 7);
    pk_str(&pk, "type");
    pk_str(&pk, "infer");
    pk_str(&pk, "id");
    msgpack_pack_uint64(&pk, 70000);
    pk_str(&pk, "status");
    pk_str(&pk, "ok");
    pk_str(&pk, "outputs");
    msgpack_pack_array(&pk, 1);
    pk_bin(&pk, payload, 40);
    pk_str(&pk, "path");
    msgpack_pack_array(&pk, 1);
    pk_str(&pk, "yolov5x>efficientnet-b6");
    pk_str(&pk, "accuracy");
    msgpack_pack_double(&pk, 87.5);
    pk_str(&pk, "latency_ms");
    msgpack_pack_double(&pk, 12.25);
    n = loki_proto_encode_reply_as(buf, sizeof(buf), &rep, LOKI_MSG_INFER, 70000);
    assert_int_equal(n, (ssize_t)sb.size + 4);
    assert_memory_equal(buf + 4, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static void test_request_roundtrip(void **st)
{
    uint8_t buf[4096], payload[300];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i * 7);
    struct loki_request in, out;
    loki_request_init(&in);
    in.type = LOKI_MSG_INFER;
    in.id = 1ull << 60;
    in.pipeline = loki_bytes_str("social_media");
    in.payload.ptr = payload;
    in.payload.len = sizeof(payload);
    in.has_deadline = true;
    in.deadline_ms = 33.25;
    in.has_priority = true;
    in.priority = -100000;
    ssize_t n = loki_proto_encode_request(buf, sizeof(buf), &in);
    assert_true(n > 0 && (size_t)n <= loki_proto_request_size(&in));
    const uint8_t *body;
    uint32_t blen;
    assert_int_equal(loki_proto_frame_next(buf, (size_t)n, 4096, &body, &blen), n);
    assert_int_equal(loki_proto_frame_next(buf, (size_t)n - 1, 4096, &body, &blen), 0);
    assert_int_equal(loki_proto_frame_next(buf, 3, 4096, &body, &blen), 0);
    assert_int_equal(loki_proto_frame_next(buf, (size_t)n, 10, &body, &blen), LOKI_ETOOBIG);
    char err[LOKI_PROTO_ERR_MAX];
    assert_int_equal(loki_proto_decode_request(body, blen, &lim, &out, err, sizeof(err)), 0);
    assert_true(out.id == in.id && out.has_id);
    assert_true(loki_bytes_eq(out.pipeline, "social_media"));
    assert_memory_equal(out.payload.ptr, payload, sizeof(payload));
    assert_true(out.deadline_ms == 33.25 && out.priority == -100000);
    /* head + payload is byte-identical to the whole frame */
    uint8_t head[512];
    ssize_t h = loki_proto_encode_request_head(head, sizeof(head), &in);
    assert_int_equal(h + (ssize_t)sizeof(payload), n);
    assert_memory_equal(head, buf, (size_t)h);
    assert_int_equal(loki_proto_encode_request(buf, 20, &in), -ENOBUFS);
    /* control requests */
    const enum loki_msg_type types[] = {LOKI_MSG_HELLO, LOKI_MSG_STATUS, LOKI_MSG_METRICS,
                                        LOKI_MSG_PING};
    for (size_t i = 0; i < 4; i++) {
        loki_request_init(&in);
        in.type = types[i];
        in.version = 1;
        n = loki_proto_encode_request(buf, sizeof(buf), &in);
        assert_true(n > 0);
        assert_int_equal(
            loki_proto_decode_request(buf + 4, (size_t)n - 4, &lim, &out, err, sizeof(err)), 0);
        assert_int_equal(out.type, types[i]);
    }
}

static void test_reply_roundtrip(void **st)
{
    static struct loki_reply in, out;
    static uint8_t buf[1 << 16];
    uint8_t o1[] = {1, 2, 3}, o2[1000];
    memset(o2, 0xab, sizeof(o2));
    loki_reply_init(&in);
    in.type = LOKI_MSG_INFER;
    in.has_id = true;
    in.id = 42;
    in.status = LOKI_STATUS_LATE;
    in.n_outputs = 2;
    in.outputs[0] = (struct loki_bytes){o1, 3};
    in.outputs[1] = (struct loki_bytes){o2, sizeof(o2)};
    in.n_paths = 2;
    in.paths[0] = loki_bytes_str("yolov5x>efficientnet-b6");
    in.paths[1] = loki_bytes_str("yolov5x>vgg19");
    in.accuracy = 87.5;
    in.latency_ms = 123.25;
    in.has_retry_after = true;
    in.retry_after_ms = 5;
    in.error = loki_bytes_str("late by 3 ms");
    ssize_t n = loki_proto_encode_reply(buf, sizeof(buf), &in);
    assert_true(n > 0 && (size_t)n <= loki_proto_reply_size(&in));
    char err[LOKI_PROTO_ERR_MAX];
    assert_int_equal(loki_proto_decode_reply(buf + 4, (size_t)n - 4, &out, err, sizeof(err)), 0);
    assert_int_equal(out.type, LOKI_MSG_INFER);
    assert_true(out.has_id && out.id == 42);
    assert_int_equal(out.status, LOKI_STATUS_LATE);
    assert_int_equal(out.n_outputs, 2);
    assert_memory_equal(out.outputs[1].ptr, o2, sizeof(o2));
    assert_true(loki_bytes_eq(out.paths[1], "yolov5x>vgg19"));
    assert_true(out.accuracy == 87.5 && out.latency_ms == 123.25);
    assert_true(out.has_retry_after && out.retry_after_ms == 5);
    assert_true(loki_bytes_eq(out.error, "late by 3 ms"));

    /* msgpack-c reads what we write */
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, (const char *)buf + 4, (size_t)n - 4, NULL),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(u.data.type, MSGPACK_OBJECT_MAP);
    bool saw_path = false;
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
        msgpack_object_kv *kv = &u.data.via.map.ptr[i];
        if (kv->key.via.str.size == 4 && !memcmp(kv->key.via.str.ptr, "path", 4)) {
            assert_int_equal(kv->val.type, MSGPACK_OBJECT_ARRAY);
            assert_int_equal(kv->val.via.array.size, 2);
            saw_path = true;
        }
    }
    assert_true(saw_path);
    msgpack_unpacked_destroy(&u);

    /* hello, status, metrics */
    loki_reply_init(&in);
    in.type = LOKI_MSG_STATUS;
    in.status = LOKI_STATUS_OK;
    in.version = 1;
    in.n_pipelines = 1;
    in.pipelines[0] = loki_bytes_str("traffic");
    in.ready = true;
    in.connections = 3;
    in.inflight = 9;
    n = loki_proto_encode_reply(buf, sizeof(buf), &in);
    assert_int_equal(loki_proto_decode_reply(buf + 4, (size_t)n - 4, &out, err, sizeof(err)), 0);
    assert_true(out.ready && !out.draining && out.connections == 3 && out.inflight == 9);
    assert_true(loki_bytes_eq(out.pipelines[0], "traffic") && !out.has_id);
    loki_reply_init(&in);
    in.type = LOKI_MSG_METRICS;
    in.n_metrics = 2;
    in.metrics[0] = (struct loki_metric){loki_bytes_str("a"), 1.5};
    in.metrics[1] = (struct loki_metric){loki_bytes_str("b"), 7};
    n = loki_proto_encode_reply_as(buf, sizeof(buf), &in, LOKI_MSG_METRICS, 5);
    assert_int_equal(loki_proto_decode_reply(buf + 4, (size_t)n - 4, &out, err, sizeof(err)), 0);
    assert_true(out.n_metrics == 2 && out.metrics[1].value == 7 && out.id == 5);
    /* bad replies */
    const uint8_t nostatus[] = {0x81, 0xa2, 'i', 'd', 0x01};
    assert_int_equal(loki_proto_decode_reply(nostatus, sizeof(nostatus), &out, err, sizeof(err)),
                     LOKI_EPROTO);
    assert_string_equal(err, "missing field 'status'");
    in.n_outputs = LOKI_PROTO_MAX_OUTPUTS + 1;
    in.type = LOKI_MSG_INFER;
    assert_int_equal(loki_proto_encode_reply(buf, sizeof(buf), &in), -EINVAL);
}

/* Report requests and replies: "format" on status/metrics requests, "report" in the reply. */
static void test_report_roundtrip(void **st)
{
    static struct loki_reply in, out;
    static uint8_t buf[1 << 17];
    static char text[70000];
    char err[LOKI_PROTO_ERR_MAX];
    struct loki_request rq, rqo;
    loki_request_init(&rq);
    rq.type = LOKI_MSG_STATUS;
    rq.has_id = true;
    rq.id = 9;
    rq.format = loki_bytes_str("json");
    ssize_t n = loki_proto_encode_request(buf, sizeof(buf), &rq);
    assert_true(n > 0 && (size_t)n <= loki_proto_request_size(&rq));
    assert_int_equal(
        loki_proto_decode_request(buf + 4, (size_t)n - 4, &lim, &rqo, err, sizeof(err)), 0);
    assert_int_equal(rqo.type, LOKI_MSG_STATUS);
    assert_true(loki_bytes_eq(rqo.format, "json"));
    /* an over-long format name is refused */
    rq.format = loki_bytes_str("a-format-name-longer-than-31-bytes");
    n = loki_proto_encode_request(buf, sizeof(buf), &rq);
    assert_int_equal(
        loki_proto_decode_request(buf + 4, (size_t)n - 4, &lim, &rqo, err, sizeof(err)),
        LOKI_ETOOBIG);
    assert_string_equal(err, "field 'format': 34 bytes exceeds the limit of 31");
    /* a report larger than 64 KiB survives the round trip (str32) */
    memset(text, 'x', sizeof(text) - 1);
    text[sizeof(text) - 1] = 0;
    loki_reply_init(&in);
    in.type = LOKI_MSG_METRICS;
    in.status = LOKI_STATUS_OK;
    in.report = loki_bytes_str(text);
    n = loki_proto_encode_reply(buf, sizeof(buf), &in);
    assert_true(n > 0 && (size_t)n <= loki_proto_reply_size(&in));
    assert_int_equal(loki_proto_decode_reply(buf + 4, (size_t)n - 4, &out, err, sizeof(err)), 0);
    assert_int_equal(out.report.len, sizeof(text) - 1);
    assert_memory_equal(out.report.ptr, text, sizeof(text) - 1);
    /* infer replies never carry one */
    in.type = LOKI_MSG_INFER;
    n = loki_proto_encode_reply(buf, sizeof(buf), &in);
    assert_int_equal(loki_proto_decode_reply(buf + 4, (size_t)n - 4, &out, err, sizeof(err)), 0);
    assert_int_equal(out.report.len, 0);
}

static void test_names(void **st)
{
    assert_string_equal(loki_status_name(LOKI_STATUS_UNKNOWN_PIPELINE), "unknown_pipeline");
    assert_string_equal(loki_status_name((enum loki_status)99), "?");
    assert_string_equal(loki_msg_type_name(LOKI_MSG_METRICS), "metrics");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_msgpackc_request),
        cmocka_unit_test(test_wrong_types_and_missing),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_bad_msgpack),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_request_roundtrip),
        cmocka_unit_test(test_reply_roundtrip),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_report_roundtrip),
        cmocka_unit_test(test_truncated_offsets),
        cmocka_unit_test(test_msgpackc_same_bytes),
        cmocka_unit_test(test_type_known_on_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
