/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_codec: the project's msgpack codec (loki/wire.h, through runtime/proto and
 * shm/batch.c) against msgpack-c doing the same work in the same run, for the messages
 * that cross the hot paths: an infer request (the head the client writes before its
 * payload; the whole frame decoded), an infer reply, a batch descriptor of 8 queries and
 * its result. Encoding: into a bounded caller buffer (msgpack-c through a packer whose
 * write callback refuses to pass the end, as shm/batch.c used it). Decoding: the fields
 * extracted and type-checked into the same structs; msgpack-c both as documented
 * (msgpack_unpack_next(), a zone allocated per message) and at its best (the obsolete
 * msgpack_unpack() into one reused zone, no allocation once warm).
 *
 * Each sample times a burst of operations of both implementations back to back (order
 * alternating), so a ratio compares figures taken under the same load. Prints one line per
 * metric, `name unit median p99 n` (ns per operation; ratios are msgpack-c time over ours,
 * > 1: ours is faster), and writes DIR/codec.json.
 */
#include <errno.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>

#include "bench_stats.h"
#include "loki/batch.h"
#include "loki/clock.h"
#include "loki/error.h"
#include "loki/proto.h"

#define SAMPLES 200
#define SAMPLE_NS 100000.0 /* aim for ~0.1 ms per burst */
#define N_BATCH 8

/* ---- statistics and output ----------------------------------------------------------------- */

struct metric {
    char name[64];
    const char *unit;
    double median, p99;
    size_t n;
};

static struct metric metrics[64];
static size_t n_metrics;

static void record(const char *name, const char *unit, double *v, size_t n)
{
    struct metric *m = &metrics[n_metrics++];
    qsort(v, n, sizeof(*v), loki_bench_cmp_double);
    snprintf(m->name, sizeof(m->name), "%s", name);
    m->unit = unit;
    m->median = loki_bench_pct(v, n, 0.5);
    m->p99 = loki_bench_pct(v, n, 0.99);
    m->n = n;
    printf("%s %s %.4g %.4g %zu\n", m->name, m->unit, m->median, m->p99, m->n);
    fflush(stdout);
}

/* ---- the messages -------------------------------------------------------------------------- */

static uint8_t payload[53211]; /* docs/protocol.md's example request */
static uint8_t output[256];    /* one leaf output */
static struct loki_request req;
static struct loki_reply rep;
static struct loki_batch_query queries[N_BATCH];
static struct loki_batch_desc desc;
static struct loki_batch_result_query results[N_BATCH];
static struct loki_batch_result result;

static void make_messages(void)
{
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i * 13);
    memset(output, 0x5a, sizeof(output));
    loki_request_init(&req);
    req.type = LOKI_MSG_INFER;
    req.id = 1234567;
    req.pipeline = loki_bytes_str("traffic");
    req.payload = (struct loki_bytes){payload, sizeof(payload)};
    req.has_deadline = true;
    req.deadline_ms = 180.0;
    req.has_priority = true;
    req.priority = 2;
    loki_reply_init(&rep);
    rep.type = LOKI_MSG_INFER;
    rep.has_id = true;
    rep.id = 1234567;
    rep.status = LOKI_STATUS_OK;
    rep.n_outputs = 1;
    rep.outputs[0] = (struct loki_bytes){output, sizeof(output)};
    rep.n_paths = 1;
    rep.paths[0] = loki_bytes_str("yolov5x>efficientnet-b6");
    rep.accuracy = 87.25;
    rep.latency_ms = 41.5;
    for (uint32_t i = 0; i < N_BATCH; i++) {
        queries[i] = (struct loki_batch_query){
            .query_id = 9000000 + i,
            .sub_query_id = i % 3,
            .deadline_ns = 1700000000000000000ull + i * 1000,
            .payload = {(uint64_t)i << 20, 150528, 7 + i},
        };
        results[i] = (struct loki_batch_result_query){
            .query_id = 9000000 + i,
            .status = 0,
            .out_kind = LOKI_BATCH_OUT_REF,
            .out_ref = {((uint64_t)i << 20) + 65536, 4000, 8 + i},
            .n_fanout = 1,
            .fanout = {i % 4},
        };
        if (i % 4) /* ABI v2: a child payload table wherever there are children */
            results[i].children =
                (struct loki_arena_ref){((uint64_t)i << 20) + 131072, (i % 4) * 16, 9 + i};
        if (i % 7 == 3) { /* and a failure with its message now and then */
            results[i].status = -5;
            results[i].msg = "output too large";
            results[i].msg_len = 16;
        }
    }
    desc = (struct loki_batch_desc){0x1234567890ull, 3, 2, N_BATCH, queries};
    result = (struct loki_batch_result){0x1234567890ull, 3, N_BATCH, results};
}

