/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the end-to-end benchmarks (bench_e2e, bench_data) share: start a lokid on a topology
 * and wait for its ready line, stop it, and count the CPU time a process tree used (lokid and
 * its workers, a redis-server), so a benchmark can report CPU per query next to a throughput
 * that the machine's other load moves. Header-only: each benchmark is one executable.
 */
#ifndef LOKI_BENCH_LOKID_H
#define LOKI_BENCH_LOKID_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

struct loki_bench_lokid {
    pid_t pid;
    char sock[128], hop_log[128];
};

/*
 * Start @exe --topology @topology on @dir/@name.sock with LOKI_HOP_LOG=@dir/@name.hops and
 * wait (30 s at most) for its ready line. Returns 0 or a negative errno; lokid's stderr goes
 * to /dev/null unless LOKI_BENCH_VERBOSE is set.
 */
static inline int loki_bench_lokid_start(struct loki_bench_lokid *l, const char *exe,
                                         const char *topology, const char *dir, const char *name,
                                         const char *arena_mb)
{
    int fds[2];
    snprintf(l->sock, sizeof(l->sock), "%s/%s.sock", dir, name);
    snprintf(l->hop_log, sizeof(l->hop_log), "%s/%s.hops", dir, name);
    if (pipe2(fds, O_CLOEXEC))
        return -errno;
    l->pid = fork();
    if (l->pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -errno;
    }
    if (l->pid == 0) {
        char fd[16];
        int w = dup(fds[1]); /* without O_CLOEXEC: lokid inherits it */
        snprintf(fd, sizeof(fd), "%d", w);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0 && !getenv("LOKI_BENCH_VERBOSE"))
            dup2(null, 2);
        setenv("LOKI_HOP_LOG", l->hop_log, 1);
        if (arena_mb)
            execl(exe, exe, "--topology", topology, "--socket", l->sock, "--ready-fd", fd,
                  "--quiet", "--fixed-plan", "--arena-mb", arena_mb, (char *)NULL);
        else
            execl(exe, exe, "--topology", topology, "--socket", l->sock, "--ready-fd", fd,
                  "--quiet", "--fixed-plan", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    struct pollfd p = {.fd = fds[0], .events = POLLIN};
    char buf[16] = {0};
    ssize_t n = 0;
    if (poll(&p, 1, 30000) == 1)
        n = read(fds[0], buf, sizeof(buf) - 1);
    close(fds[0]);
    if (n <= 0 || strncmp(buf, "ready", 5)) {
        kill(l->pid, SIGKILL);
        waitpid(l->pid, NULL, 0);
        l->pid = -1;
        return -EIO;
    }
    return 0;
}

/* SIGTERM and wait; returns lokid's exit status (128 + signal when killed), -1 when none. */
static inline int loki_bench_lokid_stop(struct loki_bench_lokid *l)
{
    int st = 0;
    if (l->pid <= 0)
        return -1;
    kill(l->pid, SIGTERM);
    pid_t p = waitpid(l->pid, &st, 0);
    l->pid = -1;
    if (p < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* SIGKILL and reap (cleanup paths). */
static inline void loki_bench_lokid_kill(struct loki_bench_lokid *l)
{
    if (l->pid <= 0)
        return;
    kill(l->pid, SIGKILL);
    waitpid(l->pid, NULL, 0);
    l->pid = -1;
}

/* CPU seconds (user + system, every thread) process @pid has used so far; 0 when gone. */
static inline double loki_bench_proc_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long ut, st;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* The same for @pid and its children (lokid and its worker processes). */
static inline double loki_bench_tree_cpu_s(pid_t pid)
{
    char path[64];
    double s = loki_bench_proc_cpu_s(pid);
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return s;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char cp[320];
        snprintf(cp, sizeof(cp), "/proc/%d/task/%s/children", (int)pid, e->d_name);
        FILE *f = fopen(cp, "r");
        int child;
        if (!f)
            continue;
        while (fscanf(f, "%d", &child) == 1)
            s += loki_bench_proc_cpu_s(child);
        fclose(f);
    }
    closedir(d);
    return s;
}

/* CPU seconds this process (every thread) has used so far. */
static inline double loki_bench_self_cpu_s(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_stime.tv_sec +
           ((double)u.ru_utime.tv_usec + (double)u.ru_stime.tv_usec) / 1e6;
}

/* CPU seconds of the children this process has waited for (redis-benchmark after pclose). */
static inline double loki_bench_children_cpu_s(void)
{
    struct rusage u;
    getrusage(RUSAGE_CHILDREN, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_stime.tv_sec +
           ((double)u.ru_utime.tv_usec + (double)u.ru_stime.tv_usec) / 1e6;
}

/* The machine's 1-minute load average, -1 when unknown (reported with the figures). */
static inline double loki_bench_loadavg(void)
{
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1)
            l = -1;
        fclose(f);
    }
    return l;
}

#endif
