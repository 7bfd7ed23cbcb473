/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The replay harness: Loki's router and planner on a virtual clock.
 *
 * Design. One binary heap of timed events (ordered by time, then by a
 * sequence number so equal times stay FIFO and runs are deterministic)
 * drives everything:
 *
 *   ARRIVAL(p)   next Poisson arrival of pipeline p at the trace's rate for
 *                the current step (memoryless, so a step boundary simply
 *                re-draws); submits a root query to the router.
 *   DONE(i, b)   batch b of sim instance i finished after its profiled
 *                latency (loki_variant_latency at the instance's share and
 *                batch size); fan-out counts are drawn per query from the
 *                variant's distribution and reported to the router; the
 *                staged batch, if any, starts at once.
 *   READY(i, g)  instance i finished its start-up (startup_ms).
 *   REPLAN       every planner.interval_ms: the EWMA demand estimate and
 *                the observed fan-outs go to loki_planner_solve(); a plan
 *                that is not "kept" is applied with loki_router_set_plan()
 *                (make-before-break happens inside the router).
 *   TICK         every replay second: one CSV row.
 *   APPLY        (lokid_loop only) the plan solved at REPLAN takes effect
 *                once the solve's measured wall time has passed, as in
 *                lokid, whose planner runs off the loop thread.
 *   SAMPLE       every 100 ms, mid-interval: GPUs held, for a time average
 *                that does not fall on the instant a re-plan starts instances.
 *
 * The router sees only the virtual clock and instance ids, the same
 * interface lokid gives it, so the policy code is exactly the live one.
 * A sim worker holds one executing and one staged batch, like a real one.
 * Randomness (arrivals, fan-outs) comes from one seeded xoshiro256** stream.
 */
#include "loki/replay.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loki/demand.h"
#include "loki/error.h"
#include "loki/planner.h"
#include "planner.h" /* actors/: the planner actor */
#include "loki/router.h"

/* ---- PRNG ----------------------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void loki_rng_seed(struct loki_rng *g, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        g->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t loki_rng_next(struct loki_rng *g)
{
    uint64_t *s = g->s;
    uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return res;
}

double loki_rng_uniform(struct loki_rng *g)
{
    return ((double)(loki_rng_next(g) >> 11) + 0.5) * 0x1.0p-53;
}

double loki_rng_exp(struct loki_rng *g, double rate)
{
    return -log(loki_rng_uniform(g)) / rate;
}

static unsigned poisson(struct loki_rng *g, double mean)
{
    unsigned k = 0;
    while (mean > 30) { /* split large means: a sum of Poissons is Poisson */
        k += poisson(g, 30);
        mean -= 30;
    }
    double l = exp(-mean), p = 1;
    for (;;) {
        p *= loki_rng_uniform(g);
        if (p <= l)
            return k;
        k++;
    }
}

unsigned loki_rng_fanout(struct loki_rng *g, const struct loki_fanout *f)
{
    if (f->mean <= 0)
        return 0;
    switch (f->dist) {
    case LOKI_FANOUT_CONSTANT: {
        double fl = floor(f->mean);
        return (unsigned)fl + (loki_rng_uniform(g) < f->mean - fl ? 1 : 0);
    }
    case LOKI_FANOUT_GEOMETRIC: {
        double p = 1.0 / (1.0 + f->mean);
        return (unsigned)floor(log(loki_rng_uniform(g)) / log(1 - p));
    }
    case LOKI_FANOUT_POISSON:
    default:
        return poisson(g, f->mean);
    }
}

/* ---- event heap ----------------------------------------------------------------------------- */

enum ev_type { EV_ARRIVAL, EV_DONE, EV_READY, EV_REPLAN, EV_APPLY, EV_TICK, EV_SAMPLE };

struct ev {
    uint64_t t, seq;
    uint64_t b;
    int32_t a;
    uint8_t type;
};

struct heap {
    struct ev *e;
    size_t n, cap;
    uint64_t seq;
};

