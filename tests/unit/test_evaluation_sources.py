"""Evaluation datasets from every source, and the problem a failed send leaves behind.

Real loopback servers throughout: an https file server that records the Authorization
header (tests/archive/servers.py), moto's S3, and a small HTTP server standing in for the
two revisions' Services, which answers a status the test sets.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.archive import servers
from tests.unit.builders import resource
from torchrollout.operator.evaluation import (
    DatasetError,
    EvaluationProblem,
    EvaluationSender,
    Sent,
    load_dataset,
)
from torchrollout.spec import ModelDeployment

SAMPLES = [{"input": [[float(n)]], "label": n % 2} for n in range(4)]


def jsonl(samples: list[Any]) -> bytes:
    return "".join(json.dumps(s) + "\n" for s in samples).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Revisions:
    """What the fake `NAME-canary` / `NAME-stable` Services received, and what they answer."""

    url: str
    status: int = 200
    received: list[tuple[str, Any]] = field(default_factory=list)


@pytest.fixture
def revisions() -> Iterator[Revisions]:
    state = Revisions(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            service = self.path.split("/")[1]
            state.received.append((service, json.loads(body)))
            answer = json.dumps({"prediction": 0} if state.status == 200 else {"code": 500})
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer.encode())

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.HttpsServer]:
    with servers.https_server(tmp_path_factory.mktemp("https")) as server:
        yield server


@pytest.fixture(scope="module")
def s3_server() -> Iterator[servers.S3Server]:
    with servers.s3_server() as server:
        yield server


@pytest.fixture
def s3(s3_server: servers.S3Server, monkeypatch: pytest.MonkeyPatch) -> Any:
    import boto3.session

    servers.use_s3(monkeypatch, s3_server.endpoint)
    client = boto3.session.Session().client("s3")
    client.create_bucket(Bucket="datasets")
    return client


class Sender:
    """An EvaluationSender aimed at `revisions`, trusting the https server's certificate."""

    def __init__(
        self, revisions: Revisions, https: servers.HttpsServer | None = None, **kwargs: Any
    ) -> None:
        self.errors: list[str] = []
        verify = https.ssl_context() if https is not None else True
        self.sender = EvaluationSender(
            httpx.Client(verify=verify, timeout=5.0),
            service_url=revisions.url + "/{service}",
            on_error=self.errors.append,
            **kwargs,
        )

    def send(self, md: ModelDeployment) -> Sent:
        return self.sender.send(md)

    def problem(self, md: ModelDeployment) -> EvaluationProblem | None:
        return self.sender.problem(md)


@pytest.fixture
def make_sender(revisions: Revisions) -> Iterator[Any]:
    made: list[Sender] = []

    def make(https: servers.HttpsServer | None = None, **kwargs: Any) -> Sender:
        made.append(Sender(revisions, https, **kwargs))
        return made[-1]

    yield make
    for sender in made:
        sender.sender.close()


def deployment(uri: str, *, sha: str | None = None, per_tick: int = 3) -> ModelDeployment:
    evaluation: dict[str, Any] = {"datasetUri": uri, "samplesPerTick": per_tick}
    if sha is not None:
        evaluation["sha256"] = sha
    return resource(spec={"canary": {"evaluation": evaluation}})


def sent_inputs(revisions: Revisions, service: str) -> list[float]:
    return [body["input"][0][0] for s, body in revisions.received if s == service]


# --- sources ---------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["t0ken", None])
def test_https_dataset_with_the_senders_token(
    https: servers.HttpsServer,
    revisions: Revisions,
    make_sender: Any,
    token: str | None,
) -> None:
    (https.root / "eval.jsonl").write_bytes(jsonl(SAMPLES))
    md = deployment(f"{https.url}/eval.jsonl")
    asked: list[ModelDeployment] = []

    def token_for(md: ModelDeployment) -> str | None:
        asked.append(md)
        return token

    sender = make_sender(https, token_for=token_for)
    assert sender.send(md) == Sent(requests=6, failures=0)
    assert https.authorization[-1] == (None if token is None else f"Bearer {token}")
    assert asked == [md]
    assert sent_inputs(revisions, "fraud-canary") == sent_inputs(revisions, "fraud-stable")
    assert sent_inputs(revisions, "fraud-canary") == [0.0, 1.0, 2.0]
    assert sender.problem(md) is None


