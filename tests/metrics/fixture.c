/* SPDX-License-Identifier: Apache-2.0 */
/* The metrics tests' deployment: see fixture.h. */
#include "fixture.h"

#include <stdlib.h>
#include <string.h>

static void variant(struct loki_variant *va, const char *name, double acc)
{
    strcpy(va->name, name);
    va->accuracy = acc;
    va->n_batches = 1;
    va->batches[0] = 1;
    va->n_shares = 1;
    va->shares[0] = 1;
    va->latency_ms[0][0] = 10;
}

struct loki_topology *fx_topology(void)
{
    struct loki_topology *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    loki_topology_defaults(t);
    t->gpus.count = 8;
    t->n_pipelines = 1;
    struct loki_pipeline *p = &t->pipelines[0];
    strcpy(p->name, "tiny");
    p->slo_ms = 250;
    p->root = 0;
    p->n_tasks = 2;
    struct loki_task *det = &p->tasks[0], *cls = &p->tasks[1];
    strcpy(det->name, "det");
    det->n_children = 1;
    det->children[0] = 1;
    det->n_variants = 2;
    variant(&det->variants[0], "fast", 80);
    variant(&det->variants[1], "slow", 100);
    det->variants[0].fanout[0].mean = 2;
    det->variants[1].fanout[0].mean = 2;
    strcpy(cls->name, "cls");
    cls->n_variants = 1;
    variant(&cls->variants[0], "c0", 100);
    return t;
}

struct loki_plan *fx_plan(void)
{
    struct loki_plan *pl = calloc(1, sizeof(*pl));
    if (!pl)
        return NULL;
    pl->policy = LOKI_POLICY_LOKI;
    pl->mode = LOKI_MODE_ACCURACY;
    pl->inst[0] = (struct loki_plan_instance){0, 0, 0, 4, 0.5, 0, 0};
    pl->inst[1] = (struct loki_plan_instance){0, 0, 0, 4, 0.5, 1, 0};
    pl->inst[2] = (struct loki_plan_instance){0, 0, 1, 2, 0.5, 1, 1};
    pl->inst[3] = (struct loki_plan_instance){0, 1, 0, 8, 1.0, 2, 0};
    pl->n_instances = 4;
    pl->var[0][0][0] = (struct loki_plan_variant){
        .instances = 2, .batch = 4, .share = 0.5, .capacity_qps = 200, .load_qps = 150};
    pl->var[0][0][1] = (struct loki_plan_variant){
        .instances = 1, .batch = 2, .share = 0.5, .capacity_qps = 40, .load_qps = 30};
    pl->var[0][1][0] = (struct loki_plan_variant){
        .instances = 1, .batch = 8, .share = 1, .capacity_qps = 500, .load_qps = 360};
    pl->split[0][0][0][0] = 0.75f;
    pl->split[0][0][0][1] = 0.25f;
    pl->split[0][1][0][0] = 1;
    pl->split[0][1][1][0] = 1;
    pl->demand_qps[0] = 180;
    pl->served_fraction[0] = 1;
    pl->accuracy[0] = 0.85;
    pl->accuracy_subquery[0] = 0.9;
    pl->gpus_used = 2;
    pl->gpus_active = 3;
    pl->solve_ms = 12.5;
    return pl;
}

void fx_stats(struct loki_router_stats *st, uint64_t k)
{
    memset(st, 0, sizeof(*st));
    struct loki_router_pipeline_stats *p = &st->pipe[0];
    p->arrived = 12 * k;
    p->ok = 7 * k;
    p->dropped = k;
    p->late = k;
    p->error = k;
    p->overloaded = 2 * k;
    p->sub_created = 20 * k;
    p->sub_violations = 2 * k;
    p->rerouted = 3;
    p->fallback = 4;
    p->acc_sum = 90.0 * (double)p->ok;
    p->acc_sub_sum = 95.0 * (double)p->ok;
    st->var[0][0][0].arrived = 7 * k;
    st->var[0][0][0].served = 6 * k;
    st->var[0][0][0].batches = 2 * k;
    st->var[0][0][1].arrived = 3 * k;
    st->var[0][0][1].fallback = 5;
    st->var[0][1][0].dropped = k;
    st->roots_inflight = 6;
}
