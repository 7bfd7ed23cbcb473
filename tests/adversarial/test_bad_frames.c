/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Malformed frames against a running lokid, table-driven: a valid request cut at every
 * offset, every field with every wrong type, lying lengths, sizes past each limit, nesting
 * bombs, invalid msgpack bytes, unknown message types, duplicate keys, NUL bytes in strings,
 * missing fields, a cancel without an id. Each is sent on a connection of its own and answered
 * with the exact error text the protocol documents (docs/protocol.md, "Errors"): a
 * bad_request reply naming the field or offset, after which the connection still answers a
 * ping; or, for what breaks the framing (a length past the limit, a frame that never
 * completes), an error frame and the end of the connection. Afterwards lokid still serves a
 * normal query, and its counters agree with the table.
 */
#include "harness.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "adv.h"
#include "loki/client.h"

#define MAX_PAYLOAD 4096              /* frontend.max_payload_bytes of the topology below */
#define MAX_BODY (MAX_PAYLOAD + 1024) /* the frame limit that follows from it */
#define FRAME_TIMEOUT_MS 10000        /* the frontend's, fixed */

static const char topology[] =
    "gpus: {count: 1, memory_mb: 16384}\n"
    "planner: {interval_ms: 500, min_dwell_s: 600}\n"
    "frontend: {max_payload_bytes: 4096}\n"
    "pipelines:\n"
    "  - name: small\n"
    "    slo_ms: 10000\n"
    "    tasks:\n"
    "      - name: only\n"
    "        variants:\n"
    "          - {name: v, accuracy: 90, startup_ms: 1, batch_sizes: [1, 8],\n"
    "             latency_ms: [1, 2]}\n";

static struct adv_lokid lokid;

/* ---- a msgpack writer that also writes what no encoder would ----------------------------- */

#define MP_CAP 16384

struct mp {
    uint8_t b[MP_CAP];
    size_t n;
};

static void mp_raw(struct mp *m, const void *p, size_t n)
{
    assert_true(m->n + n <= MP_CAP);
    memcpy(m->b + m->n, p, n);
    m->n += n;
}

static void mp_byte(struct mp *m, uint8_t c)
{
    mp_raw(m, &c, 1);
}

static void mp_be(struct mp *m, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        mp_byte(m, (uint8_t)(v >> (8 * i)));
}

static void mp_map(struct mp *m, uint32_t n)
{
    if (n < 16)
        mp_byte(m, (uint8_t)(0x80 | n));
    else {
        mp_byte(m, 0xdf);
        mp_be(m, n, 4);
    }
}

static void mp_array(struct mp *m, uint32_t n)
{
    if (n < 16)
        mp_byte(m, (uint8_t)(0x90 | n));
    else {
        mp_byte(m, 0xdd);
        mp_be(m, n, 4);
    }
}

static void mp_strn(struct mp *m, const char *s, size_t n)
{
    if (n < 32)
        mp_byte(m, (uint8_t)(0xa0 | n));
    else if (n < 256) {
        mp_byte(m, 0xd9);
        mp_be(m, n, 1);
    } else {
        mp_byte(m, 0xda);
        mp_be(m, n, 2);
    }
    mp_raw(m, s, n);
}

static void mp_str(struct mp *m, const char *s)
{
    mp_strn(m, s, strlen(s));
}

static void mp_bin(struct mp *m, const void *p, size_t n)
{
    if (n < 256) {
        mp_byte(m, 0xc4);
        mp_be(m, n, 1);
    } else {
        mp_byte(m, 0xc5);
        mp_be(m, n, 2);
    }
    mp_raw(m, p, n);
}

static void mp_uint(struct mp *m, uint64_t v)
{
    if (v < 128)
        mp_byte(m, (uint8_t)v);
    else {
        mp_byte(m, 0xcf);
        mp_be(m, v, 8);
    }
}

static void mp_int(struct mp *m, int64_t v)
{
    mp_byte(m, 0xd3);
    mp_be(m, (uint64_t)v, 8);
}

static void mp_f64(struct mp *m, double d)
{
    uint64_t bits;
    memcpy(&bits, &d, 8);
    mp_byte(m, 0xcb);
    mp_be(m, bits, 8);
}

/* A value of kind @k ("nil", "bool", "int", "negative int", "float", "str", "bin", "array",
 * "map", "ext"), for the wrong-type cases. */
static void mp_kind(struct mp *m, const char *k)
{
    if (!strcmp(k, "nil"))
        mp_byte(m, 0xc0);
    else if (!strcmp(k, "bool"))
        mp_byte(m, 0xc3);
    else if (!strcmp(k, "int"))
        mp_uint(m, 7);
    else if (!strcmp(k, "negative int"))
        mp_int(m, -7);
    else if (!strcmp(k, "float"))
        mp_f64(m, 1.5);
    else if (!strcmp(k, "str"))
        mp_str(m, "x");
    else if (!strcmp(k, "bin"))
        mp_bin(m, "x", 1);
    else if (!strcmp(k, "array")) {
        mp_array(m, 2);
        mp_uint(m, 1);
        mp_uint(m, 2);
    } else if (!strcmp(k, "map")) {
        mp_map(m, 1);
        mp_str(m, "k");
        mp_uint(m, 1);
    } else if (!strcmp(k, "ext")) {
        mp_byte(m, 0xd4); /* fixext 1 */
        mp_byte(m, 5);
        mp_byte(m, 0);
    } else
        fail_msg("no kind %s", k);
}

/* ---- the table ------------------------------------------------------------------------------ */

enum expect {
    E_REPLY,    /* an error reply; the connection stays and answers a ping */
    E_CLOSE,    /* an error frame (no id), then the end of the connection */
    E_STALL,    /* a frame that never completes: the same, FRAME_TIMEOUT_MS later */
    E_ACCEPTED, /* a boundary case that is valid: answered as the request it is */
};

struct bad_case {
    char name[96];
    uint8_t *bytes; /* exactly what goes on the wire, length prefix included */
    size_t len;
    enum expect expect;
    enum loki_status status;
    bool has_id;
    uint64_t id;
    enum loki_msg_type type; /* E_ACCEPTED: the reply's type */
    char error[192];         /* exact; may hold bytes a C string cannot, so with a length */
    size_t error_len;
};

