"""A real Kubernetes control plane on loopback for the tests, built from Go modules.

`python -m tests.kube_cluster.build` builds etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kubectl, kwok and helm into a cache outside the checkout;
`python -m tests.kube_cluster --kubeconfig FILE` runs them.
"""
