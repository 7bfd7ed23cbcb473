/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `loki plan` prints the plan a policy makes for a demand (a table for
 * people, JSON for tools); `loki capacity` bisects over root demand for the
 * largest demand each policy carries (served in full, passing the
 * independent plan check, at or above an accuracy floor) and reports its
 * ratio to hardware-only scaling (inferline). Exit 0 ok, 1 failure, 2 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "loki/error.h"
#include "loki/json.h"
#include "loki/planner.h"
#include "loki/topology.h"

struct opts {
    const char *topology;
    const char *demand;
    const char *policy;
    double floor;
    bool json;
};

static void usage(FILE *f, bool plan)
{
    if (plan)
        fprintf(f, "usage: loki plan --topology F --demand QPS[,QPS...] [--policy P] [--json]\n"
                   "  the plan a policy makes for a demand\n"
                   "  --topology F     the topology file\n"
                   "  --demand QPS     root demand, one for all pipelines or one per pipeline\n");
    else
        fprintf(f, "usage: loki capacity --topology F [--policy P] [--accuracy-floor A] [--json]\n"
                   "  the largest demand each policy serves in full, and its ratio to\n"
                   "  hardware-only scaling (inferline)\n"
                   "  --topology F     the topology file\n"
                   "  --accuracy-floor A   served accuracy at least A (0..1 or 0..100)\n");
    fprintf(f,
            "  --policy P       loki | inferline | proteus | static (default: %s)\n"
            "  --json           one JSON object (for tools)\n"
            "  -h, --help       this help\n",
            plan ? "the topology's" : "all four");
}

/* Returns 0 to go on, -1 after --help (exit 0), or the usage exit status 2. */
static int parse(int argc, char **argv, struct opts *o, bool want_demand)
{
    const char *cmd = argv[0];
    static const struct option plan_lo[] = {
        {"topology", required_argument, 0, 't'}, {"policy", required_argument, 0, 'p'},
        {"json", no_argument, 0, 'j'},           {"help", no_argument, 0, 'h'},
        {"demand", required_argument, 0, 'd'},   {0, 0, 0, 0}};
    static const struct option capacity_lo[] = {{"topology", required_argument, 0, 't'},
                                                {"policy", required_argument, 0, 'p'},
                                                {"json", no_argument, 0, 'j'},
                                                {"help", no_argument, 0, 'h'},
                                                {"accuracy-floor", required_argument, 0, 'f'},
                                                {0, 0, 0, 0}};
    const struct option *lo = want_demand ? plan_lo : capacity_lo;
    memset(o, 0, sizeof(*o));
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
        switch (c) {
        case 't':
            o->topology = optarg;
            break;
        case 'p':
            o->policy = optarg;
            break;
        case 'j':
            o->json = true;
            break;
        case 'd':
            o->demand = optarg;
            break;
        case 'f': {
            char *end;
            o->floor = strtod(optarg, &end);
            if (*optarg == 0 || *end || !(o->floor >= 0 && o->floor <= 100))
                return loki__cli_usage_error(cmd, "bad --accuracy-floor '%s' (0..1 or 0..100)",
                                             optarg);
            if (o->floor > 1)
                o->floor /= 100;
            break;
        }
        case 'h':
            usage(stdout, want_demand);
            return -1;
        default:
            return loki__cli_bad_option(cmd, c, argv);
        }
    }
    if (optind != argc)
        return loki__cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!o->topology)
        return loki__cli_usage_error(cmd, "--topology F is required");
    if (want_demand && !o->demand)
        return loki__cli_usage_error(cmd, "--demand QPS is required");
    return 0;
}

static int load(const char *path, struct loki_topology **t)
{
    char err[4096] = "";
    int rc = loki_topology_load(path, t, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "loki: cannot load topology %s: %s\n%s%s", path, loki_strerror(rc), err,
                err[0] && err[strlen(err) - 1] != '\n' ? "\n" : "");
        return 1;
    }
    return 0;
}