/* ---- msgpack-c: encoders ------------------------------------------------------------------- */

struct wbuf {
    uint8_t *p;
    size_t len, cap;
};

static int wbuf_write(void *data, const char *buf, size_t len)
{
    struct wbuf *w = data;
    if (len > w->cap - w->len)
        return -1;
    memcpy(w->p + w->len, buf, len);
    w->len += len;
    return 0;
}

static int mpc_key(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    return msgpack_pack_str(pk, n) | msgpack_pack_str_body(pk, s, n);
}

/* The request head as loki_proto_encode_request_head() writes it. */
static ssize_t mpc_request_head(uint8_t *buf, size_t cap, const struct loki_request *q)
{
    struct wbuf w = {buf, 4, cap};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &w, wbuf_write);
    int bad = msgpack_pack_map(&pk, 6) | mpc_key(&pk, "type") | mpc_key(&pk, "infer") |
              mpc_key(&pk, "id") | msgpack_pack_uint64(&pk, q->id) | mpc_key(&pk, "pipeline") |
              msgpack_pack_str(&pk, q->pipeline.len) |
              msgpack_pack_str_body(&pk, q->pipeline.ptr, q->pipeline.len) |
              mpc_key(&pk, "deadline_ms") | msgpack_pack_double(&pk, q->deadline_ms) |
              mpc_key(&pk, "priority") | msgpack_pack_int32(&pk, q->priority) |
              mpc_key(&pk, "payload") | msgpack_pack_bin(&pk, q->payload.len);
    if (bad)
        return -ENOBUFS;
    uint32_t body = (uint32_t)(w.len - 4 + q->payload.len);
    buf[0] = (uint8_t)(body >> 24);
    buf[1] = (uint8_t)(body >> 16);
    buf[2] = (uint8_t)(body >> 8);
    buf[3] = (uint8_t)body;
    return (ssize_t)w.len;
}

static ssize_t mpc_reply(uint8_t *buf, size_t cap, const struct loki_reply *r)
{
    struct wbuf w = {buf, 4, cap};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &w, wbuf_write);
    int bad = msgpack_pack_map(&pk, 7) | mpc_key(&pk, "type") | mpc_key(&pk, "infer") |
              mpc_key(&pk, "id") | msgpack_pack_uint64(&pk, r->id) | mpc_key(&pk, "status") |
              mpc_key(&pk, "ok") | mpc_key(&pk, "outputs") | msgpack_pack_array(&pk, r->n_outputs);
    for (uint32_t i = 0; i < r->n_outputs; i++)
        bad |= msgpack_pack_bin_with_body(&pk, r->outputs[i].ptr, r->outputs[i].len);
    bad |= mpc_key(&pk, "path") | msgpack_pack_array(&pk, r->n_paths);
    for (uint32_t i = 0; i < r->n_paths; i++)
        bad |= msgpack_pack_str_with_body(&pk, r->paths[i].ptr, r->paths[i].len);
    bad |= mpc_key(&pk, "accuracy") | msgpack_pack_double(&pk, r->accuracy) |
           mpc_key(&pk, "latency_ms") | msgpack_pack_double(&pk, r->latency_ms);
    if (bad)
        return -ENOBUFS;
    uint32_t body = (uint32_t)(w.len - 4);
    buf[0] = (uint8_t)(body >> 24);
    buf[1] = (uint8_t)(body >> 16);
    buf[2] = (uint8_t)(body >> 8);
    buf[3] = (uint8_t)body;
    return (ssize_t)w.len;
}

