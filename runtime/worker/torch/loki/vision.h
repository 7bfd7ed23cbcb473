/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Payloads of the vision backends, in plain C (no libtorch): the tensor format (a msgpack map
 * {dtype, shape, data}, read in place), JPEG/PNG decoding (libturbojpeg, libpng), bilinear
 * resizing and cropping of an image held either way, and the detector's box arithmetic
 * (decoding against anchors, greedy per-class NMS, top-k). The torchscript plugin
 * (torch_backend.cc) is built on it; docs/vision.md describes the formats. Nothing here
 * logs; errors are negative errnos with a message in a caller's buffer.
 */
#ifndef LOKI_VISION_H
#define LOKI_VISION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LOKI_TENSOR_MAX_DIMS 8

enum loki_dtype {
    LOKI_DTYPE_UINT8,
    LOKI_DTYPE_INT32,
    LOKI_DTYPE_INT64,
    LOKI_DTYPE_FLOAT32,
    LOKI_DTYPE_FLOAT64,
};

/* A tensor payload, parsed in place: @data points into the buffer given to the parser. */
struct loki_tensor {
    enum loki_dtype dtype;
    int ndim;
    int64_t shape[LOKI_TENSOR_MAX_DIMS];
    const void *data;
    size_t data_len; /* bytes: the product of @shape times the element size */
    bool has_box;    /* a crop: the box it was cut from, in its root image's pixels */
    float box[4];    /* x0, y0, x1, y1 */
};

/* Bytes per element of @d, 0 for an unknown value. */
size_t loki_dtype_size(enum loki_dtype d);
/* "uint8", "float32"...; loki_dtype_parse returns 0 or -EINVAL. */
const char *loki_dtype_name(enum loki_dtype d);
int loki_dtype_parse(const char *s, enum loki_dtype *out);

/*
 * Parse a tensor payload: a msgpack map with "dtype" (str), "shape" (array of non-negative
 * ints) and "data" (bin, exactly the bytes the shape implies), and optionally "box" (array of
 * 4 numbers); other keys are skipped. Borrows @buf: @t->data points into it. Returns 0 or
 * -EINVAL with a message in @err.
 */
int loki_tensor_parse(const void *buf, size_t len, struct loki_tensor *t, char *err, size_t errlen);

/* Bytes the header of a tensor of @dtype and @ndim dimensions takes (with a box if @box): the
 * data follow it directly, at a multiple of 16 bytes from the header's start (a "pad" entry
 * of spaces sees to it), so data written at an aligned address are aligned. */
size_t loki_tensor_header_len(enum loki_dtype dtype, int ndim, bool box);
/* Write that header at @dst (loki_tensor_header_len bytes); @box may be NULL. Returns its
 * length. The "data" bin is last: the caller writes @data_len bytes right after it. */
size_t loki_tensor_write_header(void *dst, enum loki_dtype dtype, int ndim, const int64_t *shape,
                                size_t data_len, const float *box);

/* ---- images -------------------------------------------------------------------------------- */

enum loki_image_kind { LOKI_IMAGE_NONE, LOKI_IMAGE_JPEG, LOKI_IMAGE_PNG };

/* What @p starts with: a JPEG (FF D8 FF) or PNG signature, else NONE. */
enum loki_image_kind loki_image_sniff(const void *p, size_t len);

/* A decoder and its growing pixel buffer; create/destroy allocate. */
struct loki_image_decoder;
int loki_image_decoder_create(struct loki_image_decoder **out);
void loki_image_decoder_destroy(struct loki_image_decoder *d);

/*
 * Decode the JPEG or PNG at @p into 8-bit pixels, @channels (1: gray, 3: RGB) interleaved
 * (HWC), held by @d until its next decode. Returns 0 with *@pixels, *@w, *@h set, or -EINVAL
 * (not an image, corrupt, larger than @max_pixels) or -ENOMEM, with a message in @err.
 */
int loki_image_decode(struct loki_image_decoder *d, const void *p, size_t len, int channels,
                      uint64_t max_pixels, const uint8_t **pixels, int *w, int *h, char *err,
                      size_t errlen);

/* An image as the resizer reads it: element (c, y, x) is at data[c*sc + y*sy + x*sx], of
 * @dtype UINT8 or FLOAT32. HWC pixels have sc 1, sx C, sy W*C; a CHW tensor sc H*W, sy W,
 * sx 1. */
struct loki_image_view {
    const void *data;
    enum loki_dtype dtype;
    int c, h, w;
    ptrdiff_t sc, sy, sx;
};

/* How resized values are written: UINT8 (rounded, clamped) or FLOAT32, where a uint8 source
 * is first scaled by 1/255 and then every value becomes (v - mean[c]) / std[c]. */
struct loki_resize_out {
    enum loki_dtype dtype;
    const float *mean, *std; /* [c] each, or NULL: 0 and 1 (FLOAT32 only) */
};

/*
 * Resample the region (@x0, @y0)-(@x1, @y1) of @src (pixel edges, in @src's pixels; clipped
 * to the image) to @dh x @dw with bilinear interpolation (pixel centres, as PIL and
 * torch's align_corners=False do), written planar (CHW) at @dst.
 */
void loki_image_resize(const struct loki_image_view *src, float x0, float y0, float x1, float y1,
                       int dh, int dw, const struct loki_resize_out *how, void *dst);

/* ---- detections ---------------------------------------------------------------------------- */

struct loki_det {
    float box[4]; /* x0, y0, x1, y1 */
    float score;
    int cls;
};

/* SSD/Faster R-CNN box coding: @deltas (dx, dy, dw, dh) against @anchor (x0, y0, x1, y1)
 * with weights @wts (e.g. 10, 10, 5, 5) into @box. */
void loki_box_decode(const float *deltas, const float *anchor, const float *wts, float *box);

/* Intersection over union of two boxes. */
float loki_box_iou(const float *a, const float *b);

/*
 * Greedy non-maximum suppression, per class: sorts @d by score (highest first), drops every
 * box whose IoU with a kept box of the same class passes @iou, and keeps at most @max_keep,
 * moved to the front of @d. Returns how many were kept. @d is reordered in place; no
 * allocation.
 */
int loki_nms(struct loki_det *d, int n, float iou, int max_keep);

/* The indexes of the @k largest of @x[0..n) into @idx, largest first (k <= n). Returns k. */
int loki_topk(const float *x, int n, int k, int *idx);

#ifdef __cplusplus
}
#endif

#endif
