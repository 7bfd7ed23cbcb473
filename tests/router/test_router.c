/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Router policy tests on a manual clock: EDF order, split proportions,
 * batch cap and slack, early drop at the earliest stage (and never a query
 * that could make it), reroute, exactly one completion under plan changes
 * and instance failure, admission control, fan-out accounting, pool limits.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "loki/error.h"
#include "loki/router.h"

#define MS 1000000ull
#define MAXQ 20000

struct rec_batch {
    int instance, variant, task, n;
    double ms;
    uint64_t id;
    uint64_t qid[64];
};

struct ctx {
    uint64_t now;
    struct rec_batch b[4096];
    int nb;
    int done_count[MAXQ];
    enum loki_query_status status[MAXQ];
    struct loki_router_completion last;
    int starts[2048], nstarts;
    int stops;
};

static uint64_t c_now(void *x)
{
    return ((struct ctx *)x)->now;
}

static int c_dispatch(void *x, const struct loki_router_batch *b)
{
    struct ctx *c = x;
    if (c->nb == 4096)
        return -ENOSPC;
    struct rec_batch *r = &c->b[c->nb++];
    r->instance = b->instance;
    r->variant = b->variant;
    r->task = b->task;
    r->n = b->n;
    r->ms = b->expect_ms;
    r->id = b->batch_id;
    for (int i = 0; i < b->n && i < 64; i++)
        r->qid[i] = b->items[i].query_id;
    return 0;
}

static void c_complete(void *x, const struct loki_router_completion *cm)
{
    struct ctx *c = x;
    if (cm->query_id < MAXQ) {
        c->done_count[cm->query_id]++;
        c->status[cm->query_id] = cm->status;
    }
    c->last = *cm;
}

static void c_start(void *x, int inst, const struct loki_plan_instance *pi)
{
    struct ctx *c = x;
    c->starts[c->nstarts++] = inst;
}

static void c_stop(void *x, int inst, uint64_t h)
{
    ((struct ctx *)x)->stops++;
}

/*
 * det (root): fast (acc 80; 10/15/20 ms at batch 1/2/4), slow (acc 100;
 * 20/30/40 ms) -> cls: c0 (acc 100; 5/8 ms at batch 1/4). Fan-out det->cls 2.
 */
static struct loki_topology *tiny(double slo)
{
    struct loki_topology *t = calloc(1, sizeof(*t));
    loki_topology_defaults(t);
    t->gpus.count = 8;
    t->n_pipelines = 1;
    struct loki_pipeline *p = &t->pipelines[0];
    strcpy(p->name, "tiny");
    p->slo_ms = slo;
    p->root = 0;
    p->n_tasks = 2;
    struct loki_task *det = &p->tasks[0], *cls = &p->tasks[1];
    strcpy(det->name, "det");
    det->n_children = 1;
    det->children[0] = 1;
    det->n_variants = 2;
    const double lat[2][3] = {{10, 15, 20}, {20, 30, 40}};
    for (int v = 0; v < 2; v++) {
        struct loki_variant *va = &det->variants[v];
        strcpy(va->name, v ? "slow" : "fast");
        va->accuracy = v ? 100 : 80;
        va->n_batches = 3;
        va->batches[0] = 1;
        va->batches[1] = 2;
        va->batches[2] = 4;
        va->n_shares = 1;
        va->shares[0] = 1;
        for (int b = 0; b < 3; b++)
            va->latency_ms[0][b] = lat[v][b];
        va->fanout[0].mean = 2;
    }
    strcpy(cls->name, "cls");
    cls->n_variants = 1;
    struct loki_variant *c0 = &cls->variants[0];
    strcpy(c0->name, "c0");
    c0->accuracy = 100;
    c0->n_batches = 2;
    c0->batches[0] = 1;
    c0->batches[1] = 4;
    c0->n_shares = 1;
    c0->shares[0] = 1;
    c0->latency_ms[0][0] = 5;
    c0->latency_ms[0][1] = 8;
    return t;
}