static void print_table(const struct loki_topology *t, const struct loki_plan *pl, int check_rc,
                        const char *why)
{
    printf("policy %s, mode %s, solved in %.1f ms (gap %.4f)%s\n", loki_policy_name(pl->policy),
           loki_plan_mode_name(pl->mode), pl->solve_ms, pl->gap, pl->kept ? ", kept" : "");
    printf("GPUs used %.2f of %d, active %d; %d instances; check: %s%s\n", pl->gpus_used,
           t->gpus.count, pl->gpus_active, pl->n_instances, check_rc == 0 ? "ok" : "FAILED ",
           check_rc == 0 ? "" : why);
    for (int p = 0; p < t->n_pipelines; p++) {
        const struct loki_pipeline *pp = &t->pipelines[p];
        printf("\npipeline %s: demand %.1f qps, served %.1f%%, accuracy %.2f%% per query, "
               "%.2f%% per sub-query\n",
               pp->name, pl->demand_qps[p], 100 * pl->served_fraction[p], 100 * pl->accuracy[p],
               100 * pl->accuracy_subquery[p]);
        if (pl->why[p] != LOKI_WHY_NONE)
            printf("  why not all (%s): %s\n", loki_plan_why_name(pl->why[p]), pl->why_text[p]);
        printf("  %-22s %-18s %5s %5s %5s %10s %10s %6s\n", "task", "variant", "inst", "batch",
               "share", "cap qps", "load qps", "util");
        for (int k = 0; k < pp->n_tasks; k++)
            for (int v = 0; v < pp->tasks[k].n_variants; v++) {
                const struct loki_plan_variant *pv = &pl->var[p][k][v];
                if (pv->instances <= 0)
                    continue;
                int fb = 0, fv = -1; /* instances that load a fallback, and which */
                for (int i = 0; i < pl->n_instances; i++) {
                    const struct loki_plan_instance *x = &pl->inst[i];
                    if (x->pipeline == p && x->task == k && x->variant == v && x->fallback) {
                        fb++;
                        fv = loki_plan_fallback(x);
                    }
                }
                printf("  %-22s %-18s %5d %5d %5.2f %10.1f %10.1f %5.0f%%%s", pp->tasks[k].name,
                       pp->tasks[k].variants[v].name, pv->instances, pv->batch, pv->share,
                       pv->capacity_qps, pv->load_qps,
                       pv->capacity_qps > 0 ? 100 * pv->load_qps / pv->capacity_qps : 0,
                       pv->spares ? "  (burst spare)" : "");
                if (fb > 0 && fv >= 0)
                    printf("  +fallback %s%s", pp->tasks[k].variants[fv].name,
                           fb < pv->instances ? " (some)" : "");
                printf("\n");
            }
        printf("  routing split (task <- parent variant: fractions)\n");
        for (int k = 0; k < pp->n_tasks; k++) {
            int par = -1;
            for (int q = 0; q < pp->n_tasks; q++)
                if (loki_task_child_slot(&pp->tasks[q], k) >= 0)
                    par = q;
            int nu = par >= 0 ? pp->tasks[par].n_variants : 1;
            for (int u = 0; u < nu; u++) {
                if (par >= 0 && pl->var[p][par][u].instances <= 0)
                    continue;
                printf("    %s <- %s:", pp->tasks[k].name,
                       par >= 0 ? pp->tasks[par].variants[u].name : "(root)");
                for (int v = 0; v < pp->tasks[k].n_variants; v++)
                    if (pl->split[p][k][u][v] > 1e-4)
                        printf(" %s %.3f", pp->tasks[k].variants[v].name, pl->split[p][k][u][v]);
                printf("\n");
            }
        }
        for (int c = 0; c < pl->n_chains[p] && c < LOKI_MAX_TASKS; c++)
            printf("  chain %d: worst planned latency %.1f ms of %.1f ms budget\n", c,
                   pl->chain_latency_ms[p][c], t->planner.headroom * pp->slo_ms);
    }
    printf("\ninstances (gpu: task/variant[+fallback](share,batch))\n");
    for (int g = 0; g < t->gpus.count; g++) {
        bool any = false;
        for (int i = 0; i < pl->n_instances; i++) {
            const struct loki_plan_instance *x = &pl->inst[i];
            if (x->gpu != g)
                continue;
            if (!any)
                printf("  gpu %d:", g);
            any = true;
            const struct loki_task *xt = &t->pipelines[x->pipeline].tasks[x->task];
            int fv = loki_plan_fallback(x);
            printf(" %s/%s%s%s(%.2f,b%d)", xt->name, xt->variants[x->variant].name,
                   fv >= 0 ? "+" : "", fv >= 0 ? xt->variants[fv].name : "", x->share, x->batch);
        }
        if (any)
            printf("\n");
    }
}

