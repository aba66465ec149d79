"""Hostile archive inputs are refused with a clear error before anything runs or is packed.

Each class of attack on the archive builder, at the place that stops it: digests (verify),
downloads cut short, redirect games and oversized bodies (fetch, over loopback servers),
pickles that carry code (weights, and the handlers' own loader), members that escape the
folder they are extracted into (smoke) and pvc:// paths that climb out of their claim.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from tests.archive import servers
from tests.archive.scripted import ScriptedServer, body, chunked, redirect, scripted_server
from tests.support.models import keep_inductor_cache_in
from torchrollout.archive import (
    DigestMismatch,
    FetchError,
    UnsafeArchive,
    UnsafeWeights,
    UsageError,
)
from torchrollout.archive.build import BuildRequest, build_archive
from torchrollout.archive.fetch import (
    HANDLER_LIMIT,
    MAX_REDIRECTS,
    MAX_SOURCE_BYTES,
    fetch,
    open_source,
    source_limit,
    verify,
)
from torchrollout.archive.smoke import load_archive
from torchrollout.archive.store import backend_for
from torchrollout.archive.weights import inspect_weights

PAYLOAD = b"weights" * 100


def leftovers(folder: Path) -> list[str]:
    """Everything in `folder`, hidden partial files included."""
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with scripted_server() as started:
        yield started


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate (its own CA) and key for 127.0.0.1."""
    return servers.self_signed(tmp_path_factory.mktemp("tls"))


# --- 1. digests ---------------------------------------------------------------------------


def test_a_digest_mismatch_names_both_digests(server: ScriptedServer, tmp_path: Path) -> None:
    server.routes["/model.pt"] = body(PAYLOAD)
    fetched = fetch(f"{server.url}/model.pt", tmp_path)
    expected = hashlib.sha256(b"other bytes").hexdigest()
    with pytest.raises(DigestMismatch) as caught:
        verify(fetched, expected)
    actual = hashlib.sha256(PAYLOAD).hexdigest()
    assert caught.value.step == "verify"
    assert str(caught.value) == (
        f"verify: sha256 of {server.url}/model.pt is {actual}, expected {expected}"
    )


# --- 2. truncated downloads ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (body(PAYLOAD, declared=5000), r"truncated: got 700 of 5000 bytes"),
        (chunked(b"x" * 100, pieces=3, finish=False), r"truncated: got 300 bytes"),
    ],
    ids=["short of its content-length", "chunked body cut"],
)
def test_a_download_cut_short_is_refused_and_leaves_no_file(
    server: ScriptedServer, tmp_path: Path, route: Any, message: str
) -> None:
    server.routes["/model.pt"] = route
    with pytest.raises(FetchError, match=message) as caught:
        fetch(f"{server.url}/model.pt", tmp_path)
    assert "the server closed the connection before the end" in caught.value.message
    assert leftovers(tmp_path) == []


def test_a_build_from_a_truncated_source_publishes_nothing(
    server: ScriptedServer, tmp_path: Path
) -> None:
    server.routes["/model.pt"] = body(PAYLOAD, declared=5000)
    output = tmp_path / "out"
    request = BuildRequest(
        source=f"{server.url}/model.pt",
        name="m",
        version="1",
        handler="sequence-classifier",
        output=output,
    )
    with pytest.raises(FetchError, match="truncated"):
        build_archive(request)
    assert leftovers(output) == []


# --- 3. redirects -------------------------------------------------------------------------


def hops(server: ScriptedServer, count: int) -> str:
    """A chain of `count` redirects ending at PAYLOAD; its first URL."""
    for k in range(count, 0, -1):
        server.routes[f"/hop/{k}"] = redirect(f"/hop/{k - 1}")
    server.routes["/hop/0"] = body(PAYLOAD)
    return f"{server.url}/hop/{count}"


