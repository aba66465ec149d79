"""One archive per revision on a real control plane: the build Job, the digest, its failures.

The store and the model source are an S3 bucket (moto's, on loopback). The build Job's pod is
run here by `tests.e2e.kubelet` with its real command, so the archive in the store and the
digest the operator reads from the pod's termination message are the real ones.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from kubernetes import client

from tests.archive import servers
from tests.e2e.conftest import (
    OperatorProcess,
    condition_of,
    deployments,
    dump,
    events_of,
    model_deployment,
    phase_is,
    revision_of,
    status_of,
)
from tests.e2e.kubelet import Ran, finish_pod, run_container
from tests.kube_emulator.fixtures import Kubectl, eventually
from tests.support.fixtures import example

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

STORE = "s3://archives/store"


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """moto's S3 with a bucket for models and one for archives; the env that reaches it."""
    with servers.s3_server() as server:
        env = {
            "AWS_ENDPOINT_URL": server.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        bucket = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        for name in ("models", "archives"):
            bucket.create_bucket(Bucket=name)
        yield env


def _bucket(env: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def _body(namespace: str, version: str, env: dict[str, str], examples: Path, **spec: Any) -> Any:
    model = example(examples, "sequence-classifier", "v1")
    weights = model.weights.read_bytes()
    _bucket(env).put_object(Bucket="models", Key=f"fraud/{version}/model.pt", Body=weights)
    body = model_deployment(namespace, version, **spec)
    body["spec"]["model"].update(
        {
            "source": {
                "uri": f"s3://models/fraud/{version}/model.pt",
                "sha256": hashlib.sha256(weights).hexdigest(),
            },
            "config": model.config,
            "sampleInput": model.sample,
        }
    )
    body["spec"]["archive"] = {"store": STORE}
    runtime = body["spec"].setdefault("runtime", {})
    runtime["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return body


def _build_pod(api_client: client.ApiClient, namespace: str, revision: str) -> dict[str, Any]:
    """The Running pod of the revision's build Job (kwok leaves it to the test)."""
    core = client.CoreV1Api(api_client)
    selector = f"torchrollout.io/component=archive-build,torchrollout.io/revision={revision}"
    found: list[dict[str, Any]] = []

    def running() -> bool:
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        found[:] = [api_client.sanitize_for_serialization(p) for p in pods]
        return any(p["status"].get("phase") == "Running" for p in found)

    eventually(running, timeout=30)
    return next(p for p in found if p["status"]["phase"] == "Running")


def _kubelet_builds(
    api_client: client.ApiClient, namespace: str, revision: str, workdir: Path
) -> Ran:
    pod = _build_pod(api_client, namespace, revision)
    ran = run_container(api_client, namespace, pod, pod["spec"]["containers"][0], workdir)
    finish_pod(api_client, namespace, pod, ran)
    return ran


def _jobs(api_client: client.ApiClient, namespace: str) -> list[str]:
    found = client.BatchV1Api(api_client).list_namespaced_job(namespace).items
    return [j.metadata.name for j in found]


def test_one_build_per_revision_pods_verify_its_digest_and_a_bad_build_rolls_back(
    operator_process: OperatorProcess,
    kubectl: Kubectl,
    md_api: client.CustomObjectsApi,
    api_client: client.ApiClient,
    namespace: str,
    s3: dict[str, str],
    examples_dir: Path,
    tmp_path: Path,
) -> None:
    stable = _body(namespace, "1.0.0", s3, examples_dir, runtime={"replicas": 5})
    revision = revision_of(stable)
    kubectl.apply(dump(stable))
    eventually(lambda: _jobs(api_client, namespace) == [f"fraud-{revision}"], timeout=20)
    assert deployments(api_client, namespace) == {}  # no model pod before its archive
    eventually(
        lambda: (
            condition_of(status_of(md_api, namespace), "ArchiveReady").get("reason") == "Building"
        ),
        timeout=10,
    )

    ran = _kubelet_builds(api_client, namespace, revision, tmp_path / "build-1")
    assert ran.exit_code == 0, ran.output
    digest = ran.message.strip()
    stored = _bucket(s3).get_object(Bucket="archives", Key=f"store/fraud/{revision}/fraud.mar")
    assert hashlib.sha256(stored["Body"].read()).hexdigest() == digest

    eventually(lambda: phase_is(md_api, namespace, "Succeeded", stableVersion="1.0.0"), timeout=30)
    status = status_of(md_api, namespace)
    assert status["history"][-1]["archiveDigest"] == digest
    assert status["archives"] == [{"revision": revision, "sha256": digest, "store": STORE}]
    assert condition_of(status, "ArchiveReady")["status"] == "True"
    assert deployments(api_client, namespace) == {f"fraud-{revision}": 5}
    eventually(lambda: _jobs(api_client, namespace) == [], timeout=10)

    # Every model pod fetches that archive and checks its digest (run here: kwok runs none).
    apps = client.AppsV1Api(api_client)
    deployment = api_client.sanitize_for_serialization(
        apps.read_namespaced_deployment(f"fraud-{revision}", namespace)
    )
    pod = deployment["spec"]["template"]
    pod["metadata"] = {"name": "model-pod"}
    init = pod["spec"]["initContainers"][0]
    assert init["args"][:2] == ["archive", "fetch"]
    fetched = run_container(api_client, namespace, pod, init, tmp_path / "pod")
    assert fetched.exit_code == 0, fetched.output
    _bucket(s3).put_object(
        Bucket="archives", Key=f"store/fraud/{revision}/fraud.mar", Body=b"not the archive"
    )
    refused = run_container(api_client, namespace, pod, init, tmp_path / "pod-2")
    assert refused.exit_code != 0
    assert digest in refused.output

    # A restarted operator and a replica change build nothing and start no canary.
    operator_process.restart()
    kubectl.apply(
        dump(
            {
                **stable,
                "spec": {**stable["spec"], "runtime": {**stable["spec"]["runtime"], "replicas": 3}},
            }
        )
    )
    eventually(lambda: deployments(api_client, namespace) == {f"fraud-{revision}": 3}, timeout=30)
    time.sleep(3)
    assert _jobs(api_client, namespace) == []
    assert status_of(md_api, namespace)["phase"] == "Succeeded"

    # A canary whose weights do not match their sha256 fails its build: rolled back at once,
    # the log's tail in the condition and the Event, the stable untouched.
    canary = _body(namespace, "2.0.0", s3, examples_dir, runtime={"replicas": 3})
    canary["spec"]["model"]["source"]["sha256"] = "0" * 64
    new = revision_of(canary)
    kubectl.apply(dump(canary))
    ran = _kubelet_builds(api_client, namespace, new, tmp_path / "build-2")
    assert ran.exit_code != 0
    eventually(lambda: phase_is(md_api, namespace, "RolledBack"), timeout=30)
    status = status_of(md_api, namespace)
    assert "sha256" in status["rollbackReason"], status["rollbackReason"]
    failed = condition_of(status, "ArchiveReady")
    assert (failed["status"], failed["reason"]) == ("False", "BuildFailed")
    assert "sha256" in failed["message"]
    assert "archive build failed" in events_of(kubectl, namespace)
    assert deployments(api_client, namespace) == {f"fraud-{revision}": 3}
