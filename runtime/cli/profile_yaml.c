/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `loki profile`'s YAML (see cmd_profile.c): the latency tables it prints, with comment
 * lines on how they were measured, and the topology copy it writes: the measured variants'
 * batch_sizes, latency_ms and share_scaled replaced in the text (block-style variants and
 * one-line flow ones), everything else kept line for line.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loki/topology.h"
#include "profile_internal.h"

/* ---- the YAML ------------------------------------------------------------------------------- */

static int indent_of(const char *l)
{
    int i = 0;
    while (l[i] == ' ')
        i++;
    return i;
}

/* @ms as the profile writes it: 2 decimals from 1 ms up, 3 significant digits below, at
 * least the topology's smallest latency (1 ns). */
static const char *fmt_ms(double ms, char *b, size_t n)
{
    int d = 2;
    for (double x = 1; ms < x && d < 6; x /= 10)
        d++;
    if (ms < 1e-6)
        ms = 1e-6;
    snprintf(b, n, "%.*f", d, ms);
    return b;
}

static void print_row(FILE *f, const struct target *g, int s)
{
    char b[32];
    fprintf(f, "[");
    for (int k = 0; k < g->n_b; k++)
        fprintf(f, "%s%s", k ? ", " : "", fmt_ms(g->tau[s][k], b, sizeof(b)));
    fprintf(f, "]\n");
}

/* The comment lines saying how @g was measured, indented by @ind. */
static void print_about(const struct prof *p, const struct target *g, FILE *f, int ind)
{
    const struct loki_task *tk = &p->t->pipelines[g->pi].tasks[g->ti];
    const struct loki_variant *v = var_of(p, g);
    if (!strcmp(g->how, "from")) {
        fprintf(f, "%*s# loki profile --from %s\n", ind, "", p->from);
        return;
    }
    if (v->backend == LOKI_BACKEND_CUDA) {
        fprintf(f, "%*s# loki profile: cuda, %s, median of %d runs per point\n", ind, "", g->how,
                p->reps);
        return;
    }
    fprintf(f, "%*s# loki profile: %s, %s, median of %d batches after %d, %s\n", ind, "",
            g->backend[0] ? g->backend : "?", g->how, p->reps, p->warmup, g->input);
    if (!g->stats || !g->n_q)
        return;
    double nq = (double)g->n_q;
    fprintf(f, "%*s# loki profile: init %.1f ms; per query: output %.0f B", ind, "", g->init_ms,
            g->out_bytes / nq);
    for (int c = 0; c < tk->n_children; c++)
        fprintf(f, "; %s: %.2f children of %.0f B (fanout %g)",
                p->t->pipelines[g->pi].tasks[tk->children[c]].name, g->kids[c] / nq,
                g->kids[c] ? g->kid_bytes[c] / g->kids[c] : 0.0, v->fanout[c].mean);
    fprintf(f, "\n");
}

/* A comment line print_about() wrote, at indent @ind: replaced with the profile. */
static bool is_about(const char *l, int ind)
{
    return indent_of(l) == ind && (!strncmp(l + ind, "# loki profile", 14) ||
                                   !strncmp(l + ind, "# measured by loki profile", 26));
}

/* The measured keys of @g, indented by @ind: batch_sizes and latency_ms, a list for share 1
 * alone, else a mapping from share with share_scaled: false. */
void loki__profile_emit(const struct prof *p, const struct target *g, FILE *f, int ind)
{
    print_about(p, g, f, ind);
    fprintf(f, "%*sbatch_sizes: [", ind, "");
    for (int b = 0; b < g->n_b; b++)
        fprintf(f, "%s%d", b ? ", " : "", g->batches[b]);
    fprintf(f, "]\n");
    if (g->n_s == 1) {
        fprintf(f, "%*slatency_ms: ", ind, "");
        print_row(f, g, 0);
        return;
    }
    fprintf(f, "%*sshare_scaled: false\n%*slatency_ms:\n", ind, "", ind, "");
    for (int s = 0; s < g->n_s; s++) {
        fprintf(f, "%*s%g: ", ind + 2, "", g->shares[s]);
        print_row(f, g, s);
    }
}

/* ---- the rewritten topology file ------------------------------------------------------------ */

struct text {
    char **l;
    int n, cap;
};

static int text_push(struct text *x, char *line)
{
    if (!line)
        return -ENOMEM;
    if (x->n == x->cap) {
        int cap = x->cap ? 2 * x->cap : 256;
        char **l = realloc(x->l, sizeof(*l) * (size_t)cap);
        if (!l) {
            free(line);
            return -ENOMEM;
        }
        x->l = l;
        x->cap = cap;
    }
    x->l[x->n++] = line;
    return 0;
}

