/* SPDX-License-Identifier: Apache-2.0 */
/*
 * loki_wire: the one msgpack codec of the project, a bounded reader and an
 * appending writer over caller buffers. The client protocol (runtime/proto)
 * and the shared-memory batch descriptors (shm/batch.c) both use it. No
 * allocation, no I/O, no logging; decoded strings and bins point into the input.
 *
 * Why our own codec and not msgpack-c everywhere (bench/bench_codec, one run, 2026-12-05,
 * Intel Xeon KVM guest, 2 vCPUs at 2.6 GHz, shared; Debian 12, gcc 12.2 -O2, msgpack-c 4.0.0;
 * ns per message, median of 200 paired samples; ratio = msgpack-c time / ours, > 1: ours
 * faster; msgpack-c decodes at its best, msgpack_unpack() into one reused zone, then the
 * same fields are checked into the same structs):
 *
 *                                  encode, ns              decode, ns
 *   message (bytes)                ours  msgpack-c ratio   ours  msgpack-c ratio
 *   infer request (head 83)        44.4     49.7   1.11    55.2    109.7   1.95  (frame 53294)
 *   infer reply (370)              55.6     80.5   1.43    64.5    147.4   2.31
 *   batch descriptor, 8 q. (226)   49.3     46.1   0.93   215.1    476.1   2.24
 *   batch result, 8 q. (165)       54.6     52.9   0.96   236.8    672.5   2.85
 *
 * (msgpack_unpack_next(), the documented API, allocates a zone per message: 2.2-3.0x.)
 * Encoding is at parity; decoding, the side that meets untrusted bytes, is 2-3x faster
 * because it reads the fields where they lie instead of building an object tree first.
 * Speed alone would not have decided it: at ~0.1 us a message both are far below a
 * request's socket and ring costs. What decides it is what msgpack-c cannot give: bounded
 * reads with the exact offset of the fault ("truncated msgpack at offset 9"), which the
 * client protocol promises, and no allocation on the per-query path. msgpack-c everywhere
 * would still have needed a hand-written bounded reader for those, i.e. two codecs again.
 * msgpack-c stays only in tests and the benchmark, to cross-check our bytes.
 */
#ifndef LOKI_WIRE_H
#define LOKI_WIRE_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "loki/compiler.h"

/* Containers nested inside a skipped value: deeper ones are refused, not recursed into. */
#define LOKI_WIRE_MAX_DEPTH 16

/* What a value is. Every integer >= 0 reads as UINT, every negative one as INT. */
enum loki_wire_kind {
    LOKI_WIRE_NIL,
    LOKI_WIRE_BOOL,
    LOKI_WIRE_UINT,
    LOKI_WIRE_INT,
    LOKI_WIRE_FLOAT,
    LOKI_WIRE_STR,
    LOKI_WIRE_BIN,
    LOKI_WIRE_ARRAY,
    LOKI_WIRE_MAP,
    LOKI_WIRE_EXT,
};

/* One value header as read; only the fields of its kind are meaningful. */
struct loki_wire_val {
    enum loki_wire_kind kind;
    bool b;             /* BOOL */
    int8_t ext_type;    /* EXT */
    uint32_t len;       /* bytes of STR/BIN/EXT, entries of ARRAY/MAP */
    uint64_t u;         /* UINT */
    int64_t i;          /* INT (always < 0) */
    double f;           /* FLOAT (float32 widened) */
    const uint8_t *ptr; /* STR/BIN/EXT: the body, inside the reader's buffer */
};

/*
 * A cursor over one caller buffer. Every length and count read is checked
 * against the bytes that remain before it is used. The first error wins: it
 * sets @err (and @msg, when given) and later failures keep it. Fields are
 * public for reading; change them only through the functions below.
 */
struct loki_wire_reader {
    const uint8_t *start, *p, *end;
    int err;       /* first error, 0 while none */
    int malformed; /* the code reported for malformed input (LOKI_EPROTO, LOKI_ECORRUPT, ...) */
    char *msg;     /* NULL: no text wanted */
    size_t msglen;
};

/* An appending writer. Writes past @cap are dropped but still counted in @len. */
struct loki_wire_writer {
    uint8_t *buf;
    size_t cap, len;
};

