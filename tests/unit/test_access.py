"""The start-up check of the operator's rights in the namespaces it watches."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_install import chart_objects
from torchrollout.operator.access import (
    NEEDED,
    Right,
    missing_rights,
    refusal_message,
    watched_names,
)


@pytest.mark.parametrize(
    ("given", "checked"),
    [
        (["risk"], ["risk"]),
        (["risk", "ml"], ["risk", "ml"]),
        (["!own-op-*"], []),
        (["team-*", "risk"], ["risk"]),
        (["", "ml?"], []),
    ],
)
def test_only_literal_namespaces_are_checked(given: list[str], checked: list[str]) -> None:
    assert watched_names(given) == checked


def test_refused_rights_are_listed_per_namespace_and_granted_namespaces_left_out() -> None:
    def allowed(namespace: str, right: Right) -> bool:
        return namespace == "risk" or right.group != "torchrollout.io"

    missing = missing_rights(allowed, ["risk", "other"])
    assert list(missing) == ["other"]
    assert [str(r) for r in missing["other"]] == [
        "list modeldeployments.torchrollout.io",
        "watch modeldeployments.torchrollout.io",
        "patch modeldeployments.torchrollout.io",
        "patch modeldeployments.torchrollout.io/status",
    ]


def test_the_message_names_the_namespace_and_both_fixes() -> None:
    message = refusal_message("other", [Right("create", "apps", "deployments")])
    assert message.startswith("namespace other: the operator's account may not create")
    assert "deployments.apps" in message
    assert "add other to watch.namespaces" in message
    assert "drop --namespace=other" in message


def _grants(rules: list[dict[str, Any]], right: Right) -> bool:
    name = f"{right.resource}/{right.subresource}" if right.subresource else right.resource
    return any(
        right.group in rule.get("apiGroups", [])
        and name in rule.get("resources", [])
        and right.verb in rule.get("verbs", [])
        for rule in rules
    )


def test_the_chart_role_of_a_namespaced_install_grants_every_needed_right() -> None:
    objects = chart_objects({"watch": {"allNamespaces": False, "namespaces": ["risk"]}})
    role = next(o for o in objects if o["kind"] == "Role" and o["metadata"]["namespace"] == "risk")
    assert [str(r) for r in NEEDED if not _grants(role["rules"], r)] == []
