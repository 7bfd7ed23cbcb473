/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The backend ABI: the small, versioned C interface between a worker process and whatever
 * executes a variant (the built-in sim backend, the CUDA backend, or a user's plugin .so
 * loaded with dlopen). Version 2 (loki_backend_v2) moves real data: each query brings its own
 * payload (the client's at the root, the one its parent emitted below it), and a backend
 * writes its output and its child payloads, of any size up to the variant's
 * max_output_bytes, straight into shared memory through struct loki_backend_out. A plugin
 * exports loki_backend_v2_get() (or, built for version 1, loki_backend_v1_get(): still
 * loaded, through an adapter). All calls come from the worker's one thread. Installed with
 * loki/limits.h and loki/rng.h as the plugin SDK (pkg-config loki-backend, CMake
 * loki::backend): all a plugin needs is here and inline, since the worker that dlopens it
 * exports no symbols. See docs/backend.md.
 */
#ifndef LOKI_BACKEND_H
#define LOKI_BACKEND_H

#include <stdint.h>

#include "loki/limits.h"
#include "loki/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LOKI_BACKEND_ABI_VERSION 2
#define LOKI_BACKEND_ABI_V1 1
#define LOKI_BACKEND_MAX_CHILDREN LOKI_MAX_CHILDREN
#define LOKI_BACKEND_OUTPUT_MAX LOKI_MAX_INLINE_OUTPUT /* version 1's output record */
#define LOKI_BACKEND_MSG_MAX 96 /* bytes of a query's error message kept (with its NUL) */
#define LOKI_BACKEND_EXPORT __attribute__((visibility("default")))

/* What a backend is asked to run; valid from init() to fini(). Version 2 appends fields
 * (a version-1 plugin reads the same prefix). */
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
    /* ---- version 2 ---- */
    int n_args; /* the variant's `args:` map from the topology, as strings */
    const char *const *arg_keys;
    const char *const *arg_values;
    uint32_t max_output_bytes;      /* per query: its output and child payloads together */
    const char *input;              /* the task's `input:` description, or NULL */
    const char *const *child_tasks; /* [n_children] names, in the task's `children` order */
};

/* The value of @key in @cfg's `args:` map, or NULL. */
static inline const char *loki_backend_arg(const struct loki_backend_config *cfg, const char *key)
{
    for (int i = 0; i < cfg->n_args; i++) {
        const char *a = cfg->arg_keys[i], *b = key;
        while (*a && *a == *b)
            a++, b++;
        if (*a == *b)
            return cfg->arg_values[i];
    }
    return 0;
}

struct loki_backend_query {
    uint64_t id;
    const void *payload; /* in shared memory; read-only; valid during infer() */
    uint32_t payload_len;
};

/*
 * Where infer() puts its results (version 2). Every pointer returned is shared memory the
 * backend writes before infer() returns; nothing is copied on the way to lokid.
 *   output(o, i, len)      room for query @i's output (a second call replaces the first).
 *   child(o, i, c, len)    room for one payload for child task @c (0..n_children-1) of query
 *                          @i: it becomes one sub-query of that task, so the fan-out is the
 *                          number of calls. @len 0 is a sub-query with an empty payload.
 *   shrink(o, p, len)      the block @p (returned by output or child) holds only @len bytes.
 *   fail(o, i, st, msg)    query @i failed: @st < 0, @msg a short text (may be NULL); what it
 *                          emitted is dropped.
 * output and child return NULL when the query's output and children would pass the variant's
 * max_output_bytes or shared memory is short: the query then fails ("output too large").
 */
struct loki_backend_out {
    void *(*output)(struct loki_backend_out *o, int i, uint32_t len);
    void *(*child)(struct loki_backend_out *o, int i, int child, uint32_t len);
    void (*shrink)(struct loki_backend_out *o, void *p, uint32_t len);
    void (*fail)(struct loki_backend_out *o, int i, int32_t status, const char *msg);
};

