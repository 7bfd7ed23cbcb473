/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared by the torchscript backend's tests: the tiny models (made by make_models.py at test
 * time, skipping with 77 when no Python with torch is there) and the test image, a 128x96
 * picture whose red 32x32 cells the tiny detector finds, each with its own green value, so a
 * crop's mean colour says which box it was cut from.
 */
#ifndef LOKI_TORCH_TEST_H
#define LOKI_TORCH_TEST_H

#include <png.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "harness.h"

#define IMG_W 128
#define IMG_H 96

/* The red cells (source pixels, 32x32 each) and their green values. */
static const struct {
    float box[4];
    int green;
} red_cells[] = {
    {{0, 0, 32, 32}, 60},
    {{32, 64, 64, 96}, 180},
};
#define N_RED ((int)(sizeof(red_cells) / sizeof(red_cells[0])))

/* The models' folder: made once per test binary by make_models.py with the Python named by
 * LOKI_TORCH_PYTHON (CMake found one that imports torch), else exit 77. */
static const char *models_dir(void)
{
    static char dir[512];
    if (dir[0])
        return dir;
    const char *py = getenv("LOKI_TORCH_PYTHON");
    if (!py || !*py) {
        fprintf(stderr, "no Python with torch (python3-torch): skipped\n");
        exit(77);
    }
    snprintf(dir, sizeof(dir), "%s", loki_test_tmp_path("models"));
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "'%s' '%s' '%s'", py, loki_test_src("tests/torch/make_models.py"),
             dir);
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) == 77) {
        fprintf(stderr, "make_models.py could not run: skipped\n");
        exit(77);
    }
    if (WEXITSTATUS(st) != 0) {
        fprintf(stderr, "make_models.py failed (%d)\n", WEXITSTATUS(st));
        exit(1);
    }
    return dir;
}

static const char *model(const char *name)
{
    static char p[4][600];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof(p[k]), "%s/%s", models_dir(), name);
    return p[k];
}

/* The test picture, RGB interleaved. */
static void picture(uint8_t *rgb)
{
    memset(rgb, 0, IMG_W * IMG_H * 3);
    for (int k = 0; k < N_RED; k++)
        for (int y = (int)red_cells[k].box[1]; y < (int)red_cells[k].box[3]; y++)
            for (int x = (int)red_cells[k].box[0]; x < (int)red_cells[k].box[2]; x++) {
                uint8_t *p = rgb + ((size_t)y * IMG_W + (size_t)x) * 3;
                p[0] = 255;
                p[1] = (uint8_t)red_cells[k].green;
            }
}

/* The picture as PNG or JPEG (quality 95, no chroma subsampling); malloc'ed. */
static uint8_t *encode_picture(bool jpeg, size_t *len)
{
    static uint8_t rgb[IMG_W * IMG_H * 3];
    picture(rgb);
    if (jpeg) {
        tjhandle tj = tjInitCompress();
        unsigned char *out = NULL;
        unsigned long n = 0;
        if (!tj || tjCompress2(tj, rgb, IMG_W, 0, IMG_H, TJPF_RGB, &out, &n, TJSAMP_444, 95, 0))
            return NULL;
        tjDestroy(tj);
        uint8_t *p = malloc(n);
        memcpy(p, out, n);
        tjFree(out);
        *len = n;
        return p;
    }
    png_image img;
    memset(&img, 0, sizeof(img));
    img.version = PNG_IMAGE_VERSION;
    img.width = IMG_W;
    img.height = IMG_H;
    img.format = PNG_FORMAT_RGB;
    png_alloc_size_t n = 0;
    if (!png_image_write_get_memory_size(img, n, 0, rgb, 0, NULL))
        return NULL;
    uint8_t *p = malloc(n);
    if (!png_image_write_to_memory(&img, p, &n, 0, rgb, 0, NULL))
        return NULL;
    *len = n;
    return p;
}

/* Which red cell @box is (within 1 pixel), or -1. */
static int cell_of(const float *box)
{
    for (int k = 0; k < N_RED; k++) {
        bool same = true;
        for (int j = 0; j < 4; j++)
            same = same && box[j] > red_cells[k].box[j] - 1 && box[j] < red_cells[k].box[j] + 1;
        if (same)
            return k;
    }
    return -1;
}

#endif
