"""torchrollout."""