#define SET(o, k, v) loki_json_set(o, k, v, &oom)
#define PUSH(a, v) loki_json_push(a, v, &oom)
#define FIX(x, d) loki_json_fixed(x, d)

/* The plan as one JSON object (jansson, loki/json.h). Returns 0 or -ENOMEM. */
static int print_json(const struct loki_topology *t, const struct loki_plan *pl, int check_rc,
                      const char *why)
{
    bool oom = false;
    json_t *root = json_object();
    SET(root, "policy", json_string(loki_policy_name(pl->policy)));
    SET(root, "mode", json_string(loki_plan_mode_name(pl->mode)));
    SET(root, "solve_ms", FIX(pl->solve_ms, 3));
    SET(root, "gap", FIX(pl->gap, 6));
    SET(root, "kept", json_boolean(pl->kept));
    SET(root, "gpus_used", FIX(pl->gpus_used, 4));
    SET(root, "gpus_active", json_integer(pl->gpus_active));
    SET(root, "check", loki_json_str(check_rc == 0 ? "ok" : why));
    json_t *pipes = SET(root, "pipelines", json_array());
    for (int p = 0; p < t->n_pipelines; p++) {
        const struct loki_pipeline *pp = &t->pipelines[p];
        json_t *po = PUSH(pipes, json_object());
        SET(po, "name", loki_json_str(pp->name));
        SET(po, "demand_qps", FIX(pl->demand_qps[p], 4));
        SET(po, "served_fraction", FIX(pl->served_fraction[p], 6));
        SET(po, "accuracy", FIX(pl->accuracy[p], 6));
        SET(po, "accuracy_subquery", FIX(pl->accuracy_subquery[p], 6));
        json_t *cl = SET(po, "chain_latency_ms", json_array());
        for (int c = 0; c < pl->n_chains[p] && c < LOKI_MAX_TASKS; c++)
            PUSH(cl, FIX(pl->chain_latency_ms[p][c], 3));
        SET(po, "why", json_string(loki_plan_why_name(pl->why[p])));
        SET(po, "why_text", loki_json_str(pl->why_text[p]));
        json_t *vars = SET(po, "variants", json_array());
        for (int k = 0; k < pp->n_tasks; k++)
            for (int v = 0; v < pp->tasks[k].n_variants; v++) {
                const struct loki_plan_variant *pv = &pl->var[p][k][v];
                if (pv->instances <= 0)
                    continue;
                json_t *vo = PUSH(vars, json_object());
                SET(vo, "task", loki_json_str(pp->tasks[k].name));
                SET(vo, "variant", loki_json_str(pp->tasks[k].variants[v].name));
                SET(vo, "instances", json_integer(pv->instances));
                SET(vo, "spares", json_integer(pv->spares));
                SET(vo, "batch", json_integer(pv->batch));
                SET(vo, "share", FIX(pv->share, 4));
                SET(vo, "capacity_qps", FIX(pv->capacity_qps, 3));
                SET(vo, "load_qps", FIX(pv->load_qps, 3));
            }
        json_t *split = SET(po, "split", json_array());
        for (int k = 0; k < pp->n_tasks; k++)
            for (int u = 0; u < LOKI_MAX_VARIANTS; u++)
                for (int v = 0; v < pp->tasks[k].n_variants; v++) {
                    if (pl->split[p][k][u][v] <= 1e-6)
                        continue;
                    json_t *so = PUSH(split, json_object());
                    SET(so, "task", loki_json_str(pp->tasks[k].name));
                    SET(so, "parent_variant", json_integer(u));
                    SET(so, "variant", loki_json_str(pp->tasks[k].variants[v].name));
                    SET(so, "fraction", FIX(pl->split[p][k][u][v], 6));
                }
    }
    json_t *insts = SET(root, "instances", json_array());
    for (int i = 0; i < pl->n_instances; i++) {
        const struct loki_plan_instance *x = &pl->inst[i];
        const struct loki_task *xt = &t->pipelines[x->pipeline].tasks[x->task];
        json_t *io = PUSH(insts, json_object());
        SET(io, "pipeline", json_integer(x->pipeline));
        SET(io, "task", loki_json_str(xt->name));
        SET(io, "variant", loki_json_str(xt->variants[x->variant].name));
        SET(io, "batch", json_integer(x->batch));
        SET(io, "share", FIX(x->share, 4));
        SET(io, "gpu", json_integer(x->gpu));
        SET(io, "fallback",
            loki_plan_fallback(x) >= 0 ? loki_json_str(xt->variants[loki_plan_fallback(x)].name)
                                       : json_null());
    }
    if (oom) {
        json_decref(root);
        return -ENOMEM;
    }
    return loki_json_print(stdout, root);
}

