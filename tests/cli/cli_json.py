#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""`loki plan|capacity|replay --json` print one JSON document through jansson (loki/json.h)
with the keys, key order and value types the hand-written printers had before (the shapes
below were taken from those printers' output, plus each plan pipeline's "why" and "why_text"
and a capacity's "why" when it is zero), and the numbers a reader parses: a topology path with
a quote and bytes that are not UTF-8 still gives valid JSON.
usage: cli_json.py LOKI (run from the source tree)"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

loki = sys.argv[1]
N, I, F, S, B = None, int, float, str, bool  # N: a value of any type

PLAN = {"policy": S, "mode": S, "solve_ms": F, "gap": F, "kept": B, "gpus_used": F,
        "gpus_active": I, "check": S,
        "pipelines": [{"name": S, "demand_qps": F, "served_fraction": F, "accuracy": F,
                       "accuracy_subquery": F, "chain_latency_ms": [F], "why": S, "why_text": S,
                       "variants": [{"task": S, "variant": S, "instances": I, "spares": I,
                                     "batch": I, "share": F, "capacity_qps": F,
                                     "load_qps": F}],
                       "split": [{"task": S, "parent_variant": I, "variant": S,
                                  "fraction": F}]}],
        "instances": [{"pipeline": I, "task": S, "variant": S, "batch": I, "share": F,
                       "gpu": I, "fallback": N}]}
CAPACITY = {"topology": S, "gpus": I, "accuracy_floor": F,
            "policies": [{"policy": S, "capacity_qps": F, "ratio_to_inferline": F}]}
REPLAY = [{"policy": S, "seed": I, "replay_s": F, "wall_s": F, "arrived": I, "ok": I,
           "dropped": I, "late": I, "error": I, "overloaded": I, "sub_created": I,
           "sub_violations": I, "rerouted": I, "fallback": I, "events": I, "viol_ratio": F,
           "viol_ratio_sub": F, "accuracy": F, "accuracy_sub": F, "gpu_seconds": F,
           "gpus_mean": F, "gpus_max": F, "gpus_offpeak": F, "gpus_peak": F,
           "latency_ms_mean": F, "latency_ms_p50": F, "latency_ms_p99": F,
           "accuracy_ok_late": F, "gpus_time_mean": F, "replans": I, "plan_changes": I,
           "solve_ms_mean": F, "solve_ms_max": F, "sim_qps": I, "sim_subqps": I}]


def check(doc, shape, where):
    if shape is None:
        return
    if isinstance(shape, dict):
        assert isinstance(doc, dict), where
        assert list(doc) == list(shape), f"{where}: keys {list(doc)}, want {list(shape)}"
        for k in shape:
            check(doc[k], shape[k], f"{where}.{k}")
    elif isinstance(shape, list):
        assert isinstance(doc, list), where
        for i, x in enumerate(doc):
            check(x, shape[0], f"{where}[{i}]")
    else:
        assert type(doc) is shape, f"{where}: {doc!r} is {type(doc).__name__}, want {shape.__name__}"


def run(args, shape, name):
    out = subprocess.run([loki] + args, capture_output=True, check=True).stdout
    assert out.endswith(b"\n") and out.count(b"\n") == 1, f"{name}: not one line"
    doc = json.loads(out)
    check(doc, shape, name)
    return doc


topo = "examples/traffic_analysis.yaml"
plan = run(["plan", "--topology", topo, "--demand", "150", "--json"], PLAN, "plan")
assert plan["check"] == "ok" and plan["instances"], plan
run(["capacity", "--topology", topo, "--json"], CAPACITY, "capacity")
run(["replay", "--topology", topo, "--trace", "examples/traces/azure2019_1350fn_day_per_minute.csv",
     "--rate-min", "50", "--rate-max", "425", "--duration", "5", "--policy", "loki,proteus",
     "--json"], REPLAY, "replay")
# a path is a string like any other: escaped, and made valid UTF-8
d = tempfile.mkdtemp()
try:
    odd = os.path.join(d.encode(), b'to"po\xff.yaml')
    shutil.copy(topo, odd)
    cap = run(["capacity", "--topology", odd, "--json"], CAPACITY, "capacity (odd path)")
    assert cap["topology"].endswith('to"po\ufffd.yaml'), cap["topology"]
finally:
    shutil.rmtree(d)
print("cli_json: 4 passed, 0 failed")
