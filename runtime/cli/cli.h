/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Subcommands of the `loki` tool. Each lives in its own runtime/cli/cmd_*.c,
 * takes argc/argv starting at the subcommand's own name (argv[0] = "plan"),
 * prints to stdout/stderr and returns the process exit status.
 */
#ifndef LOKI_CLI_H
#define LOKI_CLI_H

int loki_cli_topology(int argc, char **argv); /* topology check | import-loki */
int loki_cli_plan(int argc, char **argv);     /* plan --topology F --demand QPS */
int loki_cli_capacity(int argc, char **argv); /* capacity --topology F */
int loki_cli_load(int argc, char **argv);     /* load --socket S --trace CSV */
int loki_cli_replay(int argc, char **argv);   /* replay --topology F --trace CSV */
int loki_cli_profile(int argc, char **argv);  /* profile --topology F --variant V */
int loki_cli_status(int argc, char **argv);   /* status --socket S [--json|--live|--ready] */
int loki_cli_metrics(int argc, char **argv);  /* metrics --socket S (Prometheus text) */

#endif
