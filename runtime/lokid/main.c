/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lokid's command line. The same binary is also the worker process
 * (`lokid --worker ...`, spawned by the supervisor), so a deployment has one
 * executable to install and pin.
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loki/opt.h"
#include "loki/version.h"
#include "lokid.h"
#include "worker.h"

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: lokid --topology FILE [options]\n"
        "  --socket PATH          listen here instead of frontend.socket\n"
        "  --policy P             loki | inferline | proteus | static (overrides the file)\n"
        "  --initial-demand QPS   demand the first plan is solved for (default 10)\n"
        "  --fixed-plan           keep the initial plan (no re-planning)\n"
        "  --seed N               seed of the sim backends (default 1)\n"
        "  --arena-mb N           payload arena size, power of two (default 64)\n"
        "  --ready-fd FD          write \"ready\" to FD once serving\n"
        "  --quiet                log warnings and errors only (--log-level warn)\n"
        "  --log-level L          debug | info | warn | error (default info)\n"
        "  --metrics-port N       serve GET /metrics, /healthz, /readyz on port N (0: any)\n"
        "  --metrics-address A    ... on address A (default runtime.metrics_address, 127.0.0.1)\n"
        "  --http-port N          serve the HTTP front door (KServe v2) on port N (0: any),\n"
        "                         overriding frontend.http.port and .enabled\n"
        "  --http-address A       ... on address A (default frontend.http.address, 127.0.0.1)\n"
        "  --version              print the version and exit\n"
        "  -h, --help             print this help and exit\n"
        "logs: JSON lines on stderr; \"<N>message\" lines when stderr is the journal\n"
        "SIGHUP re-reads the topology (validated; what cannot change while serving is\n"
        "refused) and re-plans now; SIGTERM/SIGINT drain and stop\n");
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--worker"))
        return loki_worker_process_main(argc, argv);
    struct lokid_options o = {.initial_demand = 10,
                              .seed = 1,
                              .ready_fd = -1,
                              .log_level = LOKI_LOG_INFO,
                              .metrics_port = -1,
                              .http_port = -1};
    static const struct option lo[] = {{"topology", required_argument, 0, 't'},
                                       {"socket", required_argument, 0, 's'},
                                       {"policy", required_argument, 0, 'p'},
                                       {"initial-demand", required_argument, 0, 'd'},
                                       {"fixed-plan", no_argument, 0, 'f'},
                                       {"seed", required_argument, 0, 'S'},
                                       {"arena-mb", required_argument, 0, 'a'},
                                       {"ready-fd", required_argument, 0, 'r'},
                                       {"quiet", no_argument, 0, 'q'},
                                       {"help", no_argument, 0, 'h'},
                                       {"log-level", required_argument, 0, 'l'},
                                       {"metrics-port", required_argument, 0, 'm'},
                                       {"version", no_argument, 0, 'V'},
                                       {"metrics-address", required_argument, 0, 'A'},
                                       {"http-port", required_argument, 0, 'H'},
                                       {"http-address", required_argument, 0, 'B'},
                                       {0, 0, 0, 0}};
    int c;
    opterr = 0; /* bad options are reported below, on one line */
    while ((c = getopt_long(argc, argv, ":t:s:p:d:fS:a:r:qhl:m:A:H:B:", lo, NULL)) != -1) {
        switch (c) {
        case 't':
            o.topology = optarg;
            break;
        case 's':
            o.socket = optarg;
            break;
        case 'p':
            if (loki_policy_parse(optarg, &o.policy)) {
                fprintf(stderr, "lokid: unknown policy '%s'\n", optarg);
                return 2;
            }
            o.policy_set = true;
            break;
        case 'd':
            o.initial_demand = atof(optarg);
            break;
        case 'f':
            o.fixed_plan = true;
            break;
        case 'S':
            o.seed = strtoull(optarg, NULL, 10);
            break;
        case 'a':
            o.arena_mb = (unsigned)atoi(optarg);
            break;
        case 'r':
            o.ready_fd = atoi(optarg);
            break;
        case 'q':
            o.quiet = true;
            break;
        case 'l':
            if (loki_log_level_parse(optarg, &o.log_level)) {
                fprintf(stderr, "lokid: unknown log level '%s'\n", optarg);
                return 2;
            }
            break;
        case 'm': {
            char *end;
            long port = strtol(optarg, &end, 10);
            if (*optarg == 0 || *end || port < 0 || port > 65535) {
                fprintf(stderr, "lokid: --metrics-port wants 0..65535\n");
                return 2;
            }
            o.metrics_port = (int)port;
            break;
        }
        case 'H': {
            char *end;
            long port = strtol(optarg, &end, 10);
            if (*optarg == 0 || *end || port < 0 || port > 65535) {
                fprintf(stderr, "lokid: --http-port wants 0..65535\n");
                return 2;
            }
            o.http_port = (int)port;
            break;
        }
        case 'B': {
            unsigned char a[16];
            if (inet_pton(AF_INET, optarg, a) != 1 && inet_pton(AF_INET6, optarg, a) != 1) {
                fprintf(stderr, "lokid: --http-address wants an IPv4 or IPv6 address, got '%s'\n",
                        optarg);
                return 2;
            }
            o.http_address = optarg;
            break;
        }
        case 'A': {
            unsigned char a[16];
            if (inet_pton(AF_INET, optarg, a) != 1 && inet_pton(AF_INET6, optarg, a) != 1) {
                fprintf(stderr,
                        "lokid: --metrics-address wants an IPv4 or IPv6 address, got '%s' (try "
                        "--help)\n",
                        optarg);
                return 2;
            }
            o.metrics_address = optarg;
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("lokid %s%s%s%s\n", LOKI_VERSION, LOKI_GIT_DESCRIBE[0] ? " (git " : "",
                   LOKI_GIT_DESCRIBE, LOKI_GIT_DESCRIBE[0] ? ")" : "");
            return 0;
        default: {
            char why[128];
            fprintf(stderr, "lokid: %s (try --help)\n", loki_opt_error(c, argv, why, sizeof(why)));
            return 2;
        }
        }
    }
    if (optind != argc) {
        fprintf(stderr, "lokid: unexpected argument '%s' (try --help)\n", argv[optind]);
        return 2;
    }
    if (!o.topology) {
        fprintf(stderr, "lokid: --topology FILE is required (try --help)\n");
        return 2;
    }
    if (o.arena_mb && (o.arena_mb & (o.arena_mb - 1))) {
        fprintf(stderr, "lokid: --arena-mb must be a power of two\n");
        return 2;
    }
    return lokid_run(&o);
}
