"""Helpers shared by test packages: tiny models, TorchServe fixtures, metric parsing."""
