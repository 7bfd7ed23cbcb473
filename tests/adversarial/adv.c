/* SPDX-License-Identifier: Apache-2.0 */
/* The adversarial tests' helpers (see adv.h). */
#include "adv.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "loki/client.h"

void adv_lokid_start(struct adv_lokid *d, const char *yaml, const char *demand,
                     const char *const *extra)
{
    int fds[2];
    const char *topo = loki_test_write_tmp(yaml, ".yaml");
    assert_non_null(topo);
    snprintf(d->topo, sizeof(d->topo), "%s", topo);
    const char *sock = loki_test_tmp_path("lokid.sock");
    assert_non_null(sock);
    assert_true(snprintf(d->sock, sizeof(d->sock), "%s", sock) < (int)sizeof(d->sock));
    unlink(d->sock);
    assert_int_equal(pipe(fds), 0);
    d->pid = fork();
    assert_true(d->pid >= 0);
    if (d->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
        close(fds[0]);
        char fd[16];
        snprintf(fd, sizeof(fd), "%d", fds[1]);
        const char *argv[32] = {loki_test_bin("bin/lokid"),
                                "--topology",
                                d->topo,
                                "--socket",
                                d->sock,
                                "--ready-fd",
                                fd,
                                "--quiet",
                                "--initial-demand",
                                demand};
        int n = 10;
        for (int i = 0; extra && extra[i] && n < 31; i++)
            argv[n++] = extra[i];
        argv[n] = NULL;
        execv(argv[0], (char **)argv);
        _exit(127);
    }
    close(fds[1]);
    char buf[16] = {0};
    ssize_t n = read(fds[0], buf, sizeof(buf) - 1); /* blocks until ready or lokid exits */
    close(fds[0]);
    if (n <= 0 || strncmp(buf, "ready", 5))
        fail_msg("lokid did not become ready on %s", d->topo);
}

int adv_lokid_stop(struct adv_lokid *d, int sig, int timeout_ms)
{
    int st = 0;
    if (d->pid <= 0)
        return -1;
    kill(d->pid, sig);
    double end = adv_now_ms() + timeout_ms;
    for (;;) {
        pid_t w = waitpid(d->pid, &st, WNOHANG);
        if (w == d->pid)
            break;
        if (adv_now_ms() > end) {
            kill(d->pid, SIGKILL);
            waitpid(d->pid, &st, 0);
            d->pid = 0;
            fail_msg("lokid did not exit within %d ms of signal %d", timeout_ms, sig);
        }
        adv_sleep_ms(10);
    }
    d->pid = 0;
    unlink(d->sock);
    return st;
}

void adv_lokid_kill(struct adv_lokid *d)
{
    if (d->pid > 0) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
        d->pid = 0;
    }
}

int adv_teardown(void **state)
{
    adv_lokid_kill(*state);
    return 0;
}

bool adv_lokid_alive(const struct adv_lokid *d)
{
    char path[64], state = '?';
    if (d->pid <= 0)
        return false;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)d->pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    /* "pid (comm) S ...": comm may hold spaces and parentheses, the state follows the last ')' */
    char line[512];
    if (fgets(line, sizeof(line), f)) {
        char *p = strrchr(line, ')');
        if (p && p[1] == ' ')
            state = p[2];
    }
    fclose(f);
    return state != '?' && state != 'Z' && state != 'X';
}

int adv_children(pid_t pid, pid_t *out, int max)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pid, (int)pid);
    FILE *f = fopen(path, "r");
    int n = 0, c;
    if (!f)
        return 0;
    while (n < max && fscanf(f, "%d", &c) == 1)
        out[n++] = c;
    fclose(f);
    return n;
}

