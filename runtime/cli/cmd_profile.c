/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `loki profile`: measure tau(b, s), ms per batch of b at GPU share s, for variants of a
 * topology with the backend each one names, print their latency tables as YAML and, with
 * --write, write them into a copy of the topology file.
 *
 * A sim or plugin variant is loaded exactly as a worker loads it (loki_backend_select() and
 * loki_backend_setup_init(): its args, max_output_bytes, the task's input and children) and
 * fed batches of each size in this process; its outputs and child payloads go to heap
 * buffers under the worker's limits; the median of --reps timed batches after --warmup ones
 * is its latency. Shares below 1 need a GPU: each runs in a child process (`loki profile
 * --child`) that is an MPS client with CUDA_MPS_ACTIVE_THREAD_PERCENTAGE set, after share 1
 * in a child without MPS (the sim backend simulates shares, in this process). A `cuda`
 * variant runs the built-in CUDA workload the same way, where share 1 calibrates its work to
 * the variant's whole-GPU profile and the other shares run that work fixed (LOKI_CUDA_WORK);
 * with --green its shares are green contexts resized inside this one process.
 * See docs/backend.md and docs/gpu.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "loki/backend.h"
#include "loki/backend_setup.h"
#include "loki/clock.h"
#include "loki/error.h"
#include "loki/model.h"
#include "loki/topology.h"
#ifdef LOKI_HAVE_CUDA
#include "loki/cuda.h"
#endif

#define MAX_B LOKI_MAX_BATCHES
#define MAX_S LOKI_MAX_SHARES
#define MAX_REPS 512
#define MAX_PAYLOAD (256u << 20)
#define DEFAULT_PAYLOAD 1024
#define EXIT_MPS 75 /* a child the MPS server refused (LOKI_CUDA_EXIT_MPS, EX_TEMPFAIL) */

/* One variant to measure and what was measured. */
struct target {
    int pi, ti, vi;
    int batches[MAX_B], n_b;
    double shares[MAX_S];
    int n_s;
    double tau[MAX_S][MAX_B];
    const char *how;         /* how it was measured, for the comment line */
    char input[320];         /* what its queries were given, for the comment line */
    int work[MAX_B], n_work; /* cuda: calibrated layers per profiled batch size */
    /* measured in this process: */
    char backend[64];
    double init_ms;
    bool stats;
    uint64_t n_q; /* queries of the timed batches at share 1 and what they emitted */
    double out_bytes, kids[LOKI_MAX_CHILDREN], kid_bytes[LOKI_MAX_CHILDREN];
};

/* The child payloads a parent variant emitted for one child task: that task's input when its
 * variants are measured after it in the same run. */
struct pool {
    uint8_t *buf;
    uint32_t *off, *len;
    int n;
    double bytes;                     /* mean size */
    char from[3 * LOKI_NAME_MAX + 3]; /* the variant that emitted them */
};

#define POOL_MAX 1024          /* payloads kept per child task */
#define POOL_BYTES (64u << 20) /* and bytes */

struct prof {
    const char *topology, *pipeline, *task, *variant, *out, *from, *payload_file;
    const char *batch_list, *share_list, *backend; /* --backend: instead of the variants' */
    long long payload_bytes;                       /* -1: not given */
    int reps, warmup, gpu;                         /* gpu -2: not given */
    bool green, child;
    uint8_t *payload;
    uint32_t payload_len;
    struct loki_topology *t;
    struct target *tg;
    int n_tg;
    struct pool pools[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS];
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loki profile --topology F (--variant V | --task T | --pipeline P)\n"
            "                    [--pipeline P] [--task T] [--batches 1,2,4,...]\n"
            "                    [--shares 1,0.5,...] [--reps N] [--warmup N]\n"
            "                    [--payload-file FILE | --payload-bytes N] [--gpu G] [--green]\n"
            "                    [--backend B] [--from MEASURED] [--write F2]\n"
            "  measures each variant's ms per batch at each batch size (the variant's own, or\n"
            "  --batches) with the backend its `backend:` key names, loaded as a worker loads\n"
            "  it (args, max_output_bytes, the task's input and children), prints the YAML\n"
            "  batch_sizes/latency_ms lines and with --write F2 writes a copy of F in which\n"
            "  those variants carry them (everything else kept; the copy is checked first).\n"
            "  --variant V      one variant (--pipeline/--task when its name is in several\n"
            "                   tasks); without it every variant of --task T, or of every task\n"
            "                   of --pipeline P\n"
            "  sim, plugin .so: run in this process on the CPU: --warmup (3) batches, then the\n"
            "                   median of --reps (7); every query gets FILE's bytes\n"
            "                   (--payload-file) or N synthetic bytes (--payload-bytes, default\n"
            "                   %d); with --pipeline a task below the root gets the child\n"
            "                   payloads its parent's first variant emitted instead.\n"
            "                   Share 1 only unless --shares: a plugin's shares below 1\n"
            "                   run as MPS clients on GPU G (--gpu; default 0 when a GPU is\n"
            "                   visible, else none), the sim backend simulates them\n"
            "  cuda:            the built-in CUDA workload on the real GPU, shares 1,0.5,0.25 by\n"
            "                   default (MPS children, or green contexts with --green)\n"
            "  --backend B      measure with backend B (sim, cuda or a plugin .so) instead of\n"
            "                   the one each variant names\n"
            "  --from FILE      take the figures of one variant from \"SHARE BATCH MS\" lines\n"
            "  --out F2         the same as --write F2\n"
            "  -h, --help       this help\n",
            DEFAULT_PAYLOAD);
}

static int parse_ints(const char *s, int *out, int max)
{
    int n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > LOKI_MAX_BATCH || n == max || (n && v <= out[n - 1]))
            return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return n;
}

static int parse_shares(const char *s, double *out, int max)
{
    int n = 0;
    while (*s) {
        char *end;
        double v = strtod(s, &end);
        if (end == s || !(v > 0 && v <= 1) || n == max || (n && v >= out[n - 1]))
            return -1;
        out[n++] = v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return n;
}

/* A whole number in [lo, hi] from @s, or -1 (@lo >= 0). */
static long long parse_count(const char *s, long long lo, long long hi)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    return v;
}

static const struct loki_variant *var_of(const struct prof *p, const struct target *g)
{
    return &p->t->pipelines[g->pi].tasks[g->ti].variants[g->vi];
}

/* "pipeline/task/variant" */
static const char *label(const struct prof *p, const struct target *g, char *b, size_t n)
{
    const struct loki_pipeline *pl = &p->t->pipelines[g->pi];
    snprintf(b, n, "%s/%s/%s", pl->name, pl->tasks[g->ti].name, var_of(p, g)->name);
    return b;
}

/* ---- which variants ------------------------------------------------------------------------- */

static int add_target(struct prof *p, int pi, int ti, int vi)
{
    struct target *g = realloc(p->tg, sizeof(*g) * (size_t)(p->n_tg + 1));
    if (!g)
        return -ENOMEM;
    p->tg = g;
    g = &p->tg[p->n_tg++];
    memset(g, 0, sizeof(*g));
    g->pi = pi;
    g->ti = ti;
    g->vi = vi;
    return 0;
}

/* The tasks of @pl, parents before their children (breadth first from the root). */
static int task_order(const struct loki_pipeline *pl, int *order)
{
    bool seen[LOKI_MAX_TASKS] = {false};
    int n = 0;
    order[n++] = pl->root;
    seen[pl->root] = true;
    for (int i = 0; i < n; i++) {
        const struct loki_task *t = &pl->tasks[order[i]];
        for (int c = 0; c < t->n_children; c++)
            if (!seen[t->children[c]]) {
                seen[t->children[c]] = true;
                order[n++] = t->children[c];
            }
    }
    for (int t = 0; t < pl->n_tasks; t++) /* none unreachable in a loaded topology */
        if (!seen[t])
            order[n++] = t;
    return n;
}

/* --variant V: one variant (the only task holding it); else every variant of --task T, or
 * of --pipeline P. */
