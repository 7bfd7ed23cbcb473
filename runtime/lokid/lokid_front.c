/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lokid's opt-in HTTP front door (frontend.http, --http-port): built from the configuration,
 * started after the Unix socket listens and before any worker (a taken port fails at once),
 * stopped after the frontend. It submits through the C client library over lokid's own socket:
 * the same limits as every client and no second way into the router (actors/http_front.c says
 * why). Without libmicrohttpd at build time, enabling it fails start-up.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lokid_internal.h"
#ifdef LOKI_HAVE_HTTP_FRONT
#include "http_front.h" /* actors/ */
#include "loki/log.h"
#include "loki/version.h"
#endif

int lokid__front_start(struct lokid *d)
{
    const struct loki_http_cfg *h = &d->cfg.frontend.http;
    if (!h->enabled)
        return 0;
#ifdef LOKI_HAVE_HTTP_FRONT
    char err[512];
    const struct loki_frontend_cfg *f = &d->cfg.frontend;
    bool self = f->n_uids == 0;
    for (int i = 0; i < f->n_uids; i++)
        self |= f->uids[i] == (unsigned)geteuid();
    if (!self) {
        fprintf(stderr,
                "lokid: frontend.http submits through lokid's own socket, but "
                "frontend.allowed_uids does not list lokid's uid %u\n",
                (unsigned)geteuid());
        return 2;
    }
    struct loki_http_front_opts o = {.cfg = h,
                                     .socket_path = f->socket_path,
                                     .topo = d->topo,
                                     .max_payload = f->max_payload,
                                     .lokid_idle_timeout_s = f->idle_timeout_s,
                                     .server_version = LOKI_VERSION};
    int rc = loki_http_front_create(&o, &d->front, err, sizeof(err));
    if (!rc)
        rc = loki_http_front_start(d->front, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "lokid: cannot serve HTTP on %s port %d: %s\n", h->address, h->port, err);
        return 1;
    }
    const char *v6 = strchr(h->address, ':') ? "[" : "";
    loki_log(LOKI_LOG_INFO, "http front door (KServe v2) on http%s://%s%s%s:%d/v2",
             h->tls_cert[0] ? "s" : "", v6, h->address, v6[0] ? "]" : "",
             loki_http_front_port(d->front));
    return 0;
#else
    fprintf(stderr, "lokid: frontend.http is enabled, but this lokid was built without the HTTP "
                    "front door (libmicrohttpd was not found)\n");
    return 2;
#endif
}

void lokid__front_stop(struct lokid *d)
{
#ifdef LOKI_HAVE_HTTP_FRONT
    if (!d->front)
        return;
    loki_http_front_stop(d->front);
    struct loki_http_front_stats s;
    loki_http_front_stats(d->front, &s);
    loki_log(LOKI_LOG_INFO,
             "http front door stopped: %llu requests answered (%llu 2xx, %llu 4xx, %llu 5xx), "
             "%llu infer requests handed to lokid, %llu connections to lokid made",
             (unsigned long long)s.requests, (unsigned long long)s.status_2xx,
             (unsigned long long)s.status_4xx, (unsigned long long)s.status_5xx,
             (unsigned long long)s.infers, (unsigned long long)s.lokid_connects);
#else
    (void)d;
#endif
}

void lokid__front_status(const struct lokid *d, struct loki_status_http *out)
{
    memset(out, 0, sizeof(*out));
#ifdef LOKI_HAVE_HTTP_FRONT
    if (!d->front)
        return;
    struct loki_http_front_stats s;
    loki_http_front_stats(d->front, &s);
    *out = (struct loki_status_http){.enabled = true,
                                     .requests = s.requests,
                                     .infers = s.infers,
                                     .status_2xx = s.status_2xx,
                                     .status_4xx = s.status_4xx,
                                     .status_5xx = s.status_5xx,
                                     .lokid_connects = s.lokid_connects,
                                     .waiting = s.inflight};
#else
    (void)d;
#endif
}

void lokid__front_destroy(struct lokid *d)
{
#ifdef LOKI_HAVE_HTTP_FRONT
    loki_http_front_destroy(d->front);
#endif
    d->front = NULL;
}