/* shm/batch.c's encoders as they were on msgpack-c. */
static int mpc_desc(const struct loki_batch_desc *d, void *buf, size_t cap, size_t *len)
{
    struct wbuf w = {buf, 0, cap};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &w, wbuf_write);
    int bad = msgpack_pack_array(&pk, 5) | msgpack_pack_uint8(&pk, LOKI_BATCH_KIND_DESC) |
              msgpack_pack_uint64(&pk, d->batch_id) | msgpack_pack_uint32(&pk, d->instance_id) |
              msgpack_pack_uint32(&pk, d->variant) | msgpack_pack_array(&pk, d->n_queries);
    for (uint32_t i = 0; i < d->n_queries && !bad; i++) {
        const struct loki_batch_query *q = &d->queries[i];
        bad = msgpack_pack_array(&pk, 6) | msgpack_pack_uint64(&pk, q->query_id) |
              msgpack_pack_uint32(&pk, q->sub_query_id) | msgpack_pack_uint64(&pk, q->deadline_ns) |
              msgpack_pack_uint64(&pk, q->payload.off) | msgpack_pack_uint32(&pk, q->payload.len) |
              msgpack_pack_uint32(&pk, q->payload.gen);
    }
    if (bad)
        return -ENOBUFS;
    *len = w.len;
    return 0;
}

static int mpc_result(const struct loki_batch_result *res, void *buf, size_t cap, size_t *len)
{
    struct wbuf w = {buf, 0, cap};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &w, wbuf_write);
    int bad = msgpack_pack_array(&pk, 4) | msgpack_pack_uint8(&pk, LOKI_BATCH_KIND_RESULT) |
              msgpack_pack_uint64(&pk, res->batch_id) | msgpack_pack_uint32(&pk, res->instance_id) |
              msgpack_pack_array(&pk, res->n_queries);
    for (uint32_t i = 0; i < res->n_queries && !bad; i++) {
        const struct loki_batch_result_query *q = &res->queries[i];
        bad = msgpack_pack_array(&pk, 6) | msgpack_pack_uint64(&pk, q->query_id) |
              msgpack_pack_int32(&pk, q->status);
        if (q->out_kind == LOKI_BATCH_OUT_NONE)
            bad |= msgpack_pack_nil(&pk);
        else if (q->out_kind == LOKI_BATCH_OUT_INLINE)
            bad |= msgpack_pack_bin_with_body(&pk, q->inline_data, q->inline_len);
        else
            bad |= msgpack_pack_array(&pk, 3) | msgpack_pack_uint64(&pk, q->out_ref.off) |
                   msgpack_pack_uint32(&pk, q->out_ref.len) |
                   msgpack_pack_uint32(&pk, q->out_ref.gen);
        bad |= msgpack_pack_array(&pk, q->n_fanout);
        for (uint32_t k = 0; k < q->n_fanout; k++)
            bad |= msgpack_pack_uint32(&pk, q->fanout[k]);
        /* ABI v2: the children's payload table and the failure message, nil when none */
        if (q->children.len)
            bad |= msgpack_pack_array(&pk, 3) | msgpack_pack_uint64(&pk, q->children.off) |
                   msgpack_pack_uint32(&pk, q->children.len) |
                   msgpack_pack_uint32(&pk, q->children.gen);
        else
            bad |= msgpack_pack_nil(&pk);
        if (q->msg_len)
            bad |= msgpack_pack_str_with_body(&pk, q->msg, q->msg_len);
        else
            bad |= msgpack_pack_nil(&pk);
    }
    if (bad)
        return -ENOBUFS;
    *len = w.len;
    return 0;
}

/* ---- msgpack-c: decoders (same fields, same type and range checks, same structs) ----------- */

static bool obj_is(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n && !memcmp(o->via.str.ptr, s, n);
}

static bool obj_number(const msgpack_object *o, double *d)
{
    if (o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32)
        *d = o->via.f64;
    else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        *d = (double)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *d = (double)o->via.i64;
    else
        return false;
    return true;
}

