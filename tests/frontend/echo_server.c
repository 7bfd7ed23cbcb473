/* SPDX-License-Identifier: Apache-2.0 */
/*
 * loki_echo_server [OPTIONS] SOCKET [UID]: the echo owner (echo.h) as a process,
 * for tests in other languages and of the `loki` tool. Prints "ready" when
 * listening; SIGTERM or SIGINT drains, stops and exits 0. Options (echo_opts):
 * --max-outstanding N (per connection, advertised in hello), --delay-ms D (every
 * answer D ms late), --overload-every K (every Kth request answered overloaded).
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "echo.h"
#include "loki/error.h"

int main(int argc, char **argv)
{
    struct echo_opts o = {0};
    struct echo_server *s;
    sigset_t set;
    int sig, c;
    static const struct option lo[] = {{"max-outstanding", required_argument, 0, 'm'},
                                       {"delay-ms", required_argument, 0, 'd'},
                                       {"overload-every", required_argument, 0, 'o'},
                                       {0, 0, 0, 0}};
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'm':
            o.max_outstanding = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'd':
            o.delay_ms = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'o':
            o.overload_every = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        default:
            return 2;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "usage: loki_echo_server [--max-outstanding N] [--delay-ms D] "
                        "[--overload-every K] SOCKET [ALLOWED_UID]\n");
        return 2;
    }
    o.path = argv[optind];
    o.frame_timeout_ms = 1000;
    if (optind + 1 < argc) {
        o.n_uids = 1;
        o.uids[0] = (unsigned)strtoul(argv[optind + 1], NULL, 10);
    }
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* before any thread starts */
    int rc = echo_start(&o, &s);
    if (rc < 0) {
        fprintf(stderr, "loki_echo_server: %s\n", loki_strerror(rc));
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    sigwait(&set, &sig);
    echo_stop(s);
    return 0;
}
