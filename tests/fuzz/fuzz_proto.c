/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz entry point for the wire codec. The input is a byte stream as a server
 * would read it: frames are cut with loki_proto_frame_next() and every body is
 * decoded as a request and as a reply. Whatever decodes is re-encoded and
 * decoded again, and must come back identical (an abort otherwise), so the
 * fuzzer checks the encoder too, not only that the decoder does not crash.
 * Built for libFuzzer with clang; with gcc, fuzz_driver.c replays a corpus and
 * seeded mutations through the same function.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loki/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_proto: check failed: %s (line %d)\n", #c, __LINE__);             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static bool bytes_same(struct loki_bytes a, struct loki_bytes b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static void check_request(const struct loki_request *a, const struct loki_proto_limits *lim)
{
    static uint8_t buf[(1 << 16) + 2048];
    struct loki_request b;
    char err[LOKI_PROTO_ERR_MAX];
    ssize_t n = loki_proto_encode_request(buf, sizeof(buf), a);
    CHECK(n > 0 && (size_t)n <= loki_proto_request_size(a));
    CHECK(loki_proto_decode_request(buf + 4, (size_t)n - 4, lim, &b, err, sizeof(err)) == 0);
    CHECK(a->type == b.type);
    if (a->type == LOKI_MSG_INFER) {
        CHECK(a->id == b.id && bytes_same(a->pipeline, b.pipeline));
        CHECK(bytes_same(a->payload, b.payload));
        CHECK(a->has_deadline == b.has_deadline && a->has_priority == b.has_priority);
        CHECK(!a->has_deadline || a->deadline_ms == b.deadline_ms);
        CHECK(!a->has_priority || a->priority == b.priority);
    } else if (a->type == LOKI_MSG_HELLO) {
        CHECK(a->version == b.version && bytes_same(a->name, b.name));
    } else if (a->type == LOKI_MSG_STATUS || a->type == LOKI_MSG_METRICS) {
        CHECK(bytes_same(a->format, b.format));
    }
    CHECK(a->has_id == b.has_id && (!a->has_id || a->id == b.id));
}

static bool list_same(const struct loki_bytes *a, const struct loki_bytes *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (!bytes_same(a[i], b[i]))
            return false;
    return true;
}

#define NODES 256 /* result-tree nodes decoded; a reply with more is only decoded */

static void check_reply(const struct loki_reply *a)
{
    static uint8_t buf[1 << 18];
    static struct loki_reply b;
    static struct loki_reply_node nodes[NODES];
    char err[LOKI_PROTO_ERR_MAX];
    b.node_buf = nodes;
    b.node_cap = NODES;
    ssize_t n = loki_proto_encode_reply(buf, sizeof(buf), a);
    CHECK(n > 0 && (size_t)n <= loki_proto_reply_size(a));
    CHECK(loki_proto_decode_reply(buf + 4, (size_t)n - 4, &b, err, sizeof(err)) == 0);
    CHECK(a->type == b.type && a->status == b.status && a->has_id == b.has_id);
    CHECK(!a->has_id || a->id == b.id);
    CHECK(bytes_same(a->error, b.error));
    CHECK(a->has_retry_after == b.has_retry_after);
    CHECK(!a->has_retry_after || a->retry_after_ms == b.retry_after_ms);
    if (a->type == LOKI_MSG_INFER) {
        CHECK(a->n_outputs == b.n_outputs && a->n_paths == b.n_paths);
        CHECK(list_same(a->outputs, b.outputs, a->n_outputs));
        CHECK(list_same(a->paths, b.paths, a->n_paths));
        CHECK(a->accuracy == b.accuracy && a->latency_ms == b.latency_ms);
        CHECK(a->n_nodes == b.n_nodes);
        for (uint32_t i = 0; i < a->n_nodes; i++) {
            const struct loki_reply_node *x = &a->nodes[i], *y = &b.nodes[i];
            CHECK(bytes_same(x->task, y->task) && bytes_same(x->variant, y->variant));
            CHECK(x->parent == y->parent && x->status == y->status);
            CHECK(bytes_same(x->output, y->output));
        }
    }
    if (a->type == LOKI_MSG_HELLO || a->type == LOKI_MSG_STATUS) {
        CHECK(a->version == b.version && a->n_pipelines == b.n_pipelines);
        CHECK(list_same(a->pipelines, b.pipelines, a->n_pipelines));
    }
    if (a->type == LOKI_MSG_HELLO) {
        CHECK(bytes_same(a->server, b.server));
        CHECK(a->max_payload == b.max_payload && a->max_outstanding == b.max_outstanding);
    }
    if (a->type == LOKI_MSG_STATUS) {
        CHECK(a->ready == b.ready && a->draining == b.draining);
        CHECK(a->connections == b.connections && a->inflight == b.inflight);
    }
    if (a->type == LOKI_MSG_STATUS || a->type == LOKI_MSG_METRICS)
        CHECK(bytes_same(a->report, b.report));
    if (a->type == LOKI_MSG_METRICS) {
        CHECK(a->n_metrics == b.n_metrics);
        for (uint32_t i = 0; i < a->n_metrics; i++) {
            CHECK(bytes_same(a->metrics[i].name, b.metrics[i].name));
            CHECK(a->metrics[i].value == b.metrics[i].value);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct loki_reply rep;
    const struct loki_proto_limits lim = {1 << 16};
    char err[LOKI_PROTO_ERR_MAX];
    size_t off = 0;
    while (off < size) {
        const uint8_t *body;
        uint32_t blen;
        ssize_t n = loki_proto_frame_next(data + off, size - off, (1 << 16) + 1024, &body, &blen);
        if (n <= 0) {
            /* not a whole frame: decode the rest as a bare body too */
            body = data + off;
            blen = (uint32_t)(size - off);
            n = (ssize_t)(size - off);
        }
        struct loki_request req;
        int rc = loki_proto_decode_request(body, blen, &lim, &req, err, sizeof(err));
        CHECK(rc == 0 || err[0]);
        if (rc == 0)
            check_request(&req, &lim);
        static struct loki_reply_node nodes[NODES];
        rep.node_buf = nodes;
        rep.node_cap = NODES;
        rc = loki_proto_decode_reply(body, blen, &rep, err, sizeof(err));
        CHECK(rc == 0 || err[0]);
        if (rc == 0 && rep.n_nodes <= NODES)
            check_reply(&rep);
        off += (size_t)n;
    }
    return 0;
}
