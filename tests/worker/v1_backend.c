/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A backend plugin built for ABI version 1 (its own copy of the version-1 table, as an old
 * plugin's header had it): test_backend loads it through the adapter. Output "v1:ID", two
 * sub-queries for child task 0, query id 13 fails with -EDOM.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "loki/backend.h"

static int v1_init(const struct loki_backend_config *cfg, void **state)
{
    (void)cfg;
    *state = NULL;
    return 0;
}

static int v1_infer(void *state, const struct loki_backend_query *q, int n,
                    struct loki_backend_result *out)
{
    (void)state;
    for (int i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof(out[i]));
        if (q[i].id == 13) {
            out[i].status = -33; /* -EDOM */
            continue;
        }
        out[i].n_children = 1;
        out[i].fanout[0] = 2;
        out[i].output_len = (uint32_t)snprintf((char *)out[i].output, sizeof(out[i].output),
                                               "v1:%llu", (unsigned long long)q[i].id);
    }
    return 0;
}

static void v1_fini(void *state)
{
    (void)state;
}

static const struct loki_backend_v1 ops = {
    .abi_version = LOKI_BACKEND_ABI_V1,
    .name = "old",
    .init = v1_init,
    .infer = v1_infer,
    .fini = v1_fini,
};

const struct loki_backend_v1 *loki_backend_v1_get(void)
{
    return &ops;
}
