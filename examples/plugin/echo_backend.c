/* SPDX-License-Identifier: Apache-2.0 */
/*
 * An example backend plugin for loki_backend_v2. It "detects" by cutting its input into
 * 100-byte pieces, each one a child payload for every child task (so a 250-byte frame gives
 * 2 sub-queries per child task, carrying bytes 0..99 and 100..199), and "classifies" by
 * answering "VARIANT sum=S len=N" for the bytes it was given. Down a pipeline, each leaf's
 * output thus names the piece its own parent cut for it. Build it as a shared object and
 * name it in a variant's `backend:` key; `args: {piece_bytes: N}` changes the piece size.
 * See docs/backend.md.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loki/backend.h"

struct echo {
    int n_children;
    uint32_t piece;
    char variant[64];
};

static int echo_init(const struct loki_backend_config *cfg, void **state)
{
    struct echo *e = calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    e->n_children = cfg->n_children;
    e->piece = 100;
    const char *p = loki_backend_arg(cfg, "piece_bytes");
    if (p) {
        char *end;
        unsigned long v = strtoul(p, &end, 10);
        if (end == p || *end || v == 0 || v > (1u << 24)) {
            free(e);
            return -EINVAL;
        }
        e->piece = (uint32_t)v;
    }
    snprintf(e->variant, sizeof(e->variant), "%s", cfg->variant);
    *state = e;
    return 0;
}

static int echo_infer(void *state, const struct loki_backend_query *q, int n,
                      struct loki_backend_out *out)
{
    struct echo *e = state;
    for (int i = 0; i < n; i++) {
        const unsigned char *p = q[i].payload;
        unsigned sum = 0;
        for (uint32_t k = 0; k < q[i].payload_len; k++)
            sum += p[k];
        /* children: whole pieces of the input, for every child task */
        for (int c = 0; c < e->n_children; c++)
            for (uint32_t off = 0; off + e->piece <= q[i].payload_len; off += e->piece) {
                void *dst = out->child(out, i, c, e->piece);
                if (!dst)
                    break; /* over max_output_bytes: the query has failed already */
                memcpy(dst, p + off, e->piece);
            }
        char text[96];
        int len =
            snprintf(text, sizeof(text), "%s sum=%u len=%u", e->variant, sum, q[i].payload_len);
        void *dst = out->output(out, i, (uint32_t)len);
        if (dst)
            memcpy(dst, text, (size_t)len);
    }
    return 0;
}

static void echo_fini(void *state)
{
    free(state);
}

static const struct loki_backend_v2 ops = {
    .abi_version = LOKI_BACKEND_ABI_VERSION,
    .name = "echo",
    .init = echo_init,
    .infer = echo_infer,
    .fini = echo_fini,
};

const struct loki_backend_v2 *loki_backend_v2_get(void)
{
    return &ops;
}
