/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The router actor's state, shared by its two files: router_actor.c (requests, dispatch,
 * workers' lives, stalls, restarts, create/destroy) and router_reply.c (results into the
 * result tree, child payloads, replies). Internal to actors/.
 */
#ifndef LOKI_ROUTER_ACTOR_INTERNAL_H
#define LOKI_ROUTER_ACTOR_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "frontend.h"
#include "loki/batch.h"
#include "loki/limits.h"
#include "loki/proto.h"
#include "loki/router.h"
#include "router_actor.h"

#define NIL UINT32_MAX
#define INPUT 0x80000000u /* a router data word naming an input record */
#define NODE_INLINE 32    /* outputs this small stay in the node */

struct root {
    bool used;
    uint32_t gen; /* bumped per use: a late result for a finished root is recognised */
    struct loki_frontend_conn *conn;
    uint64_t id;
    uint64_t arrival_ns;
    bool queued_seen; /* queueing time recorded (first dispatch of its root task) */
    struct loki_arena_ref payload;
    uint32_t first_node, last_node, n_nodes; /* its result tree, in completion order */
    uint32_t first_input;                    /* its child payloads */
    uint64_t result_bytes;                   /* outputs kept so far */
    uint32_t handle;                         /* the router's (loki_router_cancel) */
    const char *why;                         /* set: answer error with this (first wins) */
    bool busy;                               /* why is a lack of room: answer overloaded */
};

/* One answered sub-query: a node of its root's result tree. */
struct node {
    uint32_t next;   /* the root's list, or the free list */
    uint32_t parent; /* pool index, NIL for the root task's */
    uint32_t index;  /* its place in the reply (set while replying) */
    uint8_t task, variant, inline_len;
    bool failed, leaf;
    struct loki_arena_ref out; /* in the payload arena; len 0: none (or inline) */
    uint8_t inl[NODE_INLINE];
};

/* A child sub-query's payload (in the payload arena) and the node that emitted it. */
struct input {
    uint32_t next; /* the root's list, or the free list */
    uint32_t parent;
    struct loki_arena_ref ref;
};

/* A batch a worker holds: what its result needs to find its roots again. */
struct inflight {
    uint64_t batch_id, t_ns;
    double expect_ms; /* its profiled latency at the instance's share */
    int pipeline, task, variant, n;
    uint64_t *cookies; /* [max_batch]: each query's root cookie */
    uint32_t *data;    /* [max_batch]: each query's router data word */
};

struct inst {
    bool live;
    bool stalled;          /* killed for making no progress; its exit re-runs its batches */
    uint64_t last_done_ns; /* its last result */
    int n_inflight;
    struct inflight b[LOKI_MAX_BATCH_INFLIGHT];
    unsigned restarts;
};

struct loki_router_actor {
    struct loki_router_actor_config cfg;
    struct loki_router_actor_ops ops;
    void *ctx;
    const struct loki_topology *topo;
    struct loki_router *router;
    struct loki_sup *sup;
    int max_batch; /* the topology's largest profiled batch size */
    struct root *roots;
    uint32_t *free_roots, n_free;
    struct node *nodes;
    struct input *inputs;
    uint32_t n_pool, free_node, free_input; /* both pools have n_pool entries */
    uint32_t *words;                        /* a batch's child data words */
    size_t cap_words;
    struct loki_reply_node *rnodes; /* a reply's tree, [LOKI_MAX_REPLY_NODES] */
    struct inst inst[LOKI_MAX_INSTANCE_IDS];
    /* scratch for one batch, [max_batch] (x LOKI_MAX_CHILDREN) */
    struct loki_batch_query *q;
    uint16_t *children, *packed; /* [max_batch * LOKI_MAX_CHILDREN] */
    uint8_t *failed;
    uv_timer_t restart_timer;
    unsigned start_retries; /* rounds of failed worker starts since the last that had none */
    uv_timer_t stall_timer; /* every STALL_SCAN_MS: workers that stopped making progress */
    bool draining;
    struct loki_plan *plan_restart;
    uint64_t now_hint;       /* set: the router's clock reads this (r_now) */
    struct loki_reply reply; /* scratch: large, encoded before reuse */
    char paths[LOKI_MAX_TASKS * 8][LOKI_PROTO_PATH_STR_MAX / 8];
};

/* router_reply.c */
/* Answer request @id at once with @status (overloaded ones carry the retry hint). */
void loki__ra_reply_now(struct loki_router_actor *ra, struct loki_frontend_conn *conn, uint64_t id,
                        enum loki_status status, const char *why);
/* Give back root slot @c and everything it holds. */
void loki__ra_release_root(struct loki_router_actor *ra, uint32_t c);
/* The router's completion of a root: its one reply. */
void loki__ra_complete(void *ctx, const struct loki_router_completion *c);
/* A worker's result record: the tree, child payloads, the router's batch_done. */
void loki__ra_result(void *ctx, int inst, struct loki_batch_view *v);

#endif
