/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The process metrics (loki/process.h) from /proc, as the Prometheus client
 * libraries read them: CPU time and start time from /proc/self/stat (clock
 * ticks; the start is ticks after boot, plus /proc/stat's btime), memory from
 * the same line (rss in pages, vsize in bytes), descriptors by listing
 * /proc/self/fd, their limit from getrlimit().
 */
#include "loki/process.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Boot time, seconds since the epoch (/proc/stat "btime"), or 0. */
static double boot_time(void)
{
    FILE *f = fopen("/proc/stat", "re");
    char line[256];
    double bt = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (!strncmp(line, "btime ", 6)) {
            bt = strtod(line + 6, NULL);
            break;
        }
    fclose(f);
    return bt;
}

int loki_process_sample(struct loki_process_stats *out)
{
    int rc = 0;
    memset(out, 0, sizeof(*out));
    double tick = (double)sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "re");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    /* after "pid (comm) ": comm may hold spaces and parentheses, so from the last ')' */
    const char *p = strrchr(buf, ')');
    unsigned long long utime, stime, start, vsize;
    long long rss;
    if (p && tick > 0 &&
        sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d "
               "%llu %llu %lld",
               &utime, &stime, &start, &vsize, &rss) == 5) {
        out->cpu_seconds = (double)(utime + stime) / tick;
        out->start_time_seconds = boot_time() + (double)start / tick;
        out->virtual_bytes = vsize;
        out->resident_bytes = rss > 0 ? (uint64_t)rss * (uint64_t)page : 0;
    } else {
        rc = -EIO;
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            out->open_fds += e->d_name[0] != '.';
        out->open_fds--; /* the listing's own descriptor */
        closedir(d);
    } else {
        rc = -errno;
    }
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl))
        out->max_fds = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
    return rc;
}
