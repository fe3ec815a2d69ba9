"""Host side of the model patches: SDXL weight deltas, SD1.5 attention sharing, the FLUX LoRA, on a MODEL clone.

Like `host.py`, this imports ComfyUI; everything it applies is built by the plain-torch modules.
Patches go through the host's own APIs only (`clone`, `add_patches`, `add_object_patch`), so the
loaded base model is never changed.
"""

from __future__ import annotations

from collections.abc import Sequence

import comfy.ldm.modules.attention as host_attention
import comfy.lora
import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import comfy.patcher_extension
import comfy.utils
import torch
from comfy.weight_adapter import LoRAAdapter

from . import host, weights
from .attention_patches import ControlPatches, block_key, route_patches
from .attention_sharing import AttentionSharingLayers, AttentionSharingUnit, SharingState, attention_paths
from .flux_lora import GatedLoRALinear, LoRAPair, LoRAPiece, parse_peft_lora
from .modes import LayerMode
from .unet_patches import (
    CONV_IN,
    GatedDelta,
    SigmaGate,
    WeightDelta,
    concat_channels,
    diffusers_offsets,
    parse_unet_patches,
)

ModelPatcher = comfy.model_patcher.ModelPatcher


def check_mode_fits(model: ModelPatcher, mode: LayerMode) -> None:
    """Refuse, before any file is read, a mode made for another base model."""
    base = host.base_from_model(model)
    if base != mode.base:
        raise ValueError(f"'{mode.name}' is made for {mode.base} models, but the connected MODEL is {base}. "
                         f"Choose one of the {base} modes (or 'auto').")
    if mode.base == weights.FLUX and host.flux_architecture(model) != weights.FLUX:
        raise ValueError(
            f"The connected MODEL ({type(model.model.model_config).__name__}) samples FLUX.1's latents but is not "
            f"FLUX.1, and the published transparency LoRA of '{mode.name}' is for FLUX.1 only. Train one for this "
            "model: Layer Diffuse RGBA Training Dataset (FLUX codec) into the host's Train LoRA, then load the "
            "result with Load LoRA Model and decode with Layer Diffuse Decode as usual.")


def _weight_file_path(mode: LayerMode) -> str:
    return host.ensure_weight(weights.REGISTRY[mode.file])


def sigma_range(model: ModelPatcher, start_percent: float, end_percent: float) -> tuple[float, float]:
    if not 0.0 <= start_percent <= end_percent <= 1.0:
        raise ValueError(f"start_percent ({start_percent}) and end_percent ({end_percent}) must satisfy "
                         "0 <= start <= end <= 1.")
    sampling = model.get_model_object("model_sampling")
    start = float("inf") if start_percent == 0.0 else float(sampling.percent_to_sigma(start_percent))
    end = 0.0 if end_percent == 1.0 else float(sampling.percent_to_sigma(end_percent))
    return start, end


def _host_patch(key: str, delta: WeightDelta):
    if delta.is_lora:
        return LoRAAdapter(set(), (delta.up, delta.down, None, None, None, None))
    # conv_in of the layer models is wider than the model's: the host pads the weight to fit.
    return ("diff", (delta.diff, {"pad_weight": key == CONV_IN}))


def _check_fits(deltas: dict[str, WeightDelta], model: ModelPatcher, name: str, wide_conv_in: bool = True) -> None:
    """Refuse deltas without a model weight of their shape; `wide_conv_in`: conv_in may add input channels."""
    model_weights = model.model.state_dict()
    misfits = []
    for key, delta in deltas.items():
        target = model_weights.get(key)
        if target is None:
            misfits.append(f"{key} (not in this model)")
        elif (not wide_conv_in or key != CONV_IN) and \
                delta.shape != tuple(target.flatten(1).shape if delta.is_lora else target.shape):
            misfits.append(f"{key} ({delta.shape} vs {tuple(target.shape)})")
    if misfits:
        raise ValueError(f"{name} does not fit the connected model: {len(misfits)} of its {len(deltas)} weights "
                         f"have no counterpart of that shape, e.g. {misfits[:2]}. The file may be damaged, or the "
                         "checkpoint is not a standard SDXL model.")


