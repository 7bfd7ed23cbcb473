/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CUDA backend (see loki/cuda.h and docs/gpu.md). A variant becomes a
 * chain of dense layers, x <- tanh(W x), over an activation of D rows and
 * COLS columns per query, run by a shared-memory tiled SGEMM: real work whose
 * cost grows with the batch and whose speed depends on the SMs it gets, so
 * MPS shares and green contexts act on it as on a real model. How many layers
 * a batch of b runs is calibrated at init by bisection on the layer count
 * against cudaEvent-measured latency, so the instance runs as the profile
 * says (or, under LOKI_CUDA_WORK, with a fixed work that `loki profile`
 * measures). Buffers come from cudaMalloc once per instance; nothing is
 * allocated per batch.
 *
 *   init: device -> [green ctx] -> W (D x D), X, Y (D x max_batch*COLS) -> calibrate
 *   infer(n): layers(n) x { Y = tanh(W X); swap } -> event sync -> fan-out draws
 */
#include <cuda.h>
#include <cuda_runtime.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern "C" {
#include "loki/cuda.h"
}

#define D 1024   /* activation rows = weight matrix side */
#define COLS 128 /* activation columns per query */
#define TILE 16
#define MAX_LAYERS (1 << 20)
#define MAX_POINTS 16 /* profiled batch sizes (LOKI_MAX_BATCHES) */

/* Driver entry points for green contexts, found at run time so the worker
 * links no libcuda and runs on drivers without them. */
typedef CUresult (*pfn_get_res)(CUdevice, CUdevResource *, CUdevResourceType);
typedef CUresult (*pfn_split)(CUdevResource *, unsigned *, const CUdevResource *, CUdevResource *,
                              unsigned, unsigned);
typedef CUresult (*pfn_gen_desc)(CUdevResourceDesc *, CUdevResource *, unsigned);
typedef CUresult (*pfn_green_create)(CUgreenCtx *, CUdevResourceDesc, CUdevice, unsigned);
typedef CUresult (*pfn_green_destroy)(CUgreenCtx);
typedef CUresult (*pfn_from_green)(CUcontext *, CUgreenCtx);
typedef CUresult (*pfn_set_current)(CUcontext);

struct green_api {
    pfn_get_res get_res;
    pfn_split split;
    pfn_gen_desc gen_desc;
    pfn_green_create create;
    pfn_green_destroy destroy;
    pfn_from_green from_green;
    pfn_set_current set_current;
};

struct cuda_state {
    struct loki_backend_config cfg;
    int dev, sms, max_batch;
    float *w, *x, *y;
    cudaStream_t stream;
    cudaEvent_t ev0, ev1;
    int layers[MAX_POINTS];
    uint64_t rng;
    struct green_api g;
    CUgreenCtx green;
};

static char last_err[256];

static int fail(cudaError_t e, const char *what)
{
    snprintf(last_err, sizeof(last_err), "%s: %s", what, cudaGetErrorString(e));
    switch (e) {
    case cudaErrorMpsConnectionFailed:
    case cudaErrorMpsRpcFailure:
    case cudaErrorMpsServerNotReady:
    case cudaErrorMpsMaxClientsReached:
    case cudaErrorMpsMaxConnectionsReached:
    case cudaErrorMpsClientTerminated:
        return LOKI_CUDA_EMPS;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
        return -ENODEV;
    case cudaErrorMemoryAllocation:
        return -ENOMEM;
    default:
        return -EIO;
    }
}

#define CK(call, what)                                                                             \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            return fail(e_, what);                                                                 \
    } while (0)

extern "C" const char *loki_cuda_last_error(void)
{
    return last_err;
}

extern "C" int loki_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky "no driver" status */
        return 0;
    }
    return n;
}

/*
 * Y[D x n] = tanh(W[D x D] X[D x n]), column-major, n a multiple of TILE. A block
 * computes a TILE x TILE tile; threadIdx.x walks rows, so loads of W and X and the
 * store of Y are coalesced, and the padded shared tiles avoid bank conflicts.
 */
