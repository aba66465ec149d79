"""How close a real rehearsal comes to the fastest rollback and promotion its policy allows,
and how fast a revert to the previous stable moves the traffic back.

    .venv/bin/python bench/rollback.py [--interval 5s] [--runs 1] [--rate 40]
                                       [--no-rehearsal] [--no-revert] [--no-broken]

Rehearses the bundled examples (examples/rehearsal/: stable v1, good v2, bad v3 of the
sequence classifier; trained into .work/models first if missing) with the real
TorchServes, Prometheus, engine and PromQL, and compares the measured times, counted from
the canary's start (its first decision) to when the router had applied the outcome:

    rollback ratio   = time to 100% stable for the bad canary
                       / (failureLimit x interval + time to the canary's first step)
    promotion ratio  = time to 100% canary for the good canary / (steps x interval)

1.0 is the floor: the engine cannot decide sooner than its policy lets it. Targets at a 5 s
interval: rollback <= 1.2, promotion <= 1.1.

Revert time, measured in the same run: the real `torchrollout operator` process (kopf, its
default settings, the real Reconciler) against the real control plane of
tests/kube_cluster (kube-apiserver, controller-manager, scheduler, kwok's pods, which turn
Ready as soon as they are scheduled). A ModelDeployment with 2 replicas deploys 1.0.0, then
2.0.0 is promoted (by the promote annotation: no Prometheus involved). Then, side by side:

    warm  the spec is reverted to 1.0.0 right after the promotion, inside
          canary.scaleDownDelaySeconds (1.0.0 still has its 2 ready pods);
    cold  once 2.0.0, now the previous stable, has been scaled to zero and its pods are
          gone (after the delay), the spec is reverted to 2.0.0.

Measured from the patch of spec.model.version to the moment the client Service `fraud`
has, as its ready endpoints (the EndpointSlices kube-proxy routes by), exactly the old
stable's 2 pods: 100% of traffic on it. The status's Succeeded is timed too. Target: a
warm revert under 2 s; cold is for comparison (pods start, and the operator looks again
every second while it waits for them). kwok starts pods at once, so a real cluster's cold
revert is slower by the model's start-up time; the warm one is not.

Broken canary, in the same control plane: a canary that answers 100% errors from its first
request. The operator runs with Prometheus (scraping every 1 s) reading a loopback exporter
that stands in for the model pods: the canary's error counters start growing at the moment
its first step is applied (its first traffic). Measured from then to the moment the client
Service has only the stable's pods as ready endpoints (100% stable), with the status's
RollingBack and RolledBack timed too. The canary's analysis interval is an hour, so only the
fast watch (`fastInterval: 1s`, critical error-rate) can roll it back. Target: 2 s.

Exit code 1 if a target is missed. Run by hand; not part of the test suite. Work files go
to a temp dir and are removed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "rehearsal"
MODELS = REPO / ".work" / "models"
CRD = REPO / "crds" / "torchrollout.io_modeldeployments.yaml"
TARGETS = {"rollback": 1.2, "promotion": 1.1}
WARM_REVERT_TARGET = 2.0  # seconds from the revert to 100% of traffic on the old stable
BROKEN_TARGET = 2.0  # seconds from a broken canary's first traffic to 100% stable
REVERT_REPLICAS = 2
SCALE_DOWN_DELAY = 10  # seconds: long enough to revert inside it, short enough to wait out


class QuietView:
    """The rehearsal's view, saying only what the bench needs."""

    def note(self, text: str) -> None:
        pass

    def started(self, stats: object) -> None:
        pass

    def decided(self, record: object) -> None:
        pass

    def finished(self, outcome: Any) -> None:
        print(f"  {outcome.reason} after {outcome.elapsed:.2f}s: {outcome.message}")

    def close(self) -> None:
        pass


