"""How close a real rehearsal comes to the fastest rollback and promotion its policy allows.

    .venv/bin/python bench/rollback.py [--interval 5s] [--runs 1] [--rate 40]

Rehearses the bundled examples (examples/rehearsal/: stable v1, good v2, bad v3 of the
sequence classifier; trained into .work/models first if missing) with the real
TorchServes, Prometheus, engine and PromQL, and compares the measured times, counted from
the canary's start (its first decision) to when the router had applied the outcome:

    rollback ratio   = time to 100% stable for the bad canary
                       / (failureLimit x interval + time to the canary's first step)
    promotion ratio  = time to 100% canary for the good canary / (steps x interval)

1.0 is the floor: the engine cannot decide sooner than its policy lets it. Targets at a 5 s
interval: rollback <= 1.2, promotion <= 1.1. Exit code 1 if a target is missed. Run by
hand; not part of the test suite. Work files go to a temp dir and are removed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "rehearsal"
MODELS = REPO / ".work" / "models"
TARGETS = {"rollback": 1.2, "promotion": 1.1}


class QuietView:
    """The rehearsal's view, saying only what the bench needs."""

    def note(self, text: str) -> None:
        pass

    def started(self, stats: object) -> None:
        pass

    def decided(self, record: object) -> None:
        pass

    def finished(self, outcome: Any) -> None:
        print(f"  {outcome.reason} after {outcome.elapsed:.2f}s: {outcome.message}")

    def close(self) -> None:
        pass


def rehearse(canary: str, *, interval: str, rate: float) -> dict[str, Any]:
    from torchrollout.rehearsal import session, signals

    options = session.Options(
        stable=EXAMPLES / "stable.yaml",
        canary=EXAMPLES / f"{canary}.yaml",
        traffic=MODELS / "sequence-classifier" / "traffic.jsonl",
        rate=rate,
        interval_override=interval,
    )
    with signals.interruptible():
        inputs = session.check_inputs(options, warn=print)
        return session.rehearse(options, inputs, QuietView()).report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", default="5s", help="canary interval (default 5s)")
    parser.add_argument("--runs", type=int, default=1, help="rehearsals per case")
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second")
    args = parser.parse_args()
    if not (MODELS / "accuracy.json").is_file():
        print(f"training the example models into {MODELS}")
        script = REPO / "examples" / "models" / "make_models.py"
        subprocess.run([sys.executable, str(script), "--output", str(MODELS)], check=True)

    ratios: dict[str, list[float]] = {"rollback": [], "promotion": []}
    for run in range(1, args.runs + 1):
        for kind, canary, wanted in (("rollback", "bad", False), ("promotion", "good", True)):
            print(f"run {run}: {kind} ({canary}.yaml, interval {args.interval})")
            report = rehearse(canary, interval=args.interval, rate=args.rate)
            timings, policy = report["timings"], report["policy"]
            if report["outcome"]["promoted"] is not wanted:
                print(f"  unexpected outcome {report['outcome']['result']}")
                return 1
            if kind == "rollback":
                floor = (
                    f"failureLimit {policy['failureLimit']} x {policy['intervalSeconds']:g}s"
                    f" + {timings['firstStepSeconds']:.3f}s to the first step"
                )
                measured = timings["rollbackSeconds"]
            else:
                floor = f"{len(policy['steps'])} steps x {policy['intervalSeconds']:g}s"
                measured = timings["promotionSeconds"]
            ratio = timings["decidedOverFloor"]
            ratios[kind].append(ratio)
            print(
                f"  {kind}: {measured:.3f}s; floor {timings['floorSeconds']:.3f}s ({floor}); "
                f"ratio {ratio:.3f} (target <= {TARGETS[kind]}); "
                f"first failing verdict at {timings['firstFailingVerdictSeconds'] or '-'}s; "
                f"setup {sum(timings['setupSeconds'].values()):.1f}s, "
                f"whole run {timings['totalSeconds']:.1f}s"
            )
    missed = False
    for kind, values in ratios.items():
        worst = max(values)
        ok = worst <= TARGETS[kind]
        missed |= not ok
        print(
            f"{kind} ratio: worst {worst:.3f}, mean {sum(values) / len(values):.3f} over "
            f"{len(values)} runs; target <= {TARGETS[kind]}: {'met' if ok else 'MISSED'}"
        )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
