/* SPDX-License-Identifier: Apache-2.0 */
/* The echo owner used by the frontend, client and Python tests (see echo.h). */
#include "echo.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "loki/clock.h"

struct item {
    struct item *next;
    struct loki_frontend_conn *conn;
    uint64_t id, due, arrival;
    int pipeline;
    enum loki_status status;
    uint32_t len;
    uint8_t data[];
};

struct echo_server {
    struct echo_opts o;
    struct loki_frontend_cfg cfg;
    uv_loop_t loop;
    uv_async_t stop_async;
    struct loki_frontend *fe;
    pthread_t loop_thread, responder;
    pthread_mutex_t m;
    pthread_cond_t cv;
    struct item *items;
    bool quit, started;
    int start_rc;
    uint64_t delivered, answered;
};

static const char *const pipelines[] = {"traffic", "social"};

static void on_request(void *ctx, struct loki_frontend_conn *conn, const struct loki_request *req)
{
    struct echo_server *s = ctx;
    struct item *it = malloc(sizeof(*it) + req->payload.len);
    it->conn = conn;
    it->id = req->id;
    it->pipeline = req->pipeline_index;
    it->arrival = loki_now_ns();
    it->due = it->arrival;
    it->status = LOKI_STATUS_OK;
    it->len = req->payload.len;
    memcpy(it->data, req->payload.ptr, req->payload.len);
    char cmd[32] = "";
    memcpy(cmd, req->payload.ptr, req->payload.len < 31 ? req->payload.len : 31);
    unsigned ms;
    if (sscanf(cmd, "sleep:%u", &ms) == 1)
        it->due += (uint64_t)ms * 1000000;
    if (!strncmp(cmd, "status:dropped", 14))
        it->status = LOKI_STATUS_DROPPED;
    it->due += (uint64_t)s->o.delay_ms * 1000000;
    pthread_mutex_lock(&s->m);
    s->delivered++;
    if (s->o.overload_every && s->delivered % s->o.overload_every == 0) {
        it->status = LOKI_STATUS_OVERLOADED;
        it->due = it->arrival; /* a refusal comes at once, as lokid's admission control */
    }
    it->next = s->items;
    s->items = it;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->m);
}

static void answer(struct echo_server *s, struct item *it)
{
    static __thread struct loki_reply r;
    char path[96];
    loki_reply_init(&r);
    r.status = it->status;
    if (it->status == LOKI_STATUS_OVERLOADED) {
        r.has_retry_after = true;
        r.retry_after_ms = 10;
    }
    r.n_outputs = 1;
    r.outputs[0].ptr = it->data;
    r.outputs[0].len = it->len;
    snprintf(path, sizeof(path), "%s>echo", pipelines[it->pipeline]);
    r.n_paths = 1;
    r.paths[0] = loki_bytes_str(path);
    r.accuracy = 100;
    r.latency_ms = (double)(loki_now_ns() - it->arrival) / 1e6;
    loki_frontend_reply(it->conn, it->id, &r);
}

static void *responder_main(void *arg)
{
    struct echo_server *s = arg;
    pthread_mutex_lock(&s->m);
    for (;;) {
        uint64_t now = loki_now_ns(), next = UINT64_MAX;
        struct item **pp = &s->items, *due = NULL;
        while (*pp) {
            struct item *it = *pp;
            if (it->due <= now) {
                *pp = it->next;
                it->next = due;
                due = it;
            } else {
                next = it->due < next ? it->due : next;
                pp = &it->next;
            }
        }
        if (due) {
            pthread_mutex_unlock(&s->m);
            while (due) {
                struct item *n = due->next;
                answer(s, due);
                free(due);
                due = n;
                pthread_mutex_lock(&s->m);
                s->answered++;
                pthread_mutex_unlock(&s->m);
            }
            pthread_mutex_lock(&s->m);
            continue;
        }
        if (s->quit && !s->items)
            break;
        if (next == UINT64_MAX) {
            pthread_cond_wait(&s->cv, &s->m);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t wait = next - now;
            ts.tv_sec += (time_t)(wait / 1000000000);
            ts.tv_nsec += (long)(wait % 1000000000);
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&s->cv, &s->m, &ts);
        }
    }
    pthread_mutex_unlock(&s->m);
    return NULL;
}

