"""The host's attention-guidance nodes (PAG, SAG, HyperTile) on LayerDiffusion models, in-process.

Each combination samples; LayerDiffusion stays in effect (the result differs from the same node on the
plain model); and LayerDiffusion at weight 0 is exactly the plain model with that node.
"""

from __future__ import annotations

import pytest
import torch
from comfy_extras.nodes_hypertile import HyperTile
from comfy_extras.nodes_pag import PerturbedAttentionGuidance
from comfy_extras.nodes_sag import SelfAttentionGuidance
from support.host_models import tiny_model
from support.layer_modes import SD15_MODES, SDXL_MODES, apply_mode, frames_of, install_mode_files, install_sdxl_files
from support.layer_modes import sample as sample_model

SIZE = 16  # latent side: SAG needs a middle block of more than one token
NODES = {
    "PAG": lambda model: PerturbedAttentionGuidance.execute(model, 3.0)[0],
    "SAG": lambda model: SelfAttentionGuidance.execute(model, 0.5, 2.0)[0],
    # 4-token tiles at the two largest attention levels of the small UNets, so the tokens really are tiled
    "HyperTile": lambda model: HyperTile.execute(model, 32, 2, 1, False)[0],
}
COMBINATIONS = [(mode, 0.0, 1.0) for mode in SD15_MODES] + [("transparent", 0.0, 0.5)] + \
    [(mode, 0.0, 1.0) for mode in SDXL_MODES] + [(mode, 0.3, 0.7) for mode in SDXL_MODES]


@pytest.fixture(scope="module")
def models():
    return {"SD15": tiny_model("SD15"), "SDXL": tiny_model("SDXL")}


def sample(model, mode: str) -> torch.Tensor:
    batch = 1 if mode in SDXL_MODES else 2 * frames_of(mode)
    return sample_model(model, batch, steps=4, size=SIZE)


@pytest.mark.parametrize("node", NODES)
@pytest.mark.parametrize("mode, start, end", COMBINATIONS)
def test_guidance_node_on_a_layer_diffusion_model(layer_folder, models, node, mode, start, end):
    model = models["SDXL" if mode in SDXL_MODES else "SD15"]
    install_sdxl_files(layer_folder, models["SDXL"]) if mode in SDXL_MODES else install_mode_files(layer_folder, model)
    guided = NODES[node]
    with_node = sample(guided(model), mode)
    layered = sample(guided(apply_mode(model, mode, 1.0, start, end, size=SIZE)), mode)
    off = sample(guided(apply_mode(model, mode, 0.0, start, end, size=SIZE)), mode)
    assert torch.isfinite(layered).all()
    assert (layered - with_node).abs().max() > 1e-3, f"LayerDiffusion must stay in effect with {node}"
    torch.testing.assert_close(off, with_node, rtol=0, atol=1e-5,
                               msg=f"LayerDiffusion at weight 0 with {node} must be {node} alone")
    assert (with_node - sample(model, mode)).abs().max() > 1e-3, f"{node} itself acts on this model"
