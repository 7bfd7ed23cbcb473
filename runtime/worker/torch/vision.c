/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The vision payload helpers of loki/vision.h. The tensor format is parsed by a small msgpack
 * reader of its own (the plugin links no Loki library and copies nothing: "data" is a pointer
 * into the query's payload). Images: JPEG through libturbojpeg (SIMD decoding straight to RGB
 * or gray into our buffer, with libjpeg-turbo's security fixes from Debian), PNG through
 * libpng's simplified API (libturbojpeg 2.1 reads no PNG). The resizer is plain bilinear,
 * one pass, any strides, so an HWC decode and a CHW tensor crop the same way.
 */
#include "loki/vision.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

static const char *const dtype_names[] = {
    [LOKI_DTYPE_UINT8] = "uint8",     [LOKI_DTYPE_INT32] = "int32",
    [LOKI_DTYPE_INT64] = "int64",     [LOKI_DTYPE_FLOAT32] = "float32",
    [LOKI_DTYPE_FLOAT64] = "float64",
};
static const size_t dtype_sizes[] = {1, 4, 8, 4, 8};

size_t loki_dtype_size(enum loki_dtype d)
{
    return (unsigned)d <= LOKI_DTYPE_FLOAT64 ? dtype_sizes[d] : 0;
}

const char *loki_dtype_name(enum loki_dtype d)
{
    return (unsigned)d <= LOKI_DTYPE_FLOAT64 ? dtype_names[d] : "?";
}

int loki_dtype_parse(const char *s, enum loki_dtype *out)
{
    for (int d = 0; d <= LOKI_DTYPE_FLOAT64; d++)
        if (!strcmp(s, dtype_names[d])) {
            *out = (enum loki_dtype)d;
            return 0;
        }
    return -EINVAL;
}

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

/* ---- a msgpack reader, just what the tensor format needs ------------------------------------ */

struct rd {
    const uint8_t *p, *end;
};

static bool need(struct rd *r, size_t n)
{
    return (size_t)(r->end - r->p) >= n;
}

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* The next value's type byte and, for containers and strings, its length. */
enum kind { K_BAD, K_INT, K_FLOAT, K_STR, K_BIN, K_ARRAY, K_MAP, K_OTHER };

struct val {
    enum kind k;
    int64_t i;           /* K_INT (uint64 above INT64_MAX: K_BAD) */
    double f;            /* K_FLOAT, K_INT */
    const uint8_t *data; /* K_STR, K_BIN */
    uint32_t n;          /* K_STR, K_BIN: bytes; K_ARRAY, K_MAP: entries */
};

static struct val next(struct rd *r)
{
    struct val v = {.k = K_BAD};
    if (!need(r, 1))
        return v;
    uint8_t b = *r->p++;
    int len = 0;
    if (b <= 0x7f) {
        v.k = K_INT, v.i = b;
    } else if (b >= 0xe0) {
        v.k = K_INT, v.i = (int8_t)b;
    } else if ((b & 0xf0) == 0x80) {
        v.k = K_MAP, v.n = b & 0x0f;
    } else if ((b & 0xf0) == 0x90) {
        v.k = K_ARRAY, v.n = b & 0x0f;
    } else if ((b & 0xe0) == 0xa0) {
        v.k = K_STR, v.n = b & 0x1f;
    } else {
        switch (b) {
        case 0xc0: /* nil */
        case 0xc2: /* false */
        case 0xc3: /* true */
            v.k = K_OTHER;
            return v;
        case 0xc4:
        case 0xc5:
        case 0xc6: /* bin 8/16/32 */
            len = 1 << (b - 0xc4);
            v.k = K_BIN;
            break;
        case 0xd9:
        case 0xda:
        case 0xdb: /* str 8/16/32 */
            len = 1 << (b - 0xd9);
            v.k = K_STR;
            break;
        case 0xdc:
        case 0xdd: /* array 16/32 */
            len = 2 << (b - 0xdc);
            v.k = K_ARRAY;
            break;
        case 0xde:
        case 0xdf: /* map 16/32 */
            len = 2 << (b - 0xde);
            v.k = K_MAP;
            break;
        case 0xcc:
        case 0xcd:
        case 0xce:
        case 0xcf: { /* uint 8..64 */
            int n = 1 << (b - 0xcc);
            if (!need(r, (size_t)n))
                return v;
            uint64_t u = be(r->p, n);
            r->p += n;
            if (u > INT64_MAX)
                return v;
            v.k = K_INT, v.i = (int64_t)u;
            v.f = (double)v.i;
            return v;
        }
        case 0xd0:
        case 0xd1:
        case 0xd2:
        case 0xd3: { /* int 8..64 */
            int n = 1 << (b - 0xd0);
            if (!need(r, (size_t)n))
                return v;
            uint64_t u = be(r->p, n);
            r->p += n;
            int sh = 64 - 8 * n;
            v.k = K_INT, v.i = (int64_t)(u << sh) >> sh;
            v.f = (double)v.i;
            return v;
        }
        case 0xca:
        case 0xcb: { /* float 32/64 */
            int n = b == 0xca ? 4 : 8;
            if (!need(r, (size_t)n))
                return v;
            uint64_t u = be(r->p, n);
            r->p += n;
            if (n == 4) {
                uint32_t w = (uint32_t)u;
                float x;
                memcpy(&x, &w, 4);
                v.f = x;
            } else {
                memcpy(&v.f, &u, 8);
            }
            v.k = K_FLOAT;
            return v;
        }
        case 0xd4:
        case 0xd5:
        case 0xd6:
        case 0xd7:
        case 0xd8: /* fixext */
            len = 0;
            v.n = 1 + (1u << (b - 0xd4)); /* type byte + data */
            v.k = K_OTHER;
            if (!need(r, v.n))
                return (struct val){.k = K_BAD};
            r->p += v.n;
            return v;
        case 0xc7:
        case 0xc8:
        case 0xc9: { /* ext 8/16/32 */
            int n = 1 << (b - 0xc7);
            if (!need(r, (size_t)n + 1))
                return v;
            uint64_t m = be(r->p, n) + 1;
            r->p += n;
            if (!need(r, m))
                return v;
            r->p += m;
            v.k = K_OTHER;
            return v;
        }
        default:
            return v;
        }
        if (!need(r, (size_t)len))
            return (struct val){.k = K_BAD};
        v.n = (uint32_t)be(r->p, len);
        r->p += len;
    }
    if (v.k == K_INT)
        v.f = (double)v.i;
    if (v.k == K_STR || v.k == K_BIN) {
        if (!need(r, v.n))
            return (struct val){.k = K_BAD};
        v.data = r->p;
        r->p += v.n;
    }
    return v;
}

/* Skip one value (containers with what they hold), at most @depth levels deep. */
static bool skip(struct rd *r, int depth)
{
    struct val v = next(r);
    if (v.k == K_BAD || depth <= 0)
        return false;
    if (v.k == K_ARRAY || v.k == K_MAP) {
        uint64_t m = (uint64_t)v.n * (v.k == K_MAP ? 2 : 1);
        for (uint64_t i = 0; i < m; i++)
            if (!skip(r, depth - 1))
                return false;
    }
    return true;
}

static bool key_is(const struct val *v, const char *s)
{
    return v->k == K_STR && v->n == strlen(s) && !memcmp(v->data, s, v->n);
}

int loki_tensor_parse(const void *buf, size_t len, struct loki_tensor *t, char *err, size_t errlen)
{
    struct rd r = {buf, (const uint8_t *)buf + len};
    memset(t, 0, sizeof(*t));
    struct val m = next(&r);
    if (m.k != K_MAP)
        return fail(err, errlen, "not a tensor: a msgpack map {dtype, shape, data} expected");
    bool have_dtype = false, have_shape = false, have_data = false;
    for (uint32_t k = 0; k < m.n; k++) {
        struct val key = next(&r);
        if (key.k != K_STR)
            return fail(err, errlen, "tensor: a key is not a string");
        if (key_is(&key, "dtype")) {
            struct val v = next(&r);
            char name[16];
            if (v.k != K_STR || v.n >= sizeof(name))
                return fail(err, errlen, "tensor: dtype is not a short string");
            memcpy(name, v.data, v.n);
            name[v.n] = 0;
            if (loki_dtype_parse(name, &t->dtype))
                return fail(err, errlen,
                            "tensor: dtype '%s' (uint8, int32, int64, float32, float64)", name);
            have_dtype = true;
        } else if (key_is(&key, "shape")) {
            struct val v = next(&r);
            if (v.k != K_ARRAY || v.n > LOKI_TENSOR_MAX_DIMS)
                return fail(err, errlen, "tensor: shape is not an array of at most %d ints",
                            LOKI_TENSOR_MAX_DIMS);
            t->ndim = (int)v.n;
            for (uint32_t i = 0; i < v.n; i++) {
                struct val d = next(&r);
                if (d.k != K_INT || d.i < 0 || d.i > (int64_t)1 << 40)
                    return fail(err, errlen, "tensor: shape[%u] is not a size", i);
                t->shape[i] = d.i;
            }
            have_shape = true;
        } else if (key_is(&key, "data")) {
            struct val v = next(&r);
            if (v.k != K_BIN)
                return fail(err, errlen, "tensor: data is not bin");
            t->data = v.data;
            t->data_len = v.n;
            have_data = true;
        } else if (key_is(&key, "box")) {
            struct val v = next(&r);
            if (v.k != K_ARRAY || v.n != 4)
                return fail(err, errlen, "tensor: box is not [x0, y0, x1, y1]");
            for (int i = 0; i < 4; i++) {
                struct val x = next(&r);
                if (x.k != K_INT && x.k != K_FLOAT)
                    return fail(err, errlen, "tensor: box[%d] is not a number", i);
                t->box[i] = (float)x.f;
            }
            t->has_box = true;
        } else if (!skip(&r, 16)) {
            return fail(err, errlen, "tensor: corrupt msgpack");
        }
    }
    if (!have_dtype || !have_shape || !have_data)
        return fail(err, errlen, "tensor: %s missing",
                    !have_dtype   ? "dtype"
                    : !have_shape ? "shape"
                                  : "data");
    uint64_t n = loki_dtype_size(t->dtype);
    for (int i = 0; i < t->ndim; i++) {
        n *= (uint64_t)t->shape[i];
        if (n > (uint64_t)1 << 40)
            return fail(err, errlen, "tensor: shape too large");
    }
    if (n != t->data_len)
        return fail(err, errlen, "tensor: data holds %zu bytes, its shape and dtype %llu",
                    t->data_len, (unsigned long long)n);
    return 0;
}

/* ---- the writer: a fixed encoding, so its length is known beforehand ----------------------- */

static uint8_t *put_str(uint8_t *p, const char *s)
{
    size_t n = strlen(s); /* short keys and dtype names: fixstr */
    *p++ = (uint8_t)(0xa0 | n);
    memcpy(p, s, n);
    return p + n;
}

static uint8_t *put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

/* Without the padding entry: fixmap; "dtype" and its name (fixstr); "shape" and a fixarray of
 * uint32; "box" and a fixarray of float32; "data" and a bin32 header. */
static size_t base_len(enum loki_dtype dtype, int ndim, bool box)
{
    return 1 + 6 + 1 + strlen(loki_dtype_name(dtype)) + 6 + 1 + 5 * (size_t)ndim +
           (box ? 4 + 1 + 5 * 4 : 0) + 5 + 5;
}

/* The "pad" entry's string: 0..15 bytes, so the data start 16-byte aligned. */
static size_t pad_len(enum loki_dtype dtype, int ndim, bool box)
{
    return (16 - (base_len(dtype, ndim, box) + 5) % 16) % 16;
}

size_t loki_tensor_header_len(enum loki_dtype dtype, int ndim, bool box)
{
    return base_len(dtype, ndim, box) + 5 + pad_len(dtype, ndim, box);
}

size_t loki_tensor_write_header(void *dst, enum loki_dtype dtype, int ndim, const int64_t *shape,
                                size_t data_len, const float *box)
{
    uint8_t *p = dst;
    size_t pad = pad_len(dtype, ndim, box != NULL);
    *p++ = (uint8_t)(0x80 | (box ? 5 : 4));
    p = put_str(p, "pad");
    *p++ = (uint8_t)(0xa0 | pad);
    memset(p, ' ', pad);
    p += pad;
    p = put_str(p, "dtype");
    p = put_str(p, loki_dtype_name(dtype));
    p = put_str(p, "shape");
    *p++ = (uint8_t)(0x90 | ndim);
    for (int i = 0; i < ndim; i++) {
        *p++ = 0xce;
        p = put_be(p, (uint64_t)shape[i], 4);
    }
    if (box) {
        p = put_str(p, "box");
        *p++ = 0x94;
        for (int i = 0; i < 4; i++) {
            uint32_t u;
            memcpy(&u, &box[i], 4);
            *p++ = 0xca;
            p = put_be(p, u, 4);
        }
    }
    p = put_str(p, "data");
    *p++ = 0xc6;
    p = put_be(p, data_len, 4);
    return (size_t)(p - (uint8_t *)dst);
}

/* ---- images -------------------------------------------------------------------------------- */

enum loki_image_kind loki_image_sniff(const void *p, size_t len)
{
    const uint8_t *b = p;
    if (len >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff)
        return LOKI_IMAGE_JPEG;
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len >= 8 && !memcmp(b, png_sig, 8))
        return LOKI_IMAGE_PNG;
    return LOKI_IMAGE_NONE;
}

