"""The rehearsal loop on a fake platform, a table of measurements and a fake clock.

These pin what the local processes cannot show quickly: the loop decides exactly as the
operator would, settles transitional phases at once, applies weights in revision terms
(promotion moves all traffic to the canary's server), and ticks on exact interval
boundaries however long measuring takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.rehearsal.support import POLICY, deployment, write_yaml
from torchrollout.engine import Measurement
from torchrollout.metrics import StaticProvider, Target
from torchrollout.rehearsal import FakeClock, FakePlatform, Pair, RolloutLoop, load_pair
from torchrollout.rehearsal.report import timings
from torchrollout.rehearsal.traffic import Route
from torchrollout.spec import Phase, ResolvedCheck, Verdict

pytestmark = pytest.mark.timeout(30)  # a loop that never ends fails fast


def make_pair(
    tmp_path: Path, *, replicas: int = 3, traffic: dict[str, Any] | None = None, **policy: object
) -> Pair:
    stable = write_yaml(tmp_path / "stable.yaml", deployment("1.0.0", replicas=replicas))
    canary = write_yaml(
        tmp_path / "canary.yaml",
        deployment("2.0.0", canary={**POLICY, **policy}, replicas=replicas, traffic=traffic),
    )
    return load_pair(stable, canary)


def table(pair: Pair, *, accuracy: float, errors: float = 0.0) -> StaticProvider:
    stable, canary = pair.stable.revision, pair.canary.revision
    return StaticProvider(
        {
            ("accuracy", stable): Measurement.of(0.97, 100),
            ("accuracy", canary): Measurement.of(accuracy, 100),
            ("error-rate", stable): Measurement.of(0.0, 100),
            ("error-rate", canary): Measurement.of(errors, 100),
        }
    )


def test_a_good_canary_takes_each_step_then_all_traffic(tmp_path: Path) -> None:
    pair = make_pair(tmp_path)
    platform = FakePlatform()
    outcome = RolloutLoop(
        pair, platform=platform, provider=table(pair, accuracy=0.98), clock=FakeClock()
    ).run()

    assert (outcome.reason, outcome.phase, outcome.exit_code) == ("promoted", Phase.SUCCEEDED, 0)
    old, new = pair.stable.revision, pair.canary.revision
    assert platform.routes == [Route(old, new, 25), Route(old, new, 50), Route(new, None, 0)]
    assert [(r.t, r.verdict) for r in outcome.records if r.verdict] == [
        (5.0, Verdict.SUCCESSFUL),
        (10.0, Verdict.SUCCESSFUL),
    ]
    assert outcome.records[-1].canary_share == 100
    assert timings(pair, outcome)["decidedOverFloor"] == 1.0


@pytest.mark.parametrize(
    ("replicas", "traffic", "shares"),
    [
        (3, None, [25, 50]),  # 1 canary pod beside 3, then 3 beside 3
        (1, None, [50]),  # one pod beside one: both steps are 50%
        (2, None, [33, 50]),
        (1, {"router": "gateway-api", "gatewayRef": {"name": "edge"}}, [25, 50]),
    ],
    ids=["replicas-3", "replicas-1", "replicas-2", "gateway-api"],
)
def test_the_canary_gets_the_share_its_router_would_give(
    tmp_path: Path, replicas: int, traffic: dict[str, Any] | None, shares: list[int]
) -> None:
    pair = make_pair(tmp_path, replicas=replicas, traffic=traffic)
    platform = FakePlatform()
    RolloutLoop(
        pair, platform=platform, provider=table(pair, accuracy=0.98), clock=FakeClock()
    ).run()
    old, new = pair.stable.revision, pair.canary.revision
    assert platform.routes == [*(Route(old, new, s) for s in shares), Route(new, None, 0)]


def test_a_mirrored_canary_gets_copies_and_no_weight_until_promoted(tmp_path: Path) -> None:
    traffic = {"router": "istio"}
    pair = make_pair(tmp_path, traffic=traffic, mirror={"percent": 40})
    platform = FakePlatform()
    outcome = RolloutLoop(
        pair, platform=platform, provider=table(pair, accuracy=0.98), clock=FakeClock()
    ).run()
    assert outcome.phase is Phase.SUCCEEDED
    old, new = pair.stable.revision, pair.canary.revision
    assert platform.routes == [Route(old, new, 0, 40), Route(new, None, 0, 0)]


def test_a_bad_canary_is_rolled_back_within_its_tick(tmp_path: Path) -> None:
    pair = make_pair(tmp_path)
    platform = FakePlatform()
    outcome = RolloutLoop(
        pair, platform=platform, provider=table(pair, accuracy=0.65), clock=FakeClock()
    ).run()

    assert (outcome.reason, outcome.phase, outcome.exit_code) == (
        "rolled-back",
        Phase.ROLLED_BACK,
        1,
    )
    old, new = pair.stable.revision, pair.canary.revision
    assert platform.routes == [Route(old, new, 25), Route(old, new, 0)]
    # RollingBack asks to be looked at again at once; RolledBack follows in the same tick.
    last = outcome.records[-2:]
    assert [(r.t, r.phase, r.weight) for r in last] == [
        (10.0, Phase.ROLLING_BACK, 0),
        (10.0, Phase.ROLLED_BACK, 0),
    ]
    found = timings(pair, outcome)
    assert (found["firstFailingVerdictSeconds"], found["rollbackSeconds"]) == (5.0, 10.0)
    assert found["decidedOverFloor"] == 1.0


def test_a_canary_answering_only_errors_is_rolled_back_by_the_fast_watch(tmp_path: Path) -> None:
    pair = make_pair(tmp_path)  # interval 5s; fastInterval defaults to 2s
    platform = FakePlatform()
    provider = table(pair, accuracy=0.98, errors=1.0)
    outcome = RolloutLoop(pair, platform=platform, provider=provider, clock=FakeClock()).run()

    assert (outcome.reason, outcome.phase) == ("rolled-back", Phase.ROLLED_BACK)
    rolling = next(r for r in outcome.records if r.phase is Phase.ROLLING_BACK)
    assert rolling.t == 2.0  # the first fast reading, before the tick at 5 s
    assert "fast watch: error-rate 1" in rolling.message
    old, new = pair.stable.revision, pair.canary.revision
    assert platform.routes == [Route(old, new, 25), Route(old, new, 0)]


@dataclass
class SlowProvider:
    """Each query takes `seconds` of the fake clock's time."""

    inner: StaticProvider
    clock: FakeClock
    seconds: float

    def measure(self, check: ResolvedCheck, target: Target) -> Measurement:
        self.clock.sleep(self.seconds)
        return self.inner.measure(check, target)


