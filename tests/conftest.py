"""Test set-up: the real ComfyUI host in-process, the pack imported as a package, cached fixtures.

Run through `python3 run.py --test`, which installs the host and keeps this checkout off sys.path
(its `nodes/` package would shadow the host's `nodes.py`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "devtools"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the `support` helpers

import hostimport  # noqa: E402

hostimport.import_pack()


@pytest.fixture(scope="session")
def fixture_cache() -> Path:
    """Generated fixtures (random checkpoints and weight files) kept between runs, outside the repo."""
    from support.fixtures import cache_dir

    return cache_dir()