def apply_weight_deltas(model: ModelPatcher, mode: LayerMode, strength: float, condition_channels: int = 0,
                        start_percent: float = 0.0, end_percent: float = 1.0) -> ModelPatcher:
    """A clone of `model` with the mode's LoRA/diff weights added at `strength`.

    Over the whole sampling the deltas are merged into the weights by the host (no cost per step);
    over part of it, the patched layers are swapped for gated ones that add the deltas only while
    the step's sigma is in range. `condition_channels` is how many latent channels the caller
    concatenates; the file's conv_in must expect exactly that many.
    """
    check_mode_fits(model, mode)
    sigma_start, sigma_end = sigma_range(model, start_percent, end_percent)
    path = _weight_file_path(mode)
    deltas = _mode_deltas(model, mode, path)
    expected = concat_channels(deltas, model.model.diffusion_model.in_channels)
    if expected != condition_channels:
        raise ValueError(f"{path} expects {expected} concatenated condition channels but '{mode.name}' gives "
                         f"{condition_channels}: the file under that name is not the published one.")
    patched = model.clone()
    weight_set = weights.REGISTRY[mode.file].weight_set
    if weight_set:  # Decode/Encode's 'published' codec follows the set of the weights the model carries
        patched.model_options[host.WEIGHT_SET_OPTION] = (mode.base, weight_set)
    if (start_percent, end_percent) == (0.0, 1.0):
        applied = patched.add_patches({key: _host_patch(key, delta) for key, delta in deltas.items()}, strength)
        if len(applied) != len(deltas):  # never a silent partial patch
            raise ValueError(f"{path}: the host applied {len(applied)} of its {len(deltas)} weight deltas.")
    else:
        _gate_deltas(patched, deltas, strength, SigmaGate(sigma_start, sigma_end))
    if condition_channels:
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "layer_sketch_concat",
                                     _check_condition_size)
    return patched


def _mode_deltas(model: ModelPatcher, mode: LayerMode, path: str) -> dict[str, WeightDelta]:
    """Model key -> delta from the mode's file, every key checked against the model's weights and shapes."""
    state = weights.load_state_dict(path)
    if mode.kind == "diffusers_weights":
        return diffusers_deltas(model, mode, state, path)
    deltas = parse_unet_patches(state, path)
    _check_fits(deltas, model, path)
    return deltas


def diffusers_deltas(model: ModelPatcher, mode: LayerMode, state: dict[str, torch.Tensor],
                     path: str) -> dict[str, WeightDelta]:
    """Model key -> offset from a file keyed by diffusers UNet names; refused unless every key maps onto a weight
    of the model with the offset's shape."""
    deltas, unmapped = diffusers_offsets(state, diffusers_key_map(model))
    if unmapped or not deltas:
        raise ValueError(
            f"{path}: {len(unmapped)} of its {len(state)} keys name no weight of the connected "
            f"{type(model.model).__name__} model's UNet in diffusers names (e.g. {unmapped[:2]}), so nothing was "
            f"applied. '{mode.name}' needs {weights.REGISTRY[mode.file].description}, keys such as "
            "'down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight'; replace the file with the "
            "published one.")
    _check_fits(deltas, model, path, wide_conv_in=False)
    return deltas


def diffusers_key_map(model: ModelPatcher) -> dict[str, str]:
    """diffusers UNet2DConditionModel weight name -> the model's key, by the host's own map (the one it loads
    diffusers-format UNets with)."""
    names = comfy.utils.unet_to_diffusers(model.model.model_config.unet_config)
    return {name: f"diffusion_model.{key}" for name, key in names.items()}


def _gate_deltas(patched: ModelPatcher, deltas: dict[str, WeightDelta], strength: float, gate: SigmaGate) -> None:
    by_module: dict[str, dict[str, WeightDelta]] = {}
    for key, delta in deltas.items():
        module_path, name = key.rsplit(".", 1)
        by_module.setdefault(module_path, {})[name] = delta
    for module_path, module_deltas in by_module.items():
        original = _original_module(patched, module_path)
        patched.add_object_patch(module_path, GatedDelta(original, module_deltas, strength, gate))
    _update_gate_each_call(patched, gate)


