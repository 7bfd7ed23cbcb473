/* SPDX-License-Identifier: Apache-2.0 */
/*
 * loki_echo_server SOCKET [UID]: the echo owner (echo.h) as a process, for
 * tests in other languages. Prints "ready" when listening; SIGTERM or SIGINT
 * drains, stops and exits 0.
 */
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
    int sig;
    if (argc < 2) {
        fprintf(stderr, "usage: loki_echo_server SOCKET [ALLOWED_UID]\n");
        return 2;
    }
    o.path = argv[1];
    o.frame_timeout_ms = 1000;
    if (argc > 2) {
        o.n_uids = 1;
        o.uids[0] = (unsigned)strtoul(argv[2], NULL, 10);
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
