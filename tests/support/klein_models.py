"""FLUX.2 Klein fixtures in the published layouts with random values (pure torch): reduced FLUX.2 Klein Base 4B and
9B transformers the host detects as FLUX.2, and LoRAs in flux2-klein-alpha's key format.

A reduced transformer keeps its model's real widths with one double-stream and one single-stream block, in BFL's
key names (norm scales as `.scale`); the host reads the block counts from the file. Both sizes share the rest:
heads of 128, SiLU-gated MLPs of 3 x hidden, global modulation, no guidance input, no biases. The text input is
three of the Qwen3 text encoder's hidden states side by side (the host's Klein text encoders stack layers 9, 18
and 27), so it is 3 x the encoder's width.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from . import fixtures

HEAD_DIM, LATENT_CHANNELS = 128, 128
PREFIX = "diffusion_model."  # flux2-klein-alpha's LoRA key prefix, before the BFL module name


@dataclass(frozen=True)
class KleinSize:
    name: str  # as in the published file names: "4b", "9b"
    hidden: int
    text_encoder_width: int  # Qwen3-4B: 2560, Qwen3-8B: 4096
    published_blocks: tuple[int, int]  # the published model's double and single blocks

    @property
    def mlp(self) -> int:
        return 3 * self.hidden

    @property
    def heads(self) -> int:
        return self.hidden // HEAD_DIM

    @property
    def context(self) -> int:
        """The transformer's text input width: three hidden states of the text encoder."""
        return 3 * self.text_encoder_width

    @property
    def reduced_file(self) -> str:
        return f"random_flux2_klein_base_{self.name}_d1s1.safetensors"


KLEIN_4B = KleinSize("4b", 3072, 2560, (5, 20))
KLEIN_9B = KleinSize("9b", 4096, 4096, (8, 24))

# Klein 4B's, as the 4B tests name them.
HIDDEN, MLP, CONTEXT = KLEIN_4B.hidden, KLEIN_4B.mlp, KLEIN_4B.context
KLEIN_4B_BLOCKS = KLEIN_4B.published_blocks
REDUCED_KLEIN = KLEIN_4B.reduced_file


def lora_targets(double: int = 1, single: int = 1, size: KleinSize = KLEIN_4B) -> dict[str, tuple[int, int]]:
    """BFL module -> (out, in) of the linears flux2-klein-alpha's LoRAs adapt: attention and MLP of both streams in
    each double block, linear1 and linear2 in each single block (80 on Klein 4B's published 5 + 20 blocks)."""
    h, mlp = size.hidden, size.mlp
    gated = 2 * mlp  # the SiLU gate doubles the first MLP layer's output
    targets = {}
    for i in range(double):
        for stream in ("img", "txt"):
            block = f"double_blocks.{i}.{stream}"
            targets |= {f"{block}_attn.qkv": (3 * h, h), f"{block}_attn.proj": (h, h),
                        f"{block}_mlp.0": (gated, h), f"{block}_mlp.2": (h, mlp)}
    for i in range(single):
        targets |= {f"single_blocks.{i}.linear1": (3 * h + gated, h), f"single_blocks.{i}.linear2": (h, h + mlp)}
    return targets


def klein_shapes(size: KleinSize = KLEIN_4B, double: int = 1, single: int = 1) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a FLUX.2 Klein Base transformer file of `size` (no biases: FLUX.2 has none)."""
    h = size.hidden
    shapes = {"img_in.weight": (h, LATENT_CHANNELS), "txt_in.weight": (h, size.context),
              "time_in.in_layer.weight": (h, 256), "time_in.out_layer.weight": (h, h),
              "double_stream_modulation_img.lin.weight": (6 * h, h),
              "double_stream_modulation_txt.lin.weight": (6 * h, h),
              "single_stream_modulation.lin.weight": (3 * h, h),
              "final_layer.linear.weight": (LATENT_CHANNELS, h), "final_layer.adaLN_modulation.1.weight": (2 * h, h)}
    shapes |= {f"{module}.weight": shape for module, shape in lora_targets(double, single, size).items()}
    norms = [f"double_blocks.{i}.{s}_attn.norm" for i in range(double) for s in ("img", "txt")]
    norms += [f"single_blocks.{i}.norm" for i in range(single)]
    shapes |= {f"{norm}.{which}_norm.scale": (HEAD_DIM,) for norm in norms for which in ("query", "key")}
    return shapes


def reduced_klein_file(cache: Path, size: KleinSize = KLEIN_4B) -> Path:
    """The reduced Klein Base of `size` in bf16, made once (4B: 563 M parameters, 1.1 GB; 9B: 1.0 G, 2.0 GB)."""
    path = cache / size.reduced_file
    if not path.exists():
        generator = torch.Generator().manual_seed(0)
        # each tensor rounded to bf16 as it is drawn: the same values as rounding them all at the end, half the memory
        state = {key: (torch.ones(shape) if key.endswith(".scale") else torch.randn(shape, generator=generator) * 0.02
                       ).to(torch.bfloat16) for key, shape in klein_shapes(size).items()}
        fixtures._save(state, path)
    return path


def klein_lora(targets: dict[str, tuple[int, int]], rank: int = 32, seed: int = 0, scale: float = 0.02,
               dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A LoRA in flux2-klein-alpha's format: `diffusion_model.<module>.lora_A.weight` [rank, in] and `.lora_B.weight`
    [out, rank], no alpha tensors."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for module, (out_features, in_features) in targets.items():
        for name, shape in (("lora_A", (rank, in_features)), ("lora_B", (out_features, rank))):
            state[f"{PREFIX}{module}.{name}.weight"] = (torch.randn(shape, generator=generator) * scale).to(dtype)
    return state
