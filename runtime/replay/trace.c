/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Request traces for the replay harness: `second,requests` or
 * `minute,requests` CSVs (see /work/shared/data/README.md, section Traces),
 * turned into a rate per step, plus the min-max rescaling the Loki artifact
 * applied to its Azure trace (linear map of [min, max] onto [lo, hi]).
 */
#include "loki/replay.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loki/error.h"

int loki_trace_load(const char *path, struct loki_trace *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    FILE *f = fopen(path, "r");
    if (!f) {
        int e = errno;
        if (err)
            snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    char line[256];
    int rc = LOKI_EPARSE;
    if (!fgets(line, sizeof(line), f)) {
        if (err)
            snprintf(err, errlen, "%s: empty file", path);
        goto close;
    }
    if (!strncmp(line, "second,", 7)) {
        out->step_s = 1;
    } else if (!strncmp(line, "minute,", 7)) {
        out->step_s = 60;
    } else {
        if (err)
            snprintf(err, errlen, "%s:1: header must be second,requests or minute,requests", path);
        goto close;
    }
    int cap = 0, lineno = 1;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        if (line[0] == '\n' || line[0] == '#')
            continue;
        char *end;
        long idx = strtol(line, &end, 10);
        if (*end != ',' || idx != out->n) {
            if (err)
                snprintf(err, errlen, "%s:%d: expected index %d", path, lineno, out->n);
            goto free_rates;
        }
        double req = strtod(end + 1, &end);
        if (req < 0 || (*end != '\n' && *end != '\r' && *end != 0)) {
            if (err)
                snprintf(err, errlen, "%s:%d: bad request count", path, lineno);
            goto free_rates;
        }
        if (out->n == cap) {
            cap = cap ? cap * 2 : 1024;
            double *nr = realloc(out->rate, sizeof(double) * (size_t)cap);
            if (!nr) {
                rc = -ENOMEM;
                goto free_rates;
            }
            out->rate = nr;
        }
        out->rate[out->n++] = req / out->step_s;
    }
    if (out->n == 0) {
        if (err)
            snprintf(err, errlen, "%s: no rows", path);
        goto free_rates;
    }
    fclose(f);
    return 0;
free_rates:
    loki_trace_free(out);
close:
    fclose(f);
    return rc;
}

int loki_trace_constant(struct loki_trace *out, double qps, int n)
{
    memset(out, 0, sizeof(*out));
    if (n < 1 || qps < 0)
        return -EINVAL;
    out->rate = malloc(sizeof(double) * (size_t)n);
    if (!out->rate)
        return -ENOMEM;
    for (int i = 0; i < n; i++)
        out->rate[i] = qps;
    out->n = n;
    out->step_s = 1;
    return 0;
}

int loki_trace_rescale(struct loki_trace *t, double lo, double hi)
{
    if (t->n < 1 || lo < 0 || hi < lo)
        return -EINVAL;
    double mn = t->rate[0], mx = t->rate[0];
    for (int i = 1; i < t->n; i++) {
        if (t->rate[i] < mn)
            mn = t->rate[i];
        if (t->rate[i] > mx)
            mx = t->rate[i];
    }
    for (int i = 0; i < t->n; i++)
        t->rate[i] = mx > mn ? lo + (t->rate[i] - mn) / (mx - mn) * (hi - lo) : lo;
    return 0;
}

void loki_trace_scale(struct loki_trace *t, double x)
{
    for (int i = 0; i < t->n; i++)
        t->rate[i] *= x;
}

void loki_trace_free(struct loki_trace *t)
{
    free(t->rate);
    t->rate = NULL;
    t->n = 0;
}

int loki_trace_write(FILE *f, const struct loki_trace *t)
{
    bool minute = fabs(t->step_s - 60) < 1e-9;
    fprintf(f, "%s,requests\n", minute ? "minute" : "second");
    double step = minute ? 60 : 1; /* a `second` row holds one second's requests */
    for (int i = 0; i < t->n; i++)
        fprintf(f, "%d,%.17g\n", i, t->rate[i] * step);
    return ferror(f) ? -EIO : 0;
}
