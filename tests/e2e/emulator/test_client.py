"""The operator's API client shared by its reconcile threads: a kind the API server does
not serve is KindNotInstalled for every thread at once, never an error from inside the
client's discovery cache (which one thread's invalidation used to break for the others)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kubernetes import config

from torchrollout.operator.cluster import KindNotInstalled
from torchrollout.operator.kube import KubernetesCluster

pytestmark = pytest.mark.e2e


def test_threads_asking_for_a_missing_kind_all_hear_it_is_not_installed(
    kubeconfig: Path,
) -> None:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    cluster = KubernetesCluster(api)

    def ask(index: int) -> str:
        try:
            if index % 2:
                cluster.list("example.com/v1", "Nothing", "default", {"a": "b"})
            else:
                cluster.list("v1", "ConfigMap", "default", {"a": "b"})
        except KindNotInstalled:
            return "not installed"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "listed"

    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, range(160)))
    finally:
        api.close()
    assert sorted(set(answers)) == ["listed", "not installed"], answers
    assert answers.count("not installed") == 80