static int find_targets(struct prof *p)
{
    int pipes = 0, tasks = 0;
    for (int a = 0; a < p->t->n_pipelines; a++) {
        const struct loki_pipeline *pl = &p->t->pipelines[a];
        if (p->pipeline && strcmp(pl->name, p->pipeline))
            continue;
        pipes++;
        int order[LOKI_MAX_TASKS];
        int n = task_order(pl, order);
        for (int k = 0; k < n; k++) {
            const struct loki_task *tk = &pl->tasks[order[k]];
            if (p->task && strcmp(tk->name, p->task))
                continue;
            if (p->variant) {
                int v = loki_task_variant_index(tk, p->variant);
                if (v < 0)
                    continue;
                if (p->n_tg) {
                    fprintf(stderr,
                            "loki profile: variant %s is in more than one task; name the one "
                            "meant with --pipeline and --task\n",
                            p->variant);
                    return -1;
                }
                if (add_target(p, a, order[k], v))
                    return -1;
                continue;
            }
            if (p->task && tasks++) {
                fprintf(stderr,
                        "loki profile: task %s is in more than one pipeline; name the one "
                        "meant with --pipeline\n",
                        p->task);
                return -1;
            }
            for (int v = 0; v < tk->n_variants; v++)
                if (add_target(p, a, order[k], v))
                    return -1;
        }
    }
    if (p->n_tg)
        return 0;
    if (p->pipeline && !pipes)
        fprintf(stderr, "loki profile: no pipeline %s in %s\n", p->pipeline, p->topology);
    else if (p->variant)
        fprintf(stderr, "loki profile: no variant %s%s%s%s%s in %s\n", p->variant,
                p->task ? " in task " : "", p->task ? p->task : "",
                p->pipeline ? " in pipeline " : "", p->pipeline ? p->pipeline : "", p->topology);
    else
        fprintf(stderr, "loki profile: no task %s%s%s in %s\n", p->task,
                p->pipeline ? " in pipeline " : "", p->pipeline ? p->pipeline : "", p->topology);
    return -1;
}

/* Each target's batch sizes (--batches, or its own) and shares (--shares, or the default of
 * its backend: 1,0.5,0.25 for cuda and --from, else 1). */
static int plan_targets(struct prof *p)
{
    for (int i = 0; i < p->n_tg; i++) {
        struct target *g = &p->tg[i];
        const struct loki_variant *v = var_of(p, g);
        if (p->batch_list) {
            if ((g->n_b = parse_ints(p->batch_list, g->batches, MAX_B)) < 1) {
                fprintf(stderr,
                        "loki profile: --batches takes ascending batch sizes, e.g. 1,2,4,8\n");
                return 2;
            }
        } else {
            g->n_b = v->n_batches;
            memcpy(g->batches, v->batches, sizeof(int) * (size_t)v->n_batches);
        }
        const char *ss = p->share_list;
        if (!ss)
            ss = (v->backend == LOKI_BACKEND_CUDA || p->from) && !p->child ? "1,0.5,0.25" : "1";
        g->n_s = parse_shares(ss, g->shares, MAX_S);
        /* a child measures the one share its parent gives it */
        if (g->n_s < 1 || (!p->child && g->shares[0] != 1) || (p->child && g->n_s != 1)) {
            fprintf(stderr, "loki profile: --shares takes descending shares in (0, 1] starting "
                            "with 1, e.g. 1,0.5,0.25\n");
            return 2;
        }
    }
    return 0;
}

/* ---- the payload ---------------------------------------------------------------------------- */

static int load_payload(struct prof *p)
{
    if (p->payload_file) {
        FILE *f = fopen(p->payload_file, "rb");
        struct stat st;
        if (!f || fstat(fileno(f), &st) || st.st_size > (off_t)MAX_PAYLOAD) {
            fprintf(stderr, "loki profile: %s: %s\n", p->payload_file,
                    !f || errno ? strerror(errno) : "larger than 256 MiB");
            if (f)
                fclose(f);
            return -1;
        }
        p->payload_len = (uint32_t)st.st_size;
        p->payload = malloc(p->payload_len ? p->payload_len : 1);
        size_t got = p->payload ? fread(p->payload, 1, p->payload_len, f) : 0;
        fclose(f);
        if (got != p->payload_len) {
            fprintf(stderr, "loki profile: %s: short read\n", p->payload_file);
            return -1;
        }
        return 0;
    }
    p->payload_len = (uint32_t)(p->payload_bytes >= 0 ? p->payload_bytes : DEFAULT_PAYLOAD);
    p->payload = malloc(p->payload_len ? p->payload_len : 1);
    if (!p->payload) {
        fprintf(stderr, "loki profile: out of memory for a %u-byte payload\n", p->payload_len);
        return -1;
    }
    /* synthetic: the same pseudo-random bytes on every run (xorshift64) */
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (uint32_t i = 0; i < p->payload_len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p->payload[i] = (uint8_t)(x >> 32);
    }
    return 0;
}

/* ---- measuring in this process: any backend through the ABI -------------------------------- */

/* Heap blocks handed out by the sink, reused from batch to batch: after the warm-up batches
 * a backend that emits the same sizes costs no allocation. */
struct chunk {
    struct chunk *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
};

struct squery {
    uint32_t bytes, out_len, n_kids;
    void *outp;
    int32_t status;
    char msg[LOKI_BACKEND_MSG_MAX];
};

struct skid {
    int q, c;
    void *p;
    uint32_t len;
};

/* An in-process struct loki_backend_out with the worker's rules (max_output_bytes per query,
 * at most LOKI_MAX_QUERY_CHILDREN children, a second output replaces the first). */
struct sink {
    struct loki_backend_out out; /* first: the callbacks get &out */
    int n, n_children;
    uint32_t max_output;
    struct squery *q;
    struct skid *kid;
    uint32_t n_kid, cap_kid;
    struct chunk *head, *cur;
};

static void *sink_alloc(struct sink *s, uint32_t len)
{
    size_t need = ((size_t)len + 15) & ~(size_t)15;
    for (;;) {
        if (s->cur && s->cur->used + need <= s->cur->cap) {
            void *p = s->cur->data + s->cur->used;
            s->cur->used += need;
            return p;
        }
        if (s->cur && s->cur->next) {
            s->cur = s->cur->next;
            continue;
        }
        size_t cap = need > (1u << 20) ? need : (1u << 20);
        struct chunk *c = malloc(sizeof(*c) + cap);
        if (!c)
            return NULL;
        c->next = NULL;
        c->cap = cap;
        c->used = 0;
        if (s->cur)
            s->cur->next = c;
        else
            s->head = c;
        s->cur = c;
    }
}

static void sink_reset(struct sink *s, int n)
{
    for (struct chunk *c = s->head; c; c = c->next)
        c->used = 0;
    s->cur = s->head;
    s->n = n;
    s->n_kid = 0;
    memset(s->q, 0, sizeof(*s->q) * (size_t)n);
}

static void sink_fail(struct sink *s, int i, int32_t status, const char *msg)
{
    struct squery *q = &s->q[i];
    if (q->status)
        return;
    q->status = status < 0 ? status : -EIO;
    snprintf(q->msg, sizeof(q->msg), "%s", msg ? msg : "");
}

/* Room for @len more bytes of query @i within max_output_bytes. */
static void *sink_take(struct sink *s, int i, uint32_t len)
{
    struct squery *q = &s->q[i];
    if (len > s->max_output - q->bytes) {
        char m[LOKI_BACKEND_MSG_MAX];
        snprintf(m, sizeof(m), "output too large: %u bytes over max_output_bytes %u",
                 q->bytes + len - s->max_output, s->max_output);
        sink_fail(s, i, LOKI_ETOOBIG, m);
        return NULL;
    }
    void *p = sink_alloc(s, len);
    if (!p) {
        sink_fail(s, i, -ENOMEM, "out of memory");
        return NULL;
    }
    q->bytes += len;
    return p;
}

static void *sink_output(struct loki_backend_out *o, int i, uint32_t len)
{
    struct sink *s = (struct sink *)o;
    if (i < 0 || i >= s->n || s->q[i].status)
        return NULL;
    struct squery *q = &s->q[i];
    q->bytes -= q->out_len; /* a second output replaces the first */
    q->out_len = 0;
    q->outp = sink_take(s, i, len);
    if (q->outp)
        q->out_len = len;
    return q->outp;
}

static void *sink_child(struct loki_backend_out *o, int i, int child, uint32_t len)
{
    struct sink *s = (struct sink *)o;
    if (i < 0 || i >= s->n || child < 0 || child >= s->n_children || s->q[i].status)
        return NULL;
    if (s->q[i].n_kids >= LOKI_MAX_QUERY_CHILDREN) {
        char m[LOKI_BACKEND_MSG_MAX];
        snprintf(m, sizeof(m), "more than %d child sub-queries", LOKI_MAX_QUERY_CHILDREN);
        sink_fail(s, i, LOKI_ETOOBIG, m);
        return NULL;
    }
    if (s->n_kid == s->cap_kid) {
        uint32_t cap = s->cap_kid ? 2 * s->cap_kid : 1024;
        struct skid *k = realloc(s->kid, sizeof(*k) * cap);
        if (!k) {
            sink_fail(s, i, -ENOMEM, "out of memory for child sub-queries");
            return NULL;
        }
        s->kid = k;
        s->cap_kid = cap;
    }
    void *p = sink_take(s, i, len);
    if (!p)
        return NULL;
    s->kid[s->n_kid++] = (struct skid){.q = i, .c = child, .p = p, .len = len};
    s->q[i].n_kids++;
    return p;
}

