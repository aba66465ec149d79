"""The generated CRD on a real kube-apiserver."""
