/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Frontend actor: the Unix-socket face of lokid.
 *
 *   client ──bytes──▶ conn.rbuf ──frame──▶ decode ──validate──▶ on_request(owner)
 *                                                                   │ (router thread)
 *   client ◀──uv_write── node ◀── loop: async_cb ◀── MPSC queue ◀── loki_frontend_reply()
 *
 * Everything but loki_frontend_reply() runs on the loop thread. Reading: each
 * connection owns a receive buffer that grows (doubling) up to one maximum
 * frame plus slack; complete frames are handled in place and the remainder is
 * moved to the front, so a payload is never copied by the frontend: the owner
 * gets a pointer into the receive buffer, valid during its callback. A frame
 * whose prefix is over the limit gets an error frame and the connection is
 * shut down (its stream can no longer be framed); a frame that parses but is
 * wrong gets an error reply naming the problem and the connection carries on.
 * A frame must complete within frame_timeout_ms of its first byte.
 *
 * Connections: the frontend owns its listening socket (a uv_poll_t on it, so
 * that it decides what happens when accept() fails) and admits a connection
 * only under three caps: max_conns in all, max_conns_per_uid per peer uid
 * (SO_PEERCRED; a small hash of open connections per uid), and the process's
 * file descriptors (RLIMIT_NOFILE: the default caps take half of it, the rest
 * is lokid's; a connection that would take one of the last FD_SPARE is
 * refused). A refused connection gets one error frame naming the cap, written
 * straight to the fresh socket, and is closed at once, so a burst of refusals
 * holds no descriptors. When accept() itself fails for want of descriptors
 * (EMFILE/ENFILE), a reserve descriptor is closed to accept and refuse the
 * pending connections the same way, and accepting pauses ACCEPT_PAUSE_MS
 * instead of spinning on a listener that stays readable; it is logged once.
 *
 * Each connection has one timer, in one of three modes: FRAME while a frame is
 * incomplete, IDLE while nothing is in flight and nothing is buffered (a
 * connection that idles idle_timeout_s gets an error frame and is closed, so
 * idle connections cannot hold every slot), LINGER once it is closing (a peer
 * that does not read its last frames cannot keep it open). A connection closed
 * by the server (error frame, then shutdown) stops reading at once but first
 * writes the replies to the queries it had already accepted.
 *
 * Replies are encoded by the thread that calls loki_frontend_reply() into a
 * "node" (a write request plus buffer) taken from a small per-size-class cache,
 * so steady state allocates nothing. Off the loop thread the node is pushed on
 * a mutex-protected MPSC list; only the push that makes the list non-empty
 * calls uv_async_send() (under the lock, so it never races with the handle's
 * close in loki_frontend_stop()). The loop takes the whole list at once.
 * Writing is per loop turn: a frame is queued on its connection, and a
 * uv_prepare handle (started when the first connection gets a frame, so an
 * idle loop has none) writes each connection's frames just before the loop
 * polls, runs of small ones copied into one node and one uv_write(): a
 * worker's batch of 64 replies to one client is one write(2), not 64. A
 * connection shut down or closed by the server writes its queued frames first
 * (a close cancels only what the socket does not take at once, as before).
 *
 * Lifetime: a connection object is reference counted, on the loop thread only:
 * one reference for its open handles, one per delivered request (recorded in a
 * per-connection id set), one per write in progress. A reply removes its id
 * from the set and drops that reference; if the client has gone, the reply is
 * discarded (counted as late). An id that is not in the set (already answered)
 * is never dereferenced twice. Slow readers: bytes handed to uv_write() and
 * not yet completed are counted per connection; going over max_write_queue
 * drops the connection. Libraries do not log: every event is a counter.
 *
 * Files: this one has the listener, admission (caps, refusals) and the
 * frontend's lifecycle; frontend_conn.c a connection (timer, close, reading,
 * decoding); frontend_reply.c the nodes, writes and the reply queue;
 * frontend_internal.h what they share.
 */
#include "frontend_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "loki/compiler.h"
#include "loki/error.h"
#include "loki/log.h"

