/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `loki profile`'s insides, shared by runtime/cli/cmd_profile.c (the command: which variants,
 * their inputs, how each is measured), profile_measure.c (timing a backend in this process,
 * in child processes under MPS, the cuda workload) and profile_yaml.c (the tables it prints
 * and the topology copy it writes). The loki tool's one thread.
 */
#ifndef LOKI_PROFILE_INTERNAL_H
#define LOKI_PROFILE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "loki/model.h"

#define MAX_B LOKI_MAX_BATCHES
#define MAX_S LOKI_MAX_SHARES
#define MAX_REPS 512
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

static inline const struct loki_variant *var_of(const struct prof *p, const struct target *g)
{
    return &p->t->pipelines[g->pi].tasks[g->ti].variants[g->vi];
}

/* "pipeline/task/variant" */
static inline const char *label(const struct prof *p, const struct target *g, char *b, size_t n)
{
    const struct loki_pipeline *pl = &p->t->pipelines[g->pi];
    snprintf(b, n, "%s/%s/%s", pl->name, pl->tasks[g->ti].name, var_of(p, g)->name);
    return b;
}

/*
 * Load @g's backend as a worker does, at share @g->shares[@s], and time batches of each of
 * its batch sizes into @g->tau[@s] (at share 1 also what each query emitted, and the child
 * payloads its child tasks measured later get). Returns 0, or the error after saying why on
 * stderr; -ECONNREFUSED from init as it is (an MPS server refused the client).
 */
int loki__profile_inproc(struct prof *p, struct target *g, int s);

/* Each share of @g in its own child process (@self profile --child): share 1 without MPS,
 * each share below 1 as an MPS client. Returns 0 or -1 after saying why. */
int loki__profile_children(struct prof *p, struct target *g, const char *self);

#ifdef LOKI_HAVE_CUDA
/* The cuda workload of @g in this process: calibrated at share 1 (or LOKI_CUDA_WORK), then
 * the first @n_shares shares on resized green contexts. Returns 0 or the error. */
int loki__profile_cuda(struct prof *p, struct target *g, int n_shares);
#endif

/* @g's comment lines, batch_sizes and latency_ms (a list for share 1 alone, else a mapping
 * from share with share_scaled: false), indented by @ind. */
void loki__profile_emit(const struct prof *p, const struct target *g, FILE *f, int ind);

/* Every target's profile into a copy of the topology file (p->out), which must load and carry
 * what was measured before it replaces anything. Returns 0 or -1 after saying why. */
int loki__profile_write(const struct prof *p);

#endif
