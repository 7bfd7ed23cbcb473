/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The msgpack codec (loki/wire.h) on its own: every value form written byte for byte as
 * msgpack-c writes it and read back; msgpack-c's output read; and the bounds: truncation at
 * every byte offset with the exact offset in the message, lying lengths and counts, wrong
 * types, nesting, trailing bytes, first-error-wins, and a writer that never writes past its
 * capacity.
 */
#include <errno.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "loki/error.h"
#include "loki/wire.h"

#define MSG_MAX 128

struct sbuf_pk {
    msgpack_sbuffer sb;
    msgpack_packer pk;
};

static void sp_init(struct sbuf_pk *s)
{
    msgpack_sbuffer_init(&s->sb);
    msgpack_packer_init(&s->pk, &s->sb, msgpack_sbuffer_write);
}

static void sp_expect(struct sbuf_pk *s, const struct loki_wire_writer *w)
{
    assert_true(loki_wire_writer_fits(w));
    assert_int_equal(w->len, s->sb.size);
    assert_memory_equal(w->buf, s->sb.data, s->sb.size);
    msgpack_sbuffer_destroy(&s->sb);
}

/* Read one value of @buf/@len that must be all of it; returns the reader's error. */
static int read_one(const void *buf, size_t len, struct loki_wire_val *v, char *msg)
{
    struct loki_wire_reader r;
    loki_wire_reader_init(&r, buf, len, LOKI_EPROTO, msg, MSG_MAX);
    if (loki_wire_read_value(&r, v, 0) == 0)
        loki_wire_finish(&r, "value");
    return r.err;
}

static const uint64_t uints[] = {0,          1,          127,         128,        255,
                                 256,        65535,      65536,       UINT32_MAX, 1ull << 32,
                                 UINT64_MAX, 1ull << 63, 0x123456789a};
static const int64_t ints[] = {-1,
                               -31,
                               -32,
                               -33,
                               -127,
                               -128,
                               -129,
                               -32767,
                               -32768,
                               -32769,
                               INT32_MIN + 1,
                               INT32_MIN,
                               -(1ll << 31) - 1,
                               INT64_MIN,
                               INT64_MIN + 1};

static void test_integers(void **st)
{
    static uint8_t buf[16];
    char msg[MSG_MAX];
    for (size_t i = 0; i < sizeof(uints) / sizeof(uints[0]); i++) {
        struct sbuf_pk s;
        struct loki_wire_writer w;
        struct loki_wire_val v;
        sp_init(&s);
        msgpack_pack_uint64(&s.pk, uints[i]);
        loki_wire_writer_init(&w, buf, sizeof(buf));
        loki_wire_put_uint(&w, uints[i]);
        sp_expect(&s, &w);
        assert_int_equal(read_one(buf, w.len, &v, msg), 0);
        assert_int_equal(v.kind, LOKI_WIRE_UINT);
        assert_true(v.u == uints[i]);
        /* the signed writer picks the same bytes for a non-negative value */
        if (uints[i] <= INT64_MAX) {
            struct loki_wire_writer w2;
            uint8_t b2[16];
            loki_wire_writer_init(&w2, b2, sizeof(b2));
            loki_wire_put_int(&w2, (int64_t)uints[i]);
            assert_int_equal(w2.len, w.len);
            assert_memory_equal(b2, buf, w.len);
        }
    }
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        struct sbuf_pk s;
        struct loki_wire_writer w;
        struct loki_wire_val v;
        sp_init(&s);
        msgpack_pack_int64(&s.pk, ints[i]);
        loki_wire_writer_init(&w, buf, sizeof(buf));
        loki_wire_put_int(&w, ints[i]);
        sp_expect(&s, &w);
        assert_int_equal(read_one(buf, w.len, &v, msg), 0);
        assert_int_equal(v.kind, LOKI_WIRE_INT);
        assert_true(v.i == ints[i]);
    }
    /* a signed tag carrying a non-negative value reads as a uint */
    const uint8_t pos16[] = {0xd1, 0x01, 0x00};
    struct loki_wire_val v;
    assert_int_equal(read_one(pos16, sizeof(pos16), &v, msg), 0);
    assert_int_equal(v.kind, LOKI_WIRE_UINT);
    assert_int_equal(v.u, 256);
}

