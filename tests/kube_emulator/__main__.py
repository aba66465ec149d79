"""Run the Kubernetes API emulator as a server: ``python -m tests.kube_emulator``.

    python -m tests.kube_emulator --port 6443 --kubeconfig /tmp/emulator.kubeconfig
    kubectl --kubeconfig /tmp/emulator.kubeconfig get namespaces

This is how anyone tries the operator with kubectl without a cluster; the e2e fixtures also
start it this way when they want the emulator in a separate process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from pathlib import Path

from .cluster import EmulatorConfig
from .server import serve_forever


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.kube_emulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig for this server here")
    parser.add_argument(
        "--history-size",
        type=int,
        default=10_000,
        help="watch events kept before older resourceVersions get 410 Gone",
    )
    parser.add_argument(
        "--bookmark-interval",
        type=float,
        default=5.0,
        help="seconds between BOOKMARK events on idle watches",
    )
    parser.add_argument(
        "--deployment-delay",
        type=float,
        default=0.3,
        help="seconds before the fake Deployment controller reports readiness",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = EmulatorConfig(
        history_size=args.history_size,
        bookmark_interval=args.bookmark_interval,
        deployment_delay=args.deployment_delay,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(args.host, args.port, args.kubeconfig, config))


if __name__ == "__main__":
    main()
