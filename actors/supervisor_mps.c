/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The supervisor's MPS control daemons and the GPU environment of its workers
 * (see supervisor_mps.h).
 *
 * MPS (DESIGN.md §7): an MPS share is fixed when a CUDA context is created,
 * so a share is a property of the worker process. One control daemon runs
 * per GPU, started on the first CUDA worker for it and quit in destroy:
 *
 *   RUN/mps-G/pipe  CUDA_MPS_PIPE_DIRECTORY of the daemon and its clients
 *   RUN/mps-G/log   CUDA_MPS_LOG_DIRECTORY (control.log, server.log)
 *   worker env      CUDA_VISIBLE_DEVICES=G, CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=share,
 *                   CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=<memory_mb>M
 *
 * A client the server refuses exits with LOKI_SUP_EXIT_MPS; lokid restarts
 * it with backoff (the server may just not be up yet). The control binary is
 * rare and runs with fork, waited for in place on the loop thread.
 */
#include "supervisor_mps.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loki/log.h"

enum mps_state { MPS_NONE = 0, MPS_UP, MPS_FAILED };

static bool topo_wants_mps(const struct loki_topology *t)
{
    for (int p = 0; p < t->n_pipelines; p++)
        for (int k = 0; k < t->pipelines[p].n_tasks; k++)
            for (int v = 0; v < t->pipelines[p].tasks[k].n_variants; v++) {
                const struct loki_variant *var = &t->pipelines[p].tasks[k].variants[v];
                if (var->backend == LOKI_BACKEND_CUDA && var->n_shares > 1)
                    return true;
            }
    return false;
}

int loki__sup_mps_init(struct loki__sup_mps *m, const struct loki_topology *topo, bool enabled,
                       const char *run_dir)
{
    memset(m, 0, sizeof(*m));
    if (run_dir && strlen(run_dir) >= sizeof(m->run_dir) - 32)
        return -ENAMETOOLONG;
    m->topo = topo;
    m->enabled = enabled;
    m->wanted = enabled && topo_wants_mps(topo);
    m->cfg_run_dir = run_dir;
    return 0;
}

/* $LOKI_MPS_CONTROL, else nvidia-cuda-mps-control on $PATH. Returns 0 or -ENOENT. */
static int find_mps_control(char *buf, size_t len)
{
    const char *o = getenv("LOKI_MPS_CONTROL");
    if (o && *o) {
        snprintf(buf, len, "%s", o);
        return access(buf, X_OK) ? -ENOENT : 0;
    }
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t n = strcspn(path, ":");
        if (n && (size_t)snprintf(buf, len, "%.*s/nvidia-cuda-mps-control", (int)n, path) < len &&
            access(buf, X_OK) == 0)
            return 0;
        path += n + (path[n] == ':');
    }
    return -ENOENT;
}

static int ensure_run_dir(struct loki__sup_mps *m)
{
    if (m->run_dir[0])
        return 0;
    if (m->cfg_run_dir) {
        snprintf(m->run_dir, sizeof(m->run_dir), "%s", m->cfg_run_dir);
        if (mkdir(m->run_dir, 0700) && errno != EEXIST)
            return -errno;
        return 0;
    }
    const char *tmp = getenv("TMPDIR");
    /* short: the MPS pipe path must fit a Unix socket address */
    snprintf(m->run_dir, sizeof(m->run_dir), "%s/loki-%d-XXXXXX", tmp && *tmp ? tmp : "/tmp",
             (int)getpid());
    if (!mkdtemp(m->run_dir)) {
        m->run_dir[0] = 0;
        return -errno;
    }
    m->own_run_dir = true;
    return 0;
}

/*
 * Run the control binary for @gpu with @arg (or NULL) and @input on its stdin (or NULL),
 * waiting at most @timeout_ms. The environment is built before fork: lokid has threads,
 * so the child only calls dup2 and execve. Returns the exit status, or negative.
 */
