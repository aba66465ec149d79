"""`KubernetesCluster`: the ClusterApi over the kubernetes client's dynamic client.

The dynamic client finds each kind through the API server's discovery, so built-in kinds,
our CRD and Gateway API's HTTPRoute are handled alike. Errors are translated at this
boundary: 404 on a kind becomes KindNotInstalled; 409 and 5xx are transient; other 4xx
are not.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from kubernetes.client import (
    ApiClient,
    AuthorizationV1Api,
    V1ResourceAttributes,
    V1SelfSubjectAccessReview,
    V1SelfSubjectAccessReviewSpec,
)
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import (
    DynamicApiError,
    NotFoundError,
    ResourceNotFoundError,
)
from kubernetes.dynamic.resource import Resource

from torchrollout.operator.access import Right
from torchrollout.operator.cluster import ClusterError, KindNotInstalled
from torchrollout.spec.document import API_VERSION, KIND

MERGE_PATCH = "application/merge-patch+json"
MISSING_RECHECK = 1.0  # seconds before a kind the API server did not serve is asked again


def _translate(exc: Exception, what: str) -> ClusterError:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", "") or str(exc)
    transient = status is None or status in {409, 429} or status >= 500
    message = f"{what}: HTTP {status} {reason}".strip()
    said = _status_message(getattr(exc, "body", None))
    if said:  # what the API server says is wrong: a field, a quota, a full IP range
        message = f"{message}: {said}"
    return ClusterError(message, status=status, transient=transient)


def _body(response: Any) -> dict[str, Any]:
    """An answer's JSON object, parsed once: the dynamic client's own wrapping of every
    field in an object, undone again by `to_dict()`, costs more than the request itself."""
    found = json.loads(response.data)
    if not isinstance(found, dict):
        raise ClusterError(f"the API server answered {type(found).__name__}, not an object")
    return found


def _status_message(body: object) -> str:
    """The `message` of the Status object an API server answers an error with, if any."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if not isinstance(body, str):
        return ""
    try:
        said = json.loads(body)
    except ValueError:
        return ""
    message = said.get("message") if isinstance(said, dict) else None
    return message if isinstance(message, str) else ""


class KubernetesCluster:
    """A ClusterApi on an `ApiClient` (from a kubeconfig or in-cluster config)."""

    def __init__(self, api_client: ApiClient) -> None:
        self._client = DynamicClient(api_client)  # type: ignore[no-untyped-call]
        self._resources: dict[tuple[str, str], Resource] = {}
        # Kinds the API server did not serve, and when that was found: asked again only
        # after MISSING_RECHECK, so a missing CRD costs no discovery on every call.
        self._missing: dict[tuple[str, str], float] = {}
        # The discovery cache is shared by every reconcile thread, and invalidating it while
        # another thread reads it breaks that read (KeyError inside the client): one at a time.
        self._discovery = threading.Lock()

    def _resource(self, api_version: str, kind: str) -> Resource:
        key = (api_version, kind)
        found = self._resources.get(key)
        if found is not None:
            return found
        with self._discovery:
            found = self._resources.get(key)
            if found is not None:
                return found
            missing = self._missing.get(key)
            if missing is None or time.monotonic() - missing >= MISSING_RECHECK:
                found = self._discover(api_version, kind)
            if found is None:
                self._missing.setdefault(key, time.monotonic())
                raise KindNotInstalled(
                    f"the API server does not serve {kind} ({api_version})",
                    status=404,
                    transient=False,
                )
            self._missing.pop(key, None)
            self._resources[key] = found
            return found

    def _discover(self, api_version: str, kind: str) -> Resource | None:
        """The kind from discovery, looked up afresh if the cache does not have it (CRDs
        installed after start-up); None when the API server does not serve it."""
        for fresh in (False, True):
            if fresh:
                self._client.resources.invalidate_cache()
            try:
                found: Resource = self._client.resources.get(api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                continue
            return found
        return None

    def _forget(self, api_version: str, kind: str) -> None:
        """A kind that answered 404 to a create: its CRD may have been removed since."""
        with self._discovery:
            self._resources.pop((api_version, kind), None)
            self._client.resources.invalidate_cache()

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = self._resource(api_version, kind).get(
                name=name, namespace=namespace, serialize=False
            )
        except NotFoundError:
            return None
        except (DynamicApiError, ApiException) as exc:
            raise _translate(exc, f"get {kind} {namespace}/{name}") from exc
        return _body(found)

    def list(
        self, api_version: str, kind: str, namespace: str, labels: dict[str, str]
    ) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        try:
            found = self._resource(api_version, kind).get(
                namespace=namespace, label_selector=selector, serialize=False
            )
        except (DynamicApiError, ApiException) as exc:
            raise _translate(exc, f"list {kind} in {namespace}") from exc
        items: list[dict[str, Any]] = _body(found).get("items") or []
        return items

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        try:
            created = self._resource(obj["apiVersion"], obj["kind"]).create(
                body=obj, namespace=meta["namespace"], serialize=False
            )
        except NotFoundError as exc:
            # Its CRD may have been removed since discovery: look again (KindNotInstalled).
            self._forget(obj["apiVersion"], obj["kind"])
            self._resource(obj["apiVersion"], obj["kind"])
            raise _translate(
                exc, f"create {obj['kind']} {meta['namespace']}/{meta['name']}"
            ) from exc
        except (DynamicApiError, ApiException) as exc:
            raise _translate(
                exc, f"create {obj['kind']} {meta['namespace']}/{meta['name']}"
            ) from exc
        return _body(created)

    def patch(
        self, api_version: str, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            patched = self._resource(api_version, kind).patch(
                body=patch,
                name=name,
                namespace=namespace,
                content_type=MERGE_PATCH,
                serialize=False,
            )
        except (DynamicApiError, ApiException) as exc:
            raise _translate(exc, f"patch {kind} {namespace}/{name}") from exc
        return _body(patched)

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            self._resource(api_version, kind).delete(
                name=name, namespace=namespace, body={"propagationPolicy": "Background"}
            )
        except NotFoundError:
            return
        except (DynamicApiError, ApiException) as exc:
            raise _translate(exc, f"delete {kind} {namespace}/{name}") from exc

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        try:
            resource = self._resource(API_VERSION, KIND).status
            patched = resource.patch(
                body={"status": status},
                name=name,
                namespace=namespace,
                content_type=MERGE_PATCH,
                serialize=False,
            )
        except (DynamicApiError, ApiException) as exc:
            raise _translate(exc, f"patch status of {KIND} {namespace}/{name}") from exc
        return _body(patched)


def allowed(api_client: ApiClient, namespace: str, right: Right) -> bool:
    """Whether the API server lets this client do `right` in `namespace` (an unanswered
    review counts as allowed: the calls themselves will say what is wrong)."""
    attributes = V1ResourceAttributes(
        namespace=namespace,
        verb=right.verb,
        group=right.group,
        resource=right.resource,
        subresource=right.subresource or None,
    )
    spec = V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
    review = V1SelfSubjectAccessReview(spec=spec)
    try:
        answer = AuthorizationV1Api(api_client).create_self_subject_access_review(review)
    except ApiException:
        return True
    return answer.status is None or bool(answer.status.allowed)
