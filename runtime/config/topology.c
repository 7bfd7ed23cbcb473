/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Topology loader. Two passes: libyaml events become a small node tree that
 * remembers line and column of every node; then a schema walk fills the
 * model, rejecting unknown keys, wrong types and out-of-range values, and a
 * final semantic pass checks the DAG (unknown children, cycles, one root,
 * reachability) and the SLO against the fastest path. All errors are
 * collected, not just the first, so a user fixes a file in one go. This file holds the
 * pipelines (tasks, variants, fan-outs, the DAG checks) and the public entry points;
 * topology_parse.c pass 1 and the schema helpers, topology_sections.c the other sections.
 */
#include "loki/topology.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "loki/error.h"
#include "topology_internal.h"

/*
 * Profiled batch latencies: from 1 ns (bench/e2e_zero.yaml's zero-cost workers) to an hour (the
 * bound of slo_ms and startup_ms). Unbounded, 1e308 ms would overflow the sim worker's sleep in
 * nanoseconds and every sum over a path.
 */
#define LAT_MIN_MS 1e-6
#define LAT_MAX_MS 3.6e6

/* Parses a list of positive latencies; @n must match the batch list. */
static bool load_lat_row(struct ctx *c, const struct node *seq, const char *key, int n, double *row)
{
    if (!want(c, seq, N_SEQ, key))
        return false;
    if (seq->n != n) {
        errorf(c, seq, key, "has %d entries but batch_sizes has %d", seq->n, n);
        return false;
    }
    bool ok = true;
    for (int i = 0; i < n; i++) {
        double d;
        if (!get_double(c, seq->vals[i], key, &d)) {
            ok = false;
            continue;
        }
        if (d <= 0) {
            errorf(c, seq->vals[i], key, "latency must be positive, got %g ms", d);
            ok = false;
        } else if (!in_range(c, seq->vals[i], key, d, LAT_MIN_MS, LAT_MAX_MS, false)) {
            ok = false;
        }
        row[i] = d;
    }
    return ok;
}

/* Append @s (with its NUL) to the topology's string pool; false (an error at @at) when full. */
static bool add_string(struct ctx *c, const struct node *at, const char *s)
{
    size_t n = strlen(s) + 1;
    if (c->t->strings_used == 0)
        c->t->strings_used = 1; /* offset 0: the empty string, "none" */
    if (n > sizeof(c->t->strings) - c->t->strings_used) {
        errorf(c, at, "args", "backend arguments and input descriptions pass %u bytes in all",
               (unsigned)sizeof(c->t->strings));
        return false;
    }
    memcpy(c->t->strings + c->t->strings_used, s, n);
    c->t->strings_used += (uint32_t)n;
    return true;
}

static void load_variant(struct ctx *c, const struct node *m, struct loki_task *t,
                         struct loki_variant *var, const struct node **fanout_node)
{
    static const char *const keys[] = {
        "name",         "accuracy", "memory_mb", "startup_ms", "batch_sizes",      "latency_ms",
        "share_scaled", "fanout",   "backend",   "args",       "max_output_bytes", NULL};
    const struct node *v;
    double d;
    long long i;
    check_keys(c, m, "variant", keys);
    if ((v = require(c, m, "name", "variant")))
        get_name(c, v, "name", var->name);
    if ((v = require(c, m, "accuracy", "variant")) && get_double(c, v, "accuracy", &d) &&
        in_range(c, v, "accuracy", d, 0, 100, false))
        var->accuracy = d;
    var->mem_mb = 1024;
    if ((v = map_get(m, "memory_mb")) && get_double(c, v, "memory_mb", &d) &&
        in_range(c, v, "memory_mb", d, 0, 1e9, false))
        var->mem_mb = d;
    var->startup_ms = 1000;
    if ((v = map_get(m, "startup_ms")) && get_double(c, v, "startup_ms", &d) &&
        in_range(c, v, "startup_ms", d, 0, 3.6e6, false))
        var->startup_ms = d;
    if ((v = map_get(m, "share_scaled")))
        get_bool(c, v, "share_scaled", &var->share_scaled);

