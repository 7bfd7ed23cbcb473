/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The planner actor's libuv binding (planner_uv.h). One uv_work_t: the actor
 * starts at most one solve at a time, so one request is enough, and it is
 * owned here rather than by each harness.
 */
#include "planner_uv.h"

#include <errno.h>
#include <stdlib.h>
#include <uv.h>

#include "planner.h"

struct loki_planner_uv {
    uv_loop_t *loop;
    uv_work_t work;
    struct loki_planner_actor *a;
    bool busy, stopping;
};

int loki_planner_uv_create(struct uv_loop_s *loop, struct loki_planner_uv **out)
{
    struct loki_planner_uv *u = calloc(1, sizeof(*u));
    if (!u)
        return -ENOMEM;
    u->loop = loop;
    u->work.data = u;
    *out = u;
    return 0;
}

void loki_planner_uv_bind(struct loki_planner_uv *u, struct loki_planner_actor *a)
{
    u->a = a;
}

/* On a pool thread: the actor's off-loop half (it touches nothing the loop writes meanwhile). */
static void on_work(uv_work_t *w)
{
    struct loki_planner_uv *u = w->data;
    loki_planner_actor_work(u->a);
}

static void on_after(uv_work_t *w, int status)
{
    struct loki_planner_uv *u = w->data;
    u->busy = false;
    loki_planner_actor_done(u->a, status != 0 || u->stopping);
}

int loki_planner_uv_offload(struct loki_planner_uv *u)
{
    if (!u->stopping && uv_queue_work(u->loop, &u->work, on_work, on_after) == 0) {
        u->busy = true;
        return 0;
    }
    /* cannot queue (never with a live loop) or stopping: answer inline, applying nothing */
    loki_planner_actor_work(u->a);
    loki_planner_actor_done(u->a, u->stopping);
    return 0;
}

void loki_planner_uv_stop(struct loki_planner_uv *u)
{
    u->stopping = true;
}

bool loki_planner_uv_is_busy(const struct loki_planner_uv *u)
{
    return u->busy;
}

void loki_planner_uv_destroy(struct loki_planner_uv *u)
{
    free(u);
}