static void text_free(struct text *x)
{
    for (int i = 0; i < x->n; i++)
        free(x->l[i]);
    free(x->l);
    memset(x, 0, sizeof(*x));
}

static bool blank_or_comment(const char *l)
{
    l += indent_of(l);
    return *l == 0 || *l == '\n' || *l == '\r' || *l == '#';
}

/* Is @l "- name: NAME" (NAME plain or quoted)? */
static bool is_name_item(const char *l, const char *name)
{
    l += indent_of(l);
    if (strncmp(l, "- name:", 7))
        return false;
    l += 7;
    while (*l == ' ')
        l++;
    size_t n = strlen(name);
    char q = (*l == '"' || *l == '\'') ? *l++ : 0;
    if (strncmp(l, name, n))
        return false;
    l += n;
    if (q && *l++ != q)
        return false;
    while (*l == ' ' || *l == '\r')
        l++;
    return *l == 0 || *l == '\n' || *l == '#';
}

/* In the one-line flow mapping @l, where the value of @key starts, or NULL. */
static char *flow_value(char *l, const char *key)
{
    size_t n = strlen(key);
    for (char *s = strstr(l, key); s; s = strstr(s + 1, key))
        if (s > l && strchr("{ ,", s[-1]) && s[n] == ':') {
            s += n + 1;
            while (*s == ' ')
                s++;
            return s;
        }
    return NULL;
}

/* Where the flow value at @v ends: past its matching bracket, else at the next ',' or '}'. */
static char *flow_value_end(char *v)
{
    if (*v != '[' && *v != '{')
        return v + strcspn(v, ",}");
    int depth = 0;
    for (char *s = v; *s; s++)
        if (*s == '[' || *s == '{')
            depth++;
        else if ((*s == ']' || *s == '}') && --depth == 0)
            return s + 1;
    return NULL;
}

/* Is @l a one-line flow item "- {name: NAME, ...}"? */
static bool is_flow_item(char *l, const char *name)
{
    char *s = l + indent_of(l), *v;
    if (strncmp(s, "- {", 3) || !(v = flow_value(s, "name")))
        return false;
    char *e = flow_value_end(s + 2);
    if (!e || e[strspn(e, " \r")] != '\n')
        return false; /* not all on this line */
    size_t n = strlen(name);
    char q = (*v == '"' || *v == '\'') ? *v++ : 0;
    if (strncmp(v, name, n))
        return false;
    v += n;
    if (q && *v++ != q)
        return false;
    v += strspn(v, " ");
    return *v == ',' || *v == '}';
}

/* @l with the flow value of @key replaced by @val: a new line (@l freed), or NULL when the
 * key is not there (@l kept). */
static char *flow_set(char *l, const char *key, const char *val)
{
    char *v = flow_value(l, key), *e = v ? flow_value_end(v) : NULL;
    if (!e)
        return NULL;
    char *y = NULL;
    if (asprintf(&y, "%.*s%s%s", (int)(v - l), l, val, e) < 0)
        return NULL;
    free(l);
    return y;
}

static bool is_key(const char *l, int indent, const char *key)
{
    size_t n = strlen(key);
    return indent_of(l) == indent && !strncmp(l + indent, key, n) && l[indent + n] == ':';
}

/*
 * In lines [@from, @to), the item "- name: NAME" (with @flow also "- {name: NAME, ...}" on
 * one line) of the block list under key @key at indent @ki (the list's items at @ki or
 * deeper): its line, and in *@end the end of its block. -1 when not there in that form.
 */
static int find_item(const struct text *x, int from, int to, int ki, const char *key,
                     const char *name, bool flow, int *end)
{
    int k = from;
    while (k < to && !is_key(x->l[k], ki, key))
        k++;
    if (k == to)
        return -1;
    /* the list: deeper lines, or "- " items at the key's own indent */
    int e = k + 1, ii = -1;
    while (e < to && (blank_or_comment(x->l[e]) || indent_of(x->l[e]) > ki ||
                      (indent_of(x->l[e]) == ki && x->l[e][ki] == '-'))) {
        if (ii < 0 && !blank_or_comment(x->l[e]))
            ii = indent_of(x->l[e]);
        e++;
    }
    for (int i = k + 1; i < e; i++) {
        if (indent_of(x->l[i]) != ii ||
            !(is_name_item(x->l[i], name) || (flow && is_flow_item(x->l[i], name))))
            continue;
        int j = i + 1;
        while (j < e && (blank_or_comment(x->l[j]) || indent_of(x->l[j]) > ii))
            j++;
        *end = j;
        return i;
    }
    return -1;
}

/* The one-line flow variant at line @at of @x with @g's batch_sizes and latency_ms (and
 * share_scaled false), its comment lines above it. */
