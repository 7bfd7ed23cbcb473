/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The plan checker: a plan evaluated under the router's split (loads through
 * the split and the fan-outs, latency and accuracy of every variant path in
 * use), independently of how the planner built it. The policies use the same
 * evaluation to fill in a plan's derived fields (loki__plan_finish) and to ask
 * whether the current plan still carries demand; tests and the replay use
 * loki_plan_check() to catch a planner that produced something unplaceable.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "loki/error.h"
#include "loki/planner.h"

struct eval {
    double load[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS];
    int n_chains[LOKI_MAX_PIPELINES];
    double chain_lat[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS];
    double acc_root[LOKI_MAX_PIPELINES], acc_sub[LOKI_MAX_PIPELINES];
    bool cap_ok, lat_ok;
    char why[512];
};

static double fanout(const struct loki_topology *topo, const struct loki_fanout_est *fan, int p,
                     int t, int v, int slot)
{
    return fan ? loki_fanout_est_get(fan, topo, p, t, v, slot)
               : topo->pipelines[p].tasks[t].variants[v].fanout[slot].mean;
}

static void flow(const struct loki_topology *topo, const struct loki_plan *pl,
                 const struct loki_fanout_est *fan, int p, int t, struct eval *e)
{
    const struct loki_task *task = &topo->pipelines[p].tasks[t];
    for (int c = 0; c < task->n_children; c++) {
        int ch = task->children[c];
        const struct loki_task *ct = &topo->pipelines[p].tasks[ch];
        for (int u = 0; u < task->n_variants; u++) {
            double arr = e->load[p][t][u] * fanout(topo, fan, p, t, u, c);
            if (arr <= 0)
                continue;
            for (int v = 0; v < ct->n_variants; v++)
                e->load[p][ch][v] += arr * pl->split[p][ch][u][v];
        }
        flow(topo, pl, fan, p, ch, e);
    }
}

struct walk {
    const struct loki_topology *topo;
    const struct loki_plan *pl;
    const struct loki_fanout_est *fan;
    int p, len;
    const int *chain;
    int var[LOKI_MAX_TASKS];
    double worst, acc, sub_n, sub_d;
    bool lat_ok;
    char *why;
};

static void walk_paths(struct walk *w, int pos, double prob, double lat, double mult)
{
    const struct loki_pipeline *pp = &w->topo->pipelines[w->p];
    if (pos == w->len) {
        w->worst = fmax(w->worst, lat);
        double a = loki__path_accuracy(pp, w->chain, w->len, w->var);
        w->acc += prob * a;
        w->sub_n += prob * mult * a;
        w->sub_d += prob * mult;
        double budget = w->topo->planner.headroom * pp->slo_ms;
        if (lat > budget * (1 + 1e-9) + 1e-9 && w->lat_ok) {
            w->lat_ok = false;
            int o = snprintf(w->why, 256, "path");
            for (int i = 0; i < w->len && o < 200; i++)
                o += snprintf(w->why + o, (size_t)(256 - o), " %s",
                              pp->tasks[w->chain[i]].variants[w->var[w->chain[i]]].name);
            snprintf(w->why + o, (size_t)(256 - (o < 256 ? o : 255)), " takes %.2f ms > %.2f ms",
                     lat, budget);
        }
        return;
    }
    int t = w->chain[pos];
    int u = pos > 0 ? w->var[w->chain[pos - 1]] : 0;
    double m2 = mult;
    if (pos > 0) {
        int par = w->chain[pos - 1];
        int slot = loki_task_child_slot(&pp->tasks[par], t);
        m2 *= slot >= 0 ? fanout(w->topo, w->fan, w->p, par, u, slot) : 0;
    }
    for (int v = 0; v < pp->tasks[t].n_variants; v++) {
        double s = w->pl->split[w->p][t][u][v];
        if (s <= 1e-6)
            continue;
        const struct loki_plan_variant *pv = &w->pl->var[w->p][t][v];
        double l = pv->instances > 0
                       ? loki_variant_latency(&pp->tasks[t].variants[v], pv->batch, pv->share)
                       : -1;
        if (l < 0) {
            if (w->lat_ok)
                snprintf(w->why, 256, "split sends traffic to %s/%s which does not run",
                         pp->tasks[t].name, pp->tasks[t].variants[v].name);
            w->lat_ok = false;
            continue;
        }
        w->var[t] = v;
        walk_paths(w, pos + 1, prob * s, lat + l, m2);
    }
}

