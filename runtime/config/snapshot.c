/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The configuration lokid runs, as its workers see it. lokid reads the topology file once
 * (at start, and again only on an explicit reload), validates it, and seals the very bytes
 * it validated into a memfd that every worker it spawns inherits: a worker parses that
 * snapshot, never the file, so editing the file (or anyone who can write it) cannot make a
 * restarted worker load code or parameters lokid never checked, nor drift from the plan.
 * loki_config_reload_check() says which differences a reload may apply in place: the ones
 * read afresh where they are used; the rest sizes state built at start and takes a restart.
 */
#include "loki/topology.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "loki/error.h"

#define TEXT_MAX (64u << 20)
#define SEALS (F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL)

int loki_config_read(const char *path, char **text, size_t *len, struct stat *st, char *err,
                     size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (err && errlen)
            snprintf(err, errlen, "%s: cannot open: %s", path, strerror(e));
        return -e;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        int e = errno;
        close(fd);
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    if (st)
        *st = sb;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 65536;
            if (cap > TEXT_MAX) {
                rc = -EFBIG;
                if (err && errlen)
                    snprintf(err, errlen, "%s: larger than 64 MiB", path);
                break;
            }
            char *nb = realloc(buf, cap);
            if (!nb) {
                rc = -ENOMEM;
                if (err && errlen)
                    snprintf(err, errlen, "%s: out of memory", path);
                break;
            }
            buf = nb;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            if (err && errlen)
                snprintf(err, errlen, "%s: read error: %s", path, strerror(errno));
            break;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (rc) {
        free(buf);
        return rc;
    }
    if (n == cap) { /* room for the terminating NUL (an empty file: a buffer of its own) */
        char *nb = realloc(buf, n + 1);
        if (!nb) {
            free(buf);
            return -ENOMEM;
        }
        buf = nb;
    }
    buf[n] = 0;
    *text = buf;
    *len = n;
    return 0;
}

int loki_config_seal(const char *text, size_t len, int *fd)
{
    int m = memfd_create("loki-config", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (m < 0)
        return -errno;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(m, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            close(m);
            return -e;
        }
        off += (size_t)w;
    }
    /* no writable mapping exists (written with write()), so F_SEAL_WRITE cannot fail EBUSY */
    if (fcntl(m, F_ADD_SEALS, SEALS) < 0) {
        int e = errno;
        close(m);
        return -e;
    }
    *fd = m;
    return 0;
}

int loki_config_load_snapshot(const char *path, struct loki_topology **out, struct loki_config *cfg,
                              int *fd, struct stat *st, char *err, size_t errlen)
{
    char *text;
    size_t len;
    int rc = loki_config_read(path, &text, &len, st, err, errlen);
    if (rc)
        return rc;
    struct loki_topology *t;
    if ((rc = loki_config_parse(text, len, path, &t, cfg, err, errlen)) == 0) {
        if ((rc = loki_config_seal(text, len, fd)) == 0)
            *out = t;
        else {
            free(t);
            if (err && errlen)
                snprintf(err, errlen, "%s: cannot seal a snapshot of it: %s", path,
                         loki_strerror(rc));
        }
    }
    free(text);
    return rc;
}

int loki_config_load_sealed(int fd, const char *name, struct loki_topology **out,
                            struct loki_config *cfg, char *err, size_t errlen)
{
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0) {
        int e = errno;
        if (err && errlen)
            snprintf(err, errlen, "%s: not a sealed configuration: %s", name, strerror(e));
        return -e;
    }
    if ((seals & SEALS) != SEALS) {
        if (err && errlen)
            snprintf(err, errlen, "%s: not sealed against changes (seals 0x%x)", name,
                     (unsigned)seals);
        return -EPERM;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", name, strerror(e));
        return -e;
    }
    if (st.st_size < 0 || (uint64_t)st.st_size > TEXT_MAX) {
        if (err && errlen)
            snprintf(err, errlen, "%s: larger than 64 MiB", name);
        return -EFBIG;
    }
    size_t len = (size_t)st.st_size;
    char *buf = malloc(len ? len : 1);
    if (!buf)
        return -ENOMEM;
    size_t off = 0;
    while (off < len) {
        ssize_t r = pread(fd, buf + off, len - off, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            free(buf);
            if (err && errlen)
                snprintf(err, errlen, "%s: read error: %s", name, strerror(e));
            return -e;
        }
        off += (size_t)r;
    }
    int rc = loki_config_parse(buf, len, name, out, cfg, err, errlen);
    free(buf);
    return rc;
}

/* ---- what a reload may change ---------------------------------------------------------------- */

