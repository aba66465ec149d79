"""Request parsing and validation for the built-in handlers: JSON body -> validated tensors.

The base handler calls `parse_request` once per request of a TorchServe batch. Anything wrong
with a request raises `InvalidInput`, whose message names the offending field by its JSON path
(`instances[2].input`) and says what was expected (shape, dtype); the handler turns it into an
HTTP 400 for that request only. Values are converted with `torch.tensor` straight from the
decoded JSON lists, which is also what rejects strings, nulls and ragged lists cheaply.

Request formats (see model-handlers/README.md):
    {"instances": [{"input": [[...]], "label": ...}, ...]}   -> {"predictions": [...]}
    {"input": [[...]], "label": ...}                          -> one prediction object
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch


class InvalidInput(Exception):
    """A request the handler refuses with HTTP 400; `instances` is how many it carried."""

    def __init__(self, field: str, problem: str, *, instances: int = 1) -> None:
        self.field = field
        self.problem = problem
        self.instances = instances
        super().__init__(f"{field}: {problem}")

    @property
    def message(self) -> str:
        return f"{self.field}: {self.problem}"


@dataclass(frozen=True)
class FieldSpec:
    """One tensor field of an instance: its JSON key and shape (None = any length >= 1)."""

    name: str
    shape: tuple[int | None, ...]

    def describe(self) -> str:
        dims = ", ".join("N" if d is None else str(d) for d in self.shape)
        return f"a nested list of shape [{dims}] of finite numbers (float32)"


@dataclass
class Instance:
    """One validated instance: its tensors (keyed by field name) and optional label."""

    tensors: dict[str, torch.Tensor]
    label: Any = None

    @property
    def labeled(self) -> bool:
        return self.label is not None

    def shape_key(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(t.shape) for t in self.tensors.values())


@dataclass
class ParsedRequest:
    """A valid request: its instances, and whether the body was a single bare instance."""

    instances: list[Instance]
    single: bool


LabelParser = Callable[[Any, str], Any]
InstanceCheck = Callable[[dict[str, torch.Tensor], str], None]


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", str: "a string", dict: "an object", list: "a list"}
    if type(value) in names:
        return names[type(value)]
    return "a number" if isinstance(value, int | float) else f"a {type(value).__name__}"


SHOWN_CHARACTERS = 60


def shown(value: object) -> str:
    """A value as an error message quotes it: its repr, cut short (a request may carry
    megabytes where a label belongs, and the message goes back in the answer and the log)."""
    text = repr(value)
    if len(text) <= SHOWN_CHARACTERS:
        return text
    return f"{text[:SHOWN_CHARACTERS]}... ({len(text)} characters)"


def decode_body(row: Mapping[str, Any]) -> Any:
    """The request body of one TorchServe batch row, JSON-decoded if TorchServe did not."""
    body = row.get("body")
    if body is None:
        body = row.get("data")
    if isinstance(body, bytes | bytearray):
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInput("body", f"not valid JSON ({exc})") from None
        except RecursionError:
            # Python's decoder gives up on ~1000 levels of nesting; a request has a few.
            raise InvalidInput(
                "body", "JSON nested too deeply to decode; a request nests a few levels"
            ) from None
    return body


NOT_FINITE = "NaN or Infinity is not allowed; expected finite numbers"


def to_tensor(
    obj: Mapping[str, Any], spec: FieldSpec, path: str, *, finite: bool = True
) -> torch.Tensor:
    """Validate one field of an instance against its spec and convert it to float32
    (`finite=False`: the caller checks finiteness, for many instances at once)."""
    field = _join(path, spec.name)
    if spec.name not in obj:
        raise InvalidInput(field, f"missing field; expected {spec.describe()}")
    value = obj[spec.name]
    if not isinstance(value, list):
        raise InvalidInput(field, f"expected {spec.describe()}, got {_type_name(value)}")
    try:
        tensor = torch.tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        # torch says why: a string or null inside, or rows of different lengths.
        raise InvalidInput(field, f"expected {spec.describe()}; {exc}") from None
    actual = tuple(tensor.shape)
    if len(actual) != len(spec.shape) or any(
        a == 0 or (e is not None and a != e) for a, e in zip(actual, spec.shape, strict=False)
    ):
        raise InvalidInput(
            field, f"expected {spec.describe()}, got shape [{', '.join(map(str, actual))}]"
        )
    if finite and not bool(torch.isfinite(tensor).all()):
        raise InvalidInput(field, NOT_FINITE)
    return tensor


def check_finite(instances: Sequence[Instance], specs: Sequence[FieldSpec]) -> None:
    """Refuse the first instance (in order) holding NaN or Infinity; one check of all the
    instances' values when none does, instead of one per instance."""
    for spec in specs:
        values = torch.cat([i.tensors[spec.name].reshape(-1) for i in instances])
        if not bool(torch.isfinite(values).all()):
            break
    else:
        return
    for k, instance in enumerate(instances):
        for spec in specs:
            if not bool(torch.isfinite(instance.tensors[spec.name]).all()):
                raise InvalidInput(f"instances[{k}].{spec.name}", NOT_FINITE)