static int walk_request(const msgpack_object *o, struct loki_request *q)
{
    loki_request_init(q);
    if (o->type != MSGPACK_OBJECT_MAP)
        return LOKI_EPROTO;
    q->type = LOKI_MSG_INFER;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR)
            return LOKI_EPROTO;
        if (obj_is(k, "type")) {
            if (!obj_is(v, "infer"))
                return LOKI_EPROTO;
        } else if (obj_is(k, "id")) {
            if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                return LOKI_EPROTO;
            q->has_id = true;
            q->id = v->via.u64;
        } else if (obj_is(k, "pipeline")) {
            if (v->type != MSGPACK_OBJECT_STR || v->via.str.size > LOKI_PROTO_NAME_MAX)
                return LOKI_EPROTO;
            q->pipeline = (struct loki_bytes){(const uint8_t *)v->via.str.ptr, v->via.str.size};
        } else if (obj_is(k, "payload")) {
            if (v->type != MSGPACK_OBJECT_BIN)
                return LOKI_EPROTO;
            q->payload = (struct loki_bytes){(const uint8_t *)v->via.bin.ptr, v->via.bin.size};
        } else if (obj_is(k, "deadline_ms")) {
            if (!obj_number(v, &q->deadline_ms) || !(q->deadline_ms > 0))
                return LOKI_EPROTO;
            q->has_deadline = true;
        } else if (obj_is(k, "priority")) {
            if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= INT32_MAX)
                q->priority = (int32_t)v->via.u64;
            else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && v->via.i64 >= INT32_MIN)
                q->priority = (int32_t)v->via.i64;
            else
                return LOKI_EPROTO;
            q->has_priority = true;
        }
    }
    return q->has_id && q->pipeline.len && q->payload.ptr ? 0 : LOKI_EPROTO;
}

static int walk_reply(const msgpack_object *o, struct loki_reply *r)
{
    loki_reply_init(r);
    if (o->type != MSGPACK_OBJECT_MAP)
        return LOKI_EPROTO;
    bool have_status = false;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR)
            return LOKI_EPROTO;
        if (obj_is(k, "type")) {
            if (!obj_is(v, "infer"))
                return LOKI_EPROTO;
            r->type = LOKI_MSG_INFER;
        } else if (obj_is(k, "id")) {
            if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                return LOKI_EPROTO;
            r->has_id = true;
            r->id = v->via.u64;
        } else if (obj_is(k, "status")) {
            if (!obj_is(v, "ok"))
                return LOKI_EPROTO;
            r->status = LOKI_STATUS_OK;
            have_status = true;
        } else if (obj_is(k, "outputs")) {
            if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size > LOKI_PROTO_MAX_OUTPUTS)
                return LOKI_EPROTO;
            r->n_outputs = v->via.array.size;
            for (uint32_t j = 0; j < r->n_outputs; j++) {
                const msgpack_object *e = &v->via.array.ptr[j];
                if (e->type != MSGPACK_OBJECT_BIN)
                    return LOKI_EPROTO;
                r->outputs[j] =
                    (struct loki_bytes){(const uint8_t *)e->via.bin.ptr, e->via.bin.size};
            }
        } else if (obj_is(k, "path")) {
            if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size > LOKI_PROTO_MAX_PATHS)
                return LOKI_EPROTO;
            r->n_paths = v->via.array.size;
            for (uint32_t j = 0; j < r->n_paths; j++) {
                const msgpack_object *e = &v->via.array.ptr[j];
                if (e->type != MSGPACK_OBJECT_STR)
                    return LOKI_EPROTO;
                r->paths[j] = (struct loki_bytes){(const uint8_t *)e->via.str.ptr, e->via.str.size};
            }
        } else if (obj_is(k, "accuracy")) {
            if (!obj_number(v, &r->accuracy))
                return LOKI_EPROTO;
        } else if (obj_is(k, "latency_ms")) {
            if (!obj_number(v, &r->latency_ms))
                return LOKI_EPROTO;
        }
    }
    return have_status ? 0 : LOKI_EPROTO;
}

static bool obj_uint(const msgpack_object *o, uint64_t max, uint64_t *v)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > max)
        return false;
    *v = o->via.u64;
    return true;
}

static bool obj_ref(const msgpack_object *o, struct loki_arena_ref *ref)
{
    uint64_t off, len, gen;
    if (!obj_uint(&o[0], UINT64_MAX, &off) || !obj_uint(&o[1], UINT32_MAX, &len) ||
        !obj_uint(&o[2], UINT32_MAX, &gen))
        return false;
    *ref = (struct loki_arena_ref){off, (uint32_t)len, (uint32_t)gen};
    return true;
}

