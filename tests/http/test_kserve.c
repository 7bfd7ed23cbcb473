/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP front door's KServe v2 codec on its own (actors/http_kserve.c): base64; an infer
 * request in JSON (string, base64, nested data) and with the binary-data extension; every
 * malformed request refused with its reason (400) and an oversized payload with 413; a lokid
 * reply rendered as JSON and as binary data, read back with jansson; statuses to HTTP codes,
 * Retry-After and Connection: close.
 */
#include "harness.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_kserve.h"
#include "loki/error.h"

static void test_base64(void **state)
{
    (void)state;
    const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *want[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char enc[16];
        uint8_t dec[16];
        size_t n = loki_base64_encode((const uint8_t *)in[i], strlen(in[i]), enc);
        assert_int_equal(n, strlen(want[i]));
        assert_memory_equal(enc, want[i], n);
        long k = loki_base64_decode(enc, n, dec);
        assert_int_equal(k, (long)strlen(in[i]));
        assert_memory_equal(dec, in[i], (size_t)k);
    }
    uint8_t all[256], out[256];
    char enc[400];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    size_t n = loki_base64_encode(all, 256, enc);
    assert_int_equal(loki_base64_decode(enc, n, out), 256);
    assert_memory_equal(out, all, 256);
    uint8_t d[8];
    assert_int_equal(loki_base64_decode("Zm9", 3, d), -EINVAL);      /* not a multiple of 4 */
    assert_int_equal(loki_base64_decode("Zm9*", 4, d), -EINVAL);     /* outside the alphabet */
    assert_int_equal(loki_base64_decode("Z===", 4, d), -EINVAL);     /* too much padding */
    assert_int_equal(loki_base64_decode("Zg==Zm9v", 8, d), -EINVAL); /* data after padding */
}

/* Parse @json (all JSON) with a copy as the body; the payload is left in *@body. */
static int parse(const char *json, uint32_t max_payload, struct loki_kserve_req *rq, char *err,
                 uint8_t **body)
{
    size_t n = strlen(json);
    *body = malloc(n + 1);
    memcpy(*body, json, n);
    return loki_kserve_parse_infer(*body, n, 0, max_payload, rq, err, 256);
}

static void expect_ok(const char *json, const char *payload, size_t plen)
{
    struct loki_kserve_req rq;
    char err[256] = "";
    uint8_t *body;
    int rc = parse(json, 1024, &rq, err, &body);
    if (rc)
        fail_msg("%s: %s", json, err);
    assert_int_equal(rq.payload_len, plen);
    assert_memory_equal(rq.payload, payload, plen);
    free(body);
}

static void expect_err(const char *json, int want_rc, const char *want_err)
{
    struct loki_kserve_req rq;
    char err[256] = "";
    uint8_t *body;
    int rc = parse(json, 16, &rq, err, &body);
    if (rc != want_rc || !strstr(err, want_err))
        fail_msg("%s: rc %d err '%s', want %d '%s'", json, rc, err, want_rc, want_err);
    free(body);
}

