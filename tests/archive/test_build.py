"""`torchrollout archive build`: each source kind, each failing step, nothing half-published.

Most cases call `build_archive` directly; the CLI cases check what a user (or the init
container) sees: exit status, the failing step's name on stderr, the JSON summary on stdout.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from tests.archive.conftest import HttpsServer, S3Server
from tests.support.fixtures import Example, example
from tests.support.models import REPO, write_formats
from torchrollout.archive import (
    DigestMismatch,
    FetchError,
    LoadError,
    SmokeTestFailed,
    UnsafeWeights,
)
from torchrollout.archive.build import BuildRequest, BuildResult, build_archive
from torchrollout.cli import app


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def request(ex: Example, output: Path, **overrides: Any) -> BuildRequest:
    fields: dict[str, Any] = {
        "source": str(ex.weights),
        "name": "seqcls",
        "version": "1.0.0",
        "handler": "sequence-classifier",
        "output": output,
        "config": ex.config,
        "sample_input": ex.sample,
    }
    fields.update(overrides)
    return BuildRequest(**fields)


def published(output: Path) -> list[str]:
    """Everything left in the output folder (temp build dirs included)."""
    return sorted(p.name for p in output.iterdir()) if output.exists() else []


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["archive", "build", *args])


def cli_args(ex: Example, output: Path, tmp_path: Path) -> list[str]:
    (tmp_path / "config.json").write_text(json.dumps(ex.config))
    (tmp_path / "sample.json").write_text(json.dumps(ex.sample))
    return [
        "--source", str(ex.weights),
        "--handler", "sequence-classifier",
        "--name", "seqcls",
        "--version", "1.0.0",
        "--output", str(output),
        "--config", str(tmp_path / "config.json"),
        "--sample-input", str(tmp_path / "sample.json"),
    ]  # fmt: skip


def test_cli_publishes_a_verified_archive_and_prints_a_summary(
    seq_v1: Example, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    args = cli_args(seq_v1, output, tmp_path)
    result = cli(*args, "--sha256", sha256(seq_v1.weights), "--batch-size", "4")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    mar = output / "seqcls.mar"
    assert published(output) == ["seqcls.mar"]
    assert summary["archive"] == str(mar)
    assert summary["sha256"] == sha256(mar)
    assert summary["size_bytes"] == mar.stat().st_size
    assert summary["source"]["sha256"] == sha256(seq_v1.weights)
    assert summary["weights_format"] == "state_dict"
    assert summary["sample_output"]["prediction"] in seq_v1.config["classes"]
    for key in ("load_seconds", "smoke_test_seconds", "fetch_seconds", "pack_seconds"):
        assert summary[key] >= 0
    with zipfile.ZipFile(mar) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
        packed_config = json.loads(archive.read("torchrollout-config.json"))
    assert {
        "model.pt",
        "sequence_classifier.py",
        "torchrollout_base.py",
        "torchrollout_io.py",
        "torchrollout_models.py",
        "torchrollout_runtime.py",
        "metrics.yaml",
        "model-config.yaml",
    } <= names
    assert manifest["model"]["modelVersion"] == "1.0.0"
    assert packed_config == seq_v1.config


@pytest.mark.parametrize("kind", ["plain", "file", "pvc"])
def test_local_sources(
    seq_v1: Example, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    weights = seq_v1.weights
    source = {
        "plain": str(weights),
        "file": weights.as_uri(),
        "pvc": f"pvc://{weights.parent.name}/{weights.name}",
    }[kind]
    monkeypatch.setenv("TORCHROLLOUT_PVC_ROOT", str(weights.parent.parent))
    result = build_archive(request(seq_v1, tmp_path, source=source))
    assert result.source.sha256 == sha256(weights)
    assert result.archive.is_file()


def _serve(server: HttpsServer, weights: Path, name: str) -> str:
    (server.root / name).write_bytes(weights.read_bytes())
    return f"{server.url}/{name}"


def test_https_source_trusted_by_ca_bundle(
    seq_v1: Example, https_server: HttpsServer, tmp_path: Path
) -> None:
    url = _serve(https_server, seq_v1.weights, "v1.pt")
    result = build_archive(request(seq_v1, tmp_path, source=url, ca_bundle=https_server.ca_bundle))
    assert result.source.sha256 == sha256(seq_v1.weights)


def test_https_source_trusted_by_ssl_cert_file(
    seq_v1: Example, https_server: HttpsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _serve(https_server, seq_v1.weights, "v1-env.pt")
    monkeypatch.setenv("SSL_CERT_FILE", str(https_server.ca_bundle))
    assert build_archive(request(seq_v1, tmp_path, source=url)).archive.is_file()


def test_https_source_with_an_untrusted_certificate_fails_at_fetch(
    seq_v1: Example, https_server: HttpsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    url = _serve(https_server, seq_v1.weights, "v1-untrusted.pt")
    with pytest.raises(FetchError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
        build_archive(request(seq_v1, tmp_path / "out", source=url))
    assert published(tmp_path / "out") == []


def test_https_not_found_fails_at_fetch(
    seq_v1: Example, https_server: HttpsServer, tmp_path: Path
) -> None:
    url = f"{https_server.url}/missing.pt"
    with pytest.raises(FetchError, match="HTTP 404"):
        build_archive(request(seq_v1, tmp_path, source=url, ca_bundle=https_server.ca_bundle))


def test_s3_source(seq_v1: Example, s3_env: S3Server, tmp_path: Path) -> None:
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="fraud/v1/model.pt", Body=seq_v1.weights.read_bytes())
    result = build_archive(
        request(
            seq_v1, tmp_path, source="s3://models/fraud/v1/model.pt", sha256=sha256(seq_v1.weights)
        )
    )
    assert result.source.size == seq_v1.weights.stat().st_size
    with pytest.raises(FetchError, match=r"NoSuchKey|Not Found|404"):
        build_archive(request(seq_v1, tmp_path, source="s3://models/fraud/v9/model.pt"))


def test_digest_mismatch_leaves_the_previous_archive_untouched(
    seq_v1: Example, tmp_path: Path
) -> None:
    good = build_archive(request(seq_v1, tmp_path))
    before = good.archive.read_bytes()
    v3 = example(seq_v1.folder.parent.parent, "sequence-classifier", "v3")
    with pytest.raises(DigestMismatch) as caught:
        build_archive(request(v3, tmp_path, sha256=sha256(seq_v1.weights)))
    assert caught.value.step == "verify"
    assert caught.value.actual == sha256(v3.weights)
    assert good.archive.read_bytes() == before
    assert published(tmp_path) == ["seqcls.mar"]


def test_cli_names_the_failing_step_on_digest_mismatch(seq_v1: Example, tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = cli(*cli_args(seq_v1, output, tmp_path), "--sha256", "0" * 64)
    assert result.exit_code == 1
    assert "archive build failed at verify: sha256 of" in result.stderr
    assert published(output) == []


class _RunsCode:
    """Pickles to "call Path.touch(marker)": what a malicious checkpoint looks like."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (pathlib.Path.touch, (self.marker,))


