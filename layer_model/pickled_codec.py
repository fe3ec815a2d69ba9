"""The FLUX port's `TransparentVAE.pth`: read without running pickled code, checked, saved once as safetensors.

The port pickles a module that wraps the FLUX VAE; its state dict holds the transparent decoder
(`decoder.*`), the offset encoder (`encoder.*`) and perhaps the wrapped VAE's own tensors (`sd_vae.*`),
which the host's VAE already provides and are left out. Pure torch.
"""

from __future__ import annotations

import logging
import os

import safetensors.torch
import torch

from ._common import files
from .transparent_codec import FLUX_CODEC, CodecLayout
from .weights import CODEC_PREFIXES, WeightFileError

log = logging.getLogger(__name__)


def expected_shapes(layout: CodecLayout = FLUX_CODEC) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the decoder and encoder, prefixed as in the combined file (built without memory)."""
    with torch.device("meta"):
        modules = {"decoder": layout.decoder(), "encoder": layout.encoder()}
    return {CODEC_PREFIXES[kind] + key: tuple(value.shape)
            for kind, module in modules.items() for key, value in module.state_dict().items()}


def read_pickled_state(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a pickled state dict, loaded with `weights_only=True` (no code in the file runs)."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError... for broken files
        raise WeightFileError(
            f"{path} could not be read as a PyTorch weight file ({type(err).__name__}: {str(err)[:200]}). It is "
            "probably truncated or not the published TransparentVAE.pth: delete it and run the graph again to "
            "download it afresh."
        ) from err
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise WeightFileError(f"{path} holds a {type(loaded).__name__}, not a state dict of tensors; expected the "
                              "published TransparentVAE.pth.")
    return {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}


def codec_tensors(state: dict[str, torch.Tensor], path: str,
                  layout: CodecLayout = FLUX_CODEC) -> dict[str, torch.Tensor]:
    """The decoder and encoder tensors of `state`, every one present with its published shape, or an error."""
    expected = expected_shapes(layout)
    prefixes = tuple(CODEC_PREFIXES.values())
    ours = {k: v for k, v in state.items() if k.startswith(prefixes)}
    ignored = len(state) - len(ours)
    missing = sorted(set(expected) - set(ours))
    unexpected = sorted(set(ours) - set(expected))
    wrong = sorted(k for k in set(ours) & set(expected) if tuple(ours[k].shape) != expected[k])
    if missing or unexpected or wrong:
        raise WeightFileError(
            f"{path} is not the FLUX transparent VAE: of its {len(expected)} decoder and encoder tensors "
            f"{len(missing)} are missing, {len(wrong)} have another shape and {len(unexpected)} are unknown "
            f"(e.g. {(missing + wrong + unexpected)[:3]}). Replace it with the published TransparentVAE.pth."
        )
    if ignored:
        log.info("%s: left out %d tensors that are not the transparent decoder or encoder (the wrapped VAE's)",
                 path, ignored)
    return ours


def convert_pickled_codec(source: str, target: str) -> None:
    """Write the checked decoder + encoder of the pickle `source` to the safetensors file `target`.

    The file appears under its name only once complete (temporary file, then rename).
    """
    tensors = codec_tensors(read_pickled_state(source), source)
    folder = os.path.dirname(target) or "."
    try:
        with files.atomic_path(target) as tmp_path:
            safetensors.torch.save_file({k: v.contiguous() for k, v in tensors.items()}, tmp_path,
                                        metadata={"converted_from": os.path.basename(source)})
    except OSError as err:
        raise WeightFileError(f"Could not write the converted {os.path.basename(target)} into {folder} ({err}). "
                              "Make that folder writable, or put TransparentVAE.pth into a writable "
                              "models/layer_model folder.") from err
