"""The generated CRD as a real kube-apiserver enforces it.

Every invalid spec of the operator's own validation table (`tests.unit.test_spec.INVALID`)
is applied with the real kubectl and must be refused, on an error line that names the field
(or a field below it, as `spec.traffic.gatewayRef` for `spec.traffic`) and, where a CEL rule
of ours refuses it, says the table's phrase. Cases the CRD cannot express are listed here
with their reason and must be accepted, so the list cannot go stale. The valid base and the
bundled examples must be accepted, and what the server stores, with its defaults filled in,
must be the spec the operator would have read from the file.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.crd.conftest import CRD_NAME, ROOT
from tests.kube_cluster.cluster import ControlPlane
from tests.unit.builders import BASE, merged
from tests.unit.test_spec import INVALID
from torchrollout.spec import parse_model_deployment

pytestmark = [pytest.mark.kube]

# Invalid cases the CRD cannot express, each with why; the server must accept exactly these.
# Every case of the table is expressible today: the query variables are counted with CEL's
# findAll, the interval bounded with duration(), metadata.name matched by a root rule.
NOT_EXPRESSIBLE: dict[str, str] = {}

# Cases refused by an OpenAPI constraint (pattern, enum, required), in the API server's words:
# the phrase to find instead of the table's, which is the operator's own hint.
SERVER_WORDED: dict[str, str] = {
    "duration without unit": "should match",
    "unknown policy": 'Unsupported value: "ignore"',
    "unknown autoscaling engine": 'Unsupported value: "vpa"',
    "unknown notification type": 'Unsupported value: "sms"',
    "notification without secretRef": "Required value",
    "unknown notification event": 'Unsupported value: "x"',
    "bad sha256": "should match",
    "bad source scheme": "should match",
    "unknown handler": "should match",
    "version not a label value": "should match",
    "missing version": "Required value",
    "archive store scheme": "should match",
}

EXAMPLES = sorted((ROOT / "examples" / "deployments").glob("*.yaml"))


def _name(case: str) -> str:
    """A resource name of its own for each case, so every apply is a create."""
    return re.sub(r"[^a-z0-9]+", "-", case.lower()).strip("-")


def _resource(override: dict[str, Any], name: str, namespace: str) -> dict[str, Any]:
    """The valid base with `override` merged in, as a user would write it to apply."""
    document: dict[str, Any] = merged(BASE, {**override, "status": None})
    metadata = document["metadata"]
    metadata.pop("generation", None)
    metadata["namespace"] = namespace
    if "name" not in override.get("metadata", {}):
        metadata["name"] = name
    return document


def _apply(
    cluster: ControlPlane, document: dict[str, Any], *flags: str
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("apply", *flags, "-f", "-", input=yaml.safe_dump(document), check=False)


def _names_field(line: str, path: str) -> bool:
    """Whether `line` names the field `path` or one below it (`.child`, `[index]`)."""
    return re.search(rf"(?<![\w.\]]){re.escape(path)}(?!\w)", line) is not None


def _stored_as_operator_reads(stored: dict[str, Any], written: dict[str, Any]) -> None:
    """The object the server kept, defaults filled in, parses to the spec the file gives."""
    assert parse_model_deployment(stored).spec == parse_model_deployment(written).spec


def test_server_takes_the_crd_as_structural_without_warnings(
    kube_cluster: ControlPlane, crd_applied: subprocess.CompletedProcess[str]
) -> None:
    assert "Warning" not in crd_applied.stderr, crd_applied.stderr
    crd = json.loads(kube_cluster.kubectl("get", "crd", CRD_NAME, "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert "NonStructuralSchema" not in conditions, crd["status"]["conditions"]
    assert conditions == {"NamesAccepted": "True", "Established": "True"}


def test_every_listed_case_is_in_the_table() -> None:
    cases = {case for case, *_ in INVALID}
    assert set(NOT_EXPRESSIBLE) <= cases
    assert set(SERVER_WORDED) <= cases
    assert not set(NOT_EXPRESSIBLE) & set(SERVER_WORDED)


@pytest.mark.parametrize(
    ("case", "override", "path", "phrase"),
    [pytest.param(*row, id=row[0]) for row in INVALID],
)
def test_invalid_spec_is_refused_naming_the_field(
    kube_cluster: ControlPlane,
    namespace: str,
    case: str,
    override: dict[str, Any],
    path: str,
    phrase: str,
) -> None:
    applied = _apply(kube_cluster, _resource(override, _name(case), namespace))
    if case in NOT_EXPRESSIBLE:
        assert applied.returncode == 0, (
            f"the server now refuses {case!r}: drop it from NOT_EXPRESSIBLE\n{applied.stderr}"
        )
        return
    assert applied.returncode != 0, f"the server accepted {case!r}:\n{applied.stdout}"
    expected = SERVER_WORDED.get(case, phrase)
    lines = applied.stderr.splitlines()
    assert any(_names_field(line, path) and expected in line for line in lines), (
        f"no error line names {path} and says {expected!r}:\n{applied.stderr}"
    )


def test_valid_base_is_created_with_the_operators_defaults(
    kube_cluster: ControlPlane, namespace: str
) -> None:
    written = _resource({}, "valid-base", namespace)
    applied = _apply(kube_cluster, written)
    assert applied.returncode == 0, applied.stderr
    got = kube_cluster.kubectl("get", "md", "valid-base", "-n", namespace, "-o", "json")
    stored = json.loads(got.stdout)
    assert stored["spec"]["traffic"] == {"router": "replicas", "hostnames": [], "gateways": []}
    assert stored["spec"]["canary"]["analysis"]["onError"] == "rollback"
    _stored_as_operator_reads(stored, written)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_accepted_by_the_server(
    kube_cluster: ControlPlane, namespace: str, path: Path
) -> None:
    for written in filter(None, yaml.safe_load_all(path.read_text())):
        # Applied into the suite's namespace: the example's own may not exist here.
        written["metadata"]["namespace"] = namespace
        applied = _apply(kube_cluster, written, "--dry-run=server", "-o", "json")
        assert applied.returncode == 0, f"{path.name}: {applied.stderr}"
        _stored_as_operator_reads(json.loads(applied.stdout), written)
