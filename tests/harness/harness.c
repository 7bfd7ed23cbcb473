/* SPDX-License-Identifier: Apache-2.0 */
/* Implementation of the shared test helpers (see harness.h). */
#include "harness.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
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

static char tmpdir[PATH_MAX];
static pid_t tmpdir_owner;
static pthread_once_t tmpdir_once = PTHREAD_ONCE_INIT;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0; /* go on: remove what can be removed */
}

/* atexit: forked children inherit the handler, only the folder's maker removes it. */
static void tmpdir_remove(void)
{
    if (tmpdir[0] && getpid() == tmpdir_owner)
        nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void tmpdir_make(void)
{
    const char *base = getenv("TMPDIR");
    char path[PATH_MAX];
    if (!base || !*base)
        base = "/tmp";
    /* short: Unix socket paths in it must stay under 108 bytes */
    snprintf(path, sizeof(path), "%s/loki-test-%.24s-XXXXXX", base, program_invocation_short_name);
    if (!mkdtemp(path))
        return;
    tmpdir_owner = getpid();
    memcpy(tmpdir, path, sizeof(path));
    atexit(tmpdir_remove);
}

const char *loki_test_tmpdir(void)
{
    pthread_once(&tmpdir_once, tmpdir_make);
    return tmpdir[0] ? tmpdir : NULL;
}

const char *loki_test_tmp_path(const char *name)
{
    static __thread char buf[PATH_MAX];
    const char *d = loki_test_tmpdir();
    if (!d)
        return NULL;
    snprintf(buf, sizeof(buf), "%s/%s", d, name);
    return buf;
}

const char *loki_test_write_tmp(const char *text, const char *suffix)
{
    static __thread char buf[PATH_MAX];
    const char *d = loki_test_tmpdir();
    if (!d)
        return NULL;
    snprintf(buf, sizeof(buf), "%s/XXXXXX%s", d, suffix);
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
