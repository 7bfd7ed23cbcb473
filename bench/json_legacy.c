/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The JSON status report as lokid printed it before it went through jansson:
 * printf and a hand-written escaper, frozen here (from runtime/metrics/status.c)
 * as the baseline bench_json measures the library against, and the reference
 * tests/metrics/test_status.c compares the library's output with (parsed).
 */
#include "json_legacy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loki/error.h"
#include "loki/planner.h"

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

/* @s as a JSON string or a Prometheus label value (same escapes for our names). */
static void sb_quoted(struct loki_report *b, const char *s)
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

/* GPU indexes hosting instances of (p, t, v) in @plan, as "0,1" into @out. */
static void variant_gpus(const struct loki_plan *plan, int p, int t, int v, char *out, size_t cap,
                         bool json)
{
    bool on[256] = {0};
    size_t k = 0;
    out[0] = 0;
    for (int i = 0; i < plan->n_instances; i++) {
        const struct loki_plan_instance *pi = &plan->inst[i];
        if (pi->pipeline == p && pi->task == t && pi->variant == v && pi->gpu >= 0 && pi->gpu < 256)
            on[pi->gpu] = true;
    }
    for (int g = 0; g < 256 && k + 8 < cap; g++)
        if (on[g])
            k += (size_t)snprintf(out + k, cap - k, "%s%d", k ? "," : "", g);
    if (!k && !json)
        snprintf(out, cap, "-");
}