static inline bool ev_less(const struct ev *x, const struct ev *y)
{
    return x->t < y->t || (x->t == y->t && x->seq < y->seq);
}

static int heap_push(struct heap *h, uint64_t t, uint8_t type, int32_t a, uint64_t b)
{
    if (h->n == h->cap) {
        size_t nc = h->cap ? h->cap * 2 : 4096;
        struct ev *ne = realloc(h->e, nc * sizeof(*ne));
        if (!ne)
            return -ENOMEM;
        h->e = ne;
        h->cap = nc;
    }
    struct ev x = {.t = t, .seq = ++h->seq, .b = b, .a = a, .type = type};
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!ev_less(&x, &h->e[p]))
            break;
        h->e[i] = h->e[p];
        i = p;
    }
    h->e[i] = x;
    return 0;
}

static struct ev heap_pop(struct heap *h)
{
    struct ev top = h->e[0], x = h->e[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l >= h->n)
            break;
        m = l;
        if (l + 1 < h->n && ev_less(&h->e[l + 1], &h->e[l]))
            m = l + 1;
        if (!ev_less(&h->e[m], &x))
            break;
        h->e[i] = h->e[m];
        i = m;
    }
    if (h->n)
        h->e[i] = x;
    return top;
}

/* ---- simulation state ----------------------------------------------------------------------- */

struct sim_batch {
    uint64_t id;
    int n, v;
    double ms;
};

struct sim_inst {
    uint32_t gen;
    bool live;
    int p, t, v;
    struct sim_batch exec, staged;
};

struct sim {
    struct loki_topology *topo;
    const struct loki_trace *trace;
    struct loki_replay_config cfg;
    struct loki_router *router;
    struct loki_planner_actor *pa; /* the planner actor lokid runs, on the virtual clock */
    struct loki_rng rng;           /* fan-out draws */
    struct loki_rng arr_rng;       /* Poisson arrivals: their own stream, so every policy run with
                                    * the same seed sees the same arrivals */
    uint64_t load_rng;             /* LOKI_ARRIVALS_LOAD: `loki load`'s xorshift64* state */
    uint64_t load_t;               /* its clock: time of the last arrival or row end, ns */
    long load_row;
    struct heap heap;
    uint64_t now;
    uint64_t step_ns, end_ns;
    uint64_t next_id;
    int err;
    struct sim_inst inst[2 * LOKI_MAX_INSTANCES];
    uint16_t *kids; /* scratch for fan-out counts */
    size_t kids_cap;
    bool have_plan;
    uint64_t busy_until; /* lokid_loop: the router is spawning workers until then */
    /* current second */
    struct loki_replay_second cur;
    double cur_sub, cur_sub_viol;
    struct loki_replay_result *res;
    int sec_cap;
    double solve_sum;
    /* whole run: latencies of ok + late roots (percentiles), their accuracy, GPU samples */
    double *lat;
    size_t n_lat, cap_lat;
    double acc_ok_late, gpu_samples;
    uint64_t n_gpu_samples;
};

static uint64_t sim_now(void *ctx)
{
    return ((struct sim *)ctx)->now;
}

static void start_batch(struct sim *s, int i, const struct sim_batch *b)
{
    s->inst[i].exec = *b;
    int rc = heap_push(&s->heap, s->now + (uint64_t)(b->ms * 1e6), EV_DONE, i, b->id);
    if (rc)
        s->err = rc;
}

static int sim_dispatch(void *ctx, const struct loki_router_batch *b)
{
    struct sim *s = ctx;
    struct sim_inst *in = &s->inst[b->instance];
    struct sim_batch sb = {.id = b->batch_id, .n = b->n, .v = b->variant, .ms = b->expect_ms};
    if (in->exec.id == 0)
        start_batch(s, b->instance, &sb);
    else if (in->staged.id == 0)
        in->staged = sb;
    else
        return -EBUSY; /* the router never stages a second batch: a bug if reached */
    return 0;
}