/* A plan: @n_fast/@n_slow det instances at @batch, @n_cls cls instances, root split @f_fast. */
static struct loki_plan *mkplan(int n_fast, int n_slow, int batch, int n_cls, float f_fast)
{
    struct loki_plan *pl = calloc(1, sizeof(*pl));
    for (int v = 0; v < 2; v++)
        for (int k = 0; k < (v ? n_slow : n_fast); k++)
            pl->inst[pl->n_instances++] =
                (struct loki_plan_instance){0, 0, v, batch, 1.0, pl->n_instances, 0};
    for (int k = 0; k < n_cls; k++)
        pl->inst[pl->n_instances++] = (struct loki_plan_instance){0, 1, 0, 4, 1.0, 0, 0};
    pl->split[0][0][0][0] = f_fast;
    pl->split[0][0][0][1] = 1 - f_fast;
    pl->split[0][1][0][0] = 1;
    pl->split[0][1][1][0] = 1;
    for (int p = 0; p < LOKI_MAX_PIPELINES; p++)
        pl->served_fraction[p] = 1;
    pl->demand_qps[0] = 100;
    return pl;
}

struct fx {
    struct loki_topology *topo;
    struct ctx *c;
    struct loki_router *r;
};

static void fx_init(struct fx *f, double slo, const struct loki_router_config *cfg, bool async)
{
    f->topo = tiny(slo);
    f->c = calloc(1, sizeof(*f->c));
    struct loki_router_ops ops = {c_now, c_dispatch, c_complete, async ? c_start : NULL, c_stop};
    assert_int_equal(loki_router_create(f->topo, cfg, &ops, f->c, &f->r), 0);
}

static void fx_fini(struct fx *f)
{
    loki_router_destroy(f->r);
    free(f->c);
    free(f->topo);
}

/* Complete recorded batch @k with @kids children per query (cls: none). */
static void finish(struct fx *f, int k, uint16_t kids)
{
    struct rec_batch *b = &f->c->b[k];
    uint16_t ch[64];
    for (int i = 0; i < 64; i++)
        ch[i] = kids;
    assert_int_equal(
        loki_router_batch_done(f->r, b->instance, b->id, b->task == 0 ? ch : NULL, NULL), 0);
}

/* Run every dispatched batch to completion, advancing the clock, until nothing is left. */
static void drain(struct fx *f, uint16_t kids)
{
    for (int k = 0; k < f->c->nb; k++) {
        f->c->now += 1 * MS;
        loki_router_batch_done(f->r, f->c->b[k].instance, f->c->b[k].id,
                               f->c->b[k].task == 0
                                   ? (uint16_t[64]){kids, kids, kids, kids, kids, kids, kids, kids}
                                   : NULL,
                               NULL);
    }
}

static void test_edf_order(void **state)
{
    struct fx f;
    fx_init(&f, 200, NULL, false);
    struct loki_plan *pl = mkplan(0, 1, 1, 1, 0);
    assert_int_equal(loki_router_set_plan(f.r, pl), 0);
    assert_int_equal(loki_router_submit(f.r, 0, 1, 0, 0), 0); /* dispatched at once */
    assert_int_equal(f.c->nb, 1);
    assert_int_equal(loki_router_submit(f.r, 0, 2, 0, 0), 0); /* staged (a full batch of 1) */
    assert_int_equal(f.c->nb, 2);
    assert_int_equal(loki_router_submit(f.r, 0, 3, 0, 0), 0);
    assert_int_equal(loki_router_submit(f.r, 0, 4, 0, 0), 0);
    assert_int_equal(loki_router_submit(f.r, 0, 5, 0, 150 * MS), 0); /* tighter, last in */
    assert_int_equal(f.c->nb, 2);
    f.c->now = 20 * MS;
    finish(&f, 0, 0);
    assert_int_equal(f.c->b[2].qid[0], 5);
    f.c->now = 40 * MS;
    finish(&f, 1, 0);
    assert_int_equal(f.c->b[3].qid[0], 3);
    f.c->now = 60 * MS;
    finish(&f, 2, 0);
    assert_int_equal(f.c->b[4].qid[0], 4);
    finish(&f, 3, 0);
    finish(&f, 4, 0);
    for (int q = 1; q <= 5; q++) {
        assert_int_equal(f.c->done_count[q], 1);
        assert_int_equal(f.c->status[q], LOKI_QUERY_OK);
    }
    free(pl);
    fx_fini(&f);
}

