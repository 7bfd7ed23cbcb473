/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz entry point for the topology loader (runtime/config/topology.c): the
 * input is a topology file as loki_config_parse() reads it from a buffer. A
 * refused file must come back as LOKI_ETOPOLOGY with a message that names the
 * file; an accepted one must satisfy what planner/loki/model.h promises its
 * readers (counts in range, indexes valid, names terminated and non-empty,
 * batch sizes ascending, share 1 first, positive finite latencies, a DAG with
 * one root), since the planner, the router and lokid index arrays with them
 * unchecked. The model's own helpers then walk it, as the planner would.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loki/error.h"
#include "loki/topology.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_topology: check failed: %s (line %d)\n", #c, __LINE__);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_name(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    CHECK(n > 0 && n < cap);
}

static void check_variant(const struct loki_task *t, const struct loki_variant *v)
{
    check_name(v->name, sizeof(v->name));
    CHECK(v->accuracy >= 0 && v->accuracy <= 100);
    CHECK(v->n_batches >= 1 && v->n_batches <= LOKI_MAX_BATCHES);
    for (int b = 0; b < v->n_batches; b++)
        CHECK(v->batches[b] >= 1 && (b == 0 || v->batches[b] > v->batches[b - 1]));
    CHECK(v->n_shares >= 1 && v->n_shares <= LOKI_MAX_SHARES && v->shares[0] == 1.0);
    for (int s = 0; s < v->n_shares; s++) {
        CHECK(v->shares[s] > 0 && v->shares[s] <= 1);
        CHECK(s == 0 || v->shares[s] < v->shares[s - 1]);
        for (int b = 0; b < v->n_batches; b++)
            CHECK(isfinite(v->latency_ms[s][b]) && v->latency_ms[s][b] > 0);
        double l = loki_variant_latency(v, v->batches[v->n_batches - 1], v->shares[s]);
        CHECK(isfinite(l) && l > 0);
        CHECK(loki_variant_throughput(v, 1, v->shares[s]) > 0);
    }
    for (int k = 0; k < t->n_children; k++)
        CHECK(isfinite(v->fanout[k].mean) && v->fanout[k].mean >= 0);
    CHECK(v->backend != LOKI_BACKEND_PLUGIN ||
          (v->backend_path[0] && strnlen(v->backend_path, LOKI_PATH_MAX) < LOKI_PATH_MAX));
}

static void check_pipeline(const struct loki_pipeline *p)
{
    static int chains[256][LOKI_MAX_TASKS];
    static int len[256];
    int indeg[LOKI_MAX_TASKS] = {0};

    check_name(p->name, sizeof(p->name));
    CHECK(isfinite(p->slo_ms) && p->slo_ms > 0);
    CHECK(p->n_tasks >= 1 && p->n_tasks <= LOKI_MAX_TASKS);
    CHECK(p->root >= 0 && p->root < p->n_tasks);
    for (int ti = 0; ti < p->n_tasks; ti++) {
        const struct loki_task *t = &p->tasks[ti];
        check_name(t->name, sizeof(t->name));
        CHECK(loki_pipeline_task_index(p, t->name) == ti); /* names are unique */
        CHECK(t->n_variants >= 1 && t->n_variants <= LOKI_MAX_VARIANTS);
        CHECK(t->n_children >= 0 && t->n_children <= LOKI_MAX_CHILDREN);
        for (int k = 0; k < t->n_children; k++) {
            CHECK(t->children[k] >= 0 && t->children[k] < p->n_tasks);
            CHECK(t->children[k] != ti);
            indeg[t->children[k]]++;
        }
        for (int vi = 0; vi < t->n_variants; vi++) {
            check_variant(t, &t->variants[vi]);
            CHECK(loki_task_variant_index(t, t->variants[vi].name) == vi);
        }
        double best = loki_task_min_latency(t);
        CHECK(isfinite(best) && best > 0);
        int bv = loki_task_best_variant(t);
        CHECK(bv >= 0 && bv < t->n_variants);
        CHECK(isfinite(loki_task_min_below(p, ti)) && loki_task_min_below(p, ti) >= 0);
    }
    for (int ti = 0; ti < p->n_tasks; ti++)
        CHECK((indeg[ti] == 0) == (ti == p->root));
    /* every chain starts at the root, follows edges and ends at a leaf */
    int n = loki_pipeline_chains(p, chains, len, 256);
    CHECK(n >= 1 && n <= 256);
    for (int i = 0; i < n; i++) {
        CHECK(len[i] >= 1 && len[i] <= p->n_tasks && chains[i][0] == p->root);
        for (int k = 1; k < len[i]; k++)
            CHECK(loki_task_child_slot(&p->tasks[chains[i][k - 1]], chains[i][k]) >= 0);
        CHECK(p->tasks[chains[i][len[i] - 1]].n_children == 0);
    }
    CHECK(p->n_path_acc >= 0 && p->n_path_acc <= LOKI_MAX_PATH_ACC);
    for (int r = 0; r < p->n_path_acc; r++) {
        CHECK(p->path_acc[r].accuracy >= 0 && p->path_acc[r].accuracy <= 100);
        for (int ti = 0; ti < LOKI_MAX_TASKS; ti++) {
            int vi = p->path_acc[r].variant[ti];
            CHECK(vi == -1 || (ti < p->n_tasks && vi >= 0 && vi < p->tasks[ti].n_variants));
        }
    }
}