static void sim_complete(void *ctx, const struct loki_router_completion *c)
{
    struct sim *s = ctx;
    struct loki_replay_second *r = &s->cur;
    switch (c->status) {
    case LOKI_QUERY_OK:
        r->ok++;
        r->accuracy += c->accuracy;
        r->accuracy_sub += c->accuracy_sub;
        break;
    case LOKI_QUERY_DROPPED:
        r->dropped++;
        break;
    case LOKI_QUERY_LATE:
        r->late++;
        break;
    case LOKI_QUERY_ERROR:
        r->error++;
        break;
    case LOKI_QUERY_OVERLOADED:
        r->overloaded++;
        break;
    case LOKI_QUERY_CANCELLED:
        break; /* the replay never cancels */
    }
    if (c->status == LOKI_QUERY_OK || c->status == LOKI_QUERY_LATE) {
        s->acc_ok_late += c->accuracy;
        if (s->n_lat == s->cap_lat) {
            size_t cap = s->cap_lat ? s->cap_lat * 2 : 4096;
            double *p = realloc(s->lat, cap * sizeof(*p));
            if (!p) {
                s->err = -ENOMEM;
                return;
            }
            s->lat = p;
            s->cap_lat = cap;
        }
        s->lat[s->n_lat++] = c->latency_ms;
    }
    s->cur_sub += c->n_sub > 0 ? c->n_sub : 1;
    s->cur_sub_viol +=
        c->status == LOKI_QUERY_OVERLOADED && c->n_sub == 0 ? 1 : c->n_sub_violations;
}

static void sim_start(void *ctx, int i, const struct loki_plan_instance *pi)
{
    struct sim *s = ctx;
    struct sim_inst *in = &s->inst[i];
    in->gen++;
    in->live = true;
    in->p = pi->pipeline;
    in->t = pi->task;
    in->v = pi->variant;
    memset(&in->exec, 0, sizeof(in->exec));
    memset(&in->staged, 0, sizeof(in->staged));
    const struct loki_task *tk = &s->topo->pipelines[pi->pipeline].tasks[pi->task];
    int fv = loki_plan_fallback(pi);
    /* The worker loads its variant, then the fallback: ready after both (as the sim backend). */
    double ms = tk->variants[pi->variant].startup_ms + (fv >= 0 ? tk->variants[fv].startup_ms : 0);
    if (s->cfg.override_startup)
        ms = s->cfg.startup_ms;
    if (s->cfg.prewarm && !s->have_plan)
        ms = 0;
    if (s->cfg.lokid_loop && s->have_plan && s->cfg.spawn_ms > 0)
        s->busy_until =
            (s->busy_until > s->now ? s->busy_until : s->now) + (uint64_t)(s->cfg.spawn_ms * 1e6);
    int rc = heap_push(&s->heap, s->now + (uint64_t)(ms * 1e6), EV_READY, i, in->gen);
    if (rc)
        s->err = rc;
}

static void sim_stop(void *ctx, int i, uint64_t handle)
{
    struct sim *s = ctx;
    s->inst[i].live = false;
    s->inst[i].gen++;
}

static void on_done(struct sim *s, int i, uint64_t bid)
{
    struct sim_inst *in = &s->inst[i];
    if (!in->live || in->exec.id != bid)
        return; /* stale: the instance went away */
    int n = in->exec.n;
    const struct loki_task *tk = &s->topo->pipelines[in->p].tasks[in->t];
    int nc = tk->n_children;
    const struct loki_variant *va = &tk->variants[in->exec.v];
    size_t need = (size_t)n * (size_t)(nc ? nc : 1);
    if (need > s->kids_cap) {
        uint16_t *k = realloc(s->kids, need * sizeof(*k));
        if (!k) {
            s->err = -ENOMEM;
            return;
        }
        s->kids = k;
        s->kids_cap = need;
    }
    for (int q = 0; q < n; q++)
        for (int c = 0; c < nc; c++) {
            unsigned k = loki_rng_fanout(&s->rng, &va->fanout[c]);
            s->kids[q * nc + c] = (uint16_t)(k > 65535 ? 65535 : k);
        }
    memset(&in->exec, 0, sizeof(in->exec));
    if (in->staged.id) {
        struct sim_batch st = in->staged;
        memset(&in->staged, 0, sizeof(in->staged));
        start_batch(s, i, &st);
    }
    loki_router_batch_done(s->router, i, bid, nc ? s->kids : NULL, NULL);
}

