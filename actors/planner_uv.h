/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The planner actor on a libuv loop: its solves run on libuv's thread pool
 * (uv_queue_work), so a solve never stalls the loop that routes queries, and
 * their plans are applied back on the loop. lokid uses this binding; the
 * replay runs the same actor inline on its virtual clock.
 */
#ifndef LOKI_ACTOR_PLANNER_UV_H
#define LOKI_ACTOR_PLANNER_UV_H

#include <stdbool.h>

struct uv_loop_s;
struct loki_planner_actor;
struct loki_planner_uv;

/* Bind to @loop (borrowed). Returns 0 or -ENOMEM. Release with loki_planner_uv_destroy(). */
int loki_planner_uv_create(struct uv_loop_s *loop, struct loki_planner_uv **out);

/* The actor whose solves this binding runs (set once, after the actor is created). */
void loki_planner_uv_bind(struct loki_planner_uv *u, struct loki_planner_actor *a);

/*
 * For loki_planner_actor_ops.offload: queue the solve on the pool; its done
 * runs on the loop. Returns 0 (a queueing failure solves inline instead).
 */
int loki_planner_uv_offload(struct loki_planner_uv *u);

/* From now on a solve that finishes is discarded, not applied (shutdown). */
void loki_planner_uv_stop(struct loki_planner_uv *u);

/* Whether a solve is queued or running (the loop must run until it is not). */
bool loki_planner_uv_is_busy(const struct loki_planner_uv *u);

/* Release; no solve may be in flight. */
void loki_planner_uv_destroy(struct loki_planner_uv *u);

#endif