/*
 * The comparisons below name every field of these structs. A new field changes a size here:
 * decide whether a reload may change it, compare it below, then update the size (LP64).
 */
#ifdef __LP64__
_Static_assert(sizeof(struct loki_frontend_cfg) == 984, "snapshot.c: compare the new field");
_Static_assert(sizeof(struct loki_http_cfg) == 616, "snapshot.c: compare the new field");
_Static_assert(sizeof(struct loki_runtime_cfg) == 80, "snapshot.c: compare the new field");
_Static_assert(sizeof(struct loki_config) == 1064, "snapshot.c: compare the new section");
_Static_assert(sizeof(struct loki_gpus) == 32, "snapshot.c: compare the new field");
_Static_assert(sizeof(struct loki_variant) == 4920, "snapshot.c: compare the new field");
_Static_assert(sizeof(struct loki_task) == 78832, "snapshot.c: compare the new field");
_Static_assert(sizeof(struct loki_pipeline) == 1298264, "snapshot.c: compare the new field");
_Static_assert(sizeof(struct loki_planner_cfg) == 2168, "snapshot.c: compare the new field");
_Static_assert(sizeof(struct loki_topology) == 5261064, "snapshot.c: compare the new field");
#endif

struct diff {
    char *why;
    size_t len;
    bool found;
};

static bool differs(struct diff *d, bool cond, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Record the first difference (@cond true) as "... differs". Returns @cond. */
static bool differs(struct diff *d, bool cond, const char *fmt, ...)
{
    if (!cond || d->found)
        return cond;
    d->found = true;
    if (d->why && d->len) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(d->why, d->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < d->len)
            snprintf(d->why + n, d->len - (size_t)n, " differs");
    }
    return true;
}

static bool ne_ints(const int *a, const int *b, int n)
{
    return memcmp(a, b, sizeof(int) * (size_t)n) != 0;
}

static bool ne_doubles(const double *a, const double *b, int n)
{
    for (int i = 0; i < n; i++)
        if (a[i] != b[i])
            return true;
    return false;
}

static bool is_cuda(const struct loki_variant *v)
{
    return v->backend == LOKI_BACKEND_CUDA;
}

static void cmp_variant(struct diff *d, const char *at, const struct loki_variant *a,
                        const struct loki_variant *b, int n_children)
{
    differs(d, strcmp(a->name, b->name) != 0, "%s: name", at);
    differs(d, a->accuracy != b->accuracy, "%s: accuracy", at);
    differs(d, a->mem_mb != b->mem_mb, "%s: memory_mb", at);
    differs(d, a->startup_ms != b->startup_ms, "%s: startup_ms", at);
    differs(d, a->n_batches != b->n_batches || ne_ints(a->batches, b->batches, a->n_batches),
            "%s: batch_sizes", at);
    differs(d, a->n_shares != b->n_shares || ne_doubles(a->shares, b->shares, a->n_shares),
            "%s: latency_ms shares", at);
    bool lat = false;
    for (int s = 0; s < a->n_shares && s < b->n_shares && !lat; s++)
        lat = ne_doubles(a->latency_ms[s], b->latency_ms[s], a->n_batches);
    differs(d, lat || a->share_scaled != b->share_scaled || a->share_derived != b->share_derived,
            "%s: latency_ms", at);
    for (int c = 0; c < n_children; c++)
        differs(d, a->fanout[c].mean != b->fanout[c].mean || a->fanout[c].dist != b->fanout[c].dist,
                "%s: fanout", at);
    /* sim <-> plugin, the plugin path, args and max_output_bytes: read by each worker as it
     * starts, and by nothing else */
    differs(d, is_cuda(a) != is_cuda(b), "%s: backend cuda", at);
}

