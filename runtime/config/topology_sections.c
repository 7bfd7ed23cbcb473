/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The topology file's sections besides pipelines (see topology.c): gpus, planner (with its
 * static plan), frontend (with its http front door) and runtime.
 */
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
#include "loki/topology.h"
#include "topology_internal.h"

void load_gpus(struct ctx *c, const struct node *m)
{
    static const char *const keys[] = {"count", "memory_mb", "mps_max_clients", "share_granularity",
                                       NULL};
    struct loki_gpus *g = &c->t->gpus;
    const struct node *v;
    long long i;
    double d;
    if (!want(c, m, N_MAP, "gpus"))
        return;
    check_keys(c, m, "gpus", keys);
    if ((v = require(c, m, "count", "gpus")) && get_int(c, v, "count", &i) &&
        in_range(c, v, "count", (double)i, 1, LOKI_MAX_GPUS, false))
        g->count = (int)i;
    if ((v = map_get(m, "memory_mb")) && get_double(c, v, "memory_mb", &d) &&
        in_range(c, v, "memory_mb", d, 0, 1e9, true))
        g->mem_mb = d;
    if ((v = map_get(m, "mps_max_clients")) && get_int(c, v, "mps_max_clients", &i) &&
        in_range(c, v, "mps_max_clients", (double)i, 1, 128, false))
        g->mps_max_clients = (int)i;
    /* lokid hands shares to MPS as a whole CUDA_MPS_ACTIVE_THREAD_PERCENTAGE: 1 % is the finest */
    if ((v = map_get(m, "share_granularity")) && get_double(c, v, "share_granularity", &d) &&
        in_range(c, v, "share_granularity", d, 0.01, 1, false)) {
        double k = 1.0 / d;
        if (fabs(k - round(k)) > 1e-9)
            errorf(c, v, "share_granularity", "%g does not divide 1 (use 1, 0.5, 0.25, ...)", d);
        else
            g->share_granularity = d;
    }
}

void load_planner(struct ctx *c, const struct node *m)
{
    static const char *const keys[] = {
        "policy",         "interval_ms",  "headroom",   "beta",
        "ewma_alpha",     "ewma_windows", "hysteresis", "min_dwell_s",
        "time_limit_ms",  "mip_gap",      "early_drop", "reroute",
        "static_plan",    "burst_spares", "fallback",   "demand_sigmas",
        "accuracy_floor", "formulation",  NULL};
    struct loki_planner_cfg *p = &c->t->planner;
    const struct node *v;
    double d;
    long long i;
    if (!want(c, m, N_MAP, "planner"))
        return;
    check_keys(c, m, "planner", keys);
    if ((v = map_get(m, "policy")) && want(c, v, N_SCALAR, "policy") &&
        loki_policy_parse(v->str, &p->policy))
        errorf(c, v, "policy", "unknown policy '%s' (loki, inferline, proteus, static)", v->str);
#define DBL(key, field, lo, hi, open)                                                              \
    if ((v = map_get(m, key)) && get_double(c, v, key, &d) &&                                      \
        in_range(c, v, key, d, lo, hi, open))                                                      \
        p->field = d;
    DBL("interval_ms", interval_ms, 1, 3.6e6, false)
    DBL("headroom", headroom, 0, 1, true)
    DBL("beta", beta, 1, 10, false)
    DBL("ewma_alpha", ewma_alpha, 0, 1, true)
    DBL("hysteresis", hysteresis, 0, 1, false)
    DBL("min_dwell_s", min_dwell_s, 0, 86400, false)
    DBL("time_limit_ms", time_limit_ms, 1, 600000, false)
    DBL("mip_gap", mip_gap, 0, 1, false)
#undef DBL
    if ((v = map_get(m, "ewma_windows")) && get_int(c, v, "ewma_windows", &i) &&
        in_range(c, v, "ewma_windows", (double)i, 1, 3600, false))
        p->ewma_windows = (int)i;
    if ((v = map_get(m, "burst_spares")) && get_int(c, v, "burst_spares", &i) &&
        in_range(c, v, "burst_spares", (double)i, 0, 16, false))
        p->burst_spares = (int)i;
    if ((v = map_get(m, "early_drop")))
        get_bool(c, v, "early_drop", &p->early_drop);
    if ((v = map_get(m, "demand_sigmas")) && get_double(c, v, "demand_sigmas", &d) &&
        in_range(c, v, "demand_sigmas", d, 0, 10, false))
        p->demand_sigmas = d;
    if ((v = map_get(m, "accuracy_floor")) && get_double(c, v, "accuracy_floor", &d) &&
        in_range(c, v, "accuracy_floor", d, 0, 100, false))
        p->accuracy_floor = d;
    if ((v = map_get(m, "formulation")) && want(c, v, N_SCALAR, "formulation")) {
        if (!strcmp(v->str, "flow"))
            p->formulation = LOKI_FORMULATION_FLOW;
        else if (!strcmp(v->str, "paths"))
            p->formulation = LOKI_FORMULATION_PATHS;
        else
            errorf(c, v, "formulation", "expected flow or paths, got '%s'", v->str);
    }
    if ((v = map_get(m, "fallback")))
        get_bool(c, v, "fallback", &p->fallback);
    if ((v = map_get(m, "reroute")))
        get_bool(c, v, "reroute", &p->reroute);
}

