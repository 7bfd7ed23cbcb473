/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The baseline policies Loki is compared against, on the same machinery
 * (DESIGN.md section 5): inferline (hardware scaling only: Loki's mode ladder
 * without accuracy scaling), proteus (accuracy scaling per task, blind to
 * fan-out and to the pipeline, all GPUs on) and static (the topology's fixed
 * plan). Kept apart from Loki's own policy so that it reads on its own.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "loki/error.h"
#include "loki/planner.h"

/* Inferline: the best variant of every task, the fewest GPUs, else all GPUs and serve what fits. */
int loki__solve_inferline(struct loki_planner *pl, const double *demand,
                          const struct loki_plan *warm, struct loki_plan *out)
{
    return loki__solve_ladder(pl, LOKI_POLICY_INFERLINE, demand, warm, true, false, out);
}

/* Proteus: per task, from the demand its task sees now, blind to the pipeline. */
int loki__solve_proteus(struct loki_planner *pl, const double *demand,
                        const struct loki_plan *current, struct loki_plan *out)
{
    const struct loki_topology *topo = pl->topo;
    struct loki__milp_req rq;
    memset(&rq, 0, sizeof(rq));
    rq.topo = pl->milp_topo;
    rq.fan = &pl->fan;
    rq.decoupled = true;
    rq.time_limit_ms = topo->planner.time_limit_ms;
    rq.mip_gap = topo->planner.mip_gap;
    rq.budget = topo->gpus.count;
    for (int p = 0; p < topo->n_pipelines; p++)
        rq.demand[p] = demand[p] > 0 ? demand[p] : 0;
    if (current && current->policy == LOKI_POLICY_PROTEUS) {
        /* What each task would observe under the routing now in force. */
        double(*load)[LOKI_MAX_TASKS][LOKI_MAX_VARIANTS] =
            calloc(LOKI_MAX_PIPELINES, sizeof(*load));
        if (!load)
            return -ENOMEM;
        struct loki_plan *tmp = &pl->scratch;
        memcpy(tmp, current, sizeof(*tmp));
        for (int p = 0; p < topo->n_pipelines; p++)
            tmp->served_fraction[p] = 1;
        loki_plan_loads(topo, tmp, rq.demand, &pl->fan, load);
        for (int p = 0; p < topo->n_pipelines; p++)
            for (int t = 0; t < topo->pipelines[p].n_tasks; t++)
                for (int v = 0; v < topo->pipelines[p].tasks[t].n_variants; v++)
                    rq.task_demand[p][t] += load[p][t][v];
        free(load);
    } else {
        /* First solve: the demand a full-accuracy pipeline would show. */
        for (int p = 0; p < topo->n_pipelines; p++) {
            const struct loki_pipeline *pp = &topo->pipelines[p];
            int chains[LOKI_MAX_TASKS * 4][LOKI_MAX_TASKS], len[LOKI_MAX_TASKS * 4];
            int nc = loki_pipeline_chains(pp, chains, len, LOKI_MAX_TASKS * 4);
            rq.task_demand[p][pp->root] = rq.demand[p];
            for (int k = 0; k < nc; k++)
                for (int i = 1; i < len[k]; i++) {
                    int par = chains[k][i - 1], t = chains[k][i];
                    int b = loki_task_best_variant(&pp->tasks[par]);
                    int slot = loki_task_child_slot(&pp->tasks[par], t);
                    rq.task_demand[p][t] = rq.task_demand[p][par] *
                                           loki_fanout_est_get(&pl->fan, topo, p, par, b, slot);
                }
        }
    }
    double ms = 0;
    for (int mi = 1; mi < 3; mi++) {
        rq.mode = mi == 1 ? LOKI__MILP_ACCURACY : LOKI__MILP_SERVED;
        for (int attempt = 0; attempt < 8 && rq.budget > 0; attempt++) {
            int rc = loki__milp_solve(&rq, &pl->res);
            ms += pl->res.solve_ms;
            if (rc < 0)
                return rc;
            if (!pl->res.feasible)
                break;
            loki__plan_reset(out, LOKI_POLICY_PROTEUS);
            loki__plan_from_res(topo, &pl->res, out);
            out->mode = mi == 1 ? LOKI_MODE_ACCURACY : LOKI_MODE_SERVED;
            /* All GPUs stay on: spread what is left over the busiest variants. */
            double left = topo->gpus.count;
            for (int p = 0; p < topo->n_pipelines; p++)
                for (int t = 0; t < topo->pipelines[p].n_tasks; t++)
                    for (int v = 0; v < topo->pipelines[p].tasks[t].n_variants; v++)
                        left -= out->var[p][t][v].instances * out->var[p][t][v].share;
            for (int guard = 0; guard < 4 * LOKI_MAX_INSTANCES && left > 1e-9; guard++) {
                int bp = -1, bt = -1, bv = -1;
                double best = -1;
                for (int p = 0; p < topo->n_pipelines; p++)
                    for (int t = 0; t < topo->pipelines[p].n_tasks; t++)
                        for (int v = 0; v < topo->pipelines[p].tasks[t].n_variants; v++) {
                            const struct loki_plan_variant *pv = &out->var[p][t][v];
                            if (pv->instances <= 0 || pv->share > left + 1e-9)
                                continue;
                            double need = pl->res.load[p][t][v] / pv->instances;
                            if (need > best) {
                                best = need;
                                bp = p, bt = t, bv = v;
                            }
                        }
                if (bp < 0)
                    break;
                out->var[bp][bt][bv].instances++;
                left -= out->var[bp][bt][bv].share;
            }
            if ((rc = loki__plan_finish(topo, demand, &pl->fan, out)) < 0)
                return rc;
            if (loki__place(topo, out) == 0) {
                out->solve_ms = ms;
                out->gap = pl->res.gap;
                return 0;
            }
            rq.budget -= 1;
        }
    }
    loki__plan_reset(out, LOKI_POLICY_PROTEUS);
    out->mode = LOKI_MODE_SERVED;
    out->solve_ms = ms;
    return loki__plan_finish(topo, demand, &pl->fan, out);
}