/* A batch record's header: kind, ids, and the query array. */
static const msgpack_object *walk_batch_head(const msgpack_object *o, uint64_t kind, uint32_t *n)
{
    uint64_t k, id, inst, var;
    uint32_t top = kind == LOKI_BATCH_KIND_DESC ? 5 : 4;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != top)
        return NULL;
    const msgpack_object *e = o->via.array.ptr;
    if (!obj_uint(&e[0], 0x7f, &k) || k != kind || !obj_uint(&e[1], UINT64_MAX, &id) ||
        !obj_uint(&e[2], UINT32_MAX, &inst))
        return NULL;
    if (kind == LOKI_BATCH_KIND_DESC && !obj_uint(&e[3], UINT32_MAX, &var))
        return NULL;
    const msgpack_object *qs = &e[top - 1];
    if (qs->type != MSGPACK_OBJECT_ARRAY || qs->via.array.size > LOKI_BATCH_MAX_QUERIES)
        return NULL;
    *n = qs->via.array.size;
    return qs->via.array.ptr;
}

static int walk_desc(const msgpack_object *o, struct loki_batch_query *out)
{
    uint32_t n;
    const msgpack_object *qs = walk_batch_head(o, LOKI_BATCH_KIND_DESC, &n);
    if (!qs)
        return LOKI_ECORRUPT;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *q = &qs[i];
        uint64_t id, sub, dl;
        if (q->type != MSGPACK_OBJECT_ARRAY || q->via.array.size != 6)
            return LOKI_ECORRUPT;
        const msgpack_object *f = q->via.array.ptr;
        if (!obj_uint(&f[0], UINT64_MAX, &id) || !obj_uint(&f[1], UINT32_MAX, &sub) ||
            !obj_uint(&f[2], UINT64_MAX, &dl) || !obj_ref(&f[3], &out[i].payload))
            return LOKI_ECORRUPT;
        out[i].query_id = id;
        out[i].sub_query_id = (uint32_t)sub;
        out[i].deadline_ns = dl;
    }
    return (int)n;
}

static int walk_result(const msgpack_object *o, struct loki_batch_result_query *out)
{
    uint32_t n;
    const msgpack_object *qs = walk_batch_head(o, LOKI_BATCH_KIND_RESULT, &n);
    if (!qs)
        return LOKI_ECORRUPT;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *q = &qs[i];
        struct loki_batch_result_query *r = &out[i];
        if (q->type != MSGPACK_OBJECT_ARRAY || q->via.array.size != 6)
            return LOKI_ECORRUPT;
        const msgpack_object *f = q->via.array.ptr;
        if (!obj_uint(&f[0], UINT64_MAX, &r->query_id))
            return LOKI_ECORRUPT;
        if (f[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER && f[1].via.u64 <= INT32_MAX)
            r->status = (int32_t)f[1].via.u64;
        else if (f[1].type == MSGPACK_OBJECT_NEGATIVE_INTEGER && f[1].via.i64 >= INT32_MIN)
            r->status = (int32_t)f[1].via.i64;
        else
            return LOKI_ECORRUPT;
        r->out_kind = LOKI_BATCH_OUT_NONE;
        if (f[2].type == MSGPACK_OBJECT_BIN && f[2].via.bin.size <= LOKI_BATCH_INLINE_MAX) {
            r->out_kind = LOKI_BATCH_OUT_INLINE;
            r->inline_data = f[2].via.bin.ptr;
            r->inline_len = f[2].via.bin.size;
        } else if (f[2].type == MSGPACK_OBJECT_ARRAY && f[2].via.array.size == 3) {
            if (!obj_ref(f[2].via.array.ptr, &r->out_ref))
                return LOKI_ECORRUPT;
            r->out_kind = LOKI_BATCH_OUT_REF;
        } else if (f[2].type != MSGPACK_OBJECT_NIL) {
            return LOKI_ECORRUPT;
        }
        if (f[3].type != MSGPACK_OBJECT_ARRAY || f[3].via.array.size > LOKI_BATCH_MAX_CHILDREN)
            return LOKI_ECORRUPT;
        r->n_fanout = f[3].via.array.size;
        for (uint32_t k = 0; k < r->n_fanout; k++) {
            uint64_t v;
            if (!obj_uint(&f[3].via.array.ptr[k], UINT32_MAX, &v))
                return LOKI_ECORRUPT;
            r->fanout[k] = (uint32_t)v;
        }
        memset(&r->children, 0, sizeof(r->children));
        if (f[4].type == MSGPACK_OBJECT_ARRAY && f[4].via.array.size == 3) {
            if (!obj_ref(f[4].via.array.ptr, &r->children) || !r->children.len)
                return LOKI_ECORRUPT;
        } else if (f[4].type != MSGPACK_OBJECT_NIL) {
            return LOKI_ECORRUPT;
        }
        r->msg = NULL;
        r->msg_len = 0;
        if (f[5].type == MSGPACK_OBJECT_STR && f[5].via.str.size <= LOKI_BATCH_MSG_MAX) {
            r->msg = f[5].via.str.ptr;
            r->msg_len = f[5].via.str.size;
        } else if (f[5].type != MSGPACK_OBJECT_NIL) {
            return LOKI_ECORRUPT;
        }
    }
    return (int)n;
}

