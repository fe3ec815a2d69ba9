"""Which UNet activations the edge predictor reads, and how they become one feature vector per latent pixel.

Layers are named in the LDM/ComfyUI layout (`input_blocks`, `middle_block`, `output_blocks`): a layer is a
block's output (the output of its last child), or, for the middle block, the output of one of its
children. Activations are captured with forward hooks on those child modules (hooks on the block
containers never fire: the host's UNet runs a block by calling its children), resized bilinearly to
the latent grid and concatenated in the layer set's order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BLOCKS = ("input", "middle", "output")


@dataclass(frozen=True)
class Layer:
    block: str  # "input", "middle" or "output"
    index: int  # the block's index; for "middle", the child's index

    @classmethod
    def parse(cls, name: str) -> Layer:
        block, _, index = name.partition(".")
        if block not in BLOCKS or not index.isdigit():
            raise ValueError(f"'{name}' is not a UNet layer name; use input.N, middle.N or output.N")
        return cls(block, int(index))

    def __str__(self) -> str:
        return f"{self.block}.{self.index}"

    def module(self, unet: nn.Module) -> nn.Module:
        """The module whose output is this layer's activation."""
        if self.block == "middle":
            return unet.middle_block[self.index]
        blocks = unet.input_blocks if self.block == "input" else unet.output_blocks
        return blocks[self.index][-1]


def layers(*names: str) -> tuple[Layer, ...]:
    return tuple(Layer.parse(n) for n in names)


# Layer sets are data: a predictor file names its set and lists its layers.
LAYER_SETS: dict[str, tuple[Layer, ...]] = {
    # The paper's choice (SD1.5: 9280 channels); SDXL has the same block indices.
    "paper": layers("input.2", "input.4", "input.8", "middle.0", "middle.1", "middle.2",
                    "output.2", "output.4", "output.8"),
    # Community `SDv1.5-trained_LGP.pt`: diffusers down_blocks[0..3] then up_blocks[0..3] (7040 channels).
    "down_up": layers("input.3", "input.6", "input.9", "input.11", "output.2", "output.5", "output.8",
                      "output.11"),
    # Community `edge_predictor.pt`: diffusers down_blocks[0..2], the middle block's attention then its
    # two resnets, up_blocks[0..2] (9280 channels).
    "down_mid_up": layers("input.3", "input.6", "input.9", "middle.1", "middle.0", "middle.2",
                          "output.2", "output.5", "output.8"),
}


def layer_set(name: str) -> tuple[Layer, ...]:
    if name not in LAYER_SETS:
        raise ValueError(f"Unknown layer set '{name}'; known: {', '.join(LAYER_SETS)}")
    return LAYER_SETS[name]


def _output_channels(module: nn.Module) -> int:
    for attribute in ("out_channels", "in_channels"):  # a spatial transformer keeps its input width
        value = getattr(module, attribute, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot tell how many channels {type(module).__name__} outputs")


def feature_channels(unet: nn.Module, chosen: Sequence[Layer]) -> int:
    """How many channels the concatenated activations of `chosen` have on this UNet."""
    try:
        return sum(_output_channels(layer.module(unet)) for layer in chosen)
    except (IndexError, AttributeError) as err:
        names = ", ".join(str(layer) for layer in chosen)
        raise ValueError(f"This UNet does not have all of the layers {names}: {err}") from err


class FeatureCapture:
    """Collects the chosen layers' activations during one UNet call, already resized to the latent grid."""

    def __init__(self, chosen: Sequence[Layer], size: tuple[int, int], rows: torch.Tensor | None = None) -> None:
        self.chosen, self.size, self.rows = tuple(chosen), size, rows
        self.activations: dict[Layer, torch.Tensor] = {}

    def _hook(self, layer: Layer):
        def store(_module, _inputs, output):
            if isinstance(output, tuple):
                output = output[0]
            if self.rows is not None:
                output = output[self.rows.to(output.device)]
            # Resize at once: the host may add ControlNet residuals to this tensor in place afterwards.
            self.activations[layer] = F.interpolate(output.float(), size=self.size, mode="bilinear",
                                                    align_corners=False)
        return store

    def features(self) -> torch.Tensor:
        """[rows, channels, h, w] in the layer set's order."""
        missing = [str(layer) for layer in self.chosen if layer not in self.activations]
        if missing:
            raise RuntimeError(f"the UNet call did not run the layers {', '.join(missing)}")
        return torch.cat([self.activations[layer] for layer in self.chosen], dim=1)


@contextmanager
def capture(unet: nn.Module, chosen: Sequence[Layer], size: tuple[int, int],
            rows: torch.Tensor | None = None) -> Iterator[FeatureCapture]:
    """Hooks on the chosen layers for the duration of the `with` block only."""
    collector = FeatureCapture(chosen, size, rows)
    handles = [layer.module(unet).register_forward_hook(collector._hook(layer)) for layer in collector.chosen]
    try:
        yield collector
    finally:
        for handle in handles:
            handle.remove()