long adv_status_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    long kb = -1;
    size_t n = strlen(field);
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (!strncmp(line, field, n) && line[n] == ':' && sscanf(line + n + 1, "%ld", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

long adv_rss_kb(pid_t pid)
{
    return adv_status_kb(pid, "VmRSS");
}

double adv_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void adv_sleep_ms(double ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000),
                          .tv_nsec = (long)((ms - 1000 * (double)(time_t)(ms / 1000)) * 1e6)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

int adv_connect(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int adv_send_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pf = {fd, POLLOUT, 0};
            poll(&pf, 1, 1000);
            continue;
        }
        if (k < 0)
            return -errno;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

int adv_send_body(int fd, const void *body, uint32_t n)
{
    uint8_t h[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    int rc = adv_send_all(fd, h, 4);
    return rc ? rc : adv_send_all(fd, body, n);
}

int adv_send_request(int fd, const struct loki_request *req)
{
    uint8_t stackbuf[1024];
    size_t need = loki_proto_request_size(req);
    uint8_t *buf = need <= sizeof(stackbuf) ? stackbuf : malloc(need);
    if (!buf)
        return -ENOMEM;
    ssize_t n = loki_proto_encode_request(buf, need, req);
    int rc = n < 0 ? (int)n : adv_send_all(fd, buf, (size_t)n);
    if (buf != stackbuf)
        free(buf);
    return rc;
}

int adv_read_reply(int fd, uint8_t *buf, size_t cap, struct loki_reply *r, int timeout_ms)
{
    size_t have = 0, want = 4;
    double end = adv_now_ms() + timeout_ms;
    while (have < want) {
        int left = (int)(end - adv_now_ms());
        struct pollfd p = {fd, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, left) <= 0)
            return -2;
        ssize_t k = recv(fd, buf + have, want - have, 0);
        if (k < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (k <= 0)
            return -1;
        have += (size_t)k;
        if (have == 4 && want == 4) {
            want = 4 + ((size_t)buf[0] << 24 | (size_t)buf[1] << 16 | (size_t)buf[2] << 8 | buf[3]);
            if (want > cap)
                return -3;
        }
    }
    char err[LOKI_PROTO_ERR_MAX];
    r->node_buf = NULL;
    r->node_cap = 0;
    return loki_proto_decode_reply(buf + 4, want - 4, r, err, sizeof(err)) ? -3 : 0;
}

bool adv_at_eof(int fd, int timeout_ms)
{
    uint8_t b[4096];
    double end = adv_now_ms() + timeout_ms;
    for (;;) {
        int left = (int)(end - adv_now_ms());
        struct pollfd p = {fd, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, left) <= 0)
            return false;
        ssize_t k = recv(fd, b, sizeof(b), 0);
        if (k < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (k <= 0)
            return true;
    }
}

int adv_frontend_metrics(const char *sock, char names[][40], double *vals, int max)
{
    static uint8_t buf[64 * 1024];
    static struct loki_reply rep;
    int fd = adv_connect(sock), n = -1;
    if (fd < 0)
        return -1;
    struct loki_request q;
    loki_request_init(&q);
    q.type = LOKI_MSG_METRICS;
    q.has_id = true;
    q.id = 1;
    if (adv_send_request(fd, &q) == 0 && adv_read_reply(fd, buf, sizeof(buf), &rep, 10000) == 0 &&
        rep.type == LOKI_MSG_METRICS && rep.status == LOKI_STATUS_OK) {
        n = 0;
        for (uint32_t i = 0; i < rep.n_metrics && n < max; i++, n++) {
            snprintf(names[n], 40, "%.*s", (int)rep.metrics[i].name.len,
                     (const char *)rep.metrics[i].name.ptr);
            vals[n] = rep.metrics[i].value;
        }
    }
    close(fd);
    return n;
}

double adv_frontend_metric(const char *sock, const char *name)
{
    char names[LOKI_PROTO_MAX_METRICS][40];
    double vals[LOKI_PROTO_MAX_METRICS];
    int n = adv_frontend_metrics(sock, names, vals, LOKI_PROTO_MAX_METRICS);
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i], name))
            return vals[i];
    return NAN;
}

char *adv_prom_text(const char *sock)
{
    struct loki_client *c;
    char *text = NULL, err[128];
    if (loki_client_connect(sock, NULL, &c))
        return NULL;
    if (loki_client_report(c, LOKI_MSG_METRICS, "prometheus", 10000, NULL, &text, err,
                           sizeof(err))) {
        free(text);
        text = NULL;
    }
    loki_client_close(c);
    return text;
}

double adv_prom_value(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (!strncmp(p, series, n) && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return NAN;
}
