/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `loki`: the operator's tool. A table of subcommands, each implemented in
 * its own cmd_*.c; this file only dispatches and prints usage.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

struct subcommand {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *usage;
};

static const struct subcommand cmds[] = {
    {"topology", loki_cli_topology,
     "topology check FILE...            validate topology files and summarise them\n"
     "  topology import-loki ...        see tools/import_loki.py"},
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
     "load --socket S --trace CSV [--rate-scale X] [--time-scale Y] [--seed N] [--json] ...\n"
     "                                  replay a demand trace against lokid"},
#endif
#ifdef LOKI_HAVE_CMD_STATUS
    {"status", loki_cli_status,
     "status --socket S [--json | --live | --ready]   plan, demand, accuracy, last minute"},
#endif
#ifdef LOKI_HAVE_CMD_METRICS
    {"metrics", loki_cli_metrics, "metrics --socket S                 Prometheus text exposition"},
#endif
#ifdef LOKI_HAVE_CMD_PROFILE
    {"profile", loki_cli_profile,
     "profile --topology F --variant V [--batches B,..] [--shares 1,0.5,..] [--out F2]\n"
     "                                  measure tau(b, s) on the GPU into a topology copy"},
#endif
};

static void usage(FILE *f)
{
    fprintf(f, "usage: loki COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        fprintf(f, "  %s\n", cmds[i].usage);
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (!strcmp(argv[1], cmds[i].name))
            return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "loki: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
