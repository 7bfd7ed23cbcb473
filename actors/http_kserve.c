/* SPDX-License-Identifier: Apache-2.0 */
/*
 * KServe v2 JSON for the HTTP front door: parse an infer request into one payload, render a
 * lokid reply, map statuses (see http_kserve.h). A Loki pipeline takes one opaque byte string
 * and answers with the outputs of its leaves and a result tree, so the tensor model of KServe
 * is used at its simplest: one BYTES input of one element (the payload), one BYTES output of
 * n elements (the leaf outputs), and what KServe has no words for (the Loki status, served
 * accuracy, variant paths, the result tree) in one extension object, "loki". JSON goes through
 * jansson; base64 is here because JSON has no bytes.
 */
#include "http_kserve.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loki/error.h"

/* ---- base64 ---------------------------------------------------------------------------------- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t loki_base64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = B64[(v >> 6) & 63];
        out[o++] = B64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = i + 1 < n ? B64[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    return o;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long loki_base64_decode(const char *in, size_t n, uint8_t *out)
{
    if (n % 4)
        return -EINVAL;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (in[i + k] == '=' && i + 4 == n && k >= 2) {
                v[k] = 0;
                pad++;
            } else if (pad || (v[k] = b64_value(in[i + k])) < 0) {
                return -EINVAL; /* a character after '=' or outside the alphabet */
            }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | v[3];
        out[o++] = (uint8_t)(w >> 16);
        if (pad < 2)
            out[o++] = (uint8_t)(w >> 8);
        if (pad < 1)
            out[o++] = (uint8_t)w;
    }
    return (long)o;
}

/* ---- parsing --------------------------------------------------------------------------------- */

