"""Codec files the pack trains: the offset encoder and transparent decoder in one safetensors file.

Keys are `encoder.<published encoder key>` and `decoder.<published decoder key>`, as in the FLUX port's
TransparentVAE file: stripped of their prefix, an SD-width codec's tensors are the published SD codec's,
key for key. The header's metadata says which latent space the codec belongs to and how it was trained.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ._common import files
from .transparent_codec import CodecLayout
from .transparent_vae import TransparencyEncoder, TransparentDecoder

METADATA_KEY = "layer_sketch.codec"  # the header entry holding CodecInfo as JSON
PARTS = ("encoder", "decoder")


class CodecFileError(ValueError):
    pass


@dataclass(frozen=True)
class CodecInfo:
    """What a trained codec file says about itself."""

    latent_format: str  # the host's latent format (SD15, SDXL, Flux, SD3, Flux2, Wan21)
    channels: int
    downscale: int
    offset_scale: float  # the encoder's output times this, in posterior std units, is the offset
    alpha_first: bool  # the encoder reads (alpha, colour); False: (colour, alpha)
    decoder_channels: tuple[int, ...] = CodecLayout.decoder_channels  # the decoder's level widths
    steps: int = 0
    data: str = ""  # fingerprint of the training images
    init: str = "none"  # "published": fine-tuned from the published codec of the latent space
    losses: dict[str, float] = field(default_factory=dict)  # the last steps' mean of each loss term
    validation: dict[str, float] = field(default_factory=dict)  # held-out alpha error, harmlessness (PSNR dB)

    @property
    def layout(self) -> CodecLayout:
        return CodecLayout(self.channels, self.alpha_first, self.offset_scale, self.downscale,
                           tuple(self.decoder_channels))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> CodecInfo:
        try:
            values = json.loads(text)
            known = {f.name for f in fields(cls)}
            values = {k: v for k, v in values.items() if k in known}
            if "decoder_channels" in values:  # JSON has lists
                values["decoder_channels"] = tuple(values["decoder_channels"])
            return cls(**values)
        except (ValueError, TypeError) as err:
            raise CodecFileError(f"{where}: the codec description in its header cannot be read ({err}).") from err


def save_codec(path: str, encoder: TransparencyEncoder, decoder: TransparentDecoder, info: CodecInfo) -> None:
    """Write the codec atomically: a stopped write leaves the previous file or none."""
    state = {f"{name}.{key}": tensor.detach().float().cpu().contiguous()
             for name, module in zip(PARTS, (encoder, decoder), strict=True)
             for key, tensor in module.state_dict().items()}
    with files.atomic_path(path) as tmp:
        save_file(state, tmp, metadata={METADATA_KEY: info.to_json()})


def read_info(path: str) -> CodecInfo | None:
    """The codec description in a file's header; None for files without one (published weights, others)."""
    with safe_open(path, framework="pt") as handle:
        text = (handle.metadata() or {}).get(METADATA_KEY)
    return None if text is None else CodecInfo.from_json(text, path)


def load_part(path: str, part: str) -> dict[str, torch.Tensor]:
    """The encoder's or decoder's tensors of a trained codec file, under their published names."""
    prefix = f"{part}."
    with safe_open(path, framework="pt") as handle:
        return {key[len(prefix):]: handle.get_tensor(key) for key in handle.keys() if key.startswith(prefix)}
