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
 *
 * Queries get the --payload-file bytes or synthetic ones, except that with --pipeline the
 * tasks are measured parents first and a task below the root gets the child payloads its
 * parent's first variant emitted: a classifier is timed on the crops a detector cut.
 *
 * Here: the command, which variants, their inputs and how each is measured;
 * profile_measure.c times backends, profile_yaml.c prints tables and writes the topology
 * copy. See docs/backend.md and docs/gpu.md.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "loki/model.h"
#include "loki/topology.h"
#include "profile_internal.h"
#ifdef LOKI_HAVE_CUDA
#include "loki/cuda.h"
#endif

#define MAX_PAYLOAD (256u << 20)
#define DEFAULT_PAYLOAD 1024

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
        if ((rc = loki__profile_cuda(p, g, 1)))
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
        if ((rc = loki__profile_inproc(p, g, 0)))
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
            if (loki__profile_inproc(p, g, s))
                return -1;
        }
        g->how = g->n_s > 1 ? "in this process, shares simulated" : "in this process";
        return 0;
    }
    if (v->backend == LOKI_BACKEND_PLUGIN) {
        if (g->n_s == 1) {
            g->how = "in this process";
            return loki__profile_inproc(p, g, 0) ? -1 : 0;
        }
        g->how = "MPS shares";
        return loki__profile_children(p, g, self) ? -1 : 0;
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
        return loki__profile_cuda(p, g, g->n_s) ? -1 : 0;
    }
    g->how = "MPS shares";
    return loki__profile_children(p, g, self) ? -1 : 0;
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
        loki__profile_emit(&p, g, stdout, 0);
        fflush(stdout);
    }
    if (failed) {
        if (p.out)
            fprintf(stderr, "loki profile: %d of %d variants failed; %s not written\n", failed,
                    p.n_tg, p.out);
        goto out;
    }
    if (p.out) {
        if (loki__profile_write(&p))
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
