"""Import this pack in-process, with the real ComfyUI host (tests, benchmarks) or without it (unit tests).

The pack is the package `comfyui_layer_sketch`, as ComfyUI loads it from `custom_nodes/`: a host venv's .pth
file (hostenv._write_path_file) makes it importable under that name, with devtools/ and tests/support; the
checkout itself stays off sys.path (its `nodes/` would shadow the host's `nodes.py`). Its `__init__` registers
the nodes only where the host can be imported: imported before the host, it registers nothing, so the host
comes first (`import_pack`, or `import host_first` at the top of a script).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import hostenv

PACK = hostenv.PACK_LINK_NAME
COMFY_DIR = Path(os.environ.get("LAYER_SKETCH_COMFY_DIR", hostenv.COMFY_DIR))


def import_host() -> None:
    """Put the host's top-level modules first on sys.path, configured as a CPU-only run would be.

    This is the one place a host's ComfyUI tree goes on sys.path (ComfyUI is no installed package: `python
    main.py` has its folder first). It is not in the venv's .pth: there it would come after site-packages,
    where an installed `utils` or `app` would shadow ComfyUI's, and it would put `nodes`, `server`, `main`,
    `utils`, ... on the path of every process of the venv (pip, torchrun, the unit tests).
    """
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


def mount_pack() -> ModuleType:
    """The package `comfyui_layer_sketch`, imported as it is: registering nothing unless the host was imported.

    Found through the venv's .pth; a Python without one (run.py under the system Python, the queue client's
    tests in a bare Python) loads it from the checkout, as the .pth would.
    """
    if PACK in sys.modules:
        return sys.modules[PACK]
    if importlib.util.find_spec(PACK) is not None:
        return importlib.import_module(PACK)
    spec = importlib.util.spec_from_file_location(PACK, hostenv.REPO / "__init__.py",
                                                  submodule_search_locations=[str(hostenv.REPO)])
    module = sys.modules[PACK] = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PACK]
        raise
    return module


def import_pack() -> ModuleType:
    """The pack as ComfyUI loads it, after the host: nodes, model folders and example inputs registered."""
    import_host()
    module = mount_pack()
    if not module.NODE_CLASS_MAPPINGS:  # imported before the host, it registered nothing: again, with the host
        module.__spec__.loader.exec_module(module)
    return module


def queue_client() -> ModuleType:
    """The pack's queue client (`queue_workflow`, standard library only), with or without the host imported."""
    mount_pack()
    return importlib.import_module(f"{PACK}.queue_workflow")
