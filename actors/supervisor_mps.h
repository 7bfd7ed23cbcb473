/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The supervisor's MPS part, internal to actors/supervisor*: the environment
 * each worker process gets for its GPU and share, and one
 * nvidia-cuda-mps-control daemon per GPU, started for the first CUDA worker on
 * that GPU and quit with the supervisor. Apart from the supervisor so that the
 * spawn code does not carry CUDA's variables. Loop thread only.
 */
#ifndef LOKI_SUPERVISOR_MPS_H
#define LOKI_SUPERVISOR_MPS_H

#include <limits.h>
#include <stdbool.h>

#include "loki/model.h"
#include "loki/plan.h"

#define LOKI__SUP_MPS_MAX_GPUS LOKI_MAX_GPUS

/* The MPS state of one supervisor, in its memory (loki__sup_mps_init/fini). */
struct loki__sup_mps {
    const struct loki_topology *topo;
    bool enabled;                                /* loki_sup_config.mps */
    bool wanted;                                 /* enabled and a cuda variant with shares < 1 */
    bool missing_told;                           /* "no control binary" said once */
    bool own_run_dir;                            /* we made run_dir: fini removes it */
    const char *cfg_run_dir;                     /* loki_sup_config.run_dir (borrowed), or NULL */
    char run_dir[PATH_MAX / 4];                  /* "" until the first daemon needs it */
    char ctl[PATH_MAX];                          /* nvidia-cuda-mps-control, once found */
    unsigned char state[LOKI__SUP_MPS_MAX_GPUS]; /* per GPU: none, up or failed */
};

/* One worker's environment: lokid's own plus the GPU and MPS variables of its instance. */
struct loki__sup_env {
    char **envp; /* NULL-terminated; points into environ and the buffers below */
    char dev[64], pct[64], pipe[PATH_MAX], log[PATH_MAX], mem[64];
};

/*
 * Set up @m for @topo (borrowed for @m's life). @enabled and @run_dir are the
 * supervisor config's mps and run_dir (@run_dir borrowed too, may be NULL).
 * Starts nothing. Returns 0 or -ENAMETOOLONG (@run_dir leaves no room for the
 * pipe paths).
 */
int loki__sup_mps_init(struct loki__sup_mps *m, const struct loki_topology *topo, bool enabled,
                       const char *run_dir);

/* Quit every daemon @m started (`quit` on its stdin) and remove the run folder if @m made it. */
void loki__sup_mps_fini(struct loki__sup_mps *m);

/*
 * Build in @e the environment of the worker for @pi: CUDA_VISIBLE_DEVICES and
 * CUDA_DEVICE_ORDER for its GPU, the active-thread percentage of a share below
 * 1, and for a CUDA variant the pipe and log folders and memory limit of its
 * GPU's daemon, which this starts on first use. Returns 0 or -ENOMEM; release
 * with loki__sup_env_fini() either way.
 */
int loki__sup_mps_env(struct loki__sup_mps *m, const struct loki_plan_instance *pi,
                      struct loki__sup_env *e);

void loki__sup_env_fini(struct loki__sup_env *e);

#endif
