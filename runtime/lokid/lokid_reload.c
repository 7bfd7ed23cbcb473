/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lokid's configuration (see lokid.c): the topology file read and sealed once at start, and
 * SIGHUP's validated reload (docs/operator.md, "Change the topology of a running lokid").
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loki/arena.h"
#include "loki/error.h"
#include "loki/gpu.h"
#include "loki/log.h"
#include "loki/planner.h"
#include "loki/router.h"
#include "loki/topology.h"
#include "lokid_internal.h"

/*
 * The topology file @opt names, validated, with the command line's overrides (--socket,
 * --policy, --http-port, --http-address), and *@fd the sealed snapshot of the bytes validated,
 * which is all a worker ever loads (runtime/config/snapshot.c). Returns 0 or the error, its message
 * in @err.
 */
int lokid__load_config(const struct lokid_options *opt, struct loki_topology **topo,
                       struct loki_config *cfg, int *fd, char *err, size_t errlen)
{
    struct stat st;
    int rc = loki_config_load_snapshot(opt->topology, topo, cfg, fd, &st, err, errlen);
    if (rc)
        return rc;
    if (opt->socket)
        snprintf(cfg->frontend.socket_path, sizeof(cfg->frontend.socket_path), "%s", opt->socket);
    if (opt->policy_set)
        (*topo)->planner.policy = opt->policy;
    if (opt->http_port >= 0) {
        cfg->frontend.http.enabled = true;
        cfg->frontend.http.port = opt->http_port;
    }
    if (opt->http_address)
        snprintf(cfg->frontend.http.address, sizeof(cfg->frontend.http.address), "%s",
                 opt->http_address);
    if (st.st_mode & (S_IWGRP | S_IWOTH))
        loki_log(LOKI_LOG_WARN,
                 "%s is writable by its %s: whoever can write it chooses what lokid's workers "
                 "load (plugin paths) at the next reload; chmod go-w it",
                 opt->topology, st.st_mode & S_IWOTH ? "group and others" : "group");
    return 0;
}

/* The reload waiting in d->reload_topo takes effect (no solve may be in flight). */
void lokid__reload_apply(struct lokid *d)
{
    int rc = loki_sup_set_config(d->sup, d->reload_fd);
    if (rc) {
        loki_log(LOKI_LOG_ERROR, "reload of %s: %s; keeping the running configuration",
                 d->opt.topology, loki_strerror(rc));
    } else {
        /* only plugin paths and per-solve planner settings differ (loki_config_reload_check):
         * the router, the planner and the reports read those afresh where they use them */
        memcpy(d->topo, d->reload_topo, sizeof(*d->topo));
        loki_log(LOKI_LOG_INFO,
                 "reloaded %s: the planner uses it from its next solve, and workers started "
                 "from now on load it (running ones keep what they loaded)",
                 d->opt.topology);
    }
    free(d->reload_topo);
    d->reload_topo = NULL;
    close(d->reload_fd);
    d->reload_fd = -1;
}

/*
 * SIGHUP: re-read and validate the topology file, take it if it changes only what may change
 * while serving (loki_config_reload_check()), else keep the running configuration and say
 * why; then re-estimate and solve now instead of at the next interval.
 */
void lokid__on_sighup(uv_signal_t *s, int sig)
{
    struct lokid *d = s->data;
    static char err[8192];
    struct loki_topology *t;
    struct loki_config c;
    int fd;
    loki_log(LOKI_LOG_INFO, "SIGHUP: reloading %s and re-planning now", d->opt.topology);
    if (lokid__load_config(&d->opt, &t, &c, &fd, err, sizeof(err))) {
        loki_log(LOKI_LOG_ERROR, "reload refused, keeping the running configuration: %s", err);
    } else if (loki_config_reload_check(d->topo, &d->cfg, t, &c, err, sizeof(err))) {
        loki_log(LOKI_LOG_ERROR,
                 "reload refused, keeping the running configuration: %s: %s, which takes a "
                 "restart",
                 d->opt.topology, err);
        free(t);
        close(fd);
    } else {
        if (d->reload_topo) { /* an earlier one still waiting: this one replaces it */
            free(d->reload_topo);
            close(d->reload_fd);
        }
        d->reload_topo = t;
        d->reload_fd = fd;
        if (loki_planner_uv_is_busy(d->pu))
            loki_log(LOKI_LOG_INFO,
                     "reload of %s validated; it takes effect when the solve in flight ends",
                     d->opt.topology);
    }
    lokid__on_plan_timer(&d->plan_timer);
}
