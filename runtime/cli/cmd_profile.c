/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `loki profile`: measure tau(b, s), ms per batch of b at GPU share s, for one
 * variant with the CUDA backend on the real GPU, and write it into a copy of
 * the topology file (latency_ms rewritten, share_scaled: false), so plans at
 * fractional shares rest on measurements. Each measurement runs in a child
 * process (`loki profile --child`): share 1 without MPS, where the backend
 * calibrates its work to the variant's whole-GPU profile; then each share
 * below 1 as an MPS client with that work fixed (LOKI_CUDA_WORK) and
 * CUDA_MPS_ACTIVE_THREAD_PERCENTAGE set. With --green the shares are green
 * contexts resized inside this one process instead. See docs/gpu.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "loki/model.h"
#include "loki/topology.h"
#ifdef LOKI_HAVE_CUDA
#include "loki/cuda.h"
#endif

#define MAX_B LOKI_MAX_BATCHES
#define MAX_S LOKI_MAX_SHARES

struct prof {
    const char *topology, *pipeline, *task, *variant, *out, *from;
    int batches[MAX_B], n_b;
    double shares[MAX_S];
    int n_s;
    int reps, gpu;
    bool green, child;
    /* found in the topology */
    int pi, ti, vi;
    struct loki_topology *t;
    /* results */
    int work[MAX_B], n_work;
    double tau[MAX_S][MAX_B];
};

static void usage(FILE *f)
{
    fprintf(f, "usage: loki profile --topology F --variant V [--pipeline P] [--task T]\n"
               "                    [--batches 1,2,4,...] [--shares 1,0.5,0.25] [--reps N]\n"
               "                    [--gpu G] [--green] [--from MEASURED] [--out F2]\n"
               "  measures ms per batch at each batch size and GPU share on the real GPU (cuda\n"
               "  backend; MPS children for shares < 1, or green contexts with --green) and\n"
               "  writes the profile into a copy of F (--out), with share_scaled: false.\n"
               "  --from takes the figures from a file of \"SHARE BATCH MS\" lines instead.\n"
               "  -h, --help       this help\n");
}

static int parse_ints(const char *s, int *out, int max)
{
    int n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 4096 || n == max || (n && v <= out[n - 1]))
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

static int find_variant(struct prof *p)
{
    int found = 0;
    for (int a = 0; a < p->t->n_pipelines; a++) {
        const struct loki_pipeline *pl = &p->t->pipelines[a];
        if (p->pipeline && strcmp(pl->name, p->pipeline))
            continue;
        for (int b = 0; b < pl->n_tasks; b++) {
            if (p->task && strcmp(pl->tasks[b].name, p->task))
                continue;
            int v = loki_task_variant_index(&pl->tasks[b], p->variant);
            if (v < 0)
                continue;
            if (found++) {
                fprintf(stderr,
                        "loki profile: variant %s is in more than one task; name the one "
                        "meant with --pipeline and --task\n",
                        p->variant);
                return -1;
            }
            p->pi = a;
            p->ti = b;
            p->vi = v;
        }
    }
    if (!found)
        fprintf(stderr, "loki profile: no variant %s%s%s in %s\n", p->variant,
                p->pipeline ? " in pipeline " : "", p->pipeline ? p->pipeline : "", p->topology);
    return found ? 0 : -1;
}

/* ---- the rewritten topology file ------------------------------------------------------------ */

static int indent_of(const char *l)
{
    int i = 0;
    while (l[i] == ' ')
        i++;
    return i;
}

