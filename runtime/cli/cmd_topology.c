/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `loki topology check FILE...`: load each file, print the errors or a
 * human summary (tasks, variants, fastest and most accurate variant paths
 * with their batch-1 latency and accuracy) and warnings about what can never
 * be used. Exit 0 when all files load. `loki topology import-loki` runs the
 * importer, tools/import_loki.py.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "loki/planner.h"
#include "loki/topology.h"

/* Per-chain summary of one variant choice per task (fastest or most accurate). */
static void print_path(const struct loki_pipeline *p, const char *what, int which[])
{
    int chains[64][LOKI_MAX_TASKS], len[64];
    int n = loki_pipeline_chains(p, chains, len, 64);
    double worst = 0;
    printf("  %s path:\n", what);
    for (int c = 0; c < n; c++) {
        double ms = 0, acc = 1;
        printf("    ");
        for (int i = 0; i < len[c]; i++) {
            const struct loki_task *t = &p->tasks[chains[c][i]];
            const struct loki_variant *v = &t->variants[which[chains[c][i]]];
            ms += loki_variant_latency(v, 1, 1.0);
            acc *= v->accuracy / 100.0;
            printf("%s%s/%s", i ? " -> " : "", t->name, v->name);
        }
        printf("   %.1f ms at batch 1, accuracy %.1f\n", ms, acc * 100);
        if (ms > worst)
            worst = ms;
    }
    printf("    end to end: %.1f ms of the %.0f ms SLO\n", worst, p->slo_ms);
}

static void summarise(const struct loki_topology *t)
{
    printf("%s: ok\n", t->source);
    printf("  gpus: %d x %.0f MiB, share granularity %g, MPS clients %d; policy %s\n",
           t->gpus.count, t->gpus.mem_mb, t->gpus.share_granularity, t->gpus.mps_max_clients,
           loki_policy_name(t->planner.policy));
    for (int pi = 0; pi < t->n_pipelines; pi++) {
        const struct loki_pipeline *p = &t->pipelines[pi];
        int fastest[LOKI_MAX_TASKS], best[LOKI_MAX_TASKS];
        printf("pipeline %s: SLO %.0f ms, %d tasks, root %s\n", p->name, p->slo_ms, p->n_tasks,
               p->tasks[p->root].name);
        for (int ti = 0; ti < p->n_tasks; ti++) {
            const struct loki_task *tk = &p->tasks[ti];
            printf("  task %s (%d variants)%s", tk->name, tk->n_variants,
                   tk->n_children ? " -> " : "\n");
            for (int c = 0; c < tk->n_children; c++)
                printf("%s%s", p->tasks[tk->children[c]].name,
                       c + 1 < tk->n_children ? ", " : "\n");
            fastest[ti] = 0;
            for (int vi = 0; vi < tk->n_variants; vi++) {
                const struct loki_variant *v = &tk->variants[vi];
                double l1 = loki_variant_latency(v, 1, 1.0);
                if (l1 < loki_variant_latency(&tk->variants[fastest[ti]], 1, 1.0))
                    fastest[ti] = vi;
                printf("    %-24s acc %6.2f  %7.2f ms @b1  %7.2f ms @b%-3d  %zu share%s%s\n",
                       v->name, v->accuracy, l1, v->latency_ms[0][v->n_batches - 1],
                       v->batches[v->n_batches - 1], (size_t)v->n_shares,
                       v->n_shares > 1 ? "s" : "", v->share_scaled ? " (scaled)" : "");
            }
            best[ti] = loki_task_best_variant(tk);
        }
        print_path(p, "fastest", fastest);
        print_path(p, "most accurate", best);
        if (p->n_path_acc)
            printf("  measured path-accuracy table: %d rows\n", p->n_path_acc);
    }
}

/*
 * Warnings on stderr, "FILE: warning: ...": every variant that can never be used and every
 * pipeline a policy cannot serve (loki_topology_lint()), and per-share latencies that were not
 * measured. Returns the number of warnings.
 */
