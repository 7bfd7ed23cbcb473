/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Wire codec: a small msgpack reader and writer specialised for Loki's frames.
 *
 * Why not msgpack-c's unpacker: it allocates a zone per message and builds an
 * object tree, and we want neither on the per-query path. The reader here is a
 * cursor over the caller's buffer: every length it reads is checked against
 * the bytes that remain before it is used, containers nested inside ignored
 * values are bounded by LOKI_PROTO_MAX_DEPTH, and an element count is checked
 * against the remaining bytes (each element needs one) before any loop runs,
 * so no input can make it read out of bounds, recurse deeply or spin.
 * Decoding keeps going after a field of the wrong type so that the request id
 * is recovered whenever it is readable; the first error found is reported.
 * The writer appends into a caller buffer and only reports -ENOBUFS at the end.
 * The tests check both directions against msgpack-c.
 */
#include "loki/proto.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "loki/error.h"

/* ---- names ------------------------------------------------------------ */

static const char *const status_names[] = {
#define LOKI_STATUS_NAME_(n, s) s,
    LOKI_STATUSES(LOKI_STATUS_NAME_)
#undef LOKI_STATUS_NAME_
};

static const char *const type_names[] = {"error", "infer", "hello", "status", "metrics", "ping"};

const char *loki_status_name(enum loki_status s)
{
    if ((unsigned)s >= LOKI_STATUS_COUNT_)
        return "?";
    return status_names[s];
}

const char *loki_msg_type_name(enum loki_msg_type t)
{
    if ((unsigned)t >= sizeof(type_names) / sizeof(type_names[0]))
        return "?";
    return type_names[t];
}

struct loki_bytes loki_bytes_str(const char *s)
{
    struct loki_bytes b = {(const uint8_t *)s, s ? (uint32_t)strlen(s) : 0};
    return b;
}

bool loki_bytes_eq(struct loki_bytes b, const char *s)
{
    size_t n = strlen(s);
    return b.len == n && (n == 0 || memcmp(b.ptr, s, n) == 0);
}

void loki_request_init(struct loki_request *req)
{
    memset(req, 0, sizeof(*req));
    req->pipeline_index = -1;
}

void loki_reply_init(struct loki_reply *r)
{
    memset(r, 0, offsetof(struct loki_reply, outputs));
    r->n_outputs = 0;
    r->n_paths = 0;
    r->accuracy = 0;
    r->latency_ms = 0;
    r->version = 0;
    r->server.ptr = NULL;
    r->server.len = 0;
    r->max_payload = 0;
    r->max_outstanding = 0;
    r->n_pipelines = 0;
    r->ready = r->draining = false;
    r->connections = r->inflight = 0;
    r->n_metrics = 0;
}

/* ---- framing ---------------------------------------------------------- */

ssize_t loki_proto_frame_next(const uint8_t *buf, size_t len, uint32_t max_body,
                              const uint8_t **body, uint32_t *body_len)
{
    if (len < LOKI_PROTO_HDR)
        return 0;
    uint32_t n = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | buf[3];
    if (body_len)
        *body_len = n;
    if (n > max_body)
        return LOKI_ETOOBIG;
    if (len - LOKI_PROTO_HDR < n)
        return 0;
    if (body)
        *body = buf + LOKI_PROTO_HDR;
    return (ssize_t)n + LOKI_PROTO_HDR;
}

/* ---- reader ----------------------------------------------------------- */

enum mp_kind {
    MP_NIL,
    MP_BOOL,
    MP_UINT,
    MP_INT,
    MP_FLOAT,
    MP_STR,
    MP_BIN,
    MP_ARRAY,
    MP_MAP,
    MP_EXT
};

static const char *const kind_names[] = {"nil", "bool", "uint",  "int", "float",
                                         "str", "bin",  "array", "map", "ext"};

struct mp_val {
    enum mp_kind kind;
    bool b;
    uint64_t u;
    int64_t i;
    double f;
    const uint8_t *ptr;
    uint32_t len; /* bytes of str/bin/ext, entries of array/map */
};

struct rd {
    const uint8_t *p, *end, *start;
    char *err;
    size_t errlen;
    int rc; /* first error, 0 if none */
};

static void fail(struct rd *r, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void fail(struct rd *r, int rc, const char *fmt, ...)
{
    if (r->rc)
        return;
    r->rc = rc;
    if (r->err && r->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err, r->errlen, fmt, ap);
        va_end(ap);
    }
}

static bool need(struct rd *r, size_t n)
{
    return (size_t)(r->end - r->p) >= n;
}

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int k = 0; k < n; k++)
        v = v << 8 | p[k];
    return v;
}

/*
 * Read one value header; str/bin/ext bodies are consumed and sliced, container
 * contents are not. Returns 0 or -1 on a structural error (already reported).
 */
