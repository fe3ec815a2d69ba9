"""Test set-up for every test: the pack importable as its package, cached fixtures.

Under a host's Python (`python3 run.py --test`, or `.host/<version>/venv/bin/python -P -m pytest`) the real
host is imported in-process first, then the pack, as tests/host and tests/e2e need. In a plain environment
with only the pack's pure dependencies (`.host/pure`, or any Python with pytest for the queue client's tests)
the pack is imported without a host, so its `__init__` registers nothing, and tests/unit runs on its own:
`python -P -m pytest tests/unit`. pyproject.toml puts tests/ (the `support` helpers) and devtools/ on sys.path;
the venvs' .pth (devtools/hostenv.py) makes the pack importable as `comfyui_layer_sketch`.
"""

from __future__ import annotations

import ctypes
import gc
import sys
from pathlib import Path

import hostimport
import pytest

if hostimport.in_host_environment():
    hostimport.import_pack()
else:
    hostimport.mount_pack()


@pytest.fixture(scope="session")
def fixture_cache() -> Path:
    """Generated fixtures (random checkpoints and weight files) kept between runs, outside the repo."""
    from support.fixtures import cache_dir

    return cache_dir()


@pytest.fixture(scope="module", autouse=True)
def release_host_memory():
    """After each test module: the host's loaded models unloaded and freed memory handed back to the system.

    The in-process host keeps what a module loaded (its model list, the allocator's free pages); over a whole
    host stage on a CPU that grew past what a 24 GB CI machine holds beside the session's server.
    """
    yield
    if "comfy.model_management" not in sys.modules:
        return
    import comfy.model_management

    comfy.model_management.unload_all_models()
    gc.collect()
    comfy.model_management.soft_empty_cache()
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc keeps freed pages of big tensors otherwise
