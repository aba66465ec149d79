"""How the operator scales with the number of ModelDeployments, on the real control plane.

    .venv/bin/python bench/operator_scale.py [--counts 200 2000] [--idle 900] [--smoke]

For each count N, side by side in one run: a fresh control plane (tests/kube_cluster:
etcd, kube-apiserver, controller-manager, scheduler; kwok runs the pods on enough fake
nodes), one real `torchrollout operator` process with its default settings watching every
namespace, and N ModelDeployments created at once in 10 namespaces. Measured:

- the time until every one reports `Succeeded` (its first revision's pods Ready through
  the real controllers, its Services and PDB created), and the operator's resident memory
  and CPU time then, per resource;
- with all N settled, the operator's CPU over `--idle` seconds, as a share of one core (by
  default one whole resync period, the operator's 900 s: a resource with nothing due is
  looked at again once a period, so a shorter window may miss or catch those looks by
  chance);
- the reaction delay: one resource's version is changed, and the delay until its canary's
  first analysis tick is written, less the canary interval (the part the operator and the
  cluster add: noticing the change, the canary's pods, the tick).

Prometheus is not needed (the ticks are Error ticks against an address nobody serves).
The ratios of the largest count to the smallest follow; a ratio near 1 means the cost per
resource does not grow with the fleet. `--smoke` runs tiny counts with a short idle window
to check that the benchmark works (the test suite does that); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the control plane's harness lives in the tests package

from kubernetes import client, config  # noqa: E402
from tests.e2e.conftest import OperatorProcess  # noqa: E402
from tests.kube_cluster.cluster import ClusterError, ControlPlane  # noqa: E402

from torchrollout.local.ports import free_port  # noqa: E402
from torchrollout.operator.reconcile import RESYNC_SECONDS  # noqa: E402

NAMESPACES = 10
PODS_PER_NODE = 60  # a kwok node has 32 CPUs; each pod asks for 500m by default
INTERVAL_SECONDS = 5  # the reaction probe's canary interval
TICKS = os.sysconf("SC_CLK_TCK")
# Listing every resource is heavy for the API server at 2000: the benchmark looks once a
# second per 400 resources, so it measures the operator's load, not its own (the moment all
# are Succeeded is seen up to that late: about 1% of the time at either count).
POLL_PER_RESOURCE = 1 / 400
GROUP, VERSION, PLURAL = "torchrollout.io", "v1alpha1", "modeldeployments"


def model_deployment(index: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": f"model-{index}", "namespace": f"fleet-{index % NAMESPACES}"},
        "spec": {
            "model": {
                "version": "1.0.0",
                "source": {"uri": f"s3://models/model-{index}.pt"},
                "handler": "sequence-classifier",
            },
            "canary": {"interval": f"{INTERVAL_SECONDS}s"},
        },
    }


def usage(pid: int) -> tuple[float, float]:
    """Resident memory (MiB) and CPU seconds of a process."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss, (int(fields[11]) + int(fields[12])) / TICKS


def start_operator(kubeconfig: Path, workdir: Path) -> OperatorProcess:
    """The operator as a user runs it: every namespace, default settings, no Prometheus."""
    port = free_port()
    argv = [
        str(Path(sys.executable).parent / "torchrollout"),
        "operator",
        "--all-namespaces",
        f"--kubeconfig={kubeconfig}",
        "--prometheus-url=http://127.0.0.1:9",
        f"--metrics-port={port}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    operator = OperatorProcess(
        argv, workdir / "operator.log", env, f"http://127.0.0.1:{port}/metrics"
    )
    operator.start()
    return operator


def settled(custom: client.CustomObjectsApi) -> int:
    items = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    return sum((i.get("status") or {}).get("phase") == "Succeeded" for i in items)


def reaction(custom: client.CustomObjectsApi, timeout: float) -> float:
    """Seconds from a new version of model-0 to its canary's first tick, less the interval."""
    patch = {"spec": {"model": {"version": "1.1.0"}}}
    started = time.monotonic()
    custom.patch_namespaced_custom_object(GROUP, VERSION, "fleet-0", PLURAL, "model-0", patch)
    while time.monotonic() - started < timeout:
        md = custom.get_namespaced_custom_object(GROUP, VERSION, "fleet-0", PLURAL, "model-0")
        if ((md.get("status") or {}).get("analysis") or {}).get("lastTick"):
            return time.monotonic() - started - INTERVAL_SECONDS
        time.sleep(0.05)
    raise SystemExit(f"model-0's canary made no analysis tick within {timeout:.0f} s")


