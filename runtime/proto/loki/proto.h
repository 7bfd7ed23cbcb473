/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The wire codec between clients and lokid (docs/protocol.md): frames are a
 * u32 big-endian length followed by one msgpack map. Pure: encode into and
 * decode from caller buffers, no I/O, no allocation, no logging. Decoding
 * never copies payloads or strings: slices point into the frame buffer, so a
 * decoded message is valid only as long as that buffer is.
 */
#ifndef LOKI_PROTO_H
#define LOKI_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define LOKI_PROTO_VERSION 1
#define LOKI_PROTO_HDR 4             /* bytes of the length prefix */
#define LOKI_PROTO_OVERHEAD 1024     /* request bytes allowed beyond the payload */
#define LOKI_PROTO_NAME_MAX 63       /* longest pipeline name, bytes */
#define LOKI_PROTO_PATH_STR_MAX 1024 /* longest variant path string, bytes */
#define LOKI_PROTO_ERR_MAX 192       /* decode error text buffer, bytes */
#define LOKI_PROTO_MAX_OUTPUTS 512   /* leaf outputs in one reply */
#define LOKI_PROTO_MAX_PATHS 64      /* variant paths in one reply */
#define LOKI_PROTO_MAX_PIPELINES 16  /* pipeline names in a hello/status reply */
#define LOKI_PROTO_MAX_METRICS 64    /* entries of a metrics reply */
#define LOKI_PROTO_MAX_DEPTH 16      /* nesting allowed inside ignored values */
#define LOKI_PROTO_FORMAT_MAX 31     /* longest report format name, bytes */

/* What a message is about. The reply to a request carries the request's type. */
enum loki_msg_type {
    LOKI_MSG_NONE = 0, /* an error frame not tied to a request (bad framing, refusal) */
    LOKI_MSG_INFER,
    LOKI_MSG_HELLO,
    LOKI_MSG_STATUS,
    LOKI_MSG_METRICS,
    LOKI_MSG_PING,
    LOKI_MSG_CANCEL, /* drop infer request @id if it is not batched yet; no reply of its own */
};

/* Reply status. TIMEOUT and CLOSED are produced by the client library, never sent;
 * CANCELLED answers a query a "cancel" request dropped before it was batched. */
#define LOKI_STATUSES(X)                                                                           \
    X(OK, "ok")                                                                                    \
    X(DROPPED, "dropped")                                                                          \
    X(LATE, "late")                                                                                \
    X(ERROR, "error")                                                                              \
    X(OVERLOADED, "overloaded")                                                                    \
    X(BAD_REQUEST, "bad_request")                                                                  \
    X(UNKNOWN_PIPELINE, "unknown_pipeline")                                                        \
    X(DRAINING, "draining")                                                                        \
    X(TIMEOUT, "timeout")                                                                          \
    X(CLOSED, "closed")                                                                            \
    X(CANCELLED, "cancelled")

enum loki_status {
#define LOKI_STATUS_ENUM_(n, s) LOKI_STATUS_##n,
    LOKI_STATUSES(LOKI_STATUS_ENUM_)
#undef LOKI_STATUS_ENUM_
        LOKI_STATUS_COUNT_
};

/* A borrowed byte range; strings are not NUL-terminated. */
struct loki_bytes {
    const uint8_t *ptr;
    uint32_t len;
};

/* A request (client -> server). */
struct loki_request {
    enum loki_msg_type type; /* INFER, HELLO, STATUS, METRICS, PING or CANCEL */
    bool has_id;
    uint64_t id;                /* client-chosen, unique per connection; required for INFER */
    struct loki_bytes pipeline; /* INFER: 1..LOKI_PROTO_NAME_MAX bytes */
    int pipeline_index;         /* set by the frontend (index in its list); codec sets -1 */
    struct loki_bytes payload;  /* INFER: the input, points into the frame */
    bool has_deadline;
    double deadline_ms; /* relative to arrival; > 0; only ever tightens the SLO */
    bool has_priority;
    int32_t priority;
    uint32_t version;       /* HELLO: protocol version the client speaks (>= 1) */
    struct loki_bytes name; /* HELLO: optional client name */
    /* STATUS, METRICS: optional report wanted in the reply's "report" ("table", "json",
     * "prometheus"; which ones a server knows is up to it; empty: none) */
    struct loki_bytes format;
};

struct loki_metric {
    struct loki_bytes name;
    double value;
};

/* A reply (server -> client). Fields unused by a type are left zero. */
/* One answered sub-query of an infer reply's result tree. */
struct loki_reply_node {
    struct loki_bytes task, variant;
    int32_t parent;          /* index in nodes[] of the query that emitted its input; -1: the
                              * root task's (its input was the client's payload) */
    enum loki_status status; /* LOKI_STATUS_OK, or LOKI_STATUS_ERROR (output says why) */
    struct loki_bytes output;
};

/*
 * Walk a result tree in place: the index of the first node after @after (start with -1)
 * whose parent is @parent (-1: the root task's nodes), or -1 when there is none. Nodes come
 * parents first, so a depth-first walk is
 *   for (int k = loki_reply_next_child(n, cnt, p, -1); k >= 0; k = loki_reply_next_child(n, cnt, p,
 * k)) Pure; any thread.
 */
int loki_reply_next_child(const struct loki_reply_node *nodes, uint32_t n, int parent, int after);

