/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The topology loader's shared parts (internal to runtime/config): the node tree pass 1
 * builds (topology_parse.c), the error collector and the schema helpers pass 2 uses, and
 * the sections read in topology_sections.c. The short names below are the loader's own;
 * the macros give them a loki__topo_ prefix outside their files.
 */
#ifndef LOKI_TOPOLOGY_INTERNAL_H
#define LOKI_TOPOLOGY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "loki/config.h"
#include "loki/model.h"

enum ntype { N_SCALAR, N_MAP, N_SEQ };

struct node {
    enum ntype type;
    int line, col;
    bool quoted;
    char *str;          /* scalar value */
    int n;              /* map: pairs; seq: items */
    struct node **keys; /* map keys (scalars) */
    struct node **vals; /* map values or seq items */
    int cap;
};

#define MAX_ERRORS 20

struct ctx {
    const char *file;
    char *err;
    size_t errlen;
    size_t used;
    int n_errors;
    struct loki_topology *t;
    struct loki_config *cfg; /* the deployment sections */
};

#define errorf loki__topo_errorf
#define node_free loki__topo_node_free
#define parse_tree loki__topo_parse_tree
#define want loki__topo_want
#define get_double loki__topo_get_double
#define get_int loki__topo_get_int
#define get_bool loki__topo_get_bool
#define get_str loki__topo_get_str
#define get_name loki__topo_get_name
#define in_range loki__topo_in_range
#define map_get loki__topo_map_get
#define check_keys loki__topo_check_keys
#define require loki__topo_require
#define load_gpus loki__topo_load_gpus
#define load_planner loki__topo_load_planner
#define load_static_plan loki__topo_load_static_plan
#define load_frontend_http loki__topo_load_frontend_http
#define load_frontend loki__topo_load_frontend
#define load_runtime loki__topo_load_runtime

/* topology_parse.c: errors (all collected, at most MAX_ERRORS, file:line:col), pass 1 (text to
 * a node tree; NULL with errors reported) and the schema helpers (each reports what is wrong) */
void errorf(struct ctx *c, const struct node *at, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void node_free(struct node *n);
struct node *parse_tree(struct ctx *c, const char *text, size_t len);
bool want(struct ctx *c, const struct node *n, enum ntype type, const char *key);
bool get_double(struct ctx *c, const struct node *n, const char *key, double *out);
bool get_int(struct ctx *c, const struct node *n, const char *key, long long *out);
bool get_bool(struct ctx *c, const struct node *n, const char *key, bool *out);
bool get_str(struct ctx *c, const struct node *n, const char *key, char *out, size_t len);
bool get_name(struct ctx *c, const struct node *n, const char *key, char *out);
bool in_range(struct ctx *c, const struct node *n, const char *key, double v, double lo, double hi,
              bool lo_open);
const struct node *map_get(const struct node *m, const char *key);
void check_keys(struct ctx *c, const struct node *m, const char *where, const char *const *allowed);
const struct node *require(struct ctx *c, const struct node *m, const char *key, const char *where);

/* topology_sections.c: the sections besides pipelines */
void load_gpus(struct ctx *c, const struct node *m);
void load_planner(struct ctx *c, const struct node *m);
void load_static_plan(struct ctx *c, const struct node *seq);
void load_frontend_http(struct ctx *c, const struct node *m);
void load_frontend(struct ctx *c, const struct node *m);
void load_runtime(struct ctx *c, const struct node *m);

#endif
