"""The four patch formats of the API: JSON merge (RFC 7386), JSON (RFC 6902), strategic merge
and apply (server-side apply, approximated).

Pure functions over JSON-like values; the handlers pick one by Content-Type. Strategic merge
knows the list merge keys of the built-in kinds the operator touches (containers by name,
ports by containerPort or port, conditions by type, ...) by the name of the list's field —
close enough for Deployments, Services, PDBs and HPAs, which never reuse a field name with
two different keys except ``ports`` (resolved by looking at the items).
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import ApiError, bad_request, unprocessable

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _split_pointer(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise unprocessable(f'the server rejected our request: invalid JSON pointer "{pointer}"')
    return [_unescape(token) for token in pointer[1:].split("/")]


def _resolve(doc: Any, tokens: list[str], pointer: str) -> Any:
    current = doc
    for token in tokens:
        if isinstance(current, dict) and token in current:
            current = current[token]
        elif isinstance(current, list) and token.isdigit() and int(token) < len(current):
            current = current[int(token)]
        else:
            raise unprocessable(f"doc is missing path: {pointer}: missing value")
    return current


def _parent(doc: Any, pointer: str) -> tuple[Any, str]:
    tokens = _split_pointer(pointer)
    if not tokens:
        raise unprocessable(f"unable to operate on the document root: {pointer}")
    return _resolve(doc, tokens[:-1], pointer), tokens[-1]


def _add(doc: Any, pointer: str, value: Any) -> Any:
    if pointer == "":
        return value
    parent, key = _parent(doc, pointer)
    if isinstance(parent, dict):
        parent[key] = value
    elif isinstance(parent, list):
        if key == "-":
            parent.append(value)
        elif key.isdigit() and int(key) <= len(parent):
            parent.insert(int(key), value)
        else:
            raise unprocessable(f"add operation does not apply: doc is missing path: {pointer}")
    else:
        raise unprocessable(f"add operation does not apply: doc is missing path: {pointer}")
    return doc


def _remove(doc: Any, pointer: str) -> Any:
    parent, key = _parent(doc, pointer)
    if isinstance(parent, dict) and key in parent:
        return parent.pop(key)
    if isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
        return parent.pop(int(key))
    raise unprocessable(f'remove operation does not apply: doc is missing path: "{pointer}"')


def json_patch(doc: Any, operations: Any) -> Any:
    """RFC 6902 including ``test``; any failure is a 422, as the API server answers."""
    if not isinstance(operations, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation:
            raise bad_request(f"invalid JSON patch operation: {operation!r}")
        op, path = operation["op"], operation.get("path", "")
        if op in ("add", "replace", "test") and "value" not in operation:
            raise bad_request(f'missing value for "{op}" operation')
        value = copy.deepcopy(operation.get("value"))
        if op == "add":
            doc = _add(doc, path, value)
        elif op == "remove":
            _remove(doc, path)
        elif op == "replace":
            if path == "":
                doc = value
            else:
                _resolve(doc, _split_pointer(path), path)
                parent, key = _parent(doc, path)
                parent[int(key) if isinstance(parent, list) else key] = value
        elif op == "move":
            moved = _remove(doc, operation.get("from", ""))
            doc = _add(doc, path, moved)
        elif op == "copy":
            copied = copy.deepcopy(_resolve(doc, _split_pointer(operation.get("from", "")), path))
            doc = _add(doc, path, copied)
        elif op == "test":
            try:
                actual = _resolve(doc, _split_pointer(path), path)
            except ApiError:
                actual = None
            if actual != value:
                raise unprocessable(f"testing value {path} failed: test failed")
        else:
            raise bad_request(f"Unexpected kind: {op}")
    return doc


# Strategic merge: list field name -> merge key. ``ports`` is resolved per item.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "metrics": "type",  # HPA metric specs have no real merge key; type is the closest
}
# Lists of scalars merged as sets (strategy "merge" without a key).
MERGED_SCALAR_LISTS = {"finalizers"}


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        sample = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    return MERGE_KEYS.get(field)


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        raise bad_request("strategic merge patch must be a JSON object")
    return _smp_object(copy.deepcopy(target) if isinstance(target, dict) else {}, patch)


def _smp_object(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return {}
    orders = {
        key.split("/", 1)[1]: value
        for key, value in patch.items()
        if key.startswith("$setElementOrder/") and isinstance(value, list)
    }
    originals = {field: copy.deepcopy(target.get(field)) for field in orders}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(target.get(field), list):
                target[field] = [v for v in target[field] if v not in value]
            continue
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            current = target.get(key)
            merged = _smp_object(current if isinstance(current, dict) else {}, value)
            if value.get("$patch") == "delete":
                target.pop(key, None)
            else:
                target[key] = merged
        elif isinstance(value, list):
            target[key] = _smp_list(key, target.get(key), value)
        else:
            target[key] = copy.deepcopy(value)
    # $setElementOrder (kubectl sends it) wins over the patch's and the live list's order.
    for field, order in orders.items():
        patched, original = target.get(field), originals[field]
        if isinstance(patched, list) and isinstance(original, list):
            merge_key = _merge_key(field, [*order, *original])
            target[field] = _normalize_order(patched, order, original, merge_key)
    return target


def _smp_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    current = current if isinstance(current, list) else []
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    if field in MERGED_SCALAR_LISTS:
        merged = current + [copy.deepcopy(v) for v in patch if v not in current]
        return _normalize_order(merged, patch, current, None)
    key = _merge_key(field, patch + current)
    if key is None:
        return copy.deepcopy(patch)
    result = [copy.deepcopy(i) for i in current]
    for item in patch:
        if not isinstance(item, dict):
            raise bad_request(f"strategic merge patch: list {field} holds non-objects")
        index = next(
            (
                n
                for n, cur in enumerate(result)
                if isinstance(cur, dict) and cur.get(key) == item.get(key)
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
        elif index is None:
            result.append({k: v for k, v in copy.deepcopy(item).items() if k != "$patch"})
        else:
            result[index] = _smp_object(result[index], item)
    order = [i for i in patch if "$patch" not in i]
    return _normalize_order(result, order, current, key)


def _normalize_order(
    merged: list[Any], order: list[Any], original: list[Any], key: str | None
) -> list[Any]:
    """The API server's order of a merged list (strategicpatch's normalizeElementOrder): the
    items named in ``order`` in that order, the live list's other items in their order, and
    each of those placed before the first patched item that follows it in the live list."""

    def ident(item: Any) -> Any:
        return item.get(key) if key is not None and isinstance(item, dict) else item

    wanted = [ident(i) for i in order]
    live = [ident(i) for i in original]

    def live_index(item: Any) -> int:
        return live.index(ident(item)) if ident(item) in live else -1

    patched = sorted(
        (i for i in merged if ident(i) in wanted), key=lambda i: wanted.index(ident(i))
    )
    server_only = sorted((i for i in merged if ident(i) not in wanted), key=live_index)
    result: list[Any] = []
    while patched or server_only:
        take_server = not patched or (
            bool(server_only) and 0 <= live_index(server_only[0]) < live_index(patched[0])
        )
        result.append((server_only if take_server else patched).pop(0))
    return result