def rehearse(canary: str, *, interval: str, rate: float) -> dict[str, Any]:
    from torchrollout.rehearsal import session, signals

    options = session.Options(
        stable=EXAMPLES / "stable.yaml",
        canary=EXAMPLES / f"{canary}.yaml",
        traffic=MODELS / "sequence-classifier" / "traffic.jsonl",
        rate=rate,
        interval_override=interval,
    )
    with signals.interruptible():
        inputs = session.check_inputs(options, warn=print)
        return session.rehearse(options, inputs, QuietView()).report


class Reverts:
    """A ModelDeployment driven through a promotion and two reverts, timed from outside."""

    def __init__(self, api: Any, namespace: str) -> None:
        from kubernetes import client

        self.namespace = namespace
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.discovery = client.DiscoveryV1Api(api)
        self.apps = client.AppsV1Api(api)

    def body(self, version: str) -> dict[str, Any]:
        return {
            "apiVersion": "torchrollout.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "fraud", "namespace": self.namespace},
            "spec": {
                "model": {
                    "version": version,
                    "source": {"uri": "s3://models/fraud/model.pt"},
                    "handler": "sequence-classifier",
                },
                "runtime": {"replicas": REVERT_REPLICAS},
                # One step and an hour's interval: no analysis tick before the promote
                # annotation, so no Prometheus is needed.
                "canary": {
                    "steps": [50],
                    "interval": "1h",
                    "progressDeadlineSeconds": 60,
                    "scaleDownDelaySeconds": SCALE_DOWN_DELAY,
                },
            },
        }

    def status(self) -> dict[str, Any]:
        found = self.custom.get_namespaced_custom_object(
            "torchrollout.io", "v1alpha1", self.namespace, "modeldeployments", "fraud"
        )
        return dict(found.get("status") or {})

    def patch(self, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            "torchrollout.io", "v1alpha1", self.namespace, "modeldeployments", "fraud", patch
        )

    def serving(self) -> dict[str, int]:
        """Ready endpoints of the client Service `fraud`, counted by their pod's version."""
        versions = {
            p.metadata.name: p.metadata.labels.get("torchrollout.io/version")
            for p in self.core.list_namespaced_pod(
                self.namespace, label_selector="torchrollout.io/deployment=fraud"
            ).items
        }
        slices = self.discovery.list_namespaced_endpoint_slice(
            self.namespace, label_selector="kubernetes.io/service-name=fraud"
        ).items
        counts: dict[str, int] = {}
        for endpoint in (e for s in slices for e in s.endpoints or []):
            if endpoint.conditions.ready and endpoint.target_ref is not None:
                version = versions.get(endpoint.target_ref.name, "?")
                counts[version] = counts.get(version, 0) + 1
        return counts

    def pods_of(self, version: str) -> int:
        return len(
            self.core.list_namespaced_pod(
                self.namespace, label_selector=f"torchrollout.io/version={version}"
            ).items
        )

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise SystemExit(f"revert bench: {what} not within {timeout:g}s: {self.status()}")
            time.sleep(0.02)

    def phase_is(self, phase: str, **fields: Any) -> bool:
        status = self.status()
        return status.get("phase") == phase and all(status.get(k) == v for k, v in fields.items())

    def promote_second_version(self) -> None:
        self.core.create_namespace({"metadata": {"name": self.namespace}})
        self.custom.create_namespaced_custom_object(
            "torchrollout.io", "v1alpha1", self.namespace, "modeldeployments", self.body("1.0.0")
        )
        self.wait("1.0.0 deployed", lambda: self.phase_is("Succeeded", stableVersion="1.0.0"))
        self.patch({"spec": {"model": {"version": "2.0.0"}}})
        self.wait("canary 2.0.0 ready", lambda: self.phase_is("Progressing", stepIndex=0))
        self.patch({"metadata": {"annotations": {"torchrollout.io/promote": "bench"}}})
        self.wait("2.0.0 promoted", lambda: self.phase_is("Succeeded", stableVersion="2.0.0"))

    def revert(self, version: str) -> dict[str, Any]:
        """Seconds from the revert to Succeeded, and to 100% of traffic on `version`."""
        started = time.monotonic()
        self.patch({"spec": {"model": {"version": version}}})
        succeeded = traffic = None
        while succeeded is None or traffic is None:
            now = time.monotonic() - started
            if succeeded is None and self.phase_is("Succeeded", stableVersion=version):
                succeeded = now
            if traffic is None and self.serving() == {version: REVERT_REPLICAS}:
                traffic = now
            if now > 90:
                raise SystemExit(f"revert bench: revert to {version} not done: {self.status()}")
            time.sleep(0.02)
        entry = self.status()["history"][-1]
        return {
            "traffic": traffic,
            "succeeded": succeeded,
            "how": entry.get("instantRollback"),
            "reason": entry.get("reason", ""),
        }

    def measure(self) -> dict[str, dict[str, Any]]:
        self.promote_second_version()
        warm = self.revert("1.0.0")  # inside the delay: 1.0.0 still has its pods
        self.wait(
            "2.0.0 scaled to zero after scaleDownDelaySeconds",
            lambda: "warmRevision" not in self.status() and self.pods_of("2.0.0") == 0,
            timeout=SCALE_DOWN_DELAY + 60,
        )
        cold = self.revert("2.0.0")
        return {"warm": warm, "cold": cold}