/* Parse "QPS" (every pipeline) or "Q1,Q2,..." (one per pipeline). */
static int parse_demand(const char *s, const struct loki_topology *t, double *d)
{
    int n = 0;
    const char *p = s;
    while (*p && n < LOKI_MAX_PIPELINES) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (end == p || errno || !(v >= 0) || !isfinite(v))
            return -EINVAL;
        d[n++] = v;
        if (*end == ',')
            end++;
        else if (*end)
            return -EINVAL;
        p = end;
    }
    if (n == 1)
        for (int i = 1; i < t->n_pipelines; i++)
            d[i] = d[0];
    else if (n != t->n_pipelines)
        return -EINVAL;
    return 0;
}

int loki_cli_plan(int argc, char **argv)
{
    struct opts o;
    int rc = parse(argc, argv, &o, true);
    if (rc)
        return rc < 0 ? 0 : rc;
    struct loki_topology *t = NULL;
    if (load(o.topology, &t))
        return 1;
    enum loki_policy pol = t->planner.policy;
    double demand[LOKI_MAX_PIPELINES] = {0};
    int ret = 1;
    struct loki_planner *pl = NULL;
    struct loki_plan *plan = malloc(sizeof(*plan));
    if (o.policy && loki_policy_parse(o.policy, &pol) < 0) {
        fprintf(stderr, "loki plan: unknown policy '%s' (loki, inferline, proteus, static)\n",
                o.policy);
        ret = 2;
        goto out;
    }
    if (parse_demand(o.demand, t, demand) < 0) {
        fprintf(stderr, "loki plan: bad --demand '%s': one QPS >= 0, or one per pipeline (%d)\n",
                o.demand, t->n_pipelines);
        ret = 2;
        goto out;
    }
    if (!plan || (rc = loki_planner_create(t, &pl)) < 0) {
        fprintf(stderr, "loki plan: %s\n", loki_strerror(plan ? rc : -ENOMEM));
        goto out;
    }
    rc = loki_planner_solve_policy(pl, pol, demand, NULL, 0, plan);
    if (rc < 0) {
        fprintf(stderr, "loki plan: policy %s: %s\n", loki_policy_name(pol), loki_strerror(rc));
        goto out;
    }
    char why[512] = "";
    int crc = loki_plan_check(t, plan, demand, why, sizeof(why));
    if (o.json && print_json(t, plan, crc, why)) {
        fprintf(stderr, "loki plan: cannot print the plan\n");
        goto out;
    }
    if (!o.json)
        print_table(t, plan, crc, why);
    ret = 0;
out:
    loki_planner_destroy(pl);
    free(plan);
    free(t);
    return ret;
}

