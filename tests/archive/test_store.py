"""The archive store: one build per revision, every pod fetches and verifies it.

Two cases run the real build (torch-model-archiver, a smoke test) through the CLI, into a
file:// store and into S3 (moto's server on loopback). The others replace the build with
`FakeBuild`, through `store.build_into_store`'s seam, because what they pin is what the store
does around a build: reuse, rebuild, commit order, digests and the errors a user sees.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.archive.conftest import S3Server
from tests.support.fixtures import Example
from torchrollout.archive import store as store_module
from torchrollout.archive.build import BuildRequest, BuildResult
from torchrollout.archive.errors import ArchiveDigestMismatch, ArchiveMissing
from torchrollout.archive.fetch import Fetched
from torchrollout.archive.store import ArchiveStore, build_into_store
from torchrollout.archive.torchserve import free_ports
from torchrollout.cli import app


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeBuild:
    """Stands in for build_archive: writes OUTPUT/NAME.mar with known bytes, counts calls."""

    def __init__(self, content: bytes = b"a model archive") -> None:
        self.content = content
        self.calls = 0

    def __call__(self, request: BuildRequest, *, progress: Any = None) -> BuildResult:
        self.calls += 1
        request.output.mkdir(parents=True, exist_ok=True)
        mar = request.output / f"{request.name}.mar"
        mar.write_bytes(self.content)
        source = Fetched(uri=request.source, path=mar, sha256="0" * 64, size=0)
        return BuildResult(
            archive=mar,
            sha256=sha256(self.content),
            size=len(self.content),
            source=source,
            weights_format="state_dict",
            handler=request.handler,
            fetch_seconds=0.0,
            pack_seconds=0.0,
            load_seconds=0.0,
            smoke_seconds=0.0,
            sample_output=None,
        )


def request(output: Path) -> BuildRequest:
    return BuildRequest(
        source="file:///weights/model.pt",
        name="seqcls",
        version="1.0.0",
        handler="sequence-classifier",
        output=output,
    )


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["archive", *args])


def fake_build_args(output: Path, *more: str) -> list[str]:
    return [
        "build",
        "--source", "file:///weights/model.pt",
        "--handler", "sequence-classifier",
        "--name", "seqcls",
        "--version", "1.0.0",
        "--output", str(output),
        *more,
    ]  # fmt: skip


@pytest.fixture
def fake_build(monkeypatch: pytest.MonkeyPatch) -> FakeBuild:
    """The CLI's build replaced by a FakeBuild."""
    fake = FakeBuild()
    monkeypatch.setattr(store_module, "build_archive", fake)
    return fake


