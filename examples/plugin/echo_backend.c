/* SPDX-License-Identifier: Apache-2.0 */
/*
 * An example backend plugin for loki_backend_v1: it "classifies" a payload
 * by its byte sum and returns that as the output, with one sub-query per
 * child task for every 100 payload bytes. Build it as a shared object and
 * name it in a variant's `backend:` key. See docs/backend.md.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loki/backend.h"

struct echo {
    int n_children;
    char variant[64];
};

static int echo_init(const struct loki_backend_config *cfg, void **state)
{
    struct echo *e = calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    e->n_children = cfg->n_children;
    snprintf(e->variant, sizeof(e->variant), "%s", cfg->variant);
    *state = e;
    return 0;
}

static int echo_infer(void *state, const struct loki_backend_query *q, int n,
                      struct loki_backend_result *out)
{
    struct echo *e = state;
    for (int i = 0; i < n; i++) {
        const unsigned char *p = q[i].payload;
        unsigned sum = 0;
        for (uint32_t k = 0; k < q[i].payload_len; k++)
            sum += p[k];
        memset(&out[i], 0, sizeof(out[i]));
        out[i].n_children = (uint32_t)e->n_children;
        for (int c = 0; c < e->n_children && c < LOKI_BACKEND_MAX_CHILDREN; c++)
            out[i].fanout[c] = q[i].payload_len / 100;
        int len =
            snprintf((char *)out[i].output, sizeof(out[i].output), "%s sum=%u", e->variant, sum);
        out[i].output_len = (uint32_t)len;
    }
    return 0;
}

static void echo_fini(void *state)
{
    free(state);
}

static const struct loki_backend_v1 ops = {
    .abi_version = LOKI_BACKEND_ABI_VERSION,
    .name = "echo",
    .init = echo_init,
    .infer = echo_infer,
    .fini = echo_fini,
};

const struct loki_backend_v1 *loki_backend_v1_get(void)
{
    return &ops;
}