/* static_plan refers to pipelines by name: resolved after they are loaded. */
void load_static_plan(struct ctx *c, const struct node *seq)
{
    static const char *const keys[] = {"pipeline", "task",  "variant", "instances",
                                       "batch",    "share", NULL};
    struct loki_planner_cfg *p = &c->t->planner;
    if (!want(c, seq, N_SEQ, "static_plan"))
        return;
    for (int k = 0; k < seq->n; k++) {
        const struct node *m = seq->vals[k], *v;
        char name[LOKI_NAME_MAX];
        long long i;
        double d;
        if (!want(c, m, N_MAP, "static_plan"))
            continue;
        check_keys(c, m, "static_plan entry", keys);
        if (p->n_static == LOKI_MAX_STATIC) {
            errorf(c, m, "static_plan", "more than %d entries", LOKI_MAX_STATIC);
            return;
        }
        struct loki_static_entry e = {
            .pipeline = -1, .task = -1, .variant = -1, .instances = 1, .batch = 1, .share = 1};
        const struct loki_pipeline *pl = NULL;
        const struct loki_task *tk = NULL;
        if ((v = require(c, m, "pipeline", "static_plan entry")) &&
            get_name(c, v, "pipeline", name)) {
            e.pipeline = loki_topology_pipeline_index(c->t, name);
            if (e.pipeline < 0)
                errorf(c, v, "pipeline", "unknown pipeline '%s'", name);
            else
                pl = &c->t->pipelines[e.pipeline];
        }
        if ((v = require(c, m, "task", "static_plan entry")) && get_name(c, v, "task", name) &&
            pl) {
            e.task = loki_pipeline_task_index(pl, name);
            if (e.task < 0)
                errorf(c, v, "task", "unknown task '%s' in pipeline '%s'", name, pl->name);
            else
                tk = &pl->tasks[e.task];
        }
        if ((v = require(c, m, "variant", "static_plan entry")) &&
            get_name(c, v, "variant", name) && tk) {
            e.variant = loki_task_variant_index(tk, name);
            if (e.variant < 0)
                errorf(c, v, "variant", "unknown variant '%s' of task '%s'", name, tk->name);
        }
        if ((v = map_get(m, "instances")) && get_int(c, v, "instances", &i) &&
            in_range(c, v, "instances", (double)i, 0, LOKI_MAX_INSTANCES, false))
            e.instances = (int)i;
        if ((v = map_get(m, "batch")) && get_int(c, v, "batch", &i) &&
            in_range(c, v, "batch", (double)i, 1, LOKI_MAX_BATCH, false))
            e.batch = (int)i;
        if ((v = map_get(m, "share")) && get_double(c, v, "share", &d) &&
            in_range(c, v, "share", d, 0, 1, true))
            e.share = d;
        if (tk && e.variant >= 0) {
            const struct loki_variant *var = &tk->variants[e.variant];
            if (loki_variant_latency(var, e.batch, e.share) <= 0)
                errorf(c, m, "static_plan", "variant '%s' has no profile for batch %d at share %g",
                       var->name, e.batch, e.share);
        }
        p->static_plan[p->n_static++] = e;
    }
}