static void evaluate(const struct loki_topology *topo, const struct loki_plan *pl,
                     const double *demand, const struct loki_fanout_est *fan, struct eval *e)
{
    memset(e, 0, sizeof(*e));
    e->cap_ok = e->lat_ok = true;
    for (int p = 0; p < topo->n_pipelines; p++) {
        const struct loki_pipeline *pp = &topo->pipelines[p];
        const struct loki_task *root = &pp->tasks[pp->root];
        double d = demand[p] * pl->served_fraction[p];
        for (int v = 0; v < root->n_variants; v++)
            e->load[p][pp->root][v] = d * pl->split[p][pp->root][0][v];
        flow(topo, pl, fan, p, pp->root, e);
        for (int t = 0; t < pp->n_tasks && e->cap_ok; t++)
            for (int v = 0; v < pp->tasks[t].n_variants; v++) {
                double cap = pl->var[p][t][v].capacity_qps;
                if (e->load[p][t][v] > cap * (1 + 1e-6) + 1e-6) {
                    e->cap_ok = false;
                    snprintf(e->why, sizeof(e->why),
                             "%s/%s/%s: load %.2f qps exceeds capacity %.2f qps", pp->name,
                             pp->tasks[t].name, pp->tasks[t].variants[v].name, e->load[p][t][v],
                             cap);
                    break;
                }
            }
        int chains[LOKI_MAX_TASKS * 4][LOKI_MAX_TASKS], len[LOKI_MAX_TASKS * 4];
        int nc = loki_pipeline_chains(pp, chains, len, LOKI_MAX_TASKS * 4);
        e->n_chains[p] = nc;
        double sub_n = 0, sub_d = 0;
        for (int k = 0; k < nc; k++) {
            struct walk w = {.topo = topo,
                             .pl = pl,
                             .fan = fan,
                             .p = p,
                             .len = len[k],
                             .chain = chains[k],
                             .lat_ok = true};
            char why[256] = "";
            w.why = why;
            walk_paths(&w, 0, 1, 0, 1);
            if (k < LOKI_MAX_TASKS)
                e->chain_lat[p][k] = w.worst;
            e->acc_root[p] += w.acc / nc;
            sub_n += w.sub_n;
            sub_d += w.sub_d;
            if (!w.lat_ok && e->lat_ok) {
                e->lat_ok = false;
                if (e->cap_ok)
                    snprintf(e->why, sizeof(e->why), "%s: %s", pp->name, why);
            }
        }
        e->acc_sub[p] = sub_d > 0 ? sub_n / sub_d : e->acc_root[p];
    }
}

int loki_plan_loads(const struct loki_topology *topo, const struct loki_plan *plan,
                    const double *demand, const struct loki_fanout_est *fan,
                    double load[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS])
{
    struct eval *e = malloc(sizeof(*e));
    if (!e)
        return -ENOMEM;
    evaluate(topo, plan, demand, fan, e);
    memcpy(load, e->load, sizeof(e->load));
    int rc = e->cap_ok ? 0 : LOKI_EINFEASIBLE;
    free(e);
    return rc;
}

bool loki__plan_fits(const struct loki_topology *topo, const struct loki_plan *plan,
                     const double *demand, const struct loki_fanout_est *fan)
{
    struct eval *e = malloc(sizeof(*e));
    if (!e)
        return false;
    evaluate(topo, plan, demand, fan, e);
    bool ok = e->cap_ok && e->lat_ok;
    free(e);
    return ok;
}

