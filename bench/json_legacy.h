/* SPDX-License-Identifier: Apache-2.0 */
/* The pre-jansson JSON status renderer (json_legacy.c): bench_json's baseline, a test's reference.
 */
#ifndef LOKI_BENCH_JSON_LEGACY_H
#define LOKI_BENCH_JSON_LEGACY_H

#include "loki/status.h"

/* Render @v as the status report's JSON the hand-written way. Returns 0 or -ENOMEM. */
int loki_bench_status_json_legacy(const struct loki_status_view *v, struct loki_report *out);

#endif
