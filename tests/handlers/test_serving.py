"""Every handler family on a real TorchServe: answers, 400s, batching, metrics.

One TorchServe serves all archives for the session (see conftest.py). Answers are compared
with the raw model's forward pass in this process; metrics are read from :8082/metrics as
Prometheus would scrape them, and the per-head ones through the operator's own PromQL on a
real Prometheus scraping that TorchServe.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from tests.handlers.conftest import Served
from tests.support import prometheus_text as prom
from tests.support.fixtures import example
from tests.support.models import FamilyModel, make_input, raw_forward, raw_model
from torchrollout.local.prometheus import PrometheusServer, ScrapeTarget
from torchrollout.metrics import PrometheusProvider, Target
from torchrollout.metrics.templates import HEAD_LABEL
from torchrollout.spec import MetricCheck

pytestmark = pytest.mark.torchserve


def expected_answer(
    model: torch.nn.Module, config: dict[str, Any], instance: dict[str, Any]
) -> Any:
    """What the handler should answer for one instance, from the raw forward pass."""
    out = raw_forward(model, instance)
    kind = config["architecture"]["kind"]
    if kind.endswith("regressor"):
        return {"prediction": out[0].tolist()}
    if kind == "lstm-autoencoder":
        x = torch.tensor(instance["input"])
        score = float(((x - out[0]) ** 2).mean())
        return {"score": score, "anomaly": score > config["threshold"]}
    classes = config.get("classes", [])

    def answer(logits: torch.Tensor, names: list[str]) -> dict[str, Any]:
        probs = torch.softmax(logits[0], dim=-1)
        index = int(probs.argmax())
        return {"prediction": names[index] if names else index, "probabilities": probs.tolist()}

    if isinstance(out, dict):
        regression = config["architecture"].get("regression_heads", {})
        return {
            "outputs": {
                t: {"prediction": v[0].tolist() if v.shape[-1] > 1 else float(v[0, 0])}
                if t in regression
                else answer(v, classes.get(t, []))
                for t, v in out.items()
            }
        }
    return answer(out, classes)


def assert_matches(actual: Any, expected: Any) -> None:
    if isinstance(expected, dict):
        for key, value in expected.items():
            assert key in actual, f"{key} missing from {actual}"
            assert_matches(actual[key], value)
    elif isinstance(expected, list):
        assert actual == pytest.approx(expected, abs=1e-5)
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-4, abs=1e-6)
    else:
        assert actual == expected


@pytest.fixture(scope="session")
def references(
    examples_dir: Path, family_models: dict[str, FamilyModel]
) -> dict[str, tuple[torch.nn.Module, dict[str, Any], dict[str, Any]]]:
    """Served model name -> (raw model, config, a known instance)."""
    refs = {}
    for name, fm in family_models.items():
        config = fm.config_data()
        refs[name] = (raw_model(config, fm.weights), config, fm.sample)
    for name, family in [
        ("seqcls", "sequence-classifier"),
        ("regressor", "sequence-regressor"),
        ("anomaly", "lstm-autoencoder-anomaly"),
    ]:
        ex = example(examples_dir, family, "v1")
        refs[name] = (raw_model(ex.config, ex.weights), ex.config, ex.traffic()[5])
    refs["seqcls-pt2"] = refs["seqcls"]
    return refs


FAMILY_NAMES = [
    "seqcls",
    "seqcls-pt2",
    "seq-multi",
    "seq-heads",
    "seq-gru",
    "transformer",
    "cnn1d",
    "gcn",
    "policy",
    "regressor",
    "anomaly",
]


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_answer_matches_the_raw_forward_pass(
    served: Served, client: httpx.Client, references: dict[str, Any], name: str
) -> None:
    model, config, instance = references[name]
    response = served.predict(client, name, instance)
    assert response.status_code == 200, response.text
    assert_matches(response.json(), expected_answer(model, config, instance))


def test_a_request_may_carry_many_instances_of_different_lengths(
    served: Served, client: httpx.Client, references: dict[str, Any]
) -> None:
    model, config, instance = references["seqcls"]
    shorter = {"input": instance["input"][:9]}
    instances = [instance, shorter, instance]
    response = served.predict(client, "seqcls", {"instances": instances})
    assert response.status_code == 200, response.text
    # Compact JSON, said to be JSON: no indentation to pay for on every answer.
    assert response.headers["content-type"].startswith("application/json")
    assert response.content == json.dumps(response.json(), separators=(",", ":")).encode()
    predictions = response.json()["predictions"]
    assert len(predictions) == 3
    for answer, inst in zip(predictions, instances, strict=True):
        assert_matches(answer, expected_answer(model, config, inst))


GOOD_ROW = [0.1, 0.2, 0.3]
MALFORMED: list[tuple[str, Any, str]] = [
    # id, body (a str is sent verbatim as JSON text), what the message must contain
    ("wrong-shape", {"input": [[0.1, 0.2]]}, "input: expected a nested list of shape [N, 3]"),
    ("wrong-type", {"input": "0.1,0.2,0.3"}, "input: expected a nested list"),
    ("strings-inside", {"input": [["a", "b", "c"]]}, "input: expected"),
    ("ragged", {"input": [GOOD_ROW, [0.1]]}, "input: expected"),
    ("nan", '{"input": [[NaN, 0.2, 0.3]]}', "input: NaN or Infinity is not allowed"),
    ("infinity", '{"input": [[Infinity, 0.2, 0.3]]}', "input: NaN or Infinity"),
    ("missing-field", {"inputs": [GOOD_ROW]}, "input: missing field"),
    ("empty-batch", {"instances": []}, "instances: empty batch"),
    ("bad-instance", {"instances": [{"input": [GOOD_ROW]}, {"x": 1}]}, "instances[1].input"),
    ("bad-label", {"input": [GOOD_ROW], "label": "sideways"}, "label: expected a class index"),
    ("not-json", "this is not json", "body"),
    ("a-list", [GOOD_ROW], "body: expected a JSON object"),
]


@pytest.mark.parametrize(
    ("body", "message"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_payloads_get_400_naming_the_field(
    served: Served, client: httpx.Client, body: Any, message: str
) -> None:
    url = f"{served.server.inference_url}/predictions/seqcls"
    if isinstance(body, str):
        response = client.post(url, content=body, headers={"content-type": "application/json"})
    else:
        response = client.post(url, json=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]


def test_graph_adjacency_must_match_the_nodes(served: Served, client: httpx.Client) -> None:
    body = {"nodes": [[0.0] * 5] * 3, "adjacency": [[0, 1], [1, 0]]}
    response = served.predict(client, "gcn", body)
    assert response.status_code == 400
    assert "adjacency: expected shape [3, 3]" in response.json()["message"]


def _worker_pid(served: Served, client: httpx.Client, name: str) -> int:
    described = client.get(f"{served.server.management_url}/models/{name}").json()[0]
    return int(described["workers"][0]["pid"])


def test_malformed_payloads_never_crash_the_worker(
    served: Served, client: httpx.Client, references: dict[str, Any]
) -> None:
    before = _worker_pid(served, client, "seqcls")
    for _, body, _ in MALFORMED:
        served.predict(client, "seqcls", body)
    assert served.predict(client, "seqcls", references["seqcls"][2]).status_code == 200
    assert _worker_pid(served, client, "seqcls") == before


def test_batched_requests_are_answered_separately_and_a_bad_one_fails_alone(
    served: Served, client: httpx.Client, examples_dir: Path
) -> None:
    ex = example(examples_dir, "sequence-classifier", "v2")
    model, config = raw_model(ex.config, ex.weights), ex.config
    described = client.get(f"{served.server.management_url}/models/seqcls-batched").json()[0]
    assert described["batchSize"] == 8
    bodies: list[Any] = [{"input": line["input"]} for line in ex.traffic()[:7]]
    bodies.insert(3, {"input": [[1.0, 2.0]]})
    start = threading.Barrier(len(bodies))

    def call(body: Any) -> httpx.Response:
        with httpx.Client(timeout=30.0) as own:
            start.wait()
            return served.predict(own, "seqcls-batched", body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(call, bodies))
    assert responses[3].status_code == 400
    assert "input: expected a nested list of shape [N, 3]" in responses[3].json()["message"]
    for k, (body, response) in enumerate(zip(bodies, responses, strict=True)):
        if k != 3:
            assert response.status_code == 200, response.text
            assert_matches(response.json(), expected_answer(model, config, body))
    sizes = [int(r.headers.get("x-torchrollout-batch-size", "1")) for r in responses]
    assert max(sizes) > 1, f"no request was batched with another: {sizes}"


def _probe(samples: list[prom.Sample], name: str, model: str, version: str) -> float | None:
    return prom.value(samples, name, ModelName=model, model_version=version)


def test_metrics_count_predictions_labels_and_correct_answers(
    served: Served, client: httpx.Client, references: dict[str, Any]
) -> None:
    model, config, _ = references["seqcls"]
    name, version = "metrics-probe", served.versions["metrics-probe"]
    instances = [references["seqcls"][2]] * 10
    classes = config["classes"]
    predicted = expected_answer(model, config, instances[0])["prediction"]
    wrong = next(c for c in classes if c != predicted)
    confidences = []
    for k, inst in enumerate(instances):
        label = predicted if k < 7 else wrong
        response = served.predict(client, name, {**inst, "label": label})
        assert response.status_code == 200
        confidences.append(response.json()["confidence"])
    for bad in ({"input": [[1.0]]}, {"instances": []}):
        assert served.predict(client, name, bad).status_code == 400

    def settled(samples: list[prom.Sample]) -> bool:
        return _probe(samples, "torchrollout_invalid_inputs", name, version) == 2 and (
            _probe(samples, "torchrollout_labeled", name, version) == 10
        )

    samples = prom.wait_for(served.server.metrics_url, settled)
    assert _probe(samples, "torchrollout_labeled", name, version) == 10
    assert _probe(samples, "torchrollout_correct", name, version) == 7
    assert _probe(samples, "torchrollout_predictions", name, version) == 10
    assert _probe(samples, "torchrollout_invalid_inputs", name, version) == 2
    assert _probe(samples, "torchrollout_confidence_sum", name, version) == pytest.approx(
        sum(confidences), rel=1e-5
    )
    # One latency observation per request, refused ones included; buckets in seconds.
    count = _probe(samples, "torchrollout_inference_latency_seconds_count", name, version)
    assert count == 12
    buckets = [
        ls["le"]
        for ls in prom.labels_of(samples, "torchrollout_inference_latency_seconds_bucket")
        if ls.get("ModelName") == name
    ]
    assert {"0.005", "0.01", "0.5", "10.0", "+Inf"} <= set(buckets)
    labels = prom.labels_of(samples, "torchrollout_labeled")
    assert {"ModelName": name, "model_version": version}.items() <= next(
        ls for ls in labels if ls.get("ModelName") == name
    ).items()
    assert all(set(ls) == {"ModelName", "model_version", "Hostname"} for ls in labels)


def test_regressor_reports_the_absolute_error(
    served: Served, client: httpx.Client, examples_dir: Path
) -> None:
    lines = example(examples_dir, "sequence-regressor", "v1").traffic()[:6]
    version = served.versions["regressor"]
    before = prom.parse(client.get(served.server.metrics_url).text)
    labeled = _probe(before, "torchrollout_labeled", "regressor", version) or 0
    error_sum = _probe(before, "torchrollout_abs_error_sum", "regressor", version) or 0
    errors = []
    for line in lines:
        answer = served.predict(client, "regressor", line).json()
        diffs = [abs(p - y) for p, y in zip(answer["prediction"], line["label"], strict=True)]
        errors.append(sum(diffs) / len(diffs))

    def settled(samples: list[prom.Sample]) -> bool:
        return _probe(samples, "torchrollout_labeled", "regressor", version) == labeled + 6

    samples = prom.wait_for(served.server.metrics_url, settled)
    added = (_probe(samples, "torchrollout_abs_error_sum", "regressor", version) or 0) - error_sum
    assert added == pytest.approx(sum(errors), rel=1e-4)
    assert _probe(samples, "torchrollout_correct", "regressor", version) is None


def test_anomaly_detector_reports_flags_and_correct_flags(
    served: Served, client: httpx.Client, examples_dir: Path
) -> None:
    lines = example(examples_dir, "lstm-autoencoder-anomaly", "v1").traffic()[:30]
    assert any(line["label"] for line in lines), "the slice should hold anomalies"
    version = served.versions["anomaly"]
    before = prom.parse(client.get(served.server.metrics_url).text)
    labeled = _probe(before, "torchrollout_labeled", "anomaly", version) or 0
    flagged_before = _probe(before, "torchrollout_anomalies_flagged", "anomaly", version) or 0
    correct_before = _probe(before, "torchrollout_correct", "anomaly", version) or 0
    answer = served.predict(client, "anomaly", {"instances": lines}).json()["predictions"]
    flagged = sum(a["anomaly"] for a in answer)
    correct = sum(a["anomaly"] == line["label"] for a, line in zip(answer, lines, strict=True))

    def settled(samples: list[prom.Sample]) -> bool:
        return _probe(samples, "torchrollout_labeled", "anomaly", version) == labeled + len(lines)

    samples = prom.wait_for(served.server.metrics_url, settled)
    flagged_now = _probe(samples, "torchrollout_anomalies_flagged", "anomaly", version)
    assert flagged_now == flagged_before + flagged
    assert _probe(samples, "torchrollout_correct", "anomaly", version) == correct_before + correct
    assert flagged > 0


HEAD_COUNTERS = (
    "torchrollout_head_labeled",
    "torchrollout_head_correct",
    "torchrollout_head_abs_error_sum",
)


def _heads_of(samples: list[prom.Sample], version: str) -> dict[str, dict[str, float]]:
    """seq-heads' per-head counters as exposed: metric -> {head: value} (absent: no key)."""
    found: dict[str, dict[str, float]] = {name: {} for name in HEAD_COUNTERS}
    for name, labels, value in samples:
        mine = labels.get("ModelName") == "seq-heads" and labels.get("model_version") == version
        if name in found and mine:
            found[name][labels[HEAD_LABEL]] = value
    return found


