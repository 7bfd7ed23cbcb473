/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The deployment half of a topology file: how lokid serves (its socket, who
 * may connect, the size caps), how it and its workers wait for each other, and
 * where its metrics endpoint listens.
 * The planner never sees it: it plans from the pipeline model alone
 * (planner/loki/model.h). loki_config_load() (loki/topology.h) fills both.
 */
#ifndef LOKI_CONFIG_H
#define LOKI_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "loki/model.h"

#define LOKI_MAX_UIDS 16
#define LOKI_FRONTEND_MAX_CONNS (1u << 20) /* upper bound of frontend.max_connections */

/*
 * frontend.http: the opt-in HTTP/1.1 front door (KServe v2 inference protocol; actors/http_front.c,
 * docs/protocol.md "HTTP"). Off unless enabled (or lokid --http-port).
 */
struct loki_http_cfg {
    bool enabled;                    /* default false */
    char address[64];                /* IPv4 or IPv6 literal; default 127.0.0.1 */
    int port;                        /* default 8000; 0: any free port (logged) */
    char tls_cert[LOKI_PATH_MAX];    /* PEM files, both or neither: HTTPS when set */
    char tls_key[LOKI_PATH_MAX];     /* (libmicrohttpd's GnuTLS) */
    uint32_t max_connections;        /* open HTTP connections; default 256 */
    uint32_t max_connections_per_ip; /* of one client address; 0: no cap (default) */
    double connection_timeout_s;     /* close a connection silent this long; default 30 */
    double request_timeout_s;        /* an infer waits this long for lokid's answer, then
                                      * 504; default 60 */
    uint32_t lokid_connections;      /* connections to lokid's own socket; default 2 */
};

struct loki_frontend_cfg {
    char socket_path[LOKI_PATH_MAX]; /* default /run/loki/loki.sock */
    unsigned mode;                   /* default 0660 */
    int n_uids;                      /* 0: any uid allowed by mode */
    unsigned uids[LOKI_MAX_UIDS];
    uint32_t max_payload;       /* bytes; default 1 MiB */
    uint32_t max_inflight;      /* accepted, unanswered queries; default 65536 */
    uint32_t max_result;        /* bytes of one reply's result tree (outputs); default 4 MiB */
    uint64_t max_read_buffer;   /* bytes all connections' partial frames may hold beyond their
                                 * first 64 KiB each; 0: the larger of 256 MiB and two frames */
    uint32_t max_conns;         /* open connections; 0: from RLIMIT_NOFILE (see frontend.h) */
    uint32_t max_conns_per_uid; /* open connections of one peer uid; 0: half of max_conns */
    double idle_timeout_s;      /* close a connection with nothing in flight and nothing received
                                 * for this long; <= 0: the default, 60 */
    struct loki_http_cfg http;  /* frontend.http */
};

/* How lokid and its workers wait for each other (the shared-memory rings). */
struct loki_runtime_cfg {
    double spin_us;           /* poll this long before sleeping (worker: its next batch, adaptive
                               * below it; lokid: a fast worker's result, up to twice it); 0 sleeps
                               * at once; default 50 */
    char metrics_address[64]; /* IPv4 or IPv6 literal the HTTP /metrics endpoint listens on;
                               * default "127.0.0.1" */
    int metrics_port;         /* its port; 0: any free one; -1 (default): no endpoint */
};

struct loki_config {
    struct loki_frontend_cfg frontend;
    struct loki_runtime_cfg runtime;
};

/* Fill @c with defaults (the values documented in docs/topology.md). */
void loki_config_defaults(struct loki_config *c);

#endif
