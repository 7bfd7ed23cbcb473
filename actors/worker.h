/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The worker process: one per instance. It attaches to its two rings
 * (batches in, results out) and the router's payload arena, initialises its
 * backend (and, with a fallback, a second one for the fallback variant),
 * announces itself ready with an empty result (batch id 0), then runs
 * batches, each on the variant its descriptor names, until the router
 * detaches or dies. A worker never holds
 * queries of its own: the router keeps them until a batch is formed.
 */
#ifndef LOKI_WORKER_H
#define LOKI_WORKER_H

#include <stdint.h>

#include "loki/model.h"

struct loki_backend_handle; /* loki/backend.h (runtime/worker) */

struct loki_worker_args {
    int req_fd, res_fd, arena_fd; /* memfds inherited from lokid */
    int out_fd;                   /* its output arena (outputs, child payloads); -1: none */
    int notify_fd;                /* router's eventfd to wake on results; -1: futex only */
    const struct loki_topology *topo;
    int pipeline, task, variant;
    int fallback; /* loki_plan_instance.fallback: 0 none, else 1 + a variant loaded alongside */
    int batch;    /* planned batch size */
    double share; /* GPU share */
    int gpu;      /* -1 without GPU */
    uint32_t instance_id;
    uint64_t seed;
    uint64_t spin_ns; /* poll a ring this long before sleeping (topology runtime.spin_us) */
    const struct loki_backend_handle *backend; /* NULL: chosen from the variant's backend key */
};

/* Batch id of the empty result a worker sends once its backend is ready. */
#define LOKI_WORKER_READY_BATCH 0

/*
 * What the supervisor and the worker process agree on besides the arguments
 * (see worker_main.c): the descriptors it finds open, the largest instance id,
 * and the exit status of a worker the MPS server refused (EX_TEMPFAIL). The
 * configuration comes on LOKI_WORKER_FD_CONFIG as lokid's sealed snapshot
 * (loki_config_seal()): a worker never reads the topology file.
 */
#define LOKI_WORKER_FD_REQ 3    /* batch ring, consumer side */
#define LOKI_WORKER_FD_RES 4    /* result ring, producer side */
#define LOKI_WORKER_FD_ARENA 5  /* payload arena */
#define LOKI_WORKER_FD_NOTIFY 6 /* lokid's eventfd for results */
#define LOKI_WORKER_FD_CONFIG 7 /* the configuration lokid validated: a sealed memfd */
#define LOKI_WORKER_FD_OUT 8    /* its output arena: it allocates, lokid frees */
#define LOKI_WORKER_EXIT_MPS 75

/*
 * Run the worker loop until the router goes away. Returns 0 when the router
 * detached cleanly, or a negative error (attach failure, backend init
 * failure, corrupted ring). Blocks; the calling thread owns the rings.
 * @err receives a message on failure.
 */
int loki_worker_run(const struct loki_worker_args *a, char *err, unsigned errlen);

/*
 * The worker process's main (`lokid --worker --pipeline P ... [--log-level L]`,
 * spawned by the supervisor): parse the arguments, start the logger at lokid's
 * level (default info), load the configuration from descriptor 7 (closed once
 * loaded), run loki_worker_run() on descriptors 3..6 and 8 (its output arena). Returns the process
 * exit status: 0 detached, 1 failed, 2 bad arguments or configuration, LOKI_WORKER_EXIT_MPS refused
 * by the MPS server. The process's one thread.
 */
int loki_worker_process_main(int argc, char **argv);

#endif
