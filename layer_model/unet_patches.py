"""Weight deltas for the UNet from the published SDXL LayerDiffusion files (plain torch).

Keys are `diffusion_model.<LDM path>.weight` plus a suffix: `::lora::0` (up, [out, r]) and
`::lora::1` (down, [r, in]) for the attention LoRA, `::diff::0` for a dense offset. The `conv_in`
offset of the layer models is wider than the model's own weight: it adds input channels for the
concatenated condition latent(s).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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

    def dense(self) -> torch.Tensor:
        """The full-size offset this delta adds (for a LoRA: the product, reshaped like the weight)."""
        if self.diff is not None:
            return self.diff
        return (self.up.flatten(1).float() @ self.down.flatten(1).float())


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


def concat_channels(deltas: dict[str, WeightDelta], model_in_channels: int) -> int:
    """How many condition channels the patch expects concatenated to the latent (0 for none)."""
    conv_in = deltas.get(CONV_IN)
    if conv_in is None or conv_in.diff is None:
        return 0
    return conv_in.diff.shape[1] - model_in_channels