static int mp_head(struct rd *r, struct mp_val *v)
{
    if (!need(r, 1)) {
        fail(r, LOKI_EPROTO, "truncated msgpack at offset %zu", (size_t)(r->p - r->start));
        return -1;
    }
    size_t off = (size_t)(r->p - r->start);
    uint8_t c = *r->p++;
    int n = 0; /* bytes of a length or scalar that follow */
    memset(v, 0, sizeof(*v));
    if (c <= 0x7f) {
        v->kind = MP_UINT;
        v->u = c;
        return 0;
    }
    if (c >= 0xe0) {
        v->kind = MP_INT;
        v->i = (int8_t)c;
        return 0;
    }
    if ((c & 0xf0) == 0x80 || (c & 0xf0) == 0x90) {
        v->kind = (c & 0xf0) == 0x80 ? MP_MAP : MP_ARRAY;
        v->len = c & 0x0f;
        goto count;
    }
    if ((c & 0xe0) == 0xa0) {
        v->kind = MP_STR;
        v->len = c & 0x1f;
        goto body;
    }
    switch (c) {
    case 0xc0:
        v->kind = MP_NIL;
        return 0;
    case 0xc2:
    case 0xc3:
        v->kind = MP_BOOL;
        v->b = c == 0xc3;
        return 0;
    case 0xc4:
    case 0xc5:
    case 0xc6: /* bin 8/16/32 */
    case 0xd9:
    case 0xda:
    case 0xdb: /* str 8/16/32 */
        v->kind = c <= 0xc6 ? MP_BIN : MP_STR;
        n = 1 << (c <= 0xc6 ? c - 0xc4 : c - 0xd9);
        if (!need(r, (size_t)n))
            goto truncated;
        v->len = (uint32_t)be(r->p, n);
        r->p += n;
        goto body;
    case 0xc7:
    case 0xc8:
    case 0xc9: /* ext 8/16/32 */
        v->kind = MP_EXT;
        n = 1 << (c - 0xc7);
        if (!need(r, (size_t)n + 1))
            goto truncated;
        v->len = (uint32_t)be(r->p, n);
        r->p += n + 1;
        goto body;
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8: /* fixext 1..16 */
        v->kind = MP_EXT;
        if (!need(r, 1))
            goto truncated;
        r->p++;
        v->len = 1u << (c - 0xd4);
        goto body;
    case 0xca:
    case 0xcb: {
        v->kind = MP_FLOAT;
        n = c == 0xca ? 4 : 8;
        if (!need(r, (size_t)n))
            goto truncated;
        uint64_t bits = be(r->p, n);
        r->p += n;
        if (n == 4) {
            uint32_t b32 = (uint32_t)bits;
            float f;
            memcpy(&f, &b32, 4);
            v->f = f;
        } else {
            memcpy(&v->f, &bits, 8);
        }
        return 0;
    }
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
        v->kind = MP_UINT;
        n = 1 << (c - 0xcc);
        if (!need(r, (size_t)n))
            goto truncated;
        v->u = be(r->p, n);
        r->p += n;
        return 0;
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: {
        n = 1 << (c - 0xd0);
        if (!need(r, (size_t)n))
            goto truncated;
        uint64_t raw = be(r->p, n);
        r->p += n;
        int64_t s;
        if (n == 1)
            s = (int8_t)raw;
        else if (n == 2)
            s = (int16_t)raw;
        else if (n == 4)
            s = (int32_t)raw;
        else
            s = (int64_t)raw;
        if (s >= 0) {
            v->kind = MP_UINT;
            v->u = (uint64_t)s;
        } else {
            v->kind = MP_INT;
            v->i = s;
        }
        return 0;
    }
    case 0xdc:
    case 0xdd:
    case 0xde:
    case 0xdf:
        v->kind = c <= 0xdd ? MP_ARRAY : MP_MAP;
        n = c == 0xdc || c == 0xde ? 2 : 4;
        if (!need(r, (size_t)n))
            goto truncated;
        v->len = (uint32_t)be(r->p, n);
        r->p += n;
        goto count;
    default: /* 0xc1: never used */
        fail(r, LOKI_EPROTO, "invalid msgpack byte 0x%02x at offset %zu", c, off);
        return -1;
    }
body:
    if (!need(r, v->len))
        goto truncated;
    v->ptr = r->p;
    r->p += v->len;
    return 0;
count:
    /* every entry needs at least one byte: a count larger than what is left is a lie */
    if ((uint64_t)v->len * (v->kind == MP_MAP ? 2 : 1) > (uint64_t)(r->end - r->p))
        goto truncated;
    return 0;
truncated:
    fail(r, LOKI_EPROTO, "truncated msgpack at offset %zu", off);
    return -1;
}

static int mp_skip_contents(struct rd *r, const struct mp_val *v, int depth);

