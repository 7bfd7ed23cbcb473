# SPDX-License-Identifier: Apache-2.0
"""`loki load --json --csv --plot` against a live lokid (tests/lokid/small.yaml): the CSV has one
row per wall second with the offered rate of the trace, its columns add up to the summary and the
outcomes to the arrivals (attempted = sent + refused_client + send_failed, sent = the sum of the
reply outcomes), lokid's
instances and GPUs are filled in, and the SVG is a complete chart.

usage: test_load_csv.py LOKID LOKI
"""
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
TOPOLOGY = os.path.join(HERE, "..", "lokid", "small.yaml")


def main():
    lokid, loki = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory(prefix="loki-load-test-") as d:
        sock = os.path.join(d, "s.sock")
        trace = os.path.join(d, "t.csv")
        with open(trace, "w") as f:
            f.write("second,requests\n0,40\n1,80\n2,0\n3,60\n")
        r, w = os.pipe()
        p = subprocess.Popen([lokid, "--topology", TOPOLOGY, "--socket", sock, "--quiet",
                              "--initial-demand", "100", "--ready-fd", str(w)], pass_fds=(w,))
        os.close(w)
        try:
            with os.fdopen(r, "rb") as f:
                assert f.readline().strip() == b"ready", "lokid did not become ready"
            out_csv, out_svg = os.path.join(d, "ps.csv"), os.path.join(d, "ps.svg")
            res = subprocess.run([loki, "load", "--socket", sock, "--trace", trace, "--seed", "3",
                                  "--json", "--csv", out_csv, "--plot", out_svg],
                                 stdout=subprocess.PIPE, timeout=40, check=True)
            summary = json.loads(res.stdout)
            rows = list(csv.DictReader(open(out_csv)))
            assert [int(x["second"]) for x in rows] == list(range(len(rows))), rows
            assert 4 <= len(rows) <= 5, rows  # sends stop at 4 s; replies are by send second
            assert [float(x["offered_qps"]) for x in rows[:4]] == [40, 80, 0, 60], rows
            assert int(rows[2]["sent"]) == 0, rows[2]
            sides = ("refused_client", "send_failed", "sent")
            outcomes = ("ok", "dropped", "late", "overloaded_server", "timeouts", "errors")
            for k in ("attempted",) + sides + outcomes:
                assert sum(int(x[k]) for x in rows) == summary[k], (k, summary, rows)
            # every arrival ends in one outcome: the account adds up, in total and per second
            for x in rows + [summary]:
                assert int(x["attempted"]) == sum(int(x[k]) for k in sides), x
                assert int(x["sent"]) == sum(int(x[k]) for k in outcomes), x
            assert summary["sent"] > 100 and summary["ok"] > 0, summary
            for x in rows:
                if int(x["ok"]) + int(x["late"]):
                    assert 0 < float(x["p50_ms"]) <= float(x["p99_ms"]), x
                    assert 0 < float(x["mean_accuracy"]) <= 100, x
            # lokid answered the once-a-second metrics request: small.yaml uses 2 instances
            assert any(x["gpus"] and float(x["gpus"]) > 0 for x in rows), rows
            root = ET.parse(out_svg).getroot()
            assert root.tag.endswith("svg"), root.tag
            assert len(root.findall(".//{http://www.w3.org/2000/svg}polyline")) >= 5
            print("per-second account adds up: %d rows, %d sent" % (len(rows), summary["sent"]))
            p.send_signal(signal.SIGTERM)
            assert p.wait(30) == 0, "lokid exit status"
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
