"""SD1.5 LayerDiffusion attention sharing: several layers (frames) generated jointly, in plain torch.

Each of the 32 SD1.5 attention modules (attn1 and attn2 of the 16 transformer blocks) is replaced by
a unit that runs the original attention once per frame with that frame's rank-256 LoRA, optionally
adds a control signal (fg2bg/bg2fg), then lets every pixel attend across the frames ("temporal"
attention). Parameter names follow the published files (`hookers.layers.N.*`, `kwargs_encoder.*`)
so they load with `strict=True`.

The batch is laid out frame-fastest: [f0, f1, ..., f0, f1, ...] (for joint: fg, bg, blended).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

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

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, N, C] tensors -> [B, N, C], multi-head scaled dot-product attention."""
    b, n, c = q.shape

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(b, t.shape[1], heads, c // heads).transpose(1, 2)

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
    """What the host tells the units for the current step; set before each UNet call."""

    weight: float = 1.0
    active: bool = True  # False outside the chosen sigma range: the original attention runs
    cond_mark: torch.Tensor | None = None  # [batch] 1.0 for unconditional rows, 0.0 for conditional
    context_per_frame: Sequence[torch.Tensor | None] = ()  # per-frame prompt for conditional rows
    control: dict[int, torch.Tensor] = field(default_factory=dict)  # token count -> [b, 256, h, w]


class AttentionSharingUnit(nn.Module):
    """Replaces one attention module; returns what that module would have returned."""

    def __init__(self, original: nn.Module, frames: int, use_control: bool, state: SharingState,
                 attention: Attention = sdpa_attention) -> None:
        super().__init__()
        self._original = [original]  # not a submodule: its weights belong to the UNet
        self._state, self._attention = state, attention
        self.frames, self.heads = frames, original.heads
        dim = original.to_q.in_features
        context_dim, inner = original.to_k.in_features, original.to_k.out_features
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

    @property
    def original(self) -> nn.Module:
        return self._original[0]

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, value: torch.Tensor | None = None,
                **host_kwargs) -> torch.Tensor:
        """Same signature as the host's attention; keywords it adds (transformer_options, ...) pass through."""
        state = self._state
        if not state.active or state.weight == 0.0:
            return self.original(x, context=context, value=value, **host_kwargs)
        if x.shape[0] % self.frames:
            raise ValueError(f"attention sharing needs a batch that is a multiple of {self.frames} frames, "
                             f"got {x.shape[0]}")
        framed = x.unflatten(0, (-1, self.frames)).transpose(0, 1)  # [frames, b, tokens, c]
        if self.control_convs is not None:
            framed = framed + state.weight * self._control(framed)
        attended = torch.stack([self._frame_attention(framed[f], f, context, state) for f in range(self.frames)])
        hidden = (framed + attended).transpose(0, 1).flatten(0, 1)  # back to [(b f), tokens, c]
        hidden = hidden + state.weight * self._temporal(hidden)
        return hidden - x

    def _control(self, framed: torch.Tensor) -> torch.Tensor:
        tokens = framed.shape[2]
        signal = self._state.control.get(tokens)
        if signal is None:
            raise ValueError(f"no control signal for {tokens} tokens: the control image must have the size of "
                             "the generated image (8x the latent)")
        signal = signal.to(framed)
        return torch.stack([conv(signal).flatten(2).transpose(1, 2) for conv in self.control_convs])

    def _merged(self, linear: nn.Module, lora: LoRA, weight: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        merged = linear.weight + weight * lora.delta().to(linear.weight)
        return merged, linear.bias

    def _frame_attention(self, hidden: torch.Tensor, f: int, context: torch.Tensor | None,
                         state: SharingState) -> torch.Tensor:
        if context is None:
            frame_context = hidden
        else:
            frame_context = context.unflatten(0, (-1, self.frames))[:, f]
            overwrite = state.context_per_frame[f] if f < len(state.context_per_frame) else None
            if overwrite is not None and state.cond_mark is not None:
                mark = state.cond_mark.unflatten(0, (-1, self.frames))[:, f].to(hidden)[:, None, None]
                frame_context = overwrite.to(hidden) * (1.0 - mark) + frame_context * mark
        original, w = self.original, state.weight
        q = F.linear(hidden, *self._merged(original.to_q, self.to_q_lora[f], w))
        k = F.linear(frame_context, *self._merged(original.to_k, self.to_k_lora[f], w))
        v = F.linear(frame_context, *self._merged(original.to_v, self.to_v_lora[f], w))
        out = self._attention(q, k, v, self.heads)
        out = F.linear(out, *self._merged(original.to_out[0], self.to_out_lora[f], w))
        return original.to_out[1](out)

    def _temporal(self, hidden: torch.Tensor) -> torch.Tensor:
        x = self.temporal_i(self.temporal_n(hidden))
        tokens = x.shape[1]
        x = x.unflatten(0, (-1, self.frames)).transpose(1, 2).flatten(0, 1)  # [(b tokens), frames, c]
        x = self._attention(self.temporal_q(x), self.temporal_k(x), self.temporal_v(x), self.heads)
        x = self.temporal_o(x)
        return x.unflatten(0, (-1, tokens)).transpose(1, 2).flatten(0, 1)


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
                 attention: Attention = sdpa_attention) -> None:
        super().__init__()
        self.hookers = nn.Module()
        self.hookers.layers = nn.ModuleList(
            AttentionSharingUnit(m, frames, use_control, state, attention) for m in originals
        )
        self.kwargs_encoder = ControlEncoder() if use_control else None

    @property
    def units(self) -> list[AttentionSharingUnit]:
        return list(self.hookers.layers)