def parse_instance(
    obj: Any,
    path: str,
    specs: Sequence[FieldSpec],
    parse_label: LabelParser,
    check: InstanceCheck | None,
    *,
    finite: bool = True,
) -> Instance:
    """Validate one instance object: every spec'd field, cross-field rules, the label
    (`finite=False`: all but finiteness, which the caller checks)."""
    if not isinstance(obj, dict):
        fields = ", ".join(f'"{s.name}"' for s in specs)
        raise InvalidInput(
            path or "body", f"expected an object with {fields}, got {_type_name(obj)}"
        )
    tensors = {spec.name: to_tensor(obj, spec, path, finite=finite) for spec in specs}
    if check is not None:
        check(tensors, path)
    label = obj.get("label")
    if label is not None:
        label = parse_label(label, _join(path, "label"))
    return Instance(tensors, label)


def parse_request(
    row: Mapping[str, Any],
    *,
    specs: Sequence[FieldSpec],
    parse_label: LabelParser,
    check: InstanceCheck | None = None,
    max_instances: int = 256,
) -> ParsedRequest:
    """Parse one request of a batch into validated instances, or raise InvalidInput."""
    body = decode_body(row)
    if body is None:
        raise InvalidInput("body", "missing; send JSON with Content-Type: application/json")
    if not isinstance(body, dict):
        # TorchServe hands a text/* body over as a string, JSON or not.
        hint = " (with Content-Type: application/json)" if isinstance(body, str) else ""
        raise InvalidInput(
            "body",
            'expected a JSON object: {"instances": [...]} or one instance '
            f'{{"{specs[0].name}": ...}}{hint}, got {_type_name(body)}',
        )
    if "instances" not in body:
        return ParsedRequest([parse_instance(body, "", specs, parse_label, check)], single=True)
    items = body["instances"]
    if not isinstance(items, list):
        raise InvalidInput(
            "instances", f"expected a list of instance objects, got {_type_name(items)}"
        )
    if not items:
        raise InvalidInput("instances", "empty batch; expected at least one instance")
    if len(items) > max_instances:
        raise InvalidInput(
            "instances",
            f"{len(items)} instances; at most {max_instances} per request",
            instances=len(items),
        )
    try:
        instances = [
            parse_instance(item, f"instances[{k}]", specs, parse_label, check, finite=False)
            for k, item in enumerate(items)
        ]
        check_finite(instances, specs)
    except InvalidInput as exc:
        # The whole request is refused: count every instance it carried as rejected.
        exc.instances = len(items)
        raise
    return ParsedRequest(instances, single=False)


def parse_class_label(value: Any, field: str, classes: Sequence[str], count: int | None) -> int:
    """A class label given as an index or as one of the configured class names."""
    if isinstance(value, str) and value in classes:
        return classes.index(value)
    in_range = isinstance(value, int) and value >= 0 and (count is None or value < count)
    if in_range and not isinstance(value, bool):
        return int(value)
    names = f" or one of {list(classes)}" if classes else ""
    limit = f" in [0, {count - 1}]" if count else ""
    raise InvalidInput(field, f"expected a class index{limit}{names}, got {shown(value)}")


def _finite_float32(numbers: list[int | float]) -> bool:
    """Whether every number is finite as a float32, as the predictions it is compared with
    are (an int too large for a float at all, like 10**400, is not)."""
    try:
        return bool(torch.isfinite(torch.tensor(numbers, dtype=torch.float32)).all())
    except (OverflowError, RuntimeError):
        return False


def parse_number_list(value: Any, field: str, length: int) -> list[float]:
    """A regression label: one number (length 1) or a list of `length` finite numbers."""
    items = [value] if length == 1 and not isinstance(value, list) else value
    if (
        not isinstance(items, list)
        or len(items) != length
        or any(isinstance(v, bool) or not isinstance(v, int | float) for v in items)
        or not _finite_float32(items)
    ):
        want = "a finite number" if length == 1 else f"a list of {length} finite numbers"
        raise InvalidInput(field, f"expected {want} (float32), got {shown(value)}")
    return [float(v) for v in items]