static void test_split_proportions(void **state)
{
    struct fx f;
    fx_init(&f, 200, NULL, false);
    struct loki_plan *pl = mkplan(4, 4, 4, 2, 0.25f);
    assert_int_equal(loki_router_set_plan(f.r, pl), 0);
    for (int q = 1; q <= 800; q++) {
        f.c->now += 10 * MS;
        assert_int_equal(loki_router_submit(f.r, 0, (uint64_t)q, 0, 0), 0);
        while (f.c->nb > 0) { /* finish everything right away */
            struct rec_batch b = f.c->b[--f.c->nb];
            loki_router_batch_done(f.r, b.instance, b.id, NULL, NULL);
        }
    }
    const struct loki_router_stats *st = loki_router_stats(f.r);
    assert_int_equal(st->var[0][0][0].arrived + st->var[0][0][1].arrived, 800);
    assert_in_range(st->var[0][0][0].arrived, 198, 202);
    assert_int_equal(st->pipe[0].ok, 800);
    free(pl);
    fx_fini(&f);
}

static void test_batch_cap_and_slack(void **state)
{
    struct fx f;
    fx_init(&f, 200, NULL, false);
    struct loki_plan *pl = mkplan(0, 1, 4, 1, 0);
    assert_int_equal(loki_router_set_plan(f.r, pl), 0);
    /* q1 runs alone; 10 more queue up behind it. */
    for (int q = 1; q <= 11; q++)
        assert_int_equal(loki_router_submit(f.r, 0, (uint64_t)q, 0, 0), 0);
    /* A full batch is staged behind the executing one, capped at 4. */
    assert_int_equal(f.c->nb, 2);
    assert_int_equal(f.c->b[0].n, 1);
    assert_int_equal(f.c->b[1].n, 4);
    f.c->now = 20 * MS;
    finish(&f, 0, 0);
    assert_int_equal(f.c->nb, 3);
    assert_int_equal(f.c->b[2].n, 4);
    f.c->now = 60 * MS;
    finish(&f, 1, 0);
    f.c->now = 100 * MS;
    finish(&f, 2, 0);
    assert_int_equal(f.c->b[3].n, 2);
    finish(&f, 3, 0);

    /*
     * Slack: idle instance, head deadline leaves 30 + 5 ms (batch 2 + cls):
     * the batch stops at 2 although 4 are queued and the cap is 4.
     */
    struct fx g;
    fx_init(&g, 200, NULL, false);
    assert_int_equal(loki_router_set_plan(g.r, pl), 0);
    assert_int_equal(loki_router_submit(g.r, 0, 1, 0, 0), 0); /* occupies the instance */
    for (int q = 2; q <= 5; q++)
        assert_int_equal(loki_router_submit(g.r, 0, (uint64_t)q, 0, q == 2 ? 56 * MS : 0), 0);
    g.c->now = 20 * MS; /* head has 36 ms: batch 2 (30) + cls (5) fits, batch 3 (35+5) not */
    finish(&g, 0, 0);
    assert_int_equal(g.c->b[1].n, 2);
    assert_int_equal(g.c->b[1].qid[0], 2);
    free(pl);
    fx_fini(&f);
    fx_fini(&g);
}

static void test_early_drop(void **state)
{
    struct fx f;
    fx_init(&f, 200, NULL, false);
    f.topo->planner.reroute = false;
    struct loki_plan *pl = mkplan(0, 1, 1, 1, 0);
    assert_int_equal(loki_router_set_plan(f.r, pl), 0);
    assert_int_equal(loki_router_submit(f.r, 0, 1, 0, 0), 0); /* busy until 20 ms */
    /* q2 needs 20 (det) + 5 (cls) after 20 ms: deadline 45 makes it exactly. */
    assert_int_equal(loki_router_submit(f.r, 0, 2, 0, 45 * MS), 0);
    /* q3 can never make it: deadline 30. Its children would be 2 cls queries. */
    assert_int_equal(loki_router_submit(f.r, 0, 3, 0, 30 * MS), 0);
    f.c->now = 20 * MS;
    finish(&f, 0, 0);
    /* q3 was dropped at the first stage, before any GPU time; q2 runs. */
    assert_int_equal(f.c->done_count[3], 1);
    assert_int_equal(f.c->status[3], LOKI_QUERY_DROPPED);
    const struct loki_router_stats *st = loki_router_stats(f.r);
    assert_int_equal(st->var[0][0][1].dropped, 1);
    assert_int_equal(st->var[0][1][0].dropped, 0);
    assert_int_equal(f.c->b[f.c->nb - 1].qid[0], 2);
    f.c->now = 40 * MS;
    finish(&f, f.c->nb - 1, 1); /* one cls child */
    f.c->now = 45 * MS;
    finish(&f, f.c->nb - 1, 0);
    assert_int_equal(f.c->status[2], LOKI_QUERY_OK);
    assert_int_equal(f.c->status[1], LOKI_QUERY_OK);
    free(pl);
    fx_fini(&f);
}

