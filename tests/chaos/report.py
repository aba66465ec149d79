"""Render docs/reliability.md from the chaos suite's results (.work/chaos-results.json).

    python -m tests.chaos.report [--results PATH] [--out PATH]

Run the suite first (`pytest tests/chaos`); the page says which faults were injected, how
many times, in which phase of a rollout, and what came of them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tests.chaos.harness import RESULTS_PATH

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "reliability.md"
# Counters that must be zero, in the order the table names them.
MUST_BE_ZERO = (
    "wrong outcomes",
    "wrong promotions",
    "lost transitions",
    "duplicated transitions",
    "duplicated events",
    "lost events",
    "weight not 0 when settled",
    "orphans",
    "superseded revisions still running",
    "operator crashes (not our kills)",
    "Failed ticks during the outage",
)
# Order of the scenarios on the page.
ORDER = ("operator-sigkill", "apiserver-restart", "prometheus-outage", "pod-flapping", "api-faults")

HEADER = """# Reliability under faults

What the chaos suite (`tests/chaos`, pytest marker `chaos`) does to the operator, and what
came of it: on a real control plane, operator SIGKILLs, a kube-apiserver restart, a
Prometheus outage and canary pods flapping; on the API emulator, faults at random calls (409s,
5xx and 429 answers, slow answers, refused and cut watches). Every scenario rolls real
ModelDeployments out with the fast e2e policy (3 s analysis ticks, steps 20% and 60%,
failureLimit 2; 12 under flapping pods, where an unready tick counts as Failed), judged on a
real Prometheus, and checks the end state against what a fault-free run gives: the same
phase and versions, one history entry and one Event per transition, a bad canary never
promoted, weight 0 after every rollback, no object left without a live owner and no
superseded revision still running.

Regenerate this page with `pytest tests/chaos` and then `python -m tests.chaos.report`;
`pytest tests/chaos --soak N` runs N times as many operator kills.
"""


def phases(by_phase: dict[str, int]) -> str:
    ranked = sorted(by_phase.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{phase} {count}" for phase, count in ranked) or "-"


def outcome(record: dict[str, Any]) -> str:
    """Passed or failed; any must-be-zero counter that is not, in bold; the measurements."""
    outcomes: dict[str, int] = record["outcomes"]
    broken = [f"**{name}: {outcomes[name]}**" for name in MUST_BE_ZERO if outcomes.get(name)]
    measured = [f"{k}: {v}" for k, v in sorted(outcomes.items()) if k not in MUST_BE_ZERO]
    return "; ".join(["passed" if record["passed"] else "**failed**", *broken, *measured])


def render(results: dict[str, Any]) -> str:
    names = [n for n in ORDER if n in results] + sorted(set(results) - set(ORDER))
    lines = [
        HEADER,
        "| Fault class | Scenario | Times tried | Phase at the fault (per resource) | "
        "Rollouts checked | Outcome |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        record = results[name]
        lines.append(
            f"| {record['fault']} | {record['description']} | {record['injected']} | "
            f"{phases(record['by_phase'])} | {record['rollouts']} | {outcome(record)} |"
        )
    lines += [
        "",
        "Checked after every rollout, zero unless the Outcome column names them: "
        + ", ".join(MUST_BE_ZERO)
        + ". Events are written into the status with the transition they announce and "
        "posted after it under fixed names, so a kill between the two loses none and a "
        "repost is refused as a duplicate. The other counters are measurements: the "
        "operator's mean restart time, tracebacks it logged and recovered from, and Error "
        "ticks. The API-faults scenario runs on the API emulator (tests/kube_emulator): its "
        "Times tried is the injected faults that fired, its `fired: ...` counters how many "
        "of each kind.",
        "",
    ]
    findings = [(name, f) for name in names for f in results[name]["findings"]]
    if findings:
        lines += ["## Findings of the last run", ""]
        lines += [f"- {name}: {finding}" for name, finding in findings]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--results", type=Path, default=RESULTS_PATH)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if not args.results.exists():
        parser.error(f"{args.results} does not exist: run `pytest tests/chaos` first")
    args.out.write_text(render(json.loads(args.results.read_text())))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