    const struct node *bs = map_get(m, "batch_sizes");
    const struct node *lat = map_get(m, "latency_ms");
    if (!bs || !lat) {
        errorf(c, m, bs ? "latency_ms" : "batch_sizes",
               "variant '%s' has no latency profile (needs batch_sizes and latency_ms)", var->name);
    } else if (want(c, bs, N_SEQ, "batch_sizes")) {
        if (bs->n == 0 || bs->n > LOKI_MAX_BATCHES)
            errorf(c, bs, "batch_sizes", "needs 1..%d entries, has %d", LOKI_MAX_BATCHES, bs->n);
        bool ok = bs->n > 0 && bs->n <= LOKI_MAX_BATCHES;
        for (int k = 0; ok && k < bs->n; k++) {
            if (!get_int(c, bs->vals[k], "batch_sizes", &i)) {
                ok = false;
            } else if (i < 1 || i > LOKI_MAX_BATCH) {
                errorf(c, bs->vals[k], "batch_sizes", "batch size must be 1..%d, got %lld",
                       LOKI_MAX_BATCH, i);
                ok = false;
            } else if (k > 0 && i <= var->batches[k - 1]) {
                errorf(c, bs->vals[k], "batch_sizes", "must be strictly ascending");
                ok = false;
            } else {
                var->batches[k] = (int)i;
            }
        }
        if (ok) {
            var->n_batches = bs->n;
            if (lat->type == N_SEQ) {
                var->n_shares = 1;
                var->shares[0] = 1.0;
                load_lat_row(c, lat, "latency_ms", bs->n, var->latency_ms[0]);
            } else if (want(c, lat, N_MAP, "latency_ms")) {
                /* share -> row; stored with share 1 first, then descending */
                double shares[LOKI_MAX_SHARES];
                int ns = 0;
                bool have_full = false;
                for (int k = 0; k < lat->n; k++) {
                    if (ns == LOKI_MAX_SHARES) {
                        errorf(c, lat->keys[k], "latency_ms", "more than %d shares",
                               LOKI_MAX_SHARES);
                        break;
                    }
                    struct node key = *lat->keys[k];
                    key.quoted = false; /* a quoted "0.5" key is fine */
                    if (!get_double(c, &key, "latency_ms", &d) ||
                        !in_range(c, lat->keys[k], "latency_ms share", d, 0, 1, true))
                        continue;
                    have_full |= fabs(d - 1.0) < 1e-9;
                    shares[ns] = d;
                    load_lat_row(c, lat->vals[k], "latency_ms", bs->n, var->latency_ms[ns]);
                    ns++;
                }
                if (!have_full)
                    errorf(c, lat, "latency_ms", "per-share profile must include share 1");
                /* sort by descending share (insertion sort over rows) */
                for (int a = 1; a < ns; a++) {
                    for (int b = a; b > 0 && shares[b] > shares[b - 1]; b--) {
                        double tmp = shares[b];
                        shares[b] = shares[b - 1];
                        shares[b - 1] = tmp;
                        double row[LOKI_MAX_BATCHES];
                        memcpy(row, var->latency_ms[b], sizeof(row));
                        memcpy(var->latency_ms[b], var->latency_ms[b - 1], sizeof(row));
                        memcpy(var->latency_ms[b - 1], row, sizeof(row));
                    }
                }
                for (int a = 1; a < ns; a++)
                    if (fabs(shares[a] - shares[a - 1]) < 1e-9)
                        errorf(c, lat, "latency_ms", "share %g given twice", shares[a]);
                memcpy(var->shares, shares, sizeof(double) * (size_t)ns);
                var->n_shares = ns;
            }
        }
    }

