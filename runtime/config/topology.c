/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Topology loader. Two passes: libyaml events become a small node tree that
 * remembers line and column of every node; then a schema walk fills the
 * model, rejecting unknown keys, wrong types and out-of-range values, and a
 * final semantic pass checks the DAG (unknown children, cycles, one root,
 * reachability) and the SLO against the fastest path. All errors are
 * collected, not just the first, so a user fixes a file in one go.
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

enum ntype { N_SCALAR, N_MAP, N_SEQ };

struct node {
    enum ntype type;
    int line, col;
    bool quoted;
    char *str;          /* scalar value */
    int n;              /* map: pairs; seq: items */
    struct node **keys; /* map keys (scalars) */
    struct node **vals; /* map values or seq items */
    int cap;
};

#define MAX_ERRORS 20

struct ctx {
    const char *file;
    char *err;
    size_t errlen;
    size_t used;
    int n_errors;
    struct loki_topology *t;
    struct loki_config *cfg; /* the deployment sections */
};

static void errorf(struct ctx *c, const struct node *at, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void errorf(struct ctx *c, const struct node *at, const char *key, const char *fmt, ...)
{
    c->n_errors++;
    if (c->n_errors > MAX_ERRORS || !c->err || c->used + 1 >= c->errlen)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    size_t from = c->used + (c->used > 0); /* after the newline that separates errors */
    int n = snprintf(c->err + c->used, c->errlen - c->used, "%s%s:%d:%d: %s%s%s",
                     c->used ? "\n" : "", c->file, at ? at->line : 0, at ? at->col : 0,
                     key ? key : "", key ? ": " : "", msg);
    if (n > 0)
        c->used += (size_t)n < c->errlen - c->used ? (size_t)n : c->errlen - c->used - 1;
    /* one error per line: a value's or key's newlines and terminal escapes show as '?' */
    for (size_t i = from; i < c->used; i++)
        if ((unsigned char)c->err[i] < 0x20 || c->err[i] == 0x7f)
            c->err[i] = '?';
}

/* ---- pass 1: events to a node tree -------------------------------------------------------- */

static void node_free(struct node *n)
{
    if (!n)
        return;
    for (int i = 0; i < n->n; i++) {
        if (n->keys)
            node_free(n->keys[i]);
        node_free(n->vals[i]);
    }
    free(n->keys);
    free(n->vals);
    free(n->str);
    free(n);
}

static struct node *node_new(enum ntype type, const yaml_mark_t *m)
{
    struct node *n = calloc(1, sizeof(*n));
    if (n) {
        n->type = type;
        n->line = (int)m->line + 1;
        n->col = (int)m->column + 1;
    }
    return n;
}

static int node_push(struct node *parent, struct node *key, struct node *val)
{
    if (parent->n == parent->cap) {
        int cap = parent->cap ? parent->cap * 2 : 8;
        struct node **v = realloc(parent->vals, sizeof(*v) * (size_t)cap);
        if (!v)
            return -ENOMEM;
        parent->vals = v;
        if (parent->type == N_MAP) {
            struct node **k = realloc(parent->keys, sizeof(*k) * (size_t)cap);
            if (!k)
                return -ENOMEM;
            parent->keys = k;
        }
        parent->cap = cap;
    }
    if (parent->type == N_MAP)
        parent->keys[parent->n] = key;
    parent->vals[parent->n++] = val;
    return 0;
}

/*
 * A scalar with a NUL byte ("a\0b" in double quotes): every string the schema walk reads is a
 * C string, so it would see "a" and accept a name the user never wrote. Refused here, for every
 * scalar (names, keys, paths), naming the innermost key @n sits under (@key, may be NULL).
 */
static void nul_error(struct ctx *c, const struct node *n, const char *s, size_t len, bool is_key,
                      const char *key)
{
    char shown[96];
    size_t o = 0, i;
    for (i = 0; i < len && o + 8 < sizeof(shown); i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == 0)
            o += (size_t)snprintf(shown + o, sizeof(shown) - o, "\\0");
        else if (ch < 0x20 || ch == 0x7f)
            o += (size_t)snprintf(shown + o, sizeof(shown) - o, "\\x%02x", ch);
        else
            shown[o++] = (char)ch;
    }
    shown[o] = '\0';
    errorf(c, n, key, "%s\"%s%s\" contains a NUL byte; names and other strings must not",
           is_key ? "key " : "", shown, i < len ? "..." : "");
}

/* Builds the tree of the first document; NULL on a syntax error (reported). */
static struct node *parse_tree(struct ctx *c, const char *text, size_t len)
{
    yaml_parser_t p;
    yaml_event_t ev;
    struct node *stack[64];
    struct node *pending_key[64];
    int depth = 0;
    struct node *root = NULL;
    bool done = false;