static void test_reroute(void **state)
{
    for (int on = 0; on <= 1; on++) {
        struct fx f;
        fx_init(&f, 200, NULL, false);
        f.topo->planner.reroute = on;
        struct loki_plan *pl = mkplan(1, 1, 1, 1, 0); /* split: everything to slow */
        assert_int_equal(loki_router_set_plan(f.r, pl), 0);
        assert_int_equal(loki_router_submit(f.r, 0, 1, 0, 0), 0); /* slow busy to 20 */
        /* q2 waits for slow; at 20 ms it has 20 ms left: slow (20+5) misses, fast (10+5) fits. */
        assert_int_equal(loki_router_submit(f.r, 0, 2, 0, 40 * MS), 0);
        f.c->now = 20 * MS;
        finish(&f, 0, 0);
        if (on) {
            assert_int_equal(f.c->done_count[2], 0);
            assert_int_equal(f.c->b[f.c->nb - 1].variant, 0);
            assert_int_equal(loki_router_stats(f.r)->var[0][0][0].rerouted, 1);
            f.c->now = 30 * MS;
            finish(&f, f.c->nb - 1, 0);
            assert_int_equal(f.c->status[2], LOKI_QUERY_OK);
            /* served by the fast variant: accuracy 80 */
            assert_true(f.c->last.accuracy > 79.9 && f.c->last.accuracy < 80.1);
        } else {
            assert_int_equal(f.c->done_count[2], 1);
            assert_int_equal(f.c->status[2], LOKI_QUERY_DROPPED);
        }
        free(pl);
        fx_fini(&f);
    }
}

/* Random traffic with plan changes (async start-up) and failures: one completion each. */
static void test_exactly_one_completion(void **state)
{
    struct fx f;
    fx_init(&f, 100, NULL, true);
    struct loki_plan *a = mkplan(2, 2, 4, 2, 0.5f), *b = mkplan(0, 3, 2, 3, 0);
    assert_int_equal(loki_router_set_plan(f.r, a), 0);
    for (int k = 0; k < f.c->nstarts; k++)
        loki_router_instance_ready(f.r, f.c->starts[k]);
    f.c->nstarts = 0;
    unsigned seed = 7;
    int q = 0, next = 0; /* batches before @next are finished */
    for (int step = 0; step < 3000 && q < MAXQ - 10; step++) {
        f.c->now += 2 * MS;
        int r = rand_r(&seed) % 100;
        if (r < 60) {
            loki_router_submit(f.r, 0, (uint64_t)++q, 0, 0);
        } else if (r < 90 && next < f.c->nb) {
            struct rec_batch *bt = &f.c->b[next++];
            uint16_t kids[64];
            for (int i = 0; i < 64; i++)
                kids[i] = (uint16_t)(rand_r(&seed) % 4);
            loki_router_batch_done(f.r, bt->instance, bt->id, bt->task == 0 ? kids : NULL, NULL);
        } else if (r == 90) {
            assert_int_equal(loki_router_set_plan(f.r, (step / 10) % 2 ? a : b), 0);
        } else if (r == 91 && f.c->nstarts > 0) {
            loki_router_instance_ready(f.r, f.c->starts[--f.c->nstarts]);
        } else if (r == 92 && next < f.c->nb) {
            loki_router_instance_failed(f.r, f.c->b[next].instance);
            /* a failed instance's batch never returns; starts of a plan re-apply */
            next++;
            assert_int_equal(loki_router_set_plan(f.r, (step / 10) % 2 ? a : b), 0);
        }
        if (f.c->nb > 4000) {
            memmove(f.c->b, f.c->b + next, sizeof(f.c->b[0]) * (size_t)(f.c->nb - next));
            f.c->nb -= next;
            next = 0;
        }
    }
    /* Let everything finish: ready all, then run batches until none is left. */
    while (f.c->nstarts > 0)
        loki_router_instance_ready(f.r, f.c->starts[--f.c->nstarts]);
    for (int guard = 0; next < f.c->nb && guard < 100000; guard++) {
        f.c->now += 1 * MS;
        struct rec_batch *bt = &f.c->b[next++];
        uint16_t kids[64] = {0};
        loki_router_batch_done(f.r, bt->instance, bt->id, bt->task == 0 ? kids : NULL, NULL);
        if (next == f.c->nb) {
            f.c->nb = next = 0;
        }
    }
    const struct loki_router_stats *st = loki_router_stats(f.r);
    assert_int_equal(st->roots_inflight, 0);
    assert_int_equal(st->subs_inflight, 0);
    int ok = 0;
    for (int i = 1; i <= q; i++) {
        assert_int_equal(f.c->done_count[i], 1);
        ok += f.c->status[i] == LOKI_QUERY_OK;
    }
    assert_true(ok > 0);
    assert_true(f.c->stops > 0);
    free(a);
    free(b);
    fx_fini(&f);
}