/* frontend.http: the opt-in HTTP front door (loki/config.h struct loki_http_cfg). */
void load_frontend_http(struct ctx *c, const struct node *m)
{
    static const char *const keys[] = {"enabled",
                                       "address",
                                       "port",
                                       "tls_cert",
                                       "tls_key",
                                       "max_connections",
                                       "max_connections_per_ip",
                                       "connection_timeout_s",
                                       "request_timeout_s",
                                       "lokid_connections",
                                       NULL};
    struct loki_http_cfg *h = &c->cfg->frontend.http;
    const struct node *v;
    long long i;
    double d;
    unsigned char a[16];
    if (!want(c, m, N_MAP, "http"))
        return;
    check_keys(c, m, "frontend.http", keys);
    if ((v = map_get(m, "enabled")))
        get_bool(c, v, "enabled", &h->enabled);
    if ((v = map_get(m, "address")) && get_str(c, v, "address", h->address, sizeof(h->address)) &&
        inet_pton(AF_INET, h->address, a) != 1 && inet_pton(AF_INET6, h->address, a) != 1)
        errorf(c, v, "address", "expected an IPv4 or IPv6 address such as 127.0.0.1, got '%s'",
               h->address);
    if ((v = map_get(m, "port")) && get_int(c, v, "port", &i) &&
        in_range(c, v, "port", (double)i, 0, 65535, false))
        h->port = (int)i;
    if ((v = map_get(m, "tls_cert")))
        get_str(c, v, "tls_cert", h->tls_cert, sizeof(h->tls_cert));
    if ((v = map_get(m, "tls_key")))
        get_str(c, v, "tls_key", h->tls_key, sizeof(h->tls_key));
    if (!h->tls_cert[0] != !h->tls_key[0])
        errorf(c, m, "http", "tls_cert and tls_key go together (HTTPS needs both)");
#define U32(key, field, lo, hi)                                                                    \
    if ((v = map_get(m, key)) && get_int(c, v, key, &i) &&                                         \
        in_range(c, v, key, (double)i, lo, hi, false))                                             \
        h->field = (uint32_t)i;
    U32("max_connections", max_connections, 1, 65536)
    U32("max_connections_per_ip", max_connections_per_ip, 0, 65536)
    U32("lokid_connections", lokid_connections, 1, 64)
#undef U32
    if ((v = map_get(m, "connection_timeout_s")) && get_double(c, v, "connection_timeout_s", &d) &&
        in_range(c, v, "connection_timeout_s", d, 1, 86400, false))
        h->connection_timeout_s = d;
    if ((v = map_get(m, "request_timeout_s")) && get_double(c, v, "request_timeout_s", &d) &&
        in_range(c, v, "request_timeout_s", d, 0.001, 86400, false))
        h->request_timeout_s = d;
}