static int run_mps_control(struct loki__sup_mps *m, int gpu, const char *arg, const char *input,
                           int timeout_ms)
{
    extern char **environ;
    char e_pipe[PATH_MAX], e_log[PATH_MAX], e_dev[64], e_order[] = "CUDA_DEVICE_ORDER=PCI_BUS_ID";
    snprintf(e_pipe, sizeof(e_pipe), "CUDA_MPS_PIPE_DIRECTORY=%s/mps-%d/pipe", m->run_dir, gpu);
    snprintf(e_log, sizeof(e_log), "CUDA_MPS_LOG_DIRECTORY=%s/mps-%d/log", m->run_dir, gpu);
    snprintf(e_dev, sizeof(e_dev), "CUDA_VISIBLE_DEVICES=%d", gpu);
    int n = 0;
    while (environ[n])
        n++;
    char **env = calloc((size_t)n + 5, sizeof(char *));
    if (!env)
        return -ENOMEM;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (strncmp(environ[i], "CUDA_", 5))
            env[k++] = environ[i];
    env[k++] = e_pipe;
    env[k++] = e_log;
    env[k++] = e_dev;
    env[k++] = e_order;
    char *argv[] = {m->ctl, (char *)arg, NULL};
    int in[2] = {-1, -1};
    if (input && pipe2(in, O_CLOEXEC)) {
        free(env);
        return -errno;
    }
    pid_t pid = fork();
    if (pid == 0) {
        if (in[0] >= 0)
            dup2(in[0], 0); /* dup2 clears O_CLOEXEC on fd 0 */
        /* the daemon outlives this call: it must not hold worker rings (inheritable memfds) */
        close_range(3, ~0u, 0);
        execve(m->ctl, argv, env);
        _exit(127);
    }
    int err = errno;
    free(env);
    if (in[0] >= 0)
        close(in[0]);
    if (pid < 0) {
        if (in[1] >= 0)
            close(in[1]);
        return -err;
    }
    if (in[1] >= 0 && input) {
        /* a short write to a fresh pipe never blocks; MSG_NOSIGNAL has no pipe twin, so a
         * control binary that died already costs at most an ignored EPIPE */
        void (*old)(int) = signal(SIGPIPE, SIG_IGN);
        ssize_t wr = write(in[1], input, strlen(input));
        (void)wr;
        signal(SIGPIPE, old);
        close(in[1]);
    }
    int status = 0;
    for (int waited = 0;; waited += 10) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR)
            return -errno;
        if (waited >= timeout_ms) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -ETIMEDOUT;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The MPS daemon of @gpu, started on first use. Returns true when workers should use it. */
static bool ensure_mps(struct loki__sup_mps *m, int gpu)
{
    if (gpu < 0 || gpu >= LOKI__SUP_MPS_MAX_GPUS)
        return false;
    if (m->state[gpu] != MPS_NONE)
        return m->state[gpu] == MPS_UP;
    m->state[gpu] = MPS_FAILED; /* until it is up: say why once, never retry per worker */
    if (!m->ctl[0] && find_mps_control(m->ctl, sizeof(m->ctl))) {
        m->ctl[0] = 0;
        if (!m->missing_told)
            loki_log(LOKI_LOG_WARN,
                     "mps: nvidia-cuda-mps-control not found (PATH, $LOKI_MPS_CONTROL): CUDA "
                     "workers run without MPS, so GPU shares below 1 are not enforced");
        m->missing_told = true;
        return false;
    }
    char d[PATH_MAX];
    int rc = ensure_run_dir(m);
    if (rc == 0) {
        const char *sub[] = {"", "/pipe", "/log"};
        for (int i = 0; i < 3 && rc == 0; i++) {
            snprintf(d, sizeof(d), "%s/mps-%d%s", m->run_dir, gpu, sub[i]);
            if (mkdir(d, 0700) && errno != EEXIST)
                rc = -errno;
        }
    }
    if (rc) {
        loki_log(LOKI_LOG_WARN, "mps: cannot make the run folder for GPU %d under %s: %s", gpu,
                 m->run_dir[0] ? m->run_dir : "$TMPDIR", strerror(-rc));
        return false;
    }
    rc = run_mps_control(m, gpu, "-d", NULL, 10000);
    if (rc != 0) {
        loki_log(LOKI_LOG_WARN,
                 "mps: %s -d for GPU %d failed (%s %d; see %s/mps-%d/log): CUDA workers on GPU %d "
                 "run without MPS",
                 m->ctl, gpu, rc < 0 ? "error" : "status", rc < 0 ? -rc : rc, m->run_dir, gpu, gpu);
        return false;
    }
    loki_log(LOKI_LOG_INFO, "mps: control daemon for GPU %d started (pipe %s/mps-%d/pipe)", gpu,
             m->run_dir, gpu);
    m->state[gpu] = MPS_UP;
    return true;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    remove(path);
    return 0;
}

