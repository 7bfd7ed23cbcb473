/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `loki metrics --socket S`: print lokid's metrics in the Prometheus text
 * exposition format, the same text lokid serves on --metrics-port, for hosts
 * where no TCP port may be opened (or for a quick look).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "loki/client.h"
#include "loki/error.h"

int loki_cli_metrics(int argc, char **argv)
{
    const char *sock = NULL;
    double timeout_ms = 2000;
    static const struct option lo[] = {{"socket", required_argument, 0, 's'},
                                       {"timeout", required_argument, 0, 't'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "s:t:h", lo, NULL)) != -1) {
        switch (c) {
        case 's':
            sock = optarg;
            break;
        case 't':
            timeout_ms = atof(optarg);
            break;
        case 'h':
            printf("usage: loki metrics --socket PATH [--timeout MS]\n");
            return 0;
        default:
            fprintf(stderr, "usage: loki metrics --socket PATH [--timeout MS]\n");
            return 2;
        }
    }
    if (!sock || optind != argc || !(timeout_ms > 0)) {
        fprintf(stderr, "usage: loki metrics --socket PATH [--timeout MS]\n");
        return 2;
    }
    struct loki_client_opts o = {.connect_timeout_ms = timeout_ms};
    struct loki_client *cl;
    int rc = loki_client_connect(sock, &o, &cl);
    if (rc) {
        fprintf(stderr, "loki metrics: cannot connect to %s: %s\n", sock, loki_strerror(rc));
        return 1;
    }
    char *text = NULL, err[256] = "";
    rc = loki_client_report(cl, LOKI_MSG_METRICS, "prometheus", timeout_ms, NULL, &text, err,
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