#define FD_SPARE 8            /* descriptors a connection never takes: lokid's last few */
#define ACCEPT_BATCH 64       /* connections accepted per listener wake-up */
#define ACCEPT_PAUSE_MS 100   /* accepting pauses this long when descriptors run out */
#define AUTO_MAX_CONNS 32768  /* ceiling of the max_conns sized from RLIMIT_NOFILE */
#define IDLE_DEFAULT_MS 60000 /* idle_timeout_s <= 0 */
#define REFUSAL_MAX 256       /* bytes of a refusal frame */

/* ---- open connections per uid ----------------------------------------------- */

static uint32_t uid_hash(uint32_t mask, uint32_t uid)
{
    return (uint32_t)(((uint64_t)uid * 0x9E3779B97F4A7C15ull) >> 32) & mask;
}

/* The slot holding @uid, or the free slot where it would go. */
static uint32_t uid_slot(const struct loki_frontend *fe, uint32_t uid)
{
    uint32_t i = uid_hash(fe->uid_mask, uid);
    while (fe->uidt[i].n && fe->uidt[i].uid != uid)
        i = (i + 1) & fe->uid_mask;
    return i;
}

static uint32_t uid_conns(const struct loki_frontend *fe, uint32_t uid)
{
    return fe->uidt[uid_slot(fe, uid)].n;
}

/* Count one more connection of @uid; -ENOMEM when the table could not grow. */
int loki__frontend_uid_add(struct loki_frontend *fe, uint32_t uid)
{
    uint32_t i = uid_slot(fe, uid);
    if (!fe->uidt[i].n && 2 * (fe->uid_used + 1) > fe->uid_mask + 1) {
        /* keep the load at most one half: double and reinsert */
        uint32_t cap = 2 * (fe->uid_mask + 1);
        struct uid_slot *t = calloc(cap, sizeof(*t)), *old = fe->uidt;
        if (!t)
            return -ENOMEM;
        uint32_t old_cap = fe->uid_mask + 1;
        fe->uidt = t;
        fe->uid_mask = cap - 1;
        for (uint32_t k = 0; k < old_cap; k++)
            if (old[k].n)
                t[uid_slot(fe, old[k].uid)] = old[k];
        free(old);
        i = uid_slot(fe, uid);
    }
    if (!fe->uidt[i].n) {
        fe->uidt[i].uid = uid;
        fe->uid_used++;
    }
    fe->uidt[i].n++;
    return 0;
}

/* One connection of @uid fewer; the slot is freed at zero (backward-shift deletion). */
void loki__frontend_uid_del(struct loki_frontend *fe, uint32_t uid)
{
    uint32_t i = uid_slot(fe, uid), mask = fe->uid_mask;
    LOKI_ASSERT(fe->uidt[i].n > 0);
    if (--fe->uidt[i].n > 0)
        return;
    fe->uid_used--;
    for (uint32_t j = (i + 1) & mask; fe->uidt[j].n; j = (j + 1) & mask) {
        uint32_t h = uid_hash(mask, fe->uidt[j].uid);
        bool movable = i <= j ? (h <= i || h > j) : (h <= i && h > j);
        if (movable) {
            fe->uidt[i] = fe->uidt[j];
            fe->uidt[j].n = 0;
            i = j;
        }
    }
}

/*
 * Refuse a connection that was never admitted: one error frame (it fits the fresh socket's
 * empty buffer, so a non-blocking send takes it whole), then close; the descriptor is back
 * at once. Loop thread.
 */
static void refuse_fd(struct loki_frontend *fe, int fd, enum loki_status status, const char *msg)
{
    uint8_t buf[REFUSAL_MAX];
    struct loki_reply r;
    loki_reply_init(&r);
    r.type = LOKI_MSG_NONE;
    r.status = status;
    r.error = loki_bytes_str(msg);
    if (status == LOKI_STATUS_OVERLOADED) {
        r.has_retry_after = true;
        r.retry_after_ms = fe->o.retry_after_ms;
    }
    STAT_ADD(fe, refused, 1); /* before the peer can see the close */
    ssize_t n = loki_proto_encode_reply(buf, sizeof(buf), &r);
    if (n > 0 && send(fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) == n)
        STAT_ADD(fe, bytes_out, n);
    close(fd);
}