static void on_drained(void *ctx)
{
    struct echo_server *s = ctx;
    loki_frontend_stop(s->fe);
    uv_close((uv_handle_t *)&s->stop_async, NULL);
}

static void on_stop(uv_async_t *a)
{
    struct echo_server *s = a->data;
    loki_frontend_drain(s->fe, on_drained, s);
}

static void *loop_main(void *arg)
{
    struct echo_server *s = arg;
    struct loki_frontend_opts fo = {0};
    uv_loop_init(&s->loop);
    fo.cfg = &s->cfg;
    fo.pipelines = pipelines;
    fo.n_pipelines = 2;
    fo.on_request = on_request;
    fo.ctx = s;
    fo.max_outstanding = s->o.max_outstanding;
    fo.frame_timeout_ms = s->o.frame_timeout_ms;
    fo.max_write_queue = s->o.max_write_queue;
    fo.server_name = "echo";
    int rc = loki_frontend_create(&s->loop, &fo, &s->fe);
    if (rc == 0)
        rc = loki_frontend_start(s->fe);
    uv_async_init(&s->loop, &s->stop_async, on_stop);
    s->stop_async.data = s;
    pthread_mutex_lock(&s->m);
    s->start_rc = rc;
    s->started = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->m);
    if (rc < 0) {
        uv_close((uv_handle_t *)&s->stop_async, NULL);
        if (s->fe)
            loki_frontend_stop(s->fe);
    }
    uv_run(&s->loop, UV_RUN_DEFAULT);
    loki_frontend_destroy(s->fe);
    uv_loop_close(&s->loop);
    return NULL;
}

int echo_start(const struct echo_opts *o, struct echo_server **out)
{
    struct echo_server *s = calloc(1, sizeof(*s));
    signal(SIGPIPE, SIG_IGN); /* the frontend's contract: lokid does the same */
    s->o = *o;
    snprintf(s->cfg.socket_path, sizeof(s->cfg.socket_path), "%s", o->path);
    s->cfg.mode = o->mode ? o->mode : 0600;
    s->cfg.n_uids = o->n_uids;
    memcpy(s->cfg.uids, o->uids, sizeof(o->uids));
    s->cfg.max_payload = o->max_payload ? o->max_payload : 64 * 1024;
    s->cfg.max_inflight = 100000;
    s->cfg.max_conns = o->max_conns;
    s->cfg.max_conns_per_uid = o->max_conns_per_uid;
    s->cfg.idle_timeout_s = o->idle_timeout_s;
    pthread_mutex_init(&s->m, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_create(&s->responder, NULL, responder_main, s);
    pthread_create(&s->loop_thread, NULL, loop_main, s);
    pthread_mutex_lock(&s->m);
    while (!s->started)
        pthread_cond_wait(&s->cv, &s->m);
    int rc = s->start_rc;
    pthread_mutex_unlock(&s->m);
    if (rc < 0) {
        pthread_join(s->loop_thread, NULL);
        pthread_mutex_lock(&s->m);
        s->quit = true;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->m);
        pthread_join(s->responder, NULL);
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

uint64_t echo_delivered(struct echo_server *s)
{
    pthread_mutex_lock(&s->m);
    uint64_t v = s->delivered;
    pthread_mutex_unlock(&s->m);
    return v;
}

uint64_t echo_answered(struct echo_server *s)
{
    pthread_mutex_lock(&s->m);
    uint64_t v = s->answered;
    pthread_mutex_unlock(&s->m);
    return v;
}

void echo_stats(struct echo_server *s, struct loki_frontend_stats *st)
{
    loki_frontend_stats(s->fe, st);
}

void echo_stop(struct echo_server *s)
{
    uv_async_send(&s->stop_async);
    pthread_join(s->loop_thread, NULL);
    pthread_mutex_lock(&s->m);
    s->quit = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->m);
    pthread_join(s->responder, NULL);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->m);
    free(s);
}
