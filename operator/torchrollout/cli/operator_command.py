"""`torchrollout operator`: run the operator, as `kopf run -m torchrollout.operator.handlers`.

Flag values, the kubeconfig and the API server are checked before kopf starts: a bad one
ends the command with a message and exit 2 instead of an operator retrying forever.
"""

from __future__ import annotations

import logging
import math
import os
import re
from typing import Annotated
from urllib.parse import urlsplit

import typer

from torchrollout.cli import kube
from torchrollout.operator.notifier import parse_default_target
from torchrollout.spec.resource import STORE_URI_PATTERN


def operator(
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Watch this namespace (repeat for more)."),
    ] = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Watch every namespace.")
    ] = False,
    prometheus_url: Annotated[
        str, typer.Option(help="Prometheus that scrapes the model pods.")
    ] = "http://prometheus-operated.monitoring:9090",
    metrics_port: Annotated[
        int, typer.Option(help="Port of the operator's /metrics; 0: off.", min=0, max=65535)
    ] = 8000,
    liveness: Annotated[
        str | None, typer.Option(help="Liveness endpoint, e.g. http://0.0.0.0:8080/healthz.")
    ] = None,
    peering: Annotated[
        str | None,
        typer.Option(help="Peering name for several replicas (needs kopf's peering CRDs)."),
    ] = None,
    leader_election_lease: Annotated[
        str | None,
        typer.Option(
            help="Run as one of several replicas: only the holder of this Lease "
            "(coordination.k8s.io) operates; the others wait to take over."
        ),
    ] = None,
    leader_election_namespace: Annotated[
        str | None, typer.Option(help="The Lease's namespace (the operator's own).")
    ] = None,
    kubeconfig: Annotated[
        str | None, typer.Option(help="Outside a cluster: the kubeconfig.")
    ] = None,
    archive_store: Annotated[
        str | None,
        typer.Option(
            help="Default archive store (s3://bucket/prefix or pvc://claim/path) for "
            "resources without spec.archive.store."
        ),
    ] = None,
    network_policy_metrics_namespace: Annotated[
        str | None,
        typer.Option(
            help="Give each ModelDeployment a NetworkPolicy: inference from anywhere, "
            "metrics only from this namespace (Prometheus'), nothing else."
        ),
    ] = None,
    default_notification: Annotated[
        list[str] | None,
        typer.Option(
            help="A notification target for resources without spec.notifications, "
            "TYPE:NAMESPACE/SECRET/KEY[:EVENT,...] (repeat for more); the Secret key holds "
            "the webhook URL."
        ),
    ] = None,
    resync_seconds: Annotated[
        float,
        typer.Option(
            help="How long a resource with nothing due waits before it is looked at again "
            "(drift of the objects it owns); its changes are seen at once, and the engine's "
            "call-backs (ticks, the fast watch) are exact."
        ),
    ] = 900.0,
    timer_seconds: Annotated[
        float,
        typer.Option(
            help="How often one sweep checks every resource, in memory, for a request "
            "annotation or a new spec the watch has not delivered."
        ),
    ] = 30.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the operator until interrupted."""
    if not namespace and not all_namespaces:
        raise typer.BadParameter("give --namespace NS (one or more) or --all-namespaces")
    if leader_election_lease and not leader_election_namespace:
        raise typer.BadParameter(
            "give the Lease's namespace", param_hint="--leader-election-namespace"
        )
    for target in default_notification or ():
        try:
            parse_default_target(target)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--default-notification") from exc
    os.environ["TORCHROLLOUT_DEFAULT_NOTIFICATIONS"] = "\n".join(default_notification or ())
    os.environ["TORCHROLLOUT_WATCH_NAMESPACES"] = "\n".join(namespace or ())
    _check_values(
        prometheus_url=prometheus_url,
        liveness=liveness,
        seconds={"--timer-seconds": timer_seconds, "--resync-seconds": resync_seconds},
    )
    # The kubernetes client reads KUBECONFIG once, at import: set everything first.
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig
    os.environ["TORCHROLLOUT_PROMETHEUS_URL"] = prometheus_url
    os.environ["TORCHROLLOUT_METRICS_PORT"] = str(metrics_port)
    os.environ["TORCHROLLOUT_TIMER_SECONDS"] = str(timer_seconds)
    os.environ["TORCHROLLOUT_RESYNC_SECONDS"] = str(resync_seconds)
    if archive_store:
        if not re.fullmatch(STORE_URI_PATTERN, archive_store):
            raise typer.BadParameter(
                f"{archive_store!r}: use s3://bucket/prefix or pvc://claim/path",
                param_hint="--archive-store",
            )
        os.environ["TORCHROLLOUT_ARCHIVE_STORE"] = archive_store
    if network_policy_metrics_namespace:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", network_policy_metrics_namespace):
            raise typer.BadParameter(
                f"{network_policy_metrics_namespace!r} is not a namespace name",
                param_hint="--network-policy-metrics-namespace",
            )
        os.environ["TORCHROLLOUT_NETWORK_POLICY_METRICS_NAMESPACE"] = (
            network_policy_metrics_namespace
        )

    _check_api_server(kubeconfig)
    import kopf

    import torchrollout.operator.handlers  # noqa: F401  (registers the handlers)

    kopf.configure(verbose=verbose)
    if not verbose:
        # kopf logs every handler call; with many resources that drowns what matters.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    elector = None
    if leader_election_lease and leader_election_namespace:
        from torchrollout.operator.leadership import ElectionSettings, api_client, lead

        election = ElectionSettings(leader_election_lease, leader_election_namespace)
        elector = lead(api_client(), election, liveness=liveness)
    kopf.run(
        clusterwide=all_namespaces,
        namespaces=namespace or (),
        standalone=peering is None,
        peering_name=peering,
        liveness_endpoint=liveness,
    )
    if elector is not None:
        elector.release()


def _check_values(*, prometheus_url: str, liveness: str | None, seconds: dict[str, float]) -> None:
    """BadParameter (exit 2) for a flag value the operator would fail on later."""
    for hint, value in seconds.items():
        if not math.isfinite(value) or value <= 0:
            raise typer.BadParameter(
                f"{value:g}: give a positive number of seconds", param_hint=hint
            )
    for hint, url in (("--prometheus-url", prometheus_url), ("--liveness", liveness)):
        if url is not None and not _is_http_url(url):
            raise typer.BadParameter(f"{url!r}: give an http:// or https:// URL", param_hint=hint)


def _is_http_url(url: str) -> bool:
    """Whether `url` is http(s) with a host and, if any, a valid port."""
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        return False
    return parts.scheme in {"http", "https"} and bool(parts.hostname) and port_ok


def _check_api_server(kubeconfig: str | None) -> None:
    """Exit 2 with a message unless the kubeconfig is usable and its API server answers.

    In a pod the ServiceAccount is used, as the handlers do; outside, --kubeconfig,
    $KUBECONFIG or ~/.kube/config.
    """
    from kubernetes import client, config
    from urllib3.exceptions import HTTPError

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        path = kube.kubeconfig_path(kubeconfig)
        try:
            config.load_kube_config(config_file=path)  # type: ignore[no-untyped-call]
        except (config.ConfigException, KeyError, TypeError, ValueError) as exc:
            kube.config_problem(path, exc)
    api_client = client.ApiClient()
    try:
        client.VersionApi(api_client).get_code(_request_timeout=kube.REQUEST_TIMEOUT)
    except client.exceptions.ApiException as exc:
        # It answered: only refused credentials are worth stopping for here.
        if exc.status == 401:
            kube.fail(
                f"the API server at {kube.host_of(api_client)} refused the kubeconfig's "
                "credentials (401 Unauthorized)"
            )
    except HTTPError as exc:
        kube.unreachable(kube.host_of(api_client), exc)
