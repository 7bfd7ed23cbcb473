/* SPDX-License-Identifier: Apache-2.0 */
/*
 * actors/router_actor.h: the router actor, lokid's data plane on its loop. It owns the
 * router (runtime/router: EDF queues, split, batching, drops, fan-out) and what the router
 * leaves to its caller: one root slot per accepted query (its connection, id, payload in
 * the shared arena, the leaf outputs gathered so far), the batches each worker holds, the
 * reply built from a completion, and worker restarts with backoff (a worker that died, or one
 * whose start failed: the router never routes to an instance that did not start).
 *
 *   frontend ─loki_router_actor_request─▶ router ─dispatch─▶ supervisor (request ring)
 *   frontend ◀─loki_frontend_reply──────── router ◀─result── supervisor (result ring)
 *
 * Every accepted query gets exactly one reply: the router completes every submitted root
 * once, and a query refused before it reached the router is answered here. Everything runs
 * on the one loop thread that runs the frontend and the supervisor.
 */
#ifndef LOKI_ROUTER_ACTOR_H
#define LOKI_ROUTER_ACTOR_H

#include <stdint.h>

#include "loki/model.h"
#include "supervisor.h"

struct uv_loop_s;
struct loki_frontend_conn;
struct loki_request;
struct loki_metrics;
struct loki_router;
struct loki_router_actor;

struct loki_router_actor_config {
    const struct loki_topology *topo; /* borrowed; outlives the actor */
    uint32_t max_roots;           /* accepted queries not yet answered (frontend.max_inflight) */
    uint32_t retry_after_ms;      /* the hint in "overloaded" replies */
    uint32_t max_result;          /* bytes of outputs one reply may carry; 0: 4 MiB */
    size_t arena_bytes;           /* the payload arena's size: new roots are refused
                                   * (overloaded) while less than a quarter of it is free, so
                                   * the roots in flight have room for their children */
    struct loki_metrics *metrics; /* borrowed: queueing, compute, batch sizes, e2e */
};

struct loki_router_actor_ops {
    /* A query arrived that counts toward demand (submitted, or refused by admission control)
     * of pipeline @pipeline at @arrival_ns (loki_now_ns clock). May be NULL. */
    void (*arrival)(void *ctx, int pipeline, uint64_t arrival_ns);
};

/*
 * loki_router_actor_create - the actor and its router for @cfg->topo, on @loop.
 * Workers are started and stopped through the supervisor given to loki_router_actor_attach(),
 * which must happen before the first plan is applied. Errors: -ENOMEM, the router's.
 * Loop thread.
 */
int loki_router_actor_create(struct uv_loop_s *loop, const struct loki_router_actor_config *cfg,
                             const struct loki_router_actor_ops *ops, void *ctx,
                             struct loki_router_actor **out);
/* The supervisor callbacks that feed this actor; create the supervisor with them and the
 * actor as their context, then attach it. */
const struct loki_sup_ops *loki_router_actor_sup_ops(void);
void loki_router_actor_attach(struct loki_router_actor *ra, struct loki_sup *sup);
/* Ring capacity the supervisor should give each worker: a batch of the topology's largest
 * batch size, descriptor and result, always fits (loki_batch_ring_capacity). */
size_t loki_router_actor_ring_bytes(const struct loki_router_actor *ra);

/* The frontend's on_request: admit @req from @conn (answered now when it cannot be). */
void loki_router_actor_request(struct loki_router_actor *ra, struct loki_frontend_conn *conn,
                               const struct loki_request *req);
/* The frontend's on_cancel: drop request @id of @conn (tagged @tag) if nothing of it has
 * been batched; it is answered "cancelled" then, else as usual. */
void loki_router_actor_cancel(struct loki_router_actor *ra, struct loki_frontend_conn *conn,
                              uint64_t id, uint64_t tag);
/* The router, for plans (loki_router_set_plan) and statistics. */
struct loki_router *loki_router_actor_router(struct loki_router_actor *ra);
/* Draining or stopping: dead workers are no longer restarted. */
void loki_router_actor_drain(struct loki_router_actor *ra);
/* Close its loop handles; destroy after the loop has run them closed. */
void loki_router_actor_stop(struct loki_router_actor *ra);
/* Free it (after loki_router_actor_stop and the loop's closing run); NULL is fine. */
void loki_router_actor_destroy(struct loki_router_actor *ra);

/*
 * loki_deadline_ns - the absolute deadline (loki_now_ns clock) of a request asking for
 * @deadline_ms from @now_ns; 0 (none: the SLO applies) when it lies beyond what a uint64
 * holds, which is far beyond any SLO. @deadline_ms > 0 (the protocol refuses the rest).
 */
uint64_t loki_deadline_ns(uint64_t now_ns, double deadline_ms);

#endif
