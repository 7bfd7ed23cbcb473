/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CUDA backend: a real GPU workload per variant (a chain of dense layers
 * with random weights, run by a tiled SGEMM kernel) whose work per batch is
 * calibrated at init so its latency matches the variant's profile. Built into
 * loki_worker when nvcc is found (LOKI_HAVE_CUDA); see docs/gpu.md. All
 * functions here are for the one thread that owns the backend state, except
 * loki_cuda_device_count(), which any thread may call.
 */
#ifndef LOKI_CUDA_H
#define LOKI_CUDA_H

#include <errno.h>

#include "loki/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Errors of init() beyond the errno ones: the MPS server refused this client
 * (client limit, server not ready, connection failed). A worker exits with
 * LOKI_CUDA_EXIT_MPS on it so the supervisor can say why and retry. */
#define LOKI_CUDA_EMPS (-ECONNREFUSED)
#define LOKI_CUDA_EXIT_MPS 75 /* EX_TEMPFAIL */

/* The backend's ops table (name "cuda"). init() returns -ENODEV without a
 * usable GPU, LOKI_CUDA_EMPS when MPS refuses, -ENOMEM, or -EIO. */
const struct loki_backend_v1 *loki_backend_cuda(void);

/* CUDA devices this process can use: 0 without driver or GPU. Never fails. */
int loki_cuda_device_count(void);

/* The last CUDA error message of this thread's backend calls (static storage). */
const char *loki_cuda_last_error(void);

/*
 * The calibrated work (dense layers per batch) at each profiled batch size of
 * the config the state was created with. Writes at most @max entries to
 * @layers and returns how many (the config's n_batches).
 */
int loki_cuda_work(void *state, int *layers, int max);

/*
 * Run @reps (1..512) batches of @n queries (1..max_batch) back to back after one
 * warm-up and return the median GPU time of one batch in ms (cudaEvents).
 * Returns 0, -EINVAL or -EIO.
 */
int loki_cuda_time_batch(void *state, int n, int reps, double *median_ms);

/*
 * Move the backend onto a new green context with round(@share x SMs) SMs
 * (CUDA >= 12.4; rounded up to the device's SM granularity) and report the
 * time the switch took (create context and stream, first kernel done) in
 * @ms. Buffers stay: green contexts share the primary context's memory.
 * Returns 0, -ENOTSUP (driver without green contexts) or -EIO.
 */
int loki_cuda_green_resize(void *state, double share, double *ms);

/* SMs the backend's kernels may use now (the green context's, else the device's). */
int loki_cuda_sm_count(void *state);

#ifdef __cplusplus
}
#endif

#endif