static void sink_shrink(struct loki_backend_out *o, void *p, uint32_t len)
{
    struct sink *s = (struct sink *)o;
    for (int i = 0; i < s->n; i++)
        if (s->q[i].outp == p && len < s->q[i].out_len) {
            s->q[i].bytes -= s->q[i].out_len - len;
            s->q[i].out_len = len;
            return;
        }
    for (uint32_t k = 0; k < s->n_kid; k++)
        if (s->kid[k].p == p && len < s->kid[k].len) {
            s->q[s->kid[k].q].bytes -= s->kid[k].len - len;
            s->kid[k].len = len;
            return;
        }
}

static void sink_fail_cb(struct loki_backend_out *o, int i, int32_t status, const char *msg)
{
    struct sink *s = (struct sink *)o;
    if (i >= 0 && i < s->n)
        sink_fail(s, i, status, msg);
}

static void sink_fini(struct sink *s)
{
    for (struct chunk *c = s->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(s->q);
    free(s->kid);
}

/*
 * The child payloads of @sk's last batch, as the input of the child tasks of @g measured
 * later in this run, where no other variant of @g's task gave them theirs.
 */
static int keep_children(struct prof *p, const struct target *g, const struct sink *sk)
{
    const struct loki_task *tk = &p->t->pipelines[g->pi].tasks[g->ti];
    for (int c = 0; c < tk->n_children; c++) {
        struct pool *o = &p->pools[g->pi][tk->children[c]];
        bool later = false;
        for (int i = (int)(g - p->tg) + 1; i < p->n_tg; i++)
            later |= p->tg[i].pi == g->pi && p->tg[i].ti == tk->children[c];
        if (o->n || !later)
            continue;
        size_t total = 0;
        int n = 0;
        for (uint32_t k = 0; k < sk->n_kid && n < POOL_MAX; k++)
            if (sk->kid[k].c == c && total + sk->kid[k].len <= POOL_BYTES) {
                total += sk->kid[k].len;
                n++;
            }
        if (!n)
            continue; /* it emitted none: the child task gets the given payload */
        o->buf = malloc(total ? total : 1);
        o->off = calloc((size_t)n, sizeof(*o->off));
        o->len = calloc((size_t)n, sizeof(*o->len));
        if (!o->buf || !o->off || !o->len) {
            fprintf(stderr, "loki profile: out of memory for %zu bytes of child payloads\n", total);
            return -ENOMEM;
        }
        size_t at = 0;
        for (uint32_t k = 0; k < sk->n_kid && o->n < n; k++)
            if (sk->kid[k].c == c && at + sk->kid[k].len <= total) {
                memcpy(o->buf + at, sk->kid[k].p, sk->kid[k].len);
                o->off[o->n] = (uint32_t)at;
                o->len[o->n++] = sk->kid[k].len;
                at += sk->kid[k].len;
            }
        o->bytes = (double)at / o->n;
        label(p, g, o->from, sizeof(o->from));
    }
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/*
 * Load @g's backend as a worker does, at share @g->shares[@s], and time batches of each of
 * its batch sizes into @g->tau[@s]. Returns 0, or the backend's error after saying why;
 * LOKI_CUDA_EMPS (-ECONNREFUSED) from init is returned as it is (the MPS server refused).
 */
static int measure_inproc(struct prof *p, struct target *g, int s)
{
    const struct loki_variant *v = var_of(p, g);
    const struct loki_task *tk = &p->t->pipelines[g->pi].tasks[g->ti];
    double share = g->shares[s];
    char err[1024], lb[3 * LOKI_NAME_MAX + 3];
    label(p, g, lb, sizeof(lb));
    int maxb = g->batches[g->n_b - 1] > v->batches[v->n_batches - 1] ? g->batches[g->n_b - 1]
                                                                     : v->batches[v->n_batches - 1];
    struct loki_backend_setup *su = malloc(sizeof(*su));
    struct loki_backend_query *q = calloc((size_t)maxb, sizeof(*q));
    struct sink sk = {.out = {.output = sink_output,
                              .child = sink_child,
                              .shrink = sink_shrink,
                              .fail = sink_fail_cb},
                      .n_children = tk->n_children};
    sk.q = calloc((size_t)maxb, sizeof(*sk.q));
    int rc = -ENOMEM;
    if (!su || !q || !sk.q) {
        fprintf(stderr, "loki profile: out of memory\n");
        goto out_mem;
    }
    /* a plugin measured at a share its variant has no profile for sees the share-1 profile */
    rc = loki_backend_setup_init(su, p->t, g->pi, g->ti, g->vi, maxb, share, p->gpu, 1, err,
                                 sizeof(err));
    if (rc && v->backend != LOKI_BACKEND_SIM &&
        !(rc = loki_backend_setup_init(su, p->t, g->pi, g->ti, g->vi, maxb, 1, p->gpu, 1, err,
                                       sizeof(err))))
        su->cfg.share = share;
    if (rc) {
        fprintf(stderr, "loki profile: %s: %s\n", lb, err);
        goto out_mem;
    }
    sk.max_output = su->cfg.max_output_bytes;
    struct loki_backend_handle h;
    if ((rc = loki_backend_select(v, &h, err, sizeof(err)))) {
        fprintf(stderr, "loki profile: %s: %s\n", lb, err);
        goto out_mem;
    }
    snprintf(g->backend, sizeof(g->backend), "%s", loki_backend_name(&h));
    void *st;
    uint64_t t0 = loki_now_ns();
    if ((rc = loki_backend_init(&h, &su->cfg, &st))) {
        fprintf(stderr, "loki profile: %s: backend %s init: %s\n", lb, g->backend,
                loki_strerror(rc));
        goto out_mem;
    }
    g->init_ms = (double)(loki_now_ns() - t0) / 1e6;
    const struct pool *in = &p->pools[g->pi][g->ti];
    if (in->n)
        snprintf(g->input, sizeof(g->input), "%d child payloads of %.0f B from %s", in->n,
                 in->bytes, in->from);
    uint64_t id = 1, next = 0;
    double ms[MAX_REPS];
    for (int b = 0; b < g->n_b && !rc; b++) {
        int n = g->batches[b];
        for (int r = 0; r < p->warmup + p->reps && !rc; r++) {
            for (int i = 0; i < n; i++) {
                q[i].id = id++;
                q[i].payload = in->n ? in->buf + in->off[next % in->n] : p->payload;
                q[i].payload_len = in->n ? in->len[next++ % in->n] : p->payload_len;
            }
            sink_reset(&sk, n);
            uint64_t a = loki_now_ns();
            rc = loki_backend_infer(&h, st, q, n, &sk.out);
            uint64_t z = loki_now_ns();
            if (rc) {
                fprintf(stderr, "loki profile: %s: the backend failed a batch of %d: %s\n", lb, n,
                        loki_strerror(rc));
                break;
            }
            for (int i = 0; i < n; i++)
                if (sk.q[i].status) {
                    fprintf(stderr, "loki profile: %s: a query of a batch of %d failed: %s%s%s\n",
                            lb, n, loki_strerror(sk.q[i].status), sk.q[i].msg[0] ? ": " : "",
                            sk.q[i].msg);
                    rc = sk.q[i].status;
                    break;
                }
            if (rc || r < p->warmup)
                continue;
            ms[r - p->warmup] = (double)(z - a) / 1e6;
            if (s > 0)
                continue;
            g->stats = true;
            g->n_q += (uint64_t)n;
            for (int i = 0; i < n; i++)
                g->out_bytes += sk.q[i].out_len;
            for (uint32_t k = 0; k < sk.n_kid; k++) {
                g->kids[sk.kid[k].c] += 1;
                g->kid_bytes[sk.kid[k].c] += sk.kid[k].len;
            }
        }
        if (!rc) {
            qsort(ms, (size_t)p->reps, sizeof(ms[0]), cmp_double);
            g->tau[s][b] =
                p->reps % 2 ? ms[p->reps / 2] : (ms[p->reps / 2 - 1] + ms[p->reps / 2]) / 2;
        }
    }
    if (!rc && s == 0)
        rc = keep_children(p, g, &sk);
    loki_backend_fini(&h, st);
out_mem:
    sink_fini(&sk);
    free(q);
    free(su);
    return rc;
}

/* ---- measuring in child processes ----------------------------------------------------------- */

/*
 * Run @argv with @env (NAME=VALUE strings, NULL-ended) added, @input on its stdin, its
 * stdout into @out; at most @timeout_s. Returns the exit status or negative.
 */
static int run(char *const argv[], char *const env[], const char *input, char *out, size_t len,
               int timeout_s)
{
    int o[2] = {-1, -1}, i[2] = {-1, -1};
    if ((out && pipe(o)) || (input && pipe(i))) {
        int e = errno;
        if (o[0] >= 0) {
            close(o[0]);
            close(o[1]);
        }
        return -e;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        for (int k = 0; env && env[k]; k++)
            putenv(env[k]);
        /* a daemon that keeps our stdout would hold a capture pipe open: /dev/null then */
        int fd = out ? o[1] : open("/dev/null", O_WRONLY);
        if (fd >= 0)
            dup2(fd, 1);
        if (i[0] >= 0)
            dup2(i[0], 0);
        close_range(3, ~0u, 0); /* a daemon started here keeps nothing of ours */
        execvp(argv[0], argv);
        fprintf(stderr, "loki profile: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int e = errno;
    if (o[1] >= 0)
        close(o[1]);
    if (i[0] >= 0)
        close(i[0]);
    if (pid < 0) {
        if (o[0] >= 0)
            close(o[0]);
        if (i[1] >= 0)
            close(i[1]);
        return -e;
    }
    if (i[1] >= 0) {
        signal(SIGPIPE, SIG_IGN);
        ssize_t wr = write(i[1], input, strlen(input));
        (void)wr;
        close(i[1]);
    }
    time_t until = time(NULL) + timeout_s;
    if (out) {
        size_t got = 0;
        for (;;) {
            struct pollfd pf = {.fd = o[0], .events = POLLIN};
            int left = (int)(until - time(NULL));
            if (left <= 0 || poll(&pf, 1, left * 1000) == 0) {
                kill(pid, SIGKILL);
                break;
            }
            ssize_t r = read(o[0], out + got, len - 1 - got);
            if (r <= 0 || (got += (size_t)r) == len - 1)
                break;
        }
        out[got] = 0;
        close(o[0]);
    }
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR))
            break;
        if (time(NULL) > until)
            kill(pid, SIGKILL);
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (WIFSIGNALED(status))
        return WTERMSIG(status) == SIGKILL ? -ETIMEDOUT : 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

/* A child's "work L1,L2,..." (cuda), "backend NAME", "stats ..." and "tau B MS" lines into
 * share @s of @g. */
static int parse_child(struct target *g, int s, const char *text)
{
    int seen = 0;
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        int b;
        double ms;
        if (!strncmp(l, "work ", 5) && s == 0) {
            const char *q = l + 5;
            g->n_work = 0;
            while (g->n_work < MAX_B && *q >= '0' && *q <= '9') {
                char *end;
                g->work[g->n_work++] = (int)strtol(q, &end, 10);
                q = *end == ',' ? end + 1 : end;
            }
        } else if (!strncmp(l, "backend ", 8) && s == 0) {
            snprintf(g->backend, sizeof(g->backend), "%.*s", (int)strcspn(l + 8, "\n"), l + 8);
        } else if (!strncmp(l, "stats ", 6) && s == 0) {
            /* stats QUERIES INIT_MS OUTPUT_BYTES then CHILDREN BYTES per child task */
            char *q;
            g->n_q = strtoull(l + 6, &q, 10);
            g->init_ms = strtod(q, &q);
            g->out_bytes = strtod(q, &q);
            for (int c = 0; c < LOKI_MAX_CHILDREN && *q == ' '; c++) {
                g->kids[c] = strtod(q, &q);
                g->kid_bytes[c] = strtod(q, &q);
            }
            g->stats = true;
        } else if (sscanf(l, "tau %d %lf", &b, &ms) == 2) {
            for (int k = 0; k < g->n_b; k++)
                if (g->batches[k] == b) {
                    g->tau[s][k] = ms;
                    seen++;
                }
        }
    }
    return seen == g->n_b ? 0 : -1;
}

/*
 * Each share of @g in its own child process (@self profile --child): share 1 without MPS,
 * each share below 1 as an MPS client with CUDA_MPS_ACTIVE_THREAD_PERCENTAGE set (a cuda
 * variant with the work share 1 calibrated, LOKI_CUDA_WORK). The MPS daemon is the
 * operator's (CUDA_MPS_PIPE_DIRECTORY) or one started here and quit at the end.
 */
static int measure_children(struct prof *p, struct target *g, const char *self)
{
    const struct loki_pipeline *pl = &p->t->pipelines[g->pi];
    bool cuda = var_of(p, g)->backend == LOKI_BACKEND_CUDA;
    char *argv[32], bl[256], reps[16], warm[16], gpu[16], pbytes[32], share[32];
    int a = 0, k = 0, rc = 0;
    if (p->gpu < 0) {
        fprintf(stderr, "loki profile: shares below 1 run on a GPU: name it with --gpu G\n");
        return -1;
    }
    for (int b = 0; b < g->n_b; b++)
        k += snprintf(bl + k, sizeof(bl) - (size_t)k, "%s%d", b ? "," : "", g->batches[b]);
    snprintf(reps, sizeof(reps), "%d", p->reps);
    snprintf(warm, sizeof(warm), "%d", p->warmup);
    snprintf(gpu, sizeof(gpu), "%d", p->gpu);
    argv[a++] = (char *)self;
    argv[a++] = "profile";
    argv[a++] = "--child";
    argv[a++] = "--topology";
    argv[a++] = (char *)p->topology;
    argv[a++] = "--pipeline";
    argv[a++] = (char *)pl->name;
    argv[a++] = "--task";
    argv[a++] = (char *)pl->tasks[g->ti].name;
    argv[a++] = "--variant";
    argv[a++] = (char *)var_of(p, g)->name;
    argv[a++] = "--batches";
    argv[a++] = bl;
    argv[a++] = "--reps";
    argv[a++] = reps;
    argv[a++] = "--gpu";
    argv[a++] = gpu;
    if (p->backend) {
        argv[a++] = "--backend";
        argv[a++] = (char *)p->backend;
    }
    if (!cuda) {
        argv[a++] = "--warmup";
        argv[a++] = warm;
        if (p->payload_file) {
            argv[a++] = "--payload-file";
            argv[a++] = (char *)p->payload_file;
        } else {
            snprintf(pbytes, sizeof(pbytes), "%u", p->payload_len);
            argv[a++] = "--payload-bytes";
            argv[a++] = pbytes;
        }
        argv[a++] = "--shares";
        argv[a++] = share;
    }
    argv[a] = NULL;
    static char out[65536];
    char e_dev[32], e_pct[64], e_work[256], e_pipe[PATH_MAX + 64], e_log[PATH_MAX + 64];
    char dir[PATH_MAX] = "", ctl[PATH_MAX] = "nvidia-cuda-mps-control";
    bool own_mps = false;
    snprintf(e_dev, sizeof(e_dev), "CUDA_VISIBLE_DEVICES=%d", p->gpu);

    /* share 1, no MPS: a cuda variant calibrates its work to the whole-GPU profile */
    char *env1[] = {e_dev, NULL};
    unsetenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE");
    snprintf(share, sizeof(share), "1");
    rc = run(argv, env1, NULL, out, sizeof(out), 600);
    if (rc || parse_child(g, 0, out) || (cuda && g->n_work < 1)) {
        fprintf(stderr, "loki profile: share 1 measurement failed (status %d)\n", rc);
        return -1;
    }
    fprintf(stderr, "loki profile: share 1 done\n");
    if (g->n_s == 1)
        return 0;
    e_work[0] = 0;
    if (cuda) {
        k = snprintf(e_work, sizeof(e_work), "LOKI_CUDA_WORK=");
        for (int i = 0; i < g->n_work; i++)
            k += snprintf(e_work + k, sizeof(e_work) - (size_t)k, "%s%d", i ? "," : "", g->work[i]);
    }

    /* an MPS daemon: the operator's (CUDA_MPS_PIPE_DIRECTORY set) or one of our own */
    const char *have = getenv("CUDA_MPS_PIPE_DIRECTORY");
    if (getenv("LOKI_MPS_CONTROL"))
        snprintf(ctl, sizeof(ctl), "%s", getenv("LOKI_MPS_CONTROL"));
    if (have && *have) {
        snprintf(e_pipe, sizeof(e_pipe), "CUDA_MPS_PIPE_DIRECTORY=%s", have);
        snprintf(e_log, sizeof(e_log), "LOKI_PROFILE_MPS=external");
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof(dir), "%s/loki-profile-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(dir)) {
            fprintf(stderr, "loki profile: %s: %s\n", dir, strerror(errno));
            return -1;
        }
        snprintf(e_pipe, sizeof(e_pipe), "CUDA_MPS_PIPE_DIRECTORY=%s", dir);
        snprintf(e_log, sizeof(e_log), "CUDA_MPS_LOG_DIRECTORY=%s", dir);
        char *cargv[] = {ctl, "-d", NULL};
        char *cenv[] = {e_dev, e_pipe, e_log, NULL};
        rc = run(cargv, cenv, NULL, NULL, 0, 30);
        if (rc) {
            fprintf(stderr,
                    "loki profile: cannot start the MPS control daemon (%s -d: status %d%s); "
                    "shares below 1 need MPS%s\n",
                    ctl, rc, rc == 127 ? ", not on PATH" : "", cuda ? " (or --green)" : "");
            rmdir(dir);
            return -1;
        }
        own_mps = true;
    }
    for (int s = 1; s < g->n_s && rc == 0; s++) {
        snprintf(e_pct, sizeof(e_pct), "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=%d",
                 (int)(g->shares[s] * 100 + 0.5));
        snprintf(share, sizeof(share), "%g", g->shares[s]);
        char *env[] = {e_dev, e_pipe, e_pct, cuda ? e_work : NULL, NULL};
        for (int attempt = 0; attempt < 3; attempt++) {
            rc = run(argv, env, NULL, out, sizeof(out), 600);
            if (rc != EXIT_MPS)
                break;
            fprintf(stderr,
                    "loki profile: MPS refused the share %g client (server not ready or "
                    "client limit): retrying\n",
                    g->shares[s]);
            sleep(1u << attempt);
        }
        if (rc || parse_child(g, s, out)) {
            fprintf(stderr, "loki profile: share %g measurement failed (status %d)\n", g->shares[s],
                    rc);
            rc = -1;
        } else {
            fprintf(stderr, "loki profile: share %g done\n", g->shares[s]);
        }
    }
    if (own_mps) {
        char *qargv[] = {ctl, NULL};
        char *qenv[] = {e_dev, e_pipe, e_log, NULL};
        if (run(qargv, qenv, "quit\n", NULL, 0, 30))
            fprintf(stderr, "loki profile: MPS daemon in %s did not quit cleanly\n", dir);
        char path[PATH_MAX + 16];
        snprintf(path, sizeof(path), "%s/control.log", dir);
        unlink(path);
        snprintf(path, sizeof(path), "%s/server.log", dir);
        unlink(path);
        rmdir(dir); /* fails, harmlessly, while the daemon's pipes linger */
    }
    return rc;
}

/* ---- the cuda backend's own timing ---------------------------------------------------------- */

#ifdef LOKI_HAVE_CUDA
/* In this process: calibrate to the variant's whole-GPU profile (or take LOKI_CUDA_WORK),
 * measure at share 1, then, with --green, at every other share on a resized green context.
 * The backend's own table and state (not the adapter's): its timing calls need them. */
static int measure_cuda_here(struct prof *p, struct target *g, int n_shares)
{
    const struct loki_backend_v1 *be = loki_backend_cuda();
    const struct loki_variant *v = var_of(p, g);
    int maxb = g->batches[g->n_b - 1] > v->batches[v->n_batches - 1] ? g->batches[g->n_b - 1]
                                                                     : v->batches[v->n_batches - 1];
    struct loki_backend_setup su;
    char err[256];
    void *st;
    int rc = loki_backend_setup_init(&su, p->t, g->pi, g->ti, g->vi, maxb, 1, p->gpu, 1, err,
                                     sizeof(err));
    if (rc) {
        fprintf(stderr, "loki profile: %s\n", err);
        return rc;
    }
    if ((rc = be->init(&su.cfg, &st))) {
        fprintf(stderr, "loki profile: cuda backend: %s\n", loki_cuda_last_error());
        return rc;
    }
    g->n_work = loki_cuda_work(st, g->work, MAX_B);
    for (int s = 0; s < n_shares && rc == 0; s++) {
        if (s > 0) {
            double ms;
            if ((rc = loki_cuda_green_resize(st, g->shares[s], &ms))) {
                fprintf(stderr, "loki profile: green context at share %g: %s\n", g->shares[s],
                        loki_cuda_last_error());
                break;
            }
            fprintf(stderr, "loki profile: green context of %d SMs (share %g) in %.1f ms\n",
                    loki_cuda_sm_count(st), g->shares[s], ms);
        }
        for (int b = 0; b < g->n_b && rc == 0; b++)
            if ((rc = loki_cuda_time_batch(st, g->batches[b], p->reps, &g->tau[s][b])))
                fprintf(stderr, "loki profile: batch %d: %s\n", g->batches[b],
                        loki_cuda_last_error());
    }
    be->fini(st);
    return rc;
}
#endif

/* ---- per variant ---------------------------------------------------------------------------- */

/* `loki profile --child`: measure one variant at the share the parent gave it (a cuda
 * variant: at the share the environment sets) and print for the parent "work L1,L2,..."
 * (cuda) or "backend NAME" and "stats ..." (the others), then "tau B MS" lines. */
static int child_main(struct prof *p)
{
    struct target *g = &p->tg[0];
    int rc;
    if (var_of(p, g)->backend == LOKI_BACKEND_CUDA) {
#ifdef LOKI_HAVE_CUDA
        if ((rc = measure_cuda_here(p, g, 1)))
            return rc == LOKI_CUDA_EMPS ? EXIT_MPS : 1;
        printf("work ");
        for (int i = 0; i < g->n_work; i++)
            printf("%s%d", i ? "," : "", g->work[i]);
        printf("\n");
#else
        fprintf(stderr, "loki profile: built without the CUDA backend\n");
        return 1;
#endif
    } else {
        if ((rc = measure_inproc(p, g, 0)))
            return rc == -ECONNREFUSED ? EXIT_MPS : 1;
        const struct loki_task *tk = &p->t->pipelines[g->pi].tasks[g->ti];
        printf("backend %s\nstats %llu %.3f %.0f", g->backend, (unsigned long long)g->n_q,
               g->init_ms, g->out_bytes);
        for (int c = 0; c < tk->n_children; c++)
            printf(" %.0f %.0f", g->kids[c], g->kid_bytes[c]);
        printf("\n");
    }
    for (int b = 0; b < g->n_b; b++)
        printf("tau %d %.4f\n", g->batches[b], g->tau[0][b]);
    return 0;
}

static int measure(struct prof *p, struct target *g, const char *self)
{
    const struct loki_variant *v = var_of(p, g);
    snprintf(g->input, sizeof(g->input), "%u B %s payload", p->payload_len,
             p->payload_file ? "file" : "synthetic");
    if (v->backend == LOKI_BACKEND_SIM) {
        for (int s = 0; s < g->n_s; s++) {
            if (loki_variant_share_index(v, g->shares[s]) < 0) {
                fprintf(stderr,
                        "loki profile: sim variant %s has no profile at share %g to simulate\n",
                        v->name, g->shares[s]);
                return -1;
            }
            if (measure_inproc(p, g, s))
                return -1;
        }
        g->how = g->n_s > 1 ? "in this process, shares simulated" : "in this process";
        return 0;
    }
    if (v->backend == LOKI_BACKEND_PLUGIN) {
        if (g->n_s == 1) {
            g->how = "in this process";
            return measure_inproc(p, g, 0) ? -1 : 0;
        }
        g->how = "MPS shares";
        return measure_children(p, g, self) ? -1 : 0;
    }
#ifndef LOKI_HAVE_CUDA
    (void)self;
    fprintf(stderr,
            "loki profile: variant %s runs the cuda backend, and this loki was built "
            "without it (nvcc was not found at build time); profiles are measured on a "
            "GPU machine\n",
            v->name);
    return -1;
#else
    if (loki_cuda_device_count() < 1) {
        fprintf(stderr, "loki profile: no CUDA GPU visible here (no NVIDIA driver or no device); "
                        "cuda variants are measured on the real GPU\n");
        return -1;
    }
    if (p->green) {
        g->how = "green contexts";
        return measure_cuda_here(p, g, g->n_s) ? -1 : 0;
    }
    g->how = "MPS shares";
    return measure_children(p, g, self) ? -1 : 0;
#endif
}

/* --from: "SHARE BATCH MS" lines ('#' comments) for every share and batch asked for. */
static int read_measured(struct prof *p, struct target *g)
{
    FILE *f = fopen(p->from, "r");
    if (!f) {
        fprintf(stderr, "loki profile: %s: %s\n", p->from, strerror(errno));
        return -1;
    }
    bool seen[MAX_S][MAX_B] = {{false}};
    char line[256];
    int ln = 0, rc = 0;
    while (fgets(line, sizeof(line), f)) {
        double sh, ms;
        int b;
        ln++;
        if (line[strspn(line, " \t")] == '#' || line[strspn(line, " \t\r\n")] == 0)
            continue;
        if (sscanf(line, "%lf %d %lf", &sh, &b, &ms) != 3 || !(ms > 0)) {
            fprintf(stderr, "%s:%d: expected SHARE BATCH MS\n", p->from, ln);
            rc = -1;
            continue;
        }
        for (int s = 0; s < g->n_s; s++)
            for (int k = 0; k < g->n_b; k++)
                if (fabs(g->shares[s] - sh) < 1e-6 && g->batches[k] == b) {
                    g->tau[s][k] = ms;
                    seen[s][k] = true;
                }
    }
    fclose(f);
    for (int s = 0; s < g->n_s; s++)
        for (int k = 0; k < g->n_b; k++)
            if (!seen[s][k]) {
                fprintf(stderr, "%s: no figure for share %g, batch %d\n", p->from, g->shares[s],
                        g->batches[k]);
                rc = -1;
            }
    g->how = "from";
    return rc;
}

/* ---- the YAML ------------------------------------------------------------------------------- */

static int indent_of(const char *l)
{
    int i = 0;
    while (l[i] == ' ')
        i++;
    return i;
}

/* @ms as the profile writes it: 2 decimals from 1 ms up, 3 significant digits below, at
 * least the topology's smallest latency (1 ns). */
static const char *fmt_ms(double ms, char *b, size_t n)
{
    int d = 2;
    for (double x = 1; ms < x && d < 6; x /= 10)
        d++;
    if (ms < 1e-6)
        ms = 1e-6;
    snprintf(b, n, "%.*f", d, ms);
    return b;
}

static void print_row(FILE *f, const struct target *g, int s)
{
    char b[32];
    fprintf(f, "[");
    for (int k = 0; k < g->n_b; k++)
        fprintf(f, "%s%s", k ? ", " : "", fmt_ms(g->tau[s][k], b, sizeof(b)));
    fprintf(f, "]\n");
}

/* The comment lines saying how @g was measured, indented by @ind. */
static void print_about(const struct prof *p, const struct target *g, FILE *f, int ind)
{
    const struct loki_task *tk = &p->t->pipelines[g->pi].tasks[g->ti];
    const struct loki_variant *v = var_of(p, g);
    if (!strcmp(g->how, "from")) {
        fprintf(f, "%*s# loki profile --from %s\n", ind, "", p->from);
        return;
    }
    if (v->backend == LOKI_BACKEND_CUDA) {
        fprintf(f, "%*s# loki profile: cuda, %s, median of %d runs per point\n", ind, "", g->how,
                p->reps);
        return;
    }
    fprintf(f, "%*s# loki profile: %s, %s, median of %d batches after %d, %s\n", ind, "",
            g->backend[0] ? g->backend : "?", g->how, p->reps, p->warmup, g->input);
    if (!g->stats || !g->n_q)
        return;
    double nq = (double)g->n_q;
    fprintf(f, "%*s# loki profile: init %.1f ms; per query: output %.0f B", ind, "", g->init_ms,
            g->out_bytes / nq);
    for (int c = 0; c < tk->n_children; c++)
        fprintf(f, "; %s: %.2f children of %.0f B (fanout %g)",
                p->t->pipelines[g->pi].tasks[tk->children[c]].name, g->kids[c] / nq,
                g->kids[c] ? g->kid_bytes[c] / g->kids[c] : 0.0, v->fanout[c].mean);
    fprintf(f, "\n");
}

/* A comment line print_about() wrote, at indent @ind: replaced with the profile. */
static bool is_about(const char *l, int ind)
{
    return indent_of(l) == ind && (!strncmp(l + ind, "# loki profile", 14) ||
                                   !strncmp(l + ind, "# measured by loki profile", 26));
}

/* The measured keys of @g, indented by @ind: batch_sizes and latency_ms, a list for share 1
 * alone, else a mapping from share with share_scaled: false. */
static void emit_profile(const struct prof *p, const struct target *g, FILE *f, int ind)
{
    print_about(p, g, f, ind);
    fprintf(f, "%*sbatch_sizes: [", ind, "");
    for (int b = 0; b < g->n_b; b++)
        fprintf(f, "%s%d", b ? ", " : "", g->batches[b]);
    fprintf(f, "]\n");
    if (g->n_s == 1) {
        fprintf(f, "%*slatency_ms: ", ind, "");
        print_row(f, g, 0);
        return;
    }
    fprintf(f, "%*sshare_scaled: false\n%*slatency_ms:\n", ind, "", ind, "");
    for (int s = 0; s < g->n_s; s++) {
        fprintf(f, "%*s%g: ", ind + 2, "", g->shares[s]);
        print_row(f, g, s);
    }
}

/* ---- the rewritten topology file ------------------------------------------------------------ */

struct text {
    char **l;
    int n, cap;
};

static int text_push(struct text *x, char *line)
{
    if (!line)
        return -ENOMEM;
    if (x->n == x->cap) {
        int cap = x->cap ? 2 * x->cap : 256;
        char **l = realloc(x->l, sizeof(*l) * (size_t)cap);
        if (!l) {
            free(line);
            return -ENOMEM;
        }
        x->l = l;
        x->cap = cap;
    }
    x->l[x->n++] = line;
    return 0;
}

static void text_free(struct text *x)
{
    for (int i = 0; i < x->n; i++)
        free(x->l[i]);
    free(x->l);
    memset(x, 0, sizeof(*x));
}

static bool blank_or_comment(const char *l)
{
    l += indent_of(l);
    return *l == 0 || *l == '\n' || *l == '\r' || *l == '#';
}

/* Is @l "- name: NAME" (NAME plain or quoted)? */
static bool is_name_item(const char *l, const char *name)
{
    l += indent_of(l);
    if (strncmp(l, "- name:", 7))
        return false;
    l += 7;
    while (*l == ' ')
        l++;
    size_t n = strlen(name);
    char q = (*l == '"' || *l == '\'') ? *l++ : 0;
    if (strncmp(l, name, n))
        return false;
    l += n;
    if (q && *l++ != q)
        return false;
    while (*l == ' ' || *l == '\r')
        l++;
    return *l == 0 || *l == '\n' || *l == '#';
}

/* In the one-line flow mapping @l, where the value of @key starts, or NULL. */
static char *flow_value(char *l, const char *key)
{
    size_t n = strlen(key);
    for (char *s = strstr(l, key); s; s = strstr(s + 1, key))
        if (s > l && strchr("{ ,", s[-1]) && s[n] == ':') {
            s += n + 1;
            while (*s == ' ')
                s++;
            return s;
        }
    return NULL;
}

/* Where the flow value at @v ends: past its matching bracket, else at the next ',' or '}'. */
static char *flow_value_end(char *v)
{
    if (*v != '[' && *v != '{')
        return v + strcspn(v, ",}");
    int depth = 0;
    for (char *s = v; *s; s++)
        if (*s == '[' || *s == '{')
            depth++;
        else if ((*s == ']' || *s == '}') && --depth == 0)
            return s + 1;
    return NULL;
}

/* Is @l a one-line flow item "- {name: NAME, ...}"? */
static bool is_flow_item(char *l, const char *name)
{
    char *s = l + indent_of(l), *v;
    if (strncmp(s, "- {", 3) || !(v = flow_value(s, "name")))
        return false;
    char *e = flow_value_end(s + 2);
    if (!e || e[strspn(e, " \r")] != '\n')
        return false; /* not all on this line */
    size_t n = strlen(name);
    char q = (*v == '"' || *v == '\'') ? *v++ : 0;
    if (strncmp(v, name, n))
        return false;
    v += n;
    if (q && *v++ != q)
        return false;
    v += strspn(v, " ");
    return *v == ',' || *v == '}';
}

/* @l with the flow value of @key replaced by @val: a new line (@l freed), or NULL when the
 * key is not there (@l kept). */
static char *flow_set(char *l, const char *key, const char *val)
{
    char *v = flow_value(l, key), *e = v ? flow_value_end(v) : NULL;
    if (!e)
        return NULL;
    char *y = NULL;
    if (asprintf(&y, "%.*s%s%s", (int)(v - l), l, val, e) < 0)
        return NULL;
    free(l);
    return y;
}

static bool is_key(const char *l, int indent, const char *key)
{
    size_t n = strlen(key);
    return indent_of(l) == indent && !strncmp(l + indent, key, n) && l[indent + n] == ':';
}

/*
 * In lines [@from, @to), the item "- name: NAME" (with @flow also "- {name: NAME, ...}" on
 * one line) of the block list under key @key at indent @ki (the list's items at @ki or
 * deeper): its line, and in *@end the end of its block. -1 when not there in that form.
 */
static int find_item(const struct text *x, int from, int to, int ki, const char *key,
                     const char *name, bool flow, int *end)
{
    int k = from;
    while (k < to && !is_key(x->l[k], ki, key))
        k++;
    if (k == to)
        return -1;
    /* the list: deeper lines, or "- " items at the key's own indent */
    int e = k + 1, ii = -1;
    while (e < to && (blank_or_comment(x->l[e]) || indent_of(x->l[e]) > ki ||
                      (indent_of(x->l[e]) == ki && x->l[e][ki] == '-'))) {
        if (ii < 0 && !blank_or_comment(x->l[e]))
            ii = indent_of(x->l[e]);
        e++;
    }
    for (int i = k + 1; i < e; i++) {
        if (indent_of(x->l[i]) != ii ||
            !(is_name_item(x->l[i], name) || (flow && is_flow_item(x->l[i], name))))
            continue;
        int j = i + 1;
        while (j < e && (blank_or_comment(x->l[j]) || indent_of(x->l[j]) > ii))
            j++;
        *end = j;
        return i;
    }
    return -1;
}

/* The one-line flow variant at line @at of @x with @g's batch_sizes and latency_ms (and
 * share_scaled false), its comment lines above it. */
static int rewrite_flow(struct text *x, int at, const struct prof *p, const struct target *g)
{
    char bs[16 * 8], lat[MAX_S * (24 + MAX_B * 16)], b[32];
    int k = snprintf(bs, sizeof(bs), "[");
    for (int i = 0; i < g->n_b; i++)
        k += snprintf(bs + k, sizeof(bs) - (size_t)k, "%s%d", i ? ", " : "", g->batches[i]);
    snprintf(bs + k, sizeof(bs) - (size_t)k, "]");
    k = snprintf(lat, sizeof(lat), "%s", g->n_s > 1 ? "{" : "");
    for (int s = 0; s < g->n_s; s++) {
        if (g->n_s > 1)
            k += snprintf(lat + k, sizeof(lat) - (size_t)k, "%s%g: ", s ? ", " : "", g->shares[s]);
        for (int i = 0; i < g->n_b; i++)
            k += snprintf(lat + k, sizeof(lat) - (size_t)k, "%s%s", i ? ", " : "[",
                          fmt_ms(g->tau[s][i], b, sizeof(b)));
        k += snprintf(lat + k, sizeof(lat) - (size_t)k, "]");
    }
    snprintf(lat + k, sizeof(lat) - (size_t)k, "%s", g->n_s > 1 ? "}" : "");
    char *l = flow_set(x->l[at], "batch_sizes", bs);
    if (l)
        x->l[at] = l;
    char *m = l ? flow_set(x->l[at], "latency_ms", lat) : NULL;
    if (!m) {
        fprintf(stderr, "loki profile: cannot rewrite the flow mapping of variant %s\n",
                var_of(p, g)->name);
        return -1;
    }
    x->l[at] = m;
    if (flow_value(x->l[at], "share_scaled") && (l = flow_set(x->l[at], "share_scaled", "false")))
        x->l[at] = l;
    /* the comments: the old ones above the item go, the new ones come */
    int ii = indent_of(x->l[at]), top = at;
    while (top > 0 && is_about(x->l[top - 1], ii))
        top--;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return -ENOMEM;
    print_about(p, g, f, ii);
    fclose(f);
    struct text y = {0};
    int rc = 0;
    for (int i = 0; i < x->n && !rc; i++) {
        if (i >= top && i < at) {
            free(x->l[i]);
            x->l[i] = NULL;
            continue;
        }
        if (i == at)
            for (char *s = buf, *nl; !rc && *s; s = nl + 1) {
                nl = strchr(s, '\n');
                rc = text_push(&y, strndup(s, (size_t)(nl - s + 1)));
            }
        if (!rc)
            rc = text_push(&y, x->l[i]);
        x->l[i] = NULL;
    }
    free(buf);
    if (rc) {
        text_free(&y);
        return rc;
    }
    text_free(x);
    *x = y;
    return 0;
}

/* Replace @g's batch_sizes, latency_ms and share_scaled in @x (with their nested lines) by
 * the measured ones, at the place of the first of them. Block-style YAML only. */
static int rewrite_variant(struct text *x, const struct prof *p, const struct target *g)
{
    const struct loki_pipeline *pl = &p->t->pipelines[g->pi];
    const char *keys[3] = {"pipelines", "tasks", "variants"};
    const char *names[3] = {pl->name, pl->tasks[g->ti].name, var_of(p, g)->name};
    int at = -1, from = 0, end = x->n, ki = 0;
    for (int k = 0; k < 3; k++) {
        if ((at = find_item(x, from, end, ki, keys[k], names[k], k == 2, &end)) < 0) {
            fprintf(stderr,
                    "loki profile: cannot find variant %s in %s as block YAML (%s: with "
                    "\"- name: %s\"); copy the profile printed above into it by hand\n",
                    names[2], p->topology, keys[k], names[k]);
            return -1;
        }
        from = at + 1;
        ki = indent_of(x->l[at]) + 2;
    }
    if (x->l[at][ki] == '{')
        return rewrite_flow(x, at, p, g);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m)
        return -ENOMEM;
    emit_profile(p, g, m, ki);
    fclose(m);
    struct text y = {0};
    int rc = 0;
    bool written = false;
    /* the key lines end where the block's trailing blank lines start */
    int last = end;
    while (last > at + 1 && blank_or_comment(x->l[last - 1]))
        last--;
    for (int i = 0; i <= x->n && !rc; i++) {
        if (i == last && !written) { /* none of the keys in the block: add them at its end */
            for (char *s = buf, *nl; !rc && *s; s = nl + 1) {
                nl = strchr(s, '\n');
                rc = text_push(&y, strndup(s, (size_t)(nl - s + 1)));
            }
            written = true;
        }
        if (i == x->n)
            break;
        if (i > at && i < last && is_about(x->l[i], ki)) {
            free(x->l[i]);
            x->l[i] = NULL;
            continue;
        }
        if (i > at && i < last &&
            (is_key(x->l[i], ki, "batch_sizes") || is_key(x->l[i], ki, "latency_ms") ||
             is_key(x->l[i], ki, "share_scaled"))) {
            if (!written)
                for (char *s = buf, *nl; !rc && *s; s = nl + 1) {
                    nl = strchr(s, '\n');
                    rc = text_push(&y, strndup(s, (size_t)(nl - s + 1)));
                }
            written = true;
            /* drop the old key and everything nested under it */
            free(x->l[i]);
            x->l[i] = NULL;
            while (i + 1 < last &&
                   (x->l[i + 1][indent_of(x->l[i + 1])] == '\n' || indent_of(x->l[i + 1]) > ki)) {
                free(x->l[++i]);
                x->l[i] = NULL;
            }
            continue;
        }
        rc = text_push(&y, x->l[i]);
        x->l[i] = NULL;
    }
    free(buf);
    if (rc) {
        text_free(&y);
        return rc;
    }
    text_free(x);
    *x = y;
    return 0;
}