def test_redirects_up_to_the_limit_are_followed(server: ScriptedServer, tmp_path: Path) -> None:
    fetched = fetch(hops(server, MAX_REDIRECTS), tmp_path)
    assert fetched.path.read_bytes() == PAYLOAD


def loop(server: ScriptedServer) -> str:
    server.routes.update({"/a": redirect("/b"), "/b": redirect(f"{server.url}/a")})
    return f"{server.url}/a"


def to_itself(server: ScriptedServer) -> str:
    server.routes["/a"] = redirect("/a", 301)
    return f"{server.url}/a"


def to_a_file(server: ScriptedServer) -> str:
    server.routes["/a"] = redirect("file:///etc/passwd")
    return f"{server.url}/a"


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (loop, r"redirect loop \(http://[^ ]+/a -> http://[^ ]+/b -> http://[^ ]+/a\)"),
        (to_itself, r"redirect loop"),
        (
            lambda s: hops(s, MAX_REDIRECTS + 1),
            rf"more than {MAX_REDIRECTS} redirects \(\S+/hop/11 -> \.\.\. 9 more -> \S+/hop/1 -> "
            r"\S+/hop/0\): give the final URL",
        ),
        (to_a_file, r"redirected to file:/+etc/passwd, which is not http\(s\)"),
    ],
    ids=["loop", "to itself", "too many", "to a file"],
)
def test_redirect_games_are_refused_naming_the_url(
    server: ScriptedServer, tmp_path: Path, script: Callable[[ScriptedServer], str], message: str
) -> None:
    start = script(server)
    with pytest.raises(FetchError, match=message) as caught:
        fetch(start, tmp_path)
    assert caught.value.message.startswith(f"{start}: ")
    assert len(server.requests) <= MAX_REDIRECTS + 1
    assert leftovers(tmp_path) == []


def test_a_redirect_from_https_to_http_is_refused_before_it_is_followed(
    server: ScriptedServer, tls: tuple[Path, Path], tmp_path: Path
) -> None:
    server.routes["/model.pt"] = body(PAYLOAD)
    with scripted_server(tls) as secure:
        secure.routes["/model.pt"] = redirect(f"{server.url}/model.pt")
        with pytest.raises(FetchError, match="redirected from https to plain http") as caught:
            fetch(f"{secure.url}/model.pt", tmp_path, ca_bundle=tls[0])
    assert "give a URL that stays on https" in caught.value.message
    assert server.requests == []


