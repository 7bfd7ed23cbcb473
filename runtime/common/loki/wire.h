/* SPDX-License-Identifier: Apache-2.0 */
/*
 * loki_wire: the one msgpack codec of the project, a bounded reader and an
 * appending writer over caller buffers. The client protocol (runtime/proto)
 * and the shared-memory batch descriptors (shm/batch.c) both use it. No
 * allocation, no I/O, no logging; decoded strings and bins point into the input.
 *
 * BENCH_FIGURES
 */
#ifndef LOKI_WIRE_H
#define LOKI_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
int loki_wire_read(struct loki_wire_reader *r, struct loki_wire_val *v);

/*
 * Skip the entries of container @v just read (nothing for other kinds). @depth is the
 * nesting level of @v itself; containers at LOKI_WIRE_MAX_DEPTH or deeper are refused with
 * "msgpack nested deeper than 16 levels". Returns 0 or the first error.
 */
int loki_wire_skip(struct loki_wire_reader *r, const struct loki_wire_val *v, int depth);

/* loki_wire_read() then loki_wire_skip(): one whole value; containers keep kind and count. */
int loki_wire_read_value(struct loki_wire_reader *r, struct loki_wire_val *v, int depth);

/*
 * Typed reads: the value must be of the kind named, else "expected uint, got str at offset N".
 * read_uint: an integer in [0, @max]; read_int: an integer in [@min, @max] (else "integer
 * out of range at offset N"). read_array/read_map: a header whose entries need at least
 * @min_entry bytes each (1 when unknown) and fit in the bytes left. read_str/read_bin: the
 * body, sliced. All return 0 or the first error (@malformed unless a decoder set another).
 */
int loki_wire_read_uint(struct loki_wire_reader *r, uint64_t max, uint64_t *out);
int loki_wire_read_int(struct loki_wire_reader *r, int64_t min, int64_t max, int64_t *out);
int loki_wire_read_array(struct loki_wire_reader *r, size_t min_entry, uint32_t *n);
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
/* True when @v is a str (or bin) equal to the C string @s. */
bool loki_wire_val_is(const struct loki_wire_val *v, const char *s);

/* ---- writer: any thread; every value in its shortest msgpack form except floats ------------- */

/* Start writing into @buf (@cap bytes, borrowed). */
void loki_wire_writer_init(struct loki_wire_writer *w, void *buf, size_t cap);

/*
 * Append: integers in their shortest form (msgpack-c's choice too, byte for byte), doubles
 * always as float64, containers and strings with the smallest header. put_str/put_bin copy
 * @n bytes of @s; the _head variants write only the header (the body follows with put_raw,
 * or outside the buffer).
 */
void loki_wire_put_nil(struct loki_wire_writer *w);
void loki_wire_put_bool(struct loki_wire_writer *w, bool b);
void loki_wire_put_uint(struct loki_wire_writer *w, uint64_t v);
void loki_wire_put_int(struct loki_wire_writer *w, int64_t v);
void loki_wire_put_double(struct loki_wire_writer *w, double d);
void loki_wire_put_array(struct loki_wire_writer *w, uint32_t n);
void loki_wire_put_map(struct loki_wire_writer *w, uint32_t n);
void loki_wire_put_str_head(struct loki_wire_writer *w, uint32_t n);
void loki_wire_put_str(struct loki_wire_writer *w, const void *s, uint32_t n);
void loki_wire_put_cstr(struct loki_wire_writer *w, const char *s);
void loki_wire_put_bin_head(struct loki_wire_writer *w, uint32_t n);
void loki_wire_put_bin(struct loki_wire_writer *w, const void *s, uint32_t n);
void loki_wire_put_raw(struct loki_wire_writer *w, const void *s, size_t n);

/* Whether everything written so far fit in the buffer. */
static inline bool loki_wire_writer_fits(const struct loki_wire_writer *w)
{
    return w->len <= w->cap;
}

/* The bytes written: 0 and *@len set, or -ENOBUFS when they did not fit (*@len untouched). */
int loki_wire_writer_finish(const struct loki_wire_writer *w, size_t *len);

#endif
