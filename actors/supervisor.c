/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Supervisor (see supervisor.h): spawn and reap worker processes, their rings,
 * completion polling. Placement is supervisor_place.c, the MPS daemons and the
 * GPU environment of a worker supervisor_mps.c, the worker's side worker*.c.
 *
 *   lokid (loop thread)                       worker process (one per instance)
 *   ───────────────────                       ─────────────────────────────────
 *   req ring  [producer] ── memfd fd 3 ──▶   [consumer] waits: spin, then futex
 *   res ring  [consumer] ◀── memfd fd 4 ──   [producer] writes eventfd fd 6
 *   payload arena (alloc/free here) ─ fd 5 ─▶ read-only use of payload refs
 *   configuration snapshot (sealed) ── fd 7 ─▶ parsed once, closed
 *   output arena (read, free here) ◀── fd 8 ─ allocates its outputs there
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
 * A worker's configuration is lokid's sealed snapshot of the topology it
 * validated (loki_config_seal()), not the file: an edit to the file reaches
 * no worker until lokid reloads it (loki_sup_set_config()), and then only
 * workers started afterwards.
 *
 * Spawning runs on the loop thread, so it must be cheap: posix_spawn (glibc:
 * clone with CLONE_VM|CLONE_VFORK, no copy of lokid's page tables; the loop
 * waits only until the child has exec'd), not fork. File actions put the
 * worker's six descriptors on 3..8 (each first duplicated to 10 or above, so
 * no source sits on a target) and /dev/null on 0; 1 and 2 are inherited, and
 * everything from 9 up is closed. Signals come back to their defaults and the
 * mask is emptied, as libuv did for its children. The exit is seen through a
 * pidfd (pidfd_open(2), Linux 5.3) on a uv_poll handle and reaped with
 * waitpid(pid, WNOHANG): no SIGCHLD handler, and nothing here uses uv_spawn
 * (the MPS control binary is rare and runs with fork, waited for in place:
 * supervisor_mps.c, with the per-GPU daemons and the worker environment).
 * A worker gets lokid's log level as --log-level, so that it logs what lokid
 * would, in the same format, on the stderr it inherits.
 */
#include "supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "loki/arena.h"
#include "loki/clock.h"
#include "loki/error.h"
#include "loki/log.h"
#include "loki/ring.h"
#include "supervisor_mps.h"
#include "supervisor_place.h"
#include "worker.h"

_Static_assert(LOKI_WORKER_EXIT_MPS == LOKI_SUP_EXIT_MPS, "one exit status for MPS refusals");
_Static_assert(LOKI_WORKER_FD_REQ == 3 && LOKI_WORKER_FD_RES == 4 && LOKI_WORKER_FD_ARENA == 5 &&
                   LOKI_WORKER_FD_NOTIFY == 6 && LOKI_WORKER_FD_CONFIG == 7 &&
                   LOKI_WORKER_FD_OUT == 8,
               "spawn_worker() puts the req ring, res ring, arena, eventfd, config, output "
               "arena on 3..8");

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434 /* the same on every architecture */
#endif

#define MAX_INST LOKI_MAX_INSTANCE_IDS

#define SENT_RING 16u /* send times kept per worker (EWMA samples, hop log) */
#define HOP_LOG_MAX (1u << 20)

