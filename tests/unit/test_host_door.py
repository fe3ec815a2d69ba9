"""Only the host modules import ComfyUI: the libraries and the nodes reach the host through them (pure ast).

The host modules are the libraries' `host*.py` and `common/host.py`. One other module may import the
host, for a reason a host module cannot serve; it is named in ALSO_ALLOWED with that reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

from support.host_names import HOST_ROOTS

REPO = Path(__file__).resolve().parents[2]
CHECKED = ("nodes", "layer_model", "sketch_guidance", "common")
ALSO_ALLOWED: set[str] = set()  # none today (common/host_path.py, which the command lines start the host with,
# is a host module by name)


def host_imports(source: str) -> list[tuple[str, int]]:
    """(imported module, line) for each absolute import of a host module anywhere in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.split(".")[0] in HOST_ROOTS]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] in HOST_ROOTS:
            found.append((node.module, node.lineno))
    return found


def is_host_module(path: Path) -> bool:
    relative = path.relative_to(REPO).as_posix()
    return path.name.startswith("host") or relative in ALSO_ALLOWED


def test_the_scanner_sees_every_kind_of_host_import():
    source = ("import comfy.utils\nimport torch, folder_paths as fp\nfrom comfy.sd import VAE\n"
              "from .nodes import layers\nfrom ..common import host\n"
              "def f():\n    import server\n    from nodes import NODE_CLASS_MAPPINGS\n")
    assert sorted(host_imports(source), key=lambda found: found[1]) == [
        ("comfy.utils", 1), ("folder_paths", 2), ("comfy.sd", 3), ("server", 7), ("nodes", 8)]


def test_only_host_modules_import_the_host():
    checked = [path for folder in CHECKED for path in sorted((REPO / folder).rglob("*.py"))]
    assert any(path.name == "host.py" for path in checked) and len(checked) > 20, "the scan sees the pack"
    offenders = [f"{path.relative_to(REPO)}:{line} imports {module}"
                 for path in checked if not is_host_module(path)
                 for module, line in host_imports(path.read_text(encoding="utf-8"))]
    assert not offenders, ("Only host*.py modules may import ComfyUI; reach the host through "
                           f"one of them: {offenders}")


def test_the_host_modules_do_import_the_host():
    """Guards the scan itself: the modules allowed to import the host are found and do import it."""
    for relative in ("layer_model/host.py", "sketch_guidance/host.py", "common/host.py"):
        assert host_imports((REPO / relative).read_text(encoding="utf-8")), relative