#define MAX_CASES 512
static struct bad_case cases[MAX_CASES];
static int n_cases;

/* Add a case whose body is @m, framed with its true length (@frame_len >= 0 overrides it). */
static struct bad_case *add_framed(const char *name, const struct mp *m, int64_t frame_len)
{
    assert_true(n_cases < MAX_CASES);
    struct bad_case *c = &cases[n_cases++];
    memset(c, 0, sizeof(*c));
    snprintf(c->name, sizeof(c->name), "%s", name);
    uint32_t fl = frame_len >= 0 ? (uint32_t)frame_len : (uint32_t)m->n;
    c->len = 4 + m->n;
    c->bytes = malloc(c->len);
    assert_non_null(c->bytes);
    c->bytes[0] = (uint8_t)(fl >> 24);
    c->bytes[1] = (uint8_t)(fl >> 16);
    c->bytes[2] = (uint8_t)(fl >> 8);
    c->bytes[3] = (uint8_t)fl;
    memcpy(c->bytes + 4, m->b, m->n);
    c->expect = E_REPLY;
    c->status = LOKI_STATUS_BAD_REQUEST;
    return c;
}

static void set_error(struct bad_case *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_error(struct bad_case *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->error, sizeof(c->error), fmt, ap);
    va_end(ap);
    c->error_len = strlen(c->error);
}

/* A bad_request reply with @error (printf), carrying id @id when @has_id. */
static struct bad_case *bad(const char *name, const struct mp *m, bool has_id, uint64_t id,
                            const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static struct bad_case *bad(const char *name, const struct mp *m, bool has_id, uint64_t id,
                            const char *fmt, ...)
{
    struct bad_case *c = add_framed(name, m, -1);
    c->has_id = has_id;
    c->id = id;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->error, sizeof(c->error), fmt, ap);
    va_end(ap);
    c->error_len = strlen(c->error);
    return c;
}

#define ID 42 /* the id of the table's infer requests */

/* The fields of a valid infer request, in this order; one may be left out or replaced. */
enum field { F_NONE, F_TYPE, F_ID, F_PIPELINE, F_PAYLOAD, F_DEADLINE };

/* An infer map with field @skip left out and @repl's value written by @fn(m, @arg). */
static void infer_with(struct mp *m, enum field skip, enum field repl,
                       void (*fn)(struct mp *, const char *), const char *arg)
{
    static const char *const names[] = {NULL, "type", "id", "pipeline", "payload", "deadline_ms"};
    m->n = 0;
    mp_map(m, 5 - (skip != F_NONE));
    for (int f = F_TYPE; f <= F_DEADLINE; f++) {
        if (f == (int)skip)
            continue;
        mp_str(m, names[f]);
        if (f == (int)repl) {
            fn(m, arg);
            continue;
        }
        switch (f) {
        case F_TYPE:
            mp_str(m, "infer");
            break;
        case F_ID:
            mp_uint(m, ID);
            break;
        case F_PIPELINE:
            mp_str(m, "small");
            break;
        case F_PAYLOAD:
            mp_bin(m, "frame", 5);
            break;
        default:
            mp_f64(m, 5000);
            break;
        }
    }
}

/* The valid request the cut cases start from, and where each of its top-level values starts. */
static struct mp valid;
static size_t valid_starts[16], valid_ends[16];
static int valid_n;

static void build_valid(void)
{
    static const char *const keys[] = {"type", "id", "pipeline", "payload", "deadline_ms"};
    valid.n = 0;
    valid_n = 0;
    valid_starts[valid_n] = valid.n;
    mp_map(&valid, 5);
    valid_ends[valid_n++] = valid.n;
    for (int f = 0; f < 5; f++) {
        valid_starts[valid_n] = valid.n;
        mp_str(&valid, keys[f]);
        valid_ends[valid_n++] = valid.n;
        valid_starts[valid_n] = valid.n;
        switch (f) {
        case 0:
            mp_str(&valid, "infer");
            break;
        case 1:
            mp_uint(&valid, ID);
            break;
        case 2:
            mp_str(&valid, "small");
            break;
        case 3:
            mp_bin(&valid, "frame", 5);
            break;
        default:
            mp_f64(&valid, 5000);
            break;
        }
        valid_ends[valid_n++] = valid.n;
    }
}

static void add_cut_cases(void)
{
    build_valid();
    size_t id_end = valid_ends[4]; /* the id's value */
    for (size_t n = 0; n < valid.n; n++) {
        struct mp m;
        char name[96];
        m.n = 0;
        mp_raw(&m, valid.b, n);
        snprintf(name, sizeof(name), "valid request cut to %zu of %zu bytes", n, valid.n);
        if (n == 0) {
            bad(name, &m, false, 0, "empty frame");
            continue;
        }
        /* the map header claims 5 entries: with fewer than 10 bytes after it, it lies */
        size_t at = 0;
        if (n - 1 >= 10)
            for (int e = 0; e < valid_n; e++)
                if (valid_ends[e] > n) {
                    at = valid_starts[e];
                    break;
                }
        bad(name, &m, n >= id_end, ID, "truncated msgpack at offset %zu", at);
    }
    /* the same request whose frame says it is whole while the bytes stop: the frontend
     * cannot know, waits, then gives up on the connection */
    for (size_t n = 1; n < 4 + valid.n; n++) {
        struct mp m;
        char name[96];
        m.n = 0;
        mp_raw(&m, valid.b, valid.n);
        struct bad_case *c = add_framed("", &m, -1);
        c->len = n;
        snprintf(c->name, sizeof(c->name), "frame cut after %zu of its %zu bytes", n, 4 + valid.n);
        c->expect = E_STALL;
        set_error(c, "incomplete frame: %zu bytes received, then nothing for %d ms", n,
                  FRAME_TIMEOUT_MS);
        (void)name;
    }
}

