"""The latent edge predictor: a per-pixel MLP from UNet activations (+ noise level) to the edge map's latent.

Files are safetensors with the weights under `layers.N.*` and what the predictor needs to be used
correctly in the metadata: the base model, the layer set and its layers, the channel counts and the
noise encoding. Community checkpoints (pickled `.pt`) are read with `weights_only=True` and converted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import safetensors.torch
import torch
from safetensors import safe_open
from torch import nn

from ._common import families, files
from .features import LAYER_SETS, Layer

FORMAT = "comfyui-layer-sketch.edge-predictor"
HIDDEN = (512, 256, 128, 64)
NOISE_CHANNELS = 4  # the noise part of the noisy latent, per pixel
ENCODINGS = 9  # sin(2*pi*n*2^-l), l = 0..8, for each noise channel


class PredictorFileError(ValueError):
    """A predictor file that cannot be used: unreadable, of another format, or made for another model."""


@dataclass(frozen=True)
class PredictorInfo:
    base: str  # SD1.5 or SDXL (families.SD15/SDXL); files from earlier versions say "SD15"
    layer_set: str
    layers: tuple[Layer, ...]
    feature_channels: int
    latent_channels: int = 4
    encodings: int = ENCODINGS
    trained_steps: int = 0

    def __post_init__(self) -> None:
        # One spelling in memory, so predictors saved with a legacy one still match their MODEL.
        object.__setattr__(self, "base", families.canonical(self.base))

    @property
    def input_channels(self) -> int:
        return self.feature_channels + NOISE_CHANNELS * (1 + self.encodings)

    def metadata(self) -> dict[str, str]:
        return {"format": FORMAT, "base": self.base, "layer_set": self.layer_set,
                "layers": json.dumps([str(layer) for layer in self.layers]),
                "feature_channels": str(self.feature_channels), "latent_channels": str(self.latent_channels),
                "noise_encoding": f"noise{NOISE_CHANNELS}+sin{self.encodings}",
                "trained_steps": str(self.trained_steps)}

    @classmethod
    def from_metadata(cls, meta: dict[str, str], path: str) -> PredictorInfo:
        if meta.get("format") != FORMAT:
            raise PredictorFileError(f"{path} is not an edge predictor saved by this pack (no '{FORMAT}' "
                                     "metadata). Train one with Sketch Guidance Train Predictor, or put a "
                                     "community .pt file in the edge_predictor folder to have it converted.")
        try:
            encodings = int(meta["noise_encoding"].rsplit("sin", 1)[1])
            return cls(meta["base"], meta["layer_set"], tuple(Layer.parse(n) for n in json.loads(meta["layers"])),
                       int(meta["feature_channels"]), int(meta["latent_channels"]), encodings,
                       int(meta.get("trained_steps", "0")))
        except (KeyError, ValueError, IndexError) as err:
            raise PredictorFileError(f"{path} has damaged edge predictor metadata ({err}); train or convert "
                                     "it again.") from err


def noise_encoding(noise_level: torch.Tensor, encodings: int) -> torch.Tensor:
    """[B,4,h,w] -> [B,4*encodings,h,w]: sin(2*pi*n*2^-l) for l = 0..encodings-1, grouped by l."""
    return torch.cat([torch.sin(2 * math.pi * noise_level * 2.0 ** -level) for level in range(encodings)], dim=1)


class EdgePredictor(nn.Module):
    """Linear -> ReLU -> BatchNorm for 512, 256, 128, 64 units, then a linear layer to the latent channels."""

    def __init__(self, info: PredictorInfo) -> None:
        super().__init__()
        self.info = info
        widths = (info.input_channels, *HIDDEN)
        stack: list[nn.Module] = []
        for width_in, width_out in zip(widths, widths[1:], strict=False):
            stack += [nn.Linear(width_in, width_out), nn.ReLU(), nn.BatchNorm1d(width_out)]
        stack.append(nn.Linear(HIDDEN[-1], info.latent_channels))
        self.layers = nn.Sequential(*stack)

    def forward(self, features: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        """features [B,C,h,w], noise_level [B,4,h,w] -> predicted edge latent [B,latent_channels,h,w]."""
        if features.shape[1] != self.info.feature_channels:
            raise ValueError(f"the edge predictor expects {self.info.feature_channels} feature channels "
                             f"({self.info.layer_set} layers), got {features.shape[1]}")
        weight = self.layers[0].weight
        noise_level = noise_level.to(features)
        pixels = torch.cat([features, noise_level, noise_encoding(noise_level, self.info.encodings)], dim=1)
        b, c, h, w = pixels.shape
        rows = pixels.permute(0, 2, 3, 1).reshape(b * h * w, c).to(weight.dtype)
        out = self.layers(rows)
        return out.reshape(b, h, w, -1).permute(0, 3, 1, 2)


def save_predictor(predictor: EdgePredictor, path: str, info: PredictorInfo | None = None) -> None:
    """Write atomically (common/files.py)."""
    info = info or predictor.info
    state = {k: v.detach().float().contiguous() if v.is_floating_point() else v.detach().contiguous()
             for k, v in predictor.state_dict().items()}
    with files.atomic_path(path) as tmp:
        safetensors.torch.save_file(state, tmp, metadata=info.metadata())


def load_predictor(path: str) -> EdgePredictor:
    try:
        with safe_open(path, framework="pt") as handle:
            meta = handle.metadata() or {}
        state = safetensors.torch.load_file(path)
    except Exception as err:  # safetensors raises several types for damaged files
        raise PredictorFileError(f"{path} is not a readable safetensors file ({err}); replace it.") from err
    info = PredictorInfo.from_metadata(meta, path)
    predictor = EdgePredictor(info)
    _load_state(predictor, state, path)
    return predictor.eval()


def _load_state(predictor: EdgePredictor, state: dict[str, torch.Tensor], path: str) -> None:
    expected = predictor.state_dict()
    wrong = sorted(set(expected) ^ set(state)) + sorted(
        k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if wrong:
        raise PredictorFileError(f"{path} does not match its own description ({len(wrong)} tensors missing, "
                                 f"unexpected or of the wrong shape, e.g. {wrong[:3]}); train or convert it again.")
    predictor.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})


# Community checkpoints, recognised by their input width: feature channels + 4 noise + 36 encoding channels.
COMMUNITY_LAYER_SETS = {7080: "down_up", 9320: "down_mid_up"}


def import_community_checkpoint(path: str, base: str = families.SD15) -> EdgePredictor:
    """A pickled community predictor (`SDv1.5-trained_LGP.pt`, `edge_predictor.pt`) as this pack's predictor."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise PredictorFileError(f"{path} could not be read as a plain PyTorch checkpoint ({err}). Only "
                                 "weights are loaded from pickled files; this one holds other objects.") from err
    state = raw.get("model_state_dict", raw) if isinstance(raw, dict) else None
    first = state.get("layers.0.weight") if isinstance(state, dict) else None
    if first is None or first.shape[1] not in COMMUNITY_LAYER_SETS:
        width = None if first is None else first.shape[1]
        raise PredictorFileError(f"{path} is not a known edge predictor checkpoint (input width {width}; "
                                 f"known: {sorted(COMMUNITY_LAYER_SETS)}).")
    set_name = COMMUNITY_LAYER_SETS[first.shape[1]]
    chosen = LAYER_SETS[set_name]
    info = PredictorInfo(base, set_name, chosen, first.shape[1] - NOISE_CHANNELS * (1 + ENCODINGS))
    predictor = EdgePredictor(info)
    _load_state(predictor, dict(state), path)
    return predictor.eval()