static void test_scalars(void **st)
{
    uint8_t buf[16];
    char msg[MSG_MAX];
    struct sbuf_pk s;
    struct loki_wire_writer w;
    struct loki_wire_val v;
    const double ds[] = {0.0, -0.0, 12.5, -1e300, 5e-324};
    for (size_t i = 0; i < sizeof(ds) / sizeof(ds[0]); i++) {
        sp_init(&s);
        msgpack_pack_double(&s.pk, ds[i]);
        loki_wire_writer_init(&w, buf, sizeof(buf));
        loki_wire_put_double(&w, ds[i]);
        sp_expect(&s, &w);
        assert_int_equal(read_one(buf, w.len, &v, msg), 0);
        assert_int_equal(v.kind, LOKI_WIRE_FLOAT);
        assert_memory_equal(&v.f, &ds[i], sizeof(double));
    }
    /* float32 is read (never written) */
    sp_init(&s);
    msgpack_pack_float(&s.pk, 1.5f);
    assert_int_equal(read_one(s.sb.data, s.sb.size, &v, msg), 0);
    assert_true(v.kind == LOKI_WIRE_FLOAT && v.f == 1.5);
    msgpack_sbuffer_destroy(&s.sb);
    sp_init(&s);
    msgpack_pack_nil(&s.pk);
    msgpack_pack_true(&s.pk);
    msgpack_pack_false(&s.pk);
    loki_wire_writer_init(&w, buf, sizeof(buf));
    loki_wire_put_nil(&w);
    loki_wire_put_bool(&w, true);
    loki_wire_put_bool(&w, false);
    sp_expect(&s, &w);
    struct loki_wire_reader r;
    loki_wire_reader_init(&r, buf, w.len, LOKI_EPROTO, NULL, 0);
    assert_int_equal(loki_wire_read(&r, &v), 0);
    assert_int_equal(v.kind, LOKI_WIRE_NIL);
    assert_int_equal(loki_wire_read(&r, &v), 0);
    assert_true(v.kind == LOKI_WIRE_BOOL && v.b);
    assert_int_equal(loki_wire_read(&r, &v), 0);
    assert_true(v.kind == LOKI_WIRE_BOOL && !v.b);
    assert_int_equal(loki_wire_finish(&r, "values"), 0);
}

/* str, bin and container headers at every size boundary; bodies sliced in place. */
static void test_lengths(void **st)
{
    static const uint32_t lens[] = {0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536, 70000};
    static uint8_t body[70000], buf[70016];
    char msg[MSG_MAX];
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (uint8_t)(i * 31);
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        uint32_t n = lens[i];
        for (int kind = 0; kind < 2; kind++) {
            struct sbuf_pk s;
            struct loki_wire_writer w;
            struct loki_wire_val v;
            sp_init(&s);
            loki_wire_writer_init(&w, buf, sizeof(buf));
            if (kind == 0) {
                msgpack_pack_str_with_body(&s.pk, body, n);
                loki_wire_put_str(&w, body, n);
            } else {
                msgpack_pack_bin_with_body(&s.pk, body, n);
                loki_wire_put_bin(&w, body, n);
            }
            sp_expect(&s, &w);
            assert_int_equal(read_one(buf, w.len, &v, msg), 0);
            assert_int_equal(v.kind, kind == 0 ? LOKI_WIRE_STR : LOKI_WIRE_BIN);
            assert_int_equal(v.len, n);
            assert_true(v.ptr == buf + w.len - n); /* zero copy */
            if (n)
                assert_memory_equal(v.ptr, body, n);
        }
        /* container headers: the entries follow as n nils (fixint 0 for maps) */
        for (int map = 0; map < 2; map++) {
            struct sbuf_pk s;
            struct loki_wire_writer w;
            sp_init(&s);
            loki_wire_writer_init(&w, buf, sizeof(buf));
            if (map)
                msgpack_pack_map(&s.pk, n);
            else
                msgpack_pack_array(&s.pk, n);
            if (map)
                loki_wire_put_map(&w, n);
            else
                loki_wire_put_array(&w, n);
            sp_expect(&s, &w);
            size_t hdr = w.len, entries = (size_t)n * (map ? 2 : 1);
            if (hdr + entries > sizeof(buf))
                continue;
            memset(buf + hdr, 0xc0, entries);
            struct loki_wire_reader r;
            uint32_t got;
            loki_wire_reader_init(&r, buf, hdr + entries, LOKI_EPROTO, msg, MSG_MAX);
            assert_int_equal(
                map ? loki_wire_read_map(&r, 1, &got) : loki_wire_read_array(&r, 1, &got), 0);
            assert_int_equal(got, n);
            assert_int_equal(loki_wire_offset(&r), hdr);
            /* one entry short: the count is refused before anything is read */
            loki_wire_reader_init(&r, buf, hdr + entries - (n > 0), LOKI_EPROTO, msg, MSG_MAX);
            struct loki_wire_val v;
            if (n) {
                assert_int_equal(loki_wire_read(&r, &v), LOKI_EPROTO);
                assert_string_equal(msg, "truncated msgpack at offset 0");
            }
        }
    }
}

