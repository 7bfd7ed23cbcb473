/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The KServe v2 inference protocol ("open inference protocol") as the HTTP front door speaks
 * it, apart from any socket: an infer request body (JSON, or JSON then raw bytes with the
 * binary-data extension) parsed into the one payload a Loki pipeline takes, a lokid reply
 * rendered as a KServe response, and Loki statuses mapped to HTTP codes (docs/protocol.md,
 * "HTTP front door"). Pure: jansson only, no I/O, no threads, no logging. Internal to the
 * front door (http_front.c); tests/http/test_kserve.c drives it directly.
 */
#ifndef LOKI_HTTP_KSERVE_H
#define LOKI_HTTP_KSERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loki/proto.h"

#define LOKI_KSERVE_HEADER_MAX (64u << 10) /* the JSON part of a binary-data request */
#define LOKI_KSERVE_ID_MAX 128             /* bytes of a request's "id" */
#define LOKI_KSERVE_INPUT "payload"        /* the input the metadata names (any name is taken) */
#define LOKI_KSERVE_OUTPUT "output"        /* the one output: the leaf outputs, shape [n] */

/* An infer request, as parsed. */
struct loki_kserve_req {
    bool has_id;
    char id[LOKI_KSERVE_ID_MAX + 1]; /* "id", echoed in the response */
    const uint8_t *payload;          /* the input's one BYTES element; points into the body */
    uint32_t payload_len;
    double deadline_ms; /* parameters.deadline_ms (> 0), else 0 */
    bool binary_output; /* the output in the binary-data extension */
    bool output_str;    /* JSON output elements as strings (content_type "str"), not base64 */
    bool no_result;     /* parameters.loki_result false: the result tree left out */
};

/* A rendered response. @body is malloc()ed: free() it, or hand it to libmicrohttpd. */
struct loki_kserve_resp {
    unsigned http;          /* status code */
    char *body;             /* JSON, or JSON then binary data when header_len > 0 */
    size_t len;             /* bytes of body */
    size_t header_len;      /* > 0: binary-data response, body[0..header_len) is the JSON */
    unsigned retry_after_s; /* > 0: send Retry-After */
    bool close;             /* send Connection: close (lokid is draining) */
};

/*
 * The largest body an infer request may have when payloads are at most @max_payload bytes:
 * base64 in JSON (4/3 of it) plus LOKI_KSERVE_HEADER_MAX of JSON around it. Pure.
 */
size_t loki_kserve_body_max(uint32_t max_payload);

/*
 * Parse the infer request @body of @len bytes. @header_len: the request's
 * Inference-Header-Content-Length (binary-data extension: the JSON is @body[0..header_len) and
 * the input's bytes follow); 0 when absent (all JSON). The payload is left in @body (the binary
 * part in place, or base64 and "str" data decoded over the start of @body), so @rq->payload
 * is valid while @body is. Returns 0; -EINVAL when the request is malformed (HTTP 400, @err
 * says why); LOKI_ETOOBIG when the payload exceeds @max_payload (HTTP 413). Pure; any thread.
 */
int loki_kserve_parse_infer(uint8_t *body, size_t len, size_t header_len, uint32_t max_payload,
                            struct loki_kserve_req *rq, char *err, size_t errlen);

/* The HTTP status of a reply with Loki status @s (the table in docs/protocol.md). Pure. */
unsigned loki_kserve_http_status(enum loki_status s);

/*
 * Render lokid's reply @r to infer request @rq of model @model into @out (any status: errors
 * get a KServe error body too). @r and its slices are borrowed for the call. Returns 0 or
 * -ENOMEM. Pure; any thread.
 */
int loki_kserve_render_reply(const char *model, const struct loki_kserve_req *rq,
                             const struct loki_reply *r, struct loki_kserve_resp *out);

/*
 * A KServe error response, {"error": @msg}, with status code @http. Returns 0 or -ENOMEM.
 * Pure; any thread.
 */
int loki_kserve_render_error(unsigned http, const char *msg, struct loki_kserve_resp *out);

/* Base64 (RFC 4648, padded) of @n bytes into @out, which holds 4 * ((n + 2) / 3) bytes.
 * Returns the length written. Pure. */
size_t loki_base64_encode(const uint8_t *in, size_t n, char *out);

/* Decode @n base64 characters into @out (room for 3 * n / 4 bytes; @out may be @in).
 * Returns the length, or -EINVAL for a character outside the alphabet or bad padding. Pure. */
long loki_base64_decode(const char *in, size_t n, uint8_t *out);

#endif