    var->backend = LOKI_BACKEND_SIM;
    if ((v = map_get(m, "backend")) && want(c, v, N_SCALAR, "backend")) {
        if (!strcmp(v->str, "sim")) {
            var->backend = LOKI_BACKEND_SIM;
        } else if (!strcmp(v->str, "cuda")) {
            var->backend = LOKI_BACKEND_CUDA;
        } else if (strchr(v->str, '/') || strstr(v->str, ".so")) {
            var->backend = LOKI_BACKEND_PLUGIN;
            get_str(c, v, "backend", var->backend_path, sizeof(var->backend_path));
        } else {
            errorf(c, v, "backend", "expected sim, cuda or the path of a plugin .so, got '%s'",
                   v->str);
        }
    }
    var->max_output_bytes = LOKI_DEFAULT_OUTPUT_BYTES;
    if ((v = map_get(m, "max_output_bytes")) && get_int(c, v, "max_output_bytes", &i) &&
        in_range(c, v, "max_output_bytes", (double)i, 1, LOKI_MAX_OUTPUT_BYTES, false))
        var->max_output_bytes = (uint32_t)i;
    if ((v = map_get(m, "args")) && want(c, v, N_MAP, "args")) {
        if (v->n > LOKI_MAX_ARGS) {
            errorf(c, v, "args", "has %d entries, at most %d", v->n, LOKI_MAX_ARGS);
        } else {
            /* offset 0 is the pool's empty string, "none" (add_string() starts after it) */
            var->args_off = c->t->strings_used ? c->t->strings_used : 1;
            for (int k = 0; k < v->n; k++) {
                for (int j = 0; j < k; j++)
                    if (!strcmp(v->keys[j]->str, v->keys[k]->str))
                        errorf(c, v->keys[k], v->keys[k]->str, "duplicate key in args");
                if (!want(c, v->vals[k], N_SCALAR, v->keys[k]->str))
                    continue;
                if (add_string(c, v->keys[k], v->keys[k]->str) &&
                    add_string(c, v->vals[k], v->vals[k]->str))
                    var->n_args++;
            }
        }
    }
    *fanout_node = map_get(m, "fanout");
    (void)t;
}

/* Fan-outs are checked against the task's children once all tasks are known. */
static void load_fanout(struct ctx *c, const struct loki_pipeline *p, const struct loki_task *t,
                        struct loki_variant *var, const struct node *m, const struct node *at)
{
    static const char *const keys[] = {"mean", "dist", NULL};
    bool seen[LOKI_MAX_CHILDREN] = {false};
    if (m && want(c, m, N_MAP, "fanout")) {
        for (int k = 0; k < m->n; k++) {
            const char *child = m->keys[k]->str;
            int ti = loki_pipeline_task_index(p, child);
            int slot = ti < 0 ? -1 : loki_task_child_slot(t, ti);
            if (slot < 0) {
                errorf(c, m->keys[k], "fanout", "'%s' is not a child task of '%s'", child, t->name);
                continue;
            }
            if (seen[slot]) {
                errorf(c, m->keys[k], "fanout", "'%s' given twice", child);
                continue;
            }
            seen[slot] = true;
            struct loki_fanout *f = &var->fanout[slot];
            const struct node *v = m->vals[k], *x;
            double d;
            if (v->type == N_MAP) {
                check_keys(c, v, "fanout entry", keys);
                if ((x = require(c, v, "mean", "fanout entry")) && get_double(c, x, "mean", &d) &&
                    in_range(c, x, "mean", d, 0, 1e4, false))
                    f->mean = d;
                if ((x = map_get(v, "dist")) && want(c, x, N_SCALAR, "dist")) {
                    if (!strcmp(x->str, "poisson"))
                        f->dist = LOKI_FANOUT_POISSON;
                    else if (!strcmp(x->str, "constant"))
                        f->dist = LOKI_FANOUT_CONSTANT;
                    else if (!strcmp(x->str, "geometric"))
                        f->dist = LOKI_FANOUT_GEOMETRIC;
                    else
                        errorf(c, x, "dist", "expected poisson, constant or geometric, got '%s'",
                               x->str);
                }
            } else if (get_double(c, v, child, &d) && in_range(c, v, child, d, 0, 1e4, false)) {
                f->mean = d;
            }
        }
    }
    for (int s = 0; s < t->n_children; s++)
        if (!seen[s])
            errorf(c, m ? m : at, "fanout",
                   "variant '%s' of task '%s' gives no fan-out for child task '%s'", var->name,
                   t->name, p->tasks[t->children[s]].name);
}

