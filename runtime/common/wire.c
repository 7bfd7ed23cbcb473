/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The out-of-line half of loki/wire.h (the choice and its figures are in that header): every
 * msgpack form, every error and its text, skipping, the typed reads. The header's inline
 * fast paths handle the common forms and come here for the rest. The reader never trusts a
 * length: each one is compared with the bytes left before it is used, a container count
 * larger than the bytes left could hold is refused before any loop runs, and skipping
 * recurses at most LOKI_WIRE_MAX_DEPTH levels, so no input makes it read out of bounds,
 * recurse deeply or spin.
 */
#include "loki/wire.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- reader -------------------------------------------------------------------------------- */

void loki_wire_reader_init(struct loki_wire_reader *r, const void *buf, size_t len, int malformed,
                           char *msg, size_t msglen)
{
    r->start = r->p = buf;
    r->end = r->start + len;
    r->err = 0;
    r->malformed = malformed;
    r->msg = msg;
    r->msglen = msglen;
    if (msg && msglen)
        msg[0] = 0;
}

int loki_wire_fail(struct loki_wire_reader *r, int err, const char *fmt, ...)
{
    if (r->err)
        return r->err;
    r->err = err;
    if (r->msg && r->msglen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->msg, r->msglen, fmt, ap);
        va_end(ap);
    }
    return r->err;
}

static bool need(const struct loki_wire_reader *r, size_t n)
{
    return (size_t)(r->end - r->p) >= n;
}

static int truncated(struct loki_wire_reader *r, size_t off)
{
    return loki_wire_fail(r, r->malformed, "truncated msgpack at offset %zu", off);
}

