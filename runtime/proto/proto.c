/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The client protocol's messages (docs/protocol.md) on top of the project's
 * msgpack codec (loki/wire.h): which keys a request and a reply carry, their
 * types and limits, and the error text a client sees. The codec bounds every
 * read; this file adds the protocol's rules. Decoding keeps going after a field
 * of the wrong type so that the request id is recovered whenever it is
 * readable; the first error found is reported. The tests check both directions
 * against msgpack-c.
 */
#include "loki/proto.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include "loki/error.h"
#include "loki/wire.h"

_Static_assert(LOKI_PROTO_MAX_DEPTH == LOKI_WIRE_MAX_DEPTH, "docs/protocol.md promises 16 levels");

/* ---- names ------------------------------------------------------------ */

static const char *const status_names[] = {
#define LOKI_STATUS_NAME_(n, s) s,
    LOKI_STATUSES(LOKI_STATUS_NAME_)
#undef LOKI_STATUS_NAME_
};

static const char *const type_names[] = {"error",   "infer", "hello", "status",
                                         "metrics", "ping",  "cancel"};

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

int loki_reply_next_child(const struct loki_reply_node *nodes, uint32_t n, int parent, int after)
{
    for (uint32_t k = after < 0 ? 0 : (uint32_t)after + 1; k < n; k++)
        if (nodes[k].parent == parent)
            return (int)k;
    return -1;
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

static bool want(struct loki_wire_reader *r, const char *field, const struct loki_wire_val *v,
                 enum loki_wire_kind k)
{
    if (v->kind == k)
        return true;
    loki_wire_fail(r, LOKI_EPROTO, "field '%s': expected %s, got %s", field, loki_wire_kind_name(k),
                   loki_wire_val_name(v));
    return false;
}

static bool want_number(struct loki_wire_reader *r, const char *field,
                        const struct loki_wire_val *v, double *out)
{
    if (v->kind == LOKI_WIRE_FLOAT)
        *out = v->f;
    else if (v->kind == LOKI_WIRE_UINT)
        *out = (double)v->u;
    else if (v->kind == LOKI_WIRE_INT)
        *out = (double)v->i;
    else {
        loki_wire_fail(r, LOKI_EPROTO, "field '%s': expected float, got %s", field,
                       loki_wire_val_name(v));
        return false;
    }
    if (!isfinite(*out)) {
        loki_wire_fail(r, LOKI_EPROTO, "field '%s': not a finite number", field);
        return false;
    }
    return true;
}

static bool want_u32(struct loki_wire_reader *r, const char *field, const struct loki_wire_val *v,
                     uint32_t *out)
{
    if (!want(r, field, v, LOKI_WIRE_UINT))
        return false;
    if (v->u > UINT32_MAX) {
        loki_wire_fail(r, LOKI_EPROTO, "field '%s': %llu out of range", field,
                       (unsigned long long)v->u);
        return false;
    }
    *out = (uint32_t)v->u;
    return true;
}

static struct loki_bytes slice(const struct loki_wire_val *v)
{
    struct loki_bytes b = {v->ptr, v->len};
    return b;
}

static bool key_is(const struct loki_wire_val *k, const char *s)
{
    return loki_wire_val_is(k, s);
}

/* Parse a "type" value into @t; -1 when unknown. */
static int parse_type(const struct loki_wire_val *v, bool allow_error)
{
    for (int t = LOKI_MSG_INFER; t <= LOKI_MSG_CANCEL; t++)
        if (key_is(v, type_names[t]))
            return t;
    if (allow_error && key_is(v, "error"))
        return LOKI_MSG_NONE;
    return -1;
}

/* Read the top-level map header; returns its entry count or -1. */
static long top_map(struct loki_wire_reader *r)
{
    struct loki_wire_val v;
    if (loki_wire_left(r) == 0) {
        loki_wire_fail(r, LOKI_EPROTO, "empty frame");
        return -1;
    }
    if (loki_wire_read(r, &v))
        return -1;
    if (v.kind != LOKI_WIRE_MAP) {
        loki_wire_fail(r, LOKI_EPROTO, "frame body: expected map, got %s", loki_wire_val_name(&v));
        return -1;
    }
    return v.len;
}

static bool map_key(struct loki_wire_reader *r, struct loki_wire_val *k)
{
    if (loki_wire_read_value(r, k, 1))
        return false;
    if (k->kind != LOKI_WIRE_STR) {
        loki_wire_fail(r, LOKI_EPROTO, "map key: expected str, got %s", loki_wire_val_name(k));
        return false;
    }
    return true;
}

/* A field name for error messages: bounded and printable. */
static void field_name(const struct loki_wire_val *k, char *out, size_t n)
{
    size_t m = k->len < n - 1 ? k->len : n - 1;
    for (size_t j = 0; j < m; j++)
        out[j] = k->ptr[j] >= 0x20 && k->ptr[j] < 0x7f ? (char)k->ptr[j] : '?';
    out[m] = 0;
}

static bool dup(struct loki_wire_reader *r, unsigned *seen, unsigned bit, const char *field)
{
    if (*seen & bit) {
        loki_wire_fail(r, LOKI_EPROTO, "field '%s' appears twice", field);
        return true;
    }
    *seen |= bit;
    return false;
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
    struct loki_wire_reader r;
    unsigned seen = 0;
    int type = LOKI_MSG_INFER;
    loki_request_init(req);
    loki_wire_reader_init(&r, body, len, LOKI_EPROTO, err, errlen);
    long n = top_map(&r);
    for (long i = 0; i < n; i++) {
        struct loki_wire_val k, v;
        if (!map_key(&r, &k) || loki_wire_read_value(&r, &v, 1))
            return r.err;
        if (key_is(&k, "type")) {
            if (dup(&r, &seen, F_TYPE, "type") || !want(&r, "type", &v, LOKI_WIRE_STR))
                continue;
            type = parse_type(&v, false);
            if (type >= 0)
                req->type = (enum loki_msg_type)type; /* known even if decoding fails later */
            if (type < 0) {
                char t[32];
                field_name(&v, t, sizeof(t));
                loki_wire_fail(&r, LOKI_EPROTO, "field 'type': unknown message type '%s'", t);
            }
        } else if (key_is(&k, "id")) {
            if (dup(&r, &seen, F_ID, "id"))
                continue;
            if (v.kind == LOKI_WIRE_INT) {
                loki_wire_fail(&r, LOKI_EPROTO, "field 'id': expected uint, got negative int");
                continue;
            }
            if (!want(&r, "id", &v, LOKI_WIRE_UINT))
                continue;
            req->has_id = true;
            req->id = v.u;
        } else if (key_is(&k, "pipeline")) {
            if (dup(&r, &seen, F_PIPELINE, "pipeline") || !want(&r, "pipeline", &v, LOKI_WIRE_STR))
                continue;
            if (v.len == 0)
                loki_wire_fail(&r, LOKI_EPROTO, "field 'pipeline': empty");
            else if (v.len > LOKI_PROTO_NAME_MAX)
                loki_wire_fail(&r, LOKI_ETOOBIG,
                               "field 'pipeline': %u bytes exceeds the limit of %d", v.len,
                               LOKI_PROTO_NAME_MAX);
            req->pipeline = slice(&v);
        } else if (key_is(&k, "payload")) {
            if (dup(&r, &seen, F_PAYLOAD, "payload") || !want(&r, "payload", &v, LOKI_WIRE_BIN))
                continue;
            if (lim && v.len > lim->max_payload)
                loki_wire_fail(&r, LOKI_ETOOBIG,
                               "field 'payload': %u bytes exceeds the limit of %u", v.len,
                               lim->max_payload);
            req->payload = slice(&v);
        } else if (key_is(&k, "deadline_ms")) {
            if (dup(&r, &seen, F_DEADLINE, "deadline_ms") || v.kind == LOKI_WIRE_NIL)
                continue;
            double d;
            if (!want_number(&r, "deadline_ms", &v, &d))
                continue;
            if (!(d > 0)) {
                loki_wire_fail(&r, LOKI_EPROTO, "field 'deadline_ms': must be > 0, got %g", d);
                continue;
            }
            req->has_deadline = true;
            req->deadline_ms = d;
        } else if (key_is(&k, "priority")) {
            if (dup(&r, &seen, F_PRIORITY, "priority") || v.kind == LOKI_WIRE_NIL)
                continue;
            if (v.kind != LOKI_WIRE_UINT && v.kind != LOKI_WIRE_INT) {
                loki_wire_fail(&r, LOKI_EPROTO, "field 'priority': expected int, got %s",
                               loki_wire_val_name(&v));
                continue;
            }
            if (v.kind == LOKI_WIRE_UINT ? v.u > INT32_MAX : v.i < INT32_MIN) {
                loki_wire_fail(&r, LOKI_EPROTO, "field 'priority': out of the int32 range");
                continue;
            }
            req->has_priority = true;
            req->priority = v.kind == LOKI_WIRE_UINT ? (int32_t)v.u : (int32_t)v.i;
        } else if (key_is(&k, "version")) {
            if (dup(&r, &seen, F_VERSION, "version"))
                continue;
            want_u32(&r, "version", &v, &req->version);
        } else if (key_is(&k, "name")) {
            if (dup(&r, &seen, F_NAME, "name") || !want(&r, "name", &v, LOKI_WIRE_STR))
                continue;
            if (v.len > LOKI_PROTO_NAME_MAX)
                loki_wire_fail(&r, LOKI_ETOOBIG, "field 'name': %u bytes exceeds the limit of %d",
                               v.len, LOKI_PROTO_NAME_MAX);
            req->name = slice(&v);
        } else if (key_is(&k, "format")) {
            if (dup(&r, &seen, F_FORMAT, "format") || !want(&r, "format", &v, LOKI_WIRE_STR))
                continue;
            if (v.len > LOKI_PROTO_FORMAT_MAX)
                loki_wire_fail(&r, LOKI_ETOOBIG, "field 'format': %u bytes exceeds the limit of %d",
                               v.len, LOKI_PROTO_FORMAT_MAX);
            req->format = slice(&v);
        }
        /* unknown keys are ignored: newer clients may send more */
    }
    if (loki_wire_finish(&r, "map"))
        return r.err;
    req->type = (enum loki_msg_type)type;
    if (type == LOKI_MSG_INFER) {
        if (!(seen & F_ID))
            loki_wire_fail(&r, LOKI_EPROTO, "missing field 'id'");
        else if (!(seen & F_PIPELINE))
            loki_wire_fail(&r, LOKI_EPROTO, "missing field 'pipeline'");
        else if (!(seen & F_PAYLOAD))
            loki_wire_fail(&r, LOKI_EPROTO, "missing field 'payload'");
    } else if (type == LOKI_MSG_CANCEL) {
        if (!(seen & F_ID))
            loki_wire_fail(&r, LOKI_EPROTO, "missing field 'id' (the infer request to cancel)");
    } else if (type == LOKI_MSG_HELLO) {
        if (!(seen & F_VERSION))
            loki_wire_fail(&r, LOKI_EPROTO, "missing field 'version'");
        else if (req->version < 1)
            loki_wire_fail(&r, LOKI_EPROTO, "field 'version': must be >= 1");
    }
    return r.err;
}

static bool str_array(struct loki_wire_reader *r, const char *field, struct loki_bytes *out,
                      uint32_t *n, uint32_t max, enum loki_wire_kind k)
{
    struct loki_wire_val a;
    if (loki_wire_read(r, &a))
        return false;
    if (a.kind != LOKI_WIRE_ARRAY) {
        if (loki_wire_skip(r, &a, 1))
            return false;
        loki_wire_fail(r, LOKI_EPROTO, "field '%s': expected array, got %s", field,
                       loki_wire_val_name(&a));
        return true;
    }
    if (a.len > max) {
        loki_wire_fail(r, LOKI_EPROTO, "field '%s': %u entries exceeds the limit of %u", field,
                       a.len, max);
        return loki_wire_skip(r, &a, 1) == 0;
    }
    *n = a.len;
    for (uint32_t j = 0; j < a.len; j++) {
        struct loki_wire_val v;
        if (loki_wire_read_value(r, &v, 2))
            return false;
        if (v.kind != k) {
            loki_wire_fail(r, LOKI_EPROTO, "field '%s[%u]': expected %s, got %s", field, j,
                           loki_wire_kind_name(k), loki_wire_val_name(&v));
            continue;
        }
        out[j] = slice(&v);
    }
    return true;
}

/* "result": an array of {task, variant, parent, status, output} maps, parents first. */
static bool result_tree(struct loki_wire_reader *r, struct loki_reply *rep)
{
    struct loki_wire_val a;
    if (loki_wire_read(r, &a))
        return false;
    if (a.kind != LOKI_WIRE_ARRAY) {
        loki_wire_fail(r, LOKI_EPROTO, "field 'result': expected array, got %s",
                       loki_wire_val_name(&a));
        return false;
    }
    rep->n_nodes = a.len;
    for (uint32_t j = 0; j < a.len; j++) {
        struct loki_reply_node nd = {.parent = -1, .status = LOKI_STATUS_OK};
        struct loki_wire_val m;
        if (loki_wire_read(r, &m))
            return false;
        if (m.kind != LOKI_WIRE_MAP) {
            loki_wire_fail(r, LOKI_EPROTO, "field 'result[%u]': expected map, got %s", j,
                           loki_wire_val_name(&m));
            return false;
        }
        unsigned seen = 0;
        for (uint32_t f = 0; f < m.len; f++) {
            struct loki_wire_val k, v;
            if (!map_key(r, &k) || loki_wire_read_value(r, &v, 1))
                return false;
            if (key_is(&k, "task") && v.kind == LOKI_WIRE_STR) {
                nd.task = slice(&v);
                seen |= 1;
            } else if (key_is(&k, "variant") && v.kind == LOKI_WIRE_STR) {
                nd.variant = slice(&v);
                seen |= 2;
            } else if (key_is(&k, "parent") &&
                       (v.kind == LOKI_WIRE_INT || v.kind == LOKI_WIRE_UINT)) {
                int64_t p =
                    v.kind == LOKI_WIRE_INT ? v.i : (int64_t)(v.u > INT32_MAX ? INT32_MAX : v.u);
                if (p < -1 || p >= (int64_t)j) {
                    loki_wire_fail(r, LOKI_EPROTO,
                                   "field 'result[%u].parent': %lld is not -1 or an earlier node",
                                   j, (long long)p);
                    return false;
                }
                nd.parent = (int32_t)p;
                seen |= 4;
            } else if (key_is(&k, "status") && v.kind == LOKI_WIRE_STR) {
                int s;
                for (s = 0; s < LOKI_STATUS_COUNT_; s++)
                    if (key_is(&v, status_names[s]))
                        break;
                if (s == LOKI_STATUS_COUNT_) {
                    loki_wire_fail(r, LOKI_EPROTO, "field 'result[%u].status': unknown status", j);
                    return false;
                }
                nd.status = (enum loki_status)s;
            } else if (key_is(&k, "output") && v.kind == LOKI_WIRE_BIN) {
                nd.output = slice(&v);
            } else if (key_is(&k, "task") || key_is(&k, "variant") || key_is(&k, "parent") ||
                       key_is(&k, "status") || key_is(&k, "output")) {
                char f_name[32];
                field_name(&k, f_name, sizeof(f_name));
                loki_wire_fail(r, LOKI_EPROTO, "field 'result[%u].%s': wrong type %s", j, f_name,
                               loki_wire_val_name(&v));
                return false;
            } /* unknown keys are ignored, as at the top level */
        }
        if ((seen & 7) != 7) {
            loki_wire_fail(r, LOKI_EPROTO, "field 'result[%u]': needs task, variant and parent", j);
            return false;
        }
        if (j < rep->node_cap)
            rep->node_buf[j] = nd;
    }
    return true;
}

int loki_proto_decode_reply(const uint8_t *body, size_t len, struct loki_reply *rep, char *err,
                            size_t errlen)
{
    struct loki_wire_reader r;
    bool have_status = false;
    struct loki_reply_node *node_buf = rep->node_buf;
    uint32_t node_cap = node_buf ? rep->node_cap : 0;
    loki_reply_init(rep);
    rep->node_buf = node_buf;
    rep->node_cap = node_cap;
    rep->nodes = node_buf;
    loki_wire_reader_init(&r, body, len, LOKI_EPROTO, err, errlen);
    long n = top_map(&r);
    for (long i = 0; i < n; i++) {
        struct loki_wire_val k, v;
        if (!map_key(&r, &k))
            return r.err;
        /* arrays and maps are read entry by entry below; everything else whole */
        if (key_is(&k, "outputs")) {
            if (!str_array(&r, "outputs", rep->outputs, &rep->n_outputs, LOKI_PROTO_MAX_OUTPUTS,
                           LOKI_WIRE_BIN))
                return r.err;
            continue;
        }
        if (key_is(&k, "result")) {
            if (!result_tree(&r, rep))
                return r.err;
            continue;
        }
        if (key_is(&k, "path")) {
            if (!str_array(&r, "path", rep->paths, &rep->n_paths, LOKI_PROTO_MAX_PATHS,
                           LOKI_WIRE_STR))
                return r.err;
            continue;
        }
        if (key_is(&k, "pipelines")) {
            if (!str_array(&r, "pipelines", rep->pipelines, &rep->n_pipelines,
                           LOKI_PROTO_MAX_PIPELINES, LOKI_WIRE_STR))
                return r.err;
            continue;
        }
        if (key_is(&k, "metrics")) {
            struct loki_wire_val m;
            if (loki_wire_read(&r, &m))
                return r.err;
            if (m.kind != LOKI_WIRE_MAP || m.len > LOKI_PROTO_MAX_METRICS) {
                if (loki_wire_skip(&r, &m, 1))
                    return r.err;
                if (m.kind != LOKI_WIRE_MAP)
                    loki_wire_fail(&r, LOKI_EPROTO, "field 'metrics': expected map, got %s",
                                   loki_wire_val_name(&m));
                else
                    loki_wire_fail(&r, LOKI_EPROTO,
                                   "field 'metrics': %u entries exceeds the limit of %d", m.len,
                                   LOKI_PROTO_MAX_METRICS);
                continue;
            }
            rep->n_metrics = m.len;
            for (uint32_t j = 0; j < m.len; j++) {
                struct loki_wire_val mk, mv;
                if (!map_key(&r, &mk) || loki_wire_read_value(&r, &mv, 2))
                    return r.err;
                rep->metrics[j].name = slice(&mk);
                want_number(&r, "metrics", &mv, &rep->metrics[j].value);
            }
            continue;
        }
        if (loki_wire_read_value(&r, &v, 1))
            return r.err;
        if (key_is(&k, "type")) {
            if (!want(&r, "type", &v, LOKI_WIRE_STR))
                continue;
            int t = parse_type(&v, true);
            if (t < 0)
                loki_wire_fail(&r, LOKI_EPROTO, "field 'type': unknown message type");
            else
                rep->type = (enum loki_msg_type)t;
        } else if (key_is(&k, "id")) {
            if (want(&r, "id", &v, LOKI_WIRE_UINT)) {
                rep->has_id = true;
                rep->id = v.u;
            }
        } else if (key_is(&k, "status")) {
            if (!want(&r, "status", &v, LOKI_WIRE_STR))
                continue;
            int s;
            for (s = 0; s < LOKI_STATUS_COUNT_; s++)
                if (key_is(&v, status_names[s]))
                    break;
            if (s == LOKI_STATUS_COUNT_) {
                loki_wire_fail(&r, LOKI_EPROTO, "field 'status': unknown status");
                continue;
            }
            rep->status = (enum loki_status)s;
            have_status = true;
        } else if (key_is(&k, "error")) {
            if (want(&r, "error", &v, LOKI_WIRE_STR))
                rep->error = slice(&v);
        } else if (key_is(&k, "server")) {
            if (want(&r, "server", &v, LOKI_WIRE_STR))
                rep->server = slice(&v);
        } else if (key_is(&k, "report")) {
            if (want(&r, "report", &v, LOKI_WIRE_STR))
                rep->report = slice(&v);
        } else if (key_is(&k, "retry_after_ms")) {
            if (v.kind != LOKI_WIRE_NIL &&
                want_number(&r, "retry_after_ms", &v, &rep->retry_after_ms))
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
            if (want(&r, "ready", &v, LOKI_WIRE_BOOL))
                rep->ready = v.b;
        } else if (key_is(&k, "draining")) {
            if (want(&r, "draining", &v, LOKI_WIRE_BOOL))
                rep->draining = v.b;
        } else if (key_is(&k, "connections")) {
            if (want(&r, "connections", &v, LOKI_WIRE_UINT))
                rep->connections = v.u;
        } else if (key_is(&k, "inflight")) {
            if (want(&r, "inflight", &v, LOKI_WIRE_UINT))
                rep->inflight = v.u;
        }
    }
    if (loki_wire_finish(&r, "map"))
        return r.err;
    if (!have_status)
        loki_wire_fail(&r, LOKI_EPROTO, "missing field 'status'");
    return r.err;
}

/* ---- writer ----------------------------------------------------------- */

static void put_bytes(struct loki_wire_writer *w, struct loki_bytes b)
{
    loki_wire_put_str(w, b.ptr, b.len);
}

/*
 * The frame of the body in @w, which was started at @buf + LOKI_PROTO_HDR: patch the length
 * prefix; @extra counts bytes that follow outside @w (a payload sent separately).
 */
static ssize_t frame_finish(uint8_t *buf, const struct loki_wire_writer *w, size_t extra)
{
    size_t len;
    if (loki_wire_writer_finish(w, &len))
        return -ENOBUFS;
    uint64_t body = (uint64_t)len + extra;
    if (body > UINT32_MAX)
        return -EINVAL;
    buf[0] = (uint8_t)(body >> 24);
    buf[1] = (uint8_t)(body >> 16);
    buf[2] = (uint8_t)(body >> 8);
    buf[3] = (uint8_t)body;
    return (ssize_t)len + LOKI_PROTO_HDR;
}

size_t loki_proto_request_size(const struct loki_request *req)
{
    return 160 + (size_t)req->pipeline.len + req->payload.len + req->name.len + req->format.len;
}

static ssize_t encode_request(uint8_t *buf, size_t cap, const struct loki_request *req,
                              bool with_payload)
{
    struct loki_wire_writer w;
    if (req->type < LOKI_MSG_INFER || req->type > LOKI_MSG_CANCEL)
        return -EINVAL;
    if (cap < LOKI_PROTO_HDR)
        return -ENOBUFS;
    loki_wire_writer_init(&w, buf + LOKI_PROTO_HDR, cap - LOKI_PROTO_HDR);
    bool infer = req->type == LOKI_MSG_INFER;
    uint32_t n = 1 + (req->has_id || infer);
    if (infer)
        n += 2 + req->has_deadline + req->has_priority;
    else if (req->type == LOKI_MSG_HELLO)
        n += 1 + (req->name.len > 0);
    bool fmt = (req->type == LOKI_MSG_STATUS || req->type == LOKI_MSG_METRICS) && req->format.len;
    n += fmt;
    loki_wire_put_map(&w, n);
    loki_wire_put_cstr(&w, "type");
    loki_wire_put_cstr(&w, loki_msg_type_name(req->type));
    if (req->has_id || infer) {
        loki_wire_put_cstr(&w, "id");
        loki_wire_put_uint(&w, req->id);
    }
    if (infer) {
        loki_wire_put_cstr(&w, "pipeline");
        put_bytes(&w, req->pipeline);
        if (req->has_deadline) {
            loki_wire_put_cstr(&w, "deadline_ms");
            loki_wire_put_double(&w, req->deadline_ms);
        }
        if (req->has_priority) {
            loki_wire_put_cstr(&w, "priority");
            loki_wire_put_int(&w, req->priority);
        }
        loki_wire_put_cstr(&w, "payload"); /* last: the head-only encoder relies on it */
        loki_wire_put_bin_head(&w, req->payload.len);
        if (with_payload)
            loki_wire_put_raw(&w, req->payload.ptr, req->payload.len);
    } else if (req->type == LOKI_MSG_HELLO) {
        loki_wire_put_cstr(&w, "version");
        loki_wire_put_uint(&w, req->version);
        if (req->name.len) {
            loki_wire_put_cstr(&w, "name");
            put_bytes(&w, req->name);
        }
    }
    if (fmt) {
        loki_wire_put_cstr(&w, "format");
        put_bytes(&w, req->format);
    }
    return frame_finish(buf, &w, infer && !with_payload ? req->payload.len : 0);
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
    for (uint32_t j = 0; r->nodes && j < r->n_nodes; j++)
        n += 64 + (size_t)r->nodes[j].task.len + r->nodes[j].variant.len + r->nodes[j].output.len;
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
    struct loki_wire_writer w;
    if ((unsigned)type > LOKI_MSG_CANCEL || (unsigned)r->status >= LOKI_STATUS_COUNT_ ||
        r->n_outputs > LOKI_PROTO_MAX_OUTPUTS || r->n_paths > LOKI_PROTO_MAX_PATHS ||
        r->n_pipelines > LOKI_PROTO_MAX_PIPELINES || r->n_metrics > LOKI_PROTO_MAX_METRICS ||
        (r->n_nodes && !r->nodes))
        return -EINVAL;
    for (uint32_t j = 0; j < r->n_nodes; j++)
        if ((unsigned)r->nodes[j].status >= LOKI_STATUS_COUNT_ || r->nodes[j].parent < -1 ||
            r->nodes[j].parent >= (int32_t)j)
            return -EINVAL;
    if (cap < LOKI_PROTO_HDR)
        return -ENOBUFS;
    loki_wire_writer_init(&w, buf + LOKI_PROTO_HDR, cap - LOKI_PROTO_HDR);
    bool infer = type == LOKI_MSG_INFER;
    bool hello = type == LOKI_MSG_HELLO, status = type == LOKI_MSG_STATUS;
    uint32_t n = 2 + has_id + (r->error.len > 0) + r->has_retry_after;
    if (infer)
        n += 4 + (r->n_nodes > 0);
    if (hello)
        n += 5;
    if (status)
        n += 6;
    if (type == LOKI_MSG_METRICS)
        n += 1;
    bool report = (status || type == LOKI_MSG_METRICS) && r->report.len;
    n += report;
    loki_wire_put_map(&w, n);
    loki_wire_put_cstr(&w, "type");
    loki_wire_put_cstr(&w, loki_msg_type_name(type));
    if (has_id) {
        loki_wire_put_cstr(&w, "id");
        loki_wire_put_uint(&w, id);
    }
    loki_wire_put_cstr(&w, "status");
    loki_wire_put_cstr(&w, loki_status_name(r->status));
    if (r->error.len) {
        loki_wire_put_cstr(&w, "error");
        put_bytes(&w, r->error);
    }
    if (r->has_retry_after) {
        loki_wire_put_cstr(&w, "retry_after_ms");
        loki_wire_put_double(&w, r->retry_after_ms);
    }
    if (infer) {
        loki_wire_put_cstr(&w, "outputs");
        loki_wire_put_array(&w, r->n_outputs);
        for (uint32_t j = 0; j < r->n_outputs; j++) {
            loki_wire_put_bin_head(&w, r->outputs[j].len);
            loki_wire_put_raw(&w, r->outputs[j].ptr, r->outputs[j].len);
        }
        loki_wire_put_cstr(&w, "path");
        loki_wire_put_array(&w, r->n_paths);
        for (uint32_t j = 0; j < r->n_paths; j++)
            put_bytes(&w, r->paths[j]);
        loki_wire_put_cstr(&w, "accuracy");
        loki_wire_put_double(&w, r->accuracy);
        loki_wire_put_cstr(&w, "latency_ms");
        loki_wire_put_double(&w, r->latency_ms);
        if (r->n_nodes) {
            loki_wire_put_cstr(&w, "result");
            loki_wire_put_array(&w, r->n_nodes);
            for (uint32_t j = 0; j < r->n_nodes; j++) {
                const struct loki_reply_node *nd = &r->nodes[j];
                loki_wire_put_map(&w, 5);
                loki_wire_put_cstr(&w, "task");
                put_bytes(&w, nd->task);
                loki_wire_put_cstr(&w, "variant");
                put_bytes(&w, nd->variant);
                loki_wire_put_cstr(&w, "parent");
                loki_wire_put_int(&w, nd->parent);
                loki_wire_put_cstr(&w, "status");
                loki_wire_put_cstr(&w, loki_status_name(nd->status));
                loki_wire_put_cstr(&w, "output");
                loki_wire_put_bin_head(&w, nd->output.len);
                loki_wire_put_raw(&w, nd->output.ptr, nd->output.len);
            }
        }
    }
    if (hello || status) {
        loki_wire_put_cstr(&w, "version");
        loki_wire_put_uint(&w, r->version);
        loki_wire_put_cstr(&w, "pipelines");
        loki_wire_put_array(&w, r->n_pipelines);
        for (uint32_t j = 0; j < r->n_pipelines; j++)
            put_bytes(&w, r->pipelines[j]);
    }
    if (hello) {
        loki_wire_put_cstr(&w, "server");
        put_bytes(&w, r->server);
        loki_wire_put_cstr(&w, "max_payload");
        loki_wire_put_uint(&w, r->max_payload);
        loki_wire_put_cstr(&w, "max_outstanding");
        loki_wire_put_uint(&w, r->max_outstanding);
    }
    if (status) {
        loki_wire_put_cstr(&w, "ready");
        loki_wire_put_bool(&w, r->ready);
        loki_wire_put_cstr(&w, "draining");
        loki_wire_put_bool(&w, r->draining);
        loki_wire_put_cstr(&w, "connections");
        loki_wire_put_uint(&w, r->connections);
        loki_wire_put_cstr(&w, "inflight");
        loki_wire_put_uint(&w, r->inflight);
    }
    if (type == LOKI_MSG_METRICS) {
        loki_wire_put_cstr(&w, "metrics");
        loki_wire_put_map(&w, r->n_metrics);
        for (uint32_t j = 0; j < r->n_metrics; j++) {
            put_bytes(&w, r->metrics[j].name);
            loki_wire_put_double(&w, r->metrics[j].value);
        }
    }
    if (report) {
        loki_wire_put_cstr(&w, "report");
        put_bytes(&w, r->report);
    }
    return frame_finish(buf, &w, 0);
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
