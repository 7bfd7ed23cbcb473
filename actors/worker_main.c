/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The worker process's main: lokid re-execs its own binary with --worker, so a
 * deployment has one executable, and this file is that mode's whole command
 * line. It starts the logger at the level lokid passed (--log-level; lokid
 * sets it to its own), loads the configuration lokid validated from the sealed
 * snapshot on descriptor 7 (never the topology file, which may have changed
 * since), checks the instance against it, and hands descriptors 3..6 and 8 (the output arena) to
 * loki_worker_run() (worker.c).
 */
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "loki/batch.h"
#include "loki/config.h"
#include "loki/log.h"
#include "loki/topology.h"
#ifdef LOKI_HAVE_CUDA
#include "loki/cuda.h"
_Static_assert(LOKI_CUDA_EXIT_MPS == LOKI_WORKER_EXIT_MPS, "one exit status for MPS refusals");
#endif

static int int_arg(const char *v, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi)
        return -1;
    *out = x;
    return 0;
}

/*
 * The logger first, so that even a bad argument is reported at lokid's level
 * and in its format: --log-level is looked up before the other arguments.
 * Returns 0, or -EINVAL with the logger at info.
 */
static int log_start(int argc, char **argv)
{
    enum loki_log_level lvl = LOKI_LOG_INFO;
    const char *v = NULL;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--log-level"))
            v = argv[i + 1];
    int rc = v ? loki_log_level_parse(v, &lvl) : 0;
    loki_log_init(rc ? LOKI_LOG_INFO : lvl);
    return rc;
}

int loki_worker_process_main(int argc, char **argv)
{
    /* a worker never outlives lokid: its rings would have no reader */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1)
        return 1;
    bool bad_level = log_start(argc, argv) != 0;
    long pipeline = -1, task = -1, variant = -1, fallback = 0, batch = 1, gpu = -1, inst = 0;
    double share = 1;
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(k, "--worker"))
            continue;
        if (!v) {
            loki_log(LOKI_LOG_ERROR, "worker: %s needs a value", k);
            return 2;
        }
        i++;
        if (!strcmp(k, "--pipeline"))
            bad = int_arg(v, 0, LOKI_MAX_PIPELINES - 1, &pipeline);
        else if (!strcmp(k, "--task"))
            bad = int_arg(v, 0, LOKI_MAX_TASKS - 1, &task);
        else if (!strcmp(k, "--variant"))
            bad = int_arg(v, 0, LOKI_MAX_VARIANTS - 1, &variant);
        else if (!strcmp(k, "--fallback"))
            bad = int_arg(v, 0, LOKI_MAX_VARIANTS, &fallback);
        else if (!strcmp(k, "--batch"))
            bad = int_arg(v, 1, LOKI_BATCH_MAX_QUERIES, &batch);
        else if (!strcmp(k, "--gpu"))
            bad = int_arg(v, -1, 1023, &gpu);
        else if (!strcmp(k, "--instance"))
            bad = int_arg(v, 0, LOKI_MAX_INSTANCE_IDS - 1, &inst);
        else if (!strcmp(k, "--share"))
            share = atof(v);
        else if (!strcmp(k, "--seed"))
            seed = strtoull(v, NULL, 10);
        else if (!strcmp(k, "--log-level"))
            bad = bad_level; /* read by log_start() */
        else
            bad = 1;
        if (bad) {
            loki_log(LOKI_LOG_ERROR, "worker: bad argument %s %s", k, v);
            return 2;
        }
    }
    char err[8192];
    struct loki_topology *t;
    struct loki_config cfg;
    int rc = loki_config_load_sealed(LOKI_WORKER_FD_CONFIG, "lokid's configuration (fd 7)", &t,
                                     &cfg, err, sizeof(err));
    close(LOKI_WORKER_FD_CONFIG); /* loaded: nothing reads it again */
    if (rc) {
        loki_log(LOKI_LOG_ERROR, "worker: %s", err);
        return 2;
    }
    if (pipeline < 0 || pipeline >= t->n_pipelines || task < 0 ||
        task >= t->pipelines[pipeline].n_tasks || variant < 0 ||
        variant >= t->pipelines[pipeline].tasks[task].n_variants ||
        fallback > t->pipelines[pipeline].tasks[task].n_variants || fallback == variant + 1) {
        loki_log(LOKI_LOG_ERROR, "worker: pipeline/task/variant/fallback index out of range");
        free(t);
        return 2;
    }
    const char *name = t->pipelines[pipeline].tasks[task].variants[variant].name;
    struct loki_worker_args a = {
        .req_fd = LOKI_WORKER_FD_REQ,
        .res_fd = LOKI_WORKER_FD_RES,
        .arena_fd = LOKI_WORKER_FD_ARENA,
        .notify_fd = LOKI_WORKER_FD_NOTIFY,
        /* lokid's supervisor always passes it; a worker started by hand may run without */
        .out_fd = fcntl(LOKI_WORKER_FD_OUT, F_GETFD) >= 0 ? LOKI_WORKER_FD_OUT : -1,
        .topo = t,
        .pipeline = (int)pipeline,
        .task = (int)task,
        .variant = (int)variant,
        .fallback = (int)fallback,
        .batch = (int)batch,
        .share = share,
        .gpu = (int)gpu,
        .instance_id = (uint32_t)inst,
        .seed = seed,
        .spin_ns = (uint64_t)(cfg.runtime.spin_us * 1e3),
    };
    loki_log(LOKI_LOG_DEBUG,
             "worker %ld (%s): pid %d, batch %ld, share %.2f, gpu %ld, spin %.0f us", inst, name,
             (int)getpid(), batch, share, gpu, cfg.runtime.spin_us);
    rc = loki_worker_run(&a, err, sizeof(err));
    if (rc)
        loki_log(LOKI_LOG_ERROR, "worker %ld (%s): %s", inst, name, err);
    else
        loki_log(LOKI_LOG_DEBUG, "worker %ld (%s): detached, exiting", inst, name);
    free(t);
    if (rc == -ECONNREFUSED)
        return LOKI_WORKER_EXIT_MPS; /* the cuda backend's LOKI_CUDA_EMPS: MPS refused us */
    return rc ? 1 : 0;
}