struct loki_image_decoder {
    tjhandle tj;
    uint8_t *buf;
    size_t cap;
};

int loki_image_decoder_create(struct loki_image_decoder **out)
{
    struct loki_image_decoder *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->tj = tjInitDecompress();
    if (!d->tj) {
        free(d);
        return -ENOMEM;
    }
    *out = d;
    return 0;
}

void loki_image_decoder_destroy(struct loki_image_decoder *d)
{
    if (!d)
        return;
    tjDestroy(d->tj);
    free(d->buf);
    free(d);
}

/* Room for @n bytes in @d's buffer: grows (the first images of a size allocate, later ones
 * of that size or smaller do not). */
static int reserve(struct loki_image_decoder *d, size_t n)
{
    if (n <= d->cap)
        return 0;
    uint8_t *p = realloc(d->buf, n);
    if (!p)
        return -ENOMEM;
    d->buf = p;
    d->cap = n;
    return 0;
}

int loki_image_decode(struct loki_image_decoder *d, const void *p, size_t len, int channels,
                      uint64_t max_pixels, const uint8_t **pixels, int *w, int *h, char *err,
                      size_t errlen)
{
    if (channels != 1 && channels != 3)
        return fail(err, errlen, "images decode to 1 or 3 channels, not %d", channels);
    enum loki_image_kind kind = loki_image_sniff(p, len);
    if (kind == LOKI_IMAGE_JPEG) {
        int iw, ih, sub, cs;
        if (tjDecompressHeader3(d->tj, p, (unsigned long)len, &iw, &ih, &sub, &cs))
            return fail(err, errlen, "jpeg: %s", tjGetErrorStr2(d->tj));
        if (iw <= 0 || ih <= 0 || (uint64_t)iw * (uint64_t)ih > max_pixels)
            return fail(err, errlen, "jpeg: %dx%d pixels, at most %llu", iw, ih,
                        (unsigned long long)max_pixels);
        if (reserve(d, (size_t)iw * (size_t)ih * (size_t)channels))
            return -ENOMEM;
        if (tjDecompress2(d->tj, p, (unsigned long)len, d->buf, iw, 0, ih,
                          channels == 3 ? TJPF_RGB : TJPF_GRAY, 0) &&
            tjGetErrorCode(d->tj) == TJERR_FATAL) /* a warning (a truncated scan) still decodes */
            return fail(err, errlen, "jpeg: %s", tjGetErrorStr2(d->tj));
        *pixels = d->buf;
        *w = iw;
        *h = ih;
        return 0;
    }
    if (kind == LOKI_IMAGE_PNG) {
        png_image img;
        memset(&img, 0, sizeof(img));
        img.version = PNG_IMAGE_VERSION;
        if (!png_image_begin_read_from_memory(&img, p, len))
            return fail(err, errlen, "png: %s", img.message);
        if ((uint64_t)img.width * img.height > max_pixels) {
            png_image_free(&img);
            return fail(err, errlen, "png: %ux%u pixels, at most %llu", img.width, img.height,
                        (unsigned long long)max_pixels);
        }
        img.format = channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
        if (reserve(d, PNG_IMAGE_SIZE(img))) {
            png_image_free(&img);
            return -ENOMEM;
        }
        /* alpha, if any, is composed onto black */
        if (!png_image_finish_read(&img, NULL, d->buf, 0, NULL))
            return fail(err, errlen, "png: %s", img.message); /* it freed img */
        *pixels = d->buf;
        *w = (int)img.width;
        *h = (int)img.height;
        return 0;
    }
    return fail(err, errlen, "not a JPEG or PNG image");
}

