#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Convert the Loki artifact's profiles into a Loki topology file (YAML).

Inputs (the layout of the Loki artifact's profile folders, see NOTICE):
  --app        simulator application JSON (task tree, variants, SLO)
  --runtimes   simulator_runtimes.csv (ms per batch; column 50th_pct is used)
  --variants   folder of model_variants/<task> files ("variant,accuracy" lines)
  --branching  branching.csv (mult_factor and per-child branch probabilities)
Output: a topology with one pipeline.

* Every profiled batch size is kept (--batches LIST keeps only those).
* Latencies keep the digits they need: never fewer than two decimals, more when
  two would be off by more than 0.5 % (0.001 ms stays 0.001, never 0.00).
* Accuracies are renormalised so the best kept variant of a task is 100;
  variants without runtime or accuracy rows are skipped and listed.
* Pseudo tasks: the artifact's "source" and "sink" (and any task none of whose
  variants has a runtime row) are not models. Sinks are dropped. A pseudo
  source's children are the pipeline's roots, no branching row needed: with one
  child that child is the root; with several, as the topology takes one root
  task for now, a pseudo root task (the source's name, 0.001 ms, no memory)
  copies every query to each of them with constant fan-out 1, and the importer
  says so. It costs an instance (one share of a GPU) in every policy until
  several roots are supported.
* Fan-out to a child = mult_factor x that child's branch probability (Poisson)
  where branching.csv has a row for the variant; a variant without one copies
  its output to every child: constant fan-out 1.
* --share-granularity G (or --shares 1,0.5,0.25, whose smallest value is taken)
  writes gpus.share_granularity. No per-share latency is invented: the loader
  derives shares below 1 as latency / share, marked share_scaled (not
  measured), until `loki profile --shares` measures them.
"""
import argparse
import csv
import json
import os
import sys

PSEUDO = {"source", "sink"}
# The largest profile a topology holds per variant (LOKI_MAX_BATCHES in planner/loki/model.h).
MAX_BATCHES = 64
# Assumed memory footprints (MiB): the artifact has none.
MEM_GUESS = {"yolov5n": 600, "yolov5s": 800, "yolov5m": 1200, "yolov5l": 1800, "yolov5x": 2600}
PSEUDO_MS = 0.001


def mem_for(name):
    if name in MEM_GUESS:
        return MEM_GUESS[name]
    if name.startswith("efficientnet-b") and name[-1].isdigit():
        return 500 + 150 * int(name[-1])
    return 500


def fmt(x, rel=5e-3, least=2):
    """x with at least @least decimals, more until it is within @rel of x; never 0 for x > 0."""
    for d in range(least, 16):
        s = "%.*f" % (d, x)
        if abs(float(s) - x) <= rel * abs(x):
            return s
    return repr(x)


def note(msg):
    print("import_loki: " + msg, file=sys.stderr)


def load_tasks(app, runtimes):
    """Task name -> {variants, children} from the app's tree (a DAG written as a tree)."""
    tasks = {}
    order = []

    def walk(node):
        name = node["task"]
        if name not in tasks:
            tasks[name] = {"variants": list(node.get("model_variants", [])), "children": []}
            order.append(name)
        for c in node.get("children", []):
            if c["task"] not in tasks[name]["children"]:
                tasks[name]["children"].append(c["task"])
            walk(c)

    walk(app["root"])

    def pseudo(name):
        vs = tasks[name]["variants"]
        return (name in PSEUDO or all(v in PSEUDO for v in vs) or
                not any(v in runtimes for v in vs))

    return tasks, order, pseudo


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="\n".join(__doc__.split("\n")[2:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--app", required=True)
    ap.add_argument("--runtimes", required=True)
    ap.add_argument("--variants", required=True)
    ap.add_argument("--branching", required=True)
    ap.add_argument("--accel", default="onnxruntime_gpu_ampere")
    ap.add_argument("--gpus", type=int, default=20)
    ap.add_argument("--gpu-memory-mb", type=float, default=11264)
    ap.add_argument("--share-granularity", type=float, default=None)
    ap.add_argument("--shares", default=None,
                    help="older form of --share-granularity: its smallest value")
    ap.add_argument("--batches", default="all",
                    help="'all' (default: every profiled batch size) or a list, e.g. 1,2,4,8")
    ap.add_argument("--slo-ms", type=float, default=None)
    ap.add_argument("--startup-ms", type=float, default=2000)
    ap.add_argument("--header", default="")
    ap.add_argument("--out", default="-")
    a = ap.parse_args()

    app = json.load(open(a.app))
    runtimes = {}
    with open(a.runtimes) as f:
        for row in csv.DictReader(f):
            if row["Accel"] != a.accel:
                continue
            runtimes.setdefault(row["Model"], {})[int(row["batchsize"])] = float(row["50th_pct"])
    branching = {}
    with open(a.branching) as f:
        for row in csv.DictReader(f):
            branching[row["model"]] = row
    gran = 1.0
    if a.shares:
        gran = min(float(x) for x in a.shares.split(","))
    if a.share_granularity is not None:
        gran = a.share_granularity
    want_batches = None
    if a.batches != "all":
        want_batches = sorted({int(x) for x in a.batches.split(",")})

    tasks, order, pseudo = load_tasks(app, runtimes)
    root = order[0]
    kept = [t for t in order if not pseudo(t)]
    for t in order:
        if pseudo(t) and t != root and any(not pseudo(c) for c in tasks[t]["children"]):
            sys.exit("import_loki: pseudo task '%s' sits between model tasks: not supported" % t)
    for t in kept:
        tasks[t]["children"] = [c for c in tasks[t]["children"] if not pseudo(c)]
    if pseudo(root):
        roots = [c for c in tasks[root]["children"] if not pseudo(c)]
    else:
        roots = [root]
    if not roots:
        sys.exit("import_loki: no task with runtime rows under the root")
    pseudo_root = None
    if len(roots) > 1:
        # One root task per pipeline for now: a copying pseudo root feeds the real ones.
        pseudo_root = root
        note("pipeline %s has %d root tasks (%s); a topology takes one root task for now, so a "
             "pseudo root task '%s' (%s ms, no memory) copies every query to each of them with "
             "constant fan-out 1. It costs one instance (a GPU share) in every policy, and "
             "counts as a stage in proteus's per-task budget; drop it once several roots are "
             "supported" % (app["appName"], len(roots), ", ".join(roots), pseudo_root,
                            PSEUDO_MS))

    skipped = []
    out = []
    w = out.append
    slo = a.slo_ms if a.slo_ms else app["latencySLOInMSec"]
    if a.header:
        for line in a.header.split("\\n"):
            w("# " + line if line else "#")
    w("# Generated by tools/import_loki.py from the Loki artifact's profiles (see NOTICE).")
    w("# Latency: 50th-percentile ms per batch (%s); accuracy renormalised per task;" % a.accel)
    w("# fan-out = mult_factor x branch probability; memory_mb and startup_ms are assumptions.")
    if gran < 1:
        w("# Shares below 1 are NOT MEASURED: the loader derives them as latency / share")
        w("# (share_scaled); measure them with loki profile --shares.")
    if pseudo_root:
        w("# '%s' is a pseudo root task (not a model): it copies each query to the roots" %
          pseudo_root)
        w("# %s (constant fan-out 1) because a topology takes one root task for now." %
          ", ".join(roots))
    w("gpus:")
    w("  count: %d" % a.gpus)
    w("  memory_mb: %g" % a.gpu_memory_mb)
    w("  mps_max_clients: 48")
    w("  share_granularity: %g" % gran)
    w("planner:")
    w("  policy: loki")
    w("  headroom: 0.5")
    w("frontend:")
    w("  socket: /tmp/loki.sock")
    w("  mode: \"0660\"")
    w("pipelines:")
    w("  - name: %s" % app["appName"])
    w("    slo_ms: %g" % slo)
    w("    tasks:")
    if pseudo_root:
        w("      - name: %s" % pseudo_root)
        w("        children: [%s]" % ", ".join(roots))
        w("        variants:")
        w("          - name: %s" % pseudo_root)
        w("            accuracy: 100")
        w("            memory_mb: 0")
        w("            startup_ms: 0")
        w("            batch_sizes: [1]")
        w("            latency_ms: [%s]" % fmt(PSEUDO_MS))
        w("            fanout:")
        for c in roots:
            w("              %s: {mean: 1, dist: constant}" % c)
    copies = []
    # the tasks reachable from the roots, in the order the artifact lists them
    seen = []

    def visit(t):
        if t in seen:
            return
        seen.append(t)
        for c in tasks[t]["children"]:
            visit(c)

    for r in roots:
        visit(r)
    for name in [t for t in order if t in seen]:
        variants, children = tasks[name]["variants"], tasks[name]["children"]
        accs = {}
        vf = os.path.join(a.variants, name)
        for line in open(vf):
            line = line.strip()
            if line:
                v, acc = line.split(",")[:2]
                accs[v] = float(acc)
        keep = [v for v in variants if v in runtimes and v in accs]
        skipped += [(name, v) for v in variants if v not in keep]
        if not keep:
            sys.exit("import_loki: task %s has no variant with runtime and accuracy rows" % name)
        best = max(accs[v] for v in keep)
        w("      - name: %s" % name)
        if children:
            w("        children: [%s]" % ", ".join(children))
        w("        variants:")
        for v in keep:
            prof = runtimes[v]
            bs = sorted(prof) if want_batches is None else [b for b in want_batches if b in prof]
            if not bs:
                sys.exit("import_loki: %s has none of the batch sizes %s" % (v, a.batches))
            if len(bs) > MAX_BATCHES:
                sys.exit("import_loki: %s is profiled at %d batch sizes, a topology holds %d: "
                         "pick some with --batches" % (v, len(bs), MAX_BATCHES))
            w("          - name: %s" % v)
            w("            accuracy: %.2f" % (accs[v] / best * 100))
            w("            memory_mb: %d" % mem_for(v))
            w("            startup_ms: %g" % a.startup_ms)
            w("            batch_sizes: [%s]" % ", ".join(str(b) for b in bs))
            lat = []
            for b in bs:
                if not prof[b] > 0:
                    sys.exit("import_loki: %s batch %d has latency %g ms" % (v, b, prof[b]))
                lat.append(fmt(prof[b]))
            w("            latency_ms: [%s]" % ", ".join(lat))
            if children:
                br = branching.get(v)
                w("            fanout:")
                for c in children:
                    if br is not None and c in br and br[c] != "":
                        m = float(br["mult_factor"]) * float(br[c])
                        w("              %s: %s" % (c, fmt(m, least=3)))
                    else:
                        copies.append("%s/%s -> %s" % (name, v, c))
                        w("              %s: {mean: 1, dist: constant}" % c)
    text = "\n".join(out) + "\n"
    if a.out == "-":
        sys.stdout.write(text)
    else:
        open(a.out, "w").write(text)
    for t, v in skipped:
        note("skipped %s/%s (no runtime or accuracy)" % (t, v))
    if copies:
        note("no branching row: a copy each (constant fan-out 1) for %s" % "; ".join(copies))


if __name__ == "__main__":
    main()
