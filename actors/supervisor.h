/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The supervisor: one worker process per instance, spawned from lokid's own
 * executable (`lokid --worker ...`), pinned with hwloc near its GPU, wired
 * to lokid by two shared-memory rings (batches in, results out) and the
 * shared payload arena, and reaped through a pidfd on the loop. Runs on lokid's loop
 * thread; every callback runs there too. Placement is supervisor_place.h, MPS
 * supervisor_mps.c, the worker process's side worker.h. The loop is libuv's, but
 * only as an opaque pointer: this header does not include <uv.h>.
 */
#ifndef LOKI_SUPERVISOR_H
#define LOKI_SUPERVISOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loki/batch.h"
#include "loki/model.h"
#include "loki/plan.h"

struct loki_sup;
struct loki_arena;
struct uv_loop_s; /* uv_loop_t */

struct loki_sup_ops {
    /* Worker @inst announced it is ready (its backend loaded). */
    void (*ready)(void *ctx, int inst);
    /* One result record of @inst (decoded view); valid during the call. */
    void (*result)(void *ctx, int inst, struct loki_batch_view *v);
    /* Worker @inst exited; @expected when loki_sup_stop() asked for it. */
    void (*exited)(void *ctx, int inst, int64_t status, int term_signal, bool expected);
};

struct loki_sup_config {
    const char *self_exe;   /* the lokid binary to exec as a worker */
    int config_fd;          /* the configuration workers load: lokid's sealed snapshot
                             * (loki_config_seal()); borrowed, the supervisor keeps a duplicate */
    size_t arena_bytes;     /* payload arena (power of two) */
    size_t ring_bytes;      /* per ring (power of two) */
    size_t out_arena_bytes; /* each worker's output arena (power of two); 0: 64 MiB */
    uint64_t seed;          /* base seed for the sim backends */
    bool mps;               /* run MPS for CUDA workers when the topology has shares < 1 */
    uint64_t spin_ns;       /* poll a fast worker's results this long before sleeping; 0:
                             * never poll (topology runtime.spin_us) */
    const char *run_dir;    /* MPS pipe and log folders go under it; NULL: a fresh
                             * $TMPDIR/loki-PID-XXXXXX, removed by loki_sup_destroy() */
};

/* Exit status of a worker the MPS server refused (client limit, server not ready): the
 * supervisor logs why, and lokid's restart with backoff retries it. */
#define LOKI_SUP_EXIT_MPS 75

/*
 * Create the supervisor on @loop. Returns 0, -ENOMEM, -EBADF (no @cfg->config_fd), or the
 * arena/eventfd error.
 * MPS: when @cfg->mps is set and a variant with the cuda backend is profiled at shares
 * below 1, the first CUDA worker on each GPU starts one `nvidia-cuda-mps-control -d`
 * for that GPU (own pipe and log folder under the run dir); every CUDA worker on the GPU
 * then connects to it with its share and memory limit. Without the control binary on
 * PATH (or $LOKI_MPS_CONTROL) the supervisor says so once and runs without MPS.
 */
int loki_sup_create(struct uv_loop_s *loop, const struct loki_topology *topo,
                    const struct loki_sup_config *cfg, const struct loki_sup_ops *ops, void *ctx,
                    struct loki_sup **out);

/* Kill every worker still running (SIGKILL), stop the MPS daemons it started (`quit`),
 * unmap, close. Loop must then run to close handles. */
void loki_sup_destroy(struct loki_sup *s);

/*
 * Spawn the worker for instance id @inst (any non-negative id < 4096). It gets lokid's log
 * level (--log-level, what loki_log_init() was given) and the configuration snapshot of the
 * last loki_sup_set_config() (else @cfg->config_fd) on its descriptor 7. Returns 0 or
 * negative: -EINVAL (a bad id), or why nothing was spawned (-EBUSY: a worker with this id
 * still runs; -EMFILE: lokid is out of descriptors...), logged with the step that failed
 * and counted (loki_sup_stats()).
 */
int loki_sup_start(struct loki_sup *s, int inst, const struct loki_plan_instance *pi);

/*
 * Workers started from now on load the configuration snapshot @fd (borrowed: a duplicate is
 * kept); running ones keep what they loaded. Returns 0 or -errno (the old one stays).
 */
int loki_sup_set_config(struct loki_sup *s, int fd);

/* Ask worker @inst to exit once its ring is drained (detach). Returns 0 or -ENOENT. */
int loki_sup_stop(struct loki_sup *s, int inst);

/* Send batch @d to worker @inst. Returns 0, -EAGAIN (ring full), -ENOENT, LOKI_EPEERDEAD. */
int loki_sup_send(struct loki_sup *s, int inst, const struct loki_batch_desc *d);

/* The payload arena the router allocates query inputs in (single allocator: the loop thread). */
struct loki_arena *loki_sup_arena(struct loki_sup *s);
/* Worker @inst's output arena (its outputs and child payloads: read them and free them once
 * taken); NULL for an id with no worker. Valid until its exited callback returns. Loop thread. */
struct loki_arena *loki_sup_out_arena(struct loki_sup *s, int inst);

/* Pid of worker @inst, or -1. */
int loki_sup_pid(const struct loki_sup *s, int inst);

/* Workers alive now. */
int loki_sup_alive(const struct loki_sup *s);

/*
 * Workers of variant (@p, @t, @v) (the plan instance's indexes) that exited without
 * loki_sup_stop() asking for it since loki_sup_create(): a crash, a kill, an OOM kill, an MPS
 * refusal. lokid restarts each with backoff unless it is draining. 0 for indexes out of range.
 */
uint64_t loki_sup_crashes(const struct loki_sup *s, int p, int t, int v);

/* Worker starts since create, for the logs and the status report. */
struct loki_sup_stats {
    uint64_t started;      /* spawned (whatever became of them) */
    uint64_t start_failed; /* loki_sup_start() calls that spawned nothing */
    int last_start_error;  /* negative errno of the last of those; 0 before any */
};

const struct loki_sup_stats *loki_sup_stats(const struct loki_sup *s);

#endif