size_t loki_kserve_body_max(uint32_t max_payload)
{
    return 4 * ((size_t)max_payload / 3 + 1) + LOKI_KSERVE_HEADER_MAX;
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/* The element count a "shape" describes, or -1 when it is not an array of integers >= 0. */
static long long shape_count(const json_t *shape)
{
    size_t i;
    json_t *d;
    long long n = 1;
    if (!json_is_array(shape))
        return -1;
    json_array_foreach(shape, i, d)
    {
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return -1;
        n *= json_integer_value(d);
        if (n > (1ll << 40))
            return -1;
    }
    return n;
}

/* The request's optional "parameters" object (KServe: request, input and output level). */
static int get_params(const json_t *obj, const char *where, json_t **out, char *err, size_t errlen)
{
    *out = json_object_get(obj, "parameters");
    if (*out && !json_is_object(*out))
        return fail(err, errlen, "%s 'parameters': expected an object", where);
    return 0;
}

/* "outputs" asks for the one output, in JSON (default) or binary, as base64 or strings. */
static int parse_outputs(const json_t *outs, struct loki_kserve_req *rq, char *err, size_t errlen)
{
    size_t i;
    json_t *o;
    if (!json_is_array(outs))
        return fail(err, errlen, "'outputs': expected an array");
    json_array_foreach(outs, i, o)
    {
        json_t *name, *p, *v;
        if (!json_is_object(o) || !json_is_string(name = json_object_get(o, "name")))
            return fail(err, errlen, "'outputs[%zu]': expected an object with a string 'name'", i);
        if (strcmp(json_string_value(name), LOKI_KSERVE_OUTPUT))
            return fail(err, errlen, "'outputs[%zu]': unknown output '%s' (there is one: '%s')", i,
                        json_string_value(name), LOKI_KSERVE_OUTPUT);
        if (get_params(o, "output", &p, err, errlen))
            return -EINVAL;
        if (p && (v = json_object_get(p, "binary_data"))) {
            if (!json_is_boolean(v))
                return fail(err, errlen, "output parameter 'binary_data': expected a boolean");
            rq->binary_output = json_is_true(v);
        }
        if (p && (v = json_object_get(p, "content_type"))) {
            const char *ct = json_is_string(v) ? json_string_value(v) : "";
            if (strcmp(ct, "base64") && strcmp(ct, "str"))
                return fail(err, errlen,
                            "output parameter 'content_type': \"base64\" or \"str\" expected");
            rq->output_str = !strcmp(ct, "str");
        }
    }
    return 0;
}

/* Request-level parameters: Loki's deadline_ms and loki_result, Triton's binary_data_output. */
static int parse_request_params(const json_t *p, struct loki_kserve_req *rq, char *err,
                                size_t errlen)
{
    json_t *v;
    if (!p)
        return 0;
    if ((v = json_object_get(p, "deadline_ms"))) {
        double d = json_number_value(v);
        if (!json_is_number(v) || !(d > 0) || !isfinite(d))
            return fail(err, errlen, "parameter 'deadline_ms': expected a number > 0");
        rq->deadline_ms = d;
    }
    if ((v = json_object_get(p, "binary_data_output"))) {
        if (!json_is_boolean(v))
            return fail(err, errlen, "parameter 'binary_data_output': expected a boolean");
        rq->binary_output = json_is_true(v);
    }
    if ((v = json_object_get(p, "loki_result"))) {
        if (!json_is_boolean(v))
            return fail(err, errlen, "parameter 'loki_result': expected a boolean");
        rq->no_result = json_is_false(v);
    }
    return 0;
}

/*
 * The one input: BYTES of one element. With binary_data_size its bytes are @bin (@bin_len of
 * them, after the JSON), a 4-byte little-endian length and the element (Triton's layout for
 * BYTES); else "data" holds one string, base64 (content_type "base64") or the bytes themselves.
 */
static int parse_input(const json_t *in, uint8_t *body, uint8_t *bin, size_t bin_len,
                       uint32_t max_payload, struct loki_kserve_req *rq, char *err, size_t errlen)
{
    json_t *name, *dt, *p, *v, *data;
    if (!json_is_object(in) || !json_is_string(name = json_object_get(in, "name")))
        return fail(err, errlen, "'inputs[0]': expected an object with a string 'name'");
    if (!json_is_string(dt = json_object_get(in, "datatype")) ||
        strcmp(json_string_value(dt), "BYTES"))
        return fail(err, errlen,
                    "input '%s': 'datatype' must be \"BYTES\" (one element: the "
                    "payload)",
                    json_string_value(name));
    if (shape_count(json_object_get(in, "shape")) != 1)
        return fail(err, errlen, "input '%s': 'shape' must hold one element, such as [1]",
                    json_string_value(name));
    if (get_params(in, "input", &p, err, errlen))
        return -EINVAL;
    bool b64 = false;
    if (p && (v = json_object_get(p, "content_type"))) {
        const char *ct = json_is_string(v) ? json_string_value(v) : "";
        if (strcmp(ct, "base64") && strcmp(ct, "str"))
            return fail(err, errlen,
                        "input parameter 'content_type': \"base64\" or \"str\" "
                        "expected");
        b64 = !strcmp(ct, "base64");
    }
    json_t *bsz = p ? json_object_get(p, "binary_data_size") : NULL;
    data = json_object_get(in, "data");
    if (bsz) {
        if (!json_is_integer(bsz) || json_integer_value(bsz) < 0)
            return fail(err, errlen,
                        "input parameter 'binary_data_size': expected an integer "
                        ">= 0");
        if (data)
            return fail(err, errlen, "input '%s': 'data' and 'binary_data_size' both given",
                        json_string_value(name));
        if ((size_t)json_integer_value(bsz) != bin_len)
            return fail(err, errlen,
                        "binary data: %zu bytes follow the JSON header, 'binary_data_size' says "
                        "%lld",
                        bin_len, (long long)json_integer_value(bsz));
        if (bin_len < 4)
            return fail(err, errlen,
                        "binary data: a BYTES element starts with its 4-byte "
                        "length");
        uint32_t n = (uint32_t)bin[0] | (uint32_t)bin[1] << 8 | (uint32_t)bin[2] << 16 |
                     (uint32_t)bin[3] << 24;
        if ((size_t)n != bin_len - 4)
            return fail(err, errlen,
                        "binary data: the BYTES element's length says %u, %zu bytes follow", n,
                        bin_len - 4);
        if (n > max_payload)
            goto too_big;
        rq->payload = bin + 4;
        rq->payload_len = n;
        return 0;
    }
    if (bin_len)
        return fail(err, errlen,
                    "binary data: %zu bytes follow the JSON header, but no input "
                    "has 'binary_data_size'",
                    bin_len);
    /* KServe allows the data nested as the shape is: [[x]] for shape [1, 1] */
    while (json_is_array(data) && json_array_size(data) == 1)
        data = json_array_get(data, 0);
    if (!json_is_string(data))
        return fail(err, errlen,
                    "input '%s': 'data' must hold one string (or use the "
                    "binary-data extension)",
                    json_string_value(name));
    const char *s = json_string_value(data);
    size_t n = json_string_length(data);
    if (b64) {
        if (3 * (n / 4) > (size_t)max_payload + 2)
            goto too_big;
        long k = loki_base64_decode(s, n, body);
        if (k < 0)
            return fail(err, errlen, "input '%s': 'data' is not base64", json_string_value(name));
        n = (size_t)k;
    } else {
        if (n > max_payload)
            goto too_big;
        memcpy(body, s, n);
    }
    if (n > max_payload)
        goto too_big;
    rq->payload = body;
    rq->payload_len = (uint32_t)n;
    return 0;
too_big:
    if (err && errlen)
        snprintf(err, errlen, "payload exceeds the limit of %u bytes", max_payload);
    return LOKI_ETOOBIG;
}

int loki_kserve_parse_infer(uint8_t *body, size_t len, size_t header_len, uint32_t max_payload,
                            struct loki_kserve_req *rq, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root, *v, *p;
    int rc = -EINVAL;
    memset(rq, 0, sizeof(*rq));
    if (header_len > len)
        return fail(err, errlen, "Inference-Header-Content-Length %zu exceeds the body's %zu bytes",
                    header_len, len);
    size_t jlen = header_len ? header_len : len;
    if (jlen == 0)
        return fail(err, errlen, "empty request: expected a KServe v2 infer request (JSON)");
    if (jlen > LOKI_KSERVE_HEADER_MAX && header_len)
        return fail(err, errlen, "JSON header of %zu bytes exceeds the limit of %u", jlen,
                    LOKI_KSERVE_HEADER_MAX);
    root = json_loadb((const char *)body, jlen, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return fail(err, errlen, "invalid JSON at byte %d: %s", je.position, je.text);
    if (!json_is_object(root)) {
        fail(err, errlen, "the request must be a JSON object");
        goto out;
    }
    if ((v = json_object_get(root, "id"))) {
        if (!json_is_string(v) || json_string_length(v) > LOKI_KSERVE_ID_MAX ||
            strlen(json_string_value(v)) != json_string_length(v)) {
            fail(err, errlen, "'id': expected a string of at most %d bytes", LOKI_KSERVE_ID_MAX);
            goto out;
        }
        rq->has_id = true;
        snprintf(rq->id, sizeof(rq->id), "%s", json_string_value(v));
    }
    if (get_params(root, "request", &p, err, errlen) || parse_request_params(p, rq, err, errlen))
        goto out;
    if ((v = json_object_get(root, "outputs")) && parse_outputs(v, rq, err, errlen))
        goto out;
    v = json_object_get(root, "inputs");
    if (!json_is_array(v) || json_array_size(v) != 1) {
        fail(err, errlen, "'inputs': expected an array of one input (the payload, BYTES [1])");
        goto out;
    }
    rc = parse_input(json_array_get(v, 0), body, body + jlen, header_len ? len - jlen : 0,
                     max_payload, rq, err, errlen);
out:
    json_decref(root);
    return rc;
}

/* ---- rendering ------------------------------------------------------------------------------- */

unsigned loki_kserve_http_status(enum loki_status s)
{
    switch (s) {
    case LOKI_STATUS_OK:
    case LOKI_STATUS_LATE: /* served, after its deadline: the outputs are there */
        return 200;
    case LOKI_STATUS_BAD_REQUEST:
        return 400;
    case LOKI_STATUS_UNKNOWN_PIPELINE:
        return 404;
    case LOKI_STATUS_OVERLOADED:
    case LOKI_STATUS_DRAINING:
    case LOKI_STATUS_CLOSED: /* lokid's socket went away under the front door */
        return 503;
    case LOKI_STATUS_DROPPED: /* shed: its deadline could not be met (gRPC DEADLINE_EXCEEDED) */
    case LOKI_STATUS_TIMEOUT: /* no answer within frontend.http.request_timeout_s */
        return 504;
    default: /* error, and cancelled (the front door never cancels) */
        return 500;
    }
}

/* A JSON string of @b: the bytes themselves when @str (NULL when they are not UTF-8), else
 * base64. */
static json_t *bytes_json(struct loki_bytes b, bool str)
{
    if (str)
        return json_stringn((const char *)b.ptr, b.len);
    char *tmp = malloc(4 * ((size_t)b.len / 3 + 1) + 1);
    if (!tmp)
        return NULL;
    size_t n = loki_base64_encode(b.ptr, b.len, tmp);
    json_t *s = json_stringn_nocheck(tmp, n);
    free(tmp);
    return s;
}

/* Text for a JSON string: lokid's error texts and names are ASCII, but a byte that is not
 * valid UTF-8 becomes '?' rather than failing the response. */
static json_t *text_json(const char *p, size_t n)
{
    json_t *s = json_stringn(p, n);
    if (s || !n)
        return s;
    char *t = malloc(n);
    if (!t)
        return NULL;
    for (size_t i = 0; i < n; i++)
        t[i] = (unsigned char)p[i] < 0x80 ? p[i] : '?';
    s = json_stringn(t, n);
    free(t);
    return s;
}

/* The output's elements, the leaf outputs: as strings when @str and every one is UTF-8 (then
 * *@str_used), else base64. */
static json_t *data_json(const struct loki_reply *r, bool str, bool *str_used)
{
    for (int pass = str ? 0 : 1; pass < 2; pass++) {
        json_t *a = json_array();
        if (!a)
            return NULL;
        uint32_t i = 0;
        for (; i < r->n_outputs; i++)
            if (json_array_append_new(a, bytes_json(r->outputs[i], pass == 0)))
                break;
        if (i == r->n_outputs) {
            *str_used = pass == 0;
            return a;
        }
        json_decref(a);
    }
    return NULL;
}

/* set_new's reference is taken even when it fails; a NULL value makes it fail */
#define SET(obj, key, val)                                                                         \
    do {                                                                                           \
        if (json_object_set_new(obj, key, val))                                                    \
            goto nomem;                                                                            \
    } while (0)
#define APPEND(arr, val)                                                                           \
    do {                                                                                           \
        if (json_array_append_new(arr, val))                                                       \
            goto nomem;                                                                            \
    } while (0)

static json_t *str_json(struct loki_bytes b)
{
    return text_json((const char *)b.ptr, b.len);
}

/* The "loki" extension: status, error, retry hint, accuracy, latency, paths, result tree. */
static json_t *loki_json(const struct loki_reply *r, bool with_result)
{
    json_t *o = json_object(), *a, *n;
    if (!o)
        return NULL;
    SET(o, "status", json_string(loki_status_name(r->status)));
    if (r->error.len)
        SET(o, "error", str_json(r->error));
    if (r->has_retry_after)
        SET(o, "retry_after_ms", json_real(r->retry_after_ms));
    if (r->status == LOKI_STATUS_OK || r->status == LOKI_STATUS_LATE) {
        SET(o, "accuracy", json_real(r->accuracy));
        SET(o, "latency_ms", json_real(r->latency_ms));
        SET(o, "paths", a = json_array());
        for (uint32_t i = 0; i < r->n_paths; i++)
            APPEND(a, str_json(r->paths[i]));
    }
    if (with_result && r->n_nodes) {
        SET(o, "result", a = json_array());
        for (uint32_t i = 0; i < r->n_nodes; i++) {
            const struct loki_reply_node *nd = &r->nodes[i];
            APPEND(a, n = json_object());
            SET(n, "task", str_json(nd->task));
            SET(n, "variant", str_json(nd->variant));
            SET(n, "parent", json_integer(nd->parent));
            SET(n, "status", json_string(loki_status_name(nd->status)));
            SET(n, "output", bytes_json(nd->output, false));
        }
    }
    return o;
nomem:
    json_decref(o);
    return NULL;
}

/* Dump @root into @out (taking it), then append the binary part @bin of @bin_len bytes. */
static int finish(json_t *root, struct loki_kserve_resp *out, const struct loki_reply *bin_of)
{
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!s)
        return -ENOMEM;
    size_t hl = strlen(s), total = hl;
    if (bin_of) {
        for (uint32_t i = 0; i < bin_of->n_outputs; i++)
            total += 4 + (size_t)bin_of->outputs[i].len;
        char *t = realloc(s, total ? total : 1);
        if (!t) {
            free(s);
            return -ENOMEM;
        }
        s = t;
        size_t o = hl;
        for (uint32_t i = 0; i < bin_of->n_outputs; i++) {
            uint32_t n = bin_of->outputs[i].len;
            uint8_t le[4] = {(uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), (uint8_t)(n >> 24)};
            memcpy(s + o, le, 4);
            if (n)
                memcpy(s + o + 4, bin_of->outputs[i].ptr, n);
            o += 4 + (size_t)n;
        }
        out->header_len = hl;
    }
    out->body = s;
    out->len = total;
    return 0;
}

int loki_kserve_render_reply(const char *model, const struct loki_kserve_req *rq,
                             const struct loki_reply *r, struct loki_kserve_resp *out)
{
    memset(out, 0, sizeof(*out));
    out->http = loki_kserve_http_status(r->status);
    if (r->status == LOKI_STATUS_OVERLOADED)
        out->retry_after_s = r->has_retry_after && r->retry_after_ms > 1000
                                 ? (unsigned)fmin(ceil(r->retry_after_ms / 1000), 3600)
                                 : 1; /* HTTP counts whole seconds */
    out->close = r->status == LOKI_STATUS_DRAINING;
    bool served = out->http == 200;
    bool binary = served && rq->binary_output;
    json_t *root = json_object(), *o, *a;
    if (!root)
        return -ENOMEM;
    SET(root, "model_name", text_json(model, strlen(model)));
    if (rq->has_id)
        SET(root, "id", text_json(rq->id, strlen(rq->id)));
    if (served) {
        SET(root, "outputs", a = json_array());
        APPEND(a, o = json_object());
        SET(o, "name", json_string(LOKI_KSERVE_OUTPUT));
        SET(o, "datatype", json_string("BYTES"));
        json_t *shape = json_array();
        SET(o, "shape", shape);
        APPEND(shape, json_integer(r->n_outputs));
        json_t *p = json_object();
        SET(o, "parameters", p);
        if (binary) {
            size_t sz = 0;
            for (uint32_t i = 0; i < r->n_outputs; i++)
                sz += 4 + (size_t)r->outputs[i].len;
            SET(p, "binary_data_size", json_integer((json_int_t)sz));
        } else {
            bool str = false;
            SET(o, "data", data_json(r, rq->output_str, &str));
            SET(p, "content_type", json_string(str ? "str" : "base64"));
        }
    } else {
        char msg[LOKI_PROTO_ERR_MAX + 64];
        snprintf(msg, sizeof(msg), "%s%s%.*s", loki_status_name(r->status),
                 r->error.len ? ": " : "", (int)r->error.len, (const char *)r->error.ptr);
        SET(root, "error", text_json(msg, strlen(msg)));
    }
    SET(root, "loki", loki_json(r, !rq->no_result));
    return finish(root, out, binary ? r : NULL);
nomem:
    json_decref(root);
    return -ENOMEM;
}

int loki_kserve_render_error(unsigned http, const char *msg, struct loki_kserve_resp *out)
{
    memset(out, 0, sizeof(*out));
    out->http = http;
    json_t *root = json_object();
    if (!root)
        return -ENOMEM;
    SET(root, "error", text_json(msg, strlen(msg)));
    return finish(root, out, NULL);
nomem:
    json_decref(root);
    return -ENOMEM;
}
