/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A variant's backend and its config, from the topology (see loki/backend_setup.h): the one
 * place that turns a topology variant into what a backend's init() sees, shared by the
 * worker (actors/worker.c) and `loki profile` (runtime/cli/cmd_profile.c).
 */
#include "loki/backend_setup.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LOKI_HAVE_CUDA
#include "loki/cuda.h"
#endif

int loki_backend_select(const struct loki_variant *v, struct loki_backend_handle *h, char *err,
                        unsigned errlen)
{
    memset(h, 0, sizeof(*h));
    switch (v->backend) {
    case LOKI_BACKEND_PLUGIN:
        return loki_backend_load_plugin(v->backend_path, h, err, errlen);
    case LOKI_BACKEND_CUDA:
#ifdef LOKI_HAVE_CUDA
        h->v1 = loki_backend_cuda();
        return 0;
#else
        snprintf(err, errlen, "variant %s asks for the cuda backend, not built in this lokid",
                 v->name);
        return -ENOTSUP;
#endif
    default:
        h->be = loki_backend_sim();
        return 0;
    }
}

const char *loki_backend_name(const struct loki_backend_handle *h)
{
    const char *n = h->be ? h->be->name : h->v1 ? h->v1->name : NULL;
    return n ? n : "(unnamed)";
}

int loki_backend_setup_init(struct loki_backend_setup *s, const struct loki_topology *t,
                            int pipeline, int task, int variant, int max_batch, double share,
                            int gpu, uint64_t seed, char *err, unsigned errlen)
{
    const struct loki_pipeline *p = &t->pipelines[pipeline];
    const struct loki_task *tk = &p->tasks[task];
    const struct loki_variant *var = &tk->variants[variant];
    int sh = loki_variant_share_index(var, share);
    if (sh < 0) {
        snprintf(err, errlen, "variant %s has no profile at share %g", var->name, share);
        return -EINVAL;
    }
    memset(s, 0, sizeof(*s));
    for (int c = 0; c < tk->n_children; c++) {
        s->means[c] = var->fanout[c].mean;
        s->dists[c] = (int)var->fanout[c].dist;
        s->child_names[c] = p->tasks[tk->children[c]].name;
    }
    /* the args are n_args (key, value) pairs of NUL-ended strings, back to back */
    int n_args = var->n_args < LOKI_MAX_ARGS ? var->n_args : LOKI_MAX_ARGS;
    const char *str = t->strings + var->args_off;
    for (int k = 0; k < n_args; k++) {
        s->arg_keys[k] = str;
        str += strlen(str) + 1;
        s->arg_values[k] = str;
        str += strlen(str) + 1;
    }
    s->cfg = (struct loki_backend_config){
        .pipeline = p->name,
        .task = tk->name,
        .variant = var->name,
        .max_batch = max_batch,
        .share = share,
        .gpu = gpu,
        .n_batches = var->n_batches,
        .batches = var->batches,
        .latency_ms = var->latency_ms[sh],
        .n_children = tk->n_children,
        .fanout_mean = s->means,
        .fanout_dist = s->dists,
        .seed = seed,
        .args = getenv("LOKI_BACKEND_ARGS"),
        .n_args = n_args,
        .arg_keys = s->arg_keys,
        .arg_values = s->arg_values,
        .max_output_bytes =
            var->max_output_bytes ? var->max_output_bytes : LOKI_DEFAULT_OUTPUT_BYTES,
        .input = tk->input_off ? t->strings + tk->input_off : NULL,
        .child_tasks = s->child_names,
    };
    return 0;
}
