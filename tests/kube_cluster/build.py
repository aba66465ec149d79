"""Build the real control plane's binaries from the Go module proxy, once per version.

    python -m tests.kube_cluster.build            # build what is missing, print where it is
    python -m tests.kube_cluster.build --check    # exit 1 (saying what is missing) instead

Each component lands in its own folder under the cache (``$TORCHROLLOUT_CACHE``, default
``~/.cache/torchrollout``), named by its pinned version from ``versions.py``:

    kubernetes-v1.36.3/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl}
    etcd-v3.6.16/bin/etcd
    kwok-v0.8.0/bin/kwok  kwok-v0.8.0/stages/{node,pod,...}/{fast,...}/*.yaml
    helm-v3.22.0/bin/helm
    gateway-api-v1.6.3/crds/*.yaml
    istio-api-v1.32.0/crds/<name>.yaml    one file per CRD (virtualservices.networking.istio.io)
    keda-v2.21.0/crds/<name>.yaml         one file per CRD (scaledobjects.keda.sh)

A folder appears only when its build has finished (it is built beside and renamed), so an
interrupted build is redone and a finished one is never rebuilt. Go keeps its module and
build caches in its usual places, which makes a rebuild after a version bump quicker.

k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces its staging modules with
local paths. A small wrapper module requires it and points each staging module at its
published v0.x version instead, read from that release's own go.mod.

Only the standard library is used: this runs before the project's virtualenv exists.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import versions

KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


class BuildError(Exception):
    """A build step failed; the message says what to install or fix."""


def cache_root() -> Path:
    configured = os.environ.get("TORCHROLLOUT_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "torchrollout"


@dataclass(frozen=True)
class Toolchain:
    """Where every built part lives; `missing()` names what is not built yet."""

    root: Path

    @property
    def kubernetes(self) -> Path:
        return self.root / f"kubernetes-{versions.KUBERNETES}"

    @property
    def etcd_dir(self) -> Path:
        return self.root / f"etcd-{versions.ETCD}"

    @property
    def kwok_dir(self) -> Path:
        return self.root / f"kwok-{versions.KWOK}"

    @property
    def helm_dir(self) -> Path:
        return self.root / f"helm-{versions.HELM}"

    @property
    def gateway_api(self) -> Path:
        return self.root / f"gateway-api-{versions.GATEWAY_API}"

    def binary(self, name: str) -> Path:
        if name in KUBE_COMMANDS:
            return self.kubernetes / "bin" / name
        folders = {"etcd": self.etcd_dir, "kwok": self.kwok_dir, "helm": self.helm_dir}
        return folders[name] / "bin" / name

    @property
    def kwok_stages(self) -> Path:
        return self.kwok_dir / "stages"

    @property
    def gateway_api_crds(self) -> Path:
        return self.gateway_api / "crds"

    @property
    def istio_api(self) -> Path:
        return self.root / f"istio-api-{versions.ISTIO_API}"

    def istio_crd(self, name: str) -> Path:
        """One of Istio's CRDs by its name, e.g. virtualservices.networking.istio.io."""
        return self.istio_api / "crds" / f"{name}.yaml"

    @property
    def keda(self) -> Path:
        return self.root / f"keda-{versions.KEDA}"

    def keda_crd(self, name: str) -> Path:
        """One of KEDA's CRDs by its name, e.g. scaledobjects.keda.sh."""
        return self.keda / "crds" / f"{name}.yaml"

    def missing(self) -> list[Path]:
        return [
            folder
            for folder in (
                self.kubernetes,
                self.etcd_dir,
                self.kwok_dir,
                self.helm_dir,
                self.gateway_api,
                self.istio_api,
                self.keda,
            )
            if not folder.is_dir()
        ]


def toolchain() -> Toolchain:
    return Toolchain(cache_root())


def _say(message: str) -> None:
    print(f"[kube-build] {message}", flush=True)