static void test_cstr_and_heads(void **st)
{
    uint8_t buf[64];
    struct sbuf_pk s;
    struct loki_wire_writer w;
    sp_init(&s);
    msgpack_pack_str_with_body(&s.pk, "pipeline", 8);
    msgpack_pack_bin(&s.pk, 300);
    msgpack_pack_str(&s.pk, 40);
    loki_wire_writer_init(&w, buf, sizeof(buf));
    loki_wire_put_cstr(&w, "pipeline");
    loki_wire_put_bin_head(&w, 300);
    loki_wire_put_str_head(&w, 40);
    sp_expect(&s, &w);
}

/* msgpack-c's ext forms are read (the codec never writes them) and skipped. */
static void test_ext(void **st)
{
    static const size_t lens[] = {1, 2, 4, 8, 16, 3, 255, 256, 65536};
    static uint8_t body[65536];
    char msg[MSG_MAX];
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        struct sbuf_pk s;
        struct loki_wire_val v;
        sp_init(&s);
        msgpack_pack_ext_with_body(&s.pk, body, lens[i], -7);
        assert_int_equal(read_one(s.sb.data, s.sb.size, &v, msg), 0);
        assert_int_equal(v.kind, LOKI_WIRE_EXT);
        assert_int_equal(v.ext_type, -7);
        assert_int_equal(v.len, lens[i]);
        assert_true(v.ptr == (const uint8_t *)s.sb.data + s.sb.size - lens[i]);
        msgpack_sbuffer_destroy(&s.sb);
    }
}

/*
 * A flat array holding one value of every form. Cut at every byte: the reader reports the
 * exact offset of the value that was cut, or 0 when the array's count no longer fits.
 */
static void test_truncated_every_offset(void **st)
{
    static uint8_t buf[1024], big[300];
    size_t starts[32], ends[32];
    int n = 0;
    struct loki_wire_writer w;
    loki_wire_writer_init(&w, buf, sizeof(buf));
    loki_wire_put_array(&w, 24);
    size_t hdr = w.len;
#define ITEM(call)                                                                                 \
    do {                                                                                           \
        starts[n] = w.len;                                                                         \
        call;                                                                                      \
        ends[n++] = w.len;                                                                         \
    } while (0)
    ITEM(loki_wire_put_uint(&w, 5));
    ITEM(loki_wire_put_uint(&w, 200));
    ITEM(loki_wire_put_uint(&w, 60000));
    ITEM(loki_wire_put_uint(&w, 1u << 20));
    ITEM(loki_wire_put_uint(&w, 1ull << 40));
    ITEM(loki_wire_put_int(&w, -3));
    ITEM(loki_wire_put_int(&w, -100));
    ITEM(loki_wire_put_int(&w, -1000));
    ITEM(loki_wire_put_int(&w, -100000));
    ITEM(loki_wire_put_int(&w, -(1ll << 40)));
    ITEM(loki_wire_put_double(&w, 2.5));
    ITEM(loki_wire_put_nil(&w));
    ITEM(loki_wire_put_bool(&w, true));
    ITEM(loki_wire_put_str(&w, "abc", 3));
    ITEM(loki_wire_put_str(&w, big, 40));
    ITEM(loki_wire_put_str(&w, big, 256));
    ITEM(loki_wire_put_bin(&w, big, 0));
    ITEM(loki_wire_put_bin(&w, big, 9));
    ITEM(loki_wire_put_array(&w, 0));
    ITEM(loki_wire_put_map(&w, 0));
    ITEM(loki_wire_put_raw(&w, "\xd4\x01\x7f", 3));         /* fixext 1 */
    ITEM(loki_wire_put_raw(&w, "\xc7\x02\x05\x01\x02", 5)); /* ext 8 */
    ITEM(loki_wire_put_raw(&w, "\xca\x3f\xc0\x00\x00", 5)); /* float32 */
    ITEM(loki_wire_put_uint(&w, 0));
#undef ITEM
    assert_int_equal(n, 24);
    size_t full;
    assert_int_equal(loki_wire_writer_finish(&w, &full), 0);
    char msg[MSG_MAX], want[MSG_MAX];
    struct loki_wire_val v;
    assert_int_equal(read_one(buf, full, &v, msg), 0);
    for (size_t cut = 0; cut < full; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1); /* exact size: ASan sees any over-read */
        memcpy(copy, buf, cut);
        size_t off = 0;
        if (cut >= hdr && cut - hdr >= (size_t)n)
            for (int i = 0; i < n; i++)
                if (ends[i] > cut) {
                    off = starts[i];
                    break;
                }
        snprintf(want, sizeof(want), "truncated msgpack at offset %zu", off);
        assert_int_equal(read_one(copy, cut, &v, msg), LOKI_EPROTO);
        assert_string_equal(msg, want);
        free(copy);
    }
}

