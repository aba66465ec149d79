"""How fast the operator's own autoscaling (`autoscaling.engine: prometheus`) follows a load
signal, against the fastest its policy allows.

    .venv/bin/python bench/autoscale.py [--runs 3] [--interval 2s] [--period 1]
        [--scale-up-stabilization 0] [--scale-down-stabilization 10]
        [--min-replicas 1] [--max-replicas 10]

As tests/e2e/test_prometheus_scaling.py: the real `torchrollout operator` (its default
settings), the control plane of tests/kube_cluster (kwok's pods), a real Prometheus
scraping the test exporter every 1 s; a ModelDeployment scales on `signal: query`, its
revision's gauge `test_load`, target 10. Each run sets the load to 2.5x the target until
spec.replicas of its Deployment is max, then to 0.1x until min, timed from the change.
spec.replicas (never outside [min, max]) and the status (when the signal is read) are
sampled every 0.1 s, so times are up to ~0.1 s late.

    up ratio   = time to max / (scrape + S_up + interval + (n - 1) x step)
    down ratio = time to min / (S_down + interval)

n: steps from min to max (by the engine's own scale(): +100% or +4 pods at most, so
1 -> 3 -> 7 -> 10 at the defaults); step: scalePeriodSeconds rounded up to whole intervals;
S_up, S_down: the stabilization windows; scrape: the new value is seen up to 1 s late, and
the first read may come a whole interval after that. So 1.0 is an operator without overhead
whose reads fall worst; a luckier phase measures less. Not in the floor: PromQL's 1m rate
window (a gauge is read as it is; the query has no {{ interval }}); the reconcile, the
Deployment's update, the phase of the operator's call-backs (the overhead measured).
Caveats: with S_up > 0 every step waits out the window again, which the floor counts once.
The down window runs from the last read that saw the high load, up to an interval before
the change or a scrape after it (printed), and the status keeps times to the whole second:
from the change, the policy's own down time lies in about
[S_down - interval - 1 s, S_down + interval + scrape].
Targets: both worst ratios <= 1.2. Exit code 1 if one is missed or replicas left [min, max].
Run by hand; not part of the test suite. Work files go to a temp dir, removed.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from torchrollout.engine.scaling import scale
from torchrollout.local.ports import free_port
from torchrollout.local.prometheus import PrometheusServer, ScrapeTarget
from torchrollout.spec.scaling import AutoscalingSpec

REPO = Path(__file__).resolve().parents[1]
CRD = REPO / "crds" / "torchrollout.io_modeldeployments.yaml"
TARGET, UP, DOWN, GOAL = 10.0, 2.5, 0.1, 1.2
SCRAPE = 1.0  # PrometheusServer's default scrape interval, seconds
QUERY = 'sum(test_load{namespace="{{ namespace }}",revision="{{ revision }}"})'


def up_path(policy: AutoscalingSpec) -> list[int]:
    """Replicas after each step from min at UP x target, by the engine's own scale()."""
    fast = policy.model_copy(update={"scale_up_stabilization_seconds": 0})
    path, now = [policy.min_replicas], datetime.now(UTC)
    while path[-1] < policy.max_replicas:
        kw: dict[str, Any] = {"recommendations": (), "last_scale_time": None, "now": now}
        path.append(scale(fast, current=path[-1], value=UP * TARGET, **kw).desired)
    return path


@dataclass
class Watch:
    """The revision's Deployment and status, sampled every 0.1 s."""

    apps: Any
    custom: Any
    namespace: str
    deployment: str
    seen: list[int] = field(default_factory=list)
    reads: list[tuple[float, float]] = field(default_factory=list)  # (seen at, value)
    last_read: str = ""

    def sample(self) -> int:
        from tests.e2e.conftest import status_of

        found = self.apps.read_namespaced_deployment(self.deployment, self.namespace)
        self.seen.append(int(found.spec.replicas))
        record = (status_of(self.custom, self.namespace).get("scaling") or [{}])[0]
        if record.get("lastRead", "") != self.last_read and record.get("value") is not None:
            self.last_read = record["lastRead"]
            self.reads.append((time.monotonic(), float(record["value"])))
        return self.seen[-1]

    def until(self, goal: int, hold: float, timeout: float = 180.0) -> tuple[float, float]:
        """Seconds to spec.replicas == goal, and when it began; then `hold` s more."""
        started, reached, last = time.monotonic(), -1.0, -1
        while reached < 0 or time.monotonic() - started < reached + hold:
            polled = time.monotonic()
            replicas, elapsed = self.sample(), time.monotonic() - started
            if replicas != last:
                print(f"    {elapsed:6.2f}s  spec.replicas {replicas}", flush=True)
                last = replicas
            if reached < 0 and replicas == goal:
                reached = elapsed
            if elapsed > timeout:
                raise SystemExit(f"autoscale bench: no {goal} replicas in {timeout:g}s")
            time.sleep(max(0.0, 0.1 - (time.monotonic() - polled)))
        return reached, started