    if (!yaml_parser_initialize(&p))
        return NULL;
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    while (!done) {
        if (!yaml_parser_parse(&p, &ev)) {
            struct node at = {.line = (int)p.problem_mark.line + 1,
                              .col = (int)p.problem_mark.column + 1};
            errorf(c, &at, NULL, "YAML syntax error: %s%s%s", p.problem ? p.problem : "?",
                   p.context ? " " : "", p.context ? p.context : "");
            goto fail;
        }
        struct node *n = NULL;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
        case YAML_DOCUMENT_END_EVENT:
            done = ev.type == YAML_STREAM_END_EVENT || root != NULL;
            break;
        case YAML_ALIAS_EVENT: {
            struct node at = {.line = (int)ev.start_mark.line + 1,
                              .col = (int)ev.start_mark.column + 1};
            errorf(c, &at, NULL, "YAML aliases are not supported in topology files");
            yaml_event_delete(&ev);
            goto fail;
        }
        case YAML_SCALAR_EVENT:
            n = node_new(N_SCALAR, &ev.start_mark);
            if (!n)
                goto oom;
            n->str = strndup((const char *)ev.data.scalar.value, ev.data.scalar.length);
            if (!n->str) {
                free(n);
                goto oom;
            }
            n->quoted = ev.data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
                        ev.data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE;
            if (memchr(ev.data.scalar.value, '\0', ev.data.scalar.length)) {
                /* reported, and parsing goes on to find the others; pass 2 will not run */
                bool is_key = depth && stack[depth - 1]->type == N_MAP && !pending_key[depth - 1];
                const char *key = NULL;
                for (int d = depth - 1; d >= 0 && !key; d--)
                    if (stack[d]->type == N_MAP && pending_key[d])
                        key = pending_key[d]->str;
                nul_error(c, n, (const char *)ev.data.scalar.value, ev.data.scalar.length, is_key,
                          key);
            }
            break;
        case YAML_MAPPING_START_EVENT:
        case YAML_SEQUENCE_START_EVENT:
            n = node_new(ev.type == YAML_MAPPING_START_EVENT ? N_MAP : N_SEQ, &ev.start_mark);
            if (!n)
                goto oom;
            break;
        case YAML_MAPPING_END_EVENT:
        case YAML_SEQUENCE_END_EVENT:
            depth--;
            n = stack[depth];
            break;
        default:
            break;
        }
        if (n && (ev.type == YAML_MAPPING_START_EVENT || ev.type == YAML_SEQUENCE_START_EVENT)) {
            if (depth == 64) {
                struct node at = {.line = n->line, .col = n->col};
                node_free(n);
                errorf(c, &at, NULL, "nesting deeper than 64 levels");
                yaml_event_delete(&ev);
                goto fail;
            }
            stack[depth] = n;
            pending_key[depth] = NULL;
            depth++;
            yaml_event_delete(&ev);
            continue;
        }
        if (n) {
            /* n is complete: attach it to its parent */
            if (depth == 0) {
                root = n;
            } else {
                struct node *par = stack[depth - 1];
                if (par->type == N_SEQ) {
                    if (node_push(par, NULL, n)) {
                        node_free(n);
                        goto oom;
                    }
                } else if (!pending_key[depth - 1]) {
                    if (n->type != N_SCALAR) {
                        errorf(c, n, NULL, "mapping keys must be plain scalars");
                        node_free(n);
                        yaml_event_delete(&ev);
                        goto fail;
                    }
                    pending_key[depth - 1] = n;
                } else {
                    if (node_push(par, pending_key[depth - 1], n)) {
                        node_free(n);
                        goto oom;
                    }
                    pending_key[depth - 1] = NULL;
                }
            }
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    return root;
oom:
    yaml_event_delete(&ev);
    errorf(c, NULL, NULL, "out of memory");
fail:
    /* free everything still on the stack; finished subtrees hang off it */
    /* open containers are not yet attached to their parents: free each */
    for (int i = depth - 1; i >= 0; i--) {
        node_free(pending_key[i]);
        node_free(stack[i]);
    }
    node_free(root);
    yaml_parser_delete(&p);
    return NULL;
}

/* ---- pass 2: schema walk -------------------------------------------------------------------- */

static const char *type_name(const struct node *n)
{
    return n->type == N_MAP ? "a mapping" : n->type == N_SEQ ? "a list" : "a scalar";
}

static bool want(struct ctx *c, const struct node *n, enum ntype type, const char *key)
{
    if (n->type == type)
        return true;
    errorf(c, n, key, "expected %s, got %s",
           type == N_MAP   ? "a mapping"
           : type == N_SEQ ? "a list"
                           : "a scalar",
           type_name(n));
    return false;
}

static bool get_double(struct ctx *c, const struct node *n, const char *key, double *out)
{
    if (!want(c, n, N_SCALAR, key))
        return false;
    char *end;
    errno = 0;
    double v = strtod(n->str, &end);
    if (n->quoted || end == n->str || *end || errno || !isfinite(v)) {
        errorf(c, n, key, "expected a number, got '%s'", n->str);
        return false;
    }
    *out = v;
    return true;
}

static bool get_int(struct ctx *c, const struct node *n, const char *key, long long *out)
{
    if (!want(c, n, N_SCALAR, key))
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(n->str, &end, 10);
    if (n->quoted || end == n->str || *end || errno) {
        errorf(c, n, key, "expected an integer, got '%s'", n->str);
        return false;
    }
    *out = v;
    return true;
}

static bool get_bool(struct ctx *c, const struct node *n, const char *key, bool *out)
{
    if (!want(c, n, N_SCALAR, key))
        return false;
    if (!n->quoted &&
        (!strcmp(n->str, "true") || !strcmp(n->str, "yes") || !strcmp(n->str, "on"))) {
        *out = true;
        return true;
    }
    if (!n->quoted &&
        (!strcmp(n->str, "false") || !strcmp(n->str, "no") || !strcmp(n->str, "off"))) {
        *out = false;
        return true;
    }
    errorf(c, n, key, "expected true or false, got '%s'", n->str);
    return false;
}

static bool get_str(struct ctx *c, const struct node *n, const char *key, char *out, size_t len)
{
    if (!want(c, n, N_SCALAR, key))
        return false;
    if (strlen(n->str) >= len) {
        errorf(c, n, key, "longer than %zu characters", len - 1);
        return false;
    }
    if (!n->str[0]) {
        errorf(c, n, key, "must not be empty");
        return false;
    }
    strcpy(out, n->str);
    return true;
}

static bool get_name(struct ctx *c, const struct node *n, const char *key, char *out)
{
    if (!get_str(c, n, key, out, LOKI_NAME_MAX))
        return false;
    for (const char *s = out; *s; s++) {
        if (!(*s == '-' || *s == '_' || *s == '.' || (*s >= '0' && *s <= '9') ||
              (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z'))) {
            errorf(c, n, key, "'%s': names use letters, digits, '-', '_' and '.' only", out);
            return false;
        }
    }
    return true;
}

static bool in_range(struct ctx *c, const struct node *n, const char *key, double v, double lo,
                     double hi, bool lo_open)
{
    if ((lo_open ? v <= lo : v < lo) || v > hi) {
        errorf(c, n, key, "%g is out of range %s%g, %g]", v, lo_open ? "(" : "[", lo, hi);
        return false;
    }
    return true;
}

/* Looks up @key in map @m; NULL if absent. */
static const struct node *map_get(const struct node *m, const char *key)
{
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->keys[i]->str, key))
            return m->vals[i];
    return NULL;
}

/* Rejects keys of @m not in the NULL-terminated @allowed, and duplicates. */
static void check_keys(struct ctx *c, const struct node *m, const char *where,
                       const char *const *allowed)
{
    for (int i = 0; i < m->n; i++) {
        const char *k = m->keys[i]->str;
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            ok |= !strcmp(*a, k);
        if (!ok) {
            char list[512] = "";
            size_t used = 0;
            for (const char *const *a = allowed; *a && used < sizeof(list); a++)
                used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s",
                                         a == allowed ? "" : ", ", *a);
            errorf(c, m->keys[i], k, "unknown key in %s (known: %s)", where, list);
        }
        for (int j = 0; j < i; j++)
            if (!strcmp(m->keys[j]->str, k))
                errorf(c, m->keys[i], k, "duplicate key in %s", where);
    }
}

static const struct node *require(struct ctx *c, const struct node *m, const char *key,
                                  const char *where)
{
    const struct node *v = map_get(m, key);
    if (!v)
        errorf(c, m, key, "missing in %s", where);
    return v;
}

static void load_gpus(struct ctx *c, const struct node *m)
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

static void load_planner(struct ctx *c, const struct node *m)
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
static void load_static_plan(struct ctx *c, const struct node *seq)
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
static void load_frontend_http(struct ctx *c, const struct node *m)
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

static void load_frontend(struct ctx *c, const struct node *m)
{
    static const char *const keys[] = {"socket",
                                       "mode",
                                       "allowed_uids",
                                       "max_payload_bytes",
                                       "max_inflight",
                                       "max_result_bytes",
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

static void load_runtime(struct ctx *c, const struct node *m)
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
