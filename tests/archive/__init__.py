"""The archive builder: sources, digests, unsafe weights, smoke tests, the CLI."""
