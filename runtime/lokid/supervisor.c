/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Supervisor (see supervisor.h).
 *
 *   lokid (loop thread)                       worker process (one per instance)
 *   ───────────────────                       ─────────────────────────────────
 *   req ring  [producer] ── memfd fd 3 ──▶   [consumer] waits: spin, then futex
 *   res ring  [consumer] ◀── memfd fd 4 ──   [producer] writes eventfd fd 6
 *   payload arena (alloc/free here) ─ fd 5 ─▶ read-only use of payload refs
 *   one eventfd for all result rings: uv_poll wakes the loop once, and the
 *   loop drains every ring, then re-arms each (arm returning 1 = drain again)
 *
 * Completions from a fast worker are polled, not waited for: after sending a
 * batch to a worker whose batches come back within twice the spin time (an
 * EWMA of send-to-result, samples clipped at four times it so that one
 * preemption does not end the polling for long), the supervisor polls for up
 * to that long. It runs a uv_idle handle, so the
 * loop keeps serving its sockets but never sleeps, and looks at the result
 * rings on every turn (yielding the core when nothing came: on a small
 * machine the worker may need it). Its eventfd request is withdrawn meanwhile
 * (loki_ring_notify_disarm()), so the worker publishes without a syscall. When
 * nothing is due any more, or nothing came for twice the spin time, the handle
 * stops and every ring is armed again before the loop may sleep. Each hop
 * then costs one wakeup (the parked worker's futex) instead of two.
 *
 * With LOKI_HOP_LOG=FILE in its environment (bench_e2e sets it), lokid keeps
 * every batch's send-to-result time (the first HOP_LOG_MAX, in memory
 * allocated at start-up) and writes them to FILE at exit: "inst send_ns
 * transit_ns" per line, CLOCK_MONOTONIC, so a benchmark can pick the batches
 * of its own measurement windows.
 *
 * A worker is exec'd (not just forked) so it starts with a clean address
 * space and the same binary can be pinned and given CUDA/MPS environment.
 * Rings are single use: a restarted worker gets fresh ones.
 *
 * Spawning runs on the loop thread, so it must be cheap: posix_spawn (glibc:
 * clone with CLONE_VM|CLONE_VFORK, no copy of lokid's page tables; the loop
 * waits only until the child has exec'd), not fork. File actions put the
 * worker's four descriptors on 3..6 (each first duplicated to 10 or above, so
 * no source sits on a target) and /dev/null on 0; 1 and 2 are inherited, and
 * everything from 7 up is closed. Signals come back to their defaults and the
 * mask is emptied, as libuv did for its children. The exit is seen through a
 * pidfd (pidfd_open(2), Linux 5.3) on a uv_poll handle and reaped with
 * waitpid(pid, WNOHANG): no SIGCHLD handler, and nothing here uses uv_spawn
 * (the MPS control binary is rare and runs with fork, waited for in place).
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
 * it with backoff (the server may just not be up yet).
 */
#include "supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loki/arena.h"
#include "loki/clock.h"
#include "loki/error.h"
#include "loki/ring.h"
#include "loki/topology.h"
#include "loki/worker.h"
#include "placement.h"
#ifdef LOKI_HAVE_CUDA
#include "loki/cuda.h"
_Static_assert(LOKI_CUDA_EXIT_MPS == LOKI_SUP_EXIT_MPS, "one exit status for MPS refusals");
#endif

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434 /* the same on every architecture */
#endif

#define MAX_INST 4096
#define MAX_MPS_GPUS 64

enum mps_state { MPS_NONE = 0, MPS_UP, MPS_FAILED };

#define SENT_RING 16u /* send times kept per worker (EWMA samples, hop log) */
#define HOP_LOG_MAX (1u << 20)

struct worker {
    bool stopping, ready;
    int inst;
    struct loki_plan_instance pi;
    int req_fd, res_fd;
    struct loki_ring *req, *res;
    pid_t pid;
    int pidfd;           /* readable once the worker has exited */
    uv_poll_t exit_poll; /* on @pidfd; its close frees the worker */
    struct loki_sup *sup;
    /* completion polling: batches sent and answered, the send times of the last
     * SENT_RING sent (a sample needs its slot not yet reused), EWMA of send-to-result */
    uint64_t n_sent, n_done;
    uint64_t sent_ns[SENT_RING];
    uint64_t ewma_ns;
    bool armed; /* our eventfd request may be set on the result ring */
};

