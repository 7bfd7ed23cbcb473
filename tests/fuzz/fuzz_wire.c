/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz entry point for the msgpack codec itself (loki/wire.h), differential
 * against msgpack-c. The input is 4 parameter bytes, then msgpack. Every value
 * of the stream is read three ways: msgpack-c's unpacker (the reference), a
 * walk over loki_wire_read() that must see the same tree node by node, and
 * loki_wire_read_value() that must accept it exactly when it nests at most
 * LOKI_WIRE_MAX_DEPTH containers deep, ending at the same offset. Whatever
 * msgpack-c accepts is re-encoded with loki's writer and must match msgpack-c's
 * packer byte for byte (floats as float64: loki's one float form), also into a
 * buffer too small. Then one typed read (picked, with its bounds, by the
 * parameter bytes) must do what its contract says of the first value.
 */
#include <errno.h>
#include <math.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loki/error.h"
#include "loki/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_wire: check failed: %s (line %d)\n", #c, __LINE__);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define ERR LOKI_EPROTO

/* Bounds the typed reads are tried with: every integer form's edges. */
static const int64_t bounds[] = {INT64_MIN, INT32_MIN - 1ll,
                                 INT32_MIN, -32769,
                                 -32768,    -129,
                                 -128,      -33,
                                 -32,       -5,
                                 -1,        0,
                                 1,         5,
                                 127,       128,
                                 255,       256,
                                 65535,     65536,
                                 INT32_MAX, UINT32_MAX,
                                 INT64_MAX};
#define N_BOUNDS (sizeof(bounds) / sizeof(bounds[0]))

/* ---- reading: loki_wire_read() node by node against msgpack-c's tree ------------------------ */

/* Deepest container level in @o (the top container is level 0); -1 when none. */
static int depth_of(const msgpack_object *o)
{
    int d = -1;
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            int s = depth_of(&o->via.array.ptr[i]);
            d = s > d ? s : d;
        }
        return d + 1;
    }
    if (o->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            int k = depth_of(&o->via.map.ptr[i].key), v = depth_of(&o->via.map.ptr[i].val);
            d = k > d ? k : d;
            d = v > d ? v : d;
        }
        return d + 1;
    }
    return -1;
}

static bool same_float(double a, double b)
{
    return memcmp(&a, &b, sizeof(a)) == 0 || (isnan(a) && isnan(b));
}

/* Reads one value with loki_wire_read(), recursing into containers, and compares with @o. */
static void walk(struct loki_wire_reader *r, const msgpack_object *o)
{
    struct loki_wire_val v;
    CHECK(loki_wire_read(r, &v) == 0);
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        CHECK(v.kind == LOKI_WIRE_NIL);
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        CHECK(v.kind == LOKI_WIRE_BOOL && v.b == o->via.boolean);
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        CHECK(v.kind == LOKI_WIRE_UINT && v.u == o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        CHECK(v.kind == LOKI_WIRE_INT && v.i == o->via.i64 && v.i < 0);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        CHECK(v.kind == LOKI_WIRE_FLOAT && same_float(v.f, o->via.f64));
        break;
    case MSGPACK_OBJECT_STR:
        CHECK(v.kind == LOKI_WIRE_STR && v.len == o->via.str.size);
        CHECK(v.ptr == (const uint8_t *)o->via.str.ptr || !v.len);
        break;
    case MSGPACK_OBJECT_BIN:
        CHECK(v.kind == LOKI_WIRE_BIN && v.len == o->via.bin.size);
        CHECK(v.ptr == (const uint8_t *)o->via.bin.ptr || !v.len);
        break;
    case MSGPACK_OBJECT_EXT:
        CHECK(v.kind == LOKI_WIRE_EXT && v.len == o->via.ext.size);
        CHECK(v.ext_type == o->via.ext.type);
        CHECK(v.ptr == (const uint8_t *)o->via.ext.ptr || !v.len);
        break;
    case MSGPACK_OBJECT_ARRAY:
        CHECK(v.kind == LOKI_WIRE_ARRAY && v.len == o->via.array.size);
        for (uint32_t i = 0; i < o->via.array.size; i++)
            walk(r, &o->via.array.ptr[i]);
        break;
    case MSGPACK_OBJECT_MAP:
        CHECK(v.kind == LOKI_WIRE_MAP && v.len == o->via.map.size);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            walk(r, &o->via.map.ptr[i].key);
            walk(r, &o->via.map.ptr[i].val);
        }
        break;
    default:
        CHECK(!"unknown msgpack-c object type");
    }
}