/* One source row pair's taps, per output column: computed once per resize, not per pixel. */
#define MAX_DW 4096

static void write_px(const struct loki_resize_out *how, void *dst, size_t i, int c, float v,
                     float in_scale)
{
    if (how->dtype == LOKI_DTYPE_UINT8) {
        v = fmaxf(0.f, fminf(255.f, v + 0.5f));
        ((uint8_t *)dst)[i] = (uint8_t)v;
    } else {
        v *= in_scale;
        if (how->mean)
            v -= how->mean[c];
        if (how->std)
            v /= how->std[c];
        ((float *)dst)[i] = v;
    }
}

void loki_image_resize(const struct loki_image_view *src, float x0, float y0, float x1, float y1,
                       int dh, int dw, const struct loki_resize_out *how, void *dst)
{
    /* clip to the image; a region that is empty after that is one pixel */
    x0 = fmaxf(0.f, fminf(x0, (float)src->w - 1.f));
    y0 = fmaxf(0.f, fminf(y0, (float)src->h - 1.f));
    x1 = fminf((float)src->w, fmaxf(x1, x0 + 1.f));
    y1 = fminf((float)src->h, fmaxf(y1, y0 + 1.f));
    const float fx = (x1 - x0) / (float)dw, fy = (y1 - y0) / (float)dh;
    const float in_scale =
        src->dtype == LOKI_DTYPE_UINT8 && how->dtype == LOKI_DTYPE_FLOAT32 ? 1.f / 255.f : 1.f;
    const size_t plane = (size_t)dh * (size_t)dw;
    ptrdiff_t xo0[MAX_DW], xo1[MAX_DW]; /* element offsets of the two columns */
    float wxs[MAX_DW];
    if (dw > MAX_DW)
        dw = MAX_DW; /* callers limit crops to 4096 wide */
    for (int ox = 0; ox < dw; ox++) {
        float sx = x0 + ((float)ox + 0.5f) * fx - 0.5f;
        sx = fmaxf(0.f, fminf(sx, (float)src->w - 1.f));
        int ix = (int)sx;
        xo0[ox] = ix * src->sx;
        xo1[ox] = (ix + 1 < src->w ? ix + 1 : ix) * src->sx;
        wxs[ox] = sx - (float)ix;
    }
    for (int oy = 0; oy < dh; oy++) {
        float sy = y0 + ((float)oy + 0.5f) * fy - 0.5f;
        sy = fmaxf(0.f, fminf(sy, (float)src->h - 1.f));
        int iy = (int)sy;
        ptrdiff_t r0 = iy * src->sy, r1 = (iy + 1 < src->h ? iy + 1 : iy) * src->sy;
        float wy = sy - (float)iy;
        for (int c = 0; c < src->c; c++) {
            size_t o = (size_t)c * plane + (size_t)oy * (size_t)dw;
            ptrdiff_t co = c * src->sc;
            if (src->dtype == LOKI_DTYPE_UINT8) {
                const uint8_t *a = (const uint8_t *)src->data + co + r0;
                const uint8_t *b = (const uint8_t *)src->data + co + r1;
                for (int ox = 0; ox < dw; ox++) {
                    float wx = wxs[ox];
                    float top = (float)a[xo0[ox]] + ((float)a[xo1[ox]] - (float)a[xo0[ox]]) * wx;
                    float bot = (float)b[xo0[ox]] + ((float)b[xo1[ox]] - (float)b[xo0[ox]]) * wx;
                    write_px(how, dst, o + (size_t)ox, c, top + (bot - top) * wy, in_scale);
                }
            } else {
                const float *a = (const float *)src->data + co + r0;
                const float *b = (const float *)src->data + co + r1;
                for (int ox = 0; ox < dw; ox++) {
                    float wx = wxs[ox];
                    float top = a[xo0[ox]] + (a[xo1[ox]] - a[xo0[ox]]) * wx;
                    float bot = b[xo0[ox]] + (b[xo1[ox]] - b[xo0[ox]]) * wx;
                    write_px(how, dst, o + (size_t)ox, c, top + (bot - top) * wy, in_scale);
                }
            }
        }
    }
}