/* Read a whole value; container contents are skipped (only kind and count are kept). */
static int mp_value(struct rd *r, struct mp_val *v, int depth)
{
    if (mp_head(r, v))
        return -1;
    return mp_skip_contents(r, v, depth);
}

static int mp_skip_contents(struct rd *r, const struct mp_val *v, int depth)
{
    if (v->kind != MP_ARRAY && v->kind != MP_MAP)
        return 0;
    if (depth >= LOKI_PROTO_MAX_DEPTH) {
        fail(r, LOKI_EPROTO, "msgpack nested deeper than %d levels", LOKI_PROTO_MAX_DEPTH);
        return -1;
    }
    uint64_t n = (uint64_t)v->len * (v->kind == MP_MAP ? 2 : 1);
    for (uint64_t k = 0; k < n; k++) {
        struct mp_val sub;
        if (mp_value(r, &sub, depth + 1))
            return -1;
    }
    return 0;
}

/* What we got, as a user thinks of it: any integer is an "int". */
static const char *kind_name(const struct mp_val *v)
{
    return v->kind == MP_UINT ? "int" : kind_names[v->kind];
}

static bool want(struct rd *r, const char *field, const struct mp_val *v, enum mp_kind k)
{
    if (v->kind == k)
        return true;
    fail(r, LOKI_EPROTO, "field '%s': expected %s, got %s", field, kind_names[k], kind_name(v));
    return false;
}

static bool want_number(struct rd *r, const char *field, const struct mp_val *v, double *out)
{
    if (v->kind == MP_FLOAT)
        *out = v->f;
    else if (v->kind == MP_UINT)
        *out = (double)v->u;
    else if (v->kind == MP_INT)
        *out = (double)v->i;
    else {
        fail(r, LOKI_EPROTO, "field '%s': expected float, got %s", field, kind_name(v));
        return false;
    }
    if (!isfinite(*out)) {
        fail(r, LOKI_EPROTO, "field '%s': not a finite number", field);
        return false;
    }
    return true;
}

static bool want_u32(struct rd *r, const char *field, const struct mp_val *v, uint32_t *out)
{
    if (!want(r, field, v, MP_UINT))
        return false;
    if (v->u > UINT32_MAX) {
        fail(r, LOKI_EPROTO, "field '%s': %llu out of range", field, (unsigned long long)v->u);
        return false;
    }
    *out = (uint32_t)v->u;
    return true;
}

static struct loki_bytes slice(const struct mp_val *v)
{
    struct loki_bytes b = {v->ptr, v->len};
    return b;
}

static bool key_is(const struct mp_val *k, const char *s)
{
    return loki_bytes_eq(slice(k), s);
}

/* Parse a "type" value into @t; -1 when unknown. */
static int parse_type(const struct mp_val *v, bool allow_error)
{
    for (int t = LOKI_MSG_INFER; t <= LOKI_MSG_PING; t++)
        if (key_is(v, type_names[t]))
            return t;
    if (allow_error && key_is(v, "error"))
        return LOKI_MSG_NONE;
    return -1;
}

/* Read the top-level map header; returns its entry count or -1. */
static long top_map(struct rd *r)
{
    struct mp_val v;
    if (r->p == r->end) {
        fail(r, LOKI_EPROTO, "empty frame");
        return -1;
    }
    if (mp_head(r, &v))
        return -1;
    if (v.kind != MP_MAP) {
        fail(r, LOKI_EPROTO, "frame body: expected map, got %s", kind_name(&v));
        return -1;
    }
    return v.len;
}

static bool map_key(struct rd *r, struct mp_val *k)
{
    if (mp_value(r, k, 1))
        return false;
    if (k->kind != MP_STR) {
        fail(r, LOKI_EPROTO, "map key: expected str, got %s", kind_name(k));
        return false;
    }
    return true;
}

/* A field name for error messages: bounded and printable. */
static void field_name(const struct mp_val *k, char *out, size_t n)
{
    size_t m = k->len < n - 1 ? k->len : n - 1;
    for (size_t j = 0; j < m; j++)
        out[j] = k->ptr[j] >= 0x20 && k->ptr[j] < 0x7f ? (char)k->ptr[j] : '?';
    out[m] = 0;
}

static bool dup(struct rd *r, unsigned *seen, unsigned bit, const char *field)
{
    if (*seen & bit) {
        fail(r, LOKI_EPROTO, "field '%s' appears twice", field);
        return true;
    }
    *seen |= bit;
    return false;
}

static int finish(struct rd *r)
{
    if (!r->rc && r->p != r->end)
        fail(r, LOKI_EPROTO, "%zu trailing bytes after the map", (size_t)(r->end - r->p));
    return r->rc;
}

