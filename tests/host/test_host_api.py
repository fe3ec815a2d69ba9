"""The contract between the pack and ComfyUI: every host symbol the pack calls, with the shape it calls it in.

Guards against a ComfyUI release that renames, removes or re-signs something the pack uses: each
entry of CONTRACT is one test that fails with a message naming the host symbol, the call shape the
pack uses, the host's signature now, and the pack's call site. Nothing is called: call shapes are
checked with `inspect.signature(...).bind(...)` on placeholders.

The entries are in tests/support/host_contract.py (how to write one is said there).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from functools import cache
from pathlib import Path

import comfyui_version
import pytest
from comfyui_layer_sketch.sketch_guidance.features import LAYER_SETS, feature_channels
from support.host_contract import CONTRACT, INSTANCES, SD15, SDXL, Use
from support.host_names import HOST_ROOTS

pytestmark = pytest.mark.contract  # also run on the middle host (devtools/hostenv.py)

VERSION = comfyui_version.__version__
REPO = Path(__file__).resolve().parents[2]
PACK_SOURCES = sorted([*REPO.glob("*.py"), *(p for d in ("layer_model", "sketch_guidance", "nodes", "common")
                                               for p in (REPO / d).glob("*.py"))])


# --- Resolving and checking one entry ---------------------------------------------------------------------


@cache
def instance(key: str):
    return INSTANCES[key]()


def resolve(path: str) -> tuple[object, object | None]:
    """(the object at `path`, the class it was found on, if any); AttributeError naming the missing part."""
    if "(" in path:
        key, _, rest = path.partition(")")
        obj, names = instance(key + ")"), rest.lstrip(".").split(".") if rest else []
    else:
        parts = path.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
                break
            except ImportError:
                if cut == 1:
                    raise AttributeError(f"no module `{parts[0]}`") from None
        names = parts[cut:]
    owner = None
    for name in names:
        if not hasattr(obj, name):
            raise AttributeError(f"`{type(obj).__name__ if not inspect.isclass(obj) else obj.__name__}` has no "
                                 f"attribute `{name}`")
        owner, obj = obj, getattr(obj, name)
    return obj, owner


def parse_shape(shape: str) -> tuple[int, list[str], bool]:
    """'(a, b, key=, **kw)' -> (2 positional, ['key'], needs **kwargs)."""
    items = [item.strip() for item in shape.strip()[1:-1].split(",") if item.strip()]
    positional = sum(1 for item in items if "=" not in item and not item.startswith("*"))
    keywords = [item.split("=")[0].strip() for item in items if "=" in item]
    return positional, keywords, any(item.startswith("**") for item in items)


def shape_of(signature: inspect.Signature) -> str:
    """A signature in the contract's notation: names only, '=' for a default."""
    out = []
    for p in signature.parameters.values():
        prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        out.append(f"{prefix}{p.name}{'=' if p.default is not p.empty else ''}")
    return f"({', '.join(out)})"


def call_problem(obj, owner, shape: str) -> str | None:
    """Why the pack's call shape does not fit `obj`'s signature, or None."""
    signature = inspect.signature(obj)
    positional, keywords, needs_kwargs = parse_shape(shape)
    unbound_method = inspect.isclass(owner) and inspect.isfunction(inspect.getattr_static(owner, obj.__name__, None))
    placeholders = [object()] * (positional + unbound_method)
    try:
        signature.bind(*placeholders, **{name: object() for name in keywords})
    except TypeError as err:
        return f"the pack calls it as {shape} but its signature is now {signature} ({err})"
    if needs_kwargs and not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return f"the pack calls it as {shape} but its signature {signature} no longer takes **kwargs"
    return None