def _whole(samples: list[prom.Sample], name: str) -> float:
    return prom.value(samples, name, ModelName="seq-heads") or 0.0


@pytest.fixture(scope="module")
def heads_traffic(references: dict[str, Any]) -> list[dict[str, Any]]:
    """Five labeled requests for `seq-heads`: direction right in 3 of 4, regime in 4 of 4,
    max_profit labeled in all five, the fifth labeling max_profit only."""
    model, config, _ = references["seq-heads"]
    gen = torch.Generator().manual_seed(4000)
    bodies = []
    for k, profit in enumerate([11.0, -2.0, 0.5, 3.0, 1.0]):
        instance = make_input({"steps": 10, "features": 3}, gen)
        outputs = expected_answer(model, config, instance)["outputs"]
        direction = outputs["direction"]["prediction"]
        if k == 3:
            direction = next(c for c in ("down", "flat", "up") if c != direction)
        label = {"direction": direction, "regime": outputs["regime"]["prediction"]}
        label = {"max_profit": profit} if k == 4 else {**label, "max_profit": profit}
        bodies.append({**instance, "label": label})
    return bodies


def _abs_errors(model: torch.nn.Module, bodies: list[dict[str, Any]]) -> float:
    """The sum of |max_profit - label| the handler should count, from the raw model."""
    return sum(
        abs(float(raw_forward(model, body)["max_profit"][0, 0]) - body["label"]["max_profit"])
        for body in bodies
    )


