"""The Argo CD health check of a ModelDeployment, run on a real Lua 5.1 as Argo CD runs it.

`health_test.yaml` is Argo CD's own test table for the script (its `resource_customizations`
format); every case runs here against its fixture. Beside it: what each phase must mean to
Argo CD (so the table cannot drift into pinning a wrong mapping), a fixture for every phase
the operator knows, fixtures the operator's own models accept, and a property test that
nothing but an observed, ready, undegraded and unpaused `Succeeded` reads as Healthy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from lupa import lua51

from tests.argocd.argocd_lua import (
    HEALTH_STATUSES,
    Health,
    HealthScriptError,
    assess,
    narrow_runtime,
)
from torchrollout.errors import SpecError
from torchrollout.spec.document import ModelDeployment, parse_model_deployment
from torchrollout.spec.status import Phase

CUSTOMIZATION = (
    Path(__file__).resolve().parents[2]
    / "argocd"
    / "resource_customizations"
    / "torchrollout.io"
    / "ModelDeployment"
)
SCRIPT = (CUSTOMIZATION / "health.lua").read_text()
CASES: list[dict[str, Any]] = yaml.safe_load((CUSTOMIZATION / "health_test.yaml").read_text())[
    "tests"
]
UNKNOWN_PHASE = "is unknown to this health check"


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CUSTOMIZATION / "testdata" / name).read_text())
    return loaded


def case_id(case: dict[str, Any]) -> str:
    return Path(case["inputPath"]).stem


def observed(obj: dict[str, Any]) -> bool:
    """The operator has written a status for the resource's current generation."""
    status = obj.get("status") or {}
    seen = status.get("observedGeneration")
    return seen is not None and seen >= obj["metadata"]["generation"]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_health_test_yaml_case(case: dict[str, Any]) -> None:
    expected = Health(**case["healthStatus"])
    assert assess(SCRIPT, fixture(case["inputPath"].removeprefix("testdata/"))) == expected


def test_every_fixture_has_a_case() -> None:
    on_disk = {f"testdata/{p.name}" for p in (CUSTOMIZATION / "testdata").glob("*.yaml")}
    listed = [case["inputPath"] for case in CASES]
    assert sorted(listed) == sorted(on_disk)


# What each case must mean, whatever the exact wording health_test.yaml pins.
MEANING = {
    "no_status": ("Progressing", ["waiting for the operator to observe generation 1"]),
    "stale_generation": ("Progressing", ["observe generation 7", "last observed 6"]),
    "invalid_spec": ("Degraded", ["invalid spec", "spec.canary.steps"]),
    "pending": ("Progressing", ["Pending"]),
    "building": ("Progressing", ["deploying version 2.0.0"]),
    "progressing": ("Progressing", ["step 2/3"]),
    "promoting": ("Progressing", ["promoting"]),
    "succeeded": ("Healthy", ["version 3.0.0 promoted"]),
    "succeeded_degraded": ("Degraded", ["StableDegraded", "keep restarting"]),
    "succeeded_not_ready": ("Degraded", ["no ready replicas", "CrashLoopBackOff"]),
    "succeeded_without_conditions": ("Progressing", ["Ready"]),
    "succeeded_paused": ("Suspended", ["spec.paused"]),
    "paused_manual": ("Suspended", ["Manual", "spec.paused to false in Git"]),
    "paused_analysis_inconclusive": ("Suspended", ["Inconclusive", "torchrollout.io/retry"]),
    "paused_analysis_error": ("Suspended", ["Error", "unreachable"]),
    "rolling_back": ("Progressing", ["rolling back 3.0.0"]),
    "rolled_back": (
        "Degraded",
        [
            "version 3.0.0 was rolled back: accuracy: 0.69 is below the minimum 0.85",
            "Version 2.0.0 serves all traffic",
            "Git still names 3.0.0",
            "kubectl torchrollout retry fraud-lstm -n risk",
            "torchrollout.io/retry",
            "a new version",
        ],
    ),
    "failed": ("Degraded", ["deploy failed", "Insufficient nvidia.com/gpu"]),
    "unknown_phase": ("Progressing", ["Verifying", UNKNOWN_PHASE]),
}


@pytest.mark.parametrize("name", sorted(MEANING))
def test_what_each_case_means(name: str) -> None:
    status, phrases = MEANING[name]
    health = assess(SCRIPT, fixture(f"{name}.yaml"))
    assert health.status == status
    assert [p for p in phrases if p not in health.message] == []


def test_meanings_cover_the_table() -> None:
    assert sorted(MEANING) == sorted(case_id(case) for case in CASES)


