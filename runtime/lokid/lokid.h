/* SPDX-License-Identifier: Apache-2.0 */
/* lokid's options and entry point (main.c parses, lokid.c runs). */
#ifndef LOKID_H
#define LOKID_H

#include <stdbool.h>
#include <stdint.h>

#include "loki/model.h"

/* Log levels, least severe first; a level logs itself and everything above it. */
enum lokid_log_level {
    LOKID_LOG_DEBUG = 0,
    LOKID_LOG_INFO,
    LOKID_LOG_WARN,
    LOKID_LOG_ERROR,
};

struct lokid_options {
    const char *topology;
    const char *socket; /* overrides frontend.socket */
    bool policy_set;
    enum loki_policy policy; /* overrides planner.policy */
    double initial_demand;   /* qps the first plan is solved for */
    uint64_t seed;
    unsigned arena_mb;
    bool fixed_plan;                /* never re-plan (ablation, tests) */
    bool quiet;                     /* warnings and errors only (same as log_level = WARN) */
    enum lokid_log_level log_level; /* default INFO */
    int ready_fd;                   /* write "ready\n" here once serving; -1 none */
    int metrics_port; /* serve GET /metrics on 127.0.0.1:port; 0 any free port; -1 none */
};

/* "debug", "info", "warn" (or "warning"), "error" -> 0 and *@out, else -EINVAL. */
int lokid_log_level_parse(const char *s, enum lokid_log_level *out);

/* Run the daemon until SIGTERM/SIGINT has drained it. Returns the exit status. */
int lokid_run(const struct lokid_options *opt);

#endif
