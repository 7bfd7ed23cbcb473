/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The standard process metrics of the Prometheus client libraries
 * (process_cpu_seconds_total, process_resident_memory_bytes, ...), read for
 * the calling process from /proc (Linux). The reports render them from a
 * struct loki_status_view (loki/status.h); this only samples.
 */
#ifndef LOKI_PROCESS_H
#define LOKI_PROCESS_H

#include <stdint.h>

struct loki_process_stats {
    double cpu_seconds;        /* user + system CPU time */
    double start_time_seconds; /* since the Unix epoch */
    uint64_t resident_bytes, virtual_bytes;
    uint64_t open_fds, max_fds; /* descriptors open now; RLIMIT_NOFILE's soft limit */
};

/*
 * Sample the calling process into @out. Returns 0, or a negative errno when /proc cannot be
 * read (@out then holds zeros where a figure is missing). Any thread; opens and reads
 * /proc/self/stat, /proc/stat and /proc/self/fd, so not on a hot path.
 */
int loki_process_sample(struct loki_process_stats *out);

#endif
