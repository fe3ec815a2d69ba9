"""Scripts need no sys.path edits: each venv's .pth (devtools/hostenv.py) makes the pack and the dev tools importable.

The pack is importable as its package `comfyui_layer_sketch`, tests/support as `support`, bench/ as `bench`, and
devtools/ as top-level modules, while the checkout itself (whose `nodes/` would shadow the host's `nodes.py`)
and the ComfyUI tree stay off the path. The few places that still edit sys.path are named here with their reason.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import venv
from pathlib import Path

import hostenv

REPO = Path(__file__).resolve().parents[2]
ALLOWED = {
    # Runs with the system Python before any venv exists: devtools/ for hostenv and hostimport.
    "run.py",
    # The one place the host's ComfyUI tree goes on sys.path, first (import_host's docstring says why).
    "devtools/hostimport.py",
    # The training command lines that users run from their pack folder put their ComfyUI on the path.
    "common/host_path.py",
}
PATH_EDIT = re.compile(r"sys\.path\.(insert|append|extend)\(|sys\.path\[[^\]\n]*\]\s*=|sys\.path\s*\+=")
LATE_IMPORT = re.compile(r"noqa:[^\n]*E40[2]")  # an import silenced for following other code


# Where each module named on the command line would be imported from: a file, a namespace's folders, or null.
PROBE = """
import importlib.util, json, sys
specs = {name: importlib.util.find_spec(name) for name in sys.argv[1:]}
print(json.dumps({name: spec and (spec.origin if spec.has_location else list(spec.submodule_search_locations))
                  for name, spec in specs.items()}))
"""


def _python_files() -> list[Path]:
    return [path for path in sorted(REPO.rglob("*.py"))
            if not any(part.startswith(".") for part in path.relative_to(REPO).parts)]


def test_no_sys_path_edits_or_silenced_late_imports_outside_the_allowed_places():
    files = _python_files()
    assert any(path.name == "host_first.py" for path in files) and len(files) > 50, "the scan sees the tree"
    found = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
             for path in files if path.relative_to(REPO).as_posix() not in ALLOWED
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if PATH_EDIT.search(line) or LATE_IMPORT.search(line)]
    assert not found, ("import these through the venv's .pth (devtools/hostenv.py) and `import host_first` instead "
                       f"of editing sys.path: {found}")


def test_the_path_file_makes_the_pack_and_the_dev_tools_importable(tmp_path):
    venv.create(tmp_path / "venv", with_pip=False, symlinks=True)
    python = tmp_path / "venv" / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    path_file = hostenv._write_path_file(python, tmp_path / "host")
    assert hostenv._write_path_file(python, tmp_path / "host") == path_file, "written again in place"
    names = ("comfyui_layer_sketch", "hostimport", "host_first", "support", "bench", "nodes", "folder_paths", "comfy")
    done = subprocess.run([str(python), "-P", "-c", PROBE, *names], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert Path(found["comfyui_layer_sketch"]).resolve() == REPO / "__init__.py"
    assert Path(found["hostimport"]) == REPO / "devtools" / "hostimport.py"
    assert Path(found["host_first"]) == REPO / "devtools" / "host_first.py"
    assert [Path(p).resolve() for p in found["support"]] == [REPO / "tests" / "support"]
    assert [Path(p).resolve() for p in found["bench"]] == [REPO / "bench"]
    assert found["nodes"] is None, "the checkout must stay off sys.path: its nodes/ would shadow the host's nodes.py"
    assert found["folder_paths"] is None and found["comfy"] is None, "the ComfyUI tree comes in with import_host"