/* ---- planning ------------------------------------------------------------------------------- */

/* The planner actor's callbacks: the replay's clock, router and solve accounting. */
static double pa_now(void *ctx)
{
    return (double)((struct sim *)ctx)->now / 1e9;
}

static int pa_apply(void *ctx, const struct loki_plan *plan, const char *why)
{
    struct sim *s = ctx;
    (void)why;
    int rc = loki_router_set_plan(s->router, plan);
    s->have_plan = true;
    s->res->plan_changes++;
    return rc;
}

static bool pa_busy(void *ctx)
{
    return loki_router_is_transitioning(((struct sim *)ctx)->router);
}

static const struct loki_router_stats *pa_stats(void *ctx)
{
    return loki_router_stats(((struct sim *)ctx)->router);
}

/* A solve's wall time, in this second's row and the run's figures. */
static void count_solve(struct sim *s)
{
    double ms = loki_planner_actor_last_wall_ms(s->pa);
    s->cur.solve_ms += ms;
    s->solve_sum += ms;
    s->res->replans++;
    if (ms > s->res->solve_ms_max)
        s->res->solve_ms_max = ms;
}

/*
 * The solve runs inline on the virtual clock. lokid_loop: lokid solves off its loop, so
 * the plan lands (EV_APPLY) once the solve's measured wall time has passed; otherwise at once.
 */
static int pa_offload(void *ctx)
{
    struct sim *s = ctx;
    loki_planner_actor_work(s->pa);
    count_solve(s);
    if (s->cfg.lokid_loop)
        return heap_push(&s->heap,
                         s->now + (uint64_t)(loki_planner_actor_last_wall_ms(s->pa) * 1e6),
                         EV_APPLY, 0, 0);
    int rc = loki_planner_actor_done(s->pa, false);
    return rc < 0 ? rc : 0;
}

/* The first plan, for the configured or the trace's first demand, applied at once. */
static int plan_initial(struct sim *s)
{
    double d[LOKI_MAX_PIPELINES] = {0};
    for (int p = 0; p < s->topo->n_pipelines; p++)
        d[p] = s->cfg.initial_demand > 0 ? s->cfg.initial_demand
               : s->trace->n             ? s->trace->rate[0]
                                         : 0;
    int rc = loki_planner_actor_initial(s->pa, d);
    count_solve(s);
    return rc;
}

/* ---- per-second rows ------------------------------------------------------------------------ */

