/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A variant's backend as its topology describes it: which backend runs it (the variant's
 * `backend:` key: sim, cuda or a plugin .so) and the struct loki_backend_config its init()
 * gets (names, profile at a share, children, `args:`, max_output_bytes, the task's input).
 * The worker and `loki profile` both load backends through these two calls, so a plugin is
 * measured exactly as it is served. Not part of the plugin SDK (it needs the topology model).
 */
#ifndef LOKI_BACKEND_SETUP_H
#define LOKI_BACKEND_SETUP_H

#include <stdint.h>

#include "loki/backend.h"
#include "loki/model.h"

/* A backend config and the arrays it points at. cfg points into this struct and into the
 * topology: do not copy or move it, and keep the topology until the backend's fini(). */
struct loki_backend_setup {
    struct loki_backend_config cfg;
    double means[LOKI_MAX_CHILDREN];
    int dists[LOKI_MAX_CHILDREN];
    const char *child_names[LOKI_MAX_CHILDREN];
    const char *arg_keys[LOKI_MAX_ARGS], *arg_values[LOKI_MAX_ARGS];
};

/*
 * The backend @v names: the built-in sim backend, the CUDA backend (version 1, when built
 * with LOKI_HAVE_CUDA) or its plugin, loaded (loki_backend_load_plugin()). Returns 0,
 * -ENOTSUP (cuda in a build without it), or the loader's -ENOENT / -EPROTO; @err then says
 * why. Any thread; loading a plugin runs its constructors.
 */
int loki_backend_select(const struct loki_variant *v, struct loki_backend_handle *h, char *err,
                        unsigned errlen);

/* The name the backend @h gives itself ("sim", "cuda", a plugin's name). */
const char *loki_backend_name(const struct loki_backend_handle *h);

/*
 * Fill @s->cfg for variant @variant of task @task of pipeline @pipeline in @t as a worker
 * runs it: at most @max_batch queries per infer(), GPU share @share (its latency profile is
 * the variant's at that share) on GPU @gpu (-1: none), PRNG seed @seed, the variant's args
 * and max_output_bytes (the default when unset), the task's input description and child
 * task names, LOKI_BACKEND_ARGS from the environment. Returns 0, or -EINVAL when the variant
 * has no profile at @share (@err says so). Works on the caller's memory; any thread.
 */
int loki_backend_setup_init(struct loki_backend_setup *s, const struct loki_topology *t,
                            int pipeline, int task, int variant, int max_batch, double share,
                            int gpu, uint64_t seed, char *err, unsigned errlen);

#endif
