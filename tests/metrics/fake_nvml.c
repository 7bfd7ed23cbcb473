/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A stand-in for libnvidia-ml.so.1, loaded by tests/metrics/test_gpu.c
 * through loki_gpu_open(path): two devices with set utilisation and memory.
 * fake_nvml_set() (found with dlsym) changes device 1's figures, or makes
 * its queries fail; FAKE_NVML_INIT in the environment makes nvmlInit_v2()
 * return that code (9: driver not loaded), FAKE_NVML_COUNT sets the count.
 */
#include <stdlib.h>
#include <string.h>

struct util {
    unsigned int gpu, memory;
};
struct mem {
    unsigned long long total, free, used;
};

static int devs[2] = {0, 1}; /* handles point here */
static unsigned int util1 = 80;
static unsigned long long used1 = 3ull << 30;
static int fail1;
static int calls; /* utilisation queries, for the cache test */

void fake_nvml_set(unsigned int util, unsigned long long used, int fail);
int fake_nvml_calls(void);

void fake_nvml_set(unsigned int util, unsigned long long used, int fail)
{
    util1 = util;
    used1 = used;
    fail1 = fail;
}

int fake_nvml_calls(void)
{
    return calls;
}

int nvmlInit_v2(void)
{
    const char *e = getenv("FAKE_NVML_INIT");
    return e ? atoi(e) : 0;
}

int nvmlShutdown(void)
{
    return 0;
}

int nvmlDeviceGetCount_v2(unsigned int *n)
{
    const char *e = getenv("FAKE_NVML_COUNT");
    *n = e ? (unsigned int)atoi(e) : 2;
    return 0;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **dev)
{
    if (i > 1)
        return 2; /* NVML_ERROR_INVALID_ARGUMENT */
    *dev = &devs[i];
    return 0;
}

int nvmlDeviceGetUUID(void *dev, char *uuid, unsigned int len)
{
    const char *u = *(int *)dev ? "GPU-fake-1" : "GPU-fake-0";
    if (len <= strlen(u))
        return 7; /* NVML_ERROR_INSUFFICIENT_SIZE */
    strcpy(uuid, u);
    return 0;
}

int nvmlDeviceGetUtilizationRates(void *dev, struct util *u)
{
    calls++;
    if (*(int *)dev && fail1)
        return 15; /* NVML_ERROR_GPU_IS_LOST */
    u->gpu = *(int *)dev ? util1 : 37;
    u->memory = 5;
    return 0;
}

int nvmlDeviceGetMemoryInfo(void *dev, struct mem *m)
{
    m->total = 80ull << 30;
    m->used = *(int *)dev ? used1 : 1ull << 30;
    m->free = m->total - m->used;
    return 0;
}