struct loki_backend_v2 {
    uint32_t abi_version; /* LOKI_BACKEND_ABI_VERSION */
    const char *name;
    /* Load the model and warm up. Returns 0 or a negative errno; *state is the backend's. */
    int (*init)(const struct loki_backend_config *cfg, void **state);
    /* Run one batch of @n queries (1..max_batch), inputs together so a backend can assemble
     * one tensor batch; results through @out. Returns 0, or negative: the whole batch failed. */
    int (*infer)(void *state, const struct loki_backend_query *q, int n,
                 struct loki_backend_out *out);
    void (*fini)(void *state);
};

typedef const struct loki_backend_v2 *(*loki_backend_v2_get_fn)(void);

/* What a plugin defines and exports: its table, static, valid for the process lifetime. Declared
 * here so that a C++ plugin's definition has C linkage and one built with -fvisibility=hidden
 * still exports it. */
LOKI_BACKEND_EXPORT const struct loki_backend_v2 *loki_backend_v2_get(void);

/* ---- version 1, still loaded through an adapter -------------------------------------------- */

/* Version 1's per-query result: fan-out counts (each child gets an empty payload) and an
 * output of at most 64 bytes. */
struct loki_backend_result {
    int32_t status; /* 0 ok, else a negative error: the query is answered with status error */
    uint32_t n_children;
    uint32_t fanout[LOKI_BACKEND_MAX_CHILDREN]; /* sub-queries created per child task */
    uint32_t output_len;
    uint8_t output[LOKI_BACKEND_OUTPUT_MAX]; /* small result record (labels, scores) */
};

struct loki_backend_v1 {
    uint32_t abi_version; /* LOKI_BACKEND_ABI_V1 */
    const char *name;
    int (*init)(const struct loki_backend_config *cfg, void **state);
    int (*infer)(void *state, const struct loki_backend_query *q, int n,
                 struct loki_backend_result *out);
    void (*fini)(void *state);
};

typedef const struct loki_backend_v1 *(*loki_backend_v1_get_fn)(void);

LOKI_BACKEND_EXPORT const struct loki_backend_v1 *loki_backend_v1_get(void);

/* ---- in the worker ------------------------------------------------------------------------- */
/* The worker's own functions, defined in lokid: not for plugins (the worker exports nothing). */

/* The built-in simulated backend: executes by profile, draws fan-out, and moves data of the
 * sizes its `args:` name (output_bytes, child_payload_bytes; default a short text output and
 * empty child payloads). */
const struct loki_backend_v2 *loki_backend_sim(void);

/* A backend to run: exactly one of @be (version 2) and @v1 (version 1, run through the
 * adapter of loki_backend_init/infer/fini) is set. */
struct loki_backend_handle {
    const struct loki_backend_v2 *be;
    const struct loki_backend_v1 *v1;
};

/*
 * Load a plugin .so: loki_backend_v2_get, else loki_backend_v1_get (adapted). @err gets a
 * message on failure. Returns 0, -ENOENT (no such file or symbol) or -EPROTO (an ABI
 * version this lokid does not speak; the message names both). The library stays loaded for
 * the process lifetime.
 */
int loki_backend_load_plugin(const char *path, struct loki_backend_handle *out, char *err,
                             unsigned errlen);
/* Call @h's init/infer/fini; a version-1 backend's results become output() and child()
 * calls (an output of at most 64 bytes, fan-out counts as empty child payloads). */
int loki_backend_init(const struct loki_backend_handle *h, const struct loki_backend_config *cfg,
                      void **state);
int loki_backend_infer(const struct loki_backend_handle *h, void *state,
                       const struct loki_backend_query *q, int n, struct loki_backend_out *out);
void loki_backend_fini(const struct loki_backend_handle *h, void *state);

#ifdef __cplusplus
}
#endif

#endif