int loki__solve_static(struct loki_planner *pl, const double *demand, struct loki_plan *out)
{
    const struct loki_topology *topo = pl->topo;
    loki__plan_reset(out, LOKI_POLICY_STATIC);
    out->mode = LOKI_MODE_STATIC;
    for (int i = 0; i < topo->planner.n_static; i++) {
        const struct loki_static_entry *s = &topo->planner.static_plan[i];
        if (s->pipeline < 0 || s->pipeline >= topo->n_pipelines || s->task < 0 ||
            s->task >= topo->pipelines[s->pipeline].n_tasks || s->variant < 0 ||
            s->variant >= topo->pipelines[s->pipeline].tasks[s->task].n_variants)
            return -EINVAL;
        struct loki_plan_variant *pv = &out->var[s->pipeline][s->task][s->variant];
        pv->instances = s->instances;
        pv->batch = s->batch;
        pv->share = s->share > 0 ? s->share : 1;
    }
    for (int p = 0; p < topo->n_pipelines; p++) {
        const struct loki_pipeline *pp = &topo->pipelines[p];
        for (int t = 0; t < pp->n_tasks; t++) {
            const struct loki_task *task = &pp->tasks[t];
            double cap[LOKI_MAX_VARIANTS] = {0}, sum = 0;
            for (int v = 0; v < task->n_variants; v++) {
                const struct loki_plan_variant *pv = &out->var[p][t][v];
                cap[v] = pv->instances *
                         loki_variant_throughput(&task->variants[v], pv->batch, pv->share);
                sum += cap[v];
            }
            for (int u = 0; u < LOKI_MAX_VARIANTS; u++)
                for (int v = 0; v < task->n_variants; v++)
                    out->split[p][t][u][v] = sum > 0 ? (float)(cap[v] / sum) : 0;
        }
        out->served_fraction[p] = 1;
    }
    int rc = loki__plan_finish(topo, demand, &pl->fan, out);
    if (rc < 0)
        return rc;
    /* Serve what the fixed capacity carries; admission control sheds the rest. */
    for (int p = 0; p < topo->n_pipelines; p++) {
        double f = 1;
        const struct loki_pipeline *pp = &topo->pipelines[p];
        for (int t = 0; t < pp->n_tasks; t++)
            for (int v = 0; v < pp->tasks[t].n_variants; v++) {
                const struct loki_plan_variant *pv = &out->var[p][t][v];
                if (pv->load_qps > 1e-9)
                    f = fmin(f, pv->capacity_qps / pv->load_qps);
            }
        out->served_fraction[p] = f;
    }
    if ((rc = loki__plan_finish(topo, demand, &pl->fan, out)) < 0)
        return rc;
    return loki__place(topo, out) == 0 ? 0 : LOKI_EINFEASIBLE;
}
