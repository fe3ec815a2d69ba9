"""sketch_guidance's way to the pack's shared modules in `common/` (atomic files, model families, training).

Modules here write `from ._common import training`. That works in both ways this library runs: loaded by
ComfyUI as a subpackage of the pack, where `common` is its sibling, and as the top-level package of
`python -m sketch_guidance.train` run from the pack's folder, where `common` is top-level too.
"""

import importlib

COMMON = f"{__package__.rpartition('.')[0]}.common".lstrip(".")


def __getattr__(name: str):  # PEP 562: imports common.<name> when a module here asks for it
    if name.startswith("__"):  # importlib's probes (__path__, ...) are no modules of common
        raise AttributeError(name)
    return importlib.import_module(f"{COMMON}.{name}")
