"""The example ModelDeployments' handler configs build the architectures they name."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from torchrollout.archive.handlers import handlers_dir
from torchrollout.spec import load_model_deployment

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "deployments").glob("*.yaml"))


def models_module() -> ModuleType:
    path = handlers_dir() / "torchrollout_models.py"
    spec = importlib.util.spec_from_file_location("torchrollout_models", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("torchrollout_models", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_architecture_builds(path: Path) -> None:
    config = load_model_deployment(path).spec.model.config
    if "architecture" not in config:
        pytest.skip("TorchScript / torch.export weights carry their own architecture")
    model = models_module().build_model(config["architecture"])
    assert sum(p.numel() for p in model.parameters()) > 0
