/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `loki replay`: replay a demand trace (or a constant demand) through the
 * router and planner on a virtual clock, one or more policies in a row, and
 * print a summary (text or JSON); optionally the per-second CSV and an SVG
 * plot with one line per policy. Exit 0 on success, 1 on errors, 2 on usage.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "loki/error.h"
#include "loki/replay.h"
#include "loki/topology.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loki replay --topology F (--trace CSV | --demand QPS) [options]\n"
            "  --policy P[,P...]    loki|inferline|proteus|static (default: the topology's)\n"
            "  --seed N             PRNG seed (default 1)\n"
            "  --rate-min A --rate-max B   min-max rescale the trace to [A, B] qps\n"
            "  --rate-scale X       multiply the trace's rates by X\n"
            "  --time-scale N       replay seconds per trace row (default 1: one trace\n"
            "                       minute per replay second for minute traces)\n"
            "  --duration S         stop after S replay seconds\n"
            "  --demand QPS         constant demand instead of a trace (needs --duration)\n"
            "  --no-early-drop, --no-reroute   ablations\n"
            "  --interval-ms MS     re-plan period in replay time (default: topology)\n"
            "  --cold               first plan's instances also pay start-up time\n"
            "  --like-load          arrivals exactly as `loki load --seed N` sends them\n"
            "                       (same trace, --rate-scale, time scale and seed)\n"
            "  --load-time-scale Y  time scale in `loki load` units: Y trace seconds per\n"
            "                       replay second (= --time-scale 60/Y for minute traces)\n"
            "  --payload-bytes B    with --like-load: `loki load --payload-bytes` (default 64)\n"
            "  --write-trace OUT    write the (rescaled) trace as a CSV `loki load` reads\n"
            "  --like-lokid         lokid's control loop: a plan lands after its solve's\n"
            "                       wall time, no re-plan during a solve or plan change,\n"
            "                       an unchanged plan is not re-applied\n"
            "  --spawn-ms MS        with --like-lokid: each instance started pauses the\n"
            "                       router MS (lokid spawns workers on its loop)\n"
            "  --initial-demand QPS first plan for this demand (lokid --initial-demand;\n"
            "                       default: the trace's first rate)\n"
            "  --startup-ms MS      every instance starts in MS (default: each variant's\n"
            "                       startup_ms; lokid's sim workers take tens of ms)\n"
            "  --sim-seed N         seed of the fan-out draws (default: --seed); the\n"
            "                       arrivals stay those of --seed\n"
            "  --json               summary as JSON (one object per policy, in an array)\n"
            "  --csv OUT            per-second CSV (policy name inserted before .csv if several)\n"
            "  --plot OUT.svg       SVG: demand, accuracy, GPUs, violations per policy\n"
            "  -h, --help           this help\n");
}

static int parse_policies(const char *s, enum loki_policy *out, int max)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", s);
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (n == max || loki_policy_parse(tok, &out[n]) < 0)
            return -EINVAL;
        n++;
    }
    return n;
}

static void csv_name(char *dst, size_t len, const char *base, const char *policy, bool several)
{
    if (!several) {
        snprintf(dst, len, "%s", base);
        return;
    }
    const char *dot = strrchr(base, '.');
    if (dot && !strcmp(dot, ".csv"))
        snprintf(dst, len, "%.*s.%s.csv", (int)(dot - base), base, policy);
    else
        snprintf(dst, len, "%s.%s", base, policy);
}

