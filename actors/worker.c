/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Worker loop (see worker.h). Per batch: wait for a descriptor (poll
 * for up to the topology's runtime.spin_us, adapted to how soon batches come,
 * then park on the futex), decode it in place, map every payload reference
 * through the arena (a stale reference fails that query, not the worker),
 * run the backend, send one result record, then consume the descriptor.
 * Payload blocks belong to the router, which frees them when the root query
 * is answered, so a worker that dies mid-batch leaks nothing and the router
 * can re-run the batch elsewhere.
 */
#include "worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "loki/arena.h"
#include "loki/backend.h"
#include "loki/batch.h"
#include "loki/error.h"
#include "loki/ring.h"
#ifdef LOKI_HAVE_CUDA
#include "loki/cuda.h"
#endif

/* One loaded variant: its backend and what its config points at (valid until fini). */
struct loaded {
    int variant;
    const struct loki_backend_v1 *be;
    void *state;
    double means[LOKI_MAX_CHILDREN];
    int dists[LOKI_MAX_CHILDREN];
};

struct wstate {
    struct loki_ring *req, *res;
    struct loki_arena *arena;
    struct loaded m[2]; /* [0] the instance's variant, [1] its fallback */
    int n_m;
    int max_batch;
    struct loki_backend_query *q;
    struct loki_backend_result *r;
    struct loki_batch_result_query *rq;
};

static int send_result(struct wstate *w, const struct loki_batch_result *res)
{
    for (;;) {
        int rc = loki_batch_result_send(w->res, res);
        if (rc != -EAGAIN)
            return rc;
        rc = loki_ring_wait(w->res, loki_batch_result_max_size(res), -1);
        if (rc)
            return rc;
    }
}

static int run_batch(struct wstate *w, const void *rec, size_t len)
{
    struct loki_batch_view v;
    int rc = loki_batch_decode(rec, len, &v);
    if (rc)
        return rc;
    if (v.kind != LOKI_BATCH_KIND_DESC || v.n_queries == 0 || (int)v.n_queries > w->max_batch)
        return LOKI_ECORRUPT;
    struct loki_batch_query bq;
    int n = 0;
    while ((rc = loki_batch_next_query(&v, &bq)) == 1) {
        struct loki_backend_query *q = &w->q[n];
        q->id = bq.query_id;
        q->payload = NULL;
        q->payload_len = bq.payload.len;
        w->rq[n].status = 0;
        if (bq.payload.len) {
            void *p;
            int g = loki_arena_get(w->arena, bq.payload, &p);
            if (g) {
                w->rq[n].status = g; /* stale or bad reference: this query fails alone */
                q->payload_len = 0;
            } else {
                q->payload = p;
            }
        }
        n++;
    }
    if (rc < 0)
        return rc;
    const struct loaded *m = NULL;
    for (int k = 0; k < w->n_m; k++)
        if ((uint32_t)w->m[k].variant == v.variant)
            m = &w->m[k];
    if (!m)
        return LOKI_ECORRUPT; /* a variant this worker did not load */
    rc = m->be->infer(m->state, w->q, n, w->r);
    for (int i = 0; i < n; i++) {
        struct loki_batch_result_query *o = &w->rq[i];
        const struct loki_backend_result *r = &w->r[i];
        o->query_id = w->q[i].id;
        if (o->status == 0)
            o->status = rc ? rc : r->status;
        o->out_kind = LOKI_BATCH_OUT_NONE;
        o->n_fanout = 0;
        if (o->status == 0) {
            uint32_t olen =
                r->output_len < LOKI_BATCH_INLINE_MAX ? r->output_len : LOKI_BATCH_INLINE_MAX;
            if (olen) {
                o->out_kind = LOKI_BATCH_OUT_INLINE;
                o->inline_data = r->output;
                o->inline_len = olen;
            }
            o->n_fanout =
                r->n_children < LOKI_BATCH_MAX_CHILDREN ? r->n_children : LOKI_BATCH_MAX_CHILDREN;
            memcpy(o->fanout, r->fanout, sizeof(uint32_t) * o->n_fanout);
        }
    }
    struct loki_batch_result res = {.batch_id = v.batch_id,
                                    .instance_id = v.instance_id,
                                    .n_queries = (uint32_t)n,
                                    .queries = w->rq};
    return send_result(w, &res);
}

