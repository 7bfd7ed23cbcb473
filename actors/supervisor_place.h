/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CPU placement of worker processes with hwloc: each GPU maps to the CPU set
 * nearest to it (its PCI device's non-I/O ancestor), found through PCI
 * discovery alone so no CUDA library is needed; without GPUs, workers are
 * spread over the cores. Used by the supervisor on the main loop thread; apart
 * from it because it is the one user of hwloc (its header stays in the .c).
 */
#ifndef LOKI_SUPERVISOR_PLACE_H
#define LOKI_SUPERVISOR_PLACE_H

#include <stddef.h>
#include <sys/types.h>

struct loki_placement;

/* Read the machine. Returns 0 or -ENOMEM/-EIO. */
int loki_placement_create(struct loki_placement **out);
void loki_placement_destroy(struct loki_placement *p);

/*
 * The core for the @slot-th worker of GPU @gpu (gpu < 0 or no GPUs found:
 * the slot-th core of the machine, round robin), written as an hwloc list
 * string ("3") into @buf. Returns 0 or -ENOSPC.
 */
int loki_placement_core_for(const struct loki_placement *p, int gpu, int slot, char *buf,
                            size_t len);

/* Bind process @pid to the CPUs of list string @cpus. Returns 0 or -errno. */
int loki_placement_bind(const struct loki_placement *p, pid_t pid, const char *cpus);

#endif
