/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the subcommands share: one-line usage errors, and where a client
 * subcommand (load, status, metrics) connects and how it says it could not.
 * The socket order (--socket, $LOKI_SOCKET, the topology's frontend.socket,
 * the built-in default) is documented in docs/operator.md; keep them in step.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "loki/client.h"
#include "loki/error.h"
#include "loki/opt.h"
#include "loki/topology.h"

int loki__cli_bad_option(const char *cmd, int c, char **argv)
{
    char why[160];
    fprintf(stderr, "loki %s: %s (try --help)\n", cmd, loki_opt_error(c, argv, why, sizeof(why)));
    return 2;
}

int loki__cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "loki %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (try --help)\n");
    return 2;
}

const char loki__cli_socket_help[] =
    "  --socket PATH    lokid's socket; without it the first of: $LOKI_SOCKET (when set and\n"
    "                   not empty), frontend.socket of --topology F, /run/loki/loki.sock\n"
    "  --topology F     the topology lokid serves: only its frontend.socket is read\n";

int loki__cli_socket(const char *cmd, const char *flag, const char *topology, char *buf, size_t len)
{
    const char *env = getenv("LOKI_SOCKET");
    if (flag) {
        snprintf(buf, len, "%s", flag);
        return 0;
    }
    if (env && env[0]) {
        snprintf(buf, len, "%s", env);
        return 0;
    }
    struct loki_config cfg;
    loki_config_defaults(&cfg);
    if (topology) {
        struct loki_topology *t = NULL;
        char err[4096] = "";
        int rc = loki_config_load(topology, &t, &cfg, err, sizeof(err));
        free(t);
        if (rc) {
            fprintf(stderr, "loki %s: cannot load topology %s: %s\n%s%s", cmd, topology,
                    loki_strerror(rc), err, err[0] && err[strlen(err) - 1] != '\n' ? "\n" : "");
            return 1;
        }
    }
    snprintf(buf, len, "%s", cfg.frontend.socket_path);
    return 0;
}

char *loki__cli_connect_error(const char *path, int rc, char *buf, size_t len)
{
    snprintf(buf, len, "cannot connect to %s: %s (is lokid running at %s?)", path,
             loki_strerror(rc), path);
    return buf;
}

int loki__cli_connect(const char *cmd, const char *path, const struct loki_client_opts *opts,
                      struct loki_client **out)
{
    int rc = loki_client_connect(path, opts, out);
    if (rc < 0) {
        char why[2 * 4096 + 128];
        fprintf(stderr, "loki %s: %s\n", cmd, loki__cli_connect_error(path, rc, why, sizeof(why)));
    }
    return rc;
}