def test_https_dataset_not_found_is_unreachable(
    https: servers.HttpsServer, revisions: Revisions, make_sender: Any
) -> None:
    uri = f"{https.url}/missing.jsonl"
    sender = make_sender(https)
    assert sender.send(deployment(uri)) == Sent(0, 0)
    problem = sender.problem(deployment(uri))
    assert problem is not None
    assert problem.reason == "DatasetUnreachable"
    assert problem.message.startswith(f"evaluation dataset {uri} could not be read: HTTP 404")
    assert sender.errors == [problem.message]
    assert revisions.received == []


def test_file_dataset(tmp_path: Path, revisions: Revisions, make_sender: Any) -> None:
    dataset = tmp_path / "eval.jsonl"
    dataset.write_bytes(jsonl(SAMPLES))
    sender = make_sender()
    md = deployment(dataset.as_uri(), per_tick=3)
    sender.send(md)
    sender.send(md)
    assert sent_inputs(revisions, "fraud-canary") == [0.0, 1.0, 2.0, 3.0, 0.0, 1.0]


def test_s3_dataset(s3: Any, revisions: Revisions, make_sender: Any) -> None:
    data = jsonl(SAMPLES)
    s3.put_object(Bucket="datasets", Key="fraud/eval.jsonl", Body=data)
    sender = make_sender()
    md = deployment("s3://datasets/fraud/eval.jsonl", sha=sha256(data))
    assert sender.send(md) == Sent(6, 0)
    assert sender.problem(md) is None

    missing = deployment("s3://datasets/fraud/none.jsonl")
    sender.send(missing)
    problem = sender.problem(missing)
    assert problem is not None
    assert problem.reason == "DatasetUnreachable"
    assert "s3://datasets/fraud/none.jsonl could not be read: no such object (NoSuchKey)" in (
        problem.message
    )


def test_a_pvc_dataset_is_refused_at_run_time() -> None:
    with httpx.Client() as client, pytest.raises(DatasetError) as caught:
        load_dataset("pvc://data/eval.jsonl", sha256=None, client=client)
    assert caught.value.problem == EvaluationProblem(
        "DatasetUnsupported",
        "evaluation dataset pvc://data/eval.jsonl: the operator reads the evaluation data "
        "itself and cannot mount a claim of your namespace; use s3:// or https:// (file:// "
        "works in a rehearsal)",
    )


# --- digests and contents ------------------------------------------------------------------


def test_a_matching_sha256_is_used(tmp_path: Path, revisions: Revisions, make_sender: Any) -> None:
    dataset = tmp_path / "eval.jsonl"
    dataset.write_bytes(jsonl(SAMPLES))
    md = deployment(dataset.as_uri(), sha=sha256(dataset.read_bytes()))
    sender = make_sender()
    assert sender.send(md) == Sent(6, 0)
    assert sender.problem(md) is None


def test_a_sha256_mismatch_names_both_digests_and_sends_nothing(
    tmp_path: Path, revisions: Revisions, make_sender: Any
) -> None:
    dataset = tmp_path / "eval.jsonl"
    dataset.write_bytes(jsonl(SAMPLES))
    md = deployment(dataset.as_uri(), sha="a" * 64)
    sender = make_sender()
    assert sender.send(md) == Sent(0, 0)
    problem = sender.problem(md)
    assert problem is not None
    assert problem.reason == "DigestMismatch"
    assert (
        f"evaluation dataset {dataset.as_uri()} has sha256 {sha256(dataset.read_bytes())}, "
        f"expected {'a' * 64}"
    ) in problem.message
    assert revisions.received == []


@pytest.mark.parametrize(
    ("content", "reason", "says"),
    [
        (b"", "DatasetEmpty", "has no samples"),
        (b"\n  \n", "DatasetEmpty", "has no samples"),
        (b'{"input": [[1]], "label": 0}\n[1, 2]\n', "DatasetInvalid", "line 2 is a JSON list"),
        (b'{"input": [[1]]}\n\n{"input": \n', "DatasetInvalid", "line 3 is not JSON"),
        (b'"text"\n{"input": 1}\n', "DatasetInvalid", "line 1 is a JSON str, not an object"),
        (b"\xff\xfe{}\n", "DatasetInvalid", "is not UTF-8 text"),
    ],
)
def test_unusable_contents(
    tmp_path: Path,
    revisions: Revisions,
    make_sender: Any,
    content: bytes,
    reason: str,
    says: str,
) -> None:
    dataset = tmp_path / "eval.jsonl"
    dataset.write_bytes(content)
    md = deployment(dataset.as_uri())
    sender = make_sender()
    assert sender.send(md) == Sent(0, 0)
    problem = sender.problem(md)
    assert problem is not None
    assert problem.reason == reason
    assert dataset.as_uri() in problem.message
    assert says in problem.message