enum {
    F_TYPE = 1 << 0,
    F_ID = 1 << 1,
    F_PIPELINE = 1 << 2,
    F_PAYLOAD = 1 << 3,
    F_DEADLINE = 1 << 4,
    F_PRIORITY = 1 << 5,
    F_VERSION = 1 << 6,
    F_NAME = 1 << 7,
    F_FORMAT = 1 << 8,
};

int loki_proto_decode_request(const uint8_t *body, size_t len, const struct loki_proto_limits *lim,
                              struct loki_request *req, char *err, size_t errlen)
{
    struct rd r = {body, body + len, body, err, errlen, 0};
    unsigned seen = 0;
    int type = LOKI_MSG_INFER;
    loki_request_init(req);
    if (err && errlen)
        err[0] = 0;
    long n = top_map(&r);
    for (long i = 0; i < n; i++) {
        struct mp_val k, v;
        if (!map_key(&r, &k) || mp_value(&r, &v, 1))
            return r.rc;
        if (key_is(&k, "type")) {
            if (dup(&r, &seen, F_TYPE, "type") || !want(&r, "type", &v, MP_STR))
                continue;
            type = parse_type(&v, false);
            if (type < 0) {
                char t[32];
                field_name(&v, t, sizeof(t));
                fail(&r, LOKI_EPROTO, "field 'type': unknown message type '%s'", t);
            }
        } else if (key_is(&k, "id")) {
            if (dup(&r, &seen, F_ID, "id"))
                continue;
            if (v.kind == MP_INT) {
                fail(&r, LOKI_EPROTO, "field 'id': expected uint, got negative int");
                continue;
            }
            if (!want(&r, "id", &v, MP_UINT))
                continue;
            req->has_id = true;
            req->id = v.u;
        } else if (key_is(&k, "pipeline")) {
            if (dup(&r, &seen, F_PIPELINE, "pipeline") || !want(&r, "pipeline", &v, MP_STR))
                continue;
            if (v.len == 0)
                fail(&r, LOKI_EPROTO, "field 'pipeline': empty");
            else if (v.len > LOKI_PROTO_NAME_MAX)
                fail(&r, LOKI_ETOOBIG, "field 'pipeline': %u bytes exceeds the limit of %d", v.len,
                     LOKI_PROTO_NAME_MAX);
            req->pipeline = slice(&v);
        } else if (key_is(&k, "payload")) {
            if (dup(&r, &seen, F_PAYLOAD, "payload") || !want(&r, "payload", &v, MP_BIN))
                continue;
            if (lim && v.len > lim->max_payload)
                fail(&r, LOKI_ETOOBIG, "field 'payload': %u bytes exceeds the limit of %u", v.len,
                     lim->max_payload);
            req->payload = slice(&v);
        } else if (key_is(&k, "deadline_ms")) {
            if (dup(&r, &seen, F_DEADLINE, "deadline_ms") || v.kind == MP_NIL)
                continue;
            double d;
            if (!want_number(&r, "deadline_ms", &v, &d))
                continue;
            if (!(d > 0)) {
                fail(&r, LOKI_EPROTO, "field 'deadline_ms': must be > 0, got %g", d);
                continue;
            }
            req->has_deadline = true;
            req->deadline_ms = d;
        } else if (key_is(&k, "priority")) {
            if (dup(&r, &seen, F_PRIORITY, "priority") || v.kind == MP_NIL)
                continue;
            if (v.kind != MP_UINT && v.kind != MP_INT) {
                fail(&r, LOKI_EPROTO, "field 'priority': expected int, got %s", kind_name(&v));
                continue;
            }
            if (v.kind == MP_UINT ? v.u > INT32_MAX : v.i < INT32_MIN) {
                fail(&r, LOKI_EPROTO, "field 'priority': out of the int32 range");
                continue;
            }
            req->has_priority = true;
            req->priority = v.kind == MP_UINT ? (int32_t)v.u : (int32_t)v.i;
        } else if (key_is(&k, "version")) {
            if (dup(&r, &seen, F_VERSION, "version"))
                continue;
            want_u32(&r, "version", &v, &req->version);
        } else if (key_is(&k, "name")) {
            if (dup(&r, &seen, F_NAME, "name") || !want(&r, "name", &v, MP_STR))
                continue;
            if (v.len > LOKI_PROTO_NAME_MAX)
                fail(&r, LOKI_ETOOBIG, "field 'name': %u bytes exceeds the limit of %d", v.len,
                     LOKI_PROTO_NAME_MAX);
            req->name = slice(&v);
        } else if (key_is(&k, "format")) {
            if (dup(&r, &seen, F_FORMAT, "format") || !want(&r, "format", &v, MP_STR))
                continue;
            if (v.len > LOKI_PROTO_FORMAT_MAX)
                fail(&r, LOKI_ETOOBIG, "field 'format': %u bytes exceeds the limit of %d", v.len,
                     LOKI_PROTO_FORMAT_MAX);
            req->format = slice(&v);
        }
        /* unknown keys are ignored: newer clients may send more */
    }
    if (finish(&r))
        return r.rc;
    req->type = (enum loki_msg_type)type;
    if (type == LOKI_MSG_INFER) {
        if (!(seen & F_ID))
            fail(&r, LOKI_EPROTO, "missing field 'id'");
        else if (!(seen & F_PIPELINE))
            fail(&r, LOKI_EPROTO, "missing field 'pipeline'");
        else if (!(seen & F_PAYLOAD))
            fail(&r, LOKI_EPROTO, "missing field 'payload'");
    } else if (type == LOKI_MSG_HELLO) {
        if (!(seen & F_VERSION))
            fail(&r, LOKI_EPROTO, "missing field 'version'");
        else if (req->version < 1)
            fail(&r, LOKI_EPROTO, "field 'version': must be >= 1");
    }
    return r.rc;
}