static void print_text(const struct loki_topology *topo, const struct loki_replay_result *r)
{
    printf("policy %s (seed %llu): %.0f replay s in %.2f wall s (%.0f queries/s, %.0f "
           "sub-queries/s simulated)\n",
           r->policy, (unsigned long long)r->seed, r->replay_s, r->wall_s, r->sim_qps,
           r->sim_subqps);
    printf("  queries %llu: ok %llu, dropped %llu, late %llu, overloaded %llu, error %llu\n",
           (unsigned long long)r->arrived, (unsigned long long)r->ok,
           (unsigned long long)r->dropped, (unsigned long long)r->late,
           (unsigned long long)r->overloaded, (unsigned long long)r->error);
    printf("  SLO violations: %.3f %% of queries, %.3f %% of sub-queries; rerouted %llu, "
           "on fallbacks %llu\n",
           100 * r->viol_ratio, 100 * r->viol_ratio_sub, (unsigned long long)r->rerouted,
           (unsigned long long)r->fallback);
    printf("  dropped sub-queries per stage:");
    for (int t = 0; t < topo->pipelines[0].n_tasks; t++)
        printf(" %s %llu", topo->pipelines[0].tasks[t].name,
               (unsigned long long)r->dropped_stage[t]);
    printf("; mean batch %.2f\n", r->batches ? (double)r->batched / (double)r->batches : 0);
    printf("  accuracy of served: %.2f per query, %.2f per sub-query; latency mean %.1f ms, "
           "p50 %.1f ms, p99 %.1f ms\n",
           r->accuracy, r->accuracy_sub, r->latency_ms_mean, r->latency_ms_p50, r->latency_ms_p99);
    printf("  GPUs: mean %.2f (time average %.2f), max %.2f, off-peak %.2f, peak %.2f; %.0f "
           "GPU-seconds\n",
           r->gpus_mean, r->gpus_time_mean, r->gpus_max, r->gpus_offpeak, r->gpus_peak,
           r->gpu_seconds);
    printf("  planner: %d solves (mean %.2f ms, max %.2f ms), %d plan changes\n", r->replans,
           r->solve_ms_mean, r->solve_ms_max, r->plan_changes);
}