def test_the_token_stays_with_its_origin_across_redirects(
    tls: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCHROLLOUT_HTTPS_TOKEN", "s3cr3t")
    with scripted_server(tls) as origin, scripted_server(tls) as elsewhere:
        elsewhere.routes["/model.pt"] = body(PAYLOAD)
        origin.routes["/old.pt"] = redirect("/model.pt")
        origin.routes["/model.pt"] = redirect(f"{elsewhere.url}/model.pt")
        fetch(f"{origin.url}/old.pt", tmp_path, ca_bundle=tls[0])
    assert origin.requests == [("/old.pt", "Bearer s3cr3t"), ("/model.pt", "Bearer s3cr3t")]
    assert elsewhere.requests == [("/model.pt", None)]


def test_a_callers_client_gets_the_same_redirect_rules(server: ScriptedServer) -> None:
    # The evaluation sender passes its own client (which may follow redirects itself).
    server.routes.update({"/data.jsonl": redirect("/data.jsonl")})
    with (
        httpx.Client(follow_redirects=True) as client,
        pytest.raises(FetchError, match="redirect loop"),
        open_source(f"{server.url}/data.jsonl", client=client),
    ):
        pass


def test_a_handler_uri_gets_the_same_redirect_rules(server: ScriptedServer, tmp_path: Path) -> None:
    server.routes["/handler.py"] = redirect("/handler.py")
    weights = tmp_path / "model.pt"
    weights.write_bytes(PAYLOAD)
    request = BuildRequest(
        source=str(weights),
        name="m",
        version="1",
        handler=f"{server.url}/handler.py",
        output=tmp_path / "out",
    )
    with pytest.raises(FetchError, match="redirect loop"):
        build_archive(request)
    assert leftovers(tmp_path / "out") == []


# --- 4. oversized files -------------------------------------------------------------------


def test_the_default_caps() -> None:
    assert source_limit().max_bytes == MAX_SOURCE_BYTES == 20 << 30
    assert HANDLER_LIMIT.max_bytes == 1 << 20


@pytest.fixture
def small_cap(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("TORCHROLLOUT_MAX_SOURCE_BYTES", str(len(PAYLOAD)))
    return len(PAYLOAD)


def test_a_source_at_the_cap_is_fetched(
    server: ScriptedServer, tmp_path: Path, small_cap: int
) -> None:
    server.routes["/model.pt"] = chunked(PAYLOAD, pieces=1)
    assert fetch(f"{server.url}/model.pt", tmp_path).size == small_cap


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (body(b"x" * 10, declared=1 << 40), r"\(it declares 1099511627776 bytes\)"),
        (chunked(b"x" * 65536, pieces=None), r"\(stopped after \d+ bytes\)"),
    ],
    ids=["declared too large", "endless body"],
)
def test_an_oversized_source_stops_at_the_cap(
    server: ScriptedServer, tmp_path: Path, small_cap: int, route: Any, message: str
) -> None:
    server.routes["/model.pt"] = route
    with pytest.raises(FetchError, match=message) as caught:
        fetch(f"{server.url}/model.pt", tmp_path)
    assert "larger than the 700 bytes limit for a model source" in caught.value.message
    assert "set $TORCHROLLOUT_MAX_SOURCE_BYTES" in caught.value.message
    assert leftovers(tmp_path) == []
    # Streamed: the client hung up after a few chunks, never reading the whole body.
    assert server.sent.get("/model.pt", 0) < 64 << 20


def test_an_oversized_handler_file_is_refused(tmp_path: Path) -> None:
    handler = tmp_path / "big_handler.py"
    handler.write_bytes(b"#" * (HANDLER_LIMIT.max_bytes + 1))
    weights = tmp_path / "model.pt"
    weights.write_bytes(PAYLOAD)
    request = BuildRequest(
        source=str(weights),
        name="m",
        version="1",
        handler=handler.as_uri(),
        output=tmp_path / "out",
    )
    with pytest.raises(FetchError, match="larger than the 1 MiB limit for a handler file"):
        build_archive(request)


@pytest.mark.parametrize("value", ["lots", "0", "-5"])
def test_a_bad_cap_setting_is_a_usage_error(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCHROLLOUT_MAX_SOURCE_BYTES", value)
    source = tmp_path / "model.pt"
    source.write_bytes(PAYLOAD)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UsageError, match=r"\$TORCHROLLOUT_MAX_SOURCE_BYTES: expected a positive"):
        fetch(str(source), dest)
    assert leftovers(dest) == []


# --- 5. pickles that carry code -----------------------------------------------------------


class _RunsShell:
    """Pickles to os.system("touch MARKER"): what a malicious checkpoint carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (os.system, (f"touch {self.marker}",))


def evil_pickle(marker: Path, **save: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2), "extra": _RunsShell(marker)}, buffer, **save)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A genuine torch.export .pt2 of a tiny network."""
    folder = tmp_path_factory.mktemp("export")
    keep_inductor_cache_in(folder / "inductor")
    program = torch.export.export(torch.nn.Linear(3, 2), (torch.randn(1, 3),))
    path = folder / "model.pt2"
    torch.export.save(program, path)
    return path