static void status_json_legacy(const struct loki_status_view *sv, struct loki_report *b)
{
    const struct loki_plan *pl_ = view_plan(sv);
    double gpus = sv->gpus_in_use;
    int n_inst = sv->instances;
    sb_printf(b,
              "{\"ready\":%s,\"draining\":%s,\"uptime_s\":%.3f,\"policy\":\"%s\",\"mode\":\"%s\","
              "\"transitioning\":%s,\"plans_applied\":%llu,\"plans_kept\":%llu,"
              "\"plan_age_s\":%.3f,\"solves\":%llu,\"solve_ms\":%.3f,\"metrics_port\":%d,"
              "\"instances\":%d,\"instances_planned\":%d,\"workers\":{\"alive\":%d,"
              "\"started\":%llu,\"start_failures\":%llu,\"last_start_error\":",
              sv->ready && !sv->draining ? "true" : "false", sv->draining ? "true" : "false",
              sv->uptime_s, loki_policy_name(pl_->policy), loki_plan_mode_name(pl_->mode),
              sv->transitioning ? "true" : "false", (unsigned long long)sv->planner.plans_applied,
              (unsigned long long)sv->planner.plans_kept, sv->uptime_s - sv->planner.last_change_s,
              (unsigned long long)sv->planner.solves, sv->planner.last_solve_ms, sv->metrics_port,
              n_inst, pl_->n_instances, sv->workers.alive, (unsigned long long)sv->workers.started,
              (unsigned long long)sv->workers.start_failed);
    if (sv->workers.last_start_error)
        sb_quoted(b, loki_strerror(sv->workers.last_start_error));
    else
        sb_printf(b, "null");
    sb_printf(b, "},\"gpus\":{\"count\":%d,\"in_use\":%.4f,\"active\":%d},\"pipelines\":[",
              sv->topo->gpus.count, gpus, pl_->gpus_active);
    for (int p = 0; p < sv->topo->n_pipelines; p++) {
        const struct loki_pipeline *pl = &sv->topo->pipelines[p];
        struct loki_metrics_counts m;
        double win = loki_metrics_last_minute(sv->metrics, sv->router, sv->uptime_s, p, &m);
        sb_printf(b, "%s{\"name\":", p ? "," : "");
        sb_quoted(b, pl->name);
        sb_printf(
            b,
            ",\"slo_ms\":%.3f,\"demand\":{\"estimate_qps\":%.3f,\"planned_qps\":%.3f,"
            "\"served_fraction\":%.4f},\"accuracy\":{\"predicted\":%.3f,"
            "\"predicted_subquery\":%.3f,\"served\":%.3f,\"served_subquery\":%.3f},"
            "\"last_minute\":{\"window_s\":%.3f,\"arrived\":%llu,\"ok\":%llu,\"dropped\":%llu,"
            "\"late\":%llu,\"error\":%llu,\"overloaded\":%llu,\"violations\":%llu,"
            "\"violation_ratio\":%.6f,\"sub_queries\":%llu,\"sub_violations\":%llu,"
            "\"drops_by_stage\":{",
            pl->slo_ms, sv->demand_est[p], pl_->demand_qps[p], pl_->served_fraction[p],
            100 * pl_->accuracy[p], 100 * pl_->accuracy_subquery[p],
            m.ok ? m.acc_sum / (double)m.ok : 0, m.ok ? m.acc_sub_sum / (double)m.ok : 0, win,
            (unsigned long long)m.arrived, (unsigned long long)m.ok, (unsigned long long)m.dropped,
            (unsigned long long)m.late, (unsigned long long)m.error,
            (unsigned long long)m.overloaded, (unsigned long long)(m.dropped + m.late + m.error),
            loki_metrics_violation_ratio(&m), (unsigned long long)m.sub,
            (unsigned long long)m.sub_viol);
        for (int t = 0; t < pl->n_tasks; t++) {
            sb_printf(b, "%s", t ? "," : "");
            sb_quoted(b, pl->tasks[t].name);
            sb_printf(b, ":%llu", (unsigned long long)m.stage_drop[t]);
        }
        sb_printf(b, "}},\"variants\":[");
        bool first = true;
        const struct loki_router_stats *st = sv->router;
        for (int t = 0; t < pl->n_tasks; t++)
            for (int v = 0; v < pl->tasks[t].n_variants; v++) {
                const struct loki_plan_variant *pv = &pl_->var[p][t][v];
                if (!pv->instances)
                    continue;
                char g[512];
                variant_gpus(pl_, p, t, v, g, sizeof(g), true);
                sb_printf(b, "%s{\"task\":", first ? "" : ",");
                sb_quoted(b, pl->tasks[t].name);
                sb_printf(b, ",\"variant\":");
                sb_quoted(b, pl->tasks[t].variants[v].name);
                sb_printf(b,
                          ",\"accuracy\":%.3f,\"instances\":%d,\"batch\":%d,\"share\":%.4f,"
                          "\"gpus\":[%s],\"capacity_qps\":%.3f,\"load_qps\":%.3f,"
                          "\"dropped_total\":%llu,\"fallback_total\":%llu,\"fallback\":",
                          pl->tasks[t].variants[v].accuracy, pv->instances, pv->batch, pv->share, g,
                          pv->capacity_qps, pv->load_qps,
                          (unsigned long long)st->var[p][t][v].dropped,
                          (unsigned long long)st->var[p][t][v].fallback);
                int fv = variant_fallback(pl_, p, t, v);
                if (fv >= 0)
                    sb_quoted(b, pl->tasks[t].variants[fv].name);
                else
                    sb_printf(b, "null");
                sb_printf(b, "}");
                first = false;
            }
        sb_printf(b, "],\"splits\":[");
        first = true;
        for (int t = 0; t < pl->n_tasks; t++) {
            int par = parent_task(pl, t);
            int nu = par < 0 ? 1 : pl->tasks[par].n_variants;
            for (int u = 0; u < nu; u++) {
                if (par >= 0 && !pl_->var[p][par][u].instances)
                    continue;
                sb_printf(b, "%s{\"task\":", first ? "" : ",");
                sb_quoted(b, pl->tasks[t].name);
                sb_printf(b, ",\"from\":");
                sb_quoted(b, par < 0 ? "" : pl->tasks[par].variants[u].name);
                sb_printf(b, ",\"to\":{");
                bool f2 = true;
                for (int v = 0; v < pl->tasks[t].n_variants; v++) {
                    float x = pl_->split[p][t][u][v];
                    if (x <= 0)
                        continue;
                    sb_printf(b, "%s", f2 ? "" : ",");
                    sb_quoted(b, pl->tasks[t].variants[v].name);
                    sb_printf(b, ":%.4f", x);
                    f2 = false;
                }
                sb_printf(b, "}}");
                first = false;
            }
        }
        sb_printf(b, "]}");
    }
    sb_printf(b, "]}\n");
}

int loki_bench_status_json_legacy(const struct loki_status_view *v, struct loki_report *out)
{
    out->len = 0;
    out->oom = false;
    if (out->text)
        out->text[0] = 0;
    status_json_legacy(v, out);
    return out->oom ? -ENOMEM : 0;
}