struct hop_sample {
    uint64_t send_ns, transit_ns;
    int inst;
};

struct loki_sup {
    uv_loop_t *loop;
    const struct loki_topology *topo;
    struct loki_sup_config cfg;
    struct loki_sup_ops ops;
    void *ctx;
    struct loki_placement *place;
    int arena_fd, efd;
    struct loki_arena *arena;
    uv_poll_t poll;
    uv_idle_t spin;          /* active while completions are polled */
    bool spinning;           /* @spin started */
    uint64_t spin_until;     /* stop polling at this time unless a result or send extends it */
    uint64_t due;            /* batches sent to workers and not answered yet */
    int hi;                  /* w[i] is NULL for every i >= hi */
    struct hop_sample *hops; /* LOKI_HOP_LOG: NULL when not asked for */
    size_t n_hops;
    struct worker *w[MAX_INST];
    int slots[256]; /* per GPU (+1 for none): next placement slot */
    int alive;
    bool mps_wanted;                 /* cfg.mps and a cuda variant with shares < 1 */
    bool mps_missing_told;           /* "no control binary" said once */
    bool own_run_dir;                /* we made run_dir: destroy removes it */
    char run_dir[PATH_MAX / 4];      /* "" until the first daemon needs it */
    char mps_ctl[PATH_MAX];          /* nvidia-cuda-mps-control, once found */
    unsigned char mps[MAX_MPS_GPUS]; /* enum mps_state per GPU */
};

/* ---- MPS control daemons -------------------------------------------------------------------- */

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

static int ensure_run_dir(struct loki_sup *s)
{
    if (s->run_dir[0])
        return 0;
    if (s->cfg.run_dir) {
        snprintf(s->run_dir, sizeof(s->run_dir), "%s", s->cfg.run_dir);
        if (mkdir(s->run_dir, 0700) && errno != EEXIST)
            return -errno;
        return 0;
    }
    const char *tmp = getenv("TMPDIR");
    /* short: the MPS pipe path must fit a Unix socket address */
    snprintf(s->run_dir, sizeof(s->run_dir), "%s/loki-%d-XXXXXX", tmp && *tmp ? tmp : "/tmp",
             (int)getpid());
    if (!mkdtemp(s->run_dir)) {
        s->run_dir[0] = 0;
        return -errno;
    }
    s->own_run_dir = true;
    return 0;
}

/*
 * Run the control binary for @gpu with @arg (or NULL) and @input on its stdin (or NULL),
 * waiting at most @timeout_ms. The environment is built before fork: lokid has threads,
 * so the child only calls dup2 and execve. Returns the exit status, or negative.
 */