def files(folder: Path) -> list[str]:
    """Every file under `folder`, hidden ones too, relative to it."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


# --- real builds -------------------------------------------------------------------------


def real_build_args(ex: Example, output: Path, tmp_path: Path, *more: str) -> list[str]:
    (tmp_path / "config.json").write_text(json.dumps(ex.config))
    (tmp_path / "sample.json").write_text(json.dumps(ex.sample))
    return [
        "build",
        "--source", str(ex.weights),
        "--handler", "sequence-classifier",
        "--name", "seqcls",
        "--version", "1.0.0",
        "--output", str(output),
        "--config", str(tmp_path / "config.json"),
        "--sample-input", str(tmp_path / "sample.json"),
        *more,
    ]  # fmt: skip


def test_a_revision_is_built_once_then_reused_and_fetched(seq_v1: Example, tmp_path: Path) -> None:
    store = tmp_path / "store"
    uri = f"file://{store}"
    mar_uri = f"{uri}/seqcls/ab12cd/seqcls.mar"
    first_digest = tmp_path / "first.digest"
    built = cli(
        *real_build_args(
            seq_v1, tmp_path / "job1", tmp_path,
            "--store", uri, "--revision", "ab12cd", "--digest-file", str(first_digest),
        )
    )  # fmt: skip
    assert built.exit_code == 0, built.output
    summary = json.loads(built.stdout)
    mar = store / "seqcls" / "ab12cd" / "seqcls.mar"
    digest = sha256(mar.read_bytes())
    assert files(store) == ["seqcls/ab12cd/seqcls.mar", "seqcls/ab12cd/seqcls.mar.sha256"]
    assert (store / "seqcls/ab12cd/seqcls.mar.sha256").read_text() == f"{digest}\n"
    assert first_digest.read_text() == digest
    assert summary["sha256"] == digest
    assert summary["store"] == mar_uri
    assert summary["reused"] is False
    assert summary["weights_format"] == "state_dict"  # the build's own summary is kept
    assert f"uploaded {mar_uri}" in built.stderr

    second_digest = tmp_path / "second.digest"
    again = cli(
        *real_build_args(
            seq_v1, tmp_path / "job2", tmp_path,
            "--store", uri, "--revision", "ab12cd", "--digest-file", str(second_digest),
        )
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert f"found {mar_uri} (sha256 {digest}): reusing it, nothing rebuilt" in again.stderr
    reused = json.loads(again.stdout)
    assert reused == {
        "archive": str(tmp_path / "job2" / "seqcls.mar"),
        "size_bytes": mar.stat().st_size,
        "sha256": digest,
        "store": mar_uri,
        "reused": True,
    }
    assert second_digest.read_text() == digest
    assert (tmp_path / "job2" / "seqcls.mar").read_bytes() == mar.read_bytes()

    pod = tmp_path / "models"
    fetched = cli(
        "fetch", "--store", uri, "--name", "seqcls", "--revision", "ab12cd",
        "--sha256", digest, "--output", str(pod),
    )  # fmt: skip
    assert fetched.exit_code == 0, fetched.output
    assert json.loads(fetched.stdout)["sha256"] == digest
    assert files(pod) == ["seqcls.mar"]
    assert (pod / "seqcls.mar").read_bytes() == mar.read_bytes()


def test_a_revision_built_into_s3_is_fetched_by_a_pod(
    seq_v1: Example, s3_env: S3Server, tmp_path: Path
) -> None:
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="archives-real")
    digest_file = tmp_path / "digest"
    built = cli(
        *real_build_args(
            seq_v1, tmp_path / "job", tmp_path,
            "--store", "s3://archives-real/team", "--revision", "r1",
            "--digest-file", str(digest_file),
        )
    )  # fmt: skip
    assert built.exit_code == 0, built.output
    digest = digest_file.read_text()
    body = s3.get_object(Bucket="archives-real", Key="team/seqcls/r1/seqcls.mar")["Body"].read()
    marker = s3.get_object(Bucket="archives-real", Key="team/seqcls/r1/seqcls.mar.sha256")
    assert sha256(body) == digest
    assert marker["Body"].read() == f"{digest}\n".encode()
    assert json.loads(built.stdout)["store"] == "s3://archives-real/team/seqcls/r1/seqcls.mar"

    fetched = cli(
        "fetch", "--store", "s3://archives-real/team", "--name", "seqcls", "--revision", "r1",
        "--sha256", digest, "--output", str(tmp_path / "models"),
    )  # fmt: skip
    assert fetched.exit_code == 0, fetched.output
    assert (tmp_path / "models" / "seqcls.mar").read_bytes() == body


# --- the store around a build (FakeBuild) ---------------------------------------------------


@pytest.fixture(params=["file", "pvc"])
def local_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, Path]:
    """(store URI, the folder it names): a file:// folder, or a claim mounted under the root."""
    if request.param == "file":
        folder = tmp_path / "store"
        return f"file://{folder}", folder
    root = tmp_path / "pvc"
    (root / "archives").mkdir(parents=True)  # the claim's mount point
    monkeypatch.setenv("TORCHROLLOUT_PVC_ROOT", str(root))
    return "pvc://archives/models", root / "archives" / "models"