/* Lengths and counts that claim more than the buffer holds. */
static void test_lying_lengths(void **st)
{
    char msg[MSG_MAX];
    struct loki_wire_val v;
    static const struct {
        uint8_t b[8];
        size_t n;
    } lies[] = {
        {{0xdb, 0xff, 0xff, 0xff, 0xff, 'a'}, 6},        /* str32 of 4 GiB */
        {{0xc6, 0x80, 0x00, 0x00, 0x00}, 5},             /* bin32 of 2 GiB */
        {{0xc9, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00}, 7}, /* ext32 */
        {{0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0}, 6},       /* array32 */
        {{0xdf, 0x80, 0x00, 0x00, 0x00, 0xc0, 0xc0}, 7}, /* map32: 2^31 pairs, 2^32 entries */
        {{0xde, 0x00, 0x02, 0xc0, 0xc0, 0xc0}, 6},       /* map16: 2 pairs in 3 bytes */
        {{0xa5, 'a', 'b'}, 3},                           /* fixstr */
        {{0xd9, 0x03, 'a', 'b'}, 4},                     /* str8 */
        {{0xda, 0x01}, 2},                               /* str16 cut inside its length */
        {{0xd8, 0x01}, 2},                               /* fixext 16 */
        {{0xd4}, 1},                                     /* fixext 1 without its type */
    };
    for (size_t i = 0; i < sizeof(lies) / sizeof(lies[0]); i++) {
        assert_int_equal(read_one(lies[i].b, lies[i].n, &v, msg), LOKI_EPROTO);
        assert_string_equal(msg, "truncated msgpack at offset 0");
    }
    /* a caller's lower bound per entry: 3 entries of >= 4 bytes do not fit in 9 */
    const uint8_t arr[] = {0x93, 0x93, 1, 2, 3, 0x93, 1, 2, 3, 0};
    struct loki_wire_reader r;
    uint32_t cnt;
    loki_wire_reader_init(&r, arr, sizeof(arr), LOKI_ECORRUPT, msg, MSG_MAX);
    assert_int_equal(loki_wire_read_array(&r, 4, &cnt), LOKI_ECORRUPT);
    assert_string_equal(msg, "truncated msgpack at offset 0");
    loki_wire_reader_init(&r, arr, sizeof(arr), LOKI_ECORRUPT, msg, MSG_MAX);
    assert_int_equal(loki_wire_read_array(&r, 3, &cnt), 0);
    assert_int_equal(cnt, 3);
    /* the invalid byte, wherever it is */
    const uint8_t bad[] = {0x92, 0x01, 0xc1};
    assert_int_equal(read_one(bad, sizeof(bad), &v, msg), LOKI_EPROTO);
    assert_string_equal(msg, "invalid msgpack byte 0xc1 at offset 2");
}

