"""The one place the real control plane's versions are pinned.

Bumping a version here makes `python -m tests.kube_cluster.build` build that component anew
into its own cache folder; the others are kept.
"""

from __future__ import annotations

KUBERNETES = "v1.36.3"  # kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
ETCD = "v3.6.16"  # go.etcd.io/etcd/server/v3
KWOK = "v0.8.0"  # sigs.k8s.io/kwok: fake nodes and kubelets
HELM = "v3.22.0"  # helm.sh/helm/v3
GATEWAY_API = "v1.6.3"  # sigs.k8s.io/gateway-api: its standard CRDs
ISTIO_API = "v1.32.0"  # istio.io/api: Istio's CRDs (VirtualService for the istio router)
KEDA = "v2.21.0"  # github.com/kedacore/keda/v2: KEDA's CRDs (ScaledObject for engine keda)

# The oldest Go that builds all of the above.
MINIMUM_GO = (1, 26)