/*
 * msgpack-c sizes its object tree from the counts it reads, before the entries arrive: a
 * 32-bit count would have it allocate up to 100 GB. Such inputs are only read by loki.
 * Conservative: any 0xdd/0xdf byte followed by a count larger than the input.
 */
static bool msgpack_c_would_allocate_huge(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i + 4 < n; i++)
        if ((p[i] == 0xdd || p[i] == 0xdf) && ((uint32_t)p[i + 1] << 24 | (uint32_t)p[i + 2] << 16 |
                                               (uint32_t)p[i + 3] << 8 | p[i + 4]) > n)
            return true;
    return false;
}

/* ---- writing: loki's writer against msgpack-c's packer -------------------------------------- */

static void put_obj(struct loki_wire_writer *w, const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        loki_wire_put_nil(w);
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        loki_wire_put_bool(w, o->via.boolean);
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        loki_wire_put_uint(w, o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        loki_wire_put_int(w, o->via.i64);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        loki_wire_put_double(w, o->via.f64);
        break;
    case MSGPACK_OBJECT_STR:
        loki_wire_put_str(w, o->via.str.ptr, o->via.str.size);
        break;
    case MSGPACK_OBJECT_BIN:
        loki_wire_put_bin(w, o->via.bin.ptr, o->via.bin.size);
        break;
    case MSGPACK_OBJECT_ARRAY:
        loki_wire_put_array(w, o->via.array.size);
        for (uint32_t i = 0; i < o->via.array.size; i++)
            put_obj(w, &o->via.array.ptr[i]);
        break;
    case MSGPACK_OBJECT_MAP:
        loki_wire_put_map(w, o->via.map.size);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            put_obj(w, &o->via.map.ptr[i].key);
            put_obj(w, &o->via.map.ptr[i].val);
        }
        break;
    default: /* EXT: loki has no ext writer */
        break;
    }
}

static bool has_ext(const msgpack_object *o)
{
    if (o->type == MSGPACK_OBJECT_EXT)
        return true;
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < o->via.array.size; i++)
            if (has_ext(&o->via.array.ptr[i]))
                return true;
    } else if (o->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < o->via.map.size; i++)
            if (has_ext(&o->via.map.ptr[i].key) || has_ext(&o->via.map.ptr[i].val))
                return true;
    }
    return false;
}

/* msgpack-c's packer, with every float as a double (what loki writes). */
static void pack_obj(msgpack_packer *pk, const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        msgpack_pack_double(pk, o->via.f64);
        break;
    case MSGPACK_OBJECT_ARRAY:
        msgpack_pack_array(pk, o->via.array.size);
        for (uint32_t i = 0; i < o->via.array.size; i++)
            pack_obj(pk, &o->via.array.ptr[i]);
        break;
    case MSGPACK_OBJECT_MAP:
        msgpack_pack_map(pk, o->via.map.size);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            pack_obj(pk, &o->via.map.ptr[i].key);
            pack_obj(pk, &o->via.map.ptr[i].val);
        }
        break;
    default:
        msgpack_pack_object(pk, *o);
    }
}

static void check_writer(const msgpack_object *o, size_t small)
{
    static uint8_t buf[1 << 16];
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct loki_wire_writer w;
    size_t len;
    if (has_ext(o))
        return;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack_obj(&pk, o);
    loki_wire_writer_init(&w, buf, sizeof(buf));
    put_obj(&w, o);
    if (sb.size <= sizeof(buf)) {
        CHECK(loki_wire_writer_finish(&w, &len) == 0);
        CHECK(len == sb.size && memcmp(buf, sb.data, len) == 0);
    }
    /* too small a buffer: the length still counts, finish refuses, nothing is written past it */
    if (small < sb.size) {
        buf[small] = 0x5a;
        loki_wire_writer_init(&w, buf, small);
        put_obj(&w, o);
        CHECK(w.len == sb.size && loki_wire_writer_finish(&w, &len) == -ENOBUFS);
        CHECK(buf[small] == 0x5a);
    }
    msgpack_sbuffer_destroy(&sb);
}

/* ---- typed reads against the generic one ---------------------------------------------------- */