class BrokenCanary(Reverts):
    """A canary answering only errors, timed from its first traffic to 100% stable."""

    def __init__(self, api: Any, namespace: str, exporter: Any) -> None:
        super().__init__(api, namespace)
        self.exporter = exporter

    def body(self, version: str) -> dict[str, Any]:
        body = super().body(version)
        body["spec"]["canary"] = {
            "steps": [50],
            "interval": "1h",  # no analysis tick: only the fast watch can act
            "fastInterval": "1s",
            "progressDeadlineSeconds": 60,
            "analysis": {"metrics": [{"template": "error-rate", "max": 0.05}], "minSamples": 20},
        }
        return body

    def measure(self) -> dict[str, Any]:
        from tests.support.exporter import Rates

        self.core.create_namespace({"metadata": {"name": self.namespace}})
        self.custom.create_namespaced_custom_object(
            "torchrollout.io", "v1alpha1", self.namespace, "modeldeployments", self.body("1.0.0")
        )
        self.wait("1.0.0 deployed", lambda: self.phase_is("Succeeded", stableVersion="1.0.0"))
        self.patch({"spec": {"model": {"version": "2.0.0"}}})
        self.wait(
            "canary 2.0.0 serving at its first step",
            lambda: self.phase_is("Progressing", stepIndex=0) and "2.0.0" in self.serving(),
        )
        started = time.monotonic()  # among the Service's endpoints: its first traffic
        canary = self.status()["canaryRevision"]
        self.exporter.revision(self.namespace, canary).__dict__.update(
            Rates(requests=40, errors=40).__dict__
        )
        rolling = rolled = traffic = None
        while rolled is None or traffic is None:
            now = time.monotonic() - started
            phase = self.status().get("phase")
            if rolling is None and phase in {"RollingBack", "RolledBack"}:
                rolling = now
            if rolled is None and phase == "RolledBack":
                rolled = now
            if traffic is None and rolling is not None and "2.0.0" not in self.serving():
                traffic = now
            if now > 90:
                raise SystemExit(f"broken canary bench: not rolled back: {self.status()}")
            time.sleep(0.02)
        return {
            "traffic": traffic,
            "rolling": rolling,
            "rolled": rolled,
            "message": self.status().get("message", ""),
        }


