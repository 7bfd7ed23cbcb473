/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP front door's setting up and taking down: libmicrohttpd opened at run time (see
 * "Loading" in http_front.c), the models' metadata rendered once at create, the daemon
 * started in external-epoll mode with its front thread, and stop's order (the front thread
 * answers and flushes what waits, then the daemon stops).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http_front_internal.h"
#include "http_kserve.h"
#include "loki/client.h"

/* ---- create, start, stop --------------------------------------------------------------------- */

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* The whole of a (small) file, NUL-terminated. */
static int read_file(const char *path, char **out)
{
    FILE *f = fopen(path, "rbe");
    if (!f)
        return -errno;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (n + 4097 > cap) {
            if (cap >= (1u << 20)) {
                rc = -EFBIG;
                break;
            }
            cap = cap ? 2 * cap : 8192;
            char *b = realloc(buf, cap);
            if (!b) {
                rc = -ENOMEM;
                break;
            }
            buf = b;
        }
        size_t k = fread(buf + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0) {
            if (ferror(f))
                rc = -EIO;
            break;
        }
    }
    fclose(f);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = 0;
    *out = buf;
    return 0;
}

static char *dump(json_t *j, size_t *len)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    *len = s ? strlen(s) : 0;
    return s;
}

/* GET /v2/models/{name}: KServe's metadata (one BYTES input, one BYTES output) and, in "loki",
 * the pipeline: SLO, payload limit and its tasks with their variants. */
static char *model_meta(const struct loki_topology *t, const struct loki_pipeline *p,
                        uint32_t max_payload, size_t *len)
{
    json_t *tasks = json_array();
    for (int i = 0; i < p->n_tasks; i++) {
        const struct loki_task *tk = &p->tasks[i];
        json_t *kids = json_array(), *vars = json_array();
        for (int k = 0; k < tk->n_children; k++)
            json_array_append_new(kids, json_string(p->tasks[tk->children[k]].name));
        for (int v = 0; v < tk->n_variants; v++)
            json_array_append_new(vars, json_pack("{s:s, s:f}", "name", tk->variants[v].name,
                                                  "accuracy", tk->variants[v].accuracy));
        json_t *task =
            json_pack("{s:s, s:o, s:o}", "name", tk->name, "children", kids, "variants", vars);
        if (task && tk->input_off)
            json_object_set_new(task, "input", json_string(t->strings + tk->input_off));
        json_array_append_new(tasks, task);
    }
    json_t *j = json_pack("{s:s, s:[], s:s, s:[{s:s, s:s, s:[i]}], s:[{s:s, s:s, s:[i]}],"
                          " s:{s:f, s:I, s:s, s:o}}",
                          "name", p->name, "versions", "platform", "loki", "inputs", "name",
                          LOKI_KSERVE_INPUT, "datatype", "BYTES", "shape", 1, "outputs", "name",
                          LOKI_KSERVE_OUTPUT, "datatype", "BYTES", "shape", -1, "loki", "slo_ms",
                          p->slo_ms, "max_payload_bytes", (json_int_t)max_payload, "root",
                          p->tasks[p->root].name, "tasks", tasks);
    return dump(j, len);
}