static bool blank_or_comment(const char *l)
{
    l += indent_of(l);
    return *l == 0 || *l == '\n' || *l == '#';
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

static bool is_key(const char *l, int indent, const char *key)
{
    size_t n = strlen(key);
    return indent_of(l) == indent && !strncmp(l + indent, key, n) && l[indent + n] == ':';
}

static void fmt_share(char *b, size_t n, double s)
{
    snprintf(b, n, "%g", s);
}

/* The measured keys of a variant, indented by @key. */
static void emit_profile(const struct prof *p, FILE *out, int key)
{
    if (p->from)
        fprintf(out, "%*s# loki profile --from %s\n", key, "", p->from);
    else
        fprintf(out, "%*s# measured by loki profile (median of %d runs per point)\n", key, "",
                p->reps);
    fprintf(out, "%*sbatch_sizes: [", key, "");
    for (int b = 0; b < p->n_b; b++)
        fprintf(out, "%s%d", b ? ", " : "", p->batches[b]);
    fprintf(out, "]\n%*sshare_scaled: false\n%*slatency_ms:\n", key, "", key, "");
    for (int s = 0; s < p->n_s; s++) {
        char sb[32];
        fmt_share(sb, sizeof(sb), p->shares[s]);
        fprintf(out, "%*s%s: [", key + 2, "", sb);
        for (int b = 0; b < p->n_b; b++)
            fprintf(out, "%s%.2f", b ? ", " : "", p->tau[s][b]);
        fprintf(out, "]\n");
    }
}

/*
 * Write @p's profile into a copy of the topology text: in the variant's block, the keys
 * batch_sizes, latency_ms and share_scaled (with their nested lines) are replaced by the
 * measured ones, at the place of the first of them. Block-style YAML only.
 */
static int write_topology(const struct prof *p)
{
    FILE *in = fopen(p->topology, "r");
    if (!in) {
        fprintf(stderr, "loki profile: %s: %s\n", p->topology, strerror(errno));
        return -1;
    }
    char *lines[20000];
    int n = 0;
    char *line = NULL;
    size_t cap = 0;
    while (n < 20000 && getline(&line, &cap, in) > 0) {
        lines[n++] = line;
        line = NULL;
        cap = 0;
    }
    free(line);
    fclose(in);
    const struct loki_pipeline *pl = &p->t->pipelines[p->pi];
    const char *names[3] = {pl->name, pl->tasks[p->ti].name, pl->tasks[p->ti].variants[p->vi].name};
    int at = 0, rc = -1;
    for (int k = 0; k < 3; k++) {
        while (at < n && !is_name_item(lines[at], names[k]))
            at++;
        if (at == n)
            break;
        if (k < 2)
            at++;
    }
    char tmp[PATH_MAX];
    FILE *out = NULL;
    if (at >= n) {
        fprintf(stderr,
                "loki profile: cannot find variant %s in %s as block YAML (\"- name: %s\");"
                " copy the profile printed above into it by hand\n",
                names[2], p->topology, names[2]);
        goto done;
    }
    int item = indent_of(lines[at]), key = item + 2, end = at + 1;
    while (end < n && (blank_or_comment(lines[end]) || indent_of(lines[end]) > item))
        end++;
    snprintf(tmp, sizeof(tmp), "%s.tmp%d", p->out, (int)getpid());
    out = fopen(tmp, "w");
    if (!out) {
        fprintf(stderr, "loki profile: %s: %s\n", tmp, strerror(errno));
        goto done;
    }
    bool written = false;
    for (int i = 0; i <= n; i++) {
        if (i == end && !written) { /* none of the keys in the block: add them at its end */
            emit_profile(p, out, key);
            written = true;
        }
        if (i == n)
            break;
        if (i > at && i < end &&
            (is_key(lines[i], key, "batch_sizes") || is_key(lines[i], key, "latency_ms") ||
             is_key(lines[i], key, "share_scaled"))) {
            if (!written)
                emit_profile(p, out, key);
            written = true;
            /* drop the old key and everything nested under it */
            while (i + 1 < end &&
                   (lines[i + 1][indent_of(lines[i + 1])] == '\n' || indent_of(lines[i + 1]) > key))
                i++;
            continue;
        }
        fputs(lines[i], out);
    }
    if (fclose(out)) {
        fprintf(stderr, "loki profile: %s: %s\n", tmp, strerror(errno));
        unlink(tmp);
        goto done;
    }
    /* the copy must load and carry what was measured before it replaces anything */
    char err[4096];
    struct loki_topology *chk;
    if (loki_topology_load(tmp, &chk, err, sizeof(err))) {
        fprintf(stderr, "loki profile: the rewritten topology does not load:\n%s\n", err);
        unlink(tmp);
        goto done;
    }
    const struct loki_variant *v = &chk->pipelines[p->pi].tasks[p->ti].variants[p->vi];
    bool same = v->n_shares == p->n_s && v->n_batches == p->n_b && !v->share_scaled;
    free(chk);
    if (!same || rename(tmp, p->out)) {
        fprintf(stderr, "loki profile: could not write %s%s\n", p->out,
                same ? "" : " (the rewritten variant does not carry the measured profile)");
        unlink(tmp);
        goto done;
    }
    rc = 0;
done:
    for (int i = 0; i < n; i++)
        free(lines[i]);
    return rc;
}

static void print_profile(const struct prof *p, FILE *f)
{
    fprintf(f, "# %s/%s/%s: ms per batch", p->t->pipelines[p->pi].name,
            p->t->pipelines[p->pi].tasks[p->ti].name, p->variant);
    if (p->from)
        fprintf(f, ", from %s\n", p->from);
    else
        fprintf(f, ", median of %d runs (%s)\n", p->reps,
                p->green ? "green contexts" : "MPS shares");
    fprintf(f, "batch_sizes: [");
    for (int b = 0; b < p->n_b; b++)
        fprintf(f, "%s%d", b ? ", " : "", p->batches[b]);
    fprintf(f, "]\nshare_scaled: false\nlatency_ms:\n");
    for (int s = 0; s < p->n_s; s++) {
        char sb[32];
        fmt_share(sb, sizeof(sb), p->shares[s]);
        fprintf(f, "  %s: [", sb);
        for (int b = 0; b < p->n_b; b++)
            fprintf(f, "%s%.2f", b ? ", " : "", p->tau[s][b]);
        fprintf(f, "]\n");
    }
}

/* --from: "SHARE BATCH MS" lines ('#' comments) for every share and batch asked for. */
static int read_measured(struct prof *p)
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
        for (int s = 0; s < p->n_s; s++)
            for (int k = 0; k < p->n_b; k++)
                if (fabs(p->shares[s] - sh) < 1e-6 && p->batches[k] == b) {
                    p->tau[s][k] = ms;
                    seen[s][k] = true;
                }
    }
    fclose(f);
    for (int s = 0; s < p->n_s; s++)
        for (int k = 0; k < p->n_b; k++)
            if (!seen[s][k]) {
                fprintf(stderr, "%s: no figure for share %g, batch %d\n", p->from, p->shares[s],
                        p->batches[k]);
                rc = -1;
            }
    return rc;
}