static void load_path_acc(struct ctx *c, struct loki_pipeline *p, const struct node *seq)
{
    static const char *const keys[] = {"path", "accuracy", NULL};
    if (!want(c, seq, N_SEQ, "path_accuracy"))
        return;
    for (int k = 0; k < seq->n; k++) {
        const struct node *m = seq->vals[k], *v;
        double d;
        if (!want(c, m, N_MAP, "path_accuracy"))
            continue;
        check_keys(c, m, "path_accuracy entry", keys);
        if (p->n_path_acc == LOKI_MAX_PATH_ACC) {
            errorf(c, m, "path_accuracy", "more than %d rows", LOKI_MAX_PATH_ACC);
            return;
        }
        struct loki_path_accuracy *row = &p->path_acc[p->n_path_acc];
        for (int i = 0; i < LOKI_MAX_TASKS; i++)
            row->variant[i] = -1;
        bool ok = true;
        if ((v = require(c, m, "path", "path_accuracy entry")) && want(c, v, N_MAP, "path")) {
            for (int i = 0; i < v->n; i++) {
                int ti = loki_pipeline_task_index(p, v->keys[i]->str);
                if (ti < 0) {
                    errorf(c, v->keys[i], "path", "unknown task '%s'", v->keys[i]->str);
                    ok = false;
                    continue;
                }
                if (!want(c, v->vals[i], N_SCALAR, "path")) {
                    ok = false;
                    continue;
                }
                int vi = loki_task_variant_index(&p->tasks[ti], v->vals[i]->str);
                if (vi < 0) {
                    errorf(c, v->vals[i], "path", "unknown variant '%s' of task '%s'",
                           v->vals[i]->str, p->tasks[ti].name);
                    ok = false;
                    continue;
                }
                row->variant[ti] = vi;
            }
        } else {
            ok = false;
        }
        if ((v = require(c, m, "accuracy", "path_accuracy entry")) &&
            get_double(c, v, "accuracy", &d) && in_range(c, v, "accuracy", d, 0, 100, false))
            row->accuracy = d;
        else
            ok = false;
        if (ok)
            p->n_path_acc++;
    }
}

/* DFS colouring for cycle detection: 0 white, 1 grey, 2 black. */
static bool has_cycle(const struct loki_pipeline *p, int t, int *colour, int *at)
{
    colour[t] = 1;
    for (int c = 0; c < p->tasks[t].n_children; c++) {
        int ch = p->tasks[t].children[c];
        if (colour[ch] == 1) {
            *at = t;
            return true;
        }
        if (colour[ch] == 0 && has_cycle(p, ch, colour, at))
            return true;
    }
    colour[t] = 2;
    return false;
}

/* Slowest chain's fastest latency: the least time any root query needs. */
static double fastest_ms(const struct loki_pipeline *p, int t)
{
    double self = loki_task_min_latency(&p->tasks[t]);
    double worst_child = 0;
    for (int c = 0; c < p->tasks[t].n_children; c++) {
        double l = fastest_ms(p, p->tasks[t].children[c]);
        if (l > worst_child)
            worst_child = l;
    }
    return self + worst_child;
}

