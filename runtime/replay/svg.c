/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Hand-written SVG line charts, no dependencies: stacked panels sharing an
 * x axis, one colour per series, one legend. Long series are thinned to at
 * most ~2 points per pixel column (min and max kept) so a day-long replay
 * stays a small file that a browser opens instantly.
 */
#include "loki/replay.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define W 1000.0
#define PH 170.0 /* panel height */
#define ML 70.0  /* margins */
#define MR 20.0
#define MT 50.0
#define GAP 40.0

static const char *const colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                      "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};

static void esc(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '&')
            fputs("&amp;", f);
        else
            fputc(*s, f);
    }
}

static double nice_step(double range)
{
    double raw = range / 5, mag = pow(10, floor(log10(raw)));
    double n = raw / mag;
    return (n < 1.5 ? 1 : n < 3 ? 2 : n < 7 ? 5 : 10) * mag;
}

int loki_svg_panels(FILE *f, const char *title, const char *xlabel,
                    const struct loki_svg_panel *panels, int n_panels)
{
    double xmin = INFINITY, xmax = -INFINITY;
    int n_series = 0;
    for (int p = 0; p < n_panels; p++) {
        if (panels[p].n_series > n_series)
            n_series = panels[p].n_series;
        for (int s = 0; s < panels[p].n_series; s++)
            for (int i = 0; i < panels[p].series[s].n; i++) {
                double x = panels[p].series[s].x[i];
                xmin = x < xmin ? x : xmin;
                xmax = x > xmax ? x : xmax;
            }
    }
    if (!(xmax > xmin)) {
        xmin = 0;
        xmax = 1;
    }
    double H = MT + n_panels * (PH + GAP) + 20;
    double pw = W - ML - MR;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"11\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
            "<text x=\"%.0f\" y=\"20\" font-size=\"15\" font-weight=\"bold\">",
            W, H, W, H, ML);
    esc(f, title);
    fputs("</text>\n", f);
    /* legend from the first panel with the most series */
    const struct loki_svg_panel *lp = panels;
    for (int p = 0; p < n_panels; p++)
        if (panels[p].n_series == n_series)
            lp = &panels[p];
    for (int s = 0; s < lp->n_series; s++) {
        double lx = ML + 10 + s * 150;
        fprintf(f,
                "<line x1=\"%.0f\" y1=\"36\" x2=\"%.0f\" y2=\"36\" stroke=\"%s\" "
                "stroke-width=\"3\"/><text x=\"%.0f\" y=\"40\">",
                lx, lx + 25, colours[s % 8], lx + 30);
        esc(f, lp->series[s].name);
        fputs("</text>\n", f);
    }
    for (int p = 0; p < n_panels; p++) {
        const struct loki_svg_panel *pn = &panels[p];
        double top = MT + p * (PH + GAP) + 10;
        double ymin = pn->ymin, ymax = pn->ymax;
        if (!(ymax > ymin)) {
            ymin = INFINITY;
            ymax = -INFINITY;
            for (int s = 0; s < pn->n_series; s++)
                for (int i = 0; i < pn->series[s].n; i++) {
                    double y = pn->series[s].y[i];
                    ymin = y < ymin ? y : ymin;
                    ymax = y > ymax ? y : ymax;
                }
            if (!(ymax >= ymin)) {
                ymin = 0;
                ymax = 1;
            }
            if (ymin > 0 && ymin < 0.5 * ymax)
                ymin = 0;
            if (ymax - ymin < 1e-9)
                ymax = ymin + 1;
            double st = nice_step(ymax - ymin);
            ymin = floor(ymin / st) * st;
            ymax = ceil(ymax / st) * st;
        }
        fprintf(f,
                "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
                "stroke=\"#999\"/>\n",
                ML, top, pw, PH);
        double st = nice_step(ymax - ymin);
        for (double y = ymin; y <= ymax + st * 1e-6; y += st) {
            double py = top + PH - (y - ymin) / (ymax - ymin) * PH;
            fprintf(f,
                    "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#eee\"/>"
                    "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                    ML, py, ML + pw, py, ML - 5, py + 4, fabs(y) < st * 1e-6 ? 0 : y);
        }
        fprintf(f, "<text transform=\"translate(14,%.0f) rotate(-90)\" text-anchor=\"middle\">",
                top + PH / 2);
        esc(f, pn->title);
        fputs("</text>\n", f);
        double xs = nice_step(xmax - xmin);
        for (double x = ceil(xmin / xs) * xs; x <= xmax + xs * 1e-6; x += xs) {
            double px = ML + (x - xmin) / (xmax - xmin) * pw;
            fprintf(f,
                    "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#999\"/>"
                    "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%g</text>\n",
                    px, top + PH, px, top + PH + 4, px, top + PH + 15, x);
        }
        for (int s = 0; s < pn->n_series; s++) {
            const struct loki_svg_series *se = &pn->series[s];
            if (se->n < 1)
                continue;
            fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.3\" points=\"",
                    colours[s % 8]);
            /* Thin to min/max per half pixel column. */
            int cols = (int)(pw * 2);
            int i = 0;
            while (i < se->n) {
                int col = (int)((se->x[i] - xmin) / (xmax - xmin) * cols);
                double lo = se->y[i], hi = se->y[i], x0 = se->x[i];
                int j = i + 1;
                while (j < se->n && (int)((se->x[j] - xmin) / (xmax - xmin) * cols) == col) {
                    lo = se->y[j] < lo ? se->y[j] : lo;
                    hi = se->y[j] > hi ? se->y[j] : hi;
                    j++;
                }
                double px = ML + (x0 - xmin) / (xmax - xmin) * pw;
                double c0 = lo < ymin ? ymin : lo > ymax ? ymax : lo;
                double c1 = hi < ymin ? ymin : hi > ymax ? ymax : hi;
                fprintf(f, "%.1f,%.1f ", px, top + PH - (c0 - ymin) / (ymax - ymin) * PH);
                if (j - i > 1)
                    fprintf(f, "%.1f,%.1f ", px, top + PH - (c1 - ymin) / (ymax - ymin) * PH);
                i = j;
            }
            fputs("\"/>\n", f);
        }
    }
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">", ML + pw / 2, H - 5);
    esc(f, xlabel);
    fputs("</text>\n</svg>\n", f);
    return ferror(f) ? -EIO : 0;
}