#ifdef LOKI_HAVE_CUDA

/* ---- measuring ------------------------------------------------------------------------------ */

/* Backend config for the variant's whole-GPU profile, sized for every batch to measure. */
static void backend_config(const struct prof *p, struct loki_backend_config *c, double *means,
                           int *dists)
{
    const struct loki_pipeline *pl = &p->t->pipelines[p->pi];
    const struct loki_task *tk = &pl->tasks[p->ti];
    const struct loki_variant *v = &tk->variants[p->vi];
    for (int k = 0; k < tk->n_children; k++) {
        means[k] = v->fanout[k].mean;
        dists[k] = (int)v->fanout[k].dist;
    }
    int maxb = p->batches[p->n_b - 1] > v->batches[v->n_batches - 1] ? p->batches[p->n_b - 1]
                                                                     : v->batches[v->n_batches - 1];
    struct loki_backend_config cfg = {
        .pipeline = pl->name,
        .task = tk->name,
        .variant = v->name,
        .max_batch = maxb,
        .share = 1,
        .gpu = p->gpu,
        .n_batches = v->n_batches,
        .batches = v->batches,
        .latency_ms = v->latency_ms[0],
        .n_children = tk->n_children,
        .fanout_mean = means,
        .fanout_dist = dists,
        .seed = 1,
    };
    *c = cfg;
}

/* In this process: calibrate (or take LOKI_CUDA_WORK), measure at share 1, then, with
 * --green, at every other share on a resized green context. */
static int measure_here(struct prof *p, int n_shares)
{
    const struct loki_backend_v1 *be = loki_backend_cuda();
    struct loki_backend_config c;
    double means[LOKI_MAX_CHILDREN];
    int dists[LOKI_MAX_CHILDREN];
    void *st;
    backend_config(p, &c, means, dists);
    int rc = be->init(&c, &st);
    if (rc) {
        fprintf(stderr, "loki profile: cuda backend: %s\n", loki_cuda_last_error());
        return rc;
    }
    p->n_work = loki_cuda_work(st, p->work, MAX_B);
    for (int s = 0; s < n_shares && rc == 0; s++) {
        if (s > 0) {
            double ms;
            if ((rc = loki_cuda_green_resize(st, p->shares[s], &ms))) {
                fprintf(stderr, "loki profile: green context at share %g: %s\n", p->shares[s],
                        loki_cuda_last_error());
                break;
            }
            fprintf(stderr, "loki profile: green context of %d SMs (share %g) in %.1f ms\n",
                    loki_cuda_sm_count(st), p->shares[s], ms);
        }
        for (int b = 0; b < p->n_b && rc == 0; b++)
            if ((rc = loki_cuda_time_batch(st, p->batches[b], p->reps, &p->tau[s][b])))
                fprintf(stderr, "loki profile: batch %d: %s\n", p->batches[b],
                        loki_cuda_last_error());
    }
    be->fini(st);
    return rc;
}

/* `loki profile --child`: measure at the share the environment sets and print the lines
 * "work L1,L2,..." and "tau B MS" for the parent. */