/* Choose, configure and initialise the backend for variant @vi in @m. */
static int load_variant(const struct loki_worker_args *a, int vi, int max_batch, struct loaded *m,
                        char *err, unsigned errlen)
{
    const struct loki_pipeline *p = &a->topo->pipelines[a->pipeline];
    const struct loki_task *t = &p->tasks[a->task];
    const struct loki_variant *var = &t->variants[vi];
    int rc;
    m->variant = vi;
    m->be = a->backend;
    if (!m->be) {
        if (var->backend == LOKI_BACKEND_PLUGIN) {
            rc = loki_backend_load_plugin(var->backend_path, &m->be, err, errlen);
            if (rc)
                return rc;
        } else if (var->backend == LOKI_BACKEND_CUDA) {
#ifdef LOKI_HAVE_CUDA
            m->be = loki_backend_cuda();
#else
            snprintf(err, errlen, "variant %s asks for the cuda backend, not built in this lokid",
                     var->name);
            return -ENOTSUP;
#endif
        } else {
            m->be = loki_backend_sim();
        }
    }
    int s = loki_variant_share_index(var, a->share);
    if (s < 0) {
        snprintf(err, errlen, "variant %s has no profile at share %g", var->name, a->share);
        return -EINVAL;
    }
    for (int c = 0; c < t->n_children; c++) {
        m->means[c] = var->fanout[c].mean;
        m->dists[c] = (int)var->fanout[c].dist;
    }
    struct loki_backend_config cfg = {
        .pipeline = p->name,
        .task = t->name,
        .variant = var->name,
        .max_batch = max_batch,
        .share = a->share,
        .gpu = a->gpu,
        .n_batches = var->n_batches,
        .batches = var->batches,
        .latency_ms = var->latency_ms[s],
        .n_children = t->n_children,
        .fanout_mean = m->means,
        .fanout_dist = m->dists,
        .seed = a->seed + (uint64_t)(vi != a->variant),
        .args = getenv("LOKI_BACKEND_ARGS"),
    };
    if ((rc = m->be->init(&cfg, &m->state))) {
        snprintf(err, errlen, "backend %s init for %s: %s", m->be->name, var->name,
                 loki_strerror(rc));
#ifdef LOKI_HAVE_CUDA
        if (m->be == loki_backend_cuda())
            snprintf(err, errlen, "backend cuda init for %s: %s (%s)", var->name, loki_strerror(rc),
                     loki_cuda_last_error());
#endif
        return rc;
    }
    if (m->be == loki_backend_sim() && var->startup_ms > 0) {
        /* The sim backend stands in for a model that takes startup_ms to load: the instance
         * is ready that long after its process started (per variant it loads), as the replay
         * harness charges it. */
        long long ns = (long long)(var->startup_ms * 1e6);
        struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000LL),
                              .tv_nsec = (long)(ns % 1000000000LL)};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    return 0;
}

