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
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "loki/arena.h"
#include "loki/backend.h"
#include "loki/backend_setup.h"
#include "loki/batch.h"
#include "loki/error.h"
#include "loki/ring.h"
#ifdef LOKI_HAVE_CUDA
#include "loki/cuda.h"
#endif

/* One loaded variant: its backend and what its config points at (valid until fini). */
struct loaded {
    int variant;
    struct loki_backend_handle h;
    void *state;
    uint32_t max_output;
    struct loki_backend_setup setup; /* its config (not moved: it points into itself) */
};

/* What one query of the batch emitted so far. */
struct qout {
    uint32_t bytes;  /* output + child payloads, against max_output_bytes */
    uint32_t n_kids; /* child sub-queries emitted */
    uint32_t kid0;   /* finish: its children are sorted[kid0 .. kid0 + n_kids) */
    uint8_t inline_len;
    bool has_ref, failed;
    struct loki_arena_ref ref;
    uint8_t inline_buf[LOKI_BATCH_INLINE_MAX];
    char msg[LOKI_BATCH_MSG_MAX + 1];
};

struct kid {
    int query, child;
    struct loki_arena_ref ref;
    void *ptr;
};

struct wstate {
    struct loki_ring *req, *res;
    struct loki_arena *arena, *out; /* lokid's payloads (read), this worker's outputs (alloc) */
    struct loaded m[2];             /* [0] the instance's variant, [1] its fallback */
    int n_m;
    int max_batch;
    int n_children;
    struct loki_backend_query *q;
    struct loki_batch_result_query *rq;
    struct qout *qo;
    struct kid *kids, *sorted; /* as emitted; grouped by query (finish) */
    uint32_t n_kids, cap_kids;
    const struct loaded *cur; /* the variant running this batch */
    int n;                    /* queries in it */
    struct loki_backend_out emit;
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

/* ---- the emitter: struct loki_backend_out over the output arena ------------------------------ */

static struct wstate *W(struct loki_backend_out *o)
{
    return (struct wstate *)((char *)o - offsetof(struct wstate, emit));
}

static void q_fail(struct wstate *w, int i, int32_t status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Fail query @i: what it emitted goes back to the arena now. */
static void q_fail(struct wstate *w, int i, int32_t status, const char *fmt, ...)
{
    struct qout *qo = &w->qo[i];
    if (qo->failed)
        return;
    qo->failed = true;
    w->rq[i].status = status < 0 ? status : -EIO;
    qo->msg[0] = 0;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(qo->msg, sizeof(qo->msg), fmt, ap);
        va_end(ap);
    }
    if (qo->has_ref && w->out)
        loki_arena_free(w->out, qo->ref);
    qo->has_ref = false;
    qo->inline_len = 0;
    if (qo->n_kids)
        for (uint32_t k = 0; k < w->n_kids; k++)
            if (w->kids[k].query == i) {
                if (w->kids[k].ref.len && w->out)
                    loki_arena_free(w->out, w->kids[k].ref);
                w->kids[k].query = -1; /* gone */
            }
    qo->n_kids = 0;
}

/* Room for @len more bytes of query @i: within max_output_bytes, then in the output arena. */
static void *q_alloc(struct wstate *w, int i, uint32_t len, struct loki_arena_ref *ref)
{
    struct qout *qo = &w->qo[i];
    if (qo->failed)
        return NULL;
    if (len > w->cur->max_output - qo->bytes) {
        q_fail(w, i, LOKI_ETOOBIG, "output too large: %u bytes over max_output_bytes %u",
               qo->bytes + len - w->cur->max_output, w->cur->max_output);
        return NULL;
    }
    void *p;
    int rc = w->out ? loki_arena_alloc(w->out, len, ref, &p) : -ENOMEM;
    if (rc) {
        q_fail(w, i, rc == LOKI_ETOOBIG ? LOKI_ETOOBIG : -ENOMEM,
               "output too large: no room for %u bytes in the worker's output arena", len);
        return NULL;
    }
    qo->bytes += len;
    return p;
}

static void *emit_output(struct loki_backend_out *o, int i, uint32_t len)
{
    struct wstate *w = W(o);
    if (i < 0 || i >= w->n)
        return NULL;
    struct qout *qo = &w->qo[i];
    if (qo->failed)
        return NULL;
    /* a second output replaces the first */
    if (qo->has_ref) {
        qo->bytes -= qo->ref.len;
        loki_arena_free(w->out, qo->ref);
        qo->has_ref = false;
    }
    qo->bytes -= qo->inline_len;
    qo->inline_len = 0;
    if (len <= LOKI_BATCH_INLINE_MAX) {
        if (len > w->cur->max_output - qo->bytes) {
            q_fail(w, i, LOKI_ETOOBIG, "output too large: max_output_bytes %u", w->cur->max_output);
            return NULL;
        }
        qo->inline_len = (uint8_t)len;
        qo->bytes += len;
        return qo->inline_buf;
    }
    void *p = q_alloc(w, i, len, &qo->ref);
    qo->has_ref = p != NULL;
    return p;
}

static void *emit_child(struct loki_backend_out *o, int i, int child, uint32_t len)
{
    static uint8_t empty[1];
    struct wstate *w = W(o);
    if (i < 0 || i >= w->n || child < 0 || child >= w->n_children)
        return NULL;
    struct qout *qo = &w->qo[i];
    if (qo->failed)
        return NULL;
    if (qo->n_kids >= LOKI_MAX_QUERY_CHILDREN) {
        q_fail(w, i, LOKI_ETOOBIG, "more than %d child sub-queries", LOKI_MAX_QUERY_CHILDREN);
        return NULL;
    }
    if (w->n_kids == w->cap_kids) {
        uint32_t cap = w->cap_kids ? 2 * w->cap_kids : 1024;
        struct kid *k = realloc(w->kids, sizeof(*k) * cap), *srt = NULL;
        if (k)
            w->kids = k;
        if (k && (srt = realloc(w->sorted, sizeof(*srt) * cap)))
            w->sorted = srt;
        if (!k || !srt) {
            q_fail(w, i, -ENOMEM, "out of memory for child sub-queries");
            return NULL;
        }
        w->cap_kids = cap;
    }
    struct kid *k = &w->kids[w->n_kids];
    memset(k, 0, sizeof(*k));
    k->query = i;
    k->child = child;
    void *p = empty;
    if (len && !(p = q_alloc(w, i, len, &k->ref)))
        return NULL;
    k->ptr = p;
    w->n_kids++;
    qo->n_kids++;
    return p;
}

static void emit_shrink(struct loki_backend_out *o, void *p, uint32_t len)
{
    struct wstate *w = W(o);
    for (int i = 0; i < w->n; i++) {
        struct qout *qo = &w->qo[i];
        if (qo->failed)
            continue;
        if (p == qo->inline_buf && len < qo->inline_len) {
            qo->bytes -= qo->inline_len - len;
            qo->inline_len = (uint8_t)len;
            return;
        }
        void *rp;
        if (qo->has_ref && len < qo->ref.len && !loki_arena_get(w->out, qo->ref, &rp) && rp == p) {
            qo->bytes -= qo->ref.len - len;
            qo->ref.len = len;
            return;
        }
    }
    for (uint32_t k = 0; k < w->n_kids; k++)
        if (w->kids[k].query >= 0 && w->kids[k].ptr == p && len < w->kids[k].ref.len) {
            w->qo[w->kids[k].query].bytes -= w->kids[k].ref.len - len;
            w->kids[k].ref.len = len;
            return;
        }
}

static void emit_fail(struct loki_backend_out *o, int i, int32_t status, const char *msg)
{
    struct wstate *w = W(o);
    if (i >= 0 && i < w->n)
        q_fail(w, i, status, msg ? "%s" : NULL, msg);
}

/* Query @i's result record: counts per child task, the children's table, its output. */
static void finish_query(struct wstate *w, int i)
{
    struct qout *qo = &w->qo[i];
    struct loki_batch_result_query *o = &w->rq[i];
    o->query_id = w->q[i].id;
    o->out_kind = LOKI_BATCH_OUT_NONE;
    o->n_fanout = 0;
    memset(&o->children, 0, sizeof(o->children));
    o->msg = NULL;
    o->msg_len = 0;
    if (o->status) {
        o->msg = qo->msg;
        o->msg_len = (uint32_t)strnlen(qo->msg, LOKI_BATCH_MSG_MAX);
        return;
    }
    o->n_fanout = (uint32_t)w->n_children;
    memset(o->fanout, 0, sizeof(o->fanout));
    bool payloads = false;
    const struct kid *kids = &w->sorted[qo->kid0];
    for (uint32_t k = 0; k < qo->n_kids; k++) {
        o->fanout[kids[k].child]++;
        payloads |= kids[k].ref.len > 0;
    }
    if (payloads) {
        /* the table: child task 0's refs first, each task's in the order they were emitted */
        struct loki_arena_ref tref;
        struct loki_arena_ref *t;
        uint32_t bytes = (uint32_t)sizeof(*t) * qo->n_kids;
        int rc = loki_arena_alloc(w->out, bytes, &tref, (void **)&t);
        if (rc) {
            q_fail(w, i, -ENOMEM, "no room for the table of %u child payloads", qo->n_kids);
            finish_query(w, i);
            return;
        }
        uint32_t at = 0;
        for (int c = 0; c < w->n_children; c++)
            for (uint32_t k = 0; k < qo->n_kids; k++)
                if (kids[k].child == c)
                    t[at++] = kids[k].ref;
        tref.len = bytes;
        o->children = tref;
    }
    if (qo->has_ref) {
        o->out_kind = LOKI_BATCH_OUT_REF;
        o->out_ref = qo->ref;
    } else if (qo->inline_len) {
        o->out_kind = LOKI_BATCH_OUT_INLINE;
        o->inline_data = qo->inline_buf;
        o->inline_len = qo->inline_len;
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
    const struct loaded *m = NULL;
    for (int k = 0; k < w->n_m; k++)
        if ((uint32_t)w->m[k].variant == v.variant)
            m = &w->m[k];
    if (!m)
        return LOKI_ECORRUPT; /* a variant this worker did not load */
    w->cur = m;
    w->n_kids = 0;
    struct loki_batch_query bq;
    int n = 0;
    while ((rc = loki_batch_next_query(&v, &bq)) == 1) {
        struct loki_backend_query *q = &w->q[n];
        q->id = bq.query_id;
        q->payload = NULL;
        q->payload_len = bq.payload.len;
        w->rq[n].status = 0;
        memset(&w->qo[n], 0, offsetof(struct qout, inline_buf));
        w->qo[n].msg[0] = 0;
        if (bq.payload.len) {
            void *p;
            int g = loki_arena_get(w->arena, bq.payload, &p);
            if (g) {
                /* stale or bad reference: this query fails alone */
                w->rq[n].status = g;
                w->qo[n].failed = true;
                snprintf(w->qo[n].msg, sizeof(w->qo[n].msg), "payload reference: %s",
                         loki_strerror(g));
                q->payload_len = 0;
            } else {
                q->payload = p;
            }
        }
        n++;
    }
    if (rc < 0)
        return rc;
    w->n = n;
    rc = loki_backend_infer(&m->h, m->state, w->q, n, &w->emit);
    /* group the children by query (a counting sort, emission order kept within a query) */
    uint32_t at = 0;
    for (int i = 0; i < n; i++) {
        w->qo[i].kid0 = at;
        at += w->qo[i].n_kids;
        w->qo[i].n_kids = 0;
    }
    for (uint32_t k = 0; k < w->n_kids; k++) {
        int qi = w->kids[k].query;
        if (qi >= 0)
            w->sorted[w->qo[qi].kid0 + w->qo[qi].n_kids++] = w->kids[k];
    }
    for (int i = 0; i < n; i++) {
        if (rc && !w->qo[i].failed)
            q_fail(w, i, rc, "the backend failed the batch: %s", loki_strerror(rc));
        finish_query(w, i);
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
    const struct loki_variant *var = &a->topo->pipelines[a->pipeline].tasks[a->task].variants[vi];
    int rc;
    m->variant = vi;
    if (a->backend)
        m->h = *a->backend;
    else if ((rc = loki_backend_select(var, &m->h, err, errlen)))
        return rc;
    const char *name = loki_backend_name(&m->h);
    if ((rc = loki_backend_setup_init(&m->setup, a->topo, a->pipeline, a->task, vi, max_batch,
                                      a->share, a->gpu, a->seed + (uint64_t)(vi != a->variant), err,
                                      errlen)))
        return rc;
    m->max_output = m->setup.cfg.max_output_bytes;
    if ((rc = loki_backend_init(&m->h, &m->setup.cfg, &m->state))) {
        snprintf(err, errlen, "backend %s init for %s: %s", name, var->name, loki_strerror(rc));
#ifdef LOKI_HAVE_CUDA
        if (m->h.v1 == loki_backend_cuda())
            snprintf(err, errlen, "backend cuda init for %s: %s (%s)", var->name, loki_strerror(rc),
                     loki_cuda_last_error());
#endif
        return rc;
    }
    if (m->h.be == loki_backend_sim() && var->startup_ms > 0) {
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
    if (a->out_fd >= 0 && (rc = loki_arena_attach(a->out_fd, &w.out))) {
        snprintf(err, errlen, "attach output arena: %s", loki_strerror(rc));
        loki_arena_destroy(w.arena);
        goto out_res;
    }
    w.q = calloc((size_t)w.max_batch, sizeof(*w.q));
    w.rq = calloc((size_t)w.max_batch, sizeof(*w.rq));
    w.qo = calloc((size_t)w.max_batch, sizeof(*w.qo));
    w.n_children = t->n_children;
    w.emit = (struct loki_backend_out){
        .output = emit_output, .child = emit_child, .shrink = emit_shrink, .fail = emit_fail};
    if (!w.q || !w.rq || !w.qo) {
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
        loki_backend_fini(&w.m[k].h, w.m[k].state);
out_mem:
    free(w.q);
    free(w.qo);
    free(w.kids);
    free(w.sorted);
    loki_arena_destroy(w.out);
    free(w.rq);
    loki_arena_destroy(w.arena);
out_res:
    loki_ring_destroy(w.res);
out_req:
    loki_ring_destroy(w.req);
    return rc;
}
