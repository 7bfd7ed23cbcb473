/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `loki`: the operator's tool. A table of subcommands, each implemented in
 * its own cmd_*.c; this file only dispatches and prints usage and the version.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "loki/version.h"

struct subcommand {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *usage;
};

static const struct subcommand cmds[] = {
    {"topology", loki_cli_topology,
     "topology check FILE...            validate topology files and summarise them\n"
     "  topology import-loki ...        the Loki artifact's profiles to a topology (--help)"},
#ifdef LOKI_HAVE_CMD_PLAN
    {"plan", loki_cli_plan,
     "plan --topology F --demand QPS [--policy P] [--json]   print the plan for a demand"},
    {"capacity", loki_cli_capacity,
     "capacity --topology F [--policy P] [--accuracy-floor A] [--json]   largest demand served"},
#endif
#ifdef LOKI_HAVE_CMD_REPLAY
    {"replay", loki_cli_replay,
     "replay --topology F --trace CSV [--policy P[,P]] [--json] [--csv OUT] [--plot OUT.svg]   "
     "replay a trace"},
#endif
#ifdef LOKI_HAVE_CMD_LOAD
    {"load", loki_cli_load,
     "load [--socket S] --trace CSV [--rate-scale X] [--time-scale Y] [--seed N] [--json] ...\n"
     "                                  replay a demand trace against lokid"},
#endif
#ifdef LOKI_HAVE_CMD_STATUS
    {"status", loki_cli_status,
     "status [--socket S] [--json | --live | --ready]   plan, demand, accuracy, last minute"},
#endif
#ifdef LOKI_HAVE_CMD_METRICS
    {"metrics", loki_cli_metrics, "metrics [--socket S]               Prometheus text exposition"},
#endif
#ifdef LOKI_HAVE_CMD_PROFILE
    {"profile", loki_cli_profile,
     "profile --topology F --variant V [--batches B,..] [--shares 1,0.5,..] [--out F2]\n"
     "                                  measure tau(b, s) on the GPU into a topology copy"},
#endif
};

static void usage(FILE *f)
{
    fprintf(f, "usage: loki COMMAND [ARGS]   (loki COMMAND --help for its options)\n"
               "       loki --version | --help\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        fprintf(f, "  %s\n", cmds[i].usage);
    fprintf(f, "\nload, status and metrics connect to --socket, else $LOKI_SOCKET, else the\n"
               "frontend.socket of --topology F, else /run/loki/loki.sock.\n"
               "exit status: 0 ok, 1 failure, 2 usage error\n");
}

static const struct subcommand *find(const char *name)
{
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (!strcmp(name, cmds[i].name))
            return &cmds[i];
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *a = argv[1];
    if (!strcmp(a, "-h") || !strcmp(a, "--help") || (!strcmp(a, "help") && argc == 2)) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(a, "--version") || !strcmp(a, "version")) {
        printf("loki %s%s%s%s\n", LOKI_VERSION, LOKI_GIT_DESCRIBE[0] ? " (git " : "",
               LOKI_GIT_DESCRIBE, LOKI_GIT_DESCRIBE[0] ? ")" : "");
        return 0;
    }
    if (!strcmp(a, "help")) { /* loki help COMMAND: that command's --help */
        const struct subcommand *sc = find(argv[2]);
        if (!sc) {
            fprintf(stderr, "loki: unknown command '%s' (try --help)\n", argv[2]);
            return 2;
        }
        char *hargv[] = {argv[2], "--help", NULL};
        return sc->fn(2, hargv);
    }
    if (a[0] == '-') {
        fprintf(stderr, "loki: unknown option '%s' (try --help)\n", a);
        return 2;
    }
    const struct subcommand *sc = find(a);
    if (!sc) {
        fprintf(stderr, "loki: unknown command '%s' (try --help)\n", a);
        return 2;
    }
    return sc->fn(argc - 1, argv + 1);
}