void loki__sup_mps_fini(struct loki__sup_mps *m)
{
    for (int g = 0; g < LOKI__SUP_MPS_MAX_GPUS; g++) {
        if (m->state[g] != MPS_UP)
            continue;
        int rc = run_mps_control(m, g, NULL, "quit\n", 10000);
        if (rc)
            loki_log(LOKI_LOG_WARN, "mps: quit for GPU %d: %s %d", g, rc < 0 ? "error" : "status",
                     rc < 0 ? -rc : rc);
        else
            loki_log(LOKI_LOG_INFO, "mps: control daemon for GPU %d stopped", g);
        m->state[g] = MPS_NONE;
    }
    if (m->own_run_dir && !getenv("LOKI_KEEP_RUN_DIR"))
        nftw(m->run_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    m->own_run_dir = false;
    m->run_dir[0] = 0;
}

int loki__sup_mps_env(struct loki__sup_mps *m, const struct loki_plan_instance *pi,
                      struct loki__sup_env *e)
{
    static char e_order[] = "CUDA_DEVICE_ORDER=PCI_BUS_ID";
    extern char **environ;
    const struct loki_topology *topo = m->topo;
    int n_env = 0;
    while (environ[n_env])
        n_env++;
    e->envp = calloc((size_t)n_env + 8, sizeof(char *));
    const struct loki_variant *var = NULL;
    if (pi->pipeline >= 0 && pi->pipeline < topo->n_pipelines && pi->task >= 0 &&
        pi->task < topo->pipelines[pi->pipeline].n_tasks && pi->variant >= 0 &&
        pi->variant < topo->pipelines[pi->pipeline].tasks[pi->task].n_variants)
        var = &topo->pipelines[pi->pipeline].tasks[pi->task].variants[pi->variant];
    /* every CUDA worker on a GPU with a daemon is its client, whole-GPU ones included */
    bool mps = m->wanted && pi->gpu >= 0 && var && var->backend == LOKI_BACKEND_CUDA &&
               ensure_mps(m, pi->gpu);
    if (!e->envp)
        return -ENOMEM;
    char **env = e->envp;
    int k = 0;
    for (int i = 0; i < n_env; i++)
        if (strncmp(environ[i], "CUDA_VISIBLE_DEVICES=", 21) &&
            strncmp(environ[i], "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=", 34) &&
            (!mps || strncmp(environ[i], "CUDA_MPS_", 9)))
            env[k++] = environ[i];
    if (pi->gpu >= 0) {
        snprintf(e->dev, sizeof(e->dev), "CUDA_VISIBLE_DEVICES=%d", pi->gpu);
        env[k++] = e->dev;
        env[k++] = e_order;
        if (m->enabled && pi->share < 1.0) {
            snprintf(e->pct, sizeof(e->pct), "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=%d",
                     (int)(pi->share * 100 + 0.5));
            env[k++] = e->pct;
        }
        if (mps) {
            snprintf(e->pipe, sizeof(e->pipe), "CUDA_MPS_PIPE_DIRECTORY=%s/mps-%d/pipe", m->run_dir,
                     pi->gpu);
            snprintf(e->log, sizeof(e->log), "CUDA_MPS_LOG_DIRECTORY=%s/mps-%d/log", m->run_dir,
                     pi->gpu);
            env[k++] = e->pipe;
            env[k++] = e->log;
            /* its variant's memory plus its fallback's (loaded alongside) */
            double mb = var->mem_mb;
            int fb = loki_plan_fallback(pi);
            if (mb > 0 && fb >= 0 && fb < topo->pipelines[pi->pipeline].tasks[pi->task].n_variants)
                mb += topo->pipelines[pi->pipeline].tasks[pi->task].variants[fb].mem_mb;
            if (mb > 0) {
                /* the worker sees its GPU as device 0 (CUDA_VISIBLE_DEVICES above) */
                snprintf(e->mem, sizeof(e->mem), "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=%lldM",
                         (long long)(mb + 0.5));
                env[k++] = e->mem;
            }
        }
    }
    env[k] = NULL;
    return 0;
}

void loki__sup_env_fini(struct loki__sup_env *e)
{
    free(e->envp);
    e->envp = NULL;
}