static void cmp_pipeline(struct diff *d, const struct loki_pipeline *a,
                         const struct loki_pipeline *b)
{
    char at[3 * LOKI_NAME_MAX + 64];
    differs(d, strcmp(a->name, b->name) != 0, "pipeline %s: name", a->name);
    differs(d, a->slo_ms != b->slo_ms, "pipeline %s: slo_ms", a->name);
    differs(d, a->n_tasks != b->n_tasks, "pipeline %s: the number of tasks", a->name);
    differs(d, a->root != b->root, "pipeline %s: the root task", a->name);
    for (int t = 0; t < a->n_tasks && t < b->n_tasks && !d->found; t++) {
        const struct loki_task *ta = &a->tasks[t], *tb = &b->tasks[t];
        snprintf(at, sizeof(at), "pipeline %s, task %s", a->name, ta->name);
        differs(d, strcmp(ta->name, tb->name) != 0, "%s: name", at);
        differs(d,
                ta->n_children != tb->n_children ||
                    ne_ints(ta->children, tb->children, ta->n_children),
                "%s: children", at);
        differs(d, ta->n_variants != tb->n_variants, "%s: the number of variants", at);
        for (int v = 0; v < ta->n_variants && v < tb->n_variants && !d->found; v++) {
            snprintf(at, sizeof(at), "pipeline %s, task %s, variant %s", a->name, ta->name,
                     ta->variants[v].name);
            cmp_variant(d, at, &ta->variants[v], &tb->variants[v], ta->n_children);
        }
    }
    bool acc = a->n_path_acc != b->n_path_acc;
    for (int k = 0; k < a->n_path_acc && !acc; k++)
        acc = ne_ints(a->path_acc[k].variant, b->path_acc[k].variant, LOKI_MAX_TASKS) ||
              a->path_acc[k].accuracy != b->path_acc[k].accuracy;
    differs(d, acc, "pipeline %s: path_accuracy", a->name);
}

int loki_config_reload_check(const struct loki_topology *cur, const struct loki_config *cur_cfg,
                             const struct loki_topology *next, const struct loki_config *next_cfg,
                             char *why, size_t whylen)
{
    struct diff d = {.why = why, .len = whylen};
    if (why && whylen)
        why[0] = 0;
    const struct loki_gpus *ga = &cur->gpus, *gb = &next->gpus;
    differs(&d, ga->count != gb->count, "gpus.count");
    differs(&d, ga->mem_mb != gb->mem_mb, "gpus.memory_mb");
    differs(&d, ga->mps_max_clients != gb->mps_max_clients, "gpus.mps_max_clients");
    differs(&d, ga->share_granularity != gb->share_granularity, "gpus.share_granularity");
    differs(&d, cur->n_pipelines != next->n_pipelines, "the number of pipelines");
    for (int p = 0; p < cur->n_pipelines && p < next->n_pipelines && !d.found; p++)
        cmp_pipeline(&d, &cur->pipelines[p], &next->pipelines[p]);
    /* the planner settings read once at start; the others are read at every solve */
    const struct loki_planner_cfg *pa = &cur->planner, *pb = &next->planner;
    differs(&d, pa->interval_ms != pb->interval_ms, "planner.interval_ms");
    differs(&d, pa->ewma_alpha != pb->ewma_alpha, "planner.ewma_alpha");
    differs(&d, pa->ewma_windows != pb->ewma_windows, "planner.ewma_windows");
    differs(&d, pa->demand_sigmas != pb->demand_sigmas, "planner.demand_sigmas");
    if (cur_cfg && next_cfg) {
        const struct loki_frontend_cfg *fa = &cur_cfg->frontend, *fb = &next_cfg->frontend;
        differs(&d, strcmp(fa->socket_path, fb->socket_path) != 0, "frontend.socket");
        differs(&d, fa->mode != fb->mode, "frontend.mode");
        differs(&d, fa->n_uids != fb->n_uids || memcmp(fa->uids, fb->uids, sizeof(fa->uids)),
                "frontend.uids");
        differs(&d, fa->max_payload != fb->max_payload, "frontend.max_payload");
        differs(&d, fa->max_inflight != fb->max_inflight, "frontend.max_inflight");
        differs(&d, fa->max_result != fb->max_result, "frontend.max_result_bytes");
        differs(&d, fa->max_read_buffer != fb->max_read_buffer, "frontend.max_read_buffer_bytes");
        differs(&d, fa->max_conns != fb->max_conns, "frontend.max_connections");
        differs(&d, fa->max_conns_per_uid != fb->max_conns_per_uid,
                "frontend.max_connections_per_uid");
        differs(&d, fa->idle_timeout_s != fb->idle_timeout_s, "frontend.idle_timeout_s");
        /* bound and sized at start (loki_config_defaults zeroes the padding memcmp sees) */
        differs(&d, memcmp(&fa->http, &fb->http, sizeof(fa->http)) != 0, "frontend.http");
        differs(&d, cur_cfg->runtime.spin_us != next_cfg->runtime.spin_us, "runtime.spin_us");
        /* the metrics endpoint is bound once, at start */
        differs(&d,
                strcmp(cur_cfg->runtime.metrics_address, next_cfg->runtime.metrics_address) != 0,
                "runtime.metrics_address");
        differs(&d, cur_cfg->runtime.metrics_port != next_cfg->runtime.metrics_port,
                "runtime.metrics_port");
    }
    return d.found ? LOKI_ETOPOLOGY : 0;
}