static void test_parse_json(void **state)
{
    (void)state;
    /* the bytes of the string, base64, nested as shape [1, 1] is */
    expect_ok("{\"inputs\":[{\"name\":\"payload\",\"datatype\":\"BYTES\",\"shape\":[1],"
              "\"data\":[\"hello\"]}]}",
              "hello", 5);
    expect_ok("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"BYTES\",\"shape\":[1],"
              "\"parameters\":{\"content_type\":\"base64\"},\"data\":[\"AAH/\"]}]}",
              "\x00\x01\xff", 3);
    expect_ok("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"BYTES\",\"shape\":[1,1],"
              "\"data\":[[\"ab\"]]}]}",
              "ab", 2);
    expect_ok(
        "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"\"]}]}", "",
        0);

    struct loki_kserve_req rq;
    char err[256];
    uint8_t *body;
    assert_int_equal(
        parse("{\"id\":\"req-7\",\"parameters\":{\"deadline_ms\":150,"
              "\"loki_result\":false,\"other\":1},"
              "\"inputs\":[{\"name\":\"p\",\"datatype\":\"BYTES\",\"shape\":[1],"
              "\"data\":[\"x\"]}],"
              "\"outputs\":[{\"name\":\"output\",\"parameters\":{\"binary_data\":true}}]}",
              1024, &rq, err, &body),
        0);
    assert_true(rq.has_id);
    assert_string_equal(rq.id, "req-7");
    assert_true(rq.deadline_ms == 150);
    assert_true(rq.no_result);
    assert_true(rq.binary_output);
    assert_false(rq.output_str);
    free(body);
    assert_int_equal(parse("{\"parameters\":{\"binary_data_output\":true},"
                           "\"inputs\":[{\"name\":\"p\",\"datatype\":\"BYTES\",\"shape\":[1],"
                           "\"data\":[\"x\"]}],"
                           "\"outputs\":[{\"name\":\"output\",\"parameters\":{\"content_type\":"
                           "\"str\"}}]}",
                           1024, &rq, err, &body),
                     0);
    assert_false(rq.has_id);
    assert_true(rq.binary_output);
    assert_true(rq.output_str);
    free(body);
}

static void test_parse_refusals(void **state)
{
    (void)state;
#define INB(extra) "\"inputs\":[{\"name\":\"p\",\"datatype\":\"BYTES\",\"shape\":[1]" extra "}]}"
#define IN(extra) "{" INB(extra)
    expect_err("", -EINVAL, "empty request");
    expect_err("{\"inputs\":", -EINVAL, "invalid JSON");
    expect_err("[1]", -EINVAL, "must be a JSON object");
    expect_err("{\"inputs\":[]}", -EINVAL, "'inputs': expected an array of one input");
    expect_err("{}", -EINVAL, "'inputs': expected an array of one input");
    expect_err("{\"inputs\":[{\"name\":\"a\"},{\"name\":\"b\"}]}", -EINVAL,
               "'inputs': expected an array of one input");
    expect_err("{\"inputs\":[{\"datatype\":\"BYTES\"}]}", -EINVAL, "with a string 'name'");
    expect_err("{\"inputs\":[{\"name\":\"p\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1]}]}",
               -EINVAL, "'datatype' must be \"BYTES\"");
    expect_err("{\"inputs\":[{\"name\":\"p\",\"datatype\":\"BYTES\",\"shape\":[2],"
               "\"data\":[\"a\",\"b\"]}]}",
               -EINVAL, "'shape' must hold one element");
    expect_err(IN(), -EINVAL, "'data' must hold one string");
    expect_err(IN(",\"data\":[7]"), -EINVAL, "'data' must hold one string");
    expect_err(IN(",\"data\":[\"a\",\"b\"]"), -EINVAL, "'data' must hold one string");
    expect_err(IN(",\"parameters\":{\"content_type\":\"base64\"},\"data\":[\"!!!!\"]"), -EINVAL,
               "'data' is not base64");
    expect_err(IN(",\"parameters\":{\"content_type\":\"hex\"},\"data\":[\"aa\"]"), -EINVAL,
               "'content_type'");
    expect_err(IN(",\"parameters\":[]"), -EINVAL, "'parameters': expected an object");
    expect_err("{\"id\":5," INB(",\"data\":[\"a\"]"), -EINVAL, "'id': expected a string");
    expect_err("{\"parameters\":{\"deadline_ms\":-1}," INB(",\"data\":[\"a\"]"), -EINVAL,
               "parameter 'deadline_ms': expected a number > 0");
    expect_err("{\"outputs\":[{\"name\":\"logits\"}]," INB(",\"data\":[\"a\"]"), -EINVAL,
               "unknown output 'logits'");
    expect_err("{\"id\":\"a\",\"id\":\"b\"," INB(",\"data\":[\"a\"]"), -EINVAL,
               "invalid JSON"); /* duplicate keys */
    /* the payload limit (16 here): 413, in either encoding */
    expect_err(IN(",\"data\":[\"12345678901234567\"]"), LOKI_ETOOBIG,
               "payload exceeds the limit of 16 bytes");
    expect_err(IN(",\"parameters\":{\"content_type\":\"base64\"},"
                  "\"data\":[\"MTIzNDU2Nzg5MDEyMzQ1Njc=\"]"),
               LOKI_ETOOBIG, "payload exceeds the limit of 16 bytes");
    expect_ok(IN(",\"data\":[\"1234567890123456\"]"), "1234567890123456", 16);
#undef IN
#undef INB
}