@contextlib.contextmanager
def operator_process(kubeconfig: Path, workdir: Path, prometheus_url: str) -> Iterator[None]:
    """`torchrollout operator` watching every namespace, with its default settings."""
    import httpx

    from torchrollout.local.ports import free_port

    port = free_port()
    argv = [
        str(Path(sys.executable).parent / "torchrollout"),
        "operator",
        "--all-namespaces",
        f"--kubeconfig={kubeconfig}",
        f"--prometheus-url={prometheus_url}",
        f"--metrics-port={port}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    with (workdir / "operator.log").open("wb") as log:
        operator = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 60
            while True:  # serving /metrics: kopf has started
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).is_success:
                        break
                except httpx.HTTPError:
                    pass
                if operator.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the operator did not start")
                time.sleep(0.2)
            yield
        finally:
            operator.terminate()
            operator.wait(timeout=30)


def measure_on_control_plane(
    runs: int, *, reverts: bool, broken: bool
) -> tuple[list[dict[str, dict[str, Any]]], list[dict[str, Any]]]:
    """Warm and cold reverts, and broken canaries, `runs` times each, each in a fresh
    namespace of one control plane, with one operator and one Prometheus."""
    sys.path.insert(0, str(REPO))  # the control plane's harness lives in the tests package
    from kubernetes import config
    from tests.kube_cluster.cluster import ControlPlane
    from tests.support.exporter import Exporter

    from torchrollout.local.prometheus import PrometheusServer, ScrapeTarget

    reverted: list[dict[str, dict[str, Any]]] = []
    broke: list[dict[str, Any]] = []
    print("control plane: starting it (tests/kube_cluster), Prometheus and the operator")
    with (
        tempfile.TemporaryDirectory(prefix="bench-rollback-") as tmp,
        ControlPlane.start(nodes=1) as plane,
        Exporter() as exporter,
        PrometheusServer(
            [ScrapeTarget(exporter.address, honor_labels=True)], workdir=Path(tmp)
        ) as prometheus,
    ):
        prometheus.wait_for_targets()
        plane.kubectl("apply", "--server-side", "-f", str(CRD))
        plane.kubectl("wait", "--for=condition=Established", "crd/modeldeployments.torchrollout.io")
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        with operator_process(plane.kubeconfig, Path(tmp), prometheus.url):
            for run in range(1, runs + 1):
                if reverts:
                    measured = Reverts(api, f"revert-{run}").measure()
                    for how, m in measured.items():
                        print(
                            f"run {run}: {how} revert: {m['traffic']:.3f}s to 100% of traffic "
                            f"on the old stable (status Succeeded after {m['succeeded']:.3f}s); "
                            f"history says {m['how']}: {m['reason']}"
                        )
                    reverted.append(measured)
                if broken:
                    b = BrokenCanary(api, f"broken-{run}", exporter).measure()
                    print(
                        f"run {run}: broken canary: {b['traffic']:.3f}s from its first traffic "
                        f"to 100% stable (RollingBack after {b['rolling']:.3f}s, RolledBack "
                        f"after {b['rolled']:.3f}s): {b['message']}"
                    )
                    broke.append(b)
        api.close()
    return reverted, broke


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", default="5s", help="canary interval (default 5s)")
    parser.add_argument("--runs", type=int, default=1, help="rehearsals (and reverts) per case")
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second")
    parser.add_argument("--no-rehearsal", action="store_true", help="measure reverts only")
    parser.add_argument("--no-revert", action="store_true", help="no reverts")
    parser.add_argument("--no-broken", action="store_true", help="no broken canary")
    args = parser.parse_args()
    reverts: list[dict[str, dict[str, Any]]] = []
    broken: list[dict[str, Any]] = []
    if not (args.no_revert and args.no_broken):
        reverts, broken = measure_on_control_plane(
            args.runs, reverts=not args.no_revert, broken=not args.no_broken
        )
    if not args.no_rehearsal and not (MODELS / "accuracy.json").is_file():
        print(f"training the example models into {MODELS}")
        script = REPO / "examples" / "models" / "make_models.py"
        subprocess.run([sys.executable, str(script), "--output", str(MODELS)], check=True)

    ratios: dict[str, list[float]] = {"rollback": [], "promotion": []}
    for run in range(1, 0 if args.no_rehearsal else args.runs + 1):
        for kind, canary, wanted in (("rollback", "bad", False), ("promotion", "good", True)):
            print(f"run {run}: {kind} ({canary}.yaml, interval {args.interval})")
            report = rehearse(canary, interval=args.interval, rate=args.rate)
            timings, policy = report["timings"], report["policy"]
            if report["outcome"]["promoted"] is not wanted:
                print(f"  unexpected outcome {report['outcome']['result']}")
                return 1
            if kind == "rollback":
                floor = (
                    f"failureLimit {policy['failureLimit']} x {policy['intervalSeconds']:g}s"
                    f" + {timings['firstStepSeconds']:.3f}s to the first step"
                )
                measured = timings["rollbackSeconds"]
            else:
                floor = f"{len(policy['steps'])} steps x {policy['intervalSeconds']:g}s"
                measured = timings["promotionSeconds"]
            ratio = timings["decidedOverFloor"]
            ratios[kind].append(ratio)
            print(
                f"  {kind}: {measured:.3f}s; floor {timings['floorSeconds']:.3f}s ({floor}); "
                f"ratio {ratio:.3f} (target <= {TARGETS[kind]}); "
                f"first failing verdict at {timings['firstFailingVerdictSeconds'] or '-'}s; "
                f"setup {sum(timings['setupSeconds'].values()):.1f}s, "
                f"whole run {timings['totalSeconds']:.1f}s"
            )
    missed = False
    for kind, values in ratios.items():
        if values:
            worst = max(values)
            ok = worst <= TARGETS[kind]
            missed |= not ok
            print(
                f"{kind} ratio: worst {worst:.3f}, mean {sum(values) / len(values):.3f} over "
                f"{len(values)} runs; target <= {TARGETS[kind]}: {'met' if ok else 'MISSED'}"
            )
        if kind == "rollback" and reverts:
            missed |= not print_reverts(reverts)
        if kind == "rollback" and broken:
            missed |= not print_broken(broken)
    return 1 if missed else 0