static void test_admission(void **state)
{
    struct fx f;
    fx_init(&f, 1000, NULL, false);
    struct loki_plan *pl = mkplan(8, 8, 4, 8, 0.5f);
    pl->demand_qps[0] = 200;
    pl->served_fraction[0] = 0.5; /* 100 qps admitted */
    assert_int_equal(loki_router_set_plan(f.r, pl), 0);
    int refused = 0;
    for (int q = 1; q <= 2000; q++) { /* 200 qps for 10 s */
        f.c->now += 5 * MS;
        int rc = loki_router_submit(f.r, 0, (uint64_t)q, 0, 0);
        if (rc == LOKI_EOVERLOADED) {
            refused++;
            assert_int_equal(f.c->status[q], LOKI_QUERY_OVERLOADED);
            assert_int_equal(f.c->done_count[q], 1);
        } else {
            assert_int_equal(rc, 0);
        }
        while (f.c->nb > 0) {
            struct rec_batch b = f.c->b[--f.c->nb];
            loki_router_batch_done(f.r, b.instance, b.id, NULL, NULL);
        }
    }
    /* ~1000 admitted (+ the 25-query burst) */
    assert_in_range(refused, 960, 1000);
    assert_int_equal(loki_router_stats(f.r)->pipe[0].overloaded, (uint64_t)refused);
    free(pl);
    fx_fini(&f);
}

static void test_fanout_counts(void **state)
{
    struct fx f;
    fx_init(&f, 200, NULL, false);
    struct loki_plan *pl = mkplan(0, 1, 4, 1, 0);
    assert_int_equal(loki_router_set_plan(f.r, pl), 0);
    assert_int_equal(loki_router_submit(f.r, 0, 1, 0, 0), 0);
    f.c->now = 20 * MS;
    finish(&f, 0, 3);
    /* the idle cls instance takes the first child at once; two wait for it */
    assert_int_equal(f.c->nb, 2);
    assert_int_equal(loki_router_queue_len(f.r, f.c->b[1].instance), 2);
    drain(&f, 0);
    const struct loki_router_stats *st = loki_router_stats(f.r);
    assert_int_equal(st->var[0][0][1].children[0], 3);
    assert_int_equal(st->var[0][1][0].served, 3);
    assert_int_equal(st->pipe[0].sub_created, 4);
    assert_int_equal(f.c->done_count[1], 1);
    assert_int_equal(f.c->last.n_sub, 4);
    assert_int_equal(f.c->last.n_leaves, 3);
    assert_int_equal(f.c->last.status, LOKI_QUERY_OK);
    /* zero children: complete after detection, branch contributes the detector alone */
    assert_int_equal(loki_router_submit(f.r, 0, 2, 0, 0), 0);
    f.c->now += 20 * MS;
    finish(&f, f.c->nb - 1, 0);
    assert_int_equal(f.c->done_count[2], 1);
    assert_int_equal(f.c->last.n_sub, 1);
    assert_true(f.c->last.accuracy > 99.9);
    free(pl);
    fx_fini(&f);
}

static void test_pool_exhausted(void **state)
{
    struct fx f;
    struct loki_router_config cfg = {.max_roots = 2, .max_subqueries = 3};
    fx_init(&f, 200, &cfg, false);
    struct loki_plan *pl = mkplan(0, 1, 4, 1, 0);
    assert_int_equal(loki_router_set_plan(f.r, pl), 0);
    assert_int_equal(loki_router_submit(f.r, 0, 1, 0, 0), 0);
    assert_int_equal(loki_router_submit(f.r, 0, 2, 0, 0), 0);
    assert_int_equal(loki_router_submit(f.r, 0, 3, 0, 0), LOKI_EOVERLOADED);
    assert_int_equal(f.c->status[3], LOKI_QUERY_OVERLOADED);
    /* q1 fans out to 5 cls queries but only 1 sub-query slot is left: overloaded, no crash */
    f.c->now = 20 * MS;
    finish(&f, 0, 5);
    assert_int_equal(f.c->done_count[1], 1);
    assert_int_equal(f.c->status[1], LOKI_QUERY_OVERLOADED);
    drain(&f, 0);
    assert_int_equal(f.c->done_count[2], 1);
    assert_int_equal(loki_router_stats(f.r)->roots_inflight, 0);
    free(pl);
    fx_fini(&f);
}