/* The value @ms takes once written and read back. */
static double as_written(double ms)
{
    char b[32];
    return strtod(fmt_ms(ms, b, sizeof(b)), NULL);
}

/*
 * Write every target's profile into a copy of the topology text (p->out), checked first:
 * the copy must load, and each variant carry what was measured.
 */
static int write_topology(const struct prof *p)
{
    FILE *in = fopen(p->topology, "r");
    if (!in) {
        fprintf(stderr, "loki profile: %s: %s\n", p->topology, strerror(errno));
        return -1;
    }
    struct text x = {0};
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    while (!rc && getline(&line, &cap, in) > 0) {
        rc = text_push(&x, line);
        line = NULL;
        cap = 0;
    }
    free(line);
    fclose(in);
    /* a last line without its newline */
    if (!rc && x.n && x.l[x.n - 1][strlen(x.l[x.n - 1]) - 1] != '\n') {
        size_t n = strlen(x.l[x.n - 1]);
        char *l = realloc(x.l[x.n - 1], n + 2);
        if (l) {
            l[n] = '\n';
            l[n + 1] = 0;
            x.l[x.n - 1] = l;
        } else {
            rc = -ENOMEM;
        }
    }
    for (int i = 0; i < p->n_tg && !rc; i++) {
        const struct loki_variant *v = var_of(p, &p->tg[i]);
        if (v->n_shares > p->tg[i].n_s)
            fprintf(stderr,
                    "loki profile: %s had latencies at %d shares; the copy keeps the %d "
                    "measured\n",
                    v->name, v->n_shares, p->tg[i].n_s);
        rc = rewrite_variant(&x, p, &p->tg[i]);
    }
    if (rc) {
        if (rc == -ENOMEM)
            fprintf(stderr, "loki profile: out of memory\n");
        text_free(&x);
        return -1;
    }
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s.tmp%d", p->out, (int)getpid());
    FILE *out = fopen(tmp, "w");
    if (!out) {
        fprintf(stderr, "loki profile: %s: %s\n", tmp, strerror(errno));
        text_free(&x);
        return -1;
    }
    for (int i = 0; i < x.n; i++)
        fputs(x.l[i], out);
    text_free(&x);
    if (fclose(out)) {
        fprintf(stderr, "loki profile: %s: %s\n", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    char err[4096];
    struct loki_topology *chk;
    if (loki_topology_load(tmp, &chk, err, sizeof(err))) {
        fprintf(stderr, "loki profile: the rewritten topology does not load:\n%s\n", err);
        unlink(tmp);
        return -1;
    }
    bool same = true;
    for (int i = 0; i < p->n_tg; i++) {
        const struct target *g = &p->tg[i];
        const struct loki_variant *v = &chk->pipelines[g->pi].tasks[g->ti].variants[g->vi];
        same &= v->n_shares == g->n_s && v->n_batches == g->n_b && !v->share_scaled;
        for (int s = 0; same && s < g->n_s; s++)
            for (int b = 0; b < g->n_b; b++)
                same &= fabs(v->shares[s] - g->shares[s]) < 1e-9 &&
                        v->batches[b] == g->batches[b] &&
                        fabs(v->latency_ms[s][b] - as_written(g->tau[s][b])) < 1e-9;
    }
    free(chk);
    if (!same || rename(tmp, p->out)) {
        fprintf(stderr, "loki profile: could not write %s%s\n", p->out,
                same ? "" : " (the rewritten variants do not carry the measured profiles)");
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* ---- the command ---------------------------------------------------------------------------- */

int loki_cli_profile(int argc, char **argv)
{
    static struct prof p;
    memset(&p, 0, sizeof(p));
    p.reps = 7;
    p.warmup = 3;
    p.gpu = -2;
    p.payload_bytes = -1;
    enum { O_CHILD = 256, O_WARMUP, O_PFILE, O_PBYTES };
    static const struct option lo[] = {{"topology", required_argument, 0, 't'},
                                       {"variant", required_argument, 0, 'v'},
                                       {"pipeline", required_argument, 0, 'p'},
                                       {"task", required_argument, 0, 'k'},
                                       {"batches", required_argument, 0, 'b'},
                                       {"shares", required_argument, 0, 's'},
                                       {"write", required_argument, 0, 'o'},
                                       {"out", required_argument, 0, 'o'},
                                       {"from", required_argument, 0, 'f'},
                                       {"reps", required_argument, 0, 'r'},
                                       {"warmup", required_argument, 0, O_WARMUP},
                                       {"payload-file", required_argument, 0, O_PFILE},
                                       {"payload-bytes", required_argument, 0, O_PBYTES},
                                       {"gpu", required_argument, 0, 'g'},
                                       {"backend", required_argument, 0, 'B'},
                                       {"green", no_argument, 0, 'G'},
                                       {"child", no_argument, 0, O_CHILD}, /* internal */
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    const char *reps = NULL, *warmup = NULL, *pbytes = NULL, *gpu = NULL;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
        switch (c) {
        case 't':
            p.topology = optarg;
            break;
        case 'v':
            p.variant = optarg;
            break;
        case 'p':
            p.pipeline = optarg;
            break;
        case 'k':
            p.task = optarg;
            break;
        case 'b':
            p.batch_list = optarg;
            break;
        case 's':
            p.share_list = optarg;
            break;
        case 'o':
            p.out = optarg;
            break;
        case 'f':
            p.from = optarg;
            break;
        case 'r':
            reps = optarg;
            break;
        case O_WARMUP:
            warmup = optarg;
            break;
        case O_PFILE:
            p.payload_file = optarg;
            break;
        case O_PBYTES:
            pbytes = optarg;
            break;
        case 'g':
            gpu = optarg;
            break;
        case 'B':
            p.backend = optarg;
            break;
        case 'G':
            p.green = true;
            break;
        case O_CHILD:
            p.child = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            return loki__cli_bad_option("profile", c, argv);
        }
    }
    if (optind != argc)
        return loki__cli_usage_error("profile", "unexpected argument '%s'", argv[optind]);
    if (!p.topology)
        return loki__cli_usage_error("profile", "--topology F is required");
    if (!p.variant && !p.task && !p.pipeline)
        return loki__cli_usage_error("profile", "name what to measure: --variant V, --task T "
                                                "or --pipeline P");
    if ((reps && (p.reps = (int)parse_count(reps, 1, MAX_REPS)) < 0) ||
        (warmup && (p.warmup = (int)parse_count(warmup, 0, 1000)) < 0) ||
        (gpu && (p.gpu = (int)parse_count(gpu, 0, 1023)) < 0))
        return loki__cli_usage_error("profile",
                                     "--reps takes 1..%d, --warmup 0..1000 and "
                                     "--gpu a GPU index",
                                     MAX_REPS);
    if (pbytes && (p.payload_bytes = parse_count(pbytes, 0, MAX_PAYLOAD)) < 0)
        return loki__cli_usage_error("profile", "--payload-bytes takes 0..%u", MAX_PAYLOAD);
    enum loki_backend_kind kind = LOKI_BACKEND_SIM;
    if (p.backend) {
        /* the topology's own rule: sim, cuda, or a path to a .so */
        if (!strcmp(p.backend, "cuda"))
            kind = LOKI_BACKEND_CUDA;
        else if (strchr(p.backend, '/') || strstr(p.backend, ".so"))
            kind = LOKI_BACKEND_PLUGIN;
        else if (strcmp(p.backend, "sim"))
            return loki__cli_usage_error("profile", "--backend takes sim, cuda or a path to a "
                                                    "plugin .so");
        if (strlen(p.backend) >= LOKI_PATH_MAX)
            return loki__cli_usage_error("profile", "--backend: path too long");
    }
    if (pbytes && p.payload_file)
        return loki__cli_usage_error("profile", "--payload-file and --payload-bytes exclude "
                                                "each other");
    char err[8192];
    if (loki_topology_load(p.topology, &p.t, err, sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int rc = 1;
    if (find_targets(&p))
        goto out;
    if ((p.from || p.child) && p.n_tg != 1) {
        fprintf(stderr, "loki profile: --from measures one variant: name it with --variant\n");
        goto out;
    }
    if (p.backend)
        for (int i = 0; i < p.n_tg; i++) {
            /* measured with another backend: the variants in our copy of the topology say so */
            struct loki_variant *v =
                &p.t->pipelines[p.tg[i].pi].tasks[p.tg[i].ti].variants[p.tg[i].vi];
            v->backend = kind;
            snprintf(v->backend_path, sizeof(v->backend_path), "%s",
                     kind == LOKI_BACKEND_PLUGIN ? p.backend : "");
        }
    if ((rc = plan_targets(&p)))
        goto out;
    rc = 1;
    if (p.gpu == -2) {
        p.gpu = -1;
#ifdef LOKI_HAVE_CUDA
        /* a cuda variant's GPU is 0 unless named; another backend gets one only when visible */
        bool want = p.from;
        for (int i = 0; i < p.n_tg; i++)
            want |= var_of(&p, &p.tg[i])->backend == LOKI_BACKEND_CUDA;
        if (want || loki_cuda_device_count() > 0)
            p.gpu = 0;
#endif
    }
    if (!p.from && load_payload(&p))
        goto out;
    /* as a worker: no 50 us timer slack added to the backend's timed sleeps */
    prctl(PR_SET_TIMERSLACK, 1ul, 0ul, 0ul, 0ul);
    if (p.child) {
        rc = child_main(&p);
        goto out;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
        fprintf(stderr, "loki profile: cannot find own executable\n");
        goto out;
    }
    self[n] = 0;
    int failed = 0;
    for (int i = 0; i < p.n_tg; i++) {
        struct target *g = &p.tg[i];
        char lb[3 * LOKI_NAME_MAX + 3];
        if (p.from ? read_measured(&p, g) : measure(&p, g, self)) {
            failed++;
            continue;
        }
        printf("%s# %s\n", i ? "\n" : "", label(&p, g, lb, sizeof(lb)));
        emit_profile(&p, g, stdout, 0);
        fflush(stdout);
    }
    if (failed) {
        if (p.out)
            fprintf(stderr, "loki profile: %d of %d variants failed; %s not written\n", failed,
                    p.n_tg, p.out);
        goto out;
    }
    if (p.out) {
        if (write_topology(&p))
            goto out;
        fprintf(stderr, "loki profile: wrote %s\n", p.out);
    }
    rc = 0;
out:
    for (int a = 0; a < LOKI_MAX_PIPELINES; a++)
        for (int b = 0; b < LOKI_MAX_TASKS; b++) {
            free(p.pools[a][b].buf);
            free(p.pools[a][b].off);
            free(p.pools[a][b].len);
        }
    free(p.payload);
    free(p.tg);
    free(p.t);
    return rc;
}
