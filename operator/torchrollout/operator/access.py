"""What the operator may do where it watches, asked of the API server at start-up.

A namespaced install grants the operator Roles in its watched namespaces only. Started with
a namespace its Role does not cover (a `--namespace` added by hand, a chart upgrade that
dropped one), every call there is refused; `missing_rights` asks the API server
(SelfSubjectAccessReview) for each right the operator needs in each watched namespace, and
`refusal_message` says which are missing and how to grant them, once, at start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Right:
    """One verb on one resource (group "" for the core API)."""

    verb: str
    group: str
    resource: str
    subresource: str = ""

    def __str__(self) -> str:
        name = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {name}{'/' + self.subresource if self.subresource else ''}"


# The calls every resource needs; optional kinds (routes, autoscalers, policies) are
# reported where they are used.
NEEDED: tuple[Right, ...] = (
    Right("list", "torchrollout.io", "modeldeployments"),
    Right("watch", "torchrollout.io", "modeldeployments"),
    Right("patch", "torchrollout.io", "modeldeployments"),
    Right("patch", "torchrollout.io", "modeldeployments", "status"),
    Right("create", "apps", "deployments"),
    Right("patch", "apps", "deployments"),
    Right("create", "", "services"),
    Right("create", "", "events"),
)


def watched_names(namespaces: Iterable[str]) -> list[str]:
    """The literal namespace names among `--namespace` values (globs and `!` exclusions are
    patterns over whatever exists, so there is nothing to check ahead for them)."""
    return [n for n in namespaces if n and not any(c in n for c in "*?[!")]


def missing_rights(
    allowed: Callable[[str, Right], bool], namespaces: Iterable[str]
) -> dict[str, list[Right]]:
    """Per namespace, the needed rights the API server refuses; namespaces with all of them
    are left out."""
    missing: dict[str, list[Right]] = {}
    for namespace in namespaces:
        refused = [right for right in NEEDED if not allowed(namespace, right)]
        if refused:
            missing[namespace] = refused
    return missing


def refusal_message(namespace: str, refused: list[Right]) -> str:
    """One log line: what is refused in `namespace`, and the two ways to fix it."""
    listed = ", ".join(str(right) for right in refused)
    return (
        f"namespace {namespace}: the operator's account may not {listed}; ModelDeployments "
        f"there will not be handled. Grant the chart's Role there (add {namespace} to "
        f"watch.namespaces) or stop watching it (drop --namespace={namespace})"
    )
