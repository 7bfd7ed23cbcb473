/* SPDX-License-Identifier: Apache-2.0 */
/*
 * loki_backend_v1: the small, versioned C ABI between a worker process and
 * whatever executes a variant (the built-in sim backend, the CUDA backend, or
 * a user's plugin .so loaded with dlopen). A plugin exports one symbol,
 * loki_backend_v1_get(), returning a static ops table. All calls come from
 * the worker's one thread. See docs/backend.md.
 */
#ifndef LOKI_BACKEND_H
#define LOKI_BACKEND_H

#include <stdint.h>

#include "loki/limits.h"
#include "loki/rng.h"

#define LOKI_BACKEND_ABI_VERSION 1
#define LOKI_BACKEND_MAX_CHILDREN LOKI_MAX_CHILDREN
#define LOKI_BACKEND_OUTPUT_MAX LOKI_MAX_INLINE_OUTPUT

/* What a backend is asked to run; valid from init() to fini(). */
struct loki_backend_config {
    const char *pipeline, *task, *variant;
    int max_batch; /* the planned batch size: infer() never gets more */
    double share;  /* GPU share (MPS active-thread fraction) */
    int gpu;       /* GPU index, -1 without GPUs */
    int n_batches; /* the variant's latency profile at this share */
    const int *batches;
    const double *latency_ms;
    int n_children; /* child tasks; fan-out means and distributions: */
    const double *fanout_mean;
    const int *fanout_dist; /* enum loki_fanout_dist values */
    uint64_t seed;          /* for reproducible draws */
    const char *args;       /* free-form, from the environment LOKI_BACKEND_ARGS; may be NULL */
};

struct loki_backend_query {
    uint64_t id;
    const void *payload; /* in shared memory; read-only; valid during infer() */
    uint32_t payload_len;
};

struct loki_backend_result {
    int32_t status; /* 0 ok, else a negative error: the query is answered with status error */
    uint32_t n_children;
    uint32_t fanout[LOKI_BACKEND_MAX_CHILDREN]; /* sub-queries created per child task */
    uint32_t output_len;
    uint8_t output[LOKI_BACKEND_OUTPUT_MAX]; /* small result record (labels, scores) */
};

struct loki_backend_v1 {
    uint32_t abi_version; /* LOKI_BACKEND_ABI_VERSION */
    const char *name;
    /* Load the model and warm up. Returns 0 or a negative errno; *state is the backend's. */
    int (*init)(const struct loki_backend_config *cfg, void **state);
    /* Run one batch of @n queries (1..max_batch); fill @out[0..n). Returns 0 or negative
     * (the whole batch failed). */
    int (*infer)(void *state, const struct loki_backend_query *q, int n,
                 struct loki_backend_result *out);
    void (*fini)(void *state);
};

typedef const struct loki_backend_v1 *(*loki_backend_v1_get_fn)(void);

/* The built-in simulated backend: executes by profile, draws fan-out. */
const struct loki_backend_v1 *loki_backend_sim(void);

/*
 * Load a plugin .so and return its ops table (checked abi_version). @err gets
 * a message on failure. Returns 0, -ENOENT (no such file or symbol) or -EPROTO
 * (ABI version mismatch). The library stays loaded for the process lifetime.
 */
int loki_backend_load_plugin(const char *path, const struct loki_backend_v1 **out, char *err,
                             unsigned errlen);

#endif