int loki_cli_replay(int argc, char **argv)
{
    enum {
        O_RMIN = 256,
        O_RMAX,
        O_RSCALE,
        O_TSCALE,
        O_DUR,
        O_DEMAND,
        O_NOED,
        O_NORR,
        O_INT,
        O_COLD,
        O_LIKE,
        O_LTS,
        O_PAY,
        O_WTR,
        O_LIKED,
        O_INITD,
        O_START,
        O_SSEED,
        O_SPAWN
    };
    static const struct option opts[] = {
        {"topology", required_argument, 0, 't'},
        {"trace", required_argument, 0, 'r'},
        {"policy", required_argument, 0, 'p'},
        {"seed", required_argument, 0, 's'},
        {"json", no_argument, 0, 'j'},
        {"csv", required_argument, 0, 'c'},
        {"plot", required_argument, 0, 'g'},
        {"rate-min", required_argument, 0, O_RMIN},
        {"rate-max", required_argument, 0, O_RMAX},
        {"rate-scale", required_argument, 0, O_RSCALE},
        {"time-scale", required_argument, 0, O_TSCALE},
        {"duration", required_argument, 0, O_DUR},
        {"demand", required_argument, 0, O_DEMAND},
        {"no-early-drop", no_argument, 0, O_NOED},
        {"no-reroute", no_argument, 0, O_NORR},
        {"interval-ms", required_argument, 0, O_INT},
        {"cold", no_argument, 0, O_COLD},
        {"like-load", no_argument, 0, O_LIKE},
        {"load-time-scale", required_argument, 0, O_LTS},
        {"payload-bytes", required_argument, 0, O_PAY},
        {"write-trace", required_argument, 0, O_WTR},
        {"like-lokid", no_argument, 0, O_LIKED},
        {"initial-demand", required_argument, 0, O_INITD},
        {"startup-ms", required_argument, 0, O_START},
        {"sim-seed", required_argument, 0, O_SSEED},
        {"spawn-ms", required_argument, 0, O_SPAWN},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *topo_path = NULL, *trace_path = NULL, *policy = NULL, *csv = NULL, *plot = NULL;
    double rmin = -1, rmax = -1, rscale = 0, tscale = 1, dur = 0, demand = -1, interval = 0;
    unsigned long long seed = 1;
    bool json = false, noed = false, norr = false, cold = false, like = false;
    double lts = 0;
    long payload = 64;
    const char *wtrace = NULL;
    bool like_lokid = false;
    double initial_demand = 0, startup_ms = -1;
    unsigned long long sim_seed = 0;
    double spawn_ms = 0;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            topo_path = optarg;
            break;
        case 'r':
            trace_path = optarg;
            break;
        case 'p':
            policy = optarg;
            break;
        case 's':
            seed = strtoull(optarg, NULL, 0);
            break;
        case 'j':
            json = true;
            break;
        case 'c':
            csv = optarg;
            break;
        case 'g':
            plot = optarg;
            break;
        case O_RMIN:
            rmin = atof(optarg);
            break;
        case O_RMAX:
            rmax = atof(optarg);
            break;
        case O_RSCALE:
            rscale = atof(optarg);
            break;
        case O_TSCALE:
            tscale = atof(optarg);
            break;
        case O_DUR:
            dur = atof(optarg);
            break;
        case O_DEMAND:
            demand = atof(optarg);
            break;
        case O_NOED:
            noed = true;
            break;
        case O_NORR:
            norr = true;
            break;
        case O_INT:
            interval = atof(optarg);
            break;
        case O_COLD:
            cold = true;
            break;
        case O_LIKE:
            like = true;
            break;
        case O_LTS:
            lts = atof(optarg);
            if (!(lts > 0))
                return loki__cli_usage_error("replay", "--load-time-scale wants a value > 0");
            break;
        case O_PAY:
            payload = atol(optarg);
            break;
        case O_WTR:
            wtrace = optarg;
            break;
        case O_LIKED:
            like_lokid = true;
            break;
        case O_INITD:
            initial_demand = atof(optarg);
            if (!(initial_demand > 0))
                return loki__cli_usage_error("replay", "--initial-demand wants a value > 0");
            break;
        case O_SPAWN:
            spawn_ms = atof(optarg);
            if (!(spawn_ms >= 0))
                return loki__cli_usage_error("replay", "--spawn-ms wants a value >= 0");
            break;
        case O_SSEED:
            sim_seed = strtoull(optarg, NULL, 0);
            break;
        case O_START:
            startup_ms = atof(optarg);
            if (!(startup_ms >= 0))
                return loki__cli_usage_error("replay", "--startup-ms wants a value >= 0");
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            return loki__cli_bad_option("replay", c, argv);
        }
    }
    if (optind != argc)
        return loki__cli_usage_error("replay", "unexpected argument '%s'", argv[optind]);
    if (!topo_path)
        return loki__cli_usage_error("replay", "--topology F is required");
    if (!trace_path == (demand < 0))
        return loki__cli_usage_error("replay", "give one of --trace CSV and --demand QPS");
    if (demand >= 0 && dur <= 0)
        return loki__cli_usage_error("replay", "--demand needs --duration S");
    if ((rmin < 0) != (rmax < 0))
        return loki__cli_usage_error("replay", "--rate-min and --rate-max go together");
    if (!(tscale > 0))
        return loki__cli_usage_error("replay", "--time-scale wants a value > 0");
    if (payload < 0)
        return loki__cli_usage_error("replay", "--payload-bytes wants a value >= 0");
    char err[2048];
    struct loki_topology *topo = NULL;
    int rc = loki_topology_load(topo_path, &topo, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "loki replay: %s\n", err);
        return 1;
    }
    enum loki_policy pols[8];
    int np = 1;
    pols[0] = topo->planner.policy;
    if (policy && (np = parse_policies(policy, pols, 8)) < 1) {
        fprintf(stderr, "loki replay: bad --policy '%s'\n", policy);
        free(topo);
        return 2;
    }
    struct loki_trace tr;
    int status = 0;
    if (trace_path) {
        rc = loki_trace_load(trace_path, &tr, err, sizeof(err));
        if (rc) {
            fprintf(stderr, "loki replay: %s\n", err);
            free(topo);
            return 1;
        }
        if (rmin >= 0 && loki_trace_rescale(&tr, rmin, rmax)) {
            fprintf(stderr, "loki replay: bad --rate-min/--rate-max\n");
            loki_trace_free(&tr);
            free(topo);
            return 2;
        }
    } else {
        rc = loki_trace_constant(&tr, demand, (int)(dur / tscale) + 1);
        if (rc) {
            free(topo);
            return 1;
        }
    }
    if (rscale > 0)
        loki_trace_scale(&tr, rscale);
    if (lts > 0) /* loki load: a row lasts (row length / Y) seconds */
        tscale = tr.step_s / lts;
    if (wtrace) {
        FILE *f = fopen(wtrace, "w");
        if (!f || loki_trace_write(f, &tr)) {
            fprintf(stderr, "loki replay: cannot write %s\n", wtrace);
            status = 1;
        }
        if (f)
            fclose(f);
    }

    struct loki_replay_result res[8];
    int ok = 0;
    json_t *all = json ? json_array() : NULL;
    bool oom = false;
    for (int i = 0; i < np; i++) {
        struct loki_replay_config cfg = {
            .policy = pols[i],
            .seed = seed,
            .step_replay_s = tscale,
            .duration_s = dur,
            .early_drop = noed ? 0 : -1,
            .reroute = norr ? 0 : -1,
            .interval_ms = interval,
            .prewarm = !cold,
            .arrivals = like ? LOKI_ARRIVALS_LOAD : LOKI_ARRIVALS_REPLAY,
            .load_payload_bytes = payload,
            .lokid_loop = like_lokid,
            .initial_demand = initial_demand,
            .override_startup = startup_ms >= 0,
            .startup_ms = startup_ms,
            .sim_seed = sim_seed,
            .spawn_ms = spawn_ms,
        };
        rc = loki_replay_run(topo, &tr, &cfg, &res[ok]);
        if (rc) {
            fprintf(stderr, "loki replay: %s: %s\n", loki_policy_name(pols[i]), loki_strerror(rc));
            status = 1;
            continue;
        }
        if (json) {
            loki_json_push(all, loki_replay_json(&res[ok]), &oom);
        } else {
            print_text(topo, &res[ok]);
        }
        if (csv) {
            char name[1024];
            csv_name(name, sizeof(name), csv, res[ok].policy, np > 1);
            FILE *f = fopen(name, "w");
            if (!f || loki_replay_write_csv(f, &res[ok])) {
                fprintf(stderr, "loki replay: cannot write %s\n", name);
                status = 1;
            }
            if (f)
                fclose(f);
        }
        ok++;
    }
    if (json) {
        if (oom)
            json_decref(all);
        if (oom || loki_json_print(stdout, all)) {
            fprintf(stderr, "loki replay: cannot print the summary\n");
            status = 1;
        }
    }
    if (plot && ok) {
        const struct loki_replay_result *rp[8];
        for (int i = 0; i < ok; i++)
            rp[i] = &res[i];
        char title[512];
        snprintf(title, sizeof(title), "%s: %s", topo->pipelines[0].name,
                 trace_path ? trace_path : "constant demand");
        FILE *f = fopen(plot, "w");
        if (!f || loki_replay_plot_svg(f, title, rp, NULL, ok, tr.n > 600 ? 10 : 1)) {
            fprintf(stderr, "loki replay: cannot write %s\n", plot);
            status = 1;
        }
        if (f)
            fclose(f);
    }
    for (int i = 0; i < ok; i++)
        loki_replay_result_free(&res[i]);
    loki_trace_free(&tr);
    free(topo);
    return status;
}