def _update_gate_each_call(patched: ModelPatcher, gate: SigmaGate) -> None:
    def open_gate_in_range(executor, x, t, *args, **kwargs):
        gate.update(float(t.max()))
        return executor(x, t, *args, **kwargs)

    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "layer_sketch_gate",
                                 open_gate_in_range)


def _check_condition_size(executor, x, t, c_concat=None, *args, **kwargs):
    """Say clearly when the condition latent does not have the generated latent's size."""
    if c_concat is not None and c_concat.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"The condition latent is {c_concat.shape[-1] * 8}x{c_concat.shape[-2] * 8} px but the "
                         f"image being generated is {x.shape[-1] * 8}x{x.shape[-2] * 8} px: encode the given "
                         "layer(s) at the generated size (Upscale Image before VAE Encode).")
    return executor(x, t, c_concat, *args, **kwargs)


def with_condition_latents(conditioning, model: ModelPatcher, latents: Sequence[torch.Tensor]):
    """A copy of CONDITIONING whose entries feed the given layer latents to the UNet (as c_concat)."""
    concat = torch.cat([model.model.latent_format.process_in(latent.float()) for latent in latents], dim=1)
    out = []
    for embedding, extras in conditioning:
        out.append([embedding, {**extras, "noise_concat": concat}])
    return out


def apply_peft_lora(model: ModelPatcher, mode: LayerMode, strength: float, start_percent: float = 0.0,
                    end_percent: float = 1.0) -> ModelPatcher:
    """A clone of `model` with the mode's diffusers/PEFT LoRA (the FLUX one) at `strength`, by `apply_lora_file`."""
    check_mode_fits(model, mode)
    sigmas = sigma_range(model, start_percent, end_percent)
    needs = (f"'{mode.name}' needs {weights.REGISTRY[mode.file].description} in diffusers/PEFT keys "
             "('transformer.<layer>.lora_A.weight') on a FLUX.1 model; replace the file with the published one, "
             "or load a FLUX.1 model.")
    return apply_lora_file(model, _weight_file_path(mode), needs, strength, sigmas)


WHOLE_RANGE = (float("inf"), 0.0)  # what sigma_range gives for the whole sampling


def apply_lora_file(model: ModelPatcher, path: str, needs: str, strength: float,
                    sigmas: tuple[float, float] = WHOLE_RANGE) -> ModelPatcher:
    """A clone of `model` with the LoRA file at `path` (lora_A/lora_B pairs under any key the host maps) at `strength`.

    The host maps the file's keys to its own weights (slices of fused qkv weights included) and merges
    the LoRA as it merges any LoRA; over part of the sampling (`sigmas` from `sigma_range`), gated layers add
    it on the activations. Every key of the file must land on a weight of the model, or nothing is applied and
    the refusal counts the keys that do not, followed by `needs` (what the file should be).
    """
    state = weights.load_state_dict(path)
    pairs, key_map = checked_lora_pairs(model, state, path, needs)
    patched = model.clone()
    if sigmas == WHOLE_RANGE:
        patches = comfy.lora.load_lora(state, {p: key_map[p] for p in pairs}, log_missing=False)
        applied = patched.add_patches(patches, strength)
        if len(applied) != len(pairs):  # a host that maps keys differently: never a silent partial LoRA
            raise ValueError(f"{path}: the host applied {len(applied)} of its {len(pairs)} LoRA layers.")
        return patched
    gate = SigmaGate(*sigmas)
    by_module: dict[str, list[LoRAPiece]] = {}
    for lora_path, pair in pairs.items():
        key, rows, function = _lora_target(key_map[lora_path])
        by_module.setdefault(key.removesuffix(".weight"), []).append(LoRAPiece(rows, pair, function))
    for module_path, pieces in by_module.items():
        original = _original_module(patched, module_path)
        patched.add_object_patch(module_path, GatedLoRALinear(original, pieces, strength, gate))
    _update_gate_each_call(patched, gate)
    return patched


