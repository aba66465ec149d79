"""Spec validation over generated documents: a user gets a SpecError naming a field, or a
resource; never a crash, never a problem that points nowhere.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from tests.property.documents import (
    Path,
    get,
    hostile_documents,
    mutated_documents,
    valid_documents,
    versions,
)
from tests.unit.builders import BASE, merged
from torchrollout.errors import FieldProblem, SpecError
from torchrollout.spec import (
    ModelDeployment,
    compute_revision,
    parse_duration,
    parse_model_deployment,
)
from torchrollout.spec.durations import DURATION_PATTERN

_INDEX = re.compile(r"\[(\d+)\]")


def resolves(document: Any, path: str) -> bool:
    """Whether `path`, as a SpecError writes it (`spec.canary.steps[1]`), leads into
    `document`: every part exists, except a last one missing from a mapping (a field the
    user has to add there). Keys may themselves hold dots, so each mapping is matched
    against its own keys, longest first."""
    if not path:
        return True
    if isinstance(document, list):
        index = _INDEX.match(path)
        if index is None or int(index.group(1)) >= len(document):
            return False
        return resolves(document[int(index.group(1))], path[index.end() :].removeprefix("."))
    if not isinstance(document, dict):
        return False
    for key in sorted((k for k in document if isinstance(k, str)), key=len, reverse=True):
        rest = path.removeprefix(key)
        follows = key and path.startswith(key) and (rest == "" or rest[0] in ".[")
        if follows and resolves(document[key], rest.removeprefix(".")):
            return True
    return "." not in path and "[" not in path


def parse_outcome(document: Any) -> ModelDeployment | tuple[FieldProblem, ...]:
    """The resource, or the problems of the SpecError; anything else raised fails the test."""
    try:
        return parse_model_deployment(document, source="generated.yaml")
    except SpecError as exc:
        return exc.problems


def assert_problems_point_into(document: Any, problems: tuple[FieldProblem, ...]) -> None:
    assert problems, "a SpecError without problems tells the user nothing"
    for problem in problems:
        assert problem.message.strip(), f"empty message at {problem.path!r}"
        assert resolves(document, problem.path), f"{problem.path!r} is not in the document"


@given(valid_documents())
def test_generated_valid_documents_parse(document: dict[str, Any]) -> None:
    """Every document built from the fields' documented rules is accepted."""
    outcome = parse_outcome(document)
    assert isinstance(outcome, ModelDeployment), outcome


@settings(max_examples=3 * settings.default.max_examples)
@given(mutated_documents())
def test_a_broken_field_is_a_spec_error_naming_a_field_of_the_document(
    mutation: tuple[dict[str, Any], str, Path],
) -> None:
    """Dropping a field, giving it the wrong type or an out-of-range value, or adding an
    unknown one, yields a resource or a SpecError, nothing else; each problem says what is
    wrong and names a field the user wrote (or one to add beside them); an unknown field is
    always refused, by its own path."""
    document, how, path = mutation
    outcome = parse_outcome(document)
    if isinstance(outcome, ModelDeployment):
        assert how != "unknown field", f"unknown field at {path} was accepted"
        return
    assert_problems_point_into(document, outcome)
    if how == "unknown field":
        written = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
        assert written.removeprefix(".") in {p.path for p in outcome}


@settings(max_examples=3 * settings.default.max_examples)
@given(hostile_documents())
def test_hostile_strings_are_refused_or_kept_as_written(document: dict[str, Any]) -> None:
    """Control characters, unicode, shell and YAML metacharacters and very long strings in
    any string field or key: a SpecError naming the field, or a resource."""
    outcome = parse_outcome(document)
    if not isinstance(outcome, ModelDeployment):
        assert_problems_point_into(document, outcome)


@given(st.one_of(st.none(), st.booleans(), st.integers(), st.text(), st.lists(st.integers())))
def test_a_document_that_is_not_a_mapping_is_a_spec_error_at_the_root(document: Any) -> None:
    """A YAML file holding a scalar or a list is refused as a whole, at the root."""
    outcome = parse_outcome(document)
    assert not isinstance(outcome, ModelDeployment)
    assert [p.path for p in outcome] == [""]