def _send_heads_traffic(served: Served, client: httpx.Client, bodies: list[Any]) -> None:
    # One request of one instance, then one of four: counts do not depend on the batching.
    assert served.predict(client, "seq-heads", bodies[0]).status_code == 200
    answer = served.predict(client, "seq-heads", {"instances": bodies[1:]})
    assert answer.status_code == 200, answer.text


def test_per_head_counters_on_the_metrics_endpoint(
    served: Served,
    client: httpx.Client,
    references: dict[str, Any],
    heads_traffic: list[dict[str, Any]],
) -> None:
    version = served.versions["seq-heads"]
    before = prom.parse(client.get(served.server.metrics_url).text)
    heads_before = _heads_of(before, version)
    _send_heads_traffic(served, client, heads_traffic)

    def added(samples: list[prom.Sample]) -> dict[str, dict[str, float]]:
        return {
            name: {h: v - heads_before[name].get(h, 0.0) for h, v in heads.items()}
            for name, heads in _heads_of(samples, version).items()
        }

    samples = prom.wait_for(
        served.server.metrics_url,
        lambda s: added(s)["torchrollout_head_labeled"].get("max_profit") == 5,
    )
    counted = added(samples)
    assert counted["torchrollout_head_labeled"] == {"direction": 4, "regime": 4, "max_profit": 5}
    assert counted["torchrollout_head_correct"] == {"direction": 3, "regime": 4}
    errors = counted["torchrollout_head_abs_error_sum"]
    assert set(errors) == {"max_profit"}
    assert errors["max_profit"] == pytest.approx(
        _abs_errors(references["seq-heads"][0], heads_traffic), rel=1e-4
    )
    # The whole-model counters as before: instances labeled on every classification head
    # (the fifth is not), correct when all of them are right.
    assert _whole(samples, "torchrollout_labeled") == _whole(before, "torchrollout_labeled") + 4
    assert _whole(samples, "torchrollout_correct") == _whole(before, "torchrollout_correct") + 3
    # The label the operator's PromQL selects a head by is the dimension's name, as is.
    labels = [
        ls
        for ls in prom.labels_of(samples, "torchrollout_head_labeled")
        if ls.get("ModelName") == "seq-heads"
    ]
    assert labels
    assert all(set(ls) == {"ModelName", "model_version", HEAD_LABEL, "Hostname"} for ls in labels)


