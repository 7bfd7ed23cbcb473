/* SPDX-License-Identifier: Apache-2.0 */
/* lokid's options and entry point (main.c parses, lokid.c runs). */
#ifndef LOKID_H
#define LOKID_H

#include <stdbool.h>
#include <stdint.h>

#include "loki/log.h"
#include "loki/model.h"

struct lokid_options {
    const char *topology;
    const char *socket; /* overrides frontend.socket */
    bool policy_set;
    enum loki_policy policy; /* overrides planner.policy */
    double initial_demand;   /* qps the first plan is solved for */
    uint64_t seed;
    unsigned arena_mb;
    bool fixed_plan;               /* never re-plan (ablation, tests) */
    bool quiet;                    /* warnings and errors only (same as log_level = WARN) */
    enum loki_log_level log_level; /* default INFO */
    int ready_fd;                  /* write "ready\n" here once serving; -1 none */
    int metrics_port; /* serve GET /metrics on port; 0 any free port; -1: runtime.metrics_port */
    const char *metrics_address; /* listen there; NULL: runtime.metrics_address (127.0.0.1) */
    int http_port;               /* >= 0: the HTTP front door on this port (0: any), on
                                  * whatever frontend.http says; -1: as frontend.http says */
    const char *http_address;    /* overrides frontend.http.address; NULL: the file's */
};

/* Run the daemon until SIGTERM/SIGINT has drained it. Returns the exit status. */
int lokid_run(const struct lokid_options *opt);

#endif