struct worker {
    bool stopping, ready;
    int inst;
    struct loki_plan_instance pi;
    int req_fd, res_fd, out_fd;
    struct loki_ring *req, *res;
    struct loki_arena *out; /* its output arena: it allocates, we read and free */
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
    struct loki_sup_config cfg;
    struct loki_sup_ops ops;
    void *ctx;
    struct loki_placement *place;
    int arena_fd, efd;
    int config_fd; /* our duplicate of the snapshot new workers load */
    struct loki_sup_stats stats;
    unsigned fail_streak; /* start failures since the last start that worked */
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
    struct loki__sup_mps mps; /* per-GPU control daemons, the run folder */
    /* workers that exited unasked, per variant (loki_sup_crashes()) */
    uint64_t crashes[LOKI_MAX_PIPELINES][LOKI_MAX_TASKS][LOKI_MAX_VARIANTS];
};

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
    s->cfg = *cfg;
    s->ops = *ops;
    s->ctx = ctx;
    s->arena_fd = s->efd = -1;
    s->config_fd = cfg->config_fd >= 0 ? fcntl(cfg->config_fd, F_DUPFD_CLOEXEC, 3) : -1;
    if (s->config_fd < 0) {
        rc = cfg->config_fd >= 0 ? -errno : -EBADF;
        free(s);
        return rc;
    }
    if ((rc = loki__sup_mps_init(&s->mps, topo, cfg->mps, cfg->run_dir))) {
        close(s->config_fd);
        free(s);
        return rc;
    }
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
    close(s->config_fd);
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
    loki_arena_destroy(w->out);
    w->out = NULL;
    if (w->out_fd >= 0)
        close(w->out_fd);
    w->out_fd = -1;
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
    if (!expected && w->pi.pipeline >= 0 && w->pi.pipeline < LOKI_MAX_PIPELINES &&
        w->pi.task >= 0 && w->pi.task < LOKI_MAX_TASKS && w->pi.variant >= 0 &&
        w->pi.variant < LOKI_MAX_VARIANTS)
        s->crashes[w->pi.pipeline][w->pi.task][w->pi.variant]++;
    if (!expected && sig == 0 && status == LOKI_SUP_EXIT_MPS)
        loki_log(LOKI_LOG_WARN,
                 "worker %d (GPU %d, share %.2f) was refused by the MPS server (client limit "
                 "reached or server not ready): retrying with backoff",
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

#define N_FDS 6
/* where spawn_worker() puts each of its descriptors in the worker */
static const int fd_at[N_FDS] = {LOKI_WORKER_FD_REQ,    LOKI_WORKER_FD_RES,    LOKI_WORKER_FD_ARENA,
                                 LOKI_WORKER_FD_NOTIFY, LOKI_WORKER_FD_CONFIG, LOKI_WORKER_FD_OUT};

/*
 * Start @exe with @argv and @env, @fds[i] on its descriptor fd_at[i], /dev/null on 0,
 * our 1 and 2, nothing else; signals at their defaults, none blocked. Returns 0 (the
 * child's pid in @pid) or negative (an exec failure too: glibc reports it and reaps).
 */
static int spawn_worker(const char *exe, char **argv, char **env, const int fds[N_FDS], pid_t *pid)
{
    int dup[N_FDS] = {-1, -1, -1, -1, -1, -1}, rc = 0;
    for (int i = 0; i < N_FDS && rc == 0; i++)
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
            for (int i = 0; i < N_FDS && rc == 0; i++)
                rc = -posix_spawn_file_actions_adddup2(&fa, dup[i], fd_at[i]);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 34)
            /* also what lokid inherited without close-on-exec (ours all have it) */
            if (rc == 0)
                rc = -posix_spawn_file_actions_addclosefrom_np(&fa, LOKI_WORKER_FD_OUT + 1);
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
    for (int i = 0; i < N_FDS; i++)
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

/* The level loki_log_init() was given in this process: what its workers log at too. */
static enum loki_log_level log_level(void)
{
    enum loki_log_level l = LOKI_LOG_DEBUG;
    while (l < LOKI_LOG_ERROR && !loki_log_enabled(l))
        l++;
    return l;
}

/*
 * A start of worker @inst failed at @step with @rc: count it and say why, with the
 * descriptor limit when that is the cause (lokid raises its soft limit to the hard one at
 * start; what is left is the hard limit, LimitNOFILE under systemd). The first failure
 * after a start that worked is an error; the rest of the streak (retries, the other
 * instances of the same plan) are debug lines, so a limit that persists does not flood.
 */
static int start_failed(struct loki_sup *s, int inst, const char *step, int rc)
{
    s->stats.start_failed++;
    s->stats.last_start_error = rc;
    enum loki_log_level lvl = s->fail_streak++ ? LOKI_LOG_DEBUG : LOKI_LOG_ERROR;
    const char *more = lvl == LOKI_LOG_ERROR ? " (more failures: debug, until a start works)" : "";
    struct rlimit rl;
    if ((rc == -EMFILE || rc == -ENFILE) && getrlimit(RLIMIT_NOFILE, &rl) == 0)
        loki_log(lvl,
                 "worker %d not started: %s: %s (RLIMIT_NOFILE %llu, hard %llu; %d workers "
                 "running): raise the limit (LimitNOFILE=) or plan fewer instances%s",
                 inst, step, loki_strerror(rc), (unsigned long long)rl.rlim_cur,
                 (unsigned long long)rl.rlim_max, s->alive, more);
    else
        loki_log(lvl, "worker %d not started: %s: %s%s", inst, step, loki_strerror(rc), more);
    return rc;
}

int loki_sup_start(struct loki_sup *s, int inst, const struct loki_plan_instance *pi)
{
    if (inst < 0 || inst >= MAX_INST)
        return -EINVAL;
    if (s->w[inst]) /* the router reused the id of a worker that has not exited yet */
        return start_failed(s, inst, "instance id still in use", -EBUSY);
    struct worker *w = calloc(1, sizeof(*w));
    const char *step = "rings and output arena";
    int rc;
    if (!w)
        return start_failed(s, inst, "out of memory", -ENOMEM);
    w->inst = inst;
    w->pi = *pi;
    w->sup = s;
    w->req_fd = w->res_fd = w->out_fd = -1;
    if ((rc = make_ring(s->cfg.ring_bytes, LOKI_RING_PRODUCER, &w->req_fd, &w->req)) ||
        (rc = make_ring(s->cfg.ring_bytes, LOKI_RING_CONSUMER, &w->res_fd, &w->res)))
        goto err;
    w->out_fd = memfd_create("loki-out", MFD_CLOEXEC);
    if (w->out_fd < 0) {
        rc = -errno;
        goto err;
    }
    if ((rc = loki_arena_create(w->out_fd,
                                s->cfg.out_arena_bytes ? s->cfg.out_arena_bytes : (size_t)64 << 20,
                                &w->out)))
        goto err;
    loki_ring_set_notify(w->res, s->efd, -1);
    loki_ring_notify_arm(w->res, 0);
    w->armed = true;

    char a_pipe[16], a_task[16], a_var[16], a_fb[16], a_batch[16], a_share[32], a_gpu[16],
        a_inst[16], a_seed[32], a_log[16];
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
    snprintf(a_log, sizeof(a_log), "%s", loki_log_level_name(log_level()));
    char *args[] = {(char *)s->cfg.self_exe,
                    "--worker",
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
                    "--log-level",
                    a_log,
                    NULL};

    /* environment: ours plus the GPU and MPS variables for this instance */
    struct loki__sup_env env;
    step = "GPU environment";
    if ((rc = loki__sup_mps_env(&s->mps, pi, &env))) {
        loki__sup_env_fini(&env);
        goto err;
    }

    int fds[N_FDS] = {w->req_fd, w->res_fd, s->arena_fd, s->efd, s->config_fd, w->out_fd};
    step = "spawn";
    rc = spawn_worker(s->cfg.self_exe, args, env.envp, fds, &w->pid);
    loki__sup_env_fini(&env);
    bool closing = false;
    if (rc == 0) {
        step = "watch its exit";
        if ((rc = watch_worker(s, w, &closing)) && closing) {
            free_rings(w); /* the handle's close frees w */
            return start_failed(s, inst, step, rc);
        }
    }
    if (rc)
        goto err;
    s->stats.started++;
    s->fail_streak = 0;
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
    return start_failed(s, inst, step, rc);
}

int loki_sup_set_config(struct loki_sup *s, int fd)
{
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (d < 0)
        return -errno;
    close(s->config_fd);
    s->config_fd = d;
    return 0;
}

const struct loki_sup_stats *loki_sup_stats(const struct loki_sup *s)
{
    return &s->stats;
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

struct loki_arena *loki_sup_out_arena(struct loki_sup *s, int inst)
{
    if (inst < 0 || inst >= MAX_INST || !s->w[inst])
        return NULL;
    return s->w[inst]->out;
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

uint64_t loki_sup_crashes(const struct loki_sup *s, int p, int t, int v)
{
    if (p < 0 || p >= LOKI_MAX_PIPELINES || t < 0 || t >= LOKI_MAX_TASKS || v < 0 ||
        v >= LOKI_MAX_VARIANTS)
        return 0;
    return s->crashes[p][t][v];
}

static void write_hop_log(struct loki_sup *s)
{
    const char *path = getenv("LOKI_HOP_LOG");
    FILE *f = s->hops && path ? fopen(path, "w") : NULL;
    for (size_t i = 0; f && i < s->n_hops; i++)
        fprintf(f, "%d %llu %llu\n", s->hops[i].inst, (unsigned long long)s->hops[i].send_ns,
                (unsigned long long)s->hops[i].transit_ns);
    if (f && fclose(f))
        loki_log(LOKI_LOG_WARN, "LOKI_HOP_LOG %s: %s", path, strerror(errno));
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
    loki__sup_mps_fini(&s->mps); /* after the SIGKILLs: quit waits for the server's clients */
    loki_arena_destroy(s->arena);
    close(s->arena_fd);
    close(s->efd);
    close(s->config_fd);
    loki_placement_destroy(s->place);
    free(s);
}