def checked_lora_pairs(model: ModelPatcher, state: dict[str, torch.Tensor], path: str,
                       needs: str) -> tuple[dict[str, LoRAPair], dict]:
    """(LoRA path -> pair, the host's LoRA key map) of a lora_A/lora_B file whose every key lands, by the host's
    own map (`comfy.lora.model_lora_keys_unet`), on a model weight of its shape; refused with the count if not."""
    pairs, stray = parse_peft_lora(state)
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    model_weights = model.model.state_dict()
    misfits = [p for p in pairs if p not in key_map or not _lora_fits(key_map[p], pairs[p], model_weights)]
    if stray or misfits or not pairs:
        unmatched = stray + [k for p in misfits for k in state if k.startswith(p + ".")]
        raise ValueError(
            f"{path}: {len(unmatched)} of its {len(state)} keys match no weight of the connected "
            f"{type(model.model).__name__} model (e.g. {unmatched[:2]}), so nothing was applied. {needs}")
    return pairs, key_map


def _lora_target(target) -> tuple[str, tuple[int, int] | None, object]:
    """(weight key, output rows or None, row function or None) of a host LoRA key-map entry."""
    if isinstance(target, str):
        return target, None, None
    key, offset = target[0], target[1]
    function = target[2] if len(target) > 2 else None
    return key, None if offset is None else (offset[1], offset[2]), function


def _lora_fits(target, pair: LoRAPair, model_weights: dict[str, torch.Tensor]) -> bool:
    key, rows, _ = _lora_target(target)
    weight = model_weights.get(key)
    if weight is None or weight.ndim != 2 or pair.down.shape[1] != weight.shape[1]:
        return False
    if not isinstance(target, str) and target[1] is not None and target[1][0] != 0:
        return False  # only output-row slices are expected in FLUX's fused weights
    out_rows = weight.shape[0] if rows is None else rows[1]
    in_bounds = rows is None or rows[0] + rows[1] <= weight.shape[0]
    return pair.up.shape[0] == out_rows and pair.up.shape[1] == pair.down.shape[0] and in_bounds


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, **host_kwargs) -> torch.Tensor:
    """The host's attention; `transformer_options` lets an attention override of another pack apply."""
    return host_attention.optimized_attention(q, k, v, heads, **host_kwargs)


