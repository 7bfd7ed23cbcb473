/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The torchscript plugin in-process, loaded as a worker loads it (dlopen, loki_backend_v2_get)
 * and driven through a heap emitter: a detector on a PNG, a JPEG and a uint8 tensor finds
 * the picture's red cells and emits one crop per box for each child, of the child's input
 * size, cut from the box (its mean colour is the cell's); the raw-output detector decodes to
 * the same boxes; a classifier's top-k is JSON with labels; in one batch, the query with the
 * wrong input shape fails alone; a missing, a corrupt or a misfit model fails init with a
 * line naming the file. Plus the payload helpers (tensor format, resize, NMS) on their own.
 */
#include "torch_test.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sys/wait.h>

#include "loki/backend.h"
#include "loki/vision.h"

static const struct loki_backend_v2 *be;

/* ---- a heap emitter: what a worker's output arena would hold --------------------------- */

#define MAXQ 16
#define MAXKIDS 64
struct blk {
    uint8_t *p;
    uint32_t len;
};
struct sink {
    struct loki_backend_out out;
    uint32_t max_bytes;
    struct blk output[MAXQ];
    int n_kids[MAXQ];
    struct blk kids[MAXQ][MAXKIDS];
    int kid_child[MAXQ][MAXKIDS];
    uint32_t used[MAXQ];
    bool failed[MAXQ];
    char msg[MAXQ][96];
};

static void *s_output(struct loki_backend_out *o, int i, uint32_t len)
{
    struct sink *s = (struct sink *)o;
    if (s->failed[i] || s->used[i] + len > s->max_bytes)
        return s->failed[i] = true, snprintf(s->msg[i], 96, "output too large"), NULL;
    free(s->output[i].p);
    s->output[i] = (struct blk){malloc(len ? len : 1), len};
    s->used[i] += len;
    return s->output[i].p;
}

static void *s_child(struct loki_backend_out *o, int i, int c, uint32_t len)
{
    struct sink *s = (struct sink *)o;
    if (s->failed[i] || s->used[i] + len > s->max_bytes || s->n_kids[i] == MAXKIDS)
        return s->failed[i] = true, snprintf(s->msg[i], 96, "output too large"), NULL;
    int k = s->n_kids[i]++;
    s->kids[i][k] = (struct blk){malloc(len ? len : 1), len};
    s->kid_child[i][k] = c;
    s->used[i] += len;
    return s->kids[i][k].p;
}

static void s_shrink(struct loki_backend_out *o, void *p, uint32_t len)
{
    (void)o, (void)p, (void)len;
}

static void s_fail(struct loki_backend_out *o, int i, int32_t st, const char *msg)
{
    struct sink *s = (struct sink *)o;
    s->failed[i] = true;
    snprintf(s->msg[i], sizeof(s->msg[i]), "%s", msg ? msg : "");
    (void)st;
}

static struct sink *sink_new(uint32_t max_bytes)
{
    struct sink *s = calloc(1, sizeof(*s));
    s->out = (struct loki_backend_out){s_output, s_child, s_shrink, s_fail};
    s->max_bytes = max_bytes;
    return s;
}

static void sink_free(struct sink *s)
{
    for (int i = 0; i < MAXQ; i++) {
        free(s->output[i].p);
        for (int k = 0; k < s->n_kids[i]; k++)
            free(s->kids[i][k].p);
    }
    free(s);
}

/* ---- configs ------------------------------------------------------------------------------ */

struct cfgbuf {
    struct loki_backend_config cfg;
    const char *keys[LOKI_MAX_ARGS], *vals[LOKI_MAX_ARGS];
    const char *children[LOKI_MAX_CHILDREN];
    double means[LOKI_MAX_CHILDREN];
    int dists[LOKI_MAX_CHILDREN];
    int batches[1];
    double lat[1];
};

/* A config with @kv (key, value, ..., NULL) as its args and @children as child tasks. */
static struct loki_backend_config *config(struct cfgbuf *b, int max_batch, const char **children,
                                          const char *const *kv)
{
    memset(b, 0, sizeof(*b));
    int n = 0;
    for (; kv[2 * n]; n++) {
        b->keys[n] = kv[2 * n];
        b->vals[n] = kv[2 * n + 1];
    }
    int nc = 0;
    for (; children && children[nc]; nc++)
        b->children[nc] = children[nc];
    b->batches[0] = max_batch;
    b->lat[0] = 1;
    b->cfg = (struct loki_backend_config){.pipeline = "p",
                                          .task = "t",
                                          .variant = "v",
                                          .max_batch = max_batch,
                                          .share = 1,
                                          .gpu = -1,
                                          .n_batches = 1,
                                          .batches = b->batches,
                                          .latency_ms = b->lat,
                                          .n_children = nc,
                                          .fanout_mean = b->means,
                                          .fanout_dist = b->dists,
                                          .n_args = n,
                                          .arg_keys = b->keys,
                                          .arg_values = b->vals,
                                          .max_output_bytes = 1 << 20,
                                          .child_tasks = b->children};
    return &b->cfg;
}

/* init with stderr captured into @log (static), returning init's result. */
static int init_logged(const struct loki_backend_config *cfg, void **state, const char **log)
{
    static char buf[8192];
    char path[600];
    snprintf(path, sizeof(path), "%s", loki_test_tmp_path("init.log"));
    fflush(stderr);
    int saved = dup(2);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0 && saved >= 0);
    dup2(fd, 2);
    close(fd);
    int rc = be->init(cfg, state);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    buf[n] = 0;
    if (f)
        fclose(f);
    fprintf(stderr, "%s", buf); /* still shown */
    *log = buf;
    return rc;
}

