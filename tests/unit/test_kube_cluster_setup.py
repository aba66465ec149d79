"""The real control plane's set-up fails with a message that says what to install or free."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from tests.kube_cluster import build
from tests.kube_cluster.build import BuildError, Toolchain, check_go, staging_replacements
from tests.kube_cluster.cluster import (
    ClusterError,
    ControlPlane,
    ensure_free,
    sweep_abandoned_workdirs,
)

GO_MOD = """module k8s.io/kubernetes

require (
\tk8s.io/api v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tgithub.com/other/thing => github.com/other/thing v1.2.3
)
"""


def test_staging_modules_point_at_their_published_versions() -> None:
    assert staging_replacements(GO_MOD, "v1.36.3") == {
        "k8s.io/api": "v0.36.3",
        "k8s.io/client-go": "v0.36.3",
    }


def test_a_go_mod_without_staging_modules_is_an_error() -> None:
    with pytest.raises(BuildError, match="no staging modules"):
        staging_replacements("module k8s.io/kubernetes\n", "v1.36.3")


def fake_go(folder: Path, version_line: str) -> None:
    go = folder / "go"
    go.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    go.chmod(go.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize(
    ("version_line", "says"),
    [
        (None, "Go is not on PATH"),
        ("go version go1.22.5 linux/amd64", "needs Go >= 1.26"),
        ("garbage", "needs Go >= 1.26"),
    ],
)
def test_go_missing_or_too_old_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version_line: str | None, says: str
) -> None:
    if version_line is not None:
        fake_go(tmp_path, version_line)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BuildError, match=says):
        check_go()


def test_a_new_enough_go_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_go(tmp_path, "go version go1.27.1 linux/amd64")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert check_go() == str(tmp_path / "go")


def test_a_failed_build_quotes_the_tail_of_its_log(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    with pytest.raises(BuildError) as raised:
        build._run(
            ["sh", "-c", "echo 'module lookup disabled'; exit 3"],
            cwd=tmp_path,
            log=log,
            env=dict(os.environ),
        )
    assert "exit code 3" in str(raised.value)
    assert "module lookup disabled" in str(raised.value)
    assert str(log) in str(raised.value)


def test_missing_binaries_name_the_command_that_builds_them(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="make kube"):
        ControlPlane.start(tools=Toolchain(tmp_path))


def test_a_port_in_use_is_named(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ClusterError, match=f"port {port} .* is in use"):
            ensure_free(port, "kube-apiserver")


def fake_toolchain(root: Path, etcd_script: str) -> Toolchain:
    tools = Toolchain(root)
    for folder in (tools.kubernetes, tools.etcd_dir, tools.kwok_dir, tools.helm_dir):
        (folder / "bin").mkdir(parents=True)
    tools.gateway_api_crds.mkdir(parents=True)
    tools.istio_crd("virtualservices.networking.istio.io").parent.mkdir(parents=True)
    tools.keda_crd("scaledobjects.keda.sh").parent.mkdir(parents=True)
    etcd = tools.binary("etcd")
    etcd.write_text(etcd_script)
    etcd.chmod(0o755)
    return tools


def test_a_process_that_dies_at_start_is_reported_with_its_log_and_nothing_is_left(
    tmp_path: Path,
) -> None:
    tools = fake_toolchain(
        tmp_path / "cache", "#!/bin/sh\necho 'etcd: bind: address in use'\nexit 2\n"
    )
    workdir = tmp_path / "plane"
    with pytest.raises(ClusterError) as raised:
        ControlPlane.start(tools=tools, workdir=workdir)
    message = str(raised.value)
    assert "etcd exited with code 2" in message
    assert "etcd: bind: address in use" in message


def running_commands() -> list[str]:
    commands = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            commands.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return commands


def test_a_process_that_never_gets_ready_is_stopped_after_a_bounded_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tests.kube_cluster.cluster.ETCD_TIMEOUT", 1.0)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    tools = fake_toolchain(tmp_path / "cache", "#!/bin/sh\necho 'etcd: waiting'\nexec sleep 613\n")
    with pytest.raises(ClusterError, match="etcd /health did not happen within 1 s"):
        ControlPlane.start(tools=tools)
    assert list((tmp_path / "tmp").iterdir()) == []  # its temporary folder is removed
    assert not [c for c in running_commands() if c.startswith("sleep 613")]


def test_a_folder_left_by_a_killed_run_is_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    gone, alive, foreign = (tmp_path / f"torchrollout-kube-{n}" for n in ("gone", "alive", "x"))
    for folder in (gone, alive, foreign):
        folder.mkdir()
    (gone / "owner.pid").write_text("999999999")  # above any pid_max: no such process
    (alive / "owner.pid").write_text(str(os.getpid()))
    assert sweep_abandoned_workdirs(tmp_path) == [gone]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, foreign.name])
