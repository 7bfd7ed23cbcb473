#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""tools/import_loki.py on a synthetic artifact (tests/tools/artifact: made-up numbers in the Loki
artifact's layout) whose input goes to two tasks in parallel through a pseudo "source":
- no branching row is needed for the source; it becomes a pseudo root that copies each query to
  both real roots with constant fan-out 1, and the importer says so on stderr;
- every profiled batch size (1..32) is kept, --batches keeps a subset;
- a latency of 0.0012 ms is written with its digits, never as 0.00;
- a task without a branching row copies its output: constant fan-out 1;
- sinks are dropped; `loki topology check` accepts the file, and warns about the variant that
  can never meet the SLO (naming it and its batch-1 latency against the budget) and that
  inferline cannot serve the pipeline;
- `loki topology import-loki` runs the same importer;
- a pipeline with a real root gets no pseudo task.
usage: test_import_loki.py LOKI
"""
import json
import os
import re
import subprocess
import sys
import tempfile

LOKI = sys.argv[1]
HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
TOOL = os.path.join(SRC, "tools", "import_loki.py")
ART = os.path.join(HERE, "artifact")
fails = []


def check(cond, what):
    if not cond:
        fails.append(what)
        print("FAIL: " + what, file=sys.stderr)


def args(app="app.json", extra=()):
    return ["--app", os.path.join(ART, app), "--runtimes", os.path.join(ART, "runtimes.csv"),
            "--variants", os.path.join(ART, "variants"), "--branching",
            os.path.join(ART, "branching.csv"), "--gpus", "4", *extra]


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def variant_block(text, name):
    """The lines of variant @name up to the next variant or task."""
    m = re.search(r"^ +- name: %s\n((?: {12}.*\n)+)" % re.escape(name), text, re.M)
    return m.group(1) if m else ""


with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "scene.yaml")
    r = run([sys.executable, TOOL, *args(), "--out", out])
    check(r.returncode == 0, "importer failed: " + r.stderr)
    text = open(out).read()
    # pseudo root: copies to both roots, constant fan-out, no branching row needed
    check(re.search(r"- name: source\n +children: \[detect, caption\]", text) is not None,
          "no pseudo root 'source' feeding detect and caption")
    src = variant_block(text, "source")
    check("detect: {mean: 1, dist: constant}" in src and
          "caption: {mean: 1, dist: constant}" in src, "pseudo root fan-out not constant 1: " + src)
    check("pseudo root task 'source'" in r.stderr and "2 root tasks (detect, caption)" in r.stderr,
          "importer does not say it added a pseudo root: " + r.stderr)
    check("'source' is a pseudo root task" in text, "the file does not say 'source' is pseudo")
    check("sink" not in text, "sink task kept")
    # every profiled batch size
    det = variant_block(text, "det-s")
    check("batch_sizes: [%s]" % ", ".join(str(b) for b in range(1, 33)) in det,
          "det-s does not keep batch sizes 1..32: " + det[:200])
    # no positive latency rounded to 0
    tiny = variant_block(text, "cap-tiny")
    check("latency_ms: [0.0012, 0.00168," in tiny, "cap-tiny latency lost digits: " + tiny[:300])
    check(re.search(r"latency_ms: \[[^\]]*\b0\.0+\b", text) is None, "a latency written as 0")
    # Poisson fan-out from branching.csv, a copy where there is none
    check("classify: 4.250" in variant_block(text, "det-l"), "det-l fan-out not 4.25")
    check("summarise: {mean: 1, dist: constant}" in variant_block(text, "cap-big"),
          "cap-big -> summarise is not a constant copy")
    check("caption/cap-big -> summarise" in r.stderr, "importer does not list the copies")

    # the file loads; the unusable variant and inferline are named
    c = run([LOKI, "topology", "check", out])
    check(c.returncode == 0, "topology check refuses the import: " + c.stderr)
    check(re.search(r"warning: detect/det-xl can never be used: 130 ms at batch 1, but the rest "
                    r"of the pipeline leaves it 98 ms of the 100 ms budget", c.stderr) is not None,
          "no warning naming det-xl with its latency and budget: " + c.stderr)
    check("warning: inferline cannot serve pipeline scene" in c.stderr,
          "no warning that inferline cannot serve it: " + c.stderr)
    check(c.stderr.count("can never be used") == 1, "other variants reported unusable: " + c.stderr)
    # shares below 1: derived, and the check says they are not measured
    check("share_granularity: 0.25" not in text, "granularity written without asking")
    r2 = run([sys.executable, TOOL, *args(extra=("--share-granularity", "0.25")), "--out", out])
    check(r2.returncode == 0 and "share_granularity: 0.25" in open(out).read(),
          "--share-granularity not written")
    check("latency / share" in open(out).read(), "the file does not say shares are derived")
    c = run([LOKI, "topology", "check", out])
    check(c.returncode == 0 and "shares 0.5, 0.25 are NOT MEASURED" in c.stderr,
          "check does not say derived shares are not measured: " + c.stderr)
    # every policy says why it cannot serve: inferline here
    p = run([LOKI, "plan", "--topology", out, "--demand", "10", "--policy", "inferline", "--json"])
    check(p.returncode == 0, "loki plan failed: " + p.stderr)
    if p.returncode == 0:
        pj = json.loads(p.stdout)["pipelines"][0]
        check(pj["served_fraction"] < 1e-9 and pj["why"] == "latency" and
              "detect/det-xl" in pj["why_text"], "inferline plan does not say why: %s" % pj)
    cap = run([LOKI, "capacity", "--topology", out])
    check(cap.returncode == 0 and "inferline carries nothing:" in cap.stdout and
          "det-xl" in cap.stdout, "loki capacity does not explain its zero: " + cap.stdout)

    # --batches keeps only those
    r = run([sys.executable, TOOL, *args(extra=("--batches", "1,2,4,64")), "--out", out])
    check(r.returncode == 0 and "batch_sizes: [1, 2, 4]\n" in open(out).read(),
          "--batches 1,2,4,64 does not keep 1, 2, 4")

    # the CLI runs the same importer
    a = run([sys.executable, TOOL, *args()])
    b = run([LOKI, "topology", "import-loki", *args()])
    check(b.returncode == 0 and a.stdout == b.stdout and a.stdout,
          "loki topology import-loki differs from the tool: " + b.stderr)
    h = run([LOKI, "topology", "import-loki", "--help"])
    check(h.returncode == 0 and "--batches" in h.stdout, "import-loki --help: " + h.stdout)

    # a real root: no pseudo task
    app = json.load(open(os.path.join(ART, "app.json")))
    app["root"] = app["root"]["children"][0]
    one = os.path.join(tmp, "one.json")
    json.dump(app, open(one, "w"))
    r = run([sys.executable, TOOL, "--app", one, *args()[2:]])
    check(r.returncode == 0 and "- name: source" not in r.stdout and
          "pseudo" not in r.stderr, "single-root import got a pseudo root: " + r.stderr)
    check(re.search(r"tasks:\n +- name: detect\n", r.stdout) is not None, "detect is not the root")
    f1 = os.path.join(tmp, "one.yaml")
    open(f1, "w").write(r.stdout)
    c = run([LOKI, "topology", "check", f1])
    check(c.returncode == 0, "single-root import refused: " + c.stderr)

sys.exit(1 if fails else 0)
