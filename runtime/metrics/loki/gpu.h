/* SPDX-License-Identifier: Apache-2.0 */
/*
 * GPU utilisation and memory from NVML, loaded at run time: dlopen() of
 * libnvidia-ml.so.1 (the driver's), so building needs no NVML and a machine
 * without the driver simply has no GPU metrics. Samples are kept for a second
 * (a scrape every few seconds costs one NVML round per GPU at most once a
 * second). One thread owns a struct loki_gpu.
 */
#ifndef LOKI_GPU_H
#define LOKI_GPU_H

#include <stdbool.h>
#include <stdint.h>

#define LOKI_GPU_MAX 64                   /* devices sampled */
#define LOKI_GPU_NVML "libnvidia-ml.so.1" /* what loki_gpu_open(NULL) loads */

/* One device as NVML numbers it (which may differ from CUDA's order: match by uuid). */
struct loki_gpu_stats {
    int index;
    char uuid[96];
    bool ok;            /* this sample's queries succeeded */
    double utilization; /* 0..1: time a kernel ran over NVML's last sample period */
    uint64_t mem_used_bytes, mem_total_bytes;
};

struct loki_gpu;

/*
 * Load NVML from @library (NULL: LOKI_GPU_NVML, found the dynamic loader's way), initialise it
 * and find its devices. Returns 0 and the sampler in *@out; -ENOENT when the library or a
 * function it must export is missing, -ENODEV when NVML does not initialise (no driver) or
 * sees no device, -ENOMEM. Release with loki_gpu_close().
 */
int loki_gpu_open(const char *library, struct loki_gpu **out);

/* Shut NVML down and unload it. NULL is a no-op. */
void loki_gpu_close(struct loki_gpu *g);

/*
 * The devices' figures at @now_ns (any monotonic clock): sampled afresh when the last sample is
 * a second old or more, else the last one. Returns how many devices *@out points to (valid
 * until the next call); a device whose queries failed has ok = false.
 */
int loki_gpu_sample(struct loki_gpu *g, uint64_t now_ns, const struct loki_gpu_stats **out);

#endif