def rewritten(source: Path, dest: Path, changes: dict[str, bytes]) -> Path:
    """A copy of the zip `source` with members (below its root folder) replaced or added."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(dest, "w") as copy:
        root = original.namelist()[0].split("/", 1)[0]
        pending = {f"{root}/{tail}": data for tail, data in changes.items()}
        for info in original.infolist():
            copy.writestr(info.filename, pending.pop(info.filename, None) or original.read(info))
        for name, data in pending.items():
            copy.writestr(name, data)
    return dest


def pickled_weight(exported: Path, dest: Path, marker: Path) -> Path:
    """The .pt2 with one weight flagged `use_pickle` and replaced by a code-running pickle."""
    with zipfile.ZipFile(exported) as original:
        name = next(n for n in original.namelist() if n.endswith("_weights_config.json"))
        config = json.loads(original.read(name))
    entry = next(iter(config["config"].values()))
    entry["use_pickle"] = True
    tail = name.split("/", 1)[1]
    weight = f"data/weights/{entry['path_name']}"
    changes = {tail: json.dumps(config).encode(), weight: evil_pickle(marker)}
    return rewritten(exported, dest, changes)


HOSTILE_WEIGHTS: dict[str, Callable[[Path, Path, Path], Path]] = {
    "state_dict zip": lambda _, dest, marker: _write(dest, evil_pickle(marker)),
    "legacy pickle": lambda _, dest, marker: _write(
        dest, evil_pickle(marker, _use_new_zipfile_serialization=False)
    ),
    "export, pickled weight": pickled_weight,
    "export, sample inputs": lambda exp, dest, marker: rewritten(
        exp, dest, {"data/sample_inputs/model.pt": evil_pickle(marker)}
    ),
}
OPAQUE = b"\x80\x04N."  # pickle.dumps(None): the bytes do not matter, the record does
CODE_RECORDS = {
    "export, opaque object": "data/constants/opaque_obj_0",
    "export, custom object": "data/constants/custom_obj_0",
    "export, AOTInductor": "data/aotinductor/model/model.so",
}


def _write(dest: Path, data: bytes) -> Path:
    dest.write_bytes(data)
    return dest


@pytest.mark.parametrize("kind", list(HOSTILE_WEIGHTS))
def test_a_pickle_that_runs_code_is_refused_and_never_runs(
    kind: str, exported: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    weights = HOSTILE_WEIGHTS[kind](exported, tmp_path / "model.pt2", marker)
    with pytest.raises(UnsafeWeights, match=r"GLOBAL posix\.system") as caught:
        inspect_weights(weights)
    assert caught.value.step == "load"
    assert "save plain tensors" in caught.value.message
    assert "weights_only=False" not in caught.value.message  # torch's advice is not passed on
    assert not marker.exists()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


@pytest.mark.parametrize("kind", list(CODE_RECORDS))
def test_an_export_holding_code_records_is_refused_unread(
    kind: str, exported: Path, tmp_path: Path
) -> None:
    record = CODE_RECORDS[kind]
    weights = rewritten(exported, tmp_path / "model.pt2", {record: OPAQUE})
    with pytest.raises(UnsafeWeights, match=f"holds {record}, which torch.export.load would"):
        inspect_weights(weights)


def test_a_genuine_export_passes(exported: Path) -> None:
    assert inspect_weights(exported) == "export"


@pytest.fixture(scope="module")
def runtime() -> Any:
    """The handlers' torchrollout_runtime module (model-handlers/ is not a package)."""
    folder = str(Path(__file__).resolve().parents[2] / "model-handlers")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import torchrollout_runtime

    return torchrollout_runtime


@pytest.mark.parametrize("kind", ["export, pickled weight", "export, sample inputs"])
def test_the_handlers_loader_refuses_the_same_exports(
    kind: str, exported: Path, tmp_path: Path, runtime: Any
) -> None:
    marker = tmp_path / "pwned"
    weights = HOSTILE_WEIGHTS[kind](exported, tmp_path / "model.pt2", marker)
    with pytest.raises(pickle.UnpicklingError, match=r"GLOBAL posix\.system"):
        runtime.load_model(weights, {"format": "export"}, lambda _: torch.nn.Identity())
    assert not marker.exists()
    records = {CODE_RECORDS["export, opaque object"]: OPAQUE}
    opaque = rewritten(exported, tmp_path / "opaque.pt2", records)
    with pytest.raises(ValueError, match="would run code when loaded; refused"):
        runtime.load_model(opaque, {"format": "export"}, lambda _: torch.nn.Identity())