/* A binary-data request: @json then @bin (bin_len bytes). */
static int parse_bin(const char *json, const void *bin, size_t bin_len, uint32_t max,
                     struct loki_kserve_req *rq, char *err, uint8_t **body)
{
    size_t n = strlen(json);
    *body = malloc(n + bin_len + 1);
    memcpy(*body, json, n);
    memcpy(*body + n, bin, bin_len);
    return loki_kserve_parse_infer(*body, n + bin_len, n, max, rq, err, 256);
}

static void test_parse_binary(void **state)
{
    (void)state;
    struct loki_kserve_req rq;
    char err[256] = "";
    uint8_t *body;
    const char *j = "{\"inputs\":[{\"name\":\"p\",\"datatype\":\"BYTES\",\"shape\":[1],"
                    "\"parameters\":{\"binary_data_size\":9}}]}";
    /* Triton's BYTES element: a little-endian length, then the bytes */
    assert_int_equal(parse_bin(j, "\x05\x00\x00\x00\x00\xff\x01zz", 9, 64, &rq, err, &body), 0);
    assert_int_equal(rq.payload_len, 5);
    assert_memory_equal(rq.payload, "\x00\xff\x01zz", 5);
    assert_ptr_equal(rq.payload, body + strlen(j) + 4); /* in place: no copy */
    free(body);
    assert_int_equal(parse_bin(j, "\x06\x00\x00\x00\x00\xff\x01zz", 9, 64, &rq, err, &body),
                     -EINVAL);
    assert_non_null(strstr(err, "the BYTES element's length says 6, 5 bytes follow"));
    free(body);
    assert_int_equal(parse_bin(j, "\x05\x00\x00\x00\x00\xff\x01zzEXTRA", 14, 64, &rq, err, &body),
                     -EINVAL);
    assert_non_null(strstr(err, "14 bytes follow the JSON header, 'binary_data_size' says 9"));
    free(body);
    assert_int_equal(parse_bin(j, "\x05\x00\x00\x00\x00\xff\x01zz", 9, 4, &rq, err, &body),
                     LOKI_ETOOBIG);
    free(body);
    /* binary bytes no input claims; "data" and binary_data_size together; a header past the
     * body */
    assert_int_equal(parse_bin("{\"inputs\":[{\"name\":\"p\",\"datatype\":\"BYTES\",\"shape\":[1],"
                               "\"data\":[\"a\"]}]}",
                               "xy", 2, 64, &rq, err, &body),
                     -EINVAL);
    assert_non_null(strstr(err, "but no input has 'binary_data_size'"));
    free(body);
    assert_int_equal(parse_bin("{\"inputs\":[{\"name\":\"p\",\"datatype\":\"BYTES\",\"shape\":[1],"
                               "\"data\":[\"a\"],\"parameters\":{\"binary_data_size\":2}}]}",
                               "xy", 2, 64, &rq, err, &body),
                     -EINVAL);
    assert_non_null(strstr(err, "'data' and 'binary_data_size' both given"));
    free(body);
    uint8_t b[4] = "{}";
    assert_int_equal(loki_kserve_parse_infer(b, 2, 3, 64, &rq, err, 256), -EINVAL);
    assert_non_null(strstr(err, "Inference-Header-Content-Length 3 exceeds the body's 2 bytes"));
}