/* ---- the operations timed ------------------------------------------------------------------ */

enum impl { OWN, MPC_NEXT, MPC_ZONE };
enum msg { M_REQUEST, M_REPLY, M_DESC, M_RESULT };
static const char *const msg_names[] = {"request", "reply", "batch_desc", "batch_result"};

static uint8_t enc_buf[1 << 17];
static uint8_t frame[4][1 << 17]; /* each message encoded once, for the decoders */
static size_t frame_len[4];
static struct loki_request dec_req;
static struct loki_reply dec_rep;
static struct loki_batch_query dec_q[N_BATCH];
static struct loki_batch_result_query dec_r[N_BATCH];
static msgpack_zone zone;
static volatile size_t sink; /* keeps every result observable */

static void fail_op(const char *what, long rc)
{
    fprintf(stderr, "bench_codec: %s failed (%ld)\n", what, rc);
    exit(1);
}

static size_t encode_once(enum msg m, enum impl impl)
{
    ssize_t n = 0;
    size_t len = 0;
    int rc = 0;
    switch (m) {
    case M_REQUEST:
        n = impl == OWN ? loki_proto_encode_request_head(enc_buf, sizeof(enc_buf), &req)
                        : mpc_request_head(enc_buf, sizeof(enc_buf), &req);
        break;
    case M_REPLY:
        n = impl == OWN ? loki_proto_encode_reply(enc_buf, sizeof(enc_buf), &rep)
                        : mpc_reply(enc_buf, sizeof(enc_buf), &rep);
        break;
    case M_DESC:
        rc = impl == OWN ? loki_batch_desc_encode(&desc, enc_buf, sizeof(enc_buf), &len)
                         : mpc_desc(&desc, enc_buf, sizeof(enc_buf), &len);
        n = (ssize_t)len;
        break;
    case M_RESULT:
        rc = impl == OWN ? loki_batch_result_encode(&result, enc_buf, sizeof(enc_buf), &len)
                         : mpc_result(&result, enc_buf, sizeof(enc_buf), &len);
        n = (ssize_t)len;
        break;
    }
    if (n <= 0 || rc)
        fail_op("encode", n <= 0 ? (long)n : rc);
    sink += (size_t)n + enc_buf[n - 1];
    return (size_t)n;
}

/* The msgpack body of message @m (request and reply frames lose their length prefix). */
static const uint8_t *body_of(enum msg m, size_t *len)
{
    size_t skip = m == M_REQUEST || m == M_REPLY ? LOKI_PROTO_HDR : 0;
    *len = frame_len[m] - skip;
    return frame[m] + skip;
}

static int walk(enum msg m, const msgpack_object *o)
{
    switch (m) {
    case M_REQUEST:
        return walk_request(o, &dec_req);
    case M_REPLY:
        return walk_reply(o, &dec_rep);
    case M_DESC:
        return walk_desc(o, dec_q);
    default:
        return walk_result(o, dec_r);
    }
}

static int decode_own(enum msg m, const uint8_t *b, size_t len)
{
    static const struct loki_proto_limits lim = {sizeof(payload)};
    struct loki_batch_view v;
    int rc, k = 0;
    switch (m) {
    case M_REQUEST:
        return loki_proto_decode_request(b, len, &lim, &dec_req, NULL, 0);
    case M_REPLY:
        return loki_proto_decode_reply(b, len, &dec_rep, NULL, 0);
    case M_DESC:
        rc = loki_batch_decode(b, len, &v);
        while (rc == 0 && (rc = loki_batch_next_query(&v, &dec_q[k])) == 1)
            rc = 0, k++;
        return rc ? rc : k;
    default:
        rc = loki_batch_decode(b, len, &v);
        while (rc == 0 && (rc = loki_batch_next_result(&v, &dec_r[k])) == 1)
            rc = 0, k++;
        return rc ? rc : k;
    }
}

