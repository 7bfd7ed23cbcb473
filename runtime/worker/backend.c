/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sim backend and the plugin loader. The sim backend makes a worker
 * behave like the profiled model: a batch of n takes the profiled latency at
 * (n, share), measured against CLOCK_MONOTONIC with an absolute sleep so
 * scheduling noise does not accumulate, and every query draws its fan-out
 * from the variant's distribution with a seeded PRNG.
 */
#include "loki/backend.h"

#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sim {
    struct loki_backend_config cfg;
    uint64_t rng;
};

static int sim_init(const struct loki_backend_config *cfg, void **state)
{
    struct sim *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->cfg = *cfg;
    s->rng = cfg->seed ? cfg->seed : 1;
    *state = s;
    return 0;
}

static double sim_latency(const struct sim *s, int n)
{
    const struct loki_backend_config *c = &s->cfg;
    if (n <= c->batches[0])
        return c->latency_ms[0];
    for (int i = 1; i < c->n_batches; i++)
        if (n <= c->batches[i])
            return c->latency_ms[i - 1] + (c->latency_ms[i] - c->latency_ms[i - 1]) *
                                              (double)(n - c->batches[i - 1]) /
                                              (double)(c->batches[i] - c->batches[i - 1]);
    return c->latency_ms[c->n_batches - 1];
}

static int sim_infer(void *state, const struct loki_backend_query *q, int n,
                     struct loki_backend_result *out)
{
    struct sim *s = state;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    double ms = sim_latency(s, n);
    long long ns = until.tv_nsec + (long long)(ms * 1e6);
    until.tv_sec += ns / 1000000000;
    until.tv_nsec = ns % 1000000000;
    for (int i = 0; i < n; i++) {
        struct loki_backend_result *r = &out[i];
        memset(r, 0, sizeof(*r));
        r->n_children = (uint32_t)s->cfg.n_children;
        for (int c = 0; c < s->cfg.n_children && c < LOKI_BACKEND_MAX_CHILDREN; c++)
            r->fanout[c] = loki_fanout_draw(&s->rng, s->cfg.fanout_mean[c], s->cfg.fanout_dist[c]);
        int len = snprintf((char *)r->output, sizeof(r->output), "%s:%llu", s->cfg.variant,
                           (unsigned long long)q[i].id);
        r->output_len = len < (int)sizeof(r->output) ? (uint32_t)len : sizeof(r->output) - 1;
    }
    if (ms > 0) {
        /* A deadline already behind us returns at once: the kernel would still arm a timer
         * and sleep up to its slack (tens of us), which a sub-microsecond profile cannot mean. */
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec < until.tv_sec ||
            (now.tv_sec == until.tv_sec && now.tv_nsec < until.tv_nsec))
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
                ;
    }
    return 0;
}

static void sim_fini(void *state)
{
    free(state);
}

static const struct loki_backend_v1 sim_ops = {
    .abi_version = LOKI_BACKEND_ABI_VERSION,
    .name = "sim",
    .init = sim_init,
    .infer = sim_infer,
    .fini = sim_fini,
};

const struct loki_backend_v1 *loki_backend_sim(void)
{
    return &sim_ops;
}

int loki_backend_load_plugin(const char *path, const struct loki_backend_v1 **out, char *err,
                             unsigned errlen)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(err, errlen, "cannot load backend plugin %s: %s", path, dlerror());
        return -ENOENT;
    }
    loki_backend_v1_get_fn get = (loki_backend_v1_get_fn)dlsym(h, "loki_backend_v1_get");
    if (!get) {
        snprintf(err, errlen, "backend plugin %s does not export loki_backend_v1_get", path);
        dlclose(h);
        return -ENOENT;
    }
    const struct loki_backend_v1 *ops = get();
    if (!ops || ops->abi_version != LOKI_BACKEND_ABI_VERSION || !ops->init || !ops->infer ||
        !ops->fini) {
        snprintf(err, errlen, "backend plugin %s: ABI version %u, this lokid speaks %u", path,
                 ops ? ops->abi_version : 0, LOKI_BACKEND_ABI_VERSION);
        dlclose(h);
        return -EPROTO;
    }
    *out = ops;
    return 0;
}
