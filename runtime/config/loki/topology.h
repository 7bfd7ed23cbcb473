/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Topology file loader: YAML (JSON accepted, it is YAML's flow style) into
 * the pipeline model of planner/loki/model.h, validated as a whole. Errors
 * name file:line:column and the key, one per line, so a typo never passes
 * silently. Every key, unit and default is documented in docs/topology.md.
 */
#ifndef LOKI_TOPOLOGY_H
#define LOKI_TOPOLOGY_H

#include <stddef.h>
#include <sys/stat.h>

#include "loki/config.h"
#include "loki/model.h"

/*
 * Load and validate the topology file @path.
 * @out:    on success a new model; release with free().
 * @err:    on failure, the errors ("file:line:col: key: message", one per
 *          line, at most 20); may be NULL.
 * Returns 0, -errno when the file cannot be read, or LOKI_ETOPOLOGY.
 * Any thread (no global state).
 */
int loki_topology_load(const char *path, struct loki_topology **out, char *err, size_t errlen);

/* Same as loki_topology_load() over an in-memory document; @name is used in messages. */
int loki_topology_parse(const char *text, size_t len, const char *name, struct loki_topology **out,
                        char *err, size_t errlen);

/*
 * As loki_topology_load(), and also fill @cfg (may be NULL) with the file's
 * deployment sections (frontend, runtime), defaults where absent. What lokid
 * and its workers load; the planner needs only *@out.
 */
int loki_config_load(const char *path, struct loki_topology **out, struct loki_config *cfg,
                     char *err, size_t errlen);

/* As loki_config_load() over an in-memory document; @name is used in messages. */
int loki_config_parse(const char *text, size_t len, const char *name, struct loki_topology **out,
                      struct loki_config *cfg, char *err, size_t errlen);

/*
 * Read the file @path whole into a new buffer (*@text, *@len bytes and a NUL after them;
 * release with free()), the way loki_config_load() reads it. @st, when not NULL, receives the
 * status of the file as opened (fstat: the same file that was read), so a caller can tell who may
 * write it. Returns 0, -errno (-EFBIG over 64 MiB) with "PATH: why" in @err. Any thread.
 */
int loki_config_read(const char *path, char **text, size_t *len, struct stat *st, char *err,
                     size_t errlen);

/*
 * The sealed snapshot lokid hands its workers: a new memfd ("loki-config", close-on-exec)
 * holding the @len bytes of @text and sealed against any change (F_SEAL_WRITE, F_SEAL_GROW,
 * F_SEAL_SHRINK, F_SEAL_SEAL), so what a worker loads is the text lokid validated, whatever
 * happens to the file afterwards. Returns 0 with the descriptor in *@fd (the caller's to
 * close) or -errno. Any thread.
 */
int loki_config_seal(const char *text, size_t len, int *fd);

/*
 * As loki_config_load(), and seal the bytes it validated (loki_config_seal()): the new
 * snapshot's descriptor in *@fd (the caller's to close), the file's status as read in @st
 * (may be NULL). Returns 0 or the error of either, with its message in @err. Any thread.
 */
int loki_config_load_snapshot(const char *path, struct loki_topology **out, struct loki_config *cfg,
                              int *fd, struct stat *st, char *err, size_t errlen);

/*
 * As loki_config_parse() over a snapshot made by loki_config_seal() (@fd borrowed; read with
 * pread(), so processes sharing the descriptor do not disturb each other), @name in messages.
 * A descriptor that is not sealed against every change is refused: -EPERM (or the fcntl or
 * read error) with the reason in @err. Any thread.
 */
int loki_config_load_sealed(int fd, const char *name, struct loki_topology **out,
                            struct loki_config *cfg, char *err, size_t errlen);

/*
 * Whether lokid may swap the configuration it runs (@cur, @cur_cfg) for @next, @next_cfg (both
 * valid, loaded with the same command-line overrides applied) without a restart. They may
 * differ only in what is read afresh where it is used:
 *   - what only workers read, as they start: a variant's `backend` between `sim` and plugin
 *     paths (`cuda` to or from anything else is fixed at start: MPS and the GPU
 *     environment), its `args` and `max_output_bytes`, a task's `input` description;
 *   - the planner settings read at every solve or dispatch: policy, headroom, beta,
 *     hysteresis, min_dwell_s, time_limit_ms, mip_gap, burst_spares, fallback,
 *     accuracy_floor, early_drop, reroute, static_plan.
 * Everything else (GPUs, pipelines, tasks, variants and their profiles, fan-outs, path
 * accuracies, planner.interval_ms, ewma_alpha, ewma_windows, demand_sigmas, the frontend and
 * runtime sections) sizes or seeds state built at start. Returns 0, or LOKI_ETOPOLOGY with
 * the first such difference named in @why ("pipeline p, task t, variant v: latency_ms
 * differs"). Pure; any thread.
 */
int loki_config_reload_check(const struct loki_topology *cur, const struct loki_config *cur_cfg,
                             const struct loki_topology *next, const struct loki_config *next_cfg,
                             char *why, size_t whylen);

#endif