static void add_body_cases(void)
{
    struct mp m;
    m.n = 0;
    mp_array(&m, 2), mp_uint(&m, 1), mp_uint(&m, 2);
    bad("body is an array", &m, false, 0, "frame body: expected map, got array");
    static const char *const kinds[] = {"nil",   "bool", "int", "negative int",
                                        "float", "str",  "bin", "ext"};
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        char name[64];
        m.n = 0;
        mp_kind(&m, kinds[k]);
        snprintf(name, sizeof(name), "body is a %s", kinds[k]);
        bad(name, &m, false, 0, "frame body: expected map, got %s",
            !strcmp(kinds[k], "negative int") ? "int" : kinds[k]);
    }
    /* a valid ping, then bytes after it */
    for (int extra = 1; extra <= 3; extra += 2) {
        char name[64];
        m.n = 0;
        mp_map(&m, 1), mp_str(&m, "type"), mp_str(&m, "ping");
        for (int i = 0; i < extra; i++)
            mp_byte(&m, 0);
        snprintf(name, sizeof(name), "%d trailing bytes", extra);
        bad(name, &m, false, 0, "%d trailing bytes after the map", extra);
    }
    static const char *const keykinds[] = {"int", "nil", "bin", "array", "map", "float"};
    for (size_t k = 0; k < sizeof(keykinds) / sizeof(keykinds[0]); k++) {
        char name[64];
        m.n = 0;
        mp_map(&m, 2), mp_kind(&m, keykinds[k]), mp_uint(&m, 1), mp_str(&m, "id"), mp_uint(&m, 1);
        snprintf(name, sizeof(name), "map key is a %s", keykinds[k]);
        bad(name, &m, false, 0, "map key: expected str, got %s", keykinds[k]);
    }
}

static void add_invalid_byte_cases(void)
{
    struct mp m;
    m.n = 0;
    mp_byte(&m, 0xc1);
    bad("0xc1 as the body", &m, false, 0, "invalid msgpack byte 0xc1 at offset 0");
    m.n = 0;
    mp_map(&m, 1), mp_byte(&m, 0xc1), mp_uint(&m, 1);
    bad("0xc1 as a key", &m, false, 0, "invalid msgpack byte 0xc1 at offset 1");
    m.n = 0;
    mp_map(&m, 2), mp_str(&m, "id"), mp_byte(&m, 0xc1), mp_str(&m, "x"), mp_uint(&m, 1);
    bad("0xc1 as the id", &m, false, 0, "invalid msgpack byte 0xc1 at offset 4");
    infer_with(&m, F_NONE, F_PAYLOAD, mp_kind, "nil");
    m.b[m.n - 1 - 9 - 12] = 0xc1; /* the payload's nil (before deadline_ms, 12+9 bytes) */
    bad("0xc1 as the payload", &m, true, ID, "invalid msgpack byte 0xc1 at offset %zu",
        m.n - 1 - 9 - 12);
    m.n = 0;
    mp_map(&m, 2), mp_str(&m, "type"), mp_str(&m, "ping"), mp_str(&m, "x");
    mp_array(&m, 3), mp_uint(&m, 1), mp_array(&m, 1), mp_byte(&m, 0xc1), mp_uint(&m, 3);
    bad("0xc1 deep in an unknown key", &m, false, 0, "invalid msgpack byte 0xc1 at offset 16");
}

/* Lengths that claim more than the frame holds: each is "truncated at" the value's offset. */
static void add_lying_cases(void)
{
    struct mp m;
    m.n = 0;
    mp_byte(&m, 0x8f), mp_str(&m, "id"), mp_uint(&m, 1);
    bad("fixmap claims 15 entries, has 1", &m, false, 0, "truncated msgpack at offset 0");
    m.n = 0;
    mp_byte(&m, 0xdf), mp_be(&m, 0xffffffffu, 4), mp_str(&m, "id"), mp_uint(&m, 1);
    bad("map32 claims 4294967295 entries", &m, false, 0, "truncated msgpack at offset 0");
    m.n = 0;
    mp_map(&m, 1), mp_byte(&m, 0xd9), mp_byte(&m, 200), mp_raw(&m, "type", 4);
    bad("str8 key claims 200 bytes, has 4", &m, false, 0, "truncated msgpack at offset 1");
    /* {"id": 42, "pipeline": <lie>}: the value starts at 1 + 3 + 1 + 9 = 14 */
    m.n = 0;
    mp_map(&m, 2), mp_str(&m, "id"), mp_uint(&m, ID), mp_str(&m, "pipeline");
    mp_byte(&m, 0xdb), mp_be(&m, 0xffffffffu, 4), mp_raw(&m, "small", 5);
    bad("str32 pipeline claims 4 GiB", &m, true, ID, "truncated msgpack at offset 14");
    m.n = 0;
    mp_map(&m, 2), mp_str(&m, "id"), mp_uint(&m, ID), mp_str(&m, "payload");
    mp_byte(&m, 0xc6), mp_be(&m, 0x7fffffffu, 4), mp_raw(&m, "abc", 3);
    bad("bin32 payload claims 2 GiB", &m, true, ID, "truncated msgpack at offset 13");
    m.n = 0;
    mp_map(&m, 2), mp_str(&m, "id"), mp_uint(&m, ID), mp_str(&m, "payload");
    mp_byte(&m, 0xc4), mp_byte(&m, 10), mp_raw(&m, "abc", 3);
    bad("bin8 payload claims 10 bytes, has 3", &m, true, ID, "truncated msgpack at offset 13");
    m.n = 0;
    mp_map(&m, 2), mp_str(&m, "id"), mp_uint(&m, ID), mp_str(&m, "x");
    mp_byte(&m, 0xdd), mp_be(&m, 0xffffffffu, 4), mp_uint(&m, 1);
    bad("array32 in an unknown key claims 4294967295 items", &m, true, ID,
        "truncated msgpack at offset 7");
    m.n = 0;
    mp_map(&m, 2), mp_str(&m, "id"), mp_uint(&m, ID), mp_str(&m, "x");
    mp_byte(&m, 0xde), mp_be(&m, 0xffff, 2), mp_uint(&m, 1);
    bad("map16 in an unknown key claims 65535 entries", &m, true, ID,
        "truncated msgpack at offset 7");
    m.n = 0;
    mp_map(&m, 2), mp_str(&m, "id"), mp_uint(&m, ID), mp_str(&m, "x");
    mp_byte(&m, 0xc9), mp_be(&m, 0xfffffff0u, 4), mp_byte(&m, 1), mp_raw(&m, "ab", 2);
    bad("ext32 claims 4 GiB", &m, true, ID, "truncated msgpack at offset 7");
    m.n = 0;
    mp_map(&m, 2), mp_str(&m, "id"), mp_uint(&m, ID), mp_str(&m, "deadline_ms");
    mp_byte(&m, 0xcb), mp_raw(&m, "\x40\x59\x00", 3);
    bad("float64 with 3 of its 8 bytes", &m, true, ID, "truncated msgpack at offset 17");
    m.n = 0;
    mp_map(&m, 1), mp_str(&m, "id"), mp_byte(&m, 0xcf), mp_raw(&m, "\x00\x01", 2);
    bad("uint64 id with 2 of its 8 bytes", &m, false, 0, "truncated msgpack at offset 4");
}

