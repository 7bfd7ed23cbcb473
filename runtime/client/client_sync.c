/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The client library's blocking calls: loki_client_infer and the control calls (hello,
 * ping, status, reports). Each submits through the asynchronous path (client.c) with a
 * callback that copies what the reply holds into the caller's memory and wakes it; none may
 * run on the reader thread (-EDEADLK), which would wait for itself.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "loki/error.h"

struct waiter {
    pthread_mutex_t m;
    pthread_cond_t cv;
    bool done;
    struct loki_client_result *res; /* infer */
    struct loki_reply *copy;        /* control: scalar copy */
    int rc;
};

static void waiter_init(struct waiter *w)
{
    memset(w, 0, sizeof(*w));
    pthread_mutex_init(&w->m, NULL);
    pthread_cond_init(&w->cv, NULL);
}

static void waiter_wait(struct waiter *w)
{
    pthread_mutex_lock(&w->m);
    while (!w->done)
        pthread_cond_wait(&w->cv, &w->m);
    pthread_mutex_unlock(&w->m);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->m);
}

static void waiter_signal(struct waiter *w)
{
    pthread_mutex_lock(&w->m);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->m);
}

static void copy_result(struct loki_client_result *res, const struct loki_reply *r, int *rc)
{
    uint32_t n_nodes = r->nodes ? r->n_nodes : 0;
    size_t need = (size_t)n_nodes * sizeof(struct loki_reply_node) +
                  (size_t)r->n_outputs * sizeof(struct loki_bytes) +
                  (size_t)r->n_paths * sizeof(char *);
    for (uint32_t i = 0; i < r->n_outputs; i++)
        need += r->outputs[i].len;
    for (uint32_t i = 0; i < n_nodes; i++)
        need += r->nodes[i].task.len + r->nodes[i].variant.len + r->nodes[i].output.len;
    for (uint32_t i = 0; i < r->n_paths; i++)
        need += r->paths[i].len + 1;
    memset(res, 0, sizeof(*res));
    res->id = r->id;
    res->status = r->status;
    res->accuracy = r->accuracy;
    res->latency_ms = r->latency_ms;
    res->has_retry_after = r->has_retry_after;
    res->retry_after_ms = r->retry_after_ms;
    snprintf(res->error, sizeof(res->error), "%.*s", (int)r->error.len, (const char *)r->error.ptr);
    if (!need)
        return;
    uint8_t *mem = malloc(need);
    if (!mem) {
        *rc = -ENOMEM;
        return;
    }
    res->mem_ = mem;
    struct loki_reply_node *nodes = (struct loki_reply_node *)mem;
    res->outputs = (struct loki_bytes *)(nodes + n_nodes);
    res->paths = (const char **)(res->outputs + r->n_outputs);
    uint8_t *p = (uint8_t *)(res->paths + r->n_paths);
    for (uint32_t i = 0; i < n_nodes; i++) {
        const struct loki_reply_node *s = &r->nodes[i];
        struct loki_reply_node *d = &nodes[i];
        *d = *s;
        const struct loki_bytes *src[3] = {&s->task, &s->variant, &s->output};
        struct loki_bytes *dst[3] = {&d->task, &d->variant, &d->output};
        for (int k = 0; k < 3; k++) {
            if (src[k]->len)
                memcpy(p, src[k]->ptr, src[k]->len);
            dst[k]->ptr = p;
            p += src[k]->len;
        }
    }
    res->nodes = nodes;
    res->n_nodes = n_nodes;
    for (uint32_t i = 0; i < r->n_outputs; i++) {
        memcpy(p, r->outputs[i].ptr, r->outputs[i].len);
        res->outputs[i].ptr = p;
        res->outputs[i].len = r->outputs[i].len;
        p += r->outputs[i].len;
    }
    for (uint32_t i = 0; i < r->n_paths; i++) {
        memcpy(p, r->paths[i].ptr, r->paths[i].len);
        p[r->paths[i].len] = 0;
        res->paths[i] = (const char *)p;
        p += r->paths[i].len + 1;
    }
    res->n_outputs = r->n_outputs;
    res->n_paths = r->n_paths;
}

static void on_infer_done(void *ctx, const struct loki_reply *r)
{
    struct waiter *w = ctx;
    copy_result(w->res, r, &w->rc);
    waiter_signal(w);
}

int loki_client_infer(struct loki_client *c, const struct loki_client_req *req,
                      struct loki_client_result *res)
{
    struct waiter w;
    if (!res)
        return -EINVAL;
    if (c && loki__client_on_reader(c))
        return -EDEADLK;
    waiter_init(&w);
    w.res = res;
    int rc = loki_client_submit(c, req, on_infer_done, &w, NULL);
    if (rc < 0) {
        pthread_cond_destroy(&w.cv);
        pthread_mutex_destroy(&w.m);
        return rc;
    }
    waiter_wait(&w);
    return w.rc;
}

void loki_client_result_fini(struct loki_client_result *res)
{
    if (!res)
        return;
    free(res->mem_);
    res->mem_ = NULL;
    res->outputs = NULL;
    res->paths = NULL;
    res->nodes = NULL;
    res->n_outputs = res->n_paths = res->n_nodes = 0;
}