static int run_mps_control(struct loki_sup *s, int gpu, const char *arg, const char *input,
                           int timeout_ms)
{
    extern char **environ;
    char e_pipe[PATH_MAX], e_log[PATH_MAX], e_dev[64], e_order[] = "CUDA_DEVICE_ORDER=PCI_BUS_ID";
    snprintf(e_pipe, sizeof(e_pipe), "CUDA_MPS_PIPE_DIRECTORY=%s/mps-%d/pipe", s->run_dir, gpu);
    snprintf(e_log, sizeof(e_log), "CUDA_MPS_LOG_DIRECTORY=%s/mps-%d/log", s->run_dir, gpu);
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
    char *argv[] = {s->mps_ctl, (char *)arg, NULL};
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
        execve(s->mps_ctl, argv, env);
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
static bool ensure_mps(struct loki_sup *s, int gpu)
{
    if (gpu < 0 || gpu >= MAX_MPS_GPUS)
        return false;
    if (s->mps[gpu] != MPS_NONE)
        return s->mps[gpu] == MPS_UP;
    s->mps[gpu] = MPS_FAILED; /* until it is up: say why once, never retry per worker */
    if (!s->mps_ctl[0] && find_mps_control(s->mps_ctl, sizeof(s->mps_ctl))) {
        s->mps_ctl[0] = 0;
        if (!s->mps_missing_told)
            fprintf(stderr,
                    "lokid: mps: nvidia-cuda-mps-control not found (PATH, $LOKI_MPS_CONTROL):"
                    " CUDA workers run without MPS, so GPU shares below 1 are not "
                    "enforced\n");
        s->mps_missing_told = true;
        return false;
    }
    char d[PATH_MAX];
    int rc = ensure_run_dir(s);
    if (rc == 0) {
        const char *sub[] = {"", "/pipe", "/log"};
        for (int i = 0; i < 3 && rc == 0; i++) {
            snprintf(d, sizeof(d), "%s/mps-%d%s", s->run_dir, gpu, sub[i]);
            if (mkdir(d, 0700) && errno != EEXIST)
                rc = -errno;
        }
    }
    if (rc) {
        fprintf(stderr, "lokid: mps: cannot make the run folder for GPU %d under %s: %s\n", gpu,
                s->run_dir[0] ? s->run_dir : "$TMPDIR", strerror(-rc));
        return false;
    }
    rc = run_mps_control(s, gpu, "-d", NULL, 10000);
    if (rc != 0) {
        fprintf(stderr,
                "lokid: mps: %s -d for GPU %d failed (%s %d; see %s/mps-%d/log): CUDA workers on "
                "GPU %d run without MPS\n",
                s->mps_ctl, gpu, rc < 0 ? "error" : "status", rc < 0 ? -rc : rc, s->run_dir, gpu,
                gpu);
        return false;
    }
    fprintf(stderr, "lokid: mps: control daemon for GPU %d started (pipe %s/mps-%d/pipe)\n", gpu,
            s->run_dir, gpu);
    s->mps[gpu] = MPS_UP;
    return true;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    remove(path);
    return 0;
}

static void stop_mps(struct loki_sup *s)
{
    for (int g = 0; g < MAX_MPS_GPUS; g++) {
        if (s->mps[g] != MPS_UP)
            continue;
        int rc = run_mps_control(s, g, NULL, "quit\n", 10000);
        if (rc)
            fprintf(stderr, "lokid: mps: quit for GPU %d: %s %d\n", g, rc < 0 ? "error" : "status",
                    rc < 0 ? -rc : rc);
        else
            fprintf(stderr, "lokid: mps: control daemon for GPU %d stopped\n", g);
        s->mps[g] = MPS_NONE;
    }
    if (s->own_run_dir && !getenv("LOKI_KEEP_RUN_DIR"))
        nftw(s->run_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    s->own_run_dir = false;
    s->run_dir[0] = 0;
}

/* A worker answers fast when its batches come back within twice the spin time: we poll that long.
 */
static uint64_t poll_ns(const struct loki_sup *s)
{
    return 2 * s->cfg.spin_ns;
}

static bool worker_is_fast(const struct loki_sup *s, const struct worker *w)
{
    return w->ewma_ns < poll_ns(s);
}

/* One result of @w seen at @now: its latency sample, and polling goes on while more is due. */
static void result_seen(struct loki_sup *s, struct worker *w, uint64_t now)
{
    if (w->n_done == w->n_sent)
        return; /* not one we sent (a corrupt record): nothing was due */
    if (w->n_sent - w->n_done <= SENT_RING) {
        uint64_t sent = w->sent_ns[w->n_done % SENT_RING];
        uint64_t clip = now - sent < 2 * poll_ns(s) ? now - sent : 2 * poll_ns(s);
        w->ewma_ns = w->ewma_ns - w->ewma_ns / 8 + clip / 8;
        if (s->hops && s->n_hops < HOP_LOG_MAX)
            s->hops[s->n_hops++] = (struct hop_sample){sent, now - sent, w->inst};
    }
    w->n_done++;
    s->due--;
    if (s->spinning && w->n_done != w->n_sent && worker_is_fast(s, w))
        s->spin_until = now + poll_ns(s);
}

/*
 * Hand every result record to the router; with @arm, request the eventfd on each
 * ring afterwards (loki_ring_notify_arm() returning 1: more came, drain again).
 * Returns the number of records taken.
 */
static int drain(struct loki_sup *s, bool arm)
{
    int taken = 0;
    for (int again = 1; again;) {
        again = 0;
        for (int i = 0; i < s->hi; i++) {
            struct worker *w = s->w[i];
            if (!w || !w->res)
                continue;
            const void *rec;
            size_t len;
            while (w->res && loki_ring_peek(w->res, &rec, &len) == 0) {
                struct loki_batch_view v;
                int rc = loki_batch_decode(rec, len, &v);
                taken++;
                if (rc == 0 && v.kind == LOKI_BATCH_KIND_RESULT) {
                    if (v.batch_id == LOKI_WORKER_READY_BATCH) {
                        w->ready = true;
                        loki_ring_consume(w->res);
                        s->ops.ready(s->ctx, w->inst);
                        continue;
                    }
                    result_seen(s, w, loki_now_ns());
                    s->ops.result(s->ctx, w->inst, &v);
                }
                /* a corrupt record is skipped; the batch it answered fails when the
                 * worker is restarted (the router re-runs in-flight batches) */
                if (w->res)
                    loki_ring_consume(w->res);
            }
            if (arm && w->res && !w->armed) {
                if (loki_ring_notify_arm(w->res, 0) == 1)
                    again = 1;
                else
                    w->armed = true;
            }
        }
    }
    return taken;
}

/* Polling turn (uv_idle: the loop does not sleep while it runs). */
static void on_spin(uv_idle_t *h)
{
    struct loki_sup *s = h->data;
    int taken = drain(s, false);
    if (s->due == 0 || loki_now_ns() >= s->spin_until) {
        s->spinning = false;
        uv_idle_stop(&s->spin);
        drain(s, true); /* armed before the loop may sleep: no result is missed */
    } else if (!taken) {
        sched_yield(); /* the worker we wait for may be queued behind us on this core */
    }
}

/* After a send to @w at @now: poll for its answer if it usually comes back fast. */
static void spin_for(struct loki_sup *s, struct worker *w, uint64_t now)
{
    if (!s->cfg.spin_ns || !worker_is_fast(s, w))
        return;
    if (now + poll_ns(s) > s->spin_until)
        s->spin_until = now + poll_ns(s);
    if (w->armed) {
        loki_ring_notify_disarm(w->res);
        w->armed = false;
    }
    if (!s->spinning) {
        s->spinning = true;
        uv_idle_start(&s->spin, on_spin);
    }
}

static void on_efd(uv_poll_t *h, int status, int events)
{
    struct loki_sup *s = h->data;
    uint64_t v;
    if (read(s->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        return;
    for (int i = 0; i < s->hi; i++)
        if (s->w[i])
            s->w[i]->armed = false; /* the publisher that wrote took the request with it */
    drain(s, !s->spinning);
}

int loki_sup_create(uv_loop_t *loop, const struct loki_topology *topo,
                    const struct loki_sup_config *cfg, const struct loki_sup_ops *ops, void *ctx,
                    struct loki_sup **out)
{
    struct loki_sup *s = calloc(1, sizeof(*s));
    int rc;
    if (!s)
        return -ENOMEM;
    s->loop = loop;
    s->topo = topo;
    s->cfg = *cfg;
    s->ops = *ops;
    s->ctx = ctx;
    s->arena_fd = s->efd = -1;
    if (cfg->run_dir && strlen(cfg->run_dir) >= sizeof(s->run_dir) - 32) {
        free(s);
        return -ENAMETOOLONG;
    }
    s->mps_wanted = cfg->mps && topo_wants_mps(topo);
    if ((rc = loki_placement_create(&s->place)))
        goto err;
    s->arena_fd = memfd_create("loki-arena", MFD_CLOEXEC);
    if (s->arena_fd < 0) {
        rc = -errno;
        goto err;
    }
    if ((rc = loki_arena_create(s->arena_fd, cfg->arena_bytes, &s->arena)))
        goto err;
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->efd < 0) {
        rc = -errno;
        goto err;
    }
    if ((rc = uv_poll_init(loop, &s->poll, s->efd)))
        goto err;
    s->poll.data = s;
    uv_poll_start(&s->poll, UV_READABLE, on_efd);
    uv_idle_init(loop, &s->spin);
    s->spin.data = s;
    if (getenv("LOKI_HOP_LOG"))
        s->hops = malloc(sizeof(*s->hops) * HOP_LOG_MAX); /* best effort: NULL logs nothing */
    *out = s;
    return 0;
err:
    if (s->arena)
        loki_arena_destroy(s->arena);
    if (s->arena_fd >= 0)
        close(s->arena_fd);
    if (s->efd >= 0)
        close(s->efd);
    loki_placement_destroy(s->place);
    free(s);
    return rc;
}

static void free_rings(struct worker *w)
{
    loki_ring_destroy(w->req);
    loki_ring_destroy(w->res);
    w->req = w->res = NULL;
    if (w->req_fd >= 0)
        close(w->req_fd);
    if (w->res_fd >= 0)
        close(w->res_fd);
    w->req_fd = w->res_fd = -1;
}

static void on_proc_closed(uv_handle_t *h)
{
    struct worker *w = h->data;
    close(w->pidfd);
    free(w);
}

/* The worker's pidfd is readable: it has exited. Reap it and tell lokid. */
static void on_exit_cb(uv_poll_t *h, int poll_status, int events)
{
    struct worker *w = h->data;
    struct loki_sup *s = w->sup;
    int st = 0;
    pid_t r;
    do
        r = waitpid(w->pid, &st, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return; /* not yet a zombie (a pidfd is readable only then: should not happen) */
    /* r < 0 (ECHILD: reaped elsewhere) still ends the worker, with an unknown status */
    int64_t status = r < 0 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 0;
    int sig = r > 0 && WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    bool expected = w->stopping;
    int inst = w->inst;
    if (!expected && sig == 0 && status == LOKI_SUP_EXIT_MPS)
        fprintf(stderr,
                "lokid: worker %d (GPU %d, share %.2f) was refused by the MPS server (client "
                "limit reached or server not ready): retrying with backoff\n",
                inst, w->pi.gpu, w->pi.share);
    /* results it published before dying are still delivered first */
    if (w->res)
        drain(s, !s->spinning);
    s->due -= w->n_sent - w->n_done; /* never answered: the router re-runs them */
    s->alive--;
    free_rings(w);
    s->w[inst] = NULL;
    uv_close((uv_handle_t *)&w->exit_poll, on_proc_closed);
    s->ops.exited(s->ctx, inst, status, sig, expected);
}

static int make_ring(size_t bytes, enum loki_ring_role role, int *fd, struct loki_ring **r)
{
    /* close-on-exec: only the worker it is for gets it (spawn_worker() puts it on 3 or 4) */
    *fd = memfd_create("loki-ring", MFD_CLOEXEC);
    if (*fd < 0)
        return -errno;
    int rc = loki_ring_create(*fd, bytes, role, r);
    if (rc) {
        close(*fd);
        *fd = -1;
    }
    return rc;
}

/*
 * Start @exe with @argv and @env, @fds[0..3] on its descriptors 3..6, /dev/null on 0,
 * our 1 and 2, nothing else; signals at their defaults, none blocked. Returns 0 (the
 * child's pid in @pid) or negative (an exec failure too: glibc reports it and reaps).
 */
static int spawn_worker(const char *exe, char **argv, char **env, const int fds[4], pid_t *pid)
{
    int dup[4] = {-1, -1, -1, -1}, rc = 0;
    for (int i = 0; i < 4 && rc == 0; i++)
        if ((dup[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 10)) < 0)
            rc = -errno;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all); /* glibc leaves out its internal signals; KILL and STOP are skipped */
    if (rc == 0 && (rc = -posix_spawn_file_actions_init(&fa)) == 0) {
        if ((rc = -posix_spawnattr_init(&at)) == 0) {
            rc = -posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
            /* dup2 clears close-on-exec on the target */
            for (int i = 0; i < 4 && rc == 0; i++)
                rc = -posix_spawn_file_actions_adddup2(&fa, dup[i], 3 + i);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 34)
            /* also what lokid inherited without close-on-exec (ours all have it) */
            if (rc == 0)
                rc = -posix_spawn_file_actions_addclosefrom_np(&fa, 7);
#endif
            if (rc == 0)
                rc = -posix_spawnattr_setsigmask(&at, &none);
            if (rc == 0)
                rc = -posix_spawnattr_setsigdefault(&at, &all);
            if (rc == 0)
                rc = -posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
            if (rc == 0)
                rc = -posix_spawn(pid, exe, &fa, &at, argv, env);
            posix_spawnattr_destroy(&at);
        }
        posix_spawn_file_actions_destroy(&fa);
    }
    for (int i = 0; i < 4; i++)
        if (dup[i] >= 0)
            close(dup[i]);
    return rc;
}

/*
 * Watch @w's exit (pid set). Returns 0, or negative with the child killed and reaped;
 * then @w is the caller's to free, unless *@closing: the handle's close frees it.
 */
static int watch_worker(struct loki_sup *s, struct worker *w, bool *closing)
{
    int rc = 0;
    *closing = false;
    w->pidfd = (int)syscall(SYS_pidfd_open, w->pid, 0); /* close-on-exec */
    if (w->pidfd < 0)
        rc = -errno;
    else if ((rc = uv_poll_init(s->loop, &w->exit_poll, w->pidfd)) == 0) {
        w->exit_poll.data = w;
        if ((rc = uv_poll_start(&w->exit_poll, UV_READABLE, on_exit_cb))) {
            uv_close((uv_handle_t *)&w->exit_poll, on_proc_closed);
            *closing = true;
        }
    }
    if (rc == 0)
        return 0;
    if (w->pidfd >= 0 && !*closing)
        close(w->pidfd);
    kill(w->pid, SIGKILL);
    while (waitpid(w->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    return rc;
}

int loki_sup_start(struct loki_sup *s, int inst, const struct loki_plan_instance *pi)
{
    if (inst < 0 || inst >= MAX_INST || s->w[inst])
        return -EINVAL;
    struct worker *w = calloc(1, sizeof(*w));
    int rc;
    if (!w)
        return -ENOMEM;
    w->inst = inst;
    w->pi = *pi;
    w->sup = s;
    w->req_fd = w->res_fd = -1;
    if ((rc = make_ring(s->cfg.ring_bytes, LOKI_RING_PRODUCER, &w->req_fd, &w->req)) ||
        (rc = make_ring(s->cfg.ring_bytes, LOKI_RING_CONSUMER, &w->res_fd, &w->res)))
        goto err;
    loki_ring_set_notify(w->res, s->efd, -1);
    loki_ring_notify_arm(w->res, 0);
    w->armed = true;

    char a_pipe[16], a_task[16], a_var[16], a_fb[16], a_batch[16], a_share[32], a_gpu[16],
        a_inst[16], a_seed[32];
    snprintf(a_pipe, sizeof(a_pipe), "%d", pi->pipeline);
    snprintf(a_task, sizeof(a_task), "%d", pi->task);
    snprintf(a_var, sizeof(a_var), "%d", pi->variant);
    snprintf(a_fb, sizeof(a_fb), "%d", pi->fallback);
    snprintf(a_batch, sizeof(a_batch), "%d", pi->batch);
    snprintf(a_share, sizeof(a_share), "%.6f", pi->share);
    snprintf(a_gpu, sizeof(a_gpu), "%d", pi->gpu);
    snprintf(a_inst, sizeof(a_inst), "%d", inst);
    snprintf(a_seed, sizeof(a_seed), "%llu",
             (unsigned long long)(s->cfg.seed * 1000003ull + (uint64_t)inst));
    char *args[] = {(char *)s->cfg.self_exe,
                    "--worker",
                    "--topology",
                    (char *)s->cfg.topology_path,
                    "--pipeline",
                    a_pipe,
                    "--task",
                    a_task,
                    "--variant",
                    a_var,
                    "--fallback",
                    a_fb,
                    "--batch",
                    a_batch,
                    "--share",
                    a_share,
                    "--gpu",
                    a_gpu,
                    "--instance",
                    a_inst,
                    "--seed",
                    a_seed,
                    NULL};

    /* environment: ours plus the GPU and MPS variables for this instance */
    extern char **environ;
    int n_env = 0;
    while (environ[n_env])
        n_env++;
    char **env = calloc((size_t)n_env + 8, sizeof(char *));
    char e_dev[64], e_mps[64], e_order[] = "CUDA_DEVICE_ORDER=PCI_BUS_ID";
    char e_pipe[PATH_MAX], e_log[PATH_MAX], e_mem[64];
    const struct loki_variant *var = NULL;
    if (pi->pipeline >= 0 && pi->pipeline < s->topo->n_pipelines && pi->task >= 0 &&
        pi->task < s->topo->pipelines[pi->pipeline].n_tasks && pi->variant >= 0 &&
        pi->variant < s->topo->pipelines[pi->pipeline].tasks[pi->task].n_variants)
        var = &s->topo->pipelines[pi->pipeline].tasks[pi->task].variants[pi->variant];
    /* every CUDA worker on a GPU with a daemon is its client, whole-GPU ones included */
    bool mps = s->mps_wanted && pi->gpu >= 0 && var && var->backend == LOKI_BACKEND_CUDA &&
               ensure_mps(s, pi->gpu);
    if (!env) {
        rc = -ENOMEM;
        goto err;
    }
    int k = 0;
    for (int i = 0; i < n_env; i++)
        if (strncmp(environ[i], "CUDA_VISIBLE_DEVICES=", 21) &&
            strncmp(environ[i], "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=", 34) &&
            (!mps || strncmp(environ[i], "CUDA_MPS_", 9)))
            env[k++] = environ[i];
    if (pi->gpu >= 0) {
        snprintf(e_dev, sizeof(e_dev), "CUDA_VISIBLE_DEVICES=%d", pi->gpu);
        env[k++] = e_dev;
        env[k++] = e_order;
        if (s->cfg.mps && pi->share < 1.0) {
            snprintf(e_mps, sizeof(e_mps), "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=%d",
                     (int)(pi->share * 100 + 0.5));
            env[k++] = e_mps;
        }
        if (mps) {
            snprintf(e_pipe, sizeof(e_pipe), "CUDA_MPS_PIPE_DIRECTORY=%s/mps-%d/pipe", s->run_dir,
                     pi->gpu);
            snprintf(e_log, sizeof(e_log), "CUDA_MPS_LOG_DIRECTORY=%s/mps-%d/log", s->run_dir,
                     pi->gpu);
            env[k++] = e_pipe;
            env[k++] = e_log;
            /* its variant's memory plus its fallback's (loaded alongside) */
            double mb = var->mem_mb;
            int fb = loki_plan_fallback(pi);
            if (mb > 0 && fb >= 0 &&
                fb < s->topo->pipelines[pi->pipeline].tasks[pi->task].n_variants)
                mb += s->topo->pipelines[pi->pipeline].tasks[pi->task].variants[fb].mem_mb;
            if (mb > 0) {
                /* the worker sees its GPU as device 0 (CUDA_VISIBLE_DEVICES above) */
                snprintf(e_mem, sizeof(e_mem), "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=%lldM",
                         (long long)(mb + 0.5));
                env[k++] = e_mem;
            }
        }
    }
    env[k] = NULL;

    int fds[4] = {w->req_fd, w->res_fd, s->arena_fd, s->efd};
    rc = spawn_worker(s->cfg.self_exe, args, env, fds, &w->pid);
    free(env);
    bool closing = false;
    if (rc == 0 && (rc = watch_worker(s, w, &closing)) && closing) {
        free_rings(w); /* the handle's close frees w */
        return rc;
    }
    if (rc)
        goto err;
    s->w[inst] = w;
    if (inst >= s->hi)
        s->hi = inst + 1;
    s->alive++;

    char cpus[64];
    int gslot = pi->gpu >= 0 && pi->gpu < 255 ? pi->gpu + 1 : 0;
    if (loki_placement_core_for(s->place, pi->gpu, s->slots[gslot]++, cpus, sizeof(cpus)) == 0)
        loki_placement_bind(s->place, w->pid, cpus); /* best effort: pinning is a hint */
    return 0;
err:
    free_rings(w);
    free(w);
    return rc;
}

int loki_sup_stop(struct loki_sup *s, int inst)
{
    if (inst < 0 || inst >= MAX_INST || !s->w[inst])
        return -ENOENT;
    struct worker *w = s->w[inst];
    w->stopping = true;
    /* detaching our producer side tells the worker to exit once drained */
    loki_ring_destroy(w->req);
    w->req = NULL;
    return 0;
}

int loki_sup_send(struct loki_sup *s, int inst, const struct loki_batch_desc *d)
{
    if (inst < 0 || inst >= MAX_INST || !s->w[inst] || !s->w[inst]->req)
        return -ENOENT;
    struct worker *w = s->w[inst];
    uint64_t now = loki_now_ns(); /* before encoding: the send is part of the hop */
    int rc = loki_batch_desc_send(w->req, d);
    if (rc == 0) {
        w->sent_ns[w->n_sent % SENT_RING] = now;
        w->n_sent++;
        s->due++;
        spin_for(s, w, now);
        return 0;
    }
    int peer = loki_ring_peer_check(s->w[inst]->req);
    return peer ? peer : rc;
}

struct loki_arena *loki_sup_arena(struct loki_sup *s)
{
    return s->arena;
}

int loki_sup_pid(const struct loki_sup *s, int inst)
{
    if (inst < 0 || inst >= MAX_INST || !s->w[inst])
        return -1;
    return s->w[inst]->pid;
}

int loki_sup_alive(const struct loki_sup *s)
{
    return s->alive;
}

static void write_hop_log(struct loki_sup *s)
{
    const char *path = getenv("LOKI_HOP_LOG");
    FILE *f = s->hops && path ? fopen(path, "w") : NULL;
    for (size_t i = 0; f && i < s->n_hops; i++)
        fprintf(f, "%d %llu %llu\n", s->hops[i].inst, (unsigned long long)s->hops[i].send_ns,
                (unsigned long long)s->hops[i].transit_ns);
    if (f && fclose(f))
        fprintf(stderr, "lokid: LOKI_HOP_LOG %s: %s\n", path, strerror(errno));
    free(s->hops);
}

void loki_sup_destroy(struct loki_sup *s)
{
    if (!s)
        return;
    for (int i = 0; i < MAX_INST; i++) {
        struct worker *w = s->w[i];
        if (!w)
            continue;
        kill(w->pid, SIGKILL); /* not reaped: lokid is on its way out */
        free_rings(w);
        uv_close((uv_handle_t *)&w->exit_poll, on_proc_closed);
        s->w[i] = NULL;
    }
    uv_close((uv_handle_t *)&s->poll, NULL);
    uv_close((uv_handle_t *)&s->spin, NULL);
    uv_run(s->loop, UV_RUN_NOWAIT);
    write_hop_log(s);
    stop_mps(s); /* after the SIGKILLs: quit waits for the server's clients to go */
    loki_arena_destroy(s->arena);
    close(s->arena_fd);
    close(s->efd);
    loki_placement_destroy(s->place);
    free(s);
}

/* ---- the worker side ------------------------------------------------------------------------ */

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

int loki_worker_process_main(int argc, char **argv)
{
    /* a worker never outlives lokid: its rings would have no reader */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1)
        return 1;
    const char *topo_path = NULL;
    long pipeline = -1, task = -1, variant = -1, fallback = 0, batch = 1, gpu = -1, inst = 0;
    double share = 1;
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(k, "--worker"))
            continue;
        if (!v) {
            fprintf(stderr, "lokid worker: %s needs a value\n", k);
            return 2;
        }
        i++;
        if (!strcmp(k, "--topology"))
            topo_path = v;
        else if (!strcmp(k, "--pipeline"))
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
            bad = int_arg(v, 0, MAX_INST - 1, &inst);
        else if (!strcmp(k, "--share"))
            share = atof(v);
        else if (!strcmp(k, "--seed"))
            seed = strtoull(v, NULL, 10);
        else
            bad = 1;
        if (bad) {
            fprintf(stderr, "lokid worker: bad argument %s %s\n", k, v);
            return 2;
        }
    }
    char err[8192];
    struct loki_topology *t;
    struct loki_config cfg;
    if (!topo_path || loki_config_load(topo_path, &t, &cfg, err, sizeof(err))) {
        fprintf(stderr, "lokid worker: %s\n", topo_path ? err : "--topology missing");
        return 2;
    }
    if (pipeline < 0 || pipeline >= t->n_pipelines || task < 0 ||
        task >= t->pipelines[pipeline].n_tasks || variant < 0 ||
        variant >= t->pipelines[pipeline].tasks[task].n_variants ||
        fallback > t->pipelines[pipeline].tasks[task].n_variants || fallback == variant + 1) {
        fprintf(stderr, "lokid worker: pipeline/task/variant/fallback index out of range\n");
        free(t);
        return 2;
    }
    struct loki_worker_args a = {
        .req_fd = 3,
        .res_fd = 4,
        .arena_fd = 5,
        .notify_fd = 6,
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
    int rc = loki_worker_run(&a, err, sizeof(err));
    if (rc)
        fprintf(stderr, "lokid worker %ld (%s): %s\n", inst,
                t->pipelines[pipeline].tasks[task].variants[variant].name, err);
    free(t);
    if (rc == -ECONNREFUSED)
        return LOKI_SUP_EXIT_MPS; /* the cuda backend's LOKI_CUDA_EMPS: MPS refused us */
    return rc ? 1 : 0;
}