static bool str_array(struct rd *r, const char *field, struct loki_bytes *out, uint32_t *n,
                      uint32_t max, enum mp_kind k)
{
    struct mp_val a;
    if (mp_head(r, &a))
        return false;
    if (a.kind != MP_ARRAY) {
        if (mp_skip_contents(r, &a, 1))
            return false;
        fail(r, LOKI_EPROTO, "field '%s': expected array, got %s", field, kind_name(&a));
        return true;
    }
    if (a.len > max) {
        fail(r, LOKI_EPROTO, "field '%s': %u entries exceeds the limit of %u", field, a.len, max);
        return mp_skip_contents(r, &a, 1) == 0;
    }
    *n = a.len;
    for (uint32_t j = 0; j < a.len; j++) {
        struct mp_val v;
        if (mp_value(r, &v, 2))
            return false;
        if (v.kind != k) {
            fail(r, LOKI_EPROTO, "field '%s[%u]': expected %s, got %s", field, j, kind_names[k],
                 kind_name(&v));
            continue;
        }
        out[j] = slice(&v);
    }
    return true;
}

int loki_proto_decode_reply(const uint8_t *body, size_t len, struct loki_reply *rep, char *err,
                            size_t errlen)
{
    struct rd r = {body, body + len, body, err, errlen, 0};
    bool have_status = false;
    loki_reply_init(rep);
    if (err && errlen)
        err[0] = 0;
    long n = top_map(&r);
    for (long i = 0; i < n; i++) {
        struct mp_val k, v;
        if (!map_key(&r, &k))
            return r.rc;
        /* arrays and maps are read entry by entry below; everything else whole */
        if (key_is(&k, "outputs")) {
            if (!str_array(&r, "outputs", rep->outputs, &rep->n_outputs, LOKI_PROTO_MAX_OUTPUTS,
                           MP_BIN))
                return r.rc;
            continue;
        }
        if (key_is(&k, "path")) {
            if (!str_array(&r, "path", rep->paths, &rep->n_paths, LOKI_PROTO_MAX_PATHS, MP_STR))
                return r.rc;
            continue;
        }
        if (key_is(&k, "pipelines")) {
            if (!str_array(&r, "pipelines", rep->pipelines, &rep->n_pipelines,
                           LOKI_PROTO_MAX_PIPELINES, MP_STR))
                return r.rc;
            continue;
        }
        if (key_is(&k, "metrics")) {
            struct mp_val m;
            if (mp_head(&r, &m))
                return r.rc;
            if (m.kind != MP_MAP || m.len > LOKI_PROTO_MAX_METRICS) {
                if (mp_skip_contents(&r, &m, 1))
                    return r.rc;
                if (m.kind != MP_MAP)
                    fail(&r, LOKI_EPROTO, "field 'metrics': expected map, got %s", kind_name(&m));
                else
                    fail(&r, LOKI_EPROTO, "field 'metrics': %u entries exceeds the limit of %d",
                         m.len, LOKI_PROTO_MAX_METRICS);
                continue;
            }
            rep->n_metrics = m.len;
            for (uint32_t j = 0; j < m.len; j++) {
                struct mp_val mk, mv;
                if (!map_key(&r, &mk) || mp_value(&r, &mv, 2))
                    return r.rc;
                rep->metrics[j].name = slice(&mk);
                want_number(&r, "metrics", &mv, &rep->metrics[j].value);
            }
            continue;
        }
        if (mp_value(&r, &v, 1))
            return r.rc;
        if (key_is(&k, "type")) {
            if (!want(&r, "type", &v, MP_STR))
                continue;
            int t = parse_type(&v, true);
            if (t < 0)
                fail(&r, LOKI_EPROTO, "field 'type': unknown message type");
            else
                rep->type = (enum loki_msg_type)t;
        } else if (key_is(&k, "id")) {
            if (want(&r, "id", &v, MP_UINT)) {
                rep->has_id = true;
                rep->id = v.u;
            }
        } else if (key_is(&k, "status")) {
            if (!want(&r, "status", &v, MP_STR))
                continue;
            int s;
            for (s = 0; s < LOKI_STATUS_COUNT_; s++)
                if (key_is(&v, status_names[s]))
                    break;
            if (s == LOKI_STATUS_COUNT_) {
                fail(&r, LOKI_EPROTO, "field 'status': unknown status");
                continue;
            }
            rep->status = (enum loki_status)s;
            have_status = true;
        } else if (key_is(&k, "error")) {
            if (want(&r, "error", &v, MP_STR))
                rep->error = slice(&v);
        } else if (key_is(&k, "server")) {
            if (want(&r, "server", &v, MP_STR))
                rep->server = slice(&v);
        } else if (key_is(&k, "report")) {
            if (want(&r, "report", &v, MP_STR))
                rep->report = slice(&v);
        } else if (key_is(&k, "retry_after_ms")) {
            if (v.kind != MP_NIL && want_number(&r, "retry_after_ms", &v, &rep->retry_after_ms))
                rep->has_retry_after = true;
        } else if (key_is(&k, "accuracy")) {
            want_number(&r, "accuracy", &v, &rep->accuracy);
        } else if (key_is(&k, "latency_ms")) {
            want_number(&r, "latency_ms", &v, &rep->latency_ms);
        } else if (key_is(&k, "version")) {
            want_u32(&r, "version", &v, &rep->version);
        } else if (key_is(&k, "max_payload")) {
            want_u32(&r, "max_payload", &v, &rep->max_payload);
        } else if (key_is(&k, "max_outstanding")) {
            want_u32(&r, "max_outstanding", &v, &rep->max_outstanding);
        } else if (key_is(&k, "ready")) {
            if (want(&r, "ready", &v, MP_BOOL))
                rep->ready = v.b;
        } else if (key_is(&k, "draining")) {
            if (want(&r, "draining", &v, MP_BOOL))
                rep->draining = v.b;
        } else if (key_is(&k, "connections")) {
            if (want(&r, "connections", &v, MP_UINT))
                rep->connections = v.u;
        } else if (key_is(&k, "inflight")) {
            if (want(&r, "inflight", &v, MP_UINT))
                rep->inflight = v.u;
        }
    }
    if (finish(&r))
        return r.rc;
    if (!have_status)
        fail(&r, LOKI_EPROTO, "missing field 'status'");
    return r.rc;
}

