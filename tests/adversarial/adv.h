/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers of the adversarial tests (tests/adversarial/): start and stop a lokid on a topology
 * written by the test, find its workers and its resident memory, and talk to it over raw
 * Unix-socket connections (no client library), so a test controls every byte it sends and
 * reads every frame it is sent. Assertions here run on the test's main thread only.
 */
#ifndef LOKI_TEST_ADV_H
#define LOKI_TEST_ADV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "loki/proto.h"

struct adv_lokid {
    pid_t pid;
    char sock[108];
    char topo[512];
};

/*
 * Write @yaml to a scratch file and start lokid on it (--quiet, --initial-demand @demand, then
 * the NULL-terminated @extra arguments, may be NULL); returns once lokid reports ready. Fails
 * the test when it does not. The lokid is SIGKILLed if this process dies.
 */
void adv_lokid_start(struct adv_lokid *d, const char *yaml, const char *demand,
                     const char *const *extra);
/* A sanitizer's allocator keeps what is freed (ASan's quarantine holds up to 256 MiB), so
 * resident memory says nothing there: memory bounds are checked in plain builds only. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ADV_RSS_MEANINGFUL 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define ADV_RSS_MEANINGFUL 0
#endif
#endif
#ifndef ADV_RSS_MEANINGFUL
#define ADV_RSS_MEANINGFUL 1
#endif

/* Send @sig and reap lokid within @timeout_ms (SIGKILL after that, and fail). Wait status. */
int adv_lokid_stop(struct adv_lokid *d, int sig, int timeout_ms);
/* Teardown after a failed assertion: SIGKILL and reap, if still running. */
void adv_lokid_kill(struct adv_lokid *d);
/* A cmocka teardown: adv_lokid_kill() on the test's state, its struct adv_lokid (register
 * the test with cmocka_unit_test_prestate_setup_teardown(test, NULL, adv_teardown, &lokid)). */
int adv_teardown(void **state);
/* True while lokid runs (not reaped, not a zombie). */
bool adv_lokid_alive(const struct adv_lokid *d);

/* Children of @pid (lokid's worker processes) into @out, at most @max; their count. */
int adv_children(pid_t pid, pid_t *out, int max);
/* Resident set of @pid in KiB (VmRSS), -1 when unreadable. */
long adv_rss_kb(pid_t pid);
/* One "Name:  N kB" line of /proc/@pid/status (VmRSS, RssAnon, RssShmem...), -1 when absent. */
long adv_status_kb(pid_t pid, const char *field);

double adv_now_ms(void);
void adv_sleep_ms(double ms);

/* Connect to @path; the socket, or -errno. Blocking. */
int adv_connect(const char *path);
/* Write all of @p; 0 or -errno (EPIPE when the peer closed). */
int adv_send_all(int fd, const void *p, size_t n);
/* A frame: big-endian length @n, then @body. 0 or -errno. */
int adv_send_body(int fd, const void *body, uint32_t n);
/* Encode and send @req as one frame. 0 or -errno. */
int adv_send_request(int fd, const struct loki_request *req);
/*
 * Read one frame into @buf (@cap bytes, prefix included) and decode it as a reply into @r
 * (slices point into @buf). 0; -1 at EOF or reset; -2 when nothing complete came within
 * @timeout_ms; -3 for a frame over @cap or one that does not decode.
 */
int adv_read_reply(int fd, uint8_t *buf, size_t cap, struct loki_reply *r, int timeout_ms);
/* True when the peer closes within @timeout_ms (anything sent before that is discarded). */
bool adv_at_eof(int fd, int timeout_ms);

/*
 * The frontend's own counters (the "metrics" request: frontend_requests, frontend_replies,
 * ...) over a fresh connection to @sock, into @names/@vals (at most @max, names copied).
 * Returns the count, or -1 when lokid did not answer.
 */
int adv_frontend_metrics(const char *sock, char names[][40], double *vals, int max);
/* One of those counters, NAN when absent. */
double adv_frontend_metric(const char *sock, const char *name);

/* The Prometheus text lokid on @sock serves (the caller frees it), NULL when it did not. */
char *adv_prom_text(const char *sock);
/* Value of the first sample line of @text starting with @series (name and labels), or NAN. */
double adv_prom_value(const char *text, const char *series);

#endif