static int rewrite_flow(struct text *x, int at, const struct prof *p, const struct target *g)
{
    char bs[16 * 8], lat[MAX_S * (24 + MAX_B * 16)], b[32];
    int k = snprintf(bs, sizeof(bs), "[");
    for (int i = 0; i < g->n_b; i++)
        k += snprintf(bs + k, sizeof(bs) - (size_t)k, "%s%d", i ? ", " : "", g->batches[i]);
    snprintf(bs + k, sizeof(bs) - (size_t)k, "]");
    k = snprintf(lat, sizeof(lat), "%s", g->n_s > 1 ? "{" : "");
    for (int s = 0; s < g->n_s; s++) {
        if (g->n_s > 1)
            k += snprintf(lat + k, sizeof(lat) - (size_t)k, "%s%g: ", s ? ", " : "", g->shares[s]);
        for (int i = 0; i < g->n_b; i++)
            k += snprintf(lat + k, sizeof(lat) - (size_t)k, "%s%s", i ? ", " : "[",
                          fmt_ms(g->tau[s][i], b, sizeof(b)));
        k += snprintf(lat + k, sizeof(lat) - (size_t)k, "]");
    }
    snprintf(lat + k, sizeof(lat) - (size_t)k, "%s", g->n_s > 1 ? "}" : "");
    char *l = flow_set(x->l[at], "batch_sizes", bs);
    if (l)
        x->l[at] = l;
    char *m = l ? flow_set(x->l[at], "latency_ms", lat) : NULL;
    if (!m) {
        fprintf(stderr, "loki profile: cannot rewrite the flow mapping of variant %s\n",
                var_of(p, g)->name);
        return -1;
    }
    x->l[at] = m;
    if (flow_value(x->l[at], "share_scaled") && (l = flow_set(x->l[at], "share_scaled", "false")))
        x->l[at] = l;
    /* the comments: the old ones above the item go, the new ones come */
    int ii = indent_of(x->l[at]), top = at;
    while (top > 0 && is_about(x->l[top - 1], ii))
        top--;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return -ENOMEM;
    print_about(p, g, f, ii);
    fclose(f);
    struct text y = {0};
    int rc = 0;
    for (int i = 0; i < x->n && !rc; i++) {
        if (i >= top && i < at) {
            free(x->l[i]);
            x->l[i] = NULL;
            continue;
        }
        if (i == at)
            for (char *s = buf, *nl; !rc && *s; s = nl + 1) {
                nl = strchr(s, '\n');
                rc = text_push(&y, strndup(s, (size_t)(nl - s + 1)));
            }
        if (!rc)
            rc = text_push(&y, x->l[i]);
        x->l[i] = NULL;
    }
    free(buf);
    if (rc) {
        text_free(&y);
        return rc;
    }
    text_free(x);
    *x = y;
    return 0;
}

/* Replace @g's batch_sizes, latency_ms and share_scaled in @x (with their nested lines) by
 * the measured ones, at the place of the first of them. Block-style YAML only. */
static int rewrite_variant(struct text *x, const struct prof *p, const struct target *g)
{
    const struct loki_pipeline *pl = &p->t->pipelines[g->pi];
    const char *keys[3] = {"pipelines", "tasks", "variants"};
    const char *names[3] = {pl->name, pl->tasks[g->ti].name, var_of(p, g)->name};
    int at = -1, from = 0, end = x->n, ki = 0;
    for (int k = 0; k < 3; k++) {
        if ((at = find_item(x, from, end, ki, keys[k], names[k], k == 2, &end)) < 0) {
            fprintf(stderr,
                    "loki profile: cannot find variant %s in %s as block YAML (%s: with "
                    "\"- name: %s\"); copy the profile printed above into it by hand\n",
                    names[2], p->topology, keys[k], names[k]);
            return -1;
        }
        from = at + 1;
        ki = indent_of(x->l[at]) + 2;
    }
    if (x->l[at][ki] == '{')
        return rewrite_flow(x, at, p, g);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m)
        return -ENOMEM;
    loki__profile_emit(p, g, m, ki);
    fclose(m);
    struct text y = {0};
    int rc = 0;
    bool written = false;
    /* the key lines end where the block's trailing blank lines start */
    int last = end;
    while (last > at + 1 && blank_or_comment(x->l[last - 1]))
        last--;
    for (int i = 0; i <= x->n && !rc; i++) {
        if (i == last && !written) { /* none of the keys in the block: add them at its end */
            for (char *s = buf, *nl; !rc && *s; s = nl + 1) {
                nl = strchr(s, '\n');
                rc = text_push(&y, strndup(s, (size_t)(nl - s + 1)));
            }
            written = true;
        }
        if (i == x->n)
            break;
        if (i > at && i < last && is_about(x->l[i], ki)) {
            free(x->l[i]);
            x->l[i] = NULL;
            continue;
        }
        if (i > at && i < last &&
            (is_key(x->l[i], ki, "batch_sizes") || is_key(x->l[i], ki, "latency_ms") ||
             is_key(x->l[i], ki, "share_scaled"))) {
            if (!written)
                for (char *s = buf, *nl; !rc && *s; s = nl + 1) {
                    nl = strchr(s, '\n');
                    rc = text_push(&y, strndup(s, (size_t)(nl - s + 1)));
                }
            written = true;
            /* drop the old key and everything nested under it */
            free(x->l[i]);
            x->l[i] = NULL;
            while (i + 1 < last &&
                   (x->l[i + 1][indent_of(x->l[i + 1])] == '\n' || indent_of(x->l[i + 1]) > ki)) {
                free(x->l[++i]);
                x->l[i] = NULL;
            }
            continue;
        }
        rc = text_push(&y, x->l[i]);
        x->l[i] = NULL;
    }
    free(buf);
    if (rc) {
        text_free(&y);
        return rc;
    }
    text_free(x);
    *x = y;
    return 0;
}