def test_the_second_build_of_a_revision_reuses_the_first(
    local_store: tuple[str, Path], tmp_path: Path
) -> None:
    uri, folder = local_store
    store, fake, notes = ArchiveStore(uri), FakeBuild(), []
    first = build_into_store(
        request(tmp_path / "a"), store, revision="r1", build=fake, note=notes.append
    )
    assert (first.reused, fake.calls) == (False, 1)
    assert files(folder) == ["seqcls/r1/seqcls.mar", "seqcls/r1/seqcls.mar.sha256"]
    second = build_into_store(
        request(tmp_path / "b"), store, revision="r1", build=fake, note=notes.append
    )
    assert (second.reused, fake.calls) == (True, 1)
    assert second.archive.sha256 == first.archive.sha256 == sha256(fake.content)
    assert (tmp_path / "b" / "seqcls.mar").read_bytes() == fake.content
    assert notes[-1].startswith(f"found {uri}/seqcls/r1/seqcls.mar (sha256 ")
    build_into_store(request(tmp_path / "c"), store, revision="r2", build=fake)
    assert fake.calls == 2  # another revision is another build


@pytest.mark.parametrize(
    "marker",
    [None, "f" * 64 + "\n", "not a digest\n"],
    ids=["no marker", "a marker of other bytes", "a garbled marker"],
)
def test_an_unfinished_upload_is_built_and_uploaded_again(
    local_store: tuple[str, Path], tmp_path: Path, marker: str | None
) -> None:
    uri, folder = local_store
    (folder / "seqcls" / "r1").mkdir(parents=True)
    (folder / "seqcls/r1/seqcls.mar").write_bytes(b"half an upl")
    if marker is not None:
        (folder / "seqcls/r1/seqcls.mar.sha256").write_text(marker)
    fake = FakeBuild()
    result = build_into_store(
        request(tmp_path / "out"), ArchiveStore(uri), revision="r1", build=fake
    )
    assert (result.reused, fake.calls) == (False, 1)
    assert (folder / "seqcls/r1/seqcls.mar").read_bytes() == fake.content
    assert (folder / "seqcls/r1/seqcls.mar.sha256").read_text() == f"{sha256(fake.content)}\n"
    assert files(folder) == ["seqcls/r1/seqcls.mar", "seqcls/r1/seqcls.mar.sha256"]


