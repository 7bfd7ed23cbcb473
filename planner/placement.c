/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Placement: packing a plan's instances onto GPUs. The MILP only bounds GPU
 * shares, memory and MPS clients in aggregate; here every instance gets a GPU
 * by first-fit decreasing (loki__place), running instances keep the GPU they
 * run on across plans (loki__place_stably), and Loki's instances load a faster
 * fallback variant where its memory fits beside them (loki__set_fallbacks).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Per-GPU room while placing: shares (<= 1), MPS clients, memory. */
struct packing {
    const struct loki_topology *topo;
    int G, maxc;
    double used[LOKI_MAX_INSTANCES], mem[LOKI_MAX_INSTANCES];
    int clients[LOKI_MAX_INSTANCES];
};

static void packing_init(struct packing *k, const struct loki_topology *topo)
{
    memset(k, 0, sizeof(*k));
    k->topo = topo;
    k->G = topo->gpus.count < LOKI_MAX_INSTANCES ? topo->gpus.count : LOKI_MAX_INSTANCES;
    k->maxc = topo->gpus.mps_max_clients > 0 ? topo->gpus.mps_max_clients : 1 << 30;
}

static double inst_mem(const struct loki_topology *topo, const struct loki_plan_instance *x)
{
    return topo->pipelines[x->pipeline].tasks[x->task].variants[x->variant].mem_mb;
}

static bool packing_fits(const struct packing *k, int g, const struct loki_plan_instance *x)
{
    double mb = k->topo->gpus.mem_mb;
    return k->used[g] + x->share <= 1 + 1e-9 && k->clients[g] < k->maxc &&
           (mb <= 0 || k->mem[g] + inst_mem(k->topo, x) <= mb + 1e-6);
}

static void packing_put(struct packing *k, int g, struct loki_plan_instance *x)
{
    x->gpu = g;
    k->used[g] += x->share;
    k->mem[g] += inst_mem(k->topo, x);
    k->clients[g]++;
}

static int packing_active(const struct packing *k)
{
    int n = 0;
    for (int g = 0; g < k->G; g++)
        n += k->clients[g] > 0;
    return n;
}

void loki__coalesce_shares(const struct loki_topology *topo, struct loki_plan *pl)
{
    for (int p = 0; p < topo->n_pipelines; p++)
        for (int t = 0; t < topo->pipelines[p].n_tasks; t++)
            for (int v = 0; v < topo->pipelines[p].tasks[t].n_variants; v++) {
                const struct loki_variant *va = &topo->pipelines[p].tasks[t].variants[v];
                struct loki_plan_variant *pv = &pl->var[p][t][v];
                if (pv->instances <= 0 || pv->share >= 1 - 1e-9)
                    continue;
                double total = pv->instances * pv->share;
                double cap = pv->instances * loki_variant_throughput(va, pv->batch, pv->share);
                double lat = loki_variant_latency(va, pv->batch, pv->share);
                for (int s = 0; s < va->n_shares; s++) { /* shares descending: largest first */
                    double sh = va->shares[s];
                    double m = total / sh;
                    if (sh <= pv->share + 1e-9 || fabs(m - round(m)) > 1e-6 || round(m) < 1 ||
                        !loki__share_allowed(topo, sh))
                        continue;
                    double l = loki_variant_latency(va, pv->batch, sh);
                    if (!(l > 0) || l > lat + 1e-9 ||
                        round(m) * loki_variant_throughput(va, pv->batch, sh) < cap - 1e-6)
                        continue;
                    pv->instances = (int)round(m);
                    pv->share = sh;
                    break;
                }
            }
}

/* First-fit decreasing by share, then memory. Returns 0 or -ENOSPC. */
int loki__place(const struct loki_topology *topo, struct loki_plan *pl)
{
    int n = 0;
    for (int p = 0; p < topo->n_pipelines; p++)
        for (int t = 0; t < topo->pipelines[p].n_tasks; t++)
            for (int v = 0; v < topo->pipelines[p].tasks[t].n_variants; v++) {
                const struct loki_plan_variant *pv = &pl->var[p][t][v];
                for (int i = 0; i < pv->instances; i++) {
                    if (n >= LOKI_MAX_INSTANCES)
                        return -ENOSPC;
                    pl->inst[n++] = (struct loki_plan_instance){.pipeline = p,
                                                                .task = t,
                                                                .variant = v,
                                                                .batch = pv->batch,
                                                                .share = pv->share,
                                                                .gpu = -1};
                }
            }
    pl->n_instances = n;
    /* Insertion sort: share desc, memory desc (n is small). */
    for (int i = 1; i < n; i++) {
        struct loki_plan_instance x = pl->inst[i];
        double mx = topo->pipelines[x.pipeline].tasks[x.task].variants[x.variant].mem_mb;
        int j = i - 1;
        while (j >= 0) {
            const struct loki_plan_instance *y = &pl->inst[j];
            double my = topo->pipelines[y->pipeline].tasks[y->task].variants[y->variant].mem_mb;
            if (y->share > x.share + 1e-12 || (fabs(y->share - x.share) <= 1e-12 && my >= mx))
                break;
            pl->inst[j + 1] = pl->inst[j];
            j--;
        }
        pl->inst[j + 1] = x;
    }
    struct packing *k = malloc(sizeof(*k));
    if (!k)
        return -ENOMEM;
    packing_init(k, topo);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        struct loki_plan_instance *x = &pl->inst[i];
        for (int g = 0; g < k->G && x->gpu < 0; g++)
            if (packing_fits(k, g, x))
                packing_put(k, g, x);
        if (x->gpu < 0)
            rc = -ENOSPC;
    }
    if (rc == 0)
        pl->gpus_active = packing_active(k);
    free(k);
    return rc;
}