int loki__plan_finish(const struct loki_topology *topo, const double *demand,
                      const struct loki_fanout_est *fan, struct loki_plan *pl)
{
    struct eval *e = malloc(sizeof(*e));
    if (!e)
        return -ENOMEM;
    pl->gpus_used = 0;
    for (int p = 0; p < topo->n_pipelines; p++) {
        pl->demand_qps[p] = demand[p];
        const struct loki_pipeline *pp = &topo->pipelines[p];
        for (int t = 0; t < pp->n_tasks; t++)
            for (int v = 0; v < pp->tasks[t].n_variants; v++) {
                struct loki_plan_variant *pv = &pl->var[p][t][v];
                pv->capacity_qps =
                    pv->instances > 0
                        ? pv->instances * loki_variant_throughput(&pp->tasks[t].variants[v],
                                                                  pv->batch, pv->share)
                        : 0;
                pl->gpus_used += pv->instances * pv->share;
            }
    }
    evaluate(topo, pl, demand, fan, e);
    for (int p = 0; p < topo->n_pipelines; p++) {
        const struct loki_pipeline *pp = &topo->pipelines[p];
        for (int t = 0; t < pp->n_tasks; t++)
            for (int v = 0; v < pp->tasks[t].n_variants; v++)
                pl->var[p][t][v].load_qps = e->load[p][t][v];
        pl->n_chains[p] = e->n_chains[p];
        memcpy(pl->chain_latency_ms[p], e->chain_lat[p], sizeof(pl->chain_latency_ms[p]));
        pl->accuracy[p] = e->acc_root[p];
        pl->accuracy_subquery[p] = e->acc_sub[p];
    }
    free(e);
    return 0;
}

/* ---- independent checker ---- */

#define WHY(...)                                                                                   \
    do {                                                                                           \
        if (why && len)                                                                            \
            snprintf(why, len, __VA_ARGS__);                                                       \
    } while (0)

