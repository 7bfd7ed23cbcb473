/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reading lokid's Prometheus metrics in the end-to-end tests (test_lokid.c, test_scaling.c):
 * fetch the text over the client library, pick one sample by its series.
 */
#ifndef LOKI_TEST_PROM_H
#define LOKI_TEST_PROM_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "loki/client.h"

/* Value of the first sample line starting with @series (name plus labels), or NAN. */
static inline double prom_value(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (!strncmp(p, series, n) && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return NAN;
}

/* Sum of the samples of every series whose line starts with @prefix (a name and "{"). */
static inline double prom_sum(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    double sum = 0;
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        const char *sp = strchr(p, ' ');
        if (!strncmp(p, prefix, n) && sp)
            sum += strtod(sp + 1, NULL);
    }
    return sum;
}

/* The metrics text lokid on @sock serves (the caller frees it); fails the test otherwise. */
static inline char *metrics_text(const char *sock)
{
    struct loki_client *c;
    assert_int_equal(loki_client_connect(sock, NULL, &c), 0);
    char *text = NULL, err[128];
    assert_int_equal(
        loki_client_report(c, LOKI_MSG_METRICS, "prometheus", 5000, NULL, &text, err, sizeof(err)),
        0);
    loki_client_close(c);
    assert_non_null(text);
    return text;
}

#endif