def _host_weights(linear: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The UNet projection's weights for `x` as the host computes them: offloaded weights are fetched and
    on-the-fly weight patches (a user's LoRA in low-VRAM mode) are applied."""
    if hasattr(linear, "weight_function"):
        return comfy.ops.cast_bias_weight(linear, x)
    return linear.weight.to(x), None if linear.bias is None else linear.bias.to(x)


def _encode_control(encoder: torch.nn.Module, image: torch.Tensor, dtype: torch.dtype) -> dict[int, torch.Tensor]:
    """Run the control encoder once, on the device the host samples on, loaded through host model management."""
    patcher = ModelPatcher(encoder.to(dtype), load_device=mm.get_torch_device(),
                           offload_device=mm.unet_offload_device())
    module = host.prepare(patcher, working_memory=image.shape[0] * image.shape[2] * image.shape[3] * 64 * 4)
    device = mm.get_torch_device()
    with torch.inference_mode():
        signals = module(image.to(device, dtype))
    # Plain tensors (not inference tensors), kept on the device the UNet runs on.
    return {tokens: signal.clone() for tokens, signal in signals.items()}


def _original_module(model: ModelPatcher, path: str) -> torch.nn.Module:
    """The host's own module at `path`, even while another clone's replacement is patched in.

    The host leaves a sampled clone's object patches in place until it loads another model, so the
    module found there may be a unit or gated layer of an earlier run; both keep the module they replaced.
    """
    module = comfy.utils.get_attr(model.model, path)
    while isinstance(module, (AttentionSharingUnit, GatedDelta, GatedLoRALinear)):
        module = module.original
    return module


def apply_attention_sharing(model: ModelPatcher, mode: LayerMode, strength: float, start_percent: float = 0.0,
                            end_percent: float = 1.0, contexts: Sequence[torch.Tensor | None] = (),
                            control_image: torch.Tensor | None = None) -> ModelPatcher:
    """A clone of `model` whose attention modules are replaced by the mode's attention-sharing units."""
    check_mode_fits(model, mode)
    sigma_start, sigma_end = sigma_range(model, start_percent, end_percent)
    paths = attention_paths(model.model.diffusion_model)
    originals = [_original_module(model, path) for path in paths]
    state = SharingState(weight=strength, sigma_start=sigma_start, sigma_end=sigma_end,
                         context_per_frame=list(contexts))
    layers = AttentionSharingLayers(originals, mode.frames, mode.use_control, state, attention=_attention,
                                    weights_of=_host_weights)
    path = _weight_file_path(mode)
    host.load_strict(layers, weights.load_state_dict(path), path, weights.REGISTRY[mode.file])
    dtype = model.model.get_dtype()
    dtype = dtype if dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float16
    for unit in layers.units:
        unit.to(dtype)
        unit.attach()  # after the cast: the projections are the UNet's own and keep their dtype
    if control_image is not None:
        with torch.no_grad():
            compute_dtype = model.model.manual_cast_dtype or dtype
            state.control = _encode_control(layers.kwargs_encoder, control_image, compute_dtype)
    patched = model.clone()
    for unit_path, unit in zip(paths, layers.units, strict=True):
        patched.add_object_patch(unit_path, unit)
    by_block = {(unit.kind, block_key(unit_path)): unit for unit_path, unit in zip(paths, layers.units, strict=True)}
    _route_attention_patches(patched, ControlPatches(by_block) if mode.use_control else None)
    # The units join the UNet when the host patches it in, and move with it; count them in the size the
    # host plans memory with (it is otherwise copied from the base model).
    patched.size = model.model_size() + sum(_own_parameter_bytes(unit) for unit in layers.units)
    return patched


ROUTE_KEY = "layer_sketch_attention_sharing"


def _route_attention_patches(patched: ModelPatcher, control: ControlPatches | None) -> None:
    """Every UNet call of the clone sees other packs' attention patches as the units need them.

    A clone of a clone with units replaces them, so an earlier clone's routing is dropped.
    """
    def route(executor, *args, **kwargs):
        if len(args) > 5:  # (x, t, c_concat, c_crossattn, control, transformer_options, ...)
            args = (*args[:5], route_patches(args[5], control), *args[6:])
        else:
            kwargs["transformer_options"] = route_patches(kwargs.get("transformer_options", {}), control)
        return executor(*args, **kwargs)

    patched.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, ROUTE_KEY)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, ROUTE_KEY, route)


def _own_parameter_bytes(unit: AttentionSharingUnit) -> int:
    """Bytes of a unit's own parameters, not the UNet projections it has attached as children."""
    borrowed = {id(p) for name in ("to_q", "to_k", "to_v", "to_out") for p in getattr(unit, name).parameters()}
    return sum(p.numel() * p.element_size() for p in unit.parameters() if id(p) not in borrowed)


def conditioning_context(conditioning) -> torch.Tensor | None:
    """The text embedding of a CONDITIONING (its first entry), for a per-layer prompt."""
    if conditioning is None:
        return None
    if not conditioning:
        raise ValueError("A per-layer CONDITIONING input is empty; connect a CLIP Text Encode output.")
    return conditioning[0][0]


def control_image(image: torch.Tensor) -> torch.Tensor:
    """A condition layer IMAGE [B,H,W,3|4] as the control encoder wants it: RGB [B,3,H,W] on 50% grey."""
    from .alpha import composite_on_grey

    pixels = image.movedim(-1, 1).float()
    if pixels.shape[1] == 4:
        return composite_on_grey(pixels[:, :3], pixels[:, 3:])
    return pixels[:, :3]