static void decode_once(enum msg m, enum impl impl)
{
    size_t len, off = 0;
    const uint8_t *b = body_of(m, &len);
    int rc;
    if (impl == OWN) {
        rc = decode_own(m, b, len);
    } else if (impl == MPC_ZONE) {
        msgpack_object o;
        msgpack_zone_clear(&zone);
        if (msgpack_unpack((const char *)b, len, &off, &zone, &o) != MSGPACK_UNPACK_SUCCESS)
            fail_op("msgpack_unpack", -1);
        rc = walk(m, &o);
    } else {
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        if (msgpack_unpack_next(&u, (const char *)b, len, &off) != MSGPACK_UNPACK_SUCCESS)
            fail_op("msgpack_unpack_next", -1);
        rc = walk(m, &u.data);
        msgpack_unpacked_destroy(&u);
    }
    if (rc < 0 || (m >= M_DESC && rc != N_BATCH))
        fail_op("decode", rc);
    sink += (size_t)rc + dec_req.payload.len + dec_rep.n_outputs + dec_q[1].payload.gen;
}

static void run(bool encode, enum msg m, enum impl impl, int reps)
{
    for (int i = 0; i < reps; i++) {
        if (encode)
            encode_once(m, impl);
        else
            decode_once(m, impl);
    }
}

/* Operations per burst so that one burst of @impl takes about SAMPLE_NS. */
static int calibrate(bool encode, enum msg m, enum impl impl)
{
    int reps = 16;
    for (;;) {
        uint64_t t0 = loki_now_ns();
        run(encode, m, impl, reps);
        double ns = (double)(loki_now_ns() - t0);
        if (ns >= SAMPLE_NS / 4 || reps >= 1 << 20)
            return (int)(reps * SAMPLE_NS / (ns > 1 ? ns : 1)) + 1;
        reps *= 4;
    }
}

static double burst(bool encode, enum msg m, enum impl impl, int reps)
{
    uint64_t t0 = loki_now_ns();
    run(encode, m, impl, reps);
    return (double)(loki_now_ns() - t0) / reps;
}

/* Ours against msgpack-c implementations @others, paired sample by sample. */
static void compare(bool encode, enum msg m, const enum impl *others, int n_others)
{
    static double own[SAMPLES], mpc[2][SAMPLES], ratio[2][SAMPLES];
    static const char *const impl_names[] = {"loki", "msgpackc", "msgpackc_zone"};
    int reps_own = calibrate(encode, m, OWN), reps[2];
    for (int k = 0; k < n_others; k++)
        reps[k] = calibrate(encode, m, others[k]);
    for (int s = 0; s < SAMPLES; s++) {
        bool own_first = s & 1;
        if (own_first)
            own[s] = burst(encode, m, OWN, reps_own);
        for (int k = 0; k < n_others; k++)
            mpc[k][s] = burst(encode, m, others[k], reps[k]);
        if (!own_first)
            own[s] = burst(encode, m, OWN, reps_own);
        for (int k = 0; k < n_others; k++)
            ratio[k][s] = mpc[k][s] / own[s];
    }
    char name[64];
    const char *op = encode ? "encode" : "decode";
    snprintf(name, sizeof(name), "%s_%s_loki", msg_names[m], op);
    record(name, "ns", own, SAMPLES);
    for (int k = 0; k < n_others; k++) {
        snprintf(name, sizeof(name), "%s_%s_%s", msg_names[m], op, impl_names[others[k]]);
        record(name, "ns", mpc[k], SAMPLES);
    }
    for (int k = 0; k < n_others; k++) {
        snprintf(name, sizeof(name), "%s_%s_ratio_%s", msg_names[m], op, impl_names[others[k]]);
        record(name, "ratio", ratio[k], SAMPLES);
    }
}