void load_frontend(struct ctx *c, const struct node *m)
{
    static const char *const keys[] = {"socket",
                                       "mode",
                                       "allowed_uids",
                                       "max_payload_bytes",
                                       "max_inflight",
                                       "max_result_bytes",
                                       "max_read_buffer_bytes",
                                       "max_connections",
                                       "max_connections_per_uid",
                                       "idle_timeout_s",
                                       "http",
                                       NULL};
    struct loki_frontend_cfg *f = &c->cfg->frontend;
    const struct node *v, *per_uid = NULL;
    long long i;
    double d;
    if (!want(c, m, N_MAP, "frontend"))
        return;
    check_keys(c, m, "frontend", keys);
    if ((v = map_get(m, "socket")))
        get_str(c, v, "socket", f->socket_path, sizeof(f->socket_path));
    if ((v = map_get(m, "mode")) && want(c, v, N_SCALAR, "mode")) {
        char *end;
        unsigned long mode = strtoul(v->str, &end, 8);
        if (end == v->str || *end || mode > 0777)
            errorf(c, v, "mode", "expected an octal file mode such as \"0660\", got '%s'", v->str);
        else
            f->mode = (unsigned)mode;
    }
    if ((v = map_get(m, "allowed_uids")) && want(c, v, N_SEQ, "allowed_uids")) {
        for (int k = 0; k < v->n; k++) {
            if (f->n_uids == LOKI_MAX_UIDS) {
                errorf(c, v->vals[k], "allowed_uids", "more than %d uids", LOKI_MAX_UIDS);
                break;
            }
            if (get_int(c, v->vals[k], "allowed_uids", &i) &&
                in_range(c, v->vals[k], "allowed_uids", (double)i, 0, 4294967294.0, false))
                f->uids[f->n_uids++] = (unsigned)i;
        }
    }
    if ((v = map_get(m, "max_payload_bytes")) && get_int(c, v, "max_payload_bytes", &i) &&
        in_range(c, v, "max_payload_bytes", (double)i, 1, 256.0 * 1024 * 1024, false))
        f->max_payload = (uint32_t)i;
    if ((v = map_get(m, "max_inflight")) && get_int(c, v, "max_inflight", &i) &&
        in_range(c, v, "max_inflight", (double)i, 1, 1 << 24, false))
        f->max_inflight = (uint32_t)i;
    if ((v = map_get(m, "max_result_bytes")) && get_int(c, v, "max_result_bytes", &i) &&
        in_range(c, v, "max_result_bytes", (double)i, 1024, 1024.0 * 1024 * 1024, false))
        f->max_result = (uint32_t)i;
    if ((v = map_get(m, "max_read_buffer_bytes")) && get_int(c, v, "max_read_buffer_bytes", &i) &&
        in_range(c, v, "max_read_buffer_bytes", (double)i, 1024.0 * 1024, 64.0 * 1024 * 1024 * 1024,
                 false))
        f->max_read_buffer = (uint64_t)i;
    if ((v = map_get(m, "max_connections")) && get_int(c, v, "max_connections", &i) &&
        in_range(c, v, "max_connections", (double)i, 1, LOKI_FRONTEND_MAX_CONNS, false))
        f->max_conns = (uint32_t)i;
    if ((v = map_get(m, "max_connections_per_uid")) &&
        get_int(c, v, "max_connections_per_uid", &i) &&
        in_range(c, v, "max_connections_per_uid", (double)i, 1, LOKI_FRONTEND_MAX_CONNS, false)) {
        f->max_conns_per_uid = (uint32_t)i;
        per_uid = v;
    }
    if (per_uid && f->max_conns && f->max_conns_per_uid > f->max_conns)
        errorf(c, per_uid, "max_connections_per_uid", "%u exceeds max_connections %u",
               f->max_conns_per_uid, f->max_conns);
    if ((v = map_get(m, "idle_timeout_s")) && get_double(c, v, "idle_timeout_s", &d) &&
        in_range(c, v, "idle_timeout_s", d, 0, 86400, true))
        f->idle_timeout_s = d;
    if ((v = map_get(m, "http")))
        load_frontend_http(c, v);
}

void load_runtime(struct ctx *c, const struct node *m)
{
    static const char *const keys[] = {"spin_us", "metrics_address", "metrics_port", NULL};
    struct loki_runtime_cfg *r = &c->cfg->runtime;
    const struct node *v;
    long long i;
    double d;
    if (!want(c, m, N_MAP, "runtime"))
        return;
    check_keys(c, m, "runtime", keys);
    if ((v = map_get(m, "spin_us")) && get_double(c, v, "spin_us", &d) &&
        in_range(c, v, "spin_us", d, 0, 10000, false))
        r->spin_us = d;
    if ((v = map_get(m, "metrics_address")) &&
        get_str(c, v, "metrics_address", r->metrics_address, sizeof(r->metrics_address))) {
        unsigned char a[sizeof(struct in6_addr)];
        if (inet_pton(AF_INET, r->metrics_address, a) != 1 &&
            inet_pton(AF_INET6, r->metrics_address, a) != 1)
            errorf(c, v, "metrics_address",
                   "expected an IPv4 or IPv6 address such as \"127.0.0.1\" or \"::1\", got '%s'",
                   r->metrics_address);
    }
    if ((v = map_get(m, "metrics_port")) && get_int(c, v, "metrics_port", &i) &&
        in_range(c, v, "metrics_port", (double)i, 0, 65535, false))
        r->metrics_port = (int)i;
}