def test_a_pickle_with_code_is_refused_and_never_runs(seq_v1: Example, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    state = torch.load(seq_v1.weights, weights_only=True)
    torch.save({**state, "extra": _RunsCode(marker)}, evil)
    with pytest.raises(UnsafeWeights, match="weights_only") as caught:
        build_archive(request(seq_v1, tmp_path / "out", source=str(evil)))
    assert caught.value.step == "load"
    assert not marker.exists()
    assert published(tmp_path / "out") == []


def test_corrupt_weights_fail_at_load(seq_v1: Example, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(seq_v1.weights.read_bytes()[:200])
    with pytest.raises(LoadError):
        build_archive(request(seq_v1, tmp_path / "out", source=str(corrupt)))
    assert published(tmp_path / "out") == []


def test_weights_of_another_architecture_fail_at_load_with_the_reason(
    seq_v1: Example, tmp_path: Path
) -> None:
    regressor = example(seq_v1.folder.parent.parent, "sequence-regressor", "v1")
    with pytest.raises(LoadError, match=r"state_dict|size mismatch|Missing key") as caught:
        build_archive(request(seq_v1, tmp_path / "out", source=str(regressor.weights)))
    assert caught.value.step == "load"
    assert published(tmp_path / "out") == []


def test_cli_exits_non_zero_naming_the_smoke_test(seq_v1: Example, tmp_path: Path) -> None:
    output = tmp_path / "out"
    args = cli_args(seq_v1, output, tmp_path)
    (tmp_path / "sample.json").write_text(json.dumps({"input": [[1.0, 2.0]]}))
    result = cli(*args)
    assert result.exit_code == 1
    assert "archive build failed at smoke-test: sample input answered HTTP 400" in result.stderr
    assert "input: expected a nested list of shape [N, 3]" in result.stderr
    assert published(output) == []


def test_smoke_test_failure_raises_its_own_error(seq_v1: Example, tmp_path: Path) -> None:
    with pytest.raises(SmokeTestFailed):
        build_archive(request(seq_v1, tmp_path, sample_input={"instances": []}))


def test_unknown_handler_is_a_usage_error(seq_v1: Example, tmp_path: Path) -> None:
    result = cli(*cli_args(seq_v1, tmp_path / "out", tmp_path)[:2], "--handler", "nope",
                 "--name", "x", "--version", "1", "--output", str(tmp_path / "out"))  # fmt: skip
    assert result.exit_code == 2
    assert "archive build failed at" in result.stderr


CUSTOM_HANDLER = '''
"""A custom handler: the built-in classifier plus a field of its own."""
from torchrollout_base import ClassifierHandler


class TaggedClassifier(ClassifierHandler):
    def postprocess(self, output, instances):
        outcomes = super().postprocess(output, instances)
        for outcome in outcomes:
            outcome.body["tag"] = "custom"
        return outcomes
'''


def test_custom_handler_from_a_uri(seq_v1: Example, tmp_path: Path) -> None:
    handler = tmp_path / "tagged_classifier.py"
    handler.write_text(CUSTOM_HANDLER)
    result = build_archive(request(seq_v1, tmp_path / "out", handler=handler.as_uri()))
    assert result.sample_output["tag"] == "custom"


@pytest.fixture(scope="module")
def formats(seq_v1: Example, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_formats(tmp_path_factory.mktemp("formats"), seq_v1.weights, seq_v1.config, 16)


@pytest.mark.parametrize("fmt", ["torchscript", "export"])
def test_torchscript_and_export_weights(
    seq_v1: Example, formats: dict[str, Path], tmp_path: Path, fmt: str
) -> None:
    reference = build_archive(request(seq_v1, tmp_path / "ref"))
    config = {"classes": seq_v1.config["classes"], "input": {"shape": [16, 3]}}
    result: BuildResult = build_archive(
        request(seq_v1, tmp_path / fmt, source=str(formats[fmt]), config=config)
    )
    assert result.weights_format == fmt
    assert result.sample_output["probabilities"] == pytest.approx(
        reference.sample_output["probabilities"], abs=1e-5
    )


def test_dynamic_int8_quantization_by_config(seq_v1: Example, tmp_path: Path) -> None:
    reference = build_archive(request(seq_v1, tmp_path / "ref"))
    config = {**seq_v1.config, "quantize": "dynamic-int8"}
    result = build_archive(request(seq_v1, tmp_path / "q", config=config))
    assert result.sample_output["prediction"] == reference.sample_output["prediction"]
    assert result.sample_output["probabilities"] == pytest.approx(
        reference.sample_output["probabilities"], abs=0.05
    )


def test_the_cli_module_does_not_import_torch() -> None:
    code = "import sys, torchrollout.cli; assert 'torch' not in sys.modules, 'torch imported'"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env)


def test_the_installed_command_exits_1_on_failure(seq_v1: Example, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "torchrollout"
    args = cli_args(seq_v1, tmp_path / "out", tmp_path)
    done = subprocess.run(
        [str(exe), "archive", "build", *args, "--sha256", "f" * 64],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "archive build failed at verify" in done.stderr
    assert done.stdout == ""
