/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hwloc placement (see supervisor_place.h). GPUs are the NVIDIA PCI display and 3D
 * controllers in PCI bus order, which is CUDA's order under
 * CUDA_DEVICE_ORDER=PCI_BUS_ID (the supervisor sets it for workers).
 */
#include "supervisor_place.h"

#include <errno.h>
#include <hwloc.h>
#include <stdio.h>
#include <stdlib.h>

#include "loki/limits.h"

#define MAX_GPUS LOKI_MAX_GPUS

struct loki_placement {
    hwloc_topology_t topo;
    int n_gpus;
    hwloc_cpuset_t near[MAX_GPUS];
    int n_cores;
};

int loki_placement_create(struct loki_placement **out)
{
    struct loki_placement *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    if (hwloc_topology_init(&p->topo))
        goto err_free;
    hwloc_topology_set_type_filter(p->topo, HWLOC_OBJ_PCI_DEVICE, HWLOC_TYPE_FILTER_KEEP_ALL);
    if (hwloc_topology_load(p->topo))
        goto err_topo;
    p->n_cores = hwloc_get_nbobjs_by_type(p->topo, HWLOC_OBJ_CORE);
    if (p->n_cores <= 0)
        p->n_cores = hwloc_get_nbobjs_by_type(p->topo, HWLOC_OBJ_PU);
    hwloc_obj_t pci = NULL;
    while ((pci = hwloc_get_next_pcidev(p->topo, pci)) && p->n_gpus < MAX_GPUS) {
        unsigned cls = pci->attr->pcidev.class_id;
        if (pci->attr->pcidev.vendor_id != 0x10de || (cls != 0x0300 && cls != 0x0302))
            continue;
        hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(p->topo, pci);
        p->near[p->n_gpus] =
            hwloc_bitmap_dup(anc ? anc->cpuset : hwloc_topology_get_topology_cpuset(p->topo));
        if (!p->near[p->n_gpus])
            goto err_topo;
        p->n_gpus++;
    }
    *out = p;
    return 0;
err_topo:
    for (int i = 0; i < p->n_gpus; i++)
        hwloc_bitmap_free(p->near[i]);
    hwloc_topology_destroy(p->topo);
err_free:
    free(p);
    return -EIO;
}

void loki_placement_destroy(struct loki_placement *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n_gpus; i++)
        hwloc_bitmap_free(p->near[i]);
    hwloc_topology_destroy(p->topo);
    free(p);
}

int loki_placement_core_for(const struct loki_placement *p, int gpu, int slot, char *buf,
                            size_t len)
{
    hwloc_const_cpuset_t within =
        gpu >= 0 && gpu < p->n_gpus ? p->near[gpu] : hwloc_topology_get_topology_cpuset(p->topo);
    int n = hwloc_get_nbobjs_inside_cpuset_by_type(p->topo, within, HWLOC_OBJ_CORE);
    hwloc_obj_type_t type = HWLOC_OBJ_CORE;
    if (n <= 0) {
        type = HWLOC_OBJ_PU;
        n = hwloc_get_nbobjs_inside_cpuset_by_type(p->topo, within, type);
    }
    if (n <= 0)
        return -ENOENT;
    /* spread slots of different GPUs apart so two GPUs' first workers differ */
    int idx = (slot + (gpu > 0 ? gpu : 0)) % n;
    hwloc_obj_t o = hwloc_get_obj_inside_cpuset_by_type(p->topo, within, type, (unsigned)idx);
    if (!o)
        return -ENOENT;
    if (hwloc_bitmap_list_snprintf(buf, len, o->cpuset) >= (int)len)
        return -ENOSPC;
    return 0;
}

int loki_placement_bind(const struct loki_placement *p, pid_t pid, const char *cpus)
{
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    if (!set)
        return -ENOMEM;
    int rc = 0;
    if (hwloc_bitmap_list_sscanf(set, cpus) < 0)
        rc = -EINVAL;
    else if (hwloc_set_proc_cpubind(p->topo, pid, set, HWLOC_CPUBIND_PROCESS))
        rc = -errno;
    hwloc_bitmap_free(set);
    return rc;
}