struct loki_reply {
    enum loki_msg_type type;
    bool has_id;
    uint64_t id;
    enum loki_status status;
    struct loki_bytes error; /* optional human-readable reason */
    bool has_retry_after;
    double retry_after_ms; /* OVERLOADED: when to retry */
    /* STATUS, METRICS: the report rendered in the requested format (empty: none asked) */
    struct loki_bytes report;
    /* INFER: the result tree ("result"), every answered sub-query in completion order (a
     * parent before its children). Encode: @nodes[0..n_nodes). Decode: up to @node_cap nodes
     * go to the caller's @node_buf (kept across loki_reply_init), @nodes points there, and
     * @n_nodes is the count in the frame, which may be larger: decode again with more room. */
    uint32_t n_nodes;
    const struct loki_reply_node *nodes;
    struct loki_reply_node *node_buf;
    uint32_t node_cap;
    uint32_t n_outputs;
    struct loki_bytes outputs[LOKI_PROTO_MAX_OUTPUTS]; /* leaf outputs */
    uint32_t n_paths;
    struct loki_bytes paths[LOKI_PROTO_MAX_PATHS]; /* "yolov5x>efficientnet-b6" */
    double accuracy;                               /* pipeline accuracy served, 0..100 */
    double latency_ms;                             /* server-side, arrival to reply */
    /* HELLO and STATUS */
    uint32_t version;
    struct loki_bytes server;
    uint32_t max_payload;
    uint32_t max_outstanding;
    uint32_t n_pipelines;
    struct loki_bytes pipelines[LOKI_PROTO_MAX_PIPELINES];
    bool ready, draining;
    uint64_t connections, inflight;
    /* METRICS */
    uint32_t n_metrics;
    struct loki_metric metrics[LOKI_PROTO_MAX_METRICS];
};

/* Limits a decoder enforces; every length read from the wire is checked against them. */
struct loki_proto_limits {
    uint32_t max_payload; /* bytes of an INFER payload */
};

/* Borrow a C string as a slice (NULL -> empty). Any thread. */
struct loki_bytes loki_bytes_str(const char *s);
/* True when @b equals the C string @s. */
bool loki_bytes_eq(struct loki_bytes b, const char *s);

/* Wire name of a status ("ok", ...); "?" for out-of-range values. Any thread. */
const char *loki_status_name(enum loki_status s);
/* Wire name of a message type ("infer", ...; "error" for LOKI_MSG_NONE). Any thread. */
const char *loki_msg_type_name(enum loki_msg_type t);

/* Zero @req and set pipeline_index to -1. */
void loki_request_init(struct loki_request *req);
/* Zero the fixed part of @r (the big arrays are left alone; their counts are zeroed). */
void loki_reply_init(struct loki_reply *r);

/*
 * Find the next frame in a byte stream.
 * @buf, @len: bytes received so far, starting at a frame boundary.
 * @max_body: largest acceptable body (the length prefix is checked before anything is read).
 * @body, @body_len: out: the msgpack body, pointing into @buf, when a frame is complete;
 *                   @body_len is also set when only the header is complete.
 * Returns the bytes the frame occupies (> 0) when complete, 0 when more bytes are needed,
 * LOKI_ETOOBIG when the prefix declares more than @max_body. Pure; any thread.
 */
ssize_t loki_proto_frame_next(const uint8_t *buf, size_t len, uint32_t max_body,
                              const uint8_t **body, uint32_t *body_len);

/*
 * Decode one request body (the bytes after the length prefix).
 * @req: out; slices point into @body. @has_id/@id are set whenever the id could be read,
 *       and @type whenever the "type" field could (else it stays LOKI_MSG_NONE), even when
 *       decoding fails, so an error reply can name the request and carry its type.
 * @err, @errlen: out: what is wrong, e.g. "field 'pipeline': expected str, got int".
 * Returns 0; LOKI_EPROTO for malformed msgpack, wrong types, missing or out-of-range
 * fields; LOKI_ETOOBIG for a payload over @lim->max_payload or a pipeline name over
 * LOKI_PROTO_NAME_MAX. Pure; any thread. A missing "type" means "infer".
 */
int loki_proto_decode_request(const uint8_t *body, size_t len, const struct loki_proto_limits *lim,
                              struct loki_request *req, char *err, size_t errlen);

/*
 * Decode one reply body. Same contract as loki_proto_decode_request(): slices point into
 * @body; unknown keys are skipped; returns 0 or LOKI_EPROTO with @err filled.
 */
int loki_proto_decode_reply(const uint8_t *body, size_t len, struct loki_reply *r, char *err,
                            size_t errlen);

/* Upper bound of the encoded frame size of @req (prefix included). Pure. */
size_t loki_proto_request_size(const struct loki_request *req);
/* Upper bound of the encoded frame size of @r (prefix included). Pure. */
size_t loki_proto_reply_size(const struct loki_reply *r);

/*
 * Encode @req as one whole frame (prefix + map) into @buf.
 * Returns the frame length, -ENOBUFS when @cap is too small, -EINVAL for a type it cannot
 * encode. Pure; any thread.
 */
ssize_t loki_proto_encode_request(uint8_t *buf, size_t cap, const struct loki_request *req);

/*
 * Encode @req except its payload bytes: the payload is the last value of the map, so the
 * frame is this head followed by exactly req->payload.len payload bytes (send both with
 * one writev to avoid copying the payload). The prefix already counts the payload.
 * Returns the head length, -ENOBUFS or -EINVAL. Pure; any thread.
 */
ssize_t loki_proto_encode_request_head(uint8_t *buf, size_t cap, const struct loki_request *req);

/* Encode @r as one whole frame. Returns its length, -ENOBUFS or -EINVAL. Pure; any thread. */
ssize_t loki_proto_encode_reply(uint8_t *buf, size_t cap, const struct loki_reply *r);

/* As loki_proto_encode_reply() but with @type and @id overriding r->type/has_id/id (so a
 * server can answer with a const reply it was handed). Pure; any thread. */
ssize_t loki_proto_encode_reply_as(uint8_t *buf, size_t cap, const struct loki_reply *r,
                                   enum loki_msg_type type, uint64_t id);

#endif