static void test_drain_requeues(void **state)
{
    struct fx f;
    fx_init(&f, 500, NULL, true);
    struct loki_plan *a = mkplan(0, 1, 2, 1, 0), *b = mkplan(1, 0, 2, 1, 1);
    assert_int_equal(loki_router_set_plan(f.r, a), 0);
    for (int k = 0; k < f.c->nstarts; k++)
        loki_router_instance_ready(f.r, f.c->starts[k]);
    f.c->nstarts = 0;
    for (int q = 1; q <= 6; q++)
        loki_router_submit(f.r, 0, (uint64_t)q, 0, 0);
    assert_int_equal(f.c->nb, 2); /* q1 running on slow, q2+q3 staged, 3 queued */
    assert_int_equal(f.c->b[1].n, 2);
    assert_int_equal(loki_router_set_plan(f.r, b), 0);
    assert_true(loki_router_is_transitioning(f.r));
    assert_int_equal(f.c->nstarts, 1); /* the fast instance starts; slow keeps serving */
    f.c->now = 5 * MS;
    loki_router_instance_ready(f.r, f.c->starts[0]);
    assert_false(loki_router_is_transitioning(f.r));
    /* The slow instance's queue moved to fast: one running there, two staged. */
    assert_int_equal(f.c->nb, 4);
    assert_int_equal(f.c->b[2].variant, 0);
    assert_int_equal(f.c->b[3].variant, 0);
    assert_int_equal(f.c->b[2].n + f.c->b[3].n, 3);
    assert_int_equal(f.c->stops, 0); /* slow still finishing q1, then its staged batch */
    f.c->now = 20 * MS;
    finish(&f, 0, 0);
    assert_int_equal(f.c->stops, 0);
    f.c->now = 50 * MS;
    finish(&f, 1, 0);
    assert_int_equal(f.c->stops, 1);
    drain(&f, 0);
    for (int q = 1; q <= 6; q++) {
        assert_int_equal(f.c->done_count[q], 1);
        assert_int_equal(f.c->status[q], LOKI_QUERY_OK);
    }
    free(a);
    free(b);
    fx_fini(&f);
}

/*
 * Fallback: one slow det instance (batch 4, 10 ms per query) that also loaded "fast" (5 ms per
 * query at batch 4) gets 30 queries at once, 300 ms of work at its own speed against a 200 ms
 * SLO. Once the queue cannot be through by the head's deadline, batches run on the fallback
 * (same instance, variant fast), and every query is served in time; without the fallback some
 * are dropped. A kept instance keeps the fallback it started with; a bad fallback is refused.
 */
static int burst_on_one(struct fx *f, int *fb_batches, int *inst_seen)
{
    *fb_batches = 0;
    *inst_seen = -1;
    int first = f->c->nb;
    for (int q = 1; q <= 30; q++)
        assert_int_equal(loki_router_submit(f->r, 0, (uint64_t)q, 0, 0), 0);
    /* one instance: its batches run back to back, in dispatch order */
    for (int k = first; k < f->c->nb; k++) {
        struct rec_batch *b = &f->c->b[k];
        if (*inst_seen < 0)
            *inst_seen = b->instance;
        assert_int_equal(b->instance, *inst_seen);
        if (b->variant == 0)
            (*fb_batches)++;
        f->c->now += (uint64_t)(b->ms * 1e6);
        finish(f, k, 0);
    }
    int ok = 0;
    for (int q = 1; q <= 30; q++) {
        assert_int_equal(f->c->done_count[q], 1);
        ok += f->c->status[q] == LOKI_QUERY_OK;
    }
    return ok;
}