static void test_wrong_types(void **st)
{
    char msg[MSG_MAX];
    struct loki_wire_reader r;
    uint64_t u;
    int64_t i;
    uint32_t n;
    const uint8_t *p;
    /* [ "x", -5, 300, 2^40, bin "", {} ] */
    const uint8_t doc[] = {0x96, 0xa1, 'x', 0xfb, 0xcd, 0x01, 0x2c, 0xcf, 0,   0,
                           1,    0,    0,   0,    0,    0,    0xc4, 0x00, 0x80};
    struct {
        int which;
        size_t skip; /* bytes to start at */
        const char *msg;
    } cases[] = {
        {0, 1, "expected uint, got str at offset 1"},
        {0, 3, "expected uint, got negative int at offset 3"},
        {1, 3, "integer out of range at offset 3"},  /* read_int in [0, 10] */
        {1, 4, "integer out of range at offset 4"},  /* 300 in [0, 10] */
        {0, 4, "integer out of range at offset 4"},  /* read_uint max 255 */
        {2, 1, "expected int, got str at offset 1"}, /* read_int */
        {3, 1, "expected bin, got str at offset 1"},
        {4, 16, "expected str, got bin at offset 16"},
        {5, 18, "expected array, got map at offset 18"},
        {6, 1, "expected map, got str at offset 1"},
        {6, 0, "expected map, got array at offset 0"},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        struct loki_wire_val v;
        loki_wire_reader_init(&r, doc, sizeof(doc), LOKI_ECORRUPT, msg, MSG_MAX);
        while (loki_wire_offset(&r) < cases[k].skip) /* headers only: lands on each value */
            assert_int_equal(loki_wire_read(&r, &v), 0);
        assert_int_equal(loki_wire_offset(&r), cases[k].skip);
        int err;
        switch (cases[k].which) {
        case 0:
            err = loki_wire_read_uint(&r, 255, &u);
            break;
        case 1:
        case 2:
            err = loki_wire_read_int(&r, 0, 10, &i);
            break;
        case 3:
            err = loki_wire_read_bin(&r, &p, &n);
            break;
        case 4:
            err = loki_wire_read_str(&r, &p, &n);
            break;
        case 5:
            err = loki_wire_read_array(&r, 1, &n);
            break;
        default:
            err = loki_wire_read_map(&r, 1, &n);
            break;
        }
        assert_int_equal(err, LOKI_ECORRUPT);
        assert_string_equal(msg, cases[k].msg);
    }
    /* and the right types, with their ranges */
    loki_wire_reader_init(&r, doc, sizeof(doc), LOKI_ECORRUPT, msg, MSG_MAX);
    assert_int_equal(loki_wire_read_array(&r, 1, &n), 0);
    assert_int_equal(n, 6);
    assert_int_equal(loki_wire_read_str(&r, &p, &n), 0);
    assert_true(n == 1 && p[0] == 'x');
    assert_int_equal(loki_wire_read_int(&r, -5, -5, &i), 0);
    assert_int_equal(i, -5);
    assert_int_equal(loki_wire_read_int(&r, INT64_MIN, 300, &i), 0);
    assert_int_equal(i, 300);
    assert_int_equal(loki_wire_read_uint(&r, 1ull << 40, &u), 0);
    assert_true(u == 1ull << 40);
    assert_int_equal(loki_wire_read_bin(&r, &p, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(loki_wire_read_map(&r, 2, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(loki_wire_finish(&r, "array"), 0);
    assert_string_equal(msg, "");
    /* an int64 above INT64_MAX is out of every read_int range */
    const uint8_t huge[] = {0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    loki_wire_reader_init(&r, huge, sizeof(huge), LOKI_EPROTO, msg, MSG_MAX);
    assert_int_equal(loki_wire_read_int(&r, INT64_MIN, INT64_MAX, &i), LOKI_EPROTO);
    assert_string_equal(msg, "integer out of range at offset 0");
    /*
     * Both ends of a read_int range hold for both signs (fuzz_wire found -1 read as in
     * [INT64_MIN, INT64_MIN] and 3 as in [5, 128]: corpus/wire/read_int_*).
     */
    static const struct {
        uint8_t byte; /* a fixint: 0x03 is 3, 0xff is -1 */
        int64_t min, max;
        bool ok;
    } ranges[] = {
        {0xff, INT64_MIN, INT64_MIN, false},
        {0xff, -5, -2, false},
        {0xff, -1, -1, true},
        {0xff, 0, 10, false},
        {0x03, 5, 128, false},
        {0x03, 3, 3, true},
        {0x03, -10, -1, false},
        {0x03, -10, 2, false},
        {0x03, -10, 10, true},
    };
    for (size_t k = 0; k < sizeof(ranges) / sizeof(ranges[0]); k++) {
        loki_wire_reader_init(&r, &ranges[k].byte, 1, LOKI_EPROTO, msg, MSG_MAX);
        i = 99;
        int err = loki_wire_read_int(&r, ranges[k].min, ranges[k].max, &i);
        if (ranges[k].ok) {
            assert_int_equal(err, 0);
            assert_int_equal(i, ranges[k].byte == 0xff ? -1 : 3);
        } else {
            assert_int_equal(err, LOKI_EPROTO);
            assert_string_equal(msg, "integer out of range at offset 0");
            assert_int_equal(i, 99);
        }
    }
}

static void test_nesting(void **st)
{
    uint8_t buf[64];
    char msg[MSG_MAX];
    struct loki_wire_val v;
    for (int levels = 1; levels <= 40; levels++) {
        size_t n = 0;
        n = 0;
        for (int k = 0; k < levels; k++) {
            if (k & 1) {
                buf[n++] = 0x81;
                buf[n++] = 0x01;
            } else {
                buf[n++] = 0x91;
            }
        }
        buf[n++] = 0xc0;
        int err = read_one(buf, n, &v, msg);
        if (levels <= LOKI_WIRE_MAX_DEPTH) {
            assert_int_equal(err, 0);
        } else {
            assert_int_equal(err, LOKI_EPROTO);
            assert_string_equal(msg, "msgpack nested deeper than 16 levels");
        }
    }
    /* depth counts from the caller's level */
    const uint8_t one[] = {0x91, 0xc0};
    struct loki_wire_reader r;
    loki_wire_reader_init(&r, one, sizeof(one), LOKI_EPROTO, msg, MSG_MAX);
    assert_int_equal(loki_wire_read_value(&r, &v, LOKI_WIRE_MAX_DEPTH - 1), 0);
    loki_wire_reader_init(&r, one, sizeof(one), LOKI_EPROTO, msg, MSG_MAX);
    assert_int_equal(loki_wire_read_value(&r, &v, LOKI_WIRE_MAX_DEPTH), LOKI_EPROTO);
    /* scalars are never too deep */
    loki_wire_reader_init(&r, one + 1, 1, LOKI_EPROTO, msg, MSG_MAX);
    assert_int_equal(loki_wire_read_value(&r, &v, 1000), 0);
}

static void test_first_error_wins(void **st)
{
    char msg[MSG_MAX];
    struct loki_wire_reader r;
    struct loki_wire_val v;
    const uint8_t doc[] = {0x01, 0x02, 0xc1};
    loki_wire_reader_init(&r, doc, sizeof(doc), LOKI_EPROTO, msg, MSG_MAX);
    assert_int_equal(loki_wire_read(&r, &v), 0);
    assert_int_equal(loki_wire_fail(&r, LOKI_ETOOBIG, "field '%s': too big", "x"), LOKI_ETOOBIG);
    /* reads go on after a decoder's own error; a later structural error keeps the first */
    assert_int_equal(loki_wire_read(&r, &v), 0);
    assert_int_equal(v.u, 2);
    assert_int_equal(loki_wire_read(&r, &v), LOKI_ETOOBIG);
    assert_int_equal(loki_wire_fail(&r, LOKI_EPROTO, "later"), LOKI_ETOOBIG);
    assert_int_equal(loki_wire_finish(&r, "map"), LOKI_ETOOBIG);
    assert_string_equal(msg, "field 'x': too big");
    /* trailing bytes; no text wanted: nothing formatted, same code */
    loki_wire_reader_init(&r, doc, 2, LOKI_EPROTO, msg, MSG_MAX);
    assert_int_equal(loki_wire_read(&r, &v), 0);
    assert_int_equal(loki_wire_finish(&r, "map"), LOKI_EPROTO);
    assert_string_equal(msg, "1 trailing bytes after the map");
    loki_wire_reader_init(&r, doc, sizeof(doc), LOKI_ECORRUPT, NULL, 0);
    assert_int_equal(loki_wire_read(&r, &v), 0);
    assert_int_equal(loki_wire_read(&r, &v), 0);
    assert_int_equal(loki_wire_read(&r, &v), LOKI_ECORRUPT);
    /* a short message buffer is cut, never overrun */
    char tiny[8];
    loki_wire_reader_init(&r, doc + 2, 1, LOKI_EPROTO, tiny, sizeof(tiny));
    assert_int_equal(loki_wire_read(&r, &v), LOKI_EPROTO);
    assert_string_equal(tiny, "invalid");
    /* empty input */
    loki_wire_reader_init(&r, doc, 0, LOKI_EPROTO, msg, MSG_MAX);
    assert_int_equal(loki_wire_read(&r, &v), LOKI_EPROTO);
    assert_string_equal(msg, "truncated msgpack at offset 0");
}

/* Every capacity short of the full size is -ENOBUFS, the size is still counted, and nothing
 * is written past the capacity. */
static void test_writer_bounds(void **st)
{
    uint8_t full[256], buf[256];
    struct loki_wire_writer w;
    size_t len;
    loki_wire_writer_init(&w, full, sizeof(full));
    loki_wire_put_map(&w, 3);
    loki_wire_put_cstr(&w, "type");
    loki_wire_put_cstr(&w, "infer");
    loki_wire_put_cstr(&w, "id");
    loki_wire_put_uint(&w, UINT64_MAX);
    loki_wire_put_cstr(&w, "payload");
    loki_wire_put_bin(&w, "0123456789", 10);
    assert_int_equal(loki_wire_writer_finish(&w, &len), 0);
    for (size_t cap = 0; cap < len; cap++) {
        memset(buf, 0xee, sizeof(buf));
        loki_wire_writer_init(&w, buf, cap);
        loki_wire_put_map(&w, 3);
        loki_wire_put_cstr(&w, "type");
        loki_wire_put_cstr(&w, "infer");
        loki_wire_put_cstr(&w, "id");
        loki_wire_put_uint(&w, UINT64_MAX);
        loki_wire_put_cstr(&w, "payload");
        loki_wire_put_bin(&w, "0123456789", 10);
        size_t got = 12345;
        assert_false(loki_wire_writer_fits(&w));
        assert_int_equal(loki_wire_writer_finish(&w, &got), -ENOBUFS);
        assert_int_equal(got, 12345);
        assert_int_equal(w.len, len);
        for (size_t k = cap; k < sizeof(buf); k++)
            assert_int_equal(buf[k], 0xee);
        /* what was written is a prefix of the full encoding */
        for (size_t k = 0; k < cap; k++)
            assert_true(buf[k] == 0xee || buf[k] == full[k]);
    }
}

static void test_names(void **st)
{
    struct loki_wire_val v = {.kind = LOKI_WIRE_UINT};
    assert_string_equal(loki_wire_kind_name(LOKI_WIRE_UINT), "uint");
    assert_string_equal(loki_wire_val_name(&v), "int");
    assert_string_equal(loki_wire_kind_name(LOKI_WIRE_EXT), "ext");
    assert_string_equal(loki_wire_kind_name((enum loki_wire_kind)42), "?");
    v.kind = LOKI_WIRE_STR;
    v.ptr = (const uint8_t *)"type";
    v.len = 4;
    assert_true(loki_wire_val_is(&v, "type"));
    assert_false(loki_wire_val_is(&v, "typ"));
    v.kind = LOKI_WIRE_BIN;
    assert_false(loki_wire_val_is(&v, "type"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_integers),      cmocka_unit_test(test_scalars),
        cmocka_unit_test(test_lengths),       cmocka_unit_test(test_cstr_and_heads),
        cmocka_unit_test(test_ext),           cmocka_unit_test(test_truncated_every_offset),
        cmocka_unit_test(test_lying_lengths), cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_nesting),       cmocka_unit_test(test_first_error_wins),
        cmocka_unit_test(test_writer_bounds), cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