/* Sizes past each limit: the frame's (the connection ends), then each field's (it stays). */
static void add_size_cases(void)
{
    static uint8_t zeros[MAX_BODY + 64];
    struct mp m;
    static const uint32_t lens[] = {MAX_BODY + 1, 0x80000000u, 0xffffffffu};
    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        char name[64];
        m.n = 0;
        mp_map(&m, 1), mp_str(&m, "type"), mp_str(&m, "ping");
        struct bad_case *c = add_framed("", &m, lens[k]);
        snprintf(c->name, sizeof(c->name), "frame length %u", lens[k]);
        c->expect = E_CLOSE;
        set_error(c, "frame of %u bytes exceeds the limit of %u", lens[k], MAX_BODY);
        (void)name;
    }
    /* the largest frame there may be, valid: a ping with an unknown key holding the rest */
    m.n = 0;
    mp_map(&m, 2), mp_str(&m, "type"), mp_str(&m, "ping"), mp_str(&m, "x");
    size_t room = MAX_BODY - m.n - 3; /* bin16 header */
    mp_bin(&m, zeros, room);
    assert_int_equal(m.n, MAX_BODY);
    struct bad_case *c = add_framed("a frame of exactly the limit", &m, -1);
    c->expect = E_ACCEPTED;
    c->type = LOKI_MSG_PING;
    c->status = LOKI_STATUS_OK;
    /* the payload: one byte past max_payload_bytes, and the most there may be */
    infer_with(&m, F_DEADLINE, F_NONE, NULL, NULL);
    m.n -= 7; /* the payload was last: rewrite it */
    mp_bin(&m, zeros, MAX_PAYLOAD + 1);
    bad("payload of max_payload_bytes + 1", &m, true, ID,
        "field 'payload': %d bytes exceeds the limit of %d", MAX_PAYLOAD + 1, MAX_PAYLOAD);
    m.n -= MAX_PAYLOAD + 1 + 3;
    mp_bin(&m, zeros, MAX_PAYLOAD);
    c = add_framed("payload of max_payload_bytes", &m, -1);
    c->expect = E_ACCEPTED;
    c->type = LOKI_MSG_INFER;
    c->status = LOKI_STATUS_OK;
    c->has_id = true;
    c->id = ID;
    static const char long_name[] =
        "a-pipeline-name-of-sixty-four-bytes-which-is-one-too-many-xxxxx"
        "y";
    static char huge_name[2000];
    memset(huge_name, 'p', sizeof(huge_name) - 1);
    infer_with(&m, F_NONE, F_PIPELINE, mp_str, long_name);
    bad("pipeline of 64 bytes", &m, true, ID, "field 'pipeline': 64 bytes exceeds the limit of 63");
    infer_with(&m, F_NONE, F_PIPELINE, mp_str, huge_name);
    bad("pipeline of 1999 bytes", &m, true, ID,
        "field 'pipeline': 1999 bytes exceeds the limit of 63");
    m.n = 0;
    mp_map(&m, 3), mp_str(&m, "type"), mp_str(&m, "hello"), mp_str(&m, "version"), mp_uint(&m, 1);
    mp_str(&m, "name"), mp_str(&m, long_name);
    bad("hello name of 64 bytes", &m, false, 0, "field 'name': 64 bytes exceeds the limit of 63");
    m.n = 0;
    mp_map(&m, 3), mp_str(&m, "type"), mp_str(&m, "status"), mp_str(&m, "id"), mp_uint(&m, 3);
    mp_str(&m, "format"), mp_str(&m, "json-json-json-json-json-json-js");
    c = bad("status format of 32 bytes", &m, true, 3,
            "field 'format': 32 bytes exceeds the limit of 31");
    c->type = LOKI_MSG_STATUS; /* an error reply carries the request's type */
}

static void nest(struct mp *m, int levels, bool maps)
{
    for (int i = 0; i < levels; i++) {
        if (maps) {
            mp_map(m, 1);
            mp_str(m, "k");
        } else {
            mp_array(m, 1);
        }
    }
    mp_uint(m, 0);
}

static void add_nesting_cases(void)
{
    struct mp m;
    static const int levels[] = {16, 17, 40, 1000, 5000};
    for (int maps = 0; maps < 2; maps++)
        for (size_t k = 0; k < sizeof(levels) / sizeof(levels[0]); k++) {
            char name[80];
            m.n = 0;
            mp_map(&m, 2), mp_str(&m, "type"), mp_str(&m, "ping"), mp_str(&m, "x");
            nest(&m, levels[k], maps);
            if (m.n > MAX_BODY)
                continue;
            snprintf(name, sizeof(name), "%d nested %s in an unknown key", levels[k],
                     maps ? "maps" : "arrays");
            if (levels[k] <= 15) {
                struct bad_case *c = add_framed(name, &m, -1);
                c->expect = E_ACCEPTED;
                c->type = LOKI_MSG_PING;
                c->status = LOKI_STATUS_OK;
            } else {
                bad(name, &m, false, 0, "msgpack nested deeper than 16 levels");
            }
        }
    /* the deepest accepted: the map is level 1, the unknown key's value level 2, ... */
    m.n = 0;
    mp_map(&m, 2), mp_str(&m, "type"), mp_str(&m, "ping"), mp_str(&m, "x");
    nest(&m, 15, false);
    struct bad_case *c = add_framed("15 nested arrays in an unknown key", &m, -1);
    c->expect = E_ACCEPTED;
    c->type = LOKI_MSG_PING;
    c->status = LOKI_STATUS_OK;
    /* nesting where a known field is: its type is wrong, whatever is inside */
    m.n = 0;
    mp_map(&m, 1), mp_str(&m, "id");
    nest(&m, 5, false);
    bad("5 nested arrays as the id", &m, false, 0, "field 'id': expected uint, got array");
    m.n = 0;
    mp_map(&m, 1), mp_str(&m, "id");
    nest(&m, 17, true);
    bad("17 nested maps as the id", &m, false, 0, "msgpack nested deeper than 16 levels");
}