static void test_fallback(void **state)
{
    int fb, inst;
    /* without */
    struct fx f;
    fx_init(&f, 200, NULL, false);
    struct loki_plan *pl = mkplan(0, 1, 4, 1, 0);
    assert_int_equal(loki_router_set_plan(f.r, pl), 0);
    int ok_without = burst_on_one(&f, &fb, &inst);
    assert_int_equal(fb, 0);
    assert_true(ok_without < 30);
    fx_fini(&f);
    /* with: det "slow" loads "fast" (variant 0) alongside */
    fx_init(&f, 200, NULL, false);
    pl->inst[0].fallback = 1;
    assert_int_equal(loki_router_set_plan(f.r, pl), 0);
    int ok = burst_on_one(&f, &fb, &inst);
    print_message("fallback: %d of 30 ok with, %d without; %d fallback batches\n", ok, ok_without,
                  fb);
    assert_int_equal(ok, 30);
    assert_true(fb > 0);
    const struct loki_router_stats *st = loki_router_stats(f.r);
    assert_true(st->var[0][0][0].served > 0 && st->var[0][0][1].served > 0);
    assert_int_equal(st->var[0][0][0].served + st->var[0][0][1].served, 30);
    assert_true(st->pipe[0].acc_sum < 30 * 100.0 - 1); /* the fast ones count at 80 */
    /* a re-plan that keeps the instance keeps what its worker loaded */
    pl->inst[0].fallback = 0;
    assert_int_equal(loki_router_set_plan(f.r, pl), 0);
    memset(f.c->done_count, 0, sizeof(f.c->done_count));
    f.c->now += 1000 * MS;
    int inst2;
    assert_int_equal(burst_on_one(&f, &fb, &inst2), 30);
    assert_int_equal(inst2, inst);
    assert_true(fb > 0);
    /* a fallback naming the instance's own variant or no variant is refused */
    pl->inst[0].fallback = 2;
    assert_int_equal(loki_router_set_plan(f.r, pl), -EINVAL);
    pl->inst[0].fallback = 3;
    assert_int_equal(loki_router_set_plan(f.r, pl), -EINVAL);
    free(pl);
    fx_fini(&f);
}

/*
 * Overrun: an instance whose batches keep coming back 5 ms later than profiled (a real hop's
 * rings and wake-ups) gets that added to every finish time the router predicts for it. A query
 * with 2 ms to spare on the profile alone is then dropped at once instead of served late; an
 * instance with no overrun still takes it.
 */
static void test_overrun_learned(void **state)
{
    for (int late = 0; late < 2; late++) {
        struct fx f;
        fx_init(&f, 200, NULL, false);
        struct loki_plan *pl = mkplan(0, 1, 1, 1, 0); /* det "slow": 20 ms at batch 1 */
        assert_int_equal(loki_router_set_plan(f.r, pl), 0);
        for (int q = 1; q <= 24; q++) {
            assert_int_equal(loki_router_submit(f.r, 0, (uint64_t)q, 0, 0), 0);
            struct rec_batch *b = &f.c->b[f.c->nb - 1];
            f.c->now += (uint64_t)(b->ms * 1e6) + (late ? 5 : 0) * MS;
            finish(&f, f.c->nb - 1, 0);
            assert_int_equal(f.c->status[q], LOKI_QUERY_OK);
            f.c->now += 10 * MS;
        }
        /* 20 ms here + 5 ms of cls below (the fastest path) + 2 ms to spare */
        int nb = f.c->nb;
        assert_int_equal(loki_router_submit(f.r, 0, 99, 0, f.c->now + 27 * MS), 0);
        if (late) {
            assert_int_equal(f.c->done_count[99], 1);
            assert_int_equal(f.c->status[99], LOKI_QUERY_DROPPED);
            assert_int_equal(f.c->nb, nb);
        } else {
            assert_int_equal(f.c->nb, nb + 1);
            assert_int_equal(f.c->b[nb].qid[0], 99);
        }
        free(pl);
        fx_fini(&f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_edf_order),
        cmocka_unit_test(test_split_proportions),
        cmocka_unit_test(test_batch_cap_and_slack),
        cmocka_unit_test(test_early_drop),
        cmocka_unit_test(test_reroute),
        cmocka_unit_test(test_exactly_one_completion),
        cmocka_unit_test(test_admission),
        cmocka_unit_test(test_fanout_counts),
        cmocka_unit_test(test_pool_exhausted),
        cmocka_unit_test(test_drain_requeues),
        cmocka_unit_test(test_fallback),
        cmocka_unit_test(test_overrun_learned),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