def mention_problem(obj, names: tuple[str, ...]) -> str | None:
    tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    used |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    used |= {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    missing = [name for name in names if name not in used]
    if missing:
        return f"the pack relies on its code using {', '.join(map(repr, names))}, but it no longer uses {missing}"
    return None


def overriding_classes(owner: type, name: str) -> list[type]:
    found, todo = [], list(owner.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if name in vars(cls):
            found.append(cls)
    return found


def problem(use: Use) -> str | None:
    """What is wrong with one entry on this host (None: it holds)."""
    try:
        obj, owner = resolve(use.path)
    except AttributeError as err:
        return f"ComfyUI {VERSION} has no `{use.path}` ({err})"
    reasons = []
    if use.call is not None:
        reasons.append(call_problem(obj, owner, use.call))
        if use.subclasses and inspect.isclass(owner):
            for cls in overriding_classes(owner, obj.__name__):
                why = call_problem(getattr(cls, obj.__name__), cls, use.call)
                reasons.append(why and f"its override in {cls.__module__}.{cls.__name__}: {why}")
    if use.same is not None and shape_of(inspect.signature(obj)) != use.same:
        reasons.append(f"the pack takes its parameters in the order {use.same} but its signature is now "
                       f"{inspect.signature(obj)}")
    if use.mentions:
        reasons.append(mention_problem(obj, use.mentions))
    if use.is_a is not None and type(obj) is not resolve(use.is_a)[0]:
        reasons.append(f"the pack tests `type(...) is {use.is_a}` but it is now a {type(obj).__module__}."
                       f"{type(obj).__qualname__}")
    reasons = [reason for reason in reasons if reason]
    return f"ComfyUI {VERSION} changed `{use.path}`: {'; '.join(reasons)}" if reasons else None


@pytest.mark.parametrize("use", CONTRACT, ids=[use.path for use in CONTRACT])
def test_host_provides(use: Use):
    found = problem(use)
    if found and use.alternatives:
        if any(problem(alternative) is None for alternative in use.alternatives):
            return
        found += "; nor does any alternative the pack handles hold: " + "; ".join(
            problem(alternative) for alternative in use.alternatives)
    assert found is None, f"{found} — used in {use.where}"


def test_contract_ids_are_unique():
    paths = [use.path for use in CONTRACT]
    assert len(paths) == len(set(paths)), sorted({p for p in paths if paths.count(p) > 1})


@pytest.mark.parametrize("base, layer_sets", [(SD15, tuple(LAYER_SETS)), (SDXL, ("paper",))], ids=["SD15", "SDXL"])
def test_feature_layers_exist_on_host_unets(base: str, layer_sets: tuple[str, ...]):
    """The edge predictor's layers (`input_blocks[i][-1]`, `middle_block[i]`, ...) on the host's UNet layouts.

    The community layer sets are SD1.5 ones (diffusers' down/up blocks); SDXL predictors use the paper's set.
    """
    unet = instance(base).model.diffusion_model
    for name in layer_sets:
        try:
            feature_channels(unet, LAYER_SETS[name])
        except ValueError as err:
            pytest.fail(f"ComfyUI {VERSION} changed `comfy.ldm.modules.diffusionmodules.openaimodel.UNetModel` "
                        f"({base} layout): layer set '{name}' — {err} — used in sketch_guidance/features.py")


# --- Completeness: every host name the pack uses has an entry ------------------------------------------------


def host_uses(source: str) -> list[tuple[str, int]]:
    """(dotted host path, line) for each host module, imported name and attribute chain in a module's code."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}
    uses: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root in HOST_ROOTS:
                    aliases[alias.asname or root] = alias.name if alias.asname else root
                    uses.append((alias.name, node.lineno))
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module.split(".")[0] in HOST_ROOTS:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                uses.append((f"{node.module}.{alias.name}", node.lineno))

    class Chains(ast.NodeVisitor):
        def visit_Attribute(self, node: ast.Attribute) -> None:
            parts, inner = [], node
            while isinstance(inner, ast.Attribute):
                parts.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id in aliases:
                uses.append((".".join([aliases[inner.id], *reversed(parts)]), node.lineno))
            else:
                self.generic_visit(node)

        def visit_Name(self, node: ast.Name) -> None:
            if node.id in aliases and "." in aliases[node.id]:
                uses.append((aliases[node.id], node.lineno))

    Chains().visit(tree)
    return uses


def test_contract_is_complete():
    listed = {use.path for use in CONTRACT}
    missing = sorted({f"{path} ({source.relative_to(REPO)}:{line})"
                      for source in PACK_SOURCES for path, line in host_uses(source.read_text())
                      if path not in listed})
    assert not missing, (f"The pack uses host names without an entry in CONTRACT ({Path(__file__).relative_to(REPO)}):"
                         f" {', '.join(missing)}. Add a `Use(\"<path>\", \"<call shape>\", \"<pack file>\")` for each, "
                         "so a ComfyUI release that changes it fails by name.")


def test_completeness_check_sees_host_uses():
    """The scanner finds aliased modules, imported names, local imports and whole attribute chains."""
    source = ("import comfy.model_management as mm\nimport comfy.utils\nfrom comfy.x import Y as Z\n"
              "def f():\n    import folder_paths\n"
              "    mm.get(comfy.utils.ProgressBar(3).update, Z(folder_paths.a[0]))\n")
    assert {path for path, _ in host_uses(source)} == {
        "comfy.model_management", "comfy.utils", "comfy.x.Y", "folder_paths", "comfy.model_management.get",
        "comfy.utils.ProgressBar", "folder_paths.a"}
