"""The contract between the pack and ComfyUI: every host symbol the pack calls, with the shape it calls it in.

Guards against a ComfyUI release that renames, removes or re-signs something the pack uses: each
entry of CONTRACT is one test that fails with a message naming the host symbol, the call shape the
pack uses, the host's signature now, and the pack's call site. Nothing is called: call shapes are
checked with `inspect.signature(...).bind(...)` on placeholders.

An entry (`Use`) is a dotted host path plus what the pack relies on:
  call       the pack's call shape, e.g. "(pixels)" or "(models, memory_required=, force_full_load=)":
             that many positional arguments and those keyword names ("**kw": the host must take **kwargs)
  same       the host's exact parameter list, for host functions whose parameters the pack takes in
             the same order (the pack's wrappers and overrides): "(self, x, t, c_concat=, **kwargs)"
  mentions   names the host's code must still use (dict keys it fills, attributes it reads)
  is_a       the exact host class the object must be (the pack tests `type(x) is ...`)
  alternatives  other entries, any one of which may hold instead (where the pack handles both shapes)
No field: the symbol must exist. A path may start at a small real host object instead of a module:
"comfy.sd.VAE(SD).process_input" is the attribute of a VAE built by INSTANCES["comfy.sd.VAE(SD)"].

To add an entry: put `Use("<dotted path>", "<call shape>", "<pack file>")` in the section of its host
module. `test_contract_is_complete` fails, naming file and line, for any `comfy.*`/`folder_paths.*`
use in the pack without an entry here; methods called on host objects (a MODEL, a VAE) it cannot
see, so add those by hand when the pack starts calling one.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import comfyui_version
import pytest
from comfyui_layer_sketch.layer_model.attention_sharing import SD15_ATTENTION_PATHS
from comfyui_layer_sketch.sketch_guidance.features import LAYER_SETS, feature_channels
from support import host_models
from support.host_names import HOST_ROOTS

pytestmark = pytest.mark.contract  # also run on the middle host (devtools/hostenv.py)

VERSION = comfyui_version.__version__
REPO = Path(__file__).resolve().parents[2]
PACK_SOURCES = sorted([*REPO.glob("*.py"), *(p for d in ("layer_model", "sketch_guidance", "nodes", "common")
                                               for p in (REPO / d).glob("*.py"))])


@dataclass(frozen=True)
class Use:
    path: str
    call: str | None = None
    where: str = ""
    same: str | None = None
    mentions: tuple[str, ...] = ()
    is_a: str | None = None
    alternatives: tuple[Use, ...] = ()
    subclasses: bool = False  # also check overrides in the host's subclasses (ModelPatcherDynamic, ...)


SD15, SDXL, VAE = "comfy.model_patcher.ModelPatcher(SD15)", "comfy.model_patcher.ModelPatcher(SDXL)", "comfy.sd.VAE(SD)"
UNET = f"{SD15}.model.diffusion_model"
ATTN = f"{SD15}.model.{SD15_ATTENTION_PATHS[0]}"
INSTANCES = {  # small real host objects, built once per session
    SD15: lambda: host_models.random_model("SD15", host_models.NARROW_SD15_UNET),
    SDXL: lambda: host_models.random_model("SDXL", host_models.NARROW_SDXL_UNET),
    VAE: host_models.small_vae,
}
LH, LP, SH, CH = "layer_model/host.py", "layer_model/host_patches.py", "sketch_guidance/host.py", "common/host.py"


def patcher(name: str, call: str, where: str) -> Use:
    return Use(f"comfy.model_patcher.ModelPatcher.{name}", call, where, subclasses=True)


def module(name: str, where: str) -> Use:
    return Use(name, where=where)


CONTRACT: tuple[Use, ...] = (
    # Modules the pack imports.
    module("comfy.cli_args", "sketch_guidance/cli.py"),
    module("comfy.latent_formats", CH),
    module("comfy.ldm.modules.attention", LP),
    module("comfy.lora", LP),
    module("comfy.model_management", f"{LH}, {LP}, {SH}, {CH}"),
    module("comfy.model_patcher", f"{LH}, {LP}, {SH}"),
    module("comfy.ops", LP),
    module("comfy.patcher_extension", f"{LP}, {SH}"),
    module("comfy.samplers", SH),
    module("comfy.sd", SH),
    module("comfy.utils", f"{LH}, {LP}, {CH}"),
    module("comfy.weight_adapter", LP),
    module("folder_paths", f"{LH}, {SH}, {CH}"),
    # comfy.model_management
    Use("comfy.model_management.throw_exception_if_processing_interrupted", "()", LH),
    Use("comfy.model_management.get_torch_device", "()", f"{LH}, {LP}, {SH}"),
    Use("comfy.model_management.should_use_fp16", "(load_device)", LH),
    Use("comfy.model_management.should_use_bf16", "(device)", LH),  # may a GPU decode in bf16
    Use("comfy.model_management.vae_offload_device", "()", LH),
    Use("comfy.model_management.unet_offload_device", "()", f"{LP}, {SH}"),
    Use("comfy.model_management.load_models_gpu", "(models, memory_required=, force_full_load=)", LH),
    Use("comfy.model_management.get_free_memory", "(device)", LH),
    Use("comfy.model_management.intermediate_device", "()", f"{LH}, {CH}"),
    Use("comfy.model_management.OOM_EXCEPTION", where=LH),
    Use("comfy.model_management.soft_empty_cache", "()", LH),
    # comfy.model_patcher: MODEL objects, and the pack's own models wrapped for model management
    Use("comfy.model_patcher.ModelPatcher", "(module, load_device=, offload_device=)", f"{LH}, {LP}, {SH}"),
    patcher("clone", "()", f"{LP}, {SH}"),
    Use("comfy.model_patcher.ModelPatcher.add_patches", "(patches, strength)", LP, mentions=("append",),
        subclasses=True),  # returns the keys it applied: the FLUX LoRA counts them
    patcher("add_object_patch", "(module_path, module)", LP),
    patcher("add_wrapper_with_key", "(wrapper_type, key, wrapper)", f"{LP}, {SH}"),
    patcher("remove_wrappers_with_key", "(wrapper_type, key)", LP),
    patcher("get_model_object", "(name)", f"{LP}, {SH}"),
    patcher("set_model_sampler_post_cfg_function", "(function)", SH),
    # apply_guidance moves its post-CFG function to the front of the clone's list, which the sampler runs in order
    Use("comfy.model_patcher.set_model_options_post_cfg_function", where=SH, mentions=("sampler_post_cfg_function",)),
    patcher("set_additional_models", "(key, models)", SH),
    # The pack sets `patched.size`; the host must still plan memory with it.
    Use("comfy.model_patcher.ModelPatcher.model_size", "()", LP, mentions=("size",), subclasses=True),
    Use(f"{SD15}.model", where=f"{LH}, {LP}, {SH}"),
    Use(f"{SD15}.load_device", where=LH),
    Use(f"{SD15}.size", where=LP),
    # comfy.model_base: what the pack reads off MODEL.model
    Use(f"{SD15}.model.latent_format", where=CH, is_a="comfy.latent_formats.SD15"),
    Use(f"{SDXL}.model.latent_format", where=CH, is_a="comfy.latent_formats.SDXL"),
    Use(f"{SD15}.model.latent_format.process_in", "(latent)", f"{LP}, {SH}"),
    Use(f"{SD15}.model.latent_format.process_out", "(latent)", SH),
    Use(f"{SD15}.model.model_config", where=CH),
    Use(f"{SD15}.model.get_dtype", "()", LP),
    Use(f"{SD15}.model.manual_cast_dtype", where=LP),
    Use(f"{SD15}.model.state_dict", "()", LP),
    Use(f"{SD15}.model.model_sampling.percent_to_sigma", "(percent)", f"{LP}, {SH}"),
    Use(f"{SD15}.model.model_sampling.sigma", "(timestep)", SH),
    Use(f"{SD15}.model.model_sampling.noise_scaling", "(sigma, noise, latent_image)", SH),
    # APPLY_MODEL wrappers get these arguments positionally and pass them on in this order.
    Use("comfy.model_base.BaseModel._apply_model", where=f"{LP}, {SH}",
        same="(self, x, t, c_concat=, c_crossattn=, control=, transformer_options=, **kwargs)"),
    Use("comfy.model_base.BaseModel.apply_model", where=f"{LP}, {SH}", mentions=("APPLY_MODEL",)),
    Use("comfy.model_base.BaseModel.extra_conds", where=LP, mentions=("noise_concat",)),  # with_condition_latents
    # The UNet: layers the pack hooks (attention sharing, feature capture) and the projections it reads.
    Use(f"{UNET}.in_channels", where=LP),
    Use(f"{UNET}.input_blocks", where=f"{SH}, sketch_guidance/features.py, layer_model/attention_sharing.py"),
    Use(f"{UNET}.middle_block", where="sketch_guidance/features.py, layer_model/attention_sharing.py"),
    Use(f"{UNET}.output_blocks", where="sketch_guidance/features.py, layer_model/attention_sharing.py"),
    *(Use(f"{SD15}.model.{path}", where="layer_model/attention_sharing.py (SD15_ATTENTION_PATHS)")
      for path in SD15_ATTENTION_PATHS),
    Use(f"{ATTN}.forward", "(x, context=, value=, transformer_options=)", "layer_model/attention_sharing.py"),
    Use(f"{ATTN}.heads", where="layer_model/attention_sharing.py"),
    Use(f"{ATTN}.to_q.in_features", where="layer_model/attention_sharing.py"),
    Use(f"{ATTN}.to_k.in_features", where="layer_model/attention_sharing.py"),
    Use(f"{ATTN}.to_k.out_features", where="layer_model/attention_sharing.py"),
    Use(f"{ATTN}.to_v", where="layer_model/attention_sharing.py"),
    Use(f"{ATTN}.to_out.0.out_features", where="layer_model/attention_sharing.py"),
    Use(f"{ATTN}.to_out.1", where="layer_model/attention_sharing.py"),
    # _host_weights: host cast layers go through cast_bias_weight, plain ones are read directly.
    Use(f"{ATTN}.to_q.weight_function", where=LP, alternatives=(Use(f"{ATTN}.to_q.weight", where=LP),)),
    Use("comfy.ops.cast_bias_weight", "(linear, x)", LP),
    Use("comfy.ldm.modules.attention.optimized_attention", "(q, k, v, heads, attn_precision=, transformer_options=)",
        LP),
    # The transformer block's attention patches, which the units take over (layer_model/attention_patches.py):
    # the keys it reads, the options it hands the patches, and how it calls a replaced attention.
    Use("comfy.ldm.modules.attention.BasicTransformerBlock.forward", where="layer_model/attention_patches.py",
        mentions=("patches_replace", "attn1_patch", "attn2_patch", "attn1_output_patch", "attn2_output_patch",
                  "block_index", "n_heads", "dim_head", "attn_precision", "to_q", "to_out")),
    Use(f"{ATTN}.attn_precision", where="layer_model/attention_sharing.py"),
    # Weight patches: a LoRA adapter or a "diff" with pad_weight (the wider conv_in).
    Use("comfy.weight_adapter.LoRAAdapter", "(loaded_keys, weights)", LP),
    Use("comfy.lora.calculate_weight", where=LP, mentions=("diff", "pad_weight")),
    # The FLUX LoRA: the host's key map (diffusers names onto fused FLUX weights) and its LoRA reader.
    Use("comfy.lora.model_lora_keys_unet", "(model, key_map)", LP, mentions=("Flux", "flux_to_diffusers")),
    Use("comfy.lora.load_lora", "(lora, to_load, log_missing=)", LP),
    Use("comfy.patcher_extension.WrappersMP.APPLY_MODEL", where=f"{LP}, {SH}"),
    # comfy.samplers: the post-CFG args and transformer_options keys the pack reads, the feature probe
    Use("comfy.samplers.cfg_function", where=SH, mentions=("denoised", "input", "sigma", "sampler_post_cfg_function")),
    Use("comfy.samplers._calc_cond_batch", where=f"{SH}, layer_model/attention_sharing.py",
        mentions=("cond_or_uncond", "sigmas")),
    Use("comfy.samplers.Sampler", where=SH),
    # _FeatureProbe.sample overrides the sampler protocol: the guider calls it with these parameters.
    Use("comfy.samplers.KSAMPLER.sample", where=SH,
        same="(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=, denoise_mask=, disable_pbar=)"),
    Use("comfy.samplers.CFGGuider", "(model)", SH),
    Use("comfy.samplers.CFGGuider.set_conds", "(positive, negative)", SH),
    Use("comfy.samplers.CFGGuider.set_cfg", "(cfg)", SH),
    Use("comfy.samplers.CFGGuider.sample", "(noise, latent, sampler, sigmas, disable_pbar=, seed=)", SH),
    Use("comfy.samplers.CFGGuider.predict_noise", "(x, timestep, model_options=, seed=)", SH),  # model_wrap(...)
    Use("comfy.samplers.CFGGuider.outer_sample", where=SH, mentions=("inner_model",)),
    # comfy.sd: VAE, CLIP, checkpoint loading
    Use("comfy.sd.load_checkpoint_guess_config", "(path, output_vae=, output_clip=, embedding_directory=)", SH),
    Use("comfy.sd.CLIP.tokenize", "(caption)", SH),
    Use("comfy.sd.CLIP.encode_from_tokens_scheduled", "(tokens)", SH),
    Use("comfy.sd.VAE.vae_encode_crop_pixels", "(pixels)", LH),
    Use("comfy.sd.VAE.encode", "(pixels)", SH),
    Use(f"{VAE}.first_stage_model.encoder", where=LH),
    # vae_posterior skips a missing quant_conv (other VAE families); on the SD VAE it must be there.
    Use(f"{VAE}.first_stage_model.quant_conv", where=LH),
    Use(f"{VAE}.latent_channels", where=LH),
    Use(f"{VAE}.patcher", where=LH),
    Use(f"{VAE}.memory_used_encode", "(shape, dtype)", LH),
    Use(f"{VAE}.vae_dtype", where=LH),
    Use(f"{VAE}.process_input", "(pixels)", LH),
    Use(f"{VAE}.device", where=LH),
    Use("comfy.latent_formats.SD15", where=CH),
    Use("comfy.latent_formats.SDXL", where=CH),
    Use("comfy.latent_formats.Flux", where=CH),
    # comfy.utils
    Use("comfy.utils.ProgressBar", "(total)", f"{LH}, {CH}"),
    Use("comfy.utils.ProgressBar.update_absolute", "(done, total)", f"{LH}, nodes/sketch.py"),
    Use("comfy.utils.ProgressBar.update", "(count)", LH),
    Use("comfy.utils.get_attr", "(model, path)", LP),
    Use("comfy.cli_args.args", where="sketch_guidance/cli.py"),
    Use("comfy.cli_args.args.cpu", where="sketch_guidance/cli.py"),
    # folder_paths
    Use("folder_paths.models_dir", where=CH),
    Use("folder_paths.folder_names_and_paths", where=f"{LH}, {CH}"),
    Use("folder_paths.add_model_folder_path", "(folder_name, path)", CH),
    Use("folder_paths.get_folder_paths", "(folder_name)", f"{LH}, {SH}"),
    Use("folder_paths.get_full_path_or_raise", "(folder_name, name)", SH),
    Use("folder_paths.get_filename_list", "(folder_name)", SH),
    Use("folder_paths.get_save_image_path", "(prefix, output_dir, width, height)", CH),
    Use("folder_paths.get_output_directory", "()", CH),
    Use("folder_paths.get_input_directory", "()", CH),
)


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