/* Both encoders must write the same bytes, or the comparison means nothing. */
static void check_same_bytes(void)
{
    static uint8_t a[1 << 17];
    for (int m = M_REQUEST; m <= M_RESULT; m++) {
        size_t n = encode_once((enum msg)m, OWN);
        memcpy(a, enc_buf, n);
        if (encode_once((enum msg)m, MPC_NEXT) != n || memcmp(a, enc_buf, n) != 0) {
            fprintf(stderr, "bench_codec: the encoders disagree on %s\n", msg_names[m]);
            exit(1);
        }
    }
}

int main(int argc, char **argv)
{
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
            out = argv[++i];
        } else {
            fprintf(stderr, "usage: bench_codec --out DIR\n");
            return 2;
        }
    }
    if (!out) {
        fprintf(stderr, "usage: bench_codec --out DIR\n");
        return 2;
    }
    uint64_t t_start = loki_now_ns();
    make_messages();
    if (!msgpack_zone_init(&zone, MSGPACK_ZONE_CHUNK_SIZE))
        fail_op("msgpack_zone_init", -ENOMEM);
    memset(enc_buf, 0, sizeof(enc_buf));
    check_same_bytes();
    /* the frames the decoders read: the request whole (head + payload) */
    ssize_t n = loki_proto_encode_request(frame[M_REQUEST], sizeof(frame[0]), &req);
    frame_len[M_REQUEST] = n > 0 ? (size_t)n : 0;
    n = loki_proto_encode_reply(frame[M_REPLY], sizeof(frame[0]), &rep);
    frame_len[M_REPLY] = n > 0 ? (size_t)n : 0;
    if (!frame_len[M_REQUEST] || !frame_len[M_REPLY] ||
        loki_batch_desc_encode(&desc, frame[M_DESC], sizeof(frame[0]), &frame_len[M_DESC]) ||
        loki_batch_result_encode(&result, frame[M_RESULT], sizeof(frame[0]), &frame_len[M_RESULT]))
        fail_op("encoding the frames", -1);

    printf("# bench_codec: loki/wire.h vs msgpack-c %s; ns per operation, ratio = msgpack-c / "
           "loki; name unit median p99 n\n",
           msgpack_version());
    printf("# sizes: request head %d B (frame %zu B), reply %zu B, batch_desc %zu B, "
           "batch_result %zu B\n",
           (int)loki_proto_encode_request_head(enc_buf, sizeof(enc_buf), &req),
           frame_len[M_REQUEST], frame_len[M_REPLY], frame_len[M_DESC], frame_len[M_RESULT]);
    static const enum impl enc_others[] = {MPC_NEXT};
    static const enum impl dec_others[] = {MPC_NEXT, MPC_ZONE};
    for (int m = M_REQUEST; m <= M_RESULT; m++) {
        compare(true, (enum msg)m, enc_others, 1);
        compare(false, (enum msg)m, dec_others, 2);
    }
    msgpack_zone_destroy(&zone);

    char path[4096];
    snprintf(path, sizeof(path), "%s/codec.json", out);
    mkdir(out, 0755);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "bench_codec: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    struct utsname un;
    uname(&un);
    fprintf(f, "{\n  \"bench\": \"codec\",\n  \"machine\": \"%s %s\",\n", un.machine, un.release);
    fprintf(f, "  \"msgpack_c\": \"%s\",\n", msgpack_version());
    fprintf(f, "  \"wall_s\": %.3f,\n", (double)(loki_now_ns() - t_start) * 1e-9);
    fprintf(f,
            "  \"notes\": \"ns per operation over bursts of ~%.0f us; ratio = msgpack-c / "
            "loki per paired sample (> 1: loki faster); msgpackc = msgpack_unpack_next, "
            "msgpackc_zone = msgpack_unpack into one reused zone\",\n",
            SAMPLE_NS / 1e3);
    fprintf(f, "  \"metrics\": [\n");
    for (size_t i = 0; i < n_metrics; i++)
        fprintf(f,
                "    {\"name\": \"%s\", \"unit\": \"%s\", \"median\": %.6g, \"p99\": %.6g, "
                "\"n\": %zu}%s\n",
                metrics[i].name, metrics[i].unit, metrics[i].median, metrics[i].p99, metrics[i].n,
                i + 1 < n_metrics ? "," : "");
    fprintf(f, "  ]\n}\n");
    fclose(f);
    return 0;
}