int loki_worker_run(const struct loki_worker_args *a, char *err, unsigned errlen)
{
    struct wstate w = {0};
    const struct loki_pipeline *p = &a->topo->pipelines[a->pipeline];
    const struct loki_task *t = &p->tasks[a->task];
    const struct loki_variant *var = &t->variants[a->variant];
    int rc;

    /* The default 50 us timer slack would add to every timed sleep of a backend (the sim
     * backend's emulated latency most of all, even when its deadline has already passed):
     * sleeps here are part of the measured service time. Per thread, best effort. */
    prctl(PR_SET_TIMERSLACK, 1ul, 0ul, 0ul, 0ul);

    /* the router may raise the batch cap in place (a plan change without a restart):
     * size for the largest batch the variant (or its fallback) is profiled for */
    int fb = a->fallback - 1;
    if (fb >= t->n_variants || fb == a->variant || a->fallback < 0) {
        snprintf(err, errlen, "bad fallback %d for %s", a->fallback, var->name);
        return -EINVAL;
    }
    w.max_batch =
        a->batch > var->batches[var->n_batches - 1] ? a->batch : var->batches[var->n_batches - 1];
    if (fb >= 0) {
        const struct loki_variant *fv = &t->variants[fb];
        if (fv->batches[fv->n_batches - 1] > w.max_batch)
            w.max_batch = fv->batches[fv->n_batches - 1];
    }
    if ((rc = loki_ring_attach(a->req_fd, LOKI_RING_CONSUMER, &w.req))) {
        snprintf(err, errlen, "attach batch ring: %s", loki_strerror(rc));
        return rc;
    }
    if ((rc = loki_ring_attach(a->res_fd, LOKI_RING_PRODUCER, &w.res))) {
        snprintf(err, errlen, "attach result ring: %s", loki_strerror(rc));
        goto out_req;
    }
    if (a->notify_fd >= 0)
        loki_ring_set_notify(w.res, -1, a->notify_fd);
    /* between batches: poll for the next one this long (adaptive below it), then park */
    loki_ring_set_spin(w.req, a->spin_ns);
    loki_ring_set_spin(w.res, a->spin_ns);
    if ((rc = loki_arena_attach(a->arena_fd, &w.arena))) {
        snprintf(err, errlen, "attach payload arena: %s", loki_strerror(rc));
        goto out_res;
    }
    w.q = calloc((size_t)w.max_batch, sizeof(*w.q));
    w.r = calloc((size_t)w.max_batch, sizeof(*w.r));
    w.rq = calloc((size_t)w.max_batch, sizeof(*w.rq));
    if (!w.q || !w.r || !w.rq) {
        rc = -ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto out_mem;
    }

    w.n_m = 0;
    for (int k = 0; k < 1 + (fb >= 0); k++) {
        if ((rc = load_variant(a, k ? fb : a->variant, w.max_batch, &w.m[k], err, errlen)))
            goto out_be;
        w.n_m++;
    }
    struct loki_batch_result ready = {.batch_id = LOKI_WORKER_READY_BATCH,
                                      .instance_id = a->instance_id};
    if ((rc = send_result(&w, &ready))) {
        snprintf(err, errlen, "announce ready: %s", loki_strerror(rc));
        goto out_be;
    }
    for (;;) {
        rc = loki_ring_wait(w.req, 0, -1);
        if (rc == -EPIPE || rc == LOKI_EPEERDEAD) {
            rc = 0; /* the router went away: nothing left to do */
            break;
        }
        if (rc) {
            snprintf(err, errlen, "wait for batch: %s", loki_strerror(rc));
            break;
        }
        const void *rec;
        size_t len;
        if ((rc = loki_ring_peek(w.req, &rec, &len))) {
            snprintf(err, errlen, "read batch: %s", loki_strerror(rc));
            break;
        }
        rc = run_batch(&w, rec, len);
        loki_ring_consume(w.req);
        if (rc == -EPIPE || rc == LOKI_EPEERDEAD) {
            rc = 0;
            break;
        }
        if (rc) {
            snprintf(err, errlen, "batch: %s", loki_strerror(rc));
            break;
        }
    }
out_be:
    for (int k = 0; k < w.n_m; k++)
        w.m[k].be->fini(w.m[k].state);
out_mem:
    free(w.q);
    free(w.r);
    free(w.rq);
    loki_arena_destroy(w.arena);
out_res:
    loki_ring_destroy(w.res);
out_req:
    loki_ring_destroy(w.req);
    return rc;
}
