/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `loki status [--socket S] [--json]`: ask a running lokid for its status
 * report (the plan with variants, instances, batch sizes, shares, GPUs and
 * splits; demand; predicted and served accuracy; drops and violations over
 * the last minute) and print it. `--live` and `--ready` are health checks
 * for scripts and probes: exit 0 when lokid answers a ping / reports ready.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "loki/client.h"
#include "loki/error.h"
#include "loki/model.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loki status [--socket PATH | --topology F] [--json | --live | --ready]\n"
            "                   [--timeout MS]\n"
            "  --json           the report as one JSON object (for tools)\n"
            "  --live           exit 0 if lokid answers a ping, else 1 (liveness probe)\n"
            "  --ready          exit 0 if lokid is ready to serve, else 1 (readiness probe)\n"
            "  --timeout MS     how long to wait for lokid (default 2000)\n"
            "%s"
            "  -h, --help       this help\n",
            loki__cli_socket_help);
}

int loki_cli_status(int argc, char **argv)
{
    const char *sock_opt = NULL, *topology = NULL;
    bool json = false, live = false, ready = false;
    double timeout_ms = 2000;
    static const struct option lo[] = {
        {"socket", required_argument, 0, 's'}, {"topology", required_argument, 0, 'T'},
        {"json", no_argument, 0, 'j'},         {"live", no_argument, 0, 'l'},
        {"ready", no_argument, 0, 'r'},        {"timeout", required_argument, 0, 't'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":s:jlrt:h", lo, NULL)) != -1) {
        switch (c) {
        case 's':
            sock_opt = optarg;
            break;
        case 'T':
            topology = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'l':
            live = true;
            break;
        case 'r':
            ready = true;
            break;
        case 't':
            timeout_ms = atof(optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            return loki__cli_bad_option("status", c, argv);
        }
    }
    if (optind != argc)
        return loki__cli_usage_error("status", "unexpected argument '%s'", argv[optind]);
    if (json + live + ready > 1)
        return loki__cli_usage_error("status", "--json, --live and --ready exclude each other");
    if (!(timeout_ms > 0))
        return loki__cli_usage_error("status", "--timeout wants milliseconds > 0");
    char sock[LOKI_PATH_MAX];
    if (loki__cli_socket("status", sock_opt, topology, sock, sizeof(sock)))
        return 1;
    struct loki_client_opts o = {.connect_timeout_ms = timeout_ms};
    struct loki_client *cl;
    int rc;
    if (!live && !ready) {
        if (loki__cli_connect("status", sock, &o, &cl))
            return 1;
    } else if ((rc = loki_client_connect(sock, &o, &cl))) {
        char why[2 * LOKI_PATH_MAX + 128];
        /* probes answer on stdout, as their other outcomes */
        printf("not %s: %s\n", live ? "live" : "ready",
               loki__cli_connect_error(sock, rc, why, sizeof(why)));
        return 1;
    }
    int status = 0;
    if (live) {
        rc = loki_client_ping(cl, timeout_ms);
        printf("%s\n", rc ? "not live" : "live");
        status = rc ? 1 : 0;
    } else if (ready) {
        struct loki_reply st;
        rc = loki_client_status(cl, timeout_ms, &st);
        bool ok = rc == 0 && st.status == LOKI_STATUS_OK && st.ready;
        printf("%s%s\n", ok ? "ready" : "not ready", rc == 0 && st.draining ? " (draining)" : "");
        status = ok ? 0 : 1;
    } else {
        char *text = NULL, err[256] = "";
        rc = loki_client_report(cl, LOKI_MSG_STATUS, json ? "json" : "table", timeout_ms, NULL,
                                &text, err, sizeof(err));
        if (rc || !text) {
            fprintf(stderr, "loki status: %s%s%s\n", rc ? loki_strerror(rc) : "empty report",
                    err[0] ? ": " : "", err);
            status = 1;
        } else {
            fputs(text, stdout);
        }
        free(text);
    }
    loki_client_close(cl);
    return status;
}