def measure(args: argparse.Namespace, spec: dict[str, Any], hold: float) -> tuple[Any, ...]:
    """Up and down times per run, every replica count seen, and the gaps between reads."""
    sys.path.insert(0, str(REPO))  # the harness lives in the tests package
    from kubernetes import client, config
    from tests.e2e.conftest import BIN, OperatorProcess, create_namespace, deploy_stable
    from tests.e2e.conftest import revision_of as revision
    from tests.kube_cluster.cluster import ControlPlane
    from tests.kube_emulator.fixtures import Kubectl
    from tests.support.exporter import Exporter

    print("starting the control plane (tests/kube_cluster), Prometheus and the operator")
    with (
        tempfile.TemporaryDirectory(prefix="bench-autoscale-") as tmp,
        Exporter() as exporter,
        ControlPlane.start(nodes=1) as plane,
        PrometheusServer(
            [ScrapeTarget(exporter.address, honor_labels=True)], workdir=Path(tmp) / "prom"
        ) as prometheus,
    ):
        prometheus.wait_for_targets()
        plane.kubectl("apply", "--server-side", "-f", str(CRD))
        plane.kubectl("wait", "--for=condition=Established", "crd/modeldeployments.torchrollout.io")
        port, env = free_port(), {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        argv = [str(BIN / "torchrollout"), "operator", "--all-namespaces"]
        argv += [f"--kubeconfig={plane.kubeconfig}", f"--prometheus-url={prometheus.url}"]
        argv += [f"--metrics-port={port}"]
        metrics = f"http://127.0.0.1:{port}/metrics"
        (operator := OperatorProcess(argv, Path(tmp) / "operator.log", env, metrics)).start()
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))  # type: ignore[no-untyped-call]
        try:
            create_namespace(api, "autoscale")
            kubectl = Kubectl(plane.kubeconfig, Path(tmp) / "kubectl", plane.binary("kubectl"))
            custom = client.CustomObjectsApi(api)
            body = deploy_stable(kubectl, custom, exporter, "autoscale", autoscaling=spec)
            load = exporter.revision("autoscale", revision(body))
            watch = Watch(client.AppsV1Api(api), custom, "autoscale", f"fraud-{revision(body)}")
            load.load = DOWN * TARGET
            print(f"deployed; waiting for {args.min_replicas} replica(s) at {DOWN}x the target")
            watch.until(args.min_replicas, hold)
            ups, downs, after_high = [], [], []
            for run in range(1, args.runs + 1):
                print(f"run {run}: load {UP}x the target", flush=True)
                load.load = UP * TARGET
                ups.append(watch.until(args.max_replicas, hold)[0])
                print(f"run {run}: load {DOWN}x the target", flush=True)
                load.load = DOWN * TARGET
                took, started = watch.until(args.min_replicas, hold)
                high = max(t for t, value in watch.reads if value > TARGET and t < started + took)
                print(f"    last read of the high load at {high - started:+.2f}s")
                downs.append(took)
                after_high.append(started + took - high)
            gaps = [b[0] - a[0] for a, b in itertools.pairwise(watch.reads)]
            return ups, downs, after_high, watch.seen, gaps
        finally:
            api.close()
            operator.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="up-and-down runs (default 3)")
    parser.add_argument("--interval", default="2s", help="autoscaling.interval (default 2s)")
    parser.add_argument("--period", type=int, default=1, help="scalePeriodSeconds (default 1)")
    parser.add_argument("--scale-up-stabilization", type=int, default=0, help="seconds")
    parser.add_argument("--scale-down-stabilization", type=int, default=10, help="seconds")
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--max-replicas", type=int, default=10)
    args = parser.parse_args()
    spec: dict[str, Any] = {
        "engine": "prometheus", "signal": "query", "query": QUERY, "target": TARGET,
        "minReplicas": args.min_replicas, "maxReplicas": args.max_replicas,
        "interval": args.interval, "scalePeriodSeconds": args.period,
        "scaleUpStabilizationSeconds": args.scale_up_stabilization,
        "scaleDownStabilizationSeconds": args.scale_down_stabilization,
    }  # fmt: skip
    policy = AutoscalingSpec.model_validate(spec)
    interval, path = policy.interval_seconds, up_path(policy)
    step = math.ceil(args.period / interval) * interval
    up_floor = SCRAPE + args.scale_up_stabilization + interval + (len(path) - 2) * step
    window = args.scale_down_stabilization
    down_floor = window + interval
    print(
        f"up floor {up_floor:g}s = scrape {SCRAPE:g}s + S_up {args.scale_up_stabilization}s + "
        f"interval {interval:g}s + {len(path) - 2} x step {step:g}s ({' -> '.join(map(str, path))})"
        f"; down floor {down_floor:g}s = S_down + interval"
    )
    hold = max(args.period, interval) + SCRAPE + 0.5  # steady before the next change
    ups, downs, after_high, seen, gaps = measure(args, spec, hold)
    missed = False
    for kind, times, floor in (("up", ups, up_floor), ("down", downs, down_floor)):
        ratios = [t / floor for t in times]
        runs = ", ".join(f"{t:.2f}s ({r:.3f})" for t, r in zip(times, ratios, strict=True))
        missed |= max(ratios) > GOAL
        print(
            f"scale {kind}, per run (ratio to the {floor:g}s floor): {runs}; worst "
            f"{max(ratios):.3f}, goal <= {GOAL}: {'met' if max(ratios) <= GOAL else 'MISSED'}"
        )
    since = ", ".join(f"{t:.2f}s" for t in after_high)
    print(f"scale down after the last read of the high load: {since} (window {window}s)")
    inside = all(args.min_replicas <= n <= args.max_replicas for n in seen)
    missed |= not inside
    print(f"spec.replicas in [min, max] in all {len(seen)} samples: {inside} ({set(seen)})")
    print(
        f"signal reads: every {sum(gaps) / len(gaps):.2f}s on average, "
        f"{min(gaps):.2f}..{max(gaps):.2f}s, for an interval of {interval:g}s"
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