/* Scratch of loki__place_stably(): one packing attempt at a time. */
struct stable {
    struct packing k;
    struct loki_plan_instance saved[LOKI_MAX_INSTANCES];
    int twin[LOKI_MAX_INSTANCES]; /* per new instance: its twin in the current plan, or -1 */
    bool busy_cur[LOKI_MAX_INSTANCES], allowed[LOKI_MAX_INSTANCES];
    double weight[LOKI_MAX_INSTANCES]; /* per GPU: shares of twins running there */
};

/*
 * One attempt: twins on their GPUs, then first fit to GPUs the new plan already uses, to GPUs
 * the current plan leaves idle (a clean start, no co-location with an instance that is
 * retiring), then any; only on GPUs in w->allowed. Returns the active GPUs, or -1 when an
 * instance found no room (@pl's GPUs are then partly set).
 */
static int place_attempt(const struct loki_topology *topo, const struct loki_plan *cur,
                         struct loki_plan *pl, struct stable *w)
{
    struct packing *k = &w->k;
    packing_init(k, topo);
    int n = pl->n_instances;
    for (int i = 0; i < n; i++)
        pl->inst[i].gpu = -1;
    for (int i = 0; i < n; i++) {
        struct loki_plan_instance *x = &pl->inst[i];
        int j = w->twin[i];
        if (j >= 0 && w->allowed[cur->inst[j].gpu] && packing_fits(k, cur->inst[j].gpu, x))
            packing_put(k, cur->inst[j].gpu, x);
    }
    for (int i = 0; i < n; i++) {
        struct loki_plan_instance *x = &pl->inst[i];
        for (int pref = 0; pref < 3 && x->gpu < 0; pref++)
            for (int g = 0; g < k->G && x->gpu < 0; g++) {
                bool want = pref == 0 ? k->used[g] > 0 : pref == 1 ? !w->busy_cur[g] : true;
                if (want && w->allowed[g] && packing_fits(k, g, x))
                    packing_put(k, g, x);
            }
        if (x->gpu < 0)
            return -1;
    }
    return packing_active(k);
}

/*
 * Keep running instances where they run, on the fewest GPUs. loki__place() packs each plan from
 * scratch, so a variant kept from the current plan could land on another GPU number; the router
 * matches instances by variant, share and GPU, so that would restart it, and a new instance could
 * be put on a GPU a kept one still occupies. Here an instance of the new plan that has a twin in
 * the current plan (same variant and share) takes the twin's GPU and the others go first fit
 * (place_attempt()). That alone can spread a smaller plan over the GPUs a larger one held (after
 * a scale-down, a few kept instances on many GPUs, most of each idle), so it is taken only when
 * it holds no more GPUs than @pl's own packing (first-fit decreasing). Otherwise the attempt is
 * repeated on just that many GPUs, those where the most twin share runs: the twins there stay,
 * the others move (make-before-break: a start-up, not a lost query). If that does not fit either,
 * the solve's own placement stays (valid, at the price of restarts).
 */
void loki__place_stably(const struct loki_topology *topo, const struct loki_plan *cur,
                        struct loki_plan *pl)
{
    int n = pl->n_instances;
    if (!cur || topo->gpus.count <= 0 || n <= 0 || topo->gpus.count > LOKI_MAX_INSTANCES)
        return;
    struct stable *w = calloc(1, sizeof(*w));
    if (!w)
        return; /* the solve's own placement stays */
    int G = topo->gpus.count, fresh = pl->gpus_active;
    memcpy(w->saved, pl->inst, (size_t)n * sizeof(w->saved[0]));
    bool taken[LOKI_MAX_INSTANCES] = {false};
    for (int j = 0; j < cur->n_instances; j++)
        if (cur->inst[j].gpu >= 0 && cur->inst[j].gpu < G)
            w->busy_cur[cur->inst[j].gpu] = true;
    for (int i = 0; i < n; i++) {
        const struct loki_plan_instance *x = &pl->inst[i];
        w->twin[i] = -1;
        for (int j = 0; j < cur->n_instances && w->twin[i] < 0; j++) {
            const struct loki_plan_instance *y = &cur->inst[j];
            if (!taken[j] && y->pipeline == x->pipeline && y->task == x->task &&
                y->variant == x->variant && fabs(y->share - x->share) < 1e-9 && y->gpu >= 0 &&
                y->gpu < G) {
                taken[j] = true;
                w->twin[i] = j;
                w->weight[y->gpu] += y->share;
            }
        }
    }
    for (int g = 0; g < G; g++)
        w->allowed[g] = true;
    int active = place_attempt(topo, cur, pl, w);
    if (active < 0 || (fresh > 0 && active > fresh)) {
        /* the @fresh GPUs with the most twin share (ties: the lower index) */
        for (int g = 0; g < G; g++)
            w->allowed[g] = false;
        for (int c = 0; c < fresh; c++) {
            int best = -1;
            for (int g = 0; g < G; g++)
                if (!w->allowed[g] && (best < 0 || w->weight[g] > w->weight[best] + 1e-12))
                    best = g;
            w->allowed[best] = true;
        }
        active = place_attempt(topo, cur, pl, w);
    }
    if (active < 0) {
        memcpy(pl->inst, w->saved, (size_t)n * sizeof(w->saved[0]));
        free(w);
        return;
    }
    pl->gpus_active = active;
    free(w);
}

