/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP front door's insides, shared by http_front.c (the request path and the front
 * thread) and http_front_setup.c (loading libmicrohttpd, create, start, stop). The design is
 * told at the top of http_front.c.
 */
#ifndef LOKI_HTTP_FRONT_INTERNAL_H
#define LOKI_HTTP_FRONT_INTERNAL_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http_front.h"

struct loki_client;

/* ---- libmicrohttpd, opened at run time ----------------------------------------------------- */

#define MHD_FNS(X)                                                                                 \
    X(MHD_add_response_header)                                                                     \
    X(MHD_create_response_from_buffer)                                                             \
    X(MHD_destroy_response)                                                                        \
    X(MHD_get_daemon_info)                                                                         \
    X(MHD_get_timeout)                                                                             \
    X(MHD_is_feature_supported)                                                                    \
    X(MHD_lookup_connection_value)                                                                 \
    X(MHD_queue_response)                                                                          \
    X(MHD_quiesce_daemon)                                                                          \
    X(MHD_resume_connection)                                                                       \
    X(MHD_run)                                                                                     \
    X(MHD_start_daemon)                                                                            \
    X(MHD_stop_daemon)                                                                             \
    X(MHD_suspend_connection)

struct loki__mhd_table {
#define MHD_FIELD(n) __typeof__(&n) n;
    MHD_FNS(MHD_FIELD)
#undef MHD_FIELD
};
extern struct loki__mhd_table loki__mhd; /* filled by loki__hf_mhd_open() */

/* Load libmicrohttpd once (any thread); NULL, or why it cannot be used. */
const char *loki__hf_mhd_open(void);

/* from here on, every MHD_ call goes through the table (but where the table is filled) */
#ifndef LOKI_HF_MHD_LOADER
#define MHD_add_response_header (loki__mhd.MHD_add_response_header)
#define MHD_create_response_from_buffer (loki__mhd.MHD_create_response_from_buffer)
#define MHD_destroy_response (loki__mhd.MHD_destroy_response)
#define MHD_get_daemon_info (loki__mhd.MHD_get_daemon_info)
#define MHD_get_timeout (loki__mhd.MHD_get_timeout)
#define MHD_is_feature_supported (loki__mhd.MHD_is_feature_supported)
#define MHD_lookup_connection_value (loki__mhd.MHD_lookup_connection_value)
#define MHD_queue_response (loki__mhd.MHD_queue_response)
#define MHD_quiesce_daemon (loki__mhd.MHD_quiesce_daemon)
#define MHD_resume_connection (loki__mhd.MHD_resume_connection)
#define MHD_run (loki__mhd.MHD_run)
#define MHD_start_daemon (loki__mhd.MHD_start_daemon)
#define MHD_stop_daemon (loki__mhd.MHD_stop_daemon)
#define MHD_suspend_connection (loki__mhd.MHD_suspend_connection)
#endif

#define MAX_LOKID_CONNS 64
#define CONNECT_TIMEOUT_MS 2000
#define PING_TIMEOUT_MS 5000
#define HEALTH_TIMEOUT_MS 2000 /* a health check waits this long for lokid's answer */
#define FLUSH_MS 1000          /* stop sends the responses made for this long */
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000
#define RECONNECT_WAIT_MS 2000 /* a request waits this long for a connection to lokid */
struct model {
    char name[LOKI_NAME_MAX];
    char *meta; /* GET /v2/models/{name}: rendered at create */
    size_t meta_len;
};

/* One connection to lokid's socket. Front thread, except @dead (any thread). */
struct lokid_conn {
    struct loki_client *c;
    atomic_bool dead; /* seen closed by a callback or a failed write: reconnect */
    uint64_t retry_at_ns, backoff_ms, ping_at_ns;
    bool warned; /* the first failed connect was logged (until one works) */
};

struct loki_http_front {
    struct loki_http_cfg cfg;
    char sock[LOKI_PATH_MAX];
    int n_models;
    struct model models[LOKI_MAX_PIPELINES];
    char *server_meta; /* GET /v2 */
    size_t server_meta_len;
    uint32_t max_payload;
    size_t body_max;
    uint64_t ping_ns;
    char *tls_key, *tls_cert; /* the PEM files' contents, or NULL */

    struct MHD_Daemon *mhd;
    int port;
    pthread_t thread;
    bool thread_started, stopped;
    int wake_fd; /* eventfd: stop, and a resumed request (complete()) */
    atomic_bool stop;
    char *start_err; /* start: libmicrohttpd's messages go here; NULL after */
    size_t start_errlen;

    int n_conns;
    unsigned rr; /* round robin over the connections (front thread) */
    /* requests that found no live connection, waiting for one (front thread) */
    struct req *pending_head, *pending_tail;
    bool closing; /* stopping: the connections are gone, nothing waits for one (front thread) */
    struct lokid_conn conns[MAX_LOKID_CONNS];

    /* stats: relaxed atomics; waiting and responding also decide when stop's flush is over */
    atomic_uint_fast64_t requests, infers, s2xx, s4xx, s5xx, connects;
    atomic_uint_fast64_t waiting;    /* suspended on lokid */
    atomic_uint_fast64_t responding; /* responses queued, not yet completed */
};

/* The front thread (http_front.c), started by loki_http_front_start(). */
void *loki__hf_front_main(void *arg);

/* libmicrohttpd's callbacks (http_front.c): a request, a completed request, a log line. */
enum MHD_Result loki__hf_on_access(void *cls, struct MHD_Connection *c, const char *url,
                                   const char *method, const char *version, const char *upload_data,
                                   size_t *upload_data_size, void **con_cls);
void loki__hf_on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                           enum MHD_RequestTerminationCode toe);
void loki__hf_on_mhd_log(void *cls, const char *fmt, va_list ap);

#endif