/* ---- writer ----------------------------------------------------------- */

struct wr {
    uint8_t *p;
    size_t cap, len;
};

static void put(struct wr *w, const void *src, size_t n)
{
    if (w->len + n <= w->cap && n)
        memcpy(w->p + w->len, src, n);
    w->len += n;
}

static void put_be(struct wr *w, uint8_t tag, uint64_t v, int n)
{
    uint8_t b[9];
    b[0] = tag;
    for (int k = 0; k < n; k++)
        b[1 + k] = (uint8_t)(v >> (8 * (n - 1 - k)));
    put(w, b, (size_t)n + 1);
}

static void w_uint(struct wr *w, uint64_t v)
{
    if (v <= 0x7f) {
        uint8_t b = (uint8_t)v;
        put(w, &b, 1);
    } else if (v <= UINT8_MAX)
        put_be(w, 0xcc, v, 1);
    else if (v <= UINT16_MAX)
        put_be(w, 0xcd, v, 2);
    else if (v <= UINT32_MAX)
        put_be(w, 0xce, v, 4);
    else
        put_be(w, 0xcf, v, 8);
}

static void w_int(struct wr *w, int64_t v)
{
    if (v >= 0)
        w_uint(w, (uint64_t)v);
    else if (v >= -32) {
        uint8_t b = (uint8_t)(int8_t)v;
        put(w, &b, 1);
    } else if (v >= INT8_MIN)
        put_be(w, 0xd0, (uint64_t)v, 1);
    else if (v >= INT16_MIN)
        put_be(w, 0xd1, (uint64_t)v, 2);
    else if (v >= INT32_MIN)
        put_be(w, 0xd2, (uint64_t)v, 4);
    else
        put_be(w, 0xd3, (uint64_t)v, 8);
}

static void w_double(struct wr *w, double d)
{
    uint64_t bits;
    memcpy(&bits, &d, 8);
    put_be(w, 0xcb, bits, 8);
}

static void w_bool(struct wr *w, bool b)
{
    uint8_t c = b ? 0xc3 : 0xc2;
    put(w, &c, 1);
}

static void w_container(struct wr *w, bool map, uint32_t n)
{
    if (n <= 15) {
        uint8_t b = (uint8_t)((map ? 0x80 : 0x90) | n);
        put(w, &b, 1);
    } else if (n <= UINT16_MAX)
        put_be(w, map ? 0xde : 0xdc, n, 2);
    else
        put_be(w, map ? 0xdf : 0xdd, n, 4);
}

