/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `loki status --socket S [--json]`: ask a running lokid for its status
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

static void usage(FILE *f)
{
    fprintf(f, "usage: loki status --socket PATH [--json | --live | --ready] [--timeout MS]\n"
               "  --json      the report as one JSON object (for tools)\n"
               "  --live      exit 0 if lokid answers a ping, else 1 (liveness probe)\n"
               "  --ready     exit 0 if lokid is ready to serve, else 1 (readiness probe)\n"
               "  --timeout   how long to wait for lokid, ms (default 2000)\n");
}

int loki_cli_status(int argc, char **argv)
{
    const char *sock = NULL;
    bool json = false, live = false, ready = false;
    double timeout_ms = 2000;
    static const struct option lo[] = {{"socket", required_argument, 0, 's'},
                                       {"json", no_argument, 0, 'j'},
                                       {"live", no_argument, 0, 'l'},
                                       {"ready", no_argument, 0, 'r'},
                                       {"timeout", required_argument, 0, 't'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "s:jlrt:h", lo, NULL)) != -1) {
        switch (c) {
        case 's':
            sock = optarg;
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
            usage(stderr);
            return 2;
        }
    }
    if (!sock || optind != argc || json + live + ready > 1 || !(timeout_ms > 0)) {
        usage(stderr);
        return 2;
    }
    struct loki_client_opts o = {.connect_timeout_ms = timeout_ms};
    struct loki_client *cl;
    int rc = loki_client_connect(sock, &o, &cl);
    if (rc) {
        if (!live && !ready)
            fprintf(stderr, "loki status: cannot connect to %s: %s\n", sock, loki_strerror(rc));
        else
            printf("not %s: cannot connect to %s: %s\n", live ? "live" : "ready", sock,
                   loki_strerror(rc));
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