int loki_http_front_create(const struct loki_http_front_opts *o, struct loki_http_front **out,
                           char *err, size_t errlen)
{
    if (!o || !o->cfg || !o->socket_path || !o->topo || !out)
        return fail(err, errlen, -EINVAL, "http: missing options");
    const struct loki_http_cfg *cfg = o->cfg;
    if (strlen(o->socket_path) >= LOKI_PATH_MAX)
        return fail(err, errlen, -ENAMETOOLONG, "http: socket path too long");
    unsigned char a[16];
    if (inet_pton(AF_INET, cfg->address, a) != 1 && inet_pton(AF_INET6, cfg->address, a) != 1)
        return fail(err, errlen, -EINVAL, "http: '%s' is not an IPv4 or IPv6 address",
                    cfg->address);
    const char *why = loki__hf_mhd_open();
    if (why)
        return fail(err, errlen, -ENOTSUP, "http: %s", why);
    if ((cfg->tls_cert[0] || cfg->tls_key[0]) &&
        MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
        return fail(err, errlen, -ENOTSUP,
                    "http: frontend.http.tls_cert asks for HTTPS, but this libmicrohttpd was built "
                    "without TLS");
    struct loki_http_front *hf = calloc(1, sizeof(*hf));
    if (!hf)
        return -ENOMEM;
    int rc = -ENOMEM;
    hf->cfg = *cfg;
    if (!hf->cfg.lokid_connections)
        hf->cfg.lokid_connections = 2;
    if (hf->cfg.lokid_connections > MAX_LOKID_CONNS)
        hf->cfg.lokid_connections = MAX_LOKID_CONNS;
    if (!(hf->cfg.request_timeout_s > 0))
        hf->cfg.request_timeout_s = 60;
    snprintf(hf->sock, sizeof(hf->sock), "%s", o->socket_path);
    hf->n_conns = (int)hf->cfg.lokid_connections;
    hf->max_payload = o->max_payload;
    hf->body_max = loki_kserve_body_max(o->max_payload);
    double idle = o->lokid_idle_timeout_s > 0 ? o->lokid_idle_timeout_s : 60;
    hf->ping_ns = (uint64_t)(fmin(idle / 3, 10) * 1e9);
    hf->port = -1;
    hf->wake_fd = -1;
    for (int i = 0; i < o->topo->n_pipelines && i < LOKI_MAX_PIPELINES; i++) {
        const struct loki_pipeline *p = &o->topo->pipelines[i];
        struct model *m = &hf->models[hf->n_models++];
        snprintf(m->name, sizeof(m->name), "%s", p->name);
        if (!(m->meta = model_meta(o->topo, p, o->max_payload, &m->meta_len)))
            goto free_hf;
    }
    hf->server_meta = dump(json_pack("{s:s, s:s, s:[s]}", "name", "lokid", "version",
                                     o->server_version ? o->server_version : "", "extensions",
                                     "binary_tensor_data"),
                           &hf->server_meta_len);
    if (!hf->server_meta)
        goto free_hf;
    if (cfg->tls_cert[0]) {
        if ((rc = read_file(cfg->tls_cert, &hf->tls_cert)) ||
            (rc = read_file(cfg->tls_key, &hf->tls_key))) {
            fail(err, errlen, -EINVAL, "http: cannot read %s: %s",
                 hf->tls_cert ? cfg->tls_key : cfg->tls_cert, strerror(-rc));
            rc = -EINVAL;
            goto free_hf;
        }
    }
    *out = hf;
    return 0;
free_hf:
    loki_http_front_destroy(hf);
    return rc;
}

int loki_http_front_start(struct loki_http_front *hf, char *err, size_t errlen)
{
    const struct loki_http_cfg *cfg = &hf->cfg;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, cfg->address, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)cfg->port);
    } else if (inet_pton(AF_INET6, cfg->address, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)cfg->port);
        flags |= MHD_USE_IPv6;
    } else {
        return fail(err, errlen, -EINVAL, "'%s' is not an IPv4 or IPv6 address", cfg->address);
    }
    if (hf->tls_cert)
        flags |= MHD_USE_TLS;
    hf->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (hf->wake_fd < 0)
        return fail(err, errlen, -errno, "eventfd: %s", strerror(errno));
    char mhd_err[256] = "";
    hf->start_err = mhd_err;
    hf->start_errlen = sizeof(mhd_err);
    unsigned timeout_s =
        (unsigned)ceil(cfg->connection_timeout_s > 0 ? cfg->connection_timeout_s : 30);
    /* the TLS options last, and only with TLS: without it MHD_OPTION_END ends the list there */
    hf->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, loki__hf_on_access, hf, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)(cfg->max_connections ? cfg->max_connections : 256),
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->max_connections_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, timeout_s, MHD_OPTION_NOTIFY_COMPLETED,
        loki__hf_on_completed, hf, MHD_OPTION_EXTERNAL_LOGGER, loki__hf_on_mhd_log, hf,
        hf->tls_cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, hf->tls_cert,
        MHD_OPTION_HTTPS_MEM_KEY, hf->tls_key, MHD_OPTION_END);
    hf->start_err = NULL;
    if (!hf->mhd) {
        int e = errno ? errno : EADDRNOTAVAIL;
        if (strstr(mhd_err, "in use"))
            e = EADDRINUSE;
        /* its bind message names the port it was given in the options: 0 with SOCK_ADDR */
        return fail(err, errlen, -e, "%s",
                    mhd_err[0] && !strstr(mhd_err, "bind") ? mhd_err : strerror(e));
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(hf->mhd, MHD_DAEMON_INFO_BIND_PORT);
    hf->port = di ? di->port : cfg->port;
    int rc = pthread_create(&hf->thread, NULL, loki__hf_front_main, hf);
    if (rc) {
        MHD_stop_daemon(hf->mhd);
        hf->mhd = NULL;
        return fail(err, errlen, -rc, "cannot start the front thread: %s", strerror(rc));
    }
    hf->thread_started = true;
    return 0;
}

int loki_http_front_port(const struct loki_http_front *hf)
{
    return hf->port;
}

void loki_http_front_stop(struct loki_http_front *hf)
{
    if (!hf || hf->stopped)
        return;
    hf->stopped = true;
    if (hf->thread_started) {
        /* S1: the front thread sees the flag after its poll wakes (pairs with its acquire) */
        atomic_store_explicit(&hf->stop, true, memory_order_release);
        uint64_t one = 1;
        (void)!write(hf->wake_fd, &one, sizeof(one));
        pthread_join(hf->thread, NULL);
        hf->thread_started = false;
    }
    for (int i = 0; i < hf->n_conns; i++) { /* never started: nothing to answer */
        loki_client_close(hf->conns[i].c);
        hf->conns[i].c = NULL;
    }
    if (hf->mhd)
        MHD_stop_daemon(hf->mhd); /* every request was resumed: none is left suspended */
    hf->mhd = NULL;
}

void loki_http_front_destroy(struct loki_http_front *hf)
{
    if (!hf)
        return;
    loki_http_front_stop(hf);
    if (hf->wake_fd >= 0)
        close(hf->wake_fd);
    for (int i = 0; i < hf->n_models; i++)
        free(hf->models[i].meta);
    free(hf->server_meta);
    free(hf->tls_cert);
    free(hf->tls_key);
    free(hf);
}

void loki_http_front_stats(const struct loki_http_front *hf, struct loki_http_front_stats *out)
{
    struct loki_http_front *h = (struct loki_http_front *)hf;
#define L(x) atomic_load_explicit(&h->x, memory_order_relaxed)
    *out = (struct loki_http_front_stats){.requests = L(requests),
                                          .infers = L(infers),
                                          .status_2xx = L(s2xx),
                                          .status_4xx = L(s4xx),
                                          .status_5xx = L(s5xx),
                                          .inflight = L(waiting),
                                          .lokid_connects = L(connects)};
#undef L
}
