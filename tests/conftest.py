"""Test set-up: the real ComfyUI host in-process, the pack imported as a package, cached fixtures.

Run through `python3 run.py --test`, which installs the host and keeps this checkout off sys.path
(its `nodes/` package would shadow the host's `nodes.py`).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "devtools"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the `support` helpers

import hostenv  # noqa: E402

COMFY_DIR = Path(os.environ.get("LAYER_SKETCH_COMFY_DIR", hostenv.COMFY_DIR))
PACK = "comfyui_layer_sketch"


def _import_host() -> None:
    """Put the host's top-level modules first on sys.path, configured as a CPU-only run would be."""
    sys.path.insert(0, str(COMFY_DIR))
    import torch
    from comfy.cli_args import args

    if not torch.cuda.is_available():
        args.cpu = True
    import utils.extra_config  # noqa: F401  (before `nodes`, or `utils` resolves to comfy/utils.py)


def _import_pack():
    spec = importlib.util.spec_from_file_location(PACK, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = module
    spec.loader.exec_module(module)
    return module


_import_host()
_import_pack()


@pytest.fixture(scope="session")
def fixture_cache() -> Path:
    """Generated fixtures (random checkpoints and weight files) kept between runs, outside the repo."""
    path = Path(os.environ.get("LAYER_SKETCH_TEST_CACHE", Path.home() / ".cache" / "comfyui-layer-sketch-tests"))
    path.mkdir(parents=True, exist_ok=True)
    return path
