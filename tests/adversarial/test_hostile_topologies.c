/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Hostile topology files, generated here: deep nesting, huge and non-finite numbers, NUL and
 * control bytes, cycles, unknown keys, duplicate names, YAML aliases (the billion laughs),
 * oversized strings and argument maps, limits one past their bound, documents that are not a
 * mapping, invalid UTF-8. Each file is refused twice: by the loader in this process (so an
 * ASan build of this test checks it for memory errors) and by `lokid --topology FILE`, which
 * exits 2 and prints the same FILE:LINE:COL: KEY: ... line; never a crash. The position of
 * each error is computed from the text of the file (the token it must name), not written by
 * hand.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "adv.h"
#include "loki/error.h"
#include "loki/topology.h"

/* A valid topology the hostile ones are made from. */
static const char good[] =
    "gpus:\n"
    "  count: 2\n"
    "  memory_mb: 16384\n"
    "planner:\n"
    "  interval_ms: 500\n"
    "frontend:\n"
    "  max_inflight: 64\n"
    "pipelines:\n"
    "  - name: p\n"
    "    slo_ms: 100\n"
    "    tasks:\n"
    "      - name: a\n"
    "        children: [b, c]\n"
    "        variants:\n"
    "          - name: a1\n"
    "            accuracy: 80\n"
    "            batch_sizes: [1, 4]\n"
    "            latency_ms: [5, 10]\n"
    "            fanout: {b: 2, c: 1}\n"
    "            args: {output_bytes: 64}\n"
    "          - name: a2\n"
    "            accuracy: 100\n"
    "            batch_sizes: [1, 4]\n"
    "            latency_ms: [10, 20]\n"
    "            fanout: {b: 3, c: 1}\n"
    "            max_output_bytes: 4096\n"
    "      - name: b\n"
    "        variants:\n"
    "          - {name: b1, accuracy: 100, batch_sizes: [1], latency_ms: [2]}\n"
    "      - name: c\n"
    "        variants:\n"
    "          - {name: c1, accuracy: 100, batch_sizes: [1], latency_ms: [3]}\n";

/* ---- a growing text --------------------------------------------------------------------- */

struct text {
    char *s;
    size_t n, cap;
};

static void t_add(struct text *t, const void *p, size_t n)
{
    if (t->n + n + 1 > t->cap) {
        t->cap = (t->n + n + 1) * 2;
        t->s = realloc(t->s, t->cap);
        assert_non_null(t->s);
    }
    memcpy(t->s + t->n, p, n);
    t->n += n;
    t->s[t->n] = '\0';
}

static void t_printf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void t_printf(struct text *t, const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof(buf));
    t_add(t, buf, (size_t)n);
}

/* ---- the cases ------------------------------------------------------------------------------ */

struct hostile {
    char name[96];
    char *text; /* may hold NUL bytes: @len */
    size_t len;
    int line, col;  /* where the error must point; 0: anywhere (a YAML syntax error) */
    char want[256]; /* what follows "FILE:LINE:COL: " */
};

#define MAX_CASES 128
static struct hostile cases[MAX_CASES];
static int n_cases;

