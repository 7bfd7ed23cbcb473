/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A test owner for the frontend: a loop thread running loki_frontend and a
 * responder thread that answers every request through the MPSC reply path
 * (loki_frontend_reply() from a thread that is not the loop's), the way the
 * router does in lokid. Payload commands: "sleep:N" answers after N ms,
 * "status:S" answers with status S; anything else is echoed back at once
 * (or after delay_ms, or refused as overloaded: see struct echo_opts).
 */
#ifndef LOKI_TEST_ECHO_H
#define LOKI_TEST_ECHO_H

#include <stdint.h>

#include "frontend.h"

struct echo_server;

struct echo_opts {
    const char *path;
    int n_uids;
    unsigned uids[4];
    uint32_t max_payload;       /* 0 -> 64 KiB */
    uint32_t max_outstanding;   /* 0 -> frontend default */
    uint32_t frame_timeout_ms;  /* 0 -> frontend default */
    uint64_t max_write_queue;   /* 0 -> frontend default */
    uint32_t max_conns;         /* 0 -> frontend default (from RLIMIT_NOFILE) */
    uint32_t max_conns_per_uid; /* 0 -> frontend default (half of max_conns) */
    double idle_timeout_s;      /* 0 -> frontend default */
    unsigned mode;              /* socket file mode; 0 -> 0600 */
    uint32_t delay_ms;          /* every answer this much later (added to "sleep:N") */
    uint32_t overload_every;    /* > 0: every Nth request is answered overloaded, at once */
};

/* Start loop + responder threads; the socket is listening when this returns 0. */
int echo_start(const struct echo_opts *o, struct echo_server **out);
/* Requests delivered to the owner / replies the owner sent. */
uint64_t echo_delivered(struct echo_server *s);
uint64_t echo_answered(struct echo_server *s);
void echo_stats(struct echo_server *s, struct loki_frontend_stats *st);
/* Drain (answer everything in flight), stop, join, free. */
void echo_stop(struct echo_server *s);

#endif