__global__ void dense_tanh(const float *__restrict__ w, const float *__restrict__ x,
                           float *__restrict__ y, int n)
{
    __shared__ float ws[TILE][TILE + 1], xs[TILE][TILE + 1];
    int r0 = blockIdx.y * TILE, c0 = blockIdx.x * TILE, tx = threadIdx.x, ty = threadIdx.y;
    float acc = 0.f;
    for (int k = 0; k < D; k += TILE) {
        ws[ty][tx] = w[(size_t)(k + ty) * D + r0 + tx]; /* W[r0 + tx][k + ty] */
        xs[ty][tx] = x[(size_t)(c0 + ty) * D + k + tx]; /* X[k + tx][c0 + ty] */
        __syncthreads();
#pragma unroll
        for (int j = 0; j < TILE; j++)
            acc += ws[j][tx] * xs[ty][j];
        __syncthreads();
    }
    if (c0 + ty < n)
        y[(size_t)(c0 + ty) * D + r0 + tx] = tanhf(acc);
}

/* Deterministic pseudo-random fill in [-scale, scale). */
__global__ void fill(float *p, size_t n, uint64_t seed, float scale)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    for (; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint64_t z = seed + i * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        p[i] = scale * ((float)(z >> 40) * (2.0f / 16777216.0f) - 1.0f);
    }
}

static int run_layers(struct cuda_state *s, int n, int layers)
{
    int cols = n * COLS;
    dim3 grid(cols / TILE, D / TILE), block(TILE, TILE);
    float *in = s->x, *out = s->y;
    for (int l = 0; l < layers; l++) {
        dense_tanh<<<grid, block, 0, s->stream>>>(s->w, in, out, cols);
        float *t = in;
        in = out;
        out = t;
    }
    CK(cudaGetLastError(), "launch dense layers");
    return 0;
}

/* One timed run of @layers layers over a batch of @n, in ms. */
static int time_layers(struct cuda_state *s, int n, int layers, double *ms)
{
    int rc;
    CK(cudaEventRecord(s->ev0, s->stream), "event record");
    if ((rc = run_layers(s, n, layers)))
        return rc;
    CK(cudaEventRecord(s->ev1, s->stream), "event record");
    CK(cudaEventSynchronize(s->ev1), "batch");
    float f = 0;
    CK(cudaEventElapsedTime(&f, s->ev0, s->ev1), "event elapsed");
    *ms = f;
    return 0;
}

/*
 * Layers for a batch of @n to take @target ms: a two-point linear estimate
 * brackets the answer, then bisection on the layer count until within 2 %
 * (latency is monotone in layers; each probe is one measured run).
 */
static int calibrate_one(struct cuda_state *s, int n, double target, int *out)
{
    double t_a, t_b;
    int rc;
    if ((rc = time_layers(s, n, 2, &t_a)) || (rc = time_layers(s, n, 2, &t_a)) ||
        (rc = time_layers(s, n, 10, &t_b)))
        return rc;
    double per = (t_b - t_a) / 8 > 1e-4 ? (t_b - t_a) / 8 : 1e-4;
    double base = t_a - 2 * per > 0 ? t_a - 2 * per : 0;
    double est = (target - base) / per;
    if (est < 1) {
        *out = 1; /* even one layer is slower than the profile: run the least we can */
        return 0;
    }
    int lo = (int)(est * 0.8), hi = (int)(est * 1.25) + 2;
    lo = lo < 1 ? 1 : lo;
    hi = hi > MAX_LAYERS ? MAX_LAYERS : hi;
    double t;
    for (int i = 0; i < 4; i++) { /* widen until the bracket holds the target */
        if ((rc = time_layers(s, n, lo, &t)))
            return rc;
        if (t <= target || lo == 1)
            break;
        lo = lo / 2 > 1 ? lo / 2 : 1;
    }
    for (int i = 0; i < 4; i++) {
        if ((rc = time_layers(s, n, hi, &t)))
            return rc;
        if (t >= target || hi == MAX_LAYERS)
            break;
        hi = hi * 2 < MAX_LAYERS ? hi * 2 : MAX_LAYERS;
    }
    int best = (lo + hi) / 2;
    for (int i = 0; i < 12 && hi - lo > 1; i++) {
        int mid = lo + (hi - lo) / 2;
        if ((rc = time_layers(s, n, mid, &t)))
            return rc;
        best = mid;
        if (fabs(t - target) <= 0.02 * target)
            break;
        if (t < target)
            lo = mid;
        else
            hi = mid;
    }
    *out = best;
    return 0;
}

