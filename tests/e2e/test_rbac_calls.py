"""The chart's RBAC is no wider than the calls the operator makes.

The operator runs as a release's ServiceAccount, with the chart's watch and NetworkPolicy
arguments, in both install modes (a ClusterRole for all namespaces; a Role per watched
namespace), through a rollout that takes its main paths: a first deploy with a webhook
notification (its Secret), an HPA and a NetworkPolicy; children edited by hand and put back;
a canary superseded by a good one that is promoted; autoscaling removed; a bad canary rolled
back; the resource deleted. The API server's audit log (`ControlPlane.audit_log`) records
every request of that account; the rights its Roles and ClusterRoles grant are read back
from the API server. Every call must have been granted, and every granted right must have
been used, or be named in `OTHER_PATHS` with the path that uses it and the test that takes
that path. Both lists are printed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.conftest import (
    BAD,
    CHART,
    GOOD,
    Helm,
    Receiver,
    create_namespace,
    deploy_stable,
    deployments,
    dump,
    get_md,
    model_deployment,
    phase_is,
    play,
    revision_of,
    start_operator,
)
from tests.kube_cluster.cluster import ControlPlane
from tests.kube_emulator.fixtures import Kubectl, eventually
from tests.support.exporter import Exporter
from torchrollout.local.prometheus import PrometheusServer, log_tail
from torchrollout.operator.access import Right

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

OWN_OPERATOR_PREFIX = "own-op-"  # the session's operator leaves these namespaces alone


def _calls(verbs: str, group: str, resource: str, path: str) -> dict[Right, str]:
    return {Right(v, group, resource): path for v in verbs.split()}


E2E, UNIT = "tests/e2e/", "tests/unit/"
ARCHIVES = (
    f"{E2E}test_archives.py::"
    "test_one_build_per_revision_pods_verify_its_digest_and_a_bad_build_rolls_back"
)
GATEWAY = f"{E2E}test_rollouts.py::test_gateway_api_router_sets_and_reads_httproute_weights"
ISTIO = (
    f"{E2E}test_routers.py::test_istio_says_what_to_install_then_routes_by_weight_header_and_mirror"
)
NGINX = f"{E2E}test_routers.py::test_nginx_needs_its_ingress_class_then_weights_the_canary_ingress"
KEDA = (
    f"{E2E}test_autoscalers.py::"
    "test_keda_says_what_to_install_then_its_scaled_object_follows_the_stable"
)
WAITING = (
    f"{E2E}test_waiting.py::test_pods_that_cannot_start_are_named_and_rolled_back_at_the_deadline"
)
ROUTER_CHANGED = (
    f"{UNIT}test_routers.py::test_a_changed_router_deletes_the_previous_routers_objects"
)
ENGINE_CHANGED = (
    f"{UNIT}test_autoscalers.py::test_a_changed_engine_deletes_the_previous_engines_object"
)
NAMED = f"{E2E}test_rbac_calls.py[namespaced], {E2E}conftest.py::operator_process"
ROUTES = "gateway.networking.k8s.io"
NETWORKING = "networking.k8s.io"

# Rights this rollout does not use, each with the path that does and the test taking it.
# Keep it small: a right that no path uses belongs out of the chart, not in here.
OTHER_PATHS: dict[Right, str] = {
    **_calls("get create list delete", "batch", "jobs", f"archive store: {ARCHIVES}"),
    # Pods are listed while a revision's pods are not ready (why: PodsReady) and for a build
    # Job's result; kwok makes pods ready before a look finds them waiting.
    **_calls("list", "", "pods", f"pods that do not start: {WAITING}; builds: {ARCHIVES}"),
    **_calls("get create patch", ROUTES, "httproutes", f"gateway-api router: {GATEWAY}"),
    **_calls("delete", ROUTES, "httproutes", f"router changed: {ROUTER_CHANGED}"),
    **_calls("get create patch", "networking.istio.io", "virtualservices", f"istio: {ISTIO}"),
    **_calls(
        "delete", "networking.istio.io", "virtualservices", f"router changed: {ROUTER_CHANGED}"
    ),
    **_calls("get create patch", NETWORKING, "ingresses", f"nginx router: {NGINX}"),
    **_calls("delete", NETWORKING, "ingresses", f"router changed: {ROUTER_CHANGED}"),
    **_calls("get", NETWORKING, "ingressclasses", f"nginx router: {NGINX}"),
    **_calls("get create patch", "keda.sh", "scaledobjects", f"keda engine: {KEDA}"),
    **_calls("delete", "keda.sh", "scaledobjects", f"engine changed: {ENGINE_CHANGED}"),
    # kopf lists and watches namespaces unless it serves all of them (--all-namespaces).
    **_calls("list watch", "", "namespaces", f"--namespace given: {NAMED}"),
}


def granted_rules(
    api_client: client.ApiClient, namespace: str, account: str
) -> list[tuple[str, Any]]:
    """(where, rule) of every Role and ClusterRole bound to the ServiceAccount."""
    rbac = client.RbacAuthorizationV1Api(api_client)

    def binds(subjects: Iterable[Any] | None) -> bool:
        return any(
            s.kind == "ServiceAccount" and s.name == account and s.namespace == namespace
            for s in subjects or []
        )

    found: list[tuple[str, Any]] = []
    for binding in rbac.list_cluster_role_binding().items:
        if binds(binding.subjects):
            role = rbac.read_cluster_role(binding.role_ref.name)
            found += [(f"ClusterRole {role.metadata.name}", r) for r in role.rules or []]
    for binding in rbac.list_role_binding_for_all_namespaces().items:
        if not binds(binding.subjects):
            continue
        where = binding.metadata.namespace
        if binding.role_ref.kind == "ClusterRole":
            role = rbac.read_cluster_role(binding.role_ref.name)
        else:
            role = rbac.read_namespaced_role(binding.role_ref.name, where)
        label = f"{binding.role_ref.kind} {where}/{role.metadata.name}"
        found += [(label, r) for r in role.rules or []]
    return found


def expand(rules: list[tuple[str, Any]]) -> dict[Right, list[str]]:
    """Each granted (verb, group, resource, subresource), with where it comes from."""
    granted: dict[Right, list[str]] = {}
    for where, rule in rules:
        assert not rule.non_resource_urls, f"{where} grants non-resource URLs: {rule}"
        wide = [
            x for x in (*rule.verbs, *rule.api_groups, *rule.resources) if "*" in x
        ]  # a wildcard grants what no list can show
        assert not wide, f"{where} grants a wildcard {wide}: {rule}"
        names = f" (only {', '.join(rule.resource_names)})" if rule.resource_names else ""
        for group in rule.api_groups:
            for resource in rule.resources:
                base, _, sub = resource.partition("/")
                for verb in rule.verbs:
                    granted.setdefault(Right(verb, group, base, sub), []).append(where + names)
    return granted


def used_calls(
    events: list[dict[str, Any]], namespace: str
) -> tuple[dict[Right, int], list[str], list[str], int]:
    """From the account's audit events: calls in `namespace` or cluster-wide (with counts),
    non-resource requests, refused requests, and how many calls were elsewhere."""
    complete: dict[str, dict[str, Any]] = {}
    for event in events:  # a watch shows at ResponseStarted, then at ResponseComplete
        complete[event["auditID"]] = event
    used: dict[Right, int] = {}
    plain: set[str] = set()
    refused: list[str] = []
    elsewhere = 0
    for event in complete.values():
        code = (event.get("responseStatus") or {}).get("code", 0)
        ref = event.get("objectRef")
        decision = (event.get("annotations") or {}).get("authorization.k8s.io/decision")
        if code == 403 and decision != "allow":
            # Refused by RBAC. A 403 after RBAC allowed it is admission's, such as a create in
            # another test's namespace that is being deleted (an all-namespaces operator sees
            # those): not a missing right.
            refused.append(f"{event['verb']} {event['requestURI']}: 403")
        if ref is None:
            plain.add(f"{event['verb']} {event['requestURI'].split('?')[0]}")
            continue
        if ref.get("namespace") not in (None, namespace):
            elsewhere += 1  # an all-namespaces operator sees other tests' leftovers
            continue
        call = Right(
            event["verb"], ref.get("apiGroup", ""), ref["resource"], ref.get("subresource", "")
        )
        used[call] = used.get(call, 0) + 1
    return used, sorted(plain), refused, elsewhere


MODES = {
    "all-namespaces": [],
    "namespaced": ["--set", "watch.allNamespaces=false", "--set", "watch.namespaces={NS}"],
}
# The chart Deployment's arguments that this test gives its operator process too.
CHART_ARGS = ("--all-namespaces", "--namespace=", "--network-policy-metrics-namespace=")


def absent(read: Callable[[], Any]) -> bool:
    try:
        read()
    except client.ApiException as exc:
        return exc.status == 404
    return False


def roll_out(
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    exporter: Exporter,
    namespace: str,
) -> None:
    """A first deploy (a webhook notification, an HPA, a NetworkPolicy), its children edited
    by hand and put back, a canary superseded by a good one that is promoted, autoscaling
    removed, a bad canary rolled back, the resource deleted."""
    core, policy = client.CoreV1Api(api_client), client.PolicyV1Api(api_client)
    networking, hpas = client.NetworkingV1Api(api_client), client.AutoscalingV2Api(api_client)
    notify = [{"type": "webhook", "secretRef": {"name": "hooks", "key": "url"}}]
    hpa = {"engine": "hpa", "minReplicas": 1, "maxReplicas": 3}
    first = deploy_stable(
        kubectl, md_api, exporter, namespace, notifications=notify, autoscaling=hpa
    )

    config = f"fraud-{revision_of(first)}"
    kept = core.read_namespaced_config_map(config, namespace).data["model-config.json"]
    edited = {"data": {"model-config.json": '{"edited": true}'}}
    core.patch_namespaced_config_map(config, namespace, edited)
    policy.patch_namespaced_pod_disruption_budget(
        "fraud", namespace, {"spec": {"maxUnavailable": 3}}
    )
    networking.patch_namespaced_network_policy("fraud", namespace, {"spec": {"ingress": []}})

    def put_back() -> bool:
        data = core.read_namespaced_config_map(config, namespace).data
        budget = policy.read_namespaced_pod_disruption_budget("fraud", namespace).spec
        network = networking.read_namespaced_network_policy("fraud", namespace).spec
        return bool(
            data["model-config.json"] == kept
            and budget.max_unavailable == 1
            and len(network.ingress or []) == 2
        )

    # A settled resource is looked at again after --resync-seconds (15 min); an edit of it
    # brings that forward.
    kubectl("annotate", "md", "fraud", "-n", namespace, "example.com/touched=1")
    eventually(put_back, timeout=20)

    slow = model_deployment(
        namespace, "2.0.0", canary={"interval": "1h"}, notifications=notify, autoscaling=hpa
    )
    kubectl.apply(dump(slow))
    eventually(lambda: phase_is(md_api, namespace, "Progressing", stepIndex=0), timeout=20)
    good = model_deployment(namespace, "3.0.0", notifications=notify, autoscaling=hpa)
    play(exporter, namespace, good, GOOD)
    kubectl.apply(dump(good))
    eventually(lambda: phase_is(md_api, namespace, "Succeeded", stableVersion="3.0.0"), timeout=60)
    assert f"fraud-{revision_of(slow)}" not in deployments(api_client, namespace)  # superseded

    kubectl.apply(dump(model_deployment(namespace, "3.0.0", notifications=notify)))
    eventually(
        lambda: absent(lambda: hpas.read_namespaced_horizontal_pod_autoscaler("fraud", namespace)),
        timeout=20,
    )
    bad = model_deployment(namespace, "4.0.0", notifications=notify)
    play(exporter, namespace, bad, BAD)
    kubectl.apply(dump(bad))
    eventually(lambda: phase_is(md_api, namespace, "RolledBack"), timeout=60)

    kubectl("delete", "md", "fraud", "-n", namespace, "--wait=false")
    eventually(lambda: absent(lambda: get_md(md_api, namespace)), timeout=30)  # finalizer off


@pytest.mark.parametrize("mode", list(MODES))
def test_every_call_is_granted_and_every_grant_is_used(
    mode: str,
    kube_cluster: ControlPlane,
    api_client: client.ApiClient,
    installed: str,  # the CRDs installed and served
    helm: Helm,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    exporter: Exporter,
    prometheus: PrometheusServer,
    receiver: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    namespace = release = f"{OWN_OPERATOR_PREFIX}{uuid.uuid4().hex[:6]}"
    account = f"system:serviceaccount:{namespace}:{release}"
    core = client.CoreV1Api(api_client)
    create_namespace(api_client, namespace)
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "hooks"}, "stringData": {"url": receiver.url}}
    )
    values = [v.replace("NS", namespace) for v in MODES[mode]]
    values += ["--set", "networkPolicy.enabled=true"]
    try:
        helm("install", release, str(CHART), "-n", namespace, "--wait", "--timeout=2m", *values)
        chart_args = (
            client.AppsV1Api(api_client)
            .read_namespaced_deployment(release, namespace)
            .spec.template.spec.containers[0]
            .args
        )
        args = [a for a in chart_args if a.startswith(CHART_ARGS)]
        workdir = tmp_path_factory.mktemp(f"rbac-{mode}")
        token = kube_cluster.token_kubeconfig(release, namespace, workdir / "kubeconfig")
        running = start_operator(token, prometheus, workdir, args=args, name=f"rbac-{mode}")
        try:
            roll_out(kubectl, md_api, api_client, exporter, namespace)
            eventually(lambda: "rolledBack" in receiver.events(), timeout=15)
        except BaseException:
            print(f"operator log (last lines):\n{log_tail(running.log, 60)}")
            raise
        finally:
            running.stop()  # its watches end: the audit log has every request complete
        granted = expand(granted_rules(api_client, namespace, release))
    finally:
        helm("uninstall", release, "-n", namespace, "--wait", "--timeout=2m", check=False)
        core.delete_namespace(namespace)
    used, plain, refused, elsewhere = used_calls(kube_cluster.audit_events(account), namespace)

    print(f"\n== {mode}: the operator ran with {' '.join(args)} as {account}")
    print(f"granted ({len(granted)}):")
    for call in sorted(granted):
        mark = "used" if call in used else "other path" if call in OTHER_PATHS else "UNUSED"
        print(f"  {mark:10} {call}  <- {'; '.join(granted[call])}")
    print(f"used ({len(used)}; {elsewhere} more calls in other namespaces):")
    for call in sorted(used):
        print(f"  {used[call]:5}x {call}{'' if call in granted else '  (not from the chart)'}")
    print(f"non-resource requests: {', '.join(plain) or 'none'}")

    assert used, f"the audit log has no call of {account}: is the audit policy in place?"
    assert refused == [], f"calls of {account} refused:\n" + "\n".join(refused)
    unexplained = [str(c) for c in sorted(granted) if c not in used and c not in OTHER_PATHS]
    assert unexplained == [], (
        f"granted to {account} ({mode}) but neither used by this rollout nor named in "
        f"OTHER_PATHS: {', '.join(unexplained)}"
    )