static int child_main(struct prof *p)
{
    int rc = measure_here(p, 1);
    if (rc)
        return rc == LOKI_CUDA_EMPS ? LOKI_CUDA_EXIT_MPS : 1;
    printf("work ");
    for (int i = 0; i < p->n_work; i++)
        printf("%s%d", i ? "," : "", p->work[i]);
    printf("\n");
    for (int b = 0; b < p->n_b; b++)
        printf("tau %d %.4f\n", p->batches[b], p->tau[0][b]);
    return 0;
}

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

static int parse_child(struct prof *p, int s, const char *text)
{
    int seen = 0;
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        int b;
        double ms;
        if (!strncmp(l, "work ", 5) && s == 0) {
            const char *q = l + 5;
            p->n_work = 0;
            while (p->n_work < MAX_B && *q >= '0' && *q <= '9') {
                char *end;
                p->work[p->n_work++] = (int)strtol(q, &end, 10);
                q = *end == ',' ? end + 1 : end;
            }
        } else if (sscanf(l, "tau %d %lf", &b, &ms) == 2) {
            for (int k = 0; k < p->n_b; k++)
                if (p->batches[k] == b) {
                    p->tau[s][k] = ms;
                    seen++;
                }
        }
    }
    return seen == p->n_b ? 0 : -1;
}

static int measure_children(struct prof *p, const char *self)
{
    char *argv[24], bl[256], reps[16], gpu[16];
    int a = 0, k = 0, rc = 0;
    for (int b = 0; b < p->n_b; b++)
        k += snprintf(bl + k, sizeof(bl) - (size_t)k, "%s%d", b ? "," : "", p->batches[b]);
    snprintf(reps, sizeof(reps), "%d", p->reps);
    snprintf(gpu, sizeof(gpu), "%d", p->gpu);
    argv[a++] = (char *)self;
    argv[a++] = "profile";
    argv[a++] = "--child";
    argv[a++] = "--topology";
    argv[a++] = (char *)p->topology;
    argv[a++] = "--pipeline";
    argv[a++] = p->t->pipelines[p->pi].name;
    argv[a++] = "--task";
    argv[a++] = p->t->pipelines[p->pi].tasks[p->ti].name;
    argv[a++] = "--variant";
    argv[a++] = (char *)p->variant;
    argv[a++] = "--batches";
    argv[a++] = bl;
    argv[a++] = "--reps";
    argv[a++] = reps;
    argv[a++] = "--gpu";
    argv[a++] = gpu;
    argv[a] = NULL;
    static char out[65536];
    char e_dev[32], e_pct[64], e_work[256], e_pipe[PATH_MAX + 64], e_log[PATH_MAX + 64];
    char dir[PATH_MAX] = "", ctl[PATH_MAX] = "nvidia-cuda-mps-control";
    bool own_mps = false;
    snprintf(e_dev, sizeof(e_dev), "CUDA_VISIBLE_DEVICES=%d", p->gpu);

    /* share 1, no MPS: calibrates the work to the whole-GPU profile */
    char *env1[] = {e_dev, NULL};
    unsetenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE");
    rc = run(argv, env1, NULL, out, sizeof(out), 600);
    if (rc || parse_child(p, 0, out) || p->n_work < 1) {
        fprintf(stderr, "loki profile: share 1 measurement failed (status %d)\n", rc);
        return -1;
    }
    fprintf(stderr, "loki profile: share 1 done\n");
    if (p->n_s == 1)
        return 0;
    k = snprintf(e_work, sizeof(e_work), "LOKI_CUDA_WORK=");
    for (int i = 0; i < p->n_work; i++)
        k += snprintf(e_work + k, sizeof(e_work) - (size_t)k, "%s%d", i ? "," : "", p->work[i]);

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
                    "shares below 1 need MPS (or --green)\n",
                    ctl, rc, rc == 127 ? ", not on PATH" : "");
            rmdir(dir);
            return -1;
        }
        own_mps = true;
    }
    for (int s = 1; s < p->n_s && rc == 0; s++) {
        snprintf(e_pct, sizeof(e_pct), "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=%d",
                 (int)(p->shares[s] * 100 + 0.5));
        char *env[] = {e_dev, e_pipe, e_pct, e_work, NULL};
        for (int attempt = 0; attempt < 3; attempt++) {
            rc = run(argv, env, NULL, out, sizeof(out), 600);
            if (rc != LOKI_CUDA_EXIT_MPS)
                break;
            fprintf(stderr,
                    "loki profile: MPS refused the share %g client (server not ready or "
                    "client limit): retrying\n",
                    p->shares[s]);
            sleep(1u << attempt);
        }
        if (rc || parse_child(p, s, out)) {
            fprintf(stderr, "loki profile: share %g measurement failed (status %d)\n", p->shares[s],
                    rc);
            rc = -1;
        } else {
            fprintf(stderr, "loki profile: share %g done\n", p->shares[s]);
        }
    }
    if (own_mps) {
        char *qargv[] = {ctl, NULL};
        char *qenv[] = {e_dev, e_pipe, e_log, NULL};
        if (run(qargv, qenv, "quit\n", NULL, 0, 30))
            fprintf(stderr, "loki profile: MPS daemon in %s did not quit cleanly\n", dir);
        char cmd[PATH_MAX + 16];
        snprintf(cmd, sizeof(cmd), "%s/control.log", dir);
        unlink(cmd);
        snprintf(cmd, sizeof(cmd), "%s/server.log", dir);
        unlink(cmd);
        rmdir(dir); /* fails, harmlessly, while the daemon's pipes linger */
    }
    return rc;
}
#endif