def print_reverts(reverts: list[dict[str, dict[str, Any]]]) -> bool:
    """The revert times beside the rollback ratio; whether the warm target was met."""
    warm = [r["warm"]["traffic"] for r in reverts]
    cold = [r["cold"]["traffic"] for r in reverts]
    ok = max(warm) < WARM_REVERT_TARGET and all(r["warm"]["how"] == "warm" for r in reverts)
    print(
        f"revert time to 100% of traffic on the old stable: warm (inside "
        f"scaleDownDelaySeconds) worst {max(warm):.3f}s, mean {sum(warm) / len(warm):.3f}s; "
        f"cold (after it) worst {max(cold):.3f}s, mean {sum(cold) / len(cold):.3f}s; over "
        f"{len(reverts)} runs; target warm < {WARM_REVERT_TARGET:g}s: "
        f"{'met' if ok else 'MISSED'}"
    )
    return ok


def print_broken(broken: list[dict[str, Any]]) -> bool:
    """The broken canary's time to 100% stable beside the ratios; whether it met its target."""
    times = [b["traffic"] for b in broken]
    ok = max(times) <= BROKEN_TARGET and all("fast watch" in b["message"] for b in broken)
    print(
        f"broken canary (100% errors) from first traffic to 100% stable: worst "
        f"{max(times):.3f}s, mean {sum(times) / len(times):.3f}s over {len(times)} runs "
        f"(Prometheus scraping every 1s, fastInterval 1s); target <= {BROKEN_TARGET:g}s: "
        f"{'met' if ok else 'MISSED'}"
    )
    return ok


if __name__ == "__main__":
    sys.exit(main())
