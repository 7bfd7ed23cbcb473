/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `loki profile` measuring (see cmd_profile.c): a backend timed in this process through the
 * ABI, its outputs and child payloads going to a heap sink with the worker's limits; each
 * share in a child process, below 1 as an MPS client of a daemon the operator's or ours; and
 * the cuda workload's own cudaEvent timing.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loki/backend.h"
#include "loki/backend_setup.h"
#include "loki/clock.h"
#include "loki/error.h"
#include "profile_internal.h"
#ifdef LOKI_HAVE_CUDA
#include "loki/cuda.h"
#endif

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
int loki__profile_inproc(struct prof *p, struct target *g, int s)
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
int loki__profile_children(struct prof *p, struct target *g, const char *self)
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
int loki__profile_cuda(struct prof *p, struct target *g, int n_shares)
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