int loki__wire_read_slow(struct loki_wire_reader *r, struct loki_wire_val *v)
{
    size_t off = loki_wire_offset(r);
    if (!need(r, 1))
        return truncated(r, off);
    uint8_t c = *r->p++;
    int n; /* bytes of a length or scalar that follow the tag */
    memset(v, 0, sizeof(*v));
    if (c <= 0x7f) {
        v->kind = LOKI_WIRE_UINT;
        v->u = c;
        return 0;
    }
    if (c >= 0xe0) {
        v->kind = LOKI_WIRE_INT;
        v->i = (int8_t)c;
        return 0;
    }
    if (c <= 0x9f) { /* fixmap 0x80-0x8f, fixarray 0x90-0x9f */
        v->kind = c <= 0x8f ? LOKI_WIRE_MAP : LOKI_WIRE_ARRAY;
        v->len = c & 0x0f;
        goto count;
    }
    if (c <= 0xbf) { /* fixstr */
        v->kind = LOKI_WIRE_STR;
        v->len = c & 0x1f;
        goto body;
    }
    switch (c) {
    case 0xc0:
        v->kind = LOKI_WIRE_NIL;
        return 0;
    case 0xc2:
    case 0xc3:
        v->kind = LOKI_WIRE_BOOL;
        v->b = c == 0xc3;
        return 0;
    case 0xc4:
    case 0xc5:
    case 0xc6: /* bin 8/16/32 */
    case 0xd9:
    case 0xda:
    case 0xdb: /* str 8/16/32 */
        v->kind = c <= 0xc6 ? LOKI_WIRE_BIN : LOKI_WIRE_STR;
        n = 1 << (c <= 0xc6 ? c - 0xc4 : c - 0xd9);
        if (!need(r, (size_t)n))
            return truncated(r, off);
        v->len = (uint32_t)loki__wire_be(r->p, n);
        r->p += n;
        goto body;
    case 0xc7:
    case 0xc8:
    case 0xc9: /* ext 8/16/32: length, then the type byte */
        v->kind = LOKI_WIRE_EXT;
        n = 1 << (c - 0xc7);
        if (!need(r, (size_t)n + 1))
            return truncated(r, off);
        v->len = (uint32_t)loki__wire_be(r->p, n);
        v->ext_type = (int8_t)r->p[n];
        r->p += n + 1;
        goto body;
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8: /* fixext 1..16 */
        v->kind = LOKI_WIRE_EXT;
        if (!need(r, 1))
            return truncated(r, off);
        v->ext_type = (int8_t)*r->p++;
        v->len = 1u << (c - 0xd4);
        goto body;
    case 0xca:
    case 0xcb: {
        v->kind = LOKI_WIRE_FLOAT;
        n = c == 0xca ? 4 : 8;
        if (!need(r, (size_t)n))
            return truncated(r, off);
        uint64_t bits = loki__wire_be(r->p, n);
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
        v->kind = LOKI_WIRE_UINT;
        n = 1 << (c - 0xcc);
        if (!need(r, (size_t)n))
            return truncated(r, off);
        v->u = loki__wire_be(r->p, n);
        r->p += n;
        return 0;
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: {
        n = 1 << (c - 0xd0);
        if (!need(r, (size_t)n))
            return truncated(r, off);
        uint64_t raw = loki__wire_be(r->p, n);
        r->p += n;
        if (n < 8 && raw >> (8 * n - 1))
            raw |= ~0ull << (8 * n); /* sign-extend */
        int64_t s = (int64_t)raw;
        if (s >= 0) { /* a signed tag may carry a non-negative value: still a UINT */
            v->kind = LOKI_WIRE_UINT;
            v->u = (uint64_t)s;
        } else {
            v->kind = LOKI_WIRE_INT;
            v->i = s;
        }
        return 0;
    }
    case 0xdc:
    case 0xdd:
    case 0xde:
    case 0xdf:
        v->kind = c <= 0xdd ? LOKI_WIRE_ARRAY : LOKI_WIRE_MAP;
        n = c == 0xdc || c == 0xde ? 2 : 4;
        if (!need(r, (size_t)n))
            return truncated(r, off);
        v->len = (uint32_t)loki__wire_be(r->p, n);
        r->p += n;
        goto count;
    default: /* 0xc1: never used */
        return loki_wire_fail(r, r->malformed, "invalid msgpack byte 0x%02x at offset %zu", c, off);
    }
body:
    if (!need(r, v->len))
        return truncated(r, off);
    v->ptr = r->p;
    r->p += v->len;
    return 0;
count:
    /* every entry needs at least one byte: a count larger than what is left is a lie */
    if ((uint64_t)v->len * (v->kind == LOKI_WIRE_MAP ? 2 : 1) > (uint64_t)(r->end - r->p))
        return truncated(r, off);
    return 0;
}

int loki_wire_skip(struct loki_wire_reader *r, const struct loki_wire_val *v, int depth)
{
    if (v->kind != LOKI_WIRE_ARRAY && v->kind != LOKI_WIRE_MAP)
        return 0;
    if (depth >= LOKI_WIRE_MAX_DEPTH)
        return loki_wire_fail(r, r->malformed, "msgpack nested deeper than %d levels",
                              LOKI_WIRE_MAX_DEPTH);
    uint64_t n = (uint64_t)v->len * (v->kind == LOKI_WIRE_MAP ? 2 : 1);
    for (uint64_t k = 0; k < n; k++) {
        struct loki_wire_val sub;
        int err = loki_wire_read_value(r, &sub, depth + 1);
        if (err)
            return err;
    }
    return 0;
}

/* Read a header that must be of kind @k; its offset is what a type error names. */
static int read_kind(struct loki_wire_reader *r, enum loki_wire_kind k, struct loki_wire_val *v)
{
    size_t off = loki_wire_offset(r);
    int err = loki_wire_read(r, v);
    if (err)
        return err;
    if (v->kind == k)
        return 0;
    if (k == LOKI_WIRE_UINT && v->kind == LOKI_WIRE_INT)
        return loki_wire_fail(r, r->malformed, "expected uint, got negative int at offset %zu",
                              off);
    return loki_wire_fail(r, r->malformed, "expected %s, got %s at offset %zu",
                          loki_wire_kind_name(k), loki_wire_val_name(v), off);
}

int loki__wire_read_uint_slow(struct loki_wire_reader *r, uint64_t max, uint64_t *out)
{
    size_t off = loki_wire_offset(r);
    struct loki_wire_val v;
    int err = read_kind(r, LOKI_WIRE_UINT, &v);
    if (err)
        return err;
    if (v.u > max)
        return loki_wire_fail(r, r->malformed, "integer out of range at offset %zu", off);
    *out = v.u;
    return 0;
}

int loki_wire_read_int(struct loki_wire_reader *r, int64_t min, int64_t max, int64_t *out)
{
    size_t off = loki_wire_offset(r);
    struct loki_wire_val v;
    int err = loki_wire_read(r, &v);
    if (err)
        return err;
    if (v.kind != LOKI_WIRE_UINT && v.kind != LOKI_WIRE_INT)
        return loki_wire_fail(r, r->malformed, "expected int, got %s at offset %zu",
                              loki_wire_val_name(&v), off);
    if (v.kind == LOKI_WIRE_UINT
            ? max < 0 || v.u > (uint64_t)max || (min > 0 && v.u < (uint64_t)min)
            : v.i < min || v.i > max)
        return loki_wire_fail(r, r->malformed, "integer out of range at offset %zu", off);
    *out = v.kind == LOKI_WIRE_UINT ? (int64_t)v.u : v.i;
    return 0;
}

int loki__wire_read_container_slow(struct loki_wire_reader *r, enum loki_wire_kind k,
                                   size_t min_entry, uint32_t *n)
{
    size_t off = loki_wire_offset(r);
    struct loki_wire_val v;
    int err = read_kind(r, k, &v);
    if (err)
        return err;
    /* the header already checked one byte per entry; a caller may know better */
    if (min_entry > 1 && v.len > loki_wire_left(r) / min_entry)
        return truncated(r, off);
    *n = v.len;
    return 0;
}

int loki_wire_read_map(struct loki_wire_reader *r, size_t min_entry, uint32_t *n)
{
    return loki__wire_read_container_slow(r, LOKI_WIRE_MAP, min_entry, n);
}

static int read_body(struct loki_wire_reader *r, enum loki_wire_kind k, const uint8_t **ptr,
                     uint32_t *len)
{
    struct loki_wire_val v;
    int err = read_kind(r, k, &v);
    if (err)
        return err;
    *ptr = v.ptr;
    *len = v.len;
    return 0;
}

int loki_wire_read_str(struct loki_wire_reader *r, const uint8_t **ptr, uint32_t *len)
{
    return read_body(r, LOKI_WIRE_STR, ptr, len);
}

int loki_wire_read_bin(struct loki_wire_reader *r, const uint8_t **ptr, uint32_t *len)
{
    return read_body(r, LOKI_WIRE_BIN, ptr, len);
}

int loki_wire_finish(struct loki_wire_reader *r, const char *what)
{
    if (!r->err && r->p != r->end)
        loki_wire_fail(r, r->malformed, "%zu trailing bytes after the %s", loki_wire_left(r), what);
    return r->err;
}

static const char *const kind_names[] = {"nil", "bool", "uint",  "int", "float",
                                         "str", "bin",  "array", "map", "ext"};

const char *loki_wire_kind_name(enum loki_wire_kind k)
{
    return (unsigned)k < sizeof(kind_names) / sizeof(kind_names[0]) ? kind_names[k] : "?";
}

const char *loki_wire_val_name(const struct loki_wire_val *v)
{
    return v->kind == LOKI_WIRE_UINT ? "int" : loki_wire_kind_name(v->kind);
}