static void add_wrong_type_cases(void)
{
    struct mp m;
    static const struct {
        enum field f;
        const char *field, *want;
        const char *kinds[10];
    } t[] = {
        {F_TYPE, "type", "str", {"nil", "bool", "int", "float", "bin", "array", "map", "ext"}},
        {F_ID, "id", "uint", {"nil", "bool", "float", "str", "bin", "array", "map", "ext"}},
        {F_PIPELINE, "pipeline", "str", {"nil", "bool", "int", "float", "bin", "array", "map"}},
        {F_PAYLOAD, "payload", "bin", {"nil", "bool", "int", "str", "array", "map", "ext"}},
        {F_DEADLINE, "deadline_ms", "float", {"bool", "str", "bin", "array", "map", "ext"}},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        for (int k = 0; k < 10 && t[i].kinds[k]; k++) {
            char name[80];
            infer_with(&m, F_NONE, t[i].f, mp_kind, t[i].kinds[k]);
            snprintf(name, sizeof(name), "%s is a %s", t[i].field, t[i].kinds[k]);
            bad(name, &m, t[i].f != F_ID, ID, "field '%s': expected %s, got %s", t[i].field,
                t[i].want, t[i].kinds[k]);
        }
    infer_with(&m, F_NONE, F_ID, mp_kind, "negative int");
    bad("id is negative", &m, false, 0, "field 'id': expected uint, got negative int");
    /* deadline_ms: numbers that are not deadlines */
    static const double dl[] = {0, -5, -0.0};
    for (size_t k = 0; k < sizeof(dl) / sizeof(dl[0]); k++) {
        char name[64], arg[32];
        snprintf(arg, sizeof(arg), "%g", dl[k]);
        m.n = 0;
        infer_with(&m, F_DEADLINE, F_NONE, NULL, NULL);
        m.b[0]++; /* one more entry */
        mp_str(&m, "deadline_ms"), mp_f64(&m, dl[k]);
        snprintf(name, sizeof(name), "deadline_ms %s", arg);
        bad(name, &m, true, ID, "field 'deadline_ms': must be > 0, got %s", arg);
    }
    static const double nonfinite[] = {NAN, INFINITY, -INFINITY};
    for (size_t k = 0; k < 3; k++) {
        char name[64];
        infer_with(&m, F_DEADLINE, F_NONE, NULL, NULL);
        m.b[0]++;
        mp_str(&m, "deadline_ms"), mp_f64(&m, nonfinite[k]);
        snprintf(name, sizeof(name), "deadline_ms %g", nonfinite[k]);
        bad(name, &m, true, ID, "field 'deadline_ms': not a finite number");
    }
    infer_with(&m, F_DEADLINE, F_NONE, NULL, NULL);
    m.b[0]++;
    mp_str(&m, "deadline_ms"), mp_int(&m, -1);
    bad("deadline_ms -1 as an int", &m, true, ID, "field 'deadline_ms': must be > 0, got -1");
    /* priority: lokid refuses it by name, whatever its value; wrong types are bad requests */
    static const char *const prio_kinds[] = {"bool", "float", "str", "bin", "array"};
    for (size_t k = 0; k < sizeof(prio_kinds) / sizeof(prio_kinds[0]); k++) {
        char name[64];
        infer_with(&m, F_DEADLINE, F_NONE, NULL, NULL);
        m.b[0]++;
        mp_str(&m, "priority"), mp_kind(&m, prio_kinds[k]);
        snprintf(name, sizeof(name), "priority is a %s", prio_kinds[k]);
        bad(name, &m, true, ID, "field 'priority': expected int, got %s", prio_kinds[k]);
    }
    static const int64_t prio_out[] = {INT64_C(2147483648), INT64_C(-2147483649), INT64_MIN};
    for (size_t k = 0; k < 3; k++) {
        char name[64];
        infer_with(&m, F_DEADLINE, F_NONE, NULL, NULL);
        m.b[0]++;
        mp_str(&m, "priority");
        if (prio_out[k] > 0)
            mp_uint(&m, (uint64_t)prio_out[k]);
        else
            mp_int(&m, prio_out[k]);
        snprintf(name, sizeof(name), "priority %lld", (long long)prio_out[k]);
        bad(name, &m, true, ID, "field 'priority': out of the int32 range");
    }
    infer_with(&m, F_DEADLINE, F_NONE, NULL, NULL);
    m.b[0]++;
    mp_str(&m, "priority"), mp_uint(&m, 3);
    bad("priority 3 (not supported)", &m, true, ID,
        "field 'priority': not supported: queries are served by deadline (send deadline_ms to "
        "tighten one)");
    /* hello's version and name, status's format */
    static const struct {
        const char *name;
        int kind; /* 0: version str, 1: negative, 2: 2^32, 3: 0, 4: name int, 5: name bin */
        const char *error;
    } h[] = {
        {"hello version is a str", 0, "field 'version': expected uint, got str"},
        {"hello version is negative", 1, "field 'version': expected uint, got int"},
        {"hello version 2^32", 2, "field 'version': 4294967296 out of range"},
        {"hello version 0", 3, "field 'version': must be >= 1"},
        {"hello name is an int", 4, "field 'name': expected str, got int"},
        {"hello name is a bin", 5, "field 'name': expected str, got bin"},
    };
    for (size_t k = 0; k < sizeof(h) / sizeof(h[0]); k++) {
        m.n = 0;
        mp_map(&m, h[k].kind >= 4 ? 3 : 2), mp_str(&m, "type"), mp_str(&m, "hello");
        mp_str(&m, "version");
        if (h[k].kind == 0)
            mp_str(&m, "1");
        else if (h[k].kind == 1)
            mp_int(&m, -1);
        else if (h[k].kind == 2)
            mp_uint(&m, UINT64_C(4294967296));
        else if (h[k].kind == 3)
            mp_uint(&m, 0);
        else
            mp_uint(&m, 1);
        if (h[k].kind >= 4) {
            mp_str(&m, "name");
            mp_kind(&m, h[k].kind == 4 ? "int" : "bin");
        }
        bad(h[k].name, &m, false, 0, "%s", h[k].error);
    }
    m.n = 0;
    mp_map(&m, 3), mp_str(&m, "id"), mp_uint(&m, 5), mp_str(&m, "version"), mp_uint(&m, 0);
    mp_str(&m, "type"), mp_str(&m, "hello"); /* the type last: the error still carries it */
    struct bad_case *c =
        bad("hello with an id, version 0", &m, true, 5, "field 'version': must be >= 1");
    c->type = LOKI_MSG_HELLO;
    m.n = 0;
    mp_map(&m, 3), mp_str(&m, "type"), mp_str(&m, "status"), mp_str(&m, "id"), mp_uint(&m, 3);
    mp_str(&m, "format"), mp_uint(&m, 1);
    c = bad("status format is an int", &m, true, 3, "field 'format': expected str, got int");
    c->type = LOKI_MSG_STATUS;
    m.n = 0;
    mp_map(&m, 3), mp_str(&m, "type"), mp_str(&m, "status"), mp_str(&m, "id"), mp_uint(&m, 3);
    mp_str(&m, "format"), mp_str(&m, "xml");
    c = bad("status format xml", &m, true, 3,
            "field 'format': status reports are \"table\" or \"json\"");
    c->type = LOKI_MSG_STATUS;
    m.n = 0;
    mp_map(&m, 3), mp_str(&m, "type"), mp_str(&m, "metrics"), mp_str(&m, "id"), mp_uint(&m, 4);
    mp_str(&m, "format"), mp_str(&m, "json");
    c = bad("metrics format json", &m, true, 4,
            "field 'format': metrics reports are \"prometheus\"");
    c->type = LOKI_MSG_METRICS;
}

static void add_type_cases(void)
{
    struct mp m;
    static const struct {
        const char *type;
        size_t len;
        const char *shown;
    } t[] = {
        {"explode", 7, "explode"},
        {"", 0, ""},
        {"INFER", 5, "INFER"},
        {"infer\0", 6, "infer?"},
        {"ping\0x", 6, "ping?x"},
        {"error", 5, "error"},
        {"\x1b[2Jhello", 9, "?[2Jhello"},
        {"an-unknown-type-name-of-forty-bytes-long", 40, "an-unknown-type-name-of-forty-b"},
    };
    for (size_t k = 0; k < sizeof(t) / sizeof(t[0]); k++) {
        char name[96];
        m.n = 0;
        mp_map(&m, 2), mp_str(&m, "type"), mp_strn(&m, t[k].type, t[k].len);
        mp_str(&m, "id"), mp_uint(&m, 9);
        snprintf(name, sizeof(name), "type '%s'", t[k].shown);
        bad(name, &m, true, 9, "field 'type': unknown message type '%s'", t[k].shown);
    }
}

static void add_duplicate_cases(void)
{
    struct mp m;
    static const char *const dups[] = {"type", "id", "pipeline", "payload", "deadline_ms"};
    for (size_t k = 0; k < sizeof(dups) / sizeof(dups[0]); k++) {
        char name[64];
        infer_with(&m, F_NONE, F_NONE, NULL, NULL);
        m.b[0]++;
        mp_str(&m, dups[k]);
        if (k == 0)
            mp_str(&m, "infer");
        else if (k == 1)
            mp_uint(&m, ID + 1);
        else if (k == 2)
            mp_str(&m, "small");
        else if (k == 3)
            mp_bin(&m, "x", 1);
        else
            mp_f64(&m, 100);
        snprintf(name, sizeof(name), "%s twice", dups[k]);
        bad(name, &m, true, ID, "field '%s' appears twice", dups[k]);
    }
    infer_with(&m, F_DEADLINE, F_NONE, NULL, NULL);
    m.b[0] += 2;
    mp_str(&m, "priority"), mp_uint(&m, 1), mp_str(&m, "priority"), mp_uint(&m, 1);
    bad("priority twice", &m, true, ID, "field 'priority' appears twice");
    m.n = 0;
    mp_map(&m, 3), mp_str(&m, "type"), mp_str(&m, "hello"), mp_str(&m, "version"), mp_uint(&m, 1);
    mp_str(&m, "version"), mp_uint(&m, 1);
    bad("version twice", &m, false, 0, "field 'version' appears twice");
    m.n = 0;
    mp_map(&m, 4), mp_str(&m, "type"), mp_str(&m, "hello"), mp_str(&m, "version"), mp_uint(&m, 1);
    mp_str(&m, "name"), mp_str(&m, "a"), mp_str(&m, "name"), mp_str(&m, "b");
    bad("name twice", &m, false, 0, "field 'name' appears twice");
    m.n = 0;
    mp_map(&m, 3), mp_str(&m, "type"), mp_str(&m, "status"), mp_str(&m, "format"),
        mp_str(&m, "json");
    mp_str(&m, "format"), mp_str(&m, "json");
    bad("format twice", &m, false, 0, "field 'format' appears twice");
}

static void add_missing_and_nul_cases(void)
{
    struct mp m;
    infer_with(&m, F_ID, F_NONE, NULL, NULL);
    bad("infer without id", &m, false, 0, "missing field 'id'");
    infer_with(&m, F_PIPELINE, F_NONE, NULL, NULL);
    bad("infer without pipeline", &m, true, ID, "missing field 'pipeline'");
    infer_with(&m, F_PAYLOAD, F_NONE, NULL, NULL);
    bad("infer without payload", &m, true, ID, "missing field 'payload'");
    infer_with(&m, F_TYPE, F_ID, mp_kind, "str");
    bad("no type, id a str", &m, false, 0, "field 'id': expected uint, got str");
    m.n = 0;
    mp_map(&m, 0);
    bad("an empty map (an infer by default)", &m, false, 0, "missing field 'id'");
    m.n = 0;
    mp_map(&m, 1), mp_str(&m, "type"), mp_str(&m, "hello");
    bad("hello without version", &m, false, 0, "missing field 'version'");
    m.n = 0;
    mp_map(&m, 1), mp_str(&m, "type"), mp_str(&m, "cancel");
    bad("cancel without id", &m, false, 0, "missing field 'id' (the infer request to cancel)");
    m.n = 0;
    mp_map(&m, 2), mp_str(&m, "type"), mp_str(&m, "cancel"), mp_str(&m, "id"), mp_str(&m, "42");
    bad("cancel with a str id", &m, false, 0, "field 'id': expected uint, got str");
    m.n = 0;
    mp_map(&m, 2), mp_str(&m, "type"), mp_str(&m, "cancel"), mp_str(&m, "id"), mp_int(&m, -42);
    bad("cancel with a negative id", &m, false, 0, "field 'id': expected uint, got negative int");
    infer_with(&m, F_NONE, F_PIPELINE, mp_str, "");
    bad("pipeline empty", &m, true, ID, "field 'pipeline': empty");
    struct bad_case *c;
    infer_with(&m, F_NONE, F_PIPELINE, mp_str, "nope");
    c = bad("unknown pipeline", &m, true, ID, "unknown pipeline 'nope'");
    c->status = LOKI_STATUS_UNKNOWN_PIPELINE;
    /* a NUL in a string is a byte like any other: never cut there, and never echoed raw */
    static const struct {
        const char *s;
        size_t len;
        const char *shown;
    } nul[] = {
        {"small\0", 6, "small\\x00"},
        {"sm\0all", 6, "sm\\x00all"},
        {"\0small", 6, "\\x00small"},
        {"small\n\x1b[31m", 11, "small\\x0a\\x1b[31m"},
    };
    for (size_t k = 0; k < sizeof(nul) / sizeof(nul[0]); k++) {
        char name[64];
        m.n = 0;
        mp_map(&m, 4), mp_str(&m, "id"), mp_uint(&m, ID), mp_str(&m, "pipeline");
        mp_strn(&m, nul[k].s, nul[k].len), mp_str(&m, "payload"), mp_bin(&m, "x", 1);
        mp_str(&m, "type"), mp_str(&m, "infer");
        snprintf(name, sizeof(name), "pipeline '%s'", nul[k].shown);
        c = bad(name, &m, true, ID, "unknown pipeline '%s'", nul[k].shown);
        c->status = LOKI_STATUS_UNKNOWN_PIPELINE;
    }
    /* keys with a NUL are other keys: ignored, so the real one is missing */
    m.n = 0;
    mp_map(&m, 4), mp_strn(&m, "id\0", 3), mp_uint(&m, ID), mp_str(&m, "pipeline");
    mp_str(&m, "small"), mp_str(&m, "payload"), mp_bin(&m, "x", 1), mp_str(&m, "type");
    mp_str(&m, "infer");
    bad("key 'id\\0'", &m, false, 0, "missing field 'id'");
    m.n = 0;
    mp_map(&m, 4), mp_str(&m, "id"), mp_uint(&m, ID), mp_strn(&m, "pipeline\0", 9);
    mp_str(&m, "small"), mp_str(&m, "payload"), mp_bin(&m, "x", 1), mp_str(&m, "type");
    mp_str(&m, "infer");
    bad("key 'pipeline\\0'", &m, true, ID, "missing field 'pipeline'");
}

static void build_table(void)
{
    add_cut_cases();
    add_body_cases();
    add_invalid_byte_cases();
    add_lying_cases();
    add_size_cases();
    add_nesting_cases();
    add_wrong_type_cases();
    add_type_cases();
    add_duplicate_cases();
    add_missing_and_nul_cases();
}

/* ---- running it ------------------------------------------------------------------------------ */

static uint8_t rbuf[1 << 20];
static struct loki_reply rep;

static bool error_is(const struct bad_case *c, const struct loki_reply *r)
{
    return r->error.len == c->error_len && !memcmp(r->error.ptr, c->error, c->error_len);
}

static void show(const char *what, const struct bad_case *c, const struct loki_reply *r)
{
    fprintf(stderr, "case '%s': %s: got type %s, status %s, id %s%llu, error '%.*s'\n", c->name,
            what, loki_msg_type_name(r->type), loki_status_name(r->status),
            r->has_id ? "" : "none ", (unsigned long long)r->id, (int)r->error.len,
            (const char *)r->error.ptr);
    fprintf(stderr, "  wanted status %s, id %s%llu, error '%.*s'\n", loki_status_name(c->status),
            c->has_id ? "" : "none ", (unsigned long long)c->id, (int)c->error_len, c->error);
}

/* Run an E_REPLY or E_ACCEPTED case; 0 when it held. */
static int run_reply_case(const struct bad_case *c)
{
    int fd = adv_connect(lokid.sock);
    assert_true(fd >= 0);
    assert_int_equal(adv_send_all(fd, c->bytes, c->len), 0);
    int rc = adv_read_reply(fd, rbuf, sizeof(rbuf), &rep, 20000);
    if (rc) {
        fprintf(stderr, "case '%s': no reply (%d)\n", c->name, rc);
        close(fd);
        return -1;
    }
    bool ok = rep.status == c->status && rep.has_id == c->has_id && (!c->has_id || rep.id == c->id);
    if (c->expect == E_REPLY) {
        enum loki_msg_type want_type = c->type     ? c->type
                                       : c->has_id ? LOKI_MSG_INFER
                                                   : LOKI_MSG_NONE;
        ok = ok && error_is(c, &rep) && rep.type == want_type;
    } else {
        ok = ok && rep.type == c->type;
    }
    if (!ok) {
        show("wrong answer", c, &rep);
        close(fd);
        return -1;
    }
    /* the connection stays usable */
    struct loki_request q;
    loki_request_init(&q);
    q.type = LOKI_MSG_PING;
    q.has_id = true;
    q.id = 999;
    assert_int_equal(adv_send_request(fd, &q), 0);
    rc = adv_read_reply(fd, rbuf, sizeof(rbuf), &rep, 20000);
    close(fd);
    if (rc || rep.type != LOKI_MSG_PING || rep.id != 999 || rep.status != LOKI_STATUS_OK) {
        fprintf(stderr, "case '%s': the connection did not answer a ping afterwards\n", c->name);
        return -1;
    }
    return 0;
}

/* Read the error frame that ends @fd; 0 when it is @c's and the connection then ends. */
static int expect_closed(int fd, const struct bad_case *c, int timeout_ms)
{
    int rc = adv_read_reply(fd, rbuf, sizeof(rbuf), &rep, timeout_ms);
    if (rc) {
        fprintf(stderr, "case '%s': no error frame (%d)\n", c->name, rc);
        return -1;
    }
    if (rep.type != LOKI_MSG_NONE || rep.has_id || rep.status != LOKI_STATUS_BAD_REQUEST ||
        !error_is(c, &rep)) {
        show("wrong error frame", c, &rep);
        return -1;
    }
    if (!adv_at_eof(fd, 10000)) {
        fprintf(stderr, "case '%s': the connection stayed open\n", c->name);
        return -1;
    }
    return 0;
}

static void test_malformed_frames(void **state)
{
    (void)state;
    build_table();
    int n_reply = 0, n_close = 0, n_stall = 0, n_accepted = 0, n_unknown = 0, n_prio = 0;
    for (int i = 0; i < n_cases; i++) {
        n_reply += cases[i].expect == E_REPLY;
        n_close += cases[i].expect == E_CLOSE;
        n_stall += cases[i].expect == E_STALL;
        n_accepted += cases[i].expect == E_ACCEPTED;
        n_unknown += cases[i].status == LOKI_STATUS_UNKNOWN_PIPELINE;
        n_prio += !strcmp(cases[i].name, "priority 3 (not supported)");
    }
    fprintf(stderr,
            "%d cases: %d answered bad_request or unknown_pipeline, %d frame errors, %d frames "
            "that never complete, %d valid boundary cases\n",
            n_cases, n_reply, n_close, n_stall, n_accepted);
    assert_true(n_reply + n_close + n_stall >= 90);
    adv_lokid_start(&lokid, topology, "10", NULL);

    /* the frames that never complete go first: they wait out the frontend's clock together */
    int *stall_fd = calloc((size_t)n_cases, sizeof(int));
    assert_non_null(stall_fd);
    double stall_sent = adv_now_ms();
    for (int i = 0; i < n_cases; i++) {
        if (cases[i].expect != E_STALL)
            continue;
        stall_fd[i] = adv_connect(lokid.sock);
        assert_true(stall_fd[i] >= 0);
        assert_int_equal(adv_send_all(stall_fd[i], cases[i].bytes, cases[i].len), 0);
    }
    int failed = 0;
    for (int i = 0; i < n_cases; i++) {
        const struct bad_case *c = &cases[i];
        if (c->expect == E_REPLY || c->expect == E_ACCEPTED) {
            failed += run_reply_case(c) != 0;
        } else if (c->expect == E_CLOSE) {
            int fd = adv_connect(lokid.sock);
            assert_true(fd >= 0);
            (void)adv_send_all(fd, c->bytes, c->len); /* may be cut off: the error comes first */
            failed += expect_closed(fd, c, 20000) != 0;
            close(fd);
        }
    }
    for (int i = 0; i < n_cases; i++) {
        if (cases[i].expect != E_STALL)
            continue;
        int left = (int)(stall_sent + FRAME_TIMEOUT_MS + 30000 - adv_now_ms());
        failed += expect_closed(stall_fd[i], &cases[i], left > 0 ? left : 1) != 0;
        close(stall_fd[i]);
    }
    free(stall_fd);
    assert_int_equal(failed, 0);

    /* still up, and serving */
    assert_true(adv_lokid_alive(&lokid));
    struct loki_client *cl;
    assert_int_equal(loki_client_connect(lokid.sock, NULL, &cl), 0);
    struct loki_client_req req = {.pipeline = "small", .payload = "x", .payload_len = 1};
    struct loki_client_result res;
    assert_int_equal(loki_client_infer(cl, &req, &res), 0);
    assert_int_equal(res.status, LOKI_STATUS_OK);
    loki_client_result_fini(&res);
    loki_client_close(cl);
    /* and its counters agree with the table */
    char names[LOKI_PROTO_MAX_METRICS][40];
    double vals[LOKI_PROTO_MAX_METRICS], bad_requests = NAN, frame_errors = NAN,
                                         frame_timeouts = NAN, unknown = NAN;
    int n = adv_frontend_metrics(lokid.sock, names, vals, LOKI_PROTO_MAX_METRICS);
    for (int i = 0; i < n; i++) {
        if (!strcmp(names[i], "frontend_bad_requests"))
            bad_requests = vals[i];
        else if (!strcmp(names[i], "frontend_frame_errors"))
            frame_errors = vals[i];
        else if (!strcmp(names[i], "frontend_frame_timeouts"))
            frame_timeouts = vals[i];
        else if (!strcmp(names[i], "frontend_unknown_pipeline"))
            unknown = vals[i];
    }
    fprintf(stderr,
            "lokid: %.0f bad requests, %.0f frame errors, %.0f frame timeouts, %.0f unknown "
            "pipelines\n",
            bad_requests, frame_errors, frame_timeouts, unknown);
    /* "priority" is refused by lokid's router: an accepted query, answered bad_request */
    assert_true(bad_requests == n_reply - n_unknown - n_prio);
    assert_true(frame_errors == n_close);
    assert_true(frame_timeouts == n_stall);
    assert_true(unknown == n_unknown);
    int st = adv_lokid_stop(&lokid, SIGTERM, 30000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    for (int i = 0; i < n_cases; i++)
        free(cases[i].bytes);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate_setup_teardown(test_malformed_frames, NULL, adv_teardown, &lokid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