/* A uint8 CHW tensor payload of @c x @h x @w filled by @fill(c, y, x); malloc'ed. */
static uint8_t *tensor_u8(int c, int h, int w, int (*fill)(int, int, int), size_t *len)
{
    int64_t shape[3] = {c, h, w};
    size_t data = (size_t)c * (size_t)h * (size_t)w;
    size_t hdr = loki_tensor_header_len(LOKI_DTYPE_UINT8, 3, false);
    uint8_t *p = malloc(hdr + data);
    loki_tensor_write_header(p, LOKI_DTYPE_UINT8, 3, shape, data, NULL);
    for (int k = 0; k < c; k++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                p[hdr + ((size_t)k * (size_t)h + (size_t)y) * (size_t)w + (size_t)x] =
                    (uint8_t)fill(k, y, x);
    *len = hdr + data;
    return p;
}

static int fill_picture_downscaled(int c, int y, int x)
{
    /* the picture at the detector's 64x48: cells of 16 */
    static uint8_t rgb[IMG_W * IMG_H * 3];
    static bool made;
    if (!made)
        picture(rgb), made = true;
    return rgb[((size_t)(2 * y) * IMG_W + (size_t)(2 * x)) * 3 + (size_t)c];
}

static int fill_grey(int c, int y, int x)
{
    (void)y, (void)x;
    return 100 + 50 * c;
}

/* ---- the tests ------------------------------------------------------------------------------- */

static void test_tensor_format(void **state)
{
    (void)state;
    int64_t shape[2] = {2, 3};
    float box[4] = {1, 2, 3.5f, 4};
    float data[6] = {0, 1, 2, 3, 4, 5};
    uint8_t buf[256];
    size_t hl = loki_tensor_header_len(LOKI_DTYPE_FLOAT32, 2, true);
    assert_int_equal(loki_tensor_write_header(buf, LOKI_DTYPE_FLOAT32, 2, shape, 24, box), hl);
    memcpy(buf + hl, data, 24);
    struct loki_tensor t;
    char err[128];
    assert_int_equal(loki_tensor_parse(buf, hl + 24, &t, err, sizeof(err)), 0);
    assert_int_equal(t.dtype, LOKI_DTYPE_FLOAT32);
    assert_int_equal(t.ndim, 2);
    assert_int_equal(t.shape[0], 2);
    assert_int_equal(t.shape[1], 3);
    assert_ptr_equal(t.data, buf + hl); /* in place */
    assert_int_equal(hl % 16, 0);       /* data aligned as the header is */
    assert_true(t.has_box && t.box[2] == 3.5f);
    /* truncated data, or a shape that does not match it: refused */
    assert_int_equal(loki_tensor_parse(buf, hl + 23, &t, err, sizeof(err)), -EINVAL);
    shape[1] = 4;
    loki_tensor_write_header(buf, LOKI_DTYPE_FLOAT32, 2, shape, 24, NULL);
    assert_int_equal(loki_tensor_parse(buf,
                                       loki_tensor_header_len(LOKI_DTYPE_FLOAT32, 2, false) + 24,
                                       &t, err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, "data holds 24 bytes"));
    assert_int_equal(loki_tensor_parse("\x93\x01\x02\x03", 4, &t, err, sizeof(err)), -EINVAL);
}

static void test_resize_and_nms(void **state)
{
    (void)state;
    /* a 4x4 gray ramp halved: each output is the mean of a 2x2 block */
    uint8_t src[16];
    for (int i = 0; i < 16; i++)
        src[i] = (uint8_t)(i * 10);
    struct loki_image_view v = {src, LOKI_DTYPE_UINT8, 1, 4, 4, 16, 4, 1};
    uint8_t out[4];
    struct loki_resize_out u8 = {LOKI_DTYPE_UINT8, NULL, NULL};
    loki_image_resize(&v, 0, 0, 4, 4, 2, 2, &u8, out);
    assert_int_equal(out[0], 25); /* (0 + 10 + 40 + 50) / 4 */
    assert_int_equal(out[3], 125);
    /* a region: the right half's top row, to one pixel */
    loki_image_resize(&v, 2, 0, 4, 1, 1, 1, &u8, out);
    assert_int_equal(out[0], 25); /* between 20 and 30 */
    /* floats, normalised */
    float f[4], mean = 0.5f, sd = 0.25f;
    struct loki_resize_out fl = {LOKI_DTYPE_FLOAT32, &mean, &sd};
    loki_image_resize(&v, 0, 0, 4, 4, 2, 2, &fl, f);
    assert_float_equal(f[0], (25.f / 255.f - 0.5f) / 0.25f, 1e-5);
    /* NMS: per class; the best of overlapping boxes stays */
    struct loki_det d[4] = {{{0, 0, 10, 10}, 0.6f, 1},
                            {{1, 1, 11, 11}, 0.9f, 1},
                            {{1, 1, 11, 11}, 0.8f, 2},
                            {{20, 20, 30, 30}, 0.7f, 1}};
    assert_int_equal(loki_nms(d, 4, 0.5f, 10), 3);
    assert_float_equal(d[0].score, 0.9f, 0);
    assert_float_equal(d[1].score, 0.8f, 0);
    assert_float_equal(d[2].score, 0.7f, 0);
    float anchor[4] = {10, 10, 30, 50}, zero[4] = {0}, w[4] = {10, 10, 5, 5}, b[4];
    loki_box_decode(zero, anchor, w, b);
    assert_float_equal(b[0], 10, 1e-4);
    assert_float_equal(b[3], 50, 1e-4);
    float dx[4] = {10, 0, 0, 0}; /* one width to the right */
    loki_box_decode(dx, anchor, w, b);
    assert_float_equal(b[0], 30, 1e-4);
}

/* The boxes of a detector's JSON output; returns how many. */
static int boxes_of(const uint8_t *p, uint32_t len, float (*out)[4], int max)
{
    char text[8192];
    snprintf(text, sizeof(text), "%.*s", (int)len, (const char *)p);
    int n = 0;
    for (const char *s = text; n < max && (s = strstr(s, "\"box\":[")); s += 7, n++)
        assert_int_equal(
            sscanf(s + 7, "%f,%f,%f,%f", &out[n][0], &out[n][1], &out[n][2], &out[n][3]), 4);
    return n;
}

/* Check query @i's detections in @s: both red cells, a crop each for both children, crops of
 * 3x8x8 cut from their box. Crops of @tol colour error (JPEG). */
static void check_detections(struct sink *s, int i, float scale, int tol)
{
    if (s->failed[i])
        fprintf(stderr, "query %d failed: %s\n", i, s->msg[i]);
    assert_false(s->failed[i]);
    float boxes[8][4];
    int nb = boxes_of(s->output[i].p, s->output[i].len, boxes, 8);
    fprintf(stderr, "detector output: %.*s\n", (int)s->output[i].len, (char *)s->output[i].p);
    assert_int_equal(nb, N_RED);
    assert_int_equal(s->n_kids[i], 2 * N_RED); /* one crop per box for each of two children */
    bool seen[N_RED][2] = {{false}};
    for (int k = 0; k < s->n_kids[i]; k++) {
        struct loki_tensor t;
        char err[128];
        assert_int_equal(loki_tensor_parse(s->kids[i][k].p, s->kids[i][k].len, &t, err, 128), 0);
        assert_int_equal(t.dtype, LOKI_DTYPE_UINT8);
        assert_int_equal(t.ndim, 3);
        assert_int_equal(t.shape[0], 3);
        assert_int_equal(t.shape[1], 8);
        assert_int_equal(t.shape[2], 8);
        assert_true(t.has_box);
        float sb[4] = {t.box[0] / scale, t.box[1] / scale, t.box[2] / scale, t.box[3] / scale};
        int cell = cell_of(sb);
        assert_true(cell >= 0);
        int child = s->kid_child[i][k];
        assert_false(seen[cell][child]);
        seen[cell][child] = true;
        /* the crop is the cell: red, with the cell's green */
        const uint8_t *px = t.data;
        unsigned r = 0, g = 0;
        for (int j = 0; j < 64; j++)
            r += px[j], g += px[64 + j];
        assert_true(abs((int)(r / 64) - 255) <= tol);
        assert_true(abs((int)(g / 64) - red_cells[cell].green) <= tol);
    }
}

static void test_detect_crops(void **state)
{
    (void)state;
    const char *children[] = {"colour", "kind", NULL};
    const char *kv[] = {"model",           model("det.pt"), "shape", "3x48x64",
                        "postprocess",     "detect_crops",  "crop",  "8x8",
                        "score_threshold", "0.5",           NULL};
    struct cfgbuf cb;
    void *st;
    const char *log;
    assert_int_equal(init_logged(config(&cb, 4, children, kv), &st, &log), 0);
    size_t png_len, jpg_len, ten_len;
    uint8_t *png = encode_picture(false, &png_len);
    uint8_t *jpg = encode_picture(true, &jpg_len);
    uint8_t *ten = tensor_u8(3, 48, 64, fill_picture_downscaled, &ten_len);
    assert_non_null(png);
    assert_non_null(jpg);
    struct loki_backend_query q[3] = {
        {1, png, (uint32_t)png_len}, {2, jpg, (uint32_t)jpg_len}, {3, ten, (uint32_t)ten_len}};
    struct sink *s = sink_new(1 << 20);
    assert_int_equal(be->infer(st, q, 3, &s->out), 0);
    check_detections(s, 0, 1, 0);
    check_detections(s, 1, 1, 12);
    check_detections(s, 2, 0.5f, 0); /* a tensor at the model's size: boxes in its pixels */
    sink_free(s);
    /* over max_output_bytes: the query fails as "output too large", no partial output */
    s = sink_new(300);
    assert_int_equal(be->infer(st, q, 1, &s->out), 0);
    assert_true(s->failed[0]);
    sink_free(s);
    be->fini(st);

    /* the raw-output detector, decoded in the plugin: the same boxes; only red cells to
     * 'kind' (class 1), none to 'colour' (class 2 is not a class of this model) */
    const char *kv2[] = {
        "model", model("det_coded.pt"), "shape", "3x48x64", "postprocess", "detect_crops", "crop",
        "8x8",   "classes.colour",      "2",     NULL};
    assert_int_equal(init_logged(config(&cb, 4, children, kv2), &st, &log), 0);
    s = sink_new(1 << 20);
    assert_int_equal(be->infer(st, q, 1, &s->out), 0);
    float boxes[8][4];
    assert_false(s->failed[0]);
    assert_int_equal(boxes_of(s->output[0].p, s->output[0].len, boxes, 8), N_RED);
    for (int k = 0; k < N_RED; k++)
        assert_true(cell_of(boxes[k]) >= 0);
    assert_int_equal(s->n_kids[0], N_RED);
    for (int k = 0; k < N_RED; k++)
        assert_int_equal(s->kid_child[0][k], 1);
    sink_free(s);
    be->fini(st);
    free(png);
    free(jpg);
    free(ten);
}

static void test_classify_and_wrong_shape(void **state)
{
    (void)state;
    const char *kv[] = {
        "model",       model("lin.pt"), "shape", "3x8x8", "labels", model("labels.txt"),
        "postprocess", "classify_topk", "topk",  "4",     NULL};
    struct cfgbuf cb;
    void *st;
    const char *log;
    assert_int_equal(init_logged(config(&cb, 8, NULL, kv), &st, &log), 0);
    size_t good_len, bad_len;
    uint8_t *good = tensor_u8(3, 8, 8, fill_grey, &good_len); /* blue brightest */
    uint8_t *bad = tensor_u8(3, 9, 8, fill_grey, &bad_len);
    struct loki_backend_query q[5] = {{1, good, (uint32_t)good_len},
                                      {2, bad, (uint32_t)bad_len},
                                      {3, good, (uint32_t)good_len},
                                      {4, "junk", 4},
                                      {5, good, (uint32_t)good_len}};
    struct sink *s = sink_new(1 << 20);
    assert_int_equal(be->infer(st, q, 5, &s->out), 0);
    for (int i = 0; i < 5; i++) {
        fprintf(stderr, "query %d: %s %.*s\n", i, s->failed[i] ? s->msg[i] : "ok",
                s->failed[i] ? 0 : (int)s->output[i].len, (char *)s->output[i].p);
        if (i == 1 || i == 3)
            continue;
        assert_false(s->failed[i]);
        assert_non_null(
            strstr((char *)s->output[i].p, "{\"top\":[{\"class\":2,\"label\":\"blue\""));
        assert_non_null(strstr((char *)s->output[i].p, "\"label\":\"\\\"none\\\"\""));
    }
    assert_true(s->failed[1]);
    assert_non_null(strstr(s->msg[1], "input shape [3,9,8] is not the model's [3,8,8]"));
    assert_true(s->failed[3]);
    sink_free(s);
    be->fini(st);
    free(good);
    free(bad);
}

static void test_raw_output(void **state)
{
    (void)state;
    const char *kv[] = {"model", model("mean.pt"), "shape", "3x8x8", NULL};
    struct cfgbuf cb;
    void *st;
    const char *log;
    assert_int_equal(init_logged(config(&cb, 2, NULL, kv), &st, &log), 0);
    size_t len;
    uint8_t *good = tensor_u8(3, 8, 8, fill_grey, &len);
    struct loki_backend_query q = {1, good, (uint32_t)len};
    struct sink *s = sink_new(1 << 20);
    assert_int_equal(be->infer(st, &q, 1, &s->out), 0);
    struct loki_tensor t;
    char err[128];
    assert_int_equal(loki_tensor_parse(s->output[0].p, s->output[0].len, &t, err, 128), 0);
    assert_int_equal(t.dtype, LOKI_DTYPE_FLOAT32);
    assert_int_equal(t.ndim, 1);
    assert_int_equal(t.shape[0], 3);
    assert_int_equal((uintptr_t)t.data % 16, (uintptr_t)s->output[0].p % 16); /* padded */
    float m[3];
    memcpy(m, t.data, sizeof(m));
    assert_float_equal(m[0], 100.f / 255.f, 1e-5);
    assert_float_equal(m[2], 200.f / 255.f, 1e-5);
    sink_free(s);
    /* float64 data at an odd address (another encoder's): converted all the same */
    int64_t shape[3] = {3, 8, 8};
    size_t hl = loki_tensor_header_len(LOKI_DTYPE_FLOAT64, 3, false);
    uint8_t *odd = malloc(1 + hl + 192 * 8);
    loki_tensor_write_header(odd + 1, LOKI_DTYPE_FLOAT64, 3, shape, 192 * 8, NULL);
    for (int k = 0; k < 192; k++) {
        double v = k < 64 ? 0.25 : 0.5;
        memcpy(odd + 1 + hl + 8 * k, &v, 8);
    }
    q = (struct loki_backend_query){2, odd + 1, (uint32_t)(hl + 192 * 8)};
    s = sink_new(1 << 20);
    assert_int_equal(be->infer(st, &q, 1, &s->out), 0);
    assert_false(s->failed[0]);
    assert_int_equal(loki_tensor_parse(s->output[0].p, s->output[0].len, &t, err, 128), 0);
    memcpy(m, t.data, sizeof(m));
    assert_float_equal(m[0], 0.25f, 1e-6);
    assert_float_equal(m[1], 0.5f, 1e-6);
    sink_free(s);
    free(odd);
    be->fini(st);
    free(good);
}

static void test_bad_models(void **state)
{
    (void)state;
    struct cfgbuf cb;
    void *st = NULL;
    const char *log;
    const char *missing = model("no-such-model.pt");
    const char *kv[] = {"model", missing, "shape", "3x8x8", NULL};
    assert_true(init_logged(config(&cb, 2, NULL, kv), &st, &log) < 0);
    assert_non_null(strstr(log, missing));
    assert_non_null(strstr(log, "No such file"));
    const char *corrupt = model("corrupt.pt");
    const char *kv2[] = {"model", corrupt, "shape", "3x8x8", NULL};
    assert_true(init_logged(config(&cb, 2, NULL, kv2), &st, &log) < 0);
    assert_non_null(strstr(log, corrupt));
    assert_non_null(strstr(log, "not a TorchScript model"));
    /* a model that cannot take the input its args describe: refused at init */
    const char *det = model("det.pt");
    const char *kv3[] = {"model", det, "shape", "3x8x8", "postprocess", "classify_topk", NULL};
    assert_true(init_logged(config(&cb, 2, NULL, kv3), &st, &log) < 0);
    assert_non_null(strstr(log, det));
    /* junk arguments name themselves */
    const char *kv4[] = {"model", det, "shape", "3xx8", NULL};
    assert_int_equal(init_logged(config(&cb, 2, NULL, kv4), &st, &log), -EINVAL);
    assert_non_null(strstr(log, "args.shape"));
}

int main(void)
{
    models_dir(); /* 77 without torch */
    void *h = dlopen(loki_test_bin("lib/loki_torch_backend.so"), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    loki_backend_v2_get_fn get = (loki_backend_v2_get_fn)dlsym(h, "loki_backend_v2_get");
    if (!get)
        return 1;
    be = get();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tensor_format), cmocka_unit_test(test_resize_and_nms),
        cmocka_unit_test(test_detect_crops),  cmocka_unit_test(test_classify_and_wrong_shape),
        cmocka_unit_test(test_raw_output),    cmocka_unit_test(test_bad_models),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
