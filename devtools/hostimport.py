"""Import the real ComfyUI host and this pack in-process (tests, benchmarks).

The pack is imported as the package `comfyui_layer_sketch`, as ComfyUI would load it from
`custom_nodes/`; the checkout itself stays off sys.path (its `nodes/` would shadow the host's).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import hostenv

PACK = "comfyui_layer_sketch"
COMFY_DIR = Path(os.environ.get("LAYER_SKETCH_COMFY_DIR", hostenv.COMFY_DIR))


def import_host() -> None:
    """Put the host's top-level modules first on sys.path, configured as a CPU-only run would be."""
    if str(COMFY_DIR) not in sys.path:
        sys.path.insert(0, str(COMFY_DIR))
    import torch
    from comfy.cli_args import args

    if not torch.cuda.is_available():
        args.cpu = True
    import utils.extra_config  # noqa: F401  (before `nodes`, or `utils` resolves to comfy/utils.py)


def import_pack() -> ModuleType:
    if PACK in sys.modules:
        return sys.modules[PACK]
    import_host()
    spec = importlib.util.spec_from_file_location(PACK, hostenv.REPO / "__init__.py",
                                                  submodule_search_locations=[str(hostenv.REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = module
    spec.loader.exec_module(module)
    return module


def queue_client() -> ModuleType:
    """The pack's queue client (`queue_workflow`, standard library only), with or without the host imported.

    Without it, the pack is mounted as its package without running its `__init__` (which registers nodes in
    ComfyUI); the client's relative imports (`common`) resolve all the same.
    """
    if PACK not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK, hostenv.REPO / "__init__.py",
                                                      submodule_search_locations=[str(hostenv.REPO)])
        sys.modules[PACK] = importlib.util.module_from_spec(spec)
    return importlib.import_module(f"{PACK}.queue_workflow")