/* A reply of pipeline "small": a detect node with two classify children (the leaves). */
static void make_reply(struct loki_reply *r, struct loki_reply_node *nodes)
{
    loki_reply_init(r);
    r->type = LOKI_MSG_INFER;
    r->status = LOKI_STATUS_OK;
    r->accuracy = 90;
    r->latency_ms = 12.5;
    r->n_paths = 1;
    r->paths[0] = loki_bytes_str("det>cls");
    nodes[0] = (struct loki_reply_node){.task = loki_bytes_str("detect"),
                                        .variant = loki_bytes_str("det"),
                                        .parent = -1,
                                        .status = LOKI_STATUS_OK,
                                        .output = loki_bytes_str("boxes")};
    nodes[1] = (struct loki_reply_node){.task = loki_bytes_str("classify"),
                                        .variant = loki_bytes_str("cls"),
                                        .parent = 0,
                                        .status = LOKI_STATUS_OK,
                                        .output = {(const uint8_t *)"\xff\x00", 2}};
    nodes[2] = nodes[1];
    nodes[2].output = loki_bytes_str("car");
    r->n_nodes = 3;
    r->nodes = nodes;
    r->n_outputs = 2;
    r->outputs[0] = nodes[1].output;
    r->outputs[1] = nodes[2].output;
}

static json_t *load(const char *s, size_t n)
{
    json_error_t je;
    json_t *j = json_loadb(s, n, 0, &je);
    if (!j)
        fail_msg("response is not JSON: %s: %.*s", je.text, (int)n, s);
    return j;
}

static void test_render_json(void **state)
{
    (void)state;
    struct loki_reply r;
    struct loki_reply_node nodes[3];
    make_reply(&r, nodes);
    struct loki_kserve_req rq = {.has_id = true};
    snprintf(rq.id, sizeof(rq.id), "q1");
    struct loki_kserve_resp out;
    assert_int_equal(loki_kserve_render_reply("small", &rq, &r, &out), 0);
    assert_int_equal(out.http, 200);
    assert_int_equal(out.header_len, 0);
    assert_int_equal(out.retry_after_s, 0);
    json_t *j = load(out.body, out.len);
    assert_string_equal(json_string_value(json_object_get(j, "model_name")), "small");
    assert_string_equal(json_string_value(json_object_get(j, "id")), "q1");
    json_t *o = json_array_get(json_object_get(j, "outputs"), 0);
    assert_string_equal(json_string_value(json_object_get(o, "name")), "output");
    assert_string_equal(json_string_value(json_object_get(o, "datatype")), "BYTES");
    assert_int_equal(json_integer_value(json_array_get(json_object_get(o, "shape"), 0)), 2);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(o, "parameters"), "content_type")),
        "base64");
    json_t *data = json_object_get(o, "data");
    assert_string_equal(json_string_value(json_array_get(data, 0)), "/wA=");
    assert_string_equal(json_string_value(json_array_get(data, 1)), "Y2Fy");
    json_t *l = json_object_get(j, "loki");
    assert_string_equal(json_string_value(json_object_get(l, "status")), "ok");
    assert_true(json_real_value(json_object_get(l, "accuracy")) == 90);
    assert_string_equal(json_string_value(json_array_get(json_object_get(l, "paths"), 0)),
                        "det>cls");
    json_t *res = json_object_get(l, "result");
    assert_int_equal(json_array_size(res), 3);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(res, 0), "parent")), -1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(res, 2), "parent")), 0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(res, 0), "output")),
                        "Ym94ZXM="); /* "boxes" */
    json_decref(j);
    free(out.body);

    /* content_type "str": strings when every output is UTF-8, else base64 for all */
    rq.output_str = true;
    rq.no_result = true;
    assert_int_equal(loki_kserve_render_reply("small", &rq, &r, &out), 0);
    j = load(out.body, out.len);
    o = json_array_get(json_object_get(j, "outputs"), 0);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(o, "parameters"), "content_type")),
        "base64");
    assert_null(json_object_get(json_object_get(j, "loki"), "result"));
    json_decref(j);
    free(out.body);
    r.outputs[0] = loki_bytes_str("bus");
    assert_int_equal(loki_kserve_render_reply("small", &rq, &r, &out), 0);
    j = load(out.body, out.len);
    o = json_array_get(json_object_get(j, "outputs"), 0);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(o, "parameters"), "content_type")),
        "str");
    assert_string_equal(json_string_value(json_array_get(json_object_get(o, "data"), 0)), "bus");
    json_decref(j);
    free(out.body);
}

