"""The decoder/encoder modules match the published files key for key, shape for shape."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from comfyui_layer_sketch.layer_model.transparent_vae import DecoderConfig, TransparencyEncoder, TransparentDecoder

MANIFEST = Path(__file__).resolve().parent.parent / "data" / "transparent_vae_state_dict.txt"


def _manifest() -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]], dict[str, int]]:
    decoder, encoder, totals = {}, {}, {}
    for line in MANIFEST.read_text().splitlines():
        is_encoder = line.startswith("ENC ")
        body = line[4:] if is_encoder else line
        if body.startswith("n_keys"):
            parts = body.split()
            totals["enc_params" if is_encoder else "dec_params"] = int(parts[3])
            totals["enc_keys" if is_encoder else "dec_keys"] = int(parts[1])
            continue
        name, shape = body.split(" ", 1)
        (encoder if is_encoder else decoder)[name] = tuple(int(s) for s in shape.strip("(,)").split(",") if s.strip())
    return decoder, encoder, totals


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_decoder_state_dict_equals_published_manifest():
    decoder, _, totals = _manifest()
    assert len(decoder) == totals["dec_keys"] == 538
    assert _shapes(TransparentDecoder()) == decoder
    assert sum(p.numel() for p in TransparentDecoder().parameters()) == totals["dec_params"]


def test_encoder_state_dict_equals_published_manifest():
    _, encoder, totals = _manifest()
    assert len(encoder) == totals["enc_keys"] == 18
    assert _shapes(TransparencyEncoder()) == encoder
    assert sum(p.numel() for p in TransparencyEncoder().parameters()) == totals["enc_params"]


def test_published_layout_loads_strictly_and_refuses_extra_keys():
    state = TransparentDecoder().state_dict()
    TransparentDecoder().load_state_dict(state, strict=True)
    state["unexpected.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="unexpected"):
        TransparentDecoder().load_state_dict(state, strict=True)


def test_decoder_output_shape_and_latent_influence():
    torch.manual_seed(0)
    decoder = TransparentDecoder(DecoderConfig(block_channels=(8, 8, 8, 16, 16, 32, 32))).eval()
    rgb = torch.rand(2, 3, 64, 128)
    latent = torch.randn(2, 4, 8, 16)
    with torch.no_grad():
        out = decoder(rgb, latent)
        moved = decoder(rgb, latent + 1.0)
    assert out.shape == (2, 4, 64, 128)
    assert (out - moved).abs().max() > 1e-3, "the latent must reach the output through latent_conv_in"


def test_encoder_halves_three_times():
    out = TransparencyEncoder()(torch.rand(1, 4, 96, 136))
    assert out.shape == (1, 4, 12, 17)
