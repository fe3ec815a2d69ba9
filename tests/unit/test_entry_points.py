"""The pack's command-line entry points: names that shadow nothing, and a package import graph without cycles.

Scripts started from the pack's folder (`python -m sketch_guidance.train`) have that folder first on
sys.path, so a top-level `queue.py` there would be imported as the standard library's `queue`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNTIME_CODE = ("__init__.py", "queue_workflow.py", "common", "layer_model", "nodes", "sketch_guidance")


def _top_level_names() -> set[str]:
    """What `import NAME` finds in the pack's folder: its .py files and its folders (packages or namespaces)."""
    files = {path.stem for path in REPO.glob("*.py")}
    folders = {path.name for path in REPO.iterdir() if path.is_dir() and path.name.isidentifier()}
    return (files | folders) - {"__init__"}


def _python_files(*names: str) -> list[Path]:
    paths = [REPO / name for name in names]
    return [path for path in paths if path.is_file()] + [file for path in paths if path.is_dir()
                                                         for file in path.rglob("*.py")]


def _third_party_imports() -> set[str]:
    """Top-level names the pack's runtime code imports absolutely (torch, comfy, ...), other than the stdlib."""
    names = set()
    for path in _python_files(*RUNTIME_CODE):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names)


def test_no_top_level_file_or_folder_shadows_a_standard_library_module():
    # nodes/ against ComfyUI's own nodes.py is a known clash that the host's import order settles.
    clashes = _top_level_names() & set(sys.stdlib_module_names)
    assert not clashes, f"rename these: they shadow the standard library for scripts run from the pack: {clashes}"


def test_no_top_level_file_or_folder_shadows_a_package_the_pack_imports():
    imported = _third_party_imports()
    assert {"torch", "comfy"} <= imported, "the scan sees the pack's imports"
    clashes = _top_level_names() & imported
    assert not clashes, f"rename these: they shadow packages the pack imports: {clashes}"


def test_queue_workflow_client_starts_from_custom_nodes(tmp_path):
    (tmp_path / "comfyui_layer_sketch").symlink_to(REPO, target_is_directory=True)
    done = subprocess.run([sys.executable, "-m", "comfyui_layer_sketch.queue_workflow", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: python -m comfyui_layer_sketch.queue_workflow" in done.stdout


def test_training_command_starts_from_the_pack_folder():
    done = subprocess.run([sys.executable, "-m", "sketch_guidance.train", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "usage: python -m sketch_guidance.train" in done.stdout and "--checkpoint" in done.stdout


# --- the packages' internal import graphs -----------------------------------------------------------------


def _imported_modules(node: ast.AST, package: str, modules: set[str]) -> set[str]:
    """The package's modules one import statement names (relative or absolute)."""
    if isinstance(node, ast.ImportFrom) and node.level == 1:
        names = [node.module] if node.module else [alias.name for alias in node.names]
        return {name.split(".")[0] for name in names} & modules
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        dotted = [f"{node.module}.{alias.name}" for alias in node.names]
    elif isinstance(node, ast.Import):
        dotted = [alias.name for alias in node.names]
    else:
        return set()
    parts = [name.split(".") for name in dotted]
    return {p[p.index(package) + 1] for p in parts if package in p[:-1]} & modules


def _module_imports(tree: ast.AST, package: str, modules: set[str]) -> set[str]:
    """The package's modules one module imports anywhere: at module level, in functions, under `if`."""
    return set().union(*(_imported_modules(node, package, modules) for node in ast.walk(tree)))


def _import_graph(package: str) -> dict[str, set[str]]:
    paths = {path.stem: path for path in (REPO / package).glob("*.py")}
    return {name: _module_imports(ast.parse(path.read_text(encoding="utf-8")), package, set(paths)) - {name}
            for name, path in paths.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        for target in sorted(graph[module]):
            cycle = visit(target, [*path, module])
            if cycle:
                return cycle
        done.add(module)
        return None

    return next((cycle for module in sorted(graph) if (cycle := visit(module, []))), None)


def test_the_cycle_finder_sees_a_cycle_through_a_function_level_import():
    sources = {"a": "from .b import x\n", "b": "def main():\n    from . import a\n"}
    graph = {name: _module_imports(ast.parse(code), "pkg", {"a", "b"}) for name, code in sources.items()}
    assert graph == {"a": {"b"}, "b": {"a"}}
    assert _find_cycle(graph) == ["a", "b", "a"]
    assert _imported_modules(ast.parse("import comfyui_layer_sketch.pkg.b").body[0], "pkg", {"b"}) == {"b"}


@pytest.mark.parametrize("package", ["sketch_guidance", "layer_model", "common", "common/training"])
def test_package_imports_form_no_cycle(package):
    graph = _import_graph(package)
    assert graph, f"no modules found in {package}"
    cycle = _find_cycle(graph)
    assert cycle is None, f"import cycle in {package}: {' -> '.join(cycle)}"


def test_training_imports_its_command_line_and_not_the_reverse():
    graph = _import_graph("sketch_guidance")
    assert "cli" in graph["train"] and "train" not in graph["cli"]