/* Layers for a batch of @n: the calibrated points, linear in between. */
static int layers_for(const struct cuda_state *s, int n)
{
    const struct loki_backend_config *c = &s->cfg;
    if (n <= c->batches[0])
        return s->layers[0];
    for (int i = 1; i < c->n_batches; i++)
        if (n <= c->batches[i])
            return s->layers[i - 1] +
                   (int)lround((double)(s->layers[i] - s->layers[i - 1]) * (n - c->batches[i - 1]) /
                               (c->batches[i] - c->batches[i - 1]));
    return s->layers[c->n_batches - 1];
}

/* LOKI_CUDA_WORK="l1,l2,...": fixed layers per profiled batch (no calibration). */
static int fixed_work(struct cuda_state *s)
{
    const char *e = getenv("LOKI_CUDA_WORK");
    if (!e || !*e)
        return 0;
    for (int i = 0; i < s->cfg.n_batches; i++) {
        char *end;
        long v = strtol(e, &end, 10);
        if (end == e || v < 1 || v > MAX_LAYERS)
            return -EINVAL;
        s->layers[i] = (int)v;
        e = *end == ',' ? end + 1 : end;
    }
    return 1;
}

static int green_load(struct green_api *g)
{
    struct {
        const char *sym;
        void **fn;
    } t[] = {{"cuDeviceGetDevResource", (void **)&g->get_res},
             {"cuDevSmResourceSplitByCount", (void **)&g->split},
             {"cuDevResourceGenerateDesc", (void **)&g->gen_desc},
             {"cuGreenCtxCreate", (void **)&g->create},
             {"cuGreenCtxDestroy", (void **)&g->destroy},
             {"cuCtxFromGreenCtx", (void **)&g->from_green},
             {"cuCtxSetCurrent", (void **)&g->set_current}};
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        cudaDriverEntryPointQueryResult q;
        if (cudaGetDriverEntryPointByVersion(t[i].sym, t[i].fn, 12040, cudaEnableDefault, &q) !=
                cudaSuccess ||
            q != cudaDriverEntryPointSuccess || !*t[i].fn) {
            snprintf(last_err, sizeof(last_err), "driver has no %s (green contexts need 12.4+)",
                     t[i].sym);
            return -ENOTSUP;
        }
    }
    return 0;
}

static void free_stream(struct cuda_state *s)
{
    if (s->ev0)
        cudaEventDestroy(s->ev0);
    if (s->ev1)
        cudaEventDestroy(s->ev1);
    if (s->stream)
        cudaStreamDestroy(s->stream);
    s->ev0 = s->ev1 = NULL;
    s->stream = NULL;
}

static int make_stream(struct cuda_state *s)
{
    CK(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking), "stream");
    CK(cudaEventCreate(&s->ev0), "event");
    CK(cudaEventCreate(&s->ev1), "event");
    return 0;
}

/*
 * Make a green context of round(@share x SMs) SMs current on this thread, with a
 * fresh stream and events in it; the previous one (if any) is destroyed after.
 */