/*
 * Whether @pol carries root demand @d on every pipeline at or above @floor; when not and @why is
 * not NULL, why not in words (@len bytes).
 */
static int carried(struct loki_planner *pl, const struct loki_topology *t, enum loki_policy pol,
                   double d, double floor, struct loki_plan *a, struct loki_plan *b, bool *ok,
                   char *why, size_t len)
{
    double demand[LOKI_MAX_PIPELINES];
    for (int p = 0; p < LOKI_MAX_PIPELINES; p++)
        demand[p] = d;
    int rc = loki_planner_solve_policy(pl, pol, demand, NULL, 0, a);
    /* Proteus plans from the traffic it observes: iterate to its steady state. */
    for (int i = 0; rc == 0 && pol == LOKI_POLICY_PROTEUS && i < 3; i++) {
        a->created_s = -1e9; /* no hysteresis or dwell in a steady-state search */
        for (int p = 0; p < LOKI_MAX_PIPELINES; p++)
            for (int k = 0; k < LOKI_MAX_TASKS; k++)
                for (int v = 0; v < LOKI_MAX_VARIANTS; v++)
                    a->var[p][k][v].since_s = -1e9;
        a->served_fraction[0] = a->served_fraction[0]; /* keep */
        rc = loki_planner_solve_policy(pl, pol, demand, a, 1e9, b);
        if (rc == 0)
            memcpy(a, b, sizeof(*a));
    }
    if (rc < 0)
        return rc;
    char chk[512] = "";
    *ok = loki_plan_check(t, a, demand, chk, sizeof(chk)) == 0;
    if (!*ok && why)
        snprintf(why, len, "its plan fails the independent check: %s", chk);
    for (int p = 0; p < t->n_pipelines && *ok; p++) {
        const char *name = t->pipelines[p].name;
        if (a->served_fraction[p] < 1 - 1e-9) {
            *ok = false;
            if (why && a->why[p] != LOKI_WHY_NONE)
                snprintf(why, len, "pipeline %s: %s", name, a->why_text[p]);
            else if (why)
                snprintf(why, len, "pipeline %s: it serves %.1f %% of %g qps", name,
                         100 * fmax(0, a->served_fraction[p]), d);
        } else if (a->accuracy[p] < floor - 1e-9) {
            *ok = false;
            if (why)
                snprintf(why, len,
                         "pipeline %s: its plan for %g qps reaches %.2f %% accuracy, below the "
                         "floor of %.2f %%",
                         name, d, 100 * a->accuracy[p], 100 * floor);
        }
    }
    return 0;
}

static int capacity_of(struct loki_planner *pl, const struct loki_topology *t, enum loki_policy pol,
                       double floor, struct loki_plan *a, struct loki_plan *b, double *out)
{
    bool ok = false;
    double lo = 0, hi = 1;
    int rc;
    for (;;) {
        if ((rc = carried(pl, t, pol, hi, floor, a, b, &ok, NULL, 0)) < 0)
            return rc;
        if (!ok || hi > 1e7)
            break;
        lo = hi;
        hi *= 2;
    }
    if (ok) {
        *out = hi;
        return 0;
    }
    while (hi - lo > fmax(0.05, 1e-3 * lo)) {
        double mid = (lo + hi) / 2;
        if ((rc = carried(pl, t, pol, mid, floor, a, b, &ok, NULL, 0)) < 0)
            return rc;
        if (ok)
            lo = mid;
        else
            hi = mid;
    }
    *out = lo;
    return 0;
}

/* A capacity below this is reported as zero, with the reason (the bisection's resolution). */
#define ZERO_QPS 0.05

