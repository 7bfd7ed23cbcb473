/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A small deployment built in memory for the metrics tests: one pipeline
 * "tiny" (det: fast, slow -> cls: c0) on 8 GPUs, a plan for it and router
 * counters filled by hand, the way lokid would hand them to the reports.
 */
#ifndef LOKI_TEST_METRICS_FIXTURE_H
#define LOKI_TEST_METRICS_FIXTURE_H

#include "loki/plan.h"
#include "loki/router.h"

/* The topology (free() it): det (root; fast acc 80, slow acc 100) -> cls (c0 acc 100). */
struct loki_topology *fx_topology(void);

/*
 * The plan (free() it), policy loki, mode accuracy: det/fast 2 instances (batch 4, share
 * 0.5, GPUs 0 and 1, 200 qps capacity, 150 load), det/slow 1 instance (batch 2, share 0.5,
 * GPU 1, fallback fast, 40 capacity, 30 load), cls/c0 1 instance (batch 8, share 1, GPU 2);
 * root split fast 0.75 / slow 0.25; demand 180 qps, served fraction 1, accuracy 0.85.
 */
struct loki_plan *fx_plan(void);

/*
 * Router counters as after @k seconds of steady traffic: per second 12 arrived, 7 ok,
 * 1 dropped (at cls), 1 late, 1 error, 2 overloaded; 20 sub-queries of which 2 violate;
 * each ok root query at accuracy 90 (sub-query 95).
 */
void fx_stats(struct loki_router_stats *st, uint64_t k);

#endif
