/* SPDX-License-Identifier: Apache-2.0 */
/* Implementation of the shared test helpers (see harness.h). */
#include "harness.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *loki_test_src(const char *rel)
{
    static __thread char buf[PATH_MAX];
    const char *root = getenv("LOKI_SOURCE_DIR");
    snprintf(buf, sizeof(buf), "%s/%s", root ? root : ".", rel);
    return buf;
}

const char *loki_test_bin(const char *rel)
{
    static __thread char buf[PATH_MAX];
    const char *root = getenv("LOKI_BINARY_DIR");
    snprintf(buf, sizeof(buf), "%s/%s", root ? root : "./build", rel);
    return buf;
}

const char *loki_test_write_tmp(const char *text, const char *suffix)
{
    static __thread char buf[PATH_MAX];
    snprintf(buf, sizeof(buf), "/tmp/loki-test-XXXXXX%s", suffix);
    int fd = mkstemps(buf, (int)strlen(suffix));
    if (fd < 0)
        return NULL;
    size_t n = strlen(text);
    if (write(fd, text, n) != (ssize_t)n) {
        close(fd);
        return NULL;
    }
    close(fd);
    return buf;
}

pid_t loki_test_spawn_self(const char *role, const char *arg)
{
    pid_t pid = fork();
    if (pid == 0) {
        char *argv[] = {"self", (char *)role, (char *)arg, NULL};
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    return pid;
}