/* Control replies: copy scalars, and for hello the names into the client. */
struct ctl {
    struct waiter w;
    struct loki_client *c;
    struct loki_reply *out;
    bool hello;
    bool want_text;
    char *text; /* malloc'ed copy of reply->report when want_text */
    bool text_nomem;
    char x_err[LOKI_PROTO_ERR_MAX];
};

static void on_ctl_done(void *ctx, const struct loki_reply *r)
{
    struct ctl *x = ctx;
    memcpy(x->out, r, offsetof(struct loki_reply, outputs));
    x->out->version = r->version;
    x->out->max_payload = r->max_payload;
    x->out->max_outstanding = r->max_outstanding;
    x->out->ready = r->ready;
    x->out->draining = r->draining;
    x->out->connections = r->connections;
    x->out->inflight = r->inflight;
    x->out->n_pipelines = r->n_pipelines;
    x->out->error.ptr = NULL; /* not valid after return */
    x->out->report.ptr = NULL;
    x->out->report.len = 0;
    if (x->want_text && r->report.len) {
        x->text = malloc((size_t)r->report.len + 1);
        if (x->text) {
            memcpy(x->text, r->report.ptr, r->report.len);
            x->text[r->report.len] = 0;
        } else {
            x->text_nomem = true;
        }
    }
    if (r->status != LOKI_STATUS_OK)
        snprintf(x->x_err, sizeof(x->x_err), "%.*s", (int)r->error.len, (const char *)r->error.ptr);
    if (x->hello && r->status == LOKI_STATUS_OK) {
        struct loki_client *c = x->c;
        c->n_pipelines = 0;
        for (uint32_t i = 0; i < r->n_pipelines && i < LOKI_PROTO_MAX_PIPELINES; i++) {
            snprintf(c->pipelines[i], sizeof(c->pipelines[i]), "%.*s", (int)r->pipelines[i].len,
                     (const char *)r->pipelines[i].ptr);
            c->pipeline_ptrs[i] = c->pipelines[i];
            c->n_pipelines++;
        }
    }
    waiter_signal(&x->w);
}

/*
 * Blocking control call; @out gets the reply's scalars. With @format, the request asks
 * for a report and *@text receives a malloc'ed copy of it (NULL when none came).
 */
static int ctl_call_fmt(struct loki_client *c, enum loki_msg_type type, const char *format,
                        double timeout_ms, struct loki_reply *out, char **text, char *err,
                        size_t errlen)
{
    struct ctl x;
    if (loki__client_on_reader(c))
        return -EDEADLK;
    memset(&x, 0, sizeof(x));
    waiter_init(&x.w);
    x.c = c;
    x.out = out;
    x.hello = type == LOKI_MSG_HELLO;
    x.want_text = text != NULL;
    struct loki_request rq;
    loki_request_init(&rq);
    rq.type = type;
    rq.version = LOKI_PROTO_VERSION;
    rq.format = loki_bytes_str(format);
    int rc = loki__client_submit(c, &rq, timeout_ms > 0 ? timeout_ms : -1, on_ctl_done, &x, NULL);
    if (rc < 0) {
        pthread_cond_destroy(&x.w.cv);
        pthread_mutex_destroy(&x.w.m);
        return rc;
    }
    waiter_wait(&x.w);
    if (err)
        snprintf(err, errlen, "%s", x.x_err);
    out->error.ptr = NULL;
    out->error.len = 0;
    if (text)
        *text = x.text;
    else
        free(x.text);
    if (out->status == LOKI_STATUS_TIMEOUT)
        return -ETIMEDOUT;
    if (out->status == LOKI_STATUS_CLOSED)
        return -EPIPE;
    if (x.text_nomem)
        return -ENOMEM;
    return 0;
}

int loki__client_ctl(struct loki_client *c, enum loki_msg_type type, double timeout_ms,
                     struct loki_reply *out, char *err, size_t errlen)
{
    return ctl_call_fmt(c, type, NULL, timeout_ms, out, NULL, err, errlen);
}

int loki_client_ping(struct loki_client *c, double timeout_ms)
{
    struct loki_reply r;
    if (!c)
        return -EINVAL;
    int rc = loki__client_ctl(c, LOKI_MSG_PING, timeout_ms, &r, NULL, 0);
    if (rc == 0 && r.status != LOKI_STATUS_OK)
        rc = LOKI_EPROTO;
    return rc;
}

int loki_client_status(struct loki_client *c, double timeout_ms, struct loki_reply *st)
{
    if (!c || !st)
        return -EINVAL;
    loki_reply_init(st);
    return loki__client_ctl(c, LOKI_MSG_STATUS, timeout_ms, st, NULL, 0);
}

int loki_client_report(struct loki_client *c, enum loki_msg_type type, const char *format,
                       double timeout_ms, struct loki_reply *st, char **text, char *err,
                       size_t errlen)
{
    struct loki_reply local;
    if (!c || !format || !*format || strlen(format) > LOKI_PROTO_FORMAT_MAX || !text ||
        (type != LOKI_MSG_STATUS && type != LOKI_MSG_METRICS))
        return -EINVAL;
    *text = NULL;
    if (!st)
        st = &local;
    loki_reply_init(st);
    int rc = ctl_call_fmt(c, type, format, timeout_ms, st, text, err, errlen);
    if (rc == 0 && st->status != LOKI_STATUS_OK) {
        free(*text);
        *text = NULL;
        rc = LOKI_EPROTO;
    }
    return rc;
}