static void w_str_head(struct wr *w, uint32_t n)
{
    if (n <= 31) {
        uint8_t b = (uint8_t)(0xa0 | n);
        put(w, &b, 1);
    } else if (n <= UINT8_MAX)
        put_be(w, 0xd9, n, 1);
    else if (n <= UINT16_MAX)
        put_be(w, 0xda, n, 2);
    else
        put_be(w, 0xdb, n, 4);
}

static void w_str(struct wr *w, const void *s, uint32_t n)
{
    w_str_head(w, n);
    put(w, s, n);
}

static void w_key(struct wr *w, const char *k)
{
    w_str(w, k, (uint32_t)strlen(k));
}

static void w_bytes(struct wr *w, struct loki_bytes b)
{
    w_str(w, b.ptr, b.len);
}

static void w_bin_head(struct wr *w, uint32_t n)
{
    if (n <= UINT8_MAX)
        put_be(w, 0xc4, n, 1);
    else if (n <= UINT16_MAX)
        put_be(w, 0xc5, n, 2);
    else
        put_be(w, 0xc6, n, 4);
}

/* Patch the length prefix; @extra counts bytes that follow outside @w (a payload). */
static ssize_t w_finish(struct wr *w, size_t extra)
{
    if (w->len > w->cap)
        return -ENOBUFS;
    uint64_t body = w->len - LOKI_PROTO_HDR + extra;
    if (body > UINT32_MAX)
        return -EINVAL;
    w->p[0] = (uint8_t)(body >> 24);
    w->p[1] = (uint8_t)(body >> 16);
    w->p[2] = (uint8_t)(body >> 8);
    w->p[3] = (uint8_t)body;
    return (ssize_t)w->len;
}

size_t loki_proto_request_size(const struct loki_request *req)
{
    return 160 + (size_t)req->pipeline.len + req->payload.len + req->name.len + req->format.len;
}

static ssize_t encode_request(uint8_t *buf, size_t cap, const struct loki_request *req,
                              bool with_payload)
{
    struct wr w = {buf, cap, LOKI_PROTO_HDR};
    if (req->type < LOKI_MSG_INFER || req->type > LOKI_MSG_PING)
        return -EINVAL;
    if (cap < LOKI_PROTO_HDR)
        return -ENOBUFS;
    bool infer = req->type == LOKI_MSG_INFER;
    uint32_t n = 1 + (req->has_id || infer);
    if (infer)
        n += 2 + req->has_deadline + req->has_priority;
    else if (req->type == LOKI_MSG_HELLO)
        n += 1 + (req->name.len > 0);
    bool fmt = (req->type == LOKI_MSG_STATUS || req->type == LOKI_MSG_METRICS) && req->format.len;
    n += fmt;
    w_container(&w, true, n);
    w_key(&w, "type");
    w_key(&w, loki_msg_type_name(req->type));
    if (req->has_id || infer) {
        w_key(&w, "id");
        w_uint(&w, req->id);
    }
    if (infer) {
        w_key(&w, "pipeline");
        w_bytes(&w, req->pipeline);
        if (req->has_deadline) {
            w_key(&w, "deadline_ms");
            w_double(&w, req->deadline_ms);
        }
        if (req->has_priority) {
            w_key(&w, "priority");
            w_int(&w, req->priority);
        }
        w_key(&w, "payload"); /* last: the head-only encoder relies on it */
        w_bin_head(&w, req->payload.len);
        if (with_payload)
            put(&w, req->payload.ptr, req->payload.len);
    } else if (req->type == LOKI_MSG_HELLO) {
        w_key(&w, "version");
        w_uint(&w, req->version);
        if (req->name.len) {
            w_key(&w, "name");
            w_bytes(&w, req->name);
        }
    }
    if (fmt) {
        w_key(&w, "format");
        w_bytes(&w, req->format);
    }
    return w_finish(&w, infer && !with_payload ? req->payload.len : 0);
}

ssize_t loki_proto_encode_request(uint8_t *buf, size_t cap, const struct loki_request *req)
{
    return encode_request(buf, cap, req, true);
}

ssize_t loki_proto_encode_request_head(uint8_t *buf, size_t cap, const struct loki_request *req)
{
    return encode_request(buf, cap, req, false);
}