def test_the_cli_says_it_reused_and_writes_the_digest_either_way(
    fake_build: FakeBuild, tmp_path: Path
) -> None:
    uri = f"file://{tmp_path / 'store'}"
    digest = sha256(fake_build.content)
    for run, job in enumerate(["job1", "job2"]):
        digest_file = tmp_path / f"{job}.digest"
        result = cli(
            *fake_build_args(
                tmp_path / job, "--store", uri, "--revision", "r1",
                "--digest-file", str(digest_file),
            )
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert digest_file.read_text() == digest
        assert json.loads(result.stdout)["reused"] is (run == 1)
    assert "reusing it, nothing rebuilt" in result.stderr
    assert fake_build.calls == 1


def test_fetch_refuses_an_archive_changed_in_the_store(
    local_store: tuple[str, Path], tmp_path: Path
) -> None:
    uri, folder = local_store
    built = build_into_store(
        request(tmp_path / "job"), ArchiveStore(uri), revision="r1", build=FakeBuild()
    )
    mar = folder / "seqcls/r1/seqcls.mar"
    mar.write_bytes(b"tampered with")
    pod = tmp_path / "models"
    result = cli(
        "fetch", "--store", uri, "--name", "seqcls", "--revision", "r1",
        "--sha256", built.archive.sha256, "--output", str(pod),
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        f"archive fetch failed at digest: {uri}/seqcls/r1/seqcls.mar has sha256 "
        f"{sha256(b'tampered with')}, expected {built.archive.sha256}"
    )
    assert result.stdout == ""
    assert files(pod) == []  # no partial file


def test_fetch_keeps_a_previous_archive_when_the_new_one_is_refused(tmp_path: Path) -> None:
    store = ArchiveStore(f"file://{tmp_path / 'store'}")
    build_into_store(request(tmp_path / "job"), store, revision="r1", build=FakeBuild())
    pod = tmp_path / "models"
    pod.mkdir()
    (pod / "seqcls.mar").write_bytes(b"the archive already there")
    with pytest.raises(ArchiveDigestMismatch) as caught:
        store.download("seqcls", "r1", pod, sha256="e" * 64)
    assert caught.value.step == "digest"
    assert files(pod) == ["seqcls.mar"]
    assert (pod / "seqcls.mar").read_bytes() == b"the archive already there"


def test_fetch_before_the_build_finished_names_the_path_and_the_job(
    local_store: tuple[str, Path], tmp_path: Path
) -> None:
    uri, folder = local_store
    result = cli(
        "fetch", "--store", uri, "--name", "seqcls", "--revision", "r9",
        "--sha256", "a" * 64, "--output", str(tmp_path / "models"),
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr == (
        f"archive fetch failed at store: no archive at {uri}/seqcls/r9/seqcls.mar "
        f"({folder}/seqcls/r9/seqcls.mar): the build Job of revision r9 must finish first\n"
    )


def test_a_claim_that_is_not_mounted_is_named(
    fake_build: FakeBuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCHROLLOUT_PVC_ROOT", str(tmp_path / "pvc"))
    result = cli(
        *fake_build_args(tmp_path / "job", "--store", "pvc://archives/m", "--revision", "r1")
    )
    assert result.exit_code == 1
    assert result.stderr == (
        "archive build failed at store: pvc://archives/m: the claim's volume is not mounted "
        f"at {tmp_path}/pvc/archives: mount the claim there ($TORCHROLLOUT_PVC_ROOT/<claim>)\n"
    )
    assert fake_build.calls == 0


def test_a_full_disk_is_one_clear_line_and_leaves_nothing_half_written(
    fake_build: FakeBuild, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    revision = store / "seqcls" / "r1"
    revision.mkdir(parents=True)
    # The upload's temp file is named by host and pid: point it at /dev/full (always ENOSPC).
    partial = revision / f".seqcls.mar.{socket.gethostname()}-{os.getpid()}.partial"
    partial.symlink_to("/dev/full")
    result = cli(
        *fake_build_args(tmp_path / "job", "--store", f"file://{store}", "--revision", "r1")
    )
    assert result.exit_code == 1
    assert result.stderr == (
        f"archive build failed at store: file://{store}: no space left on the device writing "
        f"{revision}/seqcls.mar: free space in the store or give it a larger volume\n"
    )
    assert files(store) == []  # no .mar, no marker, no temp file


def test_store_and_revision_go_together(fake_build: FakeBuild, tmp_path: Path) -> None:
    result = cli(*fake_build_args(tmp_path / "job", "--store", f"file://{tmp_path}/s"))
    assert result.exit_code == 2
    assert "archive build failed at config: --store and --revision" in result.stderr


@pytest.mark.parametrize(
    ("store", "revision", "message"),
    [
        ("https://example.com/archives", "r1", "is not a store URI"),
        ("file://relative/path", "r1", "is not a store URI"),
        ("file:///tmp/store", "../r1", "--revision: '../r1' must match"),
    ],
)
def test_bad_store_arguments_are_usage_errors(
    fake_build: FakeBuild, tmp_path: Path, store: str, revision: str, message: str
) -> None:
    result = cli(*fake_build_args(tmp_path / "job", "--store", store, "--revision", revision))
    assert result.exit_code == 2
    assert message in result.stderr
    assert fake_build.calls == 0


def test_an_unwritable_digest_file_fails_the_build(fake_build: FakeBuild, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "digest"
    result = cli(
        *fake_build_args(
            tmp_path / "job", "--store", f"file://{tmp_path}/store", "--revision", "r1",
            "--digest-file", str(missing),
        )
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"archive build failed at publish: --digest-file: cannot write {missing}" in (
        result.stderr
    )


# --- S3 (moto's server on loopback) ------------------------------------------------------------


@pytest.fixture
def bucket(s3_env: S3Server) -> str:
    import boto3

    name = f"archives-{os.urandom(4).hex()}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def test_s3_store_builds_once_and_refuses_a_changed_archive(bucket: str, tmp_path: Path) -> None:
    import boto3

    s3 = boto3.client("s3")
    store, fake = ArchiveStore(f"s3://{bucket}/prefix/"), FakeBuild()
    first = build_into_store(request(tmp_path / "a"), store, revision="r1", build=fake)
    assert first.archive.uri == f"s3://{bucket}/prefix/seqcls/r1/seqcls.mar"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["prefix/seqcls/r1/seqcls.mar", "prefix/seqcls/r1/seqcls.mar.sha256"]
    assert build_into_store(request(tmp_path / "b"), store, revision="r1", build=fake).reused
    assert fake.calls == 1

    s3.put_object(Bucket=bucket, Key="prefix/seqcls/r1/seqcls.mar", Body=b"tampered with")
    with pytest.raises(ArchiveDigestMismatch, match="has sha256"):
        store.download("seqcls", "r1", tmp_path / "models", sha256=first.archive.sha256)
    assert files(tmp_path / "models") == []
    with pytest.raises(ArchiveMissing, match="build Job of revision r2 must finish first"):
        store.download("seqcls", "r2", tmp_path / "models", sha256=first.archive.sha256)


def test_s3_archive_without_its_marker_is_rebuilt(bucket: str, tmp_path: Path) -> None:
    import boto3

    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key="seqcls/r1/seqcls.mar", Body=b"half an upl")
    fake = FakeBuild()
    result = build_into_store(
        request(tmp_path / "a"), ArchiveStore(f"s3://{bucket}"), revision="r1", build=fake
    )
    assert (result.reused, fake.calls) == (False, 1)
    body = s3.get_object(Bucket=bucket, Key="seqcls/r1/seqcls.mar")["Body"].read()
    assert body == fake.content


def test_s3_missing_bucket_is_one_clear_line(
    fake_build: FakeBuild, s3_env: S3Server, tmp_path: Path
) -> None:
    result = cli(
        *fake_build_args(tmp_path / "job", "--store", "s3://no-such-bucket/a", "--revision", "r1")
    )
    assert result.exit_code == 1
    assert result.stderr == (
        "archive build failed at store: s3://no-such-bucket/a: bucket 'no-such-bucket' does not "
        "exist (NoSuchBucket): create it or fix the URI\n"
    )
    assert fake_build.calls == 0


def test_s3_unreachable_endpoint_is_one_clear_line(
    fake_build: FakeBuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.archive.servers import use_s3

    endpoint = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    use_s3(monkeypatch, endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    result = cli(
        *fake_build_args(tmp_path / "job", "--store", "s3://archives/a", "--revision", "r1")
    )
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"archive build failed at store: s3://archives/a: cannot reach S3 at {endpoint} ("
    )
    assert lines[0].endswith("): check AWS_ENDPOINT_URL and the network")
    assert fake_build.calls == 0


@pytest.fixture
def iam_enforced(s3_env: S3Server) -> Iterator[dict[str, str]]:
    """moto checks IAM (its /moto-api/reset-auth); yields the keys of a user with no policy."""
    import boto3

    def reset_auth(count: str) -> None:
        post = urllib.request.Request(
            f"{s3_env.endpoint}/moto-api/reset-auth",
            data=count.encode(),
            headers={"Content-Type": "text/plain"},
            method="POST",
        )
        with urllib.request.urlopen(post, timeout=10) as answer:
            assert answer.status == 200

    reset_auth("2")  # the next two calls (create the user and its key) need no auth
    try:
        iam = boto3.client("iam")
        user = f"no-rights-{os.urandom(4).hex()}"
        iam.create_user(UserName=user)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        yield {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }
    finally:
        reset_auth("inf")


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            "user",
            "access denied (AccessDenied): grant these credentials s3:GetObject on bucket "
            "'archives'",
        ),
        (
            "unknown",
            "the AWS credentials were rejected (InvalidAccessKeyId): check the keys or role in use",
        ),
    ],
)
def test_s3_without_permission_is_one_clear_line(
    fake_build: FakeBuild,
    iam_enforced: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    keys: str,
    message: str,
) -> None:
    if keys == "user":
        for name, value in iam_enforced.items():
            monkeypatch.setenv(name, value)
    result = cli(
        *fake_build_args(tmp_path / "job", "--store", "s3://archives/a", "--revision", "r1")
    )
    assert result.exit_code == 1
    assert result.stderr == f"archive build failed at store: s3://archives/a: {message}\n"
