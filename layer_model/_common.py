"""The pack's shared modules (`common/`), reached the same way however this library was imported.

Inside ComfyUI this library is `<pack>.<library>` and `common` is `<pack>.common`; run from the pack's
folder (`python -m sketch_guidance.train`) both are top-level packages. `from ._common import files`
imports `common.files` in either case (PEP 562 module `__getattr__`), and only what is named.
"""

from __future__ import annotations

import importlib
from types import ModuleType

_PARENT = __package__.rpartition(".")[0]
COMMON = f"{_PARENT}.common" if _PARENT else "common"


def __getattr__(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"{COMMON}.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"{COMMON}.{name}":
            raise
        raise AttributeError(f"{COMMON} has no module {name!r}") from None