@pytest.mark.prometheus
def test_head_checks_measure_the_head_on_a_real_prometheus(
    served: Served,
    client: httpx.Client,
    references: dict[str, Any],
    heads_traffic: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    """The operator's PromQL for `head:` checks, on what this TorchServe really exposes."""
    address = served.server.metrics_url.removeprefix("http://").removesuffix("/metrics")
    target = Target("handlers", "seq-heads", revision="r1", version="0.1.0", interval="60s")
    scrape = ScrapeTarget(address, {"namespace": target.namespace, "revision": target.revision})
    labeled = f'sum(torchrollout_head_labeled{{revision="r1",{HEAD_LABEL}="max_profit"}})'
    with PrometheusServer([scrape], workdir=tmp_path) as server:
        provider = PrometheusProvider(server.url)
        try:
            server.wait_for_targets()

            def seen(count: float) -> bool:
                """Prometheus has scraped a max_profit labeled count of `count`."""
                return provider.query(labeled).value == count

            # increase() counts from a series' first scrape: prime the series, and measure
            # the traffic sent once Prometheus has seen it.
            _send_heads_traffic(served, client, heads_traffic)
            exposed = prom.parse(client.get(served.server.metrics_url).text)
            primed = _heads_of(exposed, served.versions["seq-heads"])
            count = primed["torchrollout_head_labeled"]["max_profit"]
            _poll(lambda: seen(count))
            _send_heads_traffic(served, client, heads_traffic)
            _poll(lambda: seen(count + 5))
            checks = {
                "accuracy-direction": MetricCheck(template="accuracy", head="direction"),
                "accuracy-regime": MetricCheck(template="accuracy", head="regime"),
                "mean-absolute-error-max_profit": MetricCheck(
                    template="mean-absolute-error", head="max_profit", max=100
                ),
            }
            measured = {name: provider.measure(c.resolve(0), target) for name, c in checks.items()}
        finally:
            provider.close()
    assert set(checks) == {c.check_name for c in checks.values()}
    for name, m in measured.items():
        assert m.verdict is None and m.value is not None, (name, m)
    mae = _abs_errors(references["seq-heads"][0], heads_traffic) / 5
    # increase() extrapolates to the window's edges alike for the two counters of a ratio.
    assert measured["accuracy-direction"].value == pytest.approx(0.75, rel=1e-6)
    assert measured["accuracy-regime"].value == pytest.approx(1.0, rel=1e-6)
    assert measured["mean-absolute-error-max_profit"].value == pytest.approx(mae, rel=1e-4)
    assert measured["accuracy-direction"].samples is not None


def _poll(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "Prometheus did not scrape the new counts in time"
        time.sleep(0.2)  # Prometheus scrapes every second


def test_a_label_naming_an_unknown_head_is_refused(
    served: Served, client: httpx.Client, references: dict[str, Any]
) -> None:
    instance = references["seq-heads"][2]
    response = served.predict(client, "seq-heads", {**instance, "label": {"sideways": 1}})
    assert response.status_code == 400
    message = response.json()["message"]
    assert message.startswith("label: unknown head 'sideways'")
    assert "['direction', 'regime', 'max_profit']" in message
