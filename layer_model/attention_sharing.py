"""SD1.5 LayerDiffusion attention sharing: several layers (frames) generated jointly, in plain torch.

Each of the 32 SD1.5 attention modules (attn1 and attn2 of the 16 transformer blocks) is replaced by
a unit that runs the original attention with each frame's rank-256 LoRA on that frame's rows, then
lets every pixel attend across the frames ("temporal" attention). The fg2bg/bg2fg control signal is
added around the unit, and other packs' attention patches are honoured: see `attention_patches`.
Parameter names follow the published files (`hookers.layers.N.*`, `kwargs_encoder.*`)
so they load with `strict=True`.

The batch is laid out frame-fastest: [f0, f1, ..., f0, f1, ...] (for joint: fg, bg, blended).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .attention_patches import join_frames, patch_options, replacement, split_frames

RANK = 256
CONTROL_CHANNELS = 256

# UNet attention modules in the order of the published units (attn1 then attn2 of each block);
# the middle block comes last.
SD15_BLOCKS = (
    [("input_blocks", i) for i in (1, 2, 4, 5, 7, 8)]
    + [("output_blocks", i) for i in range(3, 12)]
    + [("middle_block", 1)]
)
SD15_ATTENTION_PATHS = [
    f"diffusion_model.{blocks}.{index}.1.transformer_blocks.0.{attn}"
    if blocks != "middle_block" else f"diffusion_model.middle_block.1.transformer_blocks.0.{attn}"
    for blocks, index in SD15_BLOCKS for attn in ("attn1", "attn2")
]

# (q, k, v, heads, **host keywords: attn_precision, transformer_options) -> attention output
Attention = Callable[..., torch.Tensor]
# (the UNet's own linear layer, input) -> (weight, bias) ready for that input; hosts that offload
# weights or patch them on the fly supply their own.
WeightsOf = Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


def plain_weights(linear: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    return linear.weight.to(x), None if linear.bias is None else linear.bias.to(x)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, **host_kwargs) -> torch.Tensor:
    """[B, N, C] tensors -> [B, N, C], multi-head scaled dot-product attention (host keywords are ignored)."""
    b, n, c = q.shape

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, -1, heads, c // heads).transpose(1, 2)  # as the host: rows follow q

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.transpose(1, 2).reshape(b, n, c)


class LoRA(nn.Module):
    """A low-rank delta `up @ down` for one projection of one frame (no bias, no scale)."""

    def __init__(self, in_features: int, out_features: int, rank: int = RANK) -> None:
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)

    def delta(self) -> torch.Tensor:
        return self.up.weight @ self.down.weight


@dataclass
class SharingState:
    """Settings the units share. Per-step facts (sigma, which rows are unconditional) come with each call
    in the host's `transformer_options` ("sigmas", "cond_or_uncond")."""

    weight: float = 1.0
    sigma_start: float = float("inf")  # active while sigma_end <= sigma <= sigma_start
    sigma_end: float = 0.0
    context_per_frame: Sequence[torch.Tensor | None] = ()  # per-frame prompt for conditional rows
    control: dict[int, torch.Tensor] = field(default_factory=dict)  # token count -> [b, 256, h, w]
    _control_cast: dict[tuple, torch.Tensor] = field(default_factory=dict, repr=False)

    def control_like(self, tokens: int, like: torch.Tensor) -> torch.Tensor | None:
        """The control maps for a token count in `like`'s device and dtype, converted once, not per call."""
        key = (tokens, like.device, like.dtype)
        if key not in self._control_cast:
            signal = self.control.get(tokens)
            if signal is None:
                return None
            self._control_cast[key] = signal.to(like)
        return self._control_cast[key]

    def active(self, options: dict) -> bool:
        if self.weight == 0.0:
            return False
        sigmas = options.get("sigmas")
        if sigmas is None:
            return True
        sigma = float(sigmas.max())
        return self.sigma_end <= sigma <= self.sigma_start

    @staticmethod
    def uncond_mark(options: dict, batch: int) -> torch.Tensor | None:
        """[batch] 1.0 for unconditional rows, 0.0 for conditional ones (the host batches cond/uncond chunks)."""
        chunks = options.get("cond_or_uncond")
        if not chunks or batch % len(chunks):
            return None
        return torch.tensor(chunks, dtype=torch.float32).repeat_interleave(batch // len(chunks))


class AttentionSharingUnit(nn.Module):
    """Replaces one attention module; returns what that module would have returned.

    The host's attention patches on the unit's block are honoured (see `attention_patches`): a replace
    patch gets the unit's q, k and v and its result goes through the unit's output projection.
    """

    def __init__(self, original: nn.Module, frames: int, use_control: bool, state: SharingState,
                 attention: Attention = sdpa_attention, weights_of: WeightsOf = plain_weights) -> None:
        super().__init__()
        self._original = [original]  # not a submodule: its weights belong to the UNet
        self._state, self._attention, self._weights_of = state, attention, weights_of
        self.frames, self.heads = frames, original.heads
        dim = original.to_q.in_features
        context_dim, inner = original.to_k.in_features, original.to_k.out_features
        # attn2 of a transformer block attends to the prompt (its keys are narrower or wider); attn1 to the image
        self.cross_attention = context_dim != dim
        self.kind = "attn2" if self.cross_attention else "attn1"
        self.to_q_lora = nn.ModuleList(LoRA(dim, inner) for _ in range(frames))
        self.to_k_lora = nn.ModuleList(LoRA(context_dim, inner) for _ in range(frames))
        self.to_v_lora = nn.ModuleList(LoRA(context_dim, inner) for _ in range(frames))
        self.to_out_lora = nn.ModuleList(LoRA(inner, original.to_out[0].out_features) for _ in range(frames))
        self.temporal_i = nn.Linear(inner, inner)
        self.temporal_n = nn.LayerNorm(inner, eps=1e-6)
        self.temporal_q = nn.Linear(inner, inner)
        self.temporal_k = nn.Linear(inner, inner)
        self.temporal_v = nn.Linear(inner, inner)
        self.temporal_o = nn.Linear(inner, inner)
        self.control_convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(CONTROL_CHANNELS, CONTROL_CHANNELS, 3, padding=1), nn.SiLU(),
                          nn.Conv2d(CONTROL_CHANNELS, inner, 1))
            for _ in range(frames)
        ) if use_control else None
        self._control_cache: dict[tuple, torch.Tensor] = {}

    @property
    def original(self) -> nn.Module:
        return self._original[0]

    def attach(self) -> None:
        """Register the original projections as this unit's own children, under their own names.

        Once the unit replaces the attention module in the UNet, the projections keep their state-dict
        paths (`...attn1.to_q.weight`), so host weight patches and device moves still reach them.
        """
        for name in ("to_q", "to_k", "to_v", "to_out"):
            setattr(self, name, getattr(self.original, name))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, value: torch.Tensor | None = None,
                **host_kwargs) -> torch.Tensor:
        """Same signature as the host's attention; keywords it adds (transformer_options, ...) pass through."""
        options = host_kwargs.get("transformer_options") or {}
        replace = replacement(options, self.kind)
        if not self.active(options):
            if replace is None:
                return self.original(x, context=context, value=value, **host_kwargs)
            return self._replaced_original(x, context, value, replace, options)
        tiles = self._tiles(x, options)
        framed = split_frames(x, self.frames, tiles)  # [frames, rows, tokens, c]
        keys, values = self._sources(x, context, value, options)
        q = join_frames(self._project(framed, self.original.to_q, self.to_q_lora), tiles)
        k = self._project_rows(keys, self.original.to_k, self.to_k_lora, options)
        v = self._project_rows(values, self.original.to_v, self.to_v_lora, options)
        if replace is None:
            attended = self._attention(q, k, v, self.heads, attn_precision=self._precision, transformer_options=options)
        else:
            attended = replace(q, k, v, self._patch_options(options))
        out = self._project(split_frames(attended, self.frames, tiles), self.original.to_out[0], self.to_out_lora)
        hidden = framed + self.original.to_out[1](out)
        hidden = hidden + self._state.weight * self._temporal(hidden)
        return join_frames(hidden, tiles) - x

    def active(self, options: dict) -> bool:
        return self._state.active(options)

    @property
    def _precision(self):
        return getattr(self.original, "attn_precision", None)

    def _patch_options(self, options: dict) -> dict:
        return patch_options(options, self.heads, self.original.to_q.out_features // self.heads, self._precision)

    def _replaced_original(self, x: torch.Tensor, context: torch.Tensor | None, value: torch.Tensor | None,
                           replace: Callable, options: dict) -> torch.Tensor:
        """What the host's block computes for a replaced attention: the UNet's projections around the patch."""
        context = x if context is None else context
        value = context if value is None else value
        original = self.original
        q, k, v = original.to_q(x), original.to_k(context), original.to_v(value)
        return original.to_out(replace(q, k, v, self._patch_options(options)))

    def _tiles(self, t: torch.Tensor, options: dict) -> int:
        """How many rows each sample's tokens are split into (1 unless a patch tiled them)."""
        shape = options.get("original_shape")
        batch = shape[0] if shape else t.shape[0]
        chunks = len(options.get("cond_or_uncond") or [0])  # the host batches cond and uncond rows in chunks
        if batch % (chunks * self.frames):
            raise ValueError(f"The batch size is {batch // chunks}, which is not a multiple of the {self.frames} "
                             f"layers this LayerDiffusion mode generates together. Set the latent's batch_size to "
                             f"{self.frames}, {2 * self.frames}, ...")
        if t.shape[0] % batch:
            raise ValueError(f"Another node's attention patch turned the batch of {batch} into {t.shape[0]} rows, "
                             f"which cannot be matched to the {self.frames} layers LayerDiffusion generates together "
                             "(it only follows patches that split each sample into equal parts, as HyperTile "
                             "does). Remove that node, or apply it to a model without a multi-layer mode.")
        return t.shape[0] // batch

    def _sources(self, x: torch.Tensor, context: torch.Tensor | None, value: torch.Tensor | None,
                 options: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs of the key and value projections, in the batch's own row order."""
        if not self.cross_attention:  # self-attention, or what an attention patch put in its place
            keys = x if context is None else context
            return keys, keys if value is None else value
        keys = self._with_frame_prompts(context, options)
        return keys, keys if value is None or value is context else value

    def _with_frame_prompts(self, context: torch.Tensor, options: dict) -> torch.Tensor:
        """The prompt with each layer's own prompt in its conditional rows, where one was given."""
        per_frame = self._state.context_per_frame
        mark = self._state.uncond_mark(options, context.shape[0])
        if mark is None or all(p is None for p in per_frame):
            return context
        tiles = self._tiles(context, options)
        framed = split_frames(context, self.frames, tiles)
        keep = split_frames(mark, self.frames, tiles).to(context)[..., None, None]
        prompted = [framed[f] if f >= len(per_frame) or per_frame[f] is None else
                    _match_tokens(per_frame[f].to(context), framed.shape[2]) * (1.0 - keep[f]) + framed[f] * keep[f]
                    for f in range(self.frames)]
        return join_frames(torch.stack(prompted), tiles)

    def _project_rows(self, rows: torch.Tensor, linear: nn.Module, loras: nn.ModuleList, options: dict) -> torch.Tensor:
        """Each row through its own frame's projection, back in the batch's row order."""
        tiles = self._tiles(rows, options)
        return join_frames(self._project(split_frames(rows, self.frames, tiles), linear, loras), tiles)

    def _project(self, framed: torch.Tensor, linear: nn.Module, loras: nn.ModuleList) -> torch.Tensor:
        return torch.stack([self._projection(framed[f], linear, loras[f]) for f in range(self.frames)])

    def _projection(self, x: torch.Tensor, linear: nn.Module, lora: LoRA) -> torch.Tensor:
        """`linear` with this frame's LoRA added, computed whichever way costs fewer multiplications."""
        weight, bias = self._weights_of(linear, x)
        scale = self._state.weight
        tokens = x.shape[0] * x.shape[1]
        if tokens * (linear.in_features + linear.out_features) < linear.in_features * linear.out_features:
            low_rank = F.linear(F.linear(x, lora.down.weight.to(x)), lora.up.weight.to(x))
            return F.linear(x, weight, bias) + scale * low_rank
        return F.linear(x, weight + scale * lora.delta().to(x), bias)

    def control_term(self, tokens: int, like: torch.Tensor) -> torch.Tensor | None:
        """weight * this unit's control signal at `tokens` tokens, [frames, b, tokens, c] (None without control).

        It does not depend on the hidden states, so it is computed once per size, device and dtype.
        """
        if self.control_convs is None:
            return None
        key = (tokens, like.device, like.dtype, self._state.weight)
        if key not in self._control_cache:
            signal = self._state.control_like(tokens, like)
            if signal is None:
                raise ValueError("The condition image does not match the size being generated: it must be "
                                 "exactly the generated image's size (8x the latent's). Resize it (Upscale Image) "
                                 "or change the latent size.")
            with torch.no_grad():
                term = torch.stack([_apply(conv, signal).flatten(2).transpose(1, 2) for conv in self.control_convs])
            self._control_cache[key] = self._state.weight * term
        return self._control_cache[key]

    def _temporal(self, framed: torch.Tensor) -> torch.Tensor:
        """Every token attends across the frames: [frames, rows, tokens, c] -> the same."""
        x = _apply(self.temporal_i, _apply(self.temporal_n, framed))
        across = x.permute(1, 2, 0, 3).flatten(0, 1)  # [(rows tokens), frames, c]
        if self.frames == 1:  # attending over a single frame returns its value exactly: skip q and k
            across = _apply(self.temporal_o, _apply(self.temporal_v, across))
        else:
            q, k, v = (_apply(layer, across) for layer in (self.temporal_q, self.temporal_k, self.temporal_v))
            across = _apply(self.temporal_o, self._attention(q, k, v, self.heads))
        return across.unflatten(0, framed.shape[1:3]).permute(2, 0, 1, 3)


def _match_tokens(context: torch.Tensor, tokens: int) -> torch.Tensor:
    """A per-layer prompt stretched to the batch's token count (the host pads prompts in 77-token chunks)."""
    if context.shape[1] == tokens:
        return context
    if tokens % context.shape[1] == 0:
        return context.repeat(1, tokens // context.shape[1], 1)
    raise ValueError(f"a per-layer prompt has {context.shape[1]} tokens, which does not fit the sampler's "
                     f"{tokens}: keep per-layer prompts within 75 tokens, or as long as the main prompt.")


def _apply(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run a layer in the input's dtype and device, whatever the unit's parameters are stored in."""
    if isinstance(module, nn.Linear):
        return F.linear(x, module.weight.to(x), module.bias.to(x))
    if isinstance(module, nn.LayerNorm):
        return F.layer_norm(x, module.normalized_shape, module.weight.to(x), module.bias.to(x), module.eps)
    if isinstance(module, nn.Conv2d):
        return F.conv2d(x, module.weight.to(x), module.bias.to(x), module.stride, module.padding)
    if isinstance(module, nn.Sequential):
        for layer in module:
            x = _apply(layer, x)
        return x
    return module(x)


class ControlEncoder(nn.Module):
    """Control image [B,3,H,W] in [0,1] -> 256-channel maps at 1/8, 1/16, 1/32, 1/64, keyed by token count."""

    def __init__(self) -> None:
        super().__init__()
        first = [(3, 32, 1), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1),
                 (128, 256, 2), (256, 256, 1)]
        self.blocks_0 = _conv_stack(first)
        self.blocks_1 = _conv_stack([(256, 256, 2), (256, 256, 1)])
        self.blocks_2 = _conv_stack([(256, 256, 2), (256, 256, 1)])
        self.blocks_3 = _conv_stack([(256, 256, 2), (256, 256, 1)])

    def forward(self, image: torch.Tensor) -> dict[int, torch.Tensor]:
        x = image * 2.0 - 1.0
        signals = {}
        for block in (self.blocks_0, self.blocks_1, self.blocks_2, self.blocks_3):
            x = block(x)
            signals[x.shape[2] * x.shape[3]] = x
        return signals


def _conv_stack(spec: list[tuple[int, int, int]]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for cin, cout, stride in spec:
        layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.SiLU()]
    return nn.Sequential(*layers)


class AttentionSharingLayers(nn.Module):
    """The units in published order, under the published names (`hookers.layers.N`, `kwargs_encoder`)."""

    def __init__(self, originals: Sequence[nn.Module], frames: int, use_control: bool, state: SharingState,
                 attention: Attention = sdpa_attention, weights_of: WeightsOf = plain_weights) -> None:
        super().__init__()
        self.hookers = nn.Module()
        self.hookers.layers = nn.ModuleList(
            AttentionSharingUnit(m, frames, use_control, state, attention, weights_of) for m in originals
        )
        self.kwargs_encoder = ControlEncoder() if use_control else None

    @property
    def units(self) -> list[AttentionSharingUnit]:
        return list(self.hookers.layers)


def attention_paths(unet: nn.Module, prefix: str = "diffusion_model") -> list[str]:
    """Paths of every transformer block's attn1/attn2, in the order of the published units.

    Input blocks first, then output blocks, the middle block last; for the SD1.5 UNet this is
    `SD15_ATTENTION_PATHS`. Smaller UNets of the same design get their own list.
    """
    blocks = [(name, module) for name, module in unet.named_modules()
              if hasattr(module, "attn1") and hasattr(module, "attn2")]
    order = {"input_blocks": 0, "output_blocks": 1, "middle_block": 2}

    def rank(name: str) -> tuple[int, int]:
        parts = name.split(".")
        return order.get(parts[0], 3), int(parts[1]) if parts[0] != "middle_block" else 0

    ordered = sorted(blocks, key=lambda item: rank(item[0]))
    return [f"{prefix}.{name}.{attn}" for name, _ in ordered for attn in ("attn1", "attn2")]