def run(count: int, idle: float, workdir: Path) -> dict[str, float]:
    nodes = math.ceil(count / PODS_PER_NODE) + 1  # the canary needs room too
    print(f"== {count} resources: starting a control plane with {nodes} kwok nodes", flush=True)
    with ControlPlane.start(nodes=nodes) as plane:
        plane.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        plane.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}")
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        for n in range(NAMESPACES):
            core.create_namespace({"metadata": {"name": f"fleet-{n}"}})
        operator = start_operator(plane.kubeconfig, workdir)
        assert operator.process is not None
        pid = operator.process.pid
        try:
            base_rss, base_cpu = usage(pid)
            started = time.monotonic()
            for index in range(count):
                body = model_deployment(index)
                namespace = body["metadata"]["namespace"]
                custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
            print(f"   created in {time.monotonic() - started:.1f} s; waiting", flush=True)
            shown = 0.0
            while (done := settled(custom)) < count:
                spent = time.monotonic() - started
                if spent > 120 + 2 * count:
                    raise SystemExit(f"only {done}/{count} reported Succeeded; see {operator.log}")
                if spent - shown >= 15:
                    print(f"   {done}/{count} Succeeded after {spent:.0f} s", flush=True)
                    shown = spent
                time.sleep(max(1.0, count * POLL_PER_RESOURCE))
            elapsed = time.monotonic() - started
            rss, cpu = usage(pid)
            print(f"   all Succeeded in {elapsed:.1f} s; idle for {idle:.0f} s", flush=True)
            idle_from = usage(pid)[1]
            time.sleep(idle)
            idle_cpu = usage(pid)[1] - idle_from
            delay = reaction(custom, timeout=120)
            print(f"   reaction delay {delay:.2f} s", flush=True)
        finally:
            operator.stop()
            api.close()
    return {
        "count": count,
        "seconds": elapsed,
        "rss_mib": rss,
        "rss_kib_per": 1024 * (rss - base_rss) / count,
        "cpu_ms_per": 1000 * (cpu - base_cpu) / count,
        "idle_share": idle_cpu / idle,
        "reaction": delay,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--counts", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--idle", type=float, default=RESYNC_SECONDS, help="idle seconds measured")
    parser.add_argument("--smoke", action="store_true", help="tiny counts, to check it works")
    args = parser.parse_args()
    counts, idle = (sorted(args.counts), args.idle) if not args.smoke else ([2, 4], 2.0)
    if any(c < 1 for c in counts):
        parser.error("--counts: give positive numbers of resources")
    try:
        with tempfile.TemporaryDirectory(prefix="operator-scale-") as tmp:
            results = [run(c, idle, Path(tmp)) for c in counts]
    except ClusterError as exc:
        print(f"operator_scale: the control plane did not start: {exc}", file=sys.stderr)
        return 2
    print(
        f"\n{'resources':>9} {'all Succeeded':>14} {'per resource':>13} {'operator RSS':>13} "
        f"{'RSS/resource':>13} {'CPU/resource':>13} {'idle CPU':>9} {'reaction':>9}"
    )
    for r in results:
        n = r["count"]
        print(
            f"{n:>9.0f} {r['seconds']:>12.1f} s {1000 * r['seconds'] / n:>10.1f} ms "
            f"{r['rss_mib']:>9.0f} MiB {r['rss_kib_per']:>9.1f} KiB "
            f"{r['cpu_ms_per']:>10.1f} ms {100 * r['idle_share']:>7.1f} % "
            f"{r['reaction']:>7.2f} s"
        )
    small, large = results[0], results[-1]
    if small is not large:
        time_ratio = (large["seconds"] / large["count"]) / (small["seconds"] / small["count"])
        print(
            f"ratio {large['count']:.0f} vs {small['count']:.0f}: time per resource "
            f"{time_ratio:.2f}x (goal <= 1.2), CPU per resource "
            f"{large['cpu_ms_per'] / small['cpu_ms_per']:.2f}x (goal <= 1.2), reaction delay "
            f"{large['reaction'] / small['reaction']:.2f}x (goal <= 1.5); at {large['count']:.0f}: "
            f"{large['rss_kib_per']:.0f} KiB per resource (goal <= 98), idle CPU "
            f"{100 * large['idle_share']:.1f} % of a core (goal <= 5)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
