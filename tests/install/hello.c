/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The smallest client of the installed package: connect to lokid, send one
 * query to pipeline "small" (tests/lokid/small.yaml), print what came back.
 * Exit 0 only when the reply is ok with the pipeline's three leaf outputs.
 */
#include <stdio.h>

#include <loki/client.h>
#include <loki/error.h>

int main(int argc, char **argv)
{
    struct loki_client *c;
    struct loki_client_result res;
    if (argc != 2) {
        fprintf(stderr, "usage: hello SOCKET\n");
        return 2;
    }
    int rc = loki_client_connect(argv[1], NULL, &c);
    if (rc) {
        fprintf(stderr, "hello: connect %s: %s\n", argv[1], loki_strerror(rc));
        return 1;
    }
    struct loki_client_req rq = {
        .pipeline = "small", .payload = "frame", .payload_len = 5, .timeout_ms = 10000};
    rc = loki_client_infer(c, &rq, &res);
    if (rc) {
        fprintf(stderr, "hello: infer: %s\n", loki_strerror(rc));
        loki_client_close(c);
        return 1;
    }
    printf("status %s, %u outputs, accuracy %.1f, latency %.2f ms, path %s\n",
           loki_status_name(res.status), res.n_outputs, res.accuracy, res.latency_ms,
           res.n_paths ? res.paths[0] : "-");
    int ok = res.status == LOKI_STATUS_OK && res.n_outputs == 3;
    loki_client_result_fini(&res);
    loki_client_close(c);
    return ok ? 0 : 1;
}