int loki_plan_check(const struct loki_topology *topo, const struct loki_plan *plan,
                    const double *demand, char *why, size_t len)
{
    int G = topo->gpus.count;
    double used[LOKI_MAX_INSTANCES], mem[LOKI_MAX_INSTANCES];
    int cl[LOKI_MAX_INSTANCES];
    if (G > LOKI_MAX_INSTANCES)
        G = LOKI_MAX_INSTANCES;
    for (int g = 0; g < G; g++)
        used[g] = mem[g] = cl[g] = 0;
    int(*count)[LOKI_MAX_TASKS][LOKI_MAX_VARIANTS] = calloc(LOKI_MAX_PIPELINES, sizeof(*count));
    if (!count)
        return -ENOMEM;
    int rc = LOKI_EINFEASIBLE;
    if (plan->n_instances < 0 || plan->n_instances > LOKI_MAX_INSTANCES) {
        WHY("bad instance count %d", plan->n_instances);
        goto out;
    }
    for (int i = 0; i < plan->n_instances; i++) {
        const struct loki_plan_instance *x = &plan->inst[i];
        if (x->pipeline < 0 || x->pipeline >= topo->n_pipelines || x->task < 0 ||
            x->task >= topo->pipelines[x->pipeline].n_tasks || x->variant < 0 ||
            x->variant >= topo->pipelines[x->pipeline].tasks[x->task].n_variants) {
            WHY("instance %d names no variant", i);
            goto out;
        }
        if (x->gpu < 0 || x->gpu >= G) {
            WHY("instance %d on GPU %d of %d", i, x->gpu, G);
            goto out;
        }
        const struct loki_plan_variant *pv = &plan->var[x->pipeline][x->task][x->variant];
        if (x->batch != pv->batch || fabs(x->share - pv->share) > 1e-9) {
            WHY("instance %d disagrees with its variant's batch/share", i);
            goto out;
        }
        const struct loki_task *xt = &topo->pipelines[x->pipeline].tasks[x->task];
        int fv = loki_plan_fallback(x);
        if (fv >= xt->n_variants || fv == x->variant || x->fallback < 0) {
            WHY("instance %d has a bad fallback %d", i, x->fallback);
            goto out;
        }
        used[x->gpu] += x->share;
        mem[x->gpu] += xt->variants[x->variant].mem_mb + (fv >= 0 ? xt->variants[fv].mem_mb : 0);
        cl[x->gpu]++;
        count[x->pipeline][x->task][x->variant]++;
    }
    for (int g = 0; g < G; g++) {
        if (used[g] > 1 + 1e-9) {
            WHY("GPU %d holds shares summing to %.3f", g, used[g]);
            goto out;
        }
        if (topo->gpus.mps_max_clients > 0 && cl[g] > topo->gpus.mps_max_clients) {
            WHY("GPU %d has %d MPS clients > %d", g, cl[g], topo->gpus.mps_max_clients);
            goto out;
        }
        if (topo->gpus.mem_mb > 0 && mem[g] > topo->gpus.mem_mb + 1e-6) {
            WHY("GPU %d needs %.0f MB > %.0f MB", g, mem[g], topo->gpus.mem_mb);
            goto out;
        }
    }
    /* Capacity recomputed from the profile, not trusted from the plan. */
    struct loki_plan *tmp = malloc(sizeof(*tmp));
    if (!tmp) {
        rc = -ENOMEM;
        goto out;
    }
    memcpy(tmp, plan, sizeof(*tmp));
    for (int p = 0; p < topo->n_pipelines; p++) {
        const struct loki_pipeline *pp = &topo->pipelines[p];
        if (plan->served_fraction[p] < -1e-9 || plan->served_fraction[p] > 1 + 1e-9) {
            WHY("%s: served fraction %.3f", pp->name, plan->served_fraction[p]);
            free(tmp);
            goto out;
        }
        for (int t = 0; t < pp->n_tasks; t++)
            for (int v = 0; v < pp->tasks[t].n_variants; v++) {
                const struct loki_plan_variant *pv = &plan->var[p][t][v];
                if (count[p][t][v] != pv->instances) {
                    WHY("%s/%s: %d instances placed, %d planned", pp->tasks[t].name,
                        pp->tasks[t].variants[v].name, count[p][t][v], pv->instances);
                    free(tmp);
                    goto out;
                }
                tmp->var[p][t][v].capacity_qps =
                    pv->instances > 0
                        ? pv->instances * loki_variant_throughput(&pp->tasks[t].variants[v],
                                                                  pv->batch, pv->share)
                        : 0;
            }
    }
    struct eval *e = malloc(sizeof(*e));
    if (!e) {
        free(tmp);
        rc = -ENOMEM;
        goto out;
    }
    evaluate(topo, tmp, demand, NULL, e);
    free(tmp);
    /* Splits must be distributions where traffic flows. */
    for (int p = 0; p < topo->n_pipelines && e->cap_ok && e->lat_ok; p++) {
        const struct loki_pipeline *pp = &topo->pipelines[p];
        for (int t = 0; t < pp->n_tasks; t++) {
            const struct loki_task *task = &pp->tasks[t];
            for (int c = 0; c < task->n_children; c++) {
                int ch = task->children[c];
                for (int u = 0; u < task->n_variants; u++) {
                    if (e->load[p][t][u] * task->variants[u].fanout[c].mean <= 1e-9)
                        continue;
                    double s = 0;
                    for (int v = 0; v < pp->tasks[ch].n_variants; v++)
                        s += plan->split[p][ch][u][v];
                    if (fabs(s - 1) > 1e-3) {
                        e->cap_ok = false;
                        snprintf(e->why, sizeof(e->why), "%s: split after %s sums to %.4f",
                                 pp->tasks[ch].name, task->variants[u].name, s);
                    }
                }
            }
            if (t == pp->root && demand[p] * plan->served_fraction[p] > 1e-9) {
                double s = 0;
                for (int v = 0; v < task->n_variants; v++)
                    s += plan->split[p][t][0][v];
                if (fabs(s - 1) > 1e-3) {
                    e->cap_ok = false;
                    snprintf(e->why, sizeof(e->why), "%s: root split sums to %.4f", task->name, s);
                }
            }
        }
    }
    if (!e->cap_ok || !e->lat_ok)
        WHY("%s", e->why);
    else
        rc = 0;
    free(e);
out:
    free(count);
    return rc;
}

/* ---- comparison ---- */

bool loki_plan_differs(const struct loki_plan *a, const struct loki_plan *b)
{
    if (!a || !b)
        return true;
    if (a->n_instances != b->n_instances || memcmp(a->split, b->split, sizeof(a->split)) ||
        memcmp(a->served_fraction, b->served_fraction, sizeof(a->served_fraction)))
        return true;
    for (int i = 0; i < a->n_instances; i++) {
        const struct loki_plan_instance *x = &a->inst[i], *y = &b->inst[i];
        if (x->pipeline != y->pipeline || x->task != y->task || x->variant != y->variant ||
            x->batch != y->batch || x->share != y->share || x->gpu != y->gpu ||
            x->fallback != y->fallback)
            return true;
    }
    return false;
}