static void check_typed(const uint8_t *p, size_t n, uint8_t op, int64_t a, int64_t b, size_t me)
{
    char msg[128];
    struct loki_wire_reader g, r;
    struct loki_wire_val v;
    loki_wire_reader_init(&g, p, n, ERR, NULL, 0);
    int gerr = loki_wire_read(&g, &v);
    loki_wire_reader_init(&r, p, n, ERR, msg, sizeof(msg));
    bool ok = false;
    int err;
    uint64_t u;
    int64_t i;
    uint32_t cnt, len;
    const uint8_t *ptr;
    size_t left = loki_wire_left(&g);
    switch (op % 6) {
    case 0:
        err = loki_wire_read_uint(&r, (uint64_t)a, &u);
        ok = !gerr && v.kind == LOKI_WIRE_UINT && v.u <= (uint64_t)a;
        CHECK(!ok || u == v.u);
        break;
    case 1:
        if (a > b) {
            int64_t t = a;
            a = b;
            b = t;
        }
        err = loki_wire_read_int(&r, a, b, &i);
        ok = !gerr && (v.kind == LOKI_WIRE_UINT
                           ? b >= 0 && v.u <= (uint64_t)b && (a < 0 || v.u >= (uint64_t)a)
                       : v.kind == LOKI_WIRE_INT ? v.i >= a && v.i <= b
                                                 : false);
        CHECK(!ok || i == (v.kind == LOKI_WIRE_UINT ? (int64_t)v.u : v.i));
        break;
    case 2:
        err = loki_wire_read_array(&r, me, &cnt);
        ok = !gerr && v.kind == LOKI_WIRE_ARRAY && (uint64_t)v.len * (me ? me : 1) <= left;
        CHECK(!ok || cnt == v.len);
        break;
    case 3:
        err = loki_wire_read_map(&r, me, &cnt);
        ok = !gerr && v.kind == LOKI_WIRE_MAP && (uint64_t)v.len * (me ? me : 1) <= left;
        CHECK(!ok || cnt == v.len);
        break;
    case 4:
        err = loki_wire_read_str(&r, &ptr, &len);
        ok = !gerr && v.kind == LOKI_WIRE_STR;
        CHECK(!ok || (ptr == v.ptr && len == v.len));
        break;
    default:
        err = loki_wire_read_bin(&r, &ptr, &len);
        ok = !gerr && v.kind == LOKI_WIRE_BIN;
        CHECK(!ok || (ptr == v.ptr && len == v.len));
        break;
    }
    if (ok) {
        CHECK(err == 0 && msg[0] == 0 && loki_wire_offset(&r) == loki_wire_offset(&g));
    } else {
        if (err != ERR || !msg[0])
            fprintf(stderr, "fuzz_wire: op %d [%lld, %lld] me %zu: err %d '%s'\n", op % 6,
                    (long long)a, (long long)b, me, err, msg);
        CHECK(err == ERR && msg[0]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    uint8_t op = data[0];
    int64_t a = bounds[data[1] % N_BOUNDS], b = bounds[data[2] % N_BOUNDS];
    size_t me = data[3] % 9;
    const uint8_t *p = data + 4;
    size_t n = size - 4;
    bool reference = !msgpack_c_would_allocate_huge(p, n);

    check_typed(p, n, op, a, b, me);

    struct loki_wire_reader whole, nodes;
    char msg[128];
    loki_wire_reader_init(&whole, p, n, ERR, msg, sizeof(msg));
    loki_wire_reader_init(&nodes, p, n, ERR, NULL, 0);
    msgpack_unpacked res;
    msgpack_unpacked_init(&res);
    size_t off = 0;
    while (off < n) {
        struct loki_wire_val v;
        int err = loki_wire_read_value(&whole, &v, 0);
        CHECK(err == 0 || (err == ERR && msg[0])); /* every failure says why */
        if (!reference)
            break;
        size_t at = off;
        msgpack_unpack_return rc = msgpack_unpack_next(&res, (const char *)p, n, &off);
        if (rc != MSGPACK_UNPACK_SUCCESS) {
            /* truncated, 0xc1, or nested deeper than msgpack-c's 32 levels: loki refuses too */
            CHECK(err != 0);
            break;
        }
        walk(&nodes, &res.data);
        CHECK(loki_wire_offset(&nodes) == off);
        check_writer(&res.data, (size_t)(op >> 3) * 3 + (off - at) / 2);
        if (depth_of(&res.data) >= LOKI_WIRE_MAX_DEPTH) {
            CHECK(err == ERR && strstr(msg, "nested deeper"));
            break;
        }
        CHECK(err == 0 && loki_wire_offset(&whole) == off);
    }
    msgpack_unpacked_destroy(&res);
    return 0;
}