def test_ticks_fall_on_interval_boundaries_however_long_measuring_takes(tmp_path: Path) -> None:
    pair = make_pair(tmp_path)
    clock = FakeClock()
    provider = SlowProvider(table(pair, accuracy=0.98), clock, seconds=0.4)
    outcome = RolloutLoop(pair, platform=FakePlatform(), provider=provider, clock=clock).run()

    analysed = [r for r in outcome.records if r.verdict is not None]
    assert [r.t for r in analysed] == [5.0, 10.0]  # not 5, 10.x: no drift per tick
    # Four checks' queries (two checks, canary and stable) at 0.4 s each: applied after.
    assert analysed[-1].applied == pytest.approx(10.0 + 4 * 0.4)


def test_a_canary_that_never_serves_is_rolled_back_at_its_deadline(tmp_path: Path) -> None:
    pair = make_pair(tmp_path, progressDeadlineSeconds=12)
    platform = FakePlatform(ready={pair.canary.revision: False})
    outcome = RolloutLoop(
        pair, platform=platform, provider=table(pair, accuracy=0.98), clock=FakeClock()
    ).run()

    assert outcome.reason == "rolled-back"
    assert "not ready within 12s" in outcome.message
    assert all(r.weight == 0 for r in outcome.records)


def test_a_policy_that_pauses_ends_the_rehearsal_as_not_promoted(tmp_path: Path) -> None:
    analysis = {**POLICY["analysis"], "onInconclusive": "pause", "inconclusiveLimit": 2}
    pair = make_pair(tmp_path, analysis=analysis)
    outcome = RolloutLoop(
        pair, platform=FakePlatform(), provider=StaticProvider(), clock=FakeClock()
    ).run()

    assert (outcome.reason, outcome.phase, outcome.exit_code) == ("paused", Phase.PAUSED, 1)
    assert [r.t for r in outcome.records if r.verdict is Verdict.INCONCLUSIVE] == [5.0, 10.0]
