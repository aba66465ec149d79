"""Run a real Kubernetes control plane on loopback: ``python -m tests.kube_cluster``.

    python -m tests.kube_cluster --kubeconfig /tmp/kube.kubeconfig
    kubectl --kubeconfig /tmp/kube.kubeconfig get nodes

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake nodes whose pods
turn Ready without running) run until Ctrl-C or SIGTERM; then every process stops and the
temporary folder (certificates, etcd data, logs) is removed. Build the binaries first with
``make kube`` (``make cluster`` does both).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from .cluster import ClusterError, ControlPlane


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.kube_cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        required=True,
        help="write the admin kubeconfig here once the API server is ready",
    )
    parser.add_argument("--port", type=int, default=0, help="kube-apiserver's port (0: any free)")
    parser.add_argument("--nodes", type=int, default=3, help="fake nodes kwok manages")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def progress(message: str) -> None:
        print(f"[kube-cluster] {message}", flush=True)

    try:
        plane = ControlPlane.start(nodes=args.nodes, apiserver_port=args.port, progress=progress)
    except ClusterError as error:
        print(f"[kube-cluster] error: {error}", file=sys.stderr)
        return 1
    try:
        args.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(plane.kubeconfig, args.kubeconfig)
        args.kubeconfig.chmod(0o600)
        print(
            f"[kube-cluster] started in {plane.startup_seconds:.1f} s; API server {plane.url}\n"
            f"[kube-cluster] kubeconfig: {args.kubeconfig}\n"
            f"[kube-cluster] kubectl: {plane.binary('kubectl')}\n"
            f"[kube-cluster] Ctrl-C stops it and removes {plane.workdir}",
            flush=True,
        )
        while not stop.wait(1.0):
            for component in plane.components.values():
                if not component.alive():
                    component.check_alive()
    except ClusterError as error:
        print(f"[kube-cluster] error: {error}", file=sys.stderr)
        return 1
    finally:
        plane.stop()
        args.kubeconfig.unlink(missing_ok=True)
        print("[kube-cluster] stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
