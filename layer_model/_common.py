"""Reaches the pack's shared package `common/` from layer_model: `from ._common import files, families`.

ComfyUI loads this library as `<pack>.layer_model`, beside `<pack>.common`; the codec trainer's command line
(`python -m layer_model.train_codec`, from the pack's folder) has both as top-level packages instead.
"""

import importlib

COMMON = f"{__package__.rpartition('.')[0]}.common".lstrip(".")


def __getattr__(name: str):  # PEP 562: `from ._common import x` imports common.x, and only that
    if name.startswith("__"):  # importlib asks for __path__ and the like: no modules of common
        raise AttributeError(name)
    return importlib.import_module(f"{COMMON}.{name}")