static int green_switch(struct cuda_state *s, double share)
{
    struct green_api *g = &s->g;
    CUdevResource all, part[1], rest;
    CUdevResourceDesc desc;
    CUgreenCtx gc, old = s->green;
    CUcontext ctx;
    unsigned groups = 1;
    int rc;
    if (!g->create && (rc = green_load(g)))
        return rc;
    if (g->get_res((CUdevice)s->dev, &all, CU_DEV_RESOURCE_TYPE_SM) != CUDA_SUCCESS) {
        snprintf(last_err, sizeof(last_err), "cuDeviceGetDevResource failed");
        return -EIO;
    }
    unsigned want = (unsigned)lround(share * all.sm.smCount);
    want = want < 1 ? 1 : want > all.sm.smCount ? all.sm.smCount : want;
    /* the driver rounds minCount up to its SM granularity (8 on Hopper) */
    if (g->split(part, &groups, &all, &rest, 0, want) != CUDA_SUCCESS || groups < 1 ||
        g->gen_desc(&desc, part, 1) != CUDA_SUCCESS ||
        g->create(&gc, desc, (CUdevice)s->dev, CU_GREEN_CTX_DEFAULT_STREAM) != CUDA_SUCCESS) {
        snprintf(last_err, sizeof(last_err), "green context of %u SMs: driver refused", want);
        return -EIO;
    }
    if (g->from_green(&ctx, gc) != CUDA_SUCCESS || g->set_current(ctx) != CUDA_SUCCESS) {
        g->destroy(gc);
        snprintf(last_err, sizeof(last_err), "cannot make the green context current");
        return -EIO;
    }
    free_stream(s); /* streams and events of the old context go with it */
    if (old)
        g->destroy(old);
    s->green = gc;
    s->sms = (int)part[0].sm.smCount;
    return make_stream(s);
}

static void cuda_fini(void *state)
{
    struct cuda_state *s = (struct cuda_state *)state;
    if (!s)
        return;
    if (s->stream)
        cudaStreamSynchronize(s->stream);
    free_stream(s);
    cudaFree(s->w);
    cudaFree(s->x);
    cudaFree(s->y);
    if (s->green)
        s->g.destroy(s->green);
    free(s);
}

static int setup(struct cuda_state *s)
{
    const struct loki_backend_config *c = &s->cfg;
    int n_dev = 0, rc;
    cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess && e != cudaErrorNoDevice && e != cudaErrorInsufficientDriver)
        return fail(e, "count devices"); /* MPS refusals surface here or at cudaFree(0) */
    if (n_dev <= 0) {
        /* "CUDA driver version is insufficient" names a driver older than this runtime */
        snprintf(last_err, sizeof(last_err), "no CUDA device: %s",
                 e == cudaSuccess ? "none found" : cudaGetErrorString(e));
        return -ENODEV;
    }
    /* the supervisor narrows CUDA_VISIBLE_DEVICES to the instance's GPU: it is device 0 */
    s->dev = getenv("CUDA_VISIBLE_DEVICES") || c->gpu < 0 ? 0 : c->gpu;
    if (s->dev >= n_dev) {
        snprintf(last_err, sizeof(last_err), "GPU %d not visible (%d devices)", s->dev, n_dev);
        return -ENODEV;
    }
    CK(cudaSetDevice(s->dev), "select device");
    CK(cudaFree(0), "create context"); /* where MPS accepts or refuses this client */
    CK(cudaDeviceGetAttribute(&s->sms, cudaDevAttrMultiProcessorCount, s->dev), "SM count");
    const char *gc = getenv("LOKI_CUDA_GREEN_CTX");
    if (gc && !strcmp(gc, "1")) {
        if ((rc = green_switch(s, c->share)))
            return rc;
    } else if ((rc = make_stream(s))) {
        return rc;
    }
    size_t act = (size_t)D * COLS * (size_t)s->max_batch;
    CK(cudaMalloc((void **)&s->w, sizeof(float) * D * D), "weights");
    CK(cudaMalloc((void **)&s->x, sizeof(float) * act), "activations");
    CK(cudaMalloc((void **)&s->y, sizeof(float) * act), "activations");
    /* weights ~ U(-2/sqrt(D), ..): tanh keeps activations in a live, bounded range */
    fill<<<256, 256, 0, s->stream>>>(s->w, (size_t)D * D, c->seed * 2 + 1, 2.0f / sqrtf(D));
    fill<<<256, 256, 0, s->stream>>>(s->x, act, c->seed * 2 + 2, 1.0f);
    CK(cudaGetLastError(), "fill");
    CK(cudaStreamSynchronize(s->stream), "fill");
    if ((rc = fixed_work(s)))
        return rc < 0 ? rc : 0;
    for (int i = 0; i < c->n_batches; i++) {
        if (c->batches[i] > s->max_batch) {
            s->layers[i] = i ? s->layers[i - 1] : 1; /* never run: infer() gets <= max_batch */
            continue;
        }
        if ((rc = calibrate_one(s, c->batches[i], c->latency_ms[i], &s->layers[i])))
            return rc;
    }
    return 0;
}

