/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The bundled traffic-analysis topology (examples/traffic_analysis.yaml), loaded for tests that
 * link the topology loader. Fails the test when it cannot be loaded. The caller frees it.
 */
#ifndef LOKI_TEST_EXAMPLE_H
#define LOKI_TEST_EXAMPLE_H

#include "harness.h"
#include "loki/topology.h"

static inline struct loki_topology *loki_test_traffic(void)
{
    struct loki_topology *t = NULL;
    char err[1024];
    if (loki_topology_load(loki_test_src("examples/traffic_analysis.yaml"), &t, err, sizeof(err)) !=
        0)
        fail_msg("cannot load the example: %s", err);
    return t;
}

#endif
