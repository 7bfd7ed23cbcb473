/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `loki metrics [--socket S]`: print lokid's metrics in the Prometheus text
 * exposition format, the same text lokid serves on --metrics-port, for hosts
 * where no TCP port may be opened (or for a quick look).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "loki/client.h"
#include "loki/error.h"
#include "loki/model.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loki metrics [--socket PATH | --topology F] [--timeout MS]\n"
            "  lokid's metrics in the Prometheus text exposition format\n"
            "  --timeout MS     how long to wait for lokid (default 2000)\n"
            "%s"
            "  -h, --help       this help\n",
            loki__cli_socket_help);
}

int loki_cli_metrics(int argc, char **argv)
{
    const char *sock_opt = NULL, *topology = NULL;
    double timeout_ms = 2000;
    static const struct option lo[] = {{"socket", required_argument, 0, 's'},
                                       {"topology", required_argument, 0, 'T'},
                                       {"timeout", required_argument, 0, 't'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":s:t:h", lo, NULL)) != -1) {
        switch (c) {
        case 's':
            sock_opt = optarg;
            break;
        case 'T':
            topology = optarg;
            break;
        case 't':
            timeout_ms = atof(optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            return loki__cli_bad_option("metrics", c, argv);
        }
    }
    if (optind != argc)
        return loki__cli_usage_error("metrics", "unexpected argument '%s'", argv[optind]);
    if (!(timeout_ms > 0))
        return loki__cli_usage_error("metrics", "--timeout wants milliseconds > 0");
    char sock[LOKI_PATH_MAX];
    if (loki__cli_socket("metrics", sock_opt, topology, sock, sizeof(sock)))
        return 1;
    struct loki_client_opts o = {.connect_timeout_ms = timeout_ms};
    struct loki_client *cl;
    if (loki__cli_connect("metrics", sock, &o, &cl))
        return 1;
    char *text = NULL, err[256] = "";
    int rc = loki_client_report(cl, LOKI_MSG_METRICS, "prometheus", timeout_ms, NULL, &text, err,
                                sizeof(err));
    int status = 0;
    if (rc || !text) {
        fprintf(stderr, "loki metrics: %s%s%s\n", rc ? loki_strerror(rc) : "empty report",
                err[0] ? ": " : "", err);
        status = 1;
    } else {
        fputs(text, stdout);
    }
    free(text);
    loki_client_close(cl);
    return status;
}
