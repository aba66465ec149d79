"""The plain install manifests (`manifests/install/torchrollout.yaml`), rendered from the chart.

`python -m tests.support.install_manifests` (or `make manifests`) writes the file; a test
keeps it equal to the chart, so the two ways to install never drift apart.
"""

from __future__ import annotations

from pathlib import Path

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "torchrollout"
OUTPUT = ROOT / "manifests" / "install" / "torchrollout.yaml"
NAMESPACE = "torchrollout-system"
HEADER = (
    "# torchrollout: the CRD, the operator's namespace, RBAC and Deployment.\n"
    "# kubectl apply -f manifests/install/torchrollout.yaml\n"
    "# Rendered from charts/torchrollout with its default values (make manifests).\n"
)


def render() -> str:
    chart = helm_python.Chart.load(CHART)
    documents = [yaml.safe_load(crd["data"]) for crd in chart.crds]
    # The operator's pod passes the restricted Pod Security Standard: enforce it there.
    documents.append(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": NAMESPACE,
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
            },
        }
    )
    rendered = chart.render({}, name="torchrollout", namespace=NAMESPACE)
    for _, text in sorted(rendered.items()):
        documents += [d for d in yaml.safe_load_all(text) if d]
    return HEADER + yaml.safe_dump_all(documents, sort_keys=False, width=100)


if __name__ == "__main__":
    OUTPUT.write_text(render())