# Fields holding a duration, and their documented range in seconds.
DURATION_FIELDS: list[tuple[str, dict[str, Any], float, float]] = [
    ("spec.canary.interval", {"spec": {"canary": {"interval": None}}}, 1, 86_400),
    (
        "spec.autoscaling.interval",
        {"spec": {"autoscaling": {"engine": "prometheus", "interval": None}}},
        1,
        3600,
    ),
]
huge_numbers = st.integers(300, 4000).map(lambda digits: "9" * digits)
durations = st.one_of(
    st.from_regex(DURATION_PATTERN, fullmatch=True),
    st.builds(lambda n, unit: n + unit, huge_numbers, st.sampled_from(["ms", "s", "m", "h"])),
)


def _with_duration(template: dict[str, Any], text: str) -> dict[str, Any]:
    if isinstance(template, dict):
        return {k: _with_duration(v, text) for k, v in template.items()}
    return text if template is None else template


@given(st.sampled_from(DURATION_FIELDS), durations)
@example(DURATION_FIELDS[0], "9" * 400 + "s")
@example(DURATION_FIELDS[1], "9" * 400 + "ms")
def test_a_duration_is_accepted_within_its_range_or_refused_by_field(
    field: tuple[str, dict[str, Any], float, float], text: str
) -> None:
    """Any duration-shaped string, however large its number, is accepted when it lies in
    the field's range and otherwise refused with a SpecError naming the field."""
    path, template, low, high = field
    outcome = parse_outcome(merged(BASE, _with_duration(template, text)))
    if isinstance(outcome, ModelDeployment):
        assert low <= parse_duration(text) <= high
    else:
        assert [p.path for p in outcome] == [path]


def _reordered(value: Any) -> Any:
    """`value` with every mapping's keys in reverse order."""
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


@given(valid_documents())
def test_the_revision_depends_on_the_content_not_on_key_order(document: dict[str, Any]) -> None:
    """The same document, parsed twice or with its keys in another order (as another tool
    may write it), has the same revision: no spurious rollout."""
    first = parse_model_deployment(document)
    again = parse_model_deployment(document)
    reordered = parse_model_deployment(_reordered(document))
    assert compute_revision(first.spec) == compute_revision(again.spec)
    assert compute_revision(first.spec) == compute_revision(reordered.spec)
    assert re.fullmatch(r"[0-9a-f]{10}", compute_revision(first.spec))


@given(valid_documents(), st.sampled_from(["replicas", "paused", "steps"]))
def test_the_revision_ignores_what_does_not_change_the_pods(
    document: dict[str, Any], change: str
) -> None:
    """Replica counts, pausing and the canary policy scale or steer the current revision;
    they never start a new one."""
    spec = document["spec"]
    edited = {
        "replicas": {**spec, "runtime": {**spec.get("runtime", {}), "replicas": 7}},
        "paused": {**spec, "paused": not spec.get("paused", False)},
        "steps": {**spec, "canary": {**spec.get("canary", {}), "steps": [3, 33]}},
    }[change]
    before = parse_model_deployment(document).spec
    after = parse_model_deployment({**document, "spec": edited}).spec
    assert compute_revision(before) == compute_revision(after)


@given(valid_documents(), versions)
def test_the_revision_changes_with_the_version(document: dict[str, Any], version: str) -> None:
    """A new model version is a new revision: it is rolled out."""
    model = document["spec"]["model"]
    assume(version != model["version"])
    changed = {**document, "spec": {**document["spec"], "model": {**model, "version": version}}}
    before = parse_model_deployment(document).spec
    after = parse_model_deployment(changed).spec
    assert compute_revision(after) != compute_revision(before)


def test_path_resolution_follows_keys_with_dots_and_list_indices() -> None:
    document = {"spec": {"runtime": {"podLabels": {"a.b/c": 1}}, "steps": [5, 6]}}
    assert resolves(document, "spec.runtime.podLabels.a.b/c")
    assert resolves(document, "spec.steps[1]")
    assert resolves(document, "spec.missing")
    assert not resolves(document, "spec.steps[2]")
    assert not resolves(document, "spec.nowhere.deeper")
    assert get(document, ("spec", "steps", 0)) == 5


def test_an_interval_of_one_second_is_valid() -> None:
    md = parse_model_deployment(merged(BASE, {"spec": {"canary": {"interval": "1s"}}}))
    assert md.spec.canary.fast_interval_seconds == 1
