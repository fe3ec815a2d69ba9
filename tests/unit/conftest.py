"""tests/unit: the pack's pure parts, no host needed (`python -m pytest tests/unit` in a plain venv)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is marked `unit` (run.py --test runs them once, in the plain venv)."""
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.unit)
