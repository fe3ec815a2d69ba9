"""The FLUX LayerDiffuse LoRA: its diffusers/PEFT key layout, and a layer that adds it over part of sampling.

Pure torch. The file names each adapted layer by its diffusers path under `transformer.` and holds
`<path>.lora_A.weight` (down, [r, in]) and `<path>.lora_B.weight` (up, [out, r]), optionally `<path>.alpha`.
The host maps the diffusers paths onto its own fused weights (q, k and v are slices of one qkv weight).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

LORA_DOWN, LORA_UP, ALPHA = ".lora_A.weight", ".lora_B.weight", ".alpha"


@dataclass(frozen=True)
class LoRAPair:
    down: torch.Tensor  # [rank, in]
    up: torch.Tensor  # [out, rank]
    alpha: float | None = None

    @property
    def scale(self) -> float:
        """What the host multiplies up @ down by: alpha / rank, or 1 without an alpha."""
        return 1.0 if self.alpha is None else self.alpha / self.down.shape[0]


def parse_peft_lora(state: dict[str, torch.Tensor]) -> tuple[dict[str, LoRAPair], list[str]]:
    """(diffusers path -> LoRA pair, keys that are not part of a complete pair) of a PEFT LoRA state dict."""
    downs = {k[: -len(LORA_DOWN)]: v for k, v in state.items() if k.endswith(LORA_DOWN)}
    ups = {k[: -len(LORA_UP)]: v for k, v in state.items() if k.endswith(LORA_UP)}
    pairs = {}
    for path in sorted(set(downs) & set(ups)):
        alpha = state.get(path + ALPHA)
        pairs[path] = LoRAPair(downs[path], ups[path], None if alpha is None else float(alpha))
    used = {path + suffix for path in pairs for suffix in (LORA_DOWN, LORA_UP, ALPHA)}
    return pairs, sorted(k for k in state if k not in used)


# Where a LoRA lands in a host weight: the whole weight, or rows [offset, offset + size) of a fused one.
Slice = tuple[int, int] | None


@dataclass(frozen=True)
class LoRAPiece:
    rows: Slice
    pair: LoRAPair
    function: Callable[[torch.Tensor], torch.Tensor] | None = None  # a row reordering the host applies


class GatedLoRALinear(nn.Module):
    """A linear layer plus `strength` x its LoRA pieces while the gate is open.

    The low-rank terms are added to the layer's output (x @ down.T @ up.T), which costs two thin
    matmuls instead of rebuilding a fused weight at every step; a row slice adds to those output rows.
    The layer itself runs unchanged, so the host's casts and weight patches still apply to it.
    """

    def __init__(self, original: nn.Module, pieces: list[LoRAPiece], strength: float, gate) -> None:
        super().__init__()
        self._original = [original]
        for name, param in original.named_parameters(recurse=False):
            self.register_parameter(name, param)
        self.strength, self.gate = strength, gate
        self.rows = [piece.rows for piece in pieces]
        self.scales = [piece.pair.scale for piece in pieces]
        for index, piece in enumerate(pieces):
            up = piece.pair.up if piece.function is None else piece.function(piece.pair.up)
            self.register_buffer(f"down{index}", piece.pair.down, persistent=False)
            self.register_buffer(f"up{index}", up, persistent=False)

    @property
    def original(self) -> nn.Module:
        return self._original[0]

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = self.original(x, *args, **kwargs)
        if not self.gate.active or self.strength == 0.0:
            return out
        for index, (rows, scale) in enumerate(zip(self.rows, self.scales, strict=True)):
            down, up = getattr(self, f"down{index}").to(x), getattr(self, f"up{index}").to(x)
            change = nn.functional.linear(nn.functional.linear(x, down), up) * (self.strength * scale)
            if rows is None:
                out = out + change.to(out.dtype)
            else:
                out = torch.cat([out[..., :rows[0]], out[..., rows[0]:rows[0] + rows[1]] + change.to(out.dtype),
                                 out[..., rows[0] + rows[1]:]], dim=-1)
        return out