/* The value @ms takes once written and read back. */
static double as_written(double ms)
{
    char b[32];
    return strtod(fmt_ms(ms, b, sizeof(b)), NULL);
}

/*
 * Write every target's profile into a copy of the topology text (p->out), checked first:
 * the copy must load, and each variant carry what was measured.
 */
int loki__profile_write(const struct prof *p)
{
    FILE *in = fopen(p->topology, "r");
    if (!in) {
        fprintf(stderr, "loki profile: %s: %s\n", p->topology, strerror(errno));
        return -1;
    }
    struct text x = {0};
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    while (!rc && getline(&line, &cap, in) > 0) {
        rc = text_push(&x, line);
        line = NULL;
        cap = 0;
    }
    free(line);
    fclose(in);
    /* a last line without its newline */
    if (!rc && x.n && x.l[x.n - 1][strlen(x.l[x.n - 1]) - 1] != '\n') {
        size_t n = strlen(x.l[x.n - 1]);
        char *l = realloc(x.l[x.n - 1], n + 2);
        if (l) {
            l[n] = '\n';
            l[n + 1] = 0;
            x.l[x.n - 1] = l;
        } else {
            rc = -ENOMEM;
        }
    }
    for (int i = 0; i < p->n_tg && !rc; i++) {
        const struct loki_variant *v = var_of(p, &p->tg[i]);
        int had = v->share_derived ? 1 : v->n_shares; /* derived shares are not in the file */
        if (had > p->tg[i].n_s)
            fprintf(stderr,
                    "loki profile: %s had latencies at %d shares; the copy keeps the %d "
                    "measured\n",
                    v->name, had, p->tg[i].n_s);
        rc = rewrite_variant(&x, p, &p->tg[i]);
    }
    if (rc) {
        if (rc == -ENOMEM)
            fprintf(stderr, "loki profile: out of memory\n");
        text_free(&x);
        return -1;
    }
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s.tmp%d", p->out, (int)getpid());
    FILE *out = fopen(tmp, "w");
    if (!out) {
        fprintf(stderr, "loki profile: %s: %s\n", tmp, strerror(errno));
        text_free(&x);
        return -1;
    }
    for (int i = 0; i < x.n; i++)
        fputs(x.l[i], out);
    text_free(&x);
    if (fclose(out)) {
        fprintf(stderr, "loki profile: %s: %s\n", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    char err[4096];
    struct loki_topology *chk;
    if (loki_topology_load(tmp, &chk, err, sizeof(err))) {
        fprintf(stderr, "loki profile: the rewritten topology does not load:\n%s\n", err);
        unlink(tmp);
        return -1;
    }
    bool same = true;
    for (int i = 0; i < p->n_tg; i++) {
        const struct target *g = &p->tg[i];
        const struct loki_variant *v = &chk->pipelines[g->pi].tasks[g->ti].variants[g->vi];
        /* measured at share 1 only under a granularity below 1: the loader derives the rest */
        int ns = v->share_derived ? 1 : v->n_shares;
        same &= ns == g->n_s && v->n_batches == g->n_b && (!v->share_scaled || v->share_derived);
        for (int s = 0; same && s < g->n_s; s++)
            for (int b = 0; b < g->n_b; b++)
                same &= fabs(v->shares[s] - g->shares[s]) < 1e-9 &&
                        v->batches[b] == g->batches[b] &&
                        fabs(v->latency_ms[s][b] - as_written(g->tau[s][b])) < 1e-9;
    }
    free(chk);
    if (!same || rename(tmp, p->out)) {
        fprintf(stderr, "loki profile: could not write %s%s\n", p->out,
                same ? "" : " (the rewritten variants do not carry the measured profiles)");
        unlink(tmp);
        return -1;
    }
    return 0;
}
