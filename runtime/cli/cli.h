/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Subcommands of the `loki` tool. Each lives in its own runtime/cli/cmd_*.c,
 * takes argc/argv starting at the subcommand's own name (argv[0] = "plan"),
 * prints to stdout/stderr and returns the process exit status: 0 ok, 1
 * failure, 2 usage (a bad option, said on one line with "try --help").
 * Every subcommand parses with getopt_long() and answers -h/--help on stdout.
 */
#ifndef LOKI_CLI_H
#define LOKI_CLI_H

#include <stddef.h>

struct loki_client;
struct loki_client_opts;

int loki_cli_topology(int argc, char **argv); /* topology check | import-loki */
int loki_cli_plan(int argc, char **argv);     /* plan --topology F --demand QPS */
int loki_cli_capacity(int argc, char **argv); /* capacity --topology F */
int loki_cli_load(int argc, char **argv);     /* load [--socket S] --trace CSV */
int loki_cli_replay(int argc, char **argv);   /* replay --topology F --trace CSV */
int loki_cli_profile(int argc, char **argv);  /* profile --topology F --variant V */
int loki_cli_status(int argc, char **argv);   /* status [--socket S] [--json|--live|--ready] */
int loki_cli_metrics(int argc, char **argv);  /* metrics [--socket S] (Prometheus text) */

/*
 * The usage error for the option getopt_long() just rejected (@c is '?' or ':';
 * subcommands set opterr = 0 and start their optstring with ':'):
 * "loki CMD: unknown option '--x' (try --help)" on stderr, one line. Returns 2.
 */
int loki__cli_bad_option(const char *cmd, int c, char **argv);

/* Any other usage error, one line on stderr with "(try --help)" appended. Returns 2. */
int loki__cli_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * The one-paragraph help text on where client subcommands connect, shared by
 * their --help (the order loki__cli_socket() applies).
 */
extern const char loki__cli_socket_help[];

/*
 * The socket a client subcommand connects to, first that applies: @flag (its
 * --socket), $LOKI_SOCKET when set and not empty, frontend.socket of @topology
 * (its --topology) when given, the built-in default (/run/loki/loki.sock, the
 * default of frontend.socket). Copies it into @buf (@len bytes).
 * Returns 0, or 1 after saying on stderr why @topology could not be loaded.
 */
int loki__cli_socket(const char *cmd, const char *flag, const char *topology, char *buf,
                     size_t len);

/*
 * loki_client_connect() to @path with @opts; on failure says on stderr
 * "loki CMD: cannot connect to PATH: REASON (is lokid running at PATH?)" and
 * returns the negative error. *@out as loki_client_connect().
 */
int loki__cli_connect(const char *cmd, const char *path, const struct loki_client_opts *opts,
                      struct loki_client **out);

/* The same message without the "loki CMD: " prefix, into @buf, for probes that print it. */
char *loki__cli_connect_error(const char *path, int rc, char *buf, size_t len);

#endif
