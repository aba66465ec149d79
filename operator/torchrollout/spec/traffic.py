"""How traffic reaches the revisions: the router, and what requests the canary sees.

`TrafficSpec` picks the router and its objects' settings. `RequestMatch` and `MirrorSpec`
are the canary's request routing (`canary.match`, `canary.mirror`); which routers can do
them is checked where both are known (`ROUTING_RULES`, applied to the whole spec).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from torchrollout.spec.base import FieldValueError, SpecModel, cel, cel_rule

Router = Literal["replicas", "gateway-api", "istio", "nginx"]
# Routers that route by request, not by pod count.
REQUEST_ROUTERS = frozenset({"gateway-api", "istio", "nginx"})
MIRROR_ROUTERS = frozenset({"gateway-api", "istio"})
# RFC 7230 token characters, as Gateway API's header names; RE2-compatible.
HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,256}$"
# Cookie names go into the routers' regular expressions: letters, digits, _ and - only.
COOKIE_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ISTIO_GATEWAY_PATTERN = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
HOSTNAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class GatewayRef(SpecModel):
    """The Gateway an HTTPRoute attaches to."""

    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = Field(default=None, max_length=63)
    section_name: str | None = Field(default=None, max_length=253)


def _only_for(field: str, router: str, *, listed: bool = False) -> dict[str, str]:
    empty = f" || size(self.{field}) == 0" if listed else ""
    return cel_rule(
        f"!has(self.{field}){empty} || (has(self.router) && self.router == '{router}')",
        f"{field} is used only with router: {router}",
        field_path=f".{field}",
    )


# The API server also checks these rules against the schema's defaults, where nested
# defaults are not filled in: a rule may only rely on a defaulted field through has().
class TrafficSpec(
    SpecModel,
    json_schema_extra=cel(
        cel_rule(
            "!has(self.router) || self.router != 'gateway-api' || has(self.gatewayRef)",
            "router gateway-api needs gatewayRef: the Gateway the HTTPRoute attaches to",
            field_path=".gatewayRef",
            reason="FieldValueRequired",
        ),
        _only_for("gatewayRef", "gateway-api"),
        _only_for("gateways", "istio", listed=True),
        _only_for("ingressClassName", "nginx"),
        cel_rule(
            "!has(self.hostnames) || size(self.hostnames) == 0"
            " || (has(self.router) && self.router != 'replicas')",
            "hostnames are used only with router gateway-api, istio or nginx",
            field_path=".hostnames",
        ),
    ),
):
    """How traffic is split between the stable and the canary revision."""

    router: Router = "replicas"
    """replicas: weight is the share of ready pods behind one Service (works anywhere);
    gateway-api: a weighted HTTPRoute; istio: a VirtualService; nginx: a canary Ingress
    beside the primary one (ingress-nginx's canary annotations)."""
    gateway_ref: GatewayRef | None = None
    """gateway-api: the Gateway the HTTPRoute attaches to."""
    hostnames: list[Annotated[str, Field(pattern=HOSTNAME_PATTERN, max_length=253)]] = Field(
        default_factory=list, max_length=16
    )
    """Hostnames clients use: the HTTPRoute's hostnames, the VirtualService's hosts
    (default: the NAME Service) or the Ingress rules' hosts (default: any host)."""
    gateways: list[Annotated[str, Field(pattern=ISTIO_GATEWAY_PATTERN, max_length=317)]] = Field(
        default_factory=list, max_length=16
    )
    """istio: the Gateways (namespace/name) the VirtualService binds to; default: the mesh."""
    ingress_class_name: str | None = Field(default=None, min_length=1, max_length=253)
    """nginx: the IngressClass of ingress-nginx (default: nginx)."""

    @model_validator(mode="after")
    def _fields_of_the_router(self) -> Self:
        if self.router == "gateway-api" and self.gateway_ref is None:
            raise FieldValueError(
                "gatewayRef",
                "router gateway-api needs gatewayRef: the Gateway the HTTPRoute attaches to",
            )
        for field, value, router in (
            ("gatewayRef", self.gateway_ref, "gateway-api"),
            ("gateways", self.gateways, "istio"),
            ("ingressClassName", self.ingress_class_name, "nginx"),
        ):
            if value and self.router != router:
                raise FieldValueError(field, f"{field} is used only with router: {router}")
        if self.hostnames and self.router == "replicas":
            raise FieldValueError(
                "hostnames", "hostnames are used only with router gateway-api, istio or nginx"
            )
        return self

    @property
    def ingress_class(self) -> str:
        return self.ingress_class_name or "nginx"


class RequestMatch(
    SpecModel,
    json_schema_extra=cel(
        cel_rule(
            "(has(self.headers) && size(self.headers) > 0) || has(self.cookie)",
            "a match needs headers or a cookie",
        )
    ),
):
    """Requests that go to the canary whatever its weight: every header given, or the cookie."""

    headers: dict[str, Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        default_factory=dict,
        max_length=8,
        json_schema_extra=cel(
            cel_rule(
                f'self.all(k, k.matches(r"{HEADER_NAME_PATTERN}"))',
                "header names are HTTP tokens: letters, digits and !#$%&'*+.^_`|~-",
            )
        ),
    )
    """Header name to exact value; a request must carry them all."""
    cookie: str | None = Field(default=None, pattern=COOKIE_NAME_PATTERN)
    """A cookie name: a request whose cookie of that name is `always` goes to the canary
    (ingress-nginx's canary-by-cookie convention)."""

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.headers and self.cookie is None:
            raise ValueError("a match needs headers or a cookie")
        for name in self.headers:
            if not re.fullmatch(HEADER_NAME_PATTERN, name):
                raise ValueError(
                    f"header name {name!r} is not an HTTP token: use letters, digits and "
                    "!#$%&'*+.^_`|~-"
                )
        return self


class MirrorSpec(SpecModel):
    """A copy of live traffic for the canary; its answers are discarded."""

    percent: int = Field(default=100, ge=0, le=100)
    """Percent of requests copied to the canary (0 to 100)."""


# Rules on the whole spec: they read both canary (match, mirror) and traffic (router).
_ROUTER = "(has(self.traffic) && has(self.traffic.router) ? self.traffic.router : 'replicas')"
ROUTING_RULES = (
    cel_rule(
        f"!has(self.canary) || !has(self.canary.match) || size(self.canary.match) == 0"
        f" || {_ROUTER} != 'replicas'",
        "canary.match needs a router that routes by request: set traffic.router to "
        "gateway-api, istio or nginx",
        field_path=".canary.match",
    ),
    cel_rule(
        f"!has(self.canary) || !has(self.canary.mirror) || {_ROUTER} in ['gateway-api', 'istio']",
        "canary.mirror needs traffic.router gateway-api (RequestMirror) or istio (mirror)",
        field_path=".canary.mirror",
    ),
    cel_rule(
        f"!has(self.canary) || !has(self.canary.match) || {_ROUTER} != 'nginx'"
        " || (self.canary.match.all(m, (has(m.headers) ? size(m.headers) : 0)"
        " + (has(m.cookie) ? 1 : 0) == 1)"
        " && self.canary.match.filter(m, has(m.headers) && size(m.headers) > 0).size() <= 1"
        " && self.canary.match.filter(m, has(m.cookie)).size() <= 1)",
        "router nginx matches one header (canary-by-header) and one cookie (canary-by-cookie): "
        "give each canary.match entry a single header or a cookie, at most one of each",
        field_path=".canary.match",
    ),
)


def routing_problem(
    router: str, match: list[RequestMatch], mirror: MirrorSpec | None
) -> FieldValueError | None:
    """What the router cannot do of `canary.match` / `canary.mirror`; None when it can."""
    if match and router not in REQUEST_ROUTERS:
        return FieldValueError(
            "canary.match",
            "canary.match needs a router that routes by request: set traffic.router to "
            "gateway-api, istio or nginx",
        )
    if mirror is not None and router not in MIRROR_ROUTERS:
        return FieldValueError(
            "canary.mirror",
            "canary.mirror needs traffic.router gateway-api (RequestMirror) or istio (mirror)",
        )
    if router == "nginx" and match:
        single = all(len(m.headers) + (m.cookie is not None) == 1 for m in match)
        headers = sum(1 for m in match if m.headers)
        cookies = sum(1 for m in match if m.cookie is not None)
        if not single or headers > 1 or cookies > 1:
            return FieldValueError(
                "canary.match",
                "router nginx matches one header (canary-by-header) and one cookie "
                "(canary-by-cookie): give each canary.match entry a single header or a cookie, "
                "at most one of each",
            )
    return None
