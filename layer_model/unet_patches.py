"""Weight deltas for the UNet from the published SDXL LayerDiffusion files (plain torch).

Keys are `diffusion_model.<LDM path>.weight` plus a suffix: `::lora::0` (up, [out, r]) and
`::lora::1` (down, [r, in]) for the attention LoRA, `::diff::0` for a dense offset. The `conv_in`
offset of the layer models is wider than the model's own weight: it adds input channels for the
concatenated condition latent(s).

The diffusers set's file holds plain offsets under diffusers `UNet2DConditionModel` names (no suffix); the
host's own map of those names onto its UNet is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

LORA_UP, LORA_DOWN, DIFF = "::lora::0", "::lora::1", "::diff::0"
CONV_IN = "diffusion_model.input_blocks.0.0.weight"


@dataclass(frozen=True)
class WeightDelta:
    """What to add to one weight: `up @ down` (LoRA, scale 1) or a dense `diff`."""

    up: torch.Tensor | None = None
    down: torch.Tensor | None = None
    diff: torch.Tensor | None = None

    @property
    def is_lora(self) -> bool:
        return self.diff is None

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the offset this delta adds; for a LoRA, of the (flattened) product, without computing it."""
        if self.diff is not None:
            return tuple(self.diff.shape)
        return (self.up.shape[0], self.down.flatten(1).shape[1])


def parse_unet_patches(state: dict[str, torch.Tensor], source: str = "file") -> dict[str, WeightDelta]:
    """Model key -> delta, from a published SDXL layer file; anything else is refused with the reason."""
    ups, downs, deltas = {}, {}, {}
    for key, tensor in state.items():
        for suffix, table in ((LORA_UP, ups), (LORA_DOWN, downs), (DIFF, deltas)):
            if key.endswith(suffix):
                table[key[: -len(suffix)]] = tensor
                break
        else:
            raise ValueError(f"{source} holds '{key}', which is not a LayerDiffusion UNet patch "
                             f"(keys end in {LORA_UP}, {LORA_DOWN} or {DIFF}).")
    if set(ups) != set(downs):
        unpaired = sorted(set(ups) ^ set(downs))
        raise ValueError(f"{source} has LoRA halves without their pair, e.g. {unpaired[:2]}.")
    result = {key: WeightDelta(diff=tensor) for key, tensor in deltas.items()}
    for key in ups:
        if ups[key].shape[1] != downs[key].shape[0]:
            raise ValueError(f"{source}: LoRA ranks of {key} disagree ({ups[key].shape} @ {downs[key].shape}).")
        result[key] = WeightDelta(up=ups[key], down=downs[key])
    return result


def diffusers_offsets(state: dict[str, torch.Tensor],
                      key_map: dict[str, str]) -> tuple[dict[str, WeightDelta], list[str]]:
    """(model key -> dense offset, the file's keys `key_map` has no model key for) of a diffusers-keyed file.

    `key_map` maps diffusers UNet names (`down_blocks.1.attentions.0...to_q.weight`) to model keys.
    """
    deltas, unmapped = {}, []
    for key, tensor in state.items():
        if key in key_map:
            deltas[key_map[key]] = WeightDelta(diff=tensor)
        else:
            unmapped.append(key)
    return deltas, sorted(unmapped)


def concat_channels(deltas: dict[str, WeightDelta], model_in_channels: int) -> int:
    """How many condition channels the patch expects concatenated to the latent (0 for none)."""
    conv_in = deltas.get(CONV_IN)
    if conv_in is None or conv_in.diff is None:
        return 0
    return conv_in.diff.shape[1] - model_in_channels


class SigmaGate:
    """Whether a step's sigma lies in the chosen range; the host updates it before each UNet call."""

    def __init__(self, sigma_start: float, sigma_end: float) -> None:
        self.sigma_start, self.sigma_end = sigma_start, sigma_end
        self.active = True

    def update(self, sigma: float) -> None:
        self.active = self.sigma_end <= sigma <= self.sigma_start


class GatedDelta(nn.Module):
    """A layer whose weights get `strength * delta` only while the gate is open.

    Used when a patch must act on part of the sampling only: merged weights cannot be switched off
    between steps. The layer's own parameters stay registered under their own names, so the host's
    weight patches and device moves still reach them.
    """

    def __init__(self, original: nn.Module, deltas: dict[str, WeightDelta], strength: float,
                 gate: SigmaGate) -> None:
        super().__init__()
        self._original = [original]
        for name, param in original.named_parameters(recurse=False):
            self.register_parameter(name, param)
        self.strength, self.gate = strength, gate
        self.names = sorted(deltas)
        for index, name in enumerate(self.names):
            delta = deltas[name]
            if delta.is_lora:
                self.register_buffer(f"delta{index}_up", delta.up, persistent=False)
                self.register_buffer(f"delta{index}_down", delta.down, persistent=False)
            else:
                self.register_buffer(f"delta{index}_diff", delta.diff, persistent=False)

    @property
    def original(self) -> nn.Module:
        return self._original[0]

    def _patched(self, name: str, index: int, active: bool) -> torch.Tensor:
        weight = getattr(self.original, name)
        diff = getattr(self, f"delta{index}_diff", None)
        if diff is not None and diff.shape != weight.shape:  # a widened conv_in: condition channels added
            weight = nn.functional.pad(weight, [0, 0, 0, 0, 0, diff.shape[1] - weight.shape[1]])
        if not active:
            return weight
        if diff is None:
            up, down = getattr(self, f"delta{index}_up"), getattr(self, f"delta{index}_down")
            change = (up.float() @ down.float()).reshape(weight.shape)
        else:
            change = diff
        return weight + self.strength * change.to(weight)

    def _widened(self) -> bool:
        return any(getattr(self, f"delta{i}_diff", None) is not None
                   and getattr(self, f"delta{i}_diff").shape != getattr(self.original, name).shape
                   for i, name in enumerate(self.names))

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if not self.gate.active and not self._widened():
            return self.original(x, *args, **kwargs)
        if self.names == ["weight"] and hasattr(self, "delta0_up") and self.original.weight.dim() == 2:
            # A LoRA on a linear layer: add it on the activations, far cheaper than rebuilding the weight.
            down, up = self.delta0_down.to(x), self.delta0_up.to(x)
            return self.original(x, *args, **kwargs) + self.strength * nn.functional.linear(
                nn.functional.linear(x, down), up)
        swapped = {name: self._patched(name, i, self.gate.active) for i, name in enumerate(self.names)}
        return torch.func.functional_call(self.original, swapped, (x, *args), kwargs)
