"""Tests for torchrollout; `python -m tests.kube_emulator` serves the Kubernetes API emulator."""