# --- 6. paths that escape -----------------------------------------------------------------


def hostile_mar(path: Path, name: str, *, link: bool = False) -> Path:
    """A .mar (zip) with a genuine-looking manifest and one hostile member `name`."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"handler": "h.py"}}))
        info = zipfile.ZipInfo(name)
        if link:
            info.external_attr = (0o120777 << 16) | 0x20  # S_IFLNK: a symbolic link
        archive.writestr(info, "/etc/passwd" if link else "pwned")
    return path


@pytest.mark.parametrize(
    ("member", "link", "problem"),
    [
        ("../../escaped.txt", False, "a path that climbs out of the folder with '..'"),
        ("code/../../escaped.txt", False, "a path that climbs out of the folder with '..'"),
        ("/tmp/escaped.txt", False, "an absolute path"),
        ("C:/escaped.txt", False, "an absolute path"),
        ("code/passwd", True, "a symbolic link"),
    ],
)
def test_an_archive_with_an_escaping_member_is_refused_before_extraction(
    tmp_path: Path, member: str, link: bool, problem: str
) -> None:
    mar = hostile_mar(tmp_path / "evil.mar", member, link=link)
    work = tmp_path / "deep" / "work"
    work.mkdir(parents=True)
    with pytest.raises(UnsafeArchive, match="refused before extracting anything") as caught:
        load_archive(mar, work, model_name="evil")
    assert caught.value.message.startswith(f"evil.mar: member {member!r} is {problem}")
    assert caught.value.step == "load"
    assert leftovers(work) == []  # nothing extracted, not even the manifest
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deep", "evil.mar", "work"]


@pytest.fixture
def claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$TORCHROLLOUT_PVC_ROOT with a claim `models` holding model.pt, and a secret beside it."""
    root = tmp_path / "pvc"
    (root / "models").mkdir(parents=True)
    (root / "models" / "model.pt").write_bytes(PAYLOAD)
    (root / "other").mkdir()
    (root / "other" / "secret.pt").write_bytes(b"not yours")
    (tmp_path / "secret.pt").write_bytes(b"not yours either")
    monkeypatch.setenv("TORCHROLLOUT_PVC_ROOT", str(root))
    return root


@pytest.mark.parametrize(
    "uri",
    [
        "pvc://models/../other/secret.pt",
        "pvc://models/%2e%2e/other/secret.pt",
        "pvc://models/sub/../../../secret.pt",
        "pvc://../secret.pt",
    ],
)
def test_a_pvc_path_may_not_climb_out_of_its_claim(claims: Path, tmp_path: Path, uri: str) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(FetchError, match=r"'\.\.' in a pvc:// path|with the claim's name first"):
        fetch(uri, dest)
    assert leftovers(dest) == []


def test_a_link_out_of_the_claim_is_refused_and_one_inside_is_fine(
    claims: Path, tmp_path: Path
) -> None:
    (claims / "models" / "escape.pt").symlink_to(claims / "other" / "secret.pt")
    (claims / "models" / "latest.pt").symlink_to("model.pt")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(FetchError, match=r"outside the claim's volume .*\(a symbolic link\)"):
        fetch("pvc://models/escape.pt", dest)
    assert fetch("pvc://models/latest.pt", dest).path.read_bytes() == PAYLOAD


def test_a_store_on_a_claim_may_not_climb_out_of_it(claims: Path) -> None:
    with pytest.raises(UsageError, match=r"--store: .*'\.\.' in a pvc:// path"):
        backend_for("pvc://models/../other")
