"""How the SD1.5 attention-sharing units take part in the host's attention patches (plain torch and dicts).

ComfyUI lets other packs hook a transformer block's attention through `transformer_options`:
`patches["attn1_patch"]` / `["attn2_patch"]` change the block's input, context and value before the
attention module runs; `patches["attn1_output_patch"]` / `["attn2_output_patch"]` change what it
returns; `patches_replace["attn1"]` / `["attn2"]`, keyed by block, replace the attention itself
(IP-Adapter, PAG, SAG). For a replaced block the host calls the module's `to_q`/`to_k`/`to_v`/
`to_out` itself and never the module, which would bypass the units' LoRA'd projections and frame
attention. So, for every call of a model with units, `route_patches` gives the UNet a copy of the
options in which:

- the replace patches sit under `REPLACED`, where the units find them and call them with their own
  q, k and v, then apply their own output projection;
- the units' control signal (fg2bg/bg2fg) is added by an input patch that runs before any other
  pack's, and added back to the output after every other pack's output patch. Other packs' input
  patches may rearrange tokens (HyperTile tiles them), so the signal is added where the tokens are
  still in the UNet's own order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

REPLACED = "layer_sketch_replaced_attention"
ATTENTION_KINDS = ("attn1", "attn2")
# What the host's transformer block keeps out of the options it hands to attention patches.
_NOT_FOR_PATCHES = ("patches", "patches_replace", REPLACED)

InputPatch = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, dict], tuple[torch.Tensor, ...]]
OutputPatch = Callable[[torch.Tensor, dict], torch.Tensor]


def block_key(path: str) -> tuple[str, int, int]:
    """The host's key for the transformer block holding the attention module at `path`.

    `diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1` -> ("input", 1, 0);
    the middle block is ("middle", 0, index).
    """
    parts = path.removeprefix("diffusion_model.").split(".")
    name = parts[0].removesuffix("_blocks").removesuffix("_block")
    number = 0 if name == "middle" else int(parts[1])
    return name, number, int(parts[parts.index("transformer_blocks") + 1])


def current_block(options: dict) -> tuple | None:
    block = options.get("block")
    return None if block is None else (block[0], block[1], options.get("block_index", 0))


def replacement(options: dict, kind: str) -> Callable | None:
    """The replace patch for this call's block, looked up as the host does (with, then without, the index)."""
    patches = options.get(REPLACED, {}).get(kind)
    if not patches:
        return None
    key = current_block(options)
    if key in patches:
        return patches[key]
    return patches.get(options.get("block"))


def patch_options(options: dict, heads: int, dim_head: int, precision) -> dict:
    """The `extra_options` the host's transformer block hands its attention patches."""
    extra = {k: v for k, v in options.items() if k not in _NOT_FOR_PATCHES}
    extra.update(n_heads=heads, dim_head=dim_head, attn_precision=precision)
    return extra


class ControlPatches:
    """The units' control signal (fg2bg/bg2fg) as one input and one output patch per attention kind.

    `units` maps (kind, block key) to the unit on that block. Each unit's signal is added to its
    input (and, for self-attention, to the keys and values taken from it) and added back to its
    output, as the published method adds it to the hidden states around the attention.
    """

    def __init__(self, units: dict[tuple[str, tuple], object]) -> None:
        self.units = units
        self.inputs = {kind: self._input_patch(kind) for kind in ATTENTION_KINDS}
        self.outputs = {kind: self._output_patch(kind) for kind in ATTENTION_KINDS}

    def _term(self, kind: str, hidden: torch.Tensor, extra: dict):
        unit = self.units.get((kind, current_block(extra)))
        if unit is None or not unit.active(extra):
            return None
        return unit.frames, unit.control_term(hidden.shape[1], hidden)

    def _input_patch(self, kind: str) -> InputPatch:
        def add_control(n, context, value, extra):
            found = self._term(kind, n, extra)
            if found is None:
                return n, context, value
            added = _added(n, *found)
            if kind == "attn1":  # self-attention: the host hands the same hidden states as context and value
                return added, added if context is n else context, added if value is n else value
            return added, context, value
        return add_control

    def _output_patch(self, kind: str) -> OutputPatch:
        def add_control_back(out, extra):
            found = self._term(kind, out, extra)
            if found is None:
                return out
            return _added(out, *found)
        return add_control_back


def _added(hidden: torch.Tensor, frames: int, term: torch.Tensor) -> torch.Tensor:
    """hidden [(b frames), tokens, c] + term [frames, images, tokens, c]: one condition image, or one per sample."""
    framed = split_frames(hidden, frames)
    rows, images = framed.shape[1], term.shape[1]
    if rows % images:
        raise ValueError(f"{images} condition images were given for {rows} samples per layer (counting the "
                         "negative prompt's): give one condition image, or one per sample.")
    return join_frames(framed + term.repeat(1, rows // images, 1, 1))


def route_patches(options: dict, control: ControlPatches | None = None) -> dict:
    """A copy of a call's transformer options as the units need them; the caller's dicts are not changed."""
    routed = dict(options)
    replace = dict(options.get("patches_replace", {}))
    moved = {kind: replace.pop(kind) for kind in ATTENTION_KINDS if replace.get(kind)}
    if moved:
        routed["patches_replace"] = replace
        routed[REPLACED] = moved
    if control is not None:
        patches = dict(options.get("patches", {}))
        for kind in ATTENTION_KINDS:  # first in, last out: around every other pack's patches
            patches[f"{kind}_patch"] = [control.inputs[kind], *patches.get(f"{kind}_patch", [])]
            patches[f"{kind}_output_patch"] = [*patches.get(f"{kind}_output_patch", []), control.outputs[kind]]
        routed["patches"] = patches
    return routed


def split_frames(t: torch.Tensor, frames: int, tiles: int = 1) -> torch.Tensor:
    """[(b frames tiles), ...] -> [frames, (b tiles), ...]: the rows of each frame, in order.

    `tiles` > 1 when a patch has split each sample's tokens into several rows (HyperTile).
    """
    return t.unflatten(0, (-1, frames, tiles)).transpose(0, 1).flatten(1, 2)


def join_frames(t: torch.Tensor, tiles: int = 1) -> torch.Tensor:
    """The inverse of `split_frames`."""
    return t.unflatten(1, (-1, tiles)).transpose(0, 1).flatten(0, 2)
