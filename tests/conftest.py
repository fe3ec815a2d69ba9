"""Test set-up for every test: the pack importable as its package, cached fixtures.

Under a host's Python (`python3 run.py --test`, or `.host/<version>/venv/bin/python -m pytest`) the real
host is imported in-process first, as tests/host and tests/e2e need. In a plain environment with only the
pack's pure dependencies the pack is mounted without its `__init__`, and tests/unit runs on its own:
`python -m pytest tests/unit`. pyproject.toml puts tests/ (the `support` helpers) and devtools/ on sys.path.
"""

from __future__ import annotations

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
