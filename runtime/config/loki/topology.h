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

#endif