/* A fallback this many times the instance's own throughput is fast enough to clear a burst. */
#define FALLBACK_SPEEDUP 3.0

/*
 * The fallback of an instance of variant @own of task @t at share @sh, among the variants whose
 * batch latency, plus the fastest path below the task, fits the headroom budget (throughput at
 * the best such batch): the most accurate one with at least FALLBACK_SPEEDUP times @own's
 * throughput, else the fastest; -1 when none. The first keeps more accuracy during a burst
 * (Azure day, seed 1: 99.59 against 99.05 with always the fastest, Twitter 98.13 against 95.86,
 * at about the same violations); the second is all that a fast instance can fall back to.
 */
static int fallback_variant(const struct loki_topology *topo, int p, int t, int own, double sh)
{
    const struct loki_pipeline *pp = &topo->pipelines[p];
    const struct loki_task *tk = &pp->tasks[t];
    double budget = topo->planner.headroom * pp->slo_ms - loki_task_min_below(pp, t);
    double thr[LOKI_MAX_VARIANTS] = {0};
    int fastest = -1, accurate = -1;
    for (int v = 0; v < tk->n_variants; v++) {
        const struct loki_variant *va = &tk->variants[v];
        for (int k = 0; k < va->n_batches; k++) {
            double l = loki_variant_latency(va, va->batches[k], sh);
            if (l > 0 && l <= budget && va->batches[k] * 1000.0 / l > thr[v])
                thr[v] = va->batches[k] * 1000.0 / l;
        }
        if (thr[v] > 0 && (fastest < 0 || thr[v] > thr[fastest] * (1 + 1e-9)))
            fastest = v;
    }
    for (int v = 0; v < tk->n_variants; v++)
        if (v != own && thr[v] > 0 && thr[v] >= FALLBACK_SPEEDUP * thr[own] &&
            (accurate < 0 || tk->variants[v].accuracy > tk->variants[accurate].accuracy))
            accurate = v;
    return accurate >= 0 ? accurate : fastest;
}

/*
 * Loki: every placed instance whose variant is not its task's fallback loads the fallback too,
 * when that is faster at batch 1 and its memory fits the GPU next to everything placed there.
 * The router runs overflow on it the moment a queue outgrows the plan (runtime/router), which
 * no new instance can do within its start-up. Deterministic in the placement, so a kept
 * instance keeps its fallback.
 */
void loki__set_fallbacks(const struct loki_topology *topo, enum loki_policy policy,
                         struct loki_plan *pl)
{
    for (int i = 0; i < pl->n_instances; i++)
        pl->inst[i].fallback = 0;
    if (policy != LOKI_POLICY_LOKI || !topo->planner.fallback)
        return;
    int G = topo->gpus.count < LOKI_MAX_INSTANCES ? topo->gpus.count : LOKI_MAX_INSTANCES;
    double *mem = calloc((size_t)(G > 0 ? G : 1), sizeof(*mem));
    if (!mem)
        return; /* no fallbacks: a plan without them is still valid */
    for (int i = 0; i < pl->n_instances; i++)
        if (pl->inst[i].gpu >= 0 && pl->inst[i].gpu < G)
            mem[pl->inst[i].gpu] += inst_mem(topo, &pl->inst[i]);
    for (int i = 0; i < pl->n_instances; i++) {
        struct loki_plan_instance *x = &pl->inst[i];
        const struct loki_task *tk = &topo->pipelines[x->pipeline].tasks[x->task];
        int fv = fallback_variant(topo, x->pipeline, x->task, x->variant, x->share);
        if (fv < 0 || fv == x->variant || x->gpu < 0 || x->gpu >= G)
            continue;
        double lf = loki_variant_latency(&tk->variants[fv], 1, x->share);
        double lv = loki_variant_latency(&tk->variants[x->variant], 1, x->share);
        if (!(lf > 0) || (lv > 0 && lf >= lv))
            continue;
        double fm = tk->variants[fv].mem_mb;
        if (topo->gpus.mem_mb > 0 && mem[x->gpu] + fm > topo->gpus.mem_mb + 1e-6)
            continue;
        mem[x->gpu] += fm;
        x->fallback = fv + 1;
    }
    free(mem);
}