int loki_cli_profile(int argc, char **argv)
{
    static struct prof p;
    const char *bs = NULL, *ss = "1,0.5,0.25";
    p.reps = 7;
    enum { O_CHILD = 256 };
    static const struct option lo[] = {
        {"topology", required_argument, 0, 't'}, {"variant", required_argument, 0, 'v'},
        {"pipeline", required_argument, 0, 'p'}, {"task", required_argument, 0, 'k'},
        {"batches", required_argument, 0, 'b'},  {"shares", required_argument, 0, 's'},
        {"out", required_argument, 0, 'o'},      {"from", required_argument, 0, 'f'},
        {"reps", required_argument, 0, 'r'},     {"gpu", required_argument, 0, 'g'},
        {"green", no_argument, 0, 'G'},          {"child", no_argument, 0, O_CHILD}, /* internal */
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
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
            bs = optarg;
            break;
        case 's':
            ss = optarg;
            break;
        case 'o':
            p.out = optarg;
            break;
        case 'f':
            p.from = optarg;
            break;
        case 'r':
            p.reps = atoi(optarg);
            break;
        case 'g':
            p.gpu = atoi(optarg);
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
    if (!p.topology || !p.variant)
        return loki__cli_usage_error("profile", "--topology F and --variant V are required");
    if (p.reps < 1 || p.reps > 512 || p.gpu < 0) {
        fprintf(stderr, "loki profile: --reps takes 1..512 and --gpu a GPU index\n");
        return 2;
    }
    if ((p.n_s = parse_shares(ss, p.shares, MAX_S)) < 1 || p.shares[0] != 1) {
        fprintf(stderr, "loki profile: --shares takes descending shares in (0, 1] starting "
                        "with 1, e.g. 1,0.5,0.25\n");
        return 2;
    }
    char err[8192];
    if (loki_topology_load(p.topology, &p.t, err, sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int rc = 1;
    if (find_variant(&p))
        goto out;
    const struct loki_variant *var = &p.t->pipelines[p.pi].tasks[p.ti].variants[p.vi];
    if (bs) {
        if ((p.n_b = parse_ints(bs, p.batches, MAX_B)) < 1) {
            fprintf(stderr, "loki profile: --batches takes ascending batch sizes, e.g. 1,2,4,8\n");
            rc = 2;
            goto out;
        }
    } else {
        p.n_b = var->n_batches;
        memcpy(p.batches, var->batches, sizeof(int) * (size_t)var->n_batches);
    }
    if (p.from) {
        if (read_measured(&p))
            goto out;
        goto report;
    }
#ifndef LOKI_HAVE_CUDA
    fprintf(stderr, "loki profile: this loki was built without the CUDA backend (nvcc was not "
                    "found at build time); profiles are measured on a GPU machine\n");
    goto out;
#else
    if (loki_cuda_device_count() < 1) {
        fprintf(stderr, "loki profile: no CUDA GPU visible here (no NVIDIA driver or no device); "
                        "profiles are measured on the real GPU\n");
        goto out;
    }
    if (p.child) {
        rc = child_main(&p);
        goto out;
    }
    if (p.green) {
        if (measure_here(&p, p.n_s))
            goto out;
    } else {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n <= 0) {
            fprintf(stderr, "loki profile: cannot find own executable\n");
            goto out;
        }
        self[n] = 0;
        if (measure_children(&p, self))
            goto out;
    }
#endif
report:
    print_profile(&p, stdout);
    if (p.out && write_topology(&p))
        goto out;
    if (p.out)
        fprintf(stderr, "loki profile: wrote %s\n", p.out);
    rc = 0;
out:
    free(p.t);
    return rc;
}