/* ---- detections ---------------------------------------------------------------------------- */

void loki_box_decode(const float *deltas, const float *anchor, const float *wts, float *box)
{
    static const float clip = 4.135166556742356f; /* log(1000 / 16), as torchvision */
    float w = anchor[2] - anchor[0], h = anchor[3] - anchor[1];
    float cx = anchor[0] + 0.5f * w, cy = anchor[1] + 0.5f * h;
    float dx = deltas[0] / wts[0], dy = deltas[1] / wts[1];
    float dw = fminf(deltas[2] / wts[2], clip), dh = fminf(deltas[3] / wts[3], clip);
    float pcx = dx * w + cx, pcy = dy * h + cy, pw = expf(dw) * w, ph = expf(dh) * h;
    box[0] = pcx - 0.5f * pw;
    box[1] = pcy - 0.5f * ph;
    box[2] = pcx + 0.5f * pw;
    box[3] = pcy + 0.5f * ph;
}

float loki_box_iou(const float *a, const float *b)
{
    float iw = fminf(a[2], b[2]) - fmaxf(a[0], b[0]);
    float ih = fminf(a[3], b[3]) - fmaxf(a[1], b[1]);
    if (iw <= 0.f || ih <= 0.f)
        return 0.f;
    float inter = iw * ih;
    float ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    return ua > 0.f ? inter / ua : 0.f;
}

static int by_score(const void *a, const void *b)
{
    float x = ((const struct loki_det *)a)->score, y = ((const struct loki_det *)b)->score;
    return x < y ? 1 : x > y ? -1 : 0;
}

int loki_nms(struct loki_det *d, int n, float iou, int max_keep)
{
    qsort(d, (size_t)n, sizeof(*d), by_score);
    int kept = 0;
    for (int i = 0; i < n && kept < max_keep; i++) {
        bool ok = true;
        for (int k = 0; k < kept && ok; k++)
            ok = d[k].cls != d[i].cls || loki_box_iou(d[k].box, d[i].box) <= iou;
        if (ok)
            d[kept++] = d[i];
    }
    return kept;
}

int loki_topk(const float *x, int n, int k, int *idx)
{
    if (k > n)
        k = n;
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            bool taken = false;
            for (int q = 0; q < j && !taken; q++)
                taken = idx[q] == i;
            if (!taken && (best < 0 || x[i] > x[best]))
                best = i;
        }
        idx[j] = best;
    }
    return k;
}