static void load_pipeline(struct ctx *c, const struct node *m, struct loki_pipeline *p)
{
    static const char *const keys[] = {"name", "slo_ms", "tasks", "path_accuracy", NULL};
    static const char *const tkeys[] = {"name", "children", "variants", "input", NULL};
    const struct node *v, *tasks;
    const struct node *task_nodes[LOKI_MAX_TASKS] = {0};
    const struct node *children_nodes[LOKI_MAX_TASKS] = {0};
    const struct node *fanouts[LOKI_MAX_TASKS][LOKI_MAX_VARIANTS] = {{0}};
    const struct node *var_nodes[LOKI_MAX_TASKS][LOKI_MAX_VARIANTS] = {{0}};
    double d;
    int errors_before = c->n_errors;

    if (!want(c, m, N_MAP, "pipelines"))
        return;
    check_keys(c, m, "pipeline", keys);
    if ((v = require(c, m, "name", "pipeline")))
        get_name(c, v, "name", p->name);
    if ((v = require(c, m, "slo_ms", "pipeline")) && get_double(c, v, "slo_ms", &d) &&
        in_range(c, v, "slo_ms", d, 0, 3.6e6, true))
        p->slo_ms = d;
    if (!(tasks = require(c, m, "tasks", "pipeline")) || !want(c, tasks, N_SEQ, "tasks"))
        return;
    if (tasks->n == 0 || tasks->n > LOKI_MAX_TASKS) {
        errorf(c, tasks, "tasks", "needs 1..%d tasks, has %d", LOKI_MAX_TASKS, tasks->n);
        return;
    }
    /* names first, so children and fan-outs can refer forward */
    for (int k = 0; k < tasks->n; k++) {
        const struct node *tm = tasks->vals[k];
        struct loki_task *t = &p->tasks[p->n_tasks];
        if (!want(c, tm, N_MAP, "tasks"))
            continue;
        check_keys(c, tm, "task", tkeys);
        if ((v = require(c, tm, "name", "task")) && get_name(c, v, "name", t->name)) {
            if (loki_pipeline_task_index(p, t->name) >= 0)
                errorf(c, v, "name", "duplicate task name '%s'", t->name);
        }
        if ((v = map_get(tm, "input")) && want(c, v, N_SCALAR, "input")) {
            uint32_t off = c->t->strings_used ? c->t->strings_used : 1;
            if (add_string(c, v, v->str))
                t->input_off = off;
        }
        task_nodes[p->n_tasks] = tm;
        p->n_tasks++;
    }
    for (int ti = 0; ti < p->n_tasks; ti++) {
        const struct node *tm = task_nodes[ti];
        struct loki_task *t = &p->tasks[ti];
        if (!tm)
            continue;
        if ((v = map_get(tm, "children")) && want(c, v, N_SEQ, "children")) {
            children_nodes[ti] = v;
            for (int k = 0; k < v->n; k++) {
                if (!want(c, v->vals[k], N_SCALAR, "children"))
                    continue;
                int ch = loki_pipeline_task_index(p, v->vals[k]->str);
                if (ch < 0) {
                    errorf(c, v->vals[k], "children", "unknown child task '%s' of task '%s'",
                           v->vals[k]->str, t->name);
                } else if (loki_task_child_slot(t, ch) >= 0) {
                    errorf(c, v->vals[k], "children", "child task '%s' listed twice",
                           v->vals[k]->str);
                } else if (t->n_children == LOKI_MAX_CHILDREN) {
                    errorf(c, v->vals[k], "children", "more than %d children", LOKI_MAX_CHILDREN);
                } else {
                    t->children[t->n_children++] = ch;
                }
            }
        }
        const struct node *vars = require(c, tm, "variants", "task");
        if (!vars || !want(c, vars, N_SEQ, "variants"))
            continue;
        if (vars->n == 0 || vars->n > LOKI_MAX_VARIANTS) {
            errorf(c, vars, "variants", "task '%s' needs 1..%d variants, has %d", t->name,
                   LOKI_MAX_VARIANTS, vars->n);
            continue;
        }
        for (int k = 0; k < vars->n; k++) {
            if (!want(c, vars->vals[k], N_MAP, "variants"))
                continue;
            struct loki_variant *var = &t->variants[t->n_variants];
            load_variant(c, vars->vals[k], t, var, &fanouts[ti][t->n_variants]);
            for (int j = 0; j < t->n_variants; j++)
                if (var->name[0] && !strcmp(t->variants[j].name, var->name))
                    errorf(c, vars->vals[k], "name", "duplicate variant name '%s' in task '%s'",
                           var->name, t->name);
            var_nodes[ti][t->n_variants] = vars->vals[k];
            t->n_variants++;
        }
    }
    for (int ti = 0; ti < p->n_tasks; ti++)
        for (int vi = 0; vi < p->tasks[ti].n_variants; vi++)
            load_fanout(c, p, &p->tasks[ti], &p->tasks[ti].variants[vi], fanouts[ti][vi],
                        var_nodes[ti][vi]);

    /* DAG: one root, no cycles, everything reachable */
    int indeg[LOKI_MAX_TASKS] = {0};
    for (int ti = 0; ti < p->n_tasks; ti++)
        for (int k = 0; k < p->tasks[ti].n_children; k++)
            indeg[p->tasks[ti].children[k]]++;
    int colour[LOKI_MAX_TASKS] = {0};
    for (int ti = 0; ti < p->n_tasks; ti++) {
        int at = -1;
        if (colour[ti] == 0 && has_cycle(p, ti, colour, &at)) {
            errorf(c, children_nodes[at] ? children_nodes[at] : task_nodes[at], "children",
                   "task '%s' closes a cycle: a pipeline must be a DAG", p->tasks[at].name);
            return;
        }
    }
    p->root = -1;
    for (int ti = 0; ti < p->n_tasks; ti++) {
        if (indeg[ti])
            continue;
        if (p->root >= 0) {
            errorf(c, task_nodes[ti], "tasks",
                   "pipeline '%s' has two roots ('%s' and '%s'); exactly one task may have no "
                   "parent",
                   p->name, p->tasks[p->root].name, p->tasks[ti].name);
            return;
        }
        p->root = ti;
    }
    if (p->root < 0) {
        errorf(c, tasks, "tasks", "pipeline '%s' has no root task", p->name);
        return;
    }
    if ((v = map_get(m, "path_accuracy")))
        load_path_acc(c, p, v);
    if (c->n_errors != errors_before)
        return; /* latency checks need complete profiles */
    double fast = fastest_ms(p, p->root);
    if (p->slo_ms > 0 && fast > p->slo_ms)
        errorf(c, map_get(m, "slo_ms"), "slo_ms",
               "SLO %g ms of pipeline '%s' is shorter than its fastest path (%g ms at batch 1)",
               p->slo_ms, p->name, fast);
}

