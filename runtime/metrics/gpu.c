/* SPDX-License-Identifier: Apache-2.0 */
/*
 * NVML through dlopen (loki/gpu.h). Only the few entry points needed are
 * looked up, with the types of nvml.h written out here: their ABI has been
 * stable since the _v2 names (CUDA 5), and it spares the build NVML's
 * header. Utilisation is nvmlDeviceGetUtilizationRates()'s "gpu" percent.
 */
#include "loki/gpu.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvml_return;      /* nvmlReturn_t: 0 is NVML_SUCCESS */
typedef void *nvml_device;    /* nvmlDevice_t */
struct nvml_utilization {     /* nvmlUtilization_t */
    unsigned int gpu, memory; /* percent */
};
struct nvml_memory { /* nvmlMemory_t */
    unsigned long long total, free, used;
};

struct loki_gpu {
    void *lib;
    nvml_return (*shutdown)(void);
    nvml_return (*utilization)(nvml_device, struct nvml_utilization *);
    nvml_return (*memory)(nvml_device, struct nvml_memory *);
    int n;
    nvml_device dev[LOKI_GPU_MAX];
    struct loki_gpu_stats st[LOKI_GPU_MAX];
    uint64_t sampled_ns;
    bool have_sample;
};

int loki_gpu_open(const char *library, struct loki_gpu **out)
{
    void *lib = dlopen(library ? library : LOKI_GPU_NVML, RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        return -ENOENT;
    struct loki_gpu *g = calloc(1, sizeof(*g));
    if (!g) {
        dlclose(lib);
        return -ENOMEM;
    }
    g->lib = lib;
    nvml_return (*init)(void) = (nvml_return(*)(void))dlsym(lib, "nvmlInit_v2");
    nvml_return (*count)(unsigned int *) =
        (nvml_return(*)(unsigned int *))dlsym(lib, "nvmlDeviceGetCount_v2");
    nvml_return (*handle)(unsigned int, nvml_device *) =
        (nvml_return(*)(unsigned int, nvml_device *))dlsym(lib, "nvmlDeviceGetHandleByIndex_v2");
    nvml_return (*uuid)(nvml_device, char *, unsigned int) =
        (nvml_return(*)(nvml_device, char *, unsigned int))dlsym(lib, "nvmlDeviceGetUUID");
    g->shutdown = (nvml_return(*)(void))dlsym(lib, "nvmlShutdown");
    g->utilization = (nvml_return(*)(nvml_device, struct nvml_utilization *))dlsym(
        lib, "nvmlDeviceGetUtilizationRates");
    g->memory =
        (nvml_return(*)(nvml_device, struct nvml_memory *))dlsym(lib, "nvmlDeviceGetMemoryInfo");
    int rc = -ENOENT;
    if (!init || !count || !handle || !g->shutdown || !g->utilization || !g->memory)
        goto unload;
    rc = -ENODEV;
    if (init())
        goto unload;
    unsigned int n = 0;
    if (count(&n) || n == 0)
        goto shut;
    for (unsigned int i = 0; i < n && g->n < LOKI_GPU_MAX; i++) {
        struct loki_gpu_stats *s = &g->st[g->n];
        if (handle(i, &g->dev[g->n]))
            continue; /* a device NVML cannot reach (no permission, fell off the bus) */
        s->index = (int)i;
        if (!uuid || uuid(g->dev[g->n], s->uuid, sizeof(s->uuid)))
            s->uuid[0] = 0;
        s->uuid[sizeof(s->uuid) - 1] = 0;
        g->n++;
    }
    if (g->n == 0)
        goto shut;
    *out = g;
    return 0;
shut:
    g->shutdown();
unload:
    dlclose(lib);
    free(g);
    return rc;
}

void loki_gpu_close(struct loki_gpu *g)
{
    if (!g)
        return;
    g->shutdown();
    dlclose(g->lib);
    free(g);
}

int loki_gpu_sample(struct loki_gpu *g, uint64_t now_ns, const struct loki_gpu_stats **out)
{
    if (!g->have_sample || now_ns - g->sampled_ns >= 1000000000ull) {
        for (int i = 0; i < g->n; i++) {
            struct loki_gpu_stats *s = &g->st[i];
            struct nvml_utilization u;
            struct nvml_memory m;
            s->ok = !g->utilization(g->dev[i], &u) && !g->memory(g->dev[i], &m);
            if (s->ok) {
                s->utilization = u.gpu > 100 ? 1 : u.gpu / 100.0;
                s->mem_used_bytes = m.used;
                s->mem_total_bytes = m.total;
            }
        }
        g->sampled_ns = now_ns;
        g->have_sample = true;
    }
    *out = g->st;
    return g->n;
}