# --- the problem's lifetime, and caching -----------------------------------------------------


def test_a_failed_load_is_retried_and_a_success_clears_the_problem(
    tmp_path: Path, revisions: Revisions, make_sender: Any
) -> None:
    dataset = tmp_path / "eval.jsonl"
    dataset.write_bytes(b'{"input": [[0.0]], "label": 0}\nnot json\n')
    md = deployment(dataset.as_uri())
    sender = make_sender()
    sender.send(md)
    problem = sender.problem(md)
    assert problem is not None
    assert (problem.reason, "line 2" in problem.message) == ("DatasetInvalid", True)

    dataset.write_bytes(jsonl(SAMPLES))  # fixed: the next send reads it again
    assert sender.send(md) == Sent(6, 0)
    assert sender.problem(md) is None


def test_a_loaded_dataset_stays_cached_per_uri_and_digest(
    tmp_path: Path, revisions: Revisions, make_sender: Any
) -> None:
    dataset = tmp_path / "eval.jsonl"
    dataset.write_bytes(jsonl(SAMPLES))
    digest = sha256(dataset.read_bytes())
    sender = make_sender()
    assert sender.send(deployment(dataset.as_uri(), sha=digest)) == Sent(6, 0)
    dataset.unlink()
    assert sender.send(deployment(dataset.as_uri(), sha=digest)) == Sent(6, 0)
    # Another digest is another dataset: read again (and now missing).
    other = deployment(dataset.as_uri(), sha="b" * 64)
    assert sender.send(other) == Sent(0, 0)
    problem = sender.problem(other)
    assert problem is not None
    assert problem.reason == "DatasetUnreachable"


def test_failing_requests_are_a_problem_until_they_succeed(
    tmp_path: Path, revisions: Revisions, make_sender: Any
) -> None:
    dataset = tmp_path / "eval.jsonl"
    dataset.write_bytes(jsonl(SAMPLES))
    md = deployment(dataset.as_uri(), per_tick=2)
    sender = make_sender()
    revisions.status = 500
    assert sender.send(md) == Sent(requests=4, failures=4)
    problem = sender.problem(md)
    assert problem is not None
    assert problem.reason == "RequestsFailed"
    assert problem.message.startswith(
        f"4 of 4 evaluation requests with samples of {dataset.as_uri()} failed (first: "
        f"{revisions.url}/fraud-canary/predictions/fraud answered HTTP 500"
    )
    assert "fraud-canary and fraud-stable serve model fraud" in problem.message
    assert sender.errors == [problem.message]

    revisions.status = 200
    assert sender.send(md) == Sent(4, 0)
    assert sender.problem(md) is None


def test_a_token_that_cannot_be_read_is_reported(
    https: servers.HttpsServer, revisions: Revisions, make_sender: Any
) -> None:
    (https.root / "eval.jsonl").write_bytes(jsonl(SAMPLES))

    def token_for(md: ModelDeployment) -> str | None:
        raise KeyError("secret risk/eval-token has no key 'token'")

    md = deployment(f"{https.url}/eval.jsonl")
    sender = make_sender(https, token_for=token_for)
    assert sender.send(md) == Sent(0, 0)
    problem = sender.problem(md)
    assert problem is not None
    assert problem.reason == "DatasetUnreachable"
    assert "its bearer token could not be read (KeyError" in problem.message


def test_problems_are_kept_per_resource(
    tmp_path: Path, revisions: Revisions, make_sender: Any
) -> None:
    good = tmp_path / "good.jsonl"
    good.write_bytes(jsonl(SAMPLES))
    sender = make_sender()
    broken = resource(
        metadata={"name": "other"},
        spec={"canary": {"evaluation": {"datasetUri": (tmp_path / "none.jsonl").as_uri()}}},
    )
    working = deployment(good.as_uri())
    sender.send(broken)
    sender.send(working)
    assert sender.problem(working) is None
    problem = sender.problem(broken)
    assert problem is not None
    assert problem.reason == "DatasetUnreachable"
    sender.sender.forget(broken)
    assert sender.problem(broken) is None