/* Descriptors ran short: counted always, logged once (the operator's knob is the limit). */
static void note_fd_shortage(struct loki_frontend *fe, int err)
{
    STAT_ADD(fe, fd_exhausted, 1);
    if (fe->fd_logged)
        return;
    fe->fd_logged = true;
    loki_log(LOKI_LOG_WARN,
             "frontend: out of file descriptors (%s; RLIMIT_NOFILE %llu, %llu connections open): "
             "new connections are refused with an error frame until some close; raise the limit "
             "(LimitNOFILE) or lower frontend.max_connections (logged once)",
             err ? strerror(err) : "only the reserve left", (unsigned long long)fe->fd_limit,
             (unsigned long long)__atomic_load_n(&fe->st.connections, __ATOMIC_RELAXED));
}

static void refuse_no_fds(struct loki_frontend *fe, int fd)
{
    char msg[96];
    snprintf(msg, sizeof(msg), "out of file descriptors (limit %llu)",
             (unsigned long long)fe->fd_limit);
    refuse_fd(fe, fd, LOKI_STATUS_OVERLOADED, msg);
}

static void on_listen_io(uv_poll_t *p, int status, int events);

static void on_accept_resume(uv_timer_t *t)
{
    struct loki_frontend *fe = t->data;
    fe->paused = false;
    if (fe->reserve_fd < 0)
        fe->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fe->listening)
        uv_poll_start(&fe->lpoll, UV_READABLE, on_listen_io);
}

/* Stop accepting for ACCEPT_PAUSE_MS: the listener stays readable, so polling would spin. */
static void accept_pause(struct loki_frontend *fe)
{
    if (fe->paused || !fe->listening)
        return;
    fe->paused = true;
    uv_poll_stop(&fe->lpoll);
    uv_timer_start(&fe->pause_timer, on_accept_resume, ACCEPT_PAUSE_MS, 0);
}

/*
 * accept() failed with EMFILE/ENFILE: give up the reserve descriptor to accept and refuse,
 * with an error frame each, the connections waiting now (up to a batch), then pause.
 */
static void out_of_fds(struct loki_frontend *fe, int err)
{
    note_fd_shortage(fe, err);
    for (int k = 0; k < ACCEPT_BATCH && fe->reserve_fd >= 0; k++) {
        close(fe->reserve_fd);
        int fd = accept4(fe->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        int e = errno;
        if (fd >= 0) {
            if (k > 0)
                STAT_ADD(fe, fd_exhausted, 1);
            refuse_no_fds(fe, fd);
        }
        fe->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC); /* -1: retried on resume */
        if (fd < 0 && e != EINTR && e != ECONNABORTED)
            break;
    }
    accept_pause(fe);
}

static bool uid_allowed(const struct loki_frontend *fe, unsigned uid)
{
    if (fe->cfg.n_uids == 0)
        return true;
    for (int i = 0; i < fe->cfg.n_uids && i < LOKI_MAX_UIDS; i++)
        if (fe->cfg.uids[i] == uid)
            return true;
    return false;
}

/* Admit or refuse a freshly accepted socket. Takes @fd. Loop thread. */
static void admit(struct loki_frontend *fe, int fd)
{
    char msg[128];
    struct ucred cred = {0};
    socklen_t cl = sizeof(cred);
    if ((uint64_t)fd >= fe->fd_guard) {
        note_fd_shortage(fe, 0);
        refuse_no_fds(fe, fd);
        return;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
        close(fd);
        STAT_ADD(fe, refused, 1);
        return;
    }
    if (!uid_allowed(fe, cred.uid)) {
        snprintf(msg, sizeof(msg), "permission denied: uid %u is not allowed", cred.uid);
        refuse_fd(fe, fd, LOKI_STATUS_ERROR, msg);
        return;
    }
    if (__atomic_load_n(&fe->st.connections, __ATOMIC_RELAXED) >= fe->max_conns) {
        snprintf(msg, sizeof(msg), "too many connections (limit %u)", fe->max_conns);
        refuse_fd(fe, fd, LOKI_STATUS_OVERLOADED, msg);
        return;
    }
    if (uid_conns(fe, cred.uid) >= fe->max_conns_uid) {
        snprintf(msg, sizeof(msg), "too many connections from uid %u (limit %u)", cred.uid,
                 fe->max_conns_uid);
        refuse_fd(fe, fd, LOKI_STATUS_OVERLOADED, msg);
        return;
    }
    if (loki__frontend_conn_open(fe, fd, cred.uid) < 0)
        refuse_fd(fe, fd, LOKI_STATUS_ERROR, "server out of memory");
}

