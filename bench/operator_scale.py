"""How the operator scales with the number of ModelDeployments.

    .venv/bin/python bench/operator_scale.py [--counts 100 500]

For each count N, in one run and side by side: a fresh API emulator, a real
`torchrollout operator` process watching every namespace, N ModelDeployments created at
once; measured: the time until every one reports `Succeeded` (its first revision
deployed, Services and PDB created), and the operator's resident memory and CPU time at
that moment. Printed per resource, with the ratio of the largest count to the smallest:
a ratio near 1 means the cost per resource does not grow with the fleet.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the emulator lives in the tests package

import yaml  # noqa: E402
from kubernetes import client, config  # noqa: E402
from tests.kube_emulator import KubeEmulator  # noqa: E402

from torchrollout.local.ports import free_port  # noqa: E402

NAMESPACES = 10
TICKS = os.sysconf("SC_CLK_TCK")


def model_deployment(index: int) -> dict[str, object]:
    return {
        "apiVersion": "torchrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": f"model-{index}", "namespace": f"fleet-{index % NAMESPACES}"},
        "spec": {
            "model": {
                "version": "1.0.0",
                "source": {"uri": f"s3://models/model-{index}.pt"},
                "handler": "sequence-classifier",
            }
        },
    }


def process_usage(pid: int) -> tuple[float, float]:
    """Resident memory (MiB) and CPU seconds of a process."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    return rss, cpu


def run(count: int, workdir: Path) -> dict[str, float]:
    kubeconfig = workdir / f"kubeconfig-{count}"
    with KubeEmulator.start(kubeconfig_path=kubeconfig, deployment_delay=0.2) as emulator:
        api = config.new_client_from_config(config_file=str(kubeconfig))
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        crd = (ROOT / "crds" / "torchrollout.io_modeldeployments.yaml").read_text()
        client.ApiextensionsV1Api(api).create_custom_resource_definition(yaml.safe_load(crd))
        for n in range(NAMESPACES):
            core.create_namespace({"metadata": {"name": f"fleet-{n}"}})
        log = (workdir / f"operator-{count}.log").open("wb")
        argv = [
            str(Path(sys.executable).parent / "torchrollout"),
            "operator",
            "--all-namespaces",
            f"--kubeconfig={kubeconfig}",
            "--prometheus-url=http://127.0.0.1:9",
            f"--metrics-port={free_port()}",
        ]
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        operator = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            time.sleep(3)  # let kopf start its watches before the burst
            idle_rss, idle_cpu = process_usage(operator.pid)
            started = time.monotonic()
            for index in range(count):
                body = model_deployment(index)
                namespace = body["metadata"]["namespace"]  # type: ignore[index]
                custom.create_namespaced_custom_object(
                    "torchrollout.io", "v1alpha1", namespace, "modeldeployments", body
                )
            created = time.monotonic() - started
            while True:
                items = custom.list_cluster_custom_object(
                    "torchrollout.io", "v1alpha1", "modeldeployments"
                )["items"]
                done = sum((i.get("status") or {}).get("phase") == "Succeeded" for i in items)
                if done == count:
                    break
                if time.monotonic() - started > 60 + count:
                    raise SystemExit(f"only {done}/{count} reported Succeeded; see {log.name}")
                time.sleep(0.5)
            elapsed = time.monotonic() - started
            rss, cpu = process_usage(operator.pid)
        finally:
            operator.terminate()
            operator.wait(timeout=30)
            log.close()
            api.close()
        del emulator
    return {
        "count": count,
        "seconds": elapsed,
        "create_seconds": created,
        "rss_mib": rss,
        "rss_growth_mib": rss - idle_rss,
        "cpu_seconds": cpu - idle_cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 500])
    counts = sorted(parser.parse_args().counts)
    with tempfile.TemporaryDirectory(prefix="operator-scale-") as tmp:
        results = [run(count, Path(tmp)) for count in counts]
    print(
        f"{'resources':>9} {'all Succeeded':>14} {'per resource':>13} {'operator RSS':>13} "
        f"{'RSS/resource':>13} {'CPU/resource':>13}"
    )
    for r in results:
        n = r["count"]
        print(
            f"{n:>9.0f} {r['seconds']:>12.1f} s {1000 * r['seconds'] / n:>10.1f} ms "
            f"{r['rss_mib']:>9.0f} MiB {1024 * r['rss_growth_mib'] / n:>9.1f} KiB "
            f"{1000 * r['cpu_seconds'] / n:>10.1f} ms"
        )
    small, large = results[0], results[-1]
    if small is not large:
        per = [r["seconds"] / r["count"] for r in (small, large)]
        cpu = [r["cpu_seconds"] / r["count"] for r in (small, large)]
        print(
            f"ratio {large['count']:.0f} vs {small['count']:.0f}: time per resource "
            f"{per[1] / per[0]:.2f}x, CPU per resource {cpu[1] / cpu[0]:.2f}x"
        )


if __name__ == "__main__":
    main()