@pytest.mark.parametrize("phase", list(Phase), ids=str)
def test_every_phase_has_an_observed_fixture_and_a_mapping(phase: Phase) -> None:
    """A phase added to the operator fails here until health.lua maps it and a case says how."""
    cases = [
        case
        for case in CASES
        if (obj := fixture(Path(case["inputPath"]).name)).get("status", {}).get("phase") == phase
        and observed(obj)
        and "invalid spec" not in case["healthStatus"]["message"]
    ]
    assert cases, f"no health_test.yaml case with an observed status in phase {phase}"
    for case in cases:
        assert UNKNOWN_PHASE not in case["healthStatus"]["message"]
        assert UNKNOWN_PHASE not in assess(SCRIPT, fixture(Path(case["inputPath"]).name)).message


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_fixture_is_a_resource_the_operator_reads(case: dict[str, Any]) -> None:
    obj = fixture(Path(case["inputPath"]).name)
    if case_id(case) == "unknown_phase":  # a phase from a newer operator, the rest as now
        assert obj["status"]["phase"] not in set(Phase)
        obj["status"]["phase"] = str(Phase.PROGRESSING)
    if case_id(case) == "invalid_spec":
        with pytest.raises(SpecError) as refused:
            parse_model_deployment(obj)
        condition = next(c for c in obj["status"]["conditions"] if c["type"] == "Degraded")
        assert condition["message"] == "; ".join(str(p) for p in refused.value.problems)
        return
    ModelDeployment.model_validate(obj)


# Mistakes health.lua could make; each must break at least one case of the table.
MISMAPPINGS = {
    "rolled back as healthy": ('if phase == "RolledBack" then', 'if phase == "-" then'),
    "stale generation ignored": ("observed < generation", "false"),
    "Degraded condition ignored": ('degraded.status == "True" then', "false then"),
    "Ready=False ignored": ('ready.status == "False" then', "false then"),
    "paused as progressing": ('"Suspended", why', '"Progressing", why'),
    "failed as progressing": ('"Degraded", "deploy failed: "', '"Progressing", "deploy failed: "'),
    "unknown phase as healthy": ('return "Progressing", "phase "', 'return "Healthy", "phase "'),
}


@pytest.mark.parametrize("mistake", sorted(MISMAPPINGS))
def test_the_table_catches_a_wrong_mapping(mistake: str) -> None:
    old, new = MISMAPPINGS[mistake]
    assert SCRIPT.count(old) == 1
    wrong = SCRIPT.replace(old, new)
    disagreeing = [
        case_id(case)
        for case in CASES
        if assess(wrong, fixture(Path(case["inputPath"]).name)) != Health(**case["healthStatus"])
    ]
    assert disagreeing, f"no case notices: {mistake}"


@pytest.mark.parametrize(
    "chunk",
    [
        'return string.format("%d", 1)',
        'return ("abc"):sub(1, 1)',
        "return math.floor(1.5)",
        'return os.getenv("HOME")',
        "return 7 // 2",
        "goto done ::done:: return 1",
        "return utf8.char(72)",
    ],
)
def test_the_runtime_is_as_narrow_as_argo_cds(chunk: str) -> None:
    """What an argocd-cm script cannot use in gopher-lua fails here too."""
    runtime = narrow_runtime()
    with pytest.raises(lua51.LuaError):
        runtime.execute(chunk)


# -- any status at all ------------------------------------------------------------------

_maybe_text = st.none() | st.text(max_size=20)
_conditions = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["Ready", "Degraded", "Progressing", "PodsReady"])
            | st.text(max_size=8),
            "status": st.sampled_from(["True", "False", "Unknown"]),
        },
        optional={
            "reason": st.sampled_from(["InvalidSpec", "StableAvailable", "CanaryRejected"])
            | st.text(max_size=8),
            "message": st.text(max_size=20),
            "observedGeneration": st.integers(0, 6),
        },
    ),
    max_size=5,
)
_status = st.fixed_dictionaries(
    {},
    optional={
        "phase": st.sampled_from([str(p) for p in Phase]) | st.text(max_size=12),
        "observedGeneration": st.integers(0, 6),
        "message": _maybe_text,
        "pauseReason": st.none() | st.sampled_from(["Manual", "Inconclusive", "Error"]),
        "rollbackReason": _maybe_text,
        "stableVersion": _maybe_text,
        "canaryVersion": _maybe_text,
        "conditions": _conditions,
    },
)
_resource = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries(
            {"name": st.just("fraud-lstm"), "generation": st.integers(1, 5)},
            optional={"namespace": st.just("risk")},
        ),
        "spec": st.fixed_dictionaries(
            {"model": st.fixed_dictionaries({"version": st.just("3.0.0")})},
            optional={"paused": st.booleans()},
        ),
    },
    optional={"status": _status},
)


def healthy_by_the_rules(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    if status.get("phase") != "Succeeded" or not observed(obj):
        return False

    def first(kind: str) -> dict[str, Any] | None:
        return next((c for c in status.get("conditions", []) if c["type"] == kind), None)

    degraded, ready = first("Degraded"), first("Ready")
    return (
        (degraded is None or degraded["status"] != "True")
        and ready is not None
        and ready["status"] == "True"
        and not obj["spec"].get("paused", False)
    )


@settings(max_examples=300, database=None, deadline=None)
@given(_resource)
def test_only_a_serving_observed_success_is_healthy(obj: dict[str, Any]) -> None:
    try:
        health = assess(SCRIPT, obj)
    except HealthScriptError as exc:  # pragma: no cover - the failure message is the point
        pytest.fail(f"health.lua failed on {obj}: {exc}")
    assert health.status in HEALTH_STATUSES - {"Missing", "Unknown"}
    assert (health.status == "Healthy") == healthy_by_the_rules(obj)
    assert health.message
