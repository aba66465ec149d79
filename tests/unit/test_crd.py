"""The generated CRD: equal to the committed file, structural, and complete for kubectl."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from torchrollout.spec.crd import render_crd

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "crds" / "torchrollout.io_modeldeployments.yaml"


def _nodes(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        found += _nodes(sub, f"{path}.{name}")
    if "items" in schema:
        found += _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        found += _nodes(schema["additionalProperties"], f"{path}{{}}")
    return found


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = render_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_committed_crd_equals_the_generated_one() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "torchrollout", "crd"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert yaml.safe_load(printed) == render_crd()
    assert COMMITTED.read_text() == printed, "crds/ is stale: run `make crds`"


def test_schema_is_structural() -> None:
    for path, node in _nodes(_schema()):
        assert "$ref" not in node and "anyOf" not in node and "$defs" not in node, path
        free = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
            "x-kubernetes-int-or-string"
        )
        assert "type" in node or free, f"{path} has no type"
        if node.get("type") == "object" and "properties" not in node and path != ".metadata":
            assert "additionalProperties" in node or free, path
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True, path


def test_validation_mirrors_pydantic_where_openapi_can() -> None:
    spec = _schema()["properties"]["spec"]["properties"]
    steps = spec["canary"]["properties"]["steps"]
    assert steps["items"] == {
        "type": "integer",
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 100,
        "exclusiveMaximum": True,
    }
    assert steps["x-kubernetes-validations"][0]["message"] == "steps must increase strictly"
    check = spec["canary"]["properties"]["analysis"]["properties"]["metrics"]["items"]
    rules = {r["message"] for r in check["x-kubernetes-validations"]}
    assert "a check sets exactly one of template or query" in rules
    assert check["properties"]["template"]["enum"] == [
        "accuracy",
        "latency-p99",
        "latency-mean",
        "error-rate",
        "mean-absolute-error",
        "latency-distribution",
    ]
    sha = spec["model"]["properties"]["source"]["properties"]["sha256"]
    assert sha["pattern"] == "^[a-f0-9]{64}$"
    assert spec["model"]["required"] == ["version", "source", "handler"]
    assert spec["model"]["properties"]["config"]["x-kubernetes-preserve-unknown-fields"] is True
    assert spec["canary"]["properties"]["analysis"]["properties"]["failureLimit"]["default"] == 2


def test_names_columns_and_subresources_for_kubectl() -> None:
    crd = render_crd()
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["mdep", "md"]
    assert (crd["spec"]["group"], crd["spec"]["versions"][0]["name"]) == (
        "torchrollout.io",
        "v1alpha1",
    )
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c]
    assert columns == ["Phase", "Stable", "Canary", "Weight", "Age"]
    status = _schema()["properties"]["status"]["properties"]
    assert "Progressing" in status["phase"]["enum"]
    assert status["canaryWeight"]["type"] == "integer"


def test_the_printed_crd_has_no_yaml_aliases() -> None:
    """A schema two fields share is printed twice, not as an anchor and an alias."""
    assert "&id" not in COMMITTED.read_text()