int loki_cli_capacity(int argc, char **argv)
{
    struct opts o;
    int rc = parse(argc, argv, &o, false);
    if (rc)
        return rc < 0 ? 0 : rc;
    struct loki_topology *t = NULL;
    if (load(o.topology, &t))
        return 1;
    int ret = 1;
    struct loki_planner *pl = NULL;
    struct loki_plan *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
    enum loki_policy pols[4] = {LOKI_POLICY_INFERLINE, LOKI_POLICY_LOKI, LOKI_POLICY_PROTEUS,
                                LOKI_POLICY_STATIC};
    int np = 4;
    if (o.policy) {
        enum loki_policy p;
        if (loki_policy_parse(o.policy, &p) < 0) {
            fprintf(stderr, "loki capacity: unknown policy '%s'\n", o.policy);
            ret = 2;
            goto out;
        }
        pols[1] = p;
        np = p == LOKI_POLICY_INFERLINE ? 1 : 2;
    }
    if (!a || !b || (rc = loki_planner_create(t, &pl)) < 0) {
        fprintf(stderr, "loki capacity: %s\n", loki_strerror(a && b ? rc : -ENOMEM));
        goto out;
    }
    double cap[4] = {0};
    bool have[4] = {false};
    char why[4][LOKI_WHY_TEXT + 64];
    for (int i = 0; i < np; i++) {
        why[i][0] = 0;
        if (pols[i] == LOKI_POLICY_STATIC && t->planner.n_static == 0)
            continue;
        rc = capacity_of(pl, t, pols[i], o.floor, a, b, &cap[i]);
        if (rc < 0) {
            fprintf(stderr, "loki capacity: policy %s: %s\n", loki_policy_name(pols[i]),
                    loki_strerror(rc));
            goto out;
        }
        have[i] = true;
        if (cap[i] < ZERO_QPS) {
            /* a zero says why: the plan for a trickle of demand */
            bool ok = false;
            if ((rc = carried(pl, t, pols[i], ZERO_QPS, o.floor, a, b, &ok, why[i],
                              sizeof(why[i]))) < 0)
                goto out;
            if (ok || !why[i][0])
                snprintf(why[i], sizeof(why[i]), "it carries at most %g qps", cap[i]);
        }
    }
    if (o.json) {
        bool oom = false;
        json_t *root = json_object();
        SET(root, "topology", loki_json_str(o.topology));
        SET(root, "gpus", json_integer(t->gpus.count));
        SET(root, "accuracy_floor", FIX(o.floor, 4));
        json_t *ps = SET(root, "policies", json_array());
        for (int i = 0; i < np; i++) {
            if (!have[i])
                continue;
            json_t *po = PUSH(ps, json_object());
            SET(po, "policy", json_string(loki_policy_name(pols[i])));
            SET(po, "capacity_qps", FIX(cap[i], 3));
            SET(po, "ratio_to_inferline",
                cap[0] >= ZERO_QPS ? FIX(cap[i] / cap[0], 4) : json_null());
            if (why[i][0])
                SET(po, "why", loki_json_str(why[i]));
        }
        if (oom)
            json_decref(root);
        if (oom || loki_json_print(stdout, root)) {
            fprintf(stderr, "loki capacity: cannot print the result\n");
            goto out;
        }
    } else {
        printf("capacity of %s on %d GPUs, accuracy floor %.1f%% (root qps per pipeline)\n",
               o.topology, t->gpus.count, 100 * o.floor);
        printf("  %-10s %12s %10s\n", "policy", "qps", "ratio");
        for (int i = 0; i < np; i++) {
            if (!have[i])
                continue;
            if (cap[0] >= ZERO_QPS)
                printf("  %-10s %12.1f %9.2fx\n", loki_policy_name(pols[i]), cap[i],
                       cap[i] / cap[0]);
            else
                printf("  %-10s %12.1f %10s\n", loki_policy_name(pols[i]), cap[i], "-");
        }
        for (int i = 0; i < np; i++)
            if (have[i] && why[i][0])
                printf("  %s carries nothing: %s\n", loki_policy_name(pols[i]), why[i]);
        if (cap[0] < ZERO_QPS)
            printf("  (no ratios: inferline, the reference, carries nothing)\n");
        if (t->planner.n_static == 0 && !o.policy)
            printf("  (static: the topology has no planner.static_plan)\n");
    }
    ret = 0;
out:
    loki_planner_destroy(pl);
    free(a);
    free(b);
    free(t);
    return ret;
}