/* ---- reader: any thread; a reader is used by one thread at a time -------------------------- */

/*
 * Start reading @len bytes at @buf (borrowed; must outlive every value read).
 * @malformed: the negative code that structural errors report (truncation, invalid byte,
 * lying counts, nesting, wrong types in the typed reads below).
 * @msg, @msglen: where the first error's text goes ("truncated msgpack at offset 9");
 * NULL/0 for none (formatting then costs nothing). Offsets count from @buf.
 */
void loki_wire_reader_init(struct loki_wire_reader *r, const void *buf, size_t len, int malformed,
                           char *msg, size_t msglen);

/* Bytes consumed so far (the offset of the next value). */
static inline size_t loki_wire_offset(const struct loki_wire_reader *r)
{
    return (size_t)(r->p - r->start);
}

/* Bytes left to read. */
static inline size_t loki_wire_left(const struct loki_wire_reader *r)
{
    return (size_t)(r->end - r->p);
}

/*
 * Record @err (negative) with a printf-style message unless an error is already recorded.
 * Returns the reader's first error (never 0). For decoders to report their own checks
 * through the same first-error-wins channel.
 */
int loki_wire_fail(struct loki_wire_reader *r, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Read one value header into @v. str/bin/ext bodies are consumed and sliced; container
 * entries are not (read or skip them next). A container's count is refused when the bytes
 * left could not hold that many entries, so no count can make a caller loop long.
 * Returns 0, or the reader's first error: @malformed with "truncated msgpack at offset N"
 * or "invalid msgpack byte 0xc1 at offset N" (N: where the value starts). After an error the
 * cursor is unspecified: stop decoding.
 */
static inline int loki_wire_read(struct loki_wire_reader *r, struct loki_wire_val *v);

/*
 * Skip the entries of container @v just read (nothing for other kinds). @depth is the
 * nesting level of @v itself; containers at LOKI_WIRE_MAX_DEPTH or deeper are refused with
 * "msgpack nested deeper than 16 levels". Returns 0 or the first error.
 */
int loki_wire_skip(struct loki_wire_reader *r, const struct loki_wire_val *v, int depth);

/* loki_wire_read() then loki_wire_skip(): one whole value; containers keep kind and count. */
static inline int loki_wire_read_value(struct loki_wire_reader *r, struct loki_wire_val *v,
                                       int depth);

/*
 * Typed reads: the value must be of the kind named, else "expected uint, got str at offset N".
 * read_uint: an integer in [0, @max]; read_int: an integer in [@min, @max] (else "integer
 * out of range at offset N"). read_array/read_map: a header whose entries need at least
 * @min_entry bytes each (1 when unknown) and fit in the bytes left. read_str/read_bin: the
 * body, sliced. All return 0 or the first error (@malformed unless a decoder set another).
 */
static inline int loki_wire_read_uint(struct loki_wire_reader *r, uint64_t max, uint64_t *out);
int loki_wire_read_int(struct loki_wire_reader *r, int64_t min, int64_t max, int64_t *out);
static inline int loki_wire_read_array(struct loki_wire_reader *r, size_t min_entry, uint32_t *n);
int loki_wire_read_map(struct loki_wire_reader *r, size_t min_entry, uint32_t *n);
int loki_wire_read_str(struct loki_wire_reader *r, const uint8_t **ptr, uint32_t *len);
int loki_wire_read_bin(struct loki_wire_reader *r, const uint8_t **ptr, uint32_t *len);

/*
 * The end of a top-level value: fails with "N trailing bytes after the @what" when bytes
 * remain. Returns the first error (earlier ones included) or 0.
 */
int loki_wire_finish(struct loki_wire_reader *r, const char *what);

/* "nil", "bool", "uint", "int", "float", "str", "bin", "array", "map", "ext". */
const char *loki_wire_kind_name(enum loki_wire_kind k);
/* As a user thinks of @v: any integer is an "int". */
const char *loki_wire_val_name(const struct loki_wire_val *v);
/* True when @v is a str equal to the C string @s. */
static inline bool loki_wire_val_is(const struct loki_wire_val *v, const char *s)
{
    size_t n = strlen(s); /* folded for a literal: this is why it is inline */
    return v->kind == LOKI_WIRE_STR && v->len == n && (n == 0 || memcmp(v->ptr, s, n) == 0);
}

/* ---- writer: any thread; every value in its shortest msgpack form except floats ------------- */

/* Start writing into @buf (@cap bytes, borrowed). */
static inline void loki_wire_writer_init(struct loki_wire_writer *w, void *buf, size_t cap)
{
    w->buf = buf;
    w->cap = cap;
    w->len = 0;
}

/*
 * Append: integers in their shortest form (msgpack-c's choice too, byte for byte), doubles
 * always as float64, containers and strings with the smallest header. put_str/put_bin copy
 * @n bytes of @s; the _head variants write only the header (the body follows with put_raw,
 * or outside the buffer).
 */
static inline void loki_wire_put_raw(struct loki_wire_writer *w, const void *s, size_t n);
static inline void loki_wire_put_nil(struct loki_wire_writer *w);
static inline void loki_wire_put_bool(struct loki_wire_writer *w, bool b);
static inline void loki_wire_put_uint(struct loki_wire_writer *w, uint64_t v);
static inline void loki_wire_put_int(struct loki_wire_writer *w, int64_t v);
static inline void loki_wire_put_double(struct loki_wire_writer *w, double d);
static inline void loki_wire_put_array(struct loki_wire_writer *w, uint32_t n);
static inline void loki_wire_put_map(struct loki_wire_writer *w, uint32_t n);
static inline void loki_wire_put_str_head(struct loki_wire_writer *w, uint32_t n);
static inline void loki_wire_put_str(struct loki_wire_writer *w, const void *s, uint32_t n);
static inline void loki_wire_put_cstr(struct loki_wire_writer *w, const char *s);
static inline void loki_wire_put_bin_head(struct loki_wire_writer *w, uint32_t n);
static inline void loki_wire_put_bin(struct loki_wire_writer *w, const void *s, uint32_t n);

/* Whether everything written so far fit in the buffer. */
static inline bool loki_wire_writer_fits(const struct loki_wire_writer *w)
{
    return w->len <= w->cap;
}

/* The bytes written: 0 and *@len set, or -ENOBUFS when they did not fit (*@len untouched). */
static inline int loki_wire_writer_finish(const struct loki_wire_writer *w, size_t *len)
{
    if (!loki_wire_writer_fits(w))
        return -ENOBUFS;
    *len = w->len;
    return 0;
}

/* ---- inline fast paths ----------------------------------------------------------------------
 * The common forms (fixint, fixstr, fixarray/fixmap, uint8..64) are decoded here so that the
 * compiler sees them at the call site; everything else, and every error, goes through the
 * out-of-line loki__wire_*_slow() functions, which start again from the same cursor. The
 * writer is all inline: its calls mostly have constant arguments that fold away.
 */

int loki__wire_read_slow(struct loki_wire_reader *r, struct loki_wire_val *v);
int loki__wire_read_uint_slow(struct loki_wire_reader *r, uint64_t max, uint64_t *out);
int loki__wire_read_container_slow(struct loki_wire_reader *r, enum loki_wire_kind k,
                                   size_t min_entry, uint32_t *n);

/* @n (1, 2, 4 or 8) bytes at @p, big-endian. */
static inline uint64_t loki__wire_be(const uint8_t *p, int n)
{
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    switch (n) {
    case 1:
        return p[0];
    case 2:
        memcpy(&u16, p, 2);
        return __builtin_bswap16(u16);
    case 4:
        memcpy(&u32, p, 4);
        return __builtin_bswap32(u32);
    default:
        memcpy(&u64, p, 8);
        return __builtin_bswap64(u64);
    }
}

static inline int loki_wire_read(struct loki_wire_reader *r, struct loki_wire_val *v)
{
    if (LOKI_LIKELY(r->p < r->end)) {
        uint8_t c = *r->p;
        size_t left = (size_t)(r->end - r->p) - 1;
        if (c <= 0x7f) {
            *v = (struct loki_wire_val){.kind = LOKI_WIRE_UINT, .u = c};
            r->p++;
            return 0;
        }
        if ((c & 0xe0) == 0xa0 && (size_t)(c & 0x1f) <= left) {
            *v = (struct loki_wire_val){.kind = LOKI_WIRE_STR, .len = c & 0x1fu, .ptr = r->p + 1};
            r->p += 1 + v->len;
            return 0;
        }
        /* fixmap 0x80-0x8f (two values per entry), fixarray 0x90-0x9f */
        if ((c & 0xe0) == 0x80 && (size_t)(c & 0x0f) * (c <= 0x8f ? 2 : 1) <= left) {
            *v = (struct loki_wire_val){.kind = c <= 0x8f ? LOKI_WIRE_MAP : LOKI_WIRE_ARRAY,
                                        .len = c & 0x0fu};
            r->p++;
            return 0;
        }
    }
    return loki__wire_read_slow(r, v);
}

static inline int loki_wire_read_value(struct loki_wire_reader *r, struct loki_wire_val *v,
                                       int depth)
{
    int err = loki_wire_read(r, v);
    if (err || (v->kind != LOKI_WIRE_ARRAY && v->kind != LOKI_WIRE_MAP))
        return err;
    return loki_wire_skip(r, v, depth);
}

static inline int loki_wire_read_uint(struct loki_wire_reader *r, uint64_t max, uint64_t *out)
{
    if (LOKI_LIKELY(r->p < r->end)) {
        uint8_t c = *r->p;
        if (c <= 0x7f && c <= max) {
            *out = c;
            r->p++;
            return 0;
        }
        if (c >= 0xcc && c <= 0xcf) {
            int n = 1 << (c - 0xcc);
            if ((size_t)(r->end - r->p) > (size_t)n) {
                uint64_t u = loki__wire_be(r->p + 1, n);
                if (u <= max) {
                    *out = u;
                    r->p += 1 + n;
                    return 0;
                }
            }
        }
    }
    return loki__wire_read_uint_slow(r, max, out);
}

static inline int loki_wire_read_array(struct loki_wire_reader *r, size_t min_entry, uint32_t *n)
{
    if (LOKI_LIKELY(r->p < r->end)) {
        uint8_t c = *r->p;
        size_t left = (size_t)(r->end - r->p) - 1;
        if ((c & 0xf0) == 0x90 && (size_t)(c & 0x0f) * (min_entry ? min_entry : 1) <= left) {
            *n = c & 0x0fu;
            r->p++;
            return 0;
        }
    }
    return loki__wire_read_container_slow(r, LOKI_WIRE_ARRAY, min_entry, n);
}

static inline void loki_wire_put_raw(struct loki_wire_writer *w, const void *s, size_t n)
{
    /* once one write is dropped, len > cap and every later one is dropped too */
    if (LOKI_LIKELY(w->len <= w->cap && n <= w->cap - w->len) && n)
        memcpy(w->buf + w->len, s, n);
    w->len += n;
}

/*
 * @tag then the low @n (1, 2, 4 or 8) bytes of @v, big-endian, stored straight into the
 * buffer: assembling them on the stack first and copying costs a store-forwarding stall
 * per value (it made the batch encoder 3x slower than msgpack-c's packer).
 */
static inline void loki__wire_put_be(struct loki_wire_writer *w, uint8_t tag, uint64_t v, int n)
{
    if (LOKI_LIKELY(w->len <= w->cap && (size_t)n + 1 <= w->cap - w->len)) {
        uint8_t *d = w->buf + w->len;
        uint16_t u16;
        uint32_t u32;
        uint64_t u64;
        d[0] = tag;
        switch (n) {
        case 1:
            d[1] = (uint8_t)v;
            break;
        case 2:
            u16 = __builtin_bswap16((uint16_t)v);
            memcpy(d + 1, &u16, 2);
            break;
        case 4:
            u32 = __builtin_bswap32((uint32_t)v);
            memcpy(d + 1, &u32, 4);
            break;
        default:
            u64 = __builtin_bswap64(v);
            memcpy(d + 1, &u64, 8);
            break;
        }
    }
    w->len += (size_t)n + 1;
}

static inline void loki__wire_put_byte(struct loki_wire_writer *w, uint8_t b)
{
    if (LOKI_LIKELY(w->len < w->cap))
        w->buf[w->len] = b;
    w->len++;
}

static inline void loki_wire_put_nil(struct loki_wire_writer *w)
{
    loki__wire_put_byte(w, 0xc0);
}

static inline void loki_wire_put_bool(struct loki_wire_writer *w, bool b)
{
    loki__wire_put_byte(w, b ? 0xc3 : 0xc2);
}

static inline void loki_wire_put_uint(struct loki_wire_writer *w, uint64_t v)
{
    if (v <= 0x7f)
        loki__wire_put_byte(w, (uint8_t)v);
    else if (v <= UINT8_MAX)
        loki__wire_put_be(w, 0xcc, v, 1);
    else if (v <= UINT16_MAX)
        loki__wire_put_be(w, 0xcd, v, 2);
    else if (v <= UINT32_MAX)
        loki__wire_put_be(w, 0xce, v, 4);
    else
        loki__wire_put_be(w, 0xcf, v, 8);
}

static inline void loki_wire_put_int(struct loki_wire_writer *w, int64_t v)
{
    if (v >= 0)
        loki_wire_put_uint(w, (uint64_t)v);
    else if (v >= -32)
        loki__wire_put_byte(w, (uint8_t)(int8_t)v);
    else if (v >= INT8_MIN)
        loki__wire_put_be(w, 0xd0, (uint64_t)v, 1);
    else if (v >= INT16_MIN)
        loki__wire_put_be(w, 0xd1, (uint64_t)v, 2);
    else if (v >= INT32_MIN)
        loki__wire_put_be(w, 0xd2, (uint64_t)v, 4);
    else
        loki__wire_put_be(w, 0xd3, (uint64_t)v, 8);
}

static inline void loki_wire_put_double(struct loki_wire_writer *w, double d)
{
    uint64_t bits;
    memcpy(&bits, &d, 8);
    loki__wire_put_be(w, 0xcb, bits, 8);
}

static inline void loki__wire_put_container(struct loki_wire_writer *w, bool map, uint32_t n)
{
    if (n <= 15)
        loki__wire_put_byte(w, (uint8_t)((map ? 0x80 : 0x90) | n));
    else if (n <= UINT16_MAX)
        loki__wire_put_be(w, map ? 0xde : 0xdc, n, 2);
    else
        loki__wire_put_be(w, map ? 0xdf : 0xdd, n, 4);
}

static inline void loki_wire_put_array(struct loki_wire_writer *w, uint32_t n)
{
    loki__wire_put_container(w, false, n);
}

static inline void loki_wire_put_map(struct loki_wire_writer *w, uint32_t n)
{
    loki__wire_put_container(w, true, n);
}

static inline void loki_wire_put_str_head(struct loki_wire_writer *w, uint32_t n)
{
    if (n <= 31)
        loki__wire_put_byte(w, (uint8_t)(0xa0 | n));
    else if (n <= UINT8_MAX)
        loki__wire_put_be(w, 0xd9, n, 1);
    else if (n <= UINT16_MAX)
        loki__wire_put_be(w, 0xda, n, 2);
    else
        loki__wire_put_be(w, 0xdb, n, 4);
}

static inline void loki_wire_put_str(struct loki_wire_writer *w, const void *s, uint32_t n)
{
    loki_wire_put_str_head(w, n);
    loki_wire_put_raw(w, s, n);
}

static inline void loki_wire_put_cstr(struct loki_wire_writer *w, const char *s)
{
    loki_wire_put_str(w, s, (uint32_t)strlen(s));
}

static inline void loki_wire_put_bin_head(struct loki_wire_writer *w, uint32_t n)
{
    if (n <= UINT8_MAX)
        loki__wire_put_be(w, 0xc4, n, 1);
    else if (n <= UINT16_MAX)
        loki__wire_put_be(w, 0xc5, n, 2);
    else
        loki__wire_put_be(w, 0xc6, n, 4);
}

static inline void loki_wire_put_bin(struct loki_wire_writer *w, const void *s, uint32_t n)
{
    loki_wire_put_bin_head(w, n);
    loki_wire_put_raw(w, s, n);
}

#endif
