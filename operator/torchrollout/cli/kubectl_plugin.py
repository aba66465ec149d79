"""`kubectl torchrollout`: read and steer ModelDeployments from kubectl.

Installed as the `kubectl-torchrollout` executable, which kubectl finds on PATH. The
steering commands only set what a user could set by hand: the promote, abort and retry
annotations (with a fresh timestamp, so each request is acted on once) and
`spec.paused`; the operator does the rest.

Exit codes: 0 done; 1 the ModelDeployment is not there or the API server refused the
request; 2 bad arguments, an unreadable kubeconfig or an API server that cannot be reached.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from torchrollout.cli import kube
from torchrollout.spec.document import ANNOTATION_PREFIX, GROUP, PLURAL, VERSION

app = typer.Typer(
    name="kubectl torchrollout",
    help="Read and steer torchrollout ModelDeployments.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Namespace = Annotated[
    str | None, typer.Option("--namespace", "-n", help="Defaults to the context's.")
]
Kubeconfig = Annotated[str | None, typer.Option("--kubeconfig", help="Defaults to $KUBECONFIG.")]
Name = Annotated[str, typer.Argument(help="The ModelDeployment.")]


class _Api:
    """The ModelDeployments API: a missing resource exits 1, an unreachable server 2."""

    def __init__(self, kubeconfig: str | None, namespace: str | None) -> None:
        from kubernetes import client, config
        from urllib3.exceptions import HTTPError

        path = kube.kubeconfig_path(kubeconfig)
        try:
            _, active = config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
            api_client = config.new_client_from_config(config_file=path)  # type: ignore[no-untyped-call]
        except (config.ConfigException, KeyError, TypeError, ValueError) as exc:
            kube.config_problem(path, exc)
        self.namespace = namespace or active.get("context", {}).get("namespace") or "default"
        self.custom = client.CustomObjectsApi(api_client)
        self._host = kube.host_of(api_client)
        self._exception = client.exceptions.ApiException
        self._unreachable = HTTPError

    def get(self, name: str) -> dict[str, Any]:
        try:
            found = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=kube.REQUEST_TIMEOUT
            )
        except self._exception as exc:
            typer.echo(f"error: modeldeployment {self.namespace}/{name}: {exc.reason}", err=True)
            raise typer.Exit(1) from exc
        except self._unreachable as exc:
            kube.unreachable(self._host, exc)
        assert isinstance(found, dict)
        return found

    def patch(self, name: str, patch: dict[str, Any]) -> None:
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                patch,
                _request_timeout=kube.REQUEST_TIMEOUT,
            )
        except self._exception as exc:
            typer.echo(f"error: modeldeployment {self.namespace}/{name}: {exc.reason}", err=True)
            raise typer.Exit(1) from exc
        except self._unreachable as exc:
            kube.unreachable(self._host, exc)


def _request(name: str, request: str, namespace: str | None, kubeconfig: str | None) -> None:
    api = _Api(kubeconfig, namespace)
    api.get(name)
    token = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    api.patch(name, {"metadata": {"annotations": {ANNOTATION_PREFIX + request: token}}})
    typer.echo(f"modeldeployment {api.namespace}/{name}: {request} requested")


Watch = Annotated[
    bool,
    typer.Option("--watch", "-w", help="Redraw whenever the status changes, until Ctrl-C."),
]
WATCH_PERIOD = 1.0  # seconds between reads while watching


@app.command()
def status(
    name: Name, namespace: Namespace = None, kubeconfig: Kubeconfig = None, watch: Watch = False
) -> None:
    """Phase, versions, weight, each check against its threshold, and conditions."""
    api = _Api(kubeconfig, namespace)
    if not watch:
        typer.echo(_status_text(api.namespace, name, api.get(name)))
        return
    shown = None
    try:
        while True:
            text = _status_text(api.namespace, name, api.get(name))
            if text != shown:
                if sys.stdout.isatty():
                    typer.echo("\x1b[H\x1b[2J", nl=False)  # clear the screen, as watch(1) does
                elif shown is not None:
                    typer.echo()
                typer.echo(text)
                shown = text
            time.sleep(WATCH_PERIOD)
    except KeyboardInterrupt:
        return


def _status_text(namespace: str, name: str, body: dict[str, Any]) -> str:
    """What `status` prints for one reading of the resource."""
    st = body.get("status") or {}
    steps = body.get("spec", {}).get("canary", {}).get("steps", [1, 10, 25, 50])
    step = st.get("stepIndex")
    mirror = body.get("spec", {}).get("canary", {}).get("mirror")
    lines = [
        f"Name:     {namespace}/{name}",
        f"Phase:    {st.get('phase', 'Pending')}",
        f"Stable:   {st.get('stableVersion') or '-'} ({st.get('stableRevision') or '-'})",
        f"Canary:   {st.get('canaryVersion') or '-'} ({st.get('canaryRevision') or '-'})",
        f"Weight:   {st.get('canaryWeight', 0)}% of traffic"
        + (
            f"  (step {step + 1}/{len(steps)} asks {steps[min(step, len(steps) - 1)]}%)"
            if step is not None and mirror is None
            else ""
        )
        + (
            f"  (step {step + 1}/{len(steps)}; mirrored: a copy of {mirror.get('percent', 100)}%"
            " of requests, answers discarded)"
            if step is not None and mirror is not None
            else ""
        ),
        f"Message:  {st.get('message', '')}",
    ]
    analysis = st.get("analysis") or {}
    if analysis.get("checks"):
        failed, inconclusive = analysis.get("failed", 0), analysis.get("inconclusive", 0)
        errors = analysis.get("consecutiveErrors", 0)
        lines.append(
            f"Analysis: failed {failed}, inconclusive {inconclusive}, errors in a row {errors}"
        )
        for check in analysis["checks"]:
            value = check.get("value")
            stable = check.get("stableValue")
            shown = "-" if value is None else f"{value:g}"
            baseline = "" if stable is None else f" (stable {stable:g})"
            lines.append(
                f"  {check['name']:<20} {check['verdict']:<13} {shown}{baseline}  "
                f"[{check.get('threshold', '')}] {check.get('message', '')}".rstrip()
            )
    for scaling in st.get("scaling", []):
        value = scaling.get("value")
        signal = (
            f"; {scaling.get('signal')} {value:g} (target {scaling.get('target', 0):g})"
            if value is not None
            else ""
        )
        lines.append(
            f"Replicas: {scaling['role']:<7} {scaling.get('ready', 0)}/{scaling.get('replicas', 0)}"
            f" ready, desired {scaling.get('desired', 0)}{signal}"
        )
    for condition in st.get("conditions", []):
        lines.append(
            f"Condition {condition['type']}={condition['status']} "
            f"{condition.get('reason', '')}: {condition.get('message', '')}".rstrip(": ")
        )
    return "\n".join(lines)


@app.command()
def history(name: Name, namespace: Namespace = None, kubeconfig: Kubeconfig = None) -> None:
    """Promotions and rollbacks, oldest first."""
    body = _Api(kubeconfig, namespace).get(name)
    typer.echo(f"{'VERSION':<16} {'REVISION':<12} {'OUTCOME':<12} {'AT':<22} REASON")
    for entry in (body.get("status") or {}).get("history", []):
        outcome, at = (
            ("promoted", entry["promotedAt"])
            if entry.get("promotedAt")
            else ("rolled back", entry.get("rolledBackAt", ""))
        )
        version, revision, reason = entry["version"], entry["revision"], entry.get("reason", "")
        typer.echo(f"{version:<16} {revision:<12} {outcome:<12} {at:<22} {reason}")


@app.command()
def promote(name: Name, namespace: Namespace = None, kubeconfig: Kubeconfig = None) -> None:
    """Promote the canary now, skipping its remaining steps."""
    _request(name, "promote", namespace, kubeconfig)


@app.command()
def abort(name: Name, namespace: Namespace = None, kubeconfig: Kubeconfig = None) -> None:
    """Roll the canary back now."""
    _request(name, "abort", namespace, kubeconfig)


@app.command()
def retry(name: Name, namespace: Namespace = None, kubeconfig: Kubeconfig = None) -> None:
    """Start a rolled-back canary again, or restart a paused canary's analysis."""
    _request(name, "retry", namespace, kubeconfig)


@app.command()
def pause(name: Name, namespace: Namespace = None, kubeconfig: Kubeconfig = None) -> None:
    """Hold the rollout where it is (spec.paused: true)."""
    api = _Api(kubeconfig, namespace)
    api.patch(name, {"spec": {"paused": True}})
    typer.echo(f"modeldeployment {api.namespace}/{name}: paused")


@app.command()
def resume(name: Name, namespace: Namespace = None, kubeconfig: Kubeconfig = None) -> None:
    """Resume a paused rollout (also one paused by its analysis policy)."""
    api = _Api(kubeconfig, namespace)
    body = api.get(name)
    api.patch(name, {"spec": {"paused": False}})
    if (body.get("status") or {}).get("pauseReason") in {"Inconclusive", "Error"}:
        _request(name, "retry", namespace, kubeconfig)
    typer.echo(f"modeldeployment {api.namespace}/{name}: resumed")


def main() -> None:
    """Console-script entry point (`kubectl-torchrollout`)."""
    app()
