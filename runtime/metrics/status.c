/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The reports, rendered from a struct loki_status_view: the status report
 * (JSON, built with jansson through loki/json.h; table) and the Prometheus
 * exposition. Every byte here is read by
 * something (loki status, tests/lokid, tests/python, tools/tour.sh,
 * bench/crosscheck, Prometheus): keep field names, orders and number
 * formats, and document a change in docs/operator.md and docs/protocol.md.
 */
#include "loki/status.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "loki/error.h"
#include "loki/json.h"
#include "loki/planner.h"
#include "loki/version.h"

void loki_report_init(struct loki_report *r)
{
    memset(r, 0, sizeof(*r));
}

void loki_report_fini(struct loki_report *r)
{
    free(r->text);
    memset(r, 0, sizeof(*r));
}

/* Start @r over, keeping its buffer. */
static void report_reset(struct loki_report *r)
{
    r->len = 0;
    r->oom = false;
    if (r->text)
        r->text[0] = 0;
}

static void sb_printf(struct loki_report *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void sb_printf(struct loki_report *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n =
            vsnprintf(b->text ? b->text + b->len : NULL, b->text ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (b->text && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 16384;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *np = realloc(b->text, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->text = np;
        b->cap = cap;
    }
}

/*
 * @s as a Prometheus label value: the text format's escapes (backslash, double quote, line
 * feed); other control characters are left out. Not JSON: JSON goes through jansson.
 */
static void prom_quoted(struct loki_report *b, const char *s)
{
    sb_printf(b, "\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            sb_printf(b, "\\%c", *s);
        else if (*s == '\n')
            sb_printf(b, "\\n");
        else if ((unsigned char)*s >= 0x20)
            sb_printf(b, "%c", *s);
    }
    sb_printf(b, "\"");
}

/* Worker crashes of variant (p, t, v), 0 when the view has no count. */
static uint64_t view_crashes(const struct loki_status_view *sv, int p, int t, int v)
{
    return sv->worker_crashes ? sv->worker_crashes(sv->worker_crashes_ctx, p, t, v) : 0;
}

/* Worker crashes of every variant of the topology. */
static uint64_t view_crashes_total(const struct loki_status_view *sv)
{
    uint64_t n = 0;
    for (int p = 0; p < sv->topo->n_pipelines; p++)
        for (int t = 0; t < sv->topo->pipelines[p].n_tasks; t++)
            for (int v = 0; v < sv->topo->pipelines[p].tasks[t].n_variants; v++)
                n += view_crashes(sv, p, t, v);
    return n;
}

/* The plan to show: an empty one (all zeros: mode hardware, no instances) before the first. */
static const struct loki_plan *view_plan(const struct loki_status_view *sv)
{
    static const struct loki_plan none;
    return sv->plan ? sv->plan : &none;
}

/* Parent task of @t in @pl, or -1 for the root. */
static int parent_task(const struct loki_pipeline *pl, int t)
{
    for (int u = 0; u < pl->n_tasks; u++)
        for (int c = 0; c < pl->tasks[u].n_children; c++)
            if (pl->tasks[u].children[c] == t)
                return u;
    return -1;
}

/* The fallback the instances of variant @v of task @t load (the first one found), or -1. */
static int variant_fallback(const struct loki_plan *plan, int p, int t, int v)
{
    for (int i = 0; i < plan->n_instances; i++) {
        const struct loki_plan_instance *pi = &plan->inst[i];
        if (pi->pipeline == p && pi->task == t && pi->variant == v && pi->fallback)
            return loki_plan_fallback(pi);
    }
    return -1;
}

/* Which of the first 256 GPUs host an instance of (p, t, v) in @plan, into @on. */
static void variant_gpu_set(const struct loki_plan *plan, int p, int t, int v, bool on[256])
{
    memset(on, 0, 256 * sizeof(bool));
    for (int i = 0; i < plan->n_instances; i++) {
        const struct loki_plan_instance *pi = &plan->inst[i];
        if (pi->pipeline == p && pi->task == t && pi->variant == v && pi->gpu >= 0 && pi->gpu < 256)
            on[pi->gpu] = true;
    }
}

/* GPU indexes hosting instances of (p, t, v) in @plan, as "0,1" into @out ("-": none). */
static void variant_gpus(const struct loki_plan *plan, int p, int t, int v, char *out, size_t cap)
{
    bool on[256];
    size_t k = 0;
    variant_gpu_set(plan, p, t, v, on);
    out[0] = 0;
    for (int g = 0; g < 256 && k + 8 < cap; g++)
        if (on[g])
            k += (size_t)snprintf(out + k, cap - k, "%s%d", k ? "," : "", g);
    if (!k)
        snprintf(out, cap, "-");
}

/* Append @n bytes to @b (a jansson dump callback: called once per token, so no printf). */
static int sb_append(const char *buf, size_t n, void *data)
{
    struct loki_report *b = data;
    if (b->oom)
        return -1;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16384;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = realloc(b->text, cap);
        if (!np) {
            b->oom = true;
            return -1;
        }
        b->text = np;
        b->cap = cap;
    }
    memcpy(b->text + b->len, buf, n);
    b->len += n;
    b->text[b->len] = 0;
    return 0;
}

#define SET(o, k, v) loki_json_set(o, k, v, &oom)
#define PUSH(a, v) loki_json_push(a, v, &oom)
#define FIX(x, d) loki_json_fixed(x, d)
#define U64(x) loki_json_u64((uint64_t)(x))

/* The status report as one JSON document (docs/protocol.md, "Reports"). */
static void status_json(const struct loki_status_view *sv, struct loki_report *b)
{
    const struct loki_plan *pl_ = view_plan(sv);
    bool oom = false;
    json_t *root = json_object();
    SET(root, "ready", json_boolean(sv->ready && !sv->draining));
    SET(root, "draining", json_boolean(sv->draining));
    SET(root, "uptime_s", FIX(sv->uptime_s, 3));
    SET(root, "policy", json_string(loki_policy_name(pl_->policy)));
    SET(root, "mode", json_string(loki_plan_mode_name(pl_->mode)));
    SET(root, "transitioning", json_boolean(sv->transitioning));
    SET(root, "plans_applied", U64(sv->planner.plans_applied));
    SET(root, "plans_kept", U64(sv->planner.plans_kept));
    SET(root, "plan_age_s", FIX(sv->uptime_s - sv->planner.last_change_s, 3));
    SET(root, "solves", U64(sv->planner.solves));
    SET(root, "solve_ms", FIX(sv->planner.last_solve_ms, 3));
    SET(root, "metrics_port", json_integer(sv->metrics_port));
    SET(root, "instances", json_integer(sv->instances));
    SET(root, "instances_planned", json_integer(pl_->n_instances));
    json_t *w = SET(root, "workers", json_object());
    SET(w, "alive", json_integer(sv->workers.alive));
    SET(w, "started", U64(sv->workers.started));
    SET(w, "start_failures", U64(sv->workers.start_failed));
    SET(w, "last_start_error",
        sv->workers.last_start_error ? loki_json_str(loki_strerror(sv->workers.last_start_error))
                                     : json_null());
    SET(w, "crashes", U64(view_crashes_total(sv)));
    json_t *g = SET(root, "gpus", json_object());
    SET(g, "count", json_integer(sv->topo->gpus.count));
    SET(g, "in_use", FIX(sv->gpus_in_use, 4));
    SET(g, "active", json_integer(pl_->gpus_active));
    json_t *pipes = SET(root, "pipelines", json_array());
    for (int p = 0; p < sv->topo->n_pipelines && !oom; p++) {
        const struct loki_pipeline *pl = &sv->topo->pipelines[p];
        struct loki_metrics_counts m;
        double win = loki_metrics_last_minute(sv->metrics, sv->router, sv->uptime_s, p, &m);
        json_t *po = PUSH(pipes, json_object());
        SET(po, "name", loki_json_str(pl->name));
        SET(po, "slo_ms", FIX(pl->slo_ms, 3));
        json_t *dm = SET(po, "demand", json_object());
        SET(dm, "estimate_qps", FIX(sv->demand_est[p], 3));
        SET(dm, "planned_qps", FIX(pl_->demand_qps[p], 3));
        SET(dm, "served_fraction", FIX(pl_->served_fraction[p], 4));
        json_t *ac = SET(po, "accuracy", json_object());
        SET(ac, "predicted", FIX(100 * pl_->accuracy[p], 3));
        SET(ac, "predicted_subquery", FIX(100 * pl_->accuracy_subquery[p], 3));
        SET(ac, "served", FIX(m.ok ? m.acc_sum / (double)m.ok : 0, 3));
        SET(ac, "served_subquery", FIX(m.ok ? m.acc_sub_sum / (double)m.ok : 0, 3));
        json_t *lm = SET(po, "last_minute", json_object());
        SET(lm, "window_s", FIX(win, 3));
        SET(lm, "arrived", U64(m.arrived));
        SET(lm, "ok", U64(m.ok));
        SET(lm, "dropped", U64(m.dropped));
        SET(lm, "late", U64(m.late));
        SET(lm, "error", U64(m.error));
        SET(lm, "overloaded", U64(m.overloaded));
        SET(lm, "violations", U64(m.dropped + m.late + m.error));
        SET(lm, "violation_ratio", FIX(loki_metrics_violation_ratio(&m), 6));
        SET(lm, "sub_queries", U64(m.sub));
        SET(lm, "sub_violations", U64(m.sub_viol));
        json_t *ds = SET(lm, "drops_by_stage", json_object());
        for (int t = 0; t < pl->n_tasks; t++)
            SET(ds, pl->tasks[t].name, U64(m.stage_drop[t]));
        json_t *vars = SET(po, "variants", json_array());
        const struct loki_router_stats *st = sv->router;
        for (int t = 0; t < pl->n_tasks; t++)
            for (int v = 0; v < pl->tasks[t].n_variants; v++) {
                const struct loki_plan_variant *pv = &pl_->var[p][t][v];
                if (!pv->instances)
                    continue;
                json_t *vo = PUSH(vars, json_object());
                SET(vo, "task", loki_json_str(pl->tasks[t].name));
                SET(vo, "variant", loki_json_str(pl->tasks[t].variants[v].name));
                SET(vo, "accuracy", FIX(pl->tasks[t].variants[v].accuracy, 3));
                SET(vo, "instances", json_integer(pv->instances));
                SET(vo, "batch", json_integer(pv->batch));
                SET(vo, "share", FIX(pv->share, 4));
                json_t *ga = SET(vo, "gpus", json_array());
                bool on[256];
                variant_gpu_set(pl_, p, t, v, on);
                for (int gi = 0; gi < 256; gi++)
                    if (on[gi])
                        PUSH(ga, json_integer(gi));
                SET(vo, "capacity_qps", FIX(pv->capacity_qps, 3));
                SET(vo, "load_qps", FIX(pv->load_qps, 3));
                SET(vo, "dropped_total", U64(st->var[p][t][v].dropped));
                SET(vo, "fallback_total", U64(st->var[p][t][v].fallback));
                int fv = variant_fallback(pl_, p, t, v);
                SET(vo, "fallback",
                    fv >= 0 ? loki_json_str(pl->tasks[t].variants[fv].name) : json_null());
            }
        json_t *splits = SET(po, "splits", json_array());
        for (int t = 0; t < pl->n_tasks; t++) {
            int par = parent_task(pl, t);
            int nu = par < 0 ? 1 : pl->tasks[par].n_variants;
            for (int u = 0; u < nu; u++) {
                if (par >= 0 && !pl_->var[p][par][u].instances)
                    continue;
                json_t *so = PUSH(splits, json_object());
                SET(so, "task", loki_json_str(pl->tasks[t].name));
                SET(so, "from", loki_json_str(par < 0 ? "" : pl->tasks[par].variants[u].name));
                json_t *to = SET(so, "to", json_object());
                for (int v = 0; v < pl->tasks[t].n_variants; v++) {
                    float x = pl_->split[p][t][u][v];
                    if (x > 0)
                        SET(to, pl->tasks[t].variants[v].name, FIX(x, 4));
                }
            }
        }
    }
    if (oom || json_dump_callback(root, sb_append, b, LOKI_JSON_FLAGS))
        b->oom = true;
    else
        sb_printf(b, "\n");
    json_decref(root);
}

#undef SET
#undef PUSH
#undef FIX
#undef U64

static void status_table(const struct loki_status_view *sv, struct loki_report *b)
{
    const struct loki_plan *pl_ = view_plan(sv);
    double gpus = sv->gpus_in_use;
    int n_inst = sv->instances;
    sb_printf(b,
              "lokid %s%s, up %.1f s; policy %s, mode %s%s; plans applied %llu (last %.1f s ago), "
              "kept %llu; last solve %.1f ms\n",
              sv->ready ? "ready" : "not ready", sv->draining ? ", draining" : "", sv->uptime_s,
              loki_policy_name(pl_->policy), loki_plan_mode_name(pl_->mode),
              sv->transitioning ? " (reconfiguring)" : "",
              (unsigned long long)sv->planner.plans_applied,
              sv->uptime_s - sv->planner.last_change_s, (unsigned long long)sv->planner.plans_kept,
              sv->planner.last_solve_ms);
    sb_printf(b, "GPUs: %.2f in use on %d of %d; %d instances, %d planned; %d workers running",
              gpus, pl_->gpus_active, sv->topo->gpus.count, n_inst, pl_->n_instances,
              sv->workers.alive);
    if (sv->workers.start_failed)
        sb_printf(b, "; %llu worker starts failed (last: %s)",
                  (unsigned long long)sv->workers.start_failed,
                  loki_strerror(sv->workers.last_start_error));
    if (view_crashes_total(sv))
        sb_printf(b, "; %llu worker crashes", (unsigned long long)view_crashes_total(sv));
    sb_printf(b, "\n");
    for (int p = 0; p < sv->topo->n_pipelines; p++) {
        const struct loki_pipeline *pl = &sv->topo->pipelines[p];
        struct loki_metrics_counts m;
        double win = loki_metrics_last_minute(sv->metrics, sv->router, sv->uptime_s, p, &m);
        sb_printf(b, "\npipeline %s (SLO %.0f ms)\n", pl->name, pl->slo_ms);
        sb_printf(b,
                  "  demand    %.1f qps estimated, plan carries %.1f qps, served fraction %.3f\n",
                  sv->demand_est[p], pl_->demand_qps[p], pl_->served_fraction[p]);
        sb_printf(b, "  accuracy  predicted %.2f (per sub-query %.2f), served %.2f (last %.0f s)\n",
                  100 * pl_->accuracy[p], 100 * pl_->accuracy_subquery[p],
                  m.ok ? m.acc_sum / (double)m.ok : 0, win);
        sb_printf(b,
                  "  last %.0f s: %llu arrived, %llu ok, %llu dropped, %llu late, %llu error, "
                  "%llu overloaded; violations %.2f %% (sub-queries %.2f %%)\n",
                  win, (unsigned long long)m.arrived, (unsigned long long)m.ok,
                  (unsigned long long)m.dropped, (unsigned long long)m.late,
                  (unsigned long long)m.error, (unsigned long long)m.overloaded,
                  100 * loki_metrics_violation_ratio(&m),
                  m.sub ? 100.0 * (double)m.sub_viol / (double)m.sub : 0);
        sb_printf(b, "  drops by stage:");
        for (int t = 0; t < pl->n_tasks; t++)
            sb_printf(b, " %s %llu", pl->tasks[t].name, (unsigned long long)m.stage_drop[t]);
        sb_printf(b, "\n  %-16s %-20s %5s %5s %6s %-10s %10s %10s  %s\n", "TASK", "VARIANT", "INST",
                  "BATCH", "SHARE", "GPUS", "CAP/s", "LOAD/s", "FALLBACK");
        for (int t = 0; t < pl->n_tasks; t++)
            for (int v = 0; v < pl->tasks[t].n_variants; v++) {
                const struct loki_plan_variant *pv = &pl_->var[p][t][v];
                if (!pv->instances)
                    continue;
                char g[512];
                variant_gpus(pl_, p, t, v, g, sizeof(g));
                int fv = variant_fallback(pl_, p, t, v);
                sb_printf(b, "  %-16s %-20s %5d %5d %6.2f %-10s %10.1f %10.1f  %s\n",
                          pl->tasks[t].name, pl->tasks[t].variants[v].name, pv->instances,
                          pv->batch, pv->share, g, pv->capacity_qps, pv->load_qps,
                          fv >= 0 ? pl->tasks[t].variants[fv].name : "-");
            }
        sb_printf(b, "  splits:\n");
        for (int t = 0; t < pl->n_tasks; t++) {
            int par = parent_task(pl, t);
            int nu = par < 0 ? 1 : pl->tasks[par].n_variants;
            for (int u = 0; u < nu; u++) {
                if (par >= 0 && !pl_->var[p][par][u].instances)
                    continue;
                sb_printf(b, "    %s <- %s:", pl->tasks[t].name,
                          par < 0 ? "(arrivals)" : pl->tasks[par].variants[u].name);
                for (int v = 0; v < pl->tasks[t].n_variants; v++)
                    if (pl_->split[p][t][u][v] > 0)
                        sb_printf(b, " %s %.2f", pl->tasks[t].variants[v].name,
                                  pl_->split[p][t][u][v]);
                sb_printf(b, "\n");
            }
        }
    }
}

/* One metric family header. */
static void prom_head(struct loki_report *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Labels {pipeline="..",task="..",variant=".."}; @t/@v < 0 leave those out. */
static void prom_labels(struct loki_report *b, const struct loki_status_view *sv, int p, int t,
                        int v, const char *extra)
{
    const struct loki_pipeline *pl = &sv->topo->pipelines[p];
    sb_printf(b, "{pipeline=");
    prom_quoted(b, pl->name);
    if (t >= 0) {
        sb_printf(b, ",task=");
        prom_quoted(b, pl->tasks[t].name);
    }
    if (v >= 0) {
        sb_printf(b, ",variant=");
        prom_quoted(b, pl->tasks[t].variants[v].name);
    }
    sb_printf(b, "%s%s}", extra ? "," : "", extra ? extra : "");
}

static void prom_hist(struct loki_report *b, const struct loki_status_view *sv, const char *name,
                      int p, int t, int v, const struct loki__hist *h, const double *bounds, int nb)
{
    uint64_t cum = 0;
    char le[48];
    for (int i = 0; i <= nb; i++) {
        cum += h->b[i];
        if (i < nb)
            snprintf(le, sizeof(le), "le=\"%g\"", bounds[i]);
        else
            snprintf(le, sizeof(le), "le=\"+Inf\"");
        sb_printf(b, "%s_bucket", name);
        prom_labels(b, sv, p, t, v, le);
        sb_printf(b, " %llu\n", (unsigned long long)cum);
    }
    sb_printf(b, "%s_sum", name);
    prom_labels(b, sv, p, t, v, NULL);
    sb_printf(b, " %.9g\n%s_count", h->sum, name);
    prom_labels(b, sv, p, t, v, NULL);
    sb_printf(b, " %llu\n", (unsigned long long)h->count);
}

/* The process metrics every Prometheus client library exports, under their usual names. */
static void prom_process(struct loki_report *b, const struct loki_process_stats *ps)
{
    if (!ps)
        return;
    const struct {
        const char *name, *type, *help;
        double v;
    } g[] = {
        {"process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
         ps->cpu_seconds},
        {"process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
         (double)ps->resident_bytes},
        {"process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
         (double)ps->virtual_bytes},
        {"process_open_fds", "gauge", "Number of open file descriptors.", (double)ps->open_fds},
        {"process_max_fds", "gauge", "Maximum number of open file descriptors.",
         (double)ps->max_fds},
        {"process_start_time_seconds", "gauge",
         "Start time of the process since unix epoch in seconds.", ps->start_time_seconds},
    };
    for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
        prom_head(b, g[i].name, g[i].type, g[i].help);
        sb_printf(b, "%s %.17g\n", g[i].name, g[i].v);
    }
}

/* NVML's figures per device ({gpu="NVML index",uuid="GPU-..."}); none without NVML. */
static void prom_gpus(struct loki_report *b, const struct loki_gpu_stats *gs, int n)
{
    static const char *const name[][2] = {
        {"loki_gpu_utilization_ratio",
         "Fraction of NVML's last sample period in which a kernel ran on the GPU, 0..1."},
        {"loki_gpu_memory_used_bytes", "GPU memory in use (all processes), bytes."},
        {"loki_gpu_memory_total_bytes", "GPU memory, bytes."},
    };
    if (!gs || n <= 0)
        return;
    for (int k = 0; k < 3; k++) {
        prom_head(b, name[k][0], "gauge", name[k][1]);
        for (int i = 0; i < n; i++) {
            if (!gs[i].ok)
                continue;
            sb_printf(b, "%s{gpu=\"%d\",uuid=", name[k][0], gs[i].index);
            prom_quoted(b, gs[i].uuid);
            if (k == 0)
                sb_printf(b, "} %.9g\n", gs[i].utilization);
            else
                sb_printf(
                    b, "} %llu\n",
                    (unsigned long long)(k == 1 ? gs[i].mem_used_bytes : gs[i].mem_total_bytes));
        }
    }
}

static void prometheus(const struct loki_status_view *sv, struct loki_report *b)
{
    const struct loki_router_stats *st = sv->router;
    const struct loki_plan *pl_ = view_plan(sv);
    const int np = sv->topo->n_pipelines;
    static const struct {
        const char *name, *help;
        size_t off;
    } pc[] = {
#define PC(n, f, h) {"loki_" n, h, offsetof(struct loki_router_pipeline_stats, f)}
        PC("request_total", arrived, "Root queries that arrived."),
        PC("request_success_total", ok, "Root queries served within the deadline."),
        PC("request_failure_total", error, "Root queries failed by a worker."),
        PC("request_drop_total", dropped, "Root queries dropped early (deadline unreachable)."),
        PC("request_late_total", late, "Root queries served after the deadline."),
        PC("request_overloaded_total", overloaded,
           "Root queries refused by admission control (no worker time spent)."),
        PC("request_rerouted_total", rerouted, "Sub-queries rerouted to a faster variant."),
        PC("request_fallback_total", fallback,
           "Sub-queries run on an instance's fallback variant (burst overflow)."),
        PC("subquery_total", sub_created, "Sub-queries created (root included)."),
        PC("subquery_violation_total", sub_violations,
           "Sub-queries dropped or finished after the deadline."),
#undef PC
    };
    for (size_t i = 0; i < sizeof(pc) / sizeof(pc[0]); i++) {
        prom_head(b, pc[i].name, "counter", pc[i].help);
        for (int p = 0; p < np; p++) {
            sb_printf(b, "%s", pc[i].name);
            prom_labels(b, sv, p, -1, -1, NULL);
            sb_printf(
                b, " %llu\n",
                (unsigned long long)*(const uint64_t *)((const char *)&st->pipe[p] + pc[i].off));
        }
    }
    static const struct {
        const char *name, *help;
        size_t off;
    } vc[] = {
#define VC(n, f, h) {"loki_variant_" n, h, offsetof(struct loki_router_variant_stats, f)}
        VC("request_total", arrived, "Sub-queries routed to this variant."),
        VC("success_total", served, "Sub-queries this variant ran in a completed batch."),
        VC("drop_total", dropped, "Sub-queries dropped early at this variant."),
        VC("late_total", late, "Sub-queries completed here after the deadline."),
        VC("rerouted_total", rerouted, "Sub-queries moved here to escape a drop."),
        VC("fallback_total", fallback, "Sub-queries run here as another variant's fallback."),
        VC("batches_total", batches, "Batches completed by this variant."),
#undef VC
    };
    for (size_t i = 0; i < sizeof(vc) / sizeof(vc[0]); i++) {
        prom_head(b, vc[i].name, "counter", vc[i].help);
        for (int p = 0; p < np; p++)
            for (int t = 0; t < sv->topo->pipelines[p].n_tasks; t++)
                for (int v = 0; v < sv->topo->pipelines[p].tasks[t].n_variants; v++) {
                    sb_printf(b, "%s", vc[i].name);
                    prom_labels(b, sv, p, t, v, NULL);
                    sb_printf(b, " %llu\n",
                              (unsigned long long)*(
                                  const uint64_t *)((const char *)&st->var[p][t][v] + vc[i].off));
                }
    }
    prom_head(b, "loki_variant_failure_total", "counter",
              "Sub-queries a worker of this variant reported failed.");
    for (int p = 0; p < np; p++)
        for (int t = 0; t < sv->topo->pipelines[p].n_tasks; t++)
            for (int v = 0; v < sv->topo->pipelines[p].tasks[t].n_variants; v++) {
                sb_printf(b, "loki_variant_failure_total");
                prom_labels(b, sv, p, t, v, NULL);
                sb_printf(b, " %llu\n", (unsigned long long)sv->metrics->var[p][t][v].failed);
            }
    prom_head(b, "loki_stage_drop_total", "counter", "Sub-queries dropped early at this task.");
    for (int p = 0; p < np; p++) {
        struct loki_metrics_counts cur;
        loki__counts_now(sv->metrics, sv->router, p, &cur);
        for (int t = 0; t < sv->topo->pipelines[p].n_tasks; t++) {
            sb_printf(b, "loki_stage_drop_total");
            prom_labels(b, sv, p, t, -1, NULL);
            sb_printf(b, " %llu\n", (unsigned long long)cur.stage_drop[t]);
        }
    }
    prom_head(b, "loki_queue_duration_seconds", "histogram",
              "Root query arrival to the dispatch of its first batch.");
    for (int p = 0; p < np; p++)
        prom_hist(b, sv, "loki_queue_duration_seconds", p, -1, -1, &sv->metrics->queue[p],
                  loki__time_bounds, LOKI__HIST_T);
    prom_head(b, "loki_request_duration_seconds", "histogram",
              "Root query arrival to reply, served queries (ok or late).");
    for (int p = 0; p < np; p++)
        prom_hist(b, sv, "loki_request_duration_seconds", p, -1, -1, &sv->metrics->e2e[p],
                  loki__time_bounds, LOKI__HIST_T);
    prom_head(b, "loki_compute_duration_seconds", "histogram",
              "Batch dispatch to result (staging behind the running batch included).");
    for (int p = 0; p < np; p++)
        for (int t = 0; t < sv->topo->pipelines[p].n_tasks; t++)
            for (int v = 0; v < sv->topo->pipelines[p].tasks[t].n_variants; v++)
                prom_hist(b, sv, "loki_compute_duration_seconds", p, t, v,
                          &sv->metrics->var[p][t][v].compute, loki__time_bounds, LOKI__HIST_T);
    prom_head(b, "loki_batch_size", "histogram", "Sizes of dispatched batches.");
    for (int p = 0; p < np; p++)
        for (int t = 0; t < sv->topo->pipelines[p].n_tasks; t++)
            for (int v = 0; v < sv->topo->pipelines[p].tasks[t].n_variants; v++)
                prom_hist(b, sv, "loki_batch_size", p, t, v, &sv->metrics->var[p][t][v].batch,
                          loki__batch_bounds, LOKI__HIST_B);
    static const char *const vg[][2] = {
        {"loki_variant_instances", "Instances of this variant in the current plan."},
        {"loki_variant_share_ratio", "GPU share of each instance of this variant, 0..1."},
        {"loki_variant_batch_max", "Planned (maximum) batch size of this variant."},
        {"loki_variant_capacity_queries_per_second", "Planned capacity of this variant."},
        {"loki_variant_load_queries_per_second", "Predicted load on this variant under the plan."},
    };
    for (int i = 0; i < 5; i++) {
        prom_head(b, vg[i][0], "gauge", vg[i][1]);
        for (int p = 0; p < np; p++)
            for (int t = 0; t < sv->topo->pipelines[p].n_tasks; t++)
                for (int v = 0; v < sv->topo->pipelines[p].tasks[t].n_variants; v++) {
                    const struct loki_plan_variant *pv = &pl_->var[p][t][v];
                    double x = i == 0   ? pv->instances
                               : i == 1 ? (pv->instances ? pv->share : 0)
                               : i == 2 ? (pv->instances ? pv->batch : 0)
                               : i == 3 ? pv->capacity_qps
                                        : pv->load_qps;
                    sb_printf(b, "%s", vg[i][0]);
                    prom_labels(b, sv, p, t, v, NULL);
                    sb_printf(b, " %.9g\n", x);
                }
    }
    prom_head(b, "loki_worker_crashes_total", "counter",
              "Worker processes of this variant that exited unasked (crash, kill, OOM kill); "
              "each is restarted with backoff.");
    for (int p = 0; p < np; p++)
        for (int t = 0; t < sv->topo->pipelines[p].n_tasks; t++)
            for (int v = 0; v < sv->topo->pipelines[p].tasks[t].n_variants; v++) {
                sb_printf(b, "loki_worker_crashes_total");
                prom_labels(b, sv, p, t, v, NULL);
                sb_printf(b, " %llu\n", (unsigned long long)view_crashes(sv, p, t, v));
            }
    /* per pipeline; served accuracy only where the last minute served a query: no sample,
     * not 0, when idle */
    static const char *const pg[][2] = {
        {"loki_demand_estimate_queries_per_second", "EWMA estimate of root demand."},
        {"loki_demand_planned_queries_per_second", "Root demand the current plan was solved for."},
        {"loki_plan_served_ratio", "Fraction of demand the plan serves (admission control), 0..1."},
        {"loki_accuracy_predicted_ratio", "Predicted pipeline accuracy of the plan, 0..1."},
        {"loki_accuracy_served_ratio",
         "Mean accuracy of the queries served in the last minute, 0..1; absent when none were."},
        {"loki_violation_ratio", "Dropped, late or failed among answered, last minute, 0..1."},
    };
    for (int i = 0; i < 6; i++) {
        prom_head(b, pg[i][0], "gauge", pg[i][1]);
        for (int p = 0; p < np; p++) {
            struct loki_metrics_counts m;
            loki_metrics_last_minute(sv->metrics, sv->router, sv->uptime_s, p, &m);
            if (i == 4 && !m.ok)
                continue;
            double x = i == 0   ? sv->demand_est[p]
                       : i == 1 ? pl_->demand_qps[p]
                       : i == 2 ? pl_->served_fraction[p]
                       : i == 3 ? pl_->accuracy[p]
                       : i == 4 ? m.acc_sum / (double)m.ok / 100
                                : loki_metrics_violation_ratio(&m);
            sb_printf(b, "%s", pg[i][0]);
            prom_labels(b, sv, p, -1, -1, NULL);
            sb_printf(b, " %.9g\n", x);
        }
    }
    double gpus = sv->gpus_in_use;
    int n_inst = sv->instances;
    const struct {
        const char *name, *type, *help;
        double v;
    } g[] = {
        {"loki_instances", "gauge", "Worker instances live in the router.", n_inst},
        {"loki_instances_planned", "gauge", "Instances of the plan routing now.", pl_->n_instances},
        {"loki_workers", "gauge", "Worker processes running.", sv->workers.alive},
        {"loki_worker_starts_total", "counter", "Worker processes spawned.",
         (double)sv->workers.started},
        {"loki_worker_start_failures_total", "counter",
         "Worker starts that spawned nothing (out of descriptors...); retried with backoff.",
         (double)sv->workers.start_failed},
        {"loki_gpus_in_use", "gauge",
         "Distinct GPUs holding live instances (starting, serving or retiring).", gpus},
        {"loki_gpus_active", "gauge", "GPUs hosting an instance of the plan.", pl_->gpus_active},
        {"loki_gpus", "gauge", "GPUs in the topology.", sv->topo->gpus.count},
        {"loki_planner_last_solve_seconds", "gauge", "Duration of the last solve.",
         sv->planner.last_solve_ms / 1e3},
        {"loki_planner_solves_total", "counter", "Solves completed.", (double)sv->planner.solves},
        {"loki_planner_errors_total", "counter", "Solves that failed.",
         (double)sv->planner.solve_errors},
        {"loki_plans_applied_total", "counter", "Plans applied (initial included).",
         (double)sv->planner.plans_applied},
        {"loki_plans_kept_total", "counter", "Solves whose plan hysteresis or dwell kept.",
         (double)sv->planner.plans_kept},
        {"loki_reconfiguring", "gauge", "1 while a plan change waits for new instances.",
         sv->transitioning},
        {"loki_roots_inflight", "gauge", "Root queries in the router.", st->roots_inflight},
        {"loki_ready", "gauge", "1 when serving and not draining.", sv->ready && !sv->draining},
        {"loki_frontend_connections", "gauge", "Open client connections.",
         (double)sv->frontend.connections},
        {"loki_frontend_inflight", "gauge", "Requests delivered, not answered.",
         (double)sv->frontend.inflight},
        {"loki_frontend_requests_total", "counter", "Infer requests accepted.",
         (double)sv->frontend.requests},
        {"loki_frontend_bad_requests_total", "counter", "Requests refused as malformed.",
         (double)sv->frontend.bad_requests},
        {"loki_frontend_overloaded_total", "counter", "Requests refused by frontend limits.",
         (double)sv->frontend.overloaded},
        {"loki_frontend_draining_total", "counter", "Requests refused while draining.",
         (double)sv->frontend.draining},
        {"loki_frontend_frame_errors_total", "counter",
         "Connections closed for a frame over the size limit.", (double)sv->frontend.frame_errors},
        {"loki_frontend_frame_timeouts_total", "counter",
         "Connections closed for a frame not completed in time.",
         (double)sv->frontend.frame_timeouts},
        {"loki_frontend_slow_reader_drops_total", "counter",
         "Connections dropped for not reading their replies.", (double)sv->frontend.slow_drops},
        {"loki_frontend_idle_timeouts_total", "counter", "Idle connections closed.",
         (double)sv->frontend.idle_timeouts},
        {"loki_frontend_read_buffer_bytes", "gauge",
         "Memory partial frames hold (bounded by frontend.max_read_buffer_bytes).",
         (double)sv->frontend.read_buffer_bytes},
        {"loki_frontend_read_pauses_total", "counter",
         "Connections paused reading: partial frames at frontend.max_read_buffer_bytes.",
         (double)sv->frontend.read_pauses},
        {"loki_payload_arena_bytes", "gauge", "Size of the shared payload arena.", sv->arena_bytes},
        {"loki_payload_arena_used_bytes", "gauge",
         "Payload arena held by queries in flight (payloads, child payloads, outputs).",
         sv->arena_used_bytes},
    };
    for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
        prom_head(b, g[i].name, g[i].type, g[i].help);
        sb_printf(b, "%s %.9g\n", g[i].name, g[i].v);
    }
    prom_head(b, "loki_planner_solve_seconds", "summary",
              "Time the completed solves took (the planner's own measure).");
    sb_printf(b, "loki_planner_solve_seconds_sum %.9g\nloki_planner_solve_seconds_count %llu\n",
              sv->planner.solve_ms_sum / 1e3, (unsigned long long)sv->planner.solves);
    prom_head(b, "loki_planner_mode", "gauge", "1 for the mode of the current plan.");
    for (int m = LOKI_MODE_HARDWARE; m <= LOKI_MODE_STATIC; m++)
        sb_printf(b, "loki_planner_mode{mode=\"%s\"} %d\n",
                  loki_plan_mode_name((enum loki_plan_mode)m), (int)pl_->mode == m);
    prom_head(b, "loki_build_info", "gauge", "1, labelled with the version of the running lokid.");
    sb_printf(b, "loki_build_info{version=");
    prom_quoted(b, LOKI_VERSION);
    sb_printf(b, ",git=");
    prom_quoted(b, LOKI_GIT_DESCRIBE);
    sb_printf(b, "} 1\n");
    if (sv->http.enabled) {
        const struct loki_status_http *h = &sv->http;
        prom_head(b, "loki_http_requests_total", "counter",
                  "HTTP front door: requests answered, by status class.");
        sb_printf(b,
                  "loki_http_requests_total{code=\"2xx\"} %llu\n"
                  "loki_http_requests_total{code=\"4xx\"} %llu\n"
                  "loki_http_requests_total{code=\"5xx\"} %llu\n",
                  (unsigned long long)h->status_2xx, (unsigned long long)h->status_4xx,
                  (unsigned long long)h->status_5xx);
        prom_head(b, "loki_http_infer_requests_total", "counter",
                  "HTTP front door: infer requests handed to lokid.");
        sb_printf(b, "loki_http_infer_requests_total %llu\n", (unsigned long long)h->infers);
        prom_head(b, "loki_http_waiting", "gauge",
                  "HTTP front door: infer requests waiting for lokid's answer.");
        sb_printf(b, "loki_http_waiting %llu\n", (unsigned long long)h->waiting);
        prom_head(b, "loki_http_lokid_connects_total", "counter",
                  "HTTP front door: connections made to lokid's socket (reconnects included).");
        sb_printf(b, "loki_http_lokid_connects_total %llu\n",
                  (unsigned long long)h->lokid_connects);
    }
    prom_process(b, sv->process);
    prom_gpus(b, sv->gpus, sv->n_gpus);
}

int loki_status_json(const struct loki_status_view *v, struct loki_report *out)
{
    report_reset(out);
    status_json(v, out);
    return out->oom ? -ENOMEM : 0;
}

int loki_status_table(const struct loki_status_view *v, struct loki_report *out)
{
    report_reset(out);
    status_table(v, out);
    return out->oom ? -ENOMEM : 0;
}

int loki_status_prometheus(const struct loki_status_view *v, struct loki_report *out)
{
    report_reset(out);
    prometheus(v, out);
    return out->oom ? -ENOMEM : 0;
}

int loki_status_render(const struct loki_status_view *v, enum loki_msg_type type,
                       struct loki_bytes format, struct loki_report *out, char *err, size_t errlen)
{
    int rc;
    if (type == LOKI_MSG_STATUS && loki_bytes_eq(format, "json"))
        rc = loki_status_json(v, out);
    else if (type == LOKI_MSG_STATUS && loki_bytes_eq(format, "table"))
        rc = loki_status_table(v, out);
    else if (type == LOKI_MSG_METRICS && loki_bytes_eq(format, "prometheus"))
        rc = loki_status_prometheus(v, out);
    else
        rc = -EINVAL;
    if (rc == -ENOMEM)
        snprintf(err, errlen, "out of memory rendering the report");
    else if (rc)
        snprintf(err, errlen, "field 'format': %s reports are %s", loki_msg_type_name(type),
                 type == LOKI_MSG_STATUS ? "\"table\" or \"json\"" : "\"prometheus\"");
    return rc;
}

int loki_status_summary(const struct loki_status_view *v, struct loki_metric *out, int max)
{
    const struct loki_router_pipeline_stats *p = &v->router->pipe[0];
    const struct loki_plan *plan = v->plan;
    const struct {
        const char *name;
        double v;
    } m[] = {
        {"loki_queries_arrived_total", (double)p->arrived},
        {"loki_queries_ok_total", (double)p->ok},
        {"loki_queries_dropped_total", (double)p->dropped},
        {"loki_queries_late_total", (double)p->late},
        {"loki_queries_error_total", (double)p->error},
        {"loki_queries_overloaded_total", (double)p->overloaded},
        {"loki_subqueries_total", (double)p->sub_created},
        {"loki_subquery_violations_total", (double)p->sub_violations},
        {"loki_rerouted_total", (double)p->rerouted},
        {"loki_fallback_total", (double)p->fallback},
        {"loki_instances", (double)v->instances},
        {"loki_gpus_in_use", v->gpus_in_use},
        {"loki_demand_queries_per_second", v->demand_est[0]},
        {"loki_plan_accuracy_ratio", plan ? plan->accuracy[0] : 0},
        {"loki_plan_mode", plan ? (double)plan->mode : -1},
        {"loki_plan_solve_seconds", plan ? plan->solve_ms / 1e3 : 0},
        {"loki_plans_applied_total", (double)v->planner.plans_applied},
        {"loki_roots_inflight", (double)v->router->roots_inflight},
    };
    int n = 0;
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]) && n < max; i++, n++) {
        out[n].name = loki_bytes_str(m[i].name);
        out[n].value = m[i].v;
    }
    return n;
}