static void on_listen_io(uv_poll_t *p, int status, int events)
{
    struct loki_frontend *fe = p->data;
    (void)events;
    if (status < 0) {
        accept_pause(fe);
        return;
    }
    for (int k = 0; k < ACCEPT_BATCH && fe->listening && !fe->paused; k++) {
        int fd = accept4(fe->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            admit(fe, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        if (errno == EMFILE || errno == ENFILE)
            out_of_fds(fe, errno);
        else
            accept_pause(fe); /* ENOBUFS, ENOMEM...: try again shortly, do not spin */
        return;
    }
}

/* ---- lifecycle ------------------------------------------------------------ */

int loki_frontend_create(uv_loop_t *loop, const struct loki_frontend_opts *o,
                         struct loki_frontend **out)
{
    if (!loop || !o || !o->cfg || !o->on_request || o->n_pipelines < 0 ||
        o->n_pipelines > LOKI_PROTO_MAX_PIPELINES || (o->n_pipelines && !o->pipelines))
        return -EINVAL;
    if (o->cfg->max_payload == 0 || o->cfg->max_payload > UINT32_MAX - LOKI_PROTO_OVERHEAD)
        return -EINVAL;
    for (int i = 0; i < o->n_pipelines; i++)
        if (!o->pipelines[i] || !*o->pipelines[i] || strlen(o->pipelines[i]) > LOKI_PROTO_NAME_MAX)
            return -EINVAL;
    struct loki_frontend *fe = calloc(1, sizeof(*fe));
    if (!fe)
        return -ENOMEM;
    fe->loop = loop;
    fe->o = *o;
    fe->cfg = *o->cfg;
    fe->o.cfg = &fe->cfg;
    fe->o.pipelines = NULL;
    for (int i = 0; i < o->n_pipelines; i++)
        snprintf(fe->names[i], sizeof(fe->names[i]), "%s", o->pipelines[i]);
    if (!fe->o.max_outstanding)
        fe->o.max_outstanding = 1024;
    if (fe->o.max_outstanding > (1u << 24))
        fe->o.max_outstanding = 1u << 24;
    if (!fe->o.frame_timeout_ms)
        fe->o.frame_timeout_ms = 10000;
    if (!fe->cfg.max_inflight)
        fe->cfg.max_inflight = 65536;
    if (!fe->cfg.mode)
        fe->cfg.mode = 0660;
    if (!(fe->o.retry_after_ms > 0))
        fe->o.retry_after_ms = 50;
    if (!fe->o.server_name)
        fe->o.server_name = "lokid";
    fe->max_body = fe->cfg.max_payload + LOKI_PROTO_OVERHEAD;
    if (!fe->o.max_write_queue) {
        /* 4 MiB plus one frame, and never less than one reply carrying a whole result tree
         * (frontend.max_result_bytes of outputs), which could otherwise never be sent */
        uint64_t reply = (uint64_t)fe->cfg.max_result + LOKI_PROTO_OVERHEAD + LOKI_PROTO_HDR;
        uint64_t q = (4u << 20) + (uint64_t)fe->max_body + LOKI_PROTO_HDR;
        fe->o.max_write_queue = q > reply ? q : reply;
    }
    /* partial frames may hold this much beyond each connection's first RBUF_INIT bytes: the
     * larger of 256 MiB and two largest frames, and never less than one (else it could
     * never be received) */
    uint64_t one = (uint64_t)fe->max_body + LOKI_PROTO_HDR + RBUF_SLACK;
    fe->rb_budget = fe->cfg.max_read_buffer;
    if (!fe->rb_budget)
        fe->rb_budget = 2 * one > (256u << 20) ? 2 * one : (256u << 20);
    if (fe->rb_budget < one)
        fe->rb_budget = one;
    fe->idle_ms = IDLE_DEFAULT_MS;
    if (fe->cfg.idle_timeout_s > 0)
        fe->idle_ms = fe->cfg.idle_timeout_s >= 4e6 ? 4000000000u
                      : fe->cfg.idle_timeout_s < 1e-3
                          ? 1
                          : (uint32_t)(fe->cfg.idle_timeout_s * 1000 + 0.5);
    fe->lfd = fe->reserve_fd = -1;
    fe->uid_mask = 63;
    fe->uidt = calloc(fe->uid_mask + 1, sizeof(*fe->uidt));
    if (!fe->uidt) {
        free(fe);
        return -ENOMEM;
    }
    pthread_mutex_init(&fe->qlock, NULL);
    fe->loop_thread = uv_thread_self();
    *out = fe;
    return 0;
}

static void on_fe_handle_closed(uv_handle_t *h)
{
    struct loki_frontend *fe = h->data;
    fe->open_handles--;
}

/* Remove the socket file if it is still the one we bound. */
static void unlink_ours(struct loki_frontend *fe)
{
    struct stat st;
    if (lstat(fe->cfg.socket_path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == fe->sock_dev &&
        st.st_ino == fe->sock_ino)
        unlink(fe->cfg.socket_path);
}

/* Stop accepting for good: close the listening socket and the pause timer. */
static void close_listener(struct loki_frontend *fe)
{
    if (!fe->listening)
        return;
    fe->listening = false;
    unlink_ours(fe);
    uv_close((uv_handle_t *)&fe->lpoll, on_fe_handle_closed); /* stops polling lfd now */
    close(fe->lfd);
    fe->lfd = -1;
    uv_close((uv_handle_t *)&fe->pause_timer, on_fe_handle_closed);
    if (fe->reserve_fd >= 0)
        close(fe->reserve_fd);
    fe->reserve_fd = -1;
}

/* Size the caps that default from RLIMIT_NOFILE (see the essay). */
static void size_caps(struct loki_frontend *fe)
{
    struct rlimit rl;
    fe->fd_limit = UINT32_MAX;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < UINT32_MAX)
        fe->fd_limit = rl.rlim_cur;
    uint64_t spare = fe->fd_limit / 8 < FD_SPARE ? fe->fd_limit / 8 : FD_SPARE;
    fe->fd_guard = fe->fd_limit - spare;
    uint64_t half = fe->fd_limit / 2;
    fe->max_conns = fe->cfg.max_conns       ? fe->cfg.max_conns
                    : half < 1              ? 1
                    : half > AUTO_MAX_CONNS ? AUTO_MAX_CONNS
                                            : (uint32_t)half;
    fe->max_conns_uid = fe->cfg.max_conns_per_uid ? fe->cfg.max_conns_per_uid : fe->max_conns / 2;
    if (fe->max_conns_uid > fe->max_conns)
        fe->max_conns_uid = fe->max_conns;
    if (fe->max_conns_uid < 1)
        fe->max_conns_uid = 1;
}

/* A listening Unix socket at @path with @mode; returns the descriptor or a negative errno. */
static int listen_at(const char *path, unsigned mode, struct stat *st)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int e;
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
        goto close_fd;
    /* no connection completes before listen(), so chmod here leaves no window */
    if (chmod(path, mode & 07777) < 0 || lstat(path, st) < 0 || listen(fd, SOMAXCONN) < 0)
        goto unlink_path;
    return fd;
unlink_path:
    e = errno;
    unlink(path);
    errno = e;
close_fd:
    e = errno;
    close(fd);
    return -e;
}

/* Unlink @path if it is a socket nobody listens on. */
static int clear_stale(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return -EEXIST;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    int rc = connect(fd, (struct sockaddr *)&a, sizeof(a));
    int e = errno;
    close(fd);
    if (rc == 0)
        return -EADDRINUSE;
    if (e != ECONNREFUSED)
        return -e;
    if (unlink(path) < 0 && errno != ENOENT)
        return -errno;
    return 0;
}

int loki_frontend_start(struct loki_frontend *fe)
{
    const char *path = fe->cfg.socket_path;
    struct stat st;
    if (fe->started)
        return -EALREADY;
    if (!*path || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return -ENAMETOOLONG;
    fe->loop_thread = uv_thread_self();
    size_caps(fe);
    int rc = clear_stale(path);
    if (rc < 0)
        return rc;
    rc = uv_async_init(fe->loop, &fe->async, loki__frontend_on_async);
    if (rc < 0)
        return rc;
    fe->async.data = fe;
    uv_prepare_init(fe->loop, &fe->flush);
    fe->flush.data = fe;
    fe->open_handles += 2;
    fe->lfd = listen_at(path, fe->cfg.mode, &st);
    if (fe->lfd < 0) {
        rc = fe->lfd;
        fe->lfd = -1;
        goto close_async;
    }
    fe->sock_dev = st.st_dev;
    fe->sock_ino = st.st_ino;
    rc = uv_poll_init(fe->loop, &fe->lpoll, fe->lfd);
    if (rc < 0) {
        unlink_ours(fe);
        close(fe->lfd);
        fe->lfd = -1;
        goto close_async;
    }
    fe->lpoll.data = fe;
    uv_timer_init(fe->loop, &fe->pause_timer);
    fe->pause_timer.data = fe;
    fe->open_handles += 2;
    fe->listening = true;
    fe->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC); /* -1 tolerated: pauses only */
    rc = uv_poll_start(&fe->lpoll, UV_READABLE, on_listen_io);
    if (rc < 0) {
        close_listener(fe);
        goto close_async;
    }
    fe->started = true;
    return 0;
close_async:
    pthread_mutex_lock(&fe->qlock);
    fe->qclosed = true;
    pthread_mutex_unlock(&fe->qlock);
    uv_close((uv_handle_t *)&fe->async, on_fe_handle_closed);
    uv_close((uv_handle_t *)&fe->flush, on_fe_handle_closed);
    fe->stopped = true;
    return rc;
}

void loki__frontend_drain_check(struct loki_frontend *fe)
{
    if (fe->draining && fe->drained_cb &&
        __atomic_load_n(&fe->st.inflight, __ATOMIC_RELAXED) == 0) {
        loki_frontend_drained_cb cb = fe->drained_cb;
        fe->drained_cb = NULL;
        cb(fe->drained_ctx);
    }
}

void loki_frontend_drain(struct loki_frontend *fe, loki_frontend_drained_cb cb, void *ctx)
{
    fe->draining = true;
    close_listener(fe);
    fe->drained_cb = cb;
    fe->drained_ctx = ctx;
    loki__frontend_drain_check(fe);
}

void loki_frontend_stop(struct loki_frontend *fe)
{
    if (fe->stopped)
        return;
    fe->stopped = true;
    fe->draining = true;
    if (!fe->started)
        return; /* a failed start cleaned up after itself */
    close_listener(fe);
    pthread_mutex_lock(&fe->qlock);
    fe->qclosed = true;
    struct node *n = fe->qhead;
    fe->qhead = fe->qtail = NULL;
    pthread_mutex_unlock(&fe->qlock);
    for (struct loki_frontend_conn *c = fe->conns; c; c = c->next)
        loki__frontend_conn_close(c);
    while (n) { /* releases only: every connection is closed now */
        struct node *next = n->next;
        loki__frontend_deliver_node(fe, n);
        n = next;
    }
    loki__frontend_on_flush(&fe->flush); /* drops what closed connections had queued */
    uv_close((uv_handle_t *)&fe->async, on_fe_handle_closed);
    uv_close((uv_handle_t *)&fe->flush, on_fe_handle_closed);
}

void loki_frontend_destroy(struct loki_frontend *fe)
{
    if (!fe)
        return;
    if (fe->started && !fe->stopped)
        loki_frontend_stop(fe);
    /* handles close asynchronously: finish them if the owner has not run the loop */
    while (fe->open_handles > 0 || (fe->conns && fe->conns->handles > 0)) {
        bool pending = fe->open_handles > 0;
        for (struct loki_frontend_conn *c = fe->conns; c; c = c->next)
            pending |= c->handles > 0;
        if (!pending)
            break;
        uv_run(fe->loop, UV_RUN_NOWAIT);
    }
    while (fe->conns) {
        struct loki_frontend_conn *c = fe->conns;
        fe->conns = c->next;
        loki__frontend_conn_free(c);
    }
    for (int k = 0; k < NODE_CLASSES; k++)
        while (fe->cache[k]) {
            struct node *n = fe->cache[k];
            fe->cache[k] = n->next;
            free(n);
        }
    pthread_mutex_destroy(&fe->qlock);
    free(fe->uidt);
    free(fe);
}

void loki_frontend_stats(const struct loki_frontend *fe, struct loki_frontend_stats *out)
{
    const uint64_t *src = (const uint64_t *)&fe->st;
    uint64_t *dst = (uint64_t *)out;
    for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}
