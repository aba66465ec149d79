"""Built-in handlers served by a real TorchServe, and in-process."""