static int close_second(struct sim *s, double t0)
{
    struct loki_replay_result *res = s->res;
    if (res->n_seconds == s->sec_cap) {
        int nc = s->sec_cap ? s->sec_cap * 2 : 1024;
        struct loki_replay_second *ns = realloc(res->sec, (size_t)nc * sizeof(*ns));
        if (!ns)
            return -ENOMEM;
        res->sec = ns;
        s->sec_cap = nc;
    }
    struct loki_replay_second r = s->cur;
    r.t = t0;
    double done = r.ok + r.dropped + r.late + r.overloaded + r.error;
    r.viol_ratio = done > 0 ? (done - r.ok) / done : 0;
    r.viol_ratio_sub = s->cur_sub > 0 ? s->cur_sub_viol / s->cur_sub : 0;
    if (r.ok > 0) {
        r.accuracy /= r.ok;
        r.accuracy_sub /= r.ok;
    }
    loki_router_instances(s->router, &r.gpus);
    r.estimate = loki_planner_actor_plan_input(s->pa, 0);
    const struct loki_plan *pl = loki_router_plan(s->router);
    r.mode = pl ? (int)pl->mode : 0;
    res->sec[res->n_seconds++] = r;
    memset(&s->cur, 0, sizeof(s->cur));
    s->cur_sub = s->cur_sub_viol = 0;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The @q quantile of sorted @v[0..n), n > 0: the smallest value with at least q n at or below. */
static double nearest_rank(const double *v, size_t n, double q)
{
    size_t i = (size_t)ceil(q * (double)n);
    return v[i > 0 ? (i <= n ? i - 1 : n - 1) : 0];
}

static void summarise(struct sim *s)
{
    struct loki_replay_result *res = s->res;
    const struct loki_router_stats *st = loki_router_stats(s->router);
    double acc = 0, acc_sub = 0, lat = 0;
    for (int p = 0; p < s->topo->n_pipelines; p++) {
        const struct loki_router_pipeline_stats *ps = &st->pipe[p];
        res->arrived += ps->arrived;
        res->ok += ps->ok;
        res->dropped += ps->dropped;
        res->late += ps->late;
        res->error += ps->error;
        res->overloaded += ps->overloaded;
        res->sub_created += ps->sub_created;
        res->sub_violations += ps->sub_violations;
        res->rerouted += ps->rerouted;
        res->fallback += ps->fallback;
        for (int t = 0; t < s->topo->pipelines[p].n_tasks; t++)
            for (int v = 0; v < s->topo->pipelines[p].tasks[t].n_variants; v++) {
                res->dropped_stage[t] += st->var[p][t][v].dropped;
                res->batches += st->var[p][t][v].batches;
                res->batched += st->var[p][t][v].served;
            }
        acc += ps->acc_sum;
        acc_sub += ps->acc_sub_sum;
        lat += ps->latency_ms_sum;
    }
    uint64_t bad = res->dropped + res->late + res->error + res->overloaded;
    res->viol_ratio = res->arrived ? (double)bad / (double)res->arrived : 0;
    res->viol_ratio_sub =
        res->sub_created ? (double)res->sub_violations / (double)res->sub_created : 0;
    res->accuracy = res->ok ? acc / (double)res->ok : 0;
    res->accuracy_sub = res->ok ? acc_sub / (double)res->ok : 0;
    res->latency_ms_mean = res->ok + res->late ? lat / (double)(res->ok + res->late) : 0;
    res->solve_ms_mean = res->replans ? s->solve_sum / res->replans : 0;
    res->accuracy_ok_late = s->n_lat ? s->acc_ok_late / (double)s->n_lat : 0;
    res->gpus_time_mean = s->n_gpu_samples ? s->gpu_samples / (double)s->n_gpu_samples : 0;
    if (s->n_lat) {
        qsort(s->lat, s->n_lat, sizeof(double), cmp_double);
        res->latency_ms_p50 = nearest_rank(s->lat, s->n_lat, 0.50);
        res->latency_ms_p99 = nearest_rank(s->lat, s->n_lat, 0.99);
    }
    int n = res->n_seconds;
    double *dem = malloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) {
        res->gpu_seconds += res->sec[i].gpus;
        if (res->sec[i].gpus > res->gpus_max)
            res->gpus_max = res->sec[i].gpus;
        if (dem)
            dem[i] = res->sec[i].demand;
    }
    res->gpus_mean = n ? res->gpu_seconds / n : 0;
    if (dem && n) {
        qsort(dem, (size_t)n, sizeof(double), cmp_double);
        double q25 = dem[n / 4], q75 = dem[(3 * n) / 4];
        double lo = 0, hi = 0, dlo = 0;
        int nl = 0, nh = 0;
        for (int i = 0; i < n; i++) {
            if (res->sec[i].demand <= q25) {
                lo += res->sec[i].gpus;
                dlo += res->sec[i].demand;
                nl++;
            }
            if (res->sec[i].demand >= q75) {
                hi += res->sec[i].gpus;
                nh++;
            }
        }
        res->gpus_offpeak = nl ? lo / nl : 0;
        res->demand_offpeak = nl ? dlo / nl : 0;
        res->gpus_peak = nh ? hi / nh : 0;
    }
    free(dem);
}