static void load_root(struct ctx *c, const struct node *root)
{
    static const char *const keys[] = {"gpus", "planner", "frontend", "runtime", "pipelines", NULL};
    const struct node *v;
    if (!root) {
        errorf(c, NULL, NULL, "empty document");
        return;
    }
    if (!want(c, root, N_MAP, "top level"))
        return;
    check_keys(c, root, "the top level", keys);
    if ((v = require(c, root, "gpus", "the top level")))
        load_gpus(c, v);
    if ((v = map_get(root, "planner")))
        load_planner(c, v);
    if ((v = map_get(root, "frontend")))
        load_frontend(c, v);
    if ((v = map_get(root, "runtime")))
        load_runtime(c, v);
    v = require(c, root, "pipelines", "the top level");
    if (!v || !want(c, v, N_SEQ, "pipelines"))
        return;
    if (v->n == 0 || v->n > LOKI_MAX_PIPELINES) {
        errorf(c, v, "pipelines", "needs 1..%d pipelines, has %d", LOKI_MAX_PIPELINES, v->n);
        return;
    }
    for (int k = 0; k < v->n; k++) {
        struct loki_pipeline *p = &c->t->pipelines[c->t->n_pipelines];
        load_pipeline(c, v->vals[k], p);
        for (int j = 0; j < c->t->n_pipelines; j++)
            if (p->name[0] && !strcmp(c->t->pipelines[j].name, p->name))
                errorf(c, v->vals[k], "name", "duplicate pipeline name '%s'", p->name);
        c->t->n_pipelines++;
    }
    /*
     * Whole-GPU profiles under a share granularity below 1: derive the shares (latency / share,
     * marked share_scaled) before the static plan refers to them. Derived shares are multiples
     * of the granularity by construction; the check below is for the shares the file lists.
     */
    if (c->n_errors == 0)
        loki_topology_derive_shares(c->t);
    const struct node *planner = map_get(root, "planner");
    if (planner && planner->type == N_MAP && (v = map_get(planner, "static_plan")))
        load_static_plan(c, v);
    if (c->t->planner.policy == LOKI_POLICY_STATIC && c->t->planner.n_static == 0)
        errorf(c, planner, "policy", "policy 'static' needs a non-empty planner.static_plan");
    /* shares must be multiples of the granularity */
    double g = c->t->gpus.share_granularity;
    for (int pi = 0; pi < c->t->n_pipelines; pi++)
        for (int ti = 0; ti < c->t->pipelines[pi].n_tasks; ti++)
            for (int vi = 0; vi < c->t->pipelines[pi].tasks[ti].n_variants; vi++) {
                const struct loki_variant *var = &c->t->pipelines[pi].tasks[ti].variants[vi];
                for (int s = 0; s < var->n_shares; s++) {
                    double k = var->shares[s] / g;
                    if (fabs(k - round(k)) > 1e-9)
                        errorf(c, v, "latency_ms",
                               "variant '%s' is profiled at share %g, not a multiple of "
                               "gpus.share_granularity %g",
                               var->name, var->shares[s], g);
                }
            }
}