size_t loki_proto_reply_size(const struct loki_reply *r)
{
    size_t n = 512 + (size_t)r->error.len + r->server.len + r->report.len;
    for (uint32_t j = 0; j < r->n_outputs && j < LOKI_PROTO_MAX_OUTPUTS; j++)
        n += 5 + (size_t)r->outputs[j].len;
    for (uint32_t j = 0; j < r->n_paths && j < LOKI_PROTO_MAX_PATHS; j++)
        n += 5 + (size_t)r->paths[j].len;
    for (uint32_t j = 0; j < r->n_pipelines && j < LOKI_PROTO_MAX_PIPELINES; j++)
        n += 5 + (size_t)r->pipelines[j].len;
    for (uint32_t j = 0; j < r->n_metrics && j < LOKI_PROTO_MAX_METRICS; j++)
        n += 14 + (size_t)r->metrics[j].name.len;
    return n;
}

static ssize_t encode_reply(uint8_t *buf, size_t cap, const struct loki_reply *r,
                            enum loki_msg_type type, bool has_id, uint64_t id)
{
    struct wr w = {buf, cap, LOKI_PROTO_HDR};
    if ((unsigned)type > LOKI_MSG_PING || (unsigned)r->status >= LOKI_STATUS_COUNT_ ||
        r->n_outputs > LOKI_PROTO_MAX_OUTPUTS || r->n_paths > LOKI_PROTO_MAX_PATHS ||
        r->n_pipelines > LOKI_PROTO_MAX_PIPELINES || r->n_metrics > LOKI_PROTO_MAX_METRICS)
        return -EINVAL;
    if (cap < LOKI_PROTO_HDR)
        return -ENOBUFS;
    bool infer = type == LOKI_MSG_INFER;
    bool hello = type == LOKI_MSG_HELLO, status = type == LOKI_MSG_STATUS;
    uint32_t n = 2 + has_id + (r->error.len > 0) + r->has_retry_after;
    if (infer)
        n += 4;
    if (hello)
        n += 5;
    if (status)
        n += 6;
    if (type == LOKI_MSG_METRICS)
        n += 1;
    bool report = (status || type == LOKI_MSG_METRICS) && r->report.len;
    n += report;
    w_container(&w, true, n);
    w_key(&w, "type");
    w_key(&w, loki_msg_type_name(type));
    if (has_id) {
        w_key(&w, "id");
        w_uint(&w, id);
    }
    w_key(&w, "status");
    w_key(&w, loki_status_name(r->status));
    if (r->error.len) {
        w_key(&w, "error");
        w_bytes(&w, r->error);
    }
    if (r->has_retry_after) {
        w_key(&w, "retry_after_ms");
        w_double(&w, r->retry_after_ms);
    }
    if (infer) {
        w_key(&w, "outputs");
        w_container(&w, false, r->n_outputs);
        for (uint32_t j = 0; j < r->n_outputs; j++) {
            w_bin_head(&w, r->outputs[j].len);
            put(&w, r->outputs[j].ptr, r->outputs[j].len);
        }
        w_key(&w, "path");
        w_container(&w, false, r->n_paths);
        for (uint32_t j = 0; j < r->n_paths; j++)
            w_bytes(&w, r->paths[j]);
        w_key(&w, "accuracy");
        w_double(&w, r->accuracy);
        w_key(&w, "latency_ms");
        w_double(&w, r->latency_ms);
    }
    if (hello || status) {
        w_key(&w, "version");
        w_uint(&w, r->version);
        w_key(&w, "pipelines");
        w_container(&w, false, r->n_pipelines);
        for (uint32_t j = 0; j < r->n_pipelines; j++)
            w_bytes(&w, r->pipelines[j]);
    }
    if (hello) {
        w_key(&w, "server");
        w_bytes(&w, r->server);
        w_key(&w, "max_payload");
        w_uint(&w, r->max_payload);
        w_key(&w, "max_outstanding");
        w_uint(&w, r->max_outstanding);
    }
    if (status) {
        w_key(&w, "ready");
        w_bool(&w, r->ready);
        w_key(&w, "draining");
        w_bool(&w, r->draining);
        w_key(&w, "connections");
        w_uint(&w, r->connections);
        w_key(&w, "inflight");
        w_uint(&w, r->inflight);
    }
    if (type == LOKI_MSG_METRICS) {
        w_key(&w, "metrics");
        w_container(&w, true, r->n_metrics);
        for (uint32_t j = 0; j < r->n_metrics; j++) {
            w_bytes(&w, r->metrics[j].name);
            w_double(&w, r->metrics[j].value);
        }
    }
    if (report) {
        w_key(&w, "report");
        w_bytes(&w, r->report);
    }
    return w_finish(&w, 0);
}

ssize_t loki_proto_encode_reply(uint8_t *buf, size_t cap, const struct loki_reply *r)
{
    return encode_reply(buf, cap, r, r->type, r->has_id, r->id);
}

ssize_t loki_proto_encode_reply_as(uint8_t *buf, size_t cap, const struct loki_reply *r,
                                   enum loki_msg_type type, uint64_t id)
{
    return encode_reply(buf, cap, r, type, true, id);
}