/* ---- the run -------------------------------------------------------------------------------- */

#define SAMPLE_NS 100000000ull /* GPU samples every 100 ms */

static int schedule_arrival(struct sim *s, int p)
{
    double t = (double)s->now / 1e9;
    double step = (double)s->step_ns / 1e9;
    for (;;) {
        long k = (long)floor(t / step + 1e-12);
        if (k >= s->trace->n)
            return 0;
        double rate = s->trace->rate[k];
        double end = (double)(k + 1) * step;
        if (rate > 0) {
            double nt = t + loki_rng_exp(&s->arr_rng, rate);
            if (nt < end) {
                uint64_t ns = (uint64_t)(nt * 1e9);
                if (ns >= s->end_ns)
                    return 0;
                return heap_push(&s->heap, ns, EV_ARRIVAL, p, 0);
            }
        }
        t = end; /* memoryless: re-draw from the next step */
    }
}

/* `loki load`'s uniform draw (runtime/cli/cmd_load.c, rng_uniform): keep the two in step. */
static double load_uniform(uint64_t *x)
{
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    return (double)((*x * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

/*
 * Next arrival exactly as `loki load` times it: exponential gaps at the
 * row's rate on a nanosecond clock; a gap that crosses the row's end (or
 * the run's) is discarded and the clock restarts at the row's end.
 */
static int schedule_arrival_load(struct sim *s, int p)
{
    double step = (double)s->step_ns / 1e9;
    while (s->load_row < s->trace->n && s->load_t < s->end_ns) {
        double rate = s->trace->rate[s->load_row];
        uint64_t row_end = (uint64_t)((double)(s->load_row + 1) * step * 1e9);
        if (rate > 0) {
            s->load_t += (uint64_t)(-log(1 - load_uniform(&s->load_rng)) / rate * 1e9);
            if (s->load_t < row_end && s->load_t < s->end_ns)
                return heap_push(&s->heap, s->load_t, EV_ARRIVAL, p, 0);
        }
        s->load_t = row_end;
        s->load_row++;
    }
    return 0;
}

int loki_replay_run(const struct loki_topology *topo, const struct loki_trace *trace,
                    const struct loki_replay_config *cfg, struct loki_replay_result *out)
{
    if (!topo || !trace || !cfg || !out || trace->n < 1)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    struct sim *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    int rc = -ENOMEM;
    s->topo = malloc(sizeof(*s->topo));
    if (!s->topo)
        goto free_sim;
    memcpy(s->topo, topo, sizeof(*topo));
    s->topo->planner.policy = cfg->policy;
    if (cfg->early_drop >= 0)
        s->topo->planner.early_drop = cfg->early_drop;
    if (cfg->reroute >= 0)
        s->topo->planner.reroute = cfg->reroute;
    s->cfg = *cfg;
    s->trace = trace;
    s->res = out;
    snprintf(out->policy, sizeof(out->policy), "%s", loki_policy_name(cfg->policy));
    out->seed = cfg->seed;
    double step = cfg->step_replay_s > 0 ? cfg->step_replay_s : 1;
    s->step_ns = (uint64_t)(step * 1e9);
    double total = step * trace->n;
    if (cfg->duration_s > 0 && cfg->duration_s < total)
        total = cfg->duration_s;
    s->end_ns = (uint64_t)(total * 1e9);
    double interval = cfg->interval_ms > 0 ? cfg->interval_ms : s->topo->planner.interval_ms;
    if (interval <= 0)
        interval = 1000;
    uint64_t interval_ns = (uint64_t)(interval * 1e6);
    loki_rng_seed(&s->rng, cfg->sim_seed ? cfg->sim_seed : cfg->seed);
    loki_rng_seed(&s->arr_rng, cfg->seed ^ 0x6172726976616c73ull); /* "arrivals" */
    s->load_rng = cfg->seed * 0x9E3779B97F4A7C15ull + 1;
    for (long i = 0; i < cfg->load_payload_bytes; i++)
        load_uniform(&s->load_rng);

    struct loki_router_ops ops = {
        .now_ns = sim_now,
        .dispatch = sim_dispatch,
        .complete = sim_complete,
        .instance_start = sim_start,
        .instance_stop = sim_stop,
    };
    struct loki_planner_actor_ops pops = {.now_s = pa_now,
                                          .apply = pa_apply,
                                          .busy = pa_busy,
                                          .stats = pa_stats,
                                          .offload = pa_offload};
    struct loki_planner_actor_config pcfg = {.serial = cfg->lokid_loop, .from_zero = true};
    rc = loki_planner_actor_create(s->topo, &pcfg, &pops, s, &s->pa);
    if (rc)
        goto free_sim;
    rc = loki_router_create(s->topo, NULL, &ops, s, &s->router);
    if (rc)
        goto free_planner;

    struct timespec w0, w1;
    clock_gettime(CLOCK_MONOTONIC, &w0);
    rc = plan_initial(s);
    if (cfg->arrivals == LOKI_ARRIVALS_LOAD)
        rc = schedule_arrival_load(s, 0); /* `loki load` drives one pipeline: the first */
    for (int p = 0; p < s->topo->n_pipelines && !rc && cfg->arrivals != LOKI_ARRIVALS_LOAD; p++)
        rc = schedule_arrival(s, p);
    if (!rc)
        rc = heap_push(&s->heap, interval_ns, EV_REPLAN, 0, 0);
    if (!rc)
        rc = heap_push(&s->heap, 1000000000ull, EV_TICK, 0, 0);
    if (!rc)
        rc = heap_push(&s->heap, SAMPLE_NS / 2, EV_SAMPLE, 0, 0);
    uint64_t next_id = 0;
    while (!rc && s->heap.n > 0 && !s->err) {
        struct ev e = heap_pop(&s->heap);
        /* Past the end only in-flight work runs on, so every query completes. */
        if (e.t > s->end_ns && e.type != EV_DONE && e.type != EV_READY)
            continue;
        if (e.t < s->busy_until && e.type != EV_TICK && e.type != EV_SAMPLE) {
            /* lokid's loop is still spawning workers: this waits (same order, later time);
             * a finished batch's staged successor waits with it (a little pessimistic) */
            rc = heap_push(&s->heap, s->busy_until, e.type, e.a, e.b);
            continue;
        }
        s->now = e.t;
        out->events++;
        switch (e.type) {
        case EV_ARRIVAL:
            s->cur.demand++;
            loki_planner_actor_arrival(s->pa, e.a, (double)s->now / 1e9);
            rc = loki_router_submit(s->router, e.a, ++next_id, 0, 0);
            if (rc == LOKI_EOVERLOADED)
                rc = 0;
            if (!rc)
                rc = cfg->arrivals == LOKI_ARRIVALS_LOAD ? schedule_arrival_load(s, e.a)
                                                         : schedule_arrival(s, e.a);
            break;
        case EV_DONE:
            on_done(s, e.a, e.b);
            break;
        case EV_READY:
            if (s->inst[e.a].live && s->inst[e.a].gen == (uint32_t)e.b)
                loki_router_instance_ready(s->router, e.a);
            break;
        case EV_REPLAN:
            rc = loki_planner_actor_tick(s->pa);
            if (!rc)
                rc = heap_push(&s->heap, s->now + interval_ns, EV_REPLAN, 0, 0);
            break;
        case EV_APPLY:
            rc = loki_planner_actor_done(s->pa, false);
            break;
        case EV_TICK:
            rc = close_second(s, (double)s->now / 1e9 - 1);
            if (!rc)
                rc = heap_push(&s->heap, s->now + 1000000000ull, EV_TICK, 0, 0);
            break;
        case EV_SAMPLE: {
            double g = 0;
            loki_router_instances(s->router, &g);
            s->gpu_samples += g;
            s->n_gpu_samples++;
            rc = heap_push(&s->heap, s->now + SAMPLE_NS, EV_SAMPLE, 0, 0);
            break;
        }
        }
    }
    if (!rc && s->err)
        rc = s->err;
    clock_gettime(CLOCK_MONOTONIC, &w1);
    out->wall_s = (double)(w1.tv_sec - w0.tv_sec) + (double)(w1.tv_nsec - w0.tv_nsec) / 1e9;
    out->replay_s = total;
    summarise(s);
    out->sim_qps = out->wall_s > 0 ? (double)out->arrived / out->wall_s : 0;
    out->sim_subqps = out->wall_s > 0 ? (double)out->sub_created / out->wall_s : 0;

    loki_router_destroy(s->router);
free_planner:
    loki_planner_actor_destroy(s->pa);
free_sim:
    free(s->heap.e);
    free(s->lat);
    free(s->kids);
    free(s->topo);
    free(s);
    if (rc)
        loki_replay_result_free(out);
    return rc;
}

void loki_replay_result_free(struct loki_replay_result *res)
{
    if (!res)
        return;
    free(res->sec);
    res->sec = NULL;
    res->n_seconds = 0;
}

int loki_replay_write_csv(FILE *f, const struct loki_replay_result *res)
{
    fprintf(f, "second,demand,estimate,served,dropped,late,overloaded,error,viol_ratio,"
               "viol_ratio_sub,accuracy,accuracy_sub,gpus,solve_ms,mode\n");
    for (int i = 0; i < res->n_seconds; i++) {
        const struct loki_replay_second *r = &res->sec[i];
        fprintf(f, "%.0f,%.0f,%.1f,%.0f,%.0f,%.0f,%.0f,%.0f,%.5f,%.5f,%.3f,%.3f,%.2f,%.2f,%s\n",
                r->t, r->demand, r->estimate, r->ok, r->dropped, r->late, r->overloaded, r->error,
                r->viol_ratio, r->viol_ratio_sub, r->accuracy, r->accuracy_sub, r->gpus,
                r->solve_ms, loki_plan_mode_name((enum loki_plan_mode)r->mode));
    }
    return ferror(f) ? -EIO : 0;
}

json_t *loki_replay_json(const struct loki_replay_result *r)
{
    bool oom = false;
    json_t *o = json_object();
#define S(k, v) loki_json_set(o, k, v, &oom)
#define U(k) S(#k, loki_json_u64(r->k))
#define F(k, d) S(#k, loki_json_fixed(r->k, d))
    S("policy", loki_json_str(r->policy));
    S("seed", loki_json_u64(r->seed));
    F(replay_s, 1);
    F(wall_s, 3);
    U(arrived);
    U(ok);
    U(dropped);
    U(late);
    U(error);
    U(overloaded);
    U(sub_created);
    U(sub_violations);
    U(rerouted);
    U(fallback);
    U(events);
    F(viol_ratio, 6);
    F(viol_ratio_sub, 6);
    F(accuracy, 3);
    F(accuracy_sub, 3);
    F(gpu_seconds, 1);
    F(gpus_mean, 3);
    F(gpus_max, 2);
    F(gpus_offpeak, 3);
    F(gpus_peak, 3);
    F(latency_ms_mean, 2);
    F(latency_ms_p50, 3);
    F(latency_ms_p99, 3);
    F(accuracy_ok_late, 3);
    F(gpus_time_mean, 3);
    S("replans", json_integer(r->replans));
    S("plan_changes", json_integer(r->plan_changes));
    F(solve_ms_mean, 3);
    F(solve_ms_max, 3);
    F(sim_qps, 0);
    F(sim_subqps, 0);
#undef S
#undef U
#undef F
    if (oom) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int loki_replay_write_json(FILE *f, const struct loki_replay_result *r)
{
    json_t *o = loki_replay_json(r);
    int rc = o ? json_dumpf(o, f, LOKI_JSON_FLAGS) : -1;
    json_decref(o);
    return !o ? -ENOMEM : rc || ferror(f) ? -EIO : 0;
}