void loki_config_defaults(struct loki_config *c)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->frontend.socket_path, sizeof(c->frontend.socket_path), "/run/loki/loki.sock");
    c->frontend.mode = 0660;
    c->frontend.max_payload = 1u << 20;
    c->frontend.max_inflight = 65536;
    c->frontend.max_result = 4u << 20;
    c->frontend.idle_timeout_s = 60;
    /* field by field: the memset's zero padding stays (the reload check memcmps it) */
    struct loki_http_cfg *h = &c->frontend.http;
    snprintf(h->address, sizeof(h->address), "127.0.0.1");
    h->port = 8000;
    h->max_connections = 256;
    h->connection_timeout_s = 30;
    h->request_timeout_s = 60;
    h->lokid_connections = 2;
    c->runtime.spin_us = 50;
    snprintf(c->runtime.metrics_address, sizeof(c->runtime.metrics_address), "127.0.0.1");
    c->runtime.metrics_port = -1;
}

int loki_config_parse(const char *text, size_t len, const char *name, struct loki_topology **out,
                      struct loki_config *cfg, char *err, size_t errlen)
{
    struct loki_config scratch;
    struct ctx c = {.file = name, .err = err, .errlen = errlen, .cfg = cfg ? cfg : &scratch};
    loki_config_defaults(c.cfg);
    if (err && errlen)
        err[0] = '\0';
    c.t = calloc(1, sizeof(*c.t));
    if (!c.t)
        return -ENOMEM;
    loki_topology_defaults(c.t);
    snprintf(c.t->source, sizeof(c.t->source), "%s", name);
    struct node *root = parse_tree(&c, text, len);
    if (c.n_errors == 0)
        load_root(&c, root);
    node_free(root);
    if (c.n_errors) {
        if (c.n_errors > MAX_ERRORS && err && c.used + 40 < errlen)
            snprintf(err + c.used, errlen - c.used, "\n... and %d more errors",
                     c.n_errors - MAX_ERRORS);
        free(c.t);
        return LOKI_ETOPOLOGY;
    }
    *out = c.t;
    return 0;
}

int loki_topology_parse(const char *text, size_t len, const char *name, struct loki_topology **out,
                        char *err, size_t errlen)
{
    return loki_config_parse(text, len, name, out, NULL, err, errlen);
}

int loki_topology_load(const char *path, struct loki_topology **out, char *err, size_t errlen)
{
    return loki_config_load(path, out, NULL, err, errlen);
}

int loki_config_load(const char *path, struct loki_topology **out, struct loki_config *cfg,
                     char *err, size_t errlen)
{
    char *buf;
    size_t len;
    int rc = loki_config_read(path, &buf, &len, NULL, err, errlen);
    if (rc)
        return rc;
    rc = loki_config_parse(buf, len, path, out, cfg, err, errlen);
    free(buf);
    return rc;
}