static int warn(const struct loki_topology *t)
{
    int n = loki_topology_lint(t, NULL, 0);
    struct loki_lint *l = n > 0 ? calloc((size_t)n, sizeof(*l)) : NULL;
    if (l)
        loki_topology_lint(t, l, n);
    for (int i = 0; l && i < n; i++)
        fprintf(stderr, "%s: warning: %s\n", t->source, l[i].text);
    free(l);
    int derived = 0, formula = 0;
    char shares[128] = "";
    for (int p = 0; p < t->n_pipelines; p++)
        for (int k = 0; k < t->pipelines[p].n_tasks; k++)
            for (int v = 0; v < t->pipelines[p].tasks[k].n_variants; v++) {
                const struct loki_variant *va = &t->pipelines[p].tasks[k].variants[v];
                if (va->share_derived && !derived++) {
                    size_t u = 0;
                    for (int s = 1; s < va->n_shares && u < sizeof(shares); s++)
                        u += (size_t)snprintf(shares + u, sizeof(shares) - u, "%s%g",
                                              s > 1 ? ", " : "", va->shares[s]);
                }
                formula += va->share_scaled && !va->share_derived;
            }
    if (derived)
        fprintf(stderr,
                "%s: note: %d variant%s profiled on whole GPUs only: shares %s are NOT MEASURED; "
                "the planner assumes latency at share s = latency at share 1 / s (no gain from "
                "sharing). `loki profile --shares` measures them\n",
                t->source, derived, derived > 1 ? "s are" : " is", shares);
    if (formula)
        fprintf(stderr,
                "%s: note: %d variant%s per-share latencies marked share_scaled: derived by a "
                "formula, NOT MEASURED. `loki profile --shares` measures them\n",
                t->source, formula, formula > 1 ? "s have" : " has");
    return n;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loki topology check FILE...\n"
            "       loki topology import-loki ...\n"
            "  check            load and validate each topology file (every error at once, as\n"
            "                   file:line:column) and summarise it; exit 1 if any fails\n"
            "  import-loki      convert the Loki artifact's profiles into a topology\n"
            "                   (runs tools/import_loki.py; import-loki --help for its options)\n"
            "  -h, --help       this help\n");
}

/* getopt_long over @argv for a command that takes only -h/--help: -1 after --help (exit 0),
 * 2 on a bad option, 0 to go on with argv[optind...]. @stop: stop at the first non-option. */
static int help_only(const char *cmd, int argc, char **argv, bool stop)
{
    static const struct option lo[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    optind = 0; /* full re-initialisation: the two calls below use different orderings */
    opterr = 0;
    while ((c = getopt_long(argc, argv, stop ? "+:h" : ":h", lo, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return -1;
        }
        return loki__cli_bad_option(cmd, c, argv);
    }
    return 0;
}

static int check(int argc, char **argv)
{
    int rc = help_only("topology check", argc, argv, false);
    if (rc)
        return rc < 0 ? 0 : rc;
    if (optind == argc)
        return loki__cli_usage_error("topology check", "no FILE given");
    int bad = 0;
    for (int i = optind; i < argc; i++) {
        struct loki_topology *t = NULL;
        char err[8192];
        if (loki_topology_load(argv[i], &t, err, sizeof(err))) {
            fprintf(stderr, "%s\n", err);
            bad = 1;
            continue;
        }
        summarise(t);
        warn(t);
        free(t);
    }
    return bad;
}

/*
 * The importer is tools/import_loki.py: installed under share/loki/tools next to bin/, else the
 * source tree's (a build tree's loki). $LOKI_IMPORT_LOKI names another.
 */
static int find_importer(char *path, size_t len)
{
    const char *env = getenv("LOKI_IMPORT_LOKI");
    if (env && *env) {
        snprintf(path, len, "%s", env);
        return access(path, R_OK) == 0 ? 0 : -1;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            snprintf(path, len, "%s/../share/loki/tools/import_loki.py", exe);
            if (access(path, R_OK) == 0)
                return 0;
        }
    }
#ifdef LOKI_SOURCE_TOOLS
    snprintf(path, len, "%s/import_loki.py", LOKI_SOURCE_TOOLS);
    if (access(path, R_OK) == 0)
        return 0;
#endif
    return -1;
}

/* `loki topology import-loki ARGS...`: python3 tools/import_loki.py ARGS... (it has --help). */
static int import_loki(int argc, char **argv)
{
    char path[PATH_MAX + 64];
    if (find_importer(path, sizeof(path)) < 0) {
        fprintf(stderr, "loki topology import-loki: cannot find import_loki.py (looked in "
                        "$LOKI_IMPORT_LOKI, share/loki/tools beside the loki binary, the source "
                        "tree)\n");
        return 1;
    }
    char **args = calloc((size_t)argc + 2, sizeof(*args));
    if (!args)
        return 1;
    args[0] = "python3";
    args[1] = path;
    for (int i = 1; i < argc; i++)
        args[i + 1] = argv[i];
    fflush(NULL);
    execvp(args[0], args);
    fprintf(stderr, "loki topology import-loki: cannot run python3: %s\n", strerror(errno));
    free(args);
    return 1;
}

int loki_cli_topology(int argc, char **argv)
{
    int rc = help_only("topology", argc, argv, true);
    if (rc)
        return rc < 0 ? 0 : rc;
    argc -= optind - 1; /* argv[0]: the action */
    argv += optind - 1;
    if (argc >= 2 && !strcmp(argv[1], "check"))
        return check(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "import-loki"))
        return import_loki(argc - 1, argv + 1);
    if (argc < 2)
        return loki__cli_usage_error("topology", "no action given (check FILE...)");
    return loki__cli_usage_error("topology", "unknown action '%s'", argv[1]);
}
