"""The Python versions the README states: run.py refuses an older one clearly, the queue client runs on 3.10."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _python_310() -> Path:
    """A Python 3.10 beside this one (pyenv keeps versions side by side), or a skip saying none is installed."""
    found = sorted(Path(sys.base_prefix).parent.glob("3.10*/bin/python3.10"))
    if not found:
        pytest.skip("no Python 3.10 installed beside this Python")
    return found[-1]


def test_run_script_refuses_python_older_than_311_with_a_message():
    result = subprocess.run([str(_python_310()), str(REPO / "run.py"), "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert "run.py needs Python 3.11 or newer (this is 3.10" in result.stderr
    assert "usage" not in result.stdout


def test_queue_client_starts_on_python_310(tmp_path):
    (tmp_path / "comfyui_layer_sketch").symlink_to(REPO, target_is_directory=True)  # as in custom_nodes/
    result = subprocess.run([str(_python_310()), "-m", "comfyui_layer_sketch.queue_workflow", "--help"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--server" in result.stdout and "--set" in result.stdout