static void check_topology(const struct loki_topology *t)
{
    CHECK(t->gpus.count >= 1);
    CHECK(t->gpus.share_granularity > 0 && t->gpus.share_granularity <= 1);
    CHECK(t->n_pipelines >= 1 && t->n_pipelines <= LOKI_MAX_PIPELINES);
    for (int i = 0; i < t->n_pipelines; i++) {
        check_pipeline(&t->pipelines[i]);
        CHECK(loki_topology_pipeline_index(t, t->pipelines[i].name) == i);
    }
    const struct loki_planner_cfg *pc = &t->planner;
    CHECK(pc->n_static >= 0 && pc->n_static <= LOKI_MAX_STATIC);
    CHECK(pc->policy != LOKI_POLICY_STATIC || pc->n_static > 0);
    for (int i = 0; i < pc->n_static; i++) {
        const struct loki_static_entry *e = &pc->static_plan[i];
        CHECK(e->pipeline >= 0 && e->pipeline < t->n_pipelines);
        const struct loki_pipeline *p = &t->pipelines[e->pipeline];
        CHECK(e->task >= 0 && e->task < p->n_tasks);
        CHECK(e->variant >= 0 && e->variant < p->tasks[e->task].n_variants);
        CHECK(e->instances >= 0 && e->batch >= 1 && e->share > 0 && e->share <= 1);
        CHECK(loki_variant_latency(&p->tasks[e->task].variants[e->variant], e->batch, e->share) >
              0);
    }
}

static void check_config(const struct loki_config *c)
{
    const struct loki_frontend_cfg *f = &c->frontend;
    size_t n = strnlen(f->socket_path, sizeof(f->socket_path));
    CHECK(n > 0 && n < sizeof(f->socket_path));
    CHECK(f->mode <= 0777);
    CHECK(f->n_uids >= 0 && f->n_uids <= LOKI_MAX_UIDS);
    CHECK(f->max_payload >= 1 && f->max_inflight >= 1);
    CHECK(f->max_conns <= LOKI_FRONTEND_MAX_CONNS);
    CHECK(!f->max_conns || f->max_conns_per_uid <= f->max_conns);
    CHECK(isfinite(f->idle_timeout_s) && isfinite(c->runtime.spin_us) && c->runtime.spin_us >= 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char err[4096];
    struct loki_topology *t = (struct loki_topology *)1; /* must be left alone on failure */
    struct loki_config cfg;
    int rc = loki_config_parse((const char *)data, size, "fuzz.yaml", &t, &cfg, err, sizeof(err));
    if (rc) {
        CHECK(rc == LOKI_ETOPOLOGY);
        CHECK(t == (struct loki_topology *)1);
        /* one error per line, and every line names the file (or counts the rest) */
        for (const char *line = err; line;
             line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
            CHECK(!strncmp(line, "fuzz.yaml:", 10) || !strncmp(line, "... and ", 8));
        return 0;
    }
    CHECK(t != NULL && !strcmp(t->source, "fuzz.yaml"));
    check_topology(t);
    check_config(&cfg);
    free(t);
    return 0;
}
