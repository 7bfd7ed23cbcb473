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
    uint32_t output_bytes;        /* 0: a short text output (variant:id) */
    uint32_t child_payload_bytes; /* per child sub-query */
};

static int size_arg(const struct loki_backend_config *cfg, const char *key, uint32_t *out)
{
    const char *v = cfg->n_args ? loki_backend_arg(cfg, key) : NULL;
    if (!v)
        return 0;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end || x > UINT32_MAX)
        return -EINVAL;
    *out = (uint32_t)x;
    return 0;
}

static int sim_init(const struct loki_backend_config *cfg, void **state)
{
    struct sim *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->cfg = *cfg;
    s->rng = cfg->seed ? cfg->seed : 1;
    if (size_arg(cfg, "output_bytes", &s->output_bytes) ||
        size_arg(cfg, "child_payload_bytes", &s->child_payload_bytes)) {
        free(s);
        return -EINVAL;
    }
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

/* @len bytes derived from the query's input (its first bytes, repeated), so a pipeline's
 * data is traceable from stage to stage. */
static void fill_from(uint8_t *dst, uint32_t len, const struct loki_backend_query *q, uint64_t k)
{
    const uint8_t *src = q->payload;
    if (!q->payload_len) {
        memset(dst, (int)(k & 0xff), len);
        return;
    }
    for (uint32_t off = 0; off < len;) {
        uint32_t n = len - off < q->payload_len ? len - off : q->payload_len;
        memcpy(dst + off, src, n);
        off += n;
    }
}

static int sim_infer(void *state, const struct loki_backend_query *q, int n,
                     struct loki_backend_out *out)
{
    struct sim *s = state;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    double ms = sim_latency(s, n);
    long long ns = until.tv_nsec + (long long)(ms * 1e6);
    until.tv_sec += ns / 1000000000;
    until.tv_nsec = ns % 1000000000;
    for (int i = 0; i < n; i++) {
        for (int c = 0; c < s->cfg.n_children && c < LOKI_BACKEND_MAX_CHILDREN; c++) {
            uint32_t k = loki_fanout_draw(&s->rng, s->cfg.fanout_mean[c], s->cfg.fanout_dist[c]);
            for (uint32_t j = 0; j < k; j++) {
                uint8_t *p = out->child(out, i, c, s->child_payload_bytes);
                if (!p)
                    break; /* the query failed: output too large */
                fill_from(p, s->child_payload_bytes, &q[i], j);
            }
        }
        if (s->output_bytes) {
            uint8_t *p = out->output(out, i, s->output_bytes);
            if (p)
                fill_from(p, s->output_bytes, &q[i], 0);
        } else {
            char text[LOKI_BACKEND_OUTPUT_MAX];
            int len = snprintf(text, sizeof(text), "%s:%llu", s->cfg.variant,
                               (unsigned long long)q[i].id);
            uint32_t l = len < (int)sizeof(text) ? (uint32_t)len : sizeof(text) - 1;
            char *p = out->output(out, i, l);
            if (p)
                memcpy(p, text, l);
        }
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

static const struct loki_backend_v2 sim_ops = {
    .abi_version = LOKI_BACKEND_ABI_VERSION,
    .name = "sim",
    .init = sim_init,
    .infer = sim_infer,
    .fini = sim_fini,
};

const struct loki_backend_v2 *loki_backend_sim(void)
{
    return &sim_ops;
}

int loki_backend_load_plugin(const char *path, struct loki_backend_handle *out, char *err,
                             unsigned errlen)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(err, errlen, "cannot load backend plugin %s: %s", path, dlerror());
        return -ENOENT;
    }
    loki_backend_v2_get_fn get2 = (loki_backend_v2_get_fn)dlsym(h, "loki_backend_v2_get");
    loki_backend_v1_get_fn get1 = (loki_backend_v1_get_fn)dlsym(h, "loki_backend_v1_get");
    if (!get2 && !get1) {
        snprintf(err, errlen,
                 "backend plugin %s exports neither loki_backend_v2_get nor loki_backend_v1_get",
                 path);
        dlclose(h);
        return -ENOENT;
    }
    memset(out, 0, sizeof(*out));
    if (get2) {
        const struct loki_backend_v2 *ops = get2();
        if (ops && ops->abi_version == LOKI_BACKEND_ABI_VERSION && ops->init && ops->infer &&
            ops->fini) {
            out->be = ops;
            return 0;
        }
        snprintf(err, errlen,
                 "backend plugin %s: loki_backend_v2_get gives ABI version %u%s, this lokid "
                 "speaks %u (and %u through loki_backend_v1_get)",
                 path, ops ? ops->abi_version : 0, ops ? "" : " (no table)",
                 LOKI_BACKEND_ABI_VERSION, LOKI_BACKEND_ABI_V1);
        dlclose(h);
        return -EPROTO;
    }
    const struct loki_backend_v1 *ops = get1();
    if (!ops || ops->abi_version != LOKI_BACKEND_ABI_V1 || !ops->init || !ops->infer ||
        !ops->fini) {
        snprintf(err, errlen,
                 "backend plugin %s: loki_backend_v1_get gives ABI version %u, this lokid speaks "
                 "%u (loki_backend_v2_get) and %u (loki_backend_v1_get)",
                 path, ops ? ops->abi_version : 0, LOKI_BACKEND_ABI_VERSION, LOKI_BACKEND_ABI_V1);
        dlclose(h);
        return -EPROTO;
    }
    out->v1 = ops;
    return 0;
}

/* ---- the version-1 adapter ----------------------------------------------------------------- */

struct v1_state {
    void *state;
    int max_batch;
    struct loki_backend_result r[];
};

int loki_backend_init(const struct loki_backend_handle *h, const struct loki_backend_config *cfg,
                      void **state)
{
    if (!h->v1)
        return h->be->init(cfg, state);
    int mb = cfg->max_batch > 0 ? cfg->max_batch : 1;
    struct v1_state *a = calloc(1, sizeof(*a) + sizeof(a->r[0]) * (size_t)mb);
    if (!a)
        return -ENOMEM;
    a->max_batch = mb;
    int rc = h->v1->init(cfg, &a->state);
    if (rc) {
        free(a);
        return rc;
    }
    *state = a;
    return 0;
}

int loki_backend_infer(const struct loki_backend_handle *h, void *state,
                       const struct loki_backend_query *q, int n, struct loki_backend_out *out)
{
    if (!h->v1)
        return h->be->infer(state, q, n, out);
    struct v1_state *a = state;
    if (n > a->max_batch)
        return -EINVAL;
    memset(a->r, 0, sizeof(a->r[0]) * (size_t)n);
    int rc = h->v1->infer(a->state, q, n, a->r);
    if (rc)
        return rc;
    for (int i = 0; i < n; i++) {
        const struct loki_backend_result *r = &a->r[i];
        if (r->status) {
            out->fail(out, i, r->status < 0 ? r->status : -EIO, NULL);
            continue;
        }
        uint32_t nc =
            r->n_children < LOKI_BACKEND_MAX_CHILDREN ? r->n_children : LOKI_BACKEND_MAX_CHILDREN;
        for (uint32_t c = 0; c < nc; c++)
            for (uint32_t k = 0; k < r->fanout[c]; k++)
                if (!out->child(out, i, (int)c, 0))
                    break;
        uint32_t len =
            r->output_len < LOKI_BACKEND_OUTPUT_MAX ? r->output_len : LOKI_BACKEND_OUTPUT_MAX;
        if (len) {
            void *p = out->output(out, i, len);
            if (p)
                memcpy(p, r->output, len);
        }
    }
    return 0;
}

void loki_backend_fini(const struct loki_backend_handle *h, void *state)
{
    if (!h->v1) {
        h->be->fini(state);
        return;
    }
    struct v1_state *a = state;
    h->v1->fini(a->state);
    free(a);
}