def check_go() -> str:
    """The `go` on PATH, or a BuildError saying which Go to install."""
    want = ".".join(map(str, versions.MINIMUM_GO))
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            f"Go is not on PATH. The tests build a real Kubernetes control plane from Go "
            f"modules and need Go >= {want}: install it (https://go.dev/doc/install, or your "
            f"distribution's golang package) and make sure `go version` works."
        )
    output = subprocess.run([go, "version"], capture_output=True, text=True, check=False).stdout
    found = re.search(r"go(\d+)\.(\d+)", output)
    if found is None or (int(found[1]), int(found[2])) < versions.MINIMUM_GO:
        raise BuildError(
            f"{go} reports {output.strip()!r}; building Kubernetes {versions.KUBERNETES} "
            f"needs Go >= {want}. Install a newer Go and put it first on PATH."
        )
    return go


def _run(argv: Sequence[str], *, cwd: Path, log: Path, env: dict[str, str]) -> None:
    """Run one go command, its output appended to `log`; a failure quotes the log's tail."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        code = subprocess.run(
            argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False
        ).returncode
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise BuildError(
            f"`{' '.join(argv)}` failed with exit code {code} (full log: {log}).\n"
            f"Last lines:\n{tail}\n"
            f"If the module proxy was unreachable, check GOPROXY ({env.get('GOPROXY', '')}) "
            f"and the network, then run the build again: finished parts are kept."
        )


def _go_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["GOFLAGS"] = "-mod=mod -buildvcs=false"
    env.setdefault("GOTOOLCHAIN", "local")
    env["GOWORK"] = "off"
    env["GOBIN"] = str(work / "bin")
    env["CGO_ENABLED"] = "0"
    return env


def _module_dir(go: str, module: str, *, cwd: Path, env: dict[str, str]) -> dict[str, str]:
    """`go mod download -json module`: its Dir and GoMod paths in the module cache."""
    result = subprocess.run(
        [go, "mod", "download", "-json", module],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        said = (result.stdout + result.stderr).strip()[-2000:]
        raise BuildError(
            f"`go mod download {module}` failed: {said}\n"
            f"Check GOPROXY ({env.get('GOPROXY', 'default')}) and the network, then run again."
        )
    info: dict[str, str] = json.loads(result.stdout)
    return info


def staging_replacements(kubernetes_go_mod: str, kube_version: str) -> dict[str, str]:
    """Map each staging module of k8s.io/kubernetes to its published version.

    Staging modules are the `k8s.io/<name> => ./staging/src/k8s.io/<name>` replace lines; each
    is published as `k8s.io/<name> v0.<minor>.<patch>` for Kubernetes v1.<minor>.<patch>.
    """
    published = "v0." + kube_version.removeprefix("v").split(".", 1)[1]
    modules = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", kubernetes_go_mod, re.M)
    if not modules:
        raise BuildError("found no staging modules in k8s.io/kubernetes's go.mod")
    return dict.fromkeys(modules, published)


def _wrapper(
    folder: Path, module: str, require: str, replace: dict[str, str], tools: list[str]
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"module torchrollout.test/{module}", "", "go 1.26", "", f"require {require}", ""]
    lines += [f"replace {name} => {name} {version}" for name, version in sorted(replace.items())]
    (folder / "go.mod").write_text("\n".join(lines) + "\n")
    imports = "\n".join(f'\t_ "{tool}"' for tool in tools)
    (folder / "tools.go").write_text(
        f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n"
    )


def _publish(staging: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)


def build_kubernetes(go: str, target: Path, log: Path) -> None:
    version = versions.KUBERNETES
    with tempfile.TemporaryDirectory(prefix="kube-build-") as tmp:
        work = Path(tmp)
        env = _go_env(work)
        _say(f"kubernetes {version}: reading its go.mod from the module proxy")
        info = _module_dir(go, f"k8s.io/kubernetes@{version}", cwd=work, env=env)
        replace = staging_replacements(Path(info["GoMod"]).read_text(), version)
        tools = [f"k8s.io/kubernetes/cmd/{name}" for name in KUBE_COMMANDS]
        module = work / "module"
        _wrapper(module, "kubernetes", f"k8s.io/kubernetes {version}", replace, tools)
        _say(f"kubernetes {version}: resolving {len(replace)} staging modules")
        _run([go, "mod", "tidy"], cwd=module, log=log, env=env)
        minor = version.removeprefix("v").split(".")[1]
        stamp = "k8s.io/component-base/version"
        ldflags = " ".join(
            [
                "-s -w",
                f"-X {stamp}.gitVersion={version}",
                f"-X {stamp}.gitMajor=1",
                f"-X {stamp}.gitMinor={minor}",
                f"-X {stamp}.gitTreeState=clean",
                f"-X {stamp}.buildDate=1970-01-01T00:00:00Z",
            ]
        )
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "bin").mkdir(parents=True)
        for index, name in enumerate(KUBE_COMMANDS):
            note = (
                " (the first takes longest: it compiles what all four share)" if index == 0 else ""
            )
            _say(f"kubernetes {version}: building {name}{note}")
            started = time.monotonic()
            _run(
                [
                    go,
                    "build",
                    "-trimpath",
                    "-ldflags",
                    ldflags,
                    "-o",
                    str(staging / "bin" / name),
                    f"k8s.io/kubernetes/cmd/{name}",
                ],
                cwd=module,
                log=log,
                env=env,
            )
            _say(f"kubernetes {version}: {name} built in {time.monotonic() - started:.0f} s")
        _publish(staging, target)


def build_etcd(go: str, target: Path, log: Path) -> None:
    version = versions.ETCD
    with tempfile.TemporaryDirectory(prefix="etcd-build-") as tmp:
        work = Path(tmp)
        env = _go_env(work)
        module = work / "module"
        _wrapper(
            module,
            "etcd",
            f"go.etcd.io/etcd/server/v3 {version}",
            {},
            ["go.etcd.io/etcd/server/v3"],
        )
        _say(f"etcd {version}: resolving and building")
        _run([go, "mod", "tidy"], cwd=module, log=log, env=env)
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "bin").mkdir(parents=True)
        _run(
            [
                go,
                "build",
                "-trimpath",
                "-ldflags",
                "-s -w",
                "-o",
                str(staging / "bin" / "etcd"),
                "go.etcd.io/etcd/server/v3",
            ],
            cwd=module,
            log=log,
            env=env,
        )
        _publish(staging, target)


def build_kwok(go: str, target: Path, log: Path) -> None:
    version = versions.KWOK
    with tempfile.TemporaryDirectory(prefix="kwok-build-") as tmp:
        work = Path(tmp)
        env = _go_env(work)
        _say(f"kwok {version}: building")
        _run(
            [
                go,
                "install",
                "-trimpath",
                "-ldflags",
                "-s -w",
                f"sigs.k8s.io/kwok/cmd/kwok@{version}",
            ],
            cwd=work,
            log=log,
            env=env,
        )
        info = _module_dir(go, f"sigs.k8s.io/kwok@{version}", cwd=work, env=env)
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "bin").mkdir(parents=True)
        shutil.copy2(work / "bin" / "kwok", staging / "bin" / "kwok")
        # Every Stage kwok ships (node/fast, node/heartbeat-with-lease, pod/fast, ...): the
        # cluster picks the ones it plays.
        source = Path(info["Dir"]) / "kustomize" / "stage"
        for stage in sorted(source.glob("*/*/*.yaml")):
            if stage.name != "kustomization.yaml":
                copy = staging / "stages" / stage.relative_to(source)
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(stage, copy)
        if not (staging / "stages" / "pod" / "fast").is_dir():
            raise BuildError(f"kwok {version} ships no pod stages under {source}")
        _publish(staging, target)


def build_helm(go: str, target: Path, log: Path) -> None:
    version = versions.HELM
    with tempfile.TemporaryDirectory(prefix="helm-build-") as tmp:
        work = Path(tmp)
        env = _go_env(work)
        _say(f"helm {version}: building")
        ldflags = f"-s -w -X helm.sh/helm/v3/internal/version.version={version}"
        _run(
            [
                go,
                "install",
                "-trimpath",
                "-ldflags",
                ldflags,
                f"helm.sh/helm/v3/cmd/helm@{version}",
            ],
            cwd=work,
            log=log,
            env=env,
        )
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "bin").mkdir(parents=True)
        shutil.copy2(work / "bin" / "helm", staging / "bin" / "helm")
        _publish(staging, target)


def _fetch_crds(
    go: str, target: Path, module: str, copy: Callable[[Path, Path], None], required: str
) -> None:
    """CRDs from a Go module into `target`/crds: `copy(module_dir, crds_dir)` writes them,
    and `required` (a file name) must be among them."""
    with tempfile.TemporaryDirectory(prefix="crds-") as tmp:
        work = Path(tmp)
        _say(f"{module}: taking its CRDs from the module")
        info = _module_dir(go, module, cwd=work, env=_go_env(work))
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "crds").mkdir(parents=True)
        copy(Path(info["Dir"]), staging / "crds")
        if not (staging / "crds" / required).is_file():
            raise BuildError(f"{module} has no {required} where expected in {info['Dir']}")
        _publish(staging, target)


def _gateway_api_standard(module: Path, crds: Path) -> None:
    for crd in sorted((module / "config" / "crd" / "standard").glob("*.yaml")):
        shutil.copyfile(crd, crds / crd.name)


def _split_by_name(sources: Sequence[Path], crds: Path) -> None:
    """One file per CRD in `sources`, named as the CRD."""
    for source in sources:
        for document in source.read_text().split("\n---\n"):
            named = re.search(
                r"^kind: CustomResourceDefinition$.*?^  name: (\S+)$", document, re.M | re.S
            )
            if named is not None:
                text = document.strip().removeprefix("---").lstrip()
                (crds / f"{named.group(1)}.yaml").write_text(text + "\n")


def _istio_split(module: Path, crds: Path) -> None:
    """Istio ships its CRDs in one file."""
    _split_by_name([module / "kubernetes" / "customresourcedefinitions.gen.yaml"], crds)


def _keda_bases(module: Path, crds: Path) -> None:
    """KEDA ships one file per CRD, named by group and plural."""
    _split_by_name(sorted((module / "config" / "crd" / "bases").glob("*.yaml")), crds)


def fetch_gateway_api(go: str, target: Path, log: Path) -> None:
    module = f"sigs.k8s.io/gateway-api@{versions.GATEWAY_API}"
    required = "gateway.networking.k8s.io_httproutes.yaml"
    _fetch_crds(go, target, module, _gateway_api_standard, required)


def fetch_istio_api(go: str, target: Path, log: Path) -> None:
    module = f"istio.io/api@{versions.ISTIO_API}"
    _fetch_crds(go, target, module, _istio_split, "virtualservices.networking.istio.io.yaml")


def fetch_keda(go: str, target: Path, log: Path) -> None:
    module = f"github.com/kedacore/keda/v2@{versions.KEDA}"
    _fetch_crds(go, target, module, _keda_bases, "scaledobjects.keda.sh.yaml")


def build(tools: Toolchain) -> None:
    """Build whatever is missing from `tools`, printing progress; BuildError on failure."""
    missing = tools.missing()
    if not missing:
        return
    go = check_go()
    tools.root.mkdir(parents=True, exist_ok=True)
    log = tools.root / "build.log"
    steps = [
        (tools.gateway_api, fetch_gateway_api),
        (tools.istio_api, fetch_istio_api),
        (tools.keda, fetch_keda),
        (tools.kwok_dir, build_kwok),
        (tools.helm_dir, build_helm),
        (tools.etcd_dir, build_etcd),
        (tools.kubernetes, build_kubernetes),
    ]
    compiling = tools.kubernetes in missing or tools.etcd_dir in missing
    took = "cold: about 10 to 15 minutes on 2 cores" if compiling else "seconds to minutes"
    _say(
        f"building {', '.join(folder.name for folder in missing)} into {tools.root} "
        f"({took}; log: {log})"
    )
    started = time.monotonic()
    for folder, step in steps:
        if folder in missing:
            step(go, folder, log)
    _say(f"done in {time.monotonic() - started:.0f} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.kube_cluster.build",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--check", action="store_true", help="only report what is missing; exit 1 if anything is"
    )
    args = parser.parse_args(argv)
    tools = toolchain()
    if args.check:
        missing = tools.missing()
        for folder in missing:
            print(f"missing: {folder}", file=sys.stderr)
        return 1 if missing else 0
    try:
        build(tools)
    except BuildError as error:
        print(f"[kube-build] error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("[kube-build] interrupted; finished parts are kept", file=sys.stderr)
        return 130
    print(f"[kube-build] control plane binaries are in {tools.root}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