/* The 1-based line and column of byte @off of @s. */
static void position(const char *s, size_t off, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++) {
        if (s[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

/*
 * A case of text @t (taken over); its error points at the @nth (from 1) occurrence of @at in
 * it, or at its '|' when it has one ("key: |value"; NULL: a syntax error, anywhere), and reads
 * @want (printf).
 */
static void add(const char *name, struct text *t, const char *at, int nth, const char *want, ...)
    __attribute__((format(printf, 5, 6)));

static void add(const char *name, struct text *t, const char *at, int nth, const char *want, ...)
{
    assert_true(n_cases < MAX_CASES);
    struct hostile *h = &cases[n_cases++];
    snprintf(h->name, sizeof(h->name), "%s", name);
    h->text = t->s;
    h->len = t->n;
    if (at) {
        /* "key: |value" finds "key: value" and points at the '|' */
        char needle[128];
        const char *bar = strchr(at, '|');
        size_t skip = bar ? (size_t)(bar - at) : 0;
        snprintf(needle, sizeof(needle), "%.*s%s", (int)skip, at, bar ? bar + 1 : at + skip);
        const char *p = NULL;
        size_t from = 0, k = strlen(needle);
        for (int i = 0; i < nth; i++) {
            p = memmem(t->s + from, t->n - from, needle, k);
            if (!p)
                fail_msg("case '%s': '%s' is not in its text %d times", name, needle, nth);
            from = (size_t)(p - t->s) + 1;
        }
        position(t->s, (size_t)(p - t->s) + skip, &h->line, &h->col);
    }
    va_list ap;
    va_start(ap, want);
    vsnprintf(h->want, sizeof(h->want), want, ap);
    va_end(ap);
    *t = (struct text){0};
}

/* The good text with the first @from replaced by @to (@to_len bytes: it may hold NULs). */
static void edit_n(struct text *t, const char *from, const char *to, size_t to_len)
{
    const char *p = strstr(good, from);
    if (!p)
        fail_msg("'%s' is not in the good topology", from);
    *t = (struct text){0};
    t_add(t, good, (size_t)(p - good));
    t_add(t, to, to_len);
    t_add(t, p + strlen(from), strlen(p + strlen(from)));
}

static void edit(struct text *t, const char *from, const char *to)
{
    edit_n(t, from, to, strlen(to));
}

/* Two edits: @from1 by @to1, then, after it, @from2 by @to2. */
static void edit2(struct text *t, const char *from1, const char *to1, const char *from2,
                  const char *to2)
{
    edit(t, from1, to1);
    const char *p = strstr(t->s + (strstr(good, from1) - good), from2);
    if (!p)
        fail_msg("'%s' does not follow '%s'", from2, from1);
    struct text u = {0};
    t_add(&u, t->s, (size_t)(p - t->s));
    t_add(&u, to2, strlen(to2));
    t_add(&u, p + strlen(from2), strlen(p + strlen(from2)));
    free(t->s);
    *t = u;
}

/* Replace @from by @to in the good text; the error is at the @nth @at, reads @want. */
#define CASE(name, from, to, at, nth, ...)                                                         \
    do {                                                                                           \
        struct text t_;                                                                            \
        edit(&t_, from, to);                                                                       \
        add(name, &t_, at, nth, __VA_ARGS__);                                                      \
    } while (0)

static void nesting_cases(void)
{
    struct text t = {0};
    /* 100 flow sequences deep as a backend argument: refused at the 65th */
    t_printf(&t, "%.*s", (int)(strstr(good, "args: {output_bytes: 64}") - good), good);
    t_printf(&t, "args: {x: ");
    for (int i = 0; i < 100; i++)
        t_add(&t, "[", 1);
    for (int i = 0; i < 100; i++)
        t_add(&t, "]", 1);
    t_printf(&t, "}%s",
             strstr(good, "args: {output_bytes: 64}") + strlen("args: {output_bytes: 64}"));
    add("100 nested flow sequences", &t, NULL, 0, "nesting deeper than 64 levels");
    /* 80 levels of block mappings */
    t = (struct text){0};
    t_printf(&t, "%s", good);
    t_printf(&t, "extra:\n");
    for (int i = 1; i < 80; i++)
        t_printf(&t, "%*sk%d:\n", i, "", i);
    t_printf(&t, "%*sleaf: 1\n", 80, "");
    add("80 nested block mappings", &t, NULL, 0, "nesting deeper than 64 levels");
    /* a million '[': refused at the 65th, not parsed to the end */
    t = (struct text){0};
    t_printf(&t, "gpus: {count: 1}\npipelines: ");
    for (int i = 0; i < 1000000; i++)
        t_add(&t, "[", 1);
    add("a million unclosed '['", &t, NULL, 0, "nesting deeper than 64 levels");
}

static void number_cases(void)
{
    CASE("count of 30 digits", "count: 2", "count: 999999999999999999999999999999", "9999", 1,
         "count: expected an integer, got '999999999999999999999999999999'");
    CASE("count 1025", "count: 2", "count: 1025", "1025", 1,
         "count: 1025 is out of range [1, 1024]");
    CASE("count -1", "count: 2", "count: -1", "-1", 1, "count: -1 is out of range [1, 1024]");
    CASE("count 0x10", "count: 2", "count: 0x10", "0x10", 1,
         "count: expected an integer, got '0x10'");
    CASE("accuracy 1e400", "accuracy: 80", "accuracy: 1e400", "1e400", 1,
         "accuracy: expected a number, got '1e400'");
    CASE("accuracy nan", "accuracy: 80", "accuracy: nan", "nan", 1,
         "accuracy: expected a number, got 'nan'");
    CASE("accuracy .nan", "accuracy: 80", "accuracy: .nan", ".nan", 1,
         "accuracy: expected a number, got '.nan'");
    CASE("slo_ms inf", "slo_ms: 100", "slo_ms: inf", "slo_ms: |inf", 1,
         "slo_ms: expected a number, got 'inf'");
    CASE("slo_ms -.inf", "slo_ms: 100", "slo_ms: -.inf", "-.inf", 1,
         "slo_ms: expected a number, got '-.inf'");
    CASE("slo_ms 1e308", "slo_ms: 100", "slo_ms: 1e308", "1e308", 1,
         "slo_ms: 1e+308 is out of range (0, 3.6e+06]");
    CASE("latency infinity", "latency_ms: [5, 10]", "latency_ms: [5, infinity]", "infinity", 1,
         "latency_ms: expected a number, got 'infinity'");
    CASE("latency 1e308", "latency_ms: [5, 10]", "latency_ms: [5, 1e308]", "1e308", 1,
         "latency_ms: 1e+308 is out of range [1e-06, 3.6e+06]");
    CASE("latency -0", "latency_ms: [5, 10]", "latency_ms: [-0, 10]", "-0", 1,
         "latency_ms: latency must be positive, got -0 ms");
    CASE("memory_mb 1e10", "memory_mb: 16384", "memory_mb: 1e10", "1e10", 1,
         "memory_mb: 1e+10 is out of range (0, 1e+09]");
    CASE("fan-out 1e9", "fanout: {b: 2, c: 1}", "fanout: {b: 1e9, c: 1}", "1e9", 1,
         "b: 1e+09 is out of range [0, 10000]");
    CASE("interval_ms NaN", "interval_ms: 500", "interval_ms: NaN", "NaN", 1,
         "interval_ms: expected a number, got 'NaN'");
    CASE("max_inflight 2^64", "max_inflight: 64", "max_inflight: 18446744073709551616", "1844", 1,
         "max_inflight: expected an integer, got '18446744073709551616'");
}

static void string_cases(void)
{
    struct text t;
    edit_n(&t, "- name: a2", "- name: \"a2\\0b\"", 15);
    add("NUL escape in a variant name", &t, "\"a2", 1, "name: \"a2\\0b\" contains a NUL byte");
    edit_n(&t, "- name: a2", "- name: a2\0b", 12);
    add("a raw NUL byte", &t, NULL, 0, "YAML syntax error");
    edit(&t, "- name: a2", "- name: \"a2\\x1b[2J\"");
    add("an escape sequence in a name", &t, "\"a2", 1,
        "name: 'a2?[2J': names use letters, digits, '-', '_' and '.' only"); /* shown as ? */
    edit(&t, "- name: a2", "- name: a2\xff\xfe");
    add("invalid UTF-8", &t, NULL, 0, "YAML syntax error");
    edit(&t, "  count: 2\n", "\tcount: 2\n");
    add("a tab for indentation", &t, NULL, 0, "YAML syntax error");
    char name[200];
    memset(name, 'n', 100);
    name[100] = '\0';
    char to[256];
    snprintf(to, sizeof(to), "- name: %s", name);
    edit(&t, "- name: a2", to);
    add("a name of 100 characters", &t, "nnnn", 1, "name: longer than 63 characters");
    static char path[400];
    memset(path, 'd', sizeof(path) - 1);
    path[0] = '/';
    char big[512];
    snprintf(big, sizeof(big), "max_output_bytes: 4096\n            backend: %s.so", path);
    edit(&t, "max_output_bytes: 4096", big);
    add("a backend path of 402 characters", &t, "/ddd", 1, "backend: longer than 255 characters");
    /* a 1 MiB task input description: past the 64 KiB string pool */
    t = (struct text){0};
    const char *at = strstr(good, "      - name: b\n");
    t_add(&t, good, (size_t)(at - good));
    t_printf(&t, "      - name: b\n        input: ");
    for (int i = 0; i < (1 << 20) / 64; i++)
        t_printf(&t, "%s", "a-long-description-of-the-input-of-this-task-that-goes-on-and-o ");
    t_printf(&t, "\n%s", at + strlen("      - name: b\n"));
    add("a task input of 1 MiB", &t, "a-long", 1,
        "args: backend arguments and input descriptions pass 65536 bytes in all");
    /* a 300 KiB unknown key: explicit ("? key"), and plain, which YAML caps at 1024 */
    for (int plain = 0; plain < 2; plain++) {
        t = (struct text){0};
        t_printf(&t, "%s%s", good, plain ? "" : "? ");
        for (int i = 0; i < 300 * 1024 / 32; i++)
            t_add(&t, "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk", 32);
        t_printf(&t, "%s: 1\n", plain ? "" : "\n");
        if (plain)
            add("a plain key of 300 KiB", &t, NULL, 0, "YAML syntax error");
        else
            add("an explicit key of 300 KiB", &t, "kkkk", 1, "kkkkkkkkkkkkkkkk");
    }
}

static void structure_cases(void)
{
    struct text t = {0};
    edit2(&t, "      - name: b\n", "      - name: b\n        children: [a]\n", "latency_ms: [2]}",
          "latency_ms: [2], fanout: {a: 1}}");
    add("a two-task cycle", &t, "children: |[a]", 1,
        "children: task 'b' closes a cycle: a pipeline must be a DAG");
    CASE("a self-loop", "children: [b, c]", "children: [a, b, c]", "children: |[a, b, c]", 1,
         "children: task 'a' closes a cycle: a pipeline must be a DAG");
    edit2(&t, "      - name: b\n", "      - name: b\n        children: [c]\n", "latency_ms: [2]}",
          "latency_ms: [2], fanout: {c: 1}}");
    char *two = strndup(t.s, t.n);
    assert_non_null(two);
    free(t.s);
    t = (struct text){0};
    const char *c1 = strstr(two, "      - name: c\n");
    assert_non_null(c1);
    t_add(&t, two, (size_t)(c1 - two));
    t_printf(&t, "      - name: c\n        children: [a]\n");
    const char *rest = c1 + strlen("      - name: c\n");
    const char *lat = strstr(rest, "latency_ms: [3]}");
    assert_non_null(lat);
    t_add(&t, rest, (size_t)(lat - rest));
    t_printf(&t, "latency_ms: [3], fanout: {a: 1}}%s", lat + strlen("latency_ms: [3]}"));
    free(two);
    add("a three-task cycle", &t, "children: |[a]", 1,
        "children: task 'c' closes a cycle: a pipeline must be a DAG");
    CASE("a child listed twice", "children: [b, c]", "children: [b, c, b]", "b]", 1,
         "children: child task 'b' listed twice");
    CASE("an unknown child", "children: [b, c]", "children: [b, c, zz]", "zz", 1,
         "children: unknown child task 'zz' of task 'a'");
    CASE("an unknown top-level key", "planner:\n", "gpu: {count: 1}\nplanner:\n", "gpu:", 1,
         "gpu: unknown key in the top level");
    CASE("an unknown variant key", "accuracy: 80", "acuracy: 80", "acuracy", 1,
         "acuracy: unknown key in variant");
    CASE("an unknown frontend key", "max_inflight: 64", "max_conns: 64", "max_conns", 1,
         "max_conns: unknown key in frontend");
    CASE("a duplicate pipeline key", "    slo_ms: 100\n", "    slo_ms: 100\n    slo_ms: 90\n",
         "slo_ms", 2, "slo_ms: duplicate key in pipeline");
    CASE("a duplicate variant name", "- name: a2", "- name: a1", "- |name: a1", 2,
         "name: duplicate variant name 'a1' in task 'a'");
    CASE("a duplicate task name", "      - name: c\n", "      - name: b\n", "name: |b\n", 2,
         "name: duplicate task name 'b'");
    CASE("a mapping as a key", "  count: 2\n", "  ? [x]\n  : 1\n  count: 2\n", NULL, 0,
         "mapping keys must be plain scalars");
    CASE("pipelines a scalar", "pipelines:\n", "pipelines: 3\nxpipelines:\n", "pipelines: |3", 1,
         "pipelines: expected a list, got a scalar");
    CASE("no pipelines", "pipelines:\n", "pipelines: []\nxpipelines:\n", "[]", 1,
         "pipelines: needs 1..4 pipelines, has 0");
    t = (struct text){0};
    t_printf(&t, "- gpus\n- pipelines\n");
    add("a list as the document", &t, "- gpus", 1, "top level: expected a mapping, got a list");
    t = (struct text){0};
    t_printf(&t, "just a scalar\n");
    add("a scalar as the document", &t, "just", 1, "top level: expected a mapping, got a scalar");
    t = (struct text){0};
    t_printf(&t, "# nothing but a comment\n");
    add("an empty document", &t, NULL, 0, "empty document");
}

static void alias_cases(void)
{
    /* the billion laughs: nine levels of ten aliases each, a billion 'lol's once expanded */
    struct text t = {0};
    t_printf(&t, "%s", good);
    t_printf(&t, "x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for (int i = 1; i < 10; i++) {
        t_printf(&t, "x%d: &a%d [", i, i);
        for (int k = 0; k < 10; k++)
            t_printf(&t, "%s*a%d", k ? ", " : "", i - 1);
        t_printf(&t, "]\n");
    }
    add("the billion laughs", &t, "*a0", 1, "YAML aliases are not supported in topology files");
    CASE("a merge key", "          - name: a2\n",
         "          - &base {name: a0, accuracy: 1, batch_sizes: [1], latency_ms: [1],\n"
         "             fanout: {b: 1, c: 1}}\n"
         "          - <<: *base\n"
         "            name: a2\n",
         "*base", 1, "YAML aliases are not supported in topology files");
}

static void limit_cases(void)
{
    CASE("batch size 4097", "batch_sizes: [1, 4]", "batch_sizes: [1, 4097]", "4097", 1,
         "batch_sizes: batch size must be 1..4096, got 4097");
    CASE("batch size 2^40", "batch_sizes: [1, 4]", "batch_sizes: [1, 1099511627776]", "1099", 1,
         "batch_sizes: batch size must be 1..4096, got 1099511627776");
    CASE("batch size 0", "batch_sizes: [1, 4]", "batch_sizes: [0, 4]", "0, 4", 1,
         "batch_sizes: batch size must be 1..4096, got 0");
    CASE("batch sizes descending", "batch_sizes: [1, 4]", "batch_sizes: [4, 1]", "1]", 1,
         "batch_sizes: must be strictly ascending");
    /* 65 batch sizes (the most is 64, what the Loki artifact profiles), then 100000 */
    struct text t = {0};
    const char *at = strstr(good, "batch_sizes: [1, 4]");
    t_add(&t, good, (size_t)(at - good));
    t_printf(&t, "batch_sizes: [");
    for (int i = 1; i <= 65; i++)
        t_printf(&t, "%s%d", i > 1 ? ", " : "", i);
    t_printf(&t, "]%s", at + strlen("batch_sizes: [1, 4]"));
    add("65 batch sizes", &t, "[1, 2", 1, "batch_sizes: needs 1..64 entries, has 65");
    t = (struct text){0};
    t_add(&t, good, (size_t)(at - good));
    t_printf(&t, "batch_sizes: [");
    for (int i = 1; i <= 100000; i++)
        t_printf(&t, "%s%d", i > 1 ? ", " : "", i);
    t_printf(&t, "]%s", at + strlen("batch_sizes: [1, 4]"));
    add("100000 batch sizes", &t, "[1, 2", 1, "batch_sizes: needs 1..64 entries, has 100000");
    CASE("a latency row too short", "latency_ms: [5, 10]", "latency_ms: [5]", "[5]", 1,
         "latency_ms: has 1 entries but batch_sizes has 2");
    CASE("max_output_bytes 0", "max_output_bytes: 4096", "max_output_bytes: 0",
         "max_output_bytes: |0", 1, "max_output_bytes: 0 is out of range [1, 2.68435e+08]");
    CASE("max_output_bytes 256 MiB + 1", "max_output_bytes: 4096", "max_output_bytes: 268435457",
         "2684", 1, "max_output_bytes: 2.68435e+08 is out of range [1, 2.68435e+08]");
    CASE("max_output_bytes -1", "max_output_bytes: 4096", "max_output_bytes: -1", "-1", 1,
         "max_output_bytes: -1 is out of range [1, 2.68435e+08]");
    CASE("max_output_bytes 1.5", "max_output_bytes: 4096", "max_output_bytes: 1.5", "1.5", 1,
         "max_output_bytes: expected an integer, got '1.5'");
    /* args: 33 entries (the most is 32), a list for a value, a key twice, 200 KiB in all */
    t = (struct text){0};
    at = strstr(good, "args: {output_bytes: 64}");
    t_add(&t, good, (size_t)(at - good));
    t_printf(&t, "args: {");
    for (int i = 0; i < 33; i++)
        t_printf(&t, "%sk%d: %d", i ? ", " : "", i, i);
    t_printf(&t, "}%s", at + strlen("args: {output_bytes: 64}"));
    add("args with 33 entries", &t, "{k0", 1, "args: has 33 entries, at most 32");
    CASE("an args value that is a list", "args: {output_bytes: 64}", "args: {output_bytes: [64]}",
         "[64]", 1, "output_bytes: expected a scalar, got a list");
    CASE("an args key twice", "args: {output_bytes: 64}",
         "args: {output_bytes: 64, output_bytes: 1}", "output_bytes", 2,
         "output_bytes: duplicate key in args");
    t = (struct text){0};
    t_add(&t, good, (size_t)(at - good));
    t_printf(&t, "args: {");
    for (int i = 0; i < 32; i++) {
        t_printf(&t, "%sk%d: ", i ? ", " : "", i);
        for (int k = 0; k < 100; k++)
            t_printf(&t, "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv");
    }
    t_printf(&t, "}%s", at + strlen("args: {output_bytes: 64}"));
    add("args of 200 KiB", &t, "k10: |v", 1,
        "args: backend arguments and input descriptions pass 65536 bytes in all");
    CASE("17 allowed uids", "max_inflight: 64",
         "max_inflight: 64\n  allowed_uids: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, "
         "16, 17]",
         "17]", 1, "allowed_uids: more than 16 uids");
    CASE("uid 2^32", "max_inflight: 64", "max_inflight: 64\n  allowed_uids: [4294967296]", "4294",
         1, "allowed_uids: 4.29497e+09 is out of range [0, 4.29497e+09]");
    CASE("mode 0999", "max_inflight: 64", "max_inflight: 64\n  mode: \"0999\"", "\"0999", 1,
         "mode: expected an octal file mode such as \"0660\", got '0999'");
    CASE("max_payload_bytes 1 GiB", "max_inflight: 64",
         "max_inflight: 64\n  max_payload_bytes: 1073741824", "1073", 1,
         "max_payload_bytes: 1.07374e+09 is out of range [1, 2.68435e+08]");
    CASE(
        "five pipelines", "pipelines:\n",
        "pipelines:\n  - {name: q1, slo_ms: 9, tasks: [{name: t, variants: [{name: v, accuracy: 1, "
        "batch_sizes: [1], latency_ms: [1]}]}]}\n"
        "  - {name: q2, slo_ms: 9, tasks: [{name: t, variants: [{name: v, accuracy: 1, "
        "batch_sizes: [1], latency_ms: [1]}]}]}\n"
        "  - {name: q3, slo_ms: 9, tasks: [{name: t, variants: [{name: v, accuracy: 1, "
        "batch_sizes: [1], latency_ms: [1]}]}]}\n"
        "  - {name: q4, slo_ms: 9, tasks: [{name: t, variants: [{name: v, accuracy: 1, "
        "batch_sizes: [1], latency_ms: [1]}]}]}\n",
        "  |- {name: q1", 1, "pipelines: needs 1..4 pipelines, has 5");
    /* 17 tasks in a chain */
    t = (struct text){0};
    t_printf(&t, "gpus: {count: 1}\npipelines:\n  - name: long\n    slo_ms: 1000\n    tasks:\n");
    for (int i = 0; i < 17; i++) {
        t_printf(&t, "      - {name: t%d, ", i);
        if (i < 16)
            t_printf(&t, "children: [t%d], ", i + 1);
        if (i < 16)
            t_printf(&t,
                     "variants: [{name: v, accuracy: 1, batch_sizes: [1], latency_ms: [1], "
                     "fanout: {t%d: 1}}]}\n",
                     i + 1);
        else
            t_printf(&t,
                     "variants: [{name: v, accuracy: 1, batch_sizes: [1], latency_ms: [1]}]}\n");
    }
    add("17 tasks", &t, "- {name: t0", 1, "tasks: needs 1..16 tasks, has 17");
    /* a static plan for a pipeline that does not exist */
    CASE("a static plan for nothing", "  interval_ms: 500\n",
         "  interval_ms: 500\n  policy: static\n  static_plan:\n"
         "    - {pipeline: nope, task: a, variant: a1}\n",
         "nope", 1, "pipeline: unknown pipeline 'nope'");
}

static void build_table(void)
{
    nesting_cases();
    number_cases();
    string_cases();
    structure_cases();
    alias_cases();
    limit_cases();
}

/* ---- checking them -------------------------------------------------------------------------- */

/* True when @err holds a line "@file:L:C: @want..." with L:C as the case says (any when 0). */
static bool names_it(const char *err, const char *file, const struct hostile *h)
{
    size_t fl = strlen(file);
    for (const char *l = err; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
        if (strncmp(l, file, fl) || l[fl] != ':')
            continue;
        int line, col, n = 0;
        if (sscanf(l + fl, ":%d:%d: %n", &line, &col, &n) != 2 || n == 0)
            continue;
        if (h->line && (line != h->line || col != h->col))
            continue;
        if (!strncmp(l + fl + n, h->want, strlen(h->want)))
            return true;
    }
    return false;
}

/* Run lokid on @file; its exit status (wait status), its stderr into @out. */
static int run_lokid(const char *file, char *out, size_t cap)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(p[1], 2);
        close(p[0]);
        close(p[1]);
        execl(loki_test_bin("bin/lokid"), "lokid", "--topology", file, "--socket",
              loki_test_tmp_path("never.sock"), (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    size_t n = 0;
    for (;;) {
        ssize_t k = read(p[0], out + n, cap - 1 - n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        n += (size_t)k;
        if (n == cap - 1) { /* keep reading, drop the rest */
            char sink[4096];
            while (read(p[0], sink, sizeof(sink)) > 0)
                ;
            break;
        }
    }
    out[n] = '\0';
    close(p[0]);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return st;
}

static void test_hostile_topologies(void **state)
{
    (void)state;
    /* the base is valid: every refusal below is the edit's */
    struct loki_topology *t = NULL;
    struct loki_config cfg;
    static char err[65536];
    assert_int_equal(loki_config_parse(good, strlen(good), "good.yaml", &t, &cfg, err, sizeof(err)),
                     0);
    /* and loads as written: a1's args are the first strings of the file (they were read one
     * string off, from the pool's empty string at offset 0: key "", value "output_bytes") */
    const struct loki_variant *a1 = &t->pipelines[0].tasks[0].variants[0];
    assert_int_equal(a1->n_args, 1);
    assert_string_equal(t->strings + a1->args_off, "output_bytes");
    assert_string_equal(t->strings + a1->args_off + strlen("output_bytes") + 1, "64");
    free(t);
    build_table();
    fprintf(stderr, "%d hostile topologies\n", n_cases);
    assert_true(n_cases >= 40);
    static char out[65536];
    int failed = 0;
    for (int i = 0; i < n_cases; i++) {
        struct hostile *h = &cases[i];
        char fname[32];
        snprintf(fname, sizeof(fname), "hostile-%02d.yaml", i);
        const char *path = loki_test_tmp_path(fname);
        assert_non_null(path);
        char file[512];
        snprintf(file, sizeof(file), "%s", path);
        FILE *f = fopen(file, "w");
        assert_non_null(f);
        assert_int_equal(fwrite(h->text, 1, h->len, f), h->len);
        assert_int_equal(fclose(f), 0);
        /* in this process */
        t = NULL;
        int rc = loki_config_load(file, &t, &cfg, err, sizeof(err));
        bool ok = rc == LOKI_ETOPOLOGY && t == NULL && names_it(err, file, h);
        free(t);
        /* and by lokid, which must exit 2 saying the same */
        int st = run_lokid(file, out, sizeof(out));
        bool lokid_ok = WIFEXITED(st) && WEXITSTATUS(st) == 2 && names_it(out, file, h);
        if (!ok || !lokid_ok) {
            failed++;
            fprintf(stderr, "case '%s' (%s): wanted %d:%d: %s\n", h->name, file, h->line, h->col,
                    h->want);
            if (!ok)
                fprintf(stderr, "  loader: rc %d:\n%.2000s\n", rc, err);
            if (!lokid_ok)
                fprintf(stderr, "  lokid: %s %d:\n%.2000s\n", WIFEXITED(st) ? "exit" : "signal",
                        WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), out);
        }
        free(h->text);
        unlink(file);
    }
    assert_int_equal(failed, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_topologies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
