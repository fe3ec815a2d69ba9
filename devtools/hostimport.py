"""Import this pack in-process, with the real ComfyUI host (tests, benchmarks) or without it (unit tests).

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


def in_host_environment() -> bool:
    """Whether this process runs with a host's packages: started by run.py, or by a host venv's Python."""
    return "LAYER_SKETCH_COMFY_DIR" in os.environ or hostenv.running_in_host_venv() is not None


def _pack_spec() -> importlib.machinery.ModuleSpec:
    return importlib.util.spec_from_file_location(PACK, hostenv.REPO / "__init__.py",
                                                  submodule_search_locations=[str(hostenv.REPO)])


def mount_pack() -> ModuleType:
    """The package `comfyui_layer_sketch` without running its `__init__` (which registers nodes in ComfyUI):
    its pure libraries import with no host installed."""
    if PACK not in sys.modules:
        sys.modules[PACK] = importlib.util.module_from_spec(_pack_spec())
    return sys.modules[PACK]


def import_pack() -> ModuleType:
    """The pack as ComfyUI loads it, after the host: nodes, model folders and example inputs registered."""
    module = sys.modules.get(PACK)
    if module is not None and hasattr(module, "NODE_CLASS_MAPPINGS"):
        return module
    import_host()
    module = mount_pack()
    _pack_spec().loader.exec_module(module)
    return module


def queue_client() -> ModuleType:
    """The pack's queue client (`queue_workflow`, standard library only), with or without the host imported."""
    mount_pack()
    return importlib.import_module(f"{PACK}.queue_workflow")