static int cuda_init(const struct loki_backend_config *cfg, void **state)
{
    if (cfg->n_batches < 1 || cfg->n_batches > MAX_POINTS || cfg->max_batch < 1 ||
        cfg->n_children > LOKI_BACKEND_MAX_CHILDREN)
        return -EINVAL;
    struct cuda_state *s = (struct cuda_state *)calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->cfg = *cfg;
    s->max_batch = cfg->max_batch;
    s->rng = cfg->seed ? cfg->seed : 1;
    int rc = setup(s);
    if (rc) {
        cuda_fini(s);
        return rc;
    }
    *state = s;
    return 0;
}

static int cuda_infer(void *state, const struct loki_backend_query *q, int n,
                      struct loki_backend_result *out)
{
    struct cuda_state *s = (struct cuda_state *)state;
    if (n < 1 || n > s->max_batch)
        return -EINVAL;
    int rc = run_layers(s, n, layers_for(s, n));
    /* fan-outs are drawn while the GPU works */
    for (int i = 0; i < n; i++) {
        struct loki_backend_result *r = &out[i];
        memset(r, 0, sizeof(*r));
        r->n_children = (uint32_t)s->cfg.n_children;
        for (int c = 0; c < s->cfg.n_children; c++)
            r->fanout[c] = loki_fanout_draw(&s->rng, s->cfg.fanout_mean[c], s->cfg.fanout_dist[c]);
        int len = snprintf((char *)r->output, sizeof(r->output), "%s:%llu", s->cfg.variant,
                           (unsigned long long)q[i].id);
        r->output_len = len < (int)sizeof(r->output) ? (uint32_t)len : sizeof(r->output) - 1;
    }
    if (rc)
        return rc;
    CK(cudaStreamSynchronize(s->stream), "batch");
    return 0;
}

static const struct loki_backend_v1 cuda_ops = {
    LOKI_BACKEND_ABI_V1, "cuda", cuda_init, cuda_infer, cuda_fini,
};

extern "C" const struct loki_backend_v1 *loki_backend_cuda(void)
{
    return &cuda_ops;
}

extern "C" int loki_cuda_work(void *state, int *layers, int max)
{
    struct cuda_state *s = (struct cuda_state *)state;
    for (int i = 0; i < s->cfg.n_batches && i < max; i++)
        layers[i] = s->layers[i];
    return s->cfg.n_batches;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

extern "C" int loki_cuda_time_batch(void *state, int n, int reps, double *median_ms)
{
    struct cuda_state *s = (struct cuda_state *)state;
    double t[512];
    int rc;
    if (n < 1 || n > s->max_batch || reps < 1)
        return -EINVAL;
    reps = reps > 512 ? 512 : reps;
    if ((rc = time_layers(s, n, layers_for(s, n), &t[0]))) /* warm-up */
        return rc;
    for (int i = 0; i < reps; i++)
        if ((rc = time_layers(s, n, layers_for(s, n), &t[i])))
            return rc;
    qsort(t, (size_t)reps, sizeof(t[0]), cmp_double);
    *median_ms = reps % 2 ? t[reps / 2] : (t[reps / 2 - 1] + t[reps / 2]) / 2;
    return 0;
}

extern "C" int loki_cuda_green_resize(void *state, double share, double *ms)
{
    struct cuda_state *s = (struct cuda_state *)state;
    struct timespec a, b;
    double t;
    int rc;
    if (share <= 0 || share > 1)
        return -EINVAL;
    clock_gettime(CLOCK_MONOTONIC, &a);
    if ((rc = green_switch(s, share)) || (rc = time_layers(s, 1, 1, &t)))
        return rc;
    clock_gettime(CLOCK_MONOTONIC, &b);
    *ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    return 0;
}

extern "C" int loki_cuda_sm_count(void *state)
{
    return ((struct cuda_state *)state)->sms;
}