static void test_render_binary(void **state)
{
    (void)state;
    struct loki_reply r;
    struct loki_reply_node nodes[3];
    make_reply(&r, nodes);
    struct loki_kserve_req rq = {.binary_output = true};
    struct loki_kserve_resp out;
    assert_int_equal(loki_kserve_render_reply("small", &rq, &r, &out), 0);
    assert_int_equal(out.http, 200);
    assert_true(out.header_len > 0 && out.header_len < out.len);
    json_t *j = load(out.body, out.header_len);
    json_t *o = json_array_get(json_object_get(j, "outputs"), 0);
    assert_null(json_object_get(o, "data"));
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(o, "parameters"), "binary_data_size")),
        4 + 2 + 4 + 3);
    json_decref(j);
    assert_int_equal(out.len - out.header_len, 13);
    assert_memory_equal(out.body + out.header_len,
                        "\x02\x00\x00\x00\xff\x00\x03\x00\x00\x00"
                        "car",
                        13);
    free(out.body);
}

static void test_statuses(void **state)
{
    (void)state;
    struct {
        enum loki_status s;
        unsigned http;
    } map[] = {{LOKI_STATUS_OK, 200},
               {LOKI_STATUS_LATE, 200},
               {LOKI_STATUS_DROPPED, 504},
               {LOKI_STATUS_ERROR, 500},
               {LOKI_STATUS_OVERLOADED, 503},
               {LOKI_STATUS_BAD_REQUEST, 400},
               {LOKI_STATUS_UNKNOWN_PIPELINE, 404},
               {LOKI_STATUS_DRAINING, 503},
               {LOKI_STATUS_TIMEOUT, 504},
               {LOKI_STATUS_CLOSED, 503},
               {LOKI_STATUS_CANCELLED, 500}};
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        assert_int_equal(loki_kserve_http_status(map[i].s), map[i].http);

    struct loki_kserve_req rq = {.binary_output = true};
    struct loki_kserve_resp out;
    struct loki_reply r;
    loki_reply_init(&r);
    r.status = LOKI_STATUS_OVERLOADED;
    r.error = loki_bytes_str("too many queries in flight");
    r.has_retry_after = true;
    r.retry_after_ms = 100;
    assert_int_equal(loki_kserve_render_reply("small", &rq, &r, &out), 0);
    assert_int_equal(out.http, 503);
    assert_int_equal(out.retry_after_s, 1); /* whole seconds, at least one */
    assert_int_equal(out.header_len, 0);    /* errors are JSON even when binary was asked */
    json_t *j = load(out.body, out.len);
    assert_string_equal(json_string_value(json_object_get(j, "error")),
                        "overloaded: too many queries in flight");
    json_t *l = json_object_get(j, "loki");
    assert_true(json_real_value(json_object_get(l, "retry_after_ms")) == 100);
    assert_null(json_object_get(j, "outputs"));
    json_decref(j);
    free(out.body);
    r.retry_after_ms = 2500;
    assert_int_equal(loki_kserve_render_reply("small", &rq, &r, &out), 0);
    assert_int_equal(out.retry_after_s, 3);
    free(out.body);

    loki_reply_init(&r);
    r.status = LOKI_STATUS_DRAINING;
    assert_int_equal(loki_kserve_render_reply("small", &rq, &r, &out), 0);
    assert_int_equal(out.http, 503);
    assert_true(out.close);
    assert_int_equal(out.retry_after_s, 0);
    free(out.body);

    assert_int_equal(loki_kserve_render_error(413, "too \"big\"", &out), 0);
    assert_int_equal(out.http, 413);
    j = load(out.body, out.len);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "too \"big\"");
    json_decref(j);
    free(out.body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64),         cmocka_unit_test(test_parse_json),
        cmocka_unit_test(test_parse_refusals), cmocka_unit_test(test_parse_binary),
        cmocka_unit_test(test_render_json),    cmocka_unit_test(test_render_binary),
        cmocka_unit_test(test_statuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