static double *smooth(const double *y, int n, int w)
{
    double *o = malloc(sizeof(double) * (size_t)(n ? n : 1));
    if (!o)
        return NULL;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        sum += y[i];
        if (i >= w)
            sum -= y[i - w];
        o[i] = sum / (i + 1 < w ? i + 1 : w);
    }
    return o;
}

int loki_replay_plot_svg(FILE *f, const char *title, const struct loki_replay_result *const *res,
                         const char *const *labels, int n, double smooth_s)
{
    enum { NP = 4 };
    int rc = -ENOMEM;
    struct loki_svg_series *ser = calloc((size_t)(NP * n), sizeof(*ser));
    double **bufs = calloc((size_t)(NP * n + n), sizeof(double *));
    if (!ser || !bufs)
        goto out;
    int w = smooth_s > 1 ? (int)smooth_s : 1;
    for (int k = 0; k < n; k++) {
        const struct loki_replay_result *r = res[k];
        int m = r->n_seconds;
        double *x = malloc(sizeof(double) * (size_t)(m ? m : 1));
        double *raw[NP];
        for (int p = 0; p < NP; p++)
            raw[p] = malloc(sizeof(double) * (size_t)(m ? m : 1));
        bufs[NP * n + k] = x;
        if (!x || !raw[0] || !raw[1] || !raw[2] || !raw[3]) {
            for (int p = 0; p < NP; p++)
                free(raw[p]);
            goto out;
        }
        for (int i = 0; i < m; i++) {
            const struct loki_replay_second *s = &r->sec[i];
            x[i] = s->t;
            raw[0][i] = s->demand;
            raw[1][i] = s->accuracy;
            raw[2][i] = s->gpus;
            raw[3][i] = s->viol_ratio * 100;
        }
        for (int p = 0; p < NP; p++) {
            bufs[p * n + k] = smooth(raw[p], m, w);
            free(raw[p]);
            if (!bufs[p * n + k])
                goto out;
            ser[p * n + k] = (struct loki_svg_series){
                .name = labels && labels[k] ? labels[k] : r->policy,
                .x = x,
                .y = bufs[p * n + k],
                .n = m,
            };
        }
    }
    struct loki_svg_panel panels[NP] = {
        {"demand (root qps)", &ser[0], n, 0, 0},
        {"accuracy of served (%)", &ser[n], n, 0, 0},
        {"GPUs in use", &ser[2 * n], n, 0, 0},
        {"SLO violations (%)", &ser[3 * n], n, 0, 0},
    };
    rc = loki_svg_panels(f, title, "replay time (s)", panels, NP);
out:
    if (bufs)
        for (int i = 0; i < NP * n + n; i++)
            free(bufs[i]);
    free(bufs);
    free(ser);
    return rc;
}
