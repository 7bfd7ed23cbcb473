# SPDX-License-Identifier: Apache-2.0
"""examples/k8s/ holds manifests no test here can apply (no cluster, no Envoy): this checks
that they agree with lokid and with each other. Every lokid flag in the DaemonSet is one this
lokid knows; its probes are the front
door's health paths on its HTTP port; Prometheus' annotations name the metrics port; the GPU
limit is the pool topology's gpus.count; the Service selects the pods; Envoy's routes name
clusters that exist, and each cluster health-checks /v2/health/ready on the front door's port of
a pool's headless Service.

usage: k8s_manifests.py LOKID SOURCE_DIR     (exit 77 without PyYAML)
"""
import os
import re
import subprocess
import sys

try:
    import yaml
except ImportError:
    print("no PyYAML (python3-yaml): skipped")
    sys.exit(77)


fails = []


def check(cond, what):
    if not cond:
        fails.append(what)
        print("FAIL:", what, file=sys.stderr)


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def arg(args, flag):
    for a in args:
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def main():
    lokid, src = sys.argv[1], sys.argv[2]
    k8s = os.path.join(src, "examples", "k8s")
    helptext = subprocess.run([lokid, "--help"], capture_output=True, text=True).stdout
    known = set(re.findall(r"--[a-z][a-z-]+", helptext))

    lk = {d["kind"]: d for d in docs(os.path.join(k8s, "lokid.yaml"))}
    ds, svc = lk["DaemonSet"], lk["Service"]
    pod = ds["spec"]["template"]
    c = pod["spec"]["containers"][0]
    args = c["args"]
    for a in args:
        flag = a.split("=", 1)[0]
        check(flag in known, "lokid does not know %s" % flag)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check(str(ports.get("http")) == arg(args, "--http-port"),
          "port http %s is not --http-port %s" % (ports.get("http"), arg(args, "--http-port")))
    check(arg(args, "--http-address") == "0.0.0.0", "the front door must listen on the pod's address")
    for probe, path in [("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live"),
                        ("startupProbe", "/v2/health/live")]:
        g = c[probe]["httpGet"]
        check(g["path"] == path and g["port"] == "http", "%s: %s" % (probe, g))
    ann = pod["metadata"]["annotations"]
    check(ann["prometheus.io/scrape"] == "true" and
          ann["prometheus.io/port"] == arg(args, "--metrics-port") == str(ports.get("metrics")),
          "Prometheus annotations %s vs --metrics-port %s" % (ann, arg(args, "--metrics-port")))
    # the pool's topology (examples/h200x8.yaml) has as many GPUs as the pod asks for
    with open(os.path.join(src, "examples", "h200x8.yaml")) as f:
        gpus = yaml.safe_load(f)["gpus"]["count"]
    check(c["resources"]["limits"]["nvidia.com/gpu"] == gpus,
          "nvidia.com/gpu %s, the topology has %d" % (c["resources"]["limits"], gpus))
    labels = pod["metadata"]["labels"]
    check(all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()),
          "the Service does not select the pods")
    check(svc["spec"].get("clusterIP") == "None", "the Service must be headless (STRICT_DNS)")
    check(svc["spec"]["ports"][0]["targetPort"] == "http", "the Service's target port")
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    check(grace >= 4 * 0.25 + 10, "grace period %s under lokid's drain limit" % grace)

    ev = {d["kind"] + "/" + d["metadata"]["name"]: d for d in docs(os.path.join(k8s, "envoy.yaml"))}
    conf = yaml.safe_load(ev["ConfigMap/envoy"]["data"]["envoy.yaml"])
    clusters = {cl["name"]: cl for cl in conf["static_resources"]["clusters"]}
    hcm = conf["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    for r in routes:
        for wc in r["route"]["weighted_clusters"]["clusters"]:
            check(wc["name"] in clusters and wc["weight"] > 0, "route to %s" % wc)
        rp = r["route"]["retry_policy"]
        check(rp["retriable_status_codes"] == [503], "retry 503 only, never 504 (dropped)")
    pool = "%s.%s.svc.cluster.local" % (svc["metadata"]["name"], svc["metadata"]["namespace"])
    check(any(cl["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
              ["socket_address"]["address"] == pool for cl in clusters.values()),
          "no Envoy cluster for the pool %s" % pool)
    for name, cl in clusters.items():
        sa = cl["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
            "socket_address"]
        check(str(sa["port_value"]) == arg(args, "--http-port"), "%s: port %s" % (name, sa))
        check(cl["health_checks"][0]["http_health_check"]["path"] == "/v2/health/ready",
              "%s: health check" % name)
        check(cl["type"] == "STRICT_DNS", "%s: a headless Service needs STRICT_DNS" % name)
    if fails:
        print("%d checks failed" % len(fails), file=sys.stderr)
        sys.exit(1)
    print("examples/k8s: consistent with lokid and with each other")


if __name__ == "__main__":
    main()
