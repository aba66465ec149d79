"""Rendering over generated resources: whatever the spec accepts renders into objects
the API server accepts by name and label, and the routers read back the weight they were
given.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from tests.property.documents import hostile_documents, hostile_strings, valid_documents
from tests.unit.builders import BASE, merged
from torchrollout.errors import SpecError
from torchrollout.render import ingress_weight, plan, route_weight, virtual_service_weight
from torchrollout.render.routes import (
    render_http_route,
    render_ingresses,
    render_routes,
    render_virtual_service,
)
from torchrollout.render.scaling import render_autoscaler
from torchrollout.render.traffic import render_network_policy, render_pdb, render_services
from torchrollout.render.workload import render_archive_job, render_config_map, render_deployment
from torchrollout.spec import ModelDeployment, compute_revision, parse_model_deployment
from torchrollout.spec.status import ArchiveRecord, Phase

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
OLD_STABLE = "0123456789"


def is_label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return len(name) <= 63 and LABEL_NAME.fullmatch(name) is not None


def is_label_value(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 63 and LABEL_VALUE.fullmatch(value) is not None


def label_problems(labels: dict[str, Any], where: str) -> list[str]:
    return [
        f"{where}: label {key!r}: {value!r}"
        for key, value in labels.items()
        if not is_label_key(key) or not is_label_value(value)
    ]


def name_problems(obj: dict[str, Any]) -> list[str]:
    """Why `obj` would be refused by its names and labels: object and volume names are DNS
    labels (at most 63 characters), labels and selectors are valid label keys and values."""
    kind, meta = obj["kind"], obj["metadata"]
    problems = []
    if len(meta["name"]) > 63 or not DNS_LABEL.fullmatch(meta["name"]):
        problems.append(f"{kind} name {meta['name']!r}")
    if not DNS_LABEL.fullmatch(meta["namespace"]):
        problems.append(f"{kind} namespace {meta['namespace']!r}")
    problems += label_problems(meta.get("labels", {}), f"{kind} labels")
    spec = obj.get("spec", {})
    selector = spec.get("selector", {})
    problems += label_problems(selector.get("matchLabels", selector), f"{kind} selector")
    template = spec.get("template", {})
    pod_meta, pod = template.get("metadata", {}), template.get("spec", {})
    problems += label_problems(pod_meta.get("labels", {}), f"{kind} pods")
    problems += label_problems(pod.get("nodeSelector", {}), f"{kind} nodeSelector")
    problems += [
        f"{kind} pod annotation {k!r}"
        for k in pod_meta.get("annotations", {})
        if not is_label_key(k)
    ]
    for volume in pod.get("volumes", []):
        if len(volume["name"]) > 63 or not DNS_LABEL.fullmatch(volume["name"]):
            problems.append(f"{kind} volume {volume['name']!r}")
        claim = volume.get("persistentVolumeClaim", {}).get("claimName")
        if claim is not None and not DNS_SUBDOMAIN.fullmatch(claim):
            problems.append(f"{kind} claim {claim!r}")
    return problems


def with_status(md: ModelDeployment, phase: Phase, step: int | None) -> ModelDeployment:
    """`md` in `phase`: a first deploy, or a canary of its revision beside an older stable."""
    revision = compute_revision(md.spec)
    fields: dict[str, Any] = {"phase": phase}
    if phase in {Phase.PENDING, Phase.BUILDING, Phase.SUCCEEDED}:
        fields |= {"stable_revision": revision, "stable_version": md.spec.model.version}
    else:
        steps = md.spec.canary.steps
        fields |= {
            "stable_revision": OLD_STABLE,
            "stable_version": "0.9",
            "canary_revision": revision,
            "canary_version": md.spec.model.version,
            "step_index": None if step is None else min(step, len(steps) - 1),
        }
    return md.model_copy(update={"status": md.status.model_copy(update=fields)})


SHELLS = frozenset({"sh", "bash", "dash", "ash", "zsh", "/bin/sh", "/bin/bash", "/usr/bin/env"})


def shell_problems(obj: dict[str, Any]) -> list[str]:
    """Containers that would hand their command line to a shell (where a spec string with
    `;`, `$(...)` or a backquote would run as a command): every one must be exec form."""
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    problems = []
    for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        command = [*container.get("command", []), *container.get("args", [])]
        if not command or command[0] in SHELLS or "-c" in command[:2]:
            problems.append(f"{obj['kind']} {container['name']}: {command[:3]}")
    return problems


phases = st.sampled_from(list(Phase))
steps_indices = st.none() | st.integers(0, 25)
stable_replica_counts = st.integers(1, 50)
stores = st.none() | st.sampled_from(["s3://archives/models", "pvc://archives/models"])


def render_everything(
    md: ModelDeployment, *, stable_replicas: int, store: str | None
) -> list[dict[str, Any]]:
    """Every object the renderers make for `md`, through `plan` and each renderer alone."""
    revision = compute_revision(md.spec)
    archive = ArchiveRecord(revision=revision, sha256="ab" * 32, store=store or "s3://a/b")
    objects = plan(
        md, stable_replicas=stable_replicas, store=store, metrics_namespace="mon"
    ).objects
    objects += render_services(md, stable=OLD_STABLE, canary=revision)
    objects += render_routes(md, weight=50)
    objects += [
        render_pdb(md),
        render_network_policy(md, metrics_namespace="monitoring"),
        render_config_map(md),
        render_deployment(md, replicas=stable_replicas),
        render_deployment(md, replicas=0, archive=archive),
        render_archive_job(md, store=archive.store),
    ]
    autoscaler = render_autoscaler(md, stable=revision)
    return [*objects, *([autoscaler] if autoscaler is not None else [])]


@given(valid_documents(), phases, steps_indices, stable_replica_counts, stores)
@example(
    merged(BASE, {"spec": {"model": {"config": {"trained": date(2026, 1, 1)}}}}),
    Phase.PROGRESSING,
    0,
    1,
    None,
)
def test_valid_resources_render_objects_with_valid_names_and_labels(
    document: dict[str, Any],
    phase: Phase,
    step: int | None,
    stable_replicas: int,
    store: str | None,
) -> None:
    """Whatever the spec accepts, in whatever phase, renders without error into objects
    whose names, labels, selectors and volumes Kubernetes accepts."""
    md = with_status(parse_model_deployment(document), phase, step)
    objects = render_everything(md, stable_replicas=stable_replicas, store=store)
    assert [p for obj in objects for p in name_problems(obj)] == []
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert all(d["spec"]["replicas"] >= 0 for d in deployments)


@settings(max_examples=3 * settings.default.max_examples)
@given(hostile_documents(), phases, steps_indices)
def test_hostile_strings_the_spec_accepts_still_render_valid_objects(
    document: dict[str, Any], phase: Phase, step: int | None
) -> None:
    """A string the spec lets through (in any field) never yields an object the API server
    would refuse for its names or labels (the spec, not the cluster, says what is wrong),
    nor reaches a shell: every container runs its command in exec form."""
    try:
        md = parse_model_deployment(document)
    except SpecError:
        return
    # The namespace is the API server's: a resource read from the cluster has a valid one.
    assume(DNS_LABEL.fullmatch(md.metadata.namespace) is not None)
    objects = render_everything(with_status(md, phase, step), stable_replicas=2, store=None)
    assert [p for obj in objects for p in name_problems(obj)] == []
    assert [p for obj in objects for p in shell_problems(obj)] == []


def _at(path: str, value: Any) -> dict[str, Any]:
    """A document fragment holding `value` at a dotted `path`."""
    for part in reversed(path.split(".")):
        value = {part: value}
    return value


# Fields whose strings become names, labels, selectors or volumes of rendered objects, and
# how a string is written into each.
STRINGS_THAT_NAME_THINGS: list[tuple[str, Any]] = [
    ("metadata.name", lambda s: s),
    ("spec.model.version", lambda s: s),
    ("spec.model.source.uri", lambda s: f"pvc://{s}/model.pt"),
    ("spec.archive.store", lambda s: f"pvc://{s}/archives"),
    ("spec.runtime.podLabels", lambda s: {"team": s}),
    ("spec.runtime.podLabels", lambda s: {s: "risk"}),
    ("spec.runtime.nodeSelector", lambda s: {"pool": s}),
    ("spec.runtime.nodeSelector", lambda s: {s: "gpu"}),
    ("spec.runtime.podAnnotations", lambda s: {s: "x"}),
    ("spec.runtime.serviceAccountName", lambda s: s),
    ("spec.runtime.priorityClassName", lambda s: s),
]


@settings(max_examples=3 * settings.default.max_examples)
@given(st.sampled_from(STRINGS_THAT_NAME_THINGS), hostile_strings, phases, steps_indices)
@example(("spec.runtime.podLabels", lambda s: {"team": s}), "a b", Phase.PENDING, None)
@example(("spec.runtime.nodeSelector", lambda s: {s: "gpu"}), "-a", Phase.PENDING, None)
@example(("spec.runtime.podAnnotations", lambda s: {s: "x"}), "a b", Phase.PENDING, None)
@example(("spec.model.source.uri", lambda s: f"pvc://{s}/m"), "Claim_1", Phase.PENDING, None)
@example(("spec.archive.store", lambda s: f"pvc://{s}/a"), "a" * 70, Phase.PROGRESSING, 0)
@example(("spec.archive.store", lambda s: f"pvc://{s}/a"), "models.v1", Phase.PENDING, None)
def test_a_hostile_string_in_a_field_that_names_things_is_refused_or_renders_valid(
    field: tuple[str, Any], hostile: str, phase: Phase, step: int | None
) -> None:
    """Each field whose string ends up in an object's name, labels, selector or volumes
    either refuses a hostile string (a SpecError naming the field) or yields objects the
    API server accepts: a refusal comes from the spec, before any rollout begins."""
    path, write = field
    try:
        md = parse_model_deployment(merged(BASE, _at(path, write(hostile))))
    except SpecError as exc:
        assert any(p.path.startswith(path) for p in exc.problems), exc.problems
        return
    objects = render_everything(with_status(md, phase, step), stable_replicas=2, store=None)
    objects += render_everything(md, stable_replicas=1, store=md.spec.archive.store)
    assert [p for obj in objects for p in name_problems(obj)] == []


@given(valid_documents(), stable_replica_counts)
def test_rendering_is_deterministic(document: dict[str, Any], stable_replicas: int) -> None:
    """The same resource renders the same objects: the operator applies no change when
    nothing changed."""
    md = with_status(parse_model_deployment(document), Phase.PROGRESSING, 0)
    first = plan(md, stable_replicas=stable_replicas)
    again = plan(
        parse_model_deployment(document).model_copy(update={"status": md.status}),
        stable_replicas=stable_replicas,
    )
    assert first == again


@given(valid_documents(), st.integers(0, 100))
def test_each_router_reads_back_the_weight_it_was_given(
    document: dict[str, Any], weight: int
) -> None:
    """The weight readers see in a rendered route exactly the split it was rendered with,
    so a rollout is judged on the share it asked for."""
    md = parse_model_deployment(document)
    router = md.spec.traffic.router
    if router == "gateway-api":
        assert route_weight(render_http_route(md, weight=weight), md) == weight
    assert virtual_service_weight(render_virtual_service(md, weight=weight), md) == weight
    _, canary = render_ingresses(md, weight=weight)
    assert ingress_weight(canary) == weight
