"""The rehearsal's timeline as a PNG, drawn from the JSON report with matplotlib's Agg.

Panels share the time axis (seconds since the canary started): the canary weight the
engine set and the share of requests that really reached the canary each second, with a
marker per analysis tick coloured by its verdict and a line where the rollout was
decided; then one panel per check (accuracy, latency, error rate, ...): the canary's
and the stable's values at each tick and the check's absolute thresholds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_COLOURS = {
    "Successful": "tab:green",
    "Failed": "tab:red",
    "Inconclusive": "tab:orange",
    "Error": "tab:purple",
}


def _weight_panel(axis: Any, report: dict[str, Any]) -> None:
    ticks = report["ticks"]
    times = [0.0] + [t["appliedAt"] for t in ticks]
    weights = [0] + [t["canaryShare"] for t in ticks]
    end = max(times[-1], report["timings"]["rolloutSeconds"]) + 1.0
    axis.step(
        [*times, end], [*weights, weights[-1]], where="post", label="share set by the engine", lw=2
    )
    canary, stable = report["canary"]["revision"], report["stable"]["revision"]
    seconds = [s for s in report["traffic"]["perSecond"] if s["t"] >= 0]
    if seconds:
        share = [
            100.0 * s.get(canary, 0) / max(1, s.get(canary, 0) + s.get(stable, 0)) for s in seconds
        ]
        axis.plot(
            [s["t"] + 0.5 for s in seconds], share, ".", alpha=0.6, label="answered, per second"
        )
    for tick in ticks:
        if tick["verdict"] is not None:
            axis.scatter(
                tick["t"], 104, color=_COLOURS.get(tick["verdict"], "grey"), marker="v", zorder=3
            )
    decided = report["timings"]["decidedSeconds"]
    if decided is not None:
        colour = "tab:green" if report["outcome"]["promoted"] else "tab:red"
        for other in axis.figure.axes:
            other.axvline(decided, color=colour, ls="--", lw=1)
    axis.set_ylim(-5, 110)
    axis.set_ylabel(f"{report['canary']['version']} %")
    axis.legend(loc="center left", fontsize="small")


def _check_panel(axis: Any, report: dict[str, Any], check: dict[str, Any]) -> None:
    points: dict[str, list[tuple[float, float]]] = {"canary": [], "stable": []}
    verdicts: list[tuple[float, float, str]] = []
    for tick in report["ticks"]:
        for result in tick["checks"]:
            if result["name"] != check["name"]:
                continue
            if result.get("value") is not None:
                points["canary"].append((tick["t"], result["value"]))
                verdicts.append((tick["t"], result["value"], result["verdict"]))
            if result.get("stableValue") is not None:
                points["stable"].append((tick["t"], result["stableValue"]))
    for side, style in (("stable", "s--"), ("canary", "o-")):
        if points[side]:
            xs, ys = zip(*points[side], strict=True)
            axis.plot(xs, ys, style, label=side)
    for t, value, verdict in verdicts:
        axis.scatter(t, value, s=80, facecolors="none", edgecolors=_COLOURS.get(verdict, "grey"))
    for bound in ("min", "max"):
        if check.get(bound) is not None:
            axis.axhline(check[bound], color="grey", ls=":", lw=1, label=bound)
    unit = f" ({check['unit']})" if check.get("unit") else ""
    axis.set_ylabel(f"{check['name']}{unit}", fontsize="small")
    axis.legend(loc="best", fontsize="x-small")


def plot_report(report: dict[str, Any], path: Path) -> None:
    """Write the timeline of `report` to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: CI and headless machines
    import matplotlib.pyplot as plt

    checks = report["policy"]["checks"]
    figure, axes = plt.subplots(
        1 + len(checks), 1, sharex=True, figsize=(9, 2.2 * (1 + len(checks))), squeeze=False
    )
    column = [row[0] for row in axes]
    for axis, check in zip(column[1:], checks, strict=True):
        _check_panel(axis, report, check)
    _weight_panel(column[0], report)
    outcome = report["outcome"]
    canary = report["canary"]["version"]
    figure.suptitle(
        f"{report['resource']['name']}: {report['stable']['version']} → {canary}: "
        f"{outcome['result']}",
        fontsize="medium",
    )
    column[-1].set_xlabel("seconds since the canary started")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
