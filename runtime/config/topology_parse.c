/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The topology loader's first pass and its tools (see topology.c): libyaml events become a
 * node tree that remembers the line and column of every node; errors are collected with
 * file:line:col; the schema helpers check a node's type and range and say what is wrong.
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

void errorf(struct ctx *c, const struct node *at, const char *key, const char *fmt, ...)
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

void node_free(struct node *n)
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
struct node *parse_tree(struct ctx *c, const char *text, size_t len)
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

bool want(struct ctx *c, const struct node *n, enum ntype type, const char *key)
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

bool get_double(struct ctx *c, const struct node *n, const char *key, double *out)
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

bool get_int(struct ctx *c, const struct node *n, const char *key, long long *out)
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

bool get_bool(struct ctx *c, const struct node *n, const char *key, bool *out)
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

bool get_str(struct ctx *c, const struct node *n, const char *key, char *out, size_t len)
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

bool get_name(struct ctx *c, const struct node *n, const char *key, char *out)
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

bool in_range(struct ctx *c, const struct node *n, const char *key, double v, double lo, double hi,
              bool lo_open)
{
    if ((lo_open ? v <= lo : v < lo) || v > hi) {
        errorf(c, n, key, "%g is out of range %s%g, %g]", v, lo_open ? "(" : "[", lo, hi);
        return false;
    }
    return true;
}

/* Looks up @key in map @m; NULL if absent. */
const struct node *map_get(const struct node *m, const char *key)
{
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->keys[i]->str, key))
            return m->vals[i];
    return NULL;
}

/* Rejects keys of @m not in the NULL-terminated @allowed, and duplicates. */
void check_keys(struct ctx *c, const struct node *m, const char *where, const char *const *allowed)
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

const struct node *require(struct ctx *c, const struct node *m, const char *key, const char *where)
{
    const struct node *v = map_get(m, key);
    if (!v)
        errorf(c, m, key, "missing in %s", where);
    return v;
}
